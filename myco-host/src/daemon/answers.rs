//! The API's JSON answers (services, nodes, health, deploys), written into a connection's answer
//! buffer without allocating. `/metrics` is written by `metrics.rs` from the same snapshot.

use super::executor::{Executor, UnitHealth as Health};
use super::net::display_addr;
use crate::http::json::Json;
use crate::http::response::{Cursor, Full, RESPONSE_HEAD_BYTES_MAX};
use core::fmt::Write;
use myco_core::config::{FLAKE_REV_BYTES, MEMBERS_MAX};
use myco_core::executor::health_on;
use myco_core::executor::rollout::{self, Progress};
use myco_core::gossip::members::Member;
use myco_core::hex::{Hex, HexU64};
use myco_core::node::PlacedDigests;
use myco_core::schema::entry::{Arch, Entry, Source, Version};
use myco_core::schema::message::{system_bit, MemberMeta, MemberState, Offer};
use myco_core::state::store::{key_hash, Slot};
use myco_core::Node;

/// The daemon's side of `/health` and `/metrics`: everything they show besides the node's own
/// state, taken once per request so both read one consistent moment.
pub struct DaemonSnapshot {
    pub io: &'static str,
    /// Why io_uring was not used, when `auto` fell back to poll.
    pub io_fallback: bool,
    pub wal_failing: bool,
    pub reserve: &'static str,
    /// Why the reserve is deferred (`/health` says it); `None` in any other state.
    pub reserve_why: Option<crate::reserve::DeferredWhy>,
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
    /// The binary cache's counters; `None` with the cache off.
    pub cache: Option<super::cache::CacheStats>,
    /// The tunnel listener's counters; `None` without `--proxy-listen`.
    pub proxy: Option<super::proxy::ProxyStats>,
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

/// The state of a service placed on this box when it was started with `--executor none`.
pub const NO_EXECUTOR: &str = "no-executor";

/// Where a service runs, for `/services`: placement's answer as this node sees the cluster,
/// and what each of those nodes says of its unit.
pub struct Running<'a> {
    pub node: &'a Node,
    pub executor: Option<&'a Executor>,
    pub key: u64,
    pub placed_on: &'a [u64],
    /// What this node places on each member (`Node::placed_digests`), once per answer: a peer's
    /// status counts only for the versions it speaks of.
    pub digests: &'a PlacedDigests,
}

/// How the service does on node `id` (the core's `executor::health_on`), by name. This box, when
/// it runs no executor, says so (`no-executor`) rather than `unknown`: nothing will ever run here.
fn state_on(r: &Running<'_>, id: u64, name: &str) -> &'static str {
    if id == r.node.id() && r.executor.is_none() {
        return NO_EXECUTOR;
    }
    let executor = r.executor.map(|e| &**e);
    // This box's build of a new version is reported before the unit of the old one.
    let building = executor.filter(|_| id == r.node.id());
    if let Some(health) = building.and_then(|e| e.build_health(name)) {
        return health.name();
    }
    health_on(r.node, executor, (id, r.key), name, Some(r.digests)).map_or("unknown", Health::name)
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
        json.key("version")?;
        let at = (id, running.key);
        let said = rollout::said_by(running.node, running.digests, at, running.placed_on);
        match rollout::runs_placed(said) {
            Some(true) => json.string("placed")?,
            Some(false) => json.string("previous")?,
            None => json.null()?,
        }
        json.end_object()?;
    }
    json.end_array()?;
    if !body.is_tombstone() {
        json.key("rollout")?;
        rollout_progress(json, running)?;
    }
    json.key("restarts_here")?;
    match running.executor.and_then(|e| e.unit(body.name)) {
        Some(unit) => json.u64(unit.restarts.into())?,
        None => json.null()?,
    }
    json.end_object()
}

