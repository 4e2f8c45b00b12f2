//! The desired-state CRDT: a last-writer-wins map from service name to encoded entry.
//!
//! Entries are kept sorted by key hash in a fixed index; their bytes live packed in one arena,
//! with the texts many entries repeat (flake URLs, attribute paths, environment names and values,
//! arguments) kept once in a table of shared strings (`state::strings`, `state::packed`). Reading
//! an entry rebuilds its encoding byte for byte, so sharing is a storage concern only: digests,
//! buckets, the root and the state hash are computed over encoded entries. The index order makes
//! a Merkle bucket (the top byte of the key hash) a contiguous range, so anti-entropy can page
//! through a bucket by key-hash ranges. Every insert or replace updates the bucket digest and the
//! root in O(1) by XOR of non-linear entry digests.
//!
//! Merge order (`lww_cmp`): higher version wins; on a tie a tombstone wins; on a full tie the higher
//! entry digest wins. Merging is therefore commutative, associative and idempotent: nodes that saw
//! the same entries in any order hold the same map.
//!
//! Tombstone eviction rule: a tombstone is dropped once its clock is more than
//! `TOMBSTONE_RETENTION_MS` older than the newest clock this store has seen, and a tombstone that
//! old is refused on arrival. A full index refuses new keys (`Full`); it never evicts a tombstone
//! to make room, because forgetting a delete early would let a late copy of the deleted service
//! come back. A node partitioned for longer than the retention must be reset, or it may resurrect
//! a deleted service; `docs/algorithm.md` explains why this is the price of bounded memory.
//!
//! A full table of shared strings is not a refusal: the text stays inline in its entry, and only
//! a full arena refuses (`ArenaFull`). A refused entry gives back the references it took, so a
//! refusal changes nothing but where the table keeps its texts.

use super::packed::{self, EntryBytes, PACKED_BYTES_MAX};
use super::strings::Strings;
use crate::config::{BUCKETS, STRINGS_BYTES, STRINGS_MAX, TOMBSTONE_RETENTION_MS};
use crate::hash::{digest, DOMAIN_ENTRY, DOMAIN_KEY, DOMAIN_STATE};
use crate::schema::entry::{lww_cmp, Entry, EntryError, Requirements, Version};
use core::cmp::Ordering;
use heapless::Vec;

/// One entry's index record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub key_hash: u64,
    pub digest: u64,
    pub version: Version,
    pub tombstone: bool,
    /// What placement reads of a live entry (requirements, replicas), kept here so placing every
    /// entry does not decode every entry; `None` for a tombstone.
    pub placement: Option<(Requirements, u8)>,
    /// The packed entry's place in the arena (`state::packed`).
    offset: u32,
    len: u16,
    /// Where its literal bytes, which start with the name, begin in the packed entry
    /// (`packed::literal_start`): names are read several times a tick and entries rebuilt on
    /// every health check, and finding the literal bytes past the references each time was not
    /// free.
    name_at: u16,
}

// The entry index's line of the memory budget in `config.rs`.
const _: () = assert!(core::mem::size_of::<Slot>() <= 48);

impl Slot {
    fn order(&self) -> (Version, bool, u64) {
        (self.version, self.tombstone, self.digest)
    }
}

/// What a merge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// A new key.
    Inserted,
    /// A newer version of a known key replaced the older one.
    Replaced,
    /// The store already held this entry or a newer one; nothing changed.
    Stale,
}

/// What a merge changed, for a caller that keeps answers derived from the index and updates
/// them slot by slot instead of recomputing them (the node's placement, `node::placed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merged {
    pub merge: Merge,
    /// The key merged (its record is at `Store::position(key_hash)` unless `Stale`).
    pub key_hash: u64,
    /// The record a `Replaced` merge overwrote.
    pub replaced: Option<Slot>,
}

