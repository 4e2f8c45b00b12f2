//! The executor world: every simulated node runs the core's executor (`myco_core::executor`)
//! against a simulated systemd, and the run checks what the executor promises.
//!
//! The simulated systemd keeps, per node, the unit files, the enabled set and each unit's active
//! state. Faults are drawn from the seed: a unit that fails to start or crash-loops (decided per
//! node and unit, so it behaves the same on every start), and a `systemctl` that fails or hangs
//! until the executor cancels it (the host then kills it, and it fails). A failed command
//! changes nothing. A simulated nix builds flake services: a build takes up to 100 ms, and
//! with the `systemctl` fault rate it fails (exits non-zero, or prints garbage) or hangs for
//! `BUILD_HANG_MS` and then fails, at most once per version, so the retry succeeds.
//!
//! Invariants, each a safety failure:
//! 1. once converged and settled, every placed service is enabled on exactly its placed live
//!    boxes, and no unit is ever enabled while already enabled (enabled exactly once);
//! 2. a unit file is never removed while its unit is enabled or active (disable before delete);
//! 3. a node never has two commands in flight;
//! 4. once status has spread, every node's DNS answer set for each service is exactly the placed
//!    boxes whose unit runs (a box whose status overflowed is answered only for what it listed);
//! 5. a box's status, as it reports it, never leaves out (so never lets peers count as running)
//!    a placed service whose unit the box has not read as running;
//! 6. a hung `systemctl` is cancelled within `CANCEL_SLACK_MS` of `SYSTEMCTL_TIMEOUT_MS`.
//! 7. a flake service's unit is never written without the program of a successful build, and a
//!    failed build is not retried before its backoff (`retry_delay_ms`) has passed.
//! 8. a unit that failed its health checks is restarted before it is checked again, and is out
//!    of DNS until a check passes, or its restart if it cannot be checked again (`checks.rs`).
//! 9. rollouts (`myco_core::executor::rollout`): a bad version (`Scenario::bad_update_ppm`: its
//!    unit fails or crash-loops and its build fails on every box) replaces a unit of an earlier
//!    version only on a box of the first wave; a box never writes a version older than its unit's
//!    but to go back to exactly the version it ran before; once settled, a rollout that is not
//!    held has reached every placed box, and one that is held was held by a box where the version
//!    really failed (a bad version, or the box's own unit fault).
//! 10. a build starts with only substitutes that offered the version under their certified
//!     keys, and with none only if no live, certified peer had offered it in a status the box
//!     received (`p2p.rs`, which also simulates the fetch); the build key names the system the
//!     output is for, so the peer may be of any architecture.
//! 11. a box started `--build remote` (`p2p::mode_of`: in clusters of eight or more, every
//!     fourth box where two builders for its system exist, x86_64 builders building for aarch64
//!     boxes too) never issues a build that may build:
//!     it fetches from peers or from the builder it asked (`myco_core::executor::remote`), and
//!     a fetch that finds nothing fails. That every placed service still runs on it (invariant 1)
//!     shows its requests were answered, by another builder when one died (`--kill`).
//! 12. once settled, a box started `--build remote` that is the first wave of a bad flake version
//!     placed on it holds it, build-failed: it never builds, so the failure it holds on is its
//!     builder's, told it as `Message::BuildFailed` (`invariants::rollout::check_remote_canary`).
//! 13. a unit is enabled or restarted only from the file last written, which systemd has loaded
//!     since (`daemon-reload`, the reload `systemctl enable` and `disable` do by themselves, or,
//!     for a unit systemd did not hold, the load a `show` or a start makes from the file): the
//!     executor skips its own reload before an enable, and enables with `--no-reload` a unit a
//!     `show` found loaded from its current file, and this checks that it may. The simulated
//!     systemd holds a unit as real systemd 252 does (docs/benchmarks.md): from its first load
//!     until it is stopped and disabled, except a failed one, which it keeps (with its old
//!     definition, `NeedDaemonReload=yes` once the file changes).
//!
//! Nothing here allocates while stepping: tables are sized at boot; only the settle checks
//! allocate, and the run leaves what they allocate out of the nodes' count.

