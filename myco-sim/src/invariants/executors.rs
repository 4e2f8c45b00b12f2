//! The executor world's invariants (numbered as in `executors.rs`'s header): pure checkers over
//! the nodes and the simulated boxes, called by `Executors::step` and `Executors::settled`. Each
//! returns what broke, in words, and changes nothing; each has a test that proves it can fail.

use crate::executors::{Job, SimBox, SimUnit};
use crate::world::addr;
use myco_core::dns::Directory;
use myco_core::executor::{Executor, Names, UnitHealth};
use myco_core::schema::entry::{Entry, Source};
use myco_core::Node;
use std::collections::{HashMap, HashSet};

/// Invariant 2: a unit file goes only once its unit is disabled and stopped.
pub(crate) fn check_remove(name: &str, unit: Option<&SimUnit>) -> Result<(), String> {
    match unit {
        Some(u) if u.enabled || u.active.is_some() => Err(format!(
            "the unit file of {name} was removed while its unit is still enabled or active"
        )),
        _ => Ok(()),
    }
}

/// Invariant 3: at most one command in flight per node.
pub(crate) fn check_one_in_flight(job: &Option<Job>) -> Result<(), String> {
    match job {
        Some(j) => Err(format!(
            "a command was issued while {} (token {}) was still running",
            j.verb.name(),
            j.token
        )),
        None => Ok(()),
    }
}

/// Invariant 5: a status just reported leaves out (so peers count as running) only the placed
/// services whose unit the executor read as running; a status that overflowed (`more`) makes
/// peers count what it leaves out as unknown, so it claims nothing.
///
/// The status's `placed` digest names exactly the entries it speaks of, so a peer that places the
/// same entries here may read what it leaves out as running these versions, and a unit of another
/// version than the placed one does not count as running (`deploy --wait` relies on both).
pub(crate) fn check_status_truthful(node: &Node, executor: &Executor) -> Result<(), String> {
    let status = node.own_status();
    let placed = node.own_placed_digest();
    if status.placed.0 != placed {
        return Err(format!(
            "node {}: its status speaks of placed entries {:016x}, but {placed:016x} are placed",
            node.id(),
            status.placed.0
        ));
    }
    if status.more {
        return Ok(());
    }
    for slot in node.placed_here() {
        let key = slot.key_hash;
        let listed = status.units.iter().any(|(k, _)| k.0 == key);
        let unit = executor.units().iter().find(|u| u.key == key);
        let running =
            unit.is_some_and(|u| u.health == UnitHealth::Running && u.digest == slot.digest);
        if !listed && !running {
            let health = match unit {
                None => "no unit",
                Some(u) if u.digest != slot.digest => "of another version",
                Some(u) => u.health.name(),
            };
            return Err(format!(
                "node {}: its status says a placed service runs, but its unit is {health}",
                node.id()
            ));
        }
    }
    Ok(())
}

/// Whether node `i` holds node `j`'s latest status: `j`'s status has spread to `i`.
fn status_current(nodes: &[Box<Node>], i: usize, j: usize) -> bool {
    let own = nodes[j].own_status().version;
    i == j || nodes[i].status_of(nodes[j].id()).map(|s| s.version) == Some(own)
}

/// The services placement puts on node `i`, as `i` sees it.
fn placed_on(node: &Node) -> HashSet<u64> {
    node.placed_here().map(|slot| slot.key_hash).collect()
}

/// Invariant 1: every live node has enabled exactly the services placed on it.
pub(crate) fn check_enabled(
    nodes: &[Box<Node>],
    live: &[usize],
    boxes: &[SimBox],
) -> Result<(), String> {
    for &i in live {
        let placed = placed_on(&nodes[i]);
        let enabled: HashSet<u64> = boxes[i]
            .units
            .iter()
            .filter(|(_, (_, u))| u.enabled)
            .map(|(k, _)| *k)
            .collect();
        // A node that sees a rollout held (or waits unheard) may lack its unit.
        let executor = &boxes[i].executor;
        let held = |k: u64| crate::invariants::rollout::excused(&nodes[i], executor, k);
        let placed: HashSet<u64> = placed
            .into_iter()
            .filter(|&k| enabled.contains(&k) || !held(k))
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

/// Invariant 4: every live node's DNS answers each service with exactly the placed live boxes
/// where its unit runs (healthy, and not a version held there), judged on the boxes whose latest
/// status the node holds (a box whose status has not reached it yet is left out of both sides).
/// A box nobody judges, such as an adversary's stolen box, is left out of both sides. A box whose
/// status overflowed (`more`) is answered only for what it listed, by the core's rule.
pub(crate) fn check_dns(
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
            myco_core::PeerAddr {
                port: 0,
                ..boxes[j].seen_at
            }
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
            // The name is read in place: rebuilding and decoding every entry of every node made
            // most of this check's time.
            let name = node.store().name(slot);
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
            // A unit its box found unhealthy (its checks failed) does not serve, though systemd
            // runs it.
            let runs = |j: usize| {
                let running = boxes[j].units.get(&slot.key_hash).map(|(_, u)| u.active);
                // A status cut short (`more`) still speaks of what it lists.
                let status = nodes[j].own_status();
                let listed = status.units.iter().any(|(k, _)| k.0 == slot.key_hash);
                let known = j == i || !status.more || listed;
                let unit = boxes[j].executor.unit(name);
                let unhealthy = unit.is_some_and(|u| u.health == UnitHealth::Unhealthy);
                // A version held on its box is not served there though its unit runs (a box
                // with nothing to go back to keeps running it).
                let held =
                    unit.is_some_and(|u| boxes[j].executor.held(slot.key_hash, u.digest).is_some());
                running == Some(Some(UnitHealth::Running)) && known && !unhealthy && !held
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

/// Invariant 5: a flake service's unit carries a built program.
pub(crate) fn check_program(name: &str, entry: &[u8], program: Option<&str>) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use crate::scenario::Scenario;
    use myco_core::executor::Verb;

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

    /// Invariant 13's checker is not vacuous: a start of a unit systemd holds from an older file
    /// than the one written (no reload since) is a violation; a unit it holds none of is loaded
    /// from its file by the start, as systemd does, and one loaded from the file starts.
    #[test]
    fn loaded_check_detects_a_start_from_a_stale_definition() {
        use crate::executors::start_loaded;
        let mut stale = SimUnit {
            file: true,
            digest: 2,
            loaded: 1,
            ..SimUnit::default()
        };
        assert!(start_loaded("myco-web.service", &mut stale).is_err());
        assert_eq!(
            stale.loaded, 1,
            "a start loads nothing over what systemd holds"
        );
        let mut never = SimUnit { loaded: 0, ..stale };
        assert!(start_loaded("myco-web.service", &mut never).is_ok());
        assert_eq!(never.loaded, 2, "loaded from the file by the start");
        assert!(start_loaded("myco-web.service", &mut never).is_ok());
    }

    /// Invariant 3's checker is not vacuous: a command issued while one runs is a violation.
    #[test]
    fn in_flight_check_detects_a_second_command() {
        let running = Some(Job {
            token: 7,
            verb: Verb::Enable,
            issued_at: 0,
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
