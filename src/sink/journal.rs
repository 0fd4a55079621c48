//! The embedded store as a sink: scored events, alerts and dead letters, written in
//! batches (one transaction for whatever has queued up, so a burst costs one commit),
//! made durable (fsync) at most once per [`SYNC_EVERY`] and at shutdown, so a crash of
//! the machine loses at most that much of the journal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::queue::{Queued, Receiver};
use crate::service::telemetry::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::snapshot::StoreError;

/// Deliveries written in one transaction at most.
const MAX_DELIVERIES_PER_COMMIT: usize = 256;
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Writes `batch` in one transaction; its queue capacity is given back after.
fn write(store: &EmbeddedStore, batch: Vec<Queued>, keep: u64, durable: bool) -> Result<(), StoreError> {
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
    let written = store.append(&events, &alerts, &letters, keep, durable);
    drop(permits);
    // Only a written batch is acknowledged; a failed one drops its acks, which its
    // source sees as "not delivered".
    if written.is_ok() {
        for ack in acks {
            let _ = ack.send(());
        }
    }
    written
}

/// Writes deliveries until `drain` fires, then what is still queued, then returns.
pub async fn run(
    store: Arc<EmbeddedStore>,
    mut deliveries: Receiver,
    keep: u64,
    metrics: Arc<Metrics>,
    mut drain: oneshot::Receiver<()>,
) {
    let mut draining = false;
    let mut synced_at = tokio::time::Instant::now();
    let mut unsynced = false;
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
                report(tokio::task::spawn_blocking(move || store.sync()).await, &metrics);
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
        report(tokio::task::spawn_blocking(move || write(&store, batch, keep, durable)).await, &metrics);
        if durable {
            synced_at = tokio::time::Instant::now();
        }
        unsynced = !durable;
    }
    report(tokio::task::spawn_blocking(move || store.sync()).await, &metrics);
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
