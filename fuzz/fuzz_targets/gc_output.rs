//! Fuzzes `executor::parse_freed` on arbitrary bytes.
//!
//! Proves that no output of `nix-collect-garbage` panics the parser, and that a parsed summary
//! reads the same when it is the last line after arbitrary earlier output (the summary line
//! wins), so a stray line Nix prints first cannot change the bytes counted as freed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::executor::parse_freed;

fuzz_target!(|data: &[u8]| {
    let Some(freed) = parse_freed(data) else {
        return;
    };
    let line = format!(
        "{} store paths deleted, {} B freed\n",
        freed.paths, freed.bytes
    );
    let mut again = data.to_vec();
    again.push(b'\n');
    again.extend_from_slice(line.as_bytes());
    assert_eq!(parse_freed(&again), Some(freed));
});
