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
    /// After a failed write or delete (a full disk, say): no attempt before this time, and the
    /// failure was logged once, not at every step.
    retry_at_ms: u64,
    failing: bool,
}

/// How long a failed sync waits before the next attempt.
const RETRY_MS: u64 = 10_000;

impl KeptFiles {
    /// The records in `<state_dir>/kept`, made if missing.
    pub fn open(state_dir: &Path, buf: &'static mut [u8]) -> io::Result<KeptFiles> {
        let dir = state_dir.join(KEPT_DIR);
        fs::create_dir_all(&dir)?;
        Ok(KeptFiles {
            dir,
            on_disk: [0; KEPT_MAX],
            buf,
            retry_at_ms: 0,
            failing: false,
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
    /// is written, each emptied one deleted. A failure (the slot stays marked as differing) is
    /// logged once and tried again `RETRY_MS` later, not at every step of the loop.
    pub fn sync(&mut self, kept: &[Kept], log: &Logger, now_ms: u64) {
        if now_ms < self.retry_at_ms {
            return;
        }
        let mut failed = false;
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
                Err(e) => {
                    if !self.failing && !failed {
                        let what =
                            "cannot keep a version to go back to on disk (trying again every 10 s)";
                        log.failed(Level::Warning, what, &e);
                    }
                    failed = true;
                }
            }
        }
        if failed {
            self.retry_at_ms = now_ms.saturating_add(RETRY_MS);
        } else if self.failing {
            log.log(
                Level::Info,
                format_args!("the versions to go back to are on disk again"),
            );
        }
        self.failing = failed;
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

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::crypto::{sign_entry, SigningKey};
    use myco_core::schema::entry::{EntryBody, ServiceSpec, Source, Version};
    use myco_core::state::packed::EntryBytes;

    fn kept() -> Kept {
        let op = SigningKey::from_seed([7; 32]).unwrap();
        let body = EntryBody {
            name: "web",
            version: Version {
                clock: 1,
                key_id: op.public_key().key_id(),
            },
            spec: Some(ServiceSpec::minimal(Source::Exec { path: "/bin/true" })),
        };
        let mut out = [0u8; 512];
        let n = sign_entry(&op, &body, &mut out).unwrap();
        Kept {
            key: 1,
            digest: unit_digest(&out[..n]),
            entry: EntryBytes::validated(&out[..n]).unwrap(),
            program: None,
        }
    }

    /// A write that fails (here the directory is a file) is not tried again at every step of
    /// the loop, only once `RETRY_MS` passed; then the record is written.
    #[test]
    fn a_failed_write_waits_before_it_is_tried_again() {
        let root = std::env::temp_dir().join(format!("myco-kept-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let dir = root.join(KEPT_DIR);
        fs::write(&dir, b"not a directory").unwrap();
        let mut files = KeptFiles {
            dir: dir.clone(),
            on_disk: [0; KEPT_MAX],
            buf: crate::arena::leak_bytes(myco_core::executor::rollout::KEPT_RECORD_BYTES_MAX),
            retry_at_ms: 0,
            failing: false,
        };
        let kept = [kept()];
        let log = Logger::new(false);
        files.sync(&kept, &log, 1_000);
        assert!(files.failing);
        assert_eq!(files.retry_at_ms, 1_000 + RETRY_MS);
        fs::remove_file(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
        files.sync(&kept, &log, 5_000);
        assert!(!dir.join("0").exists(), "not tried before the retry time");
        files.sync(&kept, &log, 1_000 + RETRY_MS);
        assert!(!files.failing);
        let record = fs::read(dir.join("0")).unwrap();
        assert_eq!(
            decode_kept(&record).map(|(_, e)| e),
            Some(&kept[0].entry[..])
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
