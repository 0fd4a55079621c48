//! SNS alerts survive an outage: while the topic cannot be published to, alerts wait in
//! the embedded store; once it answers, they go out (oldest first) with the new ones.

use std::time::Duration;

use rcfd::source::grpc::proto::{self, detectors_client::DetectorsClient, scoring_client::ScoringClient};

use crate::servers::{aws_config, metrics, poll_until, subscribed_queue, unique_name, InProcess};

/// 300 ordinary readings of `entity`, then a spike: one anomaly region, one alert.
fn readings_with_a_spike(entity: &str, start: i64) -> Vec<proto::Record> {
    (0..301)
        .map(|i| proto::Record {
            detector: "sensor".into(),
            entity: entity.into(),
            event_time_ms: start + i * 1_000,
            values: [("iotValue".to_owned(), if i == 300 { 500.0 } else { 10.0 + (i % 7) as f64 })]
                .into_iter()
                .collect(),
            id: String::new(),
        })
        .collect()
}

/// The `entity` attribute of every alert `queue` receives, polled until `enough`.
async fn alerted_entities(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    what: &str,
    enough: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    poll_until(what, Duration::from_secs(30), || {
        let (sqs, queue, got, enough) = (sqs.clone(), queue.to_owned(), received.clone(), &enough);
        async move {
            let batch = sqs.receive_message().queue_url(&queue).max_number_of_messages(10).send().await.ok()?;
            let mut got = got.lock().ok()?;
            for message in batch.messages.unwrap_or_default() {
                let envelope: serde_json::Value = serde_json::from_str(message.body.as_deref().unwrap_or("")).ok()?;
                got.push(envelope["MessageAttributes"]["entity"]["Value"].as_str().unwrap_or("").to_owned());
            }
            enough(&got).then_some(())
        }
    })
    .await;
    received.lock().map(|e| e.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_wait_in_the_store_while_sns_is_down_and_none_is_lost() {
    let aws = aws_config("AWS_ENDPOINT_URL_SNS").await;
    aws_config("AWS_ENDPOINT_URL_SQS").await;
    let (sns, sqs) = (aws_sdk_sns::Client::new(&aws), aws_sdk_sqs::Client::new(&aws));
    let name = unique_name("rcfd-outage");
    // The topic does not exist yet: publishing fails as if SNS were down.
    let region = aws.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
    let topic = format!("arn:aws:sns:{region}:123456789012:{name}");
    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-outage")));
    let text = format!(
        "[store]\npath = '{}'\n[sns]\ntopic_arn = '{topic}'\ncooldown_ms = 0\nspool_retry_ms = 600000\n",
        store.display()
    );
    let service = InProcess::start(&text).await;
    let (channel, http_address) = (service.channel().await, service.http);
    DetectorsClient::new(channel.clone())
        .create_detector(proto::CreateDetectorRequest {
            config_toml: "name = \"sensor\"\nentity_key = [\"id\"]\nfeatures = [\"iotValue\"]\n".into(),
        })
        .await
        .expect("detector");
    let mut scoring = ScoringClient::new(channel);
    for entity in ["pump-1", "pump-2"] {
        scoring
            .score(proto::ScoreRequest { records: readings_with_a_spike(entity, 1_700_000_000_000) })
            .await
            .expect("scored");
    }

    // Both alerts are in the spool before SNS comes back (a topic without its queue
    // subscribed yet would swallow them).
    poll_until("two alerts spooled", Duration::from_secs(30), || async {
        let spooled =
            metrics(http_address).await?.get("rcfd_errors_total{stage=\"sns\",error_type=\"spooled\"}").copied()?;
        (spooled >= 2.0).then_some(())
    })
    .await;
    // SNS comes back: the topic exists and a queue listens.
    let created = sns.create_topic().name(&name).send().await.expect("CreateTopic").topic_arn.expect("arn");
    assert_eq!(created, topic, "moto's ARN scheme");
    let queue = subscribed_queue(&sns, &sqs, &topic, &name).await;
    scoring
        .score(proto::ScoreRequest { records: readings_with_a_spike("pump-3", 1_700_000_000_000) })
        .await
        .expect("scored");

    let mut entities = alerted_entities(&sqs, &queue, "the spooled alerts and the new one", |got| got.len() >= 3).await;
    entities.sort();
    assert_eq!(entities, vec!["pump-1", "pump-2", "pump-3"], "no alert lost in the outage, none twice");
    service.stop().await;
    let _ = std::fs::remove_file(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_sns_refuses_for_good_is_a_dead_letter_and_the_others_still_go_out() {
    let aws = aws_config("AWS_ENDPOINT_URL_SNS").await;
    aws_config("AWS_ENDPOINT_URL_SQS").await;
    let (sns, sqs) = (aws_sdk_sns::Client::new(&aws), aws_sdk_sqs::Client::new(&aws));
    let name = unique_name("rcfd-refused");
    let topic = sns.create_topic().name(&name).send().await.expect("CreateTopic").topic_arn.expect("arn");
    let queue = subscribed_queue(&sns, &sqs, &topic, &name).await;
    let store = std::env::temp_dir().join(format!("{}.redb", unique_name("rcfd-refused")));
    let text = format!(
        "[store]\npath = '{}'\n[sns]\ntopic_arn = '{topic}'\ncooldown_ms = 0\nspool_retry_ms = 500\n",
        store.display()
    );
    let service = InProcess::start(&text).await;
    let (channel, http_address) = (service.channel().await, service.http);
    DetectorsClient::new(channel.clone())
        .create_detector(proto::CreateDetectorRequest {
            config_toml:
                "name = \"sensor\"\nentity_key = [\"id\"]\nfeatures = [\"iotValue\"]\n[forest]\nsample_size = 32\n"
                    .into(),
        })
        .await
        .expect("detector");
    // An entity name this long makes the alert's message larger than SNS's 256 KiB:
    // SNS refuses that message for good, however often it is sent.
    let huge = "h".repeat(100_000);
    let mut scoring = ScoringClient::new(channel);
    for entity in [huge.as_str(), "pump-ok"] {
        let records: Vec<proto::Record> = readings_with_a_spike(entity, 1_700_000_000_000).split_off(240);
        for chunk in records.chunks(20) {
            scoring.score(proto::ScoreRequest { records: chunk.to_vec() }).await.expect("scored");
        }
    }
    let received =
        alerted_entities(&sqs, &queue, "the other entity's alert", |got| got.contains(&"pump-ok".to_owned())).await;
    // The spool retries a few times meanwhile: a refused alert must not block it or
    // come back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = metrics(http_address).await.expect("metrics");
    let refused = m.get("rcfd_errors_total{stage=\"sns\",error_type=\"refused\"}").copied().unwrap_or(0.0);
    let spooled = m.get("rcfd_errors_total{stage=\"sns\",error_type=\"spooled\"}").copied().unwrap_or(0.0);
    service.stop().await;
    assert_eq!((refused, spooled), (1.0, 0.0), "one alert refused, none spooled");
    assert_eq!(received, vec!["pump-ok".to_owned()], "the other alert, once");
    let journal = rcfd::store::embedded::EmbeddedStore::open(&store).expect("store");
    let letters: Vec<_> =
        journal.recent_dead_letters(10).expect("letters").into_iter().filter(|l| l.origin == "sns").collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].reason.contains("SNS refused the alert") && letters[0].reason.contains("too long"));
    let alert: rcfd::event::Alert = serde_json::from_slice(&letters[0].raw).expect("the alert, as JSON");
    assert_eq!(alert.event.entity, huge);
    let _ = std::fs::remove_file(&store);
}
