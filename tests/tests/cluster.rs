//! Real `myco-d` processes on loopback, driven through `myco` and `curl --unix-socket`: a cluster
//! converges on what is deployed, survives a SIGKILL and recovers from the WAL, refuses nodes the
//! operator did not admit, answers the API as docs/api.md says, is quiet at rest and stops
//! cleanly on SIGTERM.
//!
//! Deadlines are generous (CI has two cores and runs tests in parallel); each wait prints how long
//! it took, so they can be tuned from the logs. A failed test keeps its directory and prints the
//! daemons' logs (see `myco_testkit::cluster`).

use myco_testkit::http::raw_request;
use myco_testkit::metrics::{metric, promtool_check};
use myco_testkit::{wait_until, Cluster, Daemon, NodeOptions, ServiceRow};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(20);
/// SWIM: a probe every 500 ms, suspicion for 1.5 to 6 s; plus scheduling slack on a busy CI box.
const FAILURE_DETECTION: Duration = Duration::from_secs(30);

fn row(answer: &Value, deleted: bool) -> ServiceRow {
    ServiceRow {
        name: answer["name"].as_str().expect("name").to_string(),
        clock: answer["version"]["clock"].as_u64().expect("clock"),
        key_id: answer["version"]["key_id"].as_u64().expect("key_id"),
        deleted,
    }
}

/// Whether `d` lists every node in `ids` (itself excluded) as `state`.
fn sees_all(d: &Daemon, ids: &[&str], state: &str) -> bool {
    let nodes = d.nodes();
    ids.iter()
        .filter(|id| **id != d.key.node_id)
        .all(|id| nodes.iter().any(|(i, s)| i == id && s == state))
}

/// The number of services the daemon's last start replayed from its state directory, read from
/// its log line `replayed generation G: R log records, S services, ...`.
fn replayed_services(d: &Daemon) -> u64 {
    let log = d.run_log();
    let line = log
        .lines()
        .find(|l| l.contains("replayed generation"))
        .unwrap_or_else(|| panic!("node {} logged no replay line:\n{log}", d.index));
    let before = line
        .split(" services")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no service count in: {line}"));
    before
        .parse()
        .unwrap_or_else(|_| panic!("no service count in: {line}"))
}

/// Five daemons, the last on the poll(2) backend, each healthy and seeing the four others alive.
fn start_five_with_one_on_poll() -> Cluster {
    let mut c = Cluster::new("five_nodes_converge_and_survive_a_kill");
    for i in 0..5 {
        let io = (i == 4).then_some("poll");
        c.add(NodeOptions {
            io,
            ..NodeOptions::default()
        });
    }
    c.start_all();
    let ids = c.ids();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for d in &c.daemons {
        let health = d.get_json("/health");
        assert_eq!(health["status"], "ok", "node {}: {health}", d.index);
        assert_eq!(
            health["node_id"], d.key.node_id,
            "node {}: {health}",
            d.index
        );
    }
    assert_eq!(c.daemons[4].get_json("/health")["io"], "poll");
    wait_until(CONVERGE, "every node sees the four others alive", || {
        c.daemons.iter().all(|d| sees_all(d, &ids, "alive"))
    });
    c
}

/// Node 3 comes back on the same state directory: `web` comes from its WAL (before it could hear
/// anyone), `api` from the others, and membership sees it alive again both ways.
fn restart_node_3(c: &mut Cluster, ids: &[&str], web_row: &ServiceRow, both: &[ServiceRow]) {
    let others = [0, 1, 2, 4];
    let victim = ids[3];
    c.daemons[3].start();
    let first = c.daemons[3].services();
    assert!(
        first.contains(web_row),
        "node 3 lost web across SIGKILL: {first:?}"
    );
    assert_eq!(
        replayed_services(&c.daemons[3]),
        1,
        "node 3 must replay exactly web from its WAL (api was deployed while it was down):\n{}",
        c.daemons[3].run_log()
    );
    c.wait_services(&[3], both, CONVERGE, "node 3 catches up on api");
    wait_until(
        FAILURE_DETECTION,
        "every node sees node 3 alive again",
        || {
            others
                .iter()
                .all(|&i| c.daemons[i].state_of(victim).as_deref() == Some("alive"))
        },
    );
    wait_until(CONVERGE, "node 3 sees the four others alive", || {
        sees_all(&c.daemons[3], ids, "alive")
    });
}

