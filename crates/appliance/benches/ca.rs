//! CA benchmarks against a real home (SoftHSM2 keys, sled store):
//! * issuance end to end: CSR parsed and its signature verified, key policy, blocklist and
//!   duplicate-key checks, certificate signed by the P-256 CA key in SoftHSM2, record + audit
//!   committed durably — from N threads;
//! * CRL generation: revoked entries read from the store, CRL encoded and signed in the HSM, at
//!   100 000 and 1 000 000 entries.
//!
//! Run: `cargo bench -p cps-appliance --bench ca` (args: `[seconds] [threads]`, default 5 and 8).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cps_appliance::ca::{CaService, IssueRequest, SubjectRequest};
use cps_appliance::config::Config;
use cps_store::{
    AuditRecord, CertStatus, CertificateRecord, SledStore, Store, WriteBatch, WriteOp,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
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

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(5.0);
    let threads = args.get(1).copied().unwrap_or(8.0) as usize;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut config = Config::embedded_default();
    // A container's kernel rarely reports its clock as synchronised: the benchmark measures
    // signing, not the clock gate.
    config.time.source = cps_appliance::config::TimeSourceKind::Declared;
    // SAFETY: single-threaded, before any PKCS#11 call.
    unsafe { std::env::set_var("SOFTHSM2_CONF", home.join("softhsm2.conf")) };
    cps_appliance::ceremony::init(&home, &config, now()).unwrap();
    let hsm = cps_appliance::home::open_checked_hsm(&home, &config).unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(home.join("store")).unwrap());
    let clock = cps_appliance::clock::SigningClock::from_config(&config.time, None);
    let ca = Arc::new(CaService::open(&home, &config, &hsm, store.clone(), clock).unwrap());

    // Issuance: CSRs made beforehand (each issuance needs its own key: one holder per key).
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..20_000).map(|_| csr()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
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
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "| issuance (CSR → durable record → certificate) | threads | certificates | certificates/s | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| org-tls-client, P-256 CA key in SoftHSM2 | {threads} | {} | {:.0} | {:.2} ms | {:.2} ms |",
        lat.len(),
        lat.len() as f64 / elapsed,
        p(0.5),
        p(0.99)
    );

    // CRLs: fill the store with revoked certificates in large batches, then time generation.
    println!();
    println!("| CRL entries | read from store + encode + sign (HSM) | CRL size |");
    println!("|---|---|---|");
    let template = store
        .list_certificates(Some("personnes"), None, 1)
        .unwrap()
        .certificates
        .into_iter()
        .next()
        .unwrap();
    let mut added = 0u64;
    for target in [100_000u64, 1_000_000] {
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
