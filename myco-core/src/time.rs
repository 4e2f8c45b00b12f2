//! Time as the caller gives it: milliseconds of a monotonic clock.
//!
//! The core has no clock of its own. The daemon passes `CLOCK_MONOTONIC` milliseconds, the
//! simulator its discrete time, so the same code runs in both and any trace replays.

/// A point in time, in milliseconds since an arbitrary origin chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds later, saturating instead of wrapping.
    pub const fn add_ms(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }

    /// Milliseconds elapsed since `earlier`, or 0 if `earlier` is in the future.
    pub const fn since_ms(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
