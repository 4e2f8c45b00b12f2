//! A store path's facts and its narinfo. The facts come from `nix-store --dump-db PATH`, Nix's
//! own registration format (the path, its NAR hash in base16, the NAR size, the deriver or an
//! empty line, the number of references and one reference per line), which is line-based and read
//! in place here without allocating. The narinfo is signed as Nix signs and checks it: Ed25519
//! over the fingerprint `1;<path>;sha256:<nix32 hash>;<size>;<references, comma-separated>`.

use super::NIX32_CHARS;
use crate::hex::parse_hex32;

/// A key name: a node id, 16 hex digits.
pub const KEY_NAME_BYTES: usize = 16;

/// One path's registration, borrowed from `nix-store --dump-db`'s output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration<'a> {
    pub path: &'a [u8],
    pub nar_hash: [u8; 32],
    pub nar_size: u64,
    /// Empty when Nix knows none.
    pub deriver: &'a [u8],
    /// The references' full paths, one per line.
    references: &'a [u8],
}

impl<'a> Registration<'a> {
    /// The references' full store paths.
    pub fn references(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.references
            .split(|&b| b == b'\n')
            .filter(|r| !r.is_empty())
    }
}

/// What a narinfo says: the facts, the signing key's name and the signature.
pub struct NarInfoFacts<'a> {
    pub registration: Registration<'a>,
    pub key_name: &'a [u8],
    pub signature: &'a [u8; 64],
}

/// The first registration in `text`, when it is whole and every line is what it should be.
pub fn parse_registration(text: &[u8]) -> Option<Registration<'_>> {
    next_registration(text).map(|(r, _)| r)
}

/// The first registration in `text` and the bytes it takes (through its last newline), when it
/// is whole and every line is what it should be. Registrations follow one another in
/// `nix-store --dump-db`'s output, so this walks a table of them.
pub fn next_registration(text: &[u8]) -> Option<(Registration<'_>, usize)> {
    let mut lines = Lines { text, at: 0 };
    let path = lines.next().filter(|p| is_store_path(p))?;
    let nar_hash = parse_hex32(lines.next()?).ok()?;
    let nar_size = decimal(lines.next()?)?;
    let deriver = lines.next().filter(|d| d.is_empty() || is_store_path(d))?;
    let count = decimal(lines.next()?)?;
    let start = lines.at;
    for _ in 0..count {
        lines.next().filter(|r| is_store_path(r))?;
    }
    // The references' lines without the last one's newline.
    let references = &text[start..lines.at.saturating_sub(1).max(start)];
    let registration = Registration {
        path,
        nar_hash,
        nar_size,
        deriver,
        references,
    };
    Some((registration, lines.at))
}

/// Whole lines only, each ended by a newline: output cut inside its last line (a full buffer)
/// must not read as a shorter path.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.text[self.at..];
        let len = rest.iter().position(|&b| b == b'\n')?;
        self.at += len + 1;
        Some(&rest[..len])
    }
}

fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `/nix/store/<32 nix32>-<name>`, the name of Nix's allowed characters.
pub(crate) fn is_store_path(path: &[u8]) -> bool {
    let Some(base) = path.strip_prefix(b"/nix/store/") else {
        return false;
    };
    base.len() > 33
        && super::store_hash(&base[..32]).is_some()
        && base[32] == b'-'
        && base[33..].iter().all(|&c| store_name_byte(c))
        && base[33] != b'.'
}

/// Whether Nix allows `c` in a store path's name: `[A-Za-z0-9+-._?=]`.
pub fn store_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)
}

/// `bytes` in nix32, as Nix prints hashes: `out` must hold `(8 * len - 1) / 5 + 1` bytes.
pub fn nix32<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    let len = (bytes.len() * 8 - 1) / 5 + 1;
    for (k, n) in (0..len).rev().enumerate() {
        let (i, j) = (n * 5 / 8, n * 5 % 8);
        let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
        let c = (u16::from(bytes[i]) >> j) | high;
        out[k] = NIX32_CHARS[usize::from(c & 0x1f)];
    }
    core::str::from_utf8(&out[..len]).expect("nix32 is ASCII")
}

/// `bytes` in standard base64 with padding: `out` must hold `4 * ceil(len / 3)` bytes.
pub fn base64<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    const CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut len = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            out[len + k] = if k <= chunk.len() {
                CHARS[(n >> (18 - 6 * k) & 0x3f) as usize]
            } else {
                b'='
            };
        }
        len += 4;
    }
    core::str::from_utf8(&out[..len]).expect("base64 is ASCII")
}

/// A writer into a fixed buffer; `None` once it is full.
struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, parts: &[&[u8]]) -> Option<()> {
        for p in parts {
            let end = self
                .len
                .checked_add(p.len())
                .filter(|&e| e <= self.buf.len())?;
            self.buf[self.len..end].copy_from_slice(p);
            self.len = end;
        }
        Some(())
    }

    fn put_u64(&mut self, n: u64) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&[&digits[at..]])
    }
}

/// The base name of a store path (`<hash>-<name>`).
fn base_name(path: &[u8]) -> &[u8] {
    path.strip_prefix(b"/nix/store/").unwrap_or(path)
}

/// Writes the fingerprint Nix signs and checks into `out`; its length, or `None` if it does not
/// fit.
pub fn write_fingerprint(r: &Registration<'_>, out: &mut [u8]) -> Option<usize> {
    let mut hash = [0u8; 52];
    let hash = nix32(&r.nar_hash, &mut hash).as_bytes();
    let mut o = Out { buf: out, len: 0 };
    o.put(&[b"1;", r.path, b";sha256:", hash, b";"])?;
    o.put_u64(r.nar_size)?;
    o.put(&[b";"])?;
    for (i, reference) in r.references().enumerate() {
        o.put(&[if i == 0 { b"" } else { b"," }, reference])?;
    }
    Some(o.len)
}

/// Writes the narinfo into `out`; its length, or `None` if it does not fit. The NAR is served
/// as it is (`Compression: none`), under the store hash of its path.
pub fn write_narinfo(facts: &NarInfoFacts<'_>, out: &mut [u8]) -> Option<usize> {
    let r = &facts.registration;
    let mut hash = [0u8; 52];
    let hash = nix32(&r.nar_hash, &mut hash).as_bytes();
    let mut sig = [0u8; 88];
    let sig = base64(facts.signature, &mut sig).as_bytes();
    let mut o = Out { buf: out, len: 0 };
    let store_hash = &base_name(r.path)[..32];
    o.put(&[
        b"StorePath: ",
        r.path,
        b"\nURL: nar/",
        store_hash,
        b".nar\n",
    ])?;
    o.put(&[b"Compression: none\nNarHash: sha256:", hash, b"\nNarSize: "])?;
    o.put_u64(r.nar_size)?;
    // "References: " keeps its space when empty: Nix reads a value from two bytes past the colon.
    o.put(&[b"\nReferences: "])?;
    for (i, reference) in r.references().enumerate() {
        o.put(&[if i == 0 { b"" } else { b" " }, base_name(reference)])?;
    }
    if !r.deriver.is_empty() {
        o.put(&[b"\nDeriver: ", base_name(r.deriver)])?;
    }
    o.put(&[b"\nSig: ", facts.key_name, b":", sig, b"\n"])?;
    Some(o.len)
}
