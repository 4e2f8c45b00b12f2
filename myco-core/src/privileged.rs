//! What the daemon may ask of `myco-priv`, the small privileged helper (docs/architecture.md,
//! "Least privilege"), and the rules the helper checks every request against before it does it.
//!
//! The helper trusts nothing the daemon sends: the daemon parses the network, so a bug there
//! must not turn into root. Every request is therefore parsed strictly (one canonical encoding,
//! no trailing bytes, a bounded size) and validated here, in the core, where the fuzz target
//! `privileged_request` reaches it:
//! - an entry (sent with a unit write, a build or a health check) must be signed by the cluster's
//!   operator key, the helper's own trust anchor, checked as the nodes check gossiped entries
//!   (`crypto::check_entry`: the key id, then the signature over the body) before anything else
//!   is read from it. So the daemon can name only what the operator once signed, not make an
//!   entry up. What this does not check: whether the entry is still the current one (the helper
//!   has no store: an older or since-removed entry of the operator's is accepted), and whether
//!   this box should run it (placement). Revocations (the RevocationBlock) concern node
//!   certificates, not entries, so none applies here; a new operator key is a new cluster
//!   (docs/protocol.md), given to the helper and the daemon alike;
//! - a unit is named only as `myco-<service name>.service`, with the core's service-name rule
//!   (a DNS label), so no other unit, no `/`, no `..`, no NUL or newline can be named;
//! - a unit text is written only if the core's independent unit checker (`unit::check`) reads it
//!   as exactly the unit of the entry sent beside it: the fixed sandbox, `DynamicUser=yes`, no
//!   directive the renderer does not write, each user token quoted. So a text with
//!   `ExecStartPre=`, `User=root` or a second `[Service]` the spec does not call for is refused;
//! - a build names a validated, locked flake entry, and its reference cannot pass for an option;
//! - anything else is refused with a reason, and refusing changes nothing.
//!
//! The frame on the helper's Unix socket, both ways: a little-endian `u32` length, then that many
//! bytes of postcard (`Request` from the daemon, `Reply` from the helper). One request per
//! connection; the reply comes when the work is done (for a child, when it exits).

use crate::config::{ENTRY_BYTES_MAX, SUBSTITUTES_MAX, UNITS_PER_COMMAND};
use crate::crypto::signed::decode_exact;
use crate::crypto::{check_entry, EntrySignatureError, PublicKey};
use crate::executor::{root_name, RootName, Substitutes, SHOW_PROPERTIES};
use crate::schema::addr::PeerAddr;
use crate::schema::entry::{
    Arch, Check, Entry, EntryBody, EntryError, ServiceSpec, Source, NAME_RULE,
};
use crate::unit::check::{check, CheckError};
use crate::unit::{service_of, valid_exec_path, UnitContext, PROGRAM_BYTES_MAX, UNIT_BYTES_MAX};
use core::fmt;
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Bytes of the length prefix before every request and reply.
pub const FRAME_HEADER_BYTES: usize = 4;
/// The longest unit text: the rendered unit and the executor's one-line header.
pub const UNIT_TEXT_BYTES_MAX: usize = UNIT_BYTES_MAX + 64;
/// The longest request body. The largest requests are a unit command naming
/// `UNITS_PER_COMMAND` units and a unit write (entry, program path and text).
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// The longest reply body: the outcome and a reason of a few hundred bytes.
pub const REPLY_BYTES_MAX: usize = 512;
/// The longest reason a reply carries; a longer one is cut (at a character boundary).
pub const REASON_BYTES_MAX: usize = REPLY_BYTES_MAX - 16;
/// Descriptors a request may carry (SCM_RIGHTS): its command's stdout and stderr.
pub const FDS_MAX: usize = 2;
/// The longest a build may be given (`RuntimeMaxSec=` of its transient unit).
pub const BUILD_TIMEOUT_S_MAX: u32 = 24 * 60 * 60;

// A unit name is at most "myco-" + 63 + ".service" = 76 bytes and a one-byte length.
const _: () = assert!(UNITS_PER_COMMAND * 77 + 16 <= REQUEST_BYTES_MAX);
const _: () =
    assert!(ENTRY_BYTES_MAX + PROGRAM_BYTES_MAX + UNIT_TEXT_BYTES_MAX + 96 <= REQUEST_BYTES_MAX);
