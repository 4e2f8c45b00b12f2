//! `myco sign`: a myco.json manifest becomes a desired-state entry signed by the operator key.
//! `myco deploy` and `myco rm` sign through the same functions (`sign_manifest`,
//! `sign_tombstone`), so an entry posted to a daemon is byte for byte the one `myco sign` writes.
//!
//! A flake reference is locked to one commit before it is signed (`myco_cli::flake`), so every
//! box builds the same commit; a reference that cannot be locked is an error and nothing is
//! signed.
//!
//! The entry's version is the operator's clock: wall-clock milliseconds since the Unix epoch,
//! unless `--clock` gives one. Nodes keep, for each service, the entry with the highest version, so
//! the clock must grow from one signing to the next, across every machine the operator signs on;
//! real time does that without any state to keep or share. Tombstones are also kept for a span of
//! operator-clock milliseconds (`TOMBSTONE_RETENTION_MS`), which is a week only if the clock is
//! real time. An operator whose clock is wrong, or who must replace an entry signed with a clock
//! from the future, passes `--clock`.

use crate::args::{self, Error, Flags};
use crate::files::{self, PUBLIC_MODE};
use crate::output::{self, Value};
use myco_cli::flake::{self, Nix};
use myco_cli::manifest::Manifest;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::crypto::{sign_entry, verify_entry, SigningKey};
use myco_core::schema::entry::{valid_name, Entry, EntryBody, Source, Version};
use pico_args::Arguments;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const SIGN_HELP: &str = "\
Usage: myco sign [MANIFEST] --operator-key FILE --out FILE [--clock MS] [--delete] [--json]

Builds a service entry from MANIFEST (default: myco.json), signs it with the operator key and
writes the signed entry file to FILE (raw bytes, mode 0644). A flake reference is first locked
to one commit with 'nix flake metadata' (Nix must be installed), so every box builds exactly that
commit; the same manifest, key, clock and commit always give the same bytes. The manifest format
is described in docs/myco-json.md.

Options:
  --operator-key FILE  The cluster's operator key (mode 0600)
  --out FILE           Where to write the signed entry (must not exist)
  --clock MS           The entry's version, in milliseconds since the Unix epoch (default: now).
                       Nodes keep the entry with the highest version, so a later signing
                       replaces an earlier one
  --delete             Sign a tombstone for the manifest's service instead, which removes the
                       service from the cluster
  --json               Print the summary as one JSON line
  -h, --help           Print this help

To send the entry to a daemon, use 'myco deploy --entry FILE', or sign and send in one step with
'myco deploy'.

Environment:
  MYCO_NIX             The nix to run (default: nix from PATH)
  MYCO_NIX_TIMEOUT_MS  How long locking may take (default: 120000)

Exit status: 0 written; 1 failed (manifest or key refused, flake reference cannot be locked,
file exists, I/O; nothing written); 2 bad command line.
";

/// A `myco sign` command line, checked before any file is read.
struct SignFlags {
    manifest: PathBuf,
    operator_key: PathBuf,
    out: PathBuf,
    clock: Option<u64>,
    delete: bool,
    json: bool,
}

impl SignFlags {
    fn parse(args: Arguments) -> Result<SignFlags, Error> {
        let mut flags = Flags::new(args, "sign");
        let operator_key = flags.path("--operator-key")?;
        let out = flags.path("--out")?;
        let clock = flags.string("--clock")?;
        let delete = flags.switch("--delete");
        let json = flags.switch("--json");
        let manifest = flags.finish_with_path()?;
        Ok(SignFlags {
            manifest: manifest.unwrap_or_else(|| PathBuf::from("myco.json")),
            operator_key: flags.required(operator_key, "--operator-key")?,
            out: flags.required(out, "--out")?,
            clock: clock.as_deref().map(args::parse_clock).transpose()?,
            delete,
            json,
        })
    }
}

pub fn sign(args: Arguments) -> Result<(), Error> {
    let flags = SignFlags::parse(args)?;
    let entry = sign_manifest(
        &flags.manifest,
        &flags.operator_key,
        flags.clock,
        flags.delete,
    )?;
    files::write_new(&flags.out, entry.bytes(), PUBLIC_MODE)?;

    let mut fields = vec![
        ("name", Value::Text(entry.name.clone())),
        ("clock", Value::Number(entry.version.clock)),
        ("key_id", Value::Number(entry.version.key_id.into())),
        ("tombstone", Value::Bool(entry.tombstone)),
        ("size_bytes", Value::Number(entry.bytes().len() as u64)),
        ("path", Value::Text(flags.out.display().to_string())),
    ];
    if let Some(rev) = rev_of(entry.bytes()) {
        fields.insert(4, ("rev", Value::Text(rev)));
    }
    output::print(&fields, flags.json)
}

