//! The embedded store's journal: scored events, alerts and dead letters in the order
//! they were written (keyed by a sequence number, oldest trimmed past a cap), and the
//! detectors created through the API (so they outlive a restart).

use redb::{Durability, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};

use super::embedded::{backend, EmbeddedStore};
use super::snapshot::StoreError;
use crate::event::{Alert, DeadLetter, ScoredEvent};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("scored_events");
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Alerts waiting for SNS to come back.
const ALERT_SPOOL: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_spool");
/// Detector name -> its TOML.
const DETECTORS: TableDefinition<&str, &str> = TableDefinition::new("detectors");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
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
    for row in rows {
        let json = serde_json::to_vec(row).map_err(backend)?;
        table.insert(next, json.as_slice()).map_err(backend)?;
        next += 1;
    }
    // Keys are consecutive and only the oldest are ever removed, so everything below
    // next - keep is beyond the cap.
    let cutoff = next.saturating_sub(keep);
    table.retain_in(..cutoff, |_, _| false).map_err(backend)?;
    Ok(())
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
        rows.push(
            serde_json::from_slice(bytes.value())
                .map_err(|e| StoreError::Backend(format!("unreadable journal row: {e}")))?,
        );
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
        append(&txn, EVENTS, events, keep)?;
        append(&txn, ALERTS, alerts, keep)?;
        append(&txn, DEAD_LETTERS, letters, keep)?;
        txn.commit().map_err(backend)
    }

    /// The newest scored events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<ScoredEvent>, StoreError> {
        newest(self, EVENTS, limit)
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
        Ok(JournalCounts { events: count(EVENTS)?, alerts: count(ALERTS)?, dead_letters: count(DEAD_LETTERS)? })
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
            let alert = serde_json::from_slice(bytes.value())
                .map_err(|e| StoreError::Backend(format!("unreadable spooled alert: {e}")))?;
            rows.push((key.value(), alert));
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
