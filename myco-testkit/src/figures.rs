//! Figures a test measured, kept for a summary line printed after the tests (`tests/p2p-line.sh`
//! after `make test-root`): each test prints its line and writes it to
//! `target/test-figures/NAME`, so the summary is made of what the runs measured.

use crate::bins::profile_dir;
use std::fs;
use std::path::PathBuf;

/// `target/test-figures`, beside the profiles.
pub fn dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("a profile directory is inside the target directory")
        .join("test-figures")
}

/// Prints `line` and writes it as the figures of `name`, replacing an earlier run's.
pub fn record(name: &str, line: &str) {
    println!("{line}");
    let dir = dir();
    fs::create_dir_all(&dir).expect("the target directory is writable");
    fs::write(dir.join(name), format!("{line}\n")).expect("the target directory is writable");
}
