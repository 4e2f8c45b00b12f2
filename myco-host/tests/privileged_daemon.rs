//! `myco-d --privileged`: the daemon runs as an unprivileged user (nobody) and asks `myco-priv`,
//! running as root, for its unit work. The unit directory is root's (the daemon cannot write it),
//! and the daemon's own `systemctl` and `journalctl` are traps that record any call: a deploy
//! still writes the unit, runs the helper's (stand-in) `systemctl` in order, reads the unit's
//! state back through the pipe the daemon passed, `/logs` still reads the journal, a flake
//! version is built (its log in the daemon's file) and run, and a full store is still collected:
//! the helper verifies the operator's signature on every entry the daemon sends, so these show
//! the daemon sends the signed bytes from its store. A helper serving another uid, or trusting
//! another operator key than the daemon's, refuses, and the daemon logs and counts each refusal.
//!
//! Needs root (to run the daemon as another user): in `make test-root`.

use myco_core::crypto::SigningKey;
use myco_core::schema::entry::{Check, Health};
use myco_testkit::daemon::Daemon;
use myco_testkit::dir::TempDir;
use myco_testkit::entries::{checked_entry, entry, flake_entry, TRUE_PATH};
use myco_testkit::keys::{key, operator};
use myco_testkit::{hex, wait_until, FAKE_JOURNALCTL, FAKE_SYSTEMCTL, FAKE_SYSTEMD_RUN};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The unprivileged user the daemon runs as.
const NOBODY: u32 = 65534;

/// A trap for the daemon's own tools: records that it was called, and fails. Reading Nix's
/// configuration at start (`nix show-config`: the systems it builds for, whether builders run as
/// build users) is the daemon's own, as `nix-store --dump` is: read-only, nothing the helper
/// guards; here it answers, without a record, as a Nix with build users.
const TRAP: &str =
    "#!/bin/sh\ncase \"$*\" in *show-config*) echo 'build-users-group = nixbld'; exit 0;; esac\n\
echo \"$0 $*\" >> \"$(dirname \"$0\")/daemon-calls\"\nexit 1\n";

/// A stand-in collector: records its run and says what it freed.
const COLLECTOR: &str = "#!/bin/sh\necho run >> \"$(dirname \"$0\")/gc-runs\"\n\
                         echo '3 store paths deleted, 2.00 MiB freed'\n";

/// A stand-in `nix`: a Nix with build users when asked for its configuration (the helper asks
/// before a build); otherwise records its command line, says it is building on stderr (the build
/// log), and prints one built output.
const NIX: &str =
    "#!/bin/sh\ncase \"$*\" in *show-config*) echo 'build-users-group = nixbld'; exit 0;; esac\n\
                   echo \"nix $*\" >> \"$(dirname \"$0\")/calls\"\n\
                   echo 'building web' >&2\n\
                   echo '[{\"drvPath\":\"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web.drv\",\
                   \"outputs\":{\"out\":\"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web\"}}]'\n";

/// A stand-in `nix-store` for the cache's closure query: the requisites of any root are the
/// stand-in `nix`'s output, and its registration is one whole `--dump-db` record.
const NIX_STORE: &str = "#!/bin/sh\nout=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web\n\
                         case \"$1\" in\n--query) echo $out ;;\n\
                         --dump-db) printf '%s\\n%s\\n1234\\n\\n0\\n' $out \
                         abababababababababababababababababababababababababababababababab ;;\n\
                         esac\n";

/// `myco-priv` as root, serving `allow_uid` for the cluster of `operator`, writing units to
/// `<dir>/units` and running the kit's stand-ins from `<dir>` (so the stand-in `systemctl`
/// reports on the units it wrote).
struct Helper {
    child: Child,
    socket: PathBuf,
    /// Root's directory holding `gcroots`, as `/var/lib` holds `/var/lib/myco-gcroots`.
    roots: TempDir,
}

