//! Checkpoints and what `verify` concludes when they are damaged: `checkpoints.log` deleted,
//! truncated inside an entry or at an entry boundary, its last entries removed, an entry signed
//! by another key, records cut after the last checkpoint or under one, records with no
//! checkpoint, an anchor newer than the file, a tail later than its checkpoint's policy allows;
//! and how the writer keeps the promise the verifier relies on (split at `checkpoint_every`,
//! re-sign after a quiet interval, sign a crash's tail at open, hand each checkpoint to the
//! sink), including verification while the log is being written.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cps_atna::{
    Anchor, AuditLog, Checkpoint, CheckpointFile, CheckpointPolicy, CheckpointSink, LogOptions,
    NewRecord, NodeIdentity, TailProblem, Transport, TrustedKey, VerifyError, VerifyOptions,
    XmlLimits, read_checkpoints, verify,
};
use cps_hsm::{KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer, SoftwareSigner};
use parking_lot::Mutex;

/// `verify` fails with an error matching the pattern; the error.
macro_rules! refused {
    ($dir:expr, $opts:expr, $pat:pat) => {{
        let e = verify($dir, $opts).unwrap_err();
        assert!(matches!(e, $pat), "{e}");
        e
    }};
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A record received at `received` (Unix µs).
fn rec(i: u64, received: i64) -> NewRecord {
    let raw = format!("<85>1 - host app - IHE+RFC-3881 - record {i}");
    NewRecord::from_message(
        received,
        &NodeIdentity::default(),
        "127.0.0.1:1",
        Transport::Tls,
        raw.as_bytes(),
        &XmlLimits::default(),
    )
}

fn key() -> Arc<SoftwareSigner> {
    Arc::new(SoftwareSigner::generate("checkpoints", KeyAlgorithm::EcP256).unwrap())
}

fn options(every: u64, interval: Duration) -> LogOptions {
    LogOptions {
        checkpoint_every: every,
        checkpoint_interval: interval,
        ..LogOptions::default()
    }
}

/// The log in `dir` opened with key `k`, a checkpoint every `every` records or `interval`.
fn signed(dir: &Path, k: &Arc<SoftwareSigner>, every: u64, interval: Duration) -> AuditLog {
    AuditLog::open(dir, Some(k.clone()), options(every, interval)).unwrap()
}

/// `n` records appended one at a time, checkpoint every `every`, closed (final checkpoint).
fn build(dir: &Path, n: u64, every: u64, k: &Arc<SoftwareSigner>) {
    let log = signed(dir, k, every, Duration::from_secs(3600));
    for i in 1..=n {
        assert_eq!(log.append_blocking(vec![rec(i, now_us())]).unwrap(), i..=i);
    }
    drop(log);
}

/// A closed log of `n` records (checkpoint every `every`), its key and the anchor of its last
/// checkpoint.
fn built(n: u64, every: u64) -> (tempfile::TempDir, Arc<SoftwareSigner>, Anchor) {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    build(dir.path(), n, every, &k);
    let anchor = anchor_of_last(dir.path());
    (dir, k, anchor)
}

/// Records appended with no key (no checkpoint); returns the head.
fn append_unsigned(dir: &Path, seqs: std::ops::RangeInclusive<u64>) -> (u64, [u8; 32]) {
    let log = AuditLog::open(dir, None, LogOptions::default()).unwrap();
    log.append_blocking(seqs.map(|i| rec(i, now_us())).collect())
        .unwrap();
    log.head()
}

fn opts(k: &Arc<SoftwareSigner>) -> VerifyOptions {
    VerifyOptions::key(k.public_key_der())
}

/// `(start, length)` of each entry of checkpoints.log.
fn entries(dir: &Path) -> Vec<(usize, usize)> {
    common::frames_of(&dir.join("checkpoints.log"), 0)
        .into_iter()
        .map(|(s, e)| (s, e - s))
        .collect()
}

fn keep_checkpoint_bytes(dir: &Path, n: usize) {
    let p = dir.join("checkpoints.log");
    let mut d = std::fs::read(&p).unwrap();
    d.truncate(n);
    std::fs::write(p, d).unwrap();
}

/// The anchor of the last checkpoint (as the appliance keeps it in its store).
fn anchor_of_last(dir: &Path) -> Anchor {
    let c = read_checkpoints(dir).unwrap().pop().unwrap();
    Anchor {
        seq: c.seq,
        head: c.head,
        place: "anchored in the store at 2026-11-22T10:00:00Z".into(),
    }
}

fn cut_records_from(dir: &Path, seq: u64) {
    let off = common::frames_of(&dir.join("records.log"), 32)[(seq - 1) as usize].0;
    let p = dir.join("records.log");
    let mut d = std::fs::read(&p).unwrap();
    d.truncate(off);
    std::fs::write(p, d).unwrap();
    let _ = std::fs::remove_file(dir.join("index.snap"));
}

#[test]
fn an_intact_log_verifies_with_its_anchor() {
    let (dir, k, _) = built(25, 10);
    let seqs: Vec<u64> = read_checkpoints(dir.path())
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 10, 20, 25],
        "the first record at once, then at every 10th, then at close"
    );
    let r = verify(
        dir.path(),
        &opts(&k).with_anchor(anchor_of_last(dir.path())),
    )
    .unwrap();
    assert_eq!(
        (
            r.records,
            r.checkpoints,
            r.last_checkpoint_seq,
            r.unsigned_tail,
            r.anchors
        ),
        (25, 4, 25, 0, 1)
    );
    assert_eq!(r.keys_used, ["the checkpoint key"]);
}

