//! The service end to end in this process (`run()` on port-0 listeners, a fresh store
//! file), talked to with the generated tonic client, with grpcurl (a client this
//! project did not write), over HTTP, and as the real binary stopped with SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rcfd::service::config::Config;
use rcfd::service::{run, Listeners};
use rcfd::source::grpc::proto::{
    self, detectors_client::DetectorsClient, models_client::ModelsClient, record_result, scoring_client::ScoringClient,
};
use rcfd::source::simulator::Readings;
use rcfd::store::embedded::EmbeddedStore;
use rcfd::store::snapshot::{ModelKey, SnapshotStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

use crate::servers::{free_port, poll_until, required_env, unique_name, KillOnDrop};

const SENSOR_TOML: &str = "name = \"sensor\"\nentity_key = [\"iotName\"]\nfeatures = [\"iotValue\"]\n[forest]\ntrees = 30\nsample_size = 128\n";
const TOKEN: &str = "s3cret-token-for-tests";

struct Service {
    grpc: SocketAddr,
    http: SocketAddr,
    store: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts the service with `extra` TOML after a fresh store path.
    async fn start(extra: &str) -> Service {
        let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-service")));
        let text = format!("[store]\npath = '{}'\n{extra}", store.display());
        let config =
            Config::from_toml_with_env(&text, Vec::new()).expect("config parses").validate().expect("config is valid");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let (grpc_address, http_address) = (grpc.local_addr().expect("address"), http.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, Listeners { grpc, http: Some(http) }, async move {
            let _ = stopped.await;
        }));
        Service { grpc: grpc_address, http: http_address, store, stop, task }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).expect("uri").connect().await.expect("connects")
    }

    /// Stops the service (drain, snapshot) and returns its store, reopened.
    async fn stop(self) -> (EmbeddedStore, PathBuf) {
        let _ = self.stop.send(());
        self.task.await.expect("service task").expect("service stops cleanly");
        (EmbeddedStore::open(&self.store).expect("store reopens"), self.store)
    }
}

fn record(detector: &str, entity: &str, event_ms: i64, values: &[(&str, f64)]) -> proto::Record {
    proto::Record {
        detector: detector.into(),
        entity: entity.into(),
        event_time_ms: event_ms,
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        id: String::new(),
    }
}

