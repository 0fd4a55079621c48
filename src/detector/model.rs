//! The model of one (detector, entity): transform, forest and threshold, turning each
//! record into a scored output with a grade, a confidence, and for anomalies the
//! attribution per feature, the expected values and where in the shingle it started.

use serde::{Deserialize, Serialize};

use super::config::{Detector, Transform};
use super::threshold::Threshold;
use crate::forest::{too_large, Forest, ForestError, MAX_MAGNITUDE};

/// Points over which the normalising transform's mean and deviation forget, per
/// point of the forest's sample size (the statistics outlive the sample by this much).
const NORMALIZE_HORIZON_PER_SAMPLE: usize = 10;
/// A deviation below this is treated as this, so that a constant feature does not divide by 0.
const MIN_DEVIATION: f64 = 1e-6;

/// Which side of the expected value a feature lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Direction {
    High,
    Low,
}

/// How much one feature explains the score (as RANDOM_CUT_FOREST_WITH_EXPLANATION).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureAttribution {
    /// This feature's part of the anomaly score.
    pub score: f64,
    pub direction: Direction,
    /// This feature's share of the score, 0 to 1.
    pub strength: f64,
}

/// What the model made of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The forest's score, on the RCF (Kinesis Analytics ANOMALY_SCORE) scale.
    pub anomaly_score: f64,
    /// `anomaly_score` where it is higher than each of the threshold's `peak_window`
    /// scores before it, else 0: one value per burst (see `threshold`).
    pub peak_score: f64,
    pub anomaly_grade: f64,
    /// 0 to 1: how settled the model is (it grows while the model warms up).
    pub confidence: f64,
    pub is_anomaly: bool,
    /// The first record of a new anomaly region, where an alert starts.
    pub starts_region: bool,
    /// The model is still warming up; its scores are not yet judged.
    pub learning: bool,
    /// Per feature, in the detector's order; empty unless `is_anomaly`.
    pub attribution: Vec<FeatureAttribution>,
    /// What the model expected the features to be; empty unless `is_anomaly`.
    pub expected_values: Vec<f64>,
    /// With shingling: how many records before this one the anomaly started.
    pub steps_back: usize,
}

/// Why a record could not be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("expected {expected} feature values, got {got}")]
    FeatureCount { expected: usize, got: usize },
    #[error("feature {index} is {value}: infinite values are not allowed")]
    Infinite { index: usize, value: f64 },
    #[error("feature {index} is {value:e}: magnitudes above {limit:e} are not allowed", limit = MAX_MAGNITUDE)]
    TooLarge { index: usize, value: f64 },
    #[error(transparent)]
    Forest(#[from] ForestError),
    #[error("model snapshot: {0}")]
    Snapshot(String),
}

/// Running state of the transform: the previous record, and the mean and variance of
/// what is normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TransformState {
    transform: Transform,
    previous: Option<Vec<f64>>,
    mean: Vec<f64>,
    variance: Vec<f64>,
    seen: u64,
    horizon: u64,
}

impl TransformState {
    fn new(transform: Transform, features: usize, horizon: u64) -> Self {
        TransformState {
            transform,
            previous: None,
            mean: vec![0.0; features],
            variance: vec![0.0; features],
            seen: 0,
            horizon,
        }
    }

    fn normalizes(&self) -> bool {
        matches!(self.transform, Transform::Normalize | Transform::NormalizeDifference)
    }

    fn differences(&self) -> bool {
        matches!(self.transform, Transform::Difference | Transform::NormalizeDifference)
    }

    fn deviation(&self, f: usize) -> f64 {
        self.variance[f].sqrt().max(MIN_DEVIATION)
    }

    /// The record as the forest sees it (NaN stays NaN: the forest imputes it).
    fn apply(&self, values: &[f64]) -> Vec<f32> {
        values
            .iter()
            .enumerate()
            .map(|(f, &v)| {
                let mut x = v;
                if self.differences() {
                    x -= self.previous.as_ref().map_or(v, |p| p[f]);
                }
                if self.normalizes() && self.seen > 1 {
                    x = (x - self.mean[f]) / self.deviation(f);
                }
                // Differencing, or normalising by a deviation near its floor, can take
                // an allowed value beyond the forest's bound; held at the bound it is
                // still far out, and scored as the anomaly it is (NaN stays NaN).
                (x as f32).clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
            })
            .collect()
    }

    /// A value the forest expects, back in the record's units.
    fn invert(&self, f: usize, x: f32) -> f64 {
        let mut v = f64::from(x);
        if self.normalizes() && self.seen > 1 {
            v = v * self.deviation(f) + self.mean[f];
        }
        if self.differences() {
            v += self.previous.as_ref().map_or(0.0, |p| p[f]);
        }
        v
    }

