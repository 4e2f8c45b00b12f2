//! `myco deploy` and `myco rm`: the commands that change the cluster's desired state. Each sends
//! one signed entry to the local daemon's `POST /deploy`, which stores it durably and gossips it.
//! The entry is signed here, by the same code as `myco sign`, or was signed earlier by `myco sign`
//! on the machine that keeps the operator key (`--entry`).
//!
//! The daemon's answer names the entry it stored; an answer for another name or version is a
//! daemon bug and is reported as a failure rather than shown as success.
//!
//! With `--wait`, the command then follows the service until it runs on every box placement
//! chose, or is removed (progress.rs).

use crate::answers::{self, Deployed};
use crate::args::{self, Error, Flags};
use crate::client::{self, Request, DEPLOY_TIMEOUT, SOCKET_ENV};
use crate::files;
use crate::output::{self, terminal_safe, Value};
use crate::progress::{self, Goal, Wait, FAILING_GRACE, WAIT_TIMEOUT_DEFAULT};
use crate::sign::{sign_manifest, sign_tombstone};
use myco_core::schema::entry::Entry;
use pico_args::Arguments;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEPLOY_HELP: &str = "\
Usage: myco deploy [MANIFEST] --operator-key FILE [--clock MS] [--wait [--timeout S]]
                   [--socket PATH] [--json]
       myco deploy --entry FILE [--wait [--timeout S]] [--socket PATH] [--json]

Builds a service entry from MANIFEST (default: myco.json), its flake reference locked to one
commit with 'nix flake metadata', and signs it with the operator key, exactly as 'myco sign'
does ('myco sign --help' for MYCO_NIX and MYCO_NIX_TIMEOUT_MS), then sends it to the local
myco-d, which stores it and gossips it to the cluster. With --entry, sends an entry file signed
earlier with 'myco sign', so the operator key can stay on another machine. Returns once myco-d
has stored the entry on disk (it answers within 30 s, 507 if its disk could not take the entry;
myco waits 35 s, so that answer arrives). The manifest format is described in docs/myco-json.md.

Options:
  --operator-key FILE  The cluster's operator key (mode 0600)
  --clock MS           The entry's version, in milliseconds since the Unix epoch (default: now).
                       Nodes keep the entry with the highest version
  --entry FILE         Send this signed entry file instead of signing a manifest; not with
                       MANIFEST, --operator-key or --clock
  --wait               After myco-d stored the entry, wait until the service runs on every
                       box placement chose (polls GET /services/NAME every 250 ms). On a
                       terminal, a progress line on stderr shows each box's state (not with
                       NO_COLOR); the final line goes to stderr. Fails early when no box is
                       eligible, or a box stays failed or restarting for 5 s
  --timeout S          With --wait: give up after S seconds (default 60)
  --socket PATH        myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json               Print myco-d's answer as one JSON line
  -h, --help           Print this help

The outcome is 'applied', or 'unchanged' when myco-d already held this version or a newer one.

Exit status: 0 stored (applied or unchanged), and with --wait running everywhere; 1 failed
(manifest, key or entry file refused, flake reference cannot be locked, myco-d failed with 5xx or answered garbage; with --wait:
no eligible box, a unit failing, or the timeout passed, though the entry stays stored);
2 bad command line; 3 cannot reach myco-d (not
running, wrong --socket, no permission, no answer in time); 4 myco-d refused the entry (4xx,
e.g. a signature from a key it does not trust), with its reason.
";

pub const RM_HELP: &str = "\
Usage: myco rm NAME --operator-key FILE [--clock MS] [--wait [--timeout S]] [--socket PATH]
               [--json]

Removes the service NAME from the cluster: signs a tombstone for it with the operator key and
sends it to the local myco-d, which stores it and gossips it; every node then stops the service.
The tombstone is the entry 'myco sign --delete' signs from the service's manifest (use that and
'myco deploy --entry' to keep the operator key offline). Like any entry it replaces the service
only if its version is higher: see the VERSION column of 'myco ls'.

