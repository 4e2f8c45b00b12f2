//! `myco-priv` on its own (`--listen`, a temporary unit directory, the kit's stand-in
//! `systemctl`, `journalctl` and `systemd-run`), talked to directly as a compromised daemon
//! could: every hostile request is refused with a reason and leaves the unit directory and the
//! commands run unchanged; good requests write and remove units and run commands with the
//! daemon's descriptors as their output.

use myco_core::crypto::sign_entry_body;
use myco_core::executor::render_unit;
use myco_core::executor::Substitute;
use myco_core::privileged::{
    decode_reply, encode_request, Outcome, Request, UnitVerb, FRAME_HEADER_BYTES, REQUEST_BYTES_MAX,
};
use myco_core::schema::addr::PeerAddr;
use myco_core::schema::entry::{Arch, Check, Health};
use myco_core::unit::UNIT_BYTES_MAX;
use myco_host::privileged::{CONNECTIONS_MAX, REQUEST_TIMEOUT};
use myco_testkit::dir::TempDir;
use myco_testkit::entries::{checked_entry, exec_entry, flake_entry};
use myco_testkit::keys::{key, operator};
use myco_testkit::{hex, wait_until, FAKE_JOURNALCTL, FAKE_SYSTEMCTL, FAKE_SYSTEMD_RUN};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running helper and its directory (`units`, the stand-ins, `calls` they record).
struct Helper {
    dir: TempDir,
    child: Child,
    client: Client,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Starts `myco-priv` serving `allow_uid` for the cluster of the kit's operator key, with a unit
/// directory holding another program's unit and one of Myco's, so a refusal that touched either
/// would show.
fn start(name: &str, allow_uid: u32) -> Helper {
    start_with(name, allow_uid, &[])
}

/// What the stand-in `nix` prints for `nix show-config` unless a test writes another `shown`:
/// a Nix with build users and the sandbox (Nix's multi-user install).
const ISOLATED: &str = "build-users-group = nixbld\nsandbox = true\n";

/// `start` with more flags. The stand-in `nix` answers `show-config` with the file `shown` (and
/// fails where there is none), without a record in `calls`.
fn start_with(name: &str, allow_uid: u32, flags: &[&str]) -> Helper {
    let dir = TempDir::new(name);
    let tool = |name: &str, text: &str| {
        let path = dir.write(name, text);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let nix = tool(
        "nix",
        "#!/bin/sh\ncase \"$*\" in *show-config*) exec cat \"$(dirname \"$0\")/shown\";; esac\n\
         echo \"nix $*\" >> \"$(dirname \"$0\")/calls\"\necho '[]'\n",
    );
    dir.write("shown", ISOLATED);
    let units = dir.join("units");
    fs::create_dir_all(&units).unwrap();
    fs::write(
        units.join("sshd.service"),
        "[Service]\nExecStart=/usr/sbin/sshd\n",
    )
    .unwrap();
    fs::write(units.join("myco-old.service"), "# an earlier unit\n").unwrap();
    fs::create_dir_all(dir.join("gcroots")).unwrap();
    let socket = dir.join("priv.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_myco-priv"))
        .args(["--operator", &hex(&operator().public_key().0)])
        .args(["--allow-uid", &allow_uid.to_string(), "--listen"])
        .arg(&socket)
        .arg("--unit-dir")
        .arg(&units)
        .arg("--gcroot-dir")
        .arg(dir.join("gcroots"))
        .arg("--systemctl")
        .arg(tool("systemctl", FAKE_SYSTEMCTL))
        .arg("--journalctl")
        .arg(tool("journalctl", FAKE_JOURNALCTL))
        .arg("--systemd-run")
        .arg(tool("systemd-run", FAKE_SYSTEMD_RUN))
        .arg("--nix")
        .arg(nix)
        .args(flags)
        .stdin(Stdio::null())
        .stderr(fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "myco-priv listens", || {
        UnixStream::connect(&socket).is_ok()
    });
    let client = Client { socket };
    Helper { dir, child, client }
}

impl Helper {
    fn units(&self) -> PathBuf {
        self.dir.join("units")
    }

