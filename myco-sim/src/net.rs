//! The simulated network: in-memory queues with latency, loss, duplication, reordering and
//! partitions, all drawn from one seeded PRNG.
//!
//! Frames live in a slab allocated at boot; in-flight packets are a min-heap by delivery time
//! (ties broken by send order, so delivery is deterministic). A full slab drops the frame and
//! counts it, like a congested link; it never allocates while the nodes run.

use myco_core::config::FRAME_BYTES;
use myco_core::random::Prng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How long the NAT model keeps a mapping without outbound traffic: 30 s, the short end of what
/// home and carrier NATs keep (RFC 4787 asks for 2 minutes).
pub const NAT_MAPPING_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Probability in parts per million.
    pub loss_ppm: u64,
    pub duplicate_ppm: u64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    from: u16,
    to: u16,
    slot: u32,
}

pub struct Net {
    pub faults: Faults,
    rng: Prng,
    frames: Vec<[u8; FRAME_BYTES]>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Partition side per node; frames between different sides are dropped.
    pub side: Vec<u8>,
    /// A slow node and by how much: every frame to it arrives this many ms late, as if its
    /// process were stalled or its CPU saturated (its own timers still fire on time).
    pub slow: Option<(u16, u64)>,
    /// Nodes behind NAT, and when node `i` last sent to node `j` (at `i * n + j`, plus one: 0 is
    /// never), allocated only when some node is behind NAT.
    nat: Vec<bool>,
    mapped: Vec<u64>,
    /// Frames to a node behind NAT from an address it had not sent to within `NAT_MAPPING_MS`.
    pub nat_dropped: u64,
    pub sent: u64,
    pub lost: u64,
    pub congested: u64,
    pub delivered: u64,
}

/// A delivered frame, borrowed from the slab until the next `pop`.
pub struct Delivery {
    pub from: u16,
    pub to: u16,
    pub slot: u32,
}

impl Net {
    pub fn new(nodes: usize, faults: Faults, seed: u64, slots: usize) -> Net {
        Net {
            faults,
            rng: Prng::new(seed),
            frames: vec![[0u8; FRAME_BYTES]; slots],
            free: (0..slots as u32).rev().collect(),
            heap: BinaryHeap::with_capacity(slots),
            seq: 0,
            side: vec![0; nodes],
            slow: None,
            nat: vec![false; nodes],
            mapped: Vec::new(),
            nat_dropped: 0,
            sent: 0,
            lost: 0,
            congested: 0,
            delivered: 0,
        }
    }

    /// Puts the nodes marked true behind NAT (endpoint-independent mapping, address-dependent
    /// filtering: what most home and carrier NATs do). Call before the nodes boot.
    pub fn behind_nat(&mut self, nat: &[bool]) {
        self.nat[..nat.len()].copy_from_slice(nat);
        if nat.iter().any(|&b| b) {
            self.mapped = vec![0; self.nat.len() * self.nat.len()];
        }
    }

    /// Whether the frame passes the NAT model: it refreshes the sender's mapping if the sender is
    /// behind NAT, and reaches a node behind NAT only from an address that node sent to lately.
    fn nat_passes(&mut self, now: u64, from: usize, to: usize) -> bool {
        let n = self.nat.len();
        if self.nat[from] {
            self.mapped[from * n + to] = now + 1;
        }
        if !self.nat[to] {
            return true;
        }
        let at = self.mapped[to * n + from];
        let open = at > 0 && now + 1 - at < NAT_MAPPING_MS;
        if !open {
            self.nat_dropped += 1;
        }
        open
    }

    /// Whether node `from` is behind the NAT.
    pub fn behind(&self, from: usize) -> bool {
        self.nat.get(from).copied().unwrap_or(false)
    }

    fn ppm(&mut self, p: u64) -> bool {
        p > 0 && self.rng.chance(p, 1_000_000)
    }

    pub fn send(&mut self, now: u64, from: u16, to: u16, frame: &[u8; FRAME_BYTES]) {
        self.send_sealing(now, (from, to), &mut frame.clone(), |_| {});
    }

