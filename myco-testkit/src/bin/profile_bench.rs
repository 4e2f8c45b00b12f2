//! `make bench-profiles`: each network profile (`myco-d --profile lan|wan|metered`) on real
//! daemons on loopback, in one run: the bytes each box sends per second at rest, and the time from
//! a SIGKILL to every other box placing the killed box's services elsewhere. MycoSim's figures for
//! the same (`myco-sim bench --profiles`) are the model; these are the sockets'.
//!
//! Run: `cargo run --release -p myco-testkit --bin profile_bench -- [--nodes N] [--deaths K]
//! [--window S] [--profile P]...` (default 20 nodes, 3 deaths, every profile, the window below). Per profile: the daemons start
//! and form; after one probe of every member by every box on average (`nodes` probe periods,
//! when the sessions have opened), `myco_sent_bytes_total` of every box is read twice, a window
//! apart (a minute, or two member-sync periods where that is longer); then `SERVICES` services are
//! deployed, and `K` boxes are killed one after another, each once the last one's services
//! were placed elsewhere everywhere. Prints one `PROFILE` line per profile, with the profile's
//! own arithmetic, goal and detection bound (`myco_core::config::Profile`) beside the figures.

use myco_core::config::Profile;
use myco_testkit::lossy::{declared_dead_other_than, deploy_all, kill_one, wait_formed, Death};
use myco_testkit::{Cluster, Daemon, NodeOptions};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const NODES: usize = 20;
const DEATHS: usize = 3;
const SERVICES: usize = 20;
const FORM: Duration = Duration::from_secs(120);
const WINDOW_MIN: Duration = Duration::from_secs(60);

struct Options {
    nodes: usize,
    deaths: usize,
    /// The at-rest window, if not the profile's (`window`).
    window: Option<Duration>,
    profiles: Vec<Profile>,
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "profile_bench: {e}\nusage: profile_bench [--nodes N] [--deaths K] [--window S] [--profile lan|wan|metered]..."
            );
            return ExitCode::from(2);
        }
    };
    for p in &o.profiles {
        run(p, &o);
    }
    ExitCode::SUCCESS
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        nodes: NODES,
        deaths: DEATHS,
        window: None,
        profiles: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => o.nodes = number()?,
            "--deaths" => o.deaths = number()?,
            "--window" => o.window = Some(Duration::from_secs(number()? as u64)),
            "--profile" => o.profiles.push(
                Profile::named(&value)
                    .ok_or(format!("--profile {value}: not one of {}", Profile::NAMES))?,
            ),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    // Each death leaves one box fewer; two must remain to place and observe.
    if o.nodes < 3 || o.nodes > 100 || o.deaths + 2 > o.nodes {
        return Err("--nodes from 3 to 100, and --deaths at most nodes - 2".into());
    }
    if o.window.is_some_and(|w| w.is_zero()) {
        return Err("--window must be at least 1 s".into());
    }
    if o.profiles.is_empty() {
        o.profiles = Profile::ALL.to_vec();
    }
    Ok(o)
}

/// One profile's cluster, measured and printed.
fn run(p: &Profile, o: &Options) {
    let mut c = Cluster::new(&format!("profile-{}", p.name));
    for _ in 0..o.nodes {
        c.add(NodeOptions {
            profile: Some(p.name),
            ..NodeOptions::default()
        });
    }
    c.start_all();
    wait_formed(&c, FORM);
    std::thread::sleep(Duration::from_millis(p.probe_interval_ms * o.nodes as u64));
    let (mean, min, max) = rest_bytes_per_s(&c, o.window.unwrap_or_else(|| window(p)));
    deploy_all(&c, SERVICES);
    let bound = Duration::from_millis(4 * p.detection_ms(o.nodes));
    let deaths: Vec<_> = (0..o.deaths).map(|_| kill_one(&mut c, bound)).collect();
    let victims: Vec<&str> = deaths.iter().map(|d| d.victim.as_str()).collect();
    let secs = |f: fn(&Death) -> Duration| {
        let s: Vec<String> = deaths
            .iter()
            .map(|d| format!("{:.2}", f(d).as_secs_f64()))
            .collect();
        s.join(",")
    };
    println!(
        "PROFILE name={} nodes={} rest_bytes_per_s_mean={mean:.0} rest_bytes_per_s_min={min:.0} rest_bytes_per_s_max={max:.0} \
         arithmetic={} goal={} dead_s={} replaced_s={} detection_bound_s={:.1} false_dead={}",
        p.name,
        o.nodes,
        p.rest_bytes_per_s(),
        p.rest_bytes_per_s_goal,
        secs(|d| d.declared_dead),
        secs(|d| d.replaced),
        p.detection_ms(o.nodes) as f64 / 1000.0,
        declared_dead_other_than(&c, &victims),
    );
}

/// A minute, or two member-sync periods where that is longer (a page is part of rest).
fn window(p: &Profile) -> Duration {
    WINDOW_MIN.max(Duration::from_millis(2 * p.member_sync_interval_ms))
}

/// Bytes each box sent per second over `window`, mean, min and max over the boxes, from
/// `myco_sent_bytes_total` read at both ends.
fn rest_bytes_per_s(c: &Cluster, window: Duration) -> (f64, f64, f64) {
    let sent = |c: &Cluster| -> Vec<f64> {
        let sent = |d: &Daemon| d.metric("myco_sent_bytes_total");
        c.daemons.iter().map(sent).collect()
    };
    let before = sent(c);
    let start = Instant::now();
    std::thread::sleep(window);
    let after = sent(c);
    let seconds = start.elapsed().as_secs_f64();
    let rates: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b) / seconds)
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let min = rates.iter().copied().fold(f64::NAN, f64::min);
    (mean, min, rates.iter().copied().fold(f64::NAN, f64::max))
}
