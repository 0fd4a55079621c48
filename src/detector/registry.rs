//! The models of all entities, keyed by the full (detector, entity) key: created on an
//! entity's first record, capped in number, the least recently used evicted to the
//! snapshot store and restored when its entity comes back. Event time throughout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::config::Detector;
use super::model::{Model, ModelError, Output};
use crate::store::snapshot::{ModelKey, Snapshot, SnapshotStore, SourcePosition, StoreError};

/// Records may arrive this much older than their entity's latest event (ms) and still
/// be scored; older ones are rejected (and dead-lettered by the caller).
pub const DEFAULT_MAX_LATENESS_MS: i64 = 60_000;
/// Records may carry an event time this far ahead of the clock (ms); further ones are
/// rejected. One record in microseconds, or from a clock years ahead, would otherwise
/// become its entity's latest event and make every later record of it late.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// Which event times a record may have: at most `max_lateness_ms` before its entity's
/// latest, and not after `until_ms` (the clock when the bounds were taken, plus
/// `max_future_ms`).
#[derive(Debug, Clone, Copy)]
struct TimeBounds {
    max_lateness_ms: i64,
    max_future_ms: i64,
    until_ms: i64,
}

impl TimeBounds {
    fn now(max_lateness_ms: i64, max_future_ms: i64) -> Self {
        let until_ms = crate::event::now_ms().saturating_add(max_future_ms);
        TimeBounds { max_lateness_ms, max_future_ms, until_ms }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown detector `{0}`")]
    UnknownDetector(String),
    #[error("the entity key is empty")]
    EmptyEntity,
    #[error("detector `{0}` already exists")]
    DetectorExists(String),
    #[error("no model of detector `{detector}` for entity `{entity}`")]
    UnknownModel { detector: String, entity: String },
    /// The caller must wait for the model to come back (the scorer does).
    #[error("the model of detector `{detector}` for entity `{entity}` is being scored")]
    Lent { detector: String, entity: String },
    #[error("event time {event_ms} ms is {late_ms} ms before {entity}'s latest event; at most {max_ms} ms is allowed")]
    Late { entity: String, event_ms: i64, late_ms: i64, max_ms: i64 },
    #[error("event time {event_ms} ms is {ahead_ms} ms ahead of this machine's clock; at most {max_ms} ms is allowed (models.max_future_ms; a time in microseconds?)")]
    Future { event_ms: i64, ahead_ms: i64, max_ms: i64 },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Processed {
    Scored(Output),
    /// The model already learned this record (a replay after a restart): scored by a
    /// copy of the model, so that it is not learned twice.
    AlreadyLearned(Output),
}

/// What an inspection shows of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub points_seen: u64,
    pub memory_bytes: usize,
    pub last_score: f64,
    pub latest_event_ms: Option<i64>,
}

/// Counts a registry keeps (the service exports them as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub created: u64,
    pub evicted: u64,
    pub restored: u64,
}

struct Resident {
    model: Model,
    last_used: u64,
    positions: Vec<SourcePosition>,
    latest_event_ms: Option<i64>,
    last_score: f64,
    /// `model.memory_bytes()` as last measured (when loaded and at each
    /// [`Registry::models_memory_bytes`]): what the model counts for while it is lent.
    memory_bytes: usize,
}

impl Resident {
    fn fresh(model: Model) -> Self {
        let memory_bytes = model.memory_bytes();
        Resident { model, last_used: 0, positions: Vec::new(), latest_event_ms: None, last_score: 0.0, memory_bytes }
    }

    fn restored(snapshot: Snapshot, detector: &Detector) -> Result<Self, RegistryError> {
        let model = Model::restore(&snapshot.model, detector)?;
        Ok(Resident {
            memory_bytes: model.memory_bytes(),
            model,
            last_used: 0,
            positions: snapshot.positions,
            latest_event_ms: snapshot.latest_event_ms,
            last_score: snapshot.last_score,
        })
    }

