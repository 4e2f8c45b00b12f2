//! `*.myco` DNS for workloads on this box: a UDP and a TCP listener (default 127.0.0.1:53) that
//! answer from the gossiped state through `myco_core::dns`, with the core's `executor::Names`
//! as the directory. `NAME.myco` lists the boxes that run
//! NAME healthily right now: placement's boxes whose unit is running (this box: what systemd
//! says; a peer: its gossiped status lists nothing wrong with it). A peer that has not reported
//! is left out, so a name never points at a box that is not known to serve it.
//!
//! UDP queries are taken and answered in batches (`udp_batch`). TCP serves a fixed table of
//! connections with non-blocking reads and writes, so a slow client holds a slot and never the
//! loop. A connection answers its queries in order, pipelined ones too (RFC 7766), and stays
//! open for the next until it has been idle for `TCP_TIMEOUT_MS`. When every slot is taken, the
//! connection idle or slowest longest gives way to a new client (`seat`, the API's policy too),
//! so clients holding half-sent queries cannot lock a resolver out.

use super::executor::Executor;
use super::seat::{seat, Occupant, Seat};
use super::udp_batch::{UdpBatch, BATCH};
use crate::arena::DnsSlot;
use myco_core::dns::{answer, Transport, UDP_BYTES_MAX};
use myco_core::executor::Names;
use myco_core::{Node, PeerAddr};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrStorage};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// TCP connections answered at once; more wait in the kernel's backlog.
pub const DNS_TCP_MAX: usize = 4;
/// Addresses DNS listens on: by default IPv4 and IPv6 loopback.
pub const DNS_LISTENERS_MAX: usize = 2;
/// UDP batches answered per wake-up, so a flood cannot starve the API and the timers.
const UDP_BATCHES_PER_WAKE: usize = 4;
/// Queries are a question and an OPT record, well under this; a longer datagram arrives cut and
/// is answered FORMERR when the cut leaves it unreadable.
pub(crate) const UDP_QUERY_BYTES_MAX: usize = 512;
/// A TCP query must arrive, and its answer be taken, within this.
const TCP_TIMEOUT_MS: u64 = 5_000;
pub(crate) const MESSAGE_BYTES_MAX: usize = 65_535;

#[derive(Clone, Copy, Debug, Default)]
pub struct DnsStats {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    /// Packets that got no answer (not even a header to answer).
    pub dropped: u64,
    /// TCP connections closed to seat a new client (`seat`).
    pub tcp_evicted: u64,
}

struct TcpConn {
    stream: Option<TcpStream>,
    /// Framed queries as read: a 2-byte length and the query, maybe more than one.
    input: &'static mut [u8],
    filled: usize,
    /// The client closed its side: answer what arrived, then close.
    eof: bool,
    /// The framed answer and how much of it is sent.
    output: &'static mut [u8],
    sent: usize,
    len: usize,
    deadline_ms: u64,
    /// This connection's place in the order of acceptance (`seat` breaks ties with it).
    number: u64,
    /// Closed; the fd stays until the backend forgot it (as for API connections).
    dead: bool,
}

/// DNS's buffers in the arena: the TCP connections' and one UDP batch's.
pub struct DnsBuffers {
    pub tcp: &'static mut [DnsSlot; DNS_TCP_MAX],
    pub queries: &'static mut [u8],
    pub answers: &'static mut [u8],
}