#[test]
fn deleting_checkpoints_log_is_reported() {
    let (dir, k, anchor) = built(25, 10);
    std::fs::remove_file(dir.path().join("checkpoints.log")).unwrap();
    // Without an anchor: records and no checkpoint.
    let e = refused!(
        dir.path(),
        &opts(&k),
        VerifyError::NoCheckpoint {
            records: 25,
            file: CheckpointFile::Missing
        }
    );
    assert!(
        e.to_string().contains("records 1 to 25 are unprotected"),
        "{e}"
    );
    assert!(e.to_string().contains("checkpoints.log is missing"), "{e}");
    // With the store's anchor: named as deleted, with what is unaccounted for.
    let e = refused!(
        dir.path(),
        &opts(&k).with_anchor(anchor),
        VerifyError::AnchorMissing { .. }
    );
    let msg = e.to_string();
    assert!(msg.contains("cut back or deleted"), "{msg}");
    assert!(msg.contains("checkpoint of record 25"), "{msg}");
    assert!(msg.contains("anchored in the store at"), "{msg}");
    assert!(msg.contains("it holds no checkpoint"), "{msg}");
    assert!(
        msg.contains("records 1 to 25 are no longer covered"),
        "{msg}"
    );
    assert_eq!(e.first_bad_record(), Some(1));
    // An empty file is no better.
    std::fs::write(dir.path().join("checkpoints.log"), b"").unwrap();
    refused!(
        dir.path(),
        &opts(&k),
        VerifyError::NoCheckpoint {
            file: CheckpointFile::Empty,
            ..
        }
    );
}

#[test]
fn truncating_checkpoints_log_inside_an_entry_is_reported() {
    let (dir, k, anchor) = built(25, 10);
    let e = entries(dir.path());
    // Cut in the middle of the last entry (record 25).
    keep_checkpoint_bytes(dir.path(), e[3].0 + e[3].1 / 2);
    let err = refused!(
        dir.path(),
        &opts(&k).with_anchor(anchor.clone()),
        VerifyError::AnchorMissing { .. }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("the last checkpoint it holds covers record 20")
            && msg.contains("records 21 to 25 are no longer covered"),
        "{msg}"
    );
    // Without the anchor the cut is a crash-like torn entry and a tail the policy allows:
    // reported, not refused (which is why checkpoints are anchored outside the directory).
    let r = verify(dir.path(), &opts(&k)).unwrap();
    assert_eq!((r.last_checkpoint_seq, r.unsigned_tail), (20, 5));
    assert!(r.torn_checkpoint_bytes > 0);
    // Cut inside the first entry: nothing left but a torn piece.
    keep_checkpoint_bytes(dir.path(), 20);
    refused!(
        dir.path(),
        &opts(&k),
        VerifyError::NoCheckpoint {
            records: 25,
            file: CheckpointFile::Torn(20)
        }
    );
}

