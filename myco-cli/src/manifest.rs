//! myco.json, the operator's description of one service, and how it becomes an entry body.
//!
//! A manifest is parsed into an owned `Manifest` and checked completely at parse time: the JSON
//! shape (unknown and duplicate fields are errors, so a typo never silently falls back to a
//! default), the capacities of an entry (`ARGS_MAX` and the rest), and then the core's own entry
//! rules, by encoding the entry with `encode_entry`. The core is the only judge of what an entry
//! may hold; this module only adds which field is at fault. The check encodes with the widest
//! possible version, so a manifest that parses encodes under any version: `service` and
//! `tombstone` cannot fail.
//!
//! Entry bodies borrow their strings from the `Manifest`. Environment variables are sorted by name
//! (byte order), so one manifest always gives the same entry bytes whatever order its file lists
//! them in. `docs/myco-json.md` is the operator's account of the format.
//!
//! A flake manifest names a reference that moves; only its lock (`flake::lock`, given with
//! `locked`) makes a service entry. Until then the parse-time check encodes with a stand-in lock
//! (the reference with a rev appended), so every other rule is checked before Nix runs, and
//! `locked` checks again with the real one. `service` on an unlocked flake manifest gives the
//! reference as written with an all-zero rev: enough for `myco render`'s preview, and refused by
//! the core's entry rules, so it can never be signed.

mod health;

use crate::flake::FlakeLock;
use health::{HealthSpec, RawHealth};
use myco_core::config::{
    ARGS_MAX, ENTRY_BYTES_MAX, ENV_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES, PORTS_MAX, PRE_ARGS_MAX,
    PRE_MAX, SIGNATURE_BYTES,
};
use myco_core::schema::entry::{
    encode_entry, Arch, EntryBody, EntryError, Limits, Port, Protocol, Requirements, ServiceSpec,
    Source, Version, CPU_QUOTA_MAX, MEMORY_MAX_MAX, MEMORY_MAX_MIN, TASKS_MAX, WEIGHT_MAX,
};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// The largest manifest accepted. An entry holds at most `ENTRY_BYTES_MAX` bytes, so a bigger
/// file cannot be a valid manifest short of pages of whitespace; the bound keeps a wrong file
/// (a log, an image) from being read whole.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024;

/// The flake output built when the manifest names a flake but no `attr`.
pub const ATTR_DEFAULT: &str = "default";

/// Why a manifest was refused: one sentence naming the field at fault, without the file name,
/// which the caller adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError(String);

impl ManifestError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(message: String) -> ManifestError {
    ManifestError(message)
}

/// The file as written. Numbers are read wide and range-checked afterwards, so that an
/// out-of-range value gets a message in the manifest's terms rather than serde's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    flake: Option<String>,
    attr: Option<String>,
    exec: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    migrations: Vec<Vec<String>>,
    #[serde(default)]
    arch: ArchName,
    #[serde(default)]
    gpu: bool,
    zone: Option<u64>,
    replicas: Option<u64>,
    #[serde(default)]
    ports: Vec<Object<RawPort>>,
    memory_max: Option<NumberOrText>,
    cpu_weight: Option<u64>,
    cpu_quota: Option<NumberOrText>,
    tasks_max: Option<u64>,
    io_weight: Option<u64>,
    health: Option<Object<RawHealth>>,
}

/// A limit written as a number or as text with a unit (`"256M"`, `"50%"`).
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for NumberOrText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;
        impl Visitor<'_> for LimitVisitor {
            type Value = NumberOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a limit: a whole number, or text with its unit such as \"256M\" or \"50%\"",
                )
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<NumberOrText, E> {
                Ok(NumberOrText::Number(n))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<NumberOrText, E> {
                Ok(NumberOrText::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(LimitVisitor)
    }
}

/// `memory_max`: bytes, or a size with a suffix K, M, G or T (powers of 1024, as systemd reads
/// `MemoryMax=`).
fn memory_max(value: &NumberOrText) -> Result<u64, ManifestError> {
    let text = match value {
        NumberOrText::Number(n) => return Ok(*n),
        NumberOrText::Text(t) => t,
    };
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text.as_str(), 0),
    };
    let n: Option<u64> = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten();
    n.and_then(|n| n.checked_mul(1 << shift)).ok_or_else(|| {
        error(format!(
            "memory_max must be bytes (a number) or a size like \"256M\" (K, M, G, T: powers of \
             1024), got {text:?}"
        ))
    })
}

/// `cpu_quota`: percent of one CPU, as a number or as text ending in `%`.
fn cpu_quota(value: &NumberOrText) -> Result<u64, ManifestError> {
    let text = match value {
        NumberOrText::Number(n) => return Ok(*n),
        NumberOrText::Text(t) => t,
    };
    let digits = text.strip_suffix('%').unwrap_or(text);
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
        .ok_or_else(|| {
            error(format!(
                "cpu_quota must be percent of one CPU, like 50 or \"50%\" (200 is two CPUs), \
                 got {text:?}"
            ))
        })
}

/// The resource limits of `raw`, each checked against its bounds with a message naming it.
fn limits(raw: &Raw) -> Result<Limits, ManifestError> {
    let bounded =
        |field: &str, value: Option<u64>, max: u16| -> Result<Option<u16>, ManifestError> {
            match value {
                None => Ok(None),
                Some(v) if (1..=u64::from(max)).contains(&v) => Ok(Some(v as u16)),
                Some(v) => Err(error(format!("{field} must be 1 to {max}, got {v}"))),
            }
        };
    let memory_max = raw.memory_max.as_ref().map(memory_max).transpose()?;
    if let Some(m) = memory_max.filter(|m| !(MEMORY_MAX_MIN..=MEMORY_MAX_MAX).contains(m)) {
        return Err(error(format!(
            "memory_max must be 1M to 1024T ({MEMORY_MAX_MIN} to {MEMORY_MAX_MAX} bytes): below, \
             nothing starts; got {m} bytes"
        )));
    }
    let quota = raw.cpu_quota.as_ref().map(cpu_quota).transpose()?;
    Ok(Limits {
        memory_max,
        cpu_weight: bounded("cpu_weight", raw.cpu_weight, WEIGHT_MAX)?,
        cpu_quota: bounded("cpu_quota (percent)", quota, CPU_QUOTA_MAX)?,
        tasks_max: bounded("tasks_max", raw.tasks_max, TASKS_MAX)?,
        io_weight: bounded("io_weight", raw.io_weight, WEIGHT_MAX)?,
    })
}

