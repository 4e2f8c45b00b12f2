//! Fuzzes `LogScan`, the reader of a build's log that tells a build from a fetch from peers, on
//! arbitrary bytes cut into arbitrary pieces.
//!
//! Proves that no byte string panics it, that the answer does not depend on where the log is cut
//! (the daemon reads it in buffer-sized pieces), and that a log with no line starting
//! `copying path '` is never read as fetched from peers. Seed it with
//! `copying path '/nix/store/x' from 'http://127.0.0.1:7947'...`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::executor::{LogScan, Provenance};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, log)) = data.split_first() else {
        return;
    };
    let mut whole = LogScan::default();
    whole.feed(log);
    let mut pieces = LogScan::default();
    let step = usize::from(cut).max(1);
    for piece in log.chunks(step) {
        pieces.feed(piece);
    }
    assert_eq!(whole.provenance(), pieces.provenance());
    let copies = log
        .split(|&b| b == b'\n')
        .any(|l| l.starts_with(b"copying path '"));
    if !copies {
        assert_ne!(whole.provenance(), Provenance::FromPeers);
    }
});