/// `myco ls` (JSON and table) shows what node 3's API holds, and `myco status` says it is ok.
fn myco_ls_and_status_match_the_api(c: &Cluster, both: &[ServiceRow]) {
    let socket3 = c.daemons[3].socket.to_str().unwrap().to_string();
    let ls = c.myco(&["ls", "--socket", &socket3, "--json"]).json();
    assert_eq!(
        myco_testkit::json::services_of(&ls),
        both.to_vec(),
        "myco ls --json: {ls}"
    );
    let table = c.myco(&["ls", "--socket", &socket3]);
    for r in both {
        let line = table
            .ok()
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&r.name));
        let line =
            line.unwrap_or_else(|| panic!("myco ls does not list {}:\n{}", r.name, table.stdout));
        assert!(
            line.contains(&r.clock.to_string()) && line.contains("deployed"),
            "{line}"
        );
    }
    let status = c.myco(&["status", "--socket", &socket3, "--json"]).json();
    assert_eq!(status["status"], "ok", "{status}");
}

/// Proves that deploys reach every node with one version, that a killed node is declared dead,
/// and that a restarted node recovers what it held from its own WAL (before it could hear
/// anyone) and catches up on what it missed. One node runs the poll(2) backend.
#[test]
fn five_nodes_converge_and_survive_a_kill() {
    let mut c = start_five_with_one_on_poll();
    let ids = c.ids();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    let web = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    let deployed = c.deploy(0, &web);
    assert_eq!(deployed["outcome"], "applied", "{deployed}");
    let web_row = row(&deployed, false);
    let all = [0, 1, 2, 3, 4];
    c.wait_services(
        &all,
        std::slice::from_ref(&web_row),
        CONVERGE,
        "all five list web at one version",
    );

    // A crash: the others must notice.
    c.daemons[3].kill();
    let others = [0, 1, 2, 4];
    let victim = ids[3];
    wait_until(
        FAILURE_DETECTION,
        "nodes 0, 1, 2, 4 mark node 3 dead",
        || {
            others
                .iter()
                .all(|&i| c.daemons[i].state_of(victim).as_deref() == Some("dead"))
        },
    );

    // A deploy node 3 misses.
    let api = c.write(
        "api.json",
        r#"{"name": "api", "exec": "/usr/bin/true", "replicas": 2}"#,
    );
    let api_row = row(&c.deploy(0, &api), false);
    let both = [api_row.clone(), web_row.clone()];
    c.wait_services(
        &others,
        &both,
        CONVERGE,
        "the four live nodes list api and web",
    );

    restart_node_3(&mut c, &ids, &web_row, &both);

    myco_ls_and_status_match_the_api(&c, &both);

    // `myco rm` from node 0 reaches every node as a tombstone.
    let socket0 = c.daemons[0].socket.to_str().unwrap().to_string();
    let operator = c.operator.path.to_str().unwrap().to_string();
    let removed = c.myco(&[
        "rm",
        "web",
        "--operator-key",
        &operator,
        "--socket",
        &socket0,
        "--json",
    ]);
    let removed = removed.json();
    assert_eq!(removed["outcome"], "applied", "{removed}");
    let tombstone = row(&removed, true);
    assert!(tombstone.clock > web_row.clock, "{removed}");
    c.wait_services(
        &all,
        &[api_row, tombstone],
        CONVERGE,
        "all five show web deleted",
    );
    // Each listens on its own 127/8 address, which no route names: peers see it where it is
    // bound, so none may take itself for a box behind NAT (`--nat auto`, the default).
    for (i, d) in c.daemons.iter().enumerate() {
        assert_eq!(
            d.metric("myco_behind_nat"),
            0.0,
            "node {i} thinks it is behind NAT"
        );
    }
}

