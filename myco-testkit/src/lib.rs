//! The one test kit: what every test, benchmark and harness of Myco shares, so each concern has one
//! implementation. Development only; nothing here ships.
//!
//! - `bins`: finds (and if need be builds) the real `myco-d` and `myco`.
//! - `dir`: temporary directories, unique per process and per call, removed on drop.
//! - `wait`: `wait_until` and `wait_exit`, polling instead of sleeping a guessed time.
//! - `run`: running a command with a deadline and reading what it printed.
//! - `http`: an HTTP/1.1 client over the daemon's Unix socket, answers parsed with `httparse`.
//! - `metrics`, `json`: reading `/metrics` and the daemons' and the CLI's JSON.
//! - `alloc`: a counting allocator for tests that prove a path allocates nothing.
//! - `keys`: keys from fixed seeds, so every run of a test uses the same keys.
//! - `entries`: signed entries, through `myco_core::crypto::sign_entry`.
//! - `git`: a flake committed to a git repository, for the tests that build flakes.
//! - `daemon`: one `myco-d` with in-process keys; `cluster`: daemons made with the real `myco`.
//! - `scripted`: a stand-in daemon that answers `myco` with canned bytes.
//! - `trickle`: slow clients that send a byte a second to hold a server's connection slots.
//! - `man`: manual pages in roff from the help texts and the docs (the `manpages` binary).
//! - `tmpfs`: a small mounted filesystem and a filler, for the full-disk tests (root only).
//!
//! The one thing made here that ships is what the `manpages` binary writes: the man pages.
//!
//! Invariants: every process the kit starts dies when the value that owns it drops (and with the
//! thread that spawned it), and no helper sleeps where it could poll a condition.

pub mod alloc;
pub mod bins;
pub mod cluster;
pub mod daemon;
pub mod dir;
pub mod entries;
pub mod figures;
pub mod git;
pub mod http;
pub mod json;
pub mod keys;
pub mod loss;
pub mod lossy;
pub mod man;
pub mod metrics;
pub mod run;
pub mod scripted;
pub mod tmpfs;
pub mod trickle;
pub mod wait;

pub use cluster::{Cluster, Daemon, Key, NodeOptions};
pub use dir::TempDir;
pub use http::Answer;
pub use json::ServiceRow;
pub use run::Run;
pub use wait::{poll_until, wait_exit, wait_until, POLL_INTERVAL};

/// The stand-in `systemctl` daemons run instead of the real one in tests: it records each command
/// line in `calls` beside it and reports every unit `show` asks about as running.
pub const FAKE_SYSTEMCTL: &str = include_str!("../fake-systemctl.sh");

/// A stand-in `journalctl`: prints its arguments; with `--follow`, writes its pid to
/// `journal.pid` beside it and a `tick` line every 100 ms until killed.
pub const FAKE_JOURNALCTL: &str = r#"#!/bin/sh
echo "journal of $*"
case "$*" in
*--follow*)
    echo $$ > "$(dirname "$0")/journal.pid"
    while :; do echo tick; sleep 0.1; done
    ;;
esac
"#;

/// A stand-in `systemd-run`: records its command line in `systemd-run.calls` beside it, then runs
/// the command after `--` directly, with each `--setenv=KEY=VALUE` exported (the real one runs it
/// in a transient unit; `myco-d` runs builds and collections that way).
pub const FAKE_SYSTEMD_RUN: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/systemd-run.calls"
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case "$1" in --setenv=*) export "${1#--setenv=}" ;; esac
    shift
done
shift
exec "$@"
"#;

/// Lower-case hex of `bytes`, as key files and the API write keys.
pub fn hex(bytes: &[u8]) -> String {
    myco_core::hex::Hex(bytes).to_string()
}
