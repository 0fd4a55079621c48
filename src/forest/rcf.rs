//! The forest: the shared point store, the trees with their samplers, and the public
//! API (score, attribution, update, imputation, batch scoring, snapshots).

use bincode::Options;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::config::{too_large, ForestConfig, ForestParams};
use super::error::ForestError;
use super::rng::Rng;
use super::sampler;
use super::store::PointStore;
use super::tree::{Scratch, Tree, LANES, PATH_CAPACITY};

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
    /// Scratch space, one per thread.
    #[serde(skip)]
    scratch: Vec<Scratch>,
    /// Per chunk of trees, per point of the block: the sum of the trees' scores.
    #[serde(skip)]
    partial_sums: Vec<f64>,
    /// Records waiting to be learned together (see [`Forest::process_block`]).
    #[serde(skip)]
    block: Vec<f32>,
    #[serde(skip)]
    block_points: Vec<BlockPoint>,
    /// The score of a single record learned through `process_block`, kept to reuse.
    #[serde(skip)]
    one_score: Vec<f64>,
}

/// Records are learned in blocks of up to this many, tree by tree: a tree's nodes stay
/// in the fastest cache while it takes the whole block, instead of every tree being
/// fetched again for every record. Trees are independent, so the result is the same.
const BLOCK: usize = 256;

/// Scores are summed per chunk of this many trees, then over chunks, so that the sum
/// (and every score) is the same however the chunks are spread over threads.
const TREE_CHUNK: usize = 8;
/// How many one-dimensional trees search their cuts together (see `Tree::ranks`).
const SEARCHED_TOGETHER: usize = 8;
/// Room kept for trees waiting to take a point in `score_judge_update`: about a tenth
/// of the trees take each point once the samples are full.
const PENDING_ROOM: usize = 8;
/// Blocks shorter than this are learned on one thread: starting threads costs more.
const MIN_POINTS_PER_THREADED_BLOCK: usize = 16;

/// The sum of `scores` (one per tree, in tree order), added up chunk by chunk.
fn sum_by_chunks(scores: impl Iterator<Item = f64>) -> f64 {
    let mut total = 0.0;
    let mut chunk = 0.0;
    for (i, score) in scores.enumerate() {
        chunk += score;
        if (i + 1) % TREE_CHUNK == 0 {
            total += chunk;
            chunk = 0.0;
        }
    }
    total + chunk
}

/// Gives back the room `buffer` took while the samples filled (when every tree takes
/// every point, where later a tenth of them do), once it holds a quarter of it or less.
fn give_back<T>(buffer: &mut Vec<T>, floor: usize) {
    let need = buffer.len().max(floor);
    if buffer.capacity() > 4 * need {
        buffer.shrink_to(2 * need);
    }
}

