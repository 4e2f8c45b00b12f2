//! Fuzzes the myco.json parser on arbitrary bytes.
//!
//! Proves that no byte string panics `Manifest::parse`, and that its promise holds: a manifest it
//! accepts, its flake locked to a reference as long as the stand-in its check used (the reference
//! with `rev=` and 40 hex digits appended), encodes under any version, as a service and as a
//! tombstone, and every entry it yields decodes back to the same body. `myco sign` relies on that
//! promise with an `expect`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_cli::flake::FlakeLock;
use myco_cli::manifest::Manifest;
use myco_core::config::{ENTRY_BYTES_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES};
use myco_core::schema::entry::{encode_entry, Entry, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    let manifest = match manifest.flake() {
        Some(uri) => {
            let lock = lock_of(uri, data);
            manifest
                .locked(lock)
                .expect("a lock as long as the stand-in fits")
        }
        None => manifest,
    };
    // The narrowest and widest versions bound every encoding's length; one from the input varies it.
    let tail: [u8; 12] = core::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
    let versions = [
        Version::default(),
        Version {
            clock: u64::MAX,
            key_id: u32::MAX,
        },
        Version {
            clock: u64::from_le_bytes(tail[..8].try_into().unwrap()),
            key_id: u32::from_le_bytes(tail[8..].try_into().unwrap()),
        },
    ];
    for version in versions {
        for body in [manifest.service(version), manifest.tombstone(version)] {
            assert_eq!(body.name, manifest.name());
            let mut out = [0u8; ENTRY_BYTES_MAX];
            let n = encode_entry(&body, &[7; 64], &mut out).expect("a parsed manifest encodes");
            let entry = Entry::decode(&out[..n]).expect("an encoded entry decodes");
            assert_eq!(entry.body, body);
        }
    }
});

/// A lock of `uri` as Nix writes one for a git reference, its rev taken from the input.
fn lock_of(uri: &str, data: &[u8]) -> FlakeLock {
    let rev: [u8; FLAKE_REV_BYTES] = core::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
    let hex: String = rev.iter().map(|b| format!("{b:02x}")).collect();
    let separator = if uri.contains('?') { '&' } else { '?' };
    FlakeLock {
        url: format!("{uri}{separator}rev={hex}"),
        rev,
        nar_hash: [0x5c; NAR_HASH_BYTES],
    }
}
