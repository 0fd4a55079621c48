//! Decoders: the bytes of one stream record -> the records in it (entity, event time,
//! feature values by name). One stream record can hold several (a CloudWatch Logs
//! envelope, a KPL aggregate), and each can fail on its own: a failure names the field,
//! the value and what is allowed, and goes to the dead-letter store with the raw bytes.
//!
//! `json` is built; the VPC flow log, Apache access log, CloudWatch Logs and KPL
//! decoders come next (issue 6).

pub mod json;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One record taken out of a stream record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub entity: String,
    /// Milliseconds since the Unix epoch; the stream's arrival time when the record
    /// carries none.
    pub event_ms: i64,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid {format}: {reason}")]
    Malformed { format: &'static str, reason: String },
    #[error("field `{field}` is missing")]
    MissingField { field: String },
    #[error("field `{field}` = {value}: {allowed}")]
    BadField { field: String, value: String, allowed: String },
}

impl DecodeError {
    /// The `error_type` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::BadField { .. } => "bad_field",
        }
    }
}

/// Turns one stream record into the records it holds.
pub trait Decoder: Send + Sync {
    /// `arrival_ms`: when the stream received it (the event time if the record has none).
    fn decode(&self, data: &[u8], arrival_ms: i64) -> Vec<Result<Decoded, DecodeError>>;
}

/// Which decoder a stream uses, as written in the config (`format = "json"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecoderConfig {
    Json(json::JsonConfig),
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig::Json(json::JsonConfig::default())
    }
}

impl DecoderConfig {
    pub fn build(&self) -> Box<dyn Decoder> {
        match self {
            DecoderConfig::Json(config) => Box::new(json::JsonDecoder::new(config.clone())),
        }
    }
}
