//! Relays for boxes behind NAT: who relays for whom, keeping a mapping open, and what a relay
//! forwards (docs/protocol.md section 12).

use super::*;
use crate::config::{RELAYS_PER_BOX, RELAY_KEEPALIVE_MS, RELAY_LIVE_MS, RELAY_SENDER_BURST};
use crate::node::relay::{choose_relays, relay_score};
use crate::schema::frame::mark_relayed;
use std::vec::Vec as StdVec;

fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4([127, 0, 0, i as u8 + 1], 1)
}

/// Node `i` of a test cluster (key seed `i + 1`), joining node 0 (node 0 joins node 1).
fn box_node(i: usize, relay: bool, behind_nat: bool) -> Box<Node> {
    let seed = i as u8 + 1;
    let node_pk = SigningKey::from_seed([seed; 32]).unwrap().public_key();
    let cert = certify(&operator(), &node_pk, 0, Arch::X86_64, false, 0);
    let join = [addr(usize::from(i == 0))];
    let config = NodeConfig {
        node_seed: [seed; 32],
        cert: &cert,
        operator: operator().public_key(),
        revocation_block: 0,
        seed: u64::from(seed),
        join: &join,
        wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
        profile: Profile::LAN,
        bridge_seeds: &[],
        relay,
        behind_nat,
    };
    Box::new(Node::new(&config, Instant(0)).unwrap())
}

/// Runs `nodes` over `[from, to)` ms in 10 ms ticks on a perfect wire, except that a node whose
/// `up` is false neither sends nor receives (cut off, as if dead).
fn run_many(nodes: &mut [Box<Node>], (from, to): (u64, u64), up: &[bool]) {
    for t in (from..to).step_by(10) {
        let now = Instant(t);
        let mut queue: StdVec<(usize, PeerAddr, [u8; FRAME_BYTES])> = StdVec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            let mut wire = Wire::default();
            n.handle_tick(now, &mut wire);
            queue.extend(wire.frames.iter().map(|&(to, f)| (i, to, f)));
        }
        while let Some((src, to, frame)) = queue.pop() {
            let Some(dst) = (0..nodes.len()).find(|&j| addr(j) == to) else {
                continue;
            };
            if !(up[src] && up[dst]) {
                continue;
            }
            let mut next = Wire::default();
            nodes[dst].handle_datagram(now, addr(src), &frame, &mut next);
            queue.extend(next.frames.iter().map(|&(to, f)| (dst, to, f)));
        }
    }
}

/// A frame from `sender` marked relayed to `dest`, as a relay sees it: the relay never opens it,
/// so the body need not be sealed for these checks.
fn relayed(sender: u64, dest: u64) -> [u8; FRAME_BYTES] {
    let mut f = [0u8; FRAME_BYTES];
    let header = Header {
        kind: Kind::Data,
        zone: 0,
        revocation_block: 0,
        sender,
        counter: 1,
    };
    write_frame(&mut f, &header, 8);
    mark_relayed(&mut f, dest);
    f
}

/// A recording sink that keeps the frames sent.
#[derive(Default)]
struct Sent(StdVec<(PeerAddr, [u8; FRAME_BYTES])>);

impl Sink for Sent {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        self.0.push((to, *frame));
    }
    fn event(&mut self, _: Event) {}
    fn append(&mut self, _: &[u8], _: u64) {}
    fn checkpoint(&mut self) {}
    fn fill_random(&mut self, buf: &mut [u8]) {
        buf.fill(0x5a);
    }
}

/// A box's relays are the highest rendezvous scores among the candidates, whatever order they
/// come in; without the first, the second moves up and the third joins; the box never picks
/// itself.
#[test]
fn relays_are_chosen_by_rendezvous_hashing() {
    let candidates: StdVec<u64> = (100..120).collect();
    let chosen = choose_relays(3, 7, candidates.iter().copied());
    let mut ranked = candidates.clone();
    ranked.sort_by_key(|&id| core::cmp::Reverse((relay_score(3, 7, id), id)));
    assert_eq!(chosen.as_slice(), &ranked[..RELAYS_PER_BOX]);
    let reversed = choose_relays(3, 7, candidates.iter().rev().copied());
    assert_eq!(reversed, chosen, "the order of candidates does not matter");
    let without_first = choose_relays(3, 7, candidates.iter().copied().filter(|&c| c != chosen[0]));
    assert_eq!(without_first.as_slice(), &ranked[1..=RELAYS_PER_BOX]);
    let other_box = choose_relays(3, 8, candidates.iter().copied());
    assert_ne!(other_box, chosen, "boxes spread over the relays");
    assert_eq!(choose_relays(3, 7, [7, 101].into_iter()).as_slice(), &[101]);
    assert!(choose_relays(3, 7, core::iter::empty()).is_empty());
}

/// Three boxes: 0 a relay, 1 plain, 2 behind NAT. Each learns the others' relay and NAT flags
/// from their own pings, and the box behind NAT keeps a session with its relay.
#[test]
fn members_learn_who_relays_and_who_is_behind_nat() {
    let mut nodes = [
        box_node(0, true, false),
        box_node(1, false, false),
        box_node(2, false, true),
    ];
    run_many(&mut nodes, (0, 5_000), &[true; 3]);
    let relay = nodes[0].id();
    for n in &nodes[1..] {
        let r = n.members().iter().find(|m| m.id == relay).unwrap();
        assert!(r.meta.relay && !r.meta.nat);
    }
    let natted = nodes[2].id();
    let b = nodes[1].members().iter().find(|m| m.id == natted).unwrap();
    assert!(b.meta.nat && !b.meta.relay);
    assert_eq!(nodes[2].relays_of(natted).as_slice(), &[relay]);
    assert_eq!(
        nodes[1].relays_of(natted).as_slice(),
        &[relay],
        "peers agree"
    );
    assert!(nodes[2].out.has_link(addr(0)));
}

