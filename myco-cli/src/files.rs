//! The files `myco` reads and writes: key files, manifests, signed entries, and new output files
//! that never replace old ones.
//!
//! A key file holds a 32-byte Ed25519 seed as exactly 64 hex digits and an optional newline, with
//! mode 0600. A key that others can read is refused rather than used: it may already be copied,
//! and using it quietly would hide that.

use crate::args::{hex, Error};
use myco_cli::manifest::MANIFEST_BYTES_MAX;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::crypto::keys::{
    key_file_exposed, parse_key_file, KeyFileError, KEY_FILE_BYTES_MAX, SEED_BYTES,
};
use myco_core::crypto::SigningKey;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Key files are written owner-only; see the module comment.
pub const KEY_MODE: u32 = 0o600;
/// Certificates, revocations and signed entries are public: nodes and operators copy them around.
pub const PUBLIC_MODE: u32 = 0o644;

/// A fresh seed from the OS. An all-zero seed means the random source is broken, not unlucky.
pub fn random_seed() -> Result<[u8; SEED_BYTES], Error> {
    let mut seed = [0u8; SEED_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| {
            Error::Failed(format!(
                "cannot read /dev/urandom: {e}; run myco where the OS random source is available"
            ))
        })?;
    if seed == [0; SEED_BYTES] {
        return Err(Error::Failed(
            "/dev/urandom returned all zeros; check the system's random source before making keys"
                .into(),
        ));
    }
    Ok(seed)
}

/// The key file's contents for `seed`.
pub fn key_file_text(seed: &[u8; SEED_BYTES]) -> String {
    format!("{}\n", hex(seed))
}

/// Reads the key file at `path`, given by `flag`. Refuses a file others can read, a file that is
/// not 64 hex digits and an optional newline, and an all-zero seed.
pub fn read_key(path: &Path, flag: &str) -> Result<SigningKey, Error> {
    let shown = path.display();
    let io_error = |e: io::Error| {
        Error::Failed(format!(
            "cannot read {flag} '{shown}': {e}; check the path, or make a key with 'myco keygen'"
        ))
    };
    let mut file = File::open(path).map_err(io_error)?;
    // The mode of the file we opened, not of whatever the path names a moment later.
    let mode = file.metadata().map_err(io_error)?.mode();
    if key_file_exposed(mode) {
        return Err(Error::Failed(format!(
            "{flag} '{shown}' can be read by others (mode {:o}); run 'chmod 600 {shown}', and \
             replace the key if anyone else may have copied it",
            mode & 0o777
        )));
    }
    let mut text = Vec::with_capacity(KEY_FILE_BYTES_MAX + 1);
    // One byte more than a key file may hold, to tell "too long" from "just right".
    (&mut file)
        .take(KEY_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut text)
        .map_err(io_error)?;
    let seed = parse_key_file(&text).map_err(|e| {
        let what = match e {
            KeyFileError::Text(_) => "is not a key file",
            KeyFileError::ZeroSeed => "is no key",
        };
        Error::Failed(format!(
            "{flag} '{shown}' {what}: {e}; make a key file with 'myco keygen'"
        ))
    })?;
    Ok(SigningKey::from_seed(seed).expect("parse_key_file refuses the all-zero seed"))
}

/// Reads a manifest, refusing one longer than `MANIFEST_BYTES_MAX` without reading it whole.
pub fn read_manifest(path: &Path) -> Result<Vec<u8>, Error> {
    let shown = path.display();
    let io_error = |e: io::Error| {
        Error::Failed(format!(
            "cannot read manifest '{shown}': {e}; pass the manifest's path, or run myco in the \
             directory that holds myco.json"
        ))
    };
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    // One byte more than a manifest may hold, so the parser sees and reports "too long".
    file.take(MANIFEST_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    Ok(bytes)
}

/// Reads a signed entry file (`myco sign --out`), refusing one longer than an entry can be
/// without reading it whole. The caller decodes it.
pub fn read_entry(path: &Path) -> Result<Vec<u8>, Error> {
    let shown = path.display();
    let io_error = |e: io::Error| {
        Error::Failed(format!(
            "cannot read --entry '{shown}': {e}; pass the path of an entry file made by 'myco sign'"
        ))
    };
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::with_capacity(ENTRY_BYTES_MAX + 1);
    file.take(ENTRY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > ENTRY_BYTES_MAX {
        return Err(Error::Failed(format!(
            "--entry '{shown}' is longer than a signed entry can be ({ENTRY_BYTES_MAX} bytes); \
             pass an entry file made by 'myco sign'"
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to a new file at `path` with `mode` (less the umask), refusing to replace an
/// existing file: a key or certificate overwritten by mistake cannot be recovered.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let shown = path.display();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::Failed(format!(
                "'{shown}' already exists; remove it or choose another --out path"
            )),
            _ => Error::Failed(format!(
                "cannot create '{shown}': {e}; check that its directory exists and is writable"
            )),
        })?;
    // Synced before we report success: a key whose public half was printed must be on disk.
    let written = (&file).write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A half-written file would only block the retry with "already exists".
        let _ = std::fs::remove_file(path);
        return Err(Error::Failed(format!(
            "cannot write '{shown}': {e}; check free space and try again"
        )));
    }
    Ok(())
}
