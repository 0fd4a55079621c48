//! `rcfd score`: runs a CSV or NDJSON file through one detector's model, row by row
//! (score, judge, explain, learn), and writes every row back with the model's outputs:
//! for CSV appended as columns `anomaly_score, anomaly_grade, confidence, is_anomaly`,
//! then for anomalies the attribution per feature (`name DIRECTION strength`,
//! `;`-separated) and the expected values (`name=value`); for NDJSON (a first line
//! starting with `{`) added as fields of each object.
//!
//! The CSV is plain: comma-separated, no quoting. A first line with a non-numeric field
//! is a header. The features are the detector's (`--detector FILE`, matched by header
//! name), else the columns named with `--columns`, else every column that is numeric in
//! the first data row except one named `timestamp`, so `rcfd score nab_file.csv` scores
//! `value`. An empty cell is a missing value, imputed by the model.

use std::io::{BufRead, Write};

use crate::detector::config::{ConfigError, DetectorConfig, ForestSettings, Transform};
use crate::detector::model::{Direction, Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("reading or writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("the input has no data rows")]
    Empty,
    #[error("column `{name}` is not in the header (columns: {available})")]
    UnknownColumn { name: String, available: String },
    #[error("naming features (--columns or --detector) needs a header line")]
    NoHeader,
    #[error("no numeric column in the first data row (line {line})")]
    NoFeatures { line: usize },
    #[error("line {line}, column {column}: `{value}` is not a number")]
    NotANumber { line: usize, column: usize, value: String },
    #[error("line {line}: expected at least {expected} columns, found {found}")]
    ShortRow { line: usize, expected: usize, found: usize },
    #[error("line {line}: {source}")]
    Model { line: usize, source: ModelError },
    #[error("detector: {0}")]
    Config(#[from] ConfigError),
    #[error("line {line}: not a JSON object: {reason}")]
    NotJson { line: usize, reason: String },
    #[error("line {line}: field `{field}` is not a number")]
    NotANumberField { line: usize, field: String },
}

/// How to score: a detector file, or the default detector with these settings.
#[derive(Debug, Clone, Default)]
pub struct ScoreSettings {
    pub detector: Option<DetectorConfig>,
    pub columns: Option<Vec<String>>,
    pub transform: Transform,
    pub forest: ForestSettings,
}

/// Parses a cell: a number, or NaN (missing) when empty.
fn cell(line: usize, column: usize, value: &str) -> Result<f64, ScoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(f64::NAN);
    }
    value.parse::<f64>().map_err(|_| ScoreError::NotANumber { line, column: column + 1, value: value.to_owned() })
}

/// Header positions of `names`.
fn positions(header: &[String], names: &[String]) -> Result<Vec<usize>, ScoreError> {
    if header.is_empty() {
        return Err(ScoreError::NoHeader);
    }
    names
        .iter()
        .map(|name| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| ScoreError::UnknownColumn { name: name.clone(), available: header.join(", ") })
        })
        .collect()
}

/// What `--plot` draws, per scored row: the feature values, the anomaly score, the
/// flag, and the `timestamp` column or field when the input has one. Recorded only when
/// asked for, since it keeps every row of a file that is otherwise streamed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub features: Vec<String>,
    /// One per row, or empty when the input has no timestamp.
    pub timestamps: Vec<String>,
    /// One per row: the features' values in `features` order, NaN where missing.
    pub values: Vec<Vec<f64>>,
    pub scores: Vec<f64>,
    pub flagged: Vec<bool>,
}

impl Trace {
    fn record(&mut self, timestamp: Option<String>, values: &[f64], score: f64, flagged: bool) {
        if let Some(timestamp) = timestamp {
            self.timestamps.push(timestamp);
        }
        self.values.push(values.to_vec());
        self.scores.push(score);
        self.flagged.push(flagged);
    }
}

