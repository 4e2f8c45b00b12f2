//! `myco-d`'s command line, checked whole before anything is touched. Defaults follow the
//! directories systemd hands the service (`docs/daemon.md`).

use super::build::{BuildConfig, BUILD_TIMEOUT_MS_DEFAULT};
use super::dns::DNS_LISTENERS_MAX;
use crate::io::Choice;
use crate::systemd;
use myco_core::config::Profile;
use myco_core::crypto::PublicKey;
use myco_core::hex::parse_hex32;
use pico_args::Arguments;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

pub const HELP: &str = "\
myco-d: the Myco daemon for one box

Usage: myco-d --operator HEX [OPTIONS]

Options:
  --operator HEX        The cluster's operator public key, 64 hex digits
                        ('myco pubkey --key operator.key')
  --key FILE            This node's key, mode 0600 (default: $CREDENTIALS_DIRECTORY/node.key,
                        else /etc/myco/node.key)
  --cert FILE           This node's certificate from 'myco cert' (default:
                        $CREDENTIALS_DIRECTORY/node.cert, else /etc/myco/node.cert)
  --revocation FILE     A revocation from 'myco revoke' to apply at start
  --state-dir DIR       WAL, snapshots, peers, reserve and flight recorder (default:
                        $STATE_DIRECTORY, else /var/lib/myco)
  --socket PATH         The API's Unix socket, mode 0660 (default: $RUNTIME_DIRECTORY/myco.sock,
                        else /run/myco/myco.sock)
  --listen ADDR         The gossip UDP socket (default [::]:7946, dual stack; an IPv4 address
                        listens on IPv4 only)
  --join ADDR           A peer to contact first, HOST:PORT; repeatable. Peers met since are
                        remembered in the state directory
  --bridge-seed ADDR    A bridge-capable box of another zone, HOST:PORT; repeatable (up to 16).
                        Only for a box whose certificate has a bridge scope (myco cert --bridge):
                        when elected its zone's bridge, it syncs desired state with other zones'
                        bridges, starting from these
  --relay               Forward sealed frames between peers and boxes behind NAT of this zone
                        (for a box every member reaches directly)
  --nat auto|yes|no     Whether this box is behind NAT (default auto). yes: no peer reaches it
                        directly; it keeps sessions with a few relays of its zone, and peers
                        reach it through them. auto: it finds out, when two members see its
                        frames come from an address that is not one of its own (getifaddrs);
                        a box behind a 1:1 NAT (a cloud VM's public IP) then uses relays too,
                        and a --relay only logs a warning. no: never (a 1:1 NAT box reachable
                        directly that should not use relays)
  --behind-nat          The same as --nat yes
  --profile lan|wan|metered
                        How often this box talks to its peers (default lan): lan probes every
                        0.5 s (about 4.6 KB/s per box at rest, a dead box found in about 3 to 14
                        s); wan every 2 s (1.1 KB/s); metered every 6 s (under 400 bytes/s, about
                        1 GB a month; a dead box found within 30 s). Give every box of a cluster
                        the same profile
  --reserve-bytes N     Disk reserve freed when the disk fills (default 500000000; 0: none)
  --io auto|uring|poll  Event loop backend (default auto: io_uring, else poll)
  --executor systemd|none
                        Run this box's share of the services as systemd units (default), or
                        only keep and gossip the desired state
  --unit-dir DIR        Where units are written (default /etc/systemd/system)
  --systemctl PATH      The systemctl to run (default: systemctl from PATH)
  --journalctl PATH     The journalctl /logs runs (default: journalctl from PATH)
  --privileged PATH     Ask myco-priv on this socket (e.g. /run/myco-priv.sock) to write and
                        remove units, run systemctl and journalctl, builds, garbage collection,
                        the cache's closure query and exec health checks, so this daemon needs
                        no root for them (default: do it itself); --unit-dir and --gcroot-dir
                        must be the helper's, and its --operator this daemon's
  --audit-log FILE      One JSON line per deployment outcome, rotated at 1 MiB, three kept
                        (default /var/log/myco/audit.log)
  --store-dir DIR       The Nix store whose disk is watched: above 85% used, garbage is
                        collected (default /nix/store; none if it does not exist)
  --nix-collect-garbage PATH
                        The nix-collect-garbage to run (default: from PATH)
  --nix PATH            The nix that builds flake services (default: nix from PATH); builds
                        run under nice -n 19 and ionice -c 3, one at a time
  --systemd-run PATH    The systemd-run that runs builds and collections in transient units
                        myco-build-NAME and myco-gc (default: systemd-run from PATH)
  --gcroot-dir DIR      Where the GC roots of built services go, one per version (default
                        STATE_DIR/gcroots)
  --build-timeout SECS  A build running longer is killed and retried later (default 1800)
  --build local|remote  local (default): build here what no peer offers; remote: never build
                        (a small board), fetch from peers or ask a --builder box to build
  --builder             Build for peers that ask, for every system 'nix show-config' names
                        (system, extra-platforms), whatever this box's certificate arch: add
                        'extra-platforms = aarch64-linux' to nix.conf (with binfmt) to build
                        for aarch64 boards; the results are served from the cache, so
                        --cache-listen must not be off
  --allow-root-builds   Build (here and for peers) even where 'nix show-config' names neither
                        'sandbox = true' nor a 'build-users-group': Nix then runs builders as
                        root with the whole box in view. Without it such a box builds nothing
                        and only fetches; myco-priv refuses such builds unless it has the flag
  --dns ADDR|off        Answer *.myco DNS on ADDR, UDP and TCP; repeatable, twice at most
                        (default 127.0.0.1:53 and [::1]:53; an address that cannot be bound is
                        logged and left out; below port 1024 needs CAP_NET_BIND_SERVICE)
  --cache-listen ADDR|off
                        Serve the closures of the services this box built as a read-only Nix
                        binary cache over HTTP on ADDR (default [::]:7947; off: none), signed
                        with the node key; an address that cannot be bound is logged and left out
  --cache-upload-rate BYTES_PER_S
                        The box's total upload rate for the cache (default 5000000; 0: unlimited)
  --proxy-listen ADDR   Accept 'myco proxy' tunnels to this box's API on ADDR over TCP, e.g.
                        [::]:7948 (default: off); only holders of an access credential from
                        the operator key get through ('myco credential')
  --verbose             Also print debug lines on stderr (the flight recorder always has them)
  -h, --help            Print this help and exit
  -V, --version         Print the version and exit

Exit codes: 0 stopped by SIGTERM or SIGINT, 1 failed (the log says why), 2 bad command line.
";

pub const RESERVE_BYTES_DEFAULT: u64 = 500_000_000;
pub const AUDIT_LOG_DEFAULT: &str = "/var/log/myco/audit.log";
pub const LISTEN_DEFAULT: &str = "[::]:7946";
/// Where `*.myco` DNS answers unless `--dns` says otherwise: loopback only, never the network.
pub const DNS_DEFAULT: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 53),
];
/// Join addresses taken from the command line; the core keeps `JOIN_MAX`.
const JOINS_MAX: usize = myco_core::config::JOIN_MAX;

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub unit_dir: PathBuf,
    pub systemctl: String,
    pub journalctl: String,
    /// `--privileged`: the socket of `myco-priv`, which does the unit work instead.
    pub privileged: Option<PathBuf>,
    pub audit_log: PathBuf,
    pub gc: super::gc::GcConfig,
    pub build: BuildConfig,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub operator: PublicKey,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub revocation: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub listen: SocketAddr,
    pub join: Vec<SocketAddr>,
    /// `--bridge-seed`: bridge-capable boxes of other zones (docs/protocol.md §8).
    pub bridge_seeds: Vec<SocketAddr>,
    /// `--relay` and `--nat` (docs/protocol.md section 12).
    pub relay: bool,
    pub nat: Nat,
    pub reserve_bytes: u64,
    pub io: Choice,
    /// Rates and timeouts of membership and gossip (`--profile`, default `lan`).
    pub profile: Profile,
    /// `None`: no executor (`--executor none`).
    pub executor: Option<ExecutorConfig>,
    /// Where `*.myco` DNS listens (UDP and TCP); empty with `--dns off`.
    pub dns: Vec<SocketAddr>,
    /// Where the binary cache listens; `None` with `--cache-listen off`.
    pub cache_listen: Option<SocketAddr>,
    /// `--cache-upload-rate`, bytes a second; 0: unlimited.
    pub cache_upload_rate: u64,
    /// Where `myco proxy` tunnels are accepted; `None` (the default): nowhere.
    pub proxy_listen: Option<SocketAddr>,
    pub verbose: bool,
    /// `/stream`'s heartbeat interval; only tests change it (`--stream-heartbeat-ms`, not in the
    /// help).
    pub stream_heartbeat_ms: u64,
    /// How long a request may take to arrive and an idle connection may stay open; only tests
    /// change it (`--request-timeout-ms`, not in the help), so that they see the deadline pass
    /// without waiting ten real seconds.
    pub request_timeout_ms: u64,
    /// `--strict-alloc`: a heap allocation after ready aborts the process with its size and
    /// return addresses (`crate::alloc`). Not in the help: it turns a bug into a crash, which
    /// tests want and a fleet does not (`docs/daemon.md`, "Memory").
    pub strict_alloc: bool,
    /// The WAL size that asks for a checkpoint; only tests change it (`--wal-checkpoint-bytes`,
    /// not in the help), so that they see checkpoints without writing a mebibyte of deploys.
    pub wal_checkpoint_bytes: u64,
}