/// The service's rollout (`executor::rollout::progress`): `{"state": "rolling"|"done"}`, or
/// `{"state": "held", "box": ID, "reason": WHY}` until the operator deploys again.
fn rollout_progress(json: &mut Json<'_, '_>, r: &Running<'_>) -> Result<(), Full> {
    let progress = rollout::progress(r.node, r.digests, r.key, r.placed_on);
    json.begin_object()?;
    json.key("state")?;
    json.string(progress.name())?;
    if let Progress::Held { at, reason } = progress {
        json.key("box")?;
        json.string(HexU64::new(at).as_str())?;
        json.key("reason")?;
        json.string(reason.name())?;
    }
    json.end_object()
}

/// Where a `/services` answer written in parts (`services_part`) goes on.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServicesCursor {
    /// The opening `{"services":[` is written.
    opened: bool,
    /// The key hash of the last service written; the next part starts after it. The store is
    /// sorted by key hash, so services added or removed between two parts shift nothing: each is
    /// listed at most once, and every one held throughout the listing is listed.
    after: Option<u64>,
}

/// Writes the next part of the `/services` answer into `buf`, and says how many bytes it took
/// and whether the answer is complete: the opening on the first part, then as many whole
/// services as fit, then the closing. A part holds at least one service or the closing, so a
/// listing always moves on; services are listed in key-hash order, resuming from `cursor`.
pub fn services_part(
    buf: &mut [u8],
    cursor: &mut ServicesCursor,
    node: &Node,
    executor: Option<&Executor>,
) -> (usize, bool) {
    let mut len = 0;
    if !cursor.opened {
        const OPENING: &[u8] = b"{\"services\":[";
        buf[..OPENING.len()].copy_from_slice(OPENING);
        (len, cursor.opened) = (OPENING.len(), true);
    }
    let slots = node.store().slots();
    let from = cursor
        .after
        .map_or(0, |after| slots.partition_point(|s| s.key_hash <= after));
    // Once per part: what this node places on each member, against which peers' statuses count.
    let digests = node.placed_digests();
    for slot in &slots[from..] {
        let mut out = Cursor::new(&mut buf[len..]);
        let comma = cursor.after.is_some();
        if listed_service(&mut out, slot, comma, node, (executor, &digests)).is_err() {
            assert!(len > 0, "one service fits an empty answer buffer");
            return (len, false);
        }
        len += out.len();
        cursor.after = Some(slot.key_hash);
    }
    match Cursor::new(&mut buf[len..]).put(b"]}") {
        Ok(()) => (len + 2, true),
        Err(Full) => (len, false),
    }
}

