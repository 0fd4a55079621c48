//! Plain classification numbers beside the NAB score, row by row against the labelled
//! windows (a row inside a window is an anomaly): ROC-AUC of the anomaly score, which
//! needs no threshold, and precision and recall of the rows the detector flagged
//! (`is_anomaly`), at its own adaptive threshold. Computed with linfa's metrics.
//!
//! Rows in NAB's probation period are left out, as NAB leaves them out: the model is
//! still learning there. Recall per row is low by nature, since a window spans about a
//! tenth of a file and a detector flags where the anomaly starts; NAB's "found" column
//! counts windows instead.

use linfa::prelude::{BinaryClassification, Pr, ToConfusionMatrix};
use ndarray::Array1;

use super::nab::probation;

/// One file's (or the pooled files') rows after probation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledRows {
    pub scores: Vec<f64>,
    pub flagged: Vec<bool>,
    /// Inside a labelled window.
    pub anomalous: Vec<bool>,
}

impl LabelledRows {
    /// The rows of a file after probation; `windows` are inclusive row ranges.
    pub fn after_probation(scores: &[f64], flagged: &[bool], windows: &[(usize, usize)]) -> LabelledRows {
        let rows = scores.len().min(flagged.len());
        let start = probation(rows).min(rows);
        LabelledRows {
            scores: scores[start..rows].to_vec(),
            flagged: flagged[start..rows].to_vec(),
            anomalous: (start..rows).map(|r| windows.iter().any(|&(a, b)| a <= r && r <= b)).collect(),
        }
    }

    pub fn extend(&mut self, other: &LabelledRows) {
        self.scores.extend_from_slice(&other.scores);
        self.flagged.extend_from_slice(&other.flagged);
        self.anomalous.extend_from_slice(&other.anomalous);
    }
}

