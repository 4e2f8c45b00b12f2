//! The tunnel listener (`--proxy-listen`, issue 18): `myco proxy` on an operator's machine opens
//! an authenticated, encrypted tunnel here, and once it is open the bytes inside are passed to
//! and from this box's API socket, so every endpoint works through it unchanged. Who may open a
//! tunnel is the core's decision (`Node::answer_tunnel`, `Node::finish_tunnel`: an access
//! credential from this cluster's operator, not expired or revoked, for this box or every box);
//! this module moves the bytes (`docs/protocol.md`, "The tunnel").
//!
//! - A fixed table of `PROXY_SLOTS` tunnels, each with two record buffers in the arena: one for
//!   what the client sends (a handshake message, or a record opened in place and then written to
//!   the API), one for what goes back (the Accept, a Refuse, or a record sealed in place from one
//!   read of the API). Nothing is allocated after start, and a tunnel's memory does not grow with
//!   what it carries: a full buffer stops reading the other side (back-pressure through TCP).
//! - A client beyond the slots gets a Refuse (busy) and is closed: an open tunnel is an operator
//!   at work, so none gives way.
//! - A handshake not done within the handshake timeout, and an open tunnel that carries nothing
//!   either way for `IDLE_MS`, are closed, so idle or slow clients cannot hold the slots for good.
//!   A refused or tampered record closes its tunnel at once.

use super::sink::fill_random;
use crate::flight::{Level, Logger};
use myco_core::crypto::tunnel::{
    self, frame_len, RefuseReason, TunnelResponder, TunnelSession, LENGTH_BYTES, RECORD_BYTES_MAX,
    RECORD_FRAME_BYTES_MAX, RECORD_PLAINTEXT_MAX, TUNNEL_HANDSHAKE_BYTES_MAX,
};
use myco_core::Node;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Tunnels open at once (handshakes included). An operator needs one or two; four leave room
/// for a second operator without letting tunnels weigh on the box.
pub const PROXY_SLOTS: usize = 4;
/// One buffer of a slot: the largest record with its length prefix.
pub const BUF_BYTES: usize = RECORD_FRAME_BYTES_MAX;
/// Token offsets: the listener, then each slot's client socket and API socket.
pub const TOKENS: usize = 1 + 2 * PROXY_SLOTS;
/// An open tunnel that carries nothing either way for this long is closed. `myco events` and
/// `myco logs -f` get the API's heartbeats, so a watched stream is never idle.
pub const IDLE_MS: u64 = 300_000;
/// The example in `--help`; the listener is off unless asked for.
pub const LISTEN_EXAMPLE: &str = "[::]:7948";

/// The slots' buffers in the arena: `[slot][0]` from the client, `[slot][1]` to it.
pub type ProxyBuffers = &'static mut [[[u8; BUF_BYTES]; 2]; PROXY_SLOTS];

/// The proxy's counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyStats {
    /// Tunnels open now (handshake done).
    pub open: u64,
    pub opened: u64,
    /// Refused tunnels, by `RefuseReason as usize - 1`.
    pub refused: [u64; RefuseReason::ALL.len()],
    /// Handshakes not done in time, and open tunnels idle past `IDLE_MS`.
    pub timeouts: u64,
    /// Records that failed their tag: the tunnel was closed.
    pub bad_records: u64,
    /// Plaintext bytes passed to the API, and from it.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

enum Phase {
    /// Reading the client's Open.
    AwaitOpen,
    /// The Accept is sent (or going); reading the Prove.
    AwaitProve(TunnelResponder),
    /// Passing records between the client and the API.
    Open {
        session: TunnelSession,
        api: UnixStream,
    },
    /// Sending what is left in the outgoing buffer (a Refuse, or the API's last record), then
    /// closing.
    Closing,
}

struct Slot {
    client: Option<TcpStream>,
    phase: Phase,
    /// From the client: a message being read into `inb[..filled]`; once a record is opened, its
    /// plaintext `inb[plain.0..plain.1]` is being written to the API.
    inb: &'static mut [u8; BUF_BYTES],
    filled: usize,
    plain: (usize, usize),
    /// To the client: `outb[out.0..out.1]` is being written.
    outb: &'static mut [u8; BUF_BYTES],
    out: (usize, usize),
    deadline_ms: u64,
    /// The handshake completed: the tunnel counts in `ProxyStats::open` until it closes, whatever
    /// phase it closes from.
    proven: bool,
    /// Closed; the sockets stay open until the loop forgot their tokens (`reap`).
    dead: bool,
}

