//! Paths built on the stack, for what the event loop opens, renames and deletes after start-up
//! (units, GC roots, build logs, snapshots), so that naming a file never allocates.
//!
//! Invariants: a `StackPath` holds at most `PATH_BYTES_MAX` bytes, none of them NUL, followed by a
//! NUL, so it is both a `&Path` and a `&CStr`. `PATH_BYTES_MAX` stays below std's own stack buffer
//! for path arguments (384 bytes; longer paths are copied to the heap), so handing it to `std::fs`
//! allocates nothing either. A path that would not fit is an error (`ENAMETOOLONG`) that changes
//! nothing; the directories the daemon works in are far shorter.

use std::ffi::{CStr, OsStr};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest path built here, in bytes, without its NUL.
pub const PATH_BYTES_MAX: usize = 382;

/// A path of at most `PATH_BYTES_MAX` bytes, NUL-terminated, on the stack.
#[derive(Clone)]
pub struct StackPath {
    bytes: [u8; PATH_BYTES_MAX + 1],
    len: usize,
}

impl StackPath {
    /// A copy of `path`.
    pub fn new(path: &Path) -> io::Result<StackPath> {
        let mut copy = StackPath {
            bytes: [0; PATH_BYTES_MAX + 1],
            len: 0,
        };
        copy.push(path.as_os_str().as_bytes())?;
        Ok(copy)
    }

    /// `dir/` followed by `parts` concatenated.
    pub fn join(dir: &Path, parts: &[&[u8]]) -> io::Result<StackPath> {
        let mut path = StackPath::new(dir)?;
        if !path.as_bytes().ends_with(b"/") {
            path.push(b"/")?;
        }
        for part in parts {
            path.push(part)?;
        }
        Ok(path)
    }

    /// Appends `bytes`; on `ENAMETOOLONG` (or `EINVAL` for a NUL) the path is unchanged.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let end = self.len + bytes.len();
        if end > PATH_BYTES_MAX {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.bytes[end] = 0;
        self.len = end;
        Ok(())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.as_bytes()))
    }

    pub fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).expect("one NUL, at the end")
    }
}

impl AsRef<Path> for StackPath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl fmt::Write for StackPath {
    /// Appends formatted text; a path that would grow too long fails the formatting.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Calls `f` with the name of every entry of the open directory `dir` but `.` and `..`, read with
/// getdents64(2) into a stack buffer (std's `read_dir` allocates its iterator and every name). The
/// directory is listed from its start at each call. An entry removed or added meanwhile may be
/// seen or not, as with readdir(3).
pub fn for_each_name(dir: &std::fs::File, mut f: impl FnMut(&CStr)) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = dir.as_raw_fd();
    // SAFETY: lseek on a descriptor we own; no memory is involved.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // u64s: the kernel writes 8-byte aligned `linux_dirent64` records.
    let mut buf = [0u64; 512];
    loop {
        let len = core::mem::size_of_val(&buf);
        // SAFETY: the kernel writes at most `len` bytes into `buf`, which we own and which is
        // aligned for its records; it returns how many it wrote, or -1.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), len) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: reading the `n` bytes the kernel just wrote, as bytes.
        let bytes = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        each_record(bytes, &mut f);
    }
}

/// The target of the symbolic link `name` in the open directory `dir`, read with readlinkat(2)
/// into `buf`; `None` if it is not a link, cannot be read, or does not fit `buf` (std's and nix's
/// `read_link` allocate the target).
pub fn read_link_at<'b>(dir: &std::fs::File, name: &CStr, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    use std::os::fd::AsRawFd;
    // SAFETY: `name` is NUL-terminated; the kernel writes at most `buf.len()` bytes into `buf`,
    // which we own, and returns how many, or -1.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    // A target that fills the buffer may have been cut.
    let n = usize::try_from(n).ok().filter(|&n| n < buf.len())?;
    Some(&buf[..n])
}

/// The names in one getdents64 batch: each record is `d_ino` (8 bytes), `d_off` (8),
/// `d_reclen` (2), `d_type` (1), then the NUL-terminated name, padded to `d_reclen`.
fn each_record(mut bytes: &[u8], f: &mut impl FnMut(&CStr)) {
    const NAME_AT: usize = 19;
    while bytes.len() > NAME_AT {
        let reclen = usize::from(u16::from_ne_bytes([bytes[16], bytes[17]]));
        assert!(
            reclen > NAME_AT && reclen <= bytes.len(),
            "a getdents64 record"
        );
        let name = CStr::from_bytes_until_nul(&bytes[NAME_AT..reclen]).expect("names end in NUL");
        if name != c"." && name != c".." {
            f(name);
        }
        bytes = &bytes[reclen..];
    }
}

/// Shows bytes as text without allocating: valid UTF-8 as is, each invalid sequence as U+FFFD
/// (what `String::from_utf8_lossy` gives, but written straight to the formatter).
pub struct Lossy<'a>(pub &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    /// A joined path reads back as a `Path` and as a `CStr`; one too long, or with a NUL, is
    /// refused and leaves the path as it was.
    #[test]
    fn joins_and_refuses_what_does_not_fit() {
        let mut p = StackPath::join(Path::new("/var/lib/myco"), &[b"snapshot-", b"0001"]).unwrap();
        assert_eq!(p.as_path(), Path::new("/var/lib/myco/snapshot-0001"));
        assert_eq!(p.as_c_str().to_bytes(), b"/var/lib/myco/snapshot-0001");
        write!(p, ".{}", 7).unwrap();
        assert_eq!(p.as_bytes(), b"/var/lib/myco/snapshot-0001.7");
        let e = p.push(&[b'x'; PATH_BYTES_MAX]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
        assert_eq!(
            p.push(b"a\0b").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert_eq!(p.as_bytes(), b"/var/lib/myco/snapshot-0001.7");
        let slash = StackPath::join(Path::new("/"), &[b"f"]).unwrap();
        assert_eq!(slash.as_bytes(), b"/f");
    }

    /// Listing sees every name but `.` and `..`, again at every call.
    #[test]
    fn lists_a_directory_twice() {
        let dir = std::env::temp_dir().join(format!("myco-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..300 {
            std::fs::write(dir.join(format!("file-{i:03}")), "").unwrap();
        }
        let handle = std::fs::File::open(&dir).unwrap();
        for _ in 0..2 {
            let mut names = Vec::new();
            for_each_name(&handle, |n| names.push(n.to_str().unwrap().to_owned())).unwrap();
            names.sort();
            let expected: Vec<String> = (0..300).map(|i| format!("file-{i:03}")).collect();
            assert_eq!(names, expected);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Invalid UTF-8 shows as replacement characters, as `from_utf8_lossy` shows it.
    #[test]
    fn lossy_matches_std() {
        let bytes = b"ok \xff\xfe then \xe2\x82 end";
        assert_eq!(
            Lossy(bytes).to_string(),
            String::from_utf8_lossy(bytes).into_owned()
        );
    }
}
