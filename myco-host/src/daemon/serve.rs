//! Answering API requests: read what arrived, answer each complete request in order, write what
//! the client takes. A deploy is answered only once its WAL record is durable.

use super::answers::{self, DaemonSnapshot};
use super::conns::{range_in, Arrived, Conn, Waiting, DEPLOY_TIMEOUT_MS};
use super::metrics;
use super::Daemon;
use crate::http::request::{Parse, Route};
use crate::http::response::{
    body_cursor, finish, write_http_error, ContentType, Cursor, Full, Head,
};
use crate::reserve::ReserveState;
use core::fmt::Write;
use myco_core::node::SubmitError;
use myco_core::schema::entry::{valid_name, Entry};
use myco_core::state::store::{key_hash, StoreError};
use myco_core::time::Instant;

/// An answer the handler decided on: a status and a body writer's result.
type Body = Result<(), Full>;

impl Daemon {
    /// The connection in `slot` is readable or writable.
    pub(super) fn connection(&mut self, slot: usize) {
        let conn = &mut self.api.conns[slot];
        conn.flush();
        if let Arrived::Closed = conn.read() {
            // A deploy already submitted still completes; only its answer has nowhere to go.
            return conn.close();
        }
        if conn.is_streaming() {
            return conn.discard_input();
        }
        self.serve(slot);
    }

    /// Answers buffered requests while the connection may take another answer.
    fn serve(&mut self, slot: usize) {
        loop {
            let now = self.now_ms();
            let status = self.status();
            let streams = self.api.stream_count();
            let Daemon {
                api,
                node,
                sink,
                listen,
                executor,
                ..
            } = self;
            let conn = &mut api.conns[slot];
            // A long `/services` goes on first: the next request waits for its end.
            conn.pump_listing(node, executor.as_ref());
            let (consumed, keep_alive, http11, route, body) = match conn.poll() {
                None | Some(Parse::Incomplete) => break,
                Some(Parse::Error(e)) => {
                    api.stats.errors += 1;
                    let base = conn.answer.as_ptr() as usize;
                    let answer = write_http_error(conn.answer, e).expect("errors fit");
                    let range = range_in(base, answer);
                    conn.queue(range, false);
                    break;
                }
                Some(Parse::Complete(r)) => (r.consumed, r.keep_alive, r.http11, r.route, r.body),
            };
            api.stats.requests += 1;
            // The request borrows the connection's buffer; copy what outlives the answer.
            let mut scratch = [0u8; crate::http::request::REQUEST_BODY_BYTES_MAX];
            scratch[..body.len()].copy_from_slice(body);
            let body = &scratch[..body.len()];
            let route = owned_route(route);
            let full = followers_full(&route, streams);
            let status_code = match route {
                _ if full.is_some() => error(conn, 503, full.unwrap_or_default()),
                Owned::Deploy => deploy(node, sink, conn, body, now, keep_alive),
                Owned::Logs {
                    ref service,
                    follow,
                    lines,
                } => logs(node, executor.as_mut(), conn, service, follow, lines),
                Owned::Audit { follow, lines } => audit(executor.as_mut(), conn, follow, lines),
                Owned::Stream { last_event_id } => {
                    conn.start_stream(&sink.events, last_event_id, now, api.heartbeat_ms);
                    200
                }
                Owned::Other(ref r) => {
                    let ctx = Ctx {
                        node,
                        executor: executor.as_ref(),
                        status: &status,
                        listen,
                        http11,
                    };
                    render(&ctx, r, conn, keep_alive)
                }
            };
            if status_code >= 400 {
                api.stats.errors += 1;
            }
            conn.answered(consumed, now, api.request_timeout_ms);
            conn.flush();
        }
        self.api.conns[slot].flush();
    }

    /// Deploys whose tickets are now durable get their answer.
    pub(super) fn answer_durable(&mut self, durable: u64) {
        for conn in self.api.conns.iter_mut() {
            let Some(w) = conn.waiting.as_ref().filter(|w| w.ticket <= durable) else {
                continue;
            };
            let w = w.clone();
            conn.waiting = None;
            answer_deploy(conn, &w);
            self.sink
                .events
                .push(super::events::Record::deploy(&w.name, w.version, w.applied));
            conn.flush();
        }
        for slot in 0..self.api.conns.len() {
            if self.api.conns[slot].idle() {
                self.serve(slot);
            }
        }
    }

