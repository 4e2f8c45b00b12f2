//! The host's side of health checks: runs the checks the core's executor hands out
//! (`Executor::poll_check`, `myco_core::executor::health`) in a fixed number of slots, without
//! blocking the loop and without allocating after start-up, and reports each result.
//!
//! - HTTP: a non-blocking TCP connect to 127.0.0.1:port, then `GET <path> HTTP/1.0` from a
//!   fixed buffer, and the answer's status line read into a fixed buffer (`parse_status`); a 2xx
//!   or 3xx status passes.
//! - TCP: a non-blocking connect; an accepted connection passes.
//! - Exec: the command in a transient unit with the service's sandbox and dynamic user
//!   (`systemd-run`, as `transient.rs` runs builds; docs/units.md says why), spawned through
//!   `spawn.rs`; exit status 0 passes.
//!
//! Each slot's socket is watched by the loop's backend (writable while connecting or sending,
//! readable while reading) so an answer wakes the loop; a slot also advances on every step,
//! since a socket is only ever read or written when the kernel would not block. The timeout is
//! the loop's: a check still running at its deadline fails ("timed out") and its socket is
//! closed, or its unit's process group killed.

use crate::flight::{Level, Logger};
use crate::io::{Backend, Interest};
use crate::spawn::{self, Argv, Child};
use myco_core::executor::{check_of, CheckResult, Command, UnitHealth};
use myco_core::schema::entry::{Check, HEALTH_PATH_BYTES_MAX};
use myco_core::time::Instant;
use myco_core::unit::{sandbox_lines, Facts};
use myco_core::Node;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Checks run at once; more wait in the core until a slot is free.
pub const CHECK_SLOTS: usize = 8;
/// The first loop token of the check slots (slot `i` is `TOKEN_CHECK_BASE + i`).
pub const TOKEN_CHECK_BASE: u64 = 32;
/// `GET <path> HTTP/1.0`, a Host and a Connection line.
const REQUEST_BYTES: usize = HEALTH_PATH_BYTES_MAX + 96;
/// Enough of the answer to hold its status line; the rest is not read.
const ANSWER_BYTES: usize = 128;

