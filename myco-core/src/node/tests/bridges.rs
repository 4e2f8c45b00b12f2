//! Bridges between two zones on a perfect wire: desired state crosses, membership does not.

use super::*;
use crate::crypto::cert::{certify_bridge, BridgeScope};

/// A node of `zone` whose certificate carries `scope` (None: a plain node), contacting
/// `bridge_seeds` when elected.
fn zoned(seed: u8, zone: u8, scope: Option<BridgeScope>, bridge_seeds: &[PeerAddr]) -> Box<Node> {
    let op = operator();
    let node_pk = SigningKey::from_seed([seed; 32]).unwrap().public_key();
    let cert = match scope {
        Some(s) => certify_bridge(&op, &node_pk, zone, Arch::X86_64, s, 0),
        None => certify(&op, &node_pk, zone, Arch::X86_64, false, 0),
    };
    node_certified(
        seed,
        &cert,
        (&[], bridge_seeds),
        (WAL_CHECKPOINT_BYTES, Profile::LAN),
    )
}

/// The addresses `run_pair` gives its first and second node.
fn addrs() -> (PeerAddr, PeerAddr) {
    (
        PeerAddr::v4([127, 0, 0, 1], 1),
        PeerAddr::v4([127, 0, 0, 2], 1),
    )
}

/// Two bridges of zones 0 and 1, alone in their zones (so each is elected): an entry submitted in
/// zone 0 reaches zone 1 over the bridge session, and neither lists the other as a member.
#[test]
fn an_entry_crosses_a_bridge_and_no_member_does() {
    let (_, addr_b) = addrs();
    let mut a = zoned(1, 0, Some(BridgeScope::All), &[addr_b]);
    let mut b = zoned(2, 1, Some(BridgeScope::Zones(1)), &[]);
    assert!(
        a.is_bridge() && b.is_bridge(),
        "alone, each is its zone's bridge"
    );
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    a.submit(Instant(0), &e[..len], &mut Wire::default())
        .unwrap();
    run_pair(&mut a, &mut b, 5_000, 0);
    assert_eq!(b.state_hash(), a.state_hash(), "the entry crossed");
    assert_eq!(b.counters().bridge_entries, 1);
    assert!(a.counters().bridge_syncs > 0 && b.counters().bridge_sessions == 1);
    assert!(a.members().is_empty() && b.members().is_empty());
    assert_eq!(b.bridge_peers()[0].zone, 0);
    assert_eq!(a.bridge_peers()[0].id, b.id());
}

/// A plain node of zone 1 asking a bridge of zone 0 for a session is refused and counted as
/// `not_bridge`, and nothing crosses.
#[test]
fn a_plain_node_gets_no_bridge_session() {
    let (_, addr_b) = addrs();
    let mut a = zoned(1, 0, Some(BridgeScope::All), &[]);
    let mut b = zoned(2, 1, None, &[]);
    let mut wire = Wire::default();
    b.out.now = Instant(0);
    b.out.ensure_handshake(&mut wire, addrs().0);
    let (_, hello) = wire.frames.pop().unwrap();
    a.handle_datagram(Instant(0), addr_b, &hello, &mut wire);
    assert_eq!(a.crypto_refusals()[CryptoRefusal::NotBridge.index()], 1);
    assert!(wire.frames.is_empty(), "no Reply");
    assert_eq!(a.link_count(), 0);
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    a.submit(Instant(0), &e[..len], &mut Wire::default())
        .unwrap();
    run_pair(&mut a, &mut b, 3_000, 0);
    assert_ne!(b.state_hash(), a.state_hash(), "no bridge, no crossing");
    assert_eq!(a.link_count() + b.link_count(), 0);
}

