//! Benchmark of real `myco-d` processes: a five-node cluster on loopback, measured at rest and
//! while it takes deploys (issue 5). It records RSS idle and holding 1000 services, CPU, bytes
//! sent and bytes written at rest, deploy latency (acknowledged, and visible on every node), the
//! time 1000 services take to reach every node, and the binaries' sizes.
//!
//! Run: `cargo run --release -p myco-host --example daemon_bench -- [--seconds N]` after
//! `cargo build --release -p myco-host -p myco-cli` (`make bench` does both). `N` is the length of
//! each at-rest window (default 20). The daemons are the `myco-d` next to this example
//! (`target/release`); `myco deploy` is timed if `target/release/myco` has that command.
//!
//! Keys and certificates are made in-process with myco-core; each daemon gets its own state
//! directory and socket under one temporary directory, listens on 127.0.0.1 only, and nodes 1..4
//! join node 0. Every daemon gets SIGTERM (then SIGKILL if it lingers) and the directory is
//! removed when the bench ends, also on error or panic; a daemon also dies with this process
//! (PR_SET_PDEATHSIG).
//!
//! Measurement notes. CPU is the run time of the daemon's threads from /proc/PID/task/*/schedstat
//! (nanoseconds), with utime+stime from /proc/PID/stat (whole clock ticks) beside it. Bytes
//! written are read from /proc/PID/io: `wchar` (bytes passed to write(2)-like syscalls, files and
//! sockets alike; writes submitted through io_uring may not count) and `write_bytes` (bytes the
//! process made dirty in the page cache, so bound for the disk, whichever path wrote them);
//! state-directory listings (size and mtime of every file) before and after confirm them, and the
//! same counters read around the 1000 deploys show that they do see the WAL's writes. A window's
//! samples are taken in an order that keeps the bench's own API requests out of it: /metrics
//! first, then /proc, at the start; /proc first, then /metrics, at the end.

use myco_core::config::{CERT_BYTES_MAX, ENTRY_BYTES_MAX, SIGNATURE_BYTES};
use myco_core::crypto::cert::issue_cert;
use myco_core::crypto::{sign_entry_body, CertBody, SigningKey};
use myco_core::schema::entry::{encode_entry, Arch, EntryBody, ServiceSpec, Source, Version};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NODES: usize = 5;
/// Services the cluster holds at the end; the latency deploys and the CLI deploy are among them.
const SERVICES: usize = 1000;
/// Deploys timed one by one (ack, then visible on every node).
const LATENCY_DEPLOYS: usize = 20;
const WINDOW_DEFAULT_SECONDS: u64 = 20;
/// After every node sees every other alive, the cluster runs this long before a window starts, so
/// start-up work (handshakes, the first peers file) stays out of "at rest".
const SETTLE: Duration = Duration::from_secs(3);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const VISIBLE_POLL: Duration = Duration::from_millis(5);
const CONVERGE_POLL: Duration = Duration::from_millis(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const RESERVE_BYTES: &str = "1048576";
/// An aarch64 binary built this long before the x86_64 one is reported as stale.
const STALE_AFTER: Duration = Duration::from_secs(120);
const EXEC_PATH: &str = "/usr/bin/true";
const SECONDS_PER_HOUR: f64 = 3600.0;
const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let window = match parse_args() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("daemon_bench: {e}\nusage: daemon_bench [--seconds N]");
            return ExitCode::from(2);
        }
    };
    let mut cluster = None;
    let result = run(window, &mut cluster);
    if let (Err(_), Some(c)) = (&result, &cluster) {
        c.print_logs();
    }
    drop(cluster);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemon_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Duration> {
    let mut seconds = WINDOW_DEFAULT_SECONDS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(format!("--seconds {v}: not a positive whole number"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Duration::from_secs(seconds))
}

/// One table row: what was measured, and the figure with its unit.
struct Report {
    rows: Vec<(String, String)>,
    json: Vec<(String, String)>,
}

impl Report {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (what, figure) = (what.into(), figure.into());
        println!("  {what}: {figure}");
        self.rows.push((what, figure));
    }

    fn num(&mut self, key: &str, value: f64) {
        let text = if value.is_finite() {
            format!("{value:.3}")
        } else {
            "null".into()
        };
        self.json.push((key.into(), text));
    }

    fn text(&mut self, key: &str, value: &str) {
        self.json
            .push((key.into(), format!("\"{}\"", value.replace('"', "'"))));
    }
}

