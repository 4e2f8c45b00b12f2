//! Invariant 9 of the executor world (`executors.rs`): progressive rollouts
//! (`myco_core::executor::rollout`). A bad version's unit fails or crash-loops on every box (and
//! a flake's build fails), so its rollout must hold at the first wave; a good one must reach
//! every placed box unless a box of the first wave failed it for a reason of its own (the
//! simulated unit fault of that box and service).

use crate::executors::checks::sick;
use crate::executors::{start, Executors, SimUnit};
use myco_core::executor::rollout::{
    first_wave, gate, in_first_wave, progress, said_by, Gate, Progress,
};
use myco_core::executor::{Executor, UnitHealth};
use myco_core::node::PlacedDigests;
use myco_core::schema::entry::Source;
use myco_core::schema::message::HoldReason;
use myco_core::Node;
use std::collections::HashMap;

/// At the write of version `(key, digest, clock)` of a service over `unit` on `node`'s box: a
/// bad version replaces an enabled unit of another version only on a box of the first wave (as
/// the box sees placement), and a box goes back to an older version only to the one its unit ran
/// before (a rollback); a box that crashed may have lost newer versions from its store and is
/// not judged on that.
pub(crate) fn check_write(
    node: &Node,
    (key, digest, clock): (u64, u64, u64),
    unit: &SimUnit,
    bad: bool,
    crashed: bool,
) -> Result<(), String> {
    let replaces = unit.file && unit.enabled && unit.digest != digest;
    if bad && replaces {
        let placement = node.placement(key);
        let wave = &placement[..first_wave(placement.len())];
        if !wave.contains(&node.id()) {
            return Err(format!(
                "node {:x}: a bad version of service {key:x} replaced an earlier one outside the first wave",
                node.id()
            ));
        }
    }
    let rollback = unit.before == Some((digest, clock));
    if replaces && clock < unit.clock && !crashed && !rollback {
        return Err(format!(
            "node {:x}: service {key:x} went to version {clock}, older than {} and not the one it ran before",
            node.id(),
            unit.clock
        ));
    }
    Ok(())
}

/// Once every live executor is at rest: on every live node, each service placed there runs the
/// placed version, or its rollout is held as the node sees it, by a box where it really failed.
pub(crate) fn check_rollouts(
    nodes: &[Box<Node>],
    live: &[usize],
    ex: &Executors,
) -> Result<(), String> {
    let index: HashMap<u64, usize> = nodes.iter().enumerate().map(|(j, n)| (n.id(), j)).collect();
    for &i in live {
        let node = &nodes[i];
        let digests = node.placed_digests();
        for slot in node.placed_here() {
            let key = slot.key_hash;
            let unit = ex.boxes[i].units.get(&key).map(|(_, u)| u);
            if unit.is_some_and(|u| u.enabled && u.digest == slot.digest) {
                continue;
            }
            if let Some(reason) = ex.boxes[i].executor.held(key, slot.digest) {
                check_cause(ex, (i, key, slot.digest), reason)?;
                continue;
            }
            let placement = node.placement(key);
            let Progress::Held { at, reason } = progress(node, &digests, key, &placement) else {
                if ex.boxes[i].executor.waits_unheard() || unheard(node, &digests, key, &placement)
                {
                    continue;
                }
                return Err(format!(
                    "node {i}: a version of service {key:x} neither reached it nor was held"
                ));
            };
            if let Some(&j) = index.get(&at) {
                check_cause(ex, (j, key, slot.digest), reason)?;
            }
        }
    }
    Ok(())
}

