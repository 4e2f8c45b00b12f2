//! Replicated state: the desired-state CRDT, and how it keeps entries compactly.

pub mod packed;
pub mod store;
pub mod strings;
