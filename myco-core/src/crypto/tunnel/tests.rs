use super::*;
use crate::crypto::access::issue_access;
use crate::crypto::handshake::{test_credentials, test_random as rand};
use crate::crypto::keys::test_key;

const NOW: u64 = 1_800_000_000;
const BLOCK: u64 = 5;

struct World {
    operator: SigningKey,
    holder: SigningKey,
    boxed: Credentials,
    trust: Trust,
}

fn world() -> World {
    let operator = test_key(1);
    let boxed = test_credentials(&operator, 10, 2, BLOCK);
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: BLOCK,
        zone: 2,
    };
    World {
        operator,
        holder: test_key(20),
        boxed,
        trust,
    }
}

fn credential(
    signer: &SigningKey,
    holder: &SigningKey,
    expires_at_s: u64,
    issued_at: u64,
    node: Option<u64>,
) -> heapless::Vec<u8, ACCESS_BYTES_MAX> {
    let body = AccessBody {
        operator_pk: signer.public_key().0,
        holder_pk: holder.public_key().0,
        expires_at_s,
        issued_at,
        node,
    };
    issue_access(signer, &body)
}

fn good(w: &World) -> heapless::Vec<u8, ACCESS_BYTES_MAX> {
    credential(&w.operator, &w.holder, NOW + 600, BLOCK, None)
}

/// The box's answer to an Open made with `access`.
fn open_with(w: &World, access: &[u8]) -> Result<(TunnelResponder, TunnelMsg), TunnelError> {
    let (_, open) = TunnelClient::new(access, &w.holder, None, rand(1), rand(2)).unwrap();
    TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4))
}

/// An honest tunnel: both sides get the same keys in opposite directions; records cross both
/// ways; the client learns the box's node id.
#[test]
fn honest_tunnel_carries_records_both_ways() {
    let w = world();
    let access = good(&w);
    let node = Some(w.boxed.node_id());
    let (client, open) = TunnelClient::new(&access, &w.holder, node, rand(1), rand(2)).unwrap();
    let (resp, accept) =
        TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4)).unwrap();
    let (mut c, prove, cert) = client.handle_accept(&accept, &w.holder).unwrap();
    assert_eq!(cert.node_id(), w.boxed.node_id());
    let mut b = resp.handle_prove(&prove, &w.trust, NOW).unwrap();
    let pass = |from: &mut TunnelSession, to: &mut TunnelSession, text: &[u8]| {
        let mut buf = [0u8; 64];
        buf[LENGTH_BYTES..LENGTH_BYTES + text.len()].copy_from_slice(text);
        let n = from.seal(&mut buf, text.len()).unwrap();
        assert_ne!(&buf[LENGTH_BYTES..LENGTH_BYTES + text.len()], text);
        assert_eq!(to.open(&mut buf[..n]).unwrap(), text);
    };
    pass(&mut c, &mut b, b"GET /health HTTP/1.1\r\n\r\n");
    pass(&mut b, &mut c, b"HTTP/1.1 200 OK\r\n\r\n");
}

/// A credential from nobody, another operator, expired, revoked or for another box: the Open is
/// refused with the reason the client is told.
#[test]
fn open_refusals() {
    let w = world();
    let other_op = test_key(2);
    let cases = [
        (
            credential(&other_op, &w.holder, NOW + 600, BLOCK, None),
            RefuseReason::UnknownKey,
        ),
        (
            credential(&w.operator, &w.holder, NOW, BLOCK, None),
            RefuseReason::Expired,
        ),
        (
            credential(&w.operator, &w.holder, NOW + 600, BLOCK - 1, None),
            RefuseReason::Revoked,
        ),
        (
            credential(&w.operator, &w.holder, NOW + 600, BLOCK, Some(42)),
            RefuseReason::WrongNode,
        ),
    ];
    for (access, reason) in cases {
        let err = open_with(&w, &access).err().expect("refused");
        assert_eq!(err.reason(), reason, "{err:?}");
    }
    // No credential at all: an Open whose credential field is empty does not decode.
    let mut open = TunnelMsg::new();
    push(&mut open, &[TunnelKind::Open as u8]);
    push_postcard(
        &mut open,
        &OpenBody {
            access: &[],
            eph: rand(1),
            challenge: rand(2),
        },
    );
    let err = TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4));
    assert_eq!(
        err.err().map(TunnelError::reason),
        Some(RefuseReason::Malformed)
    );
}

/// Garbage, a truncated or trailing-byte Open, or another kind are refused as malformed.
#[test]
fn garbage_opens_are_refused() {
    let w = world();
    let (_, open) = TunnelClient::new(&good(&w), &w.holder, None, rand(1), rand(2)).unwrap();
    let mut long = open.clone();
    long.push(0).unwrap();
    for msg in [
        &[][..],
        &[0x11][..],
        &open[..open.len() - 1],
        &long[..],
        &[0x13; 65],
    ] {
        let r = TunnelResponder::handle_open(msg, &w.boxed, &w.trust, NOW, rand(3), rand(4));
        assert!(r.is_err());
    }
}