/// A point of the block being learned: its time, its reference, whether it is scored.
#[derive(Debug, Clone, Copy)]
struct BlockPoint {
    t: u64,
    reference: u32,
    scored: bool,
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
        let one_dimensional = params.dimensions == 1;
        let trees =
            (0..params.trees).map(|_| Tree::new(params.sample_size, seeds.next_u64(), one_dimensional)).collect();
        Forest {
            store: PointStore::new(params.features, params.shingle_size),
            scratch: (0..params.threads).map(|_| Scratch::new(params.dimensions)).collect(),
            partial_sums: Vec::new(),
            trees,
            points: 0,
            block: Vec::with_capacity(BLOCK * params.features),
            block_points: Vec::with_capacity(BLOCK),
            one_score: Vec::with_capacity(1),
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
            if too_large(f64::from(value)) {
                return Err(ForestError::TooLarge { index, value });
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
            // (One-dimensional trees keep the values themselves, see `Tree::leaves`.)
            let dimensions = self.params.dimensions;
            column.extend(
                nearest.iter().map(|&r| if dimensions == 1 { f32::from_bits(r) } else { self.store.point(r)[d] }),
            );
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
        let Some(point) = self.candidate(&record) else {
            return Ok(0.0);
        };
        if !self.is_ready() {
            return Ok(0.0);
        }
        let mut scratch = Scratch::new(self.params.dimensions);
        let total = sum_by_chunks(self.trees.iter().map(|t| t.score(&point, &self.store, &mut scratch)));
        Ok(total / self.trees.len() as f64)
    }

    /// How each dimension of the point `record` completes contributes to its score.
    pub fn attribution(&self, record: &[f32]) -> Result<Attribution, ForestError> {
        let record = self.impute(record)?;
        match self.candidate(&record) {
            Some(point) => self.attribution_of_point(&point),
            None => Ok(self.zero_attribution()),
        }
    }

    fn zero_attribution(&self) -> Attribution {
        let dims = self.params.dimensions;
        Attribution { high: vec![0.0; dims], low: vec![0.0; dims] }
    }

    /// [`Forest::attribution`] of a whole (shingled) point.
    pub fn attribution_of_point(&self, point: &[f32]) -> Result<Attribution, ForestError> {
        let dims = self.params.dimensions;
        if point.len() != dims {
            return Err(ForestError::DimensionMismatch { expected: dims, got: point.len() });
        }
        let mut attribution = self.zero_attribution();
        if !self.is_ready() {
            return Ok(attribution);
        }
        let mut scratch = Scratch::new(dims);
        for tree in &self.trees {
            tree.attribution(point, &self.store, &mut scratch, &mut attribution.high, &mut attribution.low);
        }
        let trees = self.trees.len() as f64;
        attribution.high.iter_mut().chain(attribution.low.iter_mut()).for_each(|v| *v /= trees);
        Ok(attribution)
    }

    /// Learns `record` (missing values are imputed first).
    pub fn update(&mut self, record: &[f32]) -> Result<(), ForestError> {
        self.learn_one(record, false).map(|_| ())
    }

    /// Scores `record` as [`Forest::score`] would, then learns it, in one walk per tree.
    pub fn score_and_update(&mut self, record: &[f32]) -> Result<f64, ForestError> {
        self.learn_one(record, true)
    }

    /// Scores then learns each row in order, one row per record; the same scores as
    /// calling [`Forest::score_and_update`] row by row, faster. On a bad row, the rows
    /// before it are learned and the error names the row.
    pub fn score_and_update_batch(&mut self, rows: ArrayView2<f32>) -> Result<Vec<f64>, ForestError> {
        let features = self.params.features;
        if rows.ncols() != features {
            return Err(ForestError::DimensionMismatch { expected: features, got: rows.ncols() });
        }
        let mut scores = Vec::with_capacity(rows.nrows());
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        let mut result = Ok(());
        for (row, values) in rows.outer_iter().enumerate() {
            let start = block.len();
            block.extend(values.iter());
            let record = &block[start..];
            match self.check_record(record) {
                // A missing value is imputed from the forest as it is after the rows before.
                Ok(true) => {
                    let record = record.to_vec();
                    block.truncate(start);
                    self.process_block(&block, true, &mut scores);
                    block.clear();
                    match self.complete(&record) {
                        Ok(completed) => self.process_block(&completed, true, &mut scores),
                        Err(e) => {
                            result = Err(ForestError::InRow { row, source: Box::new(e) });
                            break;
                        }
                    }
                }
                Ok(false) if block.len() == BLOCK * features => {
                    self.process_block(&block, true, &mut scores);
                    block.clear();
                }
                Ok(false) => {}
                Err(e) => {
                    block.truncate(start);
                    result = Err(ForestError::InRow { row, source: Box::new(e) });
                    break;
                }
            }
        }
        self.process_block(&block, true, &mut scores);
        self.block = block;
        result.map(|()| scores)
    }

    /// Scores `record` (as [`Forest::score_and_update`] does, in one walk per tree), hands
    /// `judge` the score, the point it completes and the forest as it was before the
    /// record (so `judge` can ask for attribution or imputation of the point), then
    /// learns the record. Returns what `judge` returned.
    pub fn score_judge_update<T>(
        &mut self,
        record: &[f32],
        judge: impl FnOnce(f64, &[f32], &Forest) -> Result<T, ForestError>,
    ) -> Result<T, ForestError> {
        let completed;
        let record = if self.check_record(record)? {
            completed = self.complete(record)?;
            &completed[..]
        } else {
            record
        };
        self.store.push(record);
        if !self.store.has_point() {
            return judge(0.0, &[], self);
        }
        let t = self.points + 1;
        let ready = self.is_ready();
        let reference = self.store.newest();
        // First pass: every tree scores, accepting trees draw their placements.
        let mut scratch = std::mem::take(&mut self.scratch[0]);
        let mut pending = std::mem::take(&mut scratch.pending);
        let sample_size = self.params.sample_size;
        let x = self.store.point(reference);
        let mut scores = std::mem::take(&mut scratch.scores);
        scores.clear();
        let one_dimensional = self.trees.first().is_some_and(Tree::one_dimensional);
        let group_size = if one_dimensional { SEARCHED_TOGETHER } else { LANES };
        for (g, group) in self.trees.chunks(group_size).enumerate() {
            let ranks = ready.then(|| Tree::ranks::<SEARCHED_TOGETHER>(group, x)).flatten();
            let together = descends_together(group).filter(|_| ready);
            if let Some(group) = together {
                Tree::descend_lanes(group, x, &mut scratch);
            }
            for (lane, tree) in group.iter().enumerate() {
                let accepts = tree.accepts(t, sample_size);
                let Scratch { descent, lanes, lo, hi, saved_paths, .. } = &mut scratch;
                let (score, placement) = if let Some(ranks) = ranks {
                    tree.prepare_ranked(x[0], ranks[lane], ready, accepts)
                } else if together.is_some() {
                    tree.prepare_descended(x, ready, accepts, &self.store, &lanes[lane], lo, hi)
                } else {
                    tree.prepare(x, ready, accepts, &self.store, descent, lo, hi)
                };
                if let Some(placement) = placement {
                    // (Empty and one-dimensional trees did not descend; their inserts
                    // read nothing of the descent saved for them.)
                    let descended = if together.is_some() { &lanes[lane] } else { &*descent };
                    pending.push((g * group_size + lane, placement, descended.save(saved_paths)));
                }
                scores.push(score.unwrap_or(0.0));
            }
        }
        let total = sum_by_chunks(scores.iter().copied());
        scratch.scores = scores;
        let score = if ready { total / self.trees.len() as f64 } else { 0.0 };
        let judged = judge(score, x, self);
        // Second pass: the accepting trees take the point, on the descents they made in
        // the first pass (they are as they were then). The few paths kept cost less
        // than descending again.
        let Forest { trees, params, .. } = self;
        let Scratch { descent, delete_path, saved_paths, .. } = &mut scratch;
        give_back(&mut pending, PENDING_ROOM);
        for (i, placement, saved) in pending.drain(..) {
            descent.restore(&saved, saved_paths);
            let leaf = trees[i].leaf_of(reference, x);
            trees[i].commit(t, placement, descent, leaf, params, delete_path);
        }
        give_back(saved_paths, PATH_CAPACITY);
        saved_paths.clear();
        scratch.pending = pending;
        self.scratch[0] = scratch;
        self.points = t;
        if self.store.needs_compaction() {
            self.compact();
        }
        judged
    }

    fn learn_one(&mut self, record: &[f32], want_score: bool) -> Result<f64, ForestError> {
        let mut score = std::mem::take(&mut self.one_score);
        score.clear();
        if self.check_record(record)? {
            let completed = self.complete(record)?;
            self.process_block(&completed, want_score, &mut score);
        } else {
            self.process_block(record, want_score, &mut score);
        }
        let first = score.first().copied().unwrap_or(0.0);
        self.one_score = score;
        Ok(first)
    }

    /// Learns the checked records in `records` (concatenated), appending one score per
    /// record to `scores` (0 while warming up or when not `want_score`).
    fn process_block(&mut self, records: &[f32], want_score: bool, scores: &mut Vec<f64>) {
        if records.is_empty() {
            return;
        }
        let first_score = scores.len();
        let mut points = std::mem::take(&mut self.block_points);
        points.clear();
        for record in records.chunks_exact(self.params.features) {
            self.store.push(record);
            scores.push(0.0);
            if self.store.has_point() {
                let t = self.points + 1;
                let scored = want_score && self.is_ready();
                points.push(BlockPoint { t, reference: self.store.newest(), scored });
                self.points = t;
            }
        }
        // Scores of records that did not complete a shingle stay 0.
        let offset = first_score + records.len() / self.params.features - points.len();
        let scores = &mut scores[offset..];
        let Forest { params, store, trees, scratch, partial_sums, .. } = self;
        let len = points.len();
        let chunks = trees.len().div_ceil(TREE_CHUNK);
        partial_sums.clear();
        partial_sums.resize(chunks * len, 0.0);
        let threads = if len >= MIN_POINTS_PER_THREADED_BLOCK { params.threads.min(chunks) } else { 1 };
        if threads > 1 {
            let chunks_per_thread = chunks.div_ceil(threads);
            let (store, points, params) = (&*store, &points, &*params);
            std::thread::scope(|s| {
                let parts = trees
                    .chunks_mut(chunks_per_thread * TREE_CHUNK)
                    .zip(partial_sums.chunks_mut(chunks_per_thread * len));
                for ((trees, sums), scratch) in parts.zip(scratch.iter_mut()) {
                    s.spawn(move || learn_trees(trees, sums, points, store, params, scratch));
                }
            });
        } else {
            learn_trees(trees, partial_sums, &points, store, params, &mut scratch[0]);
        }
        let trees = self.trees.len() as f64;
        for (j, (point, score)) in points.iter().zip(scores.iter_mut()).enumerate() {
            let total: f64 = (0..chunks).map(|c| self.partial_sums[c * len + j]).sum();
            *score = if point.scored { total / trees } else { 0.0 };
        }
        self.block_points = points;
        if self.store.needs_compaction() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        // One-dimensional trees keep values, not references: they need nothing kept.
        let referencing = || self.trees.iter().filter(|t| !t.one_dimensional());
        let mut live = Vec::with_capacity(referencing().map(|t| t.leaves.len()).sum());
        live.extend(referencing().flat_map(|t| t.leaves.iter().copied()));
        let map = self.store.compact(&live);
        for tree in self.trees.iter_mut().filter(|t| !t.one_dimensional()) {
            tree.leaves.iter_mut().for_each(|r| *r = map[*r as usize]);
        }
    }

    /// The bytes this model holds in memory: the point store, the trees and scratch space.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.store.memory_bytes()
            + self.trees.capacity() * std::mem::size_of::<Tree>()
            + self.trees.iter().map(|t| t.memory_bytes() - std::mem::size_of::<Tree>()).sum::<usize>()
            + self.scratch.iter().map(Scratch::memory_bytes).sum::<usize>()
            + self.partial_sums.capacity() * 8
    }

