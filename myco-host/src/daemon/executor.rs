//! The executor's hands: runs the commands `myco_core::executor` decides on. At boot it reads
//! the unit files an earlier run wrote (their first line records the entry digest); then each
//! step it asks the core for the next command, writes or deletes a unit file atomically or
//! spawns `systemctl`, polls the child, and reports the outcome. It also spawns `journalctl`
//! for `/logs`, and runs builds beside the systemd commands (`build.rs`). What to change, in which order, when to retry and how a unit does are the
//! core's decisions, which the simulator checks.

use super::build::{BuildConfig, Builder};
use crate::arena::{ExecutorArena, ExecutorBuffers};
use crate::audit::{AuditEntry, AuditLog, AuditOutcome};
use crate::flight::{Level, Logger};
use crate::path::{Lossy, StackPath};
use crate::spawn::{self, Argv, Child, Output};
use myco_core::executor::{self as core, Command, Outcome, Verb};
use myco_core::privileged::{Request, UnitVerb};
use myco_core::time::Instant;
use myco_core::unit::{self, unit_name};
use myco_core::Node;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

pub use myco_core::executor::{ExecutorStats, UnitHealth};

/// First line of every unit the executor writes: the digest it compares to decide a rewrite.
const HEADER: &str = "# myco: ";
/// The header line's length: the prefix, 16 hex digits and a newline.
pub const HEADER_BYTES: usize = HEADER.len() + 17;
/// The environment of `systemctl` and `journalctl`: no colours, no pager, a fixed PATH.
pub const ENV: [&CStr; 2] = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin", c"SYSTEMD_COLORS=0"];

/// The running `systemctl`: its child, the token of its command, and its verb (for the log).
struct Job {
    child: Child,
    token: u64,
    verb: Verb,
    /// The core asked to cancel it and its group was killed: it ends failed.
    killed: bool,
}

/// How this box builds flake services and collects its Nix store.
pub struct NixSetup<'a> {
    pub build: BuildConfig,
    pub gc: super::gc::GcConfig,
    /// Where build logs go (`<state-dir>/builds`).
    pub state_dir: &'a Path,
}

/// The core machine with the files and processes it asks for. Derefs to the core executor for
/// its queries (`unit`, `census`, `stats`).
pub struct Executor {
    /// The core's executor, in the arena.
    core: &'static mut core::Executor,
    unit_dir: PathBuf,
    systemctl: Vec<u8>,
    journalctl: Vec<u8>,
    /// `/logs` commands, built here so the systemctl job's arguments are untouched.
    logs_argv: Argv,
    /// The header line and `UNIT_BYTES_MAX` of unit, the arena's.
    text: &'static mut [u8],
    /// With `--privileged`: the helper that writes units and runs `systemctl` and `journalctl`
    /// for this unprivileged daemon; without, the daemon does them itself.
    privileged: Option<crate::privileged::client::Client>,
    /// A request to the helper, encoded (the arena's).
    frame: &'static mut [u8],
    argv: Argv,
    output: Output,
    job: Option<Job>,
    /// One line per outcome (`crate::audit`).
    audit: AuditLog,
    /// The Nix store's garbage collector, run beside the unit commands (`core::gc`).
    gc: super::gc::Collector,
    /// How the last collection ended, not yet taken for `/stream`.
    gc_done: Option<core::GcDone>,
    builder: Builder,
    /// The health checks in hand (`health.rs`).
    checks: super::health::Checks,
    /// The versions kept to go back to, on disk (`kept.rs`).
    kept: super::kept::KeptFiles,
    log: Logger,
}

impl Deref for Executor {
    type Target = core::Executor;
    fn deref(&self) -> &core::Executor {
        self.core
    }
}

impl DerefMut for Executor {
    fn deref_mut(&mut self) -> &mut core::Executor {
        self.core
    }
}

