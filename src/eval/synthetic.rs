//! A held-out, labelled corpus in NAB's format: seeded synthetic series ("sensor",
//! "traffic" and "flow" shapes) with injected anomalies of known kinds and NAB-style
//! windows around them. NAB's own files are what the detector defaults were tuned on;
//! these series were not, so scoring them tells whether the tuning generalises.
//!
//! Deterministic: the same seed gives the same corpus, bit for bit, on every machine
//! (its own xorshift generator and Box-Muller normals, no platform randomness).

use std::path::Path;

use super::corpus::{CorpusError, Series};

/// Minutes between rows (NAB's real series are mostly 5-minute data).
const STEP_MINUTES: i64 = 5;
/// Rows per day at that step: the period of the daily pattern.
const DAY: usize = 24 * 60 / STEP_MINUTES as usize;
/// NAB's windows together cover a tenth of a file, split over its anomalies.
const WINDOW_SHARE: f64 = 0.10;

/// What is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// One row outside the series' whole normal range (beyond its cycle and noise).
    Spike,
    /// The level steps up or down and stays there.
    LevelShift,
    /// The noise grows several-fold for a stretch.
    VarianceChange,
    /// The daily pattern runs several times faster for a stretch.
    FrequencyChange,
    /// A slow ramp away from the normal level over a stretch, then back.
    Drift,
    /// The value sticks at one reading (a stuck sensor) for a stretch.
    Flatline,
}

const KINDS: [Anomaly; 6] = [
    Anomaly::Spike,
    Anomaly::LevelShift,
    Anomaly::VarianceChange,
    Anomaly::FrequencyChange,
    Anomaly::Drift,
    Anomaly::Flatline,
];

/// The shape of the normal signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A level with a daily sine and Gaussian noise (a temperature or CPU sensor).
    Sensor,
    /// Positive counts with a daily and a weekly cycle and noise growing with the level.
    Traffic,
    /// A mean-reverting AR(1) process around a level (a flow rate or latency).
    Flow,
}

/// xorshift64* with Box-Muller normals: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
    fn sign(&mut self) -> f64 {
        if self.uniform() < 0.5 {
            -1.0
        } else {
            1.0
        }
    }
}

/// One series' normal signal, before anomalies: (value, noise deviation) per row, with
/// `phase_speed` the speed of the daily cycle per row (1 normally).
struct Signal {
    shape: Shape,
    level: f64,
    amplitude: f64,
    noise: f64,
    ar: f64,
}

impl Signal {
    fn random(shape: Shape, rng: &mut Rng) -> Self {
        let level = rng.range(20.0, 200.0);
        match shape {
            Shape::Sensor => Signal {
                shape,
                level,
                amplitude: level * rng.range(0.05, 0.3),
                noise: level * rng.range(0.005, 0.03),
                ar: 0.0,
            },
            Shape::Traffic => {
                Signal { shape, level, amplitude: level * rng.range(0.3, 0.7), noise: rng.range(0.02, 0.06), ar: 0.0 }
            }
            Shape::Flow => Signal {
                shape,
                level,
                amplitude: level * rng.range(0.0, 0.1),
                noise: level * rng.range(0.02, 0.05),
                ar: rng.range(0.6, 0.95),
            },
        }
    }

    /// The noise-free value at daily phase `phase` (radians) on row `row`.
    fn base(&self, phase: f64, row: usize) -> f64 {
        match self.shape {
            Shape::Sensor | Shape::Flow => self.level + self.amplitude * phase.sin(),
            Shape::Traffic => {
                let weekly = 1.0 - 0.25 * f64::from(u8::from((row / DAY) % 7 >= 5));
                (self.level + self.amplitude * phase.sin()).max(1.0) * weekly
            }
        }
    }

    /// One row's noise, scaled as the shape's noise is (`scale` 1 normally).
    fn noise(&self, value: f64, scale: f64, rng: &mut Rng) -> f64 {
        match self.shape {
            Shape::Traffic => value * self.noise * scale * rng.normal(),
            _ => self.noise * scale * rng.normal(),
        }
    }
}