/// The model for features `names`: the detector's, or the default one with `settings`.
fn build_model(settings: &ScoreSettings, names: &[String]) -> Result<Model, ScoreError> {
    let config = settings.detector.clone().unwrap_or_else(|| {
        DetectorConfig::offline("score", names.to_vec(), settings.transform, settings.forest.clone())
    });
    Ok(Model::new(&config.validate()?))
}

/// Scores every row of `input` (CSV, or NDJSON when the first line starts with `{`)
/// and writes it, with the outputs, to `output`; returns the number of rows scored.
/// With `trace`, also records what `--plot` draws.
pub fn score_file(
    input: impl BufRead,
    output: impl Write,
    settings: &ScoreSettings,
    trace: Option<&mut Trace>,
) -> Result<usize, ScoreError> {
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let Some((first_line, first)) = lines.next() else {
        return Err(ScoreError::Empty);
    };
    let first = first?;
    if first.trim_start().starts_with('{') {
        let rest = lines.map(|(n, l)| l.map(|l| (n, l)));
        return score_ndjson(std::iter::once(Ok((first_line, first))).chain(rest), output, settings, trace);
    }
    score_rows(first_line, first, lines, output, settings, trace)
}

fn score_rows(
    first_line: usize,
    first: String,
    lines: impl Iterator<Item = (usize, std::io::Result<String>)>,
    mut output: impl Write,
    settings: &ScoreSettings,
    mut trace: Option<&mut Trace>,
) -> Result<usize, ScoreError> {
    let is_header = first.split(',').any(|f| !f.trim().is_empty() && f.trim().parse::<f64>().is_err());
    let header: Vec<String> =
        if is_header { first.split(',').map(|f| f.trim().to_owned()).collect() } else { Vec::new() };
    let pending = (!is_header).then(|| (first_line, first.clone()));
    let named = match (&settings.detector, &settings.columns) {
        (Some(detector), _) => Some(positions(&header, &detector.features)?),
        (None, Some(columns)) => Some(positions(&header, columns)?),
        (None, None) => None,
    };
    let timestamp_column = header.iter().position(|h| h == "timestamp");

    let mut model: Option<(Model, Vec<usize>, Vec<String>)> = None;
    let mut rows = 0;
    let rest = lines.map(|(n, l)| l.map(|l| (n, l)));
    for item in pending.map(Ok::<_, std::io::Error>).into_iter().chain(rest) {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        if model.is_none() {
            let features = named.clone().unwrap_or_else(|| {
                (0..fields.len())
                    .filter(|&c| header.get(c).is_none_or(|h| h != "timestamp"))
                    .filter(|&c| fields[c].trim().parse::<f64>().is_ok())
                    .collect()
            });
            if features.is_empty() {
                return Err(ScoreError::NoFeatures { line });
            }
            let names: Vec<String> = features
                .iter()
                .map(|&c| header.get(c).cloned().unwrap_or_else(|| format!("column{}", c + 1)))
                .collect();
            let built = build_model(settings, &names)?;
            if is_header {
                writeln!(
                    output,
                    "{first},anomaly_score,anomaly_grade,confidence,is_anomaly,attribution,expected_values"
                )?;
            }
            if let Some(trace) = trace.as_deref_mut() {
                trace.features = names.clone();
            }
            model = Some((built, features, names));
        }
        let Some((model, features, names)) = model.as_mut() else {
            continue;
        };
        let mut values = Vec::with_capacity(features.len());
        for &column in features.iter() {
            let value =
                fields.get(column).ok_or(ScoreError::ShortRow { line, expected: column + 1, found: fields.len() })?;
            values.push(cell(line, column, value)?);
        }
        let out = model.process(&values).map_err(|source| ScoreError::Model { line, source })?;
        if let Some(trace) = trace.as_deref_mut() {
            let timestamp = timestamp_column.map(|c| fields.get(c).map_or_else(String::new, |t| t.trim().to_owned()));
            trace.record(timestamp, &values, out.anomaly_score, out.is_anomaly);
        }
        let attribution: Vec<String> = out
            .attribution
            .iter()
            .zip(names.iter())
            .map(|(a, name)| {
                let direction = if a.direction == Direction::High { "HIGH" } else { "LOW" };
                format!("{name} {direction} {:.3}", a.strength)
            })
            .collect();
        let expected: Vec<String> =
            out.expected_values.iter().zip(names.iter()).map(|(v, name)| format!("{name}={v:.6}")).collect();
        writeln!(
            output,
            "{text},{:.6},{:.6},{:.3},{},{},{}",
            out.anomaly_score,
            out.anomaly_grade,
            out.confidence,
            out.is_anomaly,
            attribution.join(";"),
            expected.join(";")
        )?;
        rows += 1;
    }
    if rows == 0 {
        return Err(ScoreError::Empty);
    }
    Ok(rows)
}