impl Executor {
    /// Reads the units an earlier run wrote (`myco-*.service` with our header), so a restart
    /// neither rewrites nor loses them. `has_peers_configured`: see `executor::reconcile::mode`.
    /// The core's executor is built in `arena`, and every buffer comes from it.
    pub fn new(
        unit_dir: PathBuf,
        (systemctl, journalctl): (&str, &str),
        audit: AuditLog,
        nix: NixSetup<'_>,
        has_peers_configured: bool,
        log: Logger,
        arena: ExecutorArena,
    ) -> io::Result<Executor> {
        fs::create_dir_all(&unit_dir)?;
        let ExecutorBuffers {
            unit: text,
            unit_file,
            request: frame,
            argv: [argv, logs_argv, build_argv, gc_argv, check_argv],
            output: [output, build_output, gc_output],
            kept,
        } = arena.buffers;
        let kept = super::kept::KeptFiles::open(nix.state_dir, kept)?;
        let build_buffers = (
            &mut unit_file[..],
            Argv::new(build_argv),
            Output::new(build_output),
        );
        let checks = super::health::Checks::new(&nix.build.systemd_run, log, Argv::new(check_argv));
        let builder = Builder::new(nix.build, (nix.state_dir, &unit_dir), log, build_buffers)?;
        let core = arena.core.write(core::Executor::new(has_peers_configured));
        for e in fs::read_dir(&unit_dir)? {
            let e = e?;
            let file = e.file_name();
            let Some(name) = file.to_str().and_then(unit::service_of) else {
                continue;
            };
            let Some(digest) = read_header(&e.path()) else {
                continue;
            };
            if !core.handle_installed(name, digest) {
                log.log(
                    Level::Warning,
                    format_args!("unit of {name} left alone: more units than one box runs"),
                );
            }
        }
        Ok(Executor {
            core,
            unit_dir,
            systemctl: systemctl.as_bytes().to_vec(),
            journalctl: journalctl.as_bytes().to_vec(),
            logs_argv: Argv::new(logs_argv),
            text,
            privileged: None,
            frame,
            argv: Argv::new(argv),
            output: Output::new(output),
            job: None,
            audit,
            gc: super::gc::Collector::new(
                nix.gc,
                log,
                (Argv::new(gc_argv), Output::new(gc_output)),
            ),
            gc_done: None,
            builder,
            checks,
            kept,
            log,
        })
    }

    /// At boot, once: the versions kept to go back to before the last stop, read back from the
    /// state directory (`kept.rs`); an entry must be signed by `operator`.
    pub fn restore_kept(&mut self, operator: &myco_core::crypto::PublicKey) {
        self.kept.restore(self.core, operator, &self.log);
    }

    /// From now on, asks `myco-priv` through `client` to write and remove units, to run
    /// `systemctl` and `journalctl`, and to collect garbage (`--privileged`), instead of doing
    /// it as this process.
    pub fn ask_privileged(&mut self, client: crate::privileged::client::Client) {
        self.gc.ask_privileged(client.clone());
        self.builder.ask_privileged();
        self.privileged = Some(client);
    }

    /// The pipe of the running `systemctl`, for the loop to watch.
    pub fn job_fd(&self) -> Option<std::os::fd::RawFd> {
        self.job.as_ref().map(|j| j.child.stdout_fd())
    }

