//! The event loop's steady state allocates nothing: after `Backend::new`, turns of waiting,
//! forgetting and re-adding tokens, timeouts and durable writes leave the allocation count where
//! it was, on both backends. (The daemon's counting allocator checks the same thing at rest.)

use myco_testkit::alloc::{allocations, CountingAllocator};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use myco_host::io::{Backend, Choice, Completion, Completions, Interest};

/// Allocations are counted per thread, so tests running in parallel do not see each other's.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn steady_state_allocates_nothing(choice: Choice) {
    let (mut backend, _) = Backend::new(choice).expect("backend (io_uring must work on this host)");
    let (x, y) = UnixDatagram::pair().unwrap();
    let (p, _q) = UnixDatagram::pair().unwrap();
    let dir = myco_testkit::TempDir::new("io-alloc");
    let file = File::create(dir.join("file")).unwrap();
    let mut buf: Option<&'static mut [u8]> = Some(myco_host::arena::leak_bytes(4096));
    let mut out = Completions::new();
    let mut datagram = [0; 16];
    let interests = |token| {
        [
            Interest {
                fd: x.as_raw_fd(),
                token,
                readable: true,
                writable: false,
            },
            Interest {
                fd: p.as_raw_fd(),
                token: 1,
                readable: true,
                writable: true,
            },
        ]
    };

    let mut turn = |round: u64, out: &mut Completions, buf: &mut Option<&'static mut [u8]>| {
        y.send(b"x").unwrap();
        backend
            .wait(&interests(100 + round), Duration::from_millis(1), out)
            .unwrap();
        x.recv(&mut datagram).unwrap();
        backend.forget(100 + round); // The next round names x under a new token.
        backend.wait(&[], Duration::from_millis(1), out).unwrap(); // A timeout.
        let written = buf.take().expect("the buffer is back");
        backend
            .write_durable(file.as_raw_fd(), written, 4096, round * 4096)
            .unwrap();
        while buf.is_none() {
            backend.wait(&[], Duration::from_millis(100), out).unwrap();
            for completion in out.drain(..) {
                if let Completion::Written { buf: back, result } = completion {
                    result.unwrap();
                    *buf = Some(back);
                }
            }
        }
        out.clear();
    };

    turn(0, &mut out, &mut buf); // Warm-up: lazy statics in std and the test harness.
    let before = allocations();
    for round in 1..50 {
        turn(round, &mut out, &mut buf);
    }
    assert_eq!(
        allocations() - before,
        0,
        "{choice:?}: the steady state allocated"
    );
}

#[test]
fn uring_steady_state_allocates_nothing() {
    // `make aarch64` runs under qemu-user, which does not emulate io_uring.
    if std::env::var_os("MYCO_NO_IO_URING").is_some() && Backend::new(Choice::Uring).is_err() {
        eprintln!("io_uring is unavailable and MYCO_NO_IO_URING is set: skipped");
        return;
    }
    steady_state_allocates_nothing(Choice::Uring);
}

#[test]
fn poll_steady_state_allocates_nothing() {
    steady_state_allocates_nothing(Choice::Poll);
}
