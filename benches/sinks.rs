//! The OpenSearch sink against a real node (issue 7): records per second from gRPC
//! `Score` batches through rcfd (scoring, the journal, the sink) until every document
//! is searchable, against a plain `_bulk` load of the same documents into the same node
//! in the same run; then the event-to-searchable latency at half of rcfd's rate. Then
//! the same with Kinesis as the source: the records already in a kinesis-mock stream,
//! rcfd started on it (leases in moto's DynamoDB) and timed until every document is
//! searchable, against a plain `_bulk` of the documents it indexed, and the emulator's
//! own GetRecords rate on the same stream (what reading alone costs); once with one
//! Kinesis record per record, once with the records in KPL aggregates.
//!
//! Needs a running node: `RCFD_TEST_OPENSEARCH_URL` (for example from
//! `scripts/test.sh --servers`); without it the bench says so and does nothing. The
//! Kinesis part also needs `AWS_ENDPOINT_URL_KINESIS` and `AWS_ENDPOINT_URL_DYNAMODB`
//! (skipped without them).
//! Run: `cargo bench --bench sinks` (both), `-- grpc` or `-- kinesis` (one of them).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opensearch::http::request::JsonBody;
use opensearch::http::transport::Transport;
use opensearch::indices::{IndicesPutIndexTemplateParts, IndicesRefreshParts};
use opensearch::{BulkParts, CountParts, OpenSearch, SearchParts};
use rcfd::decode::kpl;
use rcfd::service::config::Config;
use rcfd::service::{run, Listeners};
use rcfd::sink::opensearch::template::index_template;
use rcfd::source::grpc::proto::{self, detectors_client::DetectorsClient, scoring_client::ScoringClient};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Sample size 256, as the service detector (`models/iot-sensor.toml`) and
/// `benches/grpc.rs`: with the NAB default of 1024 scoring costs 2.5x as much and this
/// becomes a bench of the forest rather than of the sink.
const DETECTOR: &str =
    "name = \"sensor\"\nentity_key = [\"iotName\"]\nfeatures = [\"iotValue\"]\n[forest]\nsample_size = 256\n";
/// Records per measured run, in `Score` batches of `BATCH` (one `_bulk` each).
const RECORDS: usize = 40_000;
const BATCH: usize = 1_000;
const ENTITIES: usize = 16;
/// 2023-11-14: every document of a run goes to one daily index.
const DAY: i64 = 1_700_000_000_000;
/// How long the latency run sends for, and one record in this many is timed.
const LATENCY_RUN: Duration = Duration::from_secs(12);
const PROBE_EVERY: usize = 20;

fn record(entity: String, t: i64, value: f64, id: String) -> proto::Record {
    proto::Record {
        detector: "sensor".into(),
        entity,
        event_time_ms: t,
        values: [("iotValue".to_owned(), value)].into_iter().collect(),
        id,
    }
}

/// The seed scenario's values (10..20, 1% at 100..120), seeded.
struct Values(u64);

impl Values {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let r = self.0 % 10_000;
        if r < 100 {
            100.0 + (r % 21) as f64
        } else {
            10.0 + (r % 11) as f64
        }
    }
}

/// rcfd serving gRPC with its OpenSearch sink writing under `prefix`.
struct Service {
    channel: Channel,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: std::path::PathBuf,
}

async fn start(url: &str, prefix: &str) -> Service {
    start_with(url, prefix, "").await
}

/// As [`start`], with `extra` (TOML) at the end of the config.
async fn start_with(url: &str, prefix: &str, extra: &str) -> Service {
    let store = std::env::temp_dir().join(format!("{prefix}.redb"));
    let _ = std::fs::remove_file(&store);
    let text = format!(
        "[http]\nenabled = false\n[store]\npath = '{}'\n[opensearch]\nurl = '{url}'\nindex_prefix = '{prefix}'\n{extra}",
        store.display()
    );
    let config = Config::from_toml_with_env(&text, Vec::new()).expect("config").validate().expect("valid");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = grpc.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(config, Listeners { grpc, http: None }, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}")).expect("uri").connect().await.expect("connects");
    // A config with its own models directory brings the detector with it.
    if !extra.contains("[models]") {
        DetectorsClient::new(channel.clone())
            .create_detector(proto::CreateDetectorRequest { config_toml: DETECTOR.into() })
            .await
            .expect("detector");
    }
    Service { channel, stop, task, store }
}

