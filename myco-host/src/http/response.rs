//! HTTP/1.1 responses written into a buffer the caller owns, without allocating.
//!
//! A response is built body first: `body_cursor` reserves `RESPONSE_HEAD_BYTES_MAX` bytes at the
//! front of the buffer and writes the body after them; `finish` then writes the head, whose
//! Content-Length is now known, right in front of the body. The response is one contiguous slice
//! of the buffer, ready for one `write`, with no copy of the body.
//!
//! Nothing here panics on a buffer that is too small: every write returns `Full` instead, after
//! which the buffer's contents are unspecified and the caller starts again (with a smaller answer
//! or an error). The head carries only fixed strings and numbers, so no caller-supplied text can
//! inject a header; text goes into the body, escaped by the JSON or Prometheus writer.

use super::json::Json;
use super::request::HttpError;
use core::fmt::{self, Write};

/// Room reserved for the head in front of the body: the longest head, with the longest
/// Content-Type, a 20-digit Content-Length and an `Allow` header, is under 200 bytes.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 256;

/// The buffer has no room for what was being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// A write position in a caller-owned buffer. What has been written is `buf[start..end]`.
pub struct Cursor<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
}

impl<'b> Cursor<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Cursor {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// Appends all of `bytes`, or nothing and `Full`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.end.checked_add(bytes.len()).ok_or(Full)?;
        self.buf
            .get_mut(self.end..end)
            .ok_or(Full)?
            .copy_from_slice(bytes);
        self.end = end;
        Ok(())
    }

    /// Appends `value` in decimal, all or nothing.
    pub fn put_u64(&mut self, value: u64) -> Result<(), Full> {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.put(&digits[at..])
    }

    pub fn written(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lets `write!` format floats straight into the buffer; a write that does not fit leaves a
/// partial number, so the caller discards the buffer as after any `Full`.
impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Json,
    /// Prometheus text exposition format, version 0.0.4.
    Prometheus,
    /// Server-Sent Events, for `/stream`.
    EventStream,
    /// Plain UTF-8 text, for `/logs`.
    Text,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            ContentType::EventStream => "text/event-stream",
            ContentType::Text => "text/plain; charset=utf-8",
        }
    }
}

/// Everything in a response's head except its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_type: ContentType,
    /// False answers `Connection: close`; the daemon closes after writing.
    pub keep_alive: bool,
    /// The `Allow` header, which a 405 must carry.
    pub allow: Option<&'static str>,
}

/// The reason phrase for each status this API answers with. Clients read the number; an unknown
/// one gets an empty phrase, which HTTP/1.1 allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// How the client learns where a body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// `Content-Length`: the body was written whole before the head.
    Exactly(u64),
    /// `Transfer-Encoding: chunked`: a body written part by part through one buffer (a long
    /// `/services`), each part a chunk (`frame_chunk`), the last followed by the empty chunk.
    Chunked,
    /// Neither: the body ends when the connection closes (`/stream`, `/logs`, or a long answer to
    /// an HTTP/1.0 client, which does not read chunks), so the head must not promise keep-alive.
    UntilClose,
}

/// Bytes a chunk's size line may take in front of its data: up to 8 hex digits and CRLF.
pub const CHUNK_SIZE_LINE_BYTES_MAX: usize = 10;
/// Bytes a chunk may take after its data: its CRLF and, for the last, the empty chunk `0\r\n\r\n`.
pub const CHUNK_TAIL_BYTES_MAX: usize = 2 + 5;

