//! Anchors of the audit log's checkpoints outside the log directory.
//!
//! Every checkpoint the log signs is handed (through [`AnchorSink`]) to one thread that
//! * commits it to the store, under the node whose log it is (each node of a cluster keeps its
//!   own log): the latest under the meta key [`latest_key`] (`atna.checkpoint.<node>`), plus
//!   the first checkpoint of each hour in the named table [`ANCHOR_HISTORY`] (key: node, 0,
//!   seq, time; about 24 small records a day);
//! * sends it to every configured ATNA destination as a DICOM audit message
//!   ([`cps_atna::events::audit_checkpoint`]) through the durable outgoing queue (when several
//!   are waiting, the newest only: it covers the others).
//!
//! Someone who rewrites the log directory must then also rewrite the store, and cannot reach
//! the destinations. At start, the appliance checks that the log holds the latest anchored
//! checkpoint; if not (the log was cut back, deleted or replaced while the appliance was
//! stopped), the anchor is kept in [`ANCHOR_LOST`] with an audited alarm, so that the next
//! checkpoints do not overwrite the evidence and `audit verify` keeps reporting it. The check
//! compares this node's log with this node's anchor only.
//!
//! A store written before nodes existed holds one node's anchors under the old keys
//! ([`ANCHOR_META`], history and lost keys without a node). The first node that starts on it
//! takes them over ([`crate::cluster::adopt_legacy`]): they are read as that node's.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use cps_atna::events::AuditContext;
use cps_atna::{AuditLog, Auditor, Checkpoint, CheckpointSink};
use cps_store::{Expect, Store, WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};

/// Named table of anchored checkpoints, one per hour and node (key: node ‖ 0 ‖ seq ‖ time,
/// big-endian; before nodes existed: seq ‖ time).
pub const ANCHOR_HISTORY: &str = "atna.checkpoints";
/// Named table of anchors a node's log no longer held at a start (key: node ‖ 0 ‖ the time
/// found, Unix µs; before nodes existed: the time alone).
pub const ANCHOR_LOST: &str = "atna.anchors.lost";

// The meta keys of the latest anchor are the store's per-node keys (`cluster`).
pub use crate::cluster::{ANCHOR_META, latest_key};

/// The key prefix of node `node`'s entries in [`ANCHOR_HISTORY`] and [`ANCHOR_LOST`]. Node ids
/// start with a letter or a digit, so no prefix is one of another's, and keys written before
/// nodes existed (a big-endian number below 2^56: a zero first byte) are nobody's prefix.
pub fn node_prefix(node: &str) -> Vec<u8> {
    let mut k = node.as_bytes().to_vec();
    k.push(0);
    k
}

/// The prefix of entries written before nodes existed: their first byte is zero.
const LEGACY_PREFIX: &[u8] = &[0];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A checkpoint as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    /// The record it covers.
    pub seq: u64,
    /// That record's hash, hex.
    pub head: String,
    /// When the checkpoint was signed, Unix µs.
    pub time: i64,
    /// When it was committed to the store, Unix seconds.
    pub anchored_at: i64,
    /// The entry exactly as `checkpoints.log` holds it, base64.
    pub checkpoint: String,
}

impl AnchorRecord {
    pub fn of(c: &Checkpoint, anchored_at: i64) -> AnchorRecord {
        AnchorRecord {
            seq: c.seq,
            head: hex::encode(c.head),
            time: c.time,
            anchored_at,
            checkpoint: B64.encode(c.to_bytes()),
        }
    }

    /// The checkpoint it holds (its signature is checked by whoever trusts a key).
    pub fn checkpoint(&self) -> Result<Checkpoint, String> {
        let bytes = B64
            .decode(&self.checkpoint)
            .map_err(|e| format!("anchor of record {}: {e}", self.seq))?;
        let c = Checkpoint::from_bytes(&bytes)
            .map_err(|e| format!("anchor of record {}: {e}", self.seq))?;
        if c.seq != self.seq || hex::encode(c.head) != self.head {
            return Err(format!(
                "anchor of record {}: its fields and its checkpoint differ",
                self.seq
            ));
        }
        Ok(c)
    }