    /// Every file of the unit directory and its contents.
    fn unit_files(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(self.units())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, fs::read(e.path()).unwrap())
            })
            .collect()
    }

    /// The command lines the stand-ins recorded.
    fn calls(&self) -> String {
        fs::read_to_string(self.dir.join("calls")).unwrap_or_default()
    }

    /// Refusals changed nothing: the unit directory is still `before` and no command ran.
    #[track_caller]
    fn assert_unchanged(&self, before: &BTreeMap<String, Vec<u8>>) {
        let now = self.unit_files();
        assert_eq!(&now, before, "a refusal changed the unit directory");
        assert_eq!(self.calls(), "", "a refused request ran a command");
    }
}

/// Talks to a helper's socket as the daemon would.
struct Client {
    socket: PathBuf,
}

impl Client {
    fn connect(&self) -> UnixStream {
        let conn = UnixStream::connect(&self.socket).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn
    }

    /// Sends `bytes` (a whole frame, or anything) with `fds` beside them and reads the reply.
    /// With `end`, says nothing more will come (a frame cut short must end for the helper to see
    /// it is short; a whole one must not, or the helper would take it for a hang-up).
    fn send(&self, bytes: &[u8], fds: &[RawFd], end: bool) -> (Outcome, String) {
        let mut conn = self.connect();
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(bytes)];
        // A helper that refuses before reading (busy, another uid) may have answered and closed
        // already: the send then fails with EPIPE, and the reply is still there to read.
        match sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None) {
            Ok(_) | Err(nix::errno::Errno::EPIPE) => {}
            Err(e) => panic!("cannot send to myco-priv: {e}"),
        }
        if end {
            let _ = conn.shutdown(std::net::Shutdown::Write);
        }
        read_reply(&mut conn)
    }

    fn ask(&self, request: &Request<'_>, fds: &[RawFd]) -> (Outcome, String) {
        self.send(&frame(request), fds, false)
    }

    /// What a command wrote to the pipe passed with `request`, which must succeed.
    fn output(&self, request: &Request<'_>) -> String {
        let (r, w) = pipe();
        let (outcome, why) = self.ask(request, &[w.as_raw_fd()]);
        drop(w);
        let out = drain(r);
        assert_eq!(outcome, Outcome::Exited(0), "{request:?}: {why}: {out}");
        out
    }
}

