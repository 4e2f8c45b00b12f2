//! The API's answers, written into a connection's answer buffer without allocating: JSON for
//! services, nodes, health and deploys, and the Prometheus text for `/metrics`.

use super::executor::{Executor, UnitHealth as Health};
use super::net::display_addr;
use crate::api::json::Json;
use crate::api::prometheus::{MetricKind, Prometheus};
use crate::api::response::{Cursor, Full};
use core::fmt::Write;
use myco_core::config::FLAKE_REV_BYTES;
use myco_core::executor::health_on;
use myco_core::gossip::members::Member;
use myco_core::hex::{Hex, HexU64};
use myco_core::schema::entry::{Entry, Source, Version};
use myco_core::schema::message::{MemberMeta, MemberState};
use myco_core::state::store::key_hash;
use myco_core::Node;

/// Everything `/health` and `/metrics` show besides the node's own state.
pub struct Status {
    pub io: &'static str,
    /// Why io_uring was not used, when `auto` fell back to poll.
    pub io_fallback: bool,
    pub wal_failing: bool,
    pub reserve: &'static str,
    pub reserve_bytes: u64,
    pub wal_bytes: u64,
    pub wal_appends: u64,
    pub wal_writes: u64,
    pub host: super::host::HostStats,
    pub wal_latency: super::host::Histogram,
    pub api: super::api::ApiStats,
    pub api_open: usize,
    /// Open `/stream` subscribers, and the id the next event gets.
    pub api_streams: usize,
    pub events_next_id: u64,
    pub allocations: u64,
    pub allocations_since_ready: u64,
    pub heap_bytes: u64,
    pub uptime_ms: u64,
    /// Units on this box by health (`Health::ALL` order), and the executor's counters; `None`
    /// without an executor.
    pub units: Option<([u64; Health::ALL.len()], super::executor::ExecutorStats)>,
    /// `*.myco` DNS's counters and how many addresses it answers on; `None` with DNS off.
    pub dns: Option<(super::dns::DnsStats, usize)>,
}

/// A flake's locked commit as `git log --oneline` shows it: its first 7 hex digits.
fn short_rev(rev: &[u8; FLAKE_REV_BYTES]) -> heapless::String<8> {
    let mut s = heapless::String::new();
    write!(s, "{}", Hex(&rev[..4])).expect("8 digits fit");
    s.truncate(7);
    s
}

fn version(json: &mut Json<'_, '_>, v: Version) -> Result<(), Full> {
    json.begin_object()?;
    json.key("clock")?;
    json.u64(v.clock)?;
    json.key("key_id")?;
    json.u64(v.key_id.into())?;
    json.end_object()
}

/// Where a service runs, for `/services`: placement's answer as this node sees the cluster,
/// and what each of those nodes says of its unit.
pub struct Running<'a> {
    pub node: &'a Node,
    pub executor: Option<&'a Executor>,
    pub key: u64,
    pub placed_on: &'a [u64],
}

