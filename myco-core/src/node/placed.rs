//! Which entries are placed on this node, computed once per change of what decides it.
//!
//! The executor reconciles, the status reports what is not running and the digest of what is
//! placed here, every tick; each of those walks `placed_here`. Placing every entry costs up to a
//! rendezvous score per entry and candidate (about 10,000 SipHashes for 1,000 services), while
//! the answer changes only when the store or the set of live candidates does. So the answer is
//! kept as one bit per store slot with the inputs it came from, and recomputed only when they
//! differ: the store's root and length (its entries, by their digests) and a fingerprint of this
//! node and its live candidates with their metadata.

use super::{Node, PlacedDigests};
use crate::config::SERVICES_MAX;
use crate::place::{self, Candidate};
use crate::schema::message::MemberMeta;
use crate::state::store::Slot;

const WORDS: usize = SERVICES_MAX.div_ceil(64);

/// What the answer depends on. Equal inputs give equal answers: the store's root is the XOR of
/// its entries' digests (an entry's placement inputs are in the digested bytes), and two live
/// sets with one fingerprint differ only by a 64-bit accident, as two states with one root do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Inputs {
    root: u64,
    entries: usize,
    candidates: u64,
}

/// One bit per store slot (in `Store::slots` order) for the entries placed here.
#[derive(Clone, Copy)]
pub(super) struct PlacedCache {
    inputs: Option<Inputs>,
    mask: [u64; WORDS],
}

impl PlacedCache {
    pub(super) const EMPTY: PlacedCache = PlacedCache {
        inputs: None,
        mask: [0; WORDS],
    };
}

/// A bijective 64-bit mixer (splitmix64's finaliser): XORing mixed values, unlike raw ids, does
/// not let the metadata of one member cancel the id of another.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn meta_bits(meta: MemberMeta) -> u64 {
    (meta.arch as u64) | u64::from(meta.zone) << 8 | u64::from(meta.gpu) << 16
}

/// Order-independent fingerprint of a candidate set: each candidate counted once per listing,
/// so the caller must not list one twice (the member table holds each id once).
fn fingerprint(me: Candidate, others: impl Iterator<Item = Candidate>) -> u64 {
    let one = |c: Candidate| mix(c.id ^ mix(meta_bits(c.meta)));
    // `me` goes in with a different mix so it cannot cancel a member record of the same id.
    others.fold(mix(one(me)), |acc, c| acc ^ one(c))
}

impl Node {
    /// The entries this node should run, in key-hash order: each live entry whose placement
    /// includes this node, as its index record (its name is `store().name(slot)`, its entry
    /// `store().entry(slot)`). Lazy and allocation-free; nothing is decoded. Computed once per
    /// change of the store or of the live candidates: then each entry costs at most one score per
    /// candidate (its requirements are kept in the index), less when enough candidates outrank
    /// this node early (`docs/algorithm.md`, section 7).
    pub fn placed_here(&self) -> impl Iterator<Item = &Slot> + '_ {
        let mask = self.placed_mask();
        let slots = self.store.slots().iter().enumerate();
        slots.filter_map(move |(i, slot)| (mask[i / 64] >> (i % 64) & 1 == 1).then_some(slot))
    }

    /// For each member placement may choose, this node included: the XOR of the store digests of
    /// the live entries placed on it as this node sees the cluster. The rollout gate and the API
    /// read it; it is placed anew only when its inputs change, as `placed_here` is.
    pub fn placed_digests(&self) -> PlacedDigests {
        let inputs = self.placed_inputs();
        if let Some((at, digests)) = self.digests.take() {
            let hit = (at == inputs).then(|| digests.clone());
            self.digests.set(Some((at, digests)));
            if let Some(out) = hit {
                return out;
            }
        }
        let out = self.compute_placed_digests();
        self.digests.set(Some((inputs, out.clone())));
        out
    }

    /// Drops the kept answers of `placed_here` and `placed_digests`, so the next call computes
    /// them: for benchmarks of that cost. Never needed for correctness.
    pub fn forget_placed(&self) {
        self.placed.set(PlacedCache::EMPTY);
        self.digests.set(None);
    }

    fn placed_inputs(&self) -> Inputs {
        Inputs {
            root: self.store.root(),
            entries: self.store.slots().len(),
            candidates: fingerprint(self.me_candidate(), self.live_candidates()),
        }
    }

    fn me_candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            meta: self.meta,
        }
    }

    fn placed_mask(&self) -> [u64; WORDS] {
        let inputs = self.placed_inputs();
        let cached = self.placed.get();
        if cached.inputs == Some(inputs) {
            return cached.mask;
        }
        let mask = self.compute_placed_mask();
        self.placed.set(PlacedCache {
            inputs: Some(inputs),
            mask,
        });
        mask
    }

    fn compute_placed_mask(&self) -> [u64; WORDS] {
        let me = self.me_candidate();
        let mut mask = [0u64; WORDS];
        for (i, slot) in self.store.slots().iter().enumerate() {
            let Some((requires, replicas)) = slot.placement.as_ref().filter(|_| !slot.tombstone)
            else {
                continue;
            };
            if place::wins(
                slot.key_hash,
                requires,
                *replicas,
                me,
                self.live_candidates(),
            ) {
                mask[i / 64] |= 1 << (i % 64);
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::entry::Arch;

    fn c(id: u64, zone: u8) -> Candidate {
        let meta = MemberMeta {
            arch: Arch::X86_64,
            zone,
            gpu: false,
            bridge: false,
            relay: false,
            nat: false,
        };
        Candidate { id, meta }
    }

    #[test]
    fn fingerprint_ignores_order_and_sees_membership_and_metadata() {
        let me = c(1, 0);
        let ab = fingerprint(me, [c(2, 0), c(3, 0)].into_iter());
        assert_eq!(ab, fingerprint(me, [c(3, 0), c(2, 0)].into_iter()));
        assert_ne!(ab, fingerprint(me, [c(2, 0)].into_iter()));
        assert_ne!(ab, fingerprint(me, [c(2, 0), c(3, 1)].into_iter()));
        assert_ne!(ab, fingerprint(c(1, 1), [c(2, 0), c(3, 0)].into_iter()));
        // A member record with this node's own id does not cancel it out.
        assert_ne!(
            fingerprint(me, [me].into_iter()),
            fingerprint(me, [].into_iter())
        );
    }
}
