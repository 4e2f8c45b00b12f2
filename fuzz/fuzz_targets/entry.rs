//! Fuzzes `Entry::decode` on arbitrary bytes.
//!
//! Proves that no byte string panics the entry decoder or its validation, and that an accepted
//! entry has exactly one encoding: re-encoding its body and signature gives back the input bytes.
//! Entry digests (and so Merkle buckets and the LWW tie-break) are computed over the encoded bytes,
//! so two encodings of one entry would be two different entries to the store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::schema::entry::{encode_entry, Entry};

fuzz_target!(|data: &[u8]| {
    let Ok(e) = Entry::decode(data) else { return };
    assert_eq!(e.signed.len() + e.signature.len(), data.len());
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let n = encode_entry(&e.body, e.signature, &mut out).expect("a decoded entry re-encodes");
    assert_eq!(&out[..n], data, "an entry must have exactly one encoding");
    let again = Entry::decode(&out[..n]).expect("an encoded entry decodes");
    assert_eq!(again.body, e.body);
});
