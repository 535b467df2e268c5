//! Card login and assertion validation against a running appliance (numbers in BENCHMARKS.md).
//!
//! One run starts pcscd + vpcd + firmware-sim and `cps-trust serve` (SoftHSM2, sled store, audit
//! trail), imports a professional and enrols the simulated card, then measures:
//!
//! 1. **Login round trip through pcscd**, as a workstation does it: `POST /api/v1/login/challenge`,
//!    VERIFY PIN + GENERAL AUTHENTICATE on the card through pcscd → vpcd → firmware-sim,
//!    `POST /api/v1/login` → signed assertion. "warm": the practice software keeps its card
//!    handle and its HTTPS connection; "cold": a new TLS connection, SCardConnect, SELECT and
//!    certificate read for every login (what `cps-trust login` does, without process start).
//! 2. **`POST /api/v1/xua/validate` over HTTPS** (mutual TLS as a `service` operator, HTTP/1.1
//!    keep-alive) from a load generator in this process, every request a distinct assertion
//!    sealed by the appliance's own cachet key (signed here through SoftHSM2 beforehand) so that
//!    every one is fully validated, accepted and audited; then the same assertions validated in
//!    process with `cps_xua::Validator` (2 threads) for comparison, in the same run. Before it,
//!    the floor of the HTTP path: the same bodies to the same route from an operator without the
//!    `service` role (TLS, HTTP, body, operator lookup, 403; no validation, no audit).
//!
//! Run: `cargo bench -p cps-trust-tests --bench xua_http`
//! Environment: `LOGINS` (300), `ASSERTIONS` (60000), `CONNS` (64 connections; a list such as
//! `64,256` shares the assertions out between runs), `CLIENT_THREADS` (1 load-generator thread),
//! `PARTS` (`login,floor,validate,in_process`: what runs), `CPS_TRUST_BIN` (another build of the
//! appliance, to compare two builds in one session), `REPLAY_RECORD` (`memory`, the default on
//! sled, or `store`: `xua.replay_record`), `STORE` (`postgres`: the appliance is initialised with
//! `--store-url` on a fresh PostgreSQL 15 started by the run, so the replay record is the shared
//! one in the database; PostgreSQL's own CPU per validation is printed too).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use cps_card::{KeyAlgorithm, Pcsc, Piv, Slot};
use cps_pki::IdNatPs;
use cps_trust_tests::pcsc::{IDNAT, PcscStack, STRUCTURE, enrol_card};
use cps_trust_tests::*;
use cps_xua::{
    AssertionId, AssertionIssuer, AuthenticationMode, CodedValue, EKU_DOCUMENT_SIGNING, EkuPolicy,
    InMemoryReplayCache, IssuerConfig, PatientId, PurposeOfUse, SoftwareInfo, StaticRevocationList,
    TrustStore, Validator, ValidatorConfig, VihfClaims,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENT_INS: &str = "248079707503828";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by PostgreSQL: the postmaster `pid`, its running children
/// (backends, WAL writer...) and the ones that ended.
fn pg_cpu_secs(pid: Option<u32>) -> f64 {
    let Some(root) = pid else {
        return 0.0;
    };
    let mut ticks = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if p == root {
            ticks += n(11) + n(12) + n(13) + n(14);
        } else if n(1) as u32 == root {
            ticks += n(11) + n(12);
        }
    }
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{name:<34} n={:<5} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99)
    )
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over tokio-rustls: one request at a time per connection, keep-alive.

struct Conn {
    s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    async fn open(addr: &str, tls: Arc<rustls::ClientConfig>) -> Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let host = addr.rsplit_once(':').unwrap().0.to_owned();
        let s = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from(host).unwrap(), tcp)
            .await
            .expect("TLS handshake");
        Conn {
            s,
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(16 * 1024),
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the appliance closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// POST `body`; returns the status and the response body.
    async fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.out.clear();
        self.out.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(body);
        self.s.write_all(&self.out).await.expect("write");
        self.s.flush().await.expect("flush");
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let body = if let Some(len) = header("content-length:") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < head_end + len {
                self.read_more().await;
            }
            let b = self.buf[head_end..head_end + len].to_vec();
            self.buf.drain(..head_end + len);
            b
        } else {
            assert!(
                header("transfer-encoding:").is_some_and(|v| v.contains("chunked")),
                "a response without a length: {head}"
            );
            self.buf.drain(..head_end);
            let mut b = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.read_more().await;
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end])
                        .split(';')
                        .next()
                        .unwrap()
                        .trim(),
                    16,
                )
                .expect("chunk size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.read_more().await;
                }
                b.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
            b
        };
        (status, body)
    }
}

