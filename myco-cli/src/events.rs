//! `myco events`: follows the local daemon's `GET /stream` (Server-Sent Events) and prints each
//! event as it arrives, readable or as its JSON data line. When the stream ends (the daemon
//! restarted, or the connection was lost) it reconnects with `Last-Event-ID`, so nothing the
//! daemon still holds is lost; the daemon says `missed` or `reset` when it cannot replay.

use crate::args::{Error, Flags};
use crate::client::{self, Request, SOCKET_ENV};
use crate::output::terminal_safe;
use myco_cli::http;
use pico_args::Arguments;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const EVENTS_HELP: &str = "\
Usage: myco events [--socket PATH] [--json]

Follows the local myco-d's events as they happen: deploys, entries changed by gossip, units
placed or removed here and their health, members joining, suspected and dead, refused frames
and the WAL recovery at start-up. On connecting it says on stderr which daemon it follows; then
one line per event on stdout: when it happened (UTC), its kind and its fields. When the
connection ends, myco reconnects and asks for the events after the last one it printed; a
'missed' line says how many the daemon no longer held, a 'reset' line that it restarted.

Options:
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  --json         Print each event's JSON data as one line
  -h, --help     Print this help

Exit status: 0 only when interrupted (it follows until then); 1 myco-d failed (5xx, such as 503 for too many followers)
or answered garbage; 2 bad command line; 3 cannot reach myco-d (not running, wrong --socket, no
permission, or the stream ended and reconnecting failed); 4 myco-d refused the request (4xx).
";

/// Reconnects in a row without an event in between before giving up, `RECONNECT_DELAY` apart.
const RECONNECTS_MAX: u32 = 5;
/// The daemon sends a comment every 15 s; this much silence means the connection is lost.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(45);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// An event block longer than this is not something myco-d sends.
const EVENT_BYTES_MAX: usize = 64 * 1024;

const REQUEST: Request<'static> = Request {
    method: "GET",
    path: "/stream",
    body: b"",
    what: "the event stream",
    timeout: SILENCE_TIMEOUT,
};

pub fn events(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "events");
    let socket = flags.path("--socket")?;
    let json = flags.switch("--json");
    flags.finish()?;
    let socket = client::socket_path(socket, std::env::var_os(SOCKET_ENV));
    let mut out = io::stdout().lock();
    follow(&socket, json, &mut out)
}

/// Follows the stream until reconnecting fails; returns only with an error. The first
/// connection must work; after that, a lost stream is retried a few times a second apart, which
/// covers a daemon restart.
fn follow(socket: &Path, json: bool, out: &mut impl Write) -> Result<(), Error> {
    let mut last_id: Option<u64> = None;
    let mut connected = false;
    let mut reconnects = 0;
    loop {
        match follow_once(socket, json, &mut last_id, &mut connected, out) {
            Ok(true) => reconnects = 0,
            Ok(false) => reconnects += 1,
            Err(Error::Unreachable(_)) if connected && reconnects < RECONNECTS_MAX => {
                reconnects += 1
            }
            Err(e) => return Err(e),
        }
        if reconnects >= RECONNECTS_MAX {
            return Err(Error::Unreachable(format!(
                "the event stream from myco-d at '{}' ended and {} reconnects brought no event; \
                 check 'systemctl status myco-d' and 'journalctl -u myco-d'",
                socket.display(),
                reconnects
            )));
        }
        std::thread::sleep(RECONNECT_DELAY);
    }
}

/// One connection: prints events until it ends. Returns whether any event was printed.
fn follow_once(
    socket: &Path,
    json: bool,
    last_id: &mut Option<u64>,
    connected: &mut bool,
    out: &mut impl Write,
) -> Result<bool, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach myco-d at '{}': {e}; is myco-d running? check 'systemctl status \
             myco-d' and --socket (or {SOCKET_ENV})",
            socket.display()
        ))
    })?;
    let mut request = String::from("GET /stream HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(id) = last_id {
        request += &format!("Last-Event-ID: {id}\r\n");
    }
    request += "\r\n";
    let lost = |e: io::Error| {
        Error::Unreachable(format!(
            "the connection to myco-d at '{}' failed: {e}; check 'journalctl -u myco-d'",
            socket.display()
        ))
    };
    stream.write_all(request.as_bytes()).map_err(lost)?;
    stream
        .set_read_timeout(Some(SILENCE_TIMEOUT))
        .map_err(lost)?;
    let mut buf = Vec::new();
    match http::read_until(&mut buf, |chunk| stream.read(chunk), http::parse_head) {
        Ok(head) if head.status == 200 => drop(buf.drain(..head.len)),
        Ok(_) => {
            // An error answer has a length; read to its end, which is the connection's.
            let _ = stream.read_to_end(&mut buf);
            return Err(not_a_stream(&buf));
        }
        // Silence, a reset or an early close before the head: whatever came explains it.
        Err(_) => return Err(not_a_stream(&buf)),
    }
    eprintln!("{}", following(socket, *last_id, *connected));
    *connected = true;
    print_events(&mut stream, buf, json, last_id, out)
}

