//! Gossip messages: the postcard body of a `Data` frame.
//!
//! Every variant's maximal encoding fits `BODY_BYTES_MAX` (a test builds each at its capacity).
//! Digests and key hashes travel as fixed 8-byte values, not varints: they are uniformly random, so
//! a varint would cost 10 bytes each.

use crate::config::{
    BODY_BYTES_MAX, BUCKETS_PER_GROUP, MEMBERS_PER_FRAME, MEMBER_PAGE_RECORDS,
    MEMBER_UPDATES_PER_FRAME, OFFER_KEYS_MAX, RUMOR_KEYS_PER_FRAME, STATUS_UNITS_MAX,
    SYNC_GROUPS_PER_FRAME, SYNC_KEYS_PER_FRAME, WANT_PER_FRAME,
};
use crate::schema::addr::PeerAddr;
use crate::schema::entry::Arch;
use heapless::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 64-bit digest or key hash, encoded as 8 little-endian bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub u64);

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.to_le_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(d).map(|b| Digest(u64::from_le_bytes(b)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
}

/// What placement and bridge election need to know about a box, from its certificate.
///
/// On the wire: `arch`, `zone`, then one flags byte, bit 0 `gpu` and bit 1 `bridge` (the box's
/// certificate has a bridge scope). The byte was a bool before bridges, so an older node reads a
/// plain box's record as before and refuses only a bridge-capable box's; any other bit is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "MetaWire", into = "MetaWire")]
pub struct MemberMeta {
    pub arch: Arch,
    pub zone: u8,
    pub gpu: bool,
    pub bridge: bool,
    /// `--relay`: forwards sealed frames to boxes behind NAT that hold a session with it.
    pub relay: bool,
    /// `--behind-nat`: no peer reaches it directly; peers send to it through its relays.
    pub nat: bool,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
struct MetaWire(Arch, u8, MetaFlags);

/// The flags byte; decoding refuses bits it does not know.
#[derive(Clone, Copy)]
struct MetaFlags(u8);

const FLAG_GPU: u8 = 1;
const FLAG_BRIDGE: u8 = 2;
const FLAG_RELAY: u8 = 4;
const FLAG_NAT: u8 = 8;
const FLAGS_KNOWN: u8 = FLAG_GPU | FLAG_BRIDGE | FLAG_RELAY | FLAG_NAT;

impl Serialize for MetaFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for MetaFlags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MetaFlags, D::Error> {
        let b = u8::deserialize(d)?;
        if b & !FLAGS_KNOWN != 0 {
            return Err(serde::de::Error::custom("unknown member flag"));
        }
        Ok(MetaFlags(b))
    }
}

impl From<MetaWire> for MemberMeta {
    fn from(MetaWire(arch, zone, MetaFlags(f)): MetaWire) -> MemberMeta {
        MemberMeta {
            arch,
            zone,
            gpu: f & FLAG_GPU != 0,
            bridge: f & FLAG_BRIDGE != 0,
            relay: f & FLAG_RELAY != 0,
            nat: f & FLAG_NAT != 0,
        }
    }
}

impl From<MemberMeta> for MetaWire {
    fn from(m: MemberMeta) -> MetaWire {
        let flags = (u8::from(m.gpu) * FLAG_GPU)
            | (u8::from(m.bridge) * FLAG_BRIDGE)
            | (u8::from(m.relay) * FLAG_RELAY)
            | (u8::from(m.nat) * FLAG_NAT);
        MetaWire(m.arch, m.zone, MetaFlags(flags))
    }
}

/// One SWIM membership fact, piggybacked on probes or sent in membership pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    pub id: u64,
    pub incarnation: u32,
    pub state: MemberState,
    pub addr: PeerAddr,
    pub meta: MemberMeta,
}

