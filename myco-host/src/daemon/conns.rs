//! The API's connections: a fixed table of slots, each with a request buffer and an answer
//! buffer from the arena. Sockets are non-blocking and the loop only reads what has
//! arrived and writes what the client takes, so a slow or stuck client holds one slot until its
//! deadline and never the loop. When every slot is taken, a new client takes the slot of the
//! connection idle or slowest longest (`seat`), so slow clients cannot lock an operator out.

use super::answers::{self, ServicesCursor};
use super::events::{self, Ring};
use super::executor::Executor;
use super::seat::{seat, Occupant, Seat};
use crate::arena::ApiSlot;
use crate::http::request::{Parse, RequestBuffer};
use crate::http::response::{
    frame_chunk, head_before, write_error, write_head, ContentType, Cursor, Full, Head, Length,
    CHUNK_SIZE_LINE_BYTES_MAX, CHUNK_TAIL_BYTES_MAX, RESPONSE_HEAD_BYTES_MAX,
};
use crate::io::{Backend, Interest};
use crate::spawn::Child;
use myco_core::schema::entry::Version;
use myco_core::Node;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

/// Connections served at once. One more takes the slot of the connection idle or slowest
/// longest; it is answered 503 and closed only while every slot holds a stream or a deploy.
pub const CONNECTIONS_MAX: usize = 16;
/// A connection's answer buffer. An answer longer than this (`/services` past about 800
/// services) is sent in parts through it (`pump_listing`), so no answer is ever too long.
pub const ANSWER_BYTES: usize = 192 * 1024;
/// A request must arrive whole, and an answer be taken, within this; an idle connection is
/// closed after it.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// A deploy waits this long for its WAL write before it is answered 507 (the CLI waits longer).
pub const DEPLOY_TIMEOUT_MS: u64 = myco_core::config::DEPLOY_DURABLE_TIMEOUT_MS;

/// `/stream` subscribers at once; one more is answered 503, so requests always have slots.
pub const STREAMS_MAX: usize = 8;
/// A stream with nothing to say gets a comment this often, so proxies and clients see it alive.
pub const HEARTBEAT_MS: u64 = 15_000;

const _: () = assert!(STREAMS_MAX < CONNECTIONS_MAX);
const _: () = assert!(events::EVENT_BYTES_MAX * 2 < ANSWER_BYTES);

/// Loop tokens: fixed ones for the daemon's own fds, then one per slot.
pub const TOKEN_CONN_BASE: u64 = 16;

/// A deploy whose WAL record is not yet durable.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub ticket: u64,
    pub name: heapless::String<64>,
    pub version: Version,
    pub applied: bool,
    pub keep_alive: bool,
    pub deadline_ms: u64,
}

pub struct Conn {
    pub stream: Option<UnixStream>,
    /// The arena's buffers for this slot (`ApiSlot`).
    pub request: &'static mut RequestBuffer,
    pub answer: &'static mut [u8],
    /// The unsent part of the answer is `answer[start..end]`.
    start: usize,
    end: usize,
    /// Close once the answer is sent.
    close_after: bool,
    pub waiting: Option<Waiting>,
    /// A `/services` answer that did not fit the buffer at once, written part by part.
    listing: Option<Listing>,
    /// A `/stream` subscriber: the id of the next event it is to get. It is never idle again and
    /// has no deadline; it ends when the client closes.
    stream_next: Option<u64>,
    /// A `/logs` follower: the `journalctl` whose output is passed on until it ends or the
    /// client goes away.
    logs: Option<Child>,
    heartbeat_ms: u64,
    deadline_ms: u64,
    /// This connection's place in the order of acceptance (`seat` breaks ties with it).
    number: u64,
    /// Closed, but the fd stays open until `Connections::reap` has told the backend to forget it: an
    /// io_uring poll armed on a closed fd would outlive it.
    dead: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub accepted: u64,
    pub refused_busy: u64,
    /// Connections closed to seat a new client (`seat`).
    pub evicted: u64,
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
}

pub struct Connections {
    pub listener: UnixListener,
    pub conns: heapless::Vec<Conn, CONNECTIONS_MAX>,
    /// A client accepted while every slot was taken, and when: it takes the slot of the
    /// connection that gave way to it once `reap` has freed that slot.
    pub pending: Option<(UnixStream, u64)>,
    pub stats: ConnStats,
    /// `HEARTBEAT_MS` except in tests.
    pub heartbeat_ms: u64,
    /// `REQUEST_TIMEOUT_MS` except in tests, which must not wait out ten real seconds to see a
    /// deadline pass.
    pub request_timeout_ms: u64,
}

