//! A sealed session: ChaCha20-Poly1305 per direction, a counter nonce and a sliding replay window.
//!
//! Sealing a frame: take a counter with `next_counter`, write it into the header, then
//! `seal_in_place` the whole 976-byte body region (padding included) with the 32-byte header as
//! associated data; the 16-byte tag goes at the end of the frame. The nonce is 4 zero bytes
//! followed by the counter, little-endian. Each direction has its own key, so a (key, nonce) pair is
//! never used twice as long as a counter is never sealed twice, which `SealCounter` enforces: it is
//! handed out once, cannot be copied, and sealing consumes it. Counters never wrap; the last one is
//! `u64::MAX - 1`, after which the session must be replaced by a new handshake.
//!
//! Opening a frame: counters are checked against a 64-frame window behind the highest counter
//! accepted so far (the RFC 6479 idea with one 64-bit word, as in IPsec and WireGuard). A counter
//! is accepted at most once; one older than the window is refused. The window is updated only after
//! the tag verifies, so a forged frame can never move it or burn a counter.

use crate::config::{BODY_BYTES_MAX, HEADER_BYTES, REPLAY_WINDOW_FRAMES, TAG_BYTES};
use crate::crypto::handshake::SessionKeys;
use crate::crypto::Refusal;
use chacha20poly1305::aead::array::Array;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce};

// The window is one bit per counter in a u64.
const _: () = assert!(REPLAY_WINDOW_FRAMES == u64::BITS as u64);

/// Why sealing or opening failed. No error changes the session: the counter was not consumed by a
/// refused open, and the window did not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// The tag does not verify: the frame was tampered with or sealed under another key.
    BadMac,
    /// This counter was already accepted.
    Replay { counter: u64 },
    /// This counter is older than the replay window.
    TooOld { counter: u64, highest: u64 },
    /// Every counter of this session was used; start a new handshake.
    CounterExhausted,
}

impl SessionError {
    /// The metric a refused incoming frame counts under; `CounterExhausted` is local, not a
    /// refusal.
    pub fn refusal(self) -> Option<Refusal> {
        match self {
            SessionError::BadMac => Some(Refusal::BadMac),
            SessionError::Replay { .. } | SessionError::TooOld { .. } => Some(Refusal::Replay),
            SessionError::CounterExhausted => None,
        }
    }
}

/// A counter this session handed out for exactly one `seal_in_place`. Not `Copy` or `Clone`, so it
/// cannot be sealed twice.
#[derive(Debug, PartialEq, Eq)]
pub struct SealCounter(u64);

impl SealCounter {
    /// The value to write into the frame header's counter field.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// The receive-side replay window: `highest` is the largest counter accepted, and bit `i` of
/// `seen` says whether `highest - i` was accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    fn check(&self, counter: u64) -> Result<(), SessionError> {
        if self.seen == 0 || counter > self.highest {
            return Ok(());
        }
        let age = self.highest - counter;
        if age >= REPLAY_WINDOW_FRAMES {
            return Err(SessionError::TooOld {
                counter,
                highest: self.highest,
            });
        }
        if self.seen & (1 << age) != 0 {
            return Err(SessionError::Replay { counter });
        }
        Ok(())
    }

    /// Records `counter` as accepted. Only called after `check` passed and the tag verified.
    fn accept(&mut self, counter: u64) {
        assert!(self.check(counter).is_ok());
        if self.seen == 0 {
            self.highest = counter;
            self.seen = 1;
        } else if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= REPLAY_WINDOW_FRAMES {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = counter;
        } else {
            self.seen |= 1 << (self.highest - counter);
        }
        assert!(self.check(counter).is_err());
    }
}

/// An established session with one peer. Keys are wiped when it is dropped.
pub struct Session {
    tx: ChaCha20Poly1305,
    rx: ChaCha20Poly1305,
    /// The next counter to hand out for sealing.
    tx_next: u64,
    window: ReplayWindow,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Array(n)
}

impl Session {
    /// A session from the keys a completed handshake gave this side.
    pub fn new(keys: &SessionKeys) -> Session {
        Session {
            tx: ChaCha20Poly1305::new(&Array(keys.tx)),
            rx: ChaCha20Poly1305::new(&Array(keys.rx)),
            tx_next: 0,
            window: ReplayWindow::default(),
        }
    }

    /// The counter for the next frame this side seals. Counters start at 0 and never wrap.
    pub fn next_counter(&mut self) -> Result<SealCounter, SessionError> {
        if self.tx_next == u64::MAX {
            return Err(SessionError::CounterExhausted);
        }
        let c = self.tx_next;
        self.tx_next += 1;
        Ok(SealCounter(c))
    }