use crate::ids::zone_of;
use crate::invariants::executors::{
    check_dns, check_enabled, check_one_in_flight, check_program, check_remove,
    check_status_truthful,
};
use crate::invariants::rollout::{check_remote_canary, check_rollouts, check_write};
use crate::world::FromPeer;
use myco_core::config::{SYSTEMCTL_TIMEOUT_MS, UNITS_PER_COMMAND};
use myco_core::executor::{
    retry_delay_ms, Build, BuildMode, BuildState, Command, Executor, Outcome, UnitHealth, Verb,
};
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;
use myco_core::state::store::key_hash;
use myco_core::unit::{service_of, UNIT_NAME_BYTES_MAX};
use myco_core::{Instant, Node};
use std::collections::{HashMap, HashSet};

pub(crate) mod checks;
mod p2p;
use std::fmt::Write as _;

/// How long a hanging build takes before it fails (the host's `--build-timeout` ends a real one).
pub const BUILD_HANG_MS: u64 = 20_000;

/// How late past `SYSTEMCTL_TIMEOUT_MS` the cancel of a hung `systemctl` may come: the
/// executor is stepped every tick, far more often.
const CANCEL_SLACK_MS: u64 = 1_000;

/// A unit as the simulated systemd holds it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SimUnit {
    pub(crate) file: bool,
    /// The digest written in the file's header, read back by a restarted executor.
    pub(crate) digest: u64,
    /// The digest of the file as systemd last loaded it (0: it holds none: never loaded, or
    /// dropped once stopped and disabled): `daemon-reload`, and `enable` and `disable` (which
    /// reload by themselves), load every file; so does a reboot; a `show` or a start of a unit
    /// it holds none of loads that unit's file. A start or restart runs what is loaded
    /// (invariant 13).
    pub(crate) loaded: u64,
    pub(crate) enabled: bool,
    pub(crate) active: Option<UnitHealth>,
    pub(crate) restarts: u32,
    /// Runs but does not answer its health checks until restarted (`checks::sick`).
    pub(crate) sick: bool,
    /// Health checks failed in a row, as the executor counts them.
    pub(crate) failed_checks: u8,
    /// It failed its entry's `failures` checks in a row: a restart is owed (invariant 8).
    pub(crate) restart_owed: bool,
    /// The clock of the version written, and the digest and clock of the one written before it.
    pub(crate) clock: u64,
    pub(crate) before: Option<(u64, u64)>,
}

/// A build running on one node: what it prints, when it ends.
struct BuildJob {
    token: u64,
    key: u64,
    digest: u64,
    done_at: u64,
    ok: bool,
    stdout: &'static [u8],
    /// The build key of the version (`myco_core::executor::build_key`).
    build_key: u64,
    /// Nix substituted it from a peer's cache rather than building it.
    fetched: bool,
    /// Run for a peer's request (`p2p.rs`, remote builders), not for a service placed here.
    for_peer: bool,
    /// Run for a peer's request for another system than this box's own (`extra-platforms`).
    other_system: bool,
}

/// The port every simulated box's binary cache offers (only that it is not 0 matters).
const SIM_CACHE_PORT: u16 = 7947;

/// What the simulated nix prints for a successful build (the store path's hash does not matter
/// to the executor, which appends `bin/<name>`).
const BUILT: &[u8] =
    br#"[{"drvPath":"/nix/store/0000-sim.drv","outputs":{"out":"/nix/store/0000-sim"}}]"#;

/// A `systemctl` running on one node.
pub(crate) struct Job {
    pub(crate) token: u64,
    pub(crate) verb: Verb,
    pub(crate) issued_at: u64,
    /// `u64::MAX` for a hung one: it ends only when cancelled.
    pub(crate) done_at: u64,
    pub(crate) ok: bool,
}

use crate::uniform::Uniform;
type UnitName = heapless::String<UNIT_NAME_BYTES_MAX>;

