//! Where scored events go. Built: the journal in the embedded store (`journal`).
//! OpenSearch bulk indexing and SNS alerts come with issue 7.

pub mod journal;