impl std::ops::Deref for Helper {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

fn read_reply(conn: &mut UnixStream) -> (Outcome, String) {
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    let body = reply.get(FRAME_HEADER_BYTES..).expect("a reply frame");
    let reply = decode_reply(body).expect("a reply decodes");
    (reply.outcome, reply.reason.to_owned())
}

fn frame(request: &Request<'_>) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER_BYTES + REQUEST_BYTES_MAX];
    let len = encode_request(request, &mut out).unwrap();
    out.truncate(len);
    out
}

/// The file the executor writes for `entry`: its header line, then the rendered unit.
fn unit_text(entry: &[u8]) -> String {
    let mut out = [0u8; UNIT_BYTES_MAX];
    let len = render_unit(entry, None, &mut out).unwrap();
    format!(
        "# myco: 0123456789abcdef\n{}",
        std::str::from_utf8(&out[..len]).unwrap()
    )
}

fn write<'a>(name: &'a str, entry: &'a [u8], text: &'a str) -> Request<'a> {
    Request::WriteUnit {
        name,
        entry,
        program: None,
        text: text.as_bytes(),
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

/// Units with injected directives and names of other units or paths, in every request that
/// names a unit, each refused with its reason; afterwards the unit directory holds exactly what
/// it held and no command ran.
#[test]
fn hostile_units_and_names_are_refused_and_change_nothing() {
    let h = start("priv-hostile", my_uid());
    let before = h.unit_files();
    let op = operator();
    let web = exec_entry(&op, "web", 1, "/bin/web");
    let text = unit_text(&web);
    let inject = |after: &str, line: &str| {
        let at = text.find(after).unwrap();
        let end = at + text[at..].find('\n').unwrap() + 1;
        format!("{}{line}\n{}", &text[..end], &text[end..])
    };
    let texts = [
        inject("Type=exec", "ExecStartPre=/bin/sh -c \"id > /tmp/owned\""),
        inject("Type=exec", "User=root"),
        inject("Type=exec", "PrivateNetwork=no"),
        inject("WantedBy=", "[Service]\nExecStart=/bin/sh"),
        text.replace("DynamicUser=yes", "DynamicUser=no"),
    ];
    for bad in &texts {
        let (outcome, why) = h.ask(&write("myco-web.service", &web, bad), &[]);
        assert_eq!(outcome, Outcome::Refused, "{bad}");
        assert!(why.contains("the unit is not the entry's"), "{why}");
    }
    for name in [
        "sshd.service",
        "myco-../x",
        "myco-a/b.service",
        "../myco-old.service",
    ] {
        let requests = [
            write(name, &web, &text),
            Request::RemoveUnit { name },
            Request::Unit {
                verb: UnitVerb::Stop,
                names: heapless::Vec::from_slice(&[name]).unwrap(),
            },
            Request::Journal {
                name,
                follow: false,
                lines: None,
            },
        ];
        for request in requests {
            let (outcome, why) = h.ask(&request, &[]);
            assert_eq!(outcome, Outcome::Refused, "{request:?}");
            assert!(why.contains("unit name"), "{why}");
        }
    }
    h.assert_unchanged(&before);
}

/// `entry` with its signature replaced by `signer`'s over the same body: the operator's key id,
/// another key's signature.
fn resigned(entry: &[u8], signer: &myco_core::crypto::SigningKey) -> Vec<u8> {
    let (body, _) = entry.split_at(entry.len() - 64);
    [body, &sign_entry_body(signer, body)].concat()
}

/// Well-formed requests for entries the operator did not sign (signed by another key under its
/// own key id or the operator's, or with no signature at all), each with the unit text rendered
/// from that very entry, are refused: the unit directory is unchanged and no command ran.
#[test]
fn entries_the_operator_did_not_sign_are_refused_and_change_nothing() {
    let h = start("priv-unsigned", my_uid());
    let before = h.unit_files();
    let forger = key("forger");
    let web = exec_entry(&operator(), "web", 1, "/bin/web");
    let mut made_up = web.clone();
    made_up.truncate(web.len() - 64);
    made_up.extend([0; 64]);
    let rev = "a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let uri = format!("git+file:///srv/evil?rev={rev}");
    let health = Health {
        check: Check::Exec {
            argv: heapless::Vec::from_slice(&["/bin/sh", "-c", "id > /tmp/owned"]).unwrap(),
        },
        interval_s: 10,
        timeout_s: 2,
        failures: 3,
    };
    let checked = checked_entry(&forger, ("web", 1), "/bin/web", 8080, health);
    let entries = [
        (exec_entry(&forger, "web", 1, "/bin/web"), "names key"),
        (resigned(&web, &forger), "signature is not the operator's"),
        (made_up, "signature is not the operator's"),
    ];
    for (entry, why_expected) in &entries {
        let text = unit_text(entry);
        let (outcome, why) = h.ask(&write("myco-web.service", entry, &text), &[]);
        assert_eq!(outcome, Outcome::Refused);
        assert!(why.contains(why_expected), "{why}");
    }
    let evil = flake_entry(&forger, "web", 1, (&uri, "default", rev));
    let build = Request::Build {
        entry: &evil,
        timeout_s: 60,
        local: true,
        system: Arch::X86_64,
        substitutes: heapless::Vec::new(),
    };
    let check = Request::HealthCheck {
        name: "myco-web.service",
        entry: &checked,
        timeout_ms: 1000,
    };
    for request in [build, check] {
        let (r, w) = pipe();
        let (outcome, why) = h.ask(&request, &[w.as_raw_fd()]);
        drop((r, w));
        assert_eq!(outcome, Outcome::Refused, "{request:?}");
        assert!(why.contains("not the cluster's operator key"), "{why}");
    }
    h.assert_unchanged(&before);
    assert!(
        !h.dir.join("systemd-run.calls").exists(),
        "a transient unit ran"
    );
    let log = fs::read_to_string(h.dir.join("log")).unwrap();
    assert_eq!(
        log.matches("myco-priv: refused: the entry").count(),
        5,
        "{log}"
    );
}

/// Without the cluster's operator key the helper does not start: it could check no entry.
#[test]
fn the_operator_key_is_required() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_myco-priv"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--allow-uid", "0", "--listen", "/nonexistent/priv.sock"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--operator HEX is required"), "{err}");
    let out = run(&["--operator", "abcd", "--allow-uid", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--operator 'abcd' is not a public key"),
        "{err}"
    );
}

/// Bytes that are no request (oversize, garbage, cut short) and descriptors sent with a file
/// request are refused; nothing changes.
#[test]
fn garbage_and_stray_descriptors_are_refused() {
    let h = start("priv-garbage", my_uid());
    let before = h.unit_files();
    let (r, w) = pipe();
    let (outcome, why) = h.ask(
        &Request::RemoveUnit {
            name: "myco-old.service",
        },
        &[w.as_raw_fd()],
    );
    assert_eq!(outcome, Outcome::Refused);
    assert!(
        why.starts_with("only a command's request takes descriptors"),
        "{why}"
    );
    let three = [w.as_raw_fd(); 3];
    let (outcome, why) = h.ask(&Request::DaemonReload, &three);
    assert_eq!(outcome, Outcome::Refused);
    assert!(why.starts_with("only a command's request"), "{why}");
    drop((r, w));

    let mut oversize = (REQUEST_BYTES_MAX as u32 + 1).to_le_bytes().to_vec();
    oversize.extend(vec![0u8; 1024]);
    let garbage: [&[u8]; 4] = [
        &oversize,
        b"\x10\x00\x00\x00systemctl start sshd.service",
        b"\x05\x00\x00\x00\xff\xff\xff\xff\xff",
        b"\x01\x00",
    ];
    for bytes in garbage {
        let (outcome, why) = h.send(bytes, &[], true);
        assert_eq!(outcome, Outcome::Refused, "{bytes:?}: {why}");
    }
    h.assert_unchanged(&before);
}

/// A peer whose uid is not the allowed one gets nothing, however good its request.
#[test]
fn another_uid_is_refused() {
    let h = start("priv-uid", my_uid().wrapping_add(1));
    let before = h.unit_files();
    let web = exec_entry(&operator(), "web", 1, "/bin/web");
    let text = unit_text(&web);
    let (outcome, why) = h.ask(&write("myco-web.service", &web, &text), &[]);
    assert_eq!(outcome, Outcome::Refused);
    assert_eq!(why, format!("uid {} may not use myco-priv", my_uid()));
    assert_eq!(h.unit_files(), before);
}

/// The executor's unit is written whole, readable by systemd, without a temporary file left
/// over, and removed again.
#[test]
fn a_good_unit_is_written_and_removed() {
    let h = start("priv-good", my_uid());
    let web = exec_entry(&operator(), "web", 1, "/bin/web");
    let text = unit_text(&web);
    let (outcome, why) = h.ask(&write("myco-web.service", &web, &text), &[]);
    assert_eq!(outcome, Outcome::Exited(0), "{why}");
    let path = h.units().join("myco-web.service");
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let names: Vec<String> = h.unit_files().into_keys().collect();
    assert_eq!(
        names,
        ["myco-old.service", "myco-web.service", "sshd.service"]
    );

    let (outcome, why) = h.ask(
        &Request::RemoveUnit {
            name: "myco-web.service",
        },
        &[],
    );
    assert_eq!(outcome, Outcome::Exited(0), "{why}");
    assert!(!path.exists());
    let (outcome, why) = h.ask(
        &Request::RemoveUnit {
            name: "myco-web.service",
        },
        &[],
    );
    assert_eq!(
        outcome,
        Outcome::Failed,
        "removing a unit that is not there: {why}"
    );
}

/// Reads what the helper's child wrote to the pipe until it closes.
fn drain(read: OwnedFd) -> String {
    let mut text = String::new();
    fs::File::from(read).read_to_string(&mut text).unwrap();
    text
}

/// `systemctl` and a build run with the fixed command lines, their output on the daemon's pipe
/// and their exit status in the reply.
#[test]
fn commands_write_to_the_daemons_pipe() {
    let h = start("priv-commands", my_uid());
    let names = heapless::Vec::from_slice(&["myco-web.service", "myco-api.service"]).unwrap();
    let out = h.output(&Request::Unit {
        verb: UnitVerb::Show,
        names,
    });
    assert!(
        out.contains("Id=myco-web.service\nActiveState=active"),
        "{out}"
    );
    assert!(out.contains("Id=myco-api.service"), "{out}");
    assert_eq!(h.ask(&Request::DaemonReload, &[]).0, Outcome::Exited(0));
    let calls = h.calls();
    assert!(calls.starts_with("show --property="), "{calls}");
    assert!(
        calls.ends_with("myco-web.service myco-api.service\ndaemon-reload\n"),
        "{calls}"
    );

    let (uri, web) = web_flake();
    // For another system than the host's, as a builder builds for a board.
    let build = Request::Build {
        entry: &web,
        timeout_s: 60,
        local: true,
        system: Arch::Aarch64,
        substitutes: heapless::Vec::from_slice(&[Substitute {
            id: 7,
            cache: PeerAddr::v4([10, 0, 0, 2], 7947),
            key: [9; 32],
        }])
        .unwrap(),
    };
    if !nix::unistd::geteuid().is_root() {
        // The test's directories are not root's: the helper builds into none of them.
        let (outcome, why) = h.ask(&build, &[]);
        assert_eq!(outcome, Outcome::Failed, "{why}");
        assert!(why.contains("GC root directory"), "{why}");
        return;
    }
    assert_eq!(h.output(&build), "[]\n");
    let run = fs::read_to_string(h.dir.join("systemd-run.calls")).unwrap();
    assert!(run.contains("--unit=myco-build-web "), "{run}");
    assert!(run.contains("--property=RuntimeMaxSec=60 "), "{run}");
    let link = h.dir.join("gcroots/web-a7a7a7a7a7a7-aarch64-linux");
    // The helper wrote the substituter's URL and key from the address and key sent.
    let nix = format!(
        "nix build --json -L --out-link {} --option system aarch64-linux \
         --option extra-substituters http://10.0.0.2:7947 \
         --option extra-trusted-public-keys 0000000000000007:CQkJ",
        link.display()
    );
    assert!(h.calls().contains(&nix), "{}", h.calls());
    assert!(
        h.calls().contains(&format!(" {uri}#default\n")),
        "{}",
        h.calls()
    );
    // Every root action is in the helper's log, with how it ended.
    let log = fs::read_to_string(h.dir.join("log")).unwrap();
    for line in [
        "myco-priv: systemctl show myco-web.service myco-api.service: Exited(0): exited with 0",
        "myco-priv: systemctl daemon-reload: Exited(0)",
        &format!("myco-priv: build {uri}#default for web: Exited(0)"),
    ] {
        assert!(log.contains(line), "{line} in\n{log}");
    }
}

/// A followed journal runs until the daemon hangs up; then the helper stops it.
#[test]
fn a_followed_journal_stops_when_the_daemon_hangs_up() {
    let h = start("priv-journal", my_uid());
    let (r, w) = pipe();
    let journal = Request::Journal {
        name: "myco-web.service",
        follow: true,
        lines: Some(5),
    };
    let mut conn = h.connect();
    let bytes = frame(&journal);
    let rights = [ControlMessage::ScmRights(&[w.as_raw_fd()])];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &rights,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(w);
    let mut pipe = BufReader::new(fs::File::from(r));
    let mut first = String::new();
    pipe.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("journal of --unit=myco-web.service"),
        "{first}"
    );
    assert!(first.ends_with(" --lines=5 --follow\n"), "{first}");
    let pid_file = h.dir.join("journal.pid");
    wait_until(Duration::from_secs(10), "journalctl follows", || {
        pid_file.exists()
    });
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(conn.shutdown(std::net::Shutdown::Write));
    let (outcome, why) = read_reply(&mut conn);
    assert_eq!(outcome, Outcome::Signaled(15), "{why}");
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err();
    assert!(gone, "journalctl {pid} still runs");
    let mut rest = String::new();
    pipe.read_to_string(&mut rest).unwrap();
    assert!(rest.lines().all(|l| l == "tick" || l.is_empty()), "{rest}");
}

