//! Boxes fetch builds from each other (issue 16, part 2), with the real Nix: two daemons, each in
//! a mount namespace of its own with an empty directory on `/nix` (two independent stores on one
//! machine), gossip on loopback and serve their binary caches there. Box A builds a no-input
//! flake; once its status offers that version, box B, placed the same version, substitutes it
//! from A's cache (trusting A's certified node key only) without running the builder. Then A's
//! output of a second version is tampered with in A's store: B refuses A's NAR (its hash is not
//! the one A's signed narinfo states) and builds the version itself (`fallback`).
//!
//! Remote builders (issue 16, part 3): a `--builder` box builds a version for a `--build remote`
//! box it is not placed on, which substitutes it from the builder's cache and could not have
//! built it (`--max-jobs 0`).
//!
//! A revoked node's cache (issue 16): B, given the operator's revocation of A's certificate,
//! refuses A's handshakes, so a version A's cache offers is neither asked of A nor signed by a
//! key B trusts: B builds it itself.
//!
//! The builder appends a line to a file outside the stores on every run, which counts the builds.
//! The tests print `P2P substituted_boxes=N builds_on_fetchers=N tampered_refused=N` and `P2P
//! remote_build_ok=N` and `P2P revoked_cache_refused=N`, and write them under
//! `target/test-figures` for the summary line (`tests/p2p-line.sh`). They need root (mount namespaces) and Nix, and print `SKIPPED:` without
//! them.

use myco_core::crypto::cert::certify;
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::{Arch, ServiceSpec, Source};
use myco_testkit::daemon::Daemon;
use myco_testkit::entries::signed_service;
use myco_testkit::git;
use myco_testkit::keys::operator;
use myco_testkit::wait_until;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVICE: &str = "hello";
/// Long enough for a handshake, a build, a closure refresh and a status push or two.
const WAIT: Duration = Duration::from_secs(60);

/// A no-input flake whose builder appends `version` to `marker` on every run, committed to a
/// git repository in `dir`: its locked reference and rev.
fn commit_flake(repo: &Path, marker: &Path, version: u32) -> (String, String) {
    let build = format!(
        "/bin/mkdir -p $out/bin; printf '#!/bin/sh\\\\necho hello {version}\\\\n' > $out/bin/hello; /bin/chmod +x $out/bin/hello"
    );
    commit_flake_building(repo, marker, version, &build)
}

/// As [`commit_flake`], with `build` as the rest of the builder's script after the marker line.
fn commit_flake_building(
    repo: &Path,
    marker: &Path,
    version: u32,
    build: &str,
) -> (String, String) {
    let flake = format!(
        r#"{{
  outputs = {{ self }}: {{
    packages.x86_64-linux.default = derivation {{
      name = "hello";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo {version} >> {marker}; {build}" ];
    }};
  }};
}}
"#,
        marker = marker.display()
    );
    fs::create_dir_all(repo).unwrap();
    fs::write(repo.join("flake.nix"), flake).unwrap();
    git::commit_flake(repo, &format!("v{version}"))
}

/// The service's entry at `clock` for the flake at `(uri, rev)`, on two boxes; `gpu_only`: only
/// a box with a GPU is eligible (box A), so A builds a version before B is placed it.
fn entry(clock: u64, (uri, rev): (&str, &str), gpu_only: bool) -> Vec<u8> {
    let rev: [u8; 20] =
        core::array::from_fn(|i| u8::from_str_radix(&rev[2 * i..2 * i + 2], 16).unwrap());
    let mut spec = ServiceSpec::minimal(Source::Flake {
        uri,
        attr: "default",
        rev,
        nar_hash: [0; 32],
    });
    spec.replicas = 2;
    spec.requires.gpu = gpu_only;
    signed_service(&operator(), SERVICE, clock, Some(spec))
}

