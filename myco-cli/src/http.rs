//! The HTTP/1.1 that `myco` speaks to the daemon's Unix socket: one request per connection, a
//! strict parser for the answer (httparse for the head, with the rules below on top), and the one
//! loop that reads an answer, or a streamed answer's head, from the socket (`read_until`).
//!
//! The parser takes the bytes read so far and says whether they are a whole answer, the start of
//! one, or not an answer at all. It is pure (no I/O), so the fuzz crate feeds it arbitrary bytes.
//! Its promises: no input panics it; a head that cannot start an answer is refused as soon as its
//! first bytes are seen; every strict prefix of an answer it accepts is `Incomplete`; and it never
//! accepts more than `RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX` bytes, so a client that
//! reads until the parser stops holds at most that much.
//!
//! Strict because the daemon is ours: it sends `Content-Length`, or for an answer longer than its
//! buffer (`/services` with many services) `Transfer-Encoding: chunked` with plain hex sizes, no
//! extensions and no trailers (close-delimited bodies and other framings are refused), lines end
//! with CRLF, and the bytes after the body must be none, since every request asks for
//! `Connection: close`. A chunked answer counts against the limits with its framing, so the bytes
//! held stay bounded however small its chunks.

use core::fmt;
use std::borrow::Cow;
use std::io;

/// The status line and headers, blank line included. The daemon's heads are a few hundred bytes.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 8 * 1024;
/// The largest body `myco` reads: far above any answer the daemon gives (`/services` with every
/// service it can hold is well under 1 MiB), and small enough that a runaway answer cannot
/// exhaust the operator's machine.
pub const RESPONSE_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One whole answer, borrowing the bytes it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// 100 to 599.
    pub status: u16,
    /// The reason phrase, possibly empty. Not UTF-8 necessarily: HTTP allows any octet above 0x7f.
    pub reason: &'a [u8],
    /// Exactly `Content-Length` bytes, or a chunked body's data joined.
    pub body: Cow<'a, [u8]>,
}

/// Why bytes are not (yet) an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The bytes so far are the start of an answer: read more. At the end of the stream this
    /// means the answer was cut short.
    Incomplete,
    /// The head or the body is longer than `myco` reads.
    TooLarge,
    /// The bytes are not an answer `myco` accepts; the text says what is wrong.
    Malformed(&'static str),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Incomplete => f.write_str("the answer ends early"),
            ResponseError::TooLarge => write!(
                f,
                "the answer is larger than myco reads ({} KiB of head, {} MiB of body)",
                RESPONSE_HEAD_BYTES_MAX / 1024,
                RESPONSE_BODY_BYTES_MAX / (1024 * 1024)
            ),
            ResponseError::Malformed(what) => f.write_str(what),
        }
    }
}

/// The head of an answer, once it is whole: what a reader needs to decide what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// 100 to 599.
    pub status: u16,
    /// Bytes of the status line and headers, blank line included: the body starts here.
    pub len: usize,
    /// The body's length, if the head gives one. An event or journal stream gives none and ends
    /// with the connection.
    pub content_length: Option<usize>,
    /// The body comes in chunks (`Transfer-Encoding: chunked`), and gives no length.
    pub chunked: bool,
}

/// The most headers an answer may have: the daemon sends four or five.
const HEADERS_MAX: usize = 32;

/// Parses the head at the start of `bytes`, with httparse and the stricter rules of the module
/// comment on top: `Incomplete` until the blank line that ends it has arrived.
pub fn parse_head(bytes: &[u8]) -> Result<Head, ResponseError> {
    // Refuse what cannot become an answer at once, rather than after the head limit or a timeout
    // (httparse would also skip blank lines before the status line).
    const VERSION_PREFIX: &[u8] = b"HTTP/1.";
    let seen = bytes.len().min(VERSION_PREFIX.len());
    if bytes[..seen] != VERSION_PREFIX[..seen] {
        return Err(ResponseError::Malformed("the answer is not HTTP/1.x"));
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= RESPONSE_HEAD_BYTES_MAX => {
            return Err(ResponseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Err(ResponseError::Incomplete),
        Err(e) => return Err(ResponseError::Malformed(httparse_refusal(e))),
    };
    if len > RESPONSE_HEAD_BYTES_MAX {
        return Err(ResponseError::TooLarge);
    }
    // httparse also takes a bare LF for a line end; the daemon always writes CRLF.
    if (0..len).any(|at| bytes[at] == b'\n' && (at == 0 || bytes[at - 1] != b'\r')) {
        return Err(ResponseError::Malformed(
            "the answer's head ends a line without CR",
        ));
    }
    let status = response.code.expect("a complete head has a status");
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Malformed(
            "the answer's status is not between 100 and 599",
        ));
    }
    let (content_length, chunked) = body_length(response.headers)?;
    assert!(len <= RESPONSE_HEAD_BYTES_MAX);
    assert!(content_length.is_none_or(|n| n <= RESPONSE_BODY_BYTES_MAX));
    assert!(!(chunked && content_length.is_some()));
    Ok(Head {
        status,
        len,
        content_length,
        chunked,
    })
}

