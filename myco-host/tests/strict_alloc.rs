//! Proves that a running `myco-d` allocates nothing after ready: a daemon under `--strict-alloc`
//! (where the first heap allocation after ready aborts it with the allocation's size and return
//! addresses) is driven through every path a test on loopback can reach, and must still be alive
//! at the end with `myco_heap_allocations_since_ready_total` at 0. If it died, the test prints
//! its log, which holds the report; `addr2line -f -C -i -e target/debug/myco-d OFFSETS` names the
//! frames.
//!
//! The paths: hundreds of deploys and removals of exec and flake services (units written and
//! removed through the stand-in `systemctl`, health sweeps, a unit that keeps failing, builds that
//! succeed and fail through a stand-in `nix`, GC roots pruned, a garbage collection), health
//! checks (HTTP against a server that turns to 500 and back, TCP refused, an exec check through
//! the stand-in `systemd-run`: unhealthy units restarted, healthy again), checkpoints
//! (a small `--wal-checkpoint-bytes`), a second daemon joining, dying and returning with a
//! revocation that the first takes from gossip and keeps (the peers file rewritten), `/stream`
//! subscribers coming and going, `/logs` and `/audit` followed and not, DNS over UDP and TCP,
//! every endpoint and the API's refusals, the binary cache (its closure table read again when a
//! root is added, narinfos signed, NARs streamed whole and cut off, keep-alive, every refusal and
//! the 503 beyond its slots; with the real `nix-store` where Nix is installed), and the stop on
//! SIGTERM. A second daemon, without the
//! executor and on the poll(2) loop, takes a thousand services and their removals, lists them in
//! chunks, and keeps answering under slow API and DNS clients.
//!
//! Both also check the heap against its ceiling (`myco_host::budget::HEAP_BYTES_MAX`, 64 KiB):
//! every table and buffer lives in the static arena, so the heap holds only what start-up kept
//! (a few KiB), and with no allocation after ready it never grows past that.
//!
//! A third test, for root only (it mounts a tmpfs), fills and empties the disk under the strict
//! mode.
//!
//! Not driven here: a `systemctl` that hangs and is killed (`systemctl_timeout.rs` drives the
//! executor through it with its clock, counting allocations); the audit log's rotation at 1 MiB
//! (`audit_alloc.rs` drives it directly); and the refusal 409 (key hashes that collide).

use myco_core::config::REVOCATION_BYTES_MAX;
use myco_core::crypto::cert::certify;
use myco_core::crypto::revocation::encode_revocation;
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;
use myco_core::schema::entry::{Check, Health};
use myco_host::budget::HEAP_BYTES_MAX;
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::TRUE_PATH;
use myco_testkit::entries::{checked_entry, entry, entry_with_port, flake_entry, tombstone};
use myco_testkit::http::{raw_request, request, status_server};
use myco_testkit::keys::operator;
use myco_testkit::tmpfs::{fill, Tmpfs};
use myco_testkit::trickle::Tricklers;
use myco_testkit::{wait_exit, wait_until};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Deploy-and-remove rounds; each round deploys and removes several services.
const ROUNDS: u64 = 60;

/// A stand-in `nix build`: makes the `--out-link` GC root and prints one output, as Nix does,
/// unless the flake reference names `broken`, which fails like a fetch that went wrong. Asked
/// for its configuration, it is a Nix with build users.
const NIX_STAND_IN: &str = r#"#!/bin/sh
case "$*" in *show-config*) echo 'build-users-group = nixbld'; exit 0 ;; esac
for arg; do uri="$arg"; done
case "$uri" in *broken*) echo "error: cannot fetch $uri" >&2; exit 1 ;; esac
while [ $# -gt 0 ]; do [ "$1" = --out-link ] && link="$2"; shift; done
out=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app
ln -sfn "$out" "$link"
printf '[{"drvPath":"%s.drv","outputs":{"out":"%s"}}]\n' "$out" "$out"
"#;

/// A stand-in `systemctl`: the kit's, except that units named `crash*` are failed and have
/// restarted many times, so the executor sees a crash loop.
const SYSTEMCTL_STAND_IN: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
if [ "$1" = show ]; then
    shift
    for arg in "$@"; do
        case "$arg" in
        -*) ;;
        myco-crash*) printf 'Id=%s\nActiveState=failed\nSubState=failed\nNRestarts=9\n\n' "$arg" ;;
        *) printf 'Id=%s\nActiveState=active\nSubState=running\nNRestarts=0\n\n' "$arg" ;;
        esac
    done
