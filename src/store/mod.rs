//! State that outlives a process, in one embedded database file by default: model
//! snapshots (`snapshot`: the trait and what a snapshot holds; `embedded`: the redb
//! file) and the journal of scored events, alerts, dead letters and detectors created
//! through the API (`journal`, in the same file).

pub mod embedded;
pub mod journal;
pub mod snapshot;
