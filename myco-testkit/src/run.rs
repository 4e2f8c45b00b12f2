//! Running a command to completion with a deadline, reading everything it printed.

use crate::wait::wait_exit;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

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

/// The lines a child prints on one pipe, read by a thread of their own, so that a test waits for
/// a line with a deadline: a child that goes quiet fails the test instead of hanging it.
pub struct PipeLines(mpsc::Receiver<String>);

impl PipeLines {
    pub fn new(pipe: impl Read + Send + 'static) -> Self {
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self(receive)
    }

    /// The next line that satisfies `want`, skipping the others; panics naming `what` if none
    /// came within `timeout` or the pipe closed first.
    #[track_caller]
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        want: impl FnMut(&str) -> bool,
    ) -> String {
        match self.next_within(timeout, want) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line {what} within {:.1} s", timeout.as_secs_f64())
            }
            Err(RecvTimeoutError::Disconnected) => panic!("the pipe closed before a line {what}"),
        }
    }

    /// The next line that satisfies `want` within `timeout`, skipping the others.
    pub fn next_within(
        &self,
        timeout: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<String, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .0
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            if want(&line) {
                return Ok(line);
            }
        }
    }
}