/// A bucket group's 16 bucket digests.
pub type GroupBuckets = (u8, [Digest; BUCKETS_PER_GROUP]);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// SWIM probe. `me` describes the sender as the sender sees itself; `status_seen` is the
    /// version of the receiver's status the sender holds (0: none), so a receiver whose status
    /// is newer sends it.
    Ping {
        seq: u32,
        me: MemberUpdate,
        updates: Vec<MemberUpdate, MEMBER_UPDATES_PER_FRAME>,
        status_seen: u32,
    },
    /// Answer to a ping, or relayed answer to an indirect probe (same `seq` as the request);
    /// `status_seen` as in `Ping`.
    Ack {
        seq: u32,
        me: MemberUpdate,
        updates: Vec<MemberUpdate, MEMBER_UPDATES_PER_FRAME>,
        status_seen: u32,
    },
    /// "Probe `target` for me and relay its ack."
    PingReq {
        seq: u32,
        target: u64,
        target_addr: PeerAddr,
    },
    /// A page of the sender's member table (join and periodic push).
    Members {
        list: Vec<MemberUpdate, MEMBERS_PER_FRAME>,
    },
    /// Encoded entries: rumors, or answers during anti-entropy.
    Entries {
        #[serde(borrow)]
        list: Vec<&'a [u8], RUMOR_KEYS_PER_FRAME>,
    },
    /// Anti-entropy step 1: bucket digests of some of the sender's groups (all 16 take three
    /// frames). The receiver answers differing buckets with `SyncKeys`, or with the entries
    /// themselves where the sender's bucket is empty.
    SyncBuckets {
        list: Vec<GroupBuckets, SYNC_GROUPS_PER_FRAME>,
    },
    /// Step 2 answer: the sender's (key hash, entry digest) pairs with key hash in `[from, to]`,
    /// for the buckets set in `buckets` (a 256-bit mask) only. The receiver pushes what the sender
    /// lacks and asks (`Want`) for what it lacks itself.
    SyncKeys {
        from: Digest,
        to: Digest,
        buckets: [u8; 32],
        keys: Vec<(Digest, Digest), SYNC_KEYS_PER_FRAME>,
    },
    /// Step 4: "send me these entries".
    Want { keys: Vec<Digest, WANT_PER_FRAME> },
    /// An operator-signed revocation, sent to a peer whose frames carry a lower RevocationBlock.
    Revocation { signed: &'a [u8] },
    /// The sender's own status: its placed services that are not running, by key hash. Only the
    /// owner sends it; a higher `version` replaces a lower one.
    Status(Status),
    /// One page of the sender's member table (appended last, so the kinds above keep their
    /// numbers). `live` is the XOR of the ids of every member the sender holds not dead, itself
    /// included: two nodes that hold the same live set have the same value. See `PageKind`.
    MemberPage {
        kind: PageKind,
        live: Digest,
        list: Vec<MemberUpdate, MEMBER_PAGE_RECORDS>,
    },
    /// "Build this version for me" (`executor::remote`, `docs/nix.md` "Remote builders"): sent
    /// by a box that does not build to a member whose offer says it builds for `system`.
    /// Appended last, so the kinds above keep their numbers.
    BuildRequest(BuildRequest),
    /// Bridges of other zones the sender has heard from itself (appended last, after
    /// `BuildRequest`). Sent only on bridge sessions; a directory record, never a member record
    /// (docs/protocol.md §8).
    Bridges {
        list: Vec<BridgeRecord, BRIDGE_RECORDS_PER_FRAME>,
    },
    /// "I will not build this: my last build of that version failed and its backoff runs"
    /// (`executor::remote`, `docs/nix.md` "Remote builders"): a builder's answer to a
    /// `BuildRequest` it refuses for that reason, echoing the request. The requester that asked
    /// this builder for this very version counts a failed build, as if it had failed here; any
    /// other refusal, and a lost answer, stay silence, which is never a failure. Appended last.
    BuildFailed(BuildRequest),
    /// "Your frames reach me from `addr`" (docs/protocol.md section 12): the source address of the
    /// receiver's last direct (not relayed) sealed frame, as the sender saw it. Sent once per
    /// session, again when that address changes, and at most every `OBSERVED_REFRESH_MS` besides
    /// (and one such refresh per `OBSERVED_REFRESH_GAP_MS` in all);
    /// a box whose own addresses do not include it learns it is behind address translation
    /// (`node::natobs`). Appended last, so the kinds above keep their numbers.
    Observed { addr: PeerAddr },
    /// "I pinged the target of your probe `seq` for you and it did not answer" (Lifeguard's
    /// nack): a helper's word, sent when its relayed ping times out. A prober whose probe failed
    /// knows from each nack that its own link works, so the miss raises its local health only by
    /// the nacks missing (`Node::judge_probe`). Appended last, so the kinds above keep their
    /// numbers.
    Nack { seq: u32 },
}

