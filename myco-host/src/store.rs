//! The file-backed store behind `--state-dir`: a write-ahead log and snapshots, in generations.
//!
//! Files: `snapshot-<gen>` and `wal-<gen>`, `<gen>` a u64 in 20 zero-padded decimal digits so the
//! names sort as their numbers; a checkpoint writes `snapshot-<gen>.tmp` first. The state is the
//! highest valid snapshot followed by the logs of its generation and above. The format and the
//! recovery rules are the core's (`myco_core::wal`); this module only moves bytes and fsyncs.
//! `docs/wal.md` argues that every step of the checkpoint swap is crash-safe.
//!
//! Durability rules: an append returns only after `fdatasync`; creating, renaming or deleting a
//! file returns only after the directory is fsynced. After any failed write or sync the store
//! refuses further writes: the kernel may have dropped the dirty pages and cleared the error, so
//! only a fresh `open`, which replays what is really on disk, knows the state.

use crate::path::StackPath;
use core::fmt::Write as _;
use myco_core::config::WAL_RECORD_BYTES_MAX;
use myco_core::wal::{
    encode_record, CheckpointEnd, RecordError, RecordKind, RecordView, Replayer, SnapshotEncoder,
    Stop, Summary,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Replay reads files through a window this large: one read per 64 KiB, on the stack, once per
/// file, whatever the file's length.
const READ_WINDOW_BYTES: usize = 64 * 1024;
/// Snapshot records are encoded into this buffer and written when it is full; appends encode into
/// its front. Allocated once, at open.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Digits of a generation in a file name: enough for any u64.
const GENERATION_DIGITS: usize = 20;
const TMP_SUFFIX: &str = ".tmp";

const _: () = assert!(WAL_RECORD_BYTES_MAX <= WRITE_BUFFER_BYTES);
const _: () = assert!(u64::MAX.ilog10() as usize + 1 == GENERATION_DIGITS);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Snapshot,
    Wal,
}

impl FileKind {
    const ALL: [FileKind; 2] = [FileKind::Snapshot, FileKind::Wal];

    fn prefix(self) -> &'static str {
        match self {
            FileKind::Snapshot => "snapshot-",
            FileKind::Wal => "wal-",
        }
    }
}

/// A store file's name, on the stack: checkpoints name files after start-up.
type FileName = heapless::String<{ "snapshot-".len() + GENERATION_DIGITS + TMP_SUFFIX.len() }>;

fn file_name(kind: FileKind, generation: u64) -> FileName {
    let mut name = FileName::new();
    write!(
        name,
        "{}{generation:0width$}",
        kind.prefix(),
        width = GENERATION_DIGITS
    )
    .expect("the longest prefix and a u64 fit");
    name
}

/// Reads a store file name: its kind, generation, and whether it is an unfinished `.tmp`. Any
/// other name is not the store's and is left alone.
fn parse_name(name: &str) -> Option<(FileKind, u64, bool)> {
    let (stem, tmp) = match name.strip_suffix(TMP_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let (kind, digits) = FileKind::ALL
        .into_iter()
        .find_map(|k| Some((k, stem.strip_prefix(k.prefix())?)))?;
    if digits.len() != GENERATION_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((kind, digits.parse().ok()?, tmp))
}

/// The store's files found in the directory at open, generations ascending.
#[derive(Debug, Default)]
struct Listing {
    snapshots: Vec<u64>,
    wals: Vec<u64>,
    tmps: Vec<PathBuf>,
}

impl Listing {
    fn read(dir: &Path) -> io::Result<Listing> {
        let mut listing = Listing::default();
        for dirent in fs::read_dir(dir)? {
            let dirent = dirent?;
            let Some(parsed) = dirent.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            match parsed {
                (_, _, true) => listing.tmps.push(dirent.path()),
                (FileKind::Snapshot, generation, false) => listing.snapshots.push(generation),
                (FileKind::Wal, generation, false) => listing.wals.push(generation),
            }
        }
        listing.snapshots.sort_unstable();
        listing.wals.sort_unstable();
        Ok(listing)
    }

    fn generations(&self) -> impl Iterator<Item = u64> + '_ {
        self.snapshots.iter().chain(&self.wals).copied()
    }

    /// Files recovery never reads: unfinished `.tmp`s, and every generation below `base`, which
    /// the whole snapshot `base` makes redundant.
    fn stale<'a>(&'a self, dir: &'a Path, base: u64) -> impl Iterator<Item = PathBuf> + 'a {
        let old = |kind, generations: &'a [u64]| {
            generations
                .iter()
                .filter(move |&&g| g < base)
                .map(move |&g| dir.join(file_name(kind, g).as_str()))
        };
        let snapshots = old(FileKind::Snapshot, &self.snapshots);
        self.tmps
            .iter()
            .cloned()
            .chain(snapshots)
            .chain(old(FileKind::Wal, &self.wals))
    }
}

