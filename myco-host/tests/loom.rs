//! loom models of the daemon's allocator bookkeeping (`myco-host/src/alloc/accounting.rs`),
//! compiled here against loom's atomics and run under every interleaving loom explores: the event
//! loop allocating while another thread does (the start-up thread before it ends, a helper that
//! panics), ready being marked while an allocation is counted, the one-shot report being filled
//! on one thread and taken on another. Built and run only by `make loom` (`--cfg loom`).
//!
//! The other places where threads meet are not modelled here, each for a reason: the start-up
//! thread hands the daemon to the loop through `std::thread::scope`'s join, whose ordering is
//! std's to prove; the flight recorder is a `Mutex` that the panic hook only `try_lock`s, with no
//! lock-free protocol of its own to check.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;

/// What `accounting` is written against: loom's atomics here, std's in the daemon.
mod atomics {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

#[path = "../src/alloc/accounting.rs"]
#[allow(dead_code)]
mod accounting;

use accounting::{Accounting, Verdict, FRAMES_MAX, MODE_STARTING};
use atomics::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

fn fresh() -> Accounting {
    Accounting {
        mode: AtomicU8::new(MODE_STARTING),
        allocations: AtomicU64::new(0),
        after_ready: AtomicU64::new(0),
        live_bytes: AtomicU64::new(0),
        first_claimed: AtomicBool::new(false),
        first_ready: AtomicBool::new(false),
        first_size: AtomicUsize::new(0),
        first_len: AtomicUsize::new(0),
        first_frames: std::array::from_fn(|_| AtomicUsize::new(0)),
    }
}

/// Two return addresses derived from `size`, so a report that mixed two allocations shows.
fn frames_of(size: usize) -> impl FnOnce(&mut [usize; FRAMES_MAX]) -> usize {
    move |frames| {
        frames[0] = size * 10;
        frames[1] = size * 10 + 1;
        2
    }
}

/// Two threads allocate after ready while a third takes the report: it is taken exactly once
/// (during the race or after it), whole, from one of the two allocations; both are counted.
#[test]
fn the_first_report_is_taken_once_and_whole() {
    loom::model(|| {
        let a = Arc::new(fresh());
        a.mark_ready(false);
        let allocators: Vec<_> = [3usize, 5]
            .into_iter()
            .map(|size| {
                let a = a.clone();
                thread::spawn(move || a.count(size, false, frames_of(size)))
            })
            .collect();
        let racing = {
            let a = a.clone();
            thread::spawn(move || a.take_first())
        };
        for t in allocators {
            assert_eq!(t.join().unwrap(), Verdict::Allow);
        }
        let taken: Vec<_> = [racing.join().unwrap(), a.take_first()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken.len(), 1, "taken exactly once");
        let first = taken[0];
        assert!(first.size == 3 || first.size == 5);
        assert_eq!(first.frames_len, 2);
        assert_eq!(first.frames[..2], [first.size * 10, first.size * 10 + 1]);
        assert_eq!(a.after_ready.load(Ordering::Relaxed), 2);
        assert_eq!(a.allocations.load(Ordering::Relaxed), 2);
    });
}

/// In strict mode two threads allocating at once get exactly one refusal: one report, one abort.
#[test]
fn strict_mode_refuses_exactly_once() {
    loom::model(|| {
        let a = Arc::new(fresh());
        a.mark_ready(true);
        let threads: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|size| {
                let a = a.clone();
                thread::spawn(move || a.count(size, false, frames_of(size)))
            })
            .collect();
        let verdicts: Vec<Verdict> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let refused = verdicts.iter().filter(|v| **v == Verdict::Refuse).count();
        assert_eq!(refused, 1, "{verdicts:?}");
        assert!(a.take_first().is_none(), "strict mode reports by aborting");
    });
}

/// Ready is marked while another thread allocates and frees: its assertion holds in every order,
/// the allocation counts as after ready only if it saw the new mode, a panicking thread is never
/// refused, and the live bytes come back to zero.
#[test]
fn ready_while_another_thread_allocates() {
    loom::model(|| {
        let a = Arc::new(fresh());
        let other = {
            let a = a.clone();
            thread::spawn(move || {
                let verdict = a.count(8, false, frames_of(8));
                a.freed(8);
                verdict
            })
        };
        let panicking = {
            let a = a.clone();
            thread::spawn(move || a.count(16, true, frames_of(16)))
        };
        a.mark_ready(true);
        let other = other.join().unwrap();
        assert_eq!(panicking.join().unwrap(), Verdict::Allow);
        let after_ready = a.after_ready.load(Ordering::Relaxed);
        assert!(after_ready <= 1);
        assert_eq!(other == Verdict::Refuse, after_ready == 1);
        assert_eq!(a.allocations.load(Ordering::Relaxed), 2);
        a.freed(16);
        assert_eq!(a.live_bytes.load(Ordering::Relaxed), 0);
    });
}
