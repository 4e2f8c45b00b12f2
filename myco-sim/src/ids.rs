//! Simulated identities: the operator key and each node's key and certificate, all derived from
//! the scenario seed, so a run replays with the same keys.
//!
//! Boxes differ as a fleet does: about a third are aarch64 and a quarter have a GPU, drawn from the
//! seed, so placement's eligibility rules run in every scenario. Every box is in zone 0: nodes
//! gossip only within their zone, and the simulator runs one cluster.

use myco_core::crypto::cert;
use myco_core::crypto::SigningKey;
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;
use myco_core::schema::message::MemberMeta;

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
    /// What each box's certificate says it is; placement reads it from there.
    pub metas: Vec<MemberMeta>,
}

/// An x86_64 box without a GPU in `zone`: the adversary's stolen certificates.
pub fn plain(zone: u8) -> MemberMeta {
    MemberMeta {
        arch: Arch::X86_64,
        zone,
        gpu: false,
    }
}

/// A certificate from `operator` for the node key of `seed`, describing a box like `meta`.
pub fn certify(operator: &SigningKey, seed: [u8; 32], meta: MemberMeta, issued_at: u64) -> Vec<u8> {
    let node = SigningKey::from_seed(seed)
        .expect("non-zero seed")
        .public_key();
    cert::certify(operator, &node, meta.zone, meta.arch, meta.gpu, issued_at).to_vec()
}

impl Identities {
    /// Keys for `nodes` nodes, certified at RevocationBlock height `block`.
    pub fn new(seed: u64, nodes: usize, block: u64) -> Identities {
        let mut r = Prng::new(seed ^ 0x4b45_5953);
        let operator = SigningKey::from_seed(seed32(&mut r)).expect("non-zero seed");
        let node_seeds: Vec<[u8; 32]> = (0..nodes).map(|_| seed32(&mut r)).collect();
        // Drawn from their own stream, so the keys above do not depend on them.
        let mut h = Prng::new(seed ^ 0x4857_4152);
        let metas: Vec<MemberMeta> = (0..nodes)
            .map(|_| MemberMeta {
                arch: if h.chance(1, 3) {
                    Arch::Aarch64
                } else {
                    Arch::X86_64
                },
                zone: 0,
                gpu: h.chance(1, 4),
            })
            .collect();
        let certs = node_seeds
            .iter()
            .zip(&metas)
            .map(|(&s, &m)| certify(&operator, s, m, block))
            .collect();
        Identities {
            operator,
            node_seeds,
            certs,
            issued_at: vec![block; nodes],
            metas,
        }
    }
}