    /// Scores and learns one record, unless its position shows it was learned before.
    fn process(
        &mut self,
        key: &ModelKey,
        event_ms: i64,
        values: &[f64],
        position: Option<&SourcePosition>,
        bounds: TimeBounds,
    ) -> Result<Processed, RegistryError> {
        let TimeBounds { max_lateness_ms, max_future_ms, until_ms } = bounds;
        if event_ms > until_ms {
            let ahead_ms = event_ms.saturating_sub(until_ms.saturating_sub(max_future_ms));
            return Err(RegistryError::Future { event_ms, ahead_ms, max_ms: max_future_ms });
        }
        if let Some(position) = position {
            if self.positions.iter().any(|learned| position.is_at_or_before(learned)) {
                // A snapshot (an eviction) can be durable before the sinks have the
                // record's batch; the source then reads it again after a crash, and the
                // sinks must still get it. A throwaway copy scores it: a copy costs the
                // model's size, and replays are only the records after a checkpoint.
                let output = self.model.clone().process(values)?;
                return Ok(Processed::AlreadyLearned(output));
            }
        }
        if let Some(latest) = self.latest_event_ms {
            // Both times are input: saturate rather than overflow on extreme ones.
            let late_ms = latest.saturating_sub(event_ms);
            if late_ms > max_lateness_ms {
                return Err(RegistryError::Late {
                    entity: key.entity.clone(),
                    event_ms,
                    late_ms,
                    max_ms: max_lateness_ms,
                });
            }
        }
        let output = self.model.process(values)?;
        self.last_score = output.anomaly_score;
        self.latest_event_ms = Some(self.latest_event_ms.map_or(event_ms, |l| l.max(event_ms)));
        if let Some(position) = position {
            self.positions.retain(|p| !(p.stream == position.stream && p.shard == position.shard));
            self.positions.push(position.clone());
        }
        Ok(Processed::Scored(output))
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            points_seen: self.model.forest().points_seen(),
            memory_bytes: self.model.memory_bytes(),
            last_score: self.last_score,
            latest_event_ms: self.latest_event_ms,
        }
    }
}

/// A model out of the registry for a batch (see [`Registry::lend`]).
pub struct Lent {
    key: ModelKey,
    resident: Resident,
    /// The detector as it was when the model was lent.
    detector: Arc<Detector>,
    /// The registry's bounds on event times as of the lending: a batch takes
    /// milliseconds, and reading the clock per record would cost more than the check.
    bounds: TimeBounds,
}

impl Lent {
    pub fn key(&self) -> &ModelKey {
        &self.key
    }

    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// [`Registry::process`] on this model.
    pub fn process(
        &mut self,
        event_ms: i64,
        values: &[f64],
        position: Option<&SourcePosition>,
    ) -> Result<Processed, RegistryError> {
        self.resident.process(&self.key, event_ms, values, position, self.bounds)
    }
}

pub struct Registry {
    /// Shared with the lent models, so that a model coming back can tell whether its
    /// detector was replaced or removed while it was out.
    detectors: HashMap<String, Arc<Detector>>,
    /// The resident models, but for those lent out.
    models: HashMap<ModelKey, Resident>,
    /// The entities whose models are lent out, by detector (no empty maps), with the
    /// models' memory as last measured.
    lent: HashMap<String, HashMap<String, usize>>,
    /// last_used -> key, to find the least recently used model in O(log n).
    recency: BTreeMap<u64, ModelKey>,
    clock: u64,
    capacity: usize,
    max_lateness_ms: i64,
    max_future_ms: i64,
    store: Arc<dyn SnapshotStore>,
    stats: RegistryStats,
}

impl Registry {
    /// A registry of at most `capacity` resident models (at least 1).
    pub fn new(detectors: Vec<Detector>, capacity: usize, store: Arc<dyn SnapshotStore>) -> Self {
        Registry {
            detectors: detectors.into_iter().map(|d| (d.name.clone(), Arc::new(d))).collect(),
            models: HashMap::new(),
            lent: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            max_lateness_ms: DEFAULT_MAX_LATENESS_MS,
            max_future_ms: DEFAULT_MAX_FUTURE_MS,
            store,
            stats: RegistryStats::default(),
        }
    }

    pub fn with_max_lateness_ms(mut self, max_lateness_ms: i64) -> Self {
        self.max_lateness_ms = max_lateness_ms;
        self
    }

