//! `CoreSink`: what the core's effects touch on this box. It is the node's `Sink` (UDP sends, WAL
//! appends, events, randomness) and owns the event loop's backend, because a WAL batch that fills
//! up must be written before the append that overflowed it returns.
//!
//! A full disk is an episode, not a stream of failures: the first ENOSPC frees the reserve (if
//! there is one) and writes again; if the disk is still full the batch is parked and written again
//! about once a second until it fits. The episode is counted and logged once when it starts and
//! once when it ends, never per retry. Meanwhile appends collect in the other batch; once that is
//! full too, further appends are skipped: their entries stay in memory (served, placed, gossiped)
//! and the core is told (`Storage::Unlogged`), so it asks for a checkpoint whose snapshot stores
//! them once the disk has room. A skipped append is never reported durable before that snapshot,
//! so nothing is acknowledged that is not on disk, and the daemon never stops for a full disk.

use super::events::{Kind, Record, Records, Ring};
use super::net::socket_addr;
use super::wal::{Batch, WalQueue};
use crate::flight::{Level, Logger};
use crate::io::{Backend, Completion, Completions};
use crate::reserve::Reserve;
use crate::store::FileStore;
use myco_core::config::{FRAME_BYTES, PEER_BUILDS_MAX};
use myco_core::node::Refusal;
use myco_core::schema::message::BuildRequest;
use myco_core::{Event, PeerAddr, Sink};
use std::io::{self, ErrorKind};
use std::net::UdpSocket;
use std::time::Duration;

/// Counters the host keeps beside the core's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkStats {
    pub datagrams_received: u64,
    /// Sends the kernel refused: a full socket buffer (dropped, as UDP would) or an unreachable
    /// address.
    pub sends_dropped: u64,
    pub sends_failed: u64,
    /// Full-disk episodes: times a WAL write found the disk full after the last one succeeded.
    pub wal_disk_full: u64,
    /// Appends skipped because the disk and the batch were full: kept in memory only until the
    /// next checkpoint.
    pub wal_unlogged: u64,
    pub reserve_releases: u64,
    pub checkpoints: u64,
    pub members_dead: u64,
    /// Bytes cut from the log by the recovery at start (a torn or corrupt tail).
    pub wal_truncated_bytes: u64,
    /// Build requests dropped before the executor saw them: more arrived in one step than
    /// `PEER_BUILDS_MAX` (the executor's own table is the bound that counts).
    pub build_requests_dropped: u64,
}

/// Upper bounds, in seconds, of the WAL write latency buckets: from a fast SSD's fdatasync to an
/// SD card's worst stalls.
pub const LATENCY_BOUNDS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A Prometheus histogram with fixed buckets (`LATENCY_BOUNDS`, then +Inf), without allocating.
#[derive(Clone, Copy, Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; the writer sums them).
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

pub struct CoreSink {
    pub udp: UdpSocket,
    pub ipv6: bool,
    pub io: Backend,
    pub store: FileStore,
    pub wal: WalQueue,
    pub reserve: Reserve,
    pub log: Logger,
    pub stats: SinkStats,
    /// The core asked for a snapshot; taken between writes.
    pub checkpoint_requested: bool,
    /// The RevocationBlock rose; the record goes to disk after the current call.
    pub revoked: bool,
    /// Membership changed; the peers file may need rewriting.
    pub members_changed: bool,
    /// The desired state or the set of live members changed: placement may differ.
    pub placement_changed: bool,
    /// Build requests from peers (`Event::BuildRequest`), for the executor to judge; at most
    /// `PEER_BUILDS_MAX` between two steps, the rest dropped and counted.
    pub build_requests: heapless::Vec<(u64, BuildRequest), PEER_BUILDS_MAX>,
    /// Builders' answers that a build this box asked for failed (`Event::BuildFailed`), with
    /// their senders, for the executor; as many between two steps, the rest dropped (the
    /// builder answers the next request again).
    pub build_failed: heapless::Vec<(u64, BuildRequest), PEER_BUILDS_MAX>,
    /// What `/stream` subscribers are sent; its records are the arena's.
    pub events: Ring,
    /// When the write in flight was submitted, and how long writes took (write + fdatasync).
    write_started: Option<std::time::Instant>,
    pub wal_latency: Histogram,
    /// A batch the disk had no room for, waiting to be written again at the same offset.
    parked: Option<&'static mut [u8]>,
    parked_len: usize,
    /// From the first ENOSPC of an episode until a write succeeds again.
    disk_full: bool,
    /// From the moment a batch was parked (the reserve could not help) until a write succeeds:
    /// the WAL cannot write, deploys are refused.
    stalled: bool,
    /// Appends were skipped since the core was last told (`take_unlogged`).
    unlogged: bool,
}

