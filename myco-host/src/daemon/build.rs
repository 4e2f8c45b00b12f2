//! The builder: runs the `Command::Build` the core decides on, one at a time, beside the systemd
//! commands. `nice -n 19 ionice -c 3 nix build --json -L --out-link
//! <gcroots>/<name>-<rev12>-<system> --option system <system> '<uri>#<attr>'` (the system the
//! output is for: this box's, or a peer's it builds for) runs without a shell in the transient
//! unit `myco-build-<name>.service` (`super::transient` says why not as the daemon's own
//! child); its stdout (the `--json` answer) is read through the fixed output buffer and parsed
//! by the core; its stderr (the build log) goes to
//! `<state>/builds/<name>.log`, truncated per build, whose tail `/logs` serves for a service
//! that failed to build and the daemon's log repeats on failure. A build that outlives
//! `--build-timeout` is killed and reported failed. After a build succeeds, the GC roots of that
//! service other than the new one and the one its unit runs now are deleted: the version about
//! to run and the one it replaces stay rooted, for a rollback.

use super::transient::{self, Unit};
use crate::flight::{Level, Logger};
use crate::path::{read_link_at, Lossy, StackPath, PATH_BYTES_MAX};
use crate::privileged::client::Client;
use crate::spawn::{self, Argv, ArgvFull, Child, Output};
use myco_core::executor::remote::{parse_systems, BuildFlags, Isolation};
use myco_core::executor::BuildMode;
use myco_core::executor::{
    is_root_of, out_of_program, parse_build_json, LogScan, Name, Provenance, RootName, Substitute,
};
use myco_core::privileged::{Checked, Request};
use myco_core::schema::entry::Arch;
use myco_core::unit::{unit_name, UNIT_BYTES_MAX};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The GC root directory, below the state directory, when `--gcroot-dir` names none: it must be
/// writable by the daemon, which deletes the roots of versions it no longer needs (Nix links each
/// one from `/nix/var/nix/gcroots/auto`, so the collector sees them).
pub const GCROOT_DIR_IN_STATE: &str = "gcroots";
/// A build is killed after this long when `--build-timeout` says nothing: 30 minutes.
pub const BUILD_TIMEOUT_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// The tail of a failed build's log repeated in the daemon's log.
const LOG_TAIL_BYTES: usize = 2048;
/// A unit file as the executor writes it: its `# myco: <digest>` line, then the rendered unit.
pub const UNIT_FILE_BYTES_MAX: usize = 64 + UNIT_BYTES_MAX;
/// A build the unit's `RuntimeMaxSec=` should have stopped is killed here this much later, in
/// case systemd did not (the daemon then reports the build failed either way).
const KILL_GRACE_MS: u64 = 10_000;

/// How builds run on this box.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    pub nix: String,
    /// `systemd-run` (`--systemd-run`), which runs each build in a unit of its own.
    pub systemd_run: String,
    /// `None`: `<state-dir>/gcroots`.
    pub gcroot_dir: Option<PathBuf>,
    pub timeout_ms: u64,
    /// `--build local` (the default): Nix may build here; `remote`: never.
    pub local: bool,
    /// `--builder`: build for peers that ask.
    pub builder: bool,
    /// `--allow-root-builds`: build even where Nix runs builders as root outside a sandbox.
    pub allow_root_builds: bool,
}

impl BuildConfig {
    /// The flags the core's `BuildMode::decide` reads.
    pub fn flags(&self) -> BuildFlags {
        BuildFlags {
            local: self.local,
            builder: self.builder,
            allow_root_builds: self.allow_root_builds,
        }
    }
}

/// How this box builds (`BuildMode::decide`, in the core): `--build`, `--builder`,
/// `--allow-root-builds`, and what `nix show-config` says, read once at start: the systems Nix
/// builds for and whether it keeps builders from the box (a sandbox, or build users).
pub fn build_mode(config: &BuildConfig, own: Arch, log: &Logger) -> BuildMode {
    let shown = nix_show_config(&config.nix).unwrap_or_default();
    if parse_systems(&shown) == 0 {
        log.log(
            Level::Warning,
            format_args!("'{} show-config' names no system this fleet runs (x86_64-linux, aarch64-linux): builds here as --build says; no builds for peers", config.nix),
        );
    }
    let mode = BuildMode::decide(config.flags(), own, &shown);
    if !config.flags().may_build(Isolation::parse(&shown)) {
        log.log(
            Level::Warning,
            format_args!("'{} show-config' names neither 'sandbox = true' nor a 'build-users-group': Nix would run builders as root with the whole box in view, so this box builds nothing (it fetches from peers and asks builders); configure Nix with build users, or pass --allow-root-builds (docs/nix.md, \"Builders as root\")", config.nix),
        );
    }
    log.log(
        Level::Info,
        format_args!(
            "builds: {} here, for {}; for peers: {}",
            if mode.local { "local" } else { "none (remote)" },
            mode.system.nix_system().unwrap_or("Nix's own system"),
            match mode.builds {
                0 => "no",
                1 => "x86_64-linux",
                2 => "aarch64-linux",
                _ => "x86_64-linux, aarch64-linux",
            }
        ),
    );
    mode
}

