//! kinesis-mock speaks the Kinesis API to `aws-sdk-kinesis`: a 2-shard stream keeps
//! every record, each partition key on one shard, in sequence order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};

use crate::servers;

#[tokio::test]
async fn puts_and_gets_records_on_a_two_shard_stream() {
    let kinesis = aws_sdk_kinesis::Client::new(&servers::aws_config("AWS_ENDPOINT_URL_KINESIS").await);
    let stream = servers::unique_name("rcfd-smoke");
    kinesis.create_stream().stream_name(&stream).shard_count(2).send().await.expect("CreateStream");
    servers::poll_until("the stream to become ACTIVE", Duration::from_secs(30), || async {
        let summary = kinesis.describe_stream_summary().stream_name(&stream).send().await.ok()?;
        let status = summary.stream_description_summary()?.stream_status().clone();
        (status == StreamStatus::Active).then_some(())
    })
    .await;

    // 40 records over 8 entities: {"iotName": "sensor-k", "iotValue": i}.
    let entries: Vec<PutRecordsRequestEntry> = (0..40)
        .map(|i| {
            let body = format!(r#"{{"iotName":"sensor-{}","iotValue":{i}}}"#, i % 8);
            PutRecordsRequestEntry::builder()
                .partition_key(format!("sensor-{}", i % 8))
                .data(Blob::new(body))
                .build()
                .expect("entry")
        })
        .collect();
    let put = kinesis.put_records().stream_name(&stream).set_records(Some(entries)).send().await.expect("PutRecords");
    assert_eq!(put.failed_record_count(), Some(0));

    let shards = kinesis.list_shards().stream_name(&stream).send().await.expect("ListShards");
    let shard_ids: Vec<String> = shards.shards().iter().map(|s| s.shard_id().to_owned()).collect();
    assert_eq!(shard_ids.len(), 2, "{shard_ids:?}");

    let mut shard_of_key: HashMap<String, String> = HashMap::new();
    let mut values = HashSet::new();
    for shard_id in &shard_ids {
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator
            .expect("an iterator");
        let records = kinesis.get_records().shard_iterator(iterator).limit(1000).send().await.expect("GetRecords");
        let mut last_value_per_key: HashMap<String, i64> = HashMap::new();
        for record in records.records() {
            let doc: serde_json::Value = serde_json::from_slice(record.data().as_ref()).expect("JSON record");
            let key = record.partition_key().expect("partition key").to_owned();
            let value = doc["iotValue"].as_i64().expect("iotValue");
            if let Some(previous) = shard_of_key.insert(key.clone(), shard_id.clone()) {
                assert_eq!(&previous, shard_id, "{key} appeared on two shards");
            }
            // Within a shard the records of one key come back in the order they were put.
            if let Some(last) = last_value_per_key.insert(key, value) {
                assert!(last < value, "out of order on {shard_id}: {last} then {value}");
            }
            assert!(values.insert(value), "value {value} returned twice");
        }
    }
    assert_eq!(values.len(), 40, "every record comes back once");

    kinesis.delete_stream().stream_name(&stream).send().await.expect("DeleteStream");
}