/// What a slot is doing.
enum Work {
    Idle,
    /// Connecting (then, for HTTP, sending and reading) on a non-blocking socket.
    Socket {
        fd: OwnedFd,
        phase: Phase,
    },
    Exec {
        child: Child,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

/// One check in hand.
struct Slot {
    token: u64,
    deadline_ms: u64,
    /// An HTTP check (false: TCP, where connected is passed).
    http: bool,
    /// A result known when the check started (a connection refused at once).
    early: Option<CheckResult<'static>>,
    /// The service checked, for the log.
    name: heapless::String<{ myco_core::config::NAME_BYTES_MAX }>,
    work: Work,
    request: [u8; REQUEST_BYTES],
    request_len: usize,
    sent: usize,
    answer: [u8; ANSWER_BYTES],
    got: usize,
    /// The loop watches this slot's fd under its token: forget it before closing.
    watched: bool,
}

/// The check slots and what an exec check is spawned with. The slots live inline, so they are
/// in the arena with the daemon that holds them.
pub struct Checks {
    slots: [Slot; CHECK_SLOTS],
    systemd_run: String,
    argv: Argv,
    log: Logger,
}

/// The transient unit's environment: only PATH.
pub const ENV: [&CStr; 1] = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin"];

impl Checks {
    pub fn new(systemd_run: &str, log: Logger, argv: Argv) -> Checks {
        Checks {
            slots: core::array::from_fn(|_| Slot::idle()),
            systemd_run: systemd_run.to_owned(),
            argv,
            log,
        }
    }

    /// The slots' sockets the loop watches this turn.
    pub fn interests(&self, mut push: impl FnMut(Interest)) {
        for (i, s) in self.slots.iter().enumerate() {
            if let Work::Socket { fd, phase } = &s.work {
                push(Interest {
                    fd: fd.as_raw_fd(),
                    token: TOKEN_CHECK_BASE + i as u64,
                    readable: *phase == Phase::Reading,
                    writable: *phase != Phase::Reading,
                });
            }
        }
    }

    /// Whether `token` is a check slot's.
    pub fn owns(token: u64) -> bool {
        (TOKEN_CHECK_BASE..TOKEN_CHECK_BASE + CHECK_SLOTS as u64).contains(&token)
    }

    /// Marks the slots the loop now watches (every one with a socket).
    pub fn watched(&mut self) {
        for s in self.slots.iter_mut() {
            s.watched |= matches!(s.work, Work::Socket { .. });
        }
    }

    /// One step: advance every check in hand, report those that ended or timed out, then start
    /// the checks the core has due while a slot is free.
    pub fn step(
        &mut self,
        core: &mut myco_core::executor::Executor,
        node: &Node,
        now_ms: u64,
        io: &mut Backend,
        mut ask: Ask<'_>,
    ) {
        for i in 0..self.slots.len() {
            let Some(result) = self.slots[i].advance(now_ms) else {
                continue;
            };
            let token = self.slots[i].token;
            self.slots[i].finish(i, io);
            self.report(core, (now_ms, token), &self.slots[i].name, result);
        }
        while let Some(i) = self.slots.iter().position(|s| matches!(s.work, Work::Idle)) {
            let Some(issued) = core.poll_check(Instant(now_ms), node) else {
                return;
            };
            let token = issued.token;
            self.slots[i].token = token;
            let ask = ask.as_mut().map(|(c, frame)| (*c, &mut **frame));
            if !self.start(i, now_ms, issued.command, ask) {
                self.slots[i].finish(i, io);
                let why = CheckResult::Failed("could not start");
                self.report(core, (now_ms, token), &self.slots[i].name, why);
            }
        }
    }

    /// Hands `result` to the core and logs a failure: at warning level when it made the service
    /// unhealthy, at info level otherwise (one line per failed check).
    fn report(
        &self,
        core: &mut myco_core::executor::Executor,
        (now_ms, token): (u64, u64),
        name: &str,
        result: CheckResult<'_>,
    ) {
        let health = |core: &myco_core::executor::Executor| core.unit(name).map(|u| u.health);
        let before = health(core);
        if !core.handle_check_done(Instant(now_ms), token, result) {
            return;
        }
        let CheckResult::Failed(why) = result else {
            return;
        };
        let after = health(core);
        let (level, what) = if after == Some(UnitHealth::Unhealthy) && before != after {
            (Level::Warning, ": unhealthy, restarting it")
        } else {
            (Level::Info, "")
        };
        self.log.log(
            level,
            format_args!("service {name}: health check failed ({why}){what}"),
        );
    }

    /// Starts `command` in slot `i` (an exec check asked of `myco-priv` under `--privileged`);
    /// false (logged) if it could not be.
    fn start(&mut self, i: usize, now_ms: u64, command: Command<'_>, ask: Ask<'_>) -> bool {
        let Command::HealthCheck {
            name,
            entry,
            timeout_ms,
        } = command
        else {
            unreachable!("poll_check issues health checks only");
        };
        let (check, facts) = check_of(entry).expect("a checked unit's entry declares a check");
        let slot = &mut self.slots[i];
        slot.deadline_ms = now_ms + timeout_ms;
        slot.name = heapless::String::try_from(name).expect("service names fit NAME_BYTES_MAX");
        let started = match check {
            Check::Http { path, port } => slot.connect(port, Some(path)),
            Check::Tcp { port } => slot.connect(port, None),
            Check::Exec { argv } => {
                let unit = (self.systemd_run.as_str(), name, facts);
                let child = match ask {
                    Some((client, frame)) => ask_exec(client, frame, (name, entry), timeout_ms),
                    None => spawn_exec(&mut self.argv, unit, timeout_ms, &argv),
                };
                child.map(|child| slot.work = Work::Exec { child })
            }
        };
        if let Err(e) = &started {
            self.log.log(
                Level::Warning,
                format_args!(
                    "service {name}: cannot start its health check: {}",
                    crate::flight::IoError(e)
                ),
            );
        }
        started.is_ok()
    }
}

impl Slot {
    fn idle() -> Slot {
        Slot {
            token: 0,
            deadline_ms: 0,
            http: false,
            early: None,
            name: heapless::String::new(),
            work: Work::Idle,
            request: [0; REQUEST_BYTES],
            request_len: 0,
            sent: 0,
            answer: [0; ANSWER_BYTES],
            got: 0,
            watched: false,
        }
    }

    /// Starts a non-blocking connect to 127.0.0.1:`port`, with the request for `path` if HTTP.
    fn connect(&mut self, port: u16, path: Option<&str>) -> io::Result<()> {
        self.http = path.is_some();
        self.request_len = path.map_or(0, |p| write_request(&mut self.request, p));
        (self.sent, self.got) = (0, 0);
        let fd = tcp_socket()?;
        let addr = loopback(port);
        // SAFETY: `addr` is a valid sockaddr_in for the duration of the call; `fd` is ours.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let e = io::Error::last_os_error();
        // Loopback often refuses at once: a failed check, not a check that could not start.
        self.early = (r != 0 && e.raw_os_error() != Some(libc::EINPROGRESS))
            .then_some(CheckResult::Failed("connection refused"));
        self.work = Work::Socket {
            fd,
            phase: Phase::Connecting,
        };
        Ok(())
    }

    /// Moves the check on as far as it goes without blocking: `Some` once it has a result.
    fn advance(&mut self, now_ms: u64) -> Option<CheckResult<'static>> {
        if self.early.is_some() {
            return self.early.take();
        }
        let result = match &mut self.work {
            Work::Idle => return None,
            Work::Exec { child } => child.poll_quiet().map(|exit| {
                // Reaped: nothing is left to kill.
                self.work = Work::Idle;
                match exit.success() {
                    true => CheckResult::Passed,
                    false => CheckResult::Failed("command failed"),
                }
            }),
            Work::Socket { .. } => self.advance_socket(),
        };
        match result {
            None if now_ms >= self.deadline_ms => Some(CheckResult::Failed("timed out")),
            result => result,
        }
    }

    fn advance_socket(&mut self) -> Option<CheckResult<'static>> {
        let Work::Socket { fd, phase } = &mut self.work else {
            return None;
        };
        let fd = fd.as_raw_fd();
        if *phase == Phase::Connecting {
            match connected(fd) {
                Err(_) => return Some(CheckResult::Failed("connection refused")),
                Ok(false) => return None,
                Ok(true) if !self.http => return Some(CheckResult::Passed),
                Ok(true) => *phase = Phase::Sending,
            }
        }
        if *phase == Phase::Sending {
            let rest = &self.request[self.sent..self.request_len];
            match send_some(fd, rest) {
                Err(()) => return Some(CheckResult::Failed("connection reset")),
                Ok(n) => self.sent += n,
            }
            if self.sent < self.request_len {
                return None;
            }
            *phase = Phase::Reading;
        }
        self.read_answer(fd)
    }