/// Names are read as plain strings: a derived enum would also accept `{"x86_64": null}`, a second
/// spelling of the same manifest that nobody documents.
#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct ArchName(Arch);

impl Default for ArchName {
    fn default() -> ArchName {
        ArchName(Arch::Any)
    }
}

impl TryFrom<String> for ArchName {
    type Error = String;

    fn try_from(name: String) -> Result<ArchName, String> {
        match name.as_str() {
            "any" => Ok(ArchName(Arch::Any)),
            "x86_64" => Ok(ArchName(Arch::X86_64)),
            "aarch64" => Ok(ArchName(Arch::Aarch64)),
            _ => Err(format!("arch must be any, x86_64 or aarch64, got {name:?}")),
        }
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct ProtocolName(Protocol);

impl Default for ProtocolName {
    fn default() -> ProtocolName {
        ProtocolName(Protocol::Tcp)
    }
}

impl TryFrom<String> for ProtocolName {
    type Error = String;

    fn try_from(name: String) -> Result<ProtocolName, String> {
        match name.as_str() {
            "tcp" => Ok(ProtocolName(Protocol::Tcp)),
            "udp" => Ok(ProtocolName(Protocol::Udp)),
            _ => Err(format!("protocol must be tcp or udp, got {name:?}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    port: u64,
    #[serde(default)]
    protocol: ProtocolName,
}

/// `T` read from a JSON object only. Serde's derived structs also accept an array of their field
/// values in order (`["web", null, null, "/bin/web"]`), a second syntax for one manifest that
/// nobody documents and a typo could fall into.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object<T>, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

/// Environment variables sorted by name. A name given twice is an error: JSON parsers disagree on
/// which of two duplicate keys wins, so the manifest must not depend on it.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Env, D::Error> {
        struct EnvVisitor;

        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = Env;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of variable names to string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Env, A::Error> {
                let mut env = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if env.contains_key(&name) {
                        return Err(de::Error::custom(format_args!(
                            "env variable {name:?} is set twice"
                        )));
                    }
                    env.insert(name, value);
                }
                Ok(Env(env.into_iter().collect()))
            }
        }

        deserializer.deserialize_map(EnvVisitor)
    }
}

/// A checked manifest. Only `parse` makes one, so every `Manifest` encodes.
pub struct Manifest {
    raw: Raw,
    replicas: u8,
    zone: Option<u8>,
    ports: heapless::Vec<Port, PORTS_MAX>,
    limits: Limits,
    health: Option<HealthSpec>,
    /// The flake reference's lock, once `locked` gave it.
    lock: Option<FlakeLock>,
}

impl Manifest {
    /// Parses and checks a manifest. Any byte string is safe to pass.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(error(format!(
                "the manifest is {} bytes, more than the {MANIFEST_BYTES_MAX} a manifest may be",
                bytes.len()
            )));
        }
        let Object(raw) =
            serde_json::from_slice::<Object<Raw>>(bytes).map_err(|e| json_refusal(bytes, &e))?;
        let manifest = Manifest::check_shape(raw)?;
        let stand_in = manifest.flake().map(stand_in_lock);
        manifest.check_entry(stand_in.as_ref())?;
        Ok(manifest)
    }

    /// The flake reference as the manifest gives it, for `flake::lock`; None for exec.
    pub fn flake(&self) -> Option<&str> {
        self.raw.flake.as_deref()
    }

    /// The lock `service` signs, once `locked` gave it.
    pub fn lock(&self) -> Option<&FlakeLock> {
        self.lock.as_ref()
    }

    /// This flake manifest with its reference locked to `lock`, checked again: a locked reference
    /// is longer than the reference as written, and may no longer fit a frame.
    pub fn locked(mut self, lock: FlakeLock) -> Result<Manifest, ManifestError> {
        assert!(self.flake().is_some(), "only a flake manifest is locked");
        assert!(self.lock.is_none(), "a manifest is locked once");
        self.lock = Some(lock);
        self.check_entry(self.lock.as_ref())?;
        Ok(self)
    }

    /// The service's name, as the manifest gives it (and as the core accepted it).
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// The entry that deploys this service at `version`; for a flake, locked by `locked` (see the
    /// module comment for an unlocked one).
    pub fn service(&self, version: Version) -> EntryBody<'_> {
        self.body(version, self.lock.as_ref())
    }

    fn body<'a>(&'a self, version: Version, lock: Option<&'a FlakeLock>) -> EntryBody<'a> {
        let spec = self.spec(lock).expect("parse checked every capacity");
        EntryBody {
            name: &self.raw.name,
            version,
            spec: Some(spec),
        }
    }

    /// The entry that removes this service at `version`.
    pub fn tombstone(&self, version: Version) -> EntryBody<'_> {
        EntryBody {
            name: &self.raw.name,
            version,
            spec: None,
        }
    }

    /// The rules serde cannot express: one source, numbers in range, and each list within the
    /// capacity an entry has for it.
    fn check_shape(raw: Raw) -> Result<Manifest, ManifestError> {
        match (&raw.flake, &raw.exec) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "the manifest has both flake and exec; give exactly one of them".into(),
                ))
            }
            (None, None) => {
                return Err(error(
                    "the manifest has neither flake nor exec; give exactly one of them".into(),
                ))
            }
            (None, Some(_)) if raw.attr.is_some() => {
                return Err(error(
                    "attr names a flake output, but the manifest runs exec; remove attr".into(),
                ))
            }
            _ => {}
        }
        let zone = match raw.zone {
            None => None,
            Some(z) => Some(
                u8::try_from(z).map_err(|_| error(format!("zone must be 0 to 255, got {z}")))?,
            ),
        };
        // Anything above u8 is out of the core's range too; the core's rule gives the message.
        let replicas = raw
            .replicas
            .map_or(1, |r| u8::try_from(r).unwrap_or(u8::MAX));
        check_count("args", raw.args.len(), ARGS_MAX)?;
        check_count("env variables", raw.env.0.len(), ENV_MAX)?;
        check_count("migrations", raw.migrations.len(), PRE_MAX)?;
        check_count("ports", raw.ports.len(), PORTS_MAX)?;
        for (i, command) in raw.migrations.iter().enumerate() {
            if command.is_empty() {
                return Err(error(format!(
                    "migrations[{i}] is empty; give the executable's absolute path first, then \
                     its arguments"
                )));
            }
            if command.len() > PRE_ARGS_MAX {
                return Err(error(format!(
                    "migrations[{i}] has {} words, but a migration may have at most \
                     {PRE_ARGS_MAX} (the executable and its arguments)",
                    command.len()
                )));
            }
        }
        let mut ports = heapless::Vec::new();
        for (i, Object(p)) in raw.ports.iter().enumerate() {
            let number = u16::try_from(p.port).map_err(|_| {
                error(format!(
                    "ports[{i}].port must be 1 to 65535, got {}",
                    p.port
                ))
            })?;
            let pushed = ports.push(Port {
                number,
                protocol: p.protocol.0,
            });
            assert!(pushed.is_ok(), "the count was checked above");
        }
        let health = raw.health.as_ref().map(|h| HealthSpec::check(&h.0));
        Ok(Manifest {
            limits: limits(&raw)?,
            health: health.transpose()?,
            raw,
            replicas,
            zone,
            ports,
            lock: None,
        })
    }

    /// Encodes the entry, as a service (its flake locked by `lock`) and as a tombstone, under the
    /// widest version, so that every later encoding fits too. Refusals are the core's, located to
    /// a field.
    fn check_entry(&self, lock: Option<&FlakeLock>) -> Result<(), ManifestError> {
        let widest = Version {
            clock: u64::MAX,
            key_id: u32::MAX,
        };
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        for body in [self.body(widest, lock), self.tombstone(widest)] {
            if let Err(e) = encode_entry(&body, &[0; SIGNATURE_BYTES], &mut buf) {
                return Err(self.refusal(e, &body));
            }
        }
        Ok(())
    }

    fn spec<'a>(&'a self, lock: Option<&'a FlakeLock>) -> Option<ServiceSpec<'a>> {
        let raw = &self.raw;
        let attr = raw.attr.as_deref().unwrap_or(ATTR_DEFAULT);
        let source = match (&raw.flake, &raw.exec, lock) {
            (Some(_), _, Some(lock)) => Source::Flake {
                uri: &lock.url,
                attr,
                rev: lock.rev,
                nar_hash: lock.nar_hash,
            },
            (Some(uri), _, None) => flake_as_written(uri, attr),
            (None, Some(path), _) => Source::Exec { path },
            (None, None, _) => unreachable!("check_shape requires a source"),
        };
        let mut pre = heapless::Vec::new();
        for command in &raw.migrations {
            pre.push(bounded(command.iter().map(String::as_str))?)
                .ok()?;
        }
        Some(ServiceSpec {
            source,
            args: bounded(raw.args.iter().map(String::as_str))?,
            env: bounded(raw.env.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))?,
            pre,
            requires: Requirements {
                arch: raw.arch.0,
                gpu: raw.gpu,
                zone: self.zone,
            },
            replicas: self.replicas,
            ports: self.ports.clone(),
            limits: self.limits,
            health: match &self.health {
                Some(h) => Some(h.spec()?),
                None => None,
            },
        })
    }

    /// The core's refusal of `body`, with the field at fault where one can be named.
    fn refusal(&self, e: EntryError, body: &EntryBody<'_>) -> ManifestError {
        let what = e.message();
        match e {
            EntryError::Name => error(format!("name {:?}: {what}", self.raw.name)),
            EntryError::Replicas => error(format!(
                "replicas is {}: {what}",
                self.raw.replicas.unwrap_or(1)
            )),
            EntryError::Port => error(format!("ports: {what}")),
            EntryError::TooLong => error(format!(
                "{what}: it would be {} bytes with its signature, {} more than the \
                 {ENTRY_BYTES_MAX} that fit; shorten {}args, env or migrations",
                encoded_bytes(body),
                encoded_bytes(body) - ENTRY_BYTES_MAX,
                if self.lock.is_some() {
                    "the flake reference, "
                } else {
                    ""
                },
            )),
            EntryError::Unlocked => error(format!("flake: {what}")),
            EntryError::Limits => error(format!("limits: {what}")),
            EntryError::Health => error(format!("health: {what}")),
            EntryError::Env => self.env_refusal(),
            EntryError::Token | EntryError::Path => match self.culprit(e) {
                Some(field) => error(format!("{field}: {what}")),
                None => error(what.into()),
            },
            EntryError::Truncated | EntryError::Malformed => {
                unreachable!("encoding never reports a decoding error")
            }
        }
    }

    /// The core has one refusal for a bad variable name and a bad value; this says which it is,
    /// by asking the core about the name with a plain value and then with the real one.
    fn env_refusal(&self) -> ManifestError {
        let what = EntryError::Env.message();
        for (name, value) in &self.raw.env.0 {
            let refused = |value: &str| {
                let env = heapless::Vec::from_slice(&[(name.as_str(), value)]).ok()?;
                refusal_of(&ServiceSpec { env, ..minimal() })
            };
            if refused("x") == Some(EntryError::Env) {
                return error(format!("env {name:?}: {what}"));
            }
            if refused(value) == Some(EntryError::Env) {
                return error(format!(
                    "env {name:?}: the value holds a control character (a newline, tab, escape \
                     or the like), which no environment value may"
                ));
            }
        }
        error(what.into())
    }

    /// The first field that the core refuses with `e` on its own, tried in an otherwise minimal
    /// spec. This asks the core rather than restating its rules, so the two cannot disagree.
    fn culprit(&self, e: EntryError) -> Option<String> {
        let raw = &self.raw;
        let mut tries: Vec<(String, ServiceSpec<'_>)> = Vec::new();
        let with_source = |source| ServiceSpec {
            source,
            ..minimal()
        };
        if let Some(uri) = &raw.flake {
            let attr = raw.attr.as_deref().unwrap_or(ATTR_DEFAULT);
            tries.push(("flake".into(), with_source(flake_as_written(uri, "a"))));
            tries.push(("attr".into(), with_source(flake_as_written("a", attr))));
        }
        if let Some(path) = &raw.exec {
            tries.push(("exec".into(), with_source(Source::Exec { path })));
        }
        for (i, arg) in raw.args.iter().enumerate() {
            let args = heapless::Vec::from_slice(&[arg.as_str()]).ok()?;
            tries.push((format!("args[{i}]"), ServiceSpec { args, ..minimal() }));
        }
        for (i, command) in raw.migrations.iter().enumerate() {
            let command = bounded(command.iter().map(String::as_str))?;
            let pre = heapless::Vec::from_slice(&[command]).ok()?;
            tries.push((format!("migrations[{i}]"), ServiceSpec { pre, ..minimal() }));
        }
        tries
            .into_iter()
            .find(|(_, spec)| refusal_of(spec) == Some(e))
            .map(|(field, _)| field)
    }
}

