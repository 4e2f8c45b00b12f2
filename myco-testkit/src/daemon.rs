//! One real `myco-d` for a test of the daemon alone: a node key from a fixed seed and a
//! certificate made in-process, its own directory, state directory and socket, and the API
//! through the kit's HTTP client. Its stderr goes to `log` in its directory. The process is
//! killed when the `Daemon` drops.

use crate::dir::TempDir;
use crate::http::{healthy, request};
use crate::metrics::metric;
use crate::wait::wait_until;
use crate::{bins, hex, keys, FAKE_JOURNALCTL, FAKE_SYSTEMCTL, FAKE_SYSTEMD_RUN};
use myco_core::crypto::cert::certify;
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A daemon must answer `/health` within this after it was spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One daemon's files and process.
pub struct Daemon {
    pub dir: TempDir,
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub args: Vec<String>,
}

impl Daemon {
    /// Writes a node key (seed `[node_seed; 32]`) and a certificate signed by `operator` into a
    /// fresh directory named after `name`.
    pub fn new(name: &str, operator: &SigningKey, node_seed: u8) -> Daemon {
        let dir = TempDir::new(name);
        let node = SigningKey::from_seed([node_seed; 32]).expect("a non-zero seed");
        let key = dir.join("node.key");
        keys::write_key_file(&key, &[node_seed; 32]);
        let cert = certify(operator, &node.public_key(), 0, Arch::Any, false, 0);
        fs::write(dir.join("node.cert"), cert).expect("the directory is writable");
        let socket = dir.join("api.sock");
        let state = dir.join("state");
        let p = |p: &Path| p.display().to_string();
        let args = vec![
            "--operator".into(),
            hex(&operator.public_key().0),
            "--key".into(),
            p(&key),
            "--cert".into(),
            p(&dir.join("node.cert")),
            "--state-dir".into(),
            p(&state),
            "--socket".into(),
            p(&socket),
            "--listen".into(),
            "127.0.0.1:0".into(),
            // Units go nowhere unless a test asks for the executor (`executor_command`).
            "--executor".into(),
            "none".into(),
            // No binary cache on the default [::]:7947 unless a test asks (`set_cache_listen`).
            "--cache-listen".into(),
            "off".into(),
        ];
        Daemon {
            dir,
            child: None,
            socket,
            state,
            args,
        }
    }

    /// The daemon's command line with `extra` flags after it; stdin and stdout closed.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(bins::daemon());
        c.args(&self.args).args(extra);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

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

    /// Serve the binary cache on `addr` instead of not at all.
    pub fn set_cache_listen(&mut self, addr: &str) {
        let at = self
            .args
            .iter()
            .position(|a| a == "--cache-listen")
            .expect("--cache-listen is set")
            + 1;
        self.args[at] = addr.into();
    }

    /// The port the binary cache listens on, as the log names it once started; `None` before.
    pub fn cache_port(&self) -> Option<u16> {
        self.log()
            .split("binary cache on http://")
            .nth(1)?
            .split(',')
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    }

    /// The daemon's command with the executor on: units go to `<dir>/units`, the audit log to
    /// `<dir>/audit.log`, and the stand-in `systemctl` and `journalctl` (written into the
    /// directory) run instead of the real ones.
    pub fn executor_command(&self, extra: &[&str]) -> Command {
        let tool = |name: &str, text: &str| {
            let path = self.dir.write(name, text);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
            path
        };
        let systemctl = tool("systemctl", FAKE_SYSTEMCTL);
        let journalctl = tool("journalctl", FAKE_JOURNALCTL);
        self.executor_command_with(extra, (&systemctl, &journalctl))
    }

    /// As [`Daemon::executor_command`], with this `systemctl` and `journalctl` (a test of
    /// `--privileged` gives the daemon traps, and the helper the stand-ins).
    pub fn executor_command_with(
        &self,
        extra: &[&str],
        (systemctl, journalctl): (&Path, &Path),
    ) -> Command {
        let systemd_run = self.dir.write("systemd-run", FAKE_SYSTEMD_RUN);
        fs::set_permissions(&systemd_run, fs::Permissions::from_mode(0o755)).expect("chmod");
        let args = self
            .args
            .iter()
            .filter(|a| *a != "--executor" && *a != "none");
        let mut command = Command::new(bins::daemon());
        command
            .args(args)
            .args(["--reserve-bytes", "0", "--executor", "systemd"])
            .args(extra);
        command.arg("--journalctl").arg(journalctl);
        command.arg("--unit-dir").arg(self.dir.join("units"));
        command.arg("--systemctl").arg(systemctl);
        command.arg("--systemd-run").arg(systemd_run);
        command.arg("--audit-log").arg(self.dir.join("audit.log"));
        // A store that does not exist: no test collects the machine's own Nix store.
        command.arg("--store-dir").arg(self.dir.join("nix-store"));
        command.stdin(Stdio::null()).stdout(Stdio::null());
        command
    }

    /// Starts the daemon (stderr to `log`) and waits until its API answers `/health`.
    pub fn start(&mut self, mut command: Command) {
        let log = fs::File::create(self.dir.join("log")).expect("the directory is writable");
        let child = command.stderr(log).spawn().expect("myco-d starts");
        self.child = Some(child);
        let what = format!(
            "myco-d answers /health (log: {})",
            self.dir.join("log").display()
        );
        wait_until(READY_TIMEOUT, &what, || healthy(&self.socket));
    }

    /// What the daemon wrote to stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `GET path`: the status and the body.
    #[track_caller]
    pub fn get(&self, path: &str) -> (u16, String) {
        let answer = request(&self.socket, "GET", path, b"").expect("the API answers");
        (answer.status, answer.body)
    }

    /// `POST /deploy` with `entry`: the status and the body.
    #[track_caller]
    pub fn deploy(&self, entry: &[u8]) -> (u16, String) {
        let answer = request(&self.socket, "POST", "/deploy", entry).expect("the API answers");
        (answer.status, answer.body)
    }

    /// The gossip address this daemon listens on, from its own row (the first) in `/nodes`: what
    /// another daemon's `--join` takes.
    #[track_caller]
    pub fn listen_addr(&self) -> String {
        let (_, nodes) = self.get("/nodes");
        let at = nodes
            .find("\"address\":\"")
            .expect("the first row is this node")
            + 11;
        nodes[at..]
            .split('"')
            .next()
            .expect("an address")
            .to_owned()
    }

    /// The value of one series of `/metrics`; panics if the daemon does not export it.
    #[track_caller]
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        metric(&text, series).unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
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
