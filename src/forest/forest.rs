//! The forest: the shared point store, the trees with their samplers, and the public
//! API (score, attribution, update, imputation, batch scoring, snapshots).

use bincode::Options;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::config::{ForestConfig, ForestParams};
use super::error::ForestError;
use super::rng::Rng;
use super::sampler;
use super::store::PointStore;
use super::tree::{Scratch, Tree};

/// Snapshot format marker and version.
const SNAPSHOT_MAGIC: &[u8; 4] = b"RCF1";

/// An online random cut forest over records of `features` values, with internal
/// shingling. See the module documentation for what it guarantees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forest {
    pub(super) params: ForestParams,
    pub(super) store: PointStore,
    pub(super) trees: Vec<Tree>,
    /// Points (complete shingles) seen: the sampler's clock.
    points: u64,
    /// The time sampler keys are measured from (see `sampler`).
    key_base: u64,
    #[serde(skip)]
    scratch: Scratch,
}

/// How much each dimension of a point contributes to its score, split by direction:
/// `high[d]` for the point lying above what the forest expects in dimension d, `low[d]`
/// below. All parts sum to the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub high: Vec<f64>,
    pub low: Vec<f64>,
}

impl Attribution {
    /// The score this attribution explains.
    pub fn total(&self) -> f64 {
        self.high.iter().sum::<f64>() + self.low.iter().sum::<f64>()
    }
}

impl Forest {
    /// Validates `config` and builds an empty forest.
    pub fn new(config: &ForestConfig) -> Result<Self, ForestError> {
        Ok(Self::from_params(config.validate()?))
    }

    pub fn from_params(params: ForestParams) -> Self {
        let mut seeds = Rng::new(params.seed);
        let trees = (0..params.trees).map(|_| Tree::new(params.sample_size, seeds.next_u64())).collect();
        Forest {
            store: PointStore::new(params.features, params.shingle_size),
            scratch: Scratch::new(params.dimensions),
            trees,
            points: 0,
            key_base: 0,
            params,
        }
    }

    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// Points (complete shingles) the forest has been updated with.
    pub fn points_seen(&self) -> u64 {
        self.points
    }

    /// Whether scores are being reported (enough points seen; before that they are 0).
    pub fn is_ready(&self) -> bool {
        self.points >= self.params.output_after as u64
    }

    fn check_record(&self, record: &[f32]) -> Result<bool, ForestError> {
        if record.len() != self.params.features {
            return Err(ForestError::DimensionMismatch { expected: self.params.features, got: record.len() });
        }
        let mut missing = false;
        for (index, &value) in record.iter().enumerate() {
            if value.is_infinite() {
                return Err(ForestError::Infinite { index, value });
            }
            missing |= value.is_nan();
        }
        Ok(missing)
    }

    /// The point `record` would complete (the previous shingle_size - 1 records and
    /// it), or None while fewer records have been seen.
    fn candidate(&self, record: &[f32]) -> Option<Vec<f32>> {
        let prefix = self.store.shingle_prefix();
        (prefix.len() + record.len() == self.params.dimensions).then(|| [prefix, record].concat())
    }

    /// `record` with missing values (NaN) filled in from the forest.
    fn complete(&self, record: &[f32]) -> Result<Vec<f32>, ForestError> {
        let missing = |record: &[f32]| record.iter().position(|v| v.is_nan());
        let Some(point) = self.candidate(record) else {
            return Err(ForestError::NothingToImpute { index: missing(record).unwrap_or(0) });
        };
        let imputed = self.impute_point(&point)?;
        Ok(imputed[self.params.dimensions - self.params.features..].to_vec())
    }

    /// Fills the missing (NaN) dimensions of a full point from the samples nearest to
    /// it on the known dimensions: per tree the nearest sample, per dimension the
    /// median over trees.
    pub fn impute_point(&self, point: &[f32]) -> Result<Vec<f32>, ForestError> {
        if point.len() != self.params.dimensions {
            return Err(ForestError::DimensionMismatch { expected: self.params.dimensions, got: point.len() });
        }
        let missing: Vec<usize> = (0..point.len()).filter(|&d| point[d].is_nan()).collect();
        if missing.is_empty() {
            return Ok(point.to_vec());
        }
        let nearest: Vec<u32> = self.trees.iter().filter_map(|t| t.nearest_known(point, &self.store)).collect();
        if nearest.is_empty() {
            return Err(ForestError::NothingToImpute { index: missing[0] });
        }
        let mut filled = point.to_vec();
        let mut column = Vec::with_capacity(nearest.len());
        for &d in &missing {
            column.clear();
            column.extend(nearest.iter().map(|&r| self.store.point(r)[d]));
            column.sort_unstable_by(f32::total_cmp);
            filled[d] = column[column.len() / 2];
        }
        Ok(filled)
    }

