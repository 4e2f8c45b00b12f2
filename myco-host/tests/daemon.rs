//! `myco-d` as a process: deploys answered after they are durable and kept across SIGKILL, the
//! poll fallback when a seccomp filter blocks io_uring, a full disk, and start-up refusals.

use myco_core::crypto::SigningKey;
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::entry;
use myco_testkit::http::request;
use myco_testkit::keys::operator;
use myco_testkit::tmpfs::{fill, Tmpfs};
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

#[test]
fn a_full_disk_frees_the_reserve_and_the_wal_keeps_working() {
    let op = operator();
    let mut d = Daemon::new("diskfull", &op, 10);
    let _fs = Tmpfs::mount(&d.state, 80 * 1024);
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
    let out = d.command(&["--profile", "cellular"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown profile is a bad command line"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not one of lan, wan, metered"),
        "{out:?}"
    );
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
    a_refused_start_writes_nothing(&op);
}

/// A start refused for what can be checked without writing (a missing socket directory, a
/// certificate from another operator) says so in words and leaves no state directory or WAL.
fn a_refused_start_writes_nothing(op: &SigningKey) {
    let d = Daemon::new("nothing-written", op, 13);
    let socket = d.socket.display().to_string();
    let missing = d.dir.path().join("missing").join("api.sock");
    let missing = missing.display().to_string();
    let args = d
        .args
        .iter()
        .map(|a| if *a == socket { &missing } else { a });
    let out = Command::new(myco_testkit::bins::daemon())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist; create it"), "{stderr}");
    assert!(!d.state.exists(), "the state directory was made: {stderr}");
    // The same node key, certified by an operator this cluster does not trust.
    let other = Daemon::new("other-operator", &myco_testkit::keys::key("other"), 13);
    let other_cert = other.dir.path().join("node.cert").display().to_string();
    let cert = d.dir.path().join("node.cert").display().to_string();
    let args = d
        .args
        .iter()
        .map(|a| if *a == cert { &other_cert } else { a });
    let out = Command::new(myco_testkit::bins::daemon())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is refused: certificate was issued by a key this cluster does not trust"),
        "{stderr}"
    );
    assert!(!stderr.contains("Cert("), "{stderr}");
    assert!(!d.state.exists(), "the state directory was made: {stderr}");
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

