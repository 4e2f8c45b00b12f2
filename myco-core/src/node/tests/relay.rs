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
    box_node_profiled(i, (relay, behind_nat), Profile::LAN)
}

fn box_node_profiled(i: usize, (relay, behind_nat): (bool, bool), profile: Profile) -> Box<Node> {
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
        profile,
        bridge_seeds: &[],
        relay,
        behind_nat,
        own_addrs: &[addr(i)],
    };
    Box::new(Node::new(&config, Instant(0)).unwrap())
}

/// How long the test NAT keeps a mapping: a box behind it receives from an address only within
/// this long after it sent there (endpoint-independent mapping, address-dependent filtering).
const NAT_MAPPING_MS: u64 = 30_000;

/// A perfect wire between test nodes, except that a node whose `up` is false neither sends nor
/// receives (cut off, as if dead), and a node behind NAT receives only from addresses it sent to
/// within `NAT_MAPPING_MS`. The NAT translates: a node behind it is seen at the NAT's public
/// address (`10.0.0.1`), with a port of its own. With `port_per_peer`, a node behind NAT has another public address
/// for each peer, as a NAT gives when the box's own port is taken towards some peers (the
/// testbed's nftables masquerade did) or a symmetric NAT: a peer reaches it only at the address
/// its frames to that peer come from.
struct Net {
    up: StdVec<bool>,
    nat: StdVec<bool>,
    port_per_peer: bool,
    /// When node `i` last sent to node `j`.
    sent: std::collections::HashMap<(usize, usize), u64>,
    nat_dropped: u64,
}

impl Net {
    fn new(nat: &[bool]) -> Net {
        Net {
            up: std::vec![true; nat.len()],
            nat: nat.to_vec(),
            port_per_peer: false,
            sent: std::collections::HashMap::new(),
            nat_dropped: 0,
        }
    }

    fn passes(&mut self, t: u64, src: usize, dst: usize) -> bool {
        if !(self.up[src] && self.up[dst]) {
            return false;
        }
        self.sent.insert((src, dst), t);
        let mapped = self
            .sent
            .get(&(dst, src))
            .is_some_and(|&at| t - at < NAT_MAPPING_MS);
        if self.nat[dst] && !mapped {
            self.nat_dropped += 1;
            return false;
        }
        true
    }

    /// Where `src`'s frames to `dst` come from, as `dst` sees them.
    fn seen_from(&self, src: usize, dst: usize) -> PeerAddr {
        match (self.nat[src], self.port_per_peer) {
            (false, _) => addr(src),
            (true, true) => PeerAddr::v4([10, 0, 0, 1], 1000 + dst as u16),
            (true, false) => PeerAddr::v4([10, 0, 0, 1], 2000 + src as u16),
        }
    }

    /// The node a frame from `src` to `to` reaches, if any. A public address the NAT mapped for
    /// another peer leads nowhere: the NAT drops the frame.
    fn reached(&mut self, src: usize, to: PeerAddr, nodes: usize) -> Option<usize> {
        let reached = (0..nodes).find(|&j| self.seen_from(j, src) == to);
        let mapped = |j: usize| (0..nodes).any(|k| self.seen_from(j, k) == to);
        if reached.is_none() && (0..nodes).any(mapped) {
            self.nat_dropped += 1;
        }
        reached
    }

    /// Runs `nodes` over `[from, to)` ms in 10 ms ticks.
    fn run(&mut self, nodes: &mut [Box<Node>], (from, to): (u64, u64)) {
        for t in (from..to).step_by(10) {
            let now = Instant(t);
            let mut queue: StdVec<(usize, PeerAddr, [u8; FRAME_BYTES])> = StdVec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                let mut wire = Wire::default();
                n.handle_tick(now, &mut wire);
                queue.extend(wire.frames.iter().map(|&(to, f)| (i, to, f)));
            }
            while let Some((src, to, frame)) = queue.pop() {
                let Some(dst) = self.reached(src, to, nodes.len()) else {
                    continue;
                };
                if !self.passes(t, src, dst) {
                    continue;
                }
                let mut next = Wire::default();
                nodes[dst].handle_datagram(now, self.seen_from(src, dst), &frame, &mut next);
                queue.extend(next.frames.iter().map(|&(to, f)| (dst, to, f)));
            }
        }
    }
}

