//! The daemon's allocator after ready (`myco_host::alloc`): in strict mode the first allocation
//! aborts with its size and return addresses on stderr and in the flight recorder; otherwise it is
//! counted and reported once. The mode is process-wide and the test harness allocates on its own
//! threads, so each test runs its scenario in a child process: this same test binary, re-run on
//! that one test with `MYCO_ALLOC_CHILD` set.

use myco_host::alloc::{allocations_since_ready, mark_ready, take_first_after_ready, Counting};
use myco_host::flight::{install_panic_hook, FLIGHT_RECORDER_FILE_NAME};
use myco_testkit::TempDir;
use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CHILD: &str = "MYCO_ALLOC_CHILD";

/// Runs `test` of this binary alone in a child with `MYCO_ALLOC_CHILD=dir`.
fn run_child(test: &str, dir: &Path) -> Output {
    let exe = std::env::current_exe().expect("the test knows its executable");
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, dir)
        .output()
        .expect("the test binary runs again")
}

/// Strict mode: an allocation after ready kills the process with SIGABRT, after stderr and the
/// flight recorder's file got the allocation's size and at least one return address.
#[test]
fn strict_allocation_after_ready_aborts_with_a_report() {
    if let Some(dir) = std::env::var_os(CHILD) {
        install_panic_hook(Path::new(&dir).join(FLIGHT_RECORDER_FILE_NAME))
            .expect("the recorder file is prepared");
        mark_ready(true);
        black_box(vec![7u8; 12_345]);
        unreachable!("the allocation above aborts the process");
    }
    let dir = TempDir::new("alloc-strict");
    let out = run_child(
        "strict_allocation_after_ready_aborts_with_a_report",
        dir.path(),
    );
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = "heap allocation of 12345 bytes after ready; return addresses";
    let line = stderr.lines().find(|l| l.contains(report));
    let line = line.unwrap_or_else(|| panic!("no report on stderr: {stderr}"));
    assert!(line.starts_with("<2>myco-d: --strict-alloc: "), "{line}");
    assert!(line.contains("-e myco-d): 0x"), "no return address: {line}");
    let recorder = myco_testkit::dir::read_text(&dir.join(FLIGHT_RECORDER_FILE_NAME));
    assert!(recorder.contains(report), "{recorder}");
}

/// Production mode: allocations after ready are counted, not refused, and the first one is
/// reported once with its size.
#[test]
fn allocation_after_ready_is_counted_and_reported_once() {
    if std::env::var_os(CHILD).is_some() {
        // Whatever the harness allocated is from before ready; nothing else runs in this child.
        mark_ready(false);
        assert_eq!(allocations_since_ready(), 0);
        assert!(take_first_after_ready().is_none());
        black_box(Box::new([1u8; 4321]));
        let report = take_first_after_ready().expect("the first allocation is reported");
        assert!(report.to_string().contains("of 4321 bytes"), "{report}");
        assert!(take_first_after_ready().is_none(), "reported twice");
        black_box(Box::new([2u8; 10]));
        assert!(allocations_since_ready() >= 2);
        assert!(take_first_after_ready().is_none(), "a later one reported");
        return;
    }
    let dir = TempDir::new("alloc-counting");
    let out = run_child(
        "allocation_after_ready_is_counted_and_reported_once",
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    // A filter that matched nothing would pass vacuously.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}
