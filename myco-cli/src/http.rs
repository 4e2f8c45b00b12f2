//! The HTTP/1.1 that `myco` speaks to the daemon's Unix socket: one request per connection, and a
//! strict parser for the one answer.
//!
//! The parser takes the bytes read so far and says whether they are a whole answer, the start of
//! one, or not an answer at all. It is pure (no I/O), so the fuzz crate feeds it arbitrary bytes.
//! Its promises: no input panics it; a head that cannot start an answer is refused as soon as its
//! first bytes are seen; every strict prefix of an answer it accepts is `Incomplete`; and it never
//! accepts more than `RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX` bytes, so a client that
//! reads until the parser stops holds at most that much.
//!
//! Strict because the daemon is ours: it always sends `Content-Length` (chunked and
//! close-delimited bodies are refused), lines end with CRLF, and the bytes after the body must be
//! none, since every request asks for `Connection: close`.

use core::fmt;

/// The status line and headers, blank line included. The daemon's heads are a few hundred bytes.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 8 * 1024;
/// The largest body `myco` reads: far above any answer the daemon gives (`/services` with every
/// service it can hold is well under 1 MiB), and small enough that a runaway answer cannot
/// exhaust the operator's machine.
pub const RESPONSE_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One whole answer, borrowing the bytes it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// 100 to 599.
    pub status: u16,
    /// The reason phrase, possibly empty. Not UTF-8 necessarily: HTTP allows any octet above 0x7f.
    pub reason: &'a [u8],
    /// Exactly `Content-Length` bytes.
    pub body: &'a [u8],
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

/// Parses `bytes` as exactly one answer; see the module comment for the promises.
pub fn parse_response(bytes: &[u8]) -> Result<Response<'_>, ResponseError> {
    // Refuse what cannot become an answer at once, rather than after the head limit or a timeout.
    const VERSION_PREFIX: &[u8] = b"HTTP/1.";
    let seen = bytes.len().min(VERSION_PREFIX.len());
    if bytes[..seen] != VERSION_PREFIX[..seen] {
        return Err(ResponseError::Malformed("the answer is not HTTP/1.x"));
    }
    let Some(head_len) = find(bytes, b"\r\n\r\n").map(|at| at + 4) else {
        return Err(if bytes.len() >= RESPONSE_HEAD_BYTES_MAX {
            ResponseError::TooLarge
        } else {
            ResponseError::Incomplete
        });
    };
    if head_len > RESPONSE_HEAD_BYTES_MAX {
        return Err(ResponseError::TooLarge);
    }
    // The head without its final CRLF CRLF: the status line, then one header per CRLF.
    let mut lines = Lines {
        rest: Some(&bytes[..head_len - 4]),
    };
    let (status, reason) = parse_status_line(lines.next().expect("Lines yields at least once"))?;
    let mut content_length = None;
    for line in lines {
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(ResponseError::Malformed(
                    "the answer has two Content-Length headers that disagree",
                ));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(ResponseError::Malformed(
                "the answer has a Transfer-Encoding, which myco does not read",
            ));
        }
    }
    let Some(length) = content_length else {
        return Err(ResponseError::Malformed("the answer has no Content-Length"));
    };
    let body = &bytes[head_len..];
    if body.len() < length {
        return Err(ResponseError::Incomplete);
    }
    if body.len() > length {
        return Err(ResponseError::Malformed(
            "the answer has bytes after its Content-Length",
        ));
    }
    assert!(body.len() <= RESPONSE_BODY_BYTES_MAX);
    assert!((100..=599).contains(&status));
    Ok(Response {
        status,
        reason,
        body,
    })
}

/// `HTTP/1.x NNN reason`. The reason may be empty, and so may the space before it.
fn parse_status_line(line: &[u8]) -> Result<(u16, &[u8]), ResponseError> {
    let bad = ResponseError::Malformed("the answer's status line is not 'HTTP/1.x NNN reason'");
    let (version, rest) = line.split_at_checked(8).ok_or(bad)?;
    if !(version == b"HTTP/1.1" || version == b"HTTP/1.0") {
        return Err(bad);
    }
    let digits = match rest {
        [b' ', d0, d1, d2, ..] => [*d0, *d1, *d2],
        _ => return Err(bad),
    };
    let reason = match &rest[4..] {
        [] => &rest[4..],
        [b' ', reason @ ..] => reason,
        _ => return Err(bad),
    };
    if !digits.iter().all(u8::is_ascii_digit) || !reason.iter().all(|&b| is_field_byte(b)) {
        return Err(bad);
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(bad);
    }
    Ok((status, reason))
}

/// `name: value`, with optional spaces or tabs around the value.
fn parse_header(line: &[u8]) -> Result<(&[u8], &[u8]), ResponseError> {
    let bad = ResponseError::Malformed("the answer has a header that is not 'Name: value'");
    let colon = line.iter().position(|&b| b == b':').ok_or(bad)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // An empty name or whitespace before the colon is refused (RFC 9112 5.1), and so is a line
    // that starts with whitespace, which is how a folded header would continue.
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        return Err(bad);
    }
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(bad);
    }
    Ok((name, value.trim_ascii()))
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

/// A header name's bytes: RFC 9110's `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value's or reason phrase's bytes: visible ASCII, space, tab and any byte above 0x7f.
/// CR, LF and the other control characters are refused, so no line hides another.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The lines of a head, split at CRLF. Yields at least one (possibly empty) line.
struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find(rest, b"\r\n") {
            Some(at) => {
                self.rest = Some(&rest[at + 2..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
        assert_eq!(response.body, b"{\"status\":1}\n");

        let response = ok(b"HTTP/1.0 507 Insufficient Storage\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((response.status, response.body), (507, &b""[..]));
        assert_eq!(ok(b"HTTP/1.1 204\r\nContent-Length: 0\r\n\r\n").reason, b"");
        assert_eq!(
            ok(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n").reason,
            b""
        );
        // Equal repeated lengths are one length.
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(ok(twice).body, b"hi");
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
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
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
}