/// What an httparse error means, for the operator.
fn httparse_refusal(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version | httparse::Error::Status => {
            "the answer's status line is not 'HTTP/1.x NNN reason'"
        }
        httparse::Error::TooManyHeaders => "the answer has more headers than myco-d sends",
        _ => "the answer has a header that is not 'Name: value'",
    }
}

/// The body's length from the headers: one `Content-Length` (repeats must agree), or
/// `Transfer-Encoding: chunked` alone (true), the only transfer coding `myco` reads.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<(Option<usize>, bool), ResponseError> {
    let mut content_length = None;
    let mut chunked = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(header.value.trim_ascii())?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(ResponseError::Malformed(
                    "the answer has two Content-Length headers that disagree",
                ));
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ResponseError::Malformed(
                    "the answer has a Transfer-Encoding other than one 'chunked', which myco \
                     does not read",
                ));
            }
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        return Err(ResponseError::Malformed(
            "the answer has both a Content-Length and a Transfer-Encoding",
        ));
    }
    Ok((content_length, chunked))
}

/// Parses `bytes` as exactly one answer; see the module comment for the promises.
pub fn parse_response(bytes: &[u8]) -> Result<Response<'_>, ResponseError> {
    let head = parse_head(bytes)?;
    if head.chunked {
        return parse_chunked(bytes, &head);
    }
    let Some(length) = head.content_length else {
        return Err(ResponseError::Malformed(
            "the answer has neither a Content-Length nor chunks",
        ));
    };
    let body = &bytes[head.len..];
    if body.len() < length {
        return Err(ResponseError::Incomplete);
    }
    if body.len() > length {
        return Err(ResponseError::Malformed(
            "the answer has bytes after its Content-Length",
        ));
    }
    assert!(body.len() <= RESPONSE_BODY_BYTES_MAX);
    Ok(Response {
        status: head.status,
        reason: reason(bytes),
        body: Cow::Borrowed(body),
    })
}

/// A chunked answer, once its empty last chunk and the blank line after it have arrived. Its
/// bytes, framing included, must stay within the limits, and its framing is walked twice: once
/// to see it whole, then to join the data, so a partial answer costs no copy.
fn parse_chunked<'a>(bytes: &'a [u8], head: &Head) -> Result<Response<'a>, ResponseError> {
    if bytes.len() > RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX {
        return Err(ResponseError::TooLarge);
    }
    let framed = &bytes[head.len..];
    let mut len = 0;
    walk_chunks(framed, |data| len += data.len())?;
    let mut body = Vec::with_capacity(len);
    walk_chunks(framed, |data| body.extend_from_slice(data))?;
    assert!(body.len() <= RESPONSE_BODY_BYTES_MAX);
    Ok(Response {
        status: head.status,
        reason: reason(bytes),
        body: Cow::Owned(body),
    })
}

/// A chunk's size line: at most 8 hex digits (the daemon's chunks are under 4 GiB) and CRLF.
const CHUNK_SIZE_LINE_BYTES_MAX: usize = 10;

/// Hands each chunk's data of `framed` to `each`, in order: `Ok` at the empty last chunk and the
/// blank line after it (no trailers, nothing after), `Incomplete` on any prefix of that.
fn walk_chunks(mut framed: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), ResponseError> {
    const BAD_SIZE: ResponseError =
        ResponseError::Malformed("a chunk's size line is not 1 to 8 hex digits and CRLF");
    let mut total = 0usize;
    loop {
        let line = &framed[..framed.len().min(CHUNK_SIZE_LINE_BYTES_MAX)];
        let Some(digits_len) = line.windows(2).position(|w| w == b"\r\n") else {
            let digits = line.strip_suffix(b"\r").unwrap_or(line);
            let partial = line.len() < CHUNK_SIZE_LINE_BYTES_MAX && digits.len() <= 8;
            return match partial && digits.iter().all(u8::is_ascii_hexdigit) {
                true => Err(ResponseError::Incomplete),
                false => Err(BAD_SIZE),
            };
        };
        let digits = &line[..digits_len];
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(BAD_SIZE);
        }
        let size = digits.iter().fold(0usize, |n, &d| {
            n * 16 + (d as char).to_digit(16).unwrap_or(0) as usize
        });
        total += size;
        if total > RESPONSE_BODY_BYTES_MAX {
            return Err(ResponseError::TooLarge);
        }
        let rest = &framed[digits_len + 2..];
        let Some(data) = rest.get(..size) else {
            return Err(ResponseError::Incomplete);
        };
        let after = &rest[size..];
        match after.get(..2) {
            Some(b"\r\n") => {}
            Some(_) => return Err(ResponseError::Malformed("a chunk does not end with CRLF")),
            None if b"\r\n".starts_with(after) => return Err(ResponseError::Incomplete),
            None => return Err(ResponseError::Malformed("a chunk does not end with CRLF")),
        }
        if size == 0 {
            return match after.len() {
                2 => Ok(()),
                _ => Err(ResponseError::Malformed(
                    "the answer has bytes after its last chunk (myco-d sends no trailers)",
                )),
            };
        }
        each(data);
        framed = &after[2..];
    }
}

