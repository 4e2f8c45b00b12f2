//! An entry as the store keeps it: its encoding with the texts it shares with other entries
//! replaced by references into the shared strings (`state::strings`).
//!
//! Layout: `count: u8`, then `count` references `(gap, code)` (LEB128 varints), then the
//! literal bytes: the encoded entry without the referenced pieces. `gap` is the number of literal
//! bytes that come before the reference's piece, counted from the end of the previous one.
//! `code` is a shared text's id plus one, or `REV_HEX` followed by a varint `distance`: the
//! piece is the 40 lowercase hex digits of the 20 bytes that stand `distance` bytes further in
//! the encoding (a locked flake reference names its rev, and the rev follows it as raw bytes).
//! Reading copies `gap` literal bytes, then the piece, for each reference, then the rest, and
//! writes the hex digits last, once the rev bytes are in place; that gives back the encoded entry
//! byte for byte (`unpack`): the entry's digest, signature and everything gossip or the log sees
//! are those of its encoding, never of this form.
//!
//! What is shared: every text of a live entry but its name, which stays literal so the store
//! can read it without rebuilding the entry; a flake reference is shared without its rev (so
//! services of one repository share it at any commit), and its rev and narHash (52 raw bytes)
//! are shared as one more text (services at one commit share them). A text is shared only when
//! its reference is shorter than it, so a packed entry is never longer than its encoding plus
//! the count byte.

use super::strings::Strings;
use crate::config::{
    ARGS_MAX, ENTRY_BYTES_MAX, ENV_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES, PRE_ARGS_MAX, PRE_MAX,
};
use crate::schema::entry::{rev_at, Entry, Source};
use core::ops::Deref;
use heapless::Vec;

/// The most pieces one entry can share: the flake reference (in two pieces around its rev), its
/// rev, attribute and rev with narHash, or the executable; every argument, variable name and
/// value, and migration token.
pub const REFS_MAX: usize = 5 + ARGS_MAX + 2 * ENV_MAX + PRE_MAX * PRE_ARGS_MAX;
/// The code of a reference to the hex digits of a rev; shared texts are `id + 1`.
const REV_HEX: usize = 0;
const HEX_BYTES: usize = 2 * FLAKE_REV_BYTES;
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
    /// A copy of `bytes` if they are an entry `Entry::decode` accepts (signature not checked).
    pub fn validated(bytes: &[u8]) -> Option<EntryBytes> {
        Entry::decode(bytes).ok()?;
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        buf[..bytes.len()].copy_from_slice(bytes);
        let len = u16::try_from(bytes.len()).ok()?;
        Some(EntryBytes { buf, len })
    }

    /// The entry, decoded: a stored entry was validated when it was merged, so it is not
    /// validated again (`Entry::decode_stored`).
    pub fn decode(&self) -> Entry<'_> {
        // Tests (debug assertions) check that claim on every stored entry they decode.
        debug_assert!(Entry::decode(self).is_ok(), "a stored entry is valid");
        Entry::decode_stored(self).expect("stored entries were validated")
    }
}

/// A part of an encoded entry that a reference can stand for.
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// `len` bytes at `start`, shared through the strings table.
    Text { start: usize, len: usize },
    /// The hex digits at `start` of the rev that stands at `rev`.
    RevHex { start: usize, rev: usize },
}

impl Piece {
    fn start(self) -> usize {
        match self {
            Piece::Text { start, .. } | Piece::RevHex { start, .. } => start,
        }
    }
    fn len(self) -> usize {
        match self {
            Piece::Text { len, .. } => len,
            Piece::RevHex { .. } => HEX_BYTES,
        }
    }
}

