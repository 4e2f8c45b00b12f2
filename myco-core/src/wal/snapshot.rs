//! The snapshot format, written in one place for the daemon's store and the simulator's disk: every
//! live entry as an `Entry` record, then one `CheckpointEnd` that counts them and carries the state
//! hash they rebuild.
//!
//! The encoder is sans-IO: it writes one record at a time into the caller's buffer, and the caller
//! decides when bytes reach a file (the host batches them; the simulator appends to memory).
//!
//! Invariants:
//! - The end record's count is the number of entry records this encoder wrote, never a count the
//!   caller supplies, so a snapshot that replays whole (`Summary::is_valid_snapshot`) holds exactly
//!   the entries handed in.
//! - No entry follows the end record: `encode_end` consumes the encoder.

use super::record::{encode_checkpoint_end, encode_record, CheckpointEnd, RecordError, RecordKind};

/// Encodes one snapshot, record by record.
#[derive(Debug)]
pub struct SnapshotEncoder {
    entries: u32,
    state_hash: u64,
}

impl SnapshotEncoder {
    /// A snapshot of a state whose hash is `state_hash`.
    pub fn new(state_hash: u64) -> SnapshotEncoder {
        SnapshotEncoder {
            entries: 0,
            state_hash,
        }
    }

    /// Writes the record of one entry to the start of `out` (`WAL_RECORD_BYTES_MAX` always has
    /// room) and returns its length. On an error nothing was counted.
    pub fn encode_entry(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        let len = encode_record(RecordKind::Entry, payload, out)?;
        self.entries = self
            .entries
            .checked_add(1)
            .expect("a snapshot holds at most SERVICES_MAX entries");
        Ok(len)
    }

    /// Writes the record that closes the snapshot to the start of `out` and returns its length.
    pub fn encode_end(self, out: &mut [u8]) -> Result<usize, RecordError> {
        let end = CheckpointEnd {
            entries: self.entries,
            state_hash: self.state_hash,
        };
        encode_checkpoint_end(&end, out)
    }

    /// How many entry records have been written so far.
    pub fn entries(&self) -> u32 {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WAL_RECORD_BYTES_MAX;
    use crate::wal::replay::scan;

    /// A snapshot written by the encoder replays as a whole snapshot with the entries and hash
    /// handed in, and the same snapshot without its end record does not.
    #[test]
    fn encoded_snapshot_replays_whole() {
        let mut image = [0u8; 4 * WAL_RECORD_BYTES_MAX];
        let mut used = 0;
        let mut encoder = SnapshotEncoder::new(0xfeed);
        for payload in [&b"a"[..], b"bc", b"def"] {
            used += encoder.encode_entry(payload, &mut image[used..]).unwrap();
        }
        assert_eq!(encoder.entries(), 3);
        let entries_only = used;
        used += encoder.encode_end(&mut image[used..]).unwrap();
        let summary = scan(&image[..used]);
        assert!(summary.is_valid_snapshot());
        assert_eq!(
            summary.checkpoint_end,
            Some(CheckpointEnd {
                entries: 3,
                state_hash: 0xfeed
            })
        );
        assert!(!scan(&image[..entries_only]).is_valid_snapshot());
    }
}
