//! Fuzzes a whole `Node` through its network input, `handle_datagram`, its clock, `handle_tick`,
//! and its storage and operator inputs.
//!
//! Gossip frames are sealed, so the harness plays up to three certified peers: each completes a
//! real handshake with the node (Hello, the node's Reply, Finish) and then seals what it sends with
//! its session. The node is bridge-capable; the third peer is a bridge of zone 1, so every message
//! kind also arrives over a bridge session, where only desired state may pass. The input is a list of operations. Raw ones hand the node arbitrary datagrams (mostly
//! 1024-byte chunks of the input, handshake kinds included) or a sealed frame around arbitrary body
//! bytes; structured ones seal a valid message of a fuzz-chosen kind built from a few peers,
//! service names and the node's own bucket digests and key hashes, so the fuzzer gets past the
//! header, the AEAD and the body checks into membership (member pages of every kind included),
//! rumors, revocation and every anti-entropy step. Time advances by fuzz-chosen ticks, then for ten simulated seconds more so probes,
//! suspicions and gossip rounds fire.
//!
//! Proves: no panic on any input; the frames the node sends are valid, and those sealed for a
//! harness peer open with its session into decodable bodies whose entries decode; a replayed frame
//! is refused; after every operation the store's incremental digests equal a recomputation, and
//! every member record is usable (never the node itself, a suspicion timer exactly on suspects, a
//! real address).
#![no_main]

#[path = "common/filler.rs"]
mod filler;

use filler::filler_args;
use libfuzzer_sys::fuzz_target;
use myco_core::config::{
    BODY_BYTES_MAX, BUCKETS_PER_GROUP, ENTRY_BYTES_MAX, FRAME_BYTES, GROUPS, HEADER_BYTES,
    REVOCATION_BYTES_MAX, SIGNATURE_BYTES, TAG_BYTES,
};
use myco_core::crypto::cert::{certify_bridge, BridgeScope};
use myco_core::crypto::handshake::{Credentials, Initiator, SessionKeys, Trust};
use myco_core::crypto::revocation::encode_revocation;
use myco_core::crypto::{check_entry, EntrySignatureError, PublicKey, Session, SigningKey};
use myco_core::node::Storage;
use myco_core::schema::entry::{
    encode_entry, Arch, Entry, EntryBody, ServiceSpec, Source, Version,
};
use myco_core::schema::frame::{body_mut, write_frame, Frame, Header, Kind};
use myco_core::schema::message::{
    Body, BridgeRecord, Digest, MemberMeta, MemberState, MemberUpdate, Message, PageKind,
};
use myco_core::state::store::key_hash;
use myco_core::sync::merkle::bucket_range;
use myco_core::{Event, Instant, Node, NodeConfig, PeerAddr, Sink};
use std::sync::{Mutex, OnceLock};

/// Ids of members that exist only in membership updates: nobody answers for them.
const FAKE_PEERS: u64 = 8;
const NAMES: [&str; 12] = [
    "web", "db", "cache", "a", "b", "c", "d", "e", "f", "g", "h", "worker-1",
];

/// The fuzzed node's own address, which members may say they see it at.
const OWN_ADDR: PeerAddr = PeerAddr::v4([10, 0, 0, 1], 7946);

fn fake_addr(id: u64) -> PeerAddr {
    PeerAddr::v4([10, 0, 0, id as u8], 7946)
}

/// Keys and certificates, made once: Ed25519 signing is far slower than one fuzz input.
struct Fixture {
    operator: SigningKey,
    trust: Trust,
    node_seed: [u8; 32],
    node_cert: Vec<u8>,
    peers: Vec<(Credentials, PeerAddr)>,
    /// A valid revocation to height 1, which revokes every certificate above (all issued at 0).
    revocation: Vec<u8>,
}

