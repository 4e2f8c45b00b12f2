//! `myco proxy`: serves a box's HTTP API on this machine (a loopback port or a Unix socket), each
//! local connection carried through its own tunnel to the box's `--proxy-listen`
//! (`docs/protocol.md`, "The tunnel"). The box checks the access credential; this side checks the
//! box's certificate under the credential's operator key. With `--operator-key` a credential for
//! a fresh key is signed for each tunnel, valid for `SELF_ISSUED_S`.
//!
//! One thread per direction of each local connection: the operator's tool serves one person, and
//! blocking reads keep it short. The first tunnel is opened before the local side listens, so a
//! refusal (expired, revoked, another operator) is the command's error, not a silent hang.

use crate::args::{Error, Flags};
use crate::credential::{self, parse_node_id};
use crate::files;
use myco_core::crypto::tunnel::{
    frame_len, TunnelClient, TunnelError, TunnelSession, LENGTH_BYTES, RECORD_BYTES_MAX,
    RECORD_FRAME_BYTES_MAX, RECORD_PLAINTEXT_MAX, TUNNEL_HANDSHAKE_BYTES_MAX,
};
use myco_core::crypto::SigningKey;
use pico_args::Arguments;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PROXY_HELP: &str = "\
Usage: myco proxy --to HOST:PORT --listen 127.0.0.1:PORT|PATH.sock
                  (--operator-key FILE | --credential FILE --key FILE) [--node ID]
                  [--issued-at N]

Serves the API of the box at HOST:PORT (its myco-d --proxy-listen) on this machine, through an
authenticated, encrypted tunnel per connection, so that 'myco ls --socket PATH.sock', 'curl
--unix-socket PATH.sock', 'myco events' and 'myco logs -f' work as on the box. Runs until
stopped. The local side has no authentication of its own: it listens on loopback or on a Unix
socket of mode 0600 only.

Options:
  --to HOST:PORT        The box's tunnel listener
  --listen ADDR|PATH    A loopback IP:PORT, or a Unix socket path (a stale socket nothing
                        answers on is replaced; any other file there is an error)
  --operator-key FILE   Sign a short-lived credential with the operator key (mode 0600)
  --credential FILE     A credential from 'myco credential', with --key its holder's key
  --key FILE            The holder's key (mode 0600)
  --node ID             Refuse any box but this one (node id, 16 hex digits)
  --issued-at N         With --operator-key: the cluster's RevocationBlock height (default 0)
  -h, --help            Print this help

Exit status: 0 never (it serves until stopped); 1 failed (local I/O, a key or credential refused
here); 2 bad command line; 3 the box cannot be reached; 4 the box refused the tunnel (the message
says why).
";

/// What a credential signed by `--operator-key` is valid for: long enough for one tunnel's
/// `myco logs -f`, short enough that a leaked one is soon worth nothing.
const SELF_ISSUED_S: u64 = 3600;
/// A handshake takes longer than this only if the box is not there.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the authority comes from.
enum Authority {
    /// The operator key: a fresh holder key and credential per tunnel.
    Operator { key: SigningKey, issued_at: u64 },
    /// A credential and its holder's key.
    Credential { access: Vec<u8>, key: SigningKey },
}

struct Target {
    to: SocketAddr,
    node: Option<u64>,
    authority: Authority,
}

