//! The detector stage of the service: takes records from any source, scores each with
//! its entity's model (through the registry), and hands the scored events, alerts and
//! dead letters to the sinks. Scoring is synchronous (callers run it off the async
//! threads); delivery is async, so a slow sink slows the sources instead of growing a
//! queue.
//!
//! A call lends its models out of the registry, lets go of the registry while it
//! scores them, and gives them back: calls on other entities score at the same time,
//! and a call that needs a model another has out waits for it, so each entity's
//! records are still learned one call after the other. A batch splits its models over
//! threads by their number of records: one entity's records stay in order on one
//! thread, and a batch of many entities uses every core, evenly loaded even when it
//! holds only a few entities.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::live::{LiveSnapshot, LiveView};
use super::telemetry::Metrics;
use crate::detector::config::Detector;
use crate::detector::registry::{Lent, Processed, Registry, RegistryError, RegistryStats};
use crate::event::{now_ms, Alert, Attribution, DeadLetter, Record, ScoredEvent};
use crate::forest::{too_large, MAX_MAGNITUDE};
use crate::sink::queue;
use crate::store::snapshot::ModelKey;

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
    #[error("values.{name} = {value:e}: magnitudes above {limit:e} are not allowed", limit = MAX_MAGNITUDE)]
    TooLarge { name: String, value: f64 },
    #[error("event_time_ms: {0}")]
    Late(String),
    #[error("event_time_ms: {0}")]
    Future(String),
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
            RecordError::TooLarge { .. } => "value_too_large",
            RecordError::Late(_) => "late",
            RecordError::Future(_) => "future",
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
            RegistryError::Future { .. } => RecordError::Future(e.to_string()),
            other => RecordError::Internal(other.to_string()),
        }
    }
}

/// Batches up to this many records are scored without a hand-off to the blocking pool:
/// tens of microseconds, less than the hand-off itself.
const INLINE_RECORDS: usize = 16;
/// How long a call scored in place spins for the registry (or a model another call
/// has out) before it waits through `block_in_place`. Calls hold them for a few
/// microseconds, yet with two workers 3-5% of unary calls found them taken, and each
/// such hand-off of a worker's tasks to another thread cost more than the call.
/// Unary `Score` paced at 5,000 calls/s on two cores (`cargo bench --bench grpc`, five
/// alternated pairs on 2026-12-06): p99 0.87-4.5 ms, median 1.77 ms, without the spin;
/// 0.63-1.50 ms, median 0.94 ms, with it. Then 1 call in 2,000 still waits
/// longer. The unary peak rose from 8.6-12.5k (median 10.5k) to 11.2-17.1k (median
/// 16k) calls/s.
const SPIN: Duration = Duration::from_micros(100);
/// Smaller batches score all their models on the calling thread: waking the helper
/// costs tens of microseconds, the time of a few records. Measured (2026-12-05, 8
/// entities, 50 trees x 256, p50 per batch, one thread against two): 16 records 78 vs
/// 105 us, 32 records 146 vs 141-160, 48 records 217-225 vs 220-223, 64 records
/// 275-308 vs 251-276, 128 records 524-577 vs 369-409. Two threads win from 64.
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
    registry: Mutex<Registry>,
    /// Signalled when lent models come back and someone waits (see [`Scorer::registry_when`]).
    returned: Condvar,
    /// Threads waiting on `returned`, changed and read under the registry's lock: a
    /// notification is a system call, which most calls need not make.
    waiting: AtomicUsize,
    /// The registry's counts as last reported to the metrics (under the registry's lock).
    reported: Mutex<RegistryStats>,
    /// Detectors an update or a delete is waiting to change (see
    /// [`Scorer::registry_to_change`]); no call lends their models meanwhile.
    /// (A count per detector: two changes of one detector may wait at once.)
    changing: Mutex<HashMap<String, usize>>,
    /// The calls waiting for models, by detector and entity: their tickets in arrival
    /// order. A call lends its models only when it is first in line for each, so one
    /// entity's records are learned in the order their calls came, and a call that
    /// needs many models is not overtaken for ever by calls that need one of them.
    /// Changed under the registry's lock.
    lines: Mutex<HashMap<String, HashMap<String, VecDeque<u64>>>>,
    next_ticket: AtomicU64,
    /// Threads one batch's models are scored on: the caller's and `helpers`.
    threads: usize,
    /// Threads that sleep between batches. A thread spawned for every batch started
    /// 0.8 ms late at the median and 3.7 ms at the 90th percentile (the kernel put it
    /// behind the caller on the caller's core), so one thread often scored most of the
    /// batch; a sleeping thread is woken on an idle core.
    helpers: Option<rayon::ThreadPool>,
    live: Mutex<LiveView>,
    metrics: Arc<Metrics>,
    sink: queue::Sender,
    /// Makes the ids of records that bring neither an id nor a source position unique.
    next_id: AtomicU64,
    /// The model gauges as of the last batch, so that the live page and the metrics
    /// read them without waiting for the registry while a batch is scored.
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