/// A certificate for `zone`, bridge-capable to every zone: the node under test is a bridge, its
/// harness peers of zone 0 are members and the one of zone 1 a bridge of another zone, so every
/// input can also send it anything over a bridge session.
fn cert_for(operator: &SigningKey, seed: [u8; 32], zone: u8) -> (SigningKey, Vec<u8>) {
    let key = SigningKey::from_seed(seed).expect("fixture seed");
    let cert = certify_bridge(
        operator,
        &key.public_key(),
        zone,
        Arch::X86_64,
        BridgeScope::All,
        0,
    );
    (key, cert.to_vec())
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let operator = SigningKey::from_seed([1; 32]).expect("fixture seed");
        let node_seed = [2; 32];
        let (_, node_cert) = cert_for(&operator, node_seed, 0);
        let peers = (0..3u8)
            .map(|i| {
                let (key, cert) = cert_for(&operator, [3 + i; 32], i / 2);
                let creds = Credentials::new(key, &cert, &operator.public_key())
                    .expect("fixture certificate");
                (creds, PeerAddr::v4([10, 0, 1, i], 7946))
            })
            .collect();
        let mut revocation = [0u8; REVOCATION_BYTES_MAX];
        let n = encode_revocation(&operator, 1, &mut revocation);
        let trust = Trust {
            operator: operator.public_key(),
            revocation_block: 0,
            zone: 0,
        };
        Fixture {
            operator,
            trust,
            node_seed,
            node_cert,
            peers,
            revocation: revocation[..n].to_vec(),
        }
    })
}

/// A harness peer with an established session.
struct Link {
    id: u64,
    /// The peer's certified zone, which its headers carry: 1 for the bridge of another zone.
    zone: u8,
    addr: PeerAddr,
    session: Session,
}

/// Checks outgoing frames and forgets them. Validating every frame would dominate the run time,
/// so only the first `CHECKED_FRAMES` of each input are checked; the `frame` and `body` targets
/// cover the codecs themselves.
struct CheckingSink {
    checked: usize,
    /// The highest ticket handed to `append`, so storage completions name only real appends.
    appended: u64,
    checkpoint_pending: bool,
    /// Counts up, so handshake randomness is never all zero and every input replays exactly.
    random: u8,
    /// Entry signatures are checked for real, or only their key id (as a verifying cache would).
    real_signatures: bool,
    /// The last Reply frame sent to this address, captured for the harness's handshake.
    capture: Option<(PeerAddr, [u8; FRAME_BYTES])>,
    links: Vec<Link>,
    /// The node's id: a relayed frame with another sender is one the node forwarded as a relay.
    me: u64,
}

const CHECKED_FRAMES: usize = 64;

impl Sink for CheckingSink {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        let f = Frame::new_checked(frame).expect("the node sends only valid frames");
        if let Some((addr, reply)) = &mut self.capture {
            if *addr == to && f.kind() == Kind::Reply {
                *reply = *frame;
            }
        }
        let link = match f.relay_to() {
            // Forwarded as a relay: sealed by its sender for its destination, not by the node.
            Some(_) if f.sender() != self.me => return,
            // Sealed for its destination, whichever relay it goes through.
            Some(dest) => self.links.iter_mut().find(|l| l.id == dest),
            None => self.links.iter_mut().find(|l| l.addr == to),
        };
        let Some(link) = link else {
            return;
        };
        if f.kind() != Kind::Data || self.checked == CHECKED_FRAMES {
            return;
        }
        self.checked += 1;
        let header: &[u8; HEADER_BYTES] = f.header().try_into().expect("header");
        let tag: &[u8; TAG_BYTES] = f.tag().try_into().expect("tag");
        let mut plain = [0u8; BODY_BYTES_MAX];
        plain.copy_from_slice(f.sealed_body());
        link.session
            .open_in_place(f.counter(), header, &mut plain, tag)
            .expect("a frame sealed for a harness peer opens with its session");
        let len = f.body_len();
        assert!(
            plain[len..].iter().all(|&b| b == 0),
            "sealed padding is zero"
        );
        let body = Body::decode(&plain[..len]).expect("the node sends only decodable bodies");
        if let Message::Entries { list } = body.msg {
            for e in list {
                Entry::decode(e).expect("the node sends only valid entries");
            }
        }
    }
    fn event(&mut self, _event: Event) {}
    fn append(&mut self, entry: &[u8], ticket: u64) {
        assert!(ticket > self.appended, "tickets increase");
        self.appended = ticket;
        Entry::decode(entry).expect("the node logs only valid entries");
    }
    fn checkpoint(&mut self) {
        assert!(!self.checkpoint_pending, "one checkpoint at a time");
        self.checkpoint_pending = true;
    }
    fn fill_random(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.random = self.random.wrapping_add(1).max(1);
            *b = self.random;
        }
    }
    fn verify_entry(
        &mut self,
        operator: &PublicKey,
        entry: &Entry<'_>,
    ) -> Result<(), EntrySignatureError> {
        if self.real_signatures {
            return check_entry(operator, entry);
        }
        let key_id = entry.body.version.key_id;
        if key_id == operator.key_id() {
            Ok(())
        } else {
            Err(EntrySignatureError::UnknownKey { key_id })
        }
    }
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(8);
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn name(&mut self) -> &'static str {
        NAMES[usize::from(self.u8()) % NAMES.len()]
    }
}

