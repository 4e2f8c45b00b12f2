//! The shape shared by certificates and revocations: `postcard(body) || signature[64]`, the
//! signature made by the operator key over `domain || postcard(body)`.
//!
//! Decoding is strict so an object has one encoding: the body must fill everything before the
//! signature, and re-encoding the decoded body must give the same bytes (postcard alone accepts
//! overlong varints).

use crate::config::SIGNATURE_BYTES;
use crate::crypto::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

/// Why a signed object's bytes did not decode. Callers map these onto their own error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    TooLong,
    Truncated,
    Malformed,
}

/// A decoded signed object borrowing its signed bytes and signature from the input.
pub(crate) struct Decoded<'a, T> {
    pub body: T,
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_BYTES],
}

/// Decodes `bytes` as `postcard(T) || signature`, where the encoded body is at most `BODY_MAX`
/// bytes.
pub(crate) fn decode<'a, T, const BODY_MAX: usize>(bytes: &'a [u8]) -> Result<Decoded<'a, T>, Shape>
where
    T: Deserialize<'a> + Serialize,
{
    if bytes.len() > BODY_MAX + SIGNATURE_BYTES {
        return Err(Shape::TooLong);
    }
    let split = bytes
        .len()
        .checked_sub(SIGNATURE_BYTES)
        .ok_or(Shape::Truncated)?;
    let (signed, signature) = bytes.split_at(split);
    let body = decode_exact::<T, BODY_MAX>(signed).ok_or(Shape::Malformed)?;
    let signature = signature.try_into().expect("split at SIGNATURE_BYTES");
    Ok(Decoded {
        body,
        signed,
        signature,
    })
}

/// Decodes `bytes` as exactly one canonical postcard `T` of at most `MAX` bytes: no trailing
/// bytes, and re-encoding gives `bytes` back.
pub(crate) fn decode_exact<'a, T, const MAX: usize>(bytes: &'a [u8]) -> Option<T>
where
    T: Deserialize<'a> + Serialize,
{
    if bytes.len() > MAX {
        return None;
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let mut again = [0u8; MAX];
    let again = postcard::to_slice(&value, &mut again).ok()?;
    (&again[..] == bytes).then_some(value)
}

/// Encodes `body || signature` into `out`, returning the length, or `None` if it does not fit.
pub(crate) fn encode<T: Serialize, const BODY_MAX: usize>(
    body: &T,
    signature: &[u8; SIGNATURE_BYTES],
    out: &mut [u8],
) -> Option<usize> {
    let room = out.len().min(BODY_MAX + SIGNATURE_BYTES);
    let room = room.checked_sub(SIGNATURE_BYTES)?;
    let used = postcard::to_slice(body, &mut out[..room]).ok()?.len();
    out[used..used + SIGNATURE_BYTES].copy_from_slice(signature);
    Some(used + SIGNATURE_BYTES)
}

/// The operator's signature of `domain || postcard(body)`. The message is assembled on the stack:
/// signing it in pieces would need ed25519-compact's incremental signer, whose nonce does not
/// depend on the message unless random noise is added, and the core has no random source.
pub(crate) fn sign<T: Serialize, const BODY_MAX: usize>(
    key: &SigningKey,
    domain: &[u8],
    body: &T,
) -> Option<[u8; SIGNATURE_BYTES]> {
    // Domains are short constants; 32 bytes of room is checked here rather than trusted.
    let mut msg = [0u8; 32 + 128];
    assert!(domain.len() <= 32 && BODY_MAX <= 128);
    msg[..domain.len()].copy_from_slice(domain);
    let used = postcard::to_slice(body, &mut msg[domain.len()..domain.len() + BODY_MAX])
        .ok()?
        .len();
    Some(key.sign(&msg[..domain.len() + used]))
}

/// True if `signature` is `key`'s signature of `domain || signed`.
pub(crate) fn verify(
    key: &PublicKey,
    domain: &[u8],
    signed: &[u8],
    signature: &[u8; SIGNATURE_BYTES],
) -> bool {
    key.verify_parts(&[domain, signed], signature)
}