/// Connections past `CONNECTIONS_MAX` are told the helper is busy rather than queued without
/// bound; a silent connection is dropped after `REQUEST_TIMEOUT` and its slot serves again.
#[test]
fn connections_are_bounded_and_silent_ones_time_out() {
    let h = start("priv-busy", my_uid());
    // `start`'s probe connection holds a slot until its thread has answered it.
    std::thread::sleep(Duration::from_millis(300));
    let mut silent: Vec<UnixStream> = (0..CONNECTIONS_MAX).map(|_| h.connect()).collect();
    // Each silent connection is taken by a thread before the next is accepted.
    std::thread::sleep(Duration::from_millis(200));
    let (outcome, why) = h.ask(&Request::DaemonReload, &[]);
    assert_eq!(
        (outcome, why.as_str()),
        (Outcome::Failed, "myco-priv is busy: try again")
    );
    let (outcome, why) = read_reply(&mut silent[0]);
    assert_eq!(
        (outcome, why.as_str()),
        (Outcome::Refused, "no whole request within the timeout")
    );
    wait_until(REQUEST_TIMEOUT, "the slots are free again", || {
        h.ask(&Request::DaemonReload, &[]).0 == Outcome::Exited(0)
    });
    assert_eq!(h.unit_files().len(), 2);
}