async fn create_sensor_detector(channel: Channel) {
    let created = DetectorsClient::new(channel)
        .create_detector(proto::CreateDetectorRequest { config_toml: SENSOR_TOML.into() })
        .await
        .expect("detector created")
        .into_inner();
    assert_eq!((created.name.as_str(), created.features.as_slice()), ("sensor", &["iotValue".to_owned()][..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_scored_in_order_anomalies_rank_first_and_bad_records_fail_alone() {
    let service = Service::start("[http]\nenabled = true\n").await;
    let channel = service.channel().await;
    create_sensor_detector(channel.clone()).await;
    let mut scoring = ScoringClient::new(channel);

    let mut readings = Readings::new(&rcfd::service::config::SimulatorConfig {
        sensors: 1,
        wave: false,
        seed: 7,
        ..Default::default()
    });
    let mut scored = Vec::new();
    let mut injected = Vec::new();
    for batch in 0..8 {
        let mut records = Vec::new();
        for i in 0..500 {
            let (_, value, anomaly) = readings.next_tick().remove(0);
            let t = 1_700_000_000_000 + (batch * 500 + i) * 1_000;
            injected.push(anomaly);
            records.push(record("sensor", "DemoSensor", t, &[("iotValue", value)]));
        }
        let reply = scoring.score(proto::ScoreRequest { records }).await.expect("batch scored").into_inner();
        assert_eq!(reply.results.len(), 500);
        for result in reply.results {
            let Some(record_result::Result::Event(event)) = result.result else { panic!("scored: {result:?}") };
            scored.push(event);
        }
    }
    assert!(scored.windows(2).all(|w| w[0].event_time_ms < w[1].event_time_ms), "replies come in request order");
    // After warm-up, the injected anomalies are exactly the top-scoring records.
    let warm: Vec<(f64, bool)> = scored.iter().zip(&injected).skip(500).map(|(e, &a)| (e.anomaly_score, a)).collect();
    let anomalies = warm.iter().filter(|(_, a)| *a).count();
    let mut ranked = warm.clone();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert!(anomalies >= 20, "the scenario injects 1%: {anomalies}");
    assert!(ranked[..anomalies].iter().all(|(_, a)| *a), "every injected anomaly outranks every normal record");
    let flagged = scored.iter().zip(&injected).skip(500).filter(|(e, &a)| a && e.is_anomaly).count();
    assert!(flagged * 100 >= anomalies * 95, "{flagged} of {anomalies} flagged");
    let spike = scored
        .iter()
        .zip(&injected)
        .skip(500)
        .find(|(e, &a)| a && e.is_anomaly)
        .map(|(e, _)| e)
        .expect("a flagged spike");
    assert_eq!(spike.attribution["iotValue"].direction, "HIGH");
    assert!((10.0..=20.0).contains(&spike.expected_values["iotValue"]), "{spike:?}");

    // One bad record fails alone, with a message naming the field.
    let t = 1_700_010_000_000;
    let mixed = vec![
        record("sensor", "DemoSensor", t, &[("iotValue", 15.0)]),
        record("sensor", "DemoSensor", t + 1, &[("iotValue", f64::INFINITY)]),
        record("sensor", "DemoSensor", t + 2, &[("temperature", 15.0)]),
        record("sensor", "", t + 3, &[("iotValue", 15.0)]),
        record("nope", "DemoSensor", t + 4, &[("iotValue", 15.0)]),
        record("sensor", "DemoSensor", t + 5, &[("iotValue", f64::NAN)]),
        record("sensor", "DemoSensor", t + 6, &[("iotValue", 2e36)]),
    ];
    let reply = scoring
        .score(proto::ScoreRequest { records: mixed })
        .await
        .expect("the batch as a whole succeeds")
        .into_inner();
    let outcomes: Vec<Result<f64, (String, String)>> = reply
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(record_result::Result::Event(e)) => Ok(e.anomaly_score),
            Some(record_result::Result::Error(e)) => Err((e.code, e.message)),
            None => panic!("an empty result"),
        })
        .collect();
    assert!(
        outcomes[0].is_ok() && outcomes[5].is_ok(),
        "good records and a missing (NaN) value are scored: {outcomes:?}"
    );
    let errors: Vec<&(String, String)> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(errors.len(), 5, "{outcomes:?}");
    assert!(errors.iter().all(|(code, _)| code == "INVALID_ARGUMENT"), "{errors:?}");
    assert!(errors[0].1.starts_with("values.iotValue = inf"), "{}", errors[0].1);
    assert!(errors[1].1.starts_with("values.temperature: not a feature of detector `sensor`"), "{}", errors[1].1);
    assert!(errors[2].1.starts_with("entity"), "{}", errors[2].1);
    assert!(errors[3].1.contains("unknown detector `nope`"), "{}", errors[3].1);
    assert_eq!(errors[4].1, "values.iotValue = 2e36: magnitudes above 1e35 are not allowed");

    let alerts_in_replies = scored.iter().filter(|e| e.is_anomaly && e.starts_region).count();
    let (store, path) = service.stop().await;
    let counts = store.journal_counts().expect("counts");
    assert_eq!(counts.events, 4_002, "every scored record reached the journal once");
    assert_eq!(counts.dead_letters, 5, "every rejected record is a dead letter");
    assert_eq!(counts.alerts as usize, alerts_in_replies, "one alert per anomaly region");
    let alert = &store.recent_alerts(1).expect("alerts")[0];
    assert!(alert.summary.contains("sensor/DemoSensor") && alert.event.is_anomaly, "{alert:?}");
    let letters = store.recent_dead_letters(4).expect("dead letters");
    assert!(letters.iter().any(|l| l.reason.contains("unknown detector `nope`") && l.origin == "grpc"), "{letters:?}");
    let snapshot = store.get(&ModelKey { detector: "sensor".into(), entity: "DemoSensor".into() }).expect("read");
    assert!(snapshot.is_some(), "the model was snapshotted at shutdown");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_and_models_are_managed_through_the_api() {
    let service = Service::start("").await;
    let channel = service.channel().await;
    create_sensor_detector(channel.clone()).await;
    let mut detectors = DetectorsClient::new(channel.clone());
    let mut models = ModelsClient::new(channel.clone());
    let mut scoring = ScoringClient::new(channel);

    let again = detectors.create_detector(proto::CreateDetectorRequest { config_toml: SENSOR_TOML.into() }).await;
    assert_eq!(again.expect_err("exists").code(), Code::AlreadyExists);
    let bad = detectors
        .create_detector(proto::CreateDetectorRequest { config_toml: SENSOR_TOML.replace("trees = 30", "trees = 0") })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("forest.trees"), "{}", bad.message());

    let records = (0..300).map(|i| record("sensor", "a", 1_000 + i, &[("iotValue", 10.0 + (i % 5) as f64)])).collect();
    scoring.score(proto::ScoreRequest { records }).await.expect("scored");
    let info = models
        .get_model(proto::ModelRef { detector: "sensor".into(), entity: "a".into() })
        .await
        .expect("model")
        .into_inner();
    assert_eq!((info.points_seen, info.last_event_time_ms), (300, 1_299));
    assert!(info.memory_bytes > 10_000 && info.last_score > 0.0, "{info:?}");
    let missing = models.get_model(proto::ModelRef { detector: "sensor".into(), entity: "zz".into() }).await;
    assert_eq!(missing.expect_err("no such model").code(), Code::NotFound);

    // A snapshot restored under another entity scores the next record identically.
    let snapshot = models
        .snapshot_model(proto::ModelRef { detector: "sensor".into(), entity: "a".into() })
        .await
        .expect("snapshot");
    let restored = models
        .restore_model(proto::RestoreModelRequest {
            detector: "sensor".into(),
            entity: "b".into(),
            snapshot: snapshot.into_inner().snapshot,
        })
        .await
        .expect("restored")
        .into_inner();
    assert_eq!(restored.points_seen, 300);
    let next = |entity: &str| record("sensor", entity, 1_300, &[("iotValue", 42.0)]);
    let reply =
        scoring.score(proto::ScoreRequest { records: vec![next("a"), next("b")] }).await.expect("scored").into_inner();
    let scores: Vec<f64> = reply
        .results
        .iter()
        .map(|r| match &r.result {
            Some(record_result::Result::Event(e)) => e.anomaly_score,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(scores[0], scores[1]);
    let garbage = models
        .restore_model(proto::RestoreModelRequest {
            detector: "sensor".into(),
            entity: "c".into(),
            snapshot: vec![1, 2, 3],
        })
        .await;
    assert_eq!(garbage.expect_err("not a snapshot").code(), Code::InvalidArgument);

    // Updating a detector starts its models afresh; deleting removes it.
    let updated = detectors
        .update_detector(proto::UpdateDetectorRequest {
            name: "sensor".into(),
            config_toml: SENSOR_TOML.replace("trees = 30", "trees = 20"),
        })
        .await
        .expect("updated")
        .into_inner();
    assert!(updated.config_toml.contains("trees = 20"));
    let gone = models.get_model(proto::ModelRef { detector: "sensor".into(), entity: "a".into() }).await;
    assert_eq!(gone.expect_err("models reset").code(), Code::NotFound);
    let listed = detectors.list_detectors(proto::ListDetectorsRequest {}).await.expect("list").into_inner();
    assert_eq!(listed.detectors.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["sensor"]);
    detectors.delete_detector(proto::DeleteDetectorRequest { name: "sensor".into() }).await.expect("deleted");
    let after = detectors.get_detector(proto::GetDetectorRequest { name: "sensor".into() }).await;
    assert_eq!(after.expect_err("deleted").code(), Code::NotFound);
    let (_, path) = service.stop().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_stream_answers_each_message_in_order() {
    let service = Service::start("").await;
    let channel = service.channel().await;
    create_sensor_detector(channel.clone()).await;
    let requests: Vec<proto::ScoreRequest> = (0..3)
        .map(|m| proto::ScoreRequest {
            records: (0..100)
                .map(|i| record("sensor", "s", m * 100 + i + 1, &[("iotValue", 10.0 + (i % 3) as f64)]))
                .collect(),
        })
        .collect();
    let mut replies = ScoringClient::new(channel)
        .score_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut times = Vec::new();
    while let Some(reply) = replies.message().await.expect("a reply") {
        assert_eq!(reply.results.len(), 100);
        for result in reply.results {
            let Some(record_result::Result::Event(event)) = result.result else { panic!("scored") };
            times.push(event.event_time_ms);
        }
    }
    assert_eq!(times, (1..=300).collect::<Vec<i64>>(), "one reply per message, records in order");
    let (_, path) = service.stop().await;
    let _ = std::fs::remove_file(path);
}

/// A self-signed certificate for localhost and 127.0.0.1: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_token_and_limits_are_enforced() {
    let (cert, key) = certificate();
    let dir = std::env::temp_dir().join(unique_name("rcfd-tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).expect("write cert");
    std::fs::write(&key_path, &key).expect("write key");
    let service = Service::start(&format!(
        "[grpc]\ntls_cert = '{}'\ntls_key = '{}'\nmax_batch_records = 100\nmax_message_bytes = 65536\n[auth]\ntoken = '{TOKEN}'\n",
        cert_path.display(),
        key_path.display()
    ))
    .await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", service.grpc))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connects over TLS");

    let list = |channel: Channel, token: Option<&str>| {
        let token = token.map(|t| format!("Bearer {t}"));
        async move {
            let mut request = tonic::Request::new(proto::ListDetectorsRequest {});
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", token.parse().expect("ascii"));
            }
            DetectorsClient::new(channel).list_detectors(request).await
        }
    };
    assert_eq!(list(channel.clone(), None).await.expect_err("no token").code(), Code::Unauthenticated);
    assert_eq!(
        list(channel.clone(), Some("wrong-token-wrong-token")).await.expect_err("bad token").code(),
        Code::Unauthenticated
    );
    assert!(list(channel.clone(), Some(TOKEN)).await.is_ok(), "the right token passes");

    let plain = Channel::from_shared(format!("http://{}", service.grpc)).expect("uri").connect().await;
    if let Ok(plain) = plain {
        assert!(list(plain, Some(TOKEN)).await.is_err(), "plain HTTP/2 is refused by a TLS server");
    }

    let authorized = |records: Vec<proto::Record>| {
        let mut request = tonic::Request::new(proto::ScoreRequest { records });
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("ascii"));
        request
    };
    let mut scoring = ScoringClient::new(channel.clone());
    let too_many = (0..101).map(|i| record("sensor", "a", i, &[("iotValue", 1.0)])).collect();
    let status = scoring.score(authorized(too_many)).await.expect_err("over the batch limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("grpc.max_batch_records"), "{}", status.message());
    let huge_value = "x".repeat(70_000);
    let too_big = vec![proto::Record { entity: huge_value, ..record("sensor", "a", 1, &[("iotValue", 1.0)]) }];
    let status = scoring.score(authorized(too_big)).await.expect_err("over the message limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("grpc.max_message_bytes"), "{}", status.message());

    let (_, path) = service.stop().await;
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir_all(dir);
}

fn grpcurl(args: &[&str]) -> (bool, String) {
    let output =
        std::process::Command::new(required_env("RCFD_TEST_GRPCURL")).args(args).output().expect("grpcurl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_finds_the_api_by_reflection_checks_health_and_scores() {
    let service = Service::start("").await;
    create_sensor_detector(service.channel().await).await;
    let address = service.grpc.to_string();
    let (ok, listed) = tokio::task::spawn_blocking({
        let address = address.clone();
        move || grpcurl(&["-plaintext", &address, "list"])
    })
    .await
    .expect("grpcurl");
    assert!(ok, "{listed}");
    for service_name in ["rcfd.v1.Scoring", "rcfd.v1.Detectors", "rcfd.v1.Models", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service_name), "{service_name} missing from:\n{listed}");
    }
    let body = r#"{"records":[{"detector":"sensor","entity":"DemoSensor","eventTimeMs":"1700000000000","values":{"iotValue":12}},
                             {"detector":"sensor","entity":"DemoSensor","values":{"iotValue":"Infinity"}}]}"#;
    let (health_ok, health, score_ok, scored) = tokio::task::spawn_blocking(move || {
        let (health_ok, health) = grpcurl(&["-plaintext", &address, "grpc.health.v1.Health/Check"]);
        let (score_ok, scored) = grpcurl(&["-plaintext", "-d", body, &address, "rcfd.v1.Scoring/Score"]);
        (health_ok, health, score_ok, scored)
    })
    .await
    .expect("grpcurl");
    assert!(health_ok && health.contains("SERVING"), "{health}");
    assert!(score_ok, "{scored}");
    let reply: serde_json::Value = serde_json::from_str(&scored).expect("grpcurl prints JSON");
    let results = reply["results"].as_array().expect("results");
    assert_eq!(results[0]["event"]["entity"], "DemoSensor", "{reply}");
    assert_eq!(results[1]["error"]["code"], "INVALID_ARGUMENT", "{reply}");
    let (_, path) = service.stop().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_shows_anomalies_on_the_live_page_and_in_metrics() {
    let service = Service::start("[simulator]\nenabled = true\nrate = 1000.0\n").await;
    let http = service.http;
    let get = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connects");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("writes");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("reads");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.to_owned(), body.to_owned())
    };
    let live = poll_until("anomalies on the live page", Duration::from_secs(60), || async {
        let (_, body) = get("/api/live").await;
        let live: serde_json::Value = serde_json::from_str(&body).ok()?;
        (live["totals"]["anomalies"].as_u64()? > 0 && !live["top_entities"].as_array()?.is_empty()).then_some(live)
    })
    .await;
    let entities: Vec<&str> =
        live["series"].as_array().expect("series").iter().filter_map(|s| s["entity"].as_str()).collect();
    assert_eq!(entities, vec!["DemoSensor-1", "DemoSensor-2", "DemoSensor-3", "DemoWave"]);
    let anomaly = &live["anomalies"][0];
    assert!(anomaly["attribution"]["iotValue"]["direction"].is_string(), "{anomaly}");

    let (head, page) = get("/").await;
    assert!(head.starts_with("HTTP/1.1 200") && page.contains("api/live"), "{head}");
    for remote in ["src=\"http", "href=\"http", "src='http", "href='http", "url(http", "@import", "fetch(\"http"] {
        assert!(!page.contains(remote), "the page loads nothing from elsewhere ({remote})");
    }
    let (_, metrics) = get("/metrics").await;
    let counters: HashMap<&str, f64> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k, v.parse().ok()?))))
        .collect();
    assert!(counters["rcfd_records_scored_total{detector=\"iot-sensor\"}"] > 0.0, "{metrics}");
    assert!(counters["rcfd_anomalies_total{detector=\"iot-sensor\"}"] > 0.0, "{metrics}");
    assert_eq!(counters["rcfd_models_resident"], 4.0);
    assert!(metrics.contains("rcfd_score_duration_seconds_bucket"), "{metrics}");
    let (head, _) = get("/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (store, path) = service.stop().await;
    for entity in ["DemoSensor-1", "DemoWave"] {
        let key = ModelKey { detector: "iot-sensor".into(), entity: entity.into() };
        assert!(store.get(&key).expect("read").is_some(), "{entity} snapshotted at shutdown");
    }
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_stops_cleanly_on_sigterm() {
    let (grpc_port, http_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(unique_name("rcfd-binary"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = dir.join("rcfd.redb");
    let config = dir.join("rcfd.toml");
    std::fs::write(
        &config,
        format!(
            "[grpc]\nlisten = '127.0.0.1:{grpc_port}'\n[http]\nlisten = '127.0.0.1:{http_port}'\n[store]\npath = '{}'\n[simulator]\nenabled = true\nrate = 200.0\n",
            store.display()
        ),
    )
    .expect("write config");
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_rcfd"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RCFD_SIMULATOR__SENSORS", "2")
            .spawn()
            .expect("rcfd starts"),
    );
    let pid = child.0.id().to_string();
    poll_until("the service to score", Duration::from_secs(60), || async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.contains("rcfd_records_scored_total{detector=\"iot-sensor\"}").then_some(())
    })
    .await;
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let status = poll_until("rcfd to exit", Duration::from_secs(30), || {
        let exited = child.0.try_wait().expect("waits");
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let store = EmbeddedStore::open(&store).expect("store");
    let key = ModelKey { detector: "iot-sensor".into(), entity: "DemoSensor-2".into() };
    assert!(store.get(&key).expect("read").is_some(), "models snapshotted before exit");
    assert!(store.journal_counts().expect("counts").events > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_charts_and_anomalies_in_a_real_browser() {
    let chromium = required_env("RCFD_TEST_CHROMIUM");
    let node_path = required_env("RCFD_TEST_NODE_PATH");
    let service = Service::start("[simulator]\nenabled = true\nrate = 200.0\n").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/live_page.cjs");
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let url = format!("http://{}/", service.http);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&url)
            .arg(&screenshot)
            .env("NODE_PATH", node_path)
            .env("RCFD_TEST_CHROMIUM", chromium)
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser check");
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser check failed:\n{text}");
    let seen: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("")).expect("the script reports JSON");
    assert_eq!(seen["charts"], 4, "one chart per simulated sensor: {seen}");
    let png = std::fs::metadata(&screenshot).expect("screenshot saved");
    assert!(png.len() > 20_000, "a screenshot with content: {} bytes", png.len());
    eprintln!("live page screenshot: {}", screenshot.display());
    let (_, path) = service.stop().await;
    let _ = std::fs::remove_file(path);
}
