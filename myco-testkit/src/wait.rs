//! Waiting for a condition by polling it, never by sleeping a guessed time: a test that waits for
//! a metric or an answer is as fast as the code allows and fails only if the condition never holds.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// How often `wait_until` checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` every `POLL_INTERVAL` until it holds; panics naming `what` after `timeout`.
/// Returns how long it took, which it also prints, so that deadlines can be tuned from CI logs.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) -> Duration {
    let Some(took) = poll_until(timeout, condition) else {
        panic!(
            "timed out after {:.1} s waiting for: {what}",
            timeout.as_secs_f64()
        );
    };
    eprintln!("myco-testkit: {what}: after {:.2} s", took.as_secs_f64());
    took
}

/// Polls `condition` every `POLL_INTERVAL` until it holds: how long it took, or `None` once
/// `timeout` has passed. For a benchmark that reports a figure as not reached and goes on.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits up to `timeout` for `child` to exit. Polls every millisecond, so that a restart follows
/// an exit as closely as systemd's would (it restarts on SIGCHLD).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid works") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1));
    }
}
