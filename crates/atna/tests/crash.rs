//! kill -9 while appending: every acknowledged record is in the log after a restart, the chain
//! verifies, and appends continue. (A process crash, not a power loss: the page cache survives
//! a kill, so this proves the torn-tail handling and the acknowledgement order, while
//! `fdatasync` before acknowledging is what covers power loss.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cps_atna::{
    AuditLog, LogOptions, NewRecord, NodeIdentity, Transport, VerifyError, VerifyOptions,
    XmlLimits, verify,
};
use cps_hsm::{Signer, SoftwareSigner};

const CHILD_ENV: &str = "CPS_ATNA_CRASH_CHILD_DIR";

fn record(i: u64) -> NewRecord {
    let raw = format!(
        "<85>1 2027-01-15T08:00:00Z h app - IHE+RFC-3881 - message {i} {}",
        "x".repeat((i % 700) as usize)
    );
    NewRecord::from_message(
        i as i64,
        &NodeIdentity::default(),
        "127.0.0.1:9",
        Transport::Tls,
        raw.as_bytes(),
        &XmlLimits::default(),
    )
}

/// The child: append forever in small batches from 4 threads, printing each acknowledged
/// sequence number.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let pkcs8_path = dir.join("key.p8");
    let signer: Arc<dyn Signer> =
        Arc::new(SoftwareSigner::from_pkcs8("crash", &std::fs::read(pkcs8_path).unwrap()).unwrap());
    let log = AuditLog::open(
        &dir.join("arr"),
        Some(signer),
        LogOptions {
            checkpoint_every: 500,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = log.clone();
            let out = out.clone();
            s.spawn(move || {
                let mut i = t;
                loop {
                    let r = log.append_blocking(vec![record(i), record(i + 4)]).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "acked {}", r.end()).unwrap();
                    o.flush().unwrap();
                    i += 8;
                }
            });
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    std::fs::write(tmp.path().join("key.p8"), pkcs8.as_ref()).unwrap();
    let spki = SoftwareSigner::from_pkcs8("crash", pkcs8.as_ref())
        .unwrap()
        .public_key_der()
        .to_vec();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("acked ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    max = max.max(n);
                }
            }
            max
        });
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(600 + 200 * round));
        // SAFETY: kill(2) with SIGKILL on our own child's PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let acked = reader.join().unwrap();
        assert!(
            acked > 0,
            "the child acknowledged nothing in {:?}",
            start.elapsed()
        );
        // As the crash left it: the unsigned tail is within the policy (the writer signs at
        // every 500th record before writing the next), unless no checkpoint was made yet.
        let arr = tmp.path().join("arr");
        match verify(&arr, &VerifyOptions::key(&spki)) {
            Ok(r) => assert!(r.unsigned_tail <= 500, "round {round}: {r:?}"),
            Err(VerifyError::NoCheckpoint { .. }) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
        // Reopened with the key: the tail is signed at open.
        let signer: Arc<dyn Signer> =
            Arc::new(SoftwareSigner::from_pkcs8("crash", pkcs8.as_ref()).unwrap());
        let log = AuditLog::open(&arr, Some(signer), LogOptions::default()).unwrap();
        assert!(
            log.len() >= acked,
            "round {round}: {} records after the crash, {acked} were acknowledged",
            log.len()
        );
        drop(log);
        let report = verify(&arr, &VerifyOptions::key(&spki)).unwrap();
        assert!(report.records >= acked);
        assert_eq!(report.unsigned_tail, 0);
    }
}
