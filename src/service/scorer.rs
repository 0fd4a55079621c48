//! The detector stage of the service: takes records from any source, scores each with
//! its entity's model (through the registry), and hands the scored events, alerts and
//! dead letters to the sinks. Scoring is synchronous (callers run it off the async
//! threads); delivery is async, so a slow sink slows the sources instead of growing a
//! queue.
//!
//! The models are split by (detector, entity) into shards, each a registry of its own,
//! and a batch scores each shard's records on its own thread: one entity's records stay
//! in order in one shard, and a batch of many entities uses every core.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::live::{LiveSnapshot, LiveView};
use super::telemetry::Metrics;
use crate::detector::config::Detector;
use crate::detector::registry::{Processed, Registry, RegistryError, RegistryStats};
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
/// Smaller batches score their shards one after the other on the calling thread: a
/// thread costs tens of microseconds to start, the time of a few records.
const PARALLEL_RECORDS: usize = 64;

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
    shards: Vec<Shard>,
    live: Mutex<LiveView>,
    metrics: Arc<Metrics>,
    sink: queue::Sender,
    /// Makes the ids of records that bring neither an id nor a source position unique.
    next_id: AtomicU64,
}

/// One shard's registry, and its model gauges as of its last batch (so that a batch
/// reports the totals without locking the other shards).
struct Shard {
    registry: Mutex<Registry>,
    resident: AtomicUsize,
    memory_bytes: AtomicUsize,
    /// When `memory_bytes` was last measured (ms): it walks every model, so at most
    /// once per [`MEMORY_GAUGE_EVERY_MS`], not on every batch of 100k resident models.
    memory_measured_ms: AtomicI64,
}

const MEMORY_GAUGE_EVERY_MS: i64 = 1_000;

/// Why a record was not scored, with the record (for the dead letter).
type Failed = Box<(RecordError, Record)>;
/// A record's outcome: its event, or why not.
type Scored = Result<ScoredEvent, Failed>;