/// One generated series with the anomalies injected and the rows where each starts.
fn series(name: String, category: &str, shape: Shape, kinds: &[Anomaly], rng: &mut Rng) -> Series {
    let rows = 2_000 + rng.below(4_000);
    let signal = Signal::random(shape, rng);
    // Anomalies start after NAB's probation and well apart, in order.
    let first = (rows as f64 * 0.25) as usize;
    let span = (rows - first) / kinds.len().max(1);
    let starts: Vec<usize> = (0..kinds.len()).map(|k| first + k * span + rng.below(span / 3)).collect();
    let stretch = |rng: &mut Rng| DAY / 4 + rng.below(DAY / 2);
    let plans: Vec<(Anomaly, usize, usize, f64)> = kinds
        .iter()
        .zip(&starts)
        .map(|(&kind, &start)| {
            let end = match kind {
                Anomaly::Spike => start + 1,
                Anomaly::LevelShift => rows,
                _ => (start + stretch(rng)).min(rows),
            };
            (kind, start, end, rng.sign())
        })
        .collect();
    let mut phase = rng.range(0.0, std::f64::consts::TAU);
    let mut ar_noise = 0.0;
    let mut values = Vec::with_capacity(rows);
    let mut stuck = None;
    let deviation = match shape {
        Shape::Traffic => signal.level * signal.noise,
        _ => signal.noise,
    };
    for row in 0..rows {
        let active = |kind: Anomaly| plans.iter().find(|p| p.0 == kind && p.1 <= row && row < p.2);
        let speed = if active(Anomaly::FrequencyChange).is_some() { 4.0 } else { 1.0 };
        phase += speed * std::f64::consts::TAU / DAY as f64;
        let mut value = signal.base(phase, row);
        let scale = if active(Anomaly::VarianceChange).is_some() { 5.0 } else { 1.0 };
        let noise = signal.noise(value, scale, rng);
        ar_noise = signal.ar * ar_noise + noise;
        value += if signal.ar > 0.0 { ar_noise } else { noise };
        if let Some(&(_, _, _, sign)) = active(Anomaly::Spike) {
            value += sign * (6.0 * deviation + 2.5 * signal.amplitude);
        }
        if let Some(&(_, _, _, sign)) = plans.iter().find(|p| p.0 == Anomaly::LevelShift && p.1 <= row) {
            value += sign * (4.0 * deviation + 0.3 * signal.amplitude);
        }
        if let Some(&(_, start, end, sign)) = active(Anomaly::Drift) {
            // Up to the ramp's height at its middle, back down by its end.
            let t = (row - start) as f64 / (end - start).max(1) as f64;
            value += sign * (1.0 - (2.0 * t - 1.0).abs()) * (8.0 * deviation + 0.5 * signal.amplitude);
        }
        if active(Anomaly::Flatline).is_some() {
            value = *stuck.get_or_insert(value);
        } else {
            stuck = None;
        }
        values.push(value as f32);
    }
    // NAB's windows: a tenth of the file split over the anomalies, centred on each start.
    let width = ((rows as f64 * WINDOW_SHARE) / kinds.len().max(1) as f64) as usize;
    let windows = starts.iter().map(|&s| (s.saturating_sub(width / 2), (s + width / 2).min(rows - 1))).collect();
    let timestamps = (0..rows).map(|row| timestamp(row as i64 * STEP_MINUTES)).collect();
    Series { name, category: category.to_owned(), timestamps, values, windows }
}

/// `YYYY-MM-DD HH:MM:SS`, `minutes` after 2021-01-01 00:00.
fn timestamp(minutes: i64) -> String {
    let start = crate::calendar::days_from_civil(2021, 1, 1);
    let (y, m, d) = crate::calendar::civil_from_days(start + minutes / 1_440);
    let minute = minutes % 1_440;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:00", minute / 60, minute % 60)
}