impl Helper {
    /// Where builds link their results: root's, the daemon's group may write (delete old roots).
    fn gcroots(&self) -> PathBuf {
        self.roots.join("gcroots")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.write(name, text);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn start_helper(dir: &TempDir, allow_uid: u32, operator: &SigningKey) -> Helper {
    let socket = dir.join("priv.sock");
    // The helper builds only into a directory only root may replace (`gcroot_dir_is_roots`).
    let roots = TempDir::new("priv-roots");
    fs::set_permissions(roots.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let gcroots = roots.join("gcroots");
    fs::create_dir_all(&gcroots).unwrap();
    std::os::unix::fs::chown(&gcroots, Some(0), Some(NOBODY)).unwrap();
    fs::set_permissions(&gcroots, fs::Permissions::from_mode(0o770)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_myco-priv"))
        .args(["--operator", &hex(&operator.public_key().0)])
        .args(["--allow-uid", &allow_uid.to_string(), "--listen"])
        .arg(&socket)
        .arg("--unit-dir")
        .arg(dir.join("units"))
        .arg("--systemctl")
        .arg(tool(dir, "systemctl", FAKE_SYSTEMCTL))
        .arg("--journalctl")
        .arg(tool(dir, "journalctl", FAKE_JOURNALCTL))
        .arg("--systemd-run")
        .arg(tool(dir, "systemd-run", FAKE_SYSTEMD_RUN))
        .arg("--nix-collect-garbage")
        .arg(tool(dir, "nix-collect-garbage", COLLECTOR))
        .arg("--nix")
        .arg(tool(dir, "nix", NIX))
        .arg("--gcroot-dir")
        .arg(&gcroots)
        .arg("--nix-store")
        .arg(tool(dir, "nix-store", NIX_STORE))
        .stdin(Stdio::null())
        .stderr(fs::File::create(dir.join("priv.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "myco-priv listens", || {
        UnixStream::connect(&socket).is_ok()
    });
    // The packaged socket's group grants the daemon's user access; here, ownership does.
    std::os::unix::fs::chown(&socket, Some(NOBODY), Some(NOBODY)).unwrap();
    Helper {
        child,
        socket,
        roots,
    }
}

/// The daemon of `d` as nobody, asking the helper at `socket`: everything in its directory is
/// nobody's but the unit directory, which stays root's (0755), as `/etc/systemd/system` is.
fn start_daemon(d: &mut Daemon, helper: &Helper) {
    let socket = &helper.socket;
    let units = d.dir.join("units");
    fs::create_dir_all(&units).unwrap();
    let trap_systemctl = tool(&d.dir, "daemon-systemctl", TRAP);
    let trap_journalctl = tool(&d.dir, "daemon-journalctl", TRAP);
    let trap_collector = tool(&d.dir, "daemon-nix-collect-garbage", TRAP);
    let trap_nix = tool(&d.dir, "daemon-nix", TRAP);
    // The helper links builds here as root; the daemon, which prunes old versions, may write it.
    let gcroots = helper.gcroots();
    // Above 85% of the store's disk in use: a collection is due at once.
    let usage = d.dir.write("usage", "900\n");
    let status = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(d.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::chown(&units, Some(0), Some(0)).unwrap();
    fs::set_permissions(&units, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // --strict-alloc: an allocation after ready fails the daemon, so every request path here
    // is shown to allocate nothing.
    let privileged = [
        "--strict-alloc",
        "--dns",
        "off",
        "--privileged",
        socket.to_str().unwrap(),
        "--nix-collect-garbage",
        trap_collector.to_str().unwrap(),
        "--store-usage-file",
        usage.to_str().unwrap(),
        "--nix",
        trap_nix.to_str().unwrap(),
        "--gcroot-dir",
        gcroots.to_str().unwrap(),
    ];
    let mut command = d.executor_command_with(&privileged, (&trap_systemctl, &trap_journalctl));
    command
        .uid(NOBODY)
        // As root, std also drops the supplementary groups when it sets the uid.
        .gid(NOBODY);
    d.start(command);
}

fn calls(d: &Daemon) -> Vec<String> {
    let text = fs::read_to_string(d.dir.join("calls")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with("show"))
        .map(str::to_owned)
        .collect()
}

/// A flake version is built by the helper's nix from the signed entry, its log in the daemon's
/// file, and its unit runs the built program; the cache's closure query is asked of the helper.
fn built_and_served_through_the_helper(d: &Daemon, unit: &Path, gcroots: &Path) {
    let rev = "a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7";
    let uri = format!("git+file:///srv/web?rev={rev}");
    let flake = flake_entry(&operator(), "web", 2, (&uri, "default", rev));
    assert_eq!(d.deploy(&flake).0, 200);
    let program = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web/bin/web";
    wait_until(Duration::from_secs(30), "the built version runs", || {
        fs::read_to_string(unit).is_ok_and(|t| t.contains(program))
    });
    let nix = calls(d)
        .into_iter()
        .find(|c| c.starts_with("nix build"))
        .unwrap();
    let link = gcroots.join("web-a7a7a7a7a7a7");
    assert!(
        nix.contains(&format!("--out-link {} {uri}#default", link.display())),
        "{nix}"
    );
    // The cache's closure query of the roots: asked of the helper, its output read back. The
    // query leaves out a root whose path is gone, so the root names a path this machine has.
    let present = fs::read_dir("/nix/store")
        .ok()
        .and_then(|mut d| d.find_map(Result::ok));
    match present {
        Some(path) => {
            std::os::unix::fs::symlink(path.path(), &link).unwrap();
            wait_until(
                Duration::from_secs(10),
                "the cache serves the build",
                || d.metric("myco_cache_paths") == 1.0,
            );
            let transient = fs::read_to_string(d.dir.join("systemd-run.calls")).unwrap();
            assert!(
                transient.contains("--unit=myco-cache-closure"),
                "{transient}"
            );
        }
        None => println!("SKIPPED the cache's closure query: no /nix/store here"),
    }
    let build_log = fs::read_to_string(d.state.join("builds/web.log")).unwrap();
    assert_eq!(build_log, "building web\n");
    let transient = fs::read_to_string(d.dir.join("systemd-run.calls")).unwrap();
    assert!(transient.contains("--unit=myco-build-web"), "{transient}");
}

/// A deploy, `/logs`, a build, the cache's query and a collection through the helper, from a
/// daemon that could do none of them itself.
#[test]
fn an_unprivileged_daemon_runs_services_through_myco_priv() {
    let op = operator();
    let mut d = Daemon::new("priv-daemon", &op, 31);
    d.set_cache_listen("127.0.0.1:0");
    let helper = start_helper(&d.dir, NOBODY, &op);
    start_daemon(&mut d, &helper);
    let pid = d.child.as_ref().unwrap().id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "the daemon runs as nobody: {uid_line}"
    );

    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    let unit = d.dir.join("units/myco-web.service");
    wait_until(Duration::from_secs(30), "the unit runs", || {
        d.get("/services/web")
            .1
            .contains(r#""rollout":{"state":"done"}"#)
    });
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.starts_with("# myco: "), "{text}");
    assert!(text.contains("DynamicUser=yes"), "{text}");
    assert_eq!(
        calls(&d)[..1],
        ["enable --now myco-web.service"],
        "the helper's systemctl ran (enable reloads systemd itself)"
    );
    // The state came back through the daemon's pipe: `show` ran in the helper, and the daemon
    // parsed its output.
    let services = d.get("/services/web").1;
    assert!(services.contains(r#""state":"running""#), "{services}");

    let (status, body) = d.get("/logs?service=web&lines=2");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("journal of --unit=myco-web.service"),
        "{body}"
    );

    built_and_served_through_the_helper(&d, &unit, &helper.gcroots());

    // The collection ran in the helper (in a transient unit) and its output came back.
    wait_until(
        Duration::from_secs(10),
        "the bytes freed are counted",
        || d.metric("myco_gc_freed_bytes_total") == 2.0 * 1024.0 * 1024.0,
    );
    assert_eq!(fs::read_to_string(d.dir.join("gc-runs")).unwrap(), "run\n");
    let transient = fs::read_to_string(d.dir.join("systemd-run.calls")).unwrap();
    assert!(transient.contains("--unit=myco-gc"), "{transient}");

    assert!(
        !d.dir.join("daemon-calls").exists(),
        "the daemon ran a tool itself"
    );
    assert_eq!(d.metric("myco_privileged_refusals_total"), 0.0);
    assert_eq!(d.metric("myco_privileged_failures_total"), 0.0);
}

/// A helper that serves another uid refuses the daemon; the daemon logs the reason, counts the
/// refusal, and nothing is written.
#[test]
fn refusals_are_logged_and_counted() {
    let op = operator();
    let mut d = Daemon::new("priv-refused", &op, 32);
    let helper = start_helper(&d.dir, NOBODY - 1, &op);
    start_daemon(&mut d, &helper);
    assert_eq!(d.deploy(&entry(&op, "web", 1)).0, 200);
    wait_until(Duration::from_secs(30), "the refusal is counted", || {
        d.metric("myco_privileged_refusals_total") >= 1.0
    });
    assert!(
        d.log()
            .contains("myco-priv refused a request: uid 65534 may not use myco-priv"),
        "{}",
        d.log()
    );
    assert!(!d.dir.join("units/myco-web.service").exists());
    assert!(calls(&d).is_empty(), "{:?}", calls(&d));
    assert!(!d.dir.join("daemon-calls").exists());
}

/// A daemon whose operator key is not the helper's (as a compromised daemon told to trust its
/// own key would be) deploys an entry that key signed: the helper refuses the well-formed unit
/// write, the daemon logs and counts the refusal, and the unit directory stays empty.
#[test]
fn entries_of_another_operator_are_refused() {
    let forger = key("forger");
    let mut d = Daemon::new("priv-forged", &forger, 34);
    let helper = start_helper(&d.dir, NOBODY, &operator());
    start_daemon(&mut d, &helper);
    assert_eq!(d.deploy(&entry(&forger, "web", 1)).0, 200);
    wait_until(Duration::from_secs(30), "the refusal is counted", || {
        d.metric("myco_privileged_refusals_total") >= 1.0
    });
    let why = format!(
        "myco-priv refused a request: the entry names key {:08x}, not the cluster's operator key",
        forger.public_key().key_id()
    );
    assert!(d.log().contains(&why), "{}", d.log());
    let units: Vec<_> = fs::read_dir(d.dir.join("units")).unwrap().collect();
    assert!(units.is_empty(), "{units:?}");
    assert!(calls(&d).is_empty(), "{:?}", calls(&d));
    assert!(!d.dir.join("daemon-calls").exists());
}

/// An exec health check is asked of the helper, which reads the command and the sandbox from the
/// signed entry and runs it in the service's transient unit; its exit reaches the daemon.
#[test]
fn exec_health_checks_run_through_myco_priv() {
    let op = operator();
    let mut d = Daemon::new("priv-check", &op, 33);
    let helper = start_helper(&d.dir, NOBODY, &op);
    start_daemon(&mut d, &helper);
    let marker = d.dir.join("checked");
    let script = format!("echo ran >> {}", marker.display());
    let argv = heapless::Vec::from_slice(&["/bin/sh", "-c", &script]).unwrap();
    let health = Health {
        check: Check::Exec { argv },
        interval_s: 1,
        timeout_s: 1,
        failures: 2,
    };
    let exec = checked_entry(&op, ("probed", 1), TRUE_PATH, 9000, health);
    assert_eq!(d.deploy(&exec).0, 200);
    wait_until(Duration::from_secs(15), "the check ran twice", || {
        fs::read_to_string(&marker).is_ok_and(|t| t.lines().count() >= 2)
    });
    let runs = fs::read_to_string(d.dir.join("systemd-run.calls")).unwrap();
    let check = runs
        .lines()
        .find(|l| l.contains("--unit=myco-check-probed"))
        .expect("the exec check ran through the helper's systemd-run");
    for property in ["DynamicUser=yes", "User=myco-probed", "RuntimeMaxSec=1"] {
        assert!(check.contains(&format!("--property={property}")), "{check}");
    }
    // It passes: the service is not marked unhealthy, and nothing was refused.
    let services = d.get("/services/probed").1;
    assert!(!services.contains("unhealthy"), "{services}");
    assert_eq!(d.metric("myco_privileged_refusals_total"), 0.0);
    assert!(!d.dir.join("daemon-calls").exists());
}