// A build: the entry, the timeout, and each substitute's id, address and key (at most 70 bytes).
const _: () = assert!(ENTRY_BYTES_MAX + 8 + SUBSTITUTES_MAX * 70 <= REQUEST_BYTES_MAX);

/// What `systemctl` does to named `myco-*` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnitVerb {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Show,
    ResetFailed,
    /// `enable --no-reload --now`: the daemon's executor asks for it only for units systemd
    /// holds as their files are now (`show` said so), whose start needs no reload. Last, so that
    /// the other verbs keep their encoding.
    EnableNoReload,
}

impl UnitVerb {
    /// The arguments after `systemctl`, before the unit names. `enable` and `disable` act now,
    /// as the executor's do; `show` asks for the properties the executor parses.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            UnitVerb::Start => &["start"],
            UnitVerb::Stop => &["stop"],
            UnitVerb::Restart => &["restart"],
            UnitVerb::Enable => &["enable", "--now"],
            UnitVerb::Disable => &["disable", "--now"],
            UnitVerb::Show => &["show", SHOW_PROPERTIES],
            UnitVerb::ResetFailed => &["reset-failed"],
            UnitVerb::EnableNoReload => &["enable", "--no-reload", "--now"],
        }
    }

    /// Whether it makes or removes the unit's links (`enable`, `disable`), which then take
    /// `--runtime` for units under `/run`.
    pub fn links(self) -> bool {
        matches!(
            self,
            UnitVerb::Enable | UnitVerb::EnableNoReload | UnitVerb::Disable
        )
    }
}

/// One request, borrowing from its frame.
// The unit list makes `Unit` 3 KiB and the rest small; without an allocator nothing can be boxed,
// and the helper holds one request per connection, on its thread's stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Write `text` as the unit file `name` (`myco-<service>.service`). `entry` is the encoded
    /// entry the text was rendered from and `program` the built program a flake runs, which the
    /// checker needs to know what the text must say.
    WriteUnit {
        name: &'a str,
        entry: &'a [u8],
        program: Option<&'a str>,
        text: &'a [u8],
    },
    RemoveUnit {
        name: &'a str,
    },
    DaemonReload,
    Unit {
        verb: UnitVerb,
        #[serde(borrow)]
        names: Vec<&'a str, UNITS_PER_COMMAND>,
    },
    /// Build the flake of `entry` (`nix build --out-link <gcroots>/<root>`), in a transient unit
    /// stopped after `timeout_s`, offering Nix the peers' caches in `substitutes` (at most
    /// `SUBSTITUTES_MAX`: more does not decode). A substitute is an address and a key, not text:
    /// the helper writes the URL `http://<ip>:<port>` and the key `<id hex>:<base64>` itself, so
    /// nothing the daemon sends becomes a Nix option of its choosing. `local` false (a box that
    /// does not build: `--build remote`, or no local Nix for its system) makes it `--max-jobs 0`,
    /// so Nix may only substitute. `system`: the system the output is for (`--option system`,
    /// and the root's name; `Any`: Nix's own), which a builder may take from a peer's request.
    Build {
        entry: &'a [u8],
        timeout_s: u32,
        local: bool,
        system: Arch,
        substitutes: Substitutes,
    },
    CollectGarbage,
    /// The store facts of the closure of the build roots (`nix-store --dump-db`).
    CacheClosure,
    Journal {
        name: &'a str,
        follow: bool,
        lines: Option<u32>,
    },
    /// Run the exec health check `entry` declares for its unit `name`, in a transient unit with
    /// the service's dynamic user and sandbox, stopped after `timeout_ms`. The command is the
    /// entry's, read by the helper; the daemon names only the entry.
    HealthCheck {
        name: &'a str,
        entry: &'a [u8],
        timeout_ms: u32,
    },
}

/// The longest an exec health check may be given.
pub const CHECK_TIMEOUT_MS_MAX: u32 = 10 * 60 * 1000;

