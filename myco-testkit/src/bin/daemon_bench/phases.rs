//! The bench's run, phase by phase. Each phase measures one thing, prints its rows as it goes and
//! adds its figures to the report; `run` calls them in order on one cluster.

use crate::cluster::{summarize, Cluster, Converge, Formation};
use crate::live::{ensure_limits, nap, Rng};
use crate::procfs::{cores, proc_io, vm_bytes, Machine};
use crate::report::{
    events_row, max_opt, max_u64, mean_u64, median_opt, median_u64, mem_rows, ms, ms3, percentile,
    staleness, Report,
};
use crate::{
    Options, Result, EXEC_PATH, JOINS_RANDOM, KIB, LATENCY_DEPLOYS, LATENCY_DEPLOYS_LARGE, MIB,
    NODES_DEFAULT, QUIET_FOR, QUIET_TIMEOUT, SERVICES, SETTLE, STAGGER, VISIBLE_POLL,
};
use myco_core::crypto::SigningKey;
use myco_testkit::{bins, entries};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What every phase shares: the options, the report, and where the binaries are.
pub struct Bench<'a> {
    opts: &'a Options,
    n: usize,
    large: bool,
    started: Instant,
    profile_dir: PathBuf,
    report: Report,
}

/// Runs every phase on a cluster kept in `slot`, so that `main` can print its logs on an error.
pub fn run(opts: &Options, slot: &mut Option<Cluster>) -> Result<()> {
    let mut bench = Bench::new(opts)?;
    let cluster = slot.insert(Cluster::create(bins::daemon(), opts.nodes)?);
    formation(&mut bench, cluster)?;
    idle(&mut bench, cluster)?;
    at_rest(&mut bench, cluster, "0 services", "rest0")?;
    events_row(&mut bench.report, cluster, "the 0-service window");
    let next = timed_deploys(&mut bench, cluster)?;
    let next = cli_deploy_row(&mut bench, cluster, next)?;
    events_row(&mut bench.report, cluster, "the timed deploys");
    bulk_deploys(&mut bench, cluster, next)?;
    events_row(&mut bench.report, cluster, "those deploys, until converged");
    if bench.large {
        heal(&mut bench, cluster)?;
    }
    nap(SETTLE)?;
    holding(&mut bench, cluster)?;
    let what = format!("{SERVICES} services");
    at_rest(&mut bench, cluster, &what, "rest1000")?;
    events_row(
        &mut bench.report,
        cluster,
        "settling and the 1000-service window",
    );
    binary_sizes(&mut bench);
    log_shapes_row(&mut bench, cluster);
    bench.finish();
    Ok(())
}

/// `--formation-only` (`make bench-formation`): starts the cluster as `run` does, waits until
/// every node lists every other alive, and prints one line comparable from run to run. A member
/// declared dead meanwhile is a false death: nothing was stopped.
pub fn formation_only(opts: &Options, slot: &mut Option<Cluster>) -> Result<()> {
    let bench = Bench::new(opts)?;
    let cluster = slot.insert(Cluster::create(bins::daemon(), opts.nodes)?);
    let s = start(&bench, cluster)?;
    let events = cluster.member_events();
    let count = |what: &str| events.get(what).map_or((0, 0), |(l, ids)| (*l, ids.len()));
    let (dead_lines, false_dead) = count("is dead");
    let (_, suspected) = count("is suspect");
    let formed = s.formed.all_at.map_or("not-reached".to_string(), |d| {
        format!("{:.2}", d.as_secs_f64())
    });
    println!(
        "FORMED nodes={} last_start_to_all_alive_s={formed} false_dead={false_dead} dead_lines={dead_lines} suspected={suspected} starts_s={:.1} cpu_s={:.2} machine_busy_pct={:.0}",
        bench.n,
        (s.last_start - s.first_start).as_secs_f64(),
        s.cpu_ns as f64 / 1e9,
        s.machine,
    );
    Ok(())
}

