//! Node-level tests with a recording sink. Convergence is MycoSim's job; these pin down what a
//! single node does with bad input, forged entries and its storage completions.

use super::*;
use crate::config::{CERT_BYTES_MAX, WAL_CHECKPOINT_BYTES};
use crate::crypto::cert::issue_cert;
use crate::crypto::{sign_entry_body, CertBody};
use crate::schema::entry::{encode_entry, Arch, EntryBody, Version};
use crate::schema::frame::{body_mut, write_frame, Header};
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
    fn fill_random(&mut self, buf: &mut [u8]) {
        buf.fill(0x5a);
    }
}

fn operator() -> SigningKey {
    SigningKey::from_seed([7; 32]).unwrap()
}

fn node(wal_checkpoint_bytes: u64) -> Node {
    let op = operator();
    let body = CertBody {
        issuer: op.public_key().key_id(),
        node_pk: SigningKey::from_seed([1; 32]).unwrap().public_key().0,
        zone: 0,
        arch: Arch::X86_64,
        gpu: false,
        issued_at: 0,
    };
    let mut cert = [0u8; CERT_BYTES_MAX];
    let n = issue_cert(&op, &body, &mut cert);
    let config = NodeConfig {
        node_seed: [1; 32],
        cert: &cert[..n],
        operator: op.public_key(),
        revocation_block: 0,
        seed: 1,
        join: &[],
        wal_checkpoint_bytes,
    };
    Node::new(&config, Instant(0)).unwrap()
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
    let n = encode_entry(&body, &[0; 64], out).unwrap();
    let sig = sign_entry_body(key, &out[..n - 64]);
    out[n - 64..n].copy_from_slice(&sig);
    n
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
