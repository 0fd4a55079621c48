//! The point store shared by all trees: each record's values are stored once, and with
//! internal shingling a point is a window over consecutive records, so a shingle of 8
//! costs one record's values per point, not eight.
//!
//! A point reference `r` names the window `values[r·F .. r·F + D]` (F features per
//! record, D = F · shingle size). Values no tree refers to any more are dropped by
//! [`PointStore::compact`], which renumbers references. One-dimensional trees keep
//! their points' values themselves (see `tree`), so a one-dimensional forest's store
//! holds only the records since its last compaction, and its snapshots a store of
//! the values the trees hold ([`PointStore::holding`]).

use serde::{Deserialize, Serialize};

/// Compact when the store has grown by this fraction of what was live at the last
/// compaction. Compaction costs about one pass over the trees' leaves, so even a
/// quarter keeps it far below a microsecond per point, and memory within 25% of live.
const GROWTH_BEFORE_COMPACTION: f64 = 0.25;
/// ... but never after fewer than this many records.
const MIN_RECORDS_BEFORE_COMPACTION: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PointStore {
    features: usize,
    dimensions: usize,
    values: Vec<f32>,
    /// Records appended since the stream began (not reduced by compaction).
    records: u64,
    /// Length of `values` that triggers the next compaction.
    compact_at: usize,
}

impl PointStore {
    pub(crate) fn new(features: usize, shingle_size: usize) -> Self {
        PointStore {
            features,
            dimensions: features * shingle_size,
            values: Vec::new(),
            records: 0,
            compact_at: MIN_RECORDS_BEFORE_COMPACTION * features,
        }
    }

    #[inline]
    pub(crate) fn point(&self, reference: u32) -> &[f32] {
        let start = reference as usize * self.features;
        &self.values[start..start + self.dimensions]
    }

    /// [`PointStore::point`] for points of `N` dimensions, as the walk's hot loop reads
    /// them: one clamp per point where slicing checks both ends (a reference past the
    /// end, which no tree holds, would read the last point). None unless points have `N`
    /// dimensions and the store holds one.
    #[inline]
    pub(crate) fn fixed_points<'a, const N: usize>(&'a self) -> Option<impl Fn(u32) -> &'a [f32; N] + 'a> {
        let last = self.values.len().checked_sub(N).filter(|_| N == self.dimensions)?;
        let (values, features) = (&self.values[..], self.features);
        Some(move |reference: u32| {
            let start = (reference as usize * features).min(last);
            values[start..].first_chunk::<N>().unwrap_or_else(|| unreachable!("start <= len - N"))
        })
    }

    /// Appends one record (already checked for length and finiteness).
    pub(crate) fn push(&mut self, record: &[f32]) {
        self.values.extend_from_slice(record);
        self.records += 1;
    }

    /// Whether a full shingle is available.
    pub(crate) fn has_point(&self) -> bool {
        self.values.len() >= self.dimensions
    }

    /// The reference of the newest point (the last shingle); only if `has_point`.
    pub(crate) fn newest(&self) -> u32 {
        ((self.values.len() - self.dimensions) / self.features) as u32
    }

    /// The last `shingle_size - 1` records, the start of the next point.
    pub(crate) fn shingle_prefix(&self) -> &[f32] {
        let keep = (self.dimensions - self.features).min(self.values.len());
        &self.values[self.values.len() - keep..]
    }

    pub(crate) fn needs_compaction(&self) -> bool {
        self.values.len() >= self.compact_at
    }

    /// Keeps only the windows of `live` references and the records that start the next
    /// shingle, moving them down in place; returns the old-to-new reference map for the
    /// trees to apply. One pass over the records held: live window starts are marked, not
    /// sorted out of every tree's references (12,800 for 50 trees of 256).
    pub(crate) fn compact(&mut self, live: &[u32]) -> Vec<u32> {
        let features = self.features;
        let records_held = self.values.len() / features;
        let window = self.dimensions / features;
        // The newest shingle_size - 1 records start the next point: always keep them.
        let tail_start = records_held.saturating_sub(window - 1);
        let mut starts = vec![false; records_held];
        for &r in live {
            if let Some(start) = starts.get_mut(r as usize) {
                *start = true;
            }
        }
        let mut map = vec![u32::MAX; records_held];
        // Records are kept in order and only ever move down, so one pass can move them in
        // place; overlapping windows share their records.
        let mut kept = 0usize;
        let mut covered_until = 0usize; // records before this lie in a live window
        for old in 0..records_held {
            if starts[old] {
                covered_until = covered_until.max(old + window);
                map[old] = kept as u32;
            }
            if old < covered_until || old >= tail_start {
                let from = old * features;
                self.values.copy_within(from..from + features, kept * features);
                kept += 1;
            }
        }
        self.values.truncate(kept * features);
        let growth = ((self.values.len() as f64 * GROWTH_BEFORE_COMPACTION) as usize)
            .max(MIN_RECORDS_BEFORE_COMPACTION * features);
        self.compact_at = self.values.len() + growth;
        // Exactly the room needed until the next compaction, not Vec's doubling.
        if self.values.capacity() > self.compact_at {
            self.values.shrink_to(self.compact_at);
        } else {
            self.values.reserve_exact(self.compact_at - self.values.len());
        }
        map
    }

    /// A store of one-dimensional points that holds `values` (point i is `values[i]`)
    /// and has seen as many records as this one: what a snapshot of one-dimensional
    /// trees, which keep values, references.
    pub(crate) fn holding(&self, values: Vec<f32>) -> PointStore {
        let (features, dimensions, records) = (self.features, self.dimensions, self.records);
        PointStore { features, dimensions, records, compact_at: values.len(), values }
    }

    /// Whether `reference` names a window inside the store.
    pub(crate) fn holds(&self, reference: u32) -> bool {
        reference as usize * self.features + self.dimensions <= self.values.len()
    }

    /// Whether a restored store matches the forest's parameters.
    pub(crate) fn is_consistent(&self, features: usize, dimensions: usize) -> bool {
        self.features == features && self.dimensions == dimensions && self.values.len().is_multiple_of(features)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.values.capacity() * std::mem::size_of::<f32>()
    }

    #[cfg(test)]
    pub(crate) fn len_values(&self) -> usize {
        self.values.len()
    }
}
