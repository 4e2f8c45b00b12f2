//! Hex text, both ways, for every room: 32-byte keys parse from key files and `--operator` flags,
//! and bytes and u64 ids (node ids, key hashes, state hashes) print as lowercase hex. The CLI, the
//! daemon and the simulator all use these, so they accept exactly the same spellings, say the same
//! thing about a bad one, and print the same text for the same value.
//!
//! Encoding is no_std and allocation-free: `Hex` formats through `Display` into whatever the
//! caller writes to, and `HexU64` holds its 16 digits inline.

use core::fmt;

/// Lowercase, the one case Myco writes (parsing accepts both).
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The lowercase hex digit for the low four bits of `nibble`.
pub const fn digit(nibble: u8) -> u8 {
    DIGITS[(nibble & 0xf) as usize]
}

/// Bytes as lowercase hex, two digits each: `Hex(&key).to_string()`, or `write!` into a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            let pair = [digit(byte >> 4), digit(byte)];
            f.write_str(core::str::from_utf8(&pair).expect("hex digits are ASCII"))?;
        }
        Ok(())
    }
}

/// A u64 as exactly 16 lowercase hex digits, the form ids and hashes take in the API, the events
/// and the logs. Held inline, so it needs no buffer and no allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HexU64([u8; 16]);

impl HexU64 {
    pub fn new(value: u64) -> HexU64 {
        HexU64(core::array::from_fn(|i| {
            digit((value >> (60 - 4 * i)) as u8)
        }))
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for HexU64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexError {
    /// The text has this many characters instead of 64.
    Length(usize),
    /// The character at this 1-based position is not a hex digit.
    Digit(usize),
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::Length(n) => write!(f, "it has {n} characters, not 64 hex digits"),
            HexError::Digit(i) => write!(f, "character {i} is not a hex digit"),
        }
    }
}

/// Exactly 64 hex digits (either case) as 32 bytes.
pub fn parse_hex32(text: &[u8]) -> Result<[u8; 32], HexError> {
    if text.len() != 64 {
        return Err(HexError::Length(text.len()));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let high = hex_digit(text[2 * i]).ok_or(HexError::Digit(2 * i + 1))?;
        let low = hex_digit(text[2 * i + 1]).ok_or(HexError::Digit(2 * i + 2))?;
        *byte = high << 4 | low;
    }
    Ok(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    // Bytes, not chars: a key file need not be UTF-8, and a bad one must still get a clear error.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    /// `Hex` writes two lowercase digits per byte that parse back to the same bytes, and `HexU64`
    /// writes exactly what `{:016x}` does, leading zeros included.
    #[test]
    fn encodes_what_parses_back() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37));
        let mut text: heapless::String<64> = heapless::String::new();
        write!(text, "{}", Hex(&bytes)).unwrap();
        assert_eq!(&text[..6], "00254a");
        assert!(!text.bytes().any(|c| c.is_ascii_uppercase()));
        assert_eq!(parse_hex32(text.as_bytes()), Ok(bytes));
        for value in [0, 1, 0xab, 0x0123_4567_89ab_cdef, u64::MAX] {
            let mut expected: heapless::String<16> = heapless::String::new();
            write!(expected, "{value:016x}").unwrap();
            assert_eq!(HexU64::new(value).as_str(), expected.as_str());
        }
    }

    #[test]
    fn parses_both_cases_and_refuses_the_rest() {
        let text = b"00ff10AB".repeat(8);
        let bytes = parse_hex32(&text).unwrap();
        assert_eq!(&bytes[..4], &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(parse_hex32(&text[..63]), Err(HexError::Length(63)));
        let mut bad = text.clone();
        bad[5] = b'g';
        assert_eq!(parse_hex32(&bad), Err(HexError::Digit(6)));
    }
}
