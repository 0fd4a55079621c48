//! One random cut tree, stored as its leaves in left-to-right order plus, for each gap
//! between neighbouring leaves, the internal node that separates them.
//!
//! Every internal node of a binary tree sits in exactly one gap between consecutive
//! leaves (its left subtree ends there, its right one begins), so a tree over n leaves
//! is n leaf references and n - 1 (depth, cut dimension, cut value) triples: no child
//! pointers, no parent pointers, no cached bounding boxes. The depths encode the shape
//! (the root is the gap of depth 0; a child has its parent's depth + 1), and every
//! subtree is a contiguous run of leaves, so the bounding box of a sibling subtree is a
//! min/max over a slice of the point store. Inserting or deleting a leaf is a memmove
//! plus a +-1 on the depths of one contiguous run.
//!
//! Duplicate points are separate leaves joined by gaps whose cut dimension is
//! [`DUPLICATE`]: together they act as one leaf of mass > 1, as in the paper.

use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::store::PointStore;

/// Cut dimension marking a gap between two copies of the same point.
pub(crate) const DUPLICATE: u8 = u8::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    /// Point references of the sampled points, in the tree's left-to-right order.
    pub(crate) leaves: Vec<u32>,
    /// Reservoir-sampling keys, parallel to `leaves` (see `sampler`).
    pub(crate) keys: Vec<f32>,
    /// For gap i (between leaf i and i + 1): depth of its internal node, root 0.
    depths: Vec<u16>,
    /// For gap i: the cut dimension, or [`DUPLICATE`].
    dims: Vec<u8>,
    /// For gap i: points with `x[dim] <= cut` lie to the left.
    cuts: Vec<f32>,
    /// The largest key in `keys`, the sample a new point would replace.
    pub(crate) max_key: f32,
    /// The time at which this tree next accepts a point into its full sample.
    pub(crate) next_accept: u64,
    pub(crate) rng: Rng,
}

/// An internal node on the path from the root to a leaf: the leaves below it.
#[derive(Debug, Clone, Copy)]
struct PathNode {
    lo: usize,
    hi: usize,
}

/// Where a new point goes: beside the subtree over leaves `lo..=hi`, under a new node of
/// depth `depth` cutting `dim` at `cut`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Placement {
    lo: usize,
    hi: usize,
    depth: u16,
    dim: u8,
    cut: f32,
    right: bool,
}

/// Reusable buffers so that scoring and updating allocate nothing per point.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    path: Vec<PathNode>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl Scratch {
    pub(crate) fn new(dimensions: usize, sample_size: usize) -> Self {
        Scratch {
            path: Vec::with_capacity(sample_size + 1),
            lo: Vec::with_capacity(dimensions),
            hi: Vec::with_capacity(dimensions),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.path.capacity() * std::mem::size_of::<PathNode>() + (self.lo.capacity() + self.hi.capacity()) * 4
    }
}

// AWS's scoring functions, so that scores are on the same scale as its library and as
// Kinesis Analytics' ANOMALY_SCORE.
#[inline]
fn score_seen(depth: usize, mass: usize) -> f64 {
    1.0 / (depth as f64 + ((mass + 1) as f64).log2())
}
#[inline]
fn score_unseen(depth: usize) -> f64 {
    1.0 / (depth as f64 + 1.0)
}
#[inline]
fn damp(leaf_mass: usize, tree_mass: usize) -> f64 {
    1.0 - leaf_mass as f64 / (2.0 * tree_mass as f64)
}
#[inline]
fn normalizer(tree_mass: usize) -> f64 {
    ((tree_mass + 1) as f64).log2()
}

/// Index of the (unique) gap of depth `depth` in `depths`: a subtree's root.
#[inline]
fn find_depth(depths: &[u16], depth: u16) -> usize {
    // Chunks of 16 compare without branches, which the compiler vectorises.
    let mut base = 0;
    for chunk in depths.chunks(16) {
        if chunk.iter().fold(false, |any, &d| any | (d == depth)) {
            return base + chunk.iter().position(|&d| d == depth).unwrap_or(0);
        }
        base += chunk.len();
    }
    debug_assert!(false, "no gap of depth {depth}: the tree's shape is broken");
    0
}

