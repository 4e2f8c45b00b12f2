//! A simulated disk per node: a snapshot image, a synced log, and pending (unsynced) appends.
//!
//! Appends land in `pending`; a sync (once per tick, like an fdatasync completing) moves them to
//! the log and completes their tickets. A crash drops the pending bytes, but may first tear them:
//! a random prefix reaches the log, possibly with a flipped bit, as a power cut mid-write leaves
//! a sector. A checkpoint replaces snapshot and log atomically, the outcome the host's
//! generation swap guarantees at every step (tested in myco-host). Buffers are reserved at boot.

use myco_core::config::{SERVICES_MAX, WAL_CHECKPOINT_BYTES, WAL_RECORD_BYTES_MAX};
use myco_core::random::Prng;
use myco_core::state::store::Store;
use myco_core::wal::record::RecordView;
use myco_core::wal::record::{encode_record, RecordKind};
use myco_core::wal::replay::{Records, Stop};
use myco_core::wal::snapshot::SnapshotEncoder;

const LOG_BYTES_MAX: usize = 2 * WAL_CHECKPOINT_BYTES as usize;
const SNAPSHOT_BYTES_MAX: usize = SERVICES_MAX * WAL_RECORD_BYTES_MAX + 64;

pub struct SimDisk {
    snapshot: Vec<u8>,
    log: Vec<u8>,
    pending: Vec<u8>,
    /// Ticket of the newest pending append.
    pending_ticket: Option<u64>,
    pub checkpoint_requested: bool,
    /// Bytes ever written (appends and snapshots): a cluster at rest must add none.
    pub written_bytes: u64,
}

