use super::test_random as rand;
use super::*;
use crate::crypto::cert::{certify_bridge, encode_cert, sign_cert, BridgeScope};
use crate::crypto::keys::test_key;
use crate::crypto::session::Session;
use crate::schema::entry::Arch;

const ZONE: u8 = 3;
const BLOCK: u64 = 5;

struct World {
    operator: SigningKey,
    a: Credentials,
    b: Credentials,
    trust: Trust,
}

fn world() -> World {
    let operator = test_key(1);
    let a = test_credentials(&operator, 10, ZONE, BLOCK);
    let b = test_credentials(&operator, 11, ZONE, BLOCK);
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: BLOCK,
        zone: ZONE,
    };
    World {
        operator,
        a,
        b,
        trust,
    }
}

/// The three messages of one honest handshake of `a` (initiator) with `b`.
struct Transcript {
    initiator: Initiator,
    responder: Responder,
    hello: HandshakeMsg,
    reply: HandshakeMsg,
    finish: HandshakeMsg,
}

fn run(w: &World, a: &Credentials, b: &Credentials, n: u8) -> Transcript {
    let (initiator, hello) = Initiator::new(a, &w.trust, rand(n), rand(n + 1)).unwrap();
    let (responder, reply) =
        Responder::handle_hello(&hello, b, &w.trust, rand(n + 2), rand(n + 3)).unwrap();
    let (_, finish, _) = initiator.handle_reply(&reply, a, &w.trust).unwrap();
    Transcript {
        initiator,
        responder,
        hello,
        reply,
        finish,
    }
}

/// An honest handshake completes on both sides with mirrored keys and each side learns the
/// other's certified identity; the keys then carry sealed frames both ways.
#[test]
fn honest_handshake_agrees_on_keys() {
    let w = world();
    let (i, hello) = Initiator::new(&w.a, &w.trust, rand(1), rand(2)).unwrap();
    assert_eq!(MsgKind::of(&hello), Some(MsgKind::Hello));
    let (r, reply) = Responder::handle_hello(&hello, &w.b, &w.trust, rand(3), rand(4)).unwrap();
    assert_eq!(r.peer().node_id, w.a.node_id());
    let (ki, finish, peer_b) = i.handle_reply(&reply, &w.a, &w.trust).unwrap();
    let (kr, peer_a) = r.handle_finish(&finish, &w.trust).unwrap();
    assert_eq!((ki.tx, ki.rx), (kr.rx, kr.tx));
    assert_ne!(ki.tx, ki.rx);
    assert_eq!(peer_b.node_id, w.b.node_id());
    assert_eq!(peer_b.cert, *w.b.cert());
    assert_eq!(peer_a.node_id, w.a.node_id());

    let (mut si, mut sr) = (Session::new(&ki), Session::new(&kr));
    let mut header = [0u8; 32];
    let mut body = [7u8; crate::config::BODY_BYTES_MAX];
    let c = si.next_counter().unwrap();
    header[24..].copy_from_slice(&c.value().to_le_bytes());
    let v = c.value();
    let tag = si.seal_in_place(c, &header, &mut body);
    sr.open_in_place(v, &header, &mut body, &tag).unwrap();
    assert!(body.iter().all(|&b| b == 7));
}

/// Two handshakes between the same nodes with different randomness give unrelated keys.
#[test]
fn fresh_randomness_fresh_keys() {
    let w = world();
    let t1 = run(&w, &w.a, &w.b, 10);
    let t2 = run(&w, &w.a, &w.b, 20);
    let (k1, _) = t1.responder.handle_finish(&t1.finish, &w.trust).unwrap();
    let (k2, _) = t2.responder.handle_finish(&t2.finish, &w.trust).unwrap();
    assert_ne!(k1.tx, k2.tx);
    assert_ne!(k1.rx, k2.rx);
}

