//! The embedded store's journal: scored events, alerts and dead letters in the order
//! they were written (keyed by a sequence number, oldest trimmed past a cap), and the
//! detectors created through the API (so they outlive a restart). Rows are bincode, like
//! the model snapshots: a third of the bytes of JSON, and NaN (a missing value) survives.

use redb::{Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};

use super::embedded::{backend, EmbeddedStore};
use super::snapshot::StoreError;
use crate::event::{Alert, DeadLetter, ScoredEvent};

/// Scored events in chunks of up to [`CHUNK_EVENTS`], keyed by the sequence number of
/// their first event. One row per event made redb's page building and copying the
/// biggest cost of a gRPC batch, more than scoring it.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("scored_event_chunks");
/// The one-row-per-event JSON table of earlier versions, dropped on open.
const LEGACY_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("scored_events");
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Alerts waiting for SNS to come back.
const ALERT_SPOOL: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_spool");
/// Detector name -> its TOML.
const DETECTORS: TableDefinition<&str, &str> = TableDefinition::new("detectors");

/// Events per chunk at most, which is also how far past its cap the events table may
/// grow: the cap drops whole chunks.
const CHUNK_EVENTS: usize = 1024;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(LEGACY_EVENTS).map_err(backend)?;
    txn.open_table(EVENTS).map_err(backend)?;
    txn.open_table(ALERTS).map_err(backend)?;
    txn.open_table(DEAD_LETTERS).map_err(backend)?;
    txn.open_table(DETECTORS).map_err(backend)?;
    txn.open_table(ALERT_SPOOL).map_err(backend)?;
    Ok(())
}

/// How many rows each journal table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCounts {
    pub events: u64,
    pub alerts: u64,
    pub dead_letters: u64,
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Backend(format!("unreadable {what}: {e}")))
}

/// Appends `rows` after the table's last key and drops the oldest beyond `keep`.
fn append<T: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<u64, &[u8]>,
    rows: &[T],
    keep: u64,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table).map_err(backend)?;
    let mut next = match table.last().map_err(backend)? {
        Some((key, _)) => key.value() + 1,
        None => 0,
    };
    let mut bytes = Vec::new();
    for row in rows {
        bytes.clear();
        bincode::serialize_into(&mut bytes, row).map_err(backend)?;
        table.insert(next, bytes.as_slice()).map_err(backend)?;
        next += 1;
    }
    // Keys are consecutive and only the oldest are ever removed, so everything below
    // next - keep is beyond the cap.
    let cutoff = next.saturating_sub(keep);
    table.retain_in(..cutoff, |_, _| false).map_err(backend)?;
    Ok(())
}

/// A chunk is its event count (u32, little-endian), then the events.
fn chunk_len(chunk: &[u8]) -> Result<u64, StoreError> {
    match chunk.first_chunk::<4>() {
        Some(len) => Ok(u64::from(u32::from_le_bytes(*len))),
        None => Err(StoreError::Backend(format!("unreadable event chunk: {} bytes", chunk.len()))),
    }
}

/// Appends `events` in chunks after the last one and drops the oldest chunks that hold
/// only events beyond the newest `keep`.
fn append_events(txn: &WriteTransaction, events: &[ScoredEvent], keep: u64) -> Result<(), StoreError> {
    let mut table = txn.open_table(EVENTS).map_err(backend)?;
    let mut next = match table.last().map_err(backend)? {
        Some((first, chunk)) => first.value() + chunk_len(chunk.value())?,
        None => 0,
    };
    let mut bytes = Vec::new();
    for chunk in events.chunks(CHUNK_EVENTS) {
        bytes.clear();
        bytes.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        bincode::serialize_into(&mut bytes, chunk).map_err(backend)?;
        table.insert(next, bytes.as_slice()).map_err(backend)?;
        next += chunk.len() as u64;
    }
    let cutoff = next.saturating_sub(keep);
    loop {
        let oldest = match table.first().map_err(backend)? {
            Some((first, chunk)) => Some((first.value(), chunk_len(chunk.value())?)),
            None => None,
        };
        match oldest {
            Some((first, len)) if first + len <= cutoff => {
                table.remove(first).map_err(backend)?;
            }
            _ => return Ok(()),
        }
    }
}

