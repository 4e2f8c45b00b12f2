//! The tunnel: how `myco proxy` (the client, holding an access credential's key) and a box's
//! `myco-d` (proving its node identity with its certificate) agree on keys over one TCP
//! connection, and the sealed records that then carry the box's HTTP API.
//!
//! Every message on the stream is `length: u16 big-endian || bytes`, the length never 0.
//!
//! ```text
//! Client                                                 Box
//! Open   = 0x11 || postcard{access, eph_c, challenge_c}  ->
//!                                                        <- Accept = 0x12 || postcard{cert, eph_b,
//!                                                                    challenge_b} || sig_b
//! Prove  = 0x13 || sig_c                                 ->
//!                                                        (or Refuse = 0x14 || reason, then close)
//!
//! T_accept = SHA-512("myco-tunnel-accept" || Open || Accept without sig_b)   sig_b by the node key
//! T_prove  = SHA-512("myco-tunnel-prove"  || Open || Accept)                 sig_c by the holder key
//! OKM      = HKDF-SHA-512(salt = T_prove, ikm = X25519(eph_c, eph_b), info = "myco-tunnel-v1")
//! key client->box = OKM[0..32], key box->client = OKM[32..64]
//! ```
//!
//! The shape is the wire's handshake (`handshake.rs`) with the initiator's certificate replaced by
//! an access credential: each side signs a transcript holding the other's fresh challenge and
//! ephemeral key, so a recorded Open, Accept or Prove is worth nothing in another connection, and
//! the domains differ from the wire's so no signature crosses over. The box checks the credential
//! (operator, signature, RevocationBlock, expiry, scope) at Open and again at Prove; the client
//! checks the box's certificate under the credential's operator key, and its node id if told one.
//!
//! Records: `length || ChaCha20-Poly1305(plaintext) || tag`, the length prefix as associated data,
//! the nonce 4 zero bytes and the record's counter (little-endian), which is implicit: both sides
//! count records from 0 per direction. TCP delivers in order, so a replayed, dropped, reordered or
//! altered record fails its tag, and the tunnel is closed: there is no window to keep.

use crate::config::{
    ACCESS_BYTES_MAX, CERT_BYTES_MAX, CHALLENGE_BYTES, EPHEMERAL_BYTES, SIGNATURE_BYTES, TAG_BYTES,
};
use crate::crypto::access::{still_valid, Access, AccessBody, AccessError};
use crate::crypto::cert::{Cert, CertBody, CertError};
use crate::crypto::handshake::{
    assert_random, derive_keys_for, Credentials, HandshakeError, Trust,
};
use crate::crypto::kdf::{sha512, HASH_BYTES};
use crate::crypto::keys::SigningKey;
use crate::crypto::signed::decode_exact;
use crate::crypto::{DOMAIN_TUNNEL_ACCEPT, DOMAIN_TUNNEL_KEYS, DOMAIN_TUNNEL_PROVE};
use chacha20poly1305::aead::array::Array;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as EphemeralPublic, StaticSecret};

/// The length prefix of every message and record.
pub const LENGTH_BYTES: usize = 2;
/// The largest handshake message (an Accept or an Open; a test builds both at their worst).
pub const TUNNEL_HANDSHAKE_BYTES_MAX: usize = 256;
/// A record's plaintext at most: one read of the API's answer or the client's request.
pub const RECORD_PLAINTEXT_MAX: usize = 16 * 1024;
/// A record after its length prefix: ciphertext and tag.
pub const RECORD_BYTES_MAX: usize = RECORD_PLAINTEXT_MAX + TAG_BYTES;
/// A whole record with its prefix: the size of a buffer that holds any one.
pub const RECORD_FRAME_BYTES_MAX: usize = LENGTH_BYTES + RECORD_BYTES_MAX;

// Open: kind, credential with its 2-byte length varint, ephemeral key, challenge. Accept: kind,
// certificate with its 1-byte length varint, ephemeral key, challenge, signature.
const _: () = assert!(
    1 + 2 + ACCESS_BYTES_MAX + EPHEMERAL_BYTES + CHALLENGE_BYTES <= TUNNEL_HANDSHAKE_BYTES_MAX
);
const _: () = assert!(
    1 + 1 + CERT_BYTES_MAX + EPHEMERAL_BYTES + CHALLENGE_BYTES + SIGNATURE_BYTES
        <= TUNNEL_HANDSHAKE_BYTES_MAX
);
const _: () = assert!(RECORD_BYTES_MAX <= u16::MAX as usize);