/// The relay forwards a frame marked relayed, byte for byte, to the live session of the box it
/// names, and refuses, counting each reason: a spoofed source, an unknown sender, an unknown
/// destination, a loop, a destination silent for `RELAY_LIVE_MS`, a sender over its burst. A
/// box that is not a relay forwards nothing.
#[test]
fn a_relay_forwards_only_between_live_sessions_and_within_rates() {
    let mut nodes = [
        box_node(0, true, false),
        box_node(1, false, false),
        box_node(2, false, true),
    ];
    run_many(&mut nodes, (0, 5_000), &[true; 3]);
    let (r, a, b) = (nodes[0].id(), nodes[1].id(), nodes[2].id());
    let now = Instant(5_000);
    let mut sink = Sent::default();
    let good = relayed(a, b);
    nodes[0].handle_datagram(now, addr(1), &good, &mut sink);
    assert_eq!(
        sink.0.as_slice(),
        &[(addr(2), good)],
        "forwarded as it came"
    );
    let refusals = [
        (addr(3), relayed(a, b), 2), // the sender's session is at another address
        (addr(1), relayed(999, b), 2), // no session with the sender
        (addr(1), relayed(a, 999), 3), // no session with the destination
        (addr(1), relayed(a, a), 1), // back to the sender
        (addr(1), relayed(a, r), 0), // to the relay itself: it takes nothing through itself
    ];
    for (from, frame, _) in &refusals {
        nodes[0].handle_datagram(now, *from, frame, &mut sink);
    }
    let c = nodes[0].counters();
    assert_eq!(c.relayed_frames, 1);
    assert_eq!(c.relay_refused, [1, 1, 2, 1, 0]);
    assert_eq!(c.refused_by_reason()[6], ("relay", 5));
    assert_eq!(sink.0.len(), 1, "nothing else was sent");
    // A sender gets its burst, then nothing until its bucket refills.
    for _ in 0..RELAY_SENDER_BURST + 5 {
        nodes[0].handle_datagram(now, addr(1), &good, &mut sink);
    }
    let c = nodes[0].counters();
    assert_eq!(c.relayed_frames, RELAY_SENDER_BURST);
    assert_eq!(c.relay_refused[4], 6);
    // The box behind NAT fell silent: its mapping may be gone, so nothing goes there.
    let late = Instant(5_000 + RELAY_LIVE_MS + 1_000);
    nodes[0].handle_datagram(late, addr(1), &good, &mut sink);
    assert_eq!(nodes[0].counters().relay_refused[3], 2);
    // A plain box is no relay.
    let mut plain = Sent::default();
    nodes[1].handle_datagram(now, addr(0), &relayed(r, b), &mut plain);
    assert_eq!(nodes[1].counters().relay_refused[0], 1);
    assert!(plain.0.is_empty());
}

/// A box behind NAT whose gossip has sent nothing to its relay for `RELAY_KEEPALIVE_MS` sends one
/// keepalive frame, and not another while its last frame is younger than that.
#[test]
fn a_box_behind_nat_keeps_its_mapping_open_with_one_frame() {
    let mut nodes = [
        box_node(0, true, false),
        box_node(1, false, false),
        box_node(2, false, true),
    ];
    run_many(&mut nodes, (0, 5_000), &[true; 3]);
    let b = &mut nodes[2];
    assert_eq!(
        b.counters().relay_keepalives,
        0,
        "gossip kept it open so far"
    );
    let idle = 5_000 + RELAY_KEEPALIVE_MS;
    let mut sink = Sent::default();
    b.handle_tick(Instant(idle), &mut sink);
    assert_eq!(b.counters().relay_keepalives, 1);
    assert!(sink.0.iter().any(|(to, _)| *to == addr(0)));
    b.handle_tick(Instant(idle + 10), &mut sink);
    assert_eq!(b.counters().relay_keepalives, 1);
}

/// Three relays and a box behind NAT: when one of the box's two relays dies, SWIM declares it
/// dead, the third relay takes its place, and the box opens a session with it.
#[test]
fn a_box_behind_nat_moves_to_the_next_relay_when_one_dies() {
    let mut nodes = [
        box_node(0, true, false),
        box_node(1, true, false),
        box_node(2, true, false),
        box_node(3, false, true),
    ];
    let mut up = [true; 4];
    run_many(&mut nodes, (0, 5_000), &up);
    let natted = nodes[3].id();
    let before = nodes[3].relays_of(natted);
    assert_eq!(before.len(), RELAYS_PER_BOX);
    let ids: StdVec<u64> = nodes.iter().map(|n| n.id()).collect();
    let index = |id: u64| ids.iter().position(|&i| i == id).unwrap();
    let dying = index(before[0]);
    let spare = (0..3).find(|&i| !before.contains(&nodes[i].id())).unwrap();
    up[dying] = false;
    run_many(&mut nodes, (5_000, 25_000), &up);
    let after = nodes[3].relays_of(natted);
    assert_eq!(after.as_slice(), &[before[1], nodes[spare].id()]);
    assert!(nodes[3].out.has_link(addr(spare)));
    assert_eq!(
        after,
        nodes[index(before[1])].relays_of(natted),
        "peers agree"
    );
}
