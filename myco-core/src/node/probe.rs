//! SWIM on the wire: probes, indirect probes, probing the dead, joins, and Lifeguard's local
//! health awareness.
//!
//! Every frame from a peer carries its own record (`me`) and piggybacked updates; a peer that
//! believes this node suspect or dead hears it first in its next piggyback, so it can refute, and
//! a probe of a suspect carries the suspicion (Lifeguard's buddy system).
//!
//! Local health (memberlist's "awareness"): a node that misses acks, or has to refute suspicions
//! of itself, is more likely slow itself (CPU saturated, a stall) than surrounded by failures. Its
//! score rises by one for each (a missed ack only from a member it still held alive), falls by one
//! for each acked probe, and stretches its probe interval, probe timeout and suspicion timeouts by
//! `1 + score`, so a slow node accuses late and seldom. A moving average of missed probes sets a
//! floor under the score (`Node::loss_floor`), so under heavy loss no node walks down by luck to
//! timeouts far shorter than everyone else's.

use super::*;
use crate::config::HANDSHAKE_TIMEOUT_MS;
use crate::config::{AWARENESS_MAX, LOSS_FLOOR_MIN_PPM, MISS_AVERAGE};

impl Node {
    /// Lifeguard's multiplier of this node's probe interval, probe timeout and suspicion timeouts.
    pub(super) fn awareness_scale(&self) -> u64 {
        1 + u64::from(self.local_health())
    }

    /// The lowest score the share of missed probes allows: none while the share is under
    /// `LOSS_FLOOR_MIN_PPM` (at most one miss among the last sixteen probes), then
    /// `AWARENESS_MAX` times twice the share (the most from half missed on). The score alone is a
    /// random walk (one up per miss, one down per ack), so where loss misses many probes of every
    /// node (30% loss: about one in five; 50%: three in five) most nodes sit near the top while a
    /// few, by chance, walk down to 0 and run their timeouts at a ninth of the others'. Those few
    /// declared nearly every false death in MycoSim (a node at 0 declared the death that everyone
    /// then accepted, before the suspect's refutation reached it); the average tells loss from
    /// luck. A box that really died is missed once by each prober (a suspect's misses do not
    /// count), and must not stretch the timeouts that declare it dead: on the testbed a floor of
    /// one after that single miss doubled them for the next dozen probes (a death took 7.5 s).
    fn loss_floor(&self) -> u8 {
        if self.miss_ppm < LOSS_FLOOR_MIN_PPM {
            return 0;
        }
        let max = u64::from(AWARENESS_MAX);
        let floor = (2 * max * u64::from(self.miss_ppm) + 500_000) / 1_000_000;
        floor.min(max) as u8
    }

    /// Counts one judged probe of a live member in the score and in the average of misses. A
    /// miss raises the score by the nacks missing from the helpers asked (`unnacked`), as
    /// Lifeguard does, or by one when no helper was asked: every helper's nack leaves it alone.
    /// Every miss counts in the average: the floor steady loss sets must not wait on nacks.
    pub(super) fn note_probe(&mut self, missed: bool, unnacked: u8) {
        if !missed {
            self.adjust_health(false);
        }
        for _ in 0..unnacked {
            self.adjust_health(true);
        }
        let kept = self.miss_ppm - self.miss_ppm / MISS_AVERAGE;
        self.miss_ppm = kept + if missed { 1_000_000 / MISS_AVERAGE } else { 0 };
    }

    /// Raises (`worse`) or lowers the local health score within `0..=AWARENESS_MAX`.
    pub(super) fn adjust_health(&mut self, worse: bool) {
        self.health = if worse {
            (self.health + 1).min(AWARENESS_MAX)
        } else {
            self.health.saturating_sub(1)
        };
    }

    /// The local health score in effect (0: healthy): the walk's, or the floor the share of
    /// missed probes sets, whichever is higher. For metrics and tests.
    pub fn local_health(&self) -> u8 {
        self.health.max(self.loss_floor())
    }

