//! One Kinesis stream's settings (`[[kinesis]]` in the service config).

use serde::{Deserialize, Serialize};

use crate::decode::DecoderConfig;

pub const DEFAULT_POLL_INTERVAL_MS: u64 = 200;
/// Kinesis allows 5 GetRecords per shard per second.
pub const MIN_POLL_INTERVAL_MS: u64 = 200;
/// The most GetRecords allows, as the Kinesis Client Library's default: a call returns
/// only what is there, so a larger limit adds no latency, and a reader behind the tip
/// catches up at up to 50,000 records per second per shard instead of 5,000.
pub const DEFAULT_BATCH_LIMIT: i32 = 10_000;
pub const MAX_BATCH_LIMIT: i32 = 10_000;
pub const DEFAULT_LEASE_DURATION_MS: u64 = 10_000;
pub const MIN_LEASE_DURATION_MS: u64 = 1_000;

/// Where a shard with no checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisConfig {
    /// The stream's name.
    pub stream: String,
    /// The detector that scores this stream's records.
    pub detector: String,
    /// How records are decoded (`format = "json"` with a field mapping by default).
    pub decoder: DecoderConfig,
    /// Where shards without a checkpoint start: `trim_horizon`, `latest` or `at_timestamp`.
    pub start: StartPosition,
    /// For `start = "at_timestamp"`: milliseconds since the epoch.
    pub start_timestamp_ms: Option<i64>,
    /// Time between GetRecords calls on one shard (at least 200: 5 reads per second).
    pub poll_interval_ms: u64,
    /// Most records per GetRecords call (1 to 10000, default 10000). A reader holds at
    /// most two batches per shard: the one being delivered and the next, read ahead.
    pub batch_limit: i32,
    /// The DynamoDB lease table (created if missing); default `rcfd-leases-<stream>`.
    /// Instances that share it share the stream's shards.
    pub lease_table: Option<String>,
    /// This instance's name in the lease table; default host name and process id.
    pub worker_id: Option<String>,
    /// A lease not renewed for this long (ms) may be taken by another instance.
    pub lease_duration_ms: u64,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            stream: String::new(),
            detector: String::new(),
            decoder: DecoderConfig::default(),
            start: StartPosition::TrimHorizon,
            start_timestamp_ms: None,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            batch_limit: DEFAULT_BATCH_LIMIT,
            lease_table: None,
            worker_id: None,
            lease_duration_ms: DEFAULT_LEASE_DURATION_MS,
        }
    }
}

impl KinesisConfig {
    pub fn lease_table(&self) -> String {
        self.lease_table.clone().unwrap_or_else(|| format!("rcfd-leases-{}", self.stream))
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
            format!("{}-{}", if host.is_empty() { "rcfd" } else { &host }, std::process::id())
        })
    }

    /// Checks the fields; `at` is the config path (e.g. `kinesis[0]`). Errors are
    /// (field path, value, what is allowed).
    pub fn validate(&self, at: &str) -> Result<(), (String, String, String)> {
        let fail =
            |field: &str, value: String, allowed: &str| Err((format!("{at}.{field}"), value, allowed.to_owned()));
        if self.stream.is_empty() || self.stream.len() > 128 {
            return fail("stream", format!("{:?}", self.stream), "a stream name of 1 to 128 characters");
        }
        if self.detector.is_empty() {
            return fail("detector", format!("{:?}", self.detector), "the name of a detector");
        }
        if self.poll_interval_ms < MIN_POLL_INTERVAL_MS {
            return fail(
                "poll_interval_ms",
                self.poll_interval_ms.to_string(),
                "at least 200 (Kinesis allows 5 reads per shard per second)",
            );
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&self.batch_limit) {
            return fail("batch_limit", self.batch_limit.to_string(), "1 to 10000");
        }
        if self.lease_duration_ms < MIN_LEASE_DURATION_MS {
            return fail("lease_duration_ms", self.lease_duration_ms.to_string(), "at least 1000");
        }
        if self.start == StartPosition::AtTimestamp && self.start_timestamp_ms.is_none() {
            return fail(
                "start_timestamp_ms",
                "none".into(),
                "milliseconds since the epoch, with start = \"at_timestamp\"",
            );
        }
        Ok(())
    }
}