fi
exit 0
"#;

/// The rev every flake entry of the test locks.
const REV: &str = "152b279ae9728ebd2a539847576be4e2e8a2f101";

fn executable(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.dir.write(name, text);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn free_port() -> u16 {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("a free port");
    udp.local_addr().expect("bound").port()
}

/// Starts `d` with the executor, the stand-ins, DNS on `dns_port` and `--strict-alloc`.
fn start_strict(d: &mut Daemon, dns_port: u16, extra: &[&str]) {
    let nix = executable(d, "nix", NIX_STAND_IN);
    let collector = executable(
        d,
        "nix-collect-garbage",
        "#!/bin/sh\necho '3 store paths deleted, 2.00 MiB freed'\n",
    );
    let usage = d.dir.write("usage", "900\n").display().to_string();
    let dns = format!("127.0.0.1:{dns_port}");
    let mut args = vec![
        "--strict-alloc",
        "--wal-checkpoint-bytes",
        "16384",
        "--dns",
        &dns,
        "--nix",
        &nix,
        "--nix-collect-garbage",
        &collector,
        "--store-usage-file",
        &usage,
    ];
    args.extend_from_slice(extra);
    let command = d.executor_command(&args);
    // After `executor_command`, which writes the kit's stand-in: this one replaces it.
    executable(d, "systemctl", SYSTEMCTL_STAND_IN);
    d.start(command);
}

/// Sends `request` on a new connection to the binary cache and reads until it closes (or
/// `most` bytes arrived): the status.
fn cache_request(port: u16, request: &[u8], most: usize) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the cache accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("sent");
    let mut answer = Vec::new();
    let _ = (&mut s).take(most as u64).read_to_end(&mut answer);
    let status = answer.get(9..12).and_then(|c| std::str::from_utf8(c).ok());
    status.and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// `cache_request`, asked again while the answer is 503, for at most 2 s: while the closure
/// table is read again (the executor's builds change the GC roots as this runs) a path not read
/// yet is 503, which Nix retries (docs/nix.md).
fn answered(port: u16, request: &[u8], most: usize) -> u16 {
    for _ in 0..40 {
        let status = cache_request(port, request, most);
        if status != 503 {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    503
}

/// The binary cache's paths: a real store path rooted as a built version's (where Nix is
/// installed) served as narinfo and NAR, whole, cut off and over keep-alive; every refusal; the
/// 503 beyond the slots.
fn binary_cache(d: &Daemon) {
    let port = d.cache_port().expect("the log names the cache's port");
    let payload = d.dir.write("payload.bin", vec![7u8; 300_000]);
    let added = std::process::Command::new("nix-store")
        .arg("--add")
        .arg(&payload)
        .output();
    let hash = match added {
        Ok(out) if out.status.success() => {
            let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            let root = d.state.join("gcroots/cachetest-aaaaaaaaaaaa");
            std::os::unix::fs::symlink(&path, root).expect("rooted");
            wait_until(Duration::from_secs(10), "the cache serves the root", || {
                d.log().contains("binary cache: serving 1 store paths")
            });
            path["/nix/store/".len()..][..32].to_owned()
        }
        _ => {
            println!("SKIPPED (in part): nix-store is not installed; the cache serves nothing");
            "0123456789abcdfghijklmnpqrsvwxyz".to_owned()
        }
    };
    let found = if hash.starts_with("0123") { 404 } else { 200 };
    let close = "HTTP/1.1\r\nConnection: close\r\n\r\n";
    for _ in 0..10 {
        let narinfo = format!("GET /{hash}.narinfo {close}");
        assert_eq!(answered(port, narinfo.as_bytes(), usize::MAX), found);
        let head = format!("HEAD /{hash}.narinfo {close}");
        assert_eq!(answered(port, head.as_bytes(), usize::MAX), found);
        let nar = format!("GET /nar/{hash}.nar {close}");
        assert_eq!(answered(port, nar.as_bytes(), usize::MAX), found);
        // Gone after the first bytes: the slot and its nix-store are let go.
        assert_eq!(answered(port, nar.as_bytes(), 1000), found);
    }
    let two = format!("GET /nix-cache-info HTTP/1.1\r\n\r\nGET /{hash}.narinfo {close}");
    assert_eq!(
        cache_request(port, b"GET /nix-cache-info HTTP/1.1\r\n\r\n", 60),
        200
    );
    assert_eq!(answered(port, two.as_bytes(), usize::MAX), 200);
    let unknown = format!("GET /nar/{}.nar {close}", "1".repeat(32));
    assert_eq!(answered(port, unknown.as_bytes(), usize::MAX), 404);
    let refusals: [(&[u8], u16); 4] = [
        (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", 400),
        (b"DELETE /nix-cache-info HTTP/1.1\r\n\r\n", 405),
        (b"GET /nix-cache-info HTTP/2\r\n\r\n", 505),
        (&[b'x'; 5000], 431),
    ];
    for (request, status) in refusals {
        assert_eq!(cache_request(port, request, usize::MAX), status);
    }
    let slots = myco_host::daemon::cache::CACHE_SLOTS;
    let partial = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("accepted");
        s.write_all(b"GET /nix").expect("sent");
        s
    };
    let mut held: Vec<TcpStream> = (0..slots).map(|_| partial()).collect();
    // Every slot holds a half-sent request: one more client is 503. A held client whose bytes
    // the loop has not read yet looks idle and gives way to it (then it is answered and
    // closed): on a loaded machine that takes another held client and another try.
    let info = format!("GET /nix-cache-info {close}");
    let mut got = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1000));
        got = cache_request(port, info.as_bytes(), usize::MAX);
        if got == 503 {
            break;
        }
        held.push(partial());
    }
    assert_eq!(got, 503);
    drop(held);
}

