//! A box finds out by itself that it is behind NAT (`node::natdetect`, docs/protocol.md
//! section 12), and a reachable one never concludes it.

use super::*;

/// How long the metered cluster of eight may take to find box 7 behind NAT: it talks to each of
/// its 7 peers about every 40 s, so only about a fifth of them are closed at a time, and a
/// `NAT_DETECT_PINGS` exposure takes about 800 s (measured: 850 s).
const DETECT_BOUND_MS: u64 = 1_200_000;

/// Runs the cluster in steps of 10 s until box 7 concludes it is behind NAT; returns when (ms
/// from `from`), or None by `until`.
fn run_until_detected(nodes: &mut [Box<Node>], net: &mut Net, until: u64) -> Option<u64> {
    for t in (0..until).step_by(10_000) {
        net.run(nodes, (t, t + 10_000));
        if nodes[7].counters().nat_detected > 0 {
            return Some(t + 10_000);
        }
    }
    None
}

/// Box 7 behind NAT, started without `--behind-nat`: peers it has not talked to for 30 s are
/// dropped by its NAT and suspect it; it concludes within the bound, once, its record says so
/// everywhere, peers reach it through the relay and it keeps its relay's mapping open, and cut
/// off it is declared dead within the profile's bound like any box.
#[test]
fn a_box_behind_nat_finds_out_by_itself() {
    let (mut nodes, mut net) = metered_behind_nat(true, (false, false));
    let at = run_until_detected(&mut nodes, &mut net, DETECT_BOUND_MS);
    let at = at.expect("box 7 finds out it is behind NAT within the bound");
    assert!(nodes[7].meta().nat && nodes[7].counters().refutations > 0);
    net.run(&mut nodes, (at, at + 60_000));
    net.nat_dropped = 0;
    net.run(&mut nodes, (at + 60_000, at + 180_000));
    assert_eq!(
        net.nat_dropped, 0,
        "everything reaches it through the relay"
    );
    let natted = nodes[7].id();
    for n in &nodes[..7] {
        let b = n.members.get(natted).unwrap();
        assert!(b.meta.nat, "its record says so at {}", n.id());
        assert_eq!(b.state, MemberState::Alive, "alive at {}", n.id());
    }
    assert!(nodes[0].counters().relayed_frames > 0);
    assert!(nodes[7].out.has_link(addr(0)), "a session with its relay");
    assert_eq!(
        nodes[7].counters().nat_detected,
        1,
        "sticky: concluded once"
    );
    net.up[7] = false;
    let end = at + 180_000 + Profile::METERED.detection_ms_goal;
    net.run(&mut nodes, (at + 180_000, end));
    for n in &nodes[..7] {
        let b = n.members.get(natted).unwrap();
        assert_eq!(b.state, MemberState::Dead, "dead at {}", n.id());
    }
}

/// Without a relay in its zone the box has nobody to keep sessions with: it stays as it is,
/// counts each window it would have concluded, and keeps looking.
#[test]
fn without_a_relay_a_box_behind_nat_stays_as_it_is_and_counts_it() {
    let (mut nodes, mut net) = metered_behind_nat(false, (false, false));
    assert_eq!(
        run_until_detected(&mut nodes, &mut net, DETECT_BOUND_MS),
        None
    );
    assert!(!nodes[7].meta().nat);
    assert!(nodes[7].counters().nat_no_relay > 0);
}

/// A `--relay` box must be reachable and never concludes otherwise, even when it is not (here
/// behind the NAT, suspected and refuting).
#[test]
fn a_relay_never_concludes_it_is_behind_nat() {
    let (mut nodes, mut net) = metered_behind_nat(true, (true, false));
    assert_eq!(
        run_until_detected(&mut nodes, &mut net, DETECT_BOUND_MS),
        None
    );
    assert!(!nodes[7].meta().nat && nodes[7].counters().refutations > 0);
}

/// Reachable boxes under heavy loss (50% of frames lost at random, no NAT) are suspected and
/// refute again and again, and Lifeguard stretches their periods, but closed peers' pings still
/// reach them: none concludes it is behind NAT in four simulated hours, with a relay there to
/// use. (Counting no ping as reaching them, they do within that time: the test sees the rule.)
#[test]
fn a_reachable_box_under_heavy_loss_never_concludes_it() {
    let (mut nodes, _) = metered_behind_nat(true, (false, false));
    let mut net = Net::new(&[false; 8]);
    net.loss_pct = 50;
    net.run(&mut nodes, (0, 12 * DETECT_BOUND_MS));
    assert!(nodes.iter().any(|n| n.counters().refutations > 0));
    for n in &nodes {
        assert_eq!(n.counters().nat_detected, 0, "at {}", n.id());
        assert!(!n.meta().nat);
    }
}
