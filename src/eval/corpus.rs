//! A NAB corpus on disk: `data/<category>/<file>.csv` (`timestamp,value`), the combined
//! windows file (`"<category>/<file>.csv"` -> `[[start, end], ...]` timestamps) and the
//! profiles file. Reads them, runs a scorer over every file, and reports per profile,
//! overall and per category.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::nab::{self, Outcome, Profile, ScoredFile};

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not the expected JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Row { path: PathBuf, line: usize, reason: String },
    #[error("{path}: window [{start}, {end}] covers no row of the file")]
    EmptyWindow { path: PathBuf, start: String, end: String },
}

/// One series of the corpus: its values, timestamps and windows as row ranges.
#[derive(Debug, Clone)]
pub struct Series {
    /// `<category>/<file>.csv`, as the labels name it.
    pub name: String,
    pub category: String,
    pub timestamps: Vec<String>,
    pub values: Vec<f32>,
    pub windows: Vec<(usize, usize)>,
}

/// NAB timestamps compare as text once cut to `YYYY-MM-DD HH:MM:SS` (the windows
/// carry microseconds, the data does not).
fn instant(timestamp: &str) -> &str {
    timestamp.get(..19).unwrap_or(timestamp)
}

fn read(path: &Path) -> Result<String, CorpusError> {
    std::fs::read_to_string(path).map_err(|source| CorpusError::Read { path: path.to_owned(), source })
}

fn json(path: &Path) -> Result<serde_json::Value, CorpusError> {
    serde_json::from_str(&read(path)?).map_err(|e| CorpusError::Json { path: path.to_owned(), reason: e.to_string() })
}

/// The profiles of a NAB `profiles.json`, in file order.
pub fn load_profiles(path: &Path) -> Result<Vec<Profile>, CorpusError> {
    let bad = |reason: String| CorpusError::Json { path: path.to_owned(), reason };
    let value = json(path)?;
    let profiles = value.as_object().ok_or_else(|| bad("expected an object of profiles".into()))?;
    profiles
        .iter()
        .map(|(name, profile)| {
            let weight = |field: &str| {
                profile["CostMatrix"][field]
                    .as_f64()
                    .ok_or_else(|| bad(format!("{name}.CostMatrix.{field} is not a number")))
            };
            Ok(Profile {
                name: name.clone(),
                tp_weight: weight("tpWeight")?,
                fp_weight: weight("fpWeight")?,
                fn_weight: weight("fnWeight")?,
            })
        })
        .collect()
}

/// Every series the windows file names, read from `data`.
pub fn load(data: &Path, windows_file: &Path) -> Result<Vec<Series>, CorpusError> {
    let labels = json(windows_file)?;
    let labels = labels
        .as_object()
        .ok_or_else(|| CorpusError::Json { path: windows_file.to_owned(), reason: "expected an object".into() })?;
    let mut corpus = Vec::with_capacity(labels.len());
    for (name, windows) in labels {
        let path = data.join(name);
        let text = read(&path)?;
        let (mut timestamps, mut values) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate().skip(1) {
            let row_error = |reason: String| CorpusError::Row { path: path.clone(), line: i + 1, reason };
            let (timestamp, value) =
                line.split_once(',').ok_or_else(|| row_error(format!("expected `timestamp,value`, got `{line}`")))?;
            let value: f32 =
                value.trim().parse().map_err(|_| row_error(format!("`{}` is not a number", value.trim())))?;
            timestamps.push(timestamp.trim().to_owned());
            values.push(value);
        }
        let bad_windows = || CorpusError::Json {
            path: windows_file.to_owned(),
            reason: format!("{name}: expected [[start, end], ...]"),
        };
        let mut rows = Vec::new();
        for window in windows.as_array().ok_or_else(bad_windows)? {
            let (Some(start), Some(end)) = (window[0].as_str(), window[1].as_str()) else {
                return Err(bad_windows());
            };
            let first = timestamps.iter().position(|t| instant(t) >= instant(start));
            let last = timestamps.iter().rposition(|t| instant(t) <= instant(end));
            match (first, last) {
                (Some(a), Some(b)) if a <= b => rows.push((a, b)),
                _ => return Err(CorpusError::EmptyWindow { path: path.clone(), start: start.into(), end: end.into() }),
            }
        }
        let category = name.split('/').next().unwrap_or_default().to_owned();
        corpus.push(Series { name: name.clone(), category, timestamps, values, windows: rows });
    }
    Ok(corpus)
}

/// A profile's result overall (at its best threshold) and per category at that threshold.
#[derive(Debug, Clone)]
pub struct Report {
    pub profile: Profile,
    pub overall: Outcome,
    pub categories: BTreeMap<String, Outcome>,
}

