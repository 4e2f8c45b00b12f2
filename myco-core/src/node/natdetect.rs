//! A box finds out by itself that no peer reaches it directly (docs/protocol.md section 12).
//!
//! A NAT lets in only what comes from an address the box sent to lately (for at least
//! `NAT_OPEN_MS`), so the pings of a peer the box talks to get in whether or not it is behind
//! NAT: they prove nothing. A peer the box has sent nothing to for `NAT_OPEN_MS` is *closed*:
//! its ping (or its handshake, which is how a peer without a session probes) gets in only if the
//! box is reachable directly. Each of a box's live peers probes one random member per probe
//! period, so the closed ones send it `closed / live` pings a period on average: the window's
//! *exposure*. A box that over `NAT_DETECT_PINGS` of exposure (a) had at least two live peers
//! throughout, (b) was reached by no closed peer, and (c) refuted a suspicion of itself at least
//! once concludes it is behind NAT, and from then on is a `--behind-nat` box (sticky until the
//! daemon restarts). State: a few words, no allocation.

use super::{Event, Node, Sink};
use crate::config::{AWARENESS_MAX, NAT_DETECT_PINGS, NAT_OPEN_MS};
use crate::schema::addr::PeerAddr;
use crate::time::Instant;

/// The current window of a box watching whether closed peers reach it.
#[derive(Clone, Copy, Debug)]
pub(super) struct NatWatch {
    since: Instant,
    next_sample: Instant,
    /// Pings expected from closed peers so far, in thousandths.
    exposure_milli: u64,
    reached: bool,
    refuted: bool,
    /// Lifeguard's score counted on this node's own probes only (+1 missed, -1 acked): how
    /// lossy the network is, which is what slows the peers' probes too. The local health score
    /// also counts refutations, which a box behind NAT makes for every closed peer's probe.
    misses: u8,
}

impl NatWatch {
    pub(super) fn new(now: Instant) -> NatWatch {
        NatWatch {
            since: now,
            next_sample: now,
            exposure_milli: 0,
            reached: false,
            refuted: false,
            misses: 0,
        }
    }

    /// A new window from `now`; the probe score carries over.
    fn restart(&mut self, now: Instant) {
        *self = NatWatch {
            misses: self.misses,
            ..NatWatch::new(now)
        };
    }
}

impl Node {
    /// Whether nothing went from this node to `addr` for `NAT_OPEN_MS`: no NAT in front of this
    /// node still holds a way in for `addr`'s frames.
    fn closed_to(&self, now: Instant, addr: PeerAddr) -> bool {
        let link = self.out.links.iter().find(|l| l.addr == addr);
        let quiet = link.is_none_or(|l| now.since_ms(l.last_tx()) >= NAT_OPEN_MS);
        quiet && !self.out.handshaking(addr)
    }

    /// A ping or a handshake came from `from`: if this node had sent it nothing for
    /// `NAT_OPEN_MS`, a peer reached it directly. Only what arrived counts, so no peer can hide
    /// it; only one on the path could, by dropping it.
    pub(super) fn nat_heard(&mut self, now: Instant, from: PeerAddr) {
        if !self.nat_watch.reached && self.closed_to(now, from) {
            self.nat_watch.reached = true;
        }
    }

    /// This node refuted a suspicion of itself: some peer's probes of it failed.
    pub(super) fn nat_refuted(&mut self) {
        self.nat_watch.refuted = true;
    }

    /// One of this node's probes was acked or missed (as `adjust_health` counts them).
    pub(super) fn nat_probed(&mut self, acked: bool) {
        let m = &mut self.nat_watch.misses;
        *m = if acked {
            m.saturating_sub(1)
        } else {
            (*m + 1).min(AWARENESS_MAX)
        };
    }

    /// Once a probe period (stretched as Lifeguard stretches it for missed probes: peers slowed
    /// by loss probe less often, and the loss this node's probes meet is theirs too) adds the
    /// closed peers' share of the live ones to the window's exposure; restarts the window when
    /// it is broken, and concludes when (a), (b) and (c) held. A `--relay` box never concludes
    /// (it must be reachable, and says so).
    pub(super) fn watch_nat(&mut self, now: Instant, sink: &mut impl Sink) {
        if self.meta.relay || self.meta.nat || now < self.nat_watch.next_sample {
            return;
        }
        let live = self.members.live_count() as u64;
        if live < 2 || self.nat_watch.reached {
            self.nat_watch.restart(now);
            return;
        }
        let scale = 1 + u64::from(self.nat_watch.misses);
        let period = self.profile.probe_interval_ms * scale;
        self.nat_watch.next_sample = now.add_ms(period);
        let closed = self.members.list().iter().filter(|m| m.is_live());
        let closed = closed.filter(|m| self.closed_to(now, m.addr)).count() as u64;
        self.nat_watch.exposure_milli += closed * 1000 / live;
        let w = self.nat_watch;
        // Past the exposure a reachable box is already reached (the odds are in `config`); the
        // window stays open until a suspicion shows the silence costs something.
        if w.exposure_milli < NAT_DETECT_PINGS * 1000 || !w.refuted {
            return;
        }
        if self.relays_of(self.id).is_empty() {
            // Nobody to keep sessions with: stay as is, count it, and look again next window.
            self.out.counters.nat_no_relay += 1;
            self.nat_watch.restart(now);
            return;
        }
        self.become_behind_nat();
        let silent_ms = now.since_ms(w.since);
        sink.event(Event::BehindNat { silent_ms });
    }

    /// From now on this node is a box behind NAT: its record says so at a higher incarnation,
    /// which wins everywhere (as the incarnation 1 of a box started `--behind-nat` does), and
    /// `keep_relays_open` and every member's routes take it from there.
    fn become_behind_nat(&mut self) {
        self.meta.nat = true;
        self.incarnation = self.incarnation.saturating_add(1);
        self.out.counters.nat_detected += 1;
        self.members.enqueue(self.me());
    }
}
