//! The io_uring backend: one ring carries the loop's readiness polls, its timeout and the WAL's
//! write+fdatasync.
//!
//! Readiness is a one-shot PollAdd per watched fd, armed again on each `wait` while the loop
//! still names the token. PollAdd looks at the fd when armed, so an fd that is still ready
//! completes at once: level-triggered, like poll(2). The timeout is the wait's own (`EXT_ARG`),
//! so no Timeout SQE exists. Every SQE's user_data says what it is (`Op`): a poll carries its
//! slot and the slot's generation, bumped at each arming, so a completion from an earlier arming
//! (cancelled, or for a token since forgotten) is recognised and swallowed.
//!
//! Completions are drained into fixed tables (`Table`) before anything is reported, so a full
//! `out` or a full completion ring loses nothing: the kernel keeps CQEs that do not fit
//! (IORING_FEAT_NODROP, required) and `reap` moves them over.

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{
    emit_written, is_transient, poll_events, ready, Completions, Deadline, Interest, RawFd,
    WriteProgress, Written, TOKENS_MAX,
};

/// Submission entries. `make_room` submits early when they run out, so this bounds nothing but
/// how often that happens; one per token covers a whole `wait` in one go.
const SQ_ENTRIES: u32 = TOKENS_MAX as u32;

/// Completion entries: what one `wait` can produce without spilling into the kernel's overflow
/// list (which loses nothing, but costs an extra enter).
const CQ_ENTRIES: u32 = 4 * TOKENS_MAX as u32;
const _: () = assert!(
    CQ_ENTRIES as usize
        >= TOKENS_MAX // a poll completion per token
        + 2 * TOKENS_MAX // per token retired: the cancel's completion and the cancelled poll's
        + 2 // the write and its fdatasync
);

/// What a completion's user_data says it completes. Cancels and the NOP of the start-up probe
/// are told apart only so that nothing unknown is ever taken for something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Poll { slot: usize, generation: u64 },
    Cancel,
    Write,
    Fsync,
    Nop,
}

/// user_data layout: kind in bits 56..64, slot in 48..56, generation in 0..48.
const KIND_SHIFT: u32 = 56;
const SLOT_SHIFT: u32 = 48;
const GENERATION_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const _: () = assert!(TOKENS_MAX <= 1 << (KIND_SHIFT - SLOT_SHIFT));

impl Op {
    fn user_data(self) -> u64 {
        let kind: u64 = match self {
            Op::Poll { slot, generation } => {
                assert!(slot < TOKENS_MAX && generation <= GENERATION_MASK);
                return 1 << KIND_SHIFT | (slot as u64) << SLOT_SHIFT | generation;
            }
            Op::Cancel => 2,
            Op::Write => 3,
            Op::Fsync => 4,
            Op::Nop => 5,
        };
        kind << KIND_SHIFT
    }

    /// Only this module writes user_data, so an unknown value is a bug, not input.
    fn from_user_data(user_data: u64) -> Op {
        let slot = (user_data >> SLOT_SHIFT) as u8 as usize;
        let generation = user_data & GENERATION_MASK;
        let op = match user_data >> KIND_SHIFT {
            1 => Op::Poll { slot, generation },
            2 => Op::Cancel,
            3 => Op::Write,
            4 => Op::Fsync,
            5 => Op::Nop,
            kind => panic!("io_uring completion of unknown kind {kind} (user_data {user_data:#x})"),
        };
        assert!(
            op.user_data() == user_data,
            "malformed user_data {user_data:#x}"
        );
        op
    }
}

/// What one slot of the readiness table is doing.
#[derive(Clone, Copy, Debug)]
enum Watch {
    Free,
    /// Watching `fd` for `token`. `armed`: a PollAdd is in the kernel. `revents`: readiness
    /// reaped but not yet reported.
    Active {
        token: u64,
        fd: RawFd,
        events: i16,
        armed: bool,
        revents: i16,
    },
    /// The token is gone but its poll is still armed and the cancel could not be queued yet
    /// (the submission queue stayed full); the next `wait` tries again.
    Orphan,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    watch: Watch,
    /// Bumped at each arming; the armed poll's user_data carries it.
    generation: u64,
}

