//! Decoders: the bytes of one stream record -> the records in it (entity, event time,
//! feature values by name). One stream record can hold several (a CloudWatch Logs
//! envelope, a file of log lines), and each can fail on its own: a failure names the
//! field, the value and what is allowed, and goes to the dead-letter store with the raw
//! bytes. Decoders never block and never do I/O on the hot path, except the Apache
//! decoder's reference file, re-read at most once a second when it changed.
//!
//! - `json`: JSON objects with a field mapping.
//! - `vpc_flow`: AWS VPC flow logs, default (version 2) format, one record a line.
//! - `apache`: Apache common and combined access log lines, with an optional reference
//!   file naming the application behind each client IP.
//! - `cloudwatch`: CloudWatch Logs subscription envelopes (gzip JSON), whose log
//!   events are decoded by an inner decoder.
//! - `kpl`: not a format but a wrapper: `kpl::deaggregate` splits a KPL aggregate into
//!   its user records, and the Kinesis source calls it before `decode`.

pub mod apache;
pub mod cloudwatch;
pub mod json;
pub mod kpl;
pub mod vpc_flow;

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
    VpcFlow(vpc_flow::VpcFlowConfig),
    Apache(apache::ApacheConfig),
    #[serde(rename = "cloudwatch")]
    CloudWatch(cloudwatch::CloudWatchConfig),
}

/// Why a decoder could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("decoder setting `{field}` = {value}: {allowed}")]
    BadSetting { field: &'static str, value: String, allowed: &'static str },
    #[error(transparent)]
    Reference(#[from] apache::ReferenceError),
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig::Json(json::JsonConfig::default())
    }
}

impl DecoderConfig {
    /// Fails when a setting contradicts another, or when the Apache reference file
    /// cannot be read at start (later, a broken file only keeps the previous mapping).
    pub fn build(&self) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(match self {
            DecoderConfig::Json(config) => Box::new(json::JsonDecoder::new(config.clone())),
            DecoderConfig::VpcFlow(config) => Box::new(vpc_flow::VpcFlowDecoder::new(config.clone())),
            DecoderConfig::Apache(config) => Box::new(apache::ApacheDecoder::new(config.clone())?),
            DecoderConfig::CloudWatch(config) => Box::new(cloudwatch::CloudWatchDecoder::new(config)?),
        })
    }
}

/// Splits a stream record into its lines for the line-oriented formats (a file, a
/// CloudWatch export): line ends trimmed, blank lines dropped, each line its own UTF-8.
fn lines(data: &[u8]) -> impl Iterator<Item = Result<&str, std::str::Utf8Error>> {
    data.split(|&b| b == b'\n').map(|line| line.trim_ascii()).filter(|line| !line.is_empty()).map(std::str::from_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_parses_from_toml_and_builds() {
        let config: DecoderConfig = toml::from_str(
            r#"
            format = "cloudwatch"
            inner = { format = "vpc_flow", entity = "interface-id", features = ["bytes", "bytes_per_packet"] }
            "#,
        )
        .expect("parses");
        assert!(config.build().is_ok());
        for text in [r#"format = "json""#, r#"format = "vpc_flow""#, r#"format = "apache""#] {
            let config: DecoderConfig = toml::from_str(text).expect("defaults are enough");
            assert!(config.build().is_ok(), "{text}");
        }
        let unknown =
            toml::from_str::<DecoderConfig>("format = \"vpc_flow\"\nentity = \"srcip\"").expect_err("refused");
        assert!(unknown.to_string().contains("expected one of"), "{unknown}");
        let nested: DecoderConfig = toml::from_str(
            "format = \"cloudwatch\"\ninner = { format = \"cloudwatch\", inner = { format = \"json\" } }",
        )
        .expect("parses");
        assert_eq!(nested.build().err().map(|e| e.to_string()).as_deref(), Some("decoder setting `inner.format` = cloudwatch: json, vpc_flow or apache: a log event holds one message, not another envelope"));
    }
}
