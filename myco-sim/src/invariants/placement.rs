//! The placement invariant: once the cluster has converged, every live node places every service
//! on the same members, and those are the rendezvous winners among the boxes really up.
//!
//! "Converged" means both of:
//! - state: every judged node (up and honest) holds the same state hash;
//! - membership: every judged node lists every other up node of its zone as not dead (alive or
//!   suspect, since placement counts suspects), every down node as dead or not at all, and nobody
//!   else as live; membership is per zone (docs/algorithm.md section 10).
//!
//! Then, for every stored service, each judged node's `Node::placement` must equal the answer of
//! `place::place` over the up boxes of its zone with the metadata their certificates carry, and
//! that answer must hold exactly `min(replicas, eligible up boxes of the zone)` ids, counted here
//! independently, every one of them in the zone the service names, if it names one. Each judged
//! node's `Node::placed_here` must list exactly the services whose answer names it.
//!
//! Placement is a function of the state and the member set, so a check runs once per distinct
//! (state hash, set of up nodes) and is remembered. It allocates nothing (scratch space is
//! allocated at boot), so the counting allocator also proves that `Node::placement` and
//! `Node::placed_here` do not allocate.

use crate::uniform::Uniform;
use crate::world::mix;
use myco_core::config::SERVICES_MAX;
use myco_core::place::{self, eligible, Candidate};
use myco_core::schema::message::MemberMeta;
use myco_core::Node;
use std::collections::HashMap;

pub struct Watch {
    /// Node id to simulator index.
    index: HashMap<u64, usize, Uniform>,
    ids: Vec<u64>,
    metas: Vec<MemberMeta>,
    /// The zones the nodes are in, each once (made at boot: checks allocate nothing).
    zones: Vec<u8>,
    /// Scratch space, one slot per node, reused by every check.
    seen: Vec<bool>,
    held: Vec<usize>,
    candidates: Vec<Candidate>,
    /// The (state hash, up set) last checked; the invariant held there.
    last: Option<(u64, u64)>,
    /// Key hashes of the services a killed node ran, as the last check placed them.
    affected: Vec<u64>,
    /// Full checks run.
    pub checks: u64,
}

impl Watch {
    pub fn new(nodes: &[Box<Node>], metas: &[MemberMeta]) -> Watch {
        let ids: Vec<u64> = nodes.iter().map(|n| n.id()).collect();
        let index = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        for (n, m) in nodes.iter().zip(metas) {
            assert_eq!(n.meta(), *m, "a node's meta comes from its certificate");
        }
        let mut zones: Vec<u8> = metas.iter().map(|m| m.zone).collect();
        zones.sort_unstable();
        zones.dedup();
        Watch {
            index,
            ids,
            zones,
            metas: metas.to_vec(),
            seen: vec![false; nodes.len()],
            held: vec![0; nodes.len()],
            candidates: Vec::with_capacity(nodes.len()),
            last: None,
            affected: Vec::with_capacity(SERVICES_MAX),
            checks: 0,
        }
    }

    /// Services the last check placed on node `i`.
    pub fn held(&self, i: usize) -> usize {
        self.held[i]
    }

    /// Remembers the services placed on `victim` (by node `from`, which the last check found in
    /// agreement with every node) before it is killed.
    pub fn mark_affected(&mut self, nodes: &[Box<Node>], victim: usize, from: usize) {
        let id = self.ids[victim];
        let store = nodes[from].store();
        self.affected.clear();
        for slot in store.slots() {
            if nodes[from].placement(slot.key_hash).contains(&id) {
                self.affected.push(slot.key_hash);
            }
        }
        assert_eq!(self.affected.len(), self.held[victim]);
    }

    /// True once every judged node's placement of every affected service excludes `victim`. A
    /// node that no longer lists the victim as live cannot place anything on it (its candidates
    /// are itself and its live members), so only the others are asked.
    pub fn replaced(
        &self,
        nodes: &[Box<Node>],
        up: &[bool],
        honest: &[bool],
        victim: usize,
    ) -> bool {
        let id = self.ids[victim];
        (0..nodes.len()).filter(|&i| up[i] && honest[i]).all(|i| {
            let n = &nodes[i];
            let live = n.members().iter().any(|m| m.id == id && m.is_live());
            !live || self.affected.iter().all(|&k| !n.placement(k).contains(&id))
        })
    }

