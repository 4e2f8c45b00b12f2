//! Replacing a small file atomically: whoever reads it (systemd, a restarted daemon) sees the old
//! contents or the new, never half, and after a crash the new contents are there only if the
//! rename is on disk. Nothing here allocates: the temporary name is built on the stack.

use crate::path::StackPath;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Replaces `path` with what `write` puts into a fresh file: written to `.<name>.tmp` beside it,
/// synced, renamed over `path`, and the directory synced so the rename itself is durable. On an
/// error the old file is untouched (a leftover temporary file is replaced by the next call).
pub fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = StackPath::join(dir, &[b".", name.as_bytes(), b".tmp"])?;
    let mut file = File::create(&tmp)?;
    write(&mut file)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A replace leaves exactly the new contents and no temporary file; a failed write leaves
    /// the old contents.
    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("myco-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        fs::write(&path, "old").unwrap();
        replace_file(&path, |f| f.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(!dir.join(".f.tmp").exists());
        let failed = replace_file(&path, |_| Err(io::Error::other("refused")));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        fs::remove_dir_all(&dir).unwrap();
    }
}
