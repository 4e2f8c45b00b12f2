//! The handshake: three messages in which two certified nodes prove their keys to each other and
//! agree on session keys (SIGMA-style signed Diffie-Hellman).
//!
//! ```text
//! Initiator                                              Responder
//! Hello  = 2 || postcard{cert_i, eph_i, challenge_i}   ->
//!                                                      <- Reply = 3 || postcard{cert_r, eph_r,
//!                                                                   challenge_r} || sig_r
//! Finish = 4 || sig_i                                  ->
//!
//! T_reply  = SHA-512("myco-hs-reply"  || Hello || Reply without sig_r)   sig_r = Ed25519(r, T_reply)
//! T_finish = SHA-512("myco-hs-finish" || Hello || Reply)                 sig_i = Ed25519(i, T_finish)
//! OKM      = HKDF-SHA-512(salt = T_finish, ikm = X25519(eph_i, eph_r), info = "myco-session-v1")
//! key initiator->responder = OKM[0..32], key responder->initiator = OKM[32..64]
//! ```
//!
//! Each side signs a transcript holding the other side's fresh challenge and ephemeral key, so a
//! recorded handshake cannot be replayed: a replayed Hello gets a Reply with a fresh challenge the
//! attacker cannot sign a Finish for, and a replayed Reply or Finish does not cover the new
//! transcript. Both signatures also cover both certificates, so neither side can be talked into
//! binding the session to a third identity. Both sides check the peer's certificate against the
//! operator key, the current RevocationBlock and the zone the handshake runs in.
//!
//! A handshake is a value per expected message: an [`Initiator`] awaits a Reply, a [`Responder`]
//! awaits a Finish, and [`Handshake`] holds either. A responder keeps no state until a valid Hello
//! arrives. Refusing a message never changes state: the handshake keeps waiting for a valid one.

use crate::config::{
    CERT_BYTES_MAX, CHALLENGE_BYTES, EPHEMERAL_BYTES, HANDSHAKE_BYTES_MAX, SIGNATURE_BYTES,
};
use crate::crypto::cert::{may_bridge, signature_holds, Cert, CertBody, CertCheck, CertError};
use crate::crypto::kdf::{hkdf_sha512_64, sha512, HASH_BYTES};
use crate::crypto::keys::{PublicKey, SigningKey};
use crate::crypto::signed::decode_exact;
use crate::crypto::{Refusal, DOMAIN_HS_FINISH, DOMAIN_HS_REPLY, DOMAIN_SESSION_KEYS};
use core::fmt;
use heapless::Vec;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as EphemeralPublic, StaticSecret};
use zeroize::Zeroize;

/// The first byte of every handshake message. The values equal the frame kinds that carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgKind {
    Hello = 2,
    Reply = 3,
    Finish = 4,
}

impl MsgKind {
    pub fn from_u8(b: u8) -> Option<MsgKind> {
        match b {
            2 => Some(MsgKind::Hello),
            3 => Some(MsgKind::Reply),
            4 => Some(MsgKind::Finish),
            _ => None,
        }
    }

    /// The kind a message claims to be, from its first byte.
    pub fn of(msg: &[u8]) -> Option<MsgKind> {
        msg.first().copied().and_then(MsgKind::from_u8)
    }
}

/// An encoded handshake message, ready to be a frame body.
pub type HandshakeMsg = Vec<u8, HANDSHAKE_BYTES_MAX>;

#[derive(Serialize, Deserialize)]
struct HelloBody<'a> {
    cert: &'a [u8],
    eph: [u8; EPHEMERAL_BYTES],
    challenge: [u8; CHALLENGE_BYTES],
}

#[derive(Serialize, Deserialize)]
struct ReplyBody<'a> {
    cert: &'a [u8],
    eph: [u8; EPHEMERAL_BYTES],
    challenge: [u8; CHALLENGE_BYTES],
}

const FINISH_BYTES: usize = 1 + SIGNATURE_BYTES;

