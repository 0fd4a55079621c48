//! The forest's benchmark cases, shared by `benches/forest.rs` and `benches/rcflib.rs`
//! so that the side-by-side runs time exactly what the README's table does.

/// Records scored per iteration: the stream's next `BATCH` after the warm-up.
pub const BATCH: usize = 2_000;
/// Points learned before timing, so that every tree's sample is full.
pub const WARM_UP_POINTS: usize = 20_000;

/// Every case's sample size, and the forests' seed.
pub const SAMPLE_SIZE: usize = 256;
pub const SEED: u64 = 7;

/// (name, features, shingle size, trees): the five cases.
pub const CASES: [(&str, usize, usize, usize); 5] = [
    ("1d_shingle1_100trees", 1, 1, 100),
    ("1d_shingle1_50trees", 1, 1, 50),
    ("1d_shingle8_100trees", 1, 8, 100),
    ("1d_shingle8_50trees", 1, 8, 50),
    ("10d_shingle1_100trees", 10, 1, 100),
];