/// Why a merge was refused. Refusal never changes the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    Entry(EntryError),
    /// The index is full; tombstones keep their slots until the retention window passes.
    Full,
    /// The arena cannot hold the entry even after compaction.
    ArenaFull,
    /// Two different names share a 64-bit key hash; the second is refused.
    KeyCollision,
    /// A tombstone older than the retention window.
    Expired,
}

impl StoreError {
    pub fn message(self) -> &'static str {
        match self {
            StoreError::Entry(e) => e.message(),
            StoreError::Full => {
                "desired-state table is full (deletes keep their slot for the retention window): raise SERVICES_MAX"
            }
            StoreError::ArenaFull => {
                "entry arena is full (texts services share are stored once; what each service has alone fills it): remove services, shrink their specs or raise ARENA_BYTES"
            }
            StoreError::KeyCollision => "service name collides with another name's hash; rename it",
            StoreError::Expired => "tombstone is older than the retention window",
        }
    }
}

pub fn key_hash(name: &str) -> u64 {
    digest(DOMAIN_KEY, name.as_bytes())
}

pub fn bucket_of(key_hash: u64) -> usize {
    (key_hash >> 56) as usize
}

/// `N` index slots, `A` arena bytes, and `S` shared strings of at most `B` bytes in all.
pub struct Store<
    const N: usize,
    const A: usize,
    const S: usize = STRINGS_MAX,
    const B: usize = STRINGS_BYTES,
> {
    index: Vec<Slot, N>,
    arena: [u8; A],
    arena_used: usize,
    /// Bytes of live entries; `arena_used - arena_live` is garbage that compaction reclaims.
    arena_live: usize,
    strings: Strings<S, B>,
    buckets: [u64; BUCKETS],
    root: u64,
    clock_max: u64,
    /// Lowest clock of any stored tombstone, so the eviction scan runs only when one is due.
    tombstone_clock_min: u64,
}

impl<const N: usize, const A: usize, const S: usize, const B: usize> Default for Store<N, A, S, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const A: usize, const S: usize, const B: usize> Store<N, A, S, B> {
    pub const fn new() -> Self {
        Store {
            index: Vec::new(),
            arena: [0; A],
            arena_used: 0,
            arena_live: 0,
            strings: Strings::new(),
            buckets: [0; BUCKETS],
            root: 0,
            clock_max: 0,
            tombstone_clock_min: u64::MAX,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn root(&self) -> u64 {
        self.root
    }
    pub fn bucket(&self, b: usize) -> u64 {
        self.buckets[b]
    }
    pub fn slots(&self) -> &[Slot] {
        &self.index
    }
    /// Arena bytes taken, garbage included.
    pub fn arena_used(&self) -> usize {
        self.arena_used
    }
    /// Arena bytes of stored entries.
    pub fn arena_live(&self) -> usize {
        self.arena_live
    }
    /// Shared strings and their bytes.
    pub fn strings(&self) -> (usize, usize) {
        (self.strings.len(), self.strings.live_bytes())
    }

    /// Equal on two stores exactly when they hold the same entries (up to 64-bit collisions).
    pub fn state_hash(&self) -> u64 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.root.to_le_bytes());
        bytes[8..].copy_from_slice(&(self.index.len() as u64).to_le_bytes());
        digest(DOMAIN_STATE, &bytes)
    }

    /// The encoded entry stored under `key_hash`, rebuilt.
    pub fn get(&self, key_hash: u64) -> Option<EntryBytes> {
        let i = self.find(key_hash).ok()?;
        Some(self.entry(&self.index[i]))
    }

    /// True if exactly these entry bytes are stored under `key_hash`: receiving them again
    /// changes nothing, and their signature was checked when they were first merged.
    pub fn contains_exact(&self, key_hash: u64, bytes: &[u8]) -> bool {
        let found = self.find(key_hash).ok();
        found.is_some_and(|i| self.index[i].digest == digest(DOMAIN_ENTRY, bytes))
    }

    /// The index record of service `name` unless it is removed (a tombstone), found without
    /// decoding the entry: cheap enough to ask per DNS query.
    pub fn live_by_name(&self, name: &str) -> Option<&Slot> {
        self.live_by_key(key_hash(name), name)
    }

