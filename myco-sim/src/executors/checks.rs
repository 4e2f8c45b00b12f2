//! The simulated boxes' health checks: each box runs the checks its executor hands out
//! (`Executor::poll_check`) in `CHECK_SLOTS` slots, as the daemon does, and the simulated service
//! answers them. A unit drawn sick when it starts (`sick`, at the unit fault rate) does not
//! answer: its checks time out until a restart cures it, so every sick unit must go unhealthy,
//! be restarted, and come back healthy.
//!
//! Invariant 8: once a unit has failed its entry's `failures` checks in a row, it is restarted
//! before it is checked again (the executor restarts it through its command lane), and it is
//! left out of DNS and status-reported unhealthy meanwhile (`check_dns`, `check_status_truthful`).

use super::{Executors, SimUnit};
use myco_core::executor::{CheckResult, Command};
use myco_core::random::Prng;
use myco_core::state::store::key_hash;
use myco_core::{Instant, Node};

/// Checks one simulated box runs at once, as the daemon's `health::CHECK_SLOTS`.
pub(crate) const CHECK_SLOTS: usize = 8;

/// A check under way on one box.
pub(crate) struct CheckJob {
    token: u64,
    key: u64,
    /// The version it checks; a result for another is not counted.
    digest: u64,
    done_at: u64,
    passed: bool,
}

/// Whether the unit of `key`, started on a box of `seed`, is sick: it runs but does not answer
/// its checks until restarted. A function of the node and the unit, with the unit fault rate.
pub(crate) fn sick(seed: u64, key: u64, fault_ppm: u64) -> bool {
    Prng::new(seed ^ key ^ 0x4845_414c_5448).below(1_000_000) < fault_ppm
}

impl Executors {
    /// Units written for a version that changes nothing they run (scaled), not restarted, as the
    /// executors count them.
    pub fn units_in_place(&self) -> u64 {
        let boxes = self.boxes.iter();
        boxes.map(|b| b.executor.stats.units_in_place).sum()
    }

    /// Restarts of unhealthy units, as the executors count them.
    pub fn health_restarts(&self) -> u64 {
        let boxes = self.boxes.iter();
        boxes.map(|b| b.executor.stats.health_restarts).sum()
    }

    /// Node `i`'s check lane: ends the checks due, then starts those the executor has due.
    pub(super) fn step_checks(&mut self, i: usize, node: &Node, now: u64) -> Result<(), String> {
        let b = &mut self.boxes[i];
        let mut k = 0;
        while k < b.checks.len() {
            if b.checks[k].done_at > now {
                k += 1;
                continue;
            }
            let job = b.checks.swap_remove(k);
            let result = if job.passed {
                CheckResult::Passed
            } else {
                CheckResult::Failed("timed out")
            };
            if b.executor
                .handle_check_done(Instant(now), job.token, result)
            {
                if let Some((_, u)) = b.units.get_mut(&job.key) {
                    count(u, node, &job, i)?;
                }
            }
        }
        while b.checks.len() < CHECK_SLOTS {
            let Some(issued) = b.executor.poll_check(Instant(now), node) else {
                break;
            };
            let Command::HealthCheck {
                name, timeout_ms, ..
            } = issued.command
            else {
                return Err("poll_check issued something other than a health check".into());
            };
            let key = key_hash(name);
            let Some((_, u)) = b.units.get(&key) else {
                return Err(format!("node {i}: a check of {name}, which has no unit"));
            };
            if u.restart_owed {
                return Err(format!(
                    "node {i}: {name} was checked again before the restart its failed checks owe"
                ));
            }
            let answers = u.active == Some(myco_core::executor::UnitHealth::Running) && !u.sick;
            let latency_ms = if answers {
                1 + self.rng.below(20)
            } else {
                timeout_ms
            };
            self.health_checks += 1;
            b.checks.push(CheckJob {
                token: issued.token,
                key,
                digest: u.digest,
                done_at: now + latency_ms,
                passed: answers,
            });
        }
        Ok(())
    }
}

