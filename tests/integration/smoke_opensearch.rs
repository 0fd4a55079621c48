//! The real OpenSearch node answers, indexes and searches through the `opensearch` crate.

use opensearch::http::transport::Transport;
use opensearch::params::Refresh;
use opensearch::{IndexParts, OpenSearch};
use serde_json::{json, Value};

use crate::servers;

#[tokio::test]
async fn indexes_and_searches_a_scored_event() {
    let url = servers::opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("valid OpenSearch URL"));

    let info: Value = client.info().send().await.expect("GET /").json().await.expect("JSON");
    assert_eq!(info["version"]["distribution"], "opensearch", "not OpenSearch: {info}");
    assert!(info["version"]["number"].as_str().is_some_and(|v| v.starts_with("2.")), "{info}");

    let index = servers::unique_name("rcfd-smoke");
    let event = json!({
        "@timestamp": "2026-11-23T10:00:00Z",
        "detector": "iot",
        "entity": "DemoSensor",
        "values": { "iotValue": 112.0 },
        "anomaly_score": 3.2,
    });
    let indexed = client
        .index(IndexParts::IndexId(&index, "stream/shard-0/49590"))
        .body(event)
        .refresh(Refresh::True)
        .send()
        .await
        .expect("index request");
    assert!(indexed.status_code().is_success(), "index failed: {}", indexed.text().await.unwrap_or_default());

    let found =
        servers::search(&client, &index, &json!({ "query": { "range": { "anomaly_score": { "gte": 3.0 } } } })).await;
    assert_eq!(found["hits"]["total"]["value"], 1, "{found}");
    assert_eq!(found["hits"]["hits"][0]["_id"], "stream/shard-0/49590");
    assert_eq!(found["hits"]["hits"][0]["_source"]["entity"], "DemoSensor");

    client
        .indices()
        .delete(opensearch::indices::IndicesDeleteParts::Index(&[&index]))
        .send()
        .await
        .expect("delete index");
}
