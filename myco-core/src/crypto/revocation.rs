//! Revocations: the operator's signed order "refuse every certificate issued below `height`".
//!
//! Encoding: `postcard(RevocationBody) || signature[64]`, the signature by the operator key over
//! `DOMAIN_REVOCATION || postcard(RevocationBody)`. At most `REVOCATION_BYTES_MAX` bytes.
//!
//! The RevocationBlock only rises: a node keeps the highest height it has verified, so an old
//! revocation replayed by anyone changes nothing, and gossiping the newest one is enough for every
//! node to converge on it.

use crate::config::{REVOCATION_BODY_BYTES_MAX, REVOCATION_BYTES_MAX, SIGNATURE_BYTES};
use crate::crypto::keys::{PublicKey, SigningKey};
use crate::crypto::signed::{self, Shape};
use crate::crypto::{Refusal, DOMAIN_REVOCATION};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBody {
    /// `key_id` of the operator key that signed this revocation.
    pub issuer: u32,
    /// The new RevocationBlock.
    pub height: u64,
}

/// Why a revocation was refused. Refusing never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationError {
    TooLong,
    Truncated,
    Malformed,
    UnknownKey,
    BadSignature,
}

impl RevocationError {
    pub fn refusal(self) -> Refusal {
        match self {
            // A malformed revocation is gossip, not a handshake, but it is the same kind of junk.
            RevocationError::TooLong | RevocationError::Truncated | RevocationError::Malformed => {
                Refusal::MalformedHandshake
            }
            RevocationError::UnknownKey => Refusal::UnknownKey,
            RevocationError::BadSignature => Refusal::BadSignature,
        }
    }

    /// What an operator reads when a revocation they gave is refused.
    pub fn message(self) -> &'static str {
        match self {
            RevocationError::TooLong => "it is longer than any revocation",
            RevocationError::Truncated => "it is shorter than its signature",
            RevocationError::Malformed => "its body does not decode to exactly one encoding",
            RevocationError::UnknownKey => {
                "it was signed by a key this cluster does not trust; sign it with the cluster's \
                 operator key ('myco revoke --operator-key')"
            }
            RevocationError::BadSignature => "its signature does not verify",
        }
    }
}

/// A decoded revocation borrowing its bytes. Call `verify` before acting on it.
#[derive(Clone, Copy, Debug)]
pub struct Revocation<'a> {
    pub body: RevocationBody,
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_BYTES],
}

