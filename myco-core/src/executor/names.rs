//! How a service does on any node, and the DNS directory built on it: the one answer both the
//! API's `/services` and `*.myco` DNS give, so the simulator checks what clients are told.
//!
//! A node's own units are as its executor last read them; a peer's are as its gossiped status
//! says, where a placed service it does not list is running (a status lists every placed service
//! that is not, a service with no unit yet as pending). Nothing here changes state.

use super::{Executor, UnitHealth};
use crate::dns::Directory;
use crate::node::{Node, PlacedDigests};
use crate::schema::addr::PeerAddr;
use crate::schema::entry::Protocol;
use crate::schema::message::UnitState;

/// How service `name` (key hash `key`) does on node `id`, as `node` knows it: its own unit as
/// systemd reports it (`Pending` until written and read back); a peer's from its gossiped status,
/// where a placed service it does not list is running. `None` when unknown: no executor here, or
/// a peer that has reported nothing or listed too many to say.
///
/// With `placed` (`Node::placed_digests`, for answers that must not run ahead of the truth, such
/// as the API a `deploy --wait` polls), a service a peer does not list counts as running only if
/// the peer's status speaks of the entries this node places on it; a status made before the peer
/// held the new version leaves it out too, and it is `Pending` until a newer status arrives.
/// Without (DNS), a service left out is running: the version before keeps serving meanwhile.
pub fn health_on(
    node: &Node,
    executor: Option<&Executor>,
    at: (u64, u64),
    name: &str,
    placed: Option<&PlacedDigests>,
) -> Option<UnitHealth> {
    let (id, key) = at;
    if id == node.id() {
        let executor = executor?;
        let unit = executor.unit(name);
        // Read strictly, a unit of another version (the one before, kept while the rollout
        // waits or holds) does not run the placed one.
        let placed_digest = node.store().live_by_name(name).map(|s| s.digest);
        let other = |digest| placed.is_some() && placed_digest.is_some_and(|d| d != digest);
        return Some(match unit {
            // A version held here is not served though its unit runs (a box that had nothing
            // to go back to): peers read the same from this box's status, `Held` not serving.
            Some(u) if executor.held(key, u.digest).is_some() => UnitHealth::Failed,
            Some(u) if !other(u.digest) => u.health,
            _ => UnitHealth::Pending,
        });
    }
    let status = node.status_of(id)?;
    // Read strictly, a status made before the peer had the placed version speaks of the one
    // before (its unit still running there) or of none: the placed one is not running yet.
    if placed.is_some_and(|p| !node.status_covers(id, p)) {
        return Some(UnitHealth::Pending);
    }
    match status.units.iter().find(|(k, _)| k.0 == key) {
        Some((_, state)) => Some(UnitHealth::from(*state)),
        None if status.more => None,
        None => Some(UnitHealth::Running),
    }
}

/// The directory DNS answers from: a service's instances are its placed boxes where it runs, at
/// the member's address (port 0), and this box at the addresses `own_addrs(own)` gives.
pub struct Names<'a> {
    pub node: &'a Node,
    pub executor: Option<&'a Executor>,
    /// The address this box's gossip socket is bound to (the host passes port 0): a wildcard
    /// stands for loopback (`own_addrs`).
    pub own: PeerAddr,
}

/// `::1`.
const LOOPBACK_V6: PeerAddr = PeerAddr {
    ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    port: 0,
};

/// What DNS answers for this box's own instance when its gossip socket is bound to `own`: that
/// address itself, or where a workload on this box reaches it when `own` is a wildcard: 127.0.0.1
/// for `0.0.0.0` (IPv4 only), 127.0.0.1 and ::1 for `[::]` (dual stack), so that on a box whose
/// links are IPv6 only, AAAA lists this box too and not only its peers.
pub fn own_addrs(own: PeerAddr) -> [Option<PeerAddr>; 2] {
    let loopback_v4 = PeerAddr::v4([127, 0, 0, 1], 0);
    if own.ip == [0; 16] {
        [Some(loopback_v4), Some(LOOPBACK_V6)]
    } else if own.as_v4() == Some([0; 4]) {
        [Some(loopback_v4), None]
    } else {
        [Some(own), None]
    }
}

