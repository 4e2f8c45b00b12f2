//! Which entries are placed on this node, computed once per change of what decides it.
//!
//! The executor reconciles, the status reports what is not running and the digest of what is
//! placed here, every tick; each of those walks `placed_here`. Placing every entry costs up to a
//! rendezvous score per entry and candidate (about 10,000 SipHashes for 1,000 services), while
//! the answer changes only when the store or the set of live candidates does. So the answer is
//! kept as one bit per store slot with the inputs it came from, and recomputed only when they
//! differ: the store's root and length (its entries, by their digests) and a fingerprint of this
//! node and its live candidates with their metadata.
//!
//! While entries arrive (a deploy spreading, a node catching up) the store changes between
//! nearly every two reads, and placing all of it again each time was most of the simulator's
//! time. A merge changes one record, and an entry's placement depends on that record and the
//! candidates alone; so a merge through [`Node::merge_store`] updates the kept answers for that
//! record only (its bit, and the XOR of its digest on the members placing it), when they were
//! current before the merge and the candidates are those they were computed with. Anything else
//! (expired tombstones dropped by the merge, candidates changed since) leaves them to be
//! recomputed in full, as before.
//!
//! Beside each bit is a second one: whether this node is in the entry's first wave
//! ([`crate::executor::rollout::in_first_wave`]). The executor asks that of every unit on trial
//! each time it reports its status, and placing the entry anew each time was most of that
//! report's cost; the bit is computed with the placed one, for entries placed here only.
//!
//! Whole placements (`Node::placement`) are asked again and again of the same few services: the
//! rollout gate of every unit that waits for its first wave, each round, and each DNS answer.
//! The last answers are kept by key (direct-mapped, a placement of up to `PLACEMENT_KEPT_IDS`
//! members each) with what they depend on: the entry's digest and the fingerprint of the
//! candidates.

use super::{Node, PlacedDigests};
use crate::config::{PLACEMENTS_KEPT, PLACEMENT_KEPT_IDS, SERVICES_MAX};
use crate::executor::rollout::in_first_wave;
use crate::hash::mix;
use crate::place::{self, Candidate, Placement};
use crate::schema::entry::Entry;
use crate::schema::message::MemberMeta;
use crate::state::store::{Merge, Merged, Slot, StoreError};

const WORDS: usize = SERVICES_MAX.div_ceil(64);

/// What the answer depends on. Equal inputs give equal answers: the store's root is the XOR of
/// its entries' digests (an entry's placement inputs are in the digested bytes), and two live
/// sets with one fingerprint differ only by a 64-bit accident, as two states with one root do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Inputs {
    root: u64,
    entries: usize,
    candidates: u64,
}

/// What the executor's round reads of this node besides statuses ([`Node::placement_inputs`]):
/// the inputs of `placed_here`, which are those of every placement too, and the peers in reach
/// (`executor::reconcile::mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementInputs {
    inputs: Inputs,
    peers_in_reach: usize,
}

/// One bit per store slot (in `Store::slots` order) for the entries placed here, and one for
/// those of them whose first wave includes this node.
#[derive(Clone, Copy)]
pub(super) struct PlacedCache {
    inputs: Option<Inputs>,
    mask: [u64; WORDS],
    first: [u64; WORDS],
}

impl PlacedCache {
    pub(super) const EMPTY: PlacedCache = PlacedCache {
        inputs: None,
        mask: [0; WORDS],
        first: [0; WORDS],
    };
}

/// One kept answer of `Node::placement`: `ids[..len]` for service `key` whose entry has digest
/// `digest`, among the candidates of fingerprint `candidates`. `len > PLACEMENT_KEPT_IDS` marks
/// none.
#[derive(Clone, Copy)]
pub(super) struct KeptPlacement {
    key: u64,
    digest: u64,
    candidates: u64,
    len: u8,
    ids: [u64; PLACEMENT_KEPT_IDS],
}

// Its line of the memory budget in `config.rs`.
const _: () = assert!(core::mem::size_of::<KeptPlacement>() <= 32 + PLACEMENT_KEPT_IDS * 8);

impl KeptPlacement {
    pub(super) const EMPTY: KeptPlacement = KeptPlacement {
        key: 0,
        digest: 0,
        candidates: 0,
        len: u8::MAX,
        ids: [0; PLACEMENT_KEPT_IDS],
    };
}

fn meta_bits(meta: MemberMeta) -> u64 {
    (meta.arch as u64) | u64::from(meta.zone) << 8 | u64::from(meta.gpu) << 16
}

/// Order-independent fingerprint of a candidate set: each candidate counted once per listing,
/// so the caller must not list one twice (the member table holds each id once).
/// `others` is `others_print` of the members.
fn fingerprint(me: Candidate, others: u64) -> u64 {
    // `me` goes in with a different mix so it cannot cancel a member record of the same id.
    mix(one_print(me)) ^ others
}

/// Mixed (`hash::mix`) so that XORing the prints, unlike raw ids, does not let the metadata of
/// one member cancel the id of another.
fn one_print(c: Candidate) -> u64 {
    mix(c.id ^ mix(meta_bits(c.meta)))
}

