//! Hex text for 32-byte keys: key files, `--operator` flags. Shared by the CLI and the daemon, so
//! both accept exactly the same spellings and say the same thing about a bad one.

use core::fmt;

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

/// The contents of a key file as `myco keygen` writes it: 64 hex digits and an optional newline.
pub fn parse_key_file(text: &[u8]) -> Result<[u8; 32], HexError> {
    parse_hex32(text.strip_suffix(b"\n").unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_cases_and_refuses_the_rest() {
        let text = b"00ff10AB".repeat(8);
        let bytes = parse_hex32(&text).unwrap();
        assert_eq!(&bytes[..4], &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(parse_hex32(&text[..63]), Err(HexError::Length(63)));
        let mut bad = text.clone();
        bad[5] = b'g';
        assert_eq!(parse_hex32(&bad), Err(HexError::Digit(6)));
        let mut file = text.clone();
        file.push(b'\n');
        assert_eq!(parse_key_file(&file), Ok(bytes));
        file.push(b'\n');
        assert_eq!(parse_key_file(&file), Err(HexError::Length(65)));
    }
}