    /// Fills the missing (NaN) values of `record` from the forest.
    pub fn impute(&self, record: &[f32]) -> Result<Vec<f32>, ForestError> {
        if self.check_record(record)? {
            self.complete(record)
        } else {
            Ok(record.to_vec())
        }
    }

    /// The anomaly score of `record` (completing the current shingle) without learning
    /// it: 0 while the forest is warming up, up to about log2(sample size).
    pub fn score(&self, record: &[f32]) -> Result<f64, ForestError> {
        let record = self.impute(record)?;
        let Some(point) = self.candidate(&record) else { return Ok(0.0) };
        if !self.is_ready() {
            return Ok(0.0);
        }
        let mut scratch = Scratch::new(self.params.dimensions);
        let total: f64 = self.trees.iter().map(|t| t.score(&point, &self.store, &mut scratch)).sum();
        Ok(total / self.trees.len() as f64)
    }

    /// How each dimension of the point `record` completes contributes to its score.
    pub fn attribution(&self, record: &[f32]) -> Result<Attribution, ForestError> {
        let record = self.impute(record)?;
        let dims = self.params.dimensions;
        let mut attribution = Attribution { high: vec![0.0; dims], low: vec![0.0; dims] };
        let Some(point) = self.candidate(&record) else { return Ok(attribution) };
        if !self.is_ready() {
            return Ok(attribution);
        }
        let mut scratch = Scratch::new(dims);
        for tree in &self.trees {
            tree.attribution(&point, &self.store, &mut scratch, &mut attribution.high, &mut attribution.low);
        }
        let trees = self.trees.len() as f64;
        attribution.high.iter_mut().chain(attribution.low.iter_mut()).for_each(|v| *v /= trees);
        Ok(attribution)
    }

    /// Learns `record` (missing values are imputed first).
    pub fn update(&mut self, record: &[f32]) -> Result<(), ForestError> {
        self.process(record, false).map(|_| ())
    }

    /// Scores `record` as [`Forest::score`] would, then learns it, in one walk per tree.
    pub fn score_and_update(&mut self, record: &[f32]) -> Result<f64, ForestError> {
        self.process(record, true)
    }

    /// Scores then learns each row in order; one row per record.
    pub fn score_and_update_batch(&mut self, rows: ArrayView2<f32>) -> Result<Vec<f64>, ForestError> {
        if rows.ncols() != self.params.features {
            return Err(ForestError::DimensionMismatch { expected: self.params.features, got: rows.ncols() });
        }
        let mut record = vec![0.0f32; self.params.features];
        let mut scores = Vec::with_capacity(rows.nrows());
        for (row, values) in rows.outer_iter().enumerate() {
            record.iter_mut().zip(values.iter()).for_each(|(r, v)| *r = *v);
            let score = self.process(&record, true).map_err(|e| ForestError::InRow { row, source: Box::new(e) })?;
            scores.push(score);
        }
        Ok(scores)
    }

