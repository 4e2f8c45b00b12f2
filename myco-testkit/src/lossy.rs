//! A cluster of real daemons on loopback under real packet loss (`loss::Loss`): it forms without
//! loss, then, with the loss on, takes deploys until every node lists them all, and replaces a
//! box killed with SIGKILL. Shared by the root-only test that asserts the outcomes
//! (`tests/tests/lossy.rs`) and `make bench-loss`, which prints the times next to MycoSim's.

use crate::cluster::member_event;
use crate::loss::Loss;
use crate::{wait_until, Cluster, Daemon, NodeOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Formation happens before the loss is switched on.
const FORM: Duration = Duration::from_secs(120);
/// Generous: at 50% loss on a busy two-core CI machine; the figures are the measured times.
const CONVERGE: Duration = Duration::from_secs(300);
const REPLACE: Duration = Duration::from_secs(120);

/// What to run.
pub struct Scenario {
    pub nodes: usize,
    pub services: usize,
    pub loss_percent: u8,
}

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// From the first deploy until every node lists every service.
    pub converge: Duration,
    /// From the SIGKILL until every live node lists the killed box dead.
    pub declared_dead: Duration,
    /// From the SIGKILL until every live node places the killed box's services elsewhere.
    pub replaced: Duration,
    /// Services that were placed on the killed box.
    pub moved: usize,
    /// Members other than the killed box that some node declared dead.
    pub false_dead: usize,
    /// Datagrams the loss rule dropped.
    pub dropped: u64,
}

/// Runs `s` in a cluster named `test`; panics (with the daemons' logs) if it does not converge or
/// replace within the generous bounds.
pub fn run(test: &str, s: &Scenario) -> Measured {
    let mut c = Cluster::new(test);
    for _ in 0..s.nodes {
        c.add(NodeOptions::default());
    }
    c.start_all();
    wait_formed(&c, FORM);
    let loss = Loss::udp_to(&c.network(), s.loss_percent);
    let converge = deploy_all(&c, s.services);
    let death = kill_one(&mut c, REPLACE);
    Measured {
        converge,
        declared_dead: death.declared_dead,
        replaced: death.replaced,
        moved: death.moved,
        false_dead: declared_dead_besides(&c, &death.victim),
        dropped: loss.dropped(),
    }
}

/// One box killed and replaced (`kill_one`).
pub struct Death {
    pub victim: String,
    /// From the SIGKILL until every live node lists the killed box dead.
    pub declared_dead: Duration,
    /// From the SIGKILL until every live node places the killed box's services elsewhere.
    pub replaced: Duration,
    /// Services that were placed on the killed box.
    pub moved: usize,
}

/// SIGKILLs the live box the first live node places the most services on, and times until
/// every other live node lists it dead and places its services elsewhere; panics (naming the
/// wait) past `bound` for either.
pub fn kill_one(c: &mut Cluster, bound: Duration) -> Death {
    let observer = c.daemons.iter().find(|d| d.started()).expect("a live box");
    let (victim, moved) = victim(observer);
    let ids = c.ids();
    let index = ids.iter().position(|id| *id == victim).expect("a member");
    c.daemons[index].kill();
    let killed = Instant::now();
    let live: Vec<&Daemon> = c.daemons.iter().filter(|d| d.started()).collect();
    let dead = "every live node lists the killed box dead";
    wait_until(bound, dead, || {
        live.iter()
            .all(|d| d.state_of(&victim).as_deref() == Some("dead"))
    });
    let declared_dead = killed.elapsed();
    let elsewhere = "every live node places the killed box's services elsewhere";
    wait_until(bound, elsewhere, || {
        live.iter()
            .all(|d| placements(d).iter().all(|(_, on)| !on.contains(&victim)))
    });
    Death {
        victim,
        declared_dead,
        replaced: killed.elapsed(),
        moved,
    }
}

/// Deploys `count` services, spread over the nodes, and waits until every node lists them all.
pub fn deploy_all(c: &Cluster, count: usize) -> Duration {
    let start = Instant::now();
    for i in 0..count {
        let text = format!(r#"{{"name": "s{i}", "exec": "/usr/bin/true"}}"#);
        let manifest = c.write(&format!("s{i}.json"), &text);
        let answer = c.deploy(i % c.daemons.len(), &manifest);
        assert_eq!(answer["outcome"], "applied", "deploy s{i}: {answer}");
    }
    let all = format!("every node lists all {count} services");
    wait_until(CONVERGE, &all, || {
        c.daemons.iter().all(|d| d.services().len() == count)
    });
    start.elapsed()
}

/// Waits (at most `within`, else panics) until every node of `c` lists every other alive.
pub fn wait_formed(c: &Cluster, within: Duration) {
    let others = c.daemons.len() - 1;
    wait_until(within, "every node lists every other alive", || {
        c.daemons.iter().all(|d| alive(d) == others)
    });
}

/// Members `d` lists alive, itself left out.
fn alive(d: &Daemon) -> usize {
    d.nodes()
        .iter()
        .skip(1)
        .filter(|(_, s)| s == "alive")
        .count()
}

/// Each service `d` lists, with the ids of the boxes it places it on.
fn placements(d: &Daemon) -> Vec<(String, Vec<String>)> {
    let json = d.get_json("/services");
    let rows = json["services"].as_array().cloned().unwrap_or_default();
    rows.iter().map(placement).collect()
}

fn placement(row: &Value) -> (String, Vec<String>) {
    let on = row["placed_on"].as_array().cloned().unwrap_or_default();
    let ids = on
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_string));
    (
        row["name"].as_str().unwrap_or("").to_string(),
        ids.collect(),
    )
}

/// The box (not `observer` itself) that `observer` places the most services on, and how many.
fn victim(observer: &Daemon) -> (String, usize) {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (_, on) in placements(observer) {
        for id in on {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts.remove(&observer.key.node_id);
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("services are placed on the other boxes")
}

/// Distinct members other than `victim` that any node logged as `member ID is dead`.
pub fn declared_dead_besides(c: &Cluster, victim: &str) -> usize {
    declared_dead_other_than(c, &[victim])
}

/// Distinct members not in `victims` that any node logged as `member ID is dead`.
pub fn declared_dead_other_than(c: &Cluster, victims: &[&str]) -> usize {
    let mut named = std::collections::BTreeSet::new();
    for d in &c.daemons {
        for (id, what) in d.log_text().lines().filter_map(member_event) {
            if what == "is dead" && !victims.contains(&id) {
                named.insert(id.to_string());
            }
        }
    }
    named.len()
}