/// How the service does on node `id` (the core's `executor::health_on`), by name.
fn state_on(r: &Running<'_>, id: u64, name: &str) -> &'static str {
    let executor = r.executor.map(|e| &**e);
    // This box's build of a new version is reported before the unit of the old one.
    let building = executor.filter(|_| id == r.node.id());
    if let Some(health) = building.and_then(|e| e.build_health(name)) {
        return health.name();
    }
    health_on(r.node, executor, id, r.key, name).map_or("unknown", Health::name)
}

/// One service as `/services` lists it.
pub fn service(
    json: &mut Json<'_, '_>,
    entry: &Entry<'_>,
    running: &Running<'_>,
) -> Result<(), Full> {
    let body = &entry.body;
    json.begin_object()?;
    json.key("name")?;
    json.string(body.name)?;
    json.key("version")?;
    version(json, body.version)?;
    json.key("deleted")?;
    json.bool(body.is_tombstone())?;
    json.key("replicas")?;
    json.u64(body.spec.as_ref().map_or(0, |s| s.replicas.into()))?;
    json.key("source")?;
    match body.spec.as_ref().map(|s| s.source) {
        Some(Source::Flake { .. }) => json.string("flake")?,
        Some(Source::Exec { .. }) => json.string("exec")?,
        None => json.null()?,
    }
    json.key("rev")?;
    match body.spec.as_ref().map(|s| s.source) {
        Some(Source::Flake { rev, .. }) => json.string(&short_rev(&rev))?,
        _ => json.null()?,
    }
    json.key("placed_on")?;
    json.begin_array()?;
    for &id in running.placed_on {
        json.begin_object()?;
        json.key("id")?;
        json.string(HexU64::new(id).as_str())?;
        json.key("state")?;
        json.string(state_on(running, id, body.name))?;
        json.end_object()?;
    }
    json.end_array()?;
    json.key("restarts_here")?;
    match running.executor.and_then(|e| e.unit(body.name)) {
        Some(unit) => json.u64(unit.restarts.into())?,
        None => json.null()?,
    }
    json.end_object()
}

pub fn services(
    out: &mut Cursor<'_>,
    node: &Node,
    executor: Option<&Executor>,
) -> Result<(), Full> {
    let store = node.store();
    let mut json = Json::new(out);
    json.begin_object()?;
    json.key("services")?;
    json.begin_array()?;
    for slot in store.slots() {
        // The store holds only entries it decoded; one that no longer decodes would be a bug.
        let entry = Entry::decode(store.bytes(slot)).expect("stored entries decode");
        let placed = node.placement(slot.key_hash);
        let running = Running {
            node,
            executor,
            key: slot.key_hash,
            placed_on: &placed,
        };
        service(&mut json, &entry, &running)?;
    }
    json.end_array()?;
    json.end_object()?;
    json.finish();
    Ok(())
}

pub fn one_service(
    out: &mut Cursor<'_>,
    node: &Node,
    executor: Option<&Executor>,
    entry: &Entry<'_>,
) -> Result<(), Full> {
    let key = key_hash(entry.body.name);
    let placed = node.placement(key);
    let running = Running {
        node,
        executor,
        key,
        placed_on: &placed,
    };
    let mut json = Json::new(out);
    service(&mut json, entry, &running)?;
    json.finish();
    Ok(())
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
    }
}

struct NodeRow<'a> {
    id: u64,
    address: Option<&'a heapless::String<64>>,
    state: MemberState,
    incarnation: u32,
    meta: MemberMeta,
    this: bool,
}

fn node_row(json: &mut Json<'_, '_>, row: &NodeRow<'_>) -> Result<(), Full> {
    json.begin_object()?;
    json.key("id")?;
    json.string(HexU64::new(row.id).as_str())?;
    json.key("address")?;
    match row.address {
        Some(a) => json.string(a)?,
        None => json.null()?,
    }
    json.key("state")?;
    json.string(state_name(row.state))?;
    json.key("incarnation")?;
    json.u64(row.incarnation.into())?;
    json.key("arch")?;
    json.string(row.meta.arch.name())?;
    json.key("zone")?;
    json.u64(row.meta.zone.into())?;
    json.key("gpu")?;
    json.bool(row.meta.gpu)?;
    json.key("self")?;
    json.bool(row.this)?;
    json.end_object()
}

/// `/nodes`: this node first (its address as it listens), then every member it knows.
pub fn nodes(out: &mut Cursor<'_>, node: &Node, listen: &heapless::String<64>) -> Result<(), Full> {
    let me = node.own_record();
    let mut json = Json::new(out);
    json.begin_object()?;
    json.key("nodes")?;
    json.begin_array()?;
    let this = NodeRow {
        id: me.id,
        address: Some(listen),
        state: me.state,
        incarnation: me.incarnation,
        meta: me.meta,
        this: true,
    };
    node_row(&mut json, &this)?;
    for m in node.members() {
        let address = addr_text(m);
        let row = NodeRow {
            id: m.id,
            address: Some(&address),
            state: m.state,
            incarnation: m.incarnation,
            meta: m.meta,
            this: false,
        };
        node_row(&mut json, &row)?;
    }
    json.end_array()?;
    json.end_object()?;
    json.finish();
    Ok(())
}

fn addr_text(m: &Member) -> heapless::String<64> {
    let mut s = heapless::String::new();
    write!(s, "{}", display_addr(m.addr)).expect("an address fits 64 bytes");
    s
}

pub fn live_members(node: &Node) -> usize {
    node.members()
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .count()
}

