//! `health` in myco.json: one check (`http` with `port`, `tcp`, or `exec`) and its schedule,
//! read wide and checked here with messages naming the field; the core's rules
//! (`Health::valid`) judge the result again when the entry is encoded.

use super::{bounded, error, ManifestError};
use myco_core::config::HEALTH_ARGS_MAX;
use myco_core::schema::entry::{
    Check, Health, HEALTH_FAILURES_MAX, HEALTH_INTERVAL_S_MAX, HEALTH_TIMEOUT_S_MAX,
};
use serde::Deserialize;

/// The schedule when the manifest gives none: a check every 10 s, 2 s to answer, and 3 failures
/// in a row (30 s of a service that does not answer) before it is unhealthy.
pub const INTERVAL_S_DEFAULT: u16 = 10;
pub const TIMEOUT_S_DEFAULT: u16 = 2;
pub const FAILURES_DEFAULT: u8 = 3;

/// `health` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    http: Option<String>,
    port: Option<u64>,
    tcp: Option<u64>,
    exec: Option<Vec<String>>,
    interval_s: Option<u64>,
    timeout_s: Option<u64>,
    failures: Option<u64>,
}

/// What the check does, owned.
enum Kind {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Exec { argv: Vec<String> },
}

/// A checked `health`.
pub(super) struct HealthSpec {
    kind: Kind,
    interval_s: u16,
    timeout_s: u16,
    failures: u8,
}

impl HealthSpec {
    /// Checks `raw`: exactly one kind of check, each number in its bounds.
    pub(super) fn check(raw: &RawHealth) -> Result<HealthSpec, ManifestError> {
        let kind = kind(raw)?;
        let max = HEALTH_INTERVAL_S_MAX.into();
        let interval_s = within("interval_s", raw.interval_s, INTERVAL_S_DEFAULT.into(), max)?;
        let timeout_max = u64::from(HEALTH_TIMEOUT_S_MAX).min(interval_s);
        let timeout_default = u64::from(TIMEOUT_S_DEFAULT).min(interval_s);
        let timeout_s = raw.timeout_s.unwrap_or(timeout_default);
        if !(1..=timeout_max).contains(&timeout_s) {
            return Err(error(format!(
                "health.timeout_s must be 1 to {HEALTH_TIMEOUT_S_MAX} seconds and at most \
                 health.interval_s ({interval_s}), got {timeout_s}"
            )));
        }
        let max = HEALTH_FAILURES_MAX.into();
        let failures = within("failures", raw.failures, FAILURES_DEFAULT.into(), max)?;
        Ok(HealthSpec {
            kind,
            interval_s: interval_s as u16,
            timeout_s: timeout_s as u16,
            failures: failures as u8,
        })
    }

    /// The entry's health check, borrowing from this.
    pub(super) fn spec(&self) -> Option<Health<'_>> {
        let check = match &self.kind {
            Kind::Http { path, port } => Check::Http { path, port: *port },
            Kind::Tcp { port } => Check::Tcp { port: *port },
            Kind::Exec { argv } => Check::Exec {
                argv: bounded(argv.iter().map(String::as_str))?,
            },
        };
        Some(Health {
            check,
            interval_s: self.interval_s,
            timeout_s: self.timeout_s,
            failures: self.failures,
        })
    }
}

/// The one kind of check `raw` names.
fn kind(raw: &RawHealth) -> Result<Kind, ManifestError> {
    let port = |field: &str, p: u64| {
        u16::try_from(p).ok().filter(|&p| p != 0).ok_or_else(|| {
            error(format!(
                "health.{field} must be a port, 1 to 65535, got {p}"
            ))
        })
    };
    match (&raw.http, raw.tcp, &raw.exec) {
        (Some(path), None, None) => {
            let Some(p) = raw.port else {
                return Err(error(format!(
                    "health.http {path:?} needs health.port, the port the service answers on"
                )));
            };
            Ok(Kind::Http {
                path: path.clone(),
                port: port("port", p)?,
            })
        }
        (None, Some(_), None) | (None, None, Some(_)) if raw.port.is_some() => Err(error(
            "health.port goes with health.http; a tcp check names its port as \"tcp\"".into(),
        )),
        (None, Some(p), None) => Ok(Kind::Tcp {
            port: port("tcp", p)?,
        }),
        (None, None, Some(argv)) if argv.is_empty() || argv.len() > HEALTH_ARGS_MAX => {
            Err(error(format!(
                "health.exec has {} words; give 1 to {HEALTH_ARGS_MAX}: the executable's \
                 absolute path, then its arguments",
                argv.len()
            )))
        }
        (None, None, Some(argv)) => Ok(Kind::Exec { argv: argv.clone() }),
        _ => Err(error(
            "health must name exactly one check: \"http\" (with \"port\"), \"tcp\" or \"exec\""
                .into(),
        )),
    }
}

/// `value` (or `default`) when within `1..=max`, else an error naming `health.<field>`.
fn within(field: &str, value: Option<u64>, default: u64, max: u64) -> Result<u64, ManifestError> {
    let v = value.unwrap_or(default);
    if (1..=max).contains(&v) {
        Ok(v)
    } else {
        Err(error(format!("health.{field} must be 1 to {max}, got {v}")))
    }
}
