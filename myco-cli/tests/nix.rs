//! Locking flake references at signing time, with real Nix and with stand-ins for it.
//!
//! The real-Nix tests run `nix` from PATH offline: the configuration in `tests/nix/conf` (no
//! binary cache, no registry, no sandbox), a fetch cache of their own, and flakes in temporary
//! git repositories made from the fixtures in `tests/nix`. Where nix is not installed they are
//! skipped with a line starting `SKIPPED:` on stderr, written past the harness's capture so it
//! shows in every run. The stand-in tests (a `nix` that hangs, prints garbage, fails or is
//! missing) need no Nix and always run.

mod common;

use common::*;
use myco_core::schema::entry::{Entry, Source};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fixtures: flakes, an offline Nix configuration and stand-in `nix` programs.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/nix");

fn fixture(path: &str) -> String {
    format!("{FIXTURES}/{path}")
}

/// True if `nix` runs; otherwise says that `what` is skipped.
fn have_nix(what: &str) -> bool {
    let ran = Command::new("nix").arg("--version").output();
    if ran.is_ok_and(|out| out.status.success()) {
        return true;
    }
    let line = format!(
        "SKIPPED: {what}: 'nix' is not installed (Debian and Ubuntu: apt install nix-bin)\n"
    );
    std::io::stderr().write_all(line.as_bytes()).unwrap();
    false
}

/// `program args` in `dir`, offline: Nix reads the test configuration and keeps its fetch cache
/// in `dir`, and git commits with a fixed author. `env` is set last.
fn run(dir: &TempDir, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir.path())
        .env_remove("MYCO_NIX")
        .env_remove("MYCO_SOCKET")
        .env("NIX_CONF_DIR", fixture("conf"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("GIT_AUTHOR_NAME", "Myco Test")
        .env("GIT_AUTHOR_EMAIL", "test@myco.invalid")
        .env("GIT_COMMITTER_NAME", "Myco Test")
        .env("GIT_COMMITTER_EMAIL", "test@myco.invalid");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn run_ok(dir: &TempDir, program: &str, args: &[&str]) -> String {
    let out = run(dir, program, args, &[]);
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// A git repository `dir/name` holding the files of `source`, committed on master.
fn repo(dir: &TempDir, name: &str, source: &Path) -> PathBuf {
    let repo = dir.join(name);
    fs::create_dir_all(&repo).unwrap();
    for file in fs::read_dir(source).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), repo.join(file.file_name())).unwrap();
    }
    let path = repo.to_str().unwrap();
    run_ok(dir, "git", &["init", "-q", "-b", "master", path]);
    commit(dir, &repo, "first");
    repo
}

/// Commits everything in `repo`; returns the new HEAD.
fn commit(dir: &TempDir, repo: &Path, message: &str) -> String {
    let path = repo.to_str().unwrap();
    run_ok(dir, "git", &["-C", path, "add", "-A"]);
    run_ok(dir, "git", &["-C", path, "commit", "-q", "-m", message]);
    run_ok(dir, "git", &["-C", path, "rev-parse", "HEAD"])
}