    /// Reads what the answer has so far; a result once the status line is complete, the buffer
    /// full, or the server closed the connection.
    fn read_answer(&mut self, fd: RawFd) -> Option<CheckResult<'static>> {
        while self.got < ANSWER_BYTES {
            let room = &mut self.answer[self.got..];
            // SAFETY: reads at most `room.len()` bytes into `room`, which outlives the call.
            let n = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), 0) };
            if n > 0 {
                self.got += n as usize;
                if self.answer[..self.got].contains(&b'\n') {
                    break;
                }
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                _ if n == 0 => break,
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return None,
                _ => break,
            }
        }
        let status = parse_status(&self.answer[..self.got]);
        Some(status.map_or(CheckResult::Failed("no HTTP status"), judge))
    }

    /// Ends the check in hand: the socket closed (after the loop forgot it), the exec check's
    /// unit killed and reaped if it still runs.
    fn finish(&mut self, i: usize, io: &mut Backend) {
        if self.watched {
            io.forget(TOKEN_CHECK_BASE + i as u64);
            self.watched = false;
        }
        // A check still running at its timeout: its `systemd-run` is killed and reaped (it
        // exits at once on SIGKILL); `RuntimeMaxSec=` ends its unit on systemd's side.
        if let Work::Exec { mut child } = std::mem::replace(&mut self.work, Work::Idle) {
            child.kill_group();
            child.kill_and_reap();
        }
        self.work = Work::Idle;
    }
}

