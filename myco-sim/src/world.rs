//! Everything the simulated nodes share: the network, their disks, operator acknowledgements,
//! the trace hash, the random source handshakes draw from, and the signature memo.
//!
//! `World::sink(i, now)` is node `i`'s view of it: the `Sink` the core writes its effects to.

use crate::disk::SimDisk;
use crate::net::{Faults, Net};
use crate::scenario::Scenario;
use crate::uniform::Uniform;
use myco_core::config::{FRAME_BYTES, PEER_BUILDS_MAX};
use myco_core::crypto::{check_entry, EntrySignatureError, PublicKey};
use myco_core::hash::{digest, DOMAIN_ENTRY};
use myco_core::random::Prng;
use myco_core::schema::entry::Entry;
use myco_core::schema::message::BuildRequest;
use myco_core::{Event, PeerAddr, Sink};
use std::collections::{HashMap, HashSet};

pub fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4([127, 77, (i >> 8) as u8, i as u8], 7946)
}

/// Where peers see node `i`'s frames come from when it is behind the NAT model: the NAT's
/// public address, another IP than its own (`addr`), with a port of its own.
pub fn nat_addr(i: usize) -> PeerAddr {
    PeerAddr::v4([127, 78, 0, 1], 10_000 + i as u16)
}

/// Where node `i`'s frames come from as their receivers see them: the NAT model rewrites the
/// source of a node behind it, as a real NAT does, so its peers tell it they see it elsewhere.
pub fn seen_at(world: &World, i: usize) -> PeerAddr {
    if world.net.behind(i) {
        nat_addr(i)
    } else {
        addr(i)
    }
}

/// The node at `a`: its own address, or the NAT's mapping for it.
pub fn index_of(a: PeerAddr) -> Option<u16> {
    let o = a.as_v4()?;
    let own = o[0] == 127 && o[1] == 77 && a.port == 7946;
    let natted = o == [127, 78, 0, 1] && a.port >= 10_000;
    if natted {
        return Some(a.port - 10_000);
    }
    own.then(|| u16::from_be_bytes([o[2], o[3]]))
}

pub fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

/// Operator submissions waiting for their append to be durable.
pub struct Acks {
    /// (node, ticket, operation index)
    pub pending: Vec<(u16, u64, usize)>,
    /// The node that acknowledged each operation, if one did.
    pub acked: Vec<Option<u16>>,
}

pub struct World {
    pub net: Net,
    pub disks: Vec<SimDisk>,
    pub acks: Acks,
    pub trace: u64,
    /// Handshake secrets: deterministic here, so runs replay; the daemon uses the OS source.
    pub entropy: Prng,
    /// Answers of real Ed25519 verifications of submitted entries, shared by all nodes: every
    /// node still asks and acts on the answer, but each distinct entry costs one verification.
    /// Only submitted entries are memoised, so the memo is bounded and allocated at boot.
    pub memo: HashMap<u64, bool, Uniform>,
    pub submitted: HashSet<u64, Uniform>,
    /// Addresses at or above this index are not nodes (the adversary) and get nothing.
    pub nodes: usize,
    /// Per node: the desired state or the membership changed since its executor was told.
    pub placement_changed: Vec<bool>,
    /// Per node: build requests its node received since its executor was last stepped, and
    /// builders' answers that a build failed (`Event::BuildFailed`), each with its sender; more
    /// than `PEER_BUILDS_MAX` of either in one step are dropped, as the daemon's sink drops them.
    pub build_requests: Vec<heapless::Vec<FromPeer, PEER_BUILDS_MAX>>,
    pub build_failed: Vec<heapless::Vec<FromPeer, PEER_BUILDS_MAX>>,
}

/// A build request, or a builder's answer that one failed, with the id of the member it came from.
pub type FromPeer = (u64, BuildRequest);

pub struct NodeSink<'a> {
    world: &'a mut World,
    from: usize,
    now: u64,
}

