//! The audit log allocates nothing once open, rotation included: the daemon appends to it long
//! after ready, and a rotation (at 1 MiB) renames three files. The daemon-wide strict test
//! (`strict_alloc.rs`) does not write a mebibyte of lines, so this drives the log directly.
//! Its own test binary, for its global allocator (counts are per thread).

use myco_host::audit::{AuditEntry, AuditLog, AuditOutcome, LINE_BYTES_MAX};
use myco_host::audit::{ROTATED_KEPT, ROTATE_BYTES};
use myco_testkit::alloc::{allocations, CountingAllocator};
use myco_testkit::TempDir;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Lines of about 7 KB (a long locked reference) until the log has rotated past every kept
/// file: no append allocates, and the rotated files are there.
#[test]
fn appending_and_rotating_allocate_nothing() {
    let dir = TempDir::new("audit-alloc");
    let path = dir.join("audit.log");
    let mut log =
        AuditLog::open(&path, myco_host::arena::leak_bytes(LINE_BYTES_MAX)).expect("the log opens");
    let locked_ref = format!("git+https://example.com/{}?rev=0", "r".repeat(7_000));
    let entry = AuditEntry {
        version: Some(1),
        locked_ref: Some(&locked_ref),
        ..AuditEntry::default()
    };
    let lines = (ROTATED_KEPT as u64 + 1) * ROTATE_BYTES / 7_000 + 1;
    let before = allocations();
    for i in 0..lines {
        log.append(i, "web", AuditOutcome::Started, &entry)
            .expect("appended");
    }
    assert_eq!(allocations(), before, "appends and rotations allocated");
    for n in 1..=ROTATED_KEPT {
        assert!(dir.join(format!("audit.log.{n}")).exists(), "audit.log.{n}");
    }
    assert!(!dir.join(format!("audit.log.{}", ROTATED_KEPT + 1)).exists());
}
