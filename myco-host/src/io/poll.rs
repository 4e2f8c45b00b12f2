//! The poll(2) backend, for hosts where io_uring is unavailable. Readiness is one poll(2) per
//! `wait` over a fixed `pollfd` array rebuilt from the interests, so nothing is registered
//! between calls and `forget` has nothing to undo. A durable write runs to the end (pwrite until
//! every byte is taken, then fdatasync) inside `write_durable`; its completion is handed out by
//! the next `wait` without blocking, so the loop sees the same sequence as with io_uring.

use std::io;
use std::time::Duration;

use super::{
    emit_written, is_transient, poll_events, ready, Completions, Deadline, Interest, RawFd,
    WriteProgress, Written, TOKENS_MAX,
};

pub struct Poll {
    /// `fds[i]` watches the fd of `tokens[i]`; only the first `interests.len()` are live.
    fds: [libc::pollfd; TOKENS_MAX],
    tokens: [u64; TOKENS_MAX],
    /// A write done by `write_durable`, waiting for `wait` to hand it out.
    finished: Option<Written>,
}

impl Poll {
    pub(super) fn new() -> Poll {
        let unused = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        Poll {
            fds: [unused; TOKENS_MAX],
            tokens: [0; TOKENS_MAX],
            finished: None,
        }
    }

    pub(super) fn wait(
        &mut self,
        interests: &[Interest],
        timeout: Duration,
        out: &mut Completions,
    ) -> io::Result<()> {
        assert!(interests.len() <= TOKENS_MAX);
        for (i, interest) in interests.iter().enumerate() {
            self.fds[i] = libc::pollfd {
                fd: interest.fd,
                events: poll_events(interest),
                revents: 0,
            };
            self.tokens[i] = interest.token;
        }
        let count = interests.len();
        let deadline = Deadline::after(timeout);
        loop {
            // A finished write is news already: look at the fds without sleeping.
            let nap = if self.finished.is_some() {
                Duration::ZERO
            } else {
                deadline.remaining()
            };
            match self.poll(count, nap) {
                Ok(0) if self.finished.is_none() && !deadline.is_passed() => continue,
                Ok(_) => break,
                Err(error) if is_transient(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        self.emit(count, out);
        Ok(())
    }

    /// One poll(2) over `fds[..count]`: how many have events.
    fn poll(&mut self, count: usize, timeout: Duration) -> io::Result<usize> {
        // Round up: returning before the timeout would only send the loop back here.
        let timeout_ms = timeout.as_nanos().div_ceil(1_000_000) as libc::c_int;
        // SAFETY: the pointer and count describe `self.fds[..count]` (count <= TOKENS_MAX), which
        // `&mut self` keeps alive and unaliased for the whole call.
        let ready = unsafe { libc::poll(self.fds.as_mut_ptr(), count as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ready as usize)
    }

    /// The write first, then the fds with events in interest order, while `out` has room. Those
    /// left out are still ready next call (level-triggered), so they are reported then.
    fn emit(&mut self, count: usize, out: &mut Completions) {
        emit_written(&mut self.finished, out);
        for (fd, &token) in self.fds[..count].iter().zip(&self.tokens) {
            if fd.revents != 0 && out.push(ready(token, fd.revents)).is_err() {
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
    loop {
        // SAFETY: fdatasync takes no pointers; a bad `fd` fails with EBADF.
        if unsafe { libc::fdatasync(fd) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        // EINTR means the sync did not happen, so asking again is safe. Any other error is
        // final: after a failed fdatasync the kernel may have dropped the dirty pages.
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}
