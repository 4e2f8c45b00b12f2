//! Status: what each node says of the services placed on it. The owner lists its placed services
//! that are not running (running is the default) and versions the list; peers keep the highest
//! version per member. A change is versioned at once but pushed to every live member at most
//! `STATUS_PUSH_BURST` times back to back and once per `STATUS_PUSH_INTERVAL_MS` on average
//! (changes in between ride on the next push), then again
//! `STATUS_RESENDS` times a second apart, and a non-empty status also rides on the periodic
//! membership push. Every ping and ack carries the version of the receiver's status the sender
//! holds (`status_seen`); a receiver whose status is newer sends it. Probes reach every member
//! in turn, so a member that missed every send, or joined after them, hears the latest status
//! within a probe round, an "all running" one too: a peer that holds no status of a box leaves
//! the box out of DNS, so a status that never spread would hide a healthy box for good.
//!
//! The version must grow across restarts of the owner, which has no clock: the host passes a
//! floor (its wall-clock seconds) with every report.

use super::{Node, Sink};
use crate::config::{
    MEMBERS_MAX, STATUS_PUSH_BURST, STATUS_PUSH_INTERVAL_MS, STATUS_RESENDS, STATUS_UNITS_MAX,
};
use crate::place;
use crate::schema::addr::PeerAddr;
use crate::schema::message::{Digest, Message, Offer, Status, UnitState};
use crate::state::store::Slot;
use crate::time::Instant;
use heapless::Vec;

/// Per member placement may choose: its id and the XOR of the digests of the entries placed on
/// it ([`Node::placed_digests`]).
pub type PlacedDigests = Vec<(u64, u64), { MEMBERS_MAX + 1 }>;

/// Delay between the resends of a changed status.
const STATUS_RESEND_MS: u64 = 1_000;

impl Node {
    /// Reports this node's placed services that are not running, as `(key hash, state)`, and the
    /// digest of what is placed here (`own_placed_digest`, which the caller has gathered in the
    /// same walk over the placed entries). Only a
    /// change is versioned; it is pushed at once unless the pushes before used up the burst, else
    /// with the next push (`tick_status`). `floor` (the host's wall-clock seconds) keeps versions
    /// growing across restarts; more than `STATUS_UNITS_MAX` units are cut, with `more` set.
    pub fn set_status(
        &mut self,
        now: Instant,
        floor: u32,
        placed: u64,
        units: impl Iterator<Item = (u64, UnitState)>,
        sink: &mut impl Sink,
    ) {
        self.set_status_listing(now, floor, (placed, false), units, sink);
    }

    /// As [`Node::set_status`], saying whether every service with a version on trial or a build
    /// here is among `units` (`Status::trials_listed`), which then lists those first.
    pub fn set_status_listing(
        &mut self,
        now: Instant,
        floor: u32,
        (placed, trials_listed): (u64, bool),
        units: impl Iterator<Item = (u64, UnitState)>,
        sink: &mut impl Sink,
    ) {
        let mut listed: Vec<(Digest, UnitState), STATUS_UNITS_MAX> = Vec::new();
        let mut more = false;
        for (key, state) in units {
            more |= listed.push((Digest(key), state)).is_err();
        }
        let status = Status {
            version: 0,
            units: listed,
            more,
            placed: Digest(placed),
            trials_listed,
            offer: self.status.offer.clone(),
        };
        self.publish(now, floor, status, sink);
    }

    /// Says what this node's binary cache serves: `cache_port` (0: no cache) and the build keys
    /// of the versions it roots ([`crate::executor::build_key`]), the ones peers most likely want
    /// first (the host passes the newest roots first: a rollout's new version). The first
    /// `OFFER_KEYS_MAX` distinct keys are offered, kept in ascending order so that the same set
    /// is the same offer; a change is versioned and pushed as [`Node::set_status`]'s are.
    pub fn set_offer(
        &mut self,
        now: Instant,
        floor: u32,
        cache_port: u16,
        keys: impl Iterator<Item = u64>,
        sink: &mut impl Sink,
    ) {
        let mut offer = Offer {
            cache_port,
            keys: Vec::new(),
            ..self.status.offer.clone()
        };
        if cache_port != 0 {
            for key in keys {
                if offer.keys.is_full() {
                    break;
                }
                if let Err(at) = offer.keys.binary_search(&Digest(key)) {
                    offer.keys.insert(at, Digest(key)).expect("not full");
                }
            }
        }
        let status = Status {
            version: 0,
            offer,
            ..self.status.clone()
        };
        self.publish(now, floor, status, sink);
    }