/// Certificates issued at this height, so that a revocation below it revokes nobody here.
const ISSUED_AT: u64 = 3;

/// Replaces the kit's certificate of `d` (issued at 0) by one issued at `ISSUED_AT`.
fn certify_at(d: &Daemon, op: &SigningKey, node_seed: u8) {
    let node = SigningKey::from_seed([node_seed; 32]).expect("a non-zero seed");
    let cert = certify(op, &node.public_key(), 0, Arch::Any, false, ISSUED_AT);
    fs::write(d.dir.join("node.cert"), cert).expect("written");
}

#[test]
fn nothing_allocates_after_ready() {
    let op = operator();
    let mut a = Daemon::new("strict-a", &op, 61);
    certify_at(&a, &op, 61);
    let dns_port = free_port();
    a.set_cache_listen("127.0.0.1:0");
    start_strict(&mut a, dns_port, &[]);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        deploys_and_removals(&a, &op);
        binary_cache(&a);
        health_checks(&a, &op);
        api_endpoints_and_refusals(&a);
        streams_come_and_go(&a);
        logs_and_audit(&a);
        dns(dns_port);
        membership_churn(&a, &op);
    }));
    assert_alive(&mut a, outcome.is_ok());
    // For docs/benchmarks.md, not judged: how much of each path ran.
    for series in [
        "myco_api_requests_total",
        "myco_builds_total",
        "myco_build_failures_total",
        "myco_units_written_total",
        "myco_units_removed_total",
        "myco_health_checks_total",
        "myco_health_restarts_total",
        "myco_checkpoints_total",
        "myco_events_next_id",
    ] {
        println!("{series}={}", a.metric(series));
    }
    assert!(
        a.metric("myco_checkpoints_total") >= 1.0,
        "no checkpoint ran"
    );
    assert!(a.metric("myco_builds_total") >= 1.0, "no build ran");
    assert!(
        a.metric("myco_build_failures_total") >= 1.0,
        "no build failed"
    );
    assert!(
        a.metric("myco_units_removed_total") >= 1.0,
        "no unit removed"
    );
    assert!(a.metric("myco_gc_runs_total") >= 1.0, "no collection ran");
    assert_eq!(a.metric("myco_revocation_block"), (ISSUED_AT - 1) as f64);
    assert!(
        a.state.join("revocation").exists(),
        "the revocation is kept"
    );
    stop_cleanly(&mut a);
}

