//! Where scored events go. Built: the queue from the scorer to the sinks (`queue`,
//! bounded by records), the journal in the embedded store (`journal`) and dead letters
//! to a second Kinesis stream or S3 (`dead_letter`). OpenSearch
//! bulk indexing and SNS alerts come with issue 7.

pub mod dead_letter;
pub mod journal;
pub mod queue;
