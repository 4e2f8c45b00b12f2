//! Running a command to completion with a deadline, reading everything it printed.

use crate::wait::wait_exit;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// The longest any single command (`myco`, curl) may take in a test.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout of a command that must have succeeded.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        &self.stdout
    }

    /// The stdout of a command that must have succeeded, as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `command` with `CALL_TIMEOUT` to finish; stdin is closed. Panics if it cannot start or
/// does not finish in time (it is killed first).
pub fn run(mut command: Command) -> Run {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().expect("piped")));
    let err_reader = read_all(Box::new(child.stderr.take().expect("piped")));
    let status = wait_exit(&mut child, CALL_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{shown} did not finish in {} s", CALL_TIMEOUT.as_secs());
    });
    Run {
        code: status.code(),
        stdout: out_reader.join().expect("reader"),
        stderr: err_reader.join().expect("reader"),
    }
}

/// Makes `command`'s child die with the thread that spawns it (PR_SET_PDEATHSIG), so a test or
/// bench killed by a timeout leaves no daemons behind.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