pub fn health(out: &mut Cursor<'_>, node: &Node, status: &Status) -> Result<(), Full> {
    let mut json = Json::new(out);
    json.begin_object()?;
    json.key("status")?;
    json.string(if status.wal_failing { "degraded" } else { "ok" })?;
    json.key("wal")?;
    json.string(if status.wal_failing { "failing" } else { "ok" })?;
    json.key("reserve")?;
    json.string(status.reserve)?;
    json.key("io")?;
    json.string(status.io)?;
    json.key("services")?;
    json.u64(node.store().slots().iter().filter(|s| !s.tombstone).count() as u64)?;
    json.key("members_alive")?;
    json.u64(live_members(node) as u64)?;
    json.key("node_id")?;
    json.string(HexU64::new(node.id()).as_str())?;
    json.key("state_hash")?;
    json.string(HexU64::new(node.state_hash()).as_str())?;
    json.key("uptime_ms")?;
    json.u64(status.uptime_ms)?;
    json.end_object()?;
    json.finish();
    Ok(())
}

pub fn deploy(out: &mut Cursor<'_>, name: &str, v: Version, applied: bool) -> Result<(), Full> {
    let mut json = Json::new(out);
    json.begin_object()?;
    json.key("name")?;
    json.string(name)?;
    json.key("version")?;
    version(&mut json, v)?;
    json.key("outcome")?;
    json.string(if applied { "applied" } else { "unchanged" })?;
    json.end_object()?;
    json.finish();
    Ok(())
}

/// One family with one unlabelled sample.
fn single(
    p: &mut Prometheus<'_, '_>,
    name: &'static str,
    kind: MetricKind,
    help: &str,
    value: u64,
) -> Result<(), Full> {
    p.family(name, kind, help)?;
    p.sample(name, &[], value)
}

pub fn metrics(out: &mut Cursor<'_>, node: &Node, status: &Status) -> Result<(), Full> {
    let mut p = Prometheus::new(out);
    gossip_metrics(&mut p, node)?;
    state_metrics(&mut p, node)?;
    storage_metrics(&mut p, status)?;
    unit_metrics(&mut p, node, status)?;
    dns_metrics(&mut p, status)?;
    process_metrics(&mut p, status)
}

fn gossip_metrics(p: &mut Prometheus<'_, '_>, node: &Node) -> Result<(), Full> {
    use MetricKind::Counter;
    let c = node.counters();
    single(
        p,
        "myco_frames_received_total",
        Counter,
        "Gossip frames received.",
        c.frames_in,
    )?;
    single(
        p,
        "myco_frames_accepted_total",
        Counter,
        "Sealed frames opened and accepted.",
        c.frames_accepted,
    )?;
    single(
        p,
        "myco_frames_sent_total",
        Counter,
        "Gossip frames sent.",
        c.frames_out,
    )?;
    single(
        p,
        "myco_sent_bytes_total",
        Counter,
        "Gossip bytes sent.",
        c.bytes_out,
    )?;
    p.family(
        "myco_frames_refused_total",
        Counter,
        "Frames dropped unchanged, by reason.",
    )?;
    for (reason, n) in c.refused_by_reason() {
        p.sample("myco_frames_refused_total", &[("reason", reason)], n)?;
    }
    p.family(
        "myco_crypto_refusals_total",
        Counter,
        "Refusals by the security layer, by kind.",
    )?;
    for (kind, n) in myco_core::crypto::Refusal::ALL
        .iter()
        .zip(node.crypto_refusals())
    {
        p.sample("myco_crypto_refusals_total", &[("kind", kind.name())], n)?;
    }
    single(
        p,
        "myco_handshakes_started_total",
        Counter,
        "Handshakes this node started.",
        c.handshakes_started,
    )?;
    single(
        p,
        "myco_handshakes_completed_total",
        Counter,
        "Handshakes completed.",
        c.handshakes_completed,
    )?;
    single(
        p,
        "myco_gossip_rounds_total",
        Counter,
        "Gossip rounds run.",
        c.gossip_rounds,
    )?;
    single(
        p,
        "myco_sync_steps_total",
        Counter,
        "Anti-entropy steps run.",
        c.sync_steps,
    )?;
    single(
        p,
        "myco_probes_total",
        Counter,
        "SWIM probes sent.",
        c.probes,
    )?;
    single(
        p,
        "myco_entries_changed_total",
        Counter,
        "Entries stored new or newer.",
        c.entries_changed,
    )
}

