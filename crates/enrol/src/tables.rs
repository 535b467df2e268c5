//! Named tables of this crate in the store, their keys, and JSON encoding of records.
//!
//! | table | key | value |
//! |---|---|---|
//! | `professionals` | IdNat_PS | [`crate::Professional`] |
//! | `professionals_by_name` | folded surname ` ` folded given names `\0` IdNat_PS | empty (index) |
//! | `cards` | card serial | [`crate::Card`] |
//! | `cards_by_professional` | IdNat_PS `\0` structure id `\0` card serial | empty (index) |
//! | `enrolments` | enrolment id | [`crate::Enrolment`] |
//! | `enrolments_by_card` | card serial `\0` enrolment id | empty (index) |
//! | `enrolments_open` | card serial | enrolment id (one open enrolment per card) |
//! | `enrolments_open_by_activity` | IdNat_PS `\0` structure id | enrolment id |
//! | `revocations_pending` | issuer `\0` serial | [`crate::lifecycle::PendingRevocation`] (outbox) |
//! | `imports` | import id | [`crate::import::ImportRecord`] |

use cps_store::{Expect, Store, WriteOp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EnrolError, Result};

pub(crate) const PROFESSIONALS: &str = "professionals";
pub(crate) const PROFESSIONALS_BY_NAME: &str = "professionals_by_name";
pub(crate) const CARDS: &str = "cards";
pub(crate) const CARDS_BY_PROFESSIONAL: &str = "cards_by_professional";
pub(crate) const ENROLMENTS: &str = "enrolments";
pub(crate) const ENROLMENTS_BY_CARD: &str = "enrolments_by_card";
pub(crate) const ENROLMENTS_OPEN: &str = "enrolments_open";
pub(crate) const ENROLMENTS_OPEN_BY_ACTIVITY: &str = "enrolments_open_by_activity";
pub(crate) const REVOCATIONS_PENDING: &str = "revocations_pending";
pub(crate) const IMPORTS: &str = "imports";

/// Reads and decodes a record; returns it with its raw bytes (for `Expect::Value`).
pub(crate) fn get<T: DeserializeOwned>(
    store: &dyn Store,
    table: &str,
    key: &[u8],
) -> Result<Option<(T, Vec<u8>)>> {
    match store.get_record(table, key)? {
        None => Ok(None),
        Some(raw) => Ok(Some((decode(table, key, &raw)?, raw))),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(table: &str, key: &[u8], raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| EnrolError::Corrupt {
        what: format!("{table}/{}", String::from_utf8_lossy(key)),
        detail: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| EnrolError::Invalid(format!("cannot encode a record: {e}")))
}

pub(crate) fn put<T: Serialize>(
    table: &str,
    key: &[u8],
    value: &T,
    expect: Expect,
) -> Result<WriteOp> {
    Ok(WriteOp::PutRecord {
        table: table.into(),
        key: key.to_vec(),
        value: encode(value)?,
        expect,
    })
}

pub(crate) fn put_raw(table: &str, key: &[u8], value: Vec<u8>, expect: Expect) -> WriteOp {
    WriteOp::PutRecord {
        table: table.into(),
        key: key.to_vec(),
        value,
        expect,
    }
}

pub(crate) fn delete(table: &str, key: &[u8], expect: Expect) -> WriteOp {
    WriteOp::DeleteRecord {
        table: table.into(),
        key: key.to_vec(),
        expect,
    }
}

/// `a \0 b \0 c ...`
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

pub(crate) fn audit(now: i64, actor: &str, event: cps_audit::AuditEvent) -> WriteOp {
    WriteOp::AppendAudit(event.record(now, actor))
}

/// Every record of `table` whose key starts with `prefix` (paged internally).
pub(crate) fn scan_all(
    store: &dyn Store,
    table: &str,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_records(table, prefix, after.as_deref(), 512)?;
        let n = page.len();
        after = page.last().map(|(k, _)| k.clone());
        out.extend(page);
        if n < 512 {
            return Ok(out);
        }
    }
}