impl Conn {
    fn new(buffers: &'static mut ApiSlot) -> Conn {
        Conn {
            stream: None,
            request: &mut buffers.request,
            answer: &mut buffers.answer,
            start: 0,
            end: 0,
            close_after: false,
            waiting: None,
            listing: None,
            stream_next: None,
            logs: None,
            heartbeat_ms: 0,
            deadline_ms: 0,
            number: 0,
            dead: false,
        }
    }

    /// Nothing to send and no deploy pending: the next buffered request may be answered.
    pub fn idle(&self) -> bool {
        self.is_open()
            && self.start == self.end
            && self.waiting.is_none()
            && self.listing.is_none()
            && !self.close_after
            && self.stream_next.is_none()
            && self.logs.is_none()
    }

    pub fn is_streaming(&self) -> bool {
        self.is_open() && (self.stream_next.is_some() || self.logs.is_some())
    }

    /// Answers `GET /logs`: a plain-text head without a length, then `child`'s output as it comes
    /// (`pump_logs`), and the connection closes when the child ends.
    pub fn start_logs(&mut self, child: Child) {
        assert!(self.idle());
        let head = Head {
            status: 200,
            content_type: ContentType::Text,
            keep_alive: false,
            allow: None,
        };
        let mut out = Cursor::new(self.answer);
        write_head(&mut out, &head, Length::UntilClose).expect("a head fits the answer buffer");
        let len = out.len();
        self.queue((0, len), true);
        self.logs = Some(child);
    }

    /// Passes on what `journalctl` wrote, once the last batch has drained.
    fn pump_logs(&mut self) {
        if !self.is_open() || self.start < self.end {
            return;
        }
        let Some(child) = self.logs.as_mut() else {
            return;
        };
        match child.read_into(self.answer) {
            Some(0) => {}
            Some(n) => {
                self.queue((0, n), true);
                self.flush();
            }
            None => {
                self.logs.take().expect("checked").kill_and_reap();
                self.close();
            }
        }
    }

    /// Answers `GET /stream`: the head, a first comment naming the next id, and a `reset` notice
    /// when `last_event_id` is from another run of the daemon. Events follow from `pump`.
    pub fn start_stream(
        &mut self,
        ring: &Ring,
        last_event_id: Option<u64>,
        now_ms: u64,
        heartbeat_ms: u64,
    ) {
        assert!(self.idle());
        let head = Head {
            status: 200,
            content_type: ContentType::EventStream,
            keep_alive: false,
            allow: None,
        };
        let mut out = Cursor::new(self.answer);
        let (next, reset) = ring.resume(last_event_id);
        let written = write_head(&mut out, &head, Length::UntilClose)
            .and_then(|()| out.put(b": myco events from id "))
            .and_then(|()| out.put_u64(next))
            .and_then(|()| out.put(b"\n\n"))
            .and_then(|()| match last_event_id {
                Some(n) if reset => events::format_reset(&mut out, n, next),
                _ => Ok(()),
            });
        written.expect("a stream's head fits the answer buffer");
        let len = out.len();
        self.queue((0, len), true);
        self.stream_next = Some(next);
        self.heartbeat_ms = now_ms + heartbeat_ms;
        assert!(self.is_streaming() && !self.idle());
    }

    /// Formats the events past this subscriber's cursor, once its last batch has drained; a
    /// heartbeat when there were none for `heartbeat_ms`. A subscriber the ring has overtaken
    /// is told how many events it missed and goes on from the oldest held.
    fn pump(&mut self, ring: &Ring, now_ms: u64, heartbeat_ms: u64) {
        let Some(mut next) = self.stream_next.filter(|_| self.is_open()) else {
            return;
        };
        if self.start < self.end {
            return;
        }
        let mut len = 0;
        if next < ring.oldest() {
            let mut out = Cursor::new(self.answer);
            events::format_missed(&mut out, ring.oldest() - next, ring.oldest())
                .expect("a notice fits an empty buffer");
            len = out.len();
            next = ring.oldest();
        }
        while let Some(r) = ring.get(next) {
            let mut out = Cursor::new(&mut self.answer[len..]);
            if events::format(&mut out, r).is_err() {
                break;
            }
            len += out.len();
            next += 1;
        }
        if len == 0 && now_ms >= self.heartbeat_ms {
            const HEARTBEAT: &[u8] = b": keep-alive\n\n";
            self.answer[..HEARTBEAT.len()].copy_from_slice(HEARTBEAT);
            len = HEARTBEAT.len();
        }
        assert!(next <= ring.next_id());
        self.stream_next = Some(next);
        if len > 0 {
            self.heartbeat_ms = now_ms + heartbeat_ms;
            self.queue((0, len), true);
            self.flush();
        }
    }

