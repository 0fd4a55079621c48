//! The service configuration: one TOML file plus environment overrides. Every field's
//! doc comment is its documentation (`rcfd config check FILE` prints the effective
//! configuration). `validate()` is pure; [`super::run()`] does the I/O.
//!
//! Environment overrides: `RCFD_<SECTION>__<FIELD>`, e.g. `RCFD_GRPC__LISTEN=0.0.0.0:50051`
//! or `RCFD_AUTH__TOKEN=...`. The value is read as a TOML value (number, boolean,
//! array) and otherwise taken as a string; where its field wants a string, it is one
//! (a token `true` stays text). Variables without `__` are not overrides.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STORE_PATH: &str = "rcfd-data/rcfd.redb";
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 10_000;
pub const MAX_BATCH_RECORDS: usize = 1_000_000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
pub const DEFAULT_KEEP_EVENTS: u64 = 1_000_000;
pub const DEFAULT_MAX_RESIDENT_MODELS: usize = 100_000;
pub const MAX_SCORING_THREADS: usize = 256;
pub const DEFAULT_SIMULATOR_RATE: f64 = 10.0;
pub const MAX_SIMULATOR_RATE: f64 = 100_000.0;
pub const ENV_PREFIX: &str = "RCFD_";

/// The root of `rcfd.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub models: ModelsConfig,
    pub simulator: SimulatorConfig,
    /// Kinesis streams to consume (`[[kinesis]]`, one table per stream).
    pub kinesis: Vec<crate::source::kinesis::config::KinesisConfig>,
    /// Where dead letters go besides the embedded journal.
    pub dead_letters: crate::sink::dead_letter::DeadLetterConfig,
    /// Index every scored event in OpenSearch (when `url` or `urls` is set).
    pub opensearch: crate::sink::opensearch::config::OpenSearchConfig,
    /// Send alerts to an SNS topic (when `topic_arn` is set).
    pub sns: crate::sink::sns::SnsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc: GrpcConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            models: ModelsConfig::default(),
            simulator: SimulatorConfig { enabled: false, ..SimulatorConfig::default() },
            kinesis: Vec::new(),
            dead_letters: crate::sink::dead_letter::DeadLetterConfig::default(),
            opensearch: crate::sink::opensearch::config::OpenSearchConfig::default(),
            sns: crate::sink::sns::SnsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address the gRPC API listens on.
    pub listen: String,
    /// Most records one Score request (or stream message) may carry; more is
    /// RESOURCE_EXHAUSTED.
    pub max_batch_records: usize,
    /// Largest request message in bytes; larger is RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// TLS certificate chain and private key (PEM files). Without them, plain HTTP/2.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Allow a non-loopback listen address without TLS and a token. Off: rcfd refuses
    /// to serve an open, unencrypted API to the network by accident.
    pub allow_insecure: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: DEFAULT_GRPC_LISTEN.into(),
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls_cert: None,
            tls_key: None,
            allow_insecure: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/metrics`, `/healthz` and the live page.
    pub enabled: bool,
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Allow a non-loopback listen address (the page and metrics are not authenticated).
    pub allow_public: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { enabled: true, listen: DEFAULT_HTTP_LISTEN.into(), allow_public: false }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer token the gRPC API requires (`authorization: Bearer <token>`); the health
    /// and reflection services stay open. Prefer `RCFD_AUTH__TOKEN` to writing it here.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The embedded database file: model snapshots, scored events, alerts, dead
    /// letters, detectors created through the API.
    pub path: PathBuf,
    /// Scored events (and alerts, and dead letters) kept; the oldest go first. Events
    /// go in chunks of up to 1,024, so up to 1,023 more may be held.
    pub keep_events: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: DEFAULT_STORE_PATH.into(), keep_events: DEFAULT_KEEP_EVENTS }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Detector files (TOML) or folders of them, loaded at start. Detectors can also
    /// be created through the API; those are kept in the store.
    pub detectors: Vec<PathBuf>,
    /// Most models kept in memory; the least recently used beyond it are snapshotted
    /// to the store and restored when their entity comes back.
    pub max_resident: usize,
    /// How much older than its entity's latest record (ms) a record may be and still
    /// be scored; older ones are dead-lettered.
    pub max_lateness_ms: i64,
    /// How far ahead of this machine's clock (ms) a record's event time may be and still
    /// be scored; further ones are dead-lettered (a time in microseconds would otherwise
    /// make every later record of its entity late).
    pub max_future_ms: i64,
    /// Threads a batch is scored on; 0: one per CPU core. A batch's models are split
    /// over them by their number of records (each entity's records stay in order on
    /// one thread).
    pub scoring_threads: usize,
}

impl ModelsConfig {
    /// `scoring_threads`, with 0 resolved to the number of cores.
    pub fn scoring_threads(&self) -> usize {
        match self.scoring_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            detectors: Vec::new(),
            max_resident: DEFAULT_MAX_RESIDENT_MODELS,
            max_lateness_ms: crate::detector::registry::DEFAULT_MAX_LATENESS_MS,
            max_future_ms: crate::detector::registry::DEFAULT_MAX_FUTURE_MS,
            scoring_threads: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Run the built-in simulator (on in the embedded default, off with a config file).
    pub enabled: bool,
    /// Sensors following the reference scenario (DemoSensor-1, ...): values 10..20,
    /// 1% in 100..120.
    pub sensors: usize,
    /// Also run DemoWave: a noisy wave with occasional drops.
    pub wave: bool,
    /// Records per second per sensor.
    pub rate: f64,
    pub seed: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { enabled: true, sensors: 3, wave: true, rate: DEFAULT_SIMULATOR_RATE, seed: 42 }
    }
}

/// A configuration error: the field's path, its value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value}: {allowed}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub allowed: String,
}

fn error(field: &str, value: impl std::fmt::Debug, allowed: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), value: format!("{value:?}"), allowed: allowed.into() }
}

/// A checked configuration, ready for [`super::run()`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    /// `opensearch.url` or `opensearch.urls`, parsed; empty: no OpenSearch sink.
    pub opensearch_nodes: Vec<crate::sink::opensearch::config::Url>,
    pub config: Config,
}

fn address(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| error(field, text, "an IP address and port, e.g. 127.0.0.1:50051"))
}

impl Config {
    /// `rcfd serve` without a file: everything local, the simulator on.
    pub fn embedded_default() -> Self {
        Config { simulator: SimulatorConfig::default(), ..Config::default() }
    }

    /// Reads `text` (TOML) with `env` overrides applied (pairs of name and value).
    pub fn from_toml_with_env<I>(text: &str, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut root: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or_else(|| "config".to_owned(), |s| format!("config at byte {}", s.start));
            ConfigError { field: at, value: String::new(), allowed: e.message().to_owned() }
        })?;
        // Overrides read as something other than a string, in case their field wants one.
        let mut typed: Vec<(String, Vec<String>, String)> = Vec::new();
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX).filter(|p| p.contains("__")) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let value = parse_env_value(&raw);
            if !value.is_str() {
                typed.push((keys.join("."), keys.clone(), raw.clone()));
            }
            set_path(&mut root, &keys, value).map_err(|allowed| error(&name, &raw, allowed))?;
        }
        loop {
            let error = match serde_path_to_error::deserialize(toml::Value::Table(root.clone())) {
                Ok(config) => return Ok(config),
                Err(e) => e,
            };
            let field = error.path().to_string();
            // A token or password that reads as `true` or `123` is still text where a
            // string is wanted: the field's type decides, so try it as the string.
            if let Some(at) = typed.iter().position(|(path, _, _)| *path == field) {
                let (_, keys, raw) = typed.swap_remove(at);
                set_path(&mut root, &keys, toml::Value::String(raw)).map_err(|allowed| ConfigError {
                    field: field.clone(),
                    value: String::new(),
                    allowed,
                })?;
                continue;
            }
            return Err(ConfigError {
                field: if field == "." { "config".into() } else { field },
                value: String::new(),
                allowed: error.into_inner().message().to_owned(),
            });
        }
    }

    /// Checks every field; pure (files named here are read by `run`).
    pub fn validate(self) -> Result<ServiceConfig, ConfigError> {
        let grpc = &self.grpc;
        let grpc_listen = address("grpc.listen", &grpc.listen)?;
        if !(1..=MAX_BATCH_RECORDS).contains(&grpc.max_batch_records) {
            return Err(error("grpc.max_batch_records", grpc.max_batch_records, format!("1 to {MAX_BATCH_RECORDS}")));
        }
        if !(1024..=MAX_MESSAGE_BYTES).contains(&grpc.max_message_bytes) {
            return Err(error(
                "grpc.max_message_bytes",
                grpc.max_message_bytes,
                format!("1024 to {MAX_MESSAGE_BYTES}"),
            ));
        }
        let tls = match (&grpc.tls_cert, &grpc.tls_key) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (cert, _) => {
                let (field, missing) =
                    if cert.is_some() { ("grpc.tls_key", "tls_key") } else { ("grpc.tls_cert", "tls_cert") };
                return Err(error(
                    field,
                    Option::<String>::None,
                    format!("set together with the other: {missing} is missing"),
                ));
            }
        };
        if let Some(token) = &self.auth.token {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(error("auth.token", "(hidden)", "at least 16 characters, no spaces"));
            }
        }
        let secured = tls && self.auth.token.is_some();
        if !(grpc_listen.ip().is_loopback() || secured || grpc.allow_insecure) {
            return Err(error(
                "grpc.listen",
                &grpc.listen,
                "a loopback address, unless grpc.tls_cert/tls_key and auth.token are set (or grpc.allow_insecure = true)",
            ));
        }
        let http_listen = if self.http.enabled {
            let listen = address("http.listen", &self.http.listen)?;
            if !listen.ip().is_loopback() && !self.http.allow_public {
                return Err(error(
                    "http.listen",
                    &self.http.listen,
                    "a loopback address, unless http.allow_public = true",
                ));
            }
            Some(listen)
        } else {
            None
        };
        if self.store.path.as_os_str().is_empty() {
            return Err(error("store.path", &self.store.path, "a file path"));
        }
        if self.store.keep_events == 0 {
            return Err(error("store.keep_events", 0, "at least 1"));
        }
        if self.models.max_resident == 0 {
            return Err(error("models.max_resident", 0, "at least 1"));
        }
        if self.models.scoring_threads > MAX_SCORING_THREADS {
            return Err(error("models.scoring_threads", self.models.scoring_threads, "0 (one per core) to 256"));
        }
        if self.models.max_lateness_ms < 0 {
            return Err(error("models.max_lateness_ms", self.models.max_lateness_ms, "0 or more"));
        }
        if self.models.max_future_ms < 0 {
            return Err(error("models.max_future_ms", self.models.max_future_ms, "0 or more"));
        }
        let sim = &self.simulator;
        if sim.enabled {
            if !(sim.rate > 0.0 && sim.rate <= MAX_SIMULATOR_RATE) {
                return Err(error("simulator.rate", sim.rate, format!("more than 0, at most {MAX_SIMULATOR_RATE}")));
            }
            if sim.sensors == 0 && !sim.wave {
                return Err(error("simulator.sensors", 0, "at least 1 sensor, or simulator.wave = true"));
            }
        }
        let opensearch_nodes =
            self.opensearch.validate().map_err(|(field, value, allowed)| ConfigError { field, value, allowed })?;
        if self.sns.cooldown_ms < 0 {
            return Err(error("sns.cooldown_ms", self.sns.cooldown_ms, "0 or more"));
        }
        if self.sns.max_per_minute == 0 {
            return Err(error("sns.max_per_minute", 0, "at least 1"));
        }
        if self.sns.topic_arn.as_deref().is_some_and(|arn| !arn.starts_with("arn:")) {
            return Err(error("sns.topic_arn", &self.sns.topic_arn, "a topic ARN (arn:aws:sns:region:account:name)"));
        }
        let letters = &self.dead_letters;
        if letters.kinesis_stream.is_some() && letters.s3_bucket.is_some() {
            return Err(error(
                "dead_letters.s3_bucket",
                &letters.s3_bucket,
                "unset when dead_letters.kinesis_stream is set (one target)",
            ));
        }
        if letters.kinesis_stream.as_deref() == Some("") || letters.s3_bucket.as_deref() == Some("") {
            return Err(error("dead_letters", "\"\"", "a non-empty stream or bucket name"));
        }
        for (i, stream) in self.kinesis.iter().enumerate() {
            stream.validate(&format!("kinesis[{i}]")).map_err(|(field, value, allowed)| ConfigError {
                field,
                value,
                allowed,
            })?;
        }
        Ok(ServiceConfig { grpc_listen, http_listen, opensearch_nodes, config: self })
    }
}

/// An environment value as TOML (`42`, `true`, `["a"]`), else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Err("a field path after RCFD_".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("`{first}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_empty_file_is_the_default_and_the_default_is_valid() {
        let config = Config::from_toml_with_env("", env(&[])).expect("parses");
        assert_eq!(config, Config::default());
        assert!(!config.simulator.enabled, "a config file starts without the simulator");
        let valid = Config::embedded_default().validate().expect("valid");
        assert_eq!(valid.grpc_listen, "127.0.0.1:50051".parse().expect("address"));
        assert!(valid.config.simulator.enabled);
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rcfd.example.toml");
        let text = std::fs::read_to_string(path).expect("config/rcfd.example.toml");
        let example = Config::from_toml_with_env(&text, env(&[])).expect("parses");
        let mut expected = Config::default();
        expected.models.detectors = vec!["models".into()];
        assert_eq!(example, expected);
        example.validate().expect("valid");
    }

    #[test]
    fn environment_overrides_win_and_unrelated_variables_are_ignored() {
        let config = Config::from_toml_with_env(
            "[grpc]\nlisten = \"127.0.0.1:1\"\n",
            env(&[
                ("RCFD_GRPC__LISTEN", "127.0.0.1:2"),
                ("RCFD_GRPC__MAX_BATCH_RECORDS", "50"),
                ("RCFD_SIMULATOR__ENABLED", "true"),
                ("RCFD_TEST_OPENSEARCH_URL", "http://x"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("parses");
        assert_eq!(config.grpc.listen, "127.0.0.1:2");
        assert_eq!(config.grpc.max_batch_records, 50);
        assert!(config.simulator.enabled);
        // Secrets that read as TOML numbers or booleans stay the text they are.
        let config = Config::from_toml_with_env(
            "",
            env(&[
                ("RCFD_AUTH__TOKEN", "true"),
                ("RCFD_SNS__TOPIC_ARN", "12345678901234567"),
                ("RCFD_GRPC__LISTEN", "nan"),
            ]),
        )
        .expect("parses");
        assert_eq!(config.auth.token.as_deref(), Some("true"));
        assert_eq!(config.sns.topic_arn.as_deref(), Some("12345678901234567"));
        assert_eq!(config.grpc.listen, "nan");
        // A number field still wants a number.
        let typed = Config::from_toml_with_env("", env(&[("RCFD_GRPC__MAX_BATCH_RECORDS", "true")])).expect_err("type");
        assert_eq!(typed.field, "grpc.max_batch_records");
    }

    #[test]
    fn errors_name_the_field_path() {
        let unknown = Config::from_toml_with_env("[grpc]\nlisen = \"x\"\n", env(&[])).expect_err("unknown field");
        assert_eq!(unknown.field, "grpc.lisen");
        assert!(unknown.allowed.contains("unknown field `lisen`"), "{unknown}");
        let typed = Config::from_toml_with_env("", env(&[("RCFD_GRPC__MAX_BATCH_RECORDS", "many")])).expect_err("type");
        assert_eq!(typed.field, "grpc.max_batch_records");
        let bad = Config::from_toml_with_env("[grpc]\nmax_batch_records = 0\n", env(&[])).expect("parses").validate();
        assert_eq!(bad.expect_err("bounds").to_string(), "grpc.max_batch_records = 0: 1 to 1000000");
    }

    #[test]
    fn a_public_address_needs_tls_and_a_token() {
        let public = |extra: &str| {
            Config::from_toml_with_env(&format!("[grpc]\nlisten = \"0.0.0.0:50051\"\n{extra}"), env(&[]))
                .expect("parses")
                .validate()
        };
        assert_eq!(public("").expect_err("refused").field, "grpc.listen");
        assert!(public("allow_insecure = true\n").is_ok());
        let secured = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[auth]\ntoken = \"0123456789abcdef\"\n";
        assert!(public(secured).is_ok());
        let half = public("tls_cert = \"c.pem\"\n").expect_err("key missing");
        assert_eq!(half.field, "grpc.tls_key");
        let short = Config::from_toml_with_env("[auth]\ntoken = \"x\"\n", env(&[])).expect("parses").validate();
        assert_eq!(short.expect_err("short token").field, "auth.token");
        let stream = Config::from_toml_with_env(
            "[[kinesis]]\nstream = \"iot\"\ndetector = \"d\"\npoll_interval_ms = 50\n",
            env(&[]),
        );
        let error = stream.expect("parses").validate().expect_err("too fast");
        assert_eq!(error.field, "kinesis[0].poll_interval_ms");
    }
}
