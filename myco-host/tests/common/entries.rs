//! Realistic encoded entries for the store's tests and its benchmark.

use myco_core::config::{ENTRY_BYTES_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES};
use myco_core::schema::entry::{
    encode_entry, Arch, EntryBody, Port, Protocol, Requirements, ServiceSpec, Source, Version,
};

/// Service `svc-<i>` at operator clock `clock`: a flake with two arguments, two environment
/// variables and one port, signed (with a fixed signature; the store never checks it). About 270
/// bytes encoded, like a typical deploy.
pub fn service_entry(i: u32, clock: u64) -> Vec<u8> {
    let name = format!("svc-{i:04}");
    // Locked as `myco sign` locks a flake: the reference names its rev.
    let rev = [i.to_le_bytes()[0]; FLAKE_REV_BYTES];
    let rev_hex: String = rev.iter().map(|b| format!("{b:02x}")).collect();
    let uri = format!("git+https://git.example.com/fleet/{name}?ref=main&rev={rev_hex}");
    let port = 8000 + (i % 1000) as u16;
    let port_arg = port.to_string();
    let mut spec = ServiceSpec {
        source: Source::Flake {
            uri: &uri,
            attr: "default",
            rev,
            nar_hash: [0x3c; NAR_HASH_BYTES],
        },
        args: Default::default(),
        env: Default::default(),
        pre: Default::default(),
        requires: Requirements {
            arch: Arch::Any,
            gpu: false,
            zone: None,
        },
        replicas: 3,
        ports: Default::default(),
    };
    spec.args.extend_from_slice(&["--port", &port_arg]).unwrap();
    spec.env
        .extend_from_slice(&[("MODE", "prod"), ("RUST_LOG", "info")])
        .unwrap();
    spec.ports
        .push(Port {
            number: port,
            protocol: Protocol::Tcp,
        })
        .unwrap();
    let body = EntryBody {
        name: &name,
        version: Version { clock, key_id: 1 },
        spec: Some(spec),
    };
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let len = encode_entry(&body, &[0x5a; 64], &mut out).expect("a valid sample entry");
    out[..len].to_vec()
}
