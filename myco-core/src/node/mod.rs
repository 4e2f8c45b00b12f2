//! `Node`: one Myco member as a sans-IO state machine.
//!
//! Inputs are `handle_datagram`, `handle_tick` and `submit`; every effect leaves through the
//! caller's [`Sink`] before the call returns, so there is nothing to drain afterwards. The caller
//! must call `handle_tick` at least every `TICK_MS_MAX`; timers that came due in between fire on
//! the next call.
//!
//! Per gossip round a node pushes its rumor frames to `GOSSIP_FANOUT` random live peers and starts
//! one anti-entropy exchange with a live peer whose last-seen root differs from its own. Per probe
//! period it runs one SWIM probe (direct, then indirect through `INDIRECT_PROBES` helpers). A
//! cluster at rest sends only probes and acks.

use crate::config::WAL_HEADER_BYTES;
use crate::config::{
    Profile, ARENA_BYTES, BUCKETS, BUCKETS_PER_GROUP, BUDGET_BYTES, FRAME_BYTES, GOSSIP_FANOUT,
    GROUPS, INDIRECT_PROBES, JOIN_MAX, JOIN_RETRY_MS, NODE_BYTES_MAX, PLACEMENTS_KEPT, RELAYS_MAX,
    SERVICES_MAX, SYNC_FRAMES_PER_STEP, SYNC_KEYS_PER_FRAME, WANT_PER_FRAME,
};
use crate::config::{BODY_BYTES_MAX, REVOCATION_BYTES_MAX};
use crate::crypto::handshake::{Credentials, Trust};
use crate::crypto::tunnel::{TunnelError, TunnelMsg, TunnelResponder, TunnelSession};
use crate::crypto::{
    check_entry, CertBody, CertError, EntrySignatureError, PublicKey, Refusal as CryptoRefusal,
    Revocation, RevocationError, SigningKey,
};
use crate::gossip::members::{Applied, Member, Members};
use crate::gossip::rumor::RumorQueue;
use crate::place::Candidate;
use crate::random::Prng;
use crate::schema::addr::PeerAddr;
use crate::schema::entry::Entry;
use crate::schema::frame::{Frame, FrameError, Kind};
use crate::schema::message::{
    Body, BuildRequest, Digest, MemberMeta, MemberState, MemberUpdate, Message, PageKind, Status,
};
use crate::state::store::{bucket_of, key_hash, Merge, Slot, Store, StoreError};
use crate::sync::merkle::{bucket_range, group_buckets};
use crate::time::Instant;
use crate::wal::checkpoint_due;
use core::cell::Cell;
use heapless::Vec;
use relay::RelayRefusal;
use transport::{Drop as TransportDrop, Transport};

/// Sessions a node keeps open proactively; beyond these, sessions open on demand.
const SESSIONS_WARM: usize = 16;

/// Rounds of unconditional anti-entropy after recovering from a truncated log.
const FULL_SYNC_ROUNDS: u8 = 3;

/// Frames one queued rumor frame may become when its entries grew since they were queued.
const RUMOR_FRAMES_MAX: usize = 2;

/// Longest gap between two `handle_tick` calls that keeps timers accurate.
pub const TICK_MS_MAX: u64 = 50;

/// Where effects go. Implemented by the daemon (sockets, files) and the simulator (queues).
pub trait Sink {
    /// Sends one frame to `to`, best effort: the core never learns whether it arrived.
    fn send(&mut self, to: PeerAddr, frame: &[u8; FRAME_BYTES]);
    /// Sends one frame of a session: `seal` encrypts `frame` in place (its nonce is already
    /// spent). The default seals and sends. A simulator whose network decides that the frame is
    /// lost may leave it unsealed: nobody opens it, and the cipher is a sixth of a run.
    fn send_sealed(
        &mut self,
        to: PeerAddr,
        frame: &mut [u8; FRAME_BYTES],
        seal: impl FnOnce(&mut [u8; FRAME_BYTES]),
    ) {
        seal(frame);
        self.send(to, frame);
    }
    /// Reports something the host may log, count or act on.
    fn event(&mut self, event: Event);
    /// Appends `entry` to the write-ahead log. The caller makes it durable (fdatasync) and then
    /// calls `handle_storage(Storage::Durable { ticket })`. Appends complete in call order.
    fn append(&mut self, entry: &[u8], ticket: u64);
    /// The log passed `WAL_CHECKPOINT_BYTES`. After the current call returns, the caller writes
    /// a snapshot of `store()` and calls `handle_storage(Storage::Checkpointed)`.
    fn checkpoint(&mut self);
    /// Fills `buf` from a cryptographically secure random source: handshake secrets and
    /// challenges. The core has no randomness of its own for keys.
    fn fill_random(&mut self, buf: &mut [u8]);
    /// Checks an entry's operator signature; the node acts on the answer. The default verifies;
    /// a simulator may remember answers for entries it has already checked.
    fn verify_entry(
        &mut self,
        operator: &PublicKey,
        entry: &Entry<'_>,
    ) -> Result<(), EntrySignatureError> {
        check_entry(operator, entry)
    }
}

/// Storage completions the caller reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Every append up to and including `ticket` is durable.
    Durable { ticket: u64 },
    /// The requested snapshot is durable and the log was restarted empty.
    Checkpointed,
    /// Boot replay finished: the log holds `wal_bytes`; `truncated` if a bad record cut it.
    Recovered { wal_bytes: u64, truncated: bool },
    /// The host could not log some appends (its disk was full and its batch too): those entries
    /// are held in memory only. The node asks for a checkpoint, whose snapshot of `store()` holds
    /// them; the host writes it once the disk has room again.
    Unlogged,
}

