//! `myco-priv`, the privileged helper of `myco-d` (docs/architecture.md, "Least privilege"):
//! socket-activated by `myco-priv.socket`, or listening on `--listen PATH` (tests, hand runs).

use myco_host::daemon::config::operator;
use myco_host::privileged::{Config, Helper};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const HELP: &str = "\
myco-priv: the privileged helper of myco-d

Does the few things myco-d needs root for (write or remove myco-*.service units, systemctl on
myco-* units, nix build, nix-collect-garbage, the build cache's closure query, journalctl of
myco-* units, exec health checks), for one user only, checking every request
(docs/architecture.md). systemd starts it from myco-priv.socket.

Usage: myco-priv --operator HEX (--allow-uid UID | --allow-user NAME) [OPTIONS]

  --operator HEX         the cluster's operator public key, as myco-d's --operator: every entry
                         a request carries (a unit write, a build, a health check) must be
                         signed by it
  --allow-uid UID        the only uid served (the daemon's)
  --allow-user NAME      the same, by user name
  --listen PATH          listen on this socket instead of systemd's (LISTEN_FDS)
  --unit-dir DIR         where units are written [/etc/systemd/system]
  --gcroot-dir DIR       where builds link their results (the daemon's --gcroot-dir)
                         [/var/lib/myco-gcroots]; only root may replace it
                         (builds into it are refused otherwise)
  --allow-root-builds    run builds that may build here even where 'nix show-config' names
                         neither 'sandbox = true' nor a 'build-users-group' (Nix then runs
                         builders as root with the whole box in view); refused otherwise, and
                         fetches (which run no builder) always pass
  --systemctl, --journalctl, --systemd-run, --nix, --nix-collect-garbage, --nix-store PATH
                         the programs run [found on PATH]
  -h, --help             this text
";

/// A usage mistake exits with 2, as `myco-d` does.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let (config, listen) = match parse(args) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("myco-priv: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let listener = match listener(listen) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("myco-priv: {why}");
            return ExitCode::FAILURE;
        }
    };
    let uid = config.allow_uid;
    let key_id = config.operator.key_id();
    eprintln!("myco-priv: serving uid {uid}, entries signed by operator key {key_id:08x}");
    match Arc::new(Helper::new(config)).serve(&listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myco-priv: cannot accept a connection: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: pico_args::Arguments) -> Result<(Config, Option<PathBuf>), String> {
    let text = |e: pico_args::Error| e.to_string();
    let operator = operator(&mut args).map_err(|e| e.0)?;
    let uid: Option<u32> = args.opt_value_from_str("--allow-uid").map_err(text)?;
    let user: Option<String> = args.opt_value_from_str("--allow-user").map_err(text)?;
    let uid = match (uid, user) {
        (Some(uid), None) => uid,
        (None, Some(name)) => match nix::unistd::User::from_name(&name) {
            Ok(Some(user)) => user.uid.as_raw(),
            Ok(None) => return Err(format!("no user {name}")),
            Err(e) => return Err(format!("cannot look up user {name}: {e}")),
        },
        _ => return Err("give exactly one of --allow-uid and --allow-user".into()),
    };
    let mut config = Config::new(uid, operator);
    config.allow_root_builds = args.contains("--allow-root-builds");
    let listen = args.opt_value_from_str("--listen").map_err(text)?;
    for (flag, field) in [
        ("--unit-dir", &mut config.unit_dir),
        ("--gcroot-dir", &mut config.gcroot_dir),
    ] {
        if let Some(dir) = args.opt_value_from_str::<_, PathBuf>(flag).map_err(text)? {
            *field = dir;
        }
    }
    for (flag, field) in [
        ("--systemctl", &mut config.systemctl),
        ("--journalctl", &mut config.journalctl),
        ("--systemd-run", &mut config.systemd_run),
        ("--nix", &mut config.nix),
        ("--nix-collect-garbage", &mut config.collect_garbage),
        ("--nix-store", &mut config.nix_store),
    ] {
        if let Some(program) = args.opt_value_from_str(flag).map_err(text)? {
            *field = program;
        }
    }
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments {rest:?}; see --help"));
    }
    Ok((config, listen))
}

/// `--listen PATH` (owner-only: the test or operator who started it grants access), else the
/// one socket systemd passed (LISTEN_FDS=1 for this process, as fd 3).
fn listener(listen: Option<PathBuf>) -> Result<UnixListener, String> {
    if let Some(path) = listen {
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| format!("cannot listen on {path:?}: {e}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {path:?}: {e}"))?;
        return Ok(l);
    }
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    if !ours || std::env::var("LISTEN_FDS").ok().as_deref() != Some("1") {
        return Err("no socket: start myco-priv.socket, or give --listen PATH".into());
    }
    // SAFETY: systemd passed exactly one socket to this process (LISTEN_PID and LISTEN_FDS=1
    // checked above) as descriptor 3, and nothing else in this process has taken it.
    Ok(unsafe { UnixListener::from_raw_fd(3) })
}
