//! The event loop's I/O backend: readiness of the loop's fds, its timeout, and the WAL's durable
//! writes, behind one type with two implementations. `uring` uses one io_uring ring; `poll` uses
//! poll(2), pwrite(2) and fdatasync(2) where io_uring is unavailable (kernel.io_uring_disabled, or
//! a seccomp profile that blocks it, common in containers).
//!
//! Both are readiness-based so that the loop behaves the same on either: it names the fds it
//! cares about each turn, hears which are ready, and does the reads and writes itself.
//!
//! Invariants, for both backends:
//! - No heap allocation after `Backend::new`, except to build the error for a loop bug (more than
//!   `TOKENS_MAX` interests, or a token twice). Tables are fixed arrays of `TOKENS_MAX` entries.
//! - Interests are level-triggered: an fd still ready is reported again on the next `wait`.
//! - After `forget(token)` no completion for `token` is reported until the loop names it again.
//! - At most one durable write is in flight; its buffer belongs to the backend until the
//!   `Written` completion hands it back, so the kernel never sees a dangling pointer.

pub mod poll;
pub mod uring;

#[cfg(test)]
mod tests;

use std::io;
use std::time::{Duration, Instant};

pub use std::os::fd::RawFd;

/// Fds (tokens) one `wait` can watch. The loop has a handful: the gossip socket, the API
/// listener and its connections, the signalfd. More than this is a bug in the loop.
pub const TOKENS_MAX: usize = 64;

/// Completions one `wait` can report; `Completions` holds this many.
pub const COMPLETIONS_MAX: usize = 64;

/// Every token fits in one `wait`'s report; only the write's completion, which goes first, can
/// push the last one to the next call.
const _: () = assert!(COMPLETIONS_MAX >= TOKENS_MAX);

/// What the loop wants to hear about one fd this turn. `token` is the loop's name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    pub fd: RawFd,
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}

#[derive(Debug)]
pub enum Completion {
    /// The fd of `token` is readable/writable, or hung up / errored (hangup: read it to find out).
    Ready {
        token: u64,
        readable: bool,
        writable: bool,
        hangup: bool,
    },
    /// The write+fdatasync started by `write_durable` finished; the buffer comes back.
    Written {
        buf: &'static mut [u8],
        result: io::Result<()>,
    },
}

pub type Completions = heapless::Vec<Completion, COMPLETIONS_MAX>;

/// Which backend the operator asked for (`--io auto|uring|poll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Uring,
    Poll,
}

/// One per loop, made once and never moved in the loop's path, so its size (a few KiB for the
/// fixed tables) costs nothing; boxing a variant would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Uring(uring::Uring),
    Poll(poll::Poll),
}

impl Backend {
    /// Auto: try io_uring, fall back to poll and return why (the io::Error from setup or the
    /// probe) as the second value. Uring: error if unavailable. Poll: poll.
    pub fn new(choice: Choice) -> io::Result<(Backend, Option<io::Error>)> {
        match choice {
            Choice::Poll => Ok((Backend::Poll(poll::Poll::new()), None)),
            Choice::Uring => Ok((Backend::Uring(uring::Uring::new()?), None)),
            Choice::Auto => match uring::Uring::new() {
                Ok(ring) => Ok((Backend::Uring(ring), None)),
                Err(why) => Ok((Backend::Poll(poll::Poll::new()), Some(why))),
            },
        }
    }

    /// "io_uring" or "poll", as `/health` and `/metrics` report it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Uring(_) => "io_uring",
            Backend::Poll(_) => "poll",
        }
    }

    /// Blocks until at least one interest is ready, a write completes, or `timeout` passes, and
    /// appends what happened to `out` (never more than fits; the rest is reported next call).
    /// `interests` may differ from the last call's: tokens that are gone stop being watched, and a
    /// token whose fd or wishes changed is watched anew. Order: the write's completion first,
    /// then ready tokens in `interests` order. An fd that hung up or errored is reported (with
    /// `hangup`) on every call until the loop stops naming it.
    pub fn wait(
        &mut self,
        interests: &[Interest],
        timeout: Duration,
        out: &mut Completions,
    ) -> io::Result<()> {
        check_interests(interests)?;
        match self {
            Backend::Uring(ring) => ring.wait(interests, timeout, out),
            Backend::Poll(poll) => poll.wait(interests, timeout, out),
        }
    }

    /// The loop calls this before closing an fd it had registered under `token`; afterwards no
    /// completion for `token` is reported. Does not allocate.
    pub fn forget(&mut self, token: u64) {
        match self {
            Backend::Uring(ring) => ring.forget(token),
            Backend::Poll(_) => {} // poll(2) holds nothing between calls.
        }
    }

    /// Starts writing `buf[..len]` to `fd` at `offset`, then fdatasync. The buffer comes back in
    /// `Completion::Written`; `Err` gives it back at once if a write is already in flight.
    pub fn write_durable(
        &mut self,
        fd: RawFd,
        buf: &'static mut [u8],
        len: usize,
        offset: u64,
    ) -> Result<(), &'static mut [u8]> {
        assert!(
            len <= buf.len(),
            "write_durable: len {len} > buffer {}",
            buf.len()
        );
        if self.write_in_flight() {
            return Err(buf);
        }
        let write = WriteProgress {
            fd,
            buf,
            len,
            offset,
            done: 0,
        };
        match self {
            Backend::Uring(ring) => ring.write_durable(write),
            Backend::Poll(poll) => poll.write_durable(write),
        }
        assert!(self.write_in_flight());
        Ok(())
    }

    /// True from `write_durable` until its `Written` completion has been handed out.
    pub fn write_in_flight(&self) -> bool {
        match self {
            Backend::Uring(ring) => ring.write_in_flight(),
            Backend::Poll(poll) => poll.write_in_flight(),
        }
    }
}

