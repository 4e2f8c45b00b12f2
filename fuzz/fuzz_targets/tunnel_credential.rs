//! Feeds arbitrary bytes to the access credential's decoder and checks.
//!
//! Proves: no panic on any bytes; what decodes is its signed body and a signature with nothing
//! left over; nothing the fuzzer makes verifies under the operator key unless it is the genuine
//! credential (it cannot forge the operator's signature).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::crypto::access::{issue_access, Access, AccessBody};
use myco_core::crypto::SigningKey;

fuzz_target!(|data: &[u8]| {
    let operator = SigningKey::from_seed([7; 32]).unwrap();
    let genuine = issue_access(
        &operator,
        &AccessBody {
            operator_pk: operator.public_key().0,
            holder_pk: [2; 32],
            expires_at_s: 1_800_000_060,
            issued_at: 0,
            node: None,
        },
    );
    let Ok(access) = Access::decode(data) else {
        return;
    };
    assert_eq!(access.signed.len() + access.signature.len(), data.len());
    let _ = access.verify_signature();
    if access
        .verify(&operator.public_key(), 0, 1_800_000_000, 1)
        .is_ok()
    {
        assert_eq!(data, &genuine[..], "only the genuine credential verifies");
    }
});
