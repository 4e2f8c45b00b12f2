//! Placement: which members run each service, decided by every node alone from its own state.
//!
//! Rendezvous (highest-random-weight) hashing. For a service with key hash `k`, each candidate
//! member `m` scores `SipHash(DOMAIN_PLACE, k || m)`; the `replicas` eligible candidates with the
//! highest scores win, and on an equal score (a 2^-64 accident) the lower member id wins. The
//! answer depends only on the key hash, the service's requirements and replicas, and the *set* of
//! candidates with their metadata: not on the order they are listed in, not on duplicates, not on
//! which node computes it. So two nodes whose state hashes agree and whose member tables agree on
//! who is not dead compute the same placement, and a dead member's services move without a
//! coordinator.
//!
//! Minimal churn. A member's score for a service does not depend on any other member, so removing
//! a member changes only the services it won (each takes the best candidate that had just missed
//! out), and adding one changes a service only if the newcomer outscores one of its winners (it
//! then takes the lowest winner's place). Every other service keeps its winners.
//!
//! Candidates (`Node::placement`): the node itself, always, and every member it does not believe
//! dead. A suspect still counts: placement does not move on a suspicion, because under loss SWIM
//! suspects healthy members all the time and moving a service means stopping it on one box and
//! building and starting it on another. The price is that a box that really died keeps its
//! services, unrun, until its suspicion times out and its death spreads: at most the Lifeguard
//! maximum (the profile's `suspicion_max_factor` x the minimum timeout, 8 s for 11..=100 members
//! in `lan`) after the first failed probe, plus a few probe periods (`docs/algorithm.md`, section 7).
//!
//! Pure functions with no allocation: a placement is a `heapless::Vec` of at most
//! `PLACEMENT_MAX` member ids, best first.

use crate::config::{PLACEMENT_MAX, REPLICAS_MAX};
use crate::hash::{SipHasher, DOMAIN_PLACE};
use crate::schema::entry::{Arch, EntryBody, Requirements};
use crate::schema::message::MemberMeta;
use core::cmp::Reverse;
use heapless::Vec;

/// The members a service is placed on, best score first.
pub type Placement = Vec<u64, PLACEMENT_MAX>;

/// A member that placement may choose: its id and what its certificate says it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub meta: MemberMeta,
}

/// The rendezvous score of `member` for the service with `key_hash`.
pub fn score(key_hash: u64, member: u64) -> u64 {
    Ranks::new(key_hash).score(member)
}

/// Total order of candidates for one service: higher score first, then lower id.
type Rank = (u64, Reverse<u64>);

/// The ranks of one service's candidates. The hash state after the service's word is computed
/// once: placement scores every candidate of every service it places, and the first of the
/// hash's three compressions was a fifth of that cost.
struct Ranks(SipHasher);

impl Ranks {
    fn new(key_hash: u64) -> Ranks {
        let mut h = SipHasher::new(DOMAIN_PLACE);
        h.write_u64(key_hash);
        Ranks(h)
    }

    #[inline]
    fn score(&self, member: u64) -> u64 {
        let mut h = self.0;
        h.write_u64(member);
        h.finish()
    }

    #[inline]
    fn of(&self, member: u64) -> Rank {
        (self.score(member), Reverse(member))
    }
}

/// True if a box with `meta` may run a service that `requires` this: the arch is `Any` or the
/// box's own, the box has a GPU if one is needed, and the zone is the box's if one is named.
pub fn eligible(requires: &Requirements, meta: &MemberMeta) -> bool {
    let arch = requires.arch == Arch::Any || requires.arch == meta.arch;
    let gpu = !requires.gpu || meta.gpu;
    let zone = requires.zone.is_none_or(|z| z == meta.zone);
    arch && gpu && zone
}

/// Replicas as a count of winners. Stored entries never exceed `REPLICAS_MAX` (validation
/// refuses them); a larger argument is treated as the maximum rather than trusted.
fn wanted(replicas: u8) -> usize {
    usize::from(replicas.min(REPLICAS_MAX))
}

