//! Talking to the local daemon: one HTTP/1.1 request per connection over its Unix socket, and the
//! answer turned into what the operator needs to know.
//!
//! Every failure maps to one exit code, so scripts can act on it: the socket cannot be reached or
//! does not answer in time (3: start the daemon, fix --socket, retry); the daemon refused the
//! request (4xx, exit 4: do not retry the same request); the daemon failed (5xx) or answered
//! something that is not an answer (exit 1). A deploy that stops between sending and a whole
//! answer may or may not have been applied; the message says that retrying is safe, since the
//! daemon answers "unchanged" for a version it already holds.

use crate::args::Error;
use crate::output::terminal_safe;
use myco_cli::http::{self, parse_response, ReadError};
use myco_core::config::{DEPLOY_ANSWER_MARGIN_MS, DEPLOY_DURABLE_TIMEOUT_MS};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `myco-d` listens under systemd (`RuntimeDirectory=myco`); docs/daemon.md says why not
/// /var/run/myco.sock.
pub const SOCKET_DEFAULT: &str = "/run/myco/myco.sock";
/// Names the socket when --socket does not.
pub const SOCKET_ENV: &str = "MYCO_SOCKET";

/// A deploy waits for the daemon's fdatasync, which a busy or failing disk can stretch: as long
/// as the daemon waits before it answers 507, plus a margin, so that its answer arrives first.
pub const DEPLOY_TIMEOUT: Duration =
    Duration::from_millis(DEPLOY_DURABLE_TIMEOUT_MS + DEPLOY_ANSWER_MARGIN_MS);
/// Queries only read the daemon's memory.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket: `--socket`, else a non-empty `$MYCO_SOCKET`, else `SOCKET_DEFAULT`.
pub fn socket_path(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(SOCKET_DEFAULT))
}

/// One request: the method and path, and for the messages what it asks for ("the deploy").
pub struct Request<'a> {
    pub method: &'static str,
    pub path: &'static str,
    pub body: &'a [u8],
    pub what: &'static str,
    pub timeout: Duration,
}

impl Request<'_> {
    /// What to tell the operator when the outcome of a request is unknown.
    fn outcome_unknown(&self) -> &'static str {
        if self.method == "POST" {
            "; it may or may not have been applied, and running the same command again is safe"
        } else {
            ""
        }
    }
}

/// A whole answer, any status.
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
}

/// Sends `request` to the daemon at `socket` and reads its whole answer, whatever its status.
pub fn call(socket: &Path, request: &Request<'_>) -> Result<Answer, Error> {
    let deadline = Instant::now() + request.timeout;
    let shown = socket.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| unreachable(socket, &e))?;
    let timed_out = || {
        Error::Unreachable(format!(
            "myco-d at '{shown}' did not answer {} within {} s{}; check 'systemctl status myco-d' \
             and 'journalctl -u myco-d'",
            request.what,
            request.timeout.as_secs(),
            request.outcome_unknown()
        ))
    };
    let lost = |e: io::Error| {
        Error::Failed(format!(
            "the connection to myco-d at '{shown}' failed during {}: {e}{}; check \
             'journalctl -u myco-d'",
            request.what,
            request.outcome_unknown()
        ))
    };

    stream
        .set_write_timeout(Some(request.timeout))
        .map_err(lost)?;
    let bytes = http::request(request.method, request.path, request.body);
    match stream.write_all(&bytes) {
        Ok(()) => {}
        // A daemon that refuses a request early may answer and close before reading it all;
        // its answer is still there to read.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) => {}
        Err(e) if is_timeout(&e) => return Err(timed_out()),
        Err(e) => return Err(lost(e)),
    }

    let mut received = Vec::new();
    let read = |chunk: &mut [u8]| {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        stream.read(chunk)
    };
    match http::read_until(&mut received, read, |b| parse_response(b).map(|_| ())) {
        Ok(()) => {}
        Err(ReadError::Answer(e)) => return Err(not_an_answer(socket, request, &e.to_string())),
        Err(ReadError::Closed) => {
            let why = format!(
                "the connection closed {} bytes into the answer, before its end",
                received.len()
            );
            return Err(not_an_answer(socket, request, &why));
        }
        Err(ReadError::Io(e)) if is_timeout(&e) => return Err(timed_out()),
        Err(ReadError::Io(e)) => return Err(lost(e)),
    }
    let response = parse_response(&received).expect("read_until stopped at a whole answer");
    Ok(Answer {
        status: response.status,
        reason: String::from_utf8_lossy(response.reason).into_owned(),
        body: response.body.to_vec(),
    })
}

