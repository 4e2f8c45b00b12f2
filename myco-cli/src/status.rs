//! `myco ls`, `myco nodes` and `myco status`: what the local daemon knows, read from its API. They
//! change nothing. With `--json` each prints the daemon's answer itself on one line, after checking
//! that it has the documented shape, so scripts get every field, including ones `myco` does not
//! show.

use crate::answers::{HealthAnswer, Nodes, Placed, Service, Services};
use crate::args::{Error, Flags};
use crate::client::{self, Request, QUERY_TIMEOUT, SOCKET_ENV};
use crate::output::{self, terminal_safe, Field, Value};
use pico_args::Arguments;
use std::path::PathBuf;

pub const LS_HELP: &str = "\
Usage: myco ls [--socket PATH] [--json]

Lists every service in the cluster's desired state, as the local myco-d holds it: its name, its
version (the clock it was signed with), the commit a flake is locked to (short rev; '-' for an
exec source), whether it is deployed or deleted (a tombstone, kept for a while after 'myco rm'),
how many boxes should run it, how its rollout does (done, rolling, or held with the box that
held it and why) and each placed box with its state ('previous' where the version before runs).

Options:
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json         Print myco-d's answer (GET /services) as one JSON line
  -h, --help     Print this help

Exit status: 0 listed; 1 myco-d failed (5xx) or answered garbage; 2 bad command line; 3 cannot
reach myco-d (not running, wrong --socket, no permission, no answer in 10 s); 4 myco-d refused
the request (4xx).
";

pub const NODES_HELP: &str = "\
Usage: myco nodes [--socket PATH] [--json]

Lists the cluster's members as the local myco-d sees them: node id, gossip address, state (alive,
suspect or dead), arch and zone. The node that answered is marked with '*'.

Options:
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json         Print myco-d's answer (GET /nodes) as one JSON line
  -h, --help     Print this help

Exit status: 0 listed; 1 myco-d failed (5xx) or answered garbage; 2 bad command line; 3 cannot
reach myco-d (not running, wrong --socket, no permission, no answer in 10 s); 4 myco-d refused
the request (4xx).
";

pub const STATUS_HELP: &str = "\
Usage: myco status [--socket PATH] [--json]

Prints the local myco-d's health: overall status (ok or degraded), its write-ahead log (ok or
failing), its disk reserve, its I/O backend, how many services it holds, how many members are
alive, and its node id. A degraded daemon is up but cannot accept deploys.

Options:
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json         Print myco-d's answer (GET /health) as one JSON line
  -h, --help     Print this help

Exit status: 0 healthy; 1 degraded (the health is still printed), or myco-d failed or answered
garbage; 2 bad command line; 3 cannot reach myco-d (not running, wrong --socket, no permission,
no answer in 10 s); 4 myco-d refused the request (4xx).
";

/// The flags every query takes.
struct QueryFlags {
    socket: PathBuf,
    json: bool,
}

impl QueryFlags {
    fn parse(args: Arguments, command: &'static str) -> Result<QueryFlags, Error> {
        let mut flags = Flags::new(args, command);
        let socket = flags.path("--socket")?;
        let json = flags.switch("--json");
        flags.finish()?;
        Ok(QueryFlags {
            socket: client::socket_path(socket, std::env::var_os(SOCKET_ENV)),
            json,
        })
    }
}

fn get(path: &'static str, what: &'static str) -> Request<'static> {
    Request {
        method: "GET",
        path,
        body: &[],
        what,
        timeout: QUERY_TIMEOUT,
    }
}

pub fn ls(args: Arguments) -> Result<(), Error> {
    let flags = QueryFlags::parse(args, "ls")?;
    let request = get("/services", "the service list");
    let body = client::call_ok(&flags.socket, &request)?;
    let services: Services = client::parse_json(&body, &request)?;
    if flags.json {
        return output::print_text(&client::json_line(&body)?);
    }
    let rows: Vec<Vec<String>> = services
        .services
        .iter()
        .map(|s| {
            let status = if s.deleted { "deleted" } else { "deployed" };
            vec![
                terminal_safe(&s.name),
                s.version.clock.to_string(),
                s.rev.as_deref().map_or("-".into(), terminal_safe),
                status.to_string(),
                s.replicas.to_string(),
                rollout(s),
                running_on(&s.placed_on),
            ]
        })
        .collect();
    let table = output::table(
        &[
            "NAME",
            "VERSION",
            "REV",
            "STATUS",
            "REPLICAS",
            "ROLLOUT",
            "RUNNING ON",
        ],
        &rows,
    );
    output::print_text(&table)?;
    // On stderr, so that stdout stays the table alone for whatever reads it.
    eprint!("{}", state_notes(&services.services));
    Ok(())
}