    /// As `send`, for a frame that `seal` finishes: it is sealed only once the network has
    /// decided that it is not lost (the draws do not depend on its bytes, so a run replays alike).
    pub fn send_sealing(
        &mut self,
        now: u64,
        (from, to): (u16, u16),
        frame: &mut [u8; FRAME_BYTES],
        seal: impl FnOnce(&mut [u8; FRAME_BYTES]),
    ) {
        self.sent += 1;
        if !self.nat_passes(now, usize::from(from), usize::from(to)) {
            return;
        }
        if self.side[usize::from(from)] != self.side[usize::from(to)]
            || self.ppm(self.faults.loss_ppm)
        {
            self.lost += 1;
            return;
        }
        seal(frame);
        let copies = if self.ppm(self.faults.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let Some(slot) = self.free.pop() else {
                self.congested += 1;
                return;
            };
            self.frames[slot as usize] = *frame;
            let span = self.faults.latency_ms_max - self.faults.latency_ms_min + 1;
            let stall = self.slow.filter(|&(n, _)| n == to).map_or(0, |(_, ms)| ms);
            let deliver_at = now + self.faults.latency_ms_min + self.rng.below(span) + stall;
            self.seq += 1;
            self.heap.push(Reverse(InFlight {
                deliver_at,
                seq: self.seq,
                from,
                to,
                slot,
            }));
        }
    }

    /// The next frame due at or before `now`, if any. Call `frame` to read it, then `release`.
    pub fn pop(&mut self, now: u64) -> Option<Delivery> {
        let Reverse(top) = *self.heap.peek()?;
        if top.deliver_at > now {
            return None;
        }
        self.heap.pop();
        self.delivered += 1;
        Some(Delivery {
            from: top.from,
            to: top.to,
            slot: top.slot,
        })
    }

    pub fn frame(&self, d: &Delivery) -> &[u8; FRAME_BYTES] {
        &self.frames[d.slot as usize]
    }

    pub fn release(&mut self, d: Delivery) {
        self.free.push(d.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Faults of `loss_ppm` loss and 1 ms latency, nothing else.
    fn lossy(loss_ppm: u64) -> Faults {
        Faults {
            loss_ppm,
            duplicate_ppm: 0,
            latency_ms_min: 1,
            latency_ms_max: 1,
        }
    }

    /// A node behind NAT receives only from a node it sent to within `NAT_MAPPING_MS`; what it
    /// sends always leaves, and public nodes receive from anyone.
    #[test]
    fn the_nat_model_lets_in_only_answers_to_recent_sends() {
        let faults = lossy(0);
        let mut net = Net::new(3, faults, 1, 16);
        net.behind_nat(&[false, true, false]);
        let f = [0u8; FRAME_BYTES];
        net.send(0, 0, 1, &f);
        assert_eq!(net.nat_dropped, 1, "nothing sent to 0 yet");
        net.send(10, 1, 0, &f);
        net.send(20, 0, 1, &f);
        net.send(10 + NAT_MAPPING_MS - 1, 0, 1, &f);
        assert_eq!(net.nat_dropped, 1, "an open mapping lets answers in");
        net.send(10 + NAT_MAPPING_MS, 0, 1, &f);
        net.send(30, 2, 1, &f);
        assert_eq!(net.nat_dropped, 3, "expired, and never sent to 2");
        net.send(40, 2, 0, &f);
        assert_eq!(net.nat_dropped, 3, "a public node receives from anyone");
    }

    /// Exactly the frames the network keeps are sealed, and each is delivered as sealed.
    #[test]
    fn only_frames_not_lost_are_sealed() {
        let faults = lossy(500_000);
        let mut net = Net::new(2, faults, 7, 256);
        let mut sealed = 0;
        for _ in 0..200 {
            let mut f = [0u8; FRAME_BYTES];
            net.send_sealing(0, (0, 1), &mut f, |f| {
                sealed += 1;
                f[0] = 0xAA;
            });
        }
        assert!(net.lost > 50 && net.lost < 150, "{} lost", net.lost);
        assert_eq!(sealed, 200 - net.lost);
        let mut delivered = 0;
        while let Some(d) = net.pop(1) {
            assert_eq!(net.frame(&d)[0], 0xAA);
            net.release(d);
            delivered += 1;
        }
        assert_eq!(delivered, sealed);
    }
}
