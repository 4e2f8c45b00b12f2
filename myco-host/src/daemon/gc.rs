//! The garbage collector's hands: reads how full the filesystem holding the Nix store is
//! (statvfs) when `myco_core::executor::Gc` says a check is due, and runs the collection it asks
//! for as `nice -n 19 ionice -c 3 nix-collect-garbage`, lowest CPU and idle I/O priority so the
//! services on the box do not feel it, in the transient unit `myco-gc.service` (the daemon's own
//! sandbox keeps `/nix` read-only: `super::transient`). When to collect and what the output says
//! are the core's.
//!
//! `nix-collect-garbage` runs without `-d`: deleting old profile generations is the owner's
//! choice (it removes their rollbacks, and the system profile's boot entries on NixOS), not a
//! daemon's. The store paths myco built are held by its own GC roots, current and previous
//! output of each placed service, which this never deletes; everything else unrooted is garbage.

use super::transient::{self, Unit};
use crate::flight::{Level, Logger};
use crate::path::Lossy;
use crate::privileged::client::Client;
use crate::spawn::{self, Argv, Child, Output};
use myco_core::executor::{Gc, GcDone, Outcome};
use myco_core::privileged::Request;
use myco_core::time::Instant;
use std::ffi::CString;
use std::io;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct GcConfig {
    /// The store whose filesystem is watched; no collection without it (a box without Nix).
    pub store_dir: PathBuf,
    /// The `nix-collect-garbage` to run.
    pub collect_garbage: String,
    /// `systemd-run` (`--systemd-run`), which runs the collection in a unit of its own.
    pub systemd_run: String,
    /// Test hook (hidden flag `--store-usage-file`): the usage in permille is read from this
    /// file instead of statvfs, so a test can fill a disk without filling one.
    pub usage_file: Option<PathBuf>,
}

/// `systemd-run ... --unit=myco-gc -- nice ... nix-collect-garbage` into `argv`; the daemon's
/// collector and `myco-priv` both build with it.
pub fn gc_argv(
    argv: &mut Argv,
    (systemd_run, collect_garbage): (&str, &str),
    env: &[CString],
) -> Result<(), crate::spawn::ArgvFull> {
    argv.clear();
    let unit = Unit {
        systemd_run,
        name: &[b"myco-gc"],
        runtime_max_s: None,
    };
    transient::push_prefix(argv, &unit, env)?;
    argv.push(&[collect_garbage.as_bytes()])
}

pub struct Collector {
    pub core: Gc,
    config: GcConfig,
    argv: Argv,
    env: Vec<CString>,
    output: Output,
    job: Option<(Child, u64)>,
    /// With `--privileged`: `myco-priv` runs the collection as the store's owner.
    privileged: Option<Client>,
    log: Logger,
}

impl Collector {
    /// `argv` and `output` are the arena's.
    pub fn new(config: GcConfig, log: Logger, (argv, output): (Argv, Output)) -> Collector {
        Collector {
            core: Gc::new(),
            config,
            argv,
            env: transient::environment(),
            output,
            job: None,
            privileged: None,
            log,
        }
    }

    /// From now on, asks `myco-priv` through `client` to collect (`--privileged`).
    pub fn ask_privileged(&mut self, client: Client) {
        self.privileged = Some(client);
    }

    /// `nix-collect-garbage` started: ours, or the helper's (which builds the same command line
    /// from its own program paths).
    fn spawn(&mut self) -> io::Result<Child> {
        if let Some(client) = &self.privileged {
            // The request has no fields: a few bytes of frame.
            let mut frame = [0u8; 16];
            return client.start(&Request::CollectGarbage, &mut frame, None);
        }
        let argv = &mut self.argv;
        let tools = (
            &self.config.systemd_run[..],
            &self.config.collect_garbage[..],
        );
        gc_argv(argv, tools, &self.env)
            .expect("the nix-collect-garbage command line is fixed and fits");
        spawn::spawn(argv, &transient::env_refs(&self.env))
    }

    /// One step: reap a finished collection, read the usage if due, start a collection if due.
    /// Returns how a collection ended, for `/stream`.
    pub fn step(&mut self, now: Instant) -> Option<GcDone> {
        let mut done = None;
        if let Some((child, token)) = self.job.as_mut() {
            let exit = child.poll(&mut self.output)?;
            let token = *token;
            self.job = None;
            let outcome = Outcome {
                ok: exit.success(),
                stdout: self.output.bytes(),
            };
            done = self.core.handle_gc_done(now, token, outcome);
            self.log_done(done);
        }
        if self.core.check_due(now) {
            match self.used_permille() {
                Ok(used) => self.core.handle_store_usage(now, used),
                // No store, no collection: the check is not due again for a minute.
                Err(_) => self.core.handle_store_usage(now, 0),
            }
        }
        if let Some(token) = self.core.poll_gc(now) {
            self.start(token);
        }
        done
    }

    fn start(&mut self, token: u64) {
        self.output.clear();
        let used = self.core.used_permille();
        match self.spawn() {
            Ok(child) => {
                self.log.log(
                    Level::Info,
                    format_args!(
                        "the Nix store's disk is {}.{}% full: collecting garbage",
                        used / 10,
                        used % 10
                    ),
                );
                self.job = Some((child, token));
            }
            Err(e) => {
                self.log.log(
                    Level::Error,
                    format_args!(
                        "cannot run nix-collect-garbage: {}",
                        crate::flight::IoError(&e)
                    ),
                );
                let done = self.core.handle_gc_done(Instant(0), token, Outcome::FAILED);
                assert!(done.is_some(), "the token was just issued");
            }
        }
    }

    fn log_done(&self, done: Option<GcDone>) {
        match done {
            Some(GcDone::Freed(f)) => self.log.log(
                Level::Info,
                format_args!(
                    "garbage collected: {} store paths deleted, {} bytes freed",
                    f.paths, f.bytes
                ),
            ),
            Some(GcDone::Failed) => {
                let out = Lossy(self.output.bytes().trim_ascii());
                self.log.log(
                    Level::Warning,
                    format_args!(
                        "nix-collect-garbage failed or did not say what it freed; trying again \
                         later. It said: {out}"
                    ),
                );
            }
            None => {}
        }
    }

    /// Permille of the store's filesystem in use, as `df` counts it (blocks not free to
    /// unprivileged users are used).
    fn used_permille(&self) -> io::Result<u16> {
        if let Some(file) = &self.config.usage_file {
            let mut buf = [0u8; 16];
            let text = super::build::read_tail(file, &mut buf)?;
            let invalid = || io::Error::from(io::ErrorKind::InvalidData);
            let text = std::str::from_utf8(text.trim_ascii()).map_err(|_| invalid())?;
            return text.parse().map_err(|_| invalid());
        }
        let stat = nix::sys::statvfs::statvfs(&self.config.store_dir)?;
        let total = stat.blocks() as u64;
        let avail = stat.blocks_available() as u64;
        let free = stat.blocks_free() as u64;
        let used = total.saturating_sub(free);
        let usable = used + avail;
        if usable == 0 {
            return Ok(0);
        }
        Ok((used * 1000 / usable) as u16)
    }
}
