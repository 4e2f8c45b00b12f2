//! The host side of `myco-d`: everything that touches the OS (sockets, files, fsync, the clock,
//! systemd and nix) and feeds it to the `myco-core` state machines. No decision lives here; a
//! decision that the simulator would also need belongs in `myco-core`.

pub mod alloc;
pub mod arena;
pub mod atomic;
pub mod audit;
pub mod budget;
pub mod daemon;
pub mod flight;
pub mod http;
pub mod io;
pub mod path;
pub mod privileged;
pub mod reserve;
pub mod spawn;
pub mod store;
pub mod systemd;
