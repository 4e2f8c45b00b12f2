//! SWIM membership: the member table, update precedence, suspicion and piggyback queue.
//!
//! Precedence (SWIM with incarnations): `Alive(i)` overrides any state with incarnation `< i`;
//! `Suspect(i)` overrides `Alive(j)` for `i >= j` and `Suspect(j)` for `i > j`; `Dead(i)` overrides
//! `Alive(j)` and `Suspect(j)` for `i >= j`. Only the member itself raises its incarnation, to
//! refute a suspicion or a death notice about itself (done by `Node`).
//!
//! Suspicion follows Lifeguard: a suspect is declared dead after a timeout that starts at the
//! profile's `suspicion_max_factor` times the minimum and shrinks linearly towards the minimum as
//! independent members report the same suspicion; the minimum grows with log10 of the cluster size.
//!
//! Accepted updates are re-broadcast by piggybacking on probes, each `RETRANSMIT_MULT *
//! ceil(log10(n + 1))` times. The piggyback queue holds at most one update per member; when full,
//! the update with the fewest transmits left is dropped.

use crate::config::{
    log10_ceil, Profile, DEAD_RETENTION_MS, MEMBERS_MAX, MEMBER_UPDATES_MAX,
    MEMBER_UPDATES_PER_FRAME, RETRANSMIT_MULT, SUSPICION_CONFIRMATIONS,
};
use crate::schema::addr::PeerAddr;
use crate::schema::message::{MemberMeta, MemberState, MemberUpdate, Status};
use crate::time::Instant;
use heapless::Vec;

#[derive(Clone, Debug)]
pub struct Suspicion {
    pub since: Instant,
    /// Distinct members that reported it, the first included.
    reporters: Vec<u64, { SUSPICION_CONFIRMATIONS as usize + 1 }>,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub addr: PeerAddr,
    pub incarnation: u32,
    pub state: MemberState,
    pub meta: MemberMeta,
    pub changed_at: Instant,
    /// The Merkle root this member sent last; anti-entropy prefers members that disagree.
    pub root: u64,
    /// The highest-versioned status this member sent (its services that are not running).
    pub status: Status,
    pub suspicion: Option<Suspicion>,
    /// When this node last sent the member its whole table (a push-pull), which it does at most
    /// once per `MEMBER_PULL_MIN_MS`.
    pub paged_at: Option<Instant>,
    /// The member is dead by its own notice (`Node::leave`, a clean stop): it left rather than
    /// failed. Only `Node` sets it, for a death it heard from the member itself; any change of
    /// state clears it.
    pub left: bool,
}

impl Member {
    pub fn update(&self) -> MemberUpdate {
        MemberUpdate {
            id: self.id,
            incarnation: self.incarnation,
            state: self.state,
            addr: self.addr,
            meta: self.meta,
        }
    }
    pub fn is_live(&self) -> bool {
        self.state != MemberState::Dead
    }
}

/// What applying an update did, for events and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Ignored,
    Joined,
    Changed(MemberState),
    /// The table is full of live members; the newcomer was refused.
    Full,
}

pub struct Members {
    list: Vec<Member, MEMBERS_MAX>,
    pending: Vec<(MemberUpdate, u8), MEMBER_UPDATES_MAX>,
    pub dropped_updates: u64,
    /// Where the suspicion timeouts come from.
    profile: Profile,
    /// Moves on every call that may change a record (`generation`).
    generation: u64,
}

impl Members {
    pub const fn new(profile: Profile) -> Self {
        Members {
            list: Vec::new(),
            pending: Vec::new(),
            dropped_updates: 0,
            profile,
            generation: 0,
        }
    }

