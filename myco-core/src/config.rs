//! Every capacity and timing constant of the core, in one place.
//!
//! Capacities are compile-time constants because a node's whole state lives in fixed-size tables
//! inside `Node`. The memory budget is written as a sum below, one line per consumer, and checked
//! against the 512 KiB bound at compile time; `node/mod.rs` asserts that the real
//! `size_of::<Node>()` fits inside the sum.

/// Every datagram on the wire is exactly this long: no fragmentation, ever.
pub const FRAME_BYTES: usize = 1024;
/// Cleartext header: magic, version, kind, zone, flags, body length, revocation block, sender,
/// counter. Layout in `schema::frame`.
pub const HEADER_BYTES: usize = 32;
/// Room kept at the end of every frame for the AEAD tag.
pub const TAG_BYTES: usize = 16;
/// Bytes left for the postcard body.
pub const BODY_BYTES_MAX: usize = FRAME_BYTES - HEADER_BYTES - TAG_BYTES;

/// An encoded signed entry (entry body followed by its 64-byte signature).
pub const ENTRY_BYTES_MAX: usize = 900;
pub const SIGNATURE_BYTES: usize = 64;
/// A flake's locked commit: a git (or Mercurial) revision, SHA-1.
pub const FLAKE_REV_BYTES: usize = 20;
/// A flake's locked content: the SHA-256 of the NAR of its source tree (Nix's `narHash`).
pub const NAR_HASH_BYTES: usize = 32;
/// Worst-case bytes a message adds around one entry: root digest (8), enum tag (1), list length
/// (1), entry length prefix (2), with room to spare.
pub const ENTRY_ENVELOPE_BYTES_MAX: usize = 14;

/// Desired-state table: services plus tombstones. The gauntlet's 1000 services fit.
pub const SERVICES_MAX: usize = 1024;
/// Entries live packed in one byte arena (`state::packed`: their encoding without the texts they
/// share); a full arena refuses new deploys.
pub const ARENA_BYTES: usize = 248 * 1024;
/// Texts entries share (flake URLs, attribute paths, environment names and values, arguments),
/// kept once each with a reference count (`state::strings`). A full table keeps a text inline in
/// its entry, so it limits sharing, never what the store accepts.
pub const STRINGS_MAX: usize = 1536;
pub const STRINGS_BYTES: usize = 56 * 1024;
/// Members a node tracks, itself included.
pub const MEMBERS_MAX: usize = 256;
/// Join addresses given at boot.
pub const JOIN_MAX: usize = 8;
/// Bridges each zone elects among its bridge-capable members (docs/protocol.md §8): two, so one
/// dying leaves the zone connected while SWIM finds it dead and the next one takes over.
pub const BRIDGES_PER_ZONE: usize = 2;
/// `--bridge-seed` addresses a node keeps: bridge-capable boxes of other zones to contact first.
pub const BRIDGE_SEEDS_MAX: usize = 16;
/// Bridges of other zones a node remembers having heard from; the least recently heard gives way.
pub const BRIDGE_PEERS_MAX: usize = 32;
/// A bridge not heard from for this long leaves the directory: it died or stopped bridging.
pub const BRIDGE_STALE_MS: u64 = 30_000;
/// An elected bridge whose directory agrees with it contacts a seed or bridge at random every this
/// many gossip rounds, to find zones and bridges it has not heard from.
pub const BRIDGE_IDLE_ROUNDS: u64 = 8;

/// Relays a box behind NAT keeps sessions with (docs/protocol.md section 12): two, so one dying
/// leaves it reachable while SWIM finds the relay dead and the next in its order takes over.
pub const RELAYS_PER_BOX: usize = 2;
/// A box behind NAT sends each of its relays a frame at least this often. UDP mappings of home
/// and carrier NATs last 30 s or more (RFC 4787 asks for 2 minutes; many keep 30 s), so one frame
/// per 20 s per relay is the least traffic that keeps both mappings open: 2 frames (2 KiB) per
/// 20 s, and none at all while gossip already sends to the relay.
pub const RELAY_KEEPALIVE_MS: u64 = 20_000;
/// A relay forwards to a box only while its last authenticated frame is this recent: an older
/// NAT mapping may have expired, and its port may now belong to someone else.
pub const RELAY_LIVE_MS: u64 = 2 * RELAY_KEEPALIVE_MS;
/// Senders a relay keeps a rate bucket for; the least recently used gives way.
pub const RELAY_SENDERS_MAX: usize = 32;
/// Frames per second one sender may have relayed, and its burst: far above a member's gossip
/// (about 5 frames/s at rest, 40/s in an anti-entropy burst), far below a flood.
pub const RELAY_SENDER_PER_S: u64 = 100;
pub const RELAY_SENDER_BURST: u64 = 200;
/// Frames per second a relay forwards in all (1 MiB/s), and its burst.
pub const RELAY_TOTAL_PER_S: u64 = 1_000;
pub const RELAY_TOTAL_BURST: u64 = 2_000;