    /// Starts `journalctl` on a unit this box runs, for `/logs`: the last `lines` lines (journalctl's
    /// default when `None`), and with `follow` everything after, until the client goes away.
    pub fn spawn_logs(
        &mut self,
        name: &str,
        follow: bool,
        lines: Option<u32>,
    ) -> io::Result<Child> {
        let unit = unit_name(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.message()))?;
        if let Some(client) = &self.privileged {
            let name = &unit;
            let request = Request::Journal {
                name,
                follow,
                lines,
            };
            return client.start(&request, self.frame, None);
        }
        journal_argv(&mut self.logs_argv, &self.journalctl, &unit, follow, lines);
        spawn::spawn(&self.logs_argv, &ENV)
    }

    /// Starts `tail` on the audit log, for `/audit`: the last `lines` lines (100 when `None`),
    /// and with `follow` every line appended after, across rotations, until the client goes
    /// away.
    pub fn spawn_audit(&mut self, follow: bool, lines: Option<u32>) -> io::Result<Child> {
        let argv = &mut self.logs_argv;
        argv.clear();
        let full = "the tail argument list is fixed and fits";
        let mut digits = heapless::String::<10>::new();
        write!(digits, "{}", lines.unwrap_or(100)).expect("a u32 fits 10 digits");
        argv.push(&[b"tail"]).expect(full);
        argv.push(&[b"--lines=", digits.as_bytes()]).expect(full);
        if follow {
            argv.push(&[b"--follow=name"]).expect(full);
            argv.push(&[b"--retry"]).expect(full);
        }
        let path = self.audit.path().as_os_str().as_encoded_bytes();
        argv.push(&[b"--"]).expect(full);
        argv.push(&[path])
            .map_err(|_| io::Error::other("the audit log path is too long"))?;
        spawn::spawn(argv, &ENV)
    }

    /// Lines the audit log took since start, for `/metrics`.
    pub fn audit_lines(&self) -> u64 {
        self.audit.lines
    }

    /// The garbage collector's state: `builds_refused()` (status `disk-full`) for the build
    /// logic, `handle_build_done()` after each build, and its counters.
    pub fn gc(&mut self) -> &mut core::Gc {
        &mut self.gc.core
    }

    /// The garbage collector's state, to read.
    pub fn gc_state(&self) -> &core::Gc {
        &self.gc.core
    }

    /// How the last collection ended, once, for `/stream`.
    pub fn take_gc_done(&mut self) -> Option<core::GcDone> {
        self.gc_done.take()
    }

    /// One step of work: reap the running `systemctl`, then run commands until one has to wait
    /// for a child or none is due, then keep on disk the versions the core now keeps. Cheap when
    /// there is nothing to do.
    pub fn step(&mut self, node: &Node, now_ms: u64) {
        self.step_commands(node, now_ms);
        self.kept.sync(self.core.kept(), &self.log, now_ms);
    }

    fn step_commands(&mut self, node: &Node, now_ms: u64) {
        self.step_build(node, now_ms);
        let now = Instant(now_ms);
        if let Some(done) = self.gc.step(now) {
            self.gc_done = Some(done);
        }
        self.reap(now);
        while self.job.is_none() {
            let Some(issued) = self.core.poll_command(now, node) else {
                return;
            };
            let token = issued.token;
            let ok = match issued.command {
                Command::WriteUnit {
                    name,
                    entry,
                    digest,
                    start,
                    clock,
                    program,
                    rollback,
                    in_place,
                } => write_unit(
                    &self.unit_dir,
                    self.text,
                    &self.log,
                    (name, program),
                    (entry, digest),
                    self.privileged.as_ref().map(|c| (c, &mut *self.frame)),
                )
                .inspect(|()| {
                    log_written(&self.log, name, (start, in_place), clock);
                    let mut entry = AuditEntry::of(entry, digest);
                    entry.store_path = program.and_then(|p| core::out_of_program(p, name));
                    let outcome = AuditOutcome::written(rollback, in_place);
                    audit(&mut self.audit, &self.log, name, outcome, &entry);
                })
                .is_ok(),
                Command::RemoveUnitFile { name } => {
                    self.builder.drop_roots(name);
                    let helper = self.privileged.as_ref().map(|c| (c, &mut *self.frame));
                    remove_unit(&self.unit_dir, &self.log, &mut self.audit, name, helper)
                }
                Command::Build { .. } | Command::HealthCheck { .. } => {
                    unreachable!("builds and checks have lanes of their own")
                }
                Command::Systemctl { verb, units } => {
                    let runtime = self.unit_dir.starts_with("/run");
                    let (argv, frame) = (&mut self.argv, &mut *self.frame);
                    let started = match &self.privileged {
                        Some(client) => ask_systemctl(client, frame, argv, verb, units),
                        None => spawn_systemctl(&self.systemctl, argv, (verb, runtime), units),
                    };
                    if self.take_job(started, token, verb) {
                        return;
                    }
                    false
                }
            };
            let outcome = if ok { Outcome::OK } else { Outcome::FAILED };
            self.core.handle_command_done(now, token, outcome);
        }
    }

    /// Makes the `systemctl` just started (ours, or the helper's) the running job; false
    /// (logged) if it could not be started.
    fn take_job(&mut self, started: io::Result<Child>, token: u64, verb: Verb) -> bool {
        match started {
            Ok(child) => {
                self.output.clear();
                self.job = Some(Job {
                    child,
                    token,
                    verb,
                    killed: false,
                });
                true
            }
            Err(e) => {
                let what = "cannot run systemctl (trying again shortly)";
                self.log.failed(Level::Error, what, &e);
                false
            }
        }
    }

    /// The health checks' lane: advance the checks in hand, report those that ended, start
    /// those due (`health.rs`). `io` forgets a finished check's socket before it closes.
    pub fn step_checks(&mut self, node: &Node, now_ms: u64, io: &mut crate::io::Backend) {
        let ask = self.privileged.as_ref().map(|c| (c, &mut *self.frame));
        self.checks.step(self.core, node, now_ms, io, ask);
    }

    /// The check slots' sockets the loop watches this turn; `watched` once they are named.
    pub fn checks(&mut self) -> &mut super::health::Checks {
        &mut self.checks
    }

    /// Audits a step of a rollout on this box (`rollout::is_step`), with the entry placed here.
    pub fn audit_rollout(&mut self, node: &Node, name: &str, step: &'static str) {
        let Some(bytes) = node.store().get_by_name(name) else {
            return;
        };
        let entry = AuditEntry::of(&bytes, core::unit_digest(&bytes));
        audit(
            &mut self.audit,
            &self.log,
            name,
            AuditOutcome::Rollout(step),
            &entry,
        );
    }

    /// Reports the running `systemctl`'s outcome once it has exited.
    fn reap(&mut self, now: Instant) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let Some(exit) = job.child.poll(&mut self.output) else {
            self.cancel_if_hung(now);
            return;
        };
        let (token, verb) = (job.token, job.verb);
        self.job = None;
        let ok = exit.success();
        if !ok {
            self.log_failure(verb);
        }
        let stdout = self.output.bytes();
        self.core
            .handle_command_done(now, token, Outcome { ok, stdout });
    }

    /// Kills the running `systemctl` (and what it started) once the core says it hung; the
    /// next polls reap it, and its failure is reported as usual.
    fn cancel_if_hung(&mut self, now: Instant) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        if job.killed || self.core.poll_cancel(now) != Some(job.token) {
            return;
        }
        job.child.kill_group();
        job.killed = true;
        self.log.log(
            Level::Warning,
            format_args!(
                "{} did not finish within {} seconds; killed it",
                job.verb.name(),
                myco_core::config::SYSTEMCTL_TIMEOUT_MS / 1000
            ),
        );
    }

    /// The build lane: reap the running build and report it, then start the next one due.
    fn step_build(&mut self, node: &Node, now_ms: u64) {
        let now = Instant(now_ms);
        if let Some(ended) = self.builder.poll(now_ms) {
            let outcome = Outcome {
                ok: ended.ok,
                stdout: ended.stdout,
            };
            self.core.stats.builds_from_peers += u64::from(ended.from_peers);
            self.core.handle_command_done(now, ended.token, outcome);
            let name = ended.name;
            self.audit_build(node, &name);
        }
        if self.builder.busy() {
            return;
        }
        let Some(issued) = self.core.poll_build(now, node) else {
            return;
        };
        let Command::Build {
            name,
            uri,
            attr,
            system,
            root,
            substitutes,
            local,
        } = issued.command
        else {
            unreachable!("poll_build issues builds only");
        };
        let token = issued.token;
        // The helper builds from the signed entry itself, not from names the daemon passes.
        let entry = node.store().get_by_name(name);
        let ask = match (&self.privileged, &entry) {
            (Some(client), Some(entry)) => Some((client, &mut *self.frame, &entry[..])),
            _ => None,
        };
        let started = (self.builder).start(
            (token, now_ms),
            (name, system),
            (uri, attr),
            (&root, local),
            &substitutes,
            ask,
        );
        if let Err(e) = started {
            self.log.log(
                Level::Error,
                format_args!(
                    "service {name}: cannot start nix build: {}",
                    crate::flight::IoError(&e)
                ),
            );
            self.core.handle_command_done(now, token, Outcome::FAILED);
        }
    }

    /// Appends `built` (with the store path) or `build-failed` for the build of `name` that just
    /// ended, unless the outcome applied to nothing (a new version or a removal meanwhile).
    fn audit_build(&mut self, node: &Node, name: &str) {
        let Some(done) = self.core.build_outcome(node, name) else {
            return;
        };
        let mut entry = AuditEntry::of(&done.entry, done.digest);
        entry.store_path = done.store_path;
        let outcome = match done.store_path {
            Some(_) => AuditOutcome::Built,
            None => AuditOutcome::BuildFailed,
        };
        audit(&mut self.audit, &self.log, name, outcome, &entry);
    }

    /// Starts `tail` on a build log for `/logs`: the last `lines` lines (200 when `None`), and
    /// with `follow` what the build writes after, until the client goes away.
    pub fn spawn_build_log(
        &mut self,
        log: &Path,
        follow: bool,
        lines: Option<u32>,
    ) -> io::Result<Child> {
        let argv = &mut self.logs_argv;
        argv.clear();
        let full = "the tail argument list is fixed and fits";
        let mut digits = heapless::String::<10>::new();
        write!(digits, "{}", lines.unwrap_or(200)).expect("a u32 fits 10 digits");
        argv.push(&[b"tail"]).expect(full);
        argv.push(&[b"-n", digits.as_bytes()]).expect(full);
        if follow {
            argv.push(&[b"-f"]).expect(full);
        }
        argv.push(&[b"--"]).expect(full);
        argv.push(&[log.as_os_str().as_encoded_bytes()])
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        spawn::spawn(argv, &ENV)
    }

    /// Where the log of service `name`'s last build is, if it has one.
    pub fn build_log(&self, name: &str) -> Option<StackPath> {
        let path = self.builder.log_path(name).ok()?;
        path.as_path().exists().then_some(path)
    }

    fn log_failure(&self, verb: Verb) {
        let out = Lossy(self.output.bytes().trim_ascii());
        self.log.log(
            Level::Warning,
            format_args!(
                "{} failed; trying again in {} seconds. It said: {out}",
                verb.name(),
                myco_core::config::COMMAND_RETRY_MS / 1000
            ),
        );
    }
}

