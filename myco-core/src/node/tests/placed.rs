//! The kept answers of `placed_here`, `in_first_wave_here` and `placed_digests`, updated record
//! by record as entries merge (`node::placed`), against placing every entry anew.

use super::*;
use crate::config::TOMBSTONE_RETENTION_MS;
use crate::random::Prng;
use crate::schema::entry::{Requirements, ServiceSpec, Source};
use std::string::String;
use std::vec::Vec;

/// Version `clock` of service `name`: a tombstone without `spec`, else `replicas` replicas that
/// require `arch`.
fn entry(name: &str, clock: u64, spec: Option<(u8, Arch)>, out: &mut [u8; 256]) -> usize {
    let op = operator();
    let spec = spec.map(|(replicas, arch)| ServiceSpec {
        replicas,
        requires: Requirements {
            arch,
            gpu: false,
            zone: None,
        },
        ..ServiceSpec::minimal(Source::Exec { path: "/bin/true" })
    });
    let version = Version {
        clock,
        key_id: op.public_key().key_id(),
    };
    sign_entry(
        &op,
        &EntryBody {
            name,
            version,
            spec,
        },
        out,
    )
    .unwrap()
}

/// What `placed_here`, `in_first_wave_here` (of every entry) and `placed_digests` answer now.
/// The first-wave answers must also be those of the entry's whole placement, and `placement`
/// (which keeps recent answers) that of placing the entry anew.
fn answers(n: &Node) -> (Vec<u64>, Vec<bool>, PlacedDigests) {
    let here = n.placed_here().map(|s| s.key_hash).collect();
    let keys = n.store().slots().iter().map(|s| s.key_hash);
    let first: Vec<bool> = keys.clone().map(|k| n.in_first_wave_here(k)).collect();
    // Placed anew here, past the answers `placement` keeps.
    let placed_anew = |slot: &crate::state::store::Slot| match &slot.placement {
        Some((requires, replicas)) => {
            crate::place::place(slot.key_hash, requires, *replicas, n.placement_candidates())
        }
        None => crate::place::Placement::new(),
    };
    for slot in n.store().slots() {
        assert_eq!(n.placement(slot.key_hash), placed_anew(slot));
    }
    let anew: Vec<bool> = n
        .store()
        .slots()
        .iter()
        .map(|s| crate::executor::rollout::in_first_wave(&placed_anew(s), n.id()))
        .collect();
    assert_eq!(first, anew);
    (here, first, n.placed_digests())
}

/// Random merges (new keys, which move the records after them, new versions with other replicas
/// or requirements, tombstones), read or not in between, with members dying now and then: after
/// every merge the kept answers equal the answers computed anew, and most merges kept them
/// current without a full recomputation. Then a merge that drops expired tombstones.
#[test]
fn placement_kept_across_merges_equals_placement_anew() {
    let mut n = node(WAL_CHECKPOINT_BYTES);
    add_phantoms(&mut n, 0, 30);
    let mut r = Prng::new(9);
    let names: Vec<String> = (0..300).map(|i| std::format!("svc-{i}")).collect();
    let archs = [Arch::Any, Arch::Any, Arch::X86_64, Arch::Aarch64];
    let mut e = [0u8; 256];
    let (mut kept, mut merges) = (0, 0);
    for clock in 1..=1500u64 {
        if r.chance(4, 5) {
            answers(&n); // the executor reads them most ticks: they are current
        }
        if clock % 100 == 0 {
            let m = n.members()[r.below(30) as usize].update();
            let dead = MemberUpdate {
                state: MemberState::Dead,
                incarnation: m.incarnation + 1,
                ..m
            };
            n.members.apply(Instant(0), &dead, n.id());
        }
        let name = &names[r.below(300) as usize];
        // Up to 24 replicas: first waves of one box, two and three.
        let replicas = if r.chance(1, 2) {
            1 + r.below(4)
        } else {
            1 + r.below(24)
        };
        let spec = (!r.chance(1, 6)).then(|| (replicas as u8, archs[r.below(4) as usize]));
        let len = entry(name, clock, spec, &mut e);
        if n.restore(&e[..len]).unwrap() == Merge::Stale {
            continue;
        }
        merges += 1;
        kept += usize::from(n.placed_kept());
        let got = answers(&n);
        n.forget_placed();
        assert_eq!(got, answers(&n), "clock {clock}");
    }
    assert!(
        kept * 10 > merges * 7,
        "{kept} of {merges} merges kept the answers"
    );
    let tombstones = n.store().slots().iter().filter(|s| s.tombstone).count();
    assert!(tombstones > 10, "{tombstones}");
    answers(&n);
    let len = entry(
        "late",
        TOMBSTONE_RETENTION_MS + 10_000,
        Some((2, Arch::Any)),
        &mut e,
    );
    n.restore(&e[..len]).unwrap();
    assert!(n.store().slots().iter().all(|s| !s.tombstone), "expired");
    let got = answers(&n);
    n.forget_placed();
    assert_eq!(got, answers(&n));
}
