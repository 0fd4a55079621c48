//! Alerts to Amazon SNS: one per anomaly region per entity (the detector marks the
//! region's first record), at most one per entity per cooldown and at most a global
//! number per minute. PublishBatch (10 per call) with every entry's result checked;
//! message attributes `detector`, `entity` and `severity` for subscription filters;
//! FIFO topics get the entity as group id and the event id as deduplication id. While
//! SNS cannot be reached the alerts wait in the embedded store and go out, oldest first,
//! when it answers again.

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
    /// now is spooled.
    pub async fn send(&mut self, alerts: &[Alert]) {
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
        // Spooled alerts first (oldest first), while SNS answers.
        let spooled = self.store.spooled_alerts(SPOOL_PER_BATCH).unwrap_or_default();
        if !spooled.is_empty() {
            let (keys, old): (Vec<u64>, Vec<Alert>) = spooled.into_iter().unzip();
            if self.publish(&old).await.is_ok() {
                if let Err(e) = self.store.unspool_alerts(&keys) {
                    tracing::error!(error = %e, "could not clear published alerts from the spool");
                }
            } else {
                self.spool(&due);
                return;
            }
        }
        if let Err(e) = self.publish(&due).await {
            tracing::warn!(error = %e, count = due.len(), "SNS unreachable; alerts spooled until it answers");
            self.spool(&due);
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

    /// Publishes all of `alerts` (retrying failed entries) or says why not.
    async fn publish(&self, alerts: &[Alert]) -> Result<(), String> {
        for chunk in alerts.chunks(BATCH) {
            let mut pending: Vec<&Alert> = chunk.iter().collect();
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let entries = pending.iter().enumerate().filter_map(|(i, a)| self.entry(i, a)).collect();
                let result = self
                    .client
                    .publish_batch()
                    .topic_arn(&self.topic_arn)
                    .set_publish_batch_request_entries(Some(entries))
                    .send()
                    .await;
                let failed: Vec<usize> = match result {
                    Ok(out) => out.failed.unwrap_or_default().iter().filter_map(|f| f.id.parse().ok()).collect(),
                    Err(e) => {
                        if attempt == ATTEMPTS {
                            return Err(aws_sdk_sns::error::DisplayErrorContext(e).to_string());
                        }
                        (0..pending.len()).collect()
                    }
                };
                let now = now_ms();
                for (i, alert) in pending.iter().enumerate() {
                    if !failed.contains(&i) {
                        let delay = now.saturating_sub(alert.event.event_ms).max(0) as f64 / 1000.0;
                        self.metrics.notification_delay_seconds.observe(delay);
                    }
                }
                pending = failed.iter().filter_map(|&i| pending.get(i).copied()).collect();
                if pending.is_empty() {
                    break;
                }
                if attempt == ATTEMPTS {
                    return Err(format!("{} alerts refused by SNS", pending.len()));
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Ok(())
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