    /// As `live_by_name`, for a caller that holds the name's key hash already.
    pub fn live_by_key(&self, key: u64, name: &str) -> Option<&Slot> {
        let mut nowhere = u16::MAX;
        self.live_by_key_near(key, name, &mut nowhere)
    }

    /// As `live_by_key`, looking at position `*at` of the index first and leaving there where
    /// the record was found: a caller that asks for the same service again and again (each
    /// health check of a unit) skips the binary search, whose steps on an index out of cache
    /// are a miss each. Records move only when keys come and go, and keys are unique, so a
    /// record of `key` at `*at` is the one a search would find (a wrong or cut-off hint only
    /// costs the search).
    pub fn live_by_key_near(&self, key: u64, name: &str, at: &mut u16) -> Option<&Slot> {
        let i = match self.index.get(usize::from(*at)) {
            Some(s) if s.key_hash == key => usize::from(*at),
            _ => {
                let i = self.find(key).ok()?;
                *at = i as u16;
                i
            }
        };
        let slot = &self.index[i];
        (!slot.tombstone && self.name(slot) == name).then_some(slot)
    }

    /// The encoded entry named `name`, rebuilt (decode with `EntryBytes::decode`).
    pub fn get_by_name(&self, name: &str) -> Option<EntryBytes> {
        let slot = &self.index[self.find(key_hash(name)).ok()?];
        (self.name(slot) == name).then(|| self.entry(slot))
    }

    /// Index records with key hash in `from..=to`.
    pub fn range(&self, from: u64, to: u64) -> &[Slot] {
        let lo = self.index.partition_point(|s| s.key_hash < from);
        let hi = self.index.partition_point(|s| s.key_hash <= to);
        &self.index[lo..hi.max(lo)]
    }

    /// The encoded entry of `slot`, rebuilt byte for byte from its packed form.
    pub fn entry(&self, slot: &Slot) -> EntryBytes {
        packed::unpack(self.packed(slot), usize::from(slot.name_at), &self.strings)
    }

    /// The service name of `slot`, read in place.
    pub fn name(&self, slot: &Slot) -> &str {
        packed::name(self.packed(slot), usize::from(slot.name_at))
    }

    fn packed(&self, slot: &Slot) -> &[u8] {
        let start = slot.offset as usize;
        &self.arena[start..start + usize::from(slot.len)]
    }

    fn find(&self, key_hash: u64) -> Result<usize, usize> {
        self.index.binary_search_by(|s| s.key_hash.cmp(&key_hash))
    }

    /// Where the record of `key_hash` is in `slots()`, if it is held.
    pub fn position(&self, key_hash: u64) -> Option<usize> {
        self.find(key_hash).ok()
    }

    /// Merges one encoded entry (already authenticated by the caller).
    pub fn merge(&mut self, bytes: &[u8]) -> Result<Merge, StoreError> {
        self.merge_traced(bytes).map(|m| m.merge)
    }

    /// [`Store::merge`], saying which record it wrote and which it overwrote. A merge may also
    /// drop expired tombstones (`len` then tells).
    pub fn merge_traced(&mut self, bytes: &[u8]) -> Result<Merged, StoreError> {
        let entry = Entry::decode(bytes).map_err(StoreError::Entry)?;
        self.merge_decoded(bytes, &entry)
    }

