//! Start-up: everything that may allocate happens here, in order, before READY=1. Each failure
//! names the file or flag to fix.

use super::config::{Config, Nat};
use super::net;
use super::peers::PeersFile;
use crate::flight::{Level, Logger};
use crate::reserve::{Reserve, ReserveState};
use crate::store::FileStore;
use myco_core::config::REVOCATION_BYTES_MAX;
use myco_core::crypto::keys::{key_file_exposed, parse_key_file, KEY_FILE_BYTES_MAX};
use myco_core::crypto::{Cert, Credentials, Revocation, SigningKey};
use myco_core::node::{ConfigError, Storage};
use myco_core::time::Instant;
use myco_core::{Node, NodeConfig, PeerAddr};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The state directory's own revocation record: the highest one this node has accepted.
pub const REVOCATION_FILE_NAME: &str = "revocation";
const LOCK_FILE_NAME: &str = "lock";
const CERT_FILE_BYTES_MAX: u64 = 4096;

/// A start-up failure: what went wrong and what to do, for the log.
pub struct BootError(pub String);

impl<E: std::fmt::Display> From<(&str, E)> for BootError {
    fn from((what, e): (&str, E)) -> BootError {
        BootError(format!("{what}: {e}"))
    }
}

/// Creates the state directory (mode 0700) and takes its lock, so two daemons never share one
/// WAL. The lock is held as long as the returned file is open.
pub fn lock_state_dir(dir: &Path) -> Result<Flock<File>, BootError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            BootError(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BootError(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| state_dir_in_use(dir))
}

fn state_dir_in_use(dir: &Path) -> BootError {
    BootError(format!(
        "another myco-d uses the state directory {} (its lock is held); stop it or pass another --state-dir",
        dir.display()
    ))
}

/// The error for a start that cannot bind a socket while another myco-d holds the state
/// directory's lock: that daemon is why, and saying so beats "address in use". Creates nothing.
pub fn held_by_another(dir: &Path) -> Option<BootError> {
    let file = OpenOptions::new()
        .write(true)
        .open(dir.join(LOCK_FILE_NAME))
        .ok()?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => None,
        Err(_) => Some(state_dir_in_use(dir)),
    }
}

/// Reads the node key; refuses a file others may read, as `myco` does.
pub fn read_node_seed(path: &Path) -> Result<[u8; 32], BootError> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| BootError(format!("cannot read the node key --key {shown}: {e}; make one with 'myco keygen --out {shown}'")))?;
    let mode = file
        .metadata()
        .map_err(|e| BootError(format!("cannot stat {shown}: {e}")))?
        .permissions()
        .mode();
    if key_file_exposed(mode) {
        return Err(BootError(format!(
            "the node key {shown} can be read by others (mode {:o}); run 'chmod 600 {shown}'",
            mode & 0o777
        )));
    }
    let mut text = Vec::new();
    // One byte more than a key file may hold, so that a longer file is refused, not cut to fit.
    (&mut file)
        .take(KEY_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| BootError(format!("cannot read {shown}: {e}")))?;
    parse_key_file(&text).map_err(|e| {
        BootError(format!(
            "{shown} is not a key file: {e}; 'myco keygen' writes one"
        ))
    })
}

fn read_small(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, BootError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| BootError(format!("cannot read the {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(BootError(format!(
            "the {what} {} is larger than {max} bytes: not a Myco file",
            path.display()
        )));
    }
    Ok(bytes)
}

pub fn read_cert(path: &Path) -> Result<Vec<u8>, BootError> {
    let bytes = read_small(path, "certificate --cert", CERT_FILE_BYTES_MAX)?;
    Cert::decode(&bytes).map_err(|e| {
        BootError(format!(
            "{} is not a certificate: {}; make one with 'myco cert'",
            path.display(),
            e.message()
        ))
    })?;
    Ok(bytes)
}

