//! The embedded store as a sink: scored events, alerts and dead letters, written in
//! batches (one transaction for whatever has queued up, so a burst costs one commit).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::service::scorer::Delivery;
use crate::service::telemetry::Metrics;
use crate::store::embedded::EmbeddedStore;
use crate::store::snapshot::StoreError;

/// Deliveries written in one transaction at most.
const MAX_DELIVERIES_PER_COMMIT: usize = 256;

fn write(store: &EmbeddedStore, deliveries: &[Delivery], keep: u64) -> Result<(), StoreError> {
    let events: Vec<_> = deliveries.iter().flat_map(|d| d.events.iter().cloned()).collect();
    let alerts: Vec<_> = deliveries.iter().flat_map(|d| d.alerts.iter().cloned()).collect();
    let letters: Vec<_> = deliveries.iter().flat_map(|d| d.dead_letters.iter().cloned()).collect();
    store.append_events(&events, &alerts, keep)?;
    if !letters.is_empty() {
        store.append_dead_letters(&letters, keep)?;
    }
    Ok(())
}

/// Writes deliveries until `drain` fires, then what is still queued, then returns.
pub async fn run(
    store: Arc<EmbeddedStore>,
    mut deliveries: mpsc::Receiver<Delivery>,
    keep: u64,
    metrics: Arc<Metrics>,
    mut drain: oneshot::Receiver<()>,
) {
    let mut draining = false;
    loop {
        let next = tokio::select! {
            next = deliveries.recv() => next,
            _ = &mut drain, if !draining => {
                // Refuse new deliveries; the queued ones are still received below.
                deliveries.close();
                draining = true;
                continue;
            }
        };
        let Some(first) = next else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_DELIVERIES_PER_COMMIT {
            match deliveries.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || write(&store, &batch, keep)).await;
        let failure = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(error = %failure, "writing scored events to the embedded store failed");
        metrics.error("store", "write_failed");
    }
}
