//! A hung `systemctl` is killed: the host's executor, driven with a clock past the core's
//! `SYSTEMCTL_TIMEOUT_MS`, kills the stand-in's whole process group (the stand-in and the
//! `sleep` it started), reports the command failed, and the core retries it after the usual
//! wait. The clock is passed in, so the test does not wait out the minute. No step allocates:
//! the daemon steps the executor after ready, under its refusing allocator.

use myco_core::config::{COMMAND_RETRY_MS, SYSTEMCTL_TIMEOUT_MS, WAL_CHECKPOINT_BYTES};
use myco_core::crypto::cert::certify;
use myco_core::schema::entry::Arch;
use myco_core::{Instant, Node, NodeConfig};
use myco_host::arena::{leak_bytes, ExecutorArena};
use myco_host::audit::{AuditLog, LINE_BYTES_MAX};
use myco_host::daemon::build::BuildConfig;
use myco_host::daemon::executor::{Executor, NixSetup};
use myco_host::daemon::gc::GcConfig;
use myco_host::flight::Logger;
use myco_testkit::alloc::{allocations, CountingAllocator};
use myco_testkit::dir::TempDir;
use myco_testkit::keys::{key, operator, seed};
use myco_testkit::wait_until;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Counts per thread, so the harness's other threads do not count.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Steps the executor at `now_ms` and adds what the step allocated to `allocated`.
fn step(e: &mut Executor, node: &Node, now_ms: u64, allocated: &mut u64) {
    let before = allocations();
    e.step(node, now_ms);
    *allocated += allocations() - before;
}

/// A stand-in that records its start, starts a `sleep` that would outlive it, writes the
/// sleep's pid, and waits for it: a systemctl stuck on a stop job. The sleep is short enough
/// that a failed run leaves nothing behind for long.
const HANGING_SYSTEMCTL: &str = "#!/bin/sh
echo \"$*\" >> \"$(dirname \"$0\")/calls\"
sleep 30 &
echo $! > \"$(dirname \"$0\")/sleep.pid\"
wait
";

fn node() -> Box<Node> {
    let op = operator();
    let node_seed = seed("timeout-node");
    let cert = certify(
        &op,
        &key("timeout-node").public_key(),
        0,
        Arch::X86_64,
        false,
        0,
    );
    let config = NodeConfig {
        node_seed,
        cert: &cert,
        operator: op.public_key(),
        revocation_block: 0,
        seed: 1,
        join: &[],
        wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
        profile: myco_core::config::Profile::LAN,
        bridge_seeds: &[],
        relay: false,
        behind_nat: false,
        own_addrs: &[],
    };
    Box::new(Node::new(&config, Instant(0)).expect("a valid identity"))
}

/// Whether process `pid` is gone (or a zombie its new parent has yet to reap).
fn gone(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The host's executor with units in `<dir>/units`, `systemctl` as given, no store (the
/// collector never runs) and nothing to build.
fn executor(dir: &TempDir, systemctl: &std::path::Path) -> Executor {
    Executor::new(
        dir.join("units"),
        (systemctl.to_str().unwrap(), "journalctl"),
        AuditLog::open(&dir.join("audit.log"), leak_bytes(LINE_BYTES_MAX)).unwrap(),
        // No store here: the collector never runs, and nothing is built.
        NixSetup {
            build: BuildConfig {
                nix: "nix".into(),
                systemd_run: "systemd-run".into(),
                gcroot_dir: Some(dir.join("gcroots")),
                timeout_ms: 1_000,
                local: true,
                builder: false,
                allow_root_builds: false,
            },
            gc: GcConfig {
                store_dir: dir.join("no-store"),
                collect_garbage: "nix-collect-garbage".into(),
                systemd_run: "systemd-run".into(),
                usage_file: None,
            },
            state_dir: dir.path(),
        },
        false,
        Logger::new(false),
        ExecutorArena::leaked(),
    )
    .unwrap()
}

#[test]
fn a_hung_systemctl_is_killed_and_retried() {
    let dir = TempDir::new("systemctl-timeout");
    let systemctl = dir.write("systemctl", HANGING_SYSTEMCTL);
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
    // A unit left by an earlier run and placed nowhere now: the core disables it first.
    fs::create_dir_all(dir.join("units")).unwrap();
    dir.write("units/myco-web.service", "# myco: 0000000000000007\n");
    let node = node();
    let mut e = executor(&dir, &systemctl);
    let mut allocated = 0;
    step(&mut e, &node, 0, &mut allocated);
    let pid_file = dir.join("sleep.pid");
    wait_until(
        Duration::from_secs(10),
        "the stand-in started its sleep",
        || fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n')),
    );
    let sleep_pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    step(&mut e, &node, SYSTEMCTL_TIMEOUT_MS - 1, &mut allocated);
    assert!(e.busy() && !gone(&sleep_pid), "not yet hung");
    let killed_at = SYSTEMCTL_TIMEOUT_MS;
    wait_until(
        Duration::from_secs(10),
        "the hung command is reaped",
        || {
            step(&mut e, &node, killed_at, &mut allocated);
            !e.busy()
        },
    );
    assert_eq!(e.stats.systemctl_failures, 1, "reported failed");
    wait_until(
        Duration::from_secs(10),
        "what it started is killed too",
        || gone(&sleep_pid),
    );
    step(
        &mut e,
        &node,
        killed_at + COMMAND_RETRY_MS - 1,
        &mut allocated,
    );
    assert!(!e.busy(), "the failure is waited out");
    step(&mut e, &node, killed_at + COMMAND_RETRY_MS, &mut allocated);
    let disables = || {
        let calls = fs::read_to_string(dir.join("calls")).unwrap_or_default();
        calls.lines().filter(|l| l.starts_with("disable")).count()
    };
    wait_until(Duration::from_secs(10), "the disable is retried", || {
        disables() == 2
    });
    // The retry hangs too; the test's directory goes with it, so end it here.
    wait_until(Duration::from_secs(10), "the retry is reaped", || {
        let now = killed_at + COMMAND_RETRY_MS + SYSTEMCTL_TIMEOUT_MS;
        step(&mut e, &node, now, &mut allocated);
        !e.busy()
    });
    assert_eq!(allocated, 0, "the executor's steps allocated");
}
