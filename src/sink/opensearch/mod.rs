//! The OpenSearch sink: `config` (where and how), `template` (the index template with
//! the scored event's mappings, daily index names), `retry` (one function that
//! classifies every item of a `_bulk` response) and `sink` (bulk requests with retries
//! within a budget; what OpenSearch refuses becomes a dead letter) and `retention` (the
//! optional ISM policy that deletes old daily indices).

pub mod config;
pub mod retention;
pub mod retry;
pub mod sink;
pub mod template;
