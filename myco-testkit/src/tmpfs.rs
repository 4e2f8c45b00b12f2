//! A small filesystem of a fixed size for the full-disk tests: a tmpfs mounted on a directory
//! and unmounted when the value drops, and a filler that takes every free byte. Mounting needs
//! root, so the tests that use it are the root-only group (`ROOT_TESTS` in the Makefile, which
//! `make test-root` runs and `make test` leaves out).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted on a directory; unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB on `path` (created if need be). Panics without root.
    pub fn mount(path: &Path, kib: u32) -> Tmpfs {
        fs::create_dir_all(path).expect("the mount point can be made");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (`make test-root`; CI runs it as root)"
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses, in ever smaller pieces, so that not
/// even one block is left free.
pub fn fill(path: &Path) {
    let chunk = vec![0u8; 1 << 20];
    let mut file = fs::File::create(path).expect("the filler can be created");
    let mut size = chunk.len();
    while size > 0 {
        if std::io::Write::write_all(&mut file, &chunk[..size]).is_err() {
            size /= 2;
        }
    }
}