    /// Answers `GET /services`: whole with its length when it fits the answer buffer, else in
    /// parts as the client takes them (`pump_listing`).
    pub fn start_listing(
        &mut self,
        keep_alive: bool,
        http11: bool,
        node: &Node,
        executor: Option<&Executor>,
    ) {
        assert!(self.idle());
        self.listing = Some(Listing {
            cursor: ServicesCursor::default(),
            keep_alive,
            chunked: http11,
            started: false,
        });
        self.pump_listing(node, executor);
    }

    /// Writes the next parts of a listing while the client takes them, each once the last has
    /// drained; the connection is writable again when the client stops taking.
    pub fn pump_listing(&mut self, node: &Node, executor: Option<&Executor>) {
        while self.is_open() && self.start == self.end {
            let Some(listing) = self.listing.as_mut() else {
                return;
            };
            let at = listing.body_at();
            let limit = ANSWER_BYTES - CHUNK_TAIL_BYTES_MAX;
            let (len, done) = answers::services_part(
                &mut self.answer[at..limit],
                &mut listing.cursor,
                node,
                executor,
            );
            let (range, keep_alive) = listing
                .frame(self.answer, (at, at + len), done)
                .expect("the listing leaves room for its framing");
            if done {
                self.listing = None;
            }
            self.queue(range, keep_alive);
            self.flush();
        }
    }

    /// Queues `answer`, a slice of `self.answer` (as the response writers return it).
    pub fn queue(&mut self, range: (usize, usize), keep_alive: bool) {
        (self.start, self.end) = range;
        self.close_after |= !keep_alive;
    }

    /// The next complete request's parse, if the connection may answer one now.
    pub fn poll(&self) -> Option<Parse<'_>> {
        self.idle().then(|| self.request.poll_request())
    }

    fn is_open(&self) -> bool {
        self.stream.is_some() && !self.dead
    }

    fn interest(&self, token: u64) -> Option<Interest> {
        let stream = self.stream.as_ref().filter(|_| !self.dead)?;
        let writable = self.start < self.end;
        // A stream stays readable so that the loop hears when its client goes away.
        let readable = !writable && self.waiting.is_none() && !self.close_after;
        Some(Interest {
            fd: stream.as_raw_fd(),
            token,
            readable,
            writable,
        })
    }
}

/// A `/services` answer on its way out in parts: where it goes on, and how it is framed.
struct Listing {
    cursor: ServicesCursor,
    keep_alive: bool,
    /// The client speaks HTTP/1.1 and reads chunks. An HTTP/1.0 client gets a long answer without
    /// framing, ended by the close.
    chunked: bool,
    /// The head is sent: the answer is longer than the buffer, and goes on in parts.
    started: bool,
}

impl Listing {
    /// Where a part's body starts in the answer buffer: after room for the head and a chunk's size
    /// line on the first part, for a size line on the others.
    fn body_at(&self) -> usize {
        let line = if self.chunked {
            CHUNK_SIZE_LINE_BYTES_MAX
        } else {
            0
        };
        if self.started {
            line
        } else {
            RESPONSE_HEAD_BYTES_MAX + line
        }
    }

    /// Frames the part `buf[body.0..body.1]` in place: a first part that is the whole answer gets
    /// a head with its length, the same answer as before parts existed; a longer answer gets a
    /// chunked head (or, for HTTP/1.0, one without a length and the close) and its parts become
    /// chunks. Returns the bytes to send and whether the connection stays open after them.
    fn frame(
        &mut self,
        buf: &mut [u8],
        body: (usize, usize),
        done: bool,
    ) -> Result<((usize, usize), bool), Full> {
        let head = |keep_alive| Head {
            status: 200,
            content_type: ContentType::Json,
            keep_alive,
            allow: None,
        };
        if !self.started && done {
            let length = Length::Exactly((body.1 - body.0) as u64);
            let start = head_before(buf, body.0, &head(self.keep_alive), length)?;
            return Ok(((start, body.1), self.keep_alive));
        }
        let framed = match self.chunked {
            true => frame_chunk(buf, body, done)?,
            false => body,
        };
        if !self.started {
            self.started = true;
            self.keep_alive &= self.chunked;
            let length = if self.chunked {
                Length::Chunked
            } else {
                Length::UntilClose
            };
            let start = head_before(buf, framed.0, &head(self.keep_alive), length)?;
            return Ok(((start, framed.1), true));
        }
        Ok((framed, !done || self.keep_alive))
    }
}

