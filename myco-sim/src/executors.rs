//! The executor world: every simulated node runs the core's executor (`myco_core::executor`)
//! against a simulated systemd, and the run checks what the executor promises.
//!
//! The simulated systemd keeps, per node, the unit files, the enabled set and each unit's active
//! state. Faults are drawn from the seed: a unit that fails to start or crash-loops (decided per
//! node and unit, so it behaves the same on every start), and a `systemctl` that fails or hangs
//! for `HANG_MS` and then fails. A failed command changes nothing. A simulated nix builds flake
//! services: a build takes up to 100 ms, and with the `systemctl` fault rate it
//! fails (exits non-zero, or prints garbage) or hangs for `HANG_MS` and then fails, at most once
//! per version, so the retry succeeds.
//!
//! Invariants, each a safety failure:
//! 1. once converged and settled, every placed service is enabled on exactly its placed live
//!    boxes, and no unit is ever enabled while already enabled (enabled exactly once);
//! 2. a unit file is never removed while its unit is enabled or active (disable before delete);
//! 3. a node never has two commands in flight;
//! 4. once status has spread, every node's DNS answer set for each service is exactly the placed
//!    boxes whose unit runs (a box whose status overflowed is answered only for what it listed);
//! 5. a flake service's unit is never written without the program of a successful build, and a
//!    failed build is not retried before its backoff (`retry_delay_ms`) has passed.
//!
//! Nothing here allocates while stepping: tables are sized at boot; only the settle checks
//! allocate, and the run leaves what they allocate out of the nodes' count.

use crate::world::addr;
use myco_core::config::UNITS_PER_COMMAND;
use myco_core::dns::Directory;
use myco_core::executor::{
    retry_delay_ms, Build, BuildState, Command, Executor, Names, Outcome, UnitHealth, Verb,
};
use myco_core::random::Prng;
use myco_core::schema::entry::{Entry, Source};
use myco_core::state::store::key_hash;
use myco_core::unit::{service_of, UNIT_NAME_BYTES_MAX};
use myco_core::{Instant, Node};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// How long a hanging `systemctl` takes before it fails.
pub const HANG_MS: u64 = 20_000;

/// A unit as the simulated systemd holds it.
#[derive(Clone, Copy, Debug, Default)]
struct SimUnit {
    file: bool,
    /// The digest written in the file's header, read back by a restarted executor.
    digest: u64,
    enabled: bool,
    active: Option<UnitHealth>,
    restarts: u32,
}

/// A build running on one node: what it prints, when it ends.
struct BuildJob {
    token: u64,
    key: u64,
    digest: u64,
    done_at: u64,
    ok: bool,
    stdout: &'static [u8],
}

/// What the simulated nix prints for a successful build (the store path's hash does not matter
/// to the executor, which appends `bin/<name>`).
const BUILT: &[u8] =
    br#"[{"drvPath":"/nix/store/0000-sim.drv","outputs":{"out":"/nix/store/0000-sim"}}]"#;

/// A `systemctl` running on one node.
struct Job {
    token: u64,
    verb: Verb,
    done_at: u64,
    ok: bool,
}

type Fixed = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
type UnitName = heapless::String<UNIT_NAME_BYTES_MAX>;

/// One simulated box: the core executor and the systemd it drives.
struct SimBox {
    executor: Box<Executor>,
    /// Keyed by the service's key hash; a fixed hasher keeps iteration, and so the run, the
    /// same for the same seed.
    units: HashMap<u64, (heapless::String<63>, SimUnit), Fixed>,
    job: Option<Job>,
    build: Option<BuildJob>,
    /// Per service key: the digest whose build failed, when it last failed and how many failed
    /// in a row (invariant 5), while the executor keeps the service's build record.
    failed_builds: HashMap<u64, (u64, u64, u32), Fixed>,
    /// The units the running job names; allocated once.
    job_units: Vec<UnitName>,
    changed: bool,
}

pub struct Executors {
    boxes: Vec<SimBox>,
    rng: Prng,
    seed: u64,
    /// Join addresses name other nodes: alone means cut off (`engine::mode`).
    peers: bool,
    unit_fault_ppm: u64,
    systemctl_fault_ppm: u64,
    stdout: String,
    /// Commands run and settle checks passed, for the report.
    pub commands: u64,
    pub checks: u64,
}

