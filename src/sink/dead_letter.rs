//! Dead letters beyond the embedded journal: to a second Kinesis stream (one record per
//! letter) or to an S3 bucket (one NDJSON object per batch), when configured. Every
//! letter is in the journal first, so a target that stays down loses nothing: it is
//! retried with backoff, then counted and logged, and the batch is acknowledged.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::DeadLetter;
use crate::store::snapshot::SourcePosition;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Kinesis takes at most 500 records per PutRecords call.
const KINESIS_BATCH: usize = 500;

/// `[dead_letters]` in the service config: where letters go besides the journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// A Kinesis stream that gets one record per dead letter (JSON, raw bytes in base64).
    pub kinesis_stream: Option<String>,
    /// An S3 bucket that gets one NDJSON object per batch of dead letters.
    pub s3_bucket: Option<String>,
    /// Key prefix of those objects; `dead-letters/` by default.
    pub s3_prefix: Option<String>,
    /// Address the bucket in the path rather than the host name (needed by S3
    /// emulators and some S3-compatible stores).
    pub s3_force_path_style: bool,
}

/// A dead letter as the targets get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: String,
    pub source: Option<SourcePosition>,
    pub reason: String,
    pub at_ms: i64,
    /// The record's bytes, base64.
    pub raw_base64: String,
}

impl From<&DeadLetter> for Envelope {
    fn from(letter: &DeadLetter) -> Self {
        Envelope {
            origin: letter.origin.clone(),
            source: letter.source.clone(),
            reason: letter.reason.clone(),
            at_ms: letter.at_ms,
            raw_base64: base64::engine::general_purpose::STANDARD.encode(&letter.raw),
        }
    }
}

pub enum DeadLetterTarget {
    Kinesis { client: aws_sdk_kinesis::Client, stream: String },
    S3 { client: aws_sdk_s3::Client, bucket: String, prefix: String },
}

impl DeadLetterTarget {
    /// The configured target, if any (both at once is refused by the config check).
    pub fn build(config: &DeadLetterConfig, aws: &aws_config::SdkConfig) -> Option<Self> {
        if let Some(stream) = &config.kinesis_stream {
            return Some(DeadLetterTarget::Kinesis {
                client: aws_sdk_kinesis::Client::new(aws),
                stream: stream.clone(),
            });
        }
        let bucket = config.s3_bucket.clone()?;
        let s3 = aws_sdk_s3::config::Builder::from(aws).force_path_style(config.s3_force_path_style).build();
        Some(DeadLetterTarget::S3 {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket,
            prefix: config.s3_prefix.clone().unwrap_or_else(|| "dead-letters/".into()),
        })
    }

    /// Sends `letters`, retrying with backoff; an error says what finally failed.
    pub async fn send(&self, letters: &[DeadLetter]) -> Result<(), String> {
        if letters.is_empty() {
            return Ok(());
        }
        let envelopes: Vec<Envelope> = letters.iter().map(Envelope::from).collect();
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.try_send(&envelopes).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(last_error)
    }

    async fn try_send(&self, envelopes: &[Envelope]) -> Result<(), String> {
        match self {
            DeadLetterTarget::Kinesis { client, stream } => {
                for chunk in envelopes.chunks(KINESIS_BATCH) {
                    let mut entries = Vec::with_capacity(chunk.len());
                    for envelope in chunk {
                        let data = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
                        let key = envelope.source.as_ref().map_or(envelope.origin.clone(), |p| p.shard.clone());
                        entries.push(
                            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                                .partition_key(key)
                                .data(aws_sdk_kinesis::primitives::Blob::new(data))
                                .build()
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    let put = client
                        .put_records()
                        .stream_name(stream)
                        .set_records(Some(entries))
                        .send()
                        .await
                        .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())?;
                    // A partial failure retries the whole chunk: duplicates are fine for
                    // dead letters, losses are not.
                    if put.failed_record_count.unwrap_or(0) > 0 {
                        return Err(format!(
                            "{} of {} dead letters refused by {stream}",
                            put.failed_record_count.unwrap_or(0),
                            chunk.len()
                        ));
                    }
                }
                Ok(())
            }
            DeadLetterTarget::S3 { client, bucket, prefix } => {
                let mut body = Vec::new();
                for envelope in envelopes {
                    serde_json::to_writer(&mut body, envelope).map_err(|e| e.to_string())?;
                    body.push(b'\n');
                }
                let first = envelopes.first().map_or(0, |e| e.at_ms);
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let key = format!("{prefix}{first}-{}-{n}.ndjson", std::process::id());
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/x-ndjson")
                    .body(body.into())
                    .send()
                    .await
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
                Ok(())
            }
        }
    }
}