/// The durable write in the ring: a Write linked to an Fsync(DATASYNC), submitted again for the
/// rest when the write comes back short (which breaks the link and cancels the fsync).
struct RingWrite {
    progress: WriteProgress,
    /// The pair still has to be queued (first time, or again for the rest).
    queued: bool,
    write_pending: bool,
    fsync_pending: bool,
    /// The fdatasync after the last write succeeded.
    synced: bool,
    error: Option<io::Error>,
}

/// Everything the ring's completions update: kept apart from the ring so that reaping (which
/// borrows the ring) can update it.
struct Table {
    slots: [Slot; TOKENS_MAX],
    write: Option<RingWrite>,
    finished: Option<Written>,
}

pub struct Uring {
    ring: IoUring,
    table: Table,
    /// Times `reap` found completions kept aside in the kernel's overflow list.
    cq_overflows: u64,
}

impl Uring {
    /// A ring that has proven it works, or why not: setup refused (kernel.io_uring_disabled,
    /// seccomp, ENOSYS), a feature or opcode missing, or a NOP that does not come back.
    pub(super) fn new() -> io::Result<Uring> {
        Uring::with_sizes(SQ_ENTRIES, CQ_ENTRIES)
    }

    /// `new` with chosen queue sizes; tests use tiny ones to overflow the completion queue.
    pub(super) fn with_sizes(sq_entries: u32, cq_entries: u32) -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .build(sq_entries)?;
        check_features(&ring)?;
        let slot = Slot {
            watch: Watch::Free,
            generation: 0,
        };
        let table = Table {
            slots: [slot; TOKENS_MAX],
            write: None,
            finished: None,
        };
        let mut uring = Uring {
            ring,
            table,
            cq_overflows: 0,
        };
        uring.probe_nop()?;
        Ok(uring)
    }

    /// seccomp can allow io_uring_setup and deny io_uring_enter; only a round trip proves the
    /// ring usable.
    fn probe_nop(&mut self) -> io::Result<()> {
        self.push_plain(&opcode::Nop::new().build().user_data(Op::Nop.user_data()));
        let timespec = types::Timespec::from(Duration::from_secs(1));
        let args = types::SubmitArgs::new().timespec(&timespec);
        self.ring.submitter().submit_with_args(1, &args)?;
        let cqe = self.ring.completion().next();
        match cqe.map(|cqe| (Op::from_user_data(cqe.user_data()), cqe.result())) {
            Some((Op::Nop, 0)) => Ok(()),
            Some((_, result)) => Err(io::Error::other(format!(
                "io_uring probe: the NOP completed with {result}, expected 0"
            ))),
            None => Err(io::Error::other(
                "io_uring probe: the NOP did not complete within 1 s",
            )),
        }
    }

    pub(super) fn wait(
        &mut self,
        interests: &[Interest],
        timeout: Duration,
        out: &mut Completions,
    ) -> io::Result<()> {
        self.reconcile(interests)?;
        let deadline = Deadline::after(timeout);
        loop {
            self.arm()?;
            self.queue_write()?;
            // Readiness left over from the last call is news already: collect, do not sleep.
            let nap = if self.table.has_news() {
                Duration::ZERO
            } else {
                deadline.remaining()
            };
            self.enter(nap)?;
            self.reap()?;
            // Waking for stale completions or a signal is no reason to return early.
            if self.table.has_news() || deadline.is_passed() {
                break;
            }
        }
        self.table.emit(interests, out);
        Ok(())
    }

    /// Cancels the token's armed poll and submits the cancel now: the poll holds a reference to
    /// the file, which would keep a socket open (and its port bound) after the loop closes the
    /// fd. If the cancel cannot be queued or submitted now, it stays owed and goes out with the
    /// next `wait`; either way no completion for `token` is reported again.
    pub(super) fn forget(&mut self, token: u64) {
        if let Some(slot) = self.table.find(token) {
            if self.retire(slot).is_ok() {
                let _ = self.submit_queued(); // On failure the cancel stays queued for `wait`.
            }
        }
        assert!(self.table.find(token).is_none());
    }

    pub(super) fn write_durable(&mut self, progress: WriteProgress) {
        assert!(!self.write_in_flight());
        self.table.write = Some(RingWrite {
            progress,
            queued: true,
            write_pending: false,
            fsync_pending: false,
            synced: false,
            error: None,
        });
        // Start it now. If the ring is too busy, it stays queued and the next `wait` starts it
        // (and reports an error if it cannot).
        if self.queue_write().is_ok() {
            let _ = self.submit_queued();
        }
    }

    pub(super) fn write_in_flight(&self) -> bool {
        self.table.write.is_some() || self.table.finished.is_some()
    }

    /// Times the completion queue overflowed into the kernel's list (nothing was lost).
    pub fn cq_overflows(&self) -> u64 {
        self.cq_overflows
    }

    /// Stops watching what the loop no longer names: gone tokens, and tokens whose fd or wishes
    /// changed (those are watched afresh in a new slot). Then gives new tokens a slot.
    fn reconcile(&mut self, interests: &[Interest]) -> io::Result<()> {
        for slot in 0..TOKENS_MAX {
            let wanted = match self.table.slots[slot].watch {
                Watch::Free => continue,
                Watch::Orphan => false,
                Watch::Active {
                    token, fd, events, ..
                } => interests.iter().any(|interest| {
                    interest.token == token && interest.fd == fd && poll_events(interest) == events
                }),
            };
            if !wanted {
                self.retire(slot)?;
            }
        }
        for interest in interests {
            if self.table.find(interest.token).is_none() {
                self.table.adopt(interest)?;
            }
        }
        Ok(())
    }

    /// Frees a slot, queueing a cancel for its poll if one is armed. A poll that completes
    /// meanwhile is harmless: the cancel finds nothing, and its completion is stale.
    fn retire(&mut self, slot: usize) -> io::Result<()> {
        let armed = matches!(
            self.table.slots[slot].watch,
            Watch::Active { armed: true, .. }
        ) || matches!(self.table.slots[slot].watch, Watch::Orphan);
        if armed {
            self.table.slots[slot].watch = Watch::Orphan;
            self.make_room(1)?;
            let generation = self.table.slots[slot].generation;
            let target = Op::Poll { slot, generation }.user_data();
            let cancel = opcode::AsyncCancel::new(target).build();
            self.push_plain(&cancel.user_data(Op::Cancel.user_data()));
        }
        self.table.slots[slot].watch = Watch::Free;
        Ok(())
    }

    /// Arms a poll for every watched fd that has none and nothing left to report.
    fn arm(&mut self) -> io::Result<()> {
        for slot in 0..TOKENS_MAX {
            let Watch::Active {
                fd,
                events,
                armed: false,
                revents: 0,
                ..
            } = self.table.slots[slot].watch
            else {
                continue;
            };
            self.make_room(1)?;
            let generation = (self.table.slots[slot].generation + 1) & GENERATION_MASK;
            self.table.slots[slot].generation = generation;
            let poll = opcode::PollAdd::new(types::Fd(fd), events as u16 as u32).build();
            self.push_plain(&poll.user_data(Op::Poll { slot, generation }.user_data()));
            if let Watch::Active { armed, .. } = &mut self.table.slots[slot].watch {
                *armed = true;
            }
        }
        Ok(())
    }

    /// Queues the write's Write+Fsync pair if it is waiting to go (first time, or the rest after
    /// a short write).
    fn queue_write(&mut self) -> io::Result<()> {
        if !self.table.write.as_ref().is_some_and(|write| write.queued) {
            return Ok(());
        }
        // Both entries go in together: a lone IO_LINK entry would chain onto whatever came next.
        self.make_room(2)?;
        let Some(write) = self.table.write.as_mut() else {
            unreachable!("a queued write waits")
        };
        let (rest, offset) = write.progress.rest();
        let fd = types::Fd(write.progress.fd);
        let pair = [
            opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
                .offset(offset)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(Op::Write.user_data()),
            opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(Op::Fsync.user_data()),
        ];
        // SAFETY: the Write points into `write.progress.buf`, a static buffer owned by
        // `self.table.write` until both completions of this pair are reaped: only `settle_write`
        // takes it out, and only when neither is pending; `Drop` waits for them too. Moving the
        // reference moves the pointer, not the bytes. The Fsync points at no memory.
        let pushed = unsafe { self.ring.submission().push_multiple(&pair) };
        assert!(pushed.is_ok(), "make_room left two free entries");
        write.queued = false;
        write.write_pending = true;
        write.fsync_pending = true;
        write.synced = false;
        Ok(())
    }

    /// Queues an entry that points at no memory (PollAdd, AsyncCancel, Nop): it names only an fd
    /// and user_data, so there is no lifetime to uphold. The caller made room.
    fn push_plain(&mut self, entry: &squeue::Entry) {
        // SAFETY: the entry carries no pointer into our memory; a stale or wrong fd fails in the
        // kernel with EBADF and cannot touch it.
        let pushed = unsafe { self.ring.submission().push(entry) };
        assert!(pushed.is_ok(), "make_room left a free entry");
    }

    /// Ensures `needed` free submission entries, submitting what is queued if not.
    fn make_room(&mut self, needed: usize) -> io::Result<()> {
        for _ in 0..3 {
            let free = {
                let submission = self.ring.submission();
                submission.capacity() - submission.len()
            };
            if free >= needed {
                return Ok(());
            }
            // Completions that do not fit wait in the kernel's overflow list (NODROP), so this
            // need not reap unless the kernel refuses to take more until it is drained.
            match self.submit_queued() {
                Ok(()) => {}
                Err(error) if is_busy(&error) => self.reap()?,
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }

    /// Hands queued entries to the kernel without waiting for any.
    fn submit_queued(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Submits what is queued and sleeps until a completion arrives or `nap` passes.
    fn enter(&mut self, nap: Duration) -> io::Result<()> {
        let timespec = types::Timespec::from(nap);
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            // ETIME: the nap ended. EINTR: a signal, and `wait` goes back with the time left.
            // EBUSY/EAGAIN: `reap` next drains what the kernel wants gone.
            Err(error) if error.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(error) if is_busy(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Moves every completion into the tables, including those the kernel kept aside when the
    /// completion queue was full.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            self.drain();
            if !self.ring.submission().cq_overflow() {
                return Ok(());
            }
            self.cq_overflows += 1;
            // An enter flushes the kept completions into the queue (the crate asks for
            // GETEVENTS when the overflow flag is up).
            match self.submit_queued() {
                Ok(()) => {}
                // The next enter in `wait` flushes them instead; nothing is lost.
                Err(error) if is_busy(&error) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    fn drain(&mut self) {
        for cqe in self.ring.completion() {
            self.table.handle(cqe.user_data(), cqe.result());
        }
    }
}

impl Drop for Uring {
    /// The kernel may still be reading the write's buffer: wait for the pair before the buffer
    /// goes back to anyone. If waiting fails, the buffer is dropped with the ring: it is the
    /// arena's, never freed, and nobody writes it again once the backend is gone.
    fn drop(&mut self) {
        while self
            .table
            .write
            .as_ref()
            .is_some_and(|w| w.write_pending || w.fsync_pending)
        {
            match self.ring.submit_and_wait(1) {
                Ok(_) => self.drain(),
                Err(error) if is_busy(&error) => self.drain(),
                Err(_) => {
                    // Forgets the buffer: no one else holds it, so no one writes it again.
                    self.table.write = None;
                    return;
                }
            }
        }
    }
}

impl Table {
    fn find(&self, token: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| matches!(slot.watch, Watch::Active { token: t, .. } if t == token))
    }

    fn adopt(&mut self, interest: &Interest) -> io::Result<()> {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| matches!(slot.watch, Watch::Free))
        else {
            // Only reachable with orphans holding slots: more than TOKENS_MAX fds in play.
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        };
        let (token, fd, events) = (interest.token, interest.fd, poll_events(interest));
        slot.watch = Watch::Active {
            token,
            fd,
            events,
            armed: false,
            revents: 0,
        };
        Ok(())
    }

    fn has_news(&self) -> bool {
        self.finished.is_some()
            || self
                .slots
                .iter()
                .any(|slot| matches!(slot.watch, Watch::Active { revents, .. } if revents != 0))
    }

    /// The write first, then ready tokens in interest order (as the poll backend does), while
    /// `out` has room; the rest stays in the table for the next call.
    fn emit(&mut self, interests: &[Interest], out: &mut Completions) {
        emit_written(&mut self.finished, out);
        for interest in interests {
            let Some(slot) = self.find(interest.token) else {
                continue;
            };
            let Watch::Active { token, revents, .. } = &mut self.slots[slot].watch else {
                unreachable!("find returns active slots")
            };
            if *revents != 0 {
                if out.push(ready(*token, *revents)).is_err() {
                    return;
                }
                *revents = 0;
            }
        }
    }

    fn handle(&mut self, user_data: u64, result: i32) {
        match Op::from_user_data(user_data) {
            Op::Poll { slot, generation } => self.handle_poll(slot, generation, result),
            Op::Write => self.handle_write(result),
            Op::Fsync => self.handle_fsync(result),
            // A cancel's own result says nothing the cancelled poll's completion does not.
            Op::Cancel | Op::Nop => {}
        }
    }

    fn handle_poll(&mut self, slot: usize, generation: u64, result: i32) {
        let slot = &mut self.slots[slot];
        if slot.generation != generation {
            return; // From an earlier arming of this slot: stale.
        }
        match &mut slot.watch {
            Watch::Active {
                armed: armed @ true,
                revents,
                ..
            } => {
                *armed = false;
                *revents |= match result {
                    0.. => result as i16,                 // The poll(2) bits that are set.
                    _ if -result == libc::ECANCELED => 0, // Not ours; armed again next turn.
                    _ => libc::POLLERR, // EBADF and the like: the loop's read will say what.
                };
            }
            // The orphan's poll ended by itself: no cancel owed.
            Watch::Orphan => slot.watch = Watch::Free,
            _ => {} // Retired and cancelled, or not armed: stale.
        }
    }

    fn handle_write(&mut self, result: i32) {
        let write = self
            .write
            .as_mut()
            .expect("a write completion belongs to the write in flight");
        assert!(write.write_pending);
        write.write_pending = false;
        if result >= 0 {
            if let Err(error) = write.progress.advance(result as usize) {
                write.error.get_or_insert(error);
            }
        } else {
            let error = io::Error::from_raw_os_error(-result);
            if !is_transient(&error) {
                write.error.get_or_insert(error); // Transient: the rest goes again.
            }
        }
        self.settle_write();
    }

    fn handle_fsync(&mut self, result: i32) {
        let write = self
            .write
            .as_mut()
            .expect("an fsync completion belongs to the write in flight");
        assert!(write.fsync_pending);
        write.fsync_pending = false;
        match -result {
            0 => write.synced = true,
            // Cancelled because the linked write failed or came back short, or interrupted:
            // `settle_write` reports the write's error or sends the pair again.
            libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
            errno => {
                // Final: after a failed fdatasync the kernel may have dropped the dirty pages, so
                // trying again could report success for data that is not on disk.
                write
                    .error
                    .get_or_insert(io::Error::from_raw_os_error(errno));
            }
        }
        self.settle_write();
    }

    /// Once neither half of the pair is in the kernel: finish with the first error, finish
    /// with success if the last fdatasync covered every byte, or queue the pair again.
    fn settle_write(&mut self) {
        let Some(write) = self.write.as_mut() else {
            return;
        };
        if write.write_pending || write.fsync_pending {
            return;
        }
        let result = match write.error.take() {
            Some(error) => Err(error),
            None if write.synced => Ok(()),
            None => {
                write.queued = true;
                return;
            }
        };
        let write = self.write.take().expect("checked above");
        assert!(result.is_err() || write.progress.is_complete());
        assert!(self.finished.is_none());
        self.finished = Some((write.progress.buf, result));
    }
}

/// The features `Uring` relies on: completions never dropped (NODROP, 5.5), a timeout on the
/// wait itself (EXT_ARG, 5.11), and each opcode it submits.
fn check_features(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks IORING_FEAT_NODROP or IORING_FEAT_EXT_ARG (kernel older than 5.11)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let opcodes = [
        opcode::Nop::CODE,
        opcode::PollAdd::CODE,
        opcode::AsyncCancel::CODE,
        opcode::Write::CODE,
        opcode::Fsync::CODE,
    ];
    if !opcodes.iter().all(|&code| probe.is_supported(code)) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks one of NOP, POLL_ADD, ASYNC_CANCEL, WRITE, FSYNC",
        ));
    }
    Ok(())
}