/// What `nix show-config` prints (read by [`parse_systems`] and [`Isolation::parse`]); `None` if
/// it cannot run or does not answer within `SHOW_CONFIG_WAIT`. The daemon asks once, at start,
/// before it is ready: a Nix that hangs (a stuck store lock, a broken daemon socket) must delay
/// the start by seconds, not forever (`myco-priv` asks in a transient unit, before each build
/// that may run builders). `NIX_CONFIG` is left out, as the transient unit a build runs in leaves
/// it out (`transient::PASSED_ENV`): the answer is about the configuration the build will see.
fn nix_show_config(nix: &str) -> Option<Vec<u8>> {
    let child = std::process::Command::new(nix)
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-config",
        ])
        .env_remove("NIX_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    child.ok().and_then(output_within)
}

/// How long start-up waits for `nix show-config`.
const SHOW_CONFIG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The child's whole stdout if it exits successfully within `SHOW_CONFIG_WAIT`; otherwise it is
/// killed and reaped. Its stdout is read as it comes (non-blocking), so a long output cannot
/// stall it on a full pipe.
pub(crate) fn output_within(mut child: std::process::Child) -> Option<Vec<u8>> {
    let mut stdout = child.stdout.take()?;
    let fd = std::os::fd::AsFd::as_fd(&stdout);
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok()?,
    );
    let nonblocking = nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(fd, nonblocking).ok()?;
    let deadline = std::time::Instant::now() + SHOW_CONFIG_WAIT;
    let mut out = Vec::new();
    loop {
        let drained = drain(&mut stdout, &mut out);
        match child.try_wait() {
            Ok(Some(status)) if drained => {
                let _ = drain(&mut stdout, &mut out);
                return status.success().then_some(out);
            }
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Reads what `pipe` holds into `out`; true once the pipe reached its end.
fn drain(pipe: &mut std::process::ChildStdout, out: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// How a build is run: the programs and the time it may take.
pub struct Command<'a> {
    pub systemd_run: &'a str,
    pub nix: &'a str,
    /// `RuntimeMaxSec=` of its transient unit.
    pub timeout_s: u64,
    /// Nix may build here. False (a box started `--build remote`, or whose system no local Nix
    /// builds) adds `--max-jobs 0`: Nix may then only substitute, so the box never builds.
    pub local: bool,
    /// The system the output is for: `--option system <system>`, so that Nix resolves the
    /// flake's attribute (`packages.<system>.<attr>`) and builds for it; `Any`: Nix's own.
    pub system: Arch,
}

impl Command<'_> {
    /// `systemd-run ... --unit=myco-build-<name> -- nice ... nix build --json -L --out-link
    /// <link> [--max-jobs 0] [--option system <system>] [the peers as substituters]
    /// <uri>#<attr>` into `argv`. The daemon's builder and `myco-priv` both build with it.
    pub fn argv(
        &self,
        argv: &mut Argv,
        env: &[CString],
        (name, link): (&str, &[u8]),
        (uri, attr): (&str, &str),
        peers: &[Substitute],
    ) -> Result<(), ArgvFull> {
        argv.clear();
        let unit = Unit {
            systemd_run: self.systemd_run,
            name: &[b"myco-build-", name.as_bytes()],
            runtime_max_s: Some(self.timeout_s),
        };
        transient::push_prefix(argv, &unit, env)?;
        argv.push(&[self.nix.as_bytes()])?;
        for arg in [&b"build"[..], b"--json", b"-L", b"--out-link", link] {
            argv.push(&[arg])?;
        }
        if !self.local {
            argv.push(&[b"--max-jobs"])?;
            argv.push(&[b"0"])?;
        }
        if let Some(system) = self.system.nix_system() {
            argv.push(&[b"--option"])?;
            argv.push(&[b"system"])?;
            argv.push(&[system.as_bytes()])?;
        }
        push_substituters(argv, peers)?;
        argv.push(&[uri.as_bytes(), b"#", attr.as_bytes()])
    }
}

/// Asks `myco-priv` to build the signed `entry`, its log into `log` (opened here, as the daemon,
/// and passed as the command's stderr). The helper derives the version's GC root from the entry
/// itself; a root other than the core's (the store moved on to another version meanwhile) is
/// not started, and the core retries with the version it wants then.
fn ask_build(
    (client, frame, entry): (&Client, &mut [u8], &[u8]),
    log: &StackPath,
    (root, local, peers): (&str, bool, &[Substitute]),
    (timeout_s, system): (u64, Arch),
) -> io::Result<Child> {
    let request = Request::Build {
        entry,
        timeout_s: u32::try_from(timeout_s).unwrap_or(u32::MAX),
        local,
        system,
        substitutes: heapless::Vec::from_slice(peers).map_err(|_| io::ErrorKind::InvalidInput)?,
    };
    // Bare kinds, not messages: nothing allocates after start. The caller logs the kind.
    match client.check(request.clone()) {
        Ok(Checked::Build(b)) if b.root.as_str() == root => {}
        _ => return Err(io::ErrorKind::InvalidData.into()),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC;
    let file = nix::fcntl::open(log.as_c_str(), flags, Mode::from_bits_truncate(0o600))?;
    client.start(&request, frame, Some(file.as_fd()))
}

/// The running build.
struct Job {
    child: Child,
    token: u64,
    name: Name,
    root: RootName,
    deadline_ms: u64,
    killed: bool,
    /// Peers were offered to Nix as substituters.
    asked_peers: bool,
}

/// A build that ended: its token and service, whether `nix` succeeded, and what it printed on
/// stdout.
pub struct Ended<'a> {
    pub token: u64,
    pub name: Name,
    pub ok: bool,
    pub stdout: &'a [u8],
    /// It succeeded with peers offered, and its log shows paths copied from a peer's cache and
    /// no derivation built (`LogScan`).
    pub from_peers: bool,
}

pub struct Builder {
    config: BuildConfig,
    gcroot_dir: PathBuf,
    /// The GC root directory, open, so that pruning lists it without allocating.
    gcroot_handle: fs::File,
    /// Where the units are: the running version's root is the one its unit's program is in.
    unit_dir: PathBuf,
    /// A unit file read back to find that program (`running_out`).
    /// `UNIT_FILE_BYTES_MAX`, the arena's.
    unit_text: &'static mut [u8],
    log_dir: PathBuf,
    env: Vec<CString>,
    argv: Argv,
    output: Output,
    job: Option<Job>,
    /// `--privileged`: every build is asked of `myco-priv`; one without a helper to ask (no
    /// entry for it in the store) is refused rather than run as this process.
    privileged: bool,
    log: Logger,
}

/// What a build asked of `myco-priv` needs: the client, the request's frame buffer, and the
/// signed entry the helper builds from.
pub type Ask<'a> = Option<(&'a Client, &'a mut [u8], &'a [u8])>;

