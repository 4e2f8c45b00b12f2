//! Fuzzes the parser of the daemon's HTTP answers (`myco_cli::http::parse_response`), which `myco`
//! runs on whatever bytes its socket returns.
//!
//! Proves: no input panics it; an accepted answer has a valid status and a body within the limit
//! that ends the input; the input's strict prefixes are `Incomplete`, so a client reading in any
//! chunks stops exactly at the answer's end; a byte more is refused; and a refusal is final, so a
//! client never reads on after one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_cli::http::{parse_response, ResponseError, RESPONSE_BODY_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    let mut longer = data.to_vec();
    longer.push(data.first().copied().unwrap_or(b'x'));
    match parse_response(data) {
        Ok(response) => {
            assert!((100..=599).contains(&response.status));
            assert!(response.body.len() <= RESPONSE_BODY_BYTES_MAX);
            assert!(data.ends_with(response.body));
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
