//! `rcfd score`: scores a CSV of numeric rows with one forest, row by row (score, then
//! learn), and writes every row back with its anomaly score appended.
//!
//! The CSV is plain: comma-separated, no quoting. A first line with a non-numeric
//! field is a header. The features are the columns named with `--columns`, or else
//! every column whose value in the first data row is a number (so a `timestamp,value`
//! file scores `value`). An empty cell is a missing value, imputed by the forest.

use std::io::{BufRead, Write};

use ndarray::ArrayView2;

use crate::forest::{Forest, ForestConfig, ForestError};

/// Rows scored together (the forest learns a batch faster than row by row).
const ROWS_PER_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ScoreCsvError {
    #[error("reading or writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("the input has no data rows")]
    Empty,
    #[error("column `{name}` is not in the header (columns: {available})")]
    UnknownColumn { name: String, available: String },
    #[error("--columns needs a header line naming the columns")]
    NoHeader,
    #[error("no numeric column in the first data row (line {line})")]
    NoFeatures { line: usize },
    #[error("line {line}, column {column}: `{value}` is not a number")]
    NotANumber { line: usize, column: usize, value: String },
    #[error("line {line}: expected at least {expected} columns, found {found}")]
    ShortRow { line: usize, expected: usize, found: usize },
    #[error("line {line}: {source}")]
    Forest { line: usize, source: ForestError },
    #[error("forest configuration: {0}")]
    Config(ForestError),
}

/// Parses a cell: a number, or NaN (missing) when empty.
fn cell(line: usize, column: usize, value: &str) -> Result<f32, ScoreCsvError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(f32::NAN);
    }
    value.parse::<f32>().map_err(|_| ScoreCsvError::NotANumber { line, column: column + 1, value: value.to_owned() })
}

