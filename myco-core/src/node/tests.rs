//! Node-level tests with a recording sink. Convergence is MycoSim's job; these pin down what a
//! single node does with bad input, forged entries and its storage completions.

extern crate std;
use super::*;
use crate::config::{AWARENESS_MAX, MEMBER_PAGE_RECORDS, WAL_CHECKPOINT_BYTES};
use crate::crypto::cert::certify;
use crate::crypto::sign_entry;
use crate::executor::UnitHealth;
use crate::schema::entry::{Arch, EntryBody, Version};
use crate::schema::frame::{body_mut, write_frame, Header};
use crate::state::store::key_hash;
use heapless::Vec as HVec;
use std::boxed::Box;

#[derive(Default)]
pub(crate) struct Recorder {
    sent: usize,
    appended: HVec<u64, 64>,
    checkpoints: usize,
    events: HVec<Event, 64>,
}

impl Sink for Recorder {
    fn send(&mut self, _: PeerAddr, _: &[u8; FRAME_BYTES]) {
        self.sent += 1;
    }
    fn event(&mut self, e: Event) {
        let _ = self.events.push(e);
    }
    fn append(&mut self, _: &[u8], ticket: u64) {
        self.appended.push(ticket).unwrap();
    }
    fn checkpoint(&mut self) {
        self.checkpoints += 1;
    }
    fn fill_random(&mut self, buf: &mut [u8]) {
        buf.fill(0x5a);
    }
}

pub(crate) fn operator() -> SigningKey {
    SigningKey::from_seed([7; 32]).unwrap()
}

pub(crate) fn node(wal_checkpoint_bytes: u64) -> Box<Node> {
    node_with(1, &[], wal_checkpoint_bytes)
}

/// A tombstone signed by `key` (the operator, or a forger).
fn tombstone_by(key: &SigningKey, name: &str, clock: u64, out: &mut [u8; 128]) -> usize {
    let version = Version {
        clock,
        key_id: key.public_key().key_id(),
    };
    let body = EntryBody {
        name,
        version,
        spec: None,
    };
    sign_entry(key, &body, out).unwrap()
}

fn tombstone(name: &str, clock: u64, out: &mut [u8; 128]) -> usize {
    tombstone_by(&operator(), name, clock, out)
}

/// Wrong length, magic, version, kind, zone or padding, or a sealed frame from a peer without a
/// session: each is counted as a refusal, no gossip is sent, and the state does not change.
#[test]
fn bad_frames_are_counted_and_change_nothing() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut sink = Recorder::default();
    let before = n.state_hash();
    let mut good = [0u8; FRAME_BYTES];
    let header = Header {
        kind: Kind::Hello,
        zone: 0,
        revocation_block: 0,
        sender: 2,
        counter: 0,
    };
    write_frame(&mut good, &header, 4);
    body_mut(&mut good)[..4].copy_from_slice(&[0xff; 4]);
    let mut frames: HVec<[u8; FRAME_BYTES], 8> = HVec::new();
    for (at, value) in [(0, b'X'), (2, 9), (3, 0), (4, 7), (500, 1)] {
        let mut f = good;
        f[at] = value;
        frames.push(f).unwrap();
    }
    let mut sealed = good;
    sealed[3] = Kind::Data as u8;
    frames.push(sealed).unwrap();
    frames.push(good).unwrap(); // a garbage Hello
    let from = PeerAddr::v4([127, 0, 0, 2], 1);
    n.handle_datagram(Instant(1), from, &good[..100], &mut sink);
    for f in &frames {
        n.handle_datagram(Instant(1), from, f, &mut sink);
    }
    let c = n.counters();
    assert_eq!(c.refused_frame, 5);
    assert_eq!(c.refused_zone, 1);
    assert_eq!(c.refused_crypto, 1, "the sealed frame: no session");
    // The metric's reason labels count the same refusals, each under its own name.
    let by_reason = c.refused_by_reason();
    assert_eq!(
        by_reason[Refusal::Frame(FrameError::Magic).index()],
        ("frame", 5)
    );
    assert_eq!(by_reason[Refusal::WrongZone.index()], ("zone", 1));
    assert_eq!(
        by_reason[Refusal::Crypto(CryptoRefusal::BadMac).index()],
        ("crypto", 1)
    );
    assert_eq!(Refusal::Body.name(), "body");
    assert_eq!(
        n.crypto_refusals()[CryptoRefusal::MalformedHandshake.index()],
        1
    );
    assert_eq!(n.crypto_refusals()[CryptoRefusal::UnknownKey.index()], 1);
    assert_eq!(
        c.frames_out, c.handshakes_started,
        "only handshake attempts were sent"
    );
    assert_eq!(n.state_hash(), before);
    assert!(n.members().is_empty());
}

/// A submitted deploy is logged with a ticket and acknowledged only when storage reports it
/// durable; a stale resubmission writes nothing.
#[test]
fn submit_acknowledges_only_after_durable() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut sink = Recorder::default();
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    let done = n.submit(Instant(0), &e[..len], &mut sink).unwrap();
    assert_eq!(done.ticket, Some(1));
    assert_eq!(sink.appended.as_slice(), &[1]);
    let changed = Event::EntryChanged {
        key_hash: key_hash("web"),
    };
    assert_eq!(
        sink.events.as_slice(),
        &[changed],
        "stored and reported, but nothing acknowledged before the fsync"
    );
    n.handle_storage(Instant(1), Storage::Durable { ticket: 1 }, &mut sink);
    assert_eq!(
        sink.events.as_slice(),
        &[changed, Event::Durable { ticket: 1 }]
    );
    let again = n.submit(Instant(2), &e[..len], &mut sink).unwrap();
    assert_eq!(
        again,
        Submitted {
            merge: Merge::Stale,
            ticket: None
        }
    );
    assert_eq!(sink.appended.len(), 1);
}

/// The core asks for one checkpoint when the log passes its bound, and not again until the
/// caller reports it done.
#[test]
fn checkpoint_is_requested_once_per_bound() {
    let mut n = node(400);
    let mut sink = Recorder::default();
    let mut e = [0u8; 128];
    for clock in 1..=10 {
        let len = tombstone("web", clock, &mut e);
        n.submit(Instant(0), &e[..len], &mut sink).unwrap();
    }
    assert_eq!(sink.checkpoints, 1);
    n.handle_storage(Instant(1), Storage::Checkpointed, &mut sink);
    for clock in 11..=20 {
        let len = tombstone("web", clock, &mut e);
        n.submit(Instant(0), &e[..len], &mut sink).unwrap();
    }
    assert_eq!(sink.checkpoints, 2);
}

/// Appends the host could not log make the node ask for a checkpoint (its snapshot holds them),
/// once, however often they are reported before it is done.
#[test]
fn unlogged_appends_ask_for_one_checkpoint() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut sink = Recorder::default();
    n.handle_storage(Instant(0), Storage::Unlogged, &mut sink);
    n.handle_storage(Instant(1), Storage::Unlogged, &mut sink);
    assert_eq!(sink.checkpoints, 1);
    n.handle_storage(Instant(2), Storage::Checkpointed, &mut sink);
    n.handle_storage(Instant(3), Storage::Unlogged, &mut sink);
    assert_eq!(sink.checkpoints, 2);
}

/// Entries signed by any key but the operator's, or altered after signing, are refused by
/// `submit` and change nothing.
#[test]
fn forged_and_altered_entries_are_refused() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut sink = Recorder::default();
    let forger = SigningKey::from_seed([9; 32]).unwrap();
    let mut e = [0u8; 128];
    let len = tombstone_by(&forger, "web", 5, &mut e);
    let err = n.submit(Instant(0), &e[..len], &mut sink).unwrap_err();
    assert!(matches!(
        err,
        SubmitError::Signature(EntrySignatureError::UnknownKey { .. })
    ));
    let len = tombstone("web", 5, &mut e);
    e[4] ^= 1; // the clock: after the name "web" and its length byte
    let err = n.submit(Instant(0), &e[..len], &mut sink).unwrap_err();
    assert_eq!(
        err,
        SubmitError::Signature(EntrySignatureError::BadSignature)
    );
    assert!(n.store().is_empty());
    assert!(sink.appended.is_empty());
}

/// Frames in flight between two test nodes.
#[derive(Default)]
struct Wire {
    frames: HVec<(PeerAddr, [u8; FRAME_BYTES]), 64>,
    appended: usize,
}

impl Sink for Wire {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        let _ = self.frames.push((to, *frame));
    }
    fn event(&mut self, _: Event) {}
    fn append(&mut self, _: &[u8], _: u64) {
        self.appended += 1;
    }
    fn checkpoint(&mut self) {}
    fn fill_random(&mut self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8)
                .wrapping_mul(31)
                .wrapping_add(self.frames.len() as u8)
                | 1;
        }
    }
}

/// Boxed: a test holds two nodes of half a megabyte each, more than a test thread's stack
/// comfortably carries beside their construction.
fn node_with(seed: u8, join: &[PeerAddr], wal_checkpoint_bytes: u64) -> Box<Node> {
    node_profiled(seed, join, wal_checkpoint_bytes, Profile::LAN)
}

fn node_profiled(
    seed: u8,
    join: &[PeerAddr],
    wal_checkpoint_bytes: u64,
    profile: Profile,
) -> Box<Node> {
    let node_pk = SigningKey::from_seed([seed; 32]).unwrap().public_key();
    let cert = certify(&operator(), &node_pk, 0, Arch::X86_64, false, 0);
    node_certified(seed, &cert, (join, &[]), (wal_checkpoint_bytes, profile))
}

/// Node `seed` (its key from `[seed; 32]`) with certificate `cert` from `operator()`, contacting
/// `join` and, when elected a bridge, `bridge_seeds`.
fn node_certified(
    seed: u8,
    cert: &[u8],
    (join, bridge_seeds): (&[PeerAddr], &[PeerAddr]),
    (wal_checkpoint_bytes, profile): (u64, Profile),
) -> Box<Node> {
    let config = NodeConfig {
        node_seed: [seed; 32],
        cert,
        operator: operator().public_key(),
        revocation_block: 0,
        seed: u64::from(seed),
        join,
        wal_checkpoint_bytes,
        profile,
        bridge_seeds,
        relay: false,
        behind_nat: false,
        own_addrs: &[],
    };
    Box::new(Node::new(&config, Instant(0)).unwrap())
}

