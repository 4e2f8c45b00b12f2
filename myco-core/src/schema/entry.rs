//! Desired-state entries: a service slot or a tombstone, with its version and signature.
//!
//! An encoded entry is `postcard(EntryBody) || signature[64]`. The signature covers exactly the
//! body bytes, so a relaying node can neither forge nor alter an entry. Entries decode zero-copy
//! (strings borrow from the frame) and are validated before anything stores them: a name is a DNS
//! label, executables are absolute, no token holds a NUL or a control character, a flake is
//! locked to one commit (its reference names its `rev`), and the whole entry fits
//! `ENTRY_BYTES_MAX`, which `config` proves fits one frame.

use crate::config::{
    ARGS_MAX, ENTRY_BYTES_MAX, ENV_MAX, FLAKE_REV_BYTES, HEALTH_ARGS_MAX, NAME_BYTES_MAX,
    NAR_HASH_BYTES, PORTS_MAX, PRE_ARGS_MAX, PRE_MAX, REPLICAS_MAX, SIGNATURE_BYTES,
};
use crate::crypto::signed::decode_exact;
use core::cmp::Ordering;
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// The rule `valid_name` checks, in words, as a literal so `concat!` can build whole sentences on it.
macro_rules! name_rule {
    () => {
        "a DNS label, 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
    };
}

/// Who wrote an entry and when: the operator's clock (milliseconds) and the id of the key that
/// signed it. Ordered by clock, then key id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub clock: u64,
    pub key_id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    Any,
    X86_64,
    Aarch64,
}

impl Arch {
    /// The name operators write in myco.json and flags, and the API shows.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Any => "any",
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Nix's name of the system (`nix show-config`'s `system`, a flake's `packages.<system>`);
    /// `None` for `Any`, which names no system.
    pub fn nix_system(self) -> Option<&'static str> {
        match self {
            Arch::Any => None,
            Arch::X86_64 => Some("x86_64-linux"),
            Arch::Aarch64 => Some("aarch64-linux"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub number: u16,
    pub protocol: Protocol,
}

/// Where a box may run the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    pub arch: Arch,
    /// The service needs a GPU (`/dev/dri`), so only boxes that have one are eligible.
    pub gpu: bool,
    /// Only boxes of this zone are eligible.
    pub zone: Option<u8>,
}

/// What runs: a Nix flake output or an absolute executable already on the box.
///
/// A flake is always locked: `uri` is the locked reference `nix flake metadata` prints (for git,
/// `...?ref=main&rev=<rev>`), `rev` is the commit it names and `nar_hash` the SHA-256 of the
/// source tree's NAR. The operator's tool resolves a moving reference once, at signing time, so
/// every box builds the same commit and can check what it fetched against `nar_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source<'a> {
    Flake {
        uri: &'a str,
        attr: &'a str,
        rev: [u8; FLAKE_REV_BYTES],
        nar_hash: [u8; NAR_HASH_BYTES],
    },
    Exec {
        path: &'a str,
    },
}

pub type Command<'a> = Vec<&'a str, PRE_ARGS_MAX>;

/// The desired service: everything the unit compiler and placement need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec<'a> {
    #[serde(borrow)]
    pub source: Source<'a>,
    #[serde(borrow)]
    pub args: Vec<&'a str, ARGS_MAX>,
    #[serde(borrow)]
    pub env: Vec<(&'a str, &'a str), ENV_MAX>,
    /// ExecStartPre migrations, run in order before the service starts.
    #[serde(borrow)]
    pub pre: Vec<Command<'a>, PRE_MAX>,
    pub requires: Requirements,
    pub replicas: u8,
    pub ports: Vec<Port, PORTS_MAX>,
    pub limits: Limits,
    /// How the box checks that the running service answers; `None`: systemd's word alone.
    #[serde(borrow)]
    pub health: Option<Health<'a>>,
}

