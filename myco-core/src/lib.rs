//! myco-core: every Myco decision as a pure state machine.
//!
//! The core never reads a clock, a socket, a file or the OS random source: the caller passes time
//! in as [`time::Instant`], randomness as one `u64` seed, frames as byte slices, and receives every
//! effect through the [`node::Sink`] trait it implements. All memory lives inside [`node::Node`] in
//! heapless tables whose capacities are the named constants of [`config`]; nothing allocates.
#![no_std]
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod executor;
pub mod gossip;
pub mod hash;
pub mod hex;
pub mod node;
pub mod place;
pub mod privileged;
pub mod random;
pub mod schema;
pub mod state;
pub mod sync;
pub mod time;
pub mod unit;
pub mod wal;

pub use node::{Event, Node, NodeConfig, Sink};
pub use schema::addr::PeerAddr;
pub use time::Instant;