    /// [`Store::merge_traced`] of `bytes` that the caller has decoded already into `entry`
    /// (`Entry::decode(bytes)`, which validates): a node checks an entry's signature on its
    /// decoded form before merging it, and decoding is a large share of a merge's cost.
    pub(crate) fn merge_decoded(
        &mut self,
        bytes: &[u8],
        entry: &Entry<'_>,
    ) -> Result<Merged, StoreError> {
        let kh = key_hash(entry.body.name);
        let incoming = Slot {
            key_hash: kh,
            digest: digest(DOMAIN_ENTRY, bytes),
            version: entry.body.version,
            tombstone: entry.body.is_tombstone(),
            placement: entry.body.spec.as_ref().map(|s| (s.requires, s.replicas)),
            offset: 0,
            len: 0,
            name_at: 0,
        };
        if incoming.tombstone && self.expired(incoming.version.clock) {
            return Err(StoreError::Expired);
        }
        let mut replaced = None;
        let result = match self.find(kh) {
            Ok(i) => {
                replaced = Some(self.index[i]);
                self.replace(i, incoming, entry, bytes)
            }
            Err(_) => self.insert(incoming, entry, bytes),
        };
        if matches!(result, Ok(Merge::Inserted | Merge::Replaced)) {
            self.note_clock(incoming.version.clock, incoming.tombstone);
        }
        self.assert_invariants();
        let merge = result?;
        Ok(Merged {
            merge,
            key_hash: kh,
            replaced: replaced.filter(|_| merge == Merge::Replaced),
        })
    }

    fn expired(&self, clock: u64) -> bool {
        clock.saturating_add(TOMBSTONE_RETENTION_MS) < self.clock_max
    }

    fn replace(
        &mut self,
        i: usize,
        new: Slot,
        entry: &Entry<'_>,
        bytes: &[u8],
    ) -> Result<Merge, StoreError> {
        let old = self.index[i];
        if lww_cmp(new.order(), old.order()) != Ordering::Greater {
            return Ok(Merge::Stale);
        }
        if self.name(&old) != entry.body.name {
            return Err(StoreError::KeyCollision);
        }
        let mut stored = [0u8; PACKED_BYTES_MAX];
        let len = packed::pack(bytes, entry, &mut self.strings, &mut stored);
        if self.arena_live - usize::from(old.len) + len > A {
            packed::release(&stored[..len], &mut self.strings);
            return Err(StoreError::ArenaFull);
        }
        // The old entry's shared strings are released (after the new one took its references,
        // so a text both versions hold stays where it is), and its bytes become garbage that
        // compaction may reclaim to fit the new ones.
        let old_packed = (old.offset as usize, usize::from(old.len));
        packed::release(
            &self.arena[old_packed.0..old_packed.0 + old_packed.1],
            &mut self.strings,
        );
        self.index[i].len = 0;
        self.arena_live -= usize::from(old.len);
        self.index[i] = self.place(new, &stored[..len]);
        self.xor_digest(new.key_hash, old.digest ^ new.digest);
        // Last writer wins: a slot only ever moves forward, so a replayed or late entry can never
        // take a key back to an older version.
        assert!(
            self.index[i].version >= old.version,
            "a slot's version never decreases"
        );
        assert_eq!(
            self.index[i].key_hash, old.key_hash,
            "a replace keeps the key"
        );
        Ok(Merge::Replaced)
    }

    fn insert(&mut self, new: Slot, entry: &Entry<'_>, bytes: &[u8]) -> Result<Merge, StoreError> {
        let mut stored = [0u8; PACKED_BYTES_MAX];
        let len = packed::pack(bytes, entry, &mut self.strings, &mut stored);
        let refused = if self.arena_live + len > A {
            Some(StoreError::ArenaFull)
        } else {
            self.index.is_full().then_some(StoreError::Full)
        };
        if let Some(refused) = refused {
            packed::release(&stored[..len], &mut self.strings);
            return Err(refused);
        }
        let new = self.place(new, &stored[..len]);
        let at = self.find(new.key_hash).expect_err("checked absent");
        self.index.insert(at, new).expect("room checked above");
        self.xor_digest(new.key_hash, new.digest);
        // The index stays sorted by key hash, which `find` and `range` rely on.
        assert!(at == 0 || self.index[at - 1].key_hash < new.key_hash);
        assert!(self
            .index
            .get(at + 1)
            .is_none_or(|next| new.key_hash < next.key_hash));
        Ok(Merge::Inserted)
    }

