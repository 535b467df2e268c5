//! Durable state of the cps-trust appliance.
//!
//! [`Store`] is the interface: one write method, [`Store::commit`], which applies a
//! [`WriteBatch`] of typed operations all-or-nothing, and typed reads. [`SledStore`] is the
//! embedded backend (one machine); [`PgStore`] keeps the same tables in PostgreSQL, shared by
//! several appliance nodes (its module docs map each table to SQL and state the rules across
//! nodes: row locks, failover, the linearizable [`Store::certificates_version`]). The same test
//! suite (`tests/suite/ops.rs`) runs against both. The tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `certificates` | (issuer, serial as an integer) | [`CertificateRecord`] |
//! | `certificates_by_spki` | (spki_sha256, issuer, serial) | — (index) |
//! | `revoked_certificates` | (issuer, serial) | [`RevokedEntry`] (a partial index in SQL) |
//! | `blocked_keys` | spki_sha256 | [`BlockedKey`] |
//! | `counters` | name | u64 |
//! | `audit` | seq | [`AuditRecord`] (with the node that committed it: [`NodeStore`]) |
//! | `meta` | key | bytes |
//! | `records` | (table, key) | bytes: the named tables of higher layers (professionals, cards, nodes...) |
//! | `claims` | (table, key) | expiry: single-use keys ([`Store::claim`]), with an index by expiry |
//!
//! # What "acknowledged" means
//!
//! When `commit` returns `Ok`, the whole batch is on disk (on PostgreSQL: committed under the
//! server's `synchronous_commit`, so with a synchronous standby on both servers' disks): a crash
//! or power loss after that point cannot lose it. When it returns `Conflict`, `NotFound` or `Invalid`, nothing was written. Any
//! other error leaves the outcome unknown (the batch may have been applied in memory and may or
//! may not reach the disk); after a failed flush the store refuses further writes
//! ([`StoreError::Poisoned`]). Reads may see a batch a moment before its `commit` returns, while
//! its flush is in progress. [`StoreError::ReadOnly`] (the database is a standby) wrote nothing;
//! [`StoreError::Unavailable`] (the database is unreachable) wrote nothing unless its message
//! says the connection broke during the commit. Refused, Poisoned, ReadOnly and Unavailable are
//! all "try again later" for a caller: 503, OCSP `tryLater`.
//!
//! # A full disk, or any other write error (sled)
//!
//! sled 0.34.7 keeps the first I/O error its log writer meets (ENOSPC included) as a
//! process-wide "global error" and fails every later write with it; only reopening the database
//! clears it (`PageCache::start`). The store adds its own rule on top: after a failed flush it
//! refuses every write ([`StoreError::Poisoned`], [`Store::write_failure`]). Neither recovers by
//! itself, so a store that met a write error needs a restart of its process. Errors are returned,
//! never panics; reads keep working. The appliance therefore keeps the store's disk from filling
//! up in the first place (a reserve checked before every commit through
//! [`SledStore::set_write_gate`], [`StoreError::Refused`]).
//!
//! # Group commit (sled)
//!
//! sled flushes on its own only every 500 ms; the store turns that off and flushes itself. A
//! writer applies its batch in a sled multi-tree transaction, then waits until a flush that
//! started after its write has completed. Whoever finds no flush running leads the next one, for
//! every writer waiting, so N concurrent writers cost far fewer than N flushes.
//!
//! sled 0.34.7's `flush()` writes its buffers with `pwrite` and then, on Linux, calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, not `fsync`: that persists neither the
//! file's new size nor the drive's volatile cache. Each of our flushes therefore also runs
//! `fdatasync` on sled's log file. sled also writes any tree node larger than a quarter of a
//! segment to a separate "blob" file without syncing it; the store uses 8 MiB segments and limits
//! each value to [`MAX_VALUE_LEN`] so that never happens.
//!
//! sled 0.34 runs every transaction under one process-wide lock, and its `flush()` holds the
//! shared side of that lock while it writes: transactions wait during that part of a flush (not
//! during our `fdatasync`). Writers therefore queue up behind a flush and the next flush takes
//! them all, which is where the grouping comes from.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod fresh;
mod group_commit;
mod keys;
mod model;
mod node;
mod pg_store;
mod sled_store;

