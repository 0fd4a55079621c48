//! A model per entity at scale: 100,000 entities resident in one registry, each with a
//! small forest (20 trees, sample size 64). Reports the memory per model and measures
//! records per second spread over all entities (each record goes to a different model,
//! the worst case for caches). Run: `cargo bench --bench registry`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcfd::detector::config::DetectorConfig;
use rcfd::detector::registry::Registry;
use rcfd::store::embedded::EmbeddedStore;

const ENTITIES: usize = 100_000;
/// Records per entity before measuring: enough to fill each sample (64) and warm up.
const WARM_UP_RECORDS: usize = 80;
const BATCH: usize = 10_000;

fn value(entity: usize, step: usize) -> f64 {
    // Each entity has its own level and a small repeating pattern.
    (entity % 97) as f64 + ((step * 7 + entity) % 11) as f64 * 0.1
}

fn bench_registry(c: &mut Criterion) {
    let detector = DetectorConfig::from_toml(
        "name = \"fleet\"\nentity_key = [\"id\"]\nfeatures = [\"v\"]\n[forest]\ntrees = 20\nsample_size = 64\n",
    )
    .expect("parses")
    .validate()
    .expect("valid");
    let path = std::env::temp_dir().join(format!("rcfd-bench-registry-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
    let mut registry = Registry::new(vec![detector], ENTITIES, store);
    let names: Vec<String> = (0..ENTITIES).map(|e| format!("device-{e:06}")).collect();
    for step in 0..WARM_UP_RECORDS {
        for (e, name) in names.iter().enumerate() {
            registry.process("fleet", name, step as i64, &[value(e, step)], None).expect("warm-up");
        }
    }
    let memory = registry.models_memory_bytes();
    eprintln!(
        "{} resident models, {:.1} MiB in models, {:.1} KiB per model",
        registry.resident(),
        memory as f64 / (1 << 20) as f64,
        memory as f64 / registry.resident() as f64 / 1024.0
    );
    let mut step = WARM_UP_RECORDS;
    let mut next = 0usize;
    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("100k_entities_round_robin", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let e = next % ENTITIES;
                registry.process("fleet", &names[e], step as i64, &[value(e, step)], None).expect("scored");
                next += 1;
                if next.is_multiple_of(ENTITIES) {
                    step += 1;
                }
            }
        })
    });
    group.finish();
    assert_eq!(registry.stats().evicted, 0, "everything stays resident");
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench_registry);
criterion_main!(benches);
