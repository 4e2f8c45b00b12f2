//! The file store against real files: logs corrupted in each way a crash or a disk can, and a
//! crash between every two steps of the checkpoint swap.

use myco_core::wal::{CheckpointEnd, RecordError, Stop};
use myco_host::arena::leak_bytes;
use myco_host::store::{FileStore, OpenReport, WRITE_BUFFER_BYTES};
use myco_testkit::entries::service_entry;
use myco_testkit::TempDir;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

fn wal(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:020}"))
}

fn snapshot(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}"))
}

/// Opens the store, collecting every entry it replays.
fn open(dir: &Path) -> (FileStore, OpenReport, Vec<Vec<u8>>) {
    let mut replayed = Vec::new();
    let (store, report) = FileStore::open(dir, leak_bytes(WRITE_BUFFER_BYTES), |payload| {
        replayed.push(payload.to_vec())
    })
    .unwrap();
    (store, report, replayed)
}

/// The store's file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// A log of 1000 services written through the store, and the log's length after each append.
struct Written {
    entries: Vec<Vec<u8>>,
    ends: Vec<u64>,
    log: Vec<u8>,
}

fn write_1000_services() -> Written {
    let dir = TempDir::new("source");
    let (mut store, report, replayed) = open(dir.path());
    assert_eq!((report.generation, replayed.len()), (0, 0));
    let mut written = Written {
        entries: Vec::new(),
        ends: Vec::new(),
        log: Vec::new(),
    };
    for i in 0..1000 {
        let entry = service_entry(i, 1);
        store.append(&entry).unwrap();
        written.entries.push(entry);
        written.ends.push(store.wal_bytes());
    }
    written.log = fs::read(wal(dir.path(), 0)).unwrap();
    assert_eq!(written.log.len() as u64, store.wal_bytes());
    written
}

/// Reopens a store whose log was damaged and checks that exactly the first `good` entries come
/// back, that the log was cut right after them, and that the store appends normally afterwards.
fn assert_recovers_prefix(written: &Written, damaged: &[u8], good: usize, stop: Stop) {
    let dir = TempDir::new("damaged");
    fs::write(wal(dir.path(), 0), damaged).unwrap();
    let good_bytes = if good == 0 { 0 } else { written.ends[good - 1] };
    let (mut store, report, replayed) = open(dir.path());
    assert_eq!(replayed, written.entries[..good]);
    assert_eq!((report.truncated, report.wal_stop), (true, stop));
    assert_eq!(report.truncated_bytes, damaged.len() as u64 - good_bytes);
    assert!(report.needs_full_sync());
    assert_eq!(file_len(&wal(dir.path(), 0)), good_bytes);
    assert_eq!(store.wal_bytes(), good_bytes);

    let extra = service_entry(5000, 2);
    store.append(&extra).unwrap();
    drop(store);
    let (_, report, replayed) = open(dir.path());
    assert!(!report.truncated);
    assert_eq!(replayed.len(), good + 1);
    assert_eq!(replayed[..good], written.entries[..good]);
    assert_eq!(replayed[good], extra);
}

/// A log written by the store, then cut mid-record, flipped in the middle, or followed by
/// garbage, zeros or a header claiming 4 GiB, replays exactly its good prefix; the file is cut
/// there and appends continue after it. The undamaged log replays whole and is not touched.
#[test]
fn damaged_log_recovers_exactly_the_good_prefix() {
    let written = write_1000_services();
    let log = &written.log;

    let dir = TempDir::new("intact");
    fs::write(wal(dir.path(), 0), log).unwrap();
    let (_, report, replayed) = open(dir.path());
    assert_eq!(replayed, written.entries);
    assert!(!report.needs_full_sync());
    assert_eq!(file_len(&wal(dir.path(), 0)), log.len() as u64);

    let cut = written.ends[699] as usize + 5;
    assert_recovers_prefix(&written, &log[..cut], 700, Stop::TornTail);

    // A payload byte of the middle record, so the damage is to data, not a header.
    let middle = written.ends[499] as usize + 50;
    let hit = 500;
    let mut flipped = log.clone();
    flipped[middle] ^= 0x01;
    assert_recovers_prefix(
        &written,
        &flipped,
        hit,
        Stop::Corrupt(RecordError::BadChecksum),
    );

    let garbage = [log.as_slice(), b"\x13\x37 not a record at all"].concat();
    assert_recovers_prefix(
        &written,
        &garbage,
        1000,
        Stop::Corrupt(RecordError::BadMagic),
    );

    let zeros = [log.as_slice(), &[0; 4096]].concat();
    assert_recovers_prefix(&written, &zeros, 1000, Stop::Corrupt(RecordError::BadMagic));

    let huge = [
        log.as_slice(),
        b"MW\x01\x00\xff\xff\xff\xff\x00\x00\x00\x00",
    ]
    .concat();
    assert_recovers_prefix(&written, &huge, 1000, Stop::Corrupt(RecordError::BadLength));
}

