//! Fuzzes `executor::parse_show`, the reader of `systemctl show` output, on arbitrary bytes.
//!
//! Proves that no output panics it, that every unit it reports has a one-line name and comes
//! from a block with an `Id=` line (at most one unit per such line), and that blank lines before
//! the output change nothing: blocks are what the executor's health and load decisions read, so
//! stray lines systemd or a shim prints first must not shift them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::executor::{parse_show, Shown};

fn shown(text: &[u8]) -> Vec<Shown<'_>> {
    let mut units = Vec::new();
    parse_show(text, |s| units.push(s));
    units
}

fuzz_target!(|data: &[u8]| {
    let units = shown(data);
    let ids = data
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"Id="))
        .count();
    assert!(
        units.len() <= ids,
        "{} units from {ids} Id= lines",
        units.len()
    );
    for u in &units {
        assert!(!u.id.is_empty() && !u.id.contains(&b'\n'));
    }
    let mut padded = b"\n\n".to_vec();
    padded.extend_from_slice(data);
    assert_eq!(shown(&padded), units);
});
