//! The daemons under measurement: keys from fixed seeds and certificates made in-process, one
//! directory per node under one temporary directory, 127.0.0.1 only. Small clusters start
//! together; large ones one at a time. Dropping the cluster stops every daemon (SIGTERM, then
//! SIGKILL if it lingers) and removes the directory.

use crate::live::{check_interrupted, live, nap, Rng};
use crate::procfs::cpu_ns;
use crate::report::{max, mean, median_u64, min, sum};
use crate::{
    Result, CONVERGE_POLL, CONVERGE_POLL_LARGE, CONVERGE_TIMEOUT, CONVERGE_TIMEOUT_LARGE,
    FORM_POLL, FORM_POLL_LARGE, FORM_TIMEOUT, FORM_TIMEOUT_PER_NODE, JOINS_RANDOM, NODES_DEFAULT,
    PROGRESS_EVERY, QUIET_FOR, QUIET_TIMEOUT, READY_TIMEOUT, RESERVE_BYTES, STAGGER, STOP_TIMEOUT,
    VISIBLE_POLL, VISIBLE_TIMEOUT, VISIBLE_TIMEOUT_LARGE,
};
use myco_core::config::CERT_BYTES_MAX;
use myco_core::crypto::cert::issue_cert;
use myco_core::crypto::{CertBody, SigningKey};
use myco_core::schema::entry::Arch;
use myco_testkit::cluster::member_event;
use myco_testkit::metrics::{family_sum, metric};
use myco_testkit::{hex, http as kit_http, json, keys, TempDir};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What systemd would hand a daemon it starts; the bench's daemons must not inherit it from a
/// bench that itself runs under systemd.
const SYSTEMD_ENV: [&str; 7] = [
    "NOTIFY_SOCKET",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "LISTEN_FDS",
    "LISTEN_PID",
    "WATCHDOG_USEC",
];

pub struct Node {
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    key: PathBuf,
    cert: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The daemons and their directory; dropping it stops them and removes the directory.
pub struct Cluster {
    pub dir: TempDir,
    daemon: PathBuf,
    pub operator: SigningKey,
    pub nodes: Vec<Node>,
    large: bool,
    /// Bytes of each node's stderr already read by `log_events`.
    log_read: Vec<usize>,
}

/// Per kind of member event (`is dead`, ...): the log lines and the distinct members named.
pub type MemberEvents = BTreeMap<String, (usize, std::collections::BTreeSet<String>)>;

/// How formation went: per node, when it first listed every other node alive, and its
/// `peers_alive` at the end; when all did at once.
pub struct Formation {
    pub all_at: Option<Duration>,
    pub first_complete: Vec<Option<Duration>>,
    pub alive: Vec<u64>,
    pub waited: Duration,
    pub poll: Duration,
}

/// How the bulk deploys spread: per node, when it first held them all; the counts at the end.
pub struct Converge {
    pub all_at: Option<Duration>,
    pub reached: Vec<Option<Duration>>,
    pub counts: Vec<u64>,
    pub waited: Duration,
    pub poll: Duration,
}

impl Cluster {
    /// Makes the keys, certificates and directories; starts nothing.
    pub fn create(daemon: &Path, count: usize) -> Result<Cluster> {
        let dir = TempDir::new("daemon-bench");
        live().dir = Some(dir.path().to_path_buf());
        // From here on, dropping the cluster removes the directory.
        let mut cluster = Cluster {
            operator: key_file(&dir.join("operator.key"), "daemon-bench/operator"),
            dir,
            daemon: daemon.to_path_buf(),
            nodes: Vec::with_capacity(count),
            large: count > NODES_DEFAULT,
            log_read: vec![0; count],
        };
        let arch = if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        // Held until every port is picked, so no two nodes get the same one.
        let mut ports = Vec::with_capacity(count);
        for i in 0..count {
            let home = cluster.dir.join(format!("n{i}"));
            let state = home.join("state");
            fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
            let key_path = home.join("node.key");
            let key = key_file(&key_path, &format!("daemon-bench/n{i}"));
            let body = CertBody {
                issuer: cluster.operator.public_key().key_id(),
                node_pk: key.public_key().0,
                zone: 0,
                arch,
                gpu: false,
                issued_at: 0,
                bridge: None,
            };
            let mut cert = [0u8; CERT_BYTES_MAX];
            let n = issue_cert(&cluster.operator, &body, &mut cert);
            let cert_path = home.join("node.cert");
            fs::write(&cert_path, &cert[..n])
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            let (socket, port) = free_udp_port()?;
            ports.push(socket);
            cluster.nodes.push(Node {
                socket: home.join("api.sock"),
                log: home.join("stderr.log"),
                state,
                key: key_path,
                cert: cert_path,
                port,
                child: None,
            });
        }
        Ok(cluster)
    }