impl CoreSink {
    pub fn new(
        udp: UdpSocket,
        io: Backend,
        store: FileStore,
        reserve: Reserve,
        log: Logger,
        (wal, events): (WalQueue, &'static mut Records),
    ) -> io::Result<CoreSink> {
        let ipv6 = udp.local_addr()?.is_ipv6();
        Ok(CoreSink {
            udp,
            ipv6,
            io,
            store,
            wal,
            reserve,
            log,
            stats: SinkStats::default(),
            checkpoint_requested: false,
            revoked: false,
            members_changed: false,
            placement_changed: true,
            build_requests: heapless::Vec::new(),
            build_failed: heapless::Vec::new(),
            events: Ring::new(first_event_id(), events),
            write_started: None,
            wal_latency: Histogram::default(),
            parked: None,
            parked_len: 0,
            disk_full: false,
            stalled: false,
            unlogged: false,
        })
    }

    /// The log cannot take writes now (the disk is full even after freeing the reserve). Stays
    /// true while a parked batch is being written again, until a write succeeds.
    pub fn wal_failing(&self) -> bool {
        self.stalled
    }

    /// Whether appends were skipped since the last call: the core must then be told
    /// (`Storage::Unlogged`), so that a checkpoint stores what the log lacks.
    pub fn take_unlogged(&mut self) -> bool {
        core::mem::take(&mut self.unlogged)
    }

    /// Starts writing the pending batch if no write is in flight.
    pub fn start_write(&mut self) {
        if let Some(Batch { buf, len }) = self.wal.take() {
            self.submit_write(buf, len);
        }
    }

    fn submit_write(&mut self, buf: &'static mut [u8], len: usize) {
        self.write_started = Some(std::time::Instant::now());
        let (fd, offset) = (self.store.wal_fd(), self.store.wal_bytes());
        if self.io.write_durable(fd, buf, len, offset).is_err() {
            unreachable!("the queue allows one write in flight, and so does the backend");
        }
    }

    /// A write finished. Disk full: free the reserve and write again, or park the batch until
    /// space returns. Any other failure is fatal: after a failed fdatasync the page cache may no
    /// longer say what the disk holds, so the process restarts and replays what is on disk.
    pub fn handle_written(&mut self, buf: &'static mut [u8], result: io::Result<()>) {
        match result {
            Ok(()) => {
                let len = self.wal.written(buf);
                self.store.record_written(len);
                if let Some(started) = self.write_started.take() {
                    self.wal_latency.observe(started.elapsed().as_secs_f64());
                }
                self.disk_has_room();
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => self.handle_disk_full(buf),
            Err(e) => panic!("fatal: the WAL write or fdatasync failed: {e}; restarting to recover from the state directory"),
        }
    }

    /// A write found the disk full: the episode is counted once, the reserve freed if there is
    /// one (then the batch is written again), else the batch is parked.
    fn handle_disk_full(&mut self, buf: &'static mut [u8]) {
        if !self.disk_full {
            self.disk_full = true;
            self.stats.wal_disk_full += 1;
        }
        let len = self.wal.inflight_len();
        match self.reserve.release() {
            Ok(freed) if freed > 0 => {
                self.stats.reserve_releases += 1;
                self.log.log(Level::Warning, format_args!("disk full: freed the {freed}-byte reserve so the WAL keeps working; free space on this disk"));
                self.submit_write(buf, len);
            }
            Ok(_) => {
                if !self.stalled {
                    self.stalled = true;
                    self.log.log(Level::Error, format_args!("disk full and no reserve left: deploys are refused (507) until space is freed; gossip, reads, DNS and units go on, and entries that do not fit the WAL's batch are kept in memory until a checkpoint can store them"));
                }
                self.parked = Some(buf);
                self.parked_len = len;
            }
            Err(e) => panic!("fatal: cannot delete the disk reserve: {e}"),
        }
    }

    /// A write succeeded: a full-disk episode, if one was on, is over.
    fn disk_has_room(&mut self) {
        if self.stalled {
            self.log.log(
                Level::Info,
                format_args!("the disk has room again: the WAL writes again"),
            );
        }
        self.disk_full = false;
        self.stalled = false;
    }

    /// Writes a parked batch again (called about once a second while the disk is full).
    pub fn retry_parked(&mut self) {
        if let Some(buf) = self.parked.take() {
            let len = self.parked_len;
            self.submit_write(buf, len);
        }
    }

    /// Waits for the write in flight (a full batch must be written before more can be added).
    /// Readiness reported meanwhile is dropped: interests are level-triggered, so the loop hears
    /// of it again.
    fn await_write(&mut self) {
        let mut done = Completions::new();
        while self.wal.in_flight() && self.parked.is_none() {
            if let Err(e) = self.io.wait(&[], Duration::from_secs(1), &mut done) {
                panic!("fatal: the event loop failed while waiting for the WAL: {e}");
            }
            for c in core::mem::take(&mut done) {
                if let Completion::Written { buf, result } = c {
                    self.handle_written(buf, result);
                }
            }
        }
    }

    /// Writes batches until `entry` fits the pending one. False when it cannot: the batch is full
    /// and the disk has no room for the one before it.
    fn make_room(&mut self, entry: &[u8]) -> bool {
        while !self.wal.fits(entry) {
            self.await_write();
            if self.parked.is_some() {
                return false;
            }
            self.start_write();
        }
        true
    }
}

impl Sink for CoreSink {
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]) {
        let Some(addr) = socket_addr(to, self.ipv6) else {
            self.stats.sends_failed += 1;
            return;
        };
        match self.udp.send_to(frame, addr) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.stats.sends_dropped += 1,
            Err(e) => {
                self.stats.sends_failed += 1;
                self.log.log(
                    Level::Debug,
                    format_args!("send to {addr} failed: {}", crate::flight::IoError(&e)),
                );
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::MemberJoined(id) => self.member(id, "joined"),
            Event::MemberAlive(id) => self.member(id, "alive"),
            Event::MemberSuspect(id) => self.member(id, "suspect"),
            Event::MemberDead(id) => {
                self.stats.members_dead += 1;
                self.member(id, "dead");
            }
            Event::MemberLeft(id) => self.member(id, "left"),
            Event::EntryChanged { key_hash } => {
                self.placement_changed = true;
                let mut r = Record::new(Kind::Entry, "");
                r.key = key_hash;
                self.events.push(r);
                self.log
                    .log(Level::Debug, format_args!("entry {key_hash:016x} changed"));
            }
            Event::Durable { .. } => {}
            Event::BuildRequest { from, request } => {
                self.log.log(
                    Level::Debug,
                    format_args!("member {from:016x} asks for a build"),
                );
                if self.build_requests.push((from, request)).is_err() {
                    self.stats.build_requests_dropped += 1;
                }
            }
            Event::BuildFailed { from, request } => {
                self.log.log(
                    Level::Info,
                    format_args!("builder {from:016x} says its build of a version asked failed"),
                );
                let _ = self.build_failed.push((from, request));
            }
            Event::Refused(why) => self.refused(why),
            Event::BehindNat { .. } | Event::RelayTranslated { .. } => self.nat(event),
            Event::Revoked { height } => {
                self.revoked = true;
                let mut r = Record::new(Kind::Revoked, "");
                r.count = height;
                self.events.push(r);
                self.log.log(Level::Warning, format_args!("RevocationBlock rose to {height}: certificates issued below it are refused"));
            }
        }
    }