/// What the command line asked for besides running.
pub enum Parsed {
    Run(Box<Config>),
    Help,
    Version,
}

/// A command line that cannot run; the message says what to change.
#[derive(Debug)]
pub struct UsageError(pub String);

fn usage(message: String) -> UsageError {
    UsageError(message)
}

pub fn parse(mut args: Arguments) -> Result<Parsed, UsageError> {
    if args.contains(["-h", "--help"]) {
        return Ok(Parsed::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Parsed::Version);
    }
    let operator = operator(&mut args)?;
    let credentials = systemd::credentials_dir();
    let key = path(&mut args, "--key")?
        .unwrap_or_else(|| default_in(&credentials, "/etc/myco", "node.key"));
    let cert = path(&mut args, "--cert")?
        .unwrap_or_else(|| default_in(&credentials, "/etc/myco", "node.cert"));
    let revocation = path(&mut args, "--revocation")?;
    let state_dir = path(&mut args, "--state-dir")?
        .or_else(systemd::state_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/myco"));
    let socket = path(&mut args, "--socket")?
        .unwrap_or_else(|| default_in(&systemd::runtime_dir(), "/run/myco", "myco.sock"));
    let listen = text(&mut args, "--listen")?.unwrap_or_else(|| LISTEN_DEFAULT.into());
    let listen = listen.parse().map_err(|_| {
        usage(format!(
            "--listen '{listen}' is not IP:PORT, e.g. [::]:7946 or 0.0.0.0:7946"
        ))
    })?;
    let (join, bridge_seeds) = (joins(&mut args)?, bridge_seeds(&mut args)?);
    let reserve_bytes = number(&mut args, "--reserve-bytes")?.unwrap_or(RESERVE_BYTES_DEFAULT);
    let io = io_choice(text(&mut args, "--io")?)?;
    let profile = profile(text(&mut args, "--profile")?)?;
    let executor = executor(&mut args)?;
    let dns = dns_addrs(&mut args)?;
    let (cache_listen, cache_upload_rate) = cache_options(&mut args, executor.as_ref())?;
    let proxy_listen = proxy_listen(text(&mut args, "--proxy-listen")?)?;
    let (verbose, strict_alloc) = (args.contains("--verbose"), args.contains("--strict-alloc"));
    let (relay, nat) = relay_roles(&mut args)?;
    let wal_checkpoint_bytes = number(&mut args, "--wal-checkpoint-bytes")?
        .unwrap_or(myco_core::config::WAL_CHECKPOINT_BYTES)
        .max(1);
    let stream_heartbeat_ms = number(&mut args, "--stream-heartbeat-ms")?
        .unwrap_or(super::conns::HEARTBEAT_MS)
        .max(1);
    let request_timeout_ms = number(&mut args, "--request-timeout-ms")?
        .unwrap_or(super::conns::REQUEST_TIMEOUT_MS)
        .max(1);
    refuse_leftovers(args)?;
    Ok(Parsed::Run(Box::new(Config {
        operator,
        key,
        cert,
        revocation,
        state_dir,
        socket,
        listen,
        join,
        bridge_seeds,
        relay,
        nat,
        reserve_bytes,
        io,
        profile,
        executor,
        dns,
        cache_listen,
        cache_upload_rate,
        proxy_listen,
        verbose,
        stream_heartbeat_ms,
        request_timeout_ms,
        strict_alloc,
        wal_checkpoint_bytes,
    })))
}

/// `--cache-listen` and `--cache-upload-rate`; a `--builder` needs the cache.
fn cache_options(
    args: &mut Arguments,
    executor: Option<&ExecutorConfig>,
) -> Result<(Option<SocketAddr>, u64), UsageError> {
    let listen = cache_listen(text(args, "--cache-listen")?)?;
    let rate = number(args, "--cache-upload-rate")?.unwrap_or(super::cache::UPLOAD_RATE_DEFAULT);
    builder_has_cache(executor, listen)?;
    Ok((listen, rate))
}

/// `--builder` serves what it builds from the binary cache, so it needs one.
fn builder_has_cache(
    executor: Option<&ExecutorConfig>,
    cache_listen: Option<SocketAddr>,
) -> Result<(), UsageError> {
    if executor.is_some_and(|e| e.build.builder) && cache_listen.is_none() {
        return Err(usage(
            "--builder serves what it builds from the binary cache: --cache-listen cannot be off"
                .into(),
        ));
    }
    Ok(())
}

/// `--operator HEX`, required: the cluster's operator public key. `myco-priv` takes it the same
/// way, so both read it from the box's one env file.
pub fn operator(args: &mut Arguments) -> Result<PublicKey, UsageError> {
    let operator = text(args, "--operator")?
        .ok_or_else(|| usage("--operator HEX is required: the cluster's operator public key ('myco pubkey --key operator.key')".into()))?;
    parse_hex32(operator.as_bytes())
        .map(PublicKey)
        .map_err(|e| usage(format!("--operator '{operator}' is not a public key: {e}")))
}

fn refuse_leftovers(args: Arguments) -> Result<(), UsageError> {
    match args
        .finish()
        .first()
        .map(|a| a.to_string_lossy().into_owned())
    {
        None => Ok(()),
        Some(arg) if arg.starts_with('-') => Err(usage(format!(
            "unknown option '{arg}'; see 'myco-d --help'"
        ))),
        Some(arg) => Err(usage(format!(
            "unexpected argument '{arg}'; see 'myco-d --help'"
        ))),
    }
}

fn text(args: &mut Arguments, flag: &'static str) -> Result<Option<String>, UsageError> {
    args.opt_value_from_os_str(flag, |s: &std::ffi::OsStr| {
        s.to_str().map(str::to_owned).ok_or("not UTF-8")
    })
    .map_err(|_| {
        usage(format!(
            "{flag} needs a value in UTF-8; see 'myco-d --help'"
        ))
    })
}

fn path(args: &mut Arguments, flag: &'static str) -> Result<Option<PathBuf>, UsageError> {
    args.opt_value_from_os_str(flag, |s: &std::ffi::OsStr| Ok::<_, &str>(PathBuf::from(s)))
        .map_err(|_| usage(format!("{flag} needs a path; see 'myco-d --help'")))
}

fn number(args: &mut Arguments, flag: &'static str) -> Result<Option<u64>, UsageError> {
    let Some(value) = text(args, flag)? else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|_| usage(format!("{flag} '{value}' is not a whole number of bytes")))
}