/// What `submit` did: `ticket` names the append to wait for before acknowledging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub merge: Merge,
    /// `None` when the node already held this or a newer version: nothing to write.
    pub ticket: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    MemberJoined(u64),
    MemberAlive(u64),
    MemberSuspect(u64),
    MemberDead(u64),
    /// A member said it was leaving (a clean stop) and is dead now; placement treats it as dead.
    MemberLeft(u64),
    /// A new entry or a newer version of one was stored.
    EntryChanged {
        key_hash: u64,
    },
    /// The append with this ticket (and every earlier one) is durable: acknowledge it.
    Durable {
        ticket: u64,
    },
    /// An incoming frame was dropped; it changed nothing.
    Refused(Refusal),
    /// The RevocationBlock rose: sessions with older certificates ended.
    Revoked {
        height: u64,
    },
    /// Member `from` (authenticated) asks this box to build a version
    /// (`Executor::handle_build_request` decides whether it does).
    BuildRequest {
        from: u64,
        request: BuildRequest,
    },
    /// Member `from` (authenticated), a builder, refused `request` because its last build of
    /// that version failed (`Executor::handle_build_failed` decides what that counts for).
    BuildFailed {
        from: u64,
        request: BuildRequest,
    },
    /// Two members saw this box's frames come from addresses not its own (`node::natobs`), the
    /// last `seen_at`: it is behind NAT and uses relays from now on. Once per run.
    BehindNat {
        seen_at: PeerAddr,
    },
    /// As `BehindNat`, but this box is a `--relay`, which must be reachable directly: it stays
    /// as it is, and the operator should know. Once per run.
    RelayTranslated {
        seen_at: PeerAddr,
    },
}

/// Why an incoming frame or entry was dropped. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Frame(FrameError),
    /// Refused by the security layer: MAC, replay, keys, signatures, zones, handshakes.
    Crypto(CryptoRefusal),
    WrongZone,
    Body,
    Entry(StoreError),
    /// A bridge session carried something other than desired state (a member record, a probe, a
    /// status): membership never crosses a zone.
    Bridge,
    /// A frame marked relayed that this node did not forward (`relay::RelayRefusal` says why).
    Relay(RelayRefusal),
}

impl Refusal {
    /// Every reason's name, in `index` order: the `reason` label of the daemon's refused-frames
    /// metric and the name its refusal events carry.
    pub const NAMES: [&'static str; 7] = [
        "frame", "zone", "body", "entry", "crypto", "bridge", "relay",
    ];

    /// This refusal's position in `NAMES` (and in `Counters::refused_by_reason`).
    pub fn index(self) -> usize {
        match self {
            Refusal::Frame(_) => 0,
            Refusal::WrongZone => 1,
            Refusal::Body => 2,
            Refusal::Entry(_) => 3,
            Refusal::Crypto(_) => 4,
            Refusal::Bridge => 5,
            Refusal::Relay(_) => 6,
        }
    }

    /// The reason's name, for metrics and events.
    pub fn name(self) -> &'static str {
        Refusal::NAMES[self.index()]
    }
}

/// Counters the daemon exports as metrics and the simulator reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub refused_frame: u64,
    pub refused_zone: u64,
    pub refused_body: u64,
    pub refused_entry: u64,
    pub entries_changed: u64,
    pub entries_stale: u64,
    pub gossip_rounds: u64,
    pub sync_steps: u64,
    pub sync_frames: u64,
    pub probes: u64,
    pub members_refused: u64,
    pub refutations: u64,
    /// Frames sent straight to a member whose frame said this node suspect or dead
    /// (`Node::correct_teller`).
    pub refutations_told: u64,
    /// Member frames pushed at once, at a tick after a death (`Node::handle_tick`).
    pub death_pushes: u64,
    /// Nacks sent as a helper whose relayed ping went unanswered (`Message::Nack`).
    pub nacks_sent: u64,
    /// `Observed` frames that told a peer an unchanged address again (`Transport::tell_observed`).
    pub observed_refreshes: u64,
    pub refused_crypto: u64,
    /// Messages dropped because no session with the peer existed yet (a handshake started).
    pub frames_unsent: u64,
    pub handshakes_started: u64,
    pub handshakes_completed: u64,
    /// Handshakes not started because this node's own certificate is revoked.
    pub handshakes_refused_own: u64,
    /// Handshakes not started or answered because the table was full of live ones.
    pub handshakes_deferred: u64,
    /// Sealed frames opened and accepted.
    pub frames_accepted: u64,
    /// Whole member tables sent (push-pull: each is up to `MEMBER_PAGES_MAX` pages).
    pub tables_sent: u64,
    /// Frames of membership news sent on their own in a gossip round (`gossip_members`), besides
    /// what rides on probes and acks: under loss, suspicions and refutations make them most of
    /// the traffic at rest.
    pub member_frames: u64,
    /// Frames refused on bridge sessions because they carried something other than desired state.
    pub refused_bridge: u64,
    /// Bridge sessions opened (either side) with bridges of other zones.
    pub bridge_sessions: u64,
    /// Anti-entropy exchanges this node started as an elected bridge.
    pub bridge_syncs: u64,
    /// New entries or versions received over bridge sessions.
    pub bridge_entries: u64,
    /// Frames this relay forwarded.
    pub relayed_frames: u64,
    /// Relayed frames refused, by `RelayRefusal` (not relay, loop, sender, destination, rate).
    pub relay_refused: [u64; 5],
    /// Frames a box behind NAT sent only to keep a relay's mapping open.
    pub relay_keepalives: u64,
    /// Frames this node sent to a box behind NAT through one of its relays.
    pub frames_via_relay: u64,
    /// 1 once this box concluded by itself that it is behind NAT (`node::natobs`).
    pub nat_detected: u64,
}

impl Counters {
    /// Refused frames by reason, named and ordered as `Refusal::NAMES`.
    pub fn refused_by_reason(&self) -> [(&'static str, u64); 7] {
        let counts = [
            self.refused_frame,
            self.refused_zone,
            self.refused_body,
            self.refused_entry,
            self.refused_crypto,
            self.refused_bridge,
            self.relay_refused.iter().sum(),
        ];
        core::array::from_fn(|i| (Refusal::NAMES[i], counts[i]))
    }
}

/// Why a node could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    NodeSeed,
    Cert(CertError),
}

/// Why an operator's submission was refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    Store(StoreError),
    Signature(EntrySignatureError),
}

impl SubmitError {
    pub fn message(self) -> &'static str {
        match self {
            SubmitError::Store(e) => e.message(),
            SubmitError::Signature(EntrySignatureError::UnknownKey { .. }) => {
                "entry is signed by a key this cluster does not trust: sign it with the operator key"
            }
            SubmitError::Signature(EntrySignatureError::BadSignature) => {
                "entry signature does not verify: it was altered after signing"
            }
        }
    }
}

