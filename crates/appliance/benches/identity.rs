//! The per-request work of `authz::enforce` that the HTTPS listener added to every request: the
//! route's entry, the request-forgery checks and the client certificate's live status with its
//! operator (`Identities::check`, answered from memory while the store's certificates version
//! is unchanged), measured alone so it can be set against the HTTP floor of `xua_http`.
//!
//! Run: `cargo bench -p cps-appliance --bench identity` (args: `[seconds] [threads]`, default 3
//! and 2). Reports nanoseconds per check and the CPU time per check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method};
use cps_appliance::authz;
use cps_appliance::identity::{PeerCertificate, https_identities};
use cps_appliance::operators;
use cps_store::{CertStatus, CertificateRecord, SledStore, Store, WriteBatch, WriteOp};

fn cpu_time() -> Duration {
    // Process CPU time (user + system) from /proc/self/stat, in clock ticks of 10 ms.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    // One operator certificate, as the store holds it (1 KB of DER).
    let der: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let rec = CertificateRecord {
        issuer: "organisations".into(),
        serial: vec![0x42; 16],
        subject: "CN=svc".into(),
        profile: operators::OPERATOR_PROFILE.into(),
        holder: Some("operator:svc".into()),
        spki_sha256: [1; 32],
        not_before: 0,
        not_after: i64::MAX / 2,
        der: der.clone(),
        status: CertStatus::Valid,
        issued_at: 0,
    };
    store
        .commit(
            WriteBatch::new()
                .with(WriteOp::InsertCertificate(rec))
                .with(operators::register_op(&der, "svc", &["service"])),
        )
        .unwrap();
    let ids = Arc::new(https_identities(store));
    let cert = Arc::new(PeerCertificate {
        sha256: *ring::digest::digest(&ring::digest::SHA256, &der)
            .as_ref()
            .first_chunk::<32>()
            .unwrap(),
        der,
        ca: "organisations".into(),
        serial: vec![0x42; 16],
        not_after: i64::MAX / 2,
    });
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8443"));
    headers.insert("content-type", HeaderValue::from_static("application/xml"));
    headers.insert("content-length", HeaderValue::from_static("6144"));
    let headers = Arc::new(headers);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ids, cert, headers, stop, done) = (
                ids.clone(),
                cert.clone(),
                headers.clone(),
                stop.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        let route = authz::rule(&Method::POST, "/api/v1/xua/validate").unwrap();
                        std::hint::black_box(authz::check_origin(
                            &route.method,
                            &headers,
                            None,
                            route.navigable,
                        ))
                        .unwrap();
                        let id = ids.check(&cert, 1_800_000_000).unwrap();
                        assert!(id.operator.is_some_and(|o| o.has("service")));
                    }
                    n += 1000;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let n = done.load(Ordering::Relaxed);
    println!(
        "per-request authorization (entry, forgery checks, live certificate status + operator), {threads} threads: {n} checks in {:.2} s = {:.0}/s, {:.0} ns of CPU per check",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu.as_nanos() as f64 / n as f64
    );
}
