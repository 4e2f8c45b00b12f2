//! The flight recorder's ring: the last bytes of the log in a fixed buffer, oldest overwritten
//! first, read back oldest first without a torn first line. No locking and no allocation: the
//! lock is `shared`'s, the buffer the caller's. Compiled into `tests/loom.rs` too.
//!
//! Invariants: recording only copies bytes; every recorded line ends in `\n`; the output never
//! starts with a torn line.

use std::io::{self, Write};

/// The last bytes of the log, as many as the ring holds, oldest overwritten first.
pub struct FlightRecorder {
    /// The ring's bytes: the arena's `FLIGHT_RECORDER_BYTES` in the daemon.
    buffer: &'static mut [u8],
    /// Where the next byte goes; once wrapped, also where the oldest byte is.
    position: usize,
    wrapped: bool,
    /// Once wrapped: whether the oldest byte continues a line whose start was overwritten. The
    /// ring alone cannot tell, because the byte before the oldest one is gone.
    oldest_torn: bool,
}

impl FlightRecorder {
    /// An empty recorder over `buffer`, all of which the ring uses (tests use small rings so that
    /// a few lines wrap them).
    pub fn new(buffer: &'static mut [u8]) -> FlightRecorder {
        assert!(
            buffer.len() >= 2,
            "a ring must hold at least one byte and its newline"
        );
        FlightRecorder {
            buffer,
            position: 0,
            wrapped: false,
            oldest_torn: false,
        }
    }

    /// Appends `line` and a newline (one trailing newline in `line` is not doubled), overwriting
    /// the oldest bytes. A line longer than the ring keeps its start, cut to fit with its newline.
    /// Only copies: never allocates.
    pub fn record(&mut self, line: &[u8]) {
        let capacity = self.buffer.len();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let body = &line[..line.len().min(capacity - 1)];
        let end = self.position + body.len() + 1;
        // After this write the oldest byte is the one at `end % capacity`. It begins a line exactly
        // when the byte before it in the stream, which this write overwrites at `end - 1`, was a
        // newline. While the ring fills for the first time (`end <= capacity`) it is byte 0,
        // which always begins a line.
        if self.wrapped || end > capacity {
            self.oldest_torn = self.buffer[(end - 1) % capacity] != b'\n';
        }
        self.copy_in(body);
        self.copy_in(b"\n");
        assert!(self.position == end % capacity);
        assert!(self.buffer[(self.position + capacity - 1) % capacity] == b'\n');
    }

    fn copy_in(&mut self, bytes: &[u8]) {
        let capacity = self.buffer.len();
        assert!(bytes.len() <= capacity);
        let first = bytes.len().min(capacity - self.position);
        self.buffer[self.position..self.position + first].copy_from_slice(&bytes[..first]);
        self.buffer[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.wrapped |= self.position + bytes.len() >= capacity;
        self.position = (self.position + bytes.len()) % capacity;
    }

    /// Writes the recorded lines oldest first, from the first complete line.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (older, newer) = self.oldest_first();
        w.write_all(older)?;
        w.write_all(newer)
    }

    /// The contents in two pieces, oldest first, without a torn first line.
    fn oldest_first(&self) -> (&[u8], &[u8]) {
        // `front` holds what was written since the last wrap (all of it before the first), `back`
        // what is left of the lap before.
        let (front, back) = self.buffer.split_at(self.position);
        if !self.wrapped {
            return (front, &[]);
        }
        if !self.oldest_torn {
            return (back, front);
        }
        if let Some(start) = after_first_newline(back) {
            return (&back[start..], front);
        }
        // The torn line crossed the ring's end, so its newline is in `front` (which always ends in
        // one, so the fallback is never taken).
        let start = after_first_newline(front).unwrap_or(front.len());
        (&[], &front[start..])
    }
}

fn after_first_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

// Not under loom: `tests/loom.rs` compiles this file for its models, not for these tests.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn contents(recorder: &FlightRecorder) -> Vec<u8> {
        let mut out = Vec::new();
        recorder
            .write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// A recorder over a leaked ring of `capacity` bytes (the daemon's is the arena's).
    fn with_capacity(capacity: usize) -> FlightRecorder {
        FlightRecorder::new(Box::leak(vec![0; capacity].into_boxed_slice()))
    }

    fn recorder_with(capacity: usize, lines: &[&str]) -> FlightRecorder {
        let mut recorder = with_capacity(capacity);
        for line in lines {
            recorder.record(line.as_bytes());
        }
        recorder
    }

    /// After a wrap the output is oldest first and drops the line whose start was overwritten.
    #[test]
    fn wrap_drops_the_torn_line() {
        let recorder = recorder_with(16, &["aaaa", "bbbb", "cccc", "dd"]);
        assert_eq!(contents(&recorder), b"bbbb\ncccc\ndd\n");
    }

    /// When the oldest byte begins a line, that complete line is kept: exactly filling the ring
    /// and then overwriting exactly one line loses nothing else.
    #[test]
    fn wrap_on_a_line_boundary_keeps_the_oldest_line() {
        let mut recorder = recorder_with(15, &["aaaa", "bbbb", "cccc"]);
        assert_eq!(contents(&recorder), b"aaaa\nbbbb\ncccc\n");
        recorder.record(b"dddd");
        assert_eq!(contents(&recorder), b"bbbb\ncccc\ndddd\n");
    }

    /// A line longer than the ring keeps its start and its newline, and fills the ring exactly;
    /// a trailing newline in the input is not doubled.
    #[test]
    fn oversized_line_is_cut_to_the_ring() {
        let mut recorder = recorder_with(16, &[]);
        recorder.record(&[b'x'; 100]);
        assert_eq!(contents(&recorder), [&[b'x'; 15][..], b"\n"].concat());
        recorder.record(b"y\n");
        assert_eq!(contents(&recorder), b"y\n");
    }

    /// Over many wraps with lines of every length, the output equals the longest suffix of
    /// everything recorded that fits the ring and starts at a line.
    #[test]
    fn output_matches_a_model_across_many_wraps() {
        let capacity = 64;
        let mut recorder = with_capacity(capacity);
        let mut stream = Vec::new();
        let mut seed = 1u64;
        for i in 0..2_000u32 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % (capacity + 8);
            let line: Vec<u8> = (0..len)
                .map(|j| b'a' + ((i as usize + j) % 26) as u8)
                .collect();
            recorder.record(&line);
            stream.extend_from_slice(&line[..len.min(capacity - 1)]);
            stream.push(b'\n');
            assert_eq!(
                contents(&recorder),
                model(&stream, capacity),
                "after line {i}"
            );
        }
    }

    fn model(stream: &[u8], capacity: usize) -> &[u8] {
        let start = stream.len().saturating_sub(capacity);
        if start == 0 || stream[start - 1] == b'\n' {
            return &stream[start..];
        }
        let skip = stream[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
        &stream[start + skip..]
    }
}
