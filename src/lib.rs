//! rcfd: streaming anomaly detection with online random cut forests.
//!
//! # One record's path
//!
//! ```text
//! source ──> decode ──> detector ──> scored event ──> sinks ──> acknowledgement ──> checkpoint
//! kinesis     json        per-entity     score, grade,    opensearch  (all sinks      (lease table,
//! grpc        vpc flow    model:         confidence,      sns alerts   delivered)      per shard)
//! file/stdin  apache log  shingle ->     attribution,     local store
//! simulator   cwlogs gz   transform ->   expected value   grpc reply
//!             KPL agg     forest ->
//!                         threshold
//! ```
//!
//! Which module owns each step, in the record's order (modules in brackets are not
//! built yet; see the issues):
//!
//! - (`source`): Kinesis shard readers with leases and checkpoints, the gRPC API, the
//!   built-in simulator; each yields records with their source position.
//! - (`decode`): JSON, VPC flow logs, Apache logs, CloudWatch Logs envelopes, KPL
//!   aggregation, into records (entity key, event time, feature vector).
//! - [`detector`]: turns raw scores into decisions. Built: the adaptive threshold and
//!   grade. To come: per-entity models (shingle, transform, forest, threshold) with
//!   confidence, attribution per feature and expected values, and their registry.
//! - [`forest`]: the random cut forest itself. Pure and synchronous: internal shingling,
//!   a shared point store, time-decayed reservoir sampling per tree, score, attribution,
//!   imputation of missing values, snapshots. No async, no I/O, no allocation per point.
//! - (`sink`): OpenSearch bulk indexing, SNS alerts, the embedded store; each
//!   acknowledges what it delivered so the source can checkpoint.
//! - [`store`]: what outlives a process. Built: model snapshots (with the source
//!   position they include) in an embedded redb file.
//!
//! Around the path: [`cli`] (the command line: `serve`, `score`, `eval`, `config
//! check`) and [`eval`] (accuracy on labelled data: NAB's scoring, a corpus runner and
//! per-row ROC-AUC, precision and recall).
//!
//! Records that cannot be decoded or scored go to the dead-letter store with their raw
//! bytes, position and reason; nothing is dropped silently.

pub mod cli;
pub mod detector;
pub mod eval;
pub mod event;
pub mod forest;
pub mod service;
pub mod sink;
pub mod source;
pub mod store;