/// Two nodes on a perfect wire: runs `ms` of ticks from `start`, delivering every frame.
/// Declares two nodes `$a` and `$b` that joined each other and ran three seconds (handshakes
/// done, members alive), and their addresses. A macro, not a function: two nodes returned by
/// value would not fit a test thread's stack, and the crate has no `Box`.
macro_rules! joined_pair {
    ($a:ident, $b:ident, $addr_a:pat, $addr_b:pat) => {
        let (addr_a, addr_b) = (
            PeerAddr::v4([127, 0, 0, 1], 1),
            PeerAddr::v4([127, 0, 0, 2], 1),
        );
        let mut $a = node_with(1, &[addr_b], WAL_CHECKPOINT_BYTES);
        let mut $b = node_with(2, &[addr_a], WAL_CHECKPOINT_BYTES);
        run_pair(&mut $a, &mut $b, 3_000, 0);
        let ($addr_a, $addr_b) = (addr_a, addr_b);
    };
}

fn run_pair(a: &mut Node, b: &mut Node, ms: u64, start: u64) {
    run_pair_watching(a, b, (start, start + ms), |_| {});
}

/// Runs nodes `a` and `b` on a perfect wire over `[from, to)` ms in 10 ms ticks; `seen` is shown
/// every frame sent.
fn run_pair_watching(
    a: &mut Node,
    b: &mut Node,
    (from, to): (u64, u64),
    mut seen: impl FnMut(&[u8]),
) {
    let (addr_a, addr_b) = (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    );
    for t in (from..to).step_by(10) {
        let now = Instant(t);
        let mut wire = Wire::default();
        a.handle_tick(now, &mut wire);
        b.handle_tick(now, &mut wire);
        while let Some((to, frame)) = wire.frames.pop() {
            seen(&frame[..]);
            let mut next = Wire::default();
            if to == addr_b {
                b.handle_datagram(now, addr_a, &frame, &mut next);
            } else {
                a.handle_datagram(now, addr_b, &frame, &mut next);
            }
            for f in next.frames {
                wire.frames.push(f).unwrap();
            }
        }
    }
}

/// With real sessions between two nodes: a fresh sealed frame with a bit flipped in its header,
/// body or tag is refused by its MAC; the genuine frame is accepted once and refused as a replay
/// after; a frame for a foreign zone is refused. Only the genuine frame changes state.
#[test]
fn tampered_replayed_and_foreign_frames_change_nothing() {
    joined_pair!(a, b, addr_a, addr_b);
    assert!(
        a.link_count() == 1 && b.link_count() == 1,
        "the handshake completed"
    );
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    a.submit(Instant(3_000), &e[..len], &mut Wire::default())
        .unwrap();
    // Tick A alone for a second: its frames to B are fresh, B has seen none of them.
    let mut wire = Wire::default();
    for t in (3_000..4_000).step_by(10) {
        a.handle_tick(Instant(t), &mut wire);
    }
    let to_b = wire
        .frames
        .iter()
        .filter(|(to, f)| *to == addr_b && f[3] == Kind::Data as u8);
    let sealed: HVec<[u8; FRAME_BYTES], 64> = to_b.map(|(_, f)| *f).collect();
    let frame = sealed[0];
    let t = 4_000;
    let refused = |n: &Node, r: CryptoRefusal| n.crypto_refusals()[r.index()];
    let (mac, replay) = (
        refused(&b, CryptoRefusal::BadMac),
        refused(&b, CryptoRefusal::Replay),
    );
    let before = b.state_hash();
    let now = Instant(t);
    for byte in [10, 30, 40, 500, 1020] {
        let mut f = frame;
        f[byte] ^= 1;
        b.handle_datagram(now, addr_a, &f, &mut Wire::default());
    }
    let mut foreign = frame;
    foreign[4] = 3;
    b.handle_datagram(now, addr_a, &foreign, &mut Wire::default());
    assert_eq!(
        b.state_hash(),
        before,
        "nothing forged or foreign changed B"
    );
    assert_eq!(refused(&b, CryptoRefusal::BadMac), mac + 5);
    assert_eq!(b.counters().refused_zone, 1);
    for f in &sealed {
        b.handle_datagram(now, addr_a, f, &mut Wire::default());
    }
    assert_eq!(
        b.state_hash(),
        a.state_hash(),
        "the genuine frames carried the deploy"
    );
    let after = b.state_hash();
    b.handle_datagram(now, addr_a, &frame, &mut Wire::default());
    assert_eq!(refused(&b, CryptoRefusal::Replay), replay + 1);
    assert_eq!(b.state_hash(), after);
}

/// A node's status reaches its peer, only a change is versioned, a restart's floor keeps the
/// version growing, and a stale status never replaces a newer one.
#[test]
fn status_spreads_and_only_grows() {
    use crate::schema::message::UnitState;
    joined_pair!(a, b, _, _);
    assert!(b.status_of(a.id()).is_none(), "nothing reported yet");
    let failing = [(key_hash("web"), UnitState::Restarting)];
    a.set_status(
        Instant(3_000),
        100,
        0,
        failing.into_iter(),
        &mut Wire::default(),
    );
    let version = a.own_status().version;
    assert_eq!(version, 100, "the floor lifts the first version");
    // The first send went to a wire nobody reads (as if lost): a resend a second later carries it.
    run_pair(&mut a, &mut b, 1_500, 3_000);
    let seen = b.status_of(a.id()).expect("the status arrived");
    assert_eq!((seen.version, seen.units.len()), (version, 1));
    a.set_status(
        Instant(4_500),
        0,
        0,
        failing.into_iter(),
        &mut Wire::default(),
    );
    assert_eq!(a.own_status().version, version, "no change, no new version");
    a.set_status(
        Instant(4_500),
        0,
        0,
        core::iter::empty(),
        &mut Wire::default(),
    );
    assert_eq!(a.own_status().version, version + 1);
    run_pair(&mut a, &mut b, 1_500, 4_500);
    let seen = b.status_of(a.id()).unwrap();
    assert!(
        seen.units.is_empty() && seen.version == version + 1,
        "recovered: {seen:?}"
    );
    // A status older than the one held changes nothing.
    let stale = Status {
        version: 1,
        units: HVec::from_slice(&[(Digest(1), UnitState::Failed)]).unwrap(),
        more: false,
        placed: Digest(0),
        trials_listed: false,
        offer: Default::default(),
    };
    b.handle_status(a.id(), stale);
    assert!(b.status_of(a.id()).unwrap().units.is_empty());
}

/// An "all running" status whose every send was lost still reaches the peer, by the probes'
/// `status_seen`: a peer that never hears a box's status leaves the box out of DNS.
#[test]
fn an_all_running_status_spreads_after_lost_sends() {
    joined_pair!(a, b, _, _);
    a.set_status(
        Instant(3_000),
        100,
        0,
        core::iter::empty(),
        &mut Wire::default(),
    );
    // The first send and both resends go to wires nobody reads.
    for t in (3_000..5_500).step_by(10) {
        a.handle_tick(Instant(t), &mut Wire::default());
    }
    assert!(b.status_of(a.id()).is_none(), "every send was lost");
    run_pair(&mut a, &mut b, 2_500, 5_500);
    let seen = b.status_of(a.id()).expect("a probe exchange brought it");
    assert_eq!((seen.version, seen.units.len()), (100, 0));
}

/// A burst of 10 status changes within `STATUS_PUSH_INTERVAL_MS`: the first `STATUS_PUSH_BURST`
/// (three) are pushed at once, the rest once more, coalesced, when the interval is over: every
/// version is set at once, but the peer hears only those four pushes, and ends up holding the
/// last status.
#[test]
fn a_burst_of_status_changes_is_coalesced_into_one_push() {
    use crate::config::{STATUS_PUSH_BURST, STATUS_PUSH_INTERVAL_MS};
    use crate::schema::message::UnitState;
    joined_pair!(a, b, addr_a, _);
    let deliver = |b: &mut Node, wire: Wire, now: Instant| {
        for (_, frame) in wire.frames {
            b.handle_datagram(now, addr_a, &frame, &mut Wire::default());
        }
    };
    let start = 3_000;
    let step_ms = STATUS_PUSH_INTERVAL_MS / 20;
    for i in 0..10u64 {
        let now = Instant(start + i * step_ms);
        let units = [(i + 1, UnitState::Starting)];
        let mut wire = Wire::default();
        a.set_status(now, 100, 0, units.into_iter(), &mut wire);
        assert_eq!(
            wire.frames.len(),
            usize::from(i < STATUS_PUSH_BURST),
            "change {i} pushed"
        );
        deliver(&mut b, wire, now);
    }
    assert_eq!(a.own_status().version, 109, "every change is versioned");
    assert_eq!(b.status_of(a.id()).map(|s| s.version), Some(102));
    // Until the interval is over, ticks push nothing (the probes' frames do not carry statuses).
    let due = start + STATUS_PUSH_INTERVAL_MS;
    for t in (start + 10 * step_ms..due).step_by(10) {
        let mut wire = Wire::default();
        a.handle_tick(Instant(t), &mut wire);
        deliver(&mut b, wire, Instant(t));
    }
    assert_eq!(b.status_of(a.id()).map(|s| s.version), Some(102));
    let mut wire = Wire::default();
    a.handle_tick(Instant(due), &mut wire);
    deliver(&mut b, wire, Instant(due));
    let seen = b.status_of(a.id()).expect("the coalesced push arrived");
    assert_eq!((seen.version, seen.units[0].0), (109, Digest(10)));
}

