//! What the live page shows, kept in memory and bounded: the latest points of the most
//! recently active entities, the latest anomalies, and anomaly counts of the last hour.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::event::{Attribution, ScoredEvent};
use crate::store::snapshot::ModelKey;

/// Points per entity chart.
const POINTS_PER_SERIES: usize = 300;
/// Entities charted (the most recently active); more would not fit a page anyway.
const MAX_SERIES: usize = 24;
const LATEST_ANOMALIES: usize = 50;
const TOP_ENTITIES: usize = 10;
const HOUR_MS: i64 = 3_600_000;
/// Anomalies remembered for the hourly ranking; beyond this the oldest are forgotten
/// early (a flood of anomalies must not grow memory without bound).
const MAX_RECENT_ANOMALIES: usize = 100_000;

#[derive(Debug, Clone, Serialize)]
pub struct LivePoint {
    pub t: i64,
    pub value: f64,
    pub score: f64,
    pub grade: f64,
    pub anomaly: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveSeries {
    pub detector: String,
    pub entity: String,
    pub feature: String,
    pub points: VecDeque<LivePoint>,
    #[serde(skip)]
    updated: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveAnomaly {
    pub t: i64,
    pub detector: String,
    pub entity: String,
    pub score: f64,
    pub grade: f64,
    pub values: BTreeMap<String, f64>,
    pub expected: BTreeMap<String, f64>,
    pub attribution: BTreeMap<String, Attribution>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub records: u64,
    pub anomalies: u64,
    pub models: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopEntity {
    pub detector: String,
    pub entity: String,
    pub anomalies: u64,
}

/// The body of `GET /api/live`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSnapshot {
    pub now_ms: i64,
    pub totals: Totals,
    pub series: Vec<LiveSeries>,
    pub anomalies: Vec<LiveAnomaly>,
    pub top_entities: Vec<TopEntity>,
}

#[derive(Default)]
pub struct LiveView {
    /// Few (MAX_SERIES), so found by a scan that needs no key allocated per record.
    series: Vec<LiveSeries>,
    anomalies: VecDeque<LiveAnomaly>,
    /// (wall-clock ms, key) of each anomaly of about the last hour, oldest first.
    recent: VecDeque<(i64, ModelKey)>,
    totals: Totals,
    tick: u64,
}

impl LiveView {
    /// Takes in one scored event; `feature` names the value charted (the detector's first).
    pub fn observe(&mut self, event: &ScoredEvent, feature: &str, now_ms: i64) {
        self.tick += 1;
        self.totals.records += 1;
        let found = self.series.iter().position(|s| s.entity == event.entity && s.detector == event.detector);
        let index = match found {
            Some(index) => index,
            None => {
                if self.series.len() >= MAX_SERIES {
                    if let Some(stalest) = self.series.iter().enumerate().min_by_key(|(_, s)| s.updated).map(|(i, _)| i)
                    {
                        self.series.swap_remove(stalest);
                    }
                }
                self.series.push(LiveSeries {
                    detector: event.detector.clone(),
                    entity: event.entity.clone(),
                    feature: feature.to_owned(),
                    points: VecDeque::with_capacity(POINTS_PER_SERIES),
                    updated: 0,
                });
                self.series.len() - 1
            }
        };
        let series = &mut self.series[index];
        series.updated = self.tick;
        if series.points.len() == POINTS_PER_SERIES {
            series.points.pop_front();
        }
        series.points.push_back(LivePoint {
            t: event.event_ms,
            value: event.values.get(feature).copied().unwrap_or(f64::NAN),
            score: event.anomaly_score,
            grade: event.anomaly_grade,
            anomaly: event.is_anomaly,
        });
        if event.is_anomaly {
            self.totals.anomalies += 1;
            if self.anomalies.len() == LATEST_ANOMALIES {
                self.anomalies.pop_back();
            }
            self.anomalies.push_front(LiveAnomaly {
                t: event.event_ms,
                detector: event.detector.clone(),
                entity: event.entity.clone(),
                score: event.anomaly_score,
                grade: event.anomaly_grade,
                values: event.values.clone(),
                expected: event.expected_values.clone(),
                attribution: event.attribution.clone(),
            });
            if self.recent.len() == MAX_RECENT_ANOMALIES {
                self.recent.pop_front();
            }
            self.recent
                .push_back((now_ms, ModelKey { detector: event.detector.clone(), entity: event.entity.clone() }));
        }
    }

    pub fn error_seen(&mut self) {
        self.totals.errors += 1;
    }

    pub fn snapshot(&mut self, now_ms: i64, models: u64) -> LiveSnapshot {
        while self.recent.front().is_some_and(|(t, _)| now_ms - t > HOUR_MS) {
            self.recent.pop_front();
        }
        let mut counts: HashMap<&ModelKey, u64> = HashMap::new();
        for (_, key) in &self.recent {
            *counts.entry(key).or_default() += 1;
        }
        let mut top: Vec<TopEntity> = counts
            .into_iter()
            .map(|(k, n)| TopEntity { detector: k.detector.clone(), entity: k.entity.clone(), anomalies: n })
            .collect();
        top.sort_by(|a, b| b.anomalies.cmp(&a.anomalies).then_with(|| a.entity.cmp(&b.entity)));
        top.truncate(TOP_ENTITIES);
        let mut series = self.series.clone();
        series.sort_by(|a, b| (&a.detector, &a.entity).cmp(&(&b.detector, &b.entity)));
        LiveSnapshot {
            now_ms,
            totals: Totals { models, ..self.totals.clone() },
            series,
            anomalies: self.anomalies.iter().cloned().collect(),
            top_entities: top,
        }
    }
}
