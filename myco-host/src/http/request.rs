//! The API's HTTP/1.1 request parser: bytes from a Unix socket in, a routed request out.
//!
//! `parse` looks at the bytes a connection has buffered so far and says `Incomplete`, `Complete`
//! (the route, the body and how many bytes the request used, so pipelined requests follow) or
//! `Error` (an `HttpError` with its status and a message for the operator). `RequestBuffer` is the
//! per-connection buffer the daemon allocates once at start-up, sized so that the longest
//! acceptable request fits: a full buffer is always a complete request or an error.
//!
//! Invariants, which the tests and the `http` fuzz target check:
//! - No input panics or allocates; httparse reads the head in place and routes borrow from it.
//! - The outcome depends only on the bytes, not on how they were split across reads: `parse` never
//!   answers an error that later bytes could have changed, and looks no further than the head's
//!   limit for the head.
//! - An `Error` loses the request's framing, so the daemon answers it and closes the connection.
//!
//! The parser scans the whole buffer again on every read. That is at most 8 KiB of head per read,
//! the same order of work as the read itself, and keeps the parser free of state between reads.

use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::schema::entry::{valid_name, EntryError};

/// A request's head (request line and headers, through the blank line) may be this long. Clients
/// of this API send a few short headers; 8 KiB is the common server default.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A request's body may be this long: the only body is one signed entry for `POST /deploy`.
pub const REQUEST_BODY_BYTES_MAX: usize = 1024;
/// A connection's buffer: the longest head plus the longest body.
pub const REQUEST_BYTES_MAX: usize = REQUEST_HEAD_BYTES_MAX + REQUEST_BODY_BYTES_MAX;
/// The request target (path and query) may be this long; the longest real one, `/logs` with all
/// three parameters, is under 120 bytes.
pub const REQUEST_TARGET_BYTES_MAX: usize = 1024;
/// A request may carry this many headers; more is 431. curl sends three.
pub const REQUEST_HEADERS_MAX: usize = 32;
/// `GET /logs?lines=N` may ask for this many journal lines at most.
pub const LOGS_LINES_MAX: u32 = 10_000;

const _: () = assert!(ENTRY_BYTES_MAX <= REQUEST_BODY_BYTES_MAX);
const _: () = assert!(REQUEST_TARGET_BYTES_MAX < REQUEST_HEAD_BYTES_MAX);

/// What a request asks for: one variant per endpoint of `docs/api.md`, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /deploy`: the body is one signed slot or tombstone.
    Deploy,
    /// `GET /services`.
    Services,
    /// `GET /services/{name}`, the name already checked with `valid_name`.
    Service(&'a str),
    /// `GET /nodes`.
    Nodes,
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /stream`, resuming after `Last-Event-ID` when the client sent one.
    Stream { last_event_id: Option<u64> },
    /// `GET /logs?service=NAME&follow=BOOL&lines=N`.
    Logs {
        service: &'a str,
        follow: bool,
        lines: Option<u32>,
    },
    /// `GET /audit?follow=BOOL&lines=N`: this box's audit log.
    Audit { follow: bool, lines: Option<u32> },
}

/// One complete request, borrowed from the connection's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub route: Route<'a>,
    /// Exactly Content-Length bytes; empty without a Content-Length.
    pub body: &'a [u8],
    /// False when the client asked to close (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`): answer with `Connection: close`, then close.
    pub keep_alive: bool,
    /// HTTP/1.1, which reads a chunked answer; HTTP/1.0 does not.
    pub http11: bool,
    /// Bytes of the buffer this request used; a pipelined request starts right after.
    pub consumed: usize,
}

/// What the buffered bytes are so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// A prefix of an acceptable request: read more.
    Incomplete,
    Complete(Request<'a>),
    /// Answer this error and close the connection: the request's framing is lost.
    Error(HttpError),
}

