//! Sends scored events to OpenSearch with `_bulk`: one request per batch, document ids
//! from the events (so a replay overwrites), items classified by [`super::retry`],
//! retryable ones sent again with exponential backoff and jitter until the retry
//! budget is spent. What is finally refused comes back to the caller as dead letters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opensearch::auth::Credentials;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::IndicesPutIndexTemplateParts;
use opensearch::{BulkParts, OpenSearch};
use serde_json::Value;

use super::config::{OpenSearchConfig, Url};
use super::retention;
use super::retry::classify;
use super::template::{daily_index, index_template};
use crate::event::ScoredEvent;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long a node that could not be reached is passed over, before requests try it
/// again.
const NODE_DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OpenSearchError {
    #[error("opensearch.{field}: {reason}")]
    Setup { field: &'static str, reason: String },
    #[error("installing the index template {name}: {reason}")]
    Template { name: String, reason: String },
}

/// One node of the cluster: a client of its own, and until when it is passed over.
struct Node {
    url: Url,
    client: OpenSearch,
    down_until: Mutex<Option<Instant>>,
}

impl Node {
    fn down_until(&self) -> Option<Instant> {
        // The value is a plain instant: a panic elsewhere cannot leave it half-written.
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until().is_none_or(|until| until <= now)
    }
}

/// The configured nodes, taken in turn. The `opensearch` crate (2.4) has only a
/// single-node connection pool, and its pool cannot tell which node a request failed
/// on, so the choice of node and the fail-over are made here.
struct Nodes {
    nodes: Vec<Node>,
    next: AtomicUsize,
}

impl Nodes {
    /// The node for the next request: the next in turn that is not passed over, or,
    /// if every node is, the one that failed longest ago.
    fn pick(&self) -> &Node {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let count = self.nodes.len();
        (0..count).map(|i| &self.nodes[(start + i) % count]).find(|node| node.is_up(now)).unwrap_or_else(|| {
            self.nodes.iter().min_by_key(|node| node.down_until()).unwrap_or(&self.nodes[start % count])
        })
    }

    /// Passes `node` over for a while; tells whether another node is still up.
    fn mark_down(&self, node: &Node) -> bool {
        let now = Instant::now();
        *node.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + NODE_DOWN_FOR);
        self.nodes.iter().any(|other| other.is_up(now))
    }
}

pub struct OpenSearchSink {
    nodes: Nodes,
    prefix: String,
    budget: Duration,
    max_bulk_bytes: usize,
}

