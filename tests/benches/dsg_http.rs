//! Document signatures against a running appliance (numbers in BENCHMARKS.md, "Document
//! signatures (DSG)").
//!
//! Starts `cps-trust serve` (SoftHSM2, sled store, audit trail) with one structure seal, then a
//! load generator in this process: `CONNS` mutual-TLS HTTP/1.1 keep-alive connections (one thread
//! each) as a `signer` operator send `POST /api/v1/dsg/sign` for a detached manifest over a
//! submission set and 10 documents (4 KiB each, sent as content): each answer is an XAdES-X-L
//! signature (HSM seal signature, the appliance's TSA token, the chain, a fresh OCSP answer),
//! audited before the answer. Then the same connections send `POST /api/v1/dsg/verify` of those
//! signatures with their 10 documents. Prints p50/p99 latency, operations/s, and the server's CPU
//! per operation (user + system of the `serve` process over the phase).
//!
//! Run: `cargo bench -p cps-trust-tests --bench dsg_http`
//! Environment: `SIGNS` (200), `CONNS` (2), `CPS_TRUST_BIN` (another build of the appliance).

use std::time::{Duration, Instant};

use base64::Engine;
use cps_trust_tests::https::Conn;
use cps_trust_tests::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `bodies` on `conns` connections (bodies shared out); returns every answer's body, the
/// latencies, and the wall time.
fn phase(
    home: &Home,
    app: &Appliance,
    path: &'static str,
    bodies: Vec<String>,
    conns: usize,
) -> (Vec<String>, Vec<Duration>, Duration) {
    let root = home.join("ca/root.pem");
    let cert = home.join("operator/bench-cert.pem");
    let key = home.join("operator/bench-key.pem");
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); conns];
    for (i, b) in bodies.into_iter().enumerate() {
        parts[i % conns].push(b);
    }
    let mut opened: Vec<(Conn, Vec<String>)> = parts
        .into_iter()
        .map(|p| {
            (
                Conn::open(&app.https, &root, Some((&cert, &key)), false).expect("connect"),
                p,
            )
        })
        .collect();
    let start = Instant::now();
    let results: Vec<(Vec<String>, Vec<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = opened
            .iter_mut()
            .map(|(conn, part)| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut lat = Vec::new();
                    for b in part.iter() {
                        let t = Instant::now();
                        let a = conn
                            .send(
                                "POST",
                                path,
                                &[("content-type", "application/json")],
                                b.as_bytes(),
                            )
                            .expect("request");
                        lat.push(t.elapsed());
                        assert_eq!(a.status, 200, "{path}: {}", a.text());
                        out.push(a.text());
                    }
                    (out, lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let mut answers = Vec::new();
    let mut lat = Vec::new();
    for (a, l) in results {
        answers.extend(a);
        lat.extend(l);
    }
    (answers, lat, wall)
}

fn report(what: &str, lat: &mut [Duration], wall: Duration, cpu: f64) {
    lat.sort();
    let n = lat.len() as f64;
    println!(
        "{what}: {} ops in {:.2} s: {:.1} ops/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.1} ms/op",
        lat.len(),
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        percentile(lat, 0.5).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        cpu * 1e3 / n
    );
}

fn main() {
    let signs = env("SIGNS", 200);
    let conns = env("CONNS", 2);
    let (home, app) = Appliance::fresh_configured(Home::new(), |h| {
        let mut cfg = h.config_text();
        cfg.push_str("\n[[dsg.seals]]\nstructure_id = \"10B0000001\"\norganisation = \"Clinique du Parc\"\nstate = \"Paris (75)\"\nsigners = [\"bench\"]\n");
        h.set_config_text(&cfg);
    });
    assert_success(
        &home.cps(&["operator", "add", "--name", "bench", "--role", "signer"]),
        "operator add",
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let docs: Vec<(String, String)> = (0..10)
        .map(|i| {
            let body = format!("<ClinicalDocument>{}</ClinicalDocument>", "x".repeat(4096));
            (format!("urn:oid:1.2.250.1.999.1.{i}"), b64.encode(body))
        })
        .collect();
    let documents: Vec<serde_json::Value> = docs
        .iter()
        .map(|(u, c)| serde_json::json!({"unique_id": u, "content": c}))
        .collect();
    let sign_body = serde_json::json!({
        "structure_id": "10B0000001",
        "purpose": "author",
        "submission_set": "urn:oid:1.2.250.1.999.2.1",
        "documents": documents,
    })
    .to_string();
    // Warm-up (first TLS handshakes, HSM sessions, OCSP signer).
    phase(
        &home,
        &app,
        "/api/v1/dsg/sign",
        vec![sign_body.clone(); 4],
        1,
    );

    let pid = app.daemon.pid();
    let cpu0 = cpu_secs(pid);
    let (answers, mut lat, wall) = phase(
        &home,
        &app,
        "/api/v1/dsg/sign",
        vec![sign_body; signs],
        conns,
    );
    let cpu = cpu_secs(pid) - cpu0;
    let size = answers[0].len();
    report(
        &format!(
            "sign (10 documents, XAdES-X-L, ~{} KiB answers), {conns} connections",
            size / 1024
        ),
        &mut lat,
        wall,
        cpu,
    );

    let verify_bodies: Vec<String> = answers
        .iter()
        .map(|a| {
            let v: serde_json::Value = serde_json::from_str(a).unwrap();
            serde_json::json!({"signature": v["signature"], "documents": documents}).to_string()
        })
        .collect();
    let cpu0 = cpu_secs(pid);
    let (verdicts, mut lat, wall) = phase(&home, &app, "/api/v1/dsg/verify", verify_bodies, conns);
    let cpu = cpu_secs(pid) - cpu0;
    assert!(verdicts.iter().all(|v| v.contains("\"valid\":true")));
    report(
        &format!("verify (10 documents), {conns} connections"),
        &mut lat,
        wall,
        cpu,
    );
}