/// The `Handshake` enum awaits one message per variant and names what it expected when another
/// kind comes; a message of the right kind completes it.
#[test]
fn enum_names_expected_message() {
    let w = world();
    let t = run(&w, &w.a, &w.b, 10);
    let hs_i = Handshake::AwaitReply(t.initiator);
    let hs_r = Handshake::AwaitFinish(t.responder);
    assert_eq!(hs_i.expected(), MsgKind::Reply);
    assert_eq!(hs_r.expected(), MsgKind::Finish);
    for (msg, got) in [(&t.hello, MsgKind::Hello), (&t.finish, MsgKind::Finish)] {
        assert_eq!(
            hs_i.handle(msg, &w.a, &w.trust).err(),
            Some(HandshakeError::Unexpected {
                expected: MsgKind::Reply,
                got
            })
        );
    }
    for (msg, got) in [(&t.hello, MsgKind::Hello), (&t.reply, MsgKind::Reply)] {
        assert_eq!(
            hs_r.handle(msg, &w.b, &w.trust).err(),
            Some(HandshakeError::Unexpected {
                expected: MsgKind::Finish,
                got
            })
        );
    }
    assert_eq!(
        Responder::handle_hello(&t.reply, &w.b, &w.trust, rand(1), rand(2)).err(),
        Some(HandshakeError::Unexpected {
            expected: MsgKind::Hello,
            got: MsgKind::Reply
        })
    );
    // After the refusals the states still complete.
    let done_i = hs_i.handle(&t.reply, &w.a, &w.trust).unwrap();
    assert!(done_i.send.is_some());
    let done_r = hs_r.handle(&t.finish, &w.b, &w.trust).unwrap();
    assert!(done_r.send.is_none());
    assert_eq!(done_i.keys.tx, done_r.keys.rx);
    assert_eq!(
        HandshakeError::Unexpected {
            expected: MsgKind::Reply,
            got: MsgKind::Hello
        }
        .refusal(),
        Some(Refusal::MalformedHandshake)
    );
}

/// Empty messages, unknown kinds, truncations and trailing bytes are malformed.
#[test]
fn malformed_refused() {
    let w = world();
    let t = run(&w, &w.a, &w.b, 10);
    let hello = |m: &[u8]| Responder::handle_hello(m, &w.b, &w.trust, rand(1), rand(2)).err();
    let reply = |m: &[u8]| t.initiator.handle_reply(m, &w.a, &w.trust).err();
    let finish = |m: &[u8]| t.responder.handle_finish(m, &w.trust).err();
    let bad = Some(HandshakeError::Malformed);
    for m in [&[][..], &[0], &[1, 2, 3], &[9; 40]] {
        assert_eq!(hello(m), bad);
        assert_eq!(reply(m), bad);
        assert_eq!(finish(m), bad);
    }
    for cut in [1, 2, 50, t.hello.len() - 1] {
        assert_eq!(hello(&t.hello[..cut]), bad, "hello cut at {cut}");
    }
    for cut in [1, 2, 50, t.reply.len() - 65, t.reply.len() - 1] {
        assert!(reply(&t.reply[..cut]).is_some(), "reply cut at {cut}");
    }
    assert_eq!(finish(&t.finish[..64]), bad);
    let mut longer = t.hello.clone();
    longer.push(0).unwrap();
    assert_eq!(hello(&longer), bad);
    let mut longer = t.finish.clone();
    longer.push(0).unwrap();
    assert_eq!(finish(&longer), bad);
}