/// The helper under a real systemd, as `systemd/priv-nspawn-test.sh` runs it in a container
/// (`MYCO_PRIV_SOCKET` is the container's socket, `MYCO_PRIV_OPERATOR_KEY` the key file of the
/// operator key the helper trusts, this process the daemon's user): a unit it
/// writes is loaded by `show`, enabled with no reload and runs under its dynamic user, a new file
/// under it makes `show` say it needs a reload, `show` and the journal come back
/// on the pipe, a garbage collection runs through systemd-run, hostile requests (and an entry
/// another key signed) are refused, and disabling and removing it leaves it gone.
#[test]
#[ignore = "run by systemd/priv-nspawn-test.sh against a booted container"]
fn under_a_real_systemd() {
    use myco_core::schema::entry::{ServiceSpec, Source};
    let socket = std::env::var_os("MYCO_PRIV_SOCKET").expect("MYCO_PRIV_SOCKET names the socket");
    let c = Client {
        socket: socket.into(),
    };
    let key_file = std::env::var_os("MYCO_PRIV_OPERATOR_KEY").expect("the operator's key file");
    let seed = myco_core::crypto::keys::parse_key_file(&fs::read(key_file).unwrap()).unwrap();
    let operator = || myco_core::crypto::SigningKey::from_seed(seed).unwrap();
    let mut spec = ServiceSpec::minimal(Source::Exec { path: "/bin/sleep" });
    spec.args.push("infinity").unwrap();
    let web = myco_testkit::entries::signed_service(&operator(), "web", 1, Some(spec));
    let text = unit_text(&web);
    let unit = || heapless::Vec::from_slice(&["myco-web.service"]).unwrap();
    let ok = |request: &Request<'_>| {
        let (outcome, why) = c.ask(request, &[]);
        assert_eq!(outcome, Outcome::Exited(0), "{request:?}: {why}");
    };
    ok(&write("myco-web.service", &web, &text));
    let unit_output = |verb| {
        c.output(&Request::Unit {
            verb,
            names: unit(),
        })
    };
    // A unit systemd never held: `show` loads it from its file, and it starts with no reload
    // (the executor's `enable --no-reload --now`).
    let shown = unit_output(UnitVerb::Show);
    assert!(
        shown.contains("LoadState=loaded\n") && shown.contains("NeedDaemonReload=no\n"),
        "{shown}"
    );
    let enable = Request::Unit {
        verb: UnitVerb::EnableNoReload,
        names: unit(),
    };
    ok(&enable);
    wait_until(Duration::from_secs(10), "myco-web runs", || {
        unit_output(UnitVerb::Show).contains("SubState=running")
    });
    let lines = c.output(&Request::Journal {
        name: "myco-web.service",
        follow: false,
        lines: Some(5),
    });
    assert!(lines.contains("Myco service web"), "{lines}");
    // Nix's work goes through systemd-run from inside the helper's sandbox, its output still on
    // the daemon's pipe.
    let collected = c.output(&Request::CollectGarbage);
    assert!(collected.contains("store paths deleted"), "{collected}");
    builds_are_not_refused_where_nix_keeps_builders_from_the_box(&c, &operator());

    hostile_writes_are_refused(&c, &web, &text);
    // A new file under the running unit: systemd says the unit it holds needs the reload.
    let mut spec = ServiceSpec::minimal(Source::Exec { path: "/bin/sleep" });
    spec.args.push("1000").unwrap();
    let web2 = myco_testkit::entries::signed_service(&operator(), "web", 2, Some(spec));
    ok(&write("myco-web.service", &web2, &unit_text(&web2)));
    let shown = unit_output(UnitVerb::Show);
    assert!(shown.contains("NeedDaemonReload=yes\n"), "{shown}");

    ok(&Request::Unit {
        verb: UnitVerb::Disable,
        names: unit(),
    });
    ok(&Request::RemoveUnit {
        name: "myco-web.service",
    });
    ok(&Request::DaemonReload);
    let after = unit_output(UnitVerb::Show);
    assert!(after.contains("ActiveState=inactive"), "{after}");
}

