//! Feeds arbitrary bytes as a tunnel record, and as a length prefix, to an open tunnel's session.
//!
//! Proves: no panic on any bytes; a record the session refuses leaves it able to open the genuine
//! next record; nothing but the genuine record (its exact bytes) opens; an accepted record is
//! never accepted twice.
#![no_main]

#[path = "common/tunnel.rs"]
mod tunnel;

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::tunnel::{
    frame_len, LENGTH_BYTES, RECORD_BYTES_MAX, RECORD_FRAME_BYTES_MAX,
};
use tunnel::{parties, NOW};

fuzz_target!(|data: &[u8]| {
    if data.len() >= LENGTH_BYTES {
        let _ = frame_len([data[0], data[1]], RECORD_BYTES_MAX);
    }
    if data.len() > RECORD_FRAME_BYTES_MAX {
        return;
    }
    let p = parties();
    let (responder, accept) = p.answer(&p.open).unwrap();
    let (mut c, prove, _) = p.client.handle_accept(&accept, &p.holder).unwrap();
    let mut b = responder.handle_prove(&prove, &p.trust, NOW).unwrap();
    let mut genuine = [0u8; 64];
    genuine[LENGTH_BYTES..LENGTH_BYTES + 5].copy_from_slice(b"hello");
    let n = c.seal(&mut genuine, 5).unwrap();
    let mut fuzzed = data.to_vec();
    if b.open(&mut fuzzed).is_ok() {
        assert_eq!(data, &genuine[..n], "only the genuine record opens");
        assert!(b.open(&mut genuine[..n].to_vec()).is_err(), "never twice");
        return;
    }
    assert_eq!(b.open(&mut genuine[..n].to_vec()).unwrap(), b"hello");
});
