//! The secure transport under gossip: handshakes, sessions, sealing and opening frames.
//!
//! Gossip hands `send` a message for an address. With an established session the message is
//! sealed (ChaCha20-Poly1305, the cleartext header as associated data, the session's counter as
//! nonce) and sent. Without one, the message is dropped — gossip retries everything — and a
//! handshake starts unless one is already pending for that address. Incoming frames are opened
//! here; only an authenticated, fresh frame's plaintext ever reaches the node's dispatch.
//!
//! Rules from docs/protocol.md §5-7: handshake frames carry counter 0; a pending handshake times
//! out after `HANDSHAKE_TIMEOUT_MS` and is retried with fresh randomness; on simultaneous open the
//! handshake started by the lower node id wins; the initiator repeats its Finish ahead of sealed
//! frames until the responder's first sealed frame opens; a sealed frame's sender must be the
//! session's certified node id (the sender is in the authenticated header, and the keys are bound
//! to that peer). Sessions with peers whose certificate falls below the RevocationBlock are torn
//! down at once.

use super::{Counters, Sink};
use crate::config::{
    BODY_BYTES_MAX, FRAME_BYTES, HANDSHAKES_MAX, HANDSHAKE_RESEND_MS, HANDSHAKE_TIMEOUT_MS,
    HEADER_BYTES, MEMBERS_MAX, OBSERVED_REFRESH_GAP_MS, OBSERVED_REFRESH_MS, SESSIONS_MAX,
    TAG_BYTES,
};
use crate::crypto::handshake::{
    Credentials, Handshake, HandshakeMsg, MsgKind, Peer, Responder, Trust,
};
use crate::crypto::{Initiator, Refusal as CryptoRefusal, Session};
use crate::hash::{digest, DOMAIN_HELLO};
use crate::schema::addr::PeerAddr;
use crate::schema::frame::{body_mut, mark_relayed, write_frame, Frame, Header, Kind};
use crate::schema::message::{Body, Digest, Message};
use crate::time::Instant;

use heapless::Vec;

/// An established session with one peer.
pub struct Link {
    pub peer: u64,
    pub addr: PeerAddr,
    /// The RevocationBlock height the peer's certificate was issued at.
    pub issued_at: u64,
    /// The node key the peer's certificate (verified in the handshake) certifies: the key its
    /// binary cache signs with, which a build trusts (`executor::substitute`).
    pub node_pk: [u8; 32],
    /// The zone the peer's certificate names: this node's own, or another for a bridge session.
    /// The peer's sealed frames must carry it as their header zone.
    pub zone: u8,
    session: Session,
    last_rx: Instant,
    /// When this node last sealed a frame to the peer: a box behind NAT sends its relays a
    /// keepalive only when gossip has not (`node::relay`).
    last_tx: Instant,
    /// The peer's source address this node last told it (`Message::Observed`), and when; none
    /// yet for a new session.
    told: Option<(PeerAddr, Instant)>,
}

impl Link {
    /// When the peer's last authenticated frame arrived.
    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }
    /// When this node last sealed a frame to the peer.
    pub fn last_tx(&self) -> Instant {
        self.last_tx
    }
}

// Entries live in a fixed table, so every slot is as large as the largest variant anyway, and
// there is no heap to box into.
#[allow(clippy::large_enum_variant)]
enum PendingState {
    Handshake(Handshake),
    /// This side completed as initiator; the Finish is repeated until the peer's first frame.
    Finished,
}

struct Pending {
    addr: PeerAddr,
    started: Instant,
    state: PendingState,
    /// The message this side sent last (Hello, Reply or Finish) and its frame kind. Under loss an
    /// initiator repeats its Hello and Finish every `HANDSHAKE_RESEND_MS`; a responder answers a
    /// repeated Hello with the same Reply instead of starting over.
    last: HandshakeMsg,
    last_kind: Kind,
    /// Digest of the Hello this handshake answers or sent, to recognise repeats.
    hello: u64,
    next_resend: Instant,
}