    /// Learns the record (after it was transformed and scored).
    fn learn(&mut self, values: &[f64]) {
        if self.normalizes() {
            self.seen += 1;
            let alpha = 1.0 / self.seen.min(self.horizon) as f64;
            for (f, &v) in values.iter().enumerate() {
                let x = if self.differences() { v - self.previous.as_ref().map_or(v, |p| p[f]) } else { v };
                if x.is_nan() {
                    continue;
                }
                let delta = x - self.mean[f];
                self.mean[f] += alpha * delta;
                self.variance[f] = (1.0 - alpha) * (self.variance[f] + alpha * delta * delta);
            }
        }
        // A missing value keeps the previous one as the base for the next difference.
        let previous = self.previous.get_or_insert_with(|| values.to_vec());
        for (p, &v) in previous.iter_mut().zip(values) {
            if !v.is_nan() {
                *p = v;
            }
        }
    }
}

/// What a model snapshot holds; the forest in its own checked format.
#[derive(Serialize, Deserialize)]
struct ModelState {
    transform: TransformState,
    threshold: Threshold,
    forest: Vec<u8>,
}

/// One entity's model under one detector.
#[derive(Debug, Clone)]
pub struct Model {
    transform: TransformState,
    forest: Forest,
    threshold: Threshold,
}

impl Model {
    pub fn new(detector: &Detector) -> Self {
        let horizon = (detector.forest.sample_size * NORMALIZE_HORIZON_PER_SAMPLE) as u64;
        Model {
            transform: TransformState::new(detector.transform, detector.features.len(), horizon),
            forest: Forest::from_params(detector.forest.clone()),
            threshold: Threshold::new(detector.threshold.clone()),
        }
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// The bytes this model holds: its forest, transform and threshold state.
    pub fn memory_bytes(&self) -> usize {
        let per_feature = self.transform.mean.capacity() + self.transform.variance.capacity();
        let previous = self.transform.previous.as_ref().map_or(0, Vec::capacity);
        std::mem::size_of::<Self>() - std::mem::size_of::<Forest>()
            + self.forest.memory_bytes()
            + (per_feature + previous) * std::mem::size_of::<f64>()
    }

    /// The model's whole state as bytes (see [`Model::restore`]).
    pub fn snapshot(&self) -> Result<Vec<u8>, ModelError> {
        let state = ModelState {
            transform: self.transform.clone(),
            threshold: self.threshold.clone(),
            forest: self.forest.snapshot()?,
        };
        bincode::serialize(&state).map_err(|e| ModelError::Snapshot(e.to_string()))
    }

    /// Rebuilds a model of `detector` from [`Model::snapshot`] bytes; it then scores
    /// every later record exactly as the original would.
    pub fn restore(bytes: &[u8], detector: &Detector) -> Result<Self, ModelError> {
        let state: ModelState = bincode::deserialize(bytes).map_err(|e| ModelError::Snapshot(e.to_string()))?;
        let forest = Forest::restore(&state.forest)?;
        let other = |what: &str| {
            ModelError::Snapshot(format!("made with another {what} than detector `{}` has now", detector.name))
        };
        if forest.params() != &detector.forest {
            return Err(other("forest"));
        }
        // Snapshots come from storage and RestoreModel calls: every per-feature vector
        // must fit the detector, or the next record would index past one.
        let transform = &state.transform;
        let features = detector.features.len();
        let fits = |v: &Vec<f64>| v.len() == features;
        let horizon = (detector.forest.sample_size * NORMALIZE_HORIZON_PER_SAMPLE) as u64;
        if transform.transform != detector.transform
            || !fits(&transform.mean)
            || !fits(&transform.variance)
            || !transform.previous.as_ref().is_none_or(fits)
            || transform.horizon != horizon
        {
            return Err(other("transform or feature count"));
        }
        Ok(Model { transform: state.transform, forest, threshold: state.threshold })
    }

    /// Scores one record (feature values in the detector's order; NaN for a missing
    /// one), judges the score, explains it if it is an anomaly, then learns the record.
    pub fn process(&mut self, values: &[f64]) -> Result<Output, ModelError> {
        let features = self.transform.mean.len();
        if values.len() != features {
            return Err(ModelError::FeatureCount { expected: features, got: values.len() });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.is_infinite()) {
            return Err(ModelError::Infinite { index, value });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, &v)| too_large(v)) {
            return Err(ModelError::TooLarge { index, value });
        }
        let record = self.transform.apply(values);
        let confidence = self.confidence();
        let Model { transform, forest, threshold } = self;
        // One walk per tree scores and learns; the threshold judges in between, and an
        // anomaly is explained by the forest as it was before it learned the record.
        let output = forest.score_judge_update(&record, |score, point, forest| {
            let decision = threshold.observe(score);
            let mut output = Output {
                anomaly_score: score,
                peak_score: decision.peak_score,
                anomaly_grade: decision.grade,
                confidence,
                is_anomaly: decision.is_anomaly,
                starts_region: decision.starts_region,
                learning: !(forest.is_ready() && threshold.is_warm()),
                attribution: Vec::new(),
                expected_values: Vec::new(),
                steps_back: 0,
            };
            if decision.is_anomaly {
                explain(forest, transform, point, &mut output)?;
            }
            Ok(output)
        })?;
        self.transform.learn(values);
        Ok(output)
    }