/// One simulated box: the core executor and the systemd it drives.
pub(crate) struct SimBox {
    pub(crate) executor: Box<Executor>,
    /// Keyed by the service's key hash; a fixed hasher keeps iteration, and so the run, the
    /// same for the same seed.
    pub(crate) units: HashMap<u64, (heapless::String<63>, SimUnit), Uniform>,
    pub(crate) job: Option<Job>,
    build: Option<BuildJob>,
    /// Per service key: the digest whose build failed, when it last failed and how many failed
    /// in a row (invariant 5), while the executor keeps the service's build record.
    failed_builds: HashMap<u64, (u64, u64, u32), Uniform>,
    /// The units the running job names; allocated once.
    job_units: Vec<UnitName>,
    /// Health checks under way, at most `checks::CHECK_SLOTS`.
    checks: Vec<checks::CheckJob>,
    changed: bool,
    /// The node crashed once: its store may have lost versions its units run (invariant 9 then
    /// allows an older write).
    pub(crate) crashed: bool,
    /// The build keys of the versions in this box's store, which its cache serves (`p2p.rs`).
    store: Vec<u64>,
    /// `--builder`, `--build remote` (`p2p::mode_of`), and what its status last said of them.
    mode: BuildMode,
    building: (u8, u64),
    /// `store` changed since the node's offer was last set.
    offer_changed: bool,
    /// Where its peers see it (`world::seen_at`): its own address, or its NAT's.
    pub(crate) seen_at: myco_core::PeerAddr,
}

pub struct Executors {
    pub(crate) boxes: Vec<SimBox>,
    rng: Prng,
    pub(crate) seed: u64,
    /// Per box, whether its join addresses name other nodes, as the daemon's `--join` and
    /// remembered members do: those of its own zone only, since membership is per zone. Then
    /// alone means cut off (`executor::reconcile::mode`); the one box of its zone is never.
    peers: Vec<bool>,
    pub(crate) unit_fault_ppm: u64,
    systemctl_fault_ppm: u64,
    /// The digests of the bad versions (invariant 9).
    pub(crate) bad: HashSet<u64, Uniform>,
    /// The versions whose build faulted on a builder or a box that does not build (`step_build`).
    /// Sized at boot (`versions`).
    shared_build_faults: HashSet<u64, Uniform>,
    stdout: String,
    /// Commands run, hung commands cancelled and settle checks passed, for the report.
    pub commands: u64,
    pub cancelled: u64,
    pub checks: u64,
    /// Health checks run.
    pub health_checks: u64,
    /// Each box's node id, as its node says, by index (0 until first stepped).
    ids: Vec<u64>,
    /// Successful builds made here and substituted from peers, and builds made here although an
    /// up peer's store held the version when the build started (`p2p.rs`).
    pub builds_local: u64,
    pub builds_fetched: u64,
    pub builds_local_held_by_peer: u64,
    /// Builds fetched by boxes that do not build (`--build remote`), and builds run by builders
    /// for peers' requests.
    pub builds_remote: u64,
    pub builds_for_peers: u64,
    /// Of those, builds for another system than the builder's own.
    pub builds_for_other_systems: u64,
    /// Invariant 12's holds seen at settle checks: remote-only first-wave boxes holding a bad
    /// flake version (the same hold counts at each check).
    pub remote_canary_holds: u64,
}

impl Executors {
    /// `arches`: each box's architecture, as its certificate says, and the zones the boxes are
    /// spread over (`p2p::mode_of` makes some boxes builders and some remote-only from them).
    pub fn new(
        (arches, zones): (&[Arch], u8),
        services: usize,
        seed: u64,
        unit_fault_ppm: u64,
        systemctl_fault_ppm: u64,
    ) -> Executors {
        let nodes = arches.len();
        let peers: Vec<bool> = (0..nodes).map(|i| zone_has_peer(i, nodes, zones)).collect();
        let boxes = (0..nodes)
            .map(|i| SimBox {
                executor: Box::new(p2p::executor((arches, zones), i, peers[i])),
                units: HashMap::with_capacity_and_hasher(services + 16, Uniform::default()),
                job: None,
                build: None,
                failed_builds: HashMap::with_capacity_and_hasher(services + 16, Uniform::default()),
                job_units: Vec::with_capacity(UNITS_PER_COMMAND),
                checks: Vec::with_capacity(checks::CHECK_SLOTS),
                changed: true,
                crashed: false,
                store: Vec::with_capacity(services + 16),
                // The cache's port is offered from the start, as the daemon's is.
                offer_changed: true,
                mode: p2p::mode_of((arches, zones), i),
                building: (0, 0),
                seen_at: crate::world::addr(i),
            })
            .collect();
        Executors {
            boxes,
            rng: Prng::new(seed ^ 0x4558_4543),
            seed,
            unit_fault_ppm,
            systemctl_fault_ppm,
            bad: HashSet::default(),
            shared_build_faults: HashSet::default(),
            stdout: String::with_capacity(UNITS_PER_COMMAND * 192),
            peers,
            commands: 0,
            cancelled: 0,
            checks: 0,
            health_checks: 0,
            ids: vec![0; nodes],
            builds_local: 0,
            builds_fetched: 0,
            builds_local_held_by_peer: 0,
            builds_remote: 0,
            builds_for_peers: 0,
            builds_for_other_systems: 0,
            remote_canary_holds: 0,
        }
    }