// The Reply is the largest message (`config` proves it fits a frame body; a test builds it at
// exactly `HANDSHAKE_BYTES_MAX`). The Hello is a Reply without its signature, the Finish smaller.
const _: () = assert!(FINISH_BYTES <= HANDSHAKE_BYTES_MAX);

/// What a handshake is checked against: the cluster's operator key, the current RevocationBlock
/// and the zone this handshake runs in. Both certificates must be for that zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trust {
    pub operator: PublicKey,
    pub revocation_block: u64,
    pub zone: u8,
}

/// This node's identity: its key and the operator's certificate for it.
#[derive(Clone, Debug)]
pub struct Credentials {
    key: SigningKey,
    cert: Vec<u8, CERT_BYTES_MAX>,
    body: CertBody,
    /// The operator key the certificate's signature was verified under, once, in `new`.
    operator: PublicKey,
    /// How peers' certificate signatures are checked ([`signature_holds`] unless told).
    check: CertCheck,
}

impl Credentials {
    /// Pairs a node key with its certificate from `operator`. The certificate must decode, be for
    /// this key and carry the operator's valid signature; the signature is checked here once, and
    /// the RevocationBlock and zone at every handshake, since those change.
    pub fn new(
        key: SigningKey,
        cert: &[u8],
        operator: &PublicKey,
    ) -> Result<Credentials, CertError> {
        let decoded = Cert::decode(cert)?;
        if decoded.body.node_pk != key.public_key().0 {
            return Err(CertError::KeyMismatch);
        }
        decoded.verify(operator, 0)?;
        let body = decoded.body;
        let cert = Vec::from_slice(cert).expect("a decoded cert fits CERT_BYTES_MAX");
        Ok(Credentials {
            key,
            cert,
            body,
            operator: *operator,
            check: signature_holds,
        })
    }

    /// Checks peers' certificate signatures with `check`, which must answer as
    /// [`signature_holds`] does: the simulator's remembers its answers.
    pub fn set_cert_check(&mut self, check: CertCheck) {
        self.check = check;
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The operator key the certificate was verified under.
    pub fn operator(&self) -> PublicKey {
        self.operator
    }

    pub fn node_id(&self) -> u64 {
        self.body.node_id()
    }

    pub fn cert(&self) -> &CertBody {
        &self.body
    }

    /// This node key's signature of `msg`: the tunnel's Accept signs its transcript with it.
    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_BYTES] {
        self.key.sign(msg)
    }

    /// The encoded certificate, as it travels in handshakes.
    pub fn cert_bytes(&self) -> &[u8] {
        &self.cert
    }

    /// Whether this node may handshake under `trust` at all: peers would refuse it otherwise.
    fn check(&self, trust: &Trust) -> Result<(), HandshakeError> {
        if trust.operator != self.operator {
            return Err(HandshakeError::OwnCert(CertError::UnknownKey));
        }
        if self.body.issued_at < trust.revocation_block {
            return Err(HandshakeError::OwnCert(CertError::Revoked {
                issued_at: self.body.issued_at,
                revocation_block: trust.revocation_block,
            }));
        }
        if self.body.zone != trust.zone {
            return Err(HandshakeError::OwnZone {
                certified: self.body.zone,
                expected: trust.zone,
            });
        }
        Ok(())
    }
}

/// The verified peer of a completed (or half-completed) handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Derived from the certified key; frames from this peer must carry it as sender.
    pub node_id: u64,
    pub cert: CertBody,
}

/// The two keys of a session, as seen by the side holding them. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Seals what this side sends.
    pub tx: [u8; 32],
    /// Opens what this side receives.
    pub rx: [u8; 32],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.tx.zeroize();
        self.rx.zeroize();
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

