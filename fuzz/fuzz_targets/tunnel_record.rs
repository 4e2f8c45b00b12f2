//! Feeds arbitrary bytes as a tunnel record, and as a length prefix, to an open tunnel's session.
//!
//! Proves: no panic on any bytes; a record the session refuses leaves it able to open the genuine
//! next record; nothing but the genuine record (its exact bytes) opens; an accepted record is
//! never accepted twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::access::{issue_access, AccessBody};
use myco_core::crypto::cert::certify;
use myco_core::crypto::handshake::{Credentials, Trust};
use myco_core::crypto::tunnel::{
    frame_len, TunnelClient, TunnelResponder, LENGTH_BYTES, RECORD_BYTES_MAX,
    RECORD_FRAME_BYTES_MAX,
};
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    if data.len() >= LENGTH_BYTES {
        let _ = frame_len([data[0], data[1]], RECORD_BYTES_MAX);
    }
    if data.len() > RECORD_FRAME_BYTES_MAX {
        return;
    }
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
    let (responder, accept) =
        TunnelResponder::handle_open(&open, &me, &trust, NOW, [5; 32], [6; 32]).unwrap();
    let (mut c, prove, _) = client.handle_accept(&accept, &holder).unwrap();
    let mut b = responder.handle_prove(&prove, &trust, NOW).unwrap();
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