/// The NDJSON variant: each line an object; features are the detector's fields, the
/// `--columns`, or every numeric field of the first object except `timestamp`.
fn score_ndjson(
    lines: impl Iterator<Item = std::io::Result<(usize, String)>>,
    mut output: impl Write,
    settings: &ScoreSettings,
    mut trace: Option<&mut Trace>,
) -> Result<usize, ScoreError> {
    use serde_json::{json, Map, Value};
    let mut model: Option<(Model, Vec<String>)> = None;
    let mut rows = 0;
    for item in lines {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        let mut object: Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| ScoreError::NotJson { line, reason: e.to_string() })?;
        if model.is_none() {
            let names: Vec<String> = match (&settings.detector, &settings.columns) {
                (Some(detector), _) => detector.features.clone(),
                (None, Some(columns)) => columns.clone(),
                (None, None) => object
                    .iter()
                    .filter(|(k, v)| k.as_str() != "timestamp" && v.is_number())
                    .map(|(k, _)| k.clone())
                    .collect(),
            };
            if names.is_empty() {
                return Err(ScoreError::NoFeatures { line });
            }
            if let Some(trace) = trace.as_deref_mut() {
                trace.features = names.clone();
            }
            model = Some((build_model(settings, &names)?, names));
        }
        let Some((model, names)) = model.as_mut() else {
            continue;
        };
        let mut values = Vec::with_capacity(names.len());
        for name in names.iter() {
            values.push(match object.get(name) {
                None | Some(Value::Null) => f64::NAN,
                Some(v) => v.as_f64().ok_or_else(|| ScoreError::NotANumberField { line, field: name.clone() })?,
            });
        }
        let out = model.process(&values).map_err(|source| ScoreError::Model { line, source })?;
        if let Some(trace) = trace.as_deref_mut() {
            // Recorded for every row once the first has one, so a row without it keeps
            // timestamps and rows in step (and the plot falls back to the row index).
            let timestamp = match object.get("timestamp") {
                Some(Value::String(t)) => Some(t.clone()),
                Some(Value::Number(t)) => Some(t.to_string()),
                _ if !trace.timestamps.is_empty() => Some(String::new()),
                _ => None,
            };
            trace.record(timestamp, &values, out.anomaly_score, out.is_anomaly);
        }
        object.insert("anomaly_score".into(), json!(out.anomaly_score));
        object.insert("anomaly_grade".into(), json!(out.anomaly_grade));
        object.insert("confidence".into(), json!(out.confidence));
        object.insert("is_anomaly".into(), json!(out.is_anomaly));
        if out.is_anomaly {
            let attribution: Map<String, Value> =
                names.iter().zip(&out.attribution).map(|(n, a)| (n.clone(), json!(a))).collect();
            let expected: Map<String, Value> =
                names.iter().zip(&out.expected_values).map(|(n, v)| (n.clone(), json!(v))).collect();
            object.insert("attribution".into(), Value::Object(attribution));
            object.insert("expected_values".into(), Value::Object(expected));
        }
        writeln!(output, "{}", Value::Object(object))?;
        rows += 1;
    }
    if rows == 0 {
        return Err(ScoreError::Empty);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, columns: Option<&[&str]>) -> Result<String, ScoreError> {
        let settings = ScoreSettings {
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            forest: ForestSettings { trees: 20, sample_size: 64, ..ForestSettings::default() },
            ..ScoreSettings::default()
        };
        let mut out = Vec::new();
        score_file(input.as_bytes(), &mut out, &settings, None)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn flags_and_explains_the_spike_in_a_nab_style_file() {
        let mut input = String::from("timestamp,value\n");
        for i in 0..800 {
            let value = if i == 700 { 115 } else { 10 + (i * 7) % 11 };
            input.push_str(&format!("2024-01-01 {:02}:{:02}:00,{value}\n", i / 60, i % 60));
        }
        let out = run(&input, None).expect("scores");
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("timestamp,value,anomaly_score,anomaly_grade,confidence,is_anomaly,attribution,expected_values")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 800);
        let flagged: Vec<usize> = (0..rows.len()).filter(|&i| rows[i][5] == "true").collect();
        assert_eq!(flagged, [700], "only the spike");
        let spike = &rows[700];
        assert!(spike[6].starts_with("value HIGH "), "{spike:?}");
        let expected: f64 = spike[7].strip_prefix("value=").expect("expected value").parse().expect("number");
        assert!((9.0..=21.0).contains(&expected), "expected an ordinary value, got {expected}");
    }

    #[test]
    fn bad_cells_and_columns_are_named() {
        let err = run("a,b\n1,2\n3,x\n", None).expect_err("x is not a number");
        assert_eq!(err.to_string(), "line 3, column 2: `x` is not a number");
        let err = run("a,b\n1,2\n", Some(&["c"])).expect_err("no column c");
        assert_eq!(err.to_string(), "column `c` is not in the header (columns: a, b)");
        assert!(matches!(run("1,2\n", Some(&["a"])), Err(ScoreError::NoHeader)));
        assert!(matches!(run("", None), Err(ScoreError::Empty)));
        let err = run("a,b\n1,2\n3\n", None).expect_err("short row");
        assert_eq!(err.to_string(), "line 3: expected at least 2 columns, found 1");
    }

    #[test]
    fn ndjson_rows_get_the_outputs_as_fields() {
        let mut input = String::new();
        for i in 0..600 {
            let value = if i == 500 { 115 } else { 10 + (i * 7) % 11 };
            input.push_str(&format!("{{\"timestamp\": {i}, \"iotName\": \"DemoSensor\", \"iotValue\": {value}}}\n"));
        }
        let out = run(&input, None).expect("scores");
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
        assert_eq!(rows.len(), 600);
        let flagged: Vec<i64> =
            rows.iter().filter(|r| r["is_anomaly"] == true).map(|r| r["timestamp"].as_i64().expect("ts")).collect();
        assert_eq!(flagged, [500]);
        let spike = &rows[500];
        assert_eq!(spike["iotName"], "DemoSensor", "input fields are kept");
        assert_eq!(spike["attribution"]["iotValue"]["direction"], "HIGH");
        assert!(spike["expected_values"]["iotValue"].as_f64().is_some_and(|v| (9.0..=21.0).contains(&v)));
        let err = run("{\"v\": 1}\n{\"v\": \"x\"}\n", None).expect_err("not a number");
        assert_eq!(err.to_string(), "line 2: field `v` is not a number");
        let err = run("{\"v\": 1}\n{\"v\": 1,\n", None).expect_err("broken JSON");
        assert!(err.to_string().starts_with("line 2: not a JSON object: "), "{err}");
    }

    #[test]
    fn an_empty_cell_is_imputed_not_rejected() {
        let mut input = String::from("a,b\n");
        for i in 0..300 {
            input.push_str(&format!("{},{}\n", 10 + i % 5, 20 + i % 3));
        }
        input.push_str("12,\n");
        let out = run(&input, None).expect("imputed");
        let last: Vec<&str> = out.lines().last().expect("rows").split(',').collect();
        assert_eq!(&last[..2], ["12", ""], "the row is kept as given");
        assert_eq!(last[5], "false", "an imputed value is an ordinary one: {last:?}");
    }
}