/// The ids a message may name: the node, the harness peers, members nobody plays, a stranger.
struct Ids {
    me: u64,
    peers: Vec<u64>,
}

impl Ids {
    fn pick(&self, input: &mut Input<'_>) -> u64 {
        match input.u8() {
            0 => self.me,
            b @ 1..=63 if !self.peers.is_empty() => self.peers[usize::from(b) % self.peers.len()],
            255 => 1000,
            b => 2 + u64::from(b) % FAKE_PEERS,
        }
    }
    fn addr(&self, id: u64) -> PeerAddr {
        match self.peers.iter().position(|&p| p == id) {
            Some(i) => fixture().peers[i].1,
            None => fake_addr(id),
        }
    }
    fn update(&self, input: &mut Input<'_>) -> MemberUpdate {
        let id = self.pick(input);
        let state = match input.u8() % 3 {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            _ => MemberState::Dead,
        };
        let incarnation = u32::from(input.u8() % 4);
        // A node's record of itself carries the unspecified address (`Node::me`), and that record
        // travels in piggybacks when the node refutes a suspicion.
        let addr = if input.u8() % 8 == 0 {
            PeerAddr::default()
        } else {
            self.addr(id)
        };
        MemberUpdate {
            id,
            incarnation,
            state,
            addr,
            meta: meta(input.u8()),
        }
    }
    fn digest(&self, input: &mut Input<'_>, node: &Node) -> Digest {
        match input.u8() % 4 {
            0 => Digest(0),
            1 => Digest(key_hash(input.name())),
            2 => {
                let slots = node.store().slots();
                if slots.is_empty() {
                    Digest(0)
                } else {
                    Digest(slots[usize::from(input.u8()) % slots.len()].key_hash)
                }
            }
            _ => Digest(input.u64()),
        }
    }
}

fn meta(b: u8) -> MemberMeta {
    let arch = [Arch::Any, Arch::X86_64, Arch::Aarch64][usize::from(b % 3)];
    MemberMeta {
        arch,
        zone: 0,
        gpu: b & 4 != 0,
        bridge: b & 8 != 0,
        relay: b & 16 != 0,
        nat: b & 32 != 0,
    }
}

/// A valid entry of fuzz-chosen name, version, kind and size, encoded into `out`. A quarter are
/// signed by the operator (signing is slow), the rest carry a dummy signature; a few name a key
/// the cluster does not trust.
fn entry(input: &mut Input<'_>, out: &mut [u8; ENTRY_BYTES_MAX]) -> Option<usize> {
    let name = input.name();
    let clock = u64::from(input.u8());
    let flags = input.u8();
    let size = input.u8();
    let args = filler_args(size);
    let spec = ServiceSpec {
        args,
        replicas: 1 + flags % 3,
        ..ServiceSpec::minimal(Source::Exec { path: "/bin/true" })
    };
    let operator = &fixture().operator;
    let key_id = if flags & 0x40 == 0 {
        operator.public_key().key_id()
    } else {
        u32::from(flags >> 7)
    };
    let body = EntryBody {
        name,
        version: Version { clock, key_id },
        spec: (flags & 8 == 0).then_some(spec),
    };
    let n = encode_entry(&body, &[flags & 3; SIGNATURE_BYTES], out).ok()?;
    if flags & 0x30 == 0x30 {
        let signature = operator.sign(&out[..n - SIGNATURE_BYTES]);
        out[n - SIGNATURE_BYTES..n].copy_from_slice(&signature);
    }
    Some(n)
}

