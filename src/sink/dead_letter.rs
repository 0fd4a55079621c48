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
/// Kinesis takes at most 500 records per PutRecords call ...
const KINESIS_BATCH: usize = 500;
/// ... of at most 1 MiB each (data and partition key) and 5 MiB in all.
const KINESIS_RECORD_BYTES: usize = 1 << 20;
const KINESIS_REQUEST_BYTES: usize = 5 << 20;
/// Room left in a record for its partition key (at most 256 characters) and slack.
const KINESIS_KEY_ROOM: usize = 1024;
/// A reason longer than this is cut in a letter too large for a Kinesis record.
const REASON_BYTES_WHEN_CUT: usize = 64 * 1024;

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
    /// The length of the record's bytes when `raw_base64` holds only their start: a
    /// letter too large for a Kinesis record is cut to fit (the journal has it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_cut_from: Option<usize>,
}

impl Envelope {
    /// The envelope as one Kinesis record's data, cut to fit one if need be.
    fn kinesis_data(&self) -> Result<Vec<u8>, String> {
        let json = |envelope: &Envelope| serde_json::to_vec(envelope).map_err(|e| e.to_string());
        let data = json(self)?;
        let limit = KINESIS_RECORD_BYTES - KINESIS_KEY_ROOM;
        if data.len() <= limit {
            return Ok(data);
        }
        let mut cut = self.clone();
        if cut.reason.len() > REASON_BYTES_WHEN_CUT {
            let end = (0..=REASON_BYTES_WHEN_CUT).rev().find(|&i| cut.reason.is_char_boundary(i)).unwrap_or(0);
            cut.reason.truncate(end);
        }
        let padding = self.raw_base64.bytes().rev().take_while(|&b| b == b'=').count();
        cut.raw_cut_from = Some(self.raw_base64.len() / 4 * 3 - padding);
        cut.raw_base64.clear();
        // Base64 needs no escaping, so the room left is exact; whole groups of four
        // characters keep the start of the bytes valid base64.
        let keep = limit.saturating_sub(json(&cut)?.len()) / 4 * 4;
        if keep >= self.raw_base64.len() {
            // Only the reason had to be cut.
            (cut.raw_base64, cut.raw_cut_from) = (self.raw_base64.clone(), None);
        } else {
            cut.raw_base64 = self.raw_base64[..keep].to_owned();
        }
        json(&cut)
    }
}

/// Splits records of these sizes into PutRecords calls within Kinesis's limits, in order.
fn kinesis_requests(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut requests = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        let size = size + KINESIS_KEY_ROOM;
        if i > start && (i - start == KINESIS_BATCH || bytes + size > KINESIS_REQUEST_BYTES) {
            requests.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        requests.push(start..sizes.len());
    }
    requests
}

impl From<&DeadLetter> for Envelope {
    fn from(letter: &DeadLetter) -> Self {
        Envelope {
            origin: letter.origin.clone(),
            source: letter.source.clone(),
            reason: letter.reason.clone(),
            at_ms: letter.at_ms,
            raw_base64: base64::engine::general_purpose::STANDARD.encode(&letter.raw),
            raw_cut_from: None,
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
                let data: Vec<Vec<u8>> = envelopes.iter().map(Envelope::kinesis_data).collect::<Result<_, _>>()?;
                let sizes: Vec<usize> = data.iter().map(Vec::len).collect();
                for request in kinesis_requests(&sizes) {
                    let chunk = &envelopes[request.clone()];
                    let mut entries = Vec::with_capacity(chunk.len());
                    for (envelope, data) in chunk.iter().zip(&data[request]) {
                        let key = envelope.source.as_ref().map_or(envelope.origin.clone(), |p| p.shard.clone());
                        // A partition key has at most 256 characters.
                        let key: String = key.chars().take(256).collect();
                        let data = data.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: Vec<u8>, reason: String) -> Envelope {
        Envelope::from(&DeadLetter { origin: "stream".into(), source: None, raw, reason, at_ms: 1 })
    }

    #[test]
    fn a_letter_too_large_for_a_kinesis_record_keeps_the_start_of_its_bytes_and_says_so() {
        let small = letter(b"{not json".to_vec(), "not valid JSON".into());
        assert_eq!(small.kinesis_data().expect("data"), serde_json::to_vec(&small).expect("json"));
        let raw: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        let data = letter(raw.clone(), "é".repeat(100_000)).kinesis_data().expect("data");
        assert!(data.len() <= KINESIS_RECORD_BYTES - KINESIS_KEY_ROOM, "{} bytes", data.len());
        let cut: Envelope = serde_json::from_slice(&data).expect("an envelope");
        assert_eq!(cut.raw_cut_from, Some(raw.len()));
        let start = base64::engine::general_purpose::STANDARD.decode(&cut.raw_base64).expect("valid base64");
        assert!(start.len() > 700_000 && raw.starts_with(&start), "{} bytes kept", start.len());
        assert!(cut.reason.len() <= REASON_BYTES_WHEN_CUT && cut.reason.starts_with("éé"));
    }

    #[test]
    fn kinesis_requests_stay_within_the_count_and_size_limits_in_order() {
        assert_eq!(kinesis_requests(&[100; 600]), vec![0..500, 500..600]);
        let sizes = [900_000; 7];
        let requests = kinesis_requests(&sizes);
        assert_eq!(requests, vec![0..5, 5..7]);
        for request in requests {
            let bytes: usize = sizes[request].iter().map(|s| s + KINESIS_KEY_ROOM).sum();
            assert!(bytes <= KINESIS_REQUEST_BYTES);
        }
        assert!(kinesis_requests(&[]).is_empty());
    }
}
