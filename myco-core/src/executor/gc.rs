//! Nix store garbage collection, as a sans-IO machine: when to run `nix-collect-garbage`, what
//! its output says it freed, and when the disk is too full to build. The host reads the usage
//! of the filesystem holding `/nix/store` (statvfs) when [`Gc::check_due`] says so (at most once
//! every `STORE_CHECK_INTERVAL_MS`, and at once after each build or collection) and reports it
//! with [`Gc::handle_store_usage`]; it runs the collection [`Gc::poll_gc`] asks for and reports
//! its end with [`Gc::handle_gc_done`].
//!
//! The collection runs beside the unit commands of the executor, with a token of its own, not
//! in their one-at-a-time queue: a collection of a large store takes minutes, and unit changes
//! must not wait behind it. Nix makes the two safe together: a build's outputs are held by
//! temporary roots until the build's own GC root is made, and `nix-collect-garbage` deletes only
//! what no root, profile or running process holds. So what a running unit uses is never
//! collected: its store path is rooted (the build's `--gcroots` directory, kept for the current
//! and previous output of each placed service) and, while it runs, also held by its processes.
//! This machine never deletes a root.
//!
//! Invariants:
//! - At most one collection is in flight; an outcome with another token changes nothing.
//! - A collection starts only above `GC_START_PERMILLE`, at most once every
//!   `GC_INTERVAL_MIN_MS` (and `GC_RETRY_MS` after a failure).
//! - Builds are refused only above `BUILDS_REFUSED_PERMILLE` and only after a collection that
//!   freed nothing (or failed): a full disk with garbage on it is collected first.

use super::Outcome;
use crate::config::{
    BUILDS_REFUSED_PERMILLE, GC_INTERVAL_MIN_MS, GC_RETRY_MS, GC_START_PERMILLE,
    STORE_CHECK_INTERVAL_MS,
};
use crate::time::Instant;

/// What `nix-collect-garbage` said it deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freed {
    pub paths: u64,
    pub bytes: u64,
}

/// How a collection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcDone {
    /// It ran and said what it freed.
    Freed(Freed),
    /// It failed, or its output did not say what it freed; it is tried again after
    /// `GC_RETRY_MS`.
    Failed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub runs: u64,
    pub failures: u64,
    pub freed_bytes: u64,
    pub paths_deleted: u64,
}

#[derive(Clone, Debug)]
pub struct Gc {
    /// The last usage the host reported, in permille; 0 before the first.
    used_permille: u16,
    next_check_ms: u64,
    /// No collection starts before this.
    next_gc_ms: u64,
    in_flight: Option<u64>,
    next_token: u64,
    /// The last collection freed nothing (or failed); cleared when one frees something.
    freed_nothing: bool,
    pub stats: GcStats,
}

impl Default for Gc {
    fn default() -> Gc {
        Gc::new()
    }
}

impl Gc {
    /// A machine that has not seen the store yet: the first check is due at once.
    pub const fn new() -> Gc {
        Gc {
            used_permille: 0,
            next_check_ms: 0,
            next_gc_ms: 0,
            in_flight: None,
            next_token: 1,
            freed_nothing: false,
            stats: GcStats {
                runs: 0,
                failures: 0,
                freed_bytes: 0,
                paths_deleted: 0,
            },
        }
    }

    /// Whether the host should read the store's usage now.
    pub fn check_due(&self, now: Instant) -> bool {
        now.0 >= self.next_check_ms
    }

    /// A build finished: the store grew, so its usage is read again at the next step.
    pub fn handle_build_done(&mut self) {
        self.next_check_ms = 0;
    }

    /// The filesystem holding the store is `used_permille` used (values above 1000 count as
    /// 1000). The next check is due `STORE_CHECK_INTERVAL_MS` from now.
    pub fn handle_store_usage(&mut self, now: Instant, used_permille: u16) {
        self.used_permille = used_permille.min(1000);
        self.next_check_ms = now.0.saturating_add(STORE_CHECK_INTERVAL_MS);
    }

    /// The last usage reported, in permille.
    pub fn used_permille(&self) -> u16 {
        self.used_permille
    }

