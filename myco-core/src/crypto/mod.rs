//! Cluster security: identities, certificates, revocation, the handshake and sealed sessions.
//!
//! Trust model. One operator key (Ed25519) is the root of a cluster. It signs node certificates
//! (node public key, zone, arch, issue height), revocations (the cluster-wide RevocationBlock) and
//! every desired-state entry. Each node has its own Ed25519 key; two nodes talk only after a
//! handshake in which each proves possession of its certified key over a transcript holding the
//! other's fresh challenge and X25519 ephemeral key. Frames after the handshake are sealed with
//! ChaCha20-Poly1305, one key per direction, the cleartext header as associated data and a counter
//! nonce checked against a sliding replay window. `docs/protocol.md` is the byte-level account.
//!
//! Threat model in short (the protocol document has the full list):
//! - An outside attacker, who can read, drop, replay, reorder and inject datagrams, cannot join,
//!   read gossip, inject or alter an entry, replay a frame or a handshake, or cross zones. It can
//!   deny service by dropping traffic, and it sees who talks to whom (certificates and headers are
//!   cleartext).
//! - A stolen node key lets its holder act as that one node (in its zone, at its arch) until the
//!   operator raises the RevocationBlock past the stolen certificate; it never lets it sign
//!   entries, certify keys or read other nodes' sessions, past or future.
//! - A stolen operator key is the whole cluster: it can certify nodes and sign entries. Recovery is
//!   a new cluster key, distributed out of band.
//!
//! Rules every part keeps:
//! - No randomness is drawn here. Ephemeral secrets and challenges are `[u8; 32]` arguments the
//!   caller fills from the OS random source; signatures are deterministic Ed25519.
//! - Every signed byte string is domain-separated (`DOMAIN_*`), so a signature made for one purpose
//!   never verifies for another. Entry signatures cover the entry body alone: an entry body starts
//!   with its name length (1..=63), and every domain string starts with a zero byte, so the two can
//!   never be mistaken for each other.
//! - Every message has exactly one encoding: decoders refuse trailing bytes and re-encode what they
//!   read to refuse overlong varints.
//! - Refusing peer input never changes state; each error type says so.

pub mod access;
pub mod cert;
pub mod entry;
pub mod handshake;
pub mod kdf;
pub mod keys;
pub mod revocation;
pub mod session;
pub(crate) mod signed;
pub mod tunnel;

pub use cert::{may_bridge, signature_holds, BridgeScope, Cert, CertBody, CertCheck, CertError};
pub use entry::{check_entry, sign_entry, sign_entry_body, verify_entry, EntrySignatureError};
pub use handshake::{
    Credentials, Established, Handshake, HandshakeError, HandshakeMsg, Initiator, MsgKind, Peer,
    Responder, SessionKeys, Trust,
};
pub use keys::{key_id, node_id, PublicKey, SigningKey};
pub use revocation::{Revocation, RevocationBody, RevocationError};
pub use session::{SealCounter, Session, SessionError};

/// Domain of a certificate signature: `DOMAIN_CERT || postcard(CertBody)`.
pub const DOMAIN_CERT: &[u8] = b"\0myco-cert-v1";
/// Domain of a revocation signature: `DOMAIN_REVOCATION || postcard(RevocationBody)`.
pub const DOMAIN_REVOCATION: &[u8] = b"\0myco-revocation-v1";
/// Domains of the two handshake transcript hashes and of the session key derivation.
pub const DOMAIN_HS_REPLY: &[u8] = b"myco-hs-reply";
pub const DOMAIN_HS_FINISH: &[u8] = b"myco-hs-finish";
pub const DOMAIN_SESSION_KEYS: &[u8] = b"myco-session-v1";
/// Domain of an access credential's signature: `DOMAIN_ACCESS || postcard(AccessBody)`.
pub const DOMAIN_ACCESS: &[u8] = b"\0myco-access-v1";
/// Domains of the tunnel handshake's two transcript hashes and of its key derivation: distinct
/// from the wire's, so no signature or key of one can serve the other.
pub const DOMAIN_TUNNEL_ACCEPT: &[u8] = b"myco-tunnel-accept";
pub const DOMAIN_TUNNEL_PROVE: &[u8] = b"myco-tunnel-prove";
pub const DOMAIN_TUNNEL_KEYS: &[u8] = b"myco-tunnel-v1";

/// Why a frame, a handshake message or an entry was refused: one counter each for the metrics the
/// daemon exports. A refusal never changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A sealed frame's tag did not verify: tampered, or sealed under another key.
    BadMac,
    /// A sealed frame's counter was already accepted or is older than the replay window.
    Replay,
    /// Signed by a key this cluster does not trust (a foreign operator, or a self-signed cert).
    UnknownKey,
    /// A certificate issued below the RevocationBlock.
    RevokedKey,
    /// A signature (certificate, transcript, entry or revocation) did not verify.
    BadSignature,
    /// A peer certified for another zone.
    WrongZone,
    /// A handshake message that does not decode, comes out of order, reflects this node's own
    /// identity, or carries a weak ephemeral key.
    MalformedHandshake,
    /// A node of another zone asked a bridge-capable node for a bridge session the two
    /// certificates do not grant.
    NotBridge,
}

impl Refusal {
    /// Every refusal, in a fixed order, so metrics can be laid out as an array.
    pub const ALL: [Refusal; 8] = [
        Refusal::BadMac,
        Refusal::Replay,
        Refusal::UnknownKey,
        Refusal::RevokedKey,
        Refusal::BadSignature,
        Refusal::WrongZone,
        Refusal::MalformedHandshake,
        Refusal::NotBridge,
    ];

    /// The metric name the daemon exports for this refusal.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::BadMac => "bad_mac",
            Refusal::Replay => "replay",
            Refusal::UnknownKey => "unknown_key",
            Refusal::RevokedKey => "revoked_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongZone => "wrong_zone",
            Refusal::MalformedHandshake => "malformed_handshake",
            Refusal::NotBridge => "not_bridge",
        }
    }

    /// The position of this refusal in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `index` is the position in `ALL`, so a metrics array indexed by it counts each refusal in
    /// its own slot, and names are distinct.
    #[test]
    fn refusal_index_matches_all() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            for q in &Refusal::ALL[..i] {
                assert_ne!(q.name(), r.name());
            }
        }
    }

    /// No domain string is a prefix of another, and the signature domains start with a zero byte,
    /// which no entry body can start with.
    #[test]
    fn domains_are_prefix_free() {
        let all = [
            DOMAIN_CERT,
            DOMAIN_REVOCATION,
            DOMAIN_HS_REPLY,
            DOMAIN_HS_FINISH,
            DOMAIN_SESSION_KEYS,
            DOMAIN_ACCESS,
            DOMAIN_TUNNEL_ACCEPT,
            DOMAIN_TUNNEL_PROVE,
            DOMAIN_TUNNEL_KEYS,
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} prefixes {b:?}");
                }
            }
        }
        assert_eq!(DOMAIN_CERT[0], 0);
        assert_eq!(DOMAIN_REVOCATION[0], 0);
        assert_eq!(DOMAIN_ACCESS[0], 0);
    }
}
