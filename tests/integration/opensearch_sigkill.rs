//! The real `rcfd serve` binary, consuming the reference scenario from a 2-shard stream
//! into the real OpenSearch, is killed with SIGKILL mid-stream and started again on the
//! same store and lease table. Afterwards every record is exactly one document (ids come
//! from source positions, so what is read again overwrites), the checkpoints are at the
//! end of each shard, and no checkpoint ever passed a record OpenSearch did not have.
//! Then the same kill while models are evicted on every record and OpenSearch is away:
//! the batch read again must still be indexed, though the models' snapshots say they
//! have learned it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use opensearch::http::transport::Transport;
use opensearch::indices::IndicesRefreshParts;
use opensearch::OpenSearch;
use rcfd::service::config::SimulatorConfig;
use rcfd::source::simulator::Readings;
use serde_json::json;

use crate::servers::{
    active_stream, aws_config, checkpoints, free_port, host_port, last_per_shard, metrics, opensearch_url, poll_until,
    put_all, search, unique_name, KillOnDrop, Relay,
};

const SENSORS: usize = 4;
const TICKS: usize = 500;
const RECORDS: usize = SENSORS * TICKS;
/// Small reads (2 shards x 25 records per 200 ms poll) make the run last several
/// seconds, so the kill lands mid-stream rather than after the last record.
const BATCH_LIMIT: i32 = 25;
/// Killed once at least this many documents are searchable.
const KILL_AFTER_DOCUMENTS: usize = 300;

/// Within a shard, sequence numbers order by length, then text (they exceed u128).
fn at_or_before(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// The `_id` of every document under `prefix`, after a refresh.
async fn indexed_ids(client: &OpenSearch, prefix: &str) -> Vec<String> {
    let refreshed = client.indices().refresh(IndicesRefreshParts::Index(&[prefix])).send().await;
    // Before the first document the alias does not exist yet.
    if !refreshed.as_ref().is_ok_and(|r| r.status_code().is_success()) {
        return Vec::new();
    }
    let found = search(client, prefix, &json!({"size": 10_000, "_source": false, "query": {"match_all": {}}})).await;
    let hits = found["hits"]["hits"].as_array().expect("hits");
    hits.iter().map(|h| h["_id"].as_str().expect("an _id").to_owned()).collect()
}

/// Reads the checkpoints, then what is indexed, and asserts that every record a
/// checkpoint covers was indexed before it: a checkpoint read first cannot cover a
/// record that is only indexed later. Returns the checkpoints and the indexed ids.
async fn assert_checkpoints_cover_only_indexed(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    client: &OpenSearch,
    prefix: &str,
    positions: &[(String, String)],
    id_of: &dyn Fn(&str, &str) -> String,
) -> (HashMap<String, String>, Vec<String>) {
    let checkpointed = checkpoints(dynamodb, table).await;
    let ids = indexed_ids(client, prefix).await;
    let indexed: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for (shard, sequence) in positions {
        let Some(checkpoint) = checkpointed.get(shard) else { continue };
        let id = id_of(shard, sequence);
        assert!(
            !at_or_before(sequence, checkpoint) || indexed.contains(id.as_str()),
            "the checkpoint {checkpoint} of {shard} passed {id}, which OpenSearch does not have"
        );
    }
    (checkpointed, ids)
}

/// The `rcfd serve` child process, killed (SIGKILL) when dropped, so a failing
/// assertion does not leave it running.
struct Serving(KillOnDrop);

impl Serving {
    /// Starts it with its log in `log` (read it when the test fails).
    fn start(config: &Path, log: &Path) -> Serving {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rcfd"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rcfd starts");
        Serving(KillOnDrop(child))
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_with_the_opensearch_sink_loses_and_duplicates_nothing() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let url = opensearch_url();
    let (kinesis, dynamodb) = (aws_sdk_kinesis::Client::new(&aws), aws_sdk_dynamodb::Client::new(&aws));
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let (stream, table, prefix) =
        (unique_name("rcfd-kill-os"), unique_name("rcfd-leases"), unique_name("rcfd-kill-os").to_lowercase());
    active_stream(&kinesis, &stream, 2).await;

    // The reference scenario, the entity as partition key, all of it written up front.
    let mut readings =
        Readings::new(&SimulatorConfig { sensors: SENSORS, wave: false, seed: 31, ..Default::default() });
    let mut entries = Vec::with_capacity(RECORDS);
    for tick in 0..TICKS {
        for (entity, value, _) in readings.next_tick() {
            let t = 1_700_000_000_000 + tick as i64 * 1_000;
            let body = format!(r#"{{"iotName": "{entity}", "iotValue": {value}, "ts": {t}}}"#);
            entries.push(
                PutRecordsRequestEntry::builder().partition_key(&entity).data(Blob::new(body)).build().expect("entry"),
            );
        }
    }
    let positions = put_all(&kinesis, &stream, &entries).await;
    let last = last_per_shard(&positions);
    assert_eq!(last.len(), 2, "the records are spread over both shards");
    // One user record per stream record: the event id is the position with index 0.
    let id_of = |shard: &str, sequence: &str| format!("{stream}/{shard}/{sequence}:000000");
    let expected: HashSet<String> = positions.iter().map(|(shard, sequence)| id_of(shard, sequence)).collect();
    assert_eq!(expected.len(), RECORDS);

    let dir = std::env::temp_dir().join(unique_name("rcfd-kill-os"));
    std::fs::create_dir_all(&dir).expect("dir");
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let config = dir.join("rcfd.toml");
    let text = format!(
        "[grpc]\nlisten = '127.0.0.1:{}'\n[http]\nlisten = '127.0.0.1:{}'\n[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n\
         [opensearch]\nurl = '{url}'\nindex_prefix = '{prefix}'\n\
         [[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\nworker_id = 'worker-a'\n\
         lease_duration_ms = 1500\nbatch_limit = {BATCH_LIMIT}\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        free_port(),
        free_port(),
        dir.join("rcfd.redb").display()
    );
    std::fs::write(&config, text).expect("config");

    // Killed with SIGKILL (no shutdown, no flush, no lease given up) once documents are
    // searchable; meanwhile every checkpoint seen covers only indexed records.
    let mut serving = Serving::start(&config, &dir.join("killed.log"));
    poll_until("the first documents indexed", Duration::from_secs(90), || async {
        let (_, ids) =
            assert_checkpoints_cover_only_indexed(&dynamodb, &table, &client, &prefix, &positions, &id_of).await;
        (ids.len() >= KILL_AFTER_DOCUMENTS).then_some(())
    })
    .await;
    serving.kill();
    let (at_kill, indexed_at_kill) =
        assert_checkpoints_cover_only_indexed(&dynamodb, &table, &client, &prefix, &positions, &id_of).await;
    assert!(indexed_at_kill.len() < RECORDS, "killed before the end: {} documents", indexed_at_kill.len());
    assert!(at_kill != last, "killed before the last checkpoint: {at_kill:?}");

    // The same binary on the same store and lease table reads on from the checkpoints.
    let mut serving = Serving::start(&config, &dir.join("restarted.log"));
    poll_until("checkpoints at the end of each shard", Duration::from_secs(120), || async {
        let (checkpointed, _) =
            assert_checkpoints_cover_only_indexed(&dynamodb, &table, &client, &prefix, &positions, &id_of).await;
        (checkpointed == last).then_some(())
    })
    .await;
    serving.kill();

    let ids = indexed_ids(&client, &prefix).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), RECORDS, "one document per record");
    assert_eq!(unique.len(), ids.len(), "every _id once");
    assert_eq!(unique, expected, "the documents are the records, by source position");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    let _ = dynamodb.delete_table().table_name(&table).send().await;
}