fn executor(args: &mut Arguments) -> Result<Option<ExecutorConfig>, UsageError> {
    let kind = text(args, "--executor")?;
    let unit_dir =
        path(args, "--unit-dir")?.unwrap_or_else(|| PathBuf::from("/etc/systemd/system"));
    let systemctl = text(args, "--systemctl")?.unwrap_or_else(|| "systemctl".into());
    let journalctl = text(args, "--journalctl")?.unwrap_or_else(|| "journalctl".into());
    let privileged = path(args, "--privileged")?;
    let audit_log = path(args, "--audit-log")?.unwrap_or_else(|| PathBuf::from(AUDIT_LOG_DEFAULT));
    let systemd_run = text(args, "--systemd-run")?.unwrap_or_else(|| "systemd-run".into());
    let gc = super::gc::GcConfig {
        store_dir: path(args, "--store-dir")?.unwrap_or_else(|| PathBuf::from("/nix/store")),
        collect_garbage: text(args, "--nix-collect-garbage")?
            .unwrap_or_else(|| "nix-collect-garbage".into()),
        systemd_run: systemd_run.clone(),
        // Hidden: a test's stand-in for statvfs (`daemon::gc`), not in --help.
        usage_file: path(args, "--store-usage-file")?,
    };
    let build = BuildConfig {
        nix: text(args, "--nix")?.unwrap_or_else(|| "nix".into()),
        systemd_run,
        gcroot_dir: path(args, "--gcroot-dir")?,
        timeout_ms: match number(args, "--build-timeout")? {
            Some(0) => return Err(usage("--build-timeout must be at least 1 second".into())),
            Some(secs) => secs.saturating_mul(1000),
            None => BUILD_TIMEOUT_MS_DEFAULT,
        },
        local: match text(args, "--build")?.as_deref() {
            None | Some("local") => true,
            Some("remote") => false,
            Some(other) => {
                return Err(usage(format!(
                    "--build '{other}' is not one of local, remote"
                )))
            }
        },
        builder: args.contains("--builder"),
        allow_root_builds: args.contains("--allow-root-builds"),
    };
    match kind.as_deref() {
        None | Some("systemd") => Ok(Some(ExecutorConfig {
            unit_dir,
            systemctl,
            journalctl,
            privileged,
            audit_log,
            gc,
            build,
        })),
        Some("none") => Ok(None),
        Some(other) => Err(usage(format!(
            "--executor '{other}' is not one of systemd, none"
        ))),
    }
}