/// Invariant 12, for one live box at rest: a box started `--build remote` (`remote_only`) that is
/// in the first wave (as it sees placement) of a bad flake version placed on it holds that
/// version, build-failed. It never builds, so the failure it holds on is its builder's, which
/// reached it as `Message::BuildFailed`: silence would have left it asking for ever. Returns
/// how many such holds it saw.
pub(crate) fn check_remote_canary(
    node: &Node,
    executor: &Executor,
    remote_only: bool,
    bad: impl Fn(u64) -> bool,
) -> Result<u64, String> {
    if !remote_only {
        return Ok(0);
    }
    let mut holds = 0;
    for slot in node.placed_here() {
        let key = slot.key_hash;
        let flake = node.store().get(key).is_some_and(|e| {
            let spec = e.decode().body.spec;
            matches!(spec.map(|s| s.source), Some(Source::Flake { .. }))
        });
        let wave = in_first_wave(&node.placement(key), node.id());
        if !(flake && wave && bad(slot.digest)) {
            continue;
        }
        if executor.held(key, slot.digest) != Some(HoldReason::BuildFailed) {
            return Err(format!(
                "node {:x} (--build remote) is the first wave of a bad version of service {key:x} and does not hold it",
                node.id()
            ));
        }
        holds += 1;
    }
    Ok(holds)
}

/// A version held by node `j` failed there: it is bad, or `j`'s unit of the service has a fault,
/// or, held unhealthy, `j`'s unit of the service is drawn sick when enabled: a box of the first
/// wave that fails a good version's checks for a reason of its own holds it, as a bad one.
fn check_cause(
    ex: &Executors,
    (j, key, digest): (usize, u64, u64),
    reason: HoldReason,
) -> Result<(), String> {
    let seed = ex.seed ^ j as u64;
    let fault = start(seed, key, ex.unit_fault_ppm, false);
    let sick = reason == HoldReason::Unhealthy && sick(seed, key, ex.unit_fault_ppm);
    if ex.bad.contains(&digest) || fault != UnitHealth::Running || sick {
        return Ok(());
    }
    Err(format!(
        "a good version of service {key:x} was held by node {j} ({}), where it did not fail",
        reason.name()
    ))
}

/// Whether the node waits for a first-wave box whose status does not speak of the version (cut
/// short by the trouble on its box): the one rest short of both reaching and holding it.
fn unheard(node: &Node, digests: &PlacedDigests, key: u64, placement: &[u64]) -> bool {
    let said = |id| said_by(node, digests, (id, key), placement);
    gate(node.id(), placement, said) == (Gate::Wait { heard: false })
}