/// The numbers of one set of rows; None where undefined (no labelled row, no normal
/// row, nothing flagged).
#[derive(Debug, Clone, PartialEq)]
pub struct RowMetrics {
    pub rows: usize,
    pub anomalous: usize,
    pub flagged: usize,
    pub roc_auc: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// An anomaly score (0 and up) as the probability linfa's ROC takes: order is all that
/// matters to the AUC, and no score maps to exactly 0, because linfa's curve starts at
/// the first score above 0 and would drop the tied scores at 0 (many, before a model
/// has warmed up, or with peak scores) from the area.
fn as_probability(score: f64) -> Pr {
    let score = if score.is_finite() { score.max(0.0) } else { 0.0 };
    Pr::new_unchecked((0.5 + 0.5 * score / (1.0 + score)) as f32)
}

pub fn row_metrics(rows: &LabelledRows) -> RowMetrics {
    let anomalous = rows.anomalous.iter().filter(|&&a| a).count();
    let flagged = rows.flagged.iter().filter(|&&f| f).count();
    let n = rows.anomalous.len();
    let roc_auc = (anomalous > 0 && anomalous < n)
        .then(|| {
            let probabilities: Vec<Pr> = rows.scores.iter().map(|&s| as_probability(s)).collect();
            probabilities.as_slice().roc(rows.anomalous.as_slice()).ok()
        })
        .flatten()
        .map(|roc| f64::from(roc.area_under_curve()));
    // Called on the labels with the flags as argument: linfa's precision and recall
    // read its matrix with the receiver's classes as rows, so the way round of its own
    // examples (prediction.confusion_matrix(truth)) swaps the two (tested below).
    let confusion = (anomalous > 0 || flagged > 0)
        .then(|| Array1::from(rows.anomalous.clone()).confusion_matrix(Array1::from(rows.flagged.clone())).ok())
        .flatten();
    RowMetrics {
        rows: n,
        anomalous,
        flagged,
        roc_auc,
        precision: confusion.as_ref().filter(|_| flagged > 0).map(|c| f64::from(c.precision())),
        recall: confusion.as_ref().filter(|_| anomalous > 0).map(|c| f64::from(c.recall())),
    }
}

/// A table: one line per file, then the pooled rows of all files.
pub fn format_metrics(files: &[(String, RowMetrics)], all: &RowMetrics) -> String {
    let number = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
    let line = |name: &str, m: &RowMetrics| {
        format!(
            "{:<56} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7}\n",
            name,
            m.rows,
            m.anomalous,
            m.flagged,
            number(m.roc_auc),
            number(m.precision),
            number(m.recall)
        )
    };
    let mut out = String::from(
        "\nper row after probation, against rows inside a window: ROC-AUC of anomaly_score, precision and recall of is_anomaly\n",
    );
    out.push_str(&format!(
        "{:<56} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7}\n",
        "file", "rows", "in window", "flagged", "ROC-AUC", "precision", "recall"
    ));
    for (name, metrics) in files {
        out.push_str(&line(name, metrics));
    }
    out.push_str(&line("ALL (rows of every file pooled)", all));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(scores: &[f64], flagged: &[bool], anomalous: &[bool]) -> LabelledRows {
        LabelledRows { scores: scores.to_vec(), flagged: flagged.to_vec(), anomalous: anomalous.to_vec() }
    }

    #[test]
    fn numbers_worked_out_on_paper() {
        // Anomalous rows score 3 and 0.5, normal ones 0, 0, 1 and 2: of the 8 pairs, 3 is
        // above all 4 and 0.5 above the 2 zeros, so the AUC is 6/8, with the zeros tied.
        let (t, f) = (true, false);
        let m = row_metrics(&rows(&[0.0, 3.0, 0.0, 1.0, 0.5, 2.0], &[f, t, f, f, f, t], &[f, t, f, f, t, f]));
        assert_eq!((m.rows, m.anomalous, m.flagged), (6, 2, 2));
        assert!((m.roc_auc.expect("defined") - 0.75).abs() < 1e-6, "{m:?}");
        // Flagged: one inside a window, one outside; one of the two window rows found.
        assert_eq!((m.precision, m.recall), (Some(0.5), Some(0.5)));
        let m = row_metrics(&rows(&[0.0, 0.0, 1.0], &[f, f, t], &[f, f, t]));
        assert_eq!((m.roc_auc, m.precision, m.recall), (Some(1.0), Some(1.0), Some(1.0)));
        // Two flags, one of them right, catching the only window row: precision 1/2, recall 1.
        let m = row_metrics(&rows(&[2.0, 2.0, 0.0], &[t, t, f], &[t, f, f]));
        assert_eq!((m.precision, m.recall), (Some(0.5), Some(1.0)));
    }

    #[test]
    fn undefined_numbers_are_none() {
        let (t, f) = (true, false);
        let no_windows = row_metrics(&rows(&[0.0, 2.0], &[f, t], &[f, f]));
        assert_eq!((no_windows.roc_auc, no_windows.precision, no_windows.recall), (None, Some(0.0), None));
        let nothing_flagged = row_metrics(&rows(&[0.0, 2.0], &[f, f], &[f, t]));
        assert_eq!((nothing_flagged.precision, nothing_flagged.recall), (None, Some(0.0)));
        let quiet = row_metrics(&rows(&[0.0, 0.0], &[f, f], &[f, f]));
        assert_eq!((quiet.roc_auc, quiet.precision, quiet.recall), (None, None, None));
    }

    #[test]
    fn probation_rows_are_left_out() {
        // 100 rows: probation 15, a window on rows 40..=49.
        let scores: Vec<f64> = (0..100).map(f64::from).collect();
        let flagged: Vec<bool> = (0..100).map(|r| r == 10 || r == 45).collect();
        let labelled = LabelledRows::after_probation(&scores, &flagged, &[(40, 49)]);
        assert_eq!(labelled.scores.len(), 85);
        assert_eq!(labelled.scores[0], 15.0);
        assert_eq!(labelled.anomalous.iter().filter(|&&a| a).count(), 10);
        assert_eq!(row_metrics(&labelled).precision, Some(1.0), "the flag at row 10 is in probation");
    }
}
