//! The daemon's global allocator: `System`, counting, and refusing once start-up is over. The
//! daemon lays its buffers and tables out before it tells systemd it is ready; after that
//! ([`mark_ready`]) an allocation is a bug. In strict mode (`--strict-alloc`, the tests' mode) the
//! first one aborts the process after writing its size and the caller's return addresses to stderr
//! and, through the panic hook, to the flight recorder; otherwise it is counted (`/metrics`), and
//! the first one's size and return addresses wait for the event loop to log them once
//! ([`take_first_after_ready`]).
//!
//! Invariants: nothing here allocates on the allocation path (the report is formatted on the stack
//! and written with write(2); the frames land in a static), except once the process is dying,
//! when every allocation is let through so that the panic hook can write the flight recorder.
//! What is counted and refused is decided in `accounting`, whose own invariants loom checks.

mod accounting;

pub use accounting::FRAMES_MAX;
use accounting::{Accounting, First, Verdict, MODE_STARTING};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The atomics `accounting` is written against: std's here, loom's in `tests/loom.rs`.
mod atomics {
    pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
}

static ACCOUNTING: Accounting = Accounting {
    mode: atomics::AtomicU8::new(MODE_STARTING),
    allocations: atomics::AtomicU64::new(0),
    after_ready: atomics::AtomicU64::new(0),
    live_bytes: atomics::AtomicU64::new(0),
    first_claimed: atomics::AtomicBool::new(false),
    first_ready: atomics::AtomicBool::new(false),
    first_size: AtomicUsize::new(0),
    first_len: AtomicUsize::new(0),
    first_frames: [const { AtomicUsize::new(0) }; FRAMES_MAX],
};
/// Where the executable is loaded, so that return addresses print as offsets `addr2line` reads.
static LOAD_BIAS: AtomicUsize = AtomicUsize::new(0);

/// `System`, counting every allocation (a `realloc` counts as one) and the bytes live, and
/// refusing after [`mark_ready`] as the module says.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the bookkeeping
// before it touches only atomics and stack buffers, never the memory handed out, and never unwinds
// (a strict refusal aborts the process).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ACCOUNTING.freed(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted(new_size);
        ACCOUNTING.freed(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The bookkeeping of one allocation of `size` bytes, and the refusal after ready.
fn counted(size: usize) {
    if ACCOUNTING.count(size, std::thread::panicking(), capture) == Verdict::Refuse {
        refuse(size);
    }
}

/// Strict mode's end: the report on stderr without allocating, then a panic (caught here, so it
/// never unwinds out of the allocator) whose hook records the same report in the flight recorder
/// and writes its file, then the abort. The mode is already dying, so the panic may allocate.
fn refuse(size: usize) -> ! {
    let mut frames = [0usize; FRAMES_MAX];
    let frames_len = capture(&mut frames);
    let report = Report(First {
        size,
        frames,
        frames_len,
    });
    let mut text = StackText::default();
    let _ = writeln!(text, "<2>myco-d: --strict-alloc: {report}");
    write_stderr(text.as_bytes());
    let _ = std::panic::catch_unwind(|| panic!("--strict-alloc: {report}"));
    std::process::abort()
}

/// Ends start-up: from now on an allocation is counted as after ready, and aborts the process
/// if `strict`. Warms what a report needs (glibc's `backtrace` loads its unwinder on first use,
/// which allocates) so that reporting itself allocates nothing. Called once.
pub fn mark_ready(strict: bool) {
    let mut frames = [0usize; FRAMES_MAX];
    capture(&mut frames);
    LOAD_BIAS.store(load_bias(), Ordering::Relaxed);
    ACCOUNTING.mark_ready(strict);
}

/// Allocations since the process started (zero unless `Counting` is the global allocator).
pub fn allocations() -> u64 {
    ACCOUNTING.allocations.load(Ordering::Relaxed)
}

/// Allocations since [`mark_ready`]; zero before it.
pub fn allocations_since_ready() -> u64 {
    ACCOUNTING.after_ready.load(Ordering::Relaxed)
}

/// Bytes allocated and not yet freed.
pub fn live_bytes() -> u64 {
    ACCOUNTING.live_bytes.load(Ordering::Relaxed)
}

/// The first allocation after ready, once: `Some` the first time it is asked after that
/// allocation happened, `None` before and ever after. The event loop logs it.
pub fn take_first_after_ready() -> Option<Report> {
    ACCOUNTING.take_first().map(Report)
}

/// One allocation after ready: its size and its callers' return addresses.
#[derive(Clone, Copy, Debug)]
pub struct Report(First);

impl std::fmt::Display for Report {
    /// One line: the size, then each return address as an offset into the executable, innermost
    /// first, which `addr2line -f -C -e myco-d OFFSET...` turns into functions and lines on a
    /// build with debug information (frames in shared libraries show as large offsets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let First {
            size,
            frames,
            frames_len,
        } = self.0;
        write!(
            f,
            "heap allocation of {size} bytes after ready; return addresses (addr2line -f -C -e myco-d):"
        )?;
        let bias = LOAD_BIAS.load(Ordering::Relaxed);
        for frame in &frames[..frames_len] {
            write!(f, " {:#x}", frame.wrapping_sub(bias))?;
        }
        Ok(())
    }
}

/// The caller's return addresses, innermost first, into `frames`; how many were found.
#[cfg(target_env = "gnu")]
fn capture(frames: &mut [usize; FRAMES_MAX]) -> usize {
    let mut raw = [core::ptr::null_mut::<libc::c_void>(); FRAMES_MAX];
    // SAFETY: `raw` has room for exactly `FRAMES_MAX` pointers, the count passed; glibc writes at
    // most that many and returns how many it wrote.
    let n = unsafe { libc::backtrace(raw.as_mut_ptr(), FRAMES_MAX as libc::c_int) };
    let n = usize::try_from(n).unwrap_or(0).min(FRAMES_MAX);
    for (frame, ptr) in frames.iter_mut().zip(&raw[..n]) {
        *frame = *ptr as usize;
    }
    n
}

/// Without glibc's `backtrace` the report gives the size alone.
#[cfg(not(target_env = "gnu"))]
fn capture(_frames: &mut [usize; FRAMES_MAX]) -> usize {
    0
}

/// The executable's load address: the first object `dl_iterate_phdr` visits is the program.
fn load_bias() -> usize {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid `info` for the duration of the call, and `data` is the
        // `&mut usize` given below, alive for the whole iteration.
        unsafe { *data.cast::<usize>() = (*info).dlpi_addr as usize };
        1
    }
    let mut bias = 0usize;
    // SAFETY: the callback only reads `info` and writes `bias` through `data`, which outlives the
    // call; returning 1 stops the iteration after the first object.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut bias).cast()) };
    bias
}

/// Writes all of `bytes` to stderr with write(2), retrying on a short write; errors are dropped
/// because the process is about to abort and has nowhere else to say anything.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice of its stated length.
        let n = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        let Ok(n) = usize::try_from(n) else {
            return;
        };
        if n == 0 {
            return;
        }
        bytes = &bytes[n..];
    }
}

/// Text formatted on the stack; what does not fit is cut.
struct StackText {
    bytes: [u8; 1024],
    len: usize,
}

impl Default for StackText {
    fn default() -> StackText {
        StackText {
            bytes: [0; 1024],
            len: 0,
        }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
