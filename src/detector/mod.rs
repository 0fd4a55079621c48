//! Detectors: turning a forest's raw scores into decisions a user can act on.
//!
//! `config` owns detector files and their validation, `threshold` the adaptive
//! threshold and the grade, `model` one entity's transform, forest and threshold.
//! Pure and synchronous, like the forest: no I/O here.

pub mod config;
pub mod model;
pub mod threshold;