/// Writes a head.
pub fn write_head(out: &mut Cursor<'_>, head: &Head, length: Length) -> Result<(), Full> {
    assert!((100..=599).contains(&head.status));
    assert!(length != Length::UntilClose || !head.keep_alive);
    out.put(b"HTTP/1.1 ")?;
    out.put_u64(u64::from(head.status))?;
    out.put(b" ")?;
    out.put(reason(head.status).as_bytes())?;
    out.put(b"\r\nContent-Type: ")?;
    out.put(head.content_type.as_str().as_bytes())?;
    match length {
        Length::Exactly(n) => {
            out.put(b"\r\nContent-Length: ")?;
            out.put_u64(n)?;
        }
        Length::Chunked => out.put(b"\r\nTransfer-Encoding: chunked")?,
        Length::UntilClose => {}
    }
    out.put(b"\r\nConnection: ")?;
    out.put(if head.keep_alive {
        b"keep-alive" as &[u8]
    } else {
        b"close"
    })?;
    if let Some(allow) = head.allow {
        assert!(allow.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
        out.put(b"\r\nAllow: ")?;
        out.put(allow.as_bytes())?;
    }
    out.put(b"\r\n\r\n")
}

/// A cursor for a response body, after room for the head at the front of `buf`.
pub fn body_cursor(buf: &mut [u8]) -> Result<Cursor<'_>, Full> {
    if buf.len() < RESPONSE_HEAD_BYTES_MAX {
        return Err(Full);
    }
    Ok(Cursor {
        buf,
        start: RESPONSE_HEAD_BYTES_MAX,
        end: RESPONSE_HEAD_BYTES_MAX,
    })
}

/// Writes the head in front of a body from `body_cursor` and returns the whole response.
pub fn finish<'b>(body: Cursor<'b>, head: &Head) -> Result<&'b [u8], Full> {
    assert_eq!(
        body.start, RESPONSE_HEAD_BYTES_MAX,
        "the body comes from body_cursor"
    );
    let length = Length::Exactly(body.len() as u64);
    let Cursor { buf, start, end } = body;
    let head_start = head_before(buf, start, head, length)?;
    Ok(&buf[head_start..end])
}

/// Writes `head` so that it ends right where `buf[at..]` begins (a body, or a first chunk's size
/// line), and returns where the head starts. `Full` if it does not fit in front.
pub fn head_before(buf: &mut [u8], at: usize, head: &Head, length: Length) -> Result<usize, Full> {
    let mut scratch = [0u8; RESPONSE_HEAD_BYTES_MAX];
    let mut head_out = Cursor::new(&mut scratch);
    write_head(&mut head_out, head, length)?;
    let head_len = head_out.len();
    let head_start = at.checked_sub(head_len).ok_or(Full)?;
    buf[head_start..at].copy_from_slice(&scratch[..head_len]);
    Ok(head_start)
}

/// Frames the data `buf[start..end]` as one chunk of a chunked body, in place: its size line in
/// the `CHUNK_SIZE_LINE_BYTES_MAX` bytes in front, CRLF after, and when `last` the empty chunk
/// that ends the body. Returns the framed bytes' range. The data must not be empty (an empty
/// chunk would end the body) and must leave that room on both sides, or it is `Full`.
pub fn frame_chunk(
    buf: &mut [u8],
    (start, end): (usize, usize),
    last: bool,
) -> Result<(usize, usize), Full> {
    assert!(start < end, "an empty chunk would end the body");
    let mut line = [0u8; CHUNK_SIZE_LINE_BYTES_MAX];
    let mut line_out = Cursor::new(&mut line);
    write!(line_out, "{:x}\r\n", end - start).map_err(|_| Full)?;
    let line_len = line_out.len();
    let framed_start = start.checked_sub(line_len).ok_or(Full)?;
    buf[framed_start..start].copy_from_slice(&line[..line_len]);
    let tail: &[u8] = if last { b"\r\n0\r\n\r\n" } else { b"\r\n" };
    let mut out = Cursor::new(buf.get_mut(end..).ok_or(Full)?);
    out.put(tail)?;
    Ok((framed_start, end + tail.len()))
}

/// A complete response with `body`.
pub fn write_response<'b>(buf: &'b mut [u8], head: &Head, body: &[u8]) -> Result<&'b [u8], Full> {
    let mut out = body_cursor(buf)?;
    out.put(body)?;
    finish(out, head)
}

