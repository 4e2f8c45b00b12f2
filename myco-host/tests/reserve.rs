//! The disk reserve against a real filesystem: created with allocated blocks, released, created
//! again, and deferred when the disk cannot hold it.

use myco_host::reserve::{Reserve, ReserveState, RESERVE_FILE_NAME};
use myco_testkit::TempDir;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const RESERVE_BYTES: u64 = 4 * 1024 * 1024 + 4096;

/// Asserts the reserve file holds exactly `bytes` bytes, every one backed by an allocated block.
fn assert_allocated(dir: &Path, bytes: u64) {
    let metadata = fs::metadata(dir.join(RESERVE_FILE_NAME)).unwrap();
    assert_eq!(metadata.len(), bytes);
    assert!(
        metadata.blocks() * 512 >= bytes,
        "{} blocks",
        metadata.blocks()
    );
}

fn assert_present(state: ReserveState, bytes: u64) {
    assert!(
        matches!(state, ReserveState::Present { bytes: b, .. } if b == bytes),
        "{state:?}"
    );
}

/// `ensure` creates a file of exactly the size with its blocks allocated, and reports it present.
#[test]
fn ensure_creates_an_allocated_file_of_the_size() {
    let dir = TempDir::new("reserve-create");
    let mut reserve = Reserve::new(dir.path(), RESERVE_BYTES);
    assert_eq!(reserve.state(), ReserveState::Unchecked);
    let state = reserve.ensure().unwrap();
    assert_present(state, RESERVE_BYTES);
    assert_eq!(reserve.state(), state);
    assert_allocated(dir.path(), RESERVE_BYTES);
}

/// `release` deletes the file and reports the bytes it held; releasing again frees nothing; a
/// later `ensure` creates the reserve again.
#[test]
fn release_frees_the_reserve_and_ensure_restores_it() {
    let dir = TempDir::new("reserve-release");
    let mut reserve = Reserve::new(dir.path(), RESERVE_BYTES);
    reserve.ensure().unwrap();
    assert_eq!(reserve.release().unwrap(), RESERVE_BYTES);
    assert!(!reserve.path().exists());
    let released = ReserveState::Released {
        bytes: RESERVE_BYTES,
    };
    assert_eq!(reserve.state(), released);
    assert_eq!(reserve.release().unwrap(), 0);
    assert_present(reserve.ensure().unwrap(), RESERVE_BYTES);
    assert_allocated(dir.path(), RESERVE_BYTES);
}

/// A reserve larger than the free space is deferred, says why, and leaves no file; releasing it
/// frees nothing and it stays deferred (nothing was released); nothing panics on a size near the
/// top of the range.
#[test]
fn reserve_larger_than_the_disk_is_deferred() {
    let dir = TempDir::new("reserve-deferred");
    let mut reserve = Reserve::new(dir.path(), u64::MAX / 4);
    let state = reserve.ensure().unwrap();
    assert!(matches!(state, ReserveState::Deferred { .. }), "{state:?}");
    let why = state.deferred_why().expect("deferred says why").to_string();
    assert!(why.starts_with("only ") && why.contains("margin"), "{why}");
    assert!(!reserve.path().exists());
    assert_eq!(reserve.release().unwrap(), 0);
    assert_eq!(reserve.state(), state);
}

/// A size of 0 keeps no reserve: `disable` deletes one an earlier run left and reports its bytes.
#[test]
fn disable_deletes_an_earlier_reserve() {
    let dir = TempDir::new("reserve-disable");
    Reserve::new(dir.path(), RESERVE_BYTES).ensure().unwrap();
    let mut reserve = Reserve::new(dir.path(), 0);
    assert_eq!(reserve.disable().unwrap(), RESERVE_BYTES);
    assert_eq!(reserve.state(), ReserveState::Disabled);
    assert!(!reserve.path().exists());
    assert_eq!(reserve.disable().unwrap(), 0);
}

/// A sparse file of the right length (no space held) is not taken for a reserve: `ensure`
/// allocates its blocks.
#[test]
fn sparse_file_gets_its_blocks_allocated() {
    let dir = TempDir::new("reserve-sparse");
    let file = File::create(dir.path().join(RESERVE_FILE_NAME)).unwrap();
    file.set_len(RESERVE_BYTES).unwrap();
    assert!(file.metadata().unwrap().blocks() * 512 < RESERVE_BYTES);
    let mut reserve = Reserve::new(dir.path(), RESERVE_BYTES);
    assert_present(reserve.ensure().unwrap(), RESERVE_BYTES);
    assert_allocated(dir.path(), RESERVE_BYTES);
}

/// A reserve left by a run with a larger size is cut to the current size.
#[test]
fn larger_reserve_from_an_earlier_run_is_cut() {
    let dir = TempDir::new("reserve-shrink");
    Reserve::new(dir.path(), 2 * RESERVE_BYTES)
        .ensure()
        .unwrap();
    let mut reserve = Reserve::new(dir.path(), RESERVE_BYTES);
    assert_present(reserve.ensure().unwrap(), RESERVE_BYTES);
    assert_allocated(dir.path(), RESERVE_BYTES);
}