/// A status set before a peer joined reaches it when it joins (its first ping says it holds
/// none), before any membership push.
#[test]
fn a_new_member_hears_the_status_when_it_joins() {
    let addr_a = PeerAddr::v4([127, 0, 0, 1], 1);
    let mut a = node_with(1, &[], WAL_CHECKPOINT_BYTES);
    let mut b = node_with(2, &[addr_a], WAL_CHECKPOINT_BYTES);
    a.set_status(
        Instant(0),
        100,
        0,
        core::iter::empty(),
        &mut Wire::default(),
    );
    for t in (0..3_000).step_by(10) {
        a.handle_tick(Instant(t), &mut Wire::default());
    }
    // Less than a membership push's interval after the join: only the join can have sent it.
    run_pair(
        &mut a,
        &mut b,
        Profile::LAN.member_sync_interval_ms / 2,
        3_000,
    );
    assert_eq!(b.status_of(a.id()).map(|s| s.version), Some(100));
}

/// A node that leaves is dead to its peer at once, not after a suspicion timeout, and marked as
/// having left (its own notice), not failed. Coming back alive clears the mark, and a later death
/// found by failure detection is a plain death.
#[test]
fn a_leaving_node_is_dead_at_once() {
    joined_pair!(a, b, addr_a, addr_b);
    assert_eq!(b.members()[0].state, MemberState::Alive);
    let mut wire = Wire::default();
    a.leave(&mut wire);
    let mut events = Recorder::default();
    for (to, frame) in wire.frames {
        assert_eq!(to, addr_b);
        b.handle_datagram(Instant(3_001), addr_a, &frame, &mut events);
    }
    assert_eq!(b.members()[0].state, MemberState::Dead);
    assert!(b.members()[0].left);
    assert!(events.events.contains(&Event::MemberLeft(a.id())));
    assert!(!events.events.contains(&Event::MemberDead(a.id())));
    // `a` goes on (as a restart would) and refutes its death with a higher incarnation.
    run_pair(&mut a, &mut b, 3_000, 3_010);
    assert_eq!(b.members()[0].state, MemberState::Alive);
    assert!(!b.members()[0].left, "alive again clears the mark");
    // Then it goes silent: failure detection finds it dead, which is not leaving.
    let mut events = Recorder::default();
    for t in (6_010..30_000).step_by(10) {
        b.handle_tick(Instant(t), &mut events);
    }
    assert_eq!(b.members()[0].state, MemberState::Dead);
    assert!(!b.members()[0].left);
    assert!(events.events.contains(&Event::MemberDead(a.id())));
    assert!(!events.events.contains(&Event::MemberLeft(a.id())));
}

/// `n` reports `units` as not running, with what is placed on it as it sees it.
fn report(n: &mut Node, now: u64, units: &[(u64, crate::schema::message::UnitState)]) {
    let placed = n.own_placed_digest();
    let units = units.iter().copied();
    n.set_status(Instant(now), 100, placed, units, &mut Wire::default());
}

/// Submits service `web` with two replicas (`/bin/true`) to `a`.
fn deploy_two_replicas(a: &mut Node, now: Instant) {
    deploy_two_replicas_at(a, now, 7);
}

/// Submits version `clock` of service `web` with two replicas (`/bin/true`) to `a`.
fn deploy_two_replicas_at(a: &mut Node, now: Instant, clock: u64) {
    use crate::schema::entry::{ServiceSpec, Source};
    let op = operator();
    let spec = ServiceSpec {
        replicas: 2,
        ..ServiceSpec::minimal(Source::Exec { path: "/bin/true" })
    };
    let body = EntryBody {
        name: "web",
        version: Version {
            clock,
            key_id: op.public_key().key_id(),
        },
        spec: Some(spec),
    };
    let mut e = [0u8; 256];
    let len = sign_entry(&op, &body, &mut e).unwrap();
    a.submit(now, &e[..len], &mut Wire::default()).unwrap();
}

/// A peer's status speaks only of the entries it had placed when it made it: a new version
/// deployed elsewhere is not read as running there (which `deploy --wait` would take for done)
/// until the peer reports with that version in hand, and DNS's lenient reading is unchanged.
#[test]
fn a_status_made_before_a_deploy_does_not_cover_it() {
    use crate::executor::health_on;
    joined_pair!(a, b, _, _);
    // B reports "all running" while it has nothing placed.
    report(&mut b, 3_000, &[]);
    run_pair(&mut a, &mut b, 1_500, 3_000);
    assert!(a.status_of(b.id()).is_some());
    // A deploys a service with two replicas: it is placed on both.
    deploy_two_replicas(&mut a, Instant(4_500));
    let key = key_hash("web");
    assert!(a.placement(key).contains(&b.id()));
    let placed = a.placed_digests();
    let b_id = b.id();
    let strict = |a: &Node, placed| health_on(a, None, (b_id, key), "web", Some(placed));
    assert_eq!(
        strict(&a, &placed),
        Some(UnitHealth::Pending),
        "B's status predates the deploy"
    );
    let lenient = health_on(&a, None, (b_id, key), "web", None);
    assert_eq!(lenient, Some(UnitHealth::Running), "DNS reads as before");
    // B receives the entry and reports again, with the entry placed there.
    run_pair(&mut a, &mut b, 1_500, 4_500);
    assert!(b.store().get(key).is_some(), "the entry spread");
    report(&mut b, 6_000, &[]);
    run_pair(&mut a, &mut b, 1_500, 6_000);
    let placed = a.placed_digests();
    assert_eq!(strict(&a, &placed), Some(UnitHealth::Running));
}

/// A peer still settling the version before lists its unit (running, for DNS) in a status made
/// before it had the next version: read strictly, that is not the next version running, so a
/// `deploy --wait` for a version that fails at once is not taken for done while the second wave
/// settles the one before.
#[test]
fn a_settling_unit_of_the_version_before_is_not_the_new_one_running() {
    use crate::executor::health_on;
    use crate::schema::message::UnitState;
    joined_pair!(a, b, _, _);
    deploy_two_replicas_at(&mut a, Instant(3_000), 7);
    run_pair(&mut a, &mut b, 1_500, 3_000);
    let key = key_hash("web");
    assert!(b.store().get(key).is_some(), "version 7 spread");
    report(&mut b, 4_500, &[(key, UnitState::Settling)]);
    run_pair(&mut a, &mut b, 1_500, 4_500);
    let b_id = b.id();
    let strict = |a: &Node| health_on(a, None, (b_id, key), "web", Some(&a.placed_digests()));
    assert_eq!(strict(&a), Some(UnitHealth::Running), "B runs version 7");
    deploy_two_replicas_at(&mut a, Instant(6_000), 8);
    assert_eq!(
        strict(&a),
        Some(UnitHealth::Pending),
        "B's settling unit is version 7's"
    );
    let lenient = health_on(&a, None, (b_id, key), "web", None);
    assert_eq!(lenient, Some(UnitHealth::Running), "DNS still answers B");
}

/// DNS answers a peer that builds a new version or is about to restart into one (the version
/// before still runs there), and not one that builds, or failed to build, the first version it
/// would run, or has nothing of it running yet: nothing runs there.
#[test]
fn dns_leaves_out_a_peer_whose_first_build_failed() {
    use crate::executor::Names;
    use crate::schema::message::UnitState;
    joined_pair!(a, b, addr_a, _);
    deploy_two_replicas(&mut a, Instant(3_000));
    run_pair(&mut a, &mut b, 1_500, 3_000);
    let key = key_hash("web");
    let b_id = b.id();
    let names = |a: &Node| {
        let own = addr_a;
        Names {
            node: a,
            executor: None,
            own,
        }
        .healthy_at(b_id, key, "web")
    };
    let mut now = 4_500;
    for (state, answered) in [
        (UnitState::FirstBuildFailed, false),
        (UnitState::FirstBuilding, false),
        (UnitState::BuildFailed, true),
        (UnitState::Building, true),
        (UnitState::Pending, false),
        (UnitState::Updating, true),
    ] {
        report(&mut b, now, &[(key, state)]);
        run_pair(&mut a, &mut b, 1_500, now);
        now += 1_500;
        assert_eq!(names(&a).is_some(), answered, "{state:?}");
    }
}

/// A member brought back by a rumor (alive at a higher incarnation, as a refutation sent just
/// before its death arrives late) after this node dropped its session with it is still probed,
/// through a handshake, and found dead when it never answers: it does not stay live for good.
#[test]
fn a_member_with_no_session_is_still_probed_and_found_dead() {
    joined_pair!(a, b, addr_a, _addr_b);
    let mut wire = Wire::default();
    a.leave(&mut wire);
    for (_, frame) in wire.frames {
        b.handle_datagram(Instant(3_001), addr_a, &frame, &mut Recorder::default());
    }
    assert_eq!(b.members()[0].state, MemberState::Dead);
    assert!(!b.out.has_link(addr_a), "a death drops the session");
    let revived = MemberUpdate {
        state: MemberState::Alive,
        incarnation: b.members()[0].incarnation + 1,
        ..b.members()[0].update()
    };
    b.members.apply(Instant(3_002), &revived, b.id());
    assert_eq!(b.members()[0].state, MemberState::Alive);
    let mut events = Recorder::default();
    for t in (3_010..40_000).step_by(10) {
        b.handle_tick(Instant(t), &mut events);
    }
    assert_eq!(b.members()[0].state, MemberState::Dead);
    assert!(events.events.contains(&Event::MemberSuspect(a.id())));
}

