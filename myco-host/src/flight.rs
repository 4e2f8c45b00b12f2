//! The flight recorder and the log: every log line, debug included, goes into a 1 MiB ring in
//! memory, and a panic hook writes the ring to `<state-dir>/flight-recorder.log` before the process
//! dies. Debug lines never reach the journal (unless `--verbose`), so after a crash in the field
//! this file is the only record of what led to it.
//!
//! The file is opened when the hook is installed, at start, and its blocks are allocated then
//! (`FLIGHT_RECORDER_BYTES`, beyond its end, so the last crash's record stays readable): the hook
//! overwrites it in place from the start and cuts it to what it wrote, so a full disk cannot keep
//! the record from being written.
//!
//! The ring (`ring`) is the arena's, taken when the recorder is first asked for; where threads
//! meet over it (every logger, and the panic hook) is `shared`, which loom checks.
//!
//! Invariants: the ring is taken once, when the recorder is made, and recording only copies
//! bytes; every recorded line ends in `\n`; the recorder's output never starts with a torn line.
//! Lines go to stderr with sd-daemon(3) priority prefixes (`<3>` error ... `<7>` debug), which
//! journald turns into priorities, so one line of text is one journal entry: newlines inside a
//! message become spaces.

use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::time::TimeValLike;
use nix::time::{clock_gettime, ClockId};
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::panic::{self, PanicHookInfo};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod ring;
mod shared;

/// The lock `shared` is written against: std's here, loom's in `tests/loom.rs`.
mod sync {
    pub use std::sync::{Mutex, PoisonError, TryLockError};
}

pub use ring::FlightRecorder;

/// An I/O error as a log line shows it, without allocating: std's `Display` of an OS error builds
/// a `String` from `strerror_r`, which the daemon may not do after ready (a full disk's
/// `ENOSPC` logged from the loop aborted `--strict-alloc`). The text is the C library's
/// description, as std's, from nix's static table.
pub struct IoError<'a>(pub &'a io::Error);

impl fmt::Display for IoError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.raw_os_error(), self.0.get_ref()) {
            (Some(code), _) => {
                let desc = nix::errno::Errno::from_raw(code).desc();
                write!(f, "{desc} (os error {code})")
            }
            (None, Some(inner)) => write!(f, "{inner}"),
            (None, None) => write!(f, "{:?}", self.0.kind()),
        }
    }
}

use shared::Shared;

/// The ring's size: at ~100 bytes a line, the last ten thousand lines.
pub const FLIGHT_RECORDER_BYTES: usize = 1024 * 1024;
/// The panic hook's file, in the state directory.
pub const FLIGHT_RECORDER_FILE_NAME: &str = "flight-recorder.log";
/// One log line, formatted on the stack. A longer message is cut and ends in `…`.
pub const LOG_LINE_BYTES: usize = 512;

const ELLIPSIS: &str = "…";
/// Text stops here so that the ellipsis and the newline that stderr needs always fit after it.
const LINE_TEXT_BYTES_MAX: usize = LOG_LINE_BYTES - ELLIPSIS.len() - 1;
/// The process's recorder. Behind a lock although the daemon's loop is one thread: the panic
/// hook runs on whichever thread panics (the start-up thread, a test's, a helper's), and a global
/// mutable value needs a lock to be safe (`shared` says how the hook takes it).
static RECORDER: OnceLock<Shared> = OnceLock::new();

/// The process's recorder, made by its first caller (the logger or the hook, at start-up) over
/// the arena's ring.
fn recorder() -> &'static Shared {
    RECORDER.get_or_init(|| Shared::new(FlightRecorder::new(crate::arena::flight_ring())))
}

/// Journald priorities, as sd-daemon(3) prefixes on stderr lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Error => "<3>",
            Level::Warning => "<4>",
            Level::Info => "<6>",
            Level::Debug => "<7>",
        }
    }
}

