//! Several nodes over one store: each node keeps its own hash-chained log, forwards only the
//! audit records it committed (every record names its node, [`cps_store::NodeStore`]) and
//! anchors its own checkpoints under its own keys ([`latest_key`]).
//!
//! * [`register`]: each node records itself in [`NODES`] when its trail starts, so that
//!   `audit verify` can name every node whose log the store holds anchors of;
//! * [`adopt_legacy`]: records without a node (those of a store written before nodes existed,
//!   and the key ceremony's, which runs before any node) and a store's old cursor and anchors,
//!   kept under keys without a node. The first node that starts on the store takes them over,
//!   once (a conditional write: of two nodes starting together, one wins): the old cursor and
//!   latest anchor are copied to its own keys in the same batch, and from then on the records,
//!   hourly anchors and lost anchors without a node are read as its own.

use cps_store::{Expect, Store, StoreError, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

/// Named table of the nodes that ran a trail on this store (key: node id).
pub const NODES: &str = "cluster.nodes";
/// Named table holding which node took over the state of a store written before nodes
/// existed (key [`LEGACY_KEY`], value: the node id).
pub const LEGACY: &str = "cluster.legacy";
/// The one key of [`LEGACY`].
pub const LEGACY_KEY: &[u8] = b"audit";

/// Meta key of the forwarder's cursor before nodes existed (see [`cursor_key`]).
pub const LEGACY_CURSOR: &str = "atna.forwarded";

/// Meta key of node `node`'s forwarder cursor: the last store audit sequence number it has
/// looked at (its own records up to there are in its log).
pub fn cursor_key(node: &str) -> String {
    format!("{LEGACY_CURSOR}.{node}")
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its `[cluster] node_id`.
    pub node: String,
    /// Its host name in its audit messages.
    pub host: String,
    /// When its trail last started, Unix seconds.
    pub started_at: i64,
}

fn err(e: StoreError) -> String {
    e.to_string()
}

/// Record that node `node` runs a trail on this store.
pub fn register(store: &dyn Store, node: &str, host: &str, now: i64) -> Result<(), String> {
    let rec = NodeRecord {
        node: node.into(),
        host: host.into(),
        started_at: now,
    };
    let value = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
    store
        .commit(WriteBatch::new().with(WriteOp::PutRecord {
            table: NODES.into(),
            key: node.as_bytes().to_vec(),
            value,
            expect: Expect::Any,
        }))
        .map(|_| ())
        .map_err(err)
}

/// Every node that ran a trail on this store, by id; the node that took over a store written
/// before nodes existed is among them.
pub fn nodes(store: &dyn Store) -> Result<Vec<NodeRecord>, String> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan_records(NODES, b"", after.as_deref(), 1000)
            .map_err(err)?;
        let done = page.len() < 1000;
        after = page.last().map(|(k, _)| k.clone());
        for (_, v) in page {
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| format!("a node record in the store: {e}"))?,
            );
        }
        if done {
            return Ok(out);
        }
    }
}

/// Meta key of the latest anchored checkpoint of a store written before nodes existed (see
/// [`latest_key`]).
pub const ANCHOR_META: &str = "atna.checkpoint";

/// Meta key of node `node`'s latest anchored checkpoint.
pub fn latest_key(node: &str) -> String {
    format!("{ANCHOR_META}.{node}")
}

