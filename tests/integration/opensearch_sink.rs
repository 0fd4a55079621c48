//! The OpenSearch sink against the real node: every scored record becomes one document
//! in its daily index (through the alias), ids make a resend overwrite, the injected
//! anomalies are the top-scoring documents, and a document OpenSearch refuses (a
//! mapping conflict) becomes a dead letter with the reason. With several node URLs, one
//! that refuses connections is passed over; a retention policy on a cluster without
//! the ISM plugin is a warning, not a failure. A node behind TLS with a private CA is
//! trusted through `ca_file`, and only then.

use opensearch::http::transport::Transport;
use opensearch::indices::{IndicesCreateParts, IndicesGetIndexTemplateParts, IndicesRefreshParts};
use opensearch::{CountParts, OpenSearch};
use rcfd::service::config::{Config, ServiceConfig, SimulatorConfig};
use rcfd::source::grpc::proto::{self, detectors_client::DetectorsClient, scoring_client::ScoringClient};
use rcfd::source::simulator::Readings;
use rcfd::store::embedded::EmbeddedStore;
use serde_json::{json, Value};

use crate::servers::{host_port, opensearch_url, search, unique_name, InProcess};

const DAY: i64 = 1_700_000_000_000; // 2023-11-14
const CONFLICT_DAY: i64 = 1_577_836_800_000; // 2020-01-01

fn record(entity: &str, t: i64, value: f64, id: &str) -> proto::Record {
    proto::Record {
        detector: "sensor".into(),
        entity: entity.into(),
        event_time_ms: t,
        values: [("iotValue".to_owned(), value)].into_iter().collect(),
        id: id.into(),
    }
}

/// The service with `config` and a `sensor` detector (feature `iotValue`), and a
/// scoring client.
async fn sensor_service(config: ServiceConfig) -> (InProcess, ScoringClient<tonic::transport::Channel>) {
    let service = InProcess::start_validated(config).await;
    let channel = service.channel().await;
    let detector = "name = \"sensor\"\nentity_key = [\"iotName\"]\nfeatures = [\"iotValue\"]\n";
    DetectorsClient::new(channel.clone())
        .create_detector(proto::CreateDetectorRequest { config_toml: detector.into() })
        .await
        .expect("detector");
    (service, ScoringClient::new(channel))
}

