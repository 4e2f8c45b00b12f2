//! A counting allocator, for tests that prove a path allocates nothing. A test binary installs it
//! with `#[global_allocator] static ALLOCATOR: CountingAllocator = CountingAllocator;` and compares
//! `allocations()` before and after. Counts are per thread, because the test harness runs tests
//! on several threads at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations and reallocations of the calling thread.
pub struct CountingAllocator;

fn count() {
    // try_with: a thread being torn down has no counter left, and the allocator must not panic.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter is
// a const-initialised thread-local Cell without a destructor, so touching it neither allocates nor
// unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations the calling thread has made through `CountingAllocator` so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}
