//! Tests of the forest: structural invariants under random streams (proptest), the
//! seed scenario's ranking, attribution, imputation, snapshots and bad input.

use ndarray::Array2;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::rng::Rng;
use super::store::PointStore;
use super::tree::{ordered, ranges, ranges_in_order, Placement, Scratch, Tree, LANES};
use super::{Forest, ForestConfig, ForestError, MAX_MAGNITUDE};

fn forest(features: usize, shingle_size: usize, trees: usize, sample_size: usize, seed: u64) -> Forest {
    Forest::new(&ForestConfig { features, shingle_size, trees, sample_size, seed, ..Default::default() })
        .expect("valid config")
}

fn gaussian(rng: &mut Rng) -> f32 {
    let (u, v) = (rng.next_open_f64(), rng.next_f64());
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// Area under the ROC curve of `scores` for telling `anomalies` from normal points.
fn roc_auc(scores: &[f64], anomalies: &[bool]) -> f64 {
    let (mut pairs, mut wins) = (0.0, 0.0);
    for (&a, _) in scores.iter().zip(anomalies).filter(|(_, &is)| is) {
        for (&n, _) in scores.iter().zip(anomalies).filter(|(_, &is)| !is) {
            pairs += 1.0;
            wins += if a > n {
                1.0
            } else if a == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / pairs
}

/// The seed scenario: uniform integers 10..20, 1% of points uniform integers 100..120.
fn seed_scenario(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            if rng.next_f64() < 0.01 {
                ((100 + rng.next_u64() % 21) as f32, true)
            } else {
                ((10 + rng.next_u64() % 11) as f32, false)
            }
        })
        .unzip()
}

/// Where `tree` would put `x` with the draws of `rng`: found by a descent, or in a
/// one-dimensional tree (which is not descended) where x falls among the cuts.
fn place(tree: &Tree, x: &[f32], store: &PointStore, scratch: &mut Scratch, rng: &mut Rng) -> Placement {
    let Scratch { descent, lo, hi, .. } = scratch;
    let placed = if let ([only], true) = (x, tree.one_dimensional()) {
        tree.walk_ranked(*only, tree.rank(*only), Some(rng)).1
    } else {
        if tree.mass() > 0 {
            tree.descend(x, descent);
        }
        tree.walk(x, store, descent, lo, hi, Some(rng)).1
    };
    placed.expect("a placement when asked")
}

fn check_all(forest: &Forest) -> Result<(), String> {
    for (i, tree) in forest.trees.iter().enumerate() {
        tree.check(&forest.store, forest.params.sample_size).map_err(|e| format!("tree {i}: {e}"))?;
    }
    Ok(())
}

proptest! {
    // A fixed seed: the same cases on every run (a failure names its case anyway).
    #![proptest_config(ProptestConfig { cases: 48, rng_seed: RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    /// A descent compares cuts as ordered integer keys: they must order every pair of
    /// floats (negative, zero of either sign, subnormal, infinite) as the floats do.
    #[test]
    fn ordered_keys_compare_as_the_floats_do(
        a in prop_oneof![any::<f32>(), Just(0.0f32), Just(-0.0f32), Just(f32::MIN_POSITIVE / 2.0), Just(-1.5f32)],
        b in prop_oneof![any::<f32>(), Just(0.0f32), Just(-0.0f32), Just(f32::INFINITY), Just(-1.5f32)],
    ) {
        prop_assume!(!a.is_nan() && !b.is_nan());
        prop_assert_eq!(ordered(a) <= ordered(b), a <= b, "{} vs {}", a, b);
        prop_assert_eq!(ordered(a) == ordered(b), a == b, "{} vs {}", a, b);
    }

    /// The walk's range sums, four dimensions at a time where it can, are those of
    /// `ranges_in_order` (one dimension at a time), to the bit, in any number of
    /// dimensions.
    #[test]
    fn range_sums_are_taken_in_their_order(
        corners in proptest::collection::vec((-1e6f32..1e6, 0f32..1.0, -30i32..30, -2f32..3.0, 0u8..4), 1..=13),
    ) {
        // Ranges from 2^-30 to 2^30, x below, on an edge of, inside or above each.
        let span = |c: &(f32, f32, i32, f32, u8)| c.1 * 2f32.powi(c.2);
        let lo: Vec<f32> = corners.iter().map(|c| c.0).collect();
        let hi: Vec<f32> = corners.iter().map(|c| c.0 + span(c)).collect();
        let x: Vec<f32> = corners.iter().map(|c| match c.4 { 0 => c.0, 1 => c.0 + span(c), _ => c.0 + c.3 * span(c) }).collect();
        let (mut inner, mut outside) = (0.0f64, 0.0f64);
        for ((&l, &h), &v) in lo.iter().zip(&hi).zip(&x) {
            inner += f64::from(h - l);
            outside += f64::from(if v > h { v - h } else if v < l { l - v } else { 0.0 });
        }
        // The SIMD sums are those of the order they stand for, to the bit, and both are
        // the plain f64 sums up to the rounding of four f32 lanes (sums of terms >= 0:
        // a few units in the last place of an f32).
        let (merged, out) = ranges(&lo, &hi, &x);
        let (merged_in_order, out_in_order) = ranges_in_order(&lo, &hi, &x);
        prop_assert_eq!(out.to_bits(), out_in_order.to_bits());
        prop_assert_eq!(merged.to_bits(), merged_in_order.to_bits());
        prop_assert!((out - outside).abs() <= 1e-6 * outside, "{out} vs {outside}");
        prop_assert!((merged - (inner + outside)).abs() <= 1e-6 * (inner + outside), "{merged} vs {}", inner + outside);
    }

    /// Masses add up, every box holds its points, duplicates are equal and the samples
    /// never exceed the sample size, whatever the stream (including many duplicates).
    #[test]
    fn invariants_hold_on_random_streams(
        seed in any::<u64>(),
        features in 1usize..4,
        shingle_size in 1usize..4,
        sample_size in 4usize..40,
        levels in 1u32..50,
        len in 1usize..600,
    ) {
        let mut f = forest(features, shingle_size, 3, sample_size, seed);
        f.params.time_decay = 0.05; // forget fast so evictions and compactions happen
        let mut rng = Rng::new(seed ^ 1);
        for step in 0..len {
            let record: Vec<f32> = (0..features).map(|_| (rng.next_u64() % u64::from(levels)) as f32 * 0.5).collect();
            f.update(&record).expect("finite record");
            if let Err(e) = check_all(&f) {
                return Err(TestCaseError::fail(format!("after {step} records: {e}")));
            }
            for tree in &f.trees {
                prop_assert!(tree.mass() <= sample_size);
            }
        }
        if len >= shingle_size + sample_size {
            for tree in &f.trees {
                prop_assert_eq!(tree.mass(), sample_size, "a full stream fills every sample");
            }
        }
    }

    /// Inserting a point and deleting it again restores the tree exactly.
    #[test]
    fn delete_undoes_insert(seed in any::<u64>(), n in 1usize..60, levels in 1u32..20, dims in 1usize..=2) {
        let mut store = PointStore::new(dims, 1);
        let mut tree = Tree::new(64, seed, dims == 1);
        let mut rng = Rng::new(seed);
        let mut scratch = Scratch::new(dims);
        for i in 0..=n {
            let p = [(rng.next_u64() % u64::from(levels)) as f32, (rng.next_u64() % 7) as f32];
            store.push(&p[..dims]);
            let x = store.point(i as u32).to_vec();
            let placement = place(&tree, &x, &store, &mut scratch, &mut rng);
            let leaf = tree.leaf_of(i as u32, &x);
            if i < n {
                tree.insert(placement, &scratch.descent, leaf, i as f32);
            } else {
                let before = (tree.shape(), tree.keys.clone());
                tree.insert(placement, &scratch.descent, leaf, -1.0);
                tree.refresh_max_key();
                prop_assert!(tree.check(&store, 64).is_ok(), "{:?}", tree.check(&store, 64));
                // (Its key is the only negative one; a duplicate has the same leaf.)
                let at = tree.keys.iter().position(|&k| k == -1.0).expect("inserted leaf");
                tree.delete(at, &mut scratch.delete_path);
                prop_assert_eq!((tree.shape(), tree.keys.clone()), before);
            }
        }
    }
}

#[test]
fn eviction_takes_the_largest_key_and_keeps_every_other_sample_with_its_key() {
    // Few distinct values, so most leaves sit in long runs of duplicates, where the
    // evicted leaf trades places with the run's last one.
    let mut store = PointStore::new(1, 1);
    let mut tree = Tree::new(200, 3, true);
    let mut rng = Rng::new(11);
    let mut scratch = Scratch::new(1);
    for i in 0..200u32 {
        store.push(&[(rng.next_u64() % 5) as f32]);
        let x = store.point(i).to_vec();
        let placement = place(&tree, &x, &store, &mut scratch, &mut rng);
        let key = rng.next_f64() as f32;
        tree.insert(placement, &scratch.descent, tree.leaf_of(i, &x), key);
    }
    tree.refresh_max_key();
    let mut samples: Vec<(u32, u32)> = tree.leaves.iter().zip(&tree.keys).map(|(&r, k)| (r, k.to_bits())).collect();
    while samples.len() > 1 {
        let largest = samples.iter().copied().max_by(|a, b| f32::from_bits(a.1).total_cmp(&f32::from_bits(b.1)));
        samples.retain(|s| Some(*s) != largest);
        tree.evict(&mut scratch.delete_path);
        let mut left: Vec<(u32, u32)> = tree.leaves.iter().zip(&tree.keys).map(|(&r, k)| (r, k.to_bits())).collect();
        left.sort_unstable();
        samples.sort_unstable();
        assert_eq!(left, samples, "the sample with the largest key went, the rest kept their keys");
        assert_eq!(tree.check(&store, 200), Ok(()));
    }
}

#[test]
fn compaction_keeps_exactly_the_live_windows_and_the_next_shingles_start() {
    let (features, shingle_size) = (2, 3);
    let mut store = PointStore::new(features, shingle_size);
    for i in 0..40 {
        store.push(&[i as f32, -(i as f32)]);
    }
    // Overlapping, repeated, adjacent and separate windows, in no order.
    let live = [20u32, 3, 4, 3, 30, 10, 12];
    let before: Vec<Vec<f32>> = live.iter().map(|&r| store.point(r).to_vec()).collect();
    let prefix = store.shingle_prefix().to_vec();
    let map = store.compact(&live);
    for (&r, window) in live.iter().zip(&before) {
        assert_eq!(store.point(map[r as usize]), window.as_slice(), "window {r}");
    }
    assert_eq!(store.shingle_prefix(), prefix.as_slice(), "the next point's first records");
    // Records 3..=6, 10..=14, 20..=22, 30..=32, and the last two (38, 39).
    assert_eq!(store.len_values(), (4 + 5 + 3 + 3 + 2) * features);
}

#[test]
fn seed_scenario_anomalies_outrank_every_normal_point() {
    let (values, is_anomaly) = seed_scenario(6_000, 7);
    let mut f = forest(1, 1, 50, 256, 11);
    let scores: Vec<f64> = values.iter().map(|&v| f.score_and_update(&[v]).expect("score")).collect();
    let warm = 1_000;
    let anomalies = is_anomaly[warm..].iter().filter(|&&a| a).count();
    assert!(anomalies > 30, "the scenario injects about 1%: {anomalies}");
    let auc = roc_auc(&scores[warm..], &is_anomaly[warm..]);
    assert_eq!(auc, 1.0, "every injected anomaly must score above every normal point");
    // On the ANOMALY_SCORE scale: normal points near 1, anomalies clearly higher.
    let normal_max =
        scores[warm..].iter().zip(&is_anomaly[warm..]).filter(|(_, &a)| !a).map(|(s, _)| *s).fold(0.0, f64::max);
    assert!(normal_max < 1.6, "normal points score low: {normal_max}");
}

#[test]
fn attribution_of_a_high_spike_is_high_on_that_dimension() {
    let mut f = forest(3, 1, 50, 256, 3);
    let mut rng = Rng::new(5);
    for _ in 0..2_000 {
        let record: Vec<f32> = (0..3).map(|_| 10.0 + gaussian(&mut rng)).collect();
        f.update(&record).expect("update");
    }
    let spike = [10.0, 25.0, 10.0];
    let score = f.score(&spike).expect("score");
    let attribution = f.attribution(&spike).expect("attribution");
    assert!((attribution.total() - score).abs() < 1e-9, "parts sum to the score: {} vs {score}", attribution.total());
    assert!(attribution.high[1] > 0.9 * score, "the spike's dimension explains it: {attribution:?}");
    assert!(attribution.high[1] > 20.0 * attribution.low[1]);
    let dip = [10.0, 10.0, -5.0];
    let attribution = f.attribution(&dip).expect("attribution");
    assert!(attribution.low[2] > 0.9 * attribution.total(), "a dip is LOW: {attribution:?}");
}

#[test]
fn ten_dimensional_shifted_points_rank_above_normal_ones() {
    let mut f = forest(10, 1, 100, 256, 21);
    let mut rng = Rng::new(8);
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    for i in 0..4_000 {
        let shifted = i > 1_000 && rng.next_f64() < 0.02;
        let record: Vec<f32> = (0..10).map(|d| gaussian(&mut rng) + if shifted && d < 3 { 3.5 } else { 0.0 }).collect();
        let score = f.score_and_update(&record).expect("score");
        if i > 1_000 {
            scores.push(score);
            labels.push(shifted);
        }
    }
    let auc = roc_auc(&scores, &labels);
    assert!(auc >= 0.99, "ROC-AUC {auc}");
}

#[test]
fn shingled_stream_flags_a_broken_pattern() {
    // A sine wave; one period gets a flat step that is in range on its own but breaks
    // the shape, which only the shingle sees.
    let mut f = forest(1, 8, 50, 256, 4);
    let mut rng = Rng::new(2);
    let mut scores = Vec::new();
    for i in 0..5_000 {
        let phase = i as f64 * 2.0 * std::f64::consts::PI / 40.0;
        let mut v = (10.0 * phase.sin()) as f32 + 0.1 * gaussian(&mut rng);
        if (4_000..4_006).contains(&i) {
            v = 0.0;
        }
        scores.push(f.score_and_update(&[v]).expect("score"));
    }
    let peak = (3_500..5_000).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).expect("non-empty");
    assert!((4_000..4_014).contains(&peak), "the highest score is at the broken period, not at {peak}");
}

