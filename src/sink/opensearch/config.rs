//! `[opensearch]` in the service config.

use serde::{Deserialize, Serialize};

pub const DEFAULT_INDEX_PREFIX: &str = "rcfd-events";
/// As Kinesis Data Firehose: items refused with 429 or 5xx are retried for this long.
pub const DEFAULT_RETRY_BUDGET_SECONDS: u64 = 300;
pub const DEFAULT_MAX_BULK_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearchConfig {
    /// The node to send to, e.g. `https://search.example.com:9200`. Unset: no OpenSearch sink.
    pub url: Option<String>,
    /// Daily indices are `<prefix>-YYYY.MM.DD`, all in the alias `<prefix>`.
    pub index_prefix: String,
    /// Basic authentication.
    pub username: Option<String>,
    /// Prefer `RCFD_OPENSEARCH__PASSWORD` to writing it here.
    pub password: Option<String>,
    /// How long (seconds) items refused with 429 or 5xx are retried before they become
    /// dead letters.
    pub retry_budget_seconds: u64,
    /// Largest `_bulk` request body in bytes; a bigger batch is split.
    pub max_bulk_bytes: usize,
    /// A PEM file with the CA that signed the node's certificate (instead of the
    /// system's trusted CAs).
    pub ca_file: Option<std::path::PathBuf>,
    /// Sign requests with AWS SigV4 (Amazon OpenSearch Service), credentials and region
    /// from the standard AWS chain.
    pub aws_sigv4: bool,
    /// The SigV4 service name: `es` for OpenSearch Service domains, `aoss` for Serverless.
    pub aws_service: String,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        OpenSearchConfig {
            url: None,
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
            username: None,
            password: None,
            retry_budget_seconds: DEFAULT_RETRY_BUDGET_SECONDS,
            max_bulk_bytes: DEFAULT_MAX_BULK_BYTES,
            ca_file: None,
            aws_sigv4: false,
            aws_service: "es".into(),
        }
    }
}

impl OpenSearchConfig {
    /// Checks the fields: (field path, value, what is allowed).
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let fail =
            |field: &str, value: String, allowed: &str| Err((format!("opensearch.{field}"), value, allowed.to_owned()));
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return fail("url", format!("{url:?}"), "an http:// or https:// URL");
            }
        }
        let prefix_ok = !self.index_prefix.is_empty()
            && self.index_prefix.len() <= 100
            && self.index_prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && !self.index_prefix.starts_with(['-', '_']);
        if !prefix_ok {
            return fail(
                "index_prefix",
                format!("{:?}", self.index_prefix),
                "lower-case letters, digits, - and _ (not first), at most 100",
            );
        }
        if self.max_bulk_bytes < 1024 {
            return fail("max_bulk_bytes", self.max_bulk_bytes.to_string(), "at least 1024");
        }
        if self.aws_sigv4 && self.username.is_some() {
            return fail(
                "aws_sigv4",
                "true".into(),
                "false when opensearch.username is set (one kind of authentication)",
            );
        }
        if !matches!(self.aws_service.as_str(), "es" | "aoss") {
            return fail("aws_service", format!("{:?}", self.aws_service), "\"es\" or \"aoss\"");
        }
        if self.username.is_some() != self.password.is_some() {
            return fail("password", "(hidden)".into(), "set together with opensearch.username");
        }
        Ok(())
    }
}
