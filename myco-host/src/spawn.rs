//! Child processes without allocating: `systemctl` (and later `journalctl`, `nix`) started with
//! posix_spawn from argument bytes kept in a fixed buffer, its stdout read through a non-blocking
//! pipe into a fixed buffer, and reaped with `waitpid(WNOHANG)` from the loop. The daemon runs
//! these often enough (health checks) that the allocation count at rest must not move.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Arguments, NUL-separated, for one command.
pub const ARGV_BYTES: usize = 16 * 1024;
pub const ARGS_MAX: usize = 256;
/// Output kept from one run; the rest is read and dropped (and counted).
pub const OUTPUT_BYTES: usize = 64 * 1024;

/// A command line under construction, in a fixed buffer.
pub struct Argv {
    /// `ARGV_BYTES`, the arena's.
    bytes: &'static mut [u8],
    len: usize,
    starts: [usize; ARGS_MAX],
    count: usize,
}

/// The argument list or buffer is full: the caller splits the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgvFull;

impl Argv {
    /// An empty list over `bytes` (at least `ARGV_BYTES`).
    pub fn new(bytes: &'static mut [u8]) -> Argv {
        assert!(bytes.len() >= ARGV_BYTES);
        Argv {
            bytes,
            len: 0,
            starts: [0; ARGS_MAX],
            count: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.count = 0;
    }

    /// Appends one argument made of `parts` concatenated (`["myco-", name, ".service"]`).
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<(), ArgvFull> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if self.count + 1 >= ARGS_MAX || self.len + n + 1 > ARGV_BYTES {
            return Err(ArgvFull);
        }
        self.starts[self.count] = self.len;
        self.append(parts);
        self.count += 1;
        Ok(())
    }

    /// Appends `parts` to the last argument (one built from a list whose length only a walk
    /// tells, such as a script naming every GC root).
    pub fn extend_last(&mut self, parts: &[&[u8]]) -> Result<(), ArgvFull> {
        assert!(self.count > 0, "an argument to extend");
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if self.len + n > ARGV_BYTES {
            return Err(ArgvFull);
        }
        // Over the last argument's NUL; `append` writes a new one after.
        self.len -= 1;
        self.append(parts);
        Ok(())
    }

    /// Writes `parts` and a NUL at the end of the bytes; the callers checked the room.
    fn append(&mut self, parts: &[&[u8]]) {
        assert!(
            parts.iter().all(|p| !p.contains(&0)),
            "arguments hold no NUL"
        );
        for p in parts {
            self.bytes[self.len..self.len + p.len()].copy_from_slice(p);
            self.len += p.len();
        }
        self.bytes[self.len] = 0;
        self.len += 1;
    }

    /// How many arguments, the program included.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The arguments, program first, without their NULs.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes[..self.len].split(|&b| b == 0).take(self.count)
    }

    /// The arguments as text, for tests that check a command line.
    #[cfg(test)]
    pub fn args(&self) -> Vec<String> {
        self.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
}

#[cfg(test)]
impl Argv {
    /// A list over a leaked buffer, for tests (the daemon's come from the arena).
    pub fn leaked() -> Argv {
        Argv::new(crate::arena::leak_bytes(ARGV_BYTES))
    }
}

/// A running (or finished, not yet reaped) child: our own process, or a command `myco-priv`
/// runs for us (`privileged::client`), whose exit is the helper's reply.
pub struct Child {
    process: Process,
    stdout: OwnedFd,
}

enum Process {
    Own(libc::pid_t),
    Asked(crate::privileged::client::Pending),
}

/// How a child ended: its exit code, or the signal that killed it (as 128 + signal, like shells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    pub fn success(self) -> bool {
        self.0 == 0
    }
}

/// Output of one child, in a buffer of the arena reused for every run.
pub struct Output {
    /// `OUTPUT_BYTES`.
    buf: &'static mut [u8],
    len: usize,
    pub dropped: u64,
}

