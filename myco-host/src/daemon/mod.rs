//! The daemon: one thread, one event loop. Start-up (`Daemon::start`) builds everything in the
//! arena (`crate::arena`) and replays the WAL; `run` then waits on the backend for the gossip
//! socket, the API socket and its connections, the signalfd and the WAL write in flight, and
//! ticks the core at least every `TICK_MS_MAX`. The core makes every decision; this module moves
//! bytes and keeps time.

pub mod answers;
pub mod boot;
pub mod build;
pub mod cache;
pub mod config;
pub mod conns;
pub mod dns;
pub mod events;
pub mod executor;
pub mod gc;
pub mod health;
pub mod kept;
pub mod metrics;
pub mod net;
pub mod peers;
pub mod proxy;
pub mod seat;
pub mod serve;
pub mod sink;
pub mod transient;
pub mod udp_batch;
pub mod wal;

use crate::arena::{Arena, ExecutorArena};
use crate::flight::{Level, Logger};
use crate::io::{Backend, Completion, Completions, Interest};
use crate::reserve::{Reserve, ReserveState};
use crate::systemd::Notifier;
use boot::BootError;
use config::Config;
use conns::Connections;
use myco_core::crypto::CertError;
use myco_core::node::Storage;
use myco_core::node::TICK_MS_MAX;
use myco_core::time::Instant;
use myco_core::Node;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use peers::PeersFile;
use sink::CoreSink;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

const TOKEN_UDP: u64 = 0;
const TOKEN_LISTENER: u64 = 1;
const TOKEN_SIGNALS: u64 = 2;
/// DNS listener `i`: its UDP socket is `TOKEN_DNS_BASE + 2i`, its TCP listener the next.
const TOKEN_DNS_BASE: u64 = 3;
/// DNS TCP connections: 8 and up, below the API's `TOKEN_CONN_BASE`.
const TOKEN_DNS_CONN_BASE: u64 = 8;
const _: () = assert!(TOKEN_DNS_BASE + 2 * dns::DNS_LISTENERS_MAX as u64 <= TOKEN_DNS_CONN_BASE);
const _: () = assert!(TOKEN_DNS_CONN_BASE + dns::DNS_TCP_MAX as u64 <= conns::TOKEN_CONN_BASE);
const _: () =
    assert!(conns::TOKEN_CONN_BASE + conns::CONNECTIONS_MAX as u64 <= health::TOKEN_CHECK_BASE);
/// The binary cache's tokens: its listener, its slots' sockets and pipes, and its refresh's pipe
/// (`cache::TOKENS` is the last offset).
const TOKEN_CACHE_BASE: u64 = 64;
const _: () = assert!(health::TOKEN_CHECK_BASE + health::CHECK_SLOTS as u64 <= TOKEN_CACHE_BASE);
/// The proxy's tokens: its listener and its slots' two sockets each, after the cache's.
const TOKEN_PROXY_BASE: u64 = TOKEN_CACHE_BASE + cache::TOKENS as u64 + 1;
/// Interests: the daemon's three fds, the DNS listeners, the connections, the health checks,
/// the binary cache and the proxy.
const INTERESTS_MAX: usize = 3
    + 2 * dns::DNS_LISTENERS_MAX
    + dns::DNS_TCP_MAX
    + conns::CONNECTIONS_MAX
    + health::CHECK_SLOTS
    + cache::TOKENS
    + 1
    + proxy::TOKENS;
const _: () = assert!(INTERESTS_MAX <= crate::io::TOKENS_MAX);
/// The start-up thread's stack: the node and its tables are built by value there.
const BOOT_STACK_BYTES: usize = 8 << 20;
/// Datagrams read per wake-up, so a flood cannot starve the API and the timers.
const DATAGRAMS_PER_WAKE: usize = 64;
/// Disk-full retries, reserve re-creation and the peers file run this often.
const HOUSEKEEPING_MS: u64 = 1_000;
// Deploy deadlines are checked in housekeeping: the 507 must still come within the CLI's margin.
const _: () = assert!(2 * HOUSEKEEPING_MS <= myco_core::config::DEPLOY_ANSWER_MARGIN_MS);
const RESERVE_RETRY_MS: u64 = 5_000;
/// Membership changes are written at most this often (and only when the set changed).
const PEERS_SAVE_MS: u64 = 2_000;