#[test]
fn same_seed_same_scores_and_snapshot_round_trip_is_bit_identical() {
    // Shingle 1 also rebuilds what one-dimensional trees keep outside snapshots.
    for shingle_size in [1, 4] {
        let (values, _) = seed_scenario(3_000, 1);
        let mut a = forest(1, shingle_size, 30, 64, 99);
        let mut b = forest(1, shingle_size, 30, 64, 99);
        for &v in &values[..2_000] {
            assert_eq!(a.score_and_update(&[v]).expect("a").to_bits(), b.score_and_update(&[v]).expect("b").to_bits());
        }
        let bytes = a.snapshot().expect("snapshot");
        let mut restored = Forest::restore(&bytes).expect("restore");
        for &v in &values[2_000..] {
            let expected = a.score_and_update(&[v]).expect("a");
            assert_eq!(restored.score_and_update(&[v]).expect("restored").to_bits(), expected.to_bits());
        }
        assert_eq!(restored.snapshot().expect("snapshot"), a.snapshot().expect("snapshot"));
    }
}

#[test]
fn snapshots_that_hold_no_cut_for_duplicates_restore_to_the_same_scores() {
    // Snapshots written before one-dimensional trees searched their cuts hold 0 as the
    // cut of every duplicate node; restoring must put back the runs' values.
    let (values, _) = seed_scenario(3_000, 2);
    let mut f = forest(1, 1, 20, 64, 3);
    for &v in &values[..2_000] {
        f.update(&[v]).expect("update");
    }
    let mut old = f.clone();
    old.trees.iter_mut().for_each(Tree::forget_duplicate_cuts);
    assert_ne!(old.snapshot().expect("snapshot"), f.snapshot().expect("snapshot"));
    let mut restored = Forest::restore(&old.snapshot().expect("snapshot")).expect("restore");
    for &v in &values[2_000..] {
        let expected = f.score_and_update(&[v]).expect("f");
        assert_eq!(restored.score_and_update(&[v]).expect("restored").to_bits(), expected.to_bits());
    }
}