/// The reason phrase of a whole head's status line, `HTTP/1.x NNN reason`, as raw bytes: httparse
/// gives it only as UTF-8, but HTTP allows any octet above 0x7f in it.
fn reason(head: &[u8]) -> &[u8] {
    let line_len = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a whole head has a status line");
    head.get(b"HTTP/1.1 200 ".len()..line_len).unwrap_or(b"")
}

/// One decimal number that fits the body limit; no sign, no spaces inside, no list.
fn parse_content_length(value: &[u8]) -> Result<usize, ResponseError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ResponseError::Malformed(
            "the answer's Content-Length is not a number",
        ));
    }
    let mut length = 0usize;
    for digit in value {
        length = length * 10 + usize::from(digit - b'0');
        // Checked at every digit, so the number cannot overflow however many digits come.
        if length > RESPONSE_BODY_BYTES_MAX {
            return Err(ResponseError::TooLarge);
        }
    }
    Ok(length)
}

/// Why reading an answer stopped short of what the caller asked for.
#[derive(Debug)]
pub enum ReadError {
    /// The read failed (a timeout among others); the bytes so far stay in the buffer.
    Io(io::Error),
    /// The connection ended first; the bytes so far stay in the buffer.
    Closed,
    /// The bytes are not an answer `myco` accepts.
    Answer(ResponseError),
}

/// The one reading loop of `myco`'s HTTP: reads chunks through `read` into `buf` until `parse`
/// stops saying `Incomplete`, and returns what it says then. With `parse_head` it stops at a whole
/// head (the event and journal streams, whose bodies follow as they come); with `parse_response`
/// at a whole answer. `parse` bounds what it accepts, so `buf` stays bounded too.
pub fn read_until<T>(
    buf: &mut Vec<u8>,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    parse: impl Fn(&[u8]) -> Result<T, ResponseError>,
) -> Result<T, ReadError> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match parse(buf) {
            Err(ResponseError::Incomplete) => {}
            outcome => return outcome.map_err(ReadError::Answer),
        }
        assert!(buf.len() <= RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX);
        match read(&mut chunk) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// The bytes of one request: `Connection: close`, and for a body its length and type.
