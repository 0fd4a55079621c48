//! Detectors: turning a forest's raw scores into decisions a user can act on.
//!
//! `config` owns detector files and their validation, `threshold` the adaptive
//! threshold and the grade, `model` one entity's transform, forest and threshold, all
//! pure and synchronous like the forest; `registry` keeps the models of all entities
//! and moves them to and from the snapshot store (its only I/O).

pub mod config;
pub mod model;
pub mod registry;
pub mod threshold;