/// Sum over dimensions of (box ∪ x range, part of it outside the box).
#[inline]
fn ranges(lo: &[f32], hi: &[f32], x: &[f32]) -> (f64, f64) {
    let (mut inner, mut outside) = (0.0f64, 0.0f64);
    for ((&l, &h), &v) in lo.iter().zip(hi).zip(x) {
        inner += f64::from(h) - f64::from(l);
        outside += f64::from((v - h).max(0.0)) + f64::from((l - v).max(0.0));
    }
    (inner + outside, outside)
}

impl Tree {
    pub(crate) fn new(sample_size: usize, seed: u64) -> Self {
        Tree {
            leaves: Vec::with_capacity(sample_size + 1),
            keys: Vec::with_capacity(sample_size + 1),
            depths: Vec::with_capacity(sample_size),
            dims: Vec::with_capacity(sample_size),
            cuts: Vec::with_capacity(sample_size),
            max_key: f32::NEG_INFINITY,
            next_accept: 0,
            rng: Rng::new(seed),
        }
    }

    pub(crate) fn mass(&self) -> usize {
        self.leaves.len()
    }

    /// The leaves `x` routes to (a run of duplicates, usually one leaf), with the
    /// internal nodes above it in `path`, root first. The tree must not be empty.
    fn descend(&self, x: &[f32], path: &mut Vec<PathNode>) -> (usize, usize) {
        path.clear();
        let (mut lo, mut hi) = (0, self.leaves.len() - 1);
        let mut depth = 0u16;
        while lo < hi {
            let gap = lo + find_depth(&self.depths[lo..hi], depth);
            let dim = self.dims[gap];
            if dim == DUPLICATE {
                break;
            }
            path.push(PathNode { lo, hi });
            if x[dim as usize] <= self.cuts[gap] {
                hi = gap;
            } else {
                lo = gap + 1;
            }
            depth += 1;
        }
        (lo, hi)
    }

    fn extend_box(&self, store: &PointStore, leaves: std::ops::RangeInclusive<usize>, lo: &mut [f32], hi: &mut [f32]) {
        for &reference in &self.leaves[leaves] {
            let p = store.point(reference);
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(p) {
                *l = l.min(v);
                *h = h.max(v);
            }
        }
    }

    /// A random cut of the box ∪ x (dimension chosen in proportion to its range); Some
    /// if it separates x from the box.
    fn draw_cut(lo: &[f32], hi: &[f32], x: &[f32], merged: f64, rng: &mut Rng) -> Option<(u8, f32, bool)> {
        let mut r = rng.next_f64() * merged;
        let last = x.len() - 1;
        for (d, ((&l, &h), &v)) in lo.iter().zip(hi).zip(x).enumerate() {
            let (mlo, mhi) = (l.min(v), h.max(v));
            let span = f64::from(mhi) - f64::from(mlo);
            if r < span || d == last {
                let cut = (f64::from(mlo) + r.min(span)) as f32;
                return if v < l && v <= cut && cut < l {
                    Some((d as u8, cut, false))
                } else if v > h && h <= cut && cut < v {
                    Some((d as u8, cut, true))
                } else {
                    None
                };
            }
            r -= span;
        }
        None
    }

    /// A cut separating two different points, on the first dimension where they differ.
    fn cut_between(leaf: &[f32], x: &[f32]) -> (u8, f32, bool) {
        let d = leaf.iter().zip(x).position(|(l, v)| l != v).unwrap_or(0);
        if x[d] > leaf[d] {
            (d as u8, leaf[d], true)
        } else {
            (d as u8, x[d], false)
        }
    }

