//! Temporary directories. Each name is unique per process and per call (process id and a
//! counter), so tests running at once never share one, and it lives under the system's temporary
//! directory. A directory is removed when dropped, unless the thread is panicking or
//! `MYCO_TESTS_KEEP=1` is set: then it is kept, and its path printed, for diagnosis.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// Unix socket paths must fit `sun_path` (108 bytes with its NUL); leave room for a socket name.
const SOCKET_DIR_BYTES_MAX: usize = 90;

/// A fresh directory for one test, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory whose name starts with `myco-<name>-` (`name` cut to 24 characters,
    /// so sockets inside fit `sun_path`), so a kept directory says whose it was.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let short: String = name.chars().take(24).collect();
        let unique = format!("myco-{short}-{}-{n}", std::process::id());
        let mut path = std::env::temp_dir().join(&unique);
        // A long $TMPDIR would push sockets in the directory past sun_path; /tmp always fits.
        if path.as_os_str().len() > SOCKET_DIR_BYTES_MAX {
            path = PathBuf::from("/tmp").join(&unique);
        }
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `bytes` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("MYCO_TESTS_KEEP").is_some_and(|v| v == "1") {
            eprintln!("myco-testkit: kept {} for diagnosis", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Every file's (path, size, mtime) under `dir`, sorted: what "nothing was written" compares.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

/// Reads a whole file as text, or the empty string.
pub fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
