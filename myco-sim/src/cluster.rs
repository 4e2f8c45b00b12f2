//! The cluster runner: boots N core nodes on the simulated network, submits the scenario's
//! operations, injects faults during a safety phase, lifts them for a liveness phase, and checks
//! invariants until every live node holds the same state.
//!
//! Time is discrete (`TICK_MS`); nothing reads the OS clock or OS randomness, so a seed replays
//! exactly, and the trace hash proves it.

use crate::alloc;
use crate::net::{Faults, Net};
use crate::scenario::{operations, Scenario, OPS_START_MS};
use myco_core::config::{ARENA_BYTES, FRAME_BYTES, GOSSIP_INTERVAL_MS, SERVICES_MAX};
use myco_core::hash::{digest, DOMAIN_ENTRY};
use myco_core::node::Counters;
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;
use myco_core::schema::message::MemberMeta;
use myco_core::state::store::Store;
use myco_core::{Event, Instant, Node, NodeConfig, PeerAddr, Sink};
use std::collections::HashSet;

pub const TICK_MS: u64 = 10;
/// Faults stop this long after the last operation; then the liveness phase begins.
pub const SAFETY_MS: u64 = 5_000;
const NET_SLOTS: usize = 1 << 15;

/// Why a run failed; each class has its own exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not converged within the time limit.
    Liveness(String),
    /// An invariant broke.
    Safety(String),
    /// The core allocated on the heap after boot.
    Allocation(u64),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Liveness(_) => 1,
            Failure::Safety(_) => 2,
            Failure::Allocation(_) => 3,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub converged: bool,
    pub rounds: u64,
    pub ticks: u64,
    pub time_ms: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_lost: u64,
    pub frames_congested: u64,
    pub rumor_frames_dropped: u64,
    pub distinct_state_hashes: usize,
    pub node_state_bytes: usize,
    pub heap_allocations_after_boot: u64,
    pub trace_hash: u64,
    pub entries: usize,
    pub failure: Option<Failure>,
}

pub fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4([127, 77, (i >> 8) as u8, i as u8], 7946)
}

fn index_of(a: PeerAddr) -> Option<u16> {
    let o = a.as_v4()?;
    (o[0] == 127 && o[1] == 77 && a.port == 7946).then(|| u16::from_be_bytes([o[2], o[3]]))
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

struct NetSink<'a> {
    net: &'a mut Net,
    from: u16,
    now: u64,
    trace: &'a mut u64,
    nodes: usize,
}

impl Sink for NetSink<'_> {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        // Frames to addresses outside the cluster (a node's stale idea of a peer) are lost.
        let Some(to) = index_of(to).filter(|&t| usize::from(t) < self.nodes) else {
            return;
        };
        *self.trace = mix(
            *self.trace,
            self.now ^ (u64::from(self.from) << 32) ^ (u64::from(to) << 48),
        );
        self.net.send(self.now, self.from, to, frame);
    }
    fn event(&mut self, event: Event) {
        if let Event::MemberDead(id) = event {
            *self.trace = mix(*self.trace, id);
        }
    }
}

type BigStore = Store<SERVICES_MAX, ARENA_BYTES>;

pub struct Cluster {
    s: Scenario,
    nodes: Vec<Box<Node>>,
    up: Vec<bool>,
    net: Net,
    rng: Prng,
    now: u64,
    trace: u64,
    /// Digests of every entry an operator submitted: no node may hold anything else.
    submitted: HashSet<u64>,
}

fn boot(i: usize, s: &Scenario, incarnation_seed: u64, now: u64) -> Node {
    let join = [addr(0), addr((i + 1) % s.nodes)];
    let meta = MemberMeta {
        arch: Arch::X86_64,
        zone: 0,
        gpu: false,
    };
    let config = NodeConfig {
        id: i as u64 + 1,
        meta,
        seed: s.seed ^ incarnation_seed ^ (i as u64) << 20,
        join: &join,
    };
    Node::new(&config, Instant(now))
}