/// What a node is told at boot.
#[derive(Clone, Debug)]
pub struct NodeConfig<'a> {
    /// The node's Ed25519 seed (its identity; the node id derives from its public key).
    pub node_seed: [u8; 32],
    /// The operator's certificate for this node: zone, arch and GPU come from it.
    pub cert: &'a [u8],
    /// The cluster's root of trust.
    pub operator: PublicKey,
    /// The RevocationBlock this node last knew (0 for a new cluster).
    pub revocation_block: u64,
    /// Seeds the PRNG that picks peers and jitters timers (not keys).
    pub seed: u64,
    pub join: &'a [PeerAddr],
    /// Log size that triggers a checkpoint: `WAL_CHECKPOINT_BYTES`, or less to test compaction.
    pub wal_checkpoint_bytes: u64,
    /// Rates and timeouts of membership and gossip (`--profile`; `Profile::LAN` unless told).
    pub profile: Profile,
    /// `--bridge-seed`: bridge-capable boxes of other zones an elected bridge contacts first
    /// (at most `BRIDGE_SEEDS_MAX`; the rest are ignored). Empty for a box that never bridges.
    pub bridge_seeds: &'a [PeerAddr],
    /// `--relay`: forward sealed frames for boxes behind NAT (docs/protocol.md section 12).
    pub relay: bool,
    /// `--behind-nat`: no peer reaches this box directly; it keeps sessions with relays.
    pub behind_nat: bool,
    /// This box's own addresses (its interfaces' IPs, with its bound port): a box that members
    /// see elsewhere finds out it is behind NAT (`node::natobs`). Empty: it never concludes so
    /// (`--nat no`). At most `OWN_ADDRS_MAX` count.
    pub own_addrs: &'a [PeerAddr],
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    target: u64,
    seq: u32,
    sent_at: Instant,
    /// When a probe not acked by then is a miss (`Profile::judge_after_ms`, stretched by local
    /// health as it stood at the ping): never after the next probe starts.
    judge_at: Instant,
    indirect_sent: bool,
    acked: bool,
    /// Helpers asked to ping the target (`Node::send_indirect`), and which of them nacked
    /// (`Message::Nack`: the target did not answer them either), bit i for `helpers[i]`.
    helpers: [Option<u64>; INDIRECT_PROBES],
    nacked: u8,
}

// `Probe::nacked` has a bit per helper.
const _: () = assert!(INDIRECT_PROBES <= u8::BITS as usize);

impl Probe {
    /// Helpers asked (members), and the nacks missing from them.
    fn helpers_and_unnacked(&self) -> (u32, u32) {
        let asked = self.helpers.iter().flatten().count() as u32;
        (asked, asked.saturating_sub(self.nacked.count_ones()))
    }
}

#[derive(Clone, Copy, Debug)]
struct Relay {
    seq: u32,
    origin: PeerAddr,
    origin_seq: u32,
    /// When the origin is told the target did not answer (`Message::Nack`), unless it did.
    nack_at: Option<Instant>,
    expires: Instant,
}

pub struct Node {
    id: u64,
    meta: MemberMeta,
    /// Every rate and timeout of probes, gossip and member sync.
    profile: Profile,
    incarnation: u32,
    rng: Prng,
    store: Store<SERVICES_MAX, ARENA_BYTES>,
    members: Members,
    rumors: RumorQueue,
    join: Vec<PeerAddr, JOIN_MAX>,
    /// Join addresses that have answered; the others are retried, so a node that first met only
    /// another newcomer still reaches the cluster.
    join_heard: [bool; JOIN_MAX],
    out: Transport,
    /// This node's key, kept to pair it with a new certificate after a rotation.
    node_seed: [u8; 32],
    /// The operator-signed record of the current RevocationBlock (empty at height 0).
    revocation: Vec<u8, REVOCATION_BYTES_MAX>,
    seq: u32,
    probe: Option<Probe>,
    /// A member picked for a probe with no session to it: the handshake started then is the
    /// probe, judged when it times out (`Node::judge_handshake_probe`).
    handshake_probe: Option<(u64, Instant)>,
    /// A member was declared dead, here or by news just heard: the next tick pushes the news at
    /// once rather than at the next gossip round ([`Node::handle_tick`]).
    deaths_to_push: bool,
    /// Lifeguard's local health score, 0 (healthy) to `AWARENESS_MAX`: raised by this node's
    /// own missed acks and refutations, lowered by acks. See `Node::awareness_scale`.
    health: u8,
    /// The share of this node's probes of live members that went unacked, in millionths: a moving
    /// average over about the last `MISS_AVERAGE` probes. It sets a floor under `health`.
    miss_ppm: u32,
    relays: Vec<Relay, RELAYS_MAX>,
    /// What this node forwards as a `--relay`, and at what rate.
    forwarder: relay::Forwarder,
    /// Seeds and the directory of other zones' bridges (`node::bridge`).
    bridges: bridge::Bridges,
    next_probe: Instant,
    next_gossip: Instant,
    next_member_sync: Instant,
    next_join: Instant,
    next_dead_probe: Instant,
    next_ticket: u64,
    /// Bytes in the log since the last checkpoint, as this node appended them.
    wal_bytes: u64,
    checkpoint_requested: bool,
    wal_checkpoint_bytes: u64,
    /// After a truncated log, sync with random peers even where roots seem to agree.
    full_sync_rounds: u8,
    /// This node's own status, and the resends of its last push still due.
    status: Status,
    status_resends: u8,
    next_status_resend: Instant,
    /// A change of the status not pushed yet (it waits for `status_push_due`).
    status_unpushed: bool,
    /// Newer member statuses stored, wrapping (`Node::statuses_heard`).
    statuses_heard: u32,
    /// The pushes of changes as a virtual schedule (GCRA): when the next push would be due were
    /// pushes spaced by `STATUS_PUSH_INTERVAL_MS`; a push may go `STATUS_PUSH_BURST - 1`
    /// intervals ahead of it.
    status_push_due: Instant,
    /// Which entries are placed here, and the inputs that answer was computed from
    /// (`Node::placed_here`): a `Cell` because reading the answer is `&self`.
    placed: Cell<placed::PlacedCache>,
    /// The last answer of `Node::placed_digests`, with its inputs.
    digests: Cell<Option<(placed::Inputs, PlacedDigests)>>,
    /// The members' part of the candidates' fingerprint, and the member table's generation it
    /// was computed at (`node::placed`).
    others_print: Cell<Option<(u64, u64)>>,
    /// Recent answers of `Node::placement`, with their inputs (`node::placed`).
    placements: [Cell<placed::KeptPlacement>; PLACEMENTS_KEPT],
    /// Whether members see this box at its own addresses (`node::natobs`).
    nat_watch: natobs::NatWatch,
}

