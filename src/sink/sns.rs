//! Alerts to Amazon SNS: one per anomaly region per entity (the detector marks the
//! region's first record), at most one per entity per cooldown and at most a global
//! number per minute. PublishBatch (10 per call) with every entry's result checked;
//! message attributes `detector`, `entity` and `severity` for subscription filters;
//! FIFO topics get the entity as group id and the event id as deduplication id. While
//! SNS cannot be reached the alerts wait in the embedded store and go out, oldest first,
//! when it answers again. An alert SNS refuses for good (its fault code says the sender's:
//! a message too large, a bad FIFO group id) becomes a dead letter instead, so it cannot
//! hold up the spool behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use serde::{Deserialize, Serialize};

use crate::event::{now_ms, Alert};
use crate::service::telemetry::Metrics;
use crate::store::embedded::EmbeddedStore;

const BATCH: usize = 10;
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Spooled alerts sent per batch of new ones (oldest first).
const SPOOL_PER_BATCH: usize = 100;

/// `[sns]` in the service config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnsConfig {
    /// The topic alerts go to; unset: alerts only go to the log and the store. A topic
    /// whose name ends in `.fifo` is published to as a FIFO topic.
    pub topic_arn: Option<String>,
    /// At most one alert per entity within this much event time (ms).
    pub cooldown_ms: i64,
    /// At most this many alerts per minute in all; more are counted and dropped.
    pub max_per_minute: usize,
    /// How often (ms) alerts waiting for SNS are tried when no new batch carries them.
    pub spool_retry_ms: u64,
}

impl Default for SnsConfig {
    fn default() -> Self {
        SnsConfig { topic_arn: None, cooldown_ms: 60_000, max_per_minute: 120, spool_retry_ms: 5_000 }
    }
}

/// The message body: the scored event and one line for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub summary: String,
    pub severity: crate::event::Severity,
    pub event: crate::event::ScoredEvent,
}

pub struct SnsSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    fifo: bool,
    config: SnsConfig,
    /// Event time of each entity's last alert.
    last_alert: HashMap<(String, String), i64>,
    sent: VecDeque<Instant>,
    store: Arc<EmbeddedStore>,
    metrics: Arc<Metrics>,
}

/// What became of the alerts given to [`SnsSink::publish`], by index; the rest were
/// delivered.
#[derive(Debug, Default)]
struct Published {
    /// Refused for good, with SNS's reason.
    refused: Vec<(usize, String)>,
    /// Not taken: SNS unreachable or failing on its side.
    unsent: Vec<usize>,
}

fn attribute(value: &str) -> Option<MessageAttributeValue> {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().ok()
}

impl SnsSink {
    /// How often spooled alerts are tried when no batch comes.
    pub fn spool_retry(&self) -> Duration {
        Duration::from_millis(self.config.spool_retry_ms.max(100))
    }

    pub fn new(
        config: &SnsConfig,
        aws: &aws_config::SdkConfig,
        store: Arc<EmbeddedStore>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let topic_arn = config.topic_arn.clone()?;
        Some(SnsSink {
            client: aws_sdk_sns::Client::new(aws),
            fifo: topic_arn.ends_with(".fifo"),
            topic_arn,
            config: config.clone(),
            last_alert: HashMap::new(),
            sent: VecDeque::new(),
            store,
            metrics,
        })
    }

    /// Applies the cooldown and the rate cap, then publishes; what cannot be published
    /// now is spooled. Returns the alerts SNS refused for good (a message too large, a
    /// bad FIFO group id), with its reason: retrying them would block the spool behind
    /// them, so they go to the dead-letter store instead.
    pub async fn send(&mut self, alerts: &[Alert]) -> Vec<(Alert, String)> {
        let mut due = Vec::new();
        for alert in alerts {
            let key = (alert.event.detector.clone(), alert.event.entity.clone());
            let cooled = self
                .last_alert
                .get(&key)
                .is_none_or(|last| alert.event.event_ms.saturating_sub(*last) >= self.config.cooldown_ms);
            let minute_ago = Instant::now().checked_sub(Duration::from_secs(60));
            while self.sent.front().is_some_and(|t| minute_ago.is_some_and(|m| *t < m)) {
                self.sent.pop_front();
            }
            if !cooled || self.sent.len() >= self.config.max_per_minute {
                self.metrics.error("sns", if cooled { "rate_capped" } else { "cooldown" });
                continue;
            }
            self.last_alert.insert(key, alert.event.event_ms);
            self.sent.push_back(Instant::now());
            due.push(alert.clone());
        }
        let mut refused = Vec::new();
        // Spooled alerts first (oldest first), while SNS answers.
        let spooled = self.store.spooled_alerts(SPOOL_PER_BATCH).unwrap_or_default();
        if !spooled.is_empty() {
            let (keys, old): (Vec<u64>, Vec<Alert>) = spooled.into_iter().unzip();
            let published = self.publish(&old).await;
            // Delivered and refused ones leave the spool; those SNS did not take stay.
            let done: Vec<u64> =
                keys.iter().enumerate().filter(|(i, _)| !published.unsent.contains(i)).map(|(_, &k)| k).collect();
            if let Err(e) = self.store.unspool_alerts(&done) {
                tracing::error!(error = %e, "could not clear published alerts from the spool");
            }
            refused.extend(published.refused.into_iter().map(|(i, reason)| (old[i].clone(), reason)));
            if !published.unsent.is_empty() {
                self.spool(&due);
                self.count_refused(&refused);
                return refused;
            }
        }
        let published = self.publish(&due).await;
        if !published.unsent.is_empty() {
            tracing::warn!(count = published.unsent.len(), "SNS unreachable; alerts spooled until it answers");
            let unsent: Vec<Alert> = published.unsent.iter().map(|&i| due[i].clone()).collect();
            self.spool(&unsent);
        }
        refused.extend(published.refused.into_iter().map(|(i, reason)| (due[i].clone(), reason)));
        self.count_refused(&refused);
        refused
    }

