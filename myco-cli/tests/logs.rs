//! `myco logs` against a stand-in for myco-d: proves the query it sends for each flag, that a
//! journal with no Content-Length is copied to stdout until the connection closes, byte for byte
//! into a pipe, and that a 404 for a service running elsewhere exits 4 with the daemon's reason.

mod common;

use common::*;
use myco_testkit::scripted::{Delivery, ScriptedDaemon};

/// A stand-in that answers every request with `answer`, in two parts, as journalctl's output
/// arrives.
fn serve(dir: &TempDir, answer: Vec<u8>) -> ScriptedDaemon {
    ScriptedDaemon::start_with(dir, Delivery::Split, move |_| answer.clone())
}

const JOURNAL: &str = "2026-11-26T11:00:00+0000 box web[42]: listening on 8080\n\
                       2026-11-26T11:00:01+0000 box web[42]: GET / \x1b[31m200\x1b[0m\n";

/// The journal reaches a piped stdout exactly as sent; `-f -n 20` becomes the documented query.
#[test]
fn logs_streams_the_journal() {
    let dir = TempDir::new("logs-ok");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
         {JOURNAL}"
    );
    let server = serve(&dir, answer.into_bytes());
    let socket = server.socket();
    let out = myco(
        &dir,
        &["logs", "web", "-f", "-n", "20", "--socket", &socket],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.request().line,
        "GET /logs?service=web&follow=true&lines=20 HTTP/1.1"
    );
    assert_eq!(stdout(&out), JOURNAL);

    let server = serve(
        &dir,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let socket = server.socket();
    let out = myco(&dir, &["logs", "web", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.request().line,
        "GET /logs?service=web&follow=false HTTP/1.1"
    );
    assert_eq!(stdout(&out), "");
}

/// A service that runs on other boxes is a 404 naming them: exit 4, the reason quoted.
#[test]
fn logs_elsewhere_is_refused() {
    let dir = TempDir::new("logs-404");
    let body = r#"{"error":"web does not run on this box; it runs on 11aa22bb33cc44dd ([fd00::3]:7946): ask the myco-d there","status":404}"#;
    let answer = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let server = serve(&dir, answer.into_bytes());
    let socket = server.socket();
    let out = myco(&dir, &["logs", "web", "--socket", &socket]);
    server.request();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("runs on 11aa22bb33cc44dd"), "{err}");
    assert!(stdout(&out).is_empty());
}

/// Bad names and line counts are usage errors, before any connection.
#[test]
fn logs_bad_command_lines() {
    let dir = TempDir::new("logs-usage");
    for args in [
        &["logs"][..],
        &["logs", "Web"],
        &["logs", "web", "-n", "10001"],
        &["logs", "web", "--lines", "x"],
        &["logs", "web", "--lines", "1", "-n", "2"],
    ] {
        let out = myco(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