// The budget in `config` is a sum of estimates; the real node must fit inside it, so a table that
// grows past its line there fails the build instead of quietly eating the margin.
const _: () = assert!(core::mem::size_of::<Node>() <= BUDGET_BYTES);
const _: () = assert!(core::mem::size_of::<Node>() <= NODE_BYTES_MAX);

mod bridge;
pub use bridge::{bridge_score, BridgePeer};
mod natobs;
mod pages;
mod placed;
mod probe;
pub mod relay;
mod status;
pub use placed::PlacementInputs;
pub use status::PlacedDigests;
mod sync;
mod transport;

impl Node {
    /// Refuses a node seed or certificate that cannot work: the operator must fix the config.
    pub fn new(config: &NodeConfig<'_>, now: Instant) -> Result<Node, ConfigError> {
        let (creds, trust) = credentials(config)?;
        let cert = *creds.cert();
        let id = creds.node_id();
        let meta = MemberMeta {
            relay: config.relay,
            nat: config.behind_nat,
            ..meta_of(&cert)
        };
        let mut join = Vec::new();
        for a in config.join.iter().take(JOIN_MAX) {
            join.push(*a).expect("taken at most JOIN_MAX");
        }
        let mut rng = Prng::new(config.seed);
        let profile = config.profile;
        // Spread timers so nodes booted together do not probe in lockstep.
        let jitter = rng.below(profile.gossip_interval_ms);
        Ok(Node {
            id,
            meta,
            profile,
            // Relay and NAT are configuration, which the handshake's record (incarnation 0, from
            // the certificate) cannot know: a box with either starts one above, so its own record
            // wins everywhere, second-hand copies included.
            incarnation: u32::from(config.relay || config.behind_nat),
            rng,
            store: Store::new(),
            members: Members::new(profile),
            rumors: RumorQueue::new(),
            join,
            join_heard: [false; JOIN_MAX],
            out: Transport::new(id, creds, trust, now),
            node_seed: config.node_seed,
            revocation: Vec::new(),
            seq: 0,
            probe: None,
            handshake_probe: None,
            deaths_to_push: false,
            health: 0,
            miss_ppm: 0,
            relays: Vec::new(),
            forwarder: relay::Forwarder::new(now),
            bridges: bridge::Bridges::new(config.bridge_seeds),
            next_probe: now.add_ms(jitter),
            next_gossip: now.add_ms(jitter),
            next_member_sync: now.add_ms(profile.member_sync_interval_ms + jitter),
            next_join: now,
            next_dead_probe: now.add_ms(profile.dead_probe_interval_ms + jitter),
            next_ticket: 1,
            wal_bytes: 0,
            checkpoint_requested: false,
            wal_checkpoint_bytes: config.wal_checkpoint_bytes,
            full_sync_rounds: 0,
            status: Status::default(),
            status_resends: 0,
            next_status_resend: now,
            status_unpushed: false,
            statuses_heard: 0,
            status_push_due: Instant(0),
            placed: Cell::new(placed::PlacedCache::EMPTY),
            digests: Cell::new(None),
            others_print: Cell::new(None),
            placements: [const { Cell::new(placed::KeptPlacement::EMPTY) }; PLACEMENTS_KEPT],
            nat_watch: natobs::NatWatch::new(config.own_addrs),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Checks peers' certificate signatures with `check` ([`Credentials::set_cert_check`]).
    pub fn set_cert_check(&mut self, check: crate::crypto::CertCheck) {
        self.out.creds.set_cert_check(check);
    }

    /// The profile this node was started with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    pub fn state_hash(&self) -> u64 {
        self.store.state_hash()
    }

    pub fn store(&self) -> &Store<SERVICES_MAX, ARENA_BYTES> {
        &self.store
    }

    pub fn members(&self) -> &[Member] {
        self.members.list()
    }

    /// Sends `request` to member `to` (`Executor::poll_build_request` chose it); nothing if it
    /// is not a live member. A lost frame is made good by the executor asking again.
    pub fn send_build_request(&mut self, to: u64, request: BuildRequest, sink: &mut impl Sink) {
        self.send_to_member(to, Message::BuildRequest(request), sink);
    }

    /// Tells member `to` that this builder refused its `request` because its own last build of
    /// that version failed (`Executor::take_build_failed` chose it); nothing if `to` is not a
    /// live member. A lost frame is made good by the requester asking again.
    pub fn send_build_failed(&mut self, to: u64, request: BuildRequest, sink: &mut impl Sink) {
        self.send_to_member(to, Message::BuildFailed(request), sink);
    }

    fn send_to_member(&mut self, to: u64, msg: Message<'_>, sink: &mut impl Sink) {
        let live = self.members.get(to).filter(|m| m.is_live());
        if let Some(addr) = live.map(|m| m.addr) {
            self.out.send(sink, addr, self.store.root(), msg);
        }
    }

    pub fn counters(&self) -> Counters {
        self.out.counters
    }

    pub fn rumors_dropped(&self) -> u64 {
        self.rumors.dropped_frames
    }

    /// What placement knows of this node: arch, zone and GPU, from its certificate.
    pub fn meta(&self) -> MemberMeta {
        self.meta
    }

    /// The members this node's placement ranks: itself, always, and every member it does not
    /// believe dead. A suspect still counts, so a suspicion alone never moves a service (the
    /// trade-off is in `place`).
    pub fn placement_candidates(&self) -> impl Iterator<Item = Candidate> + Clone + '_ {
        let me = Candidate {
            id: self.id,
            meta: self.meta,
        };
        core::iter::once(me).chain(self.live_candidates())
    }

    fn live_candidates(&self) -> impl Iterator<Item = Candidate> + Clone + '_ {
        let live = self.members.list().iter().filter(|m| m.is_live());
        live.map(|m| Candidate {
            id: m.id,
            meta: m.meta,
        })
    }