    /// Build requests, and builders' answers that a build failed, that reached node `i`
    /// (`p2p.rs`), each with its sender.
    pub fn build_messages(
        &mut self,
        i: usize,
        node: &Node,
        now: u64,
        (requests, failed): (&[FromPeer], &[FromPeer]),
    ) {
        p2p::take_requests(&mut self.boxes[i], node, now, requests);
        p2p::take_failed(&mut self.boxes[i], now, failed);
    }

    /// The run's `ops` operations, whose versions include `bad` (invariant 9): tables that record
    /// versions while stepping are sized here, since stepping must not allocate.
    pub fn versions(&mut self, bad: impl Iterator<Item = u64>, ops: usize) {
        self.bad.extend(bad);
        self.shared_build_faults.reserve(ops);
    }

    /// The desired state or membership changed on node `i`.
    pub fn placement_changed(&mut self, i: usize) {
        self.boxes[i].changed = true;
    }

    /// Node `i` crashed and came back: its executor is new and reads the unit files; what
    /// systemd runs is untouched (enabled units survive a reboot), a running command is lost.
    pub fn restart(&mut self, i: usize) {
        let b = &mut self.boxes[i];
        *b.executor = Executor::new(self.peers[i]);
        b.executor.set_build_mode(b.mode);
        b.job = None;
        b.build = None;
        b.failed_builds.clear();
        b.checks.clear();
        b.changed = true;
        // The new executor counts checks from nothing.
        for (_, u) in b.units.values_mut() {
            (u.failed_checks, u.restart_owed) = (0, false);
        }
        b.crashed = true;
        reload(b);
        // In the map's order, as a directory listing comes in no particular one (the hasher is
        // deterministic, so runs replay).
        for (name, u) in b.units.values() {
            if u.file {
                b.executor.handle_installed(name, u.digest);
            }
        }
    }

    /// One step of node `i`'s executor at `now`. The executor is polled even while a command
    /// runs: whatever it issues then is a second command in flight (invariant 3).
    /// `up`: which nodes run (a down box's cache serves nothing).
    pub fn step(
        &mut self,
        (i, up): (usize, &[bool]),
        node: &mut Node,
        sink: &mut impl myco_core::Sink,
        now: u64,
    ) -> Result<(), String> {
        self.ids[i] = node.id();
        if std::mem::take(&mut self.boxes[i].changed) {
            self.boxes[i].executor.handle_placement_changed();
        }
        self.finish_job(i, now)?;
        self.step_build(i, up, node, now)?;
        p2p::offer(&mut self.boxes[i], node, now, sink);
        p2p::ask_and_tell(&mut self.boxes[i], node, now, sink);
        self.step_checks(i, node, now)?;
        loop {
            let b = &mut self.boxes[i];
            let Some(issued) = b.executor.poll_command(Instant(now), node) else {
                break;
            };
            check_one_in_flight(&b.job)?;
            self.commands += 1;
            let token = issued.token;
            let fault = self.rng.below(1_000_000) < self.systemctl_fault_ppm;
            let hang = fault && self.rng.chance(1, 2);
            let latency_ms = 10 + self.rng.below(40);
            match issued.command {
                Command::WriteUnit {
                    name,
                    digest,
                    entry,
                    program,
                    clock,
                    ..
                } => {
                    check_program(name, entry, program)?;
                    let bad = self.bad.contains(&digest);
                    let units = &mut b.units;
                    write(units, node, (name, digest, clock), (bad, b.crashed))?;
                }
                Command::RemoveUnitFile { name } => {
                    let u = b.units.get_mut(&key_hash(name)).map(|(_, u)| u);
                    check_remove(name, u.as_deref())?;
                    if let Some(u) = u {
                        u.file = false;
                    }
                }
                Command::Build { .. } | Command::HealthCheck { .. } => {
                    return Err("a build or a check issued by poll_command".into())
                }
                Command::Systemctl { verb, units } => {
                    let done_at = if hang { u64::MAX } else { now + latency_ms };
                    b.job_units.clear();
                    b.job_units.extend(units);
                    b.job = Some(Job {
                        token,
                        verb,
                        issued_at: now,
                        done_at,
                        ok: !fault,
                    });
                    continue;
                }
            }
            b.executor
                .handle_command_done(Instant(now), token, Outcome::OK);
        }
        let b = &mut self.boxes[i];
        if b.executor.take_health_changed() {
            // Simulated milliseconds stand in for the daemon's wall-clock floor: they grow across
            // a node's restarts, so its status versions do too.
            b.executor
                .report_status(node, Instant(now), now as u32, sink);
            check_status_truthful(node, &b.executor)?;
        }
        Ok(())
    }

