//! Relays for boxes behind NAT (docs/protocol.md section 12).
//!
//! A box behind NAT (`--behind-nat`) keeps sessions with the `RELAYS_PER_BOX` relays of its zone
//! that rank highest for it by rendezvous hashing, and sends each a frame at least every
//! `RELAY_KEEPALIVE_MS` so its NAT keeps the mapping open. A relay (`--relay`) forwards a frame
//! marked `FLAG_RELAYED` as it came, sealed end to end, to the node id its header names, and only
//! when both ends hold a live session with it, the frame came from the address the sender's
//! session authenticated last, and the sender and the relay are within their rates: it is never
//! an open reflector, and it amplifies nothing (one frame in, at most one out).

use super::transport::{Link, Route};
use super::{Node, Refusal, Sink};
use crate::config::{
    RELAYS_PER_BOX, RELAY_KEEPALIVE_MS, RELAY_LIVE_MS, RELAY_SENDERS_MAX, RELAY_SENDER_BURST,
    RELAY_SENDER_PER_S, RELAY_TOTAL_BURST, RELAY_TOTAL_PER_S,
};
use crate::hash::{SipHasher, DOMAIN_RELAY};
use crate::schema::addr::PeerAddr;
use crate::schema::frame::Frame;
use crate::schema::message::{MemberState, PageKind};
use crate::time::Instant;
use heapless::Vec;

/// Relay `relay`'s rendezvous score for the box `natted` of `zone`: a box's relays are its
/// highest scores, so each box ranks the relays its own way and boxes spread over them.
pub fn relay_score(zone: u8, natted: u64, relay: u64) -> u64 {
    let mut h = SipHasher::new(DOMAIN_RELAY);
    h.write(&[zone]);
    h.write_u64(natted);
    h.write_u64(relay);
    h.finish()
}

/// The relays of box `natted`, best first: the `RELAYS_PER_BOX` highest scores among
/// `candidates` (the live relay-capable members of its zone that are not behind NAT). Every
/// member that agrees on who is live computes the same list; when one dies, the next in the
/// order takes its place and the others stay.
pub fn choose_relays(
    zone: u8,
    natted: u64,
    candidates: impl Iterator<Item = u64>,
) -> Vec<u64, RELAYS_PER_BOX> {
    let mut best: Vec<(u64, u64), RELAYS_PER_BOX> = Vec::new();
    for id in candidates.filter(|&id| id != natted) {
        let key = (relay_score(zone, natted, id), id);
        if best.iter().any(|&(_, b)| b == id) {
            continue;
        }
        if best.is_full() {
            let worst = best.iter().min().copied().expect("full is not empty");
            if key <= worst {
                continue;
            }
            let i = best.iter().position(|&k| k == worst).expect("present");
            best.swap_remove(i);
        }
        best.push(key).expect("room made above");
    }
    best.sort_unstable_by(|a, b| b.cmp(a));
    best.iter().map(|&(_, id)| id).collect()
}

/// Why a relay did not forward a frame. Counted; the frame changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRefusal {
    /// This node was not started `--relay` (or is behind NAT itself).
    NotRelay,
    /// The destination is the sender, or this relay.
    Loop,
    /// No session with the sender, the frame came from another address than the sender's
    /// session's, or its header zone is not the session's: possibly spoofed. At the destination:
    /// a sender it does not list.
    Sender,
    /// No live session with the destination, or one of another zone: nowhere safe to send it.
    Destination,
    /// The sender, or the relay in all, is over its rate.
    Rate,
}

impl RelayRefusal {
    /// Every reason's name, in `Counters::relay_refused` order: the daemon's metric labels.
    pub const NAMES: [&'static str; 5] = ["not_relay", "loop", "sender", "destination", "rate"];
}

/// A token bucket counted in thousandths of a frame, so a refill per millisecond is exact.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    id: u64,
    milli: u64,
    at: Instant,
}

impl Bucket {
    fn full(id: u64, burst: u64, now: Instant) -> Bucket {
        Bucket {
            id,
            milli: burst * 1000,
            at: now,
        }
    }

