//! Tests that tamper with the on-disk layout directly.

use super::*;

/// Opens the store's sled database directly (waiting, like `open_db`, for a just-dropped handle
/// to release the lock).
fn raw_db(path: &Path) -> sled::Db {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .segment_size(SEGMENT_SIZE)
            .open()
        {
            Err(e)
                if Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn an_empty_directory_is_initialised_with_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    let db = raw_db(dir.path());
    let v = db
        .open_tree(tree::INTERNAL)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(&v[..], &SCHEMA_VERSION.to_be_bytes());
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = raw_db(dir.path());
        let internal = db.open_tree(tree::INTERNAL).unwrap();
        internal
            .insert(SCHEMA_VERSION_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains(&format!("up to {SCHEMA_VERSION}")), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    // The newer store keeps its version.
    let db = raw_db(dir.path());
    let v = db
        .open_tree(tree::INTERNAL)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(&v[..], &(SCHEMA_VERSION + 1).to_be_bytes());
}

#[test]
fn a_malformed_schema_version_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_db(dir.path());
        db.open_tree(tree::INTERNAL)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, &[1, 2, 3][..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("3 bytes"), "{err}");
}

#[test]
fn data_without_a_schema_version_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_db(dir.path());
        db.open_tree(tree::AUDIT)
            .unwrap()
            .insert(1u64.to_be_bytes(), &b"{}"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

fn corrupt_one(table: &str, key: &[u8], value: &[u8]) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = raw_db(dir.path());
        db.open_tree(table).unwrap().insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, dir: &Path) {
    match r {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    let key = keys::cert_key("personnes", &[7]).unwrap();
    let (dir, store) = corrupt_one(tree::CERTIFICATES, &key, b"\xff not json");
    assert_corrupt(store.get_certificate("personnes", &[7]), dir.path());
    assert_corrupt(store.list_certificates(None, None, 10), dir.path());
    // A write that must read the damaged record fails the same way, and writes nothing.
    let set = WriteOp::SetCertificateStatus {
        issuer: "personnes".into(),
        serial: vec![7],
        status: CertStatus::Revoked {
            time: 1,
            reason: 1,
            invalidity_date: None,
        },
    };
    let with_audit = WriteBatch::new().with(WriteOp::AppendAudit(AuditRecord {
        time: 1,
        kind: "k".into(),
        actor: "a".into(),
        outcome: "o".into(),
        detail: serde_json::Value::Null,
        node: None,
    }));
    assert_corrupt(store.commit(with_audit.with(set)), dir.path());
    assert_eq!(store.audit_len().unwrap(), 0);
}

#[test]
fn a_record_under_the_wrong_key_is_corruption() {
    let rec = CertificateRecord {
        issuer: "personnes".into(),
        serial: vec![8],
        subject: "CN=x".into(),
        profile: "p".into(),
        holder: None,
        spki_sha256: [0; 32],
        not_before: 0,
        not_after: 1,
        der: vec![1],
        status: CertStatus::Valid,
        issued_at: 0,
    };
    let key = keys::cert_key("personnes", &[7]).unwrap();
    let (dir, store) = corrupt_one(tree::CERTIFICATES, &key, &serde_json::to_vec(&rec).unwrap());
    assert_corrupt(store.get_certificate("personnes", &[7]), dir.path());
}

#[test]
fn corrupt_counters_audit_and_index_entries_are_errors() {
    let (dir, store) = corrupt_one(tree::COUNTERS, b"crl", &[1, 2]);
    assert_corrupt(store.counter("crl"), dir.path());
    let bump = WriteBatch::new().with(WriteOp::BumpCounter {
        name: "crl".into(),
        min_next: None,
    });
    assert_corrupt(store.commit(bump), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(tree::AUDIT, &1u64.to_be_bytes(), b"[1,2]");
    assert_corrupt(store.audit_range(1, 10), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(tree::AUDIT, b"short", b"{}");
    assert_corrupt(store.audit_range(0, 10), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(tree::INTERNAL, AUDIT_LAST_SEQ_KEY, b"x");
    assert_corrupt(store.audit_len(), dir.path());
    drop(store);

    let mut k = vec![9u8; 32];
    k.extend_from_slice(&keys::cert_key("personnes", &[1]).unwrap());
    let (dir, store) = corrupt_one(tree::CERTIFICATES_BY_SPKI, &k, b"");
    assert_corrupt(store.certificates_by_spki(&[9; 32]), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(tree::CERTIFICATES_BY_SPKI, &[9u8; 33], b"");
    assert_corrupt(store.certificates_by_spki(&[9; 32]), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(tree::BLOCKED_KEYS, &[3u8; 32], b"nope");
    assert_corrupt(store.is_key_blocked(&[3; 32]), dir.path());
    drop(store);

    let (dir, store) = corrupt_one(
        tree::REVOKED,
        &keys::cert_key("personnes", &[1]).unwrap(),
        b"{\"serial\":1}",
    );
    assert_corrupt(store.revoked_certificates("personnes"), dir.path());
}

fn put(table: &str, key: &[u8], value: &[u8], expect: Expect) -> WriteOp {
    WriteOp::PutRecord {
        table: table.into(),
        key: key.to_vec(),
        value: value.to_vec(),
        expect,
    }
}

#[test]
fn named_table_records_with_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
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
        &[b'k'; crate::MAX_RECORD_KEY_LEN + 1],
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
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
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
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.get_record("t2", b"p/0").unwrap(),
        Some(b"other".to_vec())
    );
}