    /// The head as bytes.
    pub fn head_bytes(&self) -> Result<[u8; 32], String> {
        hex::decode(&self.head)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| format!("anchor of record {}: bad head", self.seq))
    }
}

/// An anchor the log did not hold when the appliance started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostAnchor {
    pub anchor: AnchorRecord,
    /// When it was found missing, Unix seconds.
    pub found_at: i64,
    /// Records the log had then.
    pub log_records: u64,
    /// The last checkpoint the log had then.
    pub log_last_checkpoint: Option<u64>,
}

/// A certificate of a checkpoint key, with its live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCertificate {
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex (the checkpoints' key id).
    pub key_id: String,
    pub ca: String,
    pub serial: String,
    pub profile: String,
    /// PEM.
    pub pem: String,
    /// `valid`, `on-hold` or `revoked`.
    pub status: String,
    /// Unix seconds.
    pub revocation_time: Option<i64>,
}

/// Everything `audit verify` needs from the store about one node's log: `GET
/// /api/v1/audit/checkpoints` returns it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorSet {
    /// The node whose anchors these are.
    #[serde(default)]
    pub node: String,
    /// Every node the store knows (each keeps its own log), this one included.
    #[serde(default)]
    pub nodes: Vec<crate::cluster::NodeRecord>,
    pub latest: Option<AnchorRecord>,
    pub history: Vec<AnchorRecord>,
    pub lost: Vec<LostAnchor>,
    /// The store's certificates for the key ids asked for.
    pub certificates: Vec<KeyCertificate>,
}

fn parse<T: for<'a> Deserialize<'a>>(what: &str, v: &[u8]) -> Result<T, String> {
    serde_json::from_slice(v).map_err(|e| format!("{what} in the store: {e}"))
}

/// Read every anchor of node `node`'s log (those of a store written before nodes existed too,
/// if `node` took them over), and the certificates of `key_ids` (raw SHA-256 of SPKIs).
pub fn anchor_set(
    store: &dyn Store,
    node: &str,
    key_ids: &[[u8; 32]],
) -> Result<AnchorSet, String> {
    let err = |e: cps_store::StoreError| e.to_string();
    // The anchors kept without a node are this node's if it took them over, or anyone's while
    // no node has (a store from before nodes that no node has served since: its one log is
    // the one being verified).
    let legacy = match crate::cluster::legacy_owner(store)? {
        Some(owner) => owner == node,
        None => true,
    };
    let mut latest = store.get_meta(&latest_key(node)).map_err(err)?;
    if latest.is_none() && legacy {
        latest = store.get_meta(ANCHOR_META).map_err(err)?;
    }
    let latest = match latest {
        Some(v) => Some(parse::<AnchorRecord>("latest anchor", &v)?),
        None => None,
    };
    let mut prefixes = vec![node_prefix(node)];
    if legacy {
        prefixes.push(LEGACY_PREFIX.to_vec());
    }
    let scan = |table: &str| -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        for prefix in &prefixes {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = store
                    .scan_records(table, prefix, after.as_deref(), 1000)
                    .map_err(err)?;
                let done = page.len() < 1000;
                after = page.last().map(|(k, _)| k.clone());
                out.extend(page.into_iter().map(|(_, v)| v));
                if done {
                    break;
                }
            }
        }
        Ok(out)
    };
    let history = scan(ANCHOR_HISTORY)?
        .iter()
        .map(|v| parse("anchor history", v))
        .collect::<Result<Vec<AnchorRecord>, _>>()?;
    let lost = scan(ANCHOR_LOST)?
        .iter()
        .map(|v| parse("lost anchor", v))
        .collect::<Result<Vec<LostAnchor>, _>>()?;
    let nodes = crate::cluster::nodes(store)?;
    let mut certificates = Vec::new();
    for id in key_ids {
        for rec in store.certificates_by_spki(id).map_err(err)? {
            let (status, revocation_time) = match rec.status {
                cps_store::CertStatus::Valid => ("valid", None),
                cps_store::CertStatus::Revoked { time, reason, .. } => {
                    (if reason == 6 { "on-hold" } else { "revoked" }, Some(time))
                }
            };
            certificates.push(KeyCertificate {
                key_id: hex::encode(id),
                ca: rec.issuer.clone(),
                serial: hex::encode_upper(&rec.serial),
                profile: rec.profile.clone(),
                pem: cps_pki::pem_encode("CERTIFICATE", &rec.der),
                status: status.into(),
                revocation_time,
            });
        }
    }
    Ok(AnchorSet {
        node: node.to_owned(),
        nodes,
        latest,
        history,
        lost,
        certificates,
    })
}

