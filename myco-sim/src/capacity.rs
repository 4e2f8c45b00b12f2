//! `myco-sim capacity`: how many services of realistic size one node's store holds, the figure
//! recorded in docs/benchmarks.md.
//!
//! Entries come from the simulator's fleet (`fleet`), signed like every simulated entry, and are
//! merged into a store of the node's real capacities until it refuses one or all are in. The
//! realistic fleet repeats its texts as fleets do; the distinct one gives every service texts of
//! its own at the same sizes, so the shared strings help it least.

use crate::fleet;
use myco_core::config::{ARENA_BYTES, SERVICES_MAX, STRINGS_BYTES, STRINGS_MAX};
use myco_core::crypto::SigningKey;
use myco_core::random::Prng;
use myco_core::schema::entry::{rev_at, Entry, Source};
use myco_core::state::store::{Store, StoreError};
use pico_args::Arguments;
use std::collections::HashMap;
use std::time::Instant;

type NodeStore = Store<SERVICES_MAX, ARENA_BYTES>;

/// `services` signed entries of the fleet of `seed`, `distinct` as in `fleet::texts`.
pub fn entries(seed: u64, services: usize, distinct: bool) -> Vec<Vec<u8>> {
    let operator = SigningKey::from_seed([7; 32]).expect("non-zero seed");
    let mut r = Prng::new(seed);
    let mut out = Vec::with_capacity(services);
    for i in 0..services {
        let name = format!("svc-{i}");
        out.push(if distinct {
            distinct_entry(seed, i, &name, &mut r, &operator)
        } else {
            crate::scenario::encode((seed, i as u64, &name), (1, 1), false, &mut r, &operator)
        });
    }
    out
}

fn distinct_entry(seed: u64, i: usize, name: &str, r: &mut Prng, key: &SigningKey) -> Vec<u8> {
    use myco_core::schema::entry::{Arch, EntryBody, Requirements, Version};
    let requires = Requirements {
        arch: Arch::Any,
        gpu: false,
        zone: None,
    };
    let texts = fleet::texts(seed, i as u64, name, &requires, true, r);
    let body = EntryBody {
        name,
        version: Version {
            clock: 1,
            key_id: key.public_key().key_id(),
        },
        spec: Some(texts.spec(requires, 1)),
    };
    let mut out = [0u8; myco_core::config::ENTRY_BYTES_MAX];
    let n = myco_core::crypto::sign_entry(key, &body, &mut out).expect("fleet entries are valid");
    out[..n].to_vec()
}

/// What one fill of the store showed.
pub struct Fill {
    pub stored: usize,
    /// Why the next entry was refused; `None` if every entry went in.
    pub refused: Option<StoreError>,
    pub entry_bytes_mean: usize,
    pub arena_bytes: usize,
    pub strings: (usize, usize),
    /// Of the entries' text bytes (as the store splits them), the share, in percent, whose text
    /// another entry holds too.
    pub repeated_percent: u64,
}

/// Merges `entries` in order into a fresh store of the node's capacities until one is refused.
pub fn fill(entries: &[Vec<u8>]) -> Fill {
    let mut store: Box<NodeStore> = Box::new(Store::new());
    let mut refused = None;
    for e in entries {
        let before = store.state_hash();
        if let Err(err) = store.merge(e) {
            // A refusal is a decision that changes nothing.
            assert_eq!(store.state_hash(), before);
            refused = Some(err);
            break;
        }
    }
    assert!(store.check_digests());
    let stored = store.len();
    let total: usize = entries[..stored].iter().map(Vec::len).sum();
    Fill {
        stored,
        refused,
        entry_bytes_mean: total / stored.max(1),
        arena_bytes: store.arena_live(),
        strings: store.strings(),
        repeated_percent: repeated_percent(&entries[..stored]),
    }
}

/// The texts of an entry as the store shares them: the flake reference without its rev, the
/// attribute, arguments, variable names and values.
fn texts(entry: &Entry<'_>) -> Vec<String> {
    let spec = entry.body.spec.as_ref().expect("fleet entries are live");
    let mut out = Vec::new();
    if let Source::Flake { uri, attr, rev, .. } = spec.source {
        let at = rev_at(uri, &rev).expect("locked");
        out.push(uri[..at].to_string());
        out.push(attr.to_string());
    }
    out.extend(spec.args.iter().map(|a| a.to_string()));
    for (k, v) in &spec.env {
        out.push(k.to_string());
        out.push(v.to_string());
    }
    out
}