fn run(window: Duration, slot: &mut Option<Cluster>) -> Result<()> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/examples/daemon_bench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the example is not in target/<profile>/examples")?
        .to_path_buf();
    let daemon_bin = profile_dir.join("myco-d");
    if !daemon_bin.is_file() {
        return Err(format!(
            "{} is missing; run 'cargo build --release -p myco-host -p myco-cli' first",
            daemon_bin.display()
        ));
    }
    let cli_bin = profile_dir.join("myco");
    let mut report = Report {
        rows: Vec::new(),
        json: Vec::new(),
    };

    let cluster = slot.insert(Cluster::create(&daemon_bin)?);
    cluster.start()?;
    let formed = Instant::now();
    cluster.wait_formed()?;
    println!(
        "cluster of {NODES} formed in {} ms; settling {} s",
        formed.elapsed().as_millis(),
        SETTLE.as_secs()
    );
    sleep(SETTLE);

    // 1. RSS of an idle daemon.
    let rss: Vec<u64> = cluster.pids().map(rss_bytes).collect::<Result<_>>()?;
    println!("idle:");
    report.row(
        "RSS of node 0, idle (cluster formed, 0 services)",
        format!("{:.2} MiB", rss[0] as f64 / MIB),
    );
    report.row(
        "RSS idle, 5 nodes: mean / max",
        format!(
            "{:.2} / {:.2} MiB",
            mean_u64(&rss) / MIB,
            max_u64(&rss) / MIB
        ),
    );
    let heap = cluster.metric_u64(0, "myco_heap_bytes")?;
    report.row(
        "`myco_heap_bytes` of node 0, idle",
        format!("{:.1} KiB", heap as f64 / KIB),
    );
    report.num("heap_idle_node0_bytes", heap as f64);
    report.num("rss_idle_node0_bytes", rss[0] as f64);
    report.num("rss_idle_max_bytes", max_u64(&rss));

    // 2-4, 7: the cluster at rest with no service.
    let rest = cluster.at_rest(window)?;
    rest.report(&mut report, "0 services", "rest0");

    // 5. Deploy latency: ack from node 0, then visible on all five.
    let operator = &cluster.operator;
    let mut acks = Vec::with_capacity(LATENCY_DEPLOYS);
    let mut visible = Vec::with_capacity(LATENCY_DEPLOYS);
    for i in 0..LATENCY_DEPLOYS {
        let name = service_name(i);
        let entry = signed_entry(operator, &name)?;
        let start = Instant::now();
        cluster.deploy(0, &entry, &name)?;
        acks.push(start.elapsed());
        cluster.wait_visible(&name)?;
        visible.push(start.elapsed());
    }
    println!("deploys:");
    report.row(
        format!("deploy acknowledged (POST /deploy to node 0 until 200, incl. fdatasync), {LATENCY_DEPLOYS} deploys: median / p90 / max"),
        ms3(&mut acks),
    );
    report.row(
        format!("deploy visible on all 5 nodes (GET /services/NAME 200 on each, polled every {} ms): median / p90 / max", VISIBLE_POLL.as_millis()),
        ms3(&mut visible),
    );
    report.num("deploy_ack_median_ms", ms(percentile(&acks, 50)));
    report.num("deploy_ack_p90_ms", ms(percentile(&acks, 90)));
    report.num("deploy_visible_median_ms", ms(percentile(&visible, 50)));
    report.num("deploy_visible_p90_ms", ms(percentile(&visible, 90)));

    let mut next = LATENCY_DEPLOYS;
    match cli_deploy(cluster, &cli_bin, &service_name(next))? {
        Some((exit, seen)) => {
            next += 1;
            report.row(
                "`myco deploy` (sign + POST, process start to exit) / until visible on all 5",
                format!("{:.1} ms / {:.1} ms", ms(exit), ms(seen)),
            );
            report.num("cli_deploy_ms", ms(exit));
            report.num("cli_deploy_visible_ms", ms(seen));
        }
        None => {
            report.row(
                "`myco deploy` end to end",
                "not measured: `myco deploy --help` fails",
            );
            report.text("cli_deploy_ms", "not measured");
        }
    }

    // 6. 1000 services.
    let entries: Vec<(String, Vec<u8>)> = (next..SERVICES)
        .map(|i| {
            let name = service_name(i);
            signed_entry(operator, &name).map(|e| (name, e))
        })
        .collect::<Result<_>>()?;
    let io_before: Vec<(u64, u64)> = cluster.pids().map(proc_io).collect::<Result<_>>()?;
    let start = Instant::now();
    for (name, entry) in &entries {
        cluster.deploy(0, entry, name)?;
    }
    let posted = start.elapsed();
    cluster.wait_services(SERVICES)?;
    let converged = start.elapsed();
    let io_after: Vec<(u64, u64)> = cluster.pids().map(proc_io).collect::<Result<_>>()?;
    let io_delta = |f: fn(&(u64, u64)) -> u64| -> u64 {
        io_before
            .iter()
            .zip(&io_after)
            .map(|(b, a)| f(a) - f(b))
            .sum()
    };
    println!("{SERVICES} services:");
    report.row(
        format!(
            "{} deploys POSTed one after another to node 0, each acknowledged",
            entries.len()
        ),
        format!(
            "{:.2} s ({:.0} deploys/s)",
            posted.as_secs_f64(),
            entries.len() as f64 / posted.as_secs_f64()
        ),
    );
    report.row(
        format!("from the first of those until all 5 nodes hold {SERVICES} services (/health)"),
        format!("{:.2} s", converged.as_secs_f64()),
    );
    report.row(
        "written while the cluster took those deploys (check that the counters see WAL writes), \
         5 nodes: `write_bytes` / `wchar`",
        format!("{} / {} bytes", io_delta(|io| io.1), io_delta(|io| io.0)),
    );
    report.num("bulk_write_bytes_cluster", io_delta(|io| io.1) as f64);
    report.num("bulk_wchar_cluster", io_delta(|io| io.0) as f64);
    report.num("bulk_post_s", posted.as_secs_f64());
    report.num("bulk_converge_s", converged.as_secs_f64());
    sleep(SETTLE);
    let rss: Vec<u64> = cluster.pids().map(rss_bytes).collect::<Result<_>>()?;
    let heap: Vec<u64> = (0..NODES)
        .map(|i| cluster.metric_u64(i, "myco_heap_bytes"))
        .collect::<Result<_>>()?;
    report.row(
        format!("RSS holding {SERVICES} services, 5 nodes: mean / max"),
        format!(
            "{:.2} / {:.2} MiB",
            mean_u64(&rss) / MIB,
            max_u64(&rss) / MIB
        ),
    );
    report.row(
        format!("`myco_heap_bytes` holding {SERVICES} services: mean / max"),
        format!(
            "{:.1} / {:.1} KiB",
            mean_u64(&heap) / KIB,
            max_u64(&heap) / KIB
        ),
    );
    report.num("rss_1000_mean_bytes", mean_u64(&rss));
    report.num("rss_1000_max_bytes", max_u64(&rss));
    report.num("heap_1000_max_bytes", max_u64(&heap));

    let rest = cluster.at_rest(window)?;
    rest.report(&mut report, &format!("{SERVICES} services"), "rest1000");

    // 8. Binary sizes.
    println!("binaries:");
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir);
    let arm_dir = target_dir.join("aarch64-unknown-linux-gnu").join("release");
    for (arch, dir) in [("x86_64", profile_dir.as_path()), ("aarch64", &arm_dir)] {
        for bin in ["myco-d", "myco"] {
            let key = format!("size_{arch}_{}", bin.replace('-', "_"));
            match fs::metadata(dir.join(bin)) {
                Ok(m) => {
                    report.row(
                        format!("{bin} size, {arch} (release, stripped)"),
                        format!(
                            "{} bytes ({:.2} MiB){}",
                            m.len(),
                            m.len() as f64 / MIB,
                            staleness(&m, &profile_dir.join(bin))
                        ),
                    );
                    report.num(&key, m.len() as f64);
                }
                Err(_) => {
                    report.row(format!("{bin} size, {arch}"), "not built");
                    report.text(&key, "not built");
                }
            }
        }
    }
    report.num("bench_wall_s", started.elapsed().as_secs_f64());

    println!("\n| what | figure |\n|---|---|");
    for (what, figure) in &report.rows {
        println!("| {what} | {figure} |");
    }
    let fields: Vec<String> = report
        .json
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    println!("\n{{{}}}", fields.join(","));
    println!(
        "\nwall time {:.1} s, window {} s",
        started.elapsed().as_secs_f64(),
        window.as_secs()
    );
    Ok(())
}

