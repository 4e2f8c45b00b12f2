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
use myco_core::crypto::tunnel::TunnelResponder;
use tunnel::{parties, Parties, NOW};

fuzz_target!(|data: &[u8]| {
    let Some((&step, msg)) = data.split_first() else {
        return;
    };
    let Parties {
        me,
        trust,
        holder,
        client,
        open,
    } = parties();
    let answer =
        |open: &[u8]| TunnelResponder::handle_open(open, &me, &trust, NOW, [5; 32], [6; 32]);
    match step % 3 {
        0 => {
            if let Ok((_, accept)) = answer(msg) {
                assert!(!accept.is_empty());
            }
        }
        1 => {
            let (_, accept) = answer(&open).unwrap();
            if client.handle_accept(msg, &holder).is_ok() {
                assert_eq!(msg, &accept[..], "only the genuine Accept completes");
            }
            assert!(client.handle_accept(&accept, &holder).is_ok());
        }
        _ => {
            let (responder, accept) = answer(&open).unwrap();
            let (_, prove, _) = client.handle_accept(&accept, &holder).unwrap();
            if responder.handle_prove(msg, &trust, NOW).is_ok() {
                assert_eq!(msg, &prove[..], "only the genuine Prove completes");
            }
            assert!(responder.handle_prove(&prove, &trust, NOW).is_ok());
        }
    }
});
