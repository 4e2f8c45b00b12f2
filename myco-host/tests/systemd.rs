//! The sd_notify(3) client against real datagram sockets standing in for systemd's: a path and an
//! abstract name, the environment read in a child process (so that no test here races another on
//! `NOTIFY_SOCKET`), failures returned rather than panicked on, a full queue that does not block
//! the caller, and sending that does not allocate.

use myco_host::systemd::{self, Notifier, NOTIFY_MESSAGE_BYTES_MAX};
use myco_testkit::alloc::{allocations, CountingAllocator};
use myco_testkit::TempDir;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Allocations are counted per thread, so tests running in parallel do not see each other's.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The socket systemd would listen on, with a short timeout so a missing datagram fails the test
/// instead of hanging it.
fn manager_socket(dir: &TempDir) -> (UnixDatagram, PathBuf) {
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (socket, path)
}

/// A name in the abstract namespace that no other test or process uses.
fn abstract_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "myco-test-notify-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; NOTIFY_MESSAGE_BYTES_MAX + 1];
    let length = socket.recv(&mut buffer).unwrap();
    assert!(length <= NOTIFY_MESSAGE_BYTES_MAX);
    String::from_utf8(buffer[..length].to_vec()).unwrap()
}

/// Every message arrives as one datagram with exactly the sd_notify lines.
#[test]
fn notifications_reach_a_path_socket() {
    let dir = TempDir::new("notify-path");
    let (manager, path) = manager_socket(&dir);
    let notifier = Notifier::new(path.as_os_str()).unwrap();
    assert!(notifier.is_enabled());

    notifier.ready(Some("replayed 12 entries")).unwrap();
    assert_eq!(receive(&manager), "READY=1\nSTATUS=replayed 12 entries\n");
    notifier.ready(None).unwrap();
    assert_eq!(receive(&manager), "READY=1\n");
    notifier.status("3 peers").unwrap();
    assert_eq!(receive(&manager), "STATUS=3 peers\n");
    notifier.watchdog().unwrap();
    assert_eq!(receive(&manager), "WATCHDOG=1\n");
    notifier.stopping().unwrap();
    assert_eq!(receive(&manager), "STOPPING=1\n");
}

/// `@name` addresses the abstract namespace, as systemd does for some managers (and user units).
#[test]
fn notifications_reach_an_abstract_socket() {
    let name = abstract_name();
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let manager = UnixDatagram::bind_addr(&address).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
    notifier.watchdog().unwrap();
    assert_eq!(receive(&manager), "WATCHDOG=1\n");
    notifier.ready(Some("up")).unwrap();
    assert_eq!(receive(&manager), "READY=1\nSTATUS=up\n");
}

/// A manager that went away is an error for the caller to log, not a panic.
#[test]
fn a_missing_socket_is_an_error() {
    let dir = TempDir::new("notify-missing");
    let notifier = Notifier::new(dir.path().join("absent").as_os_str()).unwrap();
    let error = notifier.watchdog().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);

    let notifier = Notifier::new(OsStr::new(&format!("@{}", abstract_name()))).unwrap();
    let error = notifier.ready(None).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
}

/// When the manager does not read, the single-threaded loop gets WouldBlock instead of stalling.
#[test]
fn a_full_queue_does_not_block() {
    let dir = TempDir::new("notify-full");
    let (_manager, path) = manager_socket(&dir);
    let notifier = Notifier::new(path.as_os_str()).unwrap();
    let mut sent = 0u32;
    let error = loop {
        match notifier.watchdog() {
            Ok(()) => sent += 1,
            Err(error) => break error,
        }
        assert!(sent < 1_000_000, "the receive queue never filled");
    };
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    assert!(sent > 0);
}

/// After `new`, sending formats on the stack: the event loop can pet the watchdog forever without
/// touching the heap.
#[test]
fn sending_does_not_allocate() {
    let dir = TempDir::new("notify-alloc");
    let (manager, path) = manager_socket(&dir);
    let notifier = Notifier::new(path.as_os_str()).unwrap();
    let status = "x".repeat(2 * NOTIFY_MESSAGE_BYTES_MAX);

    // Seven datagrams: fewer than the kernel queues for an unread socket by default
    // (net.unix.max_dgram_qlen = 10), so none is refused.
    let before = allocations();
    for _ in 0..2 {
        notifier.watchdog().unwrap();
        notifier.ready(Some(&status)).unwrap();
        notifier.status("running").unwrap();
    }
    notifier.stopping().unwrap();
    let after = allocations();
    assert_eq!(after, before, "sending allocated {} times", after - before);

    // The messages were really sent, so the count above covers the whole send path.
    for _ in 0..2 {
        assert_eq!(receive(&manager), "WATCHDOG=1\n");
        assert_eq!(receive(&manager).len(), NOTIFY_MESSAGE_BYTES_MAX);
        assert_eq!(receive(&manager), "STATUS=running\n");
    }
    assert_eq!(receive(&manager), "STOPPING=1\n");
}

const CHILD_TEST: &str = "environment_child";

/// `from_env`, `watchdog_interval` and the directory helpers read what systemd sets. They run in
/// a child process with its own environment, because changing this process's environment would
/// race the other tests.
#[test]
fn environment_is_read_in_a_child() {
    let dir = TempDir::new("notify-env");
    let (manager, path) = manager_socket(&dir);
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "20000000")
        .env_remove("WATCHDOG_PID")
        .env("CREDENTIALS_DIRECTORY", "/run/credentials/myco-d.service")
        .env("STATE_DIRECTORY", "/var/lib/myco:/var/lib/other")
        .env("RUNTIME_DIRECTORY", "/run/myco")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    // An exact filter that matched nothing would pass too; make sure the child test ran.
    assert!(
        stdout.contains(&format!("test {CHILD_TEST} ... ok")),
        "child test did not run:\n{stdout}"
    );
    assert_eq!(receive(&manager), "READY=1\nSTATUS=from the environment\n");
}

/// Run only by `environment_is_read_in_a_child`, with the variables it sets.
#[test]
#[ignore = "run by environment_is_read_in_a_child in a child process with its own environment"]
fn environment_child() {
    let notifier = Notifier::from_env().unwrap();
    assert!(notifier.is_enabled());
    notifier.ready(Some("from the environment")).unwrap();
    assert_eq!(systemd::watchdog_interval(), Some(Duration::from_secs(10)));
    assert_eq!(
        systemd::credentials_dir(),
        Some(PathBuf::from("/run/credentials/myco-d.service"))
    );
    assert_eq!(systemd::state_dir(), Some(PathBuf::from("/var/lib/myco")));
    assert_eq!(systemd::runtime_dir(), Some(PathBuf::from("/run/myco")));
}

/// Outside systemd, with none of the variables set, nothing is sent and nothing fails.
#[test]
fn empty_environment_disables_everything() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "empty_environment_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed:\n{stdout}");
    assert!(
        stdout.contains("test empty_environment_child ... ok"),
        "{stdout}"
    );
}

#[test]
#[ignore = "run by empty_environment_disables_everything in a child process with no environment"]
fn empty_environment_child() {
    let notifier = Notifier::from_env().unwrap();
    assert!(!notifier.is_enabled());
    notifier.ready(Some("nobody listens")).unwrap();
    notifier.watchdog().unwrap();
    assert_eq!(systemd::watchdog_interval(), None);
    assert_eq!(systemd::credentials_dir(), None);
    assert_eq!(systemd::state_dir(), None);
    assert_eq!(systemd::runtime_dir(), None);
}
