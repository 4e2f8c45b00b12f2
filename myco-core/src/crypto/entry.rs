//! Desired-state entry signatures: the operator signs `postcard(EntryBody)` exactly, and a node
//! accepts an entry only if `version.key_id` names the cluster's operator key and the signature
//! verifies under it. Relaying nodes hold no key that could forge or alter an entry.
//!
//! Entry signatures carry no domain prefix (the entry format predates this module, and its bytes
//! are the signed bytes). They cannot be confused with certificate or revocation signatures: those
//! sign messages starting with a zero byte, while an entry body starts with its name length, which
//! a valid entry keeps between 1 and 63.

use crate::config::SIGNATURE_BYTES;
use crate::crypto::keys::{PublicKey, SigningKey};
use crate::crypto::Refusal;
use crate::schema::entry::{encode_entry, Entry, EntryBody, EntryError};

/// Why an entry's signature was refused. Refusing never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrySignatureError {
    /// `version.key_id` is not the cluster's operator key: a forgery with another key.
    UnknownKey {
        key_id: u32,
    },
    BadSignature,
}

impl EntrySignatureError {
    pub fn refusal(self) -> Refusal {
        match self {
            EntrySignatureError::UnknownKey { .. } => Refusal::UnknownKey,
            EntrySignatureError::BadSignature => Refusal::BadSignature,
        }
    }
}

/// The operator's signature over an encoded entry body. The body's `version.key_id` must be
/// `operator.public_key().key_id()`, or every node will refuse the entry.
pub fn sign_entry_body(operator: &SigningKey, body_bytes: &[u8]) -> [u8; SIGNATURE_BYTES] {
    operator.sign(body_bytes)
}

/// Encodes `body` signed by `operator` into `out` and returns the entry's length: the one way
/// anything in the tree (the CLI, the simulator, tests, benchmarks) makes a signed entry, so all of
/// them give the same bytes for the same body and key. The body's `version.key_id` must be
/// `operator.public_key().key_id()`, or every node will refuse the entry.
///
/// An entry is `postcard(body) || signature`, so encoding with a blank signature yields the signed
/// bytes in front of the signature's place, which is then filled in. On error (`body` is invalid,
/// or does not fit `out` or `ENTRY_BYTES_MAX`) `out` holds no entry and nothing else changed.
pub fn sign_entry(
    operator: &SigningKey,
    body: &EntryBody<'_>,
    out: &mut [u8],
) -> Result<usize, EntryError> {
    let n = encode_entry(body, &[0; SIGNATURE_BYTES], out)?;
    assert!(n > SIGNATURE_BYTES, "an encoded body is never empty");
    let signature = sign_entry_body(operator, &out[..n - SIGNATURE_BYTES]);
    out[n - SIGNATURE_BYTES..n].copy_from_slice(&signature);
    Ok(n)
}

/// Checks an entry against the cluster's operator key: its key id first (cheap), then the
/// signature over `entry.signed`.
pub fn check_entry(operator: &PublicKey, entry: &Entry<'_>) -> Result<(), EntrySignatureError> {
    let key_id = entry.body.version.key_id;
    if key_id != operator.key_id() {
        return Err(EntrySignatureError::UnknownKey { key_id });
    }
    if !operator.verify(entry.signed, entry.signature) {
        return Err(EntrySignatureError::BadSignature);
    }
    Ok(())
}