    /// Refills for the time since the last call and takes one frame if there is one.
    fn take(&mut self, now: Instant, per_s: u64, burst: u64) -> bool {
        let refill = now.since_ms(self.at).saturating_mul(per_s);
        self.milli = self.milli.saturating_add(refill).min(burst * 1000);
        self.at = now;
        let ok = self.milli >= 1000;
        if ok {
            self.milli -= 1000;
        }
        ok
    }
}

/// A relay's forwarding decisions: the rate of each sender and of the relay in all.
pub struct Forwarder {
    senders: Vec<Bucket, RELAY_SENDERS_MAX>,
    total: Bucket,
}

/// One frame a relay was asked to forward: who sent it from where, and for whom.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub from: PeerAddr,
    pub sender: u64,
    pub dest: u64,
    pub zone: u8,
}

impl Forwarder {
    pub fn new(now: Instant) -> Forwarder {
        Forwarder {
            senders: Vec::new(),
            total: Bucket::full(0, RELAY_TOTAL_BURST, now),
        }
    }

    /// Where to send the frame `f` describes, or why not. `me` is this relay's id and `zone` its
    /// zone; `links` its sessions. Only a frame that passes every check costs a token.
    pub fn decide(
        &mut self,
        now: Instant,
        (me, zone): (u64, u8),
        links: &[Link],
        f: Forward,
    ) -> Result<PeerAddr, RelayRefusal> {
        if f.dest == f.sender || f.dest == me {
            return Err(RelayRefusal::Loop);
        }
        // A bridge session is not membership: nothing is relayed into or out of another zone.
        let sender = links.iter().find(|l| l.peer == f.sender);
        if !sender.is_some_and(|l| l.addr == f.from && l.zone == zone && f.zone == zone) {
            return Err(RelayRefusal::Sender);
        }
        let dest = links.iter().find(|l| l.peer == f.dest);
        let live = |l: &&Link| l.zone == zone && now.since_ms(l.last_rx()) < RELAY_LIVE_MS;
        let Some(dest) = dest.filter(live) else {
            return Err(RelayRefusal::Destination);
        };
        if !self.take_sender(now, f.sender) {
            return Err(RelayRefusal::Rate);
        }
        if !self.total.take(now, RELAY_TOTAL_PER_S, RELAY_TOTAL_BURST) {
            return Err(RelayRefusal::Rate);
        }
        Ok(dest.addr)
    }

    fn take_sender(&mut self, now: Instant, id: u64) -> bool {
        let i = match self.senders.iter().position(|b| b.id == id) {
            Some(i) => i,
            None => {
                if self.senders.is_full() {
                    // The bucket idle longest gives way; a sender evicted comes back with a
                    // full burst, but only members with sessions have buckets at all.
                    let lru = (0..self.senders.len()).min_by_key(|&i| self.senders[i].at);
                    self.senders.swap_remove(lru.expect("full is not empty"));
                }
                let b = Bucket::full(id, RELAY_SENDER_BURST, now);
                self.senders.push(b).expect("room made above");
                self.senders.len() - 1
            }
        };
        self.senders[i].take(now, RELAY_SENDER_PER_S, RELAY_SENDER_BURST)
    }
}

impl Node {
    /// The relays this box keeps when behind NAT (or that a box behind NAT would keep if it were
    /// `natted`), best first, from the live members it knows.
    pub fn relays_of(&self, natted: u64) -> Vec<u64, RELAYS_PER_BOX> {
        let zone = self.meta.zone;
        let me = (self.meta.relay && !self.meta.nat).then_some(self.id);
        let live = self.members.list().iter().filter(|m| m.is_live());
        let capable = live.filter(|m| m.meta.relay && !m.meta.nat && m.meta.zone == zone);
        choose_relays(zone, natted, capable.map(|m| m.id).chain(me))
    }

    /// A box behind NAT opens sessions with its relays and sends each a frame when nothing went
    /// to it for `RELAY_KEEPALIVE_MS`: its own record, which the relay needs no answer to.
    pub(super) fn keep_relays_open(&mut self, now: Instant, sink: &mut impl Sink) {
        if !self.meta.nat {
            return;
        }
        for relay in self.relays_of(self.id) {
            let Some(addr) = self.members.get(relay).map(|m| m.addr) else {
                continue;
            };
            let link = self.out.links.iter().find(|l| l.addr == addr);
            match link.map(|l| now.since_ms(l.last_tx())) {
                Some(idle) if idle < RELAY_KEEPALIVE_MS => {}
                Some(_) => {
                    self.send_record(sink, addr, self.me());
                    self.out.counters.relay_keepalives += 1;
                }
                None => self.out.ensure_handshake(sink, addr),
            }
        }
    }

