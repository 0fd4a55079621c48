//! Detector configuration: what a detector reads from a record (entity key, features),
//! how it models them (transform, shingle, forest) and when it flags (threshold).
//! TOML files in `models/`; validated into a [`Detector`] before anything is built.

use serde::{Deserialize, Serialize};

use super::threshold::{ThresholdConfig, MAX_PEAK_WINDOW};
use crate::forest::{ForestConfig, ForestError, ForestParams};

/// Points each tree keeps unless a detector says otherwise. 1024 rather than the
/// forest's 256: on NAB (31 files, one threshold; standard / low FP / low FN) 71.1 /
/// 65.5 / 75.1 against 64.7 / 53.1 / 70.8 with fewer false positives (56 against 129),
/// alike on three forest seeds, and 48.1 / 42.0 / 55.2 against 45.6 / 37.5 / 55.2 on the
/// held-out synthetic corpus; 512 and 768 scored in between. It costs 3.6 times the
/// memory per model (840 against 231 KiB) and scores about 2.5 times slower.
pub const DEFAULT_SAMPLE_SIZE: usize = 1_024;

/// Points of time decay the Kinesis Analytics RANDOM_CUT_FOREST function uses.
pub const KINESIS_ANALYTICS_TIME_DECAY_POINTS: f64 = 100_000.0;

impl std::str::FromStr for Transform {
    type Err = String;

    /// The names the TOML files use (`none`, `normalize`, `difference`, `normalize_difference`).
    fn from_str(name: &str) -> Result<Self, String> {
        serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name))
            .map_err(|_| format!("`{name}`: one of none, normalize, difference, normalize_difference"))
    }
}

/// How values are transformed before the forest sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The values as they are.
    #[default]
    None,
    /// Each feature standardised by its running mean and deviation.
    Normalize,
    /// Each feature's change since the previous record.
    Difference,
    /// The change since the previous record, standardised.
    NormalizeDifference,
}

/// Forest parameters of a detector (the features come from `features`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestSettings {
    /// Number of trees.
    pub trees: usize,
    /// Points each tree keeps; default 1024 (`DEFAULT_SAMPLE_SIZE`).
    pub sample_size: usize,
    /// Weight decay per point; default 0.1 / sample_size.
    pub time_decay: Option<f64>,
    /// Points before scores are reported; default sample_size / 4.
    pub output_after: Option<usize>,
    /// Records per point (shingle); 1 for none.
    pub shingle_size: usize,
    /// Seed of the forest's random choices.
    pub seed: u64,
}

impl Default for ForestSettings {
    fn default() -> Self {
        let forest = ForestConfig::default();
        ForestSettings {
            trees: forest.trees,
            sample_size: DEFAULT_SAMPLE_SIZE,
            time_decay: None,
            output_after: None,
            shingle_size: forest.shingle_size,
            seed: forest.seed,
        }
    }
}

/// A detector as written in a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Name, unique among detectors: letters, digits, `-` and `_`.
    pub name: String,
    /// Start from a preset (`kinesis-analytics`); fields set here override it.
    #[serde(default)]
    pub preset: Option<String>,
    /// Record fields whose values together name the entity (one model per entity).
    pub entity_key: Vec<String>,
    /// Numeric record fields the model scores, in this order.
    pub features: Vec<String>,
    #[serde(default)]
    pub transform: Transform,
    #[serde(default)]
    pub forest: Option<ForestSettings>,
    #[serde(default)]
    pub threshold: ThresholdConfig,
}

/// A validated detector: every default resolved, every bound checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    pub name: String,
    pub entity_key: Vec<String>,
    pub features: Vec<String>,
    pub transform: Transform,
    pub forest: ForestParams,
    pub threshold: ThresholdConfig,
}

/// A configuration error: the field's path, its value, and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value}: {allowed}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub allowed: String,
}

fn error(field: impl Into<String>, value: impl std::fmt::Debug, allowed: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), value: format!("{value:?}"), allowed: allowed.into() }
}