/// Three nodes certified at height 5 and given the revocation record of height 5, seeing each
/// other alive; returns the cluster and the record's path.
fn three_honest_nodes_past_revocation_5() -> (Cluster, std::path::PathBuf) {
    let mut c = Cluster::new("wrong_and_revoked_certificates_are_refused");
    let operator = c.operator.path.to_str().unwrap().to_string();
    let revocation = c.dir.join("revocation-5");
    c.myco(&[
        "revoke",
        "--operator-key",
        &operator,
        "--height",
        "5",
        "--out",
        revocation.to_str().unwrap(),
    ])
    .ok();
    let honest = NodeOptions {
        issued_at: 5,
        revocation: Some(revocation.clone()),
        ..NodeOptions::default()
    };
    for _ in 0..3 {
        c.add(honest.clone());
    }
    c.start_all();
    let honest_ids: Vec<String> = c.ids();
    let honest_ids: Vec<&str> = honest_ids.iter().map(String::as_str).collect();
    wait_until(
        CONVERGE,
        "the three honest nodes see each other alive",
        || c.daemons.iter().all(|d| sees_all(d, &honest_ids, "alive")),
    );
    for d in &c.daemons {
        assert_eq!(d.metric("myco_revocation_block"), 5.0, "node {}", d.index);
    }
    (c, revocation)
}

/// The honest nodes (0, 1, 2) never list the foreign node, nor the revoked one alive, and their
/// refusal counters keep growing while both keep knocking.
fn outsiders_are_never_admitted(
    c: &Cluster,
    foreign_id: &str,
    revoked_id: &str,
    before: (&[f64], &[f64]),
) {
    let (unknown_before, revoked_before) = before;
    let never_admitted = |c: &Cluster| {
        for i in 0..3 {
            let nodes = c.daemons[i].nodes();
            assert!(
                !nodes.iter().any(|(id, _)| *id == foreign_id),
                "node {i} lists the foreign node {foreign_id}: {nodes:?}"
            );
            assert!(
                !nodes
                    .iter()
                    .any(|(id, s)| *id == revoked_id && s == "alive"),
                "node {i} lists the revoked node {revoked_id} alive: {nodes:?}"
            );
        }
    };
    wait_until(
        CONVERGE,
        "the honest nodes count unknown_key and revoked_key refusals",
        || {
            never_admitted(c);
            let unknown = refusals(c, "unknown_key");
            let revoked = refusals(c, "revoked_key");
            (0..3).all(|i| unknown[i] > unknown_before[i] && revoked[i] > revoked_before[i])
        },
    );
    // Refusing once is not enough: they keep knocking, and keep being refused. Waiting for the
    // counters to grow again proves both without guessing how long that takes.
    let (unknown_mid, revoked_mid) = (refusals(c, "unknown_key"), refusals(c, "revoked_key"));
    wait_until(
        CONVERGE,
        "the outsiders keep knocking and keep being refused",
        || {
            never_admitted(c);
            let unknown = refusals(c, "unknown_key");
            let revoked = refusals(c, "revoked_key");
            (0..3).all(|i| unknown[i] > unknown_mid[i] && revoked[i] > revoked_mid[i])
        },
    );
}