/// A session just established by a handshake frame.
pub struct Established {
    pub peer: Peer,
    /// This side answered the handshake (it received the Finish). The initiator repeats its
    /// Finish every `HANDSHAKE_RESEND_MS` until this side's first sealed frame opens, so this
    /// side should send one at once rather than when gossip next picks the peer.
    pub responder: bool,
}

/// Frames for the box behind NAT at `addr` go to `via`, one of its relays, marked relayed to
/// `dest` (`Node::update_routes` keeps the table; docs/protocol.md section 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub addr: PeerAddr,
    pub dest: u64,
    pub via: PeerAddr,
}

/// Why an incoming frame was dropped by the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    Crypto(CryptoRefusal),
    /// A sealed frame whose plaintext padding was not zero: only a buggy peer sends it.
    Padding,
}

pub struct Transport {
    pub id: u64,
    pub zone: u8,
    pub now: Instant,
    pub creds: Credentials,
    pub trust: Trust,
    pub links: Vec<Link, SESSIONS_MAX>,
    pending: Vec<Pending, HANDSHAKES_MAX>,
    pub routes: Vec<Route, MEMBERS_MAX>,
    /// The address of a frame that came straight from its sender (not through a relay), while
    /// it is answered: frames to it go straight back even when the sender is behind NAT, whose
    /// NAT holds open the mapping the frame came through. Through a relay they would be lost
    /// with it when that relay dies, and the box behind NAT would miss every ack it asked for.
    pub answering: Option<PeerAddr>,
    /// When this node last told a peer an unchanged address again (`tell_observed`).
    refreshed: Option<Instant>,
    pub counters: Counters,
    /// Refusals by `crypto::Refusal::index()`.
    pub refusals: [u64; 8],
}

/// An opened frame: who sent it and its plaintext body.
pub struct Opened {
    pub sender: u64,
    /// The sender's certified zone: another than this node's on a bridge session.
    pub zone: u8,
    pub revocation_block: u64,
    pub len: usize,
}

impl Transport {
    pub fn new(id: u64, creds: Credentials, trust: Trust, now: Instant) -> Transport {
        Transport {
            id,
            zone: trust.zone,
            now,
            creds,
            trust,
            links: Vec::new(),
            pending: Vec::new(),
            routes: Vec::new(),
            answering: None,
            refreshed: None,
            counters: Counters::default(),
            refusals: [0; 8],
        }
    }

    pub fn refuse(&mut self, r: CryptoRefusal) {
        self.refusals[r.index()] += 1;
    }

    fn header(&self, kind: Kind, counter: u64) -> Header {
        Header {
            kind,
            zone: self.zone,
            revocation_block: self.trust.revocation_block,
            sender: self.id,
            counter,
        }
    }

    fn emit(&mut self, sink: &mut impl Sink, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        self.count_out();
        sink.send(to, frame);
    }

    fn count_out(&mut self) {
        self.counters.frames_out += 1;
        self.counters.bytes_out += FRAME_BYTES as u64;
    }

    /// Where a frame for `to` goes: through a relay, marked relayed, when `to` is a box behind
    /// NAT with a route; otherwise to `to`. Call it before sealing: the mark is in the header.
    fn routed(&mut self, to: PeerAddr, frame: &mut [u8; FRAME_BYTES]) -> PeerAddr {
        if self.answering == Some(to) {
            return to;
        }
        let Some(r) = self.routes.iter().find(|r| r.addr == to) else {
            return to;
        };
        mark_relayed(frame, r.dest);
        self.counters.frames_via_relay += 1;
        r.via
    }

    /// Sends a handshake message in a cleartext frame.
    fn send_handshake(&mut self, sink: &mut impl Sink, to: PeerAddr, msg: &[u8], kind: Kind) {
        let mut frame = [0u8; FRAME_BYTES];
        body_mut(&mut frame)[..msg.len()].copy_from_slice(msg);
        write_frame(&mut frame, &self.header(kind, 0), msg.len());
        let via = self.routed(to, &mut frame);
        self.emit(sink, via, &frame);
    }

