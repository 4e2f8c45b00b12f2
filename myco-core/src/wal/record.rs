//! One WAL record: a 12-byte header and a payload, checked by CRC32C.
//!
//! Layout (all integers little-endian):
//!
//! | bytes   | field                                      |
//! |---------|--------------------------------------------|
//! | 0..2    | magic `"MW"`                               |
//! | 2       | kind: 1 = entry, 2 = checkpoint end        |
//! | 3       | reserved, must be 0                        |
//! | 4..8    | payload length u32                         |
//! | 8..12   | CRC32C (Castagnoli) of bytes 0..8 + payload |
//! | 12..    | payload                                    |
//!
//! The checksum covers the header's first eight bytes as well as the payload, so a flipped kind or
//! length is caught like a flipped payload byte. Decoding never panics and never trusts a length
//! before bounding it by the kind's maximum, so a corrupt length cannot make a reader wait for
//! gigabytes. Errors are prefix-stable: an error other than `Incomplete` found on some bytes is
//! found on every extension of them, which is what lets a streaming reader and a whole-buffer
//! reader agree.

use crate::config::{WAL_HEADER_BYTES, WAL_PAYLOAD_BYTES_MAX};
use crc::{Crc, Table, CRC_32_ISCSI};
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 2] = *b"MW";

/// The largest postcard encoding of a `CheckpointEnd`: varint u32 (5) + varint u64 (10).
pub const CHECKPOINT_END_BYTES_MAX: usize = 15;

/// Slice-by-16 (a 16 KB table, read-only data): every entry the node stores is checksummed twice
/// on its way to the log (written, then read back) and once more at each replay, and the
/// byte-at-a-time table made that about 3% of the simulator's standard scenario. Same CRC.
static CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const KIND: usize = 2;
    pub const RESERVED: usize = 3;
    pub const PAYLOAD_LEN: Range<usize> = 4..8;
    pub const CRC: Range<usize> = 8..12;
    /// The header bytes the checksum covers.
    pub const CHECKED: Range<usize> = 0..8;
}

const _: () = assert!(field::CRC.end == WAL_HEADER_BYTES);
const _: () = assert!(CHECKPOINT_END_BYTES_MAX <= WAL_PAYLOAD_BYTES_MAX);

/// What a record holds. Numbers are on disk; never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An encoded signed entry, exactly as `schema::entry::Entry::decode` accepts it.
    Entry = 1,
    /// Closes a snapshot: postcard `CheckpointEnd`.
    CheckpointEnd = 2,
}

impl RecordKind {
    pub fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::CheckpointEnd),
            _ => None,
        }
    }

    pub fn payload_bytes_max(self) -> usize {
        match self {
            RecordKind::Entry => WAL_PAYLOAD_BYTES_MAX,
            RecordKind::CheckpointEnd => CHECKPOINT_END_BYTES_MAX,
        }
    }
}

/// The last record of a snapshot: how many entry records precede it and the state hash they
/// rebuild, so a reader can tell a whole snapshot from a cut one and check what it rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEnd {
    pub entries: u32,
    pub state_hash: u64,
}

/// Why bytes are not a good record. Reading never changes anything, so no variant changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end inside a record; at the end of a file this is a torn write.
    Incomplete,
    /// The first bytes are not `"MW"` with a zero reserved byte.
    BadMagic,
    /// The payload length exceeds its kind's maximum.
    BadLength,
    /// The CRC32C does not match the header and payload.
    BadChecksum,
    /// An unknown record kind.
    BadKind,
    /// The checksum matched but the payload is not what its kind says (a writer bug).
    BadPayload,
}

impl RecordError {
    pub fn message(self) -> &'static str {
        match self {
            RecordError::Incomplete => "log ends inside a record (a write torn by a crash)",
            RecordError::BadMagic => "record does not start with the WAL magic",
            RecordError::BadLength => "record length exceeds the maximum for its kind",
            RecordError::BadChecksum => "record checksum does not match (corrupt bytes)",
            RecordError::BadKind => "record kind is unknown",
            RecordError::BadPayload => "record payload does not decode as its kind",
        }
    }
}

/// A zero-copy view over a record header whose magic, kind and length bound were checked.
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader<'a> {
    bytes: &'a [u8; WAL_HEADER_BYTES],
}