/// A request the API refuses, by the status it answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed; the message says what was wrong.
    BadRequest(&'static str),
    /// 404: no such path.
    NotFound,
    /// 405: the path exists but takes another method, named in the `Allow` header.
    MethodNotAllowed { allow: &'static str },
    /// 411: a POST without Content-Length, or a chunked body.
    LengthRequired,
    /// 413: Content-Length over `REQUEST_BODY_BYTES_MAX`.
    PayloadTooLarge,
    /// 414: the request target is over `REQUEST_TARGET_BYTES_MAX`, or the request line does not
    /// end within the head's limit.
    UriTooLong,
    /// 431: the head is over `REQUEST_HEAD_BYTES_MAX` or has over `REQUEST_HEADERS_MAX` headers.
    HeadersTooLarge,
    /// 501: a transfer coding other than chunked.
    NotImplemented,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed { .. } => 405,
            HttpError::LengthRequired => 411,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::NotImplemented => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// What happened and what to do, for the JSON error body. The numbers are pinned to the
    /// constants by a test.
    pub fn message(self) -> &'static str {
        match self {
            HttpError::BadRequest(message) => message,
            HttpError::NotFound => {
                "unknown path: the endpoints are /deploy, /services, /services/NAME, /nodes, \
                 /health, /metrics, /stream, /logs and /audit"
            }
            HttpError::MethodNotAllowed { .. } => {
                "method not allowed on this path: the Allow header names the one it takes"
            }
            HttpError::LengthRequired => {
                "a request body needs a Content-Length header; chunked bodies are not accepted"
            }
            HttpError::PayloadTooLarge => "request body too large: the limit is 1024 bytes",
            HttpError::UriTooLong => "request target too long: the limit is 1024 bytes",
            HttpError::HeadersTooLarge => {
                "request head too large: the limits are 8192 bytes and 32 headers"
            }
            HttpError::NotImplemented => {
                "unsupported Transfer-Encoding: send the body with a Content-Length header"
            }
            HttpError::VersionNotSupported => {
                "HTTP version not supported: use HTTP/1.1 (or HTTP/1.0)"
            }
        }
    }

    /// The methods to name in an `Allow` header, which a 405 must carry.
    pub fn allow(self) -> Option<&'static str> {
        match self {
            HttpError::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }
}

/// One connection's request bytes, allocated once: read into `spare`, report with `handle_read`,
/// take requests with `poll_request`, and `consume` each one answered.
pub struct RequestBuffer {
    bytes: [u8; REQUEST_BYTES_MAX],
    filled: usize,
}

impl Default for RequestBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuffer {
    pub const fn new() -> Self {
        RequestBuffer {
            bytes: [0; REQUEST_BYTES_MAX],
            filled: 0,
        }
    }

    /// Where the next read goes. Empty only when the buffer holds a complete request or an
    /// error, which `poll_request` returns.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.bytes[self.filled..]
    }

    /// Takes note of `n` bytes read into `spare`.
    pub fn handle_read(&mut self, n: usize) {
        assert!(n <= REQUEST_BYTES_MAX - self.filled);
        self.filled += n;
    }

    /// Copies as many of `bytes` as fit and returns how many; for callers that read elsewhere.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(REQUEST_BYTES_MAX - self.filled);
        self.spare()[..n].copy_from_slice(&bytes[..n]);
        self.handle_read(n);
        n
    }

    /// Bytes buffered and not yet consumed; zero when a client that closes has sent nothing more.
    pub fn buffered(&self) -> usize {
        self.filled
    }

    pub fn poll_request(&self) -> Parse<'_> {
        let parse = parse(&self.bytes[..self.filled]);
        assert!(
            self.filled < REQUEST_BYTES_MAX || parse != Parse::Incomplete,
            "the buffer holds the longest acceptable request"
        );
        parse
    }

    /// Drops a request that has been answered, keeping the pipelined bytes after it.
    pub fn consume(&mut self, consumed: usize) {
        assert!(consumed > 0 && consumed <= self.filled);
        self.bytes.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
    }
}

/// Parses the request at the start of `buf`, the bytes one connection has buffered so far.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    match parse_request(buf) {
        Ok(Some(request)) => Parse::Complete(request),
        Ok(None) => Parse::Incomplete,
        Err(error) => Parse::Error(error),
    }
}

fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    // Looking no further than the limit makes the outcome the same however many bytes past it
    // happen to be buffered.
    let window = &buf[..buf.len().min(REQUEST_HEAD_BYTES_MAX)];
    let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() < REQUEST_HEAD_BYTES_MAX => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(head_too_long(head.path)),
        Err(error) => return Err(syntax_error(error, window, head.path)),
    };
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        unreachable!("httparse fills in the request line of a complete head")
    };
    if target.len() > REQUEST_TARGET_BYTES_MAX {
        return Err(HttpError::UriTooLong);
    }
    let route = route(method, target, head.headers)?;
    let end = head_len + body_len(route, head.headers)?;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Request {
        route,
        body: &buf[head_len..end],
        keep_alive: keep_alive(version, head.headers),
        http11: version == 1,
        consumed: end,
    }))
}

/// The head did not end within its limit: 414 if the request target had not ended (or was over
/// its own limit), 431 if the headers had not.
fn head_too_long(target: Option<&str>) -> HttpError {
    match target {
        Some(target) if target.len() <= REQUEST_TARGET_BYTES_MAX => HttpError::HeadersTooLarge,
        _ => HttpError::UriTooLong,
    }
}