impl Output {
    /// Empty, over `buf` (at least `OUTPUT_BYTES`).
    pub fn new(buf: &'static mut [u8]) -> Output {
        assert!(buf.len() >= OUTPUT_BYTES);
        Output {
            buf,
            len: 0,
            dropped: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.dropped = 0;
    }
}

#[cfg(test)]
impl Output {
    /// Over a leaked buffer, for tests.
    pub fn leaked() -> Output {
        Output::new(crate::arena::leak_bytes(OUTPUT_BYTES))
    }
}

/// The child's attributes: it leads a process group of its own, so `kill_group` ends what it
/// started too; and its signal mask is empty. The daemon blocks SIGTERM and SIGINT for its
/// signalfd, and a blocked mask is inherited: without an empty one the child could not be ended
/// by `kill` (a `tail -F` behind `/audit` would never exit, and `kill_and_reap` would wait for it
/// forever). Returns posix_spawnattr's error number, 0 on success.
///
/// # Safety
/// `attr` was initialised by `posix_spawnattr_init` and not yet destroyed.
unsafe fn set_attributes(attr: &mut libc::posix_spawnattr_t) -> libc::c_int {
    let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK;
    // SAFETY: `attr` is initialised (the caller's contract) and `empty` is a valid, initialised
    // signal set for the duration of the calls, which copy it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut result = libc::posix_spawnattr_setflags(attr, flags as _);
        if result == 0 {
            result = libc::posix_spawnattr_setpgroup(attr, 0);
        }
        if result == 0 {
            result = libc::posix_spawnattr_setsigmask(attr, &empty);
        }
        result
    }
}

/// Starts `argv[0]` (searched in PATH) with `argv`, stdin from /dev/null, stdout into a pipe,
/// stderr inherited (the daemon's journal), and an environment of only `env` (`KEY=value`), in
/// a process group of its own, so [`Child::kill_group`] reaches whatever it started too.
pub fn spawn(argv: &Argv, env: &[&std::ffi::CStr]) -> io::Result<Child> {
    spawn_with_stderr(argv, env, None)
}

/// As [`spawn`], with stderr written to the file `stderr` (created or truncated, mode 0600)
/// when given: a build's log goes there, not into the daemon's journal.
pub fn spawn_with_stderr(
    argv: &Argv,
    env: &[&std::ffi::CStr],
    stderr: Option<&std::ffi::CStr>,
) -> io::Result<Child> {
    assert!(!argv.is_empty());
    let mut ptrs: [*mut libc::c_char; ARGS_MAX] = [std::ptr::null_mut(); ARGS_MAX];
    for (i, &start) in argv.starts[..argv.count].iter().enumerate() {
        ptrs[i] = argv.bytes[start..].as_ptr() as *mut libc::c_char;
    }
    let mut envp: [*mut libc::c_char; 8] = [std::ptr::null_mut(); 8];
    assert!(env.len() < envp.len());
    for (slot, e) in envp.iter_mut().zip(env) {
        *slot = e.as_ptr() as *mut libc::c_char;
    }
    let (read, write) = pipe()?;
    // SAFETY: file actions and attributes are initialised before use and destroyed after;
    // every pointer handed to posix_spawnp points into `argv`, `ptrs`, `env`, `envp` or the
    // attributes' signal set, which outlive the call (the child gets copies at exec).
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        let mut result = set_attributes(&mut attr);
        if result != 0 {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(io::Error::from_raw_os_error(result));
        }
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(e);
        }
        let devnull = c"/dev/null";
        result = libc::posix_spawn_file_actions_addopen(
            &mut actions,
            0,
            devnull.as_ptr(),
            libc::O_RDONLY,
            0,
        );
        if result == 0 {
            result = libc::posix_spawn_file_actions_adddup2(&mut actions, write.as_raw_fd(), 1);
        }
        if let (0, Some(path)) = (result, stderr) {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            result = libc::posix_spawn_file_actions_addopen(
                &mut actions,
                2,
                path.as_ptr(),
                flags,
                0o600,
            );
        }
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        if result == 0 {
            result = child_attributes(&mut attr);
        }
        let mut pid = 0;
        if result == 0 {
            result = libc::posix_spawnp(
                &mut pid,
                ptrs[0],
                &actions,
                &attr,
                ptrs.as_ptr(),
                envp.as_ptr(),
            );
        }
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        check(result)?;
        drop(write);
        Ok(Child::own(pid, read))
    }
}

