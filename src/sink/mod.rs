//! Where scored events go: the queue from the scorer to the sinks (`queue`, bounded by
//! records), the chain that hands each batch to the sinks in order and acknowledges it
//! once all have it (`chain`: the embedded journal first, committed on a thread of its
//! own at low priority, `writer`), OpenSearch (`opensearch`), alerts to SNS (`sns`) and
//! dead letters to a second Kinesis stream or S3 (`dead_letter`).

pub mod chain;
pub mod dead_letter;
pub mod opensearch;
pub mod queue;
pub mod sns;
pub mod writer;
