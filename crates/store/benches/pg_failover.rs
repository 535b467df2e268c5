//! Failover time of the PostgreSQL store: from the primary's death (SIGKILL of its postmaster)
//! to the first write acknowledged by the promoted synchronous standby, through the same
//! `PgStore` (multi-host URL, `target_session_attrs=read-write`), while writers keep committing.
//!
//! Each round starts a primary and a synchronous standby (`Postgres::standby_of`), runs 4 writer
//! threads (certificate + audit record per commit, as in `pg_writes`) for a second, kills the
//! primary, promotes the standby at once (`pg_promote`, as an operator or a failover manager
//! would; the time it takes to *decide* to promote is not part of this number), and records when
//! the first commit after the kill is acknowledged, and how many commits were acknowledged before
//! the kill. Run: `cargo bench -p cps-store --bench pg_failover` (env `FAILOVER_ROUNDS`, default 5;
//! `FAILOVER_RETRY_MS` sets the standby's `wal_retrieve_retry_interval`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_store::{PgOptions, PgStore, Store, WriteBatch, WriteOp};
use cps_testkit::postgres::Postgres;

#[path = "../tests/support/fixture.rs"]
mod fixture;

struct Round {
    /// Kill → `pg_promote` returned and the standby left recovery.
    promoted: Duration,
    /// Kill → first acknowledged commit.
    first_ack: Duration,
    acked_before: u64,
    refused: u64,
}

fn round(seed: u64) -> Round {
    let mut primary = Postgres::start();
    primary.create_database("cps");
    drop(PgStore::open(&primary.url_of("cps"), PgOptions::default()).unwrap());
    let standby = Postgres::standby_of(&primary);
    // FAILOVER_RETRY_MS: the standby's `wal_retrieve_retry_interval` (default 5 s: how long its
    // startup process may sleep after losing the primary before it looks again, promotion
    // request included).
    if let Some(ms) = std::env::var("FAILOVER_RETRY_MS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        standby
            .psql(
                "postgres",
                &format!("ALTER SYSTEM SET wal_retrieve_retry_interval = '{ms}ms'"),
            )
            .unwrap();
        standby.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    }
    let url = format!(
        "postgresql://postgres@{},{}/cps?target_session_attrs=read-write&connect_timeout=2",
        primary.host_port(),
        standby.host_port()
    );
    let store = Arc::new(
        PgStore::open(
            &url,
            PgOptions {
                pool_size: 4,
                wait: Duration::from_secs(2),
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let next = Arc::new(AtomicU64::new(seed * 1_000_000));
    let written_after = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop, killed, next, written_after) = (
                store.clone(),
                stop.clone(),
                killed.clone(),
                next.clone(),
                written_after.clone(),
            );
            std::thread::spawn(move || {
                let (mut before, mut refused, mut first_after) = (0u64, 0u64, None);
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let batch = WriteBatch::new()
                        .with(WriteOp::InsertCertificate(fixture::certificate(id)))
                        .with(WriteOp::AppendAudit(fixture::audit(id)));
                    let started = Instant::now();
                    let result = store.commit(batch);
                    let at = Instant::now();
                    match (result, *killed.lock()) {
                        // Started after the kill: this is a write on the new primary.
                        (Ok(_), Some(k)) if started > k => {
                            first_after.get_or_insert(at);
                            written_after.store(true, Ordering::SeqCst);
                        }
                        (Ok(_), _) => before += 1,
                        (Err(_), _) => {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (before, refused, first_after)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let t_kill = Instant::now();
    *killed.lock() = Some(t_kill);
    primary.kill9();
    standby.promote();
    let promoted = t_kill.elapsed();
    // Let the writers reach the new primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !written_after.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    let (mut acked_before, mut refused, mut first) = (0, 0, None::<Instant>);
    for w in writers {
        let (b, r, f) = w.join().unwrap();
        acked_before += b;
        refused += r;
        if let Some(f) = f {
            first = Some(first.map_or(f, |x| x.min(f)));
        }
    }
    let first_ack = first.expect("no write acknowledged after the failover") - t_kill;
    drop(store);
    drop(standby);
    Round {
        promoted,
        first_ack,
        acked_before,
        refused,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: u64 = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "| round | kill → standby promoted | kill → first acknowledged write | commits acknowledged before the kill | commits refused meanwhile |"
    );
    println!("|---|---|---|---|---|");
    let mut firsts = Vec::new();
    for r in 0..rounds {
        let x = round(r + 1);
        println!(
            "| {} | {:.0} ms | {:.0} ms | {} | {} |",
            r + 1,
            x.promoted.as_secs_f64() * 1e3,
            x.first_ack.as_secs_f64() * 1e3,
            x.acked_before,
            x.refused
        );
        firsts.push(x.first_ack);
    }
    firsts.sort();
    println!(
        "median kill → first acknowledged write: {:.0} ms (min {:.0}, max {:.0})",
        firsts[firsts.len() / 2].as_secs_f64() * 1e3,
        firsts[0].as_secs_f64() * 1e3,
        firsts[firsts.len() - 1].as_secs_f64() * 1e3
    );
}
