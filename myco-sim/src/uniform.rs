//! A hasher for the simulator's maps keyed by values that are uniform already: node ids, key
//! hashes, entry digests. Those maps are looked up millions of times a run (every health check,
//! every entry a node verifies, every invariant pass), and SipHash over an 8-byte key was a few
//! percent of the standard scenario. Deterministic, as every map here must be: nothing may depend
//! on a per-process random key.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiplies the key by an odd constant: both the low bits (the bucket) and the high bits (the
/// control tag) then depend on the key's bits.
#[derive(Default, Clone, Copy)]
pub struct UniformHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for UniformHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(32) ^ x).wrapping_mul(K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The `BuildHasher` of maps keyed by uniform `u64` values.
pub type Uniform = BuildHasherDefault<UniformHasher>;
