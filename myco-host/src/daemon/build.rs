//! The builder: runs the `Command::Build` the core decides on, one at a time, beside the systemd
//! commands. `nice -n 19 ionice -c 3 nix build --json -L --out-link <gcroots>/<name>-<rev12>
//! '<uri>#<attr>'` runs without a shell in the transient unit `myco-build-<name>.service`
//! (`super::transient` says why not as the daemon's own child); its stdout (the `--json` answer) is read through
//! the fixed output buffer and parsed by the core; its stderr (the build log) goes to
//! `<state>/builds/<name>.log`, truncated per build, whose tail `/logs` serves for a service
//! that failed to build and the daemon's log repeats on failure. A build that outlives
//! `--build-timeout` is killed and reported failed. After a build succeeds, the GC roots of that
//! service other than the new one and the one its unit runs now are deleted: the version about
//! to run and the one it replaces stay rooted, for a rollback.

use super::transient::{self, Unit};
use crate::flight::{Level, Logger};
use crate::spawn::{self, Argv, Child, Output};
use myco_core::executor::{is_root_of, out_of_program, parse_build_json};
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
    /// Where the units are: the running version's root is the one its unit's program is in.
    unit_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<CString>,
    argv: Argv,
    output: Output,
    job: Option<Job>,
    log: Logger,
}

impl Builder {
    pub fn new(
        config: BuildConfig,
        (state_dir, unit_dir): (&Path, &Path),
        log: Logger,
    ) -> io::Result<Builder> {
        let log_dir = state_dir.join("builds");
        fs::create_dir_all(&log_dir)?;
        let gcroot_dir =
            (config.gcroot_dir.clone()).unwrap_or_else(|| state_dir.join(GCROOT_DIR_IN_STATE));
        fs::create_dir_all(&gcroot_dir)?;
        Ok(Builder {
            config,
            gcroot_dir,
            unit_dir: unit_dir.to_owned(),
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
                let running = running_out(&self.unit_dir, &job.name);
                let keep = Keep {
                    root: &job.root,
                    running: running.as_deref(),
                };
                prune_roots(&self.gcroot_dir, &job.name, keep, &self.log);
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
        let keep = Keep {
            root: "",
            running: None,
        };
        prune_roots(&self.gcroot_dir, name, keep, &self.log);
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

/// The GC roots of a service to keep: the new version's, and the one the service's unit runs now
/// (the version being replaced, kept for a rollback).
struct Keep<'a> {
    root: &'a str,
    /// The store path the service's unit runs (`running_out`), if it runs one.
    running: Option<&'a Path>,
}

/// Deletes the GC roots of `name` but those `keep` names; failures are logged and left for the
/// next build. A root is a symlink to a store path, so "the one the unit runs" is the root that
/// points where the unit's `ExecStart=` does, whatever its name or age.
fn prune_roots(dir: &Path, name: &str, keep: Keep<'_>, log: &Logger) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str().filter(|f| is_root_of(f, name)) else {
            continue;
        };
        let target = fs::read_link(e.path()).ok();
        if file == keep.root || (keep.running.is_some() && target.as_deref() == keep.running) {
            continue;
        }
        if let Err(err) = fs::remove_file(e.path()) {
            log.log(
                Level::Warning,
                format_args!("cannot delete the GC root {}: {err}", e.path().display()),
            );
        }
    }
}

/// The store path service `name`'s unit in `unit_dir` runs: its `ExecStart=` program,
/// `<out>/bin/<name>`, without `/bin/<name>`. `None` without a unit or for an `exec` service.
fn running_out(unit_dir: &Path, name: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(unit_dir.join(format!("myco-{name}.service"))).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("ExecStart=\""))?;
    let program = &line[..line.find('"')?];
    out_of_program(program, name).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let running = running_out(&units, "web");
        assert_eq!(running.as_deref(), Some(Path::new("/nix/store/b-web")));
        let keep = Keep {
            root: "web-cccccccccccc",
            running: running.as_deref(),
        };
        prune_roots(&roots, "web", keep, &Logger::new(false));
        let mut left: Vec<String> = fs::read_dir(&roots)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["api-aaaaaaaaaaaa", "web-bbbbbbbbbbbb", "web-cccccccccccc"]
        );
        assert_eq!(running_out(&units, "api"), None, "no unit");
        fs::remove_dir_all(&dir).unwrap();
    }
}
