//! `myco-priv`, the privileged helper (docs/architecture.md, "Least privilege"): a Unix stream
//! socket on which one user, the daemon's, asks for the few things that need root, one request
//! per connection.
//!
//! Each connection: the peer's uid (SO_PEERCRED, which the peer cannot forge) must be the allowed
//! one; one frame is read (`myco_core::privileged`: length prefix, postcard body) within
//! `REQUEST_TIMEOUT`, with at most `FDS_MAX` descriptors passed beside it (SCM_RIGHTS: the pipes
//! the daemon reads a child's output from, so it keeps its non-blocking loop); the core parses and
//! checks it, an entry in it against the operator key the helper was started with; `run.rs` does
//! it; one reply frame says how it ended. A refusal changes nothing.
//!
//! Bounds: `CONNECTIONS_MAX` connections at once (each takes one of as many preallocated
//! command-line buffers; one more is told the helper is busy), `REQUEST_BYTES_MAX` per request,
//! and every child is waited for by the thread that started it, which kills its process group if
//! the daemon hangs up first.

pub mod client;
mod run;

use crate::spawn::Argv;
use myco_core::crypto::PublicKey;
use myco_core::executor::remote::Isolation;
use myco_core::privileged::{
    body_len, encode_reply, parse, Checked, Outcome, Refusal, FDS_MAX, FRAME_HEADER_BYTES,
    REPLY_BYTES_MAX, REQUEST_BYTES_MAX,
};
use nix::sys::socket::{getsockopt, recvmsg, sockopt, ControlMessageOwned, MsgFlags};
use std::ffi::CString;
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 8;
/// How long a connection may take to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replied connection is read for what its peer still sends before it is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(50);

/// What the helper may run and where it writes. Every program is the operator's choice (flags),
/// never the daemon's.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where units are written (`/etc/systemd/system`; `/run/systemd/system` on NixOS).
    pub unit_dir: PathBuf,
    /// The only uid served: the daemon's.
    pub allow_uid: u32,
    /// The cluster's operator key: an entry in a request must be signed by it.
    pub operator: PublicKey,
    pub systemctl: String,
    pub journalctl: String,
    pub systemd_run: String,
    pub nix: String,
    pub collect_garbage: String,
    pub nix_store: String,
    /// Where builds link their results (GC roots), which the closure query reads.
    pub gcroot_dir: PathBuf,
    /// `--allow-root-builds`: run builds that may build even where Nix runs builders as root
    /// outside a sandbox. Without it they are refused (`Refusal::RootBuilds`), whatever the
    /// daemon asked: fetches (`local: false`, `--max-jobs 0`) run builders nowhere and pass.
    pub allow_root_builds: bool,
}

impl Config {
    /// The defaults of a Debian or NixOS box, serving `allow_uid` for the cluster of `operator`.
    pub fn new(allow_uid: u32, operator: PublicKey) -> Config {
        Config {
            unit_dir: PathBuf::from("/etc/systemd/system"),
            allow_uid,
            operator,
            systemctl: "systemctl".into(),
            journalctl: "journalctl".into(),
            systemd_run: "systemd-run".into(),
            nix: "nix".into(),
            collect_garbage: "nix-collect-garbage".into(),
            nix_store: "nix-store".into(),
            // Root's, from systemd/myco.tmpfiles; the packaged daemon is given it too and deletes
            // the roots of versions it no longer needs there.
            gcroot_dir: PathBuf::from("/var/lib/myco-gcroots"),
            allow_root_builds: false,
        }
    }
}

/// The helper: its configuration, the environment of Nix's transient units, and the free
/// command-line buffers (one per connection in hand).
pub struct Helper {
    config: Config,
    env: Vec<CString>,
    argvs: Mutex<Vec<Argv>>,
}

impl Helper {
    pub fn new(config: Config) -> Helper {
        let argvs = (0..CONNECTIONS_MAX)
            .map(|_| Argv::new(crate::arena::leak_bytes(crate::spawn::ARGV_BYTES)))
            .collect();
        Helper {
            config,
            env: crate::daemon::transient::environment(),
            argvs: Mutex::new(argvs),
        }
    }

