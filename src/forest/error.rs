//! What can go wrong when building or feeding a forest.

/// An error from the forest; every variant names what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestError {
    #[error("invalid forest parameter `{field}` = {value}: {allowed}")]
    InvalidParameter { field: &'static str, value: String, allowed: String },
    #[error("expected {expected} values per record, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("value {index} is {value}: infinite values are not allowed (NaN marks a missing value)")]
    Infinite { index: usize, value: f32 },
    #[error("value {index} is {value:e}: magnitudes above {limit:e} are not allowed", limit = super::MAX_MAGNITUDE)]
    TooLarge { index: usize, value: f32 },
    #[error("value {index} is missing (NaN) and the forest has no samples yet to impute it from")]
    NothingToImpute { index: usize },
    #[error("row {row}: {source}")]
    InRow { row: usize, source: Box<ForestError> },
    #[error("not a valid forest snapshot: {0}")]
    Snapshot(String),
}
