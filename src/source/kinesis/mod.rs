//! The Kinesis source (consumer mode): `config` (one stream's settings), `lease` (shard
//! leases and checkpoints in a DynamoDB table, the Kinesis Client Library's scheme),
//! `reader` (one task per owned shard: GetRecords, decode, score, wait for the sinks,
//! checkpoint, with the next GetRecords read ahead meanwhile) and `coordinator`
//! (discovers shards, takes, renews and gives up leases, starts and stops readers).

pub mod config;
pub mod coordinator;
pub mod lease;
pub mod reader;