    pub fn with_max_future_ms(mut self, max_future_ms: i64) -> Self {
        self.max_future_ms = max_future_ms;
        self
    }

    /// Resident models, counting those lent out.
    pub fn resident(&self) -> usize {
        self.models.len() + self.lent_out()
    }

    /// How many models are lent out (a few at a time: one call's).
    fn lent_out(&self) -> usize {
        self.lent.values().map(HashMap::len).sum()
    }

    /// Whether the model of `entity` under `detector` is lent out.
    pub fn is_lent(&self, detector: &str, entity: &str) -> bool {
        self.lent.get(detector).is_some_and(|entities| entities.contains_key(entity))
    }

    /// Whether any model of `detector` (any model at all, for None) is lent out.
    pub fn lends_any(&self, detector: Option<&str>) -> bool {
        match detector {
            Some(detector) => self.lent.get(detector).is_some_and(|entities| !entities.is_empty()),
            None => !self.lent.is_empty(),
        }
    }

    pub fn stats(&self) -> RegistryStats {
        self.stats
    }

    /// The bytes the resident models hold (not counting the maps that index them),
    /// measured now, but for the models lent out, which count as last measured.
    pub fn models_memory_bytes(&mut self) -> usize {
        let resident: usize = self
            .models
            .values_mut()
            .map(|r| {
                r.memory_bytes = r.model.memory_bytes();
                r.memory_bytes
            })
            .sum();
        resident + self.lent.values().flat_map(HashMap::values).sum::<usize>()
    }

    /// Scores one record of `entity` under `detector` and learns it, unless its
    /// `position` shows the model has already learned it.
    pub fn process(
        &mut self,
        detector: &str,
        entity: &str,
        event_ms: i64,
        values: &[f64],
        position: Option<&SourcePosition>,
    ) -> Result<Processed, RegistryError> {
        let key = self.touch(detector, entity)?;
        let bounds = TimeBounds::now(self.max_lateness_ms, self.max_future_ms);
        let resident = self.models.get_mut(&key).ok_or(RegistryError::UnknownDetector(detector.to_owned()))?;
        resident.process(&key, event_ms, values, position, bounds)
    }

    /// Makes the model of `entity` resident (created or restored) and its most recent.
    fn touch(&mut self, detector: &str, entity: &str) -> Result<ModelKey, RegistryError> {
        if entity.is_empty() {
            return Err(RegistryError::EmptyEntity);
        }
        self.check_not_lent(detector, entity)?;
        let key = ModelKey { detector: detector.to_owned(), entity: entity.to_owned() };
        self.make_resident(&key)?;
        self.clock += 1;
        let clock = self.clock;
        if let Some(resident) = self.models.get_mut(&key) {
            self.recency.remove(&resident.last_used);
            self.recency.insert(clock, key.clone());
            resident.last_used = clock;
        }
        Ok(key)
    }

    fn check_not_lent(&self, detector: &str, entity: &str) -> Result<(), RegistryError> {
        if self.is_lent(detector, entity) {
            return Err(RegistryError::Lent { detector: detector.to_owned(), entity: entity.to_owned() });
        }
        Ok(())
    }

    /// Takes the model of `entity` out of the registry (created or restored as
    /// [`Registry::process`] would), so that it can be scored without holding the
    /// registry; [`Registry::give_back`] returns it. While it is out it cannot be
    /// evicted, inspected or lent again, and it counts against the capacity.
    pub fn lend(&mut self, detector: &str, entity: &str) -> Result<Lent, RegistryError> {
        let key = self.touch(detector, entity)?;
        let shared =
            self.detectors.get(detector).cloned().ok_or(RegistryError::UnknownDetector(detector.to_owned()))?;
        let resident = self.models.remove(&key).ok_or(RegistryError::UnknownDetector(detector.to_owned()))?;
        self.recency.remove(&resident.last_used);
        self.lent.entry(key.detector.clone()).or_default().insert(key.entity.clone(), resident.memory_bytes);
        let bounds = TimeBounds::now(self.max_lateness_ms, self.max_future_ms);
        Ok(Lent { key, resident, detector: shared, bounds })
    }

