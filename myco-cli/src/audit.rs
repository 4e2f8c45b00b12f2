//! `myco audit`: prints this box's audit log (one line per deployment outcome: built, started,
//! build-failed, removed, rolled back) from the local daemon's `GET /audit`, as a table line per
//! outcome or, with `--json`, the JSON lines the daemon wrote; `--follow` keeps printing as
//! outcomes come. The answer streams like `myco logs`', and is read the same way.

use crate::args::{Error, Flags};
use crate::client::{self, SOCKET_ENV};
use crate::logs::{self, Printer};
use pico_args::Arguments;
use serde_json::Value;
use std::io::{self, IsTerminal};

pub const AUDIT_HELP: &str = "\
Usage: myco audit [--json] [--follow] [--lines N] [--socket PATH]

Prints the audit log of this box: one line for each deployment outcome it applied (built,
started, rewritten, build-failed, removed, rolled-back), with the time, service, version, signing key id,
entry digest, locked flake reference, rev, narHash and store path, as myco-d's GET /audit serves
it, and exits at its end. With --follow, keeps printing new outcomes until interrupted.

Options:
  --json         Print the log's JSON lines as written (fields not known are null)
  -f, --follow   Keep printing outcomes as they happen
  -n, --lines N  Print only the last N lines, 0 to 10000 (default 100)
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  -h, --help     Print this help

Exit status: 0 printed (or, with --follow, interrupted); 1 myco-d failed (5xx) or answered
garbage; 2 bad command line; 3 cannot reach myco-d; 4 myco-d refused (4xx): this box runs no
services, so it keeps no audit log.
";

pub fn audit(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "audit");
    let json = flags.switch("--json");
    let (follow, lines) = logs::follow_and_lines(&mut flags)?;
    let socket = flags.path("--socket")?;
    flags.finish()?;
    let mut target = format!("/audit?follow={follow}");
    if let Some(text) = lines {
        target += &format!("&lines={}", logs::lines_value(&text)?);
    }
    let socket = client::socket_path(socket, std::env::var_os(SOCKET_ENV));
    let stdout = io::stdout();
    let render: Option<fn(&str) -> String> = if json { None } else { Some(render) };
    let printer = Printer::new(stdout.is_terminal(), render);
    logs::stream(&socket, &target, follow, printer, &mut stdout.lock())
}

/// One audit line for a person: `TIME  OUTCOME  SERVICE  vCLOCK key K  entry DIGEST` and the
/// flake and store path when known. A line that is not an audit record is shown as it came.
fn render(line: &str) -> String {
    let Ok(Value::Object(r)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let number = |k: &str| r.get(k).and_then(Value::as_u64).map(|n| n.to_string());
    let mut out = format!(
        "{}  {:<12}  {}",
        text("time"),
        text("outcome"),
        text("service")
    );
    if let Some(clock) = number("version") {
        out += &format!("  v{clock}");
    }
    if let Some(key) = number("key_id") {
        out += &format!(" key {key}");
    }
    if let Some(Value::String(d)) = r.get("entry") {
        out += &format!("  entry {d}");
    }
    for (key, label) in [("ref", "ref"), ("rev", "rev"), ("store_path", "out")] {
        if let Some(Value::String(v)) = r.get(key) {
            out += &format!("  {label} {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record reads as one line with its known fields; null fields are left out; other text
    /// passes as it came.
    #[test]
    fn renders_records_for_people() {
        let line = r#"{"time":"2026-12-02T03:55:28.123Z","service":"web","version":3,"key_id":7,"entry":"00000000000000ab","ref":null,"rev":null,"nar_hash":null,"store_path":null,"outcome":"started"}"#;
        assert_eq!(
            render(line),
            "2026-12-02T03:55:28.123Z  started       web  v3 key 7  entry 00000000000000ab"
        );
        assert_eq!(render("not json"), "not json");
    }
}
