//! Fuzzes `Store::merge`, the desired-state CRDT, on a small store that fills up quickly.
//!
//! The input is a list of records, each either raw bytes (length-prefixed) or an entry synthesised
//! from a few fuzz bytes (name from a short list, clock, key id, tombstone flag, size, signature),
//! so the fuzzer reaches replacements, ties, tombstone expiry, eviction and arena compaction.
//! Proves: no panic; the incremental Merkle digests always equal a recomputation; a refused or
//! stale merge changes nothing; and merging the sequence forwards and backwards gives the same
//! state hash (LWW merge commutes) unless, in either order, a merge was refused for a reason that
//! depends on the store's state (room, tombstone expiry, key collision) or the store dropped a
//! tombstone. Bytes that do not decode are refused whatever the order, so they do not disable the
//! check.
#![no_main]

#[path = "common/filler.rs"]
mod filler;

use filler::filler_args;
use libfuzzer_sys::fuzz_target;
use myco_core::config::ENTRY_BYTES_MAX;
use myco_core::schema::entry::{encode_entry, EntryBody, ServiceSpec, Source, Version};
use myco_core::state::store::{Merge, Store, StoreError};

type Small = Store<8, 4096>;

const NAMES: [&str; 12] = [
    "web", "db", "cache", "a", "b", "c", "d", "e", "f", "g", "h", "worker-1",
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// An entry built from five fuzz bytes; `None` if the fuzz bytes ran out.
fn synthesise(input: &mut Input<'_>) -> Option<Vec<u8>> {
    let name = NAMES[usize::from(input.u8()?) % NAMES.len()];
    let clock_byte = input.u8()?;
    let flags = input.u8()?;
    let size = input.u8()?;
    let sig = input.u8()?;
    // Clock steps of 2^24 ms put the 7-day tombstone retention about 36 steps away.
    let version = Version {
        clock: u64::from(clock_byte) << 24,
        key_id: u32::from(flags >> 4) % 3,
    };
    let args = filler_args(size);
    let spec = ServiceSpec {
        args,
        ..ServiceSpec::minimal(Source::Exec { path: "/bin/true" })
    };
    let body = EntryBody {
        name,
        version,
        spec: (flags & 1 == 0).then_some(spec),
    };
    let mut out = [0u8; ENTRY_BYTES_MAX];
    // An entry too long to encode becomes an empty record, which every store refuses alike.
    let n = encode_entry(&body, &[sig % 4; 64], &mut out).unwrap_or(0);
    Some(out[..n].to_vec())
}

fn records(data: &[u8]) -> Vec<Vec<u8>> {
    let mut input = Input(data);
    let mut out = Vec::new();
    while let Some(mode) = input.u8() {
        if mode % 4 != 0 {
            match synthesise(&mut input) {
                Some(e) => out.push(e),
                None => break,
            }
        } else {
            let len = usize::from(mode >> 2) * 16 + usize::from(input.u8().unwrap_or(0) % 16);
            out.push(input.take(len).to_vec());
        }
    }
    out
}

/// Merges every record into `store`, checking digests after each. True if the result must not
/// depend on the order: no merge was refused for a reason that depends on what the store held, and
/// the store dropped nothing (an expired tombstone, or the oldest tombstone evicted from a full
/// index to make room). Dropping a tombstone forgets a delete, so a live entry it had beaten can
/// come back afterwards in one order and not in the other: that is the documented price of
/// bounded memory, not a merge bug.
fn merge_all<'a>(store: &mut Small, list: impl Iterator<Item = &'a Vec<u8>>) -> bool {
    let mut order_free = true;
    for bytes in list {
        let (before, len_before) = (store.state_hash(), store.len());
        let result = store.merge(bytes);
        assert!(store.check_digests(), "digests diverged after {result:?}");
        match result {
            Ok(Merge::Stale) | Err(_) => assert_eq!(store.state_hash(), before, "{result:?}"),
            Ok(_) => {}
        }
        let grew = usize::from(result == Ok(Merge::Inserted));
        order_free &= store.len() == len_before + grew;
        order_free &= matches!(result, Ok(_) | Err(StoreError::Entry(_)));
    }
    for s in store.slots() {
        let bytes = store.entry(s);
        let e = myco_core::schema::entry::Entry::decode(&bytes).expect("stored is valid");
        assert_eq!(store.name(s), e.body.name);
        assert!(store.get_by_name(e.body.name).is_some());
    }
    order_free
}

fuzz_target!(|data: &[u8]| {
    let list = records(data);
    let mut forward = Small::new();
    let mut backward = Small::new();
    let free_forward = merge_all(&mut forward, list.iter());
    let free_backward = merge_all(&mut backward, list.iter().rev());
    if free_forward && free_backward {
        assert_eq!(
            forward.state_hash(),
            backward.state_hash(),
            "same entries in reverse order gave a different state"
        );
    }
});
