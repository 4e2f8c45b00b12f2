//! The allocator's bookkeeping, apart from the allocator: what is counted, when an allocation is
//! refused, and the one-shot report of the first allocation after ready. It touches only the
//! atomics of its parent's `atomics` module, so `tests/loom.rs` compiles this same file against
//! loom's atomics and checks it under every interleaving of the threads that meet here (the
//! loop, the start-up thread, a panicking helper).
//!
//! Invariants: the mode only moves forward (starting, then counting or strict, then dying from
//! strict); `after_ready` counts only allocations that saw a mode past starting, so it is 0 when
//! `mark_ready` runs; exactly one strict refusal is ever returned; the one-shot report is claimed
//! by one allocation, filled, then published by a release store, so whoever takes it (once) reads
//! one allocation's size and frames, never a mix. Counters are `Relaxed`: nothing else is
//! published through them.

use super::atomics::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Return addresses kept for a report: enough to get from the allocator through std into the
/// daemon's own frame that asked.
pub const FRAMES_MAX: usize = 24;

/// Start-up: allocations are counted and allowed.
pub const MODE_STARTING: u8 = 0;
/// After ready, production: counted, the first one reported once.
pub const MODE_COUNTING: u8 = 1;
/// After ready, `--strict-alloc`: the first one is refused (the caller aborts).
pub const MODE_STRICT: u8 = 2;
/// Aborting: everything is let through so that the panic hook can write its file.
pub const MODE_DYING: u8 = 3;

/// What the allocator does with one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Strict mode's first allocation after ready: the caller reports it and aborts.
    Refuse,
}

/// The first allocation after ready: its size and its callers' return addresses.
#[derive(Clone, Copy, Debug)]
pub struct First {
    pub size: usize,
    pub frames: [usize; FRAMES_MAX],
    pub frames_len: usize,
}

/// Counters and mode of one process's allocator. Fields are public so that the owner can build
/// it in a `static` (loom's atomics have no `const fn new`, so this file has no constructor).
pub struct Accounting {
    pub mode: AtomicU8,
    pub allocations: AtomicU64,
    pub after_ready: AtomicU64,
    pub live_bytes: AtomicU64,
    /// Set by the allocation that claims the report; `first_ready` once it is filled in.
    pub first_claimed: AtomicBool,
    pub first_ready: AtomicBool,
    pub first_size: AtomicUsize,
    pub first_len: AtomicUsize,
    pub first_frames: [AtomicUsize; FRAMES_MAX],
}

impl Accounting {
    /// Counts an allocation of `size` bytes and says whether it may go on. `panicking`: the
    /// calling thread is panicking, whose message and payload need the heap (the panic is
    /// already the failure). `capture` fills in the caller's return addresses, only for the
    /// report.
    pub fn count(
        &self,
        size: usize,
        panicking: bool,
        capture: impl FnOnce(&mut [usize; FRAMES_MAX]) -> usize,
    ) -> Verdict {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.live_bytes.fetch_add(size as u64, Ordering::Relaxed);
        let mode = self.mode.load(Ordering::Relaxed);
        if mode == MODE_STARTING || mode == MODE_DYING || panicking {
            return Verdict::Allow;
        }
        self.after_ready.fetch_add(1, Ordering::Relaxed);
        if mode == MODE_STRICT {
            // One allocation ends the process; any other meanwhile is let through, since the
            // process is dying and the first one is the one to report.
            let won = self.mode.compare_exchange(
                MODE_STRICT,
                MODE_DYING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return if won.is_ok() {
                Verdict::Refuse
            } else {
                Verdict::Allow
            };
        }
        let claimed =
            self.first_claimed
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed);
        if claimed.is_ok() {
            self.fill_first(size, capture);
        }
        Verdict::Allow
    }

    fn fill_first(&self, size: usize, capture: impl FnOnce(&mut [usize; FRAMES_MAX]) -> usize) {
        let mut frames = [0usize; FRAMES_MAX];
        let n = capture(&mut frames).min(FRAMES_MAX);
        for (slot, frame) in self.first_frames.iter().zip(&frames[..n]) {
            slot.store(*frame, Ordering::Relaxed);
        }
        self.first_len.store(n, Ordering::Relaxed);
        self.first_size.store(size, Ordering::Relaxed);
        self.first_ready.store(true, Ordering::Release);
    }

    /// Counts `size` bytes freed.
    pub fn freed(&self, size: usize) {
        self.live_bytes.fetch_sub(size as u64, Ordering::Relaxed);
    }

    /// Ends start-up, once: from now on allocations count as after ready, and in `strict` mode
    /// the first one is refused.
    pub fn mark_ready(&self, strict: bool) {
        // Before the mode moves nothing can have counted as after ready; once it has, another
        // thread may, so this is checked first.
        assert!(self.after_ready.load(Ordering::Relaxed) == 0);
        let mode = if strict { MODE_STRICT } else { MODE_COUNTING };
        let was =
            self.mode
                .compare_exchange(MODE_STARTING, mode, Ordering::Relaxed, Ordering::Relaxed);
        assert!(was.is_ok(), "ready is marked once");
    }

    /// The first allocation after ready, once: `Some` the first time it is asked after that
    /// allocation was recorded, `None` before and ever after.
    pub fn take_first(&self) -> Option<First> {
        // A compare-exchange, the same here as a swap: loom mis-models a swap that races a plain
        // store (tokio-rs/loom#254) and would report a lost report that cannot happen.
        let taken =
            self.first_ready
                .compare_exchange(true, false, Ordering::Acquire, Ordering::Relaxed);
        if taken.is_err() {
            return None;
        }
        let frames_len = self.first_len.load(Ordering::Relaxed);
        assert!(frames_len <= FRAMES_MAX);
        let mut frames = [0usize; FRAMES_MAX];
        for (frame, slot) in frames.iter_mut().zip(&self.first_frames[..frames_len]) {
            *frame = slot.load(Ordering::Relaxed);
        }
        Some(First {
            size: self.first_size.load(Ordering::Relaxed),
            frames,
            frames_len,
        })
    }
}
