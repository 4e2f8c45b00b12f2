//! `/metrics`: the Prometheus text, written from a table of metric families (name, kind, help and
//! how to read the value) instead of one hand-written call per family, so adding a metric is one
//! row and the names, kinds and help texts can be read in one place.
//!
//! Invariants: families are written in table order, sections in `SECTIONS` order, and a section
//! whose part of the daemon is off (no executor, DNS off) is left out whole, so no family is ever
//! written with made-up zeroes. Every family has `# HELP` and `# TYPE` (`Prometheus::family`).

use super::answers::{state_name, DaemonSnapshot};
use super::dns::DnsStats;
use super::executor::{ExecutorStats, UnitHealth as Health};
use super::sink::{Histogram, LATENCY_BOUNDS};
use crate::http::prometheus::{MetricKind, Prometheus, Value};
use crate::http::response::{Cursor, Full};
use core::fmt::Write;
use myco_core::crypto::tunnel::RefuseReason;
use myco_core::executor::GcStats;
use myco_core::node::Counters;
use myco_core::schema::message::MemberState;
use myco_core::Node;

use MetricKind::{Counter, Gauge};

/// What a family's value is read from. The optional parts of the snapshot are flattened to
/// defaults here; their sections are skipped when the part is off (`Section::present`).
struct Sources<'a> {
    node: &'a Node,
    counters: Counters,
    snapshot: &'a DaemonSnapshot,
    units: [u64; Health::ALL.len()],
    executor: ExecutorStats,
    gc: GcStats,
    store_used_permille: u16,
    audit_lines: u64,
    dns: DnsStats,
    dns_listeners: u64,
    cache: super::cache::CacheStats,
    proxy: super::proxy::ProxyStats,
}

type WriteSamples = fn(&mut Prometheus<'_, '_>, &'static str, &Sources<'_>) -> Result<(), Full>;