    /// The whole forest in a compact binary form; [`Forest::restore`] gives back a
    /// forest that scores every later point bit for bit the same.
    pub fn snapshot(&self) -> Result<Vec<u8>, ForestError> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        // One-dimensional trees keep their shape as levels and their points as values,
        // which snapshots leave out: they carry pointers and references like every tree,
        // into a store of the distinct values (whatever records the store holds besides).
        let mut relinked;
        let forest = if self.params.dimensions == 1 {
            relinked = self.clone();
            let mut values: Vec<u32> = self.trees.iter().flat_map(|t| t.leaves.iter().copied()).collect();
            values.sort_unstable();
            values.dedup();
            for tree in &mut relinked.trees {
                tree.relink();
                // (Every value is there: the search finds its index.)
                tree.leaves.iter_mut().for_each(|v| *v = values.binary_search(v).unwrap_or_else(|i| i) as u32);
            }
            relinked.store = self.store.holding(values.into_iter().map(f32::from_bits).collect());
            &relinked
        } else {
            self
        };
        bincode::DefaultOptions::new()
            .serialize_into(&mut bytes, forest)
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
        let Forest { trees, store, params, .. } = &mut forest;
        trees.iter_mut().for_each(|tree| tree.rebuild(params.dimensions == 1, store));
        if params.dimensions == 1 {
            // The trees took their values: the store need hold none of them.
            forest.compact();
        }
        forest.scratch = (0..forest.params.threads).map(|_| Scratch::new(forest.params.dimensions)).collect();
        forest.block = Vec::with_capacity(BLOCK * forest.params.features);
        forest.block_points = Vec::with_capacity(BLOCK);
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
            threads: self.params.threads,
        };
        if config.validate().as_ref() != Ok(&self.params) {
            return bad(format!("inconsistent parameters {:?}", self.params));
        }
        if self.trees.len() != self.params.trees {
            return bad(format!("{} trees, expected {}", self.trees.len(), self.params.trees));
        }
        // A tree's keys are measured from an epoch the sampler's schedule gave at or
        // before the last point; any other would make a later epoch lie before it.
        let decay = self.params.time_decay;
        if let Some(i) = self
            .trees
            .iter()
            .position(|t| t.key_epoch > self.points || sampler::epoch(decay, t.key_epoch) != t.key_epoch)
        {
            return bad(format!("tree {i} measures its keys from time {}", self.trees[i].key_epoch));
        }
        let dims = self.params.dimensions;
        if !self.store.is_consistent(self.params.features, dims) {
            return bad("the point store does not match the parameters".into());
        }
        for (i, tree) in self.trees.iter().enumerate() {
            if !tree.is_consistent(self.params.sample_size, dims, |r| self.store.holds(r)) {
                return bad(format!("tree {i} is inconsistent"));
            }
            if dims == 1 && !tree.is_sorted(&self.store) {
                return bad(format!("tree {i} has leaves out of order"));
            }
        }
        Ok(())
    }
}

