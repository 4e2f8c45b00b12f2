//! The audit log: one JSON line for every deployment outcome this box applies (built, started,
//! build-failed, removed, rolled back), so an operator can say afterwards what ran here, from
//! which signed entry and whose key. `myco audit` reads it through `GET /audit`.
//!
//! Invariants:
//! - A line is appended with one `write` and made durable with `fdatasync` before the call
//!   returns, so a line the caller saw written survives a crash or SIGKILL; the executor appends
//!   a unit's "started" line when its file is written, before the `systemctl enable` or
//!   `restart` that starts it is even spawned.
//! - Nothing allocates after [`AuditLog::open`]: each line is formatted into a fixed buffer; a
//!   line that does not fit is refused whole (never cut), which cannot happen for a valid entry.
//! - The file is bounded: past `ROTATE_BYTES` it becomes `audit.log.1`, the older ones move up
//!   to `audit.log.3`, and the oldest is dropped; at most `4 * ROTATE_BYTES` are on disk.
//! - Nothing is written at rest: lines come only from outcomes.

use crate::path::StackPath;
use myco_core::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The log is rotated when a line would take it past this many bytes.
pub const ROTATE_BYTES: u64 = 1024 * 1024;
/// Rotated files kept: `audit.log.1` (newest) to `audit.log.3`.
pub const ROTATED_KEPT: u32 = 3;
/// One line at most: an entry is at most 900 bytes, so its fields fit even fully escaped.
pub const LINE_BYTES_MAX: usize = 8 * 1024;

/// What happened to a service on this box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Its flake output was built (the store path is known).
    Built,
    /// Its unit was written and is being started or restarted.
    Started,
    /// Its unit was written for a version that changes nothing it runs (scaling, or the same
    /// manifest deployed again): systemd reloads it, nothing restarts it.
    Rewritten,
    /// Its flake output could not be built; nothing changed.
    BuildFailed,
    /// It is no longer placed here: stopped, disabled and its unit deleted.
    Removed,
    /// A new version failed and the previous one runs again.
    RolledBack,
    /// A step of a rollout on this box (`executor::rollout::is_step`): `on-trial`, `settled`,
    /// `held-<reason>`.
    Rollout(&'static str),
}

impl AuditOutcome {
    /// A unit file was written: a version started, the version before a held one again, or a
    /// version that changes nothing the unit runs (`in_place`).
    pub fn written(rollback: bool, in_place: bool) -> AuditOutcome {
        match (rollback, in_place) {
            (true, _) => AuditOutcome::RolledBack,
            (false, true) => AuditOutcome::Rewritten,
            (false, false) => AuditOutcome::Started,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AuditOutcome::Built => "built",
            AuditOutcome::Started => "started",
            AuditOutcome::Rewritten => "rewritten",
            AuditOutcome::BuildFailed => "build-failed",
            AuditOutcome::Removed => "removed",
            AuditOutcome::RolledBack => "rolled-back",
            AuditOutcome::Rollout(step) => step,
        }
    }
}

/// What a line says of the entry behind an outcome; `None` fields are written as `null` (a
/// removal knows only the service; an exec service has no flake).
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditEntry<'a> {
    pub version: Option<u64>,
    pub key_id: Option<u32>,
    /// The entry digest the unit records (`executor::unit_digest`).
    pub digest: Option<u64>,
    pub locked_ref: Option<&'a str>,
    pub rev: Option<[u8; FLAKE_REV_BYTES]>,
    pub nar_hash: Option<[u8; NAR_HASH_BYTES]>,
    pub store_path: Option<&'a str>,
}

