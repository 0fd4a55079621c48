//! The forest's hot path allocates nothing per point: counted with a global allocator
//! that tallies this thread's allocations (other tests run on other threads). The point
//! store's compaction, every few hundred points, allocates its working buffers; that is
//! all that may show.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rcfd::forest::{Forest, ForestConfig};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn score_and_update_allocates_nothing_per_point() {
    for (features, shingle_size) in [(1, 1), (1, 8), (3, 2)] {
        let config = ForestConfig { features, shingle_size, trees: 30, sample_size: 64, ..ForestConfig::default() };
        let mut forest = Forest::new(&config).expect("valid");
        let record = |i: usize| -> Vec<f32> { (0..features).map(|f| ((i * 7 + f * 3) % 23) as f32).collect() };
        let records: Vec<Vec<f32>> = (0..6_000).map(record).collect();
        // Warm up past the first compactions of the point store, which size its buffer.
        for r in &records[..3_000] {
            forest.score_and_update(r).expect("score");
        }
        let before = allocations();
        for r in &records[3_000..] {
            forest.score_and_update(r).expect("score");
        }
        let counted = allocations() - before;
        // 3,000 points; compaction runs about once per 256 and allocates about 4 buffers.
        assert!(counted <= 60, "{counted} allocations in 3,000 points ({features} features, shingle {shingle_size})");
    }
}
