//! `myco-sim gauntlet`: seed after seed with swarm parameters, until the time budget runs out.
//!
//! Each seed draws every dimension (nodes, services, loss, duplication, latency, partitions,
//! crashes) from itself, runs a safety phase with faults and a liveness phase without, and must
//! converge. Every failure prints the command that reproduces it. The wall clock only decides when
//! to stop starting seeds; it never influences a run.

use crate::report::run;
use crate::scenario::Scenario;
use pico_args::Arguments;
use std::time::{Duration, Instant as WallClock};

pub fn command(mut args: Arguments) -> Result<u8, String> {
    let seconds: u64 = args
        .value_from_str("--seconds")
        .map_err(|e| format!("--seconds: {e}"))?;
    let mut seed: u64 = args
        .opt_value_from_str("--seed")
        .map_err(|e| format!("--seed: {e}"))?
        .unwrap_or(1);
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}"));
    }
    let deadline = WallClock::now() + Duration::from_secs(seconds);
    println!("gauntlet: {seconds} s from seed {seed}");
    let (mut runs, mut failures, mut worst) = (0u64, 0u64, 0u8);
    while WallClock::now() < deadline {
        let s = Scenario::swarm(seed);
        let (r, wall_ms) = run(&s);
        runs += 1;
        match &r.failure {
            None => println!(
                "seed {seed}: ok ({} nodes, {} services, loss {:.0}%, crashes {}, partition {}, adversary {}, rotate {}) converged in {} rounds, {}, {wall_ms} ms",
                s.nodes,
                s.services,
                s.loss_ppm as f64 / 1e4,
                s.crashes,
                s.partitions,
                s.adversary,
                s.rotate,
                r.rounds,
                r.rounds_to_replace.map_or("no node killed".to_string(), |n| {
                    format!("a killed node's services placed elsewhere in {n} rounds")
                })
            ),
            Some(f) => {
                failures += 1;
                worst = worst.max(f.exit_code() as u8);
                println!("seed {seed}: FAILED {f:?}\n  reproduce with: {}", s.command());
            }
        }
        seed = seed.wrapping_add(1);
    }
    println!("gauntlet: {runs} seeds, {failures} failures");
    Ok(worst)
}