    /// Counters handed out so far: how much of the session is used.
    pub fn sealed(&self) -> u64 {
        self.tx_next
    }

    /// Encrypts the whole body region in place and returns the tag. `header` must already hold
    /// `counter.value()`; it is authenticated, not encrypted.
    pub fn seal_in_place(
        &self,
        counter: SealCounter,
        header: &[u8; HEADER_BYTES],
        body: &mut [u8; BODY_BYTES_MAX],
    ) -> [u8; TAG_BYTES] {
        assert!(counter.0 < self.tx_next, "counter from this session");
        let tag = self
            .tx
            .encrypt_inout_detached(&nonce(counter.0), header, body.as_mut_slice().into())
            .expect("a frame body is far below ChaCha20's length limit");
        tag.0
    }

    /// Authenticates and decrypts a body in place. On success the counter is recorded so it is
    /// never accepted again. On error nothing changed, and `body` must not be used.
    pub fn open_in_place(
        &mut self,
        counter: u64,
        header: &[u8; HEADER_BYTES],
        body: &mut [u8; BODY_BYTES_MAX],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), SessionError> {
        // Cheap refusals first: a replayed frame costs no decryption.
        self.window.check(counter)?;
        let before = self.window;
        self.rx
            .decrypt_inout_detached(
                &nonce(counter),
                header,
                body.as_mut_slice().into(),
                &Array(*tag),
            )
            .map_err(|_| SessionError::BadMac)?;
        assert_eq!(self.window, before);
        self.window.accept(counter);
        Ok(())
    }