impl Bench<'_> {
    /// Finds the binaries and prints the limits and the load the run starts with.
    fn new(opts: &Options) -> Result<Bench<'_>> {
        let n = opts.nodes;
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
        Ok(Bench {
            opts,
            n,
            large: n > NODES_DEFAULT,
            started: Instant::now(),
            profile_dir: bins::profile_dir(),
            report,
        })
    }

    /// The table of every row, the JSON line of every figure, and the run's wall time.
    fn finish(&mut self) {
        self.report
            .num("bench_wall_s", self.started.elapsed().as_secs_f64());
        println!("\n| what | figure |\n|---|---|");
        for (what, figure) in &self.report.rows {
            println!("| {what} | {figure} |");
        }
        let fields: Vec<String> = self
            .report
            .json
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!("\n{{{}}}", fields.join(","));
        println!(
            "\nwall time {:.1} s, window {} s, {} nodes",
            self.started.elapsed().as_secs_f64(),
            self.opts.window.as_secs(),
            self.n
        );
    }
}

/// How the start went, for the formation rows.
struct Started {
    first_start: Instant,
    last_start: Instant,
    formed: Formation,
    cpu_ns: u64,
    machine: f64,
    wall: Duration,
}

/// Starts the daemons, waits until every node lists every other alive, settles, and reports how
/// long that took and what it cost.
fn formation(bench: &mut Bench, cluster: &mut Cluster) -> Result<()> {
    let started = start(bench, cluster)?;
    println!(
        "cluster after formation: {}",
        summarize(&cluster.gossip_all()?)
    );
    println!("settling {} s", SETTLE.as_secs());
    nap(SETTLE)?;
    println!("formation:");
    formation_rows(bench, &started);
    bench.report.row(
        "CPU of all daemons together from the first start until formed; whole machine busy meanwhile",
        format!(
            "{:.2} CPU-s in {:.1} s of wall time; machine {:.0} % of one core",
            started.cpu_ns as f64 / 1e9,
            started.wall.as_secs_f64(),
            started.machine
        ),
    );
    bench.report.num("form_cpu_s", started.cpu_ns as f64 / 1e9);
    events_row(&mut bench.report, cluster, "start, formation and settling");
    Ok(())
}

/// Starts every daemon and waits for formation, measuring the CPU it took.
fn start(bench: &Bench, cluster: &mut Cluster) -> Result<Started> {
    let n = bench.n;
    let mut rng = Rng::new()?;
    let first_start = Instant::now();
    let machine = Machine::now()?;
    cluster.start(&mut rng)?;
    let last_start = Instant::now();
    let staggered = if bench.large {
        format!(
            " (staggered: each joins node 0 and {JOINS_RANDOM} random earlier nodes, {} ms apart)",
            STAGGER.as_millis()
        )
    } else {
        String::new()
    };
    println!(
        "{n} daemons started in {:.1} s{staggered}",
        ms(first_start.elapsed()) / 1000.0
    );
    let formed = cluster.wait_formed(bench.large)?;
    Ok(Started {
        first_start,
        last_start,
        formed,
        cpu_ns: cluster.cpu_ns_total()?,
        machine: machine.busy_since()?,
        wall: first_start.elapsed(),
    })
}