/// A valid record (its index in the batch, and its values in feature order).
type Valid = (usize, Record, Vec<f64>);

/// One model's records of a batch, in order, with the model lent for them.
struct Work {
    detector: Arc<Detector>,
    model: Lent,
    records: Vec<Valid>,
}

/// The models a call has out. Should scoring panic (a bug), they are written off as it
/// unwinds, so that later calls on their entities do not wait for them forever.
struct Outstanding<'a> {
    scorer: &'a Scorer,
    keys: Vec<ModelKey>,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut registry = self.scorer.registry();
        self.keys.iter().for_each(|key| registry.write_off(key));
        self.scorer.returned.notify_all();
    }
}

/// What one thread's share of a batch gave: each record's outcome by its index in
/// the batch, the models to give back, and the seconds each record took (observed
/// after the batch: the histogram takes a lock the threads would contend for).
#[derive(Default)]
struct Share {
    scored: Vec<(usize, Scored)>,
    models: Vec<Lent>,
    score_seconds: Vec<f64>,
}

/// `count` helper threads, or none (then a batch is scored on the caller's thread).
fn helper_pool(count: usize) -> Option<rayon::ThreadPool> {
    if count == 0 {
        return None;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(count).thread_name(|i| format!("rcfd-scorer-{i}")).build();
    match pool {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the scorer's helper threads; batches score on one thread");
            None
        }
    }
}

/// Takes a lock even if a thread panicked while holding it: the registry and the
/// live view stay consistent between records, which is all a later caller needs.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `parts` as one string. Every event gets an id, and building it with `format!` took
/// 3.5% of a batch's CPU in the gRPC bench (perf); plain copies are what is left.
fn joined(parts: &[&str]) -> String {
    let mut id = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| id.push_str(p));
    id
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
            Some(v) if too_large(*v) => Err(RecordError::TooLarge { name: name.clone(), value: *v }),
            Some(v) => Ok(*v),
        })
        .collect()
}