    /// Logs `entry`, or skips it when the disk and the batch are full (the module says why that
    /// loses nothing acknowledged).
    fn append(&mut self, entry: &[u8], ticket: u64) {
        if self.make_room(entry) {
            self.wal.push(entry, ticket);
        } else {
            self.wal.skip(ticket);
            self.stats.wal_unlogged += 1;
            self.unlogged = true;
        }
    }

    fn checkpoint(&mut self) {
        self.checkpoint_requested = true;
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        fill_random(buf);
    }
}

/// This run's first event id: the wall-clock time in milliseconds (`events` says why).
fn first_event_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2): no file to open, so it works under
/// PrivateDevices and before /dev is set up).
pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert!(
                e.kind() == ErrorKind::Interrupted,
                "fatal: getrandom failed: {e}"
            );
            continue;
        }
        filled += n as usize;
    }
}

impl CoreSink {
    fn member(&mut self, id: u64, what: &'static str) {
        self.members_changed = true;
        self.placement_changed = true;
        let mut r = Record::new(Kind::Member, what);
        r.key = id;
        self.events.push(r);
        if what == "left" {
            self.log.log(
                Level::Info,
                format_args!("member {id:016x} left: it stopped cleanly and said so"),
            );
        } else {
            self.log
                .log(Level::Info, format_args!("member {id:016x} is {what}"));
        }
    }

    /// What the core found out about address translation in front of this box (`node::natobs`),
    /// said once a run.
    fn nat(&mut self, event: Event) {
        match event {
            Event::BehindNat { seen_at } => self.log.log(
                Level::Warning,
                format_args!(
                    "behind NAT: peers see this box at {}, not one of its own addresses; using relays",
                    super::net::display_addr(seen_at)
                ),
            ),
            Event::RelayTranslated { seen_at } => self.log.log(
                Level::Warning,
                format_args!(
                    "a relay behind address translation: peers see this box at {}, not one of its own addresses; boxes behind NAT reach it only if that address forwards to it",
                    super::net::display_addr(seen_at)
                ),
            ),
            _ => {}
        }
    }

    fn refused(&mut self, why: Refusal) {
        self.events.refused(why.name());
        let detail = match why {
            Refusal::Frame(_) => "not a well-formed frame",
            Refusal::Crypto(r) => r.name(),
            Refusal::WrongZone => "from another zone",
            Refusal::Body => "its body does not decode",
            Refusal::Entry(e) => e.message(),
            Refusal::Bridge => "a bridge session carried more than desired state",
            Refusal::Relay(_) => "a relayed frame this box may not forward",
        };
        self.log.log(
            Level::Debug,
            format_args!("refused a frame ({}): {detail}", why.name()),
        );
    }
}
