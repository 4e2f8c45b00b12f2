//! Doing a request the core accepted: a unit file written or removed (atomically, with fsync), or
//! one fixed command line run with the daemon's descriptors as its stdout and stderr, and waited
//! for. Command lines are built by the same functions the daemon uses today (`executor`,
//! `build`, `gc`, `cache`, `transient`), from the helper's own program paths and the checked
//! request; they are exec'd directly, never through a shell that would parse them.

use super::Config;
use crate::daemon::executor::{journal_argv, systemctl_command, ENV};
use crate::spawn::{Argv, ArgvFull};
use myco_core::executor::check_of;
use myco_core::privileged::{Checked, Outcome};
use myco_core::schema::entry::Check;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a waiting thread looks whether its child ended or the daemon hung up.
const WAIT_TICK_MS: u16 = 100;
/// Without a pidfd, how often a waiting thread looks whether its child ended.
const EXIT_LOOK_MS: u16 = 5;
/// How long a child stopped because the daemon hung up has to end before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Whether `dir` is a directory only root can replace, so that the link Nix creates there as
/// root (`--out-link DIR/<root>`) lands there and nowhere else: `dir` is no symbolic link, belongs
/// to root and is writable by no one else but its group (the daemon's, which deletes old roots in
/// it); every directory above it belongs to root and is writable by root alone, or is sticky
/// (`/tmp`), where no one else may rename root's entries. A directory the daemon's user owns, or
/// one below a directory it owns (`/var/lib/myco/gcroots`), could be swapped for a link to
/// anywhere between this check and Nix's, and root would then write a link there.
pub fn gcroot_dir_is_roots(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: &str| {
        io::Error::other(format!(
            "the GC root directory {} {why}: builds link their results there as root \
             (systemd/myco.tmpfiles makes /var/lib/myco-gcroots root:myco 0770)",
            dir.display()
        ))
    };
    if !dir.is_absolute() {
        return Err(refuse("is not an absolute path"));
    }
    let own = fs::symlink_metadata(dir)?;
    if !own.file_type().is_dir() {
        return Err(refuse("is not a directory (or is a symbolic link)"));
    }
    if own.uid() != 0 || own.mode() & 0o002 != 0 {
        return Err(refuse("does not belong to root, or others may write it"));
    }
    for above in dir.ancestors().skip(1) {
        let m = fs::symlink_metadata(above)?;
        let sticky = m.mode() & 0o1000 != 0;
        if !m.file_type().is_dir() || m.uid() != 0 || (m.mode() & 0o022 != 0 && !sticky) {
            return Err(refuse(&format!(
                "lies below {}, which is a link, or not root's, or writable by others",
                above.display()
            )));
        }
    }
    Ok(())
}

/// A request in a log line's words: its kind and the units or service it names.
pub fn summary(checked: &Checked<'_>) -> String {
    match checked {
        Checked::WriteUnit { unit, .. } => format!("write {unit}"),
        Checked::RemoveUnit { unit } => format!("remove {unit}"),
        Checked::DaemonReload => "systemctl daemon-reload".into(),
        Checked::Unit { verb, units } => {
            format!("systemctl {} {}", verb.args()[0], units.join(" "))
        }
        Checked::Build(b) => format!("build {}#{} for {}", b.uri, b.attr, b.service),
        Checked::CollectGarbage => "collect garbage".into(),
        Checked::CacheClosure => "query the build roots' closure".into(),
        Checked::Journal(j) => format!("journal of {}", j.unit),
        Checked::HealthCheck { service, .. } => format!("health check of {service}"),
    }
}

/// What one connection's work needs.
pub struct Work<'a> {
    pub config: &'a Config,
    /// The transient units' environment (`transient::environment`).
    pub env: &'a [CString],
    /// The daemon's connection: hanging up stops the child.
    pub conn: &'a UnixStream,
}

