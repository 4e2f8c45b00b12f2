//! Group commit for the write-ahead log. Appends the core asks for are encoded into `pending`;
//! the loop writes all of them with one write and one fdatasync (through io_uring, or inline with
//! poll), while the next batch collects in the other buffer. A ticket is durable when the write
//! that carried it completed, and only then is its deploy acknowledged.
//!
//! On a full disk with a full batch, an append is skipped instead (`skip`): its entry is held in
//! memory only, and no ticket from the first skipped one on is reported durable until a snapshot
//! holding the whole store (`checkpointed`) makes them all durable.

use myco_core::wal::{encode_record, RecordKind};

/// One batch. A full batch waits for the write in flight; the arena bounds what one burst of
/// gossip can append (`ARENA_BYTES`), so this is rarely reached.
pub const BATCH_BYTES: usize = 256 * 1024;

pub struct WalQueue {
    pending: &'static mut [u8],
    pending_len: usize,
    /// The buffer not in `pending`; `None` while the backend holds it for a write.
    spare: Option<&'static mut [u8]>,
    /// Highest ticket in `pending`, and in the write in flight.
    pending_ticket: u64,
    inflight_ticket: u64,
    inflight_len: usize,
    /// Highest ticket appended, and highest durable.
    issued: u64,
    durable: u64,
    /// The first ticket skipped since the last snapshot: later writes do not make it durable.
    unlogged_from: Option<u64>,
    pub appends: u64,
    pub writes: u64,
}

/// The batch to write: give `buf` to the backend and `len` bytes of it go to the log.
pub struct Batch {
    pub buf: &'static mut [u8],
    pub len: usize,
}

impl WalQueue {
    /// A queue over two batch buffers of at least `BATCH_BYTES` (the arena's).
    pub fn new([pending, spare]: [&'static mut [u8]; 2]) -> WalQueue {
        assert!(pending.len() >= BATCH_BYTES && spare.len() >= BATCH_BYTES);
        WalQueue {
            pending,
            pending_len: 0,
            spare: Some(spare),
            pending_ticket: 0,
            inflight_ticket: 0,
            inflight_len: 0,
            issued: 0,
            durable: 0,
            unlogged_from: None,
            appends: 0,
            writes: 0,
        }
    }

    /// Whether `entry` fits the current batch; if not, the caller writes the batch first.
    pub fn fits(&self, entry: &[u8]) -> bool {
        self.pending_len + myco_core::config::WAL_HEADER_BYTES + entry.len() <= BATCH_BYTES
    }

    pub fn push(&mut self, entry: &[u8], ticket: u64) {
        assert!(self.fits(entry), "the caller makes room first");
        assert!(ticket > self.issued, "tickets grow");
        let len = encode_record(
            RecordKind::Entry,
            entry,
            &mut self.pending[self.pending_len..],
        )
        .expect("the core appends only entries it decoded");
        self.pending_len += len;
        self.pending_ticket = ticket;
        self.issued = ticket;
        self.appends += 1;
    }

    /// Takes note of an append that is not logged (the disk and the batch are full): `ticket` and
    /// every later one stay not durable until `checkpointed`.
    pub fn skip(&mut self, ticket: u64) {
        assert!(ticket > self.issued, "tickets grow");
        self.issued = ticket;
        self.unlogged_from.get_or_insert(ticket);
        assert!(self.durable() < ticket);
    }

    pub fn has_pending(&self) -> bool {
        self.pending_len > 0
    }

    /// Takes the pending batch for writing, if there is one and no other write is in flight.
    pub fn take(&mut self) -> Option<Batch> {
        if self.pending_len == 0 || self.inflight_len > 0 {
            return None;
        }
        let spare = self.spare.take().expect("no write in flight");
        let buf = std::mem::replace(&mut self.pending, spare);
        self.inflight_len = std::mem::take(&mut self.pending_len);
        self.inflight_ticket = self.pending_ticket;
        Some(Batch {
            buf,
            len: self.inflight_len,
        })
    }

    pub fn in_flight(&self) -> bool {
        self.inflight_len > 0
    }

    /// Bytes of the write in flight (to write them again after a disk-full failure).
    pub fn inflight_len(&self) -> usize {
        self.inflight_len
    }

    /// The write in flight is durable: returns its length (for the store's offset) and takes the
    /// buffer back.
    pub fn written(&mut self, buf: &'static mut [u8]) -> usize {
        assert!(self.in_flight());
        self.spare = Some(buf);
        self.durable = self.inflight_ticket;
        self.writes += 1;
        std::mem::take(&mut self.inflight_len)
    }

    /// A snapshot made every appended entry durable: whatever waits in `pending` is in it. Only
    /// between writes, so the snapshot cannot race a write to the old log.
    pub fn checkpointed(&mut self) {
        assert!(!self.in_flight());
        self.pending_len = 0;
        self.durable = self.issued;
        self.unlogged_from = None;
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The highest ticket below which every append is on disk.
    pub fn durable(&self) -> u64 {
        match self.unlogged_from {
            Some(first) => self.durable.min(first - 1),
            None => self.durable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::wal::{RecordView, Records};

    fn queue() -> WalQueue {
        let leak = crate::arena::leak_bytes;
        WalQueue::new([leak(BATCH_BYTES), leak(BATCH_BYTES)])
    }

    #[test]
    fn batches_alternate_buffers_and_tickets_follow_writes() {
        let mut q = queue();
        q.push(b"abc", 1);
        q.push(b"defg", 2);
        let batch = q.take().expect("pending");
        let records: Vec<_> = Records::new(&batch.buf[..batch.len])
            .map(|r| match r {
                RecordView::Entry(payload) => payload.to_vec(),
                RecordView::CheckpointEnd(_) => panic!("only entries were pushed"),
            })
            .collect();
        assert_eq!(records, [b"abc".to_vec(), b"defg".to_vec()]);
        q.push(b"h", 3);
        assert!(q.take().is_none(), "one write at a time");
        assert_eq!(q.durable(), 0);
        assert_eq!(q.written(batch.buf), batch.len);
        assert_eq!(q.durable(), 2);
        let next = q.take().expect("the batch that waited");
        assert_eq!(q.written(next.buf), next.len);
        assert_eq!((q.durable(), q.issued(), q.writes), (3, 3, 2));
    }

    #[test]
    fn a_checkpoint_makes_the_pending_batch_durable() {
        let mut q = queue();
        q.push(&[7; 900], 1);
        q.checkpointed();
        assert!(!q.has_pending());
        assert_eq!(q.durable(), 1);
    }

    /// A skipped append holds back every later ticket, however many writes complete, until a
    /// snapshot makes all of them durable.
    #[test]
    fn a_skipped_append_is_durable_only_after_a_snapshot() {
        let mut q = queue();
        q.push(b"a", 1);
        q.skip(2);
        q.push(b"c", 3);
        let batch = q.take().expect("pending");
        q.written(batch.buf);
        assert_eq!((q.durable(), q.issued()), (1, 3));
        q.checkpointed();
        assert_eq!(q.durable(), 3);
        q.push(b"d", 4);
        let batch = q.take().expect("pending");
        q.written(batch.buf);
        assert_eq!(q.durable(), 4);
    }

    #[test]
    fn a_full_batch_says_so() {
        let mut q = queue();
        let entry = [1u8; 900];
        let mut ticket = 0;
        while q.fits(&entry) {
            ticket += 1;
            q.push(&entry, ticket);
        }
        assert!(ticket > 200);
        assert!(q.take().is_some());
        assert!(q.fits(&entry));
    }
}