/// A 2xx or 3xx status passes.
fn judge(status: u16) -> CheckResult<'static> {
    match status {
        200..=399 => CheckResult::Passed,
        500..=599 => CheckResult::Failed("status 5xx"),
        400..=499 => CheckResult::Failed("status 4xx"),
        _ => CheckResult::Failed("status not 2xx or 3xx"),
    }
}

/// The status code of an HTTP/1.x status line at the start of `answer`, once the line is
/// complete (or the buffer full): `HTTP/1.<digit> <3 digits>` followed by a space or the line's
/// end. Anything else is `None`.
pub fn parse_status(answer: &[u8]) -> Option<u16> {
    let line_end = answer.iter().position(|&b| b == b'\n')?;
    let line = answer[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&answer[..line_end]);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    if !minor.is_ascii_digit() || rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if rest.len() > 3 && rest[3] != b' ' {
        return None;
    }
    let code = rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=599).contains(&code).then_some(code)
}

/// `GET <path> HTTP/1.0` with a Host line into `out`; its length. The path was validated by
/// the core (`valid_http_path`: printable ASCII, at most `HEALTH_PATH_BYTES_MAX`).
fn write_request(out: &mut [u8; REQUEST_BYTES], path: &str) -> usize {
    let parts: [&[u8]; 3] = [
        b"GET ",
        path.as_bytes(),
        b" HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: myco-health\r\nConnection: close\r\n\r\n",
    ];
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    at
}

/// Sends what it can of `buf` without blocking: `Ok(n)` bytes (0 when it would block), `Err`
/// on an error (the server closed or reset the connection).
fn send_some(fd: RawFd, buf: &[u8]) -> Result<usize, ()> {
    loop {
        // SAFETY: writes at most `buf.len()` bytes from `buf`, which outlives the call.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(()),
        }
    }
}