    /// Seals `msg` to `to`, or starts a handshake and drops it if there is no session yet.
    pub fn send(&mut self, sink: &mut impl Sink, to: PeerAddr, root: u64, msg: Message<'_>) {
        let Some(i) = self.links.iter().position(|l| l.addr == to) else {
            self.counters.frames_unsent += 1;
            self.ensure_handshake(sink, to);
            return;
        };
        self.repeat_finish(sink, to);
        let mut frame = [0u8; FRAME_BYTES];
        let body = Body {
            root: Digest(root),
            msg,
        };
        let len = body
            .encode(body_mut(&mut frame))
            .expect("messages are sized to fit one frame");
        let Ok(counter) = self.links[i].session.next_counter() else {
            // Exhausted after 2^64 frames: the session ends and a new handshake starts.
            self.links.swap_remove(i);
            self.ensure_handshake(sink, to);
            return;
        };
        write_frame(&mut frame, &self.header(Kind::Data, counter.value()), len);
        let via = self.routed(to, &mut frame);
        self.links[i].last_tx = self.now;
        self.count_out();
        let session = &self.links[i].session;
        sink.send_sealed(via, &mut frame, |frame| {
            let (head, rest) = frame.split_at_mut(HEADER_BYTES);
            let (body, tag) = rest.split_at_mut(BODY_BYTES_MAX);
            let head: &[u8; HEADER_BYTES] = (&*head).try_into().expect("split at the header");
            let body: &mut [u8; BODY_BYTES_MAX] = body.try_into().expect("split at the body");
            tag.copy_from_slice(&session.seal_in_place(counter, head, body));
        });
    }

    fn repeat_finish(&mut self, sink: &mut impl Sink, to: PeerAddr) {
        let finish = self.pending.iter().find_map(|p| match p.state {
            PendingState::Finished if p.addr == to => Some(p.last.clone()),
            _ => None,
        });
        if let Some(f) = finish {
            self.send_handshake(sink, to, &f, Kind::Finish);
        }
    }

    /// Repeats the initiator's Hello or Finish of every pending handshake that is due: under
    /// loss a three-message exchange rarely survives one try.
    pub fn handle_tick(&mut self, sink: &mut impl Sink) {
        let now = self.now;
        self.pending
            .retain(|p| now.since_ms(p.started) < HANDSHAKE_TIMEOUT_MS);
        for i in 0..self.pending.len() {
            let p = &mut self.pending[i];
            let initiator = !matches!(p.state, PendingState::Handshake(Handshake::AwaitFinish(_)));
            if initiator && now >= p.next_resend {
                p.next_resend = now.add_ms(HANDSHAKE_RESEND_MS);
                let (to, msg, kind) = (p.addr, p.last.clone(), p.last_kind);
                self.send_handshake(sink, to, &msg, kind);
            }
        }
    }

    /// Starts a handshake with `to` unless one is pending and not yet timed out.
    pub fn ensure_handshake(&mut self, sink: &mut impl Sink, to: PeerAddr) {
        let now = self.now;
        self.pending
            .retain(|p| now.since_ms(p.started) < HANDSHAKE_TIMEOUT_MS);
        if self.pending.iter().any(|p| p.addr == to) {
            return;
        }
        // Check room before any cryptography, so a flood costs nothing but this test.
        if self.pending.is_full() {
            self.counters.handshakes_deferred += 1;
            return;
        }
        let (eph, challenge) = fresh(sink);
        let Ok((initiator, hello)) = Initiator::new(&self.creds, &self.trust, eph, challenge)
        else {
            // Our own certificate is revoked or for another zone: nobody would accept it.
            self.counters.handshakes_refused_own += 1;
            return;
        };
        let state = PendingState::Handshake(Handshake::AwaitReply(initiator));
        if self.insert_pending(to, state, &hello, Kind::Hello, digest(DOMAIN_HELLO, &hello)) {
            self.counters.handshakes_started += 1;
            self.send_handshake(sink, to, &hello, Kind::Hello);
        }
    }

