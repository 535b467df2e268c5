//! Behaviour of every operation, through the `Store` trait: the backend-agnostic suite, mounted
//! once per backend (`tests/sled.rs`, `tests/postgres.rs`). Each mount provides `crate::backend`:
//! `Db::fresh()` (a new, empty store's location), `Db::open()` (a store on it; several may be
//! opened one after another, and on PostgreSQL also side by side) and the store type `S`.

use std::collections::HashSet;
use std::sync::Arc;

use cps_store::{
    AuditRecord, CertCursor, CertStatus, CertificateRecord, CommitReceipt, Expect, MAX_VALUE_LEN,
    RevokedEntry, Store, StoreError, WriteBatch, WriteOp,
};

use crate::backend::{Db, S};

pub fn cert(issuer: &str, serial: &[u8], spki: u8) -> CertificateRecord {
    CertificateRecord {
        issuer: issuer.into(),
        serial: serial.to_vec(),
        subject: format!("CN=holder {}", hex_of(serial)),
        profile: "cps-auth".into(),
        holder: Some("810001234567".into()),
        spki_sha256: [spki; 32],
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
        der: vec![0x30, 0x82, spki, serial[serial.len() - 1]],
        status: CertStatus::Valid,
        issued_at: 1_700_000_100,
    }
}

pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn audit(n: u64) -> AuditRecord {
    AuditRecord {
        time: 1_700_000_000 + n as i64,
        kind: "test".into(),
        actor: "tester".into(),
        outcome: "success".into(),
        detail: serde_json::json!({ "n": n }),
        node: None,
    }
}

pub fn revoked(time: i64, reason: u8) -> CertStatus {
    CertStatus::Revoked {
        time,
        reason,
        invalidity_date: Some(time - 60),
    }
}

pub fn open() -> (Db, S) {
    let dir = Db::fresh();
    let store = dir.open();
    (dir, store)
}

pub fn put(table: &str, key: &[u8], value: &[u8], expect: Expect) -> WriteOp {
    WriteOp::PutRecord {
        table: table.into(),
        key: key.to_vec(),
        value: value.to_vec(),
        expect,
    }
}

pub fn one(op: WriteOp) -> WriteBatch {
    WriteBatch::new().with(op)
}

pub fn insert(store: &dyn Store, rec: &CertificateRecord) -> CommitReceipt {
    store
        .commit(one(WriteOp::InsertCertificate(rec.clone())))
        .unwrap()
}

pub fn set_status(issuer: &str, serial: &[u8], status: CertStatus) -> WriteOp {
    WriteOp::SetCertificateStatus {
        issuer: issuer.into(),
        serial: serial.to_vec(),
        status,
    }
}

#[test]
fn store_is_an_object_safe_send_sync_trait() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<S>();
    send_sync::<Arc<dyn Store>>();
    let (_dir, store) = open();
    let store: Arc<dyn Store> = Arc::new(store);
    let s2 = store.clone();
    std::thread::spawn(move || s2.commit(one(WriteOp::AppendAudit(audit(1)))).unwrap())
        .join()
        .unwrap();
    assert_eq!(store.audit_len().unwrap(), 1);
}

#[test]
fn certificates_round_trip_and_survive_reopening() {
    let dir = Db::fresh();
    let a = cert("personnes", &[0x01, 0x02, 0x03], 1);
    let mut b = cert("organisations", &[0x00, 0x80], 2);
    b.holder = None;
    b.status = revoked(1_750_000_000, 1);
    {
        let store = dir.open();
        assert_eq!(
            store.get_certificate("personnes", &[1, 2, 3]).unwrap(),
            None
        );
        insert(&store, &a);
        insert(&store, &b);
        assert_eq!(
            store.get_certificate("personnes", &[1, 2, 3]).unwrap(),
            Some(a.clone())
        );
    }
    let store = dir.open();
    assert_eq!(
        store.get_certificate("personnes", &[1, 2, 3]).unwrap(),
        Some(a.clone())
    );
    // Leading zero bytes are not significant.
    assert_eq!(
        store.get_certificate("personnes", &[0, 1, 2, 3]).unwrap(),
        Some(a)
    );
    assert_eq!(
        store.get_certificate("organisations", &[0x80]).unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        store.get_certificate("organisations", &[1, 2, 3]).unwrap(),
        None
    );
    assert_eq!(
        store.revoked_certificates("organisations").unwrap().len(),
        1
    );
}

