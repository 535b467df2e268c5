//! Records, write operations and read results.
//!
//! Each record is a plain serde struct that maps to one SQL table (see the crate docs). The serde
//! form of a record is also its on-disk form in the sled backend (JSON, byte strings as hex), so a
//! change to these types is a schema change: bump [`crate::SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};

/// An issued certificate.
///
/// Primary key: (`issuer`, `serial`). The serial is compared as an unsigned big-endian integer:
/// leading zero bytes are not significant, so `[0x00, 0x80]` and `[0x80]` name the same certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// The issuing CA's identifier, e.g. `"personnes"`. Non-empty, no NUL byte, at most
    /// [`MAX_NAME_LEN`] bytes.
    pub issuer: String,
    /// Serial number: the content bytes of the DER INTEGER, big-endian, positive, at most
    /// [`MAX_SERIAL_LEN`] significant bytes.
    #[serde(with = "hex::serde")]
    pub serial: Vec<u8>,
    /// Subject distinguished name, as text.
    pub subject: String,
    /// Certificate profile name.
    pub profile: String,
    /// Holder (e.g. a professional's identifier), when the certificate belongs to a person.
    pub holder: Option<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    #[serde(with = "hex::serde")]
    pub spki_sha256: [u8; 32],
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The whole certificate, DER.
    #[serde(with = "hex::serde")]
    pub der: Vec<u8>,
    /// Revocation status.
    pub status: CertStatus,
    /// When the certificate was recorded as issued, Unix seconds.
    pub issued_at: i64,
}

/// Revocation status of a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CertStatus {
    /// Not revoked.
    Valid,
    /// Revoked (a certificateHold is a revocation with reason 6 that may later go back to `Valid`).
    Revoked {
        /// Revocation time, Unix seconds.
        time: i64,
        /// RFC 5280 CRLReason code.
        reason: u8,
        /// RFC 5280 invalidity date, Unix seconds.
        invalidity_date: Option<i64>,
    },
}

/// One entry of an issuer's revocation list, as needed to build a CRL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    /// Serial number, as stored in the certificate record.
    #[serde(with = "hex::serde")]
    pub serial: Vec<u8>,
    /// Revocation time, Unix seconds.
    pub time: i64,
    /// RFC 5280 CRLReason code.
    pub reason: u8,
    /// RFC 5280 invalidity date, Unix seconds.
    pub invalidity_date: Option<i64>,
    /// End of validity of the revoked certificate (a CRL may drop expired entries).
    pub not_after: i64,
}

/// A public key that must never be certified again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedKey {
    /// Why it was blocked.
    pub reason: String,
    /// When it was blocked, Unix seconds.
    pub at: i64,
}

/// A security-relevant event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it happened, Unix seconds.
    pub time: i64,
    /// Event kind, e.g. `"cert.issue"`.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// `"success"`, `"failure"`, ...
    pub outcome: String,
    /// Event-specific details.
    pub detail: serde_json::Value,
    /// The cluster node that committed it (its `[cluster] node_id`); `None` in records written
    /// before nodes existed, and in records not yet stamped ([`crate::NodeStore`] stamps every
    /// record its node commits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An audit record with the sequence number the store gave it (1, 2, 3... with no gap).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
}

/// Position in a certificate listing: the (issuer, serial) of the last certificate already seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertCursor {
    /// Issuer of the last certificate seen.
    pub issuer: String,
    /// Serial of the last certificate seen.
    #[serde(with = "hex::serde")]
    pub serial: Vec<u8>,
}

/// One page of a certificate listing, ordered by (issuer, serial as an integer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePage {
    /// The certificates of this page.
    pub certificates: Vec<CertificateRecord>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<CertCursor>,
}

/// Longest issuer, counter name or meta key, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest serial number, in significant bytes (RFC 5280 allows 20).
pub const MAX_SERIAL_LEN: usize = 64;
/// Largest encoded value of one record, in bytes.
///
/// sled writes a tree node larger than a quarter of its segment size to a separate "blob" file
/// that it never fsyncs; this bound keeps every node well below that threshold (see the crate docs).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// One typed write operation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Record a newly issued certificate. Fails the batch with [`crate::StoreError::Conflict`] if
    /// the issuer already has a certificate with this serial.
    InsertCertificate(CertificateRecord),
    /// Change a certificate's revocation status. Fails the batch with
    /// [`crate::StoreError::NotFound`] if there is no such certificate.
    SetCertificateStatus {
        /// Issuer of the certificate.
        issuer: String,
        /// Serial of the certificate.
        serial: Vec<u8>,
        /// The new status.
        status: CertStatus,
    },
    /// Block a public key. Blocking an already blocked key keeps the first entry.
    BlockKey {
        /// SHA-256 of the DER SubjectPublicKeyInfo.
        spki_sha256: [u8; 32],
        /// Why.
        reason: String,
        /// When, Unix seconds.
        at: i64,
    },
    /// Advance a monotonic counter to `max(current + 1, min_next)` (a counter never bumped is 0).
    /// The new value is returned in [`CommitReceipt::counter_values`].
    BumpCounter {
        /// Counter name.
        name: String,
        /// Lowest acceptable new value.
        min_next: Option<u64>,
    },
    /// Append an audit record; its sequence number is returned in [`CommitReceipt::audit_seqs`].
    AppendAudit(AuditRecord),
    /// Set an appliance metadata value.
    PutMeta {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Write a record of a named table (see [`crate::Store::get_record`]). Fails the batch with
    /// [`crate::StoreError::Conflict`] when `expect` does not hold.
    PutRecord {
        /// Table name.
        table: String,
        /// Key within the table (any bytes, at most [`MAX_RECORD_KEY_LEN`]).
        key: Vec<u8>,
        /// Value (at most [`MAX_VALUE_LEN`] bytes).
        value: Vec<u8>,
        /// What the record must be before this write.
        expect: Expect,
    },
    /// Remove a record of a named table. Fails the batch with [`crate::StoreError::Conflict`]
    /// when `expect` does not hold.
    DeleteRecord {
        /// Table name.
        table: String,
        /// Key within the table.
        key: Vec<u8>,
        /// What the record must be before this write.
        expect: Expect,
    },
}

/// A precondition on a record, checked inside the transaction (optimistic concurrency).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// No precondition.
    #[default]
    Any,
    /// The record must not exist.
    Absent,
    /// The record must exist.
    Present,
    /// The record must exist with exactly this value.
    Value(Vec<u8>),
}

/// Longest key of a named-table record, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 512;

/// Operations applied all-or-nothing by [`crate::Store::commit`], in order; a later operation sees
/// the effects of the earlier ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Appends an operation, builder style.
    #[must_use]
    pub fn with(mut self, op: WriteOp) -> Self {
        self.ops.push(op);
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The operations, in order, by value.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl From<Vec<WriteOp>> for WriteBatch {
    fn from(ops: Vec<WriteOp>) -> Self {
        Self { ops }
    }
}

impl FromIterator<WriteOp> for WriteBatch {
    fn from_iter<T: IntoIterator<Item = WriteOp>>(iter: T) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

/// What a successful [`crate::Store::commit`] assigned. When it is returned, the batch is durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReceipt {
    /// Sequence numbers of the batch's [`WriteOp::AppendAudit`] operations, in operation order.
    pub audit_seqs: Vec<u64>,
    /// New values of the batch's [`WriteOp::BumpCounter`] operations, in operation order.
    pub counter_values: Vec<u64>,
}