    pub(super) fn tick_probe(&mut self, now: Instant, sink: &mut impl Sink) {
        let scale = self.awareness_scale();
        if let Some(p) = self.probe {
            let addr = self.members.get(p.target).map(|m| m.addr);
            let timed_out = now.since_ms(p.sent_at) >= self.profile.probe_timeout_ms * scale;
            if !p.acked && !p.indirect_sent && timed_out {
                let helpers =
                    addr.map_or([None; INDIRECT_PROBES], |a| self.send_indirect(sink, p, a));
                self.probe = Some(Probe {
                    indirect_sent: true,
                    helpers,
                    ..p
                });
            }
        }
        self.judge_handshake_probe(now, sink);
        if let Some(p) = self.probe.filter(|p| now >= p.judge_at) {
            self.probe = None;
            self.judge_probe(now, sink, p);
        }
        if now < self.next_probe {
            return;
        }
        self.next_probe = now.add_ms(self.profile.probe_interval_ms * scale);
        let Some(target) = self.probe_target() else {
            return;
        };
        let m = self.members.get(target).expect("picked from the table");
        let addr = m.addr;
        if !self.out.has_link(addr) {
            // A ping without a session would be dropped and read as a failure, so the handshake
            // is the probe. Were such a member never judged, one that nobody holds a session with
            // would stay live for good: a member that refuted a suspicion just before it died is
            // brought back by that refutation (alive, higher incarnation) on nodes whose sessions
            // with it were dropped at its death, and none of them would ever suspect it again.
            self.out.ensure_handshake(sink, addr);
            if self.handshake_probe.is_none() && self.out.handshaking(addr) {
                self.handshake_probe = Some((target, now));
            }
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        self.probe = Some(Probe {
            target,
            seq: self.seq,
            sent_at: now,
            judge_at: now.add_ms(self.profile.judge_after_ms() * scale),
            indirect_sent: false,
            acked: false,
            helpers: [None; INDIRECT_PROBES],
            nacked: 0,
        });
        self.out.counters.probes += 1;
        self.send_ping(sink, addr, self.seq, Some(target));
    }

    /// Counts a finished probe in local health and suspects its target if no ack came. A miss
    /// raises the score by the nacks missing, not at all once every helper asked has nacked
    /// (Lifeguard: a helper that answers shows this node's link works, so the target is at
    /// fault; a box that really died would otherwise stretch its probers' timeouts, their own
    /// suspicion of it included), and counts at all only for a member still believed alive:
    /// probing a suspect again and again (the only peer of a two-node cluster) says nothing new
    /// about this node's own health.
    fn judge_probe(&mut self, now: Instant, sink: &mut impl Sink, p: Probe) {
        let was_alive = self
            .members
            .get(p.target)
            .is_some_and(|m| m.state == MemberState::Alive);
        if p.acked || was_alive {
            let unnacked = match (p.acked, p.helpers_and_unnacked()) {
                (true, _) => 0,
                (false, (0, _)) => 1,
                (false, (_, unnacked)) => unnacked as u8,
            };
            self.note_probe(!p.acked, unnacked);
        }
        if !p.acked {
            let applied = self.members.suspect(now, p.target, self.id);
            if applied == Applied::Changed(MemberState::Suspect) {
                sink.event(Event::MemberSuspect(p.target));
                self.tell_suspect(sink, p.target);
            }
        }
    }

    /// A handshake probe is over once its handshake has had `HANDSHAKE_TIMEOUT_MS` (with a resend
    /// every `HANDSHAKE_RESEND_MS`, so under heavy loss it still completes with a live member): a
    /// session to the member by then proves it alive; none makes it suspect, as an unanswered
    /// ping does, and it can refute as ever.
    fn judge_handshake_probe(&mut self, now: Instant, sink: &mut impl Sink) {
        let Some((target, at)) = self.handshake_probe else {
            return;
        };
        if now.since_ms(at) < HANDSHAKE_TIMEOUT_MS {
            return;
        }
        self.handshake_probe = None;
        let Some(addr) = self.members.get(target).map(|m| m.addr) else {
            return;
        };
        if self.out.has_link(addr) {
            return;
        }
        if self.members.suspect(now, target, self.id) == Applied::Changed(MemberState::Suspect) {
            sink.event(Event::MemberSuspect(target));
        }
    }

    /// Pings one member believed dead, telling it so: if it is alive (a healed partition), it
    /// refutes with a higher incarnation and the two sides find each other again.
    pub(super) fn probe_the_dead(&mut self, sink: &mut impl Sink) {
        let dead = self.members.list().iter().filter(|m| !m.is_live()).count();
        if dead == 0 {
            return;
        }
        let nth = self.rng.below(dead as u64) as usize;
        let m = self
            .members
            .list()
            .iter()
            .filter(|m| !m.is_live())
            .nth(nth)
            .expect("counted");
        let (id, addr) = (m.id, m.addr);
        let updates = self.piggyback_for(id);
        let msg = Message::Ping {
            seq: 0,
            me: self.me(),
            updates,
            status_seen: self.status_seen(addr),
        };
        self.out.send(sink, addr, self.store.root(), msg);
    }

    /// Asks up to `INDIRECT_PROBES` helpers to ping `p`'s target; returns the members asked.
    pub(super) fn send_indirect(
        &mut self,
        sink: &mut impl Sink,
        p: Probe,
        target_addr: PeerAddr,
    ) -> [Option<u64>; INDIRECT_PROBES] {
        let mut helpers = self.relays_to_ask(p.target);
        for _ in 0..INDIRECT_PROBES * 2 {
            let Some(h) = self.random_live_peer() else {
                break;
            };
            if h != p.target && !helpers.contains(&h) && helpers.push(h).is_err() {
                break;
            }
        }
        let mut asked = [None; INDIRECT_PROBES];
        let root = self.store.root();
        for (slot, h) in asked.iter_mut().zip(helpers) {
            let addr = self.members.get(h).expect("picked from the table").addr;
            *slot = Some(h);
            let msg = Message::PingReq {
                seq: p.seq,
                target: p.target,
                target_addr,
            };
            self.out.send(sink, addr, root, msg);
        }
        asked
    }

    /// The helpers to ask first when a probe of `target` failed: if it is behind NAT, its relays
    /// (all of them, not only the one this node's route goes through). Every member reaches such
    /// a box through its first relay, random helpers too, so when that relay dies every probe of
    /// the box fails with it and Lifeguard's confirmations soon declare the box dead (issue 18);
    /// its other relay holds a session with it and pings it directly (`Node::relay_ping`).
    fn relays_to_ask(&self, target: u64) -> Vec<u64, INDIRECT_PROBES> {
        let mut asked = Vec::new();
        if !self.members.get(target).is_some_and(|m| m.meta.nat) {
            return asked;
        }
        let listed = |r: &u64| *r != self.id && self.members.get(*r).is_some();
        for r in self.relays_of(target).into_iter().filter(listed) {
            // Random helpers top up what is left; with more relays than helpers, the best.
            if asked.push(r).is_err() {
                break;
            }
        }
        asked
    }

    /// Pings `to`; when it is member `target`, what this node believes of it goes first (the
    /// buddy system: a suspect hears of its suspicion in the probe itself and refutes at once).
    pub(super) fn send_ping(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        seq: u32,
        target: Option<u64>,
    ) {
        let updates = match target {
            Some(id) => self.piggyback_for(id),
            None => self.members.take_piggyback(),
        };
        let msg = Message::Ping {
            seq,
            me: self.me(),
            updates,
            status_seen: self.status_seen(to),
        };
        self.out.send(sink, to, self.store.root(), msg);
    }

    /// A random live member other than this node.
    pub(super) fn random_live_peer(&mut self) -> Option<u64> {
        let live = self.members.live_count();
        if live == 0 {
            return None;
        }
        let nth = self.rng.below(live as u64) as usize;
        self.members
            .list()
            .iter()
            .filter(|m| m.is_live())
            .nth(nth)
            .map(|m| m.id)
    }

    /// The member to probe: one drawn at random, or, where silence says something
    /// (`Profile::silence_tells`: a cluster of three, whose members speak to each other every
    /// 0.44 s on `lan` against a probe every 0.5 s), the one heard from longest ago if it is
    /// staler than the one drawn. A box that died is that one within a period, and both survivors
    /// probe it at once instead of each drawing it one time in two. In larger clusters a member's
    /// frames come seconds apart; preferring a silent member there probes late a box that spoke
    /// just before it died (tried in MycoSim: 50 boxes at 10% loss took a median of 17 rounds to
    /// replace one, not 15), so the draw stays random. A node whose own probes miss (local health
    /// above 0) trusts no silence: under loss every member falls silent now and then, and probing
    /// it more only raises suspicions of the living.
    pub(super) fn probe_target(&mut self) -> Option<u64> {
        let drawn = self.random_live_peer()?;
        let cluster = self.members.live_count() + 1;
        if !self.profile.silence_tells(cluster) || self.local_health() > 0 {
            return Some(drawn);
        }
        // When each member's last authenticated frame arrived is its session's; a member with no
        // session counts as never heard (its probe is the handshake).
        let heard = |id: u64| {
            self.out
                .links
                .iter()
                .find(|l| l.peer == id)
                .map(|l| l.last_rx())
        };
        let live = self.members.list().iter().filter(|m| m.is_live());
        let stalest = live.min_by_key(|m| heard(m.id)).expect("drawn is live").id;
        Some(if heard(stalest) < heard(drawn) {
            stalest
        } else {
            drawn
        })
    }

    /// Up to `k` distinct random live members, by a partial Fisher-Yates shuffle.
    pub(super) fn random_live_peers<const K: usize>(
        &mut self,
        prefer_root_differs: bool,
    ) -> Vec<PeerAddr, K> {
        let root = self.store.root();
        let mut out = Vec::new();
        // Peers with a session first: a message to any other is dropped while its handshake
        // runs. The second pool tops up from the rest, which starts those handshakes. Both are
        // filled in one walk: each member's link is looked up once (a search of the links).
        let mut pools: [Vec<u16, { crate::config::MEMBERS_MAX }>; 2] = [Vec::new(), Vec::new()];
        for (i, m) in self.members.list().iter().enumerate() {
            if m.is_live() && (!prefer_root_differs || m.root != root) {
                let pool = &mut pools[usize::from(!self.out.has_link(m.addr))];
                pool.push(i as u16).expect("pool is as large as the table");
            }
        }
        for mut pool in pools {
            let mut n = pool.len();
            while n > 0 && !out.is_full() {
                let j = self.rng.below(n as u64) as usize;
                pool.swap(j, n - 1);
                n -= 1;
                let m = &self.members.list()[usize::from(pool[n])];
                out.push(m.addr).expect("checked not full");
            }
        }
        out
    }

    /// Learns the sender's own record and piggybacked updates; true if the sender is new.
    pub(super) fn learn(
        &mut self,
        now: Instant,
        from: PeerAddr,
        sender: u64,
        me: &MemberUpdate,
        updates: &[MemberUpdate],
        sink: &mut impl Sink,
    ) -> bool {
        // The sender's address is where its frame came from, whatever it thinks it is.
        let me = MemberUpdate {
            id: sender,
            addr: from,
            state: MemberState::Alive,
            ..*me
        };
        let joined = self.apply_member(now, &me, sender, sink) == Applied::Joined;
        // The session authenticated the sender, so where its frame came from is where it is,
        // even when its record did not win (same incarnation).
        if let Some(m) = self.members.get_mut(sender) {
            m.addr = from;
            // Relay and NAT are the member's configuration, not its certificate: only its own
            // word says them, also at the incarnation the handshake recorded it at.
            m.meta.relay = me.meta.relay;
            m.meta.nat = me.meta.nat;
        }
        for u in updates {
            self.apply_member(now, u, sender, sink);
        }
        joined
    }

    pub(super) fn apply_member(
        &mut self,
        now: Instant,
        u: &MemberUpdate,
        reporter: u64,
        sink: &mut impl Sink,
    ) -> Applied {
        if u.id == self.id {
            self.refute(u);
            return Applied::Ignored;
        }
        let applied = self.members.apply(now, u, reporter);
        // A death notice from the member itself, over its own authenticated session, is a clean
        // stop (`Node::leave`): it left. Anyone else's is a failure detected.
        let left = u.state == MemberState::Dead && reporter == u.id;
        if applied == Applied::Changed(MemberState::Dead) && left {
            let m = self
                .members
                .get_mut(u.id)
                .expect("a changed member is in the table");
            m.left = true;
        }
        match applied {
            Applied::Joined => sink.event(Event::MemberJoined(u.id)),
            Applied::Changed(MemberState::Alive) => sink.event(Event::MemberAlive(u.id)),
            Applied::Changed(MemberState::Suspect) => sink.event(Event::MemberSuspect(u.id)),
            Applied::Changed(MemberState::Dead) => {
                self.out.forget_peer(u.id);
                self.deaths_to_push = true;
                sink.event(if left {
                    Event::MemberLeft(u.id)
                } else {
                    Event::MemberDead(u.id)
                });
            }
            Applied::Full => self.out.counters.members_refused += 1,
            Applied::Ignored => {}
        }
        applied
    }

    /// Someone says this node is suspect or dead: raise the incarnation past it and say so.
    pub(super) fn refute(&mut self, u: &MemberUpdate) {
        let incarnation_before = self.incarnation;
        if u.state != MemberState::Alive && u.incarnation >= self.incarnation {
            self.incarnation = u.incarnation.saturating_add(1);
            self.out.counters.refutations += 1;
            self.adjust_health(true);
            self.members.enqueue(self.me());
        }
        // Peers keep the highest incarnation they heard; a lower one would never be believed.
        assert!(
            self.incarnation >= incarnation_before,
            "an incarnation never decreases"
        );
    }

    /// A frame from `from` said this node is suspect or dead (`refute` has raised the incarnation
    /// past it): the sender believes it, so it hears the refutation at once, in one frame of its
    /// own, instead of when gossip or a probe next brings this node's record. Suspicions spread
    /// by relaying, so the sender may be an accuser or a relayer; either would otherwise keep its
    /// timeout running while the refutation travels the piggyback queues. A ping needs none: its
    /// ack carries this node's record.
    pub(super) fn correct_teller(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        told: &[MemberUpdate],
    ) {
        let me = self.id;
        if !told
            .iter()
            .any(|u| u.id == me && u.state != MemberState::Alive)
        {
            return;
        }
        self.out.counters.refutations_told += 1;
        self.send_record(sink, from, self.me());
    }

    /// Sends `to` one member record in a `Members` frame of its own (a refutation, a suspicion, a
    /// keepalive, a leave notice), which needs no answer.
    pub(super) fn send_record(&mut self, sink: &mut impl Sink, to: PeerAddr, record: MemberUpdate) {
        let list = Vec::from_slice(&[record]).expect("capacity >= 1");
        self.out
            .send(sink, to, self.store.root(), Message::Members { list });
    }

    /// Piggyback for a frame to `peer`. If this node believes `peer` suspect or dead, that belief
    /// goes first: the peer can only refute what it hears about itself.
    pub(super) fn piggyback_for(
        &mut self,
        peer: u64,
    ) -> Vec<MemberUpdate, { crate::config::MEMBER_UPDATES_PER_FRAME }> {
        let mut updates = self.members.take_piggyback();
        let belief = self
            .members
            .get(peer)
            .filter(|m| m.state != MemberState::Alive)
            .map(Member::update);
        if let Some(b) = belief {
            if !updates.contains(&b) {
                if updates.is_full() {
                    updates.pop();
                }
                updates.insert(0, b).expect("room made above");
            }
        }
        updates
    }

    /// Tells a member this node has just suspected so at once, in one frame, rather than when a
    /// random probe next picks it: the accused refutes before the suspicion can ripen anywhere,
    /// which is what keeps a slow prober's mistakes from killing healthy members.
    pub(super) fn tell_suspect(&mut self, sink: &mut impl Sink, id: u64) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let (to, record) = (m.addr, m.update());
        self.send_record(sink, to, record);
    }