pub struct Daemon {
    node: &'static mut Node,
    sink: CoreSink,
    /// The systems this box builds for peers and the build key it builds now, as its status
    /// last said (`Node::set_building`).
    building: (u8, u64),
    api: Connections,
    signals: SignalFd,
    notifier: Notifier,
    /// Half of systemd's WatchdogSec, when it set one.
    watchdog: Option<Duration>,
    started: std::time::Instant,
    peers: PeersFile,
    listen: heapless::String<64>,
    socket: std::path::PathBuf,
    io_fallback: bool,
    /// `--strict-alloc`: an allocation after ready aborts instead of being counted.
    strict_alloc: bool,
    next_tick_ms: u64,
    next_housekeeping_ms: u64,
    next_watchdog_ms: u64,
    next_reserve_ms: u64,
    next_peers_ms: u64,
    /// A checkpoint that found the disk full waits until then, and was logged once.
    next_checkpoint_ms: u64,
    checkpoint_postponed: bool,
    /// The highest durable ticket the core has been told of.
    durable_reported: u64,
    stop: bool,
    /// Runs this box's share of the services; `None` with `--executor none`.
    executor: Option<executor::Executor>,
    /// `*.myco` DNS; `None` with `--dns off` or when its address could not be bound.
    dns: Option<dns::Dns>,
    /// The binary cache; `None` with `--cache-listen off` or when it could not be bound.
    cache: Option<cache::Cache>,
    /// The tunnel listener for `myco proxy`; `None` without `--proxy-listen`.
    proxy: Option<proxy::Proxy>,
    _lock: nix::fcntl::Flock<File>,
}

