//! Every refusal of the privileged helper's checks, each from a request that differs from an
//! accepted one only in what the refusal names, so each test proves the check itself bites.

extern crate std;

use super::*;
use crate::config::FLAKE_REV_BYTES;
use crate::crypto::keys::test_key;
use crate::crypto::{sign_entry, SigningKey};
use crate::executor::render_unit;
use crate::schema::entry::{EntryBody, ServiceSpec, Version};
use std::string::{String, ToString};
use std::vec::Vec as StdVec;

const REV: [u8; FLAKE_REV_BYTES] = [0xa7; FLAKE_REV_BYTES];
const LOCKED: &str = "git+file:///srv/web?ref=main&rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";

fn flake(uri: &str) -> Source<'_> {
    Source::Flake {
        uri,
        attr: "default",
        rev: REV,
        nar_hash: [0x5c; 32],
    }
}

/// The cluster's operator key, the helper's trust anchor in these tests.
fn operator() -> PublicKey {
    crate::node::tests::operator().public_key()
}

/// The core's `parse` with the operator's key, as the helper calls it.
fn parse(body: &[u8]) -> Result<Checked<'_>, Refusal> {
    super::parse(body, &operator())
}

/// The core's `check_request` with the operator's key.
fn check_request(request: Request<'_>) -> Result<Checked<'_>, Refusal> {
    super::check_request(request, &operator())
}

/// Service `name`'s entry at clock 1 naming key `key_id`, running `spec` (`None`: a tombstone),
/// signed by `signer`.
fn signed_by(
    signer: &SigningKey,
    key_id: u32,
    name: &str,
    spec: Option<ServiceSpec<'_>>,
) -> StdVec<u8> {
    let body = EntryBody {
        name,
        version: Version { clock: 1, key_id },
        spec,
    };
    let mut bytes = [0u8; ENTRY_BYTES_MAX];
    let len = sign_entry(signer, &body, &mut bytes).unwrap();
    bytes[..len].to_vec()
}

/// Service `name`'s entry running `spec`, signed by the operator.
fn operators(name: &str, spec: Option<ServiceSpec<'_>>) -> StdVec<u8> {
    let op = crate::node::tests::operator();
    signed_by(&op, op.public_key().key_id(), name, spec)
}

/// Service `name`'s entry at clock 1, signed, running `source` (`None`: a tombstone).
fn entry(name: &str, source: Option<Source<'_>>) -> StdVec<u8> {
    operators(name, source.map(ServiceSpec::minimal))
}

fn web() -> StdVec<u8> {
    entry("web", Some(Source::Exec { path: "/bin/web" }))
}

/// The file the executor writes for `entry`: its header line, then the rendered unit.
fn unit_text(entry: &[u8]) -> String {
    let mut out = [0u8; UNIT_BYTES_MAX];
    let len = render_unit(entry, None, &mut out).unwrap();
    let unit = core::str::from_utf8(&out[..len]).unwrap();
    std::format!("# myco: 0123456789abcdef\n{unit}")
}

/// `request` encoded as the daemon sends it, without the length prefix.
fn body(request: &Request<'_>) -> StdVec<u8> {
    let mut out = std::vec![0u8; FRAME_HEADER_BYTES + REQUEST_BYTES_MAX];
    let len = encode_request(request, &mut out).unwrap();
    let announced = body_len(out[..4].try_into().unwrap()).unwrap();
    assert_eq!(announced, len - FRAME_HEADER_BYTES);
    out[FRAME_HEADER_BYTES..len].to_vec()
}

fn write(name: &str, entry: &[u8], text: &str) -> Result<(), Refusal> {
    let request = Request::WriteUnit {
        name,
        entry,
        program: None,
        text: text.as_bytes(),
    };
    parse(&body(&request)).map(|_| ())
}

/// The unit text with `line` added after the line starting with `after`.
fn with_line(text: &str, after: &str, line: &str) -> String {
    let at = text.find(after).unwrap();
    let end = at + text[at..].find('\n').unwrap() + 1;
    std::format!("{}{line}\n{}", &text[..end], &text[end..])
}

#[test]
fn the_executors_unit_is_written() {
    let e = web();
    let text = unit_text(&e);
    let request = Request::WriteUnit {
        name: "myco-web.service",
        entry: &e,
        program: None,
        text: text.as_bytes(),
    };
    let bytes = body(&request);
    assert_eq!(
        parse(&bytes),
        Ok(Checked::WriteUnit {
            unit: "myco-web.service",
            text: text.as_bytes()
        })
    );
}

/// Only `myco-<service name>.service` is a unit the helper touches, whatever the request.
#[test]
fn other_unit_names_are_refused() {
    let cases = [
        ("sshd.service", Refusal::UnitName),
        ("myco-web.socket", Refusal::UnitName),
        ("myco-.service", Refusal::UnitName),
        ("myco-Web.service", Refusal::UnitName),
        ("myco--web.service", Refusal::UnitName),
        ("myco-web.service.d", Refusal::UnitName),
        ("", Refusal::UnitName),
        ("myco-../x", Refusal::UnitPath),
        ("myco-a/b.service", Refusal::UnitPath),
        ("../myco-web.service", Refusal::UnitPath),
        ("myco-web\n.service", Refusal::UnitControl),
        ("myco-web\0.service", Refusal::UnitControl),
    ];
    for (name, refusal) in cases {
        let requests = [
            Request::RemoveUnit { name },
            Request::Unit {
                verb: UnitVerb::Restart,
                names: Vec::from_slice(&["myco-web.service", name]).unwrap(),
            },
            Request::Journal {
                name,
                follow: true,
                lines: None,
            },
        ];
        for request in requests {
            assert_eq!(parse(&body(&request)), Err(refusal), "{name:?}");
        }
        let e = web();
        assert_eq!(write(name, &e, &unit_text(&e)), Err(refusal), "{name:?}");
    }
}

/// A text with one directive more, or one changed, than the entry's unit is refused, line and
/// reason named: the checker, not the daemon, decides what a unit may say.
#[test]
fn injected_directives_are_refused() {
    let e = web();
    let text = unit_text(&e);
    assert_eq!(write("myco-web.service", &e, &text), Ok(()));
    let cases = [
        with_line(
            &text,
            "Type=exec",
            "ExecStartPre=/bin/sh -c \"id > /tmp/x\"",
        ),
        with_line(&text, "Type=exec", "ExecStartPre=\"/bin/sh\""),
        with_line(&text, "Type=exec", "User=root"),
        with_line(&text, "Type=exec", "PrivateNetwork=no"),
        with_line(&text, "WantedBy=", "[Service]"),
        with_line(&text, "WantedBy=", "[Service]\nUser=root"),
        text.replace("DynamicUser=yes", "DynamicUser=no"),
        text.replace("ProtectSystem=strict", "ProtectSystem=no"),
        text.replace("ExecStart=\"/bin/web\"", "ExecStart=\"/bin/sh\""),
        text.replace("NoNewPrivileges=yes", "NoNewPrivileges=yes \\"),
        with_line(&text, "Type=exec", "DynamicUser=yes"),
        text.replace("[Install]\nWantedBy=multi-user.target\n", ""),
    ];
    for bad in cases {
        assert_ne!(bad, text, "the case changes the text");
        let refused = write("myco-web.service", &e, &bad);
        assert!(
            matches!(refused, Err(Refusal::UnitText(_))),
            "{refused:?} for\n{bad}"
        );
    }
}

/// The entry beside a text must be a live entry of the named service, and the program sane.
#[test]
fn the_entry_must_be_the_units() {
    let e = web();
    let text = unit_text(&e);
    let other = entry("api", Some(Source::Exec { path: "/bin/web" }));
    assert_eq!(
        write("myco-web.service", &other, &unit_text(&other)),
        Err(Refusal::EntryName)
    );
    let tomb = entry("web", None);
    assert_eq!(
        write("myco-web.service", &tomb, &text),
        Err(Refusal::Tombstone)
    );
    assert_eq!(
        write("myco-web.service", &e[..e.len() - 1], &text),
        Err(Refusal::Entry(EntryError::Malformed))
    );
    assert_eq!(
        write("myco-web.service", b"", &text),
        Err(Refusal::Entry(EntryError::Truncated))
    );
    let long = "x".repeat(UNIT_TEXT_BYTES_MAX + 1);
    assert_eq!(
        write("myco-web.service", &e, &long),
        Err(Refusal::TextTooLong)
    );
    for program in ["bin/web", "/bin/../sbin/x", "/bin/w\"eb"] {
        let request = Request::WriteUnit {
            name: "myco-web.service",
            entry: &e,
            program: Some(program),
            text: text.as_bytes(),
        };
        assert_eq!(parse(&body(&request)), Err(Refusal::Program), "{program}");
    }
}

/// Bytes that are not one request in its one encoding change nothing.
#[test]
fn garbage_is_refused() {
    let reload = body(&Request::DaemonReload);
    let mut trailing = reload.clone();
    trailing.push(0);
    // Variant 2 (DaemonReload) as an overlong varint: postcard alone would read it.
    let overlong = [0x82, 0x00];
    let cases: [&[u8]; 6] = [
        b"",
        b"\xff\xff\xff\xff",
        b"systemctl start sshd\n",
        &trailing,
        &overlong,
        &[8],
    ];
    assert_eq!(parse(&reload), Ok(Checked::DaemonReload));
    for bytes in cases {
        assert_eq!(parse(bytes), Err(Refusal::Malformed), "{bytes:?}");
    }
    let cut = body(&Request::RemoveUnit {
        name: "myco-web.service",
    });
    assert_eq!(parse(&cut[..cut.len() - 1]), Err(Refusal::Malformed));
    let long = std::vec![0u8; REQUEST_BYTES_MAX + 1];
    assert_eq!(parse(&long), Err(Refusal::TooLong));
    let announced = (REQUEST_BYTES_MAX as u32 + 1).to_le_bytes();
    assert_eq!(body_len(announced), Err(Refusal::TooLong));
    assert_eq!(body_len(u32::MAX.to_le_bytes()), Err(Refusal::TooLong));
}

#[test]
fn unit_commands_name_one_to_a_command_full_of_units() {
    let empty = Request::Unit {
        verb: UnitVerb::Show,
        names: Vec::new(),
    };
    assert_eq!(parse(&body(&empty)), Err(Refusal::NoUnits));
    let names: StdVec<String> = (0..UNITS_PER_COMMAND)
        .map(|i| std::format!("myco-{}-{i}.service", "s".repeat(50)))
        .collect();
    let refs: StdVec<&str> = names.iter().map(String::as_str).collect();
    let full = Request::Unit {
        verb: UnitVerb::Show,
        names: Vec::from_slice(&refs).unwrap(),
    };
    let bytes = body(&full);
    let Ok(Checked::Unit { verb, units }) = parse(&bytes) else {
        panic!("a full command is accepted");
    };
    assert_eq!((verb, units.len()), (UnitVerb::Show, UNITS_PER_COMMAND));
    // One name more than a command takes is refused, though every name is well formed.
    // Unit is variant 3, Show verb 5, then the count as a varint (200 is c8 01).
    assert_eq!(bytes[..4], [3, 5, 0xc8, 0x01]);
    let mut over = bytes.clone();
    over[2..4].copy_from_slice(&[0xc9, 0x01]);
    over.push(14);
    over.extend_from_slice(b"myco-x.service");
    assert_eq!(parse(&over), Err(Refusal::Malformed));
}

#[test]
fn builds_take_a_locked_flake_and_a_bounded_time() {
    let e = entry("web", Some(flake(LOCKED)));
    // What the helper would run, in words, so the result outlives the request's bytes.
    let build = |entry: &[u8], timeout_s| {
        let substitutes = Vec::new();
        let request = Request::Build {
            entry,
            system: Arch::X86_64,
            timeout_s,
            local: true,
            substitutes,
        };
        parse(&body(&request)).map(|checked| match checked {
            Checked::Build(b) => std::format!("{} {}#{} {}", b.service, b.uri, b.attr, b.root),
            other => panic!("{other:?}"),
        })
    };
    assert_eq!(
        build(&e, 1800),
        Ok(std::format!(
            "web {LOCKED}#default web-a7a7a7a7a7a7-x86_64-linux"
        ))
    );
    assert_eq!(build(&e, 0), Err(Refusal::Timeout));
    assert_eq!(build(&e, BUILD_TIMEOUT_S_MAX + 1), Err(Refusal::Timeout));
    assert_eq!(build(&web(), 1800), Err(Refusal::NotFlake));
    assert_eq!(build(&entry("web", None), 1800), Err(Refusal::Tombstone));
    let option = "--option=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let dashed = entry("web", Some(flake(option)));
    assert_eq!(build(&dashed, 1800), Err(Refusal::FlakeOption));
}

/// Substitutes are an address and a key each, at most `SUBSTITUTES_MAX` (more does not decode);
/// one that is no unicast host's port is refused, the others pass through to the build.
#[test]
fn builds_offer_at_most_three_unicast_substitutes() {
    use crate::config::SUBSTITUTES_MAX;
    use crate::executor::Substitute;
    let e = entry("web", Some(flake(LOCKED)));
    let peer = |cache: PeerAddr| Substitute {
        id: 7,
        cache,
        key: [9; 32],
    };
    let build = |subs: &[Substitute]| {
        let request = Request::Build {
            entry: &e,
            system: Arch::X86_64,
            timeout_s: 60,
            local: true,
            substitutes: Vec::from_slice(subs).unwrap(),
        };
        parse(&body(&request)).map(|checked| match checked {
            Checked::Build(b) => b.substitutes.len(),
            other => panic!("{other:?}"),
        })
    };
    let good = peer(PeerAddr::v4([10, 0, 0, 2], 7947));
    let mut v6 = [0u8; 16];
    v6[0] = 0xfd;
    v6[15] = 2;
    let good_v6 = peer(PeerAddr { ip: v6, port: 7947 });
    assert_eq!(build(&[good, good_v6]), Ok(2));
    for bad in [
        PeerAddr::v4([10, 0, 0, 2], 0),
        PeerAddr::v4([0, 0, 0, 0], 7947),
        PeerAddr::v4([255, 255, 255, 255], 7947),
        PeerAddr::v4([224, 0, 0, 1], 7947),
        PeerAddr {
            ip: [0; 16],
            port: 7947,
        },
        PeerAddr {
            ip: [0xff; 16],
            port: 7947,
        },
    ] {
        assert_eq!(
            build(&[good, peer(bad)]),
            Err(Refusal::Substitute),
            "{bad:?}"
        );
    }
    // One more than the bound: the list's length is the request's first word after the entry
    // and timeout; a longer one does not decode.
    let request = Request::Build {
        entry: &e,
        system: Arch::X86_64,
        timeout_s: 60,
        local: true,
        substitutes: Vec::from_slice(&[good; SUBSTITUTES_MAX]).unwrap(),
    };
    let mut bytes = body(&request);
    let at = bytes.len() - SUBSTITUTES_MAX * encoded_len(&good) - 1;
    assert_eq!(usize::from(bytes[at]), SUBSTITUTES_MAX);
    bytes[at] += 1;
    let one = bytes[bytes.len() - encoded_len(&good)..].to_vec();
    bytes.extend_from_slice(&one);
    assert_eq!(parse(&bytes), Err(Refusal::Malformed));
}

fn encoded_len(s: &crate::executor::Substitute) -> usize {
    postcard::to_slice(s, &mut [0u8; 128]).unwrap().len()
}

/// Service `name`'s entry, running /bin/web, with `check` as its health check.
fn checked(name: &str, check: Check<'_>) -> StdVec<u8> {
    operators(name, Some(exec_checked(check)))
}

/// A spec running /bin/web with `check` as its health check.
fn exec_checked(check: Check<'_>) -> ServiceSpec<'_> {
    let mut spec = ServiceSpec::minimal(Source::Exec { path: "/bin/web" });
    spec.health = Some(crate::schema::entry::Health {
        check,
        interval_s: 10,
        timeout_s: 2,
        failures: 3,
    });
    spec
}

/// A health check request names a unit and its entry; only an entry of that service with an
/// exec check, and a timeout up to `CHECK_TIMEOUT_MS_MAX`, is run.
#[test]
fn health_checks_run_only_the_entrys_exec_check() {
    let argv = Vec::from_slice(&["/bin/check", "--quick"]).unwrap();
    let exec = checked("web", Check::Exec { argv });
    let check = |name, entry: &[u8], timeout_ms| {
        let request = Request::HealthCheck {
            name,
            entry,
            timeout_ms,
        };
        parse(&body(&request)).map(|checked| match checked {
            Checked::HealthCheck { service, .. } => String::from(service),
            other => panic!("{other:?}"),
        })
    };
    assert_eq!(check("myco-web.service", &exec, 2000), Ok("web".into()));
    assert_eq!(
        check("myco-api.service", &exec, 2000),
        Err(Refusal::EntryName)
    );
    assert_eq!(check("sshd.service", &exec, 2000), Err(Refusal::UnitName));
    assert_eq!(
        check("myco-web.service", &exec, 0),
        Err(Refusal::CheckTimeout)
    );
    let over = CHECK_TIMEOUT_MS_MAX + 1;
    assert_eq!(
        check("myco-web.service", &exec, over),
        Err(Refusal::CheckTimeout)
    );
    let tcp = checked("web", Check::Tcp { port: 80 });
    assert_eq!(
        check("myco-web.service", &tcp, 2000),
        Err(Refusal::NotExecCheck)
    );
    assert_eq!(
        check("myco-web.service", &web(), 2000),
        Err(Refusal::NotExecCheck)
    );
    let gone = entry("web", None);
    assert_eq!(
        check("myco-web.service", &gone, 2000),
        Err(Refusal::Tombstone)
    );
}

#[test]
fn requests_without_arguments_and_journals() {
    for (request, checked) in [
        (Request::DaemonReload, Checked::DaemonReload),
        (Request::CollectGarbage, Checked::CollectGarbage),
        (Request::CacheClosure, Checked::CacheClosure),
    ] {
        assert_eq!(parse(&body(&request)), Ok(checked));
    }
    let journal = Request::Journal {
        name: "myco-web.service",
        follow: false,
        lines: Some(50),
    };
    assert_eq!(
        parse(&body(&journal)),
        Ok(Checked::Journal(Journal {
            unit: "myco-web.service",
            follow: false,
            lines: Some(50)
        }))
    );
}

/// A reply decodes to what was sent; a reason too long for a frame is cut at a character
/// boundary, never mid-character.
#[test]
fn replies_round_trip_and_clip_reasons() {
    let mut out = [0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
    let len = encode_reply(Outcome::Exited(3), "it said no", &mut out).unwrap();
    let reply = decode_reply(&out[FRAME_HEADER_BYTES..len]).unwrap();
    assert_eq!(reply.outcome, Outcome::Exited(3));
    assert_eq!(reply.reason, "it said no");
    let long = "é".repeat(REASON_BYTES_MAX);
    let len = encode_reply(Outcome::Refused, &long, &mut out).unwrap();
    let reply = decode_reply(&out[FRAME_HEADER_BYTES..len]).unwrap();
    assert!(reply.reason.len() <= REASON_BYTES_MAX && reply.reason.len() >= REASON_BYTES_MAX - 1);
    assert!(reply.reason.chars().all(|c| c == 'é'));
    assert_eq!(decode_reply(b"\x09"), None);
}

/// A reply's exit code or signal is one a process can have; `exit_code` is the shell's.
#[test]
fn replies_carry_only_possible_exits() {
    let mut out = [0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
    let mut decoded = |outcome| {
        let len = encode_reply(outcome, "", &mut out).unwrap();
        decode_reply(&out[FRAME_HEADER_BYTES..len]).map(|r| r.outcome.exit_code())
    };
    assert_eq!(decoded(Outcome::Exited(0)), Some(Some(0)));
    assert_eq!(decoded(Outcome::Exited(255)), Some(Some(255)));
    assert_eq!(decoded(Outcome::Signaled(9)), Some(Some(137)));
    assert_eq!(decoded(Outcome::Signaled(64)), Some(Some(192)));
    assert_eq!(decoded(Outcome::Refused), Some(None));
    assert_eq!(decoded(Outcome::Failed), Some(None));
    for impossible in [
        Outcome::Exited(-1),
        Outcome::Exited(256),
        Outcome::Signaled(0),
        Outcome::Signaled(65),
        Outcome::Signaled(i32::MAX),
    ] {
        assert_eq!(decoded(impossible), None, "{impossible:?}");
    }
}

/// Descriptors go only with a command's request, at most two; a file request takes none.
#[test]
fn only_commands_take_descriptors() {
    let e = web();
    let text = unit_text(&e);
    let files = [
        Request::WriteUnit {
            name: "myco-web.service",
            entry: &e,
            program: None,
            text: text.as_bytes(),
        },
        Request::RemoveUnit {
            name: "myco-web.service",
        },
    ];
    for request in files {
        let checked = check_request(request).unwrap();
        assert_eq!(checked.check_descriptors(0), Ok(()));
        assert_eq!(checked.check_descriptors(1), Err(Refusal::Descriptors));
    }
    let commands = [
        Request::DaemonReload,
        Request::CollectGarbage,
        Request::CacheClosure,
        Request::Journal {
            name: "myco-web.service",
            follow: true,
            lines: None,
        },
    ];
    for request in commands {
        let checked = check_request(request).unwrap();
        for count in 0..=FDS_MAX {
            assert_eq!(checked.check_descriptors(count), Ok(()));
        }
        assert_eq!(
            checked.check_descriptors(FDS_MAX + 1),
            Err(Refusal::Descriptors)
        );
    }
}

/// The three requests that carry an entry.
#[derive(Clone, Copy, Debug)]
enum Carrier {
    WriteUnit,
    Build,
    HealthCheck,
}

impl Carrier {
    /// A spec this request accepts when the operator signed it.
    fn spec(self) -> ServiceSpec<'static> {
        match self {
            Carrier::WriteUnit => ServiceSpec::minimal(Source::Exec { path: "/bin/web" }),
            Carrier::Build => ServiceSpec::minimal(flake(LOCKED)),
            Carrier::HealthCheck => exec_checked(Check::Exec {
                argv: Vec::from_slice(&["/bin/check"]).unwrap(),
            }),
        }
    }

    /// This request for `entry` of service web, its unit text (for a write) rendered from that
    /// very entry, so that only the signature can make it differ from an accepted one (a
    /// tombstone renders none: its write carries an empty text).
    fn ask(self, entry: &[u8]) -> Result<(), Refusal> {
        let renders = matches!(self, Carrier::WriteUnit) && !is_tombstone(entry);
        let text = if renders {
            unit_text(entry)
        } else {
            String::new()
        };
        let request = match self {
            Carrier::WriteUnit => Request::WriteUnit {
                name: "myco-web.service",
                entry,
                program: None,
                text: text.as_bytes(),
            },
            Carrier::Build => Request::Build {
                entry,
                system: Arch::X86_64,
                timeout_s: 60,
                local: true,
                substitutes: Vec::new(),
            },
            Carrier::HealthCheck => Request::HealthCheck {
                name: "myco-web.service",
                entry,
                timeout_ms: 1000,
            },
        };
        parse(&body(&request)).map(|_| ())
    }
}

fn is_tombstone(entry: &[u8]) -> bool {
    Entry::decode(entry).unwrap().body.spec.is_none()
}

/// An entry the operator did not sign is refused by every request that carries one, before
/// anything is read from it: a made-up entry (no signature), the operator's entry tampered with
/// (a later clock, or one bit of the signature), an entry signed by another key under its own
/// key id or under the operator's. The same request with the operator's entry is accepted, so
/// the signature alone decides; a forged tombstone is refused as unsigned, not as a tombstone.
#[test]
fn entries_the_operator_did_not_sign_are_refused() {
    let op = crate::node::tests::operator().public_key().key_id();
    let forger = test_key(9);
    let forger_id = forger.public_key().key_id();
    let bad = Err(Refusal::Unsigned(EntrySignatureError::BadSignature));
    for carrier in [Carrier::WriteUnit, Carrier::Build, Carrier::HealthCheck] {
        let genuine = operators("web", Some(carrier.spec()));
        assert_eq!(carrier.ask(&genuine), Ok(()), "{carrier:?}");
        let mut made_up = genuine.clone();
        let sig_at = made_up.len() - crate::config::SIGNATURE_BYTES;
        made_up[sig_at..].fill(0);
        assert_eq!(carrier.ask(&made_up), bad, "{carrier:?} made up");
        // The clock follows the name ("web", one length byte): 1 becomes 2, still one byte.
        let mut later = genuine.clone();
        assert_eq!(later[4], 1);
        later[4] = 2;
        assert_eq!(carrier.ask(&later), bad, "{carrier:?} later clock");
        let mut flipped = genuine.clone();
        flipped[sig_at] ^= 1;
        assert_eq!(carrier.ask(&flipped), bad, "{carrier:?} signature bit");
        let theirs = signed_by(&forger, forger_id, "web", Some(carrier.spec()));
        assert_eq!(
            carrier.ask(&theirs),
            Err(Refusal::Unsigned(EntrySignatureError::UnknownKey {
                key_id: forger_id
            })),
            "{carrier:?} another key"
        );
        let posing = signed_by(&forger, op, "web", Some(carrier.spec()));
        assert_eq!(
            carrier.ask(&posing),
            bad,
            "{carrier:?} posing as the operator"
        );
        let tomb = signed_by(&forger, op, "web", None);
        assert_eq!(carrier.ask(&tomb), bad, "{carrier:?} forged tombstone");
    }
}

/// The refusal says which key the entry named, or that its signature is not the operator's.
#[test]
fn unsigned_refusals_say_why() {
    let unknown = Refusal::Unsigned(EntrySignatureError::UnknownKey {
        key_id: 0xdead_beef,
    });
    assert_eq!(
        unknown.to_string(),
        "the entry names key deadbeef, not the cluster's operator key"
    );
    let bad = Refusal::Unsigned(EntrySignatureError::BadSignature);
    assert_eq!(
        bad.to_string(),
        "the entry's signature is not the operator's"
    );
}

/// What the daemon sends is the entry as its store rebuilds it from the packed form, with the
/// texts several entries share kept once: those bytes are the operator's signed bytes, so the
/// helper accepts a build of each entry read back, as it does the entry as signed.
#[test]
fn entries_read_back_from_the_store_verify() {
    let mut store: crate::state::store::Store<8, 4096> = crate::state::store::Store::new();
    let names = ["web", "api", "db"];
    let signed: StdVec<StdVec<u8>> = names
        .iter()
        .map(|n| entry(n, Some(flake(LOCKED))))
        .collect();
    for e in &signed {
        store.merge(e).unwrap();
    }
    for (name, e) in names.iter().zip(&signed) {
        let stored = store.get_by_name(name).unwrap();
        assert_eq!(&stored[..], &e[..], "{name}");
        let request = Request::Build {
            entry: &stored,
            system: Arch::X86_64,
            timeout_s: 60,
            local: true,
            substitutes: Vec::new(),
        };
        assert!(
            matches!(parse(&body(&request)), Ok(Checked::Build(_))),
            "{name}"
        );
    }
}

/// The executor's `enable --no-reload --now` is a verb of its own, encoded after every older
/// verb (theirs unchanged, so a helper and a daemon one release apart still agree on them), and
/// it names only `myco-*` units like the rest.
#[test]
fn enable_without_reload_is_the_last_verb() {
    let names = Vec::from_slice(&["myco-web.service"]).unwrap();
    let request = Request::Unit {
        verb: UnitVerb::EnableNoReload,
        names,
    };
    let bytes = body(&request);
    assert_eq!(bytes[..2], [3, 7], "Unit, then the verb's index");
    let Ok(Checked::Unit { verb, units }) = parse(&bytes) else {
        panic!("accepted");
    };
    assert_eq!(
        (verb, units.as_slice()),
        (UnitVerb::EnableNoReload, &["myco-web.service"][..])
    );
    assert_eq!(verb.args(), ["enable", "--no-reload", "--now"]);
    let other = Request::Unit {
        verb: UnitVerb::EnableNoReload,
        names: Vec::from_slice(&["sshd.service"]).unwrap(),
    };
    assert_eq!(parse(&body(&other)), Err(Refusal::UnitName));
}
