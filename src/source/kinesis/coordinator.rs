//! Runs one stream: discovers its shards, keeps a lease per shard in the lease table,
//! takes free or expired leases up to a fair share (shards / instances) and one lease
//! per round from an instance holding more than its share, renews what it holds, starts a reader per held shard and stops it as soon as its lease is in doubt,
//! and gives every lease up at shutdown. A child shard (after a split or merge) is only
//! taken once its parents are read to their end, so one entity's records stay in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::KinesisConfig;
use super::lease::{Lease, LeaseError, LeaseTable};
use super::reader::{Ended, Reader};
use crate::decode::Decoder;
use crate::service::scorer::Scorer;
use crate::service::telemetry::SourceLabels;

struct Held {
    lease: Lease,
    renewed: Instant,
    stop: watch::Sender<bool>,
    task: JoinHandle<Ended>,
}

/// Every shard of the stream with its parents.
async fn shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // With a next token, the stream name must not be given again.
        let request = match &token {
            Some(t) => kinesis.list_shards().next_token(t),
            None => kinesis.list_shards().stream_name(stream),
        };
        let page = request.send().await.map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())?;
        for shard in page.shards.unwrap_or_default() {
            let parents = [shard.parent_shard_id, shard.adjacent_parent_shard_id].into_iter().flatten().collect();
            all.push((shard.shard_id, parents));
        }
        token = page.next_token;
        if token.is_none() {
            return Ok(all);
        }
    }
}

pub struct Coordinator {
    pub config: KinesisConfig,
    pub kinesis: aws_sdk_kinesis::Client,
    pub leases: Arc<LeaseTable>,
    pub scorer: Arc<Scorer>,
    pub decoder: Arc<dyn Decoder>,
}

