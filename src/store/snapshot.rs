//! Model snapshots and where they are kept. A snapshot records the source position of
//! the last record its model learned, so a replay after a crash does not train twice.

use serde::{Deserialize, Serialize};

/// The full key of a model: its detector and its entity (never a hash of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey {
    pub detector: String,
    pub entity: String,
}

/// Where a record came from: stream, shard and sequence number. Sequence numbers are
/// decimal strings longer than any integer type; within a shard they compare by length,
/// then by text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    pub stream: String,
    pub shard: String,
    pub sequence: String,
}

impl SourcePosition {
    /// Whether `self` is at or before `other` in the same stream and shard.
    pub fn is_at_or_before(&self, other: &SourcePosition) -> bool {
        self.stream == other.stream
            && self.shard == other.shard
            && (self.sequence.len(), self.sequence.as_str()) <= (other.sequence.len(), other.sequence.as_str())
    }
}

/// A model's state as bytes, the last source position it includes per shard, and the
/// latest event time it has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub model: Vec<u8>,
    pub positions: Vec<SourcePosition>,
    /// Milliseconds since the Unix epoch.
    pub latest_event_ms: Option<i64>,
    /// The score of the latest record (shown when the model is inspected).
    pub last_score: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot store: {0}")]
    Backend(String),
    #[error("snapshot of {detector}/{entity} is unreadable: {reason}")]
    Corrupt { detector: String, entity: String, reason: String },
}

/// Where evicted models go and come back from. Implementations: the embedded database
/// now; S3 and OpenSearch to come.
pub trait SnapshotStore: Send + Sync {
    fn put(&self, key: &ModelKey, snapshot: &Snapshot) -> Result<(), StoreError>;
    fn get(&self, key: &ModelKey) -> Result<Option<Snapshot>, StoreError>;
    fn delete(&self, key: &ModelKey) -> Result<(), StoreError>;
    /// Deletes the snapshots of every entity of `detector`; returns how many.
    fn delete_detector(&self, detector: &str) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: &str) -> SourcePosition {
        SourcePosition { stream: "s".into(), shard: "shardId-0".into(), sequence: sequence.into() }
    }

    #[test]
    fn sequence_numbers_compare_by_length_then_text() {
        let long = "49590338271490256608559692538361571095921575989136588898";
        assert!(at("9").is_at_or_before(&at(long)), "shorter is earlier");
        assert!(!at(long).is_at_or_before(&at("9")));
        assert!(at(long).is_at_or_before(&at(long)));
        let other_shard = SourcePosition { shard: "shardId-1".into(), ..at("1") };
        assert!(!other_shard.is_at_or_before(&at("2")), "positions in other shards do not compare");
    }
}