/// Worth trying again after draining completions: interrupted, or the kernel wants its
/// completion backlog drained before it takes more (EBUSY, older kernels with a full queue).
fn is_busy(error: &io::Error) -> bool {
    is_transient(error) || error.raw_os_error() == Some(libc::EBUSY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every kind survives the round trip and the poll fields stay apart.
    #[test]
    fn user_data_round_trips() {
        let ops = [
            Op::Poll {
                slot: 0,
                generation: 0,
            },
            Op::Poll {
                slot: TOKENS_MAX - 1,
                generation: GENERATION_MASK,
            },
            Op::Poll {
                slot: 7,
                generation: 12345,
            },
            Op::Cancel,
            Op::Write,
            Op::Fsync,
            Op::Nop,
        ];
        for op in ops {
            assert_eq!(Op::from_user_data(op.user_data()), op);
        }
        let kinds: Vec<u64> = ops.iter().map(|op| op.user_data() >> KIND_SHIFT).collect();
        assert_eq!(kinds, [1, 1, 1, 2, 3, 4, 5]);
    }

    fn table_writing(len: usize) -> Table {
        let slot = Slot {
            watch: Watch::Free,
            generation: 0,
        };
        let progress = WriteProgress {
            fd: -1,
            buf: crate::arena::leak_bytes(len),
            len,
            offset: 0,
            done: 0,
        };
        let write = RingWrite {
            progress,
            queued: false,
            write_pending: true,
            fsync_pending: true,
            synced: false,
            error: None,
        };
        Table {
            slots: [slot; TOKENS_MAX],
            write: Some(write),
            finished: None,
        }
    }

    /// A short write (which cancels its linked fsync) queues the rest, and only an fsync after
    /// the last byte finishes the write. The kernel cannot be made to write short on demand, so
    /// this feeds the completions by hand.
    #[test]
    fn short_write_sends_the_rest_then_syncs() {
        let mut table = table_writing(10);
        table.handle(Op::Write.user_data(), 4);
        table.handle(Op::Fsync.user_data(), -libc::ECANCELED);
        let write = table.write.as_mut().unwrap();
        assert!(write.queued && table.finished.is_none());
        assert_eq!(write.progress.rest().1, 4);
        (write.queued, write.write_pending, write.fsync_pending) = (false, true, true);
        table.handle(Op::Write.user_data(), -libc::EINTR); // Interrupted: nothing written.
        table.handle(Op::Fsync.user_data(), -libc::ECANCELED);
        let write = table.write.as_mut().unwrap();
        assert!(write.queued && write.progress.rest().0.len() == 6);
        (write.queued, write.write_pending, write.fsync_pending) = (false, true, true);
        table.handle(Op::Write.user_data(), 6);
        table.handle(Op::Fsync.user_data(), 0);
        assert!(table.write.is_none());
        let (buf, result) = table.finished.take().expect("finished");
        assert!(result.is_ok() && buf.len() == 10);
    }

    /// An fdatasync error is final, whatever the write did: trying again could report data
    /// durable that the kernel already dropped.
    #[test]
    fn fsync_error_finishes_the_write() {
        let mut table = table_writing(10);
        table.handle(Op::Write.user_data(), 10);
        table.handle(Op::Fsync.user_data(), -libc::EIO);
        let (_, result) = table.finished.take().expect("finished");
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
    }

    /// Completions of an earlier arming, or for a forgotten token, change nothing.
    #[test]
    fn stale_poll_completions_are_swallowed() {
        let mut table = table_writing(0);
        table.write = None;
        let active = Watch::Active {
            token: 9,
            fd: 3,
            events: 1,
            armed: true,
            revents: 0,
        };
        table.slots[0] = Slot {
            watch: active,
            generation: 2,
        };
        table.handle(
            Op::Poll {
                slot: 0,
                generation: 1,
            }
            .user_data(),
            libc::POLLIN.into(),
        );
        table.handle(
            Op::Poll {
                slot: 1,
                generation: 0,
            }
            .user_data(),
            libc::POLLIN.into(),
        );
        table.handle(Op::Cancel.user_data(), -libc::ENOENT);
        assert!(!table.has_news());
        table.handle(
            Op::Poll {
                slot: 0,
                generation: 2,
            }
            .user_data(),
            libc::POLLIN.into(),
        );
        assert!(table.has_news());
    }
}