    /// Copies a packed entry into the arena and returns `slot` pointing at it. The caller checked
    /// that the live bytes fit.
    fn place(&mut self, mut slot: Slot, stored: &[u8]) -> Slot {
        let offset = self
            .alloc(stored.len())
            .expect("live bytes fit, so compaction makes room");
        self.arena[offset..offset + stored.len()].copy_from_slice(stored);
        slot.offset = offset as u32;
        slot.len = stored.len() as u16;
        slot.name_at = packed::literal_start(stored) as u16;
        slot
    }

    fn xor_digest(&mut self, key_hash: u64, delta: u64) {
        self.buckets[bucket_of(key_hash)] ^= delta;
        self.root ^= delta;
    }

    fn remove_at(&mut self, i: usize) {
        let live_before = self.arena_live;
        let s = self.index.remove(i);
        assert!(s.tombstone, "only expired tombstones leave the store");
        let start = s.offset as usize;
        packed::release(
            &self.arena[start..start + usize::from(s.len)],
            &mut self.strings,
        );
        self.arena_live -= usize::from(s.len);
        self.xor_digest(s.key_hash, s.digest);
        assert_eq!(self.arena_live + usize::from(s.len), live_before);
    }

    fn note_clock(&mut self, clock: u64, tombstone: bool) {
        if tombstone {
            self.tombstone_clock_min = self.tombstone_clock_min.min(clock);
        }
        if clock <= self.clock_max {
            return;
        }
        self.clock_max = clock;
        if !self.expired(self.tombstone_clock_min) {
            return;
        }
        let mut i = 0;
        let mut lowest = u64::MAX;
        while i < self.index.len() {
            let s = self.index[i];
            if s.tombstone && self.expired(s.version.clock) {
                self.remove_at(i);
                continue;
            }
            if s.tombstone {
                lowest = lowest.min(s.version.clock);
            }
            i += 1;
        }
        self.tombstone_clock_min = lowest;
    }

    /// Finds `len` free bytes at the arena's end, compacting first if needed.
    fn alloc(&mut self, len: usize) -> Option<usize> {
        if self.arena_used + len > A {
            self.compact();
        }
        if self.arena_used + len > A {
            return None;
        }
        let at = self.arena_used;
        self.arena_used += len;
        self.arena_live += len;
        assert!(self.arena_live <= self.arena_used && self.arena_used <= A);
        Some(at)
    }

    /// Slides live entries down over garbage, in offset order. Rare: only when the arena's tail
    /// is exhausted. Index slots with `len == 0` are being replaced and hold no live bytes.
    fn compact(&mut self) {
        let mut order: Vec<u16, N> = (0..self.index.len() as u16).collect();
        order.sort_unstable_by_key(|&i| self.index[usize::from(i)].offset);
        let mut to = 0usize;
        for &i in &order {
            let s = &mut self.index[usize::from(i)];
            let (from, len) = (s.offset as usize, usize::from(s.len));
            self.arena.copy_within(from..from + len, to);
            s.offset = to as u32;
            to += len;
        }
        self.arena_used = to;
        assert_eq!(self.arena_used, self.arena_live);
    }

    /// Cheap structural checks after every merge; the full check runs in tests.
    fn assert_invariants(&self) {
        assert!(self.arena_live <= self.arena_used && self.arena_used <= A);
        assert!(self.index.len() <= N);
    }