/// The forest settings of a preset.
fn preset(name: &str) -> Option<ForestSettings> {
    match name {
        // RANDOM_CUT_FOREST's parameters, so migrating users get comparable ANOMALY_SCOREs.
        "kinesis-analytics" => Some(ForestSettings {
            trees: 100,
            sample_size: 256,
            time_decay: Some(1.0 / KINESIS_ANALYTICS_TIME_DECAY_POINTS),
            shingle_size: 1,
            ..ForestSettings::default()
        }),
        _ => None,
    }
}

fn names_are_valid(field: &str, names: &[String]) -> Result<(), ConfigError> {
    if names.is_empty() {
        return Err(error(field, names, "at least one field name"));
    }
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(error(format!("{field}[{i}]"), name, "a non-empty field name"));
        }
        if names[..i].contains(name) {
            return Err(error(format!("{field}[{i}]"), name, "each field once"));
        }
    }
    Ok(())
}

impl DetectorConfig {
    /// A detector for one series or file, which has no entity field to key models by
    /// (offline scoring and evaluation).
    pub fn offline(name: &str, features: Vec<String>, transform: Transform, forest: ForestSettings) -> Self {
        DetectorConfig {
            name: name.to_owned(),
            preset: None,
            entity_key: vec!["file".into()],
            features,
            transform,
            forest: Some(forest),
            threshold: ThresholdConfig::default(),
        }
    }