/// A signed entry, decoded and verified, ready to be written to a file (`myco sign`) or posted to
/// a daemon (`myco deploy`, `myco rm`).
pub struct SignedEntry {
    bytes: [u8; ENTRY_BYTES_MAX],
    size: usize,
    pub name: String,
    pub version: Version,
    pub tombstone: bool,
}

impl SignedEntry {
    /// `postcard(body) || signature`, the bytes nodes decode and verify.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.size]
    }
}

/// Reads and checks the manifest at `path`, reads the operator key, and signs the manifest's
/// service (its flake locked first), or with `delete` its tombstone, at `clock` (default: now).
/// The one way `myco` turns a manifest into an entry, so `myco sign` and `myco deploy` give the
/// same bytes.
pub fn sign_manifest(
    path: &Path,
    operator_key: &Path,
    clock: Option<u64>,
    delete: bool,
) -> Result<SignedEntry, Error> {
    let text = files::read_manifest(path)?;
    let manifest = Manifest::parse(&text).map_err(|e| {
        Error::Failed(format!(
            "manifest '{}' is refused: {e}; fix it (the format is in docs/myco-json.md)",
            path.display()
        ))
    })?;
    let operator = files::read_key(operator_key, "--operator-key")?;
    let version = version(&operator, clock)?;
    if delete {
        return Ok(signed_entry(&operator, &manifest.tombstone(version)));
    }
    let manifest = lock(manifest, path)?;
    let entry = signed_entry(&operator, &manifest.service(version));
    Ok(entry)
}

/// Locks the manifest's flake reference to one commit (see the module comment); an exec
/// manifest is returned as it is.
fn lock(manifest: Manifest, path: &Path) -> Result<Manifest, Error> {
    let Some(uri) = manifest.flake() else {
        return Ok(manifest);
    };
    let refused = |e: String| {
        Error::Failed(format!(
            "manifest '{}': {e}; nothing was signed",
            path.display()
        ))
    };
    let nix = Nix::from_env().map_err(refused)?;
    let lock = flake::lock(uri, &nix).map_err(refused)?;
    manifest
        .locked(lock)
        .map_err(|e| refused(format!("once its flake is locked, {e}")))
}

/// The commit a signed flake entry is locked to, in full; None for exec and tombstones.
fn rev_of(entry: &[u8]) -> Option<String> {
    let body = Entry::decode(entry).expect("a signed entry decodes").body;
    match body.spec.map(|s| s.source) {
        Some(Source::Flake { rev, .. }) => Some(rev.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    }
}

/// Signs the tombstone that removes the service `name`, at `clock` (default: now): the entry
/// `myco sign --delete` would sign from that service's manifest.
pub fn sign_tombstone(
    name: &str,
    operator_key: &Path,
    clock: Option<u64>,
) -> Result<SignedEntry, Error> {
    assert!(valid_name(name), "the caller checks the name");
    let operator = files::read_key(operator_key, "--operator-key")?;
    let version = version(&operator, clock)?;
    let body = EntryBody {
        name,
        version,
        spec: None,
    };
    Ok(signed_entry(&operator, &body))
}

/// The version an entry signed now by `operator` carries; see the module comment.
fn version(operator: &SigningKey, clock: Option<u64>) -> Result<Version, Error> {
    Ok(Version {
        clock: match clock {
            Some(clock) => clock,
            None => now_ms()?,
        },
        key_id: operator.public_key().key_id(),
    })
}

/// Encodes `body` with the operator's signature over its encoding. The result is decoded and
/// verified before it is returned: an entry that nodes would refuse must never be written or sent.
fn signed_entry(operator: &SigningKey, body: &EntryBody<'_>) -> SignedEntry {
    let mut bytes = [0u8; ENTRY_BYTES_MAX];
    let n = sign_entry(operator, body, &mut bytes)
        .expect("a parsed manifest, or a valid name's tombstone, encodes under any version");
    let entry = Entry::decode(&bytes[..n]).expect("an encoded entry decodes");
    assert_eq!(&entry.body, body);
    assert!(verify_entry(&operator.public_key(), &entry));
    SignedEntry {
        bytes,
        size: n,
        name: body.name.into(),
        version: body.version,
        tombstone: body.is_tombstone(),
    }
}

/// Wall-clock milliseconds since the Unix epoch; see the module comment for why.
fn now_ms() -> Result<u64, Error> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| {
        Error::Failed(
            "the system clock is before 1970, so it cannot version an entry; set the clock, or \
             pass --clock MS"
                .into(),
        )
    })?;
    // u64 milliseconds last 584 million years.
    Ok(u64::try_from(since_epoch.as_millis()).expect("the clock is before the year 584556019"))
}