enum Local {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

fn parse(args: Arguments) -> Result<(Target, String), Error> {
    let mut flags = Flags::new(args, "proxy");
    let to = flags.string("--to")?;
    let listen = flags.string("--listen")?;
    let operator_key = flags.path("--operator-key")?;
    let credential = flags.path("--credential")?;
    let key = flags.path("--key")?;
    let node = flags.string("--node")?;
    let issued_at = flags.string("--issued-at")?;
    flags.finish()?;
    let to = flags.required(to, "--to")?;
    let to = to
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--to '{to}' is not HOST:PORT, e.g. 10.0.0.2:7948")))?;
    let listen = flags.required(listen, "--listen")?;
    let node = node.as_deref().map(parse_node_id).transpose()?;
    let issued_at = match issued_at {
        Some(n) => crate::args::parse_height(&n, "--issued-at", 0)?,
        None => 0,
    };
    let authority = match (operator_key, credential, key) {
        (Some(op), None, None) => Authority::Operator {
            key: files::read_key(&op, "--operator-key")?,
            issued_at,
        },
        (None, Some(cred), Some(key)) => Authority::Credential {
            access: std::fs::read(&cred).map_err(|e| {
                Error::Failed(format!(
                    "cannot read --credential '{}': {e}",
                    cred.display()
                ))
            })?,
            key: files::read_key(&key, "--key")?,
        },
        _ => {
            return Err(Error::Usage(
                "give --operator-key FILE, or --credential FILE with --key FILE".into(),
            ))
        }
    };
    let target = Target {
        to,
        node,
        authority,
    };
    Ok((target, listen))
}

fn bind(listen: &str) -> Result<Local, Error> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        if !addr.ip().is_loopback() {
            return Err(Error::Usage(format!(
                "--listen {addr} is not a loopback address; the local side has no \
                 authentication, so it serves this machine only (127.0.0.1:PORT or a socket path)"
            )));
        }
        let l = TcpListener::bind(addr)
            .map_err(|e| Error::Failed(format!("cannot listen on {addr}: {e}")))?;
        return Ok(Local::Tcp(l));
    }
    let path = PathBuf::from(listen);
    let l =
        bind_unix(&path).map_err(|e| Error::Failed(format!("cannot listen on {listen}: {e}")))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Failed(format!("cannot make {listen} owner-only: {e}")))?;
    Ok(Local::Unix(l, path))
}

/// Binds a Unix socket at `path`, replacing a stale socket a stopped proxy left (a signal ends it
/// before it can remove its socket): only a socket nothing answers on is removed, never a file.
fn bind_unix(path: &std::path::Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
            let refused = UnixStream::connect(path)
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
            if !(is_socket && refused) {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

pub fn proxy(args: Arguments) -> Result<(), Error> {
    let (target, listen) = parse(args)?;
    // The first tunnel proves the box takes this authority before anything listens here.
    let (_, _, cert) = open(&target)?;
    let local = bind(&listen)?;
    println!(
        "serving the API of node {:016x} (zone {}) from {} on {listen}",
        cert.node_id(),
        cert.zone,
        target.to
    );
    let target = Arc::new(target);
    match &local {
        Local::Tcp(l) => serve(l.incoming(), &target),
        Local::Unix(l, _) => serve(l.incoming(), &target),
    }
    if let Local::Unix(_, path) = local {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// A local connection: what the tunnel's two threads read from and write to.
trait Conn: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shut(&self);
}

impl Conn for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

fn serve<C: Conn>(incoming: impl Iterator<Item = io::Result<C>>, target: &Arc<Target>) {
    for conn in incoming.flatten() {
        let target = Arc::clone(target);
        std::thread::spawn(move || match open(&target) {
            Ok((remote, session, _)) => carry(conn, remote, session),
            Err(e) => {
                eprintln!("myco: a tunnel was not opened: {}", e.message());
                conn.shut();
            }
        });
    }
}

/// Opens a tunnel: the handshake, blocking, within `HANDSHAKE_TIMEOUT`.
fn open(target: &Target) -> Result<(TcpStream, TunnelSession, myco_core::crypto::CertBody), Error> {
    let unreachable = |e: io::Error| Error::Unreachable(format!("cannot reach {}: {e}", target.to));
    let mut remote =
        TcpStream::connect_timeout(&target.to, HANDSHAKE_TIMEOUT).map_err(unreachable)?;
    remote
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(unreachable)?;
    // Records are whole messages written at once; Nagle's algorithm would hold the request
    // behind the Prove until the box's delayed ACK (about 40 ms a connection, measured).
    remote.set_nodelay(true).map_err(unreachable)?;
    let (access, holder) = match &target.authority {
        Authority::Operator { key, issued_at } => {
            let holder = SigningKey::from_seed(files::random_seed()?)
                .map_err(|_| Error::Failed("the random source gave an unusable key".into()))?;
            let access = credential::issue(
                key,
                holder.public_key().0,
                SELF_ISSUED_S,
                target.node,
                *issued_at,
            );
            (access, holder)
        }
        Authority::Credential { access, key } => (access.clone(), key.clone()),
    };
    let (eph, challenge) = (files::random_seed()?, files::random_seed()?);
    let (client, hello) =
        TunnelClient::new(&access, &holder, target.node, eph, challenge).map_err(refused_here)?;
    send(&mut remote, &hello).map_err(unreachable)?;
    let mut buf = [0u8; LENGTH_BYTES + TUNNEL_HANDSHAKE_BYTES_MAX];
    let n = receive(&mut remote, &mut buf, TUNNEL_HANDSHAKE_BYTES_MAX).map_err(unreachable)?;
    let (session, prove, cert) = client
        .handle_accept(&buf[LENGTH_BYTES..n], &holder)
        .map_err(|e| refused(e, target))?;
    send(&mut remote, &prove).map_err(unreachable)?;
    remote.set_read_timeout(None).map_err(unreachable)?;
    Ok((remote, session, cert))
}

/// The credential is refused on this side, before anything is sent.
fn refused_here(e: TunnelError) -> Error {
    match e {
        TunnelError::Access(a) => {
            Error::Failed(format!("the credential is refused: {}", a.message()))
        }
        other => Error::Failed(format!("the credential is refused: {other:?}")),
    }
}

fn refused(e: TunnelError, target: &Target) -> Error {
    let to = target.to;
    match e {
        TunnelError::Refused(r) => {
            Error::Refused(format!("{to} refused the tunnel: {}", r.message()))
        }
        TunnelError::WrongNode { expected, got } => Error::Refused(format!(
            "{to} is node {got:016x}, not {expected:016x}; check --to and --node"
        )),
        TunnelError::Cert(c) => Error::Refused(format!(
            "{to} is not a box of this cluster: its certificate is refused: {}",
            c.message()
        )),
        other => Error::Refused(format!("{to} answered the handshake wrongly: {other:?}")),
    }
}

fn send(remote: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut framed = Vec::with_capacity(LENGTH_BYTES + msg.len());
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    remote.write_all(&framed)
}

/// Reads one length-prefixed message into `buf`; returns its whole length.
fn receive(remote: &mut impl Read, buf: &mut [u8], max: usize) -> io::Result<usize> {
    remote.read_exact(&mut buf[..LENGTH_BYTES])?;
    let n = frame_len([buf[0], buf[1]], max).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a message longer than any the tunnel has",
        )
    })?;
    remote.read_exact(&mut buf[LENGTH_BYTES..LENGTH_BYTES + n])?;
    Ok(LENGTH_BYTES + n)
}

