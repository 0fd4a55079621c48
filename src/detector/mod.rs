//! Detectors: turning a forest's raw scores into decisions a user can act on.
//!
//! `threshold` owns the adaptive threshold and the grade. Pure and synchronous, like
//! the forest: no I/O here.

pub mod threshold;