    /// Serves `listener`, each connection on a thread of its own, until the listener itself is
    /// unusable. A failed accept (a connection reset before it was taken, no descriptor left
    /// for a moment) is logged and the next one tried.
    pub fn serve(self: Arc<Helper>, listener: &UnixListener) -> io::Result<()> {
        loop {
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK)
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => {
                    eprintln!("myco-priv: cannot accept a connection: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let Some(slot) = Slot::take(&self) else {
                reply(&conn, Outcome::Failed, "myco-priv is busy: try again");
                continue;
            };
            std::thread::spawn(move || {
                let mut slot = slot;
                let argv = slot
                    .argv
                    .as_mut()
                    .expect("a slot holds its buffer until dropped");
                slot.helper.handle(&conn, argv);
            });
        }
    }

    /// One connection: who, what, do it, answer.
    fn handle(&self, conn: &UnixStream, argv: &mut Argv) {
        let uid = match getsockopt(conn, sockopt::PeerCredentials) {
            Ok(cred) => cred.uid(),
            Err(e) => return eprintln!("myco-priv: cannot read a peer's credentials: {e}"),
        };
        if uid != self.config.allow_uid {
            let why = format!("uid {uid} may not use myco-priv");
            eprintln!("myco-priv: refused: {why}");
            return reply(conn, Outcome::Refused, &why);
        }
        let (outcome, why) = match read_request(conn) {
            Ok((body, fds)) => self.answer(conn, &body, fds, argv),
            Err(why) => {
                eprintln!("myco-priv: refused: {why}");
                (Outcome::Refused, why)
            }
        };
        reply(conn, outcome, &why);
    }

    fn answer(
        &self,
        conn: &UnixStream,
        body: &[u8],
        fds: Vec<OwnedFd>,
        argv: &mut Argv,
    ) -> (Outcome, String) {
        let refused = |refusal: Refusal| {
            eprintln!("myco-priv: refused: {refusal}");
            (Outcome::Refused, refusal.to_string())
        };
        let checked = match parse(body, &self.config.operator) {
            Ok(checked) => checked,
            Err(refusal) => return refused(refusal),
        };
        if let Err(refusal) = checked.check_descriptors(fds.len()) {
            return refused(refusal);
        }
        if self.builds_as_root(&checked, argv) {
            return refused(Refusal::RootBuilds);
        }
        let work = run::Work {
            config: &self.config,
            env: &self.env,
            conn,
        };
        let (outcome, why) = work.run(&checked, fds, argv);
        // Every root action the helper took, in the journal: what, on what, and how it ended.
        eprintln!("myco-priv: {}: {outcome:?}: {why}", run::summary(&checked));
        (outcome, why)
    }
}

impl Helper {
    /// `checked` is a build that may run builders here, where the operator did not allow root
    /// builds and `nix show-config` (asked now: the configuration may have changed since the last
    /// build) does not say that Nix keeps builders from the box.
    fn builds_as_root(&self, checked: &Checked<'_>, argv: &mut Argv) -> bool {
        let Checked::Build(build) = checked else {
            return false;
        };
        if !build.local || self.config.allow_root_builds {
            return false;
        }
        let shown = self.nix_config(build.service, argv).unwrap_or_default();
        Isolation::parse(&shown).builders_run_as_root()
    }