#[test]
fn truncating_checkpoints_log_at_an_entry_boundary_is_reported() {
    let (dir, k, anchor) = built(45, 10);
    let e = entries(dir.path());
    assert_eq!(e.len(), 6);
    // Keep the first three checkpoints (records 1, 10 and 20): 25 records follow, more than 10.
    keep_checkpoint_bytes(dir.path(), e[3].0);
    let err = refused!(
        dir.path(),
        &opts(&k),
        VerifyError::UnsignedTail {
            last_checkpoint: 20,
            records: 45,
            problem: TailProblem::TooMany {
                count: 25,
                every: 10
            },
            ..
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("checkpoints are missing"), "{msg}");
    assert!(msg.contains("checkpoints were removed"), "{msg}");
    assert!(msg.contains("records 21 to 45 are not covered"), "{msg}");
    assert_eq!(err.first_bad_record(), Some(21));
    // With the anchor, the anchor names it first.
    let err = verify(dir.path(), &opts(&k).with_anchor(anchor)).unwrap_err();
    assert!(
        err.to_string()
            .contains("the checkpoint of record 45 (anchored in the store"),
        "{err}"
    );
}

#[test]
fn removing_the_last_checkpoints_is_reported() {
    let (dir, k, anchor) = built(45, 10);
    let e = entries(dir.path());
    // Only the last one gone (5 records, within the policy): the anchor shows it.
    keep_checkpoint_bytes(dir.path(), e[5].0);
    let err = verify(dir.path(), &opts(&k).with_anchor(anchor.clone())).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::AnchorMissing {
                last_checkpoint: Some(40),
                records: 45,
                ..
            }
        ),
        "{err}"
    );
    // The last three gone: the tail rule shows it even without an anchor.
    keep_checkpoint_bytes(dir.path(), e[3].0);
    refused!(dir.path(), &opts(&k), VerifyError::UnsignedTail { .. });
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let (dir, k, _) = built(20, 10);
    // A second log with the same records signed by another key: swap its checkpoint in.
    let other_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("records.log"),
        other_dir.path().join("records.log"),
    )
    .unwrap();
    let other = key();
    let log = AuditLog::open(other_dir.path(), Some(other.clone()), LogOptions::default()).unwrap();
    log.checkpoint_blocking().unwrap();
    drop(log);
    let forged = std::fs::read(other_dir.path().join("checkpoints.log")).unwrap();
    let mut swapped = std::fs::read(dir.path().join("checkpoints.log")).unwrap();
    let e = entries(dir.path());
    swapped.truncate(e[1].0);
    swapped.extend_from_slice(&forged);
    std::fs::write(dir.path().join("checkpoints.log"), &swapped).unwrap();
    let err = verify(dir.path(), &opts(&k)).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadCheckpoint { index: 1, seq: 20, reason } if reason.contains("no trusted certificate holds")),
        "{err}"
    );
    // The whole file re-signed by the other key (a swapped key file): nothing verifies.
    std::fs::write(dir.path().join("checkpoints.log"), &forged).unwrap();
    refused!(
        dir.path(),
        &opts(&k),
        VerifyError::BadCheckpoint { index: 0, .. }
    );
    // Trusting the other key instead is what a swapped key file would achieve; the caller
    // decides which keys are trusted (by certificate chain in the appliance).
    assert!(verify(dir.path(), &VerifyOptions::key(other.public_key_der())).is_ok());
}

#[test]
fn cutting_records_after_or_under_a_checkpoint_is_reported() {
    // After the last checkpoint: the final checkpoint at close covers every record.
    let (dir, k, _) = built(25, 10);
    cut_records_from(dir.path(), 23);
    let err = refused!(
        dir.path(),
        &opts(&k),
        VerifyError::Truncated {
            last_seq: 22,
            checkpoint_seq: 25
        }
    );
    assert!(
        err.to_string().contains("records 23 to 25 are missing"),
        "{err}"
    );
    // Under a checkpoint: half the log cut away.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 26, 10, &k);
    cut_records_from(dir.path(), 14);
    let err = verify(dir.path(), &opts(&k)).unwrap_err();
    assert_eq!(err.first_bad_record(), Some(14), "{err}");
    // Records and checkpoints.log cut back together to the same point: only the anchor shows it.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 30, 10, &k);
    let anchor = anchor_of_last(dir.path());
    cut_records_from(dir.path(), 21);
    keep_checkpoint_bytes(dir.path(), entries(dir.path())[3].0);
    assert!(verify(dir.path(), &opts(&k)).is_ok());
    let err = verify(dir.path(), &opts(&k).with_anchor(anchor)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("the log ends at record 20: records 21 to 30 are missing from records.log"),
        "{msg}"
    );
}