fn profile(value: Option<String>) -> Result<Profile, UsageError> {
    let Some(name) = value else {
        return Ok(Profile::LAN);
    };
    Profile::named(&name).ok_or_else(|| {
        usage(format!(
            "--profile '{name}' is not one of {}",
            Profile::NAMES
        ))
    })
}

fn io_choice(value: Option<String>) -> Result<Choice, UsageError> {
    match value.as_deref() {
        None | Some("auto") => Ok(Choice::Auto),
        Some("uring") => Ok(Choice::Uring),
        Some("poll") => Ok(Choice::Poll),
        Some(other) => Err(usage(format!(
            "--io '{other}' is not one of auto, uring, poll"
        ))),
    }
}

/// `--join` values, resolved now (host names too): the loop never blocks on DNS.
fn joins(args: &mut Arguments) -> Result<Vec<SocketAddr>, UsageError> {
    let values = texts(args, "--join", "HOST:PORT")?;
    if values.len() > JOINS_MAX {
        return Err(usage(format!(
            "at most {JOINS_MAX} --join addresses; the cluster spreads the rest"
        )));
    }
    values.iter().map(|v| resolve("--join", v)).collect()
}

/// `--nat`: whether this box is behind NAT (docs/protocol.md section 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Found out: when members see this box at addresses not its own (`node::natobs`).
    Auto,
    /// Behind NAT from the start (`--behind-nat`).
    Yes,
    /// Never, whatever members see.
    No,
}