impl OpenSearchSink {
    /// Connects to `nodes` (those `OpenSearchConfig::validate` gave; none: no sink)
    /// and installs the index template (idempotent: a restart replaces it).
    pub async fn connect(
        config: &OpenSearchConfig,
        nodes: &[Url],
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Option<Self>, OpenSearchError> {
        if nodes.is_empty() {
            return Ok(None);
        }
        let setup = |field: &'static str| move |reason: String| OpenSearchError::Setup { field, reason };
        let credentials = if config.aws_sigv4 {
            let aws = aws.ok_or_else(|| setup("aws_sigv4")("needs the AWS configuration".into()))?;
            Some(Credentials::try_from(aws).map_err(|e| setup("aws_sigv4")(e.to_string()))?)
        } else {
            match (&config.username, &config.password) {
                (Some(user), Some(password)) => Some(Credentials::Basic(user.clone(), password.clone())),
                _ => None,
            }
        };
        let unreadable = |e: String| {
            let file = config.ca_file.as_deref().unwrap_or(std::path::Path::new(""));
            setup("ca_file")(format!("{}: {e}", file.display()))
        };
        let ca_pem = match &config.ca_file {
            Some(ca_file) => Some(std::fs::read(ca_file).map_err(|e| unreadable(e.to_string()))?),
            None => None,
        };
        let mut clients = Vec::with_capacity(nodes.len());
        for url in nodes {
            let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone()));
            if let Some(credentials) = &credentials {
                transport = transport.auth(credentials.clone());
            }
            if config.aws_sigv4 {
                transport = transport.service_name(&config.aws_service);
            }
            if let Some(pem) = &ca_pem {
                // Parsed per node: the crate's certificate type cannot be cloned.
                let ca = opensearch::cert::Certificate::from_pem(pem).map_err(|e| unreadable(e.to_string()))?;
                transport = transport.cert_validation(opensearch::cert::CertificateValidation::Full(ca));
            }
            let built = transport.build().map_err(|e| setup("urls")(format!("{url}: {e}")))?;
            clients.push(Node { url: url.clone(), client: OpenSearch::new(built), down_until: Mutex::new(None) });
        }
        let sink = OpenSearchSink {
            nodes: Nodes { nodes: clients, next: AtomicUsize::new(0) },
            prefix: config.index_prefix.clone(),
            budget: Duration::from_secs(config.retry_budget_seconds),
            max_bulk_bytes: config.max_bulk_bytes,
        };
        sink.install_template().await?;
        if let Some(days) = config.retention_days {
            retention::install(&sink.nodes.pick().client, &sink.prefix, days).await;
        }
        Ok(Some(sink))
    }

    /// Installs the index template through the first node that answers.
    async fn install_template(&self) -> Result<(), OpenSearchError> {
        let name = self.prefix.clone();
        let mut unreachable = Vec::new();
        for node in &self.nodes.nodes {
            let sent = node
                .client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                .body(index_template(&self.prefix))
                .send()
                .await;
            match sent {
                Ok(response) if response.status_code().is_success() => {
                    if !unreachable.is_empty() {
                        tracing::warn!(nodes = %unreachable.join("; "), "some OpenSearch nodes could not be reached");
                    }
                    return Ok(());
                }
                Ok(response) => {
                    let status = response.status_code().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    return Err(OpenSearchError::Template {
                        name,
                        reason: format!("{} answered {status}: {body}", node.url),
                    });
                }
                Err(e) => {
                    self.nodes.mark_down(node);
                    unreachable.push(format!("{}: {e}", node.url));
                }
            }
        }
        Err(OpenSearchError::Template { name, reason: format!("no node answered: {}", unreachable.join("; ")) })
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
            let node = self.nodes.pick();
            let retry: Vec<(usize, String)> = match node.client.bulk(BulkParts::None).body(lines).send().await {
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
                Err(e) => {
                    // Not reached (refused, reset, timed out): another node may take
                    // the same items at once, without waiting out a backoff.
                    if self.nodes.mark_down(node) {
                        tracing::warn!(node = %node.url, error = %e, "OpenSearch node unreachable; sending to the next");
                        continue;
                    }
                    pending.iter().map(|&i| (i, format!("_bulk to {} failed: {e}", node.url))).collect()
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients only: nothing is sent, so no server is needed.
    fn nodes(urls: &[&str]) -> Nodes {
        let nodes = urls
            .iter()
            .map(|u| {
                let url = Url::parse(u).expect("url");
                let transport =
                    TransportBuilder::new(SingleNodeConnectionPool::new(url.clone())).build().expect("built");
                Node { url, client: OpenSearch::new(transport), down_until: Mutex::new(None) }
            })
            .collect();
        Nodes { nodes, next: AtomicUsize::new(0) }
    }

    fn picked(nodes: &Nodes, n: usize) -> Vec<String> {
        (0..n).map(|_| nodes.pick().url.port().unwrap_or(0).to_string()).collect()
    }

    #[test]
    fn requests_go_round_the_nodes_and_pass_over_one_that_is_down() {
        let nodes = nodes(&["http://127.0.0.1:9201", "http://127.0.0.1:9202", "http://127.0.0.1:9203"]);
        assert_eq!(picked(&nodes, 4), ["9201", "9202", "9203", "9201"]);
        assert!(nodes.mark_down(&nodes.nodes[1]), "two nodes are still up");
        assert_eq!(picked(&nodes, 4), ["9203", "9203", "9201", "9203"]);
    }

    #[test]
    fn when_every_node_is_down_the_one_down_longest_is_tried() {
        let nodes = nodes(&["http://127.0.0.1:9201", "http://127.0.0.1:9202"]);
        assert!(nodes.mark_down(&nodes.nodes[1]));
        assert!(!nodes.mark_down(&nodes.nodes[0]), "no node left up");
        assert_eq!(picked(&nodes, 3), ["9202", "9202", "9202"]);
        *nodes.nodes[1].down_until.lock().expect("lock") = Some(Instant::now() - Duration::from_millis(1));
        assert_eq!(picked(&nodes, 2), ["9202", "9202"], "back up once its time is over");
    }
}