/// Why a handshake message was refused. No error changes state: an initiator still awaits its
/// Reply, a responder its Finish, and a refused Hello creates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// A message of another kind came than the one this state awaits.
    Unexpected { expected: MsgKind, got: MsgKind },
    /// Does not decode: unknown kind, bad or non-canonical encoding, wrong length.
    Malformed,
    /// The peer's certificate was issued by a key this cluster does not trust.
    UnknownKey,
    /// The peer's certificate signature does not verify.
    BadCertSignature,
    /// The peer's certificate was issued below the RevocationBlock.
    Revoked {
        issued_at: u64,
        revocation_block: u64,
    },
    /// The peer is certified for another zone.
    WrongZone { expected: u8, got: u8 },
    /// The peer, of another zone, asked this bridge-capable node for a bridge session that the
    /// two certificates do not grant (docs/protocol.md §8).
    NotBridge { zone: u8 },
    /// The peer's transcript signature does not verify: a replayed or altered message, or an
    /// impostor holding a certificate but not its key.
    BadSignature,
    /// The peer presented this node's own certificate: a reflected message.
    Reflected,
    /// The peer's ephemeral key is a low-order point, so the shared secret would be all zero.
    WeakKey,
    /// This node's own certificate fails under the current trust (revoked or foreign); re-certify
    /// this node. Not the peer's fault.
    OwnCert(CertError),
    /// This node's certificate is for another zone than the handshake's. Not the peer's fault.
    OwnZone { certified: u8, expected: u8 },
}

impl HandshakeError {
    /// The metric a refused peer message counts under; `None` for this node's own configuration
    /// errors.
    pub fn refusal(self) -> Option<Refusal> {
        Some(match self {
            HandshakeError::Unexpected { .. }
            | HandshakeError::Malformed
            | HandshakeError::Reflected
            | HandshakeError::WeakKey => Refusal::MalformedHandshake,
            HandshakeError::UnknownKey => Refusal::UnknownKey,
            HandshakeError::BadCertSignature | HandshakeError::BadSignature => {
                Refusal::BadSignature
            }
            HandshakeError::Revoked { .. } => Refusal::RevokedKey,
            HandshakeError::WrongZone { .. } => Refusal::WrongZone,
            HandshakeError::NotBridge { .. } => Refusal::NotBridge,
            HandshakeError::OwnCert(_) | HandshakeError::OwnZone { .. } => return None,
        })
    }

    fn from_peer_cert(e: CertError) -> HandshakeError {
        match e {
            CertError::TooLong | CertError::Truncated | CertError::Malformed => {
                HandshakeError::Malformed
            }
            CertError::UnknownKey => HandshakeError::UnknownKey,
            CertError::BadSignature | CertError::KeyMismatch => HandshakeError::BadCertSignature,
            CertError::Revoked {
                issued_at,
                revocation_block,
            } => HandshakeError::Revoked {
                issued_at,
                revocation_block,
            },
        }
    }
}

/// Splits off the kind byte, refusing a message of another kind.
fn expect(msg: &[u8], expected: MsgKind) -> Result<&[u8], HandshakeError> {
    let (&kind, rest) = msg.split_first().ok_or(HandshakeError::Malformed)?;
    let got = MsgKind::from_u8(kind).ok_or(HandshakeError::Malformed)?;
    if got != expected {
        return Err(HandshakeError::Unexpected { expected, got });
    }
    Ok(rest)
}

/// A peer may be of this node's zone, or of another zone if both certificates grant a bridge
/// between the two (`cert::may_bridge`). A bridge-capable node counts a refused cross-zone request
/// apart (`NotBridge`), so a bridge asked by nodes that may not bridge shows it.
fn check_zone(me: &CertBody, peer: &CertBody, trust: &Trust) -> Result<(), HandshakeError> {
    if peer.zone == trust.zone || may_bridge(me, peer) {
        return Ok(());
    }
    if me.bridge.is_some() {
        return Err(HandshakeError::NotBridge { zone: peer.zone });
    }
    Err(HandshakeError::WrongZone {
        expected: trust.zone,
        got: peer.zone,
    })
}

