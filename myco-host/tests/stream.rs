//! `GET /stream` on a running `myco-d`, followed by `curl -N` as an operator would: events after
//! a deploy, replay after a reconnect with `Last-Event-ID`, a reset notice for an id from before a
//! restart, the subscriber bound, and a subscriber that never reads not holding up the others.

use myco_testkit::daemon::Daemon;
use myco_testkit::entries::{entry, tombstone};
use myco_testkit::keys::operator;
use myco_testkit::wait_until;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A `curl -N` following `/stream`, its output lines arriving on a channel.
struct Follower {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(d: &Daemon, last_event_id: Option<u64>) -> Follower {
        let mut c = Command::new("curl");
        c.args(["-sN", "--unix-socket"])
            .arg(&d.socket)
            .arg("http://localhost/stream");
        if let Some(id) = last_event_id {
            c.arg("-H").arg(format!("Last-Event-ID: {id}"));
        }
        let mut child = c.stdout(Stdio::piped()).spawn().expect("curl runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `what`; everything read is kept in `seen`.
    fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {what:?}; the stream said {:?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_of(data: &str) -> u64 {
    let rest = data.split("\"id\":").nth(1).expect("data has an id");
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A subscriber sees the recovery at start-up when it asks with an id from no run of this
/// daemon (0), a deploy as it happens, and after reconnecting with the id it saw last, only what
/// came after.
#[test]
fn stream_shows_deploys_and_replays_after_last_event_id() {
    let op = operator();
    let mut d = Daemon::new("stream-deploy", &op, 21);
    d.start(d.command(&["--reserve-bytes", "0"]));
    let mut f = Follower::start(&d, Some(0));
    f.wait_for(": myco events from id ");
    f.wait_for("event: reset");
    let recovery = f.wait_for("\"records\":");
    let first = id_of(&recovery);
    assert!(f
        .seen
        .iter()
        .any(|l| *l == format!("data: {{\"last_event_id\":0,\"next\":{first}}}")));
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    // The deploy's event, not the entry's, which names the service too.
    let web = f.wait_for("\"name\":\"web\",\"version\"");
    assert!(web.starts_with("data: "), "{web}");
    assert!(web.contains("\"outcome\":\"applied\""), "{web}");
    assert!(f.seen.iter().any(|l| l == "event: deploy"), "{:?}", f.seen);
    let web_id = id_of(&web);
    assert!(f.seen.iter().any(|l| *l == format!("id: {web_id}")));
    drop(f);

    assert_eq!(d.deploy(&entry(&op, "db", 1)).0, 200);
    let mut again = Follower::start(&d, Some(web_id));
    let db = again.wait_for("\"name\":\"db\"");
    assert!(id_of(&db) > web_id);
    assert!(
        again.seen.iter().all(|l| !l.contains("\"name\":\"web\"")),
        "events up to Last-Event-ID are not sent again: {:?}",
        again.seen
    );

    // An id beyond the newest is from another run: the client is told, then gets it all.
    let mut stale = Follower::start(&d, Some(u64::MAX - 1));
    stale.wait_for("event: reset");
    stale.wait_for("\"records\":");
    stale.wait_for("\"name\":\"db\"");
}

/// Streams beyond the bound are refused, a subscriber that never reads does not delay /health,
/// and the bound frees again when subscribers leave.
#[test]
fn subscribers_are_bounded_and_a_stuck_one_blocks_nobody() {
    let op = operator();
    let mut d = Daemon::new("stream-bound", &op, 22);
    d.start(d.command(&["--reserve-bytes", "0"]));
    // Eight raw subscribers that send the request and never read a byte.
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(b"GET /stream HTTP/1.1\r\nLast-Event-ID: 0\r\n\r\n")
            .unwrap();
        stuck.push(s);
    }
    // More events than their socket buffers hold (checked below): the daemon must hold back.
    for i in 0..1000 {
        let name = format!("{i:04}{}", "s".repeat(59));
        assert_eq!(d.deploy(&entry(&op, &name, 1)).0, 200);
    }
    let started = Instant::now();
    let (status, body) = d.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(d.metric("myco_api_streams"), 8.0);
    let (status, body) = d.get("/stream");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many /stream subscribers"), "{body}");

    // The stuck subscribers still get their stream, in order, when they read at last.
    let mut first = stuck.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&text).contains(&format!("\"name\":\"0999{}\"", "s".repeat(59)))
    {
        let n = first.read(&mut buf).expect("the stream goes on");
        assert!(n > 0, "the stream ended early");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"));
    assert!(!text.contains("Content-Length"));
    assert!(
        text.len() > 212_992,
        "more than a socket buffer was streamed: {}",
        text.len()
    );
    drop(first);
    drop(stuck);
    wait_until(
        Duration::from_secs(5),
        "a stream slot is free again",
        || {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(b"GET /stream HTTP/1.1\r\n\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
        },
    );
}

/// A subscriber that falls further behind than the ring holds is told how many events it missed
/// and goes on from the oldest the daemon still has.
#[test]
fn a_subscriber_overtaken_by_the_ring_is_told_what_it_missed() {
    let op = operator();
    let mut d = Daemon::new("stream-missed", &op, 23);
    d.start(d.command(&["--reserve-bytes", "0"]));
    let allocations = d.metric("myco_heap_allocations_since_ready_total");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nLast-Event-ID: 0\r\n\r\n")
        .unwrap();
    // Two events a deploy (entry, deploy): 6,000, well past the 4,096 held.
    for clock in 1..=3 {
        for i in 0..1000 {
            let name = format!("m{i}");
            assert_eq!(d.deploy(&entry(&op, &name, clock)).0, 200);
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    let last = "\"name\":\"m999\",\"version\":{\"clock\":3";
    while !String::from_utf8_lossy(&text).contains(last) {
        let n = s.read(&mut buf).expect("the stream goes on");
        assert!(n > 0, "the stream ended early");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    let notice = text
        .lines()
        .skip_while(|l| *l != "event: missed")
        .nth(1)
        .expect("an event: missed notice");
    assert!(notice.starts_with("data: {\"missed\":"), "{notice}");
    let missed: u64 = notice["data: {\"missed\":".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ids = text.lines().filter(|l| l.starts_with("id: ")).count() as u64;
    // Every event is either received or counted as missed: 1 recovery + 6,000 (Last-Event-ID 0
    // is from no run, so the stream starts at this run's first event).
    assert_eq!(ids + missed, 6_001, "received {ids}, missed {missed}");
    // Streaming, overtaking and the missed notice allocate nothing after start-up.
    assert_eq!(
        d.metric("myco_heap_allocations_since_ready_total"),
        allocations
    );
}

/// A stand-in `systemctl` that reports every unit running (as in tests/executor.rs).
/// With the executor on, a deploy is followed by the unit's placement and its health, and a
/// removal by the unit's removal.
#[test]
fn stream_shows_placements_and_unit_health() {
    let op = operator();
    let mut d = Daemon::new("stream-units", &op, 24);
    d.start(d.executor_command(&[]));
    let mut f = Follower::start(&d, None);
    f.wait_for(": myco events from id");
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    f.wait_for("\"name\":\"web\",\"kind\":\"placed\"");
    f.wait_for("\"name\":\"web\",\"state\":\"running\"");
    assert_eq!(d.deploy(&tombstone(&op, "web", 2)).0, 200);
    f.wait_for("\"name\":\"web\",\"kind\":\"removed\"");
    assert!(f.seen.iter().any(|l| l == "event: placement"));
    assert!(f.seen.iter().any(|l| l == "event: unit"));
}

/// A quiet stream gets `: keep-alive` comments, here every 200 ms instead of 15 s.
#[test]
fn a_quiet_stream_gets_heartbeats() {
    let op = operator();
    let mut d = Daemon::new("stream-heartbeat", &op, 25);
    d.start(d.command(&["--reserve-bytes", "0", "--stream-heartbeat-ms", "200"]));
    let mut f = Follower::start(&d, None);
    f.wait_for(": myco events from id");
    f.wait_for(": keep-alive");
    f.wait_for(": keep-alive");
    assert!(
        f.seen.iter().all(|l| !l.starts_with("id: ")),
        "no events happened: {:?}",
        f.seen
    );
}

/// The request deadline (10 s; 300 ms here through the hidden `--request-timeout-ms`) closes
/// idle connections, not streams: once it has closed an idle connection opened beside the stream,
/// the stream still carries an event.
#[test]
fn a_stream_outlives_the_request_deadline() {
    let op = operator();
    let mut d = Daemon::new("stream-deadline", &op, 26);
    d.start(d.command(&["--reserve-bytes", "0", "--request-timeout-ms", "300"]));
    let mut f = Follower::start(&d, None);
    f.wait_for(": myco events from id");
    let mut idle = UnixStream::connect(&d.socket).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the idle connection times out",
        || d.metric("myco_api_timeouts_total") >= 1.0,
    );
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(idle.read(&mut [0; 64]).unwrap(), 0, "the daemon closed it");
    assert_eq!(d.deploy(&entry(&op, "late", 1)).0, 200);
    f.wait_for("\"name\":\"late\"");
}
