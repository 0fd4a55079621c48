//! One random cut tree, stored as its leaves in left-to-right order plus, for each gap
//! between neighbouring leaves, the internal node that separates them.
//!
//! Every internal node of a binary tree sits in exactly one gap between consecutive
//! leaves (its left subtree ends there, its right one begins), so a tree over n leaves
//! is n leaf references and n - 1 nodes, with no cached bounding boxes. Every subtree
//! is a contiguous run of leaves, so the bounding box of a sibling subtree is a min/max
//! over a slice of leaves, which is what scoring needs, without a recursive walk.
//!
//! A node points at its children by distance in gaps (0: the neighbouring leaf), so
//! inserting or deleting a leaf (a memmove) only changes the pointers that span the
//! moved position, which are those of the path's nodes.
//!
//! Duplicate points are separate leaves joined by nodes whose cut dimension is
//! [`DUPLICATE`]: together they act as one leaf of mass > 1, as in the paper.
//!
//! A one-dimensional tree keeps no pointers: its leaves and cuts are sorted, so a point
//! is placed by a search over the cuts, and its shape is each node's depth (`levels`),
//! which insert and delete keep without a path. So its nodes are only their cuts (4
//! bytes, where a node with pointers takes 8), and a duplicate node is marked in its
//! level. Its leaves are the points' values themselves, not references to them in the
//! store (as many bytes, one read less). [`Tree::relink`] makes nodes with pointers for
//! snapshots and tests.

use std::hint::select_unpredictable;

use serde::{Deserialize, Serialize};

use super::config::{ForestParams, MAX_SAMPLE_SIZE};
use super::rng::Rng;
use super::sampler;
use super::store::PointStore;

/// Cut dimension marking a node between two copies of the same point.
pub(crate) const DUPLICATE: u8 = u8::MAX;

/// A one-dimensional tree's mark of a duplicate node, in the node's level (which is at
/// most the sample size + 1). Marked levels compare above every unmarked one, and a
/// duplicate node's subtree holds only duplicate nodes, so a scan for the nearest node
/// shallower than a given one finds the same node with the marks as without them.
const DUPLICATE_LEVEL: u16 = 1 << 15;

/// The mark a node of cut dimension `dim` carries in its level (see [`DUPLICATE_LEVEL`]).
#[inline]
fn mark(dim: u8) -> u16 {
    if dim == DUPLICATE {
        DUPLICATE_LEVEL
    } else {
        0
    }
}

/// Whether a one-dimensional tree's `level` is a duplicate node's.
#[inline]
fn marked(level: u16) -> bool {
    level & DUPLICATE_LEVEL != 0
}

/// An internal node in 8 bytes: points with `x[dim] <= cut` go left; `left`/`right`
/// are the distances (in gaps) to the child nodes, 0 meaning the neighbouring leaf.
/// One load per level of a descent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "WireNode", into = "WireNode")]
pub(crate) struct Node {
    /// The cut as [`ordered`] keys it: a descent is a chain of dependent loads, and an
    /// integer comparison adds one cycle to each link where a float comparison adds three.
    cut: i32,
    /// left (12 bits) | right (12 bits) | dim (8 bits).
    links: u32,
}

/// A node as snapshots hold it (the cut as a float, as before the ordered key).
#[derive(Serialize, Deserialize)]
struct WireNode {
    cut: f32,
    links: u32,
}

impl From<WireNode> for Node {
    fn from(wire: WireNode) -> Self {
        Node { cut: ordered(wire.cut), links: wire.links }
    }
}

impl From<Node> for WireNode {
    fn from(node: Node) -> Self {
        WireNode { cut: node.cut(), links: node.links }
    }
}

/// `v` as an integer in the same order as the floats, the two zeros made one (so that
/// `ordered(a) <= ordered(b)` exactly when `a <= b`, for all but NaN): positive floats
/// already order as their bits do, negative ones in reverse, so their magnitude bits
/// are flipped.
#[inline]
pub(crate) fn ordered(v: f32) -> i32 {
    let bits = (v + 0.0).to_bits() as i32;
    bits ^ ((bits >> 31) as u32 >> 1) as i32
}

/// The float [`ordered`] keyed (+0.0 for either zero).
#[inline]
fn unordered(key: i32) -> f32 {
    f32::from_bits((key ^ ((key >> 31) as u32 >> 1) as i32) as u32)
}

/// Child distances have 12 bits, which bounds the sample size (see `config`).
const LINK_BITS: u32 = 12;
const LINK_MASK: u32 = (1 << LINK_BITS) - 1;

impl Node {
    fn new(dim: u8, cut: f32, left: usize, right: usize) -> Self {
        Node { cut: ordered(cut), links: left as u32 | (right as u32) << LINK_BITS | u32::from(dim) << (2 * LINK_BITS) }
    }
    /// A node with no children yet, its cut already [`ordered`].
    fn keyed(dim: u8, cut: i32) -> Self {
        Node { cut, links: u32::from(dim) << (2 * LINK_BITS) }
    }
    #[inline]
    fn cut(self) -> f32 {
        unordered(self.cut)
    }
    #[inline]
    fn left(self) -> usize {
        (self.links & LINK_MASK) as usize
    }
    #[inline]
    fn right(self) -> usize {
        (self.links >> LINK_BITS & LINK_MASK) as usize
    }
    #[inline]
    fn dim(self) -> u8 {
        (self.links >> (2 * LINK_BITS)) as u8
    }
    fn set_left(&mut self, left: usize) {
        self.links = self.links & !LINK_MASK | left as u32;
    }
    fn set_right(&mut self, right: usize) {
        self.links = self.links & !(LINK_MASK << LINK_BITS) | (right as u32) << LINK_BITS;
    }
    /// [`Node::set_left`] if `left`, else [`Node::set_right`], without a branch.
    #[inline]
    fn set_link(&mut self, left: bool, distance: usize) {
        let shift = select_unpredictable(left, 0, LINK_BITS);
        self.links = self.links & !(LINK_MASK << shift) | (distance as u32) << shift;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    /// Point references of the sampled points, in the tree's left-to-right order; in a
    /// one-dimensional tree, the points' values (their bits, see [`Tree::value`]).
    /// Snapshots hold references in both kinds of tree.
    pub(crate) leaves: Vec<u32>,
    /// Reservoir-sampling keys, parallel to `leaves` (see `sampler`).
    pub(crate) keys: Vec<f32>,
    /// Node i sits between leaf i and leaf i + 1. Empty in a one-dimensional tree
    /// (see `cuts`) until [`Tree::relink`] makes them, with the root.
    nodes: Vec<Node>,
    /// Index of the root node (when there are two leaves or more).
    root: u16,
    /// The largest key in `keys`, the sample a new point would replace.
    pub(crate) max_key: f32,
    /// The time at which this tree next accepts a point into its full sample.
    pub(crate) next_accept: u64,
    /// The time the keys are measured from (see `sampler`).
    pub(crate) key_epoch: u64,
    pub(crate) rng: Rng,
    /// Whether points have one dimension, so that [`Tree::score_sorted`] can score
    /// them; set again on restore.
    #[serde(skip)]
    one_dimensional: bool,
    /// In a one-dimensional tree, the level of each node by gap, its depth + 1 (the
    /// root's is 1), with [`DUPLICATE_LEVEL`] on duplicate nodes, framed by a 0 at each
    /// end, so that a scan for a shallower node stops at the ends without a bounds
    /// test; empty otherwise. Not in snapshots: rebuilt on restore.
    #[serde(skip)]
    levels: Vec<u16>,
    /// In a one-dimensional tree, node i's cut as [`ordered`] keys it (a duplicate
    /// node's is its run's value); empty otherwise. Not in snapshots, which hold the
    /// nodes [`Tree::relink`] makes: rebuilt on restore.
    #[serde(skip)]
    cuts: Vec<i32>,
}

/// An internal node on the path from the root to a leaf, and the leaves below it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PathNode {
    gap: u16,
    lo: u16,
    hi: u16,
}

impl PathNode {
    #[inline]
    fn new(gap: usize, lo: usize, hi: usize) -> Self {
        PathNode { gap: gap as u16, lo: lo as u16, hi: hi as u16 }
    }
    #[inline]
    fn gap(&self) -> usize {
        self.gap as usize
    }
    #[inline]
    fn range(&self) -> (usize, usize) {
        (self.lo as usize, self.hi as usize)
    }
}

/// How many trees [`Tree::descend_lanes`] descends together.
pub(crate) const LANES: usize = 4;

/// How many leaves [`Tree::extend_fixed`] reads between tests of whether its box holds x.
const CHECK_EVERY: usize = 8;

/// The most steps [`Tree::descend_lanes`] takes in lockstep, and the length of the
/// paths it writes (a tree of up to this many leaves is never deeper). Deeper trees
/// descend again, one by one.
const LOCKSTEP_DEPTH: usize = 256;

/// Paths start with room for this many nodes and grow (rarely) for deeper trees.
pub(crate) const PATH_CAPACITY: usize = 64;

/// Where a new point goes: beside the subtree over leaves `lo..=hi` (rooted at path
/// node `level`, or the leaf run when `level` is the path's length), under a new node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Placement {
    lo: usize,
    hi: usize,
    level: usize,
    dim: u8,
    cut: f32,
    right: bool,
}

impl Placement {
    /// The first point of an empty tree.
    const FIRST: Placement = Placement { lo: 0, hi: 0, level: 0, dim: DUPLICATE, cut: 0.0, right: true };
}

/// Where a point's descent through one tree ended: the leaves it reached (a run of
/// duplicates, usually one leaf), the root of that run if it is one, and the path of
/// nodes above, root first. [`Tree::walk`] and [`Tree::insert`] use it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Descent {
    /// `nodes[..depth]` is the path. Written by index into a buffer as long as the
    /// tree is deep, which is much cheaper per level than `Vec::push`.
    nodes: Vec<PathNode>,
    depth: usize,
    run_root: Option<usize>,
    leaf: (usize, usize),
    /// The point's values as [`ordered`] keys, which the cuts are compared with.
    keys: Vec<i32>,
}

