//! The cluster runner: boots N core nodes on the simulated network, submits the scenario's
//! operations, injects faults during a safety phase, lifts them for a liveness phase, and checks
//! invariants until every live node holds the same state. Then it waits for membership to agree,
//! which the placement invariant (`invariants/placement.rs`, checked whenever the cluster has
//! converged) needs, and, unless the scenario says otherwise, kills one node that runs services and
//! counts the gossip rounds until every live node places those services elsewhere. The faults
//! themselves (when to crash, restart, partition, kill) are `cluster/faults.rs`.
//!
//! Time is discrete (`TICK_MS`); nothing reads the OS clock or OS randomness, so a seed replays
//! exactly, and the trace hash proves it.

use crate::adversary::Adversary;
use crate::alloc;
use crate::executors::Executors;
use crate::ids::{bridge_capable, certify, Identities, BRIDGE_CAPABLE_PER_ZONE};
use crate::invariants::placement::Watch;
use crate::net::Faults;
use crate::scenario::{operations, Op, Scenario, OPS_START_MS};
use crate::world::{addr, mix, seen_at, World};
use faults::FaultPlan;

mod faults;
use myco_core::config::{Profile, ARENA_BYTES, SERVICES_MAX};
use myco_core::config::{BRIDGE_SEEDS_MAX, REVOCATION_BYTES_MAX};
use myco_core::crypto::revocation::encode_revocation;
use myco_core::executor::unit_digest;
use myco_core::hash::{digest, DOMAIN_ENTRY};
use myco_core::node::Counters;
use myco_core::node::{Storage, Submitted};
use myco_core::random::Prng;
use myco_core::schema::entry::Entry;
use myco_core::schema::frame::Kind;
use myco_core::state::store::Store;
use myco_core::{Instant, Node, NodeConfig, PeerAddr};

pub const TICK_MS: u64 = 10;
/// Faults stop this long after the last operation; then the liveness phase begins.
pub const SAFETY_MS: u64 = 5_000;
/// After the state converges, membership must converge and the placement invariant hold within
/// this long (on `lan`; see [`slowness`]).
pub const SETTLE_MS_MAX: u64 = 180_000;
/// A killed node's services must be placed elsewhere within this long (on `lan`): far above the
/// bound of `docs/algorithm.md` section 7 (detection plus the longest suspicion plus its spread).
pub const REPLACE_MS_MAX: u64 = 180_000;

/// How many times `lan`'s the liveness deadlines of a run on `profile` are (the scenario's
/// `time_ms_max`, [`SETTLE_MS_MAX`], [`REPLACE_MS_MAX`]): failure detection and the repair of a
/// status a peer missed (pings and acks compare status versions, `docs/algorithm.md` section 8)
/// both go at the pace of the probe period, 4 times `lan`'s on `wan` and 12 times on `metered`.
pub fn slowness(profile: &Profile) -> u64 {
    profile
        .probe_interval_ms
        .div_ceil(Profile::LAN.probe_interval_ms)
        .max(1)
}
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
    pub adversary_frames_sent: u64,
    pub adversary_frames_accepted: u64,
    pub forged_slots_accepted: usize,
    pub refused_frames: u64,
    pub revocation_block: u64,
    /// Security refusals summed over honest nodes, by `crypto::Refusal::index()`.
    pub refusals: [u64; 8],
    /// Full placement-invariant checks run (one per converged state and set of live nodes).
    pub placement_checks: u64,
    /// Settle checks of the executor invariants passed (enabled units and DNS answers).
    pub executor_checks: u64,
    /// Commands the executors ran (file writes and deletes, `systemctl`).
    pub executor_commands: u64,
    /// Health checks the boxes ran, and restarts of units their checks found unhealthy (as the
    /// executors count them; a crashed node's count starts again).
    pub health_checks: u64,
    pub health_restarts: u64,
    /// Units written for a scaled version (one that changes nothing they run), not restarted.
    pub units_in_place: u64,
    /// Flake builds made on their box, and substituted from a peer's cache; builds made on their
    /// box while an up peer held the version (`executors/p2p.rs`).
    pub builds_local: u64,
    pub builds_fetched: u64,
    pub builds_local_held_by_peer: u64,
    /// Builds fetched by boxes started `--build remote`, and builds builders ran for peers'
    /// requests (`executors/p2p.rs`).
    pub builds_remote: u64,
    pub builds_for_peers: u64,
    /// Of those, builds for another system than the builder's own (x86_64 builders for aarch64
    /// boxes).
    pub builds_for_other_systems: u64,
    /// Invariant 12's holds seen at settle checks (remote-only first-wave boxes holding a bad
    /// flake version), each counted at every check.
    pub remote_canary_holds: u64,
    /// The node killed once the cluster had converged, and the services it ran.
    pub killed: Option<usize>,
    pub services_replaced: usize,
    /// Gossip rounds from the kill until every live node placed its services elsewhere, with the
    /// invariant holding again.
    pub rounds_to_replace: Option<u64>,
    /// The same in simulated milliseconds: from the kill to the last live node placing its
    /// services elsewhere (detection, the spread of the death, placement).
    pub ms_to_replace: Option<u64>,
    /// Why the placement phase after convergence did not finish, if it did not.
    pub placement_stuck: Option<String>,
    /// Member records in honest nodes' tables of a box of another zone, at the end (any one seen
    /// during the run fails it as a safety failure): must be 0.
    pub member_records_crossing_zones: usize,
    /// Bridge sessions opened and new entries received over them, summed over honest nodes.
    pub bridge_sessions: u64,
    pub bridge_entries: u64,
    /// Bridges of zone 1 killed for good mid-run (`--kill-bridges`), and the exchanges the
    /// surviving boxes of zone 1 started as elected bridges after the kill: their replacements'.
    pub bridges_killed: usize,
    pub replacement_bridge_syncs: u64,
    /// Frames the NAT model dropped (to a box behind NAT from an address it had not sent to
    /// within `NAT_MAPPING_MS`) and frames relays forwarded, summed over honest nodes.
    pub nat_dropped: u64,
    pub relayed_frames: u64,
    /// Honest boxes that concluded by themselves they are behind NAT (`--nat-detect`), as their
    /// counters say at the end (a box restarted since counts afresh).
    pub nat_detected: u64,
    pub failure: Option<Failure>,
}

type BigStore = Store<SERVICES_MAX, ARENA_BYTES>;

pub struct Cluster {
    s: Scenario,
    nodes: Vec<Box<Node>>,
    up: Vec<bool>,
    /// False for the stolen box of an adversary run: it is judged by nobody's standard.
    honest: Vec<bool>,
    adversary: Option<Adversary>,
    /// The RevocationBlock the operator has published.
    block: u64,
    /// When each node receives its new certificate in a rotation.
    recertify_at: Vec<u64>,
    ids: Identities,
    world: World,
    wal_truncations: u64,
    checkpoints: u64,
    rng: Prng,
    now: u64,
    watch: Watch,
    /// The node killed for good once the cluster converged, and when.
    killed: Option<(usize, u64)>,
    /// The bridges killed for good mid-run (`Scenario::kill_bridges`), and the exchanges the
    /// other boxes of their zone had started as bridges by then.
    bridges_killed: Vec<usize>,
    bridge_syncs_at_kill: u64,
    /// The scenario's network faults, restored for the kill after being lifted to settle.
    faults: Faults,
    /// Allocations by the simulator's own kill, not by the nodes.
    kill_allocations: u64,
    /// Every node's core executor and simulated systemd (`executors.rs`).
    exec: Executors,
    /// The first executor invariant that broke.
    exec_failure: Option<String>,
}

