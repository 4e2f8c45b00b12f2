//! Ed25519 identities: the operator key and node keys, their ids, signing and verifying.
//!
//! Ids come from SHA-512 of the 32-byte public key, read little-endian:
//! - `node_id(pk)` is the first 8 bytes: a node's id in frame headers and the member table.
//! - `key_id(pk)` is the first 4 bytes: the operator key's id in certificates, revocations and
//!   entry versions.
//!
//! Hashing spreads ids uniformly whatever the key bytes look like. Ids are names, not proofs: a
//! 32-bit id can be ground in minutes, so every check that matters verifies a signature with the
//! full public key; an id only says which key to try.
//!
//! Signatures are deterministic Ed25519 (RFC 8032) without added noise, because the core has no
//! random source; the same key and message always give the same signature.

use crate::config::SIGNATURE_BYTES;
use crate::crypto::kdf::sha512;
use crate::hex::{parse_hex32, HexError};
use core::fmt;

pub const PUBLIC_KEY_BYTES: usize = 32;
pub const SEED_BYTES: usize = 32;

/// A 32-byte Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    /// True if `signature` is a valid Ed25519 signature of `message` under this key. Non-canonical
    /// signatures and small-order keys are refused.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        self.verify_parts(&[message], signature)
    }

    /// As [`PublicKey::verify`], over the concatenation of `parts`, without copying them.
    pub fn verify_parts(&self, parts: &[&[u8]], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        let pk = ed25519_compact::PublicKey::new(self.0);
        let sig = ed25519_compact::Signature::new(*signature);
        let Ok(mut state) = pk.verify_incremental(&sig) else {
            return false;
        };
        for p in parts {
            state.absorb(p);
        }
        state.verify().is_ok()
    }

    pub fn key_id(&self) -> u32 {
        key_id(&self.0)
    }

    pub fn node_id(&self) -> u64 {
        node_id(&self.0)
    }
}

/// The id of an operator key: the first 4 bytes of SHA-512(pk), little-endian.
pub fn key_id(pk: &[u8; PUBLIC_KEY_BYTES]) -> u32 {
    let h = sha512(&[pk]);
    u32::from_le_bytes([h[0], h[1], h[2], h[3]])
}

/// The id of a node key: the first 8 bytes of SHA-512(pk), little-endian.
pub fn node_id(pk: &[u8; PUBLIC_KEY_BYTES]) -> u64 {
    let h = sha512(&[pk]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// Why a key could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// An all-zero seed: almost surely an unfilled buffer, not randomness.
    ZeroSeed,
}

/// An Ed25519 secret key (operator or node), made from a 32-byte seed the caller drew from the OS
/// random source. The secret is wiped when the value is dropped.
#[derive(Clone)]
pub struct SigningKey {
    pair: ed25519_compact::KeyPair,
}

impl SigningKey {
    /// The key for `seed`. The same seed always gives the same key, so the seed is the secret to
    /// store.
    pub fn from_seed(seed: [u8; SEED_BYTES]) -> Result<SigningKey, KeyError> {
        let pair = ed25519_compact::KeyPair::try_from_seed(ed25519_compact::Seed::new(seed))
            .map_err(|_| KeyError::ZeroSeed)?;
        Ok(SigningKey { pair })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.pair.pk)
    }

    /// The deterministic Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        *self.pair.sk.sign(message, None)
    }
}

// The derived Debug of the key pair would print the secret.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) fn test_key(n: u8) -> SigningKey {
    SigningKey::from_seed([n; SEED_BYTES]).expect("non-zero test seed")
}

/// The longest key file: 64 hex digits and a newline. A reader takes one byte more, so that a
/// longer file is refused as too long rather than cut to fit.
pub const KEY_FILE_BYTES_MAX: usize = 2 * SEED_BYTES + 1;

/// Why bytes are not a key file. Reading a key changes nothing, so no variant changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    /// Not 64 hex digits and an optional newline.
    Text(HexError),
    /// The digits spell an all-zero seed, which is no secret.
    ZeroSeed,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Text(e) => write!(f, "{e}; a key file holds 64 hex digits and a newline"),
            KeyFileError::ZeroSeed => f.write_str("it holds an all-zero seed, which is no secret"),
        }
    }
}