/// Verifies the peer's certificate under `trust` and returns who it is.
fn check_peer(cert: &[u8], me: &Credentials, trust: &Trust) -> Result<Peer, HandshakeError> {
    let cert = Cert::decode(cert).map_err(HandshakeError::from_peer_cert)?;
    cert.verify_by(&trust.operator, trust.revocation_block, me.check)
        .map_err(HandshakeError::from_peer_cert)?;
    check_zone(me.cert(), &cert.body, trust)?;
    if cert.body.node_pk == me.public_key().0 {
        return Err(HandshakeError::Reflected);
    }
    Ok(Peer {
        node_id: cert.node_id(),
        cert: cert.body,
    })
}

/// `(initiator->responder, responder->initiator)` keys from the X25519 secret and the transcript.
fn derive_keys(
    secret: &StaticSecret,
    peer_eph: [u8; EPHEMERAL_BYTES],
    finish_transcript: &[u8; HASH_BYTES],
) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    derive_keys_for(DOMAIN_SESSION_KEYS, secret, peer_eph, finish_transcript)
}

/// `derive_keys` under the key-derivation domain `info` (the tunnel's is its own).
pub(crate) fn derive_keys_for(
    info: &[u8],
    secret: &StaticSecret,
    peer_eph: [u8; EPHEMERAL_BYTES],
    finish_transcript: &[u8; HASH_BYTES],
) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    let shared = secret.diffie_hellman(&EphemeralPublic::from(peer_eph));
    // A low-order point from the peer gives an all-zero secret that anyone can compute.
    if !shared.was_contributory() {
        return Err(HandshakeError::WeakKey);
    }
    let mut okm = hkdf_sha512_64(finish_transcript, shared.as_bytes(), info);
    let mut i2r = [0u8; 32];
    let mut r2i = [0u8; 32];
    i2r.copy_from_slice(&okm[..32]);
    r2i.copy_from_slice(&okm[32..]);
    okm.zeroize();
    assert_ne!(i2r, r2i);
    Ok((i2r, r2i))
}

fn push(msg: &mut HandshakeMsg, bytes: &[u8]) {
    msg.extend_from_slice(bytes)
        .expect("handshake messages fit HANDSHAKE_BYTES_MAX (tested)");
}

/// Appends `postcard(body)` to `msg`.
fn push_postcard<T: Serialize>(msg: &mut HandshakeMsg, body: &T) {
    let mut buf = [0u8; HANDSHAKE_BYTES_MAX];
    let used = postcard::to_slice(body, &mut buf)
        .expect("handshake messages fit HANDSHAKE_BYTES_MAX (tested)")
        .len();
    push(msg, &buf[..used]);
}

/// The caller's randomness must be filled in: an all-zero buffer is an unseeded source, a bug.
pub(crate) fn assert_random(bytes: &[u8; 32]) {
    assert!(bytes.iter().any(|&b| b != 0), "randomness from the caller");
}

/// The side that sent a Hello and awaits the Reply.
pub struct Initiator {
    eph: StaticSecret,
    hello: HandshakeMsg,
    own: PublicKey,
}

impl Initiator {
    /// Starts a handshake: returns the state awaiting the Reply and the Hello to send.
    /// `eph_secret` and `challenge` must be fresh from the OS random source.
    pub fn new(
        me: &Credentials,
        trust: &Trust,
        eph_secret: [u8; 32],
        challenge: [u8; CHALLENGE_BYTES],
    ) -> Result<(Initiator, HandshakeMsg), HandshakeError> {
        assert_random(&eph_secret);
        assert_random(&challenge);
        me.check(trust)?;
        let eph = StaticSecret::from(eph_secret);
        let mut hello = HandshakeMsg::new();
        push(&mut hello, &[MsgKind::Hello as u8]);
        push_postcard(
            &mut hello,
            &HelloBody {
                cert: &me.cert,
                eph: EphemeralPublic::from(&eph).to_bytes(),
                challenge,
            },
        );
        let initiator = Initiator {
            eph,
            hello: hello.clone(),
            own: me.public_key(),
        };
        Ok((initiator, hello))
    }