fn repeated_percent(entries: &[Vec<u8>]) -> u64 {
    let all: Vec<Vec<String>> = entries
        .iter()
        .map(|e| texts(&Entry::decode(e).expect("valid")))
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in all.iter().flatten() {
        *count.entry(t).or_default() += 1;
    }
    let total: usize = all.iter().flatten().map(String::len).sum();
    let repeated: usize = all
        .iter()
        .flatten()
        .filter(|t| count[t.as_str()] > 1)
        .map(String::len)
        .sum();
    (repeated * 100 / total.max(1)) as u64
}

fn describe(what: &str, f: &Fill) -> String {
    let refused = f.refused.map_or("none".to_string(), |e| format!("{e:?}"));
    format!(
        "{what}: {} stored (next refused: {refused}), entries of {} bytes on average, {}% of their text bytes repeated; arena {} of {ARENA_BYTES} bytes, {} shared strings of {STRINGS_MAX} holding {} of {STRINGS_BYTES} bytes",
        f.stored, f.entry_bytes_mean, f.repeated_percent, f.arena_bytes, f.strings.0, f.strings.1,
    )
}

/// Wall time of merging `entries` into an empty store and of reading each back, per entry: a
/// benchmark figure, printed, never judged.
fn costs(entries: &[Vec<u8>]) {
    let passes = 20;
    let (mut merge_ns, mut read_ns, mut bytes) = (0, 0, 0);
    for _ in 0..passes {
        let mut store: Box<NodeStore> = Box::new(Store::new());
        let start = Instant::now();
        for e in entries {
            store.merge(e).expect("the realistic fleet fits");
        }
        merge_ns += start.elapsed().as_nanos();
        let start = Instant::now();
        for slot in store.slots() {
            bytes += store.entry(slot).len();
        }
        read_ns += start.elapsed().as_nanos();
    }
    let per = passes * entries.len() as u128;
    println!(
        "  merge {} ns per entry, read back {} ns per entry ({} bytes read), mean of {passes} passes",
        merge_ns / per,
        read_ns / per,
        bytes / passes as usize,
    );
}

pub fn command(mut args: Arguments) -> Result<u8, String> {
    let seed = args
        .opt_value_from_str("--seed")
        .map_err(|e| e.to_string())?
        .unwrap_or(1);
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments {rest:?}"));
    }
    let thousand = entries(seed, 1000, false);
    let realistic = fill(&thousand);
    println!("{}", describe("1000 realistic services", &realistic));
    costs(&thousand);
    let limit = fill(&entries(seed, SERVICES_MAX + 1, false));
    println!("{}", describe("realistic services until a refusal", &limit));
    let distinct = fill(&entries(seed, SERVICES_MAX + 1, true));
    println!(
        "{}",
        describe(
            "services with all-distinct texts until a refusal",
            &distinct
        )
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's store holds 1000 services of realistic size (a locked flake reference, four
    /// arguments, four variables, two ports) with their texts shared, and only the index, not
    /// the arena, stops a larger fleet.
    #[test]
    fn a_thousand_realistic_services_fit() {
        let f = fill(&entries(1, 1000, false));
        assert_eq!((f.stored, f.refused), (1000, None));
        assert!(f.entry_bytes_mean >= 600, "{} bytes", f.entry_bytes_mean);
        let f = fill(&entries(1, SERVICES_MAX + 1, false));
        assert_eq!(
            (f.stored, f.refused),
            (SERVICES_MAX, Some(StoreError::Full))
        );
    }

    /// Texts no two services share still fill the arena by a decision: the entry that does not
    /// fit is refused with `ArenaFull`, nothing panics, and the store is unchanged by it.
    #[test]
    fn distinct_texts_end_in_a_refusal() {
        let f = fill(&entries(1, SERVICES_MAX + 1, true));
        assert_eq!(f.refused, Some(StoreError::ArenaFull));
        assert!(f.stored < 1000, "{} stored", f.stored);
        assert!(
            f.stored * f.entry_bytes_mean > ARENA_BYTES,
            "strings hold their share"
        );
    }
}