/// What a health check does (docs/myco-json.md). Ports are on the box's loopback: a check asks
/// the service on its own box, never across the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check<'a> {
    /// `GET <path> HTTP/1.0` to 127.0.0.1:`port`; a 2xx or 3xx status passes.
    Http { path: &'a str, port: u16 },
    /// A TCP connect to 127.0.0.1:`port`; an accepted connection passes.
    Tcp { port: u16 },
    /// A command (an absolute executable and its arguments) run in the service's sandbox; exit
    /// status 0 passes.
    Exec {
        #[serde(borrow)]
        argv: Vec<&'a str, HEALTH_ARGS_MAX>,
    },
}

/// A service's health check and its schedule: every `interval_s` once the unit runs (the first
/// one interval after it started: its grace), each allowed `timeout_s`; `failures` failed in a
/// row make the service unhealthy. Bounds in [`Health::valid`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health<'a> {
    #[serde(borrow)]
    pub check: Check<'a>,
    pub interval_s: u16,
    pub timeout_s: u16,
    pub failures: u8,
}

#[cfg(test)]
impl Health<'static> {
    /// What the tests deploy: the templates' HTTP check of `/healthz` on 8080, every 10 s,
    /// 2 s each, 3 failures in a row.
    pub(crate) fn healthz() -> Self {
        Health {
            check: Check::Http {
                path: "/healthz",
                port: 8080,
            },
            interval_s: 10,
            timeout_s: 2,
            failures: 3,
        }
    }
}

/// The bounds of [`Health`]: an interval of 1 s to 1 h, a timeout of 1 to 60 s and no longer
/// than the interval (checks of one service never overlap), 1 to 20 failures, an HTTP path of at
/// most 128 bytes (it is sent in one small request).
pub const HEALTH_INTERVAL_S_MAX: u16 = 3600;
pub const HEALTH_TIMEOUT_S_MAX: u16 = 60;
pub const HEALTH_FAILURES_MAX: u8 = 20;
pub const HEALTH_PATH_BYTES_MAX: usize = 128;

impl Health<'_> {
    /// Whether the schedule is within its bounds and the check can be run as written.
    pub fn valid(&self) -> bool {
        let schedule = (1..=HEALTH_INTERVAL_S_MAX).contains(&self.interval_s)
            && (1..=HEALTH_TIMEOUT_S_MAX.min(self.interval_s)).contains(&self.timeout_s)
            && (1..=HEALTH_FAILURES_MAX).contains(&self.failures);
        schedule
            && match &self.check {
                Check::Http { path, port } => *port != 0 && valid_http_path(path),
                Check::Tcp { port } => *port != 0,
                Check::Exec { argv } => {
                    argv.first().is_some_and(|p| valid_path(p))
                        && argv.iter().all(|a| valid_word(a))
                }
            }
    }
}

/// A path an HTTP request line carries as written: starts with `/`, at most
/// `HEALTH_PATH_BYTES_MAX` bytes of printable ASCII without spaces.
pub fn valid_http_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= HEALTH_PATH_BYTES_MAX
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// What systemd lets the service's unit use; `None` keeps the default (for tasks, the hardened
/// unit's 100). Bounds are checked when the entry is validated ([`Limits::valid`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `MemoryMax=` in bytes: past it the kernel kills the service (and only it).
    pub memory_max: Option<u64>,
    /// `CPUWeight=`, 1 to 10000 (systemd's default 100): the share of CPU under contention.
    pub cpu_weight: Option<u16>,
    /// `CPUQuota=` in percent of one CPU, 1 to 10000: a hard ceiling even on an idle box.
    pub cpu_quota: Option<u16>,
    /// `TasksMax=`, 1 to 100: at most the hardened default, never above it.
    pub tasks_max: Option<u16>,
    /// `IOWeight=`, 1 to 10000 (systemd's default 100).
    pub io_weight: Option<u16>,
}