/// A flake source as the manifest writes it, not locked: an all-zero rev and NAR hash. The core
/// refuses to encode it unless the reference happens to name the zero rev (`stand_in_lock`).
fn flake_as_written<'a>(uri: &'a str, attr: &'a str) -> Source<'a> {
    Source::Flake {
        uri,
        attr,
        rev: [0; FLAKE_REV_BYTES],
        nar_hash: [0; NAR_HASH_BYTES],
    }
}

/// The lock the parse-time check stands in for the real one: the reference with an all-zero rev
/// appended, as Nix appends the real one to a git reference. It makes the core's rules apply to
/// everything else in the manifest before Nix runs; `locked` checks again with the real lock.
/// An empty reference stays empty, so that the core refuses it as the empty token it is.
fn stand_in_lock(uri: &str) -> FlakeLock {
    let separator = if uri.contains('?') { '&' } else { '?' };
    let rev = "0".repeat(2 * FLAKE_REV_BYTES);
    FlakeLock {
        url: match uri.is_empty() {
            true => String::new(),
            false => format!("{uri}{separator}rev={rev}"),
        },
        rev: [0; FLAKE_REV_BYTES],
        nar_hash: [0; NAR_HASH_BYTES],
    }
}

/// How long `body` encodes with its signature, whatever the frame's room.
fn encoded_bytes(body: &EntryBody<'_>) -> usize {
    let size = postcard::serialize_with_flavor(body, postcard::ser_flavors::Size::default())
        .expect("counting bytes cannot fail");
    size + SIGNATURE_BYTES
}