pub use error::StoreError;
pub use fresh::FreshVersion;
pub use group_commit::CommitStats;
pub use model::{
    AuditEntry, AuditRecord, BlockedKey, CertCursor, CertStatus, CertificatePage,
    CertificateRecord, CommitReceipt, Expect, MAX_NAME_LEN, MAX_RECORD_KEY_LEN, MAX_SERIAL_LEN,
    MAX_VALUE_LEN, RevokedEntry, WriteBatch, WriteOp,
};
pub use node::{AuditObserver, MAX_NODE_ID_LEN, NodeStore, valid_node_id};
pub use pg_store::{PG_SCHEMA_VERSION, PgOptions, PgStore};
pub use sled_store::{FlushPolicy, SledStore, WriteGate};

/// One record of a named table: (key, value).
pub type RecordRow = (Vec<u8>, Vec<u8>);

/// Schema version written by this build. A store with a higher version is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// The appliance's durable state. Object safe: use it as `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Applies `batch` all-or-nothing and returns once it is durable. See the crate docs for what
    /// an error means.
    fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError>;

    /// The certificate `(issuer, serial)`, if any.
    fn get_certificate(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, StoreError>;

    /// Why the store refuses every write until it is reopened (a flush to disk failed), if it
    /// does. `None` for a store that can write.
    fn write_failure(&self) -> Option<String> {
        None
    }

    /// A number that changes whenever a commit inserts a certificate or changes a certificate's
    /// status, for caches of certificate state: a value read through
    /// [`get_certificate`](Store::get_certificate) after this returned `v` may be reused while it
    /// still returns `v`, and never after a commit that changed a certificate has returned.
    /// `None`: this store cannot tell, do not cache.
    fn certificates_version(&self) -> Option<u64> {
        None
    }

    /// Every certificate (of any issuer) for the public key whose SPKI hashes to `spki_sha256`.
    fn certificates_by_spki(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<CertificateRecord>, StoreError>;

    /// Up to `limit` (at least 1) certificates, of one issuer or all, ordered by (issuer, serial),
    /// starting after `after`. Pass the returned `next` to get the following page.
    fn list_certificates(
        &self,
        issuer: Option<&str>,
        after: Option<&CertCursor>,
        limit: usize,
    ) -> Result<CertificatePage, StoreError>;

    /// Every revoked certificate of `issuer`, ordered by serial: the content of its CRL.
    fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError>;

    /// The blocklist entry of a public key, if it is blocked.
    fn blocked_key(&self, spki_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, StoreError>;

    /// Whether a public key is blocked.
    fn is_key_blocked(&self, spki_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.blocked_key(spki_sha256)?.is_some())
    }

    /// Current value of a counter; 0 if it was never bumped.
    fn counter(&self, name: &str) -> Result<u64, StoreError>;

    /// Up to `limit` audit entries, from sequence number `from_seq` on.
    fn audit_range(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Number of audit entries, which is also the sequence number of the last one.
    fn audit_len(&self) -> Result<u64, StoreError>;

    /// An appliance metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The record `key` of the named table `table`, if any.
    ///
    /// Named tables hold the state of higher layers (professionals, cards, nodes...): each layer
    /// owns its table names and value encoding, and keeps its own secondary indexes as further
    /// tables written in the same batch.
    fn get_record(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` (at least 1) records of `table` whose key starts with `prefix`, in key order,
    /// starting strictly after the key `after` when given.
    fn scan_records(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError>;

    /// Claims single-use keys of the claim table `table` (assertion IDs, login challenges...),
    /// each until its expiry: `keys` holds `(key, expires)` pairs, `expires` and `now` in Unix
    /// seconds. The answer has one entry per key, in order: `true` if the key was newly recorded
    /// (no record, or its record had expired at `now`, i.e. `expires <= now`), `false` if an
    /// unexpired record exists (a key repeated within one call is `true` at most once).
    ///
    /// Atomic per key: of concurrent claims of one key, from any number of threads or of
    /// processes sharing the backend, at most one gets `true`. A `true` is durable when this
    /// returns, like a committed batch (see the crate docs); a `false` writes nothing that must
    /// survive. Claim tables are separate from the named tables of
    /// [`get_record`](Store::get_record). Expired claims are purged by the store at its own pace.
    ///
    /// Refused with [`StoreError::Invalid`] (nothing recorded): an invalid table name (as for
    /// named tables), an empty key or one longer than [`MAX_RECORD_KEY_LEN`], an `expires` that
    /// is not after `now`. The write errors of [`commit`](Store::commit) apply.
    fn claim(
        &self,
        table: &str,
        keys: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError>;
}
