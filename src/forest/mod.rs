//! The random cut forest (Guha et al., ICML 2016), as AWS's random-cut-forest-by-aws
//! defines its scores, so users can compare the two.
//!
//! This module is pure: no async, no I/O, seeded randomness only, and no allocation per
//! point in `score_and_update` (scratch buffers live in the forest). It must never grow
//! a dependency on tokio, AWS or the network.

mod config;
mod error;
mod rcf;
mod rng;
mod sampler;
mod store;
mod tree;

#[cfg(test)]
mod tests;

pub use config::{too_large, ForestConfig, ForestParams, MAX_MAGNITUDE};
pub use error::ForestError;
pub use rcf::{Attribution, Forest};
