//! Boxes restarted side by side: a member's old death, held by a third box, arriving just after
//! the member's new process opened a session (the testbed's restart-dead finding).

use super::*;
use crate::schema::message::PageKind;
use std::collections::HashSet;
use std::vec::Vec as StdVec;

fn addr(i: usize) -> PeerAddr {
    PeerAddr::v4([127, 0, 0, i as u8 + 1], 1)
}

/// Node `i` (key seed `i + 1`), joining node `join`.
fn node(i: usize, join: usize) -> Box<Node> {
    node_with(i as u8 + 1, &[addr(join)], WAL_CHECKPOINT_BYTES)
}

/// A perfect wire between test nodes, except the directed pairs in `cut`.
#[derive(Default)]
struct Net {
    cut: HashSet<(usize, usize)>,
}

impl Net {
    fn deliver(
        &self,
        nodes: &mut [Box<Node>],
        t: u64,
        mut queue: StdVec<(usize, PeerAddr, [u8; FRAME_BYTES])>,
    ) {
        while let Some((src, to, frame)) = queue.pop() {
            let Some(dst) = (0..nodes.len()).find(|&j| addr(j) == to) else {
                continue;
            };
            if self.cut.contains(&(src, dst)) {
                continue;
            }
            let mut wire = Wire::default();
            nodes[dst].handle_datagram(Instant(t), addr(src), &frame, &mut wire);
            queue.extend(wire.frames.iter().map(|&(to, f)| (dst, to, f)));
        }
    }

    fn run(&self, nodes: &mut [Box<Node>], (from, to): (u64, u64)) {
        for t in (from..to).step_by(10) {
            let mut queue = StdVec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                let mut wire = Wire::default();
                n.handle_tick(Instant(t), &mut wire);
                queue.extend(wire.frames.iter().map(|&(to, f)| (i, to, f)));
            }
            self.deliver(nodes, t, queue);
        }
    }

    /// Runs until `done` holds, in 10 ms ticks from `from`; the time it took, or `None` after `max`.
    fn until(
        &self,
        nodes: &mut [Box<Node>],
        from: u64,
        max: u64,
        done: impl Fn(&[Box<Node>]) -> bool,
    ) -> Option<u64> {
        for t in (from..from + max).step_by(10) {
            if done(nodes) {
                return Some(t - from);
            }
            self.run(nodes, (t, t + 10));
        }
        None
    }
}

fn state_of(n: &Node, id: u64) -> Option<MemberState> {
    n.members().iter().find(|m| m.id == id).map(|m| m.state)
}

/// Nodes 0 and 1 restart together after node 0 stopped cleanly; node 2, which cannot reach node
/// 0 any more (as a box revoked meanwhile), still holds node 0's clean-stop record and hands it to
/// node 1 just after node 1's new process opened its session with node 0's. Node 1 must not list
/// node 0 dead for long: node 0 is alive and talks to it.
#[test]
fn a_stale_death_from_a_third_box_after_a_restart_is_refuted_soon() {
    let net = Net::default();
    let mut nodes = std::vec![node(0, 1), node(1, 0), node(2, 0)];
    net.run(&mut nodes, (0, 5_000));
    let id0 = nodes[0].id();
    assert_eq!(state_of(&nodes[2], id0), Some(MemberState::Alive));
    // Node 0 stops cleanly: its death reaches nodes 1 and 2.
    let mut wire = Wire::default();
    nodes[0].leave(&mut wire);
    let queue = wire.frames.iter().map(|&(to, f)| (0, to, f)).collect();
    net.deliver(&mut nodes, 5_000, queue);
    assert_eq!(state_of(&nodes[2], id0), Some(MemberState::Dead));
    // Nodes 0 and 1 restart; node 2 and node 0 no longer hear each other.
    let mut net = net;
    net.cut.extend([(0, 2), (2, 0)]);
    nodes[0] = node(0, 1);
    nodes[1] = node(1, 0);
    let id2 = nodes[2].id();
    // Node 1 learns node 2 only once node 2 has given up node 1's old process (it holds a session
    // node 1's new process cannot open, and node 1 does not know node 2's address to answer).
    let opened = net.until(&mut nodes, 5_010, 30_000, |n| {
        state_of(&n[1], id0) == Some(MemberState::Alive)
            && state_of(&n[1], id2) == Some(MemberState::Alive)
    });
    assert!(opened.is_some(), "node 1 hears node 0's new process");
    // Node 2 pushes its table, node 0's old death in it, to node 1 right then.
    let t = 5_010 + opened.unwrap();
    let id1 = nodes[1].id();
    assert_eq!(
        state_of(&nodes[2], id0),
        Some(MemberState::Dead),
        "node 2 still holds the death"
    );
    let mut wire = Wire::default();
    nodes[2].out.now = Instant(t);
    nodes[2].send_table(&mut wire, id1, PageKind::Push);
    assert!(!wire.frames.is_empty(), "node 2 has a session with node 1");
    let queue = wire.frames.iter().map(|&(to, f)| (2, to, f)).collect();
    net.deliver(&mut nodes, t, queue);
    assert_eq!(
        state_of(&nodes[1], id0),
        Some(MemberState::Dead),
        "node 1 took the old death"
    );
    let back = net.until(&mut nodes, t + 10, 60_000, |n| {
        state_of(&n[1], id0) == Some(MemberState::Alive)
            && state_of(&n[0], id1) == Some(MemberState::Alive)
    });
    assert!(back.is_some_and(|ms| ms < 3_000), "took {back:?} ms");
}
