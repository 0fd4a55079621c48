//! The index template for scored events (explicit mappings, so a feature named like a
//! date does not become one) and the daily index an event goes to.

use serde_json::{json, Value};

/// The composable index template for `<prefix>-*`, with every daily index in the alias
/// `<prefix>`.
pub fn index_template(prefix: &str) -> Value {
    let position = json!({ "properties": {
        "stream": { "type": "keyword" }, "shard": { "type": "keyword" }, "sequence": { "type": "keyword" }
    }});
    json!({
        "index_patterns": [format!("{prefix}-*")],
        "priority": 100,
        "template": {
            "aliases": { prefix: {} },
            "settings": { "number_of_shards": 1, "number_of_replicas": 0 },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "id": { "type": "keyword" },
                    "@timestamp": { "type": "date", "format": "epoch_millis" },
                    "ingested_at": { "type": "date", "format": "epoch_millis" },
                    "detector": { "type": "keyword" },
                    "entity": { "type": "keyword" },
                    // Feature names are the users': any name, always a number.
                    "values": { "type": "object", "dynamic": true },
                    "expected_values": { "type": "object", "dynamic": true },
                    "attribution": { "type": "object", "dynamic": true },
                    "anomaly_score": { "type": "float" },
                    "anomaly_grade": { "type": "float" },
                    "confidence": { "type": "float" },
                    "is_anomaly": { "type": "boolean" },
                    "learning": { "type": "boolean" },
                    "starts_region": { "type": "boolean" },
                    "steps_back": { "type": "integer" },
                    "source": position
                },
                "dynamic_templates": [
                    { "feature_values": { "path_match": "values.*", "mapping": { "type": "double" } } },
                    { "expected": { "path_match": "expected_values.*", "mapping": { "type": "double" } } },
                    { "attribution_direction": { "path_match": "attribution.*.direction", "mapping": { "type": "keyword" } } },
                    { "attribution_numbers": { "path_match": "attribution.*", "match_mapping_type": "double", "mapping": { "type": "float" } } },
                    { "attribution_objects": { "path_match": "attribution.*", "match_mapping_type": "object", "mapping": { "type": "object" } } }
                ]
            }
        }
    })
}

/// `<prefix>-YYYY.MM.DD` of the event time (UTC).
pub fn daily_index(prefix: &str, event_ms: i64) -> String {
    let (year, month, day) = crate::calendar::civil_from_days(event_ms.div_euclid(86_400_000));
    format!("{prefix}-{year:04}.{month:02}.{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_to_the_index_of_their_day() {
        assert_eq!(daily_index("rcfd-events", 0), "rcfd-events-1970.01.01");
        assert_eq!(daily_index("rcfd-events", 1_795_457_256_500), "rcfd-events-2026.11.23");
        assert_eq!(daily_index("x", 951_782_400_000), "x-2000.02.29");
        assert_eq!(index_template("rcfd-events")["index_patterns"][0], "rcfd-events-*");
    }
}
