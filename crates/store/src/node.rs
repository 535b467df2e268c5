//! One node's view of a store that several nodes share.
//!
//! Every audit record says which node committed it ([`AuditRecord::node`]): each node keeps its
//! own hash-chained log and forwards only its own records into it. Rather than every service
//! passing its node along, the node's services all hold a [`NodeStore`]: it stamps each audit
//! record of each batch it commits with the node's id, and passes everything else through.

use std::sync::Arc;

use crate::{
    AuditEntry, AuditRecord, BlockedKey, CertCursor, CertificatePage, CertificateRecord,
    CommitReceipt, RecordRow, RevokedEntry, Store, StoreError, WriteBatch, WriteOp,
};

/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 63;

/// Whether `id` can name a node: 1 to [`MAX_NODE_ID_LEN`] ASCII letters, digits, `.`, `-` or
/// `_`, starting with a letter or a digit (it appears in store keys, job ids and audit messages).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A shared store as one node uses it: audit records it commits carry the node's id.
///
/// Every method of [`Store`] is passed through, the defaulted ones included (a new method of the
/// trait must be added here too, or the node would see the default instead of the store).
#[derive(Clone)]
pub struct NodeStore {
    inner: Arc<dyn Store>,
    node: String,
    observer: Option<AuditObserver>,
}

/// Called with each audit record once the batch that wrote it is committed (the service
/// counters of the appliance are counted there: one place, after durability).
pub type AuditObserver = Arc<dyn Fn(&AuditRecord) + Send + Sync>;

impl NodeStore {
    /// `inner` as node `node` uses it. Refuses an id [`valid_node_id`] refuses.
    pub fn new(inner: Arc<dyn Store>, node: &str) -> Result<NodeStore, StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid(format!(
                "'{node}' is not a node id: 1 to {MAX_NODE_ID_LEN} letters, digits, '.', '-' or '_', starting with a letter or a digit"
            )));
        }
        Ok(NodeStore {
            inner,
            node: node.to_owned(),
            observer: None,
        })
    }

    /// This store, calling `observer` with each audit record it commits, after the commit.
    pub fn with_audit_observer(mut self, observer: AuditObserver) -> NodeStore {
        self.observer = Some(observer);
        self
    }

    /// The node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The shared store underneath.
    pub fn shared(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

impl Store for NodeStore {
    fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError> {
        let ops: Vec<WriteOp> = batch
            .into_ops()
            .into_iter()
            .map(|op| match op {
                WriteOp::AppendAudit(mut rec) => {
                    // A record made for another node (none today) keeps its node.
                    rec.node.get_or_insert_with(|| self.node.clone());
                    WriteOp::AppendAudit(rec)
                }
                other => other,
            })
            .collect();
        let Some(observer) = &self.observer else {
            return self.inner.commit(ops.into());
        };
        let records: Vec<AuditRecord> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::AppendAudit(rec) => Some(rec.clone()),
                _ => None,
            })
            .collect();
        let receipt = self.inner.commit(ops.into())?;
        for rec in &records {
            observer(rec);
        }
        Ok(receipt)
    }
    fn get_certificate(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.inner.get_certificate(issuer, serial)
    }
    fn write_failure(&self) -> Option<String> {
        self.inner.write_failure()
    }
    fn certificates_version(&self) -> Option<u64> {
        self.inner.certificates_version()
    }
    fn certificates_by_spki(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        self.inner.certificates_by_spki(spki_sha256)
    }
    fn list_certificates(
        &self,
        issuer: Option<&str>,
        after: Option<&CertCursor>,
        limit: usize,
    ) -> Result<CertificatePage, StoreError> {
        self.inner.list_certificates(issuer, after, limit)
    }
    fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        self.inner.revoked_certificates(issuer)
    }
    fn blocked_key(&self, spki_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, StoreError> {
        self.inner.blocked_key(spki_sha256)
    }
    fn is_key_blocked(&self, spki_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.is_key_blocked(spki_sha256)
    }
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        self.inner.counter(name)
    }
    fn audit_range(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_range(from_seq, limit)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.inner.audit_len()
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(key)
    }
    fn get_record(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_record(table, key)
    }
    fn scan_records(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        self.inner.scan_records(table, prefix, after, limit)
    }
    fn claim(
        &self,
        table: &str,
        keys: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.inner.claim(table, keys, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditRecord, SledStore};

    fn rec(node: Option<&str>) -> AuditRecord {
        AuditRecord {
            time: 1,
            kind: "test".into(),
            actor: "a".into(),
            outcome: "success".into(),
            detail: serde_json::Value::Null,
            node: node.map(str::to_owned),
        }
    }

    /// Two nodes over one store: each record carries the node that committed it; a record
    /// without a node (as every record before nodes existed) reads back as such.
    #[test]
    fn each_node_stamps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let a = NodeStore::new(shared.clone(), "node-a").unwrap();
        let b = NodeStore::new(shared.clone(), "node-b").unwrap();
        shared
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(rec(None))))
            .unwrap();
        a.commit(WriteBatch::new().with(WriteOp::AppendAudit(rec(None))))
            .unwrap();
        b.commit(
            WriteBatch::new()
                .with(WriteOp::AppendAudit(rec(None)))
                .with(WriteOp::AppendAudit(rec(Some("other")))),
        )
        .unwrap();
        let nodes: Vec<Option<String>> = a
            .audit_range(1, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.record.node)
            .collect();
        assert_eq!(
            nodes,
            [None, Some("node-a"), Some("node-b"), Some("other")]
                .map(|n| n.map(str::to_owned))
                .to_vec()
        );
    }

    /// The observer sees each committed audit record once, stamped with the node, after the
    /// commit (the record is already readable from the store).
    #[test]
    fn the_observer_sees_committed_records() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (s, store) = (seen.clone(), shared.clone());
        let a = NodeStore::new(shared.clone(), "node-a")
            .unwrap()
            .with_audit_observer(Arc::new(move |r: &AuditRecord| {
                let stored = store.audit_range(1, 10).unwrap().len();
                s.lock().push((r.node.clone(), stored));
            }));
        a.commit(
            WriteBatch::new()
                .with(WriteOp::AppendAudit(rec(None)))
                .with(WriteOp::AppendAudit(rec(None))),
        )
        .unwrap();
        let node = Some("node-a".to_owned());
        assert_eq!(*seen.lock(), vec![(node.clone(), 2), (node, 2)]);
    }

    #[test]
    fn node_ids_are_checked() {
        for ok in ["a", "node-1", "host.example.org", "n_2"] {
            assert!(valid_node_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_NODE_ID_LEN + 1);
        for bad in ["", "-a", ".a", "a b", "a/b", "a\0", "é", long.as_str()] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        assert!(NodeStore::new(shared, "a b").is_err());
    }
}
