//! Forest parameters: defaults and bounds as named constants, validated once into
//! [`ForestParams`] before a forest is built.

use serde::{Deserialize, Serialize};

use super::ForestError;

pub const DEFAULT_TREES: usize = 50;
pub const DEFAULT_SAMPLE_SIZE: usize = 256;
/// Time decay per point is this over the sample size unless set (AWS's default).
pub const DEFAULT_TIME_DECAY_TIMES_SAMPLE_SIZE: f64 = 0.1;
/// Scores are 0 until this fraction of the sample size has been seen, unless set.
pub const DEFAULT_OUTPUT_AFTER_FRACTION: f64 = 0.25;
pub const MAX_TREES: usize = 1_000;
pub const MIN_SAMPLE_SIZE: usize = 4;
/// Leaf positions are stored as `u16`, and a tree holds sample size + 1 leaves for a
/// moment during an update.
pub const MAX_SAMPLE_SIZE: usize = 4_096;
/// Cut dimensions are stored as `u8`, with one value reserved for duplicate leaves.
pub const MAX_DIMENSIONS: usize = 254;
pub const MAX_THREADS: usize = 64;
/// The largest magnitude of a value the forest takes. Ranges are summed in f32 lanes
/// of up to 64 dimensions each (see `tree::ranges`), and a range is at most twice the
/// largest magnitude: 1e35 keeps every such sum finite with room to spare, where values
/// near f32::MAX (3.4e38) would make them infinite and the scores NaN.
pub const MAX_MAGNITUDE: f32 = 1e35;

/// Whether `value`, as the forest holds it (in f32), is above [`MAX_MAGNITUDE`]: the
/// one test the forest, the model and the service make (the limit itself is allowed;
/// an f64 beyond f32's range becomes infinite and is above it).
pub fn too_large(value: f64) -> bool {
    (value as f32).abs() > MAX_MAGNITUDE
}

/// How to build a forest. Every field has a default except `features`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestConfig {
    /// Values per record (the caller passes this many per update).
    pub features: usize,
    /// Records per point: the forest keeps the last `shingle_size` records and scores
    /// their concatenation (internal shingling). 1 means no shingling.
    pub shingle_size: usize,
    /// Number of trees; more trees give steadier scores at proportional cost.
    pub trees: usize,
    /// Points each tree keeps (its reservoir sample). Scores reach about log2 of this.
    pub sample_size: usize,
    /// Weight decay per point of the time-decayed reservoir sample; larger forgets
    /// faster. Default: 0.1 / sample_size.
    pub time_decay: Option<f64>,
    /// Points to see before scores are reported (0 until then). Default: sample_size / 4.
    pub output_after: Option<usize>,
    /// Seed of every random choice; the same seed and input give the same scores.
    pub seed: u64,
    /// Threads that share the trees when records arrive in batches (one model on
    /// several cores). Scores do not depend on it. Leave at 1 when many models are
    /// scored in parallel anyway.
    pub threads: usize,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig {
            features: 1,
            shingle_size: 1,
            trees: DEFAULT_TREES,
            sample_size: DEFAULT_SAMPLE_SIZE,
            time_decay: None,
            output_after: None,
            seed: 42,
            threads: 1,
        }
    }
}

/// Validated parameters with every default resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub features: usize,
    pub shingle_size: usize,
    /// features * shingle_size: the dimension of the points in the trees.
    pub dimensions: usize,
    pub trees: usize,
    pub sample_size: usize,
    pub time_decay: f64,
    pub output_after: usize,
    pub seed: u64,
    pub threads: usize,
}

fn invalid(field: &'static str, value: impl ToString, allowed: impl ToString) -> ForestError {
    ForestError::InvalidParameter { field, value: value.to_string(), allowed: allowed.to_string() }
}

impl ForestConfig {
    /// A default configuration for records of `features` values.
    pub fn new(features: usize) -> Self {
        ForestConfig { features, ..Default::default() }
    }

    /// Checks every field and resolves the defaults; pure.
    pub fn validate(&self) -> Result<ForestParams, ForestError> {
        if self.features == 0 {
            return Err(invalid("features", self.features, "at least 1"));
        }
        if self.shingle_size == 0 {
            return Err(invalid("shingle_size", self.shingle_size, "at least 1"));
        }
        let dimensions = self.features.saturating_mul(self.shingle_size);
        if dimensions > MAX_DIMENSIONS {
            return Err(invalid(
                "shingle_size",
                self.shingle_size,
                format!("features * shingle_size at most {MAX_DIMENSIONS} (here {dimensions})"),
            ));
        }
        if self.trees == 0 || self.trees > MAX_TREES {
            return Err(invalid("trees", self.trees, format!("1 to {MAX_TREES}")));
        }
        if !(MIN_SAMPLE_SIZE..=MAX_SAMPLE_SIZE).contains(&self.sample_size) {
            return Err(invalid("sample_size", self.sample_size, format!("{MIN_SAMPLE_SIZE} to {MAX_SAMPLE_SIZE}")));
        }
        let time_decay = self.time_decay.unwrap_or(DEFAULT_TIME_DECAY_TIMES_SAMPLE_SIZE / self.sample_size as f64);
        if !(time_decay.is_finite() && (0.0..1.0).contains(&time_decay)) {
            return Err(invalid("time_decay", time_decay, "a finite number in [0, 1)"));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(invalid("threads", self.threads, format!("1 to {MAX_THREADS}")));
        }
        let output_after =
            self.output_after.unwrap_or((self.sample_size as f64 * DEFAULT_OUTPUT_AFTER_FRACTION) as usize);
        Ok(ForestParams {
            features: self.features,
            shingle_size: self.shingle_size,
            dimensions,
            trees: self.trees,
            sample_size: self.sample_size,
            time_decay,
            output_after,
            seed: self.seed,
            threads: self.threads,
        })
    }
}