    /// Returns a model from [`Registry::lend`]; if more models were lent than the
    /// capacity holds, the least recently used go to the snapshot store now. A model
    /// whose detector was replaced or removed while it was out is dropped: it belongs
    /// to a configuration that no longer exists.
    pub fn give_back(&mut self, lent: Lent) -> Result<(), RegistryError> {
        let Lent { key, resident, detector, .. } = lent;
        self.write_off(&key);
        if !self.detectors.get(&key.detector).is_some_and(|current| Arc::ptr_eq(current, &detector)) {
            return Ok(());
        }
        self.recency.insert(resident.last_used, key.clone());
        self.models.insert(key, resident);
        while self.models.len() + self.lent_out() > self.capacity && !self.recency.is_empty() {
            self.evict_least_recent()?;
        }
        Ok(())
    }

    /// Forgets that the model of `key` is lent out, without it coming back: a caller
    /// that lost it (it panicked while scoring) lets its entity start again from its
    /// last snapshot, or afresh, as after a crash.
    pub fn write_off(&mut self, key: &ModelKey) {
        if let Some(entities) = self.lent.get_mut(&key.detector) {
            entities.remove(&key.entity);
            if entities.is_empty() {
                self.lent.remove(&key.detector);
            }
        }
    }

    /// Loads or creates the model of `key`, evicting the least recently used one if full.
    fn make_resident(&mut self, key: &ModelKey) -> Result<(), RegistryError> {
        if self.models.contains_key(key) {
            return Ok(());
        }
        let detector =
            self.detectors.get(&key.detector).ok_or_else(|| RegistryError::UnknownDetector(key.detector.clone()))?;
        let resident = match self.store.get(key)? {
            Some(snapshot) => {
                self.stats.restored += 1;
                Resident::restored(snapshot, detector)?
            }
            None => {
                self.stats.created += 1;
                Resident::fresh(Model::new(detector))
            }
        };
        self.insert(key, resident)
    }

    fn insert(&mut self, key: &ModelKey, resident: Resident) -> Result<(), RegistryError> {
        if let Some(old) = self.models.remove(key) {
            self.recency.remove(&old.last_used);
        }
        if self.models.len() + self.lent_out() >= self.capacity {
            self.evict_least_recent()?;
        }
        self.clock += 1;
        self.recency.insert(self.clock, key.clone());
        self.models.insert(key.clone(), Resident { last_used: self.clock, ..resident });
        Ok(())
    }

    fn evict_least_recent(&mut self) -> Result<(), RegistryError> {
        let Some((&tick, _)) = self.recency.iter().next() else {
            return Ok(());
        };
        let Some(key) = self.recency.remove(&tick) else {
            return Ok(());
        };
        if let Some(resident) = self.models.remove(&key) {
            self.store.put(&key, &Self::snapshot(&resident)?)?;
            self.stats.evicted += 1;
        }
        Ok(())
    }

    fn snapshot(resident: &Resident) -> Result<Snapshot, RegistryError> {
        Ok(Snapshot {
            model: resident.model.snapshot()?,
            positions: resident.positions.clone(),
            latest_event_ms: resident.latest_event_ms,
            last_score: resident.last_score,
        })
    }

    pub fn detector(&self, name: &str) -> Option<&Detector> {
        self.detectors.get(name).map(|d| &**d)
    }

