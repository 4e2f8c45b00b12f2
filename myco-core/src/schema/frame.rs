//! The 1024-byte frame: a zero-copy view with named field ranges over the cleartext header.
//!
//! Layout (all integers little-endian):
//!
//! | bytes     | field              |
//! |-----------|--------------------|
//! | 0..2      | magic `"MY"`       |
//! | 2         | protocol version   |
//! | 3         | kind               |
//! | 4         | zone id            |
//! | 5         | flags: 0, or `FLAG_RELAYED` |
//! | 6..8      | body length u16    |
//! | 8..16     | revocation block; relayed: the destination node id |
//! | 16..24    | sender node id     |
//! | 24..32    | counter (nonce)    |
//! | 32..1008  | body, zero padded  |
//! | 1008..1024| tag                |
//!
//! `new_checked` refuses anything that is not exactly one well-formed frame, so the rest of the
//! core never indexes out of range.

use crate::config::{BODY_BYTES_MAX, FRAME_BYTES, HEADER_BYTES, TAG_BYTES};

pub const MAGIC: [u8; 2] = *b"MY";
pub const PROTOCOL_VERSION: u8 = 1;
/// The frame goes through a relay to the node id in bytes 8..16, which then hold that id instead
/// of the sender's RevocationBlock (docs/protocol.md section 12). The sender sets it before
/// sealing, so the destination is authenticated with the rest of the header.
pub const FLAG_RELAYED: u8 = 1;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const ZONE: usize = 4;
    pub const FLAGS: usize = 5;
    pub const BODY_LEN: Range<usize> = 6..8;
    pub const REVOCATION: Range<usize> = 8..16;
    pub const SENDER: Range<usize> = 16..24;
    pub const COUNTER: Range<usize> = 24..32;
}

const _: () = assert!(field::COUNTER.end == HEADER_BYTES);

/// What a frame carries. Numbers are on the wire; never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Gossip: a postcard `Message` body, sealed with the session's keys.
    Data = 1,
    /// Handshake messages (cleartext; `crypto::handshake`). The byte equals the message's own
    /// leading kind byte.
    Hello = 2,
    Reply = 3,
    Finish = 4,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Data),
            2 => Some(Kind::Hello),
            3 => Some(Kind::Reply),
            4 => Some(Kind::Finish),
            _ => None,
        }
    }
}

/// Why a frame was refused before its body was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Length,
    Magic,
    Version,
    Kind,
    Flags,
    BodyLength,
    Padding,
}

/// A validated view over exactly one frame.
pub struct Frame<'a> {
    bytes: &'a [u8; FRAME_BYTES],
}

impl<'a> Frame<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let bytes: &[u8; FRAME_BYTES] = bytes.try_into().map_err(|_| FrameError::Length)?;
        if bytes[field::MAGIC] != MAGIC {
            return Err(FrameError::Magic);
        }
        if bytes[field::VERSION] != PROTOCOL_VERSION {
            return Err(FrameError::Version);
        }
        if Kind::from_u8(bytes[field::KIND]).is_none() {
            return Err(FrameError::Kind);
        }
        if bytes[field::FLAGS] & !FLAG_RELAYED != 0 {
            return Err(FrameError::Flags);
        }
        let frame = Frame { bytes };
        let len = frame.body_len();
        if len > BODY_BYTES_MAX {
            return Err(FrameError::BodyLength);
        }
        // Padding must be zero: a frame has exactly one encoding, so nothing can hide in it. A
        // sealed body is ciphertext, so its padding is checked after opening; a cleartext frame
        // has no tag either.
        let sealed = frame.kind() == Kind::Data;
        if !sealed && bytes[HEADER_BYTES + len..].iter().any(|&b| b != 0) {
            return Err(FrameError::Padding);
        }
        Ok(frame)
    }

    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.bytes[field::KIND]).expect("checked in new_checked")
    }
    pub fn zone(&self) -> u8 {
        self.bytes[field::ZONE]
    }
    pub fn body_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.bytes[6], self.bytes[7]]))
    }
    /// The sender's RevocationBlock; a relayed frame carries none (`relay_to` holds its bytes).
    pub fn revocation_block(&self) -> Option<u64> {
        let field = read_u64(self.bytes, field::REVOCATION.start);
        self.relay_to().is_none().then_some(field)
    }
    /// The node id a relayed frame is for; `None` for a direct frame.
    pub fn relay_to(&self) -> Option<u64> {
        let relayed = self.bytes[field::FLAGS] & FLAG_RELAYED != 0;
        relayed.then(|| read_u64(self.bytes, field::REVOCATION.start))
    }
    /// The whole datagram, for a relay to forward as it came.
    pub fn bytes(&self) -> &'a [u8; FRAME_BYTES] {
        self.bytes
    }
    pub fn sender(&self) -> u64 {
        read_u64(self.bytes, field::SENDER.start)
    }
    pub fn counter(&self) -> u64 {
        read_u64(self.bytes, field::COUNTER.start)
    }
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[HEADER_BYTES..HEADER_BYTES + self.body_len()]
    }
    /// The whole body region, padding included: what a sealed frame encrypts.
    pub fn sealed_body(&self) -> &'a [u8] {
        &self.bytes[HEADER_BYTES..FRAME_BYTES - TAG_BYTES]
    }
    pub fn header(&self) -> &'a [u8] {
        &self.bytes[..HEADER_BYTES]
    }
    pub fn tag(&self) -> &'a [u8] {
        &self.bytes[FRAME_BYTES - TAG_BYTES..]
    }
}

