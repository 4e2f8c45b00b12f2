//! The binary cache (`--cache-listen`, issue 16): every box serves what it built to the fleet, as
//! a read-only Nix HTTP binary cache a stock `nix` client substitutes from. What is served, how
//! requests are read and answered, and the upload throttle are the core's (`myco_core::cache`);
//! this module moves the bytes.
//!
//! - Only the closures of this box's GC roots (the Nix engine's, one per built version) are
//!   served: the facts of every path in them (`nix-store --dump-db` over `nix-store --query
//!   --requisites`) are read into a fixed table whenever the root directory changes, and any
//!   other hash is 404. That query reads the store's database, which the daemon's sandbox keeps
//!   read-only, so it runs in the transient unit `myco-cache-closure` as builds do.
//! - A narinfo is answered from the table, signed with the node key. A NAR is `nix-store --dump
//!   PATH` (which reads only the path's files), its stdout passed on through the slot's buffer as
//!   the box's one token bucket allows, so memory does not move with a NAR's size; at most
//!   `NARS_MAX` at once.
//! - A fixed table of slots, in the arena: a client beyond it takes the slot of an idle
//!   keep-alive connection, or is answered 503. A slot idle, or a client that takes nothing, for
//!   `IDLE_MS` is closed (408 if a request was half sent); a client that goes away mid-NAR frees
//!   its slot and its `nix-store` is killed and reaped.

use crate::flight::{Level, Logger};
use crate::http::response::reason;
use crate::spawn::{self, Argv, Child};
use myco_core::cache::{self as rules, NarInfoFacts, Parse, Refusal, Route, TokenBucket};
use myco_core::crypto::SigningKey;
use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Connections served at once: each holds a download or a request. `nix` opens several.
pub const CACHE_SLOTS: usize = 8;
/// NARs sent at once (each a `nix-store --dump`): one more is 503. The shipped unit allows the
/// daemon 16 tasks, and health checks and `/logs` spawn too.
pub const NARS_MAX: usize = 4;
/// A slot's buffer: a request head, a narinfo, or a stretch of a NAR.
pub const SLOT_BYTES: usize = 32 * 1024;
/// The closure table: the registrations (`nix-store --dump-db`) of the store paths this box
/// serves, about 400 bytes each with a few references: a thousand paths or so.
pub const CLOSURE_BYTES: usize = 512 * 1024;
/// A connection that sends no request, or takes nothing of its answer, for this long is closed.
pub const IDLE_MS: u64 = super::conns::REQUEST_TIMEOUT_MS;
/// The default `--cache-upload-rate`: 5 MB/s for the whole box.
pub const UPLOAD_RATE_DEFAULT: u64 = 5_000_000;
/// The closure's facts are read within this, or the unit is stopped and nothing is served.
const CLOSURE_TIMEOUT_S: u64 = 300;
/// The default `--cache-listen`.
pub const LISTEN_DEFAULT: &str = "[::]:7947";
/// Room for a response head before its body.
const HEAD_ROOM: usize = 256;
/// Reads and writes of one NAR per wake-up (half a MiB), so one fast client cannot hold the loop.
const NAR_ROUNDS: usize = 16;
/// The pipe `nix-store --dump` writes into, asked of the kernel (the default is 64 KiB).
const NAR_PIPE_BYTES: libc::c_int = 1 << 20;

const _: () = assert!(rules::REQUEST_HEAD_BYTES_MAX + HEAD_ROOM <= SLOT_BYTES);

/// The cache's buffers in the arena.
pub struct CacheBuffers {
    pub slots: &'static mut [[u8; SLOT_BYTES]; CACHE_SLOTS],
    pub closure: &'static mut [u8],
    pub argv: &'static mut [u8],
}

/// How the cache was asked to run.
pub struct CacheConfig<'a> {
    pub listen: SocketAddr,
    /// Bytes a second for all uploads; 0: unlimited.
    pub upload_rate: u64,
    pub nix_store: &'a str,
    /// The Nix engine's GC roots, and the `systemd-run` that reads their closure's facts;
    /// `None` without an executor (nothing to serve).
    pub roots: Option<(&'a Path, &'a str)>,
    /// `IDLE_MS` but in tests (`--request-timeout-ms`, as for the API).
    pub idle_ms: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Store paths in the closure table.
    pub paths: u64,
    pub requests: u64,
    pub narinfos: u64,
    pub nars: u64,
    pub nar_bytes: u64,
    pub not_found: u64,
    pub refused: u64,
    pub busy: u64,
}

