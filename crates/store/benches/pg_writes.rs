//! Acknowledged writes per second of `PgStore` on a local PostgreSQL 15 (started by the bench,
//! `fsync = on`, no standby), by number of concurrent writers, on one store instance and on two
//! ("two nodes" sharing the database); and linearizable `certificates_version` reads per second.
//!
//! Each write is one `commit` of an `InsertCertificate` (800-byte DER) and an `AppendAudit`, as in
//! `store_writes`. Run: `cargo bench -p cps-store --bench pg_writes` (env `STORE_BENCH_SECS`,
//! default 3, sets the measuring time per row).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_store::{PgOptions, PgStore, Store, WriteBatch, WriteOp};
use cps_testkit::postgres::Postgres;

#[path = "../tests/support/fixture.rs"]
mod fixture;

fn writes(
    stores: &[Arc<PgStore>],
    writers: usize,
    duration: Duration,
    next_id: &Arc<AtomicU64>,
    report: bool,
) {
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (store, next_id) = (stores[w % stores.len()].clone(), next_id.clone());
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
    if !report {
        return;
    }
    println!(
        "| commit | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
        stores.len(),
        writers,
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

fn version_reads(store: &Arc<PgStore>, readers: usize, duration: Duration) {
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    store.certificates_version().unwrap();
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
    println!(
        "| certificates_version | 1 | {readers} | {} | {:.0} | {:.2} ms | {:.2} ms |",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let secs = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let duration = Duration::from_secs_f64(secs);
    let pg = Postgres::start();
    let url = pg.create_database("bench");
    let open = || {
        Arc::new(
            PgStore::open(
                &url,
                PgOptions {
                    pool_size: 32,
                    ..PgOptions::default()
                },
            )
            .unwrap(),
        )
    };
    let (a, b) = (open(), open());
    let next_id = Arc::new(AtomicU64::new(1));
    // Warm-up (connections, prepared statements, page cache), not reported.
    writes(
        std::slice::from_ref(&a),
        8,
        Duration::from_secs(1),
        &next_id,
        false,
    );
    println!("| operation | store instances | threads | operations | per second | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for writers in [1, 8, 32] {
        writes(std::slice::from_ref(&a), writers, duration, &next_id, true);
    }
    for writers in [8, 32] {
        writes(&[a.clone(), b.clone()], writers, duration, &next_id, true);
    }
    for readers in [1, 8] {
        version_reads(&a, readers, duration);
    }
}
