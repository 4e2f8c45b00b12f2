//! `myco logs` against a stand-in for myco-d: proves the query it sends for each flag, that a
//! journal with no Content-Length is copied to stdout until the connection closes, byte for byte
//! into a pipe, and that a 404 for a service running elsewhere exits 4 with the daemon's reason.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Serves one connection: reads the request head, writes `answer`, closes. Returns the request
/// line.
fn serve_once(dir: &TempDir, answer: Vec<u8>) -> (String, JoinHandle<String>) {
    let socket = dir.join("myco.sock");
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    let thread = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        // Written in two parts, as journalctl's output arrives.
        let (first, second) = answer.split_at(answer.len() / 2);
        stream.write_all(first).unwrap();
        thread::sleep(Duration::from_millis(50));
        stream.write_all(second).unwrap();
        let head = String::from_utf8(head).unwrap();
        head.lines().next().unwrap().to_string()
    });
    (socket.to_str().unwrap().to_string(), thread)
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
    let (socket, server) = serve_once(&dir, answer.into_bytes());
    let out = myco(
        &dir,
        &["logs", "web", "-f", "-n", "20", "--socket", &socket],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.join().unwrap(),
        "GET /logs?service=web&follow=true&lines=20 HTTP/1.1"
    );
    assert_eq!(stdout(&out), JOURNAL);

    let (socket, server) = serve_once(
        &dir,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let out = myco(&dir, &["logs", "web", "--socket", &socket]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        server.join().unwrap(),
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
    let (socket, server) = serve_once(&dir, answer.into_bytes());
    let out = myco(&dir, &["logs", "web", "--socket", &socket]);
    server.join().unwrap();
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