/// A thousand services deployed, listed (in chunks: the list outgrows the answer buffer) and
/// removed, checkpoints among them, while slow clients hold the API's and DNS's connections.
#[test]
fn a_thousand_services_and_slow_clients_allocate_nothing() {
    let op = operator();
    let mut d = Daemon::new("strict-many", &op, 63);
    let dns_port = free_port();
    let dns = format!("127.0.0.1:{dns_port}");
    d.start(d.command(&[
        "--strict-alloc",
        "--io",
        "poll",
        "--reserve-bytes",
        "0",
        "--wal-checkpoint-bytes",
        "65536",
        "--request-timeout-ms",
        "300",
        "--dns",
        &dns,
    ]));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let names: Vec<String> = (0..1000).map(|i| format!("s{i:04}")).collect();
        // Flake references as long as locked ones get, so that the list passes the buffer.
        let uri = format!(
            "git+https://git.example.com/fleet/{}?ref=main&rev={REV}",
            "x".repeat(20)
        );
        for name in &names {
            let e = flake_entry(&op, name, 1, (&uri, "packages.x86_64-linux.default", REV));
            assert_eq!(d.deploy(&e).0, 200, "{name}");
        }
        let listed = request(&d.socket, "GET", "/services", b"").expect("the API answers");
        assert_eq!(listed.header("transfer-encoding"), Some("chunked"));
        assert_eq!(listed.body.matches("\"name\":").count(), 1000);
        slow_clients(&d, dns_port);
        for name in &names {
            assert_eq!(d.deploy(&tombstone(&op, name, 2)).0, 200, "{name}");
        }
        assert!(d.metric("myco_checkpoints_total") >= 2.0, "no checkpoints");
    }));
    assert_alive(&mut d, outcome.is_ok());
    stop_cleanly(&mut d);
}

/// Root only (it mounts a tmpfs; `ROOT_TESTS` in the Makefile): the disk filling and emptying
/// under the strict mode. The reserve is freed for a deploy; with the disk full again, deploys
/// are refused (507), gossip from a peer is held but cannot be logged and its batch is retried,
/// reads and `/health` go on; once space returns everything is stored and the reserve is back.
#[test]
fn a_full_disk_allocates_nothing() {
    let op = operator();
    let mut d = Daemon::new("strict-full", &op, 64);
    let _fs = Tmpfs::mount(&d.state, 80 * 1024);
    d.start(d.command(&[
        "--strict-alloc",
        "--reserve-bytes",
        "8388608",
        "--wal-checkpoint-bytes",
        "16384",
    ]));
    let mut peer = Daemon::new("strict-full-peer", &op, 65);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let filler = d.state.join("filler");
        fill(&filler);
        assert_eq!(
            d.deploy(&entry(&op, "web", 1)).0,
            200,
            "the reserve is freed"
        );
        fill(&d.state.join("filler-2"));
        // The log's last page may still take a few records; the deploy in flight when the write
        // fails is answered 507 at the daemon's 30 s deadline (the page's slack may then take a
        // later, smaller batch, so the next one is not sure to be refused).
        let refused = (2..400).any(|clock| d.deploy(&entry(&op, "web", clock)).0 == 507);
        assert!(refused, "a deploy is refused once the disk is full");
        peer.start(peer.command(&["--reserve-bytes", "0", "--join", &d.listen_addr()]));
        for i in 0..200 {
            assert_eq!(peer.deploy(&entry(&op, &format!("g{i:03}"), 1)).0, 200);
        }
        wait_until(
            Duration::from_secs(60),
            "the full box holds the gossip",
            || d.get("/health").1.contains("\"services\":201"),
        );
        wait_until(
            Duration::from_secs(10),
            "degraded while the disk is full",
            || d.get("/health").0 == 503,
        );
        assert_eq!(d.get("/services/g199").0, 200);
        fs::remove_file(&filler).expect("removed");
        fs::remove_file(d.state.join("filler-2")).expect("removed");
        wait_until(
            Duration::from_secs(60),
            "stored and the reserve back",
            || {
                let (status, health) = d.get("/health");
                status == 200 && health.contains("\"reserve\":\"present\"")
            },
        );
        assert_eq!(d.deploy(&entry(&op, "web", 1_000)).0, 200);
    }));
    assert_alive(&mut d, outcome.is_ok());
    stop_cleanly(&mut d);
}

