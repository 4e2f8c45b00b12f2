//! Spreading entries: rumor pushes each round and the anti-entropy exchange.
//!
//! Anti-entropy runs only with a peer whose last-seen root differs (or, after a truncated log,
//! with anyone): all bucket digests go out in three frames, the peer answers differing buckets
//! with its keys (or the entries themselves where ours are empty), and each side then pushes
//! what the other lacks and asks for what it lacks itself. Every step is bounded by
//! `SYNC_FRAMES_PER_STEP`; there is no cursor: the next exchange compares all buckets again and
//! those repaired meanwhile drop out.

use super::*;

impl Node {
    pub(super) fn gossip_round(&mut self, sink: &mut impl Sink) {
        self.out.counters.gossip_rounds += 1;
        if !self.rumors.is_empty() {
            self.push_rumors(sink);
        }
        if self.members.pending_len() > 0 {
            self.gossip_members(sink);
        }
        self.bridge_round(sink);
        // Anti-entropy only with a peer that disagrees: a cluster at rest sends nothing here.
        let forced = self.full_sync_rounds > 0;
        self.full_sync_rounds = self.full_sync_rounds.saturating_sub(1);
        let peers = self.random_live_peers::<1>(!forced);
        if let Some(&peer) = peers.first() {
            self.out.counters.sync_steps += 1;
            self.send_all_buckets(sink, peer);
            // Assume the exchange will agree; the peer's next frame corrects this if it did not.
            // Otherwise a peer that agrees (and so answers nothing) would be synced every round.
            let root = self.store.root();
            if let Some(m) = self.members.by_addr_mut(peer) {
                m.root = root;
            }
        }
    }

    pub(super) fn push_rumors(&mut self, sink: &mut impl Sink) {
        let peers = self.random_live_peers::<GOSSIP_FANOUT>(false);
        let (store, out, rumors) = (&self.store, &mut self.out, &mut self.rumors);
        rumors.for_each_due(|frame| {
            for &peer in &peers {
                // The store's current versions may be larger than the queued estimate, so the
                // packer may need a second frame; it never overflows one.
                let slots = frame.keys.iter().filter_map(|&k| store.range(k, k).first());
                send_entry_frames(store, out, sink, peer, slots, RUMOR_FRAMES_MAX);
            }
        });
    }

    pub(super) fn send_all_buckets(&mut self, sink: &mut impl Sink, peer: PeerAddr) {
        let mut g = 0;
        while g < GROUPS {
            let mut list = Vec::new();
            while g < GROUPS && !list.is_full() {
                list.push((g as u8, group_buckets(&self.store, g)))
                    .expect("checked not full");
                g += 1;
            }
            self.out.counters.sync_frames += 1;
            self.out
                .send(sink, peer, self.store.root(), Message::SyncBuckets { list });
        }
    }

    pub(super) fn merge_entry(&mut self, bytes: &[u8], sink: &mut impl Sink) {
        // A copy of an entry this node holds (a quarter of what it hears while a deploy spreads)
        // is dropped before it is decoded and validated: the name leads the encoding, so it
        // gives the key, and the digest of the bytes says the rest. Bytes whose name does not
        // read are refused by the decode below.
        let held = postcard::take_from_bytes::<&str>(bytes)
            .is_ok_and(|(name, _)| self.store.contains_exact(key_hash(name), bytes));
        if held {
            self.out.counters.entries_stale += 1;
            return;
        }
        // Decoded once here: the key hash and the signature come from it.
        let entry = match Entry::decode(bytes) {
            Ok(e) => e,
            Err(e) => return self.refuse(sink, Refusal::Entry(StoreError::Entry(e))),
        };
        let key_hash = key_hash(entry.body.name);
        // Only the operator's signature makes an entry: a relay can neither forge nor alter one.
        if let Err(e) = sink.verify_entry(&self.out.trust.operator, &entry) {
            return self.refuse(sink, Refusal::Crypto(e.refusal()));
        }
        match self.merge_store(bytes, &entry) {
            Ok(Merge::Stale) => self.out.counters.entries_stale += 1,
            Ok(_) => {
                assert!(
                    self.store.contains_exact(key_hash, bytes),
                    "a merged entry is stored"
                );
                self.out.counters.entries_changed += 1;
                self.rumors.push(key_hash, bytes.len());
                self.persist(bytes, sink);
                sink.event(Event::EntryChanged { key_hash });
            }
            Err(e) => self.refuse(sink, Refusal::Entry(e)),
        }
    }

    /// Anti-entropy step 2: for each bucket that differs, send our keys; where the peer's bucket
    /// is empty, send the entries themselves.
    pub(super) fn answer_buckets(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        list: &[(u8, [Digest; BUCKETS_PER_GROUP])],
    ) {
        let mut differ = [0u8; 32];
        let mut empty = [0u8; 32];
        for (g, theirs) in list {
            let g = usize::from(*g);
            if g >= GROUPS {
                continue;
            }
            let ours = group_buckets(&self.store, g);
            for i in 0..BUCKETS_PER_GROUP {
                if ours[i] != theirs[i] {
                    let b = g * BUCKETS_PER_GROUP + i;
                    let mask = if theirs[i].0 == 0 {
                        &mut empty
                    } else {
                        &mut differ
                    };
                    mask[b / 8] |= 1 << (b % 8);
                }
            }
        }
        let mut budget = SYNC_FRAMES_PER_STEP;
        self.send_bucket_entries(sink, to, &empty, &mut budget);
        self.send_key_pages(sink, to, &differ, &mut budget);
    }

    pub(super) fn send_bucket_entries(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        mask: &[u8; 32],
        budget: &mut usize,
    ) {
        let (store, out) = (&self.store, &mut self.out);
        let slots = store
            .slots()
            .iter()
            .filter(|s| bit(mask, bucket_of(s.key_hash)));
        *budget -= send_entry_frames(store, out, sink, to, slots, *budget);
    }

