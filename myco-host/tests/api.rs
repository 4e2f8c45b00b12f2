//! The API at full size and under abuse: `/services` with the store full (longer than a
//! connection's answer buffer, so it goes out in chunks) read by the kit's client, curl over
//! HTTP/1.1 and HTTP/1.0 and `myco ls`; and `/health` answering while more slow clients than
//! there are connection slots trickle their requests.

use myco_core::config::{NAME_BYTES_MAX, SERVICES_MAX};
use myco_testkit::bins;
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::entry;
use myco_testkit::http::{curl, request};
use myco_testkit::keys::operator;
use myco_testkit::run::run;
use myco_testkit::trickle::Tricklers;
use myco_testkit::wait_until;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Service `i`'s name, as long as a name may be, so the listing is long.
fn long_name(i: usize) -> String {
    let name = format!("s{i:04}-{}", "a".repeat(NAME_BYTES_MAX));
    name[..NAME_BYTES_MAX].to_string()
}

/// Deploys `SERVICES_MAX` services with the longest names, from a few clients at once.
fn fill_the_store(d: &Daemon, op: &myco_core::crypto::SigningKey) {
    const CLIENTS: usize = 8;
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            s.spawn(move || {
                for i in (client..SERVICES_MAX).step_by(CLIENTS) {
                    let answer =
                        request(&d.socket, "POST", "/deploy", &entry(op, &long_name(i), 5))
                            .expect("the API answers");
                    assert_eq!(answer.status, 200, "deploy {i}: {}", answer.body);
                }
            });
        }
    });
}

/// The names in one `/services` answer, checked to be each listed once.
#[track_caller]
fn names(body: &Value) -> BTreeSet<String> {
    let services = body["services"].as_array().expect("a services array");
    let names: BTreeSet<String> = services
        .iter()
        .map(|s| s["name"].as_str().expect("a name").to_string())
        .collect();
    assert_eq!(names.len(), services.len(), "a service listed twice");
    names
}

fn myco(socket: &Path, args: &[&str]) -> String {
    let mut command = Command::new(bins::cli());
    command.args(args).arg("--socket").arg(socket);
    run(command).ok().to_string()
}

/// With the store at its capacity of `SERVICES_MAX` services, `/services` is longer than the
/// 192 KiB answer buffer (it used to answer 500 from about 810). Every client gets every service
/// exactly once: the kit's client and curl read it chunked, curl over HTTP/1.0 reads it to the
/// close, two requests on one kept-alive connection both get it whole, and `myco ls` (table and
/// `--json`) lists them all.
#[test]
fn services_at_full_capacity_are_listed_by_every_client() {
    let op = operator();
    let mut d = Daemon::new("api-full", &op, 41);
    d.start(d.command(&["--reserve-bytes", "0"]));
    fill_the_store(&d, &op);
    let expected: BTreeSet<String> = (0..SERVICES_MAX).map(long_name).collect();

    let answer = request(&d.socket, "GET", "/services", b"").expect("the API answers");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert!(
        answer.body.len() > 192 * 1024,
        "the listing passes the buffer"
    );
    assert_eq!(names(&answer.json()), expected);

    let curled = curl(&d.socket, &[], "/services");
    assert_eq!(curled.status, 200);
    assert_eq!(names(&curled.json()), expected);
    let old = curl(&d.socket, &["--http1.0"], "/services");
    assert_eq!(old.status, 200);
    assert_eq!(
        old.header("transfer-encoding"),
        None,
        "HTTP/1.0 reads no chunks"
    );
    assert_eq!(names(&old.json()), expected);

    // curl keeps the connection for the second URL: the first chunked answer ended cleanly.
    let mut twice = Command::new("curl");
    twice.args(["-sS", "--unix-socket"]).arg(&d.socket);
    twice.args(["http://localhost/services", "http://localhost/services"]);
    let out = run(twice).ok().to_string();
    let bodies: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("two JSON answers");
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|b| names(b) == expected));

    let table = myco(&d.socket, &["ls"]);
    let listed: BTreeSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed.len(), SERVICES_MAX, "{}", &table[..200]);
    assert!(expected.iter().all(|n| listed.contains(n.as_str())));
    let json: Value = serde_json::from_str(&myco(&d.socket, &["ls", "--json"])).expect("JSON");
    assert_eq!(names(&json), expected);
}

/// More slow clients than the API has connection slots (16), each sending a request a byte a
/// second and reconnecting when closed, cannot lock an operator out: every `/health` gets its
/// 200 (it used to get 503 nearly every time for as long as they trickled), because a newcomer
/// takes the slot of the connection slowest longest. The clients are kept at it throughout, and
/// the daemon counts the connections that gave way.
#[test]
fn slow_clients_cannot_lock_the_operator_out() {
    let op = operator();
    let mut d = Daemon::new("api-slow", &op, 42);
    d.start(d.command(&["--reserve-bytes", "0"]));
    let socket = d.socket.clone();
    let slow = Tricklers::api_health(20, socket);
    wait_until(
        Duration::from_secs(10),
        "every slow client connected",
        || slow.connections() >= 20,
    );
    for i in 0..20 {
        let answer = request(&d.socket, "GET", "/health", b"").expect("the API answers");
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
        // Spread over two seconds, so the requests meet the slow clients' bytes and reconnects
        // rather than one moment of them; nothing waits on this pause.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slow.connections() > 20,
        "slow clients were closed and came back"
    );
    let (_, metrics) = d.get("/metrics");
    let evicted = myco_testkit::metrics::metric(&metrics, "myco_api_evicted_total");
    // Some requests found a slot just freed by another, so fewer than one eviction each.
    assert!(evicted.is_some_and(|n| n >= 1.0), "{evicted:?}");
}
