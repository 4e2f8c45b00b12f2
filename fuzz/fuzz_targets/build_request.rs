//! Fuzzes `remote::parse_systems` (what `nix show-config` printed), the build request
//! (`Message::BuildRequest`) as a builder receives it, and a builder's answer that a build failed
//! (`Message::BuildFailed`) as a requester receives it: the input is a frame body, decoded with
//! `Body::decode`; a request is then handed to a builder's executor
//! (`Executor::handle_build_request`) whose node holds one flake service, with the builder's
//! systems chosen by the first input byte, and an answer to the same executor
//! (`Executor::handle_build_failed`), which asked no builder for anything.
//!
//! Proves: no input panics; a decoded request or answer re-encodes, no longer than it came, to
//! bytes that decode to the same message; the builder accepts a request only if it is exactly the
//! one the entry it holds gives (`remote::request`) for a system it builds (never for `Any`, which names
//! no output), so no forged digest, build key, system or service gets a build; Nix's own system
//! (`remote::parse_native_system`) is one of the systems parsed; the same bytes read as isolated
//! only where they name the setting, and a box whose Nix runs builders as root builds nothing
//! (`BuildMode::decide`) unless allowed; however many requests arrive,
//! at most `PEER_BUILDS_MAX` wait; no request is answered as failed where no build failed; and an answer nobody asked for
//! counts no failed build.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::{BODY_BYTES_MAX, FLAKE_REV_BYTES, FRAME_BYTES, NAR_HASH_BYTES};
use myco_core::crypto::cert::certify;
use myco_core::crypto::{sign_entry, SigningKey};
use myco_core::executor::remote::{
    parse_native_system, parse_systems, request, BuildFlags, Isolation,
};
use myco_core::executor::{BuildMode, Executor};
use myco_core::schema::entry::{Arch, EntryBody, ServiceSpec, Source, Version};
use myco_core::schema::message::{system_bit, Body, Message};
use myco_core::time::Instant;
use myco_core::{Event, Node, NodeConfig, PeerAddr, Sink};

struct Quiet;

impl Sink for Quiet {
    fn send(&mut self, _: PeerAddr, _: &[u8; FRAME_BYTES]) {}
    fn event(&mut self, _: Event) {}
    fn append(&mut self, _: &[u8], _: u64) {}
    fn checkpoint(&mut self) {}
    fn fill_random(&mut self, buf: &mut [u8]) {
        buf.fill(0x5a);
    }
}

/// A node holding service `web`, a flake locked at rev a7a7...
fn builder_node() -> Box<Node> {
    let operator = SigningKey::from_seed([1; 32]).expect("fixture seed");
    let key = SigningKey::from_seed([2; 32]).expect("fixture seed");
    let cert = certify(&operator, &key.public_key(), 0, Arch::X86_64, false, 0);
    let config = NodeConfig {
        node_seed: [2; 32],
        cert: &cert,
        operator: operator.public_key(),
        revocation_block: 0,
        seed: 1,
        join: &[],
        bridge_seeds: &[],
        relay: false,
        behind_nat: false,
        own_addrs: &[],
        wal_checkpoint_bytes: 1 << 20,
        profile: myco_core::config::Profile::LAN,
    };
    let mut node = Box::new(Node::new(&config, Instant(0)).expect("a valid fixture"));
    let uri = "git+file:///srv/web?rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let source = Source::Flake {
        uri,
        attr: "default",
        rev: [0xa7; FLAKE_REV_BYTES],
        nar_hash: [0x5c; NAR_HASH_BYTES],
    };
    let body = EntryBody {
        name: "web",
        version: Version {
            clock: 1,
            key_id: operator.public_key().key_id(),
        },
        spec: Some(ServiceSpec::minimal(source)),
    };
    let mut entry = [0u8; 512];
    let len = sign_entry(&operator, &body, &mut entry).expect("a valid entry");
    node.submit(Instant(0), &entry[..len], &mut Quiet)
        .expect("a valid entry");
    node
}

/// The canonical encoding `out` of what `bytes` decoded to is no longer than `bytes` and decodes
/// to the same body. Not byte equality: like every gossip body (docs/protocol.md §1), a request
/// may arrive with an overlong varint (its variant index as `8d 00`), which postcard reads as the
/// same value; nothing is signed or hashed over a body's bytes, so that changes nothing.
fn same_message(out: &[u8], bytes: &[u8]) {
    assert!(out.len() <= bytes.len());
    assert_eq!(Body::decode(out), Body::decode(bytes), "one value");
}

fuzz_target!(|data: &[u8]| {
    // The same bytes as `nix show-config` output: only the two systems' bits can come out.
    assert_eq!(parse_systems(data) & !3, 0);
    let native = parse_native_system(data);
    assert!(native == Arch::Any || parse_systems(data) & system_bit(native) != 0);
    // Isolation is read only from the lines that say it: without them, builders run as root,
    // and such a box builds nothing unless allowed.
    let isolation = Isolation::parse(data);
    let says = |key: &[u8]| data.windows(key.len()).any(|w| w == key);
    assert!(!isolation.sandbox || says(b"sandbox"));
    assert!(!isolation.build_users || says(b"build-users-group"));
    let refused = BuildFlags {
        local: true,
        builder: true,
        allow_root_builds: false,
    };
    let decided = BuildMode::decide(refused, Arch::X86_64, data);
    if isolation.builders_run_as_root() {
        assert_eq!((decided.local, decided.builds), (false, 0));
    }
    let Some((&systems, mut rest)) = data.split_first() else {
        return;
    };
    let node = builder_node();
    let held = node.store().get_by_name("web").expect("submitted");
    let mut e = Executor::new(false);
    let mode = BuildMode {
        local: true,
        builds: systems & 3,
        system: Arch::Any,
    };
    e.set_build_mode(mode);
    // Up to eight bodies, each prefixed by its length.
    for _ in 0..8 {
        let Some((&len, tail)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Some(Body { msg, root }) = Body::decode(bytes) else {
            continue;
        };
        let mut out = [0u8; BODY_BYTES_MAX];
        let n = Body {
            root,
            msg: msg.clone(),
        }
        .encode(&mut out)
        .expect("a request or answer fits");
        let r = match msg {
            Message::BuildRequest(r) => r,
            Message::BuildFailed(r) => {
                same_message(&out[..n], bytes);
                assert!(!e.handle_build_failed(Instant(0), 7, &r), "{r:?}");
                assert_eq!(e.stats.build_failures, 0);
                continue;
            }
            _ => continue,
        };
        same_message(&out[..n], bytes);
        // A request for `Any` names no output: no builder builds it.
        let builds = mode.builds & system_bit(r.system) != 0;
        let genuine = request(&held, r.system) == Some(r);
        let taken = e.handle_build_request(Instant(0), &node, (7, &r)).is_ok();
        assert_eq!(taken, genuine && builds, "{r:?}");
        assert_eq!(e.take_build_failed(), None, "nothing failed here");
    }
});