Options:
  --operator-key FILE  The cluster's operator key (mode 0600)
  --clock MS           The tombstone's version, in milliseconds since the Unix epoch
                       (default: now)
  --wait               After myco-d stored the tombstone, wait until it shows the service
                       deleted with no placement (or no longer holds it)
  --timeout S          With --wait: give up after S seconds (default 60)
  --socket PATH        myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json               Print myco-d's answer as one JSON line
  -h, --help           Print this help

Exit status: 0 stored (applied or unchanged), and with --wait removed; 1 failed (key refused,
myco-d failed with 5xx or answered garbage; with --wait: deployed again, or the timeout
passed); 2 bad command line, including a NAME that is not a service name; 3 cannot reach myco-d; 4 myco-d refused the tombstone (4xx), with its reason.
";

/// What `myco deploy` sends.
enum Source {
    /// Sign this manifest now.
    Manifest {
        path: PathBuf,
        operator_key: PathBuf,
        clock: Option<u64>,
    },
    /// Send this file, signed earlier.
    EntryFile(PathBuf),
}

/// A `myco deploy` command line, checked before any file is read.
struct DeployFlags {
    source: Source,
    socket: PathBuf,
    json: bool,
    wait: Option<Wait>,
}

/// `--wait`, `--timeout S` and `--failing-grace-ms MS`: how to wait, or None for no waiting.
/// `--failing-grace-ms` is hidden (not in the help): only tests change how long a failing unit
/// is given, so that they do not wait out the real `FAILING_GRACE`.
fn parse_wait(
    wait: bool,
    timeout: Option<String>,
    failing_grace_ms: Option<String>,
    command: &str,
) -> Result<Option<Wait>, Error> {
    let failing_grace = match failing_grace_ms {
        None => FAILING_GRACE,
        Some(text) => Duration::from_millis(text.parse().map_err(|_| {
            Error::Usage(format!(
                "--failing-grace-ms must be a whole number of milliseconds, got '{text}'"
            ))
        })?),
    };
    let timeout = match timeout {
        None => WAIT_TIMEOUT_DEFAULT,
        Some(_) if !wait => {
            return Err(Error::Usage(format!(
                "--timeout says how long --wait waits, so it needs --wait; see 'myco {command} \
                 --help'"
            )))
        }
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds >= 1 => Duration::from_secs(seconds),
            _ => {
                return Err(Error::Usage(format!(
                    "--timeout must be a whole number of seconds, 1 or more, got '{text}'"
                )))
            }
        },
    };
    Ok(wait.then_some(Wait {
        timeout,
        failing_grace,
    }))
}

impl DeployFlags {
    fn parse(args: Arguments) -> Result<DeployFlags, Error> {
        let mut flags = Flags::new(args, "deploy");
        let operator_key = flags.path("--operator-key")?;
        let clock = flags.string("--clock")?;
        let entry = flags.path("--entry")?;
        let socket = flags.path("--socket")?;
        let json = flags.switch("--json");
        let wait = flags.switch("--wait");
        let timeout = flags.string("--timeout")?;
        let failing_grace_ms = flags.string("--failing-grace-ms")?;
        let manifest = flags.finish_with_path()?;
        let clock = clock.as_deref().map(args::parse_clock).transpose()?;
        let wait = parse_wait(wait, timeout, failing_grace_ms, "deploy")?;
        let source = match entry {
            Some(entry) => {
                let signing = [
                    (manifest.is_some(), "MANIFEST"),
                    (operator_key.is_some(), "--operator-key"),
                    (clock.is_some(), "--clock"),
                ];
                if let Some((_, what)) = signing.iter().find(|(given, _)| *given) {
                    return Err(Error::Usage(format!(
                        "--entry sends an entry signed earlier, so {what} has no use with it; \
                         pass either --entry FILE or [MANIFEST] --operator-key FILE"
                    )));
                }
                Source::EntryFile(entry)
            }
            None => Source::Manifest {
                path: manifest.unwrap_or_else(|| PathBuf::from("myco.json")),
                operator_key: flags.required(operator_key, "--operator-key (or --entry FILE)")?,
                clock,
            },
        };
        Ok(DeployFlags {
            source,
            socket: client::socket_path(socket, std::env::var_os(SOCKET_ENV)),
            json,
            wait,
        })
    }
}