/// Flipping any single bit of any of the three messages stops the handshake from completing: a
/// flipped Hello is refused or yields a Reply the initiator refuses, a flipped Reply or Finish is
/// refused outright.
#[test]
fn every_bit_flip_stops_the_handshake() {
    let w = world();
    let t = run(&w, &w.a, &w.b, 10);
    for i in 0..t.hello.len() * 8 {
        let mut bad = t.hello.clone();
        bad[i / 8] ^= 1 << (i % 8);
        if let Ok((_, reply)) = Responder::handle_hello(&bad, &w.b, &w.trust, rand(3), rand(4)) {
            // Only the ephemeral key and challenge can change undetected by the responder; the
            // initiator's transcript then differs from the one the responder signed.
            assert!(
                i / 8 >= t.hello.len() - 64,
                "bit {i} of the hello changed the cert"
            );
            assert_eq!(
                t.initiator.handle_reply(&reply, &w.a, &w.trust).err(),
                Some(HandshakeError::BadSignature),
                "hello bit {i}"
            );
        }
    }
    for i in 0..t.reply.len() * 8 {
        let mut bad = t.reply.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            t.initiator.handle_reply(&bad, &w.a, &w.trust).is_err(),
            "reply bit {i}"
        );
    }
    for i in 0..t.finish.len() * 8 {
        let mut bad = t.finish.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            t.responder.handle_finish(&bad, &w.trust).is_err(),
            "finish bit {i}"
        );
    }
    // The honest messages still complete after all the refusals: nothing changed state.
    t.initiator.handle_reply(&t.reply, &w.a, &w.trust).unwrap();
    t.responder.handle_finish(&t.finish, &w.trust).unwrap();
}

/// A recorded handshake replayed cannot complete: a replayed Hello is answered with a fresh
/// challenge the recorded Finish does not cover; a recorded Reply does not cover a new Hello; a
/// recorded Finish does not cover a new Reply.
#[test]
fn replayed_messages_cannot_complete() {
    let w = world();
    let old = run(&w, &w.a, &w.b, 10);

    let (replayed_hello, _) =
        Responder::handle_hello(&old.hello, &w.b, &w.trust, rand(40), rand(41)).unwrap();
    assert_eq!(
        replayed_hello.handle_finish(&old.finish, &w.trust).err(),
        Some(HandshakeError::BadSignature)
    );

    let (fresh_initiator, _) = Initiator::new(&w.a, &w.trust, rand(50), rand(51)).unwrap();
    assert_eq!(
        fresh_initiator
            .handle_reply(&old.reply, &w.a, &w.trust)
            .err(),
        Some(HandshakeError::BadSignature)
    );

    let fresh = run(&w, &w.a, &w.b, 60);
    assert_eq!(
        fresh.responder.handle_finish(&old.finish, &w.trust).err(),
        Some(HandshakeError::BadSignature)
    );
    assert_eq!(
        HandshakeError::BadSignature.refusal(),
        Some(Refusal::BadSignature)
    );
}

/// A certificate issued below the RevocationBlock is refused on either side, and a block that
/// rises between Hello and Finish stops the responder from completing.
#[test]
fn revoked_cert_refused() {
    let w = world();
    let old_a = test_credentials(&w.operator, 10, ZONE, BLOCK - 1);
    let revoked = Some(HandshakeError::Revoked {
        issued_at: BLOCK - 1,
        revocation_block: BLOCK,
    });
    // The initiator's own cert is revoked: refused locally before anything is sent.
    assert_eq!(
        Initiator::new(&old_a, &w.trust, rand(1), rand(2)).err(),
        Some(HandshakeError::OwnCert(CertError::Revoked {
            issued_at: BLOCK - 1,
            revocation_block: BLOCK
        }))
    );
    // A Hello made before the rotation is refused by the responder.
    let before = Trust {
        revocation_block: 0,
        ..w.trust
    };
    let (_, hello) = Initiator::new(&old_a, &before, rand(1), rand(2)).unwrap();
    let refused = Responder::handle_hello(&hello, &w.b, &w.trust, rand(3), rand(4)).err();
    assert_eq!(refused, revoked);
    assert_eq!(refused.unwrap().refusal(), Some(Refusal::RevokedKey));
    // A responder with a revoked cert (answering under the old trust) is refused by the initiator.
    let old_b = test_credentials(&w.operator, 11, ZONE, BLOCK - 1);
    let (i, hello) = Initiator::new(&w.a, &w.trust, rand(1), rand(2)).unwrap();
    let (_, reply) = Responder::handle_hello(&hello, &old_b, &before, rand(3), rand(4)).unwrap();
    assert_eq!(
        i.handle_reply(&reply, &w.a, &w.trust).err(),
        Some(HandshakeError::Revoked {
            issued_at: BLOCK - 1,
            revocation_block: BLOCK
        })
    );
    // Rotation mid-handshake.
    let t = run(&w, &w.a, &w.b, 10);
    let raised = Trust {
        revocation_block: BLOCK + 1,
        ..w.trust
    };
    assert_eq!(
        t.responder.handle_finish(&t.finish, &raised).err(),
        Some(HandshakeError::Revoked {
            issued_at: BLOCK,
            revocation_block: BLOCK + 1
        })
    );
}

