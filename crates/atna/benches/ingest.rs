//! Repository ingestion over TLS, and search over a large log.
//!
//! `cargo bench -p cps-atna --bench ingest` runs, on loopback:
//!
//! * **ingest**: a load generator (N mutual-TLS connections streaming RFC 5425 frames) against
//!   our repository (records durable: counted only once `fdatasync`ed), then the same generator
//!   against rsyslog (imtcp + gtls, mutual x509/name, omfile), for two message kinds: a short
//!   RFC 5424 message and an RFC 5424 message carrying a DICOM audit message (~1.4 KB);
//! * **search**: builds a log of many DICOM records, then times reopening (index rebuild) and
//!   searches by user, event type, patient and date range.
//!
//! Environment: `ATNA_BENCH=ingest|parse|search|all` (default all), `ATNA_BENCH_MESSAGES` (per kind,
//! default 400000), `ATNA_BENCH_CONNECTIONS` (default 8), `ATNA_BENCH_SEARCH_RECORDS` (default
//! 1000000), `ATNA_BENCH_KINDS` (default `short,audit`), `ATNA_BENCH_RSYSLOG=0` (skip the
//! rsyslog comparison), `ATNA_BENCH_DIR` (where the temporary directories go, default the system's),
//! `ATNA_BENCH_CHECKPOINT_EVERY` (the log's `checkpoint_every`, default the library's).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Pki, Rsyslog, client_config, free_port, loopback, server_config, wait_port};
use cps_atna::events::{self, AuditContext, Person};
use cps_atna::{
    AuditLog, LogOptions, NewRecord, NodeAuthorizer, NodeIdentity, Repository, RepositoryConfig,
    SearchFilter, SyslogMessage, Transport, XmlLimits, encode_frame,
};
use cps_hsm::{KeyAlgorithm, SoftwareSigner};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct AllowAll;
impl NodeAuthorizer for AllowAll {
    fn authorize(&self, _: &[CertificateDer<'_>], _: &NodeIdentity) -> Result<(), String> {
        Ok(())
    }
}

fn ctx() -> AuditContext {
    AuditContext {
        source_id: "bench-source".into(),
        site_id: None,
        host: "127.0.0.1".into(),
    }
}

fn audit_message(i: u64) -> Vec<u8> {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000 + (i % 86_400) as i64).unwrap();
    let m = events::assertion_validated(
        &ctx(),
        now,
        "dmp-registry",
        &Person::id(format!("8100{:08}", i % 50_000)),
        &format!("_assertion-{i}"),
        Some(&format!("PAT-{}", i % 200_000)),
    );
    SyslogMessage::audit(
        now,
        "node-a.example",
        "dmp-registry",
        Some("1234"),
        false,
        &m.to_xml().unwrap(),
    )
    .to_bytes()
    .unwrap()
}

fn short_message(i: u64) -> Vec<u8> {
    format!("<85>1 2027-01-15T08:00:00.000000Z node-a.example loadgen 1234 IHE+RFC-3881 - short message number {i:010}")
        .into_bytes()
}

/// One buffer of frames per connection (about 1 MiB), sent repeatedly.
fn chunk(kind: &str, conn: u64) -> (Vec<u8>, u64) {
    let mut buf = Vec::new();
    let mut n = 0;
    while buf.len() < 1 << 20 {
        let m = if kind == "audit" {
            audit_message(conn * 1_000_000 + n)
        } else {
            short_message(conn * 1_000_000 + n)
        };
        encode_frame(&m, &mut buf);
        n += 1;
    }
    (buf, n)
}