impl Descent {
    fn path(&self) -> &[PathNode] {
        &self.nodes[..self.depth]
    }

    /// Keeps what a later [`Tree::commit`] needs of this descent: the path goes to the
    /// end of `paths`, the rest into the returned [`SavedDescent`].
    pub(crate) fn save(&self, paths: &mut Vec<PathNode>) -> SavedDescent {
        let start = paths.len();
        paths.extend_from_slice(self.path());
        SavedDescent { start, depth: self.depth, run_root: self.run_root, leaf: self.leaf }
    }

    /// Becomes the descent `saved` kept (its path in `paths`).
    pub(crate) fn restore(&mut self, saved: &SavedDescent, paths: &[PathNode]) {
        let path = &paths[saved.start..saved.start + saved.depth];
        if self.nodes.len() < path.len() {
            self.nodes.resize(path.len(), PathNode::default());
        }
        self.nodes[..path.len()].copy_from_slice(path);
        (self.depth, self.run_root, self.leaf) = (saved.depth, saved.run_root, saved.leaf);
    }

    /// Where the descent ended and how: the path, the run's root, the leaves.
    #[cfg(test)]
    pub(crate) fn outcome(&self) -> (&[PathNode], Option<usize>, (usize, usize)) {
        (self.path(), self.run_root, self.leaf)
    }
}

/// A [`Descent`] kept for a later commit (see [`Descent::save`]), its path elsewhere.
#[derive(Debug, Clone)]
pub(crate) struct SavedDescent {
    start: usize,
    depth: usize,
    run_root: Option<usize>,
    leaf: (usize, usize),
}

/// What an accepting tree drew in [`Tree::prepare`] and applies in [`Tree::commit`].
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    placement: Option<Placement>,
    rng: Rng,
}

/// Reusable buffers so that scoring and updating allocate nothing per point.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    pub(crate) descent: Descent,
    /// The descents of trees descended together (see [`Tree::descend_lanes`]); they
    /// share the point's keys in `descent.keys`.
    pub(crate) lanes: [Descent; LANES],
    /// One score per tree of the point being learned (see `Forest::score_judge_update`).
    pub(crate) scores: Vec<f64>,
    pub(crate) lo: Vec<f32>,
    pub(crate) hi: Vec<f32>,
    pub(crate) delete_path: Vec<PathNode>,
    /// Trees waiting for their commit, with their descents (see
    /// `Forest::score_judge_update`), whose paths are in `saved_paths`.
    pub(crate) pending: Vec<(usize, Pending, SavedDescent)>,
    pub(crate) saved_paths: Vec<PathNode>,
}

impl Scratch {
    pub(crate) fn new(dimensions: usize) -> Self {
        Scratch {
            descent: Descent::default(),
            lanes: Default::default(),
            scores: Vec::new(),
            lo: Vec::with_capacity(dimensions),
            hi: Vec::with_capacity(dimensions),
            delete_path: Vec::with_capacity(PATH_CAPACITY),
            pending: Vec::new(),
            saved_paths: Vec::new(),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        let lanes = self.lanes.iter().map(|d| d.nodes.capacity()).sum::<usize>();
        let paths = self.descent.nodes.capacity() + self.delete_path.capacity() + self.saved_paths.capacity() + lanes;
        paths * std::mem::size_of::<PathNode>()
            + (self.lo.capacity() + self.hi.capacity() + self.descent.keys.capacity()) * 4
            + self.scores.capacity() * 8
            + self.pending.capacity() * std::mem::size_of::<(usize, Pending, SavedDescent)>()
    }
}

// AWS's scoring functions, so that scores are on the same scale as its library and as
// Kinesis Analytics' ANOMALY_SCORE.
#[inline]
fn score_seen(depth: usize, mass: usize) -> f64 {
    // log2(mass + 1), from the table: quantised sensor values make duplicates common.
    1.0 / (depth as f64 + normalizer(mass))
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
    // log2 per tree per point shows in profiles; the masses are few, so keep a table.
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=MAX_SAMPLE_SIZE + 1).map(|m| ((m + 1) as f64).log2()).collect());
    table.get(tree_mass).copied().unwrap_or_else(|| ((tree_mass + 1) as f64).log2())
}

/// Sum over dimensions of (range of box ∪ x, the part of it outside the box).
///
/// Summed in four f32 lanes (dimension i in lane i % 4; a last pair in lanes 0 and 1,
/// a last single one in lane 0), and the lanes in f64, as (0 + 2) + (1 + 3); the two
/// totals are added in f64. This runs at every level of a multi-dimensional walk: on
/// x86-64 four dimensions are one SSE step ([`simd::ranges`]), the same sums to the
/// bit. f32 lanes are precise enough: both sums are of terms >= 0, so each is within a
/// few units in the last place of its f32 (a relative 1e-6 for 13 dimensions), and the
/// part outside the box is taken per dimension as the distance of x from the box, never
/// as a difference of large ranges. (f64 lanes cost a widening and two more additions
/// per four dimensions, some 16 instructions a level of a shingle-8 walk.)
#[inline]
pub(crate) fn ranges(lo: &[f32], hi: &[f32], x: &[f32]) -> (f64, f64) {
    // SAFETY: SSE2 is part of x86-64 itself, so every x86-64 processor has it.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        simd::ranges(lo, hi, x)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        ranges_in_order(lo, hi, x)
    }
}

