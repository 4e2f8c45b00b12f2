//! Node-level tests with a recording sink. Convergence is MycoSim's job; these pin down what a
//! single node does with bad input and with its storage completions.

use super::*;
use crate::config::WAL_CHECKPOINT_BYTES;
use crate::schema::entry::{encode_entry, Arch, EntryBody, Version};
use heapless::Vec as HVec;

#[derive(Default)]
struct Recorder {
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
}

fn node(wal_checkpoint_bytes: u64) -> Node {
    let meta = MemberMeta {
        arch: Arch::X86_64,
        zone: 0,
        gpu: false,
    };
    let config = NodeConfig {
        id: 1,
        meta,
        seed: 1,
        join: &[],
        wal_checkpoint_bytes,
    };
    Node::new(&config, Instant(0))
}

fn tombstone(name: &str, clock: u64, out: &mut [u8; 128]) -> usize {
    let body = EntryBody {
        name,
        version: Version { clock, key_id: 1 },
        spec: None,
    };
    encode_entry(&body, &[0; 64], out).unwrap()
}

/// Wrong length, magic, version, kind, zone, padding or a garbage body: each is counted as a
/// refusal, nothing is sent, and the state does not change.
#[test]
fn bad_frames_are_counted_and_change_nothing() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    let mut sink = Recorder::default();
    let before = n.state_hash();
    let mut good = [0u8; FRAME_BYTES];
    let header = Header {
        kind: Kind::Data,
        zone: 0,
        revocation_block: 0,
        sender: 2,
        counter: 1,
    };
    body_mut(&mut good)[..4].copy_from_slice(&[0xff; 4]);
    write_frame(&mut good, &header, 4);
    let mut frames: HVec<[u8; FRAME_BYTES], 8> = HVec::new();
    for (at, value) in [(0, b'X'), (2, 9), (3, 0), (4, 7), (500, 1)] {
        let mut f = good;
        f[at] = value;
        frames.push(f).unwrap();
    }
    frames.push(good).unwrap(); // garbage body
    let from = PeerAddr::v4([127, 0, 0, 2], 1);
    n.handle_datagram(Instant(1), from, &good[..100], &mut sink);
    for f in &frames {
        n.handle_datagram(Instant(1), from, f, &mut sink);
    }
    let c = n.counters();
    assert_eq!(c.refused_frame, 5);
    assert_eq!(c.refused_zone, 1);
    assert_eq!(c.refused_body, 1);
    assert_eq!(sink.sent, 0);
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
    assert!(
        sink.events.is_empty(),
        "nothing acknowledged before the fsync"
    );
    n.handle_storage(Instant(1), Storage::Durable { ticket: 1 }, &mut sink);
    assert_eq!(sink.events.as_slice(), &[Event::Durable { ticket: 1 }]);
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