/// What recovery found.
pub struct Recovery {
    pub wal_bytes: u64,
    pub truncated: bool,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk {
            snapshot: Vec::with_capacity(SNAPSHOT_BYTES_MAX),
            log: Vec::with_capacity(LOG_BYTES_MAX),
            pending: Vec::with_capacity(LOG_BYTES_MAX),
            pending_ticket: None,
            checkpoint_requested: false,
            written_bytes: 0,
        }
    }

    pub fn append(&mut self, entry: &[u8], ticket: u64) {
        let mut record = [0u8; WAL_RECORD_BYTES_MAX];
        let n = encode_record(RecordKind::Entry, entry, &mut record).expect("entries fit a record");
        self.pending.extend_from_slice(&record[..n]);
        self.pending_ticket = Some(ticket);
        self.written_bytes += n as u64;
    }

    /// Completes pending appends; returns the newest durable ticket.
    pub fn sync(&mut self) -> Option<u64> {
        self.log.extend_from_slice(&self.pending);
        self.pending.clear();
        self.pending_ticket.take()
    }

    /// Writes a snapshot of `store` and empties the log; pending appends are in the store, so
    /// they become durable too. Returns the newest durable ticket.
    pub fn checkpoint<const N: usize, const A: usize>(
        &mut self,
        store: &Store<N, A>,
    ) -> Option<u64> {
        self.snapshot.clear();
        let mut record = [0u8; WAL_RECORD_BYTES_MAX];
        let mut encoder = SnapshotEncoder::new(store.state_hash());
        for slot in store.slots() {
            let n = encoder
                .encode_entry(&store.entry(slot), &mut record)
                .expect("fits");
            self.snapshot.extend_from_slice(&record[..n]);
        }
        assert_eq!(
            encoder.entries() as usize,
            store.len(),
            "every slot is written"
        );
        let n = encoder.encode_end(&mut record).expect("fits");
        self.snapshot.extend_from_slice(&record[..n]);
        self.written_bytes += self.snapshot.len() as u64;
        self.log.clear();
        self.pending.clear();
        self.checkpoint_requested = false;
        self.pending_ticket.take()
    }

    /// Power loss: pending bytes are lost, except perhaps a torn prefix, perhaps with a bit flip.
    pub fn crash(&mut self, rng: &mut Prng) {
        if !self.pending.is_empty() && rng.chance(1, 2) {
            let torn = rng.below(self.pending.len() as u64) as usize;
            let start = self.log.len();
            self.log.extend_from_slice(&self.pending[..torn]);
            if torn > 0 && rng.chance(1, 2) {
                let at = start + rng.below(torn as u64) as usize;
                self.log[at] ^= 1 << rng.below(8);
            }
        }
        self.pending.clear();
        self.pending_ticket = None;
        self.checkpoint_requested = false;
    }

    /// Writes a record as if it had always been there: the attacker rewriting a stolen disk.
    pub fn inject(&mut self, entry: &[u8]) {
        let mut record = [0u8; WAL_RECORD_BYTES_MAX];
        let n = encode_record(RecordKind::Entry, entry, &mut record).expect("entries fit a record");
        self.log.extend_from_slice(&record[..n]);
    }

    /// The disk is replaced: nothing survives.
    pub fn wipe(&mut self) {
        self.snapshot.clear();
        self.log.clear();
        self.pending.clear();
        self.pending_ticket = None;
        self.checkpoint_requested = false;
    }

    /// Replays snapshot then log into `restore`, truncating the log at the last good record.
    pub fn recover(&mut self, mut restore: impl FnMut(&[u8])) -> Recovery {
        let mut records = Records::new(&self.snapshot);
        for r in records.by_ref() {
            if let RecordView::Entry(e) = r {
                restore(e);
            }
        }
        assert!(
            self.snapshot.is_empty() || records.finish().is_valid_snapshot(),
            "snapshots are atomic"
        );
        let mut records = Records::new(&self.log);
        for r in records.by_ref() {
            if let RecordView::Entry(e) = r {
                restore(e);
            }
        }
        let summary = records.finish();
        let truncated = summary.stop != Stop::Clean;
        self.log.truncate(summary.good_bytes as usize);
        Recovery {
            wal_bytes: self.log.len() as u64,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::config::ARENA_BYTES;
    use myco_core::schema::entry::{encode_entry, EntryBody, Version};

    fn tombstone(name: &str, clock: u64) -> Vec<u8> {
        let body = EntryBody {
            name,
            version: Version { clock, key_id: 1 },
            spec: None,
        };
        let mut out = [0u8; 256];
        let n = encode_entry(&body, &[1; 64], &mut out).unwrap();
        out[..n].to_vec()
    }

    fn recovered(disk: &mut SimDisk) -> (Vec<Vec<u8>>, bool) {
        let mut got = Vec::new();
        let r = disk.recover(|e| got.push(e.to_vec()));
        (got, r.truncated)
    }

    /// Synced appends survive power loss; unsynced ones never come back whole, and a torn or
    /// bit-flipped tail is cut off and reported.
    #[test]
    fn crash_keeps_synced_and_drops_pending() {
        let mut rng = Prng::new(9);
        for _ in 0..50 {
            let mut disk = SimDisk::new();
            disk.append(&tombstone("a", 1), 1);
            assert_eq!(disk.sync(), Some(1));
            disk.append(&tombstone("b", 2), 2);
            disk.append(&tombstone("c", 3), 3);
            disk.crash(&mut rng);
            let (got, _) = recovered(&mut disk);
            assert!(!got.is_empty() && got[0] == tombstone("a", 1));
            assert!(
                got.len() <= 2,
                "a torn write never yields the whole pending tail"
            );
            let (again, truncated) = recovered(&mut disk);
            assert_eq!(again, got, "recovery truncated the log, so it is stable");
            assert!(!truncated);
        }
    }

    /// A checkpoint replaces the log with a snapshot that restores the same state.
    #[test]
    fn checkpoint_restores_the_same_state() {
        let mut store: Box<Store<SERVICES_MAX, ARENA_BYTES>> = Box::new(Store::new());
        let mut disk = SimDisk::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let e = tombstone(name, i as u64 + 1);
            store.merge(&e).unwrap();
            disk.append(&e, i as u64 + 1);
        }
        assert_eq!(disk.checkpoint(&store), Some(3));
        let mut restored: Box<Store<SERVICES_MAX, ARENA_BYTES>> = Box::new(Store::new());
        let (got, truncated) = recovered(&mut disk);
        for e in &got {
            restored.merge(e).unwrap();
        }
        assert!(!truncated);
        assert_eq!(restored.state_hash(), store.state_hash());
    }
}
