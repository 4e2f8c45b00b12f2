//! Replay: read records from the start of a log until the bytes end or stop being good.
//!
//! Two readers share one set of rules (`Tally`): `Records` walks a whole buffer in place, and
//! `Replayer` streams a file of any size through a fixed window that the host fills, so replay
//! needs `N` bytes of memory however long the log is. Both stop at the first record that is not
//! good and report `good_bytes`, the offset just past the last good record: everything after it
//! is cut off, because a record the log cannot vouch for may not be applied and every later byte
//! is unreachable without its length.
//!
//! A snapshot is a log of entry records closed by a `CheckpointEnd` that counts every one of
//! them; anything else (a cut snapshot, a missing or mismatched end, bytes after the end) is not
//! one.

use super::record::{decode_record, CheckpointEnd, RecordError, RecordView};
use crate::config::{WAL_RECORD_BYTES_MAX, WAL_REPLAY_WINDOW_BYTES};

/// Why replay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every byte belonged to a good record.
    Clean,
    /// The bytes end inside a record: a write that a crash cut short.
    TornTail,
    /// A record failed a check; it and everything after it are not trusted.
    Corrupt(RecordError),
}

/// What replay found, once the bytes ran out or stopped being good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Offset just past the last good record: where to truncate the log.
    pub good_bytes: u64,
    /// Entry records before `good_bytes`.
    pub entries: u64,
    pub stop: Stop,
    /// The last good record, if it is a checkpoint end.
    pub checkpoint_end: Option<CheckpointEnd>,
}

impl Summary {
    /// A snapshot is whole only if nothing follows its checkpoint end and the end counts every
    /// entry record before it; a snapshot cut anywhere fails one of the two.
    pub fn is_valid_snapshot(&self) -> bool {
        self.stop == Stop::Clean
            && matches!(self.checkpoint_end, Some(end) if u64::from(end.entries) == self.entries)
    }
}

/// The accounting both readers share.
#[derive(Clone, Copy, Debug)]
struct Tally {
    good_bytes: u64,
    entries: u64,
    last_end: Option<CheckpointEnd>,
    corrupt: Option<RecordError>,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            good_bytes: 0,
            entries: 0,
            last_end: None,
            corrupt: None,
        }
    }

    /// Takes the record at the start of `buf`. `None` means either more bytes are needed or
    /// replay has stopped for good (`corrupt` is set).
    fn advance<'b>(&mut self, buf: &'b [u8]) -> Option<(RecordView<'b>, usize)> {
        if self.corrupt.is_some() {
            return None;
        }
        match decode_record(buf) {
            Ok((record, len)) => {
                self.accept(record, len);
                Some((record, len))
            }
            Err(RecordError::Incomplete) => None,
            Err(e) => {
                self.corrupt = Some(e);
                None
            }
        }
    }

    fn accept(&mut self, record: RecordView<'_>, len: usize) {
        assert!(len > 0 && len <= WAL_RECORD_BYTES_MAX);
        assert!(
            self.corrupt.is_none(),
            "nothing is accepted after a bad record"
        );
        let good_bytes_before = self.good_bytes;
        self.good_bytes += len as u64;
        self.last_end = match record {
            RecordView::Entry(_) => {
                self.entries += 1;
                None
            }
            RecordView::CheckpointEnd(end) => Some(end),
        };
        // Replay only moves forward: the truncation point is always past every record taken.
        assert!(self.good_bytes > good_bytes_before);
    }

    /// `leftover` bytes were read after the last good record and never formed one.
    fn finish(&self, leftover: usize) -> Summary {
        let stop = match (self.corrupt, leftover) {
            (Some(e), _) => Stop::Corrupt(e),
            (None, 0) => Stop::Clean,
            (None, _) => Stop::TornTail,
        };
        Summary {
            good_bytes: self.good_bytes,
            entries: self.entries,
            stop,
            checkpoint_end: self.last_end,
        }
    }
}

/// The good records at the start of a whole buffer, in order.
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    tally: Tally,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8]) -> Records<'a> {
        Records {
            bytes,
            at: 0,
            tally: Tally::new(),
        }
    }

    /// Skips any records not yet taken and reports why the log ended.
    pub fn finish(mut self) -> Summary {
        while self.next().is_some() {}
        assert_eq!(self.tally.good_bytes, self.at as u64);
        self.tally.finish(self.bytes.len() - self.at)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        let (record, len) = self.tally.advance(&self.bytes[self.at..])?;
        self.at += len;
        Some(record)
    }
}

/// Replays a whole buffer, discarding the records: what a validity check needs.
pub fn scan(bytes: &[u8]) -> Summary {
    Records::new(bytes).finish()
}

