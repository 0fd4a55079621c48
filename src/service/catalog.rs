//! The detectors the service knows, with the TOML each was written in: loaded from the
//! configured files at start, then created, updated and deleted through the API (those
//! changes are kept in the store and win over the files at the next start).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::scorer::Scorer;
use crate::detector::config::{ConfigError, Detector, DetectorConfig};
use crate::detector::registry::RegistryError;
use crate::store::embedded::EmbeddedStore;
use crate::store::snapshot::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("name = {given:?}: the configuration names another detector than `{expected}`")]
    NameMismatch { expected: String, given: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A detector and its configuration text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub detector: Detector,
    pub toml: String,
}

pub struct Catalog {
    store: Arc<EmbeddedStore>,
    texts: Mutex<BTreeMap<String, String>>,
}

fn parse(toml: &str) -> Result<Detector, ConfigError> {
    DetectorConfig::from_toml(toml)?.validate()
}

/// The `.toml` files named, or inside the folders named, sorted within each folder.
fn detector_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CatalogError> {
    let mut files = Vec::new();
    for path in paths {
        let unreadable = |e: std::io::Error| CatalogError::File { path: path.clone(), reason: e.to_string() };
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(unreadable)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn read(path: &Path) -> Result<(Detector, String), CatalogError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CatalogError::File { path: path.to_owned(), reason: e.to_string() })?;
    let detector = parse(&text).map_err(|e| CatalogError::File { path: path.to_owned(), reason: e.to_string() })?;
    Ok((detector, text))
}

impl Catalog {
    /// Reads the detector files, then the detectors kept in the store (which win), and
    /// adds `builtin` ones (name, TOML) that neither defines.
    pub fn load(
        files: &[PathBuf],
        builtin: &[&str],
        store: Arc<EmbeddedStore>,
    ) -> Result<(Self, Vec<Detector>), CatalogError> {
        let mut all: BTreeMap<String, (Detector, String)> = BTreeMap::new();
        for path in detector_files(files)? {
            let (detector, text) = read(&path)?;
            if all.contains_key(&detector.name) {
                return Err(CatalogError::File {
                    path,
                    reason: format!("detector `{}` is defined twice", detector.name),
                });
            }
            all.insert(detector.name.clone(), (detector, text));
        }
        for (name, text) in store.detector_configs()? {
            let detector = parse(&text).map_err(|e| CatalogError::File {
                path: PathBuf::from(format!("store:detectors/{name}")),
                reason: e.to_string(),
            })?;
            all.insert(name, (detector, text));
        }
        for text in builtin {
            let detector = parse(text)?;
            all.entry(detector.name.clone()).or_insert((detector, (*text).to_owned()));
        }
        let texts = all.iter().map(|(name, (_, text))| (name.clone(), text.clone())).collect();
        let detectors = all.into_values().map(|(d, _)| d).collect();
        Ok((Catalog { store, texts: Mutex::new(texts) }, detectors))
    }

    fn texts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.texts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, scorer: &Scorer, toml: &str) -> Result<Entry, CatalogError> {
        let detector = parse(toml)?;
        scorer.registry().create_detector(detector.clone())?;
        self.store.put_detector_config(&detector.name, toml)?;
        self.texts().insert(detector.name.clone(), toml.to_owned());
        Ok(Entry { detector, toml: toml.to_owned() })
    }

    /// Replaces detector `name`; its models start afresh.
    pub fn update(&self, scorer: &Scorer, name: &str, toml: &str) -> Result<Entry, CatalogError> {
        let detector = parse(toml)?;
        if detector.name != name {
            return Err(CatalogError::NameMismatch { expected: name.to_owned(), given: detector.name });
        }
        {
            // Its models go with it, the lent ones too: wait for them to come back.
            let mut registry = scorer.registry_to_change(name);
            if registry.detector(name).is_none() {
                return Err(RegistryError::UnknownDetector(name.to_owned()).into());
            }
            registry.replace_detector(detector.clone())?;
        }
        self.store.put_detector_config(name, toml)?;
        self.texts().insert(name.to_owned(), toml.to_owned());
        Ok(Entry { detector, toml: toml.to_owned() })
    }

    pub fn get(&self, scorer: &Scorer, name: &str) -> Result<Entry, CatalogError> {
        let detector = scorer.detector(name).ok_or_else(|| RegistryError::UnknownDetector(name.to_owned()))?;
        let toml = self.texts().get(name).cloned().unwrap_or_default();
        Ok(Entry { detector, toml })
    }

    pub fn list(&self, scorer: &Scorer) -> Vec<Entry> {
        let detectors = scorer.detectors();
        let texts = self.texts();
        detectors
            .into_iter()
            .map(|detector| Entry { toml: texts.get(&detector.name).cloned().unwrap_or_default(), detector })
            .collect()
    }

    /// Deletes detector `name` with its models; returns how many models.
    pub fn delete(&self, scorer: &Scorer, name: &str) -> Result<u64, CatalogError> {
        let deleted = scorer.registry_to_change(name).remove_detector(name)?;
        self.store.delete_detector_config(name)?;
        self.texts().remove(name);
        Ok(deleted)
    }
}
