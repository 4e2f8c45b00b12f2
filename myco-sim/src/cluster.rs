//! The cluster runner: boots N core nodes on the simulated network, submits the scenario's
//! operations, injects faults during a safety phase, lifts them for a liveness phase, and checks
//! invariants until every live node holds the same state.
//!
//! Time is discrete (`TICK_MS`); nothing reads the OS clock or OS randomness, so a seed replays
//! exactly, and the trace hash proves it.

use crate::alloc;
use crate::disk::SimDisk;
use crate::net::{Faults, Net};
use crate::scenario::{operations, Op, Scenario, OPS_START_MS};
use myco_core::config::{ARENA_BYTES, FRAME_BYTES, GOSSIP_INTERVAL_MS, SERVICES_MAX};
use myco_core::hash::{digest, DOMAIN_ENTRY};
use myco_core::node::Counters;
use myco_core::node::{Storage, Submitted};
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;
use myco_core::schema::entry::Entry;
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
    pub acknowledged_deploys: usize,
    pub acknowledged_deploys_lost: usize,
    pub wal_truncations: u64,
    pub checkpoints: u64,
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

/// Operator submissions waiting for their append to be durable.
pub struct Acks {
    /// (node, ticket, operation index)
    pending: Vec<(u16, u64, usize)>,
    /// The node that acknowledged each operation, if one did.
    acked: Vec<Option<u16>>,
}

struct NetSink<'a> {
    net: &'a mut Net,
    disk: &'a mut SimDisk,
    acks: &'a mut Acks,
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
        match event {
            Event::MemberDead(id) => *self.trace = mix(*self.trace, id),
            Event::Durable { ticket } => {
                let (from, acked) = (self.from, &mut self.acks.acked);
                self.acks.pending.retain(|&(n, t, op)| {
                    let done = n == from && t <= ticket;
                    if done {
                        acked[op] = Some(from);
                    }
                    !done
                });
            }
            _ => {}
        }
    }
    fn append(&mut self, entry: &[u8], ticket: u64) {
        self.disk.append(entry, ticket);
    }
    fn checkpoint(&mut self) {
        self.disk.checkpoint_requested = true;
    }
}

type BigStore = Store<SERVICES_MAX, ARENA_BYTES>;

struct Crash {
    node: usize,
    down: u64,
    up: u64,
    wipe: bool,
}

pub struct Cluster {
    s: Scenario,
    nodes: Vec<Box<Node>>,
    up: Vec<bool>,
    disks: Vec<SimDisk>,
    acks: Acks,
    wal_truncations: u64,
    checkpoints: u64,
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
        wal_checkpoint_bytes: s.wal_checkpoint_bytes,
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
            disks: (0..s.nodes).map(|_| SimDisk::new()).collect(),
            acks: Acks {
                pending: Vec::new(),
                acked: Vec::new(),
            },
            wal_truncations: 0,
            checkpoints: 0,
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
                    disk: &mut self.disks[to],
                    acks: &mut self.acks,
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
                    disk: &mut self.disks[i],
                    acks: &mut self.acks,
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
        self.acks.pending.reserve(ops.len());
        self.acks.acked = vec![None; ops.len()];
        let allocations_at_boot = alloc::allocations();
        let expected = (self.s.crashes == 0).then(|| reference.state_hash());
        while self.now <= self.s.time_ms_max {
            // A crash comes before this tick's sync, so the last tick's appends are at risk.
            self.apply_faults(&crashes, partition, live_at);
            self.sync_disks();
            while next_op < ops.len() && ops[next_op].at_ms <= self.now {
                self.submit(&ops[next_op], next_op);
                next_op += 1;
            }
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
        (
            report.acknowledged_deploys,
            report.acknowledged_deploys_lost,
        ) = self.acknowledged_lost(&ops);
        report.wal_truncations = self.wal_truncations;
        report.checkpoints = self.checkpoints;
        self.finish(&mut report, first_op, &reference)
    }

