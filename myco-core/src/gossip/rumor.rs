//! The outbound rumor queue: new entries waiting to be pushed to random peers.
//!
//! At most `GOSSIP_QUEUE_DEPTH` frames; a new entry joins the newest frame while it has room, and
//! when the queue is full the oldest frame is dropped (and counted). Frames hold key hashes, not
//! bytes: at send time the store's current entry is encoded, so a rumor never spreads a version the
//! node itself has already replaced. Anti-entropy repairs whatever the queue dropped.

use crate::config::{
    BODY_BYTES_MAX, ENTRY_ENVELOPE_BYTES_MAX, GOSSIP_QUEUE_DEPTH, RUMOR_KEYS_PER_FRAME,
    RUMOR_TRANSMITS,
};
use heapless::{Deque, Vec};

#[derive(Clone, Debug, Default)]
pub struct RumorFrame {
    pub keys: Vec<u64, RUMOR_KEYS_PER_FRAME>,
    /// Upper bound of the frame's encoded body.
    bytes: usize,
    pub transmits_left: u8,
}

#[derive(Default)]
pub struct RumorQueue {
    frames: Deque<RumorFrame, GOSSIP_QUEUE_DEPTH>,
    pub dropped_frames: u64,
}

impl RumorQueue {
    pub const fn new() -> Self {
        RumorQueue {
            frames: Deque::new(),
            dropped_frames: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Queues `key_hash` whose encoded entry is `entry_len` bytes.
    pub fn push(&mut self, key_hash: u64, entry_len: usize) {
        self.queue(key_hash, entry_len);
        // Whichever way it went, the key rides in the newest frame with every transmit ahead of
        // it, and the queue stays within its depth.
        let newest = self.frames.back().expect("a key was just queued");
        assert!(newest.keys.contains(&key_hash));
        assert_eq!(newest.transmits_left, RUMOR_TRANSMITS);
        assert!(self.frames.len() <= GOSSIP_QUEUE_DEPTH);
    }

    fn queue(&mut self, key_hash: u64, entry_len: usize) {
        let cost = entry_len + 3;
        if let Some(newest) = self.frames.back_mut() {
            if newest.keys.contains(&key_hash) {
                newest.transmits_left = RUMOR_TRANSMITS;
                return;
            }
            let fits = newest.bytes + cost <= BODY_BYTES_MAX && !newest.keys.is_full();
            // Only a frame not yet sent takes new keys, so each key gets its full transmits.
            if fits && newest.transmits_left == RUMOR_TRANSMITS {
                newest.keys.push(key_hash).expect("checked not full");
                newest.bytes += cost;
                return;
            }
        }
        if self.frames.is_full() {
            self.frames.pop_front();
            self.dropped_frames += 1;
        }
        let mut frame = RumorFrame {
            keys: Vec::new(),
            bytes: ENTRY_ENVELOPE_BYTES_MAX + cost,
            transmits_left: RUMOR_TRANSMITS,
        };
        frame.keys.push(key_hash).expect("empty frame has room");
        self.frames.push_back(frame).expect("room made above");
    }

    /// Takes the frames for this round: each is returned once per round until its transmits run
    /// out. `f` sends one frame.
    pub fn for_each_due(&mut self, mut f: impl FnMut(&RumorFrame)) {
        for frame in self.frames.iter_mut() {
            f(frame);
            frame.transmits_left -= 1;
        }
        // Frames are queued in order and all age together, so the ones that ran out are in front.
        while self.frames.front().is_some_and(|fr| fr.transmits_left == 0) {
            self.frames.pop_front();
        }
        assert!(self.frames.iter().all(|fr| fr.transmits_left > 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue never holds more than five frames and drops the oldest first.
    #[test]
    fn drops_oldest_when_full() {
        let mut q = RumorQueue::new();
        for k in 0..(GOSSIP_QUEUE_DEPTH as u64 + 2) {
            q.push(k, 900); // one entry per frame
        }
        assert_eq!(q.len(), GOSSIP_QUEUE_DEPTH);
        assert_eq!(q.dropped_frames, 2);
        let mut first = None;
        q.for_each_due(|f| {
            first.get_or_insert(f.keys[0]);
        });
        assert_eq!(first, Some(2));
    }

    /// Small entries share a frame; frames retire after their transmits.
    #[test]
    fn packs_and_retires() {
        let mut q = RumorQueue::new();
        for k in 0..10 {
            q.push(k, 50);
        }
        assert_eq!(q.len(), 1);
        for _ in 0..RUMOR_TRANSMITS {
            let mut n = 0;
            q.for_each_due(|f| n += f.keys.len());
            assert_eq!(n, 10);
        }
        assert!(q.is_empty());
    }
}
