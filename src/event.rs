//! What flows along the path: a [`Record`] from a source, the [`ScoredEvent`] the
//! detector makes of it (the OpenSearch document, the gRPC reply, the local store row),
//! an [`Alert`] for the first record of an anomaly region, and a [`DeadLetter`] for a
//! record that could not be scored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detector::model::{Direction, FeatureAttribution};
use crate::store::snapshot::SourcePosition;

/// One record on its way to a detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub detector: String,
    pub entity: String,
    /// Milliseconds since the Unix epoch.
    pub event_ms: i64,
    /// Feature values by name; NaN marks a missing value.
    pub values: BTreeMap<String, f64>,
    /// A client-chosen id (gRPC), used as the event id when there is no source position.
    pub id: Option<String>,
    pub source: Option<SourcePosition>,
}

/// Attribution of one feature, as RANDOM_CUT_FOREST_WITH_EXPLANATION reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub score: f64,
    pub direction: Direction,
    pub strength: f64,
}

impl From<&FeatureAttribution> for Attribution {
    fn from(a: &FeatureAttribution) -> Self {
        Attribution { score: a.score, direction: a.direction, strength: a.strength }
    }
}

/// A scored record: the contract shared by every sink (see DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredEvent {
    /// Derived from the source position (or the client's id), so a replay overwrites.
    pub id: String,
    #[serde(rename = "@timestamp")]
    pub event_ms: i64,
    pub ingested_at: i64,
    pub detector: String,
    pub entity: String,
    pub values: BTreeMap<String, f64>,
    pub anomaly_score: f64,
    pub anomaly_grade: f64,
    pub confidence: f64,
    pub is_anomaly: bool,
    pub learning: bool,
    /// The first record of an anomaly region (the one an alert is raised for).
    pub starts_region: bool,
    /// Per feature; empty unless `is_anomaly`.
    pub attribution: BTreeMap<String, Attribution>,
    /// Per feature; empty unless `is_anomaly`.
    pub expected_values: BTreeMap<String, f64>,
    pub steps_back: usize,
    pub source: Option<SourcePosition>,
}

/// How urgent an alert is, from the anomaly grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// Grades past the threshold by up to a third are low, up to two thirds medium.
    pub fn of_grade(grade: f64) -> Self {
        if grade >= 2.0 / 3.0 {
            Severity::High
        } else if grade >= 1.0 / 3.0 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// An alert: raised once per anomaly region per entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub severity: Severity,
    /// One human-readable line.
    pub summary: String,
    pub event: ScoredEvent,
}

impl Alert {
    pub fn of(event: &ScoredEvent) -> Self {
        let severity = Severity::of_grade(event.anomaly_grade);
        let mut causes: Vec<(&String, &Attribution)> = event.attribution.iter().collect();
        causes.sort_by(|a, b| b.1.strength.total_cmp(&a.1.strength));
        let cause = match causes.first() {
            Some((feature, a)) => {
                let value = event.values.get(*feature).copied().unwrap_or(f64::NAN);
                let expected =
                    event.expected_values.get(*feature).map_or(String::new(), |e| format!(", expected about {e:.3}"));
                let direction = match a.direction {
                    Direction::High => "high",
                    Direction::Low => "low",
                };
                format!(": {feature} = {value} is {direction}{expected}")
            }
            None => String::new(),
        };
        let summary = format!(
            "{severity:?} anomaly on {}/{} (score {:.2}, grade {:.2}){cause}",
            event.detector, event.entity, event.anomaly_score, event.anomaly_grade
        );
        Alert { severity, summary, event: event.clone() }
    }
}

/// A record that could not be decoded or scored, kept with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from: `grpc`, `simulator`, or a stream name.
    pub origin: String,
    pub source: Option<SourcePosition>,
    pub raw: Vec<u8>,
    pub reason: String,
    pub at_ms: i64,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_names_the_feature_that_caused_it() {
        let event = ScoredEvent {
            id: "x".into(),
            event_ms: 1,
            ingested_at: 2,
            detector: "iot-sensor".into(),
            entity: "DemoSensor".into(),
            values: BTreeMap::from([("iotValue".into(), 112.0)]),
            anomaly_score: 3.2,
            anomaly_grade: 0.9,
            confidence: 1.0,
            is_anomaly: true,
            learning: false,
            starts_region: true,
            attribution: BTreeMap::from([(
                "iotValue".into(),
                Attribution { score: 3.2, direction: Direction::High, strength: 1.0 },
            )]),
            expected_values: BTreeMap::from([("iotValue".into(), 15.0)]),
            steps_back: 0,
            source: None,
        };
        let alert = Alert::of(&event);
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(
            alert.summary,
            "High anomaly on iot-sensor/DemoSensor (score 3.20, grade 0.90): iotValue = 112 is high, expected about 15.000"
        );
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(json["@timestamp"], 1);
        assert_eq!(json["attribution"]["iotValue"]["direction"], "HIGH");
    }
}