/// A member record for a box that exists only in tables (it never answers).
fn phantom(i: u64) -> MemberUpdate {
    MemberUpdate {
        id: 0xface_0000 + i,
        incarnation: 0,
        state: MemberState::Alive,
        addr: PeerAddr::v4([10, 9, (i >> 8) as u8, i as u8], 7946),
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

/// Puts `count` phantom members into `n`'s table without queueing them for piggybacks, so only
/// a push-pull can tell a peer about them.
fn add_phantoms(n: &mut Node, first: u64, count: u64) {
    for i in first..first + count {
        n.apply_member(Instant(0), &phantom(i), 0, &mut Wire::default());
    }
    while n.members.pending_len() > 0 {
        n.members.take_piggyback();
    }
}

fn lists(n: &Node, id: u64) -> bool {
    n.members()
        .iter()
        .any(|m| m.id == id && m.state == MemberState::Alive)
}

/// A joiner learns a table of more than a page from the node it joined in one push-pull, within
/// a second and a half of simulated time, though nothing was piggybacked.
#[test]
fn a_joiner_learns_the_whole_table_in_one_exchange() {
    let (addr_a, addr_b) = (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    );
    let mut a = node_with(1, &[], WAL_CHECKPOINT_BYTES);
    let mut b = node_with(2, &[addr_a], WAL_CHECKPOINT_BYTES);
    let phantoms = MEMBER_PAGE_RECORDS as u64 + 10;
    add_phantoms(&mut a, 0, phantoms);
    run_pair(&mut a, &mut b, 1_500, 0);
    assert!((0..phantoms).all(|i| lists(&b, phantom(i).id)));
    assert!(lists(&b, a.id()) && lists(&a, b.id()));
    assert_eq!(a.counters().tables_sent, 1, "one push answers the join");
    let _ = addr_b;
}

/// Two nodes that already know each other: a member only one of them holds reaches the other
/// through the periodic sync page (their live sets differ, so a push-pull follows), within two
/// sync intervals.
#[test]
fn a_missing_member_is_pulled_after_a_sync_page() {
    joined_pair!(a, b, _addr_a, _addr_b);
    add_phantoms(&mut a, 0, 1);
    assert!(!lists(&b, phantom(0).id));
    run_pair(
        &mut a,
        &mut b,
        2 * Profile::LAN.member_sync_interval_ms + 500,
        3_000,
    );
    // The phantom never answers the handshake probes, so by now both may have found it dead:
    // what matters is that `b` learned of it at all, and holds the same live set as `a`.
    let id = phantom(0).id;
    assert!(b.members().iter().any(|m| m.id == id));
    assert_eq!(a.members.live_digest(a.id()), b.members.live_digest(b.id()));
}

/// A peer that keeps asking for the table gets it once per `MEMBER_PULL_MIN_MS`, however many
/// pulls it sends: each pull answered costs at most `MEMBER_PAGES_MAX` frames.
#[test]
fn pulls_are_answered_once_per_interval() {
    joined_pair!(a, b, _addr_a, _addr_b);
    add_phantoms(&mut a, 0, 2 * MEMBER_PAGE_RECORDS as u64);
    let before = a.counters().tables_sent;
    let mut wire = Wire::default();
    let t = a.out.now;
    for _ in 0..5 {
        a.handle_page(t, b.id(), PageKind::Pull, Digest(0), &[], &mut wire);
    }
    assert_eq!(a.counters().tables_sent, before + 1);
    assert_eq!(
        wire.frames.len(),
        3,
        "two pages of phantoms and one more record: three pages"
    );
    let later = t.add_ms(crate::config::MEMBER_PULL_MIN_MS);
    a.out.now = later;
    a.handle_page(later, b.id(), PageKind::Pull, Digest(0), &[], &mut wire);
    assert_eq!(a.counters().tables_sent, before + 2);
}

/// Lifeguard's local health: a node whose probes go unanswered raises its score (once per
/// member it held alive), one that must refute a suspicion of itself too; acks bring it back
/// to 0 (once the average of misses, `MISS_AVERAGE` probes long, has forgotten the miss), and a
/// score stretches the suspicion timeout.
#[test]
fn missed_acks_and_refutations_raise_local_health() {
    joined_pair!(a, b, _addr_a, _addr_b);
    assert_eq!((a.local_health(), b.local_health()), (0, 0));
    // `a` goes silent: `b`'s next probe of it fails.
    for t in (3_000..5_000).step_by(10) {
        b.handle_tick(Instant(t), &mut Wire::default());
    }
    assert_eq!(b.local_health(), 1, "one miss of a member held alive");
    let suspect = b.members()[0].update();
    assert_eq!(suspect.state, MemberState::Suspect);
    // `a` hears that it is suspect and refutes: that counts against its own health too.
    a.apply_member(Instant(5_000), &suspect, b.id(), &mut Wire::default());
    assert_eq!(a.local_health(), 1);
    run_pair(&mut a, &mut b, 30_000, 5_000);
    assert_eq!((a.local_health(), b.local_health()), (0, 0));
    assert!(lists(&b, a.id()));
}

/// Membership gossip puts what the sender believes of a suspect first in the suspect's frame, as
/// probes do: under a queue full of other news (a cluster forming), a suspect that got only these
/// frames never heard of its suspicion, and the cluster declared it dead.
#[test]
fn membership_gossip_tells_a_suspect_of_its_own_suspicion() {
    joined_pair!(a, b, addr_a, addr_b);
    let t = Instant(3_000);
    a.out.now = t;
    assert_eq!(
        a.members.suspect(t, b.id(), a.id()),
        Applied::Changed(MemberState::Suspect)
    );
    // The suspicion has had its transmits; fresh news of others fills the queue.
    while a.members.pending_len() > 0 {
        a.members.take_piggyback();
    }
    for i in 0..crate::config::MEMBER_UPDATES_MAX as u64 {
        a.apply_member(t, &phantom(i), 0, &mut Wire::default());
    }
    let mut wire = Wire::default();
    a.gossip_members(&mut wire);
    let refuted = b.counters().refutations;
    for (_, frame) in wire.frames.iter().filter(|(to, _)| *to == addr_b) {
        b.handle_datagram(t, addr_a, frame, &mut Wire::default());
    }
    assert_eq!(
        b.counters().refutations,
        refuted + 1,
        "b heard it and refuted"
    );
}

/// A member that hears it is suspect refutes, and the member that told it (accuser or relayer)
/// gets the refutation straight back in a frame of its own, so its suspicion ends there and then
/// rather than when gossip brings the news round; a ping needs no such frame (its ack carries it).
#[test]
fn a_suspect_refutes_straight_to_the_member_that_told_it() {
    joined_pair!(a, b, addr_a, addr_b);
    let t = Instant(3_000);
    a.out.now = t;
    b.out.now = t;
    assert_eq!(
        a.members.suspect(t, b.id(), a.id()),
        Applied::Changed(MemberState::Suspect)
    );
    let mut told = Wire::default();
    a.tell_suspect(&mut told, b.id());
    let mut answer = Wire::default();
    for (_, frame) in told.frames.iter().filter(|(to, _)| *to == addr_b) {
        b.handle_datagram(t, addr_a, frame, &mut answer);
    }
    assert_eq!(b.counters().refutations_told, 1);
    let back = answer.frames.iter().filter(|(to, _)| *to == addr_a);
    assert_eq!(
        back.clone().count(),
        1,
        "one frame back to the teller: {:?}",
        answer.frames
    );
    for (_, frame) in back {
        a.handle_datagram(t, addr_b, frame, &mut Wire::default());
    }
    let m = a.members.get(b.id()).unwrap();
    assert_eq!(m.state, MemberState::Alive, "a believes the refutation");
    assert!(m.incarnation > 0);
    // A frame that says nothing about b brings nothing back.
    let mut quiet = Wire::default();
    a.gossip_members(&mut quiet);
    let mut none = Wire::default();
    for (_, frame) in quiet.frames.iter().filter(|(to, _)| *to == addr_b) {
        b.handle_datagram(t, addr_a, frame, &mut none);
    }
    assert_eq!(b.counters().refutations_told, 1);
}

/// A death goes on at the next tick, not at the next gossip round: each box that learns it
/// passes it on at once, so the cluster hears it within a few network hops.
#[test]
fn a_death_is_passed_on_at_the_next_tick() {
    joined_pair!(a, b, addr_a, addr_b);
    let t = Instant(3_000);
    let mut dead = phantom(1);
    for n in [&mut a, &mut b] {
        n.apply_member(t, &dead, 0, &mut Wire::default());
        // Neither a gossip round nor a probe falls in the ticks below.
        (n.next_gossip, n.next_probe) = (t.add_ms(10_000), t.add_ms(10_000));
    }
    dead.state = MemberState::Dead;
    a.apply_member(t, &dead, 0, &mut Wire::default());
    let mut wire = Wire::default();
    a.handle_tick(t.add_ms(10), &mut wire);
    assert_eq!(a.counters().death_pushes, 1);
    for (_, frame) in wire.frames.iter().filter(|(to, _)| *to == addr_b) {
        b.handle_datagram(t.add_ms(10), addr_a, frame, &mut Wire::default());
    }
    let heard = b.members.get(dead.id).map(|m| m.state);
    assert_eq!(heard, Some(MemberState::Dead), "b heard the death at once");
    // Nothing new died: the next tick pushes nothing.
    a.handle_tick(t.add_ms(20), &mut Wire::default());
    assert_eq!(a.counters().death_pushes, 1);
}

/// Under steady loss the walk alone wanders: half the probes missed, one by one in turn, leaves it
/// at 0 or 1, where a node would run timeouts a ninth of its peers'. The average of misses keeps
/// the score at the top; misses as rare as 10% loss gives (under 1%) set no floor, nor does the
/// one miss of a box that died (its probers must not wait longer to declare it dead).
#[test]
fn a_steady_share_of_misses_keeps_local_health_up() {
    joined_pair!(a, b, _addr_a, _addr_b);
    for i in 0..64 {
        a.note_probe(i % 2 == 0, u8::from(i % 2 == 0));
    }
    assert_eq!(a.health, 0, "the walk alone is back at 0 after each ack");
    assert_eq!(
        a.local_health(),
        AWARENESS_MAX,
        "half missed: the floor is the top"
    );
    for i in 0..200 {
        b.note_probe(i % 100 == 0, u8::from(i % 100 == 0));
    }
    assert_eq!(b.local_health(), 0, "one miss in a hundred: no floor");
    b.note_probe(true, 1);
    b.note_probe(false, 0);
    assert_eq!(
        b.local_health(),
        0,
        "one miss (a box that died), then an ack: nothing stretched"
    );
    for _ in 0..16 {
        b.note_probe(true, 1);
    }
    assert_eq!(
        b.local_health(),
        AWARENESS_MAX,
        "a stall: the walk climbs at once"
    );
}

/// The answering side of a handshake sends a sealed frame at once, so on a perfect wire the
/// initiator sends its Finish once; it used to repeat it every `HANDSHAKE_RESEND_MS` until gossip
/// happened to pick it, the bulk of a fresh cluster's traffic at rest.
#[test]
fn a_handshake_sends_one_finish() {
    joined_pair!(a, b, _addr_a, _addr_b);
    // Between probes (A's are at 40 ms past each half second with these seeds, B's at 20), A
    // loses its session with B, which both already list: nothing but the handshake is news.
    run_pair(&mut a, &mut b, 150, 3_000);
    a.out.forget_peer(b.id());
    let mut finishes = 0;
    run_pair_watching(&mut a, &mut b, (3_150, 5_000), |frame| {
        finishes += usize::from(frame[3] == Kind::Finish as u8);
    });
    assert_eq!(
        (a.link_count(), b.link_count()),
        (1, 1),
        "the handshake completed"
    );
    assert_eq!(finishes, 1);
}

/// Two nodes at rest send what their profile's arithmetic says (`Profile::rest_bytes_per_s`),
/// within a frame of rounding: metered stays under its 400 bytes/s.
#[test]
fn a_pair_at_rest_sends_what_its_profile_says() {
    let (addr_a, addr_b) = (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    );
    for profile in Profile::ALL {
        let mut a = node_profiled(1, &[addr_b], WAL_CHECKPOINT_BYTES, profile);
        let mut b = node_profiled(2, &[addr_a], WAL_CHECKPOINT_BYTES, profile);
        run_pair(&mut a, &mut b, 10_000, 0);
        let before = a.counters().bytes_out + b.counters().bytes_out;
        let secs = 120;
        run_pair(&mut a, &mut b, secs * 1000, 10_000);
        let sent = a.counters().bytes_out + b.counters().bytes_out - before;
        let per_node = sent / secs / 2;
        let frame_per_window = FRAME_BYTES as u64 / secs;
        assert!(
            per_node <= profile.rest_bytes_per_s() + frame_per_window,
            "{}: {per_node} B/s",
            profile.name
        );
        assert!(
            per_node <= profile.rest_bytes_per_s_goal,
            "{}",
            profile.name
        );
    }
}

/// A node given its own address to join (every box handed the same list) finds out when its own
/// Hello comes back, and stops: before, it started a handshake with itself every second and
/// repeated the Hello ten times a second, forever.
#[test]
fn a_node_does_not_join_itself() {
    let me = PeerAddr::v4([127, 0, 0, 1], 1);
    let other = PeerAddr::v4([127, 0, 0, 9], 1);
    let mut a = node_with(1, &[me, other, me], WAL_CHECKPOINT_BYTES);
    let mut sent_to_me = 0;
    for t in (0..10_000).step_by(10) {
        let now = Instant(t);
        let mut wire = Wire::default();
        a.handle_tick(now, &mut wire);
        while let Some((to, frame)) = wire.frames.pop() {
            if to == me {
                sent_to_me += 1;
                a.handle_datagram(now, me, &frame, &mut Wire::default());
            }
        }
    }
    assert_eq!(sent_to_me, 1, "one Hello, back at once");
    assert_eq!(
        &a.join[..],
        &[other],
        "the other join address stays, each copy of its own goes"
    );
    assert!(!a.join_heard[0]);
}

/// A join address given twice is heard for both copies once its box answers: the copy left
/// unheard was pinged every second for good (in MycoSim at rest, one ping and its ack a second
/// in a cluster of 50, whatever the profile).
#[test]
fn a_join_address_given_twice_is_heard_for_both() {
    let (addr_a, addr_b) = (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    );
    let mut a = node_with(1, &[addr_b, addr_b], WAL_CHECKPOINT_BYTES);
    let mut b = node_with(2, &[addr_a], WAL_CHECKPOINT_BYTES);
    assert_eq!(&a.join[..], &[addr_b, addr_b]);
    run_pair(&mut a, &mut b, 3_000, 0);
    assert_eq!(&a.join_heard[..2], &[true, true]);
}

/// A node's offer reaches its peer in its status; the peer then picks it as a substitute for
/// that build, with the node key the handshake verified (the key of seed 1), at the offered port
/// on the node's address. An offer without a cache, or of another build, picks nobody; after a
/// revocation ends the session, the node is no longer picked.
#[test]
fn offers_spread_and_pick_certified_peers() {
    use crate::crypto::revocation::encode_revocation;
    use crate::executor::substitute::substitutes;
    joined_pair!(a, b, addr_a, _);
    let key = crate::executor::build_key("web-0123456789ab");
    let keys = [9, key, 3, key];
    a.set_offer(
        Instant(3_000),
        0,
        7947,
        keys.into_iter(),
        &mut Wire::default(),
    );
    let offer = &a.own_status().offer;
    assert_eq!(offer.keys.len(), 3, "ascending, once each: {offer:?}");
    assert!(offer.keys.windows(2).all(|w| w[0] < w[1]));
    run_pair(&mut a, &mut b, 3_000, 3_000);
    assert!(b.status_of(a.id()).unwrap().offer.offers(key));
    let picked = substitutes(&b, key);
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].id, a.id());
    assert_eq!(
        picked[0].cache,
        PeerAddr {
            port: 7947,
            ..addr_a
        }
    );
    let a_pk = SigningKey::from_seed([1; 32]).unwrap().public_key();
    assert_eq!(picked[0].key, a_pk.0);
    assert!(substitutes(&b, key ^ 1).is_empty(), "not offered");
    a.set_offer(Instant(6_000), 0, 0, keys.into_iter(), &mut Wire::default());
    assert!(a.own_status().offer.keys.is_empty(), "no cache, no keys");
    run_pair(&mut a, &mut b, 3_000, 6_000);
    assert!(substitutes(&b, key).is_empty(), "the cache is off");
    a.set_offer(
        Instant(9_000),
        0,
        7947,
        keys.into_iter(),
        &mut Wire::default(),
    );
    run_pair(&mut a, &mut b, 3_000, 9_000);
    assert_eq!(substitutes(&b, key).len(), 1);
    let mut record = [0u8; crate::config::REVOCATION_BYTES_MAX];
    let n = encode_revocation(&operator(), 1, &mut record);
    b.handle_revocation(&record[..n], &mut Wire::default())
        .unwrap();
    assert_eq!(b.certified_key(a.id()), None, "the session ended");
    assert!(
        substitutes(&b, key).is_empty(),
        "a revoked peer is not trusted"
    );
}

