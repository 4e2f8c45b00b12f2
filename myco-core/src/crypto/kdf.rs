//! SHA-512, HMAC-SHA-512 and HKDF-SHA-512: the transcript hash and the session key derivation.
//!
//! SHA-512 is ed25519-compact's own (`ed25519_compact::sha512`), which Ed25519 already depends on,
//! so the core carries one hash implementation. HMAC (RFC 2104) and HKDF (RFC 5869) are built on
//! it here because they are a few lines each; the tests check them against published vectors so a
//! peer written with any standard library derives the same keys.

use ed25519_compact::sha512::Hash;
use zeroize::Zeroize;

pub const HASH_BYTES: usize = 64;
/// SHA-512's block size, which HMAC pads its key to.
const BLOCK_BYTES: usize = 128;

/// SHA-512 of the concatenation of `parts`.
pub fn sha512(parts: &[&[u8]]) -> [u8; HASH_BYTES] {
    let mut h = Hash::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// HMAC-SHA-512 of the concatenation of `parts` under `key`. Keys longer than a block are never
/// used here (they would be hashed first per RFC 2104), so they are a bug.
pub fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; HASH_BYTES] {
    assert!(
        key.len() <= BLOCK_BYTES,
        "HMAC keys here are at most one block"
    );
    let mut pad = [0u8; BLOCK_BYTES];
    pad[..key.len()].copy_from_slice(key);
    for b in pad.iter_mut() {
        *b ^= 0x36;
    }
    let mut inner = Hash::new();
    inner.update(pad);
    for p in parts {
        inner.update(p);
    }
    let mut inner = inner.finalize();
    // ipad ^ opad turns the inner pad into the outer one without keeping the key around.
    for b in pad.iter_mut() {
        *b ^= 0x36 ^ 0x5c;
    }
    let mut outer = Hash::new();
    outer.update(pad);
    outer.update(inner);
    pad.zeroize();
    inner.zeroize();
    outer.finalize()
}

/// HKDF-SHA-512 (RFC 5869) with exactly one block of output: `Expand(Extract(salt, ikm), info,
/// 64)`. Two 32-byte keys are all the handshake needs, so the one-block form is the whole of it.
pub fn hkdf_sha512_64(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; HASH_BYTES] {
    let mut prk = hmac_sha512(salt, &[ikm]);
    let okm = hmac_sha512(&prk, &[info, &[1u8]]);
    prk.zeroize();
    okm
}

#[cfg(test)]
pub(crate) fn hex<const N: usize>(s: &str) -> [u8; N] {
    assert_eq!(s.len(), 2 * N);
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ed25519-compact's SHA-512 matches FIPS 180-2 ("abc") and a multi-block input split across
    /// calls, so the transcript hash is the standard one.
    #[test]
    fn sha512_matches_reference() {
        assert_eq!(
            sha512(&[b"abc"]),
            hex::<64>(
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
            )
        );
        let mut data = [0u8; 200];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        let expected = hex::<64>(
            "986058e9895e2c2ab8f9e8cbdf801db12a44842a56a91d5a4e87b1fc98b29372\
             2c4664142e42c3c551ff898646268cd92b84ed230b8c94bed7798d4f27cd7465",
        );
        assert_eq!(sha512(&[&data]), expected);
        assert_eq!(sha512(&[&data[..7], &data[7..130], &data[130..]]), expected);
    }

    /// HMAC-SHA-512 matches RFC 4231 test cases 1 and 2.
    #[test]
    fn hmac_matches_rfc4231() {
        assert_eq!(
            hmac_sha512(&[0x0b; 20], &[b"Hi There"]),
            hex::<64>(
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde\
                 daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
            )
        );
        assert_eq!(
            hmac_sha512(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            hex::<64>(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
                 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )
        );
    }

    /// HKDF is Extract then one Expand block, spelled out with HMAC, and every input matters.
    #[test]
    fn hkdf_is_extract_then_expand() {
        let prk = hmac_sha512(b"salt", &[b"ikm"]);
        let okm = hmac_sha512(&prk, &[b"info", &[1]]);
        assert_eq!(hkdf_sha512_64(b"salt", b"ikm", b"info"), okm);
        assert_ne!(hkdf_sha512_64(b"salt", b"ikm", b"infp"), okm);
        assert_ne!(hkdf_sha512_64(b"salt", b"ikn", b"info"), okm);
        assert_ne!(hkdf_sha512_64(b"salu", b"ikm", b"info"), okm);
    }
}
