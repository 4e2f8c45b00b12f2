//! Fuzzes the binary cache's request parser (`cache::parse_request`) and the `nix-store
//! --dump-db` reader (`cache::parse_registration`) on arbitrary bytes.
//!
//! Proves that no input panics either; that the parser's outcome depends only on the bytes, not
//! on how they arrived (a prefix of a complete head is never refused, and is `Incomplete` unless it
//! is already a whole head of its own); that a routed hash is always 32 nix32 characters, so no
//! target can name a file; and that a registration read is a store path whose narinfo and
//! fingerprint either fit or say so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::cache::{
    parse_registration, parse_request, write_fingerprint, write_narinfo, NarInfoFacts, Parse,
    Route, NIX32_CHARS,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data);
    if let Parse::Complete(request) = whole {
        assert!(request.consumed <= data.len());
        if let Route::NarInfo(hash) | Route::Nar(hash) = request.route {
            assert!(hash.iter().all(|c| NIX32_CHARS.contains(c)));
        }
        for cut in 0..request.consumed {
            assert_eq!(
                parse_request(&data[..cut]),
                Parse::Incomplete,
                "cut at {cut}"
            );
        }
    }
    if let Some(registration) = parse_registration(data) {
        assert!(registration.path.starts_with(b"/nix/store/"));
        let mut out = [0u8; 4096];
        let _ = write_fingerprint(&registration, &mut out);
        let facts = NarInfoFacts {
            registration,
            key_name: b"0123456789abcdef",
            signature: &[0; 64],
        };
        let _ = write_narinfo(&facts, &mut out);
    }
});
