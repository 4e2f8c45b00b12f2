//! Fuzzes `--profile`'s parser (`myco_core::config::Profile::named`) on arbitrary text.
//!
//! Proves that no text panics it, that it accepts exactly the three names, spelled as they are,
//! and that a profile it returns has the name it was asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::Profile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match Profile::named(text) {
        Some(p) => {
            assert_eq!(p.name, text);
            assert!(Profile::ALL.contains(&p));
        }
        None => assert!(Profile::ALL.iter().all(|p| p.name != text)),
    }
});