    /// The highest counter accepted from the peer, if any.
    pub fn highest_received(&self) -> Option<u64> {
        (self.window.seen != 0).then_some(self.window.highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let a = SessionKeys {
            tx: [1; 32],
            rx: [2; 32],
        };
        let b = SessionKeys {
            tx: [2; 32],
            rx: [1; 32],
        };
        (Session::new(&a), Session::new(&b))
    }

    /// A sealed frame: header with the counter in its last 8 bytes, a recognisable body, the tag.
    fn seal(
        s: &mut Session,
        text: &[u8],
    ) -> (u64, [u8; HEADER_BYTES], [u8; BODY_BYTES_MAX], [u8; 16]) {
        let c = s.next_counter().unwrap();
        let mut header = [0x5a; HEADER_BYTES];
        header[24..].copy_from_slice(&c.value().to_le_bytes());
        let mut body = [0u8; BODY_BYTES_MAX];
        body[..text.len()].copy_from_slice(text);
        let v = c.value();
        let tag = s.seal_in_place(c, &header, &mut body);
        (v, header, body, tag)
    }

    /// What one side seals the other opens to the same bytes, padding included, in both
    /// directions; the ciphertext differs from the plaintext.
    #[test]
    fn round_trip_both_directions() {
        let (mut a, mut b) = pair();
        let (c, h, mut body, tag) = seal(&mut a, b"gossip");
        assert_ne!(&body[..6], b"gossip");
        b.open_in_place(c, &h, &mut body, &tag).unwrap();
        assert_eq!(&body[..6], b"gossip");
        assert!(body[6..].iter().all(|&x| x == 0));
        let (c, h, mut body, tag) = seal(&mut b, b"reply");
        a.open_in_place(c, &h, &mut body, &tag).unwrap();
        assert_eq!(&body[..5], b"reply");
        // A side cannot open its own frames: the directions have different keys.
        let (c, h, mut body, tag) = seal(&mut a, b"self");
        assert_eq!(
            a.open_in_place(c, &h, &mut body, &tag),
            Err(SessionError::BadMac)
        );
    }

    /// A flipped bit anywhere in the header, the body or the tag, or a wrong counter, is refused
    /// as a bad MAC, and the refused frame leaves the window untouched so the genuine frame still
    /// opens.
    #[test]
    fn every_bit_flip_refused() {
        let (mut a, mut b) = pair();
        let (c, h, body, tag) = seal(&mut a, b"x");
        let check = |b: &mut Session, c: u64, h: [u8; 32], mut body: [u8; BODY_BYTES_MAX], t| {
            assert_eq!(
                b.open_in_place(c, &h, &mut body, &t),
                Err(SessionError::BadMac)
            );
            assert_eq!(b.highest_received(), None);
        };
        for i in 0..HEADER_BYTES * 8 {
            let mut bad = h;
            bad[i / 8] ^= 1 << (i % 8);
            check(&mut b, c, bad, body, tag);
        }
        // Every bit of the body is too slow for a unit test in debug builds; a stride covers
        // every byte position class and the padding.
        for i in (0..BODY_BYTES_MAX * 8).step_by(13) {
            let mut bad = body;
            bad[i / 8] ^= 1 << (i % 8);
            check(&mut b, c, h, bad, tag);
        }
        for i in 0..TAG_BYTES * 8 {
            let mut bad = tag;
            bad[i / 8] ^= 1 << (i % 8);
            check(&mut b, c, h, body, bad);
        }
        check(&mut b, c + 1, h, body, tag);
        let mut body = body;
        b.open_in_place(c, &h, &mut body, &tag).unwrap();
    }

    /// A frame opens once; the same frame again is a replay and changes nothing.
    #[test]
    fn replay_refused() {
        let (mut a, mut b) = pair();
        let (c, h, body, tag) = seal(&mut a, b"once");
        let mut first = body;
        b.open_in_place(c, &h, &mut first, &tag).unwrap();
        let mut again = body;
        assert_eq!(
            b.open_in_place(c, &h, &mut again, &tag),
            Err(SessionError::Replay { counter: c })
        );
        assert_eq!(again, body, "a refused replay is not even decrypted");
        assert_eq!(
            SessionError::Replay { counter: c }.refusal(),
            Some(Refusal::Replay)
        );
    }

    /// Frames arriving out of order within the window are each accepted exactly once; a frame
    /// that falls behind the window is refused as too old.
    #[test]
    fn reordering_within_window_and_too_old() {
        let (mut a, mut b) = pair();
        let frames: heapless::Vec<_, 80> = (0..80).map(|_| seal(&mut a, b"f")).collect();
        // Deliver 70 first, then 10..70 backwards, then all of them again.
        let open = |b: &mut Session, i: usize| {
            let (c, h, mut body, tag) = frames[i];
            b.open_in_place(c, &h, &mut body, &tag)
        };
        open(&mut b, 70).unwrap();
        for i in (7..70).rev() {
            open(&mut b, i).unwrap();
        }
        assert_eq!(
            open(&mut b, 6),
            Err(SessionError::TooOld {
                counter: 6,
                highest: 70
            })
        );
        for i in 7..=70 {
            assert_eq!(
                open(&mut b, i),
                Err(SessionError::Replay { counter: i as u64 })
            );
        }
        // Jumping far ahead clears the window; what is behind it is then too old.
        open(&mut b, 79).unwrap();
        open(&mut b, 71).unwrap();
        assert_eq!(
            open(&mut b, 15).unwrap_err().refusal(),
            Some(Refusal::Replay)
        );
    }

    /// A forged frame with a counter far ahead does not advance the window: older genuine frames
    /// still open afterwards.
    #[test]
    fn forged_frame_does_not_move_window() {
        let (mut a, mut b) = pair();
        let frames: heapless::Vec<_, 4> = (0..4).map(|_| seal(&mut a, b"f")).collect();
        let (c, h, mut body, tag) = frames[0];
        b.open_in_place(c, &h, &mut body, &tag).unwrap();
        let (_, h3, body3, tag3) = frames[3];
        let mut forged = body3;
        assert_eq!(
            b.open_in_place(1_000_000, &h3, &mut forged, &tag3),
            Err(SessionError::BadMac)
        );
        assert_eq!(b.highest_received(), Some(0));
        for &(c, h, body, tag) in &frames[1..] {
            let mut body = body;
            b.open_in_place(c, &h, &mut body, &tag).unwrap();
        }
        assert_eq!(b.highest_received(), Some(3));
    }

    /// The last counter is `u64::MAX - 1`; after it sealing is refused rather than wrapping to a
    /// nonce already used.
    #[test]
    fn counter_exhaustion_is_an_error() {
        let (mut a, _) = pair();
        a.tx_next = u64::MAX - 1;
        assert_eq!(a.next_counter().unwrap().value(), u64::MAX - 1);
        assert_eq!(a.next_counter(), Err(SessionError::CounterExhausted));
        assert_eq!(a.next_counter(), Err(SessionError::CounterExhausted));
        assert_eq!(a.sealed(), u64::MAX);
        assert_eq!(SessionError::CounterExhausted.refusal(), None);
    }

    /// The nonce is 4 zero bytes then the counter little-endian. (A whole sealed frame is checked
    /// against an independent implementation in `handshake::tests`.)
    #[test]
    fn nonce_layout() {
        assert_eq!(
            nonce(0x0102_0304_0506_0708).0,
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }
}
