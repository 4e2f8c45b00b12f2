//! Runs the built `myco` binary as an operator would, each test in its own temporary directory,
//! and checks what it writes with myco-core's own decoders: the files must be what the cluster
//! accepts, not merely what the CLI printed.

mod common;

use common::*;
use myco_core::crypto::{verify_entry, Cert, PublicKey, Revocation};
use myco_core::schema::entry::{Arch, Entry, Port, Protocol, Requirements, Source};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// keygen writes 64 lowercase hex digits and a newline, owner-only, reports the key's id, and
/// refuses to replace an existing file, leaving it as it was.
#[test]
fn keygen_writes_owner_only_key_and_refuses_overwrite() {
    let dir = TempDir::new("keygen");
    let text = myco_ok(&dir, &["keygen", "--out", "op.key"]);
    let path = dir.join("op.key");
    assert_eq!(mode(&path), 0o600);
    let contents = fs::read_to_string(&path).unwrap();
    let digits = contents.strip_suffix('\n').unwrap();
    assert_eq!(digits.len(), 64);
    assert!(digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let public = PublicKey(parse_hex32(&text_field(&text, "public_key")));
    assert_eq!(text_field(&text, "key_id"), public.key_id().to_string());

    let again = myco(&dir, &["keygen", "--out", "op.key"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert!(stderr(&again).starts_with("myco: "));
    assert_eq!(fs::read_to_string(&path).unwrap(), contents);

    // Two keys are never the same key: the seed comes from the OS.
    assert_ne!(keygen(&dir, "other.key"), public);
}

/// pubkey reads back the public key keygen printed, with its key id and node id, in both forms.
#[test]
fn pubkey_matches_keygen() {
    let dir = TempDir::new("pubkey");
    let json = myco_ok(&dir, &["keygen", "--out", "node.key", "--json"]);
    assert_eq!(json_field(&json, "path"), "node.key");
    let public = PublicKey(parse_hex32(&json_field(&json, "public_key")));

    let json = myco_ok(&dir, &["pubkey", "--key", "node.key", "--json"]);
    assert_eq!(json_field(&json, "public_key"), hex(&public.0));
    assert_eq!(json_field(&json, "key_id"), public.key_id().to_string());
    assert_eq!(
        json_field(&json, "node_id"),
        format!("{:016x}", public.node_id())
    );
    let mut b64 = [0u8; 44];
    let b64 = myco_core::cache::base64(&public.0, &mut b64);
    let cache_key = format!("{:016x}:{b64}", public.node_id());
    assert_eq!(json_field(&json, "nix_cache_key"), cache_key);
    assert_eq!(cache_key.len(), 16 + 1 + 44);
    let text = myco_ok(&dir, &["pubkey", "--key", "node.key"]);
    assert_eq!(text_field(&text, "public_key"), hex(&public.0));
    assert_eq!(
        text_field(&text, "node_id"),
        format!("{:016x}", public.node_id())
    );
}

/// A certificate from `myco cert` decodes, carries exactly the requested fields, verifies under
/// the operator key up to its issue height and is revoked above it.
#[test]
fn cert_verifies_with_requested_fields() {
    let dir = TempDir::new("cert");
    let operator = keygen(&dir, "op.key");
    let node = keygen(&dir, "node.key");
    let node_hex = hex(&node.0);
    let cases: [(&[&str], u8, Arch, bool, u64); 2] = [
        (
            &[
                "--zone",
                "7",
                "--arch",
                "aarch64",
                "--gpu",
                "--issued-at",
                "12",
            ],
            7,
            Arch::Aarch64,
            true,
            12,
        ),
        (
            &["--zone", "255", "--arch", "any"],
            255,
            Arch::Any,
            false,
            0,
        ),
    ];
    for (i, (flags, zone, arch, gpu, issued_at)) in cases.into_iter().enumerate() {
        let out = format!("node-{i}.cert");
        let mut args = vec![
            "cert",
            "--operator-key",
            "op.key",
            "--node-pubkey",
            &node_hex,
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--out", &out, "--json"]);
        let json = myco_ok(&dir, &args);

        let bytes = fs::read(dir.join(&out)).unwrap();
        assert_eq!(json_field(&json, "size_bytes"), bytes.len().to_string());
        assert_eq!(
            json_field(&json, "node_id"),
            format!("{:016x}", node.node_id())
        );
        let cert = Cert::decode(&bytes).unwrap();
        assert_eq!(cert.body.node_pk, node.0);
        assert_eq!((cert.body.zone, cert.body.arch), (zone, arch));
        assert_eq!((cert.body.gpu, cert.body.issued_at), (gpu, issued_at));
        assert_eq!(cert.body.issuer, operator.key_id());
        assert_eq!(cert.verify(&operator, issued_at), Ok(()));
        assert!(cert.verify(&operator, issued_at + 1).is_err());
        assert!(cert.verify(&node, 0).is_err());
        // Public, so never more open than 0644; the umask may narrow it.
        assert_eq!(mode(&dir.join(&out)) & !0o644, 0);
    }
}

/// cert refuses to replace an existing file and leaves it as it was.
#[test]
fn cert_refuses_overwrite() {
    let dir = TempDir::new("cert-overwrite");
    keygen(&dir, "op.key");
    let node = hex(&keygen(&dir, "node.key").0);
    fs::write(dir.join("node.cert"), b"keep me").unwrap();
    let out = myco(
        &dir,
        &[
            "cert",
            "--operator-key",
            "op.key",
            "--node-pubkey",
            &node,
            "--zone",
            "1",
            "--arch",
            "x86_64",
            "--out",
            "node.cert",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"));
    assert_eq!(fs::read(dir.join("node.cert")).unwrap(), b"keep me");
}

/// Every bad command line exits 2 with a message naming the flag at fault, and writes nothing.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one row per bad command line; the table reads better whole than split"
)]
fn bad_flags_exit_2_naming_the_flag() {
    let dir = TempDir::new("bad-flags");
    let operator = keygen(&dir, "op.key");
    let node = hex(&keygen(&dir, "node.key").0);
    let short = &node[..63];
    let not_hex = format!("{}g", &node[..63]);
    // A good cert command line with the given flags' values replaced or added.
    let cert = |changes: &[(&str, &str)], pubkey: &str| -> Vec<String> {
        let mut flags = vec![
            ("--operator-key", "op.key"),
            ("--node-pubkey", pubkey),
            ("--zone", "1"),
            ("--arch", "x86_64"),
            ("--out", "c"),
        ];
        for &(flag, value) in changes {
            flags.retain(|(f, _)| *f != flag);
            flags.push((flag, value));
        }
        let pairs = flags
            .into_iter()
            .flat_map(|(f, v)| [f.to_string(), v.to_string()]);
        std::iter::once("cert".to_string()).chain(pairs).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (cert(&[], short), "--node-pubkey"),
        (cert(&[], &not_hex), "--node-pubkey"),
        (cert(&[], &hex(&operator.0)), "--node-pubkey"),
        (cert(&[("--zone", "256")], &node), "--zone"),
        (cert(&[("--zone", "-1")], &node), "--zone"),
        (cert(&[("--arch", "amd64")], &node), "--arch"),
        (cert(&[("--issued-at", "soon")], &node), "--issued-at"),
        (cert(&[("--colour", "red")], &node), "--colour"),
        (vec!["cert".into(), "--zone".into()], "--zone"),
        (vec!["keygen".into()], "--out"),
        (
            vec!["keygen".into(), "--out".into(), "--json".into()],
            "--out",
        ),
        (vec!["pubkey".into(), "--key".into()], "--key"),
        (
            vec![
                "revoke".into(),
                "--operator-key".into(),
                "op.key".into(),
                "--height".into(),
                "0".into(),
                "--out".into(),
                "r".into(),
            ],
            "--height",
        ),
        (
            vec![
                "revoke".into(),
                "--operator-key".into(),
                "op.key".into(),
                "--out".into(),
                "r".into(),
            ],
            "--height",
        ),
        (
            vec!["sign".into(), "--out".into(), "e".into()],
            "--operator-key",
        ),
        (
            vec!["sign".into(), "--operator-key".into(), "op.key".into()],
            "--out",
        ),
        (
            vec![
                "sign".into(),
                "--operator-key".into(),
                "op.key".into(),
                "--out".into(),
                "e".into(),
                "--clock".into(),
                "soon".into(),
            ],
            "--clock",
        ),
        (
            vec![
                "sign".into(),
                "a.json".into(),
                "b.json".into(),
                "--operator-key".into(),
                "op.key".into(),
                "--out".into(),
                "e".into(),
            ],
            "b.json",
        ),
        (
            vec![
                "sign".into(),
                "--operator-key".into(),
                "op.key".into(),
                "--out".into(),
                "e".into(),
                "--remove".into(),
            ],
            "--remove",
        ),
        (vec!["frobnicate".into()], "frobnicate"),
        (vec!["--frobnicate".into()], "--frobnicate"),
    ];
    for (args, flag) in cases {
        let out = myco(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("myco: ") && err.contains(flag),
            "{args:?}: {err}"
        );
    }
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["node.key", "op.key"]);
}

/// A key file that group or others can read is refused with the fix, and nothing is signed.
#[test]
fn readable_key_file_refused() {
    let dir = TempDir::new("readable-key");
    keygen(&dir, "op.key");
    let node = hex(&keygen(&dir, "node.key").0);
    for mode in [0o640, 0o604] {
        fs::set_permissions(dir.join("op.key"), fs::Permissions::from_mode(mode)).unwrap();
        let out = myco(
            &dir,
            &[
                "cert",
                "--operator-key",
                "op.key",
                "--node-pubkey",
                &node,
                "--zone",
                "1",
                "--arch",
                "any",
                "--out",
                "c",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("chmod 600 op.key"),
            "{}",
            stderr(&out)
        );
        assert!(!dir.join("c").exists());
        let out = myco(&dir, &["pubkey", "--key", "op.key"]);
        assert_eq!(out.status.code(), Some(1));
    }
}

/// Key files must be exactly 64 hex digits with at most a trailing newline and a non-zero seed;
/// anything else is refused (exit 1) without quoting the file, which may hold a secret.
#[test]
fn key_file_format_checked() {
    let dir = TempDir::new("key-format");
    let seed = "3a".repeat(32);
    let cases: [(&str, bool); 7] = [
        (&seed, true),
        (&format!("{}\n", seed.to_uppercase()), true),
        (&format!("{seed}\r\n"), false),
        (&format!("{seed}\n\n"), false),
        (&seed[..62], false),
        (&format!("{}zz", &seed[..62]), false),
        (&"0".repeat(64), false),
    ];
    for (i, (contents, accepted)) in cases.into_iter().enumerate() {
        let name = format!("k{i}.key");
        fs::write(dir.join(&name), contents).unwrap();
        fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o600)).unwrap();
        let out = myco(&dir, &["pubkey", "--key", &name]);
        let code = if accepted { 0 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(code),
            "{contents:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("3a3a"), "{}", stderr(&out));
    }
    let out = myco(&dir, &["pubkey", "--key", "missing.key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.key"));
}

/// A revocation from `myco revoke` decodes and verifies under the operator key to its height.
#[test]
fn revoke_verifies_with_height() {
    let dir = TempDir::new("revoke");
    let operator = keygen(&dir, "op.key");
    let other = keygen(&dir, "other.key");
    let json = myco_ok(
        &dir,
        &[
            "revoke",
            "--operator-key",
            "op.key",
            "--height",
            "9",
            "--out",
            "r",
            "--json",
        ],
    );
    assert_eq!(json_field(&json, "height"), "9");
    let bytes = fs::read(dir.join("r")).unwrap();
    assert_eq!(json_field(&json, "size_bytes"), bytes.len().to_string());
    let revocation = Revocation::decode(&bytes).unwrap();
    assert_eq!(revocation.verify(&operator), Ok(9));
    assert!(revocation.verify(&other).is_err());
}

/// `myco --help` lists exactly the commands that exist, each of which has its own help naming
/// its flags; an unknown command is a usage error.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "the list of commands and their flags is a table; split, it would hide what is missing"
)]
fn help_lists_exactly_the_commands() {
    let dir = TempDir::new("help");
    let help = myco_ok(&dir, &["--help"]);
    let listed: Vec<&str> = help
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "keygen",
            "pubkey",
            "cert",
            "revoke",
            "credential",
            "init",
            "sign",
            "render",
            "deploy",
            "rm",
            "ls",
            "nodes",
            "status",
            "events",
            "logs",
            "audit",
            "proxy",
            "completions"
        ]
    );
    let flags: [(&str, &[&str]); 18] = [
        ("events", &["--socket", "--json"]),
        ("audit", &["--json", "--follow", "--lines", "--socket"]),
        ("logs", &["NAME", "--follow", "--lines", "--socket"]),
        ("keygen", &["--out", "--json"]),
        ("pubkey", &["--key", "--json"]),
        (
            "cert",
            &[
                "--operator-key",
                "--node-pubkey",
                "--zone",
                "--arch",
                "--gpu",
                "--issued-at",
                "--out",
            ],
        ),
        ("revoke", &["--operator-key", "--height", "--out"]),
        ("init", &["python|go|node", "DIR", "--name", "--json"]),
        (
            "sign",
            &["MANIFEST", "--operator-key", "--out", "--clock", "--delete"],
        ),
        (
            "render",
            &["MANIFEST", "--out", "--clock", "--program", "--json"],
        ),
        (
            "deploy",
            &[
                "MANIFEST",
                "--operator-key",
                "--clock",
                "--entry",
                "--wait",
                "--timeout",
                "--socket",
                "MYCO_SOCKET",
                "/run/myco/myco.sock",
                "--json",
            ],
        ),
        (
            "rm",
            &[
                "NAME",
                "--operator-key",
                "--clock",
                "--wait",
                "--timeout",
                "--socket",
                "--json",
            ],
        ),
        ("ls", &["--socket", "--json"]),
        ("nodes", &["--socket", "--json"]),
        ("status", &["--socket", "--json"]),
        ("completions", &["bash|zsh"]),
        (
            "credential",
            &[
                "--operator-key",
                "--holder-pubkey",
                "--expires-in",
                "--node",
                "--issued-at",
                "--out",
            ],
        ),
        (
            "proxy",
            &[
                "--to",
                "--listen",
                "--operator-key",
                "--credential",
                "--key",
                "--node",
            ],
        ),
    ];
    for (command, names) in flags {
        let help = myco_ok(&dir, &[command, "--help"]);
        assert!(help.starts_with(&format!("Usage: myco {command} ")));
        for name in names
            .iter()
            .chain(&["Exit status: 0 ", "2 bad command line"])
        {
            assert!(help.contains(name), "{command} --help lacks {name}");
        }
    }
    assert!(myco_ok(&dir, &["--version"]).starts_with("myco "));
    assert_eq!(myco(&dir, &[]).status.code(), Some(2));
}

