//! Decoding, and decoding plus scoring, per decoder (criterion, records per second), then
//! the consumer end to end: records from kinesis-mock into the embedded store (only
//! when `AWS_ENDPOINT_URL_KINESIS` and `AWS_ENDPOINT_URL_DYNAMODB` point at running
//! emulators, e.g. from `scripts/test.sh --servers`).
//! Run: `cargo bench --bench decode`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rcfd::decode::{kpl, Decoder, DecoderConfig};
use rcfd::detector::config::DetectorConfig;
use rcfd::detector::registry::Registry;
use rcfd::store::embedded::EmbeddedStore;

/// Stream records per measured batch.
const BATCH: usize = 1_000;
/// Distinct entities in the inputs.
const ENTITIES: usize = 16;

fn flow(i: usize) -> String {
    format!(
        "2 123456789012 eni-0a1b2c3d 10.0.{}.{} 10.0.2.9 443 49152 6 {} {} 1700000000 1700000060 ACCEPT OK",
        i % ENTITIES / 256,
        i % ENTITIES,
        10 + i % 7,
        1_000 + (i * 37) % 500
    )
}

fn access(i: usize) -> String {
    format!(
        "10.0.0.{} - - [23/Nov/2026:18:07:{:02} +0000] \"GET /api/items/{} HTTP/1.1\" {} {} \"-\" \"curl/8.0\"",
        i % ENTITIES,
        i % 60,
        i % 100,
        if i.is_multiple_of(50) { 500 } else { 200 },
        500 + (i * 13) % 300
    )
}

fn json(i: usize) -> String {
    format!(r#"{{"iotName": "sensor-{}", "iotValue": {}}}"#, i % ENTITIES, 10 + i % 11)
}

fn envelope(lines: &[String]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_700_000_000_000i64 + i as i64, "message": m}))
        .collect();
    let body = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "g", "logStream": "s",
        "subscriptionFilters": ["f"], "logEvents": events});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(body.to_string().as_bytes());
    encoder.finish().unwrap_or_default()
}