impl Builder {
    /// `buffers`: a unit file's text, the argument list and the output, from the arena.
    pub fn new(
        config: BuildConfig,
        (state_dir, unit_dir): (&Path, &Path),
        log: Logger,
        (unit_text, argv, output): (&'static mut [u8], Argv, Output),
    ) -> io::Result<Builder> {
        assert!(unit_text.len() >= UNIT_FILE_BYTES_MAX);
        let log_dir = state_dir.join("builds");
        fs::create_dir_all(&log_dir)?;
        let gcroot_dir =
            (config.gcroot_dir.clone()).unwrap_or_else(|| state_dir.join(GCROOT_DIR_IN_STATE));
        fs::create_dir_all(&gcroot_dir)?;
        let gcroot_handle = fs::File::open(&gcroot_dir)?;
        Ok(Builder {
            config,
            gcroot_dir,
            gcroot_handle,
            unit_dir: unit_dir.to_owned(),
            unit_text,
            log_dir,
            env: transient::environment(),
            argv,
            output,
            job: None,
            privileged: false,
            log,
        })
    }

    /// From now on, builds are asked of `myco-priv` (`--privileged`).
    pub fn ask_privileged(&mut self) {
        self.privileged = true;
    }

    /// Whether a build runs.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Where the log of service `name`'s last build is.
    pub fn log_path(&self, name: &str) -> io::Result<StackPath> {
        StackPath::join(&self.log_dir, &[name.as_bytes(), b".log"])
    }

    /// Spawns the build of `<uri>#<attr>` for service `name` and `system`, rooted at `root`,
    /// substituting from the caches of `peers` first. An error means nothing runs (the caller
    /// reports the build failed).
    pub fn start(
        &mut self,
        (token, now_ms): (u64, u64),
        (name, system): (&str, Arch),
        (uri, attr): (&str, &str),
        (root, local): (&str, bool),
        peers: &[Substitute],
        ask: Ask<'_>,
    ) -> io::Result<()> {
        assert!(self.job.is_none(), "one build at a time");
        let log = self.log_path(name)?;
        let job_name = Name::try_from(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        let job_root = RootName::try_from(root).map_err(|_| io::ErrorKind::InvalidInput)?;
        let timeout_s = self.config.timeout_ms.div_ceil(1000);
        let child = match ask {
            Some(ask) => ask_build(ask, &log, (root, local, peers), (timeout_s, system))?,
            None if self.privileged => return Err(io::ErrorKind::NotFound.into()),
            None => self.spawn((name, root, local), (uri, attr, system), peers, &log)?,
        };
        self.output.clear();
        let for_system = system.nix_system().unwrap_or("Nix's own system");
        self.log.log(
            Level::Info,
            format_args!("service {name}: building {uri}#{attr} for {for_system}"),
        );
        self.job = Some(Job {
            child,
            token,
            name: job_name,
            root: job_root,
            deadline_ms: now_ms.saturating_add(self.config.timeout_ms + KILL_GRACE_MS),
            killed: false,
            asked_peers: !peers.is_empty(),
        });
        Ok(())
    }

    /// `nix build` as this process's own child, its stderr into the log file.
    fn spawn(
        &mut self,
        (name, root, local): (&str, &str, bool),
        (uri, attr, system): (&str, &str, Arch),
        peers: &[Substitute],
        log: &StackPath,
    ) -> io::Result<Child> {
        let argv = &mut self.argv;
        let link = StackPath::join(&self.gcroot_dir, &[root.as_bytes()])?;
        let command = Command {
            systemd_run: &self.config.systemd_run,
            nix: &self.config.nix,
            timeout_s: self.config.timeout_ms.div_ceil(1000),
            local,
            system,
        };
        command
            .argv(argv, &self.env, (name, link.as_bytes()), (uri, attr), peers)
            .expect("a build's command line is a few hundred bytes");
        let env = transient::env_refs(&self.env);
        spawn::spawn_with_stderr(argv, &env, Some(log.as_c_str()))
    }

    /// Reads the running build's output; once it ended, logs how, prunes the older GC roots of a
    /// success, and returns the outcome for the core. `None` while it runs.
    pub fn poll(&mut self, now_ms: u64) -> Option<Ended<'_>> {
        let job = self.job.as_mut()?;
        if now_ms >= job.deadline_ms && !job.killed {
            job.child.kill();
            job.killed = true;
            let secs = self.config.timeout_ms / 1000;
            let name = &job.name;
            self.log.log(
                Level::Warning,
                format_args!("service {name}: build killed after {secs} seconds (--build-timeout)"),
            );
        }
        let exit = job.child.poll(&mut self.output)?;
        let job = self.job.take().expect("polled above");
        let out = parse_build_json(self.output.bytes()).filter(|_| exit.success() && !job.killed);
        let from_peers = out.is_some() && job.asked_peers && self.fetched(&job.name);
        match out {
            Some(out) => {
                self.log.log(
                    Level::Info,
                    format_args!("service {}: built {out}", job.name),
                );
                let running = running_out(&self.unit_dir, &job.name, self.unit_text);
                let keep = Keep {
                    root: &job.root,
                    running,
                };
                prune_roots(&self.gcroot_handle, &job.name, keep, &self.log);
            }
            None => self.log_failure(&job.name, exit.0),
        }
        Some(Ended {
            token: job.token,
            name: job.name,
            ok: out.is_some(),
            stdout: self.output.bytes(),
            from_peers,
        })
    }

    /// Whether the log of `name`'s build says its output came from peers: read in pieces through
    /// a stack buffer, however long it is.
    fn fetched(&self, name: &str) -> bool {
        let Ok(mut file) = self
            .log_path(name)
            .and_then(|p| fs::File::open(p.as_path()))
        else {
            return false;
        };
        let mut scan = LogScan::default();
        let mut buf = [0u8; 4096];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => scan.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        scan.provenance() == Provenance::FromPeers
    }

    fn log_failure(&self, name: &str, code: i32) {
        let mut tail = [0u8; LOG_TAIL_BYTES];
        let tail = match self.log_path(name) {
            Ok(path) => read_tail(path.as_path(), &mut tail).unwrap_or_default(),
            Err(_) => &[],
        };
        self.log.log(
            Level::Warning,
            format_args!(
                "service {name}: build failed (exit {code}); it is tried again later; 'myco logs {name}' on this box shows its log. It said: {}",
                Lossy(tail.trim_ascii())
            ),
        );
    }

    /// Deletes every GC root of service `name` (no longer placed here).
    pub fn drop_roots(&self, name: &str) {
        let keep = Keep {
            root: "",
            running: None,
        };
        prune_roots(&self.gcroot_handle, name, keep, &self.log);
    }
}

/// Nix's options to substitute from `peers` first (nothing without peers): their caches as extra
/// substituters, their certified node keys as extra trusted keys (`<node id>:<base64>`, the name
/// and key their narinfos are signed with), a short connect timeout (a peer that stopped
/// answering should cost seconds, not the system's minutes), and `fallback`, so that when every
/// peer fails Nix builds here.
fn push_substituters(argv: &mut Argv, peers: &[Substitute]) -> Result<(), ArgvFull> {
    if peers.is_empty() {
        return Ok(());
    }
    let mut urls = [0u8; 256];
    let mut keys = [0u8; 256];
    let (mut urls_len, mut keys_len) = (0, 0);
    for (i, p) in peers.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let addr = super::net::display_addr(p.cache);
        urls_len += write_at(&mut urls[urls_len..], format_args!("{sep}http://{addr}"));
        let mut b64 = [0u8; 44];
        let key = myco_core::cache::base64(&p.key, &mut b64);
        let id = myco_core::hex::HexU64::new(p.id);
        keys_len += write_at(
            &mut keys[keys_len..],
            format_args!("{sep}{}:{key}", id.as_str()),
        );
    }
    argv.push(&[b"--option"])?;
    argv.push(&[b"extra-substituters"])?;
    argv.push(&[&urls[..urls_len]])?;
    argv.push(&[b"--option"])?;
    argv.push(&[b"extra-trusted-public-keys"])?;
    argv.push(&[&keys[..keys_len]])?;
    for arg in [
        &b"--option"[..],
        b"connect-timeout",
        b"5",
        b"--option",
        b"fallback",
        b"true",
    ] {
        argv.push(&[arg])?;
    }
    Ok(())
}