/// Panics with the daemon's log (which holds a strict-mode report) unless the phases passed, it
/// still runs, and it counts no allocation after ready.
fn assert_alive(d: &mut Daemon, phases_passed: bool) {
    let ended = d.child.as_mut().expect("started").try_wait().expect("wait");
    if !phases_passed || ended.is_some() {
        panic!(
            "myco-d --strict-alloc ended {ended:?}; its log:\n{}",
            d.log()
        );
    }
    let after_ready = d.metric("myco_heap_allocations_since_ready_total");
    assert_eq!(after_ready, 0.0, "{}", d.log());
    // With nothing allocated after ready, the heap never passes what start-up kept, which the
    // budget bounds: a large buffer (an answer, a WAL batch) on the heap instead of in the arena
    // fails here.
    let heap = d.metric("myco_heap_bytes");
    assert!(heap <= HEAP_BYTES_MAX as f64, "{heap} > {HEAP_BYTES_MAX}");
    println!("myco_heap_bytes={heap} budget={HEAP_BYTES_MAX}");
}

/// SIGTERM: the daemon leaves the cluster, closes everything and exits 0 without allocating
/// (strict mode would have aborted it).
fn stop_cleanly(d: &mut Daemon) {
    let child = d.child.as_mut().expect("started");
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.log());
}

/// More slow clients than the API has slots, a request that never ends (408), and DNS TCP
/// connections holding half a query: the operator and a resolver still get through.
fn slow_clients(d: &Daemon, dns_port: u16) {
    let socket = d.socket.clone();
    let slow = Tricklers::api_health(20, socket);
    wait_until(Duration::from_secs(10), "the slow clients connect", || {
        slow.connections() >= 20
    });
    for _ in 0..10 {
        assert_eq!(d.get("/health").0, 200);
    }
    // A request that never ends: 408 at its deadline, or 503 if a newer client took its slot
    // first (the slow clients reconnect all the time).
    let half = raw_request(&d.socket, b"GET /hea", Duration::from_secs(10)).expect("answered");
    let ended = [" 408 ", " 503 "].iter().any(|s| half.contains(s));
    assert!(half.is_empty() || ended, "{half}");
    let held: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut t = TcpStream::connect(("127.0.0.1", dns_port)).expect("connects");
            t.write_all(&[0, 40, 1]).expect("half a query");
            t
        })
        .collect();
    dns(dns_port);
    drop(held);
    drop(slow);
}

/// Rounds of deploys, new versions and removals of exec services (one with a port, one that
/// crash-loops) and flake services (one that builds, one whose build fails), waiting each round
/// for the executor to act on them.
fn deploys_and_removals(d: &Daemon, op: &SigningKey) {
    let ok_uri = format!("git+file:///srv/app?ref=main&rev={REV}");
    let broken_uri = format!("git+file:///srv/broken?ref=main&rev={REV}");
    for round in 0..ROUNDS {
        let written_before = d.metric("myco_units_written_total");
        let clock = 2 * round + 1;
        let name = format!("svc{}", round % 7);
        let deploys = [
            entry(op, &name, clock),
            entry_with_port(op, "web", clock, 8080 + (round % 3) as u16),
            entry(op, "crash", clock),
            flake_entry(op, "app", clock, (&ok_uri, "default", REV)),
            flake_entry(op, "broken", clock, (&broken_uri, "default", REV)),
        ];
        for e in &deploys {
            assert_eq!(d.deploy(e).0, 200, "round {round}");
        }
        // An unchanged deploy is answered too.
        assert_eq!(d.deploy(&deploys[0]).0, 200);
        if round % 4 == 3 {
            for gone in [name.as_str(), "app", "crash"] {
                assert_eq!(d.deploy(&tombstone(op, gone, clock + 1)).0, 200);
            }
        }
        // Every fifth round waits for the executor to rewrite web's unit (it acts at most once
        // a second, so a burst of rounds is one change), so that it runs many times.
        if round % 5 == 0 {
            wait_until(Duration::from_secs(20), "the executor rewrites web", || {
                d.metric("myco_units_written_total") > written_before
            });
        }
    }
    wait_until(Duration::from_secs(30), "app's build succeeds", || {
        d.metric("myco_builds_total") >= 1.0 && d.metric("myco_build_failures_total") >= 1.0
    });
    wait_until(Duration::from_secs(20), "a unit is removed", || {
        d.metric("myco_units_removed_total") >= 1.0
    });
}