impl Daemon {
    /// Everything that can fail at start: flags already parsed, files read, WAL replayed, sockets
    /// bound. Returns a daemon ready to serve.
    ///
    /// Start-up runs on a short-lived thread. Building the node by value makes stack frames of
    /// hundreds of KiB before it is moved into the arena; pages the main thread's stack touches
    /// stay resident for the daemon's life, while a finished thread's stack is given back. The
    /// thread builds the daemon in the arena and hands it over (`arena::hand_over`); the caller,
    /// which runs the loop, takes it in `run`. The daemon is never dropped: `shutdown` does what
    /// must happen before the process ends (cancel the ring's watches, close connections, remove
    /// the socket), and the end of the process closes the rest; the WAL buffer a write may still
    /// hold is the arena's, never freed.
    pub fn start(config: &Config, log: Logger) -> Result<&'static mut Daemon, BootError> {
        // Blocked here, before the thread exists, so both threads have SIGTERM and SIGINT
        // blocked and they only ever arrive through the descriptor.
        let signals =
            signal_fd().map_err(|e| BootError(format!("cannot take SIGTERM and SIGINT: {e}")))?;
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("myco-d-start".into())
                .stack_size(BOOT_STACK_BYTES)
                .spawn_scoped(s, || Daemon::build(config, log, signals))
                .map_err(|e| BootError(format!("cannot start the start-up thread: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn build(
        config: &Config,
        log: Logger,
        signals: SignalFd,
    ) -> Result<&'static mut Daemon, BootError> {
        let started = std::time::Instant::now();
        let arena = Arena::take()
            .ok_or_else(|| BootError("this process started a daemon already".into()))?;
        let (seed, cert, (udp, listener)) = preflight(config)?;
        let lock = boot::lock_state_dir(&config.state_dir)?;
        install_recorder(config, &log);
        let revocation = boot::read_revocation(config)?;
        let (peers, remembered) = boot::peers(&config.state_dir, &log);
        let join = boot::join_list(config, &remembered);
        let node = boot::node(config, (seed, &cert), (&join, &log), arena.node)?;
        let (store, recovery) = boot::replay(node, &config.state_dir, &log, arena.store)?;
        let reserve = Reserve::new(&config.state_dir, config.reserve_bytes);
        let (io, fallback) = start_backend(config, &log)?;
        let wal = wal::WalQueue::new(arena.wal);
        let mut sink = CoreSink::new(udp, io, store, reserve, log, (wal, arena.events))
            .map_err(|e| BootError(format!("cannot read the UDP socket's address: {e}")))?;
        sink.stats.wal_truncated_bytes = recovery.clock;
        sink.events.push(recovery);
        if let Some((_, record)) = &revocation {
            node.handle_revocation(record, &mut sink)
                .map_err(|e| BootError(format!("the revocation is refused: {}", e.message())))?;
        }
        check_own_cert(node)?;
        let listen = listen_text(&sink.udp)?;
        let executor_parts = (arena.executor, arena.audit_line);
        let peers_and_arch = (!join.is_empty(), node.meta().arch);
        let executor = start_executor(config, peers_and_arch, log, executor_parts)?;
        let dns = start_dns(config, arena.dns, log);
        let cache = start_cache(config, (seed, node.id()), arena.cache, log);
        let proxy = start_proxy(config, arena.proxy, log)?;
        let notifier = Notifier::from_env()
            .map_err(|e| BootError(format!("cannot reach systemd's NOTIFY_SOCKET: {e}")))?;
        let daemon = arena.daemon.write(Daemon {
            node,
            sink,
            building: (0, 0),
            api: Connections {
                heartbeat_ms: config.stream_heartbeat_ms,
                request_timeout_ms: config.request_timeout_ms,
                ..Connections::new(listener, arena.api)
            },
            signals,
            notifier,
            watchdog: crate::systemd::watchdog_interval(),
            started,
            peers,
            listen,
            socket: config.socket.clone(),
            io_fallback: fallback.is_some(),
            strict_alloc: config.strict_alloc,
            next_tick_ms: 0,
            next_housekeeping_ms: HOUSEKEEPING_MS,
            next_watchdog_ms: 0,
            next_reserve_ms: RESERVE_RETRY_MS,
            next_peers_ms: 0,
            next_checkpoint_ms: 0,
            checkpoint_postponed: false,
            durable_reported: 0,
            stop: false,
            executor,
            dns,
            cache,
            proxy,
            _lock: lock,
        });
        // Last, once nothing can fail: a failed start leaves no reserve behind.
        boot::reserve(&mut daemon.sink.reserve, &log);
        daemon.after_calls();
        crate::arena::hand_over();
        Ok(daemon)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Tells systemd the daemon is ready, then serves until SIGTERM or SIGINT.
    pub fn run(&mut self) -> std::io::Result<()> {
        crate::arena::enter_loop();
        let ready = format!(
            "node {:016x} on {} with {} services, {} loop",
            self.node.id(),
            self.listen,
            self.node.store().len(),
            self.sink.io.name()
        );
        self.sink
            .log
            .log(Level::Info, format_args!("ready: {ready}"));
        if let Err(e) = self.notifier.ready(Some(&ready)) {
            self.sink.log.log(
                Level::Warning,
                format_args!("cannot tell systemd READY=1: {e}"),
            );
        }
        crate::alloc::mark_ready(self.strict_alloc);
        let mut interests = heapless::Vec::<Interest, INTERESTS_MAX>::new();
        let mut done = Completions::new();
        while !self.stop {
            self.interests(&mut interests);
            let timeout = Duration::from_millis(
                self.next_tick_ms
                    .saturating_sub(self.now_ms())
                    .min(TICK_MS_MAX),
            );
            self.sink.io.wait(&interests, timeout, &mut done)?;
            for c in core::mem::take(&mut done) {
                self.handle(c);
            }
            self.timers();
            self.after_calls();
            let store = self.node.store();
            self.sink.events.name_entries(|key| {
                // The index is in key-hash order; a name is read without rebuilding the entry.
                let slots = store.slots();
                let i = slots.binary_search_by_key(&key, |s| s.key_hash).ok()?;
                Some(store.name(&slots[i]))
            });
            self.api.pump_streams(&self.sink.events, self.now_ms());
        }
        self.sink
            .log
            .log(Level::Info, format_args!("stopping on signal"));
        let _ = self.notifier.stopping();
        self.shutdown();
        Ok(())
    }

    /// Cancels every readiness watch before the fds close. The kernel tears an io_uring down
    /// after the process exits, and a poll still armed on the UDP socket would keep its port bound
    /// for a few milliseconds: long enough to fail an immediate `systemctl restart`.
    fn shutdown(&mut self) {
        self.node.leave(&mut self.sink);
        for token in [TOKEN_UDP, TOKEN_LISTENER, TOKEN_SIGNALS] {
            self.sink.io.forget(token);
        }
        let dns_tokens = TOKEN_DNS_BASE..TOKEN_DNS_CONN_BASE + dns::DNS_TCP_MAX as u64;
        let check_tokens = (0..health::CHECK_SLOTS as u64).map(|i| health::TOKEN_CHECK_BASE + i);
        for token in dns_tokens.chain(check_tokens) {
            self.sink.io.forget(token);
        }
        for c in self.api.conns.iter_mut() {
            c.close();
        }
        self.api.reap(&mut self.sink.io);
        if let Some(cache) = self.cache.as_mut() {
            cache.close_all();
            let io = &mut self.sink.io;
            cache.reap(|offset| io.forget(TOKEN_CACHE_BASE + offset));
            io.forget(TOKEN_CACHE_BASE);
        }
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.close_all();
            let io = &mut self.sink.io;
            proxy.reap(|offset| io.forget(TOKEN_PROXY_BASE + offset));
            io.forget(TOKEN_PROXY_BASE);
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    fn interests(&mut self, out: &mut heapless::Vec<Interest, INTERESTS_MAX>) {
        out.clear();
        if let Some(executor) = self.executor.as_mut() {
            let checks = executor.checks();
            checks.interests(|i| {
                let _ = out.push(i);
            });
            checks.watched();
        }
        let fixed = [
            (self.sink.udp.as_raw_fd(), TOKEN_UDP),
            (self.api.listener.as_raw_fd(), TOKEN_LISTENER),
            (self.signals.as_raw_fd(), TOKEN_SIGNALS),
        ];
        for (fd, token) in fixed {
            let _ = out.push(Interest {
                fd,
                token,
                readable: true,
                writable: false,
            });
        }
        let mut conns = heapless::Vec::<Interest, { conns::CONNECTIONS_MAX }>::new();
        self.api.interests(&mut conns);
        out.extend(conns);
        let now = self.now_ms();
        if let Some(cache) = self.cache.as_mut() {
            cache.interests(now, push_at(out, TOKEN_CACHE_BASE));
        }
        if let Some(proxy) = self.proxy.as_ref() {
            proxy.interests(push_at(out, TOKEN_PROXY_BASE));
        }
        let Some(dns) = &self.dns else {
            return;
        };
        for (i, l) in dns.listeners.iter().enumerate() {
            let token = TOKEN_DNS_BASE + 2 * i as u64;
            let tcp = dns.watch_tcp().then(|| (l.tcp.as_raw_fd(), token + 1));
            for (fd, token) in std::iter::once((l.udp.as_raw_fd(), token)).chain(tcp) {
                let _ = out.push(Interest {
                    fd,
                    token,
                    readable: true,
                    writable: false,
                });
            }
        }
        for (slot, fd, writing) in dns.conn_fds() {
            let token = TOKEN_DNS_CONN_BASE + slot as u64;
            let _ = out.push(Interest {
                fd,
                token,
                readable: !writing,
                writable: writing,
            });
        }
    }

    fn handle(&mut self, c: Completion) {
        match c {
            Completion::Written { buf, result } => self.sink.handle_written(buf, result),
            Completion::Ready {
                token: TOKEN_UDP, ..
            } => self.receive(),
            Completion::Ready {
                token: TOKEN_LISTENER,
                ..
            } => self.api.accept(self.now_ms()),
            Completion::Ready {
                token: TOKEN_SIGNALS,
                ..
            } => self.signal(),
            // A check's socket is ready: the step after this turn's completions advances it.
            Completion::Ready { token, .. } if health::Checks::owns(token) => {}
            Completion::Ready { token, .. } if token >= TOKEN_PROXY_BASE => {
                let now = self.now_ms();
                if let Some(proxy) = self.proxy.as_mut() {
                    proxy.ready(token - TOKEN_PROXY_BASE, self.node, now);
                }
            }
            Completion::Ready { token, .. } if token >= TOKEN_CACHE_BASE => {
                let now = self.now_ms();
                if let Some(cache) = self.cache.as_mut() {
                    cache.ready(token - TOKEN_CACHE_BASE, now);
                }
            }
            Completion::Ready { token, .. }
                if (TOKEN_DNS_BASE..conns::TOKEN_CONN_BASE).contains(&token) =>
            {
                self.dns_ready(token)
            }
            Completion::Ready { token, .. } => {
                if let Some(slot) = Connections::slot_of(token) {
                    self.connection(slot);
                }
            }
        }
    }

    fn dns_ready(&mut self, token: u64) {
        let now = self.now_ms();
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        let executor = self.executor.as_ref();
        if token >= TOKEN_DNS_CONN_BASE {
            let slot = (token - TOKEN_DNS_CONN_BASE) as usize;
            return dns.serve_tcp(slot, self.node, executor, now);
        }
        let listener = ((token - TOKEN_DNS_BASE) / 2) as usize;
        match (token - TOKEN_DNS_BASE) % 2 {
            0 => dns.serve_udp(listener, self.node, executor),
            _ => dns.accept(listener, now),
        }
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 2 * myco_core::config::FRAME_BYTES];
        for _ in 0..DATAGRAMS_PER_WAKE {
            let (n, from) = match self.sink.udp.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (ECONNREFUSED from a peer that is gone).
                    self.sink.log.log(
                        Level::Debug,
                        format_args!("UDP receive: {}", crate::flight::IoError(&e)),
                    );
                    continue;
                }
            };
            self.sink.stats.datagrams_received += 1;
            let now = Instant(self.now_ms());
            self.node
                .handle_datagram(now, net::peer_addr(from), &buf[..n], &mut self.sink);
        }
    }