/// A request to build one locked version of a flake service: the service by key hash, the entry
/// by its digest (`executor::unit_digest`: the builder builds only the entry it holds too), the
/// version's build key (what the builder's offer will list once built), and the system the
/// requester runs. Nothing in it is trusted: the builder checks each field against its own store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequest {
    pub service: Digest,
    pub digest: Digest,
    pub build: Digest,
    pub system: Arch,
}

/// Where a bridge of another zone listens, as a bridge tells another bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeRecord {
    pub id: u64,
    pub zone: u8,
    pub addr: PeerAddr,
}

/// Directory records one `Bridges` message carries: a bridge's freshest few.
pub const BRIDGE_RECORDS_PER_FRAME: usize = 8;

/// Why a member page was sent, which says how the receiver answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageKind {
    /// The periodic page to one random member: part of the table. A receiver whose live set
    /// differs (`live`) answers with a `Pull`: one of the two misses members.
    Sync,
    /// The sender's whole table, page after page, asking for the receiver's (a join, or a `Sync`
    /// that showed a difference). Answered with the receiver's whole table as `Push` pages.
    Pull,
    /// A whole table answering a `Pull`; never answered.
    Push,
}

/// How a unit that is not running is doing. Running is the default and is not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnitState {
    /// Placed here, not started yet.
    Pending,
    Starting,
    /// Exited and waiting for systemd's Restart=: a crash loop shows as this.
    Restarting,
    Failed,
    Stopped,
    /// A flake service waiting for or running the build of a new version (`nix build`), while
    /// the version before keeps running (DNS still answers the box).
    Building,
    /// The last build of a new version failed; it is retried with backoff, and the version
    /// before keeps running. Distinct from a unit that fails: no unit of this version was written.
    BuildFailed,
    /// As `Building`, on a box where no version of the service runs yet (DNS leaves it out).
    FirstBuilding,
    /// As `BuildFailed`, on a box where no version of the service runs (DNS leaves it out).
    FirstBuildFailed,
    /// A new version is placed here and not running yet (not written, or not restarted), while
    /// the unit of the version before still runs: pending for the new version, serving for DNS.
    Updating,
    /// systemd runs the unit but its health check failed `failures` times in a row (the box
    /// restarts it); DNS leaves the box out until a check passes.
    Unhealthy,
    /// The placed version runs here but has not run for `ROLLOUT_SETTLE_MS` yet
    /// (`executor::rollout`): serving, and the boxes of the next wave wait for it.
    Settling,
    /// The placed version failed here (`reason`) while this box tried it, and the box went back
    /// to the version before, or never left it (a failed build), until a newer entry arrives:
    /// the rollout is held. `serving`: a unit of the version before runs here (DNS answers it).
    Held {
        reason: HoldReason,
        serving: bool,
    },
}

/// Why a box held a rollout: how the new version failed there (`executor::rollout::fails`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldReason {
    BuildFailed,
    UnitFailed,
    /// Restarted by systemd while on trial.
    CrashLoop,
    /// Failed its health check.
    Unhealthy,
}

impl HoldReason {
    pub fn name(self) -> &'static str {
        match self {
            HoldReason::BuildFailed => "build-failed",
            HoldReason::UnitFailed => "unit-failed",
            HoldReason::CrashLoop => "crash-loop",
            HoldReason::Unhealthy => "unhealthy",
        }
    }
}