    pub fn expected(&self) -> MsgKind {
        MsgKind::Reply
    }

    /// Checks the Reply and completes this side: returns the session keys, the Finish to send and
    /// the verified peer. On error this initiator still awaits a valid Reply.
    pub fn handle_reply(
        &self,
        reply: &[u8],
        me: &Credentials,
        trust: &Trust,
    ) -> Result<(SessionKeys, HandshakeMsg, Peer), HandshakeError> {
        assert_eq!(
            me.public_key(),
            self.own,
            "the credentials that sent the Hello"
        );
        let rest = expect(reply, MsgKind::Reply)?;
        let split = rest
            .len()
            .checked_sub(SIGNATURE_BYTES)
            .ok_or(HandshakeError::Malformed)?;
        let body = decode_exact::<ReplyBody<'_>, HANDSHAKE_BYTES_MAX>(&rest[..split])
            .ok_or(HandshakeError::Malformed)?;
        let sig_r: &[u8; SIGNATURE_BYTES] = rest[split..].try_into().expect("split above");
        let peer = check_peer(body.cert, me, trust)?;
        let unsigned = &reply[..reply.len() - SIGNATURE_BYTES];
        let t_reply = sha512(&[DOMAIN_HS_REPLY, &self.hello, unsigned]);
        if !peer.cert.node_pk().verify(&t_reply, sig_r) {
            return Err(HandshakeError::BadSignature);
        }
        let t_finish = sha512(&[DOMAIN_HS_FINISH, &self.hello, reply]);
        let (i2r, r2i) = derive_keys(&self.eph, body.eph, &t_finish)?;
        let mut finish = HandshakeMsg::new();
        push(&mut finish, &[MsgKind::Finish as u8]);
        push(&mut finish, &me.key.sign(&t_finish));
        assert_eq!(finish.len(), FINISH_BYTES);
        Ok((SessionKeys { tx: i2r, rx: r2i }, finish, peer))
    }
}

/// The side that answered a Hello and awaits the Finish. It holds the derived keys and releases
/// them only once the initiator has signed the full transcript.
pub struct Responder {
    keys: SessionKeys,
    t_finish: [u8; HASH_BYTES],
    peer: Peer,
    /// This node's certificate when it answered: the Finish re-checks the zone rule with it.
    me: CertBody,
}

impl Responder {
    /// Answers a Hello: returns the state awaiting the Finish and the Reply to send.
    /// `eph_secret` and `challenge` must be fresh from the OS random source.
    pub fn handle_hello(
        hello: &[u8],
        me: &Credentials,
        trust: &Trust,
        eph_secret: [u8; 32],
        challenge: [u8; CHALLENGE_BYTES],
    ) -> Result<(Responder, HandshakeMsg), HandshakeError> {
        assert_random(&eph_secret);
        assert_random(&challenge);
        me.check(trust)?;
        let rest = expect(hello, MsgKind::Hello)?;
        let body = decode_exact::<HelloBody<'_>, HANDSHAKE_BYTES_MAX>(rest)
            .ok_or(HandshakeError::Malformed)?;
        let peer = check_peer(body.cert, me, trust)?;
        let eph = StaticSecret::from(eph_secret);
        let mut reply = HandshakeMsg::new();
        push(&mut reply, &[MsgKind::Reply as u8]);
        push_postcard(
            &mut reply,
            &ReplyBody {
                cert: &me.cert,
                eph: EphemeralPublic::from(&eph).to_bytes(),
                challenge,
            },
        );
        let t_reply = sha512(&[DOMAIN_HS_REPLY, hello, &reply]);
        push(&mut reply, &me.key.sign(&t_reply));
        let t_finish = sha512(&[DOMAIN_HS_FINISH, hello, &reply]);
        let (i2r, r2i) = derive_keys(&eph, body.eph, &t_finish)?;
        let responder = Responder {
            keys: SessionKeys { tx: r2i, rx: i2r },
            t_finish,
            peer,
            me: *me.cert(),
        };
        Ok((responder, reply))
    }

