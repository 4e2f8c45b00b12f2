//! The builder: runs the `Command::Build` the core decides on, one at a time, beside the systemd
//! commands. `nice -n 19 ionice -c 3 nix build --json -L --out-link <gcroots>/<name>-<rev12>
//! '<uri>#<attr>'` runs without a shell in the transient unit `myco-build-<name>.service`
//! (`super::transient` says why not as the daemon's own child); its stdout (the `--json` answer) is read through
//! the fixed output buffer and parsed by the core; its stderr (the build log) goes to
//! `<state>/builds/<name>.log`, truncated per build, whose tail `/logs` serves for a service
//! that failed to build and the daemon's log repeats on failure. A build that outlives
//! `--build-timeout` is killed and reported failed. After a build succeeds, the GC roots of that
//! service other than the new one and the newest before it are deleted: the running version and
//! the one before it stay rooted, for a rollback.

use super::transient::{self, Unit};
use crate::flight::{Level, Logger};
use crate::spawn::{self, Argv, Child, Output};
use myco_core::executor::{is_root_of, parse_build_json};
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The GC root directory, below the state directory, when `--gcroot-dir` names none: it must be
/// writable by the daemon, which deletes the roots of versions it no longer needs (Nix links each
/// one from `/nix/var/nix/gcroots/auto`, so the collector sees them).
pub const GCROOT_DIR_IN_STATE: &str = "gcroots";
/// A build is killed after this long when `--build-timeout` says nothing: 30 minutes.
pub const BUILD_TIMEOUT_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// The tail of a failed build's log repeated in the daemon's log.
const LOG_TAIL_BYTES: u64 = 2048;
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
}

/// The running build.
struct Job {
    child: Child,
    token: u64,
    name: String,
    root: String,
    deadline_ms: u64,
    killed: bool,
}

/// A build that ended: its token and service, whether `nix` succeeded, and what it printed on
/// stdout.
pub struct Ended<'a> {
    pub token: u64,
    pub name: String,
    pub ok: bool,
    pub stdout: &'a [u8],
}

pub struct Builder {
    config: BuildConfig,
    gcroot_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<CString>,
    argv: Argv,
    output: Output,
    job: Option<Job>,
    log: Logger,
}

impl Builder {
    pub fn new(config: BuildConfig, state_dir: &Path, log: Logger) -> io::Result<Builder> {
        let log_dir = state_dir.join("builds");
        fs::create_dir_all(&log_dir)?;
        let gcroot_dir =
            (config.gcroot_dir.clone()).unwrap_or_else(|| state_dir.join(GCROOT_DIR_IN_STATE));
        fs::create_dir_all(&gcroot_dir)?;
        Ok(Builder {
            config,
            gcroot_dir,
            log_dir,
            env: transient::environment(),
            argv: Argv::new(),
            output: Output::new(),
            job: None,
            log,
        })
    }

    /// Whether a build runs.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Where the log of service `name`'s last build is.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Spawns the build of `<uri>#<attr>` for service `name`, rooted at `root`. An error means
    /// nothing runs (the caller reports the build failed).
    pub fn start(
        &mut self,
        token: u64,
        now_ms: u64,
        name: &str,
        uri: &str,
        attr: &str,
        root: &str,
    ) -> io::Result<()> {
        assert!(self.job.is_none(), "one build at a time");
        let log = CString::new(self.log_path(name).into_os_string().into_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        let argv = &mut self.argv;
        argv.clear();
        let link = self.gcroot_dir.join(root);
        let full = "a build's command line is a few hundred bytes";
        let unit = Unit {
            systemd_run: &self.config.systemd_run,
            name: &[b"myco-build-", name.as_bytes()],
            runtime_max_s: Some(self.config.timeout_ms.div_ceil(1000)),
        };
        transient::push_prefix(argv, &unit, &self.env).expect(full);
        argv.push(&[self.config.nix.as_bytes()]).expect(full);
        for arg in [&b"build"[..], b"--json", b"-L", b"--out-link"] {
            argv.push(&[arg]).expect(full);
        }
        argv.push(&[link.as_os_str().as_bytes()]).expect(full);
        argv.push(&[uri.as_bytes(), b"#", attr.as_bytes()])
            .expect(full);
        let env: Vec<&CStr> = self.env.iter().map(|c| c.as_c_str()).collect();
        let child = spawn::spawn_with_stderr(argv, &env, Some(&log))?;
        self.output.clear();
        self.log.log(
            Level::Info,
            format_args!("service {name}: building {uri}#{attr}"),
        );
        self.job = Some(Job {
            child,
            token,
            name: name.to_owned(),
            root: root.to_owned(),
            deadline_ms: now_ms.saturating_add(self.config.timeout_ms + KILL_GRACE_MS),
            killed: false,
        });
        Ok(())
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
        match out {
            Some(out) => {
                self.log.log(
                    Level::Info,
                    format_args!("service {}: built {out}", job.name),
                );
                prune_roots(&self.gcroot_dir, &job.name, &job.root, &self.log);
            }
            None => self.log_failure(&job.name, exit.0),
        }
        Some(Ended {
            token: job.token,
            name: job.name,
            ok: out.is_some(),
            stdout: self.output.bytes(),
        })
    }

    fn log_failure(&self, name: &str, code: i32) {
        let tail = read_tail(&self.log_path(name), LOG_TAIL_BYTES).unwrap_or_default();
        let tail = String::from_utf8_lossy(&tail);
        let retry = "it is tried again later; 'myco logs ".to_owned()
            + name
            + "' on this box shows its log";
        self.log.log(
            Level::Warning,
            format_args!(
                "service {name}: build failed (exit {code}); {retry}. It said: {}",
                tail.trim()
            ),
        );
    }

    /// Deletes every GC root of service `name` (no longer placed here).
    pub fn drop_roots(&self, name: &str) {
        prune_roots(&self.gcroot_dir, name, "", &self.log);
    }
}

/// The last `bytes` bytes of the file at `path`.
pub fn read_tail(path: &Path, bytes: u64) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut tail = Vec::new();
    f.take(bytes).read_to_end(&mut tail)?;
    Ok(tail)
}

/// Deletes the GC roots of `name` but `keep` and the newest other one (the version running
/// before `keep`); with `keep` empty, deletes them all. Failures are logged and left for the
/// next build.
fn prune_roots(dir: &Path, name: &str, keep: &str, log: &Logger) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut roots: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|f| is_root_of(f, name) && f != keep)
        })
        .filter_map(|e| Some((e.path().symlink_metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    roots.sort();
    if !keep.is_empty() {
        roots.pop();
    }
    for (_, path) in roots {
        if let Err(e) = fs::remove_file(&path) {
            log.log(
                Level::Warning,
                format_args!("cannot delete the GC root {}: {e}", path.display()),
            );
        }
    }
}
