//! Nix's work runs in transient systemd units (`systemd-run`), not as the daemon's own children.
//!
//! Why not a child: the daemon's unit keeps `/nix` read-only (`ProtectSystem=strict`), and a child
//! would share the daemon's cgroup, so `MemoryMax=64M` and `TasksMax=16` would bound Nix's
//! evaluation and the builders' processes, and an out-of-memory build would be killed beside (or
//! instead of) the daemon. A transient unit `myco-build-<name>.service` (or `myco-gc.service`)
//! gets a cgroup and a sandbox of its own; `systemd-run --wait --pipe` still hands the build's
//! stdout and stderr to the daemon's pipe and log file and returns the build's exit status, so the
//! rest of the daemon sees an ordinary child. `RuntimeMaxSec=` makes systemd stop the whole build
//! at the timeout even if the daemon restarted in between; `--collect` unloads a failed unit so
//! the next attempt may take the same name.
//!
//! Inside the unit the command still starts with `nice -n 19 ionice -c 3`: the lowest CPU and an
//! idle I/O priority, inherited by every builder Nix forks (single-user Nix; docs/daemon.md says
//! what changes with a nix-daemon). Operators can bound builds further with a drop-in for all of
//! them, `/etc/systemd/system/myco-build-.service.d/*.conf` (`MemoryMax=`, `CPUQuota=`).

use crate::spawn::{Argv, ArgvFull};
use std::ffi::{CStr, CString};
use std::fmt::Write as _;

/// PATH inside the unit: systemd's default finds Nix and `nice` on Debian-like systems; NixOS
/// keeps them under `/run/current-system/sw/bin`, and a single-user install under the profile.
pub const PATH: &str =
    "/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables passed from the daemon's environment into the unit, when set: where Nix's
/// configuration and caches are (tests and offline boxes point them elsewhere) and whether it
/// talks to a nix-daemon.
pub const PASSED_ENV: [&str; 4] = ["NIX_CONF_DIR", "XDG_CACHE_HOME", "HOME", "NIX_REMOTE"];

/// `KEY=VALUE` for PATH and each passed variable the daemon has, made once at start.
pub fn environment() -> Vec<CString> {
    let mut env = vec![CString::new(format!("PATH={PATH}")).expect("no NUL")];
    for key in PASSED_ENV {
        if let Some(value) = std::env::var_os(key) {
            let mut kv = format!("{key}=").into_bytes();
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()));
            env.extend(CString::new(kv).ok());
        }
    }
    env
}

/// Variables in [`environment`]: PATH and the passed ones.
pub const ENV_MAX: usize = 1 + PASSED_ENV.len();

/// The variables of [`environment`] as the spawner takes them, on the stack.
pub fn env_refs(env: &[CString]) -> heapless::Vec<&CStr, ENV_MAX> {
    assert!(env.len() <= ENV_MAX, "environment() makes at most ENV_MAX");
    env.iter().map(CString::as_c_str).collect()
}

/// What the unit is called and how long it may run.
pub struct Unit<'a> {
    /// `systemd-run` (`--systemd-run`).
    pub systemd_run: &'a str,
    /// The unit's name without `.service`, made of `parts` concatenated.
    pub name: &'a [&'a [u8]],
    /// `RuntimeMaxSec=`; `None`: no limit.
    pub runtime_max_s: Option<u64>,
}

/// Starts `argv` with the `systemd-run` command that runs what follows in `unit`, with `env`
/// (from [`environment`]) set inside it, at the lowest CPU and I/O priority.
pub fn push_prefix(argv: &mut Argv, unit: &Unit<'_>, env: &[CString]) -> Result<(), ArgvFull> {
    argv.push(&[unit.systemd_run.as_bytes()])?;
    for arg in ["--quiet", "--wait", "--pipe", "--collect"] {
        argv.push(&[arg.as_bytes()])?;
    }
    argv.push(&prefixed(b"--unit=", unit.name))?;
    argv.push(&prefixed(b"--description=myco: ", unit.name))?;
    if let Some(secs) = unit.runtime_max_s {
        let mut digits = heapless::String::<20>::new();
        write!(digits, "{secs}").expect("a u64 fits 20 digits");
        argv.push(&[b"--property=RuntimeMaxSec=", digits.as_bytes()])?;
    }
    for kv in env {
        argv.push(&[b"--setenv=", kv.as_bytes()])?;
    }
    argv.push(&[b"--"])?;
    for arg in ["nice", "-n", "19", "ionice", "-c", "3"] {
        argv.push(&[arg.as_bytes()])?;
    }
    Ok(())
}

/// `first` followed by up to three `parts`, as one argument's parts (no allocation).
fn prefixed<'a>(first: &'a [u8], parts: &[&'a [u8]]) -> [&'a [u8]; 4] {
    assert!(parts.len() <= 3, "a unit name has at most three parts");
    let mut all: [&[u8]; 4] = [b""; 4];
    all[0] = first;
    all[1..=parts.len()].copy_from_slice(parts);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line names the unit, bounds its time, passes the environment, and runs the
    /// command niced after `--`.
    #[test]
    fn prefix_runs_the_command_in_a_named_bounded_unit() {
        let mut argv = Argv::leaked();
        let env = [CString::new("NIX_CONF_DIR=/etc/nix").unwrap()];
        let unit = Unit {
            systemd_run: "systemd-run",
            name: &[b"myco-build-", b"web"],
            runtime_max_s: Some(1800),
        };
        push_prefix(&mut argv, &unit, &env).unwrap();
        argv.push(&[b"nix"]).unwrap();
        assert_eq!(
            argv.args(),
            [
                "systemd-run",
                "--quiet",
                "--wait",
                "--pipe",
                "--collect",
                "--unit=myco-build-web",
                "--description=myco: myco-build-web",
                "--property=RuntimeMaxSec=1800",
                "--setenv=NIX_CONF_DIR=/etc/nix",
                "--",
                "nice",
                "-n",
                "19",
                "ionice",
                "-c",
                "3",
                "nix"
            ]
        );
    }
}
