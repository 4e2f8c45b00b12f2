//! The daemon's side of `myco-priv`'s socket (`--privileged PATH`): with it, `myco-d` does not
//! write units or run `systemctl` and `journalctl` itself but asks the helper, which checks each
//! request and does it as root (docs/architecture.md, "Least privilege").
//!
//! It fits the loop as a child process does (`spawn::Child`): a command's request is sent on a
//! non-blocking connection of its own with the write end of a fresh pipe as the command's stdout
//! and the daemon's own stderr (its journal) as the command's stderr (SCM_RIGHTS), so the loop
//! reads the output from the pipe as it does a child's; the helper's one reply frame is the
//! child's exit, read without blocking. Hanging up stops the helper's child. A file request
//! (write or remove a unit) is one short round trip, bounded by `FILE_TIMEOUT`: it replaces the
//! write and fsync the daemon did itself, which blocked the loop as long. No allocation: the
//! frame is encoded into a buffer the caller owns (the arena's), and the reply is peeked at in the
//! socket until it is whole, then read onto the stack.
//!
//! Errors are bare kinds (`io::ErrorKind`), not messages: a message would allocate, and these
//! paths run after start. The helper's reasons are logged where they arrive.
//!
//! Every refusal and failure the helper reports is logged with its reason and counted
//! (`refusals`, `failures`, in `/metrics`).

use crate::flight::{Level, Logger};
use crate::path::Lossy;
use crate::spawn::{Child, Exit};
use myco_core::crypto::PublicKey;
use myco_core::privileged::{
    check_request, decode_reply, encode_request, Checked, Outcome, Refusal, Request, FDS_MAX,
    FRAME_HEADER_BYTES, REPLY_BYTES_MAX,
};
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{
    connect, recv, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a file request (a unit written or removed) may take, round trip.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(5);
/// The exit a request the helper refused or could not do reports: no command ran. 126 as a shell
/// says of a command it found but could not run.
pub const EXIT_NOT_RUN: i32 = 126;

static REFUSALS: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Requests the helper refused since start (`myco_privileged_refusals_total`).
pub fn refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

/// Requests the helper accepted but could not do, or that got no reply (`..._failures_total`).
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Where the helper listens, the cluster's operator key it checks entries against, and the log
/// its refusals go to.
#[derive(Clone, Debug)]
pub struct Client {
    addr: UnixAddr,
    operator: PublicKey,
    log: Logger,
}

impl Client {
    /// A client of the helper's socket at `path` for the cluster of `operator` (nothing is
    /// connected until a request).
    pub fn new(path: &Path, operator: PublicKey, log: Logger) -> io::Result<Client> {
        Ok(Client {
            addr: UnixAddr::new(path)?,
            operator,
            log,
        })
    }

    /// What the helper will make of `request`: the core's check, with the same operator key.
    pub fn check<'a>(&self, request: Request<'a>) -> Result<Checked<'a>, Refusal> {
        check_request(request, &self.operator)
    }

    /// Sends `request`, a command, and returns it as a child: its stdout the pipe it writes to,
    /// its stderr `stderr` (a build's log file) or the daemon's own, its exit the helper's
    /// reply. `frame` holds the encoded request (`REQUEST_BYTES_MAX` and its header).
    pub fn start(
        &self,
        request: &Request<'_>,
        frame: &mut [u8],
        stderr: Option<BorrowedFd<'_>>,
    ) -> io::Result<Child> {
        let len = encode_request(request, frame).ok_or(io::ErrorKind::InvalidInput)?;
        let (read, write) = crate::spawn::pipe()?;
        let conn = self.connect()?;
        // SAFETY: descriptor 2 is the daemon's stderr for its whole life; it is only lent to
        // the kernel for this one message.
        let stderr =
            stderr.unwrap_or_else(|| unsafe { BorrowedFd::borrow_raw(libc::STDERR_FILENO) });
        send(
            &conn,
            &frame[..len],
            &[write.as_raw_fd(), stderr.as_raw_fd()],
        )?;
        // The helper's child holds the write end now; ours closes so the pipe ends with it.
        drop(write);
        Ok(Child::asked(Pending::new(conn, self.log), read))
    }

    /// Sends `request`, a file request, and waits at most `FILE_TIMEOUT` for its reply: `Ok` if
    /// it was done. A refusal or failure is logged (with the helper's reason) and counted here.
    pub fn file(&self, request: &Request<'_>, frame: &mut [u8]) -> io::Result<()> {
        let len = encode_request(request, frame).ok_or(io::ErrorKind::InvalidInput)?;
        let conn = self.connect()?;
        send(&conn, &frame[..len], &[])?;
        let mut pending = Pending::new(conn, self.log);
        let deadline = std::time::Instant::now() + FILE_TIMEOUT;
        loop {
            if let Some(exit) = pending.poll() {
                return match exit.success() {
                    true => Ok(()),
                    false => Err(io::ErrorKind::PermissionDenied.into()),
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                FAILURES.fetch_add(1, Ordering::Relaxed);
                return Err(io::ErrorKind::TimedOut.into());
            }
            let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
            let mut fds = [PollFd::new(pending.conn_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, ms);
        }
    }

    /// A non-blocking, close-on-exec connection to the helper. A Unix socket connects at once or
    /// not at all (`EAGAIN`: its backlog is full), so this never waits.
    fn connect(&self) -> io::Result<OwnedFd> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let conn = socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
        connect(conn.as_raw_fd(), &self.addr)?;
        Ok(conn)
    }
}

