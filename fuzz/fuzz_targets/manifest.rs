//! Fuzzes the myco.json parser on arbitrary bytes.
//!
//! Proves that no byte string panics `Manifest::parse`, and that its promise holds: a manifest it
//! accepts encodes under any version, as a service and as a tombstone, and every entry it yields
//! decodes back to the same body. `myco sign` relies on that promise with an `expect`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_cli::manifest::Manifest;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::schema::entry::{encode_entry, Entry, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
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