    /// Membership news (joins, suspicions, deaths, refutations) also goes out each gossip round
    /// to `GOSSIP_FANOUT` random peers, as memberlist's gossip does, not only on the two or so
    /// probe frames a second: a cluster forming at many joins a second makes news faster than
    /// probes can carry it, and the piggyback queue would drop it. Each frame takes its updates
    /// from the same queue, so an update is still sent its `RETRANSMIT_MULT` share of times in
    /// all. A cluster at rest has no news and sends nothing here. As on probes, what this node
    /// believes of a peer it holds suspect goes first in that peer's frame
    /// ([`Node::piggyback_for`]): these frames are most of what a node hears while news is
    /// plentiful, and a suspect that got them from the members accusing it, but never its own
    /// suspicion (it lost its place in a queue full of other news), could not refute: in MycoSim
    /// such a node took 22 of them in the 3 s before the whole cluster declared it dead.
    pub(super) fn gossip_members(&mut self, sink: &mut impl Sink) {
        let peers = self.random_live_peers::<GOSSIP_FANOUT>(false);
        let root = self.store.root();
        for peer in peers {
            let id = self.members.by_addr(peer);
            let news = match id.map(|m| m.id) {
                Some(id) => self.piggyback_for(id),
                None => self.members.take_piggyback(),
            };
            if news.is_empty() {
                continue;
            }
            let list = news.iter().copied().collect();
            self.out.counters.member_frames += 1;
            self.out.send(sink, peer, root, Message::Members { list });
        }
    }