/// The first byte of each handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TunnelKind {
    Open = 0x11,
    Accept = 0x12,
    Prove = 0x13,
    Refuse = 0x14,
}

impl TunnelKind {
    fn from_u8(b: u8) -> Option<TunnelKind> {
        match b {
            0x11 => Some(TunnelKind::Open),
            0x12 => Some(TunnelKind::Accept),
            0x13 => Some(TunnelKind::Prove),
            0x14 => Some(TunnelKind::Refuse),
            _ => None,
        }
    }
}

/// An encoded handshake message, without its length prefix.
pub type TunnelMsg = heapless::Vec<u8, TUNNEL_HANDSHAKE_BYTES_MAX>;

#[derive(Serialize, Deserialize)]
struct OpenBody<'a> {
    access: &'a [u8],
    eph: [u8; EPHEMERAL_BYTES],
    challenge: [u8; CHALLENGE_BYTES],
}

#[derive(Serialize, Deserialize)]
struct AcceptBody<'a> {
    cert: &'a [u8],
    eph: [u8; EPHEMERAL_BYTES],
    challenge: [u8; CHALLENGE_BYTES],
}

/// Why the box refused a tunnel, as the one byte of its Refuse message, so the client can tell
/// its operator what to do. It says nothing the client did not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RefuseReason {
    Malformed = 1,
    UnknownKey = 2,
    BadSignature = 3,
    Revoked = 4,
    Expired = 5,
    WrongNode = 6,
    /// Every tunnel slot is taken.
    Busy = 7,
    /// The box's own certificate is not valid now; nothing the client can change.
    Unavailable = 8,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 8] = [
        RefuseReason::Malformed,
        RefuseReason::UnknownKey,
        RefuseReason::BadSignature,
        RefuseReason::Revoked,
        RefuseReason::Expired,
        RefuseReason::WrongNode,
        RefuseReason::Busy,
        RefuseReason::Unavailable,
    ];

    fn from_u8(b: u8) -> Option<RefuseReason> {
        RefuseReason::ALL.into_iter().find(|r| *r as u8 == b)
    }

    /// The metric label of this refusal.
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::Malformed => "malformed",
            RefuseReason::UnknownKey => "unknown_key",
            RefuseReason::BadSignature => "bad_signature",
            RefuseReason::Revoked => "revoked",
            RefuseReason::Expired => "expired",
            RefuseReason::WrongNode => "wrong_node",
            RefuseReason::Busy => "busy",
            RefuseReason::Unavailable => "unavailable",
        }
    }

    /// What the client's operator reads.
    pub fn message(self) -> &'static str {
        match self {
            RefuseReason::Malformed => "the box could not read the handshake",
            RefuseReason::UnknownKey => "the credential is not from this cluster's operator",
            RefuseReason::BadSignature => "a signature did not verify",
            RefuseReason::Revoked => "the credential was issued below the box's RevocationBlock",
            RefuseReason::Expired => "the credential has expired by the box's clock",
            RefuseReason::WrongNode => "the credential is for another box",
            RefuseReason::Busy => "every tunnel slot of the box is taken; try again later",
            RefuseReason::Unavailable => "the box's own certificate is not valid now",
        }
    }

    /// `0x14 || reason`: what the box sends before closing.
    pub fn encode(self) -> [u8; 2] {
        [TunnelKind::Refuse as u8, self as u8]
    }
}

/// Why a tunnel message or record was refused. Nothing changed: a responder still awaits a valid
/// Prove, a client a valid Accept, a session's counters did not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// Another message came than the one awaited.
    Unexpected {
        expected: TunnelKind,
        got: TunnelKind,
    },
    /// Does not decode: unknown kind, bad or non-canonical encoding, wrong length.
    Malformed,
    /// The client's credential fails on this box.
    Access(AccessError),
    /// The box's certificate fails under the credential's operator (the client's check).
    Cert(CertError),
    /// The box is another node than the one the client asked for.
    WrongNode { expected: u64, got: u64 },
    /// A transcript signature does not verify: a replayed or altered message, or a party holding
    /// a credential or certificate but not its key.
    BadSignature,
    /// The peer's ephemeral key is a low-order point.
    WeakKey,
    /// The box refused the tunnel (the client's view).
    Refused(RefuseReason),
    /// This box's own certificate fails under its current trust. Not the client's fault.
    OwnCert,
    /// A record's tag did not verify: altered, replayed, reordered or dropped before it.
    BadRecord,
    /// Every counter of this direction was used.
    CounterExhausted,
}