/// Runs `nodes` with no NAT on the wire (a box behind NAT is one only by its own word).
fn run_many(nodes: &mut [Box<Node>], range: (u64, u64), up: &[bool]) {
    let mut net = Net::new(&std::vec![false; nodes.len()]);
    net.up = up.to_vec();
    net.run(nodes, range);
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
        let r = n.members.get(relay).unwrap();
        assert!(r.meta.relay && !r.meta.nat);
    }
    let natted = nodes[2].id();
    let b = nodes[1].members.get(natted).unwrap();
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
    // Box 1 already reaches box 2 through the relay; count from here.
    let base = nodes[0].counters();
    let refused = |n: &Node| -> [u64; 5] {
        core::array::from_fn(|i| n.counters().relay_refused[i] - base.relay_refused[i])
    };
    let relayed_since = |n: &Node| n.counters().relayed_frames - base.relayed_frames;
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
        (addr(5), relayed(999, r), 2), // for the relay itself, from a stranger (no pull: no member sent it)
    ];
    for (from, frame, _) in &refusals {
        nodes[0].handle_datagram(now, *from, frame, &mut sink);
    }
    assert_eq!(relayed_since(&nodes[0]), 1);
    assert_eq!(refused(&nodes[0]), [0, 1, 3, 1, 0]);
    let c = nodes[0].counters();
    assert_eq!(
        c.refused_by_reason()[6].1,
        base.relay_refused.iter().sum::<u64>() + 5
    );
    assert_eq!(sink.0.len(), 1, "nothing else was sent");
    // A sender gets its burst, then nothing until its bucket refills.
    for _ in 0..RELAY_SENDER_BURST + 5 {
        nodes[0].handle_datagram(now, addr(1), &good, &mut sink);
    }
    assert_eq!(relayed_since(&nodes[0]), RELAY_SENDER_BURST);
    assert_eq!(refused(&nodes[0])[4], 6);
    // The box behind NAT fell silent: its mapping may be gone, so nothing goes there.
    let late = Instant(5_000 + RELAY_LIVE_MS + 1_000);
    nodes[0].handle_datagram(late, addr(1), &good, &mut sink);
    assert_eq!(refused(&nodes[0])[3], 2);
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

/// Eight boxes on the metered profile (probes every 6 s, so a box talks to each of 7 peers
/// only about every 40 s): the last behind a NAT that drops what comes from an address it has not
/// sent to for 30 s; box 0 is a relay when `relay`.
fn metered_with_nat(relay: bool) -> (StdVec<Box<Node>>, Net) {
    metered_behind_nat(relay, (false, true))
}

/// The same, box 7 started with these `(relay, behind_nat)` flags whatever the NAT.
fn metered_behind_nat(relay: bool, flags: (bool, bool)) -> (StdVec<Box<Node>>, Net) {
    let roles = |i: usize| {
        if i == 7 {
            flags
        } else {
            (relay && i == 0, false)
        }
    };
    let nodes = (0..8)
        .map(|i| box_node_profiled(i, roles(i), Profile::METERED))
        .collect();
    let mut nat = [false; 8];
    nat[7] = true;
    (nodes, Net::new(&nat))
}

/// Peers reach the box behind NAT through the relay: once they know it is behind NAT, the NAT
/// drops nothing for two minutes (every frame comes through the relay, which the box keeps its
/// mapping to open, or from an address the box talks to), it stays alive in every table, and an
/// entry submitted on a plain box reaches it. Cut off, it is declared dead like any box, within
/// the profile's bound.
#[test]
fn a_box_behind_nat_is_reached_through_its_relay() {
    let (mut nodes, mut net) = metered_with_nat(true);
    net.run(&mut nodes, (0, 20_000));
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    nodes[1]
        .submit(Instant(20_000), &e[..len], &mut Wire::default())
        .unwrap();
    net.nat_dropped = 0;
    net.run(&mut nodes, (20_000, 140_000));
    assert_eq!(net.nat_dropped, 0);
    let natted = nodes[7].id();
    for n in &nodes[..7] {
        let b = n.members.get(natted).unwrap();
        assert_eq!(b.state, MemberState::Alive, "alive at {}", n.id());
    }
    assert_eq!(nodes[7].state_hash(), nodes[1].state_hash());
    assert!(nodes[0].counters().relayed_frames > 0);
    assert!(nodes[1].counters().frames_via_relay > 0);
    assert_eq!(
        nodes[0].counters().frames_via_relay,
        0,
        "its relay sends directly"
    );
    net.up[7] = false;
    let bound = Profile::METERED.detection_ms_goal;
    net.run(&mut nodes, (140_000, 140_000 + bound));
    for n in &nodes[..7] {
        let b = n.members.get(natted).unwrap();
        assert_eq!(b.state, MemberState::Dead, "dead at {}", n.id());
    }
}