pub fn deploy(args: Arguments) -> Result<(), Error> {
    let flags = DeployFlags::parse(args)?;
    let bytes = match &flags.source {
        Source::Manifest {
            path,
            operator_key,
            clock,
        } => sign_manifest(path, operator_key, *clock, false)?
            .bytes()
            .to_vec(),
        Source::EntryFile(path) => {
            let bytes = files::read_entry(path)?;
            if let Err(e) = Entry::decode(&bytes) {
                return Err(Error::Failed(format!(
                    "--entry '{}' is not a signed entry: {}; pass a file made by 'myco sign'",
                    path.display(),
                    e.message()
                )));
            }
            bytes
        }
    };
    post(&flags.socket, &bytes, "the deploy", flags.json)?;
    match flags.wait {
        Some(how) => {
            let name = Entry::decode(&bytes).expect("checked above").body.name;
            progress::wait(&flags.socket, name, Goal::Running, how)
        }
        None => Ok(()),
    }
}

pub fn rm(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "rm");
    let operator_key = flags.path("--operator-key")?;
    let clock = flags.string("--clock")?;
    let socket = flags.path("--socket")?;
    let json = flags.switch("--json");
    let wait = flags.switch("--wait");
    let timeout = flags.string("--timeout")?;
    let failing_grace_ms = flags.string("--failing-grace-ms")?;
    let name = flags.finish_with_service("NAME, the service to remove")?;
    let operator_key = flags.required(operator_key, "--operator-key")?;
    let clock = clock.as_deref().map(args::parse_clock).transpose()?;
    let wait = parse_wait(wait, timeout, failing_grace_ms, "rm")?;
    let socket = client::socket_path(socket, std::env::var_os(SOCKET_ENV));

    let entry = sign_tombstone(&name, &operator_key, clock)?;
    post(&socket, entry.bytes(), "the removal", json)?;
    match wait {
        Some(how) => progress::wait(&socket, &name, Goal::Removed, how),
        None => Ok(()),
    }
}

/// Posts one signed entry and reports the daemon's answer.
fn post(socket: &Path, entry: &[u8], what: &'static str, json: bool) -> Result<(), Error> {
    let sent = Entry::decode(entry).expect("the caller checked the entry");
    let request = Request {
        method: "POST",
        path: "/deploy",
        body: entry,
        what,
        timeout: DEPLOY_TIMEOUT,
    };
    let body = client::call_ok(socket, &request)?;
    let answer: Deployed = client::parse_json(&body, &request)?;
    let version = answers::Version {
        clock: sent.body.version.clock,
        key_id: sent.body.version.key_id,
    };
    if answer.name != sent.body.name || answer.version != version {
        return Err(Error::Failed(format!(
            "myco-d answered for '{}' version {}, but myco sent '{}' version {}; check that \
             myco and myco-d are the same version (myco --version, myco-d --version)",
            terminal_safe(&answer.name),
            answer.version.clock,
            sent.body.name,
            version.clock
        )));
    }
    if json {
        return output::print_text(&client::json_line(&body)?);
    }
    let fields = [
        ("name", Value::Text(answer.name)),
        ("clock", Value::Number(version.clock)),
        ("key_id", Value::Number(version.key_id.into())),
        ("tombstone", Value::Bool(sent.body.is_tombstone())),
        ("outcome", Value::Text(terminal_safe(&answer.outcome))),
    ];
    output::print(&fields, false)
}
