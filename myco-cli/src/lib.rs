//! The parts of `myco` that other crates drive directly: the myco.json parser, the parser of
//! the daemon's HTTP answers and the parser of `nix flake metadata`, which the fuzz crate feeds
//! arbitrary bytes, and the flake locking around the last. Everything else lives in the binary.

pub mod flake;
pub mod http;
pub mod manifest;
