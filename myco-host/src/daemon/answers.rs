//! The API's JSON answers (services, nodes, health, deploys), written into a connection's answer
//! buffer without allocating. `/metrics` is written by `metrics.rs` from the same snapshot.

use super::executor::{Executor, UnitHealth as Health};
use super::net::display_addr;
use crate::http::json::Json;
use crate::http::response::{Cursor, Full};
use core::fmt::Write;
use myco_core::config::FLAKE_REV_BYTES;
use myco_core::executor::health_on;
use myco_core::gossip::members::Member;
use myco_core::hex::{Hex, HexU64};
use myco_core::schema::entry::{Entry, Source, Version};
use myco_core::schema::message::{MemberMeta, MemberState};
use myco_core::state::store::key_hash;
use myco_core::Node;

/// The daemon's side of `/health` and `/metrics`: everything they show besides the node's own
/// state, taken once per request so both read one consistent moment.
pub struct DaemonSnapshot {
    pub io: &'static str,
    /// Why io_uring was not used, when `auto` fell back to poll.
    pub io_fallback: bool,
    pub wal_failing: bool,
    pub reserve: &'static str,
    pub reserve_bytes: u64,
    pub wal_bytes: u64,
    pub wal_appends: u64,
    pub wal_writes: u64,
    pub sink: super::sink::SinkStats,
    pub wal_latency: super::sink::Histogram,
    pub api: super::conns::ConnStats,
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
    /// The garbage collector's counters, the store's usage in permille, and the audit log's
    /// lines; `None` without an executor.
    pub store: Option<(myco_core::executor::GcStats, u16, u64)>,
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
        let bytes = store.entry(slot);
        let entry = bytes.decode();
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

pub(super) fn state_name(state: MemberState) -> &'static str {
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

pub fn health(out: &mut Cursor<'_>, node: &Node, status: &DaemonSnapshot) -> Result<(), Full> {
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
