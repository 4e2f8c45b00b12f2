//! What `myco-d` needs from systemd, without libsystemd: the sd_notify(3) protocol (readiness,
//! status, watchdog pings, stopping), the directories and watchdog interval that systemd passes
//! in the environment (systemd.exec(5)), and the sockets it passes (sd_listen_fds(3)).
//!
//! Invariants: the notification socket is created once, at start; sending formats into a fixed
//! buffer on the stack and allocates nothing, so the event loop can ping the watchdog forever
//! without touching the heap. Every message is one datagram of `KEY=value` lines, and a `STATUS`
//! text can never add a line of its own. Outside systemd (`NOTIFY_SOCKET` unset) every call is a
//! no-op that succeeds. Errors are returned to the caller, never panicked on: a lost notification
//! must not take the daemon down.

use std::env;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One notification datagram at most. The longest fixed part is `READY=1\nSTATUS=\n` (16 bytes);
/// the rest is status text, which is cut to fit (see `STATUS_BYTES_MAX`).
pub const NOTIFY_MESSAGE_BYTES_MAX: usize = 256;
/// Room left for a status text after the fixed part of the longest message.
pub const STATUS_BYTES_MAX: usize = NOTIFY_MESSAGE_BYTES_MAX - "READY=1\nSTATUS=\n".len();
const _: () = assert!(STATUS_BYTES_MAX >= 200);

/// Sends sd_notify(3) messages to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// `None` when not started by systemd (or by a manager without `NOTIFY_SOCKET`).
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    /// Unbound: the manager identifies the sender by its credentials (SO_PASSCRED), not by an
    /// address, and `NotifyAccess=main` checks that the sender is the main process.
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// A notifier that sends nothing: every call succeeds and does nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier for `$NOTIFY_SOCKET`, or a disabled one when the variable is unset or empty.
    /// An address it cannot use is an error, so that the daemon says so at start instead of
    /// timing out silently under `Type=notify`.
    pub fn from_env() -> io::Result<Notifier> {
        match env::var_os("NOTIFY_SOCKET") {
            Some(address) if !address.is_empty() => Notifier::new(&address),
            _ => Ok(Notifier::disabled()),
        }
    }

    /// A notifier for `address` in `NOTIFY_SOCKET`'s syntax: an absolute path, or `@name` for a
    /// name in Linux's abstract socket namespace. Creates the socket now, so that sending later
    /// needs no allocation and no file descriptor it might fail to get.
    pub fn new(address: &OsStr) -> io::Result<Notifier> {
        let bytes = address.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(Path::new(address))?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET {address:?} is neither an absolute path nor an \
                         abstract name starting with '@'"
                    ),
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A single-threaded loop must never wait on the service manager: if its queue is full,
        // the send fails with WouldBlock, the loop logs it and the next ping tries again.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some(Target { socket, address }),
        })
    }

    /// Whether notifications go anywhere; the daemon pets the watchdog only when they do.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Tells the manager that start-up finished (for `myco-d`: the WAL replayed and the sockets
    /// bound), which ends `Type=notify`'s activating state; `status` is shown by `systemctl
    /// status`.
    pub fn ready(&self, status: Option<&str>) -> io::Result<()> {
        self.send("READY=1\n", status)
    }

    /// Sets the one-line text that `systemctl status` shows. Newlines become spaces, and a text
    /// longer than `STATUS_BYTES_MAX` is cut at a character boundary: status is for humans, and a
    /// shortened one is better than none.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send("", Some(status))
    }

    /// Pets the watchdog; call it every `watchdog_interval()`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1\n", None)
    }

    /// Tells the manager that a clean stop has begun, so a slow shutdown is not taken for a hang.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\n", None)
    }

    fn send(&self, fixed: &str, status: Option<&str>) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let mut buffer = [0u8; NOTIFY_MESSAGE_BYTES_MAX];
        let length = format_message(&mut buffer, fixed, status);
        assert!(length > 0 && length <= buffer.len());
        let sent = target
            .socket
            .send_to_addr(&buffer[..length], &target.address)?;
        // A datagram is sent whole or not at all.
        assert_eq!(sent, length);
        Ok(())
    }
}

