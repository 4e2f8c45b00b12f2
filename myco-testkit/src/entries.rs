//! Desired-state entries for tests and benchmarks, signed through `myco_core::crypto::sign_entry`
//! (the function `myco sign` uses), so their bytes are those an operator would send.

use myco_core::config::{ENTRY_BYTES_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES};
use myco_core::crypto::{sign_entry, SigningKey};
use myco_core::hex::Hex;
use myco_core::schema::entry::{
    encode_entry, Arch, EntryBody, Health, Port, Protocol, Requirements, ServiceSpec, Source,
    Version,
};

/// The program of `entry`'s services: present on every test machine, exits at once.
pub const TRUE_PATH: &str = "/usr/bin/true";

/// `body` encoded and signed by `operator`. Panics if the body is not a valid entry: a test's own
/// entries are valid by construction.
pub fn signed(operator: &SigningKey, body: &EntryBody<'_>) -> Vec<u8> {
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let n = sign_entry(operator, body, &mut out).expect("a test's entry is valid");
    out[..n].to_vec()
}

/// The version `operator` gives an entry at `clock`.
pub fn version(operator: &SigningKey, clock: u64) -> Version {
    Version {
        clock,
        key_id: operator.public_key().key_id(),
    }
}

/// A signed entry for service `name` at operator clock `clock`: `spec`, or a tombstone.
pub fn signed_service(
    operator: &SigningKey,
    name: &str,
    clock: u64,
    spec: Option<ServiceSpec<'_>>,
) -> Vec<u8> {
    let body = EntryBody {
        name,
        version: version(operator, clock),
        spec,
    };
    signed(operator, &body)
}

/// A signed entry for service `name` that runs `path`.
pub fn exec_entry(operator: &SigningKey, name: &str, clock: u64, path: &str) -> Vec<u8> {
    let spec = ServiceSpec::minimal(Source::Exec { path });
    signed_service(operator, name, clock, Some(spec))
}

/// A signed entry for service `name` that runs `/usr/bin/true`.
pub fn entry(operator: &SigningKey, name: &str, clock: u64) -> Vec<u8> {
    exec_entry(operator, name, clock, TRUE_PATH)
}

/// A signed entry for service `name` that declares TCP port `port`.
pub fn entry_with_port(operator: &SigningKey, name: &str, clock: u64, port: u16) -> Vec<u8> {
    let mut spec = ServiceSpec::minimal(Source::Exec { path: TRUE_PATH });
    let tcp = Port {
        number: port,
        protocol: Protocol::Tcp,
    };
    spec.ports.push(tcp).expect("one port fits");
    signed_service(operator, name, clock, Some(spec))
}

/// A signed entry for service `name` that runs `path`, declares TCP port `port` and the health
/// check `health`.
pub fn checked_entry(
    operator: &SigningKey,
    (name, clock): (&str, u64),
    path: &str,
    port: u16,
    health: Health<'_>,
) -> Vec<u8> {
    let mut spec = ServiceSpec::minimal(Source::Exec { path });
    let tcp = Port {
        number: port,
        protocol: Protocol::Tcp,
    };
    spec.ports.push(tcp).expect("one port fits");
    spec.health = Some(health);
    signed_service(operator, name, clock, Some(spec))
}

/// A signed tombstone for service `name`.
pub fn tombstone(operator: &SigningKey, name: &str, clock: u64) -> Vec<u8> {
    signed_service(operator, name, clock, None)
}

/// Service `svc-<i>` at operator clock `clock`, for the store's tests and benchmark: a flake with
/// two arguments, two environment variables and one port, with a fixed signature (the store
/// never checks it). About 270 bytes encoded, like a typical deploy.
pub fn service_entry(i: u32, clock: u64) -> Vec<u8> {
    let name = format!("svc-{i:04}");
    // Locked as `myco sign` locks a flake: the reference names its rev.
    let rev = [i.to_le_bytes()[0]; FLAKE_REV_BYTES];
    let uri = format!(
        "git+https://git.example.com/fleet/{name}?ref=main&rev={}",
        Hex(&rev)
    );
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
        limits: Default::default(),
        health: None,
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

/// A signed entry for service `name` built from the locked flake reference `uri` (which names
/// `rev`, 40 hex digits) and attribute `attr`.
pub fn flake_entry(
    operator: &SigningKey,
    name: &str,
    clock: u64,
    (uri, attr, rev): (&str, &str, &str),
) -> Vec<u8> {
    assert_eq!(rev.len(), 2 * FLAKE_REV_BYTES, "a rev is 40 hex digits");
    let rev: [u8; FLAKE_REV_BYTES] = core::array::from_fn(|i| {
        u8::from_str_radix(&rev[2 * i..2 * i + 2], 16).expect("a rev is hex")
    });
    let spec = ServiceSpec::minimal(Source::Flake {
        uri,
        attr,
        rev,
        nar_hash: [0; NAR_HASH_BYTES],
    });
    signed_service(operator, name, clock, Some(spec))
}