/// Delivers a cleartext handshake frame from a harness peer.
fn deliver_clear(
    node: &mut Node,
    now: Instant,
    sink: &mut CheckingSink,
    ((sender, addr), zone): ((u64, PeerAddr), u8),
    kind: Kind,
    msg: &[u8],
) {
    let mut frame = [0u8; FRAME_BYTES];
    body_mut(&mut frame)[..msg.len()].copy_from_slice(msg);
    let header = Header {
        kind,
        zone,
        revocation_block: 0,
        sender,
        counter: 0,
    };
    write_frame(&mut frame, &header, msg.len());
    node.handle_datagram(now, addr, &frame, sink);
}

/// The harness side of a finished handshake: the node's Reply it answered, its Finish and keys.
type Finished = ([u8; FRAME_BYTES], Vec<u8>, SessionKeys);

/// Runs the handshake as harness peer `i` (the initiator); returns its session. The node's
/// randomness comes from the sink and restarts with every input, so its Reply is the same every
/// time: the harness's half (two signature checks, a signature, a Diffie-Hellman) is computed once
/// per peer and reused while the Reply matches.
fn handshake(node: &mut Node, now: Instant, sink: &mut CheckingSink, i: usize) -> Link {
    static DONE: Mutex<Vec<Option<Finished>>> = Mutex::new(Vec::new());
    let fx = fixture();
    let (creds, addr) = &fx.peers[i];
    let from = (creds.node_id(), *addr);
    let zone = creds.cert().zone;
    let trust = Trust { zone, ..fx.trust };
    let (initiator, hello) = Initiator::new(creds, &trust, [0x5a + i as u8; 32], [0xa5; 32])
        .expect("fixture credentials are valid");
    sink.capture = Some((*addr, [0; FRAME_BYTES]));
    deliver_clear(node, now, sink, (from, zone), Kind::Hello, &hello);
    let (_, reply) = sink.capture.take().expect("set above");
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    done.resize(fx.peers.len(), None);
    let cached = done[i].as_ref().filter(|(r, _, _)| *r == reply);
    let (finish, keys) = match cached {
        Some((_, finish, keys)) => (finish.clone(), keys.clone()),
        None => {
            let frame = Frame::new_checked(&reply).expect("the node answers a Hello with a Reply");
            let (keys, finish, _) = initiator
                .handle_reply(frame.body(), creds, &trust)
                .expect("the node's Reply verifies");
            done[i] = Some((reply, finish.to_vec(), keys.clone()));
            (finish.to_vec(), keys)
        }
    };
    let links = node.link_count();
    deliver_clear(node, now, sink, (from, zone), Kind::Finish, &finish);
    assert_eq!(
        node.link_count(),
        links + 1,
        "the Finish establishes a session"
    );
    Link {
        id: from.0,
        zone,
        addr: *addr,
        session: Session::new(&keys),
    }
}

/// Seals `len` body bytes already in `frame` from harness peer `i` and delivers it; returns the
/// frame as sent, for replays.
fn deliver_sealed(
    node: &mut Node,
    now: Instant,
    sink: &mut CheckingSink,
    i: usize,
    revocation_block: u64,
    frame: &mut [u8; FRAME_BYTES],
    len: usize,
) {
    let link = &mut sink.links[i];
    let counter = link.session.next_counter().expect("far from exhausted");
    let header = Header {
        kind: Kind::Data,
        zone: link.zone,
        revocation_block,
        sender: link.id,
        counter: counter.value(),
    };
    write_frame(frame, &header, len);
    let (head, rest) = frame.split_at_mut(HEADER_BYTES);
    let (body, tag) = rest.split_at_mut(BODY_BYTES_MAX);
    let head: &[u8; HEADER_BYTES] = (&*head).try_into().expect("header");
    let body: &mut [u8; BODY_BYTES_MAX] = body.try_into().expect("body");
    tag.copy_from_slice(&link.session.seal_in_place(counter, head, body));
    let from = link.addr;
    node.handle_datagram(now, from, &frame[..], sink);
}

