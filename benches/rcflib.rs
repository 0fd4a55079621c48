//! rcfd's forest side by side with AWS's Rust library, as the crate `krcflib` 4.0.2
//! publishes it (rcflib 4.0, the library the issue's figures come from): the forest
//! bench's cases and stream, one thread each, score then update per record, both built
//! with this crate's release profile. Run:
//!
//! ```sh
//! cargo bench --features rcflib-comparison --bench rcflib
//! ```
//!
//! Before timing, it prints for each case both forests' mean score over the same 2,000
//! records after the warm-up (the same scale, so the two should be close) and the bytes
//! each reports holding.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rcfd::forest::{Forest, ForestConfig};
use rcflib::rcf::{RCFBuilder, RCFOptionsBuilder, RCF};

#[path = "common/cases.rs"]
mod cases;
#[path = "common/stream.rs"]
mod stream;
use cases::{BATCH, CASES, SAMPLE_SIZE, SEED, WARM_UP_POINTS};
use stream::Stream;

/// The stream's first records, for the warm-up, and the next `BATCH`, for timing.
fn records(features: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut stream = Stream(0x9e37_79b9_7f4a_7c15);
    let mut all: Vec<Vec<f32>> = (0..WARM_UP_POINTS + BATCH).map(|i| stream.record(i, features)).collect();
    let batch = all.split_off(WARM_UP_POINTS);
    (all, batch)
}

fn rcfd_forest(features: usize, shingle_size: usize, trees: usize) -> Forest {
    let config =
        ForestConfig { features, shingle_size, trees, sample_size: SAMPLE_SIZE, seed: SEED, ..Default::default() };
    Forest::new(&config).expect("valid config")
}

/// rcflib with the same sample size, trees, seed and time decay (0.1 / sample size, as
/// rcfd's default), internal shingling and one thread; its other options at their
/// defaults (every bounding box cached, as AWS ships it).
fn rcflib_forest(features: usize, shingle_size: usize, trees: usize) -> Box<dyn RCF + Sync + Send> {
    RCFBuilder::new(features, shingle_size)
        .tree_capacity(SAMPLE_SIZE)
        .number_of_trees(trees)
        .random_seed(SEED)
        .parallel_enabled(false)
        .internal_shingling(true)
        .time_decay(0.1 / SAMPLE_SIZE as f64)
        .build_default()
        .expect("valid rcflib config")
}

fn rcfd_pass(forest: &mut Forest, records: &[Vec<f32>]) -> f64 {
    records.iter().map(|r| forest.score_and_update(r).expect("score")).sum()
}

fn rcflib_pass(forest: &mut Box<dyn RCF + Sync + Send>, records: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for record in records {
        total += forest.score(record).expect("score");
        forest.update(record, 0).expect("update");
    }
    total
}

fn bench_side_by_side(c: &mut Criterion) {
    let mut group = c.benchmark_group("side_by_side");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, features, shingle_size, trees) in CASES {
        let (warm_up, batch) = records(features);
        let mut rcfd = rcfd_forest(features, shingle_size, trees);
        let mut rcflib = rcflib_forest(features, shingle_size, trees);
        for record in &warm_up {
            rcfd.update(record).expect("update");
            rcflib.update(record, 0).expect("update");
        }
        let (ours, theirs) = (rcfd_pass(&mut rcfd, &batch), rcflib_pass(&mut rcflib, &batch));
        eprintln!(
            "{name}: mean score rcfd {:.3}, rcflib {:.3}; bytes rcfd {} ({:.0} KiB), rcflib {} ({:.0} KiB)",
            ours / BATCH as f64,
            theirs / BATCH as f64,
            rcfd.memory_bytes(),
            rcfd.memory_bytes() as f64 / 1024.0,
            rcflib.size(),
            rcflib.size() as f64 / 1024.0,
        );
        group.bench_function(BenchmarkId::new("rcfd", name), |b| b.iter(|| rcfd_pass(&mut rcfd, &batch)));
        group.bench_function(BenchmarkId::new("rcflib", name), |b| b.iter(|| rcflib_pass(&mut rcflib, &batch)));
    }
    group.finish();
}

criterion_group!(benches, bench_side_by_side);
criterion_main!(benches);