fn state_metrics(p: &mut Prometheus<'_, '_>, node: &Node) -> Result<(), Full> {
    use MetricKind::Gauge;
    let slots = node.store().slots();
    let tombstones = slots.iter().filter(|s| s.tombstone).count() as u64;
    single(
        p,
        "myco_services",
        Gauge,
        "Services in the desired state.",
        slots.len() as u64 - tombstones,
    )?;
    single(
        p,
        "myco_tombstones",
        Gauge,
        "Deleted services still remembered.",
        tombstones,
    )?;
    single(
        p,
        "myco_sessions",
        Gauge,
        "Open encrypted sessions with peers.",
        node.link_count() as u64,
    )?;
    single(
        p,
        "myco_revocation_block",
        Gauge,
        "The RevocationBlock this node enforces.",
        node.revocation_block(),
    )?;
    p.family("myco_members", Gauge, "Known members, by SWIM state.")?;
    for state in [MemberState::Alive, MemberState::Suspect, MemberState::Dead] {
        let n = node.members().iter().filter(|m| m.state == state).count() as u64;
        p.sample("myco_members", &[("state", state_name(state))], n)?;
    }
    Ok(())
}

fn storage_metrics(p: &mut Prometheus<'_, '_>, s: &Status) -> Result<(), Full> {
    use MetricKind::{Counter, Gauge};
    single(
        p,
        "myco_wal_bytes",
        Gauge,
        "Bytes in the current WAL file.",
        s.wal_bytes,
    )?;
    single(
        p,
        "myco_wal_appends_total",
        Counter,
        "Entries appended to the WAL.",
        s.wal_appends,
    )?;
    single(
        p,
        "myco_wal_writes_total",
        Counter,
        "WAL writes, each one write and one fdatasync.",
        s.wal_writes,
    )?;
    single(
        p,
        "myco_wal_disk_full_total",
        Counter,
        "WAL writes that found the disk full.",
        s.host.wal_disk_full,
    )?;
    single(
        p,
        "myco_wal_failing",
        Gauge,
        "1 while the WAL cannot write (deploys answer 507).",
        s.wal_failing.into(),
    )?;
    single(
        p,
        "myco_checkpoints_total",
        Counter,
        "Snapshots written.",
        s.host.checkpoints,
    )?;
    single(
        p,
        "myco_wal_truncated_bytes",
        Gauge,
        "Bytes cut from the log by the recovery at start (torn or corrupt tail).",
        s.host.wal_truncated_bytes,
    )?;
    wal_latency(p, &s.wal_latency)?;
    single(
        p,
        "myco_reserve_bytes",
        Gauge,
        "Bytes held by the disk reserve file.",
        s.reserve_bytes,
    )?;
    single(
        p,
        "myco_reserve_releases_total",
        Counter,
        "Times the reserve was freed for the WAL.",
        s.host.reserve_releases,
    )
}

fn wal_latency(p: &mut Prometheus<'_, '_>, h: &super::host::Histogram) -> Result<(), Full> {
    const NAME: &str = "myco_wal_write_seconds";
    p.family(
        NAME,
        MetricKind::Histogram,
        "WAL batch latency: one write and its fdatasync.",
    )?;
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let mut le = heapless::String::<16>::new();
        match super::host::LATENCY_BOUNDS.get(i) {
            Some(bound) => write!(le, "{bound}").expect("a bound fits"),
            None => le.push_str("+Inf").expect("fits"),
        }
        p.sample("myco_wal_write_seconds_bucket", &[("le", &le)], cumulative)?;
    }
    p.sample("myco_wal_write_seconds_sum", &[], h.sum)?;
    p.sample("myco_wal_write_seconds_count", &[], h.count)
}

fn unit_metrics(p: &mut Prometheus<'_, '_>, node: &Node, s: &Status) -> Result<(), Full> {
    use MetricKind::{Counter, Gauge};
    let Some((units, stats)) = &s.units else {
        return Ok(());
    };
    let placed = node.placed_here().count() as u64;
    single(
        p,
        "myco_services_placed_here",
        Gauge,
        "Services placement puts on this box.",
        placed,
    )?;
    p.family(
        "myco_units",
        Gauge,
        "Units this box runs, by what systemd reports.",
    )?;
    for (health, n) in Health::ALL.iter().zip(units) {
        p.sample("myco_units", &[("state", health.name())], *n)?;
    }
    single(
        p,
        "myco_units_written_total",
        Counter,
        "Unit files written (new or new version).",
        stats.units_written,
    )?;
    single(
        p,
        "myco_units_removed_total",
        Counter,
        "Units stopped and removed (no longer placed here).",
        stats.units_removed,
    )?;
    single(
        p,
        "myco_systemctl_runs_total",
        Counter,
        "systemctl commands run.",
        stats.systemctl_runs,
    )?;
    single(
        p,
        "myco_systemctl_failures_total",
        Counter,
        "systemctl commands that failed.",
        stats.systemctl_failures,
    )?;
    single(
        p,
        "myco_builds_total",
        Counter,
        "Flake builds started (nix build).",
        stats.builds_run,
    )?;
    single(
        p,
        "myco_build_failures_total",
        Counter,
        "Flake builds that failed, hung past --build-timeout, or named no output.",
        stats.build_failures,
    )
}