/// `systemctl <verb args> <units>`, spawned.
fn spawn_systemctl<S: Deref<Target = str>>(
    systemctl: &[u8],
    argv: &mut Argv,
    verb: (Verb, bool),
    units: impl IntoIterator<Item = S>,
) -> io::Result<Child> {
    systemctl_argv(argv, systemctl, verb, units);
    spawn::spawn(argv, &ENV)
}

/// Asks `myco-priv` for `systemctl <verb> <units>`. The unit names are laid out in `argv` as
/// for a `systemctl` of our own (no allocation) and borrowed from there into the request; the
/// helper builds its own command line from the request after checking it.
fn ask_systemctl<S: Deref<Target = str>>(
    client: &crate::privileged::client::Client,
    frame: &mut [u8],
    argv: &mut Argv,
    verb: Verb,
    units: impl IntoIterator<Item = S>,
) -> io::Result<Child> {
    let unit_verb = match verb {
        Verb::Reload => return client.start(&Request::DaemonReload, frame, None),
        Verb::Disable => UnitVerb::Disable,
        Verb::Enable => UnitVerb::Enable,
        Verb::EnableNoReload => UnitVerb::EnableNoReload,
        Verb::Restart => UnitVerb::Restart,
        Verb::Show | Verb::ShowLoad => UnitVerb::Show,
    };
    systemctl_argv(argv, b"systemctl", (verb, false), units);
    let mut names = heapless::Vec::new();
    for unit in argv.iter().skip(1 + verb.args().len()) {
        let unit = std::str::from_utf8(unit).map_err(|_| io::ErrorKind::InvalidData)?;
        names.push(unit).map_err(|_| io::ErrorKind::InvalidInput)?;
    }
    let request = Request::Unit {
        verb: unit_verb,
        names,
    };
    client.start(&request, frame, None)
}

