//! `myco proxy` against real `myco-d` processes on loopback: the operator's tools work unchanged
//! through the tunnel (curl, `myco ls`, `myco deploy`, `myco events`, `myco logs -f`) without the
//! box allocating, and a box refuses every tunnel without this cluster's operator authority (no
//! credential, garbage, another operator's, expired, revoked, another box's), and more tunnels
//! than its slots.

use myco_testkit::run::{die_with_parent, PipeLines};
use myco_testkit::{bins, wait_until, Cluster, Daemon, NodeOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A running `myco proxy`, killed when dropped.
struct Proxy {
    child: Child,
    socket: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of one box that accepts tunnels, started.
fn proxied_box(test: &str, options: NodeOptions) -> Cluster {
    let mut c = Cluster::new(test);
    c.add(NodeOptions {
        proxy: true,
        ..options
    });
    c.start_all();
    c
}

fn proxy_args<'a>(d: &Daemon, socket: &'a str, to: &'a mut String) -> Vec<&'a str> {
    *to = d.proxy.expect("the box accepts tunnels").to_string();
    vec!["proxy", "--to", to.as_str(), "--listen", socket]
}

/// Starts `myco proxy --to BOX --listen DIR/NAME.sock AUTH...` and waits until it serves.
fn start_proxy(c: &Cluster, d: &Daemon, name: &str, auth: &[&str]) -> Proxy {
    let socket = c.dir.join(format!("{name}.sock"));
    let child = spawn_proxy(c, d, socket.to_str().unwrap(), auth);
    Proxy { child, socket }
}

/// Starts `myco proxy --to BOX --listen LISTEN AUTH...` and waits for its first line.
fn spawn_proxy(c: &Cluster, d: &Daemon, listen: &str, auth: &[&str]) -> Child {
    let mut to = String::new();
    let mut args = proxy_args(d, listen, &mut to);
    args.extend_from_slice(auth);
    let mut command = Command::new(bins::cli());
    command
        .args(&args)
        .current_dir(c.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("myco proxy starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.starts_with("serving the API of node") {
        let mut err = String::new();
        let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
        panic!("myco proxy did not start: {line} {err}");
    }
    assert!(line.contains(&d.key.node_id), "{line}");
    child
}

/// `myco proxy` that must be refused: its exit code and stderr.
fn refused_proxy(c: &Cluster, d: &Daemon, name: &str, auth: &[&str]) -> (Option<i32>, String) {
    let socket = c.dir.join(format!("{name}.sock"));
    let mut to = String::new();
    let socket_text = socket.to_str().unwrap().to_string();
    let mut args = proxy_args(d, &socket_text, &mut to);
    args.extend_from_slice(auth);
    let run = c.myco(&args);
    assert!(!socket.exists(), "a refused proxy listens on nothing");
    (run.code, run.stderr)
}

fn curl(socket: &PathBuf, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://box{path}"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// curl, `myco ls`, `myco deploy` and `myco events` through a proxy with the operator key, and
/// through one with a credential from `myco credential`; the box counts the tunnels.
#[test]
fn tools_work_through_the_proxy() {
    let c = proxied_box("tools_work_through_the_proxy", NodeOptions::default());
    let d = &c.daemons[0];
    let op = c.operator.path.to_str().unwrap();
    let p = start_proxy(&c, d, "op", &["--operator-key", op]);
    let health: serde_json::Value = serde_json::from_str(&curl(&p.socket, "/health")).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["node_id"], d.key.node_id.as_str(), "{health}");

    let sock = p.socket.to_str().unwrap();
    let mut events = Command::new(bins::cli());
    events
        .args(["events", "--socket", sock])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut events);
    let mut events = events.spawn().unwrap();
    // The stream starts from now: deploying before `myco events` says it follows would race
    // the subscription through the tunnel and miss the event.
    PipeLines::new(events.stderr.take().unwrap()).wait_for(
        WAIT,
        "saying myco events follows",
        |l| l.contains("following the events"),
    );
    let lines = PipeLines::new(events.stdout.take().unwrap());
    let manifest = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    let manifest = manifest.to_str().unwrap();
    c.myco(&["deploy", manifest, "--operator-key", op, "--socket", sock])
        .ok();
    let ls = c.myco(&["ls", "--socket", sock, "--json"]).json();
    assert_eq!(ls["services"][0]["name"], "web", "{ls}");
    lines.wait_for(
        WAIT,
        "of myco events through the proxy showing the deploy",
        |l| l.contains("web"),
    );
    let _ = events.kill();
    let _ = events.wait();

    // A proxy ended by a signal leaves its socket; the next one on that path replaces it.
    drop(p);
    let p = start_proxy(&c, d, "op", &["--operator-key", op]);
    assert!(curl(&p.socket, "/health").contains("\"ok\""));
    credential_on_a_loopback_port(&c, d, op);
    assert!(d.metric("myco_proxy_tunnels_opened_total") >= 6.0);
    assert_eq!(d.metric("myco_proxy_bad_records_total"), 0.0);
    // Every tunnel closed with its local connection (curl's, myco's, the killed events').
    wait_until(WAIT, "every tunnel closed", || {
        d.metric("myco_proxy_tunnels") == 0.0
    });
    // Tunnels, their handshakes and the bytes they carried took nothing from the heap.
    assert_eq!(d.metric("myco_heap_allocations_since_ready_total"), 0.0);
}

/// A credential from `myco credential` (with `scope`: its expiry and box) for the key `holder`:
/// the `--credential` and `--key` arguments that make `myco proxy` use it.
fn holder_credential(c: &Cluster, op: &str, scope: &[&str]) -> [String; 4] {
    let holder = c.keygen("holder");
    let cred = c.dir.join("holder.cred");
    let cred = cred.to_str().unwrap();
    let mut args = vec!["credential", "--operator-key", op];
    args.extend_from_slice(&["--holder-pubkey", &holder.public_hex, "--out", cred]);
    args.extend_from_slice(scope);
    c.myco(&args).ok();
    let key = holder.path.to_str().unwrap();
    ["--credential", cred, "--key", key].map(str::to_owned)
}

/// A credential from `myco credential` for this box opens a proxy on a loopback TCP port, which
/// curl reaches; a proxy asked to listen beyond loopback is refused as a bad command line.
fn credential_on_a_loopback_port(c: &Cluster, d: &Daemon, op: &str) {
    let auth = holder_credential(c, op, &["--expires-in", "1h", "--node", &d.key.node_id]);
    let auth = auth.each_ref().map(String::as_str);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut q = spawn_proxy(c, d, &port.to_string(), &auth);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://{port}/services"),
        ])
        .output()
        .unwrap();
    let services = String::from_utf8_lossy(&out.stdout);
    assert!(services.contains("\"web\""), "{out:?}");
    let _ = (q.kill(), q.wait());
    let mut to = String::new();
    let (code, err) = {
        let mut args = proxy_args(d, "0.0.0.0:7999", &mut to);
        args.extend_from_slice(&auth);
        let run = c.myco(&args);
        (run.code, run.stderr)
    };
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}