/// The pieces of `entry` in `bytes` (its encoding), in encoding order.
fn pieces(bytes: &[u8], entry: &Entry<'_>) -> Vec<Piece, REFS_MAX> {
    let base = bytes.as_ptr() as usize;
    // The decoded strings borrow from `bytes`, so their addresses give their offsets.
    let text = |t: &str| {
        let start = (t.as_ptr() as usize).wrapping_sub(base);
        assert!(
            start + t.len() <= bytes.len(),
            "decoded texts borrow from the encoding"
        );
        Piece::Text {
            start,
            len: t.len(),
        }
    };
    let mut out: Vec<Piece, REFS_MAX> = Vec::new();
    let Some(spec) = &entry.body.spec else {
        return out;
    };
    let mut add = |p: Piece| out.push(p).expect("REFS_MAX counts every piece");
    match spec.source {
        Source::Flake {
            uri,
            attr,
            rev,
            nar_hash,
        } => {
            let at = rev_at(uri, &rev).expect("a stored flake names its rev");
            // Postcard writes the rev and the narHash as raw bytes right after the attribute.
            let raw = text(attr).start() + attr.len();
            let raw_len = FLAKE_REV_BYTES + NAR_HASH_BYTES;
            assert!(bytes[raw..raw + FLAKE_REV_BYTES] == rev);
            assert!(bytes[raw + FLAKE_REV_BYTES..raw + raw_len] == nar_hash);
            add(text(&uri[..at]));
            let hex = text(&uri[at..at + HEX_BYTES]).start();
            add(Piece::RevHex {
                start: hex,
                rev: raw,
            });
            add(text(&uri[at + HEX_BYTES..]));
            add(text(attr));
            add(Piece::Text {
                start: raw,
                len: raw_len,
            });
        }
        Source::Exec { path } => add(text(path)),
    }
    spec.args.iter().for_each(|a| add(text(a)));
    for (k, v) in &spec.env {
        add(text(k));
        add(text(v));
    }
    spec.pre.iter().flatten().for_each(|t| add(text(t)));
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
    let mut refs: Vec<(usize, usize, usize), REFS_MAX> = Vec::new();
    let mut literal = [0u8; ENTRY_BYTES_MAX];
    let (mut lit_len, mut from) = (0, 0);
    for piece in pieces(bytes, entry) {
        let (start, len) = (piece.start(), piece.len());
        let gap = start - from;
        let (code, distance) = match piece {
            Piece::RevHex { start, rev } => (REV_HEX, rev - start),
            Piece::Text { .. } => {
                let text = &bytes[start..start + len];
                let Some(id) = (len > 2).then(|| strings.intern(text)).flatten() else {
                    continue;
                };
                if varint_len(gap) + varint_len(usize::from(id) + 1) >= len {
                    // A reference this long saves nothing.
                    strings.release(id);
                    continue;
                }
                (usize::from(id) + 1, 0)
            }
        };
        literal[lit_len..lit_len + gap].copy_from_slice(&bytes[from..start]);
        lit_len += gap;
        refs.push((gap, code, distance))
            .expect("one reference per piece");
        from = start + len;
    }
    let rest = bytes.len() - from;
    literal[lit_len..lit_len + rest].copy_from_slice(&bytes[from..]);
    lit_len += rest;
    let mut at = 1;
    out[0] = refs.len() as u8;
    for &(gap, code, distance) in &refs {
        put_varint(out, &mut at, gap);
        put_varint(out, &mut at, code);
        if code == REV_HEX {
            put_varint(out, &mut at, distance);
        }
    }
    out[at..at + lit_len].copy_from_slice(&literal[..lit_len]);
    assert!(
        at + lit_len <= bytes.len() + 1,
        "packing never grows an entry"
    );
    at + lit_len
}

/// A reference of a packed entry: literal bytes before it, then what it stands for.
#[derive(Clone, Copy, Debug)]
enum Ref {
    Text { gap: usize, id: u16 },
    RevHex { gap: usize, distance: usize },
}

/// The references of a packed entry, in order, read in place: the name of every placed entry is
/// read several times a tick, and gathering its references into a list first was the most of
/// that.
struct Refs<'a> {
    stored: &'a [u8],
    at: usize,
    left: u8,
}

fn refs(stored: &[u8]) -> Refs<'_> {
    Refs {
        stored,
        at: 1,
        left: stored[0],
    }
}

impl Iterator for Refs<'_> {
    type Item = Ref;
    fn next(&mut self) -> Option<Ref> {
        self.left = self.left.checked_sub(1)?;
        let gap = take_varint(self.stored, &mut self.at);
        Some(match take_varint(self.stored, &mut self.at) {
            REV_HEX => Ref::RevHex {
                gap,
                distance: take_varint(self.stored, &mut self.at),
            },
            code => Ref::Text {
                gap,
                id: (code - 1) as u16,
            },
        })
    }
}

/// Where the literal bytes of a packed entry start: past its references.
pub fn literal_start(stored: &[u8]) -> usize {
    let mut r = refs(stored);
    r.by_ref().for_each(drop);
    r.at
}

/// Rebuilds the encoded entry from its packed form, whose literal bytes start at `literal`
/// (`literal_start`, which the store keeps).
pub fn unpack<const S: usize, const B: usize>(
    stored: &[u8],
    literal: usize,
    strings: &Strings<S, B>,
) -> EntryBytes {
    let mut e = EntryBytes {
        buf: [0; ENTRY_BYTES_MAX],
        len: 0,
    };
    let mut from = literal;
    let mut to = 0;
    let mut hex = None;
    for r in refs(stored) {
        let (Ref::Text { gap, .. } | Ref::RevHex { gap, .. }) = r;
        e.buf[to..to + gap].copy_from_slice(&stored[from..from + gap]);
        (from, to) = (from + gap, to + gap);
        let piece = match r {
            Ref::Text { id, .. } => strings.text(id),
            Ref::RevHex { distance, .. } => {
                hex = Some((to, distance));
                &[0; HEX_BYTES]
            }
        };
        e.buf[to..to + piece.len()].copy_from_slice(piece);
        to += piece.len();
    }
    let rest = stored.len() - from;
    e.buf[to..to + rest].copy_from_slice(&stored[from..]);
    e.len = (to + rest) as u16;
    if let Some((at, distance)) = hex {
        write_hex(&mut e.buf, at, at + distance);
    }
    e
}

