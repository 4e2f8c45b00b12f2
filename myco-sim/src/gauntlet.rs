//! `myco-sim gauntlet`: seed after seed with swarm parameters, until the time budget runs out.
//!
//! Each seed draws every dimension (nodes, services, loss, duplication, latency, partitions,
//! crashes) from itself, runs a safety phase with faults and a liveness phase without, and must
//! converge. Every failure prints the command that reproduces it. The wall clock only decides when
//! to stop starting seeds; it never influences a run.
//!
//! Seeds run on `--jobs` threads at once (default: one per core). A seed's run shares nothing with
//! another's (each builds its own cluster, and the allocation counter is per thread), so a seed
//! gives the same result on any thread and beside any other; only which seeds a time budget
//! reaches depends on the machine, as before.

use crate::report::run;
use crate::scenario::Scenario;
use pico_args::Arguments;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant as WallClock};

/// Stack of each worker thread: a run keeps its nodes boxed, but its checks put a few of the
/// core's fixed tables on the stack, so leave the room the main thread has.
const WORKER_STACK: usize = 8 << 20;
/// The exit code of a gauntlet in which a seed panicked: a broken assertion is a safety failure.
const PANIC_EXIT: u8 = 2;
/// More threads than this would only hold more clusters in memory at once.
const JOBS_MAX: usize = 64;

/// What the seeds run so far found, shared by the workers.
#[derive(Default)]
struct Tally {
    runs: u64,
    failures: u64,
    worst: u8,
}

pub fn command(mut args: Arguments) -> Result<u8, String> {
    let seconds: u64 = args
        .value_from_str("--seconds")
        .map_err(|e| format!("--seconds: {e}"))?;
    let seed: u64 = args
        .opt_value_from_str("--seed")
        .map_err(|e| format!("--seed: {e}"))?
        .unwrap_or(1);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let jobs: usize = args
        .opt_value_from_str("--jobs")
        .map_err(|e| format!("--jobs: {e}"))?
        .unwrap_or(cores);
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}"));
    }
    if !(1..=JOBS_MAX).contains(&jobs) {
        return Err(format!("--jobs: {jobs} is not within 1..={JOBS_MAX}"));
    }
    let deadline = WallClock::now() + Duration::from_secs(seconds);
    println!("gauntlet: {seconds} s from seed {seed}, {jobs} at a time");
    let next = AtomicU64::new(seed);
    let tally = Mutex::new(Tally::default());
    thread::scope(|scope| -> Result<(), String> {
        for _ in 0..jobs {
            thread::Builder::new()
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, || work(&next, deadline, &tally))
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        Ok(())
    })?;
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("gauntlet: {} seeds, {} failures", t.runs, t.failures);
    Ok(t.worst)
}

/// Runs the next seed not taken until the deadline, printing one line per seed.
fn work(next: &AtomicU64, deadline: WallClock, tally: &Mutex<Tally>) {
    while WallClock::now() < deadline {
        let seed = next.fetch_add(1, Ordering::Relaxed);
        let s = Scenario::swarm(seed);
        // A panic (a core assertion) is a safety failure of this seed: the others go on, and it
        // is reported with its reproduction like any failure (the panic hook has printed why).
        let ran = panic::catch_unwind(AssertUnwindSafe(|| run(&s)));
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        t.runs += 1;
        let Ok((r, wall_ms)) = ran else {
            t.failures += 1;
            t.worst = t.worst.max(PANIC_EXIT);
            println!("seed {seed}: PANICKED\n  reproduce with: {}", s.command());
            continue;
        };
        match &r.failure {
            None => println!(
                "seed {seed}: ok ({} nodes, {} services, loss {:.0}%, crashes {}, partition {}, adversary {}, rotate {}, profile {}) converged in {} rounds, {}, {wall_ms} ms",
                s.nodes,
                s.services,
                s.loss_ppm as f64 / 1e4,
                s.crashes,
                s.partitions,
                s.adversary,
                s.rotate,
                s.profile.name,
                r.rounds,
                r.rounds_to_replace.map_or("no node killed".to_string(), |n| {
                    format!("a killed node's services placed elsewhere in {n} rounds")
                })
            ),
            Some(f) => {
                t.failures += 1;
                t.worst = t.worst.max(f.exit_code() as u8);
                println!("seed {seed}: FAILED {f:?}\n  reproduce with: {}", s.command());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds side by side on two threads give what each gives alone on this one, trace hash and
    /// all: nothing of one run leaks into another (the allocation counter included, or the runs
    /// would fail with allocations after boot).
    #[test]
    fn seeds_side_by_side_give_what_each_gives_alone() {
        let scenarios: Vec<Scenario> = (7..9)
            .map(|seed| Scenario::standard(seed, 6, 20, 0.2))
            .collect();
        let alone: Vec<_> = scenarios.iter().map(|s| run(s).0).collect();
        let side_by_side: Vec<_> = thread::scope(|scope| {
            let handles: Vec<_> = scenarios
                .iter()
                .map(|s| scope.spawn(move || run(s).0))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for (a, b) in alone.iter().zip(&side_by_side) {
            assert_eq!(a.failure, None);
            assert_eq!(a.heap_allocations_after_boot, 0);
            assert_eq!(
                (a.trace_hash, a.rounds, a.frames_sent),
                (b.trace_hash, b.rounds, b.frames_sent)
            );
        }
        assert_ne!(
            alone[0].trace_hash, alone[1].trace_hash,
            "two seeds, two runs"
        );
    }
}
