//! Fuzzes the API's HTTP/1.1 request parser (`myco_host::http::request`) on arbitrary bytes.
//!
//! The input's first byte says how many of the following bytes are chunk sizes (0 to 7, each 1 to
//! 256 bytes, used in turn); the rest is what a client sends. Proves: no input panics the parser
//! or the connection buffer; feeding the bytes in those chunks gives the same requests and the
//! same final outcome as feeding them all at once; the first outcome is the one `parse` gives on
//! the raw bytes; every complete request stays within the limits; and every refusal has an error
//! response that fits a small buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::schema::entry::valid_name;
use myco_host::http::request::{
    parse, Parse, Request, RequestBuffer, Route, REQUEST_BODY_BYTES_MAX, REQUEST_BYTES_MAX,
};
use myco_host::http::response::write_http_error;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(count % 8).min(rest.len()));
    let chunks: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();

    let at_once = outcomes(stream, &[usize::MAX]);
    let chunked = outcomes(stream, if chunks.is_empty() { &[1] } else { &chunks });
    assert_eq!(chunked, at_once, "split delivery changed the outcome");
    if let first @ (Parse::Complete(_) | Parse::Error(_)) = parse(stream) {
        assert_eq!(describe(&first), at_once[0]);
    }
});

/// Feeds `stream` to a connection buffer in reads of `chunks` bytes (cycling), answering every
/// request as the daemon would, and lists the outcomes: each request, then the error or what was
/// left incomplete.
fn outcomes(stream: &[u8], chunks: &[usize]) -> Vec<String> {
    let mut buffer = RequestBuffer::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().cycle();
    let mut seen = Vec::new();
    loop {
        let outcome = buffer.poll_request();
        if outcome != Parse::Incomplete || rest.is_empty() {
            seen.push(describe(&outcome));
        }
        match outcome {
            Parse::Complete(request) => {
                check(&request);
                let consumed = request.consumed;
                buffer.consume(consumed);
            }
            Parse::Error(_) => return seen,
            Parse::Incomplete if rest.is_empty() => return seen,
            Parse::Incomplete => {
                let size = *sizes.next().expect("a cycle of one or more sizes");
                let n = buffer.handle_bytes(&rest[..size.min(rest.len())]);
                assert!(n > 0, "an incomplete request always has room to grow");
                rest = &rest[n..];
            }
        }
    }
}

fn describe(parse: &Parse<'_>) -> String {
    if let Parse::Error(error) = parse {
        let mut buf = [0u8; 1024];
        assert!(
            write_http_error(&mut buf, *error).is_ok(),
            "{error:?} does not fit"
        );
        assert!((400..=599).contains(&error.status()));
    }
    format!("{parse:?}")
}

fn check(request: &Request<'_>) {
    assert!(request.body.len() <= REQUEST_BODY_BYTES_MAX);
    assert!(request.consumed > 0 && request.consumed <= REQUEST_BYTES_MAX);
    match request.route {
        Route::Service(name) | Route::Logs { service: name, .. } => assert!(valid_name(name)),
        _ => {}
    }
}