fn message<'b>(
    input: &mut Input<'_>,
    node: &Node,
    ids: &Ids,
    entry_bufs: &'b mut [[u8; ENTRY_BYTES_MAX]; 4],
) -> Message<'b> {
    match input.u8() % 13 {
        // A helper's nack, for a probe of this node's or for none.
        12 => Message::Nack {
            seq: u32::from(input.u8()),
        },
        11 => {
            // Where a member sees this node: its own address, or a NAT's (`node::natobs`).
            let addr = if input.u8() % 2 == 0 {
                OWN_ADDR
            } else {
                PeerAddr::v4([203, 0, 113, input.u8()], input.u16())
            };
            Message::Observed { addr }
        }
        10 => {
            let mut list = heapless::Vec::new();
            for _ in 0..input.u8() % 9 {
                let id = input.u64();
                let r = BridgeRecord {
                    id,
                    zone: input.u8() % 3,
                    addr: ids.addr(id),
                };
                let _ = list.push(r);
            }
            Message::Bridges { list }
        }
        0 | 1 => {
            let seq = u32::from(input.u8());
            let me = ids.update(input);
            let mut updates = heapless::Vec::new();
            for _ in 0..input.u8() % 9 {
                let _ = updates.push(ids.update(input));
            }
            let status_seen = u32::from(input.u8());
            if input.u8() % 2 == 0 {
                Message::Ping {
                    seq,
                    me,
                    updates,
                    status_seen,
                }
            } else {
                Message::Ack {
                    seq,
                    me,
                    updates,
                    status_seen,
                }
            }
        }
        2 => {
            let target = ids.pick(input);
            Message::PingReq {
                seq: u32::from(input.u8()),
                target,
                target_addr: ids.addr(target),
            }
        }
        3 => {
            let mut list = heapless::Vec::new();
            for _ in 0..input.u8() % 17 {
                let _ = list.push(ids.update(input));
            }
            Message::Members { list }
        }
        4 => {
            let count = 1 + usize::from(input.u8()) % entry_bufs.len();
            let mut lens = [0usize; 4];
            for (buf, len) in entry_bufs.iter_mut().zip(lens.iter_mut()).take(count) {
                *len = entry(input, buf).unwrap_or(0);
            }
            let bufs: &'b [[u8; ENTRY_BYTES_MAX]; 4] = entry_bufs;
            let mut list = heapless::Vec::new();
            let mut bytes = 14;
            for (buf, &len) in bufs.iter().zip(lens.iter()).take(count) {
                if len > 0 && bytes + len + 3 <= BODY_BYTES_MAX {
                    bytes += len + 3;
                    list.push(&buf[..len]).expect("at most 4");
                }
            }
            Message::Entries { list }
        }
        5 => {
            let mut list = heapless::Vec::new();
            for _ in 0..1 + input.u8() % 6 {
                let g = input.u8() % (GROUPS as u8 + 1);
                let mut d = [Digest(0); BUCKETS_PER_GROUP];
                let mode = input.u8();
                for (i, x) in d.iter_mut().enumerate() {
                    let b = (usize::from(g) * BUCKETS_PER_GROUP + i) % 256;
                    *x = match (mode >> (i % 4 * 2)) & 3 {
                        0 => Digest(node.store().bucket(b)),
                        1 => Digest(0),
                        2 => Digest(node.store().bucket(b) ^ 1),
                        _ => Digest(u64::from(input.u8())),
                    };
                }
                let _ = list.push((g, d));
            }
            Message::SyncBuckets { list }
        }
        6 => {
            let b = usize::from(input.u8());
            let (lo, hi) = bucket_range(b);
            let (from, to) = match input.u8() % 3 {
                0 => (lo, hi),
                1 => (0, u64::MAX),
                _ => (input.u64(), input.u64()),
            };
            let mut buckets = [0u8; 32];
            match input.u8() % 3 {
                0 => buckets = [0xff; 32],
                1 => buckets[b / 8] |= 1 << (b % 8),
                _ => {
                    let t = input.take(32);
                    buckets[..t.len()].copy_from_slice(t);
                }
            }
            let mut keys = heapless::Vec::new();
            for _ in 0..input.u8() % 57 {
                let k = ids.digest(input, node);
                let d = match input.u8() % 2 {
                    0 => Digest(
                        node.store()
                            .slots()
                            .iter()
                            .find(|s| s.key_hash == k.0)
                            .map_or(0, |s| s.digest),
                    ),
                    _ => Digest(input.u64()),
                };
                let _ = keys.push((k, d));
            }
            keys.sort_unstable();
            Message::SyncKeys {
                from: Digest(from),
                to: Digest(to),
                buckets,
                keys,
            }
        }
        7 => {
            let mut keys = heapless::Vec::new();
            for _ in 0..input.u8() % 101 {
                let _ = keys.push(ids.digest(input, node));
            }
            Message::Want { keys }
        }
        9 => {
            let mut list = heapless::Vec::new();
            for _ in 0..input.u8() % 25 {
                let _ = list.push(ids.update(input));
            }
            let kind = match input.u8() % 3 {
                0 => PageKind::Sync,
                1 => PageKind::Pull,
                _ => PageKind::Push,
            };
            // The true live digest half the time, so both answers to a sync page run.
            let live = if input.u8() % 2 == 0 {
                Digest(input.u64())
            } else {
                Digest(
                    node.members()
                        .iter()
                        .filter(|m| m.is_live())
                        .fold(node.id(), |d, m| d ^ m.id),
                )
            };
            Message::MemberPage { kind, live, list }
        }
        _ => {
            let signed = if input.u8() % 2 == 0 {
                &fixture().revocation[..]
            } else {
                let len = usize::from(input.u8());
                input.take(len)
            };
            // The revocation bytes must outlive the message: copy them into the first buffer.
            let len = signed.len();
            entry_bufs[0][..len].copy_from_slice(signed);
            let bufs: &'b [[u8; ENTRY_BYTES_MAX]; 4] = entry_bufs;
            Message::Revocation {
                signed: &bufs[0][..len],
            }
        }
    }
}