/// A peer tells a box again where the box's frames come from (`Message::Observed`) after this
/// long, though nothing changed: the first telling may have been lost. One frame per session per
/// 5 minutes, against a probe every few seconds.
pub const OBSERVED_REFRESH_MS: u64 = 300_000;
/// A node sends at most one such refresh (the same address told again) per this long, to the
/// first session due: every session due every 5 minutes cost each box one frame per member per
/// 5 minutes, 167 bytes/s in a cluster of 50 (40% over `metered`'s budget at rest) and growing
/// with the cluster. A new or changed address is still told at once.
pub const OBSERVED_REFRESH_GAP_MS: u64 = 60_000;
/// Distinct members that must each see a box at an address that is not one of its own before it
/// concludes it is behind NAT (`node::natobs`): one lying member alone cannot flip it.
pub const NAT_OBSERVERS: usize = 2;
/// The box's own addresses the host gives the core (`NodeConfig::own_addrs`); more are ignored.
pub const OWN_ADDRS_MAX: usize = 16;

/// DNS-label rule for service names.
pub const NAME_BYTES_MAX: usize = 63;
pub const ARGS_MAX: usize = 16;
pub const ENV_MAX: usize = 16;
pub const PRE_MAX: usize = 4;
pub const PRE_ARGS_MAX: usize = 8;
pub const PORTS_MAX: usize = 4;
/// Words of a health check command (`Check::Exec`): the executable and its arguments.
pub const HEALTH_ARGS_MAX: usize = 8;
/// The most replicas a service may ask for: entry validation refuses more (`EntryError::Replicas`),
/// and a placement holds at most this many member ids (`place::Placement`).
pub const REPLICAS_MAX: u8 = 64;
/// `REPLICAS_MAX` as a table capacity.
pub const PLACEMENT_MAX: usize = REPLICAS_MAX as usize;
/// Answers of `Node::placement` a node keeps (by key hash), each of at most
/// `PLACEMENT_KEPT_IDS` members: the services asked again and again (units waiting for their
/// first wave, DNS names) are few, and most services have few replicas.
pub const PLACEMENTS_KEPT: usize = 64;
pub const PLACEMENT_KEPT_IDS: usize = 8;

/// Merkle buckets, keyed by the first byte of a key's hash.
pub const BUCKETS: usize = 256;
/// Buckets are summarised in groups so the first anti-entropy step fits one frame.
pub const GROUPS: usize = 16;
pub const BUCKETS_PER_GROUP: usize = BUCKETS / GROUPS;

/// Outbound rumor queue: 5 frames, dropping the oldest when full.
pub const GOSSIP_QUEUE_DEPTH: usize = 5;
/// Entries packed into one rumor frame at most.
pub const RUMOR_KEYS_PER_FRAME: usize = 24;
/// Peers each rumor frame is pushed to per round.
pub const GOSSIP_FANOUT: usize = 3;
/// Rounds a rumor frame is pushed before it retires.
pub const RUMOR_TRANSMITS: u8 = 3;

/// Membership updates waiting to be piggybacked.
pub const MEMBER_UPDATES_MAX: usize = 64;
/// Membership updates carried by one ping or ack.
pub const MEMBER_UPDATES_PER_FRAME: usize = 8;
/// Member records in one `Members` frame (a leave notice; older nodes' join pushes).
pub const MEMBERS_PER_FRAME: usize = 16;
/// Member records in one page of a push-pull (`Message::MemberPage`): as many as fit one body
/// (a maximal record is 38 bytes; the message test builds a full page).
pub const MEMBER_PAGE_RECORDS: usize = 25;
/// Pages of a whole member table, the most one push-pull sends.
pub const MEMBER_PAGES_MAX: usize = MEMBERS_MAX.div_ceil(MEMBER_PAGE_RECORDS);
/// Helpers asked to probe a silent member indirectly.
pub const INDIRECT_PROBES: usize = 3;
/// Outstanding indirect probes this node relays for others.
pub const RELAYS_MAX: usize = 16;

/// Key summaries (key hash, entry digest) in one anti-entropy frame.
pub const SYNC_KEYS_PER_FRAME: usize = 56;
/// Bucket groups answered in one frame.
pub const SYNC_GROUPS_PER_FRAME: usize = 6;
/// Key hashes requested in one frame.
pub const WANT_PER_FRAME: usize = 100;
/// Frames one anti-entropy step may send. There is no cursor: the next exchange compares all
/// buckets again, and those repaired meanwhile drop out.
pub const SYNC_FRAMES_PER_STEP: usize = 8;

