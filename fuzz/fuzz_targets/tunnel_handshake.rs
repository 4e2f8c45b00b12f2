//! Feeds arbitrary bytes to each step of the tunnel handshake: the box's Open (with and without a
//! credential the fuzzer may alter), the client's Accept, and the box's Prove, each after a real
//! exchange has set the state up.
//!
//! Proves: no panic on any bytes; a refused message leaves the state able to complete with the
//! genuine one afterwards; a Prove or Accept accepted in place of the genuine one is the genuine
//! one itself (the fuzzer cannot forge either).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::access::{issue_access, AccessBody};
use myco_core::crypto::cert::certify;
use myco_core::crypto::handshake::{Credentials, Trust};
use myco_core::crypto::tunnel::{TunnelClient, TunnelResponder};
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&step, msg)) = data.split_first() else {
        return;
    };
    let operator = SigningKey::from_seed([7; 32]).unwrap();
    let key = SigningKey::from_seed([1; 32]).unwrap();
    let cert = certify(&operator, &key.public_key(), 0, Arch::X86_64, false, 0);
    let me = Credentials::new(key, &cert, &operator.public_key()).unwrap();
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: 0,
        zone: 0,
    };
    let holder = SigningKey::from_seed([2; 32]).unwrap();
    let body = AccessBody {
        operator_pk: operator.public_key().0,
        holder_pk: holder.public_key().0,
        expires_at_s: NOW + 60,
        issued_at: 0,
        node: None,
    };
    let access = issue_access(&operator, &body);
    let (client, open) = TunnelClient::new(&access, &holder, None, [3; 32], [4; 32]).unwrap();
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
