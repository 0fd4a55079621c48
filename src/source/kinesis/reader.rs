//! One owned shard: GetRecords at most every poll interval, decode, score, wait until
//! every sink has the batch, checkpoint its last sequence number, repeat. The next
//! GetRecords is in flight while a batch is delivered (one batch ahead), but batches
//! are decoded, scored and delivered one after another, so the checkpoint only ever
//! moves over delivered batches. A lost lease (the checkpoint's conditional write
//! fails, or the coordinator stops the reader) stops the reader before it delivers
//! further, and the batch read ahead is dropped.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{KinesisConfig, StartPosition};
use super::lease::{LeaseError, LeaseTable, SHARD_END};
use crate::decode::{kpl, Decoder};
use crate::event::{DeadLetter, Record};
use crate::service::scorer::Scorer;
use crate::service::telemetry::ShardLabels;
use crate::store::snapshot::SourcePosition;

/// Longest wait after throttling or errors.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a reader ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The shard was closed (split or merge) and read to its end.
    ShardEnd,
    /// Asked to stop (shutdown, or the coordinator gave the lease up).
    Stopped,
    /// The lease went to another instance.
    LeaseLost,
}

pub struct Reader {
    pub kinesis: Client,
    pub leases: Arc<LeaseTable>,
    pub scorer: Arc<Scorer>,
    pub decoder: Arc<dyn Decoder>,
    pub config: KinesisConfig,
    pub shard: String,
    /// The lease's checkpoint when it was taken.
    pub checkpoint: Option<String>,
}

