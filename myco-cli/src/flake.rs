//! Locking a flake reference once, at signing time.
//!
//! A reference such as `git+https://host/web?ref=main` moves: if each box resolved it when it got
//! around to building, boxes would run different commits. `myco sign` and `myco deploy` therefore
//! ask Nix for the reference's locked form (`nix flake metadata --json`) and sign that: the locked
//! URL (which names the commit), the commit itself (`rev`) and the SHA-256 of the source tree's
//! NAR (`narHash`), which a box can check what it fetched against.
//!
//! Two halves: `parse_metadata` is pure (Nix's output in, a `FlakeLock` or the reason out; the
//! fuzz crate drives it), and `lock` runs `nix` with a timeout and bounded reads. A reference that
//! cannot be locked (a dirty tree, a path without a rev, a fetch failure) is an error naming the
//! cause; nothing is ever signed from it. Invariant: every `FlakeLock` this module returns has a
//! `url` that names its `rev` (`names_rev`), so the core accepts the entry built from it.

use myco_core::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
use myco_core::schema::entry::names_rev;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that names the `nix` to run (default: `nix` from `PATH`).
pub const NIX_ENV: &str = "MYCO_NIX";
/// The environment variable that sets how long `nix flake metadata` may take, in milliseconds.
pub const NIX_TIMEOUT_ENV: &str = "MYCO_NIX_TIMEOUT_MS";
/// How long `nix flake metadata` may take by default: long enough to clone a large repository
/// over a slow link, short enough that a stuck fetch does not hang a deploy for good.
pub const NIX_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// The most of Nix's stdout read. Metadata of a flake with many inputs is a few KiB; more than
/// this is not metadata.
pub const METADATA_BYTES_MAX: usize = 1024 * 1024;
/// The most of Nix's stderr kept for an error message: its end, where Nix says what failed.
const STDERR_TAIL_BYTES: usize = 2000;

/// A flake reference locked to one commit: what an entry's `Source::Flake` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakeLock {
    /// The locked reference exactly as Nix prints it (top-level `url`); it names `rev`.
    pub url: String,
    pub rev: [u8; FLAKE_REV_BYTES],
    pub nar_hash: [u8; NAR_HASH_BYTES],
}

impl FlakeLock {
    /// The commit as `git log --oneline` shows it.
    pub fn short_rev(&self) -> String {
        hex(&self.rev)[..7].to_string()
    }

    /// The commit in full, 40 hex digits.
    pub fn rev_hex(&self) -> String {
        hex(&self.rev)
    }
}

/// Why Nix's answer is not a usable lock. `Unlocked` is the operator's to fix (commit, push,
/// use a git reference); the others mean the output is not what `nix flake metadata` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// Not JSON of the expected shape; serde's account of where.
    Garbage(String),
    /// The locked form names no commit; `kind` is its `locked.type` (git, path, tarball, ...).
    Unlocked { kind: String },
    /// `locked.rev` is not 40 lowercase hex digits.
    Rev(String),
    /// `locked.narHash` is missing or not `sha256-` and the base64 of 32 bytes.
    NarHash(String),
    /// The locked URL does not name the locked rev, so a box could build another commit.
    Url(String),
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataError::Garbage(e) => write!(f, "its output is not flake metadata ({e})"),
            MetadataError::Unlocked { kind } => write!(
                f,
                "the reference locks to no commit (its locked type is {kind:?}, without a rev)"
            ),
            MetadataError::Rev(rev) => write!(f, "locked.rev {rev:?} is not a 40-digit hex rev"),
            MetadataError::NarHash(h) => {
                write!(f, "locked.narHash {h:?} is not a sha256-<base64> hash")
            }
            MetadataError::Url(url) => write!(f, "the locked url {url:?} does not name its rev"),
        }
    }
}

/// The fields of `nix flake metadata --json` that locking reads; the rest are ignored.
#[derive(Deserialize)]
struct Metadata {
    url: String,
    locked: Locked,
}

#[derive(Deserialize)]
struct Locked {
    #[serde(rename = "type")]
    kind: String,
    rev: Option<String>,
    #[serde(rename = "narHash")]
    nar_hash: Option<String>,
}

/// Reads `nix flake metadata --json`'s stdout. Pure: any bytes are safe to pass.
pub fn parse_metadata(stdout: &[u8]) -> Result<FlakeLock, MetadataError> {
    let metadata: Metadata =
        serde_json::from_slice(stdout).map_err(|e| MetadataError::Garbage(e.to_string()))?;
    let locked = metadata.locked;
    let rev_text = locked.rev.ok_or(MetadataError::Unlocked {
        kind: locked.kind.clone(),
    })?;
    let rev = parse_rev(&rev_text).ok_or(MetadataError::Rev(rev_text))?;
    let nar_text = locked.nar_hash.unwrap_or_default();
    let nar_hash = parse_nar_hash(&nar_text).ok_or(MetadataError::NarHash(nar_text))?;
    if !names_rev(&metadata.url, &rev) {
        return Err(MetadataError::Url(metadata.url));
    }
    Ok(FlakeLock {
        url: metadata.url,
        rev,
        nar_hash,
    })
}

/// 40 lowercase hex digits, as Nix prints a git or Mercurial rev.
fn parse_rev(text: &str) -> Option<[u8; FLAKE_REV_BYTES]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * FLAKE_REV_BYTES {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut rev = [0u8; FLAKE_REV_BYTES];
    for (byte, pair) in rev.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(rev)
}