    /// Parses a detector from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let field = e.span().map_or_else(String::new, |s| format!("at bytes {}..{}", s.start, s.end));
            ConfigError {
                field: if field.is_empty() { "detector".into() } else { field },
                value: String::new(),
                allowed: e.message().to_owned(),
            }
        })
    }

    /// Checks every field and resolves defaults and the preset; pure.
    pub fn validate(&self) -> Result<Detector, ConfigError> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(error("name", &self.name, "1 to 64 letters, digits, `-` or `_`"));
        }
        names_are_valid("entity_key", &self.entity_key)?;
        names_are_valid("features", &self.features)?;
        let base = match &self.preset {
            None => ForestSettings::default(),
            Some(name) => preset(name).ok_or_else(|| error("preset", name, "`kinesis-analytics`"))?,
        };
        let settings = self.forest.clone().unwrap_or(base);
        let forest = ForestConfig {
            features: self.features.len(),
            shingle_size: settings.shingle_size,
            trees: settings.trees,
            sample_size: settings.sample_size,
            time_decay: settings.time_decay,
            output_after: settings.output_after,
            seed: settings.seed,
            threads: 1,
        }
        .validate()
        .map_err(|e| match e {
            ForestError::InvalidParameter { field, value, allowed } => {
                ConfigError { field: format!("forest.{field}"), value, allowed }
            }
            other => error("forest", other.to_string(), "a valid forest"),
        })?;
        let t = &self.threshold;
        if !(t.z.is_finite() && t.z > 0.0) {
            return Err(error("threshold.z", t.z, "a positive number"));
        }
        if !(t.min_score.is_finite() && t.min_score >= 0.0) {
            return Err(error("threshold.min_score", t.min_score, "a number >= 0"));
        }
        if !(t.alert_min_score.is_finite() && t.alert_min_score >= 0.0) {
            return Err(error("threshold.alert_min_score", t.alert_min_score, "a number >= 0"));
        }
        if t.horizon == 0 {
            return Err(error("threshold.horizon", t.horizon, "at least 1"));
        }
        if t.peak_window > MAX_PEAK_WINDOW {
            return Err(error("threshold.peak_window", t.peak_window, format!("0 to {MAX_PEAK_WINDOW}")));
        }
        Ok(Detector {
            name: self.name.clone(),
            entity_key: self.entity_key.clone(),
            features: self.features.clone(),
            transform: self.transform,
            forest,
            threshold: self.threshold.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOT: &str = r#"
        name = "iot-temperature"
        entity_key = ["iotName"]
        features = ["iotValue"]
        transform = "normalize"

        [forest]
        trees = 50
        shingle_size = 4

        [threshold]
        z = 3.5
    "#;

    #[test]
    fn a_detector_file_validates_with_defaults_filled_in() {
        let detector = DetectorConfig::from_toml(IOT).expect("parses").validate().expect("valid");
        assert_eq!(detector.features, ["iotValue"]);
        assert_eq!(detector.transform, Transform::Normalize);
        assert_eq!((detector.forest.trees, detector.forest.shingle_size, detector.forest.sample_size), (50, 4, 1024));
        assert_eq!(detector.forest.time_decay, 0.1 / 1024.0);
        assert_eq!(detector.threshold.z, 3.5);
        assert_eq!(detector.threshold.min_score, ThresholdConfig::default().min_score);
    }

    #[test]
    fn transforms_parse_by_their_file_names() {
        assert_eq!("normalize_difference".parse::<Transform>(), Ok(Transform::NormalizeDifference));
        assert_eq!(
            "log".parse::<Transform>(),
            Err("`log`: one of none, normalize, difference, normalize_difference".to_owned())
        );
    }

    #[test]
    fn the_kinesis_analytics_preset_matches_random_cut_forest() {
        let text = "name = \"migrated\"\npreset = \"kinesis-analytics\"\nentity_key = [\"k\"]\nfeatures = [\"v\"]\n";
        let detector = DetectorConfig::from_toml(text).expect("parses").validate().expect("valid");
        let forest = detector.forest;
        assert_eq!((forest.trees, forest.sample_size, forest.shingle_size), (100, 256, 1));
        assert_eq!(forest.time_decay, 1.0 / 100_000.0);
    }

    #[test]
    fn errors_name_the_field_the_value_and_what_is_allowed() {
        let bad = |edit: &str| DetectorConfig::from_toml(&format!("{IOT}\n{edit}")).and_then(|c| c.validate());
        let err = DetectorConfig::from_toml(&IOT.replace("trees = 50", "trees = 0"))
            .expect("parses")
            .validate()
            .expect_err("0 trees");
        assert_eq!(err.to_string(), "forest.trees = 0: 1 to 1000");
        let err = DetectorConfig::from_toml(&IOT.replace("iot-temperature", "iot temperature"))
            .expect("parses")
            .validate()
            .expect_err("space");
        assert_eq!(err.field, "name");
        let err = DetectorConfig::from_toml(&IOT.replace("[\"iotValue\"]", "[\"a\", \"a\"]"))
            .expect("parses")
            .validate()
            .expect_err("twice");
        assert_eq!((err.field.as_str(), err.allowed.as_str()), ("features[1]", "each field once"));
        let err =
            DetectorConfig::from_toml(&IOT.replace("z = 3.5", "z = -1.0")).expect("parses").validate().expect_err("z");
        assert_eq!(err.field, "threshold.z");
        let err = DetectorConfig::from_toml(&IOT.replace("z = 3.5", "z = 3.5\nalert_min_score = nan"))
            .expect("parses")
            .validate()
            .expect_err("NaN alert floor");
        assert_eq!((err.field.as_str(), err.allowed.as_str()), ("threshold.alert_min_score", "a number >= 0"));
        let err = DetectorConfig::from_toml(&IOT.replace("\"normalize\"", "\"log\"")).expect_err("unknown transform");
        assert!(err.allowed.contains("unknown variant `log`"), "{err}");
        assert!(bad("colour = \"red\"").is_err(), "unknown fields are errors");
        let err = DetectorConfig::from_toml(&format!("preset = \"x\"\n{IOT}"))
            .expect("parses")
            .validate()
            .expect_err("preset");
        assert_eq!(err.field, "preset");
    }

    #[test]
    fn every_file_in_models_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("models/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                let config = DetectorConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(checked >= 2, "{checked} detector files");
    }
}
