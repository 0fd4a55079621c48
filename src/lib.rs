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
//! - [`source`]: where records come from: Kinesis shard readers with leases and
//!   checkpoints (`source::kinesis`), the gRPC API (`source::grpc`), the simulator.
//! - [`decode`]: the bytes of a stream record into records (entity, event time,
//!   feature values): JSON with a field mapping; VPC flow logs, Apache logs, CloudWatch
//!   Logs envelopes and KPL aggregates to come.
//! - [`service`]: `service::scorer` is the detector stage every source feeds: it looks
//!   up the entity's model in the registry and turns the output into a
//!   [`event::ScoredEvent`], an [`event::Alert`] for the first record of an anomaly
//!   region, or an [`event::DeadLetter`]. The rest of `service` assembles and runs it
//!   all (config, detector catalog, live page, metrics, ordered shutdown).
//! - [`detector`]: per-entity models (transform, forest, adaptive threshold and grade,
//!   attribution per feature, expected values) and their registry (cap, LRU eviction
//!   to snapshots, restore, replay skip).
//! - [`forest`]: the random cut forest itself. Pure and synchronous: internal shingling,
//!   a shared point store, time-decayed reservoir sampling per tree, score, attribution,
//!   imputation of missing values, snapshots. No async, no I/O, no allocation per point.
//! - [`sink`]: where scored events go, in a chain per batch: the journal in the embedded
//!   store (committed on a thread at idle priority, so commits never delay a reply),
//!   OpenSearch bulk indexing, SNS alerts, the dead-letter target; the batch is
//!   acknowledged (and its Kinesis records checkpointed) once all have it.
//! - [`store`]: what outlives a process, in one embedded redb file: model snapshots
//!   (with the source position they include), the journal of events, alerts and dead
//!   letters, and detectors created through the API.
//!
//! Around the path: [`cli`] (the command line: `serve`, `score`, `eval`, `config
//! check`, `dashboards`), [`eval`] (accuracy on labelled data: NAB's scoring, a corpus
//! runner and per-row ROC-AUC, precision and recall) and [`dashboards`] (the saved
//! objects for OpenSearch Dashboards that show the indexed events, the query each panel
//! sends, and their import).
//!
//! Records that cannot be decoded or scored go to the dead-letter store with their raw
//! bytes, position and reason; nothing is dropped silently.

pub mod calendar;
pub mod cli;
pub mod dashboards;
pub mod decode;
pub mod detector;
pub mod eval;
pub mod event;
pub mod forest;
pub mod service;
pub mod sink;
pub mod source;
pub mod store;