    /// Every detector, by name.
    pub fn detectors(&self) -> Vec<&Detector> {
        let mut all: Vec<&Detector> = self.detectors.values().map(|d| &**d).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Adds a detector that does not exist yet.
    pub fn create_detector(&mut self, detector: Detector) -> Result<(), RegistryError> {
        if self.detectors.contains_key(&detector.name) {
            return Err(RegistryError::DetectorExists(detector.name));
        }
        self.detectors.insert(detector.name.clone(), Arc::new(detector));
        Ok(())
    }

    /// Replaces (or adds) a detector. Its models are deleted: a forest trained on other
    /// features or parameters cannot go on under the new configuration.
    pub fn replace_detector(&mut self, detector: Detector) -> Result<u64, RegistryError> {
        let deleted = self.delete_models(&detector.name)?;
        self.detectors.insert(detector.name.clone(), Arc::new(detector));
        Ok(deleted)
    }

    /// Removes a detector with its models and their snapshots; returns how many models.
    pub fn remove_detector(&mut self, name: &str) -> Result<u64, RegistryError> {
        if !self.detectors.contains_key(name) {
            return Err(RegistryError::UnknownDetector(name.to_owned()));
        }
        let deleted = self.delete_models(name)?;
        self.detectors.remove(name);
        Ok(deleted)
    }

    fn delete_models(&mut self, detector: &str) -> Result<u64, RegistryError> {
        let keys: Vec<ModelKey> = self.models.keys().filter(|k| k.detector == detector).cloned().collect();
        let mut deleted = 0;
        for key in &keys {
            if let Some(resident) = self.models.remove(key) {
                self.recency.remove(&resident.last_used);
                // A resident model may have a snapshot too (from an earlier eviction).
                self.store.delete(key)?;
                deleted += 1;
            }
        }
        Ok(deleted + self.store.delete_detector(detector)?)
    }

    /// The model of `detector` and `entity`, restored if it was evicted; an error if
    /// the entity has no model yet (inspection creates none).
    pub fn model_info(&mut self, detector: &str, entity: &str) -> Result<ModelInfo, RegistryError> {
        Ok(self.existing(detector, entity)?.info())
    }

    /// The model's whole state (model, source positions, latest event time) as bytes.
    pub fn snapshot_model(&mut self, detector: &str, entity: &str) -> Result<Vec<u8>, RegistryError> {
        let resident = self.existing(detector, entity)?;
        bincode::serialize(&Self::snapshot(resident)?).map_err(|e| ModelError::Snapshot(e.to_string()).into())
    }

    /// Replaces (or creates) a model from [`Registry::snapshot_model`] bytes.
    pub fn restore_model(&mut self, detector: &str, entity: &str, bytes: &[u8]) -> Result<ModelInfo, RegistryError> {
        if entity.is_empty() {
            return Err(RegistryError::EmptyEntity);
        }
        self.check_not_lent(detector, entity)?;
        let config = self.detectors.get(detector).ok_or_else(|| RegistryError::UnknownDetector(detector.to_owned()))?;
        let snapshot: Snapshot = bincode::deserialize(bytes).map_err(|e| ModelError::Snapshot(e.to_string()))?;
        let resident = Resident::restored(snapshot, config)?;
        let info = resident.info();
        let key = ModelKey { detector: detector.to_owned(), entity: entity.to_owned() };
        self.insert(&key, resident)?;
        Ok(info)
    }

    /// The resident model of an entity that has one (restored if need be).
    fn existing(&mut self, detector: &str, entity: &str) -> Result<&Resident, RegistryError> {
        if !self.detectors.contains_key(detector) {
            return Err(RegistryError::UnknownDetector(detector.to_owned()));
        }
        self.check_not_lent(detector, entity)?;
        let unknown = || RegistryError::UnknownModel { detector: detector.to_owned(), entity: entity.to_owned() };
        let key = ModelKey { detector: detector.to_owned(), entity: entity.to_owned() };
        if !self.models.contains_key(&key) && self.store.get(&key)?.is_none() {
            return Err(unknown());
        }
        self.make_resident(&key)?;
        self.models.get(&key).ok_or_else(unknown)
    }

    /// Writes every resident model to the snapshot store (at shutdown).
    pub fn flush(&self) -> Result<(), RegistryError> {
        for (key, resident) in &self.models {
            self.store.put(key, &Self::snapshot(resident)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::config::DetectorConfig;
    use crate::store::embedded::EmbeddedStore;

    fn detector() -> Detector {
        let text = "name = \"iot\"\nentity_key = [\"iotName\"]\nfeatures = [\"iotValue\"]\n[forest]\ntrees = 20\nsample_size = 64\n";
        DetectorConfig::from_toml(text).expect("parses").validate().expect("valid")
    }

    fn store(name: &str) -> (Arc<EmbeddedStore>, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("rcfd-registry-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        (Arc::new(EmbeddedStore::open(&path).expect("store")), path)
    }

    fn at(sequence: u64) -> SourcePosition {
        SourcePosition { stream: "iot".into(), shard: "shardId-000000000000".into(), sequence: sequence.to_string() }
    }

    /// Three sensors, interleaved: sensor k reads 10k + (i mod 7), with a spike now and then.
    fn reading(i: usize) -> (String, f64) {
        let sensor = i % 3;
        let value = if i.is_multiple_of(997) { 500.0 } else { 10.0 * sensor as f64 + (i % 7) as f64 };
        (format!("sensor-{sensor}"), value)
    }

    #[test]
    fn eviction_and_restore_change_no_score() {
        let (small_store, small_path) = store("small");
        let (large_store, large_path) = store("large");
        let mut small = Registry::new(vec![detector()], 2, small_store);
        let mut large = Registry::new(vec![detector()], 100, large_store);
        for i in 0..3_000 {
            let (entity, value) = reading(i);
            let a = small.process("iot", &entity, i as i64, &[value], Some(&at(i as u64))).expect("small");
            let b = large.process("iot", &entity, i as i64, &[value], Some(&at(i as u64))).expect("large");
            assert_eq!(a, b, "record {i}");
        }
        assert_eq!(small.resident(), 2);
        let stats = small.stats();
        assert_eq!(stats.created, 3);
        assert!(stats.evicted > 1_000 && stats.restored == stats.evicted - 1, "{stats:?}");
        assert_eq!(large.stats(), RegistryStats { created: 3, evicted: 0, restored: 0 });
        let _ = std::fs::remove_file(small_path);
        let _ = std::fs::remove_file(large_path);
    }

    #[test]
    fn a_lent_model_is_not_lent_twice_and_goes_away_if_its_detector_changed_meanwhile() {
        let (store, path) = store("lent-twice");
        let mut registry = Registry::new(vec![detector()], 10, store);
        let mut lent = registry.lend("iot", "sensor-1").expect("lent");
        lent.process(1, &[20.0], None).expect("scored");
        assert!(registry.is_lent("iot", "sensor-1") && registry.lends_any(Some("iot")));
        // A second copy would learn half the records each; the caller must wait instead.
        assert!(matches!(registry.lend("iot", "sensor-1"), Err(RegistryError::Lent { .. })));
        assert!(matches!(registry.model_info("iot", "sensor-1"), Err(RegistryError::Lent { .. })));
        assert!(matches!(registry.process("iot", "sensor-1", 2, &[20.0], None), Err(RegistryError::Lent { .. })));
        registry.give_back(lent).expect("given back");
        assert!(!registry.lends_any(None));
        assert_eq!(registry.model_info("iot", "sensor-1").expect("back").points_seen, 1);

        // Replaced while out: the model of the old configuration does not come back.
        let lent = registry.lend("iot", "sensor-1").expect("lent");
        registry.replace_detector(detector()).expect("replaced");
        registry.give_back(lent).expect("given back");
        assert!(matches!(registry.model_info("iot", "sensor-1"), Err(RegistryError::UnknownModel { .. })));
        assert_eq!(registry.resident(), 0);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_lent_model_still_counts_in_the_models_memory() {
        let (store, path) = store("memory");
        let mut registry = Registry::new(vec![detector()], 10, store);
        for i in 0..200 {
            let (entity, value) = reading(i);
            registry.process("iot", &entity, i as i64, &[value], None).expect("scored");
        }
        let all = registry.models_memory_bytes();
        let lent = registry.lend("iot", "sensor-1").expect("lent");
        assert_eq!(registry.models_memory_bytes(), all, "a model out for scoring still takes its memory");
        registry.give_back(lent).expect("given back");
        assert_eq!(registry.models_memory_bytes(), all);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn lent_models_score_as_in_place_and_the_capacity_holds_when_they_come_back() {
        let (lending_store, lending_path) = store("lending");
        let (plain_store, plain_path) = store("plain");
        let mut lending = Registry::new(vec![detector()], 2, lending_store);
        let mut plain = Registry::new(vec![detector()], 2, plain_store);
        for round in 0..50 {
            // Three models out at once, over a capacity of two.
            let mut lent: Vec<Lent> =
                (0..3).map(|s| lending.lend("iot", &format!("sensor-{s}")).expect("lent")).collect();
            assert_eq!(lending.resident(), 3, "lent models count as resident");
            for i in round * 30..(round + 1) * 30 {
                let (entity, value) = reading(i);
                let model = lent.iter_mut().find(|l| l.key().entity == entity).expect("lent model");
                let a = model.process(i as i64, &[value], None).expect("lent");
                let b = plain.process("iot", &entity, i as i64, &[value], None).expect("plain");
                assert_eq!(a, b, "record {i}");
            }
            for model in lent {
                lending.give_back(model).expect("given back");
            }
            assert_eq!(lending.resident(), 2, "back within the capacity");
        }
        assert!(lending.stats().evicted >= 50 && lending.stats().restored >= 49, "{:?}", lending.stats());
        let _ = std::fs::remove_file(lending_path);
        let _ = std::fs::remove_file(plain_path);
    }

    #[test]
    fn a_replay_after_restart_is_not_learned_twice() {
        let (store, path) = store("replay");
        {
            let mut registry = Registry::new(vec![detector()], 10, store.clone());
            for i in 0..100 {
                registry.process("iot", "sensor-0", i, &[1.0], Some(&at(i as u64))).expect("scored");
            }
            registry.flush().expect("flush");
        }
        let mut registry = Registry::new(vec![detector()], 10, store);
        let replayed = registry.process("iot", "sensor-0", 99, &[1.0], Some(&at(99))).expect("replay");
        assert!(matches!(replayed, Processed::AlreadyLearned(_)), "{replayed:?}");
        let seen = registry.model_info("iot", "sensor-0").map(|i| i.points_seen).ok();
        assert_eq!(seen, Some(100), "scored, not learned again");
        let next = registry.process("iot", "sensor-0", 100, &[1.0], Some(&at(100))).expect("new");
        assert!(matches!(next, Processed::Scored(_)));
        assert_eq!(registry.stats().restored, 1);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bad_records_get_typed_errors() {
        let (store, path) = store("errors");
        let mut registry = Registry::new(vec![detector()], 10, store).with_max_lateness_ms(1_000);
        assert!(
            matches!(registry.process("nope", "a", 0, &[1.0], None), Err(RegistryError::UnknownDetector(d)) if d == "nope")
        );
        assert!(matches!(registry.process("iot", "", 0, &[1.0], None), Err(RegistryError::EmptyEntity)));
        registry.process("iot", "a", 10_000, &[1.0], None).expect("scored");
        registry.process("iot", "a", 9_500, &[1.0], None).expect("a little late is fine");
        let late = registry.process("iot", "a", 8_000, &[1.0], None).expect_err("too late");
        assert_eq!(
            late.to_string(),
            "event time 8000 ms is 2000 ms before a's latest event; at most 1000 ms is allowed"
        );
        assert!(matches!(registry.process("iot", "a", 10_001, &[1.0, 2.0], None), Err(RegistryError::Model(_))));
        // Extreme times are input too: late by more than i64 holds, not an overflow.
        let late = registry.process("iot", "a", i64::MIN, &[1.0], None).expect_err("too late");
        assert!(matches!(late, RegistryError::Late { late_ms: i64::MAX, .. }), "{late:?}");
        // A time in microseconds is refused, and does not make the next records late.
        let now = crate::event::now_ms();
        let ahead = registry.process("iot", "b", now * 1_000, &[1.0], None).expect_err("ahead");
        assert!(ahead.to_string().contains("ahead of this machine's clock"), "{ahead}");
        registry.process("iot", "b", now, &[1.0], None).expect("a record of now is not late");
        registry.process("iot", "b", now + 3_600_000, &[1.0], None).expect("an hour ahead is within a day");
        let ahead = registry.process("iot", "b", i64::MAX, &[1.0], None).expect_err("ahead");
        assert!(matches!(ahead, RegistryError::Future { max_ms: DEFAULT_MAX_FUTURE_MS, .. }), "{ahead:?}");
        let _ = std::fs::remove_file(path);
    }
}