/// The members' part of `fingerprint`.
fn others_print(others: impl Iterator<Item = Candidate>) -> u64 {
    others.fold(0, |acc, c| acc ^ one_print(c))
}

impl Node {
    /// The entries this node should run, in key-hash order: each live entry whose placement
    /// includes this node, as its index record (its name is `store().name(slot)`, its entry
    /// `store().entry(slot)`). Lazy and allocation-free; nothing is decoded. Computed once per
    /// change of the store or of the live candidates: then each entry costs at most one score per
    /// candidate (its requirements are kept in the index), less when enough candidates outrank
    /// this node early (`docs/algorithm.md`, section 7).
    pub fn placed_here(&self) -> impl Iterator<Item = &Slot> + '_ {
        let mask = self.placed_cache().mask;
        let slots = self.store.slots();
        // The set bits only, lowest first: a node runs a small share of the entries, and this
        // is walked several times a tick.
        let set_bits = (0..WORDS).flat_map(move |w| {
            let mut bits = mask[w];
            core::iter::from_fn(move || {
                let low = bits.trailing_zeros() as usize;
                bits &= bits.wrapping_sub(1);
                (low < 64).then_some(w * 64 + low)
            })
        });
        set_bits.map(move |i| &slots[i])
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

    /// Whether the kept answer of `placed_here` is current (the next read computes nothing).
    #[cfg(test)]
    pub(super) fn placed_kept(&self) -> bool {
        self.placed.get().inputs == Some(self.placed_inputs())
    }

    /// What a round of the executor reads of this node besides statuses: when a member event
    /// leaves it unchanged (a suspect that refuted, a member's new incarnation), nothing placed
    /// moved and the executor need not look again (`Executor::handle_placement_changed`).
    pub fn placement_inputs(&self) -> PlacementInputs {
        PlacementInputs {
            inputs: self.placed_inputs(),
            peers_in_reach: self.peers_in_reach(),
        }
    }

    fn placed_inputs(&self) -> Inputs {
        Inputs {
            root: self.store.root(),
            entries: self.store.slots().len(),
            candidates: self.candidates_print(),
        }
    }

    /// `fingerprint` of this node and its live candidates. The members' part is kept while the
    /// member table is unchanged (`Members::generation`): every read of a kept answer asks it,
    /// many times an executor step, and it walks the whole table.
    fn candidates_print(&self) -> u64 {
        let generation = self.members.generation();
        let others = match self.others_print.get() {
            Some((at, print)) if at == generation => print,
            _ => {
                let print = others_print(self.live_candidates());
                self.others_print.set(Some((generation, print)));
                print
            }
        };
        fingerprint(self.me_candidate(), others)
    }