/// What must hold between any two inputs, whatever peers sent.
fn check(node: &Node) {
    assert!(
        node.store().check_digests(),
        "Merkle digests diverged from a recomputation"
    );
    for m in node.members() {
        assert_ne!(m.id, node.id(), "the node lists itself as a member");
        // `Members::expire` only ends suspicions that have a timer: a suspect without one stays
        // suspect, and so live, forever.
        assert_eq!(
            m.state == MemberState::Suspect,
            m.suspicion.is_some(),
            "member {} is {:?} with suspicion timer {:?}",
            m.id,
            m.state,
            m.suspicion
        );
        // The unspecified address is what a node calls itself in its own record; nobody can be
        // reached there.
        assert_ne!(
            m.addr,
            PeerAddr::default(),
            "member {} has no address",
            m.id
        );
    }
}

/// One node allocation reused by every input: a 400 KiB `Box` per input costs more in page faults
/// than the input itself. Every input still starts from a fresh `Node::new`, so runs reproduce.
static NODE: Mutex<Option<Box<Node>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut input = Input(data);
    let flags = input.u8();
    let join = [fake_addr(2)];
    let config = NodeConfig {
        node_seed: fx.node_seed,
        cert: &fx.node_cert,
        operator: fx.operator.public_key(),
        revocation_block: 0,
        seed: input.u64(),
        join: &join,
        // Small, so a few entries already ask for a checkpoint.
        wal_checkpoint_bytes: 4096,
        profile: myco_core::config::Profile::ALL[usize::from(flags >> 5) % 3],
        bridge_seeds: &[],
        // Sometimes a relay (relayed frames are forwarded), sometimes behind NAT.
        relay: flags & 0x18 == 0x08,
        behind_nat: flags & 0x18 == 0x10,
        own_addrs: &[OWN_ADDR],
    };
    let mut now = Instant(u64::from(input.u16()));
    let fresh = Node::new(&config, now).expect("the fixture configuration is valid");
    let mut slot = NODE.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_mut() {
        Some(node) => **node = fresh,
        None => *slot = Some(Box::new(fresh)),
    }
    let node: &mut Node = slot.as_mut().expect("set above");
    let sink = &mut CheckingSink {
        checked: 0,
        appended: 0,
        checkpoint_pending: false,
        random: 0,
        real_signatures: flags & 4 != 0,
        capture: None,
        links: Vec::new(),
        me: node.id(),
    };
    // Handshakes first, while the node's state (and so its randomness) is the same every run.
    for i in 0..usize::from(flags % 4) {
        let link = handshake(node, now, sink, i);
        sink.links.push(link);
    }
    let ids = Ids {
        me: node.id(),
        peers: sink.links.iter().map(|l| l.id).collect(),
    };
    // Boot: a few entries replayed from "the log", then the replay summary.
    for _ in 0..input.u8() % 4 {
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        if let Some(n) = entry(&mut input, &mut buf) {
            let _ = node.restore(&buf[..n]);
        }
    }
    let recovered = Storage::Recovered {
        wal_bytes: u64::from(input.u16()),
        truncated: input.u8() % 2 == 1,
    };
    node.handle_storage(now, recovered, sink);
    let mut last_sealed: Option<[u8; FRAME_BYTES]> = None;
    while !input.is_empty() {
        let peer = if sink.links.is_empty() {
            None
        } else {
            Some(usize::from(input.u8()) % sink.links.len())
        };
        match input.u8() % 8 {
            // Arbitrary datagrams: mostly the next 1024-byte chunk of the input (zero-padded to a
            // whole frame), sometimes a datagram of the wrong length.
            0 => {
                let from = ids.addr(ids.pick(&mut input));
                if input.u8() % 4 == 0 {
                    let len = usize::from(input.u16()) % 1100;
                    node.handle_datagram(now, from, input.take(len), sink);
                } else {
                    let mut frame = [0u8; FRAME_BYTES];
                    let chunk = input.take(FRAME_BYTES);
                    frame[..chunk.len()].copy_from_slice(chunk);
                    node.handle_datagram(now, from, &frame, sink);
                }
            }
            // A sealed frame around arbitrary body bytes, or a replay of the last sealed frame.
            1 => {
                let Some(i) = peer else { continue };
                if input.u8() % 4 == 0 {
                    if let Some(frame) = last_sealed {
                        let refused = node.counters().refused_crypto;
                        let hash = node.state_hash();
                        node.handle_datagram(now, sink.links[i].addr, &frame, sink);
                        assert_eq!(node.counters().refused_crypto, refused + 1, "replay");
                        assert_eq!(node.state_hash(), hash);
                    }
                    continue;
                }
                let len = usize::from(input.u16()) % (BODY_BYTES_MAX + 1);
                let body = input.take(len);
                let mut frame = [0u8; FRAME_BYTES];
                body_mut(&mut frame)[..body.len()].copy_from_slice(body);
                deliver_sealed(node, now, sink, i, 0, &mut frame, body.len());
                last_sealed = Some(frame);
            }
            2..=5 => {
                let Some(i) = peer else { continue };
                let root = match input.u8() % 3 {
                    0 => node.store().root(),
                    1 => 0,
                    _ => input.u64(),
                };
                let revocation_block = u64::from(input.u8() % 8 == 0);
                let mut entry_bufs = [[0u8; ENTRY_BYTES_MAX]; 4];
                let msg = message(&mut input, node, &ids, &mut entry_bufs);
                let mut frame = [0u8; FRAME_BYTES];
                let len = Body {
                    root: Digest(root),
                    msg,
                }
                .encode(body_mut(&mut frame))
                .expect("test messages fit one frame");
                deliver_sealed(node, now, sink, i, revocation_block, &mut frame, len);
                last_sealed = Some(frame);
            }
            6 => {
                let mut buf = [0u8; ENTRY_BYTES_MAX];
                if let Some(n) = entry(&mut input, &mut buf) {
                    let _ = node.submit(now, &buf[..n], sink);
                }
                // Later the host reports an append durable (any one already requested) and
                // completes a requested checkpoint.
                if sink.appended > 0 && input.u8() % 2 == 0 {
                    let ticket = 1 + u64::from(input.u8()) % sink.appended;
                    node.handle_storage(now, Storage::Durable { ticket }, sink);
                }
                if sink.checkpoint_pending && input.u8() % 2 == 0 {
                    sink.checkpoint_pending = false;
                    node.handle_storage(now, Storage::Checkpointed, sink);
                }
            }
            _ => {
                now = now.add_ms(u64::from(input.u8()) * 8);
                node.handle_tick(now, sink);
            }
        }
        check(node);
    }
    // Ten more seconds, so probes time out, suspicions expire and rumors and anti-entropy run.
    for _ in 0..200 {
        now = now.add_ms(50);
        node.handle_tick(now, sink);
    }
    check(node);
});