    pub(super) fn status(&self) -> DaemonSnapshot {
        let (reserve, reserve_bytes) = match self.sink.reserve.state() {
            ReserveState::Present { bytes, .. } => ("present", bytes),
            ReserveState::Released { .. } => ("released", 0),
            ReserveState::Deferred { .. } => ("deferred", 0),
            ReserveState::Unchecked | ReserveState::Disabled => ("disabled", 0),
        };
        let allocations = crate::alloc::allocations();
        DaemonSnapshot {
            io: self.sink.io.name(),
            io_fallback: self.io_fallback,
            wal_failing: self.sink.wal_failing(),
            reserve,
            reserve_why: self.sink.reserve.state().deferred_why(),
            reserve_bytes,
            wal_bytes: self.sink.store.wal_bytes(),
            wal_appends: self.sink.wal.appends,
            wal_writes: self.sink.wal.writes,
            sink: self.sink.stats,
            wal_latency: self.sink.wal_latency,
            api: self.api.stats,
            api_open: self.api.open_count(),
            api_streams: self.api.stream_count(),
            events_next_id: self.sink.events.next_id(),
            allocations,
            allocations_since_ready: crate::alloc::allocations_since_ready(),
            heap_bytes: crate::alloc::live_bytes(),
            uptime_ms: self.now_ms(),
            units: self.executor.as_ref().map(|e| (e.census(), e.stats)),
            store: self.executor.as_ref().map(|e| {
                (
                    e.gc_state().stats,
                    e.gc_state().used_permille(),
                    e.audit_lines(),
                )
            }),
            dns: self.dns.as_ref().map(|d| (d.stats, d.listeners.len())),
            cache: self.cache.as_ref().map(|c| c.stats),
            proxy: self.proxy.as_ref().map(|p| p.stats),
        }
    }
}

/// The routes other than deploy, detached from the request buffer.
enum Owned {
    Deploy,
    Stream {
        last_event_id: Option<u64>,
    },
    Logs {
        service: heapless::String<64>,
        follow: bool,
        lines: Option<u32>,
    },
    Audit {
        follow: bool,
        lines: Option<u32>,
    },
    Other(OwnedRoute),
}

enum OwnedRoute {
    Services,
    Service(heapless::String<64>),
    Nodes,
    Health,
    Metrics,
}

fn owned_route(route: Route<'_>) -> Owned {
    Owned::Other(match route {
        Route::Deploy => return Owned::Deploy,
        Route::Services => OwnedRoute::Services,
        Route::Service(name) => {
            OwnedRoute::Service(heapless::String::try_from(name).unwrap_or_default())
        }
        Route::Nodes => OwnedRoute::Nodes,
        Route::Health => OwnedRoute::Health,
        Route::Metrics => OwnedRoute::Metrics,
        Route::Stream { last_event_id } => return Owned::Stream { last_event_id },
        Route::Audit { follow, lines } => return Owned::Audit { follow, lines },
        Route::Logs {
            service,
            follow,
            lines,
        } => {
            let service = heapless::String::try_from(service).unwrap_or_default();
            return Owned::Logs {
                service,
                follow,
                lines,
            };
        }
    })
}

struct Ctx<'a> {
    node: &'a myco_core::Node,
    executor: Option<&'a super::executor::Executor>,
    status: &'a DaemonSnapshot,
    listen: &'a heapless::String<64>,
    /// The request is HTTP/1.1: a long answer may be chunked.
    http11: bool,
}

