//! Feeds arbitrary bytes to each step of the tunnel handshake: the box's Open (with and without a
//! credential the fuzzer may alter), the client's Accept, and the box's Prove, each after a real
//! exchange has set the state up.
//!
//! Proves: no panic on any bytes; a refused message leaves the state able to complete with the
//! genuine one afterwards; a Prove or Accept accepted in place of the genuine one is the genuine
//! one itself (the fuzzer cannot forge either).
#![no_main]

#[path = "common/tunnel.rs"]
mod tunnel;

use libfuzzer_sys::fuzz_target;
use tunnel::{parties, NOW};

fuzz_target!(|data: &[u8]| {
    let Some((&step, msg)) = data.split_first() else {
        return;
    };
    let p = parties();
    match step % 3 {
        0 => {
            if let Ok((_, accept)) = p.answer(msg) {
                assert!(!accept.is_empty());
            }
        }
        1 => {
            let (_, accept) = p.answer(&p.open).unwrap();
            if p.client.handle_accept(msg, &p.holder).is_ok() {
                assert_eq!(msg, &accept[..], "only the genuine Accept completes");
            }
            assert!(p.client.handle_accept(&accept, &p.holder).is_ok());
        }
        _ => {
            let (responder, accept) = p.answer(&p.open).unwrap();
            let (_, prove, _) = p.client.handle_accept(&accept, &p.holder).unwrap();
            if responder.handle_prove(msg, &p.trust, NOW).is_ok() {
                assert_eq!(msg, &prove[..], "only the genuine Prove completes");
            }
            assert!(responder.handle_prove(&prove, &p.trust, NOW).is_ok());
        }
    }
});