    /// The member id of node `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// The literal form of `replaced`, asked of every judged node for every affected service.
    pub fn confirm_replaced(
        &self,
        nodes: &[Box<Node>],
        up: &[bool],
        honest: &[bool],
        victim: usize,
    ) -> Result<(), String> {
        let id = self.ids[victim];
        for i in (0..nodes.len()).filter(|&i| up[i] && honest[i]) {
            for &k in &self.affected {
                if nodes[i].placement(k).contains(&id) {
                    return Err(format!(
                        "node {i} still places key {k:016x} on killed node {victim}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the invariant if the cluster has converged on a (state, up set) not yet checked.
    /// Returns whether the cluster has converged now and the invariant is known to hold for it;
    /// a violation is the error, with what broke.
    pub fn observe(
        &mut self,
        nodes: &[Box<Node>],
        up: &[bool],
        honest: &[bool],
    ) -> Result<bool, String> {
        let judged = |i: usize| up[i] && honest[i];
        let mut hashes = (0..nodes.len())
            .filter(|&i| judged(i))
            .map(|i| nodes[i].state_hash());
        let Some(state) = hashes.next() else {
            return Ok(false);
        };
        if !hashes.all(|h| h == state) {
            return Ok(false);
        }
        // Placement is a function of the state and of each node's set of live members: with both
        // converged on a (state, up set) already checked, the answer is the one checked.
        if !self.membership_converged(nodes, up, honest) {
            return Ok(false);
        }
        let key = (state, up_digest(up));
        if self.last == Some(key) {
            return Ok(true);
        }
        self.check(nodes, up, honest)?;
        self.last = Some(key);
        self.checks += 1;
        Ok(true)
    }

    /// The first judged node whose membership is not the up set, and how: what a run stuck
    /// before placement was checked needs to be understood.
    pub fn membership_gap(
        &self,
        nodes: &[Box<Node>],
        up: &[bool],
        honest: &[bool],
    ) -> Option<String> {
        for (i, n) in nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| up[i] && honest[i])
        {
            for m in n.members() {
                let j = self.index.get(&m.id).copied();
                if m.is_live() != j.is_some_and(|j| up[j]) {
                    return Some(format!("node {i} holds member {j:?} as {:?}", m.state));
                }
            }
            let listed = |j: usize| n.members().iter().any(|m| m.id == self.ids[j]);
            let peer = |j: usize| j != i && up[j] && self.same_zone(i, j);
            if let Some(j) = (0..nodes.len()).find(|&j| peer(j) && !listed(j)) {
                return Some(format!("node {i} does not list up node {j}"));
            }
        }
        None
    }

    /// Every judged node sees exactly the up nodes as not dead.
    fn membership_converged(&mut self, nodes: &[Box<Node>], up: &[bool], honest: &[bool]) -> bool {
        for (i, n) in nodes.iter().enumerate() {
            if !(up[i] && honest[i]) {
                continue;
            }
            self.seen.fill(false);
            for m in n.members() {
                match self.index.get(&m.id) {
                    // A member of another zone is a record that crossed: never converged.
                    Some(&j) if !self.same_zone(i, j) => return false,
                    Some(&j) if up[j] && m.is_live() => self.seen[j] = true,
                    Some(&j) if up[j] => return false,
                    // A down node, or an identity no box has, must not be live.
                    _ if m.is_live() => return false,
                    _ => {}
                }
            }
            if (0..nodes.len()).any(|j| j != i && up[j] && self.same_zone(i, j) && !self.seen[j]) {
                return false;
            }
        }
        true
    }

    fn same_zone(&self, i: usize, j: usize) -> bool {
        self.metas[i].zone == self.metas[j].zone
    }

    pub(crate) fn check(
        &mut self,
        nodes: &[Box<Node>],
        up: &[bool],
        honest: &[bool],
    ) -> Result<(), String> {
        let judged = |i: usize| up[i] && honest[i];
        let first = (0..nodes.len())
            .find(|&i| judged(i))
            .expect("observe found one");
        self.held.fill(0);
        for k in 0..self.zones.len() {
            let zone = self.zones[k];
            self.check_zone(nodes, (up, honest), first, zone)?;
        }
        for i in (0..nodes.len()).filter(|&i| judged(i)) {
            let me = self.ids[i];
            let mut here = 0;
            for slot in nodes[i].placed_here() {
                if !nodes[i].placement(slot.key_hash).contains(&me) {
                    return Err(format!(
                        "node {i} runs key {:016x}, which is placed elsewhere",
                        slot.key_hash
                    ));
                }
                here += 1;
            }
            if here != self.held[i] {
                return Err(format!(
                    "node {i} runs {here} services; {} are placed on it",
                    self.held[i]
                ));
            }
        }
        Ok(())
    }

    /// Placement as the judged nodes of `zone` see it: over the zone's up boxes only, and every
    /// box it names in the zone the service requires, if it requires one.
    fn check_zone(
        &mut self,
        nodes: &[Box<Node>],
        (up, honest): (&[bool], &[bool]),
        first: usize,
        zone: u8,
    ) -> Result<(), String> {
        let judged = |i: usize| up[i] && honest[i] && self.metas[i].zone == zone;
        self.candidates.clear();
        for j in (0..nodes.len()).filter(|&j| up[j] && self.metas[j].zone == zone) {
            self.candidates.push(Candidate {
                id: self.ids[j],
                meta: self.metas[j],
            });
        }
        let store = nodes[first].store();
        for slot in store.slots() {
            let bytes = store.entry(slot);
            let entry = bytes.decode();
            let name = entry.body.name;
            let expected =
                place::place_entry(slot.key_hash, &entry.body, self.candidates.iter().copied());
            if let Some(spec) = &entry.body.spec {
                let eligible_up = self
                    .candidates
                    .iter()
                    .filter(|c| eligible(&spec.requires, &c.meta))
                    .count();
                let size = usize::from(spec.replicas).min(eligible_up);
                if expected.len() != size {
                    return Err(format!(
                        "service {name} is placed on {} members, not min(replicas {}, eligible live {eligible_up})",
                        expected.len(),
                        spec.replicas
                    ));
                }
                let wrong = expected.iter().find(|id| {
                    let z = self.metas[self.index[*id]].zone;
                    z != zone || spec.requires.zone.is_some_and(|r| r != z)
                });
                if let Some(id) = wrong {
                    return Err(format!(
                        "service {name} (zone {:?}) is placed on {id:x}, outside its zone",
                        spec.requires.zone
                    ));
                }
            }
            for id in &expected {
                self.held[self.index[id]] += 1;
            }
            for i in (0..nodes.len()).filter(|&i| judged(i)) {
                let got = nodes[i].placement(slot.key_hash);
                if got != expected {
                    return Err(format!(
                        "node {i} places service {name} on {:x?}; the live eligible winners are {:x?}",
                        got.as_slice(),
                        expected.as_slice()
                    ));
                }
            }
        }
        Ok(())
    }
}

fn up_digest(up: &[bool]) -> u64 {
    up.iter()
        .enumerate()
        .fold(0x5550, |h, (i, &u)| mix(h, (i as u64) << 1 | u64::from(u)))
}

/// Member records that crossed a zone: in node `i`'s member table, records of a box of another
/// zone (by the simulator's truth, `zone_of`) or claiming another zone than `zone`. Membership
/// stays in its zone (docs/protocol.md §8), so any such record is a safety failure.
pub fn crossing_records(
    zone: u8,
    members: &[myco_core::gossip::members::Member],
    zone_of: impl Fn(u64) -> Option<u8>,
) -> usize {
    members
        .iter()
        .filter(|m| m.meta.zone != zone || zone_of(m.id).is_some_and(|z| z != zone))
        .count()
}

impl Watch {
    /// `crossing_records` summed over every honest node (crashed ones included: a record that
    /// crossed is one whether or not its holder is up now).
    pub fn crossing(&self, nodes: &[Box<Node>], honest: &[bool]) -> usize {
        let zone_of = |id: u64| self.index.get(&id).map(|&j| self.metas[j].zone);
        (0..nodes.len())
            .filter(|&i| honest[i])
            .map(|i| crossing_records(self.metas[i].zone, nodes[i].members(), zone_of))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::config::Profile;
    use myco_core::gossip::members::Members;
    use myco_core::schema::entry::Arch;
    use myco_core::schema::message::{MemberState, MemberUpdate};
    use myco_core::{Instant, PeerAddr};

    /// The checker finds a record of another zone's box, and one claiming another zone, and
    /// counts nothing in a table of the zone's own members: it can fail.
    #[test]
    fn crossing_records_are_found() {
        let mut members = Members::new(Profile::LAN);
        let record = |id: u64, zone: u8| MemberUpdate {
            id,
            incarnation: 0,
            state: MemberState::Alive,
            addr: PeerAddr::v4([10, 0, 0, id as u8], 7946),
            meta: MemberMeta {
                arch: Arch::X86_64,
                zone,
                gpu: false,
                bridge: false,
                relay: false,
                nat: false,
            },
        };
        // Boxes 1 and 2 are in zone 0, box 3 in zone 1.
        let truth = |id: u64| Some(u8::from(id == 3));
        for (id, zone) in [(1, 0), (2, 0)] {
            members.apply(Instant(0), &record(id, zone), 0);
        }
        assert_eq!(crossing_records(0, members.list(), truth), 0);
        members.apply(Instant(0), &record(3, 1), 0);
        assert_eq!(crossing_records(0, members.list(), truth), 1);
        members.apply(Instant(0), &record(4, 2), 0);
        assert_eq!(crossing_records(0, members.list(), |_| None), 2);
    }
}