/// Prints the events of a stream whose head has been read, `buf` holding what came after it,
/// until the stream ends. Returns whether any event was printed.
fn print_events(
    stream: &mut UnixStream,
    mut buf: Vec<u8>,
    json: bool,
    last_id: &mut Option<u64>,
    out: &mut impl Write,
) -> Result<bool, Error> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut printed = false;
    loop {
        while let Some(end) = find(&buf, b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            printed |= print_block(&String::from_utf8_lossy(&block), json, last_id, out)?;
        }
        if buf.len() > EVENT_BYTES_MAX {
            return Err(Error::Failed(
                "myco-d sent an event longer than 64 KiB; check that myco and myco-d are the \
                 same version"
                    .into(),
            ));
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Silence past the heartbeat, or a reset: reconnect.
            Err(_) => 0,
        };
        if n == 0 {
            return Ok(printed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Prints one SSE block if it is an event, and notes its id. Returns whether it printed.
fn print_block(
    text: &str,
    json: bool,
    last_id: &mut Option<u64>,
    out: &mut impl Write,
) -> Result<bool, Error> {
    // A client that has seen no event yet still knows where the stream began, so that a
    // reconnect after a restart is told it missed the restart (`reset`).
    if let Some(next) = text.strip_prefix(": myco events from id ") {
        if last_id.is_none() {
            *last_id = next.trim().parse::<u64>().ok().map(|n| n.saturating_sub(1));
        }
    }
    let Some(event) = parse_event(text) else {
        return Ok(false);
    };
    if let Some(id) = event.id {
        *last_id = Some(id);
    }
    let line = if json {
        format!("{}\n", event.data)
    } else {
        readable(&event)
    };
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Failed(format!("cannot write to stdout: {e}; check the pipe")))?;
    Ok(true)
}

/// The line that says what this connection follows, so that a quiet stream does not look hung.
fn following(socket: &Path, last_id: Option<u64>, reconnect: bool) -> String {
    let socket = terminal_safe(&socket.display().to_string());
    match (reconnect, last_id) {
        (false, _) => format!(
            "myco: following the events of myco-d at '{socket}' from now on (Ctrl-C to stop)"
        ),
        (true, Some(id)) => {
            format!("myco: reconnected to myco-d at '{socket}'; following the events after id {id}")
        }
        (true, None) => format!("myco: reconnected to myco-d at '{socket}'"),
    }
}

/// The error for an answer that is not a 200 event stream.
fn not_a_stream(bytes: &[u8]) -> Error {
    client::stream_error(bytes, &REQUEST)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
struct Event {
    id: Option<u64>,
    name: String,
    data: String,
}

/// One SSE block: `id:`, `event:` and `data:` fields; comments (`:`) and unknown fields are
/// skipped. A block with no data (a heartbeat) is no event.
fn parse_event(block: &str) -> Option<Event> {
    let mut event = Event {
        id: None,
        name: "message".into(),
        data: String::new(),
    };
    let mut has_data = false;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = value.parse().ok(),
            "event" => event.name = value.into(),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data += value;
                has_data = true;
            }
            _ => {}
        }
    }
    has_data.then_some(event)
}