/// Scores every profile over `files`.
pub fn report(files: &[ScoredFile], profiles: &[Profile]) -> Vec<Report> {
    profiles
        .iter()
        .map(|profile| {
            let overall = nab::best_threshold(files, profile);
            let mut categories = BTreeMap::new();
            let names: std::collections::BTreeSet<&str> = files.iter().map(|f| f.category.as_str()).collect();
            for category in names {
                let members: Vec<ScoredFile> = files.iter().filter(|f| f.category == category).cloned().collect();
                categories.insert(category.to_owned(), nab::evaluate(&members, overall.threshold, profile));
            }
            Report { profile: profile.clone(), overall, categories }
        })
        .collect()
}

/// Writes NAB-style result files: `<dir>/<category>/<file>.csv` with
/// `timestamp,value,anomaly_score,label` (label 1 inside a window).
pub fn write_results(dir: &Path, series: &[Series], scores: &[Vec<f64>]) -> Result<(), CorpusError> {
    for (s, scores) in series.iter().zip(scores) {
        let path = dir.join(&s.name);
        let write_error = |source| CorpusError::Read { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        let mut out = String::from("timestamp,value,anomaly_score,label\n");
        for (row, (timestamp, value)) in s.timestamps.iter().zip(&s.values).enumerate() {
            let label = u8::from(s.windows.iter().any(|&(a, b)| a <= row && row <= b));
            out.push_str(&format!("{timestamp},{value},{:.6},{label}\n", scores[row]));
        }
        std::fs::write(&path, out).map_err(write_error)?;
    }
    Ok(())
}

/// The reports as a table, one line per profile and category.
pub fn format_reports(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<22} {:<24} {:>8} {:>10} {:>9} {:>8} {:>6}\n",
        "profile", "category", "score", "threshold", "windows", "found", "FPs"
    );
    for report in reports {
        let line = |category: &str, o: &Outcome| {
            let score = o.normalized.map_or_else(|| format!("{:.2}*", o.raw), |n| format!("{n:.1}"));
            format!(
                "{:<22} {:<24} {:>8} {:>10.4} {:>9} {:>8} {:>6}\n",
                report.profile.name, category, score, o.threshold, o.windows, o.windows_detected, o.false_positives
            )
        };
        out.push_str(&line("ALL", &report.overall));
        for (category, outcome) in &report.categories {
            out.push_str(&line(category, outcome));
        }
    }
    out.push_str("(* raw score: no windows to normalise by)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-file corpus in a fresh temporary folder.
    fn corpus() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rcfd-nab-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data/cat")).expect("temp dir");
        let mut csv = String::from("timestamp,value\n");
        for minute in 0..40 {
            csv.push_str(&format!("2024-01-01 00:{minute:02}:00,{}\n", if minute == 30 { 50 } else { 1 }));
        }
        std::fs::write(dir.join("data/cat/a.csv"), &csv).expect("write");
        std::fs::write(dir.join("data/cat/b.csv"), &csv).expect("write");
        let windows =
            r#"{"cat/a.csv": [["2024-01-01 00:28:00.000000", "2024-01-01 00:33:00.000000"]], "cat/b.csv": []}"#;
        std::fs::write(dir.join("windows.json"), windows).expect("write");
        dir
    }

    #[test]
    fn windows_become_row_ranges_and_detections_score_as_worked_out() {
        let dir = corpus();
        let series = load(&dir.join("data"), &dir.join("windows.json")).expect("corpus");
        assert_eq!(series.len(), 2);
        let a = series.iter().find(|s| s.name == "cat/a.csv").expect("a");
        assert_eq!((a.category.as_str(), a.windows.as_slice(), a.values.len()), ("cat", &[(28, 33)][..], 40));
        // The value itself as the score: the best threshold flags the spikes. In a, row
        // 30 of the window 28..=33 earns s(-4/6)/s(-1); in b, which has no window, the
        // same spike is a false positive with no window before it: -0.11.
        let files: Vec<ScoredFile> = series
            .iter()
            .map(|s| ScoredFile {
                name: s.name.clone(),
                category: s.category.clone(),
                scores: s.values.iter().map(|&v| f64::from(v)).collect(),
                windows: s.windows.clone(),
            })
            .collect();
        let standard = Profile { name: "standard".into(), tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0 };
        let report = &report(&files, &[standard])[0];
        let expected = nab::sigmoid(-4.0 / 6.0) / nab::sigmoid(-1.0);
        assert!((report.overall.raw - (expected - 0.11)).abs() < 1e-12, "{:?}", report.overall);
        assert_eq!(report.overall.threshold, 50.0);
        assert_eq!(report.overall.false_positives, 1, "the spike in b has no window");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_row_names_file_and_line() {
        let dir = corpus();
        std::fs::write(dir.join("data/cat/b.csv"), "timestamp,value\n2024-01-01 00:00:00,x\n").expect("write");
        let err = load(&dir.join("data"), &dir.join("windows.json")).expect_err("x is not a number");
        assert!(err.to_string().ends_with("b.csv, line 2: `x` is not a number"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
