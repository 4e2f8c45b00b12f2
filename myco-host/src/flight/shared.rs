//! Where the flight recorder's threads meet: every thread that logs appends to the ring under a
//! lock, and the panic hook, on whichever thread panics, reads the ring while the others may
//! still be logging. It touches only the lock of its parent's `sync` module, so `tests/loom.rs`
//! compiles this same file against loom's `Mutex` and checks it under every interleaving.
//!
//! Invariants: the ring is only read or written under the lock; a lock poisoned by an earlier
//! panic still guards bytes worth reading, so logging takes it anyway; the hook only tries the
//! lock, so a panic while it is held (inside `record` on the same thread, or on another thread)
//! never deadlocks: the hook then writes [`RECORDER_BUSY`] and the panic alone, never a ring
//! that may be mid-update.

use super::ring::FlightRecorder;
use super::sync::{Mutex, PoisonError, TryLockError};
use std::io::{self, Write};

/// What the panic hook writes when another frame or thread held the recorder's lock.
pub const RECORDER_BUSY: &[u8] =
    b"flight recorder busy: its lock was held when the panic happened; only the panic follows\n";

/// The process's recorder behind its lock.
pub struct Shared {
    ring: Mutex<FlightRecorder>,
}

impl Shared {
    pub fn new(ring: FlightRecorder) -> Shared {
        Shared {
            ring: Mutex::new(ring),
        }
    }

    /// Appends one line, waiting for the lock (uncontended in the daemon: one atomic operation).
    pub fn record(&self, line: &[u8]) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.record(line);
    }

    /// The panic hook's read: records `panic_line` and writes the ring, oldest first, to `out`;
    /// if the lock is held, writes only that it was and the panic.
    pub fn write_on_panic(&self, panic_line: &[u8], out: &mut impl Write) -> io::Result<()> {
        let mut ring = match self.ring.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Held by the panicking frame itself (a panic inside `record`) or by another thread:
            // waiting could deadlock, and the ring may be mid-update, so only the panic is written.
            Err(TryLockError::WouldBlock) => {
                out.write_all(RECORDER_BUSY)?;
                out.write_all(panic_line)?;
                return out.write_all(b"\n");
            }
        };
        ring.record(panic_line);
        ring.write_to(out)
    }
}