impl Service {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.store);
    }
}

/// Documents searchable under `index` (after a refresh).
async fn count(client: &OpenSearch, index: &str) -> u64 {
    let _ = client.indices().refresh(IndicesRefreshParts::Index(&[index])).send().await;
    match client.count(CountParts::Index(&[index])).send().await {
        Ok(response) => response.json::<Value>().await.ok().and_then(|v| v["count"].as_u64()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Sends `RECORDS` records through rcfd; seconds until all are searchable.
async fn through_rcfd(client: &OpenSearch, url: &str, prefix: &str) -> f64 {
    let service = start(url, prefix).await;
    let mut scoring = ScoringClient::new(service.channel.clone());
    let mut values = Values(0x5eed);
    let started = Instant::now();
    for batch in 0..RECORDS / BATCH {
        let records = (0..BATCH)
            .map(|i| {
                let n = batch * BATCH + i;
                record(format!("sensor-{}", n % ENTITIES), DAY + n as i64, values.next(), format!("bench-{n}"))
            })
            .collect();
        scoring.score(proto::ScoreRequest { records }).await.expect("scored");
    }
    while count(client, prefix).await < RECORDS as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "documents did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    service.stop().await;
    elapsed
}

/// Every document under `index` as (id, source), in pages.
async fn documents(client: &OpenSearch, index: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"size": 10_000, "sort": [{"id": "asc"}], "query": {"match_all": {}}});
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let page: Value = client
            .search(SearchParts::Index(&[index]))
            .body(body)
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            return out;
        }
        after = hits.last().map(|h| h["sort"].clone());
        out.extend(hits.into_iter().map(|h| (h["_id"].as_str().unwrap_or_default().to_owned(), h["_source"].clone())));
    }
}

/// The same documents with plain `_bulk` requests of `BATCH`, one after another, into
/// `prefix`'s daily index; seconds until all are searchable.
async fn plain_bulk(client: &OpenSearch, prefix: &str, docs: &[(String, Value)]) -> f64 {
    client
        .indices()
        .put_index_template(IndicesPutIndexTemplateParts::Name(prefix))
        .body(index_template(prefix))
        .send()
        .await
        .expect("template");
    let index = format!("{prefix}-2023.11.14");
    // The bodies are built before the clock starts: this side is only the node's work.
    let bodies: Vec<Vec<JsonBody<Value>>> = docs
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|(id, source)| {
                    [JsonBody::new(json!({"index": {"_index": index, "_id": id}})), JsonBody::new(source.clone())]
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for body in bodies {
        let response = client.bulk(BulkParts::None).body(body).send().await.expect("bulk");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["errors"], false, "plain _bulk refused documents");
    }
    while count(client, prefix).await < docs.len() as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "the plain _bulk's documents did not become searchable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed().as_secs_f64()
}