    /// Ends node `i`'s build if it is due, and tells the executor.
    fn end_build(&mut self, i: usize, now: u64) {
        let Some(job) = self.boxes[i].build.take_if(|j| j.done_at <= now) else {
            return;
        };
        let outcome = Outcome {
            ok: job.ok || job.stdout != BUILT,
            stdout: job.stdout,
        };
        self.stored(i, &job);
        let b = &mut self.boxes[i];
        b.executor
            .handle_command_done(Instant(now), job.token, outcome);
        if job.for_peer {
            // The requester asks again, or another builder: no backoff of this box's own.
            return;
        }
        // A failure counts only where it applied: a record dropped and made again while the
        // build ran starts over, as it should.
        let failed = |x: &&Build| {
            x.key == job.key
                && x.digest == job.digest
                && matches!(x.state, BuildState::Failed { .. })
        };
        let applied = b.executor.builds().iter().find(failed).is_some();
        if job.ok {
            b.failed_builds.remove(&job.key);
        } else if applied {
            let before = b.failed_builds.get(&job.key).filter(|f| f.0 == job.digest);
            let failures = before.map_or(0, |f| f.2) + 1;
            b.failed_builds.insert(job.key, (job.digest, now, failures));
        }
    }

    /// Node `i`'s build lane: ends the running build when due, then starts the next one.
    fn step_build(&mut self, i: usize, up: &[bool], node: &Node, now: u64) -> Result<(), String> {
        self.end_build(i, now);
        let b = &mut self.boxes[i];
        // A record the executor dropped (a new version, or no longer placed here) starts over;
        // checked on every step, since a record can be dropped and made again while another
        // service builds.
        let executor = &b.executor;
        let kept = |key: &u64, f: &mut (u64, u64, u32)| {
            let mut builds = executor.builds().iter();
            builds.any(|x| x.key == *key && x.digest == f.0)
        };
        b.failed_builds.retain(kept);
        if b.build.is_some() {
            return Ok(());
        }
        let Some(issued) = b.executor.poll_build(Instant(now), node) else {
            return Ok(());
        };
        let token = issued.token;
        let Command::Build {
            name,
            root,
            substitutes,
            local,
            ..
        } = issued.command
        else {
            return Err("poll_build issued something other than a build".into());
        };
        // Invariant 11: a box that does not build never runs a build that may build.
        if local && !b.mode.local {
            return Err(format!(
                "box {i} (--build remote) issued a build that may build"
            ));
        }
        let key = key_hash(name);
        let (build_key, fetched) = self.substitution(node, up, &root, &substitutes)?;
        let b = &mut self.boxes[i];
        let peer = b.executor.peer_builds().iter().find(|p| p.running);
        let building = b.executor.builds().iter().find(|x| x.key == key);
        let digest = peer.map_or(building.map_or(0, |x| x.digest), |p| p.digest);
        let for_peer = peer.is_some();
        // Checked for a box's own builds; a builder's build for a peer has the backoff of its
        // failures for peers (`remote::PeerBuilds`), which refuses requests instead.
        let own = b
            .failed_builds
            .get(&key)
            .filter(|f| f.0 == digest && !for_peer);
        if let Some(&(_, at, failures)) = own {
            if now < at + retry_delay_ms(failures) {
                return Err(format!(
                    "build of service {key:x} retried before its backoff"
                ));
            }
        }
        self.commands += 1;
        // A version fails to build at most once (a fetch that failed, a builder killed): a
        // version that never builds is never enabled, which invariant 1 would call a failure,
        // and the backoff (30 s, doubling) would outlast the settle window.
        let failed_before = b.failed_builds.get(&key).is_some_and(|f| f.0 == digest);
        let fault = !failed_before && self.rng.below(1_000_000) < self.systemctl_fault_ppm;
        // A box that does not build counts its builders' failures (`remote.rs`) with its own
        // fetch's, so on builders and such boxes a version faults at most once in the cluster:
        // two one-off faults would hold a good version there (gauntlet seed 9101).
        let shared = !b.mode.local || b.mode.builds != 0;
        let fault = fault && (!shared || self.shared_build_faults.insert(digest));
        let hang = fault && self.rng.chance(1, 3);
        let garbage = fault && !hang && self.rng.chance(1, 2);
        // Short, as a build of a rev already in a cache is: the simulation checks the order of
        // builds and units, and a box of many services builds them one after another.
        let latency_ms = 10 + self.rng.below(90);
        // A bad version never builds; nor does a box that may only fetch, when no peer has it.
        let fault = fault || self.bad.contains(&digest) || !(local || fetched);
        b.build = Some(BuildJob {
            token,
            key,
            digest,
            done_at: now + if hang { BUILD_HANG_MS } else { latency_ms },
            ok: !fault,
            // Garbage exits 0 (the outcome says ok) but names no store path.
            stdout: if garbage { b"error: not json" } else { BUILT },
            build_key,
            fetched,
            for_peer,
            other_system: peer.is_some_and(|p| p.system != b.mode.system),
        });
        Ok(())
    }

