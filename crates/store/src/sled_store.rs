//! The sled backend.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::error::StoreError;
use crate::group_commit::{CommitStats, GroupCommit};
use crate::keys;
use crate::model::{
    AuditEntry, AuditRecord, BlockedKey, CertCursor, CertStatus, CertificatePage,
    CertificateRecord, CommitReceipt, Expect, MAX_VALUE_LEN, RevokedEntry, WriteBatch, WriteOp,
};
use crate::{SCHEMA_VERSION, Store};

/// Tree names (one per SQL table).
pub(crate) mod tree {
    /// Internal bookkeeping: schema version, last audit sequence number.
    pub const INTERNAL: &str = "store";
    pub const CERTIFICATES: &str = "certificates";
    pub const CERTIFICATES_BY_SPKI: &str = "certificates_by_spki";
    pub const REVOKED: &str = "revoked_certificates";
    pub const BLOCKED_KEYS: &str = "blocked_keys";
    pub const COUNTERS: &str = "counters";
    pub const AUDIT: &str = "audit";
    pub const META: &str = "meta";
    pub const RECORDS: &str = "records";
    /// Claims of [`Store::claim`](crate::Store::claim): claim key → expiry.
    pub const CLAIMS: &str = "claims";
    /// Index of the claims by expiry, for the purge: expiry ‖ claim key → ().
    pub const CLAIMS_BY_EXPIRY: &str = "claims_by_expiry";
}

/// Keys of the internal tree.
pub(crate) const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";
const AUDIT_LAST_SEQ_KEY: &[u8] = b"audit_last_seq";

/// sled's segment size. sled writes a tree node larger than a quarter of a segment to a separate
/// blob file, which it never fsyncs; 8 MiB segments put that threshold at 2 MiB, far above the
/// largest node our value size limit allows (about 17 values of at most 64 KiB). It is recorded in
/// the store's `conf` file and must never change for an existing store.
const SEGMENT_SIZE: usize = 8 << 20;

/// How acknowledged writes reach the disk. Both policies flush before `commit` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Concurrent commits share flushes (the default).
    #[default]
    GroupCommit,
    /// Every commit runs its own flush (for comparison in benchmarks).
    FlushEachCommit,
}

/// The embedded store: sled, one tree per table, with group-committed flushes.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    /// sled's log file, fsynced by us after each sled flush (see the crate docs).
    log_file: File,
    trees: Trees,
    policy: FlushPolicy,
    group: GroupCommit,
    /// Bumped after every applied commit that inserts a certificate or changes its status (see
    /// [`Store::certificates_version`]).
    cert_version: std::sync::atomic::AtomicU64,
    /// Asked before every commit (see [`SledStore::set_write_gate`]).
    gate: std::sync::OnceLock<WriteGate>,
}