/// Reads the box's answer to raw bytes sent on a fresh tunnel connection: a Refuse's reason byte,
/// or `None` if it closed without one.
fn raw_refusal(d: &Daemon, bytes: &[u8]) -> Option<u8> {
    let mut s = TcpStream::connect(d.proxy.unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(bytes);
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).ok()?;
    assert_eq!(&answer[..3], &[0, 2, 0x14], "a Refuse");
    Some(answer[3])
}

/// Garbage and an Open without a credential get a Refuse (malformed); another operator's key,
/// an expired credential and one for another box are refused with their reasons (exit 4); none
/// opened a tunnel.
#[test]
fn tunnels_without_authority_are_refused() {
    let c = proxied_box(
        "tunnels_without_authority_are_refused",
        NodeOptions::default(),
    );
    let d = &c.daemons[0];
    assert_eq!(raw_refusal(d, &[0, 5, 1, 2, 3, 4, 5]), Some(1));
    // An Open whose credential is empty: kind, length 0, ephemeral key and challenge.
    let mut open = vec![0, 66, 0x11, 0];
    open.extend_from_slice(&[7; 64]);
    assert_eq!(raw_refusal(d, &open), Some(1));
    assert_eq!(
        raw_refusal(d, &[0xff, 0xff]),
        Some(1),
        "an impossible length"
    );

    let other = c.keygen("other");
    let (code, err) = refused_proxy(
        &c,
        d,
        "other",
        &["--operator-key", other.path.to_str().unwrap()],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("not from this cluster's operator"), "{err}");

    let op = c.operator.path.to_str().unwrap();
    let elsewhere = ["--operator-key", op, "--node", "00000000000000aa"];
    let (code, err) = refused_proxy(&c, d, "elsewhere", &elsewhere);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("another box"), "{err}");

    let auth = holder_credential(&c, op, &["--expires-in", "1"]);
    std::thread::sleep(Duration::from_millis(2100));
    let auth = auth.each_ref().map(String::as_str);
    let (code, err) = refused_proxy(&c, d, "expired", &auth);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("expired"), "{err}");

    let refused =
        |reason: &str| d.metric(&format!("myco_proxy_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!(refused("malformed"), 3.0);
    assert_eq!(refused("unknown_key"), 1.0);
    assert_eq!(refused("wrong_node"), 1.0);
    assert_eq!(refused("expired"), 1.0);
    assert_eq!(d.metric("myco_proxy_tunnels_opened_total"), 0.0);
    assert_eq!(d.metric("myco_heap_allocations_since_ready_total"), 0.0);
}

/// A box at RevocationBlock 1 (its own certificate re-issued at 1) refuses a credential issued at
/// 0 and takes one issued at 1.
#[test]
fn revoked_credentials_are_refused() {
    let mut c = Cluster::new("revoked_credentials_are_refused");
    let op = c.operator.path.to_str().unwrap().to_string();
    let revocation = c.dir.join("rev1");
    let rev_path = revocation.to_str().unwrap();
    c.myco(&[
        "revoke",
        "--operator-key",
        &op,
        "--height",
        "1",
        "--out",
        rev_path,
    ])
    .ok();
    c.add(NodeOptions {
        proxy: true,
        issued_at: 1,
        revocation: Some(revocation.clone()),
        ..NodeOptions::default()
    });
    c.start_all();
    let d = &c.daemons[0];
    let (code, err) = refused_proxy(&c, d, "old", &["--operator-key", &op]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("RevocationBlock"), "{err}");
    let p = start_proxy(&c, d, "new", &["--operator-key", &op, "--issued-at", "1"]);
    assert!(curl(&p.socket, "/health").contains("\"ok\""));
    assert_eq!(
        d.metric("myco_proxy_refused_total{reason=\"revoked\"}"),
        1.0
    );
}

/// An idle tunnel (a local connection that sends nothing) and three silent clients that never
/// finish a handshake take every tunnel slot: a fifth client, and `myco proxy`, are refused as
/// busy; the handshake timeout closes the three, the API's request timeout closes the idle
/// tunnel, and a proxy then gets through.
#[test]
fn silent_clients_cannot_hold_the_slots() {
    let c = proxied_box(
        "silent_clients_cannot_hold_the_slots",
        NodeOptions::default(),
    );
    let d = &c.daemons[0];
    let op = c.operator.path.to_str().unwrap();
    let first = start_proxy(&c, d, "first", &["--operator-key", op]);
    let idle = UnixStream::connect(&first.socket).unwrap();
    wait_until(WAIT, "the idle connection's tunnel is open", || {
        d.metric("myco_proxy_tunnels") == 1.0
    });
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(d.proxy.unwrap()).unwrap())
        .collect();
    wait_until(WAIT, "the box took the three", || {
        raw_refusal(d, &[]) == Some(7)
    });
    let (code, err) = refused_proxy(&c, d, "busy", &["--operator-key", op]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("every tunnel slot"), "{err}");
    wait_until(WAIT, "the handshake timeout frees three slots", || {
        d.metric("myco_proxy_timeouts_total") >= 3.0
    });
    wait_until(
        WAIT,
        "the API's request timeout ends the idle tunnel",
        || d.metric("myco_proxy_tunnels") == 0.0,
    );
    let p = start_proxy(&c, d, "after", &["--operator-key", op]);
    assert!(curl(&p.socket, "/health").contains("\"ok\""));
    drop((silent, idle));
    assert_eq!(d.metric("myco_heap_allocations_since_ready_total"), 0.0);
}