/// Sends `request` and returns the body of its 200 answer; any other status is the error the
/// module comment describes, carrying the daemon's own `error` text.
pub fn call_ok(socket: &Path, request: &Request<'_>) -> Result<Vec<u8>, Error> {
    let answer = call(socket, request)?;
    if answer.status == 200 {
        return Ok(answer.body);
    }
    Err(status_error(&answer, request))
}

/// The error for an answer that is not 200.
/// The error for a streamed answer (`/stream`, `/logs`) that did not start as a 200: the
/// daemon's own error when it sent one, else what went wrong with the bytes.
pub fn stream_error(bytes: &[u8], request: &Request<'_>) -> Error {
    match parse_response(bytes) {
        Ok(r) => status_error(
            &Answer {
                status: r.status,
                reason: String::from_utf8_lossy(r.reason).into_owned(),
                body: r.body.to_vec(),
            },
            request,
        ),
        Err(_) if bytes.is_empty() => Error::Unreachable(
            "myco-d closed the connection without answering; check 'journalctl -u myco-d'".into(),
        ),
        Err(e) => Error::Failed(format!(
            "myco-d's answer to the request for {} is not an HTTP answer ({e}); check that \
             myco and myco-d are the same version",
            request.what
        )),
    }
}

pub fn status_error(answer: &Answer, request: &Request<'_>) -> Error {
    assert_ne!(answer.status, 200);
    let status = format!("HTTP {} {}", answer.status, terminal_safe(&answer.reason))
        .trim_end()
        .to_string();
    // Every error the daemon sends is {"error": ..., "status": N}; anything else has no reason.
    let text = serde_json::from_slice::<ErrorBody>(&answer.body)
        .map(|e| terminal_safe(&e.error))
        .unwrap_or_else(|_| "no reason given".into());
    match answer.status {
        400..=499 => Error::Refused(format!(
            "myco-d refused {} ({status}): {text}",
            request.what
        )),
        500..=599 => Error::Failed(format!(
            "myco-d failed {} ({status}): {text}; nothing changed, so retry once it is fixed \
             (see 'journalctl -u myco-d')",
            request.what
        )),
        _ => Error::Failed(format!(
            "myco-d answered {} with {status}, which myco does not expect; check that myco and \
             myco-d are the same version (myco --version, myco-d --version)",
            request.what
        )),
    }
}

/// The daemon's error body. Other fields (`status`) are tolerated and not needed.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Parses a 200 answer's JSON body into the shape docs/api.md gives it; unknown fields are
/// tolerated, so a newer daemon may add some.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], request: &Request<'_>) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Failed(format!(
            "myco-d's answer to {} is not what myco expects: {e}; check that myco and myco-d are \
             the same version (myco --version, myco-d --version)",
            request.what
        ))
    })
}

/// A JSON body on one line, for `--json`. Valid JSON holds CR and LF only as whitespace between
/// tokens (a string may not hold them raw), so dropping them leaves the same JSON, otherwise
/// verbatim. The caller has parsed the body, so it is valid JSON.
pub fn json_line(body: &[u8]) -> Result<String, Error> {
    let text = std::str::from_utf8(body).map_err(|_| {
        Error::Failed("myco-d's answer is not UTF-8 text; check 'journalctl -u myco-d'".into())
    })?;
    let mut line: String = text.chars().filter(|&c| c != '\r' && c != '\n').collect();
    line.truncate(line.trim_end().len());
    line.push('\n');
    Ok(line)
}

fn is_timeout(e: &io::Error) -> bool {
    // A socket read timeout surfaces as EAGAIN (WouldBlock) on Linux.
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The error for a socket that cannot be connected to, with the likeliest fix for the cause.
fn unreachable(socket: &Path, e: &io::Error) -> Error {
    let shown = socket.display();
    let what_to_do = match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "the socket's group may deploy; check 'ls -l {shown}' and that your user is in that \
             group"
        ),
        _ => format!(
            "is myco-d running? check 'systemctl status myco-d' and --socket (or {SOCKET_ENV}; \
             the default is {SOCKET_DEFAULT})"
        ),
    };
    Error::Unreachable(format!(
        "cannot reach myco-d at '{shown}': {e}; {what_to_do}"
    ))
}