/// A build that may run builders: the helper asks Nix from inside its sandbox whether it keeps
/// builders from the box (the container's Nix, run as root with Nix's defaults, says so: build
/// users and the sandbox), so the request is not refused; what Nix then makes of a flake nobody
/// can fetch is Nix's business.
fn builds_are_not_refused_where_nix_keeps_builders_from_the_box(
    c: &Client,
    operator: &myco_core::crypto::SigningKey,
) {
    let rev = "a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let uri = format!("git+file:///srv/web?rev={rev}");
    let flake = flake_entry(operator, "web", 3, (&uri, "default", rev));
    let build = Request::Build {
        entry: &flake,
        timeout_s: 60,
        local: true,
        system: Arch::X86_64,
        substitutes: heapless::Vec::new(),
    };
    let (outcome, why) = c.ask(&build, &[]);
    assert_ne!(outcome, Outcome::Refused, "{why}");
}

/// The helper under a real systemd refuses a unit that would run as root, another unit's name,
/// and a well-formed unit of an entry another key signed: it trusts only this box's operator key,
/// read from the daemon's env file.
fn hostile_writes_are_refused(c: &Client, web: &[u8], text: &str) {
    let root = text.replace("DynamicUser=yes", "DynamicUser=no\nUser=root");
    assert_eq!(
        c.ask(&write("myco-web.service", web, &root), &[]).0,
        Outcome::Refused
    );
    assert_eq!(
        c.ask(&write("sshd.service", web, text), &[]).0,
        Outcome::Refused
    );
    let forged = exec_entry(&key("forger"), "web", 1, "/bin/sleep");
    let (outcome, why) = c.ask(
        &write("myco-web.service", &forged, &unit_text(&forged)),
        &[],
    );
    assert_eq!(outcome, Outcome::Refused);
    assert!(why.contains("not the cluster's operator key"), "{why}");
}

