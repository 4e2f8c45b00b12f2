//! The disk reserve: a file of allocated blocks, `<state-dir>/reserve`, that `myco-d` deletes when
//! a WAL append fails with ENOSPC, so the WAL keeps working on a full disk and the operator has
//! room to clean up; once the disk has room again, `ensure` puts it back.
//!
//! Invariants: a reserve reported `Present` has exactly `bytes` bytes, all allocated (never a
//! sparse file, which would hold no space), and is durable: the file and the directory are synced.
//! Creating the reserve never fills the disk: it waits until the free space exceeds the missing
//! blocks plus `RESERVE_MARGIN_BYTES` (reported `Deferred`, with both numbers), and if the
//! allocation still hits ENOSPC it deletes what it allocated. `Released` means a file was deleted;
//! a disabled reserve (`disable`, for a size of 0) leaves no file behind from an earlier run.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::libc::off_t;
use nix::sys::statvfs::statvfs;
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const RESERVE_FILE_NAME: &str = "reserve";
/// Free space that must remain after the reserve is made. Without it, the reserve would come back
/// as soon as a little space did, fill the disk again and be released again; with it, the daemon
/// re-creates the reserve only once the disk has clearly recovered.
pub const RESERVE_MARGIN_BYTES: u64 = 64 * 1024 * 1024;
/// The zero-filling fallback writes from a buffer this large on the stack: no allocation after
/// start-up, and nothing added to the binary (a zeroed constant would sit in its read-only data).
const ZERO_CHUNK_BYTES: usize = 64 * 1024;
/// `st_blocks` counts 512-byte units whatever the filesystem's block size (stat(2)).
const STAT_BLOCK_BYTES: u64 = 512;

/// How the reserve's blocks were allocated; metrics show it, because zero-filling means the
/// filesystem lacks fallocate and making the reserve costs real writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    Fallocate,
    /// fallocate(2) failed with EOPNOTSUPP, so the blocks were allocated by writing zeros.
    ZeroFilled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveState {
    /// `ensure` has not run yet.
    Unchecked,
    Present {
        bytes: u64,
        allocation: Allocation,
    },
    /// Deleted by `release`, which freed `bytes`.
    Released {
        bytes: u64,
    },
    /// Not (re)created: the filesystem had only `available_bytes` free for unprivileged users,
    /// and creating it needs more than `needed_bytes` (the missing blocks plus the margin).
    Deferred {
        available_bytes: u64,
        needed_bytes: u64,
    },
    /// No reserve is kept (a size of 0), and none is left on disk.
    Disabled,
}

impl ReserveState {
    /// Why the reserve is deferred, for the log and `/health`; `None` in any other state.
    pub fn deferred_why(self) -> Option<DeferredWhy> {
        match self {
            ReserveState::Deferred {
                available_bytes,
                needed_bytes,
            } => Some(DeferredWhy {
                available_bytes,
                needed_bytes,
            }),
            _ => None,
        }
    }
}

/// A deferred reserve's numbers, displayed as one sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredWhy {
    pub available_bytes: u64,
    pub needed_bytes: u64,
}

impl fmt::Display for DeferredWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "only {} bytes are free on the state directory's filesystem, and making the reserve needs more than {} (the bytes it lacks plus a margin of {RESERVE_MARGIN_BYTES}, so that it never fills the disk)",
            self.available_bytes, self.needed_bytes
        )
    }
}

pub struct Reserve {
    dir: PathBuf,
    path: PathBuf,
    bytes: u64,
    state: ReserveState,
}

impl Reserve {
    /// A reserve of `bytes` bytes in `dir`, which must exist. Touches nothing until `ensure`.
    pub fn new(dir: impl Into<PathBuf>, bytes: u64) -> Reserve {
        let dir = dir.into();
        Reserve {
            path: dir.join(RESERVE_FILE_NAME),
            dir,
            bytes,
            state: ReserveState::Unchecked,
        }
    }

    pub fn state(&self) -> ReserveState {
        self.state
    }

    /// The size asked for; 0 keeps no reserve.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the reserve present if the disk has room for it, and reports which. Cheap when it is
    /// already present: allocating blocks that are already allocated changes nothing, so the
    /// syncs write nothing. A reserve left larger by an earlier run with a larger size is cut.
    pub fn ensure(&mut self) -> io::Result<ReserveState> {
        let allocated = metadata_if_exists(&self.path)?.map_or(0, |m| allocated_bytes(&m));
        let missing = self.bytes.saturating_sub(allocated);
        let available = available_bytes(&self.dir)?;
        let needed = missing.saturating_add(RESERVE_MARGIN_BYTES);
        self.state = if missing > 0 && available <= needed {
            ReserveState::Deferred {
                available_bytes: available,
                needed_bytes: needed,
            }
        } else {
            self.allocate()?
        };
        Ok(self.state)
    }

