//! Writes the seed corpora under `fuzz/seeds/<target>/` (`make fuzz-seeds`).
//!
//! A seed is a small valid input the fuzzer could not find on its own: a whole frame behind a magic
//! number and a length, a genuine handshake message (the fuzzer cannot forge a signature), a WAL
//! record behind its CRC. Each is made here by the product's own encoders with the fixed keys the
//! targets use, so a seed stays valid when a format changes: run this again and commit the result.
//! Text inputs (HTTP requests, myco.json) are written out as they are.

#[path = "../fuzz_targets/common/tunnel.rs"]
mod tunnel;

use myco_core::config::REVOCATION_BYTES_MAX;
use myco_core::config::{FRAME_BYTES, SIGNATURE_BYTES};
use myco_core::crypto::cert::{certify, certify_bridge, BridgeScope};
use myco_core::crypto::handshake::{Credentials, Initiator, Responder, Trust};
use myco_core::crypto::revocation::encode_revocation;
use myco_core::crypto::{sign_entry_body, SigningKey};
use myco_core::executor::substitute::Substitute;
use myco_core::privileged::{
    encode_reply, encode_request, Outcome, Request, UnitVerb, FRAME_HEADER_BYTES, REPLY_BYTES_MAX,
};
use myco_core::schema::entry::{
    encode_entry, Arch, Check, EntryBody, Health, ServiceSpec, Source, Version,
};
use myco_core::schema::frame::{body_mut, write_frame, Header, Kind};
use myco_core::schema::message::{Body, Digest, MemberMeta, MemberState, MemberUpdate, Message};
use myco_core::wal::record::{encode_checkpoint_end, encode_record, CheckpointEnd, RecordKind};
use myco_core::PeerAddr;
use std::fs;
use std::path::Path;
use tunnel::{parties, NOW};

/// The operator every target signs with (`SigningKey::from_seed([7; 32])`).
fn operator() -> SigningKey {
    SigningKey::from_seed([7; 32]).expect("a non-zero seed")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).expect("seeds directory");
    fs::write(dir.join(name), bytes).expect("seed written");
}

/// An entry signed by the fuzz operator: a flake with an exec health check, or an exec service.
fn entry(name: &str, flake: bool) -> Vec<u8> {
    let source = if flake {
        Source::Flake {
            uri: "git+https://git.example.org/web?ref=main&rev=abababababababababababababababababababab",
            attr: "default",
            rev: [0xab; 20],
            nar_hash: [0x5c; 32],
        }
    } else {
        Source::Exec { path: "/bin/true" }
    };
    let mut argv = heapless::Vec::new();
    argv.push("/bin/true").expect("room");
    let health = Health {
        check: Check::Exec { argv },
        interval_s: 10,
        timeout_s: 2,
        failures: 3,
    };
    let body = EntryBody {
        name,
        version: Version {
            clock: 1_700_000_000_000,
            key_id: operator().public_key().key_id(),
        },
        spec: Some(ServiceSpec {
            health: Some(health),
            ..ServiceSpec::minimal(source)
        }),
    };
    let mut out = [0u8; 1024];
    let n = encode_entry(&body, &[0; SIGNATURE_BYTES], &mut out).expect("encodes");
    let split = n - SIGNATURE_BYTES;
    let signature = sign_entry_body(&operator(), &out[..split]);
    out[split..n].copy_from_slice(&signature);
    out[..n].to_vec()
}

fn tombstone(name: &str) -> Vec<u8> {
    let body = EntryBody {
        name,
        version: Version {
            clock: 1_700_000_000_001,
            key_id: operator().public_key().key_id(),
        },
        spec: None,
    };
    let mut out = [0u8; 256];
    let n = encode_entry(&body, &[0; SIGNATURE_BYTES], &mut out).expect("encodes");
    out[..n].to_vec()
}

/// Hello, Reply and Finish of a real exchange, as the `handshake` target sets it up.
fn handshake(bridged: bool) -> [Vec<u8>; 3] {
    let operator = operator();
    let creds = |seed: u8, zone: Option<u8>| {
        let key = SigningKey::from_seed([seed; 32]).expect("seed");
        let pk = key.public_key();
        let cert = match zone {
            None => certify(&operator, &pk, 0, Arch::X86_64, false, 0),
            Some(z) => certify_bridge(&operator, &pk, z, Arch::X86_64, BridgeScope::All, 0),
        };
        Credentials::new(key, &cert, &operator.public_key()).expect("credentials")
    };
    let (a, b) = if bridged {
        (creds(1, Some(0)), creds(2, Some(1)))
    } else {
        (creds(1, None), creds(2, None))
    };
    let trust_a = Trust {
        operator: operator.public_key(),
        revocation_block: 0,
        zone: 0,
    };
    let trust_b = Trust {
        zone: b.cert().zone,
        ..trust_a
    };
    let (initiator, hello) = Initiator::new(&a, &trust_a, [3; 32], [4; 32]).expect("hello");
    let (_, reply) = Responder::handle_hello(&hello, &b, &trust_b, [5; 32], [6; 32]).expect("ok");
    let (_, finish, _) = initiator
        .handle_reply(&reply, &a, &trust_a)
        .expect("finish");
    [hello.to_vec(), reply.to_vec(), finish.to_vec()]
}

