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
use crate::schema::entry::Entry;

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
    use crate::schema::entry::{encode_entry, EntryBody, Version};

    /// Encodes `body` signed by `signer`, the way `myco deploy` does.
    fn signed(signer: &SigningKey, body: &EntryBody<'_>, out: &mut [u8; ENTRY_BYTES_MAX]) -> usize {
        let mut scratch = [0u8; ENTRY_BYTES_MAX];
        let n = postcard::to_slice(body, &mut scratch).unwrap().len();
        let sig = sign_entry_body(signer, &scratch[..n]);
        encode_entry(body, &sig, out).unwrap()
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
}