/// The held-out corpus of `seed`: `rounds` times, per shape, one series per anomaly
/// kind (one or two anomalies each) and one series without anomalies, as categories
/// `synthetic<Shape>` (21 series a round).
pub fn corpus(seed: u64, rounds: usize) -> Vec<Series> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for round in 0..rounds {
        out.extend(one_round(round, &mut rng));
    }
    out
}

fn one_round(round: usize, rng: &mut Rng) -> Vec<Series> {
    let mut out = Vec::new();
    for (shape, category) in
        [(Shape::Sensor, "syntheticSensor"), (Shape::Traffic, "syntheticTraffic"), (Shape::Flow, "syntheticFlow")]
    {
        for (k, &kind) in KINDS.iter().enumerate() {
            // Some series get a second anomaly of another kind after the first.
            let mut kinds = vec![kind];
            if rng.uniform() < 0.5 && kind != Anomaly::LevelShift {
                kinds.push(KINDS[(k + 1 + rng.below(KINDS.len() - 1)) % KINDS.len()]);
            }
            let names: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
            let name = format!("{category}/r{round}_{}_{k}.csv", names.join("_").to_lowercase());
            out.push(series(name, category, shape, &kinds, rng));
        }
        out.push(series(format!("{category}/r{round}_no_anomaly.csv"), category, shape, &[], rng));
    }
    out
}

/// Floors of the held-out test (NAB standard, seed 11, one round): the defaults score
/// 45.4 swept on peak_score and 40.4 as alerts (35.7 before alerts needed a peak above
/// threshold.alert_min_score; the defaults before that, sample size 256, min_score 1.5,
/// alerts at every region start, scored far lower as alerts).
#[cfg(test)]
const HELD_OUT_FLOOR: f64 = 40.0;
#[cfg(test)]
const ALERT_FLOOR: f64 = 36.0;

/// NAB's three profiles, as NAB's `config/profiles.json` has them.
const PROFILES_JSON: &str = r#"{
  "standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}},
  "reward_low_FP_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0}},
  "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}}
}
"#;

