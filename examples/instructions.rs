//! Scores then updates points of the forest bench's stream, for counting the
//! instructions a point costs: `scripts/instructions.sh` runs this under valgrind, once
//! with the points and once without, and prints the difference per point. Unlike a
//! timing on a shared machine, the count is the same on every run, so a change of 1%
//! shows. (It is a count, not a time: check a change that helps with the bench too.)
//!
//! `instructions FEATURES SHINGLE_SIZE TREES WARM_UP POINTS` prints the sum of the
//! scores (the same for changes that keep every score to the bit) and the rate.

use std::time::Instant;

use rcfd::forest::{Forest, ForestConfig};

#[path = "../benches/common/stream.rs"]
mod stream;
use stream::Stream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = std::env::args().skip(1).map(|a| a.parse::<usize>()).collect::<Result<Vec<_>, _>>()?;
    let [features, shingle_size, trees, warm_up, points] = args[..] else {
        return Err("usage: instructions FEATURES SHINGLE_SIZE TREES WARM_UP POINTS".into());
    };
    // The bench's forest and stream (see benches/forest.rs).
    let config =
        ForestConfig { features, shingle_size, trees, sample_size: 256, seed: 7, threads: 1, ..Default::default() };
    let mut forest = Forest::new(&config)?;
    let mut stream = Stream(0x9e37_79b9_7f4a_7c15);
    let records: Vec<Vec<f32>> = (0..warm_up + points).map(|i| stream.record(i, features)).collect();
    for record in &records[..warm_up] {
        forest.update(record)?;
    }
    let start = Instant::now();
    let mut total = 0.0;
    for record in &records[warm_up..] {
        total += forest.score_and_update(record)?;
    }
    let rate = points as f64 / start.elapsed().as_secs_f64();
    println!("score sum {total} ({rate:.0} points/s)");
    Ok(())
}