/// Lifeguard suspicion: a suspect is declared dead after a timeout that starts at the profile's
/// `suspicion_max_factor` times its minimum and shrinks towards that minimum as independent
/// suspicions arrive; the minimum is the profile's `suspicion_unit_ms` times max(1, log10 members).
/// Independent confirmations that bring a suspicion to its minimum timeout.
pub const SUSPICION_CONFIRMATIONS: u32 = 3;
/// Dead members are remembered this long, so their death spreads, then forgotten.
pub const DEAD_RETENTION_MS: u64 = 60_000;
/// A node sends one member its whole table at most this often, so a peer that keeps asking gets
/// no more than one table per interval (a pull is answered, never amplified). The same under
/// every profile: it limits answers, it sets no rate of its own, and a box that restarts must get
/// its table at once.
pub const MEMBER_PULL_MIN_MS: u64 = 2_000;
/// Lifeguard's local health: the highest score. A node scales its probe interval, probe timeout
/// and suspicion timeouts by `1 + score`; missed acks and refutations raise it, acks lower it.
pub const AWARENESS_MAX: u8 = 8;
/// Probes the moving average of missed probes weighs (each new one counts 1/`MISS_AVERAGE`),
/// which puts a floor under the local health score where loss misses many of them
/// (`Node::awareness_scale`). Sixteen: at 50% loss the average of nearly every node stays within
/// a few points of its mean, where a walk of one step per probe wanders from 0 to the top.
pub const MISS_AVERAGE: u32 = 16;
/// The share of missed probes (millionths) below which it sets no floor: just above what one
/// miss among the last `MISS_AVERAGE` probes weighs, so one miss (a box that died is missed once
/// by each prober, then is a suspect, whose misses do not count) stretches nothing; a second
/// does, and steady loss (30%: about a fifth missed) keeps it.
pub const LOSS_FLOOR_MIN_PPM: u32 = 1_000_000 / MISS_AVERAGE + 1;
/// Services a node lists as not running in its status; beyond, its status says "more".
pub const STATUS_UNITS_MAX: usize = 8;
/// Build keys a node's status offers from its binary cache (`schema::message::Offer`): the
/// versions it built or fetched and serves. Beyond, the first the host names (its newest roots).
pub const OFFER_KEYS_MAX: usize = 8;
/// Peers a build may substitute from (`executor::substitute`): Nix tries them in order, then
/// builds itself, so more would only lengthen a failing build's wait.
pub const SUBSTITUTES_MAX: usize = 3;
/// Build requests a builder holds at once (`executor::remote`); more are refused and counted.
pub const PEER_BUILDS_MAX: usize = 4;
/// Builders a requester remembers having given up on, so it asks others first.
pub const BUILDERS_TRIED_MAX: usize = 4;
/// Versions a builder remembers having failed to build for peers, refused during their backoff.
pub const PEER_FAILURES_MAX: usize = 16;
/// A version waiting for a builder or a building peer is looked at again this often (and an
/// unanswered request sent again).
pub const REMOTE_CHECK_MS: u64 = 1_000;
/// A builder that is neither building nor offering the version this long after it was first
/// asked refused it or lost it: the next builder is asked.
pub const REQUEST_ANSWER_MS: u64 = 15_000;
/// A builder building the version gets this long to offer it before the next one is asked.
pub const REMOTE_BUILD_MAX_MS: u64 = 30 * 60_000;
/// A box that builds waits at most this long for a peer building the same version, then builds.
pub const BUILD_WAIT_MAX_MS: u64 = 10 * 60_000;
/// A changed status is sent to every live member this many times more, a second apart, so a
/// lost frame does not hide a failing service.
pub const STATUS_RESENDS: u8 = 2;
/// A changed status is pushed to every member at most this often on average (after a burst of
/// `STATUS_PUSH_BURST`); changes in between are coalesced into the next push. While services are installed each unit steps through several
/// states, and pushing each step to every member made convergence traffic grow with members times
/// transitions; a second is short next to a probe round, which repairs any peer that missed one.
pub const STATUS_PUSH_INTERVAL_MS: u64 = 1_000;
/// Pushes of status changes that may go out back to back before the interval holds them. With
/// one, a change within a second of the last push waited for the interval while others waited on
/// it: a box publishes twice as it starts (its first status, then its offers), so a rollout's
/// first wave taking a version just after start pushed that only up to a second later, and the
/// next wave waited (docs/benchmarks.md, "The status wait"). Three leave that change its push at
/// once and still hold the average to one push per interval.
pub const STATUS_PUSH_BURST: u64 = 3;
/// Piggybacked updates are retransmitted `mult x ceil(log10(members + 1))` times.
pub const RETRANSMIT_MULT: u8 = 4;
/// A node that knows no live peer retries its join addresses this often.
pub const JOIN_RETRY_MS: u64 = 1_000;
/// Operator-clock milliseconds a tombstone is kept after the newest version seen.
pub const TOMBSTONE_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

// Network profiles (`--profile`)
/// The rates and timeouts of membership and gossip, chosen for the link a cluster runs on. Frames
/// are always `FRAME_BYTES`, so a profile changes how often a node talks, never what it says:
/// nodes under different profiles understand each other (`docs/daemon.md`, "Network profiles").
/// A cluster at rest sends only probes, their acks and the member-sync page, which is what
/// `rest_frames_per_s_milli` counts; sessions have no idle timeout, so no keepalive is needed
/// beyond the probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// A gossip round: rumors are pushed, membership news goes out and one anti-entropy exchange
    /// starts. At rest a round sends nothing.
    pub gossip_interval_ms: u64,
    /// SWIM probe period: one ping to a random live member (and, on average, one ack to another's
    /// ping). A missed ack makes the member suspect at the next period.
    pub probe_interval_ms: u64,
    /// A ping unanswered this long goes to `INDIRECT_PROBES` helpers.
    pub probe_timeout_ms: u64,
    /// The shortest suspicion timeout per log10 of the cluster's size.
    pub suspicion_unit_ms: u64,
    /// A suspicion no other member confirms waits this many times the shortest timeout.
    pub suspicion_max_factor: u64,
    /// A `Sync` member page (with the sender's live-set digest) goes to a random peer this often;
    /// a receiver whose digest differs starts a push-pull of whole tables.
    pub member_sync_interval_ms: u64,
    /// A member believed dead is pinged this often, so healed partitions merge again.
    pub dead_probe_interval_ms: u64,
    /// The goals the timings are checked against (unit tests below): bytes each box sends per
    /// second at rest, and milliseconds from a box's death to a member declaring it dead, in a
    /// cluster of up to `DETECTION_CLUSTER` boxes.
    pub rest_bytes_per_s_goal: u64,
    pub detection_ms_goal: u64,
}

