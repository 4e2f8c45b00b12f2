//! The cluster at rest: every node sampled at the start and the end of a window in which the
//! bench sends nothing, and the rows that compare the two ends.

use crate::cluster::{summarize, Cluster, Gossip};
use crate::live::nap;
use crate::procfs::{cores, cpu_ns, cpu_ticks, file_len, list_files, proc_io, Machine};
use crate::report::{max, mean, sum, Report};
use crate::{Result, NODES_DEFAULT, SECONDS_PER_HOUR};
use myco_testkit::metrics::family_sum;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One node at one end of an at-rest window.
pub struct Sample {
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

pub struct Rest {
    seconds: f64,
    before: Vec<Sample>,
    after: Vec<Sample>,
    /// The whole machine's busy share over the window, % of one core.
    machine: f64,
}

/// Per node over the window: CPU in % of one core, bytes and frames sent per second, bytes
/// written, handshakes started and anti-entropy steps per second.
struct Rates {
    cpu_ticks: Vec<f64>,
    cpu: Vec<f64>,
    sent: Vec<f64>,
    frames: Vec<f64>,
    wchar: Vec<f64>,
    write_bytes: Vec<f64>,
    log: Vec<f64>,
    handshakes: Vec<f64>,
    syncs: Vec<f64>,
}

impl Rest {
    /// Prints and records every row and figure of the window; `key` prefixes the JSON keys.
    pub fn report(&self, report: &mut Report, what: &str, key: &str) {
        let rates = self.rates();
        println!("at rest, {what}, {:.1} s:", self.seconds);
        self.resource_rows(report, what, &rates);
        let changed = self.changed_files();
        let allocs_equal = self.activity_rows(report, what, &changed, &rates);
        let per_hour = SECONDS_PER_HOUR / self.seconds;
        report.num(&format!("{key}_cpu_percent_mean"), mean(&rates.cpu));
        report.num(&format!("{key}_cpu_percent_max"), max(&rates.cpu));
        report.num(&format!("{key}_handshakes_started"), sum(&rates.handshakes));
        report.num(&format!("{key}_sync_steps_per_s_mean"), mean(&rates.syncs));
        report.num(
            &format!("{key}_cpu_ticks_percent_mean"),
            mean(&rates.cpu_ticks),
        );
        report.num(&format!("{key}_sent_bytes_per_s_mean"), mean(&rates.sent));
        report.num(&format!("{key}_frames_per_s_mean"), mean(&rates.frames));
        report.num(
            &format!("{key}_write_bytes_per_hour_cluster"),
            sum(&rates.write_bytes) * per_hour,
        );
        report.num(
            &format!("{key}_wchar_per_hour_cluster"),
            sum(&rates.wchar) * per_hour,
        );
        report.num(&format!("{key}_state_files_changed"), changed.len() as f64);
        report.num(
            &format!("{key}_allocations_equal"),
            if allocs_equal { 1.0 } else { 0.0 },
        );
    }

    fn pairs(&self) -> impl Iterator<Item = (&Sample, &Sample)> {
        self.before.iter().zip(&self.after)
    }

    fn rates(&self) -> Rates {
        let per_node = |f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
            self.pairs().map(|(b, a)| f(b, a)).collect()
        };
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let secs = self.seconds;
        Rates {
            cpu_ticks: per_node(&|b, a| 100.0 * (a.ticks - b.ticks) as f64 / hz / secs),
            cpu: per_node(&|b, a| 100.0 * (a.cpu_ns - b.cpu_ns) as f64 / 1e9 / secs),
            sent: per_node(&|b, a| (a.sent_bytes - b.sent_bytes) / secs),
            frames: per_node(&|b, a| (a.frames_sent - b.frames_sent) / secs),
            wchar: per_node(&|b, a| (a.wchar - b.wchar) as f64),
            write_bytes: per_node(&|b, a| (a.write_bytes - b.write_bytes) as f64),
            log: per_node(&|b, a| (a.log_bytes - b.log_bytes) as f64),
            handshakes: per_node(&|b, a| a.gossip.handshakes_started - b.gossip.handshakes_started),
            syncs: per_node(&|b, a| (a.gossip.sync_steps - b.gossip.sync_steps) / secs),
        }
    }

