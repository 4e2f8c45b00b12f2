//! The attacker on the network (`--adversary`): an outsider at its own address, and a stolen box.
//!
//! The outsider taps frames that nodes took and later replays them, flips bits in them,
//! sends handshakes with a self-signed certificate, with a revoked one and with one for a foreign
//! zone, sends frames for a foreign zone, and sends garbage. None of it may be accepted: no sealed
//! frame may open and no handshake may complete with it.
//!
//! The stolen box is one of the nodes (the last) whose disk the attacker rewrote: at restart it
//! replays slots and tombstones forged with the attacker's own key, or with the operator's key id
//! but a broken signature, and its gossip pushes them everywhere. No honest node may store one.
//! The stolen box itself is excluded from the convergence check: its state is not the cluster's.

use crate::ids::{certify, plain, seed32};
use myco_core::config::FRAME_BYTES;
use myco_core::crypto::handshake::{Credentials, Trust};
use myco_core::crypto::{Initiator, SigningKey};
use myco_core::random::Prng;
use myco_core::schema::frame::{body_mut, write_frame, Header, Kind};

const TAPE_FRAMES: usize = 64;

pub struct Adversary {
    rng: Prng,
    tape: Vec<[u8; FRAME_BYTES]>,
    taped: usize,
    /// Hellos prepared at boot: self-signed, revoked, foreign zone (each with its sender id).
    hellos: Vec<(u64, [u8; FRAME_BYTES])>,
    pub frames_sent: u64,
    pub frames_accepted: u64,
}

/// A well-formed Hello frame from `creds`.
/// The header always claims zone 0, the cluster's, so a foreign certificate reaches the
/// handshake's zone check instead of the frame's.
fn hello_frame(creds: &Credentials, block: u64, rng: &mut Prng) -> (u64, [u8; FRAME_BYTES]) {
    // The attacker's own view of trust: whatever makes its Initiator sign.
    let zone = creds.cert().zone;
    let trust = Trust {
        operator: creds.operator(),
        revocation_block: 0,
        zone,
    };
    let (_, hello) = Initiator::new(creds, &trust, seed32(rng), seed32(rng)).expect("own trust");
    let mut frame = [0u8; FRAME_BYTES];
    body_mut(&mut frame)[..hello.len()].copy_from_slice(&hello);
    let header = Header {
        kind: Kind::Hello,
        zone: 0,
        revocation_block: block,
        sender: creds.node_id(),
        counter: 0,
    };
    write_frame(&mut frame, &header, hello.len());
    (creds.node_id(), frame)
}

impl Adversary {
    /// `operator` is the cluster's real key: it signed the revoked and the foreign-zone
    /// certificates the attacker stole; `block` is the cluster's RevocationBlock (at least 1).
    pub fn new(seed: u64, operator: &SigningKey, block: u64) -> Adversary {
        assert!(block >= 1, "a revoked certificate needs a block above 0");
        let mut rng = Prng::new(seed ^ 0x4144_5645);
        let rogue = SigningKey::from_seed(seed32(&mut rng)).expect("non-zero seed");
        let mut hellos = Vec::new();
        for (issuer, zone, issued_at) in [
            (&rogue, 0u8, block),
            (operator, 0, block - 1),
            (operator, 1, block),
        ] {
            let node_seed = seed32(&mut rng);
            let cert = certify(issuer, node_seed, plain(zone), issued_at);
            let key = SigningKey::from_seed(node_seed).expect("non-zero seed");
            let creds = Credentials::new(key, &cert, &issuer.public_key()).expect("well-formed");
            hellos.push(hello_frame(&creds, block, &mut rng));
        }
        Adversary {
            rng,
            tape: vec![[0; FRAME_BYTES]; TAPE_FRAMES],
            taped: 0,
            hellos,
            frames_sent: 0,
            frames_accepted: 0,
        }
    }

    /// Records a frame a node took, so a replay is always a duplicate.
    pub fn tap(&mut self, frame: &[u8; FRAME_BYTES]) {
        if self.rng.chance(1, 8) {
            let slot = self.taped % TAPE_FRAMES;
            self.tape[slot] = *frame;
            self.taped += 1;
        }
    }

    /// Maybe builds one attack frame for this tick: (target node, frame).
    pub fn attack(&mut self, nodes: usize) -> Option<(usize, [u8; FRAME_BYTES])> {
        if !self.rng.chance(1, 2) {
            return None;
        }
        let to = self.rng.below(nodes as u64) as usize;
        let frame = match self.rng.below(6) {
            0 | 1 if self.taped > 0 => self.replay(),
            2 if self.taped > 0 => self.flip(),
            3 => self.hellos[self.rng.below(self.hellos.len() as u64) as usize].1,
            4 if self.taped > 0 => {
                let mut f = self.replay();
                f[4] ^= 1; // a foreign zone
                f
            }
            _ => {
                let mut f = [0u8; FRAME_BYTES];
                f.iter_mut().for_each(|b| *b = self.rng.next_u64() as u8);
                f[0..2].copy_from_slice(b"MY");
                f
            }
        };
        self.frames_sent += 1;
        Some((to, frame))
    }

    fn replay(&mut self) -> [u8; FRAME_BYTES] {
        self.tape[self.rng.below(self.taped.min(TAPE_FRAMES) as u64) as usize]
    }

    fn flip(&mut self) -> [u8; FRAME_BYTES] {
        let mut f = self.replay();
        let at = self.rng.below(FRAME_BYTES as u64) as usize;
        f[at] ^= 1 << self.rng.below(8);
        f
    }
}

/// Entries the attacker writes onto the stolen box's disk: slots and tombstones signed with its
/// own key (one per name, with a clock that would win every merge), and `genuine` entries with a
/// byte of their signed body altered under the operator's signature.
pub fn forged_entries(seed: u64, names: &[&str], genuine: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut rng = Prng::new(seed ^ 0x464f_5247);
    let rogue = SigningKey::from_seed(seed32(&mut rng)).expect("non-zero seed");
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        out.push(crate::scenario::encode(
            (seed, i as u64, name),
            (u64::MAX / 2, 1),
            i % 2 == 1,
            &mut rng,
            &rogue,
        ));
    }
    for entry in genuine {
        let mut e = entry.to_vec();
        // The first byte after the name is the clock's first varint byte.
        let at = 1 + usize::from(e[0]);
        e[at] ^= 0x01;
        out.push(e);
    }
    out
}
