//! Benchmark of real `myco-d` processes: a cluster on loopback (five nodes unless `--nodes` says
//! otherwise), measured at rest and while it takes deploys (issue 5). It records RSS (resident
//! and peak) idle and holding 1000 services, CPU, bytes sent and bytes written at rest, deploy
//! latency (acknowledged, and visible on every node), the time 1000 services take to reach every
//! node, and the binaries' sizes.
//!
//! Run: `cargo run --release -p myco-host --example daemon_bench -- [--seconds S] [--nodes N]`
//! after `cargo build --release -p myco-host -p myco-cli` (`make bench` does both). `S` is the
//! length of each at-rest window (default 20), `N` the number of daemons (default 5, at most
//! `MEMBERS_MAX + 1`). The daemons are the `myco-d` next to this example (`target/release`);
//! `myco deploy` is timed if `target/release/myco` has that command.
//!
//! Keys and certificates are made in-process with myco-core; each daemon gets its own state
//! directory and socket under one temporary directory and listens on 127.0.0.1 only. With five
//! nodes or fewer, nodes 1.. join node 0 and start together. With more, the start is staggered:
//! each node starts once the one before answers /health (and `STAGGER` later), joining node 0 and
//! `JOINS_RANDOM` random earlier nodes; formation is then awaited through every node's /health
//! (`members_alive` = N-1) with a generous timeout, after which the bench goes on and reports how
//! far it got. Every daemon gets SIGTERM (then SIGKILL if it lingers) and the directory is removed
//! when the bench ends, on error, on SIGINT/SIGTERM/SIGHUP (checked between steps), and on panic
//! (a panic hook, since the release profile aborts); a daemon also dies with this process
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
//! first, then /proc, at the start; /proc first, then /metrics, at the end. RSS is VmRSS and the
//! peak VmHWM of /proc/PID/status.

use myco_core::config::{CERT_BYTES_MAX, ENTRY_BYTES_MAX, MEMBERS_MAX, SIGNATURE_BYTES};
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nodes unless `--nodes` says otherwise; above it the start is staggered.
const NODES_DEFAULT: usize = 5;
/// Services the cluster holds at the end; the latency deploys and the CLI deploy are among them.
const SERVICES: usize = 1000;
/// Deploys timed one by one (ack, then visible on every node); fewer above `NODES_DEFAULT`
/// nodes, where each is visible only after several gossip rounds and every poll asks every node.
const LATENCY_DEPLOYS: usize = 20;
const LATENCY_DEPLOYS_LARGE: usize = 10;
const WINDOW_DEFAULT_SECONDS: u64 = 20;
/// After every node sees every other alive, the cluster runs this long before a window starts, so
/// start-up work (handshakes, the first peers file) stays out of "at rest".
const SETTLE: Duration = Duration::from_secs(3);
/// Staggered start: the pause between one node answering /health and the next one starting, and
/// how many random earlier nodes each joins besides node 0.
const STAGGER: Duration = Duration::from_millis(50);
const JOINS_RANDOM: usize = 2;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Per node, for clusters above `NODES_DEFAULT` (so 300 s for 100 nodes).
const FORM_TIMEOUT_PER_NODE: Duration = Duration::from_secs(3);
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
const VISIBLE_TIMEOUT_LARGE: Duration = Duration::from_secs(60);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const CONVERGE_TIMEOUT_LARGE: Duration = Duration::from_secs(300);
const VISIBLE_POLL: Duration = Duration::from_millis(5);
const CONVERGE_POLL: Duration = Duration::from_millis(20);
const CONVERGE_POLL_LARGE: Duration = Duration::from_millis(100);
const FORM_POLL: Duration = Duration::from_millis(50);
const FORM_POLL_LARGE: Duration = Duration::from_millis(250);
/// Large clusters: after the bulk deploys, at rest means no anti-entropy step for this long.
const QUIET_FOR: Duration = Duration::from_secs(2);
const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a long wait prints where it stands.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
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

const USAGE: &str = "usage: daemon_bench [--seconds S] [--nodes N]";

struct Options {
    window: Duration,
    nodes: usize,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("daemon_bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    install_cleanup_handlers();
    let mut cluster = None;
    let result = run(&opts, &mut cluster);
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

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        window: Duration::from_secs(WINDOW_DEFAULT_SECONDS),
        nodes: NODES_DEFAULT,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a value")?;
                let seconds = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(format!("--seconds {v}: not a positive whole number"))?;
                opts.window = Duration::from_secs(seconds);
            }
            "--nodes" => {
                let v = args.next().ok_or("--nodes needs a value")?;
                opts.nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (2..=MEMBERS_MAX + 1).contains(n))
                    .ok_or(format!(
                        "--nodes {v}: not a whole number from 2 to {}",
                        MEMBERS_MAX + 1
                    ))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(opts)
}