    /// Runs `ms` more with no operations and no faults; returns frames sent per node per round.
    pub fn frames_at_rest(&mut self, ms: u64) -> f64 {
        let before: u64 = self.nodes.iter().map(|n| n.counters().frames_out).sum();
        let end = self.now + ms;
        while self.now < end {
            self.now += TICK_MS;
            self.sync_disks();
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
        if report.acknowledged_deploys_lost > 0 {
            let why = format!(
                "{} acknowledged deploys lost",
                report.acknowledged_deploys_lost
            );
            return Some(Failure::Safety(why));
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

    fn submit(&mut self, op: &Op, op_index: usize) {
        // An operator talks to a live box: if the chosen one is down, the next live one.
        let n = self.nodes.len();
        let Some(i) = (0..n).map(|k| (op.node + k) % n).find(|&i| self.up[i]) else {
            return;
        };
        self.trace = mix(self.trace, op.at_ms ^ i as u64);
        let mut sink = NetSink {
            net: &mut self.net,
            disk: &mut self.disks[i],
            acks: &mut self.acks,
            from: i as u16,
            now: self.now,
            trace: &mut self.trace,
            nodes: self.s.nodes,
        };
        match self.nodes[i].submit(Instant(self.now), &op.entry, &mut sink) {
            Ok(Submitted {
                ticket: Some(t), ..
            }) => self.acks.pending.push((i as u16, t, op_index)),
            Ok(Submitted { ticket: None, .. }) => {}
            // Capacity refusals are legitimate; the reference store refused the same entry.
            Err(e) => self.trace = mix(self.trace, e.message().len() as u64),
        }
    }

    /// Completes every live node's pending appends and requested checkpoints, like fdatasync
    /// returning; a crash before this drops them.
    fn sync_disks(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.up[i] {
                continue;
            }
            let disk = &mut self.disks[i];
            let checkpointed = disk.checkpoint_requested;
            self.checkpoints += u64::from(checkpointed);
            let durable = if checkpointed {
                disk.checkpoint(self.nodes[i].store())
            } else {
                disk.sync()
            };
            let mut sink = NetSink {
                net: &mut self.net,
                disk: &mut self.disks[i],
                acks: &mut self.acks,
                from: i as u16,
                now: self.now,
                trace: &mut self.trace,
                nodes: self.s.nodes,
            };
            let now = Instant(self.now);
            if let Some(ticket) = durable {
                self.nodes[i].handle_storage(now, Storage::Durable { ticket }, &mut sink);
            }
            if checkpointed {
                self.nodes[i].handle_storage(now, Storage::Checkpointed, &mut sink);
            }
        }
    }

    /// Each crash, all within the safety phase. One in four loses its disk too (a replaced box):
    /// the node restarts empty and must resync everything from its peers.
    fn crash_schedule(&mut self, live_at: u64) -> Vec<Crash> {
        let mut v = Vec::with_capacity(self.s.crashes);
        for _ in 0..self.s.crashes {
            let node = self.rng.below(self.s.nodes as u64) as usize;
            let down = self.rng.below(live_at / TICK_MS) * TICK_MS;
            let up = down + self.rng.below((live_at - down) / TICK_MS + 1) * TICK_MS;
            v.push(Crash {
                node,
                down,
                up,
                wipe: self.rng.chance(1, 4),
            });
        }
        v
    }

    fn partition_schedule(&mut self, live_at: u64) -> Option<(u64, u64)> {
        self.s.partitions.then(|| {
            let at = self.rng.below(live_at / TICK_MS) * TICK_MS;
            (at, self.rng.next_u64())
        })
    }

    fn crash(&mut self, i: usize, wipe: bool) {
        self.up[i] = false;
        self.disks[i].crash(&mut self.rng);
        if wipe {
            self.disks[i].wipe();
            // An acknowledgement promises durability on that box's disk; the disk is gone.
            for a in self.acks.acked.iter_mut().filter(|a| **a == Some(i as u16)) {
                *a = None;
            }
        }
        // Whatever was not durable when the power went is not acknowledged, ever.
        self.acks.pending.retain(|&(n, _, _)| usize::from(n) != i);
    }

    /// A crashed node boots from its disk: snapshot, then log up to the last good record.
    fn restart(&mut self, i: usize) {
        *self.nodes[i] = boot(i, &self.s, self.now, self.now);
        let node = &mut self.nodes[i];
        let recovery = self.disks[i].recover(|e| {
            node.restore(e)
                .expect("a node's own log holds only entries it accepted");
        });
        self.wal_truncations += u64::from(recovery.truncated);
        let mut sink = NetSink {
            net: &mut self.net,
            disk: &mut self.disks[i],
            acks: &mut self.acks,
            from: i as u16,
            now: self.now,
            trace: &mut self.trace,
            nodes: self.s.nodes,
        };
        let done = Storage::Recovered {
            wal_bytes: recovery.wal_bytes,
            truncated: recovery.truncated,
        };
        self.nodes[i].handle_storage(Instant(self.now), done, &mut sink);
        self.up[i] = true;
    }

    fn apply_faults(&mut self, crashes: &[Crash], partition: Option<(u64, u64)>, live_at: u64) {
        for c in crashes {
            if self.now == c.down && self.up[c.node] {
                self.crash(c.node, c.wipe);
            } else if self.now == c.up && !self.up[c.node] {
                self.restart(c.node);
            }
        }
        if let Some((at, mask)) = partition {
            if self.now == at {
                for i in 0..self.s.nodes {
                    self.net.side[i] = (mask >> (i % 64) & 1) as u8;
                }
            }
        }
        if self.now == live_at {
            self.net.side.iter_mut().for_each(|s| *s = 0);
            for i in 0..self.nodes.len() {
                if !self.up[i] {
                    self.restart(i);
                }
            }
        }
    }

    /// Acknowledged operations whose key no longer holds that version or a newer one.
    fn acknowledged_lost(&self, ops: &[Op]) -> (usize, usize) {
        let Some(i) = (0..self.nodes.len()).find(|&i| self.up[i]) else {
            return (0, 0);
        };
        let store = self.nodes[i].store();
        let mut acked = 0;
        let mut lost = 0;
        for (op, _) in ops
            .iter()
            .zip(&self.acks.acked)
            .filter(|(_, a)| a.is_some())
        {
            acked += 1;
            let e = Entry::decode(&op.entry).expect("simulated entries are valid");
            let held = store.get_by_name(e.body.name).map(|h| h.body.version);
            lost += usize::from(held.is_none_or(|v| v < e.body.version));
        }
        (acked, lost)
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

    /// Nodes crashed during the safety phase restart from their disks and resync: the cluster
    /// converges to one state again.
    #[test]
    fn crashed_nodes_recover_and_resync() {
        let mut s = Scenario::standard(5, 10, 200, 0.2);
        s.crashes = 3;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.distinct_state_hashes, 1);
    }

    /// Power loss at random points (unsynced writes dropped, torn or bit-flipped) never loses a
    /// deploy that was acknowledged, also when logs are compacted into snapshots all the time.
    #[test]
    fn acknowledged_deploys_survive_crashes() {
        let mut s = Scenario::standard(11, 15, 300, 0.2);
        s.updates = 60;
        s.deletes = 40;
        s.crashes = 8;
        s.wal_checkpoint_bytes = 8_000;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.acknowledged_deploys > 300);
        assert_eq!(r.acknowledged_deploys_lost, 0);
        assert!(r.checkpoints > 0);
    }
}