/// Writes `args` at the start of `out`, returning how many bytes it took. Three URLs of at most
/// 54 bytes and three keys of 61 fit the 256-byte buffers above.
fn write_at(out: &mut [u8], args: std::fmt::Arguments<'_>) -> usize {
    let mut cursor = io::Cursor::new(out);
    io::Write::write_fmt(&mut cursor, args).expect("sized for three peers");
    cursor.position() as usize
}

/// The last bytes of the file at `path`, as many as `buf` holds (fewer if the file is shorter).
pub fn read_tail<'b>(path: &Path, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(buf.len() as u64)))?;
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..filled])
}

/// The GC roots of a service to keep: the new version's, and the one the service's unit runs now
/// (the version being replaced, kept for a rollback).
struct Keep<'a> {
    root: &'a str,
    /// The store path the service's unit runs (`running_out`), if it runs one.
    running: Option<&'a str>,
}

/// Deletes the GC roots of `name` but those `keep` names; failures are logged and left for the
/// next build. A root is a symlink to a store path, so "the one the unit runs" is the root that
/// points where the unit's `ExecStart=` does, whatever its name or age. The directory is listed
/// and its links read through its open handle (`crate::path`), so pruning allocates nothing.
fn prune_roots(dir: &fs::File, name: &str, keep: Keep<'_>, log: &Logger) {
    let listed = crate::path::for_each_name(dir, |file| {
        let Some(text) = file.to_str().ok().filter(|f| is_root_of(f, name)) else {
            return;
        };
        let mut target = [0u8; PATH_BYTES_MAX];
        let target = read_link_at(dir, file, &mut target);
        if text == keep.root
            || (keep.running.is_some() && target == keep.running.map(str::as_bytes))
        {
            return;
        }
        if let Err(e) = unlinkat(dir, file, UnlinkatFlags::NoRemoveDir) {
            log.log(
                Level::Warning,
                format_args!("cannot delete the GC root {text}: {e}"),
            );
        }
    });
    if let Err(e) = listed {
        log.log(
            Level::Warning,
            format_args!(
                "cannot list the GC roots of {name}: {}",
                crate::flight::IoError(&e)
            ),
        );
    }
}