/// The daemon blocks the signals its signalfd reads; a child must not inherit that mask (a build
/// killed at its timeout would live on), and it leads a process group of its own, so a kill
/// reaches what it started too (Nix's builders). Returns the first error, 0 if none.
///
/// # Safety
/// `attr` was initialised by `posix_spawnattr_init`.
unsafe fn child_attributes(attr: &mut libc::posix_spawnattr_t) -> libc::c_int {
    // SAFETY: the sets are initialised by sigemptyset before use; `attr` is initialised.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            libc::sigaddset(&mut defaults, signal);
        }
        let flags = libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF
            | libc::POSIX_SPAWN_SETPGROUP;
        let mut result = libc::posix_spawnattr_setsigmask(attr, &empty);
        if result == 0 {
            result = libc::posix_spawnattr_setsigdefault(attr, &defaults);
        }
        if result == 0 {
            result = libc::posix_spawnattr_setpgroup(attr, 0);
        }
        if result == 0 {
            result = libc::posix_spawnattr_setflags(attr, flags as libc::c_short);
        }
        result
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(result))
    }
}

pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    // Only our end is non-blocking: the child writes to a blocking pipe, as programs expect.
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((read, write))
}

impl Child {
    /// The pipe to watch for readability.
    pub fn stdout_fd(&self) -> std::os::fd::RawFd {
        self.stdout.as_raw_fd()
    }