/// Of more than `OFFER_KEYS_MAX` keys, the first given are offered (repeats counted once), in
/// ascending order: the same set in another order is the same offer, not a change.
#[test]
fn an_offer_keeps_the_first_keys_given() {
    let mut a = node(WAL_CHECKPOINT_BYTES);
    let max = crate::config::OFFER_KEYS_MAX as u64;
    let newest_first = [100, 100].into_iter().chain((0..max + 5).rev());
    a.set_offer(Instant(0), 0, 1, newest_first, &mut Wire::default());
    let kept: std::vec::Vec<u64> = a.own_status().offer.keys.iter().map(|d| d.0).collect();
    let first: std::vec::Vec<u64> = (6..max + 5).chain([100]).collect();
    assert_eq!(kept, first);
    let version = a.own_status().version;
    let same = [100].into_iter().chain(6..max + 5);
    a.set_offer(Instant(0), 0, 1, same, &mut Wire::default());
    assert_eq!(
        a.own_status().version,
        version,
        "the same offer is not a change"
    );
}

/// A tunnel's Open is checked with the node's own identity and trust: a credential scoped to this
/// node opens, one scoped to another is refused, and once a revocation raises the block past this
/// node's own certificate the node refuses every tunnel (it cannot prove itself).
#[test]
fn answer_tunnel_uses_the_nodes_trust_of_now() {
    use crate::crypto::access::{issue_access, AccessBody};
    use crate::crypto::revocation::encode_revocation;
    use crate::crypto::tunnel::{RefuseReason, TunnelClient};
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let op = operator();
    let holder = SigningKey::from_seed([40; 32]).unwrap();
    let now_s = 1_800_000_000;
    let open_for = |scope: u64| {
        let body = AccessBody {
            operator_pk: op.public_key().0,
            holder_pk: holder.public_key().0,
            expires_at_s: now_s + 60,
            issued_at: 0,
            node: Some(scope),
        };
        let access = issue_access(&op, &body);
        TunnelClient::new(&access, &holder, None, [3; 32], [4; 32]).unwrap()
    };
    let (client, open) = open_for(n.id());
    let (responder, accept) = n.answer_tunnel(&open, now_s, [5; 32], [6; 32]).unwrap();
    let (_, prove, cert) = client.handle_accept(&accept, &holder).unwrap();
    assert_eq!(cert.node_id(), n.id());
    assert!(n.finish_tunnel(&responder, &prove, now_s).is_ok());
    let (_, elsewhere) = open_for(n.id() ^ 1);
    let refused = n.answer_tunnel(&elsewhere, now_s, [5; 32], [6; 32]);
    assert_eq!(
        refused.err().map(|e| e.reason()),
        Some(RefuseReason::WrongNode)
    );
    let mut rev = [0u8; crate::config::REVOCATION_BYTES_MAX];
    let len = encode_revocation(&op, 1, &mut rev);
    n.handle_revocation(&rev[..len], &mut Recorder::default())
        .unwrap();
    let refused = n.answer_tunnel(&open, now_s, [5; 32], [6; 32]);
    assert_eq!(
        refused.err().map(|e| e.reason()),
        Some(RefuseReason::Unavailable)
    );
    assert!(
        n.finish_tunnel(&responder, &prove, now_s).is_err(),
        "revoked since its Open"
    );
}