    /// The anomaly score of `x` in this tree, and with `rng`, where inserting `x` would
    /// put it (the same walk serves both).
    ///
    /// The walk goes from x's leaf towards the root; at each node, x is separated from
    /// the node's box with probability (range of box ∪ x − range of box) / range of
    /// box ∪ x, which mixes in the score of being isolated at that depth. Boxes only
    /// grow upwards, so once x is inside one nothing above changes the score, and no
    /// cut above can separate x: the walk stops there.
    pub(crate) fn score(
        &self,
        x: &[f32],
        store: &PointStore,
        scratch: &mut Scratch,
        mut rng: Option<&mut Rng>,
    ) -> (f64, Option<Placement>) {
        let n = self.leaves.len();
        if n == 0 {
            let first = Placement { lo: 0, hi: 0, depth: 0, dim: DUPLICATE, cut: 0.0, right: true };
            return (0.0, rng.map(|_| first));
        }
        let (mut a, mut b) = self.descend(x, &mut scratch.path);
        let leaf_depth = scratch.path.len();
        let leaf = store.point(self.leaves[a]);
        if leaf == x {
            let mass = b - a + 1;
            let score = damp(mass, n) * score_seen(leaf_depth, mass) * normalizer(n);
            // x is inside every box above its leaf: no cut can separate it; it joins the leaf.
            let joined = Placement { lo: a, hi: b, depth: leaf_depth as u16, dim: DUPLICATE, cut: 0.0, right: true };
            return (score, rng.map(|_| joined));
        }
        let Scratch { path, lo, hi } = scratch;
        lo.clear();
        lo.extend_from_slice(leaf);
        hi.clear();
        hi.extend_from_slice(leaf);
        let mut score = score_unseen(leaf_depth);
        // At the leaf the box is a single point, so a cut always separates x (the
        // fallback only covers rounding at the ends of a range).
        let mut placement = rng.as_deref_mut().map(|rng| {
            let (merged, _) = ranges(lo, hi, x);
            let (dim, cut, right) =
                Self::draw_cut(lo, hi, x, merged, rng).unwrap_or_else(|| Self::cut_between(leaf, x));
            Placement { lo: a, hi: b, depth: leaf_depth as u16, dim, cut, right }
        });
        for (level, node) in path.iter().enumerate().rev() {
            if node.lo < a {
                self.extend_box(store, node.lo..=a - 1, lo, hi);
            } else {
                self.extend_box(store, b + 1..=node.hi, lo, hi);
            }
            (a, b) = (node.lo, node.hi);
            let (merged, outside) = ranges(lo, hi, x);
            if outside <= 0.0 {
                break;
            }
            let p = outside / merged;
            score = (1.0 - p) * score + p * score_unseen(level);
            if let Some(rng) = rng.as_deref_mut() {
                if let Some((dim, cut, right)) = Self::draw_cut(lo, hi, x, merged, rng) {
                    placement = Some(Placement { lo: a, hi: b, depth: level as u16, dim, cut, right });
                }
            }
        }
        (score * normalizer(n), placement)
    }

    /// Adds this tree's attribution of the score of `x` to `high` and `low`: the same
    /// walk as [`Tree::score`], with the probability of separation split by dimension
    /// and by side (x above the box: HIGH, below: LOW). The parts sum to the score.
    pub(crate) fn attribution(&self, x: &[f32], store: &PointStore, scratch: &mut Scratch, high: &mut [f64], low: &mut [f64]) {
        let n = self.leaves.len();
        if n == 0 {
            return;
        }
        let (mut a, mut b) = self.descend(x, &mut scratch.path);
        let leaf_depth = scratch.path.len();
        let leaf = store.point(self.leaves[a]);
        let dims = x.len();
        if leaf == x {
            let mass = b - a + 1;
            let share = damp(mass, n) * score_seen(leaf_depth, mass) * normalizer(n) / (2 * dims) as f64;
            high.iter_mut().chain(low.iter_mut()).for_each(|v| *v += share);
            return;
        }
        let Scratch { path, lo, hi } = scratch;
        lo.clear();
        lo.extend_from_slice(leaf);
        hi.clear();
        hi.extend_from_slice(leaf);
        let (mut up, mut down) = (vec![0.0f64; dims], vec![0.0f64; dims]);
        let (merged, _) = ranges(lo, hi, x);
        for d in 0..dims {
            up[d] = f64::from((x[d] - leaf[d]).max(0.0)) / merged * score_unseen(leaf_depth);
            down[d] = f64::from((leaf[d] - x[d]).max(0.0)) / merged * score_unseen(leaf_depth);
        }
        for (level, node) in path.iter().enumerate().rev() {
            if node.lo < a {
                self.extend_box(store, node.lo..=a - 1, lo, hi);
            } else {
                self.extend_box(store, b + 1..=node.hi, lo, hi);
            }
            (a, b) = (node.lo, node.hi);
            let (merged, outside) = ranges(lo, hi, x);
            if outside <= 0.0 {
                break;
            }
            let p = outside / merged;
            let unseen = score_unseen(level);
            for d in 0..dims {
                let above = f64::from((x[d] - hi[d]).max(0.0)) / merged;
                let below = f64::from((lo[d] - x[d]).max(0.0)) / merged;
                up[d] = (1.0 - p) * up[d] + above * unseen;
                down[d] = (1.0 - p) * down[d] + below * unseen;
            }
        }
        let norm = normalizer(n);
        for d in 0..dims {
            high[d] += up[d] * norm;
            low[d] += down[d] * norm;
        }
    }