/// An operator key `op.key` and a manifest `NAME.json` for service "hello" from `uri`.
fn manifest(dir: &TempDir, name: &str, uri: &str) {
    if !dir.join("op.key").exists() {
        myco_ok(dir, &["keygen", "--out", "op.key"]);
    }
    let text = format!(r#"{{"name": "hello", "flake": {uri:?}}}"#);
    fs::write(dir.join(format!("{name}.json")), text).unwrap();
}

/// `myco sign NAME.json --out NAME.entry --json` with `env`.
fn sign(dir: &TempDir, name: &str, env: &[(&str, &str)]) -> Output {
    let manifest = format!("{name}.json");
    let out = format!("{name}.entry");
    let args = [
        "sign",
        &manifest,
        "--operator-key",
        "op.key",
        "--out",
        &out,
        "--json",
    ];
    run(dir, env!("CARGO_BIN_EXE_myco"), &args, env)
}

/// The locked reference and rev of the flake entry `NAME.entry`.
fn locked(dir: &TempDir, name: &str) -> (String, String) {
    let bytes = fs::read(dir.join(format!("{name}.entry"))).unwrap();
    let entry = Entry::decode(&bytes).unwrap();
    let source = entry.body.spec.as_ref().unwrap().source;
    match source {
        Source::Flake { uri, rev, .. } => (uri.to_string(), hex(&rev)),
        other => panic!("not a flake: {other:?}"),
    }
}

/// Asserts that `out` failed with exit 1, its message holds every one of `needles`, and the
/// entry file `NAME.entry` was not written.
fn assert_refused(dir: &TempDir, name: &str, out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(err.contains("nothing was signed"), "{err}");
    assert!(!dir.join(format!("{name}.entry")).exists());
}

/// A branch locks to its head commit: the entry names that rev, in its reference too, and so
/// does the summary; a new commit on the branch locks to the new rev.
#[test]
fn sign_locks_a_branch_to_its_head_commit() {
    if !have_nix("sign_locks_a_branch_to_its_head_commit") {
        return;
    }
    let dir = TempDir::new("nix-lock-head");
    let repo = repo(&dir, "hello", Path::new(&fixture("hello")));
    let head = run_ok(
        &dir,
        "git",
        &["-C", repo.to_str().unwrap(), "rev-parse", "HEAD"],
    );
    let uri = format!("git+file://{}?ref=master", repo.display());
    manifest(&dir, "one", &uri);
    let out = sign(&dir, "one", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_field(&stdout(&out), "rev"), head);
    assert_eq!(
        locked(&dir, "one"),
        (format!("{uri}&rev={head}"), head.clone())
    );

    fs::write(repo.join("README"), "a second commit\n").unwrap();
    let next = commit(&dir, &repo, "second");
    assert_ne!(next, head);
    manifest(&dir, "two", &uri);
    let out = sign(&dir, "two", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(locked(&dir, "two"), (format!("{uri}&rev={next}"), next));
}

/// A git tree with uncommitted changes names no commit, nor does a plain path: both are refused
/// with the cause, and nothing is written.
#[test]
fn dirty_tree_and_plain_path_are_refused() {
    if !have_nix("dirty_tree_and_plain_path_are_refused") {
        return;
    }
    let dir = TempDir::new("nix-lock-dirty");
    let repo = repo(&dir, "hello", Path::new(&fixture("hello")));
    let mut flake = fs::read_to_string(fixture("hello/flake.nix")).unwrap();
    flake.push_str("# an uncommitted change\n");
    fs::write(repo.join("flake.nix"), flake).unwrap();
    manifest(&dir, "dirty", &format!("git+file://{}", repo.display()));
    let out = sign(&dir, "dirty", &[]);
    assert_refused(&dir, "dirty", &out, &["uncommitted changes", "commit them"]);

    manifest(&dir, "path", &format!("path:{}", fixture("hello")));
    let out = sign(&dir, "path", &[]);
    assert_refused(&dir, "path", &out, &["cannot be locked", "\"path\""]);
}

/// A reference Nix cannot fetch is refused with Nix's own account of why.
#[test]
fn unfetchable_reference_is_refused() {
    if !have_nix("unfetchable_reference_is_refused") {
        return;
    }
    let dir = TempDir::new("nix-lock-missing");
    let missing = dir.join("no-such-repo");
    manifest(
        &dir,
        "missing",
        &format!("git+file://{}?ref=master", missing.display()),
    );
    let out = sign(&dir, "missing", &[]);
    assert_refused(
        &dir,
        "missing",
        &out,
        &[
            "could not lock",
            "(exit 1)",
            "does not appear to be a git repository",
        ],
    );
}

/// Environment variables a test sets.
type Env<'a> = &'a [(&'a str, &'a str)];

/// Each way a `nix` can misbehave is refused with its cause: one that never answers is stopped
/// at the timeout, one that prints garbage or fails is reported, and a missing one says how to
/// install Nix.
#[test]
fn misbehaving_nix_is_refused() {
    let dir = TempDir::new("nix-lock-stand-ins");
    manifest(&dir, "web", "git+https://host/web?ref=main");
    let hang = fixture("stand-in/hang");
    let garbage = fixture("stand-in/garbage");
    let fail = fixture("stand-in/fail");
    let cases: [(Env, &[&str]); 5] = [
        (
            &[("MYCO_NIX", &hang), ("MYCO_NIX_TIMEOUT_MS", "300")],
            &["did not lock", "within 0.3 s", "was stopped"],
        ),
        (
            &[("MYCO_NIX", &garbage)],
            &["its output is not flake metadata"],
        ),
        (
            &[("MYCO_NIX", &fail)],
            &["could not lock", "(exit 1)", "program 'git' failed"],
        ),
        (
            &[("MYCO_NIX", "/nonexistent/nix")],
            &["'/nonexistent/nix' was not found", "apt install nix-bin"],
        ),
        (
            &[("MYCO_NIX", &fail), ("MYCO_NIX_TIMEOUT_MS", "soon")],
            &["MYCO_NIX_TIMEOUT_MS must be a positive number"],
        ),
    ];
    for (env, needles) in cases {
        let out = sign(&dir, "web", env);
        assert_refused(&dir, "web", &out, needles);
    }
}

/// `myco deploy` locks before it connects: when locking fails, the daemon's socket sees no
/// connection at all.
#[test]
fn deploy_sends_nothing_when_locking_fails() {
    let dir = TempDir::new("nix-lock-deploy");
    manifest(&dir, "web", "git+https://host/web?ref=main");
    let socket = dir.join("myco.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let args = [
        "deploy",
        "web.json",
        "--operator-key",
        "op.key",
        "--socket",
        socket.to_str().unwrap(),
    ];
    let fail = fixture("stand-in/fail");
    let out = run(
        &dir,
        env!("CARGO_BIN_EXE_myco"),
        &args,
        &[("MYCO_NIX", &fail)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was signed"),
        "{}",
        stderr(&out)
    );
    let accepted = listener.accept();
    assert!(
        accepted
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "{accepted:?}"
    );
}

/// The real `myco init python` template, its nixpkgs input locked to the stand-in nixpkgs,
/// builds offline from the commit `myco sign` locked, and the program runs and answers `/` and
/// `/healthz` on loopback.
#[test]
fn python_template_builds_offline_and_answers() {
    if !have_nix("python_template_builds_offline_and_answers") {
        return;
    }
    let dir = TempDir::new("nix-template");
    myco_ok(&dir, &["init", "python", "web"]);
    let web = dir.join("web");
    let path = web.to_str().unwrap();
    let stub = repo(&dir, "nixpkgs", Path::new(&fixture("nixpkgs-stub")));
    let stub = format!("git+file://{}?ref=master", stub.display());
    // As the template asks, the flake's inputs are locked and flake.lock committed (here to the
    // stand-in nixpkgs): locking a flake whose inputs are not locked would fetch them.
    run_ok(&dir, "git", &["init", "-q", "-b", "master", path]);
    run_ok(&dir, "git", &["-C", path, "add", "-A"]);
    let lock = ["flake", "lock", path, "--override-input", "nixpkgs", &stub];
    run_ok(&dir, "nix", &lock);
    commit(&dir, &web, "template");
    manifest(&dir, "web", &format!("git+file://{path}?ref=master"));
    let out = sign(&dir, "web", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (uri, _) = locked(&dir, "web");

    let installable = format!("{uri}#default");
    let args = [
        "build",
        "--json",
        "--no-link",
        "--no-write-lock-file",
        &installable,
        "--override-input",
        "nixpkgs",
        &stub,
    ];
    let built = run_ok(&dir, "nix", &args);
    let start = built.find("\"out\":\"").expect(&built) + 7;
    let out_path = &built[start..start + built[start..].find('"').unwrap()];
    assert!(out_path.starts_with("/nix/store/"), "{built}");

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(format!("{out_path}/bin/web"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let root = get(port, "/");
    let health = get(port, "/healthz");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(root.starts_with("HTTP/1.0 200"), "{root}");
    assert!(root.contains("web"), "{root}");
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
}

/// `GET path` on loopback `port`, the whole answer; waits for the server to listen, for at most
/// 20 s (a bound against a server that never starts, not a measure of anything).
fn get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("nothing listens on port {port}: {e}"),
        }
    };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
