//! Accuracy evaluation: the Numenta Anomaly Benchmark's scoring (`nab`), and reading
//! a NAB corpus and running a scorer over it (`corpus`).

pub mod corpus;
pub mod nab;