/// What scoring one shard's part of a batch gave.
struct ShardOutcome {
    /// Per record, its index in the batch and its outcome.
    scored: Vec<(usize, Scored)>,
    /// The first feature of each detector scored (what the live page charts).
    features: Vec<(String, String)>,
    /// Seconds each record took, observed after the batch: the histogram takes a lock,
    /// which the shards' threads would contend for on every record.
    score_seconds: Vec<f64>,
    before: RegistryStats,
    after: RegistryStats,
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
    /// A scorer over `registries`, one shard each (see [`Registry::shards`]).
    pub fn new(registries: Vec<Registry>, metrics: Arc<Metrics>, sink: queue::Sender) -> Self {
        let shards = registries
            .into_iter()
            .map(|registry| Shard {
                resident: AtomicUsize::new(registry.resident()),
                memory_bytes: AtomicUsize::new(registry.models_memory_bytes()),
                memory_measured_ms: AtomicI64::new(i64::MIN),
                registry: Mutex::new(registry),
            })
            .collect();
        Scorer { shards, live: Mutex::new(LiveView::default()), metrics, sink, next_id: AtomicU64::new(0) }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn shard_of(&self, detector: &str, entity: &str) -> usize {
        // SipHash with fixed keys: the same shard for the same entity in every run.
        let mut hasher = std::hash::DefaultHasher::new();
        (detector, entity).hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// The registry that holds `entity`'s model of `detector`, for model inspection.
    pub fn registry_of(&self, detector: &str, entity: &str) -> MutexGuard<'_, Registry> {
        lock(&self.shards[self.shard_of(detector, entity)].registry)
    }

    /// Applies `change` to every shard's registry (detector management, flushing). All
    /// are locked first, so no batch sees a detector on some shards and not others.
    pub fn each_registry<T, E>(&self, change: impl FnMut(&mut Registry) -> Result<T, E>) -> Result<Vec<T>, E> {
        let mut registries: Vec<_> = self.shards.iter().map(|shard| lock(&shard.registry)).collect();
        registries.iter_mut().map(|registry| &mut **registry).map(change).collect()
    }

    /// Detector `name` (every shard has the same detectors).
    pub fn detector(&self, name: &str) -> Option<Detector> {
        self.shards.first().and_then(|shard| lock(&shard.registry).detector(name).cloned())
    }

    pub fn detectors(&self) -> Vec<Detector> {
        self.shards.first().map_or(Vec::new(), |shard| lock(&shard.registry).detectors().into_iter().cloned().collect())
    }

    /// Scores `records` from `origin` in order: one result per record (the index of its
    /// event in the delivery, or why it was not scored), and what the sinks must get
    /// (see [`Scorer::deliver`]).
    pub fn score(&self, origin: &str, records: Vec<Record>) -> (Vec<Result<usize, RecordError>>, Delivery) {
        self.metrics.records_received(origin, records.len());
        let ingested_at = now_ms();
        let count = records.len();
        let mut by_shard: Vec<Vec<(usize, Record)>> = self.shards.iter().map(|_| Vec::new()).collect();
        for (i, record) in records.into_iter().enumerate() {
            by_shard[self.shard_of(&record.detector, &record.entity)].push((i, record));
        }
        let mut jobs: Vec<(usize, Vec<(usize, Record)>)> =
            by_shard.into_iter().enumerate().filter(|(_, records)| !records.is_empty()).collect();
        let outcomes: Vec<ShardOutcome> = if jobs.len() < 2 || count < PARALLEL_RECORDS {
            jobs.into_iter().map(|(shard, records)| self.score_shard(shard, records, ingested_at)).collect()
        } else {
            // This thread takes the first shard, a scoped thread each of the others.
            let (shard, records) = jobs.remove(0);
            std::thread::scope(|scope| {
                let others: Vec<_> = jobs
                    .into_iter()
                    .map(|(shard, records)| scope.spawn(move || self.score_shard(shard, records, ingested_at)))
                    .collect();
                let mut outcomes = vec![self.score_shard(shard, records, ingested_at)];
                for other in others {
                    match other.join() {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                outcomes
            })
        };

        // Back in the batch's order.
        let mut slots: Vec<Option<Scored>> = (0..count).map(|_| None).collect();
        let mut features: Vec<(String, String)> = Vec::new();
        let (mut before, mut after) = (RegistryStats::default(), RegistryStats::default());
        for outcome in outcomes {
            for (i, scored) in outcome.scored {
                slots[i] = Some(scored);
            }
            features.extend(outcome.features);
            for seconds in outcome.score_seconds {
                self.metrics.score_seconds.observe(seconds);
            }
            for (total, part) in [(&mut before, outcome.before), (&mut after, outcome.after)] {
                total.created += part.created;
                total.evicted += part.evicted;
                total.restored += part.restored;
            }
        }
        let mut delivery = Delivery { events: Vec::with_capacity(count), ..Delivery::default() };
        let mut results = Vec::with_capacity(count);
        // Counted per batch: a labelled counter costs a lookup per bump.
        let mut scored: Vec<(String, u64, u64)> = Vec::new();
        let mut live = lock(&self.live);
        for outcome in slots.into_iter().flatten() {
            match outcome {
                Ok(event) => {
                    let feature = features.iter().find(|(d, _)| *d == event.detector).map_or("", |(_, f)| f.as_str());
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
        let (resident, memory_bytes) = self.model_gauges();
        self.metrics.models_observed(resident, memory_bytes, after, before);
        for (detector, n, anomalies) in scored {
            self.metrics.records_scored(&detector, n, anomalies);
        }
        for alert in &delivery.alerts {
            self.metrics.alert_raised(alert);
        }
        (results, delivery)
    }

    /// Resident models and their bytes, over all shards.
    fn model_gauges(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(resident, bytes), shard| {
            (resident + shard.resident.load(Ordering::Relaxed), bytes + shard.memory_bytes.load(Ordering::Relaxed))
        })
    }

    /// Scores one shard's records, in order.
    fn score_shard(&self, shard: usize, records: Vec<(usize, Record)>, ingested_at: i64) -> ShardOutcome {
        let shard = &self.shards[shard];
        let mut registry = lock(&shard.registry);
        let before = registry.stats();
        let mut features: Vec<(String, String)> = Vec::new();
        let mut score_seconds = Vec::with_capacity(records.len());
        let mut scored = Vec::with_capacity(records.len());
        for (i, record) in records {
            let outcome = self.score_one(&mut registry, record, ingested_at).map(|(event, feature, seconds)| {
                if !features.iter().any(|(d, _)| *d == event.detector) {
                    features.push((event.detector.clone(), feature.to_owned()));
                }
                score_seconds.push(seconds);
                event
            });
            scored.push((i, outcome));
        }
        shard.resident.store(registry.resident(), Ordering::Relaxed);
        if ingested_at.saturating_sub(shard.memory_measured_ms.load(Ordering::Relaxed)) >= MEMORY_GAUGE_EVERY_MS {
            shard.memory_bytes.store(registry.models_memory_bytes(), Ordering::Relaxed);
            shard.memory_measured_ms.store(ingested_at, Ordering::Relaxed);
        }
        ShardOutcome { scored, features, score_seconds, before, after: registry.stats() }
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
    ) -> Result<(ScoredEvent, &'r str, f64), Failed> {
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
            // Read again after a crash: the sinks get it again (its id makes that an
            // overwrite), the model does not learn it again.
            Ok(Processed::AlreadyLearned(output)) => {
                self.metrics.record_replayed();
                output
            }
            Err(e) => return Err(Box::new((e.into(), record))),
        };
        let seconds = started.elapsed().as_secs_f64();
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
        Ok((event, features.first().map_or("", String::as_str), seconds))
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
        let models = self.model_gauges().0 as u64;
        lock(&self.live).snapshot(now_ms(), models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::config::DetectorConfig;
    use crate::store::embedded::EmbeddedStore;

    fn scorer(shards: usize, name: &str) -> Scorer {
        let detector = DetectorConfig::from_toml("name = \"d\"\nentity_key = [\"id\"]\nfeatures = [\"v\"]\n")
            .and_then(|c| c.validate())
            .expect("valid");
        let path = std::env::temp_dir().join(format!("rcfd-scorer-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
        let (sink, _queued) = queue::queue(queue::DEFAULT_CAPACITY);
        Scorer::new(Registry::shards(vec![detector], 100, store, shards), Arc::new(Metrics::default()), sink)
    }

    fn batch(step: usize) -> Vec<Record> {
        (0..600)
            .map(|i| {
                let (entity, t) = (i % 6, step * 100 + i / 6);
                let spike = t % 97 == 50 && entity == 2;
                let value = if spike { 110.0 } else { 10.0 + ((t * 7 + entity * 3) % 11) as f64 };
                Record {
                    detector: if i == 333 { "nope".into() } else { "d".into() },
                    entity: format!("e{entity}"),
                    event_ms: 1_000 + t as i64,
                    values: [("v".to_owned(), value)].into_iter().collect(),
                    id: Some(format!("r{step}-{i}")),
                    source: None,
                }
            })
            .collect()
    }

    #[test]
    fn a_batch_split_over_shards_scores_as_one_registry_would_in_the_batch_order() {
        let (one, three) = (scorer(1, "one"), scorer(3, "three"));
        for step in 0..4 {
            let (a, delivery_a) = one.score("test", batch(step));
            let (b, delivery_b) = three.score("test", batch(step));
            assert_eq!(a, b, "the same results in the same order");
            assert!(matches!(a[333], Err(RecordError::UnknownDetector(_))), "one bad record fails alone");
            let ids: Vec<&str> = delivery_b.events.iter().map(|e| e.id.as_str()).collect();
            let expected: Vec<String> = (0..600).filter(|&i| i != 333).map(|i| format!("r{step}-{i}")).collect();
            assert_eq!(ids, expected, "events in the batch's order");
            let scores = |d: &Delivery| d.events.iter().map(|e| e.anomaly_score).collect::<Vec<_>>();
            assert_eq!(scores(&delivery_a), scores(&delivery_b), "each entity's model saw its records in order");
            assert_eq!(delivery_a.alerts.len(), delivery_b.alerts.len());
            assert_eq!(delivery_b.dead_letters.len(), 1);
        }
        let (resident, memory_bytes) = three.model_gauges();
        assert_eq!(resident, 6, "every entity has one model, in one shard");
        assert!(memory_bytes > 6 * 10_000, "measured on the first batch: {memory_bytes}");
        assert_eq!(three.live().series.len(), 6, "the live page charts every entity");
    }
}
