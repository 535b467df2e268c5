//! Validation throughput (criterion): `verify` (every check but the replay cache) and `validate`
//! (with the in-memory replay cache, each assertion distinct), RSA-2048 and P-256 signers, on one
//! thread and on two threads. `rsa2048` and `p256` are the issuer's own seals (the signer policy
//! trusts their claims as issued); `rsa2048-org` is another organisation's seal, whose claims the
//! policy binds to its structure and checks against the (in-memory) corpus registry.
//!
//! Run: `cargo bench -p cps-xua --bench validate`. It also writes the benchmarked assertions and
//! their signer certificates to `<target>/xua-bench/` so that `crates/xua/bench/compare_signxml.sh`
//! can time signxml over the very same documents.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cps_hsm::Signer;
use cps_xua::{AssertionId, IssuerConfig, Validator};
use criterion::{Criterion, Throughput};

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

struct Kind {
    name: &'static str,
    signer: Arc<dyn Signer>,
    cert: Vec<u8>,
    claims: cps_xua::VihfClaims,
    /// The issuer's own seal (otherwise an organisation seal).
    own: bool,
}

impl Kind {
    fn setup(&self) -> Setup {
        if self.own {
            Setup::default().with_own_seal(&self.cert)
        } else {
            Setup::default()
        }
    }
}

fn kinds() -> Vec<Kind> {
    let p = pki();
    let (ec, ec_der) = p.new_seal(false, 90);
    let mut org_claims = claims();
    org_claims.structure_id = ORG_STRUCTURE.into();
    org_claims.secteur_activite = "SA08^1.2.250.1.71.4.2.4".into();
    vec![
        Kind {
            name: "rsa2048",
            signer: p.seal.signer.clone(),
            cert: p.seal_der.clone(),
            claims: claims(),
            own: true,
        },
        Kind {
            name: "p256",
            signer: ec.signer.clone(),
            cert: ec_der,
            claims: claims(),
            own: true,
        },
        Kind {
            name: "rsa2048-org",
            signer: p.org_seal.signer.clone(),
            cert: p.org_seal_der.clone(),
            claims: org_claims,
            own: false,
        },
    ]
}

/// `n` distinct assertions (IDs differ) signed by `k`.
fn assertions(k: &Kind, n: usize) -> Vec<Vec<u8>> {
    let issuer = issuer_for(k.signer.clone(), &k.cert, IssuerConfig::default());
    (0..n)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            b[8] = 0xbe;
            issuer
                .issue(&k.claims, corpus_now(), &AssertionId::from_random(b))
                .unwrap()
                .xml
                .into_bytes()
        })
        .collect()
}

/// Run `per_thread` validations on each of `threads` threads; returns the wall time.
fn parallel(threads: usize, total: u64, f: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let f = &f;
            s.spawn(move || {
                let per = total / threads as u64;
                for i in 0..per {
                    f(t * per + i);
                }
            });
        }
    });
    start.elapsed()
}

/// On-CPU time of the calling thread (ns), from the scheduler's accounting: unlike wall time it
/// does not grow when other processes share the cores.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let out = target_dir().join("xua-bench");
    std::fs::create_dir_all(&out).unwrap();
    let now = corpus_now();
    let mut summary = Vec::new();
    for k in kinds() {
        let n = std::env::var("XUA_BENCH_DOCS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4000);
        let docs = assertions(&k, n);
        std::fs::write(out.join(format!("assertion-{}.xml", k.name)), &docs[0]).unwrap();
        std::fs::write(
            out.join(format!("seal-{}.pem", k.name)),
            pem("CERTIFICATE", &k.cert),
        )
        .unwrap();
        let v = validator(k.setup());
        v.verify(&docs[0], now)
            .expect("benchmark assertion verifies");

        let mut g = c.benchmark_group(format!("xua/{}", k.name));
        g.throughput(Throughput::Elements(1));
        g.bench_function("verify/1-thread", |b| {
            b.iter(|| v.verify(&docs[0], now).unwrap())
        });
        g.bench_function("verify/2-threads", |b| {
            b.iter_custom(|iters| {
                parallel(2, iters.max(2), |_| {
                    v.verify(&docs[0], now).unwrap();
                })
            })
        });
        // validate: every assertion presented once; a fresh replay cache per pass over the set.
        let fresh = || -> Validator { validator(k.setup()) };
        g.bench_function("validate/1-thread", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(docs.len() as u64);
                    let v = fresh();
                    total += parallel(1, n, |i| {
                        v.validate(&docs[i as usize], now).unwrap();
                    });
                    left -= n;
                }
                total
            })
        });
        g.bench_function("validate/2-threads", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters.max(2);
                while left > 0 {
                    let n = left.min(docs.len() as u64).max(2);
                    let v = fresh();
                    total += parallel(2, n, |i| {
                        v.validate(&docs[i as usize], now).unwrap();
                    });
                    left = left.saturating_sub(n);
                }
                total
            })
        });
        g.finish();

        // Load-independent figure: on-CPU time per assertion on one thread.
        let n = 3000u64.min(docs.len() as u64);
        let v = fresh();
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for i in 0..n {
            v.validate(&docs[i as usize % docs.len()], now).unwrap();
        }
        let (cpu, wall) = (thread_cpu_ns() - cpu0, wall0.elapsed());
        let cpu_us = cpu as f64 / n as f64 / 1000.0;
        summary.push(format!(
            "| {} | {:.1} | {:.0} | {:.1} |",
            k.name,
            cpu_us,
            1e6 / cpu_us,
            wall.as_secs_f64() * 1e6 / n as f64
        ));
    }
    c.final_summary();
    println!("\n| signer | on-CPU µs per validate | implied per core (/s) | wall µs (this run) |");
    println!("|---|---|---|---|");
    for l in summary {
        println!("{l}");
    }
}