/// The `_count` answer for the indices under `prefix`, after a refresh.
async fn documents(client: &OpenSearch, prefix: &str) -> Value {
    client.indices().refresh(IndicesRefreshParts::Index(&[prefix])).send().await.expect("refresh");
    client.count(CountParts::Index(&[prefix])).send().await.expect("count").json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scored_record_is_one_document_and_refused_ones_are_dead_letters() {
    let url = opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let prefix = unique_name("rcfd-events").to_lowercase();
    // A day whose index maps the feature as a boolean: its document must be refused.
    let conflict = format!("{prefix}-2020.01.01");
    let created = client
        .indices()
        .create(IndicesCreateParts::Index(&conflict))
        .body(json!({"mappings": {"properties": {"values": {"properties": {"iotValue": {"type": "boolean"}}}}}}))
        .send()
        .await
        .expect("create");
    assert!(created.status_code().is_success(), "{}", created.text().await.unwrap_or_default());

    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-os")));
    let text = format!(
        "[store]\npath = '{}'\n[opensearch]\nurl = '{url}'\nindex_prefix = '{prefix}'\nmax_bulk_bytes = 20000\n",
        store.display()
    );
    let config = Config::from_toml_with_env(&text, Vec::new()).expect("parses").validate().expect("valid");
    let (service, mut scoring) = sensor_service(config).await;

    let mut readings = Readings::new(&SimulatorConfig { sensors: 1, wave: false, seed: 5, ..Default::default() });
    let mut injected = 0;
    for batch in 0..4 {
        let records: Vec<proto::Record> = (0..500)
            .map(|i| {
                let (_, value, anomaly) = readings.next_tick().remove(0);
                let n = batch * 500 + i;
                injected += usize::from(anomaly && n >= 500);
                record("DemoSensor", DAY + n as i64 * 1_000, value, &format!("demo-{n}"))
            })
            .collect();
        scoring.score(proto::ScoreRequest { records }).await.expect("scored");
    }
    // Resent with the same ids: overwritten, not duplicated.
    let again: Vec<proto::Record> =
        (0..5).map(|n| record("Resent", DAY + n * 1_000, 15.0, &format!("resent-{n}"))).collect();
    scoring.score(proto::ScoreRequest { records: again.clone() }).await.expect("scored");
    let again: Vec<proto::Record> =
        again.into_iter().map(|r| proto::Record { event_time_ms: r.event_time_ms + 10_000, ..r }).collect();
    scoring.score(proto::ScoreRequest { records: again }).await.expect("scored");
    scoring
        .score(proto::ScoreRequest { records: vec![record("Conflict", CONFLICT_DAY, 15.0, "conflict-0")] })
        .await
        .expect("scored");
    service.stop().await;

    let count = documents(&client, &prefix).await;
    assert_eq!(count["count"], 2_000 + 5, "one document per record, the resent ones overwritten: {count}");
    let query =
        json!({"size": injected, "sort": [{"anomaly_score": "desc"}], "query": {"term": {"entity": "DemoSensor"}}});
    let top = search(&client, &prefix, &query).await;
    let hits = top["hits"]["hits"].as_array().expect("hits");
    assert!(injected > 5 && hits.len() == injected, "{injected} injected");
    assert!(
        hits.iter().all(|h| h["_source"]["values"]["iotValue"].as_f64().is_some_and(|v| v >= 100.0)),
        "the top-scoring documents are the injected anomalies"
    );
    assert!(hits.iter().all(|h| h["_index"].as_str().is_some_and(|i| i.ends_with("-2023.11.14"))), "daily index");
    let template: Value = client
        .indices()
        .get_index_template(IndicesGetIndexTemplateParts::Name(&[&prefix]))
        .send()
        .await
        .expect("template")
        .json()
        .await
        .expect("json");
    let mappings = &template["index_templates"][0]["index_template"]["template"]["mappings"]["properties"];
    assert_eq!(mappings["anomaly_score"]["type"], "float", "{template}");
    assert_eq!(mappings["entity"]["type"], "keyword");

    let journal = EmbeddedStore::open(&store).expect("store");
    let letters = journal.recent_dead_letters(10).expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].reason.contains("conflict-0") && letters[0].reason.contains("mapper_parsing_exception"),
        "{letters:?}"
    );
    let _ = std::fs::remove_file(&store);
    let _ =
        client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[&format!("{prefix}-*")])).send().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_be_reached_is_passed_over_and_every_document_arrives() {
    let url = opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let prefix = unique_name("rcfd-nodes").to_lowercase();
    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-nodes")));
    // Ports 1 and 2 refuse connections. The first node is tried for the index template
    // (and passed over); the third is still up when the _bulk requests come round to
    // it, so a _bulk fails over too. Batches are small, so many requests are sent.
    let text = format!(
        "[store]\npath = '{}'\n[opensearch]\nurls = ['http://127.0.0.1:1', '{url}', 'http://127.0.0.1:2']\n\
         index_prefix = '{prefix}'\n",
        store.display()
    );
    let config = Config::from_toml_with_env(&text, Vec::new()).expect("parses").validate().expect("valid");
    assert_eq!(config.opensearch_nodes.len(), 3);
    let (service, mut scoring) = sensor_service(config).await;
    let mut readings = Readings::new(&SimulatorConfig { sensors: 1, wave: false, seed: 7, ..Default::default() });
    for batch in 0..20 {
        let records: Vec<proto::Record> = (0..50)
            .map(|i| {
                let (_, value, _) = readings.next_tick().remove(0);
                let n = batch * 50 + i;
                record("DemoSensor", DAY + n as i64 * 1_000, value, &format!("node-{n}"))
            })
            .collect();
        scoring.score(proto::ScoreRequest { records }).await.expect("scored");
    }
    service.stop().await;

    let count = documents(&client, &prefix).await;
    assert_eq!(count["count"], 1_000, "every document through the node that answers: {count}");
    let journal = EmbeddedStore::open(&store).expect("store");
    let letters = journal.recent_dead_letters(10).expect("letters");
    assert!(letters.is_empty(), "nothing refused: {letters:?}");
    drop(journal);
    let _ = std::fs::remove_file(&store);
    let _ =
        client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[&format!("{prefix}-*")])).send().await;
}