/// Signs service `name` at `clock` as a flake locked at `rev` (one byte repeated); the entry.
fn flake_service(name: &str, clock: u64, rev: u8) -> std::vec::Vec<u8> {
    use crate::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
    use crate::schema::entry::{ServiceSpec, Source};
    let hex: std::string::String = std::format!("{rev:02x}").repeat(FLAKE_REV_BYTES);
    let uri = std::format!("git+file:///srv/{name}?rev={hex}");
    let op = operator();
    let source = Source::Flake {
        uri: &uri,
        attr: "default",
        rev: [rev; FLAKE_REV_BYTES],
        nar_hash: [0x5c; NAR_HASH_BYTES],
    };
    let body = EntryBody {
        name,
        version: Version {
            clock,
            key_id: op.public_key().key_id(),
        },
        spec: Some(ServiceSpec::minimal(source)),
    };
    let mut e = [0u8; 512];
    let len = sign_entry(&op, &body, &mut e).unwrap();
    e[..len].to_vec()
}

/// Decides for `node` in `mode` about build key `key` at `now_ms`.
fn decide_at(
    node: &Node,
    mode: crate::executor::BuildMode,
    key: u64,
    now_ms: u64,
    asked: &mut crate::executor::remote::Asked,
) -> crate::executor::remote::Decision {
    use crate::executor::remote::{decide, Version};
    let v = Version { key, now_ms, asked };
    decide(node, mode, v)
}

/// A box that does not build asks the builder its gossip names, again while unanswered, and
/// gives it up after `REQUEST_ANSWER_MS`; it waits while the builder builds that version and
/// fetches once its cache offers it. It never decides to build. A box that builds does, unless
/// a peer builds the same version, for at most `BUILD_WAIT_MAX_MS`.
#[test]
fn remote_builds_are_decided_from_gossip() {
    use crate::config::{BUILD_WAIT_MAX_MS, REQUEST_ANSWER_MS};
    use crate::executor::remote::{Asked, Decision};
    use crate::executor::BuildMode;
    use crate::schema::message::system_bit;
    joined_pair!(a, b, _, _);
    let key = crate::executor::build_key("web-0123456789ab");
    let remote = BuildMode {
        local: false,
        builds: 0,
        system: Arch::Any,
    };
    let mut asked = Asked::default();
    let wait_none = Decision::Wait(None);
    assert_eq!(decide_at(&b, remote, key, 3_000, &mut asked), wait_none);
    // `a` becomes a builder for x86_64 with a cache.
    let mut w = Wire::default();
    a.set_offer(Instant(3_000), 0, 7947, core::iter::empty(), &mut w);
    a.set_building(Instant(3_000), 0, system_bit(Arch::X86_64), 0, &mut w);
    run_pair(&mut a, &mut b, 3_000, 3_000);
    let ask_a = Decision::Wait(Some(a.id()));
    assert_eq!(decide_at(&b, remote, key, 6_000, &mut asked), ask_a);
    assert_eq!(asked.builder, Some((a.id(), 6_000)));
    let still = 6_000 + REQUEST_ANSWER_MS - 1;
    assert_eq!(decide_at(&b, remote, key, still, &mut asked), ask_a);
    // Not answered in time: given up, and with no other builder, all are tried again later
    // (silence is not a failed build).
    let late = 6_000 + REQUEST_ANSWER_MS;
    assert_eq!(decide_at(&b, remote, key, late, &mut asked), wait_none);
    assert!(asked.builder.is_none() && asked.tried.is_empty());
    // Asked again; now `a` builds that version: no bound of an unanswered request applies.
    assert_eq!(decide_at(&b, remote, key, late, &mut asked), ask_a);
    a.set_building(Instant(6_000), 0, system_bit(Arch::X86_64), key, &mut w);
    run_pair(&mut a, &mut b, 3_000, 9_000);
    let later = late + REQUEST_ANSWER_MS + 1;
    assert_eq!(decide_at(&b, remote, key, later, &mut asked), ask_a);
    // A box that builds waits for `a`'s build, then builds itself once the wait is too long.
    let local = BuildMode::default();
    let mut own = Asked::default();
    assert_eq!(decide_at(&b, local, key, 12_000, &mut own), wait_none);
    let end = 12_000 + BUILD_WAIT_MAX_MS;
    assert_eq!(decide_at(&b, local, key, end - 1, &mut own), wait_none);
    let build_here = Decision::Run(Default::default());
    assert_eq!(decide_at(&b, local, key, end, &mut own), build_here);
    // `a` offers the result: both fetch it from `a`.
    a.set_offer(Instant(12_000), 0, 7947, [key].into_iter(), &mut w);
    a.set_building(Instant(12_000), 0, system_bit(Arch::X86_64), 0, &mut w);
    run_pair(&mut a, &mut b, 3_000, 12_000);
    for mode in [remote, local] {
        let Decision::Run(from) = decide_at(&b, mode, key, 15_000, &mut Asked::default()) else {
            panic!("a offers it");
        };
        assert_eq!(
            from.iter().map(|s| s.id).collect::<std::vec::Vec<_>>(),
            [a.id()]
        );
    }
    // A builder for another system is not asked.
    a.set_offer(Instant(15_000), 0, 7947, core::iter::empty(), &mut w);
    a.set_building(Instant(15_000), 0, system_bit(Arch::Aarch64), 0, &mut w);
    run_pair(&mut a, &mut b, 3_000, 15_000);
    let mut fresh = Asked::default();
    assert_eq!(decide_at(&b, remote, key, 18_000, &mut fresh), wait_none);
}

/// A builder takes a request only for an entry it holds with that digest and build key, for a
/// system it builds; a repeat changes nothing; beyond `PEER_BUILDS_MAX` it refuses. The request
/// runs on the build lane as a build that may build, and once done is forgotten and counted.
#[test]
fn a_builder_takes_bounded_requests_for_versions_it_holds() {
    use crate::config::PEER_BUILDS_MAX;
    use crate::executor::remote::request;
    use crate::executor::{BuildMode, Executor, Refused};
    use crate::schema::message::{system_bit, Digest};
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut requests = std::vec::Vec::new();
    for i in 0..=PEER_BUILDS_MAX {
        let name = std::format!("web{i}");
        let bytes = flake_service(&name, 1, 0x10 + i as u8);
        n.submit(Instant(0), &bytes, &mut Wire::default()).unwrap();
        let entry = n.store().get_by_name(&name).unwrap();
        requests.push(request(&entry, Arch::X86_64).unwrap());
    }
    let mut e = Executor::new(false);
    assert_eq!(
        e.handle_build_request(Instant(0), &n, (9, &requests[0])),
        Err(Refused::NotBuilder)
    );
    e.set_build_mode(BuildMode {
        local: true,
        builds: system_bit(Arch::X86_64),
        system: Arch::Any,
    });
    let aarch = BuildRequest {
        system: Arch::Aarch64,
        ..requests[0]
    };
    assert_eq!(
        e.handle_build_request(Instant(0), &n, (9, &aarch)),
        Err(Refused::NotBuilder)
    );
    for wrong in [
        BuildRequest {
            digest: Digest(requests[0].digest.0 ^ 1),
            ..requests[0]
        },
        BuildRequest {
            build: Digest(requests[0].build.0 ^ 1),
            ..requests[0]
        },
        BuildRequest {
            service: Digest(7),
            ..requests[0]
        },
    ] {
        assert_eq!(
            e.handle_build_request(Instant(0), &n, (9, &wrong)),
            Err(Refused::Unknown)
        );
    }
    for r in &requests[..PEER_BUILDS_MAX] {
        assert_eq!(e.handle_build_request(Instant(0), &n, (9, r)), Ok(()));
    }
    assert_eq!(
        e.handle_build_request(Instant(0), &n, (9, &requests[0])),
        Ok(()),
        "a repeat"
    );
    let last = &requests[PEER_BUILDS_MAX];
    assert_eq!(
        e.handle_build_request(Instant(0), &n, (9, last)),
        Err(Refused::Full)
    );
    assert_eq!(e.stats.build_requests_refused, 6);
    run_a_peer_build(&mut e, &n, &requests);
}

/// Runs the first of `requests`, accepted by `e`: a build that may build, for that version; one
/// at a time; once done it is counted and its room is free for the last request; asked again
/// before its cache can list it, it is not built again until `REQUEST_ANSWER_MS` passed.
fn run_a_peer_build(e: &mut crate::executor::Executor, n: &Node, requests: &[BuildRequest]) {
    use crate::config::PEER_BUILDS_MAX;
    use crate::executor::{Command, Outcome};
    let last = requests.last().unwrap();
    let issued = e.poll_build(Instant(1), n).expect("a request is due");
    let token = issued.token;
    let Command::Build {
        name, local, root, ..
    } = issued.command
    else {
        panic!("a build");
    };
    assert_eq!((name, local), ("web0", true));
    assert_eq!(crate::executor::build_key(&root), requests[0].build.0);
    assert_eq!(e.building_key(), requests[0].build.0);
    assert!(e.poll_build(Instant(2), n).is_none(), "one build at a time");
    let json = br#"[{"outputs":{"out":"/nix/store/xyz-web0"}}]"#;
    let out = Outcome {
        ok: true,
        stdout: json,
    };
    assert!(e.handle_command_done(Instant(3), token, out));
    assert_eq!(e.stats.builds_for_peers, 1);
    assert_eq!(e.building_key(), 0);
    assert_eq!(
        e.handle_build_request(Instant(4), n, (9, last)),
        Ok(()),
        "room again"
    );
    // Asked again before the cache lists it: not built twice, until the offer's bound ran out.
    let again = (9, &requests[0]);
    assert_eq!(e.handle_build_request(Instant(4), n, again), Ok(()));
    let next = |e: &mut crate::executor::Executor, at| {
        let Some(issued) = e.poll_build(Instant(at), n) else {
            return std::string::String::new();
        };
        let (token, Command::Build { name, .. }) = (issued.token, issued.command) else {
            panic!("a build");
        };
        let name = std::string::String::from(name);
        e.handle_command_done(Instant(at), token, Outcome::FAILED);
        name
    };
    let drained: std::vec::Vec<_> = (5..5 + 2 * PEER_BUILDS_MAX as u64)
        .map(|at| next(e, at))
        .collect();
    assert!(drained.contains(&"web1".into()), "{drained:?}");
    assert!(
        !drained.contains(&"web0".into()),
        "the version just built is not built again: {drained:?}"
    );
    let late = 3 + crate::config::REQUEST_ANSWER_MS;
    assert_eq!(e.handle_build_request(Instant(late), n, again), Ok(()));
    assert_eq!(next(e, late), "web0", "built again once the bound ran out");
}