/// What a node reports of the services placed on it: every one not running, up to
/// `STATUS_UNITS_MAX` (`more` says some were left out). Versioned by its owner. `placed` is the
/// XOR of the digests of the entries placed on the owner as it saw them (`Node::own_placed_digest`):
/// a peer that places a different set there knows the status does not yet speak of what it
/// holds, so it cannot read a service left out as running.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub units: Vec<(Digest, UnitState), STATUS_UNITS_MAX>,
    pub more: bool,
    pub placed: Digest,
    /// Every service with a version on trial or a build here is listed, even if `more` cut
    /// others: one it leaves out has none (`executor::rollout::said_by`). The owner lists those
    /// first.
    pub trials_listed: bool,
    /// What the owner's binary cache serves (appended last: the fields above keep their places).
    pub offer: Offer,
}

/// What a node's binary cache offers its peers (`docs/nix.md`, "Boxes fetch from each other"):
/// the cache's TCP port on the node's gossip address (0: no cache), and the build keys
/// ([`crate::executor::build_key`]) of the versions whose outputs it serves, at most
/// `OFFER_KEYS_MAX`, in ascending order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub cache_port: u16,
    pub keys: Vec<Digest, OFFER_KEYS_MAX>,
    /// The systems this box builds for peers (`--builder`), one bit each ([`system_bit`]); 0:
    /// not a builder. Appended last, as the offer was.
    pub builds: u8,
    /// The build key of the build running here now (0: none), so a peer that wants the same
    /// version waits for it instead of building it too.
    pub building: Digest,
}

/// The bit of `system` in [`Offer::builds`]; `Any` has none (no builder builds "any").
pub fn system_bit(system: Arch) -> u8 {
    match system {
        Arch::Any => 0,
        Arch::X86_64 => 1,
        Arch::Aarch64 => 2,
    }
}

impl Offer {
    /// Whether the box builds for peers of `system` and has a cache to serve the result from.
    /// `Any` names no output (a build key names a system), so no builder builds for it.
    pub fn builds_for(&self, system: Arch) -> bool {
        self.cache_port != 0 && self.builds & system_bit(system) != 0
    }

    /// Whether the cache is on and offers `key`.
    pub fn offers(&self, key: u64) -> bool {
        self.cache_port != 0 && self.keys.contains(&Digest(key))
    }
}

/// A frame body: the sender's Merkle root rides on every frame, so any exchange tells a peer
/// whether the two disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body<'a> {
    pub root: Digest,
    #[serde(borrow)]
    pub msg: Message<'a>,
}

impl<'a> Body<'a> {
    /// Decodes a body; trailing bytes are an error, so a body has one encoding.
    pub fn decode(bytes: &'a [u8]) -> Option<Body<'a>> {
        match postcard::take_from_bytes::<Body<'a>>(bytes) {
            Ok((body, [])) => Some(body),
            _ => None,
        }
    }

