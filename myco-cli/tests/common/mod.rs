//! What the CLI's integration tests share beyond myco-testkit (temporary directories, JSON and
//! text fields, the scripted stand-in daemon): running the built `myco` and reading its output,
//! and a manifest using every field. Each test binary uses a different subset, hence `dead_code`.
#![allow(dead_code, unused_imports)]

use myco_core::crypto::PublicKey;
pub use myco_testkit::hex;
pub use myco_testkit::json::{json_field, text_field};
pub use myco_testkit::TempDir;
use std::process::{Command, Output};

/// The stand-in `nix` the tests lock flakes with: it locks any reference to one fixed commit
/// (`STAND_IN_REV`) without fetching, so tests of signing need neither Nix nor a network.
pub const STAND_IN_NIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/nix/stand-in/locked");
pub const STAND_IN_REV: &str = "152b279ae9728ebd2a539847576be4e2e8a2f101";

pub fn myco(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_myco"))
        .args(args)
        .current_dir(dir.path())
        .env("MYCO_NIX", STAND_IN_NIX)
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs a command that must succeed and returns its stdout.
pub fn myco_ok(dir: &TempDir, args: &[&str]) -> String {
    let out = myco(dir, args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

pub fn parse_hex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "{s}");
    core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

/// Makes a key with `myco keygen --json` and returns its public key.
pub fn keygen(dir: &TempDir, name: &str) -> PublicKey {
    let json = myco_ok(dir, &["keygen", "--out", name, "--json"]);
    PublicKey(parse_hex32(&json_field(&json, "public_key")))
}

/// A manifest using every field, with env written out of order.
pub const FULL_MANIFEST: &str = r#"{
  "name": "web",
  "flake": "git+https://host/repo?ref=main",
  "attr": "server",
  "args": ["--port", "8080"],
  "env": {"MODE": "prod", "LEVEL": "info"},
  "migrations": [["/bin/migrate", "--up"]],
  "arch": "x86_64",
  "gpu": true,
  "zone": 3,
  "replicas": 2,
  "ports": [{"port": 8080, "protocol": "tcp"}, {"port": 53, "protocol": "udp"}]
}
"#;
