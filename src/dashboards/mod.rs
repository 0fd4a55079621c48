//! Dashboards for OpenSearch Dashboards, as code: `objects` (the saved objects for an
//! index prefix: index pattern, visualizations, saved search, dashboard, as NDJSON),
//! `query` (the OpenSearch request each panel sends, rebuilt from its saved object, so
//! tests run it against a real node) and `install` (the saved-objects import request).
//! The index template is not here: the OpenSearch sink installs it.

pub mod install;
pub mod objects;
pub mod query;

#[cfg(test)]
mod tests;