/// `--relay` and `--nat` (or `--behind-nat`, `--nat yes`). A relay must be reachable directly,
/// so it cannot be `--nat yes`.
fn relay_roles(args: &mut Arguments) -> Result<(bool, Nat), UsageError> {
    let (relay, behind_nat) = (args.contains("--relay"), args.contains("--behind-nat"));
    let nat = match (text(args, "--nat")?.as_deref(), behind_nat) {
        (None, true) | (Some("yes"), _) => Nat::Yes,
        (None | Some("auto"), false) => Nat::Auto,
        (Some("no"), false) => Nat::No,
        (Some(v @ ("auto" | "no")), true) => {
            return Err(usage(format!("--behind-nat is --nat yes, not --nat {v}")));
        }
        (Some(v), _) => return Err(usage(format!("--nat is auto, yes or no, not '{v}'"))),
    };
    if relay && nat == Nat::Yes {
        let why = "--relay and --nat yes (--behind-nat) exclude each other: a relay must be \
                   reachable directly";
        return Err(usage(why.into()));
    }
    Ok((relay, nat))
}

/// `--bridge-seed` values, resolved now like `--join`'s.
fn bridge_seeds(args: &mut Arguments) -> Result<Vec<SocketAddr>, UsageError> {
    let values = texts(args, "--bridge-seed", "HOST:PORT")?;
    let max = myco_core::config::BRIDGE_SEEDS_MAX;
    if values.len() > max {
        return Err(usage(format!(
            "at most {max} --bridge-seed addresses; bridges learn the others"
        )));
    }
    values.iter().map(|v| resolve("--bridge-seed", v)).collect()
}

