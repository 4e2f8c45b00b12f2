//! An entry as the store keeps it: its encoding with the texts it shares with other entries
//! replaced by references into the shared strings (`state::strings`).
//!
//! Layout: `count: u8`, then `count` references `(gap, id)` (both LEB128 varints), then the
//! literal bytes: the encoded entry without the referenced texts. `gap` is the number of literal
//! bytes that come before the reference's text, counted from the end of the previous one.
//! Reading copies `gap` literal bytes, then the text, for each reference, then the rest, which
//! gives back the encoded entry byte for byte (`unpack`): the entry's digest, signature and
//! everything gossip or the log sees are those of its encoding, never of this form.
//!
//! What is shared: every text of a live entry but its name, which stays literal so the store
//! can read it without rebuilding the entry, and the revision a locked flake reference names,
//! which is cut out of the reference so services of one repository share the rest of it at any
//! commit. A text is shared only when its reference is shorter than the text, so a packed entry
//! is never longer than its encoding plus the count byte.

use super::strings::Strings;
use crate::config::{ARGS_MAX, ENTRY_BYTES_MAX, ENV_MAX, PRE_ARGS_MAX, PRE_MAX};
use crate::schema::entry::{rev_at, Entry, Source};
use core::ops::Deref;
use heapless::Vec;

/// The most texts one entry can share: the flake reference (in two pieces around its rev) and
/// attribute, or the executable; every argument, variable name and value, and migration token.
pub const REFS_MAX: usize = 2 + ARGS_MAX + 2 * ENV_MAX + PRE_MAX * PRE_ARGS_MAX;
/// A packed entry is at most its encoding and the count byte.
pub const PACKED_BYTES_MAX: usize = ENTRY_BYTES_MAX + 1;

const _: () = assert!(REFS_MAX <= u8::MAX as usize);

/// An encoded entry rebuilt from the store, in a buffer of its own.
#[derive(Clone)]
pub struct EntryBytes {
    buf: [u8; ENTRY_BYTES_MAX],
    len: u16,
}

impl Deref for EntryBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for EntryBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl core::fmt::Debug for EntryBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EntryBytes({} bytes)", self.len)
    }
}

impl EntryBytes {
    /// The entry, decoded: a stored entry was validated when it was merged.
    pub fn decode(&self) -> Entry<'_> {
        Entry::decode(self).expect("stored entries were validated")
    }
}

/// Where the texts of `entry` lie in `bytes` (its encoding), in encoding order: `(start, len)`.
fn texts(bytes: &[u8], entry: &Entry<'_>) -> Vec<(usize, usize), REFS_MAX> {
    let base = bytes.as_ptr() as usize;
    // The decoded strings borrow from `bytes`, so their addresses give their offsets.
    let span = |t: &str| {
        let start = (t.as_ptr() as usize).wrapping_sub(base);
        assert!(
            start + t.len() <= bytes.len(),
            "decoded texts borrow from the encoding"
        );
        (start, t.len())
    };
    let mut out = Vec::new();
    let Some(spec) = &entry.body.spec else {
        return out;
    };
    let mut push = |t: &str| out.push(span(t)).expect("REFS_MAX counts every text");
    match spec.source {
        Source::Flake { uri, attr, rev, .. } => {
            let at = rev_at(uri, &rev).expect("a stored flake names its rev");
            push(&uri[..at]);
            push(&uri[at + 2 * rev.len()..]);
            push(attr);
        }
        Source::Exec { path } => push(path),
    }
    spec.args.iter().for_each(|a| push(a));
    for (k, v) in &spec.env {
        push(k);
        push(v);
    }
    spec.pre.iter().flatten().for_each(|t| push(t));
    out
}

fn put_varint(out: &mut [u8], at: &mut usize, mut x: usize) {
    loop {
        let more = x >= 0x80;
        out[*at] = (x as u8 & 0x7f) | if more { 0x80 } else { 0 };
        *at += 1;
        x >>= 7;
        if !more {
            return;
        }
    }
}