    /// The sample nearest to `x` on its known (non-NaN) dimensions: cuts on known
    /// dimensions are followed, both sides of cuts on missing ones are searched. Ties
    /// go to the smallest sampler key, a random sample favouring recent points.
    pub(crate) fn nearest_known(&self, x: &[f32], store: &PointStore) -> Option<u32> {
        if self.leaves.is_empty() {
            return None;
        }
        let mut best: Option<(f64, f32, u32)> = None;
        let mut stack = vec![(0usize, self.leaves.len() - 1, 0u16)];
        while let Some((lo, hi, depth)) = stack.pop() {
            let gap = (lo < hi).then(|| lo + find_depth(&self.depths[lo..hi], depth));
            match gap {
                Some(gap) if self.dims[gap] != DUPLICATE => {
                    let dim = self.dims[gap] as usize;
                    let value = x[dim];
                    if value.is_nan() || value <= self.cuts[gap] {
                        stack.push((lo, gap, depth + 1));
                    }
                    if value.is_nan() || value > self.cuts[gap] {
                        stack.push((gap + 1, hi, depth + 1));
                    }
                }
                _ => {
                    let p = store.point(self.leaves[lo]);
                    let distance: f64 =
                        x.iter().zip(p).filter(|(v, _)| !v.is_nan()).map(|(v, q)| f64::from((v - q).abs())).sum();
                    let key = self.keys[lo];
                    if best.is_none_or(|(bd, bk, _)| distance < bd || (distance == bd && key < bk)) {
                        best = Some((distance, key, self.leaves[lo]));
                    }
                }
            }
        }
        best.map(|(_, _, reference)| reference)
    }

    /// Inserts point `reference` (with sampler key `key`) where `placement` says.
    pub(crate) fn insert(&mut self, placement: Placement, reference: u32, key: f32) {
        if self.leaves.is_empty() {
            self.leaves.push(reference);
            self.keys.push(key);
            return;
        }
        let Placement { lo, hi, depth, dim, cut, right } = placement;
        for d in &mut self.depths[lo..hi] {
            *d += 1;
        }
        let (leaf, gap) = if right { (hi + 1, hi) } else { (lo, lo) };
        self.leaves.insert(leaf, reference);
        self.keys.insert(leaf, key);
        self.depths.insert(gap, depth);
        self.dims.insert(gap, dim);
        self.cuts.insert(gap, cut);
    }

    /// Deletes leaf `i`: its parent node goes, its sibling subtree moves up a level.
    pub(crate) fn delete(&mut self, i: usize) {
        let n = self.leaves.len();
        self.leaves.remove(i);
        self.keys.remove(i);
        if n == 1 {
            return;
        }
        // The parent is the deeper of the two gaps beside the leaf.
        let parent = if i == 0 {
            0
        } else if i == n - 1 || self.depths[i - 1] > self.depths[i] {
            i - 1
        } else {
            i
        };
        let parent_depth = self.depths[parent];
        if parent == i {
            // Sibling subtree to the right: the gaps after the parent that are deeper.
            for d in self.depths[parent + 1..].iter_mut().take_while(|d| **d > parent_depth) {
                *d -= 1;
            }
        } else {
            for d in self.depths[..parent].iter_mut().rev().take_while(|d| **d > parent_depth) {
                *d -= 1;
            }
        }
        self.depths.remove(parent);
        self.dims.remove(parent);
        self.cuts.remove(parent);
    }

    /// Position of the leaf with the largest key (the sample to evict).
    pub(crate) fn max_key_position(&self) -> usize {
        let mut best = 0;
        for (i, &k) in self.keys.iter().enumerate() {
            if k > self.keys[best] {
                best = i;
            }
        }
        best
    }

