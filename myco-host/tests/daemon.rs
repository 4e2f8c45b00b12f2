//! `myco-d` as a process: deploys answered after they are durable and kept across SIGKILL, the
//! poll fallback when a seccomp filter blocks io_uring, a full disk, and start-up refusals.

use myco_core::crypto::SigningKey;
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::entry;
use myco_testkit::http::request;
use myco_testkit::keys::operator;
use myco_testkit::wait_until;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn deploys_are_acknowledged_durable_and_survive_sigkill() {
    let op = operator();
    let mut d = Daemon::new("durable", &op, 7);
    d.start(d.command(&["--reserve-bytes", "0"]));
    let web = entry(&op, "web", 10);
    let (status, body) = d.deploy(&web);
    assert_eq!(
        (status, body.contains("\"outcome\":\"applied\"")),
        (200, true),
        "{body}"
    );
    let (status, body) = d.deploy(&web);
    assert_eq!(
        (status, body.contains("\"outcome\":\"unchanged\"")),
        (200, true),
        "{body}"
    );
    // Refusals change nothing.
    assert_eq!(d.deploy(b"not an entry").0, 400);
    let foreign = SigningKey::from_seed([9; 32]).unwrap();
    assert_eq!(d.deploy(&entry(&foreign, "evil", 11)).0, 403);
    let mut forged = entry(&op, "forged", 12);
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(d.deploy(&forged).0, 403);
    let (_, services) = d.get("/services");
    assert!(
        services.contains("\"web\"") && !services.contains("evil") && !services.contains("forged"),
        "{services}"
    );
    // The acknowledged deploy is on disk: SIGKILL, restart, still there.
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    d.start(d.command(&["--reserve-bytes", "0"]));
    let (status, body) = d.get("/services/web");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"clock\":10"), "{body}");
    assert_eq!(d.get("/services/evil").0, 404);
}

/// A seccomp filter that makes io_uring_setup fail with EPERM, as container runtimes' default
/// profiles do.
fn block_io_uring() -> std::io::Result<()> {
    const RET_ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: RET_ERRNO_EPERM,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls in the forked child before exec; `program` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const _,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn falls_back_to_poll_when_seccomp_blocks_io_uring() {
    let op = operator();
    let mut d = Daemon::new("seccomp", &op, 8);
    let mut command = d.command(&["--reserve-bytes", "0"]);
    // SAFETY: the closure only makes async-signal-safe prctl calls.
    unsafe { command.pre_exec(block_io_uring) };
    d.start(command);
    let (_, health) = d.get("/health");
    assert!(health.contains("\"io\":\"poll\""), "{health}");
    assert_eq!(d.metric("myco_io_uring_fallback"), 1.0);
    assert_eq!(
        d.log().matches("io_uring is unavailable").count(),
        1,
        "said once: {}",
        d.log()
    );
    assert_eq!(
        d.deploy(&entry(&op, "web", 1)).0,
        200,
        "deploys work the same"
    );
    assert!(d.get("/services").1.contains("\"web\""));

    let mut plain = Daemon::new("uring", &op, 9);
    plain.start(plain.command(&["--reserve-bytes", "0"]));
    assert!(
        plain.get("/health").1.contains("\"io\":\"io_uring\""),
        "io_uring is used where it works"
    );
    assert_eq!(plain.metric("myco_io_uring_fallback"), 0.0);
}

/// Mounts a small tmpfs for the state directory; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, mib: u32) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros until the filesystem refuses.
fn fill(path: &std::path::Path) {
    let chunk = vec![0u8; 1 << 20];
    let mut file = fs::File::create(path).unwrap();
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
}

#[test]
fn a_full_disk_frees_the_reserve_and_the_wal_keeps_working() {
    let op = operator();
    let mut d = Daemon::new("diskfull", &op, 10);
    let _fs = Tmpfs::mount(&d.state, 80);
    d.start(d.command(&["--reserve-bytes", "8388608"]));
    assert!(d.get("/health").1.contains("\"reserve\":\"present\""));
    let filler = d.state.join("filler");
    fill(&filler);
    let (status, body) = d.deploy(&entry(&op, "web", 1));
    assert_eq!(
        status, 200,
        "the deploy is logged once the reserve is freed: {body}"
    );
    assert!(
        d.log().contains("freed the 8388608-byte reserve"),
        "{}",
        d.log()
    );
    assert!(d.get("/health").1.contains("\"reserve\":\"released\""));
    assert_eq!(d.metric("myco_reserve_releases_total"), 1.0);
    // Space returns: the reserve is made again.
    fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(20), "the reserve is back", || {
        d.get("/health").1.contains("\"reserve\":\"present\"")
    });
    assert_eq!(d.get("/services/web").0, 200);
}