    /// State-directory files whose size or mtime changed, or that came or went.
    fn changed_files(&self) -> Vec<String> {
        let mut changed = Vec::new();
        for (i, (b, a)) in self.pairs().enumerate() {
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
        changed
    }

    /// "start→end" of the allocation counter per node; with many nodes, each distinct pair once
    /// with how many had it.
    fn allocations(&self) -> Vec<String> {
        if self.before.len() <= NODES_DEFAULT {
            return self
                .pairs()
                .map(|(b, a)| format!("{}→{}", b.allocations, a.allocations))
                .collect();
        }
        let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for (b, a) in self.pairs() {
            *seen
                .entry((b.allocations as u64, a.allocations as u64))
                .or_default() += 1;
        }
        seen.iter()
            .map(|((b, a), count)| format!("{b}→{a} on {count} nodes"))
            .collect()
    }

    /// CPU, the whole machine, bytes sent and bytes written.
    fn resource_rows(&self, report: &mut Report, what: &str, r: &Rates) {
        let (nodes, secs) = (self.before.len(), self.seconds);
        let per_hour = SECONDS_PER_HOUR / secs;
        report.row(
            format!("CPU at rest, {what} ({secs:.0} s window): mean / max of {nodes} nodes (schedstat run time; in brackets utime+stime ticks, mean)"),
            format!(
                "{:.3} / {:.3} % of one core ({:.3} %)",
                mean(&r.cpu),
                max(&r.cpu),
                mean(&r.cpu_ticks)
            ),
        );
        report.row(
            format!("whole machine busy during that window (/proc/stat, every process, {} cores): % of one core", cores()),
            format!(
                "{:.1} %, of which these daemons {:.1} %",
                self.machine,
                sum(&r.cpu)
            ),
        );
        report.row(
            format!("sent at rest, {what}, per node (`myco_sent_bytes_total`, `myco_frames_sent_total`): mean / max"),
            format!(
                "{:.0} / {:.0} bytes/s, {:.2} frames/s mean; anti-entropy steps (`myco_sync_steps_total`) {:.2} / {:.2} per s",
                mean(&r.sent),
                max(&r.sent),
                mean(&r.frames),
                mean(&r.syncs),
                max(&r.syncs)
            ),
        );
        report.row(
            format!(
                "written at rest, {what}: `write_bytes` (page cache → disk), {nodes} nodes, extrapolated"
            ),
            format!(
                "{:.0} bytes in {secs:.0} s = {:.0} bytes/hour for the cluster",
                sum(&r.write_bytes),
                sum(&r.write_bytes) * per_hour
            ),
        );
        report.row(
            format!("written at rest, {what}: `wchar` (write syscalls, incl. stderr), {nodes} nodes, extrapolated"),
            format!(
                "{:.0} bytes in {secs:.0} s = {:.0} bytes/hour for the cluster (stderr grew {:.0} bytes)",
                sum(&r.wchar),
                sum(&r.wchar) * per_hour,
                sum(&r.log)
            ),
        );
    }

    /// Files changed, allocations, sessions and membership; returns whether every node's
    /// allocation count stayed the same.
    fn activity_rows(
        &self,
        report: &mut Report,
        what: &str,
        changed: &[String],
        r: &Rates,
    ) -> bool {
        report.row(
            format!("state-directory files changed at rest, {what} (size or mtime)"),
            if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join("; ")
            },
        );
        let allocs_equal = self.pairs().all(|(b, a)| b.allocations == a.allocations);
        report.row(
            format!("`myco_heap_allocations_since_ready_total` at start → end of window, {what}, per node"),
            format!(
                "{} ({})",
                self.allocations().join(", "),
                if allocs_equal { "equal" } else { "NOT equal" }
            ),
        );
        let sessions_start: Vec<f64> = self.before.iter().map(|b| b.gossip.sessions).collect();
        let sessions_changed = self
            .pairs()
            .filter(|(b, a)| b.gossip.sessions != a.gossip.sessions)
            .count();
        let end: Vec<Gossip> = self.after.iter().map(|a| a.gossip).collect();
        report.row(
            format!("sessions and membership at rest, {what}: handshakes started in the window (all nodes), nodes whose session count changed, mean sessions at the start; at the end"),
            format!(
                "{:.0} handshakes, {sessions_changed} nodes, {:.1}; {}",
                sum(&r.handshakes),
                mean(&sessions_start),
                summarize(&end)
            ),
        );
        allocs_equal
    }
}

impl Cluster {
    /// Samples every node at the start and end of `window`, during which the bench sends nothing.
    pub fn at_rest(&mut self, window: Duration) -> Result<Rest> {
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
                let m =
                    |name: &str| family_sum(&text, name).ok_or(format!("/metrics has no {name}"));
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
}