    pub(crate) fn refresh_max_key(&mut self) {
        self.max_key = self.keys.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }

    /// Cheap structural checks for a tree read from a snapshot: whatever the bytes
    /// said, walking the tree must stay within its arrays and the point store.
    pub(crate) fn is_consistent(&self, sample_size: usize, dimensions: usize, holds: impl Fn(u32) -> bool) -> bool {
        let n = self.leaves.len();
        let gaps = n.saturating_sub(1);
        n <= sample_size
            && self.keys.len() == n
            && self.depths.len() == gaps
            && self.dims.len() == gaps
            && self.cuts.len() == gaps
            && self.dims.iter().all(|&d| d == DUPLICATE || (d as usize) < dimensions)
            && self.depths.iter().all(|&d| (d as usize) < n)
            && self.leaves.iter().all(|&r| holds(r))
            && self.shape_is_valid()
    }

    /// Whether the depths describe a binary tree: every run of gaps has exactly one
    /// gap of the expected depth (its root) and only deeper ones besides.
    fn shape_is_valid(&self) -> bool {
        let mut runs = vec![(0usize, self.depths.len(), 0u16)];
        while let Some((lo, hi, depth)) = runs.pop() {
            if lo == hi {
                continue;
            }
            let run = &self.depths[lo..hi];
            if run.iter().any(|&d| d < depth) || run.iter().filter(|&&d| d == depth).count() != 1 {
                return false;
            }
            let root = lo + find_depth(run, depth);
            runs.push((lo, root, depth + 1));
            runs.push((root + 1, hi, depth + 1));
        }
        true
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.leaves.capacity() * 4
            + self.keys.capacity() * 4
            + self.depths.capacity() * 2
            + self.dims.capacity()
            + self.cuts.capacity() * 4
    }

    /// Checks the tree's invariants: the shape encoded by the depths is a binary tree,
    /// every leaf lies on its side of every cut above it (each box holds its points),
    /// duplicates are equal, and the sampler's keys are consistent.
    #[cfg(test)]
    pub(crate) fn check(&self, store: &PointStore, sample_size: usize) -> Result<(), String> {
        let n = self.leaves.len();
        if self.keys.len() != n || n > sample_size {
            return Err(format!("{n} leaves, {} keys, sample size {sample_size}", self.keys.len()));
        }
        let gaps = n.saturating_sub(1);
        if self.depths.len() != gaps || self.dims.len() != gaps || self.cuts.len() != gaps {
            return Err(format!("{n} leaves but {} gaps", self.depths.len()));
        }
        if n > 1 && self.depths.iter().filter(|&&d| d == 0).count() != 1 {
            return Err("not exactly one root".into());
        }
        for g in 0..gaps {
            let depth = self.depths[g];
            let left = (0..g).rev().find(|&j| self.depths[j] < depth);
            let right = (g + 1..gaps).find(|&j| self.depths[j] < depth);
            if depth > 0 {
                let parent_depth = left.map(|j| self.depths[j]).into_iter().chain(right.map(|j| self.depths[j])).max();
                if parent_depth != Some(depth - 1) {
                    return Err(format!("gap {g} at depth {depth} has parent depth {parent_depth:?}"));
                }
            }
            let first = left.map_or(0, |j| j + 1);
            let last = right.unwrap_or(gaps);
            let dim = self.dims[g];
            if dim == DUPLICATE {
                let p = store.point(self.leaves[first]);
                if (first..=last).any(|i| store.point(self.leaves[i]) != p) {
                    return Err(format!("duplicate gap {g} joins different points"));
                }
                continue;
            }
            let cut = self.cuts[g];
            if (first..=g).any(|i| store.point(self.leaves[i])[dim as usize] > cut)
                || (g + 1..=last).any(|i| store.point(self.leaves[i])[dim as usize] <= cut)
            {
                return Err(format!("a leaf is on the wrong side of cut {g} (dim {dim} at {cut})"));
            }
        }
        if n > 0 && self.max_key != self.keys.iter().copied().fold(f32::NEG_INFINITY, f32::max) {
            return Err("max_key is stale".into());
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn shape(&self) -> (Vec<u32>, Vec<u16>, Vec<u8>, Vec<f32>) {
        (self.leaves.clone(), self.depths.clone(), self.dims.clone(), self.cuts.clone())
    }
}