/// The error for bytes that are not a whole HTTP answer.
fn not_an_answer(socket: &Path, request: &Request<'_>, why: &str) -> Error {
    Error::Failed(format!(
        "'{}' gave no valid answer to {}: {why}{}; check that it is myco-d's socket and that \
         myco and myco-d are the same version (myco --version, myco-d --version)",
        socket.display(),
        request.what,
        request.outcome_unknown()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// --socket wins over $MYCO_SOCKET, which wins over the default unless it is empty.
    #[test]
    fn socket_precedence() {
        let flag = PathBuf::from("/tmp/flag.sock");
        let env = Some(OsString::from("/tmp/env.sock"));
        assert_eq!(socket_path(Some(flag.clone()), env.clone()), flag);
        assert_eq!(socket_path(None, env), PathBuf::from("/tmp/env.sock"));
        assert_eq!(
            socket_path(None, Some(OsString::new())),
            PathBuf::from(SOCKET_DEFAULT)
        );
        assert_eq!(socket_path(None, None), PathBuf::from(SOCKET_DEFAULT));
    }

    fn request() -> Request<'static> {
        Request {
            method: "POST",
            path: "/deploy",
            body: b"",
            what: "the deploy",
            timeout: DEPLOY_TIMEOUT,
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            reason: "Reason".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// 4xx is a refusal (exit 4) and 5xx a failure (exit 1), both quoting the daemon's error text
    /// with its control characters escaped; a body without one says so.
    #[test]
    fn statuses_map_to_exit_codes() {
        let refused = status_error(
            &answer(403, r#"{"error":"bad \u001b signature","status":403}"#),
            &request(),
        );
        assert_eq!(refused.exit_code(), 4);
        assert!(refused.message().contains("HTTP 403 Reason"));
        assert!(refused.message().contains("bad \\u{1b} signature"));
        let failed = status_error(&answer(507, r#"{"error":"disk full"}"#), &request());
        assert_eq!(failed.exit_code(), 1);
        assert!(failed.message().contains("disk full"));
        let odd = status_error(&answer(302, "<html>"), &request());
        assert_eq!(odd.exit_code(), 1);
        let bare = status_error(&answer(404, "not json"), &request());
        assert_eq!(bare.exit_code(), 4);
        assert!(bare.message().contains("no reason given"));
    }

    /// JSON bodies print on one line, line breaks between tokens removed and nothing else changed.
    #[test]
    fn json_line_keeps_json_verbatim() {
        assert_eq!(
            json_line(b"{\"a\": 1,\r\n \"b\":\"x y\"}\n").unwrap(),
            "{\"a\": 1, \"b\":\"x y\"}\n"
        );
        assert!(json_line(b"\xff").is_err());
    }

    /// The CLI waits for a deploy's answer longer than the daemon waits before it answers 507,
    /// by at least two of the daemon's once-a-second deadline checks: a deploy the disk could not
    /// take gets the daemon's reason, not "did not answer".
    #[test]
    fn deploys_wait_longer_than_the_daemons_deadline() {
        let daemon = Duration::from_millis(DEPLOY_DURABLE_TIMEOUT_MS);
        assert!(
            DEPLOY_TIMEOUT >= daemon + Duration::from_secs(2),
            "{DEPLOY_TIMEOUT:?}"
        );
    }

    /// Read timeouts, which Linux reports as EAGAIN, count as timeouts.
    #[test]
    fn timeouts_recognised() {
        assert!(is_timeout(&io::Error::from(io::ErrorKind::WouldBlock)));
        assert!(is_timeout(&io::Error::from(io::ErrorKind::TimedOut)));
        assert!(!is_timeout(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
    }

    /// A daemon that accepts and never answers is exit 3 once the request's timeout passes, and
    /// the message for a deploy says that retrying is safe.
    #[test]
    fn silent_daemon_times_out() {
        let dir = myco_testkit::TempDir::new("client");
        let socket = dir.join("silent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let request = Request {
            timeout: Duration::from_millis(200),
            ..request()
        };
        // The backlog holds the connection, so connect succeeds and the read times out.
        let error = call(&socket, &request).err().unwrap();
        drop(listener);
        assert_eq!(error.exit_code(), 3, "{}", error.message());
        assert!(error.message().contains("did not answer the deploy"));
        assert!(error
            .message()
            .contains("running the same command again is safe"));
    }

    /// A missing socket and a refused connection are exit 3 and point at systemctl and --socket;
    /// a permission problem points at the socket's group.
    #[test]
    fn unreachable_socket_messages() {
        let missing = call(Path::new("/nonexistent/myco.sock"), &request())
            .err()
            .unwrap();
        assert_eq!(missing.exit_code(), 3);
        assert!(missing.message().contains("systemctl status myco-d"));
        assert!(missing.message().contains("--socket"));
        let denied = unreachable(
            Path::new("/run/myco/myco.sock"),
            &io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.exit_code(), 3);
        assert!(denied.message().contains("ls -l /run/myco/myco.sock"));
    }
}
