//! The adaptive threshold: a score is anomalous when it stands out from the scores this
//! model has been giving (not above a fixed cut), and the grade says by how much.
//!
//! The threshold is an exponentially weighted mean of recent scores plus `z` of their
//! exponentially weighted deviations. Scores that are flagged enter the statistics
//! clipped at the threshold, so a burst of anomalies cannot raise the bar for the next
//! one; `min_score` keeps tiny deviations near the expected value from ever counting.
//! Consecutive flagged points (with gaps up to `region_gap`) form one anomaly region,
//! and only its first point starts an alert.

use serde::{Deserialize, Serialize};

pub const DEFAULT_Z: f64 = 3.0;
pub const DEFAULT_MIN_SCORE: f64 = 1.5;
pub const DEFAULT_HORIZON: usize = 2_000;
pub const DEFAULT_WARM_UP: usize = 200;
pub const DEFAULT_REGION_GAP: usize = 10;

/// How the threshold adapts. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    /// Deviations above the recent mean score at which a score becomes anomalous.
    pub z: f64,
    /// Scores at or below this are never anomalous, however quiet the stream has been
    /// (on the ANOMALY_SCORE scale ordinary points score about 1).
    pub min_score: f64,
    /// Points over which the mean and deviation of scores forget (exponential weighting).
    pub horizon: usize,
    /// Scored points to see before anything is flagged.
    pub warm_up: usize,
    /// Flagged points separated by at most this many normal points belong to one region.
    pub region_gap: usize,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig {
            z: DEFAULT_Z,
            min_score: DEFAULT_MIN_SCORE,
            horizon: DEFAULT_HORIZON,
            warm_up: DEFAULT_WARM_UP,
            region_gap: DEFAULT_REGION_GAP,
        }
    }
}

/// What the threshold made of one score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The threshold the score was compared with.
    pub threshold: f64,
    pub is_anomaly: bool,
    /// 0 for normal points; for anomalies, how far above the threshold, up to 1 at twice it.
    pub grade: f64,
    /// The first point of a new anomaly region (where an alert starts).
    pub starts_region: bool,
}

/// The threshold's state for one model; serialisable with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    config: ThresholdConfig,
    mean: f64,
    variance: f64,
    seen: u64,
    /// Points since the last flagged one (u64::MAX before any).
    since_anomaly: u64,
}

impl Threshold {
    pub fn new(config: ThresholdConfig) -> Self {
        Threshold { config, mean: 0.0, variance: 0.0, seen: 0, since_anomaly: u64::MAX }
    }

    /// The current threshold: mean + z deviations, never below `min_score`.
    pub fn current(&self) -> f64 {
        (self.mean + self.config.z * self.variance.sqrt()).max(self.config.min_score)
    }

    pub fn is_warm(&self) -> bool {
        self.seen >= self.config.warm_up as u64
    }

    /// Judges `score` (a forest score; 0 means the forest is still learning and is not
    /// counted) and learns from it.
    pub fn observe(&mut self, score: f64) -> Decision {
        let threshold = self.current();
        if score <= 0.0 || !score.is_finite() {
            return Decision { threshold, is_anomaly: false, grade: 0.0, starts_region: false };
        }
        let is_anomaly = self.is_warm() && score > threshold;
        let grade = if is_anomaly { ((score - threshold) / threshold).min(1.0) } else { 0.0 };
        let starts_region = is_anomaly && self.since_anomaly > self.config.region_gap as u64;
        self.since_anomaly = if is_anomaly { 0 } else { self.since_anomaly.saturating_add(1) };
        // Learn: anomalies enter clipped at the threshold so they cannot raise it.
        let clipped = if self.is_warm() { score.min(threshold) } else { score };
        self.seen += 1;
        let alpha = 1.0 / (self.seen.min(self.config.horizon as u64)) as f64;
        let delta = clipped - self.mean;
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
        Decision { threshold, is_anomaly, grade, starts_region }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::{Forest, ForestConfig};

    /// The seed scenario: uniform integers 10..20, 1% of points uniform integers 100..120.
    fn seed_scenario(n: usize, seed: u64) -> Vec<(f32, bool)> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                if next() % 100 == 0 {
                    ((100 + next() % 21) as f32, true)
                } else {
                    ((10 + next() % 11) as f32, false)
                }
            })
            .collect()
    }

    #[test]
    fn flags_the_seed_scenarios_anomalies_and_almost_nothing_else() {
        for seed in [1, 2, 3] {
            let stream = seed_scenario(200_000, seed);
            let mut forest = Forest::new(&ForestConfig { seed, ..ForestConfig::default() }).expect("valid");
            let mut threshold = Threshold::new(ThresholdConfig::default());
            let (mut anomalies, mut caught, mut normal, mut false_alarms) = (0, 0, 0, 0);
            for (i, &(value, injected)) in stream.iter().enumerate() {
                let decision = threshold.observe(forest.score_and_update(&[value]).expect("score"));
                if i < 1_000 {
                    continue; // warm-up
                }
                if injected {
                    anomalies += 1;
                    caught += usize::from(decision.is_anomaly);
                } else {
                    normal += 1;
                    false_alarms += usize::from(decision.is_anomaly);
                }
            }
            let recall = caught as f64 / anomalies as f64;
            let false_rate = false_alarms as f64 / normal as f64;
            assert!(anomalies > 1_800, "about 1% injected: {anomalies}");
            assert!(recall >= 0.95, "seed {seed}: caught {caught} of {anomalies}");
            assert!(false_rate <= 0.005, "seed {seed}: {false_alarms} of {normal} normal points flagged");
        }
    }

    #[test]
    fn one_region_starts_one_alert_and_tiny_deviations_never_count() {
        let mut threshold = Threshold::new(ThresholdConfig { warm_up: 10, ..ThresholdConfig::default() });
        // A quiet stream: scores hover near 0.8, with a tiny bump to 1.2.
        for i in 0..500 {
            let score = if i == 300 { 1.2 } else { 0.8 + 0.01 * f64::from(i % 3) };
            assert!(!threshold.observe(score).is_anomaly, "a small deviation at {i} is not an anomaly");
        }
        // A burst: three high scores, a short lull, two more: one region, one alert.
        let burst = [4.0, 3.5, 3.8, 0.8, 0.8, 3.9, 4.1];
        let decisions: Vec<Decision> = burst.iter().map(|&s| threshold.observe(s)).collect();
        let flagged: Vec<bool> = decisions.iter().map(|d| d.is_anomaly).collect();
        assert_eq!(flagged, [true, true, true, false, false, true, true]);
        let starts = decisions.iter().filter(|d| d.starts_region).count();
        assert_eq!(starts, 1, "{decisions:?}");
        assert!(decisions[0].grade > 0.5 && decisions[0].grade <= 1.0);
        // The burst did not raise the bar: the next anomaly after a long quiet spell is
        // flagged again and starts a new region.
        for _ in 0..50 {
            threshold.observe(0.8);
        }
        let later = threshold.observe(3.0);
        assert!(later.is_anomaly && later.starts_region, "{later:?}");
    }

    #[test]
    fn nothing_is_flagged_while_warming_up_or_learning() {
        let mut threshold = Threshold::new(ThresholdConfig { warm_up: 100, ..ThresholdConfig::default() });
        assert!(!threshold.observe(0.0).is_anomaly, "a learning forest's 0 is not a score");
        for _ in 0..99 {
            assert!(!threshold.observe(9.0).is_anomaly);
        }
        assert!(!threshold.is_warm());
    }
}