/// What `open` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The generation appends now go to.
    pub generation: u64,
    /// The snapshot replayed, if any, and the checkpoint end that closed it: compare its
    /// `state_hash` with the rebuilt state's.
    pub snapshot: Option<(u64, CheckpointEnd)>,
    /// Snapshots skipped because they were not whole (media corruption; a crash leaves only
    /// `.tmp` files, which are deleted).
    pub snapshots_rejected: u32,
    /// Entry records replayed from logs.
    pub wal_entries: u64,
    /// A log ended in a torn or corrupt record and was cut back to its last good record.
    pub truncated: bool,
    pub truncated_bytes: u64,
    /// Why the first cut log stopped; `Clean` if none was cut.
    pub wal_stop: Stop,
}

impl OpenReport {
    fn new(generation: u64) -> OpenReport {
        OpenReport {
            generation,
            snapshot: None,
            snapshots_rejected: 0,
            wal_entries: 0,
            truncated: false,
            truncated_bytes: 0,
            wal_stop: Stop::Clean,
        }
    }

    /// Entries may be missing (a cut log, a skipped snapshot): the node should ask a peer for a
    /// full sync rather than trust its state as complete.
    pub fn needs_full_sync(&self) -> bool {
        self.truncated || self.snapshots_rejected > 0
    }
}

pub struct FileStore {
    dir: PathBuf,
    /// The directory itself, open so that changes to its entries can be fsynced.
    dir_handle: File,
    wal: File,
    generation: u64,
    /// The lowest generation that may still have files; the next checkpoint deletes from here.
    oldest_generation: u64,
    wal_bytes: u64,
    /// `WRITE_BUFFER_BYTES`, the arena's.
    buffer: &'static mut [u8],
    /// A write or sync failed; only a fresh `open` may judge the files now.
    failed: bool,
}

impl FileStore {
    /// Opens (creating if needed) the state directory and replays it: every entry of the highest
    /// whole snapshot, then of each log from that generation up, in order, through `on_entry`.
    /// Logs are cut back to their last good record before this returns. `buffer` (at least
    /// `WRITE_BUFFER_BYTES`) is where snapshots and appends are encoded.
    pub fn open(
        dir: &Path,
        buffer: &'static mut [u8],
        mut on_entry: impl FnMut(&[u8]),
    ) -> io::Result<(FileStore, OpenReport)> {
        assert!(buffer.len() >= WRITE_BUFFER_BYTES);
        let dir_handle = open_dir(dir)?;
        // Checkpoints build their paths on the stack: a directory too long for that is refused
        // now rather than at the first checkpoint.
        let longest = file_name(FileKind::Snapshot, u64::MAX);
        StackPath::join(dir, &[longest.as_bytes(), TMP_SUFFIX.as_bytes()])?;
        let listing = Listing::read(dir)?;
        let mut report = OpenReport::new(listing.generations().max().unwrap_or(0));
        let base = replay_snapshot(dir, &listing.snapshots, &mut on_entry, &mut report)?;
        let mut last = None;
        for &generation in listing.wals.iter().filter(|&&g| g >= base) {
            let path = dir.join(file_name(FileKind::Wal, generation).as_str());
            last = Some((generation, replay_wal(&path, &mut on_entry, &mut report)?));
        }
        remove_stale(&dir_handle, listing.stale(dir, base))?;
        // Appends go to the newest generation's log, which a crash may not have created yet.
        let (wal, wal_bytes) = match last {
            Some((generation, replayed)) if generation == report.generation => replayed,
            _ => {
                let path = dir.join(file_name(FileKind::Wal, report.generation).as_str());
                (create_file(&dir_handle, &path)?, 0)
            }
        };
        let oldest = listing.generations().filter(|&g| g >= base).min();
        let store = FileStore {
            dir: dir.to_path_buf(),
            dir_handle,
            wal,
            generation: report.generation,
            oldest_generation: oldest.unwrap_or(report.generation),
            wal_bytes,
            buffer,
            failed: false,
        };
        assert!(store.oldest_generation <= store.generation);
        Ok((store, report))
    }

