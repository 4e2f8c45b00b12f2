//! The same behaviour, proven on both backends: each test body takes a `Backend`, and
//! `both_backends!` runs it once with io_uring and once with poll(2).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::uring::Uring;
use super::*;

const PATIENCE: Duration = Duration::from_secs(5);

/// The backend asked for. io_uring missing fails the uring variants by name rather than
/// passing them silently: on a host without it they cannot prove anything.
fn backend(choice: Choice) -> Backend {
    match Backend::new(choice) {
        Ok((backend, None)) => backend,
        Ok((_, Some(why))) => panic!("{choice:?} reported a fallback ({why}); only Auto may"),
        Err(why) if choice == Choice::Uring => panic!(
            "io_uring is unavailable on this machine ({why}), so the io::tests::uring variants \
             cannot run here; the io::tests::poll variants cover the shared behaviour"
        ),
        Err(why) => panic!("{choice:?} backend failed to start: {why}"),
    }
}

/// io_uring, or `None` where the caller said it is missing (`MYCO_NO_IO_URING`, which
/// `make aarch64` sets because qemu-user does not emulate io_uring). Without that variable a
/// missing io_uring fails the test.
fn uring_backend() -> Option<Backend> {
    if std::env::var_os("MYCO_NO_IO_URING").is_some() && Backend::new(Choice::Uring).is_err() {
        eprintln!("io_uring is unavailable and MYCO_NO_IO_URING is set: uring variant skipped");
        return None;
    }
    Some(backend(Choice::Uring))
}

fn wait(backend: &mut Backend, interests: &[Interest], timeout: Duration) -> Completions {
    let mut out = Completions::new();
    backend.wait(interests, timeout, &mut out).expect("wait");
    out
}

fn readable(fd: &impl AsRawFd, token: u64) -> Interest {
    Interest {
        fd: fd.as_raw_fd(),
        token,
        readable: true,
        writable: false,
    }
}

fn ready_tokens(out: &Completions) -> Vec<u64> {
    out.iter()
        .filter_map(|completion| match completion {
            Completion::Ready { token, .. } => Some(*token),
            Completion::Written { .. } => None,
        })
        .collect()
}

/// `content` in a buffer of its own, as the backend takes them (the daemon's come from the arena).
fn bytes(content: &[u8]) -> &'static mut [u8] {
    let buf = crate::arena::leak_bytes(content.len());
    buf.copy_from_slice(content);
    buf
}

/// Waits until the write in flight comes back; returns its buffer and result.
fn wait_written(backend: &mut Backend) -> (&'static mut [u8], io::Result<()>) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        for completion in wait(backend, &[], Duration::from_millis(100)) {
            if let Completion::Written { buf, result } = completion {
                assert!(!backend.write_in_flight());
                return (buf, result);
            }
        }
    }
    panic!("no Written completion within {PATIENCE:?}");
}

