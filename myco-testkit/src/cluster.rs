//! A cluster of real daemons for end-to-end tests: one temporary directory holding the operator
//! key, and per node a key, a certificate, a state directory, an API socket and a stderr log. Keys
//! come from fixed seeds named after the test; certificates are made with the real `myco`.
//! Daemons gossip on loopback only: each listens on its own address in 127/8 (an IPv4 address
//! binds IPv4 only), on a port the kernel picked, so that two tests running at once cannot collide
//! even by chance.
//!
//! Invariants: every daemon a test starts is killed when its `Cluster` drops, even when the test
//! panics, and it dies with the test process too (PR_SET_PDEATHSIG); a failed test keeps its
//! directory and prints every daemon's log, so the failure can be read after the fact
//! (`MYCO_TESTS_KEEP=1` keeps the directories of passing tests too).

use crate::daemon::READY_TIMEOUT;
use crate::dir::TempDir;
use crate::http::{curl, raw_request, Answer};
use crate::json::{services_of, ServiceRow};
use crate::metrics::metric;
use crate::run::{run, Run};
use crate::wait::{wait_exit, wait_until};
use crate::{bins, keys, FAKE_SYSTEMCTL, FAKE_SYSTEMD_RUN};
use serde_json::Value;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Log lines of each daemon printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// A key of a cluster's test, in a key file (`Cluster::keygen`).
#[derive(Clone, Debug)]
pub struct Key {
    pub path: PathBuf,
    pub public_hex: String,
    /// How the cluster names a node with this key: `/nodes` and `/health` show it in hex.
    pub node_id: String,
}

/// How one node is made and started.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Who signs the node's certificate; default: the cluster's operator.
    pub cert_signer: Option<Key>,
    /// The `--operator` the daemon is given; default: the cluster's operator.
    pub operator: Option<Key>,
    /// `myco cert --issued-at`.
    pub issued_at: u64,
    /// `myco-d --revocation`.
    pub revocation: Option<PathBuf>,
    /// `myco-d --io`; default: auto.
    pub io: Option<&'static str>,
    /// Nodes (by index) to `--join`; default: up to three nodes made before this one.
    pub join: Option<Vec<usize>>,
    /// Run the executor with a stand-in systemctl that reports every unit running and a stand-in
    /// journalctl (`FAKE_JOURNALCTL`; units go to the node's own directory); default:
    /// `--executor none`.
    pub executor: bool,
    /// Answer `*.myco` DNS on the node's own address, at a free port (`Daemon::dns`); default:
    /// `--dns off`.
    pub dns: bool,
    /// Accept `myco proxy` tunnels on the node's own address, at a free TCP port
    /// (`Daemon::proxy`); default: no `--proxy-listen`.
    pub proxy: bool,
    /// `myco cert --zone`; default 0.
    pub zone: u8,
    /// `myco cert --bridge all`: the node may bridge its zone to every other.
    pub bridge: bool,
    /// Nodes (by index) to give as `--bridge-seed`.
    pub bridge_seeds: Vec<usize>,
    /// `myco-d --profile`; default: none given (`lan`).
    pub profile: Option<&'static str>,
}

/// The member and the change of a daemon's `member ID WHAT` log line (`is dead`, `is suspect`,
/// ...) after its `<N>` priority prefix; None for any other line.
pub fn member_event(line: &str) -> Option<(&str, &str)> {
    line.get(3..)?.strip_prefix("member ")?.split_once(' ')
}

/// A port free for UDP on `addr`'s IP (bound and released; a daemon binds it next).
/// A TCP port free on `addr`'s address now.
fn free_tcp_port_on(addr: SocketAddr) -> SocketAddr {
    let probe = std::net::TcpListener::bind((addr.ip(), 0)).expect("a free port on loopback");
    probe.local_addr().expect("bound")
}

fn free_port_on(addr: SocketAddr) -> SocketAddr {
    let probe = UdpSocket::bind((addr.ip(), 0)).expect("a free port on loopback");
    probe.local_addr().expect("bound")
}