impl Reader {
    async fn iterator(&self, after: Option<&str>) -> Result<Option<String>, String> {
        let mut request = self.kinesis.get_shard_iterator().stream_name(&self.config.stream).shard_id(&self.shard);
        request = match after {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
            None => match self.config.start {
                StartPosition::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
                StartPosition::AtTimestamp => request
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_millis(self.config.start_timestamp_ms.unwrap_or(0))),
            },
        };
        let reply = request.send().await.map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())?;
        Ok(reply.shard_iterator)
    }

    /// Reads until the shard ends, the lease is lost, or `stop` turns true. While one
    /// batch is scored and delivered the next GetRecords is already in flight (one
    /// batch ahead, no more), so reading and indexing overlap; that batch is only
    /// decoded, scored and delivered after the previous one is checkpointed, and is
    /// dropped unread by the sinks if the reader stops or loses its lease first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Ended {
        let labels = ShardLabels { stream: self.config.stream.clone(), shard: self.shard.clone() };
        let origin = format!("kinesis:{}", self.config.stream);
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let fetcher = Fetcher {
            kinesis: self.kinesis.clone(),
            scorer: self.scorer.clone(),
            shard: self.shard.clone(),
            limit: self.config.batch_limit,
            poll,
        };
        let mut checkpoint = self.checkpoint.clone().filter(|c| c != SHARD_END);
        let mut backoff = poll;
        loop {
            if *stop.borrow() {
                return Ended::Stopped;
            }
            let iterator = match self.iterator(checkpoint.as_deref()).await {
                Ok(Some(it)) => it,
                Ok(None) => return self.finish().await,
                Err(e) => {
                    tracing::warn!(shard = %self.shard, error = %e, "GetShardIterator failed; retrying");
                    self.scorer.metrics().error("kinesis", "get_shard_iterator");
                    if pause(&mut stop, backoff).await {
                        return Ended::Stopped;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = poll;
            let mut next = Some(fetcher.prefetch(iterator, Instant::now()));
            while let Some(mut fetching) = next.take() {
                // Biased: once asked to stop, a batch that arrived meanwhile is dropped.
                let read = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return Ended::Stopped,
                    read = &mut fetching => read,
                };
                let batch = match read {
                    Fetched::Batch(batch) => batch,
                    // Renewed from the checkpoint, which covers every delivered batch.
                    Fetched::ExpiredIterator => break,
                };
                if let Some(behind) = batch.millis_behind_latest {
                    self.scorer.metrics().millis_behind_latest.get_or_create(&labels).set(behind);
                }
                // At most one GetRecords per poll interval (Kinesis allows 5 per second),
                // counted from the start of the previous one.
                next = batch.next_iterator.map(|it| fetcher.prefetch(it, batch.started + poll));
                if let Some(last) = batch.records.last() {
                    let last = last.sequence_number.clone();
                    if let Err(ended) = self.deliver(&origin, batch.records).await {
                        return ended;
                    }
                    match self.leases.checkpoint(&self.shard, &last).await {
                        Ok(()) => checkpoint = Some(last),
                        Err(LeaseError::Lost { .. }) => return Ended::LeaseLost,
                        Err(e) => {
                            // The batch is delivered; a later checkpoint will cover it.
                            tracing::warn!(shard = %self.shard, error = %e, "checkpoint failed");
                            self.scorer.metrics().error("kinesis", "checkpoint");
                        }
                    }
                }
                if next.is_none() {
                    return self.finish().await;
                }
            }
        }
    }

    /// Decodes, scores and hands one GetRecords batch to the sinks; returns once every
    /// sink has it.
    async fn deliver(&self, origin: &str, records: Vec<aws_sdk_kinesis::types::Record>) -> Result<(), Ended> {
        let mut scored = Vec::with_capacity(records.len());
        let mut letters = Vec::new();
        for record in records {
            let arrival_ms = record
                .approximate_arrival_timestamp
                .and_then(|t| t.to_millis().ok())
                .unwrap_or_else(crate::event::now_ms);
            let data = record.data.into_inner();
            // One stream record can hold many records (a KPL aggregate, a CloudWatch
            // envelope, several log lines). Each gets its own position, the sequence
            // number plus a fixed-width index, so the replay check and the event ids tell
            // them apart and positions still compare by length, then text.
            let mut index = 0u32;
            let mut next_position = || {
                let sequence = format!("{}:{index:06}", record.sequence_number);
                index += 1;
                SourcePosition { stream: self.config.stream.clone(), shard: self.shard.clone(), sequence }
            };
            let dead_letter = |reason: String, source: SourcePosition, raw: Vec<u8>| DeadLetter {
                origin: origin.to_owned(),
                source: Some(source),
                raw,
                reason,
                at_ms: crate::event::now_ms(),
            };
            // A KPL aggregate holds several user records; anything else is one.
            let user_records = match kpl::deaggregate(&data) {
                Ok(user_records) => user_records,
                Err(e) => {
                    self.scorer.metrics().error("decode", e.kind());
                    letters.push(dead_letter(e.to_string(), next_position(), data));
                    continue;
                }
            };
            for user_record in user_records {
                let decoded = self.decoder.decode(&user_record, arrival_ms);
                let items = decoded.len();
                let mut failed = Vec::new();
                for decoded in decoded {
                    let position = next_position();
                    match decoded {
                        Ok(d) => scored.push(Record {
                            detector: self.config.detector.clone(),
                            entity: d.entity,
                            event_ms: d.event_ms,
                            values: d.values,
                            id: None,
                            source: Some(position),
                        }),
                        Err(e) => {
                            self.scorer.metrics().error("decode", e.kind());
                            failed.push((position, e.to_string()));
                        }
                    }
                }
                // One letter per user record, holding its bytes once: a letter per failed
                // line, each with a copy of a record of thousands of lines, would turn one
                // wrong field mapping into gigabytes.
                if let Some((first, reason)) = failed.first() {
                    let reason = failure_summary(&failed, items).unwrap_or_else(|| reason.clone());
                    letters.push(dead_letter(reason, first.clone(), user_record));
                }
            }
        }
        let (_, mut delivery) = self.scorer.score_async(origin, scored).await.map_err(|_| Ended::Stopped)?;
        delivery.dead_letters.extend(letters);
        let (ack, acked) = oneshot::channel();
        delivery.ack = Some(ack);
        self.scorer.deliver(delivery).await;
        match acked.await {
            Ok(()) => Ok(()),
            Err(_) => {
                // Not delivered: stop without checkpointing, so the batch is read again.
                tracing::error!(shard = %self.shard, "a sink did not take a batch; stopping this shard's reader");
                Err(Ended::Stopped)
            }
        }
    }

    async fn finish(&self) -> Ended {
        match self.leases.checkpoint(&self.shard, SHARD_END).await {
            Ok(()) => Ended::ShardEnd,
            Err(LeaseError::Lost { .. }) => Ended::LeaseLost,
            Err(e) => {
                tracing::warn!(shard = %self.shard, error = %e, "could not mark the shard finished");
                Ended::Stopped
            }
        }
    }
}