/// A frame carrying membership on a bridge session (a Ping with the sender's member record) is
/// refused, counted, and changes neither the member table nor the directory's view of the state.
#[test]
fn membership_on_a_bridge_session_is_refused() {
    let (addr_a, addr_b) = addrs();
    let mut a = zoned(1, 0, Some(BridgeScope::All), &[addr_b]);
    let mut b = zoned(2, 1, Some(BridgeScope::All), &[]);
    run_pair(&mut a, &mut b, 3_000, 0);
    assert_eq!(a.link_count(), 1, "the bridge session is up");
    let mut wire = Wire::default();
    let ping = Message::Ping {
        seq: 1,
        me: a.me(),
        updates: HVec::new(),
        status_seen: 0,
    };
    a.out.send(&mut wire, addr_b, a.store.root(), ping);
    let list = HVec::from_slice(&[a.me()]).unwrap();
    a.out
        .send(&mut wire, addr_b, a.store.root(), Message::Members { list });
    let before = b.counters();
    for (_, f) in &wire.frames {
        b.handle_datagram(Instant(3_000), addr_a, f, &mut Wire::default());
    }
    let after = b.counters();
    assert_eq!(after.refused_bridge, before.refused_bridge + 2);
    assert_eq!(after.refused_by_reason()[5], ("bridge", 2));
    assert!(b.members().is_empty(), "no member record crossed");
}

/// Election: of a zone's bridge-capable live members, the `BRIDGES_PER_ZONE` highest rendezvous
/// scores bridge; a plain member never does, and when one of the bridges dies the next in the
/// order takes over.
#[test]
fn the_top_scores_bridge_and_the_next_replaces_a_dead_one() {
    let mut n = zoned(1, 0, Some(BridgeScope::All), &[]);
    let mine = bridge_score(0, n.id());
    // Phantom bridge-capable members: two outscoring this node, then one below it.
    let above: HVec<u64, 2> = (10..60)
        .filter(|&i| bridge_score(0, phantom(i).id) > mine)
        .take(2)
        .collect();
    assert_eq!(above.len(), 2, "the range holds two higher scores");
    let mut sink = Wire::default();
    for &i in &above {
        let mut u = phantom(i);
        u.meta.bridge = true;
        n.apply_member(Instant(0), &u, u.id, &mut sink);
    }
    assert!(
        !n.is_bridge(),
        "two live bridge-capable members outscore it"
    );
    let mut dead = phantom(above[0]);
    dead.meta.bridge = true;
    dead.state = MemberState::Dead;
    dead.incarnation += 1;
    n.apply_member(Instant(0), &dead, dead.id, &mut sink);
    assert!(
        n.is_bridge(),
        "the next in rendezvous order replaces the dead bridge"
    );
    let plain = zoned(2, 0, None, &[]);
    assert!(!plain.is_bridge(), "without a scope a node never bridges");
}

/// Three zones on a perfect wire: bridge A (zone 0) is seeded with B (zone 1) and C (zone 2) is
/// seeded with A only, and B contacts nobody. C can know of B only from A's `Bridges` directory;
/// an entry submitted in zone 1 reaches zone 2, and no node lists another as a member.
#[test]
fn a_bridge_learns_other_bridges_from_a_directory() {
    let addr = |i: u8| PeerAddr::v4([127, 0, 0, i], 1);
    let mut nodes = [
        zoned(1, 0, Some(BridgeScope::All), &[addr(2)]),
        zoned(2, 1, Some(BridgeScope::All), &[]),
        zoned(3, 2, Some(BridgeScope::All), &[addr(1)]),
    ];
    let mut e = [0u8; 128];
    let len = tombstone("web", 5, &mut e);
    nodes[1]
        .submit(Instant(0), &e[..len], &mut Wire::default())
        .unwrap();
    for t in (0..20_000).step_by(10) {
        let now = Instant(t);
        let mut wire = Wire::default();
        for n in nodes.iter_mut() {
            n.handle_tick(now, &mut wire);
        }
        while let Some((to, frame)) = wire.frames.pop() {
            let from = (0..3).find(|&i| frame[16..24] == nodes[i].id().to_le_bytes());
            let from = addr(from.expect("a node sent it") as u8 + 1);
            let mut next = Wire::default();
            let i = usize::from(to.as_v4().unwrap()[3] - 1);
            nodes[i].handle_datagram(now, from, &frame, &mut next);
            for f in next.frames {
                wire.frames.push(f).unwrap();
            }
        }
    }
    let b = nodes[1].id();
    let learned = nodes[2].bridge_peers().iter().find(|p| p.id == b);
    assert!(learned.is_some(), "C knows B from A's directory");
    assert_eq!(nodes[2].state_hash(), nodes[1].state_hash());
    assert!(nodes.iter().all(|n| n.members().is_empty()));
}
