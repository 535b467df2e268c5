//! CA benchmarks over a CA built from signers (no key ceremony, no home directory):
//! * issuance end to end: CSR parsed and its signature verified, key policy, blocklist and
//!   duplicate-key checks, certificate signed by the P-256 CA key, record + audit committed
//!   durably to a sled store — from N threads;
//! * CRL generation: revoked entries read from the store, CRL encoded and signed, at 100 000 and
//!   1 000 000 entries.
//!
//! The same operations as the appliance's former `benches/ca.rs`, which ran `cps-trust init` to
//! get its CA: the hierarchy (P-384 root, P-256 `personnes` and `organisations`) is now made by
//! `cps_ca::hierarchy::build` from keys generated in a fresh SoftHSM2 token (or in software with
//! `software`), and the signing gate is `OpenGate` instead of the appliance's declared clock (whose
//! check per signature was a clock read and a comparison).
//!
//! Run: `cargo bench -p cps-ca --features software --bench ca` (args: `[seconds] [threads]
//! [softhsm|software]`, default 5, 8 and softhsm).
//!
//! `STORE=postgres` puts the store on a fresh PostgreSQL 15 started for the run
//! (`cps_testkit::postgres::Postgres`, `fsync = on`, no standby) instead of sled; the operations
//! are the same. `CRL_SIZES=100000` (comma-separated, default `100000,1000000`, empty for none)
//! chooses the CRL rows. Next to the throughput the bench prints the CPU time used per
//! certificate by this process and, on PostgreSQL, by the server's processes (from
//! `/proc/<pid>/stat`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_ca::{CaConfig, CaService, IssueRequest, OpenGate, SubjectRequest};
use cps_hsm::{Hsm, HsmConfig, KeyAlgorithm, PinSource, Signer, SoftwareSigner};
use cps_store::{
    AuditRecord, CertStatus, CertificateRecord, PgOptions, PgStore, SledStore, Store, WriteBatch,
    WriteOp,
};
use cps_testkit::postgres::Postgres;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "31415926";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (pid, ppid, utime + stime, cutime + cstime) of every process.
fn proc_stats() -> Vec<(u32, u32, u64, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces) end with ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        out.push((pid, n(1) as u32, n(11) + n(12), n(13) + n(14)));
    }
    out
}

/// CPU seconds used so far by process `root` and its children (running ones, and the ones that
/// ended and were waited for).
fn tree_cpu(root: u32) -> f64 {
    let stats = proc_stats();
    let mut ticks = 0;
    for (pid, ppid, own, children) in &stats {
        if *pid == root {
            ticks += own + children;
        } else if *ppid == root {
            ticks += own;
        }
    }
    ticks as f64 / ticks_per_sec()
}

/// CPU seconds used so far by this process (all threads).
fn own_cpu() -> f64 {
    let me = std::process::id();
    proc_stats()
        .iter()
        .find(|(pid, ..)| *pid == me)
        .map(|(_, _, own, _)| *own as f64 / ticks_per_sec())
        .unwrap_or(0.0)
}

