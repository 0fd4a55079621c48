//! NAB scoring, as the benchmark publishes it (see `shared/nab/SOURCE.md`): probation,
//! the scaled sigmoid that rewards early detection inside a window, false-positive
//! penalties by distance after a window, one threshold per profile swept over all
//! files together, and normalisation between the null and the perfect detector.
//!
//! Pure functions over scores and windows; reading files is `corpus`'s job.

/// The cost weights of one scoring profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub tp_weight: f64,
    pub fp_weight: f64,
    pub fn_weight: f64,
}

/// One file's scores (one per row) and its anomaly windows as inclusive row ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFile {
    pub name: String,
    pub category: String,
    pub scores: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

/// The outcome of a profile over a set of files at one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub threshold: f64,
    pub raw: f64,
    /// 100 * (raw - null) / (perfect - null); None when there are no windows.
    pub normalized: Option<f64>,
    pub windows: usize,
    pub windows_detected: usize,
    pub false_positives: usize,
}

/// `scores` kept only where a score is higher than every score in the `window` rows
/// before it, else 0: one detection per burst, as an alert that fires on a new high
/// would give, so that the rows after a spike do not count as false positives.
pub fn peaks(scores: &[f64], window: usize) -> Vec<f64> {
    (0..scores.len())
        .map(|i| {
            let recent = &scores[i.saturating_sub(window)..i];
            if recent.iter().all(|&s| scores[i] > s) {
                scores[i]
            } else {
                0.0
            }
        })
        .collect()
}

/// Rows at the start of a file whose detections are ignored.
pub fn probation(rows: usize) -> usize {
    ((rows as f64 * 0.15).floor() as usize).min(750)
}

/// NAB's scaled sigmoid: 1 far before a point, 0 at it, -1 far after.
pub fn sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// What a detection at `row` earns inside window `(a, b)`, if it is the window's earliest.
fn window_reward(row: usize, (_, b): (usize, usize), width: usize, profile: &Profile) -> f64 {
    let y = -((b - row + 1) as f64) / width as f64;
    profile.tp_weight * sigmoid(y) / sigmoid(-1.0)
}

/// What a detection at `row`, outside every window, costs: by its distance past the
/// nearest window before it, or the full weight when none precedes it.
fn false_positive_cost(row: usize, windows: &[(usize, usize)], profile: &Profile) -> f64 {
    match windows.iter().filter(|&&(_, b)| b < row).max_by_key(|&&(_, b)| b) {
        Some(&(a, b)) => {
            let width = b - a + 1;
            let y = if width > 1 { (row - b) as f64 / (width - 1) as f64 } else { f64::INFINITY };
            profile.fp_weight * sigmoid(y)
        }
        None => -profile.fp_weight,
    }
}

/// The window holding `row`, if any.
fn window_of(row: usize, windows: &[(usize, usize)]) -> Option<usize> {
    windows.iter().position(|&(a, b)| a <= row && row <= b)
}

/// Scores the files with every row whose score is >= `threshold` as a detection.
pub fn evaluate(files: &[ScoredFile], threshold: f64, profile: &Profile) -> Outcome {
    let mut outcome =
        Outcome { threshold, raw: 0.0, normalized: None, windows: 0, windows_detected: 0, false_positives: 0 };
    for file in files {
        let mut earliest: Vec<Option<usize>> = vec![None; file.windows.len()];
        for row in probation(file.scores.len())..file.scores.len() {
            if file.scores[row] < threshold {
                continue;
            }
            match window_of(row, &file.windows) {
                Some(w) => {
                    earliest[w] = Some(earliest[w].map_or(row, |e| e.min(row)));
                }
                None => {
                    outcome.raw += false_positive_cost(row, &file.windows, profile);
                    outcome.false_positives += 1;
                }
            }
        }
        for (w, &window) in file.windows.iter().enumerate() {
            outcome.windows += 1;
            match earliest[w] {
                Some(row) => {
                    outcome.windows_detected += 1;
                    outcome.raw += window_reward(row, window, window.1 - window.0 + 1, profile);
                }
                None => outcome.raw -= profile.fn_weight,
            }
        }
    }
    outcome.normalized = normalize(outcome.raw, outcome.windows, profile);
    outcome
}

fn normalize(raw: f64, windows: usize, profile: &Profile) -> Option<f64> {
    let null = -profile.fn_weight * windows as f64;
    let perfect = profile.tp_weight * windows as f64;
    (windows > 0).then(|| 100.0 * (raw - null) / (perfect - null))
}

