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
