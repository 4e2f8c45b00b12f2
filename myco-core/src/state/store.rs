//! The desired-state CRDT: a last-writer-wins map from service name to encoded entry.
//!
//! Entries are kept sorted by key hash in a fixed index; their bytes live packed in one arena. The
//! index order makes a Merkle bucket (the top byte of the key hash) a contiguous range, so
//! anti-entropy can page through a bucket by key-hash ranges. Every insert or replace updates the
//! bucket digest and the root in O(1) by XOR of non-linear entry digests.
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

use crate::config::{BUCKETS, TOMBSTONE_RETENTION_MS};
use crate::hash::{digest, DOMAIN_ENTRY, DOMAIN_KEY, DOMAIN_STATE};
use crate::schema::entry::{encoded_name, lww_cmp, Entry, EntryError, Requirements, Version};
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
    offset: u32,
    len: u16,
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
                "entry arena is full: shrink service specs or raise ARENA_BYTES"
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

pub struct Store<const N: usize, const A: usize> {
    index: Vec<Slot, N>,
    arena: [u8; A],
    arena_used: usize,
    /// Bytes of live entries; `arena_used - arena_live` is garbage that compaction reclaims.
    arena_live: usize,
    buckets: [u64; BUCKETS],
    root: u64,
    clock_max: u64,
    /// Lowest clock of any stored tombstone, so the eviction scan runs only when one is due.
    tombstone_clock_min: u64,
}

impl<const N: usize, const A: usize> Default for Store<N, A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const A: usize> Store<N, A> {
    pub const fn new() -> Self {
        Store {
            index: Vec::new(),
            arena: [0; A],
            arena_used: 0,
            arena_live: 0,
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
    pub fn arena_used(&self) -> usize {
        self.arena_used
    }

    /// Equal on two stores exactly when they hold the same entries (up to 64-bit collisions).
    pub fn state_hash(&self) -> u64 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.root.to_le_bytes());
        bytes[8..].copy_from_slice(&(self.index.len() as u64).to_le_bytes());
        digest(DOMAIN_STATE, &bytes)
    }

    /// The encoded entry stored under `key_hash`.
    pub fn get(&self, key_hash: u64) -> Option<&[u8]> {
        let i = self.find(key_hash).ok()?;
        Some(self.bytes(&self.index[i]))
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
        let slot = &self.index[self.find(key_hash(name)).ok()?];
        let stored = encoded_name(self.bytes(slot));
        (!slot.tombstone && stored == Some(name)).then_some(slot)
    }

