//! What /proc says about a daemon (memory, CPU, bytes written) and about the whole machine, and
//! what a state directory holds.

use crate::Result;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// (VmRSS, VmHWM) from /proc/PID/status, in bytes: resident now, and the peak.
pub fn vm_bytes(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let get = |key: &str| -> Result<u64> {
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{path} has no {key}"))?;
        Ok(kib * 1024)
    };
    Ok((get("VmRSS:")?, get("VmHWM:")?))
}

/// utime + stime of every thread, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{path}: no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Time on a CPU of every live thread, in nanoseconds (/proc/PID/task/*/schedstat, first field):
/// finer than the clock ticks of /proc/PID/stat, which count whole 10 ms ticks.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        let path = task.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(format!("{}: no run time", path.display()))?;
    }
    Ok(total)
}

/// Busy and total time of every CPU from the first line of /proc/stat, in clock ticks.
pub struct Machine {
    busy: u64,
    total: u64,
}

impl Machine {
    pub fn now() -> Result<Machine> {
        let text = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
        // cpu user nice system idle iowait irq softirq steal (guest time is inside user).
        let ticks: Vec<u64> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ticks.len() < 8 {
            return Err("/proc/stat: no cpu line".into());
        }
        let total: u64 = ticks[..8].iter().sum();
        Ok(Machine {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }

    /// The share of the machine busy since `self`, as % of one core.
    pub fn busy_since(&self) -> Result<f64> {
        let now = Machine::now()?;
        let total = (now.total - self.total).max(1) as f64;
        Ok(100.0 * cores() as f64 * (now.busy - self.busy) as f64 / total)
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// (`wchar`, `write_bytes`) from /proc/PID/io.
pub fn proc_io(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/io");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let get = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(format!("{path} has no {key}"))
    };
    Ok((get("wchar:")?, get("write_bytes:")?))
}

/// Every file under `dir`: size and mtime in nanoseconds.
pub fn list_files(dir: &Path) -> Result<BTreeMap<String, (u64, i128)>> {
    let mut out = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            for (name, v) in list_files(&entry.path())? {
                out.insert(format!("{}/{name}", entry.file_name().to_string_lossy()), v);
            }
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (meta.len(), mtime),
        );
    }
    Ok(out)
}

pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}
