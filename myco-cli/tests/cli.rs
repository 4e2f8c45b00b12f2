//! Runs the built `myco` binary as an operator would, each test in its own temporary directory,
//! and checks what it writes with myco-core's own decoders: the files must be what the cluster
//! accepts, not merely what the CLI printed.

use myco_core::crypto::{Cert, PublicKey, Revocation};
use myco_core::schema::entry::Arch;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory named after the test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("myco-cli-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn myco(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_myco"))
        .args(args)
        .current_dir(&dir.0)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs a command that must succeed and returns its stdout.
fn myco_ok(dir: &TempDir, args: &[&str]) -> String {
    let out = myco(dir, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The raw value of `key` in the one-line JSON object `json`, quotes stripped.
fn json_field(json: &str, key: &str) -> String {
    let start = json.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"').to_string()
}

/// The value after `name` in human output (`name  value` lines).
fn text_field(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name));
    line.expect(name)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn parse_hex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "{s}");
    core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

/// Makes a key with `myco keygen --json` and returns its public key.
fn keygen(dir: &TempDir, name: &str) -> PublicKey {
    let json = myco_ok(dir, &["keygen", "--out", name, "--json"]);
    PublicKey(parse_hex32(&json_field(&json, "public_key")))
}

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
    assert_eq!(json_field(&json, "node_id"), public.node_id().to_string());
    let text = myco_ok(&dir, &["pubkey", "--key", "node.key"]);
    assert_eq!(text_field(&text, "public_key"), hex(&public.0));
    assert_eq!(text_field(&text, "node_id"), public.node_id().to_string());
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
        assert_eq!(json_field(&json, "node_id"), node.node_id().to_string());
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
    let mut left: Vec<_> = fs::read_dir(&dir.0)
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
    assert_eq!(listed, ["keygen", "pubkey", "cert", "revoke"]);
    let flags: [(&str, &[&str]); 4] = [
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
    ];
    for (command, names) in flags {
        let help = myco_ok(&dir, &[command, "--help"]);
        assert!(help.starts_with(&format!("Usage: myco {command} ")));
        for name in names {
            assert!(help.contains(name), "{command} --help lacks {name}");
        }
    }
    assert!(myco_ok(&dir, &["--version"]).starts_with("myco "));
    assert_eq!(myco(&dir, &[]).status.code(), Some(2));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