    fn me(&self) -> MemberUpdate {
        MemberUpdate {
            id: self.id,
            incarnation: self.incarnation,
            state: MemberState::Alive,
            addr: PeerAddr::default(),
            meta: self.meta,
        }
    }

    /// Applies an operator's entry (a deploy or a tombstone) and starts spreading it.
    /// Refusal changes nothing; `Stale` means the node already holds this or a newer version.
    /// A new version is appended to the log; acknowledge the operator only on
    /// `Event::Durable` for the returned ticket.
    pub fn submit(
        &mut self,
        _now: Instant,
        entry: &[u8],
        sink: &mut impl Sink,
    ) -> Result<Submitted, SubmitError> {
        let decoded = Entry::decode(entry).map_err(|e| SubmitError::Store(StoreError::Entry(e)))?;
        sink.verify_entry(&self.out.trust.operator, &decoded)
            .map_err(SubmitError::Signature)?;
        let key_hash = key_hash(decoded.body.name);
        let merge = self
            .merge_store(entry, &decoded)
            .map_err(SubmitError::Store)?;
        if merge == Merge::Stale {
            return Ok(Submitted {
                merge,
                ticket: None,
            });
        }
        assert!(
            self.store.contains_exact(key_hash, entry),
            "an accepted entry is the one stored"
        );
        self.rumors.push(key_hash, entry.len());
        sink.event(Event::EntryChanged { key_hash });
        Ok(Submitted {
            merge,
            ticket: Some(self.persist(entry, sink)),
        })
    }

    /// Replays one entry from this node's own log or snapshot at boot: stored, not re-logged,
    /// not gossiped (anti-entropy spreads whatever peers lack).
    pub fn restore(&mut self, entry: &[u8]) -> Result<Merge, StoreError> {
        let decoded = Entry::decode(entry).map_err(StoreError::Entry)?;
        self.merge_store(entry, &decoded)
    }

    pub fn handle_storage(&mut self, _now: Instant, done: Storage, sink: &mut impl Sink) {
        match done {
            Storage::Durable { ticket } => {
                assert!(
                    ticket < self.next_ticket,
                    "completion for an append never requested"
                );
                sink.event(Event::Durable { ticket });
            }
            Storage::Checkpointed => {
                assert!(
                    self.checkpoint_requested,
                    "checkpoint completion without a request"
                );
                self.checkpoint_requested = false;
                self.wal_bytes = 0;
            }
            Storage::Recovered {
                wal_bytes,
                truncated,
            } => {
                self.wal_bytes = wal_bytes;
                if truncated {
                    self.full_sync_rounds = FULL_SYNC_ROUNDS;
                }
            }
            Storage::Unlogged => {
                if !self.checkpoint_requested {
                    self.checkpoint_requested = true;
                    sink.checkpoint();
                }
                assert!(self.checkpoint_requested);
            }
        }
    }