/// A file path of this test's own, in a directory removed when dropped.
// The directory is only held, so that it lives exactly as long as the path in it.
struct TempPath(PathBuf, #[allow(dead_code)] myco_testkit::TempDir);

impl TempPath {
    fn new() -> TempPath {
        let dir = myco_testkit::TempDir::new("io");
        TempPath(dir.join("file"), dir)
    }
}

/// A datagram to a UDP socket is reported under its token, with nothing for an idle one.
fn readiness_reports_the_right_token(mut backend: Backend) {
    let (a, b, idle) = (udp(), udp(), udp());
    b.send_to(b"x", a.local_addr().unwrap()).unwrap();
    let out = wait(
        &mut backend,
        &[readable(&idle, 20), readable(&a, 10)],
        PATIENCE,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let Completion::Ready {
        token,
        readable,
        writable,
        hangup,
    } = out[0]
    else {
        panic!("expected Ready, got {:?}", out[0]);
    };
    assert_eq!(
        (token, readable, writable, hangup),
        (10, true, false, false)
    );
}

fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// An fd still readable is reported on every call until it is read; writable likewise.
fn readiness_is_level_triggered(mut backend: Backend) {
    let (x, y) = UnixDatagram::pair().unwrap();
    y.send(b"x").unwrap();
    let writable = Interest {
        fd: y.as_raw_fd(),
        token: 2,
        readable: false,
        writable: true,
    };
    for _ in 0..3 {
        let out = wait(&mut backend, &[readable(&x, 1), writable], PATIENCE);
        assert_eq!(ready_tokens(&out), [1, 2]);
    }
    x.recv(&mut [0; 8]).unwrap();
    let out = wait(&mut backend, &[readable(&x, 1)], Duration::from_millis(50));
    assert!(out.is_empty(), "{out:?}");
}

/// With nothing ready, `wait` sleeps the whole timeout (not less, not much more) and reports
/// nothing: with interests, and with none.
fn timeout_returns_empty_after_the_timeout(mut backend: Backend) {
    let (x, _y) = UnixDatagram::pair().unwrap();
    let timeout = Duration::from_millis(200);
    for interests in [&[readable(&x, 1)][..], &[]] {
        let start = Instant::now();
        let out = wait(&mut backend, interests, timeout);
        let elapsed = start.elapsed();
        assert!(out.is_empty(), "{out:?}");
        assert!(
            elapsed >= timeout,
            "returned after {elapsed:?}, before the {timeout:?} timeout"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(2),
            "returned after {elapsed:?}"
        );
    }
}

/// Readiness that arrives after `forget` (for io_uring: a poll that fires while its cancel is on
/// its way) is never reported, and closing the fd then causes no error.
fn forget_then_close_reports_nothing(mut backend: Backend) {
    let (x, y) = UnixDatagram::pair().unwrap();
    let (p, q) = UnixDatagram::pair().unwrap();
    assert!(wait(
        &mut backend,
        &[readable(&x, 5), readable(&p, 6)],
        Duration::ZERO
    )
    .is_empty());
    y.send(b"x").unwrap();
    backend.forget(5);
    drop(x);
    let out = wait(&mut backend, &[readable(&p, 6)], Duration::from_millis(100));
    assert!(out.is_empty(), "{out:?}");
    q.send(b"x").unwrap();
    assert_eq!(
        ready_tokens(&wait(&mut backend, &[readable(&p, 6)], PATIENCE)),
        [6]
    );
}

/// `forget` releases the socket by the time the loop closes the fd: its port can be bound again
/// at once. (An armed io_uring poll holds the file open until it is cancelled.)
fn forget_releases_the_socket(mut backend: Backend) {
    let socket = udp();
    let address = socket.local_addr().unwrap();
    assert!(wait(&mut backend, &[readable(&socket, 1)], Duration::ZERO).is_empty());
    backend.forget(1);
    drop(socket);
    UdpSocket::bind(address).expect("the forgotten socket's port is free again");
}

/// A token moved to another fd watches the new fd only: the old fd's readiness does not leak.
fn changed_fd_for_a_token_watches_the_new_fd(mut backend: Backend) {
    let (old, old_peer) = UnixDatagram::pair().unwrap();
    let (new, new_peer) = UnixDatagram::pair().unwrap();
    assert!(wait(&mut backend, &[readable(&old, 1)], Duration::ZERO).is_empty());
    old_peer.send(b"x").unwrap();
    let out = wait(
        &mut backend,
        &[readable(&new, 1)],
        Duration::from_millis(100),
    );
    assert!(out.is_empty(), "{out:?}");
    new_peer.send(b"x").unwrap();
    assert_eq!(
        ready_tokens(&wait(&mut backend, &[readable(&new, 1)], PATIENCE)),
        [1]
    );
}

/// A peer that hung up is reported as hangup (with readable: the read returns 0).
fn hangup_is_reported(mut backend: Backend) {
    let (s, t) = UnixStream::pair().unwrap();
    drop(t);
    let out = wait(&mut backend, &[readable(&s, 3)], PATIENCE);
    assert_eq!(out.len(), 1, "{out:?}");
    let Completion::Ready {
        token: 3,
        readable: true,
        hangup: true,
        ..
    } = out[0]
    else {
        panic!("expected a readable hangup for token 3, got {:?}", out[0]);
    };
}

/// `write_durable` puts exactly `buf[..len]` at `offset`, returns the same buffer, and refuses a
/// second write while the first is in flight, handing that buffer back.
fn write_durable_writes_exactly_the_bytes(mut backend: Backend) {
    let path = TempPath::new();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path.0)
        .unwrap();
    let buf = bytes(b"helloXXX");
    let address = buf.as_ptr();
    backend
        .write_durable(file.as_raw_fd(), buf, 5, 4096)
        .unwrap();
    assert!(backend.write_in_flight());
    let refused = backend.write_durable(file.as_raw_fd(), bytes(b"second"), 6, 0);
    assert_eq!(&*refused.expect_err("a second write is refused"), b"second");

    let (buf, result) = wait_written(&mut backend);
    result.expect("the write succeeds");
    assert_eq!((buf.as_ptr(), &*buf), (address, &b"helloXXX"[..]));
    let on_disk = fs::read(&path.0).unwrap();
    assert_eq!(on_disk.len(), 4101);
    assert!(on_disk[..4096].iter().all(|&byte| byte == 0));
    assert_eq!(&on_disk[4096..], b"hello");
}

/// A write the OS refuses (the fd is read-only) comes back as an error in `result`, with the
/// buffer, and the backend takes the next write.
fn write_error_is_reported_in_the_result(mut backend: Backend) {
    let path = TempPath::new();
    File::create(&path.0).unwrap();
    let file = File::open(&path.0).unwrap();
    backend
        .write_durable(file.as_raw_fd(), bytes(&[7; 16]), 16, 0)
        .unwrap();
    let (buf, result) = wait_written(&mut backend);
    assert_eq!(&*buf, &[7; 16]);
    assert_eq!(
        result.expect_err("read-only fd").raw_os_error(),
        Some(libc::EBADF)
    );
    assert!(backend.write_durable(file.as_raw_fd(), buf, 0, 0).is_ok());
}

/// Forty ready fds are all reported, each once per call, under their own tokens.
fn many_interests_all_reported(mut backend: Backend) {
    let pairs: Vec<_> = (0..40).map(|_| UnixDatagram::pair().unwrap()).collect();
    let interests: Vec<_> = pairs
        .iter()
        .zip(100..)
        .map(|((x, _), t)| readable(x, t))
        .collect();
    for (_, y) in &pairs {
        y.send(b"x").unwrap();
    }
    let out = wait(&mut backend, &interests, PATIENCE);
    let expected: Vec<u64> = (100..140).collect();
    assert_eq!(ready_tokens(&out), expected);
}

/// `wait` appends only what fits in `out`; what did not fit is reported on the next call.
fn output_never_overfills(mut backend: Backend) {
    let pairs: Vec<_> = (0..10).map(|_| UnixDatagram::pair().unwrap()).collect();
    let interests: Vec<_> = pairs
        .iter()
        .zip(0..)
        .map(|((x, _), t)| readable(x, t))
        .collect();
    for (_, y) in &pairs {
        y.send(b"x").unwrap();
    }
    let mut out = Completions::new();
    let filler = || Completion::Ready {
        token: 999,
        readable: false,
        writable: false,
        hangup: false,
    };
    while out.len() < COMPLETIONS_MAX - 4 {
        out.push(filler()).unwrap();
    }
    backend.wait(&interests, PATIENCE, &mut out).unwrap();
    assert!(out.is_full());
    let first: Vec<u64> = ready_tokens(&out)
        .into_iter()
        .filter(|&t| t != 999)
        .collect();
    assert_eq!(first, [0, 1, 2, 3]);
    let rest = wait(&mut backend, &interests, PATIENCE);
    assert_eq!(ready_tokens(&rest), (0..10).collect::<Vec<u64>>());
}

/// More interests than `TOKENS_MAX`, or a token named twice, is the loop's bug: an error of
/// kind Other, not a panic, and the backend keeps working.
fn bad_interest_sets_are_errors(mut backend: Backend) {
    let (x, y) = UnixDatagram::pair().unwrap();
    let too_many: Vec<_> = (0..TOKENS_MAX as u64 + 1)
        .map(|t| readable(&x, t))
        .collect();
    let twice = [readable(&x, 1), readable(&y, 1)];
    for interests in [&too_many[..], &twice[..]] {
        let error = backend
            .wait(interests, Duration::ZERO, &mut Completions::new())
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Other);
    }
    y.send(b"x").unwrap();
    assert_eq!(
        ready_tokens(&wait(&mut backend, &[readable(&x, 1)], PATIENCE)),
        [1]
    );
}

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $test() { if let Some(b) = super::uring_backend() { super::$test(b) } } )*
        }
        mod poll {
            $( #[test] fn $test() { super::$test(super::backend(super::Choice::Poll)) } )*
        }
    };
}