impl<'a> RecordHeader<'a> {
    /// Checks the header at the start of `bytes`; the payload need not be there yet.
    pub fn new_checked(bytes: &'a [u8]) -> Result<RecordHeader<'a>, RecordError> {
        // A mismatching magic prefix is final however many bytes follow, so say so early.
        let seen = bytes.len().min(field::MAGIC.end);
        if bytes[..seen] != MAGIC[..seen] {
            return Err(RecordError::BadMagic);
        }
        let bytes = bytes
            .first_chunk::<WAL_HEADER_BYTES>()
            .ok_or(RecordError::Incomplete)?;
        if bytes[field::RESERVED] != 0 {
            return Err(RecordError::BadMagic);
        }
        let kind = RecordKind::from_u8(bytes[field::KIND]).ok_or(RecordError::BadKind)?;
        let header = RecordHeader { bytes };
        if header.payload_len() > kind.payload_bytes_max() {
            return Err(RecordError::BadLength);
        }
        Ok(header)
    }

    pub fn kind(&self) -> RecordKind {
        RecordKind::from_u8(self.bytes[field::KIND]).expect("checked in new_checked")
    }
    pub fn payload_len(&self) -> usize {
        // Saturating keeps a huge length huge on 16-bit targets instead of wrapping it small.
        usize::try_from(read_u32(self.bytes, field::PAYLOAD_LEN.start)).unwrap_or(usize::MAX)
    }
    pub fn crc(&self) -> u32 {
        read_u32(self.bytes, field::CRC.start)
    }
    pub fn record_len(&self) -> usize {
        WAL_HEADER_BYTES + self.payload_len()
    }
}

fn read_u32(bytes: &[u8; WAL_HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A good record, borrowing its payload from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordView<'a> {
    /// An encoded entry. The record layer vouches for its bytes; the store vouches for its
    /// meaning and decodes it with `Entry::decode`.
    Entry(&'a [u8]),
    CheckpointEnd(CheckpointEnd),
}

impl RecordView<'_> {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordView::Entry(_) => RecordKind::Entry,
            RecordView::CheckpointEnd(_) => RecordKind::CheckpointEnd,
        }
    }
}

/// Reads the payload as its kind. Shared by the writer (before writing) and the reader (after
/// the checksum), so both sides hold every record to the same rules.
fn view(kind: RecordKind, payload: &[u8]) -> Result<RecordView<'_>, RecordError> {
    if payload.len() > kind.payload_bytes_max() {
        return Err(RecordError::BadLength);
    }
    match kind {
        RecordKind::Entry => Ok(RecordView::Entry(payload)),
        RecordKind::CheckpointEnd => match postcard::take_from_bytes::<CheckpointEnd>(payload) {
            Ok((end, [])) => Ok(RecordView::CheckpointEnd(end)),
            _ => Err(RecordError::BadPayload),
        },
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut digest = CASTAGNOLI.digest();
    digest.update(&header[field::CHECKED]);
    digest.update(payload);
    digest.finalize()
}

/// Decodes the record at the start of `buf`, returning it and the bytes it spans. Any bytes are
/// safe to pass.
pub fn decode_record(buf: &[u8]) -> Result<(RecordView<'_>, usize), RecordError> {
    let header = RecordHeader::new_checked(buf)?;
    let len = header.record_len();
    let payload = buf
        .get(WAL_HEADER_BYTES..len)
        .ok_or(RecordError::Incomplete)?;
    if checksum(buf, payload) != header.crc() {
        return Err(RecordError::BadChecksum);
    }
    Ok((view(header.kind(), payload)?, len))
}

