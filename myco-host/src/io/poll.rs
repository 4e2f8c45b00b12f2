//! The poll(2) backend, for hosts where io_uring is unavailable. Readiness is one poll(2) per
//! `wait` over a fixed `pollfd` array rebuilt from the interests, so nothing is registered
//! between calls and `forget` has nothing to undo. A durable write runs to the end (pwrite until
//! every byte is taken, then fdatasync) inside `write_durable`; its completion is handed out by
//! the next `wait` without blocking, so the loop sees the same sequence as with io_uring.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::{
    emit_written, is_transient, poll_events, ready, Completions, Deadline, Interest, RawFd,
    WriteProgress, Written, TOKENS_MAX,
};

pub struct Poll {
    /// A write done by `write_durable`, waiting for `wait` to hand it out.
    finished: Option<Written>,
}

/// The fds of one `wait`, in interest order, on the stack: `fds[i]` watches `interests[i].fd`.
type PollFds<'fd> = heapless::Vec<PollFd<'fd>, TOKENS_MAX>;

impl Poll {
    pub(super) fn new() -> Poll {
        Poll { finished: None }
    }

    pub(super) fn wait(
        &mut self,
        interests: &[Interest],
        timeout: Duration,
        out: &mut Completions,
    ) -> io::Result<()> {
        assert!(interests.len() <= TOKENS_MAX);
        let mut fds = PollFds::new();
        for interest in interests {
            // SAFETY: the loop's owner keeps every registered fd open until it forgets it, which
            // cannot happen during this call (it holds `interests` borrowed), so each borrow
            // outlives `fds`. A closed fd would only come back as POLLNVAL.
            let fd = unsafe { BorrowedFd::borrow_raw(interest.fd) };
            let events = PollFlags::from_bits_truncate(poll_events(interest));
            fds.push(PollFd::new(fd, events))
                .unwrap_or_else(|_| unreachable!("interests fit TOKENS_MAX"));
        }
        let deadline = Deadline::after(timeout);
        loop {
            // A finished write is news already: look at the fds without sleeping.
            let nap = if self.finished.is_some() {
                Duration::ZERO
            } else {
                deadline.remaining()
            };
            match poll_once(&mut fds, nap) {
                Ok(0) if self.finished.is_none() && !deadline.is_passed() => continue,
                Ok(_) => break,
                Err(error) if is_transient(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        self.emit(&fds, interests, out);
        Ok(())
    }

    /// The write first, then the fds with events in interest order, while `out` has room. Those
    /// left out are still ready next call (level-triggered), so they are reported then.
    fn emit(&mut self, fds: &[PollFd<'_>], interests: &[Interest], out: &mut Completions) {
        emit_written(&mut self.finished, out);
        for (fd, interest) in fds.iter().zip(interests) {
            let revents = fd.revents().map_or(0, |flags| flags.bits());
            if revents != 0 && out.push(ready(interest.token, revents)).is_err() {
                return;
            }
        }
    }

    pub(super) fn write_durable(&mut self, mut write: WriteProgress) {
        assert!(self.finished.is_none());
        let result = write_all(&mut write).and_then(|()| fdatasync(write.fd));
        self.finished = Some((write.buf, result));
    }

    pub(super) fn write_in_flight(&self) -> bool {
        self.finished.is_some()
    }
}

/// One poll(2) over `fds`: how many have events.
fn poll_once(fds: &mut [PollFd<'_>], timeout: Duration) -> io::Result<usize> {
    // Round up: returning before the timeout would only send the loop back here.
    let timeout_ms = timeout.as_nanos().div_ceil(1_000_000);
    let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
    let ready = poll(fds, timeout)?;
    Ok(usize::try_from(ready).expect("poll(2) counts up from zero"))
}

fn write_all(write: &mut WriteProgress) -> io::Result<()> {
    while !write.is_complete() {
        let (rest, offset) = write.rest();
        match pwrite(write.fd, rest, offset) {
            Ok(written) => write.advance(written)?,
            Err(error) if is_transient(&error) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn pwrite(fd: RawFd, bytes: &[u8], offset: u64) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: the pointer and length describe `bytes`, borrowed for the whole call; the kernel
    // only reads them. `fd` is the caller's; a bad one fails with EBADF, not undefined behaviour.
    let written = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), offset) };
    if written < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(written as usize)
}

fn fdatasync(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is the WAL's, which the store keeps open while a write to it is in flight.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    loop {
        match nix::unistd::fdatasync(fd) {
            Ok(()) => return Ok(()),
            // EINTR means the sync did not happen, so asking again is safe. Any other error is
            // final: after a failed fdatasync the kernel may have dropped the dirty pages.
            Err(Errno::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
}