impl Cluster {
    pub fn new(s: &Scenario) -> Cluster {
        let faults = Faults {
            loss_ppm: s.loss_ppm,
            duplicate_ppm: s.duplicate_ppm,
            latency_ms_min: 1,
            latency_ms_max: s.latency_ms_max.max(1),
        };
        Cluster {
            s: s.clone(),
            nodes: (0..s.nodes).map(|i| Box::new(boot(i, s, 0, 0))).collect(),
            up: vec![true; s.nodes],
            net: Net::new(s.nodes, faults, s.seed ^ 0x004e_4554, NET_SLOTS),
            rng: Prng::new(s.seed ^ 0x4641_554c),
            now: 0,
            trace: s.seed,
            submitted: HashSet::with_capacity(s.services + s.updates + s.deletes + 1),
        }
    }

    fn deliver(&mut self) {
        while let Some(d) = self.net.pop(self.now) {
            let to = usize::from(d.to);
            if self.up[to] {
                let frame = *self.net.frame(&d);
                let mut sink = NetSink {
                    net: &mut self.net,
                    from: d.to,
                    now: self.now,
                    trace: &mut self.trace,
                    nodes: self.s.nodes,
                };
                self.nodes[to].handle_datagram(
                    Instant(self.now),
                    addr(usize::from(d.from)),
                    &frame,
                    &mut sink,
                );
            }
            self.net.release(d);
        }
    }