/// The smallest spec the core accepts; `culprit` varies one field of it at a time.
fn minimal<'a>() -> ServiceSpec<'a> {
    ServiceSpec::minimal(Source::Exec { path: "/x" })
}

/// What the core says of an entry named "a" with `spec`.
fn refusal_of(spec: &ServiceSpec<'_>) -> Option<EntryError> {
    let body = EntryBody {
        name: "a",
        version: Version::default(),
        spec: Some(spec.clone()),
    };
    let mut buf = [0u8; ENTRY_BYTES_MAX];
    encode_entry(&body, &[0; SIGNATURE_BYTES], &mut buf).err()
}

fn check_count(what: &str, count: usize, max: usize) -> Result<(), ManifestError> {
    if count > max {
        return Err(error(format!(
            "at most {max} {what} fit in an entry, but the manifest has {count}"
        )));
    }
    Ok(())
}

/// `items` as a fixed-capacity list, or None if they do not fit.
fn bounded<T, const N: usize>(items: impl Iterator<Item = T>) -> Option<heapless::Vec<T, N>> {
    let mut out = heapless::Vec::new();
    for item in items {
        out.push(item).ok()?;
    }
    Some(out)
}

/// Why serde refused `bytes`, in plain words where serde's are vague: a UTF-8 byte order mark
/// ("expected value at line 1 column 1") and an escaped half of a UTF-16 surrogate pair
/// ("unexpected end of hex escape") say what is wrong and where. Anything else is serde's own
/// message, which names the line and column.
fn json_refusal(bytes: &[u8], e: &serde_json::Error) -> ManifestError {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return error(
            "line 1 column 1: the manifest starts with a UTF-8 byte order mark (the bytes EF BB \
             BF), which JSON does not allow; save the file as UTF-8 without a BOM"
                .to_string(),
        );
    }
    // Only a lone surrogate at or before the place serde stopped is what serde refused.
    let lone = lone_surrogate(bytes).filter(|s| (s.line, s.column) <= (e.line(), e.column()));
    match lone {
        Some(s) => error(format!(
            "line {} column {}: the escape {} is half of a UTF-16 surrogate pair without its \
             other half, which is no character; write the character itself, or a high \
             (\\ud800-\\udbff) and a low (\\udc00-\\udfff) escape together",
            s.line, s.column, s.escape
        )),
        None => error(e.to_string()),
    }
}

/// An escape in a JSON string that is half of a surrogate pair on its own, and where it starts
/// (1-based, columns in bytes as serde counts them).
#[derive(Debug, PartialEq, Eq)]
struct LoneSurrogate {
    line: usize,
    column: usize,
    /// As written, `\ud800` or `\uDC00`.
    escape: String,
}

