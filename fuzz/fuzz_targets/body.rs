//! Fuzzes `Body::decode` on arbitrary bytes.
//!
//! Proves that no byte string panics the message decoder and that every decoded body survives a
//! round trip: it re-encodes within one frame body (when the input itself fit one), decodes back
//! to the same value, and its re-encoding is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::BODY_BYTES_MAX;
use myco_core::schema::message::Body;

fuzz_target!(|data: &[u8]| {
    let Some(body) = Body::decode(data) else {
        return;
    };
    let mut out = [0u8; BODY_BYTES_MAX];
    let Some(n) = body.encode(&mut out) else {
        // Only an input longer than one frame body may decode to a body that does not fit one.
        assert!(
            data.len() > BODY_BYTES_MAX,
            "a body that came in one frame must go out in one"
        );
        return;
    };
    assert!(
        n <= data.len(),
        "the canonical encoding is never longer than an accepted one"
    );
    let again = Body::decode(&out[..n]).expect("an encoded body decodes");
    assert_eq!(again, body);
    let mut out2 = [0u8; BODY_BYTES_MAX];
    let n2 = again.encode(&mut out2).expect("it fit once");
    assert_eq!(out[..n], out2[..n2]);
});
