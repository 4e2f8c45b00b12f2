//! Runs the built `myco` against a stand-in for myco-d: a Unix socket served by a test thread that
//! records the request and answers with canned bytes. Proves what `deploy` and `rm` send (checked
//! with myco-core's decoder and against `myco sign`'s own file), how `ls`, `nodes` and `status`
//! render the documented answers, and that every way a daemon can fail maps to its exit code with
//! a message that says what to do. The end-to-end test against the real daemon lives in tests/.

mod common;

use common::*;
use myco_core::crypto::verify_entry;
use myco_core::schema::entry::Entry;
use myco_testkit::scripted::{answer, ScriptedDaemon};
use std::fs;
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};

fn myco_env(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_myco"));
    command
        .args(args)
        .current_dir(dir.path())
        .env("MYCO_NIX", STAND_IN_NIX)
        .env_remove("MYCO_SOCKET");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// Asserts that `out` exited with `code` and its message contains every one of `needles`.
fn assert_failed(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.starts_with("myco: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(stdout(out).is_empty(), "{}", stdout(out));
}

/// A directory with an operator key and FULL_MANIFEST (service "web") as myco.json; returns the
/// key's id.
fn operator_dir(test: &str) -> (TempDir, u32) {
    let dir = TempDir::new(test);
    let key_id = keygen(&dir, "op.key").key_id();
    fs::write(dir.join("myco.json"), FULL_MANIFEST).unwrap();
    (dir, key_id)
}

fn deployed(name: &str, clock: u64, key_id: u32, outcome: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":{{"clock":{clock},"key_id":{key_id}}},"outcome":"{outcome}"}}"#
    )
}

/// `myco deploy` POSTs exactly the bytes `myco sign` writes for the same manifest, key and clock,
/// framed as the API asks, and reports the daemon's answer; `--json` prints that answer verbatim.
/// `myco deploy --entry` posts the signed file itself, and $MYCO_SOCKET names the socket.
#[test]
fn deploy_posts_what_sign_writes() {
    let (dir, key_id) = operator_dir("deploy");
    let clock = "1700000000000";
    sign_to(&dir, "web.entry", &["--clock", clock]);
    let signed = fs::read(dir.join("web.entry")).unwrap();
    let ok = deployed("web", 1_700_000_000_000, key_id, "applied");

    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", &ok));
    let args = [
        "deploy",
        "--operator-key",
        "op.key",
        "--clock",
        clock,
        "--socket",
        &daemon.socket(),
    ];
    let text = myco_ok(&dir, &args);
    let request = daemon.request();
    assert_eq!(request.line, "POST /deploy HTTP/1.1");
    for header in [
        "Host: localhost",
        "Connection: close",
        "Content-Type: application/octet-stream",
        &format!("Content-Length: {}", signed.len()),
    ] {
        assert!(request.headers.iter().any(|h| h == header), "{request:?}");
    }
    assert_eq!(request.body, signed);
    assert_eq!(text_field(&text, "name"), "web");
    assert_eq!(text_field(&text, "clock"), clock);
    assert_eq!(text_field(&text, "key_id"), key_id.to_string());
    assert_eq!(text_field(&text, "tombstone"), "false");
    assert_eq!(text_field(&text, "outcome"), "applied");

    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", &ok));
    let json = myco_ok(&dir, &[&args[..], &["--json", "myco.json"]].concat());
    assert_eq!(daemon.request().body, signed);
    assert_eq!(json, format!("{ok}\n"));

    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", &ok));
    let socket = daemon.socket();
    let out = myco_env(
        &dir,
        &["deploy", "--entry", "web.entry"],
        &[("MYCO_SOCKET", &socket)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(daemon.request().body, signed);
}

/// `myco sign` into `out` with the operator dir's key and manifest, plus `extra`.
fn sign_to(dir: &TempDir, out: &str, extra: &[&str]) {
    let mut args = vec!["sign", "--operator-key", "op.key", "--out", out];
    args.extend_from_slice(extra);
    myco_ok(dir, &args);
}

/// `myco rm NAME` posts a verified tombstone for NAME at the given clock: byte for byte what
/// `myco sign --delete` signs from that service's manifest.
#[test]
fn rm_posts_a_tombstone() {
    let (dir, key_id) = operator_dir("rm");
    let operator = myco_core::crypto::PublicKey(parse_hex32(&json_field(
        &myco_ok(&dir, &["pubkey", "--key", "op.key", "--json"]),
        "public_key",
    )));
    sign_to(&dir, "rm.entry", &["--delete", "--clock", "9"]);
    let daemon = ScriptedDaemon::answering(
        &dir,
        answer("200 OK", &deployed("web", 9, key_id, "unchanged")),
    );
    let text = myco_ok(
        &dir,
        &[
            "rm",
            "web",
            "--operator-key",
            "op.key",
            "--clock",
            "9",
            "--socket",
            &daemon.socket(),
        ],
    );
    let request = daemon.request();
    assert_eq!(request.line, "POST /deploy HTTP/1.1");
    let entry = Entry::decode(&request.body).unwrap();
    assert!(entry.body.is_tombstone());
    assert_eq!((entry.body.name, entry.body.version.clock), ("web", 9));
    assert_eq!(entry.body.version.key_id, key_id);
    assert!(verify_entry(&operator, &entry));
    assert_eq!(request.body, fs::read(dir.join("rm.entry")).unwrap());
    assert_eq!(text_field(&text, "tombstone"), "true");
    assert_eq!(text_field(&text, "outcome"), "unchanged");
}

/// `myco ls` renders GET /services as a table, deleted entries included, with a held rollout and
/// the box that runs the previous version, ignoring fields it does not show; `--json` prints the answer itself on one line, whether it came whole or chunked.
#[test]
fn ls_renders_services() {
    let dir = TempDir::new("ls");
    let body = r#"{"services":[{"name":"web","version":{"clock":7,"key_id":1},"deleted":false,"replicas":3,"source":"flake","rev":"152b279","placed_on":[{"id":"3f2a09c1d4e5b6a7","state":"running","version":"placed"},{"id":"11aa22bb33cc44dd","state":"pending","version":"previous"}],"rollout":{"state":"held","box":"3f2a09c1d4e5b6a7","reason":"crash-loop"}},{"name":"old-db","version":{"clock":1700000000000,"key_id":1},"deleted":true,"replicas":0,"source":null,"rev":null}]}"#;
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", body));
    let text = myco_ok(&dir, &["ls", "--socket", &daemon.socket()]);
    assert_eq!(daemon.request().line, "GET /services HTTP/1.1");
    assert_eq!(
        text,
        "NAME    VERSION        REV      STATUS    REPLICAS  ROLLOUT                   RUNNING ON\n\
         web     7              152b279  deployed  3         held 3f2a09c1 crash-loop  3f2a09c1 running, 11aa22bb previous\n\
         old-db  1700000000000  -        deleted   0         -                         -\n"
    );

    // A pretty-printed answer is printed on one line, otherwise as it came.
    let pretty = "{\n  \"services\": [],\n  \"extra\": {\"x\": \"a b\"}\n}\n";
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", pretty));
    let json = myco_ok(&dir, &["ls", "--json", "--socket", &daemon.socket()]);
    assert_eq!(json, "{  \"services\": [],  \"extra\": {\"x\": \"a b\"}}\n");
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", body));
    let json = myco_ok(&dir, &["ls", "--json", "--socket", &daemon.socket()]);
    assert_eq!(json, format!("{body}\n"));

    // A list longer than the daemon's answer buffer comes chunked, split anywhere.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [&body[..10], &body[10..]] {
        chunked.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let daemon = ScriptedDaemon::answering(&dir, chunked);
    let json = myco_ok(&dir, &["ls", "--json", "--socket", &daemon.socket()]);
    assert_eq!(json, format!("{body}\n"));
}

/// `myco nodes` renders GET /nodes as a table with this node marked, and its text cannot carry
/// terminal control characters; `--json` is the answer verbatim.
#[test]
fn nodes_renders_members() {
    let dir = TempDir::new("nodes");
    let body = r#"{"nodes":[{"id":"00ab00ab00ab00ab","address":"127.0.0.1:7946","state":"alive","incarnation":0,"arch":"x86_64","zone":0,"self":true},{"id":"11cd11cd11cd11cd","address":"[fd00::2]:7946","state":"suspect\u001b[2J","incarnation":4,"arch":"aarch64","zone":2,"self":false}]}"#;
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", body));
    let text = myco_ok(&dir, &["nodes", "--socket", &daemon.socket()]);
    assert_eq!(daemon.request().line, "GET /nodes HTTP/1.1");
    assert_eq!(
        text,
        "   ID                ADDRESS         STATE             ARCH     ZONE\n\
         *  00ab00ab00ab00ab  127.0.0.1:7946  alive             x86_64   0\n   \
         11cd11cd11cd11cd  [fd00::2]:7946  suspect\\u{1b}[2J  aarch64  2\n"
    );
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", body));
    let json = myco_ok(&dir, &["nodes", "--json", "--socket", &daemon.socket()]);
    assert_eq!(json, format!("{body}\n"));
}

const HEALTH_OK: &str = r#"{"status":"ok","wal":"ok","reserve":"present","io":"io_uring","services":12,"peers_alive":3,"node_id":"00ab00ab00ab00ab"}"#;

/// `myco status` prints every field of GET /health and exits 0 when healthy; a degraded daemon
/// (503 with its health) is printed too and exits 1 with what to check.
#[test]
fn status_renders_health() {
    let dir = TempDir::new("status");
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", HEALTH_OK));
    let text = myco_ok(&dir, &["status", "--socket", &daemon.socket()]);
    assert_eq!(daemon.request().line, "GET /health HTTP/1.1");
    assert_eq!(
        text,
        "status       ok\nwal          ok\nreserve      present\nio           io_uring\n\
         services     12\npeers_alive  3\nnode_id      00ab00ab00ab00ab\n"
    );
    let daemon = ScriptedDaemon::answering(&dir, answer("200 OK", HEALTH_OK));
    let json = myco_ok(&dir, &["status", "--json", "--socket", &daemon.socket()]);
    assert_eq!(json, format!("{HEALTH_OK}\n"));

    let degraded = r#"{"status":"degraded","wal":"failing","reserve":"released","io":"poll"}"#;
    let daemon = ScriptedDaemon::answering(&dir, answer("503 Service Unavailable", degraded));
    let out = myco(&dir, &["status", "--socket", &daemon.socket()]);
    daemon.request();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(text_field(&stdout(&out), "wal"), "failing");
    assert!(!stdout(&out).contains("node_id"));
    assert!(stderr(&out).contains("degraded (wal failing, reserve released)"));
    assert!(stderr(&out).contains("journalctl -u myco-d"));
}

/// No socket, and a socket nobody listens on, are exit 3 for every command that talks to the
/// daemon, with the command to check the daemon and the flag to fix the path.
#[test]
fn unreachable_daemon_exits_3() {
    let (dir, _) = operator_dir("unreachable");
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for socket in ["missing.sock", stale.to_str().unwrap()] {
        let commands: [&[&str]; 5] = [
            &["ls"],
            &["nodes"],
            &["status"],
            &["deploy", "--operator-key", "op.key"],
            &["rm", "web", "--operator-key", "op.key"],
        ];
        for args in commands {
            let out = myco(&dir, &[args, &["--socket", socket]].concat());
            assert_failed(
                &out,
                3,
                &[
                    &format!("cannot reach myco-d at '{socket}'"),
                    "is myco-d running?",
                    "systemctl status myco-d",
                    "--socket",
                ],
            );
        }
    }
    // $MYCO_SOCKET is used when --socket is not given, and --socket wins over it.
    let out = myco_env(&dir, &["ls"], &[("MYCO_SOCKET", "env.sock")]);
    assert_failed(&out, 3, &["'env.sock'"]);
    let out = myco_env(
        &dir,
        &["ls", "--socket", "flag.sock"],
        &[("MYCO_SOCKET", "env.sock")],
    );
    assert_failed(&out, 3, &["'flag.sock'"]);
}

/// A 4xx answer is exit 4 and shows the daemon's own error text; a 5xx answer is exit 1 and shows
/// it too. Nothing is printed to stdout.
#[test]
fn daemon_refusals_and_failures() {
    let (dir, _) = operator_dir("refusals");
    let forbidden = r#"{"error":"the entry's signature does not verify against the operator key; sign with the cluster's operator key","status":403}"#;
    let cases = [
        (
            "403 Forbidden",
            forbidden,
            4,
            "the entry's signature does not verify",
        ),
        (
            "400 Bad Request",
            r#"{"error":"entry does not decode","status":400}"#,
            4,
            "entry does not decode",
        ),
        (
            "503 Service Unavailable",
            r#"{"error":"not ready: replaying the WAL; retry in a few seconds","status":503}"#,
            1,
            "not ready: replaying the WAL",
        ),
        (
            "507 Insufficient Storage",
            r#"{"error":"disk full","status":507}"#,
            1,
            "disk full",
        ),
    ];
    for (status, body, code, text) in cases {
        let daemon = ScriptedDaemon::answering(&dir, answer(status, body));
        let out = myco(
            &dir,
            &[
                "deploy",
                "--operator-key",
                "op.key",
                "--socket",
                &daemon.socket(),
            ],
        );
        daemon.request();
        assert_failed(&out, code, &[text, &format!("HTTP {status}")]);
    }
    for command in ["ls", "nodes", "status"] {
        let daemon = ScriptedDaemon::answering(
            &dir,
            answer(
                "503 Service Unavailable",
                r#"{"error":"too many connections","status":503}"#,
            ),
        );
        let out = myco(&dir, &[command, "--socket", &daemon.socket()]);
        daemon.request();
        assert_failed(&out, 1, &["too many connections"]);
    }
    let daemon = ScriptedDaemon::answering(
        &dir,
        answer("404 Not Found", r#"{"error":"unknown path","status":404}"#),
    );
    let out = myco(&dir, &["ls", "--socket", &daemon.socket()]);
    daemon.request();
    assert_failed(&out, 4, &["unknown path"]);
}

/// Answers that are cut short, are not HTTP, are too large, or are not the documented JSON are
/// exit 1 with a message saying what is wrong, and nothing reaches stdout.
#[test]
fn broken_answers_exit_1() {
    let (dir, key_id) = operator_dir("broken");
    let truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"services\":".to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (truncated, "bytes into the answer, before its end"),
        (b"HTTP/1.1 200 OK\r\nContent-Len".to_vec(), "before its end"),
        (b"".to_vec(), "closed 0 bytes into the answer"),
        (b"garbage\r\n\r\n".to_vec(), "not HTTP/1.x"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n".to_vec(),
            "larger than myco reads",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n".to_vec(),
            "Transfer-Encoding",
        ),
        (answer("200 OK", "<html>"), "not what myco expects"),
        (
            answer("200 OK", r#"{"services":[{"name":"web"}]}"#),
            "missing field `version`",
        ),
        (
            answer("200 OK", r#"{"services":[]} trailing"#),
            "not what myco expects",
        ),
    ];
    for (bytes, needle) in cases {
        let daemon = ScriptedDaemon::answering(&dir, bytes);
        let out = myco(&dir, &["ls", "--json", "--socket", &daemon.socket()]);
        daemon.request();
        assert_failed(&out, 1, &[needle]);
    }
    // A deploy cut short may have been applied; the message says so, and that retrying is safe.
    let daemon = ScriptedDaemon::answering(&dir, b"HTTP/1.1 200 OK\r\n".to_vec());
    let out = myco(
        &dir,
        &[
            "deploy",
            "--operator-key",
            "op.key",
            "--socket",
            &daemon.socket(),
        ],
    );
    daemon.request();
    assert_failed(&out, 1, &["may or may not have been applied"]);
    // An answer about another entry than the one sent is a daemon bug, not a success.
    let daemon = ScriptedDaemon::answering(
        &dir,
        answer("200 OK", &deployed("other", 5, key_id, "applied")),
    );
    let out = myco(
        &dir,
        &[
            "deploy",
            "--operator-key",
            "op.key",
            "--clock",
            "5",
            "--socket",
            &daemon.socket(),
        ],
    );
    daemon.request();
    assert_failed(&out, 1, &["answered for 'other'"]);
}

/// Bad command lines exit 2 naming what is wrong, before any file is read or the daemon is
/// contacted (the socket does not exist, so contacting it would exit 3).
#[test]
fn bad_command_lines_exit_2() {
    let (dir, _) = operator_dir("daemon-bad-flags");
    sign_to(&dir, "web.entry", &["--clock", "1"]);
    let cases: [(&[&str], &str); 15] = [
        (&["ls", "--frobnicate"], "--frobnicate"),
        (&["ls", "web"], "'web'"),
        (&["nodes", "--socket"], "--socket needs a value"),
        (&["status", "--socket", "--json"], "--socket needs a value"),
        (&["deploy"], "--operator-key"),
        (
            &["deploy", "--operator-key", "op.key", "--clock", "0"],
            "--clock",
        ),
        (
            &["deploy", "a.json", "b.json", "--operator-key", "op.key"],
            "b.json",
        ),
        (&["deploy", "--entry", "web.entry", "myco.json"], "MANIFEST"),
        (
            &["deploy", "--entry", "web.entry", "--operator-key", "op.key"],
            "--operator-key",
        ),
        (
            &["deploy", "--entry", "web.entry", "--clock", "5"],
            "--clock",
        ),
        (&["rm", "--operator-key", "op.key"], "NAME"),
        (&["rm", "web"], "--operator-key"),
        (
            &["rm", "Web", "--operator-key", "op.key"],
            "'Web' is not a service name",
        ),
        (
            &["rm", "web-", "--operator-key", "op.key"],
            "not a service name",
        ),
        (&["rm", "web", "db", "--operator-key", "op.key"], "'db'"),
    ];
    for (args, needle) in cases {
        let out = myco(&dir, &[args, &["--socket", "none.sock"]].concat());
        assert_failed(&out, 2, &[needle]);
    }
    let out = myco(&dir, &["rm", "a\u{1b}[2J", "--operator-key", "op.key"]);
    assert_failed(&out, 2, &["a\\u{1b}[2J"]);
}

/// Local failures before anything is sent are exit 1: a manifest or key that is refused, and an
/// --entry file that is not a signed entry.
#[test]
fn local_failures_exit_1() {
    let (dir, _) = operator_dir("daemon-local");
    let deploy = |extra: &[&str]| {
        let args = [&["deploy", "--socket", "none.sock"][..], extra].concat();
        myco(&dir, &args)
    };
    let out = deploy(&["missing.json", "--operator-key", "op.key"]);
    assert_failed(&out, 1, &["cannot read manifest 'missing.json'"]);
    let out = deploy(&["--operator-key", "missing.key"]);
    assert_failed(&out, 1, &["missing.key", "myco keygen"]);
    let out = myco(
        &dir,
        &[
            "rm",
            "web",
            "--operator-key",
            "missing.key",
            "--socket",
            "none.sock",
        ],
    );
    assert_failed(&out, 1, &["missing.key"]);
    fs::write(dir.join("junk.entry"), b"not an entry").unwrap();
    let out = deploy(&["--entry", "junk.entry"]);
    assert_failed(
        &out,
        1,
        &["'junk.entry' is not a signed entry", "myco sign"],
    );
    fs::write(dir.join("big.entry"), vec![0u8; 4096]).unwrap();
    let out = deploy(&["--entry", "big.entry"]);
    assert_failed(&out, 1, &["longer than a signed entry can be"]);
    let out = deploy(&["--entry", "missing.entry"]);
    assert_failed(&out, 1, &["cannot read --entry 'missing.entry'"]);
}
