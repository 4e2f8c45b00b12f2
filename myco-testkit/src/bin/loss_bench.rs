//! `make bench-loss`: 20 real daemons on loopback under real packet loss (nftables, 30% then
//! 50%), timed from 100 deploys to every node listing them and from a SIGKILL to the killed box
//! declared dead and its services placed elsewhere; beside each, MycoSim's run of the same size
//! and loss, so the simulator's model is checked against the kernel's sockets. Needs root.
//!
//! Run: `cargo run --release -p myco-testkit --bin loss_bench -- [--nodes N] [--services K]
//! [--loss P]...` (default 20 nodes, 100 services, loss 30 and 50). Prints one `LOSS` line per
//! loss: `real_*` figures from the daemons, `sim_*` from `myco-sim run --json` (median of 5 seeds),
//! and rounds as times over the `lan` profile's 200 ms gossip round.

use myco_core::config::Profile;
use myco_testkit::lossy::{run, Scenario};
use std::ops::RangeInclusive;
use std::process::{Command, ExitCode};

const SIM_SEEDS: u64 = 5;

fn main() -> ExitCode {
    let (nodes, services, losses) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "loss_bench: {e}\nusage: loss_bench [--nodes N] [--services K] [--loss P]..."
            );
            return ExitCode::from(2);
        }
    };
    for loss_percent in losses {
        let s = Scenario {
            nodes,
            services,
            loss_percent,
        };
        let real = run(&format!("loss{loss_percent}"), &s);
        let sim = sim(&s);
        let round = Profile::LAN.gossip_interval_ms as f64 / 1000.0;
        println!(
            "LOSS nodes={nodes} services={services} loss_pct={loss_percent} dropped={} \
             real_converge_s={:.2} real_dead_s={:.2} real_replaced_s={:.2} real_replace_rounds={:.0} \
             real_false_dead={} moved={} sim_replaced_s={:.2} sim_replace_rounds={:.0}",
            real.dropped,
            real.converge.as_secs_f64(),
            real.declared_dead.as_secs_f64(),
            real.replaced.as_secs_f64(),
            real.replaced.as_secs_f64() / round,
            real.false_dead,
            real.moved,
            sim.0,
            sim.1,
        );
    }
    ExitCode::SUCCESS
}

/// MycoSim's median run over `SIM_SEEDS` seeds (by time to replace): seconds and rounds from the
/// kill until every live node places the killed box's services elsewhere. Its convergence time
/// is not comparable (it spreads the deploys over a window and counts from the start) and is left
/// out.
fn sim(s: &Scenario) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (1..=SIM_SEEDS).map(|seed| sim_run(s, seed)).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

fn sim_run(s: &Scenario, seed: u64) -> (f64, f64) {
    // `make bench-loss` builds it first, in the profile `make sim` uses.
    let sim = myco_testkit::bins::workspace_root().join("target/sim/myco-sim");
    let out = Command::new(&sim)
        .args(["run", "--json", "--seed", &seed.to_string()])
        .args(["--nodes", &s.nodes.to_string()])
        .args(["--services", &s.services.to_string()])
        .args(["--loss", &format!("{}", f64::from(s.loss_percent) / 100.0)])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", sim.display()));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        let err = String::from_utf8_lossy(&out.stderr);
        panic!("myco-sim printed no JSON ({e}): {err}")
    });
    let num = |k: &str| json[k].as_f64().unwrap_or(f64::NAN);
    (num("ms_to_replace") / 1000.0, num("rounds_to_replace"))
}

fn args() -> Result<(usize, usize, Vec<u8>), String> {
    let (mut nodes, mut services, mut losses) = (20, 100, Vec::new());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value}: not {what}");
        match flag.as_str() {
            "--nodes" => nodes = within(&value, 2..=200).ok_or(bad("2 to 200"))?,
            "--services" => services = within(&value, 1..=1000).ok_or(bad("1 to 1000"))?,
            "--loss" => losses.push(within(&value, 1..=99).ok_or(bad("1 to 99"))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if losses.is_empty() {
        losses = vec![30, 50];
    }
    Ok((nodes, services, losses))
}

/// `value` as a whole number inside `range`; None for any other text.
fn within<T: std::str::FromStr + PartialOrd>(value: &str, range: RangeInclusive<T>) -> Option<T> {
    value.parse().ok().filter(|n| range.contains(n))
}
