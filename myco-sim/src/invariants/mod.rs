//! The simulator's invariant checkers: pure functions and watchers that read the nodes (and the
//! executor world's simulated boxes) and say what broke, never changing what they read. The
//! worlds (`cluster.rs`, `executors.rs`) call them; each checker has a test proving it can fail.

pub mod executors;
pub mod placement;
pub mod rollout;