    /// Recomputes every digest from the rebuilt entries and compares, and where each name starts,
    /// and checks the shared strings' counts; O(n), for tests and the simulator.
    pub fn check_digests(&self) -> bool {
        let mut buckets = [0u64; BUCKETS];
        for w in self.index.windows(2) {
            if w[0].key_hash >= w[1].key_hash {
                return false;
            }
        }
        for s in self.index.iter() {
            if digest(DOMAIN_ENTRY, &self.entry(s)) != s.digest
                || usize::from(s.name_at) != packed::literal_start(self.packed(s))
            {
                return false;
            }
            buckets[bucket_of(s.key_hash)] ^= s.digest;
        }
        let root = buckets.iter().fold(0, |a, b| a ^ b);
        buckets == self.buckets && root == self.root && self.strings.check()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::config::ENTRY_BYTES_MAX;
    use crate::schema::entry::{encode_entry, EntryBody, ServiceSpec, Source};

    fn entry(name: &str, clock: u64, tomb: bool, out: &mut [u8; ENTRY_BYTES_MAX]) -> usize {
        let spec = ServiceSpec::minimal(Source::Exec { path: "/bin/true" });
        let body = EntryBody {
            name,
            version: Version { clock, key_id: 0 },
            spec: (!tomb).then_some(spec),
        };
        encode_entry(&body, &[0; 64], out).unwrap()
    }

    type Small = Store<4, 512>;

    /// Merging the same entries in any order gives the same state hash; stale merges change
    /// nothing; the incremental digests always equal a recomputation.
    #[test]
    fn merge_is_order_independent() {
        let mut bufs = [[0u8; ENTRY_BYTES_MAX]; 4];
        let lens = [
            entry("a", 1, false, &mut bufs[0]),
            entry("a", 2, false, &mut bufs[1]),
            entry("b", 1, false, &mut bufs[2]),
            entry("a", 2, true, &mut bufs[3]),
        ];
        let mut x = Small::new();
        let mut y = Small::new();
        for i in 0..4 {
            x.merge(&bufs[i][..lens[i]]).unwrap();
            y.merge(&bufs[3 - i][..lens[3 - i]]).unwrap();
        }
        assert_eq!(x.state_hash(), y.state_hash());
        assert!(x.check_digests() && y.check_digests());
        assert!(x.get_by_name("a").unwrap().decode().body.is_tombstone());
        let before = x.state_hash();
        assert_eq!(x.merge(&bufs[1][..lens[1]]), Ok(Merge::Stale));
        assert_eq!(x.state_hash(), before);
    }

    /// A full table refuses new keys with an error and changes nothing; a delete replaces its
    /// service in place and keeps the slot, so a late copy of the deleted service stays stale.
    #[test]
    fn full_table_refuses_and_keeps_tombstones() {
        let mut b = [0u8; ENTRY_BYTES_MAX];
        let mut s = Small::new();
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            let len = entry(n, i as u64 + 1, false, &mut b);
            s.merge(&b[..len]).unwrap();
        }
        let len = entry("e", 9, false, &mut b);
        let before = s.state_hash();
        assert_eq!(s.merge(&b[..len]), Err(StoreError::Full));
        assert_eq!(s.state_hash(), before);
        let len = entry("b", 10, true, &mut b);
        assert_eq!(s.merge(&b[..len]), Ok(Merge::Replaced));
        let len = entry("e", 11, false, &mut b);
        assert_eq!(s.merge(&b[..len]), Err(StoreError::Full));
        let len = entry("b", 2, false, &mut b);
        assert_eq!(s.merge(&b[..len]), Ok(Merge::Stale));
        assert!(s.get_by_name("b").unwrap().decode().body.is_tombstone());
        assert!(s.check_digests());
    }

    /// `live_by_name` finds a stored service without decoding it, and agrees with the decoded
    /// lookup: a removed service, an unknown name and a stored name's prefix are all absent.
    #[test]
    fn live_by_name_agrees_with_get_by_name() {
        let mut b = [0u8; ENTRY_BYTES_MAX];
        let mut s = Small::new();
        for (name, tomb) in [("web", false), ("db", true), ("web-2", false)] {
            let len = entry(name, 1, tomb, &mut b);
            s.merge(&b[..len]).unwrap();
        }
        for name in ["web", "db", "web-2", "we", "web-", "cache", ""] {
            let bytes = s.get_by_name(name);
            let decoded = bytes.as_ref().filter(|e| !e.decode().body.is_tombstone());
            let slot = s.live_by_name(name);
            assert_eq!(slot.is_some(), decoded.is_some(), "{name}");
            assert!(slot.is_none_or(|sl| sl.key_hash == key_hash(name)));
        }
        assert!(s.live_by_name("web").is_some() && s.live_by_name("db").is_none());
    }