/// Version 1 of the flake service `web`, signed by the kit's operator, and its flake reference.
fn web_flake() -> (String, Vec<u8>) {
    let rev = "a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let uri = format!("git+file:///srv/web?rev={rev}");
    let web = flake_entry(&operator(), "web", 1, (&uri, "default", rev));
    (uri, web)
}

/// Builds link their results as root, so the helper builds only into a GC root directory only
/// root may replace: swapped for a symbolic link (to a directory elsewhere) or given to another
/// owner, the build fails with the reason, and Nix is never run.
#[test]
fn builds_go_only_into_a_gc_root_directory_root_alone_can_replace() {
    let h = start("priv-gcroots", my_uid());
    let (_, web) = web_flake();
    let build = Request::Build {
        entry: &web,
        timeout_s: 60,
        local: true,
        system: Arch::X86_64,
        substitutes: heapless::Vec::new(),
    };
    let gcroots = h.dir.join("gcroots");
    let elsewhere = h.dir.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir(&gcroots).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &gcroots).unwrap();
    let (outcome, why) = h.ask(&build, &[]);
    assert_eq!(outcome, Outcome::Failed, "{why}");
    assert!(why.contains("GC root directory"), "{why}");
    fs::remove_file(&gcroots).unwrap();
    fs::create_dir_all(&gcroots).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&gcroots, Some(65534), None).unwrap();
        let (outcome, why) = h.ask(&build, &[]);
        assert_eq!(outcome, Outcome::Failed, "{why}");
        assert!(why.contains("does not belong to root"), "{why}");
    }
    assert!(!h.calls().contains("nix build"), "{}", h.calls());
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Where Nix would run builders as root with the whole box in view (`nix show-config` names
/// neither the sandbox nor build users, or cannot be read), a build that may build here is
/// refused, whatever the daemon asks, and Nix never builds; a fetch (`local: false`: Nix runs
/// with `--max-jobs 0`, so no builder) still runs, and so does a build on a helper started
/// `--allow-root-builds`, or once Nix is configured with build users or the sandbox.
#[test]
fn builds_that_would_run_builders_as_root_are_refused_unless_allowed() {
    let (_, web) = web_flake();
    let build = |local| Request::Build {
        entry: &web,
        timeout_s: 60,
        local,
        system: Arch::X86_64,
        substitutes: heapless::Vec::new(),
    };
    let h = start("priv-root-builds", my_uid());
    for shown in [
        "sandbox = false\nbuild-users-group = \nsystem = x86_64-linux\n",
        "sandbox-fallback = true\n",
    ] {
        h.dir.write("shown", shown);
        let (outcome, why) = h.ask(&build(true), &[]);
        assert_eq!(outcome, Outcome::Refused, "{shown}: {why}");
        assert!(why.contains("--allow-root-builds"), "{why}");
    }
    // `nix show-config` fails: refused too.
    fs::remove_file(h.dir.join("shown")).unwrap();
    assert_eq!(h.ask(&build(true), &[]).0, Outcome::Refused);
    assert_eq!(h.calls(), "", "a refused build ran Nix");
    let log = fs::read_to_string(h.dir.join("log")).unwrap();
    assert!(
        log.contains("myco-priv: refused: Nix here runs builders as root"),
        "{log}"
    );
    h.dir
        .write("shown", "sandbox = false\nbuild-users-group =\n");
    assert_ran_past_the_refusal(&h, &build(false));
    for shown in [
        ISOLATED,
        "sandbox = relaxed\n",
        "build-users-group = nixbld\n",
    ] {
        h.dir.write("shown", shown);
        assert_ran_past_the_refusal(&h, &build(true));
    }
    let allowed = start_with(
        "priv-root-builds-allowed",
        my_uid(),
        &["--allow-root-builds"],
    );
    allowed
        .dir
        .write("shown", "sandbox = false\nbuild-users-group =\n");
    assert_ran_past_the_refusal(&allowed, &build(true));
}

/// `build` was not refused: as root it ran Nix; otherwise it failed only on the GC root
/// directory, which is the test's, not root's (`builds_go_only_into_a_gc_root_directory_...`).
#[track_caller]
fn assert_ran_past_the_refusal(h: &Helper, build: &Request<'_>) {
    let (outcome, why) = h.ask(build, &[]);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(outcome, Outcome::Exited(0), "{why}");
        assert!(h.calls().contains("nix build"), "{}", h.calls());
    } else {
        assert_eq!(outcome, Outcome::Failed, "{why}");
        assert!(why.contains("GC root directory"), "{why}");
    }
}