/// The same with a NAT that gives the box another public port for each peer: members gossip
/// the box's record with the address they each see, and the relay must keep sending to the one
/// the box's own frames come from. Before second-hand records stopped moving a box behind NAT,
/// the relay took another peer's view of it, its frames to the box were dropped, and the box was
/// suspected (first seen on the testbed: `NAT_BOXES=8 ... tests/testbed/nat-test.sh`).
#[test]
fn a_box_behind_a_nat_with_a_port_per_peer_is_reached_through_its_relay() {
    let (mut nodes, mut net) = metered_with_nat(true);
    net.port_per_peer = true;
    net.run(&mut nodes, (0, 20_000));
    let natted = nodes[7].id();
    let joined = nodes[0].members.get(natted).unwrap().incarnation;
    net.run(&mut nodes, (20_000, 140_000));
    for n in &nodes[..7] {
        let b = n.members.get(natted).unwrap();
        assert_eq!(b.state, MemberState::Alive, "alive at {}", n.id());
        assert_eq!(b.incarnation, joined, "not suspected since, at {}", n.id());
        let link = n.out.links.iter().find(|l| l.peer == natted);
        assert_eq!(
            link.map(|l| l.addr),
            Some(b.addr),
            "one address for it at {}",
            n.id()
        );
    }
    let seen = nodes[0].members.get(natted).unwrap().addr;
    assert_eq!(
        seen,
        net.seen_from(7, 0),
        "the relay sends where the box's frames come from"
    );
    assert!(nodes[0].counters().relayed_frames > 0);
}

/// Without a relay, the same NAT drops what peers send the box directly (the control for the
/// test above: the relay is what makes the difference).
#[test]
fn without_a_relay_the_nat_drops_what_peers_send() {
    let (mut nodes, mut net) = metered_with_nat(false);
    net.run(&mut nodes, (0, 20_000));
    net.nat_dropped = 0;
    net.run(&mut nodes, (20_000, 140_000));
    assert!(net.nat_dropped > 0);
    assert_eq!(nodes[1].counters().frames_via_relay, 0);
}

/// Eight boxes on the metered profile, boxes 0 and 1 relays, box 7 behind NAT (with a port per
/// peer when `port_per_peer`): its first relay is cut off. Every member's probe of box 7 goes
/// through that relay and fails with its probe of the relay; the indirect probe must still reach
/// box 7 through its other relay, so no member ever declares box 7 dead (first seen on the
/// testbed, issue 18), while the relay is declared dead everywhere.
fn a_relays_death_leaves_the_box_behind_it_alive(port_per_peer: bool) {
    let mut nodes: StdVec<Box<Node>> = (0..8)
        .map(|i| box_node_profiled(i, (i < 2, i == 7), Profile::METERED))
        .collect();
    let mut nat = [false; 8];
    nat[7] = true;
    let mut net = Net::new(&nat);
    net.port_per_peer = port_per_peer;
    net.run(&mut nodes, (0, 60_000));
    let natted = nodes[7].id();
    let relays = nodes[7].relays_of(natted);
    assert_eq!(relays.len(), 2, "both relays serve box 7");
    let first = (0..2).find(|&i| nodes[i].id() == relays[0]).unwrap();
    net.up[first] = false;
    let state = |n: &Node, id: u64| n.members.get(id).unwrap().state;
    let end = 60_000 + 2 * Profile::METERED.detection_ms_goal;
    for t in (60_000..end).step_by(10) {
        net.run(&mut nodes, (t, t + 10));
        for n in nodes.iter().take(7).filter(|n| n.id() != relays[0]) {
            let s = state(n, natted);
            assert_ne!(s, MemberState::Dead, "box 7 dead at {} at {t} ms", n.id());
        }
    }
    for n in nodes.iter().filter(|n| n.id() != relays[0]) {
        assert_eq!(state(n, relays[0]), MemberState::Dead, "at {}", n.id());
        if n.id() != natted {
            assert_eq!(state(n, natted), MemberState::Alive, "at {}", n.id());
        }
    }
}

#[test]
fn a_relays_death_leaves_the_box_behind_nat_alive() {
    a_relays_death_leaves_the_box_behind_it_alive(false);
}

#[test]
fn a_relays_death_leaves_the_box_behind_a_port_per_peer_nat_alive() {
    a_relays_death_leaves_the_box_behind_it_alive(true);
}

/// A box that really died does not count against its probers' own health: each failed probe's
/// helper (the only other survivor of three) pings it too, finds no answer and says so
/// (`Message::Nack`), so the probers keep their timeouts, their suspicion of the dead box's
/// included (without the nacks, a prober's score rose to 1 and doubled them: 1.5 s of the
/// testbed's 3 s from a cut to the service running elsewhere).
#[test]
fn a_dead_box_costs_its_probers_no_health() {
    let mut nodes: StdVec<Box<Node>> = (0..3).map(|i| box_node(i, false, false)).collect();
    let mut net = Net::new(&[false; 3]);
    net.run(&mut nodes, (0, 10_000));
    assert!(nodes
        .iter()
        .all(|n| n.members().iter().all(|m| m.is_live())));
    net.up[2] = false;
    let dead = nodes[2].id();
    let mut worst = 0;
    let mut at = 10_000;
    while !nodes[..2]
        .iter()
        .all(|n| n.members.get(dead).unwrap().state == MemberState::Dead)
    {
        assert!(at < 30_000, "box 2 declared dead within 20 s");
        net.run(&mut nodes, (at, at + 10));
        at += 10;
        worst = worst
            .max(nodes[0].local_health())
            .max(nodes[1].local_health());
    }
    let nacks = nodes[0].counters().nacks_sent + nodes[1].counters().nacks_sent;
    assert!(nacks > 0, "the survivors nacked each other's probes");
    assert_eq!(worst, 0, "no prober's health rose");
}