impl Work<'_> {
    /// Does `checked`; the outcome and a reason for the reply.
    pub fn run(
        &self,
        checked: &Checked<'_>,
        fds: Vec<OwnedFd>,
        argv: &mut Argv,
    ) -> (Outcome, String) {
        let done = |r: io::Result<()>, what: &str| match r {
            Ok(()) => (Outcome::Exited(0), what.to_owned()),
            Err(e) => (Outcome::Failed, format!("cannot {what}: {e}")),
        };
        match checked {
            Checked::WriteUnit { unit, text } => {
                done(self.write_unit(unit, text), "write the unit")
            }
            Checked::RemoveUnit { unit } => done(self.remove_unit(unit), "remove the unit"),
            _ => match self.command(checked, argv) {
                Ok(Some(env)) => self.spawn_and_wait(argv, &env, fds),
                Ok(None) => (Outcome::Exited(0), "nothing to run: no build roots".into()),
                Err(e) => (
                    Outcome::Failed,
                    format!("cannot build the command line: {e}"),
                ),
            },
        }
    }

    fn write_unit(&self, unit: &str, text: &[u8]) -> io::Result<()> {
        let path = self.config.unit_dir.join(unit);
        crate::atomic::replace_file(&path, |f| {
            f.write_all(text)?;
            // systemd reads units as any user may; the helper's umask must not hide one.
            f.set_permissions(fs::Permissions::from_mode(0o644))
        })
    }

    fn remove_unit(&self, unit: &str) -> io::Result<()> {
        fs::remove_file(self.config.unit_dir.join(unit))?;
        File::open(&self.config.unit_dir)?.sync_all()
    }

    /// The command line of `checked` into `argv`, and the environment it runs with; `None` if
    /// there is nothing to run (a closure query without roots).
    fn command(&self, checked: &Checked<'_>, argv: &mut Argv) -> io::Result<Option<Vec<&CStr>>> {
        let c = self.config;
        let full = |_: ArgvFull| io::Error::other("the command line does not fit");
        let transient_env = self.env.iter().map(CString::as_c_str).collect();
        match checked {
            Checked::DaemonReload => {
                systemctl_command(
                    argv,
                    c.systemctl.as_bytes(),
                    (&["daemon-reload"], false),
                    [""; 0],
                );
            }
            Checked::Unit { verb, units } => {
                // Units under /run are enabled for this boot only (as the executor does).
                let runtime = verb.links() && c.unit_dir.starts_with("/run");
                let units = units.iter().copied();
                systemctl_command(argv, c.systemctl.as_bytes(), (verb.args(), runtime), units);
            }
            Checked::Journal(j) => {
                journal_argv(argv, c.journalctl.as_bytes(), j.unit, j.follow, j.lines);
            }
            Checked::Build(b) => {
                gcroot_dir_is_roots(&c.gcroot_dir)?;
                let link = crate::path::StackPath::join(&c.gcroot_dir, &[b.root.as_bytes()])?;
                let build = crate::daemon::build::Command {
                    systemd_run: &c.systemd_run,
                    nix: &c.nix,
                    timeout_s: u64::from(b.timeout_s),
                    local: b.local,
                    system: b.system,
                };
                build
                    .argv(
                        argv,
                        self.env,
                        (b.service, link.as_bytes()),
                        (b.uri, b.attr),
                        &b.substitutes,
                    )
                    .map_err(full)?;
                return Ok(Some(transient_env));
            }
            Checked::CollectGarbage => {
                crate::daemon::gc::gc_argv(argv, (&c.systemd_run, &c.collect_garbage), self.env)
                    .map_err(full)?;
                return Ok(Some(transient_env));
            }
            Checked::CacheClosure => {
                let dir = File::open(&c.gcroot_dir)?;
                let tools = (c.systemd_run.as_str(), c.nix_store.as_str(), self.env);
                let any = crate::daemon::cache::closure_argv(argv, tools, &dir)?;
                return Ok(any.then_some(transient_env));
            }
            Checked::HealthCheck {
                service,
                entry,
                timeout_ms,
            } => {
                let Some((Check::Exec { argv: words }, facts)) = check_of(entry) else {
                    unreachable!("the core accepted an entry with an exec check")
                };
                let unit = (c.systemd_run.as_str(), *service, facts);
                crate::daemon::health::exec_argv(argv, unit, u64::from(*timeout_ms), &words)?;
                return Ok(Some(crate::daemon::health::ENV.to_vec()));
            }
            Checked::WriteUnit { .. } | Checked::RemoveUnit { .. } => {
                unreachable!("file requests run no command")
            }
        }
        Ok(Some(ENV.to_vec()))
    }

    /// Runs `argv` with `env`, its stdout the first descriptor and its stderr the second (or the
    /// first again; /dev/null without any), in a process group of its own, and waits for it.
    fn spawn_and_wait(&self, argv: &Argv, env: &[&CStr], fds: Vec<OwnedFd>) -> (Outcome, String) {
        let mut args = argv.iter().map(OsStr::from_bytes);
        let program = args.next().expect("every command line has a program");
        let mut command = Command::new(program);
        command.args(args).env_clear().stdin(Stdio::null());
        for kv in env {
            let kv = kv.to_bytes();
            if let Some(at) = kv.iter().position(|&b| b == b'=') {
                command.env(
                    OsStr::from_bytes(&kv[..at]),
                    OsStr::from_bytes(&kv[at + 1..]),
                );
            }
        }
        let mut fds = fds.into_iter();
        let (stdout, stderr) = match (fds.next(), fds.next()) {
            (Some(out), Some(err)) => (Stdio::from(out), Stdio::from(err)),
            (Some(out), None) => match out.try_clone() {
                Ok(err) => (Stdio::from(out), Stdio::from(err)),
                Err(e) => return (Outcome::Failed, format!("cannot share stdout: {e}")),
            },
            _ => (Stdio::null(), Stdio::null()),
        };
        command.stdout(stdout).stderr(stderr).process_group(0);
        let child = command.spawn();
        // The daemon's descriptors now belong to the child alone: dropping the command closes
        // ours, so the daemon sees end-of-file when the child exits.
        drop(command);
        match child {
            Ok(child) => self.wait(child),
            Err(e) => (
                Outcome::Failed,
                format!("cannot run {}: {e}", program.to_string_lossy()),
            ),
        }
    }

    /// Waits for `child`; if the daemon hangs up first (a `/logs` client gone, a build
    /// cancelled), stops its whole process group, then kills it after `STOP_GRACE`. The child's
    /// pidfd wakes the wait the moment it exits: a `systemctl show` of 10 ms must not cost the
    /// daemon a whole tick (it did, 0.1 s on every unit start; docs/benchmarks.md).
    fn wait(&self, mut child: std::process::Child) -> (Outcome, String) {
        let group = Pid::from_raw(child.id() as i32);
        let exit = pidfd_of(&child);
        let exit = exit.as_ref().map(AsFd::as_fd);
        let mut stopping: Option<Instant> = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return outcome_of(status, stopping.is_some()),
                Ok(None) => {}
                Err(e) => return (Outcome::Failed, format!("cannot wait for the command: {e}")),
            }
            match stopping {
                None if self.hung_up(exit) => {
                    let _ = killpg(group, Signal::SIGTERM);
                    stopping = Some(Instant::now());
                }
                None => {}
                Some(since) => {
                    if since.elapsed() > STOP_GRACE {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    wait_readable([exit], WAIT_TICK_MS / 4);
                }
            }
        }
    }

    /// Whether the daemon closed its end (or sent more than its one request), waiting at most
    /// one tick, and less once the child exits. Without a pidfd (a kernel older than 5.3) the
    /// wait is short instead, so an ended child is still noticed soon.
    fn hung_up(&self, exit: Option<BorrowedFd<'_>>) -> bool {
        let tick = if exit.is_some() {
            WAIT_TICK_MS
        } else {
            EXIT_LOOK_MS
        };
        let ready = wait_readable([Some(self.conn.as_fd()), exit], tick);
        ready[0]
    }
}

