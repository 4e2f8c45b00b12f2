//! Datagrams in batches: `recvmmsg` takes up to `BATCH` queries in one system call and
//! `sendmmsg` sends their answers in one more, instead of two calls per query. Under load the
//! calls, not the answering, were most of DNS's cost (`docs/benchmarks.md`).
//!
//! The buffers are the arena's; the message headers that point into them are built on the
//! stack per call, so nothing here holds a raw pointer between calls.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 16;

pub struct UdpBatch {
    /// `BATCH` slots of `query_max` bytes each.
    queries: &'static mut [u8],
    /// `BATCH` slots of `answer_max` bytes each, one per query slot.
    answers: &'static mut [u8],
    query_max: usize,
    answer_max: usize,
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    query_lens: [usize; BATCH],
    /// 0: no answer for that query.
    answer_lens: [usize; BATCH],
    taken: usize,
}

/// What `send` did with the answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    /// Refused by the kernel (a full socket buffer, an unreachable peer): UDP may drop them and
    /// the client asks again.
    pub dropped: usize,
}

impl UdpBatch {
    /// Over `queries`, `BATCH` slots of up to `query_max` bytes (longer queries arrive cut), and
    /// `answers`, `BATCH` slots of up to `answer_max` bytes. Pages are touched only as far as
    /// datagrams fill them.
    pub fn new(
        (queries, query_max): (&'static mut [u8], usize),
        (answers, answer_max): (&'static mut [u8], usize),
    ) -> UdpBatch {
        assert!(queries.len() >= BATCH * query_max && answers.len() >= BATCH * answer_max);
        UdpBatch {
            queries,
            answers,
            query_max,
            answer_max,
            // SAFETY: sockaddr_storage is plain data; all zeros is a valid (AF_UNSPEC) value.
            peers: unsafe { zeroed() },
            peer_lens: [0; BATCH],
            query_lens: [0; BATCH],
            answer_lens: [0; BATCH],
            taken: 0,
        }
    }

    /// Takes up to `BATCH` waiting datagrams from non-blocking socket `fd`; returns how many
    /// (0 when none is waiting or the socket reports an error).
    pub fn receive(&mut self, fd: RawFd) -> usize {
        self.taken = 0;
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; zeroed is an empty header, filled in below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let slots = self.queries.chunks_exact_mut(self.query_max);
        for (i, ((iov, hdr), slot)) in iovs.iter_mut().zip(&mut hdrs).zip(slots).enumerate() {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
            hdr.msg_hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        let got = loop {
            // SAFETY: every header points at a live slot of `queries` and of `peers`, with
            // their true lengths; the kernel writes at most that much into each.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return 0;
            }
        };
        for (i, hdr) in hdrs.iter().enumerate().take(got) {
            self.query_lens[i] = (hdr.msg_len as usize).min(self.query_max);
            self.peer_lens[i] = hdr.msg_hdr.msg_namelen;
            self.answer_lens[i] = 0;
        }
        self.taken = got;
        got
    }

    /// Query `i` of those taken (cut to `query_max` if it was longer) and the buffer for its
    /// answer; `answered(i, len)` records the answer's length.
    pub fn query_and_answer(&mut self, i: usize) -> (&[u8], &mut [u8]) {
        assert!(i < self.taken);
        let q = &self.queries[i * self.query_max..][..self.query_lens[i]];
        let a = &mut self.answers[i * self.answer_max..][..self.answer_max];
        (q, a)
    }

    pub fn answered(&mut self, i: usize, len: usize) {
        assert!(i < self.taken && len <= self.answer_max);
        self.answer_lens[i] = len;
    }

    /// Sends every recorded answer to the address its query came from.
    pub fn send(&mut self, fd: RawFd) -> Sent {
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: as in `receive`.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut count = 0;
        for i in (0..self.taken).filter(|&i| self.answer_lens[i] > 0) {
            let answer = &mut self.answers[i * self.answer_max..][..self.answer_lens[i]];
            iovs[count].iov_base = answer.as_mut_ptr().cast();
            iovs[count].iov_len = answer.len();
            let hdr = &mut hdrs[count].msg_hdr;
            hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.peer_lens[i];
            count += 1;
        }
        for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()).take(count) {
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        let mut done = Sent::default();
        while done.sent + done.dropped < count {
            let at = done.sent + done.dropped;
            // SAFETY: headers `at..count` point at live answers and peer addresses with their
            // true lengths; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[at..].as_mut_ptr(),
                    (count - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                n if n > 0 => done.sent += n as usize,
                _ => match io::Error::last_os_error().kind() {
                    io::ErrorKind::Interrupted => {}
                    // The socket buffer is full: the rest would fail the same way.
                    io::ErrorKind::WouldBlock => done.dropped = count - done.sent,
                    // This one datagram was refused (its peer, its address): skip it.
                    _ => done.dropped += 1,
                },
            }
        }
        self.taken = 0;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// More datagrams than one batch, from two clients: each batch holds at most `BATCH`, every
    /// answer reaches the client that asked, and a datagram longer than a slot arrives cut.
    #[test]
    fn batches_answer_each_client() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let clients = [
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        let total = BATCH + 5;
        for i in 0..total {
            clients[i % 2].send_to(&[i as u8; 3], to).unwrap();
        }
        clients[0].send_to(&[0xEE; 40], to).unwrap();
        let leak = crate::arena::leak_bytes;
        let mut batch = UdpBatch::new((leak(BATCH * 32), 32), (leak(BATCH * 8), 8));
        let mut seen = 0;
        while seen < total + 1 {
            let got = batch.receive(server.as_raw_fd());
            assert!(got > 0 && got <= BATCH, "{got}");
            for i in 0..got {
                let (q, a) = batch.query_and_answer(i);
                let len = q.len().min(a.len());
                let q = q.to_vec();
                a[..len].copy_from_slice(&q[..len]);
                a[0] = q[0].wrapping_add(100);
                batch.answered(i, len);
            }
            assert_eq!(batch.send(server.as_raw_fd()).sent, got);
            seen += got;
        }
        assert_eq!(batch.receive(server.as_raw_fd()), 0, "nothing left");
        let mut buf = [0u8; 64];
        for i in 0..total {
            let (n, _) = clients[i % 2].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i as u8 + 100, i as u8, i as u8]);
        }
        let (n, _) = clients[0].recv_from(&mut buf).unwrap();
        assert_eq!(n, 8, "a 40-byte datagram in a 32-byte slot answers 8 bytes");
        assert_eq!(&buf[1..n], &[0xEE; 7]);
    }
}