/// A builder seen building the version that then offers nothing within `REQUEST_ANSWER_MS` is
/// given up, and that is not a failed build: its offer may be what was lost (silence never
/// counts, or good versions were held under loss). A builder whose build failed says so.
#[test]
fn a_builder_seen_building_that_offers_nothing_is_given_up_not_failed() {
    use crate::config::REQUEST_ANSWER_MS;
    use crate::executor::remote::{Asked, Decision};
    use crate::executor::BuildMode;
    use crate::schema::message::system_bit;
    joined_pair!(a, b, _, _);
    let key = crate::executor::build_key("web-0123456789ab");
    let remote = BuildMode {
        local: false,
        builds: 0,
        system: Arch::Any,
    };
    let mut w = Wire::default();
    a.set_offer(Instant(3_000), 0, 7947, core::iter::empty(), &mut w);
    a.set_building(Instant(3_000), 0, system_bit(Arch::X86_64), 0, &mut w);
    run_pair(&mut a, &mut b, 3_000, 3_000);
    let mut asked = Asked::default();
    let ask_a = Decision::Wait(Some(a.id()));
    assert_eq!(decide_at(&b, remote, key, 6_000, &mut asked), ask_a);
    a.set_building(Instant(6_000), 0, system_bit(Arch::X86_64), key, &mut w);
    run_pair(&mut a, &mut b, 3_000, 6_000);
    assert_eq!(decide_at(&b, remote, key, 9_000, &mut asked), ask_a);
    assert_eq!(asked.seen_building_ms, 9_000);
    a.set_building(Instant(9_000), 0, system_bit(Arch::X86_64), 0, &mut w);
    run_pair(&mut a, &mut b, 3_000, 9_000);
    // Its cache lists a new root a moment after the build: the offer gets its time.
    let gone = 9_000 + REQUEST_ANSWER_MS;
    assert_eq!(decide_at(&b, remote, key, gone - 1, &mut asked), ask_a);
    assert_eq!(
        decide_at(&b, remote, key, gone, &mut asked),
        Decision::Wait(None),
        "given up, not failed; every builder tried, all are asked again"
    );
    assert!(asked.builder.is_none() && !asked.failed_on_builder);
    assert_eq!(decide_at(&b, remote, key, gone + 1, &mut asked), ask_a);
}

/// Issue 16, the builder's side: a version that never builds, asked of a builder. Its build
/// fails; it refuses that version during its backoff instead of building it for every request,
/// and answers each such refusal (`Message::BuildFailed`), once per requester between two takes;
/// after its backoff it builds once more, and after a second failure waits twice as long.
#[test]
fn a_version_that_fails_on_the_builder_is_not_built_for_every_request() {
    use crate::config::BUILD_RETRY_FIRST_MS;
    use crate::executor::remote::request;
    use crate::executor::{BuildMode, Command, Executor, Outcome, Refused};
    use crate::schema::message::system_bit;
    let a = node(WAL_CHECKPOINT_BYTES);
    let bytes = flake_service("web", 1, 0x10);
    let mut a = a;
    a.submit(Instant(0), &bytes, &mut Wire::default()).unwrap();
    let r = request(&a.store().get_by_name("web").unwrap(), Arch::X86_64).unwrap();
    let mut builder = Executor::new(false);
    builder.set_build_mode(BuildMode {
        local: true,
        builds: system_bit(Arch::X86_64),
        system: Arch::Any,
    });
    assert_eq!(
        builder.handle_build_request(Instant(6_100), &a, (9, &r)),
        Ok(())
    );
    let issued = builder
        .poll_build(Instant(6_100), &a)
        .expect("the request is due");
    assert!(matches!(issued.command, Command::Build { name: "web", .. }));
    let token = issued.token;
    let failed = Outcome {
        ok: false,
        stdout: b"",
    };
    assert!(builder.handle_command_done(Instant(6_200), token, failed));
    assert_eq!(builder.take_build_failed(), None, "nobody was refused yet");
    // Asked again (requesters send it every second): refused during the backoff, and answered.
    for at in [7_000, 6_200 + BUILD_RETRY_FIRST_MS - 1] {
        for _ in 0..2 {
            let again = builder.handle_build_request(Instant(at), &a, (9, &r));
            assert_eq!(again, Err(Refused::Failed));
        }
        assert_eq!(
            builder.take_build_failed(),
            Some((9, r)),
            "answered at {at}"
        );
        assert_eq!(builder.take_build_failed(), None, "once per requester");
        assert!(
            builder.poll_build(Instant(at), &a).is_none(),
            "no build at {at}"
        );
    }
    assert_eq!(builder.stats.builds_run, 1);
    // After its backoff the builder tries once more, and after a second failure waits twice
    // as long.
    let retry = 6_200 + BUILD_RETRY_FIRST_MS;
    assert_eq!(
        builder.handle_build_request(Instant(retry), &a, (9, &r)),
        Ok(())
    );
    let token = builder
        .poll_build(Instant(retry), &a)
        .expect("due again")
        .token;
    assert!(builder.handle_command_done(Instant(retry), token, failed));
    let doubled = retry + 2 * BUILD_RETRY_FIRST_MS;
    let refused = builder.handle_build_request(Instant(doubled - 1), &a, (9, &r));
    assert_eq!(refused, Err(Refused::Failed));
    assert_eq!(
        builder.handle_build_request(Instant(doubled), &a, (9, &r)),
        Ok(())
    );
    assert_eq!(builder.stats.build_failed_answers, 3);
}

/// `b`, a box that does not build, placed a flake version, asks `a`, its builder, whose build of
/// it fails; `b`'s next request is refused and answered.
struct FailingBuilder {
    a: Box<Node>,
    b: Box<Node>,
    /// `b`'s executor, its request, the service's name, and the frame `a` sent `b`.
    req: crate::executor::Executor,
    r: BuildRequest,
    name: std::string::String,
    frame: [u8; FRAME_BYTES],
}

/// A flake service submitted to `a` and `b` at 3 s and placed on `b` (one replica: on one of
/// the two); its name.
fn flake_placed_on_b(a: &mut Node, b: &mut Node) -> std::string::String {
    let mut w = Wire::default();
    (0..)
        .map(|i| std::format!("web{i}"))
        .find(|name| {
            let bytes = flake_service(name, 1, 0x10);
            a.submit(Instant(3_000), &bytes, &mut w).unwrap();
            b.submit(Instant(3_000), &bytes, &mut w).unwrap();
            b.placement(crate::state::store::key_hash(name)).first() == Some(&b.id())
        })
        .unwrap()
}

/// `a` builds for x86_64 and offers `offers` from its cache; once `b` has heard so, `b`'s
/// executor, returned, is remote-only (it never builds, it asks builders or fetches).
fn builder_a_for_remote_only_b(
    a: &mut Node,
    b: &mut Node,
    offers: impl Iterator<Item = u64>,
) -> crate::executor::Executor {
    use crate::executor::{BuildMode, Executor};
    use crate::schema::message::system_bit;
    let mut w = Wire::default();
    a.set_offer(Instant(3_000), 0, 7947, offers, &mut w);
    a.set_building(Instant(3_000), 0, system_bit(Arch::X86_64), 0, &mut w);
    run_pair(a, b, 3_000, 3_000);
    let mut req = Executor::new(true);
    req.set_build_mode(BuildMode {
        local: false,
        builds: 0,
        system: Arch::Any,
    });
    req
}

fn a_remote_box_asks_a_failing_builder() -> FailingBuilder {
    use crate::executor::{BuildMode, Executor, Outcome};
    use crate::schema::message::system_bit;
    joined_pair!(a, b, _, addr_b);
    let name = flake_placed_on_b(&mut a, &mut b);
    let mut req = builder_a_for_remote_only_b(&mut a, &mut b, core::iter::empty());
    let mut builder = Executor::new(true);
    builder.set_build_mode(BuildMode {
        local: true,
        builds: system_bit(Arch::X86_64),
        system: Arch::Any,
    });
    req.handle_placement_changed();
    let _ = req.poll_command(Instant(6_000), &b);
    assert!(req.poll_build(Instant(6_000), &b).is_none(), "it waits");
    let (to, r) = req.take_build_request().expect("asks the builder");
    assert_eq!(to, a.id());
    let from_b = (b.id(), &r);
    assert_eq!(
        builder.handle_build_request(Instant(6_010), &a, from_b),
        Ok(())
    );
    let token = builder.poll_build(Instant(6_010), &a).unwrap().token;
    assert!(builder.handle_command_done(Instant(6_100), token, Outcome::FAILED));
    assert!(builder
        .handle_build_request(Instant(7_000), &a, from_b)
        .is_err());
    let (to, answer) = builder.take_build_failed().expect("answered");
    let mut w = Wire::default();
    a.send_build_failed(to, answer, &mut w);
    let (at, frame) = w.frames.pop().expect("sent to b");
    assert_eq!(at, addr_b);
    FailingBuilder {
        a,
        b,
        req,
        r,
        name,
        frame,
    }
}

