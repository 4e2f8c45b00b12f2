//! Tests of the request parser: every route and error status, limits, pipelining, split
//! delivery and random bytes.

use super::*;
use myco_core::random::Prng;

fn parse_text(text: &str) -> Parse<'_> {
    parse(text.as_bytes())
}

fn route_of(text: &str) -> Route<'_> {
    match parse_text(text) {
        Parse::Complete(request) => request.route,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn error_of(text: &str) -> HttpError {
    match parse_text(text) {
        Parse::Error(error) => error,
        other => panic!("{text:?} gave {other:?}"),
    }
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn get_with(target: &str, header: &str) -> String {
    format!("GET {target} HTTP/1.1\r\n{header}\r\n\r\n")
}

/// One header more than REQUEST_HEADERS_MAX.
fn too_many_headers() -> String {
    format!("{}X-A: b", "X-A: b\r\n".repeat(REQUEST_HEADERS_MAX))
}

fn deploy(headers: &str, body: &str) -> String {
    format!("POST /deploy HTTP/1.1\r\n{headers}\r\n\r\n{body}")
}

/// Feeds `input` to a `RequestBuffer` `chunk` bytes per read and lists every outcome: each
/// request answered in turn, then the error, or what was left incomplete.
fn outcomes(input: &[u8], chunk: usize) -> Vec<String> {
    let mut buffer = RequestBuffer::new();
    let mut rest = input;
    let mut seen = Vec::new();
    loop {
        match buffer.poll_request() {
            Parse::Complete(request) => {
                seen.push(format!("{request:?}"));
                let consumed = request.consumed;
                buffer.consume(consumed);
            }
            Parse::Error(error) => {
                seen.push(format!("{error:?}"));
                return seen;
            }
            Parse::Incomplete if rest.is_empty() => {
                seen.push(format!("Incomplete after {} bytes", buffer.buffered()));
                return seen;
            }
            Parse::Incomplete => {
                let n = buffer.handle_bytes(&rest[..chunk.min(rest.len())]);
                rest = &rest[n..];
            }
        }
    }
}

// Proves every endpoint routes, with its parameters, as docs/api.md specifies.
#[test]
fn every_route() {
    let cases = [
        (deploy("Content-Length: 3", "abc"), Route::Deploy),
        (get("/services"), Route::Services),
        (get("/services/web-1"), Route::Service("web-1")),
        (get("/nodes"), Route::Nodes),
        (get("/health"), Route::Health),
        (get("/metrics"), Route::Metrics),
        (
            get("/stream"),
            Route::Stream {
                last_event_id: None,
            },
        ),
        (
            get_with("/stream", "Last-Event-ID: 42"),
            Route::Stream {
                last_event_id: Some(42),
            },
        ),
        (
            get_with("/stream", "last-event-id:"),
            Route::Stream {
                last_event_id: None,
            },
        ),
        (
            get("/logs?service=web"),
            Route::Logs {
                service: "web",
                follow: false,
                lines: None,
            },
        ),
        (
            get("/logs?lines=10000&follow=true&service=db&"),
            Route::Logs {
                service: "db",
                follow: true,
                lines: Some(10_000),
            },
        ),
        (
            get("/logs?follow=false&service=a&lines=0"),
            Route::Logs {
                service: "a",
                follow: false,
                lines: Some(0),
            },
        ),
        (get("/health?"), Route::Health),
    ];
    for (text, route) in &cases {
        assert_eq!(route_of(text), *route, "{text:?}");
    }
}

// Proves the body is exactly Content-Length bytes and the request reports what it used.
#[test]
fn deploy_body_and_consumed() {
    let text = deploy("Content-Length: 5", "hello");
    let Parse::Complete(request) = parse_text(&text) else {
        panic!("incomplete");
    };
    assert_eq!(request.body, b"hello");
    assert_eq!(request.consumed, text.len());
    assert!(request.keep_alive);
    let short = deploy("Content-Length: 6", "hello");
    assert_eq!(parse_text(&short), Parse::Incomplete);
}

// Proves each status the parser answers with is reached by the request that should reach it.
#[test]
fn every_error_status() {
    let long_target = format!("/{}", "a".repeat(REQUEST_TARGET_BYTES_MAX));
    let cases = [
        (
            "GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n".to_string(),
            400,
        ),
        (get("/nowhere"), 404),
        (get("/services/web/x"), 404),
        (get("/health/"), 404),
        ("DELETE /services/web HTTP/1.1\r\n\r\n".to_string(), 405),
        (
            "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
            405,
        ),
        ("GET /deploy HTTP/1.1\r\n\r\n".to_string(), 405),
        (deploy("Host: x", ""), 411),
        (deploy("Transfer-Encoding: chunked", "0\r\n\r\n"), 411),
        (deploy("Content-Length: 1025", ""), 413),
        (get(&long_target), 414),
        (get_with("/health", &too_many_headers()), 431),
        (deploy("Transfer-Encoding: gzip", ""), 501),
        ("GET /health HTTP/2.0\r\n\r\n".to_string(), 505),
        ("GET /health HTTP/1.2\r\n\r\n".to_string(), 505),
        ("GET /health HTTX/1.1\r\n\r\n".to_string(), 400),
        ("GET /health\r\n\r\n".to_string(), 400),
    ];
    for (text, status) in &cases {
        assert_eq!(error_of(text).status(), *status, "{text:?}");
    }
}

// Pins which error is which: the 405 names the method that is allowed, and bad names,
// queries and targets are 400s with their own messages.
#[test]
fn errors_say_what_was_wrong() {
    let post_only = HttpError::MethodNotAllowed { allow: "POST" };
    assert_eq!(error_of("GET /deploy HTTP/1.1\r\n\r\n"), post_only);
    let get_only = HttpError::MethodNotAllowed { allow: "GET" };
    assert_eq!(error_of("HEAD /health HTTP/1.1\r\n\r\n"), get_only);
    let bad_name = HttpError::BadRequest(BAD_SERVICE_NAME);
    for name in ["Web", "-web", "web-", "a_b", "", &"a".repeat(64)] {
        assert_eq!(
            error_of(&get(&format!("/services/{name}"))),
            bad_name,
            "{name:?}"
        );
        assert_eq!(
            error_of(&get(&format!("/logs?service={name}"))),
            bad_name,
            "{name:?}"
        );
    }
    let messages = [
        ("/services/w%65b", "percent-encoding is not accepted"),
        ("http://localhost/health", "must be a path"),
        ("*", "must be a path"),
        ("/health?x=1", "only /logs takes a query"),
        ("/logs", "/logs needs a service"),
        ("/logs?follow=true", "/logs needs a service"),
        ("/logs?service=a&service=b", "appears twice"),
        ("/logs?service=a&follow=yes", "follow must be true or false"),
        ("/logs?service=a&lines=10001", "lines must be a number"),
        ("/logs?service=a&lines=-1", "lines must be a number"),
        (
            "/logs?service=a&lines=99999999999999999999999",
            "lines must be a number",
        ),
        ("/logs?service=a&tail=3", "unknown query parameter"),
        ("/logs?service", "KEY=VALUE"),
    ];
    for (target, message) in messages {
        let error = error_of(&get(target));
        assert_eq!(error.status(), 400, "{target}");
        assert!(error.message().contains(message), "{target}: {error:?}");
    }
}

// Proves a Last-Event-ID must be a u64 and appear once.
#[test]
fn last_event_id_rules() {
    for value in ["abc", "-1", "18446744073709551616", "1 2"] {
        let text = get_with("/stream", &format!("Last-Event-ID: {value}"));
        assert!(
            error_of(&text).message().contains("Last-Event-ID"),
            "{value}"
        );
    }
    let max = get_with("/stream", "Last-Event-ID: 18446744073709551615");
    assert_eq!(
        route_of(&max),
        Route::Stream {
            last_event_id: Some(u64::MAX)
        }
    );
    let twice = get_with("/stream", "Last-Event-ID: 1\r\nLast-Event-ID: 1");
    assert!(error_of(&twice).message().contains("twice"));
}

// Proves Content-Length must be one plain decimal number: signs, spaces inside, lists, empty
// values and conflicting duplicates are 400; agreeing duplicates are accepted; a number too
// big for u64 is 413.
#[test]
fn bad_content_length() {
    let bad = ["abc", "-1", "+5", "5 5", "5, 5", "0x5", "", "5;"];
    for value in bad {
        let error = error_of(&deploy(&format!("Content-Length: {value}"), "hello"));
        assert_eq!(
            error,
            HttpError::BadRequest("Content-Length must be a decimal number")
        );
    }
    let conflicting = deploy("Content-Length: 5\r\nContent-Length: 4", "hello");
    assert_eq!(
        error_of(&conflicting),
        HttpError::BadRequest("conflicting Content-Length headers")
    );
    let agreeing = deploy("Content-Length: 5\r\ncontent-length:  5 ", "hello");
    assert_eq!(route_of(&agreeing), Route::Deploy);
    let huge = deploy("Content-Length: 99999999999999999999999", "");
    assert_eq!(error_of(&huge), HttpError::PayloadTooLarge);
    let both = deploy("Content-Length: 5\r\nTransfer-Encoding: chunked", "hello");
    assert!(error_of(&both).message().contains("ambiguous"));
}

// Proves header injection fails: a lone CR, a NUL or another control byte inside a value,
// and an obsolete folded line, are 400s rather than a second header smuggled in.
#[test]
fn header_injection_is_refused() {
    let attempts = [
        "GET /stream HTTP/1.1\r\nLast-Event-ID: 5\rContent-Length: 9\r\n\r\n",
        "GET /health HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        "GET /health HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
        "GET /health HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
        "GET /health HTTP/1.1\r\nX-A : a\r\n\r\n",
        "GET /health\r\nHTTP/1.1\r\n\r\n",
        "GET /hea\rlth HTTP/1.1\r\n\r\n",
        "GET /he alth HTTP/1.1\r\n\r\n",
    ];
    for text in attempts {
        assert_eq!(error_of(text).status(), 400, "{text:?}");
    }
}

// Proves the keep-alive rules: HTTP/1.1 keeps, HTTP/1.0 closes, a Connection header says
// otherwise, and `close` wins over anything else in the header.
#[test]
fn keep_alive_rules() {
    let cases = [
        ("GET /health HTTP/1.1\r\n\r\n", true),
        ("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            "GET /health HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
        ),
        ("GET /health HTTP/1.0\r\n\r\n", false),
        (
            "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        (
            "GET /health HTTP/1.0\r\nConnection: upgrade\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
    ];
    for (text, keep_alive) in cases {
        let Parse::Complete(request) = parse_text(text) else {
            panic!("{text:?}");
        };
        assert_eq!(request.keep_alive, keep_alive, "{text:?}");
    }
}

// Proves two requests in one buffer parse one after the other: the first reports the bytes
// it used, and the second starts there, body and all.
#[test]
fn pipelined_requests() {
    let first = deploy("Content-Length: 4", "abcd");
    let text = format!("{first}{}", get("/nodes"));
    let Parse::Complete(request) = parse_text(&text) else {
        panic!("incomplete");
    };
    assert_eq!((request.route, request.body), (Route::Deploy, &b"abcd"[..]));
    assert_eq!(request.consumed, first.len());
    let second = parse(&text.as_bytes()[request.consumed..]);
    let Parse::Complete(request) = second else {
        panic!("{second:?}");
    };
    assert_eq!(request.route, Route::Nodes);
    assert_eq!(request.consumed, text.len() - first.len());
    assert_eq!(outcomes(text.as_bytes(), usize::MAX).len(), 3);
}

// Proves the head's and the body's limits are exact: a head of REQUEST_HEAD_BYTES_MAX bytes
// and a body of REQUEST_BODY_BYTES_MAX fit, together, in a RequestBuffer; one byte more of
// either is refused.
#[test]
fn limits_are_exact() {
    let head = |extra: usize| {
        let fixed = "POST /deploy HTTP/1.1\r\nContent-Length: 1024\r\nX: \r\n\r\n".len();
        let filler = "a".repeat(REQUEST_HEAD_BYTES_MAX - fixed + extra);
        format!("POST /deploy HTTP/1.1\r\nContent-Length: 1024\r\nX: {filler}\r\n\r\n")
    };
    let body = "b".repeat(REQUEST_BODY_BYTES_MAX);
    let full = format!("{}{body}", head(0));
    assert_eq!(full.len(), REQUEST_BYTES_MAX);
    let seen = outcomes(full.as_bytes(), 4096);
    assert!(seen[0].starts_with("Request { route: Deploy"), "{seen:?}");
    assert_eq!(seen[1], "Incomplete after 0 bytes");
    assert_eq!(error_of(&head(1)), HttpError::HeadersTooLarge);
    let most_headers = "X-A: b\r\n".repeat(REQUEST_HEADERS_MAX - 1) + "X-A: b";
    assert_eq!(route_of(&get_with("/health", &most_headers)), Route::Health);
    let over = deploy("Content-Length: 1025", &"b".repeat(1025));
    assert_eq!(error_of(&over), HttpError::PayloadTooLarge);
}

// Proves a head that does not end within the limit is refused once the limit is buffered:
// 414 while still in the request target, 431 in the headers, whatever follows.
#[test]
fn endless_heads() {
    let endless_target = format!("GET /{}", "a".repeat(REQUEST_BYTES_MAX));
    assert_eq!(error_of(&endless_target), HttpError::UriTooLong);
    let endless_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(REQUEST_BYTES_MAX));
    assert_eq!(error_of(&endless_header), HttpError::HeadersTooLarge);
    let endless_lines = "\r\n".repeat(REQUEST_BYTES_MAX);
    assert_eq!(error_of(&endless_lines), HttpError::UriTooLong);
    let limit = &endless_header.as_bytes()[..REQUEST_HEAD_BYTES_MAX];
    assert_eq!(parse(limit), Parse::Error(HttpError::HeadersTooLarge));
    assert_eq!(parse(&limit[..limit.len() - 1]), Parse::Incomplete);
}

/// Every request above, valid and not, one after another and alone.
fn corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = [
        deploy("Content-Length: 5", "hello"),
        get("/logs?service=web&follow=true&lines=5"),
        get_with("/stream", "Last-Event-ID: 7\r\nConnection: close"),
        deploy("Content-Length: 5\r\nContent-Length: 4", "hello"),
        deploy("Transfer-Encoding: chunked", "0\r\n\r\n"),
        "GET /health HTTP/2.0\r\n\r\n".to_string(),
        "GET /health HTTP/1.1\r\nX: a\rb\r\n\r\n".to_string(),
        "\r\n\r\nGET /nodes HTTP/1.0\r\n\r\n".to_string(),
        format!("GET /{}", "a".repeat(REQUEST_BYTES_MAX)),
        format!(
            "GET / HTTP/1.1\r\nX: {}",
            "a".repeat(REQUEST_HEAD_BYTES_MAX)
        ),
        get_with("/health", &too_many_headers()),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let pipelined: Vec<u8> = corpus[..4].concat();
    corpus.push(pipelined);
    corpus
}

// Proves split delivery changes nothing: byte by byte, in odd chunks and all at once, every
// input gives the same requests and the same final outcome.
#[test]
fn split_delivery_is_the_same() {
    for input in corpus() {
        let at_once = outcomes(&input, usize::MAX);
        for chunk in [1, 2, 7, 100] {
            assert_eq!(outcomes(&input, chunk), at_once, "chunk {chunk}");
        }
    }
}

// Proves random byte strings never panic and give the same outcomes however they are split.
// Half the strings are built from HTTP fragments, to reach past the request line.
#[test]
fn random_bytes_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "GET ",
        "POST ",
        "/deploy",
        "/services/",
        "/logs?",
        "service=web",
        "&",
        "lines=9",
        " HTTP/1.1",
        " HTTP/1.0",
        "\r\n",
        "\n",
        "\r",
        ": ",
        "Content-Length",
        "5",
        "-",
        "Transfer-Encoding",
        "chunked",
        "Connection",
        "close",
        "Last-Event-ID",
        "%",
        "?",
        " ",
        "\0",
        "é",
        "hello",
    ];
    let mut prng = Prng::new(7);
    for _ in 0..3000 {
        let mut input = Vec::new();
        let length = prng.below(120);
        let fragments = prng.chance(1, 2);
        for _ in 0..length {
            if fragments {
                let fragment = FRAGMENTS[prng.below(FRAGMENTS.len() as u64) as usize];
                input.extend_from_slice(fragment.as_bytes());
            } else {
                input.push(prng.next_u64() as u8);
            }
        }
        let chunk = 1 + prng.below(16) as usize;
        assert_eq!(
            outcomes(&input, chunk),
            outcomes(&input, usize::MAX),
            "{input:?}"
        );
    }
}

// Pins the numbers in the operator-facing messages to the constants they describe.
#[test]
fn messages_match_limits() {
    let body = REQUEST_BODY_BYTES_MAX.to_string();
    assert!(HttpError::PayloadTooLarge.message().contains(&body));
    let target = REQUEST_TARGET_BYTES_MAX.to_string();
    assert!(HttpError::UriTooLong.message().contains(&target));
    let head = HttpError::HeadersTooLarge.message();
    assert!(head.contains(&REQUEST_HEAD_BYTES_MAX.to_string()));
    assert!(head.contains(&format!("{REQUEST_HEADERS_MAX} headers")));
    let lines = line_count("x").unwrap_err().message();
    assert!(lines.contains(&LOGS_LINES_MAX.to_string()));
}
