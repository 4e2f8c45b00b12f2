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
//! Invariants: a symbol with `refs > 0` is live and its text is unique among live symbols;
//! `by_text` lists exactly the live ids, sorted by text; `live` is the sum of the live texts'
//! lengths and `live <= used <= B`. Ids are stable while referenced. A full table (no free id, or
//! no room for the text after compaction) is not an error: `intern` answers `None` and the caller
//! keeps the text inline in its entry.

use crate::config::{STRINGS_BYTES, STRINGS_MAX};
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

// The shared strings' line of the memory budget in `config.rs`: 8 bytes a symbol, 2 in `by_text`,
// 32 for the counts.
const _: () = assert!(core::mem::size_of::<Symbol>() == 8);
const _: () = assert!(
    core::mem::size_of::<Strings<STRINGS_MAX, STRINGS_BYTES>>()
        <= STRINGS_BYTES + STRINGS_MAX * 10 + 32
);

pub struct Strings<const S: usize, const B: usize> {
    symbols: [Symbol; S],
    /// Ids never handed out start here; released ids are reused first, through `free`.
    fresh: u16,
    free: u16,
    by_text: Vec<u16, S>,
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
    // Ids are u16 and `NONE` is not one; offsets are u32.
    const FITS: () = assert!(S < NONE as usize && B <= u32::MAX as usize);

    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        Strings {
            symbols: [FREE; S],
            fresh: 0,
            free: NONE,
            by_text: Vec::new(),
            bytes: [0; B],
            used: 0,
            live: 0,
        }
    }

    /// Live symbols.
    pub fn len(&self) -> usize {
        self.by_text.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_text.is_empty()
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
        match self.by_text.binary_search_by(|&id| self.text(id).cmp(text)) {
            Ok(at) => {
                let id = self.by_text[at];
                let s = &mut self.symbols[usize::from(id)];
                // A saturated count takes no more references; the text stays inline.
                s.refs = s.refs.checked_add(1)?;
                Some(id)
            }
            Err(at) => self.insert(at, text, len),
        }
    }

    fn insert(&mut self, at: usize, text: &[u8], len: u16) -> Option<u16> {
        if self.by_text.is_full() || self.live + text.len() > B {
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
        self.by_text.insert(at, id).expect("checked not full");
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
        let text = &self.bytes[offset..offset + len];
        let at = self
            .by_text
            .binary_search_by(|&other| {
                let o = self.symbols[usize::from(other)];
                let other_text = &self.bytes[o.offset as usize..][..usize::from(o.len)];
                other_text.cmp(text)
            })
            .expect("a live symbol is listed by its text");
        assert_eq!(self.by_text.remove(at), id);
        self.live -= len;
        self.symbols[usize::from(id)] = Symbol {
            offset: u32::from(self.free),
            ..FREE
        };
        self.free = id;
    }

    /// Slides live texts down over released ones, in offset order.
    fn compact(&mut self) {
        let mut order: Vec<u16, S> = self.by_text.clone();
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
        let sorted = self
            .by_text
            .windows(2)
            .all(|w| self.text(w[0]) < self.text(w[1]));
        let live: usize = self.by_text.iter().map(|&id| self.text(id).len()).sum();
        let referenced = self.symbols.iter().filter(|s| s.refs > 0).count();
        sorted && live == self.live && referenced == self.by_text.len() && self.used <= B
    }
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
}