impl TunnelError {
    /// The byte a box sends back for this refusal.
    pub fn reason(self) -> RefuseReason {
        match self {
            TunnelError::Access(a) => match a {
                AccessError::TooLong | AccessError::Truncated | AccessError::Malformed => {
                    RefuseReason::Malformed
                }
                AccessError::UnknownKey => RefuseReason::UnknownKey,
                AccessError::BadSignature => RefuseReason::BadSignature,
                AccessError::Revoked { .. } => RefuseReason::Revoked,
                AccessError::Expired { .. } => RefuseReason::Expired,
                AccessError::WrongNode { .. } => RefuseReason::WrongNode,
            },
            TunnelError::BadSignature => RefuseReason::BadSignature,
            TunnelError::OwnCert => RefuseReason::Unavailable,
            TunnelError::Refused(r) => r,
            _ => RefuseReason::Malformed,
        }
    }
}

/// The length a prefix announces, if it is one a message of at most `max` bytes may have.
pub fn frame_len(prefix: [u8; LENGTH_BYTES], max: usize) -> Result<usize, TunnelError> {
    let n = u16::from_be_bytes(prefix) as usize;
    if n == 0 || n > max {
        return Err(TunnelError::Malformed);
    }
    Ok(n)
}

/// Splits off the kind byte. A Refuse where another message was awaited is the box's answer.
fn expect(msg: &[u8], expected: TunnelKind) -> Result<&[u8], TunnelError> {
    let (&kind, rest) = msg.split_first().ok_or(TunnelError::Malformed)?;
    let got = TunnelKind::from_u8(kind).ok_or(TunnelError::Malformed)?;
    if got == expected {
        return Ok(rest);
    }
    if got == TunnelKind::Refuse && expected == TunnelKind::Accept {
        return match rest {
            [b] => Err(TunnelError::Refused(
                RefuseReason::from_u8(*b).ok_or(TunnelError::Malformed)?,
            )),
            _ => Err(TunnelError::Malformed),
        };
    }
    Err(TunnelError::Unexpected { expected, got })
}

fn push(msg: &mut TunnelMsg, bytes: &[u8]) {
    msg.extend_from_slice(bytes)
        .expect("tunnel messages fit TUNNEL_HANDSHAKE_BYTES_MAX (asserted)");
}

fn push_postcard<T: Serialize>(msg: &mut TunnelMsg, body: &T) {
    let mut buf = [0u8; TUNNEL_HANDSHAKE_BYTES_MAX];
    let used = postcard::to_slice(body, &mut buf)
        .expect("tunnel messages fit TUNNEL_HANDSHAKE_BYTES_MAX (asserted)")
        .len();
    push(msg, &buf[..used]);
}

fn keys(
    secret: &StaticSecret,
    peer_eph: [u8; EPHEMERAL_BYTES],
    t_prove: &[u8; HASH_BYTES],
) -> Result<([u8; 32], [u8; 32]), TunnelError> {
    derive_keys_for(DOMAIN_TUNNEL_KEYS, secret, peer_eph, t_prove).map_err(|e| match e {
        HandshakeError::WeakKey => TunnelError::WeakKey,
        _ => TunnelError::Malformed,
    })
}

/// The box's side after a valid Open: it awaits the Prove, and holds the keys until then.
pub struct TunnelResponder {
    c2b: [u8; 32],
    b2c: [u8; 32],
    t_prove: [u8; HASH_BYTES],
    access: AccessBody,
}