    /// Where to handle `frame` as coming from: `from` for a direct frame. A frame marked
    /// relayed: `None` if it was forwarded or refused here; for this node itself, the address of
    /// its sender. The sender is where its member record
    /// says, where answers go (through its own relay if it is behind NAT too). A stranger's is
    /// dropped, but the relay knows it (it holds a session with it): trade tables with the relay
    /// (at most once per `MEMBER_PULL_MIN_MS`), and the sender's next try is answered.
    pub(super) fn source_of(
        &mut self,
        now: Instant,
        from: PeerAddr,
        frame: &Frame<'_>,
        sink: &mut impl Sink,
    ) -> Option<PeerAddr> {
        let Some(dest) = frame.relay_to() else {
            return Some(from);
        };
        if dest != self.id {
            self.handle_relayed(now, from, frame, dest, sink);
            return None;
        }
        if let Some(m) = self.members.get(frame.sender()) {
            return Some(m.addr);
        }
        let relay = self.members.by_addr(from);
        if let Some(relay) = relay.map(|m| m.id) {
            self.send_table(sink, relay, PageKind::Pull);
        }
        self.refuse_relayed(sink, RelayRefusal::Sender);
        None
    }

    /// A frame marked relayed: forward it unchanged if this relay may, else count why not.
    pub(super) fn handle_relayed(
        &mut self,
        now: Instant,
        from: PeerAddr,
        frame: &Frame<'_>,
        dest: u64,
        sink: &mut impl Sink,
    ) {
        let decided = if !self.meta.relay || self.meta.nat {
            Err(RelayRefusal::NotRelay)
        } else {
            let f = Forward {
                from,
                sender: frame.sender(),
                dest,
                zone: frame.zone(),
            };
            let links = &self.out.links;
            self.forwarder
                .decide(now, (self.id, self.meta.zone), links, f)
        };
        match decided {
            Ok(to) => {
                self.out.counters.relayed_frames += 1;
                self.out.counters.frames_out += 1;
                self.out.counters.bytes_out += frame.bytes().len() as u64;
                sink.send(to, frame.bytes());
            }
            Err(r) => self.refuse_relayed(sink, r),
        }
    }

    pub(super) fn refuse_relayed(&mut self, sink: &mut impl Sink, r: RelayRefusal) {
        self.out.counters.relay_refused[r as usize] += 1;
        self.refuse(sink, Refusal::Relay(r));
    }

    /// Routes to the live boxes behind NAT: each through its first relay alive (else suspect),
    /// as this node ranks them, unless this node is one of its relays (the box keeps that mapping open
    /// itself). Opens a session with a relay it routes through: the relay forwards only for
    /// senders that hold one.
    pub(super) fn update_routes(&mut self, sink: &mut impl Sink) {
        self.out.routes.clear();
        for i in 0..self.members.list().len() {
            let m = &self.members.list()[i];
            if !(m.is_live() && m.meta.nat) {
                continue;
            }
            let (addr, dest) = (m.addr, m.id);
            let relays = self.relays_of(dest);
            if relays.contains(&self.id) {
                continue;
            }
            // A suspected relay may be dead: the box keeps a session with its next relay too, so
            // go through that one at once rather than wait for SWIM's verdict.
            let state = |r: &u64| self.members.get(*r).map(|r| (r.state, r.addr));
            let alive = relays
                .iter()
                .filter_map(state)
                .find(|s| s.0 == MemberState::Alive);
            let suspect = relays
                .iter()
                .filter_map(state)
                .find(|s| s.0 == MemberState::Suspect);
            let Some((_, via)) = alive.or(suspect) else {
                continue;
            };
            let route = Route { addr, dest, via };
            self.out.routes.push(route).expect("one route per member");
            if !self.out.has_link(via) {
                self.out.ensure_handshake(sink, via);
            }
        }
    }
}