/// One address's sockets.
pub struct Listener {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

pub struct Dns {
    pub listeners: heapless::Vec<Listener, DNS_LISTENERS_MAX>,
    conns: heapless::Vec<TcpConn, DNS_TCP_MAX>,
    /// A client accepted while every slot was taken, and when: it takes the slot of the
    /// connection that gave way to it once `reap` has freed that slot.
    pending: Option<(TcpStream, u64)>,
    /// TCP connections accepted so far.
    accepted: u64,
    batch: UdpBatch,
    /// The gossip socket's address (port 0), from which the core's `own_addrs` tells what this
    /// box answers for itself: that address, or loopback when it is a wildcard (a workload on
    /// this box reaches a service on this box there).
    own: PeerAddr,
    pub stats: DnsStats,
}

impl Dns {
    /// Binds a UDP and a TCP listener, non-blocking, on each of `addrs`, or takes the two that
    /// systemd passed for it (socket activation, `crate::systemd::listen_fds`: then port 53 needs
    /// no capability). One that cannot be bound is reported through `refused` and left out (IPv6
    /// may be off on this box); `None` when none could be bound. The buffers are the arena's.
    pub fn bind(
        (addrs, gossip): (&[SocketAddr], SocketAddr),
        buffers: DnsBuffers,
        mut refused: impl FnMut(SocketAddr, io::Error),
    ) -> Option<Dns> {
        let mut listeners = heapless::Vec::new();
        let mut passed = Passed::new(crate::systemd::listen_fds());
        for &addr in addrs.iter().take(DNS_LISTENERS_MAX) {
            match Listener::open(addr, &mut passed) {
                Ok(l) => listeners
                    .push(l)
                    .ok()
                    .expect("taken at most DNS_LISTENERS_MAX"),
                Err(e) => refused(addr, e),
            }
        }
        if listeners.is_empty() {
            return None;
        }
        // A wildcard stands for this box's loopback; the core says which (`own_addrs`).
        let own = PeerAddr {
            port: 0,
            ..super::net::peer_addr(gossip)
        };
        let conns = buffers
            .tcp
            .iter_mut()
            .map(|slot| TcpConn {
                stream: None,
                input: &mut slot.input,
                filled: 0,
                eof: false,
                output: &mut slot.output,
                sent: 0,
                len: 0,
                deadline_ms: 0,
                number: 0,
                dead: false,
            })
            .collect();
        Some(Dns {
            listeners,
            conns,
            pending: None,
            accepted: 0,
            batch: UdpBatch::new(
                (buffers.queries, UDP_QUERY_BYTES_MAX),
                (buffers.answers, UDP_BYTES_MAX),
            ),
            own,
            stats: DnsStats::default(),
        })
    }

    /// Answers the UDP queries that arrived on listener `i`.
    pub fn serve_udp(&mut self, i: usize, node: &Node, executor: Option<&Executor>) {
        let names = Names {
            node,
            executor: executor.map(|e| &**e),
            own: self.own,
        };
        let Some(fd) = self.listeners.get(i).map(|l| l.udp.as_raw_fd()) else {
            return;
        };
        for _ in 0..UDP_BATCHES_PER_WAKE {
            let got = self.batch.receive(fd);
            for q in 0..got {
                let (query, out) = self.batch.query_and_answer(q);
                match answer(query, Transport::Udp, &names, out) {
                    Some(len) => self.batch.answered(q, len),
                    None => self.stats.dropped += 1,
                }
            }
            self.stats.udp_queries += got as u64;
            // A full socket buffer drops answers, as UDP may; the client asks again.
            self.batch.send(fd);
            if got < BATCH {
                return;
            }
        }
    }

    /// Accepts TCP connections waiting on listener `i`, into free slots. With none free, the
    /// connection idle or slowest longest gives way to the client just accepted (RFC 7766 6.2.3
    /// lets a server close idle connections under pressure; a half-sent query is treated alike),
    /// which takes its slot once reaped, at the end of this turn of the loop.
    pub fn accept(&mut self, i: usize, now_ms: u64) {
        let Some(listener) = self.listeners.get(i) else {
            return;
        };
        loop {
            let seat = seat(self.conns.iter().map(TcpConn::occupant));
            if matches!(seat, Seat::Wait | Seat::Refuse) {
                return;
            }
            let Ok((stream, _)) = listener.tcp.accept() else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.accepted += 1;
            match seat {
                Seat::Take(slot) => self.conns[slot].open(stream, now_ms, self.accepted),
                Seat::Evict(slot) => {
                    self.conns[slot].close();
                    self.stats.tcp_evicted += 1;
                    self.pending = Some((stream, now_ms));
                }
                Seat::Wait | Seat::Refuse => unreachable!("returned above"),
            }
        }
    }

    /// Whether the TCP listeners are worth watching: a slot is free, or a connection can give
    /// way. Not while a slot is closing (it is free after this turn's reap), or a waiting client
    /// would wake the loop on every turn until then.
    pub fn watch_tcp(&self) -> bool {
        matches!(
            seat(self.conns.iter().map(TcpConn::occupant)),
            Seat::Take(_) | Seat::Evict(_)
        )
    }

    /// The fds to watch: the TCP connections, readable until the query is in, then writable.
    pub fn conn_fds(&self) -> impl Iterator<Item = (usize, RawFd, bool)> + '_ {
        self.conns.iter().enumerate().filter_map(|(i, c)| {
            let s = c.stream.as_ref().filter(|_| !c.dead)?;
            Some((i, s.as_raw_fd(), c.len > 0))
        })
    }