/// Takes the block's points into `trees`, adding each tree's score of point j to
/// `sums[chunk * points.len() + j]` for the trees' chunk (see [`TREE_CHUNK`]).
fn learn_trees(
    trees: &mut [Tree],
    sums: &mut [f64],
    points: &[BlockPoint],
    store: &PointStore,
    params: &ForestParams,
    scratch: &mut Scratch,
) {
    let len = points.len();
    for (chunk, sums) in trees.chunks_mut(TREE_CHUNK).zip(sums.chunks_mut(len.max(1))) {
        // A group of trees takes the block point by point, each point added to the sum
        // in tree order as before. Its trees' nodes together still fit the fastest cache.
        let one_dimensional = chunk.first().is_some_and(Tree::one_dimensional);
        for group in chunk.chunks_mut(if one_dimensional { SEARCHED_TOGETHER } else { LANES }) {
            if one_dimensional {
                learn_sorted(group, sums, points, store, params, scratch);
            } else {
                learn_descended(group, sums, points, store, params, scratch);
            }
        }
    }
}

/// [`learn_trees`] for a group of one-dimensional trees, which keep the points' values:
/// a scored point's place in each tree found by one search for all.
///
/// Not inlined, nor is [`learn_descended`]: compiled as one function, a change to the
/// one kind's code moved the other's speed by a few percent (its layout, not its
/// instructions, changed).
#[inline(never)]
fn learn_sorted(
    group: &mut [Tree],
    sums: &mut [f64],
    points: &[BlockPoint],
    store: &PointStore,
    params: &ForestParams,
    scratch: &mut Scratch,
) {
    for (point, sum) in points.iter().zip(sums.iter_mut()) {
        let t = point.t;
        let x = store.point(point.reference);
        // What the trees keep of the point (see `Tree::leaf_of`).
        let leaf = x[0].to_bits();
        if let Some(ranks) = point.scored.then(|| Tree::ranks::<SEARCHED_TOGETHER>(group, x)).flatten() {
            for (tree, r) in group.iter_mut().zip(ranks) {
                *sum += if tree.accepts(t, params.sample_size) {
                    tree.learn_ranked(t, x[0], r, leaf, params, scratch)
                } else {
                    tree.score_ranked(x[0], r)
                };
            }
            continue;
        }
        for tree in group.iter_mut() {
            if let Some(score) = tree.learn(t, x, leaf, point.scored, params, store, scratch) {
                *sum += score;
            }
        }
    }
}

