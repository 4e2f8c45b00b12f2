//! Simulated identities: the operator key and each node's key and certificate, all derived from
//! the scenario seed, so a run replays with the same keys.
//!
//! Boxes differ as a fleet does: about a third are aarch64 and a quarter have a GPU, drawn from the
//! seed, so placement's eligibility rules run in every scenario. Every box is in zone 0: nodes
//! gossip only within their zone, and the simulator runs one cluster.

use myco_core::config::{CERT_BYTES_MAX, SIGNATURE_BYTES};
use myco_core::crypto::cert;
use myco_core::crypto::{signature_holds, Cert, PublicKey, SigningKey};
use myco_core::random::Prng;
use myco_core::schema::entry::Arch;
use myco_core::schema::message::MemberMeta;
use myco_core::PeerAddr;

/// Certificate checks the memo keeps: a cluster's nodes and the adversary's certificates fit.
const CHECKED_KEPT: usize = 1024;

/// A certificate signature checked once, with its answer.
struct Checked {
    operator: [u8; 32],
    signature: [u8; SIGNATURE_BYTES],
    signed: heapless::Vec<u8, CERT_BYTES_MAX>,
    holds: bool,
}

thread_local! {
    // Per thread: the gauntlet runs its seeds in threads. Sized at boot (`forget_checked_certs`),
    // so a handshake never allocates.
    static CHECKED: std::cell::RefCell<Vec<Checked>> =
        std::cell::RefCell::new(Vec::with_capacity(CHECKED_KEPT));
}

/// Every node checks the certificate of every peer it meets, and in a cluster of n nodes
/// that is n(n-1) Ed25519 verifications of n certificates (5% of a run at 50 nodes). The nodes'
/// `CertCheck` (`Node::set_cert_check`): it answers as `signature_holds` does for the same bytes,
/// whole (operator key, signed bytes, signature), verifying only bytes it has not seen.
pub fn checked_cert(cert: &Cert<'_>, operator: &PublicKey) -> bool {
    CHECKED.with(|kept| {
        let mut kept = kept.borrow_mut();
        let same = |c: &&Checked| {
            c.signature == *cert.signature && c.operator == operator.0 && c.signed == cert.signed
        };
        if let Some(c) = kept.iter().find(same) {
            return c.holds;
        }
        let holds = signature_holds(cert, operator);
        let signed = heapless::Vec::from_slice(cert.signed);
        if let (true, Ok(signed)) = (kept.len() < CHECKED_KEPT, signed) {
            kept.push(Checked {
                operator: operator.0,
                signature: *cert.signature,
                signed,
                holds,
            });
        }
        holds
    })
}

/// Empties the memo of certificate checks (a new run, with keys of its own), at boot.
pub fn forget_checked_certs() {
    CHECKED.with(|kept| kept.borrow_mut().clear());
}

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
    /// Each node's `--bridge-seed` addresses, made at boot so a restart allocates nothing
    /// (`cluster::bridge_seeds`; empty until the cluster sets them).
    pub bridge_seeds: Vec<Vec<PeerAddr>>,
}

/// An x86_64 box without a GPU in `zone`: the adversary's stolen certificates.
pub fn plain(zone: u8) -> MemberMeta {
    MemberMeta {
        arch: Arch::X86_64,
        zone,
        gpu: false,
        bridge: false,
        relay: false,
        nat: false,
    }
}

/// A certificate from `operator` for the node key of `seed`, describing a box like `meta`.
pub fn certify(operator: &SigningKey, seed: [u8; 32], meta: MemberMeta, issued_at: u64) -> Vec<u8> {
    let node = SigningKey::from_seed(seed)
        .expect("non-zero seed")
        .public_key();
    if meta.bridge {
        let scope = cert::BridgeScope::All;
        return cert::certify_bridge(operator, &node, meta.zone, meta.arch, scope, issued_at)
            .to_vec();
    }
    cert::certify(operator, &node, meta.zone, meta.arch, meta.gpu, issued_at).to_vec()
}

/// Bridge-capable boxes per zone in a run with zones: the first ones of each zone. More than
/// `BRIDGES_PER_ZONE`, so a killed bridge has a successor.
pub const BRIDGE_CAPABLE_PER_ZONE: usize = 4;

/// The zone of node `i` when `zones` zones share the nodes round-robin.
pub fn zone_of(i: usize, zones: u8) -> u8 {
    (i % usize::from(zones.max(1))) as u8
}

/// Whether node `i` is bridge-capable: only with more than one zone, the first
/// `BRIDGE_CAPABLE_PER_ZONE` of each zone.
pub fn bridge_capable(i: usize, zones: u8) -> bool {
    zones > 1 && i / usize::from(zones) < BRIDGE_CAPABLE_PER_ZONE
}

impl Identities {
    /// Keys for `nodes` nodes, certified at RevocationBlock height `block`.
    pub fn new(seed: u64, nodes: usize, block: u64) -> Identities {
        Identities::zoned(seed, nodes, block, 1)
    }

    /// As `new`, with the nodes spread round-robin over `zones` zones (`zone_of`) and a few
    /// bridge-capable ones in each (`bridge_capable`). One zone gives exactly `new`'s identities.
    pub fn zoned(seed: u64, nodes: usize, block: u64, zones: u8) -> Identities {
        let mut r = Prng::new(seed ^ 0x4b45_5953);
        let operator = SigningKey::from_seed(seed32(&mut r)).expect("non-zero seed");
        let node_seeds: Vec<[u8; 32]> = (0..nodes).map(|_| seed32(&mut r)).collect();
        // Drawn from their own stream, so the keys above do not depend on them.
        let mut h = Prng::new(seed ^ 0x4857_4152);
        let metas: Vec<MemberMeta> = (0..nodes)
            .map(|i| MemberMeta {
                arch: if h.chance(1, 3) {
                    Arch::Aarch64
                } else {
                    Arch::X86_64
                },
                zone: zone_of(i, zones),
                // A bridge certificate has no GPU (`cert::certify_bridge`); drawn either way so
                // the stream stays the same.
                gpu: h.chance(1, 4) && !bridge_capable(i, zones),
                bridge: bridge_capable(i, zones),
                relay: false,
                nat: false,
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
            bridge_seeds: vec![Vec::new(); nodes],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo answers as the signature check does, for the bytes whole: a certificate whose
    /// signed bytes or signature changed by one bit, or checked under another operator, is not
    /// answered from a good one's entry; asked again, each answer stands.
    #[test]
    fn remembered_cert_checks_answer_as_verifying() {
        forget_checked_certs();
        let ids = Identities::new(5, 3, 0);
        let other = SigningKey::from_seed([9; 32]).unwrap().public_key();
        let mut cases: Vec<(Vec<u8>, PublicKey)> = Vec::new();
        for bytes in &ids.certs {
            cases.push((bytes.clone(), ids.operator.public_key()));
            cases.push((bytes.clone(), other));
            for at in [1, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 1;
                cases.push((bad, ids.operator.public_key()));
            }
        }
        for _ in 0..2 {
            for (bytes, operator) in &cases {
                let Ok(cert) = Cert::decode(bytes) else {
                    continue;
                };
                assert_eq!(
                    checked_cert(&cert, operator),
                    signature_holds(&cert, operator)
                );
            }
        }
        let holds =
            |(b, o): &(Vec<u8>, PublicKey)| Cert::decode(b).is_ok_and(|c| checked_cert(&c, o));
        assert_eq!(
            cases.iter().filter(|c| holds(c)).count(),
            3,
            "the three good ones"
        );
        CHECKED.with(|kept| assert!(kept.borrow().len() <= cases.len()));
    }
}
