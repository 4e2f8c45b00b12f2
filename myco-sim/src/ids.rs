//! Simulated identities: the operator key and each node's key and certificate, all derived from
//! the scenario seed, so a run replays with the same keys.

use myco_core::crypto::cert;
use myco_core::crypto::SigningKey;
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;

/// A non-zero 32-byte seed from the PRNG.
pub fn seed32(r: &mut Prng) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    out[0] |= 1;
    out
}

pub struct Identities {
    pub operator: SigningKey,
    pub node_seeds: Vec<[u8; 32]>,
    /// Each node's current certificate and the block it was issued at.
    pub certs: Vec<Vec<u8>>,
    pub issued_at: Vec<u64>,
}

/// A certificate from `operator` for the node key of `seed`.
pub fn certify(operator: &SigningKey, seed: [u8; 32], zone: u8, issued_at: u64) -> Vec<u8> {
    let node = SigningKey::from_seed(seed)
        .expect("non-zero seed")
        .public_key();
    cert::certify(operator, &node, zone, Arch::X86_64, false, issued_at).to_vec()
}

impl Identities {
    /// Keys for `nodes` nodes, certified at RevocationBlock height `block`.
    pub fn new(seed: u64, nodes: usize, block: u64) -> Identities {
        let mut r = Prng::new(seed ^ 0x4b45_5953);
        let operator = SigningKey::from_seed(seed32(&mut r)).expect("non-zero seed");
        let node_seeds: Vec<[u8; 32]> = (0..nodes).map(|_| seed32(&mut r)).collect();
        let certs = node_seeds
            .iter()
            .map(|&s| certify(&operator, s, 0, block))
            .collect();
        Identities {
            operator,
            node_seeds,
            certs,
            issued_at: vec![block; nodes],
        }
    }
}
