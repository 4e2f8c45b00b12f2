//! Merkle summaries for anti-entropy.

pub mod merkle;
