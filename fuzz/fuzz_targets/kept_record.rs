//! Fuzzes `rollout::decode_kept` (a kept version's record, as `myco-d` reads it back from
//! `<state-dir>/kept/` at boot) and `Executor::restore_kept`, which takes what it decodes, on an
//! executor that found a unit of `web` at boot.
//!
//! Proves: no input panics; a record that decodes is exactly its parts written again (one
//! encoding per record); the executor keeps a version only from a valid entry of `web` (the
//! service with a unit here), with a program exactly when it is a flake, and keeps it once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::executor::rollout::decode_kept;
use myco_core::executor::{unit_digest, Executor};
use myco_core::schema::entry::{Entry, Source};

fuzz_target!(|data: &[u8]| {
    let Some((program, entry)) = decode_kept(data) else {
        return;
    };
    let program_bytes = program.unwrap_or("").as_bytes();
    let mut again = vec![1u8];
    again.extend_from_slice(&(program_bytes.len() as u16).to_le_bytes());
    again.extend_from_slice(program_bytes);
    again.extend_from_slice(entry);
    assert_eq!(again, data, "one encoding per record");

    let mut e = Executor::new(false);
    assert!(e.handle_installed("web", 7));
    let kept = e.restore_kept(entry, program);
    if kept {
        let decoded = Entry::decode(entry).expect("only a valid entry is kept");
        assert_eq!(decoded.body.name, "web");
        let spec = decoded.body.spec.expect("only a service is kept");
        assert_eq!(
            matches!(spec.source, Source::Flake { .. }),
            program.is_some()
        );
        let k = &e.kept()[0];
        assert_eq!(k.digest, unit_digest(entry));
        assert!(!e.restore_kept(entry, program), "kept once");
    } else {
        assert!(e.kept().is_empty());
    }
});
