//! The wire and entry schema: what bytes mean, checked before anything acts on them.

pub mod addr;
pub mod entry;
pub mod frame;
pub mod message;