/// The first lone surrogate escape in the strings of `bytes`, if any. It only looks at escapes
/// inside strings; whether the rest is JSON is serde's business.
fn lone_surrogate(bytes: &[u8]) -> Option<LoneSurrogate> {
    let (mut line, mut line_start, mut in_string, mut at) = (1, 0, false, 0);
    while let Some(&b) = bytes.get(at) {
        match b {
            b'\n' => (line, line_start) = (line + 1, at + 1),
            b'"' => in_string = !in_string,
            b'\\' if in_string && bytes.get(at + 1) == Some(&b'u') => {
                let unit = hex_unit(bytes, at + 2)?;
                let paired = (0xd800..0xdc00).contains(&unit)
                    && bytes.get(at + 6..at + 8) == Some(b"\\u")
                    && hex_unit(bytes, at + 8).is_some_and(|low| (0xdc00..0xe000).contains(&low));
                if (0xd800..0xe000).contains(&unit) && !paired {
                    let escape = String::from_utf8_lossy(&bytes[at..at + 6]).into_owned();
                    let column = at - line_start + 1;
                    return Some(LoneSurrogate {
                        line,
                        column,
                        escape,
                    });
                }
                at += if paired { 12 } else { 6 };
                continue;
            }
            b'\\' if in_string => at += 1,
            _ => {}
        }
        at += 1;
    }
    None
}

