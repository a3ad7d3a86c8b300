//! The streaming core allocates only as its output vectors grow: ten minutes pushed in 20 ms
//! chunks (30,000 pushes) cost a few dozen allocations, not one per chunk.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use analysis::{AnalysisConfig, Analyzer};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn pushing_chunks_allocates_only_for_output_growth() {
    // Alternating turns of a loud tone, 3 s each, so that talk spans are produced too.
    let chunk_frames = 160;
    let chunks = 10 * 60 * 50;
    let audio: Vec<i16> = (0..chunk_frames * chunks)
        .flat_map(|i| {
            let turn = (i / 24_000) % 2;
            let v = ((i as f64 * 0.4).sin() * 6000.0) as i16;
            if turn == 0 {
                [v, 0]
            } else {
                [0, v]
            }
        })
        .collect();
    let mut analyzer = Analyzer::new(AnalysisConfig::default()).unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for chunk in audio.chunks(2 * chunk_frames) {
        analyzer.push(chunk);
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let analysis = analyzer.finish();
    assert_eq!(
        analysis.metrics.switches,
        199,
        "{:?}",
        &analysis.metrics.spans[..4]
    );
    // Two peak vectors of 60,000 values double about 16 times each; two span vectors of
    // 100 spans about 7 times each.
    assert!(during <= 64, "{during} allocations for {chunks} pushes");
}