/// `systemctl VERB UNITS...` into `argv`. With `runtime` (units written under `/run`, as on
/// NixOS, whose `/etc/systemd/system` is read-only), `enable` and `disable` take `--runtime`:
/// their symlinks go under `/run/systemd/system` too, and a reboot starts from a clean slate,
/// which the daemon rebuilds from its WAL.
fn systemctl_argv<S: Deref<Target = str>>(
    argv: &mut Argv,
    systemctl: &[u8],
    (verb, runtime): (Verb, bool),
    units: impl IntoIterator<Item = S>,
) {
    let runtime = runtime && matches!(verb, Verb::Enable | Verb::EnableNoReload | Verb::Disable);
    systemctl_command(argv, systemctl, (verb.args(), runtime), units);
}

/// `systemctl ARGS [--runtime] UNITS...` into `argv`; `myco-priv` builds its commands with it.
pub fn systemctl_command<S: Deref<Target = str>>(
    argv: &mut Argv,
    systemctl: &[u8],
    (args, runtime): (&[&str], bool),
    units: impl IntoIterator<Item = S>,
) {
    argv.clear();
    let full = "a systemctl command line of UNITS_PER_COMMAND units fits";
    argv.push(&[systemctl]).expect(full);
    for arg in args {
        argv.push(&[arg.as_bytes()]).expect(full);
    }
    if runtime {
        argv.push(&[b"--runtime"]).expect(full);
    }
    for unit in units {
        argv.push(&[unit.as_bytes()]).expect(full);
    }
}