/// Issue 16, end to end between two nodes: `b` does not build and is placed a flake version that
/// fails on `a`, its builder. `a`'s answer (`BuildFailed`, over the sealed session) makes `b`
/// count a failed build (with its backoff, the state a rollout judges), not silence. A stale or
/// foreign answer counts nothing, and once a peer offers the version the failure the builder
/// reported is forgotten.
#[test]
fn a_remote_box_counts_the_failure_its_builder_answers() {
    use crate::executor::{BuildState, Command, UnitHealth};
    let FailingBuilder {
        mut a,
        mut b,
        mut req,
        r,
        name,
        frame,
    } = a_remote_box_asks_a_failing_builder();
    let mut heard = Recorder::default();
    let from_a = PeerAddr::v4([127, 0, 0, 1], 1);
    b.handle_datagram(Instant(7_000), from_a, &frame, &mut heard);
    let got = heard.events.iter().find_map(|e| match e {
        Event::BuildFailed { from, request } => Some((*from, *request)),
        _ => None,
    });
    assert_eq!(got, Some((a.id(), r)));
    // From anyone but the builder asked, it counts nothing.
    assert!(!req.handle_build_failed(Instant(7_000), b.id(), &r));
    assert!(req.handle_build_failed(Instant(7_000), a.id(), &r));
    assert!(req.poll_build(Instant(7_000), &b).is_none());
    let record = |req: &crate::executor::Executor| {
        let found = req.builds().iter().find(|x| x.name == name.as_str());
        found.map(|x| (x.failures, x.state)).unwrap()
    };
    assert!(matches!(record(&req), (1, BuildState::Failed { .. })));
    assert_eq!(req.build_health(&name), Some(UnitHealth::BuildFailed));
    assert_eq!(req.stats.builds_failed_on_builders, 1);
    // The same answer again (a repeat, or to an older request): the builder is given up.
    assert!(!req.handle_build_failed(Instant(7_100), a.id(), &r));
    // `a` builds it after all and offers it: `b` fetches, the builder's failure forgotten.
    a.set_offer(
        Instant(8_000),
        0,
        7947,
        [r.build.0].into_iter(),
        &mut Wire::default(),
    );
    run_pair(&mut a, &mut b, 3_000, 8_000);
    let retry = 7_000 + crate::config::BUILD_RETRY_FIRST_MS;
    let issued = req.poll_build(Instant(retry), &b).expect("a fetch");
    let Command::Build {
        substitutes, local, ..
    } = issued.command
    else {
        panic!("a build");
    };
    assert_eq!((substitutes.len(), local), (1, false));
    assert_eq!(record(&req).0, 0, "forgotten once a peer offers it");
}

/// MycoSim seed 2763783642, the other order of the test above: `b`, a box that does not build,
/// fetches a version `a` offers, and the fetch fails (the network's, or the cache's); `a` no
/// longer offers it, so `b` asks `a` to build it, and `a`'s build fails (its own transient
/// trouble: the version built where it was offered). One failed fetch and one builder's failure
/// are two different troubles, not a version that does not build: `b` counts the builder's
/// failure alone and the first wave (`b`) does not hold the good version. A second builder's
/// failure in a row still holds it.
#[test]
fn a_failed_fetch_and_a_builder_s_failure_do_not_hold_a_version() {
    use crate::config::BUILD_RETRY_FIRST_MS;
    use crate::executor::remote::request;
    use crate::executor::{Executor, Outcome};
    use crate::schema::message::HoldReason;
    joined_pair!(a, b, _, _);
    let name = flake_placed_on_b(&mut a, &mut b);
    let r = request(&b.store().get_by_name(&name).unwrap(), Arch::X86_64).unwrap();
    let mut req = builder_a_for_remote_only_b(&mut a, &mut b, [r.build.0].into_iter());
    let mut w = Wire::default();
    req.handle_placement_changed();
    let _ = req.poll_command(Instant(6_000), &b);
    let fetch = req.poll_build(Instant(6_000), &b).expect("a fetch").token;
    assert!(req.handle_command_done(Instant(6_100), fetch, Outcome::FAILED));
    a.set_offer(Instant(6_100), 0, 7947, core::iter::empty(), &mut w);
    run_pair(&mut a, &mut b, 3_000, 6_100);
    let (key, digest) = (r.service.0, r.digest.0);
    // Asks the builder `a` whenever `b` decides again, as its builder answers (the answer's
    // matching is `a_remote_box_counts_the_failure_its_builder_answers`'s).
    let builder_fails = |req: &mut Executor, at: u64| {
        assert!(
            req.poll_build(Instant(at), &b).is_none(),
            "no fetch at {at}"
        );
        assert_eq!(
            req.take_build_request(),
            Some((a.id(), r)),
            "asks a at {at}"
        );
        assert!(req.handle_build_failed(Instant(at), a.id(), &r));
        assert!(req.poll_build(Instant(at), &b).is_none());
        let record = req.builds().iter().find(|x| x.name == name.as_str());
        (record.unwrap().failures, req.held(key, digest))
    };
    let retry = 6_100 + BUILD_RETRY_FIRST_MS;
    let once = builder_fails(&mut req, retry);
    assert_eq!(once, (1, None), "the builder's failure alone");
    // `a` was given up and is the only builder: every builder tried, all are asked again.
    let again = retry + BUILD_RETRY_FIRST_MS;
    assert!(req.poll_build(Instant(again), &b).is_none());
    let held = builder_fails(&mut req, again + crate::config::REMOTE_CHECK_MS);
    assert_eq!(held, (2, Some(HoldReason::BuildFailed)));
}

mod bridges;
mod placed;
mod relay;
mod restart;

/// `a` (x86_64) and `b`, an aarch64 board, joined on a perfect wire for three seconds.
fn x86_and_board() -> (Box<Node>, Box<Node>) {
    let (addr_a, addr_b) = (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    );
    let mut a = node_with(1, &[addr_b], WAL_CHECKPOINT_BYTES);
    let pk = SigningKey::from_seed([2; 32]).unwrap().public_key();
    let cert = certify(&operator(), &pk, 0, Arch::Aarch64, false, 0);
    let config = (WAL_CHECKPOINT_BYTES, Profile::LAN);
    let mut b = node_certified(2, &cert, (&[addr_a], &[]), config);
    run_pair(&mut a, &mut b, 3_000, 0);
    (a, b)
}

/// Issue 16, builds for another system: `b`, an aarch64 board that does not build, is placed a
/// version whose x86_64 output `a` offers. That offer is not its output: it does not fetch it,
/// it asks `a`, a builder whose Nix builds both systems (`extra-platforms`), for the aarch64
/// one. `a` builds it for aarch64 under the aarch64 key (a root that names the system, offered
/// as that key), a builder without aarch64 refuses, and once `a` offers the aarch64 key `b`
/// fetches it from `a` though `a` is x86_64.
#[test]
fn a_builder_builds_an_aarch64_board_s_output_under_its_key() {
    use crate::executor::remote::request;
    use crate::executor::Command;
    use crate::schema::message::system_bit;
    let (mut a, mut b) = x86_and_board();
    let name = flake_placed_on_b(&mut a, &mut b);
    let entry = b.store().get_by_name(&name).unwrap();
    let x86 = request(&entry, Arch::X86_64).unwrap();
    let mut req = builder_a_for_remote_only_b(&mut a, &mut b, [x86.build.0].into_iter());
    let both = system_bit(Arch::X86_64) | system_bit(Arch::Aarch64);
    a.set_building(Instant(6_000), 0, both, 0, &mut Wire::default());
    run_pair(&mut a, &mut b, 3_000, 6_000);
    req.handle_placement_changed();
    let _ = req.poll_command(Instant(9_000), &b);
    assert!(
        req.poll_build(Instant(9_000), &b).is_none(),
        "x86_64's output is not fetched"
    );
    let (to, r) = req.take_build_request().expect("asks the builder");
    assert_eq!((to, r.system), (a.id(), Arch::Aarch64));
    assert_ne!(r.build, x86.build);
    builder_of_both_takes(&a, b.id(), &r, x86.build);
    // `a` offers the aarch64 output: `b` fetches it from `a`, never building.
    let mut w = Wire::default();
    a.set_offer(
        Instant(12_000),
        0,
        7947,
        [r.build.0, x86.build.0].into_iter(),
        &mut w,
    );
    run_pair(&mut a, &mut b, 3_000, 12_000);
    let issued = req.poll_build(Instant(15_000), &b).expect("fetched now");
    let Command::Build {
        system,
        substitutes,
        local,
        root,
        ..
    } = issued.command
    else {
        panic!("a build");
    };
    assert_eq!((system, local), (Arch::Aarch64, false));
    assert_eq!(crate::executor::build_key(&root), r.build.0);
    assert_eq!(
        substitutes
            .iter()
            .map(|s| s.id)
            .collect::<std::vec::Vec<_>>(),
        [a.id()]
    );
}

/// `a`'s executor, a builder whose Nix builds only x86_64, refuses board `board`'s request `r`
/// for aarch64; building both systems, it refuses the request labelled with the x86_64 key
/// `x86` or for no system, and takes `r`, built for aarch64 under the aarch64 key.
fn builder_of_both_takes(
    a: &Node,
    board: u64,
    r: &BuildRequest,
    x86: crate::schema::message::Digest,
) {
    use crate::executor::{offer_key, BuildMode, Command, Executor, Refused};
    use crate::schema::message::system_bit;
    let both = system_bit(Arch::X86_64) | system_bit(Arch::Aarch64);
    let mut builder = Executor::new(true);
    let mode = |builds| BuildMode {
        local: true,
        builds,
        system: Arch::X86_64,
    };
    builder.set_build_mode(mode(system_bit(Arch::X86_64)));
    let from_b = (board, r);
    let refused = builder.handle_build_request(Instant(9_010), a, from_b);
    assert_eq!(refused, Err(Refused::NotBuilder));
    builder.set_build_mode(mode(both));
    let mislabelled = BuildRequest { build: x86, ..*r };
    let wrong = builder.handle_build_request(Instant(9_010), a, (board, &mislabelled));
    assert_eq!(wrong, Err(Refused::Unknown));
    let any = BuildRequest {
        system: Arch::Any,
        ..*r
    };
    let none = builder.handle_build_request(Instant(9_010), a, (board, &any));
    assert_eq!(none, Err(Refused::NotBuilder));
    assert_eq!(
        builder.handle_build_request(Instant(9_010), a, from_b),
        Ok(())
    );
    let issued = builder.poll_build(Instant(9_010), a).expect("built for b");
    let Command::Build {
        system,
        root,
        local,
        ..
    } = issued.command
    else {
        panic!("a build");
    };
    assert_eq!((system, local), (Arch::Aarch64, true));
    assert!(root.ends_with("-aarch64-linux"), "{root}");
    assert_eq!(offer_key(&root), Some(r.build.0));
    assert_eq!(builder.building_key(), r.build.0);
}