/// A warning if the binary described by `meta` was built well before `reference` (the x86_64
/// binary this run measured): its size then describes older sources.
fn staleness(meta: &fs::Metadata, reference: &Path) -> String {
    let built = |m: &fs::Metadata| m.modified().ok();
    let (Some(this), Some(reference)) = (
        built(meta),
        fs::metadata(reference).ok().and_then(|m| built(&m)),
    ) else {
        return String::new();
    };
    match reference.duration_since(this) {
        Ok(age) if age > STALE_AFTER => format!(
            " (STALE: built {} min before the x86_64 binary; run `make aarch64`)",
            age.as_secs() / 60
        ),
        _ => String::new(),
    }
}

fn service_name(i: usize) -> String {
    format!("svc-{i:04}")
}

/// One `myco deploy` run, timed from process start to exit, and until every node lists the
/// service. None if this `myco` has no `deploy` command.
fn cli_deploy(cluster: &Cluster, cli: &Path, name: &str) -> Result<Option<(Duration, Duration)>> {
    let has_deploy = Command::new(cli)
        .args(["deploy", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_deploy {
        return Ok(None);
    }
    let manifest = cluster.dir.join(format!("{name}.json"));
    fs::write(
        &manifest,
        format!("{{\"name\": \"{name}\", \"exec\": \"{EXEC_PATH}\"}}\n"),
    )
    .map_err(|e| format!("{}: {e}", manifest.display()))?;
    let start = Instant::now();
    let out = Command::new(cli)
        .arg("deploy")
        .arg(&manifest)
        .arg("--operator-key")
        .arg(cluster.dir.join("operator.key"))
        .arg("--socket")
        .arg(&cluster.nodes[0].socket)
        .arg("--json")
        .env_remove("MYCO_SOCKET")
        .output()
        .map_err(|e| format!("{}: {e}", cli.display()))?;
    let exit = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "myco deploy failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    cluster.wait_visible(name)?;
    Ok(Some((exit, start.elapsed())))
}

/// `postcard(body) || signature` for a minimal service, versioned with the wall clock.
fn signed_entry(operator: &SigningKey, name: &str) -> Result<Vec<u8>> {
    let clock = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970")?
            .as_millis(),
    )
    .map_err(|_| "clock overflow")?;
    let body = EntryBody {
        name,
        version: Version {
            clock,
            key_id: operator.public_key().key_id(),
        },
        spec: Some(ServiceSpec::minimal(Source::Exec { path: EXEC_PATH })),
    };
    let mut bytes = [0u8; ENTRY_BYTES_MAX];
    let n = encode_entry(&body, &[0; SIGNATURE_BYTES], &mut bytes)
        .map_err(|e| format!("entry {name}: {}", e.message()))?;
    let signature = sign_entry_body(operator, &bytes[..n - SIGNATURE_BYTES]);
    bytes[n - SIGNATURE_BYTES..n].copy_from_slice(&signature);
    Ok(bytes[..n].to_vec())
}

struct Node {
    state: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    key: PathBuf,
    cert: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The daemons and their directory; dropping it stops them and removes the directory.
struct Cluster {
    dir: PathBuf,
    daemon: PathBuf,
    operator: SigningKey,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Makes the keys, certificates and directories; starts nothing.
    fn create(daemon: &Path) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("myco-daemon-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // From here on, Drop removes the directory.
        let mut cluster = Cluster {
            dir: dir.clone(),
            daemon: daemon.to_path_buf(),
            operator: new_key(&dir.join("operator.key"))?,
            nodes: Vec::with_capacity(NODES),
        };
        let arch = if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        for i in 0..NODES {
            let home = dir.join(format!("n{i}"));
            let state = home.join("state");
            fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
            let key_path = home.join("node.key");
            let key = new_key(&key_path)?;
            let body = CertBody {
                issuer: cluster.operator.public_key().key_id(),
                node_pk: key.public_key().0,
                zone: 0,
                arch,
                gpu: false,
                issued_at: 0,
            };
            let mut cert = [0u8; CERT_BYTES_MAX];
            let n = issue_cert(&cluster.operator, &body, &mut cert);
            let cert_path = home.join("node.cert");
            fs::write(&cert_path, &cert[..n])
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            cluster.nodes.push(Node {
                socket: home.join("api.sock"),
                log: home.join("stderr.log"),
                state,
                key: key_path,
                cert: cert_path,
                port: free_udp_port()?,
                child: None,
            });
        }
        Ok(cluster)
    }

    /// Starts node 0, waits for its /health, then the others, which join node 0.
    fn start(&mut self) -> Result<()> {
        let operator_hex = hex(&self.operator.public_key().0);
        let join = format!("127.0.0.1:{}", self.nodes[0].port);
        for i in 0..NODES {
            let node = &self.nodes[i];
            let log =
                File::create(&node.log).map_err(|e| format!("{}: {e}", node.log.display()))?;
            let mut command = Command::new(&self.daemon);
            command
                .arg("--operator")
                .arg(&operator_hex)
                .arg("--key")
                .arg(&node.key)
                .arg("--cert")
                .arg(&node.cert)
                .arg("--state-dir")
                .arg(&node.state)
                .arg("--socket")
                .arg(&node.socket)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", node.port))
                .arg("--reserve-bytes")
                .arg(RESERVE_BYTES);
            if i > 0 {
                command.arg("--join").arg(&join);
            }
            for var in [
                "NOTIFY_SOCKET",
                "CREDENTIALS_DIRECTORY",
                "STATE_DIRECTORY",
                "RUNTIME_DIRECTORY",
                "LISTEN_FDS",
                "LISTEN_PID",
                "WATCHDOG_USEC",
            ] {
                command.env_remove(var);
            }
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe and touches no memory of this process.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .map_err(|e| format!("{}: {e}", self.daemon.display()))?;
            self.nodes[i].child = Some(child);
            if i == 0 {
                self.wait_ready(0)?;
            }
        }
        for i in 1..NODES {
            self.wait_ready(i)?;
        }
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
            sleep(Duration::from_millis(20));
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

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map_or(0, Child::id))
    }

    /// Until every node lists all five nodes as alive.
    fn wait_formed(&mut self) -> Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let mut all = true;
            for i in 0..NODES {
                self.check_alive(i)?;
                let (status, body) = http(&self.nodes[i].socket, "GET", "/nodes", &[])?;
                if status != 200 || body.matches("\"state\":\"alive\"").count() < NODES {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster did not form within {FORM_TIMEOUT:?}: {}",
                    self.nodes_summary()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn nodes_summary(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = write!(s, "\nnode {i} /nodes: ");
            match http(&n.socket, "GET", "/nodes", &[]) {
                Ok((status, body)) => {
                    let _ = write!(s, "{status} {body}");
                }
                Err(e) => s.push_str(&e),
            }
        }
        s
    }

    fn deploy(&self, i: usize, entry: &[u8], name: &str) -> Result<()> {
        let (status, body) = http(&self.nodes[i].socket, "POST", "/deploy", entry)?;
        if status != 200 || !body.contains("\"outcome\":\"applied\"") {
            return Err(format!("deploy of {name} to node {i}: {status} {body}"));
        }
        Ok(())
    }

    /// Polls every node that does not yet list `name` until all do.
    fn wait_visible(&self, name: &str) -> Result<()> {
        let path = format!("/services/{name}");
        let deadline = Instant::now() + VISIBLE_TIMEOUT;
        let mut missing: Vec<usize> = (0..NODES).collect();
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
                    "{name} not visible on nodes {missing:?} after {VISIBLE_TIMEOUT:?}"
                ));
            }
            sleep(VISIBLE_POLL);
        }
    }

    /// Until every node's /health counts `count` services.
    fn wait_services(&self, count: usize) -> Result<()> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let mut counts = Vec::with_capacity(NODES);
            for n in &self.nodes {
                let (_, body) = http(&n.socket, "GET", "/health", &[])?;
                counts.push(json_u64(&body, "services").unwrap_or(0));
            }
            if counts.iter().all(|&c| c == count as u64) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {CONVERGE_TIMEOUT:?} the nodes hold {counts:?} services, not {count}"
                ));
            }
            sleep(CONVERGE_POLL);
        }
    }

    fn metrics(&self, i: usize) -> Result<String> {
        match http(&self.nodes[i].socket, "GET", "/metrics", &[])? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("node {i} /metrics: {status} {body}")),
        }
    }

    fn metric_u64(&self, i: usize, name: &str) -> Result<u64> {
        let text = self.metrics(i)?;
        metric(&text, name)
            .map(|v| v as u64)
            .ok_or(format!("node {i} /metrics has no {name}"))
    }

    /// Samples every node at the start and end of `window`, during which the bench sends nothing.
    fn at_rest(&mut self, window: Duration) -> Result<Rest> {
        println!("at rest for {} s ...", window.as_secs());
        let before = self.sample_all(true)?;
        let start = Instant::now();
        sleep(window);
        for i in 0..NODES {
            self.check_alive(i)?;
        }
        let elapsed = start.elapsed();
        let after = self.sample_all(false)?;
        Ok(Rest {
            seconds: elapsed.as_secs_f64(),
            before,
            after,
        })
    }

    /// At the start: metrics, then /proc and the state directory; at the end the other way round,
    /// so the bench's own requests fall outside the window.
    fn sample_all(&self, start: bool) -> Result<Vec<Sample>> {
        let mut metrics = Vec::with_capacity(NODES);
        let mut procs = Vec::with_capacity(NODES);
        if start {
            for i in 0..NODES {
                metrics.push(self.metrics(i)?);
            }
        }
        for (n, pid) in self.nodes.iter().zip(self.pids()) {
            procs.push((
                (cpu_ticks(pid)?, cpu_ns(pid)?),
                proc_io(pid)?,
                list_files(&n.state)?,
                file_len(&n.log),
            ));
        }
        if !start {
            for i in 0..NODES {
                metrics.push(self.metrics(i)?);
            }
        }
        metrics
            .into_iter()
            .zip(procs)
            .map(|(text, ((ticks, cpu_ns), io, files, log_bytes))| {
                let m = |name: &str| metric(&text, name).ok_or(format!("/metrics has no {name}"));
                Ok(Sample {
                    ticks,
                    cpu_ns,
                    wchar: io.0,
                    write_bytes: io.1,
                    sent_bytes: m("myco_sent_bytes_total")?,
                    frames_sent: m("myco_frames_sent_total")?,
                    allocations: m("myco_heap_allocations_since_ready_total")?,
                    files,
                    log_bytes,
                })
            })
            .collect()
    }

    fn print_logs(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let text = fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- node {i} stderr (last 30 lines) ---");
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
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
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One node at one end of an at-rest window.
struct Sample {
    ticks: u64,
    cpu_ns: u64,
    wchar: u64,
    write_bytes: u64,
    sent_bytes: f64,
    frames_sent: f64,
    allocations: f64,
    files: BTreeMap<String, (u64, i128)>,
    log_bytes: u64,
}

struct Rest {
    seconds: f64,
    before: Vec<Sample>,
    after: Vec<Sample>,
}

impl Rest {
    fn report(&self, report: &mut Report, what: &str, key: &str) {
        let pairs = || self.before.iter().zip(&self.after);
        let per_node = |f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
            pairs().map(|(b, a)| f(b, a)).collect()
        };
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_ticks = per_node(&|b, a| 100.0 * (a.ticks - b.ticks) as f64 / hz / self.seconds);
        let cpu = per_node(&|b, a| 100.0 * (a.cpu_ns - b.cpu_ns) as f64 / 1e9 / self.seconds);
        let sent = per_node(&|b, a| (a.sent_bytes - b.sent_bytes) / self.seconds);
        let frames = per_node(&|b, a| (a.frames_sent - b.frames_sent) / self.seconds);
        let wchar = per_node(&|b, a| (a.wchar - b.wchar) as f64);
        let write_bytes = per_node(&|b, a| (a.write_bytes - b.write_bytes) as f64);
        let log = per_node(&|b, a| (a.log_bytes - b.log_bytes) as f64);
        let per_hour = SECONDS_PER_HOUR / self.seconds;
        let mut changed = Vec::new();
        for (i, (b, a)) in pairs().enumerate() {
            for (name, now) in &a.files {
                match b.files.get(name) {
                    Some(then) if then == now => {}
                    Some(then) => changed.push(format!(
                        "n{i}/{name} {}→{} bytes{}",
                        then.0,
                        now.0,
                        if then.1 != now.1 {
                            ", mtime changed"
                        } else {
                            ""
                        }
                    )),
                    None => changed.push(format!("n{i}/{name} new, {} bytes", now.0)),
                }
            }
            for name in b.files.keys().filter(|n| !a.files.contains_key(*n)) {
                changed.push(format!("n{i}/{name} removed"));
            }
        }
        let allocs: Vec<String> = pairs()
            .map(|(b, a)| format!("{}→{}", b.allocations, a.allocations))
            .collect();
        let allocs_equal = pairs().all(|(b, a)| b.allocations == a.allocations);
        let secs = self.seconds;
        println!("at rest, {what}, {secs:.1} s:");
        report.row(
            format!("CPU at rest, {what} ({secs:.0} s window): mean / max of 5 nodes (schedstat run time; in brackets utime+stime ticks, mean)"),
            format!(
                "{:.3} / {:.3} % of one core ({:.3} %)",
                mean(&cpu),
                max(&cpu),
                mean(&cpu_ticks)
            ),
        );
        report.row(
            format!("sent at rest, {what}, per node (`myco_sent_bytes_total`, `myco_frames_sent_total`): mean / max"),
            format!(
                "{:.0} / {:.0} bytes/s, {:.2} frames/s mean",
                mean(&sent),
                max(&sent),
                mean(&frames)
            ),
        );
        report.row(
            format!(
                "written at rest, {what}: `write_bytes` (page cache → disk), 5 nodes, extrapolated"
            ),
            format!(
                "{:.0} bytes in {secs:.0} s = {:.0} bytes/hour for the cluster",
                sum(&write_bytes),
                sum(&write_bytes) * per_hour
            ),
        );
        report.row(
            format!("written at rest, {what}: `wchar` (write syscalls, incl. stderr), 5 nodes, extrapolated"),
            format!(
                "{:.0} bytes in {secs:.0} s = {:.0} bytes/hour for the cluster (stderr grew {:.0} bytes)",
                sum(&wchar),
                sum(&wchar) * per_hour,
                sum(&log)
            ),
        );
        report.row(
            format!("state-directory files changed at rest, {what} (size or mtime)"),
            if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join("; ")
            },
        );
        report.row(
            format!("`myco_heap_allocations_since_ready_total` at start → end of window, {what}, per node"),
            format!(
                "{} ({})",
                allocs.join(", "),
                if allocs_equal { "equal" } else { "NOT equal" }
            ),
        );
        report.num(&format!("{key}_cpu_percent_mean"), mean(&cpu));
        report.num(&format!("{key}_cpu_ticks_percent_mean"), mean(&cpu_ticks));
        report.num(&format!("{key}_sent_bytes_per_s_mean"), mean(&sent));
        report.num(&format!("{key}_frames_per_s_mean"), mean(&frames));
        report.num(
            &format!("{key}_write_bytes_per_hour_cluster"),
            sum(&write_bytes) * per_hour,
        );
        report.num(
            &format!("{key}_wchar_per_hour_cluster"),
            sum(&wchar) * per_hour,
        );
        report.num(&format!("{key}_state_files_changed"), changed.len() as f64);
        report.num(
            &format!("{key}_allocations_equal"),
            if allocs_equal { 1.0 } else { 0.0 },
        );
    }
}