/// A streaming replayer over a window of `N` bytes that the host fills from a file.
///
/// The host's loop: take every record with `poll_record`; if `is_stopped`, stop reading; else
/// read into `space()`, report the count with `handle_filled` (zero bytes means end of file) and
/// go round again; at the end, `finish`. After `poll_record` returns `None` the window holds less
/// than one record, so `space()` is never empty.
pub struct Replayer<const N: usize = WAL_REPLAY_WINDOW_BYTES> {
    window: [u8; N],
    /// First byte not yet taken as a record.
    start: usize,
    /// One past the last byte the host filled.
    end: usize,
    tally: Tally,
}

impl<const N: usize> Default for Replayer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Replayer<N> {
    const WINDOW_FITS_A_RECORD: () = assert!(N >= WAL_RECORD_BYTES_MAX);

    pub const fn new() -> Replayer<N> {
        // Refuses, at compile time, a window that could never hold a largest record.
        let () = Self::WINDOW_FITS_A_RECORD;
        Replayer {
            window: [0; N],
            start: 0,
            end: 0,
            tally: Tally::new(),
        }
    }

    /// The free end of the window, after moving the unread bytes to its front.
    pub fn space(&mut self) -> &mut [u8] {
        let unread = self.end - self.start;
        assert!(
            unread < WAL_RECORD_BYTES_MAX,
            "poll every record before reading more"
        );
        self.window.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = unread;
        &mut self.window[unread..]
    }

    /// The host wrote `n` bytes at the front of the last `space()`.
    pub fn handle_filled(&mut self, n: usize) {
        assert!(
            n <= N - self.end,
            "filled {n} bytes into {} of space",
            N - self.end
        );
        self.end += n;
    }

