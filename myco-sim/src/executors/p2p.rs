//! Boxes fetch builds from each other (`myco_core::executor::substitute`), simulated: each box's
//! store holds the build keys of the versions it built or fetched, which its node offers
//! (`Node::set_offer`) from a cache that serves while the box is up. A build the executor starts
//! with substitutes is fetched if one of them is up and holds the version (Nix tries each, then
//! builds: `fallback`), and built here otherwise.
//!
//! Invariant 10, checked when each build starts, from the box's own view (all a box can act on):
//! every substitute is a member whose status, as this box holds it, offers the version, named
//! with the node key its session certified; and a build starts with no substitute only if no
//! member this box holds alive and certified (of any architecture: the key names the system)
//! had offered that version in a
//! status this box received before the build started. Whether the peers' offers were true is
//! the world's to say: the run counts builds made here while an up peer's store held the version
//! (`builds_local_held_by_peer`: gossip not yet heard, or a version beyond the 8 a status offers).

use super::{BuildJob, Executors, SimBox, BUILT, SIM_CACHE_PORT};
use crate::ids::zone_of;
use myco_core::executor::{BuildMode, Executor, Substitute};
use myco_core::schema::entry::Arch;
use myco_core::schema::message::{system_bit, BuildRequest, MemberState};
use myco_core::{Instant, Node};

impl Executors {
    /// A build of node `i` ended: if it succeeded, the version is in the box's store, counted as
    /// built or fetched.
    pub(super) fn stored(&mut self, i: usize, job: &BuildJob) {
        if !job.ok || job.stdout != BUILT {
            return;
        }
        let b = &mut self.boxes[i];
        if job.fetched {
            self.builds_fetched += 1;
            self.builds_remote += u64::from(!b.mode.local);
            b.executor.stats.builds_from_peers += 1;
        } else {
            self.builds_local += 1;
        }
        self.builds_for_peers += u64::from(job.for_peer);
        self.builds_for_other_systems += u64::from(job.for_peer && job.other_system);
        // The newest root is offered first (the daemon offers its 8 newest roots, and a build
        // of a version already in the store makes its root anew): a version built again for a
        // peer's request is offered again.
        b.store.retain(|&k| k != job.build_key);
        b.store.push(job.build_key);
        b.offer_changed = true;
    }

    /// A build of the version rooted as `root` starts on `node` with `subs`: invariant 10, and
    /// whether it is fetched. Returns its build key and that.
    pub(super) fn substitution(
        &mut self,
        node: &Node,
        up: &[bool],
        root: &str,
        subs: &[Substitute],
    ) -> Result<(u64, bool), String> {
        let key = myco_core::executor::build_key(root);
        check_substitutes(node, key, subs)?;
        let fetched = fetch(&self.boxes, (&self.ids, up), key, subs);
        let held = held_by_peer(&self.boxes, (&self.ids, up), (node.id(), key));
        self.builds_local_held_by_peer += u64::from(!fetched && held);
        Ok((key, fetched))
    }
}

/// How box `i` builds, given every box's architecture and the zones they are spread over: every
/// fourth box (0, 4, ...) is a `--builder`, for both systems if it is x86_64 (its Nix has
/// `aarch64-linux` in `extra-platforms`, with binfmt), for its own if aarch64; every fourth from
/// 2 is `--build remote` if at least two builders for its system are in its zone to ask (one of
/// them may die; a request travels only within a zone, as gossip does): an aarch64 box may be
/// served by x86_64 builders alone. The rest build themselves. A box's own outputs are for its
/// certificate's arch.
/// A cluster of fewer than eight boxes builds everywhere, as before. Scenarios with bad versions
/// have builders too: a builder answers a request for a version whose build failed there
/// (`Message::BuildFailed`), and the remote-only box counts that as its own failed build, so a
/// bad version's rollout holds where the first wave is remote-only.
pub(super) fn mode_of((arches, zones): (&[Arch], u8), i: usize) -> BuildMode {
    let big = arches.len() >= REMOTE_CLUSTER_MIN;
    let builder = |j: usize| big && j.is_multiple_of(4);
    let builds = |j: usize| match arches[j] {
        _ if !builder(j) => 0,
        Arch::X86_64 => system_bit(Arch::X86_64) | system_bit(Arch::Aarch64),
        arch => system_bit(arch),
    };
    let zone = zone_of(i, zones);
    let mine = system_bit(arches[i]);
    let builders_of_mine = (0..arches.len())
        .filter(|&j| builds(j) & mine != 0 && zone_of(j, zones) == zone)
        .count();
    BuildMode {
        local: !(big && i % 4 == 2 && builders_of_mine >= 2),
        builds: builds(i),
        system: arches[i],
    }
}

/// Clusters this large have builders and boxes that do not build.
const REMOTE_CLUSTER_MIN: usize = 8;

/// Box `i`'s executor, in its build mode; `peers`: whether another box shares its zone.
pub(super) fn executor(cluster: (&[Arch], u8), i: usize, peers: bool) -> Executor {
    let mut e = Executor::new(peers);
    e.set_build_mode(mode_of(cluster, i));
    e
}

/// Build requests that reached box `i`'s node, with their senders, handed to its executor
/// (refusals are counted there, and a refusal for a failed build is answered).
pub(crate) fn take_requests(
    b: &mut SimBox,
    node: &Node,
    now: u64,
    requests: &[(u64, BuildRequest)],
) {
    for (from, r) in requests {
        let _ = b
            .executor
            .handle_build_request(Instant(now), node, (*from, r));
    }
}