/// Writes log lines to stderr and to the flight recorder.
#[derive(Clone, Copy, Debug)]
pub struct Logger {
    verbose: bool,
}

impl Logger {
    /// Allocates the process's flight recorder if no logger or hook has yet. With `verbose`,
    /// debug lines go to stderr too; without, only to the recorder.
    pub fn new(verbose: bool) -> Logger {
        recorder();
        Logger { verbose }
    }

    /// Logs `what: <the error>`, the error read without allocating ([`IoError`]).
    pub fn failed(&self, level: Level, what: &str, e: &io::Error) {
        self.log(level, format_args!("{what}: {}", IoError(e)));
    }

    /// Logs one line, e.g. `logger.log(Level::Info, format_args!("bound {addr}"))`. Formats on
    /// the stack and never allocates. The recorder's copy starts with a CLOCK_MONOTONIC timestamp
    /// in seconds and milliseconds, the clock of `journalctl -o short-monotonic`.
    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        let mut line = LogLine::format(monotonic_ms(), level, args);
        recorder().record(line.recorded());
        if level != Level::Debug || self.verbose {
            // A log line that cannot be written has nowhere to be reported; the recorder has it.
            let _ = io::stderr().write_all(line.for_stderr());
        }
    }
}

/// Milliseconds of CLOCK_MONOTONIC. Reading it cannot fail on Linux; 0 stands in if it ever did.
fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_or(0, |now| u64::try_from(now.num_milliseconds()).unwrap_or(0))
}

/// A log line formatted on the stack: `[seconds.millis] <N>message`. The recorder gets all of it,
/// stderr the part from `<N>` on (journald adds its own timestamps) plus a newline.
struct LogLine {
    bytes: [u8; LOG_LINE_BYTES],
    len: usize,
    message_start: usize,
    truncated: bool,
}

impl LogLine {
    fn format(now_ms: u64, level: Level, args: fmt::Arguments<'_>) -> LogLine {
        let mut line = LogLine {
            bytes: [0; LOG_LINE_BYTES],
            len: 0,
            message_start: 0,
            truncated: false,
        };
        // Formatting fails only when the line is full, and then it is already cut and marked.
        let _ = write!(line, "[{}.{:03}] ", now_ms / 1000, now_ms % 1000);
        line.message_start = line.len;
        let _ = write!(line, "{}{args}", level.prefix());
        assert!(line.len < LOG_LINE_BYTES);
        line
    }

    fn recorded(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn for_stderr(&mut self) -> &[u8] {
        self.bytes[self.len] = b'\n';
        &self.bytes[self.message_start..=self.len]
    }

    fn push(&mut self, text: &str) {
        let target = &mut self.bytes[self.len..self.len + text.len()];
        target.copy_from_slice(text.as_bytes());
        for byte in target.iter_mut().filter(|b| **b == b'\n') {
            *byte = b' ';
        }
        self.len += text.len();
    }
}

impl fmt::Write for LogLine {
    /// Appends what fits, cut at a character boundary; once something did not fit, appends `…`
    /// and fails, which stops the formatting.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.truncated {
            return Err(fmt::Error);
        }
        let mut fits = text.len().min(LINE_TEXT_BYTES_MAX - self.len);
        while !text.is_char_boundary(fits) {
            fits -= 1;
        }
        self.push(&text[..fits]);
        if fits == text.len() {
            return Ok(());
        }
        self.push(ELLIPSIS);
        self.truncated = true;
        Err(fmt::Error)
    }
}

/// Installs a panic hook that records the panic's message and location, writes the recorder to
/// `path` (normally `<state-dir>/FLIGHT_RECORDER_FILE_NAME`) and syncs it, then runs the hook that
/// was installed before (by default the one that prints the panic to stderr). Release builds
/// abort on panic (`panic = "abort"`), but the hook runs before the abort, so the file is written
/// there too. Also allocates the recorder, so a panic before the first log line finds one.
///
/// The file is opened and its blocks allocated now. The hook is installed whatever happens; the
/// error says why the file could not be prepared (the hook then still tries, by path, at panic).
pub fn install_panic_hook(path: PathBuf) -> io::Result<()> {
    recorder();
    let (file, prepared) = match open_recorder_file(&path) {
        Ok(file) => {
            let allocated = allocate_recorder_file(&file);
            (Some(file), allocated)
        }
        Err(e) => (None, Err(e)),
    };
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        flush_on_panic(&path, file.as_ref(), info);
        previous(info);
    }));
    prepared
}