    fn me_candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            meta: self.meta,
        }
    }

    /// The members that should run the service stored under `key_hash` (`key_hash(name)` in
    /// `state::store`), best first, as this node sees the cluster now: empty for a tombstone or
    /// a key it does not hold. Nodes that agree on the state and on who is not dead agree on it.
    /// Costs one score per candidate (the entry's requirements are kept in its index record, so
    /// nothing is decoded), or nothing when the answer for the same entry among the same
    /// candidates is kept; allocates nothing.
    pub fn placement(&self, key_hash: u64) -> Placement {
        let slot = self.store.range(key_hash, key_hash).first();
        let Some((slot, (requires, replicas))) =
            slot.and_then(|s| s.placement.as_ref().map(|p| (s, p)))
        else {
            return Placement::new();
        };
        let candidates = self.candidates_print();
        let cell = &self.placements[key_hash as usize % PLACEMENTS_KEPT];
        let kept = cell.get();
        let inputs = (key_hash, slot.digest, candidates);
        if (kept.key, kept.digest, kept.candidates) == inputs
            && kept.len as usize <= PLACEMENT_KEPT_IDS
        {
            return Placement::from_slice(&kept.ids[..usize::from(kept.len)]).expect("fits");
        }
        let placement = place::place(key_hash, requires, *replicas, self.placement_candidates());
        if placement.len() <= PLACEMENT_KEPT_IDS {
            let mut ids = [0; PLACEMENT_KEPT_IDS];
            ids[..placement.len()].copy_from_slice(&placement);
            let len = placement.len() as u8;
            let (key, digest, candidates) = inputs;
            cell.set(KeptPlacement {
                key,
                digest,
                candidates,
                len,
                ids,
            });
        }
        placement
    }

    /// Whether this node is in the first wave of the live entry with key hash `key_hash`: what
    /// `rollout::in_first_wave(&self.placement(key_hash), self.id())` answers, from the answer
    /// `placed_here` keeps.
    pub fn in_first_wave_here(&self, key_hash: u64) -> bool {
        let first = self.placed_cache().first;
        self.store
            .position(key_hash)
            .is_some_and(|i| first[i / 64] >> (i % 64) & 1 == 1)
    }

    fn placed_cache(&self) -> PlacedCache {
        let inputs = self.placed_inputs();
        let cached = self.placed.get();
        if cached.inputs == Some(inputs) {
            return cached;
        }
        let mut cache = PlacedCache {
            inputs: Some(inputs),
            ..PlacedCache::EMPTY
        };
        for (i, slot) in self.store.slots().iter().enumerate() {
            let (placed, first) = self.standing(slot);
            set_bit(&mut cache.mask, i, placed, false);
            set_bit(&mut cache.first, i, first, false);
        }
        self.placed.set(cache);
        cache
    }

    /// Whether the entry of `slot` is placed on this node among its live candidates now, and
    /// whether this node is in its first wave.
    fn standing(&self, slot: &Slot) -> (bool, bool) {
        let Some((requires, replicas)) = slot.placement.as_ref().filter(|_| !slot.tombstone) else {
            return (false, false);
        };
        let me = self.me_candidate();
        let key = slot.key_hash;
        if !place::wins(key, requires, *replicas, me, self.live_candidates()) {
            return (false, false);
        }
        // Placed here, so worth the whole list: the first wave is a share of its length.
        let placement = place::place(key, requires, *replicas, self.placement_candidates());
        (true, in_first_wave(&placement, self.id))
    }

    /// Merges an entry into the store ([`crate::state::store::Store::merge`]) and brings the kept
    /// answers of `placed_here` and `placed_digests` along for the record it wrote, so they need
    /// not be recomputed in full. Every store change goes through here.
    /// `entry` is `bytes` decoded.
    pub(super) fn merge_store(
        &mut self,
        bytes: &[u8],
        entry: &Entry<'_>,
    ) -> Result<Merge, StoreError> {
        let before = (self.store.root(), self.store.slots().len());
        let merged = self.store.merge_decoded(bytes, entry)?;
        if merged.merge != Merge::Stale {
            self.follow_merge(before, &merged);
        }
        Ok(merged.merge)
    }

    /// Updates the kept answers after `merged` took the store from `before` (root, length).
    fn follow_merge(&mut self, before: (u64, usize), merged: &Merged) {
        let grew = usize::from(merged.merge == Merge::Inserted);
        let at = self.store.position(merged.key_hash);
        // The inputs the kept answers must have been computed from for a one-record update.
        let current = Inputs {
            root: before.0,
            entries: before.1,
            candidates: self.candidates_print(),
        };
        let after = Inputs {
            root: self.store.root(),
            entries: self.store.slots().len(),
            ..current
        };
        let (Some(at), true) = (at, after.entries == before.1 + grew) else {
            // Expired tombstones left too: every position after them moved.
            return self.forget_placed();
        };
        let slot = self.store.slots()[at];
        let mut cache = self.placed.get();
        if cache.inputs == Some(current) {
            let (placed, first) = self.standing(&slot);
            set_bit(&mut cache.mask, at, placed, grew == 1);
            set_bit(&mut cache.first, at, first, grew == 1);
            cache.inputs = Some(after);
        } else {
            cache = PlacedCache::EMPTY;
        }
        self.placed.set(cache);
        let digests = self.digests.take().filter(|(inputs, _)| *inputs == current);
        if let Some((_, mut digests)) = digests {
            if let Some(old) = merged.replaced {
                self.xor_placed_digest(&mut digests, &old);
            }
            self.xor_placed_digest(&mut digests, &slot);
            self.digests.set(Some((after, digests)));
        }
    }
}

/// Sets bit `at` of `mask` to `bit`; with `insert`, the bits from `at` on move up one first (a
/// record inserted at `at` moved the records after it).
fn set_bit(mask: &mut [u64; WORDS], at: usize, bit: bool, insert: bool) {
    if insert {
        // Shift the whole mask up by one bit from `at`: word by word from the top, carrying
        // each word's top bit into the next.
        let (word, offset) = (at / 64, at % 64);
        for w in (word + 1..WORDS).rev() {
            mask[w] = mask[w] << 1 | mask[w - 1] >> 63;
        }
        let low = mask[word] & ((1u64 << offset) - 1);
        mask[word] = (mask[word] & !((1u64 << offset) - 1)) << 1 | low;
    }
    let one = 1u64 << (at % 64);
    if bit {
        mask[at / 64] |= one;
    } else {
        mask[at / 64] &= !one;
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
        let ab = fingerprint(me, others_print([c(2, 0), c(3, 0)].into_iter()));
        assert_eq!(
            ab,
            fingerprint(me, others_print([c(3, 0), c(2, 0)].into_iter()))
        );
        assert_ne!(ab, fingerprint(me, others_print([c(2, 0)].into_iter())));
        assert_ne!(
            ab,
            fingerprint(me, others_print([c(2, 0), c(3, 1)].into_iter()))
        );
        assert_ne!(
            ab,
            fingerprint(c(1, 1), others_print([c(2, 0), c(3, 0)].into_iter()))
        );
        // A member record with this node's own id does not cancel it out.
        assert_ne!(
            fingerprint(me, others_print([me].into_iter())),
            fingerprint(me, others_print([].into_iter()))
        );
    }
}
