//! Signing throughput through the `hsm` session pool, against SoftHSM2's own C-level rate
//! measured in the same run by `bench/p11raw.c` (one session per thread, raw C_SignInit/C_Sign).
//!
//! Run: `cargo bench -p cps-hsm --bench sign_throughput` (optionally `-- <seconds>`; default 3).
//! Prints a markdown table for BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_hsm::{
    Hsm, HsmConfig, HsmKey, KeyAlgorithm, PinSource, SigFormat, SignatureAlgorithm, Signer,
    init_token_on_free_slot,
};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "31415926";
const TOKEN: &str = "bench";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
    assert!(
        st.success(),
        "building {} failed (needs libp11-kit-dev headers)",
        src.display()
    );
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

fn ours(key: &Arc<HsmKey>, alg: SignatureAlgorithm, threads: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, stop, count) = (key.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let msg = [0x5au8; 32];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    key.sign(alg, &msg, SigFormat::Der).expect("sign");
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
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
        std::env::set_var("CPS_BENCH_PIN", PIN);
    }
    init_token_on_free_slot(Path::new(MODULE), TOKEN, "27182818", PIN).unwrap();
    let hsm = Hsm::open(&HsmConfig {
        module: MODULE.into(),
        token_label: TOKEN.into(),
        pin: PinSource::Env("CPS_BENCH_PIN".into()),
        sessions: 8,
    })
    .unwrap();
    let p256 = Arc::new(hsm.generate_key_pair("p256", KeyAlgorithm::EcP256).unwrap());
    let rsa = Arc::new(
        hsm.generate_key_pair("rsa2048", KeyAlgorithm::Rsa2048)
            .unwrap(),
    );
    let baseline_bin = build_baseline(dir.path());

    println!("| key | threads | SoftHSM2 raw C (sig/s) | cps-hsm pool (sig/s) | ratio |");
    println!("|---|---|---|---|---|");
    for (name, key, alg, mech) in [
        ("P-256", &p256, SignatureAlgorithm::EcdsaSha256, "ecdsa"),
        ("RSA-2048", &rsa, SignatureAlgorithm::RsaPkcs1Sha256, "rsa"),
    ] {
        for threads in [1usize, 2] {
            let label = key.label().to_owned();
            let raw = baseline(&baseline_bin, &label, mech, threads, secs);
            let pool = ours(key, alg, threads, secs);
            println!(
                "| {name} | {threads} | {raw:.0} | {pool:.0} | {:.0}% |",
                100.0 * pool / raw
            );
        }
    }
}