/// What a dead letter says of a user record some of whose `items` records failed (the
/// position and reason of each): None for a single failure, whose reason says it all.
fn failure_summary(failed: &[(SourcePosition, String)], items: usize) -> Option<String> {
    /// Reasons spelt out in full; the rest are counted.
    const SHOWN: usize = 5;
    if failed.len() < 2 {
        return None;
    }
    let mut summary = format!("{} of its {items} records failed:", failed.len());
    for (position, reason) in failed.iter().take(SHOWN) {
        summary.push_str(&format!(" [{}] {reason};", position.sequence));
    }
    if failed.len() > SHOWN {
        summary.push_str(&format!(" and {} more", failed.len() - SHOWN));
    }
    Some(summary)
}

/// One GetRecords answer.
struct Batch {
    records: Vec<aws_sdk_kinesis::types::Record>,
    /// `None` once a closed shard is read to its end.
    next_iterator: Option<String>,
    millis_behind_latest: Option<i64>,
    /// When the call that read it was sent.
    started: Instant,
}

enum Fetched {
    Batch(Batch),
    /// The iterator expired: get a new one from the checkpoint.
    ExpiredIterator,
}

/// Sends GetRecords for one shard.
#[derive(Clone)]
struct Fetcher {
    kinesis: Client,
    scorer: Arc<Scorer>,
    shard: String,
    limit: i32,
    poll: Duration,
}

impl Fetcher {
    /// Starts reading the batch at `iterator`, no earlier than `not_before`, in a task
    /// of its own so it proceeds while the previous batch is delivered.
    fn prefetch(&self, iterator: String, not_before: Instant) -> Prefetch {
        Prefetch(tokio::spawn(self.clone().get_records(iterator, not_before)))
    }

    /// GetRecords at `iterator`, retried with backoff on throttling and errors.
    async fn get_records(self, iterator: String, not_before: Instant) -> Fetched {
        tokio::time::sleep_until(not_before).await;
        let mut backoff = self.poll;
        loop {
            let started = Instant::now();
            let reply = self.kinesis.get_records().shard_iterator(&iterator).limit(self.limit).send().await;
            let e = match reply {
                Ok(reply) => {
                    return Fetched::Batch(Batch {
                        records: reply.records,
                        next_iterator: reply.next_shard_iterator,
                        millis_behind_latest: reply.millis_behind_latest,
                        started,
                    })
                }
                Err(e) => e,
            };
            let throttled = e.as_service_error().is_some_and(|e| e.is_provisioned_throughput_exceeded_exception());
            if e.as_service_error().is_some_and(|e| e.is_expired_iterator_exception()) {
                self.scorer.metrics().error("kinesis", "expired_iterator");
                return Fetched::ExpiredIterator;
            }
            self.scorer.metrics().error("kinesis", if throttled { "throttled" } else { "get_records" });
            tracing::warn!(shard = %self.shard, error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "GetRecords failed; backing off");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A GetRecords in flight. Dropping it (the reader stopped or lost its lease) aborts
/// the call and drops what it read.
struct Prefetch(JoinHandle<Fetched>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::future::Future for Prefetch {
    type Output = Fetched;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Fetched> {
        match std::pin::Pin::new(&mut self.0).poll(cx) {
            std::task::Poll::Ready(Ok(fetched)) => std::task::Poll::Ready(fetched),
            // Not aborted while we hold it; a panic in the task: read again from the checkpoint.
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(Fetched::ExpiredIterator),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Resolves once asked to stop (or once nobody can ask any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits `duration` unless asked to stop first; true if asked to stop.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_many_failed_lines_is_summed_up_in_one_reason() {
        let failed: Vec<(SourcePosition, String)> = (0..7)
            .map(|i| {
                let position =
                    SourcePosition { stream: "s".into(), shard: "shard-0".into(), sequence: format!("49:{i:06}") };
                (position, format!("line {i} is bad"))
            })
            .collect();
        assert_eq!(failure_summary(&failed[..1], 10), None, "one failure keeps its own reason");
        let summary = failure_summary(&failed, 10).expect("a summary");
        assert!(summary.starts_with("7 of its 10 records failed: [49:000000] line 0 is bad;"), "{summary}");
        assert!(summary.contains("[49:000004] line 4 is bad;") && !summary.contains("line 5"), "{summary}");
        assert!(summary.ends_with("and 2 more"), "{summary}");
    }
}
