//! Running a command to completion with a deadline, reading everything it printed.

use crate::wait::wait_exit;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
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

/// How many times `run` starts a command whose child never reached its exec.
const SPAWN_ATTEMPTS: u32 = 3;

/// Runs `command` with `CALL_TIMEOUT` to finish; stdin is closed. Panics if it cannot start or
/// does not finish in time (it is killed first).
///
/// A child still stuck before its exec when the time is up is killed and started again, up to
/// `SPAWN_ATTEMPTS` times: qemu-user 7.2, which runs the aarch64 tests (`make aarch64`), turns
/// the spawn into a fork of a threaded guest, and that child can deadlock on a futex before the
/// exec (seen in CI: a `myco rm` never ran; reproduced with 8 threads spawning in a loop, 2 hangs
/// in 800 spawns). Such a child never ran the command, so starting it again runs it once; a
/// command that did start is never run twice.
pub fn run(mut command: Command) -> Run {
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for _ in 0..SPAWN_ATTEMPTS {
        if let Some(finished) = run_once(&mut command, &shown) {
            return finished;
        }
        eprintln!(
            "myco-testkit: {shown} was still stuck before its exec after {} s (the qemu-user \
             fork deadlock); starting it again",
            CALL_TIMEOUT.as_secs()
        );
    }
    panic!("{shown} never reached its exec in {SPAWN_ATTEMPTS} attempts");
}

/// One start of `command`: what it did, or `None` if its child never reached its exec.
fn run_once(command: &mut Command, shown: &str) -> Option<Run> {
    let mut child = command
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
    let Some(status) = wait_exit(&mut child, CALL_TIMEOUT) else {
        let stuck = stuck_before_exec(child.id(), command.get_program());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            stuck,
            "{shown} did not finish in {} s",
            CALL_TIMEOUT.as_secs()
        );
        return None;
    };
    Some(Run {
        code: status.code(),
        stdout: out_reader.join().expect("reader"),
        stderr: err_reader.join().expect("reader"),
    })
}

/// Whether the live process `pid` has not yet exec'd `program`: its command line does not name
/// it. After the exec it does (natively as argv[0]; under binfmt_misc or a wrapper script as the
/// argument after the interpreter), while before it the child still carries this process's
/// command line. An unreadable or empty one (the child just exited) counts as exec'd, so a
/// command that may have run is never started again.
fn stuck_before_exec(pid: u32, program: &OsStr) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let program = program.as_bytes();
    let names_program = |arg: &[u8]| {
        arg == program
            || (arg.len() > program.len()
                && arg.ends_with(program)
                && arg[arg.len() - program.len() - 1] == b'/')
    };
    !cmdline.is_empty() && !cmdline.split(|&b| b == 0).any(names_program)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_stuck_before_exec_only_while_it_carries_our_command_line() {
        // This test binary's own command line names neither program, as a child stuck in the
        // fork does.
        assert!(stuck_before_exec(std::process::id(), OsStr::new("sleep")));
        assert!(stuck_before_exec(
            std::process::id(),
            OsStr::new("/bin/sleep")
        ));
        let mut child = Command::new("sleep").arg("5").spawn().expect("sleep");
        let exec_seen = (0..200).any(|_| {
            thread::sleep(Duration::from_millis(5));
            !stuck_before_exec(child.id(), OsStr::new("sleep"))
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            exec_seen,
            "the exec'd child was never seen as running sleep"
        );
        // Gone (reaped): never taken for stuck, so nothing is started twice.
        assert!(!stuck_before_exec(child.id(), OsStr::new("sleep")));
    }

    #[test]
    fn run_returns_what_the_command_printed() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let done = run(command);
        assert_eq!(
            (done.code, done.stdout.as_str(), done.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
    }
}