    /// `live_by_key_near` answers as `live_by_key` whatever its hint says (right, another
    /// record's, past the end), and leaves the hint where the record is, also after an insert
    /// moved it.
    #[test]
    fn a_hint_never_changes_the_answer() {
        let mut b = [0u8; ENTRY_BYTES_MAX];
        let mut s = Small::new();
        for (name, tomb) in [("web", false), ("db", true)] {
            let len = entry(name, 1, tomb, &mut b);
            s.merge(&b[..len]).unwrap();
        }
        let position = |s: &Small, name| s.position(key_hash(name)).unwrap() as u16;
        for hint in [0, 1, 2, 3, u16::MAX] {
            for name in ["web", "db", "cache"] {
                let mut at = hint;
                let near = s.live_by_key_near(key_hash(name), name, &mut at);
                assert_eq!(
                    near.map(|x| x.key_hash),
                    s.live_by_key(key_hash(name), name).map(|x| x.key_hash)
                );
                if name != "cache" {
                    assert_eq!(at, position(&s, name), "{name} from {hint}");
                }
            }
        }
        // A name with the right key hash but another text is not the record.
        let mut at = position(&s, "web");
        assert!(s
            .live_by_key_near(key_hash("web"), "wab", &mut at)
            .is_none());
        // Inserting records moves "web"; the stale hint finds it again and follows.
        let mut at = position(&s, "web");
        for name in ["a", "b"] {
            let len = entry(name, 1, false, &mut b);
            s.merge(&b[..len]).unwrap();
        }
        assert!(s
            .live_by_key_near(key_hash("web"), "web", &mut at)
            .is_some());
        assert_eq!(at, position(&s, "web"));
    }

    /// Replacing entries again and again compacts the arena instead of running out.
    #[test]
    fn arena_compacts_under_churn() {
        let mut b = [0u8; ENTRY_BYTES_MAX];
        let mut s = Small::new();
        for clock in 1..200 {
            let len = entry(["a", "b", "c"][clock as usize % 3], clock, false, &mut b);
            assert!(s.merge(&b[..len]).is_ok());
        }
        assert!(s.check_digests());
        assert_eq!(s.len(), 3);
        assert!(s.arena_used() <= 512);
    }

    /// A fleet-like entry: one of three locked flake references (each at its own rev), an attr
    /// per kind, two shared and two own arguments, four variables (three shared), two ports.
    fn fleet_entry(i: u64, clock: u64, tomb: bool) -> std::vec::Vec<u8> {
        use crate::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
        use crate::schema::entry::{Port, Protocol};
        use std::format;
        let repo = i % 3;
        let rev = [0x10 + repo as u8; FLAKE_REV_BYTES];
        let hex: std::string::String = rev.iter().map(|b| format!("{b:02x}")).collect();
        let uri =
            format!("git+https://git.example.com/team-{repo}/services.git?ref=main&rev={hex}");
        let attr = format!("packages.x86_64-linux.kind-{}", i % 5);
        let (own_arg, own_env, name) = (format!("--id={i}"), format!("db-{i}"), format!("svc-{i}"));
        let mut spec = ServiceSpec::minimal(Source::Flake {
            uri: &uri,
            attr: &attr,
            rev,
            nar_hash: [0x20 + repo as u8; NAR_HASH_BYTES],
        });
        spec.args = Vec::from_slice(&["--config", "/etc/app.toml", &own_arg, "-v"]).unwrap();
        let env = [
            ("RUST_LOG", "info"),
            ("REGION", "eu"),
            ("DB", &own_env),
            ("TZ", "UTC"),
        ];
        spec.env = Vec::from_slice(&env).unwrap();
        for number in [8000 + i as u16, 9100] {
            spec.ports
                .push(Port {
                    number,
                    protocol: Protocol::Tcp,
                })
                .unwrap();
        }
        let body = EntryBody {
            name: &name,
            version: Version { clock, key_id: 7 },
            spec: (!tomb).then_some(spec),
        };
        let mut out = [0u8; ENTRY_BYTES_MAX];
        let n = encode_entry(&body, &[i as u8; 64], &mut out).unwrap();
        out[..n].to_vec()
    }