#[test]
fn start_up_refusals_say_what_to_fix() {
    let op = operator();
    let d = Daemon::new("refusals", &op, 11);
    let out = Command::new(myco_testkit::bins::daemon())
        .arg("--listen")
        .arg("nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad command line is exit 2");
    let key = d.dir.path().join("node.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut first = Daemon::new("lock", &op, 12);
    first.start(first.command(&["--reserve-bytes", "0"]));
    // Same state directory, another socket.
    let socket = d.dir.path().join("other.sock").display().to_string();
    let first_socket = first.socket.display().to_string();
    let args = first
        .args
        .iter()
        .map(|a| if *a == first_socket { &socket } else { a });
    let out = Command::new(myco_testkit::bins::daemon())
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another myco-d uses the state directory"),
        "{out:?}"
    );
}

/// Caps the size of files the daemon may write (RLIMIT_FSIZE) and ignores SIGXFSZ, so a WAL write
/// past the cap fails with EFBIG instead of killing the process: a storage failure that is not a
/// full disk, which the daemon treats as fatal.
fn cap_file_size(bytes: u64) -> impl FnMut() -> std::io::Result<()> {
    move || {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit and signal in the forked child before exec; no allocation.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[test]
fn a_fatal_storage_error_leaves_the_flight_recorder_on_disk() {
    let op = operator();
    let mut d = Daemon::new("flight", &op, 13);
    let mut command = d.command(&["--reserve-bytes", "0"]);
    // SAFETY: the closure makes only async-signal-safe calls.
    unsafe { command.pre_exec(cap_file_size(64 * 1024)) };
    d.start(command);
    let mut deployed = 0;
    for i in 0..1000 {
        let name = format!("svc-{i:04}-{}", "x".repeat(40));
        match request(&d.socket, "POST", "/deploy", &entry(&op, &name, 1)) {
            Ok(answer) if answer.status == 200 => deployed += 1,
            _ => break,
        }
    }
    let status = d.child.as_mut().unwrap().wait().unwrap();
    assert!(
        !status.success(),
        "the daemon stops on a WAL write it cannot make"
    );
    assert!(
        deployed > 10,
        "deploys were acknowledged until the cap: {deployed}"
    );
    let recorder = fs::read_to_string(d.state.join("flight-recorder.log"))
        .expect("the panic hook wrote the recorder");
    assert!(
        recorder.contains("ready: node"),
        "the lines before the panic: {recorder}"
    );
    assert!(
        recorder.contains("fatal: the WAL write or fdatasync failed"),
        "the panic itself: {recorder}"
    );
}

/// The address a daemon listens on, from its own row in `/nodes`.
fn listen_addr(d: &Daemon) -> String {
    let (_, nodes) = d.get("/nodes");
    let at = nodes
        .find("\"address\":\"")
        .expect("the first row is this node")
        + 11;
    nodes[at..].split('"').next().unwrap().to_owned()
}

#[test]
fn a_restarted_node_finds_the_cluster_from_its_peers_file() {
    let op = operator();
    let mut a = Daemon::new("peers-a", &op, 14);
    a.start(a.command(&["--reserve-bytes", "0"]));
    let mut b = Daemon::new("peers-b", &op, 15);
    let a_addr = listen_addr(&a);
    b.start(b.command(&["--reserve-bytes", "0", "--join", &a_addr]));
    let alive = |d: &Daemon| d.get("/health").1.contains("\"peers_alive\":1");
    wait_until(
        Duration::from_secs(20),
        "the two nodes see each other",
        || alive(&a) && alive(&b),
    );
    wait_until(Duration::from_secs(10), "b remembers a", || {
        fs::read_to_string(b.state.join("peers")).is_ok_and(|p| p.lines().any(|l| l == a_addr))
    });
    b.child.as_mut().unwrap().kill().unwrap();
    b.child.as_mut().unwrap().wait().unwrap();
    // No --join this time: only the peers file can lead b back to a.
    b.start(b.command(&["--reserve-bytes", "0"]));
    wait_until(Duration::from_secs(20), "b is back in the cluster", || {
        alive(&b)
    });
    assert_eq!(a.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(10), "b has a's deploy", || {
        b.get("/services/web").0 == 200
    });
}