    fn signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            self.sink.log.log(
                Level::Info,
                format_args!("received signal {}", info.ssi_signo),
            );
            self.stop = true;
        }
    }

    /// The core's timers, the watchdog and housekeeping.
    fn timers(&mut self) {
        let now = self.now_ms();
        if now >= self.next_tick_ms {
            self.next_tick_ms = now + TICK_MS_MAX;
            self.node.handle_tick(Instant(now), &mut self.sink);
        }
        if let Some(interval) = self.watchdog {
            if now >= self.next_watchdog_ms {
                self.next_watchdog_ms = now + interval.as_millis() as u64;
                let _ = self.notifier.watchdog();
            }
        }
        self.execute(now);
        if let Some(cache) = self.cache.as_mut() {
            cache.step(now);
            if let Some(keys) = cache.take_offer() {
                let port = cache.local_addr().map_or(0, |a| a.port());
                let (now, floor) = (Instant(now), wall_seconds());
                let keys = keys.iter().copied();
                (self.node).set_offer(now, floor, port, keys, &mut self.sink);
            }
        }
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.step(now);
        }
        if now >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = now + HOUSEKEEPING_MS;
            self.housekeeping(now);
        }
    }

    /// Tells the executor of placement changes (it reconciles at most once a second, so a burst
    /// of membership changes moves units once) and lets it drive its commands.
    fn execute(&mut self, now: u64) {
        let Some(executor) = self.executor.as_mut() else {
            return;
        };
        if std::mem::take(&mut self.sink.placement_changed) {
            executor.handle_placement_changed();
        }
        for (from, request) in core::mem::take(&mut self.sink.build_requests) {
            // A refusal is counted by the executor, and answered if the version failed here;
            // otherwise the requester asks elsewhere in time.
            let _ = executor.handle_build_request(Instant(now), self.node, (from, &request));
        }
        for (from, request) in core::mem::take(&mut self.sink.build_failed) {
            // The executor counts it only from the builder it asks for that very version.
            executor.handle_build_failed(Instant(now), from, &request);
        }
        executor.step(self.node, now);
        while let Some((to, request)) = executor.take_build_request() {
            (self.node).send_build_request(to, request, &mut self.sink);
        }
        while let Some((to, request)) = executor.take_build_failed() {
            (self.node).send_build_failed(to, request, &mut self.sink);
        }
        let (builds, building) = (executor.build_mode().builds, executor.building_key());
        if (builds, building) != self.building {
            self.building = (builds, building);
            let floor = wall_seconds();
            (self.node).set_building(Instant(now), floor, builds, building, &mut self.sink);
        }
        executor.step_checks(self.node, now, &mut self.sink.io);
        if let Some(done) = executor.take_gc_done() {
            self.sink.events.push(events::Record::gc(done));
        }
        while let Some(c) = executor.take_changes() {
            if myco_core::executor::rollout::is_step(c.what) {
                executor.audit_rollout(self.node, &c.name, c.what);
            }
            let kind = if c.placement {
                events::Kind::Placement
            } else {
                events::Kind::Unit
            };
            self.sink
                .events
                .push(events::Record::named(kind, c.what, &c.name));
        }
        if executor.take_health_changed() {
            let floor = wall_seconds();
            executor.report_status(self.node, Instant(now), floor, &mut self.sink);
        }
    }

    fn housekeeping(&mut self, now: u64) {
        if let Some(report) = crate::alloc::take_first_after_ready() {
            // Once per process: the metric counts the rest, and a line per allocation would
            // flood the log from a path that runs often.
            self.sink.log.log(
                Level::Warning,
                format_args!("{report} (a bug: myco-d's memory is meant to be fixed after start-up; later ones are only counted in myco_heap_allocations_since_ready_total)"),
            );
        }
        self.api.expire(now);
        if let Some(dns) = self.dns.as_mut() {
            dns.expire(now);
        }
        self.sink.events.flush_refused();
        self.sink.retry_parked();
        if now >= self.next_reserve_ms {
            self.next_reserve_ms = now + RESERVE_RETRY_MS;
            self.restore_reserve();
        }
        if self.sink.members_changed && now >= self.next_peers_ms {
            self.next_peers_ms = now + PEERS_SAVE_MS;
            self.sink.members_changed = false;
            self.save_peers();
        }
    }

    /// Re-creates the reserve once the disk has room again; `ensure` is only called when the
    /// reserve is missing, so a node at rest writes nothing here.
    fn restore_reserve(&mut self) {
        let missing = matches!(
            self.sink.reserve.state(),
            ReserveState::Released { .. } | ReserveState::Deferred { .. }
        );
        if !missing || self.sink.wal_failing() {
            return;
        }
        if let Ok(ReserveState::Present { bytes, .. }) = self.sink.reserve.ensure() {
            self.sink.log.log(
                Level::Info,
                format_args!("disk has room again: the {bytes}-byte reserve is back"),
            );
        }
    }

    fn save_peers(&mut self) {
        let live = self
            .node
            .members()
            .iter()
            .filter(|m| m.is_live())
            .map(|m| m.addr);
        match self.peers.save(live) {
            Ok(true) => self
                .sink
                .log
                .log(Level::Debug, format_args!("peers file updated")),
            Ok(false) => {}
            Err(e) => self.sink.log.log(
                Level::Warning,
                format_args!(
                    "cannot write the peers file: {}",
                    crate::flight::IoError(&e)
                ),
            ),
        }
    }

    /// After any call into the core: persist what it asked for, report durability, answer
    /// deploys that became durable, start the next WAL write.
    fn after_calls(&mut self) {
        if self.sink.take_unlogged() {
            let now = Instant(self.now_ms());
            self.node
                .handle_storage(now, Storage::Unlogged, &mut self.sink);
        }
        let due = self.now_ms() >= self.next_checkpoint_ms;
        if self.sink.checkpoint_requested && !self.sink.wal.in_flight() && due {
            self.checkpoint();
        }
        let durable = self.sink.wal.durable();
        if durable > self.durable_reported {
            self.durable_reported = durable;
            let now = Instant(self.now_ms());
            self.node
                .handle_storage(now, Storage::Durable { ticket: durable }, &mut self.sink);
            self.answer_durable(durable);
        }
        if self.sink.revoked {
            self.sink.revoked = false;
            let record = self.node.revocation_record();
            if let Err(e) = boot::save_revocation(self.sink.store.dir(), record) {
                self.sink.log.log(
                    Level::Error,
                    format_args!(
                        "cannot keep the revocation record: {}",
                        crate::flight::IoError(&e)
                    ),
                );
            }
        }
        self.sink.start_write();
        self.api.reap(&mut self.sink.io);
        if let Some(dns) = self.dns.as_mut() {
            let io = &mut self.sink.io;
            dns.reap(|slot| io.forget(TOKEN_DNS_CONN_BASE + slot as u64));
        }
        if let Some(cache) = self.cache.as_mut() {
            let io = &mut self.sink.io;
            cache.reap(|offset| io.forget(TOKEN_CACHE_BASE + offset));
        }
        if let Some(proxy) = self.proxy.as_mut() {
            let io = &mut self.sink.io;
            proxy.reap(|offset| io.forget(TOKEN_PROXY_BASE + offset));
        }
    }

    /// Snapshots the store, which holds every appended entry, so the pending batch is durable
    /// with it.
    fn checkpoint(&mut self) {
        let store = self.node.store();
        let entries = store.slots().iter().map(|s| store.entry(s));
        match self.sink.store.checkpoint(entries, store.state_hash()) {
            Ok(()) => {
                if std::mem::take(&mut self.checkpoint_postponed) {
                    self.sink.log.log(
                        Level::Info,
                        format_args!("the postponed checkpoint is written"),
                    );
                }
                self.sink.checkpoint_requested = false;
                self.sink.stats.checkpoints += 1;
                self.sink.wal.checkpointed();
                let now = Instant(self.now_ms());
                self.node
                    .handle_storage(now, Storage::Checkpointed, &mut self.sink);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Retried once a second, and said once: the log keeps growing meanwhile.
                self.next_checkpoint_ms = self.now_ms() + HOUSEKEEPING_MS;
                if !std::mem::replace(&mut self.checkpoint_postponed, true) {
                    self.sink.log.log(
                        Level::Warning,
                        format_args!(
                            "checkpoint postponed until the disk has room: {}",
                            crate::flight::IoError(&e)
                        ),
                    );
                }
            }
            Err(e) => panic!(
                "fatal: checkpoint failed: {e}; restarting to recover from the state directory"
            ),
        }
    }
}

