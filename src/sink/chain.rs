//! The sinks, in order, for each batch that has queued up: the embedded store's journal
//! (scored events, alerts and dead letters; one transaction for whatever has queued
//! up, so a burst costs one commit), then OpenSearch (what it refuses for good becomes
//! a dead letter), then SNS alerts, then the dead-letter target. The journal is
//! made durable (fsync) at most once per [`SYNC_EVERY`] and at shutdown. A delivery is
//! acknowledged (and its source may checkpoint) only once it is durable, so a crash
//! loses only unacknowledged rows, which the source reads again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::dead_letter::DeadLetterTarget;
use super::opensearch::sink::OpenSearchSink;
use super::queue::{Queued, Receiver};
use super::sns::SnsSink;
use super::writer::{Writer, WriterGone};
use crate::event::{Alert, DeadLetter, ScoredEvent};
use crate::service::telemetry::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::snapshot::StoreError;

/// Deliveries written in one transaction at most.
const MAX_DELIVERIES_PER_COMMIT: usize = 256;
/// A commit costs about half a millisecond of CPU however little it holds (redb's page
/// management), so a commit per unary call or two kept one of two cores busy with the
/// journal at 12k calls/s, and every call waited for the other core. A small batch
/// waits this long for more deliveries to join it; replies do not wait for the journal.
/// Unary p99 at 14k calls/s (`cargo bench --bench grpc`): 5 ms 0.84-1.47 ms (four
/// runs), 20 ms 0.68-1.09 ms (sixteen), 50 ms with 1,024 deliveries a commit 1.34-2.50 ms
/// (four): a commit of hundreds of events holds a core for milliseconds.
const LINGER: Duration = Duration::from_millis(20);
/// ... unless it holds this many records already (a batch `Score`, a Kinesis batch).
const RECORDS_WITHOUT_LINGER: usize = 1_000;
/// Often enough that a source waiting for its acknowledgement (to checkpoint) is not
/// held back longer than a Kinesis poll interval; rarely enough that fsync is not the cost.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// A batch as the sinks after the journal get it.
struct Written {
    events: Vec<ScoredEvent>,
    alerts: Vec<Alert>,
    letters: Vec<DeadLetter>,
    acks: Vec<oneshot::Sender<()>>,
}