#[test]
fn records_without_any_checkpoint_are_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    append_unsigned(dir.path(), 1..=13);
    refused!(
        dir.path(),
        &opts(&k),
        VerifyError::NoCheckpoint { records: 13, .. }
    );
    // An empty log is intact.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(verify(empty.path(), &opts(&k)).unwrap().records, 0);
    // Opened again with the key: the unsigned tail is signed at open.
    let log = AuditLog::open(dir.path(), Some(k.clone()), LogOptions::default()).unwrap();
    assert_eq!(log.last_checkpoint().map(|c| c.seq), Some(13));
    drop(log);
    assert_eq!(
        verify(dir.path(), &opts(&k)).unwrap().last_checkpoint_seq,
        13
    );
}

#[test]
fn an_anchor_newer_than_the_file_is_reported() {
    let (dir, k, _) = built(12, 10);
    let old = tempfile::tempdir().unwrap();
    for f in ["records.log", "checkpoints.log"] {
        std::fs::copy(dir.path().join(f), old.path().join(f)).unwrap();
    }
    // The log grows and is anchored; then the old copy is put back.
    let log = signed(dir.path(), &k, 10, Duration::from_secs(3600));
    log.append_blocking((13..=18).map(|i| rec(i, now_us())).collect())
        .unwrap();
    drop(log);
    let anchor = anchor_of_last(dir.path());
    assert_eq!(anchor.seq, 18);
    let err = verify(old.path(), &opts(&k).with_anchor(anchor.clone())).unwrap_err();
    assert!(
        err.to_string()
            .contains("the checkpoint of record 18 (anchored in the store at 2026-11-22T10:00:00Z) is missing; the last checkpoint it holds covers record 12 and the log ends at record 12: records 13 to 18 are missing from records.log"),
        "{err}"
    );
    // A checkpoint of the anchored record with another head: rewritten.
    let mut other = anchor;
    other.seq = 12;
    refused!(
        old.path(),
        &opts(&k).with_anchor(other),
        VerifyError::AnchorMismatch { index: 2, .. }
    );
}

#[test]
fn a_tail_received_after_its_checkpoint_was_due_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let log = signed(dir.path(), &k, 1000, Duration::from_secs(10));
    let t0 = now_us();
    log.append_blocking((1..=5).map(|i| rec(i, t0)).collect())
        .unwrap();
    log.checkpoint_blocking().unwrap();
    // Records stamped an hour later (as if received then): their checkpoint is removed below.
    let later = t0 + 3_600_000_000;
    log.append_blocking((6..=8).map(|i| rec(i, later)).collect())
        .unwrap();
    drop(log);
    assert!(verify(dir.path(), &opts(&k)).is_ok());
    keep_checkpoint_bytes(dir.path(), entries(dir.path())[1].0);
    let err = refused!(
        dir.path(),
        &opts(&k),
        VerifyError::UnsignedTail {
            last_checkpoint: 5,
            records: 8,
            problem: TailProblem::TooLate { seq: 6, .. },
            ..
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("more than 15 s after it"), "{msg}");
    assert!(msg.contains("records 6 to 8 are not covered"), "{msg}");
}

#[test]
fn each_checkpoint_carries_its_policy_which_the_verifier_applies() {
    let (dir, k, _) = built(25, 5);
    let cps = read_checkpoints(dir.path()).unwrap();
    assert!(cps.iter().all(|c| c.policy
        == Some(CheckpointPolicy {
            every: 5,
            interval: Duration::from_secs(3600)
        })));
    // 10 records after the checkpoint of record 15: more than its 5, though the verifier's own
    // default allows 1000.
    keep_checkpoint_bytes(dir.path(), entries(dir.path())[4].0);
    refused!(
        dir.path(),
        &opts(&k),
        VerifyError::UnsignedTail {
            problem: TailProblem::TooMany {
                count: 10,
                every: 5
            },
            ..
        }
    );
}