/// (name, decoder TOML, stream records, detector features, records per stream record)
type Case = (&'static str, &'static str, Vec<Vec<u8>>, &'static str, usize);

fn cases() -> Vec<Case> {
    let lines = |f: fn(usize) -> String| (0..BATCH).map(|i| f(i).into_bytes()).collect::<Vec<_>>();
    let envelopes = (0..BATCH / 10).map(|b| envelope(&(b * 10..b * 10 + 10).map(flow).collect::<Vec<_>>())).collect();
    vec![
        ("json", "format = 'json'", lines(json), "['iotValue']", 1),
        ("vpc_flow", "format = 'vpc_flow'", lines(flow), "['bytes', 'packets']", 1),
        ("apache", "format = 'apache'", lines(access), "['bytes', 'is_error', 'is_client_error']", 1),
        (
            "cloudwatch_vpc_flow_x10",
            "format = 'cloudwatch'\ninner = { format = 'vpc_flow' }",
            envelopes,
            "['bytes', 'packets']",
            10,
        ),
    ]
}

fn decoders(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("rcfd-bench-decode-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    for (name, decoder_toml, inputs, features, per_record) in cases() {
        let config: DecoderConfig = toml::from_str(decoder_toml).expect("decoder config");
        let decoder: Box<dyn Decoder> = config.build().expect("decoder");
        let records = (inputs.len() * per_record) as u64;
        group.throughput(Throughput::Elements(records));
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| {
                for (i, input) in inputs.iter().enumerate() {
                    for user in kpl::deaggregate(input).expect("not an aggregate") {
                        criterion::black_box(decoder.decode(&user, i as i64));
                    }
                }
            })
        });
        let detector = DetectorConfig::from_toml(&format!("name = 'd'\nentity_key = ['e']\nfeatures = {features}\n"))
            .expect("detector")
            .validate()
            .expect("valid");
        let mut registry = Registry::new(vec![detector], 10_000, store.clone());
        let mut t = 0i64;
        group.bench_function(format!("{name}/decode_and_score"), |b| {
            b.iter(|| {
                for input in &inputs {
                    for user in kpl::deaggregate(input).expect("not an aggregate") {
                        for decoded in decoder.decode(&user, t).into_iter().flatten() {
                            t += 1;
                            let values: Vec<f64> = decoded.values.values().copied().collect();
                            let _ = registry.process("d", &decoded.entity, t, &values, None);
                        }
                    }
                }
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_file(path);
}

/// Records per second from kinesis-mock through the consumer into the embedded store.
fn consumer_end_to_end() {
    let emulated = ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"].iter().all(|v| std::env::var(v).is_ok());
    if !emulated {
        println!("decode/consumer_end_to_end: skipped (start the emulators: scripts/test.sh --servers)");
        return;
    }
    const RECORDS: usize = 20_000;
    const SHARDS: i32 = 4;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let kinesis = aws_sdk_kinesis::Client::new(&aws);
        let stream = format!("rcfd-bench-{}", std::process::id());
        kinesis.create_stream().stream_name(&stream).shard_count(SHARDS).send().await.expect("CreateStream");
        loop {
            let d = kinesis.describe_stream_summary().stream_name(&stream).send().await.expect("describe");
            if d.stream_description_summary.is_some_and(|s| s.stream_status == aws_sdk_kinesis::types::StreamStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The last sequence number per shard: once every checkpoint is there, every record
        // is in the store (a checkpoint follows the store's durable write).
        let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(500) {
            let entries = chunk
                .iter()
                .map(|i| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(format!("sensor-{}", i % 64))
                        .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                            r#"{{"iotName": "sensor-{}", "iotValue": {}}}"#,
                            i % 64,
                            10 + i % 11
                        )))
                        .build()
                        .expect("entry")
                })
                .collect();
            let put = kinesis.put_records().stream_name(&stream).set_records(Some(entries)).send().await.expect("PutRecords");
            for r in put.records {
                if let (Some(shard), Some(seq)) = (r.shard_id, r.sequence_number) {
                    let later = last.get(&shard).is_none_or(|s| (seq.len(), &seq) > (s.len(), s));
                    if later {
                        last.insert(shard, seq);
                    }
                }
            }
        }
        let store = std::env::temp_dir().join(format!("rcfd-bench-consumer-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&store);
        let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
        let text = format!(
            "[http]\nenabled = false\n[store]\npath = '{}'\n[models]\ndetectors = ['{models}']\n[[kinesis]]\nstream = '{stream}'\ndetector = 'iot-sensor'\nbatch_limit = 10000\n",
            store.display()
        );
        let config = rcfd::service::config::Config::from_toml_with_env(&text, Vec::new()).expect("config").validate().expect("valid");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let service = tokio::spawn(rcfd::service::run(config, rcfd::service::Listeners { grpc, http: None }, async move {
            let _ = stopped.await;
        }));
        // The lease table's checkpoints say when every record is in the store.
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let table = format!("rcfd-leases-{stream}");
        let elapsed = loop {
            let scanned = dynamodb.scan().table_name(&table).consistent_read(true).send().await;
            let done = scanned.ok().and_then(|s| s.items).is_some_and(|items| {
                last.iter().all(|(shard, seq)| {
                    items.iter().any(|i| {
                        i.get("leaseKey").and_then(|k| k.as_s().ok()) == Some(shard)
                            && i.get("checkpoint").and_then(|c| c.as_s().ok()) == Some(seq)
                    })
                })
            });
            if done || started.elapsed() > Duration::from_secs(300) {
                break started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let _ = stop.send(());
        let _ = service.await;
        let events = EmbeddedStore::open(&store).map(|s| s.journal_counts().map(|c| c.events).unwrap_or(0)).unwrap_or(0);
        println!(
            "decode/consumer_end_to_end: {events} of {RECORDS} records from kinesis-mock ({SHARDS} shards) into the store in {:.2} s: {:.0} records/s",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );
        let _ = std::fs::remove_file(&store);
        let _ = kinesis.delete_stream().stream_name(&stream).send().await;
        let _ = dynamodb.delete_table().table_name(&table).send().await;
    });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    decoders(&mut criterion);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_none_or(|f| "decode/consumer_end_to_end".contains(f.as_str())) {
        consumer_end_to_end();
    }
    criterion.final_summary();
}
