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

/// What the operator certifies about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl CertBody {
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

impl<'a> Cert<'a> {
    /// Decodes a certificate. Any byte string is safe to pass.
    pub fn decode(bytes: &'a [u8]) -> Result<Cert<'a>, CertError> {
        let d = signed::decode::<CertBody, CERT_BODY_BYTES_MAX>(bytes).map_err(|e| match e {
            Shape::TooLong => CertError::TooLong,
            Shape::Truncated => CertError::Truncated,
            Shape::Malformed => CertError::Malformed,
        })?;
        Ok(Cert {
            body: d.body,
            signed: d.signed,
            signature: d.signature,
        })
    }

    /// Checks the certificate against the cluster's operator key and the current RevocationBlock.
    /// The signature is checked before the height, so a forged certificate counts as forged, not
    /// as revoked.
    pub fn verify(&self, operator: &PublicKey, revocation_block: u64) -> Result<(), CertError> {
        if self.body.issuer != operator.key_id() {
            return Err(CertError::UnknownKey);
        }
        if !signed::verify(operator, DOMAIN_CERT, self.signed, self.signature) {
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
        issuer: operator.public_key().key_id(),
        node_pk: node.0,
        zone,
        arch,
        gpu,
        issued_at,
    };
    let mut out = [0u8; CERT_BYTES_MAX];
    let n = issue_cert(operator, &body, &mut out);
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

    /// Trailing, missing and overlong-varint encodings never decode: one encoding per cert.
    #[test]
    fn one_encoding_per_cert() {
        let (op, node) = (test_key(1), test_key(2));
        let c = test_cert(&op, &node, 3, 10);
        let mut longer = c.clone();
        longer.push(0).unwrap();
        assert!(Cert::decode(&longer).is_err());
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
}