    fn persist(&mut self, entry: &[u8], sink: &mut impl Sink) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        sink.append(entry, ticket);
        self.wal_bytes += (WAL_HEADER_BYTES + entry.len()) as u64;
        if !self.checkpoint_requested && checkpoint_due(self.wal_bytes, self.wal_checkpoint_bytes) {
            self.checkpoint_requested = true;
            sink.checkpoint();
        }
        // Tickets only grow, so the host's completions can be checked against them, and a log
        // past its bound always has a checkpoint on the way.
        assert!(ticket < self.next_ticket);
        assert!(
            self.checkpoint_requested || !checkpoint_due(self.wal_bytes, self.wal_checkpoint_bytes)
        );
        ticket
    }

    /// Keeps at least `SESSIONS_WARM` sessions open, one new handshake per tick, so rumors
    /// always have sealed paths to enough random peers instead of waiting for handshakes.
    fn warm_sessions(&mut self, sink: &mut impl Sink) {
        if self.out.links.len() >= SESSIONS_WARM {
            return;
        }
        let cold = self
            .members
            .list()
            .iter()
            .filter(|m| m.is_live() && !self.out.has_link(m.addr));
        let count = cold.clone().count();
        if count == 0 {
            return;
        }
        let nth = self.rng.below(count as u64) as usize;
        let addr = cold.clone().nth(nth).expect("counted").addr;
        self.out.ensure_handshake(sink, addr);
    }

    pub fn handle_tick(&mut self, now: Instant, sink: &mut impl Sink) {
        let scale = self.awareness_scale();
        let (out, deaths) = (&mut self.out, &mut self.deaths_to_push);
        self.members.expire(now, scale, |id| {
            out.forget_peer(id);
            sink.event(Event::MemberDead(id));
            *deaths = true;
        });
        // A death goes on at once, each box that learns it passing it to `GOSSIP_FANOUT` more:
        // the cluster hears it within a few network hops, not a gossip round per hop, and stops
        // placing services on the dead box that much sooner. A burst of deaths (a partition)
        // pushes once a tick; at rest nothing dies and nothing more is sent.
        if core::mem::take(&mut self.deaths_to_push) && self.members.pending_len() > 0 {
            self.out.counters.death_pushes += 1;
            self.gossip_members(sink);
        }
        self.send_nacks(now, sink);
        self.relays.retain(|r| r.expires > now);
        self.out.now = now;
        self.out.handle_tick(sink);
        self.warm_sessions(sink);
        self.keep_relays_open(now, sink);
        self.tick_probe(now, sink);
        if now >= self.next_gossip {
            self.next_gossip = now.add_ms(self.profile.gossip_interval_ms);
            self.gossip_round(sink);
            self.update_routes(sink);
        }
        if now >= self.next_member_sync {
            self.next_member_sync = now.add_ms(self.profile.member_sync_interval_ms);
            // A peer with a session: a page to any other would be dropped for its handshake.
            let peer = self.random_live_peers::<1>(false).first().copied();
            let peer = peer.and_then(|a| self.members.by_addr(a));
            if let Some(peer) = peer.map(|m| m.id) {
                self.send_sync_page(sink, peer);
                self.status_to_member(sink, peer);
            }
        }
        self.tick_status(now, sink);
        if now >= self.next_dead_probe {
            self.next_dead_probe = now.add_ms(self.profile.dead_probe_interval_ms);
            self.probe_the_dead(sink);
        }
        if now >= self.next_join {
            self.next_join = now.add_ms(JOIN_RETRY_MS);
            let alone = self.members.live_count() == 0;
            for i in 0..self.join.len() {
                if alone || !self.join_heard[i] {
                    let to = self.join[i];
                    self.send_ping(sink, to, 0, None);
                }
            }
        }
    }

    /// Drops join address `addr`, this node's own (every box of a cluster is often given the same
    /// list, itself included): retried, it would start a handshake with itself every second,
    /// and repeat its Hello every `HANDSHAKE_RESEND_MS`, about ten frames a second for nothing.
    /// Every copy goes: the host may hand the same address twice.
    fn forget_join(&mut self, addr: PeerAddr) {
        while let Some(i) = self.join.iter().position(|&a| a == addr) {
            self.join.remove(i);
            self.join_heard.copy_within(i + 1.., i);
            self.join_heard[JOIN_MAX - 1] = false;
        }
    }

    /// Handles one datagram from `from`. Any bytes are safe: bad frames are counted and dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: PeerAddr,
        bytes: &[u8],
        sink: &mut impl Sink,
    ) {
        self.out.now = now;
        self.out.counters.frames_in += 1;
        let frame = match Frame::new_checked(bytes) {
            Ok(f) => f,
            Err(e) => return self.refuse(sink, Refusal::Frame(e)),
        };
        if frame.zone() != self.meta.zone && !self.bridges_to(frame.zone()) {
            return self.refuse(sink, Refusal::WrongZone);
        }
        let Some(from) = self.source_of(now, from, &frame, sink) else {
            return;
        };
        if frame.sender() == self.id {
            if frame.kind() == Kind::Hello && self.out.own_hello_returned(from, frame.body()) {
                self.forget_join(from);
            }
            return;
        }
        if frame.kind() != Kind::Data {
            return self.handle_handshake_frame(now, from, &frame, sink);
        }
        let mut plain = [0u8; BODY_BYTES_MAX];
        let known = self.join.contains(&from)
            || self.members.by_addr(from).is_some()
            || self.bridge_known(from);
        let opened = match self.out.open(sink, from, known, &frame, &mut plain) {
            Ok(o) => o,
            Err(TransportDrop::Crypto(r)) => return self.refuse(sink, Refusal::Crypto(r)),
            Err(TransportDrop::Padding) => return self.refuse(sink, Refusal::Body),
        };
        let Some(body) = Body::decode(&plain[..opened.len]) else {
            return self.refuse(sink, Refusal::Body);
        };
        self.out.counters.frames_accepted += 1;
        let sender = opened.sender;
        if opened.zone != self.meta.zone {
            self.hint_revocation(sink, from, opened.revocation_block);
            let peer = (sender, opened.zone, body.root.0);
            return self.dispatch_bridge(from, peer, body.msg, sink);
        }
        self.heard_from(sender, from, body.root.0);
        // The first word from a join address: trade whole tables with it (memberlist's join),
        // so this node lists the cluster after one exchange. Every copy of the address is heard:
        // the host may hand one twice, and a copy left unheard was pinged every second for good.
        let mut first_word = false;
        for (a, heard) in self.join.iter().zip(self.join_heard.iter_mut()) {
            first_word |= *a == from && !core::mem::replace(heard, true);
        }
        if first_word {
            self.send_table(sink, sender, PageKind::Pull);
        }
        self.hint_revocation(sink, from, opened.revocation_block);
        let direct = frame.relay_to().is_none();
        if direct {
            self.tell_observed(sink, from, sender);
        }
        self.out.answering = direct.then_some(from);
        self.dispatch(now, from, sender, body.msg, sink);
        self.out.answering = None;
    }

    /// A handshake frame: a completed handshake makes the peer a member (or, from another zone,
    /// a bridge in the directory).
    fn handle_handshake_frame(
        &mut self,
        now: Instant,
        from: PeerAddr,
        frame: &Frame<'_>,
        sink: &mut impl Sink,
    ) {
        let Some(done) = self.out.handle_handshake(sink, from, frame) else {
            return;
        };
        if done.peer.cert.zone != self.meta.zone {
            // A bridge of another zone: a directory record, never a member record.
            let cert = done.peer.cert;
            return self.bridge_established(sink, from, &cert, done.responder);
        }
        // A completed handshake proves the peer's identity and certificate: it is a member, at
        // its lowest incarnation until its own frames say more.
        let peer = done.peer;
        let u = MemberUpdate {
            id: peer.node_id,
            incarnation: 0,
            state: MemberState::Alive,
            addr: from,
            meta: meta_of(&peer.cert),
        };
        self.apply_member(now, &u, peer.node_id, sink);
        if done.responder {
            self.confirm_session(sink, from, peer.node_id);
        }
    }

    /// What an authenticated frame from a member says of it: the root of its desired state, and
    /// for a box behind NAT, where it is. Its NAT may give it a public port per peer, and a
    /// record first heard second-hand names another member's (`Members::apply`). (A relayed
    /// frame's `from` is the record's address already.)
    fn heard_from(&mut self, sender: u64, from: PeerAddr, root: u64) {
        if let Some(m) = self.members.get_mut(sender) {
            m.root = root;
            if m.meta.nat {
                m.addr = from;
            }
        }
    }

    /// A peer whose header shows a lower RevocationBlock missed a rotation: send it the record
    /// (it then drops sessions it must not keep).
    fn hint_revocation(&mut self, sink: &mut impl Sink, to: PeerAddr, theirs: u64) {
        if theirs < self.out.trust.revocation_block {
            let (out, record) = (&mut self.out, &self.revocation);
            let msg = Message::Revocation { signed: record };
            out.send(sink, to, self.store.root(), msg);
        }
    }

    /// Raises the RevocationBlock from an operator-signed record (from the API or a peer).
    /// Returns the new height; a record at or below the current height changes nothing.
    pub fn handle_revocation(
        &mut self,
        signed: &[u8],
        sink: &mut impl Sink,
    ) -> Result<u64, RevocationError> {
        let height = Revocation::decode(signed)?.verify(&self.out.trust.operator)?;
        if height > self.out.trust.revocation_block {
            self.out.revoke_below(height);
            self.revocation = Vec::from_slice(signed).expect("decoded records fit");
            sink.event(Event::Revoked { height });
        }
        Ok(self.out.trust.revocation_block)
    }

    /// Answers the Open of a tunnel to this box's API (`myco proxy`): the client's access
    /// credential is checked against this cluster's operator key, the RevocationBlock this node
    /// holds now, the Unix time `now_s` and this node's id. The host keeps the responder until
    /// the client's Prove, which `finish_tunnel` checks. `eph_secret` and `challenge` come from
    /// the OS random source.
    pub fn answer_tunnel(
        &self,
        open: &[u8],
        now_s: u64,
        eph_secret: [u8; 32],
        challenge: [u8; 32],
    ) -> Result<(TunnelResponder, TunnelMsg), TunnelError> {
        let (creds, trust) = (&self.out.creds, &self.out.trust);
        TunnelResponder::handle_open(open, creds, trust, now_s, eph_secret, challenge)
    }

    /// Checks a tunnel's Prove under the trust of now (a revocation since the Open counts).
    pub fn finish_tunnel(
        &self,
        responder: &TunnelResponder,
        prove: &[u8],
        now_s: u64,
    ) -> Result<TunnelSession, TunnelError> {
        responder.handle_prove(prove, &self.out.trust, now_s)
    }

    /// Members other than this box that are not dead.
    pub fn live_peers(&self) -> usize {
        self.members.list().iter().filter(|m| m.is_live()).count()
    }

    /// What `executor::reconcile::mode` counts to tell a box cut off from every peer: its live
    /// members, and the bridges of other zones it heard from directly of late. A box left alone
    /// in its zone (the other boxes of a small zone dead) that still hears other zones is not cut
    /// off: its zone-mates are gone, and it must run what placement now gives it.
    pub fn peers_in_reach(&self) -> usize {
        self.live_peers() + self.bridge_peers().iter().filter(|p| p.direct).count()
    }

    /// The node key member `id`'s certificate certifies, as the handshake of the session with it
    /// verified: `None` without a session (never handshaken, or revoked, since a revocation ends
    /// the sessions of the certificates below it). A peer's cache is trusted by this key only.
    pub fn certified_key(&self, id: u64) -> Option<&[u8; 32]> {
        let link = self.out.links.iter().find(|l| l.peer == id)?;
        assert!(link.issued_at >= self.out.trust.revocation_block);
        Some(&link.node_pk)
    }

    /// Whether this node's own certificate still stands under the current RevocationBlock: the
    /// same rule `new` and `install_cert` apply, for a host that raised the block from a saved
    /// record after boot.
    pub fn check_own_cert(&self) -> Result<(), CertError> {
        let issued_at = self.out.creds.cert().issued_at;
        let revocation_block = self.out.trust.revocation_block;
        if issued_at < revocation_block {
            return Err(CertError::Revoked {
                issued_at,
                revocation_block,
            });
        }
        Ok(())
    }

    /// Installs a new certificate for this node's key (after a rotation).
    pub fn install_cert(&mut self, cert: &[u8]) -> Result<(), CertError> {
        let key = SigningKey::from_seed(self.node_seed).expect("checked at boot");
        let creds = Credentials::new(key, cert, &self.out.trust.operator)?;
        if creds.cert().issued_at < self.out.trust.revocation_block {
            return Err(CertError::Revoked {
                issued_at: creds.cert().issued_at,
                revocation_block: self.out.trust.revocation_block,
            });
        }
        if creds.node_id() != self.id || creds.cert().zone != self.meta.zone {
            return Err(CertError::KeyMismatch);
        }
        self.out.install_credentials(creds);
        Ok(())
    }

    /// The operator-signed record of the current RevocationBlock, empty at height 0: the host
    /// keeps it on disk so a restarted node still refuses what it refused before.
    pub fn revocation_record(&self) -> &[u8] {
        &self.revocation
    }

    /// Tells every live member this node is leaving (a clean stop): its own record, dead at its
    /// current incarnation, which wins over its alive record, so peers move its services at once
    /// instead of waiting for SWIM to suspect it and time out. Best effort: a lost frame leaves it
    /// to failure detection. A restart refutes the death with a higher incarnation.
    pub fn leave(&mut self, sink: &mut impl Sink) {
        let dead = MemberUpdate {
            state: MemberState::Dead,
            ..self.me()
        };
        for i in 0..self.members.list().len() {
            let m = &self.members.list()[i];
            if m.is_live() {
                let to = m.addr;
                self.send_record(sink, to, dead);
            }
        }
    }

    /// This node's own membership record, as peers see it.
    pub fn own_record(&self) -> MemberUpdate {
        self.me()
    }

    pub fn link_count(&self) -> usize {
        self.out.links.len()
    }

    pub fn revocation_block(&self) -> u64 {
        self.out.trust.revocation_block
    }

    /// Refusals by the security layer, indexed by `crypto::Refusal::index()`.
    pub fn crypto_refusals(&self) -> [u64; 8] {
        self.out.refusals
    }

    fn refuse(&mut self, sink: &mut impl Sink, why: Refusal) {
        let c = &mut self.out.counters;
        match why {
            Refusal::Frame(_) => c.refused_frame += 1,
            Refusal::WrongZone => c.refused_zone += 1,
            Refusal::Body => c.refused_body += 1,
            Refusal::Entry(_) => c.refused_entry += 1,
            Refusal::Crypto(r) => {
                c.refused_crypto += 1;
                self.out.refuse(r);
            }
            Refusal::Bridge => c.refused_bridge += 1,
            // Counted by reason in `relay_refused` where it is decided.
            Refusal::Relay(_) => {}
        }
        sink.event(Event::Refused(why));
    }

    /// Acks a ping (with what we hold of the sender's status), sends the sender our status if it
    /// holds an older one, and the member table to a member that just joined.
    fn answer_ping(
        &mut self,
        sink: &mut impl Sink,
        from: PeerAddr,
        sender: u64,
        seq: u32,
        status_seen: u32,
        joined: bool,
    ) {
        let updates = self.piggyback_for(sender);
        let ack = Message::Ack {
            seq,
            me: self.me(),
            updates,
            status_seen: self.status_seen(from),
        };
        self.out.send(sink, from, self.store.root(), ack);
        self.handle_status_seen(sink, from, status_seen);
        if joined {
            self.send_table(sink, sender, PageKind::Push);
        }
    }

    /// The first sealed frame of a session this node answered: an ack to no ping (sequence 0, as
    /// the answers to join pings carry) with this node's record and piggyback. Until a sealed
    /// frame from this side opens, the initiator repeats its Finish every `HANDSHAKE_RESEND_MS`
    /// for up to `HANDSHAKE_TIMEOUT_MS`; waiting for gossip to pick the peer cost about 20
    /// frames per handshake, the bulk of a fresh cluster's traffic while its sessions open.
    fn confirm_session(&mut self, sink: &mut impl Sink, to: PeerAddr, peer: u64) {
        let ack = Message::Ack {
            seq: 0,
            me: self.me(),
            updates: self.piggyback_for(peer),
            status_seen: self.status_seen(to),
        };
        self.out.send(sink, to, self.store.root(), ack);
    }

    /// Probes `target_addr` for the member at `from` that asked (an indirect probe).
    fn relay_ping(
        &mut self,
        now: Instant,
        sink: &mut impl Sink,
        from: PeerAddr,
        seq: u32,
        target: u64,
        target_addr: PeerAddr,
    ) {
        self.seq = self.seq.wrapping_add(1);
        let relay = Relay {
            seq: self.seq,
            origin: from,
            origin_seq: seq,
            nack_at: Some(now.add_ms(self.profile.probe_timeout_ms)),
            expires: now.add_ms(self.profile.probe_interval_ms),
        };
        // A box behind NAT may have another public address for each peer (a port per peer):
        // the origin's view of it leads nowhere from here, this node's own does.
        let target_addr = self
            .members
            .get(target)
            .filter(|m| m.meta.nat)
            .map_or(target_addr, |m| m.addr);
        // A full relay table refuses new relays; the origin's other helpers still try.
        if self.relays.push(relay).is_ok() {
            self.send_ping(sink, target_addr, self.seq, Some(target));
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: PeerAddr,
        sender: u64,
        msg: Message<'_>,
        sink: &mut impl Sink,
    ) {
        match msg {
            Message::Ping {
                seq,
                me,
                updates,
                status_seen,
            } => {
                let joined = self.learn(now, from, sender, &me, &updates, sink);
                self.answer_ping(sink, from, sender, seq, status_seen, joined);
            }
            Message::Ack {
                seq,
                me,
                updates,
                status_seen,
            } => {
                self.learn(now, from, sender, &me, &updates, sink);
                self.correct_teller(sink, from, &updates);
                self.handle_status_seen(sink, from, status_seen);
                self.handle_ack(sink, seq);
            }
            Message::PingReq {
                seq,
                target,
                target_addr,
            } => self.relay_ping(now, sink, from, seq, target, target_addr),
            Message::Members { list } => {
                for u in &list {
                    self.apply_member(now, u, sender, sink);
                }
                self.correct_teller(sink, from, &list);
            }
            Message::Entries { list } => {
                for bytes in &list {
                    self.merge_entry(bytes, sink);
                }
            }
            Message::SyncBuckets { list } => self.answer_buckets(sink, from, &list),
            Message::SyncKeys {
                from: lo,
                to: hi,
                buckets,
                keys,
            } => self.answer_keys(sink, from, (lo.0, hi.0), &buckets, &keys),
            Message::Want { keys } => {
                let keys = keys.iter().map(|d| d.0);
                self.send_entries(sink, from, keys);
            }
            Message::Revocation { signed } => {
                if let Err(e) = self.handle_revocation(signed, sink) {
                    self.refuse(sink, Refusal::Crypto(e.refusal()));
                }
            }
            Message::Status(status) => self.handle_status(sender, status),
            Message::MemberPage { kind, live, list } => {
                self.handle_page(now, sender, kind, live, &list, sink);
            }
            Message::BuildRequest(request) => sink.event(Event::BuildRequest {
                from: sender,
                request,
            }),
            Message::BuildFailed(request) => sink.event(Event::BuildFailed {
                from: sender,
                request,
            }),
            Message::Observed { addr } => self.observed(sender, addr, sink),
            Message::Nack { seq } => self.handle_nack(sender, seq),
            // A directory means something only on a bridge session (`dispatch_bridge` handles it
            // before this); from a member of this zone it is ignored.
            Message::Bridges { .. } => {}
        }
    }
}