    /// Deletes the reserve, durably, and returns the bytes it held (0 if there was none). Call it
    /// when a write fails with ENOSPC, then retry the write. The directory is synced so that a
    /// crash cannot bring the reserve back and fill the disk again before the WAL replays.
    /// A reserve that was never made (deferred, disabled) stays as it is reported: nothing was
    /// released.
    pub fn release(&mut self) -> io::Result<u64> {
        let freed = self.remove()?;
        if freed > 0 || matches!(self.state, ReserveState::Present { .. }) {
            self.state = ReserveState::Released { bytes: freed };
        }
        Ok(freed)
    }

    /// Keeps no reserve: deletes one an earlier run left (durably) and returns the bytes it held.
    pub fn disable(&mut self) -> io::Result<u64> {
        let freed = self.remove()?;
        self.state = ReserveState::Disabled;
        Ok(freed)
    }

    fn allocate(&self) -> io::Result<ReserveState> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let allocation = match allocate_blocks(&file, self.bytes) {
            Ok(allocation) => allocation,
            // Another writer took the space after `statvfs`: give back what was allocated.
            Err(error) if error.raw_os_error() == Some(Errno::ENOSPC as i32) => {
                drop(file);
                self.remove()?;
                return Ok(ReserveState::Deferred {
                    available_bytes: available_bytes(&self.dir)?,
                    needed_bytes: self.bytes.saturating_add(RESERVE_MARGIN_BYTES),
                });
            }
            Err(error) => return Err(error),
        };
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let metadata = file.metadata()?;
        assert!(metadata.len() == self.bytes);
        assert!(allocated_bytes(&metadata) >= self.bytes);
        Ok(ReserveState::Present {
            bytes: self.bytes,
            allocation,
        })
    }

    /// Deletes the file if it exists and syncs the directory; returns the file's length.
    fn remove(&self) -> io::Result<u64> {
        let Some(metadata) = metadata_if_exists(&self.path)? else {
            return Ok(0);
        };
        fs::remove_file(&self.path)?;
        sync_dir(&self.dir)?;
        Ok(metadata.len())
    }
}

/// Allocates blocks for bytes `0..bytes` of `file` and makes it exactly that long.
fn allocate_blocks(file: &File, bytes: u64) -> io::Result<Allocation> {
    // fallocate(2) only grows a file, and rejects a zero length.
    if file.metadata()?.len() > bytes {
        file.set_len(bytes)?;
    }
    if bytes == 0 {
        return Ok(Allocation::Fallocate);
    }
    let len = off_t::try_from(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "reserve size does not fit off_t",
        )
    })?;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(Allocation::Fallocate),
        Err(Errno::EOPNOTSUPP) => {
            fill_zeros(file, bytes)?;
            Ok(Allocation::ZeroFilled)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Writes zeros from the file's end up to `bytes`. The fallback only ever writes the file in
/// order, so everything before its end is already allocated.
fn fill_zeros(file: &File, bytes: u64) -> io::Result<()> {
    let zeros = [0u8; ZERO_CHUNK_BYTES];
    let mut offset = file.metadata()?.len();
    while offset < bytes {
        let chunk = (bytes - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    Ok(())
}

fn metadata_if_exists(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn allocated_bytes(metadata: &Metadata) -> u64 {
    metadata.blocks().saturating_mul(STAT_BLOCK_BYTES)
}

/// Free bytes on `dir`'s filesystem for an unprivileged user (`f_bavail`, not `f_bfree`): the
/// daemon's writes cannot use the blocks reserved for root.
fn available_bytes(dir: &Path) -> io::Result<u64> {
    let stat = statvfs(dir)?;
    // Both are u64 on the 64-bit targets; the casts keep 32-bit ones building.
    let blocks = stat.blocks_available() as u64;
    Ok(blocks.saturating_mul(stat.fragment_size() as u64))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zero-filling fallback (used where fallocate is unsupported) continues from the file's
    /// end, keeps what was there, and leaves a file of exactly the size with every block allocated.
    #[test]
    fn fill_zeros_allocates_from_the_end() {
        let dir = myco_testkit::TempDir::new("reserve-fill");
        let path = dir.join("reserve");
        let bytes = 3 * ZERO_CHUNK_BYTES as u64 + 17;
        let file = File::create(&path).unwrap();
        file.write_all_at(b"kept", 0).unwrap();
        fill_zeros(&file, bytes).unwrap();
        let metadata = file.metadata().unwrap();
        let contents = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(metadata.len(), bytes);
        assert!(allocated_bytes(&metadata) >= bytes);
        assert_eq!(&contents[..4], b"kept");
        assert!(contents[4..].iter().all(|&b| b == 0));
    }
}