/// Writes one record of `kind` holding `payload` to the start of `out`, returning its length.
/// `out` must have room for it (`WAL_RECORD_BYTES_MAX` always does).
pub fn encode_record(
    kind: RecordKind,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, RecordError> {
    let expected = view(kind, payload)?;
    let len = WAL_HEADER_BYTES + payload.len();
    assert!(
        out.len() >= len,
        "record buffer of {} bytes cannot hold {len}",
        out.len()
    );
    out[field::MAGIC].copy_from_slice(&MAGIC);
    out[field::KIND] = kind as u8;
    out[field::RESERVED] = 0;
    out[field::PAYLOAD_LEN].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[WAL_HEADER_BYTES..len].copy_from_slice(payload);
    let crc = checksum(out, payload);
    out[field::CRC].copy_from_slice(&crc.to_le_bytes());
    // Read it back: a record that would not replay must never reach the disk.
    assert_eq!(decode_record(&out[..len]), Ok((expected, len)));
    Ok(len)
}

/// Writes the record that closes a snapshot.
pub fn encode_checkpoint_end(end: &CheckpointEnd, out: &mut [u8]) -> Result<usize, RecordError> {
    let mut payload = [0u8; CHECKPOINT_END_BYTES_MAX];
    let used = postcard::to_slice(end, &mut payload).expect("fits CHECKPOINT_END_BYTES_MAX");
    encode_record(RecordKind::CheckpointEnd, used, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WAL_RECORD_BYTES_MAX;
    use crate::random::Prng;

    fn sample(payload: &[u8]) -> ([u8; WAL_RECORD_BYTES_MAX], usize) {
        let mut out = [0u8; WAL_RECORD_BYTES_MAX];
        let n = encode_record(RecordKind::Entry, payload, &mut out).unwrap();
        (out, n)
    }

    /// The table is CRC-32C's: its check value, so records written before this table was chosen
    /// (and by any other CRC-32C) still replay.
    #[test]
    fn checksum_is_crc32c() {
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
    }

    /// Both kinds read back as written, and the length spans exactly one record.
    #[test]
    fn round_trip() {
        let (out, n) = sample(b"hello");
        assert_eq!(n, WAL_HEADER_BYTES + 5);
        assert_eq!(decode_record(&out), Ok((RecordView::Entry(b"hello"), n)));
        let end = CheckpointEnd {
            entries: u32::MAX,
            state_hash: u64::MAX,
        };
        let mut out = [0u8; WAL_RECORD_BYTES_MAX];
        let n = encode_checkpoint_end(&end, &mut out).unwrap();
        assert_eq!(n, WAL_HEADER_BYTES + CHECKPOINT_END_BYTES_MAX);
        assert_eq!(
            decode_record(&out[..n]),
            Ok((RecordView::CheckpointEnd(end), n))
        );
        let (out, n) = sample(&[9; WAL_PAYLOAD_BYTES_MAX]);
        assert_eq!(n, WAL_RECORD_BYTES_MAX);
        assert!(decode_record(&out).is_ok());
    }

    /// Every malformation is refused with its own reason, and a cut record is only ever
    /// `Incomplete`, whatever the cut.
    #[test]
    fn refuses_malformed() {
        // Longer than a checkpoint end may be, so changing the kind trips the length bound.
        let (good, n) = sample(b"a payload longer than fifteen bytes");
        for cut in 0..n {
            assert_eq!(
                decode_record(&good[..cut]),
                Err(RecordError::Incomplete),
                "cut {cut}"
            );
        }
        let cases: [(usize, u8, RecordError); 6] = [
            (0, b'X', RecordError::BadMagic),
            (3, 1, RecordError::BadMagic),
            (2, 0, RecordError::BadKind),
            (2, 2, RecordError::BadLength),
            (7, 0x80, RecordError::BadLength),
            (12, b'q', RecordError::BadChecksum),
        ];
        for (at, byte, err) in cases {
            let mut bad = good;
            bad[at] = byte;
            assert_eq!(decode_record(&bad[..n]), Err(err), "byte {at} = {byte}");
        }
        assert_eq!(decode_record(b"X"), Err(RecordError::BadMagic));
        assert_eq!(
            encode_record(RecordKind::Entry, &[0; 901], &mut [0; 1024]),
            Err(RecordError::BadLength)
        );
        assert_eq!(
            encode_record(RecordKind::CheckpointEnd, b"\xff", &mut [0; 64]),
            Err(RecordError::BadPayload)
        );
    }

    /// A record whose checksum matches but whose checkpoint-end payload does not decode exactly
    /// is refused, so only the writer's own encoding is ever accepted.
    #[test]
    fn refuses_checkpoint_end_with_trailing_bytes() {
        let mut out = [0u8; 64];
        let n = encode_checkpoint_end(
            &CheckpointEnd {
                entries: 1,
                state_hash: 2,
            },
            &mut out,
        )
        .unwrap();
        // Rewrite the record with one trailing byte and a fresh, matching checksum.
        out[n] = 0;
        out[field::PAYLOAD_LEN].copy_from_slice(&((n + 1 - WAL_HEADER_BYTES) as u32).to_le_bytes());
        let crc = checksum(&out, &out[WAL_HEADER_BYTES..n + 1]);
        out[field::CRC].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record(&out[..n + 1]), Err(RecordError::BadPayload));
    }

    /// The checksum covers the header: an entry record whose kind byte is rewritten to a
    /// checkpoint end is refused even though its payload would decode as one.
    #[test]
    fn checksum_covers_the_header() {
        let mut payload = [0u8; CHECKPOINT_END_BYTES_MAX];
        let end = CheckpointEnd {
            entries: 3,
            state_hash: 4,
        };
        let used = postcard::to_slice(&end, &mut payload).unwrap().len();
        let (mut out, n) = sample(&payload[..used]);
        out[field::KIND] = RecordKind::CheckpointEnd as u8;
        assert_eq!(decode_record(&out[..n]), Err(RecordError::BadChecksum));
    }

    /// Decoding random bytes, and random bytes behind a valid magic, never panics and never
    /// claims more bytes than it was given.
    #[test]
    fn never_panics_on_any_bytes() {
        let mut prng = Prng::new(7);
        let mut buf = [0u8; 64];
        for round in 0..20_000 {
            buf.iter_mut().for_each(|b| *b = prng.next_u64() as u8);
            if round % 2 == 0 {
                buf[..4].copy_from_slice(&[b'M', b'W', 1 + (round % 4) as u8 / 2, 0]);
                buf[5..8].fill(0);
            }
            let len = (prng.next_u64() % 65) as usize;
            if let Ok((_, n)) = decode_record(&buf[..len]) {
                assert!(n <= len);
            }
        }
    }
}