/// `--dns`, repeatable up to `DNS_LISTENERS_MAX` times, or `off`; by default both loopbacks.
fn dns_addrs(args: &mut Arguments) -> Result<Vec<SocketAddr>, UsageError> {
    let values = texts(args, "--dns", "IP:PORT or off")?;
    if values.is_empty() {
        return Ok(DNS_DEFAULT.to_vec());
    }
    if values == ["off"] {
        return Ok(Vec::new());
    }
    if values.len() > DNS_LISTENERS_MAX {
        return Err(usage(format!(
            "at most {DNS_LISTENERS_MAX} --dns addresses"
        )));
    }
    values
        .iter()
        .map(|v| {
            v.parse().map_err(|_| {
                usage(format!(
                    "--dns '{v}' is not IP:PORT or off, e.g. 127.0.0.1:53 or [::1]:53"
                ))
            })
        })
        .collect()
}

/// `--cache-listen`: an address, or `off`; by default `[::]:7947`.
fn cache_listen(value: Option<String>) -> Result<Option<SocketAddr>, UsageError> {
    let value = value.unwrap_or_else(|| super::cache::LISTEN_DEFAULT.into());
    if value == "off" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        usage(format!(
            "--cache-listen '{value}' is not IP:PORT or off, e.g. [::]:7947 or 10.0.0.2:7947"
        ))
    })
}

/// `--proxy-listen`: an address; off unless given.
fn proxy_listen(value: Option<String>) -> Result<Option<SocketAddr>, UsageError> {
    let Some(value) = value else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        usage(format!(
            "--proxy-listen '{value}' is not IP:PORT, e.g. {} or 10.0.0.2:7948",
            super::proxy::LISTEN_EXAMPLE
        ))
    })
}

/// Every value of a repeatable flag, in order.
fn texts(args: &mut Arguments, flag: &'static str, what: &str) -> Result<Vec<String>, UsageError> {
    args.values_from_os_str(flag, |s: &std::ffi::OsStr| {
        s.to_str().map(str::to_owned).ok_or("not UTF-8")
    })
    .map_err(|_| usage(format!("{flag} needs {what} in UTF-8")))
}

fn resolve(flag: &str, value: &str) -> Result<SocketAddr, UsageError> {
    let mut found = value.to_socket_addrs().map_err(|e| {
        usage(format!(
            "{flag} '{value}' cannot be resolved: {e}; give HOST:PORT, e.g. 10.0.0.2:7946"
        ))
    })?;
    found
        .next()
        .ok_or_else(|| usage(format!("{flag} '{value}' resolves to no address")))
}