/// `myco sign MANIFEST --operator-key op.key --out OUT [extra...] --json`, which must succeed.
fn sign(dir: &TempDir, manifest: &str, out: &str, extra: &[&str]) -> String {
    let mut args = vec!["sign", manifest, "--operator-key", "op.key", "--out", out];
    args.extend_from_slice(extra);
    args.push("--json");
    myco_ok(dir, &args)
}

/// A signed entry decodes to exactly the manifest's service, with the given clock and the
/// operator's key id; it verifies under the operator key and no other; the file is public.
#[test]
fn sign_writes_verified_entry_with_manifest_fields() {
    let dir = TempDir::new("sign");
    let operator = keygen(&dir, "op.key");
    let other = keygen(&dir, "other.key");
    fs::write(dir.join("web.json"), FULL_MANIFEST).unwrap();
    let json = sign(&dir, "web.json", "web.entry", &["--clock", "1700000000000"]);

    let bytes = fs::read(dir.join("web.entry")).unwrap();
    assert_eq!(json_field(&json, "size_bytes"), bytes.len().to_string());
    assert_eq!(json_field(&json, "name"), "web");
    assert_eq!(json_field(&json, "clock"), "1700000000000");
    assert_eq!(json_field(&json, "tombstone"), "false");
    assert_eq!(json_field(&json, "key_id"), operator.key_id().to_string());
    let entry = Entry::decode(&bytes).unwrap();
    assert!(verify_entry(&operator, &entry));
    assert!(!verify_entry(&other, &entry));
    let body = &entry.body;
    assert_eq!(body.name, "web");
    assert_eq!(body.version.clock, 1_700_000_000_000);
    assert_eq!(body.version.key_id, operator.key_id());
    let spec = body.spec.as_ref().unwrap();
    // The flake is locked (here by the stand-in nix) to one commit, which the summary names.
    let Source::Flake { uri, attr, rev, .. } = spec.source else {
        panic!("{:?}", spec.source)
    };
    let locked = format!("git+https://host/repo?ref=main&rev={STAND_IN_REV}");
    assert_eq!((uri, attr), (locked.as_str(), "server"));
    assert_eq!(hex(&rev), STAND_IN_REV);
    assert_eq!(json_field(&json, "rev"), STAND_IN_REV);
    assert_eq!(spec.args.as_slice(), ["--port", "8080"]);
    assert_eq!(spec.env.as_slice(), [("LEVEL", "info"), ("MODE", "prod")]);
    assert_eq!(spec.pre.len(), 1);
    assert_eq!(spec.pre[0].as_slice(), ["/bin/migrate", "--up"]);
    assert_eq!(
        spec.requires,
        Requirements {
            arch: Arch::X86_64,
            gpu: true,
            zone: Some(3)
        }
    );
    assert_eq!(spec.replicas, 2);
    assert_eq!(
        spec.ports.as_slice(),
        [
            Port {
                number: 8080,
                protocol: Protocol::Tcp
            },
            Port {
                number: 53,
                protocol: Protocol::Udp
            }
        ]
    );
    assert_eq!(mode(&dir.join("web.entry")) & !0o644, 0);
}