/// A precondition of every commit: `Err(reason)` refuses it before anything is written.
pub type WriteGate = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Trees {
    internal: sled::Tree,
    certificates: sled::Tree,
    by_spki: sled::Tree,
    revoked: sled::Tree,
    blocked: sled::Tree,
    counters: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    records: sled::Tree,
    claims: sled::Tree,
    claims_by_expiry: sled::Tree,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A write operation checked and encoded before the transaction, so the transaction (which holds
/// sled's process-wide transaction lock) does as little as possible.
pub(crate) enum Prepared {
    InsertCertificate {
        key: Vec<u8>,
        value: Vec<u8>,
        spki_key: Vec<u8>,
        revoked: Option<Vec<u8>>,
        what: String,
    },
    SetCertificateStatus {
        key: Vec<u8>,
        status: CertStatus,
        what: String,
    },
    BlockKey {
        key: [u8; 32],
        value: Vec<u8>,
    },
    BumpCounter {
        name: String,
        min_next: Option<u64>,
    },
    AppendAudit {
        value: Vec<u8>,
    },
    PutMeta {
        key: String,
        value: Vec<u8>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        expect: Expect,
        what: String,
    },
    DeleteRecord {
        key: Vec<u8>,
        expect: Expect,
        what: String,
    },
}

/// Checks an expectation against the current value of a record (both backends).
pub(crate) fn check_expect(
    expect: &Expect,
    current: Option<&[u8]>,
    what: &str,
) -> Result<(), StoreError> {
    let ok = match (expect, current) {
        (Expect::Any, _) => true,
        (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
        (Expect::Value(want), Some(have)) => want[..] == *have,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(StoreError::Conflict(match (expect, current) {
        (Expect::Absent, Some(_)) => format!("{what} already exists"),
        (_, None) => format!("{what} does not exist"),
        _ => format!("{what} was changed concurrently"),
    }))
}

fn describe_cert(issuer: &str, serial: &[u8]) -> String {
    format!(
        "certificate with serial {} of issuer {issuer:?}",
        hex::encode(serial)
    )
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| StoreError::Invalid(format!("{what} cannot be encoded: {e}")))?;
    if bytes.len() > MAX_VALUE_LEN {
        return Err(StoreError::Invalid(format!(
            "{what} encodes to {} bytes; the limit is {MAX_VALUE_LEN}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn revoked_entry(rec: &CertificateRecord) -> Option<RevokedEntry> {
    match rec.status {
        CertStatus::Valid => None,
        CertStatus::Revoked {
            time,
            reason,
            invalidity_date,
        } => Some(RevokedEntry {
            serial: rec.serial.clone(),
            time,
            reason,
            invalidity_date,
            not_after: rec.not_after,
        }),
    }
}

pub(crate) fn prepare(op: WriteOp) -> Result<Prepared, StoreError> {
    Ok(match op {
        WriteOp::InsertCertificate(rec) => {
            let key = keys::cert_key(&rec.issuer, &rec.serial)?;
            let what = describe_cert(&rec.issuer, &rec.serial);
            let revoked = revoked_entry(&rec)
                .map(|e| encode("revocation entry", &e))
                .transpose()?;
            Prepared::InsertCertificate {
                spki_key: keys::spki_key(&rec.spki_sha256, &key),
                value: encode(&what, &rec)?,
                key,
                revoked,
                what,
            }
        }
        WriteOp::SetCertificateStatus {
            issuer,
            serial,
            status,
        } => Prepared::SetCertificateStatus {
            key: keys::cert_key(&issuer, &serial)?,
            status,
            what: describe_cert(&issuer, &serial),
        },
        WriteOp::BlockKey {
            spki_sha256,
            reason,
            at,
        } => Prepared::BlockKey {
            key: spki_sha256,
            value: encode("blocked key entry", &BlockedKey { reason, at })?,
        },
        WriteOp::BumpCounter { name, min_next } => {
            keys::check_name("counter name", &name)?;
            Prepared::BumpCounter { name, min_next }
        }
        WriteOp::AppendAudit(rec) => Prepared::AppendAudit {
            value: encode("audit record", &rec)?,
        },
        WriteOp::PutMeta { key, value } => {
            keys::check_name("meta key", &key)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(StoreError::Invalid(format!(
                    "meta value for {key:?} is {} bytes; the limit is {MAX_VALUE_LEN}",
                    value.len()
                )));
            }
            Prepared::PutMeta { key, value }
        }
        WriteOp::PutRecord {
            table,
            key,
            value,
            expect,
        } => {
            if value.len() > MAX_VALUE_LEN {
                return Err(StoreError::Invalid(format!(
                    "record of table {table:?} is {} bytes; the limit is {MAX_VALUE_LEN}",
                    value.len()
                )));
            }
            Prepared::PutRecord {
                what: describe_record(&table, &key),
                key: keys::record_key(&table, &key)?,
                value,
                expect,
            }
        }
        WriteOp::DeleteRecord { table, key, expect } => Prepared::DeleteRecord {
            what: describe_record(&table, &key),
            key: keys::record_key(&table, &key)?,
            expect,
        },
    })
}

fn describe_record(table: &str, key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(k) if !k.chars().any(char::is_control) => format!("record {k:?} of table {table:?}"),
        _ => format!("record {} of table {table:?}", hex::encode(key)),
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl SledStore {
    /// Opens (creating and initialising if needed) the store in directory `path`, with group
    /// commit. If another handle holds the store, waits up to a second for it to be released
    /// before failing with [`StoreError::Locked`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, FlushPolicy::default())
    }

    /// Opens the store with an explicit flush policy.
    pub fn open_with(path: impl AsRef<Path>, policy: FlushPolicy) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = open_db(&path)?;
        let sled_err = |e| map_sled_error(&path, e);

        // Check the version before creating any other tree: a newer store is left untouched.
        let internal = db.open_tree(tree::INTERNAL).map_err(sled_err)?;
        let found = match internal.get(SCHEMA_VERSION_KEY).map_err(sled_err)? {
            Some(v) => Some(decode_schema_version(&path, &v)?),
            None => None,
        };
        if let Some(found) = found
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Versions older than the current one would be migrated here; there are none yet.

        let log_file = File::open(path.join("db")).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let open = |name: &str| db.open_tree(name).map_err(sled_err);
        let trees = Trees {
            certificates: open(tree::CERTIFICATES)?,
            by_spki: open(tree::CERTIFICATES_BY_SPKI)?,
            revoked: open(tree::REVOKED)?,
            blocked: open(tree::BLOCKED_KEYS)?,
            counters: open(tree::COUNTERS)?,
            audit: open(tree::AUDIT)?,
            meta: open(tree::META)?,
            records: open(tree::RECORDS)?,
            claims: open(tree::CLAIMS)?,
            claims_by_expiry: open(tree::CLAIMS_BY_EXPIRY)?,
            internal,
        };
        let store = SledStore {
            path,
            db,
            log_file,
            trees,
            policy,
            group: GroupCommit::default(),
            cert_version: std::sync::atomic::AtomicU64::new(0),
            gate: std::sync::OnceLock::new(),
        };

        if found.is_none() {
            store.initialise()?;
        }
        Ok(store)
    }

    /// Writes the schema version into a new store, and makes the new files durable.
    fn initialise(&self) -> Result<(), StoreError> {
        let t = &self.trees;
        for (name, tree) in [
            (tree::CERTIFICATES, &t.certificates),
            (tree::AUDIT, &t.audit),
            (tree::COUNTERS, &t.counters),
            (tree::BLOCKED_KEYS, &t.blocked),
            (tree::META, &t.meta),
            (tree::RECORDS, &t.records),
        ] {
            if !tree.is_empty() {
                return Err(self.corrupt(format!(
                    "table {name} holds data but the store has no schema version"
                )));
            }
        }
        t.internal
            .insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())
            .map_err(|e| self.sled_error(e))?;
        self.flush_to_disk()
            .map_err(|detail| self.backend(detail))?;
        // The files sled created must survive a power loss too.
        for p in [self.path.clone(), self.path.join("conf")] {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|source| StoreError::Io {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `gate` a precondition of every commit from now on (set once): while it answers
    /// `Err(reason)`, commits fail with [`StoreError::Refused`] and nothing reaches the disk.
    /// The appliance refuses writes this way while the disk is below its reserve.
    pub fn set_write_gate(&self, gate: WriteGate) -> Result<(), StoreError> {
        self.gate
            .set(gate)
            .map_err(|_| StoreError::Invalid("the store's write gate is already set".into()))
    }

    /// Group commit counters: how many commits, how many flushes.
    pub fn commit_stats(&self) -> CommitStats {
        self.group.stats()
    }

    /// One durable flush: sled writes its buffers (`pwrite` + `sync_file_range`), then we
    /// `fdatasync` the log file, because `sync_file_range` persists neither the file size nor the
    /// drive's write cache.
    fn flush_to_disk(&self) -> Result<(), String> {
        self.db
            .flush()
            .map_err(|e| format!("sled flush failed: {e}"))?;
        self.log_file.sync_data().map_err(|e| {
            format!(
                "fdatasync of {} failed: {e}",
                self.path.join("db").display()
            )
        })
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    fn backend(&self, detail: String) -> StoreError {
        StoreError::Backend {
            path: self.path.clone(),
            detail,
        }
    }

    fn sled_error(&self, e: sled::Error) -> StoreError {
        map_sled_error(&self.path, e)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.corrupt(format!(
                "record {} of table {table} does not decode: {e}",
                hex::encode(key)
            ))
        })
    }

    fn decode_u64(&self, table: &str, key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
        keys::decode_u64(bytes).ok_or_else(|| {
            self.corrupt(format!(
                "value of {} in table {table} is {} bytes, not an 8-byte integer",
                String::from_utf8_lossy(key),
                bytes.len()
            ))
        })
    }

    /// Reads and checks the certificate stored under `key`.
    fn certificate_at(&self, key: &[u8], bytes: &[u8]) -> Result<CertificateRecord, StoreError> {
        let rec: CertificateRecord = self.decode(tree::CERTIFICATES, key, bytes)?;
        match keys::cert_key(&rec.issuer, &rec.serial) {
            Ok(k) if k == key => Ok(rec),
            _ => Err(self.corrupt(format!(
                "record {} of table {} holds {}",
                hex::encode(key),
                tree::CERTIFICATES,
                describe_cert(&rec.issuer, &rec.serial)
            ))),
        }
    }

    fn apply(&self, t: &TxTrees<'_>, ops: &[Prepared]) -> TxResult<CommitReceipt> {
        let mut receipt = CommitReceipt::default();
        for op in ops {
            match op {
                Prepared::InsertCertificate {
                    key,
                    value,
                    spki_key,
                    revoked,
                    what,
                } => {
                    if t.certificates.get(key)?.is_some() {
                        return abort(StoreError::Conflict(format!("{what} already exists")));
                    }
                    t.certificates.insert(&key[..], &value[..])?;
                    t.by_spki.insert(&spki_key[..], &[][..])?;
                    if let Some(entry) = revoked {
                        t.revoked.insert(&key[..], &entry[..])?;
                    }
                }
                Prepared::SetCertificateStatus { key, status, what } => {
                    let Some(current) = t.certificates.get(key)? else {
                        return abort(StoreError::NotFound(what.clone()));
                    };
                    let mut rec = match self.certificate_at(key, &current) {
                        Ok(rec) => rec,
                        Err(e) => return abort(e),
                    };
                    rec.status = status.clone();
                    let encoded = encode(what, &rec).and_then(|value| {
                        let entry = revoked_entry(&rec)
                            .map(|e| encode("revocation entry", &e))
                            .transpose()?;
                        Ok((value, entry))
                    });
                    let (value, entry) = match encoded {
                        Ok(v) => v,
                        Err(e) => return abort(e),
                    };
                    t.certificates.insert(&key[..], value)?;
                    match entry {
                        Some(entry) => t.revoked.insert(&key[..], entry)?,
                        None => t.revoked.remove(&key[..])?,
                    };
                }
                Prepared::BlockKey { key, value } => {
                    if t.blocked.get(key)?.is_none() {
                        t.blocked.insert(&key[..], &value[..])?;
                    }
                }
                Prepared::BumpCounter { name, min_next } => {
                    let current = match t.counters.get(name.as_bytes())? {
                        None => 0,
                        Some(v) => match self.decode_u64(tree::COUNTERS, name.as_bytes(), &v) {
                            Ok(n) => n,
                            Err(e) => return abort(e),
                        },
                    };
                    let Some(next) = current.checked_add(1) else {
                        return abort(StoreError::Invalid(format!(
                            "counter {name:?} is exhausted"
                        )));
                    };
                    let next = next.max(min_next.unwrap_or(0));
                    t.counters.insert(name.as_bytes(), &next.to_be_bytes())?;
                    receipt.counter_values.push(next);
                }
                Prepared::AppendAudit { value } => {
                    let last = match t.internal.get(AUDIT_LAST_SEQ_KEY)? {
                        None => 0,
                        Some(v) => match self.decode_u64(tree::INTERNAL, AUDIT_LAST_SEQ_KEY, &v) {
                            Ok(n) => n,
                            Err(e) => return abort(e),
                        },
                    };
                    let seq = last + 1;
                    t.audit.insert(&keys::seq_key(seq), &value[..])?;
                    t.internal.insert(AUDIT_LAST_SEQ_KEY, &seq.to_be_bytes())?;
                    receipt.audit_seqs.push(seq);
                }
                Prepared::PutMeta { key, value } => {
                    t.meta.insert(key.as_bytes(), &value[..])?;
                }
                Prepared::PutRecord {
                    key,
                    value,
                    expect,
                    what,
                } => {
                    if *expect != Expect::Any {
                        let current = t.records.get(key)?;
                        if let Err(e) = check_expect(expect, current.as_deref(), what) {
                            return abort(e);
                        }
                    }
                    t.records.insert(&key[..], &value[..])?;
                }
                Prepared::DeleteRecord { key, expect, what } => {
                    if *expect != Expect::Any {
                        let current = t.records.get(key)?;
                        if let Err(e) = check_expect(expect, current.as_deref(), what) {
                            return abort(e);
                        }
                    }
                    t.records.remove(&key[..])?;
                }
            }
        }
        Ok(receipt)
    }
}

/// The transactional views of the trees, named.
struct TxTrees<'a> {
    internal: &'a TransactionalTree,
    certificates: &'a TransactionalTree,
    by_spki: &'a TransactionalTree,
    revoked: &'a TransactionalTree,
    blocked: &'a TransactionalTree,
    counters: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    records: &'a TransactionalTree,
}

/// How long `open` waits for the file lock. sled releases it from a background thread a moment
/// after the last handle is dropped, so a close-then-reopen in one process may briefly find it
/// held.
const LOCK_WAIT: Duration = Duration::from_secs(1);

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .segment_size(SEGMENT_SIZE)
            .open()
            .map_err(|e| map_open_error(path, e));
        match opened {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn decode_schema_version(path: &Path, bytes: &[u8]) -> Result<u32, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let arr: [u8; 4] = bytes.try_into().map_err(|_| {
        corrupt(format!(
            "the schema version is {} bytes long, not 4",
            bytes.len()
        ))
    })?;
    match u32::from_be_bytes(arr) {
        0 => Err(corrupt(
            "the schema version is 0, which no release wrote".into(),
        )),
        v => Ok(v),
    }
}

fn map_open_error(path: &Path, e: sled::Error) -> StoreError {
    // sled 0.34.7 reports a held file lock as `Io(Other, "could not acquire lock on ...")`.
    if let sled::Error::Io(io) = &e
        && io.to_string().contains("could not acquire lock")
    {
        return StoreError::Locked {
            path: path.to_path_buf(),
        };
    }
    map_sled_error(path, e)
}

fn map_sled_error(path: &Path, e: sled::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Io(source) => StoreError::Io { path, source },
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path,
            detail: format!("the storage engine found a damaged log entry at {at:?}"),
        },
        other => StoreError::Backend {
            path,
            detail: other.to_string(),
        },
    }
}

impl Store for SledStore {
    fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError> {
        if batch.is_empty() {
            return Ok(CommitReceipt::default());
        }
        if let Some(detail) = self.group.failure() {
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
                detail,
            });
        }
        if let Some(gate) = self.gate.get() {
            gate().map_err(StoreError::Refused)?;
        }
        let ops = batch
            .into_ops()
            .into_iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;

        let t = &self.trees;
        let result = (
            &t.internal,
            &t.certificates,
            &t.by_spki,
            &t.revoked,
            &t.blocked,
            &t.counters,
            &t.audit,
            &t.meta,
            &t.records,
        )
            .transaction(
                |(
                    internal,
                    certificates,
                    by_spki,
                    revoked,
                    blocked,
                    counters,
                    audit,
                    meta,
                    records,
                )| {
                    let views = TxTrees {
                        internal,
                        certificates,
                        by_spki,
                        revoked,
                        blocked,
                        counters,
                        audit,
                        meta,
                        records,
                    };
                    self.apply(&views, &ops)
                },
            );
        let receipt = match result {
            Ok(receipt) => receipt,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(self.sled_error(e)),
        };
        // After the change is visible to readers and before it is acknowledged: a cache entry
        // tagged with the previous version can no longer be used once this commit returns.
        if ops.iter().any(|op| {
            matches!(
                op,
                Prepared::InsertCertificate { .. } | Prepared::SetCertificateStatus { .. }
            )
        }) {
            self.cert_version
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }

        let flush = || self.flush_to_disk();
        let durable = match self.policy {
            FlushPolicy::GroupCommit => self.group.make_durable(&flush),
            FlushPolicy::FlushEachCommit => self.group.flush_alone(&flush),
        };
        durable.map_err(|detail| StoreError::Poisoned {
            path: self.path.clone(),
            detail,
        })?;
        Ok(receipt)
    }

    fn certificates_version(&self) -> Option<u64> {
        Some(self.cert_version.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn write_failure(&self) -> Option<String> {
        self.group.failure()
    }

    fn get_certificate(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let key = keys::cert_key(issuer, serial)?;
        match self
            .trees
            .certificates
            .get(&key)
            .map_err(|e| self.sled_error(e))?
        {
            None => Ok(None),
            Some(v) => self.certificate_at(&key, &v).map(Some),
        }
    }

    fn certificates_by_spki(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees.by_spki.scan_prefix(spki_sha256) {
            let (k, _) = entry.map_err(|e| self.sled_error(e))?;
            let cert_key = &k[32..];
            if keys::split_cert_key(cert_key).is_none() {
                return Err(self.corrupt(format!(
                    "key {} of table {} is malformed",
                    hex::encode(&k),
                    tree::CERTIFICATES_BY_SPKI
                )));
            }
            let v = self
                .trees
                .certificates
                .get(cert_key)
                .map_err(|e| self.sled_error(e))?
                .ok_or_else(|| {
                    self.corrupt(format!(
                        "index entry {} of table {} points to a missing certificate",
                        hex::encode(&k),
                        tree::CERTIFICATES_BY_SPKI
                    ))
                })?;
            let rec = self.certificate_at(cert_key, &v)?;
            if &rec.spki_sha256 != spki_sha256 {
                return Err(self.corrupt(format!(
                    "index entry {} of table {} points to a certificate with another key",
                    hex::encode(&k),
                    tree::CERTIFICATES_BY_SPKI
                )));
            }
            out.push(rec);
        }
        Ok(out)
    }

    fn list_certificates(
        &self,
        issuer: Option<&str>,
        after: Option<&CertCursor>,
        limit: usize,
    ) -> Result<CertificatePage, StoreError> {
        if limit == 0 {
            return Err(StoreError::Invalid(
                "a page must hold at least one certificate".into(),
            ));
        }
        let prefix = match issuer {
            Some(i) => {
                keys::check_name("certificate issuer", i)?;
                keys::issuer_prefix(i)
            }
            None => Vec::new(),
        };
        let lower = match after {
            Some(c) => {
                let k = keys::cert_key(&c.issuer, &c.serial)?;
                if k < prefix {
                    Bound::Included(prefix.clone())
                } else {
                    Bound::Excluded(k)
                }
            }
            None => Bound::Included(prefix.clone()),
        };
        let mut certificates = Vec::new();
        let mut more = false;
        for entry in self
            .trees
            .certificates
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
        {
            let (k, v) = entry.map_err(|e| self.sled_error(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            if certificates.len() == limit {
                more = true;
                break;
            }
            certificates.push(self.certificate_at(&k, &v)?);
        }
        let next = match certificates.last() {
            Some(last) if more => Some(CertCursor {
                issuer: last.issuer.clone(),
                serial: last.serial.clone(),
            }),
            _ => None,
        };
        Ok(CertificatePage { certificates, next })
    }

    fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        keys::check_name("certificate issuer", issuer)?;
        self.trees
            .revoked
            .scan_prefix(keys::issuer_prefix(issuer))
            .map(|entry| {
                let (k, v) = entry.map_err(|e| self.sled_error(e))?;
                self.decode(tree::REVOKED, &k, &v)
            })
            .collect()
    }

    fn blocked_key(&self, spki_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, StoreError> {
        match self
            .trees
            .blocked
            .get(spki_sha256)
            .map_err(|e| self.sled_error(e))?
        {
            None => Ok(None),
            Some(v) => self.decode(tree::BLOCKED_KEYS, spki_sha256, &v).map(Some),
        }
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        keys::check_name("counter name", name)?;
        match self
            .trees
            .counters
            .get(name.as_bytes())
            .map_err(|e| self.sled_error(e))?
        {
            None => Ok(0),
            Some(v) => self.decode_u64(tree::COUNTERS, name.as_bytes(), &v),
        }
    }

    fn audit_range(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in self.trees.audit.range(keys::seq_key(from_seq.max(1))..) {
            let (k, v) = entry.map_err(|e| self.sled_error(e))?;
            let seq = keys::decode_u64(&k).ok_or_else(|| {
                self.corrupt(format!(
                    "key {} of table {} is not a sequence number",
                    hex::encode(&k),
                    tree::AUDIT
                ))
            })?;
            let record: AuditRecord = self.decode(tree::AUDIT, &k, &v)?;
            out.push(AuditEntry { seq, record });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        match self
            .trees
            .internal
            .get(AUDIT_LAST_SEQ_KEY)
            .map_err(|e| self.sled_error(e))?
        {
            None => Ok(0),
            Some(v) => self.decode_u64(tree::INTERNAL, AUDIT_LAST_SEQ_KEY, &v),
        }
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        keys::check_name("meta key", key)?;
        Ok(self
            .trees
            .meta
            .get(key.as_bytes())
            .map_err(|e| self.sled_error(e))?
            .map(|v| v.to_vec()))
    }

    fn get_record(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::record_key(table, key)?;
        Ok(self
            .trees
            .records
            .get(key)
            .map_err(|e| self.sled_error(e))?
            .map(|v| v.to_vec()))
    }

    fn scan_records(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<crate::RecordRow>, StoreError> {
        let full_prefix = keys::record_key(table, prefix)?;
        let table_len = full_prefix.len() - prefix.len();
        let start = match after {
            Some(a) => {
                let mut k = keys::record_key(table, a)?;
                k.push(0); // the smallest key strictly greater than `after`
                k
            }
            None => full_prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.trees.records.range(start..) {
            let (k, v) = item.map_err(|e| self.sled_error(e))?;
            if !k.starts_with(&full_prefix) || out.len() >= limit.max(1) {
                break;
            }
            out.push((k[table_len..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn claim(
        &self,
        table: &str,
        keys: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.claim_keys(table, keys, now)
    }
}

mod claims;
#[cfg(test)]
mod tests;