/// Stream `total` messages over `conns` TLS connections; returns when everything is written.
async fn generate(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    kind: &str,
    total: u64,
    conns: u64,
) -> u64 {
    let per = total / conns;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let tls = tls.clone();
        let (buf, n) = chunk(kind, c);
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(loopback(port))
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = tokio_rustls::TlsConnector::from(tls)
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap();
            let mut sent = 0u64;
            while sent < per {
                if per - sent >= n {
                    s.write_all(&buf).await.unwrap();
                    sent += n;
                } else {
                    // Partial chunk: find the byte offset after (per - sent) frames.
                    let mut dec = cps_atna::FrameDecoder::new(1 << 20);
                    dec.push(&buf);
                    let mut k = 0;
                    while k < per - sent {
                        dec.next_frame().unwrap().unwrap();
                        k += 1;
                    }
                    let off = buf.len() - dec.pending();
                    s.write_all(&buf[..off]).await.unwrap();
                    sent += k;
                }
            }
            s.flush().await.unwrap();
            // Keep the connection open until the receiver has read everything.
            (s, sent)
        }));
    }
    let mut streams = Vec::new();
    let mut sent = 0;
    for t in tasks {
        let (s, n) = t.await.unwrap();
        sent += n;
        streams.push(s);
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(streams);
    });
    sent
}

/// Returns (messages per second, CPU seconds of this process during the run).
fn bench_ours(dir: &Path, pki: &Pki, kind: &str, total: u64, conns: u64) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signer = Arc::new(SoftwareSigner::generate("bench", KeyAlgorithm::EcP256).unwrap());
    let log = AuditLog::open(
        &dir.join(format!("arr-{kind}")),
        Some(signer),
        LogOptions {
            checkpoint_every: env(
                "ATNA_BENCH_CHECKPOINT_EVERY",
                LogOptions::default().checkpoint_every,
            ),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let port = free_port();
    let repo = rt
        .block_on(Repository::start(
            RepositoryConfig {
                tls_addr: loopback(port),
                ..RepositoryConfig::default()
            },
            server_config(pki, "repo", |v| v, false),
            Arc::new(AllowAll),
            log.clone(),
        ))
        .unwrap();
    let tls = client_config(pki, Some("node-a"));
    let cpu0 = cpu_secs("self");
    let start = Instant::now();
    let sent = rt.block_on(generate(port, tls, kind, total, conns));
    let written = start.elapsed();
    while log.len() < sent {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {} of {sent} stored",
            log.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let cpu = cpu_secs("self") - cpu0;
    let rate = sent as f64 / elapsed.as_secs_f64();
    // The connection tasks count a batch once its durability reply arrived.
    std::thread::sleep(Duration::from_millis(100));
    let stats = repo.stats();
    println!(
        "ours     {kind:5}  {sent} messages over {conns} TLS connections: {:.2} s (generator done at {:.2} s) -> {rate:.0} msg/s durable; parse errors {}, log {} MB",
        elapsed.as_secs_f64(),
        written.as_secs_f64(),
        stats.parse_errors,
        std::fs::metadata(log.dir().join("records.log"))
            .map(|m| m.len() >> 20)
            .unwrap_or(0)
    );
    rt.block_on(repo.shutdown());
    drop(log);
    let _ = std::fs::remove_dir_all(dir.join(format!("arr-{kind}")));
    rt.shutdown_timeout(Duration::from_secs(1));
    (rate, cpu)
}

fn count_lines(path: &Path, offset: &mut u64, lines: &mut u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    use std::io::Seek;
    if f.seek(std::io::SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                *lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                *offset += n as u64;
            }
        }
    }
}