/// The `replicas` eligible candidates with the highest scores for `key_hash`, best first.
/// Exactly `min(replicas, distinct eligible candidates)` ids; a candidate listed twice counts once.
pub fn place(
    key_hash: u64,
    requires: &Requirements,
    replicas: u8,
    candidates: impl IntoIterator<Item = Candidate>,
) -> Placement {
    let want = wanted(replicas);
    // Sorted best first; never longer than `want`.
    let mut best: Vec<Rank, PLACEMENT_MAX> = Vec::new();
    let ranks = Ranks::new(key_hash);
    for c in candidates {
        if want == 0 || !eligible(requires, &c.meta) {
            continue;
        }
        let r = ranks.of(c.id);
        if best.len() == want && best.last().is_some_and(|last| r <= *last) {
            continue;
        }
        let at = best.partition_point(|b| *b > r);
        if best.get(at) == Some(&r) {
            continue; // the same member listed twice
        }
        if best.len() == want {
            best.pop();
        }
        best.insert(at, r).expect("room made above");
    }
    assert!(best.len() <= want);
    assert!(best.windows(2).all(|w| w[0] > w[1]), "winners sorted");
    best.iter().map(|(_, Reverse(id))| *id).collect()
}

/// Where the entry `body` (key hash `key_hash`) runs among `candidates`. A tombstone runs
/// nowhere.
pub fn place_entry(
    key_hash: u64,
    body: &EntryBody<'_>,
    candidates: impl IntoIterator<Item = Candidate>,
) -> Placement {
    match &body.spec {
        None => Placement::new(),
        Some(spec) => place(key_hash, &spec.requires, spec.replicas, candidates),
    }
}

