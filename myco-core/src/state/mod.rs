//! Replicated state: the desired-state CRDT.

pub mod store;
