//! Fuzzes the readers of the operator's files on arbitrary bytes: a key file
//! (`crypto::keys::parse_key_file`), a node certificate (`Cert::decode`) and a revocation
//! (`Revocation::decode`), which `myco` and `myco-d` read from disk and the daemons also take from
//! peers (certificates in handshakes, revocations in gossip).
//!
//! Proves that no input panics them; that a key file read is a seed other than zero which its
//! canonical text (64 lowercase hex digits, with or without a newline) reads back as; that a
//! certificate has one encoding (encoding what was decoded gives the input back); and that a
//! decoded certificate or revocation is its signed bytes followed by the 64-byte signature.
//! Each is then verified against the operator key the seeds are signed with (`fuzz/examples/
//! seeds.rs`), so mutations of a genuine one run the whole check; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::{CERT_BYTES_MAX, SIGNATURE_BYTES};
use myco_core::crypto::cert::encode_cert;
use myco_core::crypto::keys::parse_key_file;
use myco_core::crypto::{Cert, Revocation, SigningKey};
use myco_core::hex::Hex;

fuzz_target!(|data: &[u8]| {
    key_file(data);
    cert(data);
    revocation(data);
});

fn key_file(data: &[u8]) {
    let Ok(seed) = parse_key_file(data) else {
        return;
    };
    assert_ne!(seed, [0; 32]);
    let hex = Hex(&seed).to_string();
    assert_eq!(parse_key_file(hex.as_bytes()).ok(), Some(seed));
    assert_eq!(
        parse_key_file(format!("{hex}\n").as_bytes()).ok(),
        Some(seed)
    );
}

/// The operator every target signs its seeds with.
fn operator() -> SigningKey {
    SigningKey::from_seed([7; 32]).expect("a seed other than zero")
}

/// `signed` followed by `signature` is all of `data`.
fn split_as_signed(data: &[u8], signed: &[u8], signature: &[u8; SIGNATURE_BYTES]) {
    assert_eq!(signed.len() + SIGNATURE_BYTES, data.len());
    assert_eq!(&data[..signed.len()], signed);
    assert_eq!(&data[signed.len()..], &signature[..]);
}

fn cert(data: &[u8]) {
    let Ok(cert) = Cert::decode(data) else {
        return;
    };
    split_as_signed(data, cert.signed, cert.signature);
    let mut out = [0u8; CERT_BYTES_MAX];
    let n = encode_cert(&cert.body, cert.signature, &mut out);
    assert_eq!(&out[..n], data, "a certificate has one encoding");
    let _ = cert.verify(&operator().public_key(), 0);
}

fn revocation(data: &[u8]) {
    let Ok(revocation) = Revocation::decode(data) else {
        return;
    };
    split_as_signed(data, revocation.signed, revocation.signature);
    let _ = revocation.verify(&operator().public_key());
}