/// Writes a 200 (or the error that replaces it) with the body `write` produces.
fn reply(
    conn: &mut Conn,
    status: u16,
    content_type: ContentType,
    keep_alive: bool,
    write: impl FnOnce(&mut Cursor<'_>) -> Body,
) -> u16 {
    let head = Head {
        status,
        content_type,
        keep_alive,
        allow: None,
    };
    let base = conn.answer.as_ptr() as usize;
    let answer = body_cursor(conn.answer).and_then(|mut out| {
        write(&mut out)?;
        finish(out, &head)
    });
    match answer {
        Ok(answer) => {
            let range = range_in(base, answer);
            conn.queue(range, keep_alive);
            status
        }
        Err(Full) => error(
            conn,
            500,
            "the answer is larger than the daemon's answer buffer",
        ),
    }
}

fn error(conn: &mut Conn, status: u16, message: &str) -> u16 {
    conn.answer_error(status, message);
    status
}

fn render(ctx: &Ctx<'_>, route: &OwnedRoute, conn: &mut Conn, keep_alive: bool) -> u16 {
    let store = ctx.node.store();
    match route {
        OwnedRoute::Services => {
            conn.start_listing(keep_alive, ctx.http11, ctx.node, ctx.executor);
            200
        }
        OwnedRoute::Service(name) => {
            match store.get(key_hash(name)).as_deref().map(Entry::decode) {
                Some(Ok(entry)) if entry.body.name == name.as_str() => {
                    reply(conn, 200, ContentType::Json, keep_alive, |out| {
                        answers::one_service(out, ctx.node, ctx.executor, &entry)
                    })
                }
                _ => error(conn, 404, "no such service; 'myco ls' lists them"),
            }
        }
        OwnedRoute::Nodes => reply(conn, 200, ContentType::Json, keep_alive, |out| {
            answers::nodes(out, ctx.node, ctx.listen)
        }),
        OwnedRoute::Health => {
            let code = if ctx.status.wal_failing { 503 } else { 200 };
            reply(conn, code, ContentType::Json, keep_alive, |out| {
                answers::health(out, ctx.node, ctx.status)
            })
        }
        OwnedRoute::Metrics => reply(conn, 200, ContentType::Prometheus, keep_alive, |out| {
            metrics::metrics(out, ctx.node, ctx.status)
        }),
    }
}

/// Submits a signed entry. Refusals change nothing; an accepted entry is answered once durable.
fn deploy(
    node: &mut myco_core::Node,
    sink: &mut super::sink::CoreSink,
    conn: &mut Conn,
    body: &[u8],
    now: u64,
    keep_alive: bool,
) -> u16 {
    if sink.wal_failing() {
        return error(
            conn,
            507,
            "the disk is full and the WAL cannot write; nothing changed: free space and retry",
        );
    }
    let entry = match Entry::decode(body) {
        Ok(e) => e,
        Err(e) => return error(conn, 400, e.message()),
    };
    assert!(valid_name(entry.body.name), "Entry::decode validates names");
    let submitted = match node.submit(Instant(now), body, sink) {
        Ok(s) => s,
        Err(SubmitError::Signature(e)) => {
            return error(conn, 403, SubmitError::Signature(e).message())
        }
        Err(SubmitError::Store(e @ (StoreError::Full | StoreError::ArenaFull))) => {
            return error(conn, 507, e.message())
        }
        Err(SubmitError::Store(StoreError::KeyCollision)) => {
            return error(conn, 409, StoreError::KeyCollision.message())
        }
        Err(e) => return error(conn, 400, e.message()),
    };
    // Unchanged still waits for whatever this node logged last: it may hold the same version
    // only in memory so far (gossip merged it a moment ago).
    let ticket = submitted.ticket.unwrap_or(sink.wal.issued());
    let waiting = Waiting {
        ticket,
        name: heapless::String::try_from(entry.body.name).expect("valid names fit 64 bytes"),
        version: entry.body.version,
        applied: submitted.ticket.is_some(),
        keep_alive,
        deadline_ms: now + DEPLOY_TIMEOUT_MS,
    };
    if ticket <= sink.wal.durable() {
        sink.events.push(super::events::Record::deploy(
            &waiting.name,
            waiting.version,
            waiting.applied,
        ));
        return answer_deploy(conn, &waiting);
    }
    conn.waiting = Some(waiting);
    200
}

/// `GET /logs`: the journal of this box's unit for `service`, the log of its build while it
/// builds or failed to, or where it runs instead.
fn logs(
    node: &myco_core::Node,
    executor: Option<&mut super::executor::Executor>,
    conn: &mut Conn,
    service: &str,
    follow: bool,
    lines: Option<u32>,
) -> u16 {
    let deployed = node
        .store()
        .get_by_name(service)
        .is_some_and(|e| !e.decode().body.is_tombstone());
    if !deployed {
        return error(conn, 404, "no such service; 'myco ls' lists them");
    }
    // A service building or failing to build here shows its build's log (nix's stderr).
    let building = |e: &super::executor::Executor| e.build_health(service).is_some();
    let has_executor = executor.is_some();
    let Some(executor) = executor.filter(|e| e.unit(service).is_some() || building(e)) else {
        return error(conn, 404, &runs_elsewhere(node, service, has_executor));
    };
    let spawned = match executor.build_log(service).filter(|_| building(executor)) {
        Some(log) => executor.spawn_build_log(log.as_path(), follow, lines),
        None => executor.spawn_logs(service, follow, lines),
    };
    match spawned {
        Ok(child) => {
            conn.start_logs(child);
            200
        }
        Err(e) => {
            let mut message = heapless::String::<160>::new();
            let _ = write!(
                message,
                "cannot run journalctl: {}",
                crate::flight::IoError(&e)
            );
            error(conn, 503, &message)
        }
    }
}

/// `GET /audit`: the tail of this box's audit log, followed on request (`/logs`'s pump).
fn audit(
    executor: Option<&mut super::executor::Executor>,
    conn: &mut Conn,
    follow: bool,
    lines: Option<u32>,
) -> u16 {
    let Some(executor) = executor else {
        return error(
            conn,
            404,
            "this box runs no services (--executor none or no systemd), so it keeps no audit log",
        );
    };
    match executor.spawn_audit(follow, lines) {
        Ok(child) => {
            conn.start_logs(child);
            200
        }
        Err(e) => {
            let mut message = heapless::String::<160>::new();
            let _ = write!(
                message,
                "cannot run tail on the audit log: {}",
                crate::flight::IoError(&e)
            );
            error(conn, 503, &message)
        }
    }
}

/// "web does not run on this box; it runs on 3f2a09c1d4e5b6a7 (10.0.0.2:7946), ...": where to
/// ask instead. A box without an executor says that it runs nothing at all, and a box that
/// placement chose but whose unit is not written yet says so, rather than sending the operator
/// to itself.
fn runs_elsewhere(
    node: &myco_core::Node,
    service: &str,
    has_executor: bool,
) -> heapless::String<1024> {
    let mut m = heapless::String::new();
    let placed = node.placement(key_hash(service));
    let _ = if !has_executor {
        write!(
            m,
            "this box runs no services (myco-d --executor none), so it has no journal of \
             {service}; placement put it on"
        )
    } else if placed.contains(&node.id()) {
        write!(
            m,
            "{service} has no unit on this box yet; placement put it on"
        )
    } else {
        write!(m, "{service} does not run on this box; it runs on")
    };
    for (i, id) in placed.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        match node.members().iter().find(|x| x.id == *id) {
            _ if *id == node.id() => {
                let _ = write!(m, "{sep}{id:016x} (this box)");
            }
            Some(x) => {
                let _ = write!(m, "{sep}{id:016x} ({})", super::net::display_addr(x.addr));
            }
            None => {
                let _ = write!(m, "{sep}{id:016x}");
            }
        }
    }
    if placed.is_empty() {
        let _ = write!(m, " no box now (none is eligible)");
    }
    let _ = if has_executor {
        write!(m, ": ask the myco-d there")
    } else {
        write!(m, ": ask the myco-d of one that runs services")
    };
    m
}

pub(super) fn answer_deploy(conn: &mut Conn, w: &Waiting) -> u16 {
    reply(conn, 200, ContentType::Json, w.keep_alive, |out| {
        answers::deploy(out, &w.name, w.version, w.applied)
    })
}

/// Why a request that would follow something (`/stream`, `/logs`, `/audit`) is refused: every
/// follower slot is taken. `None` for any other request, or while a slot is free.
fn followers_full(route: &Owned, streams: usize) -> Option<&'static str> {
    if streams < super::conns::STREAMS_MAX {
        return None;
    }
    match route {
        Owned::Stream { .. } => Some("too many /stream subscribers; close one or retry shortly"),
        Owned::Logs { .. } | Owned::Audit { .. } => {
            Some("too many /stream and /logs followers; close one or retry shortly")
        }
        _ => None,
    }
}