    /// Reads, answers and writes for TCP connection `slot`.
    pub fn serve_tcp(
        &mut self,
        slot: usize,
        node: &Node,
        executor: Option<&Executor>,
        now_ms: u64,
    ) {
        let names = Names {
            node,
            executor: executor.map(|e| &**e),
            own: self.own,
        };
        let c = &mut self.conns[slot];
        loop {
            if c.len == 0 {
                if !c.eof && !c.read_queries() {
                    return c.close();
                }
                let Some(end) = c.query_end() else {
                    // Nothing whole yet: wait for the rest, unless none can come.
                    if c.eof {
                        c.close();
                    }
                    return;
                };
                self.stats.tcp_queries += 1;
                let Some(len) =
                    answer(&c.input[2..end], Transport::Tcp, &names, &mut c.output[2..])
                else {
                    self.stats.dropped += 1;
                    return c.close();
                };
                c.output[..2].copy_from_slice(&(len as u16).to_be_bytes());
                (c.len, c.sent) = (len + 2, 0);
                c.input.copy_within(end..c.filled, 0);
                c.filled -= end;
            }
            match c.write_answer() {
                Progress::Blocked => return,
                Progress::Gone => return c.close(),
                Progress::Done => {
                    c.len = 0;
                    c.deadline_ms = now_ms + TCP_TIMEOUT_MS;
                }
            }
        }
    }

    /// Closes connections past their deadline.
    pub fn expire(&mut self, now_ms: u64) {
        for c in self
            .conns
            .iter_mut()
            .filter(|c| c.stream.is_some() && now_ms >= c.deadline_ms)
        {
            c.close();
        }
    }

    /// Closes the fds of closed connections after `forget` ran for each (by slot); then a client
    /// that waited for a slot takes one.
    pub fn reap(&mut self, mut forget: impl FnMut(usize)) {
        for (i, c) in self.conns.iter_mut().enumerate().filter(|(_, c)| c.dead) {
            forget(i);
            c.stream = None;
            c.dead = false;
        }
        if let Some((stream, accepted_ms)) = self.pending.take() {
            // The connection that gave way was just reaped, so a slot is free; were none, the
            // client would only be closed, as a full server may. Nothing is accepted while a
            // client waits, so it was the last one accepted.
            if let Some(c) = self.conns.iter_mut().find(|c| c.stream.is_none()) {
                c.open(stream, accepted_ms, self.accepted);
            }
        }
    }
}

impl Listener {
    /// The UDP and TCP sockets systemd passed for `addr`, if it passed both, else both bound here.
    fn open(addr: SocketAddr, passed: &mut Passed) -> io::Result<Listener> {
        if let Some((udp, tcp)) = passed.pair(addr) {
            let (udp, tcp) = (UdpSocket::from(udp), TcpListener::from(tcp));
            udp.set_nonblocking(true)?;
            tcp.set_nonblocking(true)?;
            return Ok(Listener { udp, tcp });
        }
        Listener::bind(addr)
    }

    fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let udp = UdpSocket::bind(addr)?;
        udp.set_nonblocking(true)?;
        let tcp = TcpListener::bind(addr)?;
        tcp.set_nonblocking(true)?;
        Ok(Listener { udp, tcp })
    }
}

/// The sockets systemd passed, each taken at most once (so no descriptor gets two owners).
struct Passed {
    fds: Range<RawFd>,
    /// Bit `i`: descriptor `fds.start + i` is taken. Only the first 64 are looked at.
    taken: u64,
}

impl Passed {
    fn new(fds: Range<RawFd>) -> Passed {
        Passed { fds, taken: 0 }
    }

    /// The datagram and the stream socket bound to `addr`, both or neither.
    fn pair(&mut self, addr: SocketAddr) -> Option<(OwnedFd, OwnedFd)> {
        let udp = self.find(addr, SockType::Datagram)?;
        let tcp = self.find(addr, SockType::Stream)?;
        self.taken |= (1 << udp) | (1 << tcp);
        let start = self.fds.start;
        // SAFETY: systemd passed these descriptors to this process (`listen_fds` checked
        // `$LISTEN_PID`), nothing else in it owns them, and `taken` gives each one owner.
        let own = |i: u32| unsafe { OwnedFd::from_raw_fd(start + i as RawFd) };
        let (udp, tcp) = (own(udp), own(tcp));
        // systemd passes them inheritable; the daemon's children (nix-store, journalctl) must
        // not hold port 53.
        for fd in [&udp, &tcp] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
        }
        Some((udp, tcp))
    }

    /// The index of the first untaken descriptor of `kind` bound to `addr`.
    fn find(&self, addr: SocketAddr, kind: SockType) -> Option<u32> {
        (0..64u32)
            .zip(self.fds.clone())
            .filter(|&(i, _)| self.taken & (1 << i) == 0)
            .find(|&(_, fd)| {
                // SAFETY: a descriptor systemd passed stays open for the whole call.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                getsockopt(&borrowed, sockopt::SockType).ok() == Some(kind)
                    && local_addr(fd) == Some(addr)
            })
            .map(|(i, _)| i)
    }
}