fn tls_config(home: &Home, operator: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(home.join("ca/root.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match operator {
        None => b.with_no_client_auth(),
        Some(name) => {
            let dir = home.join("operator");
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(dir.join(format!("{name}-cert.pem")))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-key.pem"))).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Setup.

// ---------------------------------------------------------------------------------------------
// 1. Login round trip.

struct Card {
    piv: Piv<cps_card::PcscCard>,
    cert: Vec<u8>,
}

fn open_card(pcsc: &Pcsc, reader: &str) -> Card {
    let mut piv = Piv::select(pcsc.connect(reader).unwrap()).unwrap();
    let cert = piv
        .read_certificate(Slot::Authentication)
        .unwrap()
        .expect("an authentication certificate on the card");
    Card { piv, cert }
}

/// One login; returns the times of (challenge, card, login) in ms.
async fn login_once(conn: &mut Conn, card: &mut Card, pin: &str) -> [f64; 3] {
    let b64 = base64::engine::general_purpose::STANDARD;
    let context = serde_json::json!({
        "patient_ins": PATIENT_INS,
        "purpose_of_use": "normal",
        "software_name": "xua_http bench",
        "software_version": "1",
    });
    let t0 = Instant::now();
    let (st, body) = conn
        .post(
            "/api/v1/login/challenge",
            "application/json",
            &serde_json::to_vec(&serde_json::json!({ "context": context })).unwrap(),
        )
        .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let ch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let to_sign = b64.decode(ch["challenge"].as_str().unwrap()).unwrap();
    let t1 = Instant::now();
    let signature = card
        .piv
        .sign_challenge(pin, KeyAlgorithm::EccP256, &to_sign)
        .unwrap();
    card.piv.logout().unwrap();
    let t2 = Instant::now();
    let req = serde_json::json!({
        "challenge_id": ch["challenge_id"],
        "certificate": b64.encode(&card.cert),
        "signature": b64.encode(&signature),
        "context": context,
    });
    let (st, body) = conn
        .post(
            "/api/v1/login",
            "application/json",
            &serde_json::to_vec(&req).unwrap(),
        )
        .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(r["assertion"].as_str().unwrap().contains(IDNAT));
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    [ms(t0, t1), ms(t1, t2), ms(t2, t3)]
}

fn bench_login(
    rt: &tokio::runtime::Runtime,
    app: &Appliance,
    home: &Home,
    reader: &str,
    pin: &str,
) {
    let n = env("LOGINS", 300);
    let tls = tls_config(home, None);
    let pcsc = Pcsc::establish().unwrap();
    rt.block_on(async {
        // Warm: one card handle, one keep-alive connection.
        let mut card = open_card(&pcsc, reader);
        let mut conn = Conn::open(&app.https, tls.clone()).await;
        for _ in 0..10 {
            login_once(&mut conn, &mut card, pin).await;
        }
        let (mut total, mut challenge, mut on_card, mut login) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let [a, b, c] = login_once(&mut conn, &mut card, pin).await;
            total.push(a + b + c);
            challenge.push(a);
            on_card.push(b);
            login.push(c);
        }
        drop(card);
        // Cold: connect to the card and to the appliance for every login.
        let mut cold = Vec::new();
        for _ in 0..(n / 5).max(20) {
            let t = Instant::now();
            let mut card = open_card(&pcsc, reader);
            let mut conn = Conn::open(&app.https, tls.clone()).await;
            login_once(&mut conn, &mut card, pin).await;
            cold.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("login round trip through pcscd (P-256 card, RSA-2048 seal in SoftHSM2):");
        println!("  {}", summary("warm: challenge + card + login", total));
        println!("  {}", summary("  POST /login/challenge", challenge));
        println!("  {}", summary("  card: VERIFY + GENERAL AUTH", on_card));
        println!("  {}", summary("  POST /login (assertion)", login));
        println!("  {}", summary("cold: + TLS, SCardConnect, SELECT", cold));
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Validation over HTTP and in process.

fn claims(now: SystemTime) -> VihfClaims {
    VihfClaims {
        vihf_version: "3.0".into(),
        name_id: IdNatPs::parse(IDNAT).unwrap(),
        subject_id: "DONNAT-GADY, ISABELLE".into(),
        roles: vec![CodedValue {
            code: "10".into(),
            code_system: "1.2.250.1.71.1.2.7".into(),
            code_system_name: Some("professions".into()),
            display_name: Some("Médecin".into()),
        }],
        secteur_activite: "SA07^1.2.250.1.71.4.2.4".into(),
        structure_id: STRUCTURE.into(),
        authentication_mode: AuthenticationMode::Indirect,
        patient: Some(PatientId {
            ins: PATIENT_INS.into(),
            authority: "1.2.250.1.213.1.4.10".into(),
        }),
        resource_urn: "urn:dmp".into(),
        purpose_of_use: PurposeOfUse::Normal,
        confidentiality_code: None,
        software: SoftwareInfo {
            name: "xua_http bench".into(),
            version: Some("1".into()),
            id: None,
            homologation: "HOMOL-BENCH-0001".into(),
        },
        authn_instant: now - Duration::from_secs(5),
        authn_context_class_ref: cps_xua::AUTHN_SMARTCARD_PKI.into(),
    }
}

/// `n` distinct assertions sealed with the appliance's cachet key (SoftHSM2), on 2 threads.
fn seal_assertions(home: &Home, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let config = cps_appliance::config::Config::load(&home.join("cps-trust.toml")).unwrap();
    let hsm = cps_hsm::Hsm::open(&config.hsm_config(&home.path).unwrap()).unwrap();
    let key = hsm.key(&config.xua.key_label).unwrap();
    let chain = cps_pki::pem_certificates(
        &std::fs::read_to_string(home.join(cps_appliance::xua::CACHET_FILE)).unwrap(),
    );
    let issuer = AssertionIssuer::new(Arc::new(key), &chain, IssuerConfig::default()).unwrap();
    let now = SystemTime::now();
    let c = claims(now);
    let t = Instant::now();
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Vec<Vec<u8>>> = Vec::new();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut v = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break v;
                        }
                        let mut id = [0u8; 16];
                        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        id[8..].copy_from_slice(&rand::random::<[u8; 8]>());
                        let a = issuer
                            .issue(&c, now, &AssertionId::from_random(id))
                            .unwrap();
                        v.push(a.xml.into_bytes());
                    }
                })
            })
            .collect();
        for h in hs {
            parts.push(h.join().unwrap());
        }
    });
    let all: Vec<Vec<u8>> = parts.into_iter().flatten().collect();
    println!(
        "sealed {} assertions ({} bytes each) with the appliance's cachet key in {:.1} s",
        all.len(),
        all[0].len(),
        t.elapsed().as_secs_f64()
    );
    (all, chain)
}