/// Whether a non-blocking connect finished: asking again says `EISCONN` once it has, `EALREADY`
/// while it is under way, or its error. Needs no readiness report, so a step may ask any time.
fn connected(fd: RawFd) -> io::Result<bool> {
    let addr = peer_of(fd);
    // SAFETY: `addr` is a valid sockaddr_in for the duration of the call; `fd` is ours.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EISCONN) => Ok(true),
        Some(libc::EALREADY | libc::EINPROGRESS | libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

/// The address the socket is connecting to: the loopback port it was given.
fn peer_of(fd: RawFd) -> libc::sockaddr_in {
    // SAFETY: getsockname writes at most `len` bytes into `addr`, a sockaddr_in we own.
    let port = unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
        addr.sin_port
    };
    let mut addr = loopback(0);
    addr.sin_port = port;
    addr
}

fn loopback(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    addr
}

fn tcp_socket() -> io::Result<OwnedFd> {
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2); a non-negative result is a new fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, open descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The helper and its request's frame buffer, under `--privileged`.
pub type Ask<'a> = Option<(&'a crate::privileged::client::Client, &'a mut [u8])>;

/// Asks `myco-priv` to run the exec check the signed `entry` of service `name` declares; the
/// helper reads the command and the sandbox from the entry itself.
fn ask_exec(
    client: &crate::privileged::client::Client,
    frame: &mut [u8],
    (name, entry): (&str, &[u8]),
    timeout_ms: u64,
) -> io::Result<Child> {
    let unit = myco_core::unit::unit_name(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let request = myco_core::privileged::Request::HealthCheck {
        name: &unit,
        entry,
        timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
    };
    client.start(&request, frame, None)
}

/// `systemd-run` with the service's dynamic user and sandbox, then the check's command.
fn spawn_exec(
    argv: &mut Argv,
    unit: (&str, &str, Facts),
    timeout_ms: u64,
    command: &[&str],
) -> io::Result<Child> {
    exec_argv(argv, unit, timeout_ms, command)?;
    spawn::spawn(argv, &ENV)
}

/// The command line of an exec check into `argv`: `systemd-run` with the service's dynamic user
/// and sandbox, then the check's command. The daemon and `myco-priv` both build with it.
pub fn exec_argv(
    argv: &mut Argv,
    (systemd_run, name, facts): (&str, &str, Facts),
    timeout_ms: u64,
    command: &[&str],
) -> io::Result<()> {
    argv.clear();
    let full = || io::Error::other("the check's command line does not fit");
    argv.push(&[systemd_run.as_bytes()]).map_err(|_| full())?;
    for arg in ["--quiet", "--wait", "--collect", "--service-type=exec"] {
        argv.push(&[arg.as_bytes()]).map_err(|_| full())?;
    }
    let n = name.as_bytes();
    argv.push(&[b"--unit=myco-check-", n]).map_err(|_| full())?;
    argv.push(&[b"--description=myco: health check of ", n])
        .map_err(|_| full())?;
    // systemd stops the check at its timeout even if this daemon is gone by then.
    let mut secs = heapless::String::<20>::new();
    write!(secs, "{}", timeout_ms.div_ceil(1000)).expect("a u64 fits 20 digits");
    argv.push(&[b"--property=RuntimeMaxSec=", secs.as_bytes()])
        .map_err(|_| full())?;
    argv.push(&[b"--property=DynamicUser=yes"])
        .map_err(|_| full())?;
    // The service's own dynamic user (its unit's name), shared while the service runs.
    argv.push(&[b"--property=User=myco-", n])
        .map_err(|_| full())?;
    let mut pushed = Ok(());
    sandbox_lines(facts, |lines| {
        for line in lines {
            if pushed.is_ok() {
                pushed = argv.push(&[b"--property=", line.as_bytes()]);
            }
        }
    });
    pushed.map_err(|_| full())?;
    argv.push(&[b"--"]).map_err(|_| full())?;
    for word in command {
        argv.push(&[word.as_bytes()]).map_err(|_| full())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status lines: 2xx and 3xx pass, others fail, and anything that is not an HTTP/1.x
    /// status line is no status at all.
    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 302\r\nLocation: /\r\n"), Some(302));
        assert_eq!(parse_status(b"HTTP/1.1 500 Internal\n"), Some(500));
        for bad in [
            &b"HTTP/1.1 200 OK"[..],
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 20\r\n",
            b"HTTP/1.1 2000\r\n",
            b"HTTP/1.1 099\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"\n",
        ] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
        assert_eq!(judge(204), CheckResult::Passed);
        assert_eq!(judge(301), CheckResult::Passed);
        assert!(matches!(judge(404), CheckResult::Failed(_)));
        assert!(matches!(judge(503), CheckResult::Failed(_)));
    }

    /// The request is one HTTP/1.0 GET of the path, ending with the blank line.
    #[test]
    fn writes_the_request() {
        let mut out = [0; REQUEST_BYTES];
        let n = write_request(&mut out, &"/h".repeat(HEALTH_PATH_BYTES_MAX / 2));
        assert!(out[..n].starts_with(b"GET /h/h"));
        assert!(out[..n].ends_with(b"\r\n\r\n"));
    }

    /// An exec check runs in the service's sandbox under its dynamic user.
    #[test]
    fn exec_check_runs_in_the_service_sandbox() {
        let mut argv = Argv::new(crate::arena::leak_bytes(crate::spawn::ARGV_BYTES));
        let facts = Facts {
            gpu: false,
            low_port: false,
            flake: false,
        };
        argv.clear();
        let unit = ("/nonexistent/systemd-run", "web", facts);
        let _ = spawn_exec(&mut argv, unit, 2000, &["/bin/check", "a"]);
        let args = argv.args();
        for want in [
            "--unit=myco-check-web",
            "--property=DynamicUser=yes",
            "--property=RuntimeMaxSec=2",
            "--property=User=myco-web",
            "--property=ProtectSystem=strict",
            "--property=PrivateUsers=yes",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert_eq!(args[args.len() - 3..], ["--", "/bin/check", "a"]);
    }
}