/// The same manifest, key and clock give byte-identical entries, however the manifest orders its
/// fields and env; another clock gives another entry.
#[test]
fn sign_is_deterministic() {
    let dir = TempDir::new("sign-deterministic");
    keygen(&dir, "op.key");
    fs::write(dir.join("a.json"), FULL_MANIFEST).unwrap();
    let reordered = r#"{"ports": [{"protocol": "tcp", "port": 8080}, {"port": 53, "protocol": "udp"}],
        "replicas": 2, "zone": 3, "gpu": true, "arch": "x86_64",
        "migrations": [["/bin/migrate", "--up"]], "env": {"LEVEL": "info", "MODE": "prod"},
        "args": ["--port", "8080"], "attr": "server", "flake": "git+https://host/repo?ref=main",
        "name": "web"}"#;
    fs::write(dir.join("b.json"), reordered).unwrap();
    sign(&dir, "a.json", "1", &["--clock", "42"]);
    sign(&dir, "a.json", "2", &["--clock", "42"]);
    sign(&dir, "b.json", "3", &["--clock", "42"]);
    sign(&dir, "a.json", "4", &["--clock", "43"]);
    let read = |name: &str| fs::read(dir.join(name)).unwrap();
    assert_eq!(read("1"), read("2"));
    assert_eq!(read("1"), read("3"));
    assert_ne!(read("1"), read("4"));
}