    /// Records a handshake in progress; false if the table is full of live handshakes. Evicting
    /// a young one would let a burst of new peers starve every handshake of completion, so the
    /// newcomer waits: its sender retries after the timeout.
    fn insert_pending(
        &mut self,
        addr: PeerAddr,
        state: PendingState,
        last: &[u8],
        last_kind: Kind,
        hello: u64,
    ) -> bool {
        let now = self.now;
        self.pending
            .retain(|p| p.addr != addr && now.since_ms(p.started) < HANDSHAKE_TIMEOUT_MS);
        let last = HandshakeMsg::from_slice(last).expect("handshake messages fit");
        let next_resend = now.add_ms(HANDSHAKE_RESEND_MS);
        let p = Pending {
            addr,
            started: now,
            state,
            last,
            last_kind,
            hello,
            next_resend,
        };
        if self.pending.push(p).is_err() {
            self.counters.handshakes_deferred += 1;
            return false;
        }
        true
    }

    /// Ends the session with a peer declared dead. If it only restarted, it lost its session
    /// keys, so the next contact must be a fresh handshake, not frames it can no longer open.
    pub fn forget_peer(&mut self, peer: u64) {
        self.links.retain(|l| l.peer != peer);
    }

    /// Whether `hello` is the Hello this node sent to `from` itself, back again: `from` is this
    /// node's own address. Drops that handshake, which nobody will ever answer.
    pub fn own_hello_returned(&mut self, from: PeerAddr, hello: &[u8]) -> bool {
        let sent = digest(DOMAIN_HELLO, hello);
        let before = self.pending.len();
        self.pending.retain(|p| {
            let initiated = matches!(p.state, PendingState::Handshake(Handshake::AwaitReply(_)));
            !(initiated && p.addr == from && p.hello == sent)
        });
        self.pending.len() < before
    }

    /// Whether a handshake with `addr` is under way (started and not timed out).
    pub fn handshaking(&self, addr: PeerAddr) -> bool {
        self.pending
            .iter()
            .any(|p| p.addr == addr && self.now.since_ms(p.started) < HANDSHAKE_TIMEOUT_MS)
    }

    pub fn has_link(&self, addr: PeerAddr) -> bool {
        self.links.iter().any(|l| l.addr == addr)
    }

    /// Handles a handshake frame; returns the peer if a session was just established.
    pub fn handle_handshake(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        frame: &Frame<'_>,
    ) -> Option<Established> {
        let (msg, sender) = (frame.body(), (frame.sender(), frame.zone()));
        let result = match frame.kind() {
            Kind::Hello => self.handle_hello(sink, from, sender, msg),
            _ => self.continue_handshake(sink, from, sender, msg),
        };
        match result {
            Ok(established) => established,
            Err(r) => {
                self.refuse(r);
                None
            }
        }
    }

    fn handle_hello(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        (sender, zone): (u64, u8),
        hello: &[u8],
    ) -> Result<Option<Established>, CryptoRefusal> {
        let hello_digest = digest(DOMAIN_HELLO, hello);
        let repeat = self.pending.iter().find(|p| {
            p.addr == from
                && p.hello == hello_digest
                && matches!(p.state, PendingState::Handshake(Handshake::AwaitFinish(_)))
        });
        if let Some(p) = repeat {
            // The same Hello again: our Reply was lost. Answer it again, keep the state.
            let reply = p.last.clone();
            self.send_handshake(sink, from, &reply, Kind::Reply);
            return Ok(None);
        }
        let now = self.now;
        self.pending
            .retain(|p| now.since_ms(p.started) < HANDSHAKE_TIMEOUT_MS);
        if self.pending.is_full() && !self.pending.iter().any(|p| p.addr == from) {
            self.counters.handshakes_deferred += 1;
            return Ok(None);
        }
        let (eph, challenge) = fresh(sink);
        let (responder, reply) =
            match Responder::handle_hello(hello, &self.creds, &self.trust, eph, challenge) {
                Ok(r) => r,
                Err(e) => return Err(e.refusal().unwrap_or(CryptoRefusal::MalformedHandshake)),
            };
        let initiating = self.pending.iter().any(|p| {
            p.addr == from && matches!(p.state, PendingState::Handshake(Handshake::AwaitReply(_)))
        });
        // The header names the certified node, or the frame lies about who sent it; and its
        // zone is the certified zone, as every frame of the session's will be.
        if responder.peer().node_id != sender {
            return Err(CryptoRefusal::MalformedHandshake);
        }
        if responder.peer().cert.zone != zone {
            return Err(CryptoRefusal::WrongZone);
        }
        // Simultaneous open: the handshake started by the lower node id continues.
        if initiating && self.id < responder.peer().node_id {
            return Ok(None);
        }
        let state = PendingState::Handshake(Handshake::AwaitFinish(responder));
        if self.insert_pending(from, state, &reply, Kind::Reply, hello_digest) {
            self.send_handshake(sink, from, &reply, Kind::Reply);
        }
        Ok(None)
    }

