//! Bridges: how desired state crosses zones while membership stays in each (docs/protocol.md §8,
//! docs/algorithm.md "Zones and bridges").
//!
//! A zone's bridges are the `BRIDGES_PER_ZONE` highest rendezvous scores among its live members
//! whose certificates carry a bridge scope, this node included if its own does: every member of a
//! zone computes the same set from the member records it already gossips, and a bridge that dies
//! is replaced by the next in the order as soon as SWIM declares it dead. An elected bridge runs
//! anti-entropy with bridges of other zones over bridge sessions (handshakes the two certificates'
//! scopes allow); it finds them through its `--bridge-seed` addresses and keeps a small directory
//! of the bridges it has heard from. Only the desired-state messages travel on a bridge session:
//! bucket digests, keys, wants, entries and revocations, all of which carry operator-signed data.
//! A member record never does: any other message on a bridge session is refused and counted.

use super::*;
use crate::config::{
    BRIDGES_PER_ZONE, BRIDGE_IDLE_ROUNDS, BRIDGE_PEERS_MAX, BRIDGE_SEEDS_MAX, BRIDGE_STALE_MS,
};
use crate::hash::{SipHasher, DOMAIN_BRIDGE};
use crate::schema::message::{BridgeRecord, BRIDGE_RECORDS_PER_FRAME};

/// A bridge of another zone this node has heard from over a bridge session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgePeer {
    pub id: u64,
    pub zone: u8,
    pub addr: PeerAddr,
    /// The root its last frame carried, or this node's own after syncing with it.
    pub root: u64,
    pub heard: Instant,
    /// Heard from directly (a session with it); otherwise learned from another bridge's
    /// directory, which never refreshes it, so a dead bridge's record dies out everywhere.
    pub direct: bool,
}

/// Where bridges of other zones are: the seed addresses from the configuration and the directory
/// of bridges heard from, oldest first out when full or stale.
pub(super) struct Bridges {
    pub seeds: Vec<PeerAddr, BRIDGE_SEEDS_MAX>,
    pub peers: Vec<BridgePeer, BRIDGE_PEERS_MAX>,
    rounds: u64,
}

impl Bridges {
    pub fn new(seeds: &[PeerAddr]) -> Bridges {
        let seeds = seeds.iter().take(BRIDGE_SEEDS_MAX).copied().collect();
        Bridges {
            seeds,
            peers: Vec::new(),
            rounds: 0,
        }
    }

    /// Records a frame or a handshake from bridge `id` of `zone` at `addr`.
    fn heard(&mut self, id: u64, zone: u8, addr: PeerAddr, root: u64, now: Instant) {
        self.peers.retain(|p| p.id != id);
        self.insert(BridgePeer {
            id,
            zone,
            addr,
            root,
            heard: now,
            direct: true,
        });
    }

    /// A record from another bridge's directory: added if unknown, never refreshing one.
    fn learned(&mut self, r: &BridgeRecord, own_zone: u8, now: Instant) {
        if r.zone == own_zone || self.peers.iter().any(|p| p.id == r.id || p.addr == r.addr) {
            return;
        }
        self.insert(BridgePeer {
            id: r.id,
            zone: r.zone,
            addr: r.addr,
            root: 0,
            heard: now,
            direct: false,
        });
    }

    fn insert(&mut self, p: BridgePeer) {
        if self.peers.is_full() {
            let oldest = (0..self.peers.len()).min_by_key(|&i| self.peers[i].heard);
            self.peers.remove(oldest.expect("full table is not empty"));
        }
        self.peers.push(p).expect("room made above");
    }

    /// The freshest records this node heard directly, for a `Bridges` message.
    fn records(&self) -> Vec<BridgeRecord, BRIDGE_RECORDS_PER_FRAME> {
        let mut direct: Vec<&BridgePeer, BRIDGE_PEERS_MAX> =
            self.peers.iter().filter(|p| p.direct).collect();
        direct.sort_unstable_by_key(|p| core::cmp::Reverse(p.heard));
        let to_record = |p: &&BridgePeer| BridgeRecord {
            id: p.id,
            zone: p.zone,
            addr: p.addr,
        };
        direct
            .iter()
            .take(BRIDGE_RECORDS_PER_FRAME)
            .map(to_record)
            .collect()
    }

    fn knows(&self, addr: PeerAddr) -> bool {
        self.seeds.contains(&addr) || self.peers.iter().any(|p| p.addr == addr)
    }
}

/// A member's rendezvous score for bridging `zone`: the highest scores are the zone's bridges.
pub fn bridge_score(zone: u8, id: u64) -> u64 {
    let mut h = SipHasher::new(DOMAIN_BRIDGE);
    h.write(&[zone]);
    h.write_u64(id);
    h.finish()
}