/// Proves that membership needs a certificate from this cluster's operator that is not revoked:
/// a daemon refuses to start with a certificate it cannot use, and live nodes refuse (and count)
/// peers presenting a foreign or revoked one, never listing them.
#[test]
fn wrong_and_revoked_certificates_are_refused() {
    let (mut c, revocation) = three_honest_nodes_past_revocation_5();

    // A certificate from another operator, with this cluster's --operator: no start.
    let other = c.keygen("other");
    let wrong = c.add(NodeOptions {
        cert_signer: Some(other.clone()),
        join: Some(vec![0]),
        ..NodeOptions::default()
    });
    refuses_to_start(&mut c.daemons[wrong], "--operator");

    // Its own certificate below the revocation it is given: no start.
    let stale = c.add(NodeOptions {
        revocation: Some(revocation.clone()),
        join: Some(vec![0]),
        ..NodeOptions::default()
    });
    refuses_to_start(&mut c.daemons[stale], "RevocationBlock 5");

    let unknown_before = refusals(&c, "unknown_key");
    let revoked_before = refusals(&c, "revoked_key");

    // A node of another cluster (its own operator, its own certificate) knocking at the honest
    // nodes, and one of this cluster whose certificate the revocation covers.
    let foreign = c.add(NodeOptions {
        cert_signer: Some(other.clone()),
        operator: Some(other.clone()),
        join: Some(vec![0, 1, 2]),
        ..NodeOptions::default()
    });
    let revoked = c.add(NodeOptions {
        join: Some(vec![0, 1, 2]),
        ..NodeOptions::default()
    });
    c.daemons[foreign].start();
    c.daemons[revoked].start();
    let foreign_id = c.daemons[foreign].key.node_id.clone();
    let revoked_id = c.daemons[revoked].key.node_id.clone();

    outsiders_are_never_admitted(
        &c,
        &foreign_id,
        &revoked_id,
        (&unknown_before, &revoked_before),
    );
    assert!(c.daemons[foreign].is_running() && c.daemons[revoked].is_running());
    let honest_ids: Vec<&str> = c.daemons[..3]
        .iter()
        .map(|d| d.key.node_id.as_str())
        .collect();
    for i in 0..3 {
        assert!(
            sees_all(&c.daemons[i], &honest_ids, "alive"),
            "node {i} lost an honest peer"
        );
    }
}

/// The honest nodes' (0 to 2) count of security-layer refusals of `kind`.
fn refusals(c: &Cluster, kind: &str) -> Vec<f64> {
    let series = format!("myco_crypto_refusals_total{{kind=\"{kind}\"}}");
    (0..3).map(|i| c.daemons[i].metric(&series)).collect()
}

/// Spawns `d`, which must exit 1 within 10 s and say why, naming `expected`, in words: no Rust
/// debug value (`Cert(UnknownKey)`) reaches the operator.
fn refuses_to_start(d: &mut Daemon, expected: &str) {
    d.spawn();
    let status = d.wait_exit(Duration::from_secs(10));
    let log = d.run_log();
    let status =
        status.unwrap_or_else(|| panic!("node {} started; it must refuse:\n{log}", d.index));
    assert_eq!(status.code(), Some(1), "node {}: {status}\n{log}", d.index);
    assert!(
        log.contains("cannot start") && log.contains(expected),
        "node {} must say why it cannot start, naming '{expected}':\n{log}",
        d.index
    );
    assert!(
        !log.contains("Cert(") && !log.contains("UnknownKey") && !log.contains("Revoked {"),
        "node {} must say why in words:\n{log}",
        d.index
    );
    assert!(
        !d.socket.exists() || UnixStream::connect(&d.socket).is_err(),
        "node {} serves",
        d.index
    );
}

/// Proves the API's answers and refusals as docs/api.md specifies them, over the real socket with
/// curl, that `/metrics` is valid exposition text, and that a slow client stalls nothing.
#[test]
fn api_over_curl_and_promtool() {
    let c = Cluster::started("api_over_curl_and_promtool", 1);
    let other_key = c.keygen("other");
    let d = &c.daemons[0];
    health_services_and_nodes_answer(d);
    unknown_paths_and_wrong_methods_are_refused(d);
    let manifest = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    refused_deploys_change_nothing(&c, &manifest, &other_key.path);
    signed_deploy_applies_once(&c, &manifest);
    metrics_pass_promtool(d);
    slow_client_stalls_nothing(d);
}