/// The cluster size the detection goals are stated for.
pub const DETECTION_CLUSTER: usize = 100;

impl Profile {
    /// Today's timings, for boxes on one LAN: fast detection, about 4.6 KB/s per box at rest.
    pub const LAN: Profile = Profile {
        name: "lan",
        gossip_interval_ms: 200,
        probe_interval_ms: 500,
        probe_timeout_ms: 200,
        suspicion_unit_ms: 1_000,
        suspicion_max_factor: 4,
        member_sync_interval_ms: 2_000,
        dead_probe_interval_ms: 2_000,
        rest_bytes_per_s_goal: 4_608,
        detection_ms_goal: 15_000,
    };
    /// Boxes across the internet: longer round trips, about a quarter of LAN's traffic.
    pub const WAN: Profile = Profile {
        name: "wan",
        gossip_interval_ms: 500,
        probe_interval_ms: 2_000,
        probe_timeout_ms: 800,
        suspicion_unit_ms: 2_000,
        suspicion_max_factor: 3,
        member_sync_interval_ms: 10_000,
        dead_probe_interval_ms: 5_000,
        rest_bytes_per_s_goal: 1_200,
        detection_ms_goal: 25_000,
    };
    /// Boxes on a link paid by the byte (cellular): at most 400 bytes/s at rest (about 1 GB a
    /// month), a dead box still declared dead within 30 s.
    pub const METERED: Profile = Profile {
        name: "metered",
        gossip_interval_ms: 1_000,
        probe_interval_ms: 6_000,
        probe_timeout_ms: 1_500,
        suspicion_unit_ms: 2_000,
        suspicion_max_factor: 2,
        member_sync_interval_ms: 60_000,
        dead_probe_interval_ms: 20_000,
        rest_bytes_per_s_goal: 400,
        detection_ms_goal: 30_000,
    };
    pub const ALL: [Profile; 3] = [Profile::LAN, Profile::WAN, Profile::METERED];
    /// The names `--profile` takes, for usage messages.
    pub const NAMES: &'static str = "lan, wan, metered";

    /// The profile called `name`; None for any other text.
    pub fn named(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name == name)
    }

    /// The shortest suspicion timeout in a cluster of `cluster` boxes (this one included).
    pub const fn suspicion_min_ms(&self, cluster: usize) -> u64 {
        self.suspicion_unit_ms * log10_ceil(cluster)
    }

    /// The longest: a suspicion nobody else confirms.
    pub const fn suspicion_max_ms(&self, cluster: usize) -> u64 {
        self.suspicion_min_ms(cluster) * self.suspicion_max_factor
    }

    /// How long after its ping a probe is judged: when the next period starts, or sooner when the
    /// period is long beside the probe timeout. An indirect probe starts at one timeout and its
    /// helpers nack at about two; a third leaves the relayed ack one whole timeout to come back.
    /// `lan` and `wan` judge at the period's end as before; `metered` (6 s periods, 1.5 s
    /// timeout) at 4.5 s, not 6.
    pub const fn judge_after_ms(&self) -> u64 {
        let three = 3 * self.probe_timeout_ms;
        if three < self.probe_interval_ms {
            three
        } else {
            self.probe_interval_ms
        }
    }

    /// Frames a box sends per second at rest, in thousandths: its own ping each probe period, on
    /// average one ack to another member's ping, and the member-sync page.
    pub const fn rest_frames_per_s_milli(&self) -> u64 {
        2 * 1_000_000 / self.probe_interval_ms + 1_000_000 / self.member_sync_interval_ms
    }

    /// The mean wait between two frames from one member at rest, in a cluster of `cluster` boxes:
    /// its frames go to the other members in turn. 0.44 s with three boxes on `lan`, 2 s with
    /// ten, 10.9 s with fifty.
    pub const fn rest_gap_ms(&self, cluster: usize) -> u64 {
        (cluster.saturating_sub(1) as u64) * 1_000_000 / self.rest_frames_per_s_milli()
    }

    /// Whether a member's silence says something in a cluster of `cluster` boxes: its frames come
    /// more often than probes go out, so one silent for longer than another is likelier dead
    /// (`Node::probe_target`). Three boxes or fewer on every profile.
    pub const fn silence_tells(&self, cluster: usize) -> bool {
        self.rest_gap_ms(cluster) <= self.probe_interval_ms
    }

    /// Bytes a box sends per second at rest.
    pub const fn rest_bytes_per_s(&self) -> u64 {
        self.rest_frames_per_s_milli() * FRAME_BYTES as u64 / 1000
    }

    /// Milliseconds from a box's death until a member declares it dead, in a cluster of `cluster`
    /// boxes, nine times in ten: the cluster's probes pick members at random, so the wait for the
    /// first probe of the dead box is exponential with a mean of one probe period (2.3 periods at
    /// the 90th percentile); the miss is judged `judge_after_ms` after that ping; the prober's
    /// unconfirmed suspicion then runs its longest timeout.
    pub const fn detection_ms(&self, cluster: usize) -> u64 {
        self.probe_interval_ms * 23 / 10
            + self.judge_after_ms()
            + self.suspicion_max_ms(cluster)
            + self.gossip_interval_ms
    }
}