    /// Ends node `i`'s `systemctl` if it is due: a successful one acts on the simulated systemd,
    /// a failed one changes nothing; either way the executor hears of it.
    fn finish_job(&mut self, i: usize, now: u64) -> Result<(), String> {
        self.cancel_job(i, now)?;
        let b = &mut self.boxes[i];
        if b.job.as_ref().is_none_or(|j| j.done_at > now) {
            return Ok(());
        }
        let job = b.job.take().expect("checked");
        self.stdout.clear();
        if job.ok {
            let seed = self.seed ^ i as u64;
            let faults = (seed, self.unit_fault_ppm, &self.bad);
            apply(b, &job, &mut self.stdout, faults)?;
        }
        let stdout = self.stdout.as_bytes();
        let outcome = Outcome { ok: job.ok, stdout };
        b.executor
            .handle_command_done(Instant(now), job.token, outcome);
        Ok(())
    }

    /// Ends node `i`'s `systemctl` now, failed, if the executor cancels it (the host kills it);
    /// invariant 6: a hung one is cancelled in time.
    fn cancel_job(&mut self, i: usize, now: u64) -> Result<(), String> {
        let b = &mut self.boxes[i];
        let Some(job) = b.job.as_mut() else {
            return Ok(());
        };
        if b.executor.poll_cancel(Instant(now)) == Some(job.token) {
            job.done_at = now;
            job.ok = false;
            self.cancelled += 1;
        } else if now > job.issued_at + SYSTEMCTL_TIMEOUT_MS + CANCEL_SLACK_MS {
            return Err(format!(
                "node {i}: {} (token {}) has run {} ms and was not cancelled",
                job.verb.name(),
                job.token,
                now - job.issued_at
            ));
        }
        Ok(())
    }

    /// From now on no `systemctl` or build fails or hangs (faults are lifted for the liveness
    /// phase); commands already hung still wait for their cancel.
    pub fn lift_command_faults(&mut self) {
        self.systemctl_fault_ppm = 0;
    }

    /// Whether every live executor is at rest with health read back; then checks invariants 1
    /// and 4 on the live nodes `live` (which agree on placement) and returns true.
    pub fn settled(
        &mut self,
        nodes: &[Box<Node>],
        live: &[usize],
        up: &[usize],
    ) -> Result<bool, String> {
        let quiet = live.iter().all(|&i| {
            let b = &self.boxes[i];
            !b.changed && b.executor.at_rest() && health_read(b)
        });
        // DNS is judged on the boxes whose latest status a node holds (`check_dns`). Waiting for
        // every status to reach every node would be the stronger check, but after crashes the
        // simulator still finds a box whose latest status never reaches one peer (an open fault of
        // the status repair, docs/algorithm.md section 8), which would fail the run here.
        if !quiet {
            return Ok(false);
        }
        check_enabled(nodes, live, &self.boxes)?;
        check_dns(nodes, live, up, &self.boxes)?;
        check_rollouts(nodes, live, self)?;
        for &i in live {
            let b = &self.boxes[i];
            let bad = |d| self.bad.contains(&d);
            self.remote_canary_holds +=
                check_remote_canary(&nodes[i], &b.executor, !b.mode.local, bad)?;
        }
        self.checks += 1;
        Ok(true)
    }
}