/// A JSON error response: `{"error":"<message>","status":<status>}`.
pub fn write_error<'b>(
    buf: &'b mut [u8],
    status: u16,
    message: &str,
    keep_alive: bool,
) -> Result<&'b [u8], Full> {
    let head = Head {
        status,
        content_type: ContentType::Json,
        keep_alive,
        allow: None,
    };
    write_error_with(buf, &head, message)
}

/// The answer to a request the parser refused. It always closes the connection: after an error
/// the parser cannot tell where the next request would start.
pub fn write_http_error(buf: &mut [u8], error: HttpError) -> Result<&[u8], Full> {
    let head = Head {
        status: error.status(),
        content_type: ContentType::Json,
        keep_alive: false,
        allow: error.allow(),
    };
    write_error_with(buf, &head, error.message())
}

fn write_error_with<'b>(buf: &'b mut [u8], head: &Head, message: &str) -> Result<&'b [u8], Full> {
    assert!(head.status >= 400);
    let mut out = body_cursor(buf)?;
    let mut json = Json::new(&mut out);
    json.begin_object()?;
    json.key("error")?;
    json.string(message)?;
    json.key("status")?;
    json.u64(u64::from(head.status))?;
    json.end_object()?;
    json.finish();
    finish(out, head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_head(status: u16, keep_alive: bool) -> Head {
        Head {
            status,
            content_type: ContentType::Json,
            keep_alive,
            allow: None,
        }
    }

    // Pins a whole 200 response byte for byte, and that it is one slice starting at the head.
    #[test]
    fn response_bytes_are_exact() {
        let mut buf = [0u8; 512];
        let response = write_response(&mut buf, &json_head(200, true), b"{\"ok\":true}").unwrap();
        assert_eq!(
            response,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
              Connection: keep-alive\r\n\r\n{\"ok\":true}"
        );
    }

    // Pins the JSON error body, with quotes, backslashes and control characters escaped, and
    // Connection: close.
    #[test]
    fn error_body_is_escaped_json() {
        let mut buf = [0u8; 512];
        let response = write_error(&mut buf, 400, "bad \"x\"\\\n\u{1}", false).unwrap();
        assert_eq!(
            response,
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\
              Connection: close\r\n\r\n{\"error\":\"bad \\\"x\\\"\\\\\\n\\u0001\",\"status\":400}"
        );
    }

    // Proves a parser error's answer carries its status, its message, Connection: close, and for
    // a 405 the Allow header.
    #[test]
    fn http_error_response_has_allow_and_closes() {
        let mut buf = [0u8; 512];
        let error = HttpError::MethodNotAllowed { allow: "POST" };
        let response = write_http_error(&mut buf, error).unwrap();
        let expected_body = b"{\"error\":\"method not allowed on this path: the Allow header \
              names the one it takes\",\"status\":405}";
        let mut expected = Vec::new();
        expected.extend_from_slice(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n",
        );
        expected
            .extend_from_slice(format!("Content-Length: {}\r\n", expected_body.len()).as_bytes());
        expected.extend_from_slice(b"Connection: close\r\nAllow: POST\r\n\r\n");
        expected.extend_from_slice(expected_body);
        assert_eq!(response, &expected[..]);
    }

    // Proves every parser error answers with its own 4xx/5xx status line and a parseable head.
    #[test]
    fn every_http_error_has_a_status_line() {
        let errors = [
            (HttpError::BadRequest("x"), "400 Bad Request"),
            (HttpError::NotFound, "404 Not Found"),
            (
                HttpError::MethodNotAllowed { allow: "GET" },
                "405 Method Not Allowed",
            ),
            (HttpError::LengthRequired, "411 Length Required"),
            (HttpError::PayloadTooLarge, "413 Content Too Large"),
            (HttpError::UriTooLong, "414 URI Too Long"),
            (
                HttpError::HeadersTooLarge,
                "431 Request Header Fields Too Large",
            ),
            (HttpError::NotImplemented, "501 Not Implemented"),
            (
                HttpError::VersionNotSupported,
                "505 HTTP Version Not Supported",
            ),
        ];
        for (error, line) in errors {
            let mut buf = [0u8; 1024];
            let response = write_http_error(&mut buf, error).unwrap();
            assert!(response.starts_with(format!("HTTP/1.1 {line}\r\n").as_bytes()));
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            let head_len = match parsed.parse(response).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete head for {error:?}"),
            };
            assert_eq!(parsed.code, Some(error.status()));
            let length = parsed
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .unwrap();
            let length: usize = std::str::from_utf8(length.value).unwrap().parse().unwrap();
            assert_eq!(response.len() - head_len, length);
        }
    }

    // Pins a streamed head: no Content-Length, and the connection closes to end the body.
    #[test]
    fn streamed_head_has_no_length() {
        let mut buf = [0u8; 256];
        let mut out = Cursor::new(&mut buf);
        let head = Head {
            status: 200,
            content_type: ContentType::EventStream,
            keep_alive: false,
            allow: None,
        };
        write_head(&mut out, &head, Length::UntilClose).unwrap();
        assert_eq!(
            out.written(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        );
    }

    // Proves a buffer too small for the reserved head room plus the body is `Full`, never a
    // panic, at every size, and that the first size that fits works.
    #[test]
    fn small_buffers_are_full_not_panics() {
        let body = [b'x'; 100];
        let needed = RESPONSE_HEAD_BYTES_MAX + body.len();
        for size in 0..needed {
            let mut buf = vec![0u8; size];
            assert_eq!(
                write_response(&mut buf, &json_head(200, true), &body),
                Err(Full)
            );
            let message = core::str::from_utf8(&body).unwrap();
            assert_eq!(write_error(&mut buf, 500, message, false), Err(Full));
        }
        let mut buf = vec![0u8; needed];
        assert!(write_response(&mut buf, &json_head(200, true), &body).is_ok());
    }

    // Proves `put` is all or nothing: a write that does not fit leaves the cursor as it was.
    #[test]
    fn put_is_all_or_nothing() {
        let mut buf = [0u8; 4];
        let mut out = Cursor::new(&mut buf);
        out.put(b"ab").unwrap();
        assert_eq!(out.put(b"cde"), Err(Full));
        assert_eq!(out.written(), b"ab");
        assert_eq!(out.put_u64(12_345), Err(Full));
        out.put_u64(12).unwrap();
        assert_eq!(out.written(), b"ab12");
    }

    // Pins a chunked answer byte for byte: a head with Transfer-Encoding and no length, chunks
    // framed in place with their hex size, and the empty chunk after the last; and proves framing
    // without room on either side is `Full`, not a panic.
    #[test]
    fn chunks_are_framed_in_place() {
        let data = b"{\"a\":[1,2]}";
        let mut buf = [b'.'; 512];
        buf[300..311].copy_from_slice(data);
        let (start, end) = frame_chunk(&mut buf, (300, 311), true).unwrap();
        assert_eq!(&buf[start..end], b"b\r\n{\"a\":[1,2]}\r\n0\r\n\r\n");
        let head_start = head_before(&mut buf, start, &json_head(200, true), Length::Chunked);
        assert_eq!(
            &buf[head_start.unwrap()..end],
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
              Connection: keep-alive\r\n\r\nb\r\n{\"a\":[1,2]}\r\n0\r\n\r\n"
        );
        let (start, end) = frame_chunk(&mut buf, (300, 311), false).unwrap();
        assert_eq!(&buf[start..end], b"b\r\n{\"a\":[1,2]}\r\n");
        let head = json_head(200, true);
        assert_eq!(head_before(&mut buf, 40, &head, Length::Chunked), Err(Full));
        assert_eq!(frame_chunk(&mut buf, (1, 5), false), Err(Full));
        assert_eq!(frame_chunk(&mut buf, (20, 508), true), Err(Full));
    }
}