/// The floor of the HTTP path: the same 6 KB bodies to the same route over the same kind of
/// connections, from an operator without the `service` role, so each request costs TLS, HTTP,
/// the body, the operator lookup and a 403, but no validation and no audit record.
fn bench_http_floor(
    rt: &tokio::runtime::Runtime,
    app: &Appliance,
    home: &Home,
    assertions: &Arc<Vec<Vec<u8>>>,
    conns: usize,
    pg: Option<u32>,
) {
    let tls = tls_config(home, Some("floor"));
    let server_pid = app.daemon.pid().to_string();
    let n = assertions.len();
    let (elapsed, cpu_client, cpu_server, cpu_pg) = rt.block_on(async {
        let mut cs = Vec::new();
        for _ in 0..conns {
            cs.push(Conn::open(&app.https, tls.clone()).await);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let (c0, s0, p0) = (cpu_secs("self"), cpu_secs(&server_pid), pg_cpu_secs(pg));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mut c in cs {
            let (next, assertions) = (next.clone(), assertions.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= assertions.len() {
                        break;
                    }
                    let (st, body) = c
                        .post("/api/v1/xua/validate", "application/xml", &assertions[i])
                        .await;
                    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        (
            elapsed,
            cpu_secs("self") - c0,
            cpu_secs(&server_pid) - s0,
            pg_cpu_secs(pg) - p0,
        )
    });
    println!(
        "HTTP floor (same bodies and route, no `service` role: 403 before validation and audit), {conns} connections:"
    );
    println!(
        "  {:.0} requests/s; CPU per request: server {:.1} µs, load generator {:.1} µs, PostgreSQL {:.1} µs",
        n as f64 / elapsed.as_secs_f64(),
        cpu_server / n as f64 * 1e6,
        cpu_client / n as f64 * 1e6,
        cpu_pg / n as f64 * 1e6
    );
}

fn bench_validate_http(
    rt: &tokio::runtime::Runtime,
    app: &Appliance,
    home: &Home,
    assertions: &Arc<Vec<Vec<u8>>>,
    conns: usize,
    pg: Option<u32>,
) {
    let tls = tls_config(home, Some("svc"));
    let server_pid = app.daemon.pid().to_string();
    let (elapsed, lat, statuses, cpu_client, cpu_server, cpu_server_drain, cpu_pg) =
        rt.block_on(async {
            let mut cs = Vec::new();
            for _ in 0..conns {
                cs.push(Conn::open(&app.https, tls.clone()).await);
            }
            // Warm up each connection with a refused document (no assertion consumed).
            for c in &mut cs {
                let (st, _) = c
                    .post("/api/v1/xua/validate", "application/xml", b"<x/>")
                    .await;
                assert_eq!(st, 422);
            }
            let next = Arc::new(AtomicUsize::new(0));
            let (c0, s0, p0) = (cpu_secs("self"), cpu_secs(&server_pid), pg_cpu_secs(pg));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for mut c in cs {
                let next = next.clone();
                let assertions = assertions.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= assertions.len() {
                            break;
                        }
                        let t = Instant::now();
                        let (st, body) = c
                            .post("/api/v1/xua/validate", "application/xml", &assertions[i])
                            .await;
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        if st == 200 {
                            assert!(memchr_valid(&body), "{}", String::from_utf8_lossy(&body));
                        } else if !statuses.contains_key(&st) {
                            eprintln!("HTTP {st}: {}", String::from_utf8_lossy(&body));
                        }
                        *statuses.entry(st).or_default() += 1;
                    }
                    (lat, statuses, c)
                }));
            }
            let mut lat = Vec::new();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let mut keep = Vec::new();
            for t in tasks {
                let (l, s, c) = t.await.unwrap();
                lat.extend(l);
                for (k, v) in s {
                    *statuses.entry(k).or_default() += v;
                }
                keep.push(c);
            }
            let elapsed = start.elapsed();
            let (c1, s1) = (cpu_secs("self"), cpu_secs(&server_pid));
            let p1 = pg_cpu_secs(pg);
            // Whatever the audit trail still has to write after the last answer is counted too.
            let mut last = s1;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = cpu_secs(&server_pid);
                if now - last < 0.05 {
                    break;
                }
                last = now;
            }
            // Each assertion is accepted once: the first one again is a replay.
            let (st, body) = keep[0]
                .post("/api/v1/xua/validate", "application/xml", &assertions[0])
                .await;
            assert_eq!(st, 422, "{}", String::from_utf8_lossy(&body));
            assert!(String::from_utf8_lossy(&body).contains("replay"));
            (elapsed, lat, statuses, c1 - c0, s1 - s0, last - s0, p1 - p0)
        });
    let n = assertions.len() as f64;
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "POST /api/v1/xua/validate, {conns} mutual-TLS keep-alive connections, {} load thread(s):",
        env("CLIENT_THREADS", 1)
    );
    println!(
        "  {:.0} validations/s ({} accepted, statuses {:?}) in {:.2} s",
        n / elapsed.as_secs_f64(),
        ok,
        statuses,
        elapsed.as_secs_f64()
    );
    println!("  {}", summary("latency", lat));
    println!(
        "  CPU per validation: server {:.1} µs during the run, {:.1} µs with the audit drain; load generator {:.1} µs; PostgreSQL {:.1} µs",
        cpu_server / n * 1e6,
        cpu_server_drain / n * 1e6,
        cpu_client / n * 1e6,
        cpu_pg / n * 1e6
    );
}