impl Node {
    /// Whether this node is one of its zone's bridges now: its certificate has a bridge scope and
    /// fewer than `BRIDGES_PER_ZONE` live bridge-capable members of its zone outscore it.
    pub fn is_bridge(&self) -> bool {
        if !self.meta.bridge {
            return false;
        }
        let zone = self.meta.zone;
        let mine = (bridge_score(zone, self.id), self.id);
        let above = self
            .members
            .list()
            .iter()
            .filter(|m| m.is_live() && m.meta.bridge && m.meta.zone == zone)
            .filter(|m| (bridge_score(zone, m.id), m.id) > mine)
            .count();
        above < BRIDGES_PER_ZONE
    }

    /// The bridges of other zones this node has heard from recently.
    pub fn bridge_peers(&self) -> &[BridgePeer] {
        &self.bridges.peers
    }

    /// One round of bridging, run with each gossip round: an elected bridge starts anti-entropy
    /// with a bridge whose last root differs from its own, or, every `BRIDGE_IDLE_ROUNDS` (and
    /// while it knows none), with a seed or known bridge at random, which finds bridges that
    /// replaced dead ones and zones it never heard from.
    pub(super) fn bridge_round(&mut self, sink: &mut impl Sink) {
        let now = self.out.now;
        self.bridges
            .peers
            .retain(|p| now.since_ms(p.heard) < BRIDGE_STALE_MS);
        if !self.is_bridge() {
            return;
        }
        self.bridges.rounds += 1;
        let root = self.store.root();
        let b = &self.bridges;
        let differ = b.peers.iter().filter(|p| p.root != root).count();
        let target = if differ > 0 {
            let nth = self.rng.below(differ as u64) as usize;
            b.peers
                .iter()
                .filter(|p| p.root != root)
                .nth(nth)
                .map(|p| p.addr)
        } else if b.peers.is_empty() || b.rounds.is_multiple_of(BRIDGE_IDLE_ROUNDS) {
            let n = b.seeds.len() + b.peers.len();
            let nth = self.rng.below(n.max(1) as u64) as usize;
            let peers = b.peers.iter().map(|p| p.addr);
            b.seeds.iter().copied().chain(peers).nth(nth)
        } else {
            None
        };
        let Some(target) = target else {
            return;
        };
        self.out.counters.bridge_syncs += 1;
        self.send_all_buckets(sink, target);
        // With the digests, the bridges this node has heard from: the target meets zones and
        // bridges it has no seed for.
        let list = self.bridges.records();
        if !list.is_empty() {
            let root = self.store.root();
            self.out.send(sink, target, root, Message::Bridges { list });
        }
        // As with members: assume the exchange agrees; the peer's next frame corrects it.
        if let Some(p) = self.bridges.peers.iter_mut().find(|p| p.addr == target) {
            p.root = root;
        }
    }

    /// A bridge session just opened. The responder's first sealed frame must come soon (the
    /// initiator repeats its Finish until then): its bucket digests, which start an exchange.
    pub(super) fn bridge_established(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        peer: &CertBody,
        responder: bool,
    ) {
        let now = self.out.now;
        self.bridges.heard(peer.node_id(), peer.zone, from, 0, now);
        self.out.counters.bridge_sessions += 1;
        if responder {
            self.send_all_buckets(sink, from);
        }
    }

    /// Whether `addr` is a seed or a known bridge: frames from it may start handshakes.
    pub(super) fn bridge_known(&self, addr: PeerAddr) -> bool {
        self.bridges.knows(addr)
    }

    /// Whether this node's certificate lets it bridge to `zone`: the frame-level zone check.
    pub(super) fn bridges_to(&self, zone: u8) -> bool {
        let scope = self.out.creds.cert().bridge;
        zone != self.meta.zone && scope.is_some_and(|s| s.covers(zone))
    }

    /// A message from bridge `sender` of `zone`: only desired state is accepted. Anything else,
    /// a member record above all, is refused and counted, and changes nothing.
    pub(super) fn dispatch_bridge(
        &mut self,
        from: PeerAddr,
        (sender, zone, root): (u64, u8, u64),
        msg: Message<'_>,
        sink: &mut impl Sink,
    ) {
        let allowed = matches!(
            msg,
            Message::SyncBuckets { .. }
                | Message::SyncKeys { .. }
                | Message::Want { .. }
                | Message::Entries { .. }
                | Message::Revocation { .. }
                | Message::Bridges { .. }
        );
        if !allowed {
            return self.refuse(sink, Refusal::Bridge);
        }
        let now = self.out.now;
        self.bridges.heard(sender, zone, from, root, now);
        if let Message::Bridges { list } = &msg {
            for r in list {
                self.bridges.learned(r, self.meta.zone, now);
            }
            return;
        }
        let before = self.out.counters.entries_changed;
        self.dispatch(now, from, sender, msg, sink);
        self.out.counters.bridge_entries += self.out.counters.entries_changed - before;
    }
}