/// What a certificate says about its box, as member records carry it.
fn meta_of(c: &CertBody) -> MemberMeta {
    MemberMeta {
        arch: c.arch,
        zone: c.zone,
        gpu: c.gpu,
        bridge: c.bridge.is_some(),
        // Configuration, not certificate: a member's own pings say them (`Node::learn`).
        relay: false,
        nat: false,
    }
}

/// This node's credentials from its seed and certificate, and the trust it checks peers
/// against: refused for a bad seed, a bad certificate or one the revocation block revokes.
fn credentials(config: &NodeConfig<'_>) -> Result<(Credentials, Trust), ConfigError> {
    let key = SigningKey::from_seed(config.node_seed).map_err(|_| ConfigError::NodeSeed)?;
    let creds = Credentials::new(key, config.cert, &config.operator).map_err(ConfigError::Cert)?;
    let cert = *creds.cert();
    if cert.issued_at < config.revocation_block {
        return Err(ConfigError::Cert(CertError::Revoked {
            issued_at: cert.issued_at,
            revocation_block: config.revocation_block,
        }));
    }
    Ok((
        creds,
        Trust {
            operator: config.operator,
            revocation_block: config.revocation_block,
            zone: cert.zone,
        },
    ))
}

#[cfg(test)]
pub(crate) mod tests;
