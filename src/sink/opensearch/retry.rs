//! The one place that decides what happened to each item of a `_bulk` request: 429 and
//! 5xx are worth retrying, other 4xx (a mapping conflict, a bad document) never will
//! succeed and become dead letters, everything else is delivered.

use serde_json::Value;

/// What a `_bulk` response says about the items sent, by their position in the request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Classified {
    pub delivered: Vec<usize>,
    pub retry: Vec<(usize, String)>,
    pub rejected: Vec<(usize, String)>,
}

fn reason(item: &Value) -> String {
    let error = &item["error"];
    match (error["type"].as_str(), error["reason"].as_str()) {
        (Some(kind), Some(reason)) => format!("{kind}: {reason}"),
        _ if !error.is_null() => error.to_string(),
        _ => format!("status {}", item["status"]),
    }
}

/// Classifies the items of `response` for a request of `sent` items. Items the response
/// does not mention (a truncated body) are retried.
pub fn classify(response: &Value, sent: usize) -> Classified {
    let mut classified = Classified::default();
    let items = response["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for position in 0..sent {
        let Some(entry) = items.get(position) else {
            classified.retry.push((position, "not in the _bulk response".into()));
            continue;
        };
        // Each item is {"<action>": {...}}; the action is index here.
        let item = entry.as_object().and_then(|o| o.values().next()).unwrap_or(&Value::Null);
        let status = item["status"].as_u64().unwrap_or(0);
        match status {
            200..=299 => classified.delivered.push(position),
            429 | 500..=599 | 0 => classified.retry.push((position, reason(item))),
            _ => classified.rejected.push((position, reason(item))),
        }
    }
    classified
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_clean_response_delivers_everything() {
        let body = json!({"took": 3, "errors": false, "items": [
            {"index": {"_index": "rcfd-events-2026.11.23", "_id": "a", "status": 201, "result": "created"}},
            {"index": {"_index": "rcfd-events-2026.11.23", "_id": "b", "status": 200, "result": "updated"}}
        ]});
        assert_eq!(classify(&body, 2), Classified { delivered: vec![0, 1], ..Classified::default() });
    }

    #[test]
    fn throttled_and_failed_items_are_retried_and_mapping_errors_rejected() {
        let body = json!({"took": 5, "errors": true, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"index": {"_id": "b", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}},
            {"index": {"_id": "c", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [anomaly_score] of type [float]"}}},
            {"index": {"_id": "d", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}}
        ]});
        let classified = classify(&body, 5);
        assert_eq!(classified.delivered, vec![0]);
        assert_eq!(
            classified.retry,
            vec![
                (1, "es_rejected_execution_exception: rejected execution of coordinating operation".to_owned()),
                (3, "unavailable_shards_exception: primary shard is not active".to_owned()),
                (4, "not in the _bulk response".to_owned()),
            ]
        );
        assert_eq!(
            classified.rejected,
            vec![(2, "mapper_parsing_exception: failed to parse field [anomaly_score] of type [float]".to_owned())]
        );
    }

    #[test]
    fn a_body_without_items_retries_all() {
        let classified = classify(&json!({"error": "gateway timeout"}), 2);
        assert_eq!(classified.retry.len(), 2);
        assert!(classified.delivered.is_empty() && classified.rejected.is_empty());
    }
}