    /// The token of a collection to run now (`nice -n 19 ionice -c 3 nix-collect-garbage`), if
    /// one is due.
    pub fn poll_gc(&mut self, now: Instant) -> Option<u64> {
        if self.in_flight.is_some()
            || self.used_permille <= GC_START_PERMILLE
            || now.0 < self.next_gc_ms
        {
            return None;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.in_flight = Some(token);
        self.next_gc_ms = now.0.saturating_add(GC_INTERVAL_MIN_MS);
        self.stats.runs += 1;
        Some(token)
    }

    /// The collection with token `token` ended; `outcome.stdout` is what it printed. Returns
    /// `None`, changing nothing, for a stale token.
    pub fn handle_gc_done(
        &mut self,
        now: Instant,
        token: u64,
        outcome: Outcome<'_>,
    ) -> Option<GcDone> {
        if self.in_flight != Some(token) {
            return None;
        }
        self.in_flight = None;
        let freed = if outcome.ok {
            parse_freed(outcome.stdout)
        } else {
            None
        };
        let done = match freed {
            Some(f) => {
                self.stats.freed_bytes = self.stats.freed_bytes.saturating_add(f.bytes);
                self.stats.paths_deleted = self.stats.paths_deleted.saturating_add(f.paths);
                GcDone::Freed(f)
            }
            None => {
                self.stats.failures += 1;
                self.next_gc_ms = now.0.saturating_add(GC_RETRY_MS);
                GcDone::Failed
            }
        };
        self.freed_nothing = freed.is_none_or(|f| f.bytes == 0);
        // What the collection freed shows in the usage: read it again at once.
        self.next_check_ms = 0;
        assert!(self.in_flight.is_none());
        Some(done)
    }

    /// Whether a collection is running.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether builds must be refused (status `disk-full`): the store's filesystem is above
    /// `BUILDS_REFUSED_PERMILLE` and the last collection freed nothing. The build logic calls
    /// this before it issues a build; a refused build is tried again when this turns false
    /// (a later collection frees something, or usage falls), so the disk never fills and the
    /// daemon's own reserve stays for its write-ahead log.
    pub fn builds_refused(&self) -> bool {
        self.used_permille > BUILDS_REFUSED_PERMILLE && self.freed_nothing
    }
}

/// What `nix-collect-garbage` freed, from its summary line (the last one, if it printed several):
/// `N store paths deleted, X.YZ MiB freed` (Nix 2.8 prints MiB with two decimals; later ones
/// pick the unit: `KiB`, `MiB`, `GiB`, `TiB`, or plain bytes). `None` without such a line.
pub fn parse_freed(out: &[u8]) -> Option<Freed> {
    out.split(|&b| b == b'\n')
        .rev()
        .filter_map(|line| core::str::from_utf8(line).ok())
        .find_map(|line| parse_summary(line.trim()))
}

fn parse_summary(line: &str) -> Option<Freed> {
    let (paths, rest) = line.split_once(" store paths deleted, ")?;
    let size = rest.strip_suffix(" freed")?;
    let (number, unit) = size.split_once(' ')?;
    let shift = match unit {
        "B" | "bytes" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        "PiB" => 50,
        _ => return None,
    };
    Some(Freed {
        paths: digits(paths)?,
        bytes: scaled(number, shift)?,
    })
}

/// `number` (decimal, optional fraction) times `2^shift`, rounded down.
fn scaled(number: &str, shift: u32) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // More fraction digits than this change no byte count Nix can print. A cut inside a
    // multi-byte character is no digit either: none, as `digits` would say.
    let fraction = fraction.get(..fraction.len().min(6))?;
    let whole = u128::from(digits(whole)?);
    let mut scale: u128 = 1;
    let mut part: u128 = 0;
    if !fraction.is_empty() {
        part = u128::from(digits(fraction)?);
        scale = 10u128.pow(fraction.len() as u32);
    }
    let bytes = ((whole * scale + part) << shift) / scale;
    u64::try_from(bytes).ok()
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nix 2.8's real output (stdout after the progress lines it writes to stderr) reads as the
    /// paths and bytes it names, MiB with two decimals rounded down to whole bytes.
    #[test]
    fn reads_nix_2_8_summary() {
        let out = b"finding garbage collector roots...\n\
deleting garbage...\n\
deleting '/nix/store/0hk0wq2yqyr8vsk2x6n7gbbwd6f6cx3y-hello-2.12'\n\
deleting unused links...\n\
note: currently hard linking saves 0.00 MiB\n\
2 store paths deleted, 0.22 MiB freed\n";
        let freed = parse_freed(out).unwrap();
        assert_eq!(freed.paths, 2);
        assert_eq!(freed.bytes, 230_686); // 0.22 * 1048576, rounded down
    }

    /// Later Nix versions pick the unit; nothing to delete reads as zero; other text is none.
    #[test]
    fn reads_other_units_and_refuses_noise() {
        let gib = parse_freed(b"7 store paths deleted, 1.5 GiB freed").unwrap();
        assert_eq!(
            gib,
            Freed {
                paths: 7,
                bytes: 3 << 29
            }
        );
        let none = parse_freed(b"0 store paths deleted, 0.00 MiB freed\n").unwrap();
        assert_eq!(none, Freed::default());
        for bad in [
            &b""[..],
            b"x store paths deleted, 1 MiB freed",
            b"1 store paths deleted, 1 XB freed",
            b"1 store paths deleted, -1 MiB freed",
            b"1 store paths deleted, 99999999999999999999 PiB freed",
        ] {
            assert_eq!(parse_freed(bad), None);
        }
    }