/// Opens the file without truncating it: it holds the last crash's record until the next one.
fn open_recorder_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Allocates blocks for everything the hook may write, without changing the file's length.
fn allocate_recorder_file(file: &File) -> io::Result<()> {
    let len = FLIGHT_RECORDER_BYTES as nix::libc::off_t;
    fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, len)?;
    file.sync_all()
}

fn flush_on_panic(path: &Path, file: Option<&File>, info: &PanicHookInfo<'_>) {
    let line = LogLine::format(monotonic_ms(), Level::Error, format_args!("{info}"));
    if let Err(error) = write_recorder(path, file, line.recorded()) {
        // The process is dying; stderr is the last place left to say why the file is missing.
        let _ = writeln!(
            io::stderr(),
            "<3>flight recorder: could not write {}: {error}",
            path.display()
        );
    }
}

/// Overwrites the file from its start with the recorded lines and the panic, then cuts it to
/// what was written. Writing into allocated blocks needs no free space.
fn write_recorder(path: &Path, kept: Option<&File>, panic_line: &[u8]) -> io::Result<()> {
    let opened;
    let file = match kept {
        Some(file) => file,
        None => {
            opened = open_recorder_file(path)?;
            &opened
        }
    };
    let mut out = AtOffset { file, offset: 0 };
    recorder().write_on_panic(panic_line, &mut out)?;
    file.set_len(out.offset)?;
    file.sync_all()
}

/// Writes `file` from `offset` on, whatever its current position.
struct AtOffset<'f> {
    file: &'f File,
    offset: u64,
}

impl Write for AtOffset<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write_at(buf, self.offset)?;
        self.offset += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OS error reads as the C library says it, with its number, and a custom one as its
    /// message: the text std's `Display` gives, without its allocation.
    #[test]
    fn io_errors_read_as_std_reads_them() {
        let full = io::Error::from_raw_os_error(28);
        let text = format!("{}", IoError(&full));
        assert_eq!(text, "No space left on device (os error 28)");
        assert_eq!(text, full.to_string());
        let custom = io::Error::new(io::ErrorKind::InvalidData, "short read");
        assert_eq!(format!("{}", IoError(&custom)), "short read");
        let bare = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(format!("{}", IoError(&bare)), "TimedOut");
    }

    /// The recorder's line carries the timestamp; stderr's starts at the priority prefix and ends
    /// in one newline; newlines inside the message become spaces.
    #[test]
    fn log_line_layout() {
        let mut line = LogLine::format(12_345_067, Level::Warning, format_args!("a\nb {}", 7));
        assert_eq!(line.recorded(), b"[12345.067] <4>a b 7");
        assert_eq!(line.for_stderr(), b"<4>a b 7\n");
    }

    /// An oversized message is cut at a character boundary and marked, and the line, with its
    /// newline, still fits `LOG_LINE_BYTES`.
    #[test]
    fn long_log_line_is_cut_and_marked() {
        let message = "é".repeat(LOG_LINE_BYTES);
        let mut line = LogLine::format(0, Level::Debug, format_args!("{message}"));
        let text = std::str::from_utf8(line.recorded()).expect("cut at a character boundary");
        assert!(text.starts_with("[0.000] <7>éé"));
        assert!(text.ends_with("é…"));
        assert!(line.for_stderr().len() <= LOG_LINE_BYTES);
        assert!(line.recorded().len() > LINE_TEXT_BYTES_MAX - "é".len());
    }
}