/// Someone holding the credential's bytes but not the holder key cannot prove; a Prove from
/// another tunnel (a replay) does not verify; a credential that expires or is revoked between
/// Open and Prove is refused at Prove.
#[test]
fn prove_refusals() {
    let w = world();
    let access = good(&w);
    let thief = test_key(30);
    let (client, open) = TunnelClient::new(&access, &w.holder, None, rand(1), rand(2)).unwrap();
    let (resp, accept) =
        TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4)).unwrap();
    let (_, forged, _) = client.handle_accept(&accept, &thief).unwrap();
    assert_eq!(
        resp.handle_prove(&forged, &w.trust, NOW).err(),
        Some(TunnelError::BadSignature)
    );
    // A second tunnel's Prove, replayed into the first.
    let (client2, open2) = TunnelClient::new(&access, &w.holder, None, rand(5), rand(6)).unwrap();
    let (_, accept2) =
        TunnelResponder::handle_open(&open2, &w.boxed, &w.trust, NOW, rand(7), rand(8)).unwrap();
    let (_, prove2, _) = client2.handle_accept(&accept2, &w.holder).unwrap();
    assert_eq!(
        resp.handle_prove(&prove2, &w.trust, NOW).err(),
        Some(TunnelError::BadSignature)
    );
    let (_, prove, _) = client.handle_accept(&accept, &w.holder).unwrap();
    let late = resp
        .handle_prove(&prove, &w.trust, NOW + 600)
        .err()
        .unwrap();
    assert_eq!(late.reason(), RefuseReason::Expired);
    let raised = Trust {
        revocation_block: BLOCK + 1,
        ..w.trust
    };
    let revoked = resp.handle_prove(&prove, &raised, NOW).err().unwrap();
    assert_eq!(revoked.reason(), RefuseReason::Revoked);
    // Nothing changed: the honest Prove still opens the tunnel.
    assert!(resp.handle_prove(&prove, &w.trust, NOW).is_ok());
}

/// The client refuses a box certified by another operator, one that is not the node it asked
/// for, an altered Accept, and reads a Refuse as the box's reason.
#[test]
fn client_refusals() {
    let w = world();
    let access = good(&w);
    let (client, open) = TunnelClient::new(&access, &w.holder, None, rand(1), rand(2)).unwrap();
    let (_, accept) =
        TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4)).unwrap();
    let mut altered = accept.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(
        client.handle_accept(&altered, &w.holder).err(),
        Some(TunnelError::BadSignature)
    );
    let (picky, _) = TunnelClient::new(&access, &w.holder, Some(9), rand(1), rand(2)).unwrap();
    assert!(matches!(
        picky.handle_accept(&accept, &w.holder).err(),
        Some(TunnelError::WrongNode { expected: 9, .. })
    ));
    let rogue_op = test_key(3);
    let rogue = test_credentials(&rogue_op, 11, 2, BLOCK);
    let rogue_trust = Trust {
        operator: rogue_op.public_key(),
        ..w.trust
    };
    // The rogue box cannot verify the credential, but an impostor answers anyway.
    let r = TunnelResponder::handle_open(&open, &rogue, &rogue_trust, NOW, rand(3), rand(4));
    assert!(r.is_err());
    let refuse = RefuseReason::Busy.encode();
    assert_eq!(
        client.handle_accept(&refuse, &w.holder).err(),
        Some(TunnelError::Refused(RefuseReason::Busy))
    );
    assert_eq!(
        client.handle_accept(&[0x14, 99], &w.holder).err(),
        Some(TunnelError::Malformed)
    );
    // A credential for another holder is refused before anything is sent.
    assert!(TunnelClient::new(&access, &test_key(31), None, rand(1), rand(2)).is_err());
}

/// A record replayed, reordered, altered or cut is refused and leaves the session as it was.
#[test]
fn records_refuse_replay_and_tampering() {
    let w = world();
    let access = good(&w);
    let (client, open) = TunnelClient::new(&access, &w.holder, None, rand(1), rand(2)).unwrap();
    let (resp, accept) =
        TunnelResponder::handle_open(&open, &w.boxed, &w.trust, NOW, rand(3), rand(4)).unwrap();
    let (mut c, prove, _) = client.handle_accept(&accept, &w.holder).unwrap();
    let mut b = resp.handle_prove(&prove, &w.trust, NOW).unwrap();
    let seal = |c: &mut TunnelSession, text: &[u8]| {
        let mut buf = [0u8; 64];
        buf[LENGTH_BYTES..LENGTH_BYTES + text.len()].copy_from_slice(text);
        let n = c.seal(&mut buf, text.len()).unwrap();
        heapless::Vec::<u8, 64>::from_slice(&buf[..n]).unwrap()
    };
    let first = seal(&mut c, b"one");
    let second = seal(&mut c, b"two");
    // Out of order: the second first.
    assert_eq!(
        b.open(&mut second.clone()).err(),
        Some(TunnelError::BadRecord)
    );
    let mut flipped = first.clone();
    flipped[4] ^= 1;
    assert_eq!(b.open(&mut flipped).err(), Some(TunnelError::BadRecord));
    let mut cut = first.clone();
    cut.pop();
    assert_eq!(b.open(&mut cut).err(), Some(TunnelError::Malformed));
    assert_eq!(b.open(&mut first.clone()).unwrap(), b"one");
    assert_eq!(
        b.open(&mut first.clone()).err(),
        Some(TunnelError::BadRecord)
    );
    assert_eq!(b.open(&mut second.clone()).unwrap(), b"two");
    // A record the box seals does not open as one from the client (keys differ by direction).
    let back = seal(&mut b, b"one");
    assert_eq!(
        b.open(&mut back.clone()).err(),
        Some(TunnelError::BadRecord)
    );
}

/// Length prefixes of 0 or past the maximum are refused.
#[test]
fn frame_len_bounds() {
    assert_eq!(frame_len([0, 0], 10), Err(TunnelError::Malformed));
    assert_eq!(frame_len([0, 10], 10), Ok(10));
    assert_eq!(frame_len([0, 11], 10), Err(TunnelError::Malformed));
}
