//! State that outlives a process: model snapshots (`snapshot`: the trait and what a
//! snapshot holds) and the embedded database that keeps them by default (`embedded`).
//! Scored events, alerts and dead letters will share the embedded database.

pub mod embedded;
pub mod snapshot;
