//! The replay record's cost per validation: in memory, and in the store (sled) through the
//! batching claim, with 1 and 16 validations at once (numbers in BENCHMARKS.md, "Replay record
//! in the store").
//!
//! Run: `cargo bench -p cps-login --bench replay_record`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cps_login::StoreReplayCache;
use cps_store::{SledStore, Store};
use cps_xua::{InMemoryReplayCache, ReplayCache};
use criterion::{Criterion, criterion_group, criterion_main};

/// CPU seconds (user + system) of this process so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `iters` distinct IDs checked by `threads` threads at once; returns the wall time.
fn run(cache: &dyn ReplayCache, threads: u64, iters: u64, next: &AtomicU64) -> Duration {
    let now = SystemTime::now();
    let until = now + Duration::from_secs(3600);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters.div_ceil(threads) {
                    let id = format!("_{:032x}", next.fetch_add(1, Ordering::Relaxed));
                    cache.check_and_insert(&id, until, now).unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    // The front filter's capacity does not matter: a full filter changes nothing.
    let shared = StoreReplayCache::new(store, Arc::new(InMemoryReplayCache::new(1_000_000)));
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("replay_record");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for threads in [1u64, 16] {
        g.bench_function(format!("memory, {threads} at once"), |b| {
            // A new cache per sample, large enough never to be full.
            b.iter_custom(|iters| {
                let memory = InMemoryReplayCache::new(2 * iters as usize + 1024);
                run(&memory, threads, iters, &next)
            })
        });
        let cpu0 = cpu_secs();
        let stats0 = shared.stats();
        g.bench_function(format!("sled store, {threads} at once"), |b| {
            b.iter_custom(|iters| run(&shared, threads, iters, &next))
        });
        let stats = shared.stats();
        let claims = (stats.claims - stats0.claims).max(1);
        println!(
            "sled store, {threads} at once: {claims} claims in {} store calls ({:.1} per call), \
             {:.1} µs of process CPU per claim",
            stats.batches - stats0.batches,
            claims as f64 / (stats.batches - stats0.batches).max(1) as f64,
            (cpu_secs() - cpu0) * 1e6 / claims as f64
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