/// Sends the whole frame, the descriptors with its first byte. A frame (at most 16 KiB) fits an
/// empty socket's buffer, so a send that cannot finish means the helper is not reading: an
/// error, not a wait. `sendmsg` by hand, with the control message on the stack: nix's wrapper
/// allocates its control buffer, and this runs after start.
fn send(conn: &OwnedFd, frame: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(
        fds.len() <= FDS_MAX,
        "a request carries at most FDS_MAX descriptors"
    );
    // CMSG_SPACE of FDS_MAX descriptors, 8-aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    let mut sent = 0;
    while sent < frame.len() {
        let rest = &frame[sent..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: an all-zero msghdr is a valid empty one; the fields set below point at `iov`
        // and `control`, which outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 && !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds) as u32;
            // SAFETY: CMSG_SPACE/LEN are arithmetic; `control` (64 bytes) holds the space of
            // FDS_MAX descriptors (24 bytes), so the header and data written through
            // CMSG_FIRSTHDR and CMSG_DATA stay inside it.
            unsafe {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                std::ptr::copy_nonoverlapping(fds.as_ptr(), data, fds.len());
            }
        }
        // SAFETY: `msg` is valid for the call (see above); the kernel only reads it.
        let n = unsafe { libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

/// A request sent and not yet answered: the connection. The reply is left in the socket until
/// it is whole (read with `MSG_PEEK`), so a pending request holds no buffer of its own.
pub struct Pending {
    conn: OwnedFd,
    log: Logger,
}

impl Pending {
    fn new(conn: OwnedFd, log: Logger) -> Pending {
        Pending { conn, log }
    }

    fn conn_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.conn)
    }

    /// The helper's reply as the exit once it is whole, `None` before. A reply that does not
    /// parse, or a connection closed without one, is a failure.
    pub fn poll(&mut self) -> Option<Exit> {
        let mut frame = [0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
        let n = loop {
            match recv(
                self.conn.as_raw_fd(),
                &mut frame,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(e) => return Some(self.failed(format_args!("its connection failed: {e}"))),
            }
        };
        if n == 0 {
            return Some(self.failed(format_args!("it hung up without a reply")));
        }
        let header = frame[..FRAME_HEADER_BYTES].try_into().expect("four bytes");
        let len = (n >= FRAME_HEADER_BYTES)
            .then(|| FRAME_HEADER_BYTES + u32::from_le_bytes(header) as usize);
        match len {
            Some(len) if len > frame.len() => {
                Some(self.failed(format_args!("its reply is longer than a reply")))
            }
            Some(len) if n >= len => {
                // The whole frame is in the socket: take it out (what was peeked is there).
                let _ = recv(
                    self.conn.as_raw_fd(),
                    &mut frame[..len],
                    MsgFlags::MSG_DONTWAIT,
                );
                Some(self.settle(&frame[FRAME_HEADER_BYTES..len]))
            }
            // The rest is on its way, unless the helper hung up half way through.
            _ => self
                .hung_up()
                .then(|| self.failed(format_args!("its reply was cut short"))),
        }
    }

    /// Whether the helper closed its end (a Unix socket whose peer closed polls as hung up).
    fn hung_up(&self) -> bool {
        let mut fds = [PollFd::new(self.conn_fd(), PollFlags::POLLHUP)];
        matches!(poll(&mut fds, 0u16), Ok(1))
    }

    fn settle(&self, body: &[u8]) -> Exit {
        let Some(reply) = decode_reply(body) else {
            return self.failed(format_args!("its reply does not parse"));
        };
        let reason = Lossy(reply.reason.as_bytes());
        if let Some(code) = reply.outcome.exit_code() {
            return Exit(code);
        }
        match reply.outcome {
            Outcome::Refused => {
                REFUSALS.fetch_add(1, Ordering::Relaxed);
                self.log.log(
                    Level::Error,
                    format_args!("myco-priv refused a request: {reason}"),
                );
                Exit(EXIT_NOT_RUN)
            }
            // Failed: it ran nothing (a command that ran has its exit code, above).
            _ => self.failed(format_args!("{reason}")),
        }
    }

    fn failed(&self, why: std::fmt::Arguments<'_>) -> Exit {
        FAILURES.fetch_add(1, Ordering::Relaxed);
        self.log.log(
            Level::Error,
            format_args!("myco-priv could not do a request: {why}"),
        );
        Exit(EXIT_NOT_RUN)
    }

    /// Tells the helper to stop the request's command: it takes the end of our half of the
    /// connection as the daemon hanging up, stops the command's group, and still replies.
    pub fn stop(&self) {
        // SAFETY: shuts down our own connection's sending half; the descriptor is ours.
        unsafe { libc::shutdown(self.conn.as_raw_fd(), libc::SHUT_WR) };
    }
}