fn default_in(dir: &Option<PathBuf>, fallback: &str, file: &str) -> PathBuf {
    dir.as_deref()
        .map_or_else(|| PathBuf::from(fallback), PathBuf::from)
        .join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `--operator` and `extra` parse to.
    fn config_of(extra: &[&str]) -> Result<Box<Config>, UsageError> {
        let operator = "ab".repeat(32);
        let mut args = vec!["--operator", &operator];
        args.extend_from_slice(extra);
        let os = args.into_iter().map(std::ffi::OsString::from).collect();
        match parse(Arguments::from_vec(os))? {
            Parsed::Run(config) => Ok(config),
            _ => panic!("not a run"),
        }
    }

    fn dns_of(extra: &[&str]) -> Result<Vec<SocketAddr>, UsageError> {
        config_of(extra).map(|c| c.dns)
    }

    fn profile_of(extra: &[&str]) -> Result<Profile, UsageError> {
        config_of(extra).map(|c| c.profile)
    }

    fn build_of(extra: &[&str]) -> Result<(bool, bool), UsageError> {
        let config = config_of(extra)?;
        let b = &config.executor.expect("the systemd executor").build;
        Ok((b.local, b.builder))
    }

    /// `--relay` and `--nat`: no relay and `--nat auto` by default; `--behind-nat` is `--nat
    /// yes`; a relay is never `--nat yes` (it must be reachable directly), but may find out.
    #[test]
    fn relay_flags() {
        let roles = |extra: &[&str]| config_of(extra).map(|c| (c.relay, c.nat));
        assert_eq!(roles(&[]).unwrap(), (false, Nat::Auto));
        assert_eq!(roles(&["--relay"]).unwrap(), (true, Nat::Auto));
        assert_eq!(roles(&["--behind-nat"]).unwrap(), (false, Nat::Yes));
        assert_eq!(roles(&["--nat", "yes"]).unwrap(), (false, Nat::Yes));
        assert_eq!(roles(&["--nat", "no"]).unwrap(), (false, Nat::No));
        let both = ["--behind-nat", "--nat", "yes"];
        assert_eq!(roles(&both).unwrap(), (false, Nat::Yes));
        for bad in [
            &["--relay", "--behind-nat"][..],
            &["--relay", "--nat", "yes"],
        ] {
            let e = roles(bad).unwrap_err().0;
            assert!(e.contains("exclude each other"), "{e}");
        }
        let e = roles(&["--behind-nat", "--nat", "no"]).unwrap_err().0;
        assert!(e.contains("--behind-nat is --nat yes"), "{e}");
        let e = roles(&["--nat", "maybe"]).unwrap_err().0;
        assert!(e.contains("auto, yes or no"), "{e}");
    }

    /// `--build`: local by default, remote; anything else names the choices. `--builder` needs
    /// the cache.
    #[test]
    fn build_flags() {
        assert_eq!(build_of(&[]).unwrap(), (true, false));
        assert_eq!(build_of(&["--build", "remote"]).unwrap(), (false, false));
        assert_eq!(
            build_of(&["--build", "local", "--builder"]).unwrap(),
            (true, true)
        );
        let e = build_of(&["--build", "nowhere"]).unwrap_err().0;
        assert!(e.contains("local, remote"), "{e}");
        let e = build_of(&["--builder", "--cache-listen", "off"])
            .unwrap_err()
            .0;
        assert!(e.contains("--cache-listen"), "{e}");
    }

    /// `--profile`: lan by default, each name, and a usage error naming the choices for anything
    /// else, a missing value included.
    #[test]
    fn profile_flag() {
        assert_eq!(profile_of(&[]).unwrap(), Profile::LAN);
        for p in Profile::ALL {
            assert_eq!(profile_of(&["--profile", p.name]).unwrap(), p);
        }
        for bad in ["LAN", "cellular", ""] {
            let e = profile_of(&["--profile", bad]).unwrap_err().0;
            assert!(e.contains("lan, wan, metered"), "{e}");
        }
        assert!(profile_of(&["--profile"]).is_err());
    }

    /// `--dns`: both loopbacks by default, `off`, one or two addresses; a third, a bad address
    /// or `off` beside an address is a usage error.
    #[test]
    fn dns_flags() {
        let both: Vec<SocketAddr> =
            vec!["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
        assert_eq!(dns_of(&[]).unwrap(), both);
        assert!(dns_of(&["--dns", "off"]).unwrap().is_empty());
        let one = dns_of(&["--dns", "127.0.0.1:5353"]).unwrap();
        assert_eq!(one, vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        assert_eq!(
            dns_of(&["--dns", "127.0.0.1:53", "--dns", "[::1]:53"]).unwrap(),
            both
        );
        let three = [
            "--dns",
            "127.0.0.1:1",
            "--dns",
            "127.0.0.1:2",
            "--dns",
            "127.0.0.1:3",
        ];
        assert!(dns_of(&three).unwrap_err().0.contains("at most 2"));
        assert!(dns_of(&["--dns", "localhost"])
            .unwrap_err()
            .0
            .contains("not IP:PORT"));
        assert!(dns_of(&["--dns", "off", "--dns", "127.0.0.1:53"]).is_err());
    }
}