fn memchr_valid(body: &[u8]) -> bool {
    find(body, b"\"valid\":true").is_some()
}

fn bench_validate_in_process(home: &Home, chain: &[Vec<u8>], assertions: &[Vec<u8>]) {
    let root =
        cps_pki::pem_certificates(&std::fs::read_to_string(home.join("ca/root.pem")).unwrap());
    let trust = TrustStore::new(
        root,
        chain[1..].to_vec(),
        EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
    )
    .unwrap();
    // The seal that signed them is the appliance's own: its claims are trusted as issued, as in
    // the appliance (no registry read on this path).
    let own_seal = cps_pki::parse_certificate(&chain[0]).unwrap().spki;
    let validator = Validator::new(
        ValidatorConfig::default(),
        Arc::new(trust),
        Arc::new(StaticRevocationList::new()),
        Arc::new(cps_xua::SealTrustPolicy::new(
            vec![own_seal],
            cps_xua::OrgSealRegistry::NotHeld,
        )),
        Arc::new(InMemoryReplayCache::new(assertions.len() * 2 + 1000)),
    );
    let now = SystemTime::now();
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= assertions.len() {
                        break;
                    }
                    validator.validate(&assertions[i], now).unwrap();
                }
            });
        }
    });
    println!(
        "in process (cps_xua::Validator::validate, 2 threads, same assertions): {:.0} validations/s",
        assertions.len() as f64 / t.elapsed().as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (stack, _sim, reader) = PcscStack::with_blank_card("xua-http-bench");
    let dir = stack.dir.path().to_path_buf();
    let home = stack.home();
    // SAFETY: no other thread runs yet; the PC/SC client and SoftHSM2 read these at first use.
    unsafe {
        std::env::set_var("PCSCLITE_CSOCK_NAME", &stack.socket);
        std::env::set_var("SOFTHSM2_CONF", home.softhsm_conf());
    }
    // REPLAY_RECORD=store: validated assertion IDs recorded in the store (what a cluster uses).
    // Unset: the backend's default (`memory` on sled, the shared `store` on PostgreSQL).
    let replay_record = std::env::var("REPLAY_RECORD").ok();
    let configure = |h: &Home| {
        if let Some(r) = &replay_record {
            h.set_config_text(&h.config_text().replacen(
                "[xua]\n",
                &format!("[xua]\nreplay_record = \"{r}\"\n"),
                1,
            ))
        }
    };
    // STORE=postgres: the appliance's store is a fresh PostgreSQL 15 (`init --store-url`).
    let postgres = std::env::var("STORE")
        .is_ok_and(|s| s == "postgres")
        .then(cps_testkit::postgres::Postgres::start);
    let (home, app) = match &postgres {
        None => Appliance::fresh_configured(home, configure),
        Some(pg) => {
            let url = pg.create_database("cps");
            assert_success(
                &home.cps(&["init", "--store-url", &url, "--time-source", "declared"]),
                "cps-trust init --store-url",
            );
            configure(&home);
            let app = Appliance::start(&home);
            (home, app)
        }
    };
    let pg_pid = postgres.as_ref().and_then(|pg| pg.pid());
    println!(
        "store: {}; replay record: {}",
        if postgres.is_some() {
            "PostgreSQL 15"
        } else {
            "sled"
        },
        replay_record.as_deref().unwrap_or("the backend's default")
    );
    let pin = enrol_card(&home, &dir, &reader).pin;
    assert_success(
        &home.cps(&["operator", "add", "--name", "svc", "--role", "service"]),
        "operator add",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("CLIENT_THREADS", 1))
        .enable_all()
        .build()
        .unwrap();

    // PARTS selects what runs (default all): login, floor, validate, in_process — e.g.
    // `PARTS=floor` with `CPS_TRUST_BIN` set to another build compares two builds' HTTP floor.
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "login,floor,validate,in_process".into());
    let part = |p: &str| parts.split(',').any(|x| x.trim() == p);
    if part("login") {
        bench_login(&rt, &app, &home, &reader, &pin);
    }

    let (assertions, chain) = seal_assertions(&home, env("ASSERTIONS", 60_000));
    // CONNS may list several concurrencies ("64,256"): the assertions are shared out between
    // them, each used once.
    let conns: Vec<usize> = std::env::var("CONNS")
        .unwrap_or_else(|_| "64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    assert_success(
        &home.cps(&["operator", "add", "--name", "floor", "--role", "ra-officer"]),
        "operator add",
    );
    // Before any is validated (a refused request consumes nothing).
    let sample = Arc::new(assertions[..assertions.len().min(40_000)].to_vec());
    if part("floor") {
        bench_http_floor(
            &rt,
            &app,
            &home,
            &sample,
            conns.first().copied().unwrap_or(64),
            pg_pid,
        );
    }
    if part("validate") {
        let share = assertions.len() / conns.len().max(1);
        for (k, &c) in conns.iter().enumerate() {
            let share = Arc::new(assertions[k * share..(k + 1) * share].to_vec());
            bench_validate_http(&rt, &app, &home, &share, c, pg_pid);
        }
    }
    if part("in_process") {
        let assertions = Arc::new(assertions);
        bench_validate_in_process(&home, &chain, &assertions);
    }
}