/// The four hex digits at `at`, as a UTF-16 code unit.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = core::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16)
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text.as_bytes())
    }

    /// The error for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.message().to_string(),
        }
    }

    fn assert_refused(text: &str, needles: &[&str]) {
        let message = refused(text);
        for needle in needles {
            assert!(message.contains(needle), "{text}\n  gave: {message}");
        }
    }

    const REV_HEX: &str = "152b279ae9728ebd2a539847576be4e2e8a2f101";

    /// The lock Nix would give `uri` (a git reference with a branch) at commit `REV_HEX`.
    fn lock_of(uri: &str) -> FlakeLock {
        let mut rev = [0u8; FLAKE_REV_BYTES];
        for (i, byte) in rev.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&REV_HEX[2 * i..2 * i + 2], 16).unwrap();
        }
        FlakeLock {
            url: format!("{uri}&rev={REV_HEX}"),
            rev,
            nar_hash: [0x5c; NAR_HASH_BYTES],
        }
    }

    /// A manifest with only a name and a source gets every documented default; its flake, once
    /// locked, is the lock's reference, rev and hash.
    #[test]
    fn defaults() {
        let uri = "git+https://host/repo?ref=main";
        let m = parse(r#"{"name": "web", "flake": "git+https://host/repo?ref=main"}"#).unwrap();
        assert_eq!(m.flake(), Some(uri));
        let lock = lock_of(uri);
        let m = m.locked(lock.clone()).unwrap();
        let version = Version {
            clock: 9,
            key_id: 4,
        };
        let body = m.service(version);
        assert_eq!((body.name, body.version), ("web", version));
        let spec = body.spec.unwrap();
        assert_eq!(
            spec.source,
            Source::Flake {
                uri: &lock.url,
                attr: "default",
                rev: lock.rev,
                nar_hash: lock.nar_hash,
            }
        );
        assert!(spec.args.is_empty() && spec.env.is_empty() && spec.pre.is_empty());
        assert!(spec.ports.is_empty());
        assert_eq!(
            spec.requires,
            Requirements {
                arch: Arch::Any,
                gpu: false,
                zone: None
            }
        );
        assert_eq!(spec.replicas, 1);
        assert!(m.tombstone(version).is_tombstone());
        assert_eq!(m.tombstone(version).name, "web");
    }

    /// Every field, given, lands in the entry as written; env comes out sorted by name.
    #[test]
    fn every_field() {
        let m = parse(
            r#"{"name": "api-2", "exec": "/usr/bin/api", "args": ["--port", "8080", ""],
                "env": {"Z": "last", "MODE": "prod", "_A": ""},
                "migrations": [["/bin/migrate", "--up"], ["/bin/seed"]],
                "arch": "aarch64", "gpu": true, "zone": 3, "replicas": 64,
                "ports": [{"port": 8080, "protocol": "tcp"}, {"port": 53, "protocol": "udp"},
                          {"port": 9090}]}"#,
        )
        .unwrap();
        let spec = m.service(Version::default()).spec.unwrap();
        assert_eq!(
            spec.source,
            Source::Exec {
                path: "/usr/bin/api"
            }
        );
        assert_eq!(spec.args.as_slice(), ["--port", "8080", ""]);
        assert_eq!(
            spec.env.as_slice(),
            [("MODE", "prod"), ("Z", "last"), ("_A", "")]
        );
        assert_eq!(spec.pre.len(), 2);
        assert_eq!(spec.pre[0].as_slice(), ["/bin/migrate", "--up"]);
        assert_eq!(spec.pre[1].as_slice(), ["/bin/seed"]);
        assert_eq!(
            spec.requires,
            Requirements {
                arch: Arch::Aarch64,
                gpu: true,
                zone: Some(3)
            }
        );
        assert_eq!(spec.replicas, 64);
        let ports: Vec<_> = spec.ports.iter().map(|p| (p.number, p.protocol)).collect();
        assert_eq!(
            ports,
            [
                (8080, Protocol::Tcp),
                (53, Protocol::Udp),
                (9090, Protocol::Tcp)
            ]
        );
    }

    /// `health` gives one check with its schedule (10 s, 2 s, 3 failures by default, the
    /// timeout never above the interval).
    #[test]
    fn health_is_read_with_its_defaults() {
        use myco_core::schema::entry::{Check, Health};
        let with = |text: &str| {
            parse(&format!(
                r#"{{"name": "a", "exec": "/a", "health": {text}}}"#
            ))
            .unwrap()
        };
        fn health(m: &Manifest) -> Option<Health<'_>> {
            m.service(Version::default()).spec.unwrap().health
        }
        let http = Check::Http {
            path: "/healthz",
            port: 8080,
        };
        let m = with(r#"{"http": "/healthz", "port": 8080}"#);
        let h = health(&m).unwrap();
        assert_eq!(
            (h.check, h.interval_s, h.timeout_s, h.failures),
            (http, 10, 2, 3)
        );
        let m = with(r#"{"tcp": 5432, "interval_s": 1}"#);
        let h = health(&m).unwrap();
        assert_eq!((h.check, h.timeout_s), (Check::Tcp { port: 5432 }, 1));
        let m = with(r#"{"exec": ["/bin/check", "--quick"], "failures": 1, "timeout_s": 5}"#);
        let h = health(&m).unwrap();
        let argv = heapless::Vec::from_slice(&["/bin/check", "--quick"]).unwrap();
        let want = Health {
            check: Check::Exec { argv },
            interval_s: 10,
            timeout_s: 5,
            failures: 1,
        };
        assert_eq!(h, want);
    }

    /// Each mistake in `health` is refused naming the field.
    #[test]
    fn health_mistakes_are_refused_by_field() {
        for (text, needles) in [
            (
                r#"{"http": "/h"}"#,
                &["health.http \"/h\" needs health.port"][..],
            ),
            (
                r#"{"http": "/h", "port": 0}"#,
                &["health.port must be a port"],
            ),
            (r#"{"tcp": 70000}"#, &["health.tcp must be a port"]),
            (
                r#"{"tcp": 1, "port": 2}"#,
                &["health.port goes with health.http"],
            ),
            (r#"{"tcp": 1, "exec": ["/x"]}"#, &["exactly one check"]),
            (r#"{}"#, &["exactly one check"]),
            (r#"{"exec": []}"#, &["health.exec has 0 words"]),
            (
                r#"{"tcp": 1, "interval_s": 0}"#,
                &["health.interval_s must be 1 to 3600"],
            ),
            (
                r#"{"tcp": 1, "interval_s": 5, "timeout_s": 6}"#,
                &["at most health.interval_s (5)"],
            ),
            (
                r#"{"tcp": 1, "failures": 21}"#,
                &["health.failures must be 1 to 20, got 21"],
            ),
            (r#"{"tcp": 1, "retries": 2}"#, &["unknown field `retries`"]),
            (
                r#"{"http": "healthz", "port": 1}"#,
                &["health:", "starting with '/'"],
            ),
            (r#"{"exec": ["check"]}"#, &["health:", "absolute path"]),
        ] {
            let manifest = format!(r#"{{"name": "a", "exec": "/a", "health": {text}}}"#);
            assert_refused(&manifest, needles);
        }
    }

    /// Resource limits are read as numbers or with their units (`"256M"`, `"50%"`), and each
    /// one out of its bounds is refused naming the field and the bounds.
    #[test]
    fn limits_are_read_and_bounded() {
        let m = parse(
            r#"{"name": "a", "exec": "/a", "memory_max": "256M", "cpu_weight": 200,
                "cpu_quota": "50%", "tasks_max": 20, "io_weight": 300}"#,
        )
        .unwrap();
        let limits = m.service(Version::default()).spec.unwrap().limits;
        assert_eq!(
            limits,
            Limits {
                memory_max: Some(256 << 20),
                cpu_weight: Some(200),
                cpu_quota: Some(50),
                tasks_max: Some(20),
                io_weight: Some(300),
            }
        );
        let m = parse(r#"{"name": "a", "exec": "/a", "memory_max": 2097152, "cpu_quota": 150}"#);
        let limits = m.unwrap().service(Version::default()).spec.unwrap().limits;
        assert_eq!(
            (limits.memory_max, limits.cpu_quota),
            (Some(2 << 20), Some(150))
        );
        for (field, needles) in [
            (
                r#""tasks_max": 101"#,
                &["tasks_max must be 1 to 100, got 101"][..],
            ),
            (r#""tasks_max": 0"#, &["tasks_max must be 1 to 100"]),
            (r#""cpu_weight": 10001"#, &["cpu_weight must be 1 to 10000"]),
            (r#""io_weight": 0"#, &["io_weight must be 1 to 10000"]),
            (
                r#""cpu_quota": "50 %""#,
                &["cpu_quota must be percent", "\"50 %\""],
            ),
            (
                r#""cpu_quota": 0"#,
                &["cpu_quota (percent) must be 1 to 10000"],
            ),
            (
                r#""memory_max": "12X""#,
                &["memory_max must be bytes", "\"12X\""],
            ),
            (
                r#""memory_max": "99999999999T""#,
                &["memory_max must be bytes"],
            ),
            (
                r#""memory_max": 1000"#,
                &["memory_max must be 1M to 1024T", "1000 bytes"],
            ),
            (
                r#""memory_max": "1025T""#,
                &["memory_max must be 1M to 1024T"],
            ),
            (
                r#""memory_max": -1"#,
                &["-1", "a limit: a whole number, or text with its unit"],
            ),
        ] {
            let text = format!(r#"{{"name": "a", "exec": "/a", {field}}}"#);
            assert_refused(&text, needles);
        }
    }

    /// The order env is written in does not change the entry's bytes.
    #[test]
    fn env_order_is_canonical() {
        let encode = |text: &str| {
            let m = parse(text).unwrap();
            let mut buf = [0u8; ENTRY_BYTES_MAX];
            let n = encode_entry(&m.service(Version::default()), &[0; 64], &mut buf).unwrap();
            buf[..n].to_vec()
        };
        let a = encode(r#"{"name": "a", "exec": "/a", "env": {"B": "2", "A": "1", "C": "3"}}"#);
        let b = encode(r#"{"env": {"C": "3", "A": "1", "B": "2"}, "exec": "/a", "name": "a"}"#);
        assert_eq!(a, b);
    }

    /// Unknown, duplicate and mistyped fields are refused, naming the field.
    #[test]
    fn json_shape_errors() {
        assert_refused(
            r#"{"name": "a", "exec": "/a", "replica": 2}"#,
            &["unknown field `replica`", "line 1"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 1, "proto": "tcp"}]}"#,
            &["unknown field `proto`"],
        );
        assert_refused(
            r#"{"name": "a", "name": "b", "exec": "/a"}"#,
            &["duplicate field `name`"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "env": {"A": "1", "A": "2"}}"#,
            &["env variable \"A\" is set twice"],
        );
        assert_refused(r#"{"exec": "/a"}"#, &["missing field `name`"]);
        assert_refused(
            r#"{"name": "a", "exec": "/a", "gpu": "yes"}"#,
            &["invalid type"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "arch": "amd64"}"#,
            &[
                "arch must be any, x86_64 or aarch64, got \"amd64\"",
                "line 1",
            ],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 1, "protocol": "sctp"}]}"#,
            &["protocol must be tcp or udp, got \"sctp\""],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a"} {}"#,
            &["trailing characters"],
        );
        // Objects only: serde's derived array form of a struct is not a second syntax.
        assert_refused(r#"["a", null, null, "/a"]"#, &["expected a JSON object"]);
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [[80, "tcp"]]}"#,
            &["expected a JSON object"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "arch": {"x86_64": null}}"#,
            &["invalid type: map"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "env": [["A", "1"]]}"#,
            &["invalid type"],
        );
        assert_refused("", &["EOF"]);
        assert!(Manifest::parse(b"{\"name\": \"\xff\", \"exec\": \"/a\"}").is_err());
    }

    /// Exactly one of flake and exec, and attr only with flake.
    #[test]
    fn exactly_one_source() {
        assert_refused(
            r#"{"name": "a", "flake": "f", "exec": "/a"}"#,
            &["both flake and exec"],
        );
        assert_refused(r#"{"name": "a"}"#, &["neither flake nor exec"]);
        assert_refused(r#"{"name": "a", "exec": "/a", "attr": "x"}"#, &["attr"]);
        let m = parse(r#"{"name": "a", "flake": "f", "attr": "pkgs.web"}"#).unwrap();
        let source = m.service(Version::default()).spec.unwrap().source;
        assert_eq!(source, flake_as_written("f", "pkgs.web"));
    }

    /// A reference that fits as written but not once locked is refused by `locked`, which says by
    /// how many bytes the entry is too long; the unlocked entry can never be encoded.
    #[test]
    fn locked_reference_must_fit() {
        let uri = |n: usize| format!("git+https://host/{}?ref=main", "r".repeat(n));
        let text = |n: usize| format!(r#"{{"name": "a", "flake": {:?}}}"#, uri(n));
        let longest = (1..ENTRY_BYTES_MAX)
            .rev()
            .find(|&n| parse(&text(n)).is_ok())
            .unwrap();
        let m = parse(&text(longest)).unwrap();
        let mut buf = [0u8; ENTRY_BYTES_MAX];
        let refused = encode_entry(&m.service(Version::default()), &[0; 64], &mut buf);
        assert_eq!(refused, Err(EntryError::Unlocked));
        // Nix adds more than the rev to some references; here 39 bytes more than the stand-in.
        let mut lock = lock_of(&uri(longest));
        lock.url = format!("{}&lastModified=1767225600&revCount=12345", lock.url);
        let widest = Version {
            clock: u64::MAX,
            key_id: u32::MAX,
        };
        let over = encoded_bytes(&m.body(widest, Some(&lock))) - ENTRY_BYTES_MAX;
        assert!((1..=39).contains(&over), "{over}");
        let message = m.locked(lock).err().unwrap().message().to_string();
        assert!(
            message.contains(&format!("{over} more than the {ENTRY_BYTES_MAX}")),
            "{message}"
        );
        assert!(message.contains("shorten the flake reference"), "{message}");
    }

    /// The core's rules, each refusal naming the field at fault.
    #[test]
    fn core_rules_name_the_field() {
        for exec in ["bin/prog", "/a/../b", "/with space", ""] {
            let text = format!(r#"{{"name": "a", "exec": {exec:?}}}"#);
            assert_refused(&text, &["exec: executable must be an absolute path"]);
        }
        for name in ["", "Web", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            let text = format!(r#"{{"name": {name:?}, "exec": "/a"}}"#);
            assert_refused(&text, &["name ", "DNS label"]);
        }
        assert_refused(
            r#"{"name": "a", "flake": ""}"#,
            &["flake: a token is empty"],
        );
        assert_refused(r#"{"name": "a", "flake": "f", "attr": ""}"#, &["attr: "]);
        assert_refused(
            r#"{"name": "a", "exec": "/a", "args": ["ok", "new\nline"]}"#,
            &["args[1]: a token is empty or holds a control character"],
        );
        for env in [
            r#"{"A=B": "x"}"#,
            r#"{"1A": "x"}"#,
            r#"{"": "x"}"#,
            r#"{"é": "x"}"#,
        ] {
            let text = format!(r#"{{"name": "a", "exec": "/a", "env": {env}}}"#);
            assert_refused(&text, &["env \"", "environment names must match"]);
        }
        assert_refused(
            r#"{"name": "a", "exec": "/a", "env": {"OK": "1", "A": "\u0000"}}"#,
            &["env \"A\": the value holds a control character"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "migrations": [["/ok"], ["relative"]]}"#,
            &["migrations[1]: executable must be an absolute path"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "migrations": [["/ok", "tab\there"]]}"#,
            &["migrations[0]: a token"],
        );
        for replicas in ["0", "65", "256", "100000000000"] {
            let text = format!(r#"{{"name": "a", "exec": "/a", "replicas": {replicas}}}"#);
            assert_refused(&text, &["replicas must be between 1 and 64"]);
        }
        assert_refused(r#"{"name": "a", "exec": "/a", "replicas": -1}"#, &["-1"]);
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 0}]}"#,
            &["ports must be non-zero and unique"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 80}, {"port": 80, "protocol": "tcp"}]}"#,
            &["ports must be non-zero and unique"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "ports": [{"port": 65536}]}"#,
            &["ports[0].port must be 1 to 65535, got 65536"],
        );
        assert_refused(
            r#"{"name": "a", "exec": "/a", "zone": 256}"#,
            &["zone must be 0 to 255, got 256"],
        );
        // The same port number over two protocols is two ports.
        parse(r#"{"name": "a", "exec": "/a", "ports": [{"port": 53}, {"port": 53, "protocol": "udp"}]}"#)
            .unwrap();
    }

    /// Each list stops at the entry's capacity for it, with a message giving the limit.
    #[test]
    fn capacities() {
        let list = |n: usize, item: &str| vec![item; n].join(", ");
        let with = |field: &str, value: String| {
            format!(r#"{{"name": "a", "exec": "/a", "{field}": {value}}}"#)
        };
        parse(&with("args", format!("[{}]", list(ARGS_MAX, "\"x\"")))).unwrap();
        assert_refused(
            &with("args", format!("[{}]", list(ARGS_MAX + 1, "\"x\""))),
            &["at most 16 args", "has 17"],
        );
        let env = |n: usize| {
            let vars: Vec<String> = (0..n).map(|i| format!("\"V{i}\": \"x\"")).collect();
            format!("{{{}}}", vars.join(", "))
        };
        parse(&with("env", env(ENV_MAX))).unwrap();
        assert_refused(
            &with("env", env(ENV_MAX + 1)),
            &["at most 16 env variables"],
        );
        let command = |words: usize| format!("[\"/m\"{}]", ", \"x\"".repeat(words - 1));
        parse(&with(
            "migrations",
            format!("[{}]", list(PRE_MAX, &command(PRE_ARGS_MAX))),
        ))
        .unwrap();
        assert_refused(
            &with("migrations", format!("[{}]", list(PRE_MAX + 1, "[\"/m\"]"))),
            &["at most 4 migrations"],
        );
        assert_refused(
            &with("migrations", format!("[{}]", command(PRE_ARGS_MAX + 1))),
            &["migrations[0] has 9 words", "at most 8"],
        );
        assert_refused(
            &with("migrations", "[[]]".into()),
            &["migrations[0] is empty"],
        );
        let ports = |n: usize| {
            let ports: Vec<String> = (1..=n).map(|i| format!("{{\"port\": {i}}}")).collect();
            format!("[{}]", ports.join(", "))
        };
        parse(&with("ports", ports(PORTS_MAX))).unwrap();
        assert_refused(&with("ports", ports(PORTS_MAX + 1)), &["at most 4 ports"]);
        let long = format!("[{}]", list(ARGS_MAX, &format!("\"{}\"", "x".repeat(60))));
        assert_refused(
            &with("args", long),
            &["longer than one frame allows", "shorten"],
        );
        let huge = format!(
            "{{\"name\": \"a\", \"exec\": \"/a\"}}{}",
            " ".repeat(MANIFEST_BYTES_MAX)
        );
        assert_refused(&huge, &["more than the 65536"]);
    }

    /// Characters that mean something to a shell or to systemd are data: the entry holds them
    /// verbatim (the unit compiler quotes them). Control characters are refused by the core.
    #[test]
    fn hostile_values_are_data() {
        let m = parse(
            r#"{"name": "a", "exec": "/a", "args": ["$HOME", "%n", "\"q\"", "back\\slash", "a;b", "'"],
                "env": {"X": "$(rm -rf /) %h ` \\ \""}}"#,
        )
        .unwrap();
        let spec = m.service(Version::default()).spec.unwrap();
        assert_eq!(
            spec.args.as_slice(),
            ["$HOME", "%n", "\"q\"", "back\\slash", "a;b", "'"]
        );
        assert_eq!(spec.env.as_slice(), [("X", "$(rm -rf /) %h ` \\ \"")]);
        for bad in ["\\n", "\\r", "\\u0000", "\\u001b", "\\u007f", "\\u0085"] {
            let text = format!(r#"{{"name": "a", "exec": "/a", "env": {{"X": "a{bad}b"}}}}"#);
            assert_refused(&text, &["env \"X\": the value holds a control character"]);
        }
    }

    /// A UTF-8 byte order mark before a valid manifest is refused by name and place, not with
    /// serde's "expected value at line 1 column 1".
    #[test]
    fn a_byte_order_mark_is_named() {
        let text = "\u{feff}{\"name\": \"web\", \"exec\": \"/bin/web\"}";
        let message = refused(text);
        assert_eq!(
            message,
            "line 1 column 1: the manifest starts with a UTF-8 byte order mark (the bytes EF BB BF), \
             which JSON does not allow; save the file as UTF-8 without a BOM"
        );
    }

    /// A lone `\ud800` (or a lone low half) is refused with the escape, its line and column and
    /// what to write instead, not serde's "unexpected end of hex escape"; a whole pair is a
    /// character and is taken.
    #[test]
    fn a_lone_surrogate_escape_is_named() {
        let message = refused("{\"name\": \"web\",\n \"exec\": \"/bin/\\ud800\"}");
        assert!(
            message.starts_with(
                "line 2 column 16: the escape \\ud800 is half of a UTF-16 surrogate pair without \
                 its other half"
            ),
            "{message}"
        );
        assert_refused(
            r#"{"name": "web", "exec": "/bin/x", "args": ["\uDC00"]}"#,
            &[
                "line 1 column 45: the escape \\uDC00 is half",
                "\\ud800-\\udbff",
            ],
        );
        assert_refused(
            r#"{"name": "web", "exec": "/bin/x", "args": ["\ud800\u0041"]}"#,
            &["column 45: the escape \\ud800 is half"],
        );
        // An escaped backslash before "ud800" is no escape; serde's own refusal stands.
        let m = parse(r#"{"name": "web", "exec": "/bin/x", "args": ["\\ud800", "\ud83d\ude00"]}"#);
        assert_eq!(
            m.unwrap().service(Version::default()).spec.unwrap().args[1],
            "\u{1f600}"
        );
    }
}
