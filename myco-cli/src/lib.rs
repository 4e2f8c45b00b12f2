//! The parts of `myco` that other crates drive directly: the myco.json parser and the parser of
//! the daemon's HTTP answers, which the fuzz crate feeds arbitrary bytes. Everything else lives in
//! the binary.

pub mod http;
pub mod manifest;
