//! Who may touch the arena: nobody, then the thread that builds the daemon in it, then the thread
//! that runs the event loop. Start-up runs on a short-lived thread (its large stack frames are
//! given back when it ends) and the loop on the main thread, so the arena changes hands once.
//! The daemon's `&'static mut` travels through the start-up thread's join as well; this state is
//! what makes the change of hands explicit and checked: the builder publishes what it wrote with
//! a release store, and the loop acquires it before it reads a byte.
//!
//! It touches only the atomics of its parent's `atomics` module, so `tests/loom.rs` compiles this
//! same file against loom's atomics and checks it under every interleaving: one builder wins,
//! and the loop sees everything the builder wrote, or nothing and waits.
//!
//! Invariants: the state only moves forward, FREE, BUILDING, BUILT, RUNNING, each step taken by
//! exactly one caller; `take` succeeds only after `publish`, and once.

use super::atomics::{AtomicU8, Ordering};

/// Nobody has the arena.
pub const FREE: u8 = 0;
/// The start-up thread claimed it and is building the daemon in it.
pub const BUILDING: u8 = 1;
/// Built and handed over; the loop has not taken it yet.
pub const BUILT: u8 = 2;
/// The loop runs on it.
pub const RUNNING: u8 = 3;

/// The arena's owner. The field is public so that the owner can build it in a `static` (loom's
/// atomics have no `const fn new`, so this file has no constructor).
pub struct Handoff {
    pub state: AtomicU8,
}

impl Handoff {
    /// Claims the arena for building; `false` if anyone ever claimed it before.
    pub fn claim(&self) -> bool {
        self.state
            .compare_exchange(FREE, BUILDING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The builder is done: everything it wrote into the arena is published to whoever `take`s.
    pub fn publish(&self) {
        let was =
            self.state
                .compare_exchange(BUILDING, BUILT, Ordering::Release, Ordering::Relaxed);
        assert!(was.is_ok(), "only the builder hands the arena over, once");
    }

    /// The loop takes the arena: `true` once, and only after `publish`, with everything the
    /// builder wrote visible.
    pub fn take(&self) -> bool {
        self.state
            .compare_exchange(BUILT, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}
