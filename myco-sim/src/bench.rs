//! `myco-sim bench`: the convergence figures recorded in docs/benchmarks.md.
//!
//! Rounds are gossip rounds (`GOSSIP_INTERVAL_MS`) from the submission to the moment every node
//! holds the same state. Deploys are submitted all at once at random nodes, so the figure is the
//! spread time, not the submission window. Medians over `--seeds` seeds (default 20).

use crate::cluster::Cluster;
use crate::report::run;
use crate::scenario::Scenario;
use myco_core::config::{FRAME_BYTES, GOSSIP_INTERVAL_MS};
use pico_args::Arguments;

const NODES: [usize; 4] = [10, 50, 100, 250];
const LOSSES: [f64; 3] = [0.0, 0.1, 0.5];

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median rounds to convergence over `seeds` seeds; `None` if any run failed.
fn rounds(nodes: usize, services: usize, loss: f64, seeds: u64) -> Option<u64> {
    let mut all = Vec::new();
    for seed in 1..=seeds {
        let mut s = Scenario::standard(seed, nodes, services, loss);
        s.ops_window_ms = 0;
        let (r, _) = run(&s);
        if r.failure.is_some() {
            eprintln!("bench run failed; reproduce with: {}", s.command());
            return None;
        }
        all.push(r.rounds);
    }
    Some(median(all))
}

fn table(services: usize, seeds: u64) {
    println!("\nrounds until all nodes hold {services} new deploy(s), median of {seeds} seeds");
    println!("| nodes | loss 0% | loss 10% | loss 50% |\n|---|---|---|---|");
    for n in NODES {
        let cells: Vec<String> = LOSSES
            .iter()
            .map(|&l| rounds(n, services, l, seeds).map_or("FAILED".into(), |r| r.to_string()))
            .collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
}

fn standard_wall_time(seeds: u64) {
    let mut walls = Vec::new();
    for seed in 1..=seeds {
        let (r, wall_ms) = run(&Scenario::standard(seed, 50, 1000, 0.5));
        assert!(
            r.failure.is_none(),
            "standard scenario failed for seed {seed}"
        );
        walls.push(wall_ms as u64);
    }
    println!("\nstandard scenario (50 nodes, 1000 services, 50% loss): median wall {} ms, max {} ms over {seeds} seeds",
        median(walls.clone()), walls.iter().max().expect("seeds > 0"));
}

fn at_rest() {
    let mut c = Cluster::new(&Scenario::standard(1, 50, 100, 0.0));
    let r = c.run();
    assert!(r.failure.is_none(), "at-rest setup failed to converge");
    let written = c.disk_written_bytes();
    let frames = c.frames_at_rest(60_000);
    println!(
        "\nat rest (50 nodes, 100 services, converged, 60 s more): {frames:.2} frames = {:.0} bytes per node per round ({} ms); {} bytes written to disk",
        frames * FRAME_BYTES as f64,
        GOSSIP_INTERVAL_MS,
        c.disk_written_bytes() - written
    );
}

pub fn command(mut args: Arguments) -> Result<u8, String> {
    let seeds: u64 = args
        .opt_value_from_str("--seeds")
        .map_err(|e| format!("--seeds: {e}"))?
        .unwrap_or(20);
    let rest = args.finish();
    if !rest.is_empty() || seeds == 0 {
        return Err(format!(
            "usage: myco-sim bench [--seeds N] (N > 0), got {rest:?}"
        ));
    }
    table(1, seeds);
    table(1000, seeds);
    standard_wall_time(seeds);
    at_rest();
    Ok(0)
}
