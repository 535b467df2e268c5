//! In-process `Responder::respond` rates: cache hit, cache miss (P-256 software signing),
//! nonce request, multi-request, malformed input, and cache hits from 2 threads.
//!
//! `cargo bench -p cps-ocsp --bench respond` (env `CPS_OCSP_BENCH_SCALE` multiplies the
//! iteration counts). Prints a markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cps_ocsp::{NotIssuedPolicy, ResponseStatusKind};

struct Row {
    case: &'static str,
    n: usize,
    elapsed: Duration,
    threads: usize,
}

fn run(case: &'static str, n: usize, mut f: impl FnMut(usize)) -> Row {
    // Warm-up.
    for i in 0..(n / 20).max(1) {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    Row {
        case,
        n,
        elapsed: start.elapsed(),
        threads: 1,
    }
}

fn main() {
    let scale: usize = std::env::var("CPS_OCSP_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let now = 1_800_000_000;
    let pki = build_pki(now, 3);
    let mut cfg = config(NotIssuedPolicy::Unknown);
    cfg.cache_max_entries = 1_000_000;
    let (r, _) = responder(&pki, cfg);
    let r = Arc::new(r);
    let ca = &pki.cas[0];
    let mut rows = Vec::new();

    let hit = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );
    assert_eq!(r.respond(&hit, now).status, ResponseStatusKind::Successful);
    rows.push(run(
        "cache hit (single CertID, no nonce)",
        1_000_000 * scale,
        |_| {
            let reply = r.respond(&hit, now);
            debug_assert!(reply.from_cache);
            std::hint::black_box(reply);
        },
    ));

    let misses: Vec<Vec<u8>> = (0..20_000 * scale as u32)
        .map(|i| {
            let mut serial = (i + 1).to_be_bytes().to_vec();
            serial.insert(0, 0x01);
            request(vec![cert_id(&ca.cert_der, &serial, Hash::Sha1, true)], None)
        })
        .collect();
    r.invalidate_all();
    let n = misses.len();
    let miss = Row {
        threads: 1,
        ..{
            let start = Instant::now();
            for m in &misses {
                let reply = r.respond(m, now);
                debug_assert!(!reply.from_cache);
                std::hint::black_box(reply);
            }
            Row {
                case: "cache miss (lookup + P-256 signing + insert)",
                n,
                elapsed: start.elapsed(),
                threads: 1,
            }
        }
    };
    rows.push(miss);

    let nonce = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        Some(&[0x5a; 16]),
    );
    rows.push(run(
        "nonce request (signed per request)",
        20_000 * scale,
        |_| {
            std::hint::black_box(r.respond(&nonce, now));
        },
    ));

    let multi = request(
        (0..3)
            .map(|i| cert_id(&ca.cert_der, &ca.ee[i].serial, Hash::Sha256, false))
            .collect(),
        None,
    );
    rows.push(run(
        "3 CertIDs, no nonce (signed per request)",
        20_000 * scale,
        |_| {
            std::hint::black_box(r.respond(&multi, now));
        },
    ));

    let mut garbage = hit.clone();
    garbage.truncate(hit.len() - 3);
    rows.push(run(
        "malformed (truncated request)",
        1_000_000 * scale,
        |_| {
            std::hint::black_box(r.respond(&garbage, now));
        },
    ));

    // Two threads hitting the cache at once (2 vCPU machine).
    let n = 1_000_000 * scale;
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (r, hit) = (r.clone(), hit.clone());
            std::thread::spawn(move || {
                for _ in 0..n / 2 {
                    std::hint::black_box(r.respond(&hit, now));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    rows.push(Row {
        case: "cache hit, 2 threads",
        n,
        elapsed: start.elapsed(),
        threads: 2,
    });

    println!("| case | threads | requests | µs/request | requests/s |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let secs = row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.2} | {:.0} |",
            row.case,
            row.threads,
            row.n,
            secs * 1e6 / row.n as f64 * row.threads as f64,
            row.n as f64 / secs
        );
    }
}