/// A new operator or node key from the OS random source, written as 64 hex digits and a newline
/// with mode 0600.
fn new_key(path: &Path) -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let key = SigningKey::from_seed(seed).map_err(|e| format!("key: {e:?}"))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{}", hex(&seed)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> Result<u16> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("binding a UDP port: {e}"))
}

/// One HTTP/1.1 request on its own connection; returns the status and the body, read up to
/// Content-Length so that the time measured ends with the answer, not with the close.
fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let fail = |e: std::io::Error| format!("{method} {path} on {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(fail)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(fail)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if method == "POST" {
        let _ = write!(
            request,
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).map_err(fail)?;
    let mut answer = Vec::with_capacity(4096);
    let mut buf = [0u8; 16384];
    loop {
        if let Some(head_end) = find(&answer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..head_end]).to_string();
            if let Some(len) = content_length(&head) {
                if answer.len() >= head_end + 4 + len {
                    let status = status_code(&head)
                        .ok_or(format!("{method} {path}: bad status line: {head}"))?;
                    let text = String::from_utf8_lossy(&answer[head_end + 4..head_end + 4 + len]);
                    return Ok((status, text.into_owned()));
                }
            }
        }
        let n = stream.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let head_end = find(&answer, b"\r\n\r\n").ok_or(format!(
        "{method} {path}: connection closed before a whole answer ({} bytes)",
        answer.len()
    ))?;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_string();
    let status = status_code(&head).ok_or(format!("{method} {path}: bad status line: {head}"))?;
    Ok((
        status,
        String::from_utf8_lossy(&answer[head_end + 4..]).into_owned(),
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_code(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// The sum of every sample of the family `name` (unlabelled or labelled).
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with(' ') {
            rest.trim()
        } else if rest.starts_with('{') {
            rest.rsplit_once('}')?.1.trim()
        } else {
            continue;
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// A number field of a flat JSON object.
fn json_u64(json: &str, key: &str) -> Option<u64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(format!("{path} has no VmRSS"))?;
    Ok(kib * 1024)
}

/// utime + stime of every thread, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{path}: no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Time on a CPU of every live thread, in nanoseconds (/proc/PID/task/*/schedstat, first field):
/// finer than the clock ticks of /proc/PID/stat, which count whole 10 ms ticks.
fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        let path = task.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(format!("{}: no run time", path.display()))?;
    }
    Ok(total)
}

/// (`wchar`, `write_bytes`) from /proc/PID/io.
fn proc_io(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/io");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let get = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(format!("{path} has no {key}"))
    };
    Ok((get("wchar:")?, get("write_bytes:")?))
}

/// Every file under `dir`: size and mtime in nanoseconds.
fn list_files(dir: &Path) -> Result<BTreeMap<String, (u64, i128)>> {
    let mut out = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            for (name, v) in list_files(&entry.path())? {
                out.insert(format!("{}/{name}", entry.file_name().to_string_lossy()), v);
            }
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (meta.len(), mtime),
        );
    }
    Ok(out)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    // Nearest rank.
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "median / p90 / max ms", sorting `times`.
fn ms3(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        ms(percentile(times, 50)),
        ms(percentile(times, 90)),
        ms(times[times.len() - 1])
    )
}

fn mean(v: &[f64]) -> f64 {
    sum(v) / v.len() as f64
}

fn sum(v: &[f64]) -> f64 {
    v.iter().sum()
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

fn mean_u64(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

fn max_u64(v: &[u64]) -> f64 {
    v.iter().copied().max().unwrap_or(0) as f64
}