#[test]
fn snapshots_whose_one_dimensional_trees_reference_the_records_restore_to_the_same_scores() {
    // Before the trees kept values, a one-dimensional snapshot held the live store's
    // records and the trees' references into it, as a snapshot of any forest does.
    use bincode::Options;
    let (values, _) = seed_scenario(3_000, 4);
    let mut f = forest(1, 1, 20, 64, 5);
    for &v in &values[..2_000] {
        f.update(&[v]).expect("update");
    }
    let mut old = f.clone();
    let Forest { trees, store, .. } = &mut old;
    // (What snapshots skip, `as_general` clears; the rest is the old layout.)
    trees.iter_mut().for_each(|tree| *tree = tree.as_general(store));
    let mut bytes = b"RCF1".to_vec();
    bincode::DefaultOptions::new().serialize_into(&mut bytes, &old).expect("serialise");
    let mut restored = Forest::restore(&bytes).expect("restore");
    assert!(restored.store.memory_bytes() < f.store.memory_bytes().max(4_096), "the records are let go");
    for &v in &values[2_000..] {
        let expected = f.score_and_update(&[v]).expect("f");
        assert_eq!(restored.score_and_update(&[v]).expect("restored").to_bits(), expected.to_bits());
    }
}

#[test]
fn a_different_seed_gives_different_scores() {
    let (values, _) = seed_scenario(1_000, 1);
    let mut a = forest(1, 1, 10, 64, 1);
    let mut b = forest(1, 1, 10, 64, 2);
    let differing = values
        .iter()
        .filter(|&&v| a.score_and_update(&[v]).expect("a") != b.score_and_update(&[v]).expect("b"))
        .count();
    assert!(differing > 100, "{differing}");
}