enum Phase {
    /// Reading a request head into `buf[..filled]`.
    Reading,
    /// Sending `buf[start..end]`; then reading the next request, or closing.
    Answering { keep_alive: bool },
    /// Passing on `nix-store --dump`'s output; `None` once it ended.
    Nar { child: Option<Child> },
}

struct Slot {
    stream: Option<TcpStream>,
    buf: &'static mut [u8; SLOT_BYTES],
    filled: usize,
    start: usize,
    end: usize,
    phase: Phase,
    deadline_ms: u64,
    idle_ms: u64,
    /// NAR bytes this slot may still send until the next turn shares the tokens again.
    allowance: usize,
    /// Closed; the socket and the child's pipe stay open until the loop forgot them (`reap`).
    dead: bool,
}

/// The closure table and the refresh that replaces it.
struct Closure {
    /// `CLOSURE_BYTES`, the arena's: whole lines only.
    table: &'static mut [u8],
    len: usize,
    /// The GC root directory, open, and its modification time when last read.
    roots: Option<(File, (i64, i64))>,
    systemd_run: String,
    /// A refresh's `nix-store --query --requisites`, its output going into `table`.
    child: Option<Child>,
    /// The roots changed since the last refresh started: another is due.
    stale: bool,
    /// The last refresh failed: another is due at this time.
    retry_at_ms: Option<u64>,
    /// Refreshes failed in a row (`myco_core::cache::closure_retry_ms`).
    failures: u32,
    /// The running refresh wrote more than the table holds.
    overflow: bool,
    /// A refresh ended since the offer was last taken (`Cache::take_offer`).
    offer_due: bool,
    /// `--privileged`: the query is asked of `myco-priv` (`CacheClosure`), which runs the same
    /// command line as the store's owner.
    privileged: Option<crate::privileged::client::Client>,
}

/// GC roots read for an offer (`Cache::take_offer`): a box keeps a root or two per service.
pub const OFFER_ROOTS_MAX: usize = 256;

pub struct Cache {
    listener: TcpListener,
    slots: heapless::Vec<Slot, CACHE_SLOTS>,
    closure: Closure,
    bucket: TokenBucket,
    key: SigningKey,
    /// The node id in hex: the key's name in narinfos.
    key_name: myco_core::hex::HexU64,
    nix_store: String,
    env: Vec<CString>,
    argv: Argv,
    /// Slot where the next turn starts pumping NARs, so the bucket is shared in turn.
    next_pump: usize,
    idle_ms: u64,
    /// Token offsets whose fds closed since the loop last forgot them, one bit each.
    closed: u32,
    log: Logger,
    pub stats: CacheStats,
}

impl Closure {
    /// The table may lack what this box serves: a refresh is reading it again, or the last one
    /// failed and is tried again soon. A miss is then 503, not 404 (`Refusal::miss`).
    fn incomplete(&self) -> bool {
        self.child.is_some() || self.retry_at_ms.is_some()
    }

    /// A refresh listed the closure (or there are no roots): the table is whole, a retry still
    /// scheduled (this refresh was started by the roots changing meanwhile) is not due, and the
    /// offer follows the table.
    fn listed(&mut self) {
        (self.failures, self.retry_at_ms) = (0, None);
        self.offer_due = true;
    }

    /// Schedules the retry of a refresh that failed; returns how far off it is.
    fn failed(&mut self, now_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let retry_ms = myco_core::cache::closure_retry_ms(self.failures);
        self.retry_at_ms = Some(now_ms + retry_ms);
        retry_ms
    }
}

impl Cache {
    /// Binds the listener (non-blocking) and opens the GC root directory; the buffers are the
    /// arena's. An error means no cache (the caller logs it and runs on).
    pub fn bind(
        config: &CacheConfig<'_>,
        (key, node_id): (SigningKey, u64),
        buffers: CacheBuffers,
        log: Logger,
    ) -> std::io::Result<Cache> {
        let listener = TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let roots = config.roots.and_then(|(d, _)| File::open(d).ok());
        let systemd_run = config.roots.map_or("", |(_, run)| run).to_owned();
        let slots = buffers.slots.iter_mut().map(Slot::new).collect();
        Ok(Cache {
            listener,
            slots,
            closure: Closure {
                table: buffers.closure,
                len: 0,
                roots: roots.map(|f| (f, (-1, -1))),
                systemd_run,
                child: None,
                stale: true,
                retry_at_ms: None,
                failures: 0,
                overflow: false,
                offer_due: false,
                privileged: None,
            },
            bucket: TokenBucket::new(config.upload_rate, 0),
            key,
            key_name: myco_core::hex::HexU64::new(node_id),
            nix_store: config.nix_store.to_owned(),
            env: super::transient::environment(),
            argv: Argv::new(buffers.argv),
            next_pump: 0,
            idle_ms: config.idle_ms,
            closed: 0,
            log,
            stats: CacheStats::default(),
        })
    }

