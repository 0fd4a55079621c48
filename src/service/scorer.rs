//! The detector stage of the service: takes records from any source, scores each with
//! its entity's model (through the registry), and hands the scored events, alerts and
//! dead letters to the sinks. Scoring is synchronous (callers run it off the async
//! threads); delivery is async, so a slow sink slows the sources instead of growing a
//! queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::live::{LiveSnapshot, LiveView};
use super::telemetry::Metrics;
use crate::detector::config::Detector;
use crate::detector::registry::{Processed, Registry, RegistryError};
use crate::event::{now_ms, Alert, Attribution, DeadLetter, Record, ScoredEvent};
use crate::sink::queue;

/// Why one record was not scored. The message names the field, the value and what is
/// allowed; the kind is its metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("detector: unknown detector `{0}`")]
    UnknownDetector(String),
    #[error("entity: must not be empty")]
    EmptyEntity,
    #[error("values.{name}: not a feature of detector `{detector}` (its features: {features})")]
    UnknownFeature { name: String, detector: String, features: String },
    #[error("values: feature `{name}` is missing (send NaN to have it imputed)")]
    MissingFeature { name: String },
    #[error("values.{name} = {value}: infinite values are not allowed (NaN marks a missing value)")]
    Infinite { name: String, value: f64 },
    #[error("event_time_ms: {0}")]
    Late(String),
    #[error("already learned: the model's snapshot includes this record's source position")]
    AlreadyLearned,
    #[error("internal: {0}")]
    Internal(String),
}

impl RecordError {
    /// The `error_type` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::UnknownDetector(_) => "unknown_detector",
            RecordError::EmptyEntity => "empty_entity",
            RecordError::UnknownFeature { .. } => "unknown_feature",
            RecordError::MissingFeature { .. } => "missing_feature",
            RecordError::Infinite { .. } => "infinite_value",
            RecordError::Late(_) => "late",
            RecordError::AlreadyLearned => "already_learned",
            RecordError::Internal(_) => "internal",
        }
    }
}

impl From<RegistryError> for RecordError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownDetector(name) => RecordError::UnknownDetector(name),
            RegistryError::EmptyEntity => RecordError::EmptyEntity,
            RegistryError::Late { .. } => RecordError::Late(e.to_string()),
            other => RecordError::Internal(other.to_string()),
        }
    }
}

/// Batches up to this many records are scored without a hand-off to the blocking pool:
/// tens of microseconds, less than the hand-off itself.
const INLINE_RECORDS: usize = 16;