    /// Encodes into `out` (at most `BODY_BYTES_MAX`), returning the length.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let room = out.len().min(BODY_BYTES_MAX);
        postcard::to_slice(self, &mut out[..room])
            .ok()
            .map(|b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ENTRY_BYTES_MAX;

    fn member() -> MemberUpdate {
        MemberUpdate {
            id: u64::MAX,
            incarnation: u32::MAX,
            state: MemberState::Suspect,
            addr: PeerAddr {
                ip: [0xff; 16],
                port: u16::MAX,
            },
            meta: MemberMeta {
                arch: Arch::Aarch64,
                zone: 255,
                gpu: true,
                bridge: true,
                relay: true,
                nat: true,
            },
        }
    }

    /// The flags byte: a plain box's record is the bytes it was when the byte was a bool (`gpu`),
    /// bit 1 carries `bridge`, bit 2 `relay`, bit 3 `nat`, and an unknown bit is refused.
    #[test]
    fn member_flags_keep_the_old_bytes_and_refuse_unknown_bits() {
        let mut m = member().meta;
        let mut out = [0u8; 8];
        (m.bridge, m.relay, m.nat) = (false, false, false);
        let old = (Arch::Aarch64, 255u8, true);
        let mut old_out = [0u8; 8];
        assert_eq!(
            postcard::to_slice(&m, &mut out).unwrap(),
            postcard::to_slice(&old, &mut old_out).unwrap()
        );
        m.bridge = true;
        let n = postcard::to_slice(&m, &mut out).unwrap().len();
        assert_eq!(out[n - 1], 3);
        assert_eq!(postcard::from_bytes::<MemberMeta>(&out[..n]).unwrap(), m);
        (m.relay, m.nat) = (true, true);
        let n = postcard::to_slice(&m, &mut out).unwrap().len();
        assert_eq!(out[n - 1], 15);
        assert_eq!(postcard::from_bytes::<MemberMeta>(&out[..n]).unwrap(), m);
        out[n - 1] = 16;
        assert!(postcard::from_bytes::<MemberMeta>(&out[..n]).is_err());
    }

    fn fits(msg: Message<'_>) {
        let body = Body {
            root: Digest(u64::MAX),
            msg,
        };
        let mut out = [0u8; BODY_BYTES_MAX];
        let n = body
            .encode(&mut out)
            .expect("maximal message must fit one frame body");
        assert_eq!(Body::decode(&out[..n]), Some(body));
    }

    /// A full bridge directory fits one frame body and decodes back.
    #[test]
    fn maximal_bridges_fits_one_frame() {
        let bridge = BridgeRecord {
            id: u64::MAX,
            zone: u8::MAX,
            addr: member().addr,
        };
        fits(Message::Bridges {
            list: Vec::from_slice(&[bridge; BRIDGE_RECORDS_PER_FRAME]).unwrap(),
        });
    }

    /// Each message at its full capacity encodes into one frame body and decodes back.
    #[test]
    fn every_maximal_message_fits_one_frame() {
        let updates = Vec::from_slice(&[member(); MEMBER_UPDATES_PER_FRAME]).unwrap();
        fits(Message::Ping {
            seq: u32::MAX,
            me: member(),
            updates: updates.clone(),
            status_seen: u32::MAX,
        });
        fits(Message::Ack {
            seq: u32::MAX,
            me: member(),
            updates,
            status_seen: u32::MAX,
        });
        fits(Message::Observed {
            addr: member().addr,
        });
        fits(Message::Nack { seq: u32::MAX });
        fits(Message::PingReq {
            seq: u32::MAX,
            target: u64::MAX,
            target_addr: member().addr,
        });
        fits(Message::Members {
            list: Vec::from_slice(&[member(); MEMBERS_PER_FRAME]).unwrap(),
        });
        fits(Message::MemberPage {
            kind: PageKind::Push,
            live: Digest(u64::MAX),
            list: Vec::from_slice(&[member(); MEMBER_PAGE_RECORDS]).unwrap(),
        });
        let g = (255u8, [Digest(u64::MAX); BUCKETS_PER_GROUP]);
        fits(Message::SyncBuckets {
            list: Vec::from_slice(&[g; SYNC_GROUPS_PER_FRAME]).unwrap(),
        });
        let k = (Digest(u64::MAX), Digest(u64::MAX));
        let keys = Vec::from_slice(&[k; SYNC_KEYS_PER_FRAME]).unwrap();
        fits(Message::SyncKeys {
            from: Digest(0),
            to: Digest(u64::MAX),
            buckets: [0xff; 32],
            keys,
        });
        fits(Message::Want {
            keys: Vec::from_slice(&[Digest(u64::MAX); WANT_PER_FRAME]).unwrap(),
        });
        let big = [0xAAu8; ENTRY_BYTES_MAX];
        fits(Message::Entries {
            list: Vec::from_slice(&[&big[..]]).unwrap(),
        });
        let revocation = [0xAAu8; crate::config::REVOCATION_BYTES_MAX];
        fits(Message::Revocation {
            signed: &revocation,
        });
        // The largest state a status lists.
        let held = UnitState::Held {
            reason: HoldReason::Unhealthy,
            serving: true,
        };
        fits(Message::Status(Status {
            version: u32::MAX,
            units: Vec::from_slice(&[(Digest(u64::MAX), held); STATUS_UNITS_MAX]).unwrap(),
            more: true,
            placed: Digest(u64::MAX),
            trials_listed: true,
            offer: Offer {
                cache_port: u16::MAX,
                keys: Vec::from_slice(&[Digest(u64::MAX); OFFER_KEYS_MAX]).unwrap(),
                builds: u8::MAX,
                building: Digest(u64::MAX),
            },
        }));
    }

    /// A build request is a few dozen bytes; it decodes back, and a system byte out of range or
    /// a short request does not decode.
    #[test]
    fn a_build_request_fits_and_decodes_back() {
        let request = BuildRequest {
            service: Digest(u64::MAX),
            digest: Digest(u64::MAX),
            build: Digest(u64::MAX),
            system: Arch::Aarch64,
        };
        fits(Message::BuildRequest(request));
        fits(Message::BuildFailed(request));
        let body = Body {
            root: Digest(1),
            msg: Message::BuildRequest(request),
        };
        let mut out = [0u8; BODY_BYTES_MAX];
        let n = body.encode(&mut out).unwrap();
        assert!(n < 48, "{n} bytes");
        assert_eq!(Body::decode(&out[..n - 1]), None, "short");
        out[n - 1] = 3;
        assert_eq!(Body::decode(&out[..n]), None, "no such system");
    }

    /// A member page holds as many records as fit: one more maximal record would not.
    #[test]
    fn a_member_page_is_as_full_as_a_body_allows() {
        let page = Body {
            root: Digest(u64::MAX),
            msg: Message::MemberPage {
                kind: PageKind::Push,
                live: Digest(u64::MAX),
                list: Vec::from_slice(&[member(); MEMBER_PAGE_RECORDS]).unwrap(),
            },
        };
        let mut out = [0u8; BODY_BYTES_MAX];
        let n = page.encode(&mut out).unwrap();
        let record = postcard::to_slice(&member(), &mut [0u8; 64]).unwrap().len();
        assert!(
            n + record > BODY_BYTES_MAX,
            "{n} + {record} would still fit"
        );
    }

    /// A body is not re-encoded on receipt (docs/protocol.md §1): an overlong varint, here the
    /// variant index 13 of `BuildFailed` as `8d 00` (what the `build_request` fuzz target sent),
    /// reads as the value it spells, the same message as the canonical bytes.
    #[test]
    fn an_overlong_varint_in_a_body_reads_as_its_value() {
        let request = BuildRequest {
            service: Digest(1),
            digest: Digest(2),
            build: Digest(3),
            system: Arch::X86_64,
        };
        let body = Body {
            root: Digest(4),
            msg: Message::BuildFailed(request),
        };
        let mut out = [0u8; BODY_BYTES_MAX];
        let n = body.encode(&mut out).unwrap();
        assert_eq!(out[8], 13, "the variant index follows the 8-byte root");
        let mut overlong = [0u8; BODY_BYTES_MAX];
        overlong[..8].copy_from_slice(&out[..8]);
        overlong[8..10].copy_from_slice(&[0x8d, 0x00]);
        overlong[10..n + 1].copy_from_slice(&out[9..n]);
        assert_eq!(Body::decode(&overlong[..n + 1]), Some(body));
    }

    /// Garbage and trailing bytes never decode.
    #[test]
    fn refuses_garbage() {
        assert_eq!(Body::decode(&[0xff; 40]), None);
        let body = Body {
            root: Digest(1),
            msg: Message::Want { keys: Vec::new() },
        };
        let mut out = [0u8; 64];
        let n = body.encode(&mut out).unwrap();
        assert_eq!(Body::decode(&out[..n + 1]), None);
    }
}
