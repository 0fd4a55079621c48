//! Accuracy evaluation: the Numenta Anomaly Benchmark's scoring (`nab`), reading a NAB
//! corpus and running a scorer over it (`corpus`), and the plain per-row numbers beside
//! it, ROC-AUC, precision and recall (`classification`), and a held-out synthetic corpus in
//! NAB's format (`synthetic`).

pub mod classification;
pub mod corpus;
pub mod nab;
pub mod synthetic;
