//! The parts of `myco` that other crates drive directly: the myco.json parser, which the fuzz
//! crate feeds arbitrary bytes. Everything else lives in the binary.

pub mod manifest;