    /// What `nix show-config` prints where the build of `service` would run: in a transient
    /// unit with the builds' environment (`transient`), as root with the whole box in view, not
    /// in the helper's own sandbox, where Nix cannot read the hidden home directories its user
    /// configuration lives in and fails. `None` if it cannot run or does not answer in time.
    fn nix_config(&self, service: &str, argv: &mut Argv) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        argv.clear();
        let unit = crate::daemon::transient::Unit {
            systemd_run: &self.config.systemd_run,
            name: &[b"myco-nix-config-", service.as_bytes()],
            runtime_max_s: Some(NIX_CONFIG_MAX_S),
        };
        crate::daemon::transient::push_prefix(argv, &unit, &self.env).ok()?;
        let nix = self.config.nix.as_str();
        for arg in [
            nix,
            "--extra-experimental-features",
            "nix-command",
            "show-config",
        ] {
            argv.push(&[arg.as_bytes()]).ok()?;
        }
        let mut args = argv.iter().map(std::ffi::OsStr::from_bytes);
        let env = self.env.iter().filter_map(|kv| {
            let (k, v) = kv.to_str().ok()?.split_once('=')?;
            Some((k, v))
        });
        let child = std::process::Command::new(args.next()?)
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        crate::daemon::build::output_within(child)
    }
}

/// `RuntimeMaxSec=` of the unit that asks Nix for its configuration.
const NIX_CONFIG_MAX_S: u64 = 10;

/// One connection's share of the helper: a command-line buffer, given back when the connection
/// ends, even if its thread panics, so the helper never runs out of slots for good.
struct Slot {
    helper: Arc<Helper>,
    argv: Option<Argv>,
}

impl Slot {
    /// A free slot, or `None` when `CONNECTIONS_MAX` connections are in hand.
    fn take(helper: &Arc<Helper>) -> Option<Slot> {
        let argv = helper
            .argvs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        Some(Slot {
            helper: Arc::clone(helper),
            argv: Some(argv),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(argv) = self.argv.take() {
            let mut argvs = self
                .helper
                .argvs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            argvs.push(argv);
        }
    }
}

/// Reads one request frame and the descriptors sent with it; the reason on refusal.
fn read_request(conn: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let timeout = "no whole request within the timeout";
    // One deadline for the whole request, so a peer trickling a byte at a time cannot hold a
    // connection slot longer than a silent one.
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; FRAME_HEADER_BYTES + REQUEST_BYTES_MAX + 1];
    let mut fds = Vec::new();
    let mut filled = 0;
    let mut want = FRAME_HEADER_BYTES;
    while filled < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout.into());
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match receive(conn.as_raw_fd(), &mut buf[filled..], &mut fds) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timeout.into()),
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            return Err(Refusal::Malformed.to_string() + ": it ends early");
        }
        // Descriptors may come with every piece of the frame: past the most any request takes,
        // refuse now rather than let them pile up (which requests take any is the core's rule).
        if fds.len() > FDS_MAX {
            return Err(Refusal::Descriptors.to_string());
        }
        filled += n;
        if want == FRAME_HEADER_BYTES && filled >= FRAME_HEADER_BYTES {
            let header = buf[..FRAME_HEADER_BYTES].try_into().expect("four bytes");
            want = FRAME_HEADER_BYTES + body_len(header).map_err(|r| r.to_string())?;
        }
    }
    if filled > want {
        return Err("more than one request on a connection".into());
    }
    buf.truncate(want);
    buf.drain(..FRAME_HEADER_BYTES);
    Ok((buf, fds))
}

/// One `recvmsg`: the bytes read, with any descriptors appended to `fds` (close-on-exec, so no
/// child inherits one it was not given).
fn receive(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; FDS_MAX + 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process for this
            // message; nothing else knows them, so each is owned here exactly once.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // The kernel closed the descriptors that did not fit (more than a request may carry);
        // those that did are closed when the caller drops `fds`.
        return Err(io::Error::other(format!("more than {FDS_MAX} descriptors")));
    }
    Ok(msg.bytes)
}

/// Writes the reply frame; a peer already gone is no error of ours. Then reads and drops what
/// the peer sends until it closes (it does once it has the reply), for at most `DRAIN_TIMEOUT` in
/// all:
/// closing a Unix socket with unread bytes (a request refused before it was read) resets the
/// connection, and the peer would lose the reply that says why.
fn reply(mut conn: &UnixStream, outcome: Outcome, why: &str) {
    let mut out = [0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
    let len = encode_reply(outcome, why, &mut out).expect("a clipped reason fits a reply");
    let _ = conn.write_all(&out[..len]);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut scratch = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match conn.read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}
