//! The reference scenario end to end: a producer writes it to a 2-shard Kinesis stream
//! (kinesis-mock); rcfd consumes it with leases in DynamoDB (moto), indexes every scored
//! event in the real OpenSearch and alerts through SNS (moto) to a subscribed SQS queue.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use opensearch::http::transport::Transport;
use opensearch::indices::IndicesRefreshParts;
use opensearch::{CountParts, OpenSearch};
use rcfd::service::config::SimulatorConfig;
use rcfd::source::simulator::Readings;
use rcfd::store::embedded::EmbeddedStore;
use serde_json::{json, Value};

use crate::servers::{
    active_stream, aws_config, checkpoints, last_per_shard, opensearch_url, poll_until, put_all, search,
    subscribed_queue, unique_name, InProcess,
};

const SENSORS: usize = 4;
const TICKS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_to_opensearch_and_sns() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    for endpoint in ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_SQS"] {
        aws_config(endpoint).await;
    }
    let url = opensearch_url();
    let (kinesis, dynamodb) = (aws_sdk_kinesis::Client::new(&aws), aws_sdk_dynamodb::Client::new(&aws));
    let (sns, sqs) = (aws_sdk_sns::Client::new(&aws), aws_sdk_sqs::Client::new(&aws));
    let (stream, table, prefix) =
        (unique_name("rcfd-e2e"), unique_name("rcfd-leases"), unique_name("rcfd-e2e").to_lowercase());

    let topic =
        sns.create_topic().name(unique_name("rcfd-alerts")).send().await.expect("CreateTopic").topic_arn.expect("arn");
    let queue = subscribed_queue(&sns, &sqs, &topic, &unique_name("rcfd-alerts")).await;

    active_stream(&kinesis, &stream, 2).await;
    let mut readings =
        Readings::new(&SimulatorConfig { sensors: SENSORS, wave: false, seed: 23, ..Default::default() });
    let mut injected: HashMap<String, bool> = HashMap::new();
    let mut entries = Vec::new();
    for tick in 0..TICKS {
        for (entity, value, anomaly) in readings.next_tick() {
            let t = 1_700_000_000_000 + tick as i64 * 1_000;
            injected.insert(format!("{entity}@{t}"), anomaly);
            let body = format!(r#"{{"iotName": "{entity}", "iotValue": {value}, "ts": {t}}}"#);
            entries.push(
                PutRecordsRequestEntry::builder().partition_key(&entity).data(Blob::new(body)).build().expect("entry"),
            );
        }
    }
    let last = last_per_shard(&put_all(&kinesis, &stream, &entries).await);

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-e2e")));
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let text = format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[opensearch]\nurl = '{url}'\nindex_prefix = '{prefix}'\n\
         [sns]\ntopic_arn = '{topic}'\ncooldown_ms = 0\nmax_per_minute = 10000\n\
         [[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        store.display()
    );
    let service = InProcess::start(&text).await;
    poll_until("checkpoints at the end of each shard", Duration::from_secs(90), || async {
        (checkpoints(&dynamodb, &table).await == last).then_some(())
    })
    .await;
    service.stop().await;

    // Every record is one document.
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    client.indices().refresh(IndicesRefreshParts::Index(&[&prefix])).send().await.expect("refresh");
    let count: Value =
        client.count(CountParts::Index(&[&prefix])).send().await.expect("count").json().await.expect("json");
    assert_eq!(count["count"], SENSORS * TICKS, "one document per record (unique ids): {count}");
    // The top-scoring documents, once the models have warmed up, are the injected anomalies.
    let anomalies = {
        let journal = EmbeddedStore::open(&store).expect("store");
        let events = journal.recent_events(SENSORS * TICKS).expect("events");
        events.iter().filter(|e| !e.learning && injected[&format!("{}@{}", e.entity, e.event_ms)]).count()
    };
    let query = json!({"size": anomalies, "sort": [{"anomaly_score": "desc"}], "query": {"term": {"learning": false}}});
    let top = search(&client, &prefix, &query).await;
    let hits = top["hits"]["hits"].as_array().expect("hits");
    assert!(anomalies > 5 && hits.len() == anomalies);
    for hit in hits {
        let source = &hit["_source"];
        let key = format!("{}@{}", source["entity"].as_str().unwrap_or(""), source["@timestamp"]);
        assert!(injected.get(&key).copied().unwrap_or(false), "{key} ranks among the top but was not injected");
    }

    // One alert per anomaly region, with the attributes subscribers filter on.
    let journal = EmbeddedStore::open(&store).expect("store");
    let expected_alerts = journal.journal_counts().expect("counts").alerts as usize;
    drop(journal);
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    poll_until("every alert on the queue", Duration::from_secs(30), || {
        let (sqs, queue, got) = (sqs.clone(), queue.clone(), received.clone());
        async move {
            let batch = sqs.receive_message().queue_url(&queue).max_number_of_messages(10).send().await.ok()?;
            for message in batch.messages.unwrap_or_default() {
                let _ = sqs
                    .delete_message()
                    .queue_url(&queue)
                    .set_receipt_handle(message.receipt_handle.clone())
                    .send()
                    .await;
                got.lock().ok()?.push(message.body.unwrap_or_default());
            }
            let count = got.lock().ok()?.len();
            (count >= expected_alerts).then_some(())
        }
    })
    .await;
    let alerts = received.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(expected_alerts > 5, "{expected_alerts} alerts");
    assert_eq!(alerts.len(), expected_alerts, "one message per alert");
    let mut regions = HashSet::new();
    for body in &alerts {
        let envelope: Value = serde_json::from_str(body).expect("SNS envelope");
        let attributes = &envelope["MessageAttributes"];
        assert_eq!(attributes["detector"]["Value"], "iot-sensor");
        assert!(
            ["low", "medium", "high"].contains(&attributes["severity"]["Value"].as_str().unwrap_or("")),
            "{envelope}"
        );
        let message: Value = serde_json::from_str(envelope["Message"].as_str().expect("message")).expect("JSON body");
        assert_eq!(attributes["entity"]["Value"], message["event"]["entity"]);
        assert!(message["summary"].as_str().is_some_and(|s| s.contains("anomaly on iot-sensor/")), "{message}");
        assert_eq!(message["event"]["starts_region"], true);
        regions.insert(message["event"]["id"].to_string());
    }
    assert_eq!(regions.len(), alerts.len(), "no alert twice");
    let _ = std::fs::remove_file(&store);
}
