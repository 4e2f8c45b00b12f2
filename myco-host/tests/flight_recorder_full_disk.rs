//! The flight recorder on a full disk: its file, allocated when the panic hook is installed at
//! start, takes the record of a panic that happens after the disk filled up. Its own test binary,
//! since the panic hook and the recorder are process-wide; it mounts a tmpfs, so it is one of the
//! root-only tests (`ROOT_TESTS` in the Makefile).

use myco_host::flight::{install_panic_hook, Level, Logger};
use myco_host::flight::{FLIGHT_RECORDER_BYTES, FLIGHT_RECORDER_FILE_NAME};
use myco_testkit::tmpfs::{fill, Tmpfs};
use myco_testkit::TempDir;
use std::fs;

/// A panic on a disk with no free block still leaves the whole ring (wrapped, so as large as the
/// file can be) and the panic line in the recorder's file.
#[test]
fn the_flight_recorder_is_written_on_a_full_disk() {
    let dir = TempDir::new("flight-full-disk");
    let mount = dir.join("state");
    let _fs = Tmpfs::mount(&mount, 4096);
    let path = mount.join(FLIGHT_RECORDER_FILE_NAME);
    install_panic_hook(path.clone()).expect("the recorder's file is allocated");
    let logger = Logger::new(false);
    let lines = 2 * FLIGHT_RECORDER_BYTES / 40;
    for i in 0..lines {
        logger.log(Level::Debug, format_args!("flight test: line {i}"));
    }
    fill(&mount.join("filler"));

    let outcome = std::thread::spawn(|| panic!("flight test: boom on a full disk")).join();

    assert!(outcome.is_err());
    let log = fs::read_to_string(&path).expect("the hook wrote the file");
    let last = format!("flight test: line {}\n", lines - 1);
    assert!(log.contains(&last), "the newest lines are kept");
    assert!(
        log.len() > FLIGHT_RECORDER_BYTES / 2,
        "the ring, not a torn piece of it: {} bytes",
        log.len()
    );
    let panic = log.lines().last().unwrap_or_default();
    assert!(
        panic.ends_with("flight test: boom on a full disk"),
        "{panic}"
    );
}
