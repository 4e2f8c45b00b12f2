//! Fuzzes `parse_build_json`, the reader of `nix build --json`, on arbitrary bytes.
//!
//! Proves that no byte string panics it, and that what it returns is a slice of the input that
//! holds no quote, backslash or control character, so the executor can append `/bin/<name>` and
//! hand it to the unit compiler. Seed it with `[{"drvPath":"/d","outputs":{"out":"/nix/store/x"}}]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::executor::parse_build_json;

fuzz_target!(|data: &[u8]| {
    let Some(out) = parse_build_json(data) else {
        return;
    };
    assert!(!out.contains('"') && !out.contains('\\'), "{out:?}");
    assert!(!out.chars().any(char::is_control), "{out:?}");
    let start = out.as_ptr() as usize - data.as_ptr() as usize;
    assert!(start + out.len() <= data.len());
});
