//! Sends scored events to OpenSearch with `_bulk`: one request per batch, document ids
//! from the events (so a replay overwrites), items classified by [`super::retry`],
//! retryable ones sent again with exponential backoff and jitter until the retry
//! budget is spent. What is finally refused comes back to the caller as dead letters.

use std::time::{Duration, Instant};

use opensearch::auth::Credentials;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::IndicesPutIndexTemplateParts;
use opensearch::{BulkParts, OpenSearch};
use serde_json::Value;

use super::config::OpenSearchConfig;
use super::retry::classify;
use super::template::{daily_index, index_template};
use crate::event::ScoredEvent;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OpenSearchError {
    #[error("opensearch.url = {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("installing the index template {name}: {reason}")]
    Template { name: String, reason: String },
}

pub struct OpenSearchSink {
    client: OpenSearch,
    prefix: String,
    budget: Duration,
    max_bulk_bytes: usize,
}

impl OpenSearchSink {
    /// Connects and installs the index template (idempotent: a restart replaces it).
    pub async fn connect(
        config: &OpenSearchConfig,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Option<Self>, OpenSearchError> {
        let Some(url) = &config.url else { return Ok(None) };
        let bad_url = |reason: String| OpenSearchError::Url { url: url.clone(), reason };
        let parsed = opensearch::http::Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(parsed));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            transport = transport.auth(Credentials::Basic(user.clone(), password.clone()));
        }
        if config.aws_sigv4 {
            let aws = aws.ok_or_else(|| bad_url("aws_sigv4 needs the AWS configuration".into()))?;
            let credentials = Credentials::try_from(aws).map_err(|e| bad_url(format!("aws_sigv4: {e}")))?;
            transport = transport.auth(credentials).service_name(&config.aws_service);
        }
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| bad_url(format!("ca_file {}: {e}", ca_file.display())))?;
            let ca = opensearch::cert::Certificate::from_pem(&pem)
                .map_err(|e| bad_url(format!("ca_file {}: {e}", ca_file.display())))?;
            transport = transport.cert_validation(opensearch::cert::CertificateValidation::Full(ca));
        }
        let client = OpenSearch::new(transport.build().map_err(|e| bad_url(e.to_string()))?);
        let name = config.index_prefix.clone();
        let installed = client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
            .body(index_template(&config.index_prefix))
            .send()
            .await
            .map_err(|e| OpenSearchError::Template { name: name.clone(), reason: e.to_string() })?;
        if !installed.status_code().is_success() {
            let reason = installed.text().await.unwrap_or_default();
            return Err(OpenSearchError::Template { name, reason });
        }
        Ok(Some(OpenSearchSink {
            client,
            prefix: config.index_prefix.clone(),
            budget: Duration::from_secs(config.retry_budget_seconds),
            max_bulk_bytes: config.max_bulk_bytes,
        }))
    }

    /// Indexes `events` in `_bulk` requests of at most `max_bulk_bytes`; returns those
    /// OpenSearch refused for good (by position in `events`), with the reason.
    pub async fn send(&self, events: &[ScoredEvent]) -> Vec<(usize, String)> {
        // Each event is encoded once: its size decides the split, and retries resend it.
        let encoded: Vec<[String; 2]> = events
            .iter()
            .map(|event| {
                let action = serde_json::json!({"index": {"_index": daily_index(&self.prefix, event.event_ms), "_id": event.id}});
                [action.to_string(), serde_json::to_string(event).unwrap_or_default()]
            })
            .collect();
        let mut refused = Vec::new();
        let mut start = 0;
        while start < encoded.len() {
            let mut end = start;
            let mut bytes = 0;
            // At least one event per request.
            while end < encoded.len() && (end == start || bytes < self.max_bulk_bytes) {
                bytes += encoded[end][0].len() + encoded[end][1].len() + 2;
                end += 1;
            }
            let chunk = self.send_chunk(&encoded[start..end]).await;
            refused.extend(chunk.into_iter().map(|(i, reason)| (start + i, reason)));
            start = end;
        }
        refused
    }

    async fn send_chunk(&self, encoded: &[[String; 2]]) -> Vec<(usize, String)> {
        let mut pending: Vec<usize> = (0..encoded.len()).collect();
        let mut refused = Vec::new();
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut jitter = Jitter(0x5eed_0f0f_f5e7 ^ encoded.len() as u64);
        while !pending.is_empty() {
            let lines: Vec<&str> = pending.iter().flat_map(|&i| encoded[i].iter().map(String::as_str)).collect();
            let retry: Vec<(usize, String)> = match self.client.bulk(BulkParts::None).body(lines).send().await {
                Ok(response) if response.status_code().is_success() => {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let classified = classify(&body, pending.len());
                    refused.extend(classified.rejected.into_iter().map(|(p, reason)| (pending[p], reason)));
                    classified.retry.into_iter().map(|(p, reason)| (pending[p], reason)).collect()
                }
                Ok(response) => {
                    let status = response.status_code().as_u16();
                    let reason = format!("_bulk answered {status}: {}", response.text().await.unwrap_or_default());
                    if status == 429 || status >= 500 {
                        pending.iter().map(|&i| (i, reason.clone())).collect()
                    } else {
                        refused.extend(pending.iter().map(|&i| (i, reason.clone())));
                        Vec::new()
                    }
                }
                Err(e) => pending.iter().map(|&i| (i, format!("_bulk failed: {e}"))).collect(),
            };
            if retry.is_empty() {
                break;
            }
            if started.elapsed() + backoff > self.budget {
                let spent = self.budget.as_secs();
                refused.extend(
                    retry
                        .into_iter()
                        .map(|(i, reason)| (i, format!("gave up after the {spent} s retry budget: {reason}"))),
                );
                break;
            }
            tracing::warn!(items = retry.len(), reason = %retry[0].1, "OpenSearch did not take every item; retrying");
            tokio::time::sleep(jitter.spread(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        refused
    }
}

/// Spreads retries between 50% and 150% of the backoff, so many writers that failed
/// together do not retry together (seeded: the spread is reproducible).
struct Jitter(u64);

impl Jitter {
    fn spread(&mut self, backoff: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        backoff.mul_f64(0.5 + unit)
    }
}
