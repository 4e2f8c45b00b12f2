//! Feeds arbitrary bytes to each handshake step: a responder's Hello, an initiator's Reply and a
//! responder's Finish, each after a real exchange has set the state up; in half the inputs the
//! two sides are bridges of zones 0 and 1, the variant whose zone check reads bridge scopes.
//!
//! Proves: no panic on any bytes; a refused message leaves the state able to complete with the
//! genuine message afterwards; anything accepted in place of the genuine message is the genuine
//! message itself (the fuzzer cannot forge a Reply or a Finish).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::cert::{certify, certify_bridge, BridgeScope};
use myco_core::crypto::handshake::{Credentials, Initiator, Responder, Trust};
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;

/// A plain node of zone 0, or a bridge of `zone` that may bridge to every zone.
fn creds(operator: &SigningKey, seed: u8, bridge: Option<u8>) -> Credentials {
    let key = SigningKey::from_seed([seed; 32]).unwrap();
    let pk = key.public_key();
    let cert = match bridge {
        None => certify(operator, &pk, 0, Arch::X86_64, false, 0),
        Some(zone) => certify_bridge(operator, &pk, zone, Arch::X86_64, BridgeScope::All, 0),
    };
    Credentials::new(key, &cert, &operator.public_key()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, msg)) = data.split_first() else {
        return;
    };
    let operator = SigningKey::from_seed([7; 32]).unwrap();
    let bridged = step & 0x80 != 0;
    let (a, b) = if bridged {
        (creds(&operator, 1, Some(0)), creds(&operator, 2, Some(1)))
    } else {
        (creds(&operator, 1, None), creds(&operator, 2, None))
    };
    let trust_a = Trust {
        operator: operator.public_key(),
        revocation_block: 0,
        zone: 0,
    };
    // Each side checks under its own zone's trust.
    let trust_b = Trust {
        zone: b.cert().zone,
        ..trust_a
    };
    let (initiator, hello) = Initiator::new(&a, &trust_a, [3; 32], [4; 32]).unwrap();
    match step % 3 {
        0 => {
            if let Ok((_, reply)) = Responder::handle_hello(msg, &b, &trust_b, [5; 32], [6; 32]) {
                assert!(!reply.is_empty());
            }
        }
        1 => {
            let (_, reply) =
                Responder::handle_hello(&hello, &b, &trust_b, [5; 32], [6; 32]).unwrap();
            if initiator.handle_reply(msg, &a, &trust_a).is_ok() {
                assert_eq!(msg, &reply[..], "only the genuine Reply completes");
            }
            assert!(initiator.handle_reply(&reply, &a, &trust_a).is_ok());
        }
        _ => {
            let (responder, reply) =
                Responder::handle_hello(&hello, &b, &trust_b, [5; 32], [6; 32]).unwrap();
            let (_, finish, _) = initiator.handle_reply(&reply, &a, &trust_a).unwrap();
            if responder.handle_finish(msg, &trust_b).is_ok() {
                assert_eq!(msg, &finish[..], "only the genuine Finish completes");
            }
            assert!(responder.handle_finish(&finish, &trust_b).is_ok());
        }
    }
});
