//! Issuance throughput with the seal key in SoftHSM2, against SoftHSM2's own raw signing rate
//! measured in the same run by `bench/p11raw.c` (raw C_SignInit/C_Sign, one session per thread).
//!
//! Run: `cargo bench -p cps-xua --bench issue` (optionally `-- <seconds>` for the rate table;
//! default 3). Criterion measures one-thread issuance (SoftHSM2 P-256 and RSA-2048 keys, and a
//! signer that returns a constant, which isolates the cost of writing, canonical digesting and
//! encoding the assertion); then a markdown table compares issuance rates with the raw rates.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cps_hsm::{
    Hsm, HsmConfig, HsmError, KeyAlgorithm, PinSource, SigFormat, SignatureAlgorithm, Signer,
    init_token_on_free_slot,
};
use cps_xua::{AssertionId, AssertionIssuer, IssuerConfig};
use criterion::{Criterion, Throughput};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "24681357";
const TOKEN: &str = "xua-bench";

/// Returns a constant signature of the right size: the issuer's own cost, without the HSM.
struct ConstantSigner {
    inner: Arc<dyn Signer>,
}

impl Signer for ConstantSigner {
    fn label(&self) -> &str {
        "constant"
    }
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.inner.key_algorithm()
    }
    fn public_key_der(&self) -> &[u8] {
        self.inner.public_key_der()
    }
    fn sign(&self, _: SignatureAlgorithm, _: &[u8], _: SigFormat) -> Result<Vec<u8>, HsmError> {
        Ok(vec![
            0x5a;
            if self.inner.key_algorithm().is_rsa() {
                256
            } else {
                64
            }
        ])
    }
}

fn build_baseline(out_dir: &Path) -> PathBuf {
    let bin = out_dir.join("p11raw");
    let src = repo_root().join("bench/p11raw.c");
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-I/usr/include/p11-kit-1"])
        .arg(&src)
        .args(["-ldl", "-o"])
        .arg(&bin)
        .status()
        .expect("cc (build-essential) to build bench/p11raw.c");
    assert!(st.success(), "building {} failed", src.display());
    bin
}

fn baseline(bin: &Path, key: &str, mech: &str, threads: usize, secs: f64) -> f64 {
    let out = Command::new(bin)
        .args([
            MODULE,
            TOKEN,
            PIN,
            key,
            mech,
            &threads.to_string(),
            &secs.to_string(),
        ])
        .output()
        .expect("run p11raw");
    assert!(
        out.status.success(),
        "p11raw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("rate")
}

fn id_for(i: u64) -> AssertionId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[8] = 0x15;
    AssertionId::from_random(b)
}

/// Issuance rate from `threads` threads for `secs` seconds.
fn issue_rate(issuer: &Arc<AssertionIssuer>, threads: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let claims = claims();
    let now = corpus_now();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (issuer, stop, count, claims) =
                (issuer.clone(), stop.clone(), count.clone(), &claims);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    issuer
                        .issue(claims, now, &id_for((t << 40) | n))
                        .expect("issue");
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir.path().display())).unwrap();
    // SAFETY: single-threaded here, before any PKCS#11 call; the child process inherits it.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var("CPS_XUA_BENCH_PIN", PIN);
    }
    init_token_on_free_slot(Path::new(MODULE), TOKEN, "13572468", PIN).unwrap();
    let hsm = Hsm::open(&HsmConfig {
        module: MODULE.into(),
        token_label: TOKEN.into(),
        pin: PinSource::Env("CPS_XUA_BENCH_PIN".into()),
        sessions: 8,
    })
    .unwrap();
    let p256: Arc<dyn Signer> =
        Arc::new(hsm.generate_key_pair("p256", KeyAlgorithm::EcP256).unwrap());
    let rsa: Arc<dyn Signer> = Arc::new(
        hsm.generate_key_pair("rsa2048", KeyAlgorithm::Rsa2048)
            .unwrap(),
    );
    let issuer = |k: &Arc<dyn Signer>, serial| {
        let cert = pki().certify(k.as_ref(), serial);
        Arc::new(AssertionIssuer::new(k.clone(), &[cert], IssuerConfig::default()).unwrap())
    };
    let p256_issuer = issuer(&p256, 60);
    let rsa_issuer = issuer(&rsa, 61);
    let constant: Arc<dyn Signer> = Arc::new(ConstantSigner {
        inner: p256.clone(),
    });
    let constant_issuer = issuer(&constant, 62);

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("xua-issue");
        g.throughput(Throughput::Elements(1));
        let claims = claims();
        let now = corpus_now();
        for (name, iss) in [
            ("p256-softhsm/1-thread", &p256_issuer),
            ("rsa2048-softhsm/1-thread", &rsa_issuer),
            ("constant-signer/1-thread", &constant_issuer),
        ] {
            let mut i = 0u64;
            g.bench_function(name, |b| {
                b.iter(|| {
                    i += 1;
                    iss.issue(&claims, now, &id_for(i)).unwrap()
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    let bin = build_baseline(dir.path());
    println!(
        "\n| key | threads | SoftHSM2 raw C (sig/s) | cps-xua issuance (assertions/s) | ratio |"
    );
    println!("|---|---|---|---|---|");
    for (name, key, iss, mech) in [
        ("P-256", "p256", &p256_issuer, "ecdsa"),
        ("RSA-2048", "rsa2048", &rsa_issuer, "rsa"),
    ] {
        for threads in [1usize, 2] {
            let raw = baseline(&bin, key, mech, threads, secs);
            let ours = issue_rate(iss, threads, secs);
            println!(
                "| {name} | {threads} | {raw:.0} | {ours:.0} | {:.0}% |",
                100.0 * ours / raw
            );
        }
    }
    let no_hsm = issue_rate(&constant_issuer, 1, secs.min(2.0));
    println!("\nIssuance without the HSM (constant signer, 1 thread): {no_hsm:.0} assertions/s");
}