#[test]
fn a_duplicate_serial_fails_the_whole_batch_and_changes_nothing() {
    let (_dir, store) = open();
    let first = cert("personnes", &[0x42], 1);
    insert(&store, &first);
    let before = store.list_certificates(None, None, 100).unwrap();

    let fresh = cert("personnes", &[0x43], 2);
    let mut dup = cert("personnes", &[0x00, 0x42], 3);
    dup.subject = "CN=someone else".into();
    let batch = WriteBatch::new()
        .with(WriteOp::AppendAudit(audit(1)))
        .with(WriteOp::BumpCounter {
            name: "crl".into(),
            min_next: None,
        })
        .with(WriteOp::InsertCertificate(fresh.clone()))
        .with(WriteOp::BlockKey {
            spki_sha256: [9; 32],
            reason: "r".into(),
            at: 1,
        })
        .with(WriteOp::PutMeta {
            key: "k".into(),
            value: b"v".to_vec(),
        })
        .with(WriteOp::InsertCertificate(dup));
    let err = store.commit(batch).unwrap_err();
    match &err {
        StoreError::Conflict(what) => {
            assert!(
                what.contains("personnes") && what.contains("0042"),
                "{what}"
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        err.to_string().contains("nothing of the batch was written"),
        "{err}"
    );

    assert_eq!(store.get_certificate("personnes", &[0x43]).unwrap(), None);
    assert_eq!(
        store.get_certificate("personnes", &[0x42]).unwrap(),
        Some(first)
    );
    assert_eq!(store.list_certificates(None, None, 100).unwrap(), before);
    assert!(store.certificates_by_spki(&[2; 32]).unwrap().is_empty());
    assert!(store.certificates_by_spki(&[3; 32]).unwrap().is_empty());
    assert_eq!(store.audit_len().unwrap(), 0);
    assert!(store.audit_range(1, 10).unwrap().is_empty());
    assert_eq!(store.counter("crl").unwrap(), 0);
    assert!(!store.is_key_blocked(&[9; 32]).unwrap());
    assert_eq!(store.get_meta("k").unwrap(), None);

    // The audit sequence carries on without a gap after the failed batch.
    let r = store.commit(one(WriteOp::AppendAudit(audit(2)))).unwrap();
    assert_eq!(r.audit_seqs, vec![1]);
}

#[test]
fn a_duplicate_within_one_batch_conflicts_but_other_issuers_may_reuse_a_serial() {
    let (_dir, store) = open();
    let a = cert("personnes", &[7], 1);
    let err = store
        .commit(
            WriteBatch::new()
                .with(WriteOp::InsertCertificate(a.clone()))
                .with(WriteOp::InsertCertificate(a.clone())),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_certificate("personnes", &[7]).unwrap(), None);

    let b = cert("organisations", &[7], 1);
    store
        .commit(
            WriteBatch::new()
                .with(WriteOp::InsertCertificate(a.clone()))
                .with(WriteOp::InsertCertificate(b.clone())),
        )
        .unwrap();
    assert_eq!(store.get_certificate("personnes", &[7]).unwrap(), Some(a));
    assert_eq!(
        store.get_certificate("organisations", &[7]).unwrap(),
        Some(b)
    );
}

#[test]
fn status_changes_update_the_record_and_the_revoked_index() {
    let (_dir, store) = open();
    for s in 1..=3u8 {
        insert(&store, &cert("personnes", &[s], s));
    }
    insert(&store, &cert("organisations", &[1], 9));
    assert!(store.revoked_certificates("personnes").unwrap().is_empty());

    store
        .commit(
            WriteBatch::new()
                .with(set_status("personnes", &[3], revoked(1_750_000_000, 1)))
                .with(set_status("personnes", &[0, 1], revoked(1_750_000_100, 6))),
        )
        .unwrap();
    let got = store.get_certificate("personnes", &[3]).unwrap().unwrap();
    assert_eq!(got.status, revoked(1_750_000_000, 1));
    assert_eq!(
        got.der,
        cert("personnes", &[3], 3).der,
        "only the status changes"
    );
    assert_eq!(
        store.revoked_certificates("personnes").unwrap(),
        vec![
            RevokedEntry {
                serial: vec![1],
                time: 1_750_000_100,
                reason: 6,
                invalidity_date: Some(1_750_000_040),
                not_after: 1_800_000_000
            },
            RevokedEntry {
                serial: vec![3],
                time: 1_750_000_000,
                reason: 1,
                invalidity_date: Some(1_749_999_940),
                not_after: 1_800_000_000
            },
        ]
    );
    assert!(
        store
            .revoked_certificates("organisations")
            .unwrap()
            .is_empty()
    );
    assert!(store.revoked_certificates("nobody").unwrap().is_empty());

    // A hold is released.
    store
        .commit(one(set_status("personnes", &[1], CertStatus::Valid)))
        .unwrap();
    assert_eq!(
        store
            .get_certificate("personnes", &[1])
            .unwrap()
            .unwrap()
            .status,
        CertStatus::Valid
    );
    let left: Vec<_> = store
        .revoked_certificates("personnes")
        .unwrap()
        .into_iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(left, vec![vec![3]]);

    // Insert then revoke in one batch: the later operation sees the earlier one.
    store
        .commit(
            WriteBatch::new()
                .with(WriteOp::InsertCertificate(cert("personnes", &[4], 4)))
                .with(set_status("personnes", &[4], revoked(5, 4))),
        )
        .unwrap();
    assert_eq!(store.revoked_certificates("personnes").unwrap().len(), 2);

    // A certificate inserted already revoked is in the index too.
    let mut pre = cert("organisations", &[2], 8);
    pre.status = revoked(7, 5);
    insert(&store, &pre);
    assert_eq!(
        store.revoked_certificates("organisations").unwrap()[0].serial,
        vec![2]
    );
}

#[test]
fn changing_the_status_of_a_missing_certificate_is_not_found_and_changes_nothing() {
    let (_dir, store) = open();
    insert(&store, &cert("personnes", &[1], 1));
    let err = store
        .commit(
            WriteBatch::new()
                .with(WriteOp::AppendAudit(audit(1)))
                .with(set_status("personnes", &[1], revoked(1, 1)))
                .with(set_status("personnes", &[0x0a, 0xbc], revoked(1, 1))),
        )
        .unwrap_err();
    match &err {
        StoreError::NotFound(what) => assert!(
            what.contains("0abc") && what.contains("personnes"),
            "{what}"
        ),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.audit_len().unwrap(), 0);
    assert_eq!(
        store
            .get_certificate("personnes", &[1])
            .unwrap()
            .unwrap()
            .status,
        CertStatus::Valid
    );
    assert!(store.revoked_certificates("personnes").unwrap().is_empty());
}

#[test]
fn the_spki_index_finds_every_certificate_of_a_key() {
    let (_dir, store) = open();
    let a = cert("personnes", &[1], 5);
    let b = cert("personnes", &[2], 6);
    let c = cert("organisations", &[1], 5);
    for r in [&a, &b, &c] {
        insert(&store, r);
    }
    let mut found = store.certificates_by_spki(&[5; 32]).unwrap();
    found.sort_by(|x, y| x.issuer.cmp(&y.issuer));
    assert_eq!(found, vec![c, a]);
    assert_eq!(store.certificates_by_spki(&[6; 32]).unwrap(), vec![b]);
    assert!(store.certificates_by_spki(&[7; 32]).unwrap().is_empty());
    // The index follows status changes (it points at the record).
    store
        .commit(one(set_status("personnes", &[2], revoked(1, 1))))
        .unwrap();
    assert_eq!(
        store.certificates_by_spki(&[6; 32]).unwrap()[0].status,
        revoked(1, 1)
    );
}

#[test]
fn blocked_keys_stay_blocked_with_their_first_reason() {
    let dir = Db::fresh();
    {
        let store = dir.open();
        assert!(!store.is_key_blocked(&[1; 32]).unwrap());
        store
            .commit(one(WriteOp::BlockKey {
                spki_sha256: [1; 32],
                reason: "compromised".into(),
                at: 10,
            }))
            .unwrap();
        store
            .commit(one(WriteOp::BlockKey {
                spki_sha256: [1; 32],
                reason: "again".into(),
                at: 20,
            }))
            .unwrap();
    }
    let store = dir.open();
    assert!(store.is_key_blocked(&[1; 32]).unwrap());
    assert!(!store.is_key_blocked(&[2; 32]).unwrap());
    let entry = store.blocked_key(&[1; 32]).unwrap().unwrap();
    assert_eq!((entry.reason.as_str(), entry.at), ("compromised", 10));
}

#[test]
fn counters_only_go_forward() {
    let dir = Db::fresh();
    let bump = |min_next| WriteOp::BumpCounter {
        name: "crl-personnes".into(),
        min_next,
    };
    {
        let store = dir.open();
        assert_eq!(store.counter("crl-personnes").unwrap(), 0);
        assert_eq!(
            store.commit(one(bump(None))).unwrap().counter_values,
            vec![1]
        );
        assert_eq!(
            store.commit(one(bump(None))).unwrap().counter_values,
            vec![2]
        );
        assert_eq!(
            store.commit(one(bump(Some(10)))).unwrap().counter_values,
            vec![10]
        );
        // A lower floor does not move it back.
        assert_eq!(
            store.commit(one(bump(Some(3)))).unwrap().counter_values,
            vec![11]
        );
        // Several bumps in one batch, in operation order, each counter on its own.
        let r = store
            .commit(
                WriteBatch::new()
                    .with(bump(None))
                    .with(WriteOp::AppendAudit(audit(1)))
                    .with(WriteOp::BumpCounter {
                        name: "crl-organisations".into(),
                        min_next: None,
                    })
                    .with(bump(None))
                    .with(WriteOp::AppendAudit(audit(2))),
            )
            .unwrap();
        assert_eq!(r.counter_values, vec![12, 1, 13]);
        assert_eq!(r.audit_seqs, vec![1, 2]);
    }
    let store = dir.open();
    assert_eq!(store.counter("crl-personnes").unwrap(), 13);
    assert_eq!(store.counter("crl-organisations").unwrap(), 1);
    assert_eq!(
        store.commit(one(bump(None))).unwrap().counter_values,
        vec![14]
    );

    store
        .commit(one(WriteOp::BumpCounter {
            name: "max".into(),
            min_next: Some(u64::MAX),
        }))
        .unwrap();
    let err = store
        .commit(one(WriteOp::BumpCounter {
            name: "max".into(),
            min_next: None,
        }))
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.counter("max").unwrap(), u64::MAX);
}

#[test]
fn audit_sequence_numbers_start_at_one_and_read_back_in_ranges() {
    let dir = Db::fresh();
    {
        let store = dir.open();
        assert_eq!(store.audit_len().unwrap(), 0);
        for n in 1..=5 {
            assert_eq!(
                store
                    .commit(one(WriteOp::AppendAudit(audit(n))))
                    .unwrap()
                    .audit_seqs,
                vec![n]
            );
        }
        let r = store
            .commit(WriteBatch::from(vec![
                WriteOp::AppendAudit(audit(6)),
                WriteOp::AppendAudit(audit(7)),
            ]))
            .unwrap();
        assert_eq!(r.audit_seqs, vec![6, 7]);
    }
    let store = dir.open();
    assert_eq!(store.audit_len().unwrap(), 7);
    let all = store.audit_range(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    for e in &all {
        assert_eq!(e.record, audit(e.seq));
    }
    let mid = store.audit_range(3, 2).unwrap();
    assert_eq!(mid.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(store.audit_range(8, 10).unwrap().is_empty());
    assert!(store.audit_range(1, 0).unwrap().is_empty());
    assert_eq!(
        store
            .commit(one(WriteOp::AppendAudit(audit(8))))
            .unwrap()
            .audit_seqs,
        vec![8]
    );
}

#[test]
fn concurrent_audit_appends_are_gap_free_and_unique() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 200;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let n = t * 1000 + i;
                        let r = store.commit(one(WriteOp::AppendAudit(audit(n)))).unwrap();
                        assert_eq!(r.audit_seqs.len(), 1);
                        (r.audit_seqs[0], n)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut assigned: Vec<(u64, u64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assigned.sort();
    let total = THREADS * PER_THREAD;
    assert_eq!(
        assigned.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(store.audit_len().unwrap(), total);
    let entries = store.audit_range(1, usize::MAX).unwrap();
    assert_eq!(entries.len() as u64, total);
    for (entry, (seq, n)) in entries.iter().zip(&assigned) {
        assert_eq!(entry.seq, *seq);
        assert_eq!(
            entry.record,
            audit(*n),
            "seq {seq} holds another writer's record"
        );
    }
    crate::backend::after_concurrent_commits(&store, total);
}

#[test]
fn listing_pages_through_certificates_in_key_order() {
    let (_dir, store) = open();
    let mut expected = Vec::new();
    for issuer in ["organisations", "personnes", "racine"] {
        for n in [1u32, 2, 255, 256, 65_536, 7, 300, 1 << 24] {
            let serial: Vec<u8> = n
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|&b| b == 0)
                .collect();
            let rec = cert(issuer, &serial, 1);
            expected.push((issuer.to_string(), n, rec));
        }
    }
    // Insert in a scrambled order, several per batch.
    for chunk in expected.iter().rev().collect::<Vec<_>>().chunks(5) {
        store
            .commit(
                chunk
                    .iter()
                    .map(|(_, _, r)| WriteOp::InsertCertificate(r.clone()))
                    .collect(),
            )
            .unwrap();
    }
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let expected: Vec<CertificateRecord> = expected.into_iter().map(|(_, _, r)| r).collect();

    let collect = |issuer: Option<&str>, limit| {
        let mut out = Vec::new();
        let mut after: Option<CertCursor> = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_certificates(issuer, after.as_ref(), limit)
                .unwrap();
            assert!(page.certificates.len() <= limit);
            pages += 1;
            out.extend(page.certificates);
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        (out, pages)
    };
    let (all, pages) = collect(None, 7);
    assert_eq!(all, expected);
    assert_eq!(pages, 24_usize.div_ceil(7));
    // A page size that divides the total exactly gives no empty trailing page.
    assert_eq!(collect(None, 8).1, 3);
    assert_eq!(collect(None, 100).0, expected);

    let (personnes, pages) = collect(Some("personnes"), 3);
    assert_eq!(personnes, expected[8..16].to_vec());
    assert_eq!(pages, 3);
    assert!(collect(Some("personne"), 3).0.is_empty());
    assert!(collect(Some("zzz"), 3).0.is_empty());

    // A cursor from another issuer positions within the requested one.
    let before = CertCursor {
        issuer: "organisations".into(),
        serial: vec![5],
    };
    let page = store
        .list_certificates(Some("personnes"), Some(&before), 100)
        .unwrap();
    assert_eq!(page.certificates, expected[8..16].to_vec());
    let after = CertCursor {
        issuer: "personnes".into(),
        serial: vec![0xff],
    };
    let page = store
        .list_certificates(Some("personnes"), Some(&after), 100)
        .unwrap();
    assert_eq!(page.certificates, expected[12..16].to_vec());
    assert_eq!(page.next, None);

    let err = store.list_certificates(None, None, 0).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

#[test]
fn meta_values_are_kept_and_replaced() {
    let (_dir, store) = open();
    assert_eq!(store.get_meta("ca.personnes.key-label").unwrap(), None);
    store
        .commit(one(WriteOp::PutMeta {
            key: "ca.personnes.key-label".into(),
            value: b"one".to_vec(),
        }))
        .unwrap();
    store
        .commit(one(WriteOp::PutMeta {
            key: "ca.personnes.key-label".into(),
            value: b"two".to_vec(),
        }))
        .unwrap();
    store
        .commit(one(WriteOp::PutMeta {
            key: "empty".into(),
            value: vec![],
        }))
        .unwrap();
    assert_eq!(
        store.get_meta("ca.personnes.key-label").unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(store.get_meta("empty").unwrap(), Some(vec![]));
}

#[test]
fn invalid_input_is_refused_before_anything_is_written() {
    let (_dir, store) = open();
    let mut big = cert("personnes", &[1], 1);
    big.der = vec![0; MAX_VALUE_LEN];
    let cases = vec![
        WriteOp::InsertCertificate(cert("", &[1], 1)),
        WriteOp::InsertCertificate(cert("a\0b", &[1], 1)),
        WriteOp::InsertCertificate(cert("personnes", &[0, 0], 1)),
        WriteOp::InsertCertificate(big),
        WriteOp::BumpCounter {
            name: String::new(),
            min_next: None,
        },
        WriteOp::PutMeta {
            key: "k".into(),
            value: vec![0; MAX_VALUE_LEN + 1],
        },
        set_status("personnes", &[], CertStatus::Valid),
    ];
    for op in cases {
        let err = store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::AppendAudit(audit(1)))
                    .with(op.clone()),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{op:?}: {err:?}");
    }
    assert_eq!(store.audit_len().unwrap(), 0);
    assert!(matches!(
        store.get_certificate("", &[1]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.commit(WriteBatch::new()).unwrap(),
        CommitReceipt::default()
    );
}

#[test]
fn many_writers_on_mixed_operations_keep_every_invariant() {
    let (_dir, store) = open();
    let store: Arc<dyn Store> = Arc::new(store);
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut counters = Vec::new();
                for i in 0..50u8 {
                    let serial = [t + 1, i + 1];
                    let r = store
                        .commit(
                            WriteBatch::new()
                                .with(WriteOp::InsertCertificate(cert("personnes", &serial, t)))
                                .with(WriteOp::BumpCounter {
                                    name: "crl".into(),
                                    min_next: None,
                                })
                                .with(WriteOp::AppendAudit(audit(
                                    u64::from(t) * 100 + u64::from(i),
                                ))),
                        )
                        .unwrap();
                    counters.push(r.counter_values[0]);
                    // Inserting the same serial again conflicts.
                    let dup = store.commit(one(WriteOp::InsertCertificate(cert(
                        "personnes",
                        &serial,
                        t,
                    ))));
                    assert!(matches!(dup, Err(StoreError::Conflict(_))));
                }
                counters
            })
        })
        .collect();
    let counters: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let unique: HashSet<_> = counters.iter().collect();
    assert_eq!(unique.len(), 200);
    assert_eq!(store.counter("crl").unwrap(), 200);
    assert_eq!(store.audit_len().unwrap(), 200);
    assert_eq!(
        store
            .list_certificates(Some("personnes"), None, 1000)
            .unwrap()
            .certificates
            .len(),
        200
    );
    for t in 0..4u8 {
        assert_eq!(store.certificates_by_spki(&[t; 32]).unwrap().len(), 50);
    }
}

#[test]
fn the_certificates_version_moves_with_every_certificate_change_and_only_then() {
    let (_d, store) = open();
    let v0 = store
        .certificates_version()
        .expect("the store tells its version");
    store.commit(one(WriteOp::AppendAudit(audit(1)))).unwrap();
    store
        .commit(one(WriteOp::PutMeta {
            key: "k".into(),
            value: b"v".to_vec(),
        }))
        .unwrap();
    assert_eq!(
        store.certificates_version(),
        Some(v0),
        "no certificate changed"
    );

    insert(&store, &cert("ca", &[1], 1));
    let v1 = store.certificates_version().unwrap();
    assert_ne!(v1, v0, "an insertion changes the version");

    store
        .commit(one(set_status("ca", &[1], revoked(1_700_000_500, 1))))
        .unwrap();
    let v2 = store.certificates_version().unwrap();
    assert_ne!(v2, v1, "a status change changes the version");

    // A refused commit changed nothing, so the version stays.
    assert!(
        store
            .commit(one(set_status("ca", &[9], revoked(1, 1))))
            .is_err()
    );
    assert_eq!(store.certificates_version(), Some(v2));
}

#[test]
fn named_table_records_with_preconditions() {
    let (_dir, store) = open();
    store
        .commit(WriteBatch::new().with(put("cards", b"A1", b"v1", Expect::Absent)))
        .unwrap();
    assert_eq!(
        store.get_record("cards", b"A1").unwrap(),
        Some(b"v1".to_vec())
    );
    // Same key in another table is another record.
    assert_eq!(store.get_record("nodes", b"A1").unwrap(), None);

    // Absent on an existing record: conflict, and nothing else in the batch is applied.
    let batch = WriteBatch::new()
        .with(put("cards", b"B2", b"v", Expect::Any))
        .with(put("cards", b"A1", b"v2", Expect::Absent));
    assert!(matches!(store.commit(batch), Err(StoreError::Conflict(m)) if m.contains("A1")));
    assert_eq!(store.get_record("cards", b"B2").unwrap(), None);

    // Compare-and-set.
    let stale = put("cards", b"A1", b"v3", Expect::Value(b"old".to_vec()));
    assert!(matches!(
        store.commit(WriteBatch::new().with(stale)),
        Err(StoreError::Conflict(_))
    ));
    store
        .commit(WriteBatch::new().with(put("cards", b"A1", b"v3", Expect::Value(b"v1".to_vec()))))
        .unwrap();
    assert_eq!(
        store.get_record("cards", b"A1").unwrap(),
        Some(b"v3".to_vec())
    );

    // Delete with Present; a second delete with Present conflicts.
    let del = || WriteOp::DeleteRecord {
        table: "cards".into(),
        key: b"A1".to_vec(),
        expect: Expect::Present,
    };
    store.commit(WriteBatch::new().with(del())).unwrap();
    assert_eq!(store.get_record("cards", b"A1").unwrap(), None);
    assert!(matches!(
        store.commit(WriteBatch::new().with(del())),
        Err(StoreError::Conflict(_))
    ));

    // Limits.
    let big = put("cards", b"x", &vec![0u8; MAX_VALUE_LEN + 1], Expect::Any);
    assert!(matches!(
        store.commit(WriteBatch::new().with(big)),
        Err(StoreError::Invalid(_))
    ));
    let long_key = put(
        "cards",
        &[b'k'; cps_store::MAX_RECORD_KEY_LEN + 1],
        b"v",
        Expect::Any,
    );
    assert!(matches!(
        store.commit(WriteBatch::new().with(long_key)),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.get_record("", b"k"),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn named_table_scans_are_ordered_prefixed_and_paged() {
    let (dir, store) = open();
    let mut batch = WriteBatch::new();
    for k in ["p/3", "p/1", "p/2", "q/1", "p"] {
        batch.push(put("t", k.as_bytes(), k.as_bytes(), Expect::Any));
    }
    // A table whose name extends "t" must not leak into scans of "t".
    batch.push(put("t2", b"p/0", b"other", Expect::Any));
    store.commit(batch).unwrap();

    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| {
        rows.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.scan_records("t", b"p/", None, 10).unwrap()),
        ["p/1", "p/2", "p/3"]
    );
    assert_eq!(
        keys(store.scan_records("t", b"", None, 10).unwrap()),
        ["p", "p/1", "p/2", "p/3", "q/1"]
    );
    let first = store.scan_records("t", b"p/", None, 2).unwrap();
    assert_eq!(keys(first.clone()), ["p/1", "p/2"]);
    let after = first.last().unwrap().0.clone();
    assert_eq!(
        keys(store.scan_records("t", b"p/", Some(&after), 2).unwrap()),
        ["p/3"]
    );
    // Survives a reopen.
    drop(store);
    let store = dir.open();
    assert_eq!(
        store.get_record("t2", b"p/0").unwrap(),
        Some(b"other".to_vec())
    );
}

#[test]
fn record_deletes_honour_their_preconditions_and_scans_reach_the_top_bytes() {
    let (_dir, store) = open();
    let del = |key: &[u8], expect| WriteOp::DeleteRecord {
        table: "t".into(),
        key: key.to_vec(),
        expect,
    };
    store
        .commit(
            WriteBatch::new()
                .with(put("t", b"a", b"1", Expect::Absent))
                .with(put("t", &[0xff, 0xff], b"top", Expect::Any))
                .with(put("t", &[0xff], b"ff", Expect::Present).clone()),
        )
        .unwrap_err();
    // Present on a missing record failed the whole batch.
    assert_eq!(store.get_record("t", b"a").unwrap(), None);
    store
        .commit(
            WriteBatch::new()
                .with(put("t", b"a", b"1", Expect::Absent))
                .with(put("t", &[0xff, 0xff], b"top", Expect::Any))
                .with(put("t", &[0xff], b"ff", Expect::Any)),
        )
        .unwrap();
    assert!(matches!(
        store.commit(one(del(b"a", Expect::Absent))),
        Err(StoreError::Conflict(m)) if m.contains("already exists")
    ));
    assert!(matches!(
        store.commit(one(del(b"a", Expect::Value(b"2".to_vec())))),
        Err(StoreError::Conflict(m)) if m.contains("changed concurrently")
    ));
    store.commit(one(del(b"nope", Expect::Absent))).unwrap();
    store
        .commit(one(del(b"a", Expect::Value(b"1".to_vec()))))
        .unwrap();
    assert_eq!(store.get_record("t", b"a").unwrap(), None);
    assert!(matches!(
        store.commit(one(del(b"a", Expect::Value(b"1".to_vec())))),
        Err(StoreError::Conflict(m)) if m.contains("does not exist")
    ));
    // A prefix of 0xff bytes has no upper bound: every key from it on.
    let rows = store.scan_records("t", &[0xff], None, 10).unwrap();
    assert_eq!(
        rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![vec![0xff], vec![0xff, 0xff]]
    );
    assert_eq!(
        store.scan_records("t", &[0xff], Some(&[0xff]), 10).unwrap(),
        vec![(vec![0xff, 0xff], b"top".to_vec())]
    );
}

#[test]
fn claims_are_single_use_until_they_expire() {
    let (_dir, store) = open();
    let now = 1_700_000_000;
    let k = |s: &str| s.as_bytes().to_vec();
    assert_eq!(
        store
            .claim(
                "replay",
                &[(k("a"), now + 10), (k("b"), now + 20), (k("a"), now + 10)],
                now
            )
            .unwrap(),
        vec![true, true, false]
    );
    assert_eq!(
        store
            .claim("replay", &[(k("a"), now + 30)], now + 9)
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        store
            .claim("other", &[(k("a"), now + 30)], now + 9)
            .unwrap(),
        vec![true]
    );
    // Expired at `now` (expires <= now): claimable again, once.
    assert_eq!(
        store
            .claim(
                "replay",
                &[(k("a"), now + 40), (k("b"), now + 40)],
                now + 10
            )
            .unwrap(),
        vec![true, false]
    );
    assert_eq!(
        store
            .claim("replay", &[(k("a"), now + 50)], now + 11)
            .unwrap(),
        vec![false]
    );
    assert!(store.claim("replay", &[], now).unwrap().is_empty());
    for bad in [(Vec::new(), now + 1), (k("c"), now)] {
        assert!(matches!(
            store.claim("replay", &[bad], now),
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(
        store.claim("replay", &[(k("c"), now + 1)], now).unwrap(),
        vec![true],
        "a refused call recorded nothing"
    );
}