/// Services with each kind of health check: an HTTP one whose server answers 500 for a while,
/// a TCP one on a port nothing listens on, and an exec one that fails: each goes unhealthy and
/// is restarted; the HTTP one is healthy again once its server answers 200.
fn health_checks(d: &Daemon, op: &SigningKey) {
    let (port, status) = status_server();
    let every_second = |check| Health {
        check,
        interval_s: 1,
        timeout_s: 1,
        failures: 2,
    };
    let http = every_second(Check::Http {
        path: "/healthz",
        port,
    });
    let closed = free_port();
    let tcp = every_second(Check::Tcp { port: closed });
    let argv = heapless::Vec::from_slice(&["/bin/sh", "-c", "exit 1"]).expect("fits");
    let exec = every_second(Check::Exec { argv });
    for (name, port, health) in [("hc", port, http), ("tc", closed, tcp), ("ec", 9000, exec)] {
        let e = checked_entry(op, (name, 1), TRUE_PATH, port, health);
        assert_eq!(d.deploy(&e).0, 200);
    }
    wait_until(Duration::from_secs(20), "hc is checked", || {
        d.metric("myco_health_checks_total") >= 3.0
    });
    status.store(500, std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(20), "all three are restarted", || {
        d.metric("myco_health_restarts_total") >= 3.0
    });
    status.store(200, std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(20), "hc is healthy again", || {
        d.metric("myco_units{state=\"unhealthy\"}") <= 2.0
    });
}

/// Every endpoint, and every refusal of the parser and of the daemon.
fn api_endpoints_and_refusals(d: &Daemon) {
    for path in [
        "/services",
        "/services/web",
        "/nodes",
        "/health",
        "/metrics",
        "/audit?lines=5",
        "/logs?service=web&lines=3",
        "/logs?service=broken",
    ] {
        assert_eq!(d.get(path).0, 200, "{path}");
    }
    // Signed by a key that is not the cluster's operator.
    let foreign = entry(&myco_testkit::keys::key("not-the-operator"), "web", 1_000);
    let refused: [(&str, &str, &[u8], u16); 10] = [
        ("POST", "/deploy", &foreign, 403),
        ("GET", "/services/nope", b"", 404),
        ("GET", "/services/Not_A_Name", b"", 400),
        ("GET", "/nowhere", b"", 404),
        ("POST", "/health", b"", 405),
        ("GET", "/deploy", b"", 405),
        ("POST", "/deploy", b"not an entry", 400),
        ("GET", "/logs?service=web&lines=x", b"", 400),
        ("GET", "/audit?follow=maybe", b"", 400),
        ("GET", "/health?x=1", b"", 400),
    ];
    for (method, path, body, status) in refused {
        let answer = request(&d.socket, method, path, body).expect("the API answers");
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
    }
    let raw: [(&[u8], &str); 8] = [
        (b"POST /deploy HTTP/1.1\r\n\r\n", " 411 "),
        (
            b"POST /deploy HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
            " 413 ",
        ),
        (
            b"POST /deploy HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            " 501 ",
        ),
        (b"GET /health HTTP/2.0\r\n\r\n", " 505 "),
        (
            b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            " 400 ",
        ),
        (b"GARBAGE\r\n\r\n", " 400 "),
        (b"GET /health HTTP/1.1\r\nX: a\rb\r\n\r\n", " 400 "),
        (
            b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
            " 200 ",
        ),
    ];
    for (bytes, status) in raw {
        let answer = raw_request(&d.socket, bytes, Duration::from_secs(10)).expect("answered");
        assert!(
            answer.contains(status),
            "{:?}: {answer}",
            String::from_utf8_lossy(bytes)
        );
    }
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
    let answer = raw_request(&d.socket, long_target.as_bytes(), Duration::from_secs(10));
    assert!(answer.expect("answered").contains(" 414 "));
    let many_headers = format!("GET /health HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(40));
    let answer = raw_request(&d.socket, many_headers.as_bytes(), Duration::from_secs(10));
    assert!(answer.expect("answered").contains(" 431 "));
    // A keep-alive connection with pipelined requests, and one that leaves half a request.
    let mut kept = UnixStream::connect(&d.socket).expect("connects");
    kept.write_all(b"GET /health HTTP/1.1\r\n\r\nGET /nodes HTTP/1.1\r\n\r\nGET /metr")
        .expect("written");
    drop(kept);
}

/// Subscribers that read a little and leave, one that never reads, and one beyond the bound.
fn streams_come_and_go(d: &Daemon) {
    let stuck = subscribe(d, "/stream");
    for round in 0..20 {
        let mut s = subscribe(d, "/stream");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("the stream answers");
        assert!(
            String::from_utf8_lossy(&buf[..n]).contains("200"),
            "round {round}"
        );
    }
    let many: Vec<UnixStream> = (0..12).map(|_| subscribe(d, "/stream")).collect();
    assert_eq!(d.get("/health").0, 200);
    drop(many);
    drop(stuck);
}

fn subscribe(d: &Daemon, path: &str) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    let head = format!("GET {path} HTTP/1.1\r\nLast-Event-ID: 0\r\n\r\n");
    s.write_all(head.as_bytes()).expect("written");
    s
}