/// The bounds of [`Limits`]: the smallest `MemoryMax=` a service may ask for (below it nothing
/// starts) and the largest (1 PiB: systemd refuses values near 2^64, which mean "infinity"), and
/// the largest weight, quota and task count.
pub const MEMORY_MAX_MIN: u64 = 1024 * 1024;
pub const MEMORY_MAX_MAX: u64 = 1 << 50;
pub const WEIGHT_MAX: u16 = 10_000;
pub const CPU_QUOTA_MAX: u16 = 10_000;
pub const TASKS_MAX: u16 = 100;

impl Limits {
    /// Whether every limit set is within its bounds.
    pub fn valid(&self) -> bool {
        let within = |v: Option<u16>, max: u16| v.is_none_or(|v| (1..=max).contains(&v));
        self.memory_max
            .is_none_or(|m| (MEMORY_MAX_MIN..=MEMORY_MAX_MAX).contains(&m))
            && within(self.cpu_weight, WEIGHT_MAX)
            && within(self.cpu_quota, CPU_QUOTA_MAX)
            && within(self.tasks_max, TASKS_MAX)
            && within(self.io_weight, WEIGHT_MAX)
    }
}

impl<'a> ServiceSpec<'a> {
    /// The smallest spec: `source` alone, with no arguments, environment, migrations or ports,
    /// any arch, no GPU, any zone, one replica. Set other fields with struct update syntax.
    pub fn minimal(source: Source<'a>) -> ServiceSpec<'a> {
        ServiceSpec {
            source,
            args: Vec::new(),
            env: Vec::new(),
            pre: Vec::new(),
            requires: Requirements {
                arch: Arch::Any,
                gpu: false,
                zone: None,
            },
            replicas: 1,
            ports: Vec::new(),
            limits: Limits::default(),
            health: None,
        }
    }

    /// Whether `self` and `other` make the same unit: equal but for `replicas`, which only
    /// placement reads (`unit::render` renders every other field, so a field added to the spec
    /// counts as a difference until said otherwise here). A new version whose spec makes the
    /// same unit as the running one is written without a restart (scaling restarts nothing).
    pub fn same_unit(&self, other: &ServiceSpec<'_>) -> bool {
        let scaled = ServiceSpec {
            replicas: other.replicas,
            ..self.clone()
        };
        scaled == *other
    }
}

/// The signed part of an entry. `spec: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody<'a> {
    pub name: &'a str,
    pub version: Version,
    #[serde(borrow)]
    pub spec: Option<ServiceSpec<'a>>,
}

impl EntryBody<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.spec.is_none()
    }
}

/// Why an entry was refused. Refusing never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    TooLong,
    Truncated,
    Malformed,
    Name,
    Token,
    Path,
    Env,
    Replicas,
    Port,
    Unlocked,
    Limits,
    Health,
}

impl EntryError {
    pub const fn message(self) -> &'static str {
        match self {
            EntryError::TooLong => "entry is longer than one frame allows",
            EntryError::Truncated => "entry is shorter than its signature",
            EntryError::Malformed => "entry body does not decode",
            EntryError::Name => concat!("service name must be ", name_rule!()),
            EntryError::Token => {
                "a token is empty or holds a control character or a Unicode noncharacter"
            }
            EntryError::Path => {
                "executable must be an absolute path without '.', '..' or empty components, a trailing '/', quotes, backslashes, '$', spaces or control characters"
            }
            EntryError::Env => "environment names must match [A-Za-z_][A-Za-z0-9_]*",
            EntryError::Replicas => "replicas must be between 1 and 64",
            EntryError::Port => "ports must be non-zero and unique",
            EntryError::Unlocked => {
                "a flake must be locked to one commit: its reference must name its rev in lowercase hex"
            }
            EntryError::Limits => {
                "limits out of bounds: memory_max 1 MiB to 1 PiB, cpu_weight and io_weight 1 to 10000, cpu_quota 1 to 10000 percent, tasks_max 1 to 100"
            }
            EntryError::Health => {
                "health check out of bounds: interval_s 1 to 3600, timeout_s 1 to 60 and at most interval_s, failures 1 to 20, a non-zero port, an http path of printable ASCII starting with '/' (at most 128 bytes), an exec command starting with an absolute path"
            }
        }
    }
}