/// `command` run in a mount namespace of its own with `store` bind-mounted on `/nix`, so the
/// daemon and every child (builds, `nix-store`) see a store of their own.
fn in_own_store(command: &Command, store: &Path) -> Command {
    fs::create_dir_all(store).unwrap();
    let mut c = Command::new("unshare");
    let script = "mount --bind \"$0\" /nix && exec \"$@\"";
    c.args(["-m", "--propagation", "private", "sh", "-c", script]);
    c.arg(store)
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

/// Starts `d` with the executor, builds through the real `nix`, the cache on loopback, in a
/// store of its own; `join`: a peer's gossip address.
fn start(d: &mut Daemon, join: Option<&str>, flags: &[&str]) {
    d.set_cache_listen("127.0.0.1:0");
    let mut args: Vec<&str> = join.map(|a| vec!["--join", a]).unwrap_or_default();
    args.extend_from_slice(flags);
    let mut command = d.executor_command(&args);
    // The tests' Nix has neither a sandbox nor build users (`tests/nix/conf`).
    command.arg("--allow-root-builds").arg("--nix").arg("nix");
    command.arg("--gcroot-dir").arg(d.dir.join("gcroots"));
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/nix/conf");
    command.env("NIX_CONF_DIR", conf);
    command.env("XDG_CACHE_HOME", d.dir.join("xdg"));
    let store = d.dir.join("nix");
    d.start(in_own_store(&command, &store));
}

/// Whether `d`'s `/nodes` shows a box offering the version of `rev` (its build key, as the GC
/// root's name makes it: the boxes' certificates say `any`, so their outputs are for the system
/// of this machine's Nix).
fn offered(d: &Daemon, rev: &str) -> bool {
    let system = format!("{}-linux", std::env::consts::ARCH);
    let root = format!("{SERVICE}-{}-{system}", &rev[..12]);
    let key = myco_core::executor::build_key(&root);
    d.get("/nodes").1.contains(&format!("\"{key:016x}\""))
}

fn builds(marker: &Path) -> usize {
    fs::read_to_string(marker).map_or(0, |t| t.lines().count())
}

/// The store path the unit of `SERVICE` on `d` runs, once written.
fn unit_out(d: &Daemon) -> Option<String> {
    let unit = fs::read_to_string(d.dir.join("units").join("myco-hello.service")).ok()?;
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=\""))?;
    Some(line.split("/bin/").next()?.to_owned())
}

fn skip() -> Option<&'static str> {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if uid.map_or(true, |u| u.trim_ascii() != b"0") {
        return Some("needs root for mount namespaces");
    }
    let found = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !found("nix") || !found("unshare") {
        return Some("needs nix and unshare");
    }
    None
}

/// The two boxes: A (with a GPU, so an entry can be placed on it alone) and B joined to it, both
/// with their caches on; A's cache port.
fn two_boxes() -> (Daemon, Daemon, u16) {
    let op = operator();
    let mut a = Daemon::new("p2p-a", &op, 61);
    let a_key = SigningKey::from_seed([61; 32]).unwrap().public_key();
    let cert = certify(&op, &a_key, 0, Arch::Any, true, 0);
    fs::write(a.dir.join("node.cert"), cert).unwrap();
    let mut b = Daemon::new("p2p-b", &op, 62);
    start(&mut a, None, &[]);
    start(&mut b, Some(&a.listen_addr()), &[]);
    let alive = |d: &Daemon| d.get("/health").1.contains("\"peers_alive\":1");
    wait_until(WAIT, "the two boxes see each other", || {
        alive(&a) && alive(&b)
    });
    let a_port = a.cache_port().expect("A's cache listens");
    (a, b, a_port)
}

/// A builds the version of `(uri, rev)` (placed on A alone, at `clock`), and B hears A offer it.
fn built_on_a(a: &Daemon, b: &Daemon, clock: u64, (uri, rev): (&str, &str)) {
    let before = unit_out(a);
    a.deploy(&entry(clock, (uri, rev), true));
    wait_until(WAIT, "A runs its build", || unit_out(a) != before);
    wait_until(WAIT, "B hears A's offer", || offered(b, rev));
}

/// The version of `(uri, rev)` placed on both boxes at `clock`: B runs it once this returns.
/// B may still be removing its unit of the previous entry (placed on A alone) when this starts,
/// so a unit that went away is not the new version: only a unit naming another output is.
fn placed_on_b(a: &Daemon, b: &Daemon, clock: u64, (uri, rev): (&str, &str)) {
    let before = unit_out(b);
    a.deploy(&entry(clock, (uri, rev), false));
    wait_until(WAIT, "B runs the version", || {
        let now = unit_out(b);
        now.is_some() && now != before
    });
}

