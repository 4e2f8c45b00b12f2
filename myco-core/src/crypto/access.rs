//! Access credentials: the operator's statement "the holder of this key may open a tunnel to a
//! box's API (every box, or the one named) until this time", the authority `myco proxy` shows.
//!
//! Encoding: `postcard(AccessBody) || signature[64]`, the signature by the operator key over
//! `DOMAIN_ACCESS || postcard(AccessBody)`, the same shape as certificates and revocations, so
//! the same strict decoder gives each credential one encoding.
//!
//! A credential is valid on a box under operator key `K`, RevocationBlock `B`, wall-clock time
//! `now` (Unix seconds) and node id `N` when its operator key is `K`, the signature verifies under
//! `K`, `issued_at >= B` (raising the block revokes credentials exactly as it revokes
//! certificates), `now < expires_at_s`, and its scope is every box or `N`. The body carries the
//! operator's whole public key rather than its key id, so a holder of the credential alone can
//! check the box's certificate at the other end of the tunnel.

use crate::config::{ACCESS_BODY_BYTES_MAX, ACCESS_BYTES_MAX, SIGNATURE_BYTES};
use crate::crypto::keys::{PublicKey, SigningKey, PUBLIC_KEY_BYTES};
use crate::crypto::signed::{self, Shape};
use crate::crypto::{Refusal, DOMAIN_ACCESS};
use serde::{Deserialize, Serialize};

/// What the operator grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessBody {
    /// The operator key that signed this credential.
    pub operator_pk: [u8; PUBLIC_KEY_BYTES],
    /// The holder's Ed25519 key: the tunnel's client proves it holds the matching secret.
    pub holder_pk: [u8; PUBLIC_KEY_BYTES],
    /// Refused from this Unix time (seconds) on.
    pub expires_at_s: u64,
    /// The RevocationBlock height at issue; refused once the block rises above.
    pub issued_at: u64,
    /// The one box this credential opens, or `None` for every box of the cluster.
    pub node: Option<u64>,
}

impl AccessBody {
    pub fn holder(&self) -> PublicKey {
        PublicKey(self.holder_pk)
    }

    pub fn operator(&self) -> PublicKey {
        PublicKey(self.operator_pk)
    }
}

/// Why a credential was refused. Refusing never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    TooLong,
    Truncated,
    /// The body does not decode, has trailing bytes or is not in its one canonical encoding.
    Malformed,
    /// Signed by another operator than this cluster's.
    UnknownKey,
    /// The operator signature does not verify.
    BadSignature,
    /// Issued below the RevocationBlock.
    Revoked {
        issued_at: u64,
        revocation_block: u64,
    },
    /// Past its expiry.
    Expired {
        expires_at_s: u64,
        now_s: u64,
    },
    /// Scoped to another box.
    WrongNode {
        scope: u64,
        node: u64,
    },
}

impl AccessError {
    pub fn refusal(self) -> Refusal {
        match self {
            AccessError::TooLong | AccessError::Truncated | AccessError::Malformed => {
                Refusal::MalformedHandshake
            }
            AccessError::UnknownKey | AccessError::WrongNode { .. } => Refusal::UnknownKey,
            AccessError::BadSignature => Refusal::BadSignature,
            AccessError::Revoked { .. } | AccessError::Expired { .. } => Refusal::RevokedKey,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AccessError::TooLong => "credential is longer than any valid credential",
            AccessError::Truncated => "credential is shorter than its signature",
            AccessError::Malformed => "credential body does not decode to exactly one encoding",
            AccessError::UnknownKey => {
                "credential was signed by another operator key than this cluster's"
            }
            AccessError::BadSignature => "credential signature does not verify",
            AccessError::Revoked { .. } => {
                "credential was issued below the RevocationBlock; ask for one at the current height"
            }
            AccessError::Expired { .. } => "credential has expired; ask the operator for a new one",
            AccessError::WrongNode { .. } => "credential is for another box",
        }
    }
}

/// A decoded credential borrowing its bytes. Decoding checks the shape only; call `verify`
/// before trusting any field.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub body: AccessBody,
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_BYTES],
}