/// max(1, ceil(log10 n)): how suspicion timeouts and retransmissions grow with the cluster.
pub const fn log10_ceil(n: usize) -> u64 {
    let mut x = 1usize;
    let mut d = 0u64;
    while x < n {
        x = x.saturating_mul(10);
        d += 1;
    }
    if d == 0 {
        1
    } else {
        d
    }
}

/// Bounds every profile keeps; a profile that breaks one fails the build.
const fn profile_is_sound(p: &Profile) -> bool {
    // Timers fire at tick granularity; a probe must be judged inside its own period.
    p.gossip_interval_ms >= 50
        && p.probe_timeout_ms >= 50
        && p.probe_timeout_ms < p.probe_interval_ms
        && p.suspicion_max_factor >= 1
        && p.member_sync_interval_ms >= p.probe_interval_ms
        && refutes_in_time(p)
}

/// A box told it is suspect refutes in its next gossip round; that must leave it well within the
/// shortest unconfirmed suspicion of every profile (in a cluster of ten or fewer), so a box of a
/// slower profile is not declared dead by a faster one for the time it takes to answer.
const fn refutes_in_time(p: &Profile) -> bool {
    let mut i = 0;
    while i < Profile::ALL.len() {
        if 3 * p.gossip_interval_ms > Profile::ALL[i].suspicion_max_ms(1) {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(profile_is_sound(&Profile::LAN));
const _: () = assert!(profile_is_sound(&Profile::WAN));
const _: () = assert!(profile_is_sound(&Profile::METERED));
// Issue 19's goal for metered links: about 1 GB a month, a dead box found within 30 s.
const _: () = assert!(
    Profile::METERED.rest_bytes_per_s_goal <= 400 && Profile::METERED.detection_ms_goal <= 30_000
);

// The memory budget of one node, one line per consumer (bytes, rounded up), checked below against
// the bound, and in `node/mod.rs` against the real `size_of::<Node>()`, which must fit inside it.
pub const BUDGET_BYTES: usize = ARENA_BYTES // packed entries
    + STRINGS_BYTES + STRINGS_MAX * 12 + 32 // shared strings: texts, symbols, hash index, counts
    + SERVICES_MAX * 48 // entry index: key hash, digest, version, placement inputs, arena span
    + SERVICES_MAX / 4 + 32 // which entries are placed here and in their first wave, and the inputs
    + (MEMBERS_MAX + 1) * 16 + 48 // the placed digest of every candidate, and its inputs
    + PLACEMENTS_KEPT * (32 + PLACEMENT_KEPT_IDS * 8) // recent placements, with their inputs
    + BUCKETS * 8 // Merkle bucket digests
    + MEMBERS_MAX * 112 // member records with addresses, timers, last-seen roots, last push-pull
    + MEMBERS_MAX * (STATUS_UNITS_MAX * 16 + 24) // each member's last status and placed digest
    + MEMBERS_MAX * (OFFER_KEYS_MAX * 8 + 40) // each member's offer: build keys, their count, the port, builds, building
    + MEMBER_UPDATES_MAX * 64 // piggyback queue
    + GOSSIP_QUEUE_DEPTH * (RUMOR_KEYS_PER_FRAME * 8 + 16) // rumor queue
    + RELAYS_MAX * 48 // indirect probes relayed for others
    + RELAY_SENDERS_MAX * 24 + 24 // relay rate buckets
    + MEMBERS_MAX * 48 // routes to boxes behind NAT: address, id, relay address
    + JOIN_MAX * 24 // join addresses
    + BRIDGE_SEEDS_MAX * 18 + BRIDGE_PEERS_MAX * 48 + 16 // bridge seeds and directory
    + SESSIONS_MAX * 216 // established sessions: two AEAD keys, replay window, peer, address, certified key, observed address told
    + OWN_ADDRS_MAX * 18 + NAT_OBSERVERS * 8 + 8 // own addresses and who saw this box elsewhere (`node::natobs`)
    + HANDSHAKES_MAX * 620 // pending handshakes: initiator state or responder keys, last message
    + 512 // this node's credentials and trust
    + 4096 // counters, timers, PRNG, configuration
    + 2 * core::mem::size_of::<Profile>(); // the network profile, in the node and its member table
pub const NODE_BYTES_MAX: usize = 576 * 1024;

const _: () = assert!(BUDGET_BYTES <= NODE_BYTES_MAX);
const _: () = assert!(HEADER_BYTES + BODY_BYTES_MAX + TAG_BYTES == FRAME_BYTES);
const _: () = assert!(ENTRY_BYTES_MAX + ENTRY_ENVELOPE_BYTES_MAX <= BODY_BYTES_MAX);
const _: () = assert!(BUCKETS == GROUPS * BUCKETS_PER_GROUP);
// A piggyback's worth of updates is gossiped as one `Members` frame.
const _: () = assert!(MEMBER_UPDATES_PER_FRAME <= MEMBERS_PER_FRAME);
const _: () = assert!(ARENA_BYTES <= u32::MAX as usize);
const _: () = assert!(STRINGS_MAX < u16::MAX as usize && STRINGS_BYTES <= u32::MAX as usize);

// WAL
/// Record header: magic `"MW"`, kind, reserved, payload length u32, CRC32C u32. Layout in
/// `wal::record`.
pub const WAL_HEADER_BYTES: usize = 12;
/// The largest record payload: one encoded entry. A checkpoint-end payload is far smaller.
pub const WAL_PAYLOAD_BYTES_MAX: usize = ENTRY_BYTES_MAX;
pub const WAL_RECORD_BYTES_MAX: usize = WAL_HEADER_BYTES + WAL_PAYLOAD_BYTES_MAX;
/// The replayer's default window: one largest record plus room to read ahead.
pub const WAL_REPLAY_WINDOW_BYTES: usize = 2048;
/// Once the log passes this size it is compacted into a snapshot, so disk use stays bounded by
/// about one log plus two snapshots whatever the history.
pub const WAL_CHECKPOINT_BYTES: u64 = 1024 * 1024;

// The local API, shared by the daemon and the CLI
/// A deploy waits this long for its WAL record to become durable; then the daemon answers 507
/// (not acknowledged: retry), a disk that filled up meanwhile being the usual reason.
pub const DEPLOY_DURABLE_TIMEOUT_MS: u64 = 30_000;
/// How much longer than `DEPLOY_DURABLE_TIMEOUT_MS` the CLI waits for a deploy's answer. The
/// daemon checks deadlines once a second and its loop may be slowed by the very disk that failed,
/// so its 507 can come a little late; the CLI must still be listening, or the operator would get
/// "did not answer" instead of the daemon's reason.
pub const DEPLOY_ANSWER_MARGIN_MS: u64 = 5_000;

// A window that cannot hold one whole record could never make progress.
const _: () = assert!(WAL_RECORD_BYTES_MAX <= WAL_REPLAY_WINDOW_BYTES);
// The on-disk length field is a u32.
const _: () = assert!(WAL_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

// Security
/// A node certificate's signed body, worst case: issuer key id (varint u32, 5), node public key
/// (32), zone (1), arch (1), gpu (1), issue height (varint u64, 10), and for a bridge its scope
/// (variant 1, bitmap varint u64 10). A test encodes the maximal body and checks it is exactly this
/// long.
pub const CERT_BODY_BYTES_MAX: usize = 61;
/// An encoded certificate: body followed by the operator's signature.
pub const CERT_BYTES_MAX: usize = CERT_BODY_BYTES_MAX + SIGNATURE_BYTES;
/// A revocation's signed body, worst case: issuer key id (varint u32, 5) and height (varint u64,
/// 10).
pub const REVOCATION_BODY_BYTES_MAX: usize = 15;
pub const REVOCATION_BYTES_MAX: usize = REVOCATION_BODY_BYTES_MAX + SIGNATURE_BYTES;
/// An access credential's signed body, worst case: operator public key (32), holder public key
/// (32), expiry in Unix seconds (varint u64, 10), issue height (varint u64, 10), scope (an
/// optional node id: 1 + varint u64, 11). A test encodes the maximal body and checks its length.
pub const ACCESS_BODY_BYTES_MAX: usize = 95;
/// An encoded access credential: body followed by the operator's signature.
pub const ACCESS_BYTES_MAX: usize = ACCESS_BODY_BYTES_MAX + SIGNATURE_BYTES;
/// X25519 public keys and handshake challenges.
pub const EPHEMERAL_BYTES: usize = 32;
pub const CHALLENGE_BYTES: usize = 32;
/// The largest handshake message, a Reply: kind (1), certificate length prefix (1), certificate,
/// ephemeral key, challenge, transcript signature. Hello and Finish are smaller.
pub const HANDSHAKE_BYTES_MAX: usize =
    1 + 1 + CERT_BYTES_MAX + EPHEMERAL_BYTES + CHALLENGE_BYTES + SIGNATURE_BYTES;
/// Counters a session remembers behind the highest one it accepted; older ones are refused. One
/// bit each in a `u64`.
pub const REPLAY_WINDOW_FRAMES: u64 = 64;

// A certificate's length prefix inside a handshake message is one varint byte.
const _: () = assert!(CERT_BYTES_MAX < 128);
// Every handshake message travels as the cleartext body of one frame.
const _: () = assert!(HANDSHAKE_BYTES_MAX <= BODY_BYTES_MAX);

/// Established sessions, one per peer talked to; the least recently heard one gives way.
pub const SESSIONS_MAX: usize = MEMBERS_MAX;
/// Handshakes in progress at once; the oldest gives way.
pub const HANDSHAKES_MAX: usize = 32;
/// A handshake not completed in this time is dropped and retried with fresh randomness.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
/// An initiator repeats its Hello (or Finish) this often while its handshake is pending.
pub const HANDSHAKE_RESEND_MS: u64 = 100;

// Executor
/// Units one box can run: every service, if placement hands it all of them.
pub const UNITS_MAX: usize = SERVICES_MAX;
/// Units one `systemctl` command names at most; more are done in several commands, so a command
/// line stays far below the kernel's argument limit.
pub const UNITS_PER_COMMAND: usize = 200;
/// Unit changes (writes and removals) planned per reconcile round; the rest wait for the next
/// round, so one burst of placement changes cannot hold the executor for long.
pub const UNIT_PLAN_MAX: usize = 64;
/// Placements and health changes kept for `/stream` between two host steps: one per installed
/// unit, twice over. When full the oldest gives way.
pub const UNIT_CHANGES_MAX: usize = 2 * UNITS_MAX;
/// Placement is re-applied at most this often, so a burst of membership or state changes moves
/// units once.
pub const RECONCILE_INTERVAL_MS: u64 = 1_000;
/// A round whose versions only wait for their first wave to speak of them is run again when a
/// member's status arrives, but no sooner than this after the last: a burst of statuses costs at
/// most one round per this.
pub const UNHEARD_LOOK_MS: u64 = 100;
/// How often unit health is read while units are installed.
pub const HEALTH_INTERVAL_MS: u64 = 5_000;
/// Health is read this soon after an enable or a restart, to report a unit that fails at once.
pub const HEALTH_AFTER_START_MS: u64 = 1_000;
/// After a failed command, the executor waits this long before the next `systemctl`.
pub const COMMAND_RETRY_MS: u64 = 5_000;
/// A `systemctl` still running after this long is hung (systemd stuck, a unit's stop job that
/// never ends): the host is told to kill it, and it fails and is retried like any failed command.
/// Generous, since a `disable --now` legitimately waits for units to stop (systemd's default stop
/// timeout is 90 s per unit, but units run in parallel and ours are short-lived).
pub const SYSTEMCTL_TIMEOUT_MS: u64 = 60_000;

// Nix store garbage collection (`executor::gc`). Usage is in permille of the filesystem that
// holds `/nix/store`, as statvfs reports it.
/// Above this the box collects garbage.
pub const GC_START_PERMILLE: u16 = 850;
/// Above this, after a collection that freed nothing, builds are refused (`disk-full`).
pub const BUILDS_REFUSED_PERMILLE: u16 = 950;
/// The host reads the store's usage at most this often (and after each build).
pub const STORE_CHECK_INTERVAL_MS: u64 = 60_000;
/// At most one collection starts in this long: a collection walks the whole store, and one
/// that freed little will not free more a minute later.
pub const GC_INTERVAL_MIN_MS: u64 = 10 * 60_000;
/// A failed `nix-collect-garbage` is tried again after this long.
pub const GC_RETRY_MS: u64 = 60_000;

// Rollouts (`executor::rollout`)
/// A new version runs this long on a box before it counts as settled there: the first wave
/// settled lets the next wave take it, and a failure before settling holds the rollout.
pub const ROLLOUT_SETTLE_MS: u64 = 10_000;
/// Failed builds in a row that hold a version (backoff as `BUILD_RETRY_FIRST_MS`): one may be a
/// fetch that failed, so it is retried once first.
pub const ROLLOUT_BUILD_FAILURES: u32 = 2;
/// One box of the first wave per this many placed boxes (rounded up): one for ten or fewer.
pub const ROLLOUT_WAVE_EVERY: usize = 10;
/// Versions on trial on one box (taken, not yet settled, or held until a newer entry): a new
/// version that finds no room waits for the next round, unless nothing of it runs here (then it
/// goes without a trial).
pub const TRIALS_MAX: usize = 256;
/// Versions a box keeps to go back to (the entry a unit was written from and its program): a
/// unit whose version found no room cannot go back.
pub const KEPT_MAX: usize = 64;
/// A kept version: key, digest, the entry and its length, the program (`executor::build::Program`)
/// and its length, rounded up.
pub const KEPT_BYTES: usize =
    16 + ENTRY_BYTES_MAX + 8 + STORE_PATH_BYTES_MAX + 8 + NAME_BYTES_MAX + 16;

// The memory budget of one executor, one line per consumer (bytes, rounded up), checked below and
// against the real `size_of::<Executor>()` in `executor/tests.rs`.
pub const EXECUTOR_BUDGET_BYTES: usize = UNITS_MAX * 96 // installed units: name, key, digest, health, restarts, todo
    + UNIT_CHANGES_MAX * 96 // changes ring: name, kind, health name
    + UNIT_PLAN_MAX * 72 // unit files to write this round
    + BUILDS_BUDGET_BYTES // flake services on their way to a built program
    + TRIALS_MAX * 136 // versions on trial: name, key, digests, verdict, read times
    + KEPT_MAX * KEPT_BYTES // versions to go back to
    + ENTRY_BYTES_MAX + 8 // the entry, rebuilt from the store, that a write or build borrows
    + UNITS_MAX * 104 // each unit's health probe: schedule, grace, count, token, last reason (40)
    + ENTRY_BYTES_MAX + 16 // the entry a health check borrows, and the probes' idle time
    + 256; // flags, timers, token, counters, command in flight
/// Raised from 512 KiB when health checks (a probe per unit) and rollouts (trials, kept versions)
/// joined the executor.
pub const EXECUTOR_BYTES_MAX: usize = 640 * 1024;

const _: () = assert!(EXECUTOR_BUDGET_BYTES <= EXECUTOR_BYTES_MAX);
const _: () = assert!(UNITS_PER_COMMAND > 0 && UNIT_PLAN_MAX <= UNITS_MAX);
// The show sweep and the plan must make progress each round.
const _: () = assert!(HEALTH_AFTER_START_MS <= HEALTH_INTERVAL_MS);
const _: () =
    assert!(GC_START_PERMILLE < BUILDS_REFUSED_PERMILLE && BUILDS_REFUSED_PERMILLE <= 1000);

// Builds
/// Flake services one box tracks between placement and the unit that runs their output: waiting
/// for a build, building, failed, or built and not yet written. The rest wait for the next round.
pub const BUILDS_MAX: usize = 64;
/// The longest store path a build may report (`/nix/store/<32>-<name>`; Nix allows a name of
/// 211 bytes, flake outputs use short ones). A longer one is a failed build.
pub const STORE_PATH_BYTES_MAX: usize = 160;
/// A failed build is retried after this long, doubling per failure up to `BUILD_RETRY_MAX_MS`.
pub const BUILD_RETRY_FIRST_MS: u64 = 30_000;
pub const BUILD_RETRY_MAX_MS: u64 = 600_000;
/// The builds table: name, key, digest, state and failures, the program (a store path, then
/// `/bin/` and the name again), and what asking builders did (`executor::remote::Asked`: the
/// builder asked, the ones tried, the wait's start, the builder's answer); the requests accepted
/// as a builder, the versions it built for them and does not offer yet, the versions it failed to
/// build for them, the answers to requests refused for such a failure, and the request to send.
pub const BUILDS_BUDGET_BYTES: usize = BUILDS_MAX
    * (128 + STORE_PATH_BYTES_MAX + 2 * NAME_BYTES_MAX + 40 + BUILDERS_TRIED_MAX * 8)
    + PEER_BUILDS_MAX * 32
    + PEER_BUILDS_MAX * 16
    + PEER_FAILURES_MAX * 24
    + PEER_BUILDS_MAX * 40
    + 96;

#[cfg(test)]
mod tests {
    use super::*;

    /// `lan` is the behaviour from before profiles existed, value for value, but for the
    /// suspicion unit: SUSPICION_MULT (3) x the probe interval until refutations went straight
    /// back to the members that told a suspect (`Node::correct_teller`), 2 x since.
    #[test]
    fn lan_is_the_old_timing() {
        let lan = Profile::LAN;
        assert_eq!(lan.gossip_interval_ms, 200);
        assert_eq!(lan.probe_interval_ms, 500);
        assert_eq!(lan.probe_timeout_ms, 200);
        assert_eq!(lan.suspicion_min_ms(100), 2 * 2 * 500);
        assert_eq!(lan.suspicion_max_ms(100), 4 * 2 * 2 * 500);
        assert_eq!(lan.member_sync_interval_ms, 2_000);
        assert_eq!(lan.dead_probe_interval_ms, 2_000);
    }

    /// Every profile's traffic at rest meets its goal: metered 400 bytes/s (one frame every 2.5
    /// s), lan no more than the 4.5 frames/s measured before profiles.
    #[test]
    fn rest_traffic_meets_each_goal() {
        for p in Profile::ALL {
            let bytes = p.rest_bytes_per_s();
            assert!(bytes <= p.rest_bytes_per_s_goal, "{}: {bytes} B/s", p.name);
        }
        assert!(Profile::METERED.rest_frames_per_s_milli() <= 400);
        assert_eq!(Profile::LAN.rest_frames_per_s_milli(), 4_500);
    }

    /// Every profile declares a dead box dead within its goal in a cluster of 100, metered within
    /// 30 s; and the slower the profile, the less it sends.
    #[test]
    fn detection_meets_each_goal() {
        for p in Profile::ALL {
            let ms = p.detection_ms(DETECTION_CLUSTER);
            assert!(ms <= p.detection_ms_goal, "{}: {ms} ms", p.name);
        }
        let [lan, wan, metered] = Profile::ALL;
        assert!(lan.rest_bytes_per_s() > wan.rest_bytes_per_s());
        assert!(wan.rest_bytes_per_s() > metered.rest_bytes_per_s());
        assert!(lan.detection_ms(100) < wan.detection_ms(100));
    }

    /// Only the three names are profiles, spelled exactly.
    #[test]
    fn profiles_by_name() {
        for p in Profile::ALL {
            assert_eq!(Profile::named(p.name), Some(p));
            assert!(Profile::NAMES.contains(p.name));
        }
        for bad in ["", "LAN", "Lan", "lan ", "metred", "wan,lan"] {
            assert_eq!(Profile::named(bad), None, "{bad:?}");
        }
    }

    /// A member's silence says something in clusters of three boxes or fewer, on every profile
    /// (the probe order's docs say so).
    #[test]
    fn silence_tells_up_to_three_boxes() {
        assert_eq!(Profile::LAN.rest_gap_ms(3), 444);
        for p in Profile::ALL {
            assert!((1..=3).all(|n| p.silence_tells(n)), "{}", p.name);
            assert!((4..=MEMBERS_MAX).all(|n| !p.silence_tells(n)), "{}", p.name);
        }
    }

    #[test]
    fn log10_ceil_steps() {
        assert_eq!(log10_ceil(0), 1);
        assert_eq!(log10_ceil(10), 1);
        assert_eq!(log10_ceil(11), 2);
        assert_eq!(log10_ceil(100), 2);
        assert_eq!(log10_ceil(101), 3);
        assert_eq!(log10_ceil(MEMBERS_MAX), 3);
    }
}