enum Samples {
    /// One sample without labels.
    One(fn(&Sources<'_>) -> Value),
    /// Labelled samples, or a histogram's series, written under the family's name.
    Many(WriteSamples),
}

struct Family {
    name: &'static str,
    kind: MetricKind,
    help: &'static str,
    samples: Samples,
}

struct Section {
    families: &'static [Family],
    /// Whether the part of the daemon these families describe is on.
    present: fn(&DaemonSnapshot) -> bool,
}

const fn one(
    name: &'static str,
    kind: MetricKind,
    help: &'static str,
    read: fn(&Sources<'_>) -> Value,
) -> Family {
    Family {
        name,
        kind,
        help,
        samples: Samples::One(read),
    }
}

const fn many(
    name: &'static str,
    kind: MetricKind,
    help: &'static str,
    write: WriteSamples,
) -> Family {
    Family {
        name,
        kind,
        help,
        samples: Samples::Many(write),
    }
}

/// A family broken down by one label (reason, kind, state): a sample for each of its values.
fn by_label(
    p: &mut Prometheus<'_, '_>,
    name: &'static str,
    label: &str,
    counts: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result<(), Full> {
    for (value, n) in counts {
        p.sample(name, &[(label, value)], n)?;
    }
    Ok(())
}

const SECTIONS: [Section; 9] = [
    Section {
        families: GOSSIP,
        present: |_| true,
    },
    Section {
        families: STATE,
        present: |_| true,
    },
    Section {
        families: STORAGE,
        present: |_| true,
    },
    Section {
        families: UNITS,
        present: |s| s.units.is_some(),
    },
    Section {
        families: STORE,
        present: |s| s.store.is_some(),
    },
    Section {
        families: DNS,
        present: |s| s.dns.is_some(),
    },
    Section {
        families: CACHE,
        present: |s| s.cache.is_some(),
    },
    Section {
        families: PROXY,
        present: |s| s.proxy.is_some(),
    },
    Section {
        families: PROCESS,
        present: |_| true,
    },
];

const GOSSIP: &[Family] = &[
    one(
        "myco_frames_received_total",
        Counter,
        "Gossip frames received.",
        |s| s.counters.frames_in.into(),
    ),
    one(
        "myco_frames_accepted_total",
        Counter,
        "Sealed frames opened and accepted.",
        |s| s.counters.frames_accepted.into(),
    ),
    one(
        "myco_frames_sent_total",
        Counter,
        "Gossip frames sent.",
        |s| s.counters.frames_out.into(),
    ),
    one(
        "myco_sent_bytes_total",
        Counter,
        "Gossip bytes sent.",
        |s| s.counters.bytes_out.into(),
    ),
    many(
        "myco_frames_refused_total",
        Counter,
        "Frames dropped unchanged, by reason.",
        |p, name, s| by_label(p, name, "reason", s.counters.refused_by_reason()),
    ),
    many(
        "myco_crypto_refusals_total",
        Counter,
        "Refusals by the security layer, by kind.",
        |p, name, s| {
            let kinds = myco_core::crypto::Refusal::ALL.iter().map(|k| k.name());
            by_label(p, name, "kind", kinds.zip(s.node.crypto_refusals()))
        },
    ),
    one(
        "myco_handshakes_started_total",
        Counter,
        "Handshakes this node started.",
        |s| s.counters.handshakes_started.into(),
    ),
    one(
        "myco_handshakes_completed_total",
        Counter,
        "Handshakes completed.",
        |s| s.counters.handshakes_completed.into(),
    ),
    one(
        "myco_gossip_rounds_total",
        Counter,
        "Gossip rounds run.",
        |s| s.counters.gossip_rounds.into(),
    ),
    one(
        "myco_sync_steps_total",
        Counter,
        "Anti-entropy steps run.",
        |s| s.counters.sync_steps.into(),
    ),
    one("myco_probes_total", Counter, "SWIM probes sent.", |s| {
        s.counters.probes.into()
    }),
    one(
        "myco_nacks_sent_total",
        Counter,
        "Nacks sent as a helper whose relayed ping the probed member did not answer.",
        |s| s.counters.nacks_sent.into(),
    ),
    one(
        "myco_death_pushes_total",
        Counter,
        "Membership news pushed at once after a member was declared dead.",
        |s| s.counters.death_pushes.into(),
    ),
    one(
        "myco_refutations_told_total",
        Counter,
        "Refutations sent straight back to a member that said this node was suspect or dead.",
        |s| s.counters.refutations_told.into(),
    ),
    one(
        "myco_observed_refreshes_total",
        Counter,
        "Frames that told a peer its unchanged source address again.",
        |s| s.counters.observed_refreshes.into(),
    ),
    one(
        "myco_member_tables_sent_total",
        Counter,
        "Whole member tables sent in push-pulls (joins, and peers whose live set differed).",
        |s| s.counters.tables_sent.into(),
    ),
    one(
        "myco_member_news_frames_total",
        Counter,
        "Frames of membership news sent on their own, besides what rides on probes and acks.",
        |s| s.counters.member_frames.into(),
    ),
    one(
        "myco_entries_changed_total",
        Counter,
        "Entries stored new or newer.",
        |s| s.counters.entries_changed.into(),
    ),
    one(
        "myco_bridge_sessions_total",
        Counter,
        "Bridge sessions opened with bridges of other zones.",
        |s| s.counters.bridge_sessions.into(),
    ),
    one(
        "myco_bridge_syncs_total",
        Counter,
        "Anti-entropy exchanges started with other zones' bridges as an elected bridge.",
        |s| s.counters.bridge_syncs.into(),
    ),
    one(
        "myco_bridge_entries_total",
        Counter,
        "Entries stored new or newer that arrived over bridge sessions.",
        |s| s.counters.bridge_entries.into(),
    ),
    one(
        "myco_relayed_frames_total",
        Counter,
        "Frames this relay forwarded for boxes behind NAT.",
        |s| s.counters.relayed_frames.into(),
    ),
    many(
        "myco_relay_refused_total",
        Counter,
        "Frames marked relayed that were not forwarded, by reason.",
        |p, name, s| {
            let names = myco_core::node::relay::RelayRefusal::NAMES;
            by_label(
                p,
                name,
                "reason",
                names.into_iter().zip(s.counters.relay_refused),
            )
        },
    ),
    one(
        "myco_frames_via_relay_total",
        Counter,
        "Frames sent to boxes behind NAT through their relays.",
        |s| s.counters.frames_via_relay.into(),
    ),
    one(
        "myco_relay_keepalives_total",
        Counter,
        "Frames a box behind NAT sent only to keep its relays' NAT mappings open.",
        |s| s.counters.relay_keepalives.into(),
    ),
    one(
        "myco_behind_nat",
        Gauge,
        "1 if this box is behind NAT: started --nat yes, or found out (--nat auto).",
        |s| u64::from(s.node.meta().nat).into(),
    ),
    one(
        "myco_nat_detected",
        Gauge,
        "1 once this box found out by itself that it is behind NAT: two members saw it at addresses not its own.",
        |s| s.counters.nat_detected.into(),
    ),
];

fn tombstones(node: &Node) -> u64 {
    node.store().slots().iter().filter(|s| s.tombstone).count() as u64
}

const STATE: &[Family] = &[
    one(
        "myco_services",
        Gauge,
        "Services in the desired state.",
        |s| (s.node.store().slots().len() as u64 - tombstones(s.node)).into(),
    ),
    one(
        "myco_tombstones",
        Gauge,
        "Deleted services still remembered.",
        |s| tombstones(s.node).into(),
    ),
    one(
        "myco_local_health",
        Gauge,
        "Lifeguard local health score, 0 (healthy) to 8; stretches probe and suspicion timeouts.",
        |s| u64::from(s.node.local_health()).into(),
    ),
    one(
        "myco_sessions",
        Gauge,
        "Open encrypted sessions with peers.",
        |s| (s.node.link_count() as u64).into(),
    ),
    one(
        "myco_revocation_block",
        Gauge,
        "The RevocationBlock this node enforces.",
        |s| s.node.revocation_block().into(),
    ),
    many(
        "myco_members",
        Gauge,
        "Known members, by SWIM state.",
        |p, name, s| {
            let states = [MemberState::Alive, MemberState::Suspect, MemberState::Dead];
            let counts = states.map(|state| {
                let n = s.node.members().iter().filter(|m| m.state == state).count() as u64;
                (state_name(state), n)
            });
            by_label(p, name, "state", counts)
        },
    ),
];

const STORAGE: &[Family] = &[
    one(
        "myco_wal_bytes",
        Gauge,
        "Bytes in the current WAL file.",
        |s| s.snapshot.wal_bytes.into(),
    ),
    one(
        "myco_wal_appends_total",
        Counter,
        "Entries appended to the WAL.",
        |s| s.snapshot.wal_appends.into(),
    ),
    one(
        "myco_wal_writes_total",
        Counter,
        "WAL writes, each one write and one fdatasync.",
        |s| s.snapshot.wal_writes.into(),
    ),
    one(
        "myco_wal_disk_full_total",
        Counter,
        "Times the WAL found the disk full after it had room (episodes, not retries).",
        |s| s.snapshot.sink.wal_disk_full.into(),
    ),
    one(
        "myco_wal_unlogged_total",
        Counter,
        "Entries kept in memory only because the disk and the WAL batch were full; the next checkpoint stores them.",
        |s| s.snapshot.sink.wal_unlogged.into(),
    ),
    one(
        "myco_wal_failing",
        Gauge,
        "1 while the WAL cannot write (deploys answer 507).",
        |s| u64::from(s.snapshot.wal_failing).into(),
    ),
    one(
        "myco_checkpoints_total",
        Counter,
        "Snapshots written.",
        |s| s.snapshot.sink.checkpoints.into(),
    ),
    one(
        "myco_wal_truncated_bytes",
        Gauge,
        "Bytes cut from the log by the recovery at start (torn or corrupt tail).",
        |s| s.snapshot.sink.wal_truncated_bytes.into(),
    ),
    many(
        "myco_wal_write_seconds",
        MetricKind::Histogram,
        "WAL batch latency: one write and its fdatasync.",
        |p, _, s| histogram(p, &s.snapshot.wal_latency),
    ),
    one(
        "myco_reserve_bytes",
        Gauge,
        "Bytes held by the disk reserve file.",
        |s| s.snapshot.reserve_bytes.into(),
    ),
    one(
        "myco_reserve_releases_total",
        Counter,
        "Times the reserve was freed for the WAL.",
        |s| s.snapshot.sink.reserve_releases.into(),
    ),
];

/// The WAL latency histogram: cumulative buckets up to `+Inf`, then the sum and the count.
fn histogram(p: &mut Prometheus<'_, '_>, h: &Histogram) -> Result<(), Full> {
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let mut le = heapless::String::<16>::new();
        match LATENCY_BOUNDS.get(i) {
            Some(bound) => write!(le, "{bound}").expect("a bound fits"),
            None => le.push_str("+Inf").expect("fits"),
        }
        p.sample("myco_wal_write_seconds_bucket", &[("le", &le)], cumulative)?;
    }
    p.sample("myco_wal_write_seconds_sum", &[], h.sum)?;
    p.sample("myco_wal_write_seconds_count", &[], h.count)
}

const UNITS: &[Family] = &[
    one(
        "myco_services_placed_here",
        Gauge,
        "Services placement puts on this box.",
        |s| (s.node.placed_here().count() as u64).into(),
    ),
    many(
        "myco_units",
        Gauge,
        "Units this box runs, by what systemd reports (unhealthy: running, failing its checks).",
        |p, name, s| {
            let states = Health::ALL.iter().map(|h| h.name());
            by_label(p, name, "state", states.zip(s.units))
        },
    ),
    one(
        "myco_units_written_total",
        Counter,
        "Unit files written (new or new version).",
        |s| s.executor.units_written.into(),
    ),
    one(
        "myco_units_rewritten_total",
        Counter,
        "Of those, unit files written for a version that changes nothing the unit runs (scaling): reloaded, not restarted.",
        |s| s.executor.units_in_place.into(),
    ),
    one(
        "myco_units_removed_total",
        Counter,
        "Units stopped and removed (no longer placed here).",
        |s| s.executor.units_removed.into(),
    ),
    one(
        "myco_systemctl_runs_total",
        Counter,
        "systemctl commands run.",
        |s| s.executor.systemctl_runs.into(),
    ),
    one(
        "myco_systemctl_failures_total",
        Counter,
        "systemctl commands that failed.",
        |s| s.executor.systemctl_failures.into(),
    ),
    one(
        "myco_builds_total",
        Counter,
        "Flake builds started (nix build).",
        |s| s.executor.builds_run.into(),
    ),
    one(
        "myco_builds_from_peers_total",
        Counter,
        "Flake builds whose output was substituted from peers' binary caches, nothing built here.",
        |s| s.executor.builds_from_peers.into(),
    ),
    one(
        "myco_builds_requested_total",
        Counter,
        "Build requests sent to --builder boxes (each builder asked counts once per version).",
        |s| s.executor.builds_requested.into(),
    ),
    one(
        "myco_builds_for_peers_total",
        Counter,
        "Builds this --builder box ran for peers' requests and that succeeded.",
        |s| s.executor.builds_for_peers.into(),
    ),
    one(
        "myco_build_requests_refused_total",
        Counter,
        "Build requests refused: not a builder for that system, an unknown version, full, or failed here.",
        |s| (s.executor.build_requests_refused + s.snapshot.sink.build_requests_dropped).into(),
    ),
    one(
        "myco_builds_failed_on_builders_total",
        Counter,
        "Flake builds counted failed here because the builder asked said its build failed.",
        |s| s.executor.builds_failed_on_builders.into(),
    ),
    one(
        "myco_build_failed_answers_total",
        Counter,
        "Build requests this --builder box refused and answered: its build of that version failed.",
        |s| s.executor.build_failed_answers.into(),
    ),
    one(
        "myco_build_waits_total",
        Counter,
        "Versions that waited for a peer already building them instead of building them too.",
        |s| s.executor.build_waits.into(),
    ),
    one(
        "myco_build_failures_total",
        Counter,
        "Flake builds that failed, hung past --build-timeout, or named no output.",
        |s| s.executor.build_failures.into(),
    ),
    one(
        "myco_health_checks_total",
        Counter,
        "Health checks run (myco.json's health).",
        |s| s.executor.checks_run.into(),
    ),
    one(
        "myco_health_check_failures_total",
        Counter,
        "Health checks that failed or timed out.",
        |s| s.executor.checks_failed.into(),
    ),
    one(
        "myco_health_restarts_total",
        Counter,
        "Units restarted because their health checks failed too many times in a row.",
        |s| s.executor.health_restarts.into(),
    ),
];

const STORE: &[Family] = &[
    one(
        "myco_store_used_permille",
        Gauge,
        "How full the filesystem holding the Nix store is, in permille (last statvfs).",
        |s| u64::from(s.store_used_permille).into(),
    ),
    one(
        "myco_gc_runs_total",
        Counter,
        "nix-collect-garbage runs started.",
        |s| s.gc.runs.into(),
    ),
    one(
        "myco_gc_failures_total",
        Counter,
        "nix-collect-garbage runs that failed or did not say what they freed.",
        |s| s.gc.failures.into(),
    ),
    one(
        "myco_gc_freed_bytes_total",
        Counter,
        "Bytes nix-collect-garbage said it freed.",
        |s| s.gc.freed_bytes.into(),
    ),
    one(
        "myco_audit_lines_total",
        Counter,
        "Lines appended to the audit log since start.",
        |s| s.audit_lines.into(),
    ),
    // Process-wide counters of the helper's client (`privileged::client`); zero without
    // `--privileged`, where the daemon asks nothing.
    one(
        "myco_privileged_refusals_total",
        Counter,
        "Requests myco-priv refused (--privileged); each is logged with its reason.",
        |_| crate::privileged::client::refusals().into(),
    ),
    one(
        "myco_privileged_failures_total",
        Counter,
        "Requests myco-priv could not do, or left without a reply (--privileged); each is logged.",
        |_| crate::privileged::client::failures().into(),
    ),
];

const DNS: &[Family] = &[
    one(
        "myco_dns_listeners",
        Gauge,
        "Addresses *.myco DNS answers on (UDP and TCP each).",
        |s| s.dns_listeners.into(),
    ),
    many(
        "myco_dns_queries_total",
        Counter,
        "*.myco DNS queries received, by transport.",
        |p, name, s| {
            p.sample(name, &[("transport", "udp")], s.dns.udp_queries)?;
            p.sample(name, &[("transport", "tcp")], s.dns.tcp_queries)
        },
    ),
    one(
        "myco_dns_unanswered_total",
        Counter,
        "DNS packets given no answer: shorter than a header, or themselves responses.",
        |s| s.dns.dropped.into(),
    ),
    one(
        "myco_dns_tcp_evicted_total",
        Counter,
        "DNS TCP connections closed, idle or slowest longest, to seat a new client.",
        |s| s.dns.tcp_evicted.into(),
    ),
];

const CACHE: &[Family] = &[
    one(
        "myco_cache_paths",
        Gauge,
        "Store paths the binary cache serves: the closure of the services this box built.",
        |s| s.cache.paths.into(),
    ),
    many(
        "myco_cache_requests_total",
        Counter,
        "Binary cache requests answered, by what was asked and the outcome.",
        |p, name, s| {
            let c = &s.cache;
            p.sample(name, &[("answer", "narinfo")], c.narinfos)?;
            p.sample(name, &[("answer", "nar")], c.nars)?;
            p.sample(name, &[("answer", "not-found")], c.not_found)?;
            p.sample(name, &[("answer", "refused")], c.refused)?;
            p.sample(name, &[("answer", "busy")], c.busy)
        },
    ),
    one(
        "myco_cache_nar_bytes_total",
        Counter,
        "NAR bytes the binary cache sent (what --cache-upload-rate bounds).",
        |s| s.cache.nar_bytes.into(),
    ),
];

const PROXY: &[Family] = &[
    one(
        "myco_proxy_tunnels",
        Gauge,
        "Tunnels from myco proxy open now (handshake done), of the proxy's fixed slots.",
        |s| s.proxy.open.into(),
    ),
    one(
        "myco_proxy_tunnels_opened_total",
        Counter,
        "Tunnels whose client proved an access credential this box accepts.",
        |s| s.proxy.opened.into(),
    ),
    many(
        "myco_proxy_refused_total",
        Counter,
        "Tunnels refused, by reason (busy: every slot taken).",
        |p, name, s| {
            let counts = RefuseReason::ALL.map(|r| (r.name(), s.proxy.refused[r as usize - 1]));
            by_label(p, name, "reason", counts)
        },
    ),
    one(
        "myco_proxy_timeouts_total",
        Counter,
        "Tunnels closed for a handshake not done in time or for carrying nothing too long.",
        |s| s.proxy.timeouts.into(),
    ),
    one(
        "myco_proxy_bad_records_total",
        Counter,
        "Tunnels closed on a record that failed its tag (altered, replayed or reordered).",
        |s| s.proxy.bad_records.into(),
    ),
    many(
        "myco_proxy_bytes_total",
        Counter,
        "API bytes carried through tunnels, by direction (in: to the API).",
        |p, name, s| {
            p.sample(name, &[("direction", "in")], s.proxy.bytes_in)?;
            p.sample(name, &[("direction", "out")], s.proxy.bytes_out)
        },
    ),
];

const PROCESS: &[Family] = &[
    many(
        "myco_io_backend",
        Gauge,
        "The event loop backend in use (1).",
        |p, name, s| p.sample(name, &[("backend", s.snapshot.io)], 1),
    ),
    one(
        "myco_io_uring_fallback",
        Gauge,
        "1 if io_uring was unavailable and poll(2) is used.",
        |s| u64::from(s.snapshot.io_fallback).into(),
    ),
    one(
        "myco_heap_allocations_total",
        Counter,
        "Heap allocations since the process started.",
        |s| s.snapshot.allocations.into(),
    ),
    one(
        "myco_heap_allocations_since_ready_total",
        Counter,
        "Heap allocations since start-up finished; flat at rest.",
        |s| s.snapshot.allocations_since_ready.into(),
    ),
    one(
        "myco_heap_bytes",
        Gauge,
        "Heap bytes allocated and not freed.",
        |s| s.snapshot.heap_bytes.into(),
    ),
    one(
        "myco_datagrams_received_total",
        Counter,
        "UDP datagrams read.",
        |s| s.snapshot.sink.datagrams_received.into(),
    ),
    one(
        "myco_sends_dropped_total",
        Counter,
        "Frames dropped because the socket buffer was full.",
        |s| s.snapshot.sink.sends_dropped.into(),
    ),
    one(
        "myco_sends_failed_total",
        Counter,
        "Frames the kernel refused to send.",
        |s| s.snapshot.sink.sends_failed.into(),
    ),
    one(
        "myco_api_connections",
        Gauge,
        "Open API connections.",
        |s| (s.snapshot.api_open as u64).into(),
    ),
    one(
        "myco_api_streams",
        Gauge,
        "Open /stream subscribers.",
        |s| (s.snapshot.api_streams as u64).into(),
    ),
    one(
        "myco_events_next_id",
        Gauge,
        "The id the next /stream event gets.",
        |s| s.snapshot.events_next_id.into(),
    ),
    one(
        "myco_api_requests_total",
        Counter,
        "API requests answered.",
        |s| s.snapshot.api.requests.into(),
    ),
    one(
        "myco_api_errors_total",
        Counter,
        "API requests answered with an error.",
        |s| s.snapshot.api.errors.into(),
    ),
    one(
        "myco_api_busy_total",
        Counter,
        "API connections refused with 503 (every slot a stream or a deploy waiting for the WAL).",
        |s| s.snapshot.api.refused_busy.into(),
    ),
    one(
        "myco_api_evicted_total",
        Counter,
        "API connections closed, idle or slowest longest, to seat a new client (all slots busy).",
        |s| s.snapshot.api.evicted.into(),
    ),
    one(
        "myco_api_timeouts_total",
        Counter,
        "API connections closed at their deadline.",
        |s| s.snapshot.api.timeouts.into(),
    ),
    one(
        "myco_uptime_seconds",
        Gauge,
        "Seconds since the daemon started.",
        |s| (s.snapshot.uptime_ms as f64 / 1000.0).into(),
    ),
];

/// Writes every family of every present section, in table order.
pub fn metrics(out: &mut Cursor<'_>, node: &Node, snapshot: &DaemonSnapshot) -> Result<(), Full> {
    let (units, executor) = snapshot.units.unwrap_or_default();
    let (dns, dns_listeners) = snapshot.dns.unwrap_or_default();
    let (gc, store_used_permille, audit_lines) = snapshot.store.unwrap_or_default();
    let sources = Sources {
        node,
        counters: node.counters(),
        snapshot,
        units,
        executor,
        gc,
        store_used_permille,
        audit_lines,
        dns,
        dns_listeners: dns_listeners as u64,
        cache: snapshot.cache.unwrap_or_default(),
        proxy: snapshot.proxy.unwrap_or_default(),
    };
    let mut p = Prometheus::new(out);
    for section in SECTIONS.iter().filter(|s| (s.present)(snapshot)) {
        for family in section.families {
            p.family(family.name, family.kind, family.help)?;
            match family.samples {
                Samples::One(read) => p.sample(family.name, &[], read(&sources))?,
                Samples::Many(write) => write(&mut p, family.name, &sources)?,
            }
        }
    }
    Ok(())
}
