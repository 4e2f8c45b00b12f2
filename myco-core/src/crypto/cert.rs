//! Node certificates: the operator's statement "this node key belongs to the cluster, in this zone,
//! on this arch, issued at this RevocationBlock height".
//!
//! Encoding: `postcard(CertBody) || signature[64]`, the signature by the operator key over
//! `DOMAIN_CERT || postcard(CertBody)`. At most `CERT_BYTES_MAX` bytes, one encoding per cert.
//!
//! A certificate is valid under operator key `K` and RevocationBlock `B` when its issuer is
//! `key_id(K)`, its signature verifies under `K`, and `issued_at >= B`. Raising `B` therefore
//! revokes every certificate issued before, and the operator re-certifies the keys it still trusts
//! at the new height.

use crate::config::{CERT_BODY_BYTES_MAX, CERT_BYTES_MAX, SIGNATURE_BYTES};
use crate::crypto::keys::{node_id, PublicKey, SigningKey, PUBLIC_KEY_BYTES};
use crate::crypto::signed::{self, Shape};
use crate::crypto::{Refusal, DOMAIN_CERT};
use crate::schema::entry::Arch;
use serde::{Deserialize, Serialize};

/// Which other zones a node may hold bridge sessions with (docs/protocol.md §8). Encoded after the
/// other fields of a certificate, and only when present, so every certificate issued before bridges
/// existed keeps its bytes and its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BridgeScope {
    /// Every zone.
    All,
    /// Zones 0 to 63, one bit each (bit `z` for zone `z`); never 0, which would grant nothing and
    /// be a second encoding of "not a bridge". Zones from 64 on are bridged with `All` only.
    Zones(u64),
}

impl BridgeScope {
    /// Whether this scope lets its holder hold a bridge session with a node of `zone`.
    pub fn covers(self, zone: u8) -> bool {
        match self {
            BridgeScope::All => true,
            BridgeScope::Zones(bits) => zone < 64 && bits & (1 << zone) != 0,
        }
    }
}

/// Whether nodes certified as `a` and `b` may hold a bridge session: different zones, and each
/// certificate grants bridging to the other's zone. The one rule the handshake and the node apply.
pub fn may_bridge(a: &CertBody, b: &CertBody) -> bool {
    let covers = |c: &CertBody, zone| c.bridge.is_some_and(|s| s.covers(zone));
    a.zone != b.zone && covers(a, b.zone) && covers(b, a.zone)
}

/// What the operator certifies about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertBody {
    /// `key_id` of the operator key that signed this certificate.
    pub issuer: u32,
    /// The node's Ed25519 public key; its `node_id` is derived from it.
    pub node_pk: [u8; PUBLIC_KEY_BYTES],
    pub zone: u8,
    pub arch: Arch,
    pub gpu: bool,
    /// The RevocationBlock height at issue. The certificate is revoked once the block rises above.
    pub issued_at: u64,
    /// `Some`: the node may bridge its zone to the zones of the scope.
    pub bridge: Option<BridgeScope>,
}

/// The wire form of a certificate without a bridge scope: the format certificates had first.
#[derive(Serialize, Deserialize)]
struct Plain {
    issuer: u32,
    node_pk: [u8; PUBLIC_KEY_BYTES],
    zone: u8,
    arch: Arch,
    gpu: bool,
    issued_at: u64,
}

/// The wire form of a bridge's certificate: the plain fields, then the scope (a tuple struct
/// encodes its fields one after the other, so this is the plain encoding with the scope appended).
#[derive(Serialize, Deserialize)]
struct Bridged(Plain, BridgeScope);

impl CertBody {
    fn plain(&self) -> Plain {
        Plain {
            issuer: self.issuer,
            node_pk: self.node_pk,
            zone: self.zone,
            arch: self.arch,
            gpu: self.gpu,
            issued_at: self.issued_at,
        }
    }

    fn from_plain(p: Plain, bridge: Option<BridgeScope>) -> CertBody {
        CertBody {
            issuer: p.issuer,
            node_pk: p.node_pk,
            zone: p.zone,
            arch: p.arch,
            gpu: p.gpu,
            issued_at: p.issued_at,
            bridge,
        }
    }

    pub fn node_id(&self) -> u64 {
        node_id(&self.node_pk)
    }

    pub fn node_pk(&self) -> PublicKey {
        PublicKey(self.node_pk)
    }
}