    /// The pipe, borrowed, for calls that set its options.
    pub fn stdout(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stdout)
    }

    fn own(pid: libc::pid_t, stdout: OwnedFd) -> Child {
        Child {
            process: Process::Own(pid),
            stdout,
        }
    }

    /// A command `myco-priv` runs: its output comes on `stdout`, its exit is `pending`'s reply.
    pub(crate) fn asked(pending: crate::privileged::client::Pending, stdout: OwnedFd) -> Child {
        Child {
            process: Process::Asked(pending),
            stdout,
        }
    }

    /// Reads what the child wrote so far; reaps it once it has exited and its output is drained.
    /// `None` while it runs.
    pub fn poll(&mut self, out: &mut Output) -> Option<Exit> {
        let eof = self.drain(out);
        let exit = self.ended()?;
        if !eof {
            self.drain(out);
        }
        Some(exit)
    }

    /// As [`Child::poll`] for a child whose output nobody reads (a health check's): what it
    /// wrote is drained and dropped, so it never blocks on a full pipe.
    pub fn poll_quiet(&mut self) -> Option<Exit> {
        let mut scratch = [0u8; 512];
        while let Some(n) = self.read_into(&mut scratch) {
            if n == 0 {
                break;
            }
        }
        self.ended()
    }

    /// The exit, once the child has ended (reaped, or the helper replied); `None` before.
    fn ended(&mut self) -> Option<Exit> {
        let pid = match &mut self.process {
            Process::Own(pid) => *pid,
            Process::Asked(pending) => return pending.poll(),
        };
        // Errors (ECHILD after a reap elsewhere) and a live child look the same: not ended here.
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(Exit(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(Exit(128 + signal as i32)),
            _ => None,
        }
    }

    /// Reads until the pipe is empty; true at end of file.
    fn drain(&mut self, out: &mut Output) -> bool {
        let mut scratch = [0u8; 4096];
        loop {
            let room = OUTPUT_BYTES - out.len;
            let buf = if room > 0 {
                &mut out.buf[out.len..]
            } else {
                &mut scratch[..]
            };
            match self.read_into(buf) {
                None => return true,
                Some(0) => return false,
                Some(n) if room > 0 => out.len += n,
                Some(n) => out.dropped += n as u64,
            }
        }
    }

    /// Ends a child that must not outlive its purpose (a client that went away, a build past
    /// its timeout), and what it started: the signal goes to its process group. A command the
    /// helper runs is stopped by the helper (SIGTERM to its group, SIGKILL 2 s later).
    pub fn kill(&mut self) {
        match &self.process {
            // Our own child, not yet reaped, so the pid (and the group it leads) is still ours.
            // A child that already exited (a zombie) takes the signal harmlessly; there is
            // nothing else to do about a failure.
            Process::Own(pid) => {
                if kill(Pid::from_raw(-pid), Signal::SIGTERM).is_err() {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
                }
            }
            Process::Asked(pending) => pending.stop(),
        }
    }

    /// Kills the child and every process in its group (what it started) with SIGKILL: for a
    /// command that hung, which may ignore SIGTERM. It is still to be reaped with `poll`.
    pub fn kill_group(&mut self) {
        match &self.process {
            // The child leads its own group (`spawn`) and is not reaped yet, so the group id is
            // still ours to signal; a group already gone leaves nothing to do.
            Process::Own(pid) => {
                let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            Process::Asked(pending) => pending.stop(),
        }
    }

    /// Ends the child and waits for it, so no zombie is left: for children that exit at once on
    /// SIGTERM (`journalctl -f`). A command the helper runs is the helper's to wait for: closing
    /// the connection (dropping `self`) is what stops it.
    pub fn kill_and_reap(mut self) {
        self.kill();
        self.reap();
    }

    /// Ends the child and its group with SIGKILL, then waits for it: for a child with nothing to
    /// clean up that may be blocked writing to a pipe nobody will read again (`nix-store --dump`
    /// for a client that went away), so the loop's wait does not depend on how the child
    /// handles SIGTERM.
    pub fn kill_now_and_reap(mut self) {
        self.kill_group();
        self.reap();
    }

    fn reap(&self) {
        if let Process::Own(pid) = self.process {
            while waitpid(Pid::from_raw(pid), None) == Err(Errno::EINTR) {}
        }
    }

    /// Reads what the child wrote into `buf` (for output passed straight on, as `/logs` does):
    /// `Some(n)` bytes (0: nothing yet), `None` at end of output.
    pub fn read_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf`, which we own.
            let n =
                unsafe { libc::read(self.stdout.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return Some(n as usize);
            }
            if n == 0 {
                return None;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Some(0),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &Argv) -> (Exit, Vec<u8>) {
        let mut child = spawn(argv, &[c"PATH=/usr/bin:/bin"]).unwrap();
        let mut out = Output::leaked();
        loop {
            if let Some(exit) = child.poll(&mut out) {
                return (exit, out.bytes().to_vec());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn runs_a_command_and_reads_its_output() {
        let mut argv = Argv::leaked();
        argv.push(&[b"printf"]).unwrap();
        argv.push(&[b"%s-%s", b""]).unwrap();
        argv.push(&[b"my", b"co"]).unwrap();
        argv.push(&[b"d"]).unwrap();
        let (exit, out) = run(&argv);
        assert!(exit.success());
        assert_eq!(out, b"myco-d");
    }

    /// `sh -c script`.
    fn shell(script: &[u8]) -> Argv {
        let mut argv = Argv::leaked();
        for arg in [&b"sh"[..], b"-c", script] {
            argv.push(&[arg]).unwrap();
        }
        argv
    }

    #[test]
    fn the_last_argument_grows_in_place() {
        let mut argv = shell(b"printf");
        argv.extend_last(&[b" '%s'", b" a"]).unwrap();
        argv.extend_last(&[b"b"]).unwrap();
        assert_eq!(argv.args(), ["sh", "-c", "printf '%s' ab"]);
        let (exit, out) = run(&argv);
        assert!(exit.success());
        assert_eq!(out, b"ab");
        let too_long = vec![b'x'; ARGV_BYTES];
        assert_eq!(argv.extend_last(&[&too_long]), Err(ArgvFull));
        assert_eq!(
            argv.args(),
            ["sh", "-c", "printf '%s' ab"],
            "a refusal changes nothing"
        );
    }

    #[test]
    fn reports_exit_codes_and_missing_programs() {
        let mut argv = shell(b"exit 3");
        assert_eq!(run(&argv).0, Exit(3));
        argv.clear();
        argv.push(&[b"no-such-program-myco"]).unwrap();
        let missing = spawn(&argv, &[c"PATH=/usr/bin:/bin"]);
        // glibc reports a failed exec either from posix_spawnp or as exit 127.
        if let Ok(mut child) = missing {
            let mut out = Output::leaked();
            let exit = loop {
                if let Some(e) = child.poll(&mut out) {
                    break e;
                }
            };
            assert_eq!(exit, Exit(127));
        }
    }

    #[test]
    fn a_full_argument_list_says_so() {
        let mut argv = Argv::leaked();
        let long = vec![b'x'; 1000];
        let mut pushed = 0;
        while argv.push(&[&long]).is_ok() {
            pushed += 1;
        }
        assert_eq!(pushed, ARGV_BYTES / 1001);
    }

    #[test]
    fn large_output_is_capped_and_counted() {
        let mut argv = Argv::leaked();
        argv.push(&[b"head"]).unwrap();
        argv.push(&[b"-c"]).unwrap();
        argv.push(&[b"100000"]).unwrap();
        argv.push(&[b"/dev/zero"]).unwrap();
        let mut child = spawn(&argv, &[c"PATH=/usr/bin:/bin"]).unwrap();
        let mut out = Output::leaked();
        while child.poll(&mut out).is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(out.bytes().len(), OUTPUT_BYTES);
        assert_eq!(out.dropped, 100_000 - OUTPUT_BYTES as u64);
    }
}
