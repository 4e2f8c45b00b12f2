//! The part of MycoSim other harnesses share: the seeded network model (`net`). The benchmarks
//! in `bench/peers` run other membership protocols on it, so they see the same loss, latency
//! and seeds as Myco's simulated nodes.

pub mod net;