#[test]
fn a_restarted_node_finds_the_cluster_from_its_peers_file() {
    let op = operator();
    let mut a = Daemon::new("peers-a", &op, 14);
    a.start(a.command(&["--reserve-bytes", "0"]));
    let mut b = Daemon::new("peers-b", &op, 15);
    let a_addr = a.listen_addr();
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

/// Services in the full-disk gossip test: their entries pass the WAL's 256 KiB batch, and fit the
/// store's 320 KiB arena.
const LARGE_ENTRIES: usize = 380;

/// Service `big-NNNN` at operator clock `clock`: an entry of about 770 bytes (twelve long
/// arguments), so that `LARGE_ENTRIES` of them pass the WAL's batch.
fn large_entry(op: &SigningKey, i: usize, clock: u64) -> Vec<u8> {
    use myco_core::schema::entry::{EntryBody, ServiceSpec, Source};
    let name = format!("big-{i:04}");
    let args: Vec<String> = (0..12)
        .map(|a| format!("--arg-{a:02}={}", "v".repeat(40)))
        .collect();
    let mut spec = ServiceSpec::minimal(Source::Exec {
        path: myco_testkit::entries::TRUE_PATH,
    });
    for arg in &args {
        spec.args.push(arg.as_str()).expect("twelve arguments fit");
    }
    let body = EntryBody {
        name: &name,
        version: myco_testkit::entries::version(op, clock),
        spec: Some(spec),
    };
    myco_testkit::entries::signed(op, &body)
}

/// Deploys every large entry at `clock` to `d`.
fn deploy_large(d: &Daemon, op: &SigningKey, clock: u64) {
    for i in 0..LARGE_ENTRIES {
        let (status, body) = d.deploy(&large_entry(op, i, clock));
        assert_eq!(status, 200, "deploy {i} at {clock}: {body}");
    }
}

/// The `state_hash` field of a daemon's `/health`.
fn state_hash(d: &Daemon) -> String {
    let (_, health) = d.get("/health");
    let at = health
        .find("\"state_hash\":\"")
        .expect("/health has state_hash")
        + 14;
    health[at..].split('"').next().unwrap().to_owned()
}

/// What `dig` prints for a name outside `*.myco` asked of the daemon's DNS on `port`: REFUSED
/// when it answers, a timeout when it does not.
fn dig_refused(port: u16) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(["example.com", "A"])
        .output()
        .expect("dig runs (make tools installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test at once, with its log, if the daemon has stopped.
#[track_caller]
fn assert_running(d: &mut Daemon) {
    let exited = d.child.as_mut().unwrap().try_wait().unwrap();
    assert!(exited.is_none(), "myco-d stopped ({exited:?}): {}", d.log());
}

/// Fault 1 of the full-disk faults: with the state directory's disk full from the start, gossip
/// that brings more entries than two WAL batches hold (every service, then a new version of each)
/// does not stop the daemon. It keeps them in memory and answers reads and DNS, refuses deploys
/// (507), says `/health` is degraded, reports the reserve it had no room for as deferred (nothing
/// was released), and counts and logs one disk-full episode however many times it retries. Once
/// space returns it stores everything it holds, so that a restart without its peer still has it.
#[test]
fn a_full_disk_never_stops_the_daemon_and_loses_nothing() {
    let op = operator();
    let mut a = Daemon::new("fullgossip-a", &op, 16);
    a.start(a.command(&["--reserve-bytes", "0"]));
    deploy_large(&a, &op, 1);
    a.child.as_mut().unwrap().kill().unwrap();
    a.child.as_mut().unwrap().wait().unwrap();
    let mut b = Daemon::new("fullgossip-b", &op, 17);
    let _fs = Tmpfs::mount(&b.state, 4096);
    let filler = b.state.join("filler");
    fill(&filler);
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let dns = format!("127.0.0.1:{dns_port}");
    b.start(b.command(&["--reserve-bytes", "1048576", "--dns", &dns]));
    a.start(a.command(&["--reserve-bytes", "0", "--join", &b.listen_addr()]));
    let all = format!("\"services\":{LARGE_ENTRIES}");
    wait_until(Duration::from_secs(60), "b holds every entry", || {
        assert_running(&mut b);
        b.get("/health").1.contains(&all)
    });
    deploy_large(&a, &op, 2);
    let expected = state_hash(&a);
    wait_until(Duration::from_secs(60), "b holds every new version", || {
        assert_running(&mut b);
        state_hash(&b) == expected
    });
    assert!(
        b.metric("myco_wal_unlogged_total") > 0.0,
        "both batches filled"
    );
    // The parked batch is written again once a second: at least two retries.
    std::thread::sleep(Duration::from_secs(3));
    let (status, health) = b.get("/health");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"wal\":\"failing\""), "{health}");
    assert!(health.contains("\"reserve\":\"deferred\""), "{health}");
    assert_eq!(b.get("/services/big-0000").0, 200, "reads go on");
    let answer = dig_refused(dns_port);
    assert!(answer.contains("status: REFUSED"), "DNS answers: {answer}");
    assert_eq!(b.deploy(&entry(&op, "web", 1)).0, 507);
    assert_eq!(b.metric("myco_wal_disk_full_total"), 1.0, "one episode");
    let log = b.log();
    let said = log.matches("disk full and no reserve left").count();
    assert_eq!(said, 1, "{log}");
    fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(30), "b stores what it holds", || {
        b.get("/health").0 == 200 && b.metric("myco_checkpoints_total") >= 1.0
    });
    assert_eq!(b.log().matches("the disk has room again").count(), 1);
    // Alone, from its own disk only.
    drop(a);
    b.child.as_mut().unwrap().kill().unwrap();
    b.child.as_mut().unwrap().wait().unwrap();
    b.start(b.command(&["--reserve-bytes", "1048576"]));
    assert_eq!(state_hash(&b), expected);
}