impl<'a> Revocation<'a> {
    /// Decodes a revocation. Any byte string is safe to pass.
    pub fn decode(bytes: &'a [u8]) -> Result<Revocation<'a>, RevocationError> {
        let d = signed::decode::<RevocationBody, REVOCATION_BODY_BYTES_MAX>(bytes).map_err(
            |e| match e {
                Shape::TooLong => RevocationError::TooLong,
                Shape::Truncated => RevocationError::Truncated,
                Shape::Malformed => RevocationError::Malformed,
            },
        )?;
        Ok(Revocation {
            body: d.body,
            signed: d.signed,
            signature: d.signature,
        })
    }

    /// Checks the operator's signature and returns the height it orders.
    pub fn verify(&self, operator: &PublicKey) -> Result<u64, RevocationError> {
        if self.body.issuer != operator.key_id() {
            return Err(RevocationError::UnknownKey);
        }
        if !signed::verify(operator, DOMAIN_REVOCATION, self.signed, self.signature) {
            return Err(RevocationError::BadSignature);
        }
        Ok(self.body.height)
    }
}

/// Signs and encodes a revocation to `height`, returning the length written to `out`.
pub fn encode_revocation(
    operator: &SigningKey,
    height: u64,
    out: &mut [u8; REVOCATION_BYTES_MAX],
) -> usize {
    let body = RevocationBody {
        issuer: operator.public_key().key_id(),
        height,
    };
    let signature =
        signed::sign::<_, REVOCATION_BODY_BYTES_MAX>(operator, DOMAIN_REVOCATION, &body)
            .expect("every RevocationBody fits REVOCATION_BODY_BYTES_MAX (tested)");
    let n = signed::encode::<_, REVOCATION_BODY_BYTES_MAX>(&body, &signature, out)
        .expect("every RevocationBody fits REVOCATION_BODY_BYTES_MAX (tested)");
    assert!(n <= REVOCATION_BYTES_MAX);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cert::{sign_cert, CertBody};
    use crate::crypto::keys::test_key;
    use crate::schema::entry::Arch;

    /// A signed revocation decodes and verifies to its height, the maximal one included, which
    /// also proves `REVOCATION_BYTES_MAX` is tight.
    #[test]
    fn round_trip_and_bound() {
        let op = test_key(1);
        let mut out = [0u8; REVOCATION_BYTES_MAX];
        let n = encode_revocation(&op, 42, &mut out);
        assert_eq!(
            Revocation::decode(&out[..n])
                .unwrap()
                .verify(&op.public_key()),
            Ok(42)
        );
        // The largest issuer id and height give the bound exactly.
        let body = RevocationBody {
            issuer: u32::MAX,
            height: u64::MAX,
        };
        let n = signed::encode::<_, REVOCATION_BODY_BYTES_MAX>(&body, &[0; 64], &mut out).unwrap();
        assert_eq!(n, REVOCATION_BYTES_MAX);
        assert_eq!(Revocation::decode(&out).unwrap().body, body);
    }

    /// A revocation signed by a foreign key, forged under the cluster's id, or with any bit flipped
    /// is refused.
    #[test]
    fn forgeries_refused() {
        let (op, foreign) = (test_key(1), test_key(3));
        let mut out = [0u8; REVOCATION_BYTES_MAX];
        let n = encode_revocation(&foreign, 42, &mut out);
        assert_eq!(
            Revocation::decode(&out[..n])
                .unwrap()
                .verify(&op.public_key()),
            Err(RevocationError::UnknownKey)
        );
        let body = RevocationBody {
            issuer: op.public_key().key_id(),
            height: 42,
        };
        let sig = signed::sign::<_, REVOCATION_BODY_BYTES_MAX>(&foreign, DOMAIN_REVOCATION, &body)
            .unwrap();
        let n = signed::encode::<_, REVOCATION_BODY_BYTES_MAX>(&body, &sig, &mut out).unwrap();
        assert_eq!(
            Revocation::decode(&out[..n])
                .unwrap()
                .verify(&op.public_key()),
            Err(RevocationError::BadSignature)
        );
        let n = encode_revocation(&op, 42, &mut out);
        for i in 0..n * 8 {
            let mut bad = out;
            bad[i / 8] ^= 1 << (i % 8);
            let verdict = Revocation::decode(&bad[..n]).and_then(|r| r.verify(&op.public_key()));
            assert!(verdict.is_err(), "bit {i} flipped still verifies");
        }
    }

    /// A certificate signature never verifies as a revocation, even over the same bytes: the
    /// domains differ.
    #[test]
    fn cert_signature_is_not_a_revocation() {
        let op = test_key(1);
        let cert = CertBody {
            issuer: op.public_key().key_id(),
            node_pk: [0; 32],
            zone: 0,
            arch: Arch::Any,
            gpu: false,
            issued_at: 0,
            bridge: None,
        };
        let sig = sign_cert(&op, &cert);
        let mut signed = [0u8; 64];
        let used = postcard::to_slice(&cert, &mut signed).unwrap().len();
        assert!(op
            .public_key()
            .verify_parts(&[crate::crypto::DOMAIN_CERT, &signed[..used]], &sig));
        assert!(!signed::verify(
            &op.public_key(),
            DOMAIN_REVOCATION,
            &signed[..used],
            &sig
        ));
    }

    /// Trailing bytes and truncation are refused: one encoding per revocation.
    #[test]
    fn one_encoding() {
        let op = test_key(1);
        let mut out = [0u8; REVOCATION_BYTES_MAX + 1];
        let n = encode_revocation(
            &op,
            42,
            (&mut out[..REVOCATION_BYTES_MAX]).try_into().unwrap(),
        );
        assert!(Revocation::decode(&out[..n + 1]).is_err());
        assert!(Revocation::decode(&out[..n - 1]).is_err());
        assert_eq!(
            Revocation::decode(&out[..3]).err(),
            Some(RevocationError::Truncated)
        );
    }
}
