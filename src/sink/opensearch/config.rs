//! `[opensearch]` in the service config.

use serde::{Deserialize, Serialize};

pub use opensearch::http::Url;

pub const DEFAULT_INDEX_PREFIX: &str = "rcfd-events";
/// As Kinesis Data Firehose: items refused with 429 or 5xx are retried for this long.
pub const DEFAULT_RETRY_BUDGET_SECONDS: u64 = 300;
pub const DEFAULT_MAX_BULK_BYTES: usize = 5 * 1024 * 1024;
/// Ten years: anything longer is almost certainly a unit mistake.
pub const MAX_RETENTION_DAYS: u32 = 3_650;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearchConfig {
    /// The node to send to, e.g. `https://search.example.com:9200`: shorthand for a
    /// one-element `urls`. Unset (and no `urls`): no OpenSearch sink.
    pub url: Option<String>,
    /// The cluster's nodes, e.g. `["https://node-1:9200", "https://node-2:9200"]`.
    /// Requests go round the list; a node that cannot be reached is skipped for a
    /// while and its request sent to the next. Set `url` or `urls`, not both.
    pub urls: Option<Vec<String>>,
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
    /// Delete daily indices this many days after they were created, with an Index
    /// State Management policy installed at start. Unset: indices are kept. Without
    /// the ISM plugin rcfd logs a warning and indexes on.
    pub retention_days: Option<u32>,
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
            urls: None,
            index_prefix: DEFAULT_INDEX_PREFIX.into(),
            username: None,
            password: None,
            retry_budget_seconds: DEFAULT_RETRY_BUDGET_SECONDS,
            max_bulk_bytes: DEFAULT_MAX_BULK_BYTES,
            ca_file: None,
            retention_days: None,
            aws_sigv4: false,
            aws_service: "es".into(),
        }
    }
}

/// What a node URL must be, in a config error.
const URL_ALLOWED: &str = "an http:// or https:// URL with a host, e.g. https://search.example.com:9200";

/// `text` as a node URL, or why not.
fn node_url(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.query().is_none()
        && url.fragment().is_none();
    usable.then_some(url)
}

impl OpenSearchConfig {
    /// Checks the fields: the node URLs (none: no OpenSearch sink), or the error as
    /// (field path, value, what is allowed).
    pub fn validate(&self) -> Result<Vec<Url>, (String, String, String)> {
        let fail =
            |field: &str, value: String, allowed: &str| Err((format!("opensearch.{field}"), value, allowed.to_owned()));
        let nodes = match (&self.url, &self.urls) {
            (Some(_), Some(urls)) => {
                return fail("urls", format!("{urls:?}"), "unset when opensearch.url is set (url is a one-node urls)")
            }
            (Some(url), None) => match node_url(url) {
                Some(parsed) => vec![parsed],
                None => return fail("url", format!("{url:?}"), URL_ALLOWED),
            },
            (None, Some(urls)) if urls.is_empty() => {
                return fail("urls", "[]".into(), "at least one URL (or leave urls out: no OpenSearch sink)")
            }
            (None, Some(urls)) => {
                let mut nodes = Vec::with_capacity(urls.len());
                for (i, url) in urls.iter().enumerate() {
                    match node_url(url) {
                        Some(parsed) if nodes.contains(&parsed) => {
                            return fail(&format!("urls[{i}]"), format!("{url:?}"), "a URL not already in the list")
                        }
                        Some(parsed) => nodes.push(parsed),
                        None => return fail(&format!("urls[{i}]"), format!("{url:?}"), URL_ALLOWED),
                    }
                }
                nodes
            }
            (None, None) => Vec::new(),
        };
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
        if let Some(days) = self.retention_days.filter(|days| !(1..=MAX_RETENTION_DAYS).contains(days)) {
            return fail(
                "retention_days",
                days.to_string(),
                &format!("1 to {MAX_RETENTION_DAYS} (or unset: keep indices)"),
            );
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
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(url: Option<&str>, urls: Option<&[&str]>) -> OpenSearchConfig {
        OpenSearchConfig {
            url: url.map(str::to_owned),
            urls: urls.map(|u| u.iter().map(|s| s.to_string()).collect()),
            ..OpenSearchConfig::default()
        }
    }

    fn nodes(config: &OpenSearchConfig) -> Vec<String> {
        config.validate().expect("valid").iter().map(Url::to_string).collect()
    }

    #[test]
    fn url_is_a_one_node_list_and_no_url_is_no_sink() {
        assert_eq!(nodes(&with(Some("https://search.example.com:9200"), None)), ["https://search.example.com:9200/"]);
        assert_eq!(
            nodes(&with(None, Some(&["http://10.0.0.1:9200", "http://10.0.0.2:9200/base"]))),
            ["http://10.0.0.1:9200/", "http://10.0.0.2:9200/base"]
        );
        assert!(nodes(&OpenSearchConfig::default()).is_empty());
    }

    #[test]
    fn url_and_urls_together_empty_lists_and_malformed_urls_name_the_field_and_value() {
        let both = with(Some("http://a:9200"), Some(&["http://b:9200"])).validate().expect_err("both");
        assert_eq!(both.0, "opensearch.urls");
        assert!(both.1.contains("http://b:9200") && both.2.contains("opensearch.url"), "{both:?}");

        let empty = with(None, Some(&[])).validate().expect_err("empty");
        assert_eq!((empty.0.as_str(), empty.1.as_str()), ("opensearch.urls", "[]"));

        for bad in ["search.example.com:9200", "ftp://a:21", "http://", "http://a:9200?x=1", "not a url"] {
            let single = with(Some(bad), None).validate().expect_err(bad);
            assert_eq!((single.0.as_str(), single.1.as_str()), ("opensearch.url", format!("{bad:?}").as_str()));
            assert_eq!(single.2, URL_ALLOWED);
            let listed = with(None, Some(&["http://ok:9200", bad])).validate().expect_err(bad);
            assert_eq!((listed.0.as_str(), listed.1.as_str()), ("opensearch.urls[1]", format!("{bad:?}").as_str()));
        }

        let twice = with(None, Some(&["http://a:9200", "http://a:9200/"])).validate().expect_err("twice");
        assert_eq!(twice.0, "opensearch.urls[1]");
    }

    #[test]
    fn retention_days_are_one_to_ten_years_or_unset() {
        let days =
            |d: Option<u32>| OpenSearchConfig { retention_days: d, ..with(Some("http://a:9200"), None) }.validate();
        assert!(days(None).is_ok() && days(Some(1)).is_ok() && days(Some(MAX_RETENTION_DAYS)).is_ok());
        for bad in [0, MAX_RETENTION_DAYS + 1] {
            let e = days(Some(bad)).expect_err("out of range");
            assert_eq!((e.0.as_str(), e.1.clone()), ("opensearch.retention_days", bad.to_string()));
        }
    }
}
