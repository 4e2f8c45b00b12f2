//! What keeps the bench safe to stop: the daemons' pids and the directory, cleaned up on a panic
//! (the release profile aborts, so no `Drop` runs) or a signal (which sets a flag every wait
//! checks, so `Drop` runs); the resource limits the daemons need; and the generator that picks
//! join peers.

use crate::Result;
use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What a panic or a signal must still clean up: the daemons' pids and the directory. The
/// `Cluster` keeps it current; its `Drop` does the orderly version.
pub struct Live {
    pub dir: Option<PathBuf>,
    pub pids: Vec<libc::pid_t>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    dir: None,
    pids: Vec::new(),
});
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set a flag that every wait checks (so `Drop` cleans up); a panic
/// kills the daemons and removes the directory before the release profile's abort.
pub fn install_cleanup_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let mut guard = match LIVE.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        for &pid in &guard.pids {
            // SAFETY: kill and waitpid on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        guard.pids.clear();
        if let Some(dir) = guard.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }));
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted by a signal".into())
    } else {
        Ok(())
    }
}

/// Sleeps `d` in short slices, failing as soon as a signal asked the bench to stop.
pub fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Raises the soft limits on open files and processes to what `nodes` daemons need, only where
/// they are lower; says what it found.
pub fn ensure_limits(nodes: usize) -> Result<String> {
    // The bench holds a few descriptors at a time, a daemon a dozen or so (it inherits the
    // limit); processes: the daemons, their helper threads, `myco`, with room to spare.
    let want = [
        (libc::RLIMIT_NOFILE, "open files", 256),
        (libc::RLIMIT_NPROC, "processes", 4 * nodes as u64 + 256),
    ];
    let mut notes = Vec::new();
    for (resource, name, need) in want {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
            return Err(format!(
                "getrlimit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let show = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        if r.rlim_cur == libc::RLIM_INFINITY || r.rlim_cur >= need {
            notes.push(format!("{name} {} (enough)", show(r.rlim_cur)));
            continue;
        }
        if r.rlim_max != libc::RLIM_INFINITY && r.rlim_max < need {
            return Err(format!(
                "the hard limit on {name} is {}, {need} needed for {nodes} nodes",
                r.rlim_max
            ));
        }
        let old = r.rlim_cur;
        r.rlim_cur = need;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource, &r) } != 0 {
            return Err(format!(
                "setrlimit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        notes.push(format!("{name} raised from {old} to {need}"));
    }
    Ok(notes.join(", "))
}

/// xorshift64* seeded from the OS: picks the random join peers.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Result<Rng> {
        let mut seed = [0u8; 8];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(Rng(u64::from_le_bytes(seed) | 1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}
