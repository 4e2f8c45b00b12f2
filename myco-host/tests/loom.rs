//! loom models of the places where the daemon's threads meet, each compiled here from the daemon's
//! own source file against loom's atomics or lock and run under every interleaving loom explores:
//!
//! - the allocator's bookkeeping (`src/alloc/accounting.rs`): the event loop allocating while
//!   another thread does (the start-up thread before it ends, a helper that panics), ready being
//!   marked while an allocation is counted, the one-shot report filled on one thread and taken
//!   on another;
//! - the arena's hand-off (`src/arena/handoff.rs`): the start-up thread claims the arena, builds
//!   the daemon in it and hands it over, while the loop's thread waits to take it and a second
//!   start in the same process is refused;
//! - the flight recorder (`src/flight/shared.rs` over `src/flight/ring.rs`): the panic hook
//!   reads the ring while another thread is logging into it.
//!
//! Built and run only by `make loom` (`--cfg loom`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;

/// What `accounting` and `handoff` are written against: loom's atomics here, std's in the daemon.
mod atomics {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

/// What the flight recorder's `shared` is written against: loom's lock here, std's in the daemon.
mod sync {
    pub use loom::sync::Mutex;
    pub use std::sync::{PoisonError, TryLockError};
}

#[path = "../src/alloc/accounting.rs"]
#[allow(dead_code)]
mod accounting;

#[path = "../src/arena/handoff.rs"]
mod handoff;

#[path = "../src/flight/ring.rs"]
mod ring;

#[path = "../src/flight/shared.rs"]
mod shared;

use accounting::{Accounting, Verdict, FRAMES_MAX, MODE_STARTING};
use atomics::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use loom::cell::UnsafeCell;

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

/// Two threads try to start a daemon in one process (the real start-up thread, and a second
/// start that must be refused) while the loop's thread waits for the arena: exactly one claims
/// it, and the loop takes it once, after the hand-over, and reads what that builder wrote, never
/// a half-built arena (loom's cell reports any read not ordered after the write).
#[test]
fn the_arena_goes_from_one_builder_to_the_loop() {
    loom::model(|| {
        let handoff = Arc::new(handoff::Handoff {
            state: AtomicU8::new(handoff::FREE),
        });
        // Stands in for the arena: the builder writes it, the loop reads it.
        let arena = Arc::new(UnsafeCell::new(0u64));
        let builders: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|id| {
                let (handoff, arena) = (handoff.clone(), arena.clone());
                thread::spawn(move || {
                    if !handoff.claim() {
                        return false;
                    }
                    // SAFETY: the claim makes this thread the arena's only user until `publish`.
                    arena.with_mut(|p| unsafe { *p = id });
                    handoff.publish();
                    true
                })
            })
            .collect();
        let looped = {
            let (handoff, arena) = (handoff.clone(), arena.clone());
            thread::spawn(move || {
                while !handoff.take() {
                    thread::yield_now();
                }
                // SAFETY: `take` succeeded: the builder is done and published what it wrote.
                arena.with(|p| unsafe { *p })
            })
        };
        let won: Vec<bool> = builders.into_iter().map(|t| t.join().unwrap()).collect();
        let seen = looped.join().unwrap();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let winner = if won[0] { 1 } else { 2 };
        assert_eq!(seen, winner, "the loop saw the builder's arena");
        assert!(!handoff.take(), "the loop takes the arena once");
        assert!(!handoff.claim(), "no start after the first");
    });
}

/// A ring of `capacity` bytes for one model run (loom runs the closure many times; each leaks a
/// few bytes, as the daemon's ring is the arena's and never freed).
fn recorder(capacity: usize) -> shared::Shared {
    let ring: &'static mut [u8] = Box::leak(vec![0u8; capacity].into_boxed_slice());
    shared::Shared::new(ring::FlightRecorder::new(ring))
}

/// The panic hook runs on one thread while another logs two lines. It writes either the whole
/// ring, oldest first, with only complete lines (the ones logged before it took the lock) and
/// the panic last, or, when the logger held the lock, that the lock was busy and the panic; it
/// never blocks. The logger's lines are all recorded in the end.
#[test]
fn the_panic_hook_reads_the_recorder_while_another_thread_logs() {
    loom::model(|| {
        let shared = Arc::new(recorder(64));
        shared.record(b"boot");
        let logger = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.record(b"aa");
                shared.record(b"bbbb");
            })
        };
        let mut hook = Vec::new();
        shared.write_on_panic(b"panic", &mut hook).unwrap();
        logger.join().unwrap();
        let busy = [shared::RECORDER_BUSY, b"panic\n"].concat();
        let whole = [
            &b"boot\npanic\n"[..],
            b"boot\naa\npanic\n",
            b"boot\naa\nbbbb\npanic\n",
        ];
        assert!(
            hook == busy || whole.contains(&&hook[..]),
            "{}",
            String::from_utf8_lossy(&hook)
        );
        let mut after = Vec::new();
        shared.write_on_panic(b"end", &mut after).unwrap();
        let after = String::from_utf8(after).unwrap();
        let lines: Vec<&str> = after.lines().collect();
        for line in ["boot", "aa", "bbbb", "end"] {
            assert!(lines.contains(&line), "{after}");
        }
        assert_eq!(lines.last(), Some(&"end"));
    });
}