impl Directory for Names<'_> {
    fn instances(&self, name: &str, out: &mut dyn FnMut(PeerAddr)) -> bool {
        let Some(slot) = self.node.store().live_by_name(name) else {
            return false;
        };
        let key = slot.key_hash;
        for id in self.node.placement(key) {
            let Some(addr) = self.healthy_at(id, key, name) else {
                continue;
            };
            if id == self.node.id() {
                own_addrs(self.own)
                    .into_iter()
                    .flatten()
                    .for_each(&mut *out);
            } else {
                out(addr);
            }
        }
        true
    }

    fn exists(&self, name: &str) -> bool {
        self.node.store().live_by_name(name).is_some()
    }

    fn ports(&self, name: &str, out: &mut dyn FnMut(u16, Protocol)) {
        let Some(bytes) = self.node.store().get_by_name(name) else {
            return;
        };
        let entry = bytes.decode();
        if entry.body.is_tombstone() {
            return;
        }
        for p in entry.body.spec.iter().flat_map(|s| s.ports.iter()) {
            out(p.number, p.protocol);
        }
    }
}

impl Names<'_> {
    /// What peer `id`'s status lists for the service, if it lists it.
    fn listed_at(&self, id: u64, key: u64) -> Option<UnitState> {
        let listed = self
            .node
            .status_of(id)
            .into_iter()
            .flat_map(|s| s.units.iter());
        listed
            .into_iter()
            .find(|(k, _)| k.0 == key)
            .map(|(_, state)| *state)
    }

    /// Where node `id` serves the service, if it runs it healthily. This box's own unit is
    /// judged by what systemd says of it; another box that reports the build of a new version
    /// (`building`, `build-failed`) is answered, because the version it ran before keeps running
    /// until the new one is built, and dropping every box of a service while they all build a
    /// new version would take the service off the air at each rollout; a box that builds the
    /// first version it will run (`FirstBuilding`, `FirstBuildFailed`) runs nothing, and is not.
    /// A box about to restart into a new version (`Updating`) still serves the one before, and
    /// so does a box that held a rollout and serves the version before (`Held`, `serving`).
    pub fn healthy_at(&self, id: u64, key: u64, name: &str) -> Option<PeerAddr> {
        let peer = id != self.node.id();
        let listed = self.listed_at(id, key);
        let serving = match health_on(self.node, self.executor, (id, key), name, None) {
            Some(UnitHealth::Running) => true,
            Some(UnitHealth::Building | UnitHealth::BuildFailed) => {
                let first = matches!(
                    listed,
                    Some(UnitState::FirstBuilding | UnitState::FirstBuildFailed)
                );
                peer && !first
            }
            Some(UnitHealth::Pending) => {
                let before = matches!(
                    listed,
                    Some(UnitState::Updating | UnitState::Held { serving: true, .. })
                );
                peer && before
            }
            _ => false,
        };
        if !serving {
            return None;
        }
        if id == self.node.id() {
            return own_addrs(self.own)[0];
        }
        let member = self
            .node
            .members()
            .iter()
            .find(|m| m.id == id && m.is_live())?;
        Some(PeerAddr {
            port: 0,
            ..member.addr
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wildcard stands for loopback, in both families when it is IPv6's (dual stack); an
    /// address the socket is bound to is answered as it is.
    #[test]
    fn own_addrs_of_wildcards_are_loopbacks() {
        let v4 = |o| PeerAddr::v4(o, 0);
        let v6_unspecified = PeerAddr::default();
        assert_eq!(
            own_addrs(v6_unspecified),
            [Some(v4([127, 0, 0, 1])), Some(LOOPBACK_V6)]
        );
        assert_eq!(own_addrs(v4([0; 4])), [Some(v4([127, 0, 0, 1])), None]);
        let bound_v6 = PeerAddr {
            ip: [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
            port: 0,
        };
        assert_eq!(own_addrs(bound_v6), [Some(bound_v6), None]);
        assert_eq!(own_addrs(LOOPBACK_V6), [Some(LOOPBACK_V6), None]);
        assert_eq!(
            own_addrs(v4([10, 77, 0, 10])),
            [Some(v4([10, 77, 0, 10])), None]
        );
    }
}
