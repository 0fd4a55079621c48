//! OpenSearch goes away mid-stream and comes back: no record is lost, none is indexed
//! twice, and the Kinesis checkpoints never pass records OpenSearch does not have. The
//! outage is made by a TCP relay in front of the real node that the test switches off
//! (refusing and cutting connections) and on again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use opensearch::http::transport::Transport;
use opensearch::indices::IndicesRefreshParts;
use opensearch::{CountParts, OpenSearch};
use serde_json::Value;

use crate::servers::{
    active_stream, aws_config, checkpoints, host_port, last_per_shard, opensearch_url, poll_until, put_all,
    unique_name, InProcess, Relay,
};

async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    range: std::ops::Range<i64>,
    last: &mut HashMap<String, String>,
) {
    let entries: Vec<PutRecordsRequestEntry> = range
        .map(|i| {
            let body = format!(
                r#"{{"iotName": "sensor-{}", "iotValue": {}, "ts": {}}}"#,
                i % 8,
                10 + i % 7,
                1_700_000_000_000 + i * 1_000
            );
            PutRecordsRequestEntry::builder()
                .partition_key(format!("sensor-{}", i % 8))
                .data(Blob::new(body))
                .build()
                .expect("entry")
        })
        .collect();
    last.extend(last_per_shard(&put_all(kinesis, stream, &entries).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opensearch_outage_loses_nothing_and_holds_the_checkpoints_back() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let url = opensearch_url();
    let relay = Relay::start(host_port(&url)).await;
    let (kinesis, dynamodb) = (aws_sdk_kinesis::Client::new(&aws), aws_sdk_dynamodb::Client::new(&aws));
    let (stream, table, prefix) =
        (unique_name("rcfd-outage"), unique_name("rcfd-leases"), unique_name("rcfd-outage").to_lowercase());
    active_stream(&kinesis, &stream, 2).await;

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-outage")));
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let text = format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[opensearch]\nurl = 'http://{}'\nindex_prefix = '{prefix}'\n\
         [[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        store.display(),
        relay.address
    );
    let service = InProcess::start(&text).await;
    let mut last = HashMap::new();
    put(&kinesis, &stream, 0..400, &mut last).await;
    poll_until("the first records checkpointed", Duration::from_secs(60), || async {
        (checkpoints(&dynamodb, &table).await == last).then_some(())
    })
    .await;

    // OpenSearch goes away; records keep coming.
    relay.down();
    let before_outage = checkpoints(&dynamodb, &table).await;
    let mut during = last.clone();
    put(&kinesis, &stream, 400..800, &mut during).await;
    // 30 s, as a node restart takes: many GetRecords and bulk retries.
    let outage_ends = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < outage_ends {
        assert_eq!(
            checkpoints(&dynamodb, &table).await,
            before_outage,
            "a checkpoint passed records OpenSearch does not have"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    relay.up();
    poll_until("the records of the outage checkpointed", Duration::from_secs(60), || async {
        (checkpoints(&dynamodb, &table).await == during).then_some(())
    })
    .await;
    service.stop().await;

    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    client.indices().refresh(IndicesRefreshParts::Index(&[&prefix])).send().await.expect("refresh");
    let count: Value =
        client.count(CountParts::Index(&[&prefix])).send().await.expect("count").json().await.expect("json");
    assert_eq!(count["count"], 800, "every record indexed once: {count}");
    let _ = std::fs::remove_file(&store);
}