/// Checkpoints of the first format (no policy) are still read, with the verifier's policy.
#[test]
fn first_format_checkpoints_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let (seq, head) = append_unsigned(dir.path(), 1..=4);
    let time = now_us();
    let mut msg = b"cps-atna checkpoint v1\n".to_vec();
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(&head);
    msg.extend_from_slice(&time.to_be_bytes());
    let sig = k
        .sign(SignatureAlgorithm::EcdsaSha256, &msg, SigFormat::Der)
        .unwrap();
    let v1 = Checkpoint {
        seq,
        head,
        time,
        policy: None,
        algorithm: "ecdsa-sha256".into(),
        key_id: cps_atna::key_id(k.public_key_der()),
        signature: sig,
    };
    let bytes = v1.to_bytes();
    assert_eq!(&bytes[..4], b"AC01");
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), v1);
    std::fs::write(dir.path().join("checkpoints.log"), &bytes).unwrap();
    let r = verify(dir.path(), &opts(&k)).unwrap();
    assert_eq!(r.last_checkpoint_seq, 4);
    // The verifier's default policy then bounds the tail.
    append_unsigned(dir.path(), 5..=8);
    let strict = opts(&k).with_policy(CheckpointPolicy {
        every: 3,
        interval: Duration::from_secs(10),
    });
    assert!(matches!(
        verify(dir.path(), &strict).unwrap_err(),
        VerifyError::UnsignedTail { .. }
    ));
}

#[test]
fn a_checkpoint_after_its_key_stopped_being_valid_is_refused() {
    let (dir, k, _) = built(5, 10);
    let mut o = opts(&k);
    o.keys = vec![TrustedKey {
        spki: k.public_key_der().to_vec(),
        not_after: Some(now_us() - 60_000_000),
        name: "certificate 01 (audit-checkpoint)".into(),
    }];
    let err = verify(dir.path(), &o).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadCheckpoint { reason, .. } if reason.contains("after certificate 01 (audit-checkpoint) stopped being valid")),
        "{err}"
    );
}

/// A batch that crosses `checkpoint_every` is written in two parts with the checkpoint in
/// between; after a quiet interval the same head is signed again before new records; every
/// checkpoint reaches the sink.
#[test]
fn the_writer_keeps_the_policy_it_signs() {
    #[derive(Debug)]
    struct Collect(Mutex<Vec<Checkpoint>>);
    impl CheckpointSink for Collect {
        fn checkpointed(&self, c: &Checkpoint) {
            self.0.lock().push(c.clone());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let log = AuditLog::open(
        dir.path(),
        Some(k.clone()),
        LogOptions {
            sink: Some(sink.clone()),
            ..options(10, Duration::from_millis(300))
        },
    )
    .unwrap();
    log.append_blocking((1..=25).map(|i| rec(i, now_us())).collect())
        .unwrap();
    let seqs =
        |d: &Path| -> Vec<u64> { read_checkpoints(d).unwrap().iter().map(|c| c.seq).collect() };
    assert_eq!(seqs(dir.path()), [10, 20], "split inside the batch");
    // The interval passes with 5 records unsigned: the timer signs them.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(seqs(dir.path()), [10, 20, 25]);
    // Quiet for longer than the interval, then a record: the head is signed again first.
    std::thread::sleep(Duration::from_millis(400));
    log.append_blocking(vec![rec(26, now_us())]).unwrap();
    let cps = read_checkpoints(dir.path()).unwrap();
    assert_eq!(cps[3].seq, 25, "{:?}", seqs(dir.path()));
    assert!(cps[3].time > cps[2].time);
    drop(log);
    assert_eq!(seqs(dir.path()), [10, 20, 25, 25, 26]);
    assert_eq!(*sink.0.lock(), read_checkpoints(dir.path()).unwrap());
    let r = verify(dir.path(), &opts(&k)).unwrap();
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail), (26, 5, 0));
    assert!(log_holds(dir.path(), &k, 20));
}

fn log_holds(dir: &Path, k: &Arc<SoftwareSigner>, seq: u64) -> bool {
    let c = read_checkpoints(dir)
        .unwrap()
        .into_iter()
        .find(|c| c.seq == seq)
        .unwrap();
    let log = AuditLog::open(dir, Some(k.clone()), LogOptions::default()).unwrap();
    let yes = log.holds_checkpoint(c.seq, &c.head).unwrap();
    let mut other = c.head;
    other[0] ^= 1;
    assert!(!log.holds_checkpoint(c.seq, &other).unwrap());
    assert!(!log.holds_checkpoint(c.seq + 1000, &c.head).unwrap());
    yes
}

