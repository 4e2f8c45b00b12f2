//! Spreading state: rumors for new entries, SWIM for membership.

pub mod members;
pub mod rumor;