/// The threshold with the best raw score over all `files` together, sweeping every
/// distinct score (and "never detect"), and the outcome there. Lowering the threshold
/// adds detections one score at a time, so the sweep is one sort and one pass.
pub fn best_threshold(files: &[ScoredFile], profile: &Profile) -> Outcome {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (f, file) in files.iter().enumerate() {
        for row in probation(file.scores.len())..file.scores.len() {
            if file.scores[row].is_finite() {
                candidates.push((file.scores[row], f, row));
            }
        }
    }
    candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    let mut earliest: Vec<Vec<Option<usize>>> = files.iter().map(|f| vec![None; f.windows.len()]).collect();
    let mut raw = -profile.fn_weight * windows as f64;
    let (mut best_raw, mut best_threshold) = (raw, f64::INFINITY);
    let mut i = 0;
    while i < candidates.len() {
        let score = candidates[i].0;
        while i < candidates.len() && candidates[i].0 == score {
            let (_, f, row) = candidates[i];
            let file = &files[f];
            match window_of(row, &file.windows) {
                Some(w) => {
                    let window = file.windows[w];
                    let width = window.1 - window.0 + 1;
                    let before =
                        earliest[f][w].map_or(-profile.fn_weight, |e| window_reward(e, window, width, profile));
                    if earliest[f][w].is_none_or(|e| row < e) {
                        earliest[f][w] = Some(row);
                        raw += window_reward(row, window, width, profile) - before;
                    }
                }
                None => raw += false_positive_cost(row, &file.windows, profile),
            }
            i += 1;
        }
        if raw > best_raw {
            (best_raw, best_threshold) = (raw, score);
        }
    }
    evaluate(files, best_threshold, profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> Profile {
        Profile { name: "standard".into(), tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0 }
    }

    /// 100 rows (probation 15), one window on rows 40..=49, detections where `hits` says.
    fn file(hits: &[usize]) -> ScoredFile {
        let mut scores = vec![0.0; 100];
        for &h in hits {
            scores[h] = 1.0;
        }
        ScoredFile { name: "f.csv".into(), category: "c".into(), scores, windows: vec![(40, 49)] }
    }

    fn raw(hits: &[usize]) -> f64 {
        evaluate(&[file(hits)], 1.0, &standard()).raw
    }

    #[test]
    fn the_sigmoid_and_probation_are_as_published() {
        assert_eq!(probation(100), 15);
        assert_eq!(probation(10_000), 750);
        assert_eq!(sigmoid(0.0), 0.0);
        assert!((sigmoid(-1.0) - 0.986_614).abs() < 1e-6);
        assert_eq!(sigmoid(3.5), -1.0);
    }

    #[test]
    fn scores_worked_out_on_paper() {
        // Detected at the window's left edge: the full true-positive weight.
        assert!((raw(&[40]) - 1.0).abs() < 1e-12);
        // At its right edge: s(-1/10) / s(-1) = 0.244919 / 0.986614.
        assert!((raw(&[49]) - 0.248_242).abs() < 1e-5, "{}", raw(&[49]));
        // Only the earliest detection in a window counts.
        assert_eq!(raw(&[40, 45, 49]), raw(&[40]));
        // 11 rows after the window (width 10): 0.11 * s(11/9) = -0.109513, plus the miss.
        assert!((raw(&[60]) - (-1.0 - 0.109_513)).abs() < 1e-5, "{}", raw(&[60]));
        // Before any window: the full false-positive weight; in probation: nothing.
        assert!((raw(&[20]) - (-1.0 - 0.11)).abs() < 1e-12);
        assert_eq!(raw(&[10]), -1.0);
        // Normalised: the null detector scores 0, the perfect one 100.
        assert_eq!(evaluate(&[file(&[])], 1.0, &standard()).normalized, Some(0.0));
        assert_eq!(evaluate(&[file(&[40])], 1.0, &standard()).normalized, Some(100.0));
    }

    #[test]
    fn the_sweep_finds_the_best_single_threshold_over_all_files() {
        // File a: the window's left edge scores 0.9, a false positive before it 0.95.
        // File b: its window scores 0.5 at the left edge, noise scores 0.4 elsewhere.
        let mut a = file(&[]);
        a.scores[40] = 0.9;
        a.scores[20] = 0.95;
        let mut b = file(&[]);
        b.scores[40] = 0.5;
        for row in 60..80 {
            b.scores[row] = 0.4;
        }
        let files = [a, b];
        let best = best_threshold(&files, &standard());
        // 0.5 catches both windows (2.0) and one false positive (-0.11): 1.89, better
        // than 0.9 (1.0 - 0.11 - 1.0) and than 0.4 (which adds 20 costly detections).
        assert_eq!(best.threshold, 0.5);
        assert!((best.raw - 1.89).abs() < 1e-12);
        assert_eq!((best.windows_detected, best.false_positives), (2, 1));
        // Every other threshold scores no better.
        for threshold in [f64::INFINITY, 0.95, 0.9, 0.4, 0.0] {
            assert!(evaluate(&files, threshold, &standard()).raw <= best.raw);
        }
    }

    #[test]
    fn peaks_keep_new_highs_only() {
        let scores = [0.5, 3.0, 2.9, 2.0, 3.5, 1.0, 1.0, 1.0, 1.2];
        assert_eq!(peaks(&scores, 3), [0.5, 3.0, 0.0, 0.0, 3.5, 0.0, 0.0, 0.0, 1.2]);
    }

    #[test]
    fn never_detecting_is_a_candidate() {
        let mut noisy = file(&[]);
        noisy.windows.clear();
        noisy.scores.iter_mut().for_each(|s| *s = 1.0);
        let best = best_threshold(&[noisy], &standard());
        assert_eq!(best.threshold, f64::INFINITY);
        assert_eq!(best.raw, 0.0);
        assert_eq!(best.normalized, None);
    }
}
