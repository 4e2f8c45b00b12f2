//! The figures: each printed as a row when measured, gathered for the closing table and the JSON
//! line, and the statistics they are made of.

use crate::cluster::Cluster;
use crate::{MIB, STALE_AFTER};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// One table row: what was measured, and the figure with its unit.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<(String, String)>,
    pub json: Vec<(String, String)>,
}

impl Report {
    pub fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (what, figure) = (what.into(), figure.into());
        println!("  {what}: {figure}");
        self.rows.push((what, figure));
    }

    pub fn num(&mut self, key: &str, value: f64) {
        let text = if value.is_finite() {
            format!("{value:.3}")
        } else {
            "null".into()
        };
        self.json.push((key.into(), text));
    }

    pub fn text(&mut self, key: &str, value: &str) {
        self.json
            .push((key.into(), format!("\"{}\"", value.replace('"', "'"))));
    }
}

/// A row with the membership changes the daemons logged since the last such row.
pub fn events_row(report: &mut Report, cluster: &mut Cluster, phase: &str) {
    let events = cluster.log_events();
    report.row(
        format!(
            "member events on stderr during {phase}: lines summed over the nodes / distinct members"
        ),
        events,
    );
}

/// Rows for VmRSS and VmHWM (peak) across the nodes.
pub fn mem_rows(report: &mut Report, mem: &[(u64, u64)], what: &str, key: &str) {
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
pub fn staleness(meta: &fs::Metadata, reference: &Path) -> String {
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

pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    // Nearest rank.
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "median / p90 / max ms", sorting `times`.
pub fn ms3(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        ms(percentile(times, 50)),
        ms(percentile(times, 90)),
        ms(times[times.len() - 1])
    )
}

pub fn mean(v: &[f64]) -> f64 {
    sum(v) / v.len() as f64
}

pub fn sum(v: &[f64]) -> f64 {
    v.iter().sum()
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

pub fn mean_u64(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

pub fn max_u64(v: &[u64]) -> f64 {
    v.iter().copied().max().unwrap_or(0) as f64
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

pub fn median_u64(v: &[u64]) -> u64 {
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The median, in seconds, of the times that are there (NaN if none).
pub fn median_opt(v: &[Option<Duration>]) -> f64 {
    let mut times: Vec<Duration> = v.iter().flatten().copied().collect();
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort_unstable();
    percentile(&times, 50).as_secs_f64()
}

/// The largest, in seconds, of the times that are there (NaN if none).
pub fn max_opt(v: &[Option<Duration>]) -> f64 {
    v.iter()
        .flatten()
        .max()
        .map_or(f64::NAN, Duration::as_secs_f64)
}