    /// Appends one encoded entry and returns once it is durable (`fdatasync`): only then may the
    /// deploy be acknowledged.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        let len = encode_record(RecordKind::Entry, payload, self.buffer).map_err(invalid_input)?;
        let result = self
            .wal
            .write_all_at(&self.buffer[..len], self.wal_bytes)
            .and_then(|()| self.wal.sync_data());
        self.failed |= result.is_err();
        result?;
        self.wal_bytes += len as u64;
        Ok(())
    }

    /// Compacts the state into a snapshot of the next generation and starts an empty log for it.
    /// `entries` must be the whole live state, so that the old generation's files are redundant
    /// once the new snapshot is durable.
    pub fn checkpoint(
        &mut self,
        entries: impl IntoIterator<Item = impl AsRef<[u8]>>,
        state_hash: u64,
    ) -> io::Result<()> {
        self.check_usable()?;
        let next = self.generation + 1;
        let name = file_name(FileKind::Snapshot, next);
        let tmp = StackPath::join(&self.dir, &[name.as_bytes(), TMP_SUFFIX.as_bytes()])?;
        let tmp = tmp.as_path();
        if let Err(e) = self.write_snapshot(tmp, entries, state_hash) {
            // Nothing visible changed: the old generation still holds the state. A stray `.tmp`
            // is harmless, and the next open deletes it, so a failed removal changes nothing.
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
        let result = self.swap_to(next, tmp);
        self.failed |= result.is_err();
        result
    }

    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes
    }

    /// The log file, for a caller that writes records itself (the daemon's io_uring loop, which
    /// batches appends into one write and one fdatasync). It writes at `wal_bytes()`.
    pub fn wal_fd(&self) -> RawFd {
        self.wal.as_raw_fd()
    }

    /// Takes note of `len` bytes of whole records that the caller wrote at `wal_bytes()` and made
    /// durable through `wal_fd`.
    pub fn record_written(&mut self, len: usize) {
        assert!(!self.failed, "writes after a failure are refused");
        self.wal_bytes += len as u64;
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: FileKind, generation: u64) -> io::Result<StackPath> {
        StackPath::join(&self.dir, &[file_name(kind, generation).as_bytes()])
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write to the state directory failed; reopen the store to recover from what is on disk",
            ));
        }
        Ok(())
    }

    /// Writes and syncs the whole snapshot under its `.tmp` name.
    fn write_snapshot(
        &mut self,
        tmp: &Path,
        entries: impl IntoIterator<Item = impl AsRef<[u8]>>,
        state_hash: u64,
    ) -> io::Result<()> {
        let mut writer = BatchWriter {
            file: create_file(&self.dir_handle, tmp)?,
            buffer: self.buffer,
            used: 0,
        };
        let mut encoder = SnapshotEncoder::new(state_hash);
        for payload in entries {
            writer.push(|out| encoder.encode_entry(payload.as_ref(), out))?;
        }
        writer.push(|out| encoder.encode_end(out))?;
        writer.finish()
    }

    /// Makes the synced snapshot `next` the recovery point, then retires the older generations.
    fn swap_to(&mut self, next: u64, tmp: &Path) -> io::Result<()> {
        fs::rename(tmp, self.path(FileKind::Snapshot, next)?)?;
        self.dir_handle.sync_all()?;
        self.wal = create_file(&self.dir_handle, self.path(FileKind::Wal, next)?.as_path())?;
        self.wal_bytes = 0;
        self.generation = next;
        for generation in self.oldest_generation..next {
            for kind in FileKind::ALL {
                remove_if_present(self.path(kind, generation)?.as_path())?;
            }
        }
        self.dir_handle.sync_all()?;
        self.oldest_generation = next;
        Ok(())
    }
}

/// Encodes records into a fixed buffer and writes it out whenever the next record might not fit.
struct BatchWriter<'b> {
    file: File,
    buffer: &'b mut [u8],
    used: usize,
}

impl BatchWriter<'_> {
    fn push(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, RecordError>,
    ) -> io::Result<()> {
        if self.buffer.len() - self.used < WAL_RECORD_BYTES_MAX {
            self.flush()?;
        }
        self.used += encode(&mut self.buffer[self.used..]).map_err(invalid_input)?;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buffer[..self.used])?;
        self.used = 0;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }
}

fn invalid_input(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.message())
}