/// The service name an encoded entry starts with, read without decoding the rest: postcard
/// writes `EntryBody::name` first. Only for bytes that decoded before (a stored entry).
pub fn encoded_name(bytes: &[u8]) -> Option<&str> {
    postcard::take_from_bytes::<&str>(bytes)
        .ok()
        .map(|(name, _)| name)
}

/// A decoded, validated entry borrowing from its encoding.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub body: EntryBody<'a>,
    /// The signed bytes (`postcard(body)`).
    pub signed: &'a [u8],
    pub signature: &'a [u8; SIGNATURE_BYTES],
}

impl<'a> Entry<'a> {
    /// Decodes and validates an encoded entry. Any byte string is safe to pass.
    pub fn decode(bytes: &'a [u8]) -> Result<Entry<'a>, EntryError> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryError::TooLong);
        }
        let (signed, signature) = split_signature(bytes).ok_or(EntryError::Truncated)?;
        // One encoding per entry: trailing bytes and overlong varints (which postcard alone
        // accepts) would let two byte strings, with two digests, share a meaning.
        let body = decode_exact::<EntryBody<'a>, { ENTRY_BYTES_MAX - SIGNATURE_BYTES }>(signed)
            .ok_or(EntryError::Malformed)?;
        validate(&body)?;
        Ok(Entry {
            body,
            signed,
            signature,
        })
    }

    /// Decodes an entry this node validated when it took it in: the store holds only entries
    /// that `decode` accepted, and rebuilds them byte for byte (`state::packed`). The executor
    /// decodes stored entries for every command it plans; checking them again was a third of
    /// the executor's decoding. `None` for bytes that are not an entry's encoding at all.
    pub(crate) fn decode_stored(bytes: &'a [u8]) -> Option<Entry<'a>> {
        let (signed, signature) = split_signature(bytes)?;
        let (body, rest) = postcard::take_from_bytes::<EntryBody<'a>>(signed).ok()?;
        rest.is_empty().then_some(Entry {
            body,
            signed,
            signature,
        })
    }
}

/// An encoded entry's signed bytes and the signature after them; `None` if shorter than one.
fn split_signature(bytes: &[u8]) -> Option<(&[u8], &[u8; SIGNATURE_BYTES])> {
    let split = bytes.len().checked_sub(SIGNATURE_BYTES)?;
    let (signed, signature) = bytes.split_at(split);
    Some((
        signed,
        signature
            .try_into()
            .expect("split one signature from the end"),
    ))
}

/// Encodes `body` followed by `signature` into `out`, returning the length. Validates first.
pub fn encode_entry(
    body: &EntryBody<'_>,
    signature: &[u8; SIGNATURE_BYTES],
    out: &mut [u8],
) -> Result<usize, EntryError> {
    validate(body)?;
    let room = out.len().min(ENTRY_BYTES_MAX);
    let room = room
        .checked_sub(SIGNATURE_BYTES)
        .ok_or(EntryError::TooLong)?;
    let used = postcard::to_slice(body, &mut out[..room])
        .map_err(|_| EntryError::TooLong)?
        .len();
    out[used..used + SIGNATURE_BYTES].copy_from_slice(signature);
    Ok(used + SIGNATURE_BYTES)
}

/// What a service name must be: the one text every refusal of a bad name shows, whoever refuses it
/// (the entry and unit checks here, the daemon's API, `myco`), so they never disagree.
pub const NAME_RULE: &str = name_rule!();
const _: () = assert!(NAME_BYTES_MAX == 63, "NAME_RULE names the limit");