/// Where a run stands. After the state converges, loss and duplication are lifted until
/// membership converges and the placement invariant has been checked (`Settling`); then one node
/// that runs services is killed under the scenario's faults (`Replacing`) until every live node
/// places them elsewhere; then faults are lifted again until the invariant holds without it
/// (`Resettling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Converging,
    Settling,
    Replacing { victim: usize, at: u64 },
    Resettling,
    Done,
}

impl Phase {
    /// How long this phase may last in a run `slowness` times slower than `lan`.
    fn time_ms_max(self, slowness: u64) -> u64 {
        slowness
            * match self {
                Phase::Replacing { .. } => REPLACE_MS_MAX,
                _ => SETTLE_MS_MAX,
            }
    }

    /// The liveness failure of a run that ended in this phase.
    fn stuck(self, r: &Report, slowness: u64) -> Option<String> {
        let ms = self.time_ms_max(slowness);
        match self {
            Phase::Converging | Phase::Done => None,
            Phase::Settling => Some(format!(
                "membership did not converge within {ms} ms of the state (faults lifted), so placement was never checked on it"
            )),
            Phase::Replacing { victim, .. } => Some(format!(
                "node {victim} was killed, but its {} services were not placed elsewhere by every live node within {ms} ms",
                r.services_replaced
            )),
            Phase::Resettling => Some(format!(
                "membership did not converge within {ms} ms of the replacement (faults lifted), so placement was never checked without the killed node"
            )),
        }
    }
}

fn boot(
    i: usize,
    s: &Scenario,
    ids: &Identities,
    revocation_block: u64,
    incarnation: u64,
    now: u64,
) -> Node {
    let zones = usize::from(s.zones.max(1));
    // The zone's first node and the next one of the zone (zones are round-robin).
    let next = if i + zones < s.nodes {
        i + zones
    } else {
        i % zones
    };
    let join = [addr(i % zones), addr(next)];
    boot_joining(i, s, ids, (revocation_block, incarnation), now, &join)
}

/// Node `i`'s `--bridge-seed` addresses: for a bridge-capable node, one bridge-capable node of
/// each other zone (up to `BRIDGE_SEEDS_MAX`), a different one for each of its zone's bridges, so
/// seeds of one zone do not all lead to the same box.
pub fn bridge_seeds(i: usize, s: &Scenario) -> Vec<PeerAddr> {
    let zones = usize::from(s.zones);
    if !bridge_capable(i, s.zones) {
        return Vec::new();
    }
    let rank = i / zones;
    (1..zones)
        .filter_map(|d| {
            let z = (i % zones + d) % zones;
            // The pick wraps over the bridge-capable boxes zone z really has: a zone smaller
            // than BRIDGE_CAPABLE_PER_ZONE would otherwise get seeds naming absent boxes, which
            // were dropped, and a zone of one box was then seeded by nobody and seeded nobody
            // (gauntlet seed 55, --nodes 6 --zones 4: zone 2 never heard of).
            let capable = s.nodes.saturating_sub(z).div_ceil(zones);
            let capable = capable.min(BRIDGE_CAPABLE_PER_ZONE);
            (capable > 0).then(|| z + (rank + d) % capable * zones)
        })
        .take(BRIDGE_SEEDS_MAX)
        .map(addr)
        .collect()
}

/// Node `i` of scenario `s`, booted at `now` with these join addresses; `(block, incarnation)`
/// are the RevocationBlock it knows and how many times it booted before (which seeds its PRNG).
pub fn boot_joining(
    i: usize,
    s: &Scenario,
    ids: &Identities,
    (revocation_block, incarnation): (u64, u64),
    now: u64,
    join: &[PeerAddr],
) -> Node {
    let config = NodeConfig {
        node_seed: ids.node_seeds[i],
        cert: &ids.certs[i],
        operator: ids.operator.public_key(),
        revocation_block,
        seed: s.seed ^ incarnation ^ (i as u64) << 20,
        join,
        wal_checkpoint_bytes: s.wal_checkpoint_bytes,
        profile: s.profile,
        bridge_seeds: &ids.bridge_seeds[i],
        relay: s.roles(i).0,
        behind_nat: s.behind_nat_flag(i),
        own_addrs: &[addr(i)],
    };
    let mut node = Node::new(&config, Instant(now)).expect("simulated identities are valid");
    node.set_cert_check(crate::ids::checked_cert);
    node
}

impl Cluster {
    pub fn new(s: &Scenario) -> Cluster {
        crate::ids::forget_checked_certs();
        let faults = Faults {
            loss_ppm: s.loss_ppm,
            duplicate_ppm: s.duplicate_ppm,
            latency_ms_min: 1,
            latency_ms_max: s.latency_ms_max.max(1),
        };
        let block = u64::from(s.adversary);
        let mut ids = Identities::zoned(s.seed, s.nodes, block, s.zones);
        ids.bridge_seeds = (0..s.nodes).map(|i| bridge_seeds(i, s)).collect();
        // Relay and NAT are configuration, which each node's record carries besides its
        // certificate's facts.
        for (i, m) in ids.metas.iter_mut().enumerate() {
            (m.relay, m.nat) = (s.roles(i).0, s.behind_nat_flag(i));
        }
        let mut honest = vec![true; s.nodes];
        if s.adversary {
            honest[s.nodes - 1] = false;
        }
        let mut world = World::new(s, faults, NET_SLOTS);
        world
            .net
            .behind_nat(&(0..s.nodes).map(|i| s.roles(i).1).collect::<Vec<_>>());
        let nodes: Vec<Box<Node>> = (0..s.nodes)
            .map(|i| Box::new(boot(i, s, &ids, block, 0, 0)))
            .collect();
        let mut exec = Executors::new(
            (
                &ids.metas.iter().map(|m| m.arch).collect::<Vec<_>>(),
                s.zones,
            ),
            s.services,
            s.seed,
            s.unit_fault_ppm,
            s.systemctl_fault_ppm,
        );
        for (i, b) in exec.boxes.iter_mut().enumerate() {
            b.seen_at = seen_at(&world, i);
        }
        Cluster {
            s: s.clone(),
            watch: Watch::new(&nodes, &ids.metas),
            killed: None,
            bridges_killed: Vec::new(),
            bridge_syncs_at_kill: 0,
            faults,
            kill_allocations: 0,
            exec,
            exec_failure: None,
            nodes,
            up: vec![true; s.nodes],
            honest,
            adversary: s
                .adversary
                .then(|| Adversary::new(s.seed, &ids.operator, block)),
            block,
            recertify_at: Vec::new(),
            ids,
            world,
            wal_truncations: 0,
            checkpoints: 0,
            rng: Prng::new(s.seed ^ 0x4641_554c),
            now: 0,
        }
    }

