//! `myco deploy --wait` and `myco rm --wait` against a stand-in for myco-d that acknowledges the
//! deploy and then answers `GET /services/web` with a scripted series of states, the last one
//! repeated. Proves that the wait ends with success when every placed box runs the service, with
//! exit 1 on a timeout, on a unit that stays failed, and on empty placement, and that nothing but
//! plain lines reaches a stderr that is not a terminal.

mod common;

use common::*;
use myco_testkit::scripted::{answer, ScriptedDaemon};
use std::fs;
use std::process::Output;

const CLOCK: &str = "1700000000000";
/// Polls of a wait that ends at a failed unit: one every 250 ms through the 300 ms grace the
/// test gives (the hidden `--failing-grace-ms`), about 4. A wait that ran on to its 30 s timeout
/// would poll about 120 times.
const POLLS_UNTIL_FAILED_MAX: usize = 20;

/// A stand-in for myco-d that answers `POST /deploy` with `deployed` and each `GET
/// /services/web` with the next of `states` (status and body), repeating the last.
fn scripted(
    dir: &TempDir,
    deployed: String,
    states: Vec<(&'static str, String)>,
) -> ScriptedDaemon {
    let mut polls = 0;
    ScriptedDaemon::start(dir, move |request| {
        let (status, body) = if request.line.starts_with("POST /deploy ") {
            ("200 OK", deployed.clone())
        } else if request.line.starts_with("GET /services/web ") {
            let state = states[polls.min(states.len() - 1)].clone();
            polls += 1;
            state
        } else {
            (
                "404 Not Found",
                r#"{"error":"unknown path","status":404}"#.into(),
            )
        };
        answer(status, &body)
    })
}

/// The request lines the stand-in received, in order.
fn request_lines(daemon: ScriptedDaemon) -> Vec<String> {
    daemon.requests().into_iter().map(|r| r.line).collect()
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
    let daemon = scripted(&dir, deployed, states);
    let out = deploy_wait(&dir, &daemon, &[]);
    let requests = request_lines(daemon);
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
    let daemon = scripted(&dir, deployed, states);
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

/// A unit that stays failed (past a grace shortened to 300 ms) ends the wait well before the
/// timeout, with exit 1 and a pointer to the service's logs.
#[test]
fn deploy_wait_fails_early_on_a_failed_unit() {
    let (dir, deployed) = setup("wait-failed");
    let states = vec![
        web(false, &[(A, "pending"), (B, "running")]),
        web(false, &[(A, "failed"), (B, "running")]),
    ];
    let daemon = scripted(&dir, deployed, states);
    let out = deploy_wait(
        &dir,
        &daemon,
        &["--timeout", "30", "--failing-grace-ms", "300"],
    );
    let polls = request_lines(daemon).len() - 1;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("web is failed on 3f2a09c1"), "{err}");
    assert!(err.contains("logs?service=web"), "{err}");
    assert!(!err.contains("after 30 s"), "not the timeout: {err}");
    assert!(polls <= POLLS_UNTIL_FAILED_MAX, "{polls} polls: {err}");
    assert_plain(&err);
}

/// A held rollout (the new version failed on the first box, which went back to the version
/// before) ends the wait at once with exit 1, naming the box and the failure, though no box
/// reports `failed`: they all serve the version before.
#[test]
fn deploy_wait_fails_on_a_held_rollout() {
    let (dir, deployed) = setup("wait-held");
    let (status, rolling) = web(false, &[(A, "running"), (B, "pending")]);
    let held = rolling.replace(
        r#""state":"running"}"#,
        r#""state":"pending","version":"previous"}"#,
    );
    let held = held.replacen(
        r#","restarts_here""#,
        &format!(
            r#","rollout":{{"state":"held","box":"{A}","reason":"crash-loop"}},"restarts_here""#
        ),
        1,
    );
    let daemon = scripted(&dir, deployed, vec![(status, rolling), (status, held)]);
    let out = deploy_wait(&dir, &daemon, &["--timeout", "30"]);
    let polls = request_lines(daemon).len() - 1;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rollout of web"), "{err}");
    assert!(
        err.contains("is held: it failed on 3f2a09c1 (crash-loop)"),
        "{err}"
    );
    assert!(!err.contains("after 30 s"), "not the timeout: {err}");
    assert!(polls <= POLLS_UNTIL_FAILED_MAX, "{polls} polls: {err}");
    assert_plain(&err);
}

/// Empty placement means no box can run the service: exit 1 at once, saying so.
#[test]
fn deploy_wait_stops_when_no_box_is_eligible() {
    let (dir, deployed) = setup("wait-none");
    let daemon = scripted(&dir, deployed, vec![web(false, &[])]);
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
    let daemon = scripted(&dir, deployed, states);
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
