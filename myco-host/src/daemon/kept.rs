//! The versions the executor keeps to go back to (`rollout::Kept`), on disk too, so that a
//! restarted daemon can still write back the version before a new one that fails, and still
//! tell a version that only scales a service from one that changes it (docs/algorithm.md
//! section 9).
//!
//! `<state-dir>/kept/<slot>`, one file per slot of the core's kept table (`Executor::kept`, at
//! most `KEPT_MAX`), each a record of `rollout::encode_kept`: the signed entry and its built
//! program. After each step of the executor, a slot whose version changed is written anew
//! (atomically, fsynced: `atomic::replace_file`) and an emptied one deleted; a crash between
//! the write of a unit and of its record loses only that record, which makes the next version
//! of the service restart (or hold without going back) as before this existed. At boot every
//! record is read back in slot order; one that does not decode, is not signed by the cluster's
//! operator key, or names a service without a unit here is left out and logged
//! (`Executor::restore_kept` says which it takes). Nothing is allocated after start: records are
//! encoded into the arena's buffer and paths are built on the stack.

use crate::flight::{Level, Logger};
use crate::path::StackPath;
use myco_core::config::KEPT_MAX;
use myco_core::crypto::{check_entry, PublicKey};
use myco_core::executor::rollout::{decode_kept, encode_kept, Kept};
use myco_core::executor::{unit_digest, Executor};
use myco_core::schema::entry::Entry;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory below the state directory.
pub const KEPT_DIR: &str = "kept";

/// What is on disk, slot by slot.
pub struct KeptFiles {
    dir: PathBuf,
    /// The digest of the version each slot's file holds; 0: no file; `u64::MAX`: a file that
    /// holds nothing usable (rewritten or deleted at the next sync).
    on_disk: [u64; KEPT_MAX],
    /// A record being written (the arena's).
    buf: &'static mut [u8],
}

impl KeptFiles {
    /// The records in `<state_dir>/kept`, made if missing.
    pub fn open(state_dir: &Path, buf: &'static mut [u8]) -> io::Result<KeptFiles> {
        let dir = state_dir.join(KEPT_DIR);
        fs::create_dir_all(&dir)?;
        Ok(KeptFiles {
            dir,
            on_disk: [0; KEPT_MAX],
            buf,
        })
    }

    /// At boot, after the units found were handed to `core`: every record that decodes, is
    /// signed by `operator` and that `core` takes (a service with a unit here) is kept again.
    pub fn restore(&mut self, core: &mut Executor, operator: &PublicKey, log: &Logger) {
        let mut restored = 0;
        for slot in 0..KEPT_MAX {
            let Ok(path) = slot_path(&self.dir, slot) else {
                continue;
            };
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            self.on_disk[slot] = u64::MAX;
            let Some((program, entry)) = decode_kept(&bytes) else {
                log.log(
                    Level::Warning,
                    format_args!(
                        "kept version {} does not decode: left out",
                        AsRef::<Path>::as_ref(&path).display()
                    ),
                );
                continue;
            };
            let signed = Entry::decode(entry).is_ok_and(|e| check_entry(operator, &e).is_ok());
            if signed && core.restore_kept(entry, program) {
                self.on_disk[slot] = unit_digest(entry);
                restored += 1;
            } else {
                log.log(Level::Info, format_args!("kept version {} left out: not signed by the operator key, or of a service with no unit here", AsRef::<Path>::as_ref(&path).display()));
            }
        }
        if restored > 0 {
            log.log(
                Level::Info,
                format_args!("{restored} kept version(s) to go back to read back"),
            );
        }
    }

    /// Brings the files in line with `kept`, the core's table: each slot whose version changed
    /// is written, each emptied one deleted. A failure is logged and tried again at the next
    /// sync (the slot stays marked as differing).
    pub fn sync(&mut self, kept: &[Kept], log: &Logger) {
        for slot in 0..KEPT_MAX {
            let want = kept.get(slot);
            let digest = want.map_or(0, |k| k.digest);
            if self.on_disk[slot] == digest {
                continue;
            }
            let done = match want {
                Some(k) => self.write(slot, k),
                None => self.remove(slot),
            };
            match done {
                Ok(()) => self.on_disk[slot] = digest,
                Err(e) => log.failed(
                    Level::Warning,
                    "cannot keep a version to go back to on disk",
                    &e,
                ),
            }
        }
    }

    fn write(&mut self, slot: usize, kept: &Kept) -> io::Result<()> {
        let len = encode_kept(kept, self.buf)
            .ok_or_else(|| io::Error::other("a kept record does not fit"))?;
        let record = &self.buf[..len];
        crate::atomic::replace_file(slot_path(&self.dir, slot)?.as_ref(), |f| {
            f.write_all(record)
        })
    }

    fn remove(&mut self, slot: usize) -> io::Result<()> {
        match fs::remove_file(slot_path(&self.dir, slot)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// `<dir>/<slot>`, on the stack.
fn slot_path(dir: &Path, slot: usize) -> io::Result<StackPath> {
    let digits = [b'0' + (slot / 10) as u8, b'0' + (slot % 10) as u8];
    let digits = if slot < 10 { &digits[1..] } else { &digits[..] };
    StackPath::join(dir, &[digits])
}