pub struct Proxy {
    listener: TcpListener,
    slots: heapless::Vec<Slot, PROXY_SLOTS>,
    api_socket: PathBuf,
    handshake_ms: u64,
    log: Logger,
    pub stats: ProxyStats,
}

/// Why a client's message could not be read.
enum ReadFail {
    Gone,
    Malformed,
}

/// What a pass over a slot found.
enum Step {
    Progress,
    Blocked,
    Gone,
}

/// Seconds since the Unix epoch: credentials expire by the box's wall clock.
fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random32() -> [u8; 32] {
    let mut r = [0u8; 32];
    fill_random(&mut r);
    r
}

impl Proxy {
    /// Binds the listener. `handshake_ms` bounds a handshake (the API's request timeout).
    pub fn bind(
        listen: SocketAddr,
        api_socket: PathBuf,
        handshake_ms: u64,
        buffers: ProxyBuffers,
        log: Logger,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let slots = buffers
            .iter_mut()
            .map(|[inb, outb]| Slot {
                client: None,
                phase: Phase::AwaitOpen,
                inb,
                filled: 0,
                plain: (0, 0),
                outb,
                out: (0, 0),
                deadline_ms: 0,
                proven: false,
                dead: false,
            })
            .collect();
        Ok(Proxy {
            listener,
            slots,
            api_socket,
            handshake_ms,
            log,
            stats: ProxyStats::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The fds to watch, with their token offsets from the proxy's base.
    pub fn interests(&self, mut push: impl FnMut(RawFd, u64, bool, bool)) {
        push(self.listener.as_raw_fd(), 0, true, false);
        for (i, s) in self.slots.iter().enumerate() {
            let Some(client) = s.client.as_ref().filter(|_| !s.dead) else {
                continue;
            };
            let (sock, api) = (1 + 2 * i as u64, 2 + 2 * i as u64);
            let sending = s.out.0 < s.out.1;
            let passing = s.plain.0 < s.plain.1;
            let reading = match s.phase {
                Phase::AwaitOpen | Phase::AwaitProve(_) => !sending,
                Phase::Open { .. } => !passing,
                Phase::Closing => false,
            };
            push(client.as_raw_fd(), sock, reading, sending);
            if let Phase::Open { api: stream, .. } = &s.phase {
                push(stream.as_raw_fd(), api, !sending, passing);
            }
        }
    }

    /// A token of the proxy's is ready.
    pub fn ready(&mut self, offset: u64, node: &Node, now_ms: u64) {
        if offset == 0 {
            return self.accept(now_ms);
        }
        let i = (offset as usize - 1) / 2;
        // A few passes, so one busy tunnel cannot hold the loop; readiness is level-triggered.
        for _ in 0..4 {
            match self.pump(i, node, now_ms) {
                Step::Progress => continue,
                Step::Blocked => break,
                Step::Gone => {
                    self.close(i);
                    break;
                }
            }
        }
    }

    /// Once per turn of the loop: handshakes and idle tunnels past their deadline are closed.
    pub fn step(&mut self, now_ms: u64) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.client.is_some() && !s.dead && now_ms >= s.deadline_ms {
                self.stats.timeouts += 1;
                self.close(i);
            }
        }
    }

    pub fn close_all(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].client.is_some() {
                self.close(i);
            }
        }
    }

    /// Tells the loop (`forget`, by token offset) of the sockets of closed slots, then closes
    /// them and frees the slots.
    pub fn reap(&mut self, mut forget: impl FnMut(u64)) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.dead {
                forget(1 + 2 * i as u64);
                forget(2 + 2 * i as u64);
                s.client = None;
                s.phase = Phase::AwaitOpen;
                (s.filled, s.plain, s.out) = (0, (0, 0), (0, 0));
                (s.proven, s.dead) = (false, false);
            }
        }
    }

    fn close(&mut self, i: usize) {
        let s = &mut self.slots[i];
        assert!(s.client.is_some(), "only an occupied slot closes");
        if s.dead {
            return;
        }
        if s.proven {
            self.stats.open -= 1;
        }
        s.dead = true;
    }

    fn accept(&mut self, now_ms: u64) {
        // A slot closed this turn is free once reaped: wait for it rather than refuse.
        if self.slots.iter().any(|s| s.dead) {
            return;
        }
        while let Ok((mut stream, _)) = self.listener.accept() {
            let Some(s) = self.slots.iter_mut().find(|s| s.client.is_none()) else {
                // Best effort: the refusal fits any socket buffer, and the client is closed. The
                // Open it may have sent already is read first: closing with unread bytes resets
                // the connection, and a reset can overtake the refusal.
                let refuse = framed_refusal(RefuseReason::Busy);
                let mut open = [0u8; LENGTH_BYTES + TUNNEL_HANDSHAKE_BYTES_MAX];
                let _ = stream
                    .set_nonblocking(true)
                    .map(|()| stream.read(&mut open));
                let _ = stream.write(&refuse);
                self.stats.refused[RefuseReason::Busy as usize - 1] += 1;
                continue;
            };
            // Each record is written whole; Nagle's algorithm would only delay the next one.
            let ready = stream
                .set_nonblocking(true)
                .and_then(|()| stream.set_nodelay(true));
            if ready.is_err() {
                continue;
            }
            s.client = Some(stream);
            s.deadline_ms = now_ms + self.handshake_ms;
        }
    }

    /// One pass over slot `i`: send what is pending, take in what can be read.
    fn pump(&mut self, i: usize, node: &Node, now_ms: u64) -> Step {
        let s = &mut self.slots[i];
        if s.client.is_none() || s.dead {
            return Step::Blocked;
        }
        let mut progress = false;
        match s.send() {
            Ok(moved) => progress |= moved,
            Err(()) => return Step::Gone,
        }
        if s.out.0 == s.out.1 && matches!(s.phase, Phase::Closing) {
            return Step::Gone;
        }
        match s.pass_to_api() {
            Ok(moved) => progress |= moved,
            Err(()) => return Step::Gone,
        }
        match s.read_client() {
            Ok(Some(n)) => {
                progress = true;
                self.handle_message(i, n, node, now_ms);
            }
            Ok(None) => {}
            Err(ReadFail::Malformed) if !matches!(s.phase, Phase::Open { .. }) => {
                progress = true;
                self.refuse(i, RefuseReason::Malformed);
            }
            Err(_) => return Step::Gone,
        }
        let s = &mut self.slots[i];
        match s.read_api(&mut self.stats) {
            Ok(moved) => progress |= moved,
            Err(()) => return Step::Gone,
        }
        if progress {
            if let Phase::Open { .. } = s.phase {
                s.deadline_ms = now_ms + IDLE_MS;
            }
            Step::Progress
        } else {
            Step::Blocked
        }
    }

    /// A whole message of `n` bytes (its prefix included) is in slot `i`'s `inb`.
    fn handle_message(&mut self, i: usize, n: usize, node: &Node, now_ms: u64) {
        let s = &mut self.slots[i];
        let now_s = unix_now_s();
        match &mut s.phase {
            Phase::AwaitOpen => {
                let msg = &s.inb[LENGTH_BYTES..n];
                match node.answer_tunnel(msg, now_s, random32(), random32()) {
                    Ok((responder, accept)) => {
                        s.queue(&accept);
                        s.phase = Phase::AwaitProve(responder);
                    }
                    Err(e) => self.refuse(i, e.reason()),
                }
            }
            Phase::AwaitProve(responder) => {
                let msg = &s.inb[LENGTH_BYTES..n];
                match node.finish_tunnel(responder, msg, now_s) {
                    Ok(session) => self.connect(i, session, now_ms),
                    Err(e) => self.refuse(i, e.reason()),
                }
            }
            Phase::Open { session, .. } => match session.open(&mut s.inb[..n]) {
                Ok(plain) => {
                    s.plain = (LENGTH_BYTES, LENGTH_BYTES + plain.len());
                    self.stats.bytes_in += plain.len() as u64;
                    return;
                }
                Err(_) => {
                    self.stats.bad_records += 1;
                    s.phase = Phase::Closing;
                }
            },
            Phase::Closing => {}
        }
        self.slots[i].filled = 0;
    }

    /// The tunnel is proven: its bytes go to a connection of this box's API socket.
    fn connect(&mut self, i: usize, session: TunnelSession, now_ms: u64) {
        let api = connect_nonblocking(&self.api_socket);
        match api {
            Ok(api) => {
                let s = &mut self.slots[i];
                s.phase = Phase::Open { session, api };
                s.deadline_ms = now_ms + IDLE_MS;
                s.proven = true;
                self.stats.opened += 1;
                self.stats.open += 1;
            }
            Err(e) => {
                let e = crate::flight::IoError(&e);
                let text = format_args!("a tunnel cannot reach the API socket: {e}");
                self.log.log(Level::Warning, text);
                self.refuse(i, RefuseReason::Unavailable);
            }
        }
    }

    fn refuse(&mut self, i: usize, reason: RefuseReason) {
        self.stats.refused[reason as usize - 1] += 1;
        let s = &mut self.slots[i];
        s.queue(&reason.encode());
        s.phase = Phase::Closing;
    }
}

