//! The hash-chained log: durability across reopen, search, and `verify` against every kind of
//! tampering (deleted, modified, swapped records; truncated tail; forged checkpoints).

mod common;

use std::path::Path;
use std::sync::Arc;

use cps_atna::events::{self, AuditContext, Person};
use cps_atna::{
    AuditLog, Auditor, LogOptions, NewRecord, NodeIdentity, Queue, QueueOptions, RecordProblem,
    SearchFilter, Transport, VerifyError, VerifyOptions, XmlLimits, verify,
};
use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};
use time::OffsetDateTime;

fn ctx() -> AuditContext {
    AuditContext {
        source_id: "cps-trust-test".into(),
        site_id: Some("site-1".into()),
        host: "10.0.0.1".into(),
    }
}

fn node() -> NodeIdentity {
    NodeIdentity {
        subject: "CN=node-a,O=test".into(),
        fingerprint: Some([7; 32]),
    }
}

/// RFC 5424 bytes of a login event for `user` at Unix second `t`.
fn login_msg(user: &str, t: i64, refused: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), &["x"], QueueOptions::default()).unwrap();
    let a = Auditor::new(q, "appliance.test", "cps-trust");
    let now = OffsetDateTime::from_unix_timestamp(t).unwrap();
    let m = events::login(
        &ctx(),
        now,
        &Person::id(user),
        Some("192.0.2.7"),
        refused.then_some("wrong PIN"),
    );
    a.format(&m, now).unwrap()
}

fn rec(raw: &[u8], received: i64) -> NewRecord {
    NewRecord::from_message(
        received,
        &node(),
        "127.0.0.1:5000",
        Transport::Tls,
        raw,
        &XmlLimits::default(),
    )
}

fn signer() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::generate("atna-checkpoints", KeyAlgorithm::EcP256).unwrap())
}

fn options(every: u64) -> LogOptions {
    LogOptions {
        checkpoint_every: every,
        ..LogOptions::default()
    }
}

/// A log of `n` login records (checkpoint every `every`), closed; returns the trusted key.
fn build_log(dir: &Path, n: u64, every: u64) -> Vec<u8> {
    build_log_with(dir, n, every, signer())
}

fn build_log_with(dir: &Path, n: u64, every: u64, s: Arc<dyn Signer>) -> Vec<u8> {
    let spki = s.public_key_der().to_vec();
    let log = AuditLog::open(dir, Some(s), options(every)).unwrap();
    for i in 0..n {
        let r = log.append_blocking(vec![rec(
            &login_msg(&format!("user-{i}"), 1_800_000_000 + i as i64, i % 3 == 0),
            1,
        )]);
        assert_eq!(r.unwrap(), i + 1..=i + 1);
    }
    log.checkpoint_blocking().unwrap();
    spki
}

/// Byte ranges of every record frame in records.log.
fn frames(dir: &Path) -> Vec<(usize, usize)> {
    common::frames_of(&dir.join("records.log"), 32)
}

fn rewrite(dir: &Path, f: impl FnOnce(&mut Vec<u8>, &[(usize, usize)])) {
    let p = dir.join("records.log");
    let mut data = std::fs::read(&p).unwrap();
    let fr = frames(dir);
    f(&mut data, &fr);
    std::fs::write(&p, data).unwrap();
}