const BAD_REQUEST_LINE: &str = "malformed request line: expected METHOD /path HTTP/1.1";

fn syntax_error(error: httparse::Error, window: &[u8], target: Option<&str>) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::HeadersTooLarge,
        httparse::Error::Version if names_http_version(window, target) => {
            HttpError::VersionNotSupported
        }
        httparse::Error::Version | httparse::Error::Token | httparse::Error::Status => {
            HttpError::BadRequest(BAD_REQUEST_LINE)
        }
        httparse::Error::HeaderName => HttpError::BadRequest("malformed header name"),
        httparse::Error::HeaderValue => HttpError::BadRequest(
            "malformed header value: control characters such as a lone CR are not allowed",
        ),
        httparse::Error::NewLine => HttpError::BadRequest("malformed line ending: use CRLF"),
    }
}

/// True if the request line's version field starts with `HTTP/`: then httparse refused the
/// version number, and the answer is 505 rather than 400. httparse stops at the first byte that
/// differs from `HTTP/1.0` and `HTTP/1.1`, so whenever this is true those five bytes are buffered.
fn names_http_version(window: &[u8], target: Option<&str>) -> bool {
    let Some(target) = target else {
        return false;
    };
    // The target borrows from the window, and the version follows it after one space.
    let version_at = target.as_ptr() as usize - window.as_ptr() as usize + target.len() + 1;
    window
        .get(version_at..)
        .is_some_and(|version| version.starts_with(b"HTTP/"))
}

/// The endpoints by path, before their parameters are parsed.
enum Endpoint<'a> {
    Plain(Route<'static>),
    Service(&'a str),
    Stream,
    Logs,
    Audit,
}

fn route<'a>(
    method: &str,
    target: &'a str,
    headers: &[httparse::Header<'a>],
) -> Result<Route<'a>, HttpError> {
    if !target.starts_with('/') {
        return Err(bad("the request target must be a path starting with '/'"));
    }
    if target.contains('%') {
        return Err(bad(
            "percent-encoding is not accepted: service names are plain DNS labels",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (endpoint, allow) = endpoint(path).ok_or(HttpError::NotFound)?;
    if method != allow {
        return Err(HttpError::MethodNotAllowed { allow });
    }
    match endpoint {
        Endpoint::Logs => logs_route(query),
        Endpoint::Audit => audit_route(query),
        _ if !query.is_empty() => Err(bad("only /logs and /audit take a query string")),
        Endpoint::Plain(route) => Ok(route),
        Endpoint::Service(name) => service_name(name).map(Route::Service),
        Endpoint::Stream => {
            last_event_id(headers).map(|last_event_id| Route::Stream { last_event_id })
        }
    }
}

/// The endpoint at `path` and the one method it takes.
fn endpoint(path: &str) -> Option<(Endpoint<'_>, &'static str)> {
    let endpoint = match path {
        "/deploy" => Endpoint::Plain(Route::Deploy),
        "/services" => Endpoint::Plain(Route::Services),
        "/nodes" => Endpoint::Plain(Route::Nodes),
        "/health" => Endpoint::Plain(Route::Health),
        "/metrics" => Endpoint::Plain(Route::Metrics),
        "/stream" => Endpoint::Stream,
        "/logs" => Endpoint::Logs,
        "/audit" => Endpoint::Audit,
        _ => Endpoint::Service(
            path.strip_prefix("/services/")
                .filter(|name| !name.contains('/'))?,
        ),
    };
    let method = match endpoint {
        Endpoint::Plain(Route::Deploy) => "POST",
        _ => "GET",
    };
    Some((endpoint, method))
}

/// The core's refusal of a bad name, so the API and every other refusal say the same thing.
const BAD_SERVICE_NAME: &str = EntryError::Name.message();

fn service_name(name: &str) -> Result<&str, HttpError> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(bad(BAD_SERVICE_NAME))
    }
}

/// `service=NAME` (required), `follow=true|false` and `lines=N`, each at most once, in any order.
fn logs_route(query: &str) -> Result<Route<'_>, HttpError> {
    let (mut service, mut follow, mut lines) = (None, None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or(bad("a query parameter must be KEY=VALUE"))?;
        match key {
            "service" => set_once(&mut service, service_name(value)?)?,
            "follow" => set_once(&mut follow, follow_flag(value)?)?,
            "lines" => set_once(&mut lines, line_count(value)?)?,
            _ => {
                return Err(bad(
                    "unknown query parameter: /logs takes service, follow and lines",
                ))
            }
        }
    }
    let service = service.ok_or(bad("/logs needs a service: /logs?service=NAME"))?;
    Ok(Route::Logs {
        service,
        follow: follow.unwrap_or(false),
        lines,
    })
}