/// A request that passed every check, with what the helper needs to do it.
#[allow(clippy::large_enum_variant)] // As `Request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked<'a> {
    WriteUnit {
        unit: &'a str,
        text: &'a [u8],
    },
    RemoveUnit {
        unit: &'a str,
    },
    DaemonReload,
    Unit {
        verb: UnitVerb,
        units: Vec<&'a str, UNITS_PER_COMMAND>,
    },
    Build(Build<'a>),
    CollectGarbage,
    CacheClosure,
    Journal(Journal<'a>),
    /// The entry's exec check, to run for `service` (`check_of(entry)` is an exec check).
    HealthCheck {
        service: &'a str,
        entry: &'a [u8],
        timeout_ms: u32,
    },
}

/// A build to run: `nix build --json -L --out-link <gcroots>/<root> [--option system <system>]
/// <uri>#<attr>` in the transient unit `myco-build-<service>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build<'a> {
    pub service: &'a str,
    pub uri: &'a str,
    pub attr: &'a str,
    /// The system the output is for: `--option system` (none for `Any`).
    pub system: Arch,
    pub root: RootName,
    pub timeout_s: u32,
    pub local: bool,
    pub substitutes: Substitutes,
}

/// `journalctl --unit=<unit>`, the last `lines` lines (journalctl's default when `None`), and
/// with `follow` what comes after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Journal<'a> {
    pub unit: &'a str,
    pub follow: bool,
    pub lines: Option<u32>,
}

/// Why a request was refused. Refusing changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The length prefix says more than `REQUEST_BYTES_MAX`.
    TooLong,
    /// The body does not decode as one request, in its one canonical encoding.
    Malformed,
    /// A unit name holds `/` or `..`: a path, not a name.
    UnitPath,
    /// A unit name holds a control character (NUL, newline).
    UnitControl,
    /// A unit name is not `myco-<service name>.service`.
    UnitName,
    /// A unit command names no unit.
    NoUnits,
    /// The entry beside a unit text or a build does not decode or validate.
    Entry(EntryError),
    /// The entry is not signed by the cluster's operator key: made up, altered, or another key's.
    Unsigned(EntrySignatureError),
    /// The entry is a tombstone: no unit, no build.
    Tombstone,
    /// The entry is another service's than the unit named.
    EntryName,
    /// The program path is not one systemd runs as written, or too long.
    Program,
    /// The unit text is longer than `UNIT_TEXT_BYTES_MAX`.
    TextTooLong,
    /// The unit checker refused the text.
    UnitText(CheckError),
    /// A build of an entry that runs an executable, not a flake.
    NotFlake,
    /// A flake reference or attribute starting with `-`, which `nix` would read as an option.
    FlakeOption,
    /// A build timeout of 0 or above `BUILD_TIMEOUT_S_MAX`.
    Timeout,
    /// Descriptors with a request that runs no command, or more than `FDS_MAX`.
    Descriptors,
    /// A health check request whose entry declares no exec check.
    NotExecCheck,
    /// A health check timeout of 0 or above `CHECK_TIMEOUT_MS_MAX`.
    CheckTimeout,
    /// A substitute whose address is no unicast host's (unspecified, multicast, broadcast) or
    /// whose port is 0.
    Substitute,
    /// A build that may run builders here, where Nix would run them as root outside a sandbox
    /// (`executor::remote::Isolation`) and the helper was not started `--allow-root-builds`.
    RootBuilds,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLong => write!(f, "the request is longer than {REQUEST_BYTES_MAX} bytes"),
            Refusal::Malformed => f.write_str("the request does not parse"),
            Refusal::UnitPath => f.write_str("a unit name holds '/' or '..'"),
            Refusal::UnitControl => f.write_str("a unit name holds a control character"),
            Refusal::UnitName => write!(
                f,
                "a unit name must be myco-<service>.service, the service name {NAME_RULE}"
            ),
            Refusal::NoUnits => f.write_str("a unit command names no unit"),
            Refusal::Entry(e) => write!(f, "the entry is refused: {}", e.message()),
            Refusal::Unsigned(EntrySignatureError::UnknownKey { key_id }) => write!(
                f,
                "the entry names key {key_id:08x}, not the cluster's operator key"
            ),
            Refusal::Unsigned(EntrySignatureError::BadSignature) => {
                f.write_str("the entry's signature is not the operator's")
            }
            Refusal::Tombstone => f.write_str("the entry removes its service: nothing to run"),
            Refusal::EntryName => f.write_str("the entry is not the named unit's service"),
            Refusal::Program => f.write_str("the program path is not absolute and normalized"),
            Refusal::TextTooLong => write!(f, "the unit is longer than {UNIT_TEXT_BYTES_MAX}"),
            Refusal::UnitText(e) => write!(f, "the unit is not the entry's: {e}"),
            Refusal::NotFlake => f.write_str("only a flake entry is built"),
            Refusal::FlakeOption => f.write_str("a flake reference or attribute starts with '-'"),
            Refusal::Timeout => write!(f, "a build timeout must be 1 to {BUILD_TIMEOUT_S_MAX} s"),
            Refusal::NotExecCheck => f.write_str("the entry declares no exec health check"),
            Refusal::CheckTimeout => write!(
                f,
                "a health check timeout must be 1 to {CHECK_TIMEOUT_MS_MAX} ms"
            ),
            Refusal::Substitute => f.write_str(
                "a substitute's cache must be a unicast address and a port other than 0",
            ),
            Refusal::RootBuilds => f.write_str(
                "Nix here runs builders as root outside a sandbox (nix show-config: sandbox = false, \
no build-users-group); builds may only fetch unless myco-priv runs with --allow-root-builds",
            ),
            Refusal::Descriptors => write!(
                f,
                "only a command's request takes descriptors, at most {FDS_MAX}: its stdout and stderr"
            ),
        }
    }
}