fn read_u64(bytes: &[u8; FRAME_BYTES], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The header fields a sender sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub zone: u8,
    pub revocation_block: u64,
    pub sender: u64,
    pub counter: u64,
}

/// Writes a whole frame: header, `body`, zero padding, zero tag. `body` must fit.
pub fn write_frame(out: &mut [u8; FRAME_BYTES], header: &Header, body_len: usize) {
    assert!(body_len <= BODY_BYTES_MAX);
    out[field::MAGIC].copy_from_slice(&MAGIC);
    out[field::VERSION] = PROTOCOL_VERSION;
    out[field::KIND] = header.kind as u8;
    out[field::ZONE] = header.zone;
    out[field::FLAGS] = 0;
    out[field::BODY_LEN].copy_from_slice(&(body_len as u16).to_le_bytes());
    out[field::REVOCATION].copy_from_slice(&header.revocation_block.to_le_bytes());
    out[field::SENDER].copy_from_slice(&header.sender.to_le_bytes());
    out[field::COUNTER].copy_from_slice(&header.counter.to_le_bytes());
    out[HEADER_BYTES + body_len..].fill(0);
}

/// Marks a written frame as relayed to `dest`: sets `FLAG_RELAYED` and puts `dest` where the
/// RevocationBlock was. Call it before sealing: the header is the associated data.
pub fn mark_relayed(out: &mut [u8; FRAME_BYTES], dest: u64) {
    out[field::FLAGS] = FLAG_RELAYED;
    out[field::REVOCATION].copy_from_slice(&dest.to_le_bytes());
}

/// The body region of a frame being written.
pub fn body_mut(out: &mut [u8; FRAME_BYTES]) -> &mut [u8] {
    &mut out[HEADER_BYTES..HEADER_BYTES + BODY_BYTES_MAX]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; FRAME_BYTES] {
        let mut f = [0u8; FRAME_BYTES];
        body_mut(&mut f)[..3].copy_from_slice(b"abc");
        let h = Header {
            kind: Kind::Data,
            zone: 7,
            revocation_block: 9,
            sender: 42,
            counter: 5,
        };
        write_frame(&mut f, &h, 3);
        f
    }

    /// A written frame reads back field by field.
    #[test]
    fn round_trip() {
        let f = sample();
        let v = Frame::new_checked(&f).unwrap();
        assert_eq!(
            (v.zone(), v.revocation_block(), v.sender(), v.counter()),
            (7, Some(9), 42, 5)
        );
        assert_eq!(v.body(), b"abc");
        assert_eq!(v.relay_to(), None);
    }

    /// A relayed frame names its destination where the RevocationBlock was, and carries no
    /// block; any other flag bit is still refused.
    #[test]
    fn relayed_frames_name_their_destination() {
        let mut f = sample();
        mark_relayed(&mut f, 0xfeed);
        let v = Frame::new_checked(&f).unwrap();
        assert_eq!((v.relay_to(), v.revocation_block()), (Some(0xfeed), None));
        assert_eq!((v.sender(), v.counter(), v.body()), (42, 5, &b"abc"[..]));
        for bit in 1..8 {
            let mut g = f;
            g[5] |= 1 << bit;
            assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::Flags));
        }
    }

    /// Every malformation is refused with its own reason.
    #[test]
    fn refuses_malformed() {
        let f = sample();
        assert_eq!(
            Frame::new_checked(&f[..1023]).err(),
            Some(FrameError::Length)
        );
        let mut g = f;
        g[0] = b'X';
        assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::Magic));
        let mut g = f;
        g[2] = 9;
        assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::Version));
        let mut g = f;
        g[3] = 0;
        assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::Kind));
        let mut g = f;
        g[6] = 0xff;
        g[7] = 0xff;
        assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::BodyLength));
        let mut g = f;
        g[3] = Kind::Hello as u8;
        g[HEADER_BYTES + 10] = 1;
        assert_eq!(Frame::new_checked(&g).err(), Some(FrameError::Padding));
        g[HEADER_BYTES + 10] = 0;
        g[FRAME_BYTES - 1] = 1;
        assert_eq!(
            Frame::new_checked(&g).err(),
            Some(FrameError::Padding),
            "no tag on cleartext"
        );
    }
}
