//! SipHash-2-4 with fixed keys: the core's non-linear 64-bit digest.
//!
//! Merkle buckets XOR entry digests together, so entry digests must come from a non-linear
//! function: with a linear one (a CRC) two different sets of entries can XOR to the same value by
//! construction. SipHash is a PRF; keys are fixed because every node must compute equal digests.

const K0: u64 = 0x6d79_636f_2d6b_6579; // "myco-key"
const K1: u64 = 0x6d65_726b_6c65_2d31; // "merkle-1"

/// Domain-separation keys so a key hash never equals an entry digest of the same bytes.
pub const DOMAIN_KEY: u64 = 0x01;
pub const DOMAIN_ENTRY: u64 = 0x02;
pub const DOMAIN_STATE: u64 = 0x03;
/// Recognises a repeated handshake Hello (not a security boundary).
pub const DOMAIN_HELLO: u64 = 0x04;
/// Rendezvous placement scores: `SipHash(DOMAIN_PLACE, key hash || member id)` (`place`).
pub const DOMAIN_PLACE: u64 = 0x05;
/// Build keys: `SipHash(DOMAIN_BUILD, GC root name)` (`executor::substitute`).
pub const DOMAIN_BUILD: u64 = 0x06;
/// Which peers a build asks first: `SipHash(DOMAIN_SUBSTITUTE, own id || build key || peer id)`.
pub const DOMAIN_SUBSTITUTE: u64 = 0x07;
/// Which members bridge their zone: `SipHash(DOMAIN_BRIDGE, zone || member id)` (`node::bridge`).
pub const DOMAIN_BRIDGE: u64 = 0x08;
/// Which relays a box behind NAT keeps: `SipHash(DOMAIN_RELAY, zone || box id || relay id)`
/// (`node::relay`).
pub const DOMAIN_RELAY: u64 = 0x09;

#[derive(Clone, Copy)]
pub struct SipHasher {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

impl SipHasher {
    /// A hasher for one domain; `domain` is mixed into the key.
    pub fn new(domain: u64) -> SipHasher {
        let k0 = K0 ^ domain;
        let k1 = K1;
        SipHasher {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        round(&mut self.v);
        round(&mut self.v);
        self.v[0] ^= m;
    }

    pub fn write(&mut self, mut bytes: &[u8]) {
        self.length += bytes.len();
        // A word begun by an earlier write is completed byte by byte; then whole words go in
        // at once (placement scores and key hashes hash whole words: most of the core's hashing).
        while self.ntail != 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.push_byte(b);
            bytes = rest;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.compress(u64::from_le_bytes(w.try_into().expect("chunks of 8")));
        }
        for &b in words.remainder() {
            self.push_byte(b);
        }
        assert!(self.ntail < 8);
    }

    fn push_byte(&mut self, b: u8) {
        self.tail |= u64::from(b) << (8 * self.ntail);
        self.ntail += 1;
        if self.ntail == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
    }

    #[inline]
    pub fn write_u64(&mut self, x: u64) {
        // Placement scores are two aligned words: kept inline, they cost two compressions.
        if self.ntail == 0 {
            self.length += 8;
            self.compress(x);
        } else {
            self.write(&x.to_le_bytes());
        }
    }

    #[inline]
    pub fn finish(mut self) -> u64 {
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        self.compress(b);
        self.v[2] ^= 0xff;
        for _ in 0..4 {
            round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// A bijective 64-bit mixer (splitmix64's finaliser): every output bit depends on every input
/// bit. Not a digest of anything: for fingerprints XORed together (`node::placed`) and for
/// spreading a hash's bits before its high ones pick a slot (`state::strings`).
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Digest of `bytes` in `domain`.
pub fn digest(domain: u64, bytes: &[u8]) -> u64 {
    let mut h = SipHasher::new(domain);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SipHash-2-4 test vector from the reference paper (key 00..0f, empty and 15-byte inputs).
    #[test]
    fn matches_reference_vectors() {
        fn sip(k0: u64, k1: u64, data: &[u8]) -> u64 {
            let mut h = SipHasher::new(0);
            h.v = [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ];
            h.write(data);
            h.finish()
        }
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(sip(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        let data: [u8; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
        assert_eq!(sip(k0, k1, &data), 0xa129_ca61_49be_45e5);
    }

    /// The digest of some bytes does not depend on how they are split across writes (words are
    /// taken whole only when aligned to the message).
    #[test]
    fn split_writes_hash_as_one() {
        let data: [u8; 40] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5c);
        for len in 0..data.len() {
            let whole = digest(DOMAIN_ENTRY, &data[..len]);
            for a in 0..=len {
                for b in a..=len {
                    let mut h = SipHasher::new(DOMAIN_ENTRY);
                    h.write(&data[..a]);
                    h.write(&data[a..b]);
                    h.write(&data[b..len]);
                    assert_eq!(h.finish(), whole, "{len} split at {a}, {b}");
                }
            }
        }
    }

    /// A word written as a u64 hashes as its eight little-endian bytes, at any offset.
    #[test]
    fn words_hash_as_their_bytes() {
        for before in 0..9 {
            let lead = [0xa5u8; 8];
            let mut bytes = [0u8; 16];
            bytes[..before].copy_from_slice(&lead[..before]);
            bytes[before..before + 8].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
            let mut h = SipHasher::new(DOMAIN_PLACE);
            h.write(&lead[..before]);
            h.write_u64(0x0123_4567_89ab_cdef);
            assert_eq!(
                h.finish(),
                digest(DOMAIN_PLACE, &bytes[..before + 8]),
                "{before}"
            );
        }
    }

    #[test]
    fn domains_separate() {
        assert_ne!(digest(DOMAIN_KEY, b"web"), digest(DOMAIN_ENTRY, b"web"));
        assert_ne!(digest(DOMAIN_PLACE, b"web"), digest(DOMAIN_KEY, b"web"));
    }
}