/// Writes `fixed` (whole `KEY=value\n` lines) and then `STATUS=<status>\n` into `buffer`, and
/// returns the length. The status is sanitised so that it stays one line and fits.
fn format_message(
    buffer: &mut [u8; NOTIFY_MESSAGE_BYTES_MAX],
    fixed: &str,
    status: Option<&str>,
) -> usize {
    assert!(fixed.is_empty() || fixed.ends_with('\n'));
    let status_bytes_max = status.map_or(0, |_| "STATUS=\n".len() + STATUS_BYTES_MAX);
    assert!(fixed.len() + status_bytes_max <= buffer.len());
    let mut cursor = &mut buffer[..];
    // Writing into a slice that has room cannot fail; the assertion above guarantees the room.
    cursor.write_all(fixed.as_bytes()).unwrap();
    if let Some(status) = status {
        cursor.write_all(b"STATUS=").unwrap();
        for byte in status_prefix(status).bytes() {
            // A newline would start a new assignment: a status text must never be able to say
            // READY=1 or STOPPING=1. Other control characters are harmless in one line.
            let byte = if byte == b'\n' { b' ' } else { byte };
            cursor.write_all(&[byte]).unwrap();
        }
        cursor.write_all(b"\n").unwrap();
    }
    let length = NOTIFY_MESSAGE_BYTES_MAX - cursor.len();
    assert!(buffer[..length].ends_with(b"\n"));
    length
}

/// The longest prefix of `status` that fits in `STATUS_BYTES_MAX` and ends at a character
/// boundary.
fn status_prefix(status: &str) -> &str {
    if status.len() <= STATUS_BYTES_MAX {
        return status;
    }
    let mut end = STATUS_BYTES_MAX;
    while !status.is_char_boundary(end) {
        end -= 1;
    }
    &status[..end]
}

/// How often to pet the watchdog: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises,
/// so that one late loop iteration does not get the daemon killed. `None` when the watchdog is
/// off, when the value is not a positive number of microseconds, or when `$WATCHDOG_PID` names
/// another process (the variables were inherited, not meant for us).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        env::var_os("WATCHDOG_USEC").as_deref(),
        env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// `watchdog_interval` for given variable values and process id.
pub fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    let interval = Duration::from_micros(usec) / 2;
    assert!(interval > Duration::ZERO);
    Some(interval)
}

/// The first descriptor of the sockets systemd passes (`SD_LISTEN_FDS_START`, sd_listen_fds(3)).
pub const LISTEN_FDS_START: RawFd = 3;

/// The descriptors of the sockets systemd passed to this process (socket activation:
/// `$LISTEN_FDS` of them from descriptor 3 on). Empty when none were passed, or when `$LISTEN_PID`
/// is missing or names another process (the variables were inherited, not meant for us).
pub fn listen_fds() -> Range<RawFd> {
    listen_fds_from(
        env::var_os("LISTEN_FDS").as_deref(),
        env::var_os("LISTEN_PID").as_deref(),
        std::process::id(),
    )
}

/// `listen_fds` for given variable values and process id.
pub fn listen_fds_from(fds: Option<&OsStr>, pid: Option<&OsStr>, our_pid: u32) -> Range<RawFd> {
    let ours = pid.and_then(|p| p.to_str()?.parse::<u32>().ok()) == Some(our_pid);
    let count = fds.and_then(|n| n.to_str()?.parse::<u16>().ok());
    match (ours, count) {
        (true, Some(n)) => LISTEN_FDS_START..LISTEN_FDS_START + RawFd::from(n),
        _ => LISTEN_FDS_START..LISTEN_FDS_START,
    }
}

/// `$CREDENTIALS_DIRECTORY`: where `LoadCredential=` put the node's key and certificate.
pub fn credentials_dir() -> Option<PathBuf> {
    first_path(env::var_os("CREDENTIALS_DIRECTORY"))
}

/// `$STATE_DIRECTORY` (`StateDirectory=`), the first one if several are configured.
pub fn state_dir() -> Option<PathBuf> {
    first_path(env::var_os("STATE_DIRECTORY"))
}

/// `$RUNTIME_DIRECTORY` (`RuntimeDirectory=`), the first one if several are configured.
pub fn runtime_dir() -> Option<PathBuf> {
    first_path(env::var_os("RUNTIME_DIRECTORY"))
}