/// Where silence says something (three boxes), a probe goes to the peer heard from longer ago;
/// not when the prober's own probes miss (local health above 0), nor in a larger cluster, where
/// the silent member is probed one time in five, as any of five peers.
#[test]
fn a_cluster_of_three_probes_its_silent_member() {
    let picks = |boxes: usize, healthy: bool| {
        let mut nodes: StdVec<Box<Node>> = (0..boxes).map(|i| box_node(i, false, false)).collect();
        let mut net = Net::new(&StdVec::from_iter((0..boxes).map(|_| false)));
        net.run(&mut nodes, (0, 10_000));
        // The last box falls silent for 0.8 s, less than it takes to be suspected and die.
        net.up[boxes - 1] = false;
        net.run(&mut nodes, (10_000, 10_800));
        let silent = nodes[boxes - 1].id();
        let node = &mut nodes[0];
        assert_eq!(node.members.live_count(), boxes - 1);
        if !healthy {
            node.adjust_health(true);
        }
        (0..1_000)
            .filter(|_| node.probe_target() == Some(silent))
            .count()
    };
    assert_eq!(picks(3, true), 1_000, "of two, the silent one every time");
    let (unhealthy, larger) = (picks(3, false), picks(6, true));
    assert!((420..580).contains(&unhealthy), "one in two: {unhealthy}");
    assert!((150..250).contains(&larger), "one in five: {larger}");
}

/// A nack counts only from a helper this node asked, and once: it lowers what the miss costs the
/// prober's local health, so a member that was not asked, a helper that nacks twice, or a nack
/// for another probe must not lower it further.
#[test]
fn a_nack_counts_only_from_a_helper_asked_and_once() {
    let mut node = box_node(0, false, false);
    let (asked, other) = (11, 12);
    node.probe = Some(Probe {
        target: 10,
        seq: 7,
        sent_at: Instant(0),
        judge_at: Instant(500),
        indirect_sent: true,
        acked: false,
        helpers: [Some(asked), Some(13), None],
        nacked: 0,
    });
    let unnacked = |n: &Node| n.probe.unwrap().helpers_and_unnacked();
    assert_eq!(unnacked(&node), (2, 2));
    node.handle_nack(other, 7);
    node.handle_nack(asked, 6);
    assert_eq!(unnacked(&node), (2, 2), "not asked, or another probe");
    node.handle_nack(asked, 7);
    node.handle_nack(asked, 7);
    assert_eq!(unnacked(&node), (2, 1), "one nack from the helper asked");
}

/// A probe is judged `judge_after_ms` after its ping: under `metered` (6 s periods, 1.5 s probe
/// timeout) 4.5 s, not at the next period 6 s later, which is 1.5 s off every detection.
#[test]
fn a_metered_probe_is_judged_three_timeouts_after_its_ping() {
    let metered = Profile::METERED;
    assert_eq!(metered.judge_after_ms(), 4_500);
    assert_eq!(
        Profile::LAN.judge_after_ms(),
        Profile::LAN.probe_interval_ms
    );
    let mut nodes: StdVec<Box<Node>> = (0..2)
        .map(|i| box_node_profiled(i, (false, false), metered))
        .collect();
    let mut net = Net::new(&[false; 2]);
    net.run(&mut nodes, (0, 60_000));
    assert!(nodes[0].members().iter().all(|m| m.is_live()));
    net.up[1] = false;
    let dead = nodes[1].id();
    let mut pinged = None;
    let mut at = 60_000;
    while nodes[0].members.get(dead).unwrap().state != MemberState::Suspect {
        assert!(at < 120_000, "box 1 suspect within a minute");
        net.run(&mut nodes, (at, at + 10));
        at += 10;
        let probe = nodes[0]
            .probe
            .filter(|p| p.target == dead && p.sent_at.0 >= 60_000);
        pinged = pinged.or(probe.map(|p| p.sent_at.0));
    }
    let pinged = pinged.expect("box 0 pinged box 1 after the cut");
    assert_eq!(at - 10 - pinged, 4_500, "judged 4.5 s after the ping");
}

mod natobs;
