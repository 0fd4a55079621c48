//! Where the test servers are, and a fresh name per test run so reruns against the
//! same long-lived servers never collide.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

const HOW_TO_START: &str = "start the servers with `scripts/test.sh` (runs all tests) \
    or `scripts/test.sh --servers` and export the variables it prints";

/// The value of a required endpoint variable; a missing one fails the test with a
/// message saying how to start the servers (never a silent skip).
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: this test needs a real server; {HOW_TO_START}"),
    }
}

/// The URL of the OpenSearch node.
pub fn opensearch_url() -> String {
    required_env("RCFD_TEST_OPENSEARCH_URL")
}

/// AWS configuration for one service. The SDK itself reads `AWS_ENDPOINT_URL_<SERVICE>`;
/// we only insist that it is set unless the run targets real AWS.
pub async fn aws_config(endpoint_var: &str) -> aws_config::SdkConfig {
    if std::env::var("RCFD_TEST_REAL_AWS").as_deref() != Ok("1") {
        required_env(endpoint_var);
    }
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// A port nothing listens on now, for a service started as a separate process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The answer of OpenSearch to a search of `index` with `body`, which must succeed on
/// every shard.
pub async fn search(client: &opensearch::OpenSearch, index: &str, body: &serde_json::Value) -> serde_json::Value {
    let response =
        client.search(opensearch::SearchParts::Index(&[index])).body(body.clone()).send().await.expect("search");
    let status = response.status_code();
    let answer: serde_json::Value = response.json().await.expect("json");
    assert!(status.is_success(), "OpenSearch refused the search {body}: {answer}");
    assert_eq!(answer["_shards"]["failed"], 0, "{answer}");
    answer
}

/// A name unique to this process and call, e.g. `rcfd-smoke-1a2b3c-0`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{:x}{:x}-{}", std::process::id(), nanos % 0xffff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The service's `/metrics`, as metric (with labels) -> value.
pub async fn metrics(http: std::net::SocketAddr) -> Option<std::collections::HashMap<String, f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
            .collect(),
    )
}

/// Creates a stream of `shards` shards and waits until it is active.
pub async fn active_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    kinesis.create_stream().stream_name(stream).shard_count(shards).send().await.expect("CreateStream");
    wait_active(kinesis, stream).await;
}

pub async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) {
    poll_until("the stream to be active", Duration::from_secs(30), || async {
        let d = kinesis.describe_stream_summary().stream_name(stream).send().await.ok()?;
        (d.stream_description_summary?.stream_status == aws_sdk_kinesis::types::StreamStatus::Active).then_some(())
    })
    .await;
}

/// The checkpoint of every shard lease in `table` that has one: shard -> sequence.
pub async fn checkpoints(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> std::collections::HashMap<String, String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let scanned = dynamodb.scan().table_name(table).consistent_read(true).send().await;
    let items = scanned.ok().and_then(|s| s.items).unwrap_or_default();
    items
        .iter()
        .filter_map(|i| match (i.get("leaseKey"), i.get("checkpoint")) {
            (Some(AttributeValue::S(k)), Some(AttributeValue::S(c))) => Some((k.clone(), c.clone())),
            _ => None,
        })
        .collect()
}

/// A new SQS queue subscribed to `topic`; returns its URL.
pub async fn subscribed_queue(sns: &aws_sdk_sns::Client, sqs: &aws_sdk_sqs::Client, topic: &str, name: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let queue = sqs.create_queue().queue_name(name).send().await.expect("CreateQueue").queue_url.expect("queue URL");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("queue ARN");
    sns.subscribe().topic_arn(topic).protocol("sqs").endpoint(&queue_arn).send().await.expect("Subscribe");
    queue
}

/// Puts `entries` in PutRecords calls of 500 (the API's limit per call) and gives each
/// record's (shard, sequence number), in order.
pub async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &[aws_sdk_kinesis::types::PutRecordsRequestEntry],
) -> Vec<(String, String)> {
    let mut positions = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(500) {
        let put = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(put.failed_record_count, Some(0), "every record put");
        for r in put.records {
            let (Some(shard), Some(sequence)) = (r.shard_id, r.sequence_number) else {
                panic!("a put record has a position")
            };
            positions.push((shard, sequence));
        }
    }
    positions
}

/// The last sequence number of each shard among `positions` (sequence numbers are
/// decimal strings: longer is later, then by digits).
pub fn last_per_shard(positions: &[(String, String)]) -> std::collections::HashMap<String, String> {
    let mut last = std::collections::HashMap::new();
    for (shard, sequence) in positions {
        let later = |s: &String| (sequence.len(), sequence) > (s.len(), s);
        if last.get(shard).is_none_or(later) {
            last.insert(shard.clone(), sequence.clone());
        }
    }
    last
}

/// rcfd's service run inside the test on ports the OS picks (gRPC and HTTP), stopped
/// through its shutdown future like SIGTERM would.
pub struct InProcess {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts the service with a whole configuration file's text.
    pub async fn start(text: &str) -> InProcess {
        let config = rcfd::service::config::Config::from_toml_with_env(text, Vec::new())
            .expect("config parses")
            .validate()
            .expect("config is valid");
        Self::start_validated(config).await
    }

    pub async fn start_validated(config: rcfd::service::config::ServiceConfig) -> InProcess {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let (grpc_address, http_address) = (grpc.local_addr().expect("address"), http.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = rcfd::service::Listeners { grpc, http: Some(http) };
        let task = tokio::spawn(rcfd::service::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        InProcess { grpc: grpc_address, http: http_address, stop, task }
    }

    /// A channel to its gRPC API.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }

    /// Stops it (stop intake, drain, snapshot) and expects a clean exit.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("service task").expect("service stops cleanly");
    }
}

/// A child process (`rcfd serve`, usually) that is killed when dropped, also when a
/// test fails: a child left running would hold the test's output pipe open.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `host:port` of an endpoint URL such as `http://127.0.0.1:9200`, to relay to it.
pub fn host_port(url: &str) -> String {
    let parsed = opensearch::http::Url::parse(url).expect("an endpoint URL");
    format!("{}:{}", parsed.host_str().expect("a host"), parsed.port_or_known_default().expect("a port"))
}

/// A relay to `target` that can be switched off (connections refused and cut).
pub struct Relay {
    pub address: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (flag, open) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut open) = open.lock() {
                    open.push(relay);
                }
            }
        });
        Relay { address, up, connections }
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut open) = self.connections.lock() {
            open.drain(..).for_each(|c| c.abort());
        }
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
