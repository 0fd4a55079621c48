//! The embedded store as a sink: scored events, alerts and dead letters, written in
//! batches (one transaction for whatever has queued up, so a burst costs one commit),
//! made durable (fsync) at most once per [`SYNC_EVERY`] and at shutdown. A delivery is
//! acknowledged (and its source may checkpoint) only once it is durable, so a crash
//! loses only unacknowledged rows, which the source reads again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::dead_letter::DeadLetterTarget;
use super::queue::{Queued, Receiver};
use crate::event::DeadLetter;
use crate::service::telemetry::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::snapshot::StoreError;

/// Deliveries written in one transaction at most.
const MAX_DELIVERIES_PER_COMMIT: usize = 256;
/// Often enough that a source waiting for its acknowledgement (to checkpoint) is not
/// held back longer than a Kinesis poll interval; rarely enough that fsync is not the cost.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Writes `batch` in one transaction and returns its dead letters and acknowledgements
/// (to be sent once every sink has the batch).
fn write(
    store: &EmbeddedStore,
    batch: Vec<Queued>,
    keep: u64,
    durable: bool,
) -> Result<(Vec<DeadLetter>, Vec<oneshot::Sender<()>>), StoreError> {
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
    Ok((letters, acks))
}

/// Writes deliveries until `drain` fires, then what is still queued, then returns.
pub async fn run(
    store: Arc<EmbeddedStore>,
    mut deliveries: Receiver,
    keep: u64,
    metrics: Arc<Metrics>,
    dead_letters: Option<DeadLetterTarget>,
    mut drain: oneshot::Receiver<()>,
) {
    let mut draining = false;
    let mut synced_at = tokio::time::Instant::now();
    let mut unsynced = false;
    // Acknowledged only once durable: a source checkpoints on the ack, and a crash must
    // not lose journal rows whose records the source will not read again.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let next = tokio::select! {
            next = deliveries.recv() => next,
            _ = &mut drain, if !draining => {
                // Refuse new deliveries; the queued ones are still received below.
                deliveries.close();
                draining = true;
                continue;
            }
            _ = tokio::time::sleep_until(synced_at + SYNC_EVERY), if unsynced => {
                let store = store.clone();
                let synced = tokio::task::spawn_blocking(move || store.sync()).await;
                if matches!(synced, Ok(Ok(()))) {
                    waiting.drain(..).for_each(|ack| { let _ = ack.send(()); });
                }
                report(synced, &metrics);
                (synced_at, unsynced) = (tokio::time::Instant::now(), false);
                continue;
            }
        };
        let Some(first) = next else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_DELIVERIES_PER_COMMIT {
            match deliveries.try_recv() {
                Some(more) => batch.push(more),
                None => break,
            }
        }
        let durable = synced_at.elapsed() >= SYNC_EVERY;
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || write(&store, batch, keep, durable)).await;
        match written {
            Ok(Ok((letters, acks))) => {
                if let Some(target) = &dead_letters {
                    // The letters are in the journal already: a target that stays down
                    // is reported, not a reason to hold the source back.
                    if let Err(e) = target.send(&letters).await {
                        tracing::error!(error = %e, count = letters.len(), "sending dead letters failed; they stay in the journal");
                        metrics.error("dead_letters", "send_failed");
                    }
                }
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
    let synced = tokio::task::spawn_blocking(move || store.sync()).await;
    if matches!(synced, Ok(Ok(()))) {
        waiting.drain(..).for_each(|ack| {
            let _ = ack.send(());
        });
    }
    report(synced, &metrics);
}

/// Logs and counts a failed write; the events in it are lost to the journal only.
fn report(written: Result<Result<(), StoreError>, tokio::task::JoinError>, metrics: &Metrics) {
    let failure = match written {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %failure, "writing to the embedded store failed");
    metrics.error("store", "write_failed");
}
