//! Benchmark of real `myco-d` processes: a cluster on loopback (five nodes unless `--nodes` says
//! otherwise), measured at rest and while it takes deploys (issue 5). It records RSS (resident
//! and peak) idle and holding 1000 services, CPU, bytes sent and bytes written at rest, deploy
//! latency (acknowledged, and visible on every node), the time 1000 services take to reach every
//! node, and the binaries' sizes.
//!
//! Run: `cargo run --release -p myco-testkit --bin daemon_bench -- [--seconds S] [--nodes N]
//! [--formation-only]` (`make bench` does; `make bench-formation NODES=N` runs only the start and
//! formation and prints one `FORMED nodes=N last_start_to_all_alive_s=.. false_dead=..` line). `S` is the length of each at-rest window (default 20), `N` the number of
//! daemons (default 5, at most `MEMBERS_MAX + 1`). The daemons are the `myco-d` next to this
//! binary (`target/release`), found, and built if missing or stale, by `myco_testkit::bins`;
//! `myco deploy` is timed if `target/release/myco` has that command.
//!
//! The run is a sequence of phases (`phases`), each printing its rows as it measures them:
//! formation, idle, at rest with 0 services, timed deploys, 1000 services, at rest with 1000,
//! binary sizes and the daemons' logs; then the table and one JSON line of every figure.
//!
//! Keys come from fixed seeds (`myco_testkit::keys`) and certificates are made in-process with
//! myco-core; each daemon gets its own state
//! directory and socket under one temporary directory and listens on 127.0.0.1 only. With five
//! nodes or fewer, nodes 1.. join node 0 and start together. With more, the start is staggered:
//! each node starts once the one before answers /health (and `STAGGER` later), joining node 0 and
//! `JOINS_RANDOM` random earlier nodes; formation is then awaited through every node's /health
//! (`peers_alive` = N-1) with a generous timeout, after which the bench goes on and reports how
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

mod cluster;
mod live;
mod phases;
mod procfs;
mod report;
mod rest;

use myco_core::config::MEMBERS_MAX;
use std::process::ExitCode;
use std::time::Duration;

/// Nodes unless `--nodes` says otherwise; above it the start is staggered.
pub const NODES_DEFAULT: usize = 5;
/// Services the cluster holds at the end; the latency deploys and the CLI deploy are among them.
pub const SERVICES: usize = 1000;
/// Deploys timed one by one (ack, then visible on every node); fewer above `NODES_DEFAULT`
/// nodes, where each is visible only after several gossip rounds and every poll asks every node.
pub const LATENCY_DEPLOYS: usize = 20;
pub const LATENCY_DEPLOYS_LARGE: usize = 10;
pub const WINDOW_DEFAULT_SECONDS: u64 = 20;
/// After every node sees every other alive, the cluster runs this long before a window starts, so
/// start-up work (handshakes, the first peers file) stays out of "at rest".
pub const SETTLE: Duration = Duration::from_secs(3);
/// Staggered start: the pause between one node answering /health and the next one starting, and
/// how many random earlier nodes each joins besides node 0.
pub const STAGGER: Duration = Duration::from_millis(50);
pub const JOINS_RANDOM: usize = 2;
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Per node, for clusters above `NODES_DEFAULT` (so 300 s for 100 nodes).
pub const FORM_TIMEOUT_PER_NODE: Duration = Duration::from_secs(3);
pub const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const VISIBLE_TIMEOUT_LARGE: Duration = Duration::from_secs(60);
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONVERGE_TIMEOUT_LARGE: Duration = Duration::from_secs(300);
pub const VISIBLE_POLL: Duration = Duration::from_millis(5);
pub const CONVERGE_POLL: Duration = Duration::from_millis(20);
pub const CONVERGE_POLL_LARGE: Duration = Duration::from_millis(100);
pub const FORM_POLL: Duration = Duration::from_millis(50);
pub const FORM_POLL_LARGE: Duration = Duration::from_millis(250);
/// Large clusters: after the bulk deploys, at rest means no anti-entropy step for this long.
pub const QUIET_FOR: Duration = Duration::from_secs(2);
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a long wait prints where it stands.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
pub const RESERVE_BYTES: &str = "1048576";
/// An aarch64 binary built this long before the x86_64 one is reported as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
pub const EXEC_PATH: &str = "/usr/bin/true";
pub const SECONDS_PER_HOUR: f64 = 3600.0;
pub const KIB: f64 = 1024.0;
pub const MIB: f64 = 1024.0 * 1024.0;

pub type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: daemon_bench [--seconds S] [--nodes N] [--formation-only]";

pub struct Options {
    pub window: Duration,
    pub nodes: usize,
    /// Only start the cluster and measure formation (`make bench-formation`).
    pub formation_only: bool,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("daemon_bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    live::install_cleanup_handlers();
    let mut cluster = None;
    let result = if opts.formation_only {
        phases::formation_only(&opts, &mut cluster)
    } else {
        phases::run(&opts, &mut cluster)
    };
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
        formation_only: false,
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
            "--formation-only" => opts.formation_only = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(opts)
}