/// One service of `/services`, after a comma unless it is the first.
fn listed_service(
    out: &mut Cursor<'_>,
    slot: &Slot,
    comma: bool,
    node: &Node,
    (executor, digests): (Option<&Executor>, &PlacedDigests),
) -> Result<(), Full> {
    if comma {
        out.put(b",")?;
    }
    // The store holds only entries it decoded; one that no longer decodes would be a bug.
    let bytes = node.store().entry(slot);
    let entry = bytes.decode();
    let placed = node.placement(slot.key_hash);
    let running = Running {
        node,
        executor,
        key: slot.key_hash,
        placed_on: &placed,
        digests,
    };
    let mut json = Json::new(out);
    service(&mut json, &entry, &running)?;
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
    let digests = node.placed_digests();
    let running = Running {
        node,
        executor,
        key,
        placed_on: &placed,
        digests: &digests,
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
    /// Dead by its own notice (a clean stop): shown as `left`.
    left: bool,
    incarnation: u32,
    meta: MemberMeta,
    this: bool,
    /// What the node's binary cache offers, as its status says (`None`: no status heard).
    offer: Option<&'a Offer>,
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
    json.string(if row.left && row.state == MemberState::Dead {
        "left"
    } else {
        state_name(row.state)
    })?;
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
    offer_fields(json, row.offer)
}

/// `cache_port` (null: nothing heard, 0: no cache) and `offers`, the build keys its cache serves.
fn offer_fields(json: &mut Json<'_, '_>, offer: Option<&Offer>) -> Result<(), Full> {
    json.key("cache_port")?;
    match offer {
        Some(o) => json.u64(o.cache_port.into())?,
        None => json.null()?,
    }
    json.key("offers")?;
    json.begin_array()?;
    for key in offer.map_or(&[][..], |o| &o.keys[..]) {
        json.string(HexU64::new(key.0).as_str())?;
    }
    json.end_array()?;
    // The systems it builds for peers (`--builder`).
    json.key("builds")?;
    json.begin_array()?;
    let bits = offer.map_or(0, |o| o.builds);
    for system in [Arch::X86_64, Arch::Aarch64] {
        if let Some(name) = system
            .nix_system()
            .filter(|_| bits & system_bit(system) != 0)
        {
            json.string(name)?;
        }
    }
    json.end_array()?;
    json.end_object()
}

/// The longest `/nodes` row: every field at its longest, the address escaped at worst (a test
/// measures it).
const NODE_ROW_BYTES_MAX: usize = 512;
// `/nodes` is one answer with its length, never in parts: this node and `MEMBERS_MAX` members,
// each row at its longest with its comma, and the wrapping fit the answer buffer.
const _: () = assert!(
    RESPONSE_HEAD_BYTES_MAX + 16 + (MEMBERS_MAX + 1) * (NODE_ROW_BYTES_MAX + 1)
        <= super::conns::ANSWER_BYTES
);

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
        left: false,
        incarnation: me.incarnation,
        meta: me.meta,
        this: true,
        offer: Some(&node.own_status().offer),
    };
    node_row(&mut json, &this)?;
    for m in node.members() {
        let address = addr_text(m);
        let row = NodeRow {
            id: m.id,
            address: Some(&address),
            state: m.state,
            left: m.left,
            incarnation: m.incarnation,
            meta: m.meta,
            this: false,
            offer: node.status_of(m.id).map(|s| &s.offer),
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

/// `/health`'s `peers_alive`: the other nodes seen alive. The member table never holds the node
/// itself, so it is not counted.
pub fn live_peers(node: &Node) -> usize {
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
    json.key("reserve_why")?;
    match status.reserve_why {
        Some(why) => {
            let mut text = heapless::String::<256>::new();
            write!(text, "{why}").expect("the sentence fits 256 bytes");
            json.string(&text)?;
        }
        None => json.null()?,
    }
    json.key("io")?;
    json.string(status.io)?;
    json.key("services")?;
    json.u64(node.store().slots().iter().filter(|s| !s.tombstone).count() as u64)?;
    json.key("peers_alive")?;
    json.u64(live_peers(node) as u64)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::config::OFFER_KEYS_MAX;
    use myco_core::schema::entry::Arch;
    use myco_core::schema::message::Digest;

    /// The longest `/nodes` row fits `NODE_ROW_BYTES_MAX`, the bound that proves `/nodes` always
    /// fits the answer buffer.
    #[test]
    fn the_longest_node_row_fits_its_bound() {
        let address: heapless::String<64> = "\"".repeat(64).as_str().try_into().unwrap();
        let row = NodeRow {
            id: u64::MAX,
            address: Some(&address),
            state: MemberState::Suspect,
            left: false,
            incarnation: u32::MAX,
            meta: MemberMeta {
                arch: Arch::Aarch64,
                zone: u8::MAX,
                gpu: false,
                bridge: false,
                relay: false,
                nat: false,
            },
            this: false,
            offer: Some(&Offer {
                cache_port: u16::MAX,
                keys: heapless::Vec::from_slice(&[Digest(u64::MAX); OFFER_KEYS_MAX]).unwrap(),
                builds: u8::MAX,
                building: Digest(u64::MAX),
            }),
        };
        let mut buf = [0u8; 1024];
        let mut out = Cursor::new(&mut buf);
        let mut json = Json::new(&mut out);
        node_row(&mut json, &row).unwrap();
        json.finish();
        assert!(out.len() <= NODE_ROW_BYTES_MAX, "{} bytes", out.len());
    }
}