impl Scorer {
    /// A scorer over `registry` that scores a batch's models on up to `threads` threads.
    pub fn new(mut registry: Registry, threads: usize, metrics: Arc<Metrics>, sink: queue::Sender) -> Self {
        Scorer {
            resident: AtomicUsize::new(registry.resident()),
            memory_bytes: AtomicUsize::new(registry.models_memory_bytes()),
            memory_measured_ms: AtomicI64::new(i64::MIN),
            reported: Mutex::new(registry.stats()),
            registry: Mutex::new(registry),
            returned: Condvar::new(),
            changing: Mutex::new(HashMap::new()),
            lines: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            threads: threads.max(1),
            helpers: helper_pool(threads.max(1) - 1),
            live: Mutex::new(LiveView::default()),
            metrics,
            sink,
            next_id: AtomicU64::new(0),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The registry (creating and reading detectors). Scoring holds it only to lend
    /// and give back models; what must not miss a lent model waits with
    /// [`Scorer::registry_when`].
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// The registry if no one holds it.
    fn try_registry(&self) -> Option<MutexGuard<'_, Registry>> {
        match self.registry.try_lock() {
            Ok(registry) => Some(registry),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The registry with `ready` holding of it, if that comes within [`SPIN`]. The
    /// usual wait is for another call's few microseconds with the registry or with a
    /// model, and spinning through it costs less than the `block_in_place` the caller
    /// falls back to.
    fn registry_soon(&self, ready: impl Fn(&Registry) -> bool) -> Option<MutexGuard<'_, Registry>> {
        let deadline = Instant::now() + SPIN;
        loop {
            if let Some(registry) = self.try_registry().filter(|registry| ready(registry)) {
                return Some(registry);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Between tries, leave the lock to the holder for a moment.
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }

    /// The registry, for a call that may run on a tokio worker (one scored in place).
    /// Another call usually holds it for microseconds, which a spin covers (see
    /// [`SPIN`]); but it may hold it for a while, evicting a model to disk or
    /// restoring one. The wait then goes through `block_in_place`, which hands the
    /// worker's other tasks to another thread instead of holding them up too.
    fn registry_from_anywhere(&self) -> MutexGuard<'_, Registry> {
        self.registry_soon(|_| true).unwrap_or_else(|| {
            let on_worker = tokio::runtime::Handle::try_current()
                .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if on_worker {
                tokio::task::block_in_place(|| self.registry())
            } else {
                self.registry()
            }
        })
    }

    /// The registry once `ready` holds of it (say, no model of a detector is lent out).
    pub fn registry_when(&self, ready: impl Fn(&Registry) -> bool) -> MutexGuard<'_, Registry> {
        self.wait_until(self.registry(), ready)
    }

    fn wait_until<'a>(
        &'a self,
        mut registry: MutexGuard<'a, Registry>,
        ready: impl Fn(&Registry) -> bool,
    ) -> MutexGuard<'a, Registry> {
        while !ready(&registry) {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            registry = self.returned.wait(registry).unwrap_or_else(|poisoned| poisoned.into_inner());
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        registry
    }

    /// The registry once the model of `entity` is not lent out (to inspect, snapshot
    /// or restore it).
    pub fn registry_for_model(&self, detector: &str, entity: &str) -> MutexGuard<'_, Registry> {
        self.registry_when(|registry| !registry.is_lent(detector, entity))
    }