/// Why a certificate was refused. Refusing never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertError {
    TooLong,
    Truncated,
    /// The body does not decode, has trailing bytes or is not in its one canonical encoding.
    Malformed,
    /// Issued by a key this cluster does not trust (a foreign operator or a self-signed cert).
    UnknownKey,
    /// The operator signature does not verify.
    BadSignature,
    /// Issued below the RevocationBlock.
    Revoked {
        issued_at: u64,
        revocation_block: u64,
    },
    /// The certificate is for another key than the one it was paired with.
    KeyMismatch,
}

impl CertError {
    pub fn refusal(self) -> Refusal {
        match self {
            CertError::TooLong | CertError::Truncated | CertError::Malformed => {
                Refusal::MalformedHandshake
            }
            CertError::UnknownKey => Refusal::UnknownKey,
            CertError::BadSignature | CertError::KeyMismatch => Refusal::BadSignature,
            CertError::Revoked { .. } => Refusal::RevokedKey,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            CertError::TooLong => "certificate is longer than any valid certificate",
            CertError::Truncated => "certificate is shorter than its signature",
            CertError::Malformed => "certificate body does not decode to exactly one encoding",
            CertError::UnknownKey => {
                "certificate was issued by a key this cluster does not trust; certify the node \
                 with the cluster's operator key"
            }
            CertError::BadSignature => "certificate signature does not verify",
            CertError::Revoked { .. } => {
                "certificate was issued below the RevocationBlock; re-certify the node at the \
                 current height"
            }
            CertError::KeyMismatch => "certificate is for another node key",
        }
    }
}

/// A decoded certificate borrowing its bytes. Decoding checks the shape only; call `verify`
/// before trusting any field.
#[derive(Clone, Copy, Debug)]
pub struct Cert<'a> {
    pub body: CertBody,
    /// The signed bytes, `postcard(body)`.
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_BYTES],
}

impl Serialize for CertBody {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.bridge {
            None => self.plain().serialize(s),
            Some(scope) => Bridged(self.plain(), scope).serialize(s),
        }
    }
}