/// The node here has no ISM plugin (see INFRA.md), so only this path is tested against
/// a real server; installing the policy on a cluster with the plugin is tested on
/// canned answers only (`src/sink/opensearch/retention.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_days_without_the_ism_plugin_is_a_warning_not_a_failure() {
    use rcfd::sink::opensearch::config::OpenSearchConfig;
    use rcfd::sink::opensearch::retention::{self, Outcome};
    use rcfd::sink::opensearch::sink::OpenSearchSink;
    let url = opensearch_url();
    let prefix = unique_name("rcfd-retention").to_lowercase();
    let config = OpenSearchConfig {
        url: Some(url.clone()),
        index_prefix: prefix.clone(),
        retention_days: Some(30),
        ..OpenSearchConfig::default()
    };
    let nodes = config.validate().expect("valid");
    let sink = OpenSearchSink::connect(&config, &nodes, None).await.expect("starts without the plugin");
    assert!(sink.is_some(), "the sink is there");
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    assert_eq!(retention::install(&client, &prefix, 30).await, Outcome::NoPlugin);
}

/// Terminates TLS with `cert`/`key` and relays the plain bytes to `target` (the real
/// node, which the test servers run without TLS), so the sink's TLS and CA handling
/// meet a real OpenSearch on the other side.
async fn tls_front(target: String, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> std::net::SocketAddr {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake here.
                let Ok(mut client) = acceptor.accept(client).await else { return };
                if let Ok(mut node) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_tls_with_a_private_ca_is_trusted_through_ca_file_only() {
    let url = opensearch_url();
    let client = OpenSearch::new(Transport::single_node(&url).expect("url"));
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let front = tls_front(host_port(&url), &cert).await;
    let dir = std::env::temp_dir().join(unique_name("rcfd-os-ca"));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, cert.cert.pem()).expect("write the CA");
    let prefix = unique_name("rcfd-tls").to_lowercase();
    let config = |ca: &str| {
        let text = format!(
            "[store]\npath = '{}'\n[opensearch]\nurl = 'https://localhost:{}'\nindex_prefix = '{prefix}'\n{ca}",
            dir.join(format!("{}.redb", unique_name("journal"))).display(),
            front.port()
        );
        Config::from_toml_with_env(&text, Vec::new()).expect("parses").validate().expect("valid")
    };

    // Without the CA the certificate is refused, so the service does not start.
    let listeners = || async {
        rcfd::service::Listeners { grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"), http: None }
    };
    let refused = rcfd::service::run(config(""), listeners().await, std::future::pending()).await;
    let error = format!("{:#}", refused.expect_err("a node whose certificate is not trusted"));
    assert!(error.contains("no node answered"), "{error}");

    // With it, every record scored becomes a document in the real node.
    let (service, mut scoring) = sensor_service(config(&format!("ca_file = '{}'\n", ca_file.display()))).await;
    let records: Vec<proto::Record> =
        (0..300).map(|n| record("TlsSensor", DAY + n * 1_000, 10.0 + (n % 7) as f64, &format!("tls-{n}"))).collect();
    scoring.score(proto::ScoreRequest { records }).await.expect("scored");
    service.stop().await;

    let count = documents(&client, &prefix).await;
    assert_eq!(count["count"], 300, "every document through the TLS front: {count}");
    let _ =
        client.indices().delete(opensearch::indices::IndicesDeleteParts::Index(&[&format!("{prefix}-*")])).send().await;
    let _ = std::fs::remove_dir_all(&dir);
}