/// The address a socket is bound to, if it is an IP socket.
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    let a = getsockname::<SockaddrStorage>(fd).ok()?;
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// How far an answer got.
enum Progress {
    Done,
    /// The client's window is full: go on when the socket is writable.
    Blocked,
    /// The connection failed.
    Gone,
}

impl TcpConn {
    fn open(&mut self, stream: TcpStream, now_ms: u64, number: u64) {
        (self.filled, self.sent, self.len, self.dead, self.eof) = (0, 0, 0, false, false);
        self.deadline_ms = now_ms + TCP_TIMEOUT_MS;
        self.number = number;
        self.stream = Some(stream);
    }

    fn close(&mut self) {
        self.dead = self.stream.is_some();
    }

    /// How seating a new client sees this slot: any open connection may give way, held since
    /// it was accepted or last finished an answer.
    fn occupant(&self) -> Occupant {
        match self.stream {
            None => Occupant::Free,
            Some(_) if self.dead => Occupant::Closing,
            Some(_) => Occupant::Held {
                since_ms: self.deadline_ms.saturating_sub(TCP_TIMEOUT_MS),
                number: self.number,
            },
        }
    }

    /// Reads what arrived, as far as the buffer holds; false on a read error or when the buffer
    /// is full without one whole query (longer than any query). The client closing its side
    /// sets `eof`.
    fn read_queries(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        while self.filled < self.input.len() {
            match stream.read(&mut self.input[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.filled < self.input.len() || self.query_end().is_some()
    }

    /// Where the first whole query in `input` ends (after its 2-byte length), if one is there.
    fn query_end(&self) -> Option<usize> {
        let declared = u16::from_be_bytes([*self.input.first()?, *self.input.get(1)?]);
        let end = 2 + usize::from(declared);
        (self.filled >= end).then_some(end)
    }

    /// Writes what the client takes of the answer.
    fn write_answer(&mut self) -> Progress {
        let Some(stream) = self.stream.as_mut() else {
            return Progress::Gone;
        };
        while self.sent < self.len {
            match stream.write(&self.output[self.sent..self.len]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Gone,
            }
        }
        Progress::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    /// A UDP and a TCP socket on one free loopback port, as systemd would pass them, and the
    /// range of descriptors that holds both.
    fn passed_pair() -> (SocketAddr, Range<RawFd>) {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).unwrap();
        // Inheritable, as systemd passes them.
        fcntl(&udp, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        fcntl(&tcp, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        let (a, b) = (udp.into_raw_fd(), tcp.into_raw_fd());
        (addr, a.min(b)..a.max(b) + 1)
    }

    /// The passed pair for an address is taken once, with its two kinds, and no longer inherited
    /// by children; another address, or a second ask, gets nothing, so the daemon binds those
    /// itself.
    #[test]
    fn passed_sockets_are_found_by_address_and_taken_once() {
        let (addr, fds) = passed_pair();
        let mut passed = Passed::new(fds);
        let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
        assert!(passed.pair(other).is_none());
        let (udp, tcp) = passed.pair(addr).expect("both passed sockets found");
        for fd in [&udp, &tcp] {
            let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
            assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        }
        assert_eq!(UdpSocket::from(udp).local_addr().unwrap(), addr);
        assert_eq!(TcpListener::from(tcp).local_addr().unwrap(), addr);
        assert!(passed.pair(addr).is_none());
    }

    /// Without both kinds for an address there is no pair: a lone datagram socket is left.
    #[test]
    fn a_lone_datagram_socket_is_no_pair() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let fd = udp.into_raw_fd();
        let mut passed = Passed::new(fd..fd + 1);
        assert!(passed.pair(addr).is_none());
        assert_eq!(passed.taken, 0);
        // SAFETY: the descriptor was this test's socket, and nothing took it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }

    /// Outside socket activation nothing is passed and nothing is looked at.
    #[test]
    fn nothing_passed_is_no_pair() {
        let mut passed = Passed::new(3..3);
        assert!(passed.pair("127.0.0.1:53".parse().unwrap()).is_none());
    }
}
