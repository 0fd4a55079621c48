//! The service's metrics (Prometheus text at `/metrics`) and its internal events: one
//! function per event, named `<Noun><Verb>`, that logs once and bumps its counter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::detector::registry::RegistryStats;
use crate::event::{Alert, DeadLetter};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorLabels {
    pub detector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub stream: String,
    pub shard: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub stage: String,
    pub error_type: String,
}

pub struct Metrics {
    registry: Registry,
    pub records_received: Family<SourceLabels, Counter>,
    pub records_scored: Family<DetectorLabels, Counter>,
    /// Records read again after a restart that their model had already learned.
    pub records_replayed: Counter,
    pub anomalies: Family<DetectorLabels, Counter>,
    pub alerts: Family<DetectorLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub models_resident: Gauge,
    pub models_memory_bytes: Gauge,
    pub models_created: Counter,
    pub models_evicted: Counter,
    pub models_restored: Counter,
    /// Seconds to score and learn one record.
    pub score_seconds: Histogram,
    pub millis_behind_latest: Family<ShardLabels, Gauge>,
    /// Seconds from an alert's event time to SNS acknowledging it.
    pub notification_delay_seconds: Histogram,
    pub shards_owned: Family<SourceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rcfd");
        let metrics = Metrics {
            records_received: Family::default(),
            records_scored: Family::default(),
            records_replayed: Counter::default(),
            anomalies: Family::default(),
            alerts: Family::default(),
            errors: Family::default(),
            models_resident: Gauge::default(),
            models_memory_bytes: Gauge::default(),
            models_created: Counter::default(),
            models_evicted: Counter::default(),
            models_restored: Counter::default(),
            // 1 µs to about 0.5 s.
            score_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 20)),
            millis_behind_latest: Family::default(),
            // 10 ms to about 3 hours.
            notification_delay_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 20)),
            shards_owned: Family::default(),
            registry: Registry::default(),
        };
        registry.register("records_received", "Records taken in, by source", metrics.records_received.clone());
        registry.register("records_scored", "Records scored, by detector", metrics.records_scored.clone());
        registry.register(
            "records_replayed",
            "Records read again (after a crash) that their model had already learned: scored by a copy \
             of the model and sent to the sinks again, not learned twice; also counted in records_scored",
            metrics.records_replayed.clone(),
        );
        registry.register("anomalies", "Records flagged as anomalies, by detector", metrics.anomalies.clone());
        registry.register("alerts", "Alerts raised (one per anomaly region), by detector", metrics.alerts.clone());
        registry.register("errors", "Records or requests that failed, by stage and error type", metrics.errors.clone());
        registry.register("models_resident", "Models in memory", metrics.models_resident.clone());
        registry.register("models_memory_bytes", "Bytes the resident models hold", metrics.models_memory_bytes.clone());
        registry.register("models_created", "Models created for new entities", metrics.models_created.clone());
        registry.register("models_evicted", "Models evicted to the snapshot store", metrics.models_evicted.clone());
        registry.register(
            "models_restored",
            "Models restored from the snapshot store",
            metrics.models_restored.clone(),
        );
        registry.register(
            "score_duration_seconds",
            "Time to score and learn one record",
            metrics.score_seconds.clone(),
        );
        registry.register(
            "millis_behind_latest",
            "How far a shard reader is behind the stream's tip (ms)",
            metrics.millis_behind_latest.clone(),
        );
        registry.register(
            "shards_owned",
            "Shards whose lease this instance holds, by stream",
            metrics.shards_owned.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Brings the model gauges and counters up to the registry's figures.
    pub fn models_observed(&self, resident: usize, memory_bytes: usize, now: RegistryStats, before: RegistryStats) {
        self.models_resident.set(resident as i64);
        self.models_memory_bytes.set(memory_bytes as i64);
        self.models_created.inc_by(now.created.saturating_sub(before.created));
        self.models_evicted.inc_by(now.evicted.saturating_sub(before.evicted));
        self.models_restored.inc_by(now.restored.saturating_sub(before.restored));
    }

    pub fn records_received(&self, source: &str, count: usize) {
        self.records_received.get_or_create(&SourceLabels { source: source.into() }).inc_by(count as u64);
    }

    /// `count` records of `detector` scored, `anomalies` of them flagged.
    pub fn records_scored(&self, detector: &str, count: u64, anomalies: u64) {
        let labels = DetectorLabels { detector: detector.into() };
        self.records_scored.get_or_create(&labels).inc_by(count);
        if anomalies > 0 {
            self.anomalies.get_or_create(&labels).inc_by(anomalies);
        }
    }

    /// A record read again that its model had already learned: at debug, since after a
    /// crash every record since the last checkpoint may be one.
    pub fn record_replayed(&self) {
        tracing::debug!("record read again; its model had learned it already");
        self.records_replayed.inc();
    }

    /// A record that could not be scored: logged at debug (a bad client could flood the
    /// log), counted, and kept as a dead letter by the caller.
    pub fn record_rejected(&self, letter: &DeadLetter, error_type: &str) {
        tracing::debug!(origin = %letter.origin, reason = %letter.reason, "record rejected");
        self.error("score", error_type);
    }

    pub fn alert_raised(&self, alert: &Alert) {
        tracing::warn!(
            detector = %alert.event.detector,
            entity = %alert.event.entity,
            severity = ?alert.severity,
            "{}",
            alert.summary
        );
        self.alerts.get_or_create(&DetectorLabels { detector: alert.event.detector.clone() }).inc();
    }

    pub fn error(&self, stage: &str, error_type: &str) {
        self.errors(stage, error_type, 1);
    }

    /// [`Metrics::error`] for `count` items at once (alerts spooled in one go, say).
    pub fn errors(&self, stage: &str, error_type: &str, count: usize) {
        let labels = ErrorLabels { stage: stage.into(), error_type: error_type.into() };
        self.errors.get_or_create(&labels).inc_by(count as u64);
    }
}
