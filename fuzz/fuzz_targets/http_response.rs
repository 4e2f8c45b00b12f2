//! Fuzzes the parser of the daemon's HTTP answers (`myco_cli::http::parse_response`, and
//! `parse_head`, which the event and journal streams use alone), which `myco` runs on whatever
//! bytes its socket returns.
//!
//! Proves: no input panics either; an accepted answer has a valid status and a body within the
//! limit that ends the input, right after the head `parse_head` finds (or, chunked, whose framing
//! ends the input with the empty last chunk and fits the limits), and a head it refuses
//! refuses the answer; the input's strict prefixes are `Incomplete`, so a client reading in any
//! chunks stops exactly at the answer's end; a byte more is refused; and a refusal is final, so a
//! client never reads on after one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_cli::http::{
    parse_head, parse_response, ResponseError, RESPONSE_BODY_BYTES_MAX, RESPONSE_HEAD_BYTES_MAX,
};

fuzz_target!(|data: &[u8]| {
    let mut longer = data.to_vec();
    longer.push(data.first().copied().unwrap_or(b'x'));
    let head = parse_head(data);
    if let Err(refused @ (ResponseError::TooLarge | ResponseError::Malformed(_))) = head {
        assert_eq!(
            parse_response(data),
            Err(refused),
            "a refused head refuses the answer"
        );
    }
    match parse_response(data) {
        Ok(response) => {
            assert!((100..=599).contains(&response.status));
            assert!(response.body.len() <= RESPONSE_BODY_BYTES_MAX);
            let head = head.expect("an accepted answer has a head");
            assert_eq!(head.status, response.status);
            if head.chunked {
                assert!(data.ends_with(b"0\r\n\r\n"));
                assert!(data.len() <= RESPONSE_HEAD_BYTES_MAX + RESPONSE_BODY_BYTES_MAX);
                assert!(head.len + response.body.len() < data.len());
                assert_eq!(head.content_length, None);
            } else {
                assert!(data.ends_with(&response.body));
                assert_eq!(head.len + response.body.len(), data.len());
                assert_eq!(head.content_length, Some(response.body.len()));
            }
            for n in [0, data.len() / 2, data.len() - 1] {
                assert_eq!(
                    parse_response(&data[..n]),
                    Err(ResponseError::Incomplete),
                    "a prefix of {n} bytes"
                );
            }
            assert!(matches!(
                parse_response(&longer),
                Err(ResponseError::Malformed(_))
            ));
        }
        Err(ResponseError::Incomplete) => {}
        Err(refused) => {
            assert!(!refused.to_string().is_empty());
            assert!(
                parse_response(&longer).is_err(),
                "{refused:?} was not final"
            );
        }
    }
});