/// The body length a frame's header announces, or `TooLong`.
pub fn body_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, Refusal> {
    let len = u32::from_le_bytes(header) as usize;
    if len > REQUEST_BYTES_MAX {
        return Err(Refusal::TooLong);
    }
    Ok(len)
}

/// Decodes a request body (without its length prefix) and checks it, its entry against the
/// cluster's `operator` key.
pub fn parse<'a>(body: &'a [u8], operator: &PublicKey) -> Result<Checked<'a>, Refusal> {
    if body.len() > REQUEST_BYTES_MAX {
        return Err(Refusal::TooLong);
    }
    check_request(decode_request(body).ok_or(Refusal::Malformed)?, operator)
}

/// Decodes a request body without checking it: `None` unless it is one request in its one
/// canonical encoding (no trailing bytes, no overlong numbers).
pub fn decode_request(body: &[u8]) -> Option<Request<'_>> {
    decode_exact::<Request<'_>, REQUEST_BYTES_MAX>(body)
}

/// Checks a decoded request, its entry against the cluster's `operator` key; see the module
/// comment.
pub fn check_request<'a>(
    request: Request<'a>,
    operator: &PublicKey,
) -> Result<Checked<'a>, Refusal> {
    Ok(match request {
        Request::WriteUnit {
            name,
            entry,
            program,
            text,
        } => check_write(name, (entry, operator), program, text)?,
        Request::RemoveUnit { name } => Checked::RemoveUnit {
            unit: check_unit(name)?.0,
        },
        Request::DaemonReload => Checked::DaemonReload,
        Request::Unit { verb, names } => {
            if names.is_empty() {
                return Err(Refusal::NoUnits);
            }
            for name in &names {
                check_unit(name)?;
            }
            Checked::Unit { verb, units: names }
        }
        Request::Build {
            entry,
            timeout_s,
            local,
            substitutes,
            system,
        } => Checked::Build(check_build(
            (entry, operator),
            (timeout_s, local, system),
            substitutes,
        )?),
        Request::CollectGarbage => Checked::CollectGarbage,
        Request::CacheClosure => Checked::CacheClosure,
        Request::Journal {
            name,
            follow,
            lines,
        } => Checked::Journal(Journal {
            unit: check_unit(name)?.0,
            follow,
            lines,
        }),
        Request::HealthCheck {
            name,
            entry,
            timeout_ms,
        } => check_health(name, (entry, operator), timeout_ms)?,
    })
}