/// `/health`, `/services` and `/nodes` of a fresh single node, as docs/api.md specifies them.
fn health_services_and_nodes_answer(d: &Daemon) {
    let health = d.get("/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert!(
        health
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{health:?}"
    );
    let health = health.json();
    assert_eq!(
        (&health["status"], &health["wal"]),
        (&"ok".into(), &"ok".into()),
        "{health}"
    );
    assert_eq!(health["reserve"], "present", "{health}");
    assert!(
        health["io"] == "io_uring" || health["io"] == "poll",
        "{health}"
    );

    assert_eq!(d.get_json("/services"), serde_json::json!({"services": []}));
    let nodes = d.get_json("/nodes");
    let me = &nodes["nodes"][0];
    assert_eq!(
        (&me["id"], &me["state"], &me["self"]),
        (&d.key.node_id.clone().into(), &"alive".into(), &true.into()),
        "{nodes}"
    );
}

/// An unknown path is 404 naming the real ones; a wrong method is 405 with `Allow`.
fn unknown_paths_and_wrong_methods_are_refused(d: &Daemon) {
    let unknown = d.get("/nosuch");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.json()["status"], 404, "{unknown:?}");
    assert!(
        unknown.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("/health")),
        "{unknown:?}"
    );
    let wrong_method = d.get("/deploy");
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
    assert_eq!(
        wrong_method.header("allow"),
        Some("POST"),
        "{wrong_method:?}"
    );
    let wrong_method = curl_with(d, &["-X", "DELETE"], "/services");
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
    assert_eq!(
        wrong_method.header("allow"),
        Some("GET"),
        "{wrong_method:?}"
    );
    assert_eq!(wrong_method.json()["status"], 405);
}

/// Garbage (400), an entry signed by another operator (403) and oversized bodies (413) are
/// refused, and none of them changes the state or writes to the WAL.
fn refused_deploys_change_nothing(c: &Cluster, manifest: &Path, other_key: &Path) {
    let d = &c.daemons[0];
    let wal_before = d.metric("myco_wal_bytes");
    let garbage = c.write("garbage.entry", "this is not a signed entry");
    let refused = post_file(d, &garbage);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.json()["status"], 400);

    let foreign_entry = c.dir.join("foreign.entry");
    let signed = c.myco(&[
        "sign",
        manifest.to_str().unwrap(),
        "--operator-key",
        other_key.to_str().unwrap(),
        "--out",
        foreign_entry.to_str().unwrap(),
    ]);
    signed.ok();
    let refused = post_file(d, &foreign_entry);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["status"], 403);

    let oversized = raw_request(
        &d.socket,
        b"POST /deploy HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
        Duration::from_secs(10),
    )
    .expect("the daemon answers an oversized Content-Length");
    let oversized = myco_testkit::http::parse_answer(oversized.as_bytes())
        .unwrap_or_else(|| panic!("{oversized:?}"));
    assert_eq!(oversized.status, 413, "{oversized:?}");
    assert_eq!(oversized.json()["status"], 413);
    let big = c.write("big.entry", &"x".repeat(2000));
    let data = format!("@{}", big.display());
    let oversized = curl_with(d, &["--data-binary", &data, "-H", "Expect:"], "/deploy");
    assert_eq!(oversized.status, 413, "{oversized:?}");

    assert_eq!(
        d.get_json("/services"),
        serde_json::json!({"services": []}),
        "a refusal changed the state"
    );
    assert_eq!(
        d.metric("myco_wal_bytes"),
        wal_before,
        "a refusal wrote to the WAL"
    );
}