/// Verification while records and checkpoints are being written never reports the tail being
/// written as tampering.
#[test]
fn verification_of_a_log_being_written_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let log = signed(dir.path(), &k, 7, Duration::from_millis(50));
    log.append_blocking(vec![rec(0, now_us())]).unwrap();
    log.checkpoint_blocking().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    log.append_blocking(vec![rec(t * 1_000_000 + i, now_us())])
                        .unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let mut strict = opts(&k);
    strict.grace = Duration::ZERO;
    let mut runs = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let anchor = anchor_of_last(dir.path());
        let r = verify(dir.path(), &strict.clone().with_anchor(anchor))
            .unwrap_or_else(|e| panic!("run {runs}: {e}"));
        assert!(r.unsigned_tail <= 7, "{r:?}");
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(runs > 3, "{runs} verifications");
    assert!(log.len() > 100, "{} records written", log.len());
}

/// The DICOM message that carries a checkpoint to the repositories: schema-shaped, readable by
/// the repository's parser, and holding everything needed to check the signature there.
#[test]
fn a_checkpoint_message_carries_the_evidence() {
    use base64::Engine as _;
    let (dir, k, _) = built(3, 10);
    let cp = read_checkpoints(dir.path()).unwrap().pop().unwrap();
    let ctx = cps_atna::events::AuditContext {
        source_id: "cps-trust".into(),
        site_id: None,
        host: "cps-trust.localhost".into(),
    };
    let msg = cps_atna::events::audit_checkpoint(&ctx, "urn:cps-trust:cps-trust:audit-log", &cp);
    let xml = msg.to_xml().unwrap();
    if let Some(out) = std::env::var_os("CPS_ATNA_CHECKPOINT_XML") {
        std::fs::write(out, &xml).unwrap();
    }
    let summary = cps_atna::parse_audit_xml(xml.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(summary.event_id.code, "110113");
    assert_eq!(summary.event_types[0].code, "audit-checkpoint");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let detail = |kind: &str| -> Vec<u8> {
        let v = doc
            .descendants()
            .find(|n| {
                n.has_tag_name("ParticipantObjectDetail") && n.attribute("type") == Some(kind)
            })
            .unwrap_or_else(|| panic!("no {kind} in {xml}"))
            .attribute("value")
            .unwrap();
        base64::engine::general_purpose::STANDARD.decode(v).unwrap()
    };
    assert_eq!(detail("seq"), cp.seq.to_string().into_bytes());
    assert_eq!(detail("head"), cp.head);
    assert_eq!(detail("checkpoint-every"), b"10");
    assert_eq!(detail("signature"), cp.signature);
    let carried = Checkpoint::from_bytes(&detail("checkpoint")).unwrap();
    assert_eq!(carried, cp);
    carried.verify(k.public_key_der()).unwrap();
    // The log: a system object (2) in the role of a security resource (13).
    let object = doc
        .descendants()
        .find(|n| n.has_tag_name("ParticipantObjectIdentification"))
        .map(|o| {
            ["ParticipantObjectTypeCode", "ParticipantObjectTypeCodeRole"].map(|a| o.attribute(a))
        });
    assert_eq!(object, Some([Some("2"), Some("13")]));
}

/// Reopened under another policy, the log signs its head again under the new one at once (the
/// last checkpoint's promise governs the records that follow it); under the same policy, not.
#[test]
fn a_new_policy_is_signed_at_open() {
    let (dir, k, _) = built(5, 10);
    let log = signed(dir.path(), &k, 3, Duration::from_secs(3600));
    let last = log.last_checkpoint().unwrap();
    assert_eq!((last.seq, last.policy.map(|p| p.every)), (5, Some(3)));
    drop(log);
    let n = read_checkpoints(dir.path()).unwrap().len();
    drop(signed(dir.path(), &k, 3, Duration::from_secs(3600)));
    assert_eq!(read_checkpoints(dir.path()).unwrap().len(), n);
    assert_eq!(verify(dir.path(), &opts(&k)).unwrap().checkpoints, n);
}