/// The revocation to start with: the higher of the flag's and the state directory's, checked
/// against the operator key.
pub fn read_revocation(config: &Config) -> Result<Option<(u64, Vec<u8>)>, BootError> {
    let kept = config.state_dir.join(REVOCATION_FILE_NAME);
    let mut best: Option<(u64, Vec<u8>)> = None;
    for path in config
        .revocation
        .iter()
        .chain(kept.exists().then_some(&kept))
    {
        let bytes = read_small(path, "revocation", REVOCATION_BYTES_MAX as u64)?;
        let height = Revocation::decode(&bytes)
            .and_then(|r| r.verify(&config.operator))
            .map_err(|e| {
                BootError(format!(
                    "{} is not a revocation signed by --operator: {}",
                    path.display(),
                    e.message()
                ))
            })?;
        if best.as_ref().is_none_or(|(h, _)| height > *h) {
            best = Some((height, bytes));
        }
    }
    Ok(best)
}

/// This box's own addresses for `--nat auto` (the core compares them with where members see it),
/// from its interfaces and its routes towards `join` (`net::own_addrs`), said in the log; none
/// for `--nat yes` and `--nat no`.
fn own_addrs(config: &Config, join: &[PeerAddr], log: &Logger) -> Vec<PeerAddr> {
    if config.nat != Nat::Auto {
        return Vec::new();
    }
    let towards: Vec<_> = join.iter().map(|&p| net::display_addr(p)).collect();
    let own = net::own_addrs(config.listen, &towards);
    let shown: Vec<_> = own.iter().map(|&a| net::display_addr(a).ip()).collect();
    let shown = format_args!("--nat auto: this box's own addresses: {shown:?}");
    log.log(Level::Info, shown);
    own
}

/// Builds the node into `slot`, the arena's: `Node` is large (its tables are sized at compile
/// time), so it is built on the start-up thread's stack and moved there once.
pub fn node(
    config: &Config,
    (seed, cert): ([u8; 32], &[u8]),
    (join, log): (&[PeerAddr], &Logger),
    slot: &'static mut MaybeUninit<Node>,
) -> Result<&'static mut Node, BootError> {
    let bridge_seeds: Vec<PeerAddr> = config
        .bridge_seeds
        .iter()
        .map(|&a| net::peer_addr(a))
        .collect();
    let node_config = NodeConfig {
        node_seed: seed,
        cert,
        operator: config.operator,
        revocation_block: 0,
        seed: super::random_u64(),
        join,
        wal_checkpoint_bytes: config.wal_checkpoint_bytes,
        profile: config.profile,
        bridge_seeds: &bridge_seeds,
        relay: config.relay,
        behind_nat: config.nat == Nat::Yes,
        own_addrs: &own_addrs(config, join, log),
    };
    let node = Node::new(&node_config, Instant(0)).map_err(|e| credentials_refused(config, e))?;
    Ok(slot.write(node))
}

/// Checks that the key and certificate admit this node under --operator, with nothing written:
/// the start checks this before it creates the state directory, and `node` again as it builds.
pub fn check_credentials(config: &Config, seed: [u8; 32], cert: &[u8]) -> Result<(), BootError> {
    let key = SigningKey::from_seed(seed)
        .map_err(|_| credentials_refused(config, ConfigError::NodeSeed))?;
    Credentials::new(key, cert, &config.operator)
        .map_err(|e| credentials_refused(config, ConfigError::Cert(e)))?;
    Ok(())
}

fn credentials_refused(config: &Config, e: ConfigError) -> BootError {
    match e {
        ConfigError::NodeSeed => BootError(format!(
            "--key {} holds no usable node key; make one with 'myco keygen'",
            config.key.display()
        )),
        ConfigError::Cert(e) => BootError(format!(
            "--cert {} is refused: {}; it must certify the node key in --key {} and be signed \
             by the key --operator names ('myco cert --operator-key ... --node-pubkey ...')",
            config.cert.display(),
            e.message(),
            config.key.display()
        )),
    }
}