    /// Confidence grows from 0 to 1 while the forest fills and the threshold settles.
    fn confidence(&self) -> f64 {
        let params = self.forest.params();
        let needed = (params.sample_size * 2) as f64;
        (self.forest.points_seen() as f64 / needed).min(1.0)
    }
}

/// Attribution per feature, where in the shingle the anomaly started, and the values
/// expected for the newest record, for the anomalous `point`.
fn explain(forest: &Forest, transform: &TransformState, point: &[f32], output: &mut Output) -> Result<(), ForestError> {
    let features = transform.mean.len();
    let attribution = forest.attribution_of_point(point)?;
    let total = attribution.total().max(f64::MIN_POSITIVE);
    let shingle = point.len() / features;
    output.attribution = (0..features)
        .map(|f| {
            let high: f64 = (0..shingle).map(|p| attribution.high[p * features + f]).sum();
            let low: f64 = (0..shingle).map(|p| attribution.low[p * features + f]).sum();
            FeatureAttribution {
                score: high + low,
                direction: if high >= low { Direction::High } else { Direction::Low },
                strength: (high + low) / total,
            }
        })
        .collect();
    // The shingle position that explains the most is where the anomaly started.
    let by_position = |p: usize| -> f64 {
        (0..features).map(|f| attribution.high[p * features + f] + attribution.low[p * features + f]).sum()
    };
    let start = (0..shingle).max_by(|&a, &b| by_position(a).total_cmp(&by_position(b))).unwrap_or(shingle - 1);
    output.steps_back = shingle - 1 - start;
    // The newest record missing: what the forest fills in is what it expected.
    let mut blanked = point.to_vec();
    blanked[point.len() - features..].fill(f32::NAN);
    let expected = forest.impute_point(&blanked)?;
    let newest = point.len() - features;
    output.expected_values = expected[newest..].iter().enumerate().map(|(f, &x)| transform.invert(f, x)).collect();
    // DIRECTION as Kinesis Analytics defines it: above or below the expected value. The
    // forest's high/low parts can disagree: a spike below earlier, larger spikes in
    // the sample is separated from them from below.
    for (f, a) in output.attribution.iter_mut().enumerate() {
        let (value, expected) = (point[newest + f], expected[newest + f]);
        if value.is_finite() && expected.is_finite() && value != expected {
            a.direction = if value > expected { Direction::High } else { Direction::Low };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::config::DetectorConfig;

    fn detector(transform: &str, shingle_size: usize, features: &[&str]) -> Detector {
        let features: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
        let text = format!(
            "name = \"t\"\nentity_key = [\"k\"]\nfeatures = [{}]\ntransform = \"{transform}\"\n[forest]\nshingle_size = {shingle_size}\n",
            features.join(", ")
        );
        DetectorConfig::from_toml(&text).expect("parses").validate().expect("valid")
    }

    #[test]
    fn a_snapshot_whose_state_does_not_fit_the_detector_is_refused_not_a_panic_later() {
        let detector = detector("normalize_difference", 1, &["cpu", "memory"]);
        let mut model = Model::new(&detector);
        for i in 0..10 {
            model.process(&[f64::from(i), 2.0]).expect("scores");
        }
        let good = model.snapshot().expect("snapshot");
        let mut restored = Model::restore(&good, &detector).expect("restores");
        restored.process(&[11.0, 2.0]).expect("scores");
        let state: ModelState = bincode::deserialize(&good).expect("state");
        let broken: [fn(&mut TransformState); 5] = [
            |t| t.variance.clear(),
            |t| t.mean.push(0.0),
            |t| t.previous = Some(Vec::new()),
            |t| t.transform = Transform::None,
            |t| t.horizon = 0,
        ];
        for (i, breaks) in broken.iter().enumerate() {
            let mut transform = state.transform.clone();
            breaks(&mut transform);
            let bad = ModelState { transform, threshold: state.threshold.clone(), forest: state.forest.clone() };
            let bytes = bincode::serialize(&bad).expect("serialise");
            let err = Model::restore(&bytes, &detector).expect_err("refused").to_string();
            assert!(err.contains("transform or feature count"), "case {i}: {err}");
        }
    }

    #[test]
    fn a_spike_is_flagged_explained_and_expected_near_normal() {
        let mut model = Model::new(&detector("none", 1, &["cpu", "memory"]));
        let mut state = 7u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 1000.0
        };
        for _ in 0..3_000 {
            let output = model.process(&[50.0 + noise(), 30.0 + noise()]).expect("scores");
            assert!(!output.is_anomaly || output.anomaly_score > 1.5);
        }
        let output = model.process(&[50.5, 90.0]).expect("scores");
        assert!(output.is_anomaly && output.starts_region && !output.learning, "{output:?}");
        assert!(output.anomaly_grade > 0.0 && output.confidence == 1.0);
        let memory = &output.attribution[1];
        assert_eq!(memory.direction, Direction::High);
        assert!(memory.strength > 0.9, "{:?}", output.attribution);
        let expected_memory = output.expected_values[1];
        assert!((29.5..31.5).contains(&expected_memory), "expected about 30, got {expected_memory}");
    }

    #[test]
    fn a_spike_below_earlier_spikes_is_still_high() {
        // The forest separates 105 from the 115..120 spikes in its sample from below;
        // the user must still read "high, expected about 15".
        let mut model = Model::new(&detector("none", 1, &["iotValue"]));
        for i in 0..3_000u64 {
            let value = if i % 100 == 50 { 115.0 + (i % 6) as f64 } else { 10.0 + (i * 7 % 11) as f64 };
            model.process(&[value]).expect("scores");
        }
        let output = model.process(&[105.0]).expect("scores");
        assert!(output.is_anomaly, "{output:?}");
        assert_eq!(output.attribution[0].direction, Direction::High, "{output:?}");
        assert!((10.0..=20.0).contains(&output.expected_values[0]), "{output:?}");
    }

    #[test]
    fn a_drop_in_a_shingled_series_is_low_and_dated() {
        let mut model = Model::new(&detector("normalize", 4, &["v"]));
        let wave = |i: usize| 100.0 + 10.0 * (i as f64 * 2.0 * std::f64::consts::PI / 25.0).sin();
        for i in 0..4_000 {
            model.process(&[wave(i)]).expect("scores");
        }
        let output = model.process(&[wave(4_000) - 60.0]).expect("scores");
        assert!(output.is_anomaly, "{output:?}");
        assert_eq!(output.attribution[0].direction, Direction::Low);
        assert_eq!(output.steps_back, 0, "the newest record is the odd one");
        let expected = output.expected_values[0];
        assert!((expected - wave(4_000)).abs() < 5.0, "expected {} got {expected}", wave(4_000));
    }

    #[test]
    fn differencing_sees_a_level_shift_and_missing_values_are_imputed() {
        let mut model = Model::new(&detector("difference", 1, &["v"]));
        for i in 0..2_000 {
            let output = model.process(&[(i as f64) * 0.5]).expect("a steady climb");
            assert!(!output.is_anomaly, "a steady climb is normal under differencing ({i})");
        }
        let missing = model.process(&[f64::NAN]).expect("a missing value is imputed");
        assert!(!missing.is_anomaly);
        let jump = model.process(&[5_000.0]).expect("scores");
        assert!(jump.is_anomaly, "{jump:?}");
        assert_eq!(model.process(&[1.0, 2.0]), Err(ModelError::FeatureCount { expected: 1, got: 2 }));
        assert_eq!(model.process(&[f64::INFINITY]), Err(ModelError::Infinite { index: 0, value: f64::INFINITY }));
        let too_large = model.process(&[-1e300]).map_err(|e| e.to_string());
        assert_eq!(too_large, Err("feature 0 is -1e300: magnitudes above 1e35 are not allowed".to_owned()));
        assert!(model.process(&[1e35]).is_ok(), "the limit itself is allowed");
    }

    #[test]
    fn a_value_the_transform_blows_past_the_forests_bound_is_scored_as_an_anomaly() {
        // A constant feature's deviation sits at its floor, so a modest jump normalises
        // to about 1e39, and a swing between the bounds differences to 2e35: both
        // beyond what the forest takes, neither an error.
        let mut normalised = Model::new(&detector("normalize", 1, &["v"]));
        let mut swinging = Model::new(&detector("difference", 1, &["v"]));
        for i in 0..2_000 {
            normalised.process(&[5.0]).expect("a constant");
            swinging.process(&[if i % 2 == 0 { 1e35 } else { -1e35 }]).expect("within the bound");
        }
        let jump = normalised.process(&[1e33]).expect("scored, not refused");
        assert!(jump.is_anomaly && jump.anomaly_score > 1.5, "{jump:?}");
        assert_eq!(jump.attribution[0].direction, Direction::High);
        let flat = swinging.process(&[-1e35]).expect("scored, not refused");
        assert!(flat.anomaly_score.is_finite(), "{flat:?}");
    }
}