/// True if `me` is among the winners of `place(key_hash, requires, replicas, me + others)`,
/// without building the list: it stops as soon as `replicas` others outrank `me`. `others` must
/// not list `me`.
pub fn wins(
    key_hash: u64,
    requires: &Requirements,
    replicas: u8,
    me: Candidate,
    others: impl IntoIterator<Item = Candidate>,
) -> bool {
    let want = wanted(replicas);
    if want == 0 || !eligible(requires, &me.meta) {
        return false;
    }
    let ranks = Ranks::new(key_hash);
    let mine = ranks.of(me.id);
    // Outranking ids seen so far; a duplicate must not count twice.
    let mut above: Vec<u64, PLACEMENT_MAX> = Vec::new();
    for c in others {
        if c.id == me.id || !eligible(requires, &c.meta) || ranks.of(c.id) <= mine {
            continue;
        }
        if above.contains(&c.id) {
            continue;
        }
        above.push(c.id).expect("stops at want <= capacity");
        if above.len() == want {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::random::Prng;
    use crate::schema::entry::{ServiceSpec, Source, Version};
    use crate::state::store::key_hash;

    const ANY: Requirements = Requirements {
        arch: Arch::Any,
        gpu: false,
        zone: None,
    };

    fn meta(arch: Arch, gpu: bool, zone: u8) -> MemberMeta {
        MemberMeta {
            arch,
            zone,
            gpu,
            bridge: false,
            relay: false,
            nat: false,
        }
    }

    fn x86(id: u64) -> Candidate {
        Candidate {
            id,
            meta: meta(Arch::X86_64, false, 0),
        }
    }

    /// A random mix of boxes: x86_64 or aarch64, some with GPUs, zones 0 and 1.
    fn fleet(r: &mut Prng, n: usize) -> Vec<Candidate, 256> {
        let mut v = Vec::new();
        for _ in 0..n {
            let arch = if r.chance(1, 3) {
                Arch::Aarch64
            } else {
                Arch::X86_64
            };
            let m = meta(arch, r.chance(1, 4), r.below(2) as u8);
            v.push(Candidate {
                id: r.next_u64(),
                meta: m,
            })
            .unwrap();
        }
        v
    }

    fn requirements(r: &mut Prng) -> Requirements {
        Requirements {
            arch: [Arch::Any, Arch::Any, Arch::X86_64, Arch::Aarch64][r.below(4) as usize],
            gpu: r.chance(1, 4),
            zone: [None, None, Some(0), Some(1), Some(2)][r.below(5) as usize],
        }
    }

    fn shuffle(r: &mut Prng, v: &mut [Candidate]) {
        for i in (1..v.len()).rev() {
            v.swap(i, r.below(i as u64 + 1) as usize);
        }
    }

    /// The score function is part of the protocol: every node of a fleet, whatever version it
    /// runs, must rank members alike, or a rolling upgrade would move services back and forth.
    /// The value was computed by an independent SipHash-2-4 (Python) over the 16 bytes
    /// `le(key_hash("web")) || le(1)` with key `(K0 ^ DOMAIN_PLACE, K1)`.
    #[test]
    fn score_is_pinned() {
        assert_eq!(score(key_hash("web"), 1), 0xc415_69db_6cc2_71cf);
        assert_ne!(score(key_hash("web"), 1), score(key_hash("web"), 2));
        assert_ne!(score(key_hash("web"), 1), score(key_hash("db"), 1));
    }

    /// Each requirement on its own excludes exactly the boxes it should.
    #[test]
    fn eligibility_follows_requirements() {
        let x = meta(Arch::X86_64, false, 0);
        let a_gpu = meta(Arch::Aarch64, true, 1);
        assert!(eligible(&ANY, &x) && eligible(&ANY, &a_gpu));
        let arm = Requirements {
            arch: Arch::Aarch64,
            ..ANY
        };
        assert!(!eligible(&arm, &x) && eligible(&arm, &a_gpu));
        let gpu = Requirements { gpu: true, ..ANY };
        assert!(!eligible(&gpu, &x) && eligible(&gpu, &a_gpu));
        let zone1 = Requirements {
            zone: Some(1),
            ..ANY
        };
        assert!(!eligible(&zone1, &x) && eligible(&zone1, &a_gpu));
        let x86_gpu = Requirements {
            arch: Arch::X86_64,
            gpu: true,
            zone: None,
        };
        assert!(!eligible(&x86_gpu, &x) && !eligible(&x86_gpu, &a_gpu));
    }

    /// Property: the placement is exactly the top `min(replicas, eligible)` eligible candidates
    /// by (score, lower id), best first, as a brute-force sort computes it; and `wins` agrees
    /// with it for every candidate.
    #[test]
    fn winners_are_the_top_eligible_by_score() {
        let mut r = Prng::new(1);
        for case in 0..400 {
            let n = r.below(80) as usize;
            let members = fleet(&mut r, n);
            let req = requirements(&mut r);
            let replicas = 1 + r.below(u64::from(REPLICAS_MAX)) as u8;
            let k = r.next_u64();
            let got = place(k, &req, replicas, members.iter().copied());
            let mut all: std::vec::Vec<Rank> = members
                .iter()
                .filter(|c| eligible(&req, &c.meta))
                .map(|c| (score(k, c.id), Reverse(c.id)))
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            let eligible_count = all.len();
            all.truncate(usize::from(replicas));
            let expected: std::vec::Vec<u64> = all.iter().map(|(_, Reverse(id))| *id).collect();
            assert_eq!(got.as_slice(), expected.as_slice(), "case {case}");
            assert_eq!(got.len(), usize::from(replicas).min(eligible_count));
            for (i, c) in members.iter().enumerate() {
                let others = members
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, c)| *c);
                assert_eq!(
                    wins(k, &req, replicas, *c, others),
                    got.contains(&c.id),
                    "case {case}"
                );
            }
        }
    }

    /// Property: the answer depends on the set of candidates only: any order, and any member
    /// listed twice, gives the same placement.
    #[test]
    fn order_and_duplicates_do_not_matter() {
        let mut r = Prng::new(2);
        for _ in 0..300 {
            let n = 1 + r.below(60) as usize;
            let members = fleet(&mut r, n);
            let req = requirements(&mut r);
            let replicas = 1 + r.below(8) as u8;
            let k = r.next_u64();
            let first = place(k, &req, replicas, members.iter().copied());
            let mut shuffled = members.clone();
            shuffle(&mut r, &mut shuffled);
            assert_eq!(place(k, &req, replicas, shuffled.iter().copied()), first);
            let doubled = shuffled.iter().chain(members.iter()).copied();
            assert_eq!(place(k, &req, replicas, doubled), first);
            assert_eq!(place(k, &req, replicas, members.iter().copied()), first);
        }
    }

    /// Property (minimal churn, removal): when a member leaves, every service it did not run
    /// keeps exactly its winners, and every service it ran keeps all its other winners and gains
    /// at most one member, the next best, whenever an eligible one is left.
    #[test]
    fn removing_a_member_moves_only_its_services() {
        let mut r = Prng::new(3);
        let (mut held, mut replaced) = (0, 0);
        for _ in 0..40 {
            let n = 2 + r.below(60) as usize;
            let members = fleet(&mut r, n);
            let gone = members[r.below(n as u64) as usize].id;
            let rest = || members.iter().copied().filter(|c| c.id != gone);
            for s in 0..200u64 {
                let req = requirements(&mut r);
                let replicas = 1 + r.below(5) as u8;
                let k = key_hash_of(s);
                let before = place(k, &req, replicas, members.iter().copied());
                let after = place(k, &req, replicas, rest());
                if !before.contains(&gone) {
                    assert_eq!(after, before, "a service the member did not run moved");
                    continue;
                }
                held += 1;
                let kept = before.iter().filter(|id| **id != gone);
                assert!(kept.clone().all(|id| after.contains(id)));
                let new = after.iter().filter(|id| !before.contains(id)).count();
                let spare = rest().filter(|c| eligible(&req, &c.meta)).count() >= before.len();
                assert_eq!(new, usize::from(spare));
                replaced += new;
            }
        }
        assert!(
            held > 100 && replaced > 50,
            "{held} held, {replaced} replaced"
        );
    }

    /// Property (minimal churn, addition): when a member joins, a service either keeps its
    /// winners or gains the newcomer, losing at most its lowest-ranked winner.
    #[test]
    fn adding_a_member_moves_services_only_onto_it() {
        let mut r = Prng::new(4);
        let mut won = 0;
        for _ in 0..40 {
            let n = r.below(60) as usize;
            let members = fleet(&mut r, n);
            let newcomer = fleet(&mut r, 1)[0];
            let all = || members.iter().copied().chain([newcomer]);
            for s in 0..200u64 {
                let req = requirements(&mut r);
                let replicas = 1 + r.below(5) as u8;
                let k = key_hash_of(s);
                let before = place(k, &req, replicas, members.iter().copied());
                let after = place(k, &req, replicas, all());
                if !after.contains(&newcomer.id) {
                    assert_eq!(after, before, "a service moved, but not onto the newcomer");
                    continue;
                }
                won += 1;
                let others: std::vec::Vec<u64> = after
                    .iter()
                    .copied()
                    .filter(|id| *id != newcomer.id)
                    .collect();
                assert!(others.iter().all(|id| before.contains(id)));
                assert!(before.len() - others.len() <= 1);
                if before.len() > others.len() {
                    assert!(
                        !others.contains(before.last().unwrap()),
                        "the lowest one left"
                    );
                }
            }
        }
        assert!(won > 100, "{won}");
    }

    /// Property: every winner meets the service's requirements, and a service nobody can run
    /// (no eligible box) is placed nowhere rather than on an ineligible box.
    #[test]
    fn eligibility_is_respected() {
        let mut r = Prng::new(5);
        for _ in 0..300 {
            let n = r.below(40) as usize;
            let members = fleet(&mut r, n);
            let req = requirements(&mut r);
            let got = place(r.next_u64(), &req, 64, members.iter().copied());
            let eligible_count = members.iter().filter(|c| eligible(&req, &c.meta)).count();
            assert_eq!(got.len(), eligible_count);
            for id in &got {
                let c = members.iter().find(|c| c.id == *id).unwrap();
                assert!(eligible(&req, &c.meta));
            }
        }
        let x = [x86(1), x86(2)];
        let gpu = Requirements { gpu: true, ..ANY };
        assert!(place(7, &gpu, 3, x).is_empty());
        assert!(!wins(7, &gpu, 3, x86(3), x));
    }

    /// A tombstone runs nowhere, whatever members exist; a live entry runs on its replicas.
    #[test]
    fn tombstones_place_nowhere() {
        let members = [x86(1), x86(2), x86(3)];
        let mut body = EntryBody {
            name: "web",
            version: Version::default(),
            spec: None,
        };
        assert!(place_entry(key_hash("web"), &body, members).is_empty());
        body.spec = Some(ServiceSpec {
            replicas: 2,
            ..ServiceSpec::minimal(Source::Exec { path: "/bin/true" })
        });
        assert_eq!(place_entry(key_hash("web"), &body, members).len(), 2);
    }

    /// Rendezvous spreads services evenly: over 4000 single-replica services on 20 identical
    /// boxes, every box runs between half and one and a half times its fair share.
    #[test]
    fn load_spreads_evenly() {
        let members: std::vec::Vec<Candidate> = (0..20).map(|i| x86(1000 + i)).collect();
        let mut load = [0u32; 20];
        for s in 0..4000 {
            let p = place(key_hash_of(s), &ANY, 1, members.iter().copied());
            load[(p[0] - 1000) as usize] += 1;
        }
        assert!(load.iter().all(|&l| (100..=300).contains(&l)), "{load:?}");
    }

    fn key_hash_of(s: u64) -> u64 {
        crate::hash::digest(crate::hash::DOMAIN_KEY, &s.to_le_bytes())
    }
}