fn csr() -> Vec<u8> {
    use openssl::{ec, hash, nid, pkey, x509};
    let group = ec::EcGroup::from_curve_name(nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut b = x509::X509ReqBuilder::new().unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "bench").unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.sign(&key, hash::MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

/// The root and CA keys: in a fresh SoftHSM2 token under `dir`, or in software.
fn keys(dir: &Path, softhsm: bool) -> Vec<(String, Arc<dyn Signer>)> {
    let plan = [
        ("root", KeyAlgorithm::EcP384),
        ("personnes", KeyAlgorithm::EcP256),
        ("organisations", KeyAlgorithm::EcP256),
    ];
    if !softhsm {
        return plan
            .iter()
            .map(|(id, alg)| {
                let k: Arc<dyn Signer> = Arc::new(SoftwareSigner::generate(id, *alg).unwrap());
                (id.to_string(), k)
            })
            .collect();
    }
    std::fs::create_dir(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir.display())).unwrap();
    // SAFETY: single-threaded here, before any PKCS#11 call.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var("CPS_BENCH_PIN", PIN);
    }
    cps_hsm::init_token_on_free_slot(Path::new(MODULE), "ca-bench", "27182818", PIN).unwrap();
    let hsm = Hsm::open(&HsmConfig {
        module: MODULE.into(),
        token_label: "ca-bench".into(),
        pin: PinSource::Env("CPS_BENCH_PIN".into()),
        sessions: 8,
    })
    .unwrap();
    plan.iter()
        .map(|(id, alg)| {
            let k: Arc<dyn Signer> =
                Arc::new(hsm.generate_key_pair(&format!("ca-{id}"), *alg).unwrap());
            (id.to_string(), k)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<f64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let secs = nums.first().copied().unwrap_or(5.0);
    let threads = nums.get(1).copied().unwrap_or(8.0) as usize;
    let softhsm = !args.iter().any(|a| a == "software");
    let where_ = if softhsm { "SoftHSM2" } else { "software" };
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keys(dir.path(), softhsm);
    let root = keys.remove(0).1;
    let profiles = cps_pki::profile::builtin_profiles();
    let base = "http://127.0.0.1:8080";
    let h = cps_ca::hierarchy::build(&profiles, root, keys, base, now()).unwrap();
    let postgres = std::env::var("STORE").is_ok_and(|s| s == "postgres");
    let pg = postgres.then(Postgres::start);
    let store: Arc<dyn Store> = match &pg {
        Some(pg) => Arc::new(
            PgStore::open(
                &pg.create_database("ca_bench"),
                PgOptions {
                    pool_size: threads.max(1),
                    ..PgOptions::default()
                },
            )
            .unwrap(),
        ),
        None => Arc::new(SledStore::open(dir.path().join("store")).unwrap()),
    };
    let backend = if postgres { "PostgreSQL 15" } else { "sled" };
    let pg_pid = pg.as_ref().and_then(Postgres::pid);
    let pg_cpu = || pg_pid.map(tree_cpu).unwrap_or(0.0);
    let ca = Arc::new(CaService::new(
        h.authorities,
        store.clone(),
        profiles,
        Arc::new(OpenGate),
        CaConfig {
            public_base_url: base.into(),
            crl_validity_secs: 24 * 3600,
            key_policy: cps_pki::KeyPolicy::default(),
            reserved_profiles: vec!["audit-checkpoint".into()],
            node_id: "node-1".into(),
            crl_lease_secs: cps_ca::crl::DEFAULT_LEASE_SECS,
            crl_shards: Default::default(),
        },
    ));

    // Issuance: CSRs made beforehand (each issuance needs its own key: one holder per key).
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..20_000).map(|_| csr()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (cpu0, pg0) = (own_cpu(), pg_cpu());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (ca, pool, next, stop) = (ca.clone(), pool.clone(), next.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= pool.len() {
                        break;
                    }
                    let req = IssueRequest {
                        profile: "org-tls-client".into(),
                        csr: pool[i].clone(),
                        subject: SubjectRequest::Organisation(cps_pki::OrganisationIdentity {
                            state: "Paris (75)".into(),
                            name: "Bench".into(),
                            structure_id: "318751275100020".into(),
                            common_name: format!("node-{i}"),
                        }),
                        sans: vec![],
                        holder: format!("node-{i}"),
                    };
                    let t = Instant::now();
                    ca.issue(&req, "bench", now()).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, pg1) = (own_cpu(), pg_cpu());
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let per = |cpu: f64| cpu * 1e6 / lat.len().max(1) as f64;
    println!(
        "| issuance (CSR → durable record → certificate) | store | threads | certificates | certificates/s | p50 | p99 | bench process CPU / cert | PostgreSQL CPU / cert |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| org-tls-client, P-256 CA key in {where_} | {backend} | {threads} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {} |",
        lat.len(),
        lat.len() as f64 / elapsed,
        p(0.5),
        p(0.99),
        per(cpu1 - cpu0),
        if postgres {
            format!("{:.0} µs", per(pg1 - pg0))
        } else {
            "—".into()
        }
    );
    let sizes: Vec<u64> = std::env::var("CRL_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    if sizes.is_empty() {
        return;
    }

    // CRLs: fill the store with revoked certificates in large batches, then time generation.
    // One real certificate of `personnes` is the template (the ceremony used to leave one).
    let template = ca
        .issue(
            &IssueRequest {
                profile: "cps-auth".into(),
                csr: csr(),
                subject: SubjectRequest::Person(cps_pki::PersonIdentity {
                    idnat_ps: "810002813839".into(),
                    surname: "Bench".into(),
                    given_name: "Template".into(),
                    profession_code: "10".into(),
                }),
                sans: vec![],
                holder: "810002813839".into(),
            },
            "bench",
            now(),
        )
        .unwrap();
    println!();
    println!("| CRL entries | read from {backend} + encode + sign ({where_}) | CRL size |");
    println!("|---|---|---|");
    let mut added = 0u64;
    for target in sizes {
        while added < target {
            let mut batch = WriteBatch::new();
            for _ in 0..2000 {
                added += 1;
                let mut serial = (0x4000_0000_0000_0000u64 | added).to_be_bytes().to_vec();
                serial.extend_from_slice(&added.to_be_bytes());
                batch.push(WriteOp::InsertCertificate(CertificateRecord {
                    serial: serial.clone(),
                    spki_sha256: {
                        let mut h = [0u8; 32];
                        h[..8].copy_from_slice(&added.to_be_bytes());
                        h
                    },
                    status: CertStatus::Revoked {
                        time: now() - (added % 1000) as i64,
                        reason: 4,
                        invalidity_date: None,
                    },
                    der: vec![0x30, 0x00],
                    not_after: now() + 86_400 * 365,
                    ..template.clone()
                }));
            }
            batch.push(WriteOp::AppendAudit(AuditRecord {
                time: now(),
                kind: "bench".into(),
                actor: "bench".into(),
                outcome: "success".into(),
                detail: serde_json::Value::Null,
                node: None,
            }));
            store.commit(batch).unwrap();
        }
        let t = Instant::now();
        let crl = ca.crl("personnes", now() + 1).unwrap();
        let el = t.elapsed();
        println!(
            "| {target} | {:.2} s | {:.1} MB |",
            el.as_secs_f64(),
            crl.len() as f64 / 1e6
        );
        // Force regeneration next time (a CRL is re-signed when half its validity has passed).
        let _ = ca.revoke(
            "personnes",
            &template.serial,
            cps_pki::crl::RevocationReason::Superseded,
            None,
            "bench",
            now(),
        );
    }
}