/// One `myco-d`: its files, its address and, while running, its process.
pub struct Daemon {
    pub index: usize,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub addr: SocketAddr,
    /// Where it answers DNS (`NodeOptions::dns`).
    pub dns: Option<SocketAddr>,
    /// Where it accepts tunnels (`NodeOptions::proxy`).
    pub proxy: Option<SocketAddr>,
    pub key: Key,
    pub cert: PathBuf,
    /// stderr of every run, appended, each run after a `=== start N ===` line.
    pub log: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    /// Where the current run's lines start in `log`.
    run_offset: u64,
    starts: u32,
}

impl Daemon {
    /// The daemon's command line, for a run the test manages itself (a second daemon on the same
    /// state directory, say).
    pub fn command(&self) -> Command {
        let mut command = Command::new(bins::daemon());
        command.args(&self.args);
        command
    }

    /// Starts the process; does not wait for it to serve.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.index
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        writeln!(log, "=== start {} ===", self.starts).expect("log file");
        self.run_offset = log.metadata().expect("log file").len();
        let mut command = self.command();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // The daemon dies with the thread that spawned it, so a test process killed by a timeout
        // leaves no daemons behind. Tests spawn from their own thread, which outlives the cluster.
        crate::run::die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bins::daemon().display()));
        self.child = Some(child);
    }

    /// Waits until `/health` answers 200; panics with the daemon's log if it exits or times out.
    pub fn wait_ready(&mut self) -> Duration {
        let start = Instant::now();
        loop {
            let health = raw_request(
                &self.socket,
                b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
                Duration::from_secs(1),
            );
            if health.is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
                return start.elapsed();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("waitpid"))
            {
                self.child = None;
                panic!(
                    "node {} exited with {status} before it was ready; its log:\n{}",
                    self.index,
                    self.run_log()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "node {} did not answer /health within {} s; its log:\n{}",
                    self.index,
                    READY_TIMEOUT.as_secs(),
                    self.run_log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the daemon and waits until it serves.
    pub fn start(&mut self) -> Duration {
        self.spawn();
        self.wait_ready()
    }

    /// Waits up to `timeout` for a daemon expected to stop by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_exit(
            self.child.as_mut().expect("the daemon was started"),
            timeout,
        )?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, as a crash or a power cut would stop it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGTERM, SIGINT) to the running daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the daemon is running");
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({}, {signal}) failed", child.id());
    }

    /// Started, and not stopped or killed since by the harness (it may have exited on its own:
    /// `is_running` asks the kernel).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("waitpid").is_none())
    }

    /// Everything the daemon wrote to stderr, all runs.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the current (or last) run wrote to stderr.
    pub fn run_log(&self) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        let from = (self.run_offset as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// `GET path` through curl.
    #[track_caller]
    pub fn get(&self, path: &str) -> Answer {
        curl(&self.socket, &[], path)
    }

    /// `GET path`, which must answer 200 with JSON.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(
            answer.status, 200,
            "node {} GET {path}: {answer:?}",
            self.index
        );
        answer.json()
    }

    /// `GET /metrics` as text.
    #[track_caller]
    pub fn metrics(&self) -> String {
        let answer = self.get("/metrics");
        assert_eq!(
            answer.status, 200,
            "node {} GET /metrics: {answer:?}",
            self.index
        );
        answer.body
    }

    /// One series of `/metrics`; panics if the daemon does not export it.
    #[track_caller]
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        metric(&text, series)
            .unwrap_or_else(|| panic!("node {} exports no {series}:\n{text}", self.index))
    }

    /// `/services` as (name, clock, key_id, deleted), sorted by name.
    #[track_caller]
    pub fn services(&self) -> Vec<ServiceRow> {
        services_of(&self.get_json("/services"))
    }

    /// `/nodes` as (id, state); the first row is this node.
    #[track_caller]
    pub fn nodes(&self) -> Vec<(String, String)> {
        let json = self.get_json("/nodes");
        let rows = json["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("/nodes has no list: {json}"));
        rows.iter()
            .map(|n| {
                (
                    n["id"].as_str().expect("id").to_string(),
                    n["state"].as_str().expect("state").to_string(),
                )
            })
            .collect()
    }

    /// The state node `id` has in this node's `/nodes`, if it is listed.
    #[track_caller]
    pub fn state_of(&self, id: &str) -> Option<String> {
        self.nodes()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An operator, its nodes and their daemons, in one temporary directory.
pub struct Cluster {
    pub daemons: Vec<Daemon>,
    pub operator: Key,
    pub dir: TempDir,
    /// The test's name, which the seeds of its keys start with.
    test: String,
    /// 127.A.B.x: A and B from the process id and a counter, x the node, so clusters of tests
    /// running at once almost never share a network (see `new`).
    net: [u8; 2],
}

impl Cluster {
    /// An empty cluster: the directory and the operator key.
    pub fn new(test: &str) -> Cluster {
        static NETS: AtomicU32 = AtomicU32::new(0);
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        // Spreads (process, cluster) over the 250 x 250 networks; two clusters that still share
        // one also need the kernel to hand both the same free port to collide.
        let mix = (u64::from(std::process::id()) << 16 | u64::from(n))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 40;
        let dir = TempDir::new(test);
        let mut cluster = Cluster {
            daemons: Vec::new(),
            operator: Key {
                path: PathBuf::new(),
                public_hex: String::new(),
                node_id: String::new(),
            },
            dir,
            test: test.to_string(),
            net: [1 + (mix % 250) as u8, 1 + (mix / 250 % 250) as u8],
        };
        cluster.operator = cluster.keygen("operator");
        cluster
    }

    /// An empty cluster on the network `127.A.B.0/24` given as `[A, B]`, for a harness that
    /// installs its own nftables rules on that network (`make bench-peers`).
    pub fn on_network(test: &str, net: [u8; 2]) -> Cluster {
        let mut cluster = Cluster::new(test);
        cluster.net = net;
        cluster
    }

    /// `n` nodes with default options, all started and serving.
    pub fn started(test: &str, n: usize) -> Cluster {
        let mut cluster = Cluster::new(test);
        for _ in 0..n {
            cluster.add(NodeOptions::default());
        }
        cluster.start_all();
        cluster
    }

    /// Runs `myco ARGS` in the cluster's directory.
    pub fn myco(&self, args: &[&str]) -> Run {
        let mut command = Command::new(bins::cli());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MYCO_SOCKET");
        run(command)
    }

    /// The key `name` of this test: a key file written from a fixed seed (the test's name and
    /// `name`, so every run of a test has the same keys and two tests never share one), described
    /// by `myco pubkey --json`.
    pub fn keygen(&self, name: &str) -> Key {
        let path = self.dir.join(format!("{name}.key"));
        keys::write_key_file(&path, &keys::seed(&format!("{}/{name}", self.test)));
        let path_text = path.to_str().expect("UTF-8 temp path");
        let json = self.myco(&["pubkey", "--key", path_text, "--json"]).json();
        let node_id = json["node_id"]
            .as_str()
            .unwrap_or_else(|| panic!("pubkey --json has no node_id: {json}"));
        Key {
            public_hex: json["public_key"].as_str().expect("public_key").to_string(),
            node_id: node_id.to_string(),
            path,
        }
    }

    /// Signs a certificate for `node` with `signer`'s key, for zone 0.
    pub fn cert(&self, signer: &Key, node: &Key, issued_at: u64, out: &Path) {
        self.cert_in(signer, node, issued_at, (0, false), out);
    }

    /// Signs a certificate for `node` with `signer`'s key, for `zone`, bridge-capable to every
    /// zone if `bridge`.
    pub fn cert_in(&self, signer: &Key, node: &Key, issued_at: u64, zone: (u8, bool), out: &Path) {
        let arch = std::env::consts::ARCH;
        let (issued, zone_text) = (issued_at.to_string(), zone.0.to_string());
        let mut args = vec![
            "cert",
            "--operator-key",
            signer.path.to_str().unwrap(),
            "--node-pubkey",
            &node.public_hex,
            "--zone",
            &zone_text,
            "--arch",
            arch,
            "--issued-at",
            &issued,
            "--out",
            out.to_str().unwrap(),
        ];
        if zone.1 {
            args.extend(["--bridge", "all"]);
        }
        self.myco(&args).ok();
    }

    /// Makes node `len()` (key, certificate, address, command line) without starting it.
    pub fn add(&mut self, options: NodeOptions) -> usize {
        let index = self.daemons.len();
        let name = format!("n{index}");
        let key = self.keygen(&name);
        let cert = self.dir.join(format!("{name}.cert"));
        let signer = options
            .cert_signer
            .clone()
            .unwrap_or_else(|| self.operator.clone());
        let zone = (options.zone, options.bridge);
        self.cert_in(&signer, &key, options.issued_at, zone, &cert);
        let addr = self.free_addr(index);
        let operator = options.operator.as_ref().unwrap_or(&self.operator);
        let state_dir = self.dir.join(&name);
        let socket = self.dir.join(format!("{name}.sock"));
        let mut args: Vec<OsString> = vec![
            "--operator".into(),
            operator.public_hex.clone().into(),
            "--key".into(),
            key.path.clone().into(),
            "--cert".into(),
            cert.clone().into(),
            "--state-dir".into(),
            state_dir.clone().into(),
            "--socket".into(),
            socket.clone().into(),
            "--listen".into(),
            addr.to_string().into(),
            "--reserve-bytes".into(),
            "1048576".into(),
        ];
        args.extend(self.executor_args(&name, options.executor));
        let dns = options.dns.then(|| free_port_on(addr));
        args.push("--dns".into());
        args.push(dns.map_or("off".into(), |a| a.to_string()).into());
        // No binary cache: the default [::]:7947 is one port for the whole machine.
        args.push("--cache-listen".into());
        args.push("off".into());
        let proxy = options.proxy.then(|| free_tcp_port_on(addr));
        if let Some(proxy) = proxy {
            args.push("--proxy-listen".into());
            args.push(proxy.to_string().into());
        }
        args.extend(self.peer_args(&options, index));
        if let Some(revocation) = &options.revocation {
            args.push("--revocation".into());
            args.push(revocation.clone().into());
        }
        if let Some(io) = options.io {
            args.push("--io".into());
            args.push(io.into());
        }
        if let Some(profile) = options.profile {
            args.push("--profile".into());
            args.push(profile.into());
        }
        self.daemons.push(Daemon {
            index,
            state_dir,
            socket,
            addr,
            dns,
            proxy,
            key,
            cert,
            log: self.dir.join(format!("{name}.log")),
            args,
            child: None,
            run_offset: 0,
            starts: 0,
        });
        index
    }

    /// `--join` for the nodes `options` names (default: up to three made before node `index`) and
    /// `--bridge-seed` for its bridge seeds.
    fn peer_args(&self, options: &NodeOptions, index: usize) -> Vec<OsString> {
        let join = options.join.clone();
        let join = join.unwrap_or_else(|| (0..index.min(3)).collect());
        let joins = join.into_iter().map(|j| ("--join", j));
        let seeds = options.bridge_seeds.iter().map(|&j| ("--bridge-seed", j));
        let mut args = Vec::new();
        for (flag, j) in joins.chain(seeds) {
            args.push(flag.into());
            args.push(self.daemons[j].addr.to_string().into());
        }
        args
    }

    /// No systemd here: these tests prove the store, gossip and API (the testbed, in
    /// tests/testbed, runs the executor under a real systemd), so the executor is off, or runs a
    /// stand-in systemctl when a test needs services reported running.
    fn executor_args(&self, name: &str, executor: bool) -> Vec<OsString> {
        if !executor {
            return vec!["--executor".into(), "none".into()];
        }
        let systemctl = self.write(&format!("{name}-systemctl"), FAKE_SYSTEMCTL);
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
        let systemd_run = self.write(&format!("{name}-systemd-run"), FAKE_SYSTEMD_RUN);
        fs::set_permissions(&systemd_run, fs::Permissions::from_mode(0o755)).unwrap();
        let journalctl = self.write(&format!("{name}-journalctl"), crate::FAKE_JOURNALCTL);
        fs::set_permissions(&journalctl, fs::Permissions::from_mode(0o755)).unwrap();
        let units = self.dir.join(format!("{name}-units"));
        // A store that does not exist: no test collects the machine's own Nix store.
        let store = self.dir.join(format!("{name}-nix-store"));
        vec![
            "--executor".into(),
            "systemd".into(),
            "--unit-dir".into(),
            units.into(),
            "--systemctl".into(),
            systemctl.into(),
            "--systemd-run".into(),
            systemd_run.into(),
            "--journalctl".into(),
            journalctl.into(),
            "--store-dir".into(),
            store.into(),
        ]
    }

    /// The cluster's loopback network, `127.A.B.0/24`: every node's address is in it, and no
    /// other cluster's (a `loss::Loss` on it touches this cluster alone).
    pub fn network(&self) -> String {
        format!("127.{}.{}.0/24", self.net[0], self.net[1])
    }

    /// An address for node `index` on loopback with a port the kernel had free.
    fn free_addr(&self, index: usize) -> SocketAddr {
        assert!(index < 250, "one cluster has at most 250 nodes");
        let ip = Ipv4Addr::new(127, self.net[0], self.net[1], 1 + index as u8);
        let probe = UdpSocket::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot bind {ip}:0 on loopback: {e}"));
        probe.local_addr().expect("bound")
    }

    /// Spawns every node that is not running, then waits for each to serve.
    pub fn start_all(&mut self) {
        for d in self.daemons.iter_mut().filter(|d| d.child.is_none()) {
            d.spawn();
        }
        for d in &mut self.daemons {
            d.wait_ready();
        }
    }

    /// Writes `text` to a file in the cluster's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// `myco deploy MANIFEST --operator-key OPERATOR --socket (node) --json`; returns the answer.
    #[track_caller]
    pub fn deploy(&self, node: usize, manifest: &Path) -> Value {
        self.myco(&[
            "deploy",
            manifest.to_str().unwrap(),
            "--operator-key",
            self.operator.path.to_str().unwrap(),
            "--socket",
            self.daemons[node].socket.to_str().unwrap(),
            "--json",
        ])
        .json()
    }

    /// Waits until every running node in `nodes` lists the same services as `expected`.
    #[track_caller]
    pub fn wait_services(
        &self,
        nodes: &[usize],
        expected: &[ServiceRow],
        timeout: Duration,
        what: &str,
    ) -> Duration {
        wait_until(timeout, what, || {
            nodes
                .iter()
                .all(|&i| self.daemons[i].services() == expected)
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.daemons.iter().map(|d| d.key.node_id.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            d.kill();
        }
        if !thread::panicking() {
            return;
        }
        for d in &self.daemons {
            let text = d.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "----- node {} ({}, {}), last {} lines of {} -----",
                d.index,
                d.addr,
                d.key.node_id,
                tail.len(),
                d.log.display()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::member_event;

    /// The daemon's lines as it writes them to stderr: a `<N>` priority, then the message.
    #[test]
    fn member_lines_give_the_member_and_the_change() {
        let dead = "<6>member 00112233aabbccdd is dead";
        assert_eq!(member_event(dead), Some(("00112233aabbccdd", "is dead")));
        let suspect = "<5>member 00112233aabbccdd is suspect";
        assert_eq!(
            member_event(suspect),
            Some(("00112233aabbccdd", "is suspect"))
        );
        assert_eq!(member_event("<6>deploy web applied"), None);
        assert_eq!(member_event("<6>a member 00 is dead"), None);
        assert_eq!(member_event(""), None);
    }
}