impl TunnelResponder {
    /// Answers an Open on the box of `me` under `trust`, at Unix time `now_s`. `eph_secret` and
    /// `challenge` must be fresh from the OS random source.
    pub fn handle_open(
        open: &[u8],
        me: &Credentials,
        trust: &Trust,
        now_s: u64,
        eph_secret: [u8; 32],
        challenge: [u8; CHALLENGE_BYTES],
    ) -> Result<(TunnelResponder, TunnelMsg), TunnelError> {
        assert_random(&eph_secret);
        assert_random(&challenge);
        if me.operator() != trust.operator || me.cert().issued_at < trust.revocation_block {
            return Err(TunnelError::OwnCert);
        }
        let rest = expect(open, TunnelKind::Open)?;
        let body = decode_exact::<OpenBody<'_>, TUNNEL_HANDSHAKE_BYTES_MAX>(rest)
            .ok_or(TunnelError::Malformed)?;
        let access = Access::decode(body.access).map_err(TunnelError::Access)?;
        access
            .verify(&trust.operator, trust.revocation_block, now_s, me.node_id())
            .map_err(TunnelError::Access)?;
        let eph = StaticSecret::from(eph_secret);
        let mut accept = TunnelMsg::new();
        push(&mut accept, &[TunnelKind::Accept as u8]);
        push_postcard(
            &mut accept,
            &AcceptBody {
                cert: me.cert_bytes(),
                eph: EphemeralPublic::from(&eph).to_bytes(),
                challenge,
            },
        );
        let t_accept = sha512(&[DOMAIN_TUNNEL_ACCEPT, open, &accept]);
        push(&mut accept, &me.sign(&t_accept));
        let t_prove = sha512(&[DOMAIN_TUNNEL_PROVE, open, &accept]);
        let (c2b, b2c) = keys(&eph, body.eph, &t_prove)?;
        let responder = TunnelResponder {
            c2b,
            b2c,
            t_prove,
            access: access.body,
        };
        Ok((responder, accept))
    }

    /// The credential the client showed; its holder is proven only once the Prove verifies.
    pub fn access(&self) -> &AccessBody {
        &self.access
    }

    /// Checks the Prove: the holder's signature over the whole transcript, and the credential
    /// again under the current RevocationBlock and time. On success the tunnel is open.
    pub fn handle_prove(
        &self,
        prove: &[u8],
        trust: &Trust,
        now_s: u64,
    ) -> Result<TunnelSession, TunnelError> {
        let rest = expect(prove, TunnelKind::Prove)?;
        let sig: &[u8; SIGNATURE_BYTES] = rest.try_into().map_err(|_| TunnelError::Malformed)?;
        still_valid(&self.access, trust.revocation_block, now_s).map_err(TunnelError::Access)?;
        if !self.access.holder().verify(&self.t_prove, sig) {
            return Err(TunnelError::BadSignature);
        }
        Ok(TunnelSession::new(&self.b2c, &self.c2b))
    }
}

/// The client's side after sending its Open: it awaits the Accept.
pub struct TunnelClient {
    eph: StaticSecret,
    open: TunnelMsg,
    access: AccessBody,
    node: Option<u64>,
}

impl TunnelClient {
    /// Starts a tunnel with the credential `access` for `holder`'s key, to the box `node` if
    /// given (any box of the credential's cluster otherwise). Refuses a credential that does not
    /// decode, is not for `holder`, or whose signature fails.
    pub fn new(
        access: &[u8],
        holder: &SigningKey,
        node: Option<u64>,
        eph_secret: [u8; 32],
        challenge: [u8; CHALLENGE_BYTES],
    ) -> Result<(TunnelClient, TunnelMsg), TunnelError> {
        assert_random(&eph_secret);
        assert_random(&challenge);
        let decoded = Access::decode(access).map_err(TunnelError::Access)?;
        decoded.verify_signature().map_err(TunnelError::Access)?;
        if decoded.body.holder_pk != holder.public_key().0 {
            return Err(TunnelError::Access(AccessError::UnknownKey));
        }
        let eph = StaticSecret::from(eph_secret);
        let mut open = TunnelMsg::new();
        push(&mut open, &[TunnelKind::Open as u8]);
        push_postcard(
            &mut open,
            &OpenBody {
                access,
                eph: EphemeralPublic::from(&eph).to_bytes(),
                challenge,
            },
        );
        let client = TunnelClient {
            eph,
            open: open.clone(),
            access: decoded.body,
            node,
        };
        Ok((client, open))
    }