/// A's output of the version its unit runs, changed in A's store behind Nix's back.
fn tamper(a: &Daemon) -> std::path::PathBuf {
    let out = unit_out(a).unwrap();
    let store = a.dir.join("nix").join(out.trim_start_matches("/nix/"));
    let program = store.join("bin/hello");
    let mode = |m: u32| fs::Permissions::from_mode(m);
    fs::set_permissions(program.parent().unwrap(), mode(0o755)).unwrap();
    fs::set_permissions(&program, mode(0o755)).unwrap();
    fs::write(&program, "#!/bin/sh\necho tampered\n").unwrap();
    program
}

/// A's node id, which names its key in Nix's trusted keys.
fn a_id() -> u64 {
    myco_core::crypto::keys::node_id(&SigningKey::from_seed([61; 32]).unwrap().public_key().0)
}

#[test]
fn boxes_substitute_from_peers_and_refuse_tampered_paths() {
    if let Some(why) = skip() {
        println!("SKIPPED: {why}");
        return;
    }
    let (a, b, a_port) = two_boxes();
    let marker = a.dir.join("builder-runs");
    let repo = a.dir.join("repo");
    let (uri, rev) = commit_flake(&repo, &marker, 1);
    built_on_a(&a, &b, 1, (&uri, &rev));
    assert_eq!(builds(&marker), 1, "A ran the builder");
    placed_on_b(&a, &b, 2, (&uri, &rev));
    assert_eq!(unit_out(&b), unit_out(&a), "the same store path");
    let calls = fs::read_to_string(b.dir.join("systemd-run.calls")).unwrap();
    let peer = format!("--option extra-substituters http://127.0.0.1:{a_port} ");
    assert!(calls.contains(&peer), "B asked A's cache: {calls}");
    let trusted = format!("--option extra-trusted-public-keys {:016x}:", a_id());
    assert!(
        calls.contains(&trusted),
        "B trusts A's certified key: {calls}"
    );
    let builds_on_fetchers = builds(&marker) - 1;
    let fetched = b.metric("myco_builds_from_peers_total");
    assert_eq!(
        (builds_on_fetchers, fetched),
        (0, 1.0),
        "B substituted, built nothing"
    );

    // Version 2: A builds it, then its output is tampered with in A's store.
    let (uri2, rev2) = commit_flake(&repo, &marker, 2);
    built_on_a(&a, &b, 3, (&uri2, &rev2));
    assert_eq!(builds(&marker), 2);
    let program = tamper(&a);
    placed_on_b(&a, &b, 4, (&uri2, &rev2));
    let log = fs::read_to_string(b.state.join("builds").join("hello.log")).unwrap();
    let tried = format!("from 'http://127.0.0.1:{a_port}'");
    let refused = log.contains(&tried)
        && log.contains("error: hash mismatch importing path")
        && builds(&marker) == 3
        && b.metric("myco_builds_from_peers_total") == 1.0;
    assert!(refused, "B refused A's tampered NAR and built: {log}");
    let ran = fs::read_to_string(&program).unwrap();
    assert!(ran.contains("tampered"), "A's copy stays tampered");
    myco_testkit::figures::record(
        "substitute",
        &format!(
            "P2P substituted_boxes={} builds_on_fetchers={builds_on_fetchers} tampered_refused={}",
            fetched as u32,
            u32::from(refused)
        ),
    );
}

/// A `--builder` box A and a `--build remote` box B (with a GPU, so an entry can be placed on
/// it alone), joined and seeing each other.
fn builder_and_remote() -> (Daemon, Daemon) {
    let op = operator();
    let mut a = Daemon::new("remote-a", &op, 63);
    let mut b = Daemon::new("remote-b", &op, 64);
    let b_key = SigningKey::from_seed([64; 32]).unwrap().public_key();
    let cert = certify(&op, &b_key, 0, Arch::Any, true, 0);
    fs::write(b.dir.join("node.cert"), cert).unwrap();
    start(&mut a, None, &["--builder"]);
    start(&mut b, Some(&a.listen_addr()), &["--build", "remote"]);
    let alive = |d: &Daemon| d.get("/health").1.contains("\"peers_alive\":1");
    wait_until(WAIT, "the two boxes see each other", || {
        alive(&a) && alive(&b)
    });
    (a, b)
}