    /// From now on, the closure query is asked of `myco-priv` through `client`.
    pub fn ask_privileged(&mut self, client: crate::privileged::client::Client) {
        self.closure.privileged = Some(client);
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The public key in Nix's `name:base64` form, for `trusted-public-keys`.
    pub fn public_key(&self, out: &mut [u8; 64 + KEY_TEXT_BYTES]) -> usize {
        let name = self.key_name.as_str().as_bytes();
        out[..name.len()].copy_from_slice(name);
        out[name.len()] = b':';
        let b64 = rules::base64(&self.key.public_key().0, &mut out[name.len() + 1..]);
        name.len() + 1 + b64.len()
    }
}

/// A base64 Ed25519 public key.
pub const KEY_TEXT_BYTES: usize = 44;

/// What the loop watches for the cache: the listener (token `base`), then per slot its socket
/// (`base + 1 + 2i`) and its child's output (`base + 2 + 2i`).
pub const TOKENS: usize = 1 + 2 * CACHE_SLOTS;

impl Cache {
    /// The fds to watch, with their token offsets from the cache's base.
    pub fn interests(&mut self, now_ms: u64, mut push: impl FnMut(RawFd, u64, bool, bool)) {
        push(self.listener.as_raw_fd(), 0, true, false);
        let tokens = self.bucket.available(now_ms) > 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(stream) = s.stream.as_ref().filter(|_| !s.dead) else {
                continue;
            };
            let (sock, pipe) = (1 + 2 * i as u64, 2 + 2 * i as u64);
            let pending = s.start < s.end;
            match &s.phase {
                Phase::Reading => push(stream.as_raw_fd(), sock, true, false),
                Phase::Answering { .. } => push(stream.as_raw_fd(), sock, false, true),
                Phase::Nar { .. } if pending && tokens && s.allowance > 0 => {
                    push(stream.as_raw_fd(), sock, false, true)
                }
                Phase::Nar { child: Some(c) } if !pending => push(c.stdout_fd(), pipe, true, false),
                Phase::Nar { .. } => {}
            }
        }
        if let Some(child) = &self.closure.child {
            push(child.stdout_fd(), TOKENS as u64, true, false);
        }
    }

    /// Something is ready for token offset `token`.
    pub fn ready(&mut self, token: u64, now_ms: u64) {
        match token {
            0 => self.accept(now_ms),
            t if t == TOKENS as u64 => self.read_closure(now_ms),
            t => self.serve((t as usize - 1) / 2, now_ms),
        }
    }

