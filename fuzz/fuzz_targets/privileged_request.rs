//! Fuzzes the privileged helper's request parser (`myco_core::privileged::parse`) on arbitrary
//! bytes, as a compromised daemon could send them.
//!
//! Proves that no input panics it, that whatever it accepts is the one canonical encoding of a
//! request (encoding the decoded request gives the input back), and that every unit it accepts
//! to touch is `myco-<service name>.service`, the only names the helper may act on, and every
//! substitute a build offers has a port.
//!
//! The helper checks the operator's signature on an entry before anything else about it, so the
//! fuzzer could never forge its way past that check to the rest. Each input is therefore parsed
//! twice: as sent (where an entry is accepted only if it already carries the fuzz operator's
//! signature: re-signing it changes nothing), and with its entry's signature replaced by the
//! fuzz operator's over the same body, which reaches the checks after it whenever the body names
//! that key's id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::SIGNATURE_BYTES;
use myco_core::crypto::{sign_entry_body, SigningKey};
use myco_core::privileged::{
    body_len, check_unit, decode_request, encode_request, parse, Checked, Request,
    FRAME_HEADER_BYTES, REQUEST_BYTES_MAX,
};
use myco_core::schema::entry::Check;
use myco_core::unit::service_of;

/// The entry a request carries, if any.
fn entry_of<'a>(request: &Request<'a>) -> Option<&'a [u8]> {
    match *request {
        Request::WriteUnit { entry, .. }
        | Request::Build { entry, .. }
        | Request::HealthCheck { entry, .. } => Some(entry),
        _ => None,
    }
}

/// `data` with the signature of the entry its request carries (if it decodes as one) replaced by
/// `operator`'s over that entry's body.
fn resigned(data: &[u8], operator: &SigningKey) -> Vec<u8> {
    let mut out = data.to_vec();
    let Some(entry) = decode_request(data).as_ref().and_then(entry_of) else {
        return out;
    };
    let Some(body_len) = entry.len().checked_sub(SIGNATURE_BYTES) else {
        return out;
    };
    // The entry borrows from `data`: its offset there is its offset in `out`.
    let at = entry.as_ptr() as usize - data.as_ptr() as usize + body_len;
    let signature = sign_entry_body(operator, &entry[..body_len]);
    out[at..at + SIGNATURE_BYTES].copy_from_slice(&signature);
    out
}

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..FRAME_HEADER_BYTES) {
        let announced = body_len(header.try_into().expect("four bytes"));
        let len = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
        assert_eq!(announced.is_ok(), len <= REQUEST_BYTES_MAX);
    }
    let operator = SigningKey::from_seed([7; 32]).expect("a non-zero seed");
    let key = operator.public_key();
    let signed = resigned(data, &operator);
    if parse(data, &key).is_ok() {
        assert_eq!(
            signed, data,
            "an entry accepted as sent carries the operator's signature"
        );
    }
    check(&signed, &key);
});

/// The properties of every request `parse` accepts (see the file's comment).
fn check(data: &[u8], key: &myco_core::crypto::PublicKey) {
    let Ok(checked) = parse(data, key) else {
        return;
    };
    let request: Request<'_> = decode_request(data).expect("parse decoded it");
    let mut again = vec![0u8; FRAME_HEADER_BYTES + REQUEST_BYTES_MAX];
    let len = encode_request(&request, &mut again).expect("an accepted request fits");
    assert_eq!(
        &again[FRAME_HEADER_BYTES..len],
        data,
        "one encoding per request"
    );
    let named = |unit: &str| {
        assert!(service_of(unit).is_some(), "{unit:?} is a myco unit");
        assert!(check_unit(unit).is_ok());
        assert!(!unit.contains('/') && !unit.contains(".."));
    };
    match checked {
        Checked::WriteUnit { unit, .. } | Checked::RemoveUnit { unit } => named(unit),
        Checked::Unit { verb, units } => {
            assert!(!units.is_empty());
            // Every verb's options (`enable --no-reload --now`, `show --property=...`) are the
            // verb's own, fixed: nothing the daemon sends becomes an option.
            assert!(verb.args()[1..].iter().all(|a| a.starts_with("--")));
            units.iter().for_each(|u| named(u));
        }
        Checked::Journal(j) => named(j.unit),
        Checked::Build(b) => {
            assert!(!b.uri.starts_with('-') && !b.attr.starts_with('-'));
            assert!(b.root.starts_with(b.service));
            // At most SUBSTITUTES_MAX (the type's bound), each a host's port the helper
            // writes as http://<ip>:<port> itself.
            assert!(b.substitutes.iter().all(|s| s.cache.port != 0));
        }
        Checked::HealthCheck { service, entry, .. } => {
            // Only the entry's own exec check, for the service the unit named.
            named(&format!("myco-{service}.service"));
            let check = myco_core::executor::check_of(entry).map(|(c, _)| c);
            assert!(matches!(check, Some(Check::Exec { .. })));
        }
        Checked::DaemonReload | Checked::CollectGarbage | Checked::CacheClosure => {}
    }
}
