//! A box finds out by itself that it is behind NAT, from where its peers see its frames come
//! from (docs/protocol.md section 12, "Finding out").
//!
//! Each member tells a peer, inside their sealed session, the source address of the peer's
//! direct frames (`Message::Observed`). Address translation rewrites that source on the way, so
//! a box whose peers see it at an IP that is not one of its own is behind a translating NAT. It
//! concludes so once `NAT_OBSERVERS` distinct members said it: one lying member alone cannot
//! flip it, and the worst a lie can do is make a reachable box use relays. It then is a
//! `--behind-nat` box, sticky until restart. A `--relay` box never concludes it (it must be
//! reached directly; it says so once instead). No timing, no counting of silences: one
//! exchange with each of two peers decides, whatever the loss and the traffic pattern.
//! State: the host's list of own addresses and two ids.

use super::{Event, Node, Sink};
use crate::config::{NAT_OBSERVERS, OWN_ADDRS_MAX};
use crate::schema::addr::PeerAddr;
use heapless::Vec;

/// This box's own addresses and the members that saw it elsewhere.
pub(super) struct NatWatch {
    /// The addresses of this box's interfaces and its bound port, from the host. Empty: the host
    /// gave none (`--nat no`, or a harness), and nothing is ever concluded.
    own: Vec<PeerAddr, OWN_ADDRS_MAX>,
    /// Distinct members whose observation was not one of `own`.
    foreign: Vec<u64, NAT_OBSERVERS>,
    /// A `--relay` box said once that it is seen through address translation.
    warned: bool,
}

impl NatWatch {
    pub(super) fn new(own: &[PeerAddr]) -> NatWatch {
        let mut list = Vec::new();
        for a in own.iter().take(OWN_ADDRS_MAX) {
            list.push(*a).expect("taken at most OWN_ADDRS_MAX");
        }
        NatWatch {
            own: list,
            foreign: Vec::new(),
            warned: false,
        }
    }

    /// Whether `addr`'s IP is one of this box's own. Only the IP: a NAT that keeps the address
    /// but maps ports is not what stops peers reaching the box, and the host's port is the
    /// bound one, which a dual-stack socket sees under both families.
    fn is_own(&self, addr: PeerAddr) -> bool {
        self.own.iter().any(|o| o.ip == addr.ip)
    }

    /// Whether the host gave an address of `addr`'s family (IPv4 or IPv6). Without one, a peer
    /// seeing the box at an address of that family says nothing: the host may simply not have
    /// listed it (no route of that family to look up).
    fn knows_family(&self, addr: PeerAddr) -> bool {
        let v4 = addr.as_v4().is_some();
        self.own.iter().any(|o| o.as_v4().is_some() == v4)
    }
}

impl Node {
    /// Tells member `sender` where its direct frame came from, when due (`Transport::tell_observed`).
    /// Only for a direct frame: a relayed one shows the relay's address, not the sender's.
    pub(super) fn tell_observed(&mut self, sink: &mut impl Sink, from: PeerAddr, sender: u64) {
        // A box already marked behind NAT has nothing left to find out.
        let natted = self.members.get(sender).is_some_and(|m| m.meta.nat);
        if !natted && self.out.tell_observed(sender, from) {
            let msg = crate::schema::message::Message::Observed { addr: from };
            self.out.send(sink, from, self.store.root(), msg);
        }
    }

    /// Member `sender` (authenticated by its session) sees this box's frames come from `addr`.
    pub(super) fn observed(&mut self, sender: u64, addr: PeerAddr, sink: &mut impl Sink) {
        let w = &mut self.nat_watch;
        let unknown = !w.knows_family(addr) || w.is_own(addr);
        if self.meta.nat || unknown || w.foreign.contains(&sender) {
            return;
        }
        if w.foreign.push(sender).is_ok() && !w.foreign.is_full() {
            return;
        }
        if self.meta.relay {
            // Peers reach it only if the translation is 1:1 or forwards its port; its zone's
            // boxes behind NAT rely on that, so the operator must know.
            if !core::mem::replace(&mut w.warned, true) {
                sink.event(Event::RelayTranslated { seen_at: addr });
            }
            return;
        }
        self.become_behind_nat();
        sink.event(Event::BehindNat { seen_at: addr });
    }

    /// From now on this node is a box behind NAT: its record says so at a higher incarnation,
    /// which wins everywhere (as the incarnation 1 of a box started `--behind-nat` does), and
    /// `keep_relays_open`, every member's routes and their address pinning take it from there.
    fn become_behind_nat(&mut self) {
        self.meta.nat = true;
        self.incarnation = self.incarnation.saturating_add(1);
        self.out.counters.nat_detected += 1;
        self.members.enqueue(self.me());
    }
}