/// Returns (messages per second, CPU seconds of this process (the generator), CPU seconds of
/// rsyslogd) during the run.
fn bench_rsyslog(dir: &Path, pki: &Pki, kind: &str, total: u64, conns: u64) -> (f64, f64, f64) {
    let rs = dir.join(format!("rsyslog-{kind}"));
    std::fs::create_dir_all(&rs).unwrap();
    let port = free_port();
    let out = rs.join("bench.log");
    let conf = format!(
        r#"global(workDirectory="{rs}/work-bench"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{pki}/ca.crt"
  defaultNetstreamDriverCertFile="{pki}/repo.crt"
  defaultNetstreamDriverKeyFile="{pki}/repo.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["node-a"] MaxSessions="1000")
input(type="imtcp" port="{port}" address="127.0.0.1")
if $msgid == "IHE+RFC-3881" then {{
  action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
        rs = rs.display(),
        pki = pki.dir.display(),
        out = out.display()
    );
    let mut rsyslog = Rsyslog::start(&rs, "bench", &conf);
    wait_port(port, Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls = client_config(pki, Some("node-a"));
    let cpu0 = cpu_secs("self");
    let rs_pid = rsyslog.child.id().to_string();
    let rs_cpu0 = cpu_secs(&rs_pid);
    let start = Instant::now();
    let sent = rt.block_on(generate(port, tls, kind, total, conns));
    let written = start.elapsed();
    let (mut off, mut lines) = (0u64, 0u64);
    while lines < sent {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "rsyslog wrote only {lines} of {sent}"
        );
        std::thread::sleep(Duration::from_millis(20));
        count_lines(&out, &mut off, &mut lines);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_secs("self") - cpu0;
    let rs_cpu = cpu_secs(&rs_pid) - rs_cpu0;
    let rate = sent as f64 / elapsed.as_secs_f64();
    println!(
        "rsyslog  {kind:5}  {sent} messages over {conns} TLS connections: {:.2} s (generator done at {:.2} s) -> {rate:.0} msg/s written to file (not fsynced)",
        elapsed.as_secs_f64(),
        written.as_secs_f64()
    );
    rsyslog.stop();
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&rs);
    (rate, cpu, rs_cpu)
}

/// Single-thread CPU cost of what the repository does per message.
fn bench_parse() {
    let msgs: Vec<Vec<u8>> = (0..20_000).map(audit_message).collect();
    let limits = XmlLimits::default();
    let node = NodeIdentity {
        subject: "CN=node-a".into(),
        fingerprint: Some([1; 32]),
    };
    let avg = msgs.iter().map(Vec::len).sum::<usize>() / msgs.len();
    let time = |name: &str, f: &dyn Fn(&[u8])| {
        let t = Instant::now();
        for m in &msgs {
            f(m);
        }
        println!(
            "parse: {name:45} {:6.2} us/message ({avg} bytes)",
            t.elapsed().as_secs_f64() * 1e6 / msgs.len() as f64
        );
    };
    time("RFC 5424 parse", &|m| {
        std::hint::black_box(SyslogMessage::parse(m).unwrap());
    });
    time("DICOM XML parse (roxmltree)", &|m| {
        let s = SyslogMessage::parse(m).unwrap();
        std::hint::black_box(cps_atna::parse_audit_xml(&s.msg, &limits).unwrap());
    });
    time("NewRecord::from_message (both + encoding)", &|m| {
        std::hint::black_box(NewRecord::from_message(
            1,
            &node,
            "127.0.0.1:1",
            Transport::Tls,
            m,
            &limits,
        ));
    });
}

fn bench_search(dir: &Path, n: u64) {
    let path = dir.join("search-log");
    let t = Instant::now();
    {
        let log = AuditLog::open(&path, None, LogOptions::default()).unwrap();
        let node = NodeIdentity {
            subject: "CN=node-a".into(),
            fingerprint: Some([1; 32]),
        };
        let limits = XmlLimits::default();
        let mut i = 0;
        while i < n {
            let batch: Vec<NewRecord> = (i..(i + 5000).min(n))
                .map(|k| {
                    NewRecord::from_message(
                        k as i64,
                        &node,
                        "127.0.0.1:1",
                        Transport::Tls,
                        &audit_message(k),
                        &limits,
                    )
                })
                .collect();
            i += batch.len() as u64;
            log.append_blocking(batch).unwrap();
        }
    }
    println!(
        "search: built a log of {n} DICOM records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let snap_size = std::fs::metadata(path.join("index.snap"))
        .map(|m| m.len() >> 20)
        .unwrap_or(0);
    let t = Instant::now();
    let log = AuditLog::open(&path, None, LogOptions::default()).unwrap();
    println!(
        "search: reopen from the index snapshot ({snap_size} MB): {:.2} s ({} records)",
        t.elapsed().as_secs_f64(),
        log.len()
    );
    drop(log);
    std::fs::remove_file(path.join("index.snap")).unwrap();
    let t = Instant::now();
    let log = AuditLog::open(&path, None, LogOptions::default()).unwrap();
    println!(
        "search: reopen rebuilding the index from the log: {:.2} s ({} records)",
        t.elapsed().as_secs_f64(),
        log.len()
    );
    let day = 1_800_000_000_000_000i64;
    let cases: Vec<(&str, SearchFilter)> = vec![
        (
            "user (20 hits)",
            SearchFilter {
                user: Some("810000012345".into()),
                ..Default::default()
            },
        ),
        (
            "patient (5 hits)",
            SearchFilter {
                patient: Some("PAT-12345".into()),
                ..Default::default()
            },
        ),
        (
            "event type (all match), first 100",
            SearchFilter {
                event_type: Some("110143".into()),
                ..Default::default()
            },
        ),
        (
            "date range 1 min + outcome, first 100",
            SearchFilter {
                from: Some(day + 3_600_000_000),
                to: Some(day + 3_660_000_000),
                outcome: Some(0),
                ..Default::default()
            },
        ),
        (
            "user + date range (no hit)",
            SearchFilter {
                user: Some("810000012345".into()),
                from: Some(day + 86_400_000_000),
                ..Default::default()
            },
        ),
        (
            "parse errors (none: full scan)",
            SearchFilter {
                parse_error: Some(true),
                ..Default::default()
            },
        ),
    ];
    for (name, f) in cases {
        let reps = 20;
        let t = Instant::now();
        let mut hits = 0;
        for _ in 0..reps {
            hits = log.search(&f, 100, None).unwrap().records.len();
        }
        println!(
            "search: {name:40} {hits:4} hits  {:8.3} ms/query",
            t.elapsed().as_secs_f64() * 1000.0 / reps as f64
        );
    }
    drop(log);
    // One checkpoint over everything, then a full verification.
    let signer = Arc::new(SoftwareSigner::generate("bench", KeyAlgorithm::EcP256).unwrap());
    let spki = cps_hsm::Signer::public_key_der(signer.as_ref()).to_vec();
    let log = AuditLog::open(&path, Some(signer), LogOptions::default()).unwrap();
    log.checkpoint_blocking().unwrap();
    drop(log);
    let t = Instant::now();
    let report = cps_atna::verify(&path, &cps_atna::VerifyOptions::key(&spki)).unwrap();
    println!(
        "verify: {} records, {} checkpoint(s): {:.2} s",
        report.records,
        report.checkpoints,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&path);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful: run only
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest bench: run with `cargo bench -p cps-atna --bench ingest`");
        return;
    }
    let which = std::env::var("ATNA_BENCH").unwrap_or_else(|_| "all".into());
    let base = std::env::var("ATNA_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path();
    if which == "ingest" || which == "all" {
        let total = env("ATNA_BENCH_MESSAGES", 400_000);
        let conns = env("ATNA_BENCH_CONNECTIONS", 8);
        let pki = Pki::new(&dir.join("pki"));
        pki.issue("repo", "localhost", true);
        pki.issue("node-a", "node-a", false);
        let kinds = std::env::var("ATNA_BENCH_KINDS").unwrap_or_else(|_| "short,audit".into());
        let with_rsyslog = env("ATNA_BENCH_RSYSLOG", 1) == 1;
        for kind in kinds.split(',') {
            let (_, ours_cpu) = bench_ours(dir, &pki, kind, total, conns);
            if with_rsyslog {
                let (_, gen_cpu, rs_cpu) = bench_rsyslog(dir, &pki, kind, total, conns);
                // The generator does the same work in both runs: subtracting its CPU from ours
                // leaves the repository's (TLS, parsing, hashing, writing, fdatasync).
                let per = |c: f64| c * 1e6 / total as f64;
                println!(
                    "cpu      {kind:5}  per message: ours (repository) {:.1} us, rsyslogd {:.1} us, generator {:.1} us -> on 2 dedicated cores: ours ~{:.0} msg/s, rsyslog ~{:.0} msg/s",
                    per(ours_cpu - gen_cpu),
                    per(rs_cpu),
                    per(gen_cpu),
                    2e6 / per(ours_cpu - gen_cpu).max(0.001),
                    2e6 / per(rs_cpu).max(0.001)
                );
            }
        }
    }
    if which == "parse" || which == "all" {
        bench_parse();
    }
    if which == "search" || which == "all" {
        bench_search(dir, env("ATNA_BENCH_SEARCH_RECORDS", 1_000_000));
    }
}