#[test]
fn corrupted_snapshots_are_errors_not_panics() {
    // Four dimensions, and one (whose trees search their cuts, which a corrupted
    // snapshot may leave out of order).
    for (features, shingle_size) in [(2, 2), (1, 1)] {
        let (values, _) = seed_scenario(500, 3);
        let mut f = forest(features, shingle_size, 5, 32, 1);
        for record in values.chunks(features) {
            f.update(record).expect("update");
        }
        let bytes = f.snapshot().expect("snapshot");
        assert!(matches!(Forest::restore(&bytes[..bytes.len() / 2]), Err(ForestError::Snapshot(_))));
        assert!(matches!(Forest::restore(b"nope"), Err(ForestError::Snapshot(_))));
        let mut rng = Rng::new(4);
        for _ in 0..2_000 {
            let mut broken = bytes.clone();
            let i = 4 + (rng.next_u64() as usize) % (broken.len() - 4);
            broken[i] ^= 1 << (rng.next_u64() % 8);
            // Either an error or a consistent forest that can keep working.
            if let Ok(mut g) = Forest::restore(&broken) {
                for record in values.chunks(features).take(50) {
                    let _ = g.score_and_update(record);
                }
            }
        }
    }
}

#[test]
fn one_dimensional_trees_with_cuts_out_of_order_score_without_panicking() {
    // Restoring refuses such a snapshot; the forest in memory must not panic either.
    let (values, _) = seed_scenario(1_000, 6);
    let mut f = forest(1, 1, 16, 64, 2);
    for &v in &values {
        f.update(&[v]).expect("update");
    }
    f.trees.iter_mut().for_each(Tree::reverse_cuts);
    let refused = Forest::restore(&f.snapshot().expect("snapshot"));
    assert!(matches!(refused, Err(ForestError::Snapshot(ref why)) if why.contains("out of order")), "{refused:?}");
    for x in [-5.0, 0.0, 9.5, 10.0, 15.0, 20.0, 20.5, 100.0, 110.0, 1e9] {
        assert!(f.score(&[x]).expect("score").is_finite());
        f.score_and_update(&[x]).expect("score and update");
    }
}

