//! 256 Merkle buckets, summarised as 16 groups of 16 so every anti-entropy step fits one frame.
//!
//! A bucket digest is the XOR of its entries' SipHash digests (kept by `Store`); the root is the
//! XOR of everything and rides on every frame, so two nodes compare in O(1). When roots differ,
//! the initiator sends all 256 bucket digests (three frames of up to six groups of 16), the peer
//! answers each differing bucket with its (key hash, digest) pairs, and the two then push and pull
//! the entries that differ.

use crate::config::BUCKETS_PER_GROUP;
use crate::schema::message::Digest;
use crate::state::store::Store;

pub fn group_buckets<const N: usize, const A: usize>(
    store: &Store<N, A>,
    group: usize,
) -> [Digest; BUCKETS_PER_GROUP] {
    let mut out = [Digest(0); BUCKETS_PER_GROUP];
    for (i, d) in out.iter_mut().enumerate() {
        d.0 = store.bucket(group * BUCKETS_PER_GROUP + i);
    }
    out
}

/// The inclusive key-hash range of bucket `b`.
pub fn bucket_range(b: usize) -> (u64, u64) {
    let from = (b as u64) << 56;
    (from, from | ((1u64 << 56) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::bucket_of;

    #[test]
    fn bucket_ranges_tile_the_key_space() {
        assert_eq!(bucket_range(0).0, 0);
        assert_eq!(bucket_range(255).1, u64::MAX);
        for b in 0..255 {
            assert_eq!(bucket_range(b).1 + 1, bucket_range(b + 1).0);
            assert_eq!(bucket_of(bucket_range(b).1), b);
        }
    }
}