/// Whether units written to `unit_dir` can run: systemd is PID 1 (sd_booted(3) looks for
/// /run/systemd/system), or the unit directory is not the system's, as in tests with a stand-in
/// systemctl. Keeps a box without systemd from filling /etc/systemd/system for nothing.
fn systemd_runs(unit_dir: &std::path::Path) -> bool {
    unit_dir != std::path::Path::new("/etc/systemd/system")
        || std::path::Path::new("/run/systemd/system").is_dir()
}

/// The panic hook and its file in the state directory; without the file a crash is still
/// recorded if the disk has room, which the log says.
fn install_recorder(config: &Config, log: &Logger) {
    let recorder = config
        .state_dir
        .join(crate::flight::FLIGHT_RECORDER_FILE_NAME);
    if let Err(e) = crate::flight::install_panic_hook(recorder.clone()) {
        log.log(Level::Warning, format_args!("cannot allocate the flight recorder's file {} ({e}): a crash on a full disk may leave no record", recorder.display()));
    }
}

/// Refuses to start on a certificate the saved RevocationBlock revokes, by the core's rule, with
/// what to do about it.
fn check_own_cert(node: &Node) -> Result<(), BootError> {
    match node.check_own_cert() {
        Err(CertError::Revoked {
            issued_at,
            revocation_block,
        }) => Err(BootError(format!(
            "this node's certificate was issued at {issued_at}, below the RevocationBlock {revocation_block}: ask the operator for a new one ('myco cert --issued-at {revocation_block}')"
        ))),
        Err(e) => Err(BootError(format!("this node's certificate is refused: {}", e.message()))),
        Ok(()) => Ok(()),
    }
}