/// Writes `series` as a NAB corpus under `dir`: `data/<category>/<file>.csv`,
/// `labels/combined_windows.json` and `config/profiles.json`, so that `rcfd eval nab`
/// scores it like NAB's own files.
pub fn write(dir: &Path, series: &[Series]) -> Result<(), CorpusError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CorpusError::Read { path, source }
    };
    let mut windows = serde_json::Map::new();
    for s in series {
        let path = dir.join("data").join(&s.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut csv = String::from("timestamp,value\n");
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            csv.push_str(&format!("{t},{v}\n"));
        }
        std::fs::write(&path, csv).map_err(io(&path))?;
        let rows: Vec<serde_json::Value> = s
            .windows
            .iter()
            .map(|&(a, b)| {
                serde_json::json!([format!("{}.000000", s.timestamps[a]), format!("{}.000000", s.timestamps[b])])
            })
            .collect();
        windows.insert(s.name.clone(), serde_json::Value::Array(rows));
    }
    for (sub, file, text) in [
        ("labels", "combined_windows.json", serde_json::Value::Object(windows).to_string()),
        ("config", "profiles.json", PROFILES_JSON.to_owned()),
    ] {
        let folder = dir.join(sub);
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let path = folder.join(file);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::config::{DetectorConfig, ForestSettings, Transform};
    use crate::detector::model::Model;
    use crate::eval::nab::{self, Profile, ScoredFile};

    /// Every series through its own model of the default detector, swept on peak_score
    /// as `rcfd eval nab` does; also the alerts as the service would send them.
    fn score(series: &[Series]) -> (Vec<ScoredFile>, Vec<ScoredFile>) {
        let config =
            DetectorConfig::offline("held-out", vec!["value".into()], Transform::None, ForestSettings::default());
        let detector = config.validate().expect("the default detector is valid");
        let (mut peaks, mut alerts) = (Vec::new(), Vec::new());
        for s in series {
            let mut model = Model::new(&detector);
            let (mut p, mut a) = (Vec::new(), Vec::new());
            for &v in &s.values {
                let output = model.process(&[f64::from(v)]).expect("scores");
                p.push(output.peak_score);
                a.push(f64::from(u8::from(output.is_anomaly && output.starts_region)));
            }
            let file = |scores| ScoredFile {
                name: s.name.clone(),
                category: s.category.clone(),
                scores,
                windows: s.windows.clone(),
            };
            peaks.push(file(p));
            alerts.push(file(a));
        }
        (peaks, alerts)
    }

    /// The held-out check of the detector defaults (tuned on NAB's files, never on these).
    /// The floors sit a few points under what the defaults score here, so a change of
    /// default that loses accuracy on series it was not tuned on fails this test.
    #[test]
    fn the_default_detector_scores_on_held_out_series() {
        let series = corpus(11, 1);
        let (peaks, alerts) = score(&series);
        let standard = Profile { name: "standard".into(), tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0 };
        let swept = nab::best_threshold(&peaks, &standard);
        let alerted = nab::evaluate(&alerts, 1.0, &standard);
        eprintln!("held-out, seed 11: peak_score swept {swept:?}; alerts {alerted:?}");
        let (swept, alerted) = (swept.normalized.unwrap_or(0.0), alerted.normalized.unwrap_or(0.0));
        assert!(swept >= HELD_OUT_FLOOR, "NAB standard on peak_score {swept:.1} < {HELD_OUT_FLOOR}");
        assert!(alerted >= ALERT_FLOOR, "NAB standard of the alerts {alerted:.1} < {ALERT_FLOOR}");
        // Injected spikes rank above every normal point of their series.
        for (s, file) in series.iter().zip(&peaks) {
            if !s.name.contains("/r0_spike") {
                continue;
            }
            let (a, b) = s.windows[0];
            let inside = file.scores[a..=b].iter().copied().fold(0.0, f64::max);
            let start = nab::probation(file.scores.len());
            let outside = (start..file.scores.len())
                .filter(|r| !s.windows.iter().any(|&(a, b)| a <= *r && *r <= b))
                .map(|r| file.scores[r])
                .fold(0.0, f64::max);
            assert!(inside > outside, "{}: spike window peaks at {inside}, normal points at {outside}", s.name);
        }
    }

    #[test]
    fn the_corpus_is_deterministic_and_labelled_as_nab_is() {
        let a = corpus(7, 2);
        assert_eq!(a.len(), 2 * 3 * (KINDS.len() + 1));
        let b = corpus(7, 2);
        assert!(a.iter().zip(&b).all(|(x, y)| x.values == y.values && x.windows == y.windows));
        assert_ne!(corpus(8, 1)[0].values, a[0].values, "another seed, another corpus");
        for s in &a {
            let anomalies = s.windows.len();
            assert_eq!(anomalies == 0, s.name.ends_with("no_anomaly.csv"), "{}", s.name);
            for &(start, end) in &s.windows {
                assert!(start >= super::super::nab::probation(s.values.len()) && start < end, "{}", s.name);
                assert!(end < s.values.len());
            }
            assert!(s.values.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn a_written_corpus_reads_back_with_the_same_windows() {
        let dir = std::env::temp_dir().join(format!("rcfd-synthetic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let series = corpus(3, 1);
        write(&dir, &series).expect("written");
        let read = super::super::corpus::load(&dir.join("data"), &dir.join("labels/combined_windows.json"))
            .expect("read back");
        for s in &series {
            let r = read.iter().find(|r| r.name == s.name).expect("every file");
            assert_eq!((r.windows.clone(), r.values.len()), (s.windows.clone(), s.values.len()), "{}", s.name);
        }
        let profiles = super::super::corpus::load_profiles(&dir.join("config/profiles.json")).expect("profiles");
        assert_eq!(profiles.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
