//! Fault injection for the cluster runner: which nodes crash and when (one in four losing its
//! disk), when the network splits in two, and how a crash, a restart, lifting the faults and the
//! final kill act on the nodes, their disks and the acknowledgements.
//!
//! Invariants: every fault is drawn from the run's seeded PRNG in a fixed order (crashes, then
//! the partition), so a seed replays the same faults; every crash and partition falls within the
//! safety phase, and at `live_at` every fault ends except the kill, which is for good.

use super::{boot, Cluster, TICK_MS};
use myco_core::node::Storage;
use myco_core::Instant;

struct Crash {
    node: usize,
    down: u64,
    up: u64,
    wipe: bool,
}

/// Every fault of a run, drawn once before it starts.
pub(super) struct FaultPlan {
    crashes: Vec<Crash>,
    /// When the network splits, and the mask that puts each node on its side.
    partition: Option<(u64, u64)>,
    /// When the safety phase ends and every fault but the kill is lifted.
    live_at: u64,
}

impl Cluster {
    /// Draws the run's faults, all before `live_at`: crashes first, then the partition, so the
    /// PRNG's order (and so the trace) is the same for the same seed.
    pub(super) fn plan_faults(&mut self, live_at: u64) -> FaultPlan {
        let crashes = self.crash_schedule(live_at);
        let partition = self.partition_schedule(live_at);
        FaultPlan {
            crashes,
            partition,
            live_at,
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

    pub(super) fn crash(&mut self, i: usize, wipe: bool) {
        self.up[i] = false;
        self.world.disks[i].crash(&mut self.rng);
        if wipe {
            self.world.disks[i].wipe();
            // An acknowledgement promises durability on that box's disk; the disk is gone.
            for a in self
                .world
                .acks
                .acked
                .iter_mut()
                .filter(|a| **a == Some(i as u16))
            {
                *a = None;
            }
        }
        // Whatever was not durable when the power went is not acknowledged, ever.
        self.world
            .acks
            .pending
            .retain(|&(n, _, _)| usize::from(n) != i);
    }

    /// A crashed node boots from its disk: snapshot, then log up to the last good record.
    pub(super) fn restart(&mut self, i: usize) {
        // A node boots with the block it knew, unless its certificate predates it (it crashed
        // between a rotation and its new certificate): then it relearns the block from peers.
        let block = self.nodes[i].revocation_block().min(self.ids.issued_at[i]);
        *self.nodes[i] = boot(i, &self.s, &self.ids, block, self.now, self.now);
        let node = &mut self.nodes[i];
        let honest = self.honest[i];
        let recovery = self.world.disks[i].recover(|e| {
            let restored = node.restore(e);
            // The stolen box replays what the attacker wrote, and refuses some of it as the
            // daemon does at boot: a genuine tombstone behind a forged entry's far-future clock
            // is past retention (`Expired`).
            assert!(
                restored.is_ok() || !honest,
                "an honest node's own log holds only entries it accepted: {restored:?}"
            );
        });
        self.wal_truncations += u64::from(recovery.truncated);
        let mut sink = self.world.sink(i, self.now);
        let done = Storage::Recovered {
            wal_bytes: recovery.wal_bytes,
            truncated: recovery.truncated,
        };
        self.nodes[i].handle_storage(Instant(self.now), done, &mut sink);
        self.exec.restart(i);
        self.up[i] = true;
    }

    /// Applies what `plan` schedules for this tick: crashes and restarts, the partition, and at
    /// `live_at` the end of every fault (the partition heals and every crashed node but the
    /// killed one restarts).
    pub(super) fn apply_faults(&mut self, plan: &FaultPlan) {
        let FaultPlan {
            crashes,
            partition,
            live_at,
        } = plan;
        for c in crashes {
            if self.now == c.down && self.up[c.node] {
                self.crash(c.node, c.wipe);
            } else if self.now == c.up && !self.up[c.node] {
                self.restart(c.node);
            }
        }
        if let Some((at, mask)) = *partition {
            if self.now == at {
                // With zones, one whole zone is cut off from the others (deploys made meanwhile
                // must reach it after the heal); without, a random half of the nodes.
                let zones = u64::from(self.s.zones);
                for i in 0..self.s.nodes {
                    self.world.net.side[i] = if zones > 1 {
                        u8::from(u64::from(self.ids.metas[i].zone) == mask % zones)
                    } else {
                        (mask >> (i % 64) & 1) as u8
                    };
                }
            }
        }
        if self.now == *live_at {
            self.world.net.side.iter_mut().for_each(|s| *s = 0);
            for i in 0..self.nodes.len() {
                let gone =
                    self.killed.is_some_and(|(k, _)| k == i) || self.bridges_killed.contains(&i);
                if !self.up[i] && !gone {
                    self.restart(i);
                }
            }
        }
    }

    /// Loss and duplication stop, so membership can converge and the invariant be checked.
    /// SWIM under heavy loss keeps declaring some live members dead (at 50% loss about a tenth
    /// of all views at any moment), and the invariant is stated for converged membership.
    pub(super) fn lift_faults(&mut self) {
        self.world.net.faults.loss_ppm = 0;
        self.world.net.faults.duplicate_ppm = 0;
        // Transient command faults end with the network's: a `systemctl` that hangs costs a
        // minute before it is cancelled, so hangs drawn in the liveness phase could outlast the
        // settle window, which measures convergence, not fault handling. Units that fail or
        // crash-loop stay as they are: that is their state, which the invariants judge.
        self.exec.lift_command_faults();
    }

    /// Kills for good one honest node that runs services (drawn from the seed), under the
    /// scenario's own loss and duplication, unless the scenario keeps every node, that would
    /// leave no honest node, or none runs anything. Returns it.
    /// Kills for good every node of zone 1 that is a bridge now (by its own election), in the
    /// middle of the deploys: the deploys after it reach zone 1 only if the next bridge-capable
    /// boxes in rendezvous order take over.
    pub(super) fn kill_bridges(&mut self) {
        let zone = 1 % self.s.zones.max(1);
        for i in 0..self.nodes.len() {
            let bridge = self.up[i] && self.nodes[i].is_bridge();
            if bridge && self.ids.metas[i].zone == zone {
                self.crash(i, false);
                self.bridges_killed.push(i);
            }
        }
        self.bridge_syncs_at_kill = self.zone_bridge_syncs();
    }

    /// Exchanges started as an elected bridge by the boxes of zone 1 not killed as bridges.
    pub(super) fn zone_bridge_syncs(&self) -> u64 {
        let zone = 1 % self.s.zones.max(1);
        (0..self.nodes.len())
            .filter(|&i| self.ids.metas[i].zone == zone && !self.bridges_killed.contains(&i))
            .map(|i| self.nodes[i].counters().bridge_syncs)
            .sum()
    }

    pub(super) fn kill_one(&mut self) -> Option<usize> {
        let judged: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.judged(i)).collect();
        let holders: Vec<usize> = judged
            .iter()
            .copied()
            .filter(|&i| self.watch.held(i) > 0)
            .collect();
        if !self.s.kill || judged.len() < 2 || holders.is_empty() {
            return None;
        }
        let victim = holders[self.rng.below(holders.len() as u64) as usize];
        // Placement is per zone: only a node of the victim's zone placed its services.
        let zone = self.ids.metas[victim].zone;
        let peer = |&&i: &&usize| i != victim && self.ids.metas[i].zone == zone;
        let &from = judged.iter().find(peer)?;
        self.watch.mark_affected(&self.nodes, victim, from);
        self.crash(victim, false);
        self.killed = Some((victim, self.now));
        self.world.net.faults = self.faults;
        Some(victim)
    }
}