/// The seed in a key file as `myco keygen` writes it: 64 hex digits (either case) and an optional
/// newline. Shared by `myco` and `myco-d`, so both accept exactly the same files and say the same
/// thing about a bad one; each reads the file and checks its mode itself.
pub fn parse_key_file(text: &[u8]) -> Result<[u8; SEED_BYTES], KeyFileError> {
    let seed = parse_hex32(text.strip_suffix(b"\n").unwrap_or(text)).map_err(KeyFileError::Text)?;
    if seed == [0; SEED_BYTES] {
        return Err(KeyFileError::ZeroSeed);
    }
    Ok(seed)
}

/// True if a key file's mode lets anyone but its owner read or write it: such a key may already be
/// copied, so both readers refuse it rather than use it quietly.
pub fn key_file_exposed(mode: u32) -> bool {
    mode & 0o077 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf::hex;

    /// A key file is 64 hex digits with at most one newline, never all zeros, and only owner-only
    /// modes are private.
    #[test]
    fn key_file_rules() {
        let text = b"00ff10AB".repeat(8);
        let seed = parse_key_file(&text).unwrap();
        assert_eq!(&seed[..4], &[0x00, 0xff, 0x10, 0xab]);
        let mut file = text.clone();
        file.push(b'\n');
        assert_eq!(file.len(), KEY_FILE_BYTES_MAX);
        assert_eq!(parse_key_file(&file), Ok(seed));
        file.push(b'\n');
        assert_eq!(
            parse_key_file(&file),
            Err(KeyFileError::Text(HexError::Length(65)))
        );
        assert_eq!(
            parse_key_file(&b"0".repeat(64)),
            Err(KeyFileError::ZeroSeed)
        );
        assert!(!key_file_exposed(0o100600));
        assert!(!key_file_exposed(0o400));
        assert!(key_file_exposed(0o640));
        assert!(key_file_exposed(0o602));
    }

    /// Signing with a key from RFC 8032's first test vector gives its public key and signature, so
    /// signatures are standard Ed25519 and reproducible from the seed alone.
    #[test]
    fn matches_rfc8032_vector() {
        let k = SigningKey::from_seed(hex(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        ))
        .unwrap();
        assert_eq!(
            k.public_key().0,
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let sig = k.sign(b"");
        assert_eq!(
            sig,
            hex::<64>(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            )
        );
        assert!(k.public_key().verify(b"", &sig));
    }

    /// A signature verifies only for its own key and message, whole or split into parts, and a
    /// flipped bit anywhere in it is refused.
    #[test]
    fn verify_refuses_other_key_message_or_bits() {
        let a = test_key(1);
        let b = test_key(2);
        let sig = a.sign(b"hello world");
        assert!(a.public_key().verify(b"hello world", &sig));
        assert!(a
            .public_key()
            .verify_parts(&[b"hello", b" ", b"world"], &sig));
        assert!(!b.public_key().verify(b"hello world", &sig));
        assert!(!a.public_key().verify(b"hello worle", &sig));
        for i in 0..SIGNATURE_BYTES * 8 {
            let mut bad = sig;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(!a.public_key().verify(b"hello world", &bad), "bit {i}");
        }
    }

    /// Ids are the documented prefixes of SHA-512(pk), and differ between keys.
    #[test]
    fn ids_are_hash_prefixes() {
        let pk = test_key(1).public_key();
        let h = sha512(&[&pk.0]);
        assert_eq!(pk.key_id().to_le_bytes(), h[..4]);
        assert_eq!(pk.node_id().to_le_bytes(), h[..8]);
        assert_ne!(pk.node_id(), test_key(2).public_key().node_id());
        assert_ne!(pk.key_id(), test_key(2).public_key().key_id());
    }

    /// An all-zero seed is refused rather than becoming a well-known key; Debug hides the secret.
    #[test]
    fn zero_seed_refused_and_debug_hides_secret() {
        assert_eq!(
            SigningKey::from_seed([0; 32]).err(),
            Some(KeyError::ZeroSeed)
        );
        extern crate std;
        let k = test_key(7);
        let shown = std::format!("{k:?}");
        assert!(!shown.contains("[7, 7, 7"), "{shown}");
    }
}
