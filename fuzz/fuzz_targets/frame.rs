//! Fuzzes `Frame::new_checked` on arbitrary bytes.
//!
//! Proves that no byte string panics the header parser, that an accepted frame's accessors stay in
//! range, and that an accepted cleartext (handshake) frame has exactly one encoding: rewriting it
//! from its own header fields and body reproduces every byte. A sealed (`Data`) frame's padding
//! and tag are ciphertext, checked only when it is opened, so there only the header must agree.
//! A relayed frame (its destination where the RevocationBlock was) is rewritten the same way.
//! Each input is parsed as it is (wrong lengths) and again zero-padded or cut to one frame,
//! because the fuzzer rarely grows an input to exactly 1024 bytes on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::{BODY_BYTES_MAX, FRAME_BYTES, HEADER_BYTES, TAG_BYTES};
use myco_core::schema::frame::{body_mut, mark_relayed, write_frame, Frame, Header, Kind};

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut padded = [0u8; FRAME_BYTES];
    let n = data.len().min(FRAME_BYTES);
    padded[..n].copy_from_slice(&data[..n]);
    check(&padded);
});

fn check(data: &[u8]) {
    let Ok(frame) = Frame::new_checked(data) else {
        return;
    };
    assert_eq!(data.len(), FRAME_BYTES);
    let header = Header {
        kind: frame.kind(),
        zone: frame.zone(),
        revocation_block: frame.revocation_block().unwrap_or(0),
        sender: frame.sender(),
        counter: frame.counter(),
    };
    let body = frame.body();
    assert!(body.len() <= BODY_BYTES_MAX);
    assert_eq!(frame.header(), &data[..HEADER_BYTES]);
    assert_eq!(frame.tag(), &data[FRAME_BYTES - TAG_BYTES..]);

    assert_eq!(frame.sealed_body().len(), BODY_BYTES_MAX);

    let mut again = [0u8; FRAME_BYTES];
    body_mut(&mut again)[..body.len()].copy_from_slice(body);
    write_frame(&mut again, &header, body.len());
    if let Some(dest) = frame.relay_to() {
        assert_eq!(frame.revocation_block(), None);
        mark_relayed(&mut again, dest);
    }
    if frame.kind() == Kind::Data {
        // A sealed body is ciphertext: padding and tag are checked when the frame is opened.
        assert_eq!(again[..HEADER_BYTES], data[..HEADER_BYTES]);
    } else {
        assert_eq!(
            again[..],
            data[..],
            "a cleartext frame has exactly one encoding"
        );
    }
    assert!(Frame::new_checked(&again).is_ok());
}
