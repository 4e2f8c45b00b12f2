//! The flight recorder's process-wide parts: the panic hook writes the recorded lines and the
//! panic to disk, and logging allocates nothing. Its own test binary, so the global hook and the
//! counting allocator touch no other test.

use myco_host::flight::{install_panic_hook, FlightRecorder, Level, Logger};
use myco_host::flight::{FLIGHT_RECORDER_BYTES, FLIGHT_RECORDER_FILE_NAME};
use myco_testkit::alloc::{allocations, CountingAllocator};
use myco_testkit::TempDir;
use std::fs;

/// Allocations are counted per thread, so tests running in parallel do not see each other's.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Both checks share the process-wide recorder and panic hook, so they run in one test, in order:
/// two tests in parallel would race for the recorder's lock (the hook then finds it busy) and the
/// second's wraps would push out the first's lines.
#[test]
fn recorder_allocates_nothing_then_survives_a_panic() {
    recording_and_logging_do_not_allocate();
    panic_hook_writes_the_recorder_to_disk();
}

/// A panic on another thread leaves `flight-recorder.log` with the lines logged before it, debug
/// ones included although not verbose, and the panic's message and location.
fn panic_hook_writes_the_recorder_to_disk() {
    let dir = TempDir::new("flight-recorder");
    let path = dir.path().join(FLIGHT_RECORDER_FILE_NAME);
    install_panic_hook(path.clone()).expect("the recorder's file is allocated");
    let logger = Logger::new(false);
    logger.log(Level::Info, format_args!("flight test: started"));
    logger.log(Level::Debug, format_args!("flight test: probe {}", 42));

    let panic_line = line!() + 1;
    let outcome = std::thread::spawn(|| panic!("flight test: boom")).join();

    assert!(outcome.is_err());
    let log = fs::read_to_string(&path).unwrap();
    assert!(log.contains("<6>flight test: started\n"), "{log}");
    assert!(log.contains("<7>flight test: probe 42\n"), "{log}");
    let panic = log.lines().find(|line| line.ends_with("flight test: boom"));
    let panic = panic.unwrap_or_else(|| panic!("no panic line in {log}"));
    assert!(panic.contains("<3>panicked at "), "{panic}");
    let location = format!("{}:{panic_line}:", file!());
    assert!(panic.contains(&location), "{panic} lacks {location}");
}

/// Recording and logging allocate nothing once the recorder exists, even across many wraps.
fn recording_and_logging_do_not_allocate() {
    let mut recorder = FlightRecorder::new(myco_host::arena::leak_bytes(FLIGHT_RECORDER_BYTES));
    let logger = Logger::new(false);
    let line = [b'x'; 300];
    let before = allocations();
    for i in 0..3 * FLIGHT_RECORDER_BYTES / line.len() {
        recorder.record(&line[..i % line.len()]);
        logger.log(
            Level::Debug,
            format_args!("flight test: line {i} {:?}", &line[..8]),
        );
    }
    assert_eq!(allocations() - before, 0);
}