/// SIGTERM and SIGINT arrive through a descriptor the loop polls, so a stop request is handled
/// between two steps, never inside one.
fn signal_fd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Seeds the core's PRNG (peer choice and jitter; keys use `fill_random`).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    sink::fill_random(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// What can be checked without writing, checked before the state directory and its WAL are made,
/// so a start that fails on a bad key, a missing socket directory or a port in use leaves the
/// disk as it was: the node key and certificate (under --operator), and both sockets, bound.
type Preflight = ([u8; 32], Vec<u8>, (std::net::UdpSocket, UnixListener));

fn preflight(config: &Config) -> Result<Preflight, BootError> {
    let seed = boot::read_node_seed(&config.key)?;
    let cert = boot::read_cert(&config.cert)?;
    boot::check_credentials(config, seed, &cert)?;
    Ok((seed, cert, bind_sockets(config)?))
}

/// Binds the gossip socket and the API's Unix socket; either failing stops the start.
fn bind_sockets(config: &Config) -> Result<(std::net::UdpSocket, UnixListener), BootError> {
    let udp = net::bind_udp_retrying(config.listen).map_err(|e| {
        boot::held_by_another(&config.state_dir)
            .unwrap_or_else(|| BootError(format!("cannot bind --listen {}: {e}", config.listen)))
    })?;
    let listener = net::bind_api(&config.socket).map_err(|e| {
        let dir = config.socket.parent().filter(|d| !d.as_os_str().is_empty());
        match dir.filter(|d| !d.is_dir()) {
            Some(dir) => BootError(format!(
                "cannot listen on --socket {}: its directory {} does not exist; create it \
                 (under systemd, the unit's RuntimeDirectory=myco makes /run/myco) or pass \
                 another --socket",
                config.socket.display(),
                dir.display()
            )),
            None => BootError(format!(
                "cannot listen on --socket {}: {e}",
                config.socket.display()
            )),
        }
    })?;
    Ok((udp, listener))
}