/// Whether node `i` holds the placed version of service `key`, sees its rollout held, or waits
/// unheard: it may then lack the placed version, or any unit (invariant 1).
pub(crate) fn excused(node: &Node, executor: &Executor, key: u64) -> bool {
    let digest = node.store().range(key, key).first().map(|s| s.digest);
    if digest.is_some_and(|d| executor.held(key, d).is_some()) {
        return true;
    }
    let digests = node.placed_digests();
    let placement = node.placement(key);
    let held = matches!(
        progress(node, &digests, key, &placement),
        Progress::Held { .. }
    );
    // An unheard wait is looked at again only every health interval: the first wave may have
    // spoken since.
    held || executor.waits_unheard() || unheard(node, &digests, key, &placement)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use myco_core::config::WAL_CHECKPOINT_BYTES;

    struct Null;

    impl myco_core::Sink for Null {
        fn send(&mut self, _: myco_core::PeerAddr, _: &[u8; myco_core::config::FRAME_BYTES]) {}
        fn event(&mut self, _: myco_core::Event) {}
        fn append(&mut self, _: &[u8], _: u64) {}
        fn checkpoint(&mut self) {}
        fn fill_random(&mut self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    /// A lone node: every placement is it alone, so it is the first wave of everything.
    pub(crate) fn lone() -> Box<Node> {
        let ids = crate::ids::Identities::new(1, 1, 0);
        let config = myco_core::NodeConfig {
            node_seed: ids.node_seeds[0],
            cert: &ids.certs[0],
            operator: ids.operator.public_key(),
            revocation_block: 0,
            seed: 1,
            join: &[],
            wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
            profile: myco_core::config::Profile::LAN,
            bridge_seeds: &[],
            relay: false,
            behind_nat: false,
            own_addrs: &[],
        };
        Box::new(Node::new(&config, myco_core::Instant(0)).unwrap())
    }

    fn enabled(digest: u64, clock: u64, before: Option<(u64, u64)>) -> SimUnit {
        SimUnit {
            file: true,
            enabled: true,
            digest,
            clock,
            before,
            ..SimUnit::default()
        }
    }

    /// Invariant 9's write check is not vacuous: a box that goes back to a version other than
    /// the one its unit ran before breaks it, and going back to exactly that one does not.
    #[test]
    fn write_check_detects_a_version_older_than_the_one_before() {
        let node = lone();
        let unit = enabled(30, 300, Some((20, 200)));
        assert!(check_write(&node, (7, 20, 200), &unit, false, false).is_ok());
        assert!(check_write(&node, (7, 40, 400), &unit, false, false).is_ok());
        assert!(check_write(&node, (7, 10, 100), &unit, false, false).is_err());
        assert!(
            check_write(&node, (7, 10, 100), &unit, false, true).is_ok(),
            "a crashed box may have lost newer versions"
        );
    }

    /// Invariant 12 is not vacuous: a remote-only lone box (the first wave of all it runs)
    /// placed a bad flake version that its executor does not hold breaks it; the same box
    /// building for itself, or the version good, does not.
    #[test]
    fn remote_canary_check_detects_a_bad_version_not_held() {
        use myco_core::schema::entry::{EntryBody, ServiceSpec, Version};
        let ids = crate::ids::Identities::new(1, 1, 0);
        let mut node = lone();
        let source = Source::Flake {
            uri: "git+file:///srv/web?rev=a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7",
            attr: "default",
            rev: [0xa7; myco_core::config::FLAKE_REV_BYTES],
            nar_hash: [0x5c; myco_core::config::NAR_HASH_BYTES],
        };
        let body = EntryBody {
            name: "web",
            version: Version {
                clock: 400,
                key_id: ids.operator.public_key().key_id(),
            },
            spec: Some(ServiceSpec::minimal(source)),
        };
        let mut bytes = [0u8; 512];
        let n = myco_core::crypto::sign_entry(&ids.operator, &body, &mut bytes).unwrap();
        node.submit(myco_core::Instant(1), &bytes[..n], &mut Null)
            .unwrap();
        let digest = node.placed_here().next().expect("placed on itself").digest;
        let executor = Executor::new(false);
        let bad = |d: u64| d == digest;
        assert!(check_remote_canary(&node, &executor, true, bad).is_err());
        assert_eq!(check_remote_canary(&node, &executor, false, bad), Ok(0));
        assert_eq!(
            check_remote_canary(&node, &executor, true, |_| false),
            Ok(0)
        );
    }

    /// A bad version replacing an enabled unit outside the first wave breaks invariant 9; on a
    /// box of the first wave, or on a box with no unit of the service, it does not.
    #[test]
    fn write_check_detects_a_bad_version_beyond_the_first_wave() {
        use myco_core::schema::entry::{EntryBody, ServiceSpec, Source, Version};
        let ids = crate::ids::Identities::new(1, 1, 0);
        let mut node = lone();
        let unit = enabled(30, 300, None);
        // Not placed anywhere yet: this node is no first wave of it.
        let key = myco_core::state::store::key_hash("web");
        assert!(check_write(&node, (key, 40, 400), &unit, true, false).is_err());
        assert!(check_write(&node, (key, 40, 400), &SimUnit::default(), true, false).is_ok());
        let body = EntryBody {
            name: "web",
            version: Version {
                clock: 400,
                key_id: ids.operator.public_key().key_id(),
            },
            spec: Some(ServiceSpec::minimal(Source::Exec { path: "/bin/web" })),
        };
        let mut bytes = [0u8; 256];
        let n = myco_core::crypto::sign_entry(&ids.operator, &body, &mut bytes).unwrap();
        let mut sink = Null;
        node.submit(myco_core::Instant(1), &bytes[..n], &mut sink)
            .unwrap();
        assert!(check_write(&node, (key, 40, 400), &unit, true, false).is_ok());
    }
}