    fn continue_handshake(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        (sender, zone): (u64, u8),
        msg: &[u8],
    ) -> Result<Option<Established>, CryptoRefusal> {
        let Some(i) = self.pending.iter().position(|p| p.addr == from) else {
            // A Reply or Finish nobody asked for: a replay, or a Finish repeated after success.
            return if MsgKind::of(msg) == Some(MsgKind::Finish) {
                Ok(None)
            } else {
                Err(CryptoRefusal::MalformedHandshake)
            };
        };
        let PendingState::Handshake(hs) = &self.pending[i].state else {
            return Ok(None);
        };
        let done = hs
            .handle(msg, &self.creds, &self.trust)
            .map_err(|e| e.refusal().unwrap_or(CryptoRefusal::MalformedHandshake))?;
        let peer = done.peer;
        if peer.node_id != sender {
            return Err(CryptoRefusal::MalformedHandshake);
        }
        if peer.cert.zone != zone {
            return Err(CryptoRefusal::WrongZone);
        }
        self.install(from, &peer, Session::new(&done.keys));
        let responder = done.send.is_none();
        match done.send {
            Some(finish) => {
                self.send_handshake(sink, from, &finish, Kind::Finish);
                let p = &mut self.pending[i];
                p.state = PendingState::Finished;
                p.last = finish;
                p.last_kind = Kind::Finish;
                p.started = self.now;
                p.next_resend = self.now.add_ms(HANDSHAKE_RESEND_MS);
            }
            None => {
                self.pending.swap_remove(i);
            }
        }
        self.counters.handshakes_completed += 1;
        Ok(Some(Established { peer, responder }))
    }

    fn install(&mut self, addr: PeerAddr, certified: &Peer, session: Session) {
        let peer = certified.node_id;
        self.links.retain(|l| l.peer != peer && l.addr != addr);
        if self.links.is_full() {
            let lru = (0..self.links.len()).min_by_key(|&i| self.links[i].last_rx);
            self.links
                .swap_remove(lru.expect("full table is not empty"));
        }
        let link = Link {
            peer,
            addr,
            issued_at: certified.cert.issued_at,
            node_pk: certified.cert.node_pk,
            zone: certified.cert.zone,
            session,
            last_rx: self.now,
            last_tx: self.now,
            told: None,
        };
        if self.links.push(link).is_err() {
            unreachable!("room made above");
        }
        // One session per peer and per address: a frame's sender or source finds one link.
        assert_eq!(self.links.iter().filter(|l| l.peer == peer).count(), 1);
        assert_eq!(self.links.iter().filter(|l| l.addr == addr).count(), 1);
    }