/// The event loop's backend, and why io_uring was not used if `auto` fell back to poll (said in
/// the log too, since it behaves the same and only costs more syscalls).
fn start_backend(
    config: &Config,
    log: &Logger,
) -> Result<(Backend, Option<std::io::Error>), BootError> {
    let name = match config.io {
        crate::io::Choice::Auto => "auto",
        crate::io::Choice::Uring => "uring",
        crate::io::Choice::Poll => "poll",
    };
    let (io, fallback) = Backend::new(config.io)
        .map_err(|e| BootError(format!("cannot start the event loop of --io {name}: {e}")))?;
    if let Some(why) = &fallback {
        log.log(
            Level::Warning,
            format_args!("io_uring is unavailable ({why}); using poll(2), which behaves the same"),
        );
    }
    Ok((io, fallback))
}

/// The gossip address as it is bound (the port too, when `--listen` asked for port 0).
fn listen_text(udp: &std::net::UdpSocket) -> Result<heapless::String<64>, BootError> {
    let mut listen = heapless::String::new();
    let addr = udp.local_addr().map_err(|e| BootError(format!("{e}")))?;
    let _ = core::fmt::write(&mut listen, format_args!("{addr}"));
    Ok(listen)
}

/// Wall-clock seconds: the floor that keeps the status version growing across restarts.
fn wall_seconds() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The binary cache on `--cache-listen`, serving the closures of the Nix engine's GC roots;
/// `None` when it is off or its address cannot be bound, which the log says (the box runs on).
fn start_cache(
    config: &Config,
    (seed, node_id): ([u8; 32], u64),
    buffers: cache::CacheBuffers,
    log: Logger,
) -> Option<cache::Cache> {
    let listen = config.cache_listen?;
    // The node was built from this seed, so it is a valid key.
    let key = (
        myco_core::crypto::SigningKey::from_seed(seed).ok()?,
        node_id,
    );
    let roots = config.executor.as_ref().map(|e| {
        let dir = (e.build.gcroot_dir.clone())
            .unwrap_or_else(|| config.state_dir.join(build::GCROOT_DIR_IN_STATE));
        (dir, e.build.systemd_run.as_str())
    });
    let cache_config = cache::CacheConfig {
        listen,
        upload_rate: config.cache_upload_rate,
        nix_store: "nix-store",
        roots: roots.as_ref().map(|(dir, run)| (dir.as_path(), *run)),
        idle_ms: config.request_timeout_ms,
    };
    match cache::Cache::bind(&cache_config, key, buffers, log) {
        Ok(mut cache) => {
            let socket = config
                .executor
                .as_ref()
                .and_then(|e| e.privileged.as_deref());
            let client = |s| crate::privileged::client::Client::new(s, config.operator, log);
            if let Some(Ok(client)) = socket.map(client) {
                cache.ask_privileged(client);
            }
            let mut public = [0u8; 64 + cache::KEY_TEXT_BYTES];
            let n = cache.public_key(&mut public);
            let addr = cache.local_addr().unwrap_or(listen);
            let rate = config.cache_upload_rate;
            log.log(Level::Info, format_args!("binary cache on http://{addr}, public key {}, uploads at most {rate} bytes/s (0: unlimited)", crate::path::Lossy(&public[..n])));
            Some(cache)
        }
        Err(e) => {
            log.log(
                Level::Warning,
                format_args!("the binary cache does not listen on {listen}: cannot bind it: {e}"),
            );
            None
        }
    }
}