/// A model evicted (its snapshot made durable, with the position of its last record)
/// while its records' batch is still on its way to OpenSearch, then SIGKILL: the batch
/// is read again, and its records must be indexed, though the snapshot says the model
/// has learned them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_model_evicted_before_they_were_indexed_are_indexed_after_sigkill() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let url = opensearch_url();
    let relay = Relay::start(host_port(&url)).await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let (stream, table, prefix) =
        (unique_name("rcfd-evict"), unique_name("rcfd-leases"), unique_name("rcfd-evict").to_lowercase());
    active_stream(&kinesis, &stream, 1).await;

    let dir = std::env::temp_dir().join(unique_name("rcfd-evict"));
    std::fs::create_dir_all(&dir).expect("dir");
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let http_port = free_port();
    let config = dir.join("rcfd.toml");
    // Room for two models, three entities taking turns: every record evicts one.
    let text = format!(
        "[grpc]\nlisten = '127.0.0.1:{}'\n[http]\nlisten = '127.0.0.1:{http_port}'\n[store]\npath = '{}'\n\
         [models]\ndetectors = ['{models}']\nmax_resident = 2\nscoring_threads = 1\n\
         [opensearch]\nurl = 'http://{}'\nindex_prefix = '{prefix}'\n\
         [[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\nworker_id = 'worker-a'\n\
         lease_duration_ms = 1500\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        free_port(),
        dir.join("rcfd.redb").display(),
        relay.address
    );
    std::fs::write(&config, text).expect("config");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();

    // Started with OpenSearch there (it installs the index template), which then goes
    // away before the records come: their batch waits in the sink's retries.
    let mut serving = Serving::start(&config, &dir.join("killed.log"));
    poll_until("the shard taken", Duration::from_secs(60), || async {
        let m = metrics(http).await?;
        m.keys().any(|k| k.starts_with("rcfd_millis_behind_latest")).then_some(())
    })
    .await;
    relay.down();
    const EVICTING: usize = 30;
    let entries: Vec<PutRecordsRequestEntry> = (0..EVICTING)
        .map(|i| {
            let entity = format!("sensor-{}", i % 3);
            let body = format!(
                r#"{{"iotName": "{entity}", "iotValue": {}, "ts": {}}}"#,
                10 + i % 7,
                1_700_000_000_000 + i * 1_000
            );
            PutRecordsRequestEntry::builder().partition_key(entity).data(Blob::new(body)).build().expect("entry")
        })
        .collect();
    let put = kinesis.put_records().stream_name(&stream).set_records(Some(entries)).send().await.expect("PutRecords");
    assert_eq!(put.failed_record_count, Some(0));
    poll_until("the records scored (and models evicted)", Duration::from_secs(60), || async {
        let m = metrics(http).await?;
        let scored: f64 = m.iter().filter(|(k, _)| k.starts_with("rcfd_records_scored_total")).map(|(_, v)| v).sum();
        (scored >= EVICTING as f64).then_some(())
    })
    .await;
    serving.kill();
    relay.up();

    let mut serving = Serving::start(&config, &dir.join("restarted.log"));
    // Polled to a deadline by hand, so that a shortfall reports how many arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut ids = indexed_ids(&client, &prefix).await;
    while ids.len() < EVICTING && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ids = indexed_ids(&client, &prefix).await;
    }
    serving.kill();
    assert_eq!(ids.len(), EVICTING, "one document per record");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
}