fn newest<T: DeserializeOwned>(
    store: &EmbeddedStore,
    table: TableDefinition<u64, &[u8]>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let txn = store.db.begin_read().map_err(backend)?;
    let table = txn.open_table(table).map_err(backend)?;
    let mut rows = Vec::new();
    for entry in table.iter().map_err(backend)?.rev().take(limit) {
        let (_, bytes) = entry.map_err(backend)?;
        rows.push(decode(bytes.value(), "journal row")?);
    }
    Ok(rows)
}

impl EmbeddedStore {
    /// A journal write. Not `durable`: kept by redb in memory until the next durable
    /// commit, because on Linux every durable commit is an fsync, which costs more than
    /// the writing itself; the journal sink makes a durable commit every 200 ms at most.
    fn begin_journal_write(&self, durable: bool) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        if !durable {
            txn.set_durability(Durability::None);
        }
        Ok(txn)
    }

    /// Makes every earlier journal write durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write().map_err(backend)?.commit().map_err(backend)
    }

    /// Writes a batch of scored events, alerts and dead letters in one transaction,
    /// keeping at most `keep` of each.
    pub fn append(
        &self,
        events: &[ScoredEvent],
        alerts: &[Alert],
        letters: &[DeadLetter],
        keep: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        let txn = self.begin_journal_write(durable)?;
        append_events(&txn, events, keep)?;
        append(&txn, ALERTS, alerts, keep)?;
        append(&txn, DEAD_LETTERS, letters, keep)?;
        txn.commit().map_err(backend)
    }

    /// The newest scored events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<ScoredEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(EVENTS).map_err(backend)?;
        let mut events = Vec::new();
        for entry in table.iter().map_err(backend)?.rev() {
            if events.len() >= limit {
                break;
            }
            let (_, chunk) = entry.map_err(backend)?;
            let chunk: Vec<ScoredEvent> = decode(chunk.value().get(4..).unwrap_or_default(), "event chunk")?;
            events.extend(chunk.into_iter().rev().take(limit - events.len()));
        }
        Ok(events)
    }

    /// The newest alerts, newest first.
    pub fn recent_alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        newest(self, ALERTS, limit)
    }

    /// The newest dead letters, newest first.
    pub fn recent_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        newest(self, DEAD_LETTERS, limit)
    }

    pub fn journal_counts(&self) -> Result<JournalCounts, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let count = |t| -> Result<u64, StoreError> { txn.open_table(t).map_err(backend)?.len().map_err(backend) };
        let chunks = txn.open_table(EVENTS).map_err(backend)?;
        let events = match (chunks.first().map_err(backend)?, chunks.last().map_err(backend)?) {
            (Some((first, _)), Some((last, chunk))) => last.value() + chunk_len(chunk.value())? - first.value(),
            _ => 0,
        };
        Ok(JournalCounts { events, alerts: count(ALERTS)?, dead_letters: count(DEAD_LETTERS)? })
    }

    /// Keeps alerts that could not be published (durably: they must survive a restart).
    pub fn spool_alerts(&self, alerts: &[Alert]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        append(&txn, ALERT_SPOOL, alerts, u64::MAX)?;
        txn.commit().map_err(backend)
    }

    /// The oldest spooled alerts with their keys.
    pub fn spooled_alerts(&self, limit: usize) -> Result<Vec<(u64, Alert)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ALERT_SPOOL).map_err(backend)?;
        let mut rows = Vec::new();
        for entry in table.iter().map_err(backend)?.take(limit) {
            let (key, bytes) = entry.map_err(backend)?;
            rows.push((key.value(), decode(bytes.value(), "spooled alert")?));
        }
        Ok(rows)
    }

    /// Forgets spooled alerts once published.
    pub fn unspool_alerts(&self, keys: &[u64]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut table = txn.open_table(ALERT_SPOOL).map_err(backend)?;
            for key in keys {
                table.remove(key).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }

    /// Keeps a detector created or updated through the API.
    pub fn put_detector_config(&self, name: &str, toml: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        txn.open_table(DETECTORS).map_err(backend)?.insert(name, toml).map_err(backend)?;
        txn.commit().map_err(backend)
    }

    pub fn delete_detector_config(&self, name: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        txn.open_table(DETECTORS).map_err(backend)?.remove(name).map_err(backend)?;
        txn.commit().map_err(backend)
    }

    /// Every detector created through the API: (name, TOML).
    pub fn detector_configs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(DETECTORS).map_err(backend)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (name, toml) = entry.map_err(backend)?;
            all.push((name.value().to_owned(), toml.value().to_owned()));
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(i: u8) -> DeadLetter {
        DeadLetter {
            origin: "grpc".into(),
            source: None,
            raw: vec![i],
            reason: format!("bad {i}"),
            at_ms: i64::from(i),
        }
    }

    fn event(i: usize) -> ScoredEvent {
        ScoredEvent {
            id: format!("e/{i}"),
            event_ms: i as i64,
            ingested_at: 0,
            detector: "d".into(),
            entity: "x".into(),
            // A missing value: JSON would have turned it into null and failed to read it.
            values: [("v".to_owned(), f64::NAN)].into_iter().collect(),
            anomaly_score: i as f64,
            anomaly_grade: 0.0,
            confidence: 0.0,
            is_anomaly: false,
            learning: false,
            starts_region: false,
            attribution: Default::default(),
            expected_values: Default::default(),
            steps_back: 0,
            source: None,
        }
    }

    #[test]
    fn events_are_kept_in_chunks_newest_first_and_the_cap_drops_whole_chunks() {
        let path = std::env::temp_dir().join(format!("rcfd-journal-chunks-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = EmbeddedStore::open(&path).expect("open");
        let keep = 3 * CHUNK_EVENTS as u64;
        let events: Vec<ScoredEvent> = (0..5 * CHUNK_EVENTS + 10).map(event).collect();
        // Commits of different sizes: one bigger than a chunk, then many small ones.
        store.append(&events[..2 * CHUNK_EVENTS + 5], &[], &[], keep, false).expect("append");
        for batch in events[2 * CHUNK_EVENTS + 5..].chunks(100) {
            store.append(batch, &[], &[], keep, false).expect("append");
        }
        let held = store.journal_counts().expect("count").events;
        assert!((keep..keep + CHUNK_EVENTS as u64).contains(&held), "{held} held, cap {keep}");
        let newest = store.recent_events(held as usize + 10).expect("read");
        assert_eq!(newest.len() as u64, held, "exactly what the count says");
        let order: Vec<i64> = newest.iter().map(|e| e.event_ms).collect();
        let expected: Vec<i64> = (0..events.len() as i64).rev().take(held as usize).collect();
        assert_eq!(order, expected, "the newest events, newest first, none skipped");
        assert!(newest[0].values["v"].is_nan());
        assert_eq!(store.recent_events(150).expect("read").len(), 150);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_journal_keeps_the_newest_rows_up_to_its_cap() {
        let path = std::env::temp_dir().join(format!("rcfd-journal-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..5 {
            store.append(&[], &[], &[letter(2 * i), letter(2 * i + 1)], 4, i % 2 == 0).expect("append");
        }
        let kept: Vec<u8> = store.recent_dead_letters(10).expect("read").iter().map(|l| l.raw[0]).collect();
        assert_eq!(kept, vec![9, 8, 7, 6]);
        assert_eq!(store.journal_counts().expect("count").dead_letters, 4);

        store.put_detector_config("b", "name = \"b\"").expect("put");
        store.put_detector_config("a", "name = \"a\"").expect("put");
        store.delete_detector_config("b").expect("delete");
        assert_eq!(store.detector_configs().expect("list"), vec![("a".to_owned(), "name = \"a\"".to_owned())]);
        let _ = std::fs::remove_file(&path);
    }
}
