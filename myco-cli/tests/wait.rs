//! `myco deploy --wait` and `myco rm --wait` against a stand-in for myco-d that acknowledges the
//! deploy and then answers `GET /services/web` with a scripted series of states, the last one
//! repeated. Proves that the wait ends with success when every placed box runs the service, with
//! exit 1 on a timeout, on a unit that stays failed, and on empty placement, and that nothing but
//! plain lines reaches a stderr that is not a terminal.

mod common;

use common::*;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const CLOCK: &str = "1700000000000";

/// A stand-in for myco-d serving any number of connections until stopped.
struct ScriptedDaemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    /// The request lines it received, in order.
    thread: JoinHandle<Vec<String>>,
}

impl ScriptedDaemon {
    /// Answers `POST /deploy` with `deployed` and each `GET /services/web` with the next of
    /// `states` (status and body), repeating the last.
    fn start(dir: &TempDir, deployed: String, states: Vec<(&'static str, String)>) -> Self {
        let socket = dir.join("myco.sock");
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut lines = Vec::new();
            let mut polls = 0;
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                let line = read_request(&mut stream);
                let (status, body) = if line.starts_with("POST /deploy ") {
                    ("200 OK", deployed.clone())
                } else if line.starts_with("GET /services/web ") {
                    let state = states[polls.min(states.len() - 1)].clone();
                    polls += 1;
                    state
                } else {
                    (
                        "404 Not Found",
                        r#"{"error":"unknown path","status":404}"#.into(),
                    )
                };
                lines.push(line);
                let _ = stream.write_all(&answer(status, &body));
            }
            lines
        });
        ScriptedDaemon {
            socket,
            stop,
            thread,
        }
    }

    fn socket(&self) -> String {
        self.socket.to_str().unwrap().to_string()
    }

    fn requests(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Reads a request's head and its `Content-Length` bytes of body; returns the request line.
fn read_request(stream: &mut UnixStream) -> String {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length = head
        .lines()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_string()
}

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `GET /services/web`'s body with the given placement.
fn web(deleted: bool, placed: &[(&str, &str)]) -> (&'static str, String) {
    let placed: Vec<String> = placed
        .iter()
        .map(|(id, state)| format!(r#"{{"id":"{id}","state":"{state}"}}"#))
        .collect();
    let body = format!(
        r#"{{"name":"web","version":{{"clock":{CLOCK},"key_id":1}},"deleted":{deleted},"replicas":{},"source":"flake","placed_on":[{}],"restarts_here":0}}"#,
        if deleted { 0 } else { 2 },
        placed.join(",")
    );
    ("200 OK", body)
}

const A: &str = "3f2a09c1d4e5b6a7";
const B: &str = "11aa22bb33cc44dd";

/// A directory with an operator key and FULL_MANIFEST (service "web"), and the deploy answer
/// for it at CLOCK.
fn setup(test: &str) -> (TempDir, String) {
    let dir = TempDir::new(test);
    let key_id = keygen(&dir, "op.key").key_id();
    fs::write(dir.join("myco.json"), FULL_MANIFEST).unwrap();
    let deployed = format!(
        r#"{{"name":"web","version":{{"clock":{CLOCK},"key_id":{key_id}}},"outcome":"applied"}}"#
    );
    (dir, deployed)
}

fn deploy_wait(dir: &TempDir, daemon: &ScriptedDaemon, extra: &[&str]) -> Output {
    let socket = daemon.socket();
    let mut args = vec![
        "deploy",
        "--operator-key",
        "op.key",
        "--clock",
        CLOCK,
        "--socket",
        &socket,
        "--wait",
    ];
    args.extend_from_slice(extra);
    myco(dir, &args)
}

/// A stderr that is a pipe gets plain lines: no carriage return, no escape sequence.
fn assert_plain(err: &str) {
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
}

/// The wait follows the service from pending to running on both boxes and then succeeds,
/// printing the deploy's answer on stdout and one final line on stderr.
#[test]
fn deploy_wait_succeeds_once_running_everywhere() {
    let (dir, deployed) = setup("wait-ok");
    let states = vec![
        web(false, &[(A, "pending"), (B, "pending")]),
        web(false, &[(A, "starting"), (B, "pending")]),
        web(false, &[(A, "running"), (B, "pending")]),
        web(false, &[(A, "running"), (B, "running")]),
    ];
    let daemon = ScriptedDaemon::start(&dir, deployed, states);
    let out = deploy_wait(&dir, &daemon, &[]);
    let requests = daemon.requests();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(text_field(&stdout(&out), "outcome"), "applied");
    assert_eq!(
        err,
        "web: 2/2 running: 3f2a09c1 running, 11aa22bb running\n"
    );
    assert_plain(&err);
    assert_eq!(requests[0], "POST /deploy HTTP/1.1");
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(requests[1..]
        .iter()
        .all(|r| r == "GET /services/web HTTP/1.1"));
}

/// A box that never leaves pending makes the wait time out with exit 1, naming what is still
/// not running; the entry stays stored, and the message says so.
#[test]
fn deploy_wait_times_out() {
    let (dir, deployed) = setup("wait-timeout");
    let states = vec![web(false, &[(A, "running"), (B, "pending")])];
    let daemon = ScriptedDaemon::start(&dir, deployed, states);
    let out = deploy_wait(&dir, &daemon, &["--timeout", "1"]);
    daemon.requests();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("myco: web is not running everywhere after 1 s"),
        "{err}"
    );
    assert!(err.contains("11aa22bb pending"), "{err}");
    assert!(err.contains("stored"), "{err}");
    assert_plain(&err);
}

/// A unit that stays failed ends the wait well before the timeout, with exit 1 and a pointer to
/// the service's logs.
#[test]
fn deploy_wait_fails_early_on_a_failed_unit() {
    let (dir, deployed) = setup("wait-failed");
    let states = vec![
        web(false, &[(A, "pending"), (B, "running")]),
        web(false, &[(A, "failed"), (B, "running")]),
    ];
    let daemon = ScriptedDaemon::start(&dir, deployed, states);
    let started = Instant::now();
    let out = deploy_wait(&dir, &daemon, &["--timeout", "30"]);
    let waited = started.elapsed();
    daemon.requests();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("web is failed on 3f2a09c1"), "{err}");
    assert!(err.contains("logs?service=web"), "{err}");
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    assert_plain(&err);
}

/// Empty placement means no box can run the service: exit 1 at once, saying so.
#[test]
fn deploy_wait_stops_when_no_box_is_eligible() {
    let (dir, deployed) = setup("wait-none");
    let daemon = ScriptedDaemon::start(&dir, deployed, vec![web(false, &[])]);
    let out = deploy_wait(&dir, &daemon, &[]);
    daemon.requests();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no box is eligible to run web"), "{err}");
}

/// `myco rm --wait` waits while the tombstone still shows a placement, and is done once the
/// service shows deleted with none.
#[test]
fn rm_wait_until_deleted() {
    let (dir, _) = setup("wait-rm");
    let key_id = keygen(&dir, "rm.key").key_id();
    let deployed = format!(
        r#"{{"name":"web","version":{{"clock":{CLOCK},"key_id":{key_id}}},"outcome":"applied"}}"#
    );
    let states = vec![web(true, &[(A, "stopped")]), web(true, &[])];
    let daemon = ScriptedDaemon::start(&dir, deployed, states);
    let socket = daemon.socket();
    let out = myco(
        &dir,
        &[
            "rm",
            "web",
            "--operator-key",
            "rm.key",
            "--clock",
            CLOCK,
            "--socket",
            &socket,
            "--wait",
        ],
    );
    daemon.requests();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "web: removed\n");
}

/// `--timeout` needs `--wait` and a whole number of seconds.
#[test]
fn timeout_flag_checked() {
    let (dir, _) = setup("wait-flags");
    for (args, needle) in [
        (
            &["deploy", "--operator-key", "op.key", "--timeout", "5"][..],
            "needs --wait",
        ),
        (
            &[
                "deploy",
                "--operator-key",
                "op.key",
                "--wait",
                "--timeout",
                "0",
            ][..],
            "--timeout must be",
        ),
        (
            &[
                "rm",
                "web",
                "--operator-key",
                "op.key",
                "--wait",
                "--timeout",
                "x",
            ][..],
            "got 'x'",
        ),
    ] {
        let out = myco(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
}