    pub fn expected(&self) -> MsgKind {
        MsgKind::Finish
    }

    /// The peer as its certificate says; not yet proven until its Finish verifies.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Checks the Finish and completes this side. The peer's certificate is checked again under
    /// the current trust, since the RevocationBlock may have risen since the Hello. On error this
    /// responder still awaits a valid Finish.
    pub fn handle_finish(
        &self,
        finish: &[u8],
        trust: &Trust,
    ) -> Result<(SessionKeys, Peer), HandshakeError> {
        let rest = expect(finish, MsgKind::Finish)?;
        let sig_i: &[u8; SIGNATURE_BYTES] =
            rest.try_into().map_err(|_| HandshakeError::Malformed)?;
        if self.peer.cert.issued_at < trust.revocation_block {
            return Err(HandshakeError::Revoked {
                issued_at: self.peer.cert.issued_at,
                revocation_block: trust.revocation_block,
            });
        }
        check_zone(&self.me, &self.peer.cert, trust)?;
        if !self.peer.cert.node_pk().verify(&self.t_finish, sig_i) {
            return Err(HandshakeError::BadSignature);
        }
        Ok((self.keys.clone(), self.peer))
    }
}

/// A handshake in progress, one variant per message it awaits.
pub enum Handshake {
    /// Sent a Hello; awaits the Reply.
    AwaitReply(Initiator),
    /// Sent a Reply; awaits the Finish.
    AwaitFinish(Responder),
}

/// A completed handshake: the keys for [`crate::crypto::Session::new`], the verified peer, and
/// the last message to send (the initiator's Finish).
pub struct Established {
    pub keys: SessionKeys,
    pub peer: Peer,
    pub send: Option<HandshakeMsg>,
}

impl Handshake {
    pub fn expected(&self) -> MsgKind {
        match self {
            Handshake::AwaitReply(i) => i.expected(),
            Handshake::AwaitFinish(r) => r.expected(),
        }
    }

    /// Feeds the next message. On success the handshake is over and the caller replaces it with a
    /// session; on error nothing changed.
    pub fn handle(
        &self,
        msg: &[u8],
        me: &Credentials,
        trust: &Trust,
    ) -> Result<Established, HandshakeError> {
        match self {
            Handshake::AwaitReply(i) => {
                let (keys, finish, peer) = i.handle_reply(msg, me, trust)?;
                Ok(Established {
                    keys,
                    peer,
                    send: Some(finish),
                })
            }
            Handshake::AwaitFinish(r) => {
                let (keys, peer) = r.handle_finish(msg, trust)?;
                Ok(Established {
                    keys,
                    peer,
                    send: None,
                })
            }
        }
    }
}

/// The credentials of the node key `test_key(seed)`, certified by `operator` for `zone` at
/// `issued_at`: the handshake's and the tunnel's tests build their boxes with it.
#[cfg(test)]
pub(crate) fn test_credentials(
    operator: &SigningKey,
    seed: u8,
    zone: u8,
    issued_at: u64,
) -> Credentials {
    let key = crate::crypto::keys::test_key(seed);
    let cert = crate::crypto::cert::test_cert(operator, &key, zone, issued_at);
    Credentials::new(key, &cert, &operator.public_key()).unwrap()
}

/// Distinct "random" buffers for tests, never all zero (which `assert_random` refuses).
#[cfg(test)]
pub(crate) fn test_random(n: u8) -> [u8; 32] {
    let mut r = [n; 32];
    r[0] = 0xa5;
    r
}

#[cfg(test)]
mod tests;