fn check_health<'a>(
    name: &'a str,
    (entry, operator): (&'a [u8], &PublicKey),
    timeout_ms: u32,
) -> Result<Checked<'a>, Refusal> {
    let (_, service) = check_unit(name)?;
    let (body, spec) = live_entry(entry, operator)?;
    if body.name != service {
        return Err(Refusal::EntryName);
    }
    if !matches!(spec.health.map(|h| h.check), Some(Check::Exec { .. })) {
        return Err(Refusal::NotExecCheck);
    }
    if timeout_ms == 0 || timeout_ms > CHECK_TIMEOUT_MS_MAX {
        return Err(Refusal::CheckTimeout);
    }
    Ok(Checked::HealthCheck {
        service,
        entry,
        timeout_ms,
    })
}

impl Checked<'_> {
    /// Whether the request runs a command, whose output may go to descriptors the daemon passes.
    /// A file request takes none: its outcome is all there is to say.
    pub fn runs_command(&self) -> bool {
        !matches!(self, Checked::WriteUnit { .. } | Checked::RemoveUnit { .. })
    }

    /// Refuses `count` descriptors passed with this request unless it runs a command and
    /// `count` is at most `FDS_MAX`.
    pub fn check_descriptors(&self, count: usize) -> Result<(), Refusal> {
        let allowed = if self.runs_command() { FDS_MAX } else { 0 };
        if count > allowed {
            return Err(Refusal::Descriptors);
        }
        Ok(())
    }
}

/// `name` and its service if it is `myco-<service>.service`; the refusal says which rule it broke.
pub fn check_unit(name: &str) -> Result<(&str, &str), Refusal> {
    if name.contains('/') || name.contains("..") {
        return Err(Refusal::UnitPath);
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::UnitControl);
    }
    let service = service_of(name).ok_or(Refusal::UnitName)?;
    Ok((name, service))
}

/// The body of a validated entry the operator signed that runs something (not a tombstone), and
/// its spec, taken out of the body so that no caller has to unwrap it again.
fn live_entry<'a>(
    entry: &'a [u8],
    operator: &PublicKey,
) -> Result<(EntryBody<'a>, ServiceSpec<'a>), Refusal> {
    // Decoding (the core's strict decoder and validator, safe on any bytes) only finds the
    // signed bytes and the key id: no field is acted on before the signature is checked.
    let decoded = Entry::decode(entry).map_err(Refusal::Entry)?;
    check_entry(operator, &decoded).map_err(Refusal::Unsigned)?;
    let mut body = decoded.body;
    let spec = body.spec.take().ok_or(Refusal::Tombstone)?;
    Ok((body, spec))
}

fn check_write<'a>(
    name: &'a str,
    (entry, operator): (&'a [u8], &PublicKey),
    program: Option<&'a str>,
    text: &'a [u8],
) -> Result<Checked<'a>, Refusal> {
    let (unit, service) = check_unit(name)?;
    let (body, spec) = live_entry(entry, operator)?;
    if body.name != service {
        return Err(Refusal::EntryName);
    }
    if program.is_some_and(|p| p.len() > PROGRAM_BYTES_MAX || !valid_exec_path(p)) {
        return Err(Refusal::Program);
    }
    if text.len() > UNIT_TEXT_BYTES_MAX {
        return Err(Refusal::TextTooLong);
    }
    let ctx = UnitContext {
        version: body.version,
        program,
    };
    check(text, service, &spec, &ctx).map_err(Refusal::UnitText)?;
    Ok(Checked::WriteUnit { unit, text })
}

fn check_build<'a>(
    (entry, operator): (&'a [u8], &PublicKey),
    (timeout_s, local, system): (u32, bool, Arch),
    substitutes: Substitutes,
) -> Result<Build<'a>, Refusal> {
    let (body, spec) = live_entry(entry, operator)?;
    let Source::Flake { uri, attr, rev, .. } = spec.source else {
        return Err(Refusal::NotFlake);
    };
    // The reference and attribute are one argument, `<uri>#<attr>`; only its start could make
    // `nix` read it as an option, but an attribute is refused too so neither can ever lead.
    if uri.starts_with('-') || attr.starts_with('-') {
        return Err(Refusal::FlakeOption);
    }
    if timeout_s == 0 || timeout_s > BUILD_TIMEOUT_S_MAX {
        return Err(Refusal::Timeout);
    }
    if !substitutes.iter().all(|s| unicast_cache(s.cache)) {
        return Err(Refusal::Substitute);
    }
    Ok(Build {
        service: body.name,
        uri,
        attr,
        system,
        root: root_name(body.name, &rev, system),
        timeout_s,
        local,
        substitutes,
    })
}