/// Hands each checkpoint to the anchoring thread (never blocks the log's writer).
#[derive(Debug)]
pub struct AnchorSink(mpsc::Sender<Msg>);

impl CheckpointSink for AnchorSink {
    fn checkpointed(&self, checkpoint: &Checkpoint) {
        let _ = self.0.send(Msg::Checkpoint(checkpoint.clone()));
    }
}

#[derive(Debug)]
pub(crate) enum Msg {
    Checkpoint(Checkpoint),
    /// Answered once everything received before it is anchored (or given up for now).
    Flush(mpsc::Sender<()>),
}

/// The anchoring thread, started once the outgoing queue exists; checkpoints made before (the
/// one signed at open) wait in the channel.
pub struct Anchorer {
    tx: mpsc::Sender<Msg>,
    rx: Option<mpsc::Receiver<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where anchors go besides the store.
pub struct Destinations {
    pub auditor: Auditor,
    pub ctx: AuditContext,
    /// `ParticipantObjectID` of the log in the messages.
    pub log_id: String,
}

impl Anchorer {
    pub fn new() -> Anchorer {
        let (tx, rx) = mpsc::channel();
        Anchorer {
            tx,
            rx: Some(rx),
            thread: None,
        }
    }

    /// The sink to give the log.
    pub fn sink(&self) -> Arc<dyn CheckpointSink> {
        Arc::new(AnchorSink(self.tx.clone()))
    }

    /// Start anchoring node `node`'s checkpoints into `store` and, when configured, the
    /// destinations.
    pub fn start(
        &mut self,
        store: Arc<dyn Store>,
        node: &str,
        destinations: Option<Destinations>,
    ) -> std::io::Result<()> {
        let node = node.to_owned();
        let Some(rx) = self.rx.take() else {
            return Ok(());
        };
        self.thread = Some(
            std::thread::Builder::new()
                .name("atna-anchor".into())
                .spawn(move || run(rx, store, &node, destinations))?,
        );
        Ok(())
    }

    /// A handle that waits for the anchoring thread to catch up.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.tx.clone())
    }
}

/// Waits until every checkpoint handed over so far is anchored.
#[derive(Clone)]
pub struct Flusher(mpsc::Sender<Msg>);

impl Flusher {
    /// Wait (at most 10 s) until every checkpoint handed over so far is anchored.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.0.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl Default for Anchorer {
    fn default() -> Self {
        Anchorer::new()
    }
}

fn hour(time_us: i64) -> i64 {
    time_us.div_euclid(3_600_000_000)
}

fn history_key(node: &str, c: &Checkpoint) -> Vec<u8> {
    let mut k = node_prefix(node);
    k.extend_from_slice(&c.seq.to_be_bytes());
    k.extend_from_slice(&c.time.to_be_bytes());
    k
}