/// Passes bytes both ways until either side ends, then closes both.
fn carry<C: Conn>(local: C, remote: TcpStream, session: TunnelSession) {
    let session = Arc::new(Mutex::new(session));
    let (Ok(local_in), Ok(remote_out)) = (local.try_clone(), remote.try_clone()) else {
        local.shut();
        return;
    };
    let up_session = Arc::clone(&session);
    let up = std::thread::spawn(move || {
        let _ = upstream(local_in, remote_out, &up_session);
    });
    let _ = downstream(&remote, &local, &session);
    local.shut();
    let _ = remote.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// Local bytes, sealed, to the box.
fn upstream<C: Conn>(
    mut local: C,
    mut remote: TcpStream,
    session: &Mutex<TunnelSession>,
) -> io::Result<()> {
    let mut buf = vec![0u8; RECORD_FRAME_BYTES_MAX];
    loop {
        let n = local.read(&mut buf[LENGTH_BYTES..LENGTH_BYTES + RECORD_PLAINTEXT_MAX])?;
        if n == 0 {
            let _ = remote.shutdown(Shutdown::Both);
            return Ok(());
        }
        let total = session
            .lock()
            .expect("no thread panics holding it")
            .seal(&mut buf, n)
            .map_err(|_| io::Error::other("the tunnel's counters are used up"))?;
        remote.write_all(&buf[..total])?;
    }
}

/// The box's records, opened, to the local client.
fn downstream<C: Conn>(
    mut remote: &TcpStream,
    local: &C,
    session: &Mutex<TunnelSession>,
) -> io::Result<()> {
    let mut buf = vec![0u8; RECORD_FRAME_BYTES_MAX];
    let mut local = local.try_clone()?;
    loop {
        let n = match receive(&mut remote, &mut buf, RECORD_BYTES_MAX) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        // Opened in place; the lock is let go before the write, which may wait on the client.
        let len = (session.lock().expect("no thread panics holding it"))
            .open(&mut buf[..n])
            .map_err(|_| io::Error::other("a record from the box failed its tag"))?
            .len();
        local.write_all(&buf[LENGTH_BYTES..LENGTH_BYTES + len])?;
    }
}