/// Where `slice` sits in the buffer that starts at address `base` (response writers return a
/// slice of the buffer they were given).
pub fn range_in(base: usize, slice: &[u8]) -> (usize, usize) {
    let start = slice.as_ptr() as usize - base;
    (start, start + slice.len())
}

/// What reading a connection found.
pub enum Arrived {
    /// Bytes arrived (or none yet); answer what is complete.
    More,
    /// The client closed or the socket failed: drop the slot.
    Closed,
}

impl Connections {
    /// The table over `slots`, the arena's buffers, one per connection.
    pub fn new(
        listener: UnixListener,
        slots: &'static mut [ApiSlot; CONNECTIONS_MAX],
    ) -> Connections {
        Connections {
            listener,
            conns: slots.iter_mut().map(Conn::new).collect(),
            pending: None,
            stats: ConnStats::default(),
            heartbeat_ms: HEARTBEAT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        }
    }

    pub fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.is_open()).count()
    }

    pub fn stream_count(&self) -> usize {
        self.conns.iter().filter(|c| c.is_streaming()).count()
    }

    /// Lets every stream subscriber take what happened since it last drained.
    pub fn pump_streams(&mut self, ring: &Ring, now_ms: u64) {
        for c in self.conns.iter_mut() {
            c.pump(ring, now_ms, self.heartbeat_ms);
            c.pump_logs();
        }
    }

    pub fn interests(&self, out: &mut impl Extend<Interest>) {
        for (i, c) in self.conns.iter().enumerate() {
            out.extend(c.interest(TOKEN_CONN_BASE + i as u64));
        }
    }

    /// Closes the fds of closed connections, after the backend forgot them; then a client that
    /// waited for a slot takes one.
    pub fn reap(&mut self, io: &mut Backend) {
        for (i, c) in self.conns.iter_mut().enumerate().filter(|(_, c)| c.dead) {
            io.forget(TOKEN_CONN_BASE + i as u64);
            c.stream = None;
            c.dead = false;
        }
        if let Some((stream, accepted_ms)) = self.pending.take() {
            // Nothing is accepted while a client waits, so it was the last one accepted.
            let number = self.stats.accepted;
            match self.conns.iter_mut().find(|c| c.stream.is_none()) {
                Some(c) => c.open(stream, accepted_ms, self.request_timeout_ms, number),
                None => self.refuse_busy(stream),
            }
        }
    }

    pub fn slot_of(token: u64) -> Option<usize> {
        let i = token.checked_sub(TOKEN_CONN_BASE)? as usize;
        (i < CONNECTIONS_MAX).then_some(i)
    }

    /// Accepts what is waiting, into free slots. With none free, the connection idle or slowest
    /// longest gives way to the client just accepted, which takes its slot once reaped (at the
    /// end of this turn of the loop); only while every slot is kept is a client answered 503 and
    /// closed. A connection gives way only to a client that is there.
    pub fn accept(&mut self, now_ms: u64) {
        loop {
            let timeout_ms = self.request_timeout_ms;
            let seat = seat(self.conns.iter().map(|c| c.occupant(timeout_ms)));
            if seat == Seat::Wait {
                return;
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ECONNABORTED, EMFILE: nothing to do for this client; the next may work.
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.stats.accepted += 1;
            match seat {
                Seat::Take(slot) => {
                    let number = self.stats.accepted;
                    self.conns[slot].open(stream, now_ms, timeout_ms, number);
                }
                Seat::Evict(slot) => {
                    self.conns[slot].give_way();
                    self.stats.evicted += 1;
                    assert!(
                        self.pending.is_none(),
                        "a slot closing makes the next seat Wait"
                    );
                    self.pending = Some((stream, now_ms));
                }
                Seat::Refuse => self.refuse_busy(stream),
                Seat::Wait => unreachable!("returned above"),
            }
        }
    }

    fn refuse_busy(&mut self, mut stream: UnixStream) {
        self.stats.refused_busy += 1;
        let mut buf = [0u8; 512];
        if let Ok(answer) = write_error(
            &mut buf,
            503,
            "every API connection is a stream or a deploy waiting for the disk; retry shortly",
            false,
        ) {
            // Best effort: a client that cannot take 200 bytes at once gets only the close.
            let _ = stream.write(answer);
        }
    }

    /// Drops connections past their deadline: 408 for a partial request, 507 for a deploy whose
    /// record never became durable, nothing for an idle keep-alive connection.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        // Streams have no deadline: they end when their client closes, and a stuck one holds
        // only its own slot (there are at most `STREAMS_MAX`).
        for c in self
            .conns
            .iter_mut()
            .filter(|c| c.is_open() && !c.is_streaming())
        {
            if let Some(w) = &c.waiting {
                if now_ms >= w.deadline_ms {
                    c.waiting = None;
                    c.answer_error(507, "the WAL did not make the deploy durable in time (disk full?); nothing is acknowledged: retry");
                    expired += 1;
                }
                continue;
            }
            if now_ms < c.deadline_ms {
                continue;
            }
            if c.start == c.end && c.request.buffered() > 0 {
                c.answer_error(408, "the request did not arrive whole in time");
                c.flush();
            }
            c.close();
            expired += 1;
        }
        self.stats.timeouts += expired as u64;
        expired
    }
}

