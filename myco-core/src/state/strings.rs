//! The store's shared strings: one copy of each text that stored entries repeat, with a count of
//! the references to it.
//!
//! A fleet's entries repeat most of their text: the flake URL of a repository that holds many
//! services, attribute paths, environment names and common values, arguments. The store keeps one
//! copy of each such text here and lets packed entries (`state::packed`) point at it by id, so a
//! thousand services of realistic size fit the node's budget. This is storage only: what an entry
//! says, its encoding, its digest and its signature are those of its bytes, which are rebuilt
//! exactly when read.
//!
//! Texts are found through a hash index (open addressing, linear probing, two slots per symbol so
//! it is at most half full): every merge of a new version interns each of its texts, and a
//! binary search over the texts cost a dozen comparisons of long, alike URLs each time.
//!
//! Invariants: a symbol with `refs > 0` is live and its text is unique among live symbols;
//! `index` holds exactly the live ids, each on the probe run from its text's home slot; `live` is
//! the sum of the live texts' lengths and `live <= used <= B`. Ids are stable while referenced. A
//! full table (no free id, or no room for the text after compaction) is not an error: `intern`
//! answers `None` and the caller keeps the text inline in its entry.

use crate::config::{STRINGS_BYTES, STRINGS_MAX};
use crate::hash::mix;
use heapless::Vec;

/// No free id: the end of the free chain.
const NONE: u16 = u16::MAX;

#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Where the text starts in `bytes`; for a free id, the next free id (`NONE` ends the chain).
    offset: u32,
    len: u16,
    /// References from stored entries; 0 marks a free id.
    refs: u16,
}

const FREE: Symbol = Symbol {
    offset: NONE as u32,
    len: 0,
    refs: 0,
};

// The shared strings' line of the memory budget in `config.rs`: 8 bytes a symbol, 4 in the
// index, 32 for the counts.
const _: () = assert!(core::mem::size_of::<Symbol>() == 8);
const _: () = assert!(
    core::mem::size_of::<Strings<STRINGS_MAX, STRINGS_BYTES>>()
        <= STRINGS_BYTES + STRINGS_MAX * 12 + 32
);