impl Executors {
    pub fn new(
        nodes: usize,
        services: usize,
        seed: u64,
        unit_fault_ppm: u64,
        systemctl_fault_ppm: u64,
    ) -> Executors {
        let boxes = (0..nodes)
            .map(|_| SimBox {
                executor: Box::new(Executor::new(nodes > 1)),
                units: HashMap::with_capacity_and_hasher(services + 16, Fixed::default()),
                job: None,
                build: None,
                failed_builds: HashMap::with_capacity_and_hasher(services + 16, Fixed::default()),
                job_units: Vec::with_capacity(UNITS_PER_COMMAND),
                changed: true,
            })
            .collect();
        Executors {
            boxes,
            rng: Prng::new(seed ^ 0x4558_4543),
            seed,
            unit_fault_ppm,
            systemctl_fault_ppm,
            stdout: String::with_capacity(UNITS_PER_COMMAND * 192),
            peers: nodes > 1,
            commands: 0,
            checks: 0,
        }
    }

    /// The desired state or membership changed on node `i`.
    pub fn placement_changed(&mut self, i: usize) {
        self.boxes[i].changed = true;
    }

    /// Node `i` crashed and came back: its executor is new and reads the unit files; what
    /// systemd runs is untouched (enabled units survive a reboot), a running command is lost.
    pub fn restart(&mut self, i: usize) {
        let b = &mut self.boxes[i];
        *b.executor = Executor::new(self.peers);
        b.job = None;
        b.build = None;
        b.failed_builds.clear();
        b.changed = true;
        for (name, u) in b.units.values() {
            if u.file {
                b.executor.handle_installed(name, u.digest);
            }
        }
    }