/// What one scoring call hands to the sinks.
#[derive(Debug, Default)]
pub struct Delivery {
    pub events: Vec<ScoredEvent>,
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<DeadLetter>,
    /// Told once every sink has the delivery (so a source may checkpoint past it).
    pub ack: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct Scorer {
    registry: Mutex<Registry>,
    live: Mutex<LiveView>,
    metrics: Arc<Metrics>,
    sink: queue::Sender,
    /// Makes the ids of records that bring neither an id nor a source position unique.
    next_id: AtomicU64,
}

/// Takes a lock even if a thread panicked while holding it: the registry and the
/// live view stay consistent between records, which is all a later caller needs.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The record's values in the detector's feature order.
fn feature_values(record: &Record, detector: &Detector) -> Result<Vec<f64>, RecordError> {
    if let Some(name) = record.values.keys().find(|name| !detector.features.contains(name)) {
        return Err(RecordError::UnknownFeature {
            name: name.clone(),
            detector: detector.name.clone(),
            features: detector.features.join(", "),
        });
    }
    detector
        .features
        .iter()
        .map(|name| match record.values.get(name) {
            None => Err(RecordError::MissingFeature { name: name.clone() }),
            Some(v) if v.is_infinite() => Err(RecordError::Infinite { name: name.clone(), value: *v }),
            Some(v) => Ok(*v),
        })
        .collect()
}

impl Scorer {
    pub fn new(registry: Registry, metrics: Arc<Metrics>, sink: queue::Sender) -> Self {
        Scorer {
            registry: Mutex::new(registry),
            live: Mutex::new(LiveView::default()),
            metrics,
            sink,
            next_id: AtomicU64::new(0),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The registry, for detector management and model inspection.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Scores `records` from `origin` in order: one result per record (the index of its
    /// event in the delivery, or why it was not scored), and what the sinks must get
    /// (see [`Scorer::deliver`]).
    pub fn score(&self, origin: &str, records: Vec<Record>) -> (Vec<Result<usize, RecordError>>, Delivery) {
        self.metrics.records_received(origin, records.len());
        let ingested_at = now_ms();
        let mut delivery = Delivery { events: Vec::with_capacity(records.len()), ..Delivery::default() };
        let mut results = Vec::with_capacity(records.len());
        // Counted per batch: a labelled counter costs a lookup per bump.
        let mut scored: Vec<(String, u64, u64)> = Vec::new();
        let mut registry = lock(&self.registry);
        let before = registry.stats();
        let mut live = lock(&self.live);
        for record in records {
            match self.score_one(&mut registry, record, ingested_at) {
                Ok((event, feature)) => {
                    live.observe(&event, feature, ingested_at);
                    match scored.iter_mut().find(|(d, _, _)| *d == event.detector) {
                        Some((_, n, anomalies)) => {
                            *n += 1;
                            *anomalies += u64::from(event.is_anomaly);
                        }
                        None => scored.push((event.detector.clone(), 1, u64::from(event.is_anomaly))),
                    }
                    if event.is_anomaly && event.starts_region {
                        delivery.alerts.push(Alert::of(&event));
                    }
                    results.push(Ok(delivery.events.len()));
                    delivery.events.push(event);
                }
                Err(failed) if matches!(failed.0, RecordError::AlreadyLearned) => {
                    results.push(Err(RecordError::AlreadyLearned))
                }
                Err(failed) => {
                    let (e, record) = *failed;
                    let letter = DeadLetter {
                        origin: origin.to_owned(),
                        raw: serde_json::to_vec(&record).unwrap_or_default(),
                        source: record.source,
                        reason: e.to_string(),
                        at_ms: ingested_at,
                    };
                    self.metrics.record_rejected(&letter, e.kind());
                    live.error_seen();
                    delivery.dead_letters.push(letter);
                    results.push(Err(e));
                }
            }
        }
        drop(live);
        self.metrics.models_observed(registry.resident(), registry.models_memory_bytes(), registry.stats(), before);
        drop(registry);
        for (detector, n, anomalies) in scored {
            self.metrics.records_scored(&detector, n, anomalies);
        }
        for alert in &delivery.alerts {
            self.metrics.alert_raised(alert);
        }
        (results, delivery)
    }

    /// [`Scorer::score`] from async code. A few records are scored in place (with
    /// `block_in_place`, so a wait for the registry lock held by a big batch does not
    /// stall other tasks); a batch goes to the blocking pool.
    pub async fn score_async(
        self: &Arc<Self>,
        origin: &str,
        records: Vec<Record>,
    ) -> Result<(Vec<Result<usize, RecordError>>, Delivery), tokio::task::JoinError> {
        let multi_thread =
            tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        if records.len() <= INLINE_RECORDS && multi_thread {
            return Ok(tokio::task::block_in_place(|| self.score(origin, records)));
        }
        let (scorer, origin) = (self.clone(), origin.to_owned());
        tokio::task::spawn_blocking(move || scorer.score(&origin, records)).await
    }

    /// Scores one record; on failure gives the record back for the dead letter.
    fn score_one<'r>(
        &self,
        registry: &'r mut Registry,
        record: Record,
        ingested_at: i64,
    ) -> Result<(ScoredEvent, &'r str), Box<(RecordError, Record)>> {
        let Some(detector) = registry.detector(&record.detector) else {
            return Err(Box::new((RecordError::UnknownDetector(record.detector.clone()), record)));
        };
        let values = match feature_values(&record, detector) {
            Ok(values) => values,
            Err(e) => return Err(Box::new((e, record))),
        };
        let event_ms = if record.event_ms == 0 { ingested_at } else { record.event_ms };
        let started = Instant::now();
        let output = match registry.process(&record.detector, &record.entity, event_ms, &values, record.source.as_ref())
        {
            Ok(Processed::Scored(output)) => output,
            Ok(Processed::AlreadyLearned) => return Err(Box::new((RecordError::AlreadyLearned, record))),
            Err(e) => return Err(Box::new((e.into(), record))),
        };
        self.metrics.score_seconds.observe(started.elapsed().as_secs_f64());
        let id = match (&record.source, &record.id) {
            (Some(p), _) => format!("{}/{}/{}", p.stream, p.shard, p.sequence),
            (None, Some(id)) => id.clone(),
            (None, None) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                format!("{}/{}/{event_ms}/{ingested_at}-{n}", record.detector, record.entity)
            }
        };
        // Scoring succeeded, so the detector exists.
        let features: &[String] = registry.detector(&record.detector).map_or(&[], |d| d.features.as_slice());
        let by_feature =
            |v: &[f64]| -> BTreeMap<String, f64> { features.iter().cloned().zip(v.iter().copied()).collect() };
        let event = ScoredEvent {
            id,
            event_ms,
            ingested_at,
            detector: record.detector,
            entity: record.entity,
            values: record.values,
            anomaly_score: output.anomaly_score,
            anomaly_grade: output.anomaly_grade,
            confidence: output.confidence,
            is_anomaly: output.is_anomaly,
            learning: output.learning,
            starts_region: output.starts_region,
            attribution: features.iter().cloned().zip(output.attribution.iter().map(Attribution::from)).collect(),
            expected_values: by_feature(&output.expected_values),
            steps_back: output.steps_back,
            source: record.source,
        };
        Ok((event, features.first().map_or("", String::as_str)))
    }

    /// Hands a delivery to the sinks; waits while they are behind.
    pub async fn deliver(&self, delivery: Delivery) {
        if delivery.events.is_empty() && delivery.dead_letters.is_empty() {
            if let Some(ack) = delivery.ack {
                let _ = ack.send(());
            }
            return;
        }
        if self.sink.send(delivery).await.is_err() {
            // Only after shutdown closed the sinks; nothing is in flight to lose then.
            self.metrics.error("deliver", "sink_closed");
        }
    }

    pub fn live(&self) -> LiveSnapshot {
        let models = lock(&self.registry).resident() as u64;
        lock(&self.live).snapshot(now_ms(), models)
    }
}