/// A peer certified for another zone is refused on either side; so is running a handshake in a
/// zone this node is not certified for.
#[test]
fn wrong_zone_refused() {
    let w = world();
    let other = test_credentials(&w.operator, 12, ZONE + 1, BLOCK);
    let other_trust = Trust {
        zone: ZONE + 1,
        ..w.trust
    };
    let wrong = Some(HandshakeError::WrongZone {
        expected: ZONE,
        got: ZONE + 1,
    });
    let (_, hello) = Initiator::new(&other, &other_trust, rand(1), rand(2)).unwrap();
    let refused = Responder::handle_hello(&hello, &w.b, &w.trust, rand(3), rand(4)).err();
    assert_eq!(refused, wrong);
    assert_eq!(refused.unwrap().refusal(), Some(Refusal::WrongZone));
    // A zone-4 node answering a zone-3 Hello (an honest one would refuse it first).
    let (i, hello) = Initiator::new(&w.a, &w.trust, rand(1), rand(2)).unwrap();
    let reply = reply_unchecked(&hello, &other);
    assert_eq!(i.handle_reply(&reply, &w.a, &w.trust).err(), wrong);
    assert_eq!(
        Initiator::new(&w.a, &other_trust, rand(1), rand(2)).err(),
        Some(HandshakeError::OwnZone {
            certified: ZONE,
            expected: ZONE + 1
        })
    );
}

/// Certificates from a foreign operator or self-signed are refused as an unknown key; one that
/// claims the cluster operator but is signed by another key is refused as a bad signature.
#[test]
fn foreign_and_self_signed_certs_refused() {
    let w = world();
    let foreign = test_key(99);
    let attacker = test_key(50);
    let mut out = [0u8; CERT_BYTES_MAX];
    let mut as_creds = |issuer: &SigningKey, claim: u32| {
        let body = CertBody {
            issuer: claim,
            node_pk: attacker.public_key().0,
            zone: ZONE,
            arch: Arch::X86_64,
            gpu: false,
            issued_at: BLOCK,
            bridge: None,
        };
        let n = encode_cert(&body, &sign_cert(issuer, &body), &mut out);
        assert!(Credentials::new(attacker.clone(), &out[..n], &w.operator.public_key()).is_err());
        // What an attacker would hold: its key and a certificate the cluster does not accept.
        Credentials {
            key: attacker.clone(),
            cert: Vec::from_slice(&out[..n]).unwrap(),
            body,
            operator: w.operator.public_key(),
            check: signature_holds,
        }
    };
    let cases = [
        (
            as_creds(&foreign, foreign.public_key().key_id()),
            HandshakeError::UnknownKey,
        ),
        (
            as_creds(&attacker, attacker.public_key().key_id()),
            HandshakeError::UnknownKey,
        ),
        (
            as_creds(&attacker, w.operator.public_key().key_id()),
            HandshakeError::BadCertSignature,
        ),
    ];
    for (evil, why) in &cases {
        let hello = hello_unchecked(evil);
        assert_eq!(
            Responder::handle_hello(&hello, &w.b, &w.trust, rand(3), rand(4)).err(),
            Some(*why)
        );
        // And as a responder, answering an honest Hello.
        let (honest, hello) = Initiator::new(&w.a, &w.trust, rand(5), rand(6)).unwrap();
        let reply = reply_unchecked(&hello, evil);
        assert_eq!(
            honest.handle_reply(&reply, &w.a, &w.trust).err(),
            Some(*why)
        );
    }
    assert_eq!(
        HandshakeError::UnknownKey.refusal(),
        Some(Refusal::UnknownKey)
    );
    // Honest credentials under another cluster's trust refuse to start: a local error, not a
    // refusal of any peer.
    let elsewhere = Trust {
        operator: foreign.public_key(),
        ..w.trust
    };
    let own = Initiator::new(&w.a, &elsewhere, rand(1), rand(2)).err();
    assert_eq!(own, Some(HandshakeError::OwnCert(CertError::UnknownKey)));
    assert_eq!(own.unwrap().refusal(), None);
}