/// `journalctl --unit=UNIT`: the last `lines` lines (journalctl's default when `None`), and with
/// `follow` everything after. For `/logs`, and for `myco-priv`.
pub fn journal_argv(
    argv: &mut Argv,
    journalctl: &[u8],
    unit: &str,
    follow: bool,
    lines: Option<u32>,
) {
    argv.clear();
    let full = "the journalctl argument list is fixed and fits";
    argv.push(&[journalctl]).expect(full);
    argv.push(&[b"--unit=", unit.as_bytes()]).expect(full);
    argv.push(&[b"--no-pager"]).expect(full);
    argv.push(&[b"--output=short-iso"]).expect(full);
    if let Some(n) = lines {
        let mut digits = heapless::String::<10>::new();
        write!(digits, "{n}").expect("a u32 fits 10 digits");
        argv.push(&[b"--lines=", digits.as_bytes()]).expect(full);
    }
    if follow {
        argv.push(&[b"--follow"]).expect(full);
    }
}

/// The helper and the buffer its request is encoded in, under `--privileged`.
type Helper<'a> = Option<(&'a crate::privileged::client::Client, &'a mut [u8])>;

/// Renders and writes one unit, or has `helper` write it (which checks it against `entry`
/// first); an error is logged here and means nothing changed.
fn write_unit(
    dir: &Path,
    text: &mut [u8],
    log: &Logger,
    (name, program): (&str, Option<&str>),
    (entry, digest): (&[u8], u64),
    helper: Helper<'_>,
) -> Result<(), ()> {
    let len = core::render_unit(entry, program, &mut text[HEADER_BYTES..]).map_err(|e| {
        let why = e.message();
        log.log(
            Level::Warning,
            format_args!("service {name} cannot run here: {why}"),
        );
    })?;
    let mut header = heapless::String::<HEADER_BYTES>::new();
    writeln!(header, "{HEADER}{digest:016x}").expect("a u64 fits 16 hex digits");
    text[..HEADER_BYTES].copy_from_slice(header.as_bytes());
    let text = &text[..HEADER_BYTES + len];
    let unit = unit_name(name).expect("placed services have service names");
    let written = match helper {
        Some((client, frame)) => {
            let request = Request::WriteUnit {
                name: &unit,
                entry,
                program,
                text,
            };
            client.file(&request, frame)
        }
        None => StackPath::join(dir, &[unit.as_bytes()])
            .and_then(|path| crate::atomic::replace_file(path.as_path(), |f| f.write_all(text))),
    };
    written.map_err(|e| {
        log.log(
            Level::Error,
            format_args!(
                "cannot write the unit of {name}: {}",
                crate::flight::IoError(&e)
            ),
        );
    })
}

