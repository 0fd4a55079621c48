//! The embedded default: a redb database file on local disk (one file, ACID, no server).

use std::path::Path;

use redb::{Database, TableDefinition};

use super::snapshot::{ModelKey, Snapshot, SnapshotStore, StoreError};

/// Snapshots keyed by "detector\0entity" (both are text, neither holds a NUL).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("model_snapshots");

pub struct EmbeddedStore {
    pub(super) db: Database,
}

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn table_key(key: &ModelKey) -> String {
    format!("{}\0{}", key.detector, key.entity)
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", folder.display())))?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        // Create the tables up front, so that readers never meet a missing table.
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(SNAPSHOTS).map_err(backend)?;
        super::journal::create_tables(&txn)?;
        txn.commit().map_err(backend)?;
        Ok(EmbeddedStore { db })
    }
}

impl SnapshotStore for EmbeddedStore {
    fn put(&self, key: &ModelKey, snapshot: &Snapshot) -> Result<(), StoreError> {
        let bytes = bincode::serialize(snapshot).map_err(backend)?;
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(backend)?;
            table.insert(table_key(key).as_str(), bytes.as_slice()).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    fn get(&self, key: &ModelKey) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(SNAPSHOTS).map_err(backend)?;
        let Some(bytes) = table.get(table_key(key).as_str()).map_err(backend)? else {
            return Ok(None);
        };
        let snapshot = bincode::deserialize(bytes.value()).map_err(|e| StoreError::Corrupt {
            detector: key.detector.clone(),
            entity: key.entity.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(snapshot))
    }

    fn delete_detector(&self, detector: &str) -> Result<u64, StoreError> {
        // Keys are "detector\0entity", and \0 sorts first, so the range "detector\0"
        // up to "detector\u{1}" holds exactly this detector's entities.
        let (start, end) = (format!("{detector}\0"), format!("{detector}\u{1}"));
        let txn = self.db.begin_write().map_err(backend)?;
        let deleted = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(backend)?;
            let removed = table.extract_from_if(start.as_str()..end.as_str(), |_, _| true).map_err(backend)?;
            removed.count() as u64
        };
        txn.commit().map_err(backend)?;
        Ok(deleted)
    }

    fn delete(&self, key: &ModelKey) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(backend)?;
            table.remove(table_key(key).as_str()).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::snapshot::SourcePosition;

    #[test]
    fn snapshots_survive_reopening_the_file() {
        let path = std::env::temp_dir().join(format!("rcfd-embedded-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let key = ModelKey { detector: "iot".into(), entity: "DemoSensor".into() };
        let snapshot = Snapshot {
            model: vec![1, 2, 3],
            positions: vec![SourcePosition { stream: "s".into(), shard: "shardId-0".into(), sequence: "42".into() }],
            latest_event_ms: Some(1_700_000_000_000),
            last_score: 1.5,
        };
        {
            let store = EmbeddedStore::open(&path).expect("create");
            assert_eq!(store.get(&key).expect("read"), None);
            store.put(&key, &snapshot).expect("write");
        }
        let store = EmbeddedStore::open(&path).expect("reopen");
        assert_eq!(store.get(&key).expect("read"), Some(snapshot.clone()));
        store.delete(&key).expect("delete");
        assert_eq!(store.get(&key).expect("read"), None);
        for entity in ["a", "b"] {
            store.put(&ModelKey { detector: "iot".into(), entity: entity.into() }, &snapshot).expect("write");
        }
        let other = ModelKey { detector: "iot2".into(), entity: "a".into() };
        store.put(&other, &snapshot).expect("write");
        assert_eq!(store.delete_detector("iot").expect("delete all"), 2);
        assert!(store.get(&other).expect("read").is_some(), "another detector's snapshots stay");
        let _ = std::fs::remove_file(&path);
    }
}