/// Counts a check's result against the unit's entry: its `failures` failed in a row owe a
/// restart (invariant 8).
fn count(u: &mut SimUnit, node: &Node, job: &CheckJob, i: usize) -> Result<(), String> {
    if u.digest != job.digest {
        return Ok(());
    }
    if job.passed {
        u.failed_checks = 0;
        return Ok(());
    }
    let slots = node.store().slots();
    let Ok(at) = slots.binary_search_by_key(&job.key, |s| s.key_hash) else {
        return Ok(());
    };
    let entry = node.store().entry(&slots[at]);
    // The store moved on (a newer version, or a deletion) while the check ran: the unit's count
    // starts over with the new version's unit, or ends with its removal.
    if myco_core::executor::unit_digest(&entry) != job.digest {
        return Ok(());
    }
    let failures = entry
        .decode()
        .body
        .spec
        .and_then(|s| s.health)
        .map(|h| h.failures);
    let Some(failures) = failures else {
        return Err(format!("node {i}: a check of a service that declares none"));
    };
    u.failed_checks += 1;
    if u.failed_checks >= failures {
        u.failed_checks = 0;
        u.restart_owed = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use crate::scenario::Scenario;
    use crate::world::addr;
    use myco_core::dns::Directory;
    use myco_core::executor::{Names, UnitHealth};

    /// A settled run of 5 boxes and 20 services, and the node and key of a running unit.
    fn settled(unit_fault_ppm: u64) -> (Cluster, usize, u64) {
        let mut s = Scenario::standard(3, 5, 20, 0.0);
        s.kill = false;
        s.unit_fault_ppm = unit_fault_ppm;
        let mut c = Cluster::new(&s);
        let report = c.run();
        assert_eq!(report.failure, None);
        let (_, exec) = c.parts();
        let (i, key) = (0..exec.boxes.len())
            .find_map(|i| {
                let units = exec.boxes[i].units.iter();
                let mut running = units.filter(|(_, (_, u))| u.active == Some(UnitHealth::Running));
                running.next().map(|(k, _)| (i, *k))
            })
            .expect("some node runs a unit");
        (c, i, key)
    }

    /// Sick units (drawn at the unit fault rate) go unhealthy, are restarted and come back: the
    /// run settles, which needs every unit read back healthy, after restarting some.
    #[test]
    fn sick_units_are_restarted_and_come_back() {
        let mut s = Scenario::standard(2, 10, 100, 0.5);
        s.unit_fault_ppm = 100_000;
        let report = Cluster::new(&s).run();
        assert_eq!(report.failure, None);
        assert!(report.health_checks > 0);
        assert!(
            report.health_restarts > 0,
            "some unit was sick and restarted"
        );
    }

    /// A unit that stops answering is unhealthy after its entry's failures in a row, and its box
    /// no longer answers it in DNS; checking it again before its owed restart breaks invariant 8.
    #[test]
    fn unhealthy_leaves_dns_and_a_check_before_the_restart_is_refused() {
        let (mut c, i, key) = settled(0);
        let (nodes, exec) = c.parts();
        let node = &nodes[i];
        let name = exec.boxes[i].units[&key].0.clone();
        let answered = |exec: &Executors| {
            let names = Names {
                node,
                executor: Some(&exec.boxes[i].executor),
                own: addr(i),
            };
            let mut own = false;
            names.instances(&name, &mut |a| own |= a == addr(i));
            own
        };
        assert!(answered(exec), "a healthy unit is answered");
        exec.boxes[i].units.get_mut(&key).unwrap().1.sick = true;
        // Only the check lane runs: the restart the executor owes is not carried out.
        let mut now = 400_000;
        while exec.boxes[i].executor.unit(&name).unwrap().health != UnitHealth::Unhealthy {
            exec.step_checks(i, node, now).unwrap();
            now += 100;
            assert!(now < 420_000, "the unit never became unhealthy");
        }
        assert!(!answered(exec), "an unhealthy unit is not answered");
        assert!(exec.boxes[i].units[&key].1.restart_owed);
        exec.boxes[i].units.get_mut(&key).unwrap().1.sick = false;
        let (nodes, exec) = c.parts();
        let mut checked_early = Ok(());
        for t in 0..200 {
            checked_early = checked_early.and(exec.step_checks(i, &nodes[i], now + t * 100));
        }
        assert!(
            checked_early.is_ok(),
            "the executor waits for the restart before checking again"
        );
        // The checker itself: on another settled run, a check of a unit said to owe a restart
        // is refused.
        let (mut c, i, key) = settled(0);
        let (nodes, exec) = c.parts();
        exec.boxes[i].units.get_mut(&key).unwrap().1.restart_owed = true;
        let mut refused = false;
        for t in 0..400 {
            refused |= exec.step_checks(i, &nodes[i], 400_000 + t * 100).is_err();
        }
        assert!(refused, "a check before an owed restart is a violation");
    }
}