/// `follow=true|false` and `lines=N`, each at most once, in any order.
fn audit_route(query: &str) -> Result<Route<'_>, HttpError> {
    let (mut follow, mut lines) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or(bad("a query parameter must be KEY=VALUE"))?;
        match key {
            "follow" => set_once(&mut follow, follow_flag(value)?)?,
            "lines" => set_once(&mut lines, line_count(value)?)?,
            _ => {
                return Err(bad(
                    "unknown query parameter: /audit takes follow and lines",
                ))
            }
        }
    }
    Ok(Route::Audit {
        follow: follow.unwrap_or(false),
        lines,
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), HttpError> {
    if slot.is_some() {
        return Err(bad("a query parameter appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn follow_flag(value: &str) -> Result<bool, HttpError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad("follow must be true or false")),
    }
}

fn line_count(value: &str) -> Result<u32, HttpError> {
    decimal(value.as_bytes())
        .ok()
        .filter(|&n| n <= u64::from(LOGS_LINES_MAX))
        .map(|n| n as u32)
        .ok_or(bad("lines must be a number from 0 to 10000"))
}

fn last_event_id(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, HttpError> {
    let mut values = header_values(headers, "last-event-id");
    let value = values.next();
    if values.next().is_some() {
        return Err(bad("Last-Event-ID appears twice"));
    }
    match value {
        // An event source that has seen no id may send the header empty.
        None | Some(b"") => Ok(None),
        Some(value) => decimal(value)
            .map(Some)
            .map_err(|_| bad("Last-Event-ID must be an event id: a decimal number")),
    }
}

/// The body's length, from a Content-Length the client must send with a deploy. Transfer codings
/// are refused: the one body this API takes is a signed entry whose length the client knows.
fn body_len(route: Route<'_>, headers: &[httparse::Header<'_>]) -> Result<usize, HttpError> {
    let length = content_length(headers)?;
    if header_values(headers, "transfer-encoding").next().is_some() {
        return Err(transfer_encoding_error(headers, length.is_some()));
    }
    match length {
        None if route == Route::Deploy => Err(HttpError::LengthRequired),
        None => Ok(0),
        Some(n) if n > REQUEST_BODY_BYTES_MAX as u64 => Err(HttpError::PayloadTooLarge),
        Some(n) => Ok(n as usize),
    }
}

/// Repeated Content-Length headers are accepted only when they agree (RFC 9112, section 6.3).
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, HttpError> {
    let mut length = None;
    for value in header_values(headers, "content-length") {
        let n = match decimal(value) {
            Ok(n) => n,
            Err(DecimalError::Overflow) => return Err(HttpError::PayloadTooLarge),
            Err(DecimalError::NotDecimal) => {
                return Err(bad("Content-Length must be a decimal number"))
            }
        };
        if length.is_some_and(|length| length != n) {
            return Err(bad("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    Ok(length)
}

fn transfer_encoding_error(headers: &[httparse::Header<'_>], has_length: bool) -> HttpError {
    // Both headers is how requests are smuggled past proxies that pick a different one.
    if has_length {
        return bad("both Transfer-Encoding and Content-Length: the body's length is ambiguous");
    }
    let chunked =
        header_tokens(headers, "transfer-encoding").any(|t| t.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        HttpError::LengthRequired
    } else {
        HttpError::NotImplemented
    }
}

/// HTTP/1.1 keeps a connection open unless told to close; HTTP/1.0 closes unless told to keep it.
fn keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let mut keep = version == 1;
    for token in header_tokens(headers, "connection") {
        if token.eq_ignore_ascii_case(b"close") {
            return false;
        }
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    keep
}

fn header_values<'h, 'a: 'h>(
    headers: &'h [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> + 'h {
    headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.trim_ascii())
}

/// The comma-separated tokens of every header called `name`.
fn header_tokens<'h, 'a: 'h>(
    headers: &'h [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> + 'h {
    header_values(headers, name)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

enum DecimalError {
    NotDecimal,
    Overflow,
}

/// One or more ASCII digits, nothing else: no sign, no spaces, no empty string.
fn decimal(digits: &[u8]) -> Result<u64, DecimalError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecimalError::NotDecimal);
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(DecimalError::Overflow)
}

fn bad(message: &'static str) -> HttpError {
    HttpError::BadRequest(message)
}

#[cfg(test)]
mod tests;