/// Issue 16's remote builder: B, which never builds, is placed a version no box offers. It asks
/// A, the builder; A builds it (the builder runs once, in A's store) though the service is not
/// placed on A, offers it, and B substitutes it from A's cache with `--max-jobs 0`, so Nix on B
/// could not have built it. Prints `P2P remote_build_ok=1`.
#[test]
fn a_remote_box_gets_its_build_from_the_builder() {
    if let Some(why) = skip() {
        println!("SKIPPED: {why}");
        return;
    }
    let (a, b) = builder_and_remote();
    let marker = a.dir.join("builder-runs");
    let (uri, rev) = commit_flake(&a.dir.join("repo"), &marker, 7);
    let before = unit_out(&b);
    a.deploy(&entry(1, (&uri, &rev), true));
    wait_until(WAIT, "B runs the version A built for it", || {
        unit_out(&b) != before
    });
    assert_eq!(builds(&marker), 1, "the builder ran once, on A");
    assert_eq!(unit_out(&a), None, "the service is not placed on A");
    let a_calls = fs::read_to_string(a.dir.join("systemd-run.calls")).unwrap();
    let b_calls = fs::read_to_string(b.dir.join("systemd-run.calls")).unwrap();
    assert!(!a_calls.contains("--max-jobs 0"), "A builds: {a_calls}");
    assert!(
        b_calls.contains("--max-jobs 0"),
        "B may only fetch: {b_calls}"
    );
    assert!(
        b_calls.contains("extra-substituters http://127.0.0.1:"),
        "B fetched from A's cache: {b_calls}"
    );
    let ok = a.metric("myco_builds_for_peers_total") == 1.0
        && b.metric("myco_builds_requested_total") >= 1.0
        && b.metric("myco_builds_from_peers_total") == 1.0;
    assert!(ok, "A built for B, B asked and fetched");
    myco_testkit::figures::record("remote", &format!("P2P remote_build_ok={}", u32::from(ok)));
}

/// Issue 16: the builder's build of a version fails, and B, which never builds, learns it. A
/// builds it once for B and fails; A refuses B's next request during the failure's backoff and
/// answers that its build failed (`BuildFailed`); B counts a failed build of its own and reports
/// the service `build-failed`. B never ran the builder. Prints `P2P remote_build_failed_seen=1`.
#[test]
fn a_remote_box_learns_that_the_builder_s_build_failed() {
    if let Some(why) = skip() {
        println!("SKIPPED: {why}");
        return;
    }
    let (a, b) = builder_and_remote();
    let marker = a.dir.join("builder-runs");
    let (uri, rev) = commit_flake_building(&a.dir.join("repo"), &marker, 8, "exit 1");
    a.deploy(&entry(1, (&uri, &rev), true));
    wait_until(WAIT, "B counts the builder's failure", || {
        b.metric("myco_builds_failed_on_builders_total") >= 1.0
    });
    let services = b.get("/services").1;
    assert!(services.contains("\"build-failed\""), "{services}");
    assert!(a.metric("myco_build_failed_answers_total") >= 1.0);
    assert_eq!(
        builds(&marker),
        1,
        "the builder ran once, on A, within its backoff"
    );
    let b_calls = fs::read_to_string(b.dir.join("systemd-run.calls")).unwrap_or_default();
    assert!(!b_calls.contains("nix build"), "B built nothing: {b_calls}");
    myco_testkit::figures::record("remote-failed", "P2P remote_build_failed_seen=1");
}

/// Box A (with a GPU, certified at 0) alone, its cache on, running and offering the version of
/// `(uri, rev)`, which it built.
fn a_offering(uri: &str, rev: &str) -> Daemon {
    let op = operator();
    let mut a = Daemon::new("revoked-a", &op, 61);
    let a_key = SigningKey::from_seed([61; 32]).unwrap().public_key();
    fs::write(
        a.dir.join("node.cert"),
        certify(&op, &a_key, 0, Arch::Any, true, 0),
    )
    .unwrap();
    start(&mut a, None, &[]);
    a.deploy(&entry(1, (uri, rev), true));
    wait_until(WAIT, "A runs its build", || unit_out(&a).is_some());
    wait_until(WAIT, "A offers it", || offered(&a, rev));
    a
}