/// A line under the table, on stderr, for each state in it that does not explain itself.
fn state_notes(services: &[Service]) -> String {
    let shown = |state: &str| {
        services
            .iter()
            .any(|s| s.placed_on.iter().any(|p| p.state == state))
    };
    let mut notes = String::new();
    if shown("no-executor") {
        notes += "no-executor: this box runs no services (its myco-d runs with --executor none)\n";
    }
    if shown("unknown") {
        notes += "unknown: that box has reported no status yet (a box whose myco-d runs with \
                  --executor none never does)\n";
    }
    notes
}

/// `done`, `rolling`, or `held 3f2a09c1 crash-loop` (the box that held it, and why); `-` for a
/// tombstone or an older daemon.
fn rollout(s: &Service) -> String {
    let Some(r) = s.rollout.as_ref() else {
        return "-".into();
    };
    match (r.at.as_deref(), r.reason.as_deref()) {
        (Some(at), Some(reason)) if r.state == "held" => format!(
            "held {} {}",
            terminal_safe(at.get(..8).unwrap_or(at)),
            terminal_safe(reason)
        ),
        _ => terminal_safe(&r.state),
    }
}

/// `3f2a09c1 running, 11aa22bb previous`: each placed node's id, cut to 8 digits as `git` cuts
/// hashes, and what it reports; `previous` where the version before the placed one runs (a box
/// waiting for its wave, or one that held the rollout), so old and new show where both run.
fn running_on(placed: &[Placed]) -> String {
    let each = placed.iter().map(|p| {
        let id = p.id.get(..8).unwrap_or(&p.id);
        let state = match p.version.as_deref() {
            Some("previous") => "previous",
            _ => &p.state,
        };
        format!("{} {}", terminal_safe(id), terminal_safe(state))
    });
    let text = each.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

pub fn nodes(args: Arguments) -> Result<(), Error> {
    let flags = QueryFlags::parse(args, "nodes")?;
    let request = get("/nodes", "the member list");
    let body = client::call_ok(&flags.socket, &request)?;
    let nodes: Nodes = client::parse_json(&body, &request)?;
    if flags.json {
        return output::print_text(&client::json_line(&body)?);
    }
    // '*' in a first column of its own, as `git branch` marks the current branch, keeps every
    // other column one word.
    let peer = nodes
        .nodes
        .iter()
        .find(|n| !n.is_self && n.state == "alive")
        .map(|n| n.address.as_str());
    let rows: Vec<Vec<String>> = nodes
        .nodes
        .iter()
        .map(|n| {
            vec![
                if n.is_self { "*" } else { "" }.to_string(),
                terminal_safe(&n.id),
                terminal_safe(&if n.is_self {
                    shown_address(&n.address, peer)
                } else {
                    n.address.clone()
                }),
                terminal_safe(&n.state),
                terminal_safe(&n.arch),
                n.zone.to_string(),
            ]
        })
        .collect();
    output::print_text(&output::table(
        &["", "ID", "ADDRESS", "STATE", "ARCH", "ZONE"],
        &rows,
    ))
}

/// This box's address as `myco nodes` shows it. A daemon listening on a wildcard reports it as
/// bound (`[::]:7946`), which no peer can reach it at. Then the address this box sends from
/// towards `peer` (an alive member; the kernel's route, found by connecting a UDP socket, which
/// sends nothing) is the one that peer sees, and is shown with the wildcard's meaning after it.
fn shown_address(address: &str, peer: Option<&str>) -> String {
    let Ok(bound) = address.parse::<std::net::SocketAddr>() else {
        return address.to_string();
    };
    if !bound.ip().is_unspecified() {
        return address.to_string();
    }
    let all = if bound.is_ipv4() {
        "all IPv4 addresses"
    } else {
        "all addresses"
    };
    let port = bound.port();
    match peer.and_then(|p| p.parse().ok()).and_then(source_towards) {
        Some(ip) => format!("{} ({all})", std::net::SocketAddr::new(ip, port)),
        None => format!("({all}):{port}"),
    }
}

/// The source address the kernel picks to reach `peer`, or `None` without a route.
fn source_towards(peer: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let any: std::net::SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

pub fn status(args: Arguments) -> Result<(), Error> {
    let flags = QueryFlags::parse(args, "status")?;
    let request = get("/health", "the health check");
    let answer = client::call(&flags.socket, &request)?;
    // A degraded daemon answers 503 with its health; any other 503 is an error body.
    let degraded =
        answer.status == 503 && client::parse_json::<HealthAnswer>(&answer.body, &request).is_ok();
    if answer.status != 200 && !degraded {
        return Err(client::status_error(&answer, &request));
    }
    let health: HealthAnswer = client::parse_json(&answer.body, &request)?;
    if flags.json {
        output::print_text(&client::json_line(&answer.body)?)?;
    } else {
        let text = |s: &str| Value::Text(terminal_safe(s));
        let mut fields: Vec<Field> = vec![
            ("status", text(&health.status)),
            ("wal", text(&health.wal)),
            ("reserve", text(&health.reserve)),
        ];
        if let Some(why) = &health.reserve_why {
            fields.push(("reserve_why", text(why)));
        }
        fields.push(("io", text(&health.io)));
        if let Some(n) = health.services {
            fields.push(("services", Value::Number(n)));
        }
        if let Some(n) = health.peers_alive {
            fields.push(("peers_alive", Value::Number(n)));
        }
        if let Some(id) = &health.node_id {
            fields.push(("node_id", text(id)));
        }
        output::print(&fields, false)?;
    }
    if degraded {
        return Err(Error::Failed(format!(
            "myco-d is up but degraded (wal {}, reserve {}), so it cannot accept deploys; check \
             'journalctl -u myco-d' and the free space of its state directory",
            terminal_safe(&health.wal),
            terminal_safe(&health.reserve)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(states: &[&str]) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": "web",
            "version": {"clock": 1, "key_id": 1},
            "deleted": false,
            "replicas": states.len(),
            "placed_on": states
                .iter()
                .map(|s| serde_json::json!({"id": "aaaaaaaabbbbbbbb", "state": s}))
                .collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// `myco ls` explains `no-executor` and `unknown` under its table when they appear, and adds
    /// nothing when every state speaks for itself.
    #[test]
    fn unclear_states_are_explained_under_the_table() {
        let notes = state_notes(&[service(&["no-executor", "unknown"])]);
        assert!(
            notes.starts_with("no-executor: this box runs no services"),
            "{notes}"
        );
        assert!(
            notes.contains("\nunknown: that box has reported no status yet"),
            "{notes}"
        );
        assert_eq!(state_notes(&[service(&["running", "pending"])]), "");
    }

    /// A wildcard listen address reads as what it is; any other address is shown as it came.
    #[test]
    fn wildcard_addresses_read_as_all_addresses() {
        assert_eq!(shown_address("[::]:7946", None), "(all addresses):7946");
        assert_eq!(
            shown_address("0.0.0.0:7946", None),
            "(all IPv4 addresses):7946"
        );
        assert_eq!(shown_address("127.0.0.1:7946", None), "127.0.0.1:7946");
        assert_eq!(
            shown_address("[fd00::2]:7946", Some("127.0.0.1:7947")),
            "[fd00::2]:7946"
        );
    }

    /// With a peer, a wildcard shows the address that peer reaches this box at.
    #[test]
    fn wildcard_addresses_show_where_a_peer_reaches_this_box() {
        assert_eq!(
            shown_address("[::]:7946", Some("127.0.0.1:7947")),
            "127.0.0.1:7946 (all addresses)"
        );
    }
}
