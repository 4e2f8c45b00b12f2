//! Feeds arbitrary bytes to each handshake step: a responder's Hello, an initiator's Reply and a
//! responder's Finish, each after a real exchange has set the state up.
//!
//! Proves: no panic on any bytes; a refused message leaves the state able to complete with the
//! genuine message afterwards; anything accepted in place of the genuine message is the genuine
//! message itself (the fuzzer cannot forge a Reply or a Finish).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::cert::certify;
use myco_core::crypto::handshake::{Credentials, Initiator, Responder, Trust};
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;

fn creds(operator: &SigningKey, seed: u8) -> Credentials {
    let key = SigningKey::from_seed([seed; 32]).unwrap();
    let cert = certify(operator, &key.public_key(), 0, Arch::X86_64, false, 0);
    Credentials::new(key, &cert, &operator.public_key()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, msg)) = data.split_first() else {
        return;
    };
    let operator = SigningKey::from_seed([7; 32]).unwrap();
    let (a, b) = (creds(&operator, 1), creds(&operator, 2));
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: 0,
        zone: 0,
    };
    let (initiator, hello) = Initiator::new(&a, &trust, [3; 32], [4; 32]).unwrap();
    match step % 3 {
        0 => {
            if let Ok((_, reply)) = Responder::handle_hello(msg, &b, &trust, [5; 32], [6; 32]) {
                assert!(!reply.is_empty());
            }
        }
        1 => {
            let (_, reply) = Responder::handle_hello(&hello, &b, &trust, [5; 32], [6; 32]).unwrap();
            if initiator.handle_reply(msg, &a, &trust).is_ok() {
                assert_eq!(msg, &reply[..], "only the genuine Reply completes");
            }
            assert!(initiator.handle_reply(&reply, &a, &trust).is_ok());
        }
        _ => {
            let (responder, reply) =
                Responder::handle_hello(&hello, &b, &trust, [5; 32], [6; 32]).unwrap();
            let (_, finish, _) = initiator.handle_reply(&reply, &a, &trust).unwrap();
            if responder.handle_finish(msg, &trust).is_ok() {
                assert_eq!(msg, &finish[..], "only the genuine Finish completes");
            }
            assert!(responder.handle_finish(&finish, &trust).is_ok());
        }
    }
});