/// A box certified at 1, as the operator re-certifies the boxes it keeps before revoking.
fn kept_box(name: &str, seed: u8) -> Daemon {
    let op = operator();
    let d = Daemon::new(name, &op, seed);
    let key = SigningKey::from_seed([seed; 32]).unwrap().public_key();
    fs::write(
        d.dir.join("node.cert"),
        certify(&op, &key, 0, Arch::Any, false, 1),
    )
    .unwrap();
    d
}

/// Box B, started with a revocation of every certificate issued below 1 (A's) and joined to A
/// and to C, a box kept (which only fetches, `--build remote`, so B has nothing to fetch from
/// it): once B sees C and refused A's handshake. A box whose peers are all unreachable keeps
/// what it runs and starts nothing (`reconcile::mode`), hence C.
fn b_revoking_a(a: &Daemon) -> (Daemon, Daemon) {
    let mut c = kept_box("revoked-c", 65);
    start(&mut c, None, &["--build", "remote"]);
    let mut b = kept_box("revoked-b", 62);
    let mut record = [0u8; myco_core::config::REVOCATION_BYTES_MAX];
    let n = myco_core::crypto::revocation::encode_revocation(&operator(), 1, &mut record);
    let revocation = b.dir.write("revocation-1", &record[..n]);
    let c_addr = c.listen_addr();
    let flags = [
        "--revocation",
        revocation.to_str().unwrap(),
        "--join",
        &c_addr,
    ];
    start(&mut b, Some(&a.listen_addr()), &flags);
    assert_eq!(b.metric("myco_revocation_block"), 1.0);
    let refused = "myco_crypto_refusals_total{kind=\"revoked_key\"}";
    wait_until(WAIT, "B sees C and refuses A's revoked certificate", || {
        b.get("/health").1.contains("\"peers_alive\":1") && b.metric(refused) >= 1.0
    });
    (b, c)
}

/// Issue 16: a revoked node's cache is not trusted. A builds a version and offers it from its
/// cache; B, given the operator's revocation of A's certificate, joins A. Placed the version, B
/// neither names A's cache as a substituter nor trusts A's key, and builds the version itself
/// (with the same setup and no revocation, `boxes_substitute_from_peers_and_refuse_tampered_paths`
/// shows B fetching it from A). Prints `P2P revoked_cache_refused=1`.
#[test]
fn a_revoked_box_s_cache_is_not_trusted() {
    if let Some(why) = skip() {
        println!("SKIPPED: {why}");
        return;
    }
    let repo = myco_testkit::dir::TempDir::new("revoked-repo");
    let marker = repo.join("builder-runs");
    let (uri, rev) = commit_flake(&repo.join("repo"), &marker, 5);
    let a = a_offering(&uri, &rev);
    assert_eq!(builds(&marker), 1, "A ran the builder");
    let a_port = a.cache_port().expect("A's cache listens");
    let (b, _c) = b_revoking_a(&a);
    // A cannot reach B: the entry placed on both goes to B directly.
    let (status, body) = b.deploy(&entry(2, (&uri, &rev), false));
    assert_eq!(status, 200, "B takes the entry: {body}");
    wait_until(WAIT, "B runs the version", || unit_out(&b).is_some());
    assert_eq!(unit_out(&b), unit_out(&a), "the same store path");
    let calls = fs::read_to_string(b.dir.join("systemd-run.calls")).unwrap();
    let peer = format!("http://127.0.0.1:{a_port}");
    let key = format!("{:016x}:", a_id());
    let refused = !calls.contains(&peer)
        && !calls.contains(&key)
        && builds(&marker) == 2
        && b.metric("myco_builds_from_peers_total") == 0.0
        && b.metric("myco_builds_total") >= 1.0;
    assert!(refused, "B built the version itself, without A: {calls}");
    myco_testkit::figures::record(
        "revoked",
        &format!("P2P revoked_cache_refused={}", u32::from(refused)),
    );
}
