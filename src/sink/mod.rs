//! Where scored events go. Built: the queue from the scorer to the sinks (`queue`,
//! bounded by records) and the journal in the embedded store (`journal`). OpenSearch
//! bulk indexing and SNS alerts come with issue 7.

pub mod journal;
pub mod queue;