/// A loop bug, reported rather than panicking so the daemon can log it and stop cleanly.
fn check_interests(interests: &[Interest]) -> io::Result<()> {
    if interests.len() > TOKENS_MAX {
        return Err(io::Error::other(
            "more interests than io::TOKENS_MAX; a bug in the loop",
        ));
    }
    for (i, interest) in interests.iter().enumerate() {
        if interests[..i]
            .iter()
            .any(|earlier| earlier.token == interest.token)
        {
            return Err(io::Error::other(
                "one token named twice in interests; a bug in the loop",
            ));
        }
    }
    Ok(())
}

/// The poll(2) event bits for an interest. io_uring's PollAdd takes the same bits. Hangup and
/// error are always reported, asked for or not.
fn poll_events(interest: &Interest) -> i16 {
    let mut events = 0;
    if interest.readable {
        events |= libc::POLLIN;
    }
    if interest.writable {
        events |= libc::POLLOUT;
    }
    events
}

/// The completion for `revents` (poll(2)'s field, or a PollAdd's result, which uses the same bits).
/// An fd that is not open (POLLNVAL, or EBADF from io_uring) counts as hung up: reading it tells
/// the loop what went wrong.
fn ready(token: u64, revents: i16) -> Completion {
    let hangup = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL | libc::POLLRDHUP;
    Completion::Ready {
        token,
        readable: revents & (libc::POLLIN | libc::POLLPRI) != 0,
        writable: revents & libc::POLLOUT != 0,
        hangup: revents & hangup != 0,
    }
}

/// A finished write waiting to be handed out. Both backends report it before any readiness.
type Written = (&'static mut [u8], io::Result<()>);

/// Moves a finished write into `out` if there is room; otherwise it waits for the next call.
fn emit_written(finished: &mut Option<Written>, out: &mut Completions) {
    if out.is_full() {
        return;
    }
    if let Some((buf, result)) = finished.take() {
        let pushed = out.push(Completion::Written { buf, result });
        assert!(pushed.is_ok());
    }
}

/// The largest single write Linux performs (`MAX_RW_COUNT`); longer ones come back short anyway,
/// and io_uring's length field is a `u32`.
const WRITE_CHUNK_BYTES_MAX: usize = 0x7fff_f000;

/// A durable write under way: its buffer and how much of `buf[..len]` is on its way to disk.
/// Both backends write the rest until nothing is left, however short each write comes back.
struct WriteProgress {
    fd: RawFd,
    buf: &'static mut [u8],
    len: usize,
    offset: u64,
    done: usize,
}

impl WriteProgress {
    /// The bytes still to write (at most one chunk) and the file offset they go to.
    fn rest(&self) -> (&[u8], u64) {
        let end = self.len.min(self.done + WRITE_CHUNK_BYTES_MAX);
        (&self.buf[self.done..end], self.offset + self.done as u64)
    }

    /// Records `written` bytes. A write that takes nothing while bytes remain would repeat
    /// forever, so it is an error (as std's `write_all` treats it).
    fn advance(&mut self, written: usize) -> io::Result<()> {
        let (rest, _) = self.rest();
        assert!(written <= rest.len());
        if written == 0 && !rest.is_empty() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.done += written;
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.done == self.len
    }
}

/// Whether a syscall error is worth simply trying again.
fn is_transient(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN))
}

/// One kernel wait sleeps at most this long; a longer timeout is several waits. Keeps the
/// arithmetic far from the limits of `timespec` and poll(2)'s `int` milliseconds.
const WAIT_SLICE_MAX: Duration = Duration::from_secs(3600);

/// When `wait` must return. Signals (EINTR) and wake-ups with nothing to report loop back to the
/// kernel with what is left, so `wait` never returns empty-handed before its timeout.
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// The time left, at most one slice; zero once passed.
    fn remaining(&self) -> Duration {
        match self.0 {
            None => WAIT_SLICE_MAX,
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .min(WAIT_SLICE_MAX),
        }
    }

    fn is_passed(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }
}