/// Whether `addr` names one host's port: not 0, not the unspecified address (which means this
/// box), not multicast or broadcast. The key Nix checks guards the content; this keeps a build
/// from being pointed at something that is no peer.
fn unicast_cache(addr: PeerAddr) -> bool {
    let ip = addr.ip;
    let v4 = ip[..10] == [0; 10] && ip[10..12] == [0xff, 0xff];
    let bad = if v4 {
        let o = [ip[12], ip[13], ip[14], ip[15]];
        o == [0; 4] || o == [255; 4] || (224..=239).contains(&o[0])
    } else {
        ip == [0; 16] || ip[0] == 0xff
    };
    addr.port != 0 && !bad
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Refused before anything was done (the reason says why).
    Refused,
    /// Allowed, but the helper could not do it (a write or a spawn failed; the reason says why).
    Failed,
    /// The command ran and exited with this code (0: success; a file operation done is 0).
    Exited(i32),
    /// The command was killed by this signal (or by the helper, when the daemon hung up).
    Signaled(i32),
}

/// The largest signal number Linux has (SIGRTMAX).
const SIGNAL_MAX: i32 = 64;

impl Outcome {
    /// The shell's exit code of a command that ran: its own, or 128 plus the signal that killed
    /// it. `None` for a request that ran nothing (refused, or failed before it ran).
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Outcome::Exited(code) => Some(code),
            Outcome::Signaled(signal) => Some(128 + signal),
            Outcome::Refused | Outcome::Failed => None,
        }
    }

    /// Whether a process can end this way: an exit code of 0 to 255, a signal of 1 to
    /// `SIGNAL_MAX`. Anything else in a reply is a broken helper, and `exit_code` could not
    /// add 128 to it.
    fn possible(self) -> bool {
        match self {
            Outcome::Exited(code) => (0..=255).contains(&code),
            Outcome::Signaled(signal) => (1..=SIGNAL_MAX).contains(&signal),
            Outcome::Refused | Outcome::Failed => true,
        }
    }
}

/// The helper's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    pub outcome: Outcome,
    pub reason: &'a str,
}

/// `reason` cut to `REASON_BYTES_MAX` at a character boundary.
pub fn clip(reason: &str) -> &str {
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Writes `value` framed (length prefix and postcard) into `out`; the frame's length, or `None`
/// if it does not fit.
fn encode<T: Serialize>(value: &T, out: &mut [u8], max: usize) -> Option<usize> {
    let room = out.len().min(FRAME_HEADER_BYTES + max);
    let (header, body) = out[..room].split_at_mut_checked(FRAME_HEADER_BYTES)?;
    let len = postcard::to_slice(value, body).ok()?.len();
    header.copy_from_slice(&(len as u32).to_le_bytes());
    Some(FRAME_HEADER_BYTES + len)
}

/// Frames a request, as the daemon sends it.
pub fn encode_request(request: &Request<'_>, out: &mut [u8]) -> Option<usize> {
    encode(request, out, REQUEST_BYTES_MAX)
}

/// Frames a reply, as the helper sends it; the reason is clipped to fit.
pub fn encode_reply(outcome: Outcome, reason: &str, out: &mut [u8]) -> Option<usize> {
    let reply = Reply {
        outcome,
        reason: clip(reason),
    };
    encode(&reply, out, REPLY_BYTES_MAX)
}

/// Decodes a reply body (without its length prefix); `None` if it is not one: not the one
/// encoding of a reply, or an exit code or signal no process can have.
pub fn decode_reply(body: &[u8]) -> Option<Reply<'_>> {
    decode_exact::<Reply<'_>, REPLY_BYTES_MAX>(body).filter(|r| r.outcome.possible())
}

#[cfg(test)]
mod tests;