/// A Hello from `me` built without checking `me`'s own certificate, as an attacker would.
fn hello_unchecked(me: &Credentials) -> HandshakeMsg {
    let mut hello = HandshakeMsg::new();
    push(&mut hello, &[MsgKind::Hello as u8]);
    push_postcard(
        &mut hello,
        &HelloBody {
            cert: &me.cert,
            eph: EphemeralPublic::from(&StaticSecret::from(rand(1))).to_bytes(),
            challenge: rand(2),
        },
    );
    hello
}

/// A correctly signed Reply from `me` to `hello`, built without checking either certificate.
fn reply_unchecked(hello: &[u8], me: &Credentials) -> HandshakeMsg {
    let eph = StaticSecret::from(rand(3));
    let mut reply = HandshakeMsg::new();
    push(&mut reply, &[MsgKind::Reply as u8]);
    push_postcard(
        &mut reply,
        &ReplyBody {
            cert: &me.cert,
            eph: EphemeralPublic::from(&eph).to_bytes(),
            challenge: rand(4),
        },
    );
    let t = sha512(&[DOMAIN_HS_REPLY, hello, &reply]);
    push(&mut reply, &me.key.sign(&t));
    reply
}

/// Someone holding a node's (public) certificate but not its key cannot complete a handshake in
/// either role; and a certificate cannot be paired with another key.
#[test]
fn stolen_cert_without_key_refused() {
    let w = world();
    let thief = test_key(66);
    assert_eq!(
        Credentials::new(thief.clone(), &w.b.cert, &w.operator.public_key()).err(),
        Some(CertError::KeyMismatch)
    );
    let impostor = Credentials {
        key: thief,
        ..w.b.clone()
    };
    // As responder: its Reply signature is not by the certified key.
    let (i, hello) = Initiator::new(&w.a, &w.trust, rand(1), rand(2)).unwrap();
    let (_, reply) =
        Responder::handle_hello(&hello, &impostor, &w.trust, rand(3), rand(4)).unwrap();
    assert_eq!(
        i.handle_reply(&reply, &w.a, &w.trust).err(),
        Some(HandshakeError::BadSignature)
    );
    // As initiator: its Finish signature is not by the certified key.
    let (i, hello) = Initiator::new(&impostor, &w.trust, rand(1), rand(2)).unwrap();
    let (r, reply) = Responder::handle_hello(&hello, &w.a, &w.trust, rand(3), rand(4)).unwrap();
    let (_, finish, _) = i.handle_reply(&reply, &impostor, &w.trust).unwrap();
    assert_eq!(
        r.handle_finish(&finish, &w.trust).err(),
        Some(HandshakeError::BadSignature)
    );
}

/// A node's own Hello reflected back to it is refused, so it never holds a session with itself.
#[test]
fn reflection_refused() {
    let w = world();
    let (i, hello) = Initiator::new(&w.a, &w.trust, rand(1), rand(2)).unwrap();
    assert_eq!(
        Responder::handle_hello(&hello, &w.a, &w.trust, rand(3), rand(4)).err(),
        Some(HandshakeError::Reflected)
    );
    let reply = reply_unchecked(&hello, &w.a);
    assert_eq!(
        i.handle_reply(&reply, &w.a, &w.trust).err(),
        Some(HandshakeError::Reflected)
    );
}