impl World {
    /// The world of scenario `s` with a network of `slots` frames in flight; one address more
    /// than the nodes, for the adversary.
    pub fn new(s: &Scenario, faults: Faults, slots: usize) -> World {
        let ops_max = s.services + s.updates + s.deletes + 1;
        World {
            net: Net::new(s.nodes + 1, faults, s.seed ^ 0x004e_4554, slots),
            disks: (0..s.nodes).map(|_| SimDisk::new()).collect(),
            acks: Acks {
                pending: Vec::new(),
                acked: Vec::new(),
            },
            trace: s.seed,
            entropy: Prng::new(s.seed ^ 0x454e_5452),
            memo: HashMap::with_capacity_and_hasher(ops_max, Uniform::default()),
            submitted: HashSet::with_capacity_and_hasher(ops_max, Uniform::default()),
            nodes: s.nodes,
            placement_changed: vec![true; s.nodes],
            build_requests: vec![heapless::Vec::new(); s.nodes],
            build_failed: vec![heapless::Vec::new(); s.nodes],
        }
    }

    pub fn sink(&mut self, from: usize, now: u64) -> NodeSink<'_> {
        NodeSink {
            world: self,
            from,
            now,
        }
    }
}

impl Sink for NodeSink<'_> {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        self.send_sealed(to, &mut frame.clone(), |_| {});
    }

    fn send_sealed(
        &mut self,
        to: PeerAddr,
        frame: &mut [u8; FRAME_BYTES],
        seal: impl FnOnce(&mut [u8; FRAME_BYTES]),
    ) {
        // Frames to addresses outside the cluster (a node's stale idea of a peer) are lost.
        let Some(to) = index_of(to).filter(|&t| usize::from(t) <= self.world.nodes) else {
            return;
        };
        let w = &mut self.world;
        w.trace = mix(
            w.trace,
            self.now ^ ((self.from as u64) << 32) ^ (u64::from(to) << 48),
        );
        w.net
            .send_sealing(self.now, (self.from as u16, to), frame, seal);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::MemberDead(id) | Event::MemberLeft(id) => {
                self.world.trace = mix(self.world.trace, id);
                self.world.placement_changed[self.from] = true;
            }
            Event::MemberJoined(_) | Event::MemberAlive(_) | Event::EntryChanged { .. } => {
                self.world.placement_changed[self.from] = true;
            }
            Event::BuildRequest { from, request } => {
                let _ = self.world.build_requests[self.from].push((from, request));
            }
            Event::BuildFailed { from, request } => {
                let _ = self.world.build_failed[self.from].push((from, request));
            }
            Event::Durable { ticket } => {
                let from = self.from as u16;
                let acks = &mut self.world.acks;
                let acked = &mut acks.acked;
                acks.pending.retain(|&(n, t, op)| {
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
        self.world.disks[self.from].append(entry, ticket);
    }

    fn checkpoint(&mut self) {
        self.world.disks[self.from].checkpoint_requested = true;
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.world.entropy.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    fn verify_entry(
        &mut self,
        operator: &PublicKey,
        entry: &Entry<'_>,
    ) -> Result<(), EntrySignatureError> {
        let mut whole = [0u8; myco_core::config::ENTRY_BYTES_MAX];
        let n = entry.signed.len();
        whole[..n].copy_from_slice(entry.signed);
        whole[n..n + 64].copy_from_slice(entry.signature);
        let d = digest(DOMAIN_ENTRY, &whole[..n + 64]);
        if !self.world.submitted.contains(&d) {
            return check_entry(operator, entry);
        }
        if let Some(&ok) = self.world.memo.get(&d) {
            return if ok {
                Ok(())
            } else {
                Err(EntrySignatureError::BadSignature)
            };
        }
        let result = check_entry(operator, entry);
        self.world.memo.insert(d, result.is_ok());
        result
    }
}