pub fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    assert!(method == "GET" || method == "POST");
    assert!(path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if method == "POST" {
        head += &format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        );
    } else {
        assert!(body.is_empty());
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> Response<'_> {
        parse_response(bytes)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(bytes)))
    }

    fn refused(bytes: &[u8]) -> ResponseError {
        let error = parse_response(bytes).expect_err(&String::from_utf8_lossy(bytes));
        assert_ne!(
            error,
            ResponseError::Incomplete,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        error
    }

    /// A typical daemon answer parses to its status, reason and exact body; header names match
    /// in any case, and spaces around values are not part of them.
    #[test]
    fn parses_a_daemon_answer() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      content-length:  13 \r\nConnection: close\r\n\r\n{\"status\":1}\n";
        let response = ok(bytes);
        assert_eq!(response.status, 200);
        assert_eq!(response.reason, b"OK");
        assert_eq!(&*response.body, b"{\"status\":1}\n");

        let response = ok(b"HTTP/1.0 507 Insufficient Storage\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((response.status, &*response.body), (507, &b""[..]));
        assert_eq!(ok(b"HTTP/1.1 204\r\nContent-Length: 0\r\n\r\n").reason, b"");
        assert_eq!(
            ok(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n").reason,
            b""
        );
        // Equal repeated lengths are one length.
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(&*ok(twice).body, b"hi");
    }

    /// Every strict prefix of an answer is Incomplete, and a byte more is refused: the client can
    /// stop reading exactly at the answer's end.
    #[test]
    fn prefixes_are_incomplete_and_trailing_bytes_refused() {
        let bytes = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nerror";
        ok(bytes);
        for n in 0..bytes.len() {
            assert_eq!(
                parse_response(&bytes[..n]),
                Err(ResponseError::Incomplete),
                "{n}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(b'\n');
        assert!(matches!(refused(&longer), ResponseError::Malformed(_)));
    }

    /// Bytes that cannot start an answer are refused from the first wrong byte.
    #[test]
    fn garbage_refused_at_once() {
        for bytes in [
            &b"x"[..],
            b"HTTP/2",
            b"http/1.1 200 OK\r\n",
            b"\r\n",
            b"SSH-2.0-OpenSSH",
        ] {
            assert!(matches!(refused(bytes), ResponseError::Malformed(_)));
        }
    }

    /// Heads that are not HTTP/1.x as the daemon writes it are refused, each with a reason.
    #[test]
    fn malformed_heads_refused() {
        let cases: [&[u8]; 20] = [
            b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: 0\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nNo-Colon\r\nContent-Length: 0\r\n\r\n",
        ];
        for bytes in cases {
            let error = refused(bytes);
            assert!(matches!(error, ResponseError::Malformed(_)), "{error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    /// A body over 4 MiB is refused from its Content-Length, before any of it is read, however
    /// many digits the length has; a head that does not end within 8 KiB is refused too.
    #[test]
    fn oversized_answers_refused() {
        let limit = RESPONSE_BODY_BYTES_MAX;
        let at_limit = format!("HTTP/1.1 200 OK\r\nContent-Length: {limit}\r\n\r\n");
        assert_eq!(
            parse_response(at_limit.as_bytes()),
            Err(ResponseError::Incomplete)
        );
        for length in [
            (limit + 1).to_string(),
            "9".repeat(40),
            u64::MAX.to_string(),
        ] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(refused(head.as_bytes()), ResponseError::TooLarge);
        }
        let mut long_head = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        long_head.resize(RESPONSE_HEAD_BYTES_MAX - 1, b'a');
        assert_eq!(parse_response(&long_head), Err(ResponseError::Incomplete));
        long_head.push(b'a');
        assert_eq!(refused(&long_head), ResponseError::TooLarge);
    }

    /// Requests carry the method, path, Host, Connection: close and, for a POST, the body's type
    /// and exact length.
    #[test]
    fn requests_are_framed() {
        assert_eq!(
            request("GET", "/health", b""),
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let post = request("POST", "/deploy", &[0, 1, 2]);
        assert_eq!(
            post,
            b"POST /deploy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
              Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\n\x00\x01\x02"
        );
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        f\r\n{\"services\":[1,\r\na\r\n2,3,4,5]}\n\r\n0\r\n\r\n";

    /// A chunked answer, as myco-d sends a long `/services`, is read whole: its chunks' data
    /// joined, every strict prefix `Incomplete`, a byte more refused.
    #[test]
    fn chunked_answers_are_joined() {
        let response = ok(CHUNKED);
        assert_eq!(response.status, 200);
        assert_eq!(&*response.body, b"{\"services\":[1,2,3,4,5]}\n");
        let head = parse_head(CHUNKED).unwrap();
        assert!(head.chunked && head.content_length.is_none());
        for n in 0..CHUNKED.len() {
            assert_eq!(
                parse_response(&CHUNKED[..n]),
                Err(ResponseError::Incomplete),
                "{n}"
            );
        }
        let mut longer = CHUNKED.to_vec();
        longer.push(b'x');
        assert!(matches!(refused(&longer), ResponseError::Malformed(_)));
    }

    /// Chunk framing myco-d never writes is refused with a reason: sizes that are not hex,
    /// extensions, a chunk longer than its size, trailers, and a Content-Length beside the chunks.
    #[test]
    fn malformed_chunks_refused() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for framing in [
            "x\r\nab\r\n0\r\n\r\n",
            "2;ext=1\r\nab\r\n0\r\n\r\n",
            "-2\r\nab\r\n0\r\n\r\n",
            "\r\nab\r\n0\r\n\r\n",
            "000000002\r\nab\r\n0\r\n\r\n",
            "2\r\nabc\r\n0\r\n\r\n",
            "2\nab\r\n0\r\n\r\n",
            "2\r\nab\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ] {
            let bytes = format!("{head}{framing}");
            assert!(
                matches!(refused(bytes.as_bytes()), ResponseError::Malformed(_)),
                "{framing:?}"
            );
        }
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(refused(both), ResponseError::Malformed(_)));
    }

    /// A chunked body counts against the limit by its data and by its framing: a declared size
    /// past 4 MiB is refused before the data arrives, and so are more bytes than a Content-Length
    /// answer may have, however small the chunks.
    #[test]
    fn oversized_chunked_answers_refused() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let big = format!("{head}{:x}\r\n", RESPONSE_BODY_BYTES_MAX + 1);
        assert_eq!(refused(big.as_bytes()), ResponseError::TooLarge);
        let mut tiny = head.as_bytes().to_vec();
        while tiny.len() <= RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX {
            tiny.extend_from_slice(b"1\r\nx\r\n");
        }
        assert_eq!(refused(&tiny), ResponseError::TooLarge);
    }
}