    /// Says which systems this box builds for peers (`builds`, [`crate::schema::message::system_bit`]s;
    /// 0: not a builder) and the build key of the build running here (0: none), from the
    /// executor (`Executor::building_key`); a change is versioned and pushed as the offer's are.
    pub fn set_building(
        &mut self,
        now: Instant,
        floor: u32,
        builds: u8,
        building: u64,
        sink: &mut impl Sink,
    ) {
        let offer = Offer {
            builds,
            building: Digest(building),
            ..self.status.offer.clone()
        };
        let status = Status {
            version: 0,
            offer,
            ..self.status.clone()
        };
        self.publish(now, floor, status, sink);
    }

    /// Makes `status` (its version ignored) this node's own if it differs from the current one:
    /// versioned above the last and `floor`, and pushed when due.
    fn publish(&mut self, now: Instant, floor: u32, status: Status, sink: &mut impl Sink) {
        let version_before = self.status.version;
        let same = Status {
            version: version_before,
            ..status.clone()
        } == self.status;
        if same && version_before != 0 {
            return;
        }
        self.status = Status {
            version: version_before.saturating_add(1).max(floor),
            ..status
        };
        // Peers keep the highest version they saw, so a status that went backwards would be
        // ignored everywhere.
        assert!(self.status.version > 0 && self.status.version >= version_before);
        self.status_unpushed = true;
        self.push_change_when_due(now, sink);
    }

    /// Pushes an unpushed change if the push schedule allows it (at most `STATUS_PUSH_BURST`
    /// back to back, one per `STATUS_PUSH_INTERVAL_MS` on average), and restarts the resends from
    /// this push. Returns whether it pushed.
    fn push_change_when_due(&mut self, now: Instant, sink: &mut impl Sink) -> bool {
        let ahead = (STATUS_PUSH_BURST - 1) * STATUS_PUSH_INTERVAL_MS;
        if !self.status_unpushed || now.add_ms(ahead) < self.status_push_due {
            return false;
        }
        self.status_unpushed = false;
        self.status_push_due = self
            .status_push_due
            .max(now)
            .add_ms(STATUS_PUSH_INTERVAL_MS);
        self.status_resends = STATUS_RESENDS;
        self.next_status_resend = now.add_ms(STATUS_RESEND_MS);
        self.push_status(sink);
        // Coalescing is the point: the schedule never runs more than the burst ahead of now.
        assert!(self.status_push_due <= now.add_ms(ahead + STATUS_PUSH_INTERVAL_MS));
        true
    }

    /// The XOR of the store digests of the entries placed on this node ([`Node::placed_here`]),
    /// which its status carries: a peer whose placement puts the same entries here computes the
    /// same value ([`Node::placed_digests`]).
    pub fn own_placed_digest(&self) -> u64 {
        self.placed_here().fold(0, |acc, slot| acc ^ slot.digest)
    }

    /// For each member placement may choose, this node included: the XOR of the store digests of
    /// the live entries placed on it as this node sees the cluster. One placement per entry, once
    /// per change of its inputs ([`Node::placed_digests`] keeps the answer).
    pub(super) fn compute_placed_digests(&self) -> PlacedDigests {
        let mut out: PlacedDigests = self.placement_candidates().map(|c| (c.id, 0)).collect();
        for slot in self.store().slots() {
            self.xor_placed_digest(&mut out, slot);
        }
        out
    }