impl<'a> AuditEntry<'a> {
    /// The fields an encoded signed entry carries (all `None` if it does not decode).
    pub fn of(entry: &'a [u8], digest: u64) -> AuditEntry<'a> {
        use myco_core::schema::entry::{Entry, Source};
        let Ok(e) = Entry::decode(entry) else {
            return AuditEntry::default();
        };
        let mut fields = AuditEntry {
            version: Some(e.body.version.clock),
            key_id: Some(e.body.version.key_id),
            digest: Some(digest),
            ..AuditEntry::default()
        };
        if let Some(Source::Flake {
            uri, rev, nar_hash, ..
        }) = e.body.spec.as_ref().map(|s| s.source)
        {
            fields.locked_ref = Some(uri);
            fields.rev = Some(rev);
            fields.nar_hash = Some(nar_hash);
        }
        fields
    }
}

/// The open log, its size, and the line buffer.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    size: u64,
    /// `ROTATE_BYTES`, smaller in tests (each line costs an `fdatasync`).
    rotate_bytes: u64,
    /// `LINE_BYTES_MAX`, the arena's.
    line: &'static mut [u8],
    /// Lines written since start, for `/metrics`.
    pub lines: u64,
}

impl AuditLog {
    /// Opens (creating it and its directory) the log at `path` for appending; lines are
    /// formatted in `line` (at least `LINE_BYTES_MAX`).
    pub fn open(path: &Path, line: &'static mut [u8]) -> io::Result<AuditLog> {
        AuditLog::open_rotating_at(path, ROTATE_BYTES, line)
    }