#[test]
fn append_reopen_search_and_verify_intact() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let spki = build_log_with(dir.path(), 30, 10, key.clone());
    let report = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(report.records, 30);
    assert_eq!(report.last_checkpoint_seq, 30);
    // The first record at once, then records 10, 20 and 30.
    assert_eq!(report.checkpoints, 4);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.parse_errors, 0);

    let log = AuditLog::open(dir.path(), Some(key.clone()), LogOptions::default()).unwrap();
    assert_eq!(log.len(), 30);
    let r = log.get(5).unwrap();
    assert_eq!(r.seq, 5);
    let ev = r.summary.event.as_ref().unwrap();
    assert_eq!(
        ev.user_ids,
        vec!["user-4".to_owned(), "cps-trust-test".to_owned()]
    );
    assert_eq!(ev.event_id.code, "110114");

    // user filter
    let page = log
        .search(
            &SearchFilter {
                user: Some("user-7".into()),
                ..Default::default()
            },
            10,
            None,
        )
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].seq, 8);
    // failures (every third) newest first, paged
    let f = SearchFilter {
        outcome: Some(4),
        event_type: Some("110122".into()),
        ..Default::default()
    };
    let p1 = log.search(&f, 4, None).unwrap();
    assert_eq!(
        p1.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![28, 25, 22, 19]
    );
    let p2 = log.search(&f, 100, p1.next_cursor).unwrap();
    assert_eq!(
        p2.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![16, 13, 10, 7, 4, 1]
    );
    assert!(p2.next_cursor.is_none());
    // date range on the event time
    let from = 1_800_000_010 * 1_000_000;
    let f = SearchFilter {
        from: Some(from),
        to: Some(from + 3_000_000),
        ..Default::default()
    };
    let p = log.search(&f, 100, None).unwrap();
    assert_eq!(
        p.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![13, 12, 11]
    );
    // source and node
    let f = SearchFilter {
        source: Some("cps-trust-test".into()),
        node: Some("CN=node-a,O=test".into()),
        ..Default::default()
    };
    assert_eq!(log.search(&f, 1000, None).unwrap().records.len(), 30);
    assert!(
        log.search(
            &SearchFilter {
                source: Some("other".into()),
                ..Default::default()
            },
            10,
            None
        )
        .unwrap()
        .records
        .is_empty()
    );
    assert!(log.search(&SearchFilter::default(), 10, Some(999)).is_err());

    // New appends continue the chain after reopen.
    log.append_blocking(vec![rec(b"not syslog at all", 2)])
        .unwrap();
    log.checkpoint_blocking().unwrap();
    drop(log);
    let report = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(report.records, 31);
    assert_eq!(report.parse_errors, 1);
    // A checkpoint signed by another key (a repository reopened with the wrong key) is refused.
    let log = AuditLog::open(dir.path(), Some(signer()), LogOptions::default()).unwrap();
    log.append_blocking(vec![rec(b"y", 3)]).unwrap();
    log.checkpoint_blocking().unwrap();
    let e = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap_err();
    assert!(
        matches!(
            e,
            // 4 checkpoints, the head signed again under the default policy at the first
            // reopen, the one of record 31: the 7th is the other key's.
            VerifyError::BadCheckpoint {
                index: 6,
                seq: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unparseable_messages_are_stored_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), None, LogOptions::default()).unwrap();
    let dtd = b"<13>1 - h a - IHE+RFC-3881 - <?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><AuditMessage>&e;</AuditMessage>";
    log.append_blocking(vec![
        rec(b"\xff\xfe garbage", 1),
        rec(dtd, 1),
        rec(b"<13>1 - h a - - - plain text", 1),
    ])
    .unwrap();
    let p = log
        .search(
            &SearchFilter {
                parse_error: Some(true),
                ..Default::default()
            },
            10,
            None,
        )
        .unwrap();
    assert_eq!(p.records.len(), 3);
    let r1 = log.get(1).unwrap();
    assert!(r1.summary.syslog_error.is_some());
    assert_eq!(r1.raw, b"\xff\xfe garbage");
    let r2 = log.get(2).unwrap();
    assert!(
        r2.summary
            .xml_error
            .as_deref()
            .unwrap()
            .contains("XML not accepted"),
        "{:?}",
        r2.summary.xml_error
    );
    assert!(r2.summary.syslog.is_some());
}

fn expect_record_error(dir: &Path, spki: &[u8], seq: u64) -> VerifyError {
    let e = verify(dir, &VerifyOptions::key(spki)).expect_err("tampered log must not verify");
    assert_eq!(e.first_bad_record(), Some(seq), "{e}");
    e
}

#[test]
fn verify_names_deleted_record() {
    for victim in [0usize, 6, 19] {
        let dir = tempfile::tempdir().unwrap();
        let spki = build_log(dir.path(), 20, 5);
        rewrite(dir.path(), |d, fr| {
            d.drain(fr[victim].0..fr[victim].1);
        });
        let e = expect_record_error(dir.path(), &spki, victim as u64 + 1);
        if victim < 19 {
            assert!(
                matches!(e, VerifyError::Record { problem: RecordProblem::Sequence { found }, .. } if found == victim as u64 + 2),
                "{e}"
            );
        } else {
            // The last record: only the checkpoint shows it is gone.
            assert!(
                matches!(
                    e,
                    VerifyError::Truncated {
                        last_seq: 19,
                        checkpoint_seq: 20
                    }
                ),
                "{e}"
            );
        }
        // And the repository refuses to open it.
        assert!(AuditLog::open(dir.path(), None, LogOptions::default()).is_err());
    }
}