impl<'a> Access<'a> {
    /// Decodes a credential. Any byte string is safe to pass.
    pub fn decode(bytes: &'a [u8]) -> Result<Access<'a>, AccessError> {
        let d =
            signed::decode::<AccessBody, ACCESS_BODY_BYTES_MAX>(bytes).map_err(|e| match e {
                Shape::TooLong => AccessError::TooLong,
                Shape::Truncated => AccessError::Truncated,
                Shape::Malformed => AccessError::Malformed,
            })?;
        Ok(Access {
            body: d.body,
            signed: d.signed,
            signature: d.signature,
        })
    }

    /// Checks the signature alone: what the holder's side can know (it has no RevocationBlock
    /// and trusts its own clock only for a warning).
    pub fn verify_signature(&self) -> Result<(), AccessError> {
        if signed::verify(
            &self.body.operator(),
            DOMAIN_ACCESS,
            self.signed,
            self.signature,
        ) {
            Ok(())
        } else {
            Err(AccessError::BadSignature)
        }
    }

    /// Checks the credential on the box `node` of the cluster of `operator`, at RevocationBlock
    /// `revocation_block` and Unix time `now_s`. The operator and signature come first, so a
    /// forged credential counts as forged, not as expired or revoked.
    pub fn verify(
        &self,
        operator: &PublicKey,
        revocation_block: u64,
        now_s: u64,
        node: u64,
    ) -> Result<(), AccessError> {
        if self.body.operator_pk != operator.0 {
            return Err(AccessError::UnknownKey);
        }
        self.verify_signature()?;
        still_valid(&self.body, revocation_block, now_s)?;
        match self.body.node {
            Some(scope) if scope != node => Err(AccessError::WrongNode { scope, node }),
            _ => Ok(()),
        }
    }
}

/// The checks that change with time and the RevocationBlock, made again when a tunnel's
/// handshake completes.
pub fn still_valid(
    body: &AccessBody,
    revocation_block: u64,
    now_s: u64,
) -> Result<(), AccessError> {
    if body.issued_at < revocation_block {
        return Err(AccessError::Revoked {
            issued_at: body.issued_at,
            revocation_block,
        });
    }
    if now_s >= body.expires_at_s {
        return Err(AccessError::Expired {
            expires_at_s: body.expires_at_s,
            now_s,
        });
    }
    Ok(())
}

/// Signs and encodes a credential: what `myco credential` and `myco proxy --operator-key` run.
/// `body.operator_pk` must be the signing key's.
pub fn issue_access(
    operator: &SigningKey,
    body: &AccessBody,
) -> heapless::Vec<u8, ACCESS_BYTES_MAX> {
    assert_eq!(
        body.operator_pk,
        operator.public_key().0,
        "the credential names its signer"
    );
    let signature = signed::sign::<_, ACCESS_BODY_BYTES_MAX>(operator, DOMAIN_ACCESS, body)
        .expect("every AccessBody fits ACCESS_BODY_BYTES_MAX (tested)");
    let mut out = [0u8; ACCESS_BYTES_MAX];
    let n = signed::encode::<_, ACCESS_BODY_BYTES_MAX>(body, &signature, &mut out)
        .expect("every AccessBody fits ACCESS_BODY_BYTES_MAX (tested)");
    let access = Access::decode(&out[..n]).expect("a fresh credential decodes");
    assert!(access.verify_signature().is_ok());
    heapless::Vec::from_slice(&out[..n]).expect("n <= ACCESS_BYTES_MAX")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::test_key;

    const NOW: u64 = 1_800_000_000;

    fn body(operator: &SigningKey, holder: &SigningKey, node: Option<u64>) -> AccessBody {
        AccessBody {
            operator_pk: operator.public_key().0,
            holder_pk: holder.public_key().0,
            expires_at_s: NOW + 60,
            issued_at: 4,
            node,
        }
    }

    /// The largest body encodes to exactly `ACCESS_BODY_BYTES_MAX`.
    #[test]
    fn maximal_body_fits_exactly() {
        let b = AccessBody {
            operator_pk: [0xff; 32],
            holder_pk: [0xff; 32],
            expires_at_s: u64::MAX,
            issued_at: u64::MAX,
            node: Some(u64::MAX),
        };
        let mut buf = [0u8; 256];
        let n = postcard::to_slice(&b, &mut buf).unwrap().len();
        assert_eq!(n, ACCESS_BODY_BYTES_MAX);
    }

    /// A credential verifies where it should, and each condition refuses it on its own.
    #[test]
    fn every_condition_refuses() {
        let (op, holder) = (test_key(1), test_key(2));
        let bytes = issue_access(&op, &body(&op, &holder, Some(7)));
        let a = Access::decode(&bytes).unwrap();
        let k = op.public_key();
        assert_eq!(a.verify(&k, 4, NOW, 7), Ok(()));
        let other = test_key(3).public_key();
        assert_eq!(a.verify(&other, 4, NOW, 7), Err(AccessError::UnknownKey));
        assert!(matches!(
            a.verify(&k, 5, NOW, 7),
            Err(AccessError::Revoked { .. })
        ));
        assert!(matches!(
            a.verify(&k, 4, NOW + 60, 7),
            Err(AccessError::Expired { .. })
        ));
        assert_eq!(
            a.verify(&k, 4, NOW, 8),
            Err(AccessError::WrongNode { scope: 7, node: 8 })
        );
        let every = issue_access(&op, &body(&op, &holder, None));
        assert_eq!(
            Access::decode(&every).unwrap().verify(&k, 0, NOW, 8),
            Ok(())
        );
    }

    /// A credential signed by another key that names this cluster's operator is forged; any bit
    /// flipped breaks it; truncation and trailing bytes do not decode.
    #[test]
    fn forged_or_damaged_is_refused() {
        let (op, holder, thief) = (test_key(1), test_key(2), test_key(3));
        let real = issue_access(&op, &body(&op, &holder, None));
        let b = body(&op, &holder, None);
        let sig = signed::sign::<_, ACCESS_BODY_BYTES_MAX>(&thief, DOMAIN_ACCESS, &b).unwrap();
        let mut forged = [0u8; ACCESS_BYTES_MAX];
        let n = signed::encode::<_, ACCESS_BODY_BYTES_MAX>(&b, &sig, &mut forged).unwrap();
        let f = Access::decode(&forged[..n]).unwrap();
        assert_eq!(
            f.verify(&op.public_key(), 0, NOW, 1),
            Err(AccessError::BadSignature)
        );
        for i in 0..real.len() {
            let mut bad = real.clone();
            bad[i] ^= 1;
            let ok =
                Access::decode(&bad).is_ok_and(|a| a.verify(&op.public_key(), 0, NOW, 1).is_ok());
            assert!(!ok, "flipping byte {i} still verifies");
        }
        assert_eq!(
            Access::decode(&real[..10]).unwrap_err(),
            AccessError::Truncated
        );
        let mut long = real.clone();
        long.push(0).unwrap();
        assert!(Access::decode(&long).is_err());
    }
}