/// An ephemeral key of low order (here the all-zero point) is refused: the shared secret would be
/// zero and known to everyone.
#[test]
fn low_order_ephemeral_refused() {
    let w = world();
    let mut hello = HandshakeMsg::new();
    push(&mut hello, &[MsgKind::Hello as u8]);
    push_postcard(
        &mut hello,
        &HelloBody {
            cert: &w.a.cert,
            eph: [0; 32],
            challenge: rand(2),
        },
    );
    let refused = Responder::handle_hello(&hello, &w.b, &w.trust, rand(3), rand(4)).err();
    assert_eq!(refused, Some(HandshakeError::WeakKey));
    assert_eq!(
        refused.unwrap().refusal(),
        Some(Refusal::MalformedHandshake)
    );
}

/// The largest Hello and Reply (a certificate of `CERT_BYTES_MAX`) and the Finish fit
/// `HANDSHAKE_BYTES_MAX`, which config proves fits one frame body; the Reply meets it exactly.
#[test]
fn maximal_messages_fit_one_frame() {
    let cert = [0xffu8; CERT_BYTES_MAX];
    let mut hello = HandshakeMsg::new();
    push(&mut hello, &[MsgKind::Hello as u8]);
    push_postcard(
        &mut hello,
        &HelloBody {
            cert: &cert,
            eph: [0xff; 32],
            challenge: [0xff; 32],
        },
    );
    assert_eq!(hello.len(), HANDSHAKE_BYTES_MAX - SIGNATURE_BYTES);
    let mut reply = HandshakeMsg::new();
    push(&mut reply, &[MsgKind::Reply as u8]);
    push_postcard(
        &mut reply,
        &ReplyBody {
            cert: &cert,
            eph: [0xff; 32],
            challenge: [0xff; 32],
        },
    );
    push(&mut reply, &[0xff; SIGNATURE_BYTES]);
    assert_eq!(reply.len(), HANDSHAKE_BYTES_MAX);
}

/// The handshake and a sealed frame match known answers computed by an independent peer written
/// from `docs/protocol.md` with Python's `cryptography` package (the script is in the document's
/// appendix): certificate bytes, message digests, the Finish, both session keys, a whole frame.
#[test]
fn matches_independent_implementation() {
    use crate::config::FRAME_BYTES;
    use crate::crypto::kdf::hex;
    use crate::schema::frame::{body_mut, write_frame, Header, Kind};

    let w = world();
    let t = run(&w, &w.a, &w.b, 1);
    assert_eq!(
        w.a.cert[..],
        hex::<105>(
            "b788cad30843a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c030100\
             055619fb4b9f40f1d9e14627fc8f2a2dcf780f0441b098019c4cb7ee62e82ddc4ae251a6212cd57d\
             09770a04745e16d06ffead392cb4f7a579c61ddafeb4efeb03"
        )
    );
    assert_eq!((t.hello.len(), t.reply.len()), (171, 235));
    assert_eq!(
        sha512(&[&t.hello])[..16],
        hex::<16>("750d7be8ed4e5bc0ba8a61390157b01a")
    );
    assert_eq!(
        sha512(&[&t.reply])[..16],
        hex::<16>("31dfc240a520cef2feed9d0ede27acd3")
    );
    assert_eq!(
        t.finish[..],
        hex::<65>(
            "04af9d007fdb36365b0816cb0539c088794a58f5bd25224c7b638b2da5864606237389077eebeb93\
             da64b57e881e90a5eb596ce3bac6182564c57863c6ba110202"
        )
    );
    let (keys, _, _) = t.initiator.handle_reply(&t.reply, &w.a, &w.trust).unwrap();
    let i2r = hex("9939b1c0f8cbce86aff29f2b48579bed85871bba76fc01ba1eaee86cbb2e29d7");
    let r2i = hex("d3d575de01cd028dc5ca4957569f4d28b64282bf6c084f71f6d7ffaf60ef382f");
    assert_eq!((keys.tx, keys.rx), (i2r, r2i));

    let mut session = Session::new(&keys);
    let counter = loop {
        let c = session.next_counter().unwrap();
        if c.value() == 7 {
            break c;
        }
    };
    let mut frame = [0u8; FRAME_BYTES];
    body_mut(&mut frame)[..6].copy_from_slice(b"gossip");
    let header = Header {
        kind: Kind::Data,
        zone: ZONE,
        revocation_block: BLOCK,
        sender: w.a.node_id(),
        counter: counter.value(),
    };
    write_frame(&mut frame, &header, 6);
    let (head, rest) = frame.split_at_mut(32);
    let (body, tag) = rest.split_at_mut(crate::config::BODY_BYTES_MAX);
    let sealed = session.seal_in_place(
        counter,
        (&*head).try_into().unwrap(),
        body.try_into().unwrap(),
    );
    tag.copy_from_slice(&sealed);
    assert_eq!(sealed, hex::<16>("5a78dbd6aaf6effdafad70b4fad2e838"));
    assert_eq!(
        sha512(&[&frame])[..16],
        hex::<16>("0b6db352c8662cf195f88bbe8cebb1e4")
    );
}