/// The first entry of a colon-separated list of directories, as systemd sets it when a unit names
/// several. `None` for an unset or empty variable and for a relative path: systemd always passes
/// absolute ones, and a relative one would quietly put the daemon's files in its working
/// directory.
pub fn first_path(value: Option<OsString>) -> Option<PathBuf> {
    let value = value?;
    let first = value.as_bytes().split(|&byte| byte == b':').next()?;
    let path = Path::new(OsStr::from_bytes(first));
    path.is_absolute().then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fixed: &str, status: Option<&str>) -> Vec<u8> {
        let mut buffer = [0u8; NOTIFY_MESSAGE_BYTES_MAX];
        let length = format_message(&mut buffer, fixed, status);
        buffer[..length].to_vec()
    }

    /// Each kind of message is exactly the lines sd_notify(3) defines.
    #[test]
    fn messages_are_notify_lines() {
        assert_eq!(message("READY=1\n", None), b"READY=1\n");
        assert_eq!(
            message("READY=1\n", Some("replayed 3 entries")),
            b"READY=1\nSTATUS=replayed 3 entries\n"
        );
        assert_eq!(message("", Some("")), b"STATUS=\n");
        assert_eq!(message("WATCHDOG=1\n", None), b"WATCHDOG=1\n");
    }

    /// Sockets are ours only when `$LISTEN_PID` is this process; anything unparsable is none.
    #[test]
    fn listen_fds_are_ours_only_with_our_pid() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(listen_fds_from(os("4"), os("77"), 77), 3..7);
        assert_eq!(listen_fds_from(os("4"), os("78"), 77), 3..3);
        assert_eq!(listen_fds_from(os("4"), None, 77), 3..3);
        assert_eq!(listen_fds_from(None, os("77"), 77), 3..3);
        assert_eq!(listen_fds_from(os("-1"), os("77"), 77), 3..3);
        assert_eq!(listen_fds_from(os("4 "), os("77"), 77), 3..3);
    }

    /// A status text cannot inject an assignment of its own.
    #[test]
    fn status_newlines_become_spaces() {
        assert_eq!(
            message("", Some("ok\nSTOPPING=1\n")),
            b"STATUS=ok STOPPING=1 \n"
        );
    }

    /// A long status is cut to fit the buffer, at a character boundary, and the message still
    /// ends with its newline.
    #[test]
    fn long_status_is_cut_at_a_char_boundary() {
        // One ASCII byte first puts every even offset, STATUS_BYTES_MAX included, inside an 'é'.
        assert_eq!(STATUS_BYTES_MAX % 2, 0);
        let long = format!("x{}", "é".repeat(STATUS_BYTES_MAX));
        let bytes = message("READY=1\n", Some(&long));
        let text = std::str::from_utf8(&bytes).unwrap();
        let status = text.strip_prefix("READY=1\nSTATUS=").unwrap();
        assert_eq!(status.len(), STATUS_BYTES_MAX - 1 + "\n".len());
        assert!(status.ends_with("é\n"));

        let ascii = "x".repeat(STATUS_BYTES_MAX + 1);
        let bytes = message("READY=1\n", Some(&ascii));
        assert_eq!(bytes.len(), NOTIFY_MESSAGE_BYTES_MAX);
    }

    #[test]
    fn watchdog_interval_is_half_of_usec() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval_from(os("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(os("3"), os("7"), 7),
            Some(Duration::from_nanos(1500))
        );
    }

    /// Inherited or malformed variables turn the watchdog off rather than pinging for someone
    /// else or at a nonsense rate.
    #[test]
    fn watchdog_interval_rejects_others_and_garbage() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(watchdog_interval_from(os("30000000"), os("8"), 7), None);
        assert_eq!(watchdog_interval_from(os("30000000"), os("x"), 7), None);
        assert_eq!(watchdog_interval_from(None, os("7"), 7), None);
        assert_eq!(watchdog_interval_from(os("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(os("-5"), None, 7), None);
        assert_eq!(watchdog_interval_from(os("10s"), None, 7), None);
        assert_eq!(watchdog_interval_from(os(""), None, 7), None);
    }

    #[test]
    fn first_path_takes_the_first_absolute_entry() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            first_path(os("/var/lib/myco")),
            Some(PathBuf::from("/var/lib/myco"))
        );
        assert_eq!(
            first_path(os("/var/lib/myco:/var/lib/other")),
            Some(PathBuf::from("/var/lib/myco"))
        );
        assert_eq!(first_path(None), None);
        assert_eq!(first_path(os("")), None);
        assert_eq!(first_path(os(":/var/lib/myco")), None);
        assert_eq!(first_path(os("relative/dir")), None);
    }

    #[test]
    fn addresses_other_than_path_or_abstract_are_refused() {
        let error = Notifier::new(OsStr::new("relative.sock")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    /// Outside systemd every call succeeds and sends nothing.
    #[test]
    fn disabled_notifier_is_a_no_op() {
        let notifier = Notifier::disabled();
        assert!(!notifier.is_enabled());
        notifier.ready(Some("x")).unwrap();
        notifier.status("x").unwrap();
        notifier.watchdog().unwrap();
        notifier.stopping().unwrap();
    }
}
