//! Fuzzes the status-line parser of an HTTP health check's answer
//! (`myco_host::daemon::health::parse_status`) on arbitrary bytes.
//!
//! Proves that no answer a service (or whatever listens on its port) sends panics the parser,
//! that a status it reads is a real one (100 to 599), that it reads nothing before the line is
//! complete, and that the same code in a canonical status line reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_host::daemon::health::parse_status;

fuzz_target!(|data: &[u8]| {
    let Some(code) = parse_status(data) else {
        return;
    };
    assert!((100..=599).contains(&code));
    let end = data
        .iter()
        .position(|&b| b == b'\n')
        .expect("a complete line");
    assert_eq!(
        parse_status(&data[..end]),
        None,
        "an incomplete line reads nothing"
    );
    let canonical = format!("HTTP/1.1 {code} Reason\r\n");
    assert_eq!(parse_status(canonical.as_bytes()), Some(code));
});