/// True if `name` is a DNS label Myco accepts: it names the unit and the DNS record.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_BYTES_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A character a systemd unit can carry in a double-quoted word: not a control character
/// (Unicode Cc, which includes newline, carriage return, NUL, DEL and C1) and not a noncharacter,
/// which systemd's UTF-8 check refuses (`unichar_is_valid`). Every token of an entry must be made
/// of these, so that every entry the cluster accepts can run (`unit` quotes the rest).
pub fn quotable(c: char) -> bool {
    let u = u32::from(c);
    !c.is_control() && !(0xFDD0..=0xFDEF).contains(&u) && u & 0xFFFE != 0xFFFE
}

fn valid_token(t: &str) -> bool {
    !t.is_empty() && all_quotable(t)
}

fn valid_word(t: &str) -> bool {
    all_quotable(t)
}

/// Whether every character of `t` is `quotable`. Nearly every token is ASCII, where that is a
/// byte test the compiler runs many bytes at a time; every merged entry is validated, and
/// decoding each character was most of the validation.
fn all_quotable(t: &str) -> bool {
    let b = t.as_bytes();
    if b.is_ascii() {
        // ASCII's control characters are below the space, and DEL.
        return b.iter().all(|&c| c >= b' ' && c != 0x7f);
    }
    t.chars().all(quotable)
}

/// An executable path systemd runs exactly as written once unquoted: absolute and normalized
/// (`path_simplify_and_warn` refuses `..`, a trailing `/` names a directory), within `PATH_MAX`
/// and `NAME_MAX`, without the characters `string_is_safe` refuses in an executable (quotes and
/// backslash), and without `$`, because systemd expands `$$` in argv[0] but not in the path it
/// executes, so no escaping keeps the two equal.
pub fn valid_exec_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    path.len() <= 4095
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
        && path
            .chars()
            .all(|c| quotable(c) && !matches!(c, '"' | '\'' | '\\' | '$'))
}

/// An entry's executable paths: runnable (`valid_exec_path`) and without spaces, which
/// operators' paths never need and which make logs ambiguous.
fn valid_path(path: &str) -> bool {
    valid_exec_path(path) && !path.contains(' ')
}

/// An environment variable name systemd and shells accept: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn validate(body: &EntryBody<'_>) -> Result<(), EntryError> {
    if !valid_name(body.name) {
        return Err(EntryError::Name);
    }
    match &body.spec {
        None => Ok(()),
        Some(spec) => validate_spec(spec),
    }
}

fn validate_spec(spec: &ServiceSpec<'_>) -> Result<(), EntryError> {
    match spec.source {
        Source::Flake { uri, attr, .. } if !valid_token(uri) || !valid_token(attr) => {
            return Err(EntryError::Token)
        }
        Source::Flake { uri, rev, .. } if !names_rev(uri, &rev) => {
            return Err(EntryError::Unlocked)
        }
        Source::Flake { .. } => {}
        Source::Exec { path } if valid_path(path) => {}
        Source::Exec { .. } => return Err(EntryError::Path),
    }
    if !spec.args.iter().all(|a| valid_word(a)) {
        return Err(EntryError::Token);
    }
    if !spec.limits.valid() {
        return Err(EntryError::Limits);
    }
    if !spec.health.as_ref().is_none_or(Health::valid) {
        return Err(EntryError::Health);
    }
    for (k, v) in &spec.env {
        if !valid_env_name(k) || !valid_word(v) {
            return Err(EntryError::Env);
        }
    }
    for cmd in &spec.pre {
        match cmd.first() {
            Some(p) if valid_path(p) => {}
            _ => return Err(EntryError::Path),
        }
        if !cmd.iter().all(|a| valid_word(a)) {
            return Err(EntryError::Token);
        }
    }
    if spec.replicas == 0 || spec.replicas > REPLICAS_MAX {
        return Err(EntryError::Replicas);
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if p.number == 0 || spec.ports[..i].iter().any(|q| q == p) {
            return Err(EntryError::Port);
        }
    }
    Ok(())
}