    fn deliver(&mut self) {
        let attacker = self.s.nodes;
        while let Some(d) = self.world.net.pop(self.now) {
            let (to, from) = (usize::from(d.to), usize::from(d.from));
            // Answers to the attacker's address reach nobody the simulation judges.
            if to != attacker && self.up[to] {
                let frame = *self.world.net.frame(&d);
                let before = self.accepted(to);
                let seen = seen_at(&self.world, from);
                let mut sink = self.world.sink(to, self.now);
                self.nodes[to].handle_datagram(Instant(self.now), seen, &frame, &mut sink);
                let accepted = self.accepted(to) > before;
                if let Some(a) = &mut self.adversary {
                    if from == attacker {
                        a.frames_accepted += u64::from(accepted);
                    } else if accepted || frame[3] != Kind::Data as u8 {
                        // Only frames the node took: a sealed frame it could not open yet (it
                        // raced its handshake's Finish) is a late delivery, not a replay.
                        a.tap(&frame);
                    }
                }
            }
            self.world.net.release(d);
        }
    }

    /// Frames a node has accepted: sealed frames opened, handshakes completed.
    fn accepted(&self, i: usize) -> u64 {
        let c = self.nodes[i].counters();
        c.frames_accepted + c.handshakes_completed
    }

    fn judged(&self, i: usize) -> bool {
        self.up[i] && self.honest[i]
    }

    /// The attacker's move for this tick, sent through the same lossy network.
    fn attack(&mut self) {
        let nodes = self.s.nodes;
        if let Some((to, frame)) = self.adversary.as_mut().and_then(|a| a.attack(nodes)) {
            self.world
                .net
                .send(self.now, nodes as u16, to as u16, &frame);
        }
    }

    /// The stolen box: its disk now holds forged entries, which it replays at restart.
    fn poison_stolen_box(&mut self, ops: &[Op]) {
        let i = self.s.nodes - 1;
        let names = ["forged-a", "forged-b", "svc-0", "svc-1"];
        let genuine: Vec<&[u8]> = ops.iter().take(2).map(|o| o.entry.as_slice()).collect();
        self.crash(i, false);
        for e in crate::adversary::forged_entries(self.s.seed, &names, &genuine) {
            self.world.disks[i].inject(&e);
        }
        self.restart(i);
    }

    /// The operator raises the RevocationBlock at one node, then re-certifies every node.
    fn rotate(&mut self) {
        self.block += 1;
        let mut record = [0u8; REVOCATION_BYTES_MAX];
        let n = encode_revocation(&self.ids.operator, self.block, &mut record);
        let i = (0..self.s.nodes)
            .find(|&i| self.judged(i))
            .expect("a live honest node");
        let mut sink = self.world.sink(i, self.now);
        let height = self.nodes[i].handle_revocation(&record[..n], &mut sink);
        assert_eq!(
            height,
            Ok(self.block),
            "the operator's revocation is accepted"
        );
        self.recertify_at = (0..self.s.nodes)
            .map(|_| self.now + self.rng.below(200) * TICK_MS)
            .collect();
    }

    fn recertify_due(&mut self) {
        for i in 0..self.recertify_at.len() {
            if self.recertify_at[i] != self.now {
                continue;
            }
            let (seed, meta) = (self.ids.node_seeds[i], self.ids.metas[i]);
            self.ids.certs[i] = certify(&self.ids.operator, seed, meta, self.block);
            self.ids.issued_at[i] = self.block;
            if self.up[i] {
                self.nodes[i]
                    .install_cert(&self.ids.certs[i])
                    .expect("a fresh certificate installs");
            }
        }
    }

