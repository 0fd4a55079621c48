//! Integration tests against the real servers `scripts/test.sh` starts (OpenSearch,
//! kinesis-mock, moto). One test crate with modules, so it links once.
//!
//! Endpoints come from the environment, so the same tests run against real AWS:
//! set `RCFD_TEST_REAL_AWS=1` and leave the `AWS_ENDPOINT_URL_*` variables unset.

mod allocations;
mod consumer;
mod dashboards;
mod end_to_end;
mod lease_loss;
mod opensearch_outage;
mod opensearch_sigkill;
mod opensearch_sink;
mod servers;
mod service;
mod smoke_dynamodb;
mod smoke_kinesis;
mod smoke_opensearch;
mod smoke_sns;
mod sns_alerts;
