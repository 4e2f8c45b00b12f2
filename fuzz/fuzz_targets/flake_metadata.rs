//! Fuzzes `parse_metadata`, the reader of `nix flake metadata --json`, on arbitrary bytes.
//!
//! Proves that no byte string panics it, and that its promise holds: a lock it returns names its
//! rev in its reference (so the core accepts an entry built from it), and that entry encodes and
//! decodes back to the same lock. Seed it with the captured output in `tests/nix/metadata/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_cli::flake::parse_metadata;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::schema::entry::{
    encode_entry, names_rev, Entry, EntryBody, ServiceSpec, Source, Version,
};

fuzz_target!(|data: &[u8]| {
    let Ok(lock) = parse_metadata(data) else {
        return;
    };
    assert!(names_rev(&lock.url, &lock.rev), "{lock:?}");
    assert!(lock.rev_hex().starts_with(&lock.short_rev()));
    let source = Source::Flake {
        uri: &lock.url,
        attr: "default",
        rev: lock.rev,
        nar_hash: lock.nar_hash,
    };
    let body = EntryBody {
        name: "a",
        version: Version::default(),
        spec: Some(ServiceSpec::minimal(source)),
    };
    let mut out = [0u8; ENTRY_BYTES_MAX];
    // A reference too long for a frame, or holding a control character, is the core's to refuse;
    // every other lock encodes.
    let Ok(n) = encode_entry(&body, &[7; 64], &mut out) else {
        return;
    };
    let entry = Entry::decode(&out[..n]).expect("an encoded entry decodes");
    assert_eq!(entry.body, body);
});