    /// One step of node `i`'s executor at `now`. The executor is polled even while a command
    /// runs: whatever it issues then is a second command in flight (invariant 3).
    pub fn step(
        &mut self,
        i: usize,
        node: &mut Node,
        sink: &mut impl myco_core::Sink,
        now: u64,
    ) -> Result<(), String> {
        if std::mem::take(&mut self.boxes[i].changed) {
            self.boxes[i].executor.handle_placement_changed();
        }
        self.finish_job(i, now)?;
        self.step_build(i, node, now)?;
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
                    ..
                } => {
                    check_program(name, entry, program)?;
                    let (_, u) = b.units.entry(key_hash(name)).or_insert_with(|| {
                        let name = heapless::String::try_from(name).expect("service names fit");
                        (name, SimUnit::default())
                    });
                    u.file = true;
                    u.digest = digest;
                }
                Command::RemoveUnitFile { name } => {
                    let u = b.units.get_mut(&key_hash(name)).map(|(_, u)| u);
                    check_remove(name, u.as_deref())?;
                    if let Some(u) = u {
                        u.file = false;
                    }
                }
                Command::Build { .. } => return Err("a build issued by poll_command".into()),
                Command::Systemctl { verb, units } => {
                    let done_at = now + if hang { HANG_MS } else { latency_ms };
                    b.job_units.clear();
                    b.job_units.extend(units);
                    b.job = Some(Job {
                        token,
                        verb,
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
            let units = b.executor.not_running();
            // Simulated milliseconds stand in for the daemon's wall-clock floor: they grow across
            // a node's restarts, so its status versions do too.
            node.set_status(Instant(now), now as u32, units, sink);
        }
        Ok(())
    }

    /// Node `i`'s build lane: ends the running build when due, then starts the next one.
    fn step_build(&mut self, i: usize, node: &Node, now: u64) -> Result<(), String> {
        let b = &mut self.boxes[i];
        if let Some(job) = b.build.take_if(|j| j.done_at <= now) {
            let outcome = Outcome {
                ok: job.ok || job.stdout != BUILT,
                stdout: job.stdout,
            };
            b.executor
                .handle_command_done(Instant(now), job.token, outcome);
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
        let Command::Build { name, .. } = issued.command else {
            return Err("poll_build issued something other than a build".into());
        };
        let key = key_hash(name);
        let building = b.executor.builds().iter().find(|x| x.key == key);
        let digest = building.map_or(0, |x| x.digest);
        if let Some(&(_, at, failures)) = b.failed_builds.get(&key).filter(|f| f.0 == digest) {
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
        let hang = fault && self.rng.chance(1, 3);
        let garbage = fault && !hang && self.rng.chance(1, 2);
        // Short, as a build of a rev already in a cache is: the simulation checks the order of
        // builds and units, and a box of many services builds them one after another.
        let latency_ms = 10 + self.rng.below(90);
        b.build = Some(BuildJob {
            token,
            key,
            digest,
            done_at: now + if hang { HANG_MS } else { latency_ms },
            ok: !fault,
            // Garbage exits 0 (the outcome says ok) but names no store path.
            stdout: if garbage { b"error: not json" } else { BUILT },
        });
        Ok(())
    }

    /// Ends node `i`'s `systemctl` if it is due: a successful one acts on the simulated systemd,
    /// a failed one changes nothing; either way the executor hears of it.
    fn finish_job(&mut self, i: usize, now: u64) -> Result<(), String> {
        let b = &mut self.boxes[i];
        if b.job.as_ref().is_none_or(|j| j.done_at > now) {
            return Ok(());
        }
        let job = b.job.take().expect("checked");
        self.stdout.clear();
        if job.ok {
            let seed = self.seed ^ i as u64;
            apply(b, &job, &mut self.stdout, seed, self.unit_fault_ppm)?;
        }
        let stdout = self.stdout.as_bytes();
        let outcome = Outcome { ok: job.ok, stdout };
        b.executor
            .handle_command_done(Instant(now), job.token, outcome);
        Ok(())
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
        if !quiet {
            return Ok(false);
        }
        check_enabled(nodes, live, &self.boxes)?;
        check_dns(nodes, live, up, &self.boxes)?;
        self.checks += 1;
        Ok(true)
    }
}

/// Invariant 5: a flake service's unit carries a built program.
fn check_program(name: &str, entry: &[u8], program: Option<&str>) -> Result<(), String> {
    let flake = Entry::decode(entry)
        .ok()
        .and_then(|e| e.body.spec)
        .is_some_and(|s| matches!(s.source, Source::Flake { .. }));
    let names_it = |p: &str| p.strip_suffix(name).is_some_and(|p| p.ends_with("/bin/"));
    if flake && !program.is_some_and(names_it) {
        return Err(format!(
            "unit of flake service {name} written before its build"
        ));
    }
    Ok(())
}

/// What a successful command does to the simulated systemd; `show` writes its report.
fn apply(
    b: &mut SimBox,
    job: &Job,
    stdout: &mut String,
    seed: u64,
    fault_ppm: u64,
) -> Result<(), String> {
    for unit in &b.job_units {
        let name = service_of(unit).expect("the executor names its own units");
        let key = key_hash(name);
        let Some((_, u)) = b.units.get_mut(&key).filter(|(_, u)| u.file) else {
            if job.verb == Verb::Show {
                let _ = write!(
                    stdout,
                    "Id={unit}\nActiveState=inactive\nSubState=dead\nNRestarts=0\n\n"
                );
            }
            continue;
        };
        match job.verb {
            Verb::Disable => {
                u.enabled = false;
                u.active = None;
            }
            Verb::Enable => {
                if u.enabled {
                    return Err(format!("unit {unit} enabled while already enabled"));
                }
                u.enabled = true;
                u.active = Some(start(seed, key, fault_ppm));
            }
            Verb::Restart => u.active = Some(start(seed, key, fault_ppm)),
            Verb::Reload => {}
            Verb::Show => {
                let (active, sub) = match u.active {
                    None | Some(UnitHealth::Stopped | UnitHealth::Pending) => ("inactive", "dead"),
                    Some(UnitHealth::Running) => ("active", "running"),
                    Some(UnitHealth::Starting) => ("activating", "start"),
                    Some(UnitHealth::Restarting) => ("activating", "auto-restart"),
                    Some(UnitHealth::Failed) => ("failed", "failed"),
                    Some(UnitHealth::Building | UnitHealth::BuildFailed) => {
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
            }
        }
    }
    Ok(())
}

/// How a unit does once started: its fault is a function of the node and the unit, so it
/// behaves the same on every start.
fn start(seed: u64, key: u64, fault_ppm: u64) -> UnitHealth {
    let draw = Prng::new(seed ^ key).below(1_000_000);
    if draw < fault_ppm / 2 {
        UnitHealth::Failed
    } else if draw < fault_ppm {
        UnitHealth::Restarting
    } else {
        UnitHealth::Running
    }
}

/// Invariant 2: a unit file goes only once its unit is disabled and stopped.
fn check_remove(name: &str, unit: Option<&SimUnit>) -> Result<(), String> {
    match unit {
        Some(u) if u.enabled || u.active.is_some() => Err(format!(
            "the unit file of {name} was removed while its unit is still enabled or active"
        )),
        _ => Ok(()),
    }
}

/// Invariant 3: at most one command in flight per node.
fn check_one_in_flight(job: &Option<Job>) -> Result<(), String> {
    match job {
        Some(j) => Err(format!(
            "a command was issued while {} (token {}) was still running",
            j.verb.name(),
            j.token
        )),
        None => Ok(()),
    }
}

/// Whether the executor's view of every unit is what the simulated systemd holds.
fn health_read(b: &SimBox) -> bool {
    b.executor.units().iter().all(|u| {
        let truth = b
            .units
            .get(&u.key)
            .and_then(|(_, s)| s.active)
            .unwrap_or(UnitHealth::Stopped);
        u.health == truth
    })
}

/// Whether node `i` holds node `j`'s latest status: `j`'s status has spread to `i`.
fn status_current(nodes: &[Box<Node>], i: usize, j: usize) -> bool {
    let own = nodes[j].own_status().version;
    i == j || nodes[i].status_of(nodes[j].id()).map(|s| s.version) == Some(own)
}

/// The services placement puts on node `i`, as `i` sees it.
fn placed_on(node: &Node) -> HashSet<u64> {
    node.placed_here().map(|(slot, _)| slot.key_hash).collect()
}

/// Invariant 1: every live node has enabled exactly the services placed on it.
fn check_enabled(nodes: &[Box<Node>], live: &[usize], boxes: &[SimBox]) -> Result<(), String> {
    for &i in live {
        let placed = placed_on(&nodes[i]);
        let enabled: HashSet<u64> = boxes[i]
            .units
            .iter()
            .filter(|(_, (_, u))| u.enabled)
            .map(|(k, _)| *k)
            .collect();
        if placed != enabled {
            let missing = placed.difference(&enabled).count();
            let extra = enabled.difference(&placed).count();
            return Err(format!(
                "node {i}: {missing} placed services are not enabled and {extra} enabled units are not placed there"
            ));
        }
    }
    Ok(())
}

/// Invariant 4: every live node's DNS answers each service with exactly the placed boxes where
/// its unit runs, among the judged boxes whose latest status it holds (a box whose status has
/// not spread to it, or that nobody judges, such as an adversary's stolen box, is left out of
/// both sides). A box whose status overflowed (`more`) is answered
/// only for what it listed, by the core's rule.
fn check_dns(
    nodes: &[Box<Node>],
    live: &[usize],
    up: &[usize],
    boxes: &[SimBox],
) -> Result<(), String> {
    let by_id: HashMap<u64, usize> = up.iter().map(|&j| (nodes[j].id(), j)).collect();
    let at = |i: usize, j: usize| {
        if i == j {
            addr(i)
        } else {
            myco_core::PeerAddr { port: 0, ..addr(j) }
        }
    };
    for &i in live {
        let node = &nodes[i];
        let names = Names {
            node,
            executor: Some(&boxes[i].executor),
            own: addr(i),
        };
        for slot in node.store().slots().iter().filter(|s| !s.tombstone) {
            let bytes = node.store().bytes(slot);
            let entry = myco_core::schema::entry::Entry::decode(bytes).expect("stored");
            let name = entry.body.name;
            let placed: Vec<usize> = node
                .placement(slot.key_hash)
                .into_iter()
                .filter_map(|id| by_id.get(&id).copied())
                .collect();
            let stale: HashSet<_> = placed
                .iter()
                .filter(|&&j| !live.contains(&j) || !status_current(nodes, i, j))
                .map(|&j| at(i, j))
                .collect();
            let runs = |j: usize| {
                let running = boxes[j].units.get(&slot.key_hash).map(|(_, u)| u.active);
                let known = j == i || !nodes[j].own_status().more;
                running == Some(Some(UnitHealth::Running)) && known
            };
            let mut expected: Vec<_> = placed
                .iter()
                .filter(|&&j| runs(j))
                .map(|&j| at(i, j))
                .filter(|a| !stale.contains(a))
                .collect();
            let mut answered = Vec::new();
            names.instances(name, &mut |a| {
                if !stale.contains(&a) {
                    answered.push(a)
                }
            });
            expected.sort_by_key(|a| (a.ip, a.port));
            answered.sort_by_key(|a| (a.ip, a.port));
            if expected != answered {
                return Err(format!(
                    "node {i}: DNS answers {name} with {} boxes, but {} placed boxes run it",
                    answered.len(),
                    expected.len()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use crate::scenario::Scenario;

    /// Invariant 2's checker is not vacuous: removing the file of an enabled or active unit is a
    /// violation; of a disabled, stopped one it is not.
    #[test]
    fn remove_check_detects_an_enabled_unit() {
        let enabled = SimUnit {
            file: true,
            enabled: true,
            ..SimUnit::default()
        };
        assert!(check_remove("web", Some(&enabled)).is_err());
        let active = SimUnit {
            file: true,
            active: Some(UnitHealth::Running),
            ..SimUnit::default()
        };
        assert!(check_remove("web", Some(&active)).is_err());
        let stopped = SimUnit {
            file: true,
            ..SimUnit::default()
        };
        assert!(check_remove("web", Some(&stopped)).is_ok());
    }

    /// Invariant 3's checker is not vacuous: a command issued while one runs is a violation.
    #[test]
    fn in_flight_check_detects_a_second_command() {
        let running = Some(Job {
            token: 7,
            verb: Verb::Enable,
            done_at: 0,
            ok: true,
        });
        assert!(check_one_in_flight(&running).is_err());
        assert!(check_one_in_flight(&None).is_ok());
    }

    /// Invariants 1 and 4's checkers are not vacuous: after a settled run, a unit enabled where
    /// it is not placed, or a placed one not enabled, breaks invariant 1, and a unit that stopped
    /// behind the executor's back breaks invariant 4's DNS answer set.
    #[test]
    fn enabled_and_dns_checks_detect_disagreement() {
        let mut s = Scenario::standard(3, 5, 20, 0.0);
        s.kill = false;
        let mut c = Cluster::new(&s);
        let report = c.run();
        assert_eq!(report.failure, None);
        assert!(
            report.executor_checks > 0,
            "the run settled and was checked"
        );
        let (nodes, exec) = c.parts();
        let live: Vec<usize> = (0..nodes.len()).collect();
        assert!(check_enabled(nodes, &live, &exec.boxes).is_ok());
        assert!(check_dns(nodes, &live, &live, &exec.boxes).is_ok());
        let holder = (0..nodes.len())
            .find(|&i| exec.boxes[i].units.values().any(|(_, u)| u.enabled))
            .expect("some node runs a unit");
        let (key, (_, unit)) = exec.boxes[holder]
            .units
            .iter()
            .find(|(_, (_, u))| u.enabled)
            .map(|(k, v)| (*k, v.clone()))
            .unwrap();
        let mut stopped = unit;
        stopped.active = Some(UnitHealth::Failed);
        exec.boxes[holder].units.get_mut(&key).unwrap().1 = stopped;
        assert!(
            check_dns(nodes, &live, &live, &exec.boxes).is_err(),
            "a unit that no longer runs is still answered"
        );
        let mut disabled = unit;
        disabled.enabled = false;
        exec.boxes[holder].units.get_mut(&key).unwrap().1 = disabled;
        assert!(check_enabled(nodes, &live, &exec.boxes).is_err());
    }
}