impl Executors {
    /// The first live box whose executor is not at rest, and why: what a run stuck before
    /// placement was checked needs to be understood.
    pub fn unquiet(&self, live: &[usize]) -> Option<String> {
        live.iter().find_map(|&i| {
            let b = &self.boxes[i];
            let why = if b.changed {
                "a change not yet reported"
            } else if let Some(why) = b.executor.unrest() {
                return Some(format!("box {i}: its executor is not at rest ({why})"));
            } else if let Some((unit, read, truth)) = unread(b) {
                return Some(format!(
                    "box {i}: unit {unit:x} reads {read:?}, systemd says {truth:?}"
                ));
            } else {
                return None;
            };
            Some(format!("box {i}: {why}"))
        })
    }
}

/// Writes the unit file of version `(name, digest, clock)` among a box's `units`, after
/// invariant 9's check (`bad`: a bad version; `crashed`: the box crashed once).
fn write(
    units: &mut HashMap<u64, (heapless::String<63>, SimUnit), Uniform>,
    node: &Node,
    (name, digest, clock): (&str, u64, u64),
    (bad, crashed): (bool, bool),
) -> Result<(), String> {
    let (_, u) = units.entry(key_hash(name)).or_insert_with(|| {
        let name = heapless::String::try_from(name).expect("service names fit");
        (name, SimUnit::default())
    });
    check_write(node, (key_hash(name), digest, clock), u, bad, crashed)?;
    if u.file && u.digest != digest {
        u.before = Some((u.digest, u.clock));
    }
    if u.digest != digest {
        // A new version's checks are counted from nothing.
        (u.failed_checks, u.restart_owed) = (0, false);
    }
    u.file = true;
    u.digest = digest;
    u.clock = clock;
    Ok(())
}

/// What a successful command does to the simulated systemd; `show` writes its report.
fn apply(
    b: &mut SimBox,
    job: &Job,
    stdout: &mut String,
    (seed, fault_ppm, bad): (u64, u64, &HashSet<u64, Uniform>),
) -> Result<(), String> {
    if matches!(job.verb, Verb::Reload | Verb::Enable | Verb::Disable) {
        reload(b);
    }
    for unit in &b.job_units {
        let name = service_of(unit).expect("the executor names its own units");
        let key = key_hash(name);
        let Some((_, u)) = b.units.get_mut(&key).filter(|(_, u)| u.file) else {
            if matches!(job.verb, Verb::Show | Verb::ShowLoad) {
                let _ = write!(
                    stdout,
                    "Id={unit}\nActiveState=inactive\nSubState=dead\nNRestarts=0\nLoadState=not-found\n\n"
                );
            }
            continue;
        };
        match job.verb {
            Verb::Disable => {
                u.enabled = false;
                // Stopped, it is dropped; a failed unit stays failed, and held.
                if u.active != Some(UnitHealth::Failed) {
                    u.loaded = 0;
                }
                u.active = None;
                (u.failed_checks, u.restart_owed) = (0, false);
            }
            Verb::Enable | Verb::EnableNoReload => {
                if u.enabled {
                    return Err(format!("unit {unit} enabled while already enabled"));
                }
                start_loaded(unit, u)?;
                u.enabled = true;
                u.active = Some(start(seed, key, fault_ppm, bad.contains(&u.digest)));
                u.sick = checks::sick(seed, key, fault_ppm);
                (u.failed_checks, u.restart_owed) = (0, false);
            }
            Verb::Restart => {
                start_loaded(unit, u)?;
                u.active = Some(start(seed, key, fault_ppm, bad.contains(&u.digest)));
                // A restart cures a service that stopped answering.
                u.sick = false;
                (u.failed_checks, u.restart_owed) = (0, false);
            }
            Verb::Reload => {}
            Verb::ShowLoad => {
                let stale = if show_loaded(u) { "no" } else { "yes" };
                let _ = write!(
                    stdout,
                    "Id={unit}\nLoadState=loaded\nNeedDaemonReload={stale}\n\n"
                );
            }
            Verb::Show => show_health(unit, u, stdout)?,
        }
    }
    Ok(())
}