fn prefixed(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = [0u8; FRAME_BYTES];
    body_mut(&mut out)[..body.len()].copy_from_slice(body);
    let header = Header {
        kind,
        zone: 0,
        revocation_block: 0,
        sender: 0x0102_0304_0506_0708,
        counter: 1,
    };
    write_frame(&mut out, &header, body.len());
    out.to_vec()
}

fn handshakes() {
    for (bridged, steps) in [(false, [0u8, 1, 2]), (true, [0x81, 0x82, 0x83])] {
        let msgs = handshake(bridged);
        for ((step, msg), name) in steps.iter().zip(&msgs).zip(["hello", "reply", "finish"]) {
            let name = format!("{name}{}", if bridged { "-bridged" } else { "" });
            write("handshake", &name, &prefixed(*step, msg));
        }
    }
    let [hello, reply, finish] = handshake(false);
    write("frame", "hello", &frame(Kind::Hello, &hello));
    write("frame", "reply", &frame(Kind::Reply, &reply));
    write("frame", "finish", &frame(Kind::Finish, &finish));
}

fn tunnels() {
    let p = parties();
    let (responder, accept) = p.answer(&p.open).expect("accept");
    let (mut client, prove, _) = p.client.handle_accept(&accept, &p.holder).expect("prove");
    write("tunnel_handshake", "open", &prefixed(0, &p.open));
    write("tunnel_handshake", "accept", &prefixed(1, &accept));
    write("tunnel_handshake", "prove", &prefixed(2, &prove));
    let _ = responder.handle_prove(&prove, &p.trust, NOW).expect("open");
    // The record the `tunnel_record` target seals: the same session keys, so it opens.
    let mut record = [0u8; 64];
    record[2..7].copy_from_slice(b"hello");
    let n = client.seal(&mut record, 5).expect("sealed");
    write("tunnel_record", "hello", &record[..n]);
    // The credential inside the Open, as the `tunnel_credential` target's decoder reads it.
    let access = myco_core::crypto::access::issue_access(
        &operator(),
        &myco_core::crypto::access::AccessBody {
            operator_pk: operator().public_key().0,
            holder_pk: [2; 32],
            expires_at_s: NOW + 60,
            issued_at: 0,
            node: None,
        },
    );
    write("tunnel_credential", "genuine", &access);
}

fn member(id: u64) -> MemberUpdate {
    MemberUpdate {
        id,
        incarnation: 1,
        state: MemberState::Alive,
        addr: PeerAddr::v4([10, 0, 0, id as u8], 7946),
        meta: MemberMeta {
            arch: Arch::X86_64,
            zone: 0,
            gpu: false,
            bridge: false,
            relay: false,
            nat: false,
        },
    }
}

fn bodies(web: &[u8]) {
    let mut updates = heapless::Vec::new();
    updates.push(member(3)).expect("room");
    let mut list = heapless::Vec::new();
    list.push(web).expect("room");
    let mut keys = heapless::Vec::new();
    keys.push(Digest(0x1234_5678_9abc_def0)).expect("room");
    let messages = [
        (
            "ping",
            Message::Ping {
                seq: 7,
                me: member(2),
                updates,
                status_seen: 0,
            },
        ),
        ("entries", Message::Entries { list }),
        ("want", Message::Want { keys }),
    ];
    for (name, msg) in messages {
        let body = Body {
            root: Digest(42),
            msg,
        };
        let mut out = [0u8; 1024];
        let n = body.encode(&mut out).expect("fits");
        write("body", name, &out[..n]);
        if name == "ping" {
            write("frame", "data", &frame(Kind::Data, &out[..n]));
        }
    }
}

fn wal(web: &[u8], db: &[u8]) {
    let mut log = vec![0u8; 4096];
    let mut at = encode_record(RecordKind::Entry, web, &mut log).expect("record");
    at += encode_record(RecordKind::Entry, db, &mut log[at..]).expect("record");
    let end = CheckpointEnd {
        entries: 2,
        state_hash: 0x0123_4567_89ab_cdef,
    };
    at += encode_checkpoint_end(&end, &mut log[at..]).expect("record");
    // The first byte is the streaming reader's chunk size.
    write("wal", "snapshot", &prefixed(64, &log[..at]));
}