/// What a panic or a signal must still clean up: the daemons' pids and the directory. The
/// `Cluster` keeps it current; its `Drop` does the orderly version.
struct Live {
    dir: Option<PathBuf>,
    pids: Vec<libc::pid_t>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    dir: None,
    pids: Vec::new(),
});
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag that every wait checks (so `Drop` cleans up); a panic
/// kills the daemons and removes the directory before the release profile's abort.
fn install_cleanup_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let mut guard = match LIVE.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        for &pid in &guard.pids {
            // SAFETY: kill and waitpid on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        guard.pids.clear();
        if let Some(dir) = guard.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }));
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted by a signal".into())
    } else {
        Ok(())
    }
}

/// Sleeps `d` in short slices, failing as soon as a signal asked the bench to stop.
fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Raises the soft limits on open files and processes to what `nodes` daemons need, only where
/// they are lower; says what it found.
fn ensure_limits(nodes: usize) -> Result<String> {
    // The bench holds a few descriptors at a time, a daemon a dozen or so (it inherits the
    // limit); processes: the daemons, their helper threads, `myco`, with room to spare.
    let want = [
        (libc::RLIMIT_NOFILE, "open files", 256),
        (libc::RLIMIT_NPROC, "processes", 4 * nodes as u64 + 256),
    ];
    let mut notes = Vec::new();
    for (resource, name, need) in want {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
            return Err(format!(
                "getrlimit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let show = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        if r.rlim_cur == libc::RLIM_INFINITY || r.rlim_cur >= need {
            notes.push(format!("{name} {} (enough)", show(r.rlim_cur)));
            continue;
        }
        if r.rlim_max != libc::RLIM_INFINITY && r.rlim_max < need {
            return Err(format!(
                "the hard limit on {name} is {}, {need} needed for {nodes} nodes",
                r.rlim_max
            ));
        }
        let old = r.rlim_cur;
        r.rlim_cur = need;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource, &r) } != 0 {
            return Err(format!(
                "setrlimit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        notes.push(format!("{name} raised from {old} to {need}"));
    }
    Ok(notes.join(", "))
}

/// xorshift64* seeded from the OS: picks the random join peers.
struct Rng(u64);

impl Rng {
    fn new() -> Result<Rng> {
        let mut seed = [0u8; 8];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(Rng(u64::from_le_bytes(seed) | 1))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One table row: what was measured, and the figure with its unit.
#[derive(Default)]
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

fn run(opts: &Options, slot: &mut Option<Cluster>) -> Result<()> {
    let started = Instant::now();
    let n = opts.nodes;
    let large = n > NODES_DEFAULT;
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
    let mut report = Report::default();
    report.num("nodes", n as f64);
    println!("limits: {}", ensure_limits(n)?);
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} cores, load average before the run: {}",
        cores(),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let cluster = slot.insert(Cluster::create(&daemon_bin, n)?);
    let mut rng = Rng::new()?;
    let first_start = Instant::now();
    let machine = Machine::now()?;
    cluster.start(&mut rng)?;
    let last_start = Instant::now();
    println!(
        "{n} daemons started in {:.1} s{}",
        ms(first_start.elapsed()) / 1000.0,
        if large {
            format!(
                " (staggered: each joins node 0 and {JOINS_RANDOM} random earlier nodes, {} ms apart)",
                STAGGER.as_millis()
            )
        } else {
            String::new()
        }
    );
    let formed = cluster.wait_formed(large)?;
    let form_cpu = cluster.cpu_ns_total()?;
    let form_machine = machine.busy_since()?;
    let form_wall = first_start.elapsed();
    println!(
        "cluster after formation: {}",
        summarize(&cluster.gossip_all()?)
    );
    println!("settling {} s", SETTLE.as_secs());
    nap(SETTLE)?;

    println!("formation:");
    if large {
        report.row(
            format!("{n} daemons started one after another (each once the one before answered /health, {} ms apart; each joins node 0 and {JOINS_RANDOM} random earlier nodes)", STAGGER.as_millis()),
            format!("{:.1} s", (last_start - first_start).as_secs_f64()),
        );
    }
    let target = n - 1;
    match formed.all_at {
        Some(at) => {
            let since_first = at + (last_start - first_start);
            report.row(
                format!("until every node's /health says members_alive = {target} (polled every {} ms): from the last start / from the first", formed.poll.as_millis()),
                format!(
                    "{:.1} s / {:.1} s; single nodes first complete after median {:.1} s, the last {:.1} s",
                    at.as_secs_f64(),
                    since_first.as_secs_f64(),
                    median_opt(&formed.first_complete),
                    max_opt(&formed.first_complete)
                ),
            );
            report.num("form_s_after_last_start", at.as_secs_f64());
            report.num("form_s_after_first_start", since_first.as_secs_f64());
        }
        None => {
            report.row(
                format!("until every node's /health says members_alive = {target}"),
                format!(
                    "NOT reached in {:.0} s: {} of {n} nodes at {target} at the end ({} ever were); members_alive min / median / max {} / {} / {}",
                    formed.waited.as_secs_f64(),
                    formed.alive.iter().filter(|&&a| a == target as u64).count(),
                    formed.first_complete.iter().flatten().count(),
                    formed.alive.iter().min().unwrap_or(&0),
                    median_u64(&formed.alive),
                    formed.alive.iter().max().unwrap_or(&0),
                ),
            );
            report.text("form_s_after_last_start", "not reached");
        }
    }
    report.row(
        "CPU of all daemons together from the first start until formed; whole machine busy meanwhile",
        format!(
            "{:.2} CPU-s in {:.1} s of wall time; machine {form_machine:.0} % of one core",
            form_cpu as f64 / 1e9,
            form_wall.as_secs_f64()
        ),
    );
    report.num("form_cpu_s", form_cpu as f64 / 1e9);
    events_row(&mut report, cluster, "start, formation and settling");

    // 1. RSS of an idle daemon.
    let mem: Vec<(u64, u64)> = cluster.pids().map(vm_bytes).collect::<Result<_>>()?;
    println!("idle:");
    report.row(
        "RSS of node 0, idle (cluster formed, 0 services)",
        format!("{:.2} MiB", mem[0].0 as f64 / MIB),
    );
    mem_rows(&mut report, &mem, &format!("idle, {n} nodes"), "idle");
    let heap = cluster.metric_all("myco_heap_bytes")?;
    report.row(
        format!("`myco_heap_bytes` idle, {n} nodes: mean / max"),
        format!(
            "{:.1} / {:.1} KiB",
            mean_u64(&heap) / KIB,
            max_u64(&heap) / KIB
        ),
    );
    report.num("heap_idle_node0_bytes", heap[0] as f64);
    report.num("heap_idle_max_bytes", max_u64(&heap));
    report.num("rss_idle_node0_bytes", mem[0].0 as f64);

    // 2-4, 7: the cluster at rest with no service.
    let rest = cluster.at_rest(opts.window)?;
    rest.report(&mut report, "0 services", "rest0");
    events_row(&mut report, cluster, "the 0-service window");

    // 5. Deploy latency: ack from node 0, then visible on every node.
    let latency_deploys = if large {
        LATENCY_DEPLOYS_LARGE
    } else {
        LATENCY_DEPLOYS
    };
    let mut acks = Vec::with_capacity(latency_deploys);
    let mut visible = Vec::with_capacity(latency_deploys);
    for i in 0..latency_deploys {
        let name = service_name(i);
        let entry = signed_entry(&cluster.operator, &name)?;
        let start = Instant::now();
        cluster.deploy(0, &entry, &name)?;
        acks.push(start.elapsed());
        cluster.wait_visible(&name)?;
        visible.push(start.elapsed());
    }
    println!("deploys:");
    report.row(
        format!("deploy acknowledged (POST /deploy to node 0 until 200, incl. fdatasync), {latency_deploys} deploys: median / p90 / max"),
        ms3(&mut acks),
    );
    report.row(
        format!("deploy visible on all {n} nodes (GET /services/NAME 200 on each, rounds over the nodes still missing it {} ms apart): median / p90 / max", VISIBLE_POLL.as_millis()),
        ms3(&mut visible),
    );
    report.num("deploy_ack_median_ms", ms(percentile(&acks, 50)));
    report.num("deploy_ack_p90_ms", ms(percentile(&acks, 90)));
    report.num("deploy_visible_median_ms", ms(percentile(&visible, 50)));
    report.num("deploy_visible_p90_ms", ms(percentile(&visible, 90)));

    let mut next = latency_deploys;
    match cli_deploy(cluster, &cli_bin, &service_name(next))? {
        Some((exit, seen)) => {
            next += 1;
            report.row(
                format!(
                    "`myco deploy` (sign + POST, process start to exit) / until visible on all {n}"
                ),
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
    events_row(&mut report, cluster, "the timed deploys");

    // 6. 1000 services.
    let entries: Vec<(String, Vec<u8>)> = (next..SERVICES)
        .map(|i| {
            let name = service_name(i);
            signed_entry(&cluster.operator, &name).map(|e| (name, e))
        })
        .collect::<Result<_>>()?;
    let io_before: Vec<(u64, u64)> = cluster.pids().map(proc_io).collect::<Result<_>>()?;
    let cpu_before = cluster.cpu_ns_total()?;
    let machine = Machine::now()?;
    let start = Instant::now();
    let mut post_times = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        let post = Instant::now();
        cluster.deploy(0, entry, name)?;
        post_times.push(post.elapsed());
    }
    let posted = start.elapsed();
    let converge = cluster.wait_services(SERVICES, start, large)?;
    let cpu_bulk = cluster.cpu_ns_total()? - cpu_before;
    let bulk_machine = machine.busy_since()?;
    let bulk_wall = start.elapsed();
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
        "each of those POSTs until its 200: median / p90 / max",
        ms3(&mut post_times),
    );
    let what = format!(
        "from the first of those until all {n} nodes hold {SERVICES} services (/health, polled every {} ms)",
        converge.poll.as_millis()
    );
    match converge.all_at {
        Some(at) => {
            report.row(
                what,
                format!(
                    "{:.2} s (single nodes: median {:.2} s)",
                    at.as_secs_f64(),
                    median_opt(&converge.reached)
                ),
            );
            report.num("bulk_converge_s", at.as_secs_f64());
        }
        None => {
            report.row(
                what,
                format!(
                    "NOT reached in {:.0} s: {} of {n} nodes hold {SERVICES}; counts min / median / max {} / {} / {}",
                    converge.waited.as_secs_f64(),
                    converge.reached.iter().flatten().count(),
                    converge.counts.iter().min().unwrap_or(&0),
                    median_u64(&converge.counts),
                    converge.counts.iter().max().unwrap_or(&0),
                ),
            );
            report.text("bulk_converge_s", "not reached");
        }
    }
    report.row(
        format!("CPU of all {n} daemons together from the first of those deploys until converged; whole machine busy meanwhile"),
        format!(
            "{:.2} CPU-s in {:.2} s of wall time; machine {bulk_machine:.0} % of one core",
            cpu_bulk as f64 / 1e9,
            bulk_wall.as_secs_f64()
        ),
    );
    report.row(
        format!(
            "written while the cluster took those deploys (check that the counters see WAL writes), \
             {n} nodes: `write_bytes` / `wchar`"
        ),
        format!("{} / {} bytes", io_delta(|io| io.1), io_delta(|io| io.0)),
    );
    report.num("bulk_cpu_s", cpu_bulk as f64 / 1e9);
    report.num("bulk_write_bytes_cluster", io_delta(|io| io.1) as f64);
    report.num("bulk_wchar_cluster", io_delta(|io| io.0) as f64);
    report.num("bulk_post_s", posted.as_secs_f64());
    events_row(&mut report, cluster, "those deploys, until converged");
    if large {
        // Under load members may have been suspected or declared dead; at rest means after
        // membership is whole again.
        println!("until every node lists {target} alive again:");
        let healed = cluster.wait_formed(true)?;
        report.row(
            format!("then until every node's /health says members_alive = {target} again"),
            match healed.all_at {
                Some(at) => format!("{:.1} s", at.as_secs_f64()),
                None => format!(
                    "NOT reached in {:.0} s: members_alive min / median / max {} / {} / {}",
                    healed.waited.as_secs_f64(),
                    healed.alive.iter().min().unwrap_or(&0),
                    median_u64(&healed.alive),
                    healed.alive.iter().max().unwrap_or(&0)
                ),
            },
        );
        report.num(
            "heal_s",
            healed.all_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        );
        events_row(&mut report, cluster, "that wait");
        // After the deploys each node still holds the roots its peers had before them, and runs
        // one anti-entropy exchange per round with a peer whose root it believes differs: at
        // rest starts once no node runs one any more.
        let quiet = cluster.wait_quiet()?;
        report.row(
            format!("then until no node runs an anti-entropy step for {} s (`myco_sync_steps_total` unchanged)", QUIET_FOR.as_secs()),
            match quiet {
                Some(at) => format!("{:.1} s", at.as_secs_f64()),
                None => format!("NOT reached in {} s", QUIET_TIMEOUT.as_secs()),
            },
        );
        report.num("quiet_s", quiet.map_or(f64::NAN, |d| d.as_secs_f64()));
    }
    nap(SETTLE)?;
    let mem: Vec<(u64, u64)> = cluster.pids().map(vm_bytes).collect::<Result<_>>()?;
    let heap = cluster.metric_all("myco_heap_bytes")?;
    mem_rows(
        &mut report,
        &mem,
        &format!("holding {SERVICES} services, {n} nodes"),
        "1000",
    );
    report.row(
        format!("`myco_heap_bytes` holding {SERVICES} services, {n} nodes: mean / max"),
        format!(
            "{:.1} / {:.1} KiB",
            mean_u64(&heap) / KIB,
            max_u64(&heap) / KIB
        ),
    );
    report.num("heap_1000_max_bytes", max_u64(&heap));
    println!(
        "cluster holding {SERVICES} services: {}",
        summarize(&cluster.gossip_all()?)
    );

    let rest = cluster.at_rest(opts.window)?;
    rest.report(&mut report, &format!("{SERVICES} services"), "rest1000");
    events_row(&mut report, cluster, "settling and the 1000-service window");

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

    // The daemons' stderr over the whole run, lines grouped by shape (numbers and ids as #).
    let (lines, shapes) = cluster.log_shapes();
    let top: Vec<String> = shapes
        .iter()
        .take(8)
        .map(|(shape, count)| format!("`{shape}` ×{count}"))
        .collect();
    report.row(
        format!("stderr lines of all {n} daemons over the whole run, most common shapes"),
        format!("{lines} lines: {}", top.join("; ")),
    );
    report.num("log_lines", lines as f64);
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
        "\nwall time {:.1} s, window {} s, {n} nodes",
        started.elapsed().as_secs_f64(),
        opts.window.as_secs()
    );
    Ok(())
}

/// A row with the membership changes the daemons logged since the last such row.
fn events_row(report: &mut Report, cluster: &mut Cluster, phase: &str) {
    let events = cluster.log_events();
    report.row(
        format!(
            "member events on stderr during {phase}: lines summed over the nodes / distinct members"
        ),
        events,
    );
}

/// Rows for VmRSS and VmHWM (peak) across the nodes.
fn mem_rows(report: &mut Report, mem: &[(u64, u64)], what: &str, key: &str) {
    let rss: Vec<u64> = mem.iter().map(|m| m.0).collect();
    let hwm: Vec<u64> = mem.iter().map(|m| m.1).collect();
    report.row(
        format!("RSS {what}: VmRSS mean / max, VmHWM (peak) mean / max"),
        format!(
            "{:.2} / {:.2} MiB, peak {:.2} / {:.2} MiB",
            mean_u64(&rss) / MIB,
            max_u64(&rss) / MIB,
            mean_u64(&hwm) / MIB,
            max_u64(&hwm) / MIB
        ),
    );
    report.num(&format!("rss_{key}_mean_bytes"), mean_u64(&rss));
    report.num(&format!("rss_{key}_max_bytes"), max_u64(&rss));
    report.num(&format!("hwm_{key}_mean_bytes"), mean_u64(&hwm));
    report.num(&format!("hwm_{key}_max_bytes"), max_u64(&hwm));
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
    large: bool,
    /// Bytes of each node's stderr already read by `log_events`.
    log_read: Vec<usize>,
}

/// How formation went: per node, when it first listed every other node alive, and its
/// `members_alive` at the end; when all did at once.
struct Formation {
    all_at: Option<Duration>,
    first_complete: Vec<Option<Duration>>,
    alive: Vec<u64>,
    waited: Duration,
    poll: Duration,
}

/// How the bulk deploys spread: per node, when it first held them all; the counts at the end.
struct Converge {
    all_at: Option<Duration>,
    reached: Vec<Option<Duration>>,
    counts: Vec<u64>,
    waited: Duration,
    poll: Duration,
}

impl Cluster {
    /// Makes the keys, certificates and directories; starts nothing.
    fn create(daemon: &Path, count: usize) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("myco-daemon-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        live().dir = Some(dir.clone());
        // From here on, Drop removes the directory.
        let mut cluster = Cluster {
            dir: dir.clone(),
            daemon: daemon.to_path_buf(),
            operator: new_key(&dir.join("operator.key"))?,
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
    fn start(&mut self, rng: &mut Rng) -> Result<()> {
        let operator_hex = hex(&self.operator.public_key().0);
        let addr = |node: &Node| format!("127.0.0.1:{}", node.port);
        for i in 0..self.nodes.len() {
            check_interrupted()?;
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
                .arg(addr(node))
                .arg("--reserve-bytes")
                .arg(RESERVE_BYTES)
                // The bench measures the store, gossip and API; units would go to the host's
                // /etc/systemd/system.
                .arg("--executor")
                .arg("none")
                .arg("--dns")
                .arg("off");
            for &j in &joins {
                command.arg("--join").arg(addr(&self.nodes[j]));
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
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                live().pids.push(pid);
            }
            self.nodes[i].child = Some(child);
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

    fn check_all_alive(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.check_alive(i))
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map_or(0, Child::id))
    }

    /// CPU time of every daemon so far, summed, in nanoseconds.
    fn cpu_ns_total(&self) -> Result<u64> {
        self.pids().map(cpu_ns).sum()
    }

    fn health(&self, i: usize, key: &str) -> Result<u64> {
        let (status, body) = http(&self.nodes[i].socket, "GET", "/health", &[])?;
        if status != 200 {
            return Err(format!("node {i} /health: {status} {body}"));
        }
        json_u64(&body, key).ok_or(format!("node {i} /health has no {key}: {body}"))
    }

    /// Until every node's /health counts every other node alive. A small cluster that does not
    /// form in `FORM_TIMEOUT` is an error; a large one gets `FORM_TIMEOUT_PER_NODE` per node and
    /// then the bench goes on with what it reached.
    fn wait_formed(&mut self, large: bool) -> Result<Formation> {
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
                .map(|i| self.health(i, "members_alive"))
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
                    "  {:5.1} s: {} of {count} nodes at members_alive = {target}; min / median / max {} / {} / {}",
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
                        "the cluster did not form within {timeout:?}: members_alive {alive:?}"
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
    fn wait_services(&self, count: usize, start: Instant, large: bool) -> Result<Converge> {
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

    fn metrics(&self, i: usize) -> Result<String> {
        match http(&self.nodes[i].socket, "GET", "/metrics", &[])? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("node {i} /metrics: {status} {body}")),
        }
    }

    /// One metric family (all samples summed) from every node.
    fn metric_all(&self, name: &str) -> Result<Vec<u64>> {
        (0..self.nodes.len())
            .map(|i| {
                let text = self.metrics(i)?;
                metric(&text, name)
                    .map(|v| v as u64)
                    .ok_or(format!("node {i} /metrics has no {name}"))
            })
            .collect()
    }

    /// Until no node's `myco_sync_steps_total` moves for `QUIET_FOR`; None after `QUIET_TIMEOUT`.
    fn wait_quiet(&mut self) -> Result<Option<Duration>> {
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
    fn gossip_all(&self) -> Result<Vec<Gossip>> {
        (0..self.nodes.len())
            .map(|i| Gossip::parse(&self.metrics(i)?))
            .collect()
    }

    /// Samples every node at the start and end of `window`, during which the bench sends nothing.
    fn at_rest(&mut self, window: Duration) -> Result<Rest> {
        println!("at rest for {} s ...", window.as_secs());
        let before = self.sample_all(true)?;
        let start = Instant::now();
        let machine = Machine::now()?;
        nap(window)?;
        let machine = machine.busy_since()?;
        self.check_all_alive()?;
        let elapsed = start.elapsed();
        let after = self.sample_all(false)?;
        Ok(Rest {
            seconds: elapsed.as_secs_f64(),
            before,
            after,
            machine,
        })
    }

    /// At the start: metrics, then /proc and the state directory; at the end the other way round,
    /// so the bench's own requests fall outside the window.
    fn sample_all(&self, start: bool) -> Result<Vec<Sample>> {
        let n = self.nodes.len();
        let mut metrics = Vec::with_capacity(n);
        let mut procs = Vec::with_capacity(n);
        if start {
            for i in 0..n {
                metrics.push(self.metrics(i)?);
            }
        }
        for (node, pid) in self.nodes.iter().zip(self.pids()) {
            procs.push((
                (cpu_ticks(pid)?, cpu_ns(pid)?),
                proc_io(pid)?,
                list_files(&node.state)?,
                file_len(&node.log),
            ));
        }
        if !start {
            for i in 0..n {
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
                    gossip: Gossip::parse(&text)?,
                    files,
                    log_bytes,
                })
            })
            .collect()
    }

    /// The `member ID WHAT` lines every node wrote to stderr since the last call: per WHAT, the
    /// lines (summed over the nodes) and the distinct members they name.
    fn log_events(&mut self) -> String {
        let mut events: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
            BTreeMap::new();
        for (node, read) in self.nodes.iter().zip(&mut self.log_read) {
            let text = fs::read(&node.log).unwrap_or_default();
            let new = String::from_utf8_lossy(&text[(*read).min(text.len())..]).into_owned();
            // Only whole lines; a partial one is read next time.
            let whole = new.rfind('\n').map_or(0, |i| i + 1);
            *read += whole;
            for line in new[..whole].lines() {
                let message = line.get(3..).unwrap_or("");
                let Some(rest) = message.strip_prefix("member ") else {
                    continue;
                };
                let Some((id, what)) = rest.split_once(' ') else {
                    continue;
                };
                let e = events.entry(what.to_string()).or_default();
                e.0 += 1;
                e.1.insert(id.to_string());
            }
        }
        if events.is_empty() {
            return "none".into();
        }
        events
            .iter()
            .map(|(what, (lines, ids))| format!("{what} {lines} / {}", ids.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every daemon's stderr lines, counted by shape (level kept, any word with a digit as #),
    /// most common first.
    fn log_shapes(&self) -> (usize, Vec<(String, usize)>) {
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

    fn print_logs(&self) {
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
        let _ = fs::remove_dir_all(&self.dir);
        let mut live = live();
        live.pids.clear();
        live.dir = None;
    }
}

/// What a node's /metrics says about its sessions and membership.
#[derive(Clone, Copy)]
struct Gossip {
    sessions: f64,
    handshakes_started: f64,
    handshakes_completed: f64,
    alive: f64,
    suspect: f64,
    dead: f64,
    refused: f64,
    sync_steps: f64,
}

impl Gossip {
    fn parse(text: &str) -> Result<Gossip> {
        let m = |name: &str| metric(text, name).ok_or(format!("/metrics has no {name}"));
        let state = |s: &str| {
            metric_labelled(text, "myco_members", &format!("state=\"{s}\""))
                .ok_or(format!("/metrics has no myco_members{{state=\"{s}\"}}"))
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
fn summarize(g: &[Gossip]) -> String {
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

/// One node at one end of an at-rest window.
struct Sample {
    ticks: u64,
    cpu_ns: u64,
    wchar: u64,
    write_bytes: u64,
    sent_bytes: f64,
    frames_sent: f64,
    allocations: f64,
    gossip: Gossip,
    files: BTreeMap<String, (u64, i128)>,
    log_bytes: u64,
}

struct Rest {
    seconds: f64,
    before: Vec<Sample>,
    after: Vec<Sample>,
    /// The whole machine's busy share over the window, % of one core.
    machine: f64,
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
        // "start→end" per node; with many nodes, each distinct pair once with how many had it.
        let allocs: Vec<String> = if self.before.len() <= NODES_DEFAULT {
            pairs()
                .map(|(b, a)| format!("{}→{}", b.allocations, a.allocations))
                .collect()
        } else {
            let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
            for (b, a) in pairs() {
                *seen
                    .entry((b.allocations as u64, a.allocations as u64))
                    .or_default() += 1;
            }
            seen.iter()
                .map(|((b, a), count)| format!("{b}→{a} on {count} nodes"))
                .collect()
        };
        let allocs_equal = pairs().all(|(b, a)| b.allocations == a.allocations);
        let handshakes =
            per_node(&|b, a| a.gossip.handshakes_started - b.gossip.handshakes_started);
        let syncs = per_node(&|b, a| (a.gossip.sync_steps - b.gossip.sync_steps) / self.seconds);
        let sessions_start: Vec<f64> = self.before.iter().map(|b| b.gossip.sessions).collect();
        let sessions_changed = pairs()
            .filter(|(b, a)| b.gossip.sessions != a.gossip.sessions)
            .count();
        let end: Vec<Gossip> = self.after.iter().map(|a| a.gossip).collect();
        let nodes = self.before.len();
        let secs = self.seconds;
        println!("at rest, {what}, {secs:.1} s:");
        report.row(
            format!("CPU at rest, {what} ({secs:.0} s window): mean / max of {nodes} nodes (schedstat run time; in brackets utime+stime ticks, mean)"),
            format!(
                "{:.3} / {:.3} % of one core ({:.3} %)",
                mean(&cpu),
                max(&cpu),
                mean(&cpu_ticks)
            ),
        );
        report.row(
            format!("whole machine busy during that window (/proc/stat, every process, {} cores): % of one core", cores()),
            format!(
                "{:.1} %, of which these daemons {:.1} %",
                self.machine,
                sum(&cpu)
            ),
        );
        report.row(
            format!("sent at rest, {what}, per node (`myco_sent_bytes_total`, `myco_frames_sent_total`): mean / max"),
            format!(
                "{:.0} / {:.0} bytes/s, {:.2} frames/s mean; anti-entropy steps (`myco_sync_steps_total`) {:.2} / {:.2} per s",
                mean(&sent),
                max(&sent),
                mean(&frames),
                mean(&syncs),
                max(&syncs)
            ),
        );
        report.row(
            format!(
                "written at rest, {what}: `write_bytes` (page cache → disk), {nodes} nodes, extrapolated"
            ),
            format!(
                "{:.0} bytes in {secs:.0} s = {:.0} bytes/hour for the cluster",
                sum(&write_bytes),
                sum(&write_bytes) * per_hour
            ),
        );
        report.row(
            format!("written at rest, {what}: `wchar` (write syscalls, incl. stderr), {nodes} nodes, extrapolated"),
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
        report.row(
            format!("sessions and membership at rest, {what}: handshakes started in the window (all nodes), nodes whose session count changed, mean sessions at the start; at the end"),
            format!(
                "{:.0} handshakes, {sessions_changed} nodes, {:.1}; {}",
                sum(&handshakes),
                mean(&sessions_start),
                summarize(&end)
            ),
        );
        report.num(&format!("{key}_cpu_percent_mean"), mean(&cpu));
        report.num(&format!("{key}_cpu_percent_max"), max(&cpu));
        report.num(&format!("{key}_handshakes_started"), sum(&handshakes));
        report.num(&format!("{key}_sync_steps_per_s_mean"), mean(&syncs));
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

/// A UDP port on 127.0.0.1, free while the returned socket is held.
fn free_udp_port() -> Result<(UdpSocket, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding a UDP port: {e}"))?;
    let port = socket
        .local_addr()
        .map_err(|e| format!("binding a UDP port: {e}"))?
        .port();
    Ok((socket, port))
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

/// The sample of the family `name` with exactly the labels `labels` (as written between the
/// braces, e.g. `state="alive"`).
fn metric_labelled(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
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

/// (VmRSS, VmHWM) from /proc/PID/status, in bytes: resident now, and the peak.
fn vm_bytes(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let get = |key: &str| -> Result<u64> {
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{path} has no {key}"))?;
        Ok(kib * 1024)
    };
    Ok((get("VmRSS:")?, get("VmHWM:")?))
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

/// Busy and total time of every CPU from the first line of /proc/stat, in clock ticks.
struct Machine {
    busy: u64,
    total: u64,
}

impl Machine {
    fn now() -> Result<Machine> {
        let text = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
        // cpu user nice system idle iowait irq softirq steal (guest time is inside user).
        let ticks: Vec<u64> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ticks.len() < 8 {
            return Err("/proc/stat: no cpu line".into());
        }
        let total: u64 = ticks[..8].iter().sum();
        Ok(Machine {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }

    /// The share of the machine busy since `self`, as % of one core.
    fn busy_since(&self) -> Result<f64> {
        let now = Machine::now()?;
        let total = (now.total - self.total).max(1) as f64;
        Ok(100.0 * cores() as f64 * (now.busy - self.busy) as f64 / total)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
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

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

fn median_u64(v: &[u64]) -> u64 {
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The median, in seconds, of the times that are there (NaN if none).
fn median_opt(v: &[Option<Duration>]) -> f64 {
    let mut times: Vec<Duration> = v.iter().flatten().copied().collect();
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort_unstable();
    percentile(&times, 50).as_secs_f64()
}

/// The largest, in seconds, of the times that are there (NaN if none).
fn max_opt(v: &[Option<Duration>]) -> f64 {
    v.iter()
        .flatten()
        .max()
        .map_or(f64::NAN, Duration::as_secs_f64)
}