/// The store path service `name`'s unit in `unit_dir` runs: its `ExecStart=` program,
/// `<out>/bin/<name>`, without `/bin/<name>`, read through `buf`. `None` without a unit, for an
/// `exec` service, or for a file longer than `buf` (the executor writes none).
fn running_out<'b>(unit_dir: &Path, name: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let unit = unit_name(name).ok()?;
    let path = StackPath::join(unit_dir, &[unit.as_bytes()]).ok()?;
    let len = fs::symlink_metadata(path.as_path()).ok()?.len();
    if len > buf.len() as u64 {
        return None;
    }
    let text = std::str::from_utf8(read_tail(path.as_path(), buf).ok()?).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("ExecStart=\""))?;
    let program = &line[..line.find('"')?];
    out_of_program(program, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::PeerAddr;

    /// Peers' caches at IPv6 addresses are URLs with the address in brackets, and three of the
    /// longest (every group four digits) fit the fixed buffers, whose `expect` would otherwise
    /// take the daemon down on an IPv6-only fleet.
    #[test]
    fn substituters_at_ipv6_addresses_are_bracketed_and_fit() {
        let longest = PeerAddr {
            ip: [0xfd; 16],
            port: 65535,
        };
        let short = PeerAddr {
            ip: [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11],
            port: 7947,
        };
        let peer = |id, cache| Substitute {
            id,
            cache,
            key: [7; 32],
        };
        let peers = [peer(1, short), peer(2, longest), peer(3, longest)];
        let mut argv = Argv::leaked();
        push_substituters(&mut argv, &peers).unwrap();
        let args = argv.args();
        let at = args.iter().position(|a| a == "extra-substituters").unwrap();
        let fdfd = "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd";
        assert_eq!(
            args[at + 1],
            format!("http://[fd00:77::11]:7947 http://[{fdfd}]:65535 http://[{fdfd}]:65535")
        );
    }

    /// After a build, the new version's root and the root of the store path the unit runs stay;
    /// older roots of that service go, whatever their age, and other services' roots stay.
    #[test]
    fn prune_keeps_the_new_root_and_the_running_one() {
        let dir = std::env::temp_dir().join(format!("myco-prune-{}", std::process::id()));
        let (roots, units) = (dir.join("gcroots"), dir.join("units"));
        fs::create_dir_all(&roots).unwrap();
        fs::create_dir_all(&units).unwrap();
        for (root, out) in [
            ("web-aaaaaaaaaaaa", "/nix/store/a-web"),
            ("web-bbbbbbbbbbbb", "/nix/store/b-web"),
            ("web-cccccccccccc", "/nix/store/c-web"),
            ("api-aaaaaaaaaaaa", "/nix/store/a-api"),
        ] {
            std::os::unix::fs::symlink(out, roots.join(root)).unwrap();
        }
        let unit = "[Service]\nExecStart=\"/nix/store/b-web/bin/web\" \"--port\" \"8080\"\n";
        fs::write(units.join("myco-web.service"), unit).unwrap();
        let mut buf = [0u8; UNIT_FILE_BYTES_MAX];
        let running = running_out(&units, "web", &mut buf);
        assert_eq!(running, Some("/nix/store/b-web"));
        let keep = Keep {
            root: "web-cccccccccccc",
            running,
        };
        let handle = fs::File::open(&roots).unwrap();
        prune_roots(&handle, "web", keep, &Logger::new(false));
        let mut left: Vec<String> = fs::read_dir(&roots)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["api-aaaaaaaaaaaa", "web-bbbbbbbbbbbb", "web-cccccccccccc"]
        );
        assert_eq!(running_out(&units, "api", &mut buf), None, "no unit");
        fs::remove_dir_all(&dir).unwrap();
    }
}