/// True if the flake reference `uri` holds `rev` as 40 lowercase hex digits, as every locked
/// reference Nix prints does (`?rev=` for git and Mercurial, a path component for `github:`).
/// A box builds `uri` as written, so a reference without its rev could move under it.
pub fn names_rev(uri: &str, rev: &[u8; FLAKE_REV_BYTES]) -> bool {
    rev_at(uri, rev).is_some()
}

/// Where in `uri` the first copy of `rev` (as `names_rev` reads it) starts.
pub fn rev_at(uri: &str, rev: &[u8; FLAKE_REV_BYTES]) -> Option<usize> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digit = |i: usize| HEX[usize::from(rev[i / 2] >> (4 * (1 - i % 2)) & 0xf)];
    uri.as_bytes()
        .windows(2 * FLAKE_REV_BYTES)
        .position(|w| w.iter().enumerate().all(|(i, &c)| c == digit(i)))
}

/// The last-writer-wins order of two versions of one key. Higher version wins; on a version tie a
/// tombstone wins; on a full tie the higher entry digest wins, so every node picks the same entry
/// even if an operator signed two different entries with one version.
pub fn lww_cmp(a: (Version, bool, u64), b: (Version, bool, u64)) -> Ordering {
    a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: [u8; FLAKE_REV_BYTES] = [0xa7; FLAKE_REV_BYTES];
    const LOCKED_URI: &str =
        "git+file:///srv/web?ref=main&rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";

    fn flake(uri: &str) -> Source<'_> {
        Source::Flake {
            uri,
            attr: "default",
            rev: REV,
            nar_hash: [0x5c; NAR_HASH_BYTES],
        }
    }

    fn spec() -> ServiceSpec<'static> {
        ServiceSpec {
            source: flake(LOCKED_URI),
            args: Vec::from_slice(&["--port", "8080"]).unwrap(),
            env: Vec::from_slice(&[("MODE", "prod")]).unwrap(),
            pre: Vec::new(),
            requires: Requirements {
                arch: Arch::Any,
                gpu: false,
                zone: None,
            },
            replicas: 2,
            ports: Vec::new(),
            limits: Limits::default(),
            health: Some(Health::healthz()),
        }
    }

    /// The ASCII shortcut answers as `quotable` does, character by character.
    #[test]
    fn ascii_tokens_are_quotable_as_characters_are() {
        for c in 0u8..=0x7f {
            let t = [b'a', c, b'z'];
            let t = core::str::from_utf8(&t).unwrap();
            assert_eq!(all_quotable(t), t.chars().all(quotable), "byte {c:#x}");
        }
        for t in [
            "",
            "plain",
            "caf\u{e9}",
            "a\u{85}b",
            "x\u{fdd0}",
            "\u{fffe}",
        ] {
            assert_eq!(all_quotable(t), t.chars().all(quotable), "{t:?}");
        }
    }

    /// An encoded entry decodes to the same body and signature.
    #[test]
    fn round_trip() {
        let body = EntryBody {
            name: "web",
            version: Version {
                clock: 5,
                key_id: 1,
            },
            spec: Some(spec()),
        };
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        let n = encode_entry(&body, &[7; 64], &mut buf).unwrap();
        let e = Entry::decode(&buf[..n]).unwrap();
        assert_eq!(e.body, body);
        assert_eq!(e.signature, &[7; 64]);
        let stored = Entry::decode_stored(&buf[..n]).unwrap();
        assert_eq!((stored.body, stored.signed), (body, e.signed));
        assert!(
            Entry::decode_stored(&buf[..n - 1]).is_none(),
            "a byte short"
        );
        assert!(Entry::decode_stored(&buf[..40]).is_none(), "not an entry");
    }

    /// An entry the cluster accepts can always become a unit: executable paths systemd would
    /// run differently from how they read, and characters a unit cannot carry, are refused.
    #[test]
    fn refuses_what_no_unit_can_carry() {
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        let encode = |spec: ServiceSpec<'_>, buf: &mut [u8]| {
            let body = EntryBody {
                name: "web",
                version: Version::default(),
                spec: Some(spec),
            };
            encode_entry(&body, &[0; 64], buf).map(|_| ())
        };
        for path in [
            "/bin/a$b",
            "/bin/\"x",
            "/bin/",
            "/bin/./x",
            "/bin/a b",
            "/bin/\u{fdd0}",
        ] {
            let spec = ServiceSpec::minimal(Source::Exec { path });
            assert_eq!(encode(spec, &mut buf), Err(EntryError::Path), "{path:?}");
        }
        let mut spec = spec();
        spec.args = Vec::from_slice(&["ok", "\u{fffe}"]).unwrap();
        assert_eq!(encode(spec, &mut buf), Err(EntryError::Token));
        let mut spec = ServiceSpec::minimal(Source::Exec { path: "/bin/a" });
        spec.env = Vec::from_slice(&[("A", "\u{ffff}")]).unwrap();
        assert_eq!(encode(spec, &mut buf), Err(EntryError::Env));
        let ok = ServiceSpec::minimal(Source::Exec {
            path: "/usr/bin/py-thon3.11",
        });
        assert_eq!(encode(ok, &mut buf), Ok(()));
    }

    /// Hostile names and tokens are refused before they can be stored.
    #[test]
    fn refuses_bad_fields() {
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        for name in ["", "-a", "a-", "A", "a.b", "a b", "x\n"] {
            let body = EntryBody {
                name,
                version: Version::default(),
                spec: None,
            };
            assert_eq!(
                encode_entry(&body, &[0; 64], &mut buf),
                Err(EntryError::Name),
                "{name:?}"
            );
        }
        let mut encode = |s: ServiceSpec<'_>| {
            let body = EntryBody {
                name: "a",
                version: Version::default(),
                spec: Some(s),
            };
            encode_entry(&body, &[0; 64], &mut buf).map(|_| ())
        };
        let mut s = spec();
        s.source = Source::Exec { path: "bin/sh" };
        assert_eq!(encode(s), Err(EntryError::Path));
        let mut s = spec();
        s.env = Vec::from_slice(&[("A=B", "x")]).unwrap();
        assert_eq!(encode(s), Err(EntryError::Env));
        let mut s = spec();
        s.replicas = 0;
        assert_eq!(encode(s), Err(EntryError::Replicas));
        let mut s = spec();
        s.limits.tasks_max = Some(TASKS_MAX + 1);
        assert_eq!(encode(s), Err(EntryError::Limits));
    }

    /// A maximal spec either encodes within one frame's entry budget or is refused as too long;
    /// and truncated or padded encodings never decode.
    #[test]
    fn size_bound_and_exact_encoding() {
        let long = "x".repeat(200);
        let mut s = spec();
        s.args.clear();
        for _ in 0..ARGS_MAX {
            s.args.push(&long).unwrap();
        }
        let body = EntryBody {
            name: "a",
            version: Version::default(),
            spec: Some(s),
        };
        let mut buf = [0u8; 4096];
        assert_eq!(
            encode_entry(&body, &[0; 64], &mut buf),
            Err(EntryError::TooLong)
        );
        let body = EntryBody {
            name: "web",
            version: Version::default(),
            spec: Some(spec()),
        };
        let n = encode_entry(&body, &[0; 64], &mut buf).unwrap();
        assert!(Entry::decode(&buf[..n - 1]).is_err());
        assert_eq!(Entry::decode(&buf[..10]).err(), Some(EntryError::Truncated));
        let mut padded = [0u8; 300];
        padded[..n - 64].copy_from_slice(&buf[..n - 64]);
        assert!(Entry::decode(&padded[..n + 1]).is_err());
    }

    /// A box never builds a reference that can move: a flake whose reference does not name its
    /// rev (a branch alone, another rev, the rev in upper case) is refused.
    #[test]
    fn refuses_unlocked_flakes() {
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        let other = "git+file:///srv/web?ref=main&rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a6";
        let upper = "git+file:///srv/web?ref=main&rev=A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7A7";
        for uri in ["git+file:///srv/web?ref=main", other, upper] {
            let body = EntryBody {
                name: "web",
                version: Version::default(),
                spec: Some(ServiceSpec::minimal(flake(uri))),
            };
            assert_eq!(
                encode_entry(&body, &[0; 64], &mut buf),
                Err(EntryError::Unlocked),
                "{uri}"
            );
        }
        let github = "github:owner/web/a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
        let body = EntryBody {
            name: "web",
            version: Version::default(),
            spec: Some(ServiceSpec::minimal(flake(github))),
        };
        assert!(encode_entry(&body, &[0; 64], &mut buf).is_ok());
    }

    /// The largest entry an operator plausibly writes fits one frame with room to spare: a
    /// 63-byte name, a 150-byte locked git+https reference (host, path, branch and rev), a long
    /// attr, 4 arguments, 4 variables, a migration and 4 ports.
    #[test]
    fn realistic_worst_case_fits() {
        let uri = "git+https://git.example-company.internal/platform/edge-services/\
                   web-frontend.git?ref=refs/heads/release-2026.12&rev=\
                   a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
        assert!(uri.len() >= 150, "{}", uri.len());
        let mut s = ServiceSpec::minimal(flake(uri));
        s.source = Source::Flake {
            uri,
            attr: "packages.x86_64-linux.frontend",
            rev: REV,
            nar_hash: [0x5c; NAR_HASH_BYTES],
        };
        for _ in 0..4 {
            s.args.push("--listen-address=0.0.0.0").unwrap();
            s.env
                .push(("SERVICE_SETTING", "a-value-of-20-bytes!"))
                .unwrap();
        }
        let migrate = ["/run/current-system/sw/bin/migrate", "--database", "main"];
        s.pre.push(Vec::from_slice(&migrate).unwrap()).unwrap();
        for number in [80, 443, 8080, 9090] {
            let protocol = Protocol::Tcp;
            s.ports.push(Port { number, protocol }).unwrap();
        }
        let name = "a-service-name-as-long-as-a-dns-label-allows--sixty-three-bytes";
        let body = EntryBody {
            name,
            version: Version {
                clock: u64::MAX,
                key_id: u32::MAX,
            },
            spec: Some(s),
        };
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        let n = encode_entry(&body, &[0; 64], &mut buf).unwrap();
        assert!(n + 100 <= ENTRY_BYTES_MAX, "{n} bytes");
        extern crate std;
        std::println!("realistic worst case: {n} bytes of {ENTRY_BYTES_MAX}");
    }

    /// Regression (fuzz): an overlong varint (clock 0 written as `80 00`) is refused, so an entry
    /// has exactly one encoding and one digest.
    #[test]
    fn refuses_overlong_varints() {
        let mut bytes = [0u8; 6 + 64];
        bytes[..6].copy_from_slice(&[1, b'a', 0x80, 0x00, 0x00, 0x00]);
        assert_eq!(Entry::decode(&bytes).err(), Some(EntryError::Malformed));
        bytes[..5].copy_from_slice(&[1, b'a', 0x00, 0x00, 0x00]);
        assert!(Entry::decode(&bytes[..5 + 64]).is_ok());
    }

    #[test]
    fn tombstone_wins_version_tie() {
        let v = Version {
            clock: 3,
            key_id: 1,
        };
        assert_eq!(lww_cmp((v, true, 0), (v, false, 9)), Ordering::Greater);
        let newer = Version {
            clock: 4,
            key_id: 0,
        };
        assert_eq!(lww_cmp((newer, false, 0), (v, true, 9)), Ordering::Greater);
    }
}