    /// Starts node 0 and waits for its /health. Small clusters: then all the others, which join
    /// node 0, and waits for them. Large ones: one at a time, each joining node 0 and
    /// `JOINS_RANDOM` random earlier nodes, once the one before answers (and `STAGGER` later).
    pub fn start(&mut self, rng: &mut Rng) -> Result<()> {
        for i in 0..self.nodes.len() {
            check_interrupted()?;
            let joins = self.joins(i, rng);
            self.spawn(i, &joins)?;
            if i == 0 || self.large {
                self.wait_ready(i)?;
            }
            if self.large {
                nap(STAGGER)?;
            }
        }
        if !self.large {
            for i in 1..self.nodes.len() {
                self.wait_ready(i)?;
            }
        }
        Ok(())
    }

    /// The nodes node `i` joins: node 0 and, in a large cluster, `JOINS_RANDOM` random earlier
    /// ones.
    fn joins(&self, i: usize, rng: &mut Rng) -> Vec<usize> {
        let mut joins: Vec<usize> = Vec::new();
        if i > 0 {
            joins.push(0);
        }
        if self.large {
            while joins.len() < (JOINS_RANDOM + 1).min(i) {
                let j = 1 + rng.below(i - 1);
                if !joins.contains(&j) {
                    joins.push(j);
                }
            }
        }
        joins
    }