/// The rows on how long formation took, or how far it got.
fn formation_rows(bench: &mut Bench, s: &Started) {
    let (n, report) = (bench.n, &mut bench.report);
    if bench.large {
        report.row(
            format!("{n} daemons started one after another (each once the one before answered /health, {} ms apart; each joins node 0 and {JOINS_RANDOM} random earlier nodes)", STAGGER.as_millis()),
            format!("{:.1} s", (s.last_start - s.first_start).as_secs_f64()),
        );
    }
    let target = n - 1;
    let formed = &s.formed;
    let Some(at) = formed.all_at else {
        report.row(
            format!("until every node's /health says peers_alive = {target}"),
            format!(
                "NOT reached in {:.0} s: {} of {n} nodes at {target} at the end ({} ever were); peers_alive min / median / max {} / {} / {}",
                formed.waited.as_secs_f64(),
                formed.alive.iter().filter(|&&a| a == target as u64).count(),
                formed.first_complete.iter().flatten().count(),
                formed.alive.iter().min().unwrap_or(&0),
                median_u64(&formed.alive),
                formed.alive.iter().max().unwrap_or(&0),
            ),
        );
        report.text("form_s_after_last_start", "not reached");
        return;
    };
    let since_first = at + (s.last_start - s.first_start);
    report.row(
        format!("until every node's /health says peers_alive = {target} (polled every {} ms): from the last start / from the first", formed.poll.as_millis()),
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

/// RSS and heap of the formed cluster holding no service.
fn idle(bench: &mut Bench, cluster: &mut Cluster) -> Result<()> {
    let (n, report) = (bench.n, &mut bench.report);
    let mem: Vec<(u64, u64)> = cluster.pids().map(vm_bytes).collect::<Result<_>>()?;
    println!("idle:");
    report.row(
        "RSS of node 0, idle (cluster formed, 0 services)",
        format!("{:.2} MiB", mem[0].0 as f64 / MIB),
    );
    mem_rows(report, &mem, &format!("idle, {n} nodes"), "idle");
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
    Ok(())
}

/// CPU, bytes sent and written, and allocations of the cluster left alone for the window.
fn at_rest(bench: &mut Bench, cluster: &mut Cluster, what: &str, key: &str) -> Result<()> {
    let rest = cluster.at_rest(bench.opts.window)?;
    rest.report(&mut bench.report, what, key);
    Ok(())
}

/// Deploys timed one by one: acknowledged by node 0, then visible on every node. Returns the
/// index of the next service to deploy.
fn timed_deploys(bench: &mut Bench, cluster: &mut Cluster) -> Result<usize> {
    let count = if bench.large {
        LATENCY_DEPLOYS_LARGE
    } else {
        LATENCY_DEPLOYS
    };
    let mut acks = Vec::with_capacity(count);
    let mut visible = Vec::with_capacity(count);
    for i in 0..count {
        let name = service_name(i);
        let entry = signed_entry(&cluster.operator, &name)?;
        let start = Instant::now();
        cluster.deploy(0, &entry, &name)?;
        acks.push(start.elapsed());
        cluster.wait_visible(&name)?;
        visible.push(start.elapsed());
    }
    println!("deploys:");
    let report = &mut bench.report;
    report.row(
        format!("deploy acknowledged (POST /deploy to node 0 until 200, incl. fdatasync), {count} deploys: median / p90 / max"),
        ms3(&mut acks),
    );
    report.row(
        format!("deploy visible on all {} nodes (GET /services/NAME 200 on each, rounds over the nodes still missing it {} ms apart): median / p90 / max", bench.n, VISIBLE_POLL.as_millis()),
        ms3(&mut visible),
    );
    report.num("deploy_ack_median_ms", ms(percentile(&acks, 50)));
    report.num("deploy_ack_p90_ms", ms(percentile(&acks, 90)));
    report.num("deploy_visible_median_ms", ms(percentile(&visible, 50)));
    report.num("deploy_visible_p90_ms", ms(percentile(&visible, 90)));
    Ok(count)
}

/// One `myco deploy`, end to end, if this `myco` has the command. Returns the index of the next
/// service to deploy.
fn cli_deploy_row(bench: &mut Bench, cluster: &mut Cluster, next: usize) -> Result<usize> {
    let report = &mut bench.report;
    let Some((exit, seen)) = cli_deploy(cluster, bins::cli(), &service_name(next))? else {
        report.row(
            "`myco deploy` end to end",
            "not measured: `myco deploy --help` fails",
        );
        report.text("cli_deploy_ms", "not measured");
        return Ok(next);
    };
    report.row(
        format!(
            "`myco deploy` (sign + POST, process start to exit) / until visible on all {}",
            bench.n
        ),
        format!("{:.1} ms / {:.1} ms", ms(exit), ms(seen)),
    );
    report.num("cli_deploy_ms", ms(exit));
    report.num("cli_deploy_visible_ms", ms(seen));
    Ok(next + 1)
}

/// What the bulk deploys measured.
struct Bulk {
    deploys: usize,
    posted: Duration,
    post_times: Vec<Duration>,
    converge: Converge,
    cpu_ns: u64,
    machine: f64,
    wall: Duration,
    /// (`wchar`, `write_bytes`) written by the whole cluster meanwhile.
    written: (u64, u64),
}

/// Deploys the rest of `SERVICES` one after another to node 0, then waits until every node holds
/// them all; measures the CPU and the bytes written meanwhile.
fn bulk_deploys(bench: &mut Bench, cluster: &mut Cluster, next: usize) -> Result<()> {
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
    let converge = cluster.wait_services(SERVICES, start, bench.large)?;
    let cpu_ns = cluster.cpu_ns_total()? - cpu_before;
    let machine = machine.busy_since()?;
    let wall = start.elapsed();
    let io_after: Vec<(u64, u64)> = cluster.pids().map(proc_io).collect::<Result<_>>()?;
    let delta = |f: fn(&(u64, u64)) -> u64| -> u64 {
        io_before
            .iter()
            .zip(&io_after)
            .map(|(b, a)| f(a) - f(b))
            .sum()
    };
    let bulk = Bulk {
        deploys: entries.len(),
        posted,
        post_times,
        converge,
        cpu_ns,
        machine,
        wall,
        written: (delta(|io| io.0), delta(|io| io.1)),
    };
    bulk_rows(bench, bulk);
    Ok(())
}

/// The rows on the bulk deploys: posting, converging, CPU and bytes written.
fn bulk_rows(bench: &mut Bench, mut bulk: Bulk) {
    let (n, report) = (bench.n, &mut bench.report);
    println!("{SERVICES} services:");
    report.row(
        format!(
            "{} deploys POSTed one after another to node 0, each acknowledged",
            bulk.deploys
        ),
        format!(
            "{:.2} s ({:.0} deploys/s)",
            bulk.posted.as_secs_f64(),
            bulk.deploys as f64 / bulk.posted.as_secs_f64()
        ),
    );
    report.row(
        "each of those POSTs until its 200: median / p90 / max",
        ms3(&mut bulk.post_times),
    );
    converge_row(report, n, &bulk.converge);
    report.row(
        format!("CPU of all {n} daemons together from the first of those deploys until converged; whole machine busy meanwhile"),
        format!(
            "{:.2} CPU-s in {:.2} s of wall time; machine {:.0} % of one core",
            bulk.cpu_ns as f64 / 1e9,
            bulk.wall.as_secs_f64(),
            bulk.machine
        ),
    );
    let (wchar, write_bytes) = bulk.written;
    report.row(
        format!(
            "written while the cluster took those deploys (check that the counters see WAL writes), \
             {n} nodes: `write_bytes` / `wchar`"
        ),
        format!("{write_bytes} / {wchar} bytes"),
    );
    report.num("bulk_cpu_s", bulk.cpu_ns as f64 / 1e9);
    report.num("bulk_write_bytes_cluster", write_bytes as f64);
    report.num("bulk_wchar_cluster", wchar as f64);
    report.num("bulk_post_s", bulk.posted.as_secs_f64());
}

/// The row on how long the bulk deploys took to reach every node, or how far they got.
fn converge_row(report: &mut Report, n: usize, converge: &Converge) {
    let what = format!(
        "from the first of those until all {n} nodes hold {SERVICES} services (/health, polled every {} ms)",
        converge.poll.as_millis()
    );
    let Some(at) = converge.all_at else {
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
        return;
    };
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

/// Large clusters: under load members may have been suspected or declared dead, so at rest
/// starts once membership is whole again and no node runs anti-entropy any more.
fn heal(bench: &mut Bench, cluster: &mut Cluster) -> Result<()> {
    let target = bench.n - 1;
    println!("until every node lists {target} alive again:");
    let healed = cluster.wait_formed(true)?;
    let report = &mut bench.report;
    report.row(
        format!("then until every node's /health says peers_alive = {target} again"),
        match healed.all_at {
            Some(at) => format!("{:.1} s", at.as_secs_f64()),
            None => format!(
                "NOT reached in {:.0} s: peers_alive min / median / max {} / {} / {}",
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
    events_row(report, cluster, "that wait");
    // After the deploys each node still holds the roots its peers had before them, and runs one
    // anti-entropy exchange per round with a peer whose root it believes differs: at rest starts
    // once no node runs one any more.
    let quiet = cluster.wait_quiet()?;
    report.row(
        format!("then until no node runs an anti-entropy step for {} s (`myco_sync_steps_total` unchanged)", QUIET_FOR.as_secs()),
        match quiet {
            Some(at) => format!("{:.1} s", at.as_secs_f64()),
            None => format!("NOT reached in {} s", QUIET_TIMEOUT.as_secs()),
        },
    );
    report.num("quiet_s", quiet.map_or(f64::NAN, |d| d.as_secs_f64()));
    Ok(())
}

/// RSS and heap of the cluster holding every service.
fn holding(bench: &mut Bench, cluster: &mut Cluster) -> Result<()> {
    let (n, report) = (bench.n, &mut bench.report);
    let mem: Vec<(u64, u64)> = cluster.pids().map(vm_bytes).collect::<Result<_>>()?;
    let heap = cluster.metric_all("myco_heap_bytes")?;
    mem_rows(
        report,
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
    Ok(())
}

/// The sizes of the release binaries, x86_64 and (if built) aarch64.
fn binary_sizes(bench: &mut Bench) {
    println!("binaries:");
    let profile_dir = bench.profile_dir.as_path();
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let arm_dir = target_dir.join("aarch64-unknown-linux-gnu").join("release");
    for (arch, dir) in [("x86_64", profile_dir), ("aarch64", &arm_dir)] {
        for bin in ["myco-d", "myco"] {
            let key = format!("size_{arch}_{}", bin.replace('-', "_"));
            let Ok(m) = fs::metadata(dir.join(bin)) else {
                bench.report.row(format!("{bin} size, {arch}"), "not built");
                bench.report.text(&key, "not built");
                continue;
            };
            bench.report.row(
                format!("{bin} size, {arch} (release, stripped)"),
                format!(
                    "{} bytes ({:.2} MiB){}",
                    m.len(),
                    m.len() as f64 / MIB,
                    staleness(&m, &profile_dir.join(bin))
                ),
            );
            bench.report.num(&key, m.len() as f64);
        }
    }
}

/// The daemons' stderr over the whole run, lines grouped by shape (numbers and ids as #).
fn log_shapes_row(bench: &mut Bench, cluster: &Cluster) {
    let (lines, shapes) = cluster.log_shapes();
    let top: Vec<String> = shapes
        .iter()
        .take(8)
        .map(|(shape, count)| format!("`{shape}` ×{count}"))
        .collect();
    bench.report.row(
        format!(
            "stderr lines of all {} daemons over the whole run, most common shapes",
            bench.n
        ),
        format!("{lines} lines: {}", top.join("; ")),
    );
    bench.report.num("log_lines", lines as f64);
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

/// `postcard(body) || signature` for a minimal service, versioned with the wall clock and signed
/// through the kit (and so through `myco_core::crypto::sign_entry`).
fn signed_entry(operator: &SigningKey, name: &str) -> Result<Vec<u8>> {
    let clock = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970")?
            .as_millis(),
    )
    .map_err(|_| "clock overflow")?;
    Ok(entries::exec_entry(operator, name, clock, EXEC_PATH))
}