fn varint_len(x: usize) -> usize {
    (usize::BITS - (x | 1).leading_zeros()).div_ceil(7) as usize
}

fn take_varint(stored: &[u8], at: &mut usize) -> usize {
    let mut x = 0;
    for shift in (0..).step_by(7) {
        let b = stored[*at];
        *at += 1;
        x |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return x;
        }
    }
    unreachable!("varints end")
}

/// Packs `bytes` (the encoding of `entry`) into `out`, taking one reference in `strings` for
/// each text it shares; returns the packed length. Texts the table has no room for stay inline.
pub fn pack<const S: usize, const B: usize>(
    bytes: &[u8],
    entry: &Entry<'_>,
    strings: &mut Strings<S, B>,
    out: &mut [u8; PACKED_BYTES_MAX],
) -> usize {
    let mut refs: Vec<(usize, u16), REFS_MAX> = Vec::new();
    let mut literal = [0u8; ENTRY_BYTES_MAX];
    let (mut lit_len, mut from) = (0, 0);
    for (start, len) in texts(bytes, entry) {
        let gap = start - from;
        let text = &bytes[start..start + len];
        let Some(id) = (len > 2).then(|| strings.intern(text)).flatten() else {
            continue;
        };
        if varint_len(gap) + varint_len(usize::from(id)) >= len {
            // A reference this long saves nothing.
            strings.release(id);
            continue;
        }
        literal[lit_len..lit_len + gap].copy_from_slice(&bytes[from..start]);
        lit_len += gap;
        refs.push((gap, id)).expect("one reference per text");
        from = start + len;
    }
    let rest = bytes.len() - from;
    literal[lit_len..lit_len + rest].copy_from_slice(&bytes[from..]);
    lit_len += rest;
    let mut at = 1;
    out[0] = refs.len() as u8;
    for &(gap, id) in &refs {
        put_varint(out, &mut at, gap);
        put_varint(out, &mut at, usize::from(id));
    }
    out[at..at + lit_len].copy_from_slice(&literal[..lit_len]);
    assert!(
        at + lit_len <= bytes.len() + 1,
        "packing never grows an entry"
    );
    at + lit_len
}

/// The references of a packed entry, in order, and where its literal bytes start.
fn refs(stored: &[u8]) -> (Vec<(usize, u16), REFS_MAX>, usize) {
    let mut out = Vec::new();
    let mut at = 1;
    for _ in 0..stored[0] {
        let gap = take_varint(stored, &mut at);
        let id = take_varint(stored, &mut at) as u16;
        out.push((gap, id)).expect("REFS_MAX bounds the count");
    }
    (out, at)
}

/// Rebuilds the encoded entry from its packed form.
pub fn unpack<const S: usize, const B: usize>(
    stored: &[u8],
    strings: &Strings<S, B>,
) -> EntryBytes {
    let mut e = EntryBytes {
        buf: [0; ENTRY_BYTES_MAX],
        len: 0,
    };
    let (list, mut from) = refs(stored);
    let mut to = 0;
    let mut copy = |buf: &mut [u8; ENTRY_BYTES_MAX], bytes: &[u8]| {
        buf[to..to + bytes.len()].copy_from_slice(bytes);
        to += bytes.len();
    };
    for (gap, id) in list {
        copy(&mut e.buf, &stored[from..from + gap]);
        from += gap;
        copy(&mut e.buf, strings.text(id));
    }
    copy(&mut e.buf, &stored[from..]);
    e.len = to as u16;
    e
}

/// Gives back the references `pack` took.
pub fn release<const S: usize, const B: usize>(stored: &[u8], strings: &mut Strings<S, B>) {
    for (_, id) in refs(stored).0 {
        strings.release(id);
    }
}

/// The service name of a packed entry, read in place: names are never shared, and an encoded
/// entry starts with its name.
pub fn name(stored: &[u8]) -> &str {
    let (_, literal) = refs(stored);
    let (name, _) = postcard::take_from_bytes::<&str>(&stored[literal..])
        .expect("a stored entry starts with its name");
    name
}
