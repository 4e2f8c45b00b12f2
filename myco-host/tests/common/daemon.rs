#![allow(dead_code)] // shared by several test binaries; each uses a part
//! Runs the real `myco-d` binary for a test: keys and a certificate made in-process, its own
//! state directory and socket, a tiny HTTP client, and signed entries to deploy.

use super::temp_dir::TempDir;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::crypto::cert::certify;
use myco_core::crypto::{sign_entry_body, SigningKey};
use myco_core::schema::entry::{encode_entry, Arch, EntryBody, ServiceSpec, Source, Version};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_myco-d");

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn operator() -> SigningKey {
    let mut seed = [0u8; 32];
    seed[0] = 1;
    seed[31] = std::process::id() as u8 | 1;
    SigningKey::from_seed(seed).unwrap()
}

/// One daemon's files and process.
pub struct Daemon {
    pub dir: TempDir,
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub args: Vec<String>,
}

impl Daemon {
    /// Writes a node key and a certificate signed by `operator` into a fresh directory.
    pub fn new(name: &str, operator: &SigningKey, node_seed: u8) -> Daemon {
        let dir = TempDir::new(name);
        let node = SigningKey::from_seed([node_seed; 32]).unwrap();
        let key = dir.path().join("node.key");
        fs::write(&key, format!("{}\n", hex(&[node_seed; 32]))).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let cert = certify(operator, &node.public_key(), 0, Arch::Any, false, 0);
        fs::write(dir.path().join("node.cert"), &cert).unwrap();
        let socket = dir.path().join("api.sock");
        let state = dir.path().join("state");
        let p = |p: &Path| p.display().to_string();
        let args = vec![
            "--operator".into(),
            hex(&operator.public_key().0),
            "--key".into(),
            p(&key),
            "--cert".into(),
            p(&dir.path().join("node.cert")),
            "--state-dir".into(),
            p(&state),
            "--socket".into(),
            p(&socket),
            "--listen".into(),
            "127.0.0.1:0".into(),
            // Units go nowhere unless a test asks for the executor (tests/executor.rs).
            "--executor".into(),
            "none".into(),
        ];
        Daemon {
            dir,
            child: None,
            socket,
            state,
            args,
        }
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(DAEMON);
        c.args(&self.args).args(extra);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    /// Starts the daemon (stderr to `log`) and waits for its API.
    pub fn start(&mut self, mut command: Command) {
        let log = fs::File::create(self.dir.path().join("log")).unwrap();
        let child = command.stderr(log).spawn().expect("myco-d starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while http(&self.socket, "GET", "/health", b"").is_err() {
            assert!(
                Instant::now() < deadline,
                "myco-d did not answer /health: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.socket, "GET", path, b"").expect("the API answers")
    }

    pub fn deploy(&self, entry: &[u8]) -> (u16, String) {
        http(&self.socket, "POST", "/deploy", entry).expect("the API answers")
    }

    /// The value of an unlabelled sample in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        let line = text.lines().find(|l| l.split(' ').next() == Some(name));
        let line = line.unwrap_or_else(|| panic!("{name} not in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// A stand-in `systemctl`: records each command line in `calls` beside it and reports every
/// unit `show` asks about as running. The cluster tests (`tests/src/lib.rs`) use it too.
pub const FAKE_SYSTEMCTL: &str = include_str!("fake-systemctl.sh");

/// A stand-in `journalctl`: prints its arguments; with `--follow`, writes its pid to
/// `journal.pid` beside it and a `tick` line every 100 ms until killed.
pub const FAKE_JOURNALCTL: &str = r#"#!/bin/sh
echo "journal of $*"
case "$*" in
*--follow*)
    echo $$ > "$(dirname "$0")/journal.pid"
    while :; do echo tick; sleep 0.1; done
    ;;
esac
"#;

impl Daemon {
    /// The daemon's command with the executor on: units go to `<dir>/units`, and the stand-in
    /// `systemctl` and `journalctl` (written into the directory) run instead of the real ones.
    /// Gossip on `addr` instead of 127.0.0.1:0 (an IPv6 box, say).
    pub fn set_listen(&mut self, addr: &str) {
        let at = self
            .args
            .iter()
            .position(|a| a == "--listen")
            .expect("--listen is set")
            + 1;
        self.args[at] = addr.into();
    }

    pub fn executor_command(&self, extra: &[&str]) -> Command {
        let tool = |name: &str, text: &str| {
            let path = self.dir.path().join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let systemctl = tool("systemctl", FAKE_SYSTEMCTL);
        let journalctl = tool("journalctl", FAKE_JOURNALCTL);
        let args = self
            .args
            .iter()
            .filter(|a| *a != "--executor" && *a != "none");
        let mut command = Command::new(DAEMON);
        command
            .args(args)
            .args(["--reserve-bytes", "0", "--executor", "systemd"])
            .args(extra);
        command.arg("--journalctl").arg(journalctl);
        command.arg("--unit-dir").arg(self.dir.path().join("units"));
        command.arg("--systemctl").arg(systemctl);
        command.stdin(Stdio::null()).stdout(Stdio::null());
        command
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// Encodes `body` and signs it with `operator`.
fn signed(operator: &SigningKey, body: &EntryBody<'_>) -> Vec<u8> {
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let n = encode_entry(body, &[0; 64], &mut out).unwrap();
    let signature = sign_entry_body(operator, &out[..n - 64]);
    out[n - 64..n].copy_from_slice(&signature);
    out[..n].to_vec()
}

fn version(operator: &SigningKey, clock: u64) -> Version {
    Version {
        clock,
        key_id: operator.public_key().key_id(),
    }
}

/// A signed entry for service `name` that runs `/usr/bin/true`.
pub fn entry(operator: &SigningKey, name: &str, clock: u64) -> Vec<u8> {
    let spec = ServiceSpec::minimal(Source::Exec {
        path: "/usr/bin/true",
    });
    signed(
        operator,
        &EntryBody {
            name,
            version: version(operator, clock),
            spec: Some(spec),
        },
    )
}

/// A signed entry for service `name` that declares TCP port `port`.
pub fn entry_with_port(operator: &SigningKey, name: &str, clock: u64, port: u16) -> Vec<u8> {
    let mut spec = ServiceSpec::minimal(Source::Exec {
        path: "/usr/bin/true",
    });
    let tcp = myco_core::schema::entry::Port {
        number: port,
        protocol: myco_core::schema::entry::Protocol::Tcp,
    };
    spec.ports.push(tcp).unwrap();
    signed(
        operator,
        &EntryBody {
            name,
            version: version(operator, clock),
            spec: Some(spec),
        },
    )
}

/// A signed tombstone for service `name`.
pub fn tombstone(operator: &SigningKey, name: &str, clock: u64) -> Vec<u8> {
    signed(
        operator,
        &EntryBody {
            name,
            version: version(operator, clock),
            spec: None,
        },
    )
}

/// Polls `check` every 50 ms until it holds or `seconds` pass.
pub fn wait_until(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