/// The same manifest signed by the cluster's operator is applied, and applying it again is
/// `unchanged`.
fn signed_deploy_applies_once(c: &Cluster, manifest: &Path) {
    let d = &c.daemons[0];
    // The refusals before were about the signer, not the entry.
    let entry = c.dir.join("web.entry");
    c.myco(&[
        "sign",
        manifest.to_str().unwrap(),
        "--operator-key",
        c.operator.path.to_str().unwrap(),
        "--out",
        entry.to_str().unwrap(),
    ])
    .ok();
    let accepted = post_file(d, &entry);
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.json()["outcome"], "applied", "{accepted:?}");
    assert_eq!(
        d.services()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    let again = post_file(d, &entry);
    assert_eq!(
        again.json()["outcome"],
        "unchanged",
        "deploys are idempotent: {again:?}"
    );
}

/// `/metrics` is Prometheus text 0.0.4 that `promtool check metrics` accepts.
fn metrics_pass_promtool(d: &Daemon) {
    let metrics = d.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.head
    );
    assert_eq!(
        metric(&metrics.body, "myco_services"),
        Some(1.0),
        "{}",
        metrics.body
    );
    promtool_check(&metrics.body);
}

/// A client that sends half a request and waits holds one connection, not the loop, and is
/// dropped at its deadline.
fn slow_client_stalls_nothing(d: &Daemon) {
    let mut slow = UnixStream::connect(&d.socket).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: local")
        .expect("half a request");
    let opened = Instant::now();
    let prompt = d.get("/health");
    assert_eq!(prompt.status, 200, "{prompt:?}");
    eprintln!(
        "myco-tests: /health beside a stuck client: {:?}",
        opened.elapsed()
    );
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match slow.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the stuck client was answered before its deadline: {other:?}"),
    }
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    let waited = opened.elapsed();
    eprintln!("myco-tests: the stuck client was dropped after {waited:?}");
    assert!(
        read.is_ok(),
        "the stuck client was not dropped within 20 s: {read:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        waited >= Duration::from_secs(8),
        "dropped before the 10 s request timeout: {waited:?}"
    );
    assert_eq!(d.get("/health").status, 200);
}

fn curl_with(d: &Daemon, args: &[&str], path: &str) -> myco_testkit::Answer {
    myco_testkit::http::curl(&d.socket, args, path)
}

fn post_file(d: &Daemon, file: &Path) -> myco_testkit::Answer {
    let data = format!("@{}", file.display());
    curl_with(
        d,
        &[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
        ],
        "/deploy",
    )
}

/// Proves that a converged cluster at rest neither allocates nor writes its state directory:
/// gossip and probes go on, but the WAL, snapshots and peers file are left alone.
#[test]
fn at_rest_no_allocations_and_no_writes() {
    let c = Cluster::started("at_rest_no_allocations_and_no_writes", 3);
    let ids = c.ids();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_until(CONVERGE, "the three nodes see each other alive", || {
        c.daemons.iter().all(|d| sees_all(d, &ids, "alive"))
    });
    let web = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    let web_row = row(&c.deploy(1, &web), false);
    c.wait_services(&[0, 1, 2], &[web_row], CONVERGE, "all three list web");
    // The peers file is written once the membership settles (at most every 10 s); wait for it
    // to name both peers, after which nothing should change.
    wait_until(
        Duration::from_secs(30),
        "every node's peers file names its two peers",
        || {
            c.daemons.iter().all(|d| {
                let peers = myco_testkit::dir::read_text(&d.state_dir.join("peers"));
                c.daemons
                    .iter()
                    .filter(|o| o.index != d.index)
                    .all(|o| peers.contains(&o.addr.to_string()))
            })
        },
    );

    let sample = || -> Vec<(f64, Vec<_>)> {
        c.daemons
            .iter()
            .map(|d| {
                let allocations = d.metric("myco_heap_allocations_since_ready_total");
                (allocations, myco_testkit::dir::files_under(&d.state_dir))
            })
            .collect()
    };
    let before = sample();
    std::thread::sleep(Duration::from_secs(5));
    let after = sample();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.0, a.0, "node {i} allocated at rest");
        assert_eq!(b.1, a.1, "node {i} wrote its state directory at rest");
    }
    let frames = c.daemons[0].metric("myco_frames_sent_total");
    assert!(frames > 0.0, "the cluster must be gossiping, not idle");
}

