//! The daemon's JSON answers as `myco` reads them (docs/api.md). Fields `myco` does not show are
//! left out and unknown fields are ignored, so a daemon may add fields without breaking older
//! clients; a missing or mistyped field that `myco` needs is an error naming it.

use serde::Deserialize;

/// An entry's version: the operator's clock, then the signing key's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub clock: u64,
    pub key_id: u32,
}

/// `POST /deploy`'s 200 answer.
#[derive(Debug, Deserialize)]
pub struct Deployed {
    pub name: String,
    pub version: Version,
    /// `applied`, or `unchanged` when the daemon already held this version or a newer one.
    pub outcome: String,
}

/// `GET /services`.
#[derive(Debug, Deserialize)]
pub struct Services {
    pub services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
pub struct Service {
    pub name: String,
    pub version: Version,
    /// A tombstone, kept until it is evicted.
    pub deleted: bool,
    /// 0 for a tombstone.
    pub replicas: u64,
    /// A flake's locked commit, its first 7 hex digits; null for an exec source or a tombstone
    /// (and absent from older daemons).
    #[serde(default)]
    pub rev: Option<String>,
    /// The nodes placement chose and how the service does on each (absent from older daemons).
    #[serde(default)]
    pub placed_on: Vec<Placed>,
    /// How its rollout does (absent from older daemons, and for a tombstone).
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Deserialize)]
pub struct Placed {
    pub id: String,
    pub state: String,
    /// `placed` or `previous`: which version runs there, where that is known (absent from older
    /// daemons).
    #[serde(default)]
    pub version: Option<String>,
}

/// A service's rollout: `rolling`, `done`, or `held` by box `at` for `reason` (docs/api.md).
#[derive(Debug, Deserialize)]
pub struct Rollout {
    pub state: String,
    #[serde(rename = "box", default)]
    pub at: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /nodes`.
#[derive(Debug, Deserialize)]
pub struct Nodes {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Deserialize)]
pub struct Node {
    pub id: String,
    pub address: String,
    /// `alive`, `suspect` or `dead`.
    pub state: String,
    pub arch: String,
    pub zone: u8,
    /// The node that answered. Absent means false.
    #[serde(rename = "self", default)]
    pub is_self: bool,
}

/// `GET /health`, the 200 and the 503 answer alike. The counts and the node id came later than
/// the rest, so an answer without them is still read.
#[derive(Debug, Deserialize)]
pub struct HealthAnswer {
    /// `ok` or `degraded`.
    pub status: String,
    /// `ok` or `failing`.
    pub wal: String,
    /// `present`, `released`, `deferred` or `disabled`.
    pub reserve: String,
    /// Why the reserve is `deferred` (the free space and what it needs); null otherwise.
    pub reserve_why: Option<String>,
    /// `io_uring` or `poll`.
    pub io: String,
    pub services: Option<u64>,
    /// The other nodes seen alive, the node itself not counted. Daemons before this name called
    /// it `members_alive` (the same count), and are still read.
    #[serde(alias = "members_alive")]
    pub peers_alive: Option<u64>,
    pub node_id: Option<String>,
}