/// The block `show` prints of a unit's health.
fn show_health(unit: &str, u: &mut SimUnit, stdout: &mut String) -> Result<(), String> {
    let (active, sub) = match u.active {
        None | Some(UnitHealth::Stopped | UnitHealth::Pending) => ("inactive", "dead"),
        Some(UnitHealth::Running) => ("active", "running"),
        Some(UnitHealth::Starting) => ("activating", "start"),
        Some(UnitHealth::Restarting) => ("activating", "auto-restart"),
        Some(UnitHealth::Failed) => ("failed", "failed"),
        Some(UnitHealth::Building | UnitHealth::BuildFailed | UnitHealth::Unhealthy) => {
            return Err(format!("unit {unit} holds a build's state"))
        }
    };
    if u.active == Some(UnitHealth::Restarting) {
        u.restarts += 1;
    }
    let n = u.restarts;
    let file = if u.enabled { "enabled" } else { "disabled" };
    let _ = write!(
        stdout,
        "Id={unit}\nActiveState={active}\nSubState={sub}\nNRestarts={n}\nUnitFileState={file}\n\n"
    );
    Ok(())
}

/// systemd loads every unit file again (a `daemon-reload`, an `enable` or `disable`, a boot).
fn reload(b: &mut SimBox) {
    for (_, u) in b.units.values_mut() {
        u.loaded = if u.file { u.digest } else { 0 };
    }
}

/// What `show` of a unit does to what systemd holds of it: it loads the file of a unit it holds
/// none of. Returns whether what it holds is the file (`NeedDaemonReload=no`).
fn show_loaded(u: &mut SimUnit) -> bool {
    if u.loaded == 0 && u.file {
        u.loaded = u.digest;
    }
    u.loaded == u.digest
}

/// Invariant 13: a unit is started from the file last written, which systemd has loaded since
/// (a start of a unit systemd holds none of loads it, as `show` does).
pub(crate) fn start_loaded(unit: &str, u: &mut SimUnit) -> Result<(), String> {
    if show_loaded(u) {
        return Ok(());
    }
    Err(format!(
        "unit {unit} started from version {:016x} while its file holds {:016x}: no reload since the write",
        u.loaded, u.digest
    ))
}

/// How a unit does once started: its fault is a function of the node and the unit, so it
/// behaves the same on every start; a bad version fails or crash-loops (one in two of each)
/// wherever it starts.
/// Whether another of the `nodes` shares node `i`'s zone (`zones` round-robin, as the cluster
/// spreads them).
fn zone_has_peer(i: usize, nodes: usize, zones: u8) -> bool {
    let zone = zone_of(i, zones);
    (0..nodes).any(|j| j != i && zone_of(j, zones) == zone)
}

pub(crate) fn start(seed: u64, key: u64, fault_ppm: u64, bad: bool) -> UnitHealth {
    if bad {
        return if key.is_multiple_of(2) {
            UnitHealth::Failed
        } else {
            UnitHealth::Restarting
        };
    }
    let draw = Prng::new(seed ^ key).below(1_000_000);
    if draw < fault_ppm / 2 {
        UnitHealth::Failed
    } else if draw < fault_ppm {
        UnitHealth::Restarting
    } else {
        UnitHealth::Running
    }
}

/// Whether the executor's view of every unit is what the simulated systemd holds.
/// An unhealthy unit is not read back yet: it has a check to pass (or a restart to get).
fn health_read(b: &SimBox) -> bool {
    unread(b).is_none()
}

/// The first unit whose health the executor reads otherwise than the simulated systemd holds:
/// its key, what the executor read, and the truth.
fn unread(b: &SimBox) -> Option<(u64, UnitHealth, UnitHealth)> {
    b.executor.units().iter().find_map(|u| {
        let truth = b
            .units
            .get(&u.key)
            .and_then(|(_, s)| s.active)
            .unwrap_or(UnitHealth::Stopped);
        (u.health != truth).then_some((u.key, u.health, truth))
    })
}