/// `myco logs web -f` through the proxy: the journal's lines stream through the tunnel as the
/// (stand-in) journalctl writes them, and when the follower goes away its tunnel closes and its
/// journalctl ends.
#[test]
fn logs_follow_through_the_proxy() {
    let options = NodeOptions {
        executor: true,
        ..NodeOptions::default()
    };
    let c = proxied_box("logs_follow_through_the_proxy", options);
    let d = &c.daemons[0];
    let op = c.operator.path.to_str().unwrap();
    let p = start_proxy(&c, d, "op", &["--operator-key", op]);
    let sock = p.socket.to_str().unwrap();
    let manifest = c.write("web.json", r#"{"name": "web", "exec": "/usr/bin/true"}"#);
    let manifest = manifest.to_str().unwrap();
    c.myco(&["deploy", manifest, "--operator-key", op, "--socket", sock])
        .ok();
    wait_until(WAIT, "the box serves web's journal", || {
        c.myco(&["logs", "web", "--socket", sock]).code == Some(0)
    });
    let mut logs = Command::new(bins::cli());
    logs.args(["logs", "web", "-f", "--socket", sock])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_parent(&mut logs);
    let mut logs = logs.spawn().unwrap();
    // The followed journal streams through the tunnel.
    let lines = PipeLines::new(logs.stdout.take().unwrap());
    for n in 1..=3 {
        lines.wait_for(WAIT, &format!("'tick' number {n}"), |l| l == "tick");
    }
    let pid: i32 = std::fs::read_to_string(c.dir.join("journal.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = logs.kill();
    let _ = logs.wait();
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = || unsafe { libc::kill(pid, 0) } == 0;
    wait_until(WAIT, "journalctl ends with its follower", || !alive());
    wait_until(WAIT, "the tunnel closed", || {
        d.metric("myco_proxy_tunnels") == 0.0
    });
}