/// [`learn_trees`] for a group of trees over points of several dimensions: a scored
/// point descends the trees together.
#[inline(never)]
fn learn_descended(
    group: &mut [Tree],
    sums: &mut [f64],
    points: &[BlockPoint],
    store: &PointStore,
    params: &ForestParams,
    scratch: &mut Scratch,
) {
    for (point, sum) in points.iter().zip(sums.iter_mut()) {
        let (t, reference) = (point.t, point.reference);
        let x = store.point(reference);
        if let Some(together) = descends_together(group).filter(|_| point.scored) {
            Tree::descend_lanes(together, x, scratch);
            for (lane, tree) in group.iter_mut().enumerate() {
                *sum += tree.learn_lane(t, x, reference, params, store, scratch, lane);
            }
            continue;
        }
        for tree in group.iter_mut() {
            if let Some(score) = tree.learn(t, x, reference, point.scored, params, store, scratch) {
                *sum += score;
            }
        }
    }
}

/// `trees` if [`Tree::descend_lanes`] can take them: a whole group, none of them
/// (nearly) empty. Only for a scored point, which every tree descends; a point that is
/// not scored is descended only by the few trees that keep it, one by one.
fn descends_together(trees: &[Tree]) -> Option<&[Tree; LANES]> {
    // One-dimensional trees that only score a point need no descent (`Tree::score_sorted`).
    <&[Tree; LANES]>::try_from(trees).ok().filter(|trees| trees.iter().all(|t| t.mass() > 1 && !t.one_dimensional()))
}