#[test]
fn verify_names_modified_record() {
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 20, 5);
    rewrite(dir.path(), |d, fr| {
        let (s, e) = fr[11];
        let body = &mut d[s..e];
        // change "user-11" into "user-99" inside the raw message
        let pos = body.windows(7).position(|w| w == b"user-11").unwrap();
        body[pos + 5..pos + 7].copy_from_slice(b"99");
    });
    let e = expect_record_error(dir.path(), &spki, 12);
    assert!(
        matches!(
            e,
            VerifyError::Record {
                problem: RecordProblem::Hash,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn verify_detects_rehashed_rewrite_through_checkpoint() {
    // An attacker who rewrites a record and recomputes its hash breaks the next record's link;
    // one who rewrites the whole rest of the chain cannot match the signed checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 10, 5);
    let data = std::fs::read(dir.path().join("records.log")).unwrap();
    let fr = frames(dir.path());
    let mut out = Vec::new();
    let mut prev = [0u8; 32];
    for (i, (s, e)) in fr.iter().enumerate() {
        let mut body = data[s + 8..e - 32].to_vec();
        if i == 7 {
            let pos = body.windows(6).position(|w| w == b"user-7").unwrap();
            body[pos + 5] = b'8';
        }
        body[8..40].copy_from_slice(&prev);
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        c.update(b"cps-atna record v1\n");
        c.update(&body);
        prev.copy_from_slice(c.finish().as_ref());
        out.extend_from_slice(&data[*s..s + 8]);
        out.extend_from_slice(&body);
        out.extend_from_slice(&prev);
    }
    std::fs::write(dir.path().join("records.log"), out).unwrap();
    let e = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::CheckpointMismatch {
                seq: 10,
                after: 5,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.first_bad_record(), Some(6));
}

#[test]
fn verify_names_swapped_records() {
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 20, 5);
    rewrite(dir.path(), |d, fr| {
        let a = d[fr[8].0..fr[8].1].to_vec();
        let b = d[fr[9].0..fr[9].1].to_vec();
        let mut swapped = b.clone();
        swapped.extend_from_slice(&a);
        d.splice(fr[8].0..fr[9].1, swapped);
    });
    let e = expect_record_error(dir.path(), &spki, 9);
    assert!(
        matches!(
            e,
            VerifyError::Record {
                problem: RecordProblem::Sequence { found: 10 },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn verify_detects_truncation_beyond_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 20, 5);
    rewrite(dir.path(), |d, fr| d.truncate(fr[14].0));
    let e = expect_record_error(dir.path(), &spki, 15);
    assert!(
        matches!(
            e,
            VerifyError::Truncated {
                last_seq: 14,
                checkpoint_seq: 20
            }
        ),
        "{e}"
    );
    // Cut in the middle of a record: the torn part is not a record; still truncated.
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 20, 5);
    rewrite(dir.path(), |d, fr| d.truncate(fr[17].0 + 30));
    let e = expect_record_error(dir.path(), &spki, 18);
    assert!(matches!(e, VerifyError::Truncated { .. }), "{e}");
}

#[test]
fn torn_unacknowledged_tail_is_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 10, 5);
    // A crash while appending record 11 (never acknowledged, after the last checkpoint).
    let p = dir.path().join("records.log");
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(b"AR01\0\0\x01\0partial");
    std::fs::write(&p, &data).unwrap();
    let r = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(r.records, 10);
    assert_eq!(r.torn_tail_bytes, 15);
    // Opening repairs it and appends continue.
    let log = AuditLog::open(dir.path(), None, LogOptions::default()).unwrap();
    assert_eq!(log.append_blocking(vec![rec(b"x", 1)]).unwrap(), 11..=11);
    drop(log);
    // A zero-filled tail (power loss before unsynced data reached the disk) is the same case.
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(&[0u8; 5000]);
    std::fs::write(&p, &data).unwrap();
    let r = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(
        (r.records, r.unsigned_tail, r.torn_tail_bytes),
        (11, 1, 5000)
    );
    std::fs::remove_file(dir.path().join("index.snap")).unwrap();
    let log = AuditLog::open(dir.path(), None, LogOptions::default()).unwrap();
    assert_eq!(log.len(), 11);
    drop(log);
    // Non-zero garbage at the end is damage, not a crash.
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(b"XXXXXXXXXXXXXXXXXXXXXXXX");
    std::fs::write(&p, &data).unwrap();
    std::fs::remove_file(dir.path().join("index.snap")).unwrap();
    assert!(AuditLog::open(dir.path(), None, LogOptions::default()).is_err());
}

#[test]
fn verify_refuses_foreign_or_forged_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let _spki = build_log(dir.path(), 10, 5);
    let other = SoftwareSigner::generate("other", KeyAlgorithm::EcP256).unwrap();
    let e = verify(dir.path(), &VerifyOptions::key(other.public_key_der())).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadCheckpoint { index: 0, .. }),
        "{e}"
    );

    // Flip a bit in the first checkpoint's signature.
    let dir = tempfile::tempdir().unwrap();
    let spki = build_log(dir.path(), 10, 5);
    let p = dir.path().join("checkpoints.log");
    let mut d = std::fs::read(&p).unwrap();
    let len = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    d[8 + len - 5] ^= 1;
    std::fs::write(&p, d).unwrap();
    let e = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::BadCheckpoint {
                index: 0,
                seq: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn concurrent_appenders_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer();
    let spki = s.public_key_der().to_vec();
    let log = AuditLog::open(dir.path(), Some(s), options(1000)).unwrap();
    let msg = login_msg("someone", 1_800_000_000, false);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            let log = log.clone();
            let msg = msg.clone();
            sc.spawn(move || {
                for _ in 0..100 {
                    log.append_blocking(vec![rec(&msg, 1), rec(&msg, 1)])
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(log.len(), 1600);
    log.checkpoint_blocking().unwrap();
    let r = verify(dir.path(), &VerifyOptions::key(&spki)).unwrap();
    assert_eq!(r.records, 1600);
    assert_eq!(r.last_checkpoint_seq, 1600);
}

#[test]
fn index_snapshot_speeds_reopen_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = signer();
    let spki = build_log_with(dir.path(), 40, 10, key.clone());
    let snap = dir.path().join("index.snap");
    assert!(snap.exists(), "the last clone's drop saves the index");
    let old_snap = std::fs::read(&snap).unwrap();
    let f = SearchFilter {
        outcome: Some(4),
        ..Default::default()
    };
    let seqs = |log: &AuditLog, f: &SearchFilter| {
        log.search(f, 1000, None)
            .unwrap()
            .records
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };

    let log = AuditLog::open(dir.path(), Some(key.clone()), options(10)).unwrap();
    assert_eq!(log.len(), 40);
    let before = seqs(&log, &f);
    assert_eq!(before.len(), 14);
    for i in 40..45 {
        log.append_blocking(vec![rec(
            &login_msg(&format!("user-{i}"), 1_800_000_000 + i, true),
            1,
        )])
        .unwrap();
    }
    log.save_index_blocking().unwrap();
    drop(log);

    // A stale (older) snapshot: the records after it are read from the log.
    std::fs::write(&snap, &old_snap).unwrap();
    let log = AuditLog::open(dir.path(), Some(key.clone()), options(10)).unwrap();
    assert_eq!(log.len(), 45);
    let after = seqs(&log, &f);
    assert_eq!(after.len(), 19);
    assert_eq!(&after[5..], &before[..]);
    assert_eq!(
        seqs(
            &log,
            &SearchFilter {
                user: Some("user-43".into()),
                ..Default::default()
            }
        ),
        vec![44]
    );
    drop(log);

    // A damaged snapshot is ignored (full rebuild, same answers).
    let mut bad = std::fs::read(&snap).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&snap, &bad).unwrap();
    let log = AuditLog::open(dir.path(), None, LogOptions::default()).unwrap();
    assert_eq!(seqs(&log, &f), after);
    drop(log);

    // A snapshot of another log does not fit this one.
    let other = tempfile::tempdir().unwrap();
    build_log(other.path(), 45, 100);
    std::fs::copy(other.path().join("index.snap"), &snap).unwrap();
    let log = AuditLog::open(dir.path(), None, LogOptions::default()).unwrap();
    assert_eq!(seqs(&log, &f), after);
    drop(log);
    assert_eq!(
        verify(dir.path(), &VerifyOptions::key(&spki))
            .unwrap()
            .records,
        45
    );
}