/// A text's hash for the index: word at a time, multiply and rotate, then `hash::mix` so the
/// high bits (which pick the home slot) depend on every byte. Not keyed: the texts come
/// from operator-signed entries, and a crafted collision would only lengthen a probe run.
fn text_hash(text: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut chunks = text.chunks_exact(8);
    let mut h = text.len() as u64;
    for c in &mut chunks {
        h = step(h, u64::from_le_bytes(c.try_into().expect("chunks of 8")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(step(h, u64::from_le_bytes(tail)))
}

pub struct Strings<const S: usize, const B: usize> {
    symbols: [Symbol; S],
    /// Ids never handed out start here; released ids are reused first, through `free`.
    fresh: u16,
    free: u16,
    /// Live ids by their text's hash, `NONE` where empty: 2 * S slots, viewed flat.
    index: [[u16; 2]; S],
    count: usize,
    bytes: [u8; B],
    used: usize,
    live: usize,
}

impl<const S: usize, const B: usize> Default for Strings<S, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const S: usize, const B: usize> Strings<S, B> {
    // Ids are u16 and `NONE` is not one; offsets are u32; the index has slots to probe.
    const FITS: () = assert!(S > 0 && S < NONE as usize && B <= u32::MAX as usize);

    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Strings {
            symbols: [FREE; S],
            fresh: 0,
            free: NONE,
            index: [[NONE; 2]; S],
            count: 0,
            bytes: [0; B],
            used: 0,
            live: 0,
        }
    }

    /// Live symbols.
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes of live texts.
    pub fn live_bytes(&self) -> usize {
        self.live
    }

    /// The text of live symbol `id`.
    pub fn text(&self, id: u16) -> &[u8] {
        let s = self.symbols[usize::from(id)];
        assert!(s.refs > 0, "only live symbols are read");
        &self.bytes[s.offset as usize..s.offset as usize + usize::from(s.len)]
    }

    /// One more reference to `text`: its id, or `None` if the table has no room for it (the
    /// caller keeps the text inline). `None` changes nothing.
    pub fn intern(&mut self, text: &[u8]) -> Option<u16> {
        let len = u16::try_from(text.len()).ok()?;
        match self.find(text) {
            Ok(at) => {
                let id = self.index.as_flattened()[at];
                let s = &mut self.symbols[usize::from(id)];
                // A saturated count takes no more references; the text stays inline.
                s.refs = s.refs.checked_add(1)?;
                Some(id)
            }
            Err(at) => self.insert(at, text, len),
        }
    }

    /// The index slot holding `text`'s id, or the empty slot that ends its probe run.
    fn find(&self, text: &[u8]) -> Result<usize, usize> {
        let slots = self.index.as_flattened();
        let mut at = home(text, slots.len());
        loop {
            let id = slots[at];
            if id == NONE {
                return Err(at);
            }
            // Read past `text`'s liveness check: `release` looks up the id it just let go.
            let s = self.symbols[usize::from(id)];
            let (from, len) = (s.offset as usize, usize::from(s.len));
            if len == text.len() && self.bytes[from..from + len] == *text {
                return Ok(at);
            }
            at = (at + 1) % slots.len();
        }
    }

    fn insert(&mut self, at: usize, text: &[u8], len: u16) -> Option<u16> {
        if self.count == S || self.live + text.len() > B {
            return None;
        }
        if self.used + text.len() > B {
            self.compact();
        }
        let id = if self.free != NONE {
            let id = self.free;
            self.free = self.symbols[usize::from(id)].offset as u16;
            id
        } else {
            assert!(
                usize::from(self.fresh) < S,
                "a free id exists while by_text has room"
            );
            self.fresh += 1;
            self.fresh - 1
        };
        let offset = self.used;
        self.bytes[offset..offset + text.len()].copy_from_slice(text);
        self.used += text.len();
        self.live += text.len();
        self.symbols[usize::from(id)] = Symbol {
            offset: offset as u32,
            len,
            refs: 1,
        };
        // Compaction moved texts, not index slots: `at` is still the end of the probe run.
        self.index.as_flattened_mut()[at] = id;
        self.count += 1;
        assert!(self.live <= self.used && self.used <= B);
        assert_eq!(self.text(id), text);
        Some(id)
    }

    /// Drops one reference to live symbol `id`; the last one frees its id and text.
    pub fn release(&mut self, id: u16) {
        let s = &mut self.symbols[usize::from(id)];
        assert!(s.refs > 0, "a released symbol was referenced");
        s.refs -= 1;
        if s.refs > 0 {
            return;
        }
        let (offset, len) = (s.offset as usize, usize::from(s.len));
        let at = self
            .find(&self.bytes[offset..offset + len])
            .expect("a live symbol is in the index");
        assert_eq!(self.index.as_flattened()[at], id);
        self.unlist(at);
        self.live -= len;
        self.symbols[usize::from(id)] = Symbol {
            offset: u32::from(self.free),
            ..FREE
        };
        self.free = id;
    }

    /// Empties index slot `at` and moves later ids of its run back over the hole, so every id
    /// stays reachable from its home slot (deletion without tombstones).
    fn unlist(&mut self, at: usize) {
        let n = S * 2;
        let mut hole = at;
        let mut next = (at + 1) % n;
        loop {
            let id = self.index.as_flattened()[next];
            if id == NONE {
                break;
            }
            let want = home(self.text(id), n);
            // The id may fill the hole unless its home lies cyclically within (hole, next].
            if (next + n - want) % n >= (next + n - hole) % n {
                let slots = self.index.as_flattened_mut();
                slots[hole] = id;
                hole = next;
            }
            next = (next + 1) % n;
        }
        self.index.as_flattened_mut()[hole] = NONE;
        self.count -= 1;
    }

    /// Live ids, in no particular order.
    fn live_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.index
            .as_flattened()
            .iter()
            .copied()
            .filter(|&id| id != NONE)
    }

    /// Slides live texts down over released ones, in offset order.
    fn compact(&mut self) {
        let mut order: Vec<u16, S> = self.live_ids().collect();
        order.sort_unstable_by_key(|&id| self.symbols[usize::from(id)].offset);
        let mut to = 0usize;
        for &id in &order {
            let s = &mut self.symbols[usize::from(id)];
            let (from, len) = (s.offset as usize, usize::from(s.len));
            self.bytes.copy_within(from..from + len, to);
            s.offset = to as u32;
            to += len;
        }
        self.used = to;
        assert_eq!(self.used, self.live);
    }

    /// Recomputes the counts from scratch and compares; O(S), for tests and the simulator.
    pub fn check(&self) -> bool {
        // Each live id is found from its own text (so texts are unique), and only live ids are
        // listed.
        let found = self.live_ids().all(|id| {
            self.find(self.text(id))
                .is_ok_and(|at| self.index.as_flattened()[at] == id)
        });
        let live: usize = self.live_ids().map(|id| self.text(id).len()).sum();
        let referenced = self.symbols.iter().filter(|s| s.refs > 0).count();
        found
            && live == self.live
            && referenced == self.count
            && self.live_ids().count() == self.count
            && self.used <= B
    }
}

/// The home slot of `text` in an index of `n` slots: the hash's high bits scaled to `n`, which
/// needs no power of two.
fn home(text: &[u8], n: usize) -> usize {
    ((u128::from(text_hash(text)) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interning the same text twice shares one copy; the last release frees it, and its id and
    /// bytes are reused.
    #[test]
    fn shares_counts_and_frees() {
        let mut t: Strings<4, 16> = Strings::new();
        let a = t.intern(b"alpha").unwrap();
        assert_eq!(t.intern(b"alpha"), Some(a));
        let b = t.intern(b"beta").unwrap();
        assert_ne!(a, b);
        assert_eq!((t.len(), t.live_bytes()), (2, 9));
        t.release(a);
        assert_eq!(t.text(a), b"alpha");
        t.release(a);
        assert_eq!((t.len(), t.live_bytes()), (1, 4));
        // The freed id is reused, and compaction makes room for a text that needs it.
        let c = t.intern(b"gamma-delta").unwrap();
        assert_eq!(c, a);
        assert_eq!((t.text(b), t.text(c)), (&b"beta"[..], &b"gamma-delta"[..]));
        assert!(t.check());
    }

    /// A full table answers `None` and changes nothing: out of ids, out of bytes, or a count
    /// that would overflow.
    #[test]
    fn full_table_keeps_text_inline() {
        let mut t: Strings<2, 8> = Strings::new();
        t.intern(b"abcd").unwrap();
        assert_eq!(t.intern(b"toolong!!"), None);
        t.intern(b"efgh").unwrap();
        assert_eq!(t.intern(b"ijkl"), None);
        assert_eq!((t.len(), t.live_bytes()), (2, 8));
        let mut t: Strings<2, 8> = Strings::new();
        for _ in 0..u16::MAX {
            t.intern(b"x").unwrap();
        }
        assert_eq!(t.intern(b"x"), None);
        assert!(t.check());
    }

    /// Random interns and releases on a table whose index wraps and whose probe runs collide,
    /// against a plain list of (text, references): every answer agrees, ids stay stable while
    /// referenced, and the invariants hold after each step (deletion moves ids back correctly).
    #[test]
    fn agrees_with_a_plain_list() {
        let mut rng = crate::random::Prng::new(7);
        let mut t: Strings<6, 64> = Strings::new();
        // (text, refs, id) of each text the model holds.
        let mut model: heapless::Vec<(heapless::Vec<u8, 3>, u16, u16), 16> = heapless::Vec::new();
        for _ in 0..20_000 {
            let text = [b'a' + rng.below(9) as u8, b'x', b'0' + rng.below(2) as u8];
            let len = 1 + rng.below(3) as usize;
            let text = &text[..len];
            let held = model.iter().position(|(m, _, _)| &m[..] == text);
            if rng.chance(1, 2) {
                match (t.intern(text), held) {
                    (Some(id), Some(i)) => {
                        assert_eq!(model[i].2, id);
                        model[i].1 += 1;
                    }
                    (Some(id), None) => {
                        let m = heapless::Vec::from_slice(text).unwrap();
                        model.push((m, 1, id)).unwrap();
                    }
                    (None, held) => assert!(held.is_none() && model.len() == 6),
                }
            } else if let Some(i) = held {
                t.release(model[i].2);
                model[i].1 -= 1;
                if model[i].1 == 0 {
                    model.swap_remove(i);
                }
            }
            assert!(t.check());
            assert_eq!(t.len(), model.len());
            for (m, _, id) in &model {
                assert_eq!(t.text(*id), &m[..]);
            }
        }
    }
}