    /// A fraction whose sixth byte falls inside a multi-byte character (`Ì` is bytes 5 and 6 of
    /// `12345Ì`) is not a number: none, not a panic on slicing the text there. The line the
    /// `gc_output` fuzz target found, cut to the part that matters.
    #[test]
    fn a_fraction_cut_inside_a_character_reads_as_none() {
        let out = "3 store paths deleted, 1.12345\u{cc} MiB freed\n";
        assert_eq!(parse_freed(out.as_bytes()), None);
        let fine = parse_freed(b"3 store paths deleted, 1.1234567 KiB freed").unwrap();
        assert_eq!(
            fine.bytes, 1_150,
            "six fraction digits count: 1.123456 KiB, rounded down"
        );
    }

    /// Below the threshold nothing runs; above it one collection runs, then none before the
    /// minimum interval; its bytes are counted and usage is read again at once.
    #[test]
    fn collects_above_the_threshold_at_most_once_per_interval() {
        let mut gc = Gc::new();
        assert!(gc.check_due(Instant(0)));
        gc.handle_store_usage(Instant(0), GC_START_PERMILLE);
        assert!(!gc.check_due(Instant(1)));
        assert_eq!(gc.poll_gc(Instant(0)), None);
        gc.handle_store_usage(Instant(1), GC_START_PERMILLE + 1);
        let token = gc.poll_gc(Instant(1)).unwrap();
        assert_eq!(gc.poll_gc(Instant(2)), None, "one at a time");
        let out = b"3 store paths deleted, 2.00 MiB freed\n";
        let ok = Outcome {
            ok: true,
            stdout: out,
        };
        assert_eq!(gc.handle_gc_done(Instant(3), token + 1, ok), None, "stale");
        let done = gc.handle_gc_done(Instant(3), token, ok);
        assert_eq!(
            done,
            Some(GcDone::Freed(Freed {
                paths: 3,
                bytes: 2 << 20
            }))
        );
        assert!(gc.check_due(Instant(3)));
        assert_eq!(gc.stats.freed_bytes, 2 << 20);
        assert_eq!(gc.poll_gc(Instant(GC_INTERVAL_MIN_MS)), None);
        assert!(gc.poll_gc(Instant(1 + GC_INTERVAL_MIN_MS)).is_some());
    }

    /// Builds are refused only above the refusal threshold after a collection that freed
    /// nothing, and allowed again when one frees something or usage falls.
    #[test]
    fn refuses_builds_only_when_nothing_could_be_freed() {
        let mut gc = Gc::new();
        gc.handle_store_usage(Instant(0), BUILDS_REFUSED_PERMILLE + 1);
        assert!(!gc.builds_refused(), "garbage is collected first");
        let token = gc.poll_gc(Instant(0)).unwrap();
        let nothing = b"0 store paths deleted, 0.00 MiB freed\n";
        let done = Outcome {
            ok: true,
            stdout: nothing,
        };
        gc.handle_gc_done(Instant(1), token, done);
        assert!(gc.builds_refused());
        gc.handle_store_usage(Instant(2), BUILDS_REFUSED_PERMILLE);
        assert!(!gc.builds_refused(), "usage fell");
        gc.handle_store_usage(Instant(3), 1000);
        assert!(gc.builds_refused());
        let token = gc.poll_gc(Instant(1 + GC_INTERVAL_MIN_MS)).unwrap();
        let some = Outcome {
            ok: true,
            stdout: b"1 store paths deleted, 1.00 KiB freed",
        };
        gc.handle_gc_done(Instant(2 + GC_INTERVAL_MIN_MS), token, some);
        assert!(!gc.builds_refused());
    }

    /// A failed collection counts as freeing nothing and is retried after `GC_RETRY_MS`.
    #[test]
    fn a_failed_collection_is_retried() {
        let mut gc = Gc::new();
        gc.handle_store_usage(Instant(0), 990);
        let token = gc.poll_gc(Instant(0)).unwrap();
        let done = gc.handle_gc_done(Instant(10), token, Outcome::FAILED);
        assert_eq!(done, Some(GcDone::Failed));
        assert!(gc.builds_refused());
        assert_eq!(gc.stats.failures, 1);
        assert_eq!(gc.poll_gc(Instant(9 + GC_RETRY_MS)), None);
        assert!(gc.poll_gc(Instant(10 + GC_RETRY_MS)).is_some());
    }
}