/// Replays the WAL into `node`; returns the store, which writes through `buffer`, and the
/// `recovery` event that reports it.
pub fn replay(
    node: &mut Node,
    dir: &Path,
    log: &Logger,
    buffer: &'static mut [u8],
) -> Result<(FileStore, super::events::Record), BootError> {
    let mut refused = 0u64;
    let (store, report) = FileStore::open(dir, buffer, |entry| {
        refused += u64::from(node.restore(entry).is_err());
    })
    .map_err(|e| BootError(format!("cannot open the WAL in {}: {e}", dir.display())))?;
    log.log(
        Level::Info,
        format_args!(
            "replayed generation {}: {} log records, {} services, {} refused, truncated {} bytes",
            report.generation,
            report.wal_entries,
            node.store().len(),
            refused,
            report.truncated_bytes
        ),
    );
    let mut recovery = super::events::Record::new(super::events::Kind::Recovery, "");
    recovery.count = report.wal_entries;
    recovery.key = node.store().len() as u64;
    recovery.clock = report.truncated_bytes;
    let wal_bytes = store.wal_bytes();
    let mut sink = NoSink;
    node.handle_storage(
        Instant(0),
        Storage::Recovered {
            wal_bytes,
            truncated: report.needs_full_sync(),
        },
        &mut sink,
    );
    Ok((store, recovery))
}

/// Recovery emits no effects; a sink that would be handed any is a bug.
struct NoSink;

impl myco_core::Sink for NoSink {
    fn send(&mut self, _: PeerAddr, _: &[u8; myco_core::config::FRAME_BYTES]) {
        unreachable!("recovery sends nothing")
    }
    fn event(&mut self, _: myco_core::Event) {}
    fn append(&mut self, _: &[u8], _: u64) {
        unreachable!("recovery appends nothing")
    }
    fn checkpoint(&mut self) {
        unreachable!("recovery checkpoints nothing")
    }
    fn fill_random(&mut self, _: &mut [u8]) {
        unreachable!("recovery draws no randomness")
    }
}

/// Makes the disk reserve, or says why not; with a size of 0, deletes one an earlier run left.
/// Called last at start, once nothing can fail any more, so a failed start leaves no reserve.
pub fn reserve(reserve: &mut Reserve, log: &Logger) {
    if reserve.bytes() == 0 {
        match reserve.disable() {
            Ok(0) => {}
            Ok(freed) => log.log(
                Level::Info,
                format_args!(
                    "--reserve-bytes 0: deleted the {freed}-byte reserve an earlier run left"
                ),
            ),
            Err(e) => log.log(
                Level::Warning,
                format_args!(
                    "--reserve-bytes 0: cannot delete the reserve an earlier run left: {e}"
                ),
            ),
        }
        return;
    }
    let bytes = reserve.bytes();
    match reserve.ensure() {
        Ok(ReserveState::Present { .. }) => log.log(
            Level::Info,
            format_args!("disk reserve of {bytes} bytes in place"),
        ),
        // `ensure` makes the reserve or defers it.
        Ok(state) => {
            if let Some(why) = state.deferred_why() {
                log.log(
                    Level::Warning,
                    format_args!("disk reserve of {bytes} bytes deferred: {why}; it is made once there is room (checked every 5 s)"),
                );
            }
        }
        Err(e) => log.log(
            Level::Warning,
            format_args!("disk reserve not created: {e}; it is retried while the daemon runs"),
        ),
    }
}

/// `--join` first, then remembered peers, at most what the core keeps.
pub fn join_list(config: &Config, remembered: &[std::net::SocketAddr]) -> Vec<PeerAddr> {
    let mut join: Vec<PeerAddr> = Vec::new();
    for &a in config.join.iter().chain(remembered) {
        let p = net::peer_addr(a);
        if !join.contains(&p) && join.len() < myco_core::config::JOIN_MAX {
            join.push(p);
        }
    }
    join
}

pub fn peers(dir: &Path, log: &Logger) -> (PeersFile, Vec<std::net::SocketAddr>) {
    let (file, addrs, skipped) = PeersFile::load(dir);
    if skipped > 0 {
        log.log(
            Level::Warning,
            format_args!("skipped {skipped} unreadable lines of the peers file"),
        );
    }
    (file, addrs)
}

/// Writes the revocation record the node now holds, atomically, so a restart enforces it.
pub fn save_revocation(dir: &Path, record: &[u8]) -> io::Result<()> {
    let path = crate::path::StackPath::join(dir, &[REVOCATION_FILE_NAME.as_bytes()])?;
    crate::atomic::replace_file(path.as_path(), |f| f.write_all(record))
}
