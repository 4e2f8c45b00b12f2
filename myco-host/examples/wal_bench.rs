//! Benchmark of the file store on a real disk: append+fdatasync latency, and replay speed of a log
//! and of a snapshot of 1000 services.
//!
//! Run: `cargo run --release -p myco-host --example wal_bench -- DIR`. It works in a fresh
//! subdirectory of DIR and removes it afterwards. DIR should be on the disk being measured (not
//! tmpfs, where fdatasync costs nothing).

use myco_host::arena::leak_bytes;
use myco_host::store::{FileStore, WRITE_BUFFER_BYTES};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SERVICES: u32 = 1000;
/// Replay is timed over this many opens; the median is reported.
const REPLAY_ROUNDS: usize = 21;

fn main() -> ExitCode {
    let Some(parent) = std::env::args_os().nth(1) else {
        eprintln!("usage: wal_bench DIR   (DIR on the disk to measure)");
        return ExitCode::from(2);
    };
    let dir = Path::new(&parent).join(format!("myco-wal-bench-{}", std::process::id()));
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal_bench: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> std::io::Result<()> {
    let entries: Vec<Vec<u8>> = (0..SERVICES)
        .map(|i| myco_testkit::entries::service_entry(i, 1))
        .collect();
    let payload_bytes: usize = entries.iter().map(Vec::len).sum();
    println!(
        "entries: {SERVICES}, mean payload {} bytes",
        payload_bytes / entries.len()
    );

    let (mut store, _) = FileStore::open(dir, leak_bytes(WRITE_BUFFER_BYTES), |_| {})?;
    let mut latencies = Vec::with_capacity(entries.len());
    for entry in &entries {
        let start = Instant::now();
        store.append(entry)?;
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    println!(
        "append+fdatasync: median {} us, p99 {} us, max {} us ({} log bytes)",
        latencies[latencies.len() / 2].as_micros(),
        p99.as_micros(),
        latencies[latencies.len() - 1].as_micros(),
        store.wal_bytes()
    );
    drop(store);
    report_replay("replay of the log", dir)?;

    let (mut store, _) = FileStore::open(dir, leak_bytes(WRITE_BUFFER_BYTES), |_| {})?;
    let start = Instant::now();
    store.checkpoint(entries.iter().map(Vec::as_slice), 0)?;
    println!(
        "checkpoint of {SERVICES} entries: {} us",
        start.elapsed().as_micros()
    );
    drop(store);
    report_replay("replay of the snapshot", dir)
}

/// Times `FileStore::open` (list, check, replay, no truncation) and prints records per second.
fn report_replay(what: &str, dir: &Path) -> std::io::Result<()> {
    let mut times: Vec<Duration> = Vec::with_capacity(REPLAY_ROUNDS);
    for _ in 0..REPLAY_ROUNDS {
        let mut records = 0u32;
        let start = Instant::now();
        let (_, report) = FileStore::open(dir, leak_bytes(WRITE_BUFFER_BYTES), |_| records += 1)?;
        times.push(start.elapsed());
        assert!(!report.needs_full_sync());
        assert_eq!(records, SERVICES);
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let per_second = f64::from(SERVICES) / median.as_secs_f64();
    println!(
        "{what}: {per_second:.0} records/s ({} us per open, median of {REPLAY_ROUNDS})",
        median.as_micros()
    );
    Ok(())
}