    /// Once per turn of the loop: deadlines, throttled NARs, and the closure table.
    pub fn step(&mut self, now_ms: u64) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.is_open() && now_ms >= s.deadline_ms {
                if matches!(s.phase, Phase::Reading) && s.filled > 0 {
                    s.refuse_now(Refusal::Timeout);
                }
                s.close();
            }
        }
        // Each turn splits the tokens evenly among the NARs being sent; a slot whose socket is
        // ready between turns sends no more than its part.
        let nar = |s: &Slot| s.is_open() && matches!(s.phase, Phase::Nar { .. });
        let nars = self.slots.iter().filter(|s| nar(s)).count();
        let share = self.bucket.share(now_ms, nars);
        for s in self.slots.iter_mut() {
            s.allowance = share;
        }
        let n = self.slots.len();
        for k in 0..n {
            let i = (self.next_pump + k) % n;
            if matches!(self.slots[i].phase, Phase::Nar { .. }) {
                self.serve(i, now_ms);
            }
        }
        self.next_pump = (self.next_pump + 1) % n;
        self.refresh_closure(now_ms);
    }

    /// After a refresh of the closure table: the build keys of the GC roots it now serves
    /// (`myco_core::executor::offer_key`), newest root first (a rollout's new version is what
    /// peers are about to want), for the node's status to offer (`Node::set_offer` keeps the
    /// first few). `None` until the next refresh ends. At most `OFFER_ROOTS_MAX` roots are read.
    pub fn take_offer(&mut self) -> Option<heapless::Vec<u64, OFFER_ROOTS_MAX>> {
        let c = &mut self.closure;
        if !std::mem::take(&mut c.offer_due) {
            return None;
        }
        // A table that serves nothing (no roots, or a query that listed nothing and is asked
        // again) offers nothing: peers would ask this box for builds it cannot serve.
        if self.stats.paths == 0 {
            return Some(heapless::Vec::new());
        }
        let mut roots: heapless::Vec<((i64, i64), u64), OFFER_ROOTS_MAX> = heapless::Vec::new();
        if let Some((dir, _)) = c.roots.as_ref() {
            let listed = crate::path::for_each_name(dir, |file| {
                let Some(key) = file.to_str().ok().and_then(myco_core::executor::offer_key) else {
                    return;
                };
                // The link's own time: Nix replaces an out-link when it builds or fetches it.
                let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
                let made = nix::sys::stat::fstatat(dir, file, flags)
                    .map_or((0, 0), |st| (st.st_mtime, st.st_mtime_nsec));
                let _ = roots.push((made, key));
            });
            if let Err(e) = listed {
                let e = crate::flight::IoError(&e);
                (self.log).log(
                    Level::Warning,
                    format_args!("binary cache: cannot list the GC roots to offer: {e}"),
                );
            }
        }
        roots.sort_unstable_by(|a, b| b.cmp(a));
        Some(roots.iter().map(|(_, key)| *key).collect())
    }

    /// Closes every connection and ends every child, at shutdown; `reap` then closes the fds.
    pub fn close_all(&mut self) {
        for s in self.slots.iter_mut() {
            s.close();
        }
        if let Some(child) = self.closure.child.as_mut() {
            child.kill();
        }
    }

    /// Tells the loop (`forget`, by token offset) of every fd about to close or closed since
    /// the last call, then closes the connections `close` marked and reaps their children.
    pub fn reap(&mut self, mut forget: impl FnMut(u64)) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.dead {
                self.closed |= 0b11 << (1 + 2 * i);
                s.reap();
            }
        }
        for t in 0..=TOKENS as u64 {
            if self.closed & 1 << t != 0 {
                forget(t);
            }
        }
        self.closed = 0;
    }

    fn accept(&mut self, now_ms: u64) {
        // A slot given way this turn is free once reaped: wait for it rather than refuse.
        if self.slots.iter().any(|s| s.dead) {
            return;
        }
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            // A free slot, else the one idle between requests longest (its client reconnects
            // if it wants).
            let free = self.slots.iter().position(|s| s.stream.is_none());
            let idle = || {
                let idle = self.slots.iter().enumerate().filter(|(_, s)| s.idle());
                idle.min_by_key(|(_, s)| s.deadline_ms).map(|(i, _)| i)
            };
            let Some(i) = free.or_else(idle) else {
                self.stats.busy += 1;
                busy(stream);
                continue;
            };
            if self.slots[i].stream.is_some() {
                self.slots[i].close();
                self.slots[i].reap();
                self.closed |= 0b11 << (1 + 2 * i);
            }
            self.slots[i].open(stream, now_ms, self.idle_ms);
        }
    }

    /// Moves slot `i` on as far as it can go now.
    fn serve(&mut self, i: usize, now_ms: u64) {
        if !self.slots[i].is_open() {
            return;
        }
        match self.slots[i].phase {
            Phase::Reading => self.read_request(i, now_ms),
            Phase::Answering { .. } => self.slots[i].answer(now_ms),
            Phase::Nar { .. } => self.pump_nar(i, now_ms),
        }
    }
}

/// A client beyond every slot: 503, said once without waiting, and closed.
fn busy(mut stream: TcpStream) {
    let mut out = [0u8; 512];
    let n = refusal_answer(Refusal::Busy, &mut out);
    let _ = stream.write(&out[..n]);
    serve::linger(stream, &mut out);
}

/// A response head; `length` `None`: the body ends when the connection closes.
fn write_head(
    out: &mut [u8],
    status: u16,
    kind: &str,
    length: Option<usize>,
    keep_alive: bool,
) -> usize {
    let mut c = std::io::Cursor::new(out);
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let written = match length {
        Some(n) => write!(c, "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nContent-Length: {n}\r\nConnection: {connection}\r\n\r\n", reason(status)),
        None => write!(c, "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nConnection: close\r\n\r\n", reason(status)),
    };
    written.expect("a head fits HEAD_ROOM");
    c.position() as usize
}

/// A refusal's whole answer (it closes the connection, but for a 404).
fn refusal_answer(r: Refusal, out: &mut [u8]) -> usize {
    let body = r.message().as_bytes();
    let keep_alive = r == Refusal::NotFound;
    let n = write_head(out, r.status(), "text/plain", Some(body.len()), keep_alive);
    out[n..n + body.len()].copy_from_slice(body);
    n + body.len()
}

mod serve;
pub use serve::closure_argv;