/// History for the checkpoint tests: ten services deployed at `clock`.
fn deploys(clock: u64) -> Vec<Vec<u8>> {
    (0..10).map(|i| service_entry(i, clock)).collect()
}

fn append_all(store: &mut FileStore, entries: &[Vec<u8>]) {
    for entry in entries {
        store.append(entry).unwrap();
    }
}

/// A checkpoint replaces the log with a snapshot of the live state: reopening replays the
/// snapshot, then only what was appended since, and nothing of the old generation is left.
#[test]
fn checkpoint_compacts_the_log_into_a_snapshot() {
    let dir = TempDir::new("checkpoint");
    let (mut store, _, _) = open(dir.path());
    let (v1, v2, v3) = (deploys(1), deploys(2), deploys(3));
    append_all(&mut store, &v1);
    append_all(&mut store, &v2);
    store
        .checkpoint(v2.iter().map(Vec::as_slice), 0xabc)
        .unwrap();
    assert_eq!((store.generation(), store.wal_bytes()), (1, 0));
    append_all(&mut store, &v3[..2]);
    drop(store);

    let (store, report, replayed) = open(dir.path());
    assert_eq!(replayed, [&v2[..], &v3[..2]].concat());
    assert_eq!(
        report.snapshot,
        Some((
            1,
            CheckpointEnd {
                entries: 10,
                state_hash: 0xabc
            }
        ))
    );
    assert_eq!((report.generation, report.wal_entries), (1, 2));
    assert!(!report.needs_full_sync());
    assert_eq!(
        names(dir.path()),
        ["snapshot-00000000000000000001", "wal-00000000000000000001"]
    );
    assert_eq!(store.wal_bytes(), file_len(&wal(dir.path(), 1)));
}

/// The files of a checkpoint from generation 1 to 2, captured so that any crash point can be
/// rebuilt: the old generation's snapshot and log, and the new snapshot.
struct Swap {
    old_snapshot: Vec<u8>,
    old_log: Vec<u8>,
    new_snapshot: Vec<u8>,
    /// What replaying the old generation yields, and what replaying the new one yields.
    old_state: Vec<Vec<u8>>,
    new_state: Vec<Vec<u8>>,
}

fn capture_swap() -> Swap {
    let dir = TempDir::new("swap");
    let (mut store, _, _) = open(dir.path());
    let (v1, v2) = (deploys(1), deploys(2));
    append_all(&mut store, &v1);
    store.checkpoint(v1.iter().map(Vec::as_slice), 1).unwrap();
    append_all(&mut store, &v2);
    let old_snapshot = fs::read(snapshot(dir.path(), 1)).unwrap();
    let old_log = fs::read(wal(dir.path(), 1)).unwrap();
    store.checkpoint(v2.iter().map(Vec::as_slice), 2).unwrap();
    let new_snapshot = fs::read(snapshot(dir.path(), 2)).unwrap();
    assert_eq!(file_len(&wal(dir.path(), 2)), 0);
    Swap {
        old_snapshot,
        old_log,
        new_snapshot,
        old_state: [&v1[..], &v2[..]].concat(),
        new_state: v2,
    }
}

/// Which files a crash left behind.
#[derive(Clone, Copy, Debug)]
enum Left {
    OldSnapshot,
    OldLog,
    HalfTmp,
    WholeTmp,
    NewSnapshot,
    NewLog,
}

fn lay_out(dir: &Path, swap: &Swap, files: &[Left]) {
    let tmp = dir.join("snapshot-00000000000000000002.tmp");
    for file in files {
        let (path, bytes) = match file {
            Left::OldSnapshot => (snapshot(dir, 1), &swap.old_snapshot[..]),
            Left::OldLog => (wal(dir, 1), &swap.old_log[..]),
            Left::HalfTmp => (
                tmp.clone(),
                &swap.new_snapshot[..swap.new_snapshot.len() / 2],
            ),
            Left::WholeTmp => (tmp.clone(), &swap.new_snapshot[..]),
            Left::NewSnapshot => (snapshot(dir, 2), &swap.new_snapshot[..]),
            Left::NewLog => (wal(dir, 2), &[][..]),
        };
        fs::write(path, bytes).unwrap();
    }
}