/// `TIME KIND key=value ...`, with nested objects flattened (`version.clock=7`) and every string
/// made terminal-safe. The id is left out (it is for reconnecting; `--json` has it), and so is an
/// entry's key hash when the daemon named its service.
fn readable(event: &Event) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(&event.data);
    let time = match &parsed {
        Ok(serde_json::Value::Object(fields)) => fields.get("time").and_then(|t| t.as_str()),
        _ => None,
    };
    // RFC 3339 with milliseconds is 24 characters; events without a time (missed, reset) line up.
    let mut line = format!(
        "{:<24} {:<9}",
        terminal_safe(time.unwrap_or("-")),
        terminal_safe(&event.name)
    );
    match parsed {
        Ok(serde_json::Value::Object(fields)) => {
            let named = fields.contains_key("name");
            for (key, value) in &fields {
                let hidden = key == "id" || key == "time" || (named && key == "key_hash");
                if !hidden {
                    flatten(&mut line, key, value);
                }
            }
        }
        _ => {
            line.push(' ');
            line += &terminal_safe(&event.data);
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

fn flatten(line: &mut String, key: &str, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (k, v) in fields {
                flatten(line, &format!("{key}.{k}"), v);
            }
        }
        serde_json::Value::String(s) => {
            *line += &format!(" {}={}", terminal_safe(key), terminal_safe(s))
        }
        other => *line += &format!(" {}={other}", terminal_safe(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Fields, comments and heartbeats parse as SSE says; a heartbeat is no event.
    #[test]
    fn blocks_parse_into_events() {
        let e = parse_event("id: 7\nevent: deploy\ndata: {\"id\":7}\n\n").unwrap();
        assert_eq!(
            e,
            Event {
                id: Some(7),
                name: "deploy".into(),
                data: "{\"id\":7}".into()
            }
        );
        assert!(parse_event(": keep-alive\n\n").is_none());
        let missed = parse_event("event: missed\ndata: {\"missed\":3,\"next\":9}\n\n").unwrap();
        assert_eq!(missed.id, None);
        assert_eq!(
            readable(&missed),
            format!("{:<24} missed    missed=3 next=9\n", "-")
        );
    }

    /// Readable lines flatten nested fields and escape control characters from the daemon.
    #[test]
    fn readable_lines_are_flat_and_terminal_safe() {
        let e = Event {
            id: Some(12),
            name: "deploy".into(),
            data: r#"{"id":12,"time":"2026-12-02T06:35:51.921Z","name":"w\u001beb","outcome":"applied","version":{"clock":7,"key_id":1}}"#
                .into(),
        };
        assert_eq!(
            readable(&e),
            "2026-12-02T06:35:51.921Z deploy    name=w\\u{1b}eb outcome=applied version.clock=7 version.key_id=1\n"
        );
    }

    /// An entry the daemon named shows its service, not its key hash; one it could not name
    /// (the store no longer held it) keeps the hash, the only thing that identifies it.
    #[test]
    fn entries_read_by_service_name() {
        let entry = |data: &str| Event {
            id: Some(3),
            name: "entry".into(),
            data: data.into(),
        };
        let named = entry(
            r#"{"id":3,"time":"2026-12-02T06:35:51.921Z","name":"web","key_hash":"0000000000000007"}"#,
        );
        assert_eq!(
            readable(&named),
            "2026-12-02T06:35:51.921Z entry     name=web\n"
        );
        let unnamed =
            entry(r#"{"id":3,"time":"2026-12-02T06:35:51.921Z","key_hash":"0000000000000007"}"#);
        assert_eq!(
            readable(&unnamed),
            "2026-12-02T06:35:51.921Z entry     key_hash=0000000000000007\n"
        );
    }

    /// The line on connecting says which daemon is followed, and after a reconnect from where.
    #[test]
    fn connecting_says_what_it_follows() {
        let socket = Path::new("/run/myco/myco.sock");
        assert_eq!(
            following(socket, None, false),
            "myco: following the events of myco-d at '/run/myco/myco.sock' from now on (Ctrl-C to stop)"
        );
        assert_eq!(
            following(socket, Some(41), true),
            "myco: reconnected to myco-d at '/run/myco/myco.sock'; following the events after id 41"
        );
    }

    /// After the stream ends, `follow` reconnects with the last id it printed; when the daemon
    /// is gone for good it ends with exit 3.
    #[test]
    fn follow_reconnects_with_last_event_id_then_gives_up() {
        let dir = std::env::temp_dir().join(format!("myco-events-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for batch in [
                ": myco events from id 1\n\nid: 1\nevent: deploy\ndata: {\"id\":1,\"name\":\"web\"}\n\n: keep-alive\n\nid: 2\nevent: member\ndata: {\"id\":2,\"kind\":\"dead\"}\n\n",
                "id: 3\nevent: unit\ndata: {\"id\":3,\"state\":\"running\"}\n\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut head = [0u8; 1024];
                let n = s.read(&mut head).unwrap();
                requests.push(String::from_utf8_lossy(&head[..n]).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{batch}"
                );
                s.write_all(answer.as_bytes()).unwrap();
            }
            drop(listener);
            requests
        });
        let mut out = Vec::new();
        let error = follow(&socket, true, &mut out).unwrap_err();
        let requests = server.join().unwrap();
        assert_eq!(error.exit_code(), 3, "{}", error.message());
        assert!(!requests[0].contains("Last-Event-ID"), "{}", requests[0]);
        assert!(
            requests[1].contains("Last-Event-ID: 2\r\n"),
            "{}",
            requests[1]
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"name\":\"web\"}\n{\"id\":2,\"kind\":\"dead\"}\n{\"id\":3,\"state\":\"running\"}\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
