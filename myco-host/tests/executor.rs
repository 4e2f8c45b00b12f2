//! The executor against a stand-in `systemctl` that records its command lines and reports every
//! unit running: unit files written atomically with the rendered text, the commands in order
//! (reload before enable, restart on a new version, disable before delete), health read back.
//! The testbed (tests/testbed) runs the same code under a real systemd.

use myco_core::schema::entry::{ServiceSpec, Source};
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::{entry, exec_entry, signed_service, TRUE_PATH};
use myco_testkit::keys::{key, operator};
use myco_testkit::{wait_until, FAKE_SYSTEMCTL};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn calls(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(dir.join("calls")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with("show"))
        .map(str::to_owned)
        .collect()
}

/// A daemon with the executor on, writing units to `<dir>/units` and running the stand-in.
fn start(d: &mut Daemon) {
    start_with(d, &[]);
}

fn start_with(d: &mut Daemon, extra: &[&str]) {
    d.start(d.executor_command(extra));
}

/// Starts `d` with the executor, deploys version 1 of `web` and waits until its rollout is done;
/// the path of its unit file.
fn started_with_web_settled(d: &mut Daemon, op: &myco_core::crypto::SigningKey) -> PathBuf {
    start(d);
    assert_eq!(d.deploy(&entry(op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(30), "version 1 settles", || {
        d.get("/services/web")
            .1
            .contains(r#""rollout":{"state":"done"}"#)
    });
    d.dir.path().join("units/myco-web.service")
}

/// A new version that fails (the stand-in reports a unit running /bin/false failed) on this box,
/// alone and so the first wave, goes back to the version before: the unit file is written again
/// from the kept entry and restarted, `/services` says the rollout is held here with the reason,
/// the audit log records each step, and a newer version rolls out again.
#[test]
fn a_failing_version_goes_back_and_the_rollout_holds() {
    use myco_testkit::entries::exec_entry;
    let op = operator();
    let mut d = Daemon::new("rollback", &op, 22);
    let unit = started_with_web_settled(&mut d, &op);
    let v1 = fs::read_to_string(&unit).unwrap();

    assert_eq!(d.deploy(&exec_entry(&op, "web", 2, "/bin/false")).0, 200);
    wait_until(Duration::from_secs(30), "the rollout holds", || {
        d.get("/services/web").1.contains(r#""state":"held""#)
    });
    let services = d.get("/services/web").1;
    assert!(services.contains(r#""reason":"unit-failed""#), "{services}");
    wait_until(
        Duration::from_secs(10),
        "the box serves the version before",
        || {
            let s = d.get("/services/web").1;
            s.contains(r#""state":"pending","version":"previous""#)
        },
    );
    wait_until(
        Duration::from_secs(10),
        "the version before is written back",
        || fs::read_to_string(&unit).is_ok_and(|t| t == v1),
    );
    let restarts = || {
        let calls = calls(d.dir.path());
        calls
            .iter()
            .filter(|c| *c == "restart myco-web.service")
            .count()
    };
    wait_until(Duration::from_secs(10), "and restarted", || restarts() == 2);

    // Another program: version 3 differs from version 1 in more than its clock, so it restarts.
    assert_eq!(d.deploy(&exec_entry(&op, "web", 3, "/bin/true")).0, 200);
    wait_until(
        Duration::from_secs(30),
        "version 3 rolls out and settles",
        || {
            let s = d.get("/services/web").1;
            s.contains(r#""clock":3"#) && s.contains(r#""rollout":{"state":"done"}"#)
        },
    );
    assert_eq!(
        restarts(),
        3,
        "version 3 is started once; version 2 is not tried again"
    );
    // Version 1 was the first here: its trial is no step of a rollout, and is not audited.
    let audit = fs::read_to_string(d.dir.path().join("audit.log")).unwrap();
    let outcomes: Vec<&str> = audit
        .lines()
        .filter_map(|l| l.split(r#""outcome":""#).nth(1)?.split('"').next())
        .collect();
    let expected = [
        "started",
        "started",
        "on-trial",
        // The write back is audited as it happens, the verdict with the step's changes.
        "rolled-back",
        "held-unit-failed",
        "started",
        "on-trial",
        "settled",
    ];
    assert_eq!(outcomes, expected, "{audit}");
}

#[test]
fn units_follow_the_desired_state() {
    let op = operator();
    let mut d = Daemon::new("executor", &op, 21);
    start(&mut d);
    let unit = d.dir.path().join("units/myco-web.service");
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(
        Duration::from_secs(10),
        "the unit is written and enabled",
        || {
            calls(d.dir.path())
                .iter()
                .any(|c| c == "enable --now myco-web.service")
        },
    );
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.starts_with("# myco: "), "{text}");
    assert!(
        text.contains("DynamicUser=yes") && text.contains("ExecStart=\"/usr/bin/true\""),
        "{text}"
    );
    // No daemon-reload of its own: `systemctl enable` reloads before it starts the unit.
    assert_eq!(calls(d.dir.path()), ["enable --now myco-web.service"]);
    wait_until(Duration::from_secs(10), "health is read back", || {
        d.get("/services/web").1.contains("\"state\":\"running\"")
    });
    assert!(d
        .get("/metrics")
        .1
        .contains("myco_units{state=\"running\"} 1"));

    // A new version that changes the unit rewrites it and restarts it.
    assert_eq!(d.deploy(&exec_entry(&op, "web", 2, "/bin/true")).0, 200);
    wait_until(Duration::from_secs(10), "the new version restarts", || {
        calls(d.dir.path())
            .iter()
            .any(|c| c == "restart myco-web.service")
    });
    assert_ne!(
        fs::read_to_string(&unit).unwrap(),
        text,
        "the unit names its version"
    );

    // A tombstone stops, disables and deletes it.
    assert_eq!(
        d.deploy(&myco_testkit::entries::tombstone(&op, "web", 3)).0,
        200
    );
    wait_until(
        Duration::from_secs(10),
        "systemd reloads after the unit is removed",
        || {
            calls(d.dir.path())
                .last()
                .is_some_and(|c| c == "daemon-reload")
                && !unit.exists()
        },
    );
    let calls = calls(d.dir.path());
    assert_eq!(
        &calls[calls.len() - 2..],
        ["disable --now myco-web.service", "daemon-reload"],
        "stopped before its file went"
    );
    assert!(!d.dir.path().join("units/.myco-web.service.tmp").exists());
}

/// A version that changes only how many copies run (or nothing at all) rewrites the unit, which
/// names its version, and reloads systemd, but restarts nothing: scaling restarts no running
/// copy. The rewrite is audited as such and counted.
#[test]
fn a_version_that_only_scales_is_written_and_not_restarted() {
    let op = operator();
    let mut d = Daemon::new("executor-scale", &op, 23);
    let unit = started_with_web_settled(&mut d, &op);
    let mut scaled = ServiceSpec::minimal(Source::Exec { path: TRUE_PATH });
    scaled.replicas = 3;
    assert_eq!(
        d.deploy(&signed_service(&op, "web", 2, Some(scaled))).0,
        200
    );
    wait_until(
        Duration::from_secs(10),
        "the scaled version is written",
        || fs::read_to_string(&unit).is_ok_and(|t| t.contains("X-Myco-Clock=2")),
    );
    wait_until(Duration::from_secs(10), "systemd reloads it", || {
        calls(d.dir.path())
            .last()
            .is_some_and(|c| c == "daemon-reload")
    });
    assert_eq!(
        calls(d.dir.path()),
        ["enable --now myco-web.service", "daemon-reload"],
        "not restarted"
    );
    let audit = fs::read_to_string(d.dir.path().join("audit.log")).unwrap();
    assert!(audit.contains(r#""outcome":"rewritten""#), "{audit}");
    assert_eq!(d.metric("myco_units_rewritten_total"), 1.0);
    assert_eq!(d.metric("myco_units_written_total"), 2.0);
}

#[test]
fn a_restarted_daemon_keeps_its_units_and_writes_nothing_again() {
    let op = operator();
    let mut d = Daemon::new("executor-restart", &op, 22);
    start(&mut d);
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(10), "the unit is enabled", || {
        calls(d.dir.path()).len() == 1
    });
    let unit = d.dir.path().join("units/myco-web.service");
    let before = fs::metadata(&unit).unwrap().modified().unwrap();
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    start(&mut d);
    wait_until(Duration::from_secs(10), "health is read back", || {
        d.get("/services/web").1.contains("\"state\":\"running\"")
    });
    assert_eq!(
        fs::metadata(&unit).unwrap().modified().unwrap(),
        before,
        "same version: not rewritten"
    );
    assert_eq!(
        calls(d.dir.path()).len(),
        1,
        "nothing enabled or restarted again"
    );
    // Health checks at rest run systemctl every 5 s from fixed buffers: no allocation.
    let before = d.metric("myco_heap_allocations_since_ready_total");
    let runs = d.metric("myco_systemctl_runs_total");
    wait_until(Duration::from_secs(15), "two more health checks", || {
        d.metric("myco_systemctl_runs_total") >= runs + 2.0
    });
    assert_eq!(d.metric("myco_heap_allocations_since_ready_total"), before);
}

/// The versions kept to go back to outlive a restart of the daemon (`<state-dir>/kept`):
/// version 2 runs when the daemon is killed; after the restart it fails, and the box writes
/// version 1 back and holds version 2, as it does without a restart. A record nobody signed, put
/// among the kept ones, is left out.
#[test]
fn a_restarted_daemon_still_goes_back_to_the_version_before() {
    let op = operator();
    let mut d = Daemon::new("executor-kept", &op, 24);
    let unit = started_with_web_settled(&mut d, &op);
    let v1 = fs::read_to_string(&unit).unwrap();
    assert_eq!(d.deploy(&exec_entry(&op, "web", 2, "/bin/true")).0, 200);
    wait_until(Duration::from_secs(30), "version 2 settles", || {
        let s = d.get("/services/web").1;
        s.contains(r#""clock":2"#) && s.contains(r#""rollout":{"state":"done"}"#)
    });
    let kept = d.state.join("kept");
    assert_eq!(
        fs::read_dir(&kept).unwrap().count(),
        2,
        "both versions kept on disk"
    );
    let forged = exec_entry(&key("forger"), "web", 3, "/bin/true");
    let mut record = vec![1, 0, 0];
    record.extend_from_slice(&forged);
    fs::write(kept.join("5"), record).unwrap();
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    // After the restart, systemd reports version 2's unit failed.
    let sick = FAKE_SYSTEMCTL.replace(r#"'ExecStart="/bin/false"'"#, "'X-Myco-Clock=2'");
    assert_ne!(sick, FAKE_SYSTEMCTL);
    let systemctl = d.dir.write("systemctl", sick);
    d.start(d.executor_command_with(&[], (&systemctl, &d.dir.join("journalctl"))));
    wait_until(Duration::from_secs(30), "version 1 is written back", || {
        fs::read_to_string(&unit).is_ok_and(|t| t == v1)
    });
    wait_until(Duration::from_secs(10), "the rollout holds", || {
        d.get("/services/web").1.contains(r#""state":"held""#)
    });
    let log = d.log();
    assert!(
        log.contains("2 kept version(s) to go back to read back"),
        "{log}"
    );
    assert!(log.contains("kept/5 left out"), "{log}");
}

/// A box that comes back with peers configured but none reachable (a reboot with no network)
/// keeps the units it ran and starts nothing new, instead of taking the whole fleet's work.
#[test]
fn a_box_cut_off_keeps_its_units_and_starts_nothing() {
    let op = operator();
    let mut d = Daemon::new("executor-cut", &op, 23);
    start(&mut d);
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(10), "web is enabled", || {
        calls(d.dir.path()).len() == 1
    });
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    // Back with a peer to join that never answers.
    start_with(&mut d, &["--join", "127.0.0.1:9"]);
    assert_eq!(
        d.deploy(&entry(&op, "db", 1)).0,
        200,
        "deploys are still taken and gossiped"
    );
    wait_until(Duration::from_secs(15), "health is read back", || {
        d.get("/services/web").1.contains("\"state\":\"running\"")
    });
    let units = d.dir.path().join("units");
    assert!(units.join("myco-web.service").exists(), "kept");
    assert!(
        !units.join("myco-db.service").exists(),
        "not started while cut off"
    );
    assert_eq!(
        calls(d.dir.path()).len(),
        1,
        "nothing enabled, restarted or removed"
    );
}

/// `/logs` passes journalctl's output on; a follower's journalctl ends when its client goes away.
#[test]
fn logs_come_from_the_unit_journal_and_stop_with_the_client() {
    let op = operator();
    let mut d = Daemon::new("executor-logs", &op, 24);
    start(&mut d);
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(10), "web is enabled", || {
        calls(d.dir.path()).len() == 1
    });
    let (status, body) = d.get("/logs?service=web&lines=2");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "journal of --unit=myco-web.service --no-pager --output=short-iso --lines=2\n"
    );
    assert_eq!(d.get("/logs?service=nope").0, 404);

    let mut curl = Command::new("curl")
        .args(["-sN", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/logs?service=web&follow=true")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    // Lines arrive as journalctl writes them.
    let lines = myco_testkit::run::PipeLines::new(curl.stdout.take().unwrap());
    for n in 1..=3 {
        let wait = Duration::from_secs(20);
        lines.wait_for(wait, &format!("'tick' number {n}"), |l| l == "tick");
    }
    let pid: i32 = fs::read_to_string(d.dir.path().join("journal.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    curl.kill().unwrap();
    curl.wait().unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = || unsafe { libc::kill(pid, 0) } == 0;
    wait_until(
        Duration::from_secs(10),
        "journalctl ends with its client",
        || !alive(),
    );
    assert_eq!(d.get("/health").0, 200, "the daemon is fine");
}

/// A free loopback port for both UDP and TCP (bound and released; the daemon binds it next).
fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.local_addr().unwrap().port()
}

/// A daemon named `name` answering DNS on one free port at each address of `dns_hosts`, gossiping
/// on `listen` (the kit's default when `None`); returns it and the DNS port.
fn dns_daemon(name: &str, seed: u8, listen: Option<&str>, dns_hosts: &[&str]) -> (Daemon, u16) {
    let mut d = Daemon::new(name, &operator(), seed);
    if let Some(listen) = listen {
        d.set_listen(listen);
    }
    let port = free_port();
    let dns: Vec<String> = dns_hosts.iter().map(|h| format!("{h}:{port}")).collect();
    let args: Vec<&str> = dns.iter().flat_map(|a| ["--dns", a.as_str()]).collect();
    start_with(&mut d, &args);
    (d, port)
}

/// Deploys `web`: one replica, port 8080.
fn deploy_web(d: &Daemon) {
    let entry = myco_testkit::entries::entry_with_port(&operator(), "web", 1, 8080);
    assert_eq!(d.deploy(&entry).0, 200);
}

fn dig(port: u16, args: &[&str]) -> String {
    dig_at("127.0.0.1", port, args)
}

fn dig_at(server: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{server}"),
            "-p",
            &port.to_string(),
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig runs (make tools installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `*.myco` DNS with real dig: a running service's A record and SRV port, over UDP and TCP;
/// NXDOMAIN for an unknown name, REFUSED for another zone; garbage changes nothing.
#[test]
fn dns_answers_running_services_by_name() {
    let (d, port) = dns_daemon("executor-dns", 25, None, &["127.0.0.1"]);
    deploy_web(&d);
    wait_until(Duration::from_secs(15), "web runs and resolves", || {
        dig(port, &["+short", "web.myco", "A"]).trim() == "127.0.0.1"
    });
    assert_eq!(
        dig(port, &["+short", "+tcp", "web.myco", "A"]).trim(),
        "127.0.0.1"
    );
    assert_eq!(
        dig(port, &["+short", "_web._tcp.myco", "SRV"]).trim(),
        "0 0 8080 web.myco."
    );
    assert!(dig(port, &["nope.myco", "A"]).contains("status: NXDOMAIN"));
    assert!(dig(port, &["example.com", "A"]).contains("status: REFUSED"));
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    garbage
        .send_to(b"\x00\x01garbage", ("127.0.0.1", port))
        .unwrap();
    assert!(
        dig(port, &["web.myco", "A"]).contains("status: NOERROR"),
        "still answering"
    );
    // One TCP connection for two lookups (RFC 7766): dig keeps it open, and a client that sends
    // two queries at once and closes its side gets both answers, in order.
    let kept = dig(
        port,
        &["+tcp", "+keepopen", "web.myco", "A", "nope.myco", "A"],
    );
    assert!(
        kept.contains("status: NXDOMAIN") && kept.contains("\t127.0.0.1"),
        "{kept}"
    );
    let answers = pipelined(port, &[(0x0102, "web"), (0x0304, "nope")]);
    assert_eq!(
        answers,
        [(0x0102, 0), (0x0304, 3)],
        "(id, rcode) of each answer"
    );
}

/// Sends one framed A query per `(id, name)` for `name.myco` on one TCP connection, all in one
/// write, then closes the writing side; returns each answer's id and rcode.
fn pipelined(port: u16, queries: &[(u16, &str)]) -> Vec<(u16, u8)> {
    use std::io::{Read, Write};
    let mut wire = Vec::new();
    for (id, name) in queries {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.push(name.len() as u8);
        q.extend_from_slice(name.as_bytes());
        q.extend_from_slice(b"\x04myco\x00\x00\x01\x00\x01");
        wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
        wire.extend_from_slice(&q);
    }
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    tcp.write_all(&wire).unwrap();
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back)
        .expect("answers, then the server closes");
    let mut answers = Vec::new();
    let mut at = 0;
    while at + 2 <= back.len() {
        let len = usize::from(u16::from_be_bytes([back[at], back[at + 1]]));
        let m = &back[at + 2..at + 2 + len];
        answers.push((u16::from_be_bytes([m[0], m[1]]), m[3] & 0x0F));
        at += 2 + len;
    }
    answers
}

/// A box that gossips over IPv6 answers AAAA with its address, and A with no record; DNS
/// listens on both loopbacks at once (`--dns` twice) and both answer the same.
#[test]
fn dns_answers_aaaa_on_both_loopbacks() {
    let (d, port) = dns_daemon(
        "executor-dns6",
        26,
        Some("[::1]:0"),
        &["127.0.0.1", "[::1]"],
    );
    deploy_web(&d);
    wait_until(
        Duration::from_secs(15),
        "web runs and resolves over IPv6",
        || dig_at("::1", port, &["+short", "web.myco", "AAAA"]).trim() == "::1",
    );
    assert_eq!(dig(port, &["+short", "web.myco", "AAAA"]).trim(), "::1");
    let a = dig_at("::1", port, &["web.myco", "A"]);
    assert!(
        a.contains("status: NOERROR") && a.contains("ANSWER: 0"),
        "{a}"
    );
    let srv = dig_at("::1", port, &["+tcp", "_web._tcp.myco", "SRV"]);
    assert!(
        srv.contains("8080 web.myco.") && srv.contains("AAAA\t::1"),
        "{srv}"
    );
    assert_eq!(d.metric("myco_dns_listeners"), 2.0);
    assert!(d.metric("myco_dns_queries_total{transport=\"udp\"}") >= 3.0);
    assert!(d.metric("myco_dns_queries_total{transport=\"tcp\"}") >= 1.0);
}

/// A box that gossips on the dual-stack wildcard `[::]` answers for itself on both loopbacks:
/// 127.0.0.1 as A and ::1 as AAAA. On a box whose links carry only IPv6, AAAA used to leave the
/// box itself out (it was answered as 127.0.0.1 only), so a workload there that asks for AAAA
/// never found the instance next to it (found on the IPv6-only testbed, tests/testbed/ipv6-test.sh).
#[test]
fn dns_answers_both_loopbacks_for_a_dual_stack_wildcard() {
    let (d, port) = dns_daemon("executor-dns-wild", 27, Some("[::]:0"), &["127.0.0.1"]);
    deploy_web(&d);
    wait_until(Duration::from_secs(15), "web runs and resolves", || {
        dig(port, &["+short", "web.myco", "A"]).trim() == "127.0.0.1"
    });
    assert_eq!(dig(port, &["+short", "web.myco", "AAAA"]).trim(), "::1");
}

/// More units than one `systemctl show` names (200): the health sweep goes on through all of
/// them, so none stays pending.
#[test]
fn health_is_read_for_every_unit() {
    const UNITS: usize = 230;
    let op = operator();
    let mut d = Daemon::new("executor-many", &op, 27);
    start(&mut d);
    for i in 0..UNITS {
        let name = format!("svc-{i:03}");
        assert_eq!(d.deploy(&entry(&op, &name, 1)).0, 200, "{name}");
    }
    wait_until(Duration::from_secs(30), "every unit reads running", || {
        d.metric("myco_units{state=\"running\"}") == UNITS as f64
    });
    assert_eq!(d.metric("myco_units{state=\"pending\"}"), 0.0);
}

/// With every TCP slot held by a client that says nothing, a new client is answered at once
/// (not after the 5 s idle timeout): the connection idle longest gives way, and its client sees
/// the connection closed, while the other silent ones stay open, which they would not if the
/// answer had waited for the timeout. No sleep is needed first: the daemon accepts connections
/// in the order they arrived, so the four silent ones hold the slots before the query's comes in.
#[test]
fn dns_tcp_idle_connections_give_way() {
    use std::io::{ErrorKind, Read};
    let (_d, port) = dns_daemon("executor-dns-tcp", 28, None, &["127.0.0.1"]);
    let silent: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert_eq!(pipelined(port, &[(7, "nope")]), [(7, 3)], "NXDOMAIN, id 7");
    // The closing connection's FIN left before the answer, and loopback delivers in order, so a
    // non-blocking read sees each connection's state as it is now.
    let (mut closed, mut open) = (0, 0);
    for s in &silent {
        s.set_nonblocking(true).unwrap();
        match (&*s).read(&mut [0u8; 1]) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
            other => panic!("a silent connection got {other:?}"),
        }
    }
    assert_eq!((closed, open), (1, 3), "one silent connection gave way");
}

/// More clients than DNS has TCP slots (4), each holding a half-sent query that grows by a byte a
/// second and reconnecting when closed, cannot lock a resolver out: every query gets its answer
/// (half of `dig +tcp` used to time out), because a newcomer takes the slot of the connection
/// slowest longest, half-sent queries included.
#[test]
fn dns_tcp_slow_clients_cannot_lock_a_resolver_out() {
    use myco_testkit::trickle::Tricklers;
    let (d, port) = dns_daemon("executor-dns-slow", 29, None, &["127.0.0.1"]);
    // A 2-byte length announcing a 40-byte query, then its bytes: never whole in the test.
    let mut partial = 40u16.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0x55; 40]);
    let slow = Tricklers::start(8, Duration::from_secs(1), &partial, move || {
        std::net::TcpStream::connect(("127.0.0.1", port))
    });
    wait_until(
        Duration::from_secs(10),
        "every slow client connected",
        || slow.connections() >= 8,
    );
    for id in 0..20 {
        assert_eq!(
            pipelined(port, &[(id, "nope")]),
            [(id, 3)],
            "NXDOMAIN, id {id}"
        );
        // Spread over two seconds, so the queries meet the slow clients' bytes and reconnects;
        // nothing waits on this pause.
        std::thread::sleep(Duration::from_millis(100));
    }
    let tcp = dig(port, &["+tcp", "nope.myco", "A"]);
    assert!(tcp.contains("status: NXDOMAIN"), "{tcp}");
    assert!(d.metric("myco_dns_tcp_evicted_total") >= 1.0);
}