fn run(rx: mpsc::Receiver<Msg>, store: Arc<dyn Store>, node: &str, dest: Option<Destinations>) {
    let mut to_store: Vec<Checkpoint> = Vec::new();
    let mut to_send: Vec<Checkpoint> = Vec::new();
    let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
    let mut last_hour: Option<i64> = None;
    loop {
        let first = if to_store.is_empty() && to_send.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        for m in first.into_iter().chain(rx.try_iter()) {
            match m {
                Msg::Checkpoint(c) => {
                    to_send.push(c.clone());
                    to_store.push(c);
                }
                Msg::Flush(reply) => flushes.push(reply),
            }
        }
        if !to_store.is_empty() {
            let now = cps_ct::unix_now();
            let mut batch = WriteBatch::new();
            if let Some(latest) = to_store.last() {
                match serde_json::to_vec(&AnchorRecord::of(latest, now)) {
                    Ok(v) => {
                        batch = batch.with(WriteOp::PutMeta {
                            key: latest_key(node),
                            value: v,
                        })
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode an anchor"),
                }
            }
            let mut hours = last_hour;
            for c in &to_store {
                if hours != Some(hour(c.time)) {
                    hours = Some(hour(c.time));
                    if let Ok(v) = serde_json::to_vec(&AnchorRecord::of(c, now)) {
                        batch = batch.with(WriteOp::PutRecord {
                            table: ANCHOR_HISTORY.into(),
                            key: history_key(node, c),
                            value: v,
                            expect: Expect::Any,
                        });
                    }
                }
            }
            match store.commit(batch) {
                Ok(_) => {
                    last_hour = hours;
                    to_store.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, checkpoints = to_store.len(), "cannot anchor audit log checkpoints in the store; retrying");
                }
            }
        }
        // The destinations get the newest checkpoint of what accumulated: it covers every one
        // before it, and a busy log signs hundreds a second.
        if to_send.len() > 1 {
            to_send.drain(..to_send.len() - 1);
        }
        match &dest {
            Some(d) if !to_send.is_empty() => match send(d, &to_send) {
                Ok(()) => to_send.clear(),
                Err(e) => {
                    tracing::error!(error = %e, checkpoints = to_send.len(), "cannot queue audit log checkpoints for the destinations; retrying");
                }
            },
            _ => to_send.clear(),
        }
        if to_store.is_empty() && to_send.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn send(d: &Destinations, cps: &[Checkpoint]) -> Result<(), String> {
    let mut payloads = Vec::with_capacity(cps.len());
    for c in cps {
        let msg = cps_atna::events::audit_checkpoint(&d.ctx, &d.log_id, c);
        let at = cps_atna::time_fmt::from_unix_micros(c.time);
        payloads.push(d.auditor.format(&msg, at).map_err(|e| e.to_string())?);
    }
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    d.auditor
        .queue()
        .enqueue_batch(&refs)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// At start: node `node`'s log must hold node `node`'s latest anchored checkpoint (the other
/// nodes' logs are on their machines). If it does not, keep the anchor as lost (the next
/// checkpoints would replace it) with an audit record, and raise the alarm. Returns the lost
/// anchor, if any.
pub fn check_at_start(
    store: &dyn Store,
    node: &str,
    log: &AuditLog,
) -> Result<Option<LostAnchor>, String> {
    let Some(v) = store
        .get_meta(&latest_key(node))
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let anchor: AnchorRecord = parse("latest anchor", &v)?;
    let head = anchor.head_bytes()?;
    if log
        .holds_checkpoint(anchor.seq, &head)
        .map_err(|e| format!("audit log: {e}"))?
    {
        return Ok(None);
    }
    let now_us = cps_atna::time_fmt::unix_micros(time::OffsetDateTime::now_utc());
    let lost = LostAnchor {
        anchor: anchor.clone(),
        found_at: now_us / 1_000_000,
        log_records: log.len(),
        log_last_checkpoint: log.last_checkpoint().map(|c| c.seq),
    };
    let value = serde_json::to_vec(&lost).map_err(|e| e.to_string())?;
    let record = cps_audit::AuditEvent::AnchorMissing {
        seq: anchor.seq,
        head: anchor.head.clone(),
        anchored_at: anchor.anchored_at,
        log_records: lost.log_records,
        log_last_checkpoint: lost.log_last_checkpoint,
        log: log.dir().display().to_string(),
    }
    .record(lost.found_at, "appliance");
    store
        .commit(
            WriteBatch::new()
                .with(WriteOp::PutRecord {
                    table: ANCHOR_LOST.into(),
                    key: [node_prefix(node), now_us.to_be_bytes().to_vec()].concat(),
                    value,
                    expect: Expect::Absent,
                })
                .with(WriteOp::AppendAudit(record)),
        )
        .map_err(|e| e.to_string())?;
    let msg = format!(
        "the audit log {} of node {node} does not hold the checkpoint of record {} anchored in the store at {}: it was cut back, deleted or replaced while the appliance was stopped (the anchor is kept; `cps-trust audit verify` reports it)",
        log.dir().display(),
        anchor.seq,
        cps_ct::rfc3339(anchor.anchored_at)
    );
    tracing::error!(alarm = %msg, "AUDIT LOG ALARM");
    eprintln!("cps-trust: AUDIT LOG ALARM: {msg}");
    Ok(Some(lost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_atna::{LogOptions, NewRecord, NodeIdentity, Transport, XmlLimits};
    use cps_hsm::{KeyAlgorithm, SoftwareSigner};

    fn rec(i: u64) -> NewRecord {
        NewRecord::from_message(
            i as i64,
            &NodeIdentity::default(),
            "127.0.0.1:1",
            Transport::Tls,
            format!("<85>1 - h a - - - record {i}").as_bytes(),
            &XmlLimits::default(),
        )
    }

    /// Every checkpoint ends up as the store's latest anchor, the first of each hour in the
    /// history; a log that does not hold the latest anchor at start leaves it as lost, audited.
    #[test]
    fn checkpoints_are_anchored_and_a_missing_anchor_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
        let key = Arc::new(SoftwareSigner::generate("cp", KeyAlgorithm::EcP256).unwrap());
        let mut anchorer = Anchorer::new();
        let log = AuditLog::open(
            &dir.path().join("log"),
            Some(key.clone()),
            LogOptions {
                checkpoint_every: 3,
                sink: Some(anchorer.sink()),
                ..LogOptions::default()
            },
        )
        .unwrap();
        anchorer.start(store.clone(), "n1", None).unwrap();
        for i in 1..=7 {
            log.append_blocking(vec![rec(i)]).unwrap();
        }
        log.checkpoint_blocking().unwrap();
        anchorer.flusher().flush();
        let set = anchor_set(store.as_ref(), "n1", &[]).unwrap();
        let latest = set.latest.unwrap();
        assert_eq!(latest.seq, 7);
        assert_eq!(latest.checkpoint().unwrap(), log.last_checkpoint().unwrap());
        assert_eq!(set.history.len(), 1, "{:?}", set.history);
        assert!(set.lost.is_empty());
        assert_eq!(check_at_start(store.as_ref(), "n1", &log).unwrap(), None);

        // Another (empty) log in its place: the anchor is kept as lost, with an audit record.
        let other = AuditLog::open(&dir.path().join("other"), None, LogOptions::default()).unwrap();
        let lost = check_at_start(store.as_ref(), "n1", &other)
            .unwrap()
            .unwrap();
        assert_eq!((lost.anchor.seq, lost.log_records), (7, 0));
        let set = anchor_set(store.as_ref(), "n1", &[]).unwrap();
        assert_eq!(set.lost, vec![lost]);
        let last = store.audit_len().unwrap();
        let audit = store.audit_range(last, 1).unwrap();
        assert_eq!(audit[0].record.kind, "atna.anchor_missing");
    }

    /// The certificates of the keys asked about come with their status (a revoked checkpoint
    /// certificate limits which checkpoints `audit verify` trusts).
    #[test]
    fn anchor_set_returns_certificates_by_key_with_their_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = cps_store::SledStore::open(dir.path()).unwrap();
        let id = [7u8; 32];
        let record = cps_store::CertificateRecord {
            issuer: "organisations".into(),
            serial: vec![0x0a, 0x1b],
            subject: "CN=cps-trust audit checkpoints".into(),
            profile: crate::CHECKPOINT_PROFILE.into(),
            holder: Some("appliance:audit-checkpoint".into()),
            spki_sha256: id,
            not_before: 1_790_000_000,
            not_after: 1_890_000_000,
            der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            status: cps_store::CertStatus::Revoked {
                time: 1_800_000_000,
                reason: 1,
                invalidity_date: None,
            },
            issued_at: 1_790_000_000,
        };
        store
            .commit(WriteBatch::new().with(WriteOp::InsertCertificate(record)))
            .unwrap();
        let set = anchor_set(&store, "n1", &[id, [8u8; 32]]).unwrap();
        assert_eq!(set.certificates.len(), 1);
        let c = &set.certificates[0];
        assert_eq!(
            (
                c.key_id.as_str(),
                c.serial.as_str(),
                c.status.as_str(),
                c.revocation_time
            ),
            (
                hex::encode(id).as_str(),
                "0A1B",
                "revoked",
                Some(1_800_000_000)
            )
        );
        assert!(c.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