/// Writes `batch` in one transaction and returns it for the other sinks, with the
/// acknowledgements to send once every sink has it.
fn write(store: &EmbeddedStore, batch: Vec<Queued>, keep: u64, durable: bool) -> Result<Written, StoreError> {
    let (mut events, mut alerts, mut letters, mut permits, mut acks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for queued in batch {
        let (delivery, permit) = queued.into_parts();
        events.extend(delivery.events);
        alerts.extend(delivery.alerts);
        letters.extend(delivery.dead_letters);
        permits.push(permit);
        acks.extend(delivery.ack);
    }
    store.append(&events, &alerts, &letters, keep, durable)?;
    drop(permits);
    Ok(Written { events, alerts, letters, acks })
}

/// The sinks a batch goes through, in this order.
pub struct Sinks {
    pub store: Arc<EmbeddedStore>,
    /// Where the journal's commits and syncs run (see `writer`).
    pub writer: Writer,
    /// Journal rows kept (each of events, alerts, dead letters).
    pub keep: u64,
    pub opensearch: Option<OpenSearchSink>,
    pub sns: Option<SnsSink>,
    pub dead_letters: Option<DeadLetterTarget>,
    pub metrics: Arc<Metrics>,
}

/// Alerts SNS refused for good, as dead letters (the alert as JSON).
fn refused_alerts(refused: Vec<(Alert, String)>) -> Vec<DeadLetter> {
    refused
        .into_iter()
        .map(|(alert, reason)| DeadLetter {
            origin: "sns".into(),
            source: alert.event.source.clone(),
            raw: serde_json::to_vec(&alert).unwrap_or_default(),
            reason: format!("the alert for event {}: {reason}", alert.event.id),
            at_ms: crate::event::now_ms(),
        })
        .collect()
}

/// Journals dead letters that arose in the sinks, after their batch was written.
async fn keep_letters(
    store: &Arc<EmbeddedStore>,
    writer: &Writer,
    keep: u64,
    letters: Vec<DeadLetter>,
    metrics: &Metrics,
) {
    let store = store.clone();
    report(writer.run(move || store.append(&[], &[], &letters, keep, false)).await, metrics);
}

/// Sends dead letters to the configured target, if any. They are in the journal
/// already: a target that stays down is reported, not a reason to hold the source back.
async fn send_letters(target: Option<&DeadLetterTarget>, letters: &[DeadLetter], metrics: &Metrics) {
    if let Some(target) = target {
        if let Err(e) = target.send(letters).await {
            tracing::error!(error = %e, count = letters.len(), "sending dead letters failed; they stay in the journal");
            metrics.error("dead_letters", "send_failed");
        }
    }
}

/// Hands deliveries to the sinks until `drain` fires, then what is still queued, then
/// returns.
pub async fn run(sinks: Sinks, mut deliveries: Receiver, mut drain: oneshot::Receiver<()>) {
    let Sinks { store, writer, keep, opensearch, mut sns, dead_letters, metrics } = sinks;
    let mut draining = false;
    let mut synced_at = tokio::time::Instant::now();
    let mut unsynced = false;
    // Acknowledged only once durable: a source checkpoints on the ack, and a crash must
    // not lose journal rows whose records the source will not read again.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    // Spooled alerts also go out when no new batch comes to carry them.
    let mut spool_check = tokio::time::interval(sns.as_ref().map_or(Duration::from_secs(3600), SnsSink::spool_retry));
    loop {
        let next = tokio::select! {
            _ = spool_check.tick(), if sns.is_some() => {
                if let Some(sns) = sns.as_mut() {
                    let refused = refused_alerts(sns.send(&[]).await);
                    if !refused.is_empty() {
                        keep_letters(&store, &writer, keep, refused.clone(), &metrics).await;
                        send_letters(dead_letters.as_ref(), &refused, &metrics).await;
                    }
                }
                continue;
            }
            next = deliveries.recv() => next,
            _ = &mut drain, if !draining => {
                // Refuse new deliveries; the queued ones are still received below.
                deliveries.close();
                draining = true;
                continue;
            }
            _ = tokio::time::sleep_until(synced_at + SYNC_EVERY), if unsynced => {
                let store = store.clone();
                let synced = writer.run(move || store.sync()).await;
                if matches!(synced, Ok(Ok(()))) {
                    waiting.drain(..).for_each(|ack| { let _ = ack.send(()); });
                }
                report(synced, &metrics);
                (synced_at, unsynced) = (tokio::time::Instant::now(), false);
                continue;
            }
        };
        let Some(first) = next else { break };
        let mut records = first.records();
        let mut batch = vec![first];
        let linger_until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_DELIVERIES_PER_COMMIT {
            let more = match deliveries.try_recv() {
                Some(more) => more,
                None if draining || records >= RECORDS_WITHOUT_LINGER => break,
                None => match tokio::time::timeout_at(linger_until, deliveries.recv()).await {
                    Ok(Some(more)) => more,
                    // Closed (draining), or nothing more came in time.
                    Ok(None) | Err(_) => break,
                },
            };
            records += more.records();
            batch.push(more);
        }
        let durable = synced_at.elapsed() >= SYNC_EVERY;
        let writing = store.clone();
        let written = writer.run(move || write(&writing, batch, keep, durable)).await;
        match written {
            Ok(Ok(Written { events, alerts, mut letters, acks })) => {
                if let Some(opensearch) = &opensearch {
                    let refused = opensearch.send(&events).await;
                    if !refused.is_empty() {
                        metrics.error("opensearch", "refused");
                        let refused: Vec<DeadLetter> = refused
                            .into_iter()
                            .map(|(i, reason)| DeadLetter {
                                origin: "opensearch".into(),
                                source: events[i].source.clone(),
                                raw: serde_json::to_vec(&events[i]).unwrap_or_default(),
                                reason: format!("OpenSearch refused the event {}: {reason}", events[i].id),
                                at_ms: crate::event::now_ms(),
                            })
                            .collect();
                        keep_letters(&store, &writer, keep, refused.clone(), &metrics).await;
                        letters.extend(refused);
                    }
                }
                if let Some(sns) = sns.as_mut() {
                    let refused = refused_alerts(sns.send(&alerts).await);
                    if !refused.is_empty() {
                        keep_letters(&store, &writer, keep, refused.clone(), &metrics).await;
                        letters.extend(refused);
                    }
                }
                send_letters(dead_letters.as_ref(), &letters, &metrics).await;
                waiting.extend(acks);
                if durable {
                    waiting.drain(..).for_each(|ack| {
                        let _ = ack.send(());
                    });
                }
            }
            // Not acknowledged: the acks are dropped, which the source sees as "not delivered".
            Ok(Err(e)) => report(Ok(Err(e)), &metrics),
            Err(e) => report(Err(e), &metrics),
        }
        if durable {
            synced_at = tokio::time::Instant::now();
        }
        unsynced = !durable;
    }
    let synced = writer.run(move || store.sync()).await;
    if matches!(synced, Ok(Ok(()))) {
        waiting.drain(..).for_each(|ack| {
            let _ = ack.send(());
        });
    }
    report(synced, &metrics);
}

/// Logs and counts a failed write; the events in it are lost to the journal only.
fn report(written: Result<Result<(), StoreError>, WriterGone>, metrics: &Metrics) {
    let failure = match written {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %failure, "writing to the embedded store failed");
    metrics.error("store", "write_failed");
}