    /// A number that moves whenever a member record may have changed since it was read: what is
    /// derived from the records can be kept while it stays. Every method that hands out or
    /// takes a record mutably moves it, whether or not it changes anything.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn touch(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn list(&self) -> &[Member] {
        &self.list
    }
    pub fn list_mut(&mut self) -> &mut [Member] {
        self.touch();
        &mut self.list
    }
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.list.iter().find(|m| m.id == id)
    }
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Member> {
        self.touch();
        self.list.iter_mut().find(|m| m.id == id)
    }
    /// The member whose frames come from `addr`, as this node knows it.
    pub fn by_addr(&self, addr: PeerAddr) -> Option<&Member> {
        self.list.iter().find(|m| m.addr == addr)
    }
    pub fn by_addr_mut(&mut self, addr: PeerAddr) -> Option<&mut Member> {
        self.touch();
        self.list.iter_mut().find(|m| m.addr == addr)
    }
    pub fn live_count(&self) -> usize {
        self.list.iter().filter(|m| m.is_live()).count()
    }

    /// XOR of the ids of every member not dead and of `me`: equal on two nodes exactly when they
    /// hold the same live set (up to 64-bit accidents), whatever the order or the states.
    pub fn live_digest(&self, me: u64) -> u64 {
        self.list
            .iter()
            .filter(|m| m.is_live())
            .fold(me, |d, m| d ^ m.id)
    }

    /// Shortest suspicion timeout for the current cluster size (the table and this node).
    pub fn suspicion_min_ms(&self) -> u64 {
        self.profile.suspicion_min_ms(self.list.len() + 1)
    }

    /// Lifeguard's timeout: from the profile's `suspicion_max_factor` times the minimum down to
    /// the minimum as independent confirmations arrive. A small cluster cannot produce
    /// `SUSPICION_CONFIRMATIONS` of them (with three nodes, one survivor is the only other
    /// witness), so the confirmations needed are capped by the members that could send one;
    /// otherwise a box in a small cluster would always wait the longest timeout.
    fn suspicion_timeout_ms(&self, s: &Suspicion) -> u64 {
        let min = self.suspicion_min_ms();
        let max = self.profile.suspicion_max_ms(self.list.len() + 1);
        // Witnesses besides the first reporter: every live member except the suspect.
        let witnesses = self.live_count().saturating_sub(1) as u64;
        let needed = u64::from(SUSPICION_CONFIRMATIONS).min(witnesses).max(1);
        let confirmations = (s.reporters.len() as u64).saturating_sub(1).min(needed);
        max - (max - min) * confirmations / needed
    }

    /// Applies one update learned from `reporter` at `now`.
    pub fn apply(&mut self, now: Instant, u: &MemberUpdate, reporter: u64) -> Applied {
        self.touch();
        let Some(m) = self.list.iter_mut().find(|m| m.id == u.id) else {
            return self.insert(now, u, reporter);
        };
        let wins = match (u.state, m.state) {
            (MemberState::Alive, _) => u.incarnation > m.incarnation,
            (MemberState::Suspect, MemberState::Alive) => u.incarnation >= m.incarnation,
            (MemberState::Suspect, MemberState::Suspect) => {
                if u.incarnation == m.incarnation {
                    if let Some(s) = &mut m.suspicion {
                        if !s.reporters.contains(&reporter) {
                            let _ = s.reporters.push(reporter);
                        }
                    }
                }
                u.incarnation > m.incarnation
            }
            (MemberState::Suspect, MemberState::Dead) => false,
            (MemberState::Dead, MemberState::Dead) => false,
            (MemberState::Dead, _) => u.incarnation >= m.incarnation,
        };
        if !wins {
            return Applied::Ignored;
        }
        let incarnation_before = m.incarnation;
        m.incarnation = u.incarnation;
        m.meta = u.meta;
        // A node refuting a rumor does not know its own address; second-hand records of it carry
        // none, and must not erase the one this node knows. Nor does a second-hand record of a
        // box behind NAT: its NAT may give it another public port for each peer (a port already
        // taken, a symmetric NAT), so where it is for this node is where its own frames came
        // from (`Node::handle_datagram`, `Node::learn`), never where another member saw them.
        let second_hand_nat = u.meta.nat && reporter != u.id;
        if u.state == MemberState::Alive && u.addr != PeerAddr::default() && !second_hand_nat {
            m.addr = u.addr;
        }
        let changed = m.state != u.state;
        if changed {
            m.left = false;
        }
        m.state = u.state;
        m.changed_at = now;
        m.suspicion = (u.state == MemberState::Suspect).then(|| Suspicion {
            since: now,
            reporters: Vec::from_slice(&[reporter]).expect("capacity >= 1"),
        });
        // Precedence only lets an update win at the same or a higher incarnation, so a stale
        // rumor can never bring a member back; only a suspect runs a suspicion timer.
        assert!(
            m.incarnation >= incarnation_before,
            "an incarnation never decreases"
        );
        assert_eq!(m.suspicion.is_some(), m.state == MemberState::Suspect);
        let update = m.update();
        self.enqueue(update);
        if changed {
            Applied::Changed(u.state)
        } else {
            Applied::Ignored
        }
    }

    fn insert(&mut self, now: Instant, u: &MemberUpdate, reporter: u64) -> Applied {
        // A death notice about a member we never knew adds nothing worth a table slot, and a
        // record without an address cannot be reached; its owner's own frames bring it.
        if u.state == MemberState::Dead || u.addr == PeerAddr::default() {
            return Applied::Ignored;
        }
        if self.list.is_full() {
            match self.list.iter().position(|m| !m.is_live()) {
                Some(i) => {
                    self.list.swap_remove(i);
                }
                None => return Applied::Full,
            }
        }
        let member = Member {
            id: u.id,
            addr: u.addr,
            incarnation: u.incarnation,
            state: u.state,
            meta: u.meta,
            changed_at: now,
            root: 0,
            status: Status::default(),
            // A member first heard of as suspect gets its timer too, or it would stay suspect
            // (and live for placement) forever.
            suspicion: (u.state == MemberState::Suspect).then(|| Suspicion {
                since: now,
                reporters: Vec::from_slice(&[reporter]).expect("capacity >= 1"),
            }),
            paged_at: None,
            left: false,
        };
        assert!(self.get(u.id).is_none(), "a member has one record");
        self.list.push(member).expect("room made above");
        self.enqueue(*u);
        Applied::Joined
    }

    /// Marks `id` suspect on this node's own evidence (a failed probe).
    pub fn suspect(&mut self, now: Instant, id: u64, me: u64) -> Applied {
        let Some(m) = self.get(id) else {
            return Applied::Ignored;
        };
        if m.state != MemberState::Alive {
            return Applied::Ignored;
        }
        let u = MemberUpdate {
            state: MemberState::Suspect,
            ..m.update()
        };
        self.apply(now, &u, me)
    }

    /// Suspects whose timeout, stretched by `scale` (Lifeguard's local health: a slow node waits
    /// longer before it accuses), ran out become dead; dead members past retention are forgotten.
    /// Calls `f` for each member declared dead.
    pub fn expire(&mut self, now: Instant, scale: u64, mut f: impl FnMut(u64)) {
        let mut i = 0;
        while i < self.list.len() {
            let m = &self.list[i];
            if m.state == MemberState::Dead && now.since_ms(m.changed_at) > DEAD_RETENTION_MS {
                self.touch();
                self.list.swap_remove(i);
                continue;
            }
            if let Some(s) = &m.suspicion {
                if now.since_ms(s.since) >= self.suspicion_timeout_ms(s) * scale.max(1) {
                    let u = MemberUpdate {
                        state: MemberState::Dead,
                        ..m.update()
                    };
                    let id = m.id;
                    self.apply(now, &u, id);
                    f(id);
                }
            }
            i += 1;
        }
    }

    /// Queues `u` for piggybacking, replacing any older update about the same member.
    pub fn enqueue(&mut self, u: MemberUpdate) {
        let transmits = RETRANSMIT_MULT.saturating_mul(log10_ceil(self.list.len() + 1) as u8);
        if let Some(p) = self.pending.iter_mut().find(|(p, _)| p.id == u.id) {
            *p = (u, transmits);
            return;
        }
        if self.pending.is_full() {
            let (i, _) = self
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .expect("full queue is not empty");
            self.pending.swap_remove(i);
            self.dropped_updates += 1;
        }
        self.pending.push((u, transmits)).expect("room made above");
        // One update per member: the newest replaces the rest, so a frame never carries two.
        assert_eq!(self.pending.iter().filter(|(p, _)| p.id == u.id).count(), 1);
    }

    /// Up to one frame's worth of updates, those with the most transmits left first.
    pub fn take_piggyback(&mut self) -> Vec<MemberUpdate, MEMBER_UPDATES_PER_FRAME> {
        self.pending
            .sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
        let mut out = Vec::new();
        for (u, t) in self.pending.iter_mut() {
            if out.push(*u).is_err() {
                break;
            }
            *t -= 1;
        }
        self.pending.retain(|(_, t)| *t > 0);
        assert!(
            self.pending.iter().all(|(_, t)| *t > 0),
            "spent updates leave the queue"
        );
        out
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::entry::Arch;

    fn up(id: u64, inc: u32, state: MemberState) -> MemberUpdate {
        MemberUpdate {
            id,
            incarnation: inc,
            state,
            addr: PeerAddr::v4([127, 0, 0, 1], id as u16),
            meta: MemberMeta {
                arch: Arch::X86_64,
                zone: 0,
                gpu: false,
                bridge: false,
                relay: false,
                nat: false,
            },
        }
    }

    /// The generation moves with every way to change a record (what is kept from the table is
    /// read anew then), and reading leaves it.
    #[test]
    fn generation_moves_with_every_change() {
        let mut ms = Members::new(Profile::LAN);
        let t = Instant(0);
        let mut last = ms.generation();
        let mut moved = |ms: &Members| {
            let now = ms.generation();
            core::mem::replace(&mut last, now) != now
        };
        ms.apply(t, &up(1, 0, MemberState::Alive), 9);
        assert!(moved(&ms));
        let _ = (ms.get(1), ms.list(), ms.live_count(), ms.live_digest(7));
        assert!(!moved(&ms));
        ms.get_mut(1).unwrap().meta.zone = 2;
        assert!(moved(&ms));
        ms.list_mut()[0].meta.gpu = true;
        assert!(moved(&ms));
        ms.by_addr_mut(up(1, 0, MemberState::Alive).addr)
            .unwrap()
            .meta
            .zone = 3;
        assert!(moved(&ms));
        ms.suspect(t, 1, 9);
        assert!(moved(&ms));
        // Declared dead once its suspicion runs out, then forgotten past retention.
        ms.expire(Instant(3_600_000), 1, |_| {});
        assert!(moved(&ms) && ms.get(1).is_some_and(|m| !m.is_live()));
        ms.expire(Instant(3_600_000 + DEAD_RETENTION_MS + 1), 1, |_| {});
        assert!(moved(&ms) && ms.list().is_empty());
    }

    /// The SWIM precedence table, case by case.
    #[test]
    fn precedence() {
        let mut ms = Members::new(Profile::LAN);
        let t = Instant(0);
        assert_eq!(
            ms.apply(t, &up(1, 0, MemberState::Alive), 9),
            Applied::Joined
        );
        assert_eq!(
            ms.apply(t, &up(1, 0, MemberState::Alive), 9),
            Applied::Ignored
        );
        assert_eq!(
            ms.apply(t, &up(1, 0, MemberState::Suspect), 9),
            Applied::Changed(MemberState::Suspect)
        );
        assert_eq!(
            ms.apply(t, &up(1, 0, MemberState::Alive), 9),
            Applied::Ignored
        );
        assert_eq!(
            ms.apply(t, &up(1, 1, MemberState::Alive), 9),
            Applied::Changed(MemberState::Alive)
        );
        assert_eq!(
            ms.apply(t, &up(1, 0, MemberState::Dead), 9),
            Applied::Ignored
        );
        assert_eq!(
            ms.apply(t, &up(1, 1, MemberState::Dead), 9),
            Applied::Changed(MemberState::Dead)
        );
        assert_eq!(
            ms.apply(t, &up(1, 1, MemberState::Suspect), 9),
            Applied::Ignored
        );
        assert_eq!(
            ms.apply(t, &up(1, 2, MemberState::Alive), 9),
            Applied::Changed(MemberState::Alive)
        );
        assert_eq!(
            ms.apply(t, &up(7, 0, MemberState::Dead), 9),
            Applied::Ignored
        );
        assert!(ms.get(7).is_none());
    }

    /// A box behind NAT may have another public address for each peer: a second-hand record of
    /// it, even one that wins, keeps the address this node knows; its own word moves it. A box
    /// not behind NAT moves with any winning record.
    #[test]
    fn second_hand_records_of_a_box_behind_nat_keep_its_address() {
        let mut ms = Members::new(Profile::LAN);
        let t = Instant(0);
        let natted = |inc: u32, port: u16| MemberUpdate {
            addr: PeerAddr::v4([10, 77, 0, 250], port),
            meta: MemberMeta {
                nat: true,
                ..up(1, inc, MemberState::Alive).meta
            },
            ..up(1, inc, MemberState::Alive)
        };
        ms.apply(t, &natted(1, 7946), 1);
        assert_eq!(
            ms.apply(t, &natted(2, 63218), 9),
            Applied::Ignored,
            "alive before and after"
        );
        assert_eq!(ms.get(1).unwrap().incarnation, 2, "the record wins");
        assert_eq!(
            ms.get(1).unwrap().addr,
            PeerAddr::v4([10, 77, 0, 250], 7946)
        );
        ms.apply(t, &natted(3, 40000), 1);
        assert_eq!(
            ms.get(1).unwrap().addr,
            PeerAddr::v4([10, 77, 0, 250], 40000)
        );
        ms.apply(t, &up(2, 0, MemberState::Alive), 2);
        ms.apply(t, &up(2, 1, MemberState::Alive), 9);
        let moved = MemberUpdate {
            addr: PeerAddr::v4([127, 0, 0, 9], 9),
            ..up(2, 2, MemberState::Alive)
        };
        ms.apply(t, &moved, 9);
        assert_eq!(ms.get(2).unwrap().addr, moved.addr);
    }

    /// Regression (fuzz): a member first heard of as suspect still expires to dead.
    #[test]
    fn member_first_heard_as_suspect_expires() {
        let mut ms = Members::new(Profile::LAN);
        ms.apply(Instant(0), &up(1, 0, MemberState::Suspect), 9);
        let mut dead = 0;
        let max = ms.suspicion_min_ms() * Profile::LAN.suspicion_max_factor;
        ms.expire(Instant(max), 1, |_| dead += 1);
        assert_eq!(dead, 1);
    }

    /// Confirmations from distinct members shorten a suspicion; it then expires to dead, and the
    /// dead member is forgotten after the retention.
    #[test]
    fn suspicion_shrinks_and_expires() {
        let mut ms = Members::new(Profile::LAN);
        ms.apply(Instant(0), &up(1, 0, MemberState::Alive), 9);
        ms.apply(Instant(0), &up(1, 0, MemberState::Suspect), 10);
        let min = ms.suspicion_min_ms();
        let mut dead = 0;
        ms.expire(Instant(min), 1, |_| dead += 1);
        assert_eq!(dead, 0, "one report waits for the maximum timeout");
        for r in 11..11 + u64::from(SUSPICION_CONFIRMATIONS) {
            ms.apply(Instant(0), &up(1, 0, MemberState::Suspect), r);
        }
        ms.expire(Instant(min), 1, |_| dead += 1);
        assert_eq!(dead, 1);
        assert_eq!(ms.get(1).unwrap().state, MemberState::Dead);
        ms.expire(Instant(min + DEAD_RETENTION_MS + 1), 1, |_| {});
        assert!(ms.get(1).is_none());
    }

    /// A stretched suspicion (a node of poor local health) waits `scale` times as long.
    #[test]
    fn a_scaled_suspicion_waits_longer() {
        let mut ms = Members::new(Profile::LAN);
        ms.apply(Instant(0), &up(1, 0, MemberState::Suspect), 9);
        let max = ms.suspicion_min_ms() * Profile::LAN.suspicion_max_factor;
        let mut dead = 0;
        ms.expire(Instant(max), 3, |_| dead += 1);
        assert_eq!(dead, 0);
        ms.expire(Instant(3 * max - 1), 3, |_| dead += 1);
        assert_eq!(dead, 0);
        ms.expire(Instant(3 * max), 3, |_| dead += 1);
        assert_eq!(dead, 1);
    }

    /// The live digest names the live set: suspects count, the dead do not, order does not matter.
    #[test]
    fn live_digest_is_the_live_set() {
        let (mut a, mut b) = (Members::new(Profile::LAN), Members::new(Profile::LAN));
        a.apply(Instant(0), &up(1, 0, MemberState::Alive), 9);
        a.apply(Instant(0), &up(2, 0, MemberState::Alive), 9);
        b.apply(Instant(0), &up(2, 3, MemberState::Suspect), 9);
        assert_ne!(a.live_digest(7), b.live_digest(7));
        b.apply(Instant(0), &up(1, 0, MemberState::Alive), 9);
        assert_eq!(a.live_digest(7), b.live_digest(7));
        assert_ne!(a.live_digest(7), a.live_digest(8));
        a.apply(Instant(0), &up(1, 1, MemberState::Dead), 9);
        assert_ne!(a.live_digest(7), b.live_digest(7));
    }

    /// The piggyback queue keeps one update per member, drops the most-sent when full, and
    /// retires updates after their transmits.
    #[test]
    fn piggyback_queue_is_bounded() {
        let mut ms = Members::new(Profile::LAN);
        for id in 0..(MEMBER_UPDATES_MAX as u64 + 10) {
            ms.enqueue(up(id, 0, MemberState::Alive));
        }
        assert_eq!(ms.pending_len(), MEMBER_UPDATES_MAX);
        assert_eq!(ms.dropped_updates, 10);
        let mut rounds = 0;
        while ms.pending_len() > 0 {
            assert!(ms.take_piggyback().len() <= MEMBER_UPDATES_PER_FRAME);
            rounds += 1;
            assert!(rounds < 1000);
        }
    }
}