    fn tick_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            if self.up[i] {
                let mut sink = NetSink {
                    net: &mut self.net,
                    from: i as u16,
                    now: self.now,
                    trace: &mut self.trace,
                    nodes: self.s.nodes,
                };
                self.nodes[i].handle_tick(Instant(self.now), &mut sink);
            }
        }
    }

    /// Distinct state hashes among live nodes.
    fn distinct_hashes(&self) -> usize {
        let mut hashes: Vec<u64> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if self.up[i] && !hashes.contains(&n.state_hash()) {
                hashes.push(n.state_hash());
                if hashes.len() > 1 {
                    break;
                }
            }
        }
        hashes.len()
    }

    fn converged_to(&self, expected: Option<u64>) -> bool {
        let first = self
            .nodes
            .iter()
            .zip(&self.up)
            .find(|(_, &up)| up)
            .map(|(n, _)| n.state_hash());
        let Some(first) = first else { return false };
        expected.is_none_or(|e| e == first)
            && self
                .nodes
                .iter()
                .zip(&self.up)
                .all(|(n, &up)| !up || n.state_hash() == first)
    }

    /// Safety: every node's digests are consistent and it holds only submitted entries.
    fn check_safety(&self) -> Result<(), Failure> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.store().check_digests() {
                return Err(Failure::Safety(format!(
                    "node {i}: Merkle digests disagree with entries"
                )));
            }
            for slot in n.store().slots() {
                if !self
                    .submitted
                    .contains(&digest(DOMAIN_ENTRY, n.store().bytes(slot)))
                {
                    return Err(Failure::Safety(format!(
                        "node {i}: holds an entry no operator submitted"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn run(&mut self) -> Report {
        let ops = operations(&self.s);
        let mut reference = Box::new(BigStore::new());
        for op in &ops {
            self.submitted.insert(digest(DOMAIN_ENTRY, &op.entry));
            // Submitted entries that a full table would refuse are refused everywhere alike.
            let _ = reference.merge(&op.entry);
        }
        let ops_end = OPS_START_MS + self.s.ops_window_ms * 2 + TICK_MS;
        // Phase changes happen on tick boundaries.
        let live_at = (ops_end + SAFETY_MS) / TICK_MS * TICK_MS;
        let crashes = self.crash_schedule(live_at);
        let partition = self.partition_schedule(live_at);
        let first_op = ops.first().map_or(0, |o| o.at_ms);
        let mut next_op = 0;
        let mut report = Report {
            node_state_bytes: std::mem::size_of::<Node>(),
            ..Report::default()
        };
        let allocations_at_boot = alloc::allocations();
        let expected = (self.s.crashes == 0).then(|| reference.state_hash());
        while self.now <= self.s.time_ms_max {
            while next_op < ops.len() && ops[next_op].at_ms <= self.now {
                self.submit(&ops[next_op]);
                next_op += 1;
            }
            self.apply_faults(&crashes, partition, live_at);
            self.deliver();
            self.tick_nodes();
            let faults_over = self.now >= live_at || (self.s.crashes == 0 && !self.s.partitions);
            if next_op == ops.len() && faults_over && self.converged_to(expected) {
                report.converged = true;
                break;
            }
            self.now += TICK_MS;
        }
        report.heap_allocations_after_boot = alloc::allocations() - allocations_at_boot;
        self.finish(&mut report, first_op, &reference)
    }

    /// Runs `ms` more with no operations and no faults; returns frames sent per node per round.
    pub fn frames_at_rest(&mut self, ms: u64) -> f64 {
        let before: u64 = self.nodes.iter().map(|n| n.counters().frames_out).sum();
        let end = self.now + ms;
        while self.now < end {
            self.now += TICK_MS;
            self.deliver();
            self.tick_nodes();
        }
        let after: u64 = self.nodes.iter().map(|n| n.counters().frames_out).sum();
        (after - before) as f64 / self.nodes.len() as f64 / (ms / GOSSIP_INTERVAL_MS) as f64
    }

    fn finish(&mut self, report: &mut Report, first_op: u64, reference: &BigStore) -> Report {
        let totals = self.nodes.iter().fold(Counters::default(), |mut t, n| {
            let c = n.counters();
            t.frames_out += c.frames_out;
            t.bytes_out += c.bytes_out;
            t
        });
        report.frames_sent = totals.frames_out;
        report.bytes_sent = totals.bytes_out;
        report.frames_lost = self.net.lost;
        report.frames_congested = self.net.congested;
        report.rumor_frames_dropped = self.nodes.iter().map(|n| n.rumors_dropped()).sum();
        report.time_ms = self.now;
        report.ticks = self.now / TICK_MS;
        report.rounds = self
            .now
            .saturating_sub(first_op)
            .div_ceil(GOSSIP_INTERVAL_MS);
        report.distinct_state_hashes = self.distinct_hashes();
        report.entries = self.nodes[0].store().len();
        for (i, n) in self.nodes.iter().enumerate() {
            self.trace = mix(self.trace, n.state_hash() ^ i as u64);
        }
        report.trace_hash = self.trace;
        report.failure = self.verdict(report, reference);
        report.clone()
    }

    fn verdict(&self, report: &Report, reference: &BigStore) -> Option<Failure> {
        if let Err(f) = self.check_safety() {
            return Some(f);
        }
        if report.heap_allocations_after_boot > 0 {
            return Some(Failure::Allocation(report.heap_allocations_after_boot));
        }
        if !report.converged {
            let why = format!(
                "{} distinct state hashes after {} ms (reference holds {} entries, node 0 {})",
                report.distinct_state_hashes,
                report.time_ms,
                reference.len(),
                self.nodes[0].store().len()
            );
            return Some(Failure::Liveness(why));
        }
        None
    }

    fn submit(&mut self, op: &crate::scenario::Op) {
        // An operator talks to a live box: if the chosen one is down, the next live one.
        let n = self.nodes.len();
        let Some(i) = (0..n).map(|k| (op.node + k) % n).find(|&i| self.up[i]) else {
            return;
        };
        self.trace = mix(self.trace, op.at_ms ^ i as u64);
        if let Err(e) = self.nodes[i].submit(Instant(self.now), &op.entry) {
            // Capacity refusals are legitimate; the reference store refused the same entry.
            self.trace = mix(self.trace, e.message().len() as u64);
        }
    }

    /// (node, down_at, up_at) for each crash; nodes restart empty when the liveness phase starts.
    fn crash_schedule(&mut self, live_at: u64) -> Vec<(usize, u64)> {
        (0..self.s.crashes)
            .map(|_| {
                (
                    self.rng.below(self.s.nodes as u64) as usize,
                    self.rng.below(live_at),
                )
            })
            .collect()
    }

    fn partition_schedule(&mut self, live_at: u64) -> Option<(u64, u64)> {
        self.s.partitions.then(|| {
            let at = self.rng.below(live_at);
            (at, self.rng.next_u64())
        })
    }

    fn apply_faults(
        &mut self,
        crashes: &[(usize, u64)],
        partition: Option<(u64, u64)>,
        live_at: u64,
    ) {
        for &(node, at) in crashes {
            if self.now == at - at % TICK_MS && self.up[node] {
                self.up[node] = false;
            }
        }
        if let Some((at, mask)) = partition {
            if self.now == at - at % TICK_MS {
                for i in 0..self.s.nodes {
                    self.net.side[i] = (mask >> (i % 64) & 1) as u8;
                }
            }
        }
        if self.now == live_at {
            self.net.side.iter_mut().for_each(|s| *s = 0);
            for i in 0..self.nodes.len() {
                if !self.up[i] {
                    *self.nodes[i] = boot(i, &self.s, self.now, self.now);
                    self.up[i] = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &Scenario) -> Report {
        Cluster::new(s).run()
    }

    fn faulty(seed: u64) -> Scenario {
        let mut s = Scenario::standard(seed, 12, 60, 0.3);
        s.updates = 10;
        s.deletes = 10;
        s.duplicate_ppm = 50_000;
        s.partitions = true;
        s.crashes = 2;
        s
    }

    /// The same seed gives the same trace hash, whatever ran before; another seed differs.
    #[test]
    fn same_seed_same_trace_hash() {
        let a = run(&faulty(7));
        let b = run(&faulty(7));
        let c = run(&faulty(8));
        assert_eq!(a.failure, None);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_ne!(a.trace_hash, c.trace_hash);
    }

    /// The standard scenario: 50 nodes, 1000 services, 50% loss converge to one state
    /// hash holding every deploy, in a bounded node and with no heap allocation after boot.
    #[test]
    fn standard_scenario_converges_without_allocating() {
        let r = run(&Scenario::standard(1, 50, 1000, 0.5));
        assert_eq!(r.failure, None);
        assert!(r.converged);
        assert_eq!(r.distinct_state_hashes, 1);
        assert_eq!(r.entries, 1000);
        assert!(r.node_state_bytes <= 512 * 1024);
        assert_eq!(r.heap_allocations_after_boot, 0);
    }

    /// Regression (gauntlet seed 31): after a partition heals, each side believes the other
    /// dead; probing the dead must bring them back together.
    #[test]
    fn healed_partition_reconverges() {
        let mut s = Scenario::standard(31, 18, 92, 0.179_472);
        s.updates = 4;
        s.deletes = 3;
        s.duplicate_ppm = 49_234;
        s.latency_ms_max = 21;
        s.partitions = true;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
    }

    /// A converged cluster sends only probes, acks and the periodic membership page: about one
    /// frame per node per round, and no anti-entropy.
    #[test]
    fn cluster_at_rest_stays_quiet() {
        let mut c = Cluster::new(&Scenario::standard(3, 20, 50, 0.0));
        assert_eq!(c.run().failure, None);
        let frames = c.frames_at_rest(20_000);
        assert!(frames < 1.5, "{frames} frames per node per round at rest");
    }

    /// Nodes crashed during the safety phase restart empty and resync: the cluster converges to
    /// one state again.
    #[test]
    fn crashed_nodes_resync_from_empty() {
        let mut s = Scenario::standard(5, 10, 200, 0.2);
        s.crashes = 3;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.distinct_state_hashes, 1);
    }
}
