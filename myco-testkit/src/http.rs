//! An HTTP/1.1 client for the daemon's API on its Unix socket: one request per connection
//! (`Connection: close`), the answer read to the end and split with `httparse`. Also `curl`, for
//! tests that prove what a standard client sees.

use crate::run::{run, CALL_TIMEOUT};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Header lines an answer may carry; the daemon writes a handful.
const HEADERS_MAX: usize = 32;

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }
}

/// Splits a whole HTTP/1.x answer into status, head and body; `None` if the head is incomplete or
/// not HTTP.
pub fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
        return None;
    };
    let status = response.code?;
    let head = String::from_utf8_lossy(&bytes[..head_len]);
    Some(Answer {
        status,
        head: head.trim_end_matches("\r\n").to_string(),
        body: String::from_utf8_lossy(&bytes[head_len..]).into_owned(),
    })
}

/// Sends `request` on a fresh connection and reads until the daemon closes it; the answer as text.
/// For what a client would not send (half requests, lying headers).
pub fn raw_request(socket: &Path, request: &[u8], timeout: Duration) -> std::io::Result<String> {
    let answer = exchange(socket, request, timeout)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Sends `request` and reads the answer: up to its `Content-Length` when the head gives one (so
/// a benchmark's time ends with the answer, not with the close), else until the daemon closes.
fn exchange(socket: &Path, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut answer = Vec::with_capacity(4096);
    let mut buf = [0u8; 16384];
    while !is_whole(&answer) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(answer)
}

/// True once `bytes` hold a complete head with a `Content-Length` and that many body bytes.
fn is_whole(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(bytes) else {
        return false;
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    length.is_some_and(|length| bytes.len() >= head_len + length)
}

/// `METHOD path` with `body` on a fresh connection. An error if the socket does not connect or the
/// exchange fails; an answer that is not HTTP is an error too (`InvalidData`).
pub fn request(socket: &Path, method: &str, path: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    // Longer than the daemon's own deadline for a deploy: one in flight when the disk fills is
    // answered 507 only when that deadline passes, and the client must still be listening.
    let timeout =
        myco_core::config::DEPLOY_DURABLE_TIMEOUT_MS + myco_core::config::DEPLOY_ANSWER_MARGIN_MS;
    let answer = exchange(socket, &bytes, Duration::from_millis(timeout))?;
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}: {:?}", String::from_utf8_lossy(&answer)),
        )
    };
    let mut parsed = parse_answer(&answer).ok_or_else(|| invalid("not an HTTP answer"))?;
    // A long `/services` comes in chunks (curl decodes them itself; this client reads raw bytes).
    if parsed.header("transfer-encoding") == Some("chunked") {
        let body = dechunk(&answer[parsed.head.len() + 4..])
            .ok_or_else(|| invalid("not a whole chunked body"))?;
        parsed.body = String::from_utf8_lossy(&body).into_owned();
    }
    Ok(parsed)
}

/// The data of a whole chunked body (hex sizes, no extensions or trailers, as the daemon writes
/// them), or `None` if it is cut short or malformed.
pub fn dechunk(mut framed: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = framed.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&framed[..line_end]).ok()?, 16).ok()?;
        let data = framed.get(line_end + 2..line_end + 2 + size)?;
        body.extend_from_slice(data);
        framed = &framed[line_end + 2 + size..];
        framed = framed.strip_prefix(b"\r\n")?;
        if size == 0 {
            return framed.is_empty().then_some(body);
        }
    }
}

/// True once the daemon on `socket` answers `GET /health` with 200.
pub fn healthy(socket: &Path) -> bool {
    request(socket, "GET", "/health", b"").is_ok_and(|a| a.status == 200)
}

/// `curl -sS -i --unix-socket SOCKET ARGS http://localhost/PATH`, parsed. Panics if curl itself
/// fails (no answer at all).
#[track_caller]
pub fn curl(socket: &Path, args: &[&str], path: &str) -> Answer {
    let mut command = Command::new("curl");
    let max_time = CALL_TIMEOUT.as_secs().to_string();
    command
        .args(["-sS", "-i", "--max-time", &max_time, "--unix-socket"])
        .arg(socket)
        .args(args)
        .arg(format!("http://localhost{path}"));
    let out = run(command);
    assert_eq!(
        out.code,
        Some(0),
        "curl {args:?} {path} failed (is curl installed?): {}",
        out.stderr
    );
    parse_answer(out.stdout.as_bytes())
        .unwrap_or_else(|| panic!("curl {path}: not an HTTP answer: {:?}", out.stdout))
}

/// A service's stand-in on a loopback TCP port, for health checks: answers every request with
/// the status its handle holds (200 at first), then closes. Runs until the test process ends.
pub fn status_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU16>) {
    use std::sync::atomic::{AtomicU16, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let port = listener.local_addr().expect("bound").port();
    let status = std::sync::Arc::new(AtomicU16::new(200));
    let answer = std::sync::Arc::clone(&status);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 512];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = conn.read(&mut buf);
            let code = answer.load(Ordering::SeqCst);
            let _ = write!(
                conn,
                "HTTP/1.0 {code} Whatever\r\nContent-Length: 0\r\n\r\n"
            );
        }
    });
    (port, status)
}