    /// The registry once no model of `detector` is lent out, to replace or remove it.
    /// Calls that would lend one of its models wait meanwhile, so that this wait ends
    /// even while records of the detector keep coming.
    pub fn registry_to_change(&self, detector: &str) -> MutexGuard<'_, Registry> {
        *lock(&self.changing).entry(detector.to_owned()).or_default() += 1;
        let registry = self.registry_when(|registry| !registry.lends_any(Some(detector)));
        {
            let mut changing = lock(&self.changing);
            if let Some(waiting) = changing.get_mut(detector) {
                *waiting -= 1;
                if *waiting == 0 {
                    changing.remove(detector);
                }
            }
        }
        // The calls held back wake once this guard is dropped.
        self.returned.notify_all();
        registry
    }

    /// Whether every model `records` need can be lent now without waiting: none is
    /// out, no call is in line for it, and none belongs to a detector about to change.
    fn models_at_hand(&self, registry: &Registry, records: &[Record]) -> bool {
        let (changing, lines) = (lock(&self.changing), lock(&self.lines));
        if !registry.lends_any(None) && changing.is_empty() && lines.is_empty() {
            // No lookups per record when nothing is out (a batch of thousands).
            return true;
        }
        records.iter().all(|record| {
            !registry.is_lent(&record.detector, &record.entity)
                && !changing.contains_key(&record.detector)
                && !lines.get(&record.detector).is_some_and(|line| line.contains_key(&record.entity))
        })
    }

    /// Waits, with `registry` locked, until the call with `ticket` may lend the models
    /// of `wanted`: it is first in line for each, none is out, and no detector of
    /// theirs is about to change. Then it leaves the lines.
    fn wait_in_line<'a>(
        &'a self,
        registry: MutexGuard<'a, Registry>,
        wanted: &[(String, String)],
        ticket: u64,
    ) -> MutexGuard<'a, Registry> {
        {
            let mut lines = lock(&self.lines);
            for (detector, entity) in wanted {
                lines.entry(detector.clone()).or_default().entry(entity.clone()).or_default().push_back(ticket);
            }
        }
        let registry = self.wait_until(registry, |registry| {
            let (changing, lines) = (lock(&self.changing), lock(&self.lines));
            wanted.iter().all(|(detector, entity)| {
                !registry.is_lent(detector, entity)
                    && !changing.contains_key(detector)
                    && lines.get(detector).and_then(|line| line.get(entity)).and_then(VecDeque::front) == Some(&ticket)
            })
        });
        let mut lines = lock(&self.lines);
        for (detector, entity) in wanted {
            if let Some(line) = lines.get_mut(detector) {
                if let Some(tickets) = line.get_mut(entity) {
                    tickets.pop_front();
                    if tickets.is_empty() {
                        line.remove(entity);
                    }
                }
                if line.is_empty() {
                    lines.remove(detector);
                }
            }
        }
        // The next in line may be a call whose models this one will not lend (its
        // records failed validation): it must not wait for a give-back.
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.returned.notify_all();
        }
        registry
    }

    /// Writes every model to the snapshot store, once none is lent out (at shutdown).
    pub fn flush(&self) -> Result<(), RegistryError> {
        self.registry_when(|registry| !registry.lends_any(None)).flush()
    }

    pub fn detector(&self, name: &str) -> Option<Detector> {
        self.registry().detector(name).cloned()
    }

    pub fn detectors(&self) -> Vec<Detector> {
        self.registry().detectors().into_iter().cloned().collect()
    }

    /// Scores `records` from `origin` in order: one result per record (the index of its
    /// event in the delivery, or why it was not scored), and what the sinks must get
    /// (see [`Scorer::deliver`]).
    ///
    /// Each model of the batch is lent out of the registry and the models are split
    /// over threads by their number of records: a batch of many entities uses every
    /// core, and each entity's records are still scored in order by one thread.
    pub fn score(&self, origin: &str, records: Vec<Record>) -> (Vec<Result<usize, RecordError>>, Delivery) {
        self.score_with(self.registry(), false, origin, records)
    }

    /// [`Scorer::score`] with the registry already locked, and `at_hand` if the caller
    /// found with it locked that the models are at hand (see [`Scorer::models_at_hand`]).
    fn score_with(
        &self,
        registry: MutexGuard<'_, Registry>,
        at_hand: bool,
        origin: &str,
        records: Vec<Record>,
    ) -> (Vec<Result<usize, RecordError>>, Delivery) {
        self.metrics.records_received(origin, records.len());
        // All of this call's models at once, in line with the other calls: a call
        // holding some while waiting for others could wait for a call that waits for it.
        // With nobody in line for them and none out, no line is needed (the usual case).
        let mut registry = if at_hand || self.models_at_hand(&registry, &records) {
            registry
        } else {
            let wanted: Vec<(String, String)> = {
                let distinct: HashSet<(&str, &str)> =
                    records.iter().map(|r| (r.detector.as_str(), r.entity.as_str())).collect();
                distinct.into_iter().map(|(d, e)| (d.to_owned(), e.to_owned())).collect()
            };
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            self.wait_in_line(registry, &wanted, ticket)
        };
        let ingested_at = now_ms();
        let count = records.len();
        let mut slots: Vec<Option<Scored>> = (0..count).map(|_| None).collect();
        // The first feature of each detector scored (what the live page charts).
        let mut features: Vec<(String, String)> = Vec::new();

        // Validate each record against its detector, and group the valid ones by model.
        let mut groups: Vec<Vec<Valid>> = Vec::new();
        {
            // Detector -> entity -> group, so that finding a record's group copies nothing.
            let mut by_model: HashMap<String, HashMap<String, usize>> = HashMap::new();
            for (i, record) in records.into_iter().enumerate() {
                let Some(detector) = registry.detector(&record.detector) else {
                    slots[i] = Some(Err(Box::new((RecordError::UnknownDetector(record.detector.clone()), record))));
                    continue;
                };
                let values = match feature_values(&record, detector) {
                    Ok(values) => values,
                    Err(e) => {
                        slots[i] = Some(Err(Box::new((e, record))));
                        continue;
                    }
                };
                if !features.iter().any(|(d, _)| *d == detector.name) {
                    features.push((detector.name.clone(), detector.features.first().cloned().unwrap_or_default()));
                }
                let group = match by_model.get(&record.detector).and_then(|entities| entities.get(&record.entity)) {
                    Some(&group) => group,
                    None => {
                        groups.push(Vec::new());
                        let entities = by_model.entry(record.detector.clone()).or_default();
                        entities.insert(record.entity.clone(), groups.len() - 1);
                        groups.len() - 1
                    }
                };
                groups[group].push((i, record, values));
            }
        }
        // Lend each model out; a model that cannot be had fails its records.
        let mut lent = Vec::with_capacity(groups.len());
        for records in groups {
            let Some((_, first, _)) = records.first() else { continue };
            match registry.lend(&first.detector, &first.entity) {
                Ok(model) => lent.push((model, records)),
                Err(e) => {
                    let e = RecordError::from(e);
                    for (i, record, _) in records {
                        slots[i] = Some(Err(Box::new((e.clone(), record))));
                    }
                }
            }
        }
        let mut work: Vec<Work> = lent
            .into_iter()
            .map(|(model, records)| Work { detector: model.detector().clone(), model, records })
            .collect();
        // The models are ours until they go back: other calls may lend theirs meanwhile.
        drop(registry);
        let mut out = Outstanding { scorer: self, keys: work.iter().map(|w| w.model.key().clone()).collect() };
        let threads = if count < PARALLEL_RECORDS { 1 } else { self.threads.min(work.len()) };
        // The threads take models from one queue, largest first, until it is empty: a
        // thread that starts late or runs slower takes fewer, so the batch is not held up
        // by a fixed split.
        work.sort_by_key(|w| w.records.len());
        let queue = Mutex::new(work);
        let done: Vec<Share> = match &self.helpers {
            Some(helpers) if threads > 1 => {
                let shares = Mutex::new(Vec::with_capacity(threads));
                helpers.in_place_scope(|scope| {
                    for _ in 1..threads {
                        scope.spawn(|_| {
                            let share = self.score_queued(&queue, ingested_at);
                            lock(&shares).push(share);
                        });
                    }
                    let share = self.score_queued(&queue, ingested_at);
                    lock(&shares).push(share);
                });
                shares.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
            }
            _ => vec![self.score_queued(&queue, ingested_at)],
        };
        let mut score_seconds = Vec::with_capacity(count);
        let mut registry = self.registry_from_anywhere();
        // From here every model goes back (give_back does not panic), and a key written
        // off after this could be another call's by then.
        out.keys.clear();
        for share in done {
            for (i, scored) in share.scored {
                slots[i] = Some(scored);
            }
            for model in share.models {
                if let Err(e) = registry.give_back(model) {
                    // The records were scored; a model that could not be snapshotted
                    // on its way out starts afresh if its entity comes back.
                    tracing::warn!("evicting a model after a batch: {e}");
                    self.metrics.error("registry", "evict");
                }
            }
            score_seconds.extend(share.score_seconds);
        }
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.returned.notify_all();
        }
        let after = registry.stats();
        let before = std::mem::replace(&mut *lock(&self.reported), after);
        self.resident.store(registry.resident(), Ordering::Relaxed);
        if ingested_at.saturating_sub(self.memory_measured_ms.load(Ordering::Relaxed)) >= MEMORY_GAUGE_EVERY_MS {
            self.memory_bytes.store(registry.models_memory_bytes(), Ordering::Relaxed);
            self.memory_measured_ms.store(ingested_at, Ordering::Relaxed);
        }
        drop(registry);

        for seconds in score_seconds {
            self.metrics.score_seconds.observe(seconds);
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

    /// Resident models and their bytes.
    fn model_gauges(&self) -> (usize, usize) {
        (self.resident.load(Ordering::Relaxed), self.memory_bytes.load(Ordering::Relaxed))
    }

    /// Scores models from `queue` until it is empty, each model's records in order.
    fn score_queued(&self, queue: &Mutex<Vec<Work>>, ingested_at: i64) -> Share {
        let mut done = Share::default();
        loop {
            // Popped in a statement of its own, so the lock is not held while scoring.
            let next = lock(queue).pop();
            let Some(Work { detector, mut model, records }) = next else { break };
            for (i, record, values) in records {
                let outcome =
                    self.score_one(&detector, &mut model, record, &values, ingested_at).map(|(event, seconds)| {
                        done.score_seconds.push(seconds);
                        event
                    });
                done.scored.push((i, outcome));
            }
            done.models.push(model);
        }
        done
    }

    /// [`Scorer::score`] from async code. A few records are scored in place (with
    /// `block_in_place` if a batch holds the registry, so that the wait does not stall
    /// other tasks); a batch goes to the blocking pool.
    pub async fn score_async(
        self: &Arc<Self>,
        origin: &str,
        records: Vec<Record>,
    ) -> Result<(Vec<Result<usize, RecordError>>, Delivery), tokio::task::JoinError> {
        let multi_thread =
            tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        if records.len() <= INLINE_RECORDS && multi_thread {
            // With the registry free, a few records take tens of microseconds: less than
            // block_in_place handing this worker's other tasks to another thread.
            // A model another call has out may take a batch's time to come back: after
            // a short spin, the wait goes through block_in_place.
            let free = self.registry_soon(|registry| self.models_at_hand(registry, &records));
            return Ok(match free {
                Some(registry) => self.score_with(registry, true, origin, records),
                None => tokio::task::block_in_place(|| self.score(origin, records)),
            });
        }
        let (scorer, origin) = (self.clone(), origin.to_owned());
        tokio::task::spawn_blocking(move || scorer.score(&origin, records)).await
    }

    /// Scores one record with its model; on failure gives the record back for the
    /// dead letter.
    fn score_one(
        &self,
        detector: &Detector,
        model: &mut Lent,
        record: Record,
        values: &[f64],
        ingested_at: i64,
    ) -> Result<(ScoredEvent, f64), Failed> {
        let event_ms = if record.event_ms == 0 { ingested_at } else { record.event_ms };
        let started = Instant::now();
        let output = match model.process(event_ms, values, record.source.as_ref()) {
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
            (Some(p), _) => joined(&[&p.stream, "/", &p.shard, "/", &p.sequence]),
            (None, Some(id)) => id.clone(),
            (None, None) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let mut numbers = (itoa::Buffer::new(), itoa::Buffer::new(), itoa::Buffer::new());
                let (event_ms, ingested_at, n) =
                    (numbers.0.format(event_ms), numbers.1.format(ingested_at), numbers.2.format(n));
                joined(&[&record.detector, "/", &record.entity, "/", event_ms, "/", ingested_at, "-", n])
            }
        };
        let features = &detector.features;
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
        Ok((event, seconds))
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

    fn scorer(threads: usize, name: &str) -> Scorer {
        let detector = DetectorConfig::from_toml("name = \"d\"\nentity_key = [\"id\"]\nfeatures = [\"v\"]\n")
            .and_then(|c| c.validate())
            .expect("valid");
        let path = std::env::temp_dir().join(format!("rcfd-scorer-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
        // Unlinked at once: the open store keeps the file until the scorer goes, and
        // no run leaves one behind (a few MB each).
        let _ = std::fs::remove_file(&path);
        let (sink, _queued) = queue::queue(queue::DEFAULT_CAPACITY);
        Scorer::new(Registry::new(vec![detector], 100, store), threads, Arc::new(Metrics::default()), sink)
    }

    #[test]
    fn a_call_on_a_worker_waiting_for_the_registry_lets_the_workers_other_tasks_run() {
        let scorer = Arc::new(scorer(1, "from-anywhere"));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        // Held as an eviction to disk would hold it.
        let held = scorer.registry();
        let (started, waiting) = std::sync::mpsc::channel();
        let waiter = runtime.spawn({
            let scorer = scorer.clone();
            async move {
                let _ = started.send(());
                drop(scorer.registry_from_anywhere());
            }
        });
        waiting.recv().expect("the waiter started");
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The runtime's only worker is the waiter's; another task must still run.
        let (ran, other) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = ran.send(());
        });
        let other_ran = other.recv_timeout(std::time::Duration::from_secs(5)).is_ok();
        drop(held);
        runtime.block_on(waiter).expect("the waiter got the registry");
        assert!(other_ran, "a task on the waiting worker ran only once the registry was free");
    }

    #[test]
    fn a_call_spins_for_the_registry_only_for_a_moment() {
        let scorer = scorer(1, "soon");
        assert!(scorer.registry_soon(|_| true).is_some(), "a free registry is had at once");
        let held = scorer.registry();
        let started = Instant::now();
        assert!(std::thread::scope(|s| s.spawn(|| scorer.registry_soon(|_| true).is_none()).join().expect("spins")));
        assert!(started.elapsed() >= SPIN, "gave up after {:?}, before the spin's {SPIN:?}", started.elapsed());
        drop(held);
        assert!(scorer.registry_soon(|_| false).is_none(), "a registry that is not ready is not had");
    }

    /// One reading of `entity` for detector "d".
    fn record(entity: &str) -> Record {
        Record {
            detector: "d".into(),
            entity: entity.into(),
            event_ms: 1_000,
            values: [("v".to_owned(), 1.0)].into_iter().collect(),
            id: None,
            source: None,
        }
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
    fn records_without_an_id_or_a_source_position_get_unique_readable_ids() {
        let scorer = scorer(1, "ids");
        let record = |entity: &str| Record {
            detector: "d".into(),
            entity: entity.into(),
            event_ms: -1_700,
            values: [("v".to_owned(), 1.0)].into_iter().collect(),
            id: None,
            source: None,
        };
        let (_, delivery) = scorer.score("test", vec![record("e1"), record("e1"), record("e2")]);
        let ids: Vec<&str> = delivery.events.iter().map(|e| e.id.as_str()).collect();
        let ingested = delivery.events[0].ingested_at;
        assert_eq!(
            ids,
            [
                format!("d/e1/-1700/{ingested}-0"),
                format!("d/e1/-1700/{ingested}-1"),
                format!("d/e2/-1700/{ingested}-2")
            ]
        );
    }

    #[test]
    fn calls_at_the_same_time_learn_every_record_once_into_one_model_per_entity() {
        // Calls let go of the registry while they score: four threads of one-record
        // and 20-record calls, all on the same three entities.
        let scorer = Arc::new(scorer(1, "concurrent"));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let scorer = scorer.clone();
                std::thread::spawn(move || {
                    let mut sent = [0u64; 3];
                    for call in 0..150 {
                        let size = if call % 10 == 0 { 20 } else { 1 };
                        let records: Vec<Record> = (0..size)
                            .map(|i| {
                                let entity = (thread + call + i) % 3;
                                sent[entity] += 1;
                                Record {
                                    detector: "d".into(),
                                    entity: format!("e{entity}"),
                                    event_ms: 1_000,
                                    values: [("v".to_owned(), 10.0 + (call % 7) as f64)].into_iter().collect(),
                                    id: None,
                                    source: None,
                                }
                            })
                            .collect();
                        let (results, _) = scorer.score("test", records);
                        assert!(results.iter().all(Result::is_ok), "{results:?}");
                    }
                    sent
                })
            })
            .collect();
        let mut sent = [0u64; 3];
        for thread in threads {
            let counts = thread.join().expect("thread");
            (0..3).for_each(|e| sent[e] += counts[e]);
        }
        let mut registry = scorer.registry_when(|r| !r.lends_any(None));
        assert_eq!(registry.resident(), 3, "one model per entity");
        for (entity, &count) in sent.iter().enumerate() {
            let info = registry.model_info("d", &format!("e{entity}")).expect("model");
            assert_eq!(info.points_seen, count, "entity e{entity} learned each of its records once");
        }
    }

    #[test]
    fn a_detector_change_waits_for_its_lent_models_and_holds_back_new_calls_meanwhile() {
        let scorer = Arc::new(scorer(1, "change"));
        scorer.score("test", vec![record("e1"), record("e2")]);
        // A call that has e1 out for a long time.
        let out = scorer.registry().lend("d", "e1").expect("lent");
        let changer = {
            let scorer = scorer.clone();
            std::thread::spawn(move || {
                let mut registry = scorer.registry_to_change("d");
                let detector = registry.detector("d").cloned().expect("detector");
                registry.replace_detector(detector).expect("replaced")
            })
        };
        while !lock(&scorer.changing).contains_key("d") {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let caller = {
            let scorer = scorer.clone();
            std::thread::spawn(move || scorer.score("test", vec![record("e2")]).0)
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!changer.is_finished(), "the change waits for e1");
        assert!(!caller.is_finished(), "a call on e2 waits behind the change, or the change could wait forever");
        {
            let mut registry = scorer.registry();
            registry.give_back(out).expect("given back");
            scorer.returned.notify_all();
        }
        assert_eq!(changer.join().expect("changer"), 2, "both models of the old configuration deleted");
        assert!(caller.join().expect("caller")[0].is_ok());
        let info = scorer.registry().model_info("d", "e2").expect("model");
        assert_eq!(info.points_seen, 1, "the call after the change scored with a new model");
    }

    #[test]
    fn a_model_lost_to_a_panic_while_scoring_does_not_hold_its_entity_forever() {
        let scorer = Arc::new(scorer(1, "panic"));
        let record = record("e1");
        scorer.score("test", vec![record.clone()]);
        let panicked = {
            let scorer = scorer.clone();
            std::thread::spawn(move || {
                let lent = scorer.registry().lend("d", "e1").expect("lent");
                let _out = Outstanding { scorer: &scorer, keys: vec![lent.key().clone()] };
                panic!("a bug while scoring");
            })
            .join()
        };
        assert!(panicked.is_err());
        let (done, answer) = std::sync::mpsc::channel();
        let later = scorer.clone();
        std::thread::spawn(move || {
            let _ = done.send(later.score("test", vec![record]).0);
        });
        let results = answer.recv_timeout(std::time::Duration::from_secs(10)).expect("the next call on e1 is scored");
        assert!(results[0].is_ok());
    }

    #[test]
    fn calls_lend_in_the_order_they_came_so_a_call_on_many_models_is_not_overtaken() {
        let scorer = Arc::new(scorer(1, "line"));
        scorer.score("test", vec![record("e1"), record("e2")]);
        let out = scorer.registry().lend("d", "e1").expect("lent");
        let finished = Arc::new(Mutex::new(Vec::new()));
        let call = |name: &'static str, entities: Vec<&'static str>| {
            let (scorer, finished) = (scorer.clone(), finished.clone());
            std::thread::spawn(move || {
                let (results, _) = scorer.score("test", entities.into_iter().map(record).collect());
                assert!(results.iter().all(Result::is_ok), "{results:?}");
                lock(&finished).push(name);
            })
        };
        // In line for e1 (out) and e2 (free).
        let batch = call("batch", vec!["e1", "e2"]);
        while lock(&scorer.lines).get("d").is_none_or(|line| !line.contains_key("e2")) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // e2 is free, but the batch came first.
        let single = call("single", vec!["e2"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(lock(&finished).is_empty(), "the call on e2 waits behind the batch that needs it too");
        {
            let mut registry = scorer.registry();
            registry.give_back(out).expect("given back");
            scorer.returned.notify_all();
        }
        batch.join().expect("batch");
        single.join().expect("single");
        assert_eq!(lock(&finished).len(), 2);
        assert_eq!(scorer.registry().model_info("d", "e2").expect("model").points_seen, 3);
    }

    #[test]
    fn a_batch_split_over_threads_scores_as_one_thread_would_in_the_batch_order() {
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
        assert_eq!(resident, 6, "every entity has one model");
        assert!(memory_bytes > 6 * 10_000, "measured on the first batch: {memory_bytes}");
        assert_eq!(three.live().series.len(), 6, "the live page charts every entity");
    }
}