/// Appends an audit line with the wall-clock time; a failure is logged (the outcome stands:
/// the audit log records what happened, it does not decide it).
fn audit(
    audit: &mut AuditLog,
    log: &Logger,
    name: &str,
    outcome: AuditOutcome,
    entry: &AuditEntry<'_>,
) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Err(e) = audit.append(unix_ms, name, outcome, entry) {
        log.log(
            Level::Error,
            format_args!(
                "cannot append to the audit log {}: {}",
                audit.path().display(),
                crate::flight::IoError(&e)
            ),
        );
    }
}

fn log_written(log: &Logger, name: &str, (start, in_place): (bool, bool), clock: u64) {
    let what = match (start, in_place) {
        (true, _) => "starting",
        (false, true) => "not restarted (nothing it runs changed) for",
        (false, false) => "restarting for",
    };
    log.log(
        Level::Info,
        format_args!("service {name}: unit written, {what} version {clock}"),
    );
}

/// Deletes a disabled unit's file and audits the removal; false (logged) if it could not be.
fn remove_unit(
    dir: &Path,
    log: &Logger,
    audit_log: &mut AuditLog,
    name: &str,
    helper: Helper<'_>,
) -> bool {
    let unit = unit_name(name).expect("installed units have service names");
    let removed = match helper {
        Some((client, frame)) => client.file(&Request::RemoveUnit { name: &unit }, frame),
        None => StackPath::join(dir, &[unit.as_bytes()]).and_then(fs::remove_file),
    };
    if let Err(e) = removed {
        log.log(
            Level::Error,
            format_args!(
                "cannot delete {}/{unit}: {}",
                dir.display(),
                crate::flight::IoError(&e)
            ),
        );
        return false;
    }
    log.log(
        Level::Info,
        format_args!("service {name}: no longer placed here, stopped and removed"),
    );
    let entry = AuditEntry::default();
    audit(audit_log, log, name, AuditOutcome::Removed, &entry);
    true
}

fn read_header(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let first = text.lines().next()?.strip_prefix(HEADER)?;
    u64::from_str_radix(first, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `enable` and `disable` take `--runtime` when the units live under `/run`; nothing else
    /// changes, and units under `/etc` get the plain command.
    #[test]
    fn units_under_run_are_enabled_for_this_boot_only() {
        let mut argv = Argv::leaked();
        for (verb, runtime, expected) in [
            (
                Verb::Enable,
                true,
                "systemctl enable --now --runtime myco-a.service",
            ),
            (
                Verb::Disable,
                true,
                "systemctl disable --now --runtime myco-a.service",
            ),
            (
                Verb::EnableNoReload,
                true,
                "systemctl enable --no-reload --now --runtime myco-a.service",
            ),
            (Verb::Restart, true, "systemctl restart myco-a.service"),
            (Verb::Enable, false, "systemctl enable --now myco-a.service"),
        ] {
            systemctl_argv(&mut argv, b"systemctl", (verb, runtime), ["myco-a.service"]);
            assert_eq!(argv.args().join(" "), expected);
        }
    }
}
