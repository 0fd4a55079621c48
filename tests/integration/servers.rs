//! Where the test servers are, and a fresh name per test run so reruns against the
//! same long-lived servers never collide.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