/// Proves that SIGTERM (and SIGINT) stop the daemon with status 0 promptly, and release the
/// state directory: a second daemon is refused while the first runs and starts after it stopped.
#[test]
fn sigterm_stops_cleanly() {
    let mut c = Cluster::started("sigterm_stops_cleanly", 1);
    let web = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    let web_row = row(&c.deploy(0, &web), false);

    let twin = myco_testkit::run::run(c.daemons[0].command());
    assert_eq!(
        twin.code,
        Some(1),
        "a second daemon on the same state directory: {twin:?}"
    );
    assert!(twin.stderr.contains("another myco-d"), "{twin:?}");

    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let d = &mut c.daemons[0];
        d.signal(signal);
        let started = Instant::now();
        let status = d.wait_exit(Duration::from_secs(2));
        let status =
            status.unwrap_or_else(|| panic!("still running 2 s after {name}:\n{}", d.run_log()));
        eprintln!(
            "myco-tests: {name} stopped the daemon in {:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Some(0), "{name}: {status}\n{}", d.run_log());
        d.start();
        assert_eq!(
            d.services(),
            std::slice::from_ref(&web_row),
            "after {name} and a restart"
        );
    }
}

/// `dig @ADDR -p PORT ARGS` (one try, two seconds): its whole output.
fn dig(at: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([&format!("@{}", at.ip()), "-p", &at.port().to_string()])
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (make tools installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A records of an answer, sorted.
fn a_records(dig_output: &str) -> Vec<String> {
    let mut ips: Vec<String> = dig_output
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    ips.sort();
    ips
}

/// A service on 32 boxes has more A records than a 512-byte UDP answer holds: real dig without
/// EDNS gets the TC bit, retries over TCP on its own and gets all 32; with EDNS's 1232 bytes
/// they fit in UDP. AAAA for IPv4-only boxes is NODATA (NOERROR, no answer, the zone's SOA).
#[test]
fn dns_truncation_falls_back_to_tcp() {
    const NODES: usize = 32;
    let mut c = Cluster::new("dns-truncation");
    for i in 0..NODES {
        c.add(NodeOptions {
            executor: true,
            dns: i == 0,
            ..NodeOptions::default()
        });
    }
    let dns = c.daemons[0].dns.expect("node 0 answers DNS");
    c.start_all();
    let manifest = c.write(
        "web.json",
        &format!(r#"{{"name": "web", "exec": "/usr/bin/true", "replicas": {NODES}}}"#),
    );
    c.deploy(0, &manifest);
    let mut everyone: Vec<String> = c.daemons.iter().map(|d| d.addr.ip().to_string()).collect();
    everyone.sort();
    wait_until(CONVERGE * 3, "every box runs web and DNS lists it", || {
        a_records(&dig(dns, &["web.myco", "A"])) == everyone
    });
    let udp_only = dig(dns, &["+noedns", "+ignore", "web.myco", "A"]);
    assert!(udp_only.contains(" tc"), "TC set over UDP:\n{udp_only}");
    assert!(a_records(&udp_only).len() < NODES, "{udp_only}");
    let fallback = dig(dns, &["+noedns", "web.myco", "A"]);
    assert!(
        fallback.contains("Truncated, retrying in TCP mode"),
        "{fallback}"
    );
    assert_eq!(a_records(&fallback), everyone, "{fallback}");
    let aaaa = dig(dns, &["web.myco", "AAAA"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    assert!(aaaa.contains("SOA"), "{aaaa}");
}
