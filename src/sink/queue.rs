//! The queue from the scorer to the sinks, bounded by records rather than by
//! deliveries: a delivery holds one record (unary gRPC) or thousands (a batch), and
//! only a bound in records keeps both memory bounded and short stalls of a sink (an
//! fsync) absorbed. A sender waits while the sinks hold `capacity` records.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::service::scorer::Delivery;

/// Records the sinks may have queued by default.
pub const DEFAULT_CAPACITY: u32 = 100_000;

/// A delivery with its share of the queue's capacity, given back when it is dropped
/// (after the sink wrote it).
pub struct Queued {
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
}

impl Queued {
    /// The records it holds: scored events and dead letters.
    pub fn records(&self) -> usize {
        self.delivery.events.len() + self.delivery.dead_letters.len()
    }

    /// The delivery, and its capacity to drop once it is written.
    pub fn into_parts(self) -> (Delivery, OwnedSemaphorePermit) {
        (self.delivery, self.permit)
    }
}

pub struct Sender {
    deliveries: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    capacity: u32,
}

pub struct Receiver {
    deliveries: mpsc::UnboundedReceiver<Queued>,
}

pub fn queue(capacity: u32) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Sender { deliveries: tx, budget: Arc::new(Semaphore::new(capacity as usize)), capacity },
        Receiver { deliveries: rx },
    )
}

impl Sender {
    /// Queues `delivery`, waiting while the sinks are full; gives it back if they are gone.
    pub async fn send(&self, delivery: Delivery) -> Result<(), Delivery> {
        let records = delivery.events.len() + delivery.dead_letters.len();
        // A delivery larger than the whole capacity takes all of it.
        let wanted = u32::try_from(records).unwrap_or(u32::MAX).clamp(1, self.capacity);
        let Ok(permit) = self.budget.clone().acquire_many_owned(wanted).await else {
            return Err(delivery);
        };
        self.deliveries.send(Queued { delivery, permit }).map_err(|e| e.0.delivery)
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Queued> {
        self.deliveries.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Queued> {
        self.deliveries.try_recv().ok()
    }

    /// Refuses new deliveries; those already queued can still be received.
    pub fn close(&mut self) {
        self.deliveries.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeadLetter;

    fn delivery(records: usize) -> Delivery {
        let letter = DeadLetter { origin: "t".into(), source: None, raw: Vec::new(), reason: String::new(), at_ms: 0 };
        Delivery { dead_letters: vec![letter; records], ..Delivery::default() }
    }

    #[tokio::test]
    async fn senders_wait_while_the_sinks_hold_the_capacity() {
        let (sender, mut receiver) = queue(10);
        sender.send(delivery(6)).await.map_err(|_| "sent").expect("room for 6");
        // Polled once: a send that must wait is still pending.
        let blocked = tokio::select! {
            biased;
            _ = sender.send(delivery(6)) => false,
            _ = std::future::ready(()) => true,
        };
        assert!(blocked, "6 more do not fit while the first 6 are queued");
        let first = receiver.recv().await.expect("queued");
        drop(first);
        sender.send(delivery(6)).await.map_err(|_| "sent").expect("room again once written");
        sender.send(delivery(0)).await.map_err(|_| "sent").err();
        receiver.close();
        assert!(sender.send(delivery(1)).await.is_err(), "closed sinks give the delivery back");
    }
}
