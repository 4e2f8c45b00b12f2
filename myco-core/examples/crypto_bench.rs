//! Prints what the core's cryptography costs on one core: full handshakes per second (both sides,
//! three messages, four signatures and verifications each way counted once) and sealed frames per
//! second (seal plus open of one 1024-byte frame). A benchmark, not a test: nothing here fails.
//!
//! Run: `cargo run --release -p myco-core --example crypto_bench`

use myco_core::config::{BODY_BYTES_MAX, HEADER_BYTES};
use myco_core::crypto::cert::{certify, Cert};
use myco_core::crypto::{Credentials, Initiator, Responder, Session, SigningKey, Trust};
use myco_core::schema::entry::Arch;
use std::hint::black_box;
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(2);

/// Distinct non-zero 32-byte values standing in for the OS random source.
fn fill(n: u64, salt: u8) -> [u8; 32] {
    let mut r = [salt | 1; 32];
    r[..8].copy_from_slice(&n.to_le_bytes());
    r
}

fn node(operator: &SigningKey, seed: u8) -> Credentials {
    let key = SigningKey::from_seed([seed; 32]).unwrap();
    let cert = certify(operator, &key.public_key(), 0, Arch::X86_64, false, 1);
    Credentials::new(key, &cert, &operator.public_key()).unwrap()
}

/// Runs `f` repeatedly for `RUN` and returns calls per second.
fn rate(mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..16 {
            f(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let operator = SigningKey::from_seed([1; 32]).unwrap();
    let a = node(&operator, 2);
    let b = node(&operator, 3);
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: 1,
        zone: 0,
    };
    let rates = Rates {
        handshake: handshake_rates(&operator, &a, &b, &trust),
        frame: frame_rates(&a, &b, &trust),
    };
    print(&rates);
}

/// Calls per second of each measured operation.
struct Rates {
    /// Full handshakes, a responder's answer to one Hello, certificate verifications.
    handshake: (f64, f64, f64),
    /// Frames sealed and opened, forged frames refused.
    frame: (f64, f64),
}

/// Full handshakes, the responder's cost of one Hello, and certificate verifications.
fn handshake_rates(
    operator: &SigningKey,
    a: &Credentials,
    b: &Credentials,
    trust: &Trust,
) -> (f64, f64, f64) {
    let handshakes = rate(|n| {
        let (i, hello) = Initiator::new(a, trust, fill(n, 1), fill(n, 2)).unwrap();
        let (r, reply) = Responder::handle_hello(&hello, b, trust, fill(n, 3), fill(n, 4))
            .expect("honest hello");
        let (ki, finish, _) = i.handle_reply(&reply, a, trust).unwrap();
        let (kr, _) = r.handle_finish(&finish, trust).unwrap();
        assert_eq!(ki.tx, kr.rx);
        black_box((ki, kr));
    });

    let (_, hello) = Initiator::new(a, trust, fill(0, 1), fill(0, 2)).unwrap();
    let hellos = rate(|n| {
        black_box(Responder::handle_hello(&hello, b, trust, fill(n, 3), fill(n, 4)).unwrap());
    });

    let cert = a.cert_bytes();
    let verifies = rate(|_| {
        let c = Cert::decode(black_box(cert)).unwrap();
        black_box(c.verify(&operator.public_key(), 1)).unwrap();
    });

    (handshakes, hellos, verifies)
}

/// Frames sealed and opened over one session, and forged frames refused.
fn frame_rates(a: &Credentials, b: &Credentials, trust: &Trust) -> (f64, f64) {
    let (i, hello) = Initiator::new(a, trust, fill(0, 1), fill(0, 2)).unwrap();
    let (r, reply) = Responder::handle_hello(&hello, b, trust, fill(0, 3), fill(0, 4)).unwrap();
    let (ki, finish, _) = i.handle_reply(&reply, a, trust).unwrap();
    let (kr, _) = r.handle_finish(&finish, trust).unwrap();
    let (mut tx, mut rx) = (Session::new(&ki), Session::new(&kr));
    let mut header = [0x11u8; HEADER_BYTES];
    let mut body = [0x22u8; BODY_BYTES_MAX];
    let frames = rate(|_| {
        let c = tx.next_counter().unwrap();
        let counter = c.value();
        header[24..].copy_from_slice(&counter.to_le_bytes());
        let tag = tx.seal_in_place(c, &header, &mut body);
        rx.open_in_place(counter, &header, &mut body, &tag).unwrap();
    });
    assert!(body.iter().all(|&x| x == 0x22));
    let forged_tag = [0u8; 16];
    let forged = rate(|n| {
        let refused = rx.open_in_place(u64::MAX - 1 - n, &header, &mut body, &forged_tag);
        assert!(refused.is_err());
    });

    (frames, forged)
}

fn print(rates: &Rates) {
    let (handshakes, hellos, verifies) = rates.handshake;
    let (frames, forged) = rates.frame;
    // What the node's tables pay per peer.
    println!(
        "bytes: Initiator {}, Responder {}, Session {}, Credentials {}",
        std::mem::size_of::<Initiator>(),
        std::mem::size_of::<Responder>(),
        std::mem::size_of::<Session>(),
        std::mem::size_of::<Credentials>()
    );
    println!("handshakes per second (both sides, one core): {handshakes:.0}");
    println!("  = {:.0} us per handshake", 1e6 / handshakes);
    println!(
        "responder cost of one Hello: {:.0} us ({hellos:.0} per second)",
        1e6 / hellos
    );
    println!("certificate verifications per second: {verifies:.0}");
    println!("  = {:.1} us per Ed25519 verification", 1e6 / verifies);
    println!("sealed frames per second (seal + open, 1024 bytes): {frames:.0}");
    println!(
        "  = {:.2} us per frame, {:.0} MB/s of frames",
        1e6 / frames,
        frames * 1024.0 / 1e6
    );
    println!(
        "forged frames refused per second: {forged:.0} ({:.2} us each)",
        1e6 / forged
    );
}