/// Opens the state directory, creating it (durably) if it does not exist.
fn open_dir(dir: &Path) -> io::Result<File> {
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    File::open(dir)
}

/// Creates (or empties) a file and makes its existence durable: the file and its directory are
/// synced before it is used.
fn create_file(dir_handle: &File, path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.sync_all()?;
    dir_handle.sync_all()?;
    Ok(file)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes `stale` files, then syncs the directory if that changed it.
fn remove_stale(dir_handle: &File, stale: impl Iterator<Item = PathBuf>) -> io::Result<()> {
    let mut removed = false;
    for path in stale {
        fs::remove_file(path)?;
        removed = true;
    }
    if removed {
        dir_handle.sync_all()?;
    }
    Ok(())
}

/// Finds the highest whole snapshot and replays its entries; returns its generation, or 0 (the
/// empty state, whose logs start at generation 0) if there is none. Each candidate is checked in
/// full before any entry is handed on, so a cut snapshot never leaks half a state.
fn replay_snapshot(
    dir: &Path,
    snapshots: &[u64],
    on_entry: &mut impl FnMut(&[u8]),
    report: &mut OpenReport,
) -> io::Result<u64> {
    for &generation in snapshots.iter().rev() {
        let mut file = File::open(dir.join(file_name(FileKind::Snapshot, generation).as_str()))?;
        let checked = replay_file(&mut file, |_| {})?;
        if !checked.is_valid_snapshot() {
            report.snapshots_rejected += 1;
            continue;
        }
        file.rewind()?;
        let replayed = replay_file(&mut file, entries_to(on_entry))?;
        if replayed != checked {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {generation} changed while it was read; is another myco-d using {}?",
                    dir.display()
                ),
            ));
        }
        let end = replayed
            .checkpoint_end
            .expect("a valid snapshot ends with a checkpoint end");
        report.snapshot = Some((generation, end));
        return Ok(generation);
    }
    Ok(0)
}

/// Replays one log and cuts it back to its last good record. Returns the file, open for
/// appending, and its length.
fn replay_wal(
    path: &Path,
    on_entry: &mut impl FnMut(&[u8]),
    report: &mut OpenReport,
) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let summary = replay_file(&mut file, entries_to(on_entry))?;
    report.wal_entries += summary.entries;
    if summary.stop != Stop::Clean {
        let len = file.metadata()?.len();
        assert!(
            summary.good_bytes < len,
            "a log that stopped early has bytes past its good prefix"
        );
        file.set_len(summary.good_bytes)?;
        file.sync_all()?;
        if !report.truncated {
            report.wal_stop = summary.stop;
        }
        report.truncated = true;
        report.truncated_bytes += len - summary.good_bytes;
    }
    Ok((file, summary.good_bytes))
}

/// A record handler that passes entry payloads on. A checkpoint end inside a log is never written
/// by this store and carries no entry, so it is skipped.
fn entries_to(on_entry: &mut impl FnMut(&[u8])) -> impl FnMut(RecordView<'_>) + '_ {
    move |record| {
        if let RecordView::Entry(payload) = record {
            on_entry(payload);
        }
    }
}

/// Streams a file from its start through the core's replayer.
fn replay_file(file: &mut File, mut on_record: impl FnMut(RecordView<'_>)) -> io::Result<Summary> {
    let mut replayer = Replayer::<READ_WINDOW_BYTES>::new();
    loop {
        while let Some(record) = replayer.poll_record() {
            on_record(record);
        }
        if replayer.is_stopped() {
            break;
        }
        let n = read_some(file, replayer.space())?;
        if n == 0 {
            break;
        }
        replayer.handle_filled(n);
    }
    Ok(replayer.finish())
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File names round-trip and sort as their generations; foreign names are not the store's.
    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(FileKind::Wal, 7), "wal-00000000000000000007");
        for generation in [0, 9, 10, u64::MAX] {
            for kind in FileKind::ALL {
                let name = file_name(kind, generation);
                assert_eq!(parse_name(&name), Some((kind, generation, false)));
                assert_eq!(
                    parse_name(&format!("{name}.tmp")),
                    Some((kind, generation, true))
                );
            }
        }
        for foreign in [
            "wal-1",
            "wal-0000000000000000000a",
            "wal-99999999999999999999",
            "x.tmp",
            "snapshot-",
        ] {
            assert_eq!(parse_name(foreign), None, "{foreign}");
        }
    }
}
