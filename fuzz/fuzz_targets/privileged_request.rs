//! Fuzzes the privileged helper's request parser (`myco_core::privileged::parse`) on arbitrary
//! bytes, as a compromised daemon could send them.
//!
//! Proves that no input panics it, that whatever it accepts is the one canonical encoding of a
//! request (encoding the decoded request gives the input back), and that every unit it accepts
//! to touch is `myco-<service name>.service`, the only names the helper may act on, and every
//! substitute a build offers has a port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::privileged::{
    body_len, check_unit, decode_request, encode_request, parse, Checked, Request,
    FRAME_HEADER_BYTES, REQUEST_BYTES_MAX,
};
use myco_core::schema::entry::Check;
use myco_core::unit::service_of;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..FRAME_HEADER_BYTES) {
        let announced = body_len(header.try_into().expect("four bytes"));
        let len = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
        assert_eq!(announced.is_ok(), len <= REQUEST_BYTES_MAX);
    }
    let Ok(checked) = parse(data) else {
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
        Checked::Unit { units, .. } => {
            assert!(!units.is_empty());
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
});