    /// Starts node `i`'s daemon, joining `joins`, with its stderr to its log; it dies with this
    /// process (PR_SET_PDEATHSIG) and its pid is registered for the panic hook.
    fn spawn(&mut self, i: usize, joins: &[usize]) -> Result<()> {
        let addr = |node: &Node| format!("127.0.0.1:{}", node.port);
        let node = &self.nodes[i];
        let log = File::create(&node.log).map_err(|e| format!("{}: {e}", node.log.display()))?;
        let mut command = Command::new(&self.daemon);
        command
            .arg("--operator")
            .arg(hex(&self.operator.public_key().0))
            .arg("--key")
            .arg(&node.key)
            .arg("--cert")
            .arg(&node.cert)
            .arg("--state-dir")
            .arg(&node.state)
            .arg("--socket")
            .arg(&node.socket)
            .arg("--listen")
            .arg(addr(node))
            .arg("--reserve-bytes")
            .arg(RESERVE_BYTES)
            // The bench measures the store, gossip and API; units would go to the host's
            // /etc/systemd/system.
            .args([
                "--executor",
                "none",
                "--dns",
                "off",
                "--cache-listen",
                "off",
            ]);
        for &j in joins {
            command.arg("--join").arg(addr(&self.nodes[j]));
        }
        for var in SYSTEMD_ENV {
            command.env_remove(var);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        myco_testkit::run::die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", self.daemon.display()))?;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            live().pids.push(pid);
        }
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive(i)?;
            if let Ok((200, _)) = http(&self.nodes[i].socket, "GET", "/health", &[]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {i} did not answer /health within {READY_TIMEOUT:?}"
                ));
            }
            nap(Duration::from_millis(20))?;
        }
    }

    fn check_alive(&mut self, i: usize) -> Result<()> {
        if let Some(child) = &mut self.nodes[i].child {
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i].child = None;
                return Err(format!("node {i} exited: {status}"));
            }
        }
        Ok(())
    }

    pub fn check_all_alive(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.check_alive(i))
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map_or(0, Child::id))
    }

    /// CPU time of every daemon so far, summed, in nanoseconds.
    pub fn cpu_ns_total(&self) -> Result<u64> {
        self.pids().map(cpu_ns).sum()
    }

    fn health(&self, i: usize, key: &str) -> Result<u64> {
        let (status, body) = http(&self.nodes[i].socket, "GET", "/health", &[])?;
        if status != 200 {
            return Err(format!("node {i} /health: {status} {body}"));
        }
        json::u64_field(&body, key).ok_or(format!("node {i} /health has no {key}: {body}"))
    }

    /// Until every node's /health counts every other node alive. A small cluster that does not
    /// form in `FORM_TIMEOUT` is an error; a large one gets `FORM_TIMEOUT_PER_NODE` per node and
    /// then the bench goes on with what it reached.
    pub fn wait_formed(&mut self, large: bool) -> Result<Formation> {
        let count = self.nodes.len();
        let target = count as u64 - 1;
        let (timeout, poll) = if large {
            (FORM_TIMEOUT_PER_NODE * count as u32, FORM_POLL_LARGE)
        } else {
            (FORM_TIMEOUT, FORM_POLL)
        };
        let start = Instant::now();
        let mut first_complete = vec![None; count];
        let mut last_progress = start;
        loop {
            self.check_all_alive()?;
            let alive: Vec<u64> = (0..count)
                .map(|i| self.health(i, "peers_alive"))
                .collect::<Result<_>>()?;
            let now = start.elapsed();
            for (first, &a) in first_complete.iter_mut().zip(&alive) {
                if a == target && first.is_none() {
                    *first = Some(now);
                }
            }
            let done = alive.iter().all(|&a| a == target);
            let timed_out = now > timeout;
            if large && (done || timed_out || last_progress.elapsed() >= PROGRESS_EVERY) {
                last_progress = Instant::now();
                println!(
                    "  {:5.1} s: {} of {count} nodes at peers_alive = {target}; min / median / max {} / {} / {}",
                    now.as_secs_f64(),
                    alive.iter().filter(|&&a| a == target).count(),
                    alive.iter().min().unwrap_or(&0),
                    median_u64(&alive),
                    alive.iter().max().unwrap_or(&0)
                );
            }
            if done || timed_out {
                if timed_out && !done && !large {
                    return Err(format!(
                        "the cluster did not form within {timeout:?}: peers_alive {alive:?}"
                    ));
                }
                return Ok(Formation {
                    all_at: done.then_some(now),
                    first_complete,
                    alive,
                    waited: now,
                    poll,
                });
            }
            nap(poll)?;
        }
    }

    pub fn deploy(&self, i: usize, entry: &[u8], name: &str) -> Result<()> {
        let (status, body) = http(&self.nodes[i].socket, "POST", "/deploy", entry)?;
        if status != 200 || !body.contains("\"outcome\":\"applied\"") {
            return Err(format!("deploy of {name} to node {i}: {status} {body}"));
        }
        Ok(())
    }

    /// Polls every node that does not yet list `name` until all do.
    pub fn wait_visible(&self, name: &str) -> Result<()> {
        let path = format!("/services/{name}");
        let timeout = if self.large {
            VISIBLE_TIMEOUT_LARGE
        } else {
            VISIBLE_TIMEOUT
        };
        let deadline = Instant::now() + timeout;
        let mut missing: Vec<usize> = (0..self.nodes.len()).collect();
        loop {
            let mut still = Vec::new();
            for &i in &missing {
                match http(&self.nodes[i].socket, "GET", &path, &[])? {
                    (200, _) => {}
                    (404, _) => still.push(i),
                    (status, body) => {
                        return Err(format!("node {i} GET {path}: {status} {body}"));
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            missing = still;
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not visible on nodes {missing:?} after {timeout:?}; {}",
                    summarize(&self.gossip_all()?)
                ));
            }
            nap(VISIBLE_POLL)?;
        }
    }

    /// Until every node's /health counts `count` services, asking only the nodes not there yet;
    /// times are from `start`. Not reaching it is reported, not an error.
    pub fn wait_services(&self, count: usize, start: Instant, large: bool) -> Result<Converge> {
        let (timeout, poll) = if large {
            (CONVERGE_TIMEOUT_LARGE, CONVERGE_POLL_LARGE)
        } else {
            (CONVERGE_TIMEOUT, CONVERGE_POLL)
        };
        let n = self.nodes.len();
        let mut reached = vec![None; n];
        let mut counts = vec![0u64; n];
        let mut last_progress = Instant::now();
        loop {
            for i in 0..n {
                if reached[i].is_none() {
                    counts[i] = self.health(i, "services")?;
                    if counts[i] == count as u64 {
                        reached[i] = Some(start.elapsed());
                    }
                }
            }
            let now = start.elapsed();
            let done = reached.iter().all(Option::is_some);
            let timed_out = now > timeout;
            if large && (done || timed_out || last_progress.elapsed() >= PROGRESS_EVERY) {
                last_progress = Instant::now();
                println!(
                    "  {:5.1} s: {} of {n} nodes hold {count} services; min {}",
                    now.as_secs_f64(),
                    reached.iter().flatten().count(),
                    counts.iter().min().unwrap_or(&0)
                );
            }
            if done || timed_out {
                if !done {
                    eprintln!(
                        "not every node holds {count} services after {timeout:?}: {}",
                        summarize(&self.gossip_all()?)
                    );
                }
                let all_at = reached.iter().flatten().max().copied().filter(|_| done);
                return Ok(Converge {
                    all_at,
                    reached,
                    counts,
                    waited: now,
                    poll,
                });
            }
            nap(poll)?;
        }
    }

    pub fn metrics(&self, i: usize) -> Result<String> {
        match http(&self.nodes[i].socket, "GET", "/metrics", &[])? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("node {i} /metrics: {status} {body}")),
        }
    }

    /// One metric family (all samples summed) from every node.
    pub fn metric_all(&self, name: &str) -> Result<Vec<u64>> {
        (0..self.nodes.len())
            .map(|i| {
                let text = self.metrics(i)?;
                family_sum(&text, name)
                    .map(|v| v as u64)
                    .ok_or(format!("node {i} /metrics has no {name}"))
            })
            .collect()
    }

    /// Until no node's `myco_sync_steps_total` moves for `QUIET_FOR`; None after `QUIET_TIMEOUT`.
    pub fn wait_quiet(&mut self) -> Result<Option<Duration>> {
        let start = Instant::now();
        let steps = |c: &Cluster| c.metric_all("myco_sync_steps_total");
        let mut before = steps(self)?;
        let mut last_progress = start;
        loop {
            nap(QUIET_FOR)?;
            self.check_all_alive()?;
            let now = steps(self)?;
            let busy = before.iter().zip(&now).filter(|(b, a)| a != b).count();
            if busy == 0 {
                return Ok(Some(start.elapsed()));
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                println!(
                    "  {:5.1} s: {busy} nodes ran anti-entropy steps in the last {} s",
                    start.elapsed().as_secs_f64(),
                    QUIET_FOR.as_secs()
                );
            }
            if start.elapsed() > QUIET_TIMEOUT {
                return Ok(None);
            }
            before = now;
        }
    }

    /// Sessions, handshakes and membership of every node.
    pub fn gossip_all(&self) -> Result<Vec<Gossip>> {
        (0..self.nodes.len())
            .map(|i| Gossip::parse(&self.metrics(i)?))
            .collect()
    }

    /// The `member ID WHAT` lines every node wrote to stderr since the last call, as `log_events`
    /// prints them.
    pub fn log_events(&mut self) -> String {
        let events = self.member_events();
        if events.is_empty() {
            return "none".into();
        }
        events
            .iter()
            .map(|(what, (lines, ids))| format!("{what} {lines} / {}", ids.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `member ID WHAT` lines every node wrote to stderr since the last call: per WHAT (`is
    /// dead`, `is suspect`, ...), the lines (summed over the nodes) and the distinct members they
    /// name.
    pub fn member_events(&mut self) -> MemberEvents {
        let mut events = MemberEvents::new();
        for (node, read) in self.nodes.iter().zip(&mut self.log_read) {
            let text = fs::read(&node.log).unwrap_or_default();
            let new = String::from_utf8_lossy(&text[(*read).min(text.len())..]).into_owned();
            // Only whole lines; a partial one is read next time.
            let whole = new.rfind('\n').map_or(0, |i| i + 1);
            *read += whole;
            for (id, what) in new[..whole].lines().filter_map(member_event) {
                let e = events.entry(what.to_string()).or_default();
                e.0 += 1;
                e.1.insert(id.to_string());
            }
        }
        events
    }

    /// Every daemon's stderr lines, counted by shape (level kept, any word with a digit as #),
    /// most common first.
    pub fn log_shapes(&self) -> (usize, Vec<(String, usize)>) {
        let mut shapes: BTreeMap<String, usize> = BTreeMap::new();
        let mut lines = 0;
        for node in &self.nodes {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            for line in text.lines() {
                lines += 1;
                *shapes.entry(log_shape(line)).or_default() += 1;
            }
        }
        let mut sorted: Vec<(String, usize)> = shapes.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (lines, sorted)
    }

    pub fn print_logs(&self) {
        let (tail, shown) = if self.large {
            (10, 3)
        } else {
            (30, self.nodes.len())
        };
        for (i, node) in self.nodes.iter().enumerate().take(shown) {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- node {i} stderr (last {tail} lines) ---");
            for line in &lines[lines.len().saturating_sub(tail)..] {
                eprintln!("{line}");
            }
        }
        if self.large {
            let (lines, shapes) = self.log_shapes();
            eprintln!(
                "--- all {} nodes: {lines} stderr lines, by shape ---",
                self.nodes.len()
            );
            for (shape, count) in shapes.iter().take(20) {
                eprintln!("{count:7} {shape}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Some(child) = &n.child {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(child) = &mut n.child else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            eprintln!("node {i} stopped with {status}");
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
                    _ => {
                        eprintln!("node {i} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            n.child = None;
        }
        // The directory goes when `self.dir` drops, right after this.
        let mut live = live();
        live.pids.clear();
        live.dir = None;
    }
}

/// What a node's /metrics says about its sessions and membership.
#[derive(Clone, Copy)]
pub struct Gossip {
    pub sessions: f64,
    pub handshakes_started: f64,
    pub handshakes_completed: f64,
    pub alive: f64,
    pub suspect: f64,
    pub dead: f64,
    pub refused: f64,
    pub sync_steps: f64,
}

impl Gossip {
    pub fn parse(text: &str) -> Result<Gossip> {
        let m = |name: &str| family_sum(text, name).ok_or(format!("/metrics has no {name}"));
        let state = |s: &str| {
            let series = format!("myco_members{{state=\"{s}\"}}");
            metric(text, &series).ok_or(format!("/metrics has no {series}"))
        };
        Ok(Gossip {
            sessions: m("myco_sessions")?,
            handshakes_started: m("myco_handshakes_started_total")?,
            handshakes_completed: m("myco_handshakes_completed_total")?,
            alive: state("alive")?,
            suspect: state("suspect")?,
            dead: state("dead")?,
            refused: m("myco_frames_refused_total")?,
            sync_steps: m("myco_sync_steps_total")?,
        })
    }
}

/// One line on the sessions, handshakes and membership of every node.
pub fn summarize(g: &[Gossip]) -> String {
    let col = |f: fn(&Gossip) -> f64| -> Vec<f64> { g.iter().map(f).collect() };
    let (sessions, alive) = (col(|g| g.sessions), col(|g| g.alive));
    format!(
        "myco_sessions min / mean / max {:.0} / {:.1} / {:.0}; myco_members{{state=alive}} min / max {:.0} / {:.0}, suspect {:.0} and dead {:.0} summed over the nodes; handshakes started / completed, summed {:.0} / {:.0}; frames refused, summed {:.0}",
        min(&sessions),
        mean(&sessions),
        max(&sessions),
        min(&alive),
        max(&alive),
        sum(&col(|g| g.suspect)),
        sum(&col(|g| g.dead)),
        sum(&col(|g| g.handshakes_started)),
        sum(&col(|g| g.handshakes_completed)),
        sum(&col(|g| g.refused)),
    )
}

/// A log line with its numbers and ids replaced by #, so lines of one kind count together.
fn log_shape(line: &str) -> String {
    line.split(' ')
        .map(|word| {
            if word.starts_with('<') && word.len() >= 3 && word.as_bytes()[2] == b'>' {
                // The level, `<N>`, then the first word of the message.
                let (level, rest) = word.split_at(3);
                let rest = if rest.bytes().any(|b| b.is_ascii_digit()) {
                    "#"
                } else {
                    rest
                };
                format!("{level}{rest}")
            } else if word.bytes().any(|b| b.is_ascii_digit()) {
                "#".to_string()
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A UDP port on 127.0.0.1, free while the returned socket is held.
fn free_udp_port() -> Result<(UdpSocket, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding a UDP port: {e}"))?;
    let port = socket
        .local_addr()
        .map_err(|e| format!("binding a UDP port: {e}"))?
        .port();
    Ok((socket, port))
}

/// The key `label` names (`myco_testkit::keys`), written to `path` as a key file: every run of the
/// bench uses the same keys.
fn key_file(path: &Path, label: &str) -> SigningKey {
    let seed = keys::seed(label);
    keys::write_key_file(path, &seed);
    SigningKey::from_seed(seed).expect("a non-zero seed makes a key")
}

/// One HTTP/1.1 request on its own connection through the kit's client, which reads up to
/// Content-Length so that the time measured ends with the answer, not with the close.
pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    kit_http::request(socket, method, path, body)
        .map(|answer| (answer.status, answer.body))
        .map_err(|e| format!("{method} {path} on {}: {e}", socket.display()))
}