/// Fault 4 of the full-disk faults: a deploy in flight when the disk fills is answered 507 by the
/// daemon once its deadline passes, while `myco deploy` still waits, so the operator reads the
/// daemon's reason (exit 1) instead of exit 3 "did not answer".
#[test]
fn a_deploy_in_flight_when_the_disk_fills_gets_the_daemons_507() {
    let op = operator();
    let mut d = Daemon::new("inflight", &op, 18);
    let _fs = Tmpfs::mount(&d.state, 4096);
    d.start(d.command(&["--reserve-bytes", "0"]));
    fill(&d.state.join("filler"));
    let entry_file = d.dir.write("web.entry", entry(&op, "web", 1));
    let out = Command::new(myco_testkit::bins::cli())
        .arg("deploy")
        .arg("--entry")
        .arg(&entry_file)
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("507"), "{stderr}");
    assert!(
        stderr.contains("did not make the deploy durable"),
        "{stderr}"
    );
}

/// Fault 6 of the full-disk faults, at start: a reserve the disk has no room for (with the
/// margin) is reported `deferred` on `/health` with the reason, and the log says so.
#[test]
fn a_reserve_without_room_is_deferred_and_says_why() {
    let op = operator();
    let mut d = Daemon::new("deferred", &op, 19);
    d.start(d.command(&["--reserve-bytes", "1000000000000000000"]));
    let (_, health) = d.get("/health");
    assert!(health.contains("\"reserve\":\"deferred\""), "{health}");
    assert!(
        health.contains("\"reserve_why\":\"only ") && health.contains("bytes are free"),
        "{health}"
    );
    assert!(d.log().contains("bytes deferred: only "), "{}", d.log());
    assert!(!d.state.join("reserve").exists());
    let status = Command::new(myco_testkit::bins::cli())
        .arg("status")
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let why = text.lines().find(|l| l.starts_with("reserve_why"));
    assert!(
        why.is_some_and(|l| l.contains(" only ")),
        "myco status says why: {text}"
    );
}

/// Fault 6 of the full-disk faults: `--reserve-bytes 0` deletes a reserve an earlier run left,
/// and a start that fails leaves no reserve behind.
#[test]
fn no_reserve_is_left_by_size_zero_or_a_failed_start() {
    let op = operator();
    let mut d = Daemon::new("reserve-zero", &op, 20);
    d.start(d.command(&["--reserve-bytes", "1048576"]));
    assert!(d.get("/health").1.contains("\"reserve\":\"present\""));
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    d.start(d.command(&["--reserve-bytes", "0"]));
    assert!(d.get("/health").1.contains("\"reserve\":\"disabled\""));
    assert!(!d.state.join("reserve").exists(), "{}", d.log());
    assert!(d
        .log()
        .contains("deleted the 1048576-byte reserve an earlier run left"));

    let failed = Daemon::new("reserve-failed", &op, 21);
    // A revocation above the node's certificate: the start fails on it after the state directory
    // is set up and the WAL replayed (what can be refused earlier is, and writes nothing).
    let mut revocation = [0u8; myco_core::config::REVOCATION_BYTES_MAX];
    let n = myco_core::crypto::revocation::encode_revocation(&op, 5, &mut revocation);
    let revocation_file = failed.dir.path().join("revocation-5");
    fs::write(&revocation_file, &revocation[..n]).unwrap();
    let out = failed
        .command(&["--reserve-bytes", "1048576", "--revocation"])
        .arg(&revocation_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("below the RevocationBlock 5"),
        "{out:?}"
    );
    assert!(
        failed.state.is_dir(),
        "the start got as far as the state directory"
    );
    assert!(!failed.state.join("reserve").exists(), "{out:?}");
}
