//! The write-ahead log: how a node's acknowledged entries survive a crash, and how they come back.
//!
//! The core owns the format and the rules; the host (or the simulator) owns the files and the
//! fsyncs. A log is a sequence of `record`s, each with its own CRC32C; `replay` reads them back
//! with bounded memory. `docs/wal.md` gives the byte layout, the recovery rules and the crash-safe
//! checkpoint swap. `snapshot` writes
//! the one snapshot format both the daemon and the simulator use.
//!
//! Invariants:
//! - A record is written whole and read back before it may reach the disk (`encode_record`
//!   asserts it decodes), so a bad record on disk is a torn write or corruption, never a format
//!   bug.
//! - Replay yields a prefix of the records written, in order, and stops at the first byte that is
//!   not part of a good record; the host truncates the log there (`Summary::good_bytes`) before it
//!   appends again, so a later good record never sits behind a bad one.
//! - Replay never panics, whatever the bytes, and never holds more than one window of them.
//! - A snapshot counts only if its last record is a `CheckpointEnd` that counts all its entry
//!   records; a snapshot cut anywhere is ignored and recovery falls back to the previous
//!   generation.
//! - Writes happen only when an entry is accepted or a checkpoint is due: a cluster at rest
//!   writes nothing.

pub mod record;
pub mod replay;
pub mod snapshot;

pub use record::{
    decode_record, encode_checkpoint_end, encode_record, CheckpointEnd, RecordError, RecordHeader,
    RecordKind, RecordView,
};
pub use replay::{scan, Records, Replayer, Stop, Summary};
pub use snapshot::SnapshotEncoder;

/// Whether a log of `wal_bytes` should now be compacted into a snapshot, given the node's bound
/// (`config::WAL_CHECKPOINT_BYTES` unless a test configuration lowers it). Checked after an
/// append, never on a timer, so an idle node never rewrites its files.
pub fn checkpoint_due(wal_bytes: u64, bound_bytes: u64) -> bool {
    wal_bytes >= bound_bytes
}