/// Without --clock the version is the wall clock in milliseconds; without a path the manifest is
/// ./myco.json.
#[test]
fn sign_defaults_to_myco_json_and_wall_clock() {
    let dir = TempDir::new("sign-defaults");
    keygen(&dir, "op.key");
    fs::write(
        dir.join("myco.json"),
        r#"{"name": "db", "exec": "/usr/bin/db"}"#,
    )
    .unwrap();
    let now_ms = || {
        let since = std::time::UNIX_EPOCH.elapsed().unwrap();
        u64::try_from(since.as_millis()).unwrap()
    };
    let before = now_ms();
    let json = myco_ok(
        &dir,
        &["sign", "--operator-key", "op.key", "--out", "e", "--json"],
    );
    let after = now_ms();
    let bytes = fs::read(dir.join("e")).unwrap();
    let entry = Entry::decode(&bytes).unwrap();
    assert_eq!(entry.body.name, "db");
    let clock = entry.body.version.clock;
    assert!(
        (before..=after).contains(&clock),
        "{before} {clock} {after}"
    );
    assert_eq!(json_field(&json, "clock"), clock.to_string());
    let spec = entry.body.spec.unwrap();
    assert_eq!(
        spec.source,
        Source::Exec {
            path: "/usr/bin/db"
        }
    );
    assert_eq!(spec.replicas, 1);
}