impl Coordinator {
    /// Runs until `shutdown` turns true, then stops the readers and gives up the leases.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), LeaseError> {
        self.leases.ensure_table().await?;
        let decoder = self.decoder.clone();
        let duration = Duration::from_millis(self.config.lease_duration_ms);
        let labels = SourceLabels { source: format!("kinesis:{}", self.config.stream) };
        let mut held: HashMap<String, Held> = HashMap::new();
        // Per lease: the counter last seen and when it last moved (our own clock, as the
        // KCL does: instances' clocks are never compared).
        let mut seen: HashMap<String, (u64, Instant)> = HashMap::new();
        let mut ticks = tokio::time::interval(duration / 3);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
            self.reap(&mut held).await;
            self.renew(&mut held, duration).await;
            if let Err(e) = self.balance(&mut held, &mut seen, duration, &decoder).await {
                tracing::warn!(stream = %self.config.stream, error = %e, "lease round failed; retrying");
                self.scorer.metrics().error("lease", "round");
            }
            self.scorer.metrics().shards_owned.get_or_create(&labels).set(held.len() as i64);
        }
        for h in held.values() {
            let _ = h.stop.send(true);
        }
        for (_, h) in held.drain() {
            let _ = h.task.await;
            if let Err(e) = self.leases.release(&h.lease).await {
                tracing::warn!(shard = %h.lease.shard, error = %e, "could not give the lease up");
            }
        }
        self.scorer.metrics().shards_owned.get_or_create(&labels).set(0);
        Ok(())
    }

    /// Starts the reader of a lease just taken, after `delay` if it was taken from
    /// another instance.
    fn start_reader(
        &self,
        held: &mut HashMap<String, Held>,
        taken: Lease,
        decoder: &Arc<dyn Decoder>,
        delay: Option<Duration>,
    ) {
        let (stop, mut stopping) = watch::channel(false);
        let reader = Reader {
            kinesis: self.kinesis.clone(),
            leases: self.leases.clone(),
            scorer: self.scorer.clone(),
            decoder: decoder.clone(),
            config: self.config.clone(),
            shard: taken.shard.clone(),
            checkpoint: taken.checkpoint.clone(),
        };
        let task = tokio::spawn(async move {
            if let Some(delay) = delay {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopping.changed() => return Ended::Stopped,
                }
            }
            reader.run(stopping).await
        });
        held.insert(taken.shard.clone(), Held { lease: taken, renewed: Instant::now(), stop, task });
    }

    /// Forgets readers that ended (their shard finished, or their lease was lost).
    async fn reap(&self, held: &mut HashMap<String, Held>) {
        let ended: Vec<String> = held.iter().filter(|(_, h)| h.task.is_finished()).map(|(s, _)| s.clone()).collect();
        for shard in ended {
            let Some(h) = held.remove(&shard) else {
                continue;
            };
            let how = h.task.await.unwrap_or(Ended::Stopped);
            tracing::info!(%shard, ended = ?how, "shard reader ended");
            if how != Ended::LeaseLost {
                // Finished or stopped on its own: let another turn (or instance) take it.
                let _ = self.leases.release(&h.lease).await;
            }
        }
    }

    /// Renews every held lease; a reader whose lease was lost, or could not be renewed
    /// for most of the lease duration, is stopped before another instance may take it.
    async fn renew(&self, held: &mut HashMap<String, Held>, duration: Duration) {
        let mut lost = Vec::new();
        for (shard, h) in held.iter_mut() {
            match self.leases.renew(&h.lease).await {
                Ok(lease) => {
                    h.lease = lease;
                    h.renewed = Instant::now();
                }
                Err(LeaseError::Lost { .. }) => lost.push(shard.clone()),
                Err(e) => {
                    tracing::warn!(%shard, error = %e, "lease renewal failed");
                    if h.renewed.elapsed() > duration * 2 / 3 {
                        lost.push(shard.clone());
                    }
                }
            }
        }
        for shard in lost {
            if let Some(h) = held.remove(&shard) {
                tracing::warn!(%shard, "lease lost; stopping its reader");
                let _ = h.stop.send(true);
                let _ = h.task.await;
            }
        }
    }

    /// Adds leases for new shards and takes free or expired ones up to a fair share.
    async fn balance(
        &self,
        held: &mut HashMap<String, Held>,
        seen: &mut HashMap<String, (u64, Instant)>,
        duration: Duration,
        decoder: &Arc<dyn Decoder>,
    ) -> Result<(), String> {
        let shards = shards(&self.kinesis, &self.config.stream).await?;
        let mut leases = self.leases.list().await.map_err(|e| e.to_string())?;
        if shards.iter().any(|(s, _)| !leases.iter().any(|l| &l.shard == s)) {
            self.leases.add_missing(&shards, &leases).await.map_err(|e| e.to_string())?;
            leases = self.leases.list().await.map_err(|e| e.to_string())?;
        }
        let now = Instant::now();
        for lease in &leases {
            let entry = seen.entry(lease.shard.clone()).or_insert((lease.counter, now));
            if entry.0 != lease.counter {
                *entry = (lease.counter, now);
            }
        }
        let expired = |l: &Lease| seen.get(&l.shard).is_some_and(|(_, moved)| now.duration_since(*moved) > duration);
        let finished: HashSet<&str> = leases.iter().filter(|l| l.is_finished()).map(|l| l.shard.as_str()).collect();
        let known: HashSet<&str> = leases.iter().map(|l| l.shard.as_str()).collect();
        let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();
        let active_count = active.len();
        let mut instances: HashSet<&str> =
            active.iter().filter(|l| !expired(l)).filter_map(|l| l.owner.as_deref()).collect();
        instances.insert(self.leases.owner());
        let fair_share = active.len().div_ceil(instances.len());
        for lease in active {
            if held.len() >= fair_share {
                break;
            }
            let mine = lease.owner.as_deref() == Some(self.leases.owner());
            let free = lease.owner.is_none() || expired(lease) || (mine && !held.contains_key(&lease.shard));
            // A parent the table no longer knows was trimmed: nothing left to read first.
            let parents_done =
                lease.parents.iter().all(|p| finished.contains(p.as_str()) || !known.contains(p.as_str()));
            if held.contains_key(&lease.shard) || !free || !parents_done {
                continue;
            }
            let taken = match self.leases.take(lease).await {
                Ok(taken) => taken,
                Err(LeaseError::Lost { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            };
            tracing::info!(shard = %taken.shard, checkpoint = ?taken.checkpoint, "took the lease");
            self.start_reader(held, taken, decoder, None);
        }
        // Still short of an even share while another instance holds more than its
        // own: take one of its leases per round. Its next renewal fails and it stops
        // that reader; ours starts only a lease duration later, by when the other has
        // surely stopped, so no two readers ever read the shard at once.
        let even_share = active_count / instances.len();
        if held.len() < even_share {
            let mut by_owner: HashMap<&str, Vec<&Lease>> = HashMap::new();
            for lease in leases.iter().filter(|l| !l.is_finished() && !expired(l)) {
                if let Some(owner) = lease.owner.as_deref().filter(|o| *o != self.leases.owner()) {
                    by_owner.entry(owner).or_default().push(lease);
                }
            }
            let busiest = by_owner.into_values().max_by_key(Vec::len);
            if let Some(victim) = busiest.filter(|v| v.len() > held.len() + 1).and_then(|v| v.first().copied()) {
                match self.leases.take(victim).await {
                    Ok(taken) => {
                        tracing::info!(shard = %taken.shard, from = ?victim.owner, "took a lease to even the load");
                        self.start_reader(held, taken, decoder, Some(duration));
                    }
                    Err(LeaseError::Lost { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(())
    }
}
