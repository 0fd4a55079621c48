//! The Kinesis consumer end to end against kinesis-mock and moto's DynamoDB: a producer
//! writes the reference scenario (and a few broken records) to a 2-shard stream; the
//! service consumes it with leases in a fresh table; every record is scored once, the
//! broken ones are dead letters, the injected anomalies score highest, the checkpoints
//! sit at each shard's last record, and a restart reads nothing twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use prost::Message;
use rcfd::decode::kpl;
use rcfd::service::config::SimulatorConfig;
use rcfd::source::simulator::Readings;
use rcfd::store::embedded::EmbeddedStore;

use crate::servers::{
    active_stream, aws_config, checkpoints, free_port, last_per_shard, metrics, poll_until, put_all, unique_name,
    wait_active, InProcess, KillOnDrop,
};

const SENSORS: usize = 4;
const TICKS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shard_stream_is_scored_once_checkpointed_and_not_reread() {
    scenario(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_shard_stream_is_scored_once_checkpointed_and_not_reread() {
    scenario(4).await;
}

/// The reference scenario through a stream of `shard_count` shards.
async fn scenario(shard_count: i32) {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let stream = unique_name("rcfd-consumer");
    let table = unique_name("rcfd-leases");
    active_stream(&kinesis, &stream, shard_count).await;

    // The reference scenario for four sensors, the entity as partition key.
    let mut readings =
        Readings::new(&SimulatorConfig { sensors: SENSORS, wave: false, seed: 11, ..Default::default() });
    let mut injected: HashMap<(String, i64), bool> = HashMap::new();
    let mut entries = Vec::new();
    for tick in 0..TICKS {
        for (entity, value, anomaly) in readings.next_tick() {
            let t = 1_700_000_000_000 + tick as i64 * 1_000;
            injected.insert((entity.clone(), t), anomaly);
            let body = format!(r#"{{"iotName": "{entity}", "iotValue": {value}, "ts": {t}}}"#);
            entries.push(
                PutRecordsRequestEntry::builder().partition_key(&entity).data(Blob::new(body)).build().expect("entry"),
            );
        }
    }
    for broken in
        ["not json", r#"{"iotValue": 12, "ts": 1}"#, r#"{"iotName": "DemoSensor-1", "iotValue": "high", "ts": 1}"#]
    {
        entries.push(
            PutRecordsRequestEntry::builder().partition_key("broken").data(Blob::new(broken)).build().expect("entry"),
        );
    }
    // A KPL aggregate of two user records: two events with positions of their own.
    let user_records: Vec<Vec<u8>> = [1i64, 2]
        .iter()
        .map(|i| {
            format!(r#"{{"iotName": "Aggregated", "iotValue": {i}, "ts": {}}}"#, 1_700_000_000_000 + i).into_bytes()
        })
        .collect();
    let aggregate = kpl::aggregate(user_records.iter().map(|data| ("Aggregated", &data[..])));
    entries.push(
        PutRecordsRequestEntry::builder()
            .partition_key("Aggregated")
            .data(Blob::new(aggregate))
            .build()
            .expect("entry"),
    );
    let total = entries.len() + 1;
    let last_sequence = last_per_shard(&put_all(&kinesis, &stream, &entries).await);
    assert!(!last_sequence.is_empty());

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-consumer")));
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let config = format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\nworker_id = 'worker-a'\nlease_duration_ms = 3000\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        store.display()
    );
    let service = InProcess::start(&config).await;
    let scored_key = "rcfd_records_scored_total{detector=\"iot-sensor\"}";
    poll_until("every record scored or dead-lettered", Duration::from_secs(90), || async {
        let m = metrics(service.http).await?;
        let scored = m.get(scored_key).copied().unwrap_or(0.0);
        let dead: f64 = m.iter().filter(|(k, _)| k.starts_with("rcfd_errors_total{stage=\"")).map(|(_, v)| v).sum();
        (scored as usize + dead as usize >= total).then_some(())
    })
    .await;
    // The checkpoints reach each shard's last record once the batches are delivered.
    poll_until("checkpoints at the end of each shard", Duration::from_secs(30), || async {
        (checkpoints(&dynamodb, &table).await == last_sequence).then_some(())
    })
    .await;
    service.stop().await;

    let items =
        dynamodb.scan().table_name(&table).consistent_read(true).send().await.expect("scan").items.unwrap_or_default();
    assert_eq!(items.len(), shard_count as usize, "one lease per shard");
    assert!(items.iter().all(|i| !i.contains_key("leaseOwner")), "leases given up at shutdown: {items:?}");

    let journal = EmbeddedStore::open(&store).expect("store");
    let counts = journal.journal_counts().expect("counts");
    assert_eq!(counts.events as usize, SENSORS * TICKS + 2, "every record scored exactly once");
    assert_eq!(counts.dead_letters, 3);
    let letters = journal.recent_dead_letters(3).expect("letters");
    assert!(letters.iter().all(|l| l.source.as_ref().is_some_and(|p| p.stream == stream)), "{letters:?}");
    assert!(letters.iter().any(|l| l.reason.contains("iotName") && l.reason.contains("missing")), "{letters:?}");
    assert!(letters.iter().any(|l| l.raw == b"not json"), "raw bytes kept");
    let events = journal.recent_events(SENSORS * TICKS + 2).expect("events");
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "ids from source positions are unique");
    let aggregated: Vec<&str> = events.iter().filter(|e| e.entity == "Aggregated").map(|e| e.id.as_str()).collect();
    assert_eq!(aggregated.len(), 2, "both user records of the KPL aggregate");
    assert!(
        aggregated.iter().any(|id| id.ends_with(":000000")) && aggregated.iter().any(|id| id.ends_with(":000001")),
        "{aggregated:?}"
    );
    // Once the models have warmed up, the injected anomalies are the top-scoring records.
    let warm: Vec<(f64, bool)> = events
        .iter()
        .filter(|e| !e.learning && e.entity != "Aggregated")
        .map(|e| (e.anomaly_score, injected[&(e.entity.clone(), e.event_ms)]))
        .collect();
    let anomalies = warm.iter().filter(|(_, a)| *a).count();
    let mut ranked = warm.clone();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert!(anomalies > 5, "{anomalies}");
    assert!(ranked[..anomalies].iter().all(|(_, a)| *a), "the injected anomalies rank first");
    let flagged = events
        .iter()
        .filter(|e| !e.learning && e.entity != "Aggregated")
        .filter(|e| e.is_anomaly && injected[&(e.entity.clone(), e.event_ms)])
        .count();
    let missed: Vec<String> = events
        .iter()
        .filter(|e| !e.learning && e.entity != "Aggregated")
        .filter(|e| !e.is_anomaly && injected[&(e.entity.clone(), e.event_ms)])
        .map(|e| {
            format!(
                "{} t={} v={:?} s={:.2} learning={}",
                e.entity,
                (e.event_ms - 1_700_000_000_000) / 1000,
                e.values,
                e.anomaly_score,
                e.learning
            )
        })
        .collect();
    assert!(flagged * 100 >= anomalies * 95, "{flagged} of {anomalies} injected anomalies flagged; missed {missed:?}");
    drop(journal);

    // A restart on the same lease table reads nothing again.
    let again = InProcess::start(&config).await;
    poll_until("every shard taken again and polled", Duration::from_secs(60), || async {
        let m = metrics(again.http).await?;
        let behind = m.keys().filter(|k| k.starts_with("rcfd_millis_behind_latest")).count();
        (behind == shard_count as usize).then_some(())
    })
    .await;
    let m = metrics(again.http).await.expect("metrics");
    assert_eq!(m.get(scored_key).copied().unwrap_or(0.0), 0.0, "nothing scored twice after a restart");
    again.stop().await;
    let _ = std::fs::remove_file(&store);
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    let _ = dynamodb.delete_table().table_name(&table).send().await;
}

async fn put(kinesis: &aws_sdk_kinesis::Client, stream: &str, records: &[(String, f64, i64)]) {
    for chunk in records.chunks(500) {
        let entries = chunk
            .iter()
            .map(|(entity, value, t)| {
                let body = format!(r#"{{"iotName": "{entity}", "iotValue": {value}, "ts": {t}}}"#);
                PutRecordsRequestEntry::builder().partition_key(entity).data(Blob::new(body)).build().expect("entry")
            })
            .collect();
        let put =
            kinesis.put_records().stream_name(stream).set_records(Some(entries)).send().await.expect("PutRecords");
        assert_eq!(put.failed_record_count, Some(0));
    }
}

fn consumer_config(store: &std::path::Path, stream: &str, table: &str, worker: &str) -> String {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    format!(
        "[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nlease_table = '{table}'\nworker_id = '{worker}'\nlease_duration_ms = 1500\n[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        store.display()
    )
}

fn metric(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_takes_half_the_shards_then_all_when_the_first_stops() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let stream = unique_name("rcfd-balance");
    let table = unique_name("rcfd-leases");
    active_stream(&kinesis, &stream, 4).await;
    let stores: Vec<std::path::PathBuf> = ["a", "b"]
        .iter()
        .map(|w| std::env::temp_dir().join(format!("{}-{w}.redb", unique_name("rcfd-balance"))))
        .collect();
    let owned = |http| async move { metrics(http).await.map(|m| metric(&m, "rcfd_shards_owned")) };

    let a = InProcess::start(&consumer_config(&stores[0], &stream, &table, "worker-a")).await;
    poll_until("the first instance to own every shard", Duration::from_secs(30), || async {
        (owned(a.http).await? == 4.0).then_some(())
    })
    .await;
    let b = InProcess::start(&consumer_config(&stores[1], &stream, &table, "worker-b")).await;
    poll_until("two shards each", Duration::from_secs(60), || async {
        (owned(a.http).await? == 2.0 && owned(b.http).await? == 2.0).then_some(())
    })
    .await;

    let records: Vec<(String, f64, i64)> = (0..800)
        .map(|i| (format!("sensor-{}", i % 16), 10.0 + (i % 7) as f64, 1_700_000_000_000 + i as i64 * 1_000))
        .collect();
    put(&kinesis, &stream, &records).await;
    let scored_key = "rcfd_records_scored_total";
    poll_until("every record scored by one of the two", Duration::from_secs(60), || async {
        let (ma, mb) = (metrics(a.http).await?, metrics(b.http).await?);
        let both = metric(&ma, scored_key) + metric(&mb, scored_key);
        (both >= 800.0).then_some(())
    })
    .await;
    let (ma, mb) = (metrics(a.http).await.expect("a"), metrics(b.http).await.expect("b"));
    assert!(metric(&ma, scored_key) > 0.0 && metric(&mb, scored_key) > 0.0, "both instances scored records");
    // One stops (giving its leases up): the other takes every shard and reads on.
    a.stop().await;
    poll_until("the survivor to own every shard", Duration::from_secs(30), || async {
        (owned(b.http).await? == 4.0).then_some(())
    })
    .await;
    let later: Vec<(String, f64, i64)> = (800..1200)
        .map(|i| (format!("sensor-{}", i % 16), 10.0 + (i % 7) as f64, 1_700_000_000_000 + i as i64 * 1_000))
        .collect();
    put(&kinesis, &stream, &later).await;
    let before = metric(&mb, scored_key);
    poll_until("the survivor to score the later records", Duration::from_secs(60), || async {
        (metric(&metrics(b.http).await?, scored_key) >= before + 400.0).then_some(())
    })
    .await;
    b.stop().await;
    let mut total = 0;
    for path in &stores {
        total += EmbeddedStore::open(path).expect("store").journal_counts().expect("counts").events;
        let _ = std::fs::remove_file(path);
    }
    assert_eq!(total, 1200, "every record scored exactly once across the two instances");
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_the_parent_is_read_before_its_children() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let stream = unique_name("rcfd-split");
    let table = unique_name("rcfd-leases");
    active_stream(&kinesis, &stream, 1).await;
    let reading = |i: i64| ("E".to_owned(), 10.0 + (i % 5) as f64, 1_700_000_000_000 + i * 1_000);
    put(&kinesis, &stream, &(0..300).map(reading).collect::<Vec<_>>()).await;
    let shards =
        kinesis.list_shards().stream_name(&stream).send().await.expect("ListShards").shards.unwrap_or_default();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&shards[0].shard_id)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("SplitShard");
    wait_active(&kinesis, &stream).await;
    // The later half lands on a child shard: read first, it would make the parent's
    // records 5 minutes late and they would be dead-lettered.
    put(&kinesis, &stream, &(300..600).map(reading).collect::<Vec<_>>()).await;

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-split")));
    let service = InProcess::start(&consumer_config(&store, &stream, &table, "worker-a")).await;
    poll_until("all 600 records scored", Duration::from_secs(60), || async {
        (metric(&metrics(service.http).await?, "rcfd_records_scored_total") >= 600.0).then_some(())
    })
    .await;
    service.stop().await;
    let journal = EmbeddedStore::open(&store).expect("store");
    assert_eq!(journal.journal_counts().expect("counts").dead_letters, 0, "nothing arrived late");
    let mut events = journal.recent_events(600).expect("events");
    events.reverse();
    assert_eq!(events.len(), 600);
    assert!(events.windows(2).all(|w| w[0].event_ms < w[1].event_ms), "scored in event order across the split");
    let _ = std::fs::remove_file(&store);
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
}

/// Runs a consumer over one good and two broken records with `dead_letters` configured
/// and returns when the service has stopped.
async fn consume_with_dead_letters(stream: &str, dead_letters: &str) {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    active_stream(&kinesis, stream, 1).await;
    let entries = ["not json", r#"{"iotValue": 3}"#, r#"{"iotName": "ok", "iotValue": 3, "ts": 1700000000000}"#]
        .iter()
        .map(|body| PutRecordsRequestEntry::builder().partition_key("k").data(Blob::new(*body)).build().expect("entry"))
        .collect();
    kinesis.put_records().stream_name(stream).set_records(Some(entries)).send().await.expect("PutRecords");
    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-dlq")));
    let table = unique_name("rcfd-leases");
    // Top-level tables must come before the [[kinesis]] array of tables.
    let config = consumer_config(&store, stream, &table, "worker-a").replacen(
        "[[kinesis]]",
        &format!("[dead_letters]\n{dead_letters}\n[[kinesis]]"),
        1,
    );
    let service = InProcess::start(&config).await;
    poll_until("the good record scored", Duration::from_secs(60), || async {
        (metric(&metrics(service.http).await?, "rcfd_records_scored_total") >= 1.0).then_some(())
    })
    .await;
    service.stop().await;
    let _ = std::fs::remove_file(&store);
}

fn assert_envelopes(envelopes: &[rcfd::sink::dead_letter::Envelope]) {
    use base64::Engine;
    assert_eq!(envelopes.len(), 2, "{envelopes:?}");
    let raw: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| base64::engine::general_purpose::STANDARD.decode(&e.raw_base64).expect("base64"))
        .collect();
    assert!(raw.contains(&b"not json".to_vec()), "raw bytes kept");
    assert!(envelopes.iter().any(|e| e.reason == "field `iotName` is missing"), "{envelopes:?}");
    assert!(envelopes.iter().all(|e| e.source.as_ref().is_some_and(|p| !p.sequence.is_empty())), "positions kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_to_a_second_stream() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let (stream, letters) = (unique_name("rcfd-in"), unique_name("rcfd-dlq"));
    active_stream(&kinesis, &letters, 1).await;
    consume_with_dead_letters(&stream, &format!("kinesis_stream = '{letters}'")).await;
    let shard =
        kinesis.list_shards().stream_name(&letters).send().await.expect("ListShards").shards.unwrap_or_default();
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(&letters)
        .shard_id(&shard[0].shard_id)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("an iterator");
    let got = kinesis.get_records().shard_iterator(iterator).send().await.expect("GetRecords").records;
    let envelopes: Vec<rcfd::sink::dead_letter::Envelope> =
        got.iter().map(|r| serde_json::from_slice(r.data.as_ref()).expect("an envelope")).collect();
    assert_envelopes(&envelopes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_to_s3() {
    let aws = aws_config("AWS_ENDPOINT_URL_S3").await;
    aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(true).build());
    let bucket = unique_name("rcfd-dlq").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.expect("CreateBucket");
    consume_with_dead_letters(
        &unique_name("rcfd-in"),
        &format!("s3_bucket = '{bucket}'\ns3_prefix = 'letters/'\ns3_force_path_style = true"),
    )
    .await;
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("letters/")
        .send()
        .await
        .expect("List")
        .contents
        .unwrap_or_default();
    let mut envelopes = Vec::new();
    for object in listed {
        let key = object.key.expect("a key");
        let body =
            s3.get_object().bucket(&bucket).key(&key).send().await.expect("Get").body.collect().await.expect("body");
        for line in body.into_bytes().split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            envelopes.push(serde_json::from_slice(line).expect("an envelope"));
        }
    }
    assert_envelopes(&envelopes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_another_instance_takes_over_and_resumes_from_the_checkpoints() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let stream = unique_name("rcfd-kill");
    let table = unique_name("rcfd-leases");
    active_stream(&kinesis, &stream, 2).await;
    let reading = |i: i64| (format!("sensor-{}", i % 8), 10.0 + (i % 7) as f64, 1_700_000_000_000 + i * 1_000);
    put(&kinesis, &stream, &(0..500).map(reading).collect::<Vec<_>>()).await;

    // The real binary, killed with SIGKILL: no shutdown, no lease given up.
    let dir = std::env::temp_dir().join(unique_name("rcfd-kill"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (grpc_port, http_port) = (free_port(), free_port());
    let killed_store = dir.join("killed.redb");
    let config = dir.join("rcfd.toml");
    let text = consumer_config(&killed_store, &stream, &table, "worker-killed").replacen(
        "[store]",
        &format!("[grpc]\nlisten = '127.0.0.1:{grpc_port}'\n[http]\nlisten = '127.0.0.1:{http_port}'\n[store]"),
        1,
    );
    std::fs::write(&config, text).expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rcfd"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("rcfd starts");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    poll_until("the first 500 records scored", Duration::from_secs(60), || async {
        (metric(&metrics(http).await?, "rcfd_records_scored_total") >= 500.0).then_some(())
    })
    .await;
    child.kill();
    // What the killed instance had made durable (and so acknowledged and checkpointed).
    let killed_events = EmbeddedStore::open(&killed_store)
        .expect("a killed store opens (redb repairs it)")
        .recent_events(10_000)
        .expect("events");
    let kept = killed_events.len();

    put(&kinesis, &stream, &(500..1000).map(reading).collect::<Vec<_>>()).await;
    // Where the killed instance's checkpoints stood (read after the puts, so that a
    // write it sent just before it died has landed): the survivor resumes after them.
    let checkpointed = checkpoints(&aws_sdk_dynamodb::Client::new(&aws), &table).await;
    // The killed instance's durable events past its shard's checkpoint: the survivor
    // reads them again, so they are journaled twice; none at or before a checkpoint may be.
    let past_checkpoint = killed_events
        .iter()
        .filter(|event| {
            let source = event.source.as_ref().expect("a Kinesis event has its position");
            // An event's position is the stream record's sequence number, then ":index"
            // within it. Sequence numbers are decimal strings: longer is later, then by
            // digits.
            let sequence = source.sequence.split(':').next().unwrap_or_default();
            let after = |checkpoint: &String| (sequence.len(), sequence) > (checkpoint.len(), checkpoint.as_str());
            checkpointed.get(&source.shard).is_none_or(after)
        })
        .count();
    let survivor_store = dir.join("survivor.redb");
    let survivor = InProcess::start(&consumer_config(&survivor_store, &stream, &table, "worker-b")).await;
    // The rest, and again what the killed instance journaled past its checkpoints (a
    // count of the rest alone is reached early when the killed instance's checkpoints
    // lagged, as on a busy machine).
    let expected = 1000 - kept + past_checkpoint;
    poll_until("the survivor to take the expired leases and score the rest", Duration::from_secs(60), || async {
        (metric(&metrics(survivor.http).await?, "rcfd_records_scored_total") >= expected as f64).then_some(())
    })
    .await;
    survivor.stop().await;

    let mut ids = HashMap::new();
    let survivor_events = EmbeddedStore::open(&survivor_store).expect("store").recent_events(10_000).expect("events");
    for event in killed_events.iter().chain(&survivor_events) {
        *ids.entry(event.id.clone()).or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 1000, "every record is in one of the journals");
    let twice = ids.values().filter(|n| **n > 1).count();
    assert_eq!(twice, past_checkpoint, "exactly the records past a checkpoint are scored again");
    assert!(kept < 1000, "the killed instance died before the later records");
    let _ = std::fs::remove_dir_all(dir);
    let _ = kinesis.delete_stream().stream_name(&stream).send().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn envelope(lines: &[&str]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_700_000_000_000i64 + i as i64, "message": m}))
        .collect();
    let body = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "vpc", "logStream": "eni",
        "subscriptionFilters": ["rcfd"], "logEvents": events});
    gzip(body.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_letters_with_their_reason_and_the_good_ones_around_them_are_scored() {
    let aws = aws_config("AWS_ENDPOINT_URL_KINESIS").await;
    aws_config("AWS_ENDPOINT_URL_DYNAMODB").await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let stream = unique_name("rcfd-formats");
    active_stream(&kinesis, &stream, 1).await;
    let flow = |n: u32| {
        format!(
            "2 123456789012 eni-0a1b2c3d 10.0.1.{n} 10.0.2.9 443 49152 6 {n} {} 1700000000 1700000060 ACCEPT OK",
            n * 100
        )
    };
    let good =
        envelope(&[&flow(1), "2 123456789012 eni-0a1b2c3d - - - - - - - 1700000000 1700000060 - NODATA", &flow(2)]);
    let wrong_count = envelope(&[&flow(3), "2 123456789012 eni-0a1b2c3d 10.0.1.4 443", &flow(5)]);
    let mut truncated = envelope(&[&flow(6)]);
    truncated.truncate(truncated.len() / 2);
    let mut bad_kpl = kpl::MAGIC.to_vec();
    let body = kpl::AggregatedRecord {
        partition_key_table: vec!["k".into()],
        explicit_hash_key_table: Vec::new(),
        records: Vec::new(),
    }
    .encode_to_vec();
    bad_kpl.extend_from_slice(&body);
    bad_kpl.extend_from_slice(&[0u8; 16]);
    let not_utf8 = gzip(&[0xff, 0xfe, 0x00, 0x7b]);
    // Two bad lines in one record: one dead letter with both reasons and the bytes once.
    let two_bad = envelope(&["2 123456789012 eni-0a1b2c3d 10.0.1.8", &flow(7), "2 123456789012"]);
    let records = [good, wrong_count, truncated, bad_kpl, not_utf8, two_bad];
    let entries = records
        .iter()
        .map(|r| {
            PutRecordsRequestEntry::builder().partition_key("k").data(Blob::new(r.clone())).build().expect("entry")
        })
        .collect();
    kinesis.put_records().stream_name(&stream).set_records(Some(entries)).send().await.expect("PutRecords");

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-formats")));
    let table = unique_name("rcfd-leases");
    let config = consumer_config(&store, &stream, &table, "worker-a").replace(
        "[kinesis.decoder]\nformat = 'json'\nevent_time = 'ts'\n",
        "[kinesis.decoder]\nformat = 'cloudwatch'\ninner = { format = 'vpc_flow', entity = 'srcaddr', features = ['bytes'] }\n",
    );
    let flows = "name = 'flows'\nentity_key = ['srcaddr']\nfeatures = ['bytes']\n";
    let models = std::env::temp_dir().join(unique_name("rcfd-flow-models"));
    std::fs::create_dir_all(&models).expect("dir");
    std::fs::write(models.join("flows.toml"), flows).expect("detector");
    let config = config
        .replace(concat!(env!("CARGO_MANIFEST_DIR"), "/models"), &models.display().to_string())
        .replace("detector = 'iot-sensor'", "detector = 'flows'");
    let service = InProcess::start(&config).await;
    poll_until("every record handled", Duration::from_secs(60), || async {
        let m = metrics(service.http).await?;
        (metric(&m, "rcfd_records_scored_total") >= 5.0 && metric(&m, "rcfd_errors_total{stage=\"decode\"") >= 6.0)
            .then_some(())
    })
    .await;
    service.stop().await;
    let journal = EmbeddedStore::open(&store).expect("store");
    let mut entities: Vec<String> = journal.recent_events(10).expect("events").into_iter().map(|e| e.entity).collect();
    entities.sort();
    assert_eq!(
        entities,
        vec!["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.5", "10.0.1.7"],
        "the good flows around the bad ones"
    );
    let letters = journal.recent_dead_letters(10).expect("letters");
    let two = letters.iter().find(|l| l.reason.starts_with("2 of its 3 records failed")).expect("one letter for both");
    assert_eq!(two.raw, records[5], "{}", two.reason);
    assert!(
        two.reason.contains("4 fields, expected 14") && two.reason.contains("2 fields, expected 14"),
        "{}",
        two.reason
    );
    let reasons: Vec<String> = letters.into_iter().map(|l| l.reason).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for expected in ["5 fields, expected 14", "gzip", "MD5", "JSON"] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no dead letter says {expected:?}: {reasons:?}");
    }
    let _ = std::fs::remove_file(&store);
    let _ = std::fs::remove_dir_all(&models);
}