/// Writes the hex digits of the rev at `rev` over the placeholder at `at`.
fn write_hex(buf: &mut [u8; ENTRY_BYTES_MAX], at: usize, rev: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in 0..FLAKE_REV_BYTES {
        let b = buf[rev + i];
        buf[at + 2 * i] = DIGITS[usize::from(b >> 4)];
        buf[at + 2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Gives back the references `pack` took.
pub fn release<const S: usize, const B: usize>(stored: &[u8], strings: &mut Strings<S, B>) {
    for r in refs(stored) {
        if let Ref::Text { id, .. } = r {
            strings.release(id);
        }
    }
}

/// The service name of a packed entry whose literal bytes start at `literal` (`literal_start`),
/// read in place: names are never shared, and an encoded entry starts with its name.
pub fn name(stored: &[u8], literal: usize) -> &str {
    // Postcard writes a string as its length (a varint) and its bytes; read here without a
    // deserializer, which cost more than the rest of the lookup.
    let mut at = literal;
    let len = take_varint(stored, &mut at);
    core::str::from_utf8(&stored[at..at + len]).expect("a stored entry starts with its name")
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::schema::entry::{encode_entry, EntryBody, ServiceSpec, Version};

    const REV: [u8; FLAKE_REV_BYTES] = [0xa7; FLAKE_REV_BYTES];

    fn encode(spec: Option<ServiceSpec<'_>>, out: &mut [u8; ENTRY_BYTES_MAX]) -> usize {
        let version = Version {
            clock: 9,
            key_id: 1,
        };
        let body = EntryBody {
            name: "web",
            version,
            spec,
        };
        encode_entry(&body, &[3; 64], out).unwrap()
    }

    fn flake(uri: &str) -> ServiceSpec<'_> {
        let mut spec = ServiceSpec::minimal(Source::Flake {
            uri,
            attr: "packages.x86_64-linux.web",
            rev: REV,
            nar_hash: [0x5c; NAR_HASH_BYTES],
        });
        spec.args = Vec::from_slice(&["--config", "/etc/web.toml", "-v"]).unwrap();
        spec.env = Vec::from_slice(&[("RUST_LOG", "info"), ("A", "")]).unwrap();
        spec
    }

    /// Packing and unpacking gives the encoding back byte for byte for every kind of entry (a
    /// flake whose rev sits mid-reference or at its end, an executable, a tombstone), the packed
    /// form is never longer than the encoding plus one byte, the name reads in place, and
    /// releasing gives every reference back.
    #[test]
    fn round_trips_and_releases() {
        let rev_hex = "a7".repeat(FLAKE_REV_BYTES);
        let mid = std::format!("git+https://example.com/web.git?rev={rev_hex}&dir=sub");
        let end = std::format!("github:example/web/{rev_hex}");
        let exec = ServiceSpec::minimal(Source::Exec {
            path: "/usr/bin/web-server",
        });
        let mut strings: Strings<64, 1024> = Strings::new();
        for spec in [Some(flake(&mid)), Some(flake(&end)), Some(exec), None] {
            let mut bytes = [0u8; ENTRY_BYTES_MAX];
            let n = encode(spec, &mut bytes);
            let entry = Entry::decode(&bytes[..n]).unwrap();
            let mut stored = [0u8; PACKED_BYTES_MAX];
            let len = pack(&bytes[..n], &entry, &mut strings, &mut stored);
            assert!(len <= n + 1, "{len} > {n} + 1");
            assert_eq!(
                &unpack(&stored[..len], literal_start(&stored[..len]), &strings)[..],
                &bytes[..n]
            );
            assert_eq!(name(&stored[..len], literal_start(&stored[..len])), "web");
            release(&stored[..len], &mut strings);
            assert!(strings.is_empty() && strings.check());
        }
    }

    /// Two entries share their texts: the second takes references, not bytes; and with a table
    /// too small for anything, texts stay inline and the entry still reads back exactly.
    #[test]
    fn shares_and_falls_back_inline() {
        let uri = std::format!("git+https://example.com/web.git?rev={}", "a7".repeat(20));
        let mut bytes = [0u8; ENTRY_BYTES_MAX];
        let n = encode(Some(flake(&uri)), &mut bytes);
        let entry = Entry::decode(&bytes[..n]).unwrap();
        let mut strings: Strings<64, 1024> = Strings::new();
        let mut first = [0u8; PACKED_BYTES_MAX];
        let first_len = pack(&bytes[..n], &entry, &mut strings, &mut first);
        let shared = (strings.len(), strings.live_bytes());
        let mut second = [0u8; PACKED_BYTES_MAX];
        let second_len = pack(&bytes[..n], &entry, &mut strings, &mut second);
        assert_eq!((strings.len(), strings.live_bytes()), shared);
        assert_eq!(first_len, second_len);
        // The signature, name and version stay; the 40 hex digits and the texts do not.
        assert!(first_len + 40 + shared.1 - 52 <= n, "{first_len} of {n}");
        let mut tiny: Strings<1, 2> = Strings::new();
        let mut inline = [0u8; PACKED_BYTES_MAX];
        let len = pack(&bytes[..n], &entry, &mut tiny, &mut inline);
        assert!(tiny.is_empty());
        assert_eq!(
            &unpack(&inline[..len], literal_start(&inline[..len]), &tiny)[..],
            &bytes[..n]
        );
    }
}