fn privileged(web: &[u8], flake: &[u8]) {
    let mut names = heapless::Vec::new();
    names.push("myco-web.service").expect("room");
    let mut substitutes = heapless::Vec::new();
    let cache = PeerAddr::v4([10, 0, 0, 2], 7947);
    let peer = Substitute {
        id: 2,
        cache,
        key: [9; 32],
    };
    substitutes.push(peer).expect("room");
    let requests = [
        ("daemon-reload", Request::DaemonReload),
        (
            "remove",
            Request::RemoveUnit {
                name: "myco-web.service",
            },
        ),
        (
            "start",
            Request::Unit {
                verb: UnitVerb::Start,
                names,
            },
        ),
        (
            "journal",
            Request::Journal {
                name: "myco-web.service",
                follow: false,
                lines: Some(100),
            },
        ),
        (
            "build",
            Request::Build {
                entry: flake,
                timeout_s: 600,
                local: true,
                system: Arch::X86_64,
                substitutes,
            },
        ),
        (
            "health-check",
            Request::HealthCheck {
                name: "myco-web.service",
                entry: web,
                timeout_ms: 2000,
            },
        ),
        ("cache-closure", Request::CacheClosure),
    ];
    for (name, request) in requests {
        let mut out = vec![0u8; 4096];
        let n = encode_request(&request, &mut out).expect("fits");
        // The target reads the body, after the length prefix.
        write("privileged_request", name, &out[FRAME_HEADER_BYTES..n]);
    }
    privileged_replies();
}