    /// The decoded entry named `name`.
    pub fn get_by_name(&self, name: &str) -> Option<Entry<'_>> {
        let bytes = self.get(key_hash(name))?;
        let entry = Entry::decode(bytes).expect("stored entries were validated");
        (entry.body.name == name).then_some(entry)
    }

    /// Index records with key hash in `from..=to`.
    pub fn range(&self, from: u64, to: u64) -> &[Slot] {
        let lo = self.index.partition_point(|s| s.key_hash < from);
        let hi = self.index.partition_point(|s| s.key_hash <= to);
        &self.index[lo..hi.max(lo)]
    }

    pub fn bytes(&self, slot: &Slot) -> &[u8] {
        let start = slot.offset as usize;
        &self.arena[start..start + usize::from(slot.len)]
    }

    fn find(&self, key_hash: u64) -> Result<usize, usize> {
        self.index.binary_search_by(|s| s.key_hash.cmp(&key_hash))
    }

    /// Merges one encoded entry (already authenticated by the caller).
    pub fn merge(&mut self, bytes: &[u8]) -> Result<Merge, StoreError> {
        let entry = Entry::decode(bytes).map_err(StoreError::Entry)?;
        let kh = key_hash(entry.body.name);
        let incoming = Slot {
            key_hash: kh,
            digest: digest(DOMAIN_ENTRY, bytes),
            version: entry.body.version,
            tombstone: entry.body.is_tombstone(),
            placement: entry.body.spec.as_ref().map(|s| (s.requires, s.replicas)),
            offset: 0,
            len: bytes.len() as u16,
        };
        if incoming.tombstone && self.expired(incoming.version.clock) {
            return Err(StoreError::Expired);
        }
        let result = match self.find(kh) {
            Ok(i) => self.replace(i, incoming, entry.body.name, bytes),
            Err(_) => self.insert(incoming, bytes),
        };
        if matches!(result, Ok(Merge::Inserted | Merge::Replaced)) {
            self.note_clock(incoming.version.clock, incoming.tombstone);
        }
        self.assert_invariants();
        result
    }

    fn expired(&self, clock: u64) -> bool {
        clock.saturating_add(TOMBSTONE_RETENTION_MS) < self.clock_max
    }

    fn replace(
        &mut self,
        i: usize,
        mut new: Slot,
        name: &str,
        bytes: &[u8],
    ) -> Result<Merge, StoreError> {
        let old = self.index[i];
        if lww_cmp(new.order(), old.order()) != Ordering::Greater {
            return Ok(Merge::Stale);
        }
        let same_name = Entry::decode(self.bytes(&old))
            .expect("stored entries were validated")
            .body
            .name
            == name;
        if !same_name {
            return Err(StoreError::KeyCollision);
        }
        if self.arena_live - usize::from(old.len) + bytes.len() > A {
            return Err(StoreError::ArenaFull);
        }
        // The old bytes become garbage; compaction may reclaim them to fit the new ones.
        self.index[i].len = 0;
        self.arena_live -= usize::from(old.len);
        let offset = self
            .alloc(bytes.len())
            .expect("live bytes fit, so compaction makes room");
        new.offset = offset as u32;
        self.arena[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.index[i] = new;
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

    fn insert(&mut self, mut new: Slot, bytes: &[u8]) -> Result<Merge, StoreError> {
        if self.arena_live + bytes.len() > A {
            return Err(StoreError::ArenaFull);
        }
        if self.index.is_full() {
            return Err(StoreError::Full);
        }
        let offset = self
            .alloc(bytes.len())
            .expect("live bytes fit, so compaction makes room");
        new.offset = offset as u32;
        self.arena[offset..offset + bytes.len()].copy_from_slice(bytes);
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

    fn xor_digest(&mut self, key_hash: u64, delta: u64) {
        self.buckets[bucket_of(key_hash)] ^= delta;
        self.root ^= delta;
    }

    fn remove_at(&mut self, i: usize) {
        let live_before = self.arena_live;
        let s = self.index.remove(i);
        assert!(s.tombstone, "only expired tombstones leave the store");
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

    /// Recomputes every digest from scratch and compares; O(n), for tests and the simulator.
    pub fn check_digests(&self) -> bool {
        let mut buckets = [0u64; BUCKETS];
        for w in self.index.windows(2) {
            if w[0].key_hash >= w[1].key_hash {
                return false;
            }
        }
        for s in self.index.iter() {
            if digest(DOMAIN_ENTRY, self.bytes(s)) != s.digest {
                return false;
            }
            buckets[bucket_of(s.key_hash)] ^= s.digest;
        }
        let root = buckets.iter().fold(0, |a, b| a ^ b);
        buckets == self.buckets && root == self.root
    }
}

#[cfg(test)]
mod tests {
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
        assert!(x.get_by_name("a").unwrap().body.is_tombstone());
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
        assert!(s.get_by_name("b").unwrap().body.is_tombstone());
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
            let decoded = s.get_by_name(name).filter(|e| !e.body.is_tombstone());
            let slot = s.live_by_name(name);
            assert_eq!(slot.is_some(), decoded.is_some(), "{name}");
            assert!(slot.is_none_or(|sl| sl.key_hash == key_hash(name)));
        }
        assert!(s.live_by_name("web").is_some() && s.live_by_name("db").is_none());
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