/// Records at `rate` per second for `LATENCY_RUN`; the time from sending each probe
/// record until a search finds it, sorted.
async fn searchable_latency(client: &OpenSearch, url: &str, prefix: &str, rate: f64) -> Vec<f64> {
    let service = start(url, prefix).await;
    let mut scoring = ScoringClient::new(service.channel.clone());
    // Batches of 20 ms worth of records, as a producer flushing every 20 ms would send.
    let tick = Duration::from_millis(20);
    let per_tick = ((rate * tick.as_secs_f64()) as usize).max(1);
    let sent: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let (done, finished) = tokio::sync::watch::channel(false);
    let poller = {
        let (client, prefix, sent) = (client.clone(), prefix.to_owned(), sent.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seen = std::collections::HashSet::new();
            loop {
                let last_round = *finished.borrow();
                let body = json!({"size": 10_000, "_source": false, "query": {"term": {"entity": "probe"}}});
                if let Ok(response) = client.search(SearchParts::Index(&[&prefix])).body(body).send().await {
                    let now = Instant::now();
                    let page: Value = response.json().await.unwrap_or(Value::Null);
                    for hit in page["hits"]["hits"].as_array().into_iter().flatten() {
                        let id = hit["_id"].as_str().unwrap_or_default().to_owned();
                        if let Some(at) = sent.lock().expect("lock").get(&id) {
                            if seen.insert(id) {
                                latencies.push((now - *at).as_secs_f64());
                            }
                        }
                    }
                }
                if last_round {
                    return latencies;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut values = Values(0xfeed);
    let mut next = Instant::now();
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < LATENCY_RUN {
        let mut records = Vec::with_capacity(per_tick);
        let mut probes = Vec::new();
        for _ in 0..per_tick {
            let probe = n.is_multiple_of(PROBE_EVERY);
            let (entity, id) = if probe {
                ("probe".to_owned(), format!("probe-{n}"))
            } else {
                (format!("sensor-{}", n % ENTITIES), format!("latency-{n}"))
            };
            if probe {
                probes.push(id.clone());
            }
            records.push(record(entity, DAY + n as i64, values.next(), id));
            n += 1;
        }
        let now = Instant::now();
        sent.lock().expect("lock").extend(probes.into_iter().map(|id| (id, now)));
        scoring.score(proto::ScoreRequest { records }).await.expect("scored");
        next += tick;
        tokio::time::sleep_until(next.into()).await;
    }
    // Give the last probes time to become searchable, then one more round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = done.send(true);
    let mut latencies = poller.await.expect("poller");
    let expected = sent.lock().expect("lock").len();
    assert_eq!(latencies.len(), expected, "every probe became searchable");
    service.stop().await;
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Shards of the bench stream, and records per GetRecords (the most Kinesis allows).
const KINESIS_SHARDS: i32 = 4;
const KINESIS_BATCH_LIMIT: i32 = 10_000;

/// User records per KPL aggregate in the aggregated run: about 6 KB of JSON, far below
/// the KPL's 1 MB limit, as a producer sending many small sensor readings packs them.
const PER_AGGREGATE: usize = 100;

/// Writes `RECORDS` seed-scenario records (JSON, the entity as partition key) to a new
/// stream of `KINESIS_SHARDS` shards, one Kinesis record each, or with `aggregated`
/// `PER_AGGREGATE` consecutive records of one entity per KPL aggregate; returns once
/// they are all in.
async fn kinesis_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str, aggregated: bool) {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
    kinesis.create_stream().stream_name(stream).shard_count(KINESIS_SHARDS).send().await.expect("CreateStream");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = kinesis.describe_stream_summary().stream_name(stream).send().await.ok();
        let status = described.and_then(|d| d.stream_description_summary).map(|s| s.stream_status);
        if status == Some(StreamStatus::Active) {
            break;
        }
        assert!(Instant::now() < deadline, "the bench stream did not become active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut values = Values(0xcafe);
    let bodies: Vec<(String, Vec<u8>)> = (0..RECORDS)
        .map(|n| {
            let entity = format!("sensor-{}", n % ENTITIES);
            let body = format!(r#"{{"iotName": "{entity}", "iotValue": {}, "ts": {}}}"#, values.next(), DAY + n as i64);
            (entity, body.into_bytes())
        })
        .collect();
    let entry = |key: &str, data: Vec<u8>| {
        PutRecordsRequestEntry::builder().partition_key(key).data(Blob::new(data)).build().expect("entry")
    };
    let entries: Vec<PutRecordsRequestEntry> = if aggregated {
        // Each entity's records in order, its aggregates interleaved with the others'.
        let rounds = RECORDS / (ENTITIES * PER_AGGREGATE);
        (0..rounds)
            .flat_map(|round| (0..ENTITIES).map(move |entity| (round, entity)))
            .map(|(round, entity)| {
                let first = round * PER_AGGREGATE * ENTITIES + entity;
                let mine = (0..PER_AGGREGATE).map(|i| &bodies[first + i * ENTITIES]);
                let key = &bodies[first].0;
                entry(key, kpl::aggregate(mine.map(|(key, body)| (key.as_str(), &body[..]))))
            })
            .collect()
    } else {
        bodies.into_iter().map(|(key, body)| entry(&key, body)).collect()
    };
    for chunk in entries.chunks(500) {
        let put = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(put.failed_record_count, Some(0), "the emulator refused records");
    }
}

/// rcfd started on `stream` (records already in it) with the OpenSearch sink; seconds
/// from the start until every record is searchable (start-up and lease taking
/// included), and until the first were (with how many there were then).
async fn kinesis_through_rcfd(client: &OpenSearch, url: &str, prefix: &str, stream: &str) -> (f64, (f64, u64)) {
    let models = std::env::temp_dir().join(format!("{prefix}-models"));
    std::fs::create_dir_all(&models).expect("models dir");
    std::fs::write(models.join("sensor.toml"), DETECTOR).expect("detector");
    let extra = format!(
        "[models]\ndetectors = ['{}']\n[[kinesis]]\nstream = '{stream}'\ndetector = 'sensor'\nlease_table = '{prefix}-leases'\n\
         batch_limit = {KINESIS_BATCH_LIMIT}\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        models.display()
    );
    let started = Instant::now();
    let service = start_with(url, prefix, &extra).await;
    // When the first documents are searchable: start-up (leases) and the first reads.
    let mut first = None;
    loop {
        let searchable = count(client, prefix).await;
        if searchable > 0 && first.is_none() {
            first = Some((started.elapsed().as_secs_f64(), searchable));
        }
        if searchable >= RECORDS as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "documents did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    service.stop().await;
    let _ = std::fs::remove_dir_all(&models);
    (elapsed, first.unwrap_or((elapsed, RECORDS as u64)))
}

/// Reads the whole stream with plain GetRecords (every shard at once, no decoding, no
/// indexing); seconds. What the emulator alone costs: on a shared machine its CPU time
/// is taken from rcfd and the node, which the plain `_bulk` side never pays.
async fn kinesis_read_alone(kinesis: &aws_sdk_kinesis::Client, stream: &str, expected: usize) -> f64 {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let shards = kinesis.list_shards().stream_name(stream).send().await.expect("ListShards").shards.unwrap_or_default();
    let started = Instant::now();
    let readers = shards.into_iter().map(|shard| {
        let (kinesis, stream) = (kinesis.clone(), stream.to_owned());
        tokio::spawn(async move {
            let mut iterator = kinesis
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(shard.shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator")
                .shard_iterator;
            let mut read = 0;
            while let Some(it) = iterator {
                let reply = kinesis
                    .get_records()
                    .shard_iterator(it)
                    .limit(KINESIS_BATCH_LIMIT)
                    .send()
                    .await
                    .expect("GetRecords");
                if reply.records.is_empty() {
                    break;
                }
                read += reply.records.len();
                iterator = reply.next_shard_iterator;
            }
            read
        })
    });
    let mut read = 0;
    for reader in readers.collect::<Vec<_>>() {
        read += reader.await.expect("reader");
    }
    assert_eq!(read, expected, "GetRecords read every record");
    started.elapsed().as_secs_f64()
}

async fn kinesis_bench(client: &OpenSearch, url: &str, run: u32) {
    let (Ok(_), Ok(_)) = (std::env::var("AWS_ENDPOINT_URL_KINESIS"), std::env::var("AWS_ENDPOINT_URL_DYNAMODB")) else {
        println!("sinks/kinesis: skipped (set AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB)");
        return;
    };
    assert_eq!(RECORDS % (ENTITIES * PER_AGGREGATE), 0, "the aggregated run packs whole aggregates");
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    // One Kinesis record per user record, then the same records in KPL aggregates: the
    // emulator serves 100 times fewer records, so less of its own cost is in the comparison.
    for (label, aggregated) in [("one record each", false), (&*format!("KPL, {PER_AGGREGATE} per aggregate"), true)] {
        let kind = if aggregated { "kpl" } else { "plain" };
        let stream = format!("rcfd-bench-{run}-{kind}");
        kinesis_stream(&kinesis, &stream, aggregated).await;
        let prefix = format!("rcfd-bench-kinesis-{run}-{kind}");
        let (rcfd_secs, (first_secs, first_count)) = kinesis_through_rcfd(client, url, &prefix, &stream).await;
        let docs = documents(client, &prefix).await;
        assert_eq!(docs.len(), RECORDS, "the Kinesis run indexed every record once");
        // A name outside `prefix`'s template pattern (`prefix-*`), which would claim the index.
        let plain_secs = plain_bulk(client, &prefix.replace("rcfd-bench-kinesis", "rcfd-bench-bulk"), &docs).await;
        let kinesis_records = if aggregated { RECORDS / PER_AGGREGATE } else { RECORDS };
        let read_secs = kinesis_read_alone(&kinesis, &stream, kinesis_records).await;
        println!(
            "sinks/kinesis ({label}): {RECORDS} records in a {KINESIS_SHARDS}-shard stream (batch_limit {KINESIS_BATCH_LIMIT}): \
             Kinesis -> rcfd -> OpenSearch {:.0} records/s ({rcfd_secs:.2} s, start-up included), \
             plain _bulk of the same documents in batches of {BATCH} {:.0} docs/s ({plain_secs:.2} s), ratio {:.2}",
            RECORDS as f64 / rcfd_secs,
            RECORDS as f64 / plain_secs,
            plain_secs / rcfd_secs
        );
        let steady_secs = rcfd_secs - first_secs;
        println!(
            "sinks/kinesis ({label}): the first {first_count} documents searchable {first_secs:.2} s after the start; \
             the rest at {:.0} records/s (ratio {:.2} to the plain _bulk)",
            (RECORDS as u64 - first_count) as f64 / steady_secs.max(1e-3),
            plain_secs / RECORDS as f64 * (RECORDS as u64 - first_count) as f64 / steady_secs.max(1e-3)
        );
        println!(
            "sinks/kinesis ({label}): plain GetRecords of the same stream alone (no decoding, no indexing) {:.0} Kinesis records/s ({read_secs:.2} s)",
            kinesis_records as f64 / read_secs
        );
        let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

fn main() {
    let Ok(url) = std::env::var("RCFD_TEST_OPENSEARCH_URL") else {
        println!("sinks: skipped (set RCFD_TEST_OPENSEARCH_URL, e.g. from scripts/test.sh --servers)");
        return;
    };
    // `cargo bench --bench sinks -- kinesis` runs one part (cargo adds `--bench`).
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
        let run = std::process::id();
        if wants("grpc") {
            grpc_bench(&client, &url, run).await;
        }
        if wants("kinesis") {
            kinesis_bench(&client, &url, run).await;
        }
    });
}

async fn grpc_bench(client: &OpenSearch, url: &str, run: u32) {
    // A first run warms the node and rcfd up; its documents are the plain load's.
    let warm = format!("rcfd-bench-warm-{run}");
    through_rcfd(client, url, &warm).await;
    let docs = documents(client, &warm).await;
    assert_eq!(docs.len(), RECORDS, "the warm-up run indexed every record");
    let (mut rcfd_best, mut plain_best) = (f64::MAX, f64::MAX);
    for round in 0..2 {
        let rcfd_secs = through_rcfd(client, url, &format!("rcfd-bench-e2e-{run}-{round}")).await;
        let plain_secs = plain_bulk(client, &format!("rcfd-bench-plain-{run}-{round}"), &docs).await;
        println!(
            "sinks/round {round}: rcfd {:.0} records/s ({rcfd_secs:.2} s), plain _bulk {:.0} docs/s ({plain_secs:.2} s)",
            RECORDS as f64 / rcfd_secs,
            RECORDS as f64 / plain_secs
        );
        rcfd_best = rcfd_best.min(rcfd_secs);
        plain_best = plain_best.min(plain_secs);
    }
    let rcfd_rate = RECORDS as f64 / rcfd_best;
    println!(
        "sinks/throughput: {RECORDS} records in batches of {BATCH}: gRPC -> rcfd -> OpenSearch {rcfd_rate:.0} records/s, \
         plain _bulk of the same documents {:.0} docs/s, ratio {:.2}",
        RECORDS as f64 / plain_best,
        plain_best / rcfd_best
    );
    let latencies = searchable_latency(client, url, &format!("rcfd-bench-latency-{run}"), rcfd_rate / 2.0).await;
    println!(
        "sinks/latency: at {:.0} records/s (half of the above), send -> searchable over {} probes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        rcfd_rate / 2.0,
        latencies.len(),
        percentile(&latencies, 0.50) * 1e3,
        percentile(&latencies, 0.99) * 1e3,
        latencies.last().copied().unwrap_or(f64::NAN) * 1e3
    );
}