/// --delete signs a verified tombstone for the manifest's name.
#[test]
fn sign_delete_makes_tombstone() {
    let dir = TempDir::new("sign-delete");
    let operator = keygen(&dir, "op.key");
    fs::write(dir.join("myco.json"), FULL_MANIFEST).unwrap();
    let json = sign(&dir, "myco.json", "rm", &["--delete", "--clock", "9"]);
    assert_eq!(json_field(&json, "tombstone"), "true");
    let text = myco_ok(
        &dir,
        &[
            "sign",
            "--operator-key",
            "op.key",
            "--out",
            "rm2",
            "--delete",
        ],
    );
    assert_eq!(text_field(&text, "tombstone"), "true");
    let bytes = fs::read(dir.join("rm")).unwrap();
    let entry = Entry::decode(&bytes).unwrap();
    assert!(entry.body.is_tombstone());
    assert_eq!((entry.body.name, entry.body.version.clock), ("web", 9));
    assert!(verify_entry(&operator, &entry));
}

/// Characters that mean something to a shell or to systemd (`$`, `%`, quotes, backslashes,
/// semicolons) are data: the entry holds them verbatim. Control characters, newline first, are
/// refused with the field named, and nothing is written.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of hostile words and the verbatim entry they must give"
)]
fn sign_hostile_manifests() {
    let dir = TempDir::new("sign-hostile");
    keygen(&dir, "op.key");
    let args = [
        "$HOME",
        "${X}",
        "%n",
        "%%",
        "\"q\"",
        "'s'",
        "back\\slash",
        "a;b",
        "`id`",
    ];
    let env_value = "$(reboot) %h \"\\ ; ' `x`";
    let manifest = format!(
        r#"{{"name": "h", "exec": "/bin/h", "args": {}, "env": {{"V": {}}}}}"#,
        json_list(&args),
        json_string(env_value)
    );
    fs::write(dir.join("h.json"), manifest).unwrap();
    sign(&dir, "h.json", "h.entry", &["--clock", "1"]);
    let bytes = fs::read(dir.join("h.entry")).unwrap();
    let entry = Entry::decode(&bytes).unwrap();
    let spec = entry.body.spec.unwrap();
    assert_eq!(spec.args.as_slice(), args);
    assert_eq!(spec.env.as_slice(), [("V", env_value)]);

    let refused = [
        (
            r#"{"name": "h", "exec": "/bin/h", "args": ["a\nb"]}"#,
            "args[0]",
        ),
        (
            r#"{"name": "h", "exec": "/bin/h", "args": ["ok", "a\rb"]}"#,
            "args[1]",
        ),
        (
            r#"{"name": "h", "exec": "/bin/h", "env": {"V": "1\n[Service]"}}"#,
            "env \"V\"",
        ),
        (
            r#"{"name": "h", "exec": "/bin/h\nExecStart=/bin/sh"}"#,
            "exec",
        ),
        (r#"{"name": "h\n", "exec": "/bin/h"}"#, "name \"h\\n\""),
        (r#"{"name": "h", "flake": "f\u0000"}"#, "flake"),
        (
            r#"{"name": "h", "exec": "/bin/h", "migrations": [["/m", "\u001b[2J"]]}"#,
            "migrations[0]",
        ),
    ];
    for (i, (manifest, field)) in refused.into_iter().enumerate() {
        let path = format!("bad{i}.json");
        fs::write(dir.join(&path), manifest).unwrap();
        let out = myco(
            &dir,
            &[
                "sign",
                &path,
                "--operator-key",
                "op.key",
                "--out",
                "bad.entry",
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{manifest}: {err}");
        assert!(
            err.starts_with(&format!("myco: manifest '{path}' is refused: {field}")),
            "{manifest}: {err}"
        );
        // A name is refused by the DNS-label rule; every other field by its control character.
        let why = if field.starts_with("name") {
            "DNS label"
        } else {
            "control character"
        };
        assert!(err.contains(why), "{manifest}: {err}");
        assert!(!dir.join("bad.entry").exists());
    }
}

/// A manifest the parser refuses exits 1 naming the file and the field; a missing manifest and an
/// existing output file exit 1 too, and none of them writes or changes a file.
#[test]
fn sign_refusals_exit_1_and_write_nothing() {
    let dir = TempDir::new("sign-refusals");
    keygen(&dir, "op.key");
    let cases = [
        (
            r#"{"name": "a", "exec": "/a", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"name": "a", "exec": "/a", "flake": "f"}"#,
            "both flake and exec",
        ),
        (r#"{"name": "a"}"#, "neither flake nor exec"),
        (
            r#"{"name": "a", "exec": "a"}"#,
            "exec: executable must be an absolute path",
        ),
        (r#"{"name": "A", "exec": "/a"}"#, "DNS label"),
        (
            r#"{"name": "a", "exec": "/a", "replicas": 0}"#,
            "replicas must be between 1 and 64",
        ),
        (
            r#"{"name": "a", "exec": "/a", "env": {"A-B": "1"}}"#,
            "env \"A-B\"",
        ),
        (
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 0}]}"#,
            "non-zero",
        ),
        (
            r#"{"name": "a", "exec": "/a", "args": [1]}"#,
            "invalid type",
        ),
        ("{", "EOF"),
    ];
    for (manifest, needle) in cases {
        fs::write(dir.join("m.json"), manifest).unwrap();
        let out = myco(
            &dir,
            &["sign", "m.json", "--operator-key", "op.key", "--out", "e"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{manifest}: {err}");
        assert!(
            err.starts_with("myco: manifest 'm.json' is refused: ") && err.contains(needle),
            "{manifest}: {err}"
        );
        assert!(err.contains("docs/myco-json.md"), "{err}");
        assert!(!dir.join("e").exists());
    }
    let out = myco(&dir, &["sign", "--operator-key", "op.key", "--out", "e"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("'myco.json'"), "{}", stderr(&out));
    fs::write(dir.join("m.json"), FULL_MANIFEST).unwrap();
    fs::write(dir.join("e"), b"keep me").unwrap();
    let out = myco(
        &dir,
        &["sign", "m.json", "--operator-key", "op.key", "--out", "e"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"));
    assert_eq!(fs::read(dir.join("e")).unwrap(), b"keep me");
}

/// A JSON string literal, escaping what these tests put in one.
fn json_string(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn json_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", items.join(", "))
}