/// A connection to the API socket, made without blocking the loop: std's `UnixStream::connect`
/// would wait while the API's backlog is full, and the API only drains it from this same loop.
/// A full backlog (EAGAIN) is an error, and the tunnel is refused as unavailable.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; a negative result is checked before the fd is used.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just made and owned by no one else; the stream closes it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays zero: the path's terminator.
    if bytes.len() >= addr.sun_path.len() {
        return Err(ErrorKind::InvalidInput.into());
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes for the call's duration.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// A Refuse with its length prefix.
fn framed_refusal(reason: RefuseReason) -> [u8; LENGTH_BYTES + 2] {
    let [kind, why] = reason.encode();
    [0, 2, kind, why]
}

impl Slot {
    /// Queues a handshake message with its length prefix.
    fn queue(&mut self, msg: &[u8]) {
        assert!(self.out.0 == self.out.1, "nothing else is being sent");
        let n = msg.len();
        self.outb[..LENGTH_BYTES].copy_from_slice(&(n as u16).to_be_bytes());
        self.outb[LENGTH_BYTES..LENGTH_BYTES + n].copy_from_slice(msg);
        self.out = (0, LENGTH_BYTES + n);
    }

    /// Writes what is queued for the client. `Err`: the client is gone.
    fn send(&mut self) -> Result<bool, ()> {
        let mut moved = false;
        while self.out.0 < self.out.1 {
            let (a, b) = self.out;
            let client = self.client.as_mut().expect("an occupied slot");
            match client.write(&self.outb[a..b]) {
                Ok(0) => return Err(()),
                Ok(n) => (self.out.0, moved) = (a + n, true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
        Ok(moved)
    }

    /// Writes an opened record's plaintext to the API. `Err`: the API closed the connection.
    fn pass_to_api(&mut self) -> Result<bool, ()> {
        let Phase::Open { api, .. } = &mut self.phase else {
            return Ok(false);
        };
        let mut moved = false;
        while self.plain.0 < self.plain.1 {
            match api.write(&self.inb[self.plain.0..self.plain.1]) {
                Ok(0) => return Err(()),
                Ok(n) => (self.plain.0, moved) = (self.plain.0 + n, true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
        if moved {
            (self.plain, self.filled) = ((0, 0), 0);
        }
        Ok(moved)
    }

    /// Reads the client's next message, the length prefix first. `Some(n)`: a whole message of
    /// `n` bytes is in `inb`. `Err(Gone)`: the client is gone; `Err(Malformed)`: it announced a
    /// length no message has.
    fn read_client(&mut self) -> Result<Option<usize>, ReadFail> {
        let max = match self.phase {
            Phase::AwaitOpen | Phase::AwaitProve(_) if self.out.0 == self.out.1 => {
                TUNNEL_HANDSHAKE_BYTES_MAX
            }
            Phase::Open { .. } if self.plain.0 == self.plain.1 => RECORD_BYTES_MAX,
            _ => return Ok(None),
        };
        loop {
            let need = if self.filled < LENGTH_BYTES {
                LENGTH_BYTES
            } else {
                let prefix = [self.inb[0], self.inb[1]];
                LENGTH_BYTES + frame_len(prefix, max).map_err(|_| ReadFail::Malformed)?
            };
            if self.filled == need && need > LENGTH_BYTES {
                return Ok(Some(need));
            }
            let (filled, inb) = (self.filled, &mut *self.inb);
            let client = self.client.as_mut().expect("an occupied slot");
            match client.read(&mut inb[filled..need]) {
                Ok(0) => return Err(ReadFail::Gone),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReadFail::Gone),
            }
        }
    }

    /// Reads what the API has for the client into one sealed record. The API closing its end
    /// (an answer without keep-alive) closes the tunnel once the last record is sent.
    fn read_api(&mut self, stats: &mut ProxyStats) -> Result<bool, ()> {
        if self.out.0 < self.out.1 {
            return Ok(false);
        }
        let Phase::Open { api, session } = &mut self.phase else {
            return Ok(false);
        };
        let room = &mut self.outb[LENGTH_BYTES..LENGTH_BYTES + RECORD_PLAINTEXT_MAX];
        let n = match api.read(room) {
            Ok(0) => {
                self.phase = Phase::Closing;
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(false),
            Err(_) => return Err(()),
        };
        let total = session.seal(&mut self.outb[..], n).map_err(|_| ())?;
        self.out = (0, total);
        stats.bytes_out += n as u64;
        Ok(true)
    }
}

// A record's plaintext and the tunnel's handshake messages fit a slot's buffers.
const _: () = assert!(LENGTH_BYTES + tunnel::TUNNEL_HANDSHAKE_BYTES_MAX <= BUF_BYTES);
