//! A lease lost while a delivery hangs: instance A (the real binary) scores a batch
//! whose delivery cannot finish (OpenSearch unreachable), then loses its lease
//! (DynamoDB unreachable). Instance B takes the expired lease and resumes from A's last
//! checkpoint. A never scores the batch it had read ahead, never moves the checkpoint
//! again when the servers come back, and every record is one document in the end.
//! A's OpenSearch and DynamoDB go through relays in front of the real servers that the
//! test switches off and on.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use opensearch::http::transport::Transport;
use opensearch::indices::{IndicesDeleteParts, IndicesRefreshParts};
use opensearch::{CountParts, OpenSearch};
use serde_json::Value;

use crate::servers::{
    active_stream, aws_config, checkpoints, free_port, host_port, last_per_shard, metrics, opensearch_url, poll_until,
    put_all, required_env, unique_name, InProcess, KillOnDrop, Relay,
};

const BATCH: i64 = 300;

fn entries(from: i64) -> Vec<PutRecordsRequestEntry> {
    (from..from + BATCH)
        .map(|i| {
            let (entity, value, t) =
                (format!("sensor-{}", i % 4), 10.0 + (i % 7) as f64, 1_700_000_000_000 + i * 1_000);
            let body = format!(r#"{{"iotName": "{entity}", "iotValue": {value}, "ts": {t}}}"#);
            PutRecordsRequestEntry::builder().partition_key(entity).data(Blob::new(body)).build().expect("entry")
        })
        .collect()
}

fn config(store: &std::path::Path, stream: &str, table: &str, worker: &str, opensearch: &str, prefix: &str) -> String {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[opensearch]\nurl = '{opensearch}'\nindex_prefix = '{prefix}'\n\
         [[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\nworker_id = '{worker}'\n\
         lease_duration_ms = 1500\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        store.display()
    )
}

async fn documents(client: &OpenSearch, prefix: &str) -> u64 {
    let _ = client.indices().refresh(IndicesRefreshParts::Index(&[prefix])).send().await;
    let counted = client.count(CountParts::Index(&[prefix])).send().await;
    match counted {
        Ok(response) => response.json::<Value>().await.ok().and_then(|v| v["count"].as_u64()).unwrap_or(0),
        Err(_) => 0,
    }
}

fn scored(m: &HashMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with("rcfd_records_scored_total")).map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_during_a_hung_delivery_loses_nothing_and_scores_nothing_twice() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let (kinesis, dynamodb) = (aws_sdk_kinesis::Client::new(&aws), aws_sdk_dynamodb::Client::new(&aws));
    let url = opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let stream = unique_name("rcfd-lease-loss");
    let table = unique_name("rcfd-leases");
    let prefix = unique_name("rcfd-lease-loss").to_lowercase();
    active_stream(&kinesis, &stream, 1).await;
    let opensearch_relay = Relay::start(host_port(&url)).await;
    let dynamodb_relay = Relay::start(host_port(&required_env("AWS_ENDPOINT_URL_DYNAMODB"))).await;

    // A: the real binary, its DynamoDB and OpenSearch through the relays.
    let dir = std::env::temp_dir().join(unique_name("rcfd-lease-loss"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (grpc_port, http_port) = (free_port(), free_port());
    let text = config(
        &dir.join("a.redb"),
        &stream,
        &table,
        "worker-a",
        &format!("http://{}", opensearch_relay.address),
        &prefix,
    )
    .replacen(
        "[store]",
        &format!("[grpc]\nlisten = '127.0.0.1:{grpc_port}'\n[http]\nlisten = '127.0.0.1:{http_port}'\n[store]"),
        1,
    );
    let config_file = dir.join("a.toml");
    std::fs::write(&config_file, text).expect("config");
    let a = std::process::Command::new(env!("CARGO_BIN_EXE_rcfd"))
        .args(["serve", "--config"])
        .arg(&config_file)
        .env("AWS_ENDPOINT_URL_DYNAMODB", format!("http://{}", dynamodb_relay.address))
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("rcfd starts");
    let a_http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();

    let mut positions = put_all(&kinesis, &stream, &entries(0)).await;
    poll_until("A to index and checkpoint the first batch", Duration::from_secs(60), || async {
        let done =
            documents(&client, &prefix).await == BATCH as u64 && !checkpoints(&dynamodb, &table).await.is_empty();
        done.then_some(())
    })
    .await;
    let first_checkpoint = checkpoints(&dynamodb, &table).await;

    // OpenSearch goes away: A scores the second batch, and its delivery hangs in retries.
    opensearch_relay.down();
    positions.extend(put_all(&kinesis, &stream, &entries(BATCH)).await);
    poll_until("A to score the second batch", Duration::from_secs(60), || async {
        (scored(&metrics(a_http).await?) >= 2.0 * BATCH as f64).then_some(())
    })
    .await;
    // A third batch, which A may read ahead but must not score while the second hangs.
    positions.extend(put_all(&kinesis, &stream, &entries(2 * BATCH)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // DynamoDB goes away: A cannot renew, so it stops its reader.
    dynamodb_relay.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(checkpoints(&dynamodb, &table).await, first_checkpoint, "nothing undelivered is checkpointed");

    // B takes the expired lease and resumes after A's last checkpoint.
    let b = InProcess::start(&config(&dir.join("b.redb"), &stream, &table, "worker-b", &url, &prefix)).await;
    let last = last_per_shard(&positions);
    poll_until("B to index every record and checkpoint the shard's end", Duration::from_secs(90), || async {
        let done =
            documents(&client, &prefix).await == 3 * BATCH as u64 && checkpoints(&dynamodb, &table).await == last;
        done.then_some(())
    })
    .await;
    let a_scored = scored(&metrics(a_http).await.expect("A's metrics"));
    assert_eq!(a_scored, 2.0 * BATCH as f64, "A never scored the batch it read ahead after losing its lease");
    let b_scored = scored(&metrics(b.http).await.expect("B's metrics"));
    assert_eq!(b_scored, 2.0 * BATCH as f64, "B resumed right after A's last checkpoint");

    // The servers come back: A's hung delivery lands (the same ids: overwritten), and
    // its checkpoint, no longer its lease's, does not move.
    opensearch_relay.up();
    dynamodb_relay.up();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(documents(&client, &prefix).await, 3 * BATCH as u64, "no document twice");
    assert_eq!(checkpoints(&dynamodb, &table).await, last, "the checkpoint stays at the shard's end");

    drop(a);
    b.stop().await;
    let _ = client.indices().delete(IndicesDeleteParts::Index(&[&format!("{prefix}-*")])).send().await;
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    let _ = dynamodb.delete_table().table_name(&table).send().await;
    let _ = std::fs::remove_dir_all(dir);
}