/// Scores every data row of `input` and writes it to `output` with an `anomaly_score`
/// column; returns the number of rows scored. `config.features` is set from the columns.
pub fn score_csv(
    input: impl BufRead,
    mut output: impl Write,
    config: &ForestConfig,
    columns: Option<&[String]>,
) -> Result<usize, ScoreCsvError> {
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let Some((first_line, first)) = lines.next() else { return Err(ScoreCsvError::Empty) };
    let first = first?;
    let first_fields: Vec<&str> = first.split(',').collect();
    let is_header = first_fields.iter().any(|f| !f.trim().is_empty() && f.trim().parse::<f32>().is_err());
    let pending = (!is_header).then(|| (first_line, first.clone()));
    let header: Vec<String> = if is_header { first_fields.iter().map(|f| f.trim().to_owned()).collect() } else { Vec::new() };

    let mut features: Option<Vec<usize>> = match columns {
        Some(_) if !is_header => return Err(ScoreCsvError::NoHeader),
        Some(names) => Some(
            names
                .iter()
                .map(|name| {
                    header.iter().position(|h| h == name).ok_or_else(|| ScoreCsvError::UnknownColumn {
                        name: name.clone(),
                        available: header.join(", "),
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    let mut forest: Option<Forest> = None;
    let mut batch = Batch::default();
    let mut rows = 0;
    let rest = lines.map(|(n, l)| l.map(|l| (n, l)));
    for item in pending.map(Ok::<_, std::io::Error>).into_iter().chain(rest) {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').collect();
        let features = features.get_or_insert_with(|| {
            (0..fields.len()).filter(|&c| fields[c].trim().parse::<f32>().is_ok()).collect()
        });
        if features.is_empty() {
            return Err(ScoreCsvError::NoFeatures { line });
        }
        if forest.is_none() {
            let config = ForestConfig { features: features.len(), ..config.clone() };
            forest = Some(Forest::new(&config).map_err(ScoreCsvError::Config)?);
            if is_header {
                writeln!(output, "{first},anomaly_score")?;
            }
        }
        for &column in features.iter() {
            let value = fields.get(column).ok_or(ScoreCsvError::ShortRow {
                line,
                expected: column + 1,
                found: fields.len(),
            })?;
            batch.values.push(cell(line, column, value)?);
        }
        batch.lines.push((line, text));
        if batch.lines.len() == ROWS_PER_BATCH {
            rows += batch.flush(forest.as_mut(), &mut output)?;
        }
    }
    rows += batch.flush(forest.as_mut(), &mut output)?;
    if rows == 0 {
        return Err(ScoreCsvError::Empty);
    }
    Ok(rows)
}

/// Rows read but not yet scored: their text and their feature values, row after row.
#[derive(Default)]
struct Batch {
    lines: Vec<(usize, String)>,
    values: Vec<f32>,
}

impl Batch {
    /// Scores the rows, writes them with their scores and empties the batch.
    fn flush(&mut self, forest: Option<&mut Forest>, output: &mut impl Write) -> Result<usize, ScoreCsvError> {
        let Some(forest) = forest else { return Ok(0) };
        if self.lines.is_empty() {
            return Ok(0);
        }
        let shape = (self.lines.len(), forest.params().features);
        let rows = ArrayView2::from_shape(shape, &self.values).map_err(|e| std::io::Error::other(e.to_string()))?;
        let scores = forest.score_and_update_batch(rows).map_err(|e| match e {
            ForestError::InRow { row, source } => ScoreCsvError::Forest { line: self.lines[row].0, source: *source },
            other => ScoreCsvError::Forest { line: self.lines[0].0, source: other },
        })?;
        for ((_, text), score) in self.lines.iter().zip(&scores) {
            writeln!(output, "{text},{score:.6}")?;
        }
        let n = self.lines.len();
        self.lines.clear();
        self.values.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, columns: Option<&[String]>) -> Result<String, ScoreCsvError> {
        let mut out = Vec::new();
        let config = ForestConfig { trees: 20, sample_size: 64, ..ForestConfig::default() };
        score_csv(input.as_bytes(), &mut out, &config, columns)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn scores_the_numeric_column_and_ranks_the_spike_first() {
        let mut input = String::from("timestamp,value\n");
        for i in 0..600 {
            let value = if i == 500 { 115 } else { 10 + (i * 7) % 11 };
            input.push_str(&format!("t{i},{value}\n"));
        }
        let out = run(&input, None).expect("scores");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let scored: Vec<(String, f64)> = lines
            .map(|l| {
                let (row, score) = l.rsplit_once(',').expect("score column");
                (row.to_owned(), score.parse().expect("a number"))
            })
            .collect();
        assert_eq!(scored.len(), 600);
        let top = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("rows");
        assert_eq!(top.0, "t500,115");
    }

    #[test]
    fn bad_cells_and_columns_are_named() {
        let err = run("a,b\n1,2\n3,x\n", None).expect_err("x is not a number");
        assert_eq!(err.to_string(), "line 3, column 2: `x` is not a number");
        let err = run("a,b\n1,2\n", Some(&["c".to_owned()])).expect_err("no column c");
        assert_eq!(err.to_string(), "column `c` is not in the header (columns: a, b)");
        let err = run("1,2\n", Some(&["a".to_owned()])).expect_err("no header");
        assert!(matches!(err, ScoreCsvError::NoHeader));
        assert!(matches!(run("", None), Err(ScoreCsvError::Empty)));
        let err = run("a,b\n1,2\n3\n", None).expect_err("short row");
        assert_eq!(err.to_string(), "line 3: expected at least 2 columns, found 1");
    }

    #[test]
    fn an_empty_cell_is_imputed_not_rejected() {
        let mut input = String::from("a,b\n");
        for i in 0..200 {
            input.push_str(&format!("{},{}\n", 10 + i % 5, 20 + i % 3));
        }
        input.push_str("12,\n");
        let out = run(&input, None).expect("imputed");
        let last = out.lines().last().expect("rows");
        let score: f64 = last.strip_prefix("12,,").expect("row kept as given").parse().expect("score");
        assert!(score < 2.0, "an imputed value is an ordinary one: {score}");

    }
}
