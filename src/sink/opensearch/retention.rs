//! The optional ISM retention policy: daily indices older than `retention_days` are
//! deleted by OpenSearch's Index State Management plugin. Installed (or updated) at
//! start; a cluster without the plugin, or one that refuses the policy, gets a logged
//! warning and keeps its indices, because retention is housekeeping and must never
//! stop events from being indexed.

use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::Method;
use opensearch::OpenSearch;
use serde_json::{json, Value};

/// The policy's id: one per index prefix.
pub fn policy_id(prefix: &str) -> String {
    format!("{prefix}-retention")
}

/// The policy: indices of `<prefix>-*` stay "hot" for `days`, then are deleted. The
/// `ism_template` attaches it to each daily index as it is created.
pub fn policy(prefix: &str, days: u32) -> Value {
    json!({"policy": {
        "description": format!("rcfd: delete {prefix}-* indices {days} days after they were created"),
        "default_state": "hot",
        "states": [
            {"name": "hot", "actions": [],
             "transitions": [{"state_name": "delete", "conditions": {"min_index_age": format!("{days}d")}}]},
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
        ],
        "ism_template": [{"index_patterns": [format!("{prefix}-*")], "priority": 100}]
    }})
}

/// What `GET _plugins/_ism/policies/<id>` said.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    /// No such policy yet.
    Missing,
    /// There is one; an update must name the version it replaces.
    Found {
        seq_no: u64,
        primary_term: u64,
    },
    /// The cluster has no ISM plugin (no handler for the path).
    NoPlugin,
    Failed(String),
}

fn no_handler(status: u16, body: &str) -> bool {
    (status == 400 || status == 404) && body.contains("no handler found for uri")
}

/// Reads the answer to the GET of the policy.
pub fn read_existing(status: u16, body: &str) -> Existing {
    if no_handler(status, body) {
        return Existing::NoPlugin;
    }
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match status {
        200 => match (parsed["_seq_no"].as_u64(), parsed["_primary_term"].as_u64()) {
            (Some(seq_no), Some(primary_term)) => Existing::Found { seq_no, primary_term },
            _ => Existing::Failed(format!("a policy without _seq_no/_primary_term: {body}")),
        },
        404 => Existing::Missing,
        _ => Existing::Failed(format!("{status}: {body}")),
    }
}

/// What became of the policy, as logged.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    NoPlugin,
    Failed(String),
}

/// Reads the answer to the PUT of the policy.
pub fn read_put(status: u16, body: &str) -> Outcome {
    match status {
        _ if no_handler(status, body) => Outcome::NoPlugin,
        200 | 201 => Outcome::Installed,
        _ => Outcome::Failed(format!("{status}: {body}")),
    }
}

async fn request(
    client: &OpenSearch,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<Value>,
) -> (u16, String) {
    let sent = client.send(method, path, HeaderMap::new(), Some(query), body.map(JsonBody::new), None).await;
    match sent {
        Ok(response) => {
            let status = response.status_code().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        // Status 0: not reached at all.
        Err(e) => (0, e.to_string()),
    }
}

/// Installs or updates the retention policy of `prefix`; returns what happened, having
/// logged it (a warning unless installed).
pub async fn install(client: &OpenSearch, prefix: &str, days: u32) -> Outcome {
    let path = format!("/_plugins/_ism/policies/{}", policy_id(prefix));
    let (status, body) = request(client, Method::Get, &path, &[], None).await;
    let query = match read_existing(status, &body) {
        Existing::Missing => Vec::new(),
        Existing::Found { seq_no, primary_term } => {
            vec![("if_seq_no", seq_no.to_string()), ("if_primary_term", primary_term.to_string())]
        }
        Existing::NoPlugin => return logged(prefix, days, Outcome::NoPlugin),
        Existing::Failed(reason) => return logged(prefix, days, Outcome::Failed(reason)),
    };
    let (status, body) = request(client, Method::Put, &path, &query, Some(policy(prefix, days))).await;
    logged(prefix, days, read_put(status, &body))
}

fn logged(prefix: &str, days: u32, outcome: Outcome) -> Outcome {
    let policy = policy_id(prefix);
    match &outcome {
        Outcome::Installed => tracing::info!(%policy, days, "ISM retention policy installed"),
        Outcome::NoPlugin => tracing::warn!(
            %policy,
            days,
            "opensearch.retention_days is set but the cluster has no Index State Management plugin: \
             old indices are NOT deleted; install the plugin or delete them yourself"
        ),
        Outcome::Failed(reason) => tracing::warn!(
            %policy,
            days,
            %reason,
            "the ISM retention policy could not be installed: old indices are NOT deleted"
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_deletes_the_prefixes_indices_after_the_days() {
        let body = policy("rcfd-events", 30);
        let states = body["policy"]["states"].as_array().expect("states");
        assert_eq!(body["policy"]["default_state"], "hot");
        assert_eq!(
            states[0]["transitions"][0],
            json!({"state_name": "delete", "conditions": {"min_index_age": "30d"}})
        );
        assert_eq!(states[1], json!({"name": "delete", "actions": [{"delete": {}}], "transitions": []}));
        assert_eq!(body["policy"]["ism_template"][0]["index_patterns"], json!(["rcfd-events-*"]));
        assert_eq!(policy_id("rcfd-events"), "rcfd-events-retention");
    }

    #[test]
    fn answers_are_read_as_found_missing_or_no_plugin() {
        // The answer of OpenSearch 2.19 without the plugin (scripts/test.sh's node).
        let none =
            r#"{"error":"no handler found for uri [/_plugins/_ism/policies/rcfd-events-retention] and method [GET]"}"#;
        assert_eq!(read_existing(400, none), Existing::NoPlugin);
        assert_eq!(read_put(400, &none.replace("GET", "PUT")), Outcome::NoPlugin);
        // With the plugin (bodies as in the ISM API documentation).
        let missing = r#"{"error":{"root_cause":[{"type":"status_exception","reason":"Policy not found"}],"type":"status_exception","reason":"Policy not found"},"status":404}"#;
        assert_eq!(read_existing(404, missing), Existing::Missing);
        let found = r#"{"_id":"rcfd-events-retention","_version":2,"_seq_no":7,"_primary_term":1,"policy":{"policy_id":"rcfd-events-retention"}}"#;
        assert_eq!(read_existing(200, found), Existing::Found { seq_no: 7, primary_term: 1 });
        assert_eq!(read_put(201, r#"{"_id":"rcfd-events-retention","_version":1}"#), Outcome::Installed);
        let forbidden = r#"{"error":{"type":"security_exception","reason":"no permissions for [cluster:admin/opendistro/ism/policy/write]"},"status":403}"#;
        assert!(matches!(read_put(403, forbidden), Outcome::Failed(r) if r.contains("no permissions")));
        assert!(matches!(read_existing(0, "connection refused"), Existing::Failed(_)));
    }
}