    /// A helper's nack for this node's probe `seq`. Only a helper asked counts, once: a nack
    /// lowers what a miss costs this node's local health, so a member that was not asked (or
    /// one that nacks twice) must not be able to keep this node's timeouts short.
    pub(super) fn handle_nack(&mut self, sender: u64, seq: u32) {
        let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) else {
            return;
        };
        if let Some(i) = p.helpers.iter().position(|&h| h == Some(sender)) {
            p.nacked |= 1 << i;
        }
    }

    /// Tells the origin of each relayed ping unanswered for a probe timeout that its target did
    /// not answer here either (`Message::Nack`), once; the relay still forwards a late ack.
    pub(super) fn send_nacks(&mut self, now: Instant, sink: &mut impl Sink) {
        let root = self.store.root();
        let due = |r: &&mut Relay| r.nack_at.is_some_and(|at| now >= at);
        for r in self.relays.iter_mut().filter(due) {
            r.nack_at = None;
            self.out.counters.nacks_sent += 1;
            let nack = Message::Nack { seq: r.origin_seq };
            self.out.send(sink, r.origin, root, nack);
        }
    }

    pub(super) fn handle_ack(&mut self, sink: &mut impl Sink, seq: u32) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq {
                p.acked = true;
                return;
            }
        }
        if let Some(i) = self.relays.iter().position(|r| r.seq == seq) {
            let r = self.relays.swap_remove(i);
            let updates = self.members.take_piggyback();
            let ack = Message::Ack {
                seq: r.origin_seq,
                me: self.me(),
                updates,
                status_seen: self.status_seen(r.origin),
            };
            self.out.send(sink, r.origin, self.store.root(), ack);
        }
    }
}