    pub(super) fn send_key_pages(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        mask: &[u8; 32],
        budget: &mut usize,
    ) {
        let mut b = 0usize;
        let mut resume: Option<u64> = None;
        while b < BUCKETS && *budget > 0 {
            if !bit(mask, b) {
                b += 1;
                continue;
            }
            let from = resume.unwrap_or(bucket_range(b).0);
            let mut keys: Vec<(Digest, Digest), SYNC_KEYS_PER_FRAME> = Vec::new();
            let mut page_mask = [0u8; 32];
            let mut to_hash = from;
            // Fill one page with whole differing buckets, splitting a bucket only if it alone
            // overflows a page.
            while b < BUCKETS {
                if !bit(mask, b) {
                    b += 1;
                    continue;
                }
                let (lo, hi) = bucket_range(b);
                let slots = self.store.range(resume.unwrap_or(lo), hi);
                if keys.len() + slots.len() > SYNC_KEYS_PER_FRAME && !keys.is_empty() {
                    break;
                }
                page_mask[b / 8] |= 1 << (b % 8);
                let take = slots.len().min(SYNC_KEYS_PER_FRAME - keys.len());
                for s in &slots[..take] {
                    keys.push((Digest(s.key_hash), Digest(s.digest)))
                        .expect("room counted");
                }
                if take < slots.len() {
                    to_hash = slots[take - 1].key_hash;
                    resume = Some(to_hash + 1);
                    break;
                }
                to_hash = hi;
                resume = None;
                b += 1;
            }
            *budget -= 1;
            self.out.counters.sync_frames += 1;
            let msg = Message::SyncKeys {
                from: Digest(from),
                to: Digest(to_hash),
                buckets: page_mask,
                keys,
            };
            self.out.send(sink, to, self.store.root(), msg);
        }
    }

    /// Anti-entropy step 3: push what the peer lacks in the page, ask for what we lack.
    pub(super) fn answer_keys(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        (lo, hi): (u64, u64),
        mask: &[u8; 32],
        theirs: &[(Digest, Digest)],
    ) {
        let (store, out) = (&self.store, &mut self.out);
        let ours = store
            .range(lo, hi)
            .iter()
            .filter(|s| bit(mask, bucket_of(s.key_hash)));
        let missing = ours.filter(|s| !theirs.contains(&(Digest(s.key_hash), Digest(s.digest))));
        send_entry_frames(store, out, sink, to, missing, SYNC_FRAMES_PER_STEP);
        let mut want: Vec<Digest, WANT_PER_FRAME> = Vec::new();
        for &(k, d) in theirs {
            let have = store
                .range(k.0, k.0)
                .first()
                .is_some_and(|s| s.digest == d.0);
            if !have && bit(mask, bucket_of(k.0)) && want.push(k).is_err() {
                break;
            }
        }
        if !want.is_empty() {
            self.out
                .send(sink, to, self.store.root(), Message::Want { keys: want });
        }
    }

    pub(super) fn send_entries(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        keys: impl Iterator<Item = u64>,
    ) {
        let (store, out) = (&self.store, &mut self.out);
        let slots = keys.filter_map(|k| store.range(k, k).first());
        send_entry_frames(store, out, sink, to, slots, SYNC_FRAMES_PER_STEP);
    }
}

fn bit(mask: &[u8; 32], b: usize) -> bool {
    mask[b / 8] & (1 << (b % 8)) != 0
}

/// Packs the entries of `slots` into as few frames as fit, at most `frames_max`; returns frames
/// sent. Entries beyond the budget wait for the next anti-entropy round.
fn send_entry_frames<'s>(
    store: &Store<SERVICES_MAX, ARENA_BYTES>,
    out: &mut Transport,
    sink: &mut impl Sink,
    to: PeerAddr,
    slots: impl Iterator<Item = &'s Slot>,
    frames_max: usize,
) -> usize {
    use crate::config::{BODY_BYTES_MAX, ENTRY_ENVELOPE_BYTES_MAX, RUMOR_KEYS_PER_FRAME};
    // Entries are rebuilt from the store one after another into one frame's worth of bytes;
    // `spans` says where each lies.
    let mut buf = [0u8; BODY_BYTES_MAX];
    let mut spans: Vec<(usize, usize), RUMOR_KEYS_PER_FRAME> = Vec::new();
    let mut used = 0;
    let mut sent = 0;
    let mut bytes = ENTRY_ENVELOPE_BYTES_MAX;
    let mut flush = |buf: &[u8], spans: &mut Vec<(usize, usize), RUMOR_KEYS_PER_FRAME>| {
        let list = spans.iter().map(|&(at, len)| &buf[at..at + len]).collect();
        spans.clear();
        out.send(sink, to, store.root(), Message::Entries { list });
    };
    for s in slots {
        if sent == frames_max {
            return sent;
        }
        let e = store.entry(s);
        if spans.is_full() || bytes + e.len() + 3 > BODY_BYTES_MAX {
            flush(&buf, &mut spans);
            sent += 1;
            (bytes, used) = (ENTRY_ENVELOPE_BYTES_MAX, 0);
            if sent == frames_max {
                return sent;
            }
        }
        buf[used..used + e.len()].copy_from_slice(&e);
        spans.push((used, e.len())).expect("checked not full");
        used += e.len();
        bytes += e.len() + 3;
    }
    if !spans.is_empty() {
        flush(&buf, &mut spans);
        sent += 1;
    }
    // The caller's frame budget is spent by this count, so it must never exceed the budget.
    assert!(sent <= frames_max);
    sent
}