/// One reply of each outcome, as the helper frames them (the target reads the body).
fn privileged_replies() {
    let replies = [
        ("exited", Outcome::Exited(0), "exited with 0"),
        ("signaled", Outcome::Signaled(15), "killed by signal 15"),
        ("refused", Outcome::Refused, "not a myco unit: sshd.service"),
        (
            "failed",
            Outcome::Failed,
            "cannot write the unit: No space left on device",
        ),
    ];
    for (name, outcome, reason) in replies {
        let mut out = vec![0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
        let n = encode_reply(outcome, reason, &mut out).expect("fits");
        write("privileged_reply", name, &out[FRAME_HEADER_BYTES..n]);
    }
}

/// A query for `name` (dotted, no trailing dot) of `qtype`, with the first byte the target's knob.
fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0u8];
    q.extend_from_slice(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// One path's registration as `nix-store --dump-db` prints it.
const REGISTRATION: &[u8] = b"/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello
c9aa43bd203d5430a86579bc973feb942768bc0c15bc1698f94f8c097d5d2bbf
464
/nix/store/zljvyi7247b5500b06mrcdafpj63m811-hello.drv
2
/nix/store/3pfgh1bvpzwp75ng9cpdyqyqv7afi7nj-hello
/nix/store/1z74b6lybsvj5dg2fghbfzvcbmgm26h1-glibc
";

fn texts() {
    use myco_core::dns::{TYPE_A, TYPE_AAAA, TYPE_SRV};
    write("dns", "a-web", &dns_query("web.myco", TYPE_A));
    write("dns", "aaaa-web", &dns_query("web.myco", TYPE_AAAA));
    write("dns", "srv-web", &dns_query("_web._tcp.myco", TYPE_SRV));
    write("dns", "a-nx", &dns_query("nope.myco", TYPE_A));
    // The first byte is the target's count of chunk sizes: none, so one read takes all.
    let requests: [(&str, &[u8]); 4] = [
        ("services", b"\0GET /services HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "deploy",
            b"\0POST /deploy HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        ("service", b"\0GET /services/web HTTP/1.1\r\n\r\n"),
        ("logs", b"\0GET /logs?service=web&lines=10 HTTP/1.1\r\n\r\n"),
    ];
    for (name, bytes) in requests {
        write("http", name, bytes);
    }
    write(
        "cache_request",
        "narinfo",
        b"GET /0123456789abcdfghijklmnpqrsvwxyz.narinfo HTTP/1.1\r\n\r\n",
    );
    write(
        "cache_request",
        "info",
        b"GET /nix-cache-info HTTP/1.1\r\n\r\n",
    );
    write("cache_request", "registration", REGISTRATION);
    let template = include_str!("../../myco-cli/templates/myco.json");
    write(
        "manifest",
        "template",
        template.replace("@NAME@", "web").as_bytes(),
    );
}

/// What Nix and services print, which the other parsers read: the lines the targets' own comments
/// suggest, and captured `nix flake metadata --json` output.
fn outputs(web: &[u8], flake: &[u8]) {
    let log = b"\x10copying path '/nix/store/x' from 'http://127.0.0.1:7947'...\nbuilding '/d'\n";
    write("build_log", "fetched", log);
    write(
        "nix_build_json",
        "built",
        br#"[{"drvPath":"/d","outputs":{"out":"/nix/store/x"}}]"#,
    );
    let gc = b"finding garbage collector roots...\n3 store paths deleted, 1.25 MiB freed\n";
    write("gc_output", "freed", gc);
    write("health_status", "ok", b"HTTP/1.1 200 OK\r\n");
    let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    write("http_response", "plain", plain);
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    write("http_response", "chunked", chunked);
    write("profile_name", "lan", b"lan");
    write("unit", "web", web);
    write("unit", "flake", flake);
    let metadata: [(&str, &[u8]); 3] = [
        ("git", include_bytes!("../../tests/nix/metadata/git.json")),
        (
            "git-dirty",
            include_bytes!("../../tests/nix/metadata/git-dirty.json"),
        ),
        ("path", include_bytes!("../../tests/nix/metadata/path.json")),
    ];
    for (name, bytes) in metadata {
        write("flake_metadata", name, bytes);
    }
}

/// The genuine build request for the `build_request` target's builder, which holds this very
/// entry (operator seed 1, service `web`, a flake at rev a7...), and the answer that it failed;
/// the first byte says the builder builds both systems, each body follows its length.
fn build_request() {
    use myco_core::executor::remote::request;
    use myco_core::state::store::Store;
    let operator = SigningKey::from_seed([1; 32]).expect("seed");
    let source = Source::Flake {
        uri: "git+file:///srv/web?rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7",
        attr: "default",
        rev: [0xa7; 20],
        nar_hash: [0x5c; 32],
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
    let len = myco_core::crypto::sign_entry(&operator, &body, &mut entry).expect("valid");
    let mut store = Store::<8, 4096>::new();
    store.merge(&entry[..len]).expect("merged");
    let held = store.get_by_name("web").expect("merged");
    let r = request(&held, Arch::X86_64).expect("a flake");
    for (name, msg) in [
        ("request", Message::BuildRequest(r)),
        ("failed", Message::BuildFailed(r)),
    ] {
        let mut out = [0u8; 1024];
        let n = Body {
            root: Digest(0),
            msg,
        }
        .encode(&mut out[2..])
        .expect("fits");
        out[0] = 3;
        out[1] = n as u8;
        write("build_request", name, &out[..n + 2]);
    }
}

/// The operator's files: a key file as `myco keygen` writes it, a node's certificate and a
/// bridge's, a revocation; and `systemctl show` output for two units.
fn files() {
    let operator = operator();
    let key = format!("{}\n", myco_core::hex::Hex(&[7; 32]));
    write("operator_files", "key", key.as_bytes());
    let node = SigningKey::from_seed([1; 32]).expect("seed").public_key();
    let plain = certify(&operator, &node, 0, Arch::X86_64, false, 0);
    write("operator_files", "cert", &plain);
    let bridge = certify_bridge(&operator, &node, 2, Arch::Aarch64, BridgeScope::All, 3);
    write("operator_files", "bridge-cert", &bridge);
    let mut out = [0u8; REVOCATION_BYTES_MAX];
    let n = encode_revocation(&operator, 4, &mut out);
    write("operator_files", "revocation", &out[..n]);
    let show = b"Id=myco-web.service\nActiveState=active\nSubState=running\nNRestarts=0\nUnitFileState=enabled\nLoadState=loaded\nNeedDaemonReload=no\n\nId=myco-db.service\nActiveState=failed\nSubState=failed\nNRestarts=3\nUnitFileState=disabled\nLoadState=loaded\nNeedDaemonReload=yes\n";
    write("systemctl_show", "two", show);
}

fn main() {
    let web = entry("web", false);
    let flake = entry("web", true);
    let db = tombstone("db");
    write("entry", "web", &web);
    write("entry", "flake", &flake);
    write("entry", "tombstone", &db);
    handshakes();
    tunnels();
    bodies(&web);
    wal(&web, &db);
    privileged(&web, &flake);
    texts();
    outputs(&web, &flake);
    build_request();
    files();
    kept(&web, &flake);
}

/// Kept records (`rollout::encode_kept`'s layout): an exec version, and a flake with its program.
fn kept(web: &[u8], flake: &[u8]) {
    let program = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web/bin/web";
    for (name, program, entry) in [("exec", "", web), ("flake", program, flake)] {
        let mut record = vec![1u8];
        record.extend_from_slice(&(program.len() as u16).to_le_bytes());
        record.extend_from_slice(program.as_bytes());
        record.extend_from_slice(entry);
        write("kept_record", name, &record);
    }
}