/// Values as large as the forest takes, spread over both signs, score finitely in every
/// dimension count the fixed-size walk has and beyond it (near f32::MAX the range sums
/// would overflow and the scores be NaN: that is why larger values are refused).
#[test]
fn the_largest_values_allowed_score_finitely() {
    for (features, shingle_size) in [(1, 8), (10, 1), (40, 1)] {
        let mut f = forest(features, shingle_size, 10, 64, 5);
        let mut rng = Rng::new(9);
        for i in 0..600 {
            let record: Vec<f32> = (0..features)
                .map(|d| {
                    let sign = if (i + d) % 2 == 0 { 1.0 } else { -1.0 };
                    sign * MAX_MAGNITUDE * (0.5 + 0.5 * rng.next_f64() as f32)
                })
                .collect();
            let score = f.score_and_update(&record).expect("allowed");
            assert!(score.is_finite(), "{features} x {shingle_size}, point {i}: {score}");
            if i % 100 == 99 {
                let attribution = f.attribution(&record).expect("allowed");
                assert!(attribution.total().is_finite(), "{features} x {shingle_size}, point {i}");
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut f = forest(2, 1, 5, 32, 1);
    assert_eq!(f.update(&[1.0]), Err(ForestError::DimensionMismatch { expected: 2, got: 1 }));
    assert_eq!(f.score(&[1.0, 2.0, 3.0]), Err(ForestError::DimensionMismatch { expected: 2, got: 3 }));
    assert_eq!(f.update(&[1.0, f32::INFINITY]), Err(ForestError::Infinite { index: 1, value: f32::INFINITY }));
    assert_eq!(f.update(&[-2e35, 1.0]), Err(ForestError::TooLarge { index: 0, value: -2e35 }));
    assert_eq!(
        f.update(&[1.0, 3e38]).map_err(|e| e.to_string()),
        Err("value 1 is 3e38: magnitudes above 1e35 are not allowed".to_owned())
    );
    assert!(matches!(f.update(&[f32::NAN, 1.0]), Err(ForestError::NothingToImpute { index: 0 })));
    let batch = Array2::from_shape_vec((3, 2), vec![1.0, 2.0, 3.0, f32::NEG_INFINITY, 5.0, 6.0]).expect("shape");
    let err = f.score_and_update_batch(batch.view()).expect_err("row 1 is bad");
    assert!(matches!(err, ForestError::InRow { row: 1, .. }), "{err}");
    for (config, field) in [
        (ForestConfig { features: 0, ..Default::default() }, "features"),
        (ForestConfig { trees: 0, ..Default::default() }, "trees"),
        (ForestConfig { sample_size: 2, ..Default::default() }, "sample_size"),
        (ForestConfig { time_decay: Some(-1.0), ..Default::default() }, "time_decay"),
        (ForestConfig { features: 100, shingle_size: 8, ..Default::default() }, "shingle_size"),
    ] {
        match config.validate() {
            Err(ForestError::InvalidParameter { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected an invalid-parameter error, got {other:?}"),
        }
    }
}

#[test]
fn scores_are_zero_until_output_after() {
    let mut f = forest(1, 1, 10, 64, 1);
    assert_eq!(f.params().output_after, 16);
    for i in 0..16 {
        assert_eq!(f.score_and_update(&[(i % 5) as f32]).expect("score"), 0.0);
    }
    assert!(f.score_and_update(&[100.0]).expect("score") > 0.0);
}

#[test]
fn missing_values_are_imputed_from_the_forest() {
    let mut f = forest(1, 4, 50, 256, 9);
    let wave = |i: usize| (10.0 * (i as f64 * 2.0 * std::f64::consts::PI / 20.0).sin()) as f32;
    for i in 0..3_000 {
        f.update(&[wave(i)]).expect("update");
    }
    let imputed = f.impute(&[f32::NAN]).expect("impute")[0];
    assert!((imputed - wave(3_000)).abs() < 1.5, "imputed {imputed}, the wave says {}", wave(3_000));
    // A missing value is learned as its imputation, not rejected, and scores normally.
    let score = f.score_and_update(&[f32::NAN]).expect("a NaN is imputed");
    assert!(score < 1.5, "{score}");
    assert!(check_all(&f).is_ok());
}

#[test]
fn threads_share_the_trees_without_changing_a_score() {
    let (values, _) = seed_scenario(3_000, 9);
    let rows = Array2::from_shape_vec((values.len(), 1), values).expect("shape");
    let run = |threads: usize| {
        let config = ForestConfig { shingle_size: 2, trees: 37, sample_size: 64, threads, ..Default::default() };
        let mut forest = Forest::new(&config).expect("valid");
        // Uneven batches: some long enough for threads, some not.
        let mut scores = Vec::new();
        for (i, block) in rows.axis_chunks_iter(ndarray::Axis(0), 700).enumerate() {
            let rows = if i % 2 == 0 { block } else { block.slice_move(ndarray::s![..10, ..]) };
            scores.extend(forest.score_and_update_batch(rows).expect("batch"));
        }
        scores.push(forest.score(&[15.0]).expect("score"));
        scores
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        let many = run(threads);
        assert!(one.iter().zip(&many).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
    }
}

#[test]
fn batch_scoring_matches_one_by_one() {
    // Fast decay, so that the sampler's key epochs turn over inside the stream.
    for (time_decay, shingle_size) in [(None, 2), (Some(0.05), 1), (Some(0.01), 3)] {
        let config =
            ForestConfig { shingle_size, trees: 10, sample_size: 64, time_decay, seed: 3, ..Default::default() };
        let (values, _) = seed_scenario(2_000, 5);
        let mut one = Forest::new(&config).expect("valid");
        let mut batch = Forest::new(&config).expect("valid");
        let expected: Vec<f64> = values.iter().map(|&v| one.score_and_update(&[v]).expect("score")).collect();
        let rows = Array2::from_shape_vec((values.len(), 1), values).expect("shape");
        let scores = batch.score_and_update_batch(rows.view()).expect("batch");
        assert!(scores.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "{time_decay:?}");
        assert_eq!(batch.snapshot().expect("snapshot"), one.snapshot().expect("snapshot"));
    }
}

#[test]
fn a_far_outlier_scores_near_log2_of_the_sample_size() {
    let mut f = forest(1, 1, 50, 256, 1);
    let mut rng = Rng::new(1);
    for _ in 0..3_000 {
        f.update(&[gaussian(&mut rng)]).expect("update");
    }
    let far = f.score(&[1_000.0]).expect("score");
    assert!(far > 6.0 && far <= 8.01, "isolated at the root: {far}");
    let typical = f.score(&[0.1]).expect("score");
    assert!(typical < 1.2, "{typical}");
}

#[test]
fn memory_stays_bounded_on_a_long_stream() {
    let mut f = forest(1, 8, 50, 256, 1);
    let mut rng = Rng::new(3);
    let mut peak = 0;
    for i in 0..40_000 {
        f.update(&[gaussian(&mut rng)]).expect("update");
        if i > 10_000 {
            peak = peak.max(f.memory_bytes());
        }
    }
    assert!(f.store.len_values() < 40_000 / 2, "the store drops points no tree holds: {}", f.store.len_values());
    assert!(peak < 400 * 1024, "{peak} bytes");
}

#[test]
fn judging_between_scoring_and_learning_changes_nothing() {
    // Shingle 1 takes the one-dimensional search, shingle 3 the lockstep descent.
    for shingle_size in [1, 3] {
        let (values, _) = seed_scenario(2_000, 4);
        let mut plain = forest(1, shingle_size, 20, 64, 5);
        let mut judged = forest(1, shingle_size, 20, 64, 5);
        for &v in &values {
            let expected_attribution = judged.attribution(&[v]).expect("attribution");
            let score = plain.score_and_update(&[v]).expect("plain");
            let (s, attribution) = judged
                .score_judge_update(&[v], |s, point, forest| {
                    let attribution = if point.is_empty() { None } else { Some(forest.attribution_of_point(point)?) };
                    Ok((s, attribution))
                })
                .expect("judged");
            assert_eq!(s.to_bits(), score.to_bits());
            if let Some(attribution) = attribution {
                assert_eq!(attribution, expected_attribution, "the judge sees the forest before it learns");
            }
        }
        assert_eq!(plain.snapshot().expect("snapshot"), judged.snapshot().expect("snapshot"));
    }
}

#[test]
fn judging_keeps_little_more_memory_than_learning_once_the_samples_are_full() {
    // While the samples fill, every tree takes every point, and the judged path keeps
    // each taker's descent until the judge is done: that room must not stay with the model.
    for shingle_size in [1, 8] {
        let (mut plain, mut judged) = (forest(1, shingle_size, 50, 256, 9), forest(1, shingle_size, 50, 256, 9));
        let mut rng = Rng::new(9);
        for _ in 0..3_000 {
            let v = [gaussian(&mut rng)];
            plain.score_and_update(&v).expect("learned");
            judged.score_judge_update(&v, |s, _, _| Ok(s)).expect("judged");
        }
        let (plain, judged) = (plain.memory_bytes(), judged.memory_bytes());
        assert!(judged <= plain + 6 * 1024, "judged: {judged} bytes, learned: {plain} bytes");
    }
}

#[test]
fn one_dimensional_scores_are_the_general_walks_to_the_bit() {
    // One-dimensional trees search their cuts instead of descending and walk their
    // levels instead of a path: they must give the general walk's score (on the same
    // tree with its pointers set), and the same placement from the same draws. Integer
    // values make long runs of duplicates; the signed reals hold both zeros.
    let (integers, _) = seed_scenario(3_000, 17);
    let mut rng = Rng::new(23);
    let reals: Vec<f32> = (0..3_000)
        .map(|i| match i % 50 {
            0 => 0.0,
            25 => -0.0,
            _ => (rng.next_f64() * 40.0 - 20.0) as f32,
        })
        .collect();
    // Neighbouring floats: a cut between two of them rounds to the lower one, so the
    // node after a run can hold the run's value as its cut.
    let ulps: Vec<f32> = (0..3_000).map(|_| 1.0e6 + 0.0625 * (rng.next_u64() % 3) as f32).collect();
    for values in [integers, reals, ulps] {
        let mut f = forest(1, 1, 20, 64, 5);
        let mut scratch = Scratch::new(1);
        for (i, &v) in values.iter().enumerate() {
            let mut store = PointStore::new(1, 1);
            let linked: Vec<Tree> = f.trees.iter().map(|t| t.as_general(&mut store)).collect();
            // Points on samples (duplicates), between them and outside the range.
            let probes = [v, -v, v + 0.5, 150.0 * rng.next_f64() as f32 - 20.0];
            for x in probes.map(|p| [p]) {
                for (tree, linked) in f.trees.iter().zip(&linked) {
                    if tree.mass() == 0 {
                        continue;
                    }
                    let Scratch { descent, lo, hi, .. } = &mut scratch;
                    linked.descend(&x, descent);
                    let (mut draws, mut general_draws) = (rng.clone(), rng.clone());
                    let general = linked.walk(&x, &store, descent, lo, hi, Some(&mut general_draws));
                    let placed = tree.walk_ranked(x[0], tree.rank(x[0]), Some(&mut draws));
                    let searched = tree.score_sorted(x[0]);
                    assert_eq!(placed.0.to_bits(), general.0.to_bits(), "point {i}, probe {x:?}");
                    assert_eq!(searched.to_bits(), general.0.to_bits(), "point {i}, probe {x:?}");
                    // The same placement (Debug tells the cut's zeros apart) from the same draws.
                    assert_eq!(format!("{:?}", placed.1), format!("{:?}", general.1), "point {i}, probe {x:?}");
                    assert_eq!(draws.next_u64(), general_draws.next_u64(), "point {i}, probe {x:?}");
                }
                for group in f.trees.chunks(4) {
                    for (tree, r) in group.iter().zip(Tree::ranks::<4>(group, &x).into_iter().flatten()) {
                        let searched = tree.score_sorted(x[0]);
                        assert_eq!(tree.score_ranked(x[0], r).to_bits(), searched.to_bits(), "point {i}");
                    }
                }
            }
            f.update(&[v]).expect("update");
            if i % 500 == 0 {
                for tree in &f.trees {
                    assert_eq!(tree.check(&f.store, 64), Ok(()), "point {i}");
                }
            }
        }
    }
}

#[test]
fn scores_are_those_of_whole_boxes_to_the_bit() {
    // A walk stops reading a sibling's leaves once its box holds the point; the score
    // must be the one every node's whole box gives. Points near the samples (inside a
    // box early), between them and far out, with shingles of 8 and 10-D points (the
    // fixed-size boxes) and 20-D ones (the general loop).
    for (features, shingle_size) in [(1, 8), (10, 1), (20, 1)] {
        let mut f = forest(features, shingle_size, 6, 64, 41);
        let mut rng = Rng::new(43);
        let mut scratch = Scratch::new(features * shingle_size);
        for i in 0..1_500 {
            let record: Vec<f32> =
                (0..features).map(|d| (10.0 * (0.05 * (i + 7 * d) as f64).sin()) as f32 + gaussian(&mut rng)).collect();
            f.update(&record).expect("update");
            if !f.store.has_point() {
                continue;
            }
            let newest = f.store.point(f.store.newest()).to_vec();
            let scale = [0.0, 0.3, 3.0, 30.0][i % 4];
            let x: Vec<f32> = newest.iter().map(|&v| v + scale * gaussian(&mut rng)).collect();
            for tree in &f.trees {
                let walked = tree.score(&x, &f.store, &mut scratch);
                assert_eq!(walked.to_bits(), tree.score_by_whole_boxes(&x, &f.store).to_bits(), "point {i}");
            }
        }
    }
}

#[test]
fn trees_descended_together_take_the_paths_they_take_alone() {
    // Integer values make runs of duplicates, where a lane stops early; the probes also
    // fall between samples and outside their range. One and three dimensions.
    for (shingle_size, seed) in [(1, 31), (3, 37)] {
        let (values, _) = seed_scenario(2_000, seed);
        let mut f = forest(1, shingle_size, 2 * LANES, 64, seed);
        let mut rng = Rng::new(seed);
        let (mut together, mut shortened, mut alone) =
            (Scratch::new(shingle_size), Scratch::new(shingle_size), Scratch::new(shingle_size));
        for (i, &v) in values.iter().enumerate() {
            f.update(&[v]).expect("update");
            if f.trees.iter().any(|t| t.mass() < 2) {
                continue;
            }
            let mut x = f.store.shingle_prefix().to_vec();
            x.push([v, v + 0.5, 150.0 * rng.next_f64() as f32 - 20.0][i % 3]);
            // (One-dimensional trees only descend with their pointers set.)
            let linked: Vec<Tree> = f.trees.iter().map(Tree::relinked).collect();
            for group in linked.chunks_exact(LANES) {
                let group = <&[Tree; LANES]>::try_from(group).expect("whole groups");
                Tree::descend_lanes(group, &x, &mut together);
                // Also in a lockstep of four steps, which most of these trees outgrow.
                Tree::descend_lanes_within::<4>(group, &x, &mut shortened);
                for (lane, tree) in group.iter().enumerate() {
                    tree.descend(&x, &mut alone.descent);
                    assert_eq!(together.lanes[lane].outcome(), alone.descent.outcome(), "point {i}, lane {lane}");
                    assert_eq!(
                        shortened.lanes[lane].outcome(),
                        alone.descent.outcome(),
                        "point {i}, lane {lane}, 4 steps"
                    );
                }
            }
        }
    }
}

#[test]
fn one_dimensional_trees_learn_as_trees_with_pointers_do() {
    // A one-dimensional tree keeps its shape as levels and is searched, not descended;
    // the same tree kept the general way (pointers, descents) must take and evict the
    // same samples to the same places, through runs of duplicates, both zeros and
    // neighbouring floats, and its pointers must be the ones the levels give.
    let (integers, _) = seed_scenario(2_000, 61);
    let mut rng = Rng::new(67);
    let reals: Vec<f32> =
        (0..2_000).map(|i| if i % 40 == 0 { -0.0 } else { (rng.next_f64() * 8.0 - 4.0) as f32 }).collect();
    let ulps: Vec<f32> = (0..2_000).map(|_| 1.0e6 + 0.0625 * (rng.next_u64() % 4) as f32).collect();
    let params = forest(1, 1, 1, 64, 1).params.clone();
    for values in [integers, reals, ulps] {
        let mut store = PointStore::new(1, 1);
        let (mut sorted, mut general) = (Tree::new(64, 71, true), Tree::new(64, 71, false));
        let (mut scratch, mut general_scratch) = (Scratch::new(1), Scratch::new(1));
        for (i, &v) in values.iter().enumerate() {
            store.push(&[v]);
            let (t, x) = (i as u64 + 1, [v]);
            let accepts = sorted.accepts(t, 64);
            assert_eq!(accepts, general.accepts(t, 64), "point {i}");
            let Scratch { descent, lo, hi, delete_path, .. } = &mut scratch;
            let (score, pending) = sorted.prepare(&x, true, accepts, &store, descent, lo, hi);
            if let Some(pending) = pending {
                sorted.commit(t, pending, descent, sorted.leaf_of(i as u32, &x), &params, delete_path);
            }
            let Scratch { descent, lo, hi, delete_path, .. } = &mut general_scratch;
            let (general_score, pending) = general.prepare(&x, true, accepts, &store, descent, lo, hi);
            if let Some(pending) = pending {
                general.commit(t, pending, descent, i as u32, &params, delete_path);
            }
            assert_eq!(score.map(f64::to_bits), general_score.map(f64::to_bits), "point {i}");
            // The one-dimensional tree keeps the values the general one references.
            let value = |r: &u32| store.point(*r)[0].to_bits();
            let (leaves, nodes, root, _) = sorted.relinked().shape();
            let (general_leaves, general_nodes, general_root, _) = general.shape();
            let general_leaves: Vec<u32> = general_leaves.iter().map(value).collect();
            assert_eq!((leaves, root), (general_leaves, general_root), "point {i}");
            assert_eq!(format!("{nodes:?}"), format!("{general_nodes:?}"), "point {i}");
            assert_eq!(sorted.keys, general.keys, "point {i}");
            // Attribution and the nearest sample read the search in a 1-D tree.
            for probe in [v, v + 0.5, -v - 1.0] {
                let mut parts = [[0.0; 1]; 4];
                let [high, low, general_high, general_low] = &mut parts;
                sorted.attribution(&[probe], &store, &mut scratch, high, low);
                general.attribution(&[probe], &store, &mut general_scratch, general_high, general_low);
                let bits = parts.map(|p| p[0].to_bits());
                assert_eq!((bits[0], bits[1]), (bits[2], bits[3]), "point {i}, probe {probe}");
            }
            for probe in [v, v + 0.5, f32::NAN] {
                assert_eq!(
                    sorted.nearest_known(&[probe], &store),
                    general.nearest_known(&[probe], &store).as_ref().map(value),
                    "point {i}"
                );
            }
        }
        assert_eq!(sorted.check(&store, 64), Ok(()));
    }
}

#[test]
fn a_one_dimensional_model_keeps_a_sample_in_under_fifteen_bytes_its_value_included() {
    // A leaf's value, its sampler key and its node's cut (4 bytes each) and level (2),
    // as such trees keep no pointers and no references, and the trees' and scratch
    // space's fixed sizes; the store holds only records since its last compaction.
    let (values, _) = seed_scenario(5_000, 9);
    let mut f = forest(1, 1, 50, 256, 9);
    for &v in &values {
        f.update(&[v]).expect("update");
    }
    let (samples, bytes) = (50 * 256, f.memory_bytes());
    assert!(bytes <= samples * 15, "{bytes} bytes for {samples} samples");
    assert!(f.store.memory_bytes() <= 2 * 256 * 4, "{} bytes in the store", f.store.memory_bytes());
}