/// A crash between any two steps of the checkpoint swap (mid-way through the `.tmp`, before the
/// rename, after it, before the new log, before or during the deletion of the old generation)
/// recovers either the whole old state or the whole new one, never a mix or a loss; leaves only
/// the recovered generation's files; and the store then appends and checkpoints normally.
#[test]
fn crash_at_every_checkpoint_step_recovers_a_whole_state() {
    use Left::*;
    let swap = capture_swap();
    let crashes: [(&[Left], u64); 7] = [
        (&[OldSnapshot, OldLog, HalfTmp], 1),
        (&[OldSnapshot, OldLog, WholeTmp], 1),
        (&[OldSnapshot, OldLog, NewSnapshot], 2),
        (&[OldSnapshot, OldLog, NewSnapshot, NewLog], 2),
        (&[OldLog, NewSnapshot, NewLog], 2),
        (&[OldSnapshot, NewSnapshot, NewLog], 2),
        (&[NewSnapshot, NewLog], 2),
    ];
    for (files, generation) in crashes {
        let dir = TempDir::new("crash");
        lay_out(dir.path(), &swap, files);
        let (mut store, report, replayed) = open(dir.path());
        let state = if generation == 1 {
            &swap.old_state
        } else {
            &swap.new_state
        };
        assert_eq!(&replayed, state, "{files:?}");
        assert_eq!(report.generation, generation, "{files:?}");
        assert!(!report.needs_full_sync(), "{files:?}");
        let expected = [
            format!("snapshot-{generation:020}"),
            format!("wal-{generation:020}"),
        ];
        assert_eq!(names(dir.path()), expected, "{files:?}");

        let extra = service_entry(77, 9);
        store.append(&extra).unwrap();
        store
            .checkpoint(state.iter().map(Vec::as_slice), 3)
            .unwrap();
        drop(store);
        let (_, report, replayed) = open(dir.path());
        assert_eq!(replayed, *state, "{files:?}");
        assert_eq!(report.generation, generation + 1, "{files:?}");
    }
}

/// If the newest snapshot is damaged on disk, recovery falls back to the previous generation and
/// replays every log from there up, so entries appended after the damaged checkpoint survive;
/// the node is told to sync, and appends go to the newest log.
#[test]
fn damaged_newest_snapshot_falls_back_to_the_previous_generation() {
    let swap = capture_swap();
    let dir = TempDir::new("fallback");
    lay_out(
        dir.path(),
        &swap,
        &[
            Left::OldSnapshot,
            Left::OldLog,
            Left::NewSnapshot,
            Left::NewLog,
        ],
    );
    let mut damaged = swap.new_snapshot.clone();
    damaged[40] ^= 0x10;
    fs::write(snapshot(dir.path(), 2), &damaged).unwrap();
    let late = service_entry(42, 7);
    let (mut store, _, _) = FileStore::open(dir.path(), leak_bytes(WRITE_BUFFER_BYTES), |_| {})
        .map(|(s, r)| (s, r, ()))
        .unwrap();
    store.append(&late).unwrap();
    drop(store);

    let (store, report, replayed) = open(dir.path());
    assert_eq!(replayed, [&swap.old_state[..], &[late]].concat());
    assert_eq!(report.snapshot.map(|(generation, _)| generation), Some(1));
    assert_eq!((report.snapshots_rejected, report.generation), (1, 2));
    assert!(report.needs_full_sync());
    assert_eq!(store.generation(), 2);
    assert_eq!(file_len(&wal(dir.path(), 2)), store.wal_bytes());
}

/// A state directory that does not exist yet is created, and an empty store replays nothing.
#[test]
fn open_creates_a_missing_state_dir() {
    let parent = TempDir::new("missing");
    let dir = parent.path().join("var/lib/myco");
    let (store, report, replayed) = open(&dir);
    assert!(replayed.is_empty());
    assert_eq!(
        (report.generation, report.snapshot, store.wal_bytes()),
        (0, None, 0)
    );
    assert_eq!(names(&dir), ["wal-00000000000000000000"]);
    append_bytes(&wal(&dir, 0), b"MW");
    let (_, report, _) = open(&dir);
    assert_eq!((report.truncated, report.wal_stop), (true, Stop::TornTail));
}
