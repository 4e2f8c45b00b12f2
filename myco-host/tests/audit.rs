//! The audit log and the Nix store's garbage collection in a real daemon, against the kit's
//! stand-in `systemctl`: audit lines for a start and a removal, on disk before the unit is
//! enabled and still there after SIGKILL, served by `GET /audit` and `myco audit` (plain,
//! `--json`, `--follow`); and a collection run by a stand-in `nix-collect-garbage` when a
//! stand-in usage (the hidden `--store-usage-file`) passes 85%, reported on `/metrics` and
//! `/stream`.

use myco_testkit::daemon::Daemon;
use myco_testkit::entries::{entry, tombstone};
use myco_testkit::keys::operator;
use myco_testkit::metrics::promtool_check;
use myco_testkit::run::PipeLines;
use myco_testkit::{bins, wait_until};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn audit_lines(d: &Daemon) -> Vec<String> {
    let text = fs::read_to_string(d.dir.join("audit.log")).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

fn enabled(d: &Daemon) -> bool {
    let calls = fs::read_to_string(d.dir.join("calls")).unwrap_or_default();
    calls.lines().any(|c| c == "enable --now myco-web.service")
}

/// A start and a removal each leave one line with the entry's fields, written before systemd
/// was asked to start the unit and kept through SIGKILL; `/audit` and `myco audit` read them.
#[test]
fn outcomes_are_audited_durably_and_served() {
    let op = operator();
    let mut d = Daemon::new("audit", &op, 31);
    d.start(d.executor_command(&[]));
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(10), "web is enabled", || enabled(&d));
    let lines = audit_lines(&d);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let started = lines[0].clone();
    for field in [
        "\"service\":\"web\"",
        "\"version\":1",
        "\"store_path\":null",
        "\"outcome\":\"started\"",
    ] {
        assert!(started.contains(field), "{field} in {started}");
    }
    d.child.as_mut().unwrap().kill().unwrap();
    d.child.as_mut().unwrap().wait().unwrap();
    assert_eq!(audit_lines(&d), [started], "durable through SIGKILL");

    d.start(d.executor_command(&[]));
    assert_eq!(d.deploy(&tombstone(&op, "web", 2)).0, 200);
    wait_until(Duration::from_secs(10), "the removal is audited", || {
        audit_lines(&d).len() == 2
    });
    assert!(audit_lines(&d)[1].contains("\"outcome\":\"removed\""));
    let (status, body) = d.get("/audit?lines=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{}\n", audit_lines(&d)[1]));
    assert_eq!(d.get("/audit?follow=maybe").0, 400);

    let myco = |args: &[&str]| {
        let out = Command::new(bins::cli())
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .output()
            .expect("myco runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        myco(&["audit", "--json"]),
        audit_lines(&d).join("\n") + "\n"
    );
    let plain = myco(&["audit"]);
    assert!(plain.contains("started       web  v1"), "{plain}");
    assert!(plain.contains("removed       web"), "{plain}");
    followed(&d, &op);
    // This run wrote the removal and a line for each deploy `followed` made (one or more: it
    // deploys until the follow shows one, and lines may land after it returns); the first run
    // wrote one. The metric counts this run's lines only.
    wait_until(
        Duration::from_secs(10),
        "the metric counts this run's lines",
        || {
            let this_run = audit_lines(&d).len() - 1;
            this_run >= 2 && d.metric("myco_audit_lines_total") == this_run as f64
        },
    );
}

/// `myco audit --follow` prints an outcome that happens while it runs. Nothing says when the
/// follow has begun, so each second without a line deploys a newer version: a deploy made before
/// the follow began is not shown (`--lines 0`), and every later one is.
fn followed(d: &Daemon, op: &myco_core::crypto::SigningKey) {
    let mut follow = Command::new(bins::cli())
        .args(["audit", "--json", "--follow", "--lines", "0", "--socket"])
        .arg(&d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("myco runs");
    let lines = PipeLines::new(follow.stdout.take().unwrap());
    let shown = (3..23).find_map(|version| {
        assert_eq!(d.deploy(&entry(op, "web", version)).0, 200);
        // The first is a new unit (the service was removed before), the rest change nothing
        // it runs: their units are written again, not restarted.
        let line = lines.next_within(Duration::from_secs(1), |l| {
            l.contains("\"outcome\":\"started\"") || l.contains("\"outcome\":\"rewritten\"")
        });
        line.ok().map(|line| (version, line))
    });
    let (version, line) = shown.expect("myco audit --follow printed a deploy made while it ran");
    // A line can come late, after the next deploy: it is one of those made while following.
    let ours = (3..=version).any(|v| line.contains(&format!("\"version\":{v},")));
    assert!(ours, "{line}");
    follow.kill().unwrap();
    follow.wait().unwrap();
}

/// Above 85% used the box runs the (stand-in) collector once, niced, counts what it freed on
/// `/metrics` and reports it on `/stream`; below, nothing runs.
#[test]
fn garbage_is_collected_above_the_threshold() {
    let op = operator();
    let mut d = Daemon::new("audit-gc", &op, 32);
    let runs = d.dir.join("gc-runs");
    let script = format!(
        "#!/bin/sh\necho run >> {}\necho 'finding garbage collector roots...' >&2\n\
         echo '3 store paths deleted, 2.00 MiB freed'\n",
        runs.display()
    );
    let collector = d.dir.write("nix-collect-garbage", script);
    fs::set_permissions(&collector, fs::Permissions::from_mode(0o755)).unwrap();
    let usage = d.dir.write("usage", "900\n");
    let extra = [
        "--nix-collect-garbage",
        collector.to_str().unwrap(),
        "--store-usage-file",
        usage.to_str().unwrap(),
    ];
    d.start(d.executor_command(&extra));
    wait_until(
        Duration::from_secs(10),
        "the bytes freed are counted",
        || d.metric("myco_gc_freed_bytes_total") == 2.0 * 1024.0 * 1024.0,
    );
    assert_eq!(d.metric("myco_gc_runs_total"), 1.0);
    assert_eq!(d.metric("myco_store_used_permille"), 900.0);
    assert_eq!(fs::read_to_string(&runs).unwrap(), "run\n", "once");
    promtool_check(&d.get("/metrics").1);
    let stream = Command::new("curl")
        .args(["-sN", "-m", "2", "-H", "Last-Event-ID: 0", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/stream")
        .output()
        .expect("curl runs");
    let events = String::from_utf8_lossy(&stream.stdout);
    assert!(
        events.contains("event: gc\ndata: {\"id\":")
            && events.contains("\"outcome\":\"freed\",\"freed_bytes\":2097152,\"paths_deleted\":3"),
        "{events}"
    );
}
