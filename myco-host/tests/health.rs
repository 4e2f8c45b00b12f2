//! Health checks end to end on loopback: a daemon with the executor on (the kit's stand-in
//! `systemctl`, which reports every unit running) checks a real HTTP server; when the server
//! starts answering 500 the service turns unhealthy, is restarted through `systemctl restart`,
//! leaves DNS, and comes back once the server answers 200 again. TCP and exec checks likewise.
//! The testbed (`tests/testbed/health-test.sh`) runs the same under a real systemd.

use myco_core::schema::entry::{Check, Health};
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::{checked_entry, TRUE_PATH};
use myco_testkit::http::status_server;
use myco_testkit::keys::operator;
use myco_testkit::wait_until;
use std::fs;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A check every second, a second to answer, two failures in a row: unhealthy within seconds.
fn health(check: Check<'_>) -> Health<'_> {
    Health {
        check,
        interval_s: 1,
        timeout_s: 1,
        failures: 2,
    }
}

fn free_port() -> u16 {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.local_addr().unwrap().port()
}

/// `web.myco`'s A records as dig prints them with `+short`.
fn resolve(dns_port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            "+time=2",
            "+tries=1",
        ])
        .args(["+short", &format!("{name}.myco"), "A"])
        .output()
        .expect("dig runs (make tools installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How many times `systemctl restart` named `unit`, from the stand-in's `calls`.
fn restarts(d: &Daemon, unit: &str) -> usize {
    let calls = fs::read_to_string(d.dir.join("calls")).unwrap_or_default();
    let restart = format!("restart {unit}");
    calls.lines().filter(|l| *l == restart).count()
}

/// The service's state on this box as `/services/<name>` reports it.
fn state(d: &Daemon, name: &str) -> String {
    d.get(&format!("/services/{name}")).1
}

#[test]
fn a_service_that_answers_500_is_restarted_leaves_dns_and_comes_back() {
    let op = operator();
    let mut d = Daemon::new("health-http", &op, 71);
    let dns = free_port();
    d.start(d.executor_command(&["--dns", &format!("127.0.0.1:{dns}")]));
    let (port, status) = status_server();
    let check = Check::Http {
        path: "/healthz",
        port,
    };
    let entry = checked_entry(&op, ("web", 1), TRUE_PATH, port, health(check));
    assert_eq!(d.deploy(&entry).0, 200);
    wait_until(
        Duration::from_secs(15),
        "web is checked and resolves",
        || d.metric("myco_health_checks_total") >= 1.0 && resolve(dns, "web") == "127.0.0.1",
    );
    assert_eq!(d.metric("myco_health_check_failures_total"), 0.0);
    status.store(500, Ordering::SeqCst);
    wait_until(Duration::from_secs(15), "web is unhealthy", || {
        state(&d, "web").contains("unhealthy")
    });
    assert_eq!(
        resolve(dns, "web"),
        "",
        "an unhealthy box is left out of DNS"
    );
    wait_until(Duration::from_secs(10), "web is restarted", || {
        restarts(&d, "myco-web.service") >= 1
    });
    assert!(d.metric("myco_health_restarts_total") >= 1.0);
    let log = fs::read_to_string(d.dir.join("log")).unwrap();
    assert!(
        log.contains("service web: health check failed (status 5xx): unhealthy, restarting it"),
        "{log}"
    );
    assert!(d.metric("myco_units{state=\"unhealthy\"}") == 1.0);
    // systemd reads the restarted unit running, but it stays unhealthy while checks fail.
    std::thread::sleep(Duration::from_secs(2));
    assert!(state(&d, "web").contains("unhealthy"));
    status.store(200, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(15),
        "web is healthy and back in DNS",
        || resolve(dns, "web") == "127.0.0.1",
    );
    assert!(!state(&d, "web").contains("unhealthy"));
    assert_eq!(d.metric("myco_units{state=\"unhealthy\"}"), 0.0);
}

/// A TCP check on a port nothing listens on fails (unhealthy, restarted); an exec check runs
/// its command through `systemd-run` in the service's sandbox and passes once the command
/// exits 0.
#[test]
fn tcp_and_exec_checks() {
    let op = operator();
    let mut d = Daemon::new("health-tcp-exec", &op, 72);
    d.start(d.executor_command(&[]));
    let closed = free_port();
    let tcp = checked_entry(
        &op,
        ("closed", 1),
        TRUE_PATH,
        closed,
        health(Check::Tcp { port: closed }),
    );
    assert_eq!(d.deploy(&tcp).0, 200);
    let marker = d.dir.join("healthy");
    let script = format!("test -e {}", marker.display());
    let argv = heapless::Vec::from_slice(&["/bin/sh", "-c", &script]).unwrap();
    let exec = checked_entry(
        &op,
        ("probed", 1),
        TRUE_PATH,
        9000,
        health(Check::Exec { argv }),
    );
    assert_eq!(d.deploy(&exec).0, 200);
    wait_until(Duration::from_secs(15), "both are unhealthy", || {
        state(&d, "closed").contains("unhealthy") && state(&d, "probed").contains("unhealthy")
    });
    wait_until(Duration::from_secs(10), "both are restarted", || {
        restarts(&d, "myco-closed.service") >= 1 && restarts(&d, "myco-probed.service") >= 1
    });
    let runs = fs::read_to_string(d.dir.join("systemd-run.calls")).unwrap_or_default();
    let check = runs
        .lines()
        .find(|l| l.contains("--unit=myco-check-probed"))
        .expect("the exec check ran through systemd-run");
    for property in [
        "DynamicUser=yes",
        "User=myco-probed",
        "ProtectSystem=strict",
    ] {
        assert!(check.contains(&format!("--property={property}")), "{check}");
    }
    let log = fs::read_to_string(d.dir.join("log")).unwrap();
    assert!(
        log.contains("service closed: health check failed (connection refused)"),
        "{log}"
    );
    assert!(
        log.contains("service probed: health check failed (command failed)"),
        "{log}"
    );
    fs::write(&marker, "").unwrap();
    wait_until(Duration::from_secs(15), "the exec check passes", || {
        !state(&d, "probed").contains("unhealthy")
    });
    assert!(state(&d, "closed").contains("unhealthy"), "still refused");
}