/// [`ranges`] one dimension at a time, in the order its SIMD form adds them.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn ranges_in_order(lo: &[f32], hi: &[f32], x: &[f32]) -> (f64, f64) {
    let n = x.len();
    let (lo, hi) = (&lo[..n], &hi[..n]);
    let (mut inner, mut outside) = ([0.0f32; 4], [0.0f32; 4]);
    let tail = n - n % 4;
    for i in 0..n {
        let (l, h, v) = (lo[i], hi[i], x[i]);
        let above = if v > h { v - h } else { 0.0 };
        let below = if v < l { l - v } else { 0.0 };
        // A last pair goes to lanes 0 and 1, a last single dimension to lane 0.
        let lane = if i < tail { i % 4 } else { (i - tail) % 2 };
        inner[lane] += h - l;
        outside[lane] += above + below;
    }
    let total = |s: [f32; 4]| (f64::from(s[0]) + f64::from(s[2])) + (f64::from(s[1]) + f64::from(s[3]));
    let (inner, outside) = (total(inner), total(outside));
    (inner + outside, outside)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::ranges`] four dimensions at a time: (h - l) and (the part of x outside
    /// l..h) added to four f32 lanes each; a last pair, then a last single dimension,
    /// with zeros in the lanes above. Then the lanes in f64.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn ranges(lo: &[f32], hi: &[f32], x: &[f32]) -> (f64, f64) {
        let n = x.len();
        let (lo, hi) = (&lo[..n], &hi[..n]);
        let (mut inner, mut outside) = (_mm_setzero_ps(), _mm_setzero_ps());
        let mut add = |l: __m128, h: __m128, v: __m128| {
            let (span, out) = parts(l, h, v);
            inner = _mm_add_ps(inner, span);
            outside = _mm_add_ps(outside, out);
        };
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: i + 4 <= n, the length of all three: unaligned loads of four f32.
            let load = |v: &[f32]| unsafe { _mm_loadu_ps(v[i..].as_ptr()) };
            add(load(lo), load(hi), load(x));
            i += 4;
        }
        if i + 2 <= n {
            // SAFETY: i + 2 <= n: unaligned loads of two f32 (as one f64), zeros above.
            let load = |v: &[f32]| unsafe { _mm_castpd_ps(_mm_load_sd(v[i..].as_ptr().cast())) };
            add(load(lo), load(hi), load(x));
            i += 2;
        }
        if i < n {
            let load = |v: &[f32]| _mm_set_ss(v[i]);
            add(load(lo), load(hi), load(x));
        }
        // Lanes (0, 1) and (2, 3) widened and added, (0 + 2, 1 + 3), then the two.
        let total = |s: __m128| {
            let pairs = _mm_add_pd(_mm_cvtps_pd(s), _mm_cvtps_pd(_mm_movehl_ps(s, s)));
            _mm_cvtsd_f64(pairs) + _mm_cvtsd_f64(_mm_unpackhi_pd(pairs, pairs))
        };
        let (inner, outside) = (total(inner), total(outside));
        (inner + outside, outside)
    }

    /// (h - l, the part of v outside l..h), lane by lane.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn parts(l: __m128, h: __m128, v: __m128) -> (__m128, __m128) {
        let zero = _mm_setzero_ps();
        // maxps(d, 0) is d where d > 0, else +0.0: the scalar code's selects (v > h
        // exactly when v - h > 0, as subtraction is exact in sign).
        (_mm_sub_ps(h, l), _mm_add_ps(_mm_max_ps(_mm_sub_ps(v, h), zero), _mm_max_ps(_mm_sub_ps(l, v), zero)))
    }
}

/// Where a one-dimensional point falls in a tree: `below` cuts are below it, which
/// makes leaf `below` the one it reaches (the last of a run of duplicates if the point
/// lies above the run's value, whose own cuts are then below it, otherwise the first);
/// `through` cuts are at or below it, which ends that run when the point is its value
/// (only searched when the point falls on a run, else `below`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rank {
    below: usize,
    through: usize,
}

/// [`cuts_where`] over `N` trees' cuts (all of the same length) in lockstep.
#[inline(always)]
fn lockstep_cuts<const N: usize>(cuts: &[&[i32]; N], below: impl Fn(i32) -> bool) -> [usize; N] {
    let mut r = [0; N];
    let mut size = cuts[0].len();
    while size > 1 {
        let half = size / 2;
        for l in 0..N {
            r[l] = select_unpredictable(below(cuts[l][r[l] + half]), r[l] + half, r[l]);
        }
        size -= half;
    }
    for l in 0..N {
        r[l] += usize::from(below(cuts[l][r[l]]));
    }
    r
}

/// How many of `cuts`, in order (as a one-dimensional tree's are), satisfy `below`
/// (true for a prefix of them): a binary search of a fixed number of steps for a
/// length, without branches on the data.
#[inline(always)]
fn cuts_where(cuts: &[i32], below: impl Fn(i32) -> bool) -> usize {
    let (mut r, mut size) = (0, cuts.len());
    if size == 0 {
        return 0;
    }
    while size > 1 {
        let half = size / 2;
        r = select_unpredictable(below(cuts[r + half]), r + half, r);
        size -= half;
    }
    r + usize::from(below(cuts[r]))
}

/// Inserts `value` at `at` into `items`, then removes what is then at `gone`, by
/// moving only the items between the two places (see [`Tree::insert_evicting`]).
#[inline]
fn shift_in<T: Copy>(items: &mut [T], at: usize, value: T, gone: usize) {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match gone.cmp(&at) {
        // The item inserted is the one removed.
        Equal => {}
        Greater => {
            items.copy_within(at..gone - 1, at + 1);
            items[at] = value;
        }
        Less => {
            items.copy_within(gone + 1..at, gone);
            items[at - 1] = value;
        }
    }
}

/// Slots in [`point_keys`]' table: one for each dimension a node's `u8` can name.
const KEY_SLOTS: usize = u8::MAX as usize + 1;

/// The point's values as [`ordered`] keys, in a table that a node's dimension indexes
/// without a bounds test: a descent reads one at every level. The [`DUPLICATE`] slot
/// holds a key above every cut, so that [`Tree::descend_lanes`] goes right at a node of
/// a run of duplicates.
#[inline]
fn point_keys<'a>(keys: &'a mut Vec<i32>, x: &[f32]) -> &'a [i32; KEY_SLOTS] {
    keys.resize(KEY_SLOTS, 0);
    for (key, &v) in keys.iter_mut().zip(x) {
        *key = ordered(v);
    }
    keys[usize::from(DUPLICATE)] = i32::MAX;
    keys.first_chunk().unwrap_or_else(|| unreachable!("resized to KEY_SLOTS"))
}

/// Whether two points are the same (the duplicate test at a leaf).
#[inline]
fn same_point(a: &[f32], b: &[f32]) -> bool {
    let n = a.len();
    let b = &b[..n];
    (0..n).all(|i| a[i] == b[i])
}

impl Tree {
    pub(crate) fn new(sample_size: usize, seed: u64, one_dimensional: bool) -> Self {
        let (mut levels, mut nodes, mut cuts) = (Vec::new(), Vec::new(), Vec::new());
        if one_dimensional {
            levels.reserve(sample_size + 2);
            levels.extend([0, 0]);
            cuts.reserve(sample_size);
        } else {
            nodes.reserve(sample_size);
        }
        Tree {
            leaves: Vec::with_capacity(sample_size + 1),
            keys: Vec::with_capacity(sample_size + 1),
            nodes,
            root: 0,
            max_key: f32::NEG_INFINITY,
            next_accept: 0,
            key_epoch: 0,
            rng: Rng::new(seed),
            one_dimensional,
            levels,
            cuts,
        }
    }

    /// Rebuilds what snapshots leave out, for a tree that passed [`Tree::is_consistent`]:
    /// a one-dimensional tree's values from its references into `store`, and its levels
    /// and cuts from its nodes, which it then lets go.
    pub(crate) fn rebuild(&mut self, one_dimensional: bool, store: &PointStore) {
        self.one_dimensional = one_dimensional;
        self.levels.clear();
        self.cuts.clear();
        if !one_dimensional {
            return;
        }
        self.leaves.iter_mut().for_each(|leaf| *leaf = store.point(*leaf)[0].to_bits());
        self.reshape();
    }

    /// A one-dimensional tree's levels and cuts from its nodes, which it then lets go.
    /// A duplicate node's cut is its run's value, which [`Tree::score_sorted`] reads
    /// (older snapshots hold 0).
    fn reshape(&mut self) {
        self.levels.clear();
        let gaps = self.nodes.len();
        self.levels.resize(gaps + 2, 0);
        let mut stack = if gaps > 0 { vec![(self.root as usize, 1u16)] } else { Vec::new() };
        while let Some((gap, level)) = stack.pop() {
            let node = self.nodes[gap];
            self.levels[gap + 1] = level | mark(node.dim());
            if node.left() != 0 {
                stack.push((gap - node.left(), level + 1));
            }
            if node.right() != 0 {
                stack.push((gap + node.right(), level + 1));
            }
        }
        let cut = |(gap, node): (usize, &Node)| match node.dim() {
            DUPLICATE => ordered(self.value(gap)),
            _ => node.cut,
        };
        self.cuts = self.nodes.iter().enumerate().map(cut).collect();
        self.nodes = Vec::new();
    }

    /// Makes a one-dimensional tree's nodes, with pointers, and its root, from its cuts
    /// and levels, which are all such a tree keeps (it is searched, not descended, and
    /// insert and delete read the levels): for snapshots, and for tests. A node's parent
    /// is the deeper of the nearest shallower nodes on either side.
    pub(crate) fn relink(&mut self) {
        if !self.one_dimensional {
            return;
        }
        let levels = &self.levels;
        let dim = |gap: usize| if marked(levels[gap + 1]) { DUPLICATE } else { 0 };
        self.nodes = self.cuts.iter().enumerate().map(|(gap, &cut)| Node::keyed(dim(gap), cut)).collect();
        let nodes = &mut self.nodes;
        // (With the duplicates' marks: they give the same shape, see DUPLICATE_LEVEL.)
        let level = |g: usize| levels[g + 1];
        // Nodes whose right subtree is still open, shallowest first.
        let mut open: Vec<usize> = Vec::with_capacity(64);
        for gap in 0..nodes.len() {
            // The deeper open nodes end here; the shallowest of them is this one's left child.
            let mut left = None;
            while open.last().is_some_and(|&top| level(top) > level(gap)) {
                left = open.pop();
            }
            nodes[gap].set_left(left.map_or(0, |child| gap - child));
            // This node is the open parent's right child, until a later one takes its place.
            if let Some(&parent) = open.last() {
                nodes[parent].set_right(gap - parent);
            }
            open.push(gap);
        }
        self.root = open.first().map_or(0, |&root| root as u16);
    }

    /// A copy of this tree with its pointers set (see [`Tree::relink`]).
    #[cfg(test)]
    pub(crate) fn relinked(&self) -> Tree {
        let mut tree = self.clone();
        tree.relink();
        tree
    }

    /// A copy of this one-dimensional tree as a tree of the general kind, which the
    /// general walk takes: its pointers set, its values appended to `store` and
    /// referenced there.
    #[cfg(test)]
    pub(crate) fn as_general(&self, store: &mut PointStore) -> Tree {
        let mut tree = self.relinked();
        for leaf in &mut tree.leaves {
            store.push(&[f32::from_bits(*leaf)]);
            *leaf = store.newest();
        }
        tree.one_dimensional = false;
        (tree.levels, tree.cuts) = (Vec::new(), Vec::new());
        tree
    }

    pub(crate) fn one_dimensional(&self) -> bool {
        self.one_dimensional
    }

    pub(crate) fn mass(&self) -> usize {
        self.leaves.len()
    }

    /// Leaf i's value in a one-dimensional tree.
    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        f32::from_bits(self.leaves[i])
    }

    /// What this tree keeps of the point `x`, stored as `reference`: the reference, or
    /// in a one-dimensional tree the value.
    #[inline(always)]
    pub(crate) fn leaf_of(&self, reference: u32, x: &[f32]) -> u32 {
        match (self.one_dimensional, x) {
            (true, [only]) => only.to_bits(),
            _ => reference,
        }
    }

    /// Routes `x` from the root to its leaves. The tree must not be empty, nor
    /// one-dimensional unless [`Tree::relink`]ed.
    pub(crate) fn descend(&self, x: &[f32], descent: &mut Descent) {
        descent.depth = 0;
        descent.run_root = None;
        let n = self.leaves.len();
        if descent.nodes.len() < n {
            descent.nodes.resize(n, PathNode::default());
        }
        let (mut lo, mut hi) = (0, n - 1);
        let mut gap = self.root as usize;
        // With one dimension the value compared is always the same: read it once, so
        // each level waits on one load (the node), not two.
        let only = if let [only] = x { Some(ordered(*only)) } else { None };
        let keys = if only.is_none() { point_keys(&mut descent.keys, x) } else { &[0; KEY_SLOTS] };
        while lo < hi {
            let node = self.nodes[gap];
            let dim = node.dim();
            if dim == DUPLICATE {
                descent.run_root = Some(gap);
                break;
            }
            descent.nodes[descent.depth] = PathNode::new(gap, lo, hi);
            descent.depth += 1;
            // Which way a point goes is a coin flip to the branch predictor: select instead.
            let key = match only {
                Some(key) => key,
                None => keys[usize::from(dim)],
            };
            let left = key <= node.cut;
            lo = select_unpredictable(left, lo, gap + 1);
            hi = select_unpredictable(left, gap, hi);
            gap = select_unpredictable(left, gap.wrapping_sub(node.left()), gap + node.right());
        }
        descent.leaf = (lo, hi);
    }

    /// Descends every tree of `trees` (each with two leaves or more) with the same `x`,
    /// into `scratch.lanes`: the same descents as [`Tree::descend`], in lockstep. One
    /// tree's descent is a chain of dependent loads that waits on each; the chains of
    /// different trees are independent, so taking a level of each in turn lets the core
    /// overlap their waits, and the loop ends (a mispredicted branch) once per group
    /// instead of once per tree.
    pub(crate) fn descend_lanes(trees: &[Tree; LANES], x: &[f32], scratch: &mut Scratch) {
        Self::descend_lanes_within::<LOCKSTEP_DEPTH>(trees, x, scratch);
    }

    /// [`Tree::descend_lanes`] in at most `STEPS` steps in lockstep: a tree deeper
    /// than that descends again on its own. (Tests take few steps, to reach that case.)
    pub(crate) fn descend_lanes_within<const STEPS: usize>(trees: &[Tree; LANES], x: &[f32], scratch: &mut Scratch) {
        let keys = point_keys(&mut scratch.descent.keys, x);
        let descents = &mut scratch.lanes;
        let (mut lo, mut hi, mut gap) = ([0usize; LANES], [0usize; LANES], [0usize; LANES]);
        let mut depth = [0usize; LANES];
        for l in 0..LANES {
            if descents[l].nodes.len() < STEPS {
                descents[l].nodes.resize(STEPS, PathNode::default());
            }
            hi[l] = trees[l].leaves.len() - 1;
            gap[l] = trees[l].root as usize;
        }
        // Slices taken once: through the trees and descents, every step would load
        // each lane's pointers and lengths again.
        let nodes: [&[Node]; LANES] = std::array::from_fn(|l| &trees[l].nodes[..]);
        let paths = descents
            .each_mut()
            .map(|d| d.nodes.first_chunk_mut::<STEPS>().unwrap_or_else(|| unreachable!("resized to STEPS")));
        // Every lane takes every step, with nothing to tell whether it has arrived. A
        // lane at a leaf stays there by itself: the node it came from sends it the same
        // way again, along a link of 0. A lane at a run of duplicates goes right (see
        // `point_keys`), down to the run's last leaf, the run's root's right child. So
        // the path's nodes over two leaves or more are a prefix, which `depth` counts;
        // the run's nodes, if any, end it.
        // (The step indexes four paths, one per lane.)
        #[allow(clippy::needless_range_loop)]
        for step in 0..STEPS {
            // Whether any lane is still above its leaves after this step: the sum of
            // the lanes' spans, one test (an OR of the lanes' tests became a branch per
            // lane, each a coin toss near the end).
            let mut spans = 0;
            for l in 0..LANES {
                let node = nodes[l][gap[l]];
                let inner = lo[l] < hi[l];
                paths[l][step] = PathNode::new(gap[l], lo[l], hi[l]);
                depth[l] += usize::from(inner);
                let left = keys[usize::from(node.dim())] <= node.cut;
                lo[l] = select_unpredictable(left, lo[l], gap[l] + 1);
                hi[l] = select_unpredictable(left, gap[l], hi[l]);
                gap[l] = select_unpredictable(left, gap[l].wrapping_sub(node.left()), gap[l] + node.right());
                spans += hi[l] - lo[l];
            }
            if spans == 0 {
                break;
            }
        }
        for l in 0..LANES {
            let descent = &mut descents[l];
            if lo[l] < hi[l] {
                // Deeper than the lockstep goes (a tree of more than STEPS leaves,
                // rarely): descended again on its own.
                trees[l].descend(x, descent);
                continue;
            }
            // A run of duplicates stops the descent at its root, the first of its nodes.
            let path = &descent.nodes[..depth[l]];
            let run = path.iter().rev().take_while(|p| nodes[l][p.gap()].dim() == DUPLICATE).count();
            descent.depth = depth[l] - run;
            (descent.run_root, descent.leaf) = match run {
                0 => (None, (lo[l], hi[l])),
                _ => (Some(path[descent.depth].gap()), path[descent.depth].range()),
            };
        }
    }

    /// Grows the box `lo..hi` of one-dimensional points by the points of `leaves`, and
    /// says whether it now holds `x`. In one dimension every cut splits by value, so
    /// the leaves are sorted and a run's box spans its first and last point.
    #[inline(always)]
    fn grow_sorted(store: &PointStore, leaves: &[u32], x: &[f32], lo: &mut [f32], hi: &mut [f32]) -> bool {
        let ([l], [h], [first, .., last] | [first @ last]) = (lo, hi, leaves) else {
            return false;
        };
        let (v, w) = (store.point(*first)[0], store.point(*last)[0]);
        *l = if v < *l { v } else { *l };
        *h = if w > *h { w } else { *h };
        *l <= x[0] && x[0] <= *h
    }

    /// Grows the box `lo..hi` by the points of `leaves`, in any number of dimensions,
    /// reading them all: the walk's range test, next, tells whether the box holds x.
    #[inline(always)]
    fn grow_any(store: &PointStore, leaves: &[u32], lo: &mut [f32], hi: &mut [f32]) {
        for &reference in leaves {
            let p = store.point(reference);
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(p) {
                *l = if v < *l { v } else { *l };
                *h = if v > *h { v } else { *h };
            }
        }
    }

    /// Grows the box `lo..hi` of `N`-dimensional points by the points of `leaves`,
    /// unless it comes to hold `x` first: then it returns true and may stop early.
    ///
    /// A walk ends at the first box that holds x, which is usually the largest sibling
    /// it reads (a third of its leaves or more); the first few points of that sibling
    /// often close the box around x already, and the rest need not be read.
    #[inline(always)]
    fn extend_fixed<const N: usize>(
        store: &PointStore,
        leaves: &[u32],
        x: &[f32; N],
        lo: &mut [f32; N],
        hi: &mut [f32; N],
    ) -> bool {
        let (mut l, mut h) = (*lo, *hi);
        let holds = |l: &[f32; N], h: &[f32; N]| (0..N).fold(true, |all, i| all & (l[i] <= x[i]) & (x[i] <= h[i]));
        let mut inside = false;
        let Some(point) = store.fixed_points::<N>() else {
            return false;
        };
        for chunk in leaves.chunks(CHECK_EVERY) {
            for &reference in chunk {
                let p = point(reference);
                // Selects, not branches or f32::min: they compile to minps/maxps, and
                // the store holds no NaN. The box is the first operand, so that the
                // result lands in its register without a copy.
                for i in 0..N {
                    l[i] = if l[i] < p[i] { l[i] } else { p[i] };
                    h[i] = if h[i] > p[i] { h[i] } else { p[i] };
                }
            }
            inside = holds(&l, &h);
            if inside {
                break;
            }
        }
        (*lo, *hi) = (l, h);
        inside
    }

    /// Climbs from the leaves `a..=b` (all the point `leaf`) towards the root along
    /// `path`, growing the box `lo..hi` (scratch space; it starts as `leaf`) by each
    /// node's other subtree, and calls `visit(level, node's leaves, lo, hi, range of
    /// box ∪ x, part outside the box)` for every node until `x` is inside the box
    /// (boxes only grow upwards, so nothing above can matter then).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn climb(
        &self,
        store: &PointStore,
        path: &[PathNode],
        leaves: (usize, usize),
        x: &[f32],
        leaf: &[f32],
        lo: &mut Vec<f32>,
        hi: &mut Vec<f32>,
        visit: impl FnMut(usize, (usize, usize), &[f32], &[f32], f64, f64),
    ) {
        // The box starts as the leaf's point.
        lo.resize(x.len(), 0.0);
        hi.resize(x.len(), 0.0);
        // Up to 16 dimensions the box lives in fixed-size arrays, which the compiler
        // keeps in registers and turns into a few SIMD min/max per point. The size is
        // chosen once per climb: chosen at each level, the compiler set up the tests of
        // all fifteen sizes at the start of every walk, more work than the levels'.
        macro_rules! fixed {
            ($($n:literal)*) => {
                match x.len() {
                    1 => {
                        lo.copy_from_slice(leaf);
                        hi.copy_from_slice(leaf);
                        self.climb_growing(path, leaves, lo, hi, visit, |sibling, lo, hi| {
                            (!Self::grow_sorted(store, sibling, x, lo, hi)).then(|| ranges(lo, hi, x))
                        })
                    }
                    $($n => {
                        let (Ok(x), Ok(leaf)) = (<&[f32; $n]>::try_from(x), <&[f32; $n]>::try_from(leaf)) else { return };
                        let (Ok(start_lo), Ok(start_hi)) = (<&mut [f32; $n]>::try_from(&mut lo[..]), <&mut [f32; $n]>::try_from(&mut hi[..])) else { return };
                        (*start_lo, *start_hi) = (*leaf, *leaf);
                        self.climb_growing(path, leaves, lo, hi, visit, |sibling, lo, hi| {
                            let (Ok(lo), Ok(hi)) = (<&mut [f32; $n]>::try_from(lo), <&mut [f32; $n]>::try_from(hi)) else {
                                return None;
                            };
                            (!Self::extend_fixed(store, sibling, x, lo, hi)).then(|| ranges(lo, hi, x))
                        })
                    })*
                    _ => {
                        lo.copy_from_slice(leaf);
                        hi.copy_from_slice(leaf);
                        self.climb_growing(path, leaves, lo, hi, visit, |sibling, lo, hi| {
                            Self::grow_any(store, sibling, lo, hi);
                            Some(ranges(lo, hi, x))
                        })
                    }
                }
            };
        }
        fixed!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    /// [`Tree::climb`] with `grow(leaves, lo, hi)` growing the box by a sibling's
    /// leaves and returning its [`ranges`] with x, or None if it came to hold x (it may
    /// then have stopped reading early).
    #[inline(always)]
    fn climb_growing(
        &self,
        path: &[PathNode],
        (mut a, mut b): (usize, usize),
        lo: &mut [f32],
        hi: &mut [f32],
        mut visit: impl FnMut(usize, (usize, usize), &[f32], &[f32], f64, f64),
        grow: impl Fn(&[u32], &mut [f32], &mut [f32]) -> Option<(f64, f64)>,
    ) {
        // (A count, not `enumerate`, which would take each level from the node's address.)
        for level in (0..path.len()).rev() {
            let (first, last) = path[level].range();
            // The sibling lies left or right of a..=b at random: selects, not a branch.
            let left = first < a;
            let (start, end) = (select_unpredictable(left, first, b + 1), select_unpredictable(left, a, last + 1));
            let Some((merged, outside)) = grow(&self.leaves[start..end], lo, hi) else {
                break;
            };
            (a, b) = (first, last);
            if outside <= 0.0 {
                break;
            }
            visit(level, (a, b), lo, hi, merged, outside);
        }
    }

    /// A random cut of the box ∪ x (dimension chosen in proportion to its range); Some
    /// if it separates x from the box.
    fn draw_cut(lo: &[f32], hi: &[f32], x: &[f32], merged: f64, rng: &mut Rng) -> Option<(u8, f32, bool)> {
        let mut r = rng.next_f64() * merged;
        let last = x.len() - 1;
        for (d, ((&l, &h), &v)) in lo.iter().zip(hi).zip(x).enumerate() {
            // Selects, not f32::min/max and their NaN handling: no NaN gets here.
            let (mlo, mhi) = (if v < l { v } else { l }, if v > h { v } else { h });
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

    /// The anomaly score of `x` in this tree. [`Tree::walk`] does the work after the
    /// descent, and with `rng` also says where inserting `x` would put it (the same
    /// walk serves both; pass the placement to [`Tree::insert`] with the same descent).
    ///
    /// The walk goes from x's leaf towards the root; at each node, x is separated from
    /// the node's box with probability (range of box ∪ x − range of box) / range of
    /// box ∪ x, which mixes in the score of being isolated at that depth. Boxes only
    /// grow upwards, so once x is inside one nothing above changes the score, and no
    /// cut above can separate x: the walk stops there. Insertion uses the same draws
    /// bottom-up, keeping the highest separating cut, which has the same distribution
    /// as the paper's top-down insertion.
    pub(crate) fn score(&self, x: &[f32], store: &PointStore, scratch: &mut Scratch) -> f64 {
        if let ([only], true) = (x, self.one_dimensional) {
            return self.score_sorted(*only);
        }
        let Scratch { descent, lo, hi, .. } = scratch;
        if !self.leaves.is_empty() {
            self.descend(x, descent);
        }
        self.walk(x, store, descent, lo, hi, None).0
    }

    /// [`Tree::score`] after the descent, and with `rng` also the placement of `x`. Not
    /// for a one-dimensional tree, whose leaves are values (see [`Tree::walk_ranked`]).
    pub(crate) fn walk(
        &self,
        x: &[f32],
        store: &PointStore,
        descent: &Descent,
        lo: &mut Vec<f32>,
        hi: &mut Vec<f32>,
        mut rng: Option<&mut Rng>,
    ) -> (f64, Option<Placement>) {
        let n = self.leaves.len();
        if n == 0 {
            return (0.0, rng.map(|_| Placement::FIRST));
        }
        let (a, b) = descent.leaf;
        let path = descent.path();
        let leaf_depth = path.len();
        let leaf = store.point(self.leaves[a]);
        if same_point(leaf, x) {
            let mass = b - a + 1;
            let score = damp(mass, n) * score_seen(leaf_depth, mass) * normalizer(n);
            // x is inside every box above its leaf: no cut can separate it; it joins the
            // leaf. The node's cut is the run's value, which keeps a one-dimensional
            // tree's cuts in order for [`Tree::score_sorted`].
            let joined = Placement { lo: a, hi: b, level: leaf_depth, dim: DUPLICATE, cut: x[0], right: true };
            return (score, rng.map(|_| joined));
        }
        let mut score = score_unseen(leaf_depth);
        // At the leaf the box is a single point, so a cut always separates x (the
        // fallback only covers rounding at the ends of a range).
        let mut placement = rng.as_deref_mut().map(|rng| {
            let (merged, _) = ranges(leaf, leaf, x);
            let (dim, cut, right) =
                Self::draw_cut(leaf, leaf, x, merged, rng).unwrap_or_else(|| Self::cut_between(leaf, x));
            Placement { lo: a, hi: b, level: leaf_depth, dim, cut, right }
        });
        self.climb(store, path, (a, b), x, leaf, lo, hi, |level, (first, last), lo, hi, merged, outside| {
            let p = outside / merged;
            score = (1.0 - p) * score + p * score_unseen(level);
            if let Some(rng) = rng.as_deref_mut() {
                if let Some((dim, cut, right)) = Self::draw_cut(lo, hi, x, merged, rng) {
                    placement = Some(Placement { lo: first, hi: last, level, dim, cut, right });
                }
            }
        });
        (score * normalizer(n), placement)
    }

    /// [`Tree::score`] of a one-dimensional point, bit for bit the same, without a
    /// descent. In one dimension the leaves are sorted, and so are the cuts: node i's
    /// lies between leaves i and i + 1 (a duplicate node's is its run's value). So the
    /// leaves x reaches are found by a binary search over the cuts, a fixed number of
    /// steps whose loads the core overlaps across trees (see [`Tree::ranks`]), where a
    /// descent waits on each of its ten or so levels in turn.
    ///
    /// The walk ([`Tree::walk_ranked`]) then visits the ancestors of x's run that end where
    /// the run ends on x's side, deepest first. Say x lies above the run a..=b: they are
    /// the ancestors deeper than node b (x's path turns left there, and every box above
    /// holds x), which lie to the left of a, each the nearest node shallower than the
    /// one before; each spans from the nearest gap shallower than itself to b. So
    /// `levels`, scanned leftwards from a, gives each one's depth and first leaf. Below
    /// the run, the mirror image.
    pub(crate) fn score_sorted(&self, x: f32) -> f64 {
        self.score_ranked(x, self.rank(x))
    }

    /// Where a one-dimensional `x` falls in this tree (see [`Rank`]).
    pub(crate) fn rank(&self, x: f32) -> Rank {
        let key = ordered(x);
        let below = cuts_where(&self.cuts, |cut| cut < key);
        // Cuts are in order: some cut is x's own only if the first not below x is.
        let on_run = self.cuts.get(below) == Some(&key);
        let through = if on_run { cuts_where(&self.cuts, |cut| cut <= key) } else { below };
        Rank { below, through }
    }

    /// Where a one-dimensional `x` falls in each of `trees` (see [`Tree::score_sorted`]),
    /// searched in lockstep so that the core overlaps the searches' loads; None unless
    /// `trees` are a group of one-dimensional trees of the same size, with two leaves or
    /// more.
    pub(crate) fn ranks<const N: usize>(trees: &[Tree], x: &[f32]) -> Option<[Rank; N]> {
        let (trees, [x]) = (<&[Tree; N]>::try_from(trees).ok()?, x) else {
            return None;
        };
        let gaps = trees[0].cuts.len();
        if gaps == 0 || trees.iter().any(|t| !t.one_dimensional || t.cuts.len() != gaps) {
            return None;
        }
        let key = ordered(*x);
        let cuts: [&[i32]; N] = std::array::from_fn(|l| &trees[l].cuts[..gaps]);
        let below = lockstep_cuts(&cuts, |cut| cut < key);
        // A second search only where x is a cut's value, the value of a run of
        // duplicates (integer values) as a rule, whose end is wanted.
        let on_run = (0..N).any(|l| below[l] < gaps && cuts[l][below[l]] == key);
        let through = if on_run { lockstep_cuts(&cuts, |cut| cut <= key) } else { below };
        Some(std::array::from_fn(|l| Rank { below: below[l], through: through[l] }))
    }

    /// [`Tree::score_sorted`] of `x` where it falls, `rank` (see [`Rank`]).
    pub(crate) fn score_ranked(&self, x: f32, rank: Rank) -> f64 {
        self.walk_ranked(x, rank, None).0
    }

    /// [`Tree::score_ranked`], and with `rng` also where inserting `x` would put it:
    /// a cut drawn over box ∪ x at each node the walk visits, the highest that
    /// separates x kept, as [`Tree::walk`] draws them on a descent, so the same draws
    /// give the same placement. Pass it to [`Tree::insert`].
    #[inline(always)]
    pub(crate) fn walk_ranked(&self, x: f32, rank: Rank, mut rng: Option<&mut Rng>) -> (f64, Option<Placement>) {
        let n = self.leaves.len();
        if n == 0 {
            return (0.0, rng.map(|_| Placement::FIRST));
        }
        let (cuts, levels) = (&self.cuts[..], &self.levels[..]);
        let gaps = cuts.len();
        // Whether node g is a duplicate (gap `gaps` is the frame's: no).
        let duplicate = |g: usize| marked(levels[g + 1]);
        let r = rank.below;
        let leaf = self.value(r);
        // The run r belongs to: its duplicate nodes are the ones whose cut is the
        // run's value (integer sensor values make runs of tens of leaves, so they are
        // searched, not walked). Usually r is a single leaf, which one load tells.
        let (mut a, mut b) = (r, r);
        let run = ordered(leaf);
        if a > 0 && duplicate(a - 1) {
            a = cuts_where(&cuts[..a], |cut| cut < run);
        }
        if b < gaps && duplicate(b) {
            // Past the duplicates, the node after the run may hold the run's value too.
            // (At least one past b: only a tree whose cuts are out of order, from a
            // corrupted snapshot, could give less.)
            b = if leaf == x { rank.through } else { b + cuts_where(&cuts[b..], |cut| cut <= run) }.max(b + 1);
            b -= usize::from(!duplicate(b - 1));
        }
        // The levels of the nodes at the run's two ends (gaps a - 1 and b); the run's
        // parent is the deeper one, so its own depth is that node's level.
        let (before, after) = (levels[a], levels[b + 1]);
        let leaf_depth = before.max(after);
        if leaf == x {
            let mass = b - a + 1;
            let score = damp(mass, n) * score_seen(leaf_depth.into(), mass) * normalizer(n);
            // x joins the run: no cut can separate it. The node's cut is the run's value.
            let joined = Placement { lo: a, hi: b, level: leaf_depth.into(), dim: DUPLICATE, cut: x, right: true };
            return (score, rng.map(|_| joined));
        }
        let mut score = score_unseen(leaf_depth.into());
        // Distances as the walk takes them (x - leaf above the run, leaf - x below):
        // a difference and its negation round alike, so the absolute value is the same.
        let outside = f64::from((x - leaf).abs());
        let up = x > leaf;
        // A cut over box ∪ x, from its lower end, as `draw_cut` takes it in one
        // dimension; `far` is the box's end away from x. Some if it separates x.
        let cut_on = |far: f32, merged: f64, rng: &mut Rng| {
            let r = rng.next_f64() * merged;
            let (low, high) = if up { (far, x) } else { (x, far) };
            let span = f64::from(high) - f64::from(low);
            let cut = (f64::from(low) + r.min(span)) as f32;
            let separates = if up { leaf <= cut && cut < x } else { x <= cut && cut < leaf };
            separates.then_some(cut)
        };
        // At the leaf the box is a single point, so a cut always separates x (the
        // fallback only covers rounding at the ends of a range).
        let mut placement = rng.as_deref_mut().map(|rng| {
            let cut = cut_on(leaf, outside, rng).unwrap_or(if up { leaf } else { x });
            Placement { lo: a, hi: b, level: leaf_depth.into(), dim: 0, cut, right: up }
        });
        let step = if up { usize::MAX } else { 1 };
        let stop = if up { after } else { before };
        let (mut at, mut level) = if up { (a, before) } else { (b + 1, after) };
        while level > stop {
            // This ancestor spans to the nearest shallower node on x's side of the run
            // (found before a 0 at the ends): the leaf next to that gap is its last one.
            let mut edge = at.wrapping_add(step);
            while levels[edge] >= level {
                edge = edge.wrapping_add(step);
            }
            let end = if up { edge } else { edge - 1 };
            let far = self.value(end);
            let span = (far - leaf).abs();
            let merged = f64::from(span) + outside;
            let p = outside / merged;
            let depth = usize::from(level) - 1;
            score = (1.0 - p) * score + p * score_unseen(depth);
            if let Some(rng) = rng.as_deref_mut() {
                if let Some(cut) = cut_on(far, merged, rng) {
                    let (lo, hi) = if up { (end, b) } else { (a, end) };
                    placement = Some(Placement { lo, hi, level: depth, dim: 0, cut, right: up });
                }
            }
            (at, level) = (edge, levels[edge]);
        }
        (score * normalizer(n), placement)
    }

    /// Whether this tree's sampler keeps the point arriving at time `t`.
    pub(crate) fn accepts(&self, t: u64, sample_size: usize) -> bool {
        self.mass() < sample_size || t >= self.next_accept
    }

    /// Takes the point `x` (kept as `point`, see [`Tree::leaf_of`]) arriving at time
    /// `t`: the sampler decides whether this tree keeps it; if so it is inserted and the
    /// sample with the largest key evicted. Returns this tree's score of `x` when `scored`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn(
        &mut self,
        t: u64,
        x: &[f32],
        point: u32,
        scored: bool,
        params: &ForestParams,
        store: &PointStore,
        scratch: &mut Scratch,
    ) -> Option<f64> {
        let accepts = self.accepts(t, params.sample_size);
        let Scratch { descent, lo, hi, delete_path, .. } = scratch;
        let (score, pending) = self.prepare(x, scored, accepts, store, descent, lo, hi);
        if let Some(pending) = pending {
            self.commit(t, pending, descent, point, params, delete_path);
        }
        score
    }

    /// [`Tree::learn`] of a scored one-dimensional point that this tree accepts, where
    /// it falls (`rank`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn_ranked(
        &mut self,
        t: u64,
        x: f32,
        rank: Rank,
        point: u32,
        params: &ForestParams,
        scratch: &mut Scratch,
    ) -> f64 {
        let (score, pending) = self.prepare_ranked(x, rank, true, true);
        if let Some(pending) = pending {
            self.commit(t, pending, &scratch.descent, point, params, &mut scratch.delete_path);
        }
        score.unwrap_or(0.0)
    }

    /// [`Tree::learn`] of a scored point on the descent of lane `lane` (see
    /// [`Tree::descend_lanes`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn_lane(
        &mut self,
        t: u64,
        x: &[f32],
        reference: u32,
        params: &ForestParams,
        store: &PointStore,
        scratch: &mut Scratch,
        lane: usize,
    ) -> f64 {
        let accepts = self.accepts(t, params.sample_size);
        let Scratch { lanes, lo, hi, delete_path, .. } = scratch;
        let descent = &lanes[lane];
        let (score, pending) = self.prepare_descended(x, true, accepts, store, descent, lo, hi);
        if let Some(pending) = pending {
            self.commit(t, pending, descent, reference, params, delete_path);
        }
        score.unwrap_or(0.0)
    }

    /// The first half of learning, which leaves the tree as it is: scores `x` (when
    /// `scored`) and, if the tree `accepts` it, draws where it will go.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare(
        &self,
        x: &[f32],
        scored: bool,
        accepts: bool,
        store: &PointStore,
        descent: &mut Descent,
        lo: &mut Vec<f32>,
        hi: &mut Vec<f32>,
    ) -> (Option<f64>, Option<Pending>) {
        // A tree that neither keeps the point nor scores it has nothing to do.
        if !(accepts || scored) {
            return (None, None);
        }
        if let ([only], true) = (x, self.one_dimensional) {
            return self.prepare_ranked(*only, self.rank(*only), scored, accepts);
        }
        if self.mass() > 0 {
            self.descend(x, descent);
        }
        self.prepare_descended(x, scored, accepts, store, descent, lo, hi)
    }

    /// [`Tree::prepare`] of a one-dimensional `x` in a one-dimensional tree, where it
    /// falls (`rank`): no descent.
    #[inline]
    pub(crate) fn prepare_ranked(
        &self,
        x: f32,
        rank: Rank,
        scored: bool,
        accepts: bool,
    ) -> (Option<f64>, Option<Pending>) {
        if !accepts {
            return (Some(self.score_ranked(x, rank)), None);
        }
        let mut rng = self.rng.clone();
        let (score, placement) = self.walk_ranked(x, rank, Some(&mut rng));
        (scored.then_some(score), Some(Pending { placement, rng }))
    }

    /// [`Tree::prepare`] on a descent already made.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn prepare_descended(
        &self,
        x: &[f32],
        scored: bool,
        accepts: bool,
        store: &PointStore,
        descent: &Descent,
        lo: &mut Vec<f32>,
        hi: &mut Vec<f32>,
    ) -> (Option<f64>, Option<Pending>) {
        if !accepts {
            return (Some(self.walk(x, store, descent, lo, hi, None).0), None);
        }
        let mut rng = self.rng.clone();
        let (score, placement) = self.walk(x, store, descent, lo, hi, Some(&mut rng));
        (scored.then_some(score), Some(Pending { placement, rng }))
    }

    /// The second half: takes the point (kept as `point`, see [`Tree::leaf_of`]) into
    /// the sample where [`Tree::prepare`] placed it (on the same `descent`), and evicts
    /// the sample with the largest key.
    pub(crate) fn commit(
        &mut self,
        t: u64,
        pending: Pending,
        descent: &Descent,
        point: u32,
        params: &ForestParams,
        delete_path: &mut Vec<PathNode>,
    ) {
        let (sample_size, decay) = (params.sample_size, params.time_decay);
        let filling = self.mass() < sample_size;
        let epoch = sampler::epoch(decay, t);
        if epoch != self.key_epoch {
            let shift = (decay * (epoch - self.key_epoch) as f64) as f32;
            self.keys.iter_mut().for_each(|k| *k += shift);
            self.max_key += shift;
            self.key_epoch = epoch;
        }
        let t_rel = (t - epoch) as f64;
        let Pending { placement, mut rng } = pending;
        let key = if filling {
            sampler::unconditional_key(&mut rng, decay, t_rel)
        } else {
            sampler::accepted_key(&mut rng, decay, t_rel, self.max_key)
        };
        // The new key is below the largest, which is the sample that goes if full.
        let evicted = match placement {
            Some(placement) if !filling && self.one_dimensional => {
                self.insert_evicting(placement, point, key);
                true
            }
            Some(placement) => {
                self.insert(placement, descent, point, key);
                false
            }
            None => false,
        };
        if filling {
            self.max_key = if key > self.max_key { key } else { self.max_key };
        } else if !evicted {
            self.evict(delete_path);
        }
        self.next_accept = if self.mass() < sample_size {
            t + 1
        } else {
            sampler::next_acceptance(&mut rng, decay, t, t_rel, self.max_key)
        };
        self.rng = rng;
    }

    /// Inserts `point` (as this tree keeps it, see [`Tree::leaf_of`]; with sampler key
    /// `key`) where `placement` says; `descent` must be the one the placement was chosen
    /// on (a one-dimensional tree reads none: see [`Tree::walk_ranked`]).
    pub(crate) fn insert(&mut self, placement: Placement, descent: &Descent, point: u32, key: f32) {
        if self.leaves.is_empty() {
            self.leaves.push(point);
            self.keys.push(key);
            return;
        }
        let Placement { lo, hi, level, dim, cut, right } = placement;
        let gap = if right { hi } else { lo };
        let leaf = if right { hi + 1 } else { lo };
        self.leaves.insert(leaf, point);
        self.keys.insert(leaf, key);
        if self.one_dimensional {
            self.cuts.insert(gap, ordered(cut));
            Self::lower_subtree(&mut self.levels, placement);
            return;
        }
        let path = &descent.path()[..level];
        // The subtree the new node goes above: a path node, a duplicate run, or a leaf.
        let subtree = match descent.path().get(level) {
            Some(node) => Some(node.gap()),
            None => descent.run_root,
        };
        // Node indices at or after the new gap move one place right.
        let moved = |g: usize| if g >= gap { g + 1 } else { g };
        // The new node's link to that subtree (0 for a leaf), on the side away from the
        // new leaf: which side, and whether a leaf, are coin tosses, so selects.
        let s = subtree.unwrap_or(gap);
        let far = select_unpredictable(right, gap.wrapping_sub(s), moved(s).wrapping_sub(gap));
        let mut node = Node::new(dim, cut, 0, 0);
        node.set_link(right, select_unpredictable(subtree.is_some(), far, 0));
        self.root = if level == 0 { gap as u16 } else { moved(self.root as usize) as u16 };
        self.nodes.insert(gap, node);
        // Re-point the path, in the new numbering, down to the new node.
        for (j, parent) in path.iter().enumerate() {
            let child = path.get(j + 1).map_or(gap, |c| moved(c.gap()));
            self.point_to(moved(parent.gap()), child);
        }
    }

    /// Sets `parent`'s pointer on the side of `child` (both node indices).
    fn point_to(&mut self, parent: usize, child: usize) {
        // Left or right at random, for every node of a path: selects, not a branch.
        let left = child < parent;
        let distance = select_unpredictable(left, parent.wrapping_sub(child), child.wrapping_sub(parent));
        self.nodes[parent].set_link(left, distance);
    }

    /// Deletes leaf `i`: its parent node goes, its sibling subtree moves up a level.
    pub(crate) fn delete(&mut self, i: usize, path: &mut Vec<PathNode>) {
        let n = self.leaves.len();
        self.leaves.remove(i);
        self.keys.remove(i);
        if n == 1 {
            return;
        }
        if self.one_dimensional {
            self.delete_by_levels(i);
            return;
        }
        // Find the leaf by position: the path of nodes above it.
        path.clear();
        let (mut lo, mut hi) = (0, n - 1);
        let mut gap = self.root as usize;
        while lo < hi {
            path.push(PathNode::new(gap, lo, hi));
            let node = self.nodes[gap];
            let left = i <= gap;
            lo = select_unpredictable(left, lo, gap + 1);
            hi = select_unpredictable(left, gap, hi);
            gap = select_unpredictable(left, gap.wrapping_sub(node.left()), gap + node.right());
        }
        let Some(&last) = path.last() else {
            return;
        };
        let parent = last.gap();
        let node = self.nodes[parent];
        // The sibling: a node index if its link is not 0, else a leaf (selects: the
        // side is a coin toss).
        let left = i <= parent;
        let link = select_unpredictable(left, node.right(), node.left());
        let sibling = select_unpredictable(left, parent + link, parent.wrapping_sub(link));
        let moved = |g: usize| if g > parent { g - 1 } else { g };
        let ancestors = path.len() - 1;
        if ancestors == 0 {
            self.root = select_unpredictable(link != 0, moved(sibling), 0) as u16;
        } else {
            self.root = moved(self.root as usize) as u16;
        }
        self.nodes.remove(parent);
        for j in 0..ancestors {
            let above = moved(path[j].gap());
            if j + 1 < ancestors {
                self.point_to(above, moved(path[j + 1].gap()));
            } else {
                // The sibling takes the parent's place, on its side: its node, or (a
                // leaf) the neighbouring leaf on that side, a link of 0.
                let far = select_unpredictable(link != 0, moved(sibling).abs_diff(above), 0);
                self.nodes[above].set_link(parent < path[j].gap(), far);
            }
        }
    }

    /// [`Tree::delete`]'s second half in a one-dimensional tree, leaf `i` already gone
    /// from `leaves`: its parent is the deeper of the nodes beside it, and the sibling
    /// subtree on the other side (the nodes deeper than the parent there) moves up a
    /// level, into the parent's place.
    fn delete_by_levels(&mut self, i: usize) {
        let parent = Self::lift_sibling(&mut self.levels, i);
        self.cuts.remove(parent);
    }

    /// The levels' part of inserting where `placement` says in a one-dimensional tree:
    /// levels alone give its shape, so the subtree goes one level down, under the new
    /// node at its place.
    fn lower_subtree(levels: &mut Vec<u16>, placement: Placement) {
        let Placement { lo, hi, level, dim, right, .. } = placement;
        let gap = if right { hi } else { lo };
        levels[lo + 1..hi + 1].iter_mut().for_each(|d| *d += 1);
        levels.insert(gap + 1, (level as u16 + 1) | mark(dim));
    }

    /// The levels' part of deleting leaf `i` (of two or more) in a one-dimensional tree:
    /// the sibling moves up and the parent's level goes. Returns the parent's gap.
    fn lift_sibling(levels: &mut Vec<u16>, i: usize) -> usize {
        // Node g's level is levels[g + 1]: leaf i lies between levels[i] and levels[i + 1].
        let (before, after) = (levels[i], levels[i + 1]);
        let (parent, level, step) = if after > before { (i, after, 1) } else { (i - 1, before, usize::MAX) };
        // The sibling is on the side away from i: the nodes deeper than the parent there.
        let mut k = select_unpredictable(after > before, i + 2, i.wrapping_sub(1));
        while levels[k] > level {
            levels[k] -= 1;
            k = k.wrapping_add(step);
        }
        levels.remove(parent + 1);
        parent
    }

    /// [`Tree::insert`] and then [`Tree::evict`] in a full one-dimensional tree, with one
    /// shift of each array instead of two: the elements between the new leaf (node) and
    /// the one that goes move one place, those beyond neither. `key` must be below
    /// `max_key`, as an accepted point's is.
    fn insert_evicting(&mut self, placement: Placement, point: u32, key: f32) {
        let Placement { lo, hi, cut, right, .. } = placement;
        let (gap, at) = if right { (hi, hi + 1) } else { (lo, lo) };
        Self::lower_subtree(&mut self.levels, placement);
        // The evicted leaf's position before the insert, and after it (`evicted`: the
        // numbering that `evict` would see, which the rest uses).
        let position = self.largest_key_position();
        let evicted = position + usize::from(position >= at);
        // The run's last leaf, as `evict` finds it, over the nodes as the insert leaves
        // them (as the levels are now).
        let mut last = evicted;
        while last < self.leaves.len() && marked(self.levels[last + 1]) {
            last += 1;
        }
        if last != evicted {
            // The evicted leaf trades places with the run's last, which may be the new
            // one (then removed from where it was inserted: it stays in the evicted's place).
            let (moved_leaf, moved_key) = if last == at {
                (point, key)
            } else {
                (self.leaves[last - usize::from(last > at)], self.keys[last - usize::from(last > at)])
            };
            (self.leaves[position], self.keys[position]) = (moved_leaf, moved_key);
        }
        let parent = Self::lift_sibling(&mut self.levels, last);
        shift_in(&mut self.leaves, at, point, last);
        shift_in(&mut self.keys, at, key, last);
        shift_in(&mut self.cuts, gap, ordered(cut), parent);
        self.refresh_max_key();
    }

    /// Adds this tree's attribution of the score of `x` to `high` and `low`: the same
    /// walk as [`Tree::score`], with the probability of separation split by dimension
    /// and by side (x above the box: HIGH, below: LOW). The parts sum to the score.
    pub(crate) fn attribution(
        &self,
        x: &[f32],
        store: &PointStore,
        scratch: &mut Scratch,
        high: &mut [f64],
        low: &mut [f64],
    ) {
        let n = self.leaves.len();
        if n == 0 {
            return;
        }
        if let ([only], true) = (x, self.one_dimensional) {
            // In one dimension x lies above or below every box it is outside of, so the
            // whole score is HIGH or LOW (the general walk's sums, to the bit), or half
            // each when x is a sample.
            let rank = self.rank(*only);
            let (score, leaf) = (self.score_ranked(*only, rank), self.value(rank.below));
            let (up, down) = match leaf.partial_cmp(only) {
                Some(std::cmp::Ordering::Less) => (score, 0.0),
                Some(std::cmp::Ordering::Greater) => (0.0, score),
                _ => (score / 2.0, score / 2.0),
            };
            high[0] += up;
            low[0] += down;
            return;
        }
        let Scratch { descent, lo, hi, .. } = scratch;
        self.descend(x, descent);
        let (a, b) = descent.leaf;
        let path = descent.path();
        let leaf_depth = path.len();
        let leaf = store.point(self.leaves[a]);
        let dims = x.len();
        if same_point(leaf, x) {
            let mass = b - a + 1;
            let share = damp(mass, n) * score_seen(leaf_depth, mass) * normalizer(n) / (2 * dims) as f64;
            high.iter_mut().chain(low.iter_mut()).for_each(|v| *v += share);
            return;
        }
        let (merged, _) = ranges(leaf, leaf, x);
        let unseen = score_unseen(leaf_depth);
        let mut up: Vec<f64> = (0..dims).map(|d| f64::from((x[d] - leaf[d]).max(0.0)) / merged * unseen).collect();
        let mut down: Vec<f64> = (0..dims).map(|d| f64::from((leaf[d] - x[d]).max(0.0)) / merged * unseen).collect();
        self.climb(store, path, (a, b), x, leaf, lo, hi, |level, _, lo, hi, merged, outside| {
            let p = outside / merged;
            let unseen = score_unseen(level);
            for d in 0..dims {
                let above = f64::from((x[d] - hi[d]).max(0.0)) / merged;
                let below = f64::from((lo[d] - x[d]).max(0.0)) / merged;
                up[d] = (1.0 - p) * up[d] + above * unseen;
                down[d] = (1.0 - p) * down[d] + below * unseen;
            }
        });
        let norm = normalizer(n);
        for d in 0..dims {
            high[d] += up[d] * norm;
            low[d] += down[d] * norm;
        }
    }

    /// The sample nearest to `x` on its known (non-NaN) dimensions: cuts on known
    /// dimensions are followed, both sides of cuts on missing ones are searched. Ties
    /// go to the smallest sampler key, a random sample favouring recent points. The
    /// sample as the tree keeps it: a reference, or in a one-dimensional tree its value.
    pub(crate) fn nearest_known(&self, x: &[f32], store: &PointStore) -> Option<u32> {
        if self.leaves.is_empty() {
            return None;
        }
        let mut best: Option<(f64, f32, u32)> = None;
        if let ([only], true) = (x, self.one_dimensional) {
            // As the walk below reads a one-dimensional tree (which keeps no pointers):
            // a run of duplicates counts as its first leaf; a known value leads to its
            // own run, a missing one to every run, all as near.
            let starts_run = |i: usize| !marked(self.levels[i]);
            if !only.is_nan() {
                let mut i = self.rank(*only).below;
                while !starts_run(i) {
                    i -= 1;
                }
                return Some(self.leaves[i]);
            }
            let first = (0..self.leaves.len())
                .filter(|&i| starts_run(i))
                .min_by(|&i, &j| self.keys[i].total_cmp(&self.keys[j]));
            return first.map(|i| self.leaves[i]);
        }
        let mut stack = vec![(self.root as usize, 0usize, self.leaves.len() - 1)];
        while let Some((gap, lo, hi)) = stack.pop() {
            if lo < hi && self.nodes[gap].dim() != DUPLICATE {
                let node = self.nodes[gap];
                let dim = node.dim() as usize;
                let value = x[dim];
                if value.is_nan() || value <= node.cut() {
                    stack.push((gap.wrapping_sub(node.left()), lo, gap));
                }
                if value.is_nan() || value > node.cut() {
                    stack.push((gap + node.right(), gap + 1, hi));
                }
                continue;
            }
            let p = store.point(self.leaves[lo]);
            let distance: f64 =
                x.iter().zip(p).filter(|(v, _)| !v.is_nan()).map(|(v, q)| f64::from((v - q).abs())).sum();
            let key = self.keys[lo];
            if best.is_none_or(|(bd, bk, _)| distance < bd || (distance == bd && key < bk)) {
                best = Some((distance, key, self.leaves[lo]));
            }
        }
        best.map(|(_, _, reference)| reference)
    }

    /// The subtrees below the root as (node, first leaf, last leaf), children before
    /// their parents' siblings; None if a pointer leaves its subtree's range, so any
    /// walk over a tree that passes this stays inside its arrays.
    fn subtrees(&self) -> Option<Vec<(usize, usize, usize)>> {
        let n = self.leaves.len();
        let mut out = Vec::with_capacity(n.saturating_sub(1));
        if n < 2 {
            return Some(out);
        }
        let mut stack = vec![(self.root as usize, 0usize, n - 1)];
        while let Some((gap, lo, hi)) = stack.pop() {
            if !(lo <= gap && gap < hi) || out.len() >= n - 1 {
                return None;
            }
            out.push((gap, lo, hi));
            let node = self.nodes[gap];
            match node.left() {
                0 if gap != lo => return None,
                0 => {}
                d if d > gap || gap - d < lo => return None,
                d => stack.push((gap - d, lo, gap)),
            }
            match node.right() {
                0 if gap + 1 != hi => return None,
                0 => {}
                d if gap + d >= hi => return None,
                d => stack.push((gap + d, gap + 1, hi)),
            }
        }
        (out.len() == n - 1).then_some(out)
    }

    /// Cheap structural checks for a tree read from a snapshot: whatever the bytes
    /// said, walking the tree must stay within its arrays and the point store.
    pub(crate) fn is_consistent(&self, sample_size: usize, dimensions: usize, holds: impl Fn(u32) -> bool) -> bool {
        let n = self.leaves.len();
        let gaps = n.saturating_sub(1);
        n <= sample_size
            && self.keys.len() == n
            && self.nodes.len() == gaps
            && self.nodes.iter().all(|node| node.dim() == DUPLICATE || (node.dim() as usize) < dimensions)
            && self.leaves.iter().all(|&r| holds(r))
            && self.subtrees().is_some()
    }

    /// For a one-dimensional tree that [`Tree::is_consistent`], as a snapshot holds it
    /// (leaves as references into `store`): whether its leaves and cuts are in order,
    /// each cut between its two leaves and each duplicate node between equal ones, as
    /// [`Tree::score_sorted`] needs (a snapshot's bytes could say otherwise).
    pub(crate) fn is_sorted(&self, store: &PointStore) -> bool {
        let value = |i: usize| store.point(self.leaves[i])[0];
        self.nodes.iter().enumerate().all(|(gap, node)| {
            let (left, right) = (value(gap), value(gap + 1));
            if node.dim() == DUPLICATE {
                left == right
            } else {
                left <= node.cut() && node.cut() < right
            }
        })
    }

    /// Where the sample with the largest key is.
    fn largest_key_position(&self) -> usize {
        // Find the chunk of eight holding the largest key with a vectorised test first.
        let max = self.max_key;
        let chunk = self.keys.chunks(8).position(|c| c.iter().fold(false, |any, &k| any | (k == max))).unwrap_or(0);
        chunk * 8 + self.keys[chunk * 8..].iter().position(|&k| k == max).unwrap_or(0)
    }

    /// Whether node `gap` joins two copies of a point.
    fn is_duplicate(&self, gap: usize) -> bool {
        if self.one_dimensional {
            marked(self.levels[gap + 1])
        } else {
            self.nodes[gap].dim() == DUPLICATE
        }
    }

    /// Evicts the sample with the largest key.
    pub(crate) fn evict(&mut self, path: &mut Vec<PathNode>) {
        let position = self.largest_key_position();
        // In a run of duplicates every leaf is the same point, so the evicted sample may
        // trade places with the run's last leaf. A run is a chain whose root sits right
        // above that leaf, so its path is short, where the path to a leaf inside the
        // chain is as long as the chain (integer sensor values make long runs).
        let mut last = position;
        while last + 1 < self.leaves.len() && self.is_duplicate(last) {
            last += 1;
        }
        self.leaves.swap(position, last);
        self.keys.swap(position, last);
        self.delete(last, path);
        self.refresh_max_key();
    }

    pub(crate) fn refresh_max_key(&mut self) {
        // Eight running maxima, so that the scan vectorises (a single running maximum
        // would be a chain the compiler may not reorder).
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = self.keys.chunks_exact(8);
        for chunk in &mut chunks {
            for i in 0..8 {
                lanes[i] = if chunk[i] > lanes[i] { chunk[i] } else { lanes[i] };
            }
        }
        let rest = chunks.remainder().iter().copied();
        self.max_key = lanes.into_iter().chain(rest).fold(f32::NEG_INFINITY, |m, k| if k > m { k } else { m });
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.leaves.capacity() * 4
            + self.keys.capacity() * 4
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.levels.capacity() * 2
            + self.cuts.capacity() * 4
    }

    /// Checks the tree's invariants: the pointers form a binary tree over the leaves,
    /// every leaf lies on its side of every cut above it (each box holds its points),
    /// duplicates are equal, and the sampler's keys are consistent.
    #[cfg(test)]
    pub(crate) fn check(&self, store: &PointStore, sample_size: usize) -> Result<(), String> {
        if self.one_dimensional {
            // Its pointers are derived from its levels, which the checks below compare.
            return self.relinked().check_linked(store, sample_size);
        }
        self.check_linked(store, sample_size)
    }

    #[cfg(test)]
    fn check_linked(&self, store: &PointStore, sample_size: usize) -> Result<(), String> {
        let n = self.leaves.len();
        if self.keys.len() != n || n > sample_size {
            return Err(format!("{n} leaves, {} keys, sample size {sample_size}", self.keys.len()));
        }
        if self.nodes.len() != n.saturating_sub(1) {
            return Err(format!("{n} leaves but {} nodes", self.nodes.len()));
        }
        let subtrees = self.subtrees().ok_or("the pointers do not form a tree")?;
        for (gap, lo, hi) in subtrees {
            let dim = self.nodes[gap].dim();
            let point = |i: usize| {
                if self.one_dimensional {
                    vec![self.value(i)]
                } else {
                    store.point(self.leaves[i]).to_vec()
                }
            };
            if dim == DUPLICATE {
                let p = point(lo);
                if (lo..=hi).any(|i| point(i) != p) {
                    return Err(format!("duplicate node {gap} joins different points"));
                }
                continue;
            }
            let cut = self.nodes[gap].cut();
            if (lo..=gap).any(|i| point(i)[dim as usize] > cut) || (gap + 1..=hi).any(|i| point(i)[dim as usize] <= cut)
            {
                return Err(format!("a leaf is on the wrong side of node {gap} (dim {dim} at {cut})"));
            }
        }
        if n > 0 && self.max_key != self.keys.iter().copied().fold(f32::NEG_INFINITY, f32::max) {
            return Err("max_key is stale".into());
        }
        if self.one_dimensional {
            let mut rebuilt = self.clone();
            rebuilt.reshape();
            if rebuilt.levels != self.levels {
                return Err(format!("levels {:?}, the tree's are {:?}", self.levels, rebuilt.levels));
            }
            if rebuilt.cuts != self.cuts {
                return Err("a duplicate node's cut is not its run's value".into());
            }
        }
        Ok(())
    }

    /// The score of `x` as the definition reads: at each node of its path, deepest
    /// first, the box of all the node's leaves, until x lies inside one. The reference
    /// for [`Tree::score`], which reads a sibling's leaves only until the box holds x.
    #[cfg(test)]
    pub(crate) fn score_by_whole_boxes(&self, x: &[f32], store: &PointStore) -> f64 {
        let n = self.leaves.len();
        if n == 0 {
            return 0.0;
        }
        let mut descent = Descent::default();
        self.descend(x, &mut descent);
        let (a, b) = descent.leaf;
        let path = descent.path();
        let leaf = store.point(self.leaves[a]);
        if same_point(leaf, x) {
            let mass = b - a + 1;
            return damp(mass, n) * score_seen(path.len(), mass) * normalizer(n);
        }
        let mut score = score_unseen(path.len());
        for (level, node) in path.iter().enumerate().rev() {
            let (first, last) = node.range();
            let (mut lo, mut hi) = (leaf.to_vec(), leaf.to_vec());
            for i in first..=last {
                for (d, &v) in store.point(self.leaves[i]).iter().enumerate() {
                    lo[d] = lo[d].min(v);
                    hi[d] = hi[d].max(v);
                }
            }
            let (merged, outside) = ranges(&lo, &hi, x);
            if outside <= 0.0 {
                break;
            }
            let p = outside / merged;
            score = (1.0 - p) * score + p * score_unseen(level);
        }
        score * normalizer(n)
    }

    /// Sets every duplicate node's cut to 0, as snapshots before [`Tree::rebuild`] held.
    #[cfg(test)]
    pub(crate) fn forget_duplicate_cuts(&mut self) {
        for gap in 0..self.cuts.len() {
            if self.is_duplicate(gap) {
                self.cuts[gap] = ordered(0.0);
            }
        }
        self.nodes.iter_mut().filter(|node| node.dim() == DUPLICATE).for_each(|node| node.cut = ordered(0.0));
    }

    /// Puts the cuts in reverse order, as a corrupted snapshot could.
    #[cfg(test)]
    pub(crate) fn reverse_cuts(&mut self) {
        self.cuts.reverse();
        let cuts: Vec<i32> = self.nodes.iter().rev().map(|node| node.cut).collect();
        self.nodes.iter_mut().zip(cuts).for_each(|(node, cut)| node.cut = cut);
    }

    #[cfg(test)]
    pub(crate) fn shape(&self) -> (Vec<u32>, Vec<Node>, u16, Vec<u16>) {
        (self.leaves.clone(), self.nodes.clone(), self.root, self.levels.clone())
    }
}