/// True if `entry` is signed by the cluster's operator key.
pub fn verify_entry(operator: &PublicKey, entry: &Entry<'_>) -> bool {
    check_entry(operator, entry).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ENTRY_BYTES_MAX;
    use crate::crypto::keys::test_key;
    use crate::schema::entry::{ServiceSpec, Source, Version};

    fn signed(signer: &SigningKey, body: &EntryBody<'_>, out: &mut [u8; ENTRY_BYTES_MAX]) -> usize {
        sign_entry(signer, body, out).unwrap()
    }

    fn tombstone(key_id: u32) -> EntryBody<'static> {
        EntryBody {
            name: "web",
            version: Version { clock: 7, key_id },
            spec: None,
        }
    }

    /// An entry signed by the operator verifies; so does the same entry after travelling through
    /// encode and decode.
    #[test]
    fn operator_signed_entry_verifies() {
        let op = test_key(1);
        let mut out = [0u8; ENTRY_BYTES_MAX];
        let n = signed(&op, &tombstone(op.public_key().key_id()), &mut out);
        let e = Entry::decode(&out[..n]).unwrap();
        assert!(verify_entry(&op.public_key(), &e));
    }

    /// An entry forged with another key is refused: under its own key id as an unknown key, under
    /// the operator's key id as a bad signature.
    #[test]
    fn forged_entries_refused() {
        let (op, forger) = (test_key(1), test_key(2));
        let mut out = [0u8; ENTRY_BYTES_MAX];
        let forger_id = forger.public_key().key_id();
        let n = signed(&forger, &tombstone(forger_id), &mut out);
        let e = Entry::decode(&out[..n]).unwrap();
        assert_eq!(
            check_entry(&op.public_key(), &e),
            Err(EntrySignatureError::UnknownKey { key_id: forger_id })
        );
        let mut out2 = [0u8; ENTRY_BYTES_MAX];
        let n = signed(&forger, &tombstone(op.public_key().key_id()), &mut out2);
        let e = Entry::decode(&out2[..n]).unwrap();
        assert_eq!(
            check_entry(&op.public_key(), &e),
            Err(EntrySignatureError::BadSignature)
        );
        assert_eq!(
            EntrySignatureError::BadSignature.refusal(),
            Refusal::BadSignature
        );
    }

    /// No single flipped bit of a signed entry leaves it both decodable and verified: a relay
    /// cannot alter a field or the signature.
    #[test]
    fn altered_entry_refused() {
        let op = test_key(1);
        let mut out = [0u8; ENTRY_BYTES_MAX];
        let n = signed(&op, &tombstone(op.public_key().key_id()), &mut out);
        for i in 0..n * 8 {
            let mut bad = out;
            bad[i / 8] ^= 1 << (i % 8);
            let decoded = Entry::decode(&bad[..n]);
            if let Ok(e) = &decoded {
                assert!(!verify_entry(&op.public_key(), e), "bit {i}");
            }
        }
    }

    /// `sign_entry` gives an entry that decodes to the same body and verifies, and its bytes are
    /// exactly those of the way every caller signed before it existed (encode the body alone, sign
    /// that, append the signature), written out here so a change to the format cannot pass
    /// unnoticed. Too small an `out` is refused.
    #[test]
    fn sign_entry_verifies_and_keeps_the_bytes() {
        let op = test_key(1);
        let body = EntryBody {
            name: "web",
            version: Version {
                clock: 1_700_000_000_000,
                key_id: op.public_key().key_id(),
            },
            spec: Some(ServiceSpec::minimal(Source::Exec {
                path: "/usr/bin/true",
            })),
        };
        let mut out = [0u8; ENTRY_BYTES_MAX];
        let n = sign_entry(&op, &body, &mut out).unwrap();
        let e = Entry::decode(&out[..n]).unwrap();
        assert_eq!(e.body, body);
        assert!(verify_entry(&op.public_key(), &e));

        let mut before = [0u8; ENTRY_BYTES_MAX];
        let body_len = postcard::to_slice(&body, &mut before).unwrap().len();
        let signature = sign_entry_body(&op, &before[..body_len]);
        before[body_len..body_len + SIGNATURE_BYTES].copy_from_slice(&signature);
        assert_eq!(&out[..n], &before[..body_len + SIGNATURE_BYTES]);
        assert_eq!(hex(&out[..n]), EXPECTED_HEX);

        let mut small = [0u8; 40];
        assert_eq!(sign_entry(&op, &body, &mut small), Err(EntryError::TooLong));
    }

    /// The entry above as signed before `sign_entry` existed (Ed25519 signatures are
    /// deterministic, so the same key and body always give these bytes), since specs carry
    /// resource limits and a health check (the six zero bytes before the signature: none set).
    const EXPECTED_HEX: &str = concat!(
        "0377656280d095ffbc31b788cad30801010d2f7573722f62696e2f747275650000000000000100000000",
        "000000fa0fa4f099c8bd2deb7610c3608ea1938f6d8bc176a34a9dd28a165cec5206a24ca975802a9ca0",
        "4f35b9754871a7bb88738e0b46ab98b19d4623475091f78f0d",
    );

    fn hex(bytes: &[u8]) -> heapless::String<{ 2 * ENTRY_BYTES_MAX }> {
        let mut s = heapless::String::new();
        for b in bytes {
            core::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}")).unwrap();
        }
        s
    }
}