both_backends!(
    readiness_reports_the_right_token,
    readiness_is_level_triggered,
    timeout_returns_empty_after_the_timeout,
    forget_then_close_reports_nothing,
    forget_releases_the_socket,
    changed_fd_for_a_token_watches_the_new_fd,
    hangup_is_reported,
    write_durable_writes_exactly_the_bytes,
    write_error_is_reported_in_the_result,
    many_interests_all_reported,
    output_never_overfills,
    bad_interest_sets_are_errors,
);

/// Auto picks io_uring where it works (as here) and gives a backend that does the job; where
/// io_uring does not work it must say why.
#[test]
fn auto_gives_a_working_backend() {
    let (backend, why) = Backend::new(Choice::Auto).unwrap();
    match Backend::new(Choice::Uring) {
        Ok(_) => assert_eq!((backend.name(), why.is_none()), ("io_uring", true)),
        Err(_) => assert_eq!((backend.name(), why.is_some()), ("poll", true)),
    }
    readiness_reports_the_right_token(backend);
}

/// A completion queue far smaller than one turn's completions overflows into the kernel's list;
/// every readiness and the write's completion still come back.
#[test]
fn uring_completion_overflow_loses_nothing() {
    if uring_backend().is_none() {
        return;
    }
    let ring = Uring::with_sizes(8, 8).expect("io_uring on this machine");
    let mut backend = Backend::Uring(ring);
    let pairs: Vec<_> = (0..40).map(|_| UnixDatagram::pair().unwrap()).collect();
    let interests: Vec<_> = pairs
        .iter()
        .zip(0..)
        .map(|((x, _), t)| readable(x, t))
        .collect();
    for (_, y) in &pairs {
        y.send(b"x").unwrap();
    }
    let path = TempPath::new();
    let file = File::create(&path.0).unwrap();
    backend
        .write_durable(file.as_raw_fd(), bytes(b"durable"), 7, 0)
        .unwrap();

    let (mut seen, mut written) = (BTreeSet::new(), None);
    let start = Instant::now();
    while (seen.len() < 40 || written.is_none()) && start.elapsed() < PATIENCE {
        for completion in wait(&mut backend, &interests, Duration::from_millis(100)) {
            match completion {
                Completion::Ready { token, .. } => _ = seen.insert(token),
                Completion::Written { result, .. } => written = Some(result),
            }
        }
    }
    assert_eq!(seen, (0..40).collect::<BTreeSet<u64>>());
    written
        .expect("the Written completion came back")
        .expect("the write succeeded");
    assert_eq!(fs::read(&path.0).unwrap(), b"durable");
    let Backend::Uring(ring) = &backend else {
        unreachable!()
    };
    assert!(
        ring.cq_overflows() > 0,
        "the test did not overflow the completion queue"
    );
}