    fn tick_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            if self.up[i] {
                let mut sink = self.world.sink(i, self.now);
                self.nodes[i].handle_tick(Instant(self.now), &mut sink);
                if std::mem::take(&mut self.world.placement_changed[i]) {
                    self.exec.placement_changed(i);
                }
                let requests = std::mem::take(&mut self.world.build_requests[i]);
                let failed = std::mem::take(&mut self.world.build_failed[i]);
                self.exec
                    .build_messages(i, &self.nodes[i], self.now, (&requests, &failed));
                let mut sink = self.world.sink(i, self.now);
                let at = (i, &self.up[..]);
                let stepped = self.exec.step(at, &mut self.nodes[i], &mut sink, self.now);
                if let (Err(why), None) = (stepped, &self.exec_failure) {
                    self.exec_failure = Some(format!("executor on node {i}: {why}"));
                }
            }
        }
    }

    /// Whether the executors have settled with the placement invariant holding; then invariants
    /// 1 and 4 of `executors.rs` are checked on the judged nodes. The caller leaves the checks'
    /// allocations out of the nodes' count.
    fn executors_settled(&mut self, placed: bool) -> Result<bool, String> {
        if !placed {
            return Ok(false);
        }
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.judged(i)).collect();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up[i]).collect();
        self.exec
            .settled(&self.nodes, &live, &up)
            .map_err(|why| format!("executor: {why}"))
    }

    /// Distinct state hashes among live honest nodes.
    fn distinct_hashes(&self) -> usize {
        let mut hashes: Vec<u64> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if self.judged(i) && !hashes.contains(&n.state_hash()) {
                hashes.push(n.state_hash());
            }
        }
        hashes.len()
    }

    fn converged_to(&self, expected: Option<u64>) -> bool {
        let mut judged = (0..self.nodes.len()).filter(|&i| self.judged(i));
        let Some(first) = judged.next().map(|i| self.nodes[i].state_hash()) else {
            return false;
        };
        expected.is_none_or(|e| e == first) && judged.all(|i| self.nodes[i].state_hash() == first)
    }

    /// Entries held by honest nodes that no operator submitted: forgeries that got in. A slot's
    /// digest is its entry's: `check_safety` proves it of every slot (`check_digests`) and fails
    /// the run where it is not.
    fn forged_held(&self) -> usize {
        let honest = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.honest[*i]);
        honest
            .flat_map(|(_, n)| n.store().slots().iter().map(|s| s.digest))
            .filter(|d| !self.world.submitted.contains(d))
            .count()
    }

    /// Safety: every node's digests are consistent and it holds only submitted entries.
    fn check_safety(&self) -> Result<(), Failure> {
        for (i, n) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.honest[*i])
        {
            if !n.store().check_digests() {
                return Err(Failure::Safety(format!(
                    "node {i}: Merkle digests disagree with entries"
                )));
            }
            // Each slot's digest is its entry's, as `check_digests` just proved.
            for slot in n.store().slots() {
                if !self.world.submitted.contains(&slot.digest) {
                    return Err(Failure::Safety(format!(
                        "node {i}: holds an entry no operator submitted"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The reference store: every operation merged once, as a node that missed nothing holds
    /// them. Entries a full table would refuse are refused everywhere alike.
    fn reference(&mut self, ops: &[Op]) -> Box<BigStore> {
        let mut reference = Box::new(BigStore::new());
        for op in ops {
            self.world.submitted.insert(digest(DOMAIN_ENTRY, &op.entry));
            let _ = reference.merge(&op.entry);
        }
        reference
    }

    /// One tick of the world before the checks: faults, disks, the operator's operations, a
    /// rotation or the adversary's poisoning at `mid_ops`, the attack, delivery and the nodes'
    /// ticks. Returns the allocations made by the operator's and attacker's own actions, which
    /// the nodes' count leaves out.
    fn tick(&mut self, ops: &[Op], next_op: &mut usize, faults: &FaultPlan, mid_ops: u64) -> u64 {
        // A crash comes before this tick's sync, so the last tick's appends are at risk.
        self.apply_faults(faults);
        self.sync_disks();
        while *next_op < ops.len() && ops[*next_op].at_ms <= self.now {
            self.submit(&ops[*next_op], *next_op);
            *next_op += 1;
        }
        let outside = alloc::allocations();
        if self.now == mid_ops && self.s.rotate {
            self.rotate();
        }
        if self.now == mid_ops && self.s.adversary {
            self.poison_stolen_box(ops);
        }
        if self.now == mid_ops && self.s.kill_bridges {
            self.kill_bridges();
        }
        self.recertify_due();
        let excluded = alloc::allocations() - outside;
        self.attack();
        self.deliver();
        self.tick_nodes();
        excluded
    }

    /// The run's totals into the report: checks made, acknowledged deploys and what was lost,
    /// the disks' and the adversary's figures, and the refusals of the honest nodes.
    fn tally(&self, report: &mut Report, ops: &[Op]) {
        report.placement_checks = self.watch.checks;
        report.executor_checks = self.exec.checks;
        report.executor_commands = self.exec.commands;
        report.health_checks = self.exec.health_checks;
        report.health_restarts = self.exec.health_restarts();
        report.units_in_place = self.exec.units_in_place();
        report.builds_local = self.exec.builds_local;
        report.builds_fetched = self.exec.builds_fetched;
        report.builds_local_held_by_peer = self.exec.builds_local_held_by_peer;
        report.builds_remote = self.exec.builds_remote;
        report.builds_for_peers = self.exec.builds_for_peers;
        report.builds_for_other_systems = self.exec.builds_for_other_systems;
        report.remote_canary_holds = self.exec.remote_canary_holds;
        (
            report.acknowledged_deploys,
            report.acknowledged_deploys_lost,
        ) = self.acknowledged_lost(ops);
        report.wal_truncations = self.wal_truncations;
        report.checkpoints = self.checkpoints;
        report.forged_slots_accepted = self.forged_held();
        if let Some(a) = &self.adversary {
            report.adversary_frames_sent = a.frames_sent;
            report.adversary_frames_accepted = a.frames_accepted;
        }
        report.revocation_block = self.block;
        for (i, n) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.honest[*i])
        {
            let _ = i;
            for (total, r) in report.refusals.iter_mut().zip(n.crypto_refusals()) {
                *total += r;
            }
        }
        report.refused_frames = self
            .nodes
            .iter()
            .flat_map(|n| n.counters().refused_by_reason())
            .map(|(_, n)| n)
            .sum();
        report.member_records_crossing_zones = self.watch.crossing(&self.nodes, &self.honest);
        report.bridges_killed = self.bridges_killed.len();
        if self.s.kill_bridges {
            report.replacement_bridge_syncs = self.zone_bridge_syncs() - self.bridge_syncs_at_kill;
        }
        let honest = (0..self.nodes.len()).filter(|&i| self.honest[i]);
        for c in honest.map(|i| self.nodes[i].counters()) {
            report.bridge_sessions += c.bridge_sessions;
            report.bridge_entries += c.bridge_entries;
            report.relayed_frames += c.relayed_frames;
            report.nat_detected += c.nat_detected;
        }
        report.nat_dropped = self.world.net.nat_dropped;
    }

    /// Membership stays in its zone: a member record of another zone's box in any honest node's
    /// table is a safety failure. Checked once a simulated second (a scan of every table).
    fn check_zones(&self) -> Result<(), Failure> {
        if self.s.zones <= 1 || !self.now.is_multiple_of(1000) {
            return Ok(());
        }
        match self.watch.crossing(&self.nodes, &self.honest) {
            0 => Ok(()),
            n => Err(Failure::Safety(format!(
                "{n} member records crossed a zone"
            ))),
        }
    }

    /// This tick's safety checks: the placement invariant (whether it holds now, or how it
    /// broke) and the first executor invariant that broke during the tick.
    fn observe(&mut self) -> Result<bool, Failure> {
        self.check_zones()?;
        let placed = self
            .watch
            .observe(&self.nodes, &self.up, &self.honest)
            .map_err(|why| Failure::Safety(format!("placement: {why}")))?;
        match self.exec_failure.take() {
            Some(why) => Err(Failure::Safety(why)),
            None => Ok(placed),
        }
    }

    /// Whether every fault has played out: crashes and partitions end at `live_at`, and a
    /// rotation or an attack is judged only once it has played out.
    fn faults_over(&self, live_at: u64, mid_ops: u64) -> bool {
        let faults_over = self.now >= live_at || (self.s.crashes == 0 && !self.s.partitions);
        faults_over
            && (!self.s.rotate || self.recertify_at.iter().all(|&t| t < self.now))
            && (!self.s.adversary || self.now > mid_ops + SAFETY_MS)
    }

    /// Whether the placement invariant holds (`placed`) and, while settling, the executors have
    /// settled too with their invariants holding: settling ends only then. An executor invariant
    /// that broke is the error.
    fn settled(&mut self, phase: Phase, placed: bool) -> Result<bool, String> {
        if !matches!(phase, Phase::Settling | Phase::Resettling) {
            return Ok(placed);
        }
        // The settle checks allocate; they are the simulator's, not the nodes'.
        let outside = alloc::allocations();
        let settled = self.executors_settled(placed);
        self.kill_allocations += alloc::allocations() - outside;
        settled
    }

    /// How long `phase` may last in this run.
    fn phase_ms_max(&self, phase: Phase) -> u64 {
        phase.time_ms_max(slowness(&self.s.profile))
    }

    pub fn run(&mut self) -> Report {
        let ops = operations(&self.s, &self.ids.operator);
        let bad = ops.iter().filter(|o| o.bad).map(|o| unit_digest(&o.entry));
        self.exec.versions(bad, ops.len());
        let reference = self.reference(&ops);
        let ops_end = OPS_START_MS + self.s.ops_window_ms * 2 + TICK_MS;
        // Phase changes happen on tick boundaries.
        let live_at = (ops_end + SAFETY_MS) / TICK_MS * TICK_MS;
        let faults = self.plan_faults(live_at);
        let first_op = ops.first().map_or(0, |o| o.at_ms);
        let mut next_op = 0;
        let mut report = Report {
            node_state_bytes: std::mem::size_of::<Node>(),
            ..Report::default()
        };
        self.world.acks.pending.reserve(ops.len());
        self.world.acks.acked = vec![None; ops.len()];
        let mid_ops = (OPS_START_MS + self.s.ops_window_ms / 2) / TICK_MS * TICK_MS;
        let mut excluded = 0;
        let allocations_at_boot = alloc::allocations();
        let expected = (self.s.crashes == 0).then(|| reference.state_hash());
        let mut deadline = self.s.time_ms_max * slowness(&self.s.profile);
        let mut converged_at = None;
        let mut placement_failure = None;
        let mut phase = Phase::Converging;
        while self.now <= deadline {
            excluded += self.tick(&ops, &mut next_op, &faults, mid_ops);
            let placed = match self.observe() {
                Ok(placed) => placed,
                Err(failure) => {
                    placement_failure = Some(failure);
                    break;
                }
            };
            if phase == Phase::Converging
                && next_op == ops.len()
                && self.faults_over(live_at, mid_ops)
                && self.converged_to(expected)
            {
                report.converged = true;
                converged_at = Some(self.now);
                phase = Phase::Settling;
                self.lift_faults();
                deadline = self.now + self.phase_ms_max(Phase::Settling);
            }
            let placed = match self.settled(phase, placed) {
                Ok(placed) => placed,
                Err(why) => {
                    placement_failure = Some(Failure::Safety(why));
                    break;
                }
            };
            let next = self.advance(phase, placed, &mut report);
            if let Err(why) = next {
                placement_failure = Some(Failure::Safety(format!("placement: {why}")));
                break;
            }
            if next != Ok(phase) {
                phase = next.expect("checked above");
                deadline = self.now + self.phase_ms_max(phase);
            }
            if phase == Phase::Done {
                break;
            }
            self.now += TICK_MS;
        }
        excluded += self.kill_allocations;
        report.heap_allocations_after_boot = alloc::allocations() - allocations_at_boot - excluded;
        // After the count: a message allocates.
        report.placement_stuck = self.stuck(phase, &report);
        self.tally(&mut report, &ops);
        report.failure = placement_failure;
        self.finish(&mut report, first_op, converged_at, &reference)
    }

    /// One step of the run after the state converged: settle, kill, wait for the replacement,
    /// settle again. `placed` says the invariant holds for the current state and live set.
    fn advance(
        &mut self,
        phase: Phase,
        placed: bool,
        report: &mut Report,
    ) -> Result<Phase, String> {
        Ok(match phase {
            Phase::Settling if placed => {
                // The kill is a fault the simulator injects; only the nodes must not allocate.
                let outside = alloc::allocations();
                let victim = self.kill_one();
                self.kill_allocations += alloc::allocations() - outside;
                let Some(victim) = victim else {
                    return Ok(Phase::Done);
                };
                report.killed = Some(victim);
                report.services_replaced = self.watch.held(victim);
                Phase::Replacing {
                    victim,
                    at: self.now,
                }
            }
            Phase::Replacing { victim, at }
                if self
                    .watch
                    .replaced(&self.nodes, &self.up, &self.honest, victim) =>
            {
                self.watch
                    .confirm_replaced(&self.nodes, &self.up, &self.honest, victim)?;
                let round_ms = self.s.profile.gossip_interval_ms;
                report.rounds_to_replace = Some((self.now - at).div_ceil(round_ms));
                report.ms_to_replace = Some(self.now - at);
                self.lift_faults();
                Phase::Resettling
            }
            Phase::Resettling if placed => Phase::Done,
            other => other,
        })
    }

    /// The liveness failure of a run that ended in `phase`; a stuck replacement names the nodes
    /// that still hold the killed one live.
    fn stuck(&self, phase: Phase, report: &Report) -> Option<String> {
        let why = phase.stuck(report, slowness(&self.s.profile))?;
        Some(match phase {
            Phase::Replacing { victim, .. } => format!("{why}; {}", self.holdouts(victim)),
            Phase::Settling | Phase::Resettling => format!("{why}; {}", self.unsettled()),
            _ => why,
        })
    }

    /// What keeps the cluster from settled: a membership that is not the up set, or a box
    /// whose executor is not at rest.
    fn unsettled(&self) -> String {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.judged(i)).collect();
        let membership = self
            .watch
            .membership_gap(&self.nodes, &self.up, &self.honest);
        membership
            .or_else(|| self.exec.unquiet(&live))
            .unwrap_or_else(|| "membership and executors settled at the end".into())
    }

    /// Which judged nodes still hold the killed node live, and as what: what a stuck replacement
    /// needs to be understood.
    fn holdouts(&self, victim: usize) -> String {
        let id = self.watch.id(victim);
        let seen: Vec<String> = (0..self.nodes.len())
            .filter(|&i| self.up[i] && self.honest[i])
            .filter_map(|i| {
                let m = self.nodes[i]
                    .members()
                    .iter()
                    .find(|m| m.id == id && m.is_live())?;
                Some(format!(
                    "node {i} ({:?}, incarnation {}, since {} ms)",
                    m.state, m.incarnation, m.changed_at.0
                ))
            })
            .collect();
        format!("still live to {}", seen.join(", "))
    }

    /// The nodes and their executor world, for checks after a run.
    #[cfg(test)]
    pub fn parts(&mut self) -> (&[Box<Node>], &mut Executors) {
        (&self.nodes, &mut self.exec)
    }

    /// Node `i`, for measurements after a run.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Bytes all disks have been written, snapshots included.
    pub fn disk_written_bytes(&self) -> u64 {
        self.world.disks.iter().map(|d| d.written_bytes).sum()
    }

    /// Runs `ms` more with no operations and no faults; returns frames sent per live node per
    /// second.
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
        let live = self.up.iter().filter(|&&up| up).count().max(1);
        (after - before) as f64 / live as f64 / (ms as f64 / 1000.0)
    }

    fn finish(
        &mut self,
        report: &mut Report,
        first_op: u64,
        converged_at: Option<u64>,
        reference: &BigStore,
    ) -> Report {
        let totals = self.nodes.iter().fold(Counters::default(), |mut t, n| {
            let c = n.counters();
            t.frames_out += c.frames_out;
            t.bytes_out += c.bytes_out;
            t
        });
        report.frames_sent = totals.frames_out;
        report.bytes_sent = totals.bytes_out;
        report.frames_lost = self.world.net.lost;
        report.frames_congested = self.world.net.congested;
        report.rumor_frames_dropped = self.nodes.iter().map(|n| n.rumors_dropped()).sum();
        // Convergence figures count to the moment the state converged, not to the end of the
        // placement phase that follows it.
        let end = converged_at.unwrap_or(self.now);
        report.time_ms = end;
        report.ticks = end / TICK_MS;
        report.rounds = end
            .saturating_sub(first_op)
            .div_ceil(self.s.profile.gossip_interval_ms);
        report.distinct_state_hashes = self.distinct_hashes();
        report.entries = self.nodes[0].store().len();
        for (i, n) in self.nodes.iter().enumerate() {
            self.world.trace = mix(self.world.trace, n.state_hash() ^ i as u64);
        }
        report.trace_hash = self.world.trace;
        report.failure = self.verdict(report, reference);
        report.clone()
    }

    fn verdict(&self, report: &Report, reference: &BigStore) -> Option<Failure> {
        if let Some(f) = &report.failure {
            return Some(f.clone());
        }
        if let Err(f) = self.check_safety() {
            return Some(f);
        }
        if report.adversary_frames_accepted > 0 || report.forged_slots_accepted > 0 {
            let why = format!(
                "attacks accepted: {} adversary frames, {} forged entries",
                report.adversary_frames_accepted, report.forged_slots_accepted
            );
            return Some(Failure::Safety(why));
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
        report.placement_stuck.clone().map(Failure::Liveness)
    }

    fn submit(&mut self, op: &Op, op_index: usize) {
        // An operator talks to a live box it trusts: if the chosen one is down (or is the stolen
        // box of an adversary run), the next one.
        let n = self.nodes.len();
        let Some(i) = (0..n).map(|k| (op.node + k) % n).find(|&i| self.judged(i)) else {
            return;
        };
        self.world.trace = mix(self.world.trace, op.at_ms ^ i as u64);
        let mut sink = self.world.sink(i, self.now);
        match self.nodes[i].submit(Instant(self.now), &op.entry, &mut sink) {
            Ok(Submitted {
                ticket: Some(t), ..
            }) => self.world.acks.pending.push((i as u16, t, op_index)),
            Ok(Submitted { ticket: None, .. }) => {}
            // Capacity refusals are legitimate; the reference store refused the same entry.
            Err(e) => self.world.trace = mix(self.world.trace, e.message().len() as u64),
        }
    }

    /// Completes every live node's pending appends and requested checkpoints, like fdatasync
    /// returning; a crash before this drops them.
    fn sync_disks(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.up[i] {
                continue;
            }
            let disk = &mut self.world.disks[i];
            let checkpointed = disk.checkpoint_requested;
            self.checkpoints += u64::from(checkpointed);
            let durable = if checkpointed {
                disk.checkpoint(self.nodes[i].store())
            } else {
                disk.sync()
            };
            let mut sink = self.world.sink(i, self.now);
            let now = Instant(self.now);
            if let Some(ticket) = durable {
                self.nodes[i].handle_storage(now, Storage::Durable { ticket }, &mut sink);
            }
            if checkpointed {
                self.nodes[i].handle_storage(now, Storage::Checkpointed, &mut sink);
            }
        }
    }

    /// Acknowledged operations whose key no longer holds that version or a newer one.
    fn acknowledged_lost(&self, ops: &[Op]) -> (usize, usize) {
        let Some(i) = (0..self.nodes.len()).find(|&i| self.judged(i)) else {
            return (0, 0);
        };
        let store = self.nodes[i].store();
        let mut acked = 0;
        let mut lost = 0;
        for (op, _) in ops
            .iter()
            .zip(&self.world.acks.acked)
            .filter(|(_, a)| a.is_some())
        {
            acked += 1;
            let e = Entry::decode(&op.entry).expect("simulated entries are valid");
            let held = store
                .get_by_name(e.body.name)
                .map(|h| h.decode().body.version);
            lost += usize::from(held.is_none_or(|v| v < e.body.version));
        }
        (acked, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::config::Profile;

    /// A run of the standard scenario of `nodes` nodes and `services` services without loss or
    /// kill, which must pass: the cluster to look at afterwards, and its scenario.
    fn settled_without_kill(seed: u64, nodes: usize, services: usize) -> (Scenario, Cluster) {
        let mut s = Scenario::standard(seed, nodes, services, 0.0);
        s.kill = false;
        let mut c = Cluster::new(&s);
        assert_eq!(c.run().failure, None);
        (s, c)
    }

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

    /// Issue 16, builds for another system: in a cluster of 8 whose builders (boxes 0 and 4) are
    /// both x86_64 and whose remote-only box 2 is aarch64, box 2's only builders are x86_64 ones
    /// with aarch64 in `extra-platforms` (`executors::p2p::mode_of`). They build its aarch64
    /// outputs under the aarch64 keys and it runs every service placed on it (the run settles,
    /// invariants 1, 10 and 11 hold).
    #[test]
    fn x86_64_builders_serve_an_aarch64_board() {
        use myco_core::schema::entry::Arch;
        let board = (1..200).find_map(|seed| {
            let s = Scenario::standard(seed, 8, 80, 0.1);
            let c = Cluster::new(&s);
            let arch = |i: usize| c.node(i).meta().arch;
            let fits = arch(2) == Arch::Aarch64 && [0, 4].iter().all(|&i| arch(i) == Arch::X86_64);
            fits.then_some((s, c))
        });
        let (s, mut c) = board.expect("a seed whose board has only x86_64 builders");
        let r = c.run();
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.builds_remote > 0, "{}", s.command());
        assert!(r.builds_for_other_systems > 0, "{}", s.command());
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
        assert!(r.node_state_bytes <= myco_core::config::NODE_BYTES_MAX);
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

    /// A converged cluster sends only probes, acks and the periodic membership page (the `lan`
    /// profile's 4.5 frames per node per second, within a twentieth; no anti-entropy) and writes
    /// nothing to disk. Counted once the last status changes have been sent again
    /// (`STATUS_RESENDS` more pushes a second apart): those are the tail of convergence, and
    /// where they fall depends on when the executors finished, not on what rest costs.
    #[test]
    fn cluster_at_rest_stays_quiet() {
        use myco_core::config::{STATUS_PUSH_INTERVAL_MS, STATUS_RESENDS};
        let (_, mut c) = settled_without_kill(3, 20, 50);
        let written = c.disk_written_bytes();
        assert!(written > 0, "the deploys were logged");
        c.frames_at_rest((u64::from(STATUS_RESENDS) + 1) * STATUS_PUSH_INTERVAL_MS);
        let frames = c.frames_at_rest(20_000);
        let arithmetic = Profile::LAN.rest_frames_per_s_milli() as f64 / 1000.0;
        assert!(
            frames <= arithmetic * 1.05,
            "{frames} frames per node per second at rest"
        );
        assert_eq!(
            c.disk_written_bytes(),
            written,
            "a cluster at rest writes nothing"
        );
    }

    /// Under `metered` (a probe every 6 s), a killed box's services are placed elsewhere by every
    /// live box within the profile's detection bound plus a few gossip rounds for the death to
    /// spread, and nothing else goes wrong; seeds 1 to 3.
    #[test]
    fn metered_replaces_a_killed_box_within_its_bound() {
        let p = Profile::METERED;
        for seed in 1..=3 {
            let mut s = Scenario::standard(seed, 20, 40, 0.0);
            s.profile = p;
            let r = run(&s);
            assert_eq!(r.failure, None, "{}", s.command());
            let ms = r.ms_to_replace.expect("a box was killed and replaced");
            let bound = p.detection_ms(s.nodes) + 5 * p.gossip_interval_ms;
            assert!(ms <= bound, "{ms} ms > {bound} ms: {}", s.command());
            assert!(bound <= p.detection_ms_goal + 5 * p.gossip_interval_ms);
        }
    }

    /// The liveness deadlines stretch with the probe period, and a stuck run says the deadline
    /// it missed.
    #[test]
    fn liveness_deadlines_stretch_with_the_probe_period() {
        assert_eq!(slowness(&Profile::LAN), 1);
        assert_eq!(slowness(&Profile::WAN), 4);
        assert_eq!(slowness(&Profile::METERED), 12);
        let replacing = Phase::Replacing { victim: 3, at: 0 };
        assert_eq!(replacing.time_ms_max(12), 12 * REPLACE_MS_MAX);
        assert_eq!(Phase::Settling.time_ms_max(1), SETTLE_MS_MAX);
        let why = replacing.stuck(&Report::default(), 12);
        assert!(why.is_some_and(|w| w.contains("node 3 was killed") && w.contains("2160000 ms")));
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

    /// Updates that only scale their service (one in eight) are written without a restart on
    /// the boxes that run the version they scale, among bad versions and faulty units, and the
    /// run still passes every invariant: the same units, the bad versions held on the first wave.
    #[test]
    fn scaled_versions_restart_nothing_and_the_rollouts_hold() {
        let mut s = Scenario::standard(3, 10, 100, 0.1);
        s.updates = 200;
        s.bad_update_ppm = 500_000;
        s.unit_fault_ppm = 50_000;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.units_in_place > 0, "no unit was written in place");
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

    /// An attacker replaying, flipping bits, joining with self-signed, revoked and foreign-zone
    /// certificates, plus a stolen box gossiping forged entries: nothing is accepted, every kind
    /// of refusal is seen (over as many seeds as it takes, from seed 20: a bad signature needs a
    /// flipped bit to land in a taped handshake's signature, which one run may not draw), and
    /// the honest nodes still converge.
    #[test]
    fn adversary_is_refused_and_honest_nodes_converge() {
        let mut seen = [0u64; 8];
        // `not_bridge` needs a bridge-capable node, which only a run with zones has.
        let kinds = || {
            let all = myco_core::crypto::Refusal::ALL.into_iter();
            all.filter(|&r| r != myco_core::crypto::Refusal::NotBridge)
        };
        // Seeds run until every kind was refused at least once (at most eight); each must pass.
        for seed in 20..28 {
            if kinds().all(|r| seen[r.index()] > 0) {
                break;
            }
            let mut s = Scenario::standard(seed, 12, 80, 0.1);
            s.adversary = true;
            let r = run(&s);
            assert_eq!(r.failure, None, "{}", s.command());
            assert!(r.adversary_frames_sent > 100);
            assert_eq!(r.adversary_frames_accepted, 0);
            assert_eq!(r.forged_slots_accepted, 0);
            seen.iter_mut().zip(r.refusals).for_each(|(n, r)| *n += r);
        }
        for reason in kinds() {
            assert!(
                seen[reason.index()] > 0,
                "no {} refusal seen",
                reason.name()
            );
        }
    }

    /// Zones: deploys submitted in random zones, a fifth naming a zone, reach every zone through
    /// the bridges; every entry runs in its zone (the placement invariant, per zone); no member
    /// record crosses a zone; a killed box is replaced within its zone.
    #[test]
    fn zones_converge_and_no_member_record_crosses() {
        let mut s = Scenario::standard(31, 64, 200, 0.1);
        s.zones = 4;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.converged && r.distinct_state_hashes == 1);
        assert_eq!(r.member_records_crossing_zones, 0);
        assert!(r.bridge_entries > 0 && r.placement_checks > 0);
        assert!(r.rounds_to_replace.is_some(), "{}", s.command());
    }

    /// Boxes behind NAT (`--nat`): they join, get services placed and run them (the placement
    /// and executor invariants hold for them like any box), and are replaced when killed (seed 2
    /// kills node 15, behind NAT); when a relay dies (seed 4 kills node 2), every other box
    /// behind NAT has dropped it from its relays and is alive to every live box.
    #[test]
    fn boxes_behind_nat_run_services_and_outlive_a_relay() {
        for (seed, killed) in [(2, 15), (4, 2)] {
            let mut s = Scenario::standard(seed, 20, 60, 0.1);
            s.nat = 5;
            nat_run_holds(&s, killed);
        }
    }

    /// The same boxes started without `--behind-nat` (`--nat-detect`): the NAT model shows them
    /// to their peers at its own address, their peers tell them so, and each finds out it is
    /// behind NAT (once); then every check above holds as for boxes started with the flag. No
    /// public box concludes it.
    #[test]
    fn boxes_behind_nat_find_it_out_and_run_services() {
        for (seed, killed) in [(2, 15), (4, 2)] {
            let mut s = Scenario::standard(seed, 20, 60, 0.1);
            (s.nat, s.nat_detect) = (5, true);
            let c = nat_run_holds(&s, killed);
            for i in (15..20).filter(|&i| i != killed) {
                assert!(c.nodes[i].meta().nat, "box {i}: {}", s.command());
                assert_eq!(c.nodes[i].counters().nat_detected, 1, "box {i}");
            }
            assert!((0..15).all(|i| c.nodes[i].counters().nat_detected == 0));
        }
    }

    /// Runs NAT scenario `s`, which kills box `killed`, and checks what every NAT run must hold.
    fn nat_run_holds(s: &Scenario, killed: usize) -> Cluster {
        let mut c = Cluster::new(s);
        let r = c.run();
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.converged && r.relayed_frames > 0 && r.nat_dropped > 0);
        assert_eq!(r.killed, Some(killed), "{}", s.command());
        assert!(r.rounds_to_replace.is_some(), "{}", s.command());
        let dead = c.nodes[killed].id();
        for i in (15..20).filter(|&i| i != killed) {
            let id = c.nodes[i].id();
            let relays = c.nodes[i].relays_of(id);
            assert_eq!(relays.len(), 2);
            assert!(!relays.contains(&dead), "{}", s.command());
            for j in (0..20).filter(|&j| j != killed && j != i) {
                let m = c.nodes[j].members().iter().find(|m| m.id == id);
                assert!(
                    m.is_some_and(|m| m.is_live() && m.meta.nat),
                    "{} at {j}",
                    s.command()
                );
            }
        }
        c
    }

    /// Fifty reachable boxes at 50% loss, three of them relays, one box behind NAT started
    /// `--behind-nat`: their peers see each at its own address, so however often frames are
    /// lost, suspected and refuting, none concludes it is behind NAT, in the run and five
    /// simulated minutes after it.
    #[test]
    fn reachable_boxes_at_heavy_loss_never_conclude_they_are_behind_nat() {
        let mut s = Scenario::standard(5, 50, 100, 0.5);
        (s.nat, s.kill) = (1, false);
        let mut c = Cluster::new(&s);
        let r = c.run();
        assert_eq!(r.failure, None, "{}", s.command());
        // The run lifts its faults at the end; the loss goes on here.
        c.world.net.faults.loss_ppm = s.loss_ppm;
        c.frames_at_rest(300_000);
        let counters: Vec<_> = (0..49).map(|i| c.nodes[i].counters()).collect();
        assert!(counters.iter().any(|k| k.refutations > 0));
        assert!(counters.iter().all(|k| k.nat_detected == 0));
        assert!((0..49).all(|i| !c.nodes[i].meta().nat));
    }

    /// Every bridge-capable box has a seed in each other zone, on a bridge-capable box of that
    /// zone, also when zones hold fewer boxes than `BRIDGE_CAPABLE_PER_ZONE` (6 boxes over 4
    /// zones: zones 2 and 3 have one box each, which seeds once named absent boxes only).
    #[test]
    fn small_zones_are_seeded_and_seed_every_other_zone() {
        for (nodes, zones) in [(6, 4), (3, 3), (5, 4), (2, 2), (9, 4), (40, 3)] {
            let mut s = Scenario::standard(55, nodes, 10, 0.0);
            s.zones = zones;
            let z = usize::from(zones);
            for i in (0..nodes).filter(|&i| bridge_capable(i, zones)) {
                let seeds = bridge_seeds(i, &s);
                let mut seeded: Vec<usize> = (0..nodes)
                    .filter(|&j| seeds.contains(&addr(j)))
                    .inspect(|&j| assert!(bridge_capable(j, zones), "{j} of {nodes}/{z}"))
                    .map(|j| j % z)
                    .collect();
                seeded.sort_unstable();
                let others: Vec<usize> = (0..z).filter(|&o| o != i % z && o < nodes).collect();
                assert_eq!(seeded, others, "node {i} of {nodes} over {z} zones");
            }
        }
    }

    /// Three zones of one box each (gauntlet seed 55 had two such zones): each box's zone is
    /// itself alone, which is no cut-off, so it runs what is placed on it; deploys made in any
    /// zone reach the others through the seeds.
    #[test]
    fn a_zone_of_one_box_runs_its_services() {
        let mut s = Scenario::standard(55, 3, 50, 0.0);
        s.zones = 3;
        s.kill = false;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.converged && r.distinct_state_hashes == 1);
        assert!(
            r.executor_checks > 0 && r.executor_commands > 0,
            "{}",
            s.command()
        );
    }

    /// Zone 1's bridges die for good in the middle of the deploys: the next bridge-capable
    /// boxes in rendezvous order take over, and the deploys made after the kill reach zone 1.
    #[test]
    fn killed_bridges_are_replaced() {
        let mut s = Scenario::standard(34, 48, 150, 0.1);
        s.zones = 3;
        s.kill_bridges = true;
        s.kill = false;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.bridges_killed, myco_core::config::BRIDGES_PER_ZONE);
        assert!(r.replacement_bridge_syncs > 0, "zone 1 elected new bridges");
        assert!(r.converged && r.distinct_state_hashes == 1);
    }

    /// One zone cut off from the others during the deploys catches up after the heal.
    #[test]
    fn a_zone_cut_off_catches_up_after_healing() {
        let mut s = Scenario::standard(32, 48, 150, 0.05);
        s.zones = 3;
        s.partitions = true;
        s.kill = false;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.converged && r.distinct_state_hashes == 1);
        assert_eq!(r.member_records_crossing_zones, 0);
    }

    /// The stolen box is in zone 0 (node 12 of 13 over 2 zones): it forges nothing anywhere, a
    /// plain certificate of another zone asking a bridge is refused as `not_bridge`, and both
    /// zones converge.
    #[test]
    fn adversary_in_zone_0_forges_nothing_across_zones() {
        let mut s = Scenario::standard(33, 13, 80, 0.1);
        s.zones = 2;
        s.adversary = true;
        assert_eq!(crate::ids::zone_of(s.nodes - 1, s.zones), 0);
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.adversary_frames_accepted, 0);
        assert_eq!(r.forged_slots_accepted, 0);
        assert_eq!(r.member_records_crossing_zones, 0);
        let not_bridge = myco_core::crypto::Refusal::NotBridge.index();
        assert!(r.refusals[not_bridge] > 0);
    }

    /// A rotation mid-run: the block rises, every node gets a new certificate, sessions under
    /// old certificates end (the core asserts none is used), and no acknowledged deploy is lost.
    #[test]
    fn rotation_keeps_every_acknowledged_deploy() {
        let mut s = Scenario::standard(22, 12, 80, 0.1);
        s.rotate = true;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.revocation_block, 1);
        assert_eq!(r.acknowledged_deploys_lost, 0);
        assert!(r.refusals[myco_core::crypto::Refusal::RevokedKey.index()] > 0);
    }

    /// Regression (gauntlet seed 40040): a sealed frame that raced its handshake's Finish was
    /// refused, taped, and its later "replay" opened. The tape now holds only frames a node took,
    /// so every replay is a true duplicate and must be refused.
    #[test]
    fn replays_of_taken_frames_are_refused() {
        let mut s = Scenario::standard(40040, 18, 314, 0.367_549);
        s.updates = 39;
        s.deletes = 55;
        s.duplicate_ppm = 60_912;
        s.latency_ms_max = 67;
        s.crashes = 2;
        s.wal_checkpoint_bytes = 64_027;
        s.adversary = true;
        let r = run(&s);
        assert_eq!(r.failure, None, "{}", s.command());
        assert_eq!(r.adversary_frames_accepted, 0);
    }

    /// Once converged, every node places every service alike on min(replicas, eligible live)
    /// members (the run fails otherwise); a killed node's services move within a bounded number
    /// of rounds, and the invariant holds again without it. Eligibility is exercised: some
    /// services are placed on fewer members than their replicas because few boxes qualify.
    #[test]
    fn placement_agrees_and_killed_node_is_replaced() {
        let s = Scenario::standard(9, 20, 300, 0.1);
        let mut c = Cluster::new(&s);
        let r = c.run();
        assert_eq!(r.failure, None, "{}", s.command());
        assert!(r.placement_checks >= 2, "{} checks", r.placement_checks);
        let victim = r.killed.expect("a node that ran services was killed");
        assert!(r.services_replaced > 0);
        let rounds = r.rounds_to_replace.expect("replaced");
        // Detection, the longest suspicion (12 s) and its spread, with room: 100 rounds = 20 s.
        assert!((1..=100).contains(&rounds), "{rounds} rounds");
        let victim_id = c.node(victim).id();
        let live = (0..s.nodes).filter(|&i| i != victim);
        let (mut limited, mut arm) = (0, 0);
        let n = c.node(live.clone().next().unwrap());
        for slot in n.store().slots() {
            let bytes = n.store().entry(slot);
            let e = bytes.decode();
            let spec = e.body.spec.expect("no deletes in this scenario");
            let placed = n.placement(slot.key_hash);
            assert!(!placed.contains(&victim_id));
            limited += usize::from(placed.len() < usize::from(spec.replicas));
            let aarch64 = myco_core::schema::entry::Arch::Aarch64;
            arm += usize::from(spec.requires.arch == aarch64 && !placed.is_empty());
        }
        assert!(limited > 0 && arm > 0, "{limited} limited, {arm} aarch64");
        for i in live {
            assert!(c
                .node(i)
                .members()
                .iter()
                .all(|m| m.id != victim_id || !m.is_live()));
        }
    }

    /// The checker is not vacuous: told that a node which runs services is down while every node
    /// still counts it, it reports the disagreement.
    #[test]
    fn placement_check_detects_disagreement() {
        let (s, mut c) = settled_without_kill(10, 8, 100);
        let mut up = c.up.clone();
        assert!(c.watch.check(&c.nodes, &up, &c.honest).is_ok());
        let holder = (0..s.nodes).find(|&i| c.watch.held(i) > 0).unwrap();
        up[holder] = false;
        let err = c.watch.check(&c.nodes, &up, &c.honest).unwrap_err();
        assert!(err.contains("places service"), "{err}");
    }

    /// The forgery checks are not vacuous: an entry signed with the operator's key but submitted
    /// to no node by the run, merged into one node, is counted and fails the safety check.
    #[test]
    fn an_entry_the_run_did_not_submit_is_found() {
        let (_, mut c) = settled_without_kill(3, 4, 10);
        assert_eq!(c.forged_held(), 0);
        assert!(c.check_safety().is_ok());
        let mut r = Prng::new(99);
        let bytes =
            crate::scenario::encode((3, 999, "stray"), (1, 1), false, &mut r, &c.ids.operator);
        let mut sink = c.world.sink(0, c.now);
        c.nodes[0]
            .submit(Instant(c.now), &bytes, &mut sink)
            .unwrap();
        assert_eq!(c.forged_held(), 1);
        let err = c.check_safety().unwrap_err();
        assert!(
            format!("{err:?}").contains("no operator submitted"),
            "{err:?}"
        );
    }
}