    /// XORs `slot`'s digest into the entries of `out` of the members its entry is placed on (none
    /// for a tombstone): adds a record to [`Node::placed_digests`]' answer, or takes it out.
    pub(super) fn xor_placed_digest(&self, out: &mut PlacedDigests, slot: &Slot) {
        let Some((requires, replicas)) = slot.placement.as_ref().filter(|_| !slot.tombstone) else {
            return;
        };
        let candidates = self.placement_candidates();
        for id in place::place(slot.key_hash, requires, *replicas, candidates) {
            if let Some(acc) = out.iter_mut().find(|(m, _)| *m == id) {
                acc.1 ^= slot.digest;
            }
        }
    }

    /// Whether member `id`'s status speaks of the entries this node places on it: the digest it
    /// carries equals the one `placed` (from [`Node::placed_digests`]) computes here.
    pub fn status_covers(&self, id: u64, placed: &PlacedDigests) -> bool {
        let mine = placed.iter().find(|(m, _)| *m == id).map(|(_, d)| *d);
        self.status_of(id).is_some_and(|s| Some(s.placed.0) == mine)
    }

    /// This node's own status, as it last reported it.
    pub fn own_status(&self) -> &Status {
        &self.status
    }

    /// What member `id` last said is not running, if it said anything.
    pub fn status_of(&self, id: u64) -> Option<&Status> {
        self.members
            .get(id)
            .map(|m| &m.status)
            .filter(|s| s.version > 0)
    }

    /// Sends the status to every live member.
    fn push_status(&mut self, sink: &mut impl Sink) {
        let root = self.store.root();
        for m in self.members.list().iter().filter(|m| m.is_live()) {
            let msg = Message::Status(self.status.clone());
            self.out.send(sink, m.addr, root, msg);
        }
    }

    /// Pushes a coalesced change once its interval is over, else resends the last push on
    /// schedule.
    pub(super) fn tick_status(&mut self, now: Instant, sink: &mut impl Sink) {
        if self.push_change_when_due(now, sink)
            || self.status_resends == 0
            || now < self.next_status_resend
        {
            return;
        }
        self.status_resends -= 1;
        self.next_status_resend = now.add_ms(STATUS_RESEND_MS);
        self.push_status(sink);
    }

    /// With the periodic membership push: a status that reports trouble is repeated, so a member
    /// that missed every resend still hears of it soon.
    pub(super) fn status_for_sync(&self) -> Option<Message<'static>> {
        let trouble = !self.status.units.is_empty() || self.status.more;
        trouble.then(|| Message::Status(self.status.clone()))
    }

    /// Member `id` is sent our status if it reports trouble (the membership push).
    pub(super) fn status_to_member(&mut self, sink: &mut impl Sink, id: u64) {
        let to = self.members.get(id).map(|m| m.addr);
        if let (Some(to), Some(status)) = (to, self.status_for_sync()) {
            self.out.send(sink, to, self.store.root(), status);
        }
    }

    /// The version of the status of the member at `addr` this node holds, for the pings and
    /// acks sent there (0: none, or not a member yet).
    pub(super) fn status_seen(&self, addr: PeerAddr) -> u32 {
        let member = self.members.by_addr(addr);
        member.map_or(0, |m| m.status.version)
    }

    /// A ping or ack from `from` says which version of our status it holds: an older one gets
    /// the current status.
    pub(super) fn handle_status_seen(&mut self, sink: &mut impl Sink, from: PeerAddr, seen: u32) {
        if seen < self.status.version {
            let msg = Message::Status(self.status.clone());
            self.out.send(sink, from, self.store.root(), msg);
        }
    }

    /// How many newer member statuses were stored (wrapping): the executor looks again at
    /// versions that wait on what other boxes say when this moves.
    pub fn statuses_heard(&self) -> u32 {
        self.statuses_heard
    }

    /// A member's status arrived (from the member itself: `sender` is authenticated).
    pub(super) fn handle_status(&mut self, sender: u64, status: Status) {
        if let Some(m) = self.members.get_mut(sender) {
            if status.version > m.status.version {
                m.status = status;
                self.statuses_heard = self.statuses_heard.wrapping_add(1);
            }
        }
    }
}
