//! Score-then-update throughput of the forest, one core, seeded streams, in steady
//! state (after the samples are full), record by record (`score_and_update`) and in
//! batches (`score_and_update_batch`, same scores). Run: `cargo bench --bench forest`.
//!
//! Also prints `memory_bytes()` of each model, the figure the README's memory line uses.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use rcfd::forest::{Forest, ForestConfig};

#[path = "common/cases.rs"]
mod cases;
#[path = "common/stream.rs"]
mod stream;
use cases::{BATCH, CASES, SAMPLE_SIZE, SEED, WARM_UP_POINTS};
use stream::Stream;

/// A forest in steady state and the next `BATCH` records of its stream.
fn warmed_up(features: usize, shingle_size: usize, trees: usize, threads: usize) -> (Forest, Vec<Vec<f32>>) {
    let config = ForestConfig {
        features,
        shingle_size,
        trees,
        sample_size: SAMPLE_SIZE,
        seed: SEED,
        threads,
        ..Default::default()
    };
    let mut forest = Forest::new(&config).expect("valid config");
    let mut stream = Stream(0x9e37_79b9_7f4a_7c15);
    for i in 0..WARM_UP_POINTS {
        forest.update(&stream.record(i, features)).expect("update");
    }
    let records = (0..BATCH).map(|i| stream.record(WARM_UP_POINTS + i, features)).collect();
    (forest, records)
}

fn bench_forest(c: &mut Criterion) {
    let mut group = c.benchmark_group("score_and_update");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, features, shingle_size, trees) in CASES {
        let (mut forest, records) = warmed_up(features, shingle_size, trees, 1);
        eprintln!(
            "{name}: memory_bytes = {} ({:.1} KiB)",
            forest.memory_bytes(),
            forest.memory_bytes() as f64 / 1024.0
        );
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut total = 0.0;
                for record in &records {
                    total += forest.score_and_update(record).expect("score");
                }
                total
            })
        });
    }
    group.finish();

    // Batches, on one core and then with the trees shared by two threads.
    for (group_name, threads) in [("score_and_update_batch", 1), ("score_and_update_batch_2_threads", 2)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(20);
        group.throughput(Throughput::Elements(BATCH as u64));
        for (name, features, shingle_size, trees) in CASES {
            let (mut forest, records) = warmed_up(features, shingle_size, trees, threads);
            let rows = Array2::from_shape_vec((BATCH, features), records.concat()).expect("shape");
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| forest.score_and_update_batch(rows.view()).expect("score"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_forest);
criterion_main!(benches);
