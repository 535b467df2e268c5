//! Acknowledged (durable) writes per second of `SledStore`, by number of concurrent writers.
//!
//! Each write is one `commit` of an `InsertCertificate` (800-byte DER) and an `AppendAudit`.
//! Run: `cargo bench -p cps-store --bench store_writes` (env `STORE_BENCH_SECS`, default 3, sets
//! the measuring time per row). The store lives under the target directory, i.e. on the same disk
//! as the build, not on a tmpfs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_store::{FlushPolicy, SledStore, Store, WriteBatch, WriteOp};

#[path = "../tests/support/fixture.rs"]
mod fixture;

struct Row {
    policy: &'static str,
    writers: usize,
    commits: u64,
    secs: f64,
    flushes: u64,
    p50: Duration,
    p99: Duration,
}

fn run(policy: FlushPolicy, writers: usize, duration: Duration) -> Row {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(SledStore::open_with(dir.path(), policy).unwrap());
    let next_id = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (store, next_id) = (store.clone(), next_id.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let batch = WriteBatch::new()
                        .with(WriteOp::InsertCertificate(fixture::certificate(id)))
                        .with(WriteOp::AppendAudit(fixture::audit(id)));
                    let t = Instant::now();
                    store.commit(batch).unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let stats = store.commit_stats();
    assert_eq!(stats.commits, latencies.len() as u64);
    Row {
        policy: match policy {
            FlushPolicy::GroupCommit => "group commit",
            _ => "flush per commit",
        },
        writers,
        commits: stats.commits,
        secs,
        flushes: stats.flushes,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn main() {
    let secs = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let duration = Duration::from_secs_f64(secs);
    let plan = [
        (FlushPolicy::GroupCommit, 1),
        (FlushPolicy::GroupCommit, 8),
        (FlushPolicy::GroupCommit, 64),
        (FlushPolicy::FlushEachCommit, 1),
        (FlushPolicy::FlushEachCommit, 8),
        (FlushPolicy::FlushEachCommit, 64),
    ];
    // Warm-up (page cache, CPU frequency, allocator), not reported.
    run(FlushPolicy::GroupCommit, 8, Duration::from_secs(1));
    println!(
        "| policy | writers | commits | durable commits/s | flushes | commits per flush | p50 latency | p99 latency |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (policy, writers) in plan {
        let r = run(policy, writers, duration);
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.1} | {:.2} ms | {:.2} ms |",
            r.policy,
            r.writers,
            r.commits,
            r.commits as f64 / r.secs,
            r.flushes,
            r.commits as f64 / r.flushes.max(1) as f64,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
    }
}