/// `/logs` and `/audit`, followed (read a little, then closed) and not.
fn logs_and_audit(d: &Daemon) {
    for path in [
        "/logs?service=web&follow=true",
        "/audit?follow=true&lines=2",
        "/logs?service=broken&follow=true",
    ] {
        for _ in 0..5 {
            let mut s = subscribe(d, path);
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).expect("answered");
            assert!(n > 0, "{path}");
        }
    }
    assert_eq!(d.get("/logs?service=nope").0, 404);
}

/// A and SRV questions over UDP and TCP, names known and not, another zone, and garbage.
fn dns(port: u16) {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bound");
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout set");
    for (i, (name, kind)) in [("web", 1u16), ("nope", 1), ("_web._tcp", 33), ("web", 28)]
        .into_iter()
        .enumerate()
    {
        let q = query(i as u16, name, kind);
        udp.send_to(&q, ("127.0.0.1", port)).expect("sent");
        let mut buf = [0u8; 512];
        let (n, _) = udp.recv_from(&mut buf).expect("answered over UDP");
        assert_eq!(&buf[..2], &q[..2], "the answer's id");
        assert!(n >= 12);
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout set");
        tcp.write_all(&(q.len() as u16).to_be_bytes())
            .expect("written");
        tcp.write_all(&q).expect("written");
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).expect("answered over TCP");
    }
    udp.send_to(b"\x00\x01garbage", ("127.0.0.1", port))
        .expect("sent");
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    idle.write_all(&[0, 40, 1]).expect("half a query");
}

/// A DNS question for `name.myco` of type `kind`, with id `id`.
fn query(id: u16, name: &str, kind: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').chain(["myco"]) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&kind.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// A second daemon joins, receives the state, is killed (declared dead), returns with a
/// revocation that it gossips to the first, and dies again; the first rewrites its peers file at
/// each change and keeps the revocation.
fn membership_churn(a: &Daemon, op: &SigningKey) {
    let mut b = Daemon::new("strict-b", op, 62);
    certify_at(&b, op, 62);
    let mut record = [0u8; REVOCATION_BYTES_MAX];
    let n = encode_revocation(op, ISSUED_AT - 1, &mut record);
    let revocation = b
        .dir
        .write("revocation", &record[..n])
        .display()
        .to_string();
    let a_addr = a.listen_addr();
    for round in 0..2 {
        let mut args = vec!["--reserve-bytes", "0", "--join", &a_addr];
        if round == 1 {
            args.extend_from_slice(&["--revocation", &revocation]);
        }
        b.start(b.command(&args));
        wait_until(Duration::from_secs(20), "b joins and syncs", || {
            a.get("/health").1.contains("\"peers_alive\":1") && b.get("/services/web").0 == 200
        });
        wait_until(Duration::from_secs(10), "a remembers b", || {
            fs::read_to_string(a.state.join("peers")).is_ok_and(|p| p.lines().count() >= 1)
        });
        if round == 1 {
            wait_until(Duration::from_secs(20), "a takes b's revocation", || {
                a.metric("myco_revocation_block") == (ISSUED_AT - 1) as f64
            });
        }
        let child = b.child.as_mut().expect("started");
        child.kill().expect("killed");
        child.wait().expect("reaped");
        wait_until(Duration::from_secs(30), "a sees b dead", || {
            a.get("/health").1.contains("\"peers_alive\":0")
        });
    }
}