    /// The next good record, or `None` when the window needs more bytes or replay has stopped.
    pub fn poll_record(&mut self) -> Option<RecordView<'_>> {
        let (record, len) = self.tally.advance(&self.window[self.start..self.end])?;
        self.start += len;
        assert!(self.start <= self.end);
        Some(record)
    }

    /// Replay found a bad record; nothing more will come out, so stop reading.
    pub fn is_stopped(&self) -> bool {
        self.tally.corrupt.is_some()
    }

    /// Why the log ended, once the host has fed it all (or replay stopped).
    pub fn finish(&self) -> Summary {
        self.tally.finish(self.end - self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WAL_PAYLOAD_BYTES_MAX;
    use crate::wal::record::{encode_checkpoint_end, encode_record, RecordKind};

    const LOG_BYTES_MAX: usize = 4096;
    const RECORDS_MAX: usize = 8;

    /// A log written record by record, remembering where each record ends.
    struct Log {
        bytes: [u8; LOG_BYTES_MAX],
        len: usize,
        ends: heapless::Vec<usize, RECORDS_MAX>,
    }

    impl Log {
        fn new() -> Log {
            Log {
                bytes: [0; LOG_BYTES_MAX],
                len: 0,
                ends: heapless::Vec::new(),
            }
        }
        fn entry(mut self, payload: &[u8]) -> Log {
            self.len +=
                encode_record(RecordKind::Entry, payload, &mut self.bytes[self.len..]).unwrap();
            self.ends.push(self.len).unwrap();
            self
        }
        fn end(mut self, entries: u32) -> Log {
            let end = CheckpointEnd {
                entries,
                state_hash: 0xfeed,
            };
            self.len += encode_checkpoint_end(&end, &mut self.bytes[self.len..]).unwrap();
            self.ends.push(self.len).unwrap();
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Log {
            self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
            self
        }
        fn as_bytes(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
        /// Where the record holding byte `at` starts.
        fn start_of(&self, at: usize) -> usize {
            self.ends.iter().copied().rfind(|&e| e <= at).unwrap_or(0)
        }
    }

    /// Five entries of different sizes, each payload filled with its own number.
    fn small_log() -> Log {
        Log::new()
            .entry(&[])
            .entry(&[2])
            .entry(&[3; 20])
            .entry(&[4; 33])
            .entry(&[5; 7])
    }

    /// Streams `bytes` through a replayer in chunks of `chunk`, handing each record to `on`.
    fn stream<const N: usize>(
        bytes: &[u8],
        chunk: usize,
        mut on: impl FnMut(RecordView<'_>),
    ) -> Summary {
        let mut replayer = Replayer::<N>::new();
        let mut fed = 0;
        loop {
            while let Some(record) = replayer.poll_record() {
                on(record);
            }
            if replayer.is_stopped() {
                break;
            }
            let space = replayer.space();
            let n = chunk.min(space.len()).min(bytes.len() - fed);
            if n == 0 {
                break;
            }
            space[..n].copy_from_slice(&bytes[fed..fed + n]);
            fed += n;
            replayer.handle_filled(n);
        }
        replayer.finish()
    }

    /// Asserts that both readers yield exactly the records of `log` that end at or before
    /// `good_bytes`, and returns their (equal) summary.
    fn replay_both(bytes: &[u8], log: &Log, good_bytes: usize, chunk: usize) -> Summary {
        let records = Records::new(log.as_bytes()).zip(log.ends.iter());
        let want: heapless::Vec<RecordView<'_>, RECORDS_MAX> = records
            .filter(|(_, &end)| end <= good_bytes)
            .map(|(r, _)| r)
            .collect();
        let got: heapless::Vec<RecordView<'_>, RECORDS_MAX> = Records::new(bytes).collect();
        assert_eq!(got, want);
        let scanned = scan(bytes);
        let mut taken = 0;
        let streamed = stream::<WAL_REPLAY_WINDOW_BYTES>(bytes, chunk, |r| {
            assert_eq!(r, want[taken]);
            taken += 1;
        });
        assert_eq!(taken, want.len());
        assert_eq!(streamed, scanned);
        assert_eq!(scanned.good_bytes, good_bytes as u64);
        scanned
    }

    /// A log cut at any offset replays exactly the records wholly before the cut, calls a cut
    /// inside a record a torn tail, and a cut on a boundary clean.
    #[test]
    fn every_cut_replays_exactly_the_whole_records_before_it() {
        let log = small_log();
        for cut in 0..=log.len {
            let good = log.start_of(cut);
            let summary = replay_both(&log.as_bytes()[..cut], &log, good, 1 + cut % 13);
            let stop = if good == cut {
                Stop::Clean
            } else {
                Stop::TornTail
            };
            assert_eq!(summary.stop, stop, "cut {cut}");
        }
    }

    /// Flipping any single bit of a log stops replay at the record that holds it, with every
    /// record before it intact and none after it applied.
    #[test]
    fn every_flipped_bit_stops_at_the_record_it_hit() {
        let log = small_log();
        for at in 0..log.len {
            for bit in 0..8 {
                let mut bytes = log.bytes;
                bytes[at] ^= 1 << bit;
                let summary = replay_both(&bytes[..log.len], &log, log.start_of(at), 1 + at % 7);
                assert_ne!(summary.stop, Stop::Clean, "byte {at} bit {bit}");
            }
        }
    }

    /// Whatever follows a good log (garbage, a zero-filled tail, a header claiming 4 GiB, half a
    /// header) is cut off, and a huge length is refused at once rather than waited for.
    #[test]
    fn anything_after_a_good_log_is_cut_off() {
        let huge = [b'M', b'W', 1, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        let cases: [(&[u8], Stop); 5] = [
            (b"garbage!", Stop::Corrupt(RecordError::BadMagic)),
            (&[0; 300], Stop::Corrupt(RecordError::BadMagic)),
            (&huge, Stop::Corrupt(RecordError::BadLength)),
            (b"MW\x01", Stop::TornTail),
            (b"M", Stop::TornTail),
        ];
        for (tail, stop) in cases {
            let log = small_log().raw(tail);
            let good = small_log().len;
            for chunk in [1, 5, 64, LOG_BYTES_MAX] {
                assert_eq!(
                    replay_both(log.as_bytes(), &log, good, chunk).stop,
                    stop,
                    "{tail:?}"
                );
            }
        }
    }

    /// A window exactly one largest record long still replays a log of largest records, fed in
    /// any chunk size: the window bound is tight, not approximate.
    #[test]
    fn smallest_window_replays_largest_records() {
        let big = [7u8; WAL_PAYLOAD_BYTES_MAX];
        let log = Log::new()
            .entry(&big)
            .entry(&big)
            .entry(&big)
            .entry(b"last");
        for chunk in [1, 100, WAL_RECORD_BYTES_MAX, LOG_BYTES_MAX] {
            let mut n = 0;
            let summary = stream::<WAL_RECORD_BYTES_MAX>(log.as_bytes(), chunk, |_| n += 1);
            assert_eq!(
                (n, summary.stop, summary.good_bytes),
                (4, Stop::Clean, log.len as u64)
            );
        }
    }

    /// A snapshot counts only when a matching checkpoint end closes it and nothing follows.
    #[test]
    fn snapshot_is_valid_only_when_closed_by_a_matching_end() {
        let entries = || Log::new().entry(b"a").entry(b"b").entry(b"c");
        assert!(scan(entries().end(3).as_bytes()).is_valid_snapshot());
        assert!(scan(Log::new().end(0).as_bytes()).is_valid_snapshot());
        assert!(!scan(&[]).is_valid_snapshot());
        assert!(!scan(entries().as_bytes()).is_valid_snapshot());
        assert!(!scan(entries().end(2).as_bytes()).is_valid_snapshot());
        assert!(!scan(entries().end(4).as_bytes()).is_valid_snapshot());
        assert!(!scan(entries().end(3).entry(b"d").as_bytes()).is_valid_snapshot());
        assert!(!scan(entries().end(3).raw(b"M").as_bytes()).is_valid_snapshot());
        let whole = entries().end(3);
        for cut in 0..whole.len {
            assert!(
                !scan(&whole.as_bytes()[..cut]).is_valid_snapshot(),
                "cut {cut}"
            );
        }
    }
}
