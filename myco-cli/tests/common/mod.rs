//! What the integration tests share: a temporary directory per test, running the built `myco`,
//! and reading its output. Each test binary uses a different subset, hence `dead_code`.
#![allow(dead_code)]

use myco_core::crypto::PublicKey;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh directory named after the test, removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("myco-cli-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The stand-in `nix` the tests lock flakes with: it locks any reference to one fixed commit
/// (`STAND_IN_REV`) without fetching, so tests of signing need neither Nix nor a network.
pub const STAND_IN_NIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/nix/stand-in/locked");
pub const STAND_IN_REV: &str = "152b279ae9728ebd2a539847576be4e2e8a2f101";

pub fn myco(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_myco"))
        .args(args)
        .current_dir(&dir.0)
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

/// The raw value of `key` in the one-line JSON object `json`, quotes stripped.
pub fn json_field(json: &str, key: &str) -> String {
    let start = json.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"').to_string()
}

/// The value after `name` in human output (`name  value` lines).
pub fn text_field(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name));
    line.expect(name)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
