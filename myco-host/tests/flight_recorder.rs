//! The flight recorder's process-wide parts: the panic hook writes the recorded lines and the
//! panic to disk, and logging allocates nothing. Its own test binary, so the global hook and the
//! counting allocator touch no other test.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use myco_host::flight::{install_panic_hook, FlightRecorder, Level, Logger};
use myco_host::flight::{FLIGHT_RECORDER_BYTES, FLIGHT_RECORDER_FILE_NAME};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use temp_dir::TempDir;

/// Counts the allocations of each thread, so tests running in parallel do not see each other's.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// thread-local Cell, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: our caller upholds `alloc`'s contract, and we pass its layout on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` (above) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

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
    install_panic_hook(path.clone());
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
    let mut recorder = FlightRecorder::new();
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