impl<'a> Cert<'a> {
    /// Decodes a certificate. Any byte string is safe to pass. A body is either the plain fields
    /// or the plain fields and a bridge scope; the two cannot both decode the same bytes (one
    /// would leave trailing bytes or run short), so a certificate still has one encoding.
    pub fn decode(bytes: &'a [u8]) -> Result<Cert<'a>, CertError> {
        let shape = |e| match e {
            Shape::TooLong => CertError::TooLong,
            Shape::Truncated => CertError::Truncated,
            Shape::Malformed => CertError::Malformed,
        };
        let (body, signed, signature) =
            match signed::decode::<Plain, CERT_BODY_BYTES_MAX>(bytes).map_err(shape) {
                Ok(d) => (CertBody::from_plain(d.body, None), d.signed, d.signature),
                Err(CertError::Malformed) => {
                    let d = signed::decode::<Bridged, CERT_BODY_BYTES_MAX>(bytes).map_err(shape)?;
                    let Bridged(plain, scope) = d.body;
                    if scope == BridgeScope::Zones(0) {
                        return Err(CertError::Malformed);
                    }
                    (
                        CertBody::from_plain(plain, Some(scope)),
                        d.signed,
                        d.signature,
                    )
                }
                Err(e) => return Err(e),
            };
        Ok(Cert {
            body,
            signed,
            signature,
        })
    }

    /// Checks the certificate against the cluster's operator key and the current RevocationBlock.
    /// The signature is checked before the height, so a forged certificate counts as forged, not
    /// as revoked.
    pub fn verify(&self, operator: &PublicKey, revocation_block: u64) -> Result<(), CertError> {
        self.verify_by(operator, revocation_block, signature_holds)
    }

    /// As [`Cert::verify`], with `holds` answering whether the signature holds: the handshake
    /// asks the node's [`CertCheck`].
    pub fn verify_by(
        &self,
        operator: &PublicKey,
        revocation_block: u64,
        holds: CertCheck,
    ) -> Result<(), CertError> {
        if self.body.issuer != operator.key_id() {
            return Err(CertError::UnknownKey);
        }
        if !holds(self, operator) {
            return Err(CertError::BadSignature);
        }
        if self.body.issued_at < revocation_block {
            return Err(CertError::Revoked {
                issued_at: self.body.issued_at,
                revocation_block,
            });
        }
        Ok(())
    }

    pub fn node_id(&self) -> u64 {
        self.body.node_id()
    }
}

/// Answers whether a certificate's signature holds under an operator key. Handshakes ask
/// [`signature_holds`]; a simulator checking the same few certificates on every node may answer
/// from what it verified before for the same bytes (`Credentials::set_cert_check`).
pub type CertCheck = fn(&Cert<'_>, &PublicKey) -> bool;

/// Verifies `cert`'s signature under `operator` (Ed25519, domain-separated).
pub fn signature_holds(cert: &Cert<'_>, operator: &PublicKey) -> bool {
    signed::verify(operator, DOMAIN_CERT, cert.signed, cert.signature)
}

/// The operator's signature over `body`.
pub fn sign_cert(operator: &SigningKey, body: &CertBody) -> [u8; SIGNATURE_BYTES] {
    signed::sign::<_, CERT_BODY_BYTES_MAX>(operator, DOMAIN_CERT, body)
        .expect("every CertBody fits CERT_BODY_BYTES_MAX (tested)")
}

/// Encodes `body || signature` into `out`, returning the length.
pub fn encode_cert(
    body: &CertBody,
    signature: &[u8; SIGNATURE_BYTES],
    out: &mut [u8; CERT_BYTES_MAX],
) -> usize {
    let n = signed::encode::<_, CERT_BODY_BYTES_MAX>(body, signature, out)
        .expect("every CertBody fits CERT_BODY_BYTES_MAX (tested)");
    assert!(n <= CERT_BYTES_MAX);
    n
}

/// Signs and encodes a certificate: what `myco` runs when the operator admits a node. `body.issuer`
/// must be the operator key's id.
pub fn issue_cert(operator: &SigningKey, body: &CertBody, out: &mut [u8; CERT_BYTES_MAX]) -> usize {
    assert_eq!(
        body.issuer,
        operator.public_key().key_id(),
        "issuer is the signing key"
    );
    let n = encode_cert(body, &sign_cert(operator, body), out);
    let cert = Cert::decode(&out[..n]).expect("a fresh certificate decodes");
    assert!(cert.verify(&operator.public_key(), body.issued_at).is_ok());
    n
}

/// A certificate from `operator` for the node key `node`: what `myco cert` issues, and what
/// tests, the simulator and benchmarks build their identities with.
pub fn certify(
    operator: &SigningKey,
    node: &PublicKey,
    zone: u8,
    arch: Arch,
    gpu: bool,
    issued_at: u64,
) -> heapless::Vec<u8, CERT_BYTES_MAX> {
    let body = CertBody {
        gpu,
        ..plain_body(operator, node, (zone, arch), issued_at)
    };
    issue(operator, &body)
}

/// A bridge's certificate: as `certify` (no GPU), with the zones it may bridge to.
pub fn certify_bridge(
    operator: &SigningKey,
    node: &PublicKey,
    zone: u8,
    arch: Arch,
    scope: BridgeScope,
    issued_at: u64,
) -> heapless::Vec<u8, CERT_BYTES_MAX> {
    let body = CertBody {
        bridge: Some(scope),
        ..plain_body(operator, node, (zone, arch), issued_at)
    };
    issue(operator, &body)
}

/// The body both certificates start from: no GPU, no bridge scope.
fn plain_body(
    operator: &SigningKey,
    node: &PublicKey,
    (zone, arch): (u8, Arch),
    issued_at: u64,
) -> CertBody {
    CertBody {
        issuer: operator.public_key().key_id(),
        node_pk: node.0,
        zone,
        arch,
        gpu: false,
        issued_at,
        bridge: None,
    }
}

fn issue(operator: &SigningKey, body: &CertBody) -> heapless::Vec<u8, CERT_BYTES_MAX> {
    let mut out = [0u8; CERT_BYTES_MAX];
    let n = issue_cert(operator, body, &mut out);
    heapless::Vec::from_slice(&out[..n]).expect("a certificate fits CERT_BYTES_MAX")
}

#[cfg(test)]
pub(crate) fn test_cert(
    operator: &SigningKey,
    node: &SigningKey,
    zone: u8,
    issued_at: u64,
) -> heapless::Vec<u8, CERT_BYTES_MAX> {
    certify(
        operator,
        &node.public_key(),
        zone,
        Arch::X86_64,
        false,
        issued_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::test_key;

    fn body(operator: &SigningKey, node: &SigningKey) -> CertBody {
        CertBody {
            issuer: operator.public_key().key_id(),
            node_pk: node.public_key().0,
            zone: 3,
            arch: Arch::Aarch64,
            gpu: true,
            issued_at: 10,
            bridge: None,
        }
    }

    /// An issued certificate decodes to the same body and verifies at and below its height.
    #[test]
    fn round_trip() {
        let (op, node) = (test_key(1), test_key(2));
        let b = body(&op, &node);
        let mut out = [0u8; CERT_BYTES_MAX];
        let n = issue_cert(&op, &b, &mut out);
        let c = Cert::decode(&out[..n]).unwrap();
        assert_eq!(c.body, b);
        assert_eq!(c.node_id(), node.public_key().node_id());
        assert_eq!(c.verify(&op.public_key(), 0), Ok(()));
        assert_eq!(c.verify(&op.public_key(), 10), Ok(()));
    }

    /// The largest body is exactly `CERT_BODY_BYTES_MAX`, so `CERT_BYTES_MAX` (and the handshake
    /// bound built on it) is tight and sufficient.
    #[test]
    fn maximal_cert_fits_bound_exactly() {
        let b = CertBody {
            issuer: u32::MAX,
            node_pk: [0xff; 32],
            zone: u8::MAX,
            arch: Arch::Aarch64,
            gpu: true,
            issued_at: u64::MAX,
            bridge: Some(BridgeScope::Zones(u64::MAX)),
        };
        let mut out = [0u8; CERT_BYTES_MAX];
        assert_eq!(encode_cert(&b, &[9; 64], &mut out), CERT_BYTES_MAX);
        assert_eq!(Cert::decode(&out).unwrap().body, b);
    }

    /// A certificate issued below the RevocationBlock is refused as revoked.
    #[test]
    fn revoked_refused() {
        let (op, node) = (test_key(1), test_key(2));
        let c = test_cert(&op, &node, 0, 10);
        let cert = Cert::decode(&c).unwrap();
        assert_eq!(
            cert.verify(&op.public_key(), 11),
            Err(CertError::Revoked {
                issued_at: 10,
                revocation_block: 11
            })
        );
        assert_eq!(
            cert.verify(&op.public_key(), 11).unwrap_err().refusal(),
            Refusal::RevokedKey
        );
    }

    /// A certificate from a foreign operator, or self-signed by the node, is refused as signed by
    /// an unknown key; one that claims the cluster's issuer id but is signed by another key is
    /// refused as a bad signature.
    #[test]
    fn foreign_and_self_signed_refused() {
        let (op, node, foreign) = (test_key(1), test_key(2), test_key(3));
        let c = test_cert(&foreign, &node, 0, 0);
        assert_eq!(
            Cert::decode(&c).unwrap().verify(&op.public_key(), 0),
            Err(CertError::UnknownKey)
        );
        let c = test_cert(&node, &node, 0, 0);
        assert_eq!(
            Cert::decode(&c).unwrap().verify(&op.public_key(), 0),
            Err(CertError::UnknownKey)
        );
        // Claims the cluster operator as issuer, signed by the node itself.
        let b = body(&op, &node);
        let mut out = [0u8; CERT_BYTES_MAX];
        let n = encode_cert(&b, &sign_cert(&node, &b), &mut out);
        assert_eq!(
            Cert::decode(&out[..n]).unwrap().verify(&op.public_key(), 0),
            Err(CertError::BadSignature)
        );
    }

    /// Flipping any bit of a certificate makes it either undecodable or unverifiable: no field can
    /// be changed without the operator key.
    #[test]
    fn every_bit_flip_refused() {
        let (op, node) = (test_key(1), test_key(2));
        let c = test_cert(&op, &node, 3, 10);
        for i in 0..c.len() * 8 {
            let mut bad = c.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let verdict = Cert::decode(&bad).and_then(|x| x.verify(&op.public_key(), 0));
            assert!(verdict.is_err(), "bit {i} flipped still verifies");
        }
    }

    /// Trailing, missing and overlong-varint encodings never decode: one encoding per cert. A
    /// byte appended to a plain certificate can read as a bridge scope (`All` is variant 0), but
    /// then the signature is shifted by one byte and the certificate never verifies.
    #[test]
    fn one_encoding_per_cert() {
        let (op, node) = (test_key(1), test_key(2));
        let c = test_cert(&op, &node, 3, 10);
        let mut longer = c.clone();
        longer.push(0).unwrap();
        let verdict = Cert::decode(&longer).and_then(|x| x.verify(&op.public_key(), 0));
        assert!(verdict.is_err());
        assert!(Cert::decode(&c[..c.len() - 1]).is_err());
        assert_eq!(Cert::decode(&c[..10]).err(), Some(CertError::Truncated));
        assert_eq!(
            Cert::decode(&[0u8; CERT_BYTES_MAX + 1]).err(),
            Some(CertError::TooLong)
        );
        // issued_at = 10 re-encoded as the overlong varint [0x8a, 0x00].
        let split = c.len() - SIGNATURE_BYTES;
        assert_eq!(c[split - 1], 10);
        let mut overlong: heapless::Vec<u8, 256> = heapless::Vec::new();
        overlong.extend_from_slice(&c[..split - 1]).unwrap();
        overlong.extend_from_slice(&[0x8a, 0x00]).unwrap();
        overlong.extend_from_slice(&c[split..]).unwrap();
        assert_eq!(Cert::decode(&overlong).err(), Some(CertError::Malformed));
    }

    /// A bridge's certificate round-trips with its scope and verifies; a plain certificate's
    /// bytes are exactly what they were before scopes existed (the scope is absent, not `None`
    /// encoded), so certificates issued before bridges still verify.
    #[test]
    fn bridge_scope_round_trips_and_plain_bytes_unchanged() {
        let (op, node) = (test_key(1), test_key(2));
        for scope in [BridgeScope::All, BridgeScope::Zones(0b1010)] {
            let c = certify_bridge(&op, &node.public_key(), 1, Arch::X86_64, scope, 0);
            let cert = Cert::decode(&c).unwrap();
            assert_eq!(cert.body.bridge, Some(scope));
            assert_eq!(cert.verify(&op.public_key(), 0), Ok(()));
        }
        let plain = test_cert(&op, &node, 3, 10);
        let b = body(&op, &node);
        let old = Plain {
            issuer: b.issuer,
            node_pk: b.node_pk,
            zone: 3,
            arch: Arch::X86_64,
            gpu: false,
            issued_at: 10,
        };
        let mut buf = [0u8; CERT_BODY_BYTES_MAX];
        let old = postcard::to_slice(&old, &mut buf).unwrap();
        assert_eq!(&plain[..plain.len() - SIGNATURE_BYTES], &old[..]);
        assert_eq!(Cert::decode(&plain).unwrap().body.bridge, None);
    }

    /// An empty zone set grants nothing and would be a second way to say "not a bridge": refused
    /// even with a valid signature.
    #[test]
    fn empty_bridge_scope_refused() {
        let (op, node) = (test_key(1), test_key(2));
        let mut b = body(&op, &node);
        b.bridge = Some(BridgeScope::Zones(0));
        let mut out = [0u8; CERT_BYTES_MAX];
        let n = encode_cert(&b, &sign_cert(&op, &b), &mut out);
        assert_eq!(Cert::decode(&out[..n]).err(), Some(CertError::Malformed));
    }

    /// `may_bridge` needs two zones and each scope covering the other's zone.
    #[test]
    fn may_bridge_needs_both_scopes() {
        let (op, node) = (test_key(1), test_key(2));
        let mut a = body(&op, &node);
        let mut b = a;
        a.zone = 0;
        b.zone = 5;
        assert!(!may_bridge(&a, &b), "plain certificates never bridge");
        a.bridge = Some(BridgeScope::All);
        assert!(!may_bridge(&a, &b), "one scope is not enough");
        b.bridge = Some(BridgeScope::Zones(1 << 1));
        assert!(!may_bridge(&a, &b), "b's scope does not cover zone 0");
        b.bridge = Some(BridgeScope::Zones(1 << 0));
        assert!(may_bridge(&a, &b) && may_bridge(&b, &a));
        b.zone = 0;
        assert!(!may_bridge(&a, &b), "a bridge session joins two zones");
        assert!(
            !BridgeScope::Zones(u64::MAX).covers(64),
            "bitmaps name zones 0 to 63"
        );
        assert!(BridgeScope::All.covers(200));
    }
}