    fn process(&mut self, record: &[f32], want_score: bool) -> Result<f64, ForestError> {
        if self.check_record(record)? {
            let completed = self.complete(record)?;
            self.store.push(&completed);
        } else {
            self.store.push(record);
        }
        if !self.store.has_point() {
            return Ok(0.0);
        }
        let t = self.points + 1;
        let decay = self.params.time_decay;
        if decay * (t - self.key_base) as f64 > sampler::REBASE_AFTER {
            self.rebase_keys(t);
        }
        let t_rel = (t - self.key_base) as f64;
        let ready = want_score && self.is_ready();
        let sample_size = self.params.sample_size;
        let Forest { store, trees, scratch, .. } = self;
        let Scratch { descent, lo, hi, delete_path } = scratch;
        let x_ref = store.newest();
        let x = store.point(x_ref);
        let mut total = 0.0;
        for tree in trees.iter_mut() {
            let filling = tree.mass() < sample_size;
            let accepts = filling || t >= tree.next_accept;
            // A tree that neither accepts the point nor has to score it is skipped.
            if !(accepts || ready) {
                continue;
            }
            if tree.mass() > 0 {
                tree.descend(x, descent);
            }
            if !accepts {
                total += tree.walk(x, store, descent, lo, hi, None).0;
                continue;
            }
            let mut rng = tree.rng.clone();
            let (score, placement) = tree.walk(x, store, descent, lo, hi, Some(&mut rng));
            total += score;
            let key = if filling {
                sampler::unconditional_key(&mut rng, decay, t_rel)
            } else {
                sampler::accepted_key(&mut rng, decay, t_rel, tree.max_key)
            };
            if let Some(placement) = placement {
                tree.insert(placement, descent, x_ref, key);
            }
            tree.refresh_max_key();
            if tree.mass() > sample_size {
                tree.evict(delete_path);
            }
            tree.next_accept = if tree.mass() < sample_size {
                t + 1
            } else {
                sampler::next_acceptance(&mut rng, decay, t, t_rel, tree.max_key)
            };
            tree.rng = rng;
        }
        self.points = t;
        if self.store.needs_compaction() {
            self.compact();
        }
        Ok(if ready { total / self.trees.len() as f64 } else { 0.0 })
    }

    /// Moves the sampler keys' base time to `t`, before `λ·(t - base)` loses precision.
    fn rebase_keys(&mut self, t: u64) {
        let shift = (self.params.time_decay * (t - self.key_base) as f64) as f32;
        for tree in &mut self.trees {
            tree.keys.iter_mut().for_each(|k| *k += shift);
            tree.refresh_max_key();
        }
        self.key_base = t;
    }

    fn compact(&mut self) {
        let mut live: Vec<u32> = self.trees.iter().flat_map(|t| t.leaves.iter().copied()).collect();
        let map = self.store.compact(&mut live);
        for tree in &mut self.trees {
            tree.leaves.iter_mut().for_each(|r| *r = map[*r as usize]);
        }
    }

    /// The bytes this model holds in memory: the point store, the trees and scratch space.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.store.memory_bytes()
            + self.trees.capacity() * std::mem::size_of::<Tree>()
            + self.trees.iter().map(|t| t.memory_bytes() - std::mem::size_of::<Tree>()).sum::<usize>()
            + self.scratch.memory_bytes()
    }

    /// The whole forest in a compact binary form; [`Forest::restore`] gives back a
    /// forest that scores every later point bit for bit the same.
    pub fn snapshot(&self) -> Result<Vec<u8>, ForestError> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bincode::DefaultOptions::new()
            .serialize_into(&mut bytes, self)
            .map_err(|e| ForestError::Snapshot(e.to_string()))?;
        Ok(bytes)
    }

    /// Rebuilds a forest from [`Forest::snapshot`] bytes, checking that they describe a
    /// consistent forest (snapshots come from storage and the network).
    pub fn restore(bytes: &[u8]) -> Result<Self, ForestError> {
        let body = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or_else(|| ForestError::Snapshot("missing the RCF1 header".into()))?;
        let mut forest: Forest = bincode::DefaultOptions::new()
            .with_limit(body.len() as u64 * 8 + 1024)
            .deserialize(body)
            .map_err(|e| ForestError::Snapshot(e.to_string()))?;
        forest.check_restored()?;
        forest.scratch = Scratch::new(forest.params.dimensions);
        Ok(forest)
    }

    fn check_restored(&self) -> Result<(), ForestError> {
        let bad = |what: String| Err(ForestError::Snapshot(what));
        let config = ForestConfig {
            features: self.params.features,
            shingle_size: self.params.shingle_size,
            trees: self.params.trees,
            sample_size: self.params.sample_size,
            time_decay: Some(self.params.time_decay),
            output_after: Some(self.params.output_after),
            seed: self.params.seed,
        };
        if config.validate().as_ref() != Ok(&self.params) {
            return bad(format!("inconsistent parameters {:?}", self.params));
        }
        if self.trees.len() != self.params.trees || self.key_base > self.points {
            return bad(format!("{} trees, expected {}", self.trees.len(), self.params.trees));
        }
        let dims = self.params.dimensions;
        if !self.store.is_consistent(self.params.features, dims) {
            return bad("the point store does not match the parameters".into());
        }
        for (i, tree) in self.trees.iter().enumerate() {
            if !tree.is_consistent(self.params.sample_size, dims, |r| self.store.holds(r)) {
                return bad(format!("tree {i} is inconsistent"));
            }
        }
        Ok(())
    }
}