    /// Interning is a storage concern only: for the same entries, every entry reads back byte for
    /// byte, and the entry digests, the Merkle buckets, the root and the state hash are exactly
    /// what the store computed before strings were shared (the constants were recorded then, and
    /// again when specs gained resource limits and then a health check, each of which changed
    /// every encoding), and what a direct computation over the encoded bytes gives.
    #[test]
    fn digests_and_buckets_are_those_of_the_encoded_entries() {
        let mut s: Store<64, 16384> = Store::new();
        let mut all = std::vec::Vec::new();
        for i in 0..40 {
            all.push(fleet_entry(i, 100 + i, false));
        }
        // Replacements and deletes, so strings are released and shared again.
        for i in 0..10 {
            all.push(fleet_entry(i * 3, 500 + i, i % 2 == 0));
        }
        for e in &all {
            assert!(matches!(s.merge(e), Ok(Merge::Inserted | Merge::Replaced)));
        }
        let mut buckets = [0u64; BUCKETS];
        for slot in s.slots() {
            let stored = s.entry(slot);
            let original = all
                .iter()
                .rev()
                .find(|e| digest(DOMAIN_ENTRY, e) == slot.digest);
            assert_eq!(Some(&&stored[..]), original.map(|e| &e[..]).as_ref());
            buckets[bucket_of(slot.key_hash)] ^= digest(DOMAIN_ENTRY, &stored);
        }
        for (b, d) in buckets.iter().enumerate() {
            assert_eq!(s.bucket(b), *d, "bucket {b}");
        }
        assert!(s.check_digests());
        assert_eq!(
            (s.root(), s.state_hash()),
            (0x0584_7fc1_15ff_69c1, 0xb41d_9180_ff94_58b4)
        );
    }

    /// A store whose arena and string table are both tiny: fleet entries share what fits in the
    /// table and keep the rest inline; the entry that does not fit the arena is refused with
    /// `ArenaFull`, its references are given back, and the store reads exactly as before.
    #[test]
    fn arena_full_refusal_gives_back_its_references() {
        let mut s: Store<8, 1500, 6, 80> = Store::new();
        let mut i = 0;
        let refused = loop {
            let e = fleet_entry(i, 1 + i, false);
            let before = (s.state_hash(), s.strings(), s.arena_live());
            match s.merge(&e) {
                Ok(Merge::Inserted) => assert_eq!(
                    &s.get(key_hash(&std::format!("svc-{i}"))).unwrap()[..],
                    &e[..]
                ),
                Ok(other) => panic!("{other:?}"),
                Err(err) => {
                    assert_eq!((s.state_hash(), s.strings(), s.arena_live()), before);
                    break err;
                }
            }
            i += 1;
        };
        assert_eq!(refused, StoreError::ArenaFull);
        assert!(i >= 2, "{i} stored");
        let (texts, bytes) = s.strings();
        assert!(
            texts > 0 && bytes <= 80,
            "shared what fit: {texts} texts, {bytes} bytes"
        );
        assert!(s.check_digests());
    }

    /// Old tombstones are evicted once the newest clock passes the retention, and refused after.
    #[test]
    fn tombstones_expire_after_retention() {
        let mut b = [0u8; ENTRY_BYTES_MAX];
        let mut s = Small::new();
        let len = entry("a", 1, true, &mut b);
        s.merge(&b[..len]).unwrap();
        let len = entry("b", 2 + TOMBSTONE_RETENTION_MS, false, &mut b);
        s.merge(&b[..len]).unwrap();
        assert_eq!(s.len(), 1);
        let len = entry("a", 1, true, &mut b);
        assert_eq!(s.merge(&b[..len]), Err(StoreError::Expired));
        assert!(s.check_digests());
    }
}