fn dns_metrics(p: &mut Prometheus<'_, '_>, s: &Status) -> Result<(), Full> {
    use MetricKind::{Counter, Gauge};
    let Some((stats, listeners)) = &s.dns else {
        return Ok(());
    };
    single(
        p,
        "myco_dns_listeners",
        Gauge,
        "Addresses *.myco DNS answers on (UDP and TCP each).",
        *listeners as u64,
    )?;
    p.family(
        "myco_dns_queries_total",
        Counter,
        "*.myco DNS queries received, by transport.",
    )?;
    p.sample(
        "myco_dns_queries_total",
        &[("transport", "udp")],
        stats.udp_queries,
    )?;
    p.sample(
        "myco_dns_queries_total",
        &[("transport", "tcp")],
        stats.tcp_queries,
    )?;
    single(
        p,
        "myco_dns_unanswered_total",
        Counter,
        "DNS packets given no answer: shorter than a header, or themselves responses.",
        stats.dropped,
    )
}

fn process_metrics(p: &mut Prometheus<'_, '_>, s: &Status) -> Result<(), Full> {
    use MetricKind::{Counter, Gauge};
    p.family(
        "myco_io_backend",
        Gauge,
        "The event loop backend in use (1).",
    )?;
    p.sample("myco_io_backend", &[("backend", s.io)], 1)?;
    single(
        p,
        "myco_io_uring_fallback",
        Gauge,
        "1 if io_uring was unavailable and poll(2) is used.",
        s.io_fallback.into(),
    )?;
    single(
        p,
        "myco_heap_allocations_total",
        Counter,
        "Heap allocations since the process started.",
        s.allocations,
    )?;
    single(
        p,
        "myco_heap_allocations_since_ready_total",
        Counter,
        "Heap allocations since start-up finished; flat at rest.",
        s.allocations_since_ready,
    )?;
    single(
        p,
        "myco_heap_bytes",
        Gauge,
        "Heap bytes allocated and not freed.",
        s.heap_bytes,
    )?;
    single(
        p,
        "myco_datagrams_received_total",
        Counter,
        "UDP datagrams read.",
        s.host.datagrams_received,
    )?;
    single(
        p,
        "myco_sends_dropped_total",
        Counter,
        "Frames dropped because the socket buffer was full.",
        s.host.sends_dropped,
    )?;
    single(
        p,
        "myco_sends_failed_total",
        Counter,
        "Frames the kernel refused to send.",
        s.host.sends_failed,
    )?;
    single(
        p,
        "myco_api_connections",
        Gauge,
        "Open API connections.",
        s.api_open as u64,
    )?;
    single(
        p,
        "myco_api_streams",
        Gauge,
        "Open /stream subscribers.",
        s.api_streams as u64,
    )?;
    single(
        p,
        "myco_events_next_id",
        Gauge,
        "The id the next /stream event gets.",
        s.events_next_id,
    )?;
    single(
        p,
        "myco_api_requests_total",
        Counter,
        "API requests answered.",
        s.api.requests,
    )?;
    single(
        p,
        "myco_api_errors_total",
        Counter,
        "API requests answered with an error.",
        s.api.errors,
    )?;
    single(
        p,
        "myco_api_busy_total",
        Counter,
        "API connections refused with 503 (all slots busy).",
        s.api.refused_busy,
    )?;
    single(
        p,
        "myco_api_timeouts_total",
        Counter,
        "API connections closed at their deadline.",
        s.api.timeouts,
    )?;
    p.family(
        "myco_uptime_seconds",
        Gauge,
        "Seconds since the daemon started.",
    )?;
    p.sample("myco_uptime_seconds", &[], s.uptime_ms as f64 / 1000.0)
}