/// A descriptor that becomes readable when `child` exits (pidfd_open(2), Linux 5.3); None where
/// the kernel has none, and the caller then looks every `EXIT_LOOK_MS`.
fn pidfd_of(child: &std::process::Child) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(child.id()).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // passed. The child is not reaped before this call (only `wait` reaps it), so the pid is its.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Polls the present descriptors for input (or hang-up) for at most `ms`; which were ready, in
/// the order given (an absent one never is). An interrupted or failed poll reports none ready.
fn wait_readable<const N: usize>(fds: [Option<BorrowedFd<'_>>; N], ms: u16) -> [bool; N] {
    let mut polled: heapless::Vec<PollFd<'_>, N> = heapless::Vec::new();
    for fd in fds.iter().flatten() {
        let _ = polled.push(PollFd::new(*fd, PollFlags::POLLIN));
    }
    let mut ready = [false; N];
    if polled.is_empty() {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        return ready;
    }
    if !matches!(poll(&mut polled, ms), Ok(n) if n > 0) {
        return ready;
    }
    let mut revents = polled
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()));
    for (slot, fd) in ready.iter_mut().zip(fds.iter()) {
        if fd.is_some() {
            *slot = revents.next().unwrap_or(false);
        }
    }
    ready
}

fn outcome_of(status: ExitStatus, stopped: bool) -> (Outcome, String) {
    let after = if stopped {
        " after the daemon hung up"
    } else {
        ""
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => (Outcome::Exited(code), format!("exited with {code}{after}")),
        (None, Some(signal)) => (
            Outcome::Signaled(signal),
            format!("killed by signal {signal}{after}"),
        ),
        (None, None) => (Outcome::Failed, "ended without a status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{gcroot_dir_is_roots, pidfd_of, wait_readable};
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(path: &std::path::Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Root's own directory in root's own parent is taken (as root; as anyone else nothing is);
    /// a link to it, a world-writable one, and one in a group-writable parent are not.
    #[test]
    fn only_a_directory_root_alone_can_replace_holds_gc_roots() {
        let base = std::env::temp_dir().join(format!("myco-gcroots-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let roots = base.join("roots");
        fs::create_dir_all(&roots).unwrap();
        mode(&base, 0o755);
        mode(&roots, 0o770);
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(gcroot_dir_is_roots(&roots).is_ok(), root);
        let link = base.join("link");
        symlink(&roots, &link).unwrap();
        let err = gcroot_dir_is_roots(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        mode(&roots, 0o777);
        assert!(gcroot_dir_is_roots(&roots).is_err());
        mode(&roots, 0o770);
        mode(&base, 0o775);
        assert!(gcroot_dir_is_roots(&roots).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    /// The helper's wait wakes when its child exits, not at the end of its tick: the child's
    /// pidfd turns readable on exit (a poll that timed out would report it not ready), and is
    /// not readable while the child runs. Absent descriptors are never ready.
    #[test]
    fn a_childs_exit_wakes_the_wait() {
        let mut running = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let fd = pidfd_of(&running).expect("Linux 5.3 or later");
        assert_eq!(wait_readable([Some(fd.as_fd()), None], 50), [false, false]);
        running.kill().unwrap();
        assert_eq!(
            wait_readable([Some(fd.as_fd()), None], 60_000),
            [true, false]
        );
        running.wait().unwrap();
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let fd = pidfd_of(&ended).unwrap();
        assert_eq!(
            wait_readable([None, Some(fd.as_fd())], 60_000),
            [false, true]
        );
        assert!(ended.wait().unwrap().success());
    }
}