    fn count_refused(&self, refused: &[(Alert, String)]) {
        if !refused.is_empty() {
            tracing::warn!(count = refused.len(), "SNS refused alerts for good; they go to the dead letters");
            self.metrics.errors("sns", "refused", refused.len());
        }
    }

    fn spool(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        // Counted per alert, as the cooldown and the rate cap count theirs.
        self.metrics.errors("sns", "spooled", alerts.len());
        if let Err(e) = self.store.spool_alerts(alerts) {
            tracing::error!(error = %e, count = alerts.len(), "could not spool alerts; they are only in the journal");
        }
    }

    /// Publishes `alerts`, retrying the entries SNS failed on its side, and says which
    /// it refused for good and which it did not take (unreachable, or still failing).
    async fn publish(&self, alerts: &[Alert]) -> Published {
        let mut published = Published::default();
        for (c, chunk) in alerts.chunks(BATCH).enumerate() {
            let base = c * BATCH;
            let mut pending = Vec::new();
            for (i, alert) in chunk.iter().enumerate() {
                match self.entry(i, alert) {
                    Some(entry) => pending.push((i, entry)),
                    None => published.refused.push((base + i, "the alert could not be made an SNS message".into())),
                }
            }
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                if pending.is_empty() {
                    break;
                }
                let entries = pending.iter().map(|(_, entry)| entry.clone()).collect();
                let request = self.client.publish_batch().topic_arn(&self.topic_arn);
                let failed = match request.set_publish_batch_request_entries(Some(entries)).send().await {
                    Ok(out) => out.failed.unwrap_or_default(),
                    Err(e) if attempt == ATTEMPTS => {
                        // Unreachable: this chunk and the rest wait for the next try.
                        tracing::warn!(error = %aws_sdk_sns::error::DisplayErrorContext(e), "SNS unreachable");
                        published.unsent.extend(pending.iter().map(|(i, _)| base + i));
                        published.unsent.extend(base + chunk.len()..alerts.len());
                        return published;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                };
                let now = now_ms();
                // Entry ids are the alerts' indices in the chunk.
                let failed_at: Vec<Option<usize>> = failed.iter().map(|f| f.id.parse().ok()).collect();
                for (i, _) in pending.iter().filter(|(i, _)| !failed_at.contains(&Some(*i))) {
                    let delay = now.saturating_sub(chunk[*i].event.event_ms).max(0) as f64 / 1000.0;
                    self.metrics.notification_delay_seconds.observe(delay);
                }
                let mut retry = Vec::new();
                for (failure, failed_at) in failed.into_iter().zip(failed_at) {
                    let Some(at) = pending.iter().position(|(i, _)| Some(*i) == failed_at) else {
                        continue;
                    };
                    let (i, entry) = pending.swap_remove(at);
                    if failure.sender_fault {
                        let message = failure.message.unwrap_or_default();
                        published
                            .refused
                            .push((base + i, format!("SNS refused the alert: {} {message}", failure.code)));
                    } else {
                        retry.push((i, entry));
                    }
                }
                pending = retry;
                if !pending.is_empty() && attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            published.unsent.extend(pending.iter().map(|(i, _)| base + i));
        }
        published
    }

    fn entry(&self, id: usize, alert: &Alert) -> Option<PublishBatchRequestEntry> {
        let body = Message { summary: alert.summary.clone(), severity: alert.severity, event: alert.event.clone() };
        let severity = serde_json::to_value(alert.severity).ok()?.as_str()?.to_owned();
        let mut entry = PublishBatchRequestEntry::builder()
            .id(id.to_string())
            .message(serde_json::to_string(&body).ok()?)
            // Subjects are printable ASCII, under 100 characters.
            .subject(
                alert.summary.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(99).collect::<String>(),
            )
            .message_attributes("detector", attribute(&alert.event.detector)?)
            .message_attributes("entity", attribute(&alert.event.entity)?)
            .message_attributes("severity", attribute(&severity)?);
        if self.fifo {
            // Deduplication ids allow at most 128 characters.
            let dedup: String = alert.event.id.chars().filter(|c| c.is_ascii_graphic()).take(128).collect();
            entry = entry.message_group_id(&alert.event.entity).message_deduplication_id(dedup);
        }
        entry.build().ok()
    }
}
