//! The service (`rcfd serve`): `config` (the TOML file and its environment overrides),
//! `scorer` (the detector stage every source feeds), `catalog` (detectors and their
//! TOML), `live` (what the live page shows), `telemetry` (metrics and internal events),
//! `http` (live page, `/metrics`, `/healthz`) and `run` (assembling it all, and
//! shutting it down in order).

pub mod catalog;
pub mod config;
pub mod http;
pub mod live;
pub mod run;
pub mod scorer;
pub mod telemetry;

pub use run::{run, serve, Listeners};