impl Conn {
    fn open(&mut self, stream: UnixStream, now_ms: u64, timeout_ms: u64, number: u64) {
        self.stream = Some(stream);
        self.number = number;
        self.start = 0;
        self.end = 0;
        self.close_after = false;
        self.waiting = None;
        self.listing = None;
        self.stream_next = None;
        self.deadline_ms = now_ms + timeout_ms;
        let buffered = self.request.buffered();
        if buffered > 0 {
            self.request.consume(buffered);
        }
    }

    pub fn close(&mut self) {
        self.dead = self.stream.is_some();
        self.waiting = None;
        self.listing = None;
        self.stream_next = None;
        if let Some(child) = self.logs.take() {
            child.kill_and_reap();
        }
    }

    /// How seating a new client sees this slot: streams and deploys waiting for the WAL are kept;
    /// any other connection may give way, held since its last answer or its accept.
    fn occupant(&self, timeout_ms: u64) -> Occupant {
        match self.stream {
            None => Occupant::Free,
            Some(_) if self.dead => Occupant::Closing,
            Some(_) if self.is_streaming() || self.waiting.is_some() => Occupant::Kept,
            Some(_) => Occupant::Held {
                since_ms: self.deadline_ms.saturating_sub(timeout_ms),
                number: self.number,
            },
        }
    }

    /// Closes this connection to seat a new client. A request it had begun is answered 503, as
    /// far as the socket takes it, so its client learns why; an idle one is only closed, as HTTP
    /// lets a server close an idle connection.
    fn give_way(&mut self) {
        if self.start == self.end && self.request.buffered() > 0 {
            self.answer_error(
                503,
                "every API connection was taken and this one had waited longest for its request; \
                 send the request whole and retry",
            );
            self.flush();
        }
        self.close();
    }

    pub fn answer_error(&mut self, status: u16, message: &str) {
        let base = self.answer.as_ptr() as usize;
        let answer = write_error(self.answer, status, message, false)
            .expect("an error answer fits the answer buffer");
        let range = range_in(base, answer);
        self.queue(range, false);
    }

    /// Drops what a stream's client sent: nothing after the request is looked at.
    pub fn discard_input(&mut self) {
        let buffered = self.request.buffered();
        if self.stream_next.is_some() && buffered > 0 {
            self.request.consume(buffered);
        }
    }

    /// Reads what has arrived into the request buffer.
    pub fn read(&mut self) -> Arrived {
        let Some(stream) = self.stream.as_mut().filter(|_| !self.dead) else {
            return Arrived::Closed;
        };
        loop {
            let spare = self.request.spare();
            if spare.is_empty() {
                return Arrived::More;
            }
            match stream.read(spare) {
                Ok(0) => return Arrived::Closed,
                Ok(n) => self.request.handle_read(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Arrived::More,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Arrived::Closed,
            }
        }
    }

    /// Writes what the client takes; closes after the last byte if asked to.
    pub fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut().filter(|_| !self.dead) else {
            return;
        };
        while self.start < self.end {
            match stream.write(&self.answer[self.start..self.end]) {
                Ok(n) => self.start += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.close(),
            }
        }
        if self.close_after {
            self.close();
        }
    }

    /// An answer was queued for a request: the next one has a fresh deadline, `timeout_ms` away.
    pub fn answered(&mut self, consumed: usize, now_ms: u64, timeout_ms: u64) {
        self.request.consume(consumed);
        self.deadline_ms = now_ms + timeout_ms;
    }
}