/// Builders' answers that a build this box asked for failed, handed to its executor (which
/// ignores any but the builder it asks for that very version).
pub(crate) fn take_failed(b: &mut SimBox, now: u64, failed: &[(u64, BuildRequest)]) {
    for (from, r) in failed {
        b.executor.handle_build_failed(Instant(now), *from, r);
    }
}

/// Sends the requests the executor decided on, and says in the status what the box builds for
/// peers and builds now.
pub(super) fn ask_and_tell(
    b: &mut SimBox,
    node: &mut Node,
    now: u64,
    sink: &mut impl myco_core::Sink,
) {
    while let Some((to, request)) = b.executor.take_build_request() {
        node.send_build_request(to, request, sink);
    }
    while let Some((to, request)) = b.executor.take_build_failed() {
        node.send_build_failed(to, request, sink);
    }
    let building = (b.mode.builds, b.executor.building_key());
    if building != b.building {
        b.building = building;
        node.set_building(Instant(now), now as u32, building.0, building.1, sink);
    }
}

/// The node offers what the box's store holds, when that changed.
pub(super) fn offer(b: &mut SimBox, node: &mut Node, now: u64, sink: &mut impl myco_core::Sink) {
    if std::mem::take(&mut b.offer_changed) {
        // Newest first, as the daemon offers its roots.
        let keys = b.store.iter().rev().copied();
        node.set_offer(Instant(now), now as u32, SIM_CACHE_PORT, keys, sink);
    }
}

/// Invariant 10 for a build of `key` that `node`'s executor starts with `substitutes`.
pub(super) fn check_substitutes(node: &Node, key: u64, subs: &[Substitute]) -> Result<(), String> {
    for s in subs {
        let offered = node.status_of(s.id).is_some_and(|st| st.offer.offers(key));
        if !offered || node.certified_key(s.id) != Some(&s.key) {
            return Err(format!(
                "build {key:x}: substitute {:x} did not offer it, or not under its certified key",
                s.id
            ));
        }
    }
    // The key names the system the output is for: a peer of any architecture that offers it
    // offers this box's output.
    let offered_by_some = node.members().iter().any(|m| {
        m.state == MemberState::Alive
            && node.certified_key(m.id).is_some()
            && node.status_of(m.id).is_some_and(|st| st.offer.offers(key))
    });
    if subs.is_empty() && offered_by_some {
        return Err(format!(
            "build {key:x} started with no substitute while a live peer offered it"
        ));
    }
    Ok(())
}

/// Whether Nix fetches the version: one of `subs`, in order, is up and holds it.
pub(super) fn fetch(
    boxes: &[SimBox],
    (ids, up): (&[u64], &[bool]),
    key: u64,
    subs: &[Substitute],
) -> bool {
    subs.iter().any(|s| {
        let j = ids.iter().position(|&id| id == s.id);
        j.is_some_and(|j| up[j] && boxes[j].store.contains(&key))
    })
}

/// Whether a box other than `own` is up and holds the version of `key`.
pub(super) fn held_by_peer(
    boxes: &[SimBox],
    (ids, up): (&[u64], &[bool]),
    (own, key): (u64, u64),
) -> bool {
    (0..boxes.len()).any(|j| ids[j] != own && up[j] && boxes[j].store.contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_core::schema::addr::PeerAddr;

    /// x86_64 builders build for both systems, aarch64 ones for their own; a box is remote-only
    /// only where two builders for its system exist; small clusters build everywhere.
    #[test]
    fn modes_leave_no_remote_box_without_two_builders() {
        let (x, a) = (Arch::X86_64, Arch::Aarch64);
        let both = system_bit(x) | system_bit(a);
        // Builders at 0, 4, 8: x86_64, aarch64, aarch64. Box 2 (aarch64) is remote, served by
        // the three; box 6 (x86_64) is not: one builder for x86_64 only.
        let arches = [x, x, a, x, a, x, x, x, a, x];
        let modes: Vec<BuildMode> = (0..arches.len())
            .map(|i| mode_of((&arches, 1), i))
            .collect();
        assert_eq!(modes[0].builds, both);
        assert_eq!(modes[4].builds, system_bit(a));
        assert_eq!(modes[1].builds, 0);
        assert_eq!((modes[2].local, modes[2].system), (false, a));
        assert!(modes[6].local);
        assert_eq!(modes.iter().filter(|m| !m.local).count(), 1);
        // An aarch64 box whose only builders are x86_64 ones with aarch64 in extra-platforms.
        let served = [x, x, a, x, x, x, x, x];
        assert!(!mode_of((&served, 1), 2).local);
        let small = [x; 7];
        let local = BuildMode {
            system: x,
            ..BuildMode::default()
        };
        assert!((0..7).all(|i| mode_of((&small, 1), i) == local));
    }

    /// The checker is not vacuous: a substitute that offered nothing (a lone node holds no
    /// member's status) fails it; no substitute where nobody offers passes.
    #[test]
    fn a_substitute_that_offered_nothing_fails_invariant_10() {
        let node = crate::invariants::rollout::tests::lone();
        let stranger = Substitute {
            id: 99,
            cache: PeerAddr::v4([127, 0, 0, 1], 7947),
            key: [1; 32],
        };
        assert!(check_substitutes(&node, 5, &[stranger]).is_err());
        assert!(check_substitutes(&node, 5, &[]).is_ok());
    }
}