/// The node that took over the state of a store written before nodes existed, if one did.
pub fn legacy_owner(store: &dyn Store) -> Result<Option<String>, String> {
    Ok(store
        .get_record(LEGACY, LEGACY_KEY)
        .map_err(err)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Take over the state of a store written before nodes existed, if there is any and no node
/// took it over yet. Returns whether `node` owns it (it did already, or does now).
pub fn adopt_legacy(store: &dyn Store, node: &str) -> Result<bool, String> {
    if let Some(owner) = legacy_owner(store)? {
        return Ok(owner == node);
    }
    let old_cursor = store.get_meta(LEGACY_CURSOR).map_err(err)?;
    let old_anchor = store.get_meta(ANCHOR_META).map_err(err)?;
    let old_records = store
        .audit_range(1, 1)
        .map_err(err)?
        .first()
        .is_some_and(|e| e.record.node.is_none());
    if old_cursor.is_none() && old_anchor.is_none() && !old_records {
        return Ok(false);
    }
    let mut batch = WriteBatch::new().with(WriteOp::PutRecord {
        table: LEGACY.into(),
        key: LEGACY_KEY.to_vec(),
        value: node.as_bytes().to_vec(),
        expect: Expect::Absent,
    });
    for (old, new) in [
        (old_cursor, cursor_key(node)),
        (old_anchor, latest_key(node)),
    ] {
        if let Some(v) = old
            && store.get_meta(&new).map_err(err)?.is_none()
        {
            batch = batch.with(WriteOp::PutMeta { key: new, value: v });
        }
    }
    match store.commit(batch) {
        Ok(_) => {
            tracing::info!(
                node,
                "this node took over the audit state of the store written before nodes existed"
            );
            Ok(true)
        }
        // Another node took it over meanwhile.
        Err(StoreError::Conflict(_)) => Ok(legacy_owner(store)?.as_deref() == Some(node)),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use cps_atna::{SearchFilter, TrustedKey, VerifyOptions};
    use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};
    use cps_store::{AuditRecord, NodeStore, Store, WriteBatch, WriteOp};

    use super::*;
    use crate::anchor::{AnchorRecord, anchor_set};
    use crate::nodes::Nodes;
    use crate::settings::TrailSettings;
    use crate::trail::tests::{Room, eventually};
    use crate::trail::{Atna, Start, start};

    fn event(idnat: &str) -> cps_audit::AuditEvent {
        cps_audit::AuditEvent::AssertionValidated {
            assertion_id: format!("_{idnat}"),
            idnat_ps: idnat.into(),
            purpose_of_use: "normal".into(),
            patient_ins: None,
        }
    }

    fn by(idnat: &str) -> SearchFilter {
        SearchFilter {
            user: Some(idnat.into()),
            ..Default::default()
        }
    }

    /// A node: its own home (log, queue) and checkpoint key, the shared store seen through its
    /// [`NodeStore`].
    struct Node {
        store: Arc<dyn Store>,
        dir: std::path::PathBuf,
        key: Arc<SoftwareSigner>,
    }

    impl Node {
        fn new(shared: &Arc<dyn Store>, id: &str, dir: &Path) -> Node {
            Node {
                store: Arc::new(NodeStore::new(shared.clone(), id).unwrap()),
                dir: dir.join(id),
                key: Arc::new(SoftwareSigner::generate(id, KeyAlgorithm::EcP256).unwrap()),
            }
        }

        async fn start(&self, id: &str) -> Atna {
            let settings = TrailSettings {
                repository: false,
                checkpoint_every: 2,
                ..TrailSettings::default()
            };
            start(Start {
                settings: &settings,
                syslog_tls: "127.0.0.1:0",
                host: format!("{id}.localhost"),
                node: id.into(),
                log_dir: self.dir.join("log"),
                queue_dir: self.dir.join("queue"),
                checkpoint: self.key.clone() as Arc<dyn Signer>,
                checkpoint_chain: Vec::new(),
                client_tls: None,
                server_tls: None,
                nodes: Nodes::new(self.store.clone()),
                store: self.store.clone(),
                guard: Arc::new(Room(tokio::sync::watch::channel(None).0)),
            })
            .await
            .unwrap()
        }

        /// This node's log against its key and the anchors the store holds for it.
        fn verify(&self, shared: &dyn Store, id: &str) -> cps_atna::VerifyReport {
            let set = anchor_set(shared, id, &[]).unwrap();
            assert!(set.lost.is_empty(), "{:?}", set.lost);
            let anchors = set
                .latest
                .iter()
                .chain(set.history.iter())
                .map(|a| cps_atna::Anchor {
                    seq: a.seq,
                    head: a.head_bytes().unwrap(),
                    place: "the store".into(),
                })
                .collect();
            let opts = VerifyOptions {
                keys: vec![TrustedKey {
                    spki: self.key.public_key_der().to_vec(),
                    not_after: None,
                    name: id.into(),
                }],
                default_policy: cps_atna::CheckpointPolicy {
                    every: 2,
                    interval: Duration::from_secs(60),
                },
                grace: cps_atna::DEFAULT_GRACE,
                anchors,
            };
            cps_atna::verify(&self.dir.join("log"), &opts).unwrap()
        }
    }

    /// Two nodes over one store: each record names its node, each node's log holds its own
    /// records only and verifies against its own anchors; the store knows both nodes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_node_logs_and_anchors_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> =
            Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
        let a = Node::new(&shared, "node-a", dir.path());
        let b = Node::new(&shared, "node-b", dir.path());
        let (atna_a, atna_b) = (a.start("node-a").await, b.start("node-b").await);
        for i in 0..3 {
            for (n, node) in [("1", &a), ("2", &b)] {
                node.store
                    .commit(WriteBatch::new().with(WriteOp::AppendAudit(
                        event(&format!("81000000{n}00{i}")).record(1_790_000_000, "operator:x"),
                    )))
                    .unwrap();
            }
        }
        let (log_a, log_b) = (atna_a.log.clone(), atna_b.log.clone());
        eventually("every record in its node's log", || {
            log_a.len() == 3 && log_b.len() == 3
        })
        .await;
        for i in 0..3 {
            let mine = |log: &cps_atna::AuditLog, idnat: String| {
                log.search(&by(&idnat), 10, None).unwrap().records.len()
            };
            assert_eq!(mine(&log_a, format!("81000000100{i}")), 1);
            assert_eq!(
                mine(&log_a, format!("81000000200{i}")),
                0,
                "b's record in a's log"
            );
            assert_eq!(mine(&log_b, format!("81000000200{i}")), 1);
            assert_eq!(
                mine(&log_b, format!("81000000100{i}")),
                0,
                "a's record in b's log"
            );
        }
        let nodes: Vec<Option<String>> = shared
            .audit_range(1, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.record.node)
            .collect();
        assert_eq!(nodes.len(), 6);
        assert!(nodes.iter().all(|n| n.is_some()), "{nodes:?}");
        atna_a.shutdown().await;
        atna_b.shutdown().await;
        // Each chain verifies against its own anchors, which are not the other's.
        let (ra, rb) = (
            a.verify(shared.as_ref(), "node-a"),
            b.verify(shared.as_ref(), "node-b"),
        );
        assert_eq!((ra.records, rb.records), (3, 3));
        assert!(ra.anchors > 0 && rb.anchors > 0, "{ra:?} {rb:?}");
        let (sa, sb) = (
            anchor_set(shared.as_ref(), "node-a", &[]).unwrap(),
            anchor_set(shared.as_ref(), "node-b", &[]).unwrap(),
        );
        assert_ne!(sa.latest.unwrap().head, sb.latest.unwrap().head);
        let ids: Vec<&str> = sa.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(ids, ["node-a", "node-b"]);
        assert_eq!(legacy_owner(shared.as_ref()).unwrap(), None);
        // Restarted over the same store, neither repeats a record nor takes the other's.
        let atna_a = a.start("node-a").await;
        a.store
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(
                event("810000001009").record(1_790_000_001, "operator:x"),
            )))
            .unwrap();
        let log_a = atna_a.log.clone();
        eventually("the new record", || log_a.len() == 4).await;
        atna_a.shutdown().await;
        assert_eq!(a.verify(shared.as_ref(), "node-a").records, 4);
    }

    /// A store written before nodes existed: records without a node, the old cursor and the old
    /// anchors. The first node to start takes them over (the record the old cursor had not
    /// reached goes into its log, the old anchors are its own and its log still verifies); the
    /// second node takes nothing of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_from_before_nodes_is_taken_over_by_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> =
            Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
        let a = Node::new(&shared, "node-a", dir.path());
        let b = Node::new(&shared, "node-b", dir.path());
        // What the single-node appliance left: a log with a signed checkpoint over record 1,
        // that checkpoint anchored under the old keys, record 1 forwarded and record 2 not.
        let old_record = |idnat: &str| -> AuditRecord {
            let r = event(idnat).record(1_790_000_000, "operator:x");
            assert_eq!(r.node, None);
            r
        };
        let cp = tokio::task::block_in_place(|| {
            let log = cps_atna::AuditLog::open(
                &a.dir.join("log"),
                Some(a.key.clone() as Arc<dyn Signer>),
                cps_atna::LogOptions::default(),
            )
            .unwrap();
            let (trail_ctx, host) = (
                cps_atna::events::AuditContext {
                    source_id: "cps-trust".into(),
                    site_id: None,
                    host: "old.localhost".into(),
                },
                "old.localhost",
            );
            let queue = cps_atna::Queue::open(
                &a.dir.join("old-queue"),
                &[],
                cps_atna::QueueOptions::default(),
            )
            .unwrap();
            crate::trail::Trail::new(
                cps_atna::Auditor::new(queue, host, "cps-trust"),
                log.clone(),
                trail_ctx,
                false,
            )
            .write(&[old_record("810000000001")])
            .unwrap();
            log.checkpoint_blocking().unwrap();
            log.last_checkpoint().unwrap()
        });
        let anchor = serde_json::to_vec(&AnchorRecord::of(&cp, 1_790_000_000)).unwrap();
        let mut old_history_key = cp.seq.to_be_bytes().to_vec();
        old_history_key.extend_from_slice(&cp.time.to_be_bytes());
        shared
            .commit(
                WriteBatch::new()
                    .with(WriteOp::AppendAudit(old_record("810000000001")))
                    .with(WriteOp::AppendAudit(old_record("810000000002")))
                    .with(WriteOp::PutMeta {
                        key: LEGACY_CURSOR.into(),
                        value: b"1".to_vec(),
                    })
                    .with(WriteOp::PutMeta {
                        key: ANCHOR_META.into(),
                        value: anchor.clone(),
                    })
                    .with(WriteOp::PutRecord {
                        table: crate::anchor::ANCHOR_HISTORY.into(),
                        key: old_history_key,
                        value: anchor,
                        expect: Expect::Any,
                    }),
            )
            .unwrap();

        // Before any node has started on it, `audit verify` checks the old anchors.
        let set = anchor_set(shared.as_ref(), "node-a", &[]).unwrap();
        assert_eq!(set.latest.map(|l| l.seq), Some(cp.seq));
        assert_eq!(set.history.len(), 1);

        let atna_a = a.start("node-a").await;
        let atna_b = b.start("node-b").await;
        assert_eq!(
            legacy_owner(shared.as_ref()).unwrap().as_deref(),
            Some("node-a")
        );
        assert!(!adopt_legacy(shared.as_ref(), "node-b").unwrap());
        assert!(shared.get_meta(&latest_key("node-a")).unwrap().is_some());
        let log_a = atna_a.log.clone();
        eventually("the record the old cursor had not reached", || {
            log_a
                .search(&by("810000000002"), 10, None)
                .map(|p| p.records.len() == 1)
                .unwrap_or(false)
        })
        .await;
        b.store
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(
                event("810000000003").record(1_790_000_001, "operator:x"),
            )))
            .unwrap();
        let log_b = atna_b.log.clone();
        eventually("b's own record", || log_b.len() == 1).await;
        assert_eq!(log_a.len(), 2, "record 1 forwarded twice, or b's taken");
        assert_eq!(
            log_b
                .search(&by("810000000002"), 10, None)
                .unwrap()
                .records
                .len(),
            0
        );
        atna_a.shutdown().await;
        atna_b.shutdown().await;
        // The old anchors are node-a's: its log still holds them, and verifies.
        let set = anchor_set(shared.as_ref(), "node-a", &[]).unwrap();
        assert!(set.history.iter().any(|h| h.seq == cp.seq), "{set:?}");
        assert!(a.verify(shared.as_ref(), "node-a").anchors >= 2);
        let set_b = anchor_set(shared.as_ref(), "node-b", &[]).unwrap();
        assert!(set_b.latest.is_some_and(|l| l.head != hex::encode(cp.head)));
        assert!(
            set_b
                .history
                .iter()
                .all(|h| h.seq != cp.seq || h.head != hex::encode(cp.head))
        );
        assert_eq!(b.verify(shared.as_ref(), "node-b").records, 1);
    }
}