    /// Opens a sealed frame in place into `plain` (the body region). On success returns who sent
    /// it; on failure nothing changed and the frame is refused.
    /// `known`: `from` is a member's or a join address. Only then does a frame this node cannot
    /// open start a handshake, so spoofed junk from arbitrary addresses costs no handshakes.
    pub fn open(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        known: bool,
        frame: &Frame<'_>,
        plain: &mut [u8; BODY_BYTES_MAX],
    ) -> Result<Opened, Drop> {
        let sender = frame.sender();
        let Some(i) = self.links.iter().position(|l| l.peer == sender) else {
            // The peer believes it has a session: this node restarted or evicted it.
            if known {
                self.ensure_handshake(sink, from);
            }
            return Err(Drop::Crypto(CryptoRefusal::UnknownKey));
        };
        // A sender writes its own certified zone into every header (authenticated below), so a
        // frame claiming another zone than its session's is refused before any cryptography.
        if frame.zone() != self.links[i].zone {
            return Err(Drop::Crypto(CryptoRefusal::WrongZone));
        }
        let header: &[u8; HEADER_BYTES] = frame.header().try_into().expect("header length");
        let tag: &[u8; TAG_BYTES] = frame.tag().try_into().expect("tag length");
        plain.copy_from_slice(frame.sealed_body());
        let link = &mut self.links[i];
        if let Err(e) = link
            .session
            .open_in_place(frame.counter(), header, plain, tag)
        {
            let refusal = e.refusal().unwrap_or(CryptoRefusal::BadMac);
            if refusal == CryptoRefusal::BadMac && known {
                // Either tampering, or the peer holds keys from a handshake whose Finish this
                // node never saw. A new handshake settles the second; against the first it costs
                // at most one handshake per address per timeout.
                self.ensure_handshake(sink, from);
            }
            return Err(Drop::Crypto(refusal));
        }
        assert!(
            link.issued_at >= self.trust.revocation_block,
            "revoked links are torn down"
        );
        link.last_rx = self.now;
        link.addr = from;
        let len = frame.body_len();
        if plain[len..].iter().any(|&b| b != 0) {
            return Err(Drop::Padding);
        }
        self.pending
            .retain(|p| !(p.addr == from && matches!(p.state, PendingState::Finished)));
        Ok(Opened {
            sender,
            zone: frame.zone(),
            // A relayed frame carries no block, so it hints at no rotation.
            revocation_block: frame
                .revocation_block()
                .unwrap_or(self.trust.revocation_block),
            len,
        })
    }

    /// Whether to tell `peer` its frames come from `from` now (`Message::Observed`): never told
    /// in this session, told another address, or told longer than `OBSERVED_REFRESH_MS` ago
    /// while no refresh went to any peer for `OBSERVED_REFRESH_GAP_MS`. Marks it told; the
    /// caller sends it.
    pub fn tell_observed(&mut self, peer: u64, from: PeerAddr) -> bool {
        let now = self.now;
        let gap_over = self
            .refreshed
            .is_none_or(|at| now.since_ms(at) >= OBSERVED_REFRESH_GAP_MS);
        let Some(link) = self.links.iter_mut().find(|l| l.peer == peer) else {
            return false;
        };
        let (news, refresh) = match link.told {
            Some((a, at)) if a == from => {
                (false, gap_over && now.since_ms(at) >= OBSERVED_REFRESH_MS)
            }
            _ => (true, false),
        };
        if news || refresh {
            link.told = Some((from, now));
        }
        if refresh {
            self.refreshed = Some(now);
            self.counters.observed_refreshes += 1;
        }
        news || refresh
    }

    /// Raises the RevocationBlock: sessions with peers certified below it end now.
    pub fn revoke_below(&mut self, height: u64) {
        assert!(height > self.trust.revocation_block);
        self.trust.revocation_block = height;
        self.links.retain(|l| l.issued_at >= height);
        self.pending.clear();
        assert!(self
            .links
            .iter()
            .all(|l| l.issued_at >= self.trust.revocation_block));
    }

    /// A new certificate for this node (after a rotation). Existing sessions stay; new
    /// handshakes present the new certificate.
    pub fn install_credentials(&mut self, creds: Credentials) {
        assert_eq!(
            creds.node_id(),
            self.id,
            "a node keeps its key across rotations"
        );
        self.creds = creds;
        self.pending.clear();
    }
}

/// A fresh ephemeral secret and challenge from the caller's random source.
fn fresh(sink: &mut impl Sink) -> ([u8; 32], [u8; 32]) {
    let mut eph = [0u8; 32];
    let mut challenge = [0u8; 32];
    sink.fill_random(&mut eph);
    sink.fill_random(&mut challenge);
    (eph, challenge)
}