/// An SRI SHA-256 hash, `sha256-` and 44 characters of padded standard base64.
fn parse_nar_hash(text: &str) -> Option<[u8; NAR_HASH_BYTES]> {
    let b64 = text.strip_prefix("sha256-")?.as_bytes();
    // 32 bytes are 43 digits and one '='; the last digit carries 2 bits of padding, which must
    // be zero so that one hash has one spelling.
    if b64.len() != 44 || b64[43] != b'=' {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(NAR_HASH_BYTES + 1);
    for &c in &b64[..43] {
        bits = (bits << 6) | u32::from(value(c)?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `nix` to run and how long it may take: `$MYCO_NIX` (default `nix` from `PATH`) and
/// `$MYCO_NIX_TIMEOUT_MS` (default `NIX_TIMEOUT_MS_DEFAULT`).
pub struct Nix {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Nix {
    pub fn from_env() -> Result<Nix, String> {
        let program = std::env::var_os(NIX_ENV).map_or_else(|| PathBuf::from("nix"), PathBuf::from);
        let timeout_ms = match std::env::var(NIX_TIMEOUT_ENV) {
            Ok(text) => text
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    format!(
                        "{NIX_TIMEOUT_ENV} must be a positive number of milliseconds, got {text:?}"
                    )
                })?,
            Err(_) => NIX_TIMEOUT_MS_DEFAULT,
        };
        Ok(Nix {
            program,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// What a finished (or stopped) `nix` run left: its exit code, stdout and the end of stderr.
struct Run {
    /// `None` when it was killed at the timeout or by a signal.
    code: Option<i32>,
    timed_out: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Locks `uri` with `nix flake metadata --json`. Every error is one sentence saying what went
/// wrong and what to do; nothing changes on the operator's machine but Nix's own fetch cache.
pub fn lock(uri: &str, nix: &Nix) -> Result<FlakeLock, String> {
    let run = run_metadata(uri, nix)?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    let tail = stderr.trim();
    if run.timed_out {
        return Err(format!(
            "'nix flake metadata' did not lock {uri:?} within {} s and was stopped; check the \
             reference and the network, or allow more time with {NIX_TIMEOUT_ENV}",
            nix.timeout.as_secs_f64()
        ));
    }
    match run.code {
        Some(0) => {}
        Some(code) => {
            return Err(format!(
                "'nix flake metadata' could not lock {uri:?} (exit {code}): {tail}"
            ))
        }
        None => {
            return Err(format!(
                "'nix flake metadata' was killed by a signal while locking {uri:?}: {tail}"
            ))
        }
    }
    parse_metadata(&run.stdout).map_err(|e| match e {
        MetadataError::Unlocked { .. } if stderr.contains("is dirty") => format!(
            "{uri:?} is a git tree with uncommitted changes, so it names no commit to lock: \
             commit them, or name a branch (?ref=main) to lock its last commit"
        ),
        MetadataError::Unlocked { .. } => format!(
            "{uri:?} cannot be locked: {e}; name a git repository, e.g. \
             git+https://host/repo?ref=main, so that every box builds one commit"
        ),
        _ => format!("'nix flake metadata' answered for {uri:?}, but {e}"),
    })
}

/// Runs `nix flake metadata --json URI`, reading at most `METADATA_BYTES_MAX` of stdout and
/// keeping the end of stderr, and kills it at the timeout.
fn run_metadata(uri: &str, nix: &Nix) -> Result<Run, String> {
    // --refresh: a branch moves, and Nix would otherwise reuse a fetch up to an hour old
    // (tarball-ttl), locking an older commit than the one the operator just pushed.
    let mut child = Command::new(&nix.program)
        .args([
            "flake",
            "metadata",
            "--json",
            "--refresh",
            "--no-write-lock-file",
            uri,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(nix, e))?;
    let stdout = read_bounded(child.stdout.take(), METADATA_BYTES_MAX);
    let stderr = read_bounded(child.stderr.take(), usize::MAX);
    let (code, timed_out) = wait_until(&mut child, Instant::now() + nix.timeout)?;
    // On a timeout the readers are left behind: a grandchild may hold the pipes open, and the
    // caller reports the timeout without waiting for it.
    let (stdout, mut stderr) = if timed_out {
        (Vec::new(), Vec::new())
    } else {
        (join(stdout), join(stderr))
    };
    let cut = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    stderr.drain(..cut);
    Ok(Run {
        code,
        timed_out,
        stdout,
        stderr,
    })
}

fn spawn_error(nix: &Nix, e: std::io::Error) -> String {
    let program = nix.program.display();
    if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "'{program}' was not found: myco locks flake references with 'nix flake metadata', so \
             Nix must be installed on this machine (Debian and Ubuntu: apt install nix-bin; \
             elsewhere see https://nixos.org/download) with experimental-features = nix-command \
             flakes; or set {NIX_ENV} to its path"
        )
    } else {
        format!("cannot run '{program}' to lock the flake reference: {e}")
    }
}

/// Reads `pipe` to its end on a thread, keeping the first `limit` bytes and discarding the rest,
/// so that a child never blocks on a full pipe.
fn read_bounded(pipe: Option<impl Read + Send + 'static>, limit: usize) -> JoinHandle<Vec<u8>> {
    let mut pipe = pipe.expect("the pipe was requested");
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            let room = limit.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&chunk[..room]);
        }
        kept
    })
}

fn join(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    reader.join().expect("a pipe reader does not panic")
}

/// Waits for `child` until `deadline`, then kills it: its exit code, and whether it timed out.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<(Option<i32>, bool), String> {
    loop {
        let status = child
            .try_wait()
            .map_err(|e| format!("cannot wait for nix: {e}"))?;
        if let Some(status) = status {
            return Ok((status.code(), false));
        }
        if Instant::now() >= deadline {
            // Already gone is fine: either way it runs no more.
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