/// A sink for a part's interests named by token offsets from `base`.
fn push_at(
    out: &mut heapless::Vec<Interest, INTERESTS_MAX>,
    base: u64,
) -> impl FnMut(std::os::fd::RawFd, u64, bool, bool) + '_ {
    move |fd, offset, readable, writable| {
        let token = base + offset;
        let _ = out.push(Interest {
            fd,
            token,
            readable,
            writable,
        });
    }
}

/// `*.myco` DNS on `--dns`; an address that cannot be bound is logged and left out.
fn start_dns(config: &Config, buffers: dns::DnsBuffers, log: Logger) -> Option<dns::Dns> {
    dns::Dns::bind((&config.dns, config.listen), buffers, |addr, e| {
        log.log(
            Level::Warning,
            format_args!("*.myco DNS does not answer on {addr}: cannot bind it: {e}"),
        );
    })
}

/// The tunnel listener on `--proxy-listen`. Unlike the cache, an address asked for that cannot
/// be bound stops the start: the operator asked to reach this box through it.
fn start_proxy(
    config: &Config,
    buffers: proxy::ProxyBuffers,
    log: Logger,
) -> Result<Option<proxy::Proxy>, BootError> {
    let Some(listen) = config.proxy_listen else {
        return Ok(None);
    };
    let socket = config.socket.clone();
    let proxy = proxy::Proxy::bind(listen, socket, config.request_timeout_ms, buffers, log)
        .map_err(|e| BootError(format!("cannot listen for tunnels on {listen}: {e}")))?;
    let addr = proxy.local_addr().unwrap_or(listen);
    log.log(
        Level::Info,
        format_args!("tunnels for myco proxy on {addr}"),
    );
    Ok(Some(proxy))
}

/// The executor, unless `--executor none` or systemd is not running here: then services are
/// kept and gossiped but not run, which the log says.
fn start_executor(
    config: &Config,
    (has_peers_configured, arch): (bool, myco_core::schema::entry::Arch),
    log: Logger,
    (arena, audit_line): (ExecutorArena, &'static mut [u8]),
) -> Result<Option<executor::Executor>, BootError> {
    Ok(match &config.executor {
        Some(e) if !systemd_runs(&e.unit_dir) => {
            log.log(Level::Warning, format_args!("systemd is not running here (no /run/systemd/system): services are kept and gossiped but not run; --executor none says so on purpose"));
            None
        }
        Some(e) => Some(with_helper(
            executor::Executor::new(
                e.unit_dir.clone(),
                (&e.systemctl, &e.journalctl),
                crate::audit::AuditLog::open(&e.audit_log, audit_line).map_err(|err| {
                    BootError(format!(
                        "cannot open the audit log {}: {err}",
                        e.audit_log.display()
                    ))
                })?,
                executor::NixSetup {
                    build: e.build.clone(),
                    gc: e.gc.clone(),
                    state_dir: &config.state_dir,
                },
                has_peers_configured,
                log,
                arena,
            )
            .map_err(|err| {
                BootError(format!(
                    "cannot read the unit directory {}: {err}",
                    e.unit_dir.display()
                ))
            })
            .map(|mut ex| {
                ex.set_build_mode(build::build_mode(&e.build, arch, &log));
                ex.restore_kept(&config.operator);
                ex
            })?,
            (e.privileged.as_deref(), config.operator),
            log,
        )?),
        None => None,
    })
}

/// `executor`, asking `myco-priv` at `socket` for its unit work if `--privileged` names one.
fn with_helper(
    mut executor: executor::Executor,
    (socket, operator): (Option<&std::path::Path>, myco_core::crypto::PublicKey),
    log: Logger,
) -> Result<executor::Executor, BootError> {
    if let Some(socket) = socket {
        let client = crate::privileged::client::Client::new(socket, operator, log)
            .map_err(|err| BootError(format!("--privileged {}: {err}", socket.display())))?;
        executor.ask_privileged(client);
        log.log(
            Level::Info,
            format_args!("unit work is asked of myco-priv on {}", socket.display()),
        );
    }
    Ok(executor)
}