    fn open_rotating_at(
        path: &Path,
        rotate_bytes: u64,
        line: &'static mut [u8],
    ) -> io::Result<AuditLog> {
        assert!(line.len() >= LINE_BYTES_MAX);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        // Refused now if the rotated names would not fit the stack, not at the first rotation.
        numbered(path, ROTATED_KEPT)?;
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            size,
            rotate_bytes,
            line,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and syncs it; `unix_ms` is the wall-clock time. An error means no
    /// line was written (a failed `fdatasync` may leave one the next boot reads).
    pub fn append(
        &mut self,
        unix_ms: u64,
        service: &str,
        outcome: AuditOutcome,
        entry: &AuditEntry<'_>,
    ) -> io::Result<()> {
        let mut out = Cursor {
            buf: self.line,
            len: 0,
        };
        format_line(&mut out, unix_ms, service, outcome, entry)
            .map_err(|_| io::Error::other("the audit line does not fit its buffer"))?;
        let len = out.len as u64;
        if self.size > 0 && self.size + len > self.rotate_bytes {
            self.rotate()?;
        }
        self.file.write_all(&self.line[..len as usize])?;
        self.size += len;
        self.file.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    /// `audit.log.2` → `.3`, `.1` → `.2`, `audit.log` → `.1`, and a new empty `audit.log`.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..ROTATED_KEPT).rev() {
            match fs::rename(numbered(&self.path, n)?, numbered(&self.path, n + 1)?) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, numbered(&self.path, 1)?)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// `audit.log.N`, built on the stack: rotation happens long after start-up.
pub fn numbered(path: &Path, n: u32) -> io::Result<StackPath> {
    let mut numbered = StackPath::new(path)?;
    write!(numbered, ".{n}").map_err(|_| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    Ok(numbered)
}

fn format_line(
    out: &mut Cursor<'_>,
    unix_ms: u64,
    service: &str,
    outcome: AuditOutcome,
    e: &AuditEntry<'_>,
) -> fmt::Result {
    out.write_str("{\"time\":\"")?;
    rfc3339(out, unix_ms)?;
    out.write_str("\",\"service\":")?;
    json_str(out, Some(service))?;
    write!(out, ",\"version\":")?;
    json_num(out, e.version)?;
    write!(out, ",\"key_id\":")?;
    json_num(out, e.key_id.map(u64::from))?;
    match e.digest {
        Some(d) => write!(out, ",\"entry\":\"{d:016x}\"")?,
        None => out.write_str(",\"entry\":null")?,
    }
    out.write_str(",\"ref\":")?;
    json_str(out, e.locked_ref)?;
    out.write_str(",\"rev\":")?;
    json_hex(out, e.rev.as_ref().map(|r| &r[..]))?;
    out.write_str(",\"nar_hash\":")?;
    json_hex(out, e.nar_hash.as_ref().map(|h| &h[..]))?;
    out.write_str(",\"store_path\":")?;
    json_str(out, e.store_path)?;
    writeln!(out, ",\"outcome\":\"{}\"}}", outcome.name())
}

fn json_num(out: &mut Cursor<'_>, n: Option<u64>) -> fmt::Result {
    match n {
        Some(n) => write!(out, "{n}"),
        None => out.write_str("null"),
    }
}

fn json_hex(out: &mut Cursor<'_>, bytes: Option<&[u8]>) -> fmt::Result {
    let Some(bytes) = bytes else {
        return out.write_str("null");
    };
    out.write_char('"')?;
    for b in bytes {
        write!(out, "{b:02x}")?;
    }
    out.write_char('"')
}

fn json_str(out: &mut Cursor<'_>, text: Option<&str>) -> fmt::Result {
    let Some(text) = text else {
        return out.write_str("null");
    };
    out.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if c < ' ' => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// `2026-12-02T03:55:28.123Z` from milliseconds since the Unix epoch (civil-from-days, proleptic
/// Gregorian).
pub(crate) fn rfc3339(out: &mut impl fmt::Write, unix_ms: u64) -> fmt::Result {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// A `fmt::Write` into a fixed buffer that fails, rather than grows, when full.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("myco-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A line holds every field, unknown ones as null, strings escaped, time in RFC 3339.
    #[test]
    fn a_line_is_one_json_object() {
        let dir = temp_dir("line");
        let path = dir.join("audit.log");
        let mut log = AuditLog::open(&path, crate::arena::leak_bytes(LINE_BYTES_MAX)).unwrap();
        let entry = AuditEntry {
            version: Some(3),
            key_id: Some(7),
            digest: Some(0xab),
            locked_ref: Some("git+https://x/\"y\""),
            rev: Some([0xde; FLAKE_REV_BYTES]),
            ..AuditEntry::default()
        };
        log.append(1_796_183_728_123, "web", AuditOutcome::Started, &entry)
            .unwrap();
        log.append(0, "web", AuditOutcome::Removed, &AuditEntry::default())
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "{\"time\":\"2026-12-02T03:55:28.123Z\",\"service\":\"web\",\"version\":3,\
\"key_id\":7,\"entry\":\"00000000000000ab\",\"ref\":\"git+https://x/\\\"y\\\"\",\
\"rev\":\"dededededededededededededededededededede\",\"nar_hash\":null,\"store_path\":null,\"outcome\":\"started\"}"
        );
        assert!(lines[1].starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\""));
        assert!(lines[1].ends_with("\"outcome\":\"removed\"}"));
        assert_eq!(log.lines, 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Past its size the log moves to `.1`, older ones up to `.3`, the oldest dropped, and no
    /// line is lost or cut across files. (A small size: every line costs an `fdatasync`.)
    #[test]
    fn rotates_at_its_size_and_keeps_three() {
        const ROTATE_BYTES: u64 = 4096;
        let dir = temp_dir("rotate");
        let path = dir.join("audit.log");
        let mut log = AuditLog::open_rotating_at(
            &path,
            ROTATE_BYTES,
            crate::arena::leak_bytes(LINE_BYTES_MAX),
        )
        .unwrap();
        let entry = AuditEntry::default();
        let line_len = {
            log.append(0, "web", AuditOutcome::Started, &entry).unwrap();
            fs::metadata(&path).unwrap().len()
        };
        let per_file = ROTATE_BYTES / line_len;
        for _ in 1..per_file * 5 {
            log.append(0, "web", AuditOutcome::Started, &entry).unwrap();
        }
        for n in 1..=ROTATED_KEPT {
            let len = fs::metadata(numbered(&path, n).unwrap()).unwrap().len();
            assert!(len <= ROTATE_BYTES && len % line_len == 0, "whole lines");
        }
        assert!(!numbered(&path, ROTATED_KEPT + 1)
            .unwrap()
            .as_path()
            .exists());
        assert!(fs::metadata(&path).unwrap().len() <= ROTATE_BYTES);
        fs::remove_dir_all(&dir).unwrap();
    }
}