/// Credentials of `test_key(seed)` for `zone` with a bridge scope.
fn bridge_credentials(
    operator: &SigningKey,
    seed: u8,
    zone: u8,
    scope: BridgeScope,
) -> Credentials {
    let key = test_key(seed);
    let cert = certify_bridge(
        operator,
        &key.public_key(),
        zone,
        Arch::X86_64,
        scope,
        BLOCK,
    );
    Credentials::new(key, &cert, &operator.public_key()).unwrap()
}

/// Two bridges of zones 3 and 4 complete a handshake, each under the trust of its own zone; a
/// plain node of zone 4 asking the bridge of zone 3 is refused as `NotBridge`, and a bridge of
/// zone 4 asking a plain node of zone 3 as `WrongZone`, as before bridges.
#[test]
fn bridges_of_two_zones_handshake_and_plain_nodes_do_not() {
    let w = world();
    let here = |zone| Trust { zone, ..w.trust };
    let a = bridge_credentials(&w.operator, 20, ZONE, BridgeScope::All);
    let b = bridge_credentials(&w.operator, 21, ZONE + 1, BridgeScope::Zones(1 << ZONE));
    let (i, hello) = Initiator::new(&b, &here(ZONE + 1), rand(1), rand(2)).unwrap();
    let (r, reply) = Responder::handle_hello(&hello, &a, &here(ZONE), rand(3), rand(4)).unwrap();
    let (_, finish, peer_a) = i.handle_reply(&reply, &b, &here(ZONE + 1)).unwrap();
    let (_, peer_b) = r.handle_finish(&finish, &here(ZONE)).unwrap();
    assert_eq!((peer_a.cert.zone, peer_b.cert.zone), (ZONE, ZONE + 1));

    let plain = test_credentials(&w.operator, 22, ZONE + 1, BLOCK);
    let (_, hello) = Initiator::new(&plain, &here(ZONE + 1), rand(5), rand(6)).unwrap();
    let refused = Responder::handle_hello(&hello, &a, &here(ZONE), rand(7), rand(8)).err();
    assert_eq!(refused, Some(HandshakeError::NotBridge { zone: ZONE + 1 }));
    assert_eq!(refused.unwrap().refusal(), Some(Refusal::NotBridge));

    let (_, hello) = Initiator::new(&b, &here(ZONE + 1), rand(9), rand(10)).unwrap();
    let refused = Responder::handle_hello(&hello, &w.a, &here(ZONE), rand(11), rand(12)).err();
    assert!(matches!(refused, Some(HandshakeError::WrongZone { .. })));
}