    /// Checks the Accept (or reads a Refuse): the box's certificate under the credential's
    /// operator key, not issued below the credential's height, for the node asked for, and its
    /// transcript signature. Returns the session, the Prove to send and the box's certificate.
    pub fn handle_accept(
        &self,
        accept: &[u8],
        holder: &SigningKey,
    ) -> Result<(TunnelSession, TunnelMsg, CertBody), TunnelError> {
        let rest = expect(accept, TunnelKind::Accept)?;
        let split = rest
            .len()
            .checked_sub(SIGNATURE_BYTES)
            .ok_or(TunnelError::Malformed)?;
        let body = decode_exact::<AcceptBody<'_>, TUNNEL_HANDSHAKE_BYTES_MAX>(&rest[..split])
            .ok_or(TunnelError::Malformed)?;
        let sig: &[u8; SIGNATURE_BYTES] = rest[split..].try_into().expect("split above");
        let cert = Cert::decode(body.cert).map_err(TunnelError::Cert)?;
        cert.verify(&self.access.operator(), self.access.issued_at)
            .map_err(TunnelError::Cert)?;
        if let Some(expected) = self.node {
            if cert.node_id() != expected {
                let got = cert.node_id();
                return Err(TunnelError::WrongNode { expected, got });
            }
        }
        let unsigned = &accept[..accept.len() - SIGNATURE_BYTES];
        let t_accept = sha512(&[DOMAIN_TUNNEL_ACCEPT, &self.open, unsigned]);
        if !cert.body.node_pk().verify(&t_accept, sig) {
            return Err(TunnelError::BadSignature);
        }
        let t_prove = sha512(&[DOMAIN_TUNNEL_PROVE, &self.open, accept]);
        let (c2b, b2c) = keys(&self.eph, body.eph, &t_prove)?;
        let mut prove = TunnelMsg::new();
        push(&mut prove, &[TunnelKind::Prove as u8]);
        push(&mut prove, &holder.sign(&t_prove));
        Ok((TunnelSession::new(&c2b, &b2c), prove, cert.body))
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Array(n)
}

/// An open tunnel's two directions. Each side counts the records it sealed and opened.
pub struct TunnelSession {
    tx: ChaCha20Poly1305,
    rx: ChaCha20Poly1305,
    tx_next: u64,
    rx_next: u64,
}

impl TunnelSession {
    fn new(tx: &[u8; 32], rx: &[u8; 32]) -> TunnelSession {
        assert_ne!(tx, rx);
        TunnelSession {
            tx: ChaCha20Poly1305::new(&Array(*tx)),
            rx: ChaCha20Poly1305::new(&Array(*rx)),
            tx_next: 0,
            rx_next: 0,
        }
    }

    /// Seals `buf[LENGTH_BYTES..LENGTH_BYTES + len]` in place: writes the length prefix before
    /// and the tag after, and returns the record's whole length. `buf` must have room for the
    /// tag; `len` is 1..=`RECORD_PLAINTEXT_MAX`.
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, TunnelError> {
        assert!(
            (1..=RECORD_PLAINTEXT_MAX).contains(&len),
            "a record's plaintext"
        );
        if self.tx_next == u64::MAX {
            return Err(TunnelError::CounterExhausted);
        }
        let total = LENGTH_BYTES + len + TAG_BYTES;
        let prefix = ((len + TAG_BYTES) as u16).to_be_bytes();
        buf[..LENGTH_BYTES].copy_from_slice(&prefix);
        let (head, rest) = buf[..total].split_at_mut(LENGTH_BYTES);
        let (plain, tag) = rest.split_at_mut(len);
        let t = self
            .tx
            .encrypt_inout_detached(&nonce(self.tx_next), head, plain.into())
            .expect("a record is far below ChaCha20's length limit");
        tag.copy_from_slice(&t.0);
        self.tx_next += 1;
        Ok(total)
    }

    /// Opens one whole record (its prefix included) in place and returns its plaintext. The
    /// prefix must announce exactly the rest of `record`. On error nothing changed.
    pub fn open<'b>(&mut self, record: &'b mut [u8]) -> Result<&'b [u8], TunnelError> {
        if record.len() < LENGTH_BYTES + TAG_BYTES + 1 || record.len() > RECORD_FRAME_BYTES_MAX {
            return Err(TunnelError::Malformed);
        }
        let prefix = [record[0], record[1]];
        if frame_len(prefix, RECORD_BYTES_MAX)? != record.len() - LENGTH_BYTES {
            return Err(TunnelError::Malformed);
        }
        let (head, rest) = record.split_at_mut(LENGTH_BYTES);
        let (cipher, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);
        let tag: [u8; TAG_BYTES] = (&*tag).try_into().expect("split at TAG_BYTES");
        self.rx
            .decrypt_inout_detached(&nonce(self.rx_next), head, cipher.into(), &Array(tag))
            .map_err(|_| TunnelError::BadRecord)?;
        self.rx_next += 1;
        Ok(cipher)
    }
}

#[cfg(test)]
mod tests;
