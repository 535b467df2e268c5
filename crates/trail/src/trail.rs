//! The trail: the appliance's audit records → DICOM audit messages → the local log and the
//! outgoing queue.
//!
//! * **Outgoing**: every security event is first an [`AuditRecord`] committed in the store with
//!   the change it describes (durable before acknowledged), naming the node that committed it.
//!   The forwarder follows the store's audit table from this node's persisted cursor, takes
//!   this node's records only (each node of a cluster keeps its own log), turns each into a DICOM audit message
//!   ([`cps_atna::mapping::to_dicom`]), appends it to the appliance's own tamper-evident log, and
//!   enqueues it in the durable queue that the [`cps_atna::Sender`] delivers to every configured
//!   repository over mutual TLS (the appliance's own node certificate, given by the caller). A
//!   crash between enqueue and cursor update repeats a message (at least once), never loses one.
//!   Events that change no state (an assertion validated or refused, thousands a second) skip
//!   the store: the [`AuditWriter`] from [`Atna::writer`] writes them straight into the queue
//!   and the log, several at a time, and the caller is answered once they are durable there.
//! * **Incoming**: the syslog-TLS repository accepts only registered nodes
//!   ([`crate::nodes::Nodes::authorize`]) whose certificate our live state holds valid, and
//!   appends to the hash-chained log. Open connections are authorized again whenever a
//!   certificate or the node registry changes and at least every `reauthorize_seconds`; TLS
//!   sessions are never resumed on this listener (the caller's server configuration), so every
//!   connection presents its certificate to the verifier. Refused peers are counted in memory and
//!   audited as one record per source and interval ([`crate::refusals`]), never one durable
//!   write per attempt.
//! * **Checkpoints**: the log is signed every `checkpoint_every` records or `checkpoint_seconds`
//!   by the caller's checkpoint signer (an HSM key behind the clock gate, certified with the
//!   `audit-checkpoint` profile); each checkpoint is anchored in the store and sent to the
//!   destinations ([`crate::anchor`]); `audit verify` trusts the key by its chain to the root
//!   ([`crate::verify`]).
//! * **Disk full** ([`WriteGuard`]): the trail refuses to write while the guard says the disk is
//!   below its reserve, the forwarder waits, and the repository stops reading.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cps_atna::events::AuditContext;
use cps_atna::mapping::{fallback_alert, to_dicom};
use cps_atna::{AuditLog, Auditor, LogOptions, NewRecord, Queue, QueueOptions};
use cps_hsm::Signer;
use cps_store::{AuditRecord, Store, WriteBatch, WriteOp};
use rustls::pki_types::CertificateDer;

use crate::CHECKPOINT_CERTS;
use crate::nodes::Nodes;
use crate::settings::TrailSettings;

/// How long the forwarder waits before asking a guard that refused again.
const GUARD_RETRY: Duration = Duration::from_secs(1);

/// Why the trail cannot start or write its files.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// A file or directory of the trail.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// A setting that cannot be used (an address, a server name).
    #[error("{0}")]
    Settings(String),
    /// The log, the queue, the repository or the sender could not start.
    #[error("{0}")]
    Start(String),
}

fn io(path: &Path, e: std::io::Error) -> TrailError {
    TrailError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Holds writes back while the disk is below its reserve (the appliance's disk guard).
pub trait WriteGuard: Send + Sync {
    /// Checks the free space now: `Err(reason)` while writes must wait.
    fn check_now(&self) -> Result<(), String>;
    /// The last check's verdict, without I/O.
    fn admit(&self) -> Result<(), String>;
    /// Holds the reason while writes are paused (the repository stops reading meanwhile).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>>;
}

/// Add `chain` (certificate, issuer) to the log directory's certificate file unless the
/// certificate is there already (written whole to a temporary file, then renamed).
pub fn keep_checkpoint_certificate(log_dir: &Path, chain: &[Vec<u8>]) -> Result<(), TrailError> {
    let path = log_dir.join(CHECKPOINT_CERTS);
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&path, e)),
    };
    let have = cps_pki::pem_certificates(&existing);
    let Some(leaf) = chain.first() else {
        return Ok(());
    };
    if have.contains(leaf) {
        return Ok(());
    }
    let mut text = existing;
    for der in chain {
        text.push_str(&cps_pki::pem_encode("CERTIFICATE", der));
    }
    std::fs::create_dir_all(log_dir).map_err(|e| io(log_dir, e))?;
    let tmp = log_dir.join(format!(".{CHECKPOINT_CERTS}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(log_dir)?.sync_all()
    };
    write().map_err(|e| io(&path, e))
}

/// Refuses TLS clients that are not registered, active nodes with a valid certificate; counts
/// refusals for the aggregated `atna.refused` audit records.
struct NodeGate {
    nodes: Nodes,
    refusals: Arc<crate::refusals::Refusals>,
}

impl cps_atna::NodeAuthorizer for NodeGate {
    fn authorize(
        &self,
        chain: &[CertificateDer<'_>],
        _node: &cps_atna::NodeIdentity,
    ) -> Result<(), String> {
        let leaf = chain.first().ok_or("no client certificate")?;
        match self.nodes.authorize(leaf.as_ref(), cps_ct::unix_now()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("the client certificate is not registered as a node".into()),
            Err(e) => Err(format!("node registry unavailable: {e}")),
        }
    }

    /// On the runtime, at the rate peers can open connections: a counter, no I/O.
    fn refused(
        &self,
        peer: std::net::SocketAddr,
        node: Option<&cps_atna::NodeIdentity>,
        reason: &str,
    ) {
        let _ = node;
        self.refusals
            .refused(peer.ip(), refusal_reason(reason), cps_ct::unix_now());
    }
}

/// The reason a refusal is counted under: the kind of failure, without the per-attempt details
/// (a handshake error names the alert; a node refusal names the certificate).
fn refusal_reason(reason: &str) -> &str {
    for (prefix, kind) in [
        ("TLS handshake timed out", "TLS handshake timed out"),
        ("TLS handshake failed", "TLS handshake failed"),
        ("no client certificate", "no client certificate"),
        ("not a registered node", "not a registered node"),
        ("connection limit", "connection limit reached"),
    ] {
        if reason.starts_with(prefix) {
            return kind;
        }
    }
    reason
}

/// The running ATNA services.
pub struct Atna {
    pub log: AuditLog,
    pub repository: Option<cps_atna::Repository>,
    pub sender: Option<cps_atna::Sender>,
    trail: Arc<Trail>,
    /// The forwarder, the refusal flusher and the re-authorization signal.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    anchors: crate::anchor::Flusher,
    /// Keeps the anchoring thread's handle.
    _anchorer: crate::anchor::Anchorer,
}

/// Where the appliance's own audit messages go: the local log and, when repositories are
/// configured, the outgoing queue.
pub struct Trail {
    auditor: Auditor,
    log: AuditLog,
    ctx: AuditContext,
    forward_to_destinations: bool,
    /// Writes are refused while the disk is below its reserve.
    guard: Option<Arc<dyn WriteGuard>>,
}

impl Trail {
    pub fn new(
        auditor: Auditor,
        log: AuditLog,
        ctx: AuditContext,
        forward_to_destinations: bool,
    ) -> Trail {
        Trail {
            auditor,
            log,
            ctx,
            forward_to_destinations,
            guard: None,
        }
    }

    /// The same trail, refusing to write while `guard` says the disk is full.
    pub fn guarded(mut self, guard: Arc<dyn WriteGuard>) -> Trail {
        self.guard = Some(guard);
        self
    }

    /// `record` as an RFC 5424 + DICOM message and its log record. A record whose DICOM
    /// mapping fails goes out as a plain security alert that carries its kind and detail
    /// (never a silent gap in the trail); `None` only if not even that can be formatted.
    fn format(&self, record: &AuditRecord) -> Option<(Vec<u8>, NewRecord)> {
        let at = ::time::OffsetDateTime::from_unix_timestamp(record.time)
            .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
        let msg = to_dicom(&self.ctx, record);
        let (msg, bytes) = match self.auditor.format(&msg, at) {
            Ok(b) => (msg, b),
            Err(err) => {
                tracing::error!(kind = %record.kind, error = %err, "audit record cannot be mapped to its DICOM event; sent as a security alert");
                let fallback = fallback_alert(&self.ctx, record);
                match self.auditor.format(&fallback, at) {
                    Ok(b) => (fallback, b),
                    Err(err) => {
                        tracing::error!(kind = %record.kind, error = %err, "audit record cannot be formatted");
                        return None;
                    }
                }
            }
        };
        let rec = NewRecord::local_message(record.time * 1_000_000, &bytes, &msg);
        Some((bytes, rec))
    }

    /// Format `records` and make them durable: in the outgoing queue (one write and one
    /// `fdatasync` for all, if repositories are configured), then in the local log (one
    /// `fdatasync`). Blocking.
    pub fn write(&self, records: &[AuditRecord]) -> Result<(), String> {
        if let Some(g) = &self.guard {
            g.check_now()?;
        }
        let (payloads, log_records): (Vec<Vec<u8>>, Vec<NewRecord>) =
            records.iter().filter_map(|r| self.format(r)).unzip();
        if log_records.is_empty() {
            return Ok(());
        }
        if self.forward_to_destinations {
            let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            self.auditor
                .queue()
                .enqueue_batch(&payloads)
                .map_err(|e| format!("audit queue: {e}"))?;
        }
        self.log
            .append_blocking(log_records)
            .map(|_| ())
            .map_err(|e| format!("audit log: {e}"))
    }
}

impl Atna {
    /// A writer of records straight into the trail, for events that change no state (the
    /// validation of an assertion): no store transaction, and no store → forwarder round trip.
    pub fn writer(&self) -> AuditWriter {
        self.writer_observed(Arc::new(|_| {}))
    }

    /// [`Atna::writer`], calling `observer` with each record once it is durable (as
    /// [`cps_store::NodeStore::with_audit_observer`] does for the records the store commits).
    pub fn writer_observed(&self, observer: cps_store::AuditObserver) -> AuditWriter {
        let trail = self.trail.clone();
        AuditWriter::spawn(Arc::new(move |records: Vec<AuditRecord>| {
            trail.write(&records)?;
            for r in &records {
                observer(r);
            }
            Ok(())
        }))
    }

    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(r) = self.repository {
            r.shutdown().await;
        }
        // The last records signed, and that checkpoint anchored, before the sender stops.
        if let Err(e) = self.log.checkpoint().await {
            tracing::error!(error = %e, "final audit log checkpoint failed");
        }
        let anchors = self.anchors.clone();
        let _ = tokio::task::spawn_blocking(move || anchors.flush()).await;
        if let Some(s) = self.sender {
            s.shutdown().await;
        }
    }
}

/// What [`start`] needs from the appliance.
pub struct Start<'a> {
    /// The `[audit]` settings.
    pub settings: &'a TrailSettings,
    /// The repository's syslog-TLS address (`listen.syslog_tls`).
    pub syslog_tls: &'a str,
    /// The appliance's host name in its messages.
    pub host: String,
    /// This node's id (`[cluster] node_id`): whose records the forwarder takes, whose anchors
    /// the log's checkpoints are, and the `AuditSourceID` of its messages
    /// (`<audit.source_id>/<node>`).
    pub node: String,
    /// The log and the outgoing queue directories.
    pub log_dir: PathBuf,
    pub queue_dir: PathBuf,
    /// Signs the log's checkpoints (behind the clock gate), and its certificate chain
    /// (certificate, issuing CA), kept in the log directory.
    pub checkpoint: Arc<dyn Signer>,
    pub checkpoint_chain: Vec<Vec<u8>>,
    /// The mutual-TLS client towards the destinations (the appliance's node certificate);
    /// required when destinations are configured.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// The repository's TLS server configuration (no session resumption); required when the
    /// repository is on.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub store: Arc<dyn Store>,
    /// The registry the API changes (its change signal re-authorizes open connections).
    pub nodes: Nodes,
    /// Holds writes back while the disk is full.
    pub guard: Arc<dyn WriteGuard>,
}

/// Open the log, start the repository listener, the sender and the forwarder.
pub async fn start(s: Start<'_>) -> Result<Atna, TrailError> {
    let a = s.settings;
    let Start {
        log_dir,
        queue_dir,
        store,
        nodes,
        guard,
        ..
    } = s;
    // The log, its certified checkpoint key and its anchors.
    keep_checkpoint_certificate(&log_dir, &s.checkpoint_chain)?;
    let mut anchorer = crate::anchor::Anchorer::new();
    let options = LogOptions {
        checkpoint_every: a.checkpoint_every,
        checkpoint_interval: Duration::from_secs(u64::from(a.checkpoint_seconds)),
        sink: Some(anchorer.sink()),
        ..LogOptions::default()
    };
    let log = AuditLog::open(&log_dir, Some(s.checkpoint), options)
        .map_err(|e| TrailError::Start(format!("audit log {}: {e}", log_dir.display())))?;
    let node = s.node;
    let legacy = crate::cluster::adopt_legacy(store.as_ref(), &node)
        .map_err(|e| TrailError::Start(format!("audit state of the store: {e}")))?;
    crate::cluster::register(store.as_ref(), &node, &s.host, cps_ct::unix_now())
        .map_err(|e| TrailError::Start(format!("registering node {node}: {e}")))?;
    crate::anchor::check_at_start(store.as_ref(), &node, &log)
        .map_err(|e| TrailError::Start(format!("audit log anchors: {e}")))?;

    let mut tasks = Vec::new();
    let repository = if a.repository {
        let tls_addr = s
            .syslog_tls
            .parse()
            .map_err(|_| TrailError::Settings("listen.syslog_tls is not an address:port".into()))?;
        let udp_addr = match &a.udp {
            Some(u) => Some(u.parse().map_err(|_| {
                TrailError::Settings(format!("audit.udp '{u}' is not an address:port"))
            })?),
            None => None,
        };
        let refusals = Arc::new(crate::refusals::Refusals::new(
            cps_audit::AuditEvent::SyslogPeersRefused,
        ));
        tasks.push(refusals.clone().spawn_flusher(
            store.clone(),
            Duration::from_secs(u64::from(a.refusal_summary_seconds)),
        ));
        let server_tls = s.server_tls.ok_or_else(|| {
            TrailError::Settings("the audit record repository needs its TLS configuration".into())
        })?;
        let (reauthorize, reauthorize_rx) = tokio::sync::watch::channel(0u64);
        tasks.push(tokio::spawn(signal_authorization_changes(
            store.clone(),
            nodes.subscribe(),
            reauthorize,
        )));
        let repo = cps_atna::Repository::start(
            cps_atna::RepositoryConfig {
                tls_addr,
                udp_addr,
                reauthorize_every: Duration::from_secs(u64::from(a.reauthorize_seconds)),
                reauthorize_on: Some(reauthorize_rx),
                writes_paused: Some(guard.subscribe()),
                ..Default::default()
            },
            server_tls,
            Arc::new(NodeGate { nodes, refusals }),
            log.clone(),
        )
        .await
        .map_err(|e| {
            TrailError::Start(format!(
                "cannot listen on {} (listen.syslog_tls): {e}",
                s.syslog_tls
            ))
        })?;
        tracing::info!(syslog_tls = %repo.local_addr(), "audit record repository up");
        Some(repo)
    } else {
        None
    };

    // Outgoing: queue, sender, forwarder.
    let names: Vec<&str> = a.destinations.iter().map(|d| d.name.as_str()).collect();
    let queue = Queue::open(&queue_dir, &names, QueueOptions::default())
        .map_err(|e| TrailError::Start(format!("audit queue: {e}")))?;
    let sender = if a.destinations.is_empty() {
        None
    } else {
        let client = s.client_tls.ok_or_else(|| {
            TrailError::Settings("audit destinations need the node's TLS client".into())
        })?;
        let mut dests = Vec::new();
        for d in &a.destinations {
            let server_name = rustls::pki_types::ServerName::try_from(d.server_name.clone())
                .map_err(|e| {
                    TrailError::Settings(format!(
                        "audit destination '{}': server_name '{}': {e}",
                        d.name, d.server_name
                    ))
                })?;
            dests.push(cps_atna::Destination {
                name: d.name.clone(),
                address: d.address.clone(),
                server_name,
                tls: client.clone(),
            });
        }
        Some(
            cps_atna::Sender::spawn(queue.clone(), dests, cps_atna::SenderOptions::default())
                .map_err(|e| TrailError::Start(format!("audit sender: {e}")))?,
        )
    };
    let ctx = AuditContext {
        source_id: format!("{}/{node}", a.source_id),
        site_id: None,
        host: s.host,
    };
    let auditor = Auditor::new(queue, &ctx.host, "cps-trust");
    let destinations = (!a.destinations.is_empty()).then(|| crate::anchor::Destinations {
        auditor: auditor.clone(),
        ctx: ctx.clone(),
        log_id: format!("urn:cps-trust:{}:{node}:audit-log", a.source_id),
    });
    anchorer
        .start(store.clone(), &node, destinations)
        .map_err(|e| io(&log_dir, e))?;
    let trail = Arc::new(
        Trail::new(auditor, log.clone(), ctx, !a.destinations.is_empty()).guarded(guard.clone()),
    );
    tasks.push(tokio::spawn(forward(
        store,
        Mine { node, legacy },
        trail.clone(),
        guard,
    )));
    Ok(Atna {
        log,
        repository,
        sender,
        trail,
        tasks,
        anchors: anchorer.flusher(),
        _anchorer: anchorer,
    })
}

/// How often the store's certificates version is compared with the last one seen.
const CERTIFICATES_POLL: Duration = Duration::from_millis(250);

/// Bumps `signal` whenever a certificate is issued or changes status (the store's
/// certificates version) or the node registry changes: every open syslog-TLS connection then
/// asks the node gate again.
async fn signal_authorization_changes(
    store: Arc<dyn Store>,
    mut nodes: tokio::sync::watch::Receiver<u64>,
    signal: tokio::sync::watch::Sender<u64>,
) {
    let mut seen = store.certificates_version();
    let mut tick = tokio::time::interval(CERTIFICATES_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut registry = true;
    loop {
        tokio::select! {
            r = nodes.changed(), if registry => {
                // A registry that is gone changes no more: certificates alone from then on.
                registry = r.is_ok();
                signal.send_modify(|v| *v += 1);
            }
            _ = tick.tick() => {
                let now = store.certificates_version();
                if now != seen || now.is_none() {
                    seen = now;
                    signal.send_modify(|v| *v += 1);
                }
            }
        }
    }
}

/// Durable audit records for high-rate, stateless requests (assertion validation), without a
/// thread per waiting request: records are queued to one task that hands whatever has
/// accumulated to its sink at once (one flush for all), then answers every waiter. A caller is
/// answered only once its record is durable; under load the batch grows with the number of
/// requests in flight, so the flush is shared by all of them.
#[derive(Clone)]
pub struct AuditWriter {
    tx: tokio::sync::mpsc::Sender<(
        AuditRecord,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    )>,
}

/// Makes a batch of records durable (blocking), or says why it could not.
pub type AuditSink = Arc<dyn Fn(Vec<AuditRecord>) -> Result<(), String> + Send + Sync>;

/// Records per batch, at most.
const AUDIT_WRITER_BATCH: usize = 1024;

impl AuditWriter {
    /// Start the writer task (on the current Tokio runtime); batches go to `sink` on a
    /// blocking thread.
    pub fn spawn(sink: AuditSink) -> AuditWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(
            AuditRecord,
            tokio::sync::oneshot::Sender<Result<(), String>>,
        )>(16 * AUDIT_WRITER_BATCH);
        tokio::spawn(async move {
            let mut pending = Vec::with_capacity(AUDIT_WRITER_BATCH);
            while rx.recv_many(&mut pending, AUDIT_WRITER_BATCH).await > 0 {
                let (records, waiters): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut pending).into_iter().unzip();
                let sink = sink.clone();
                let r = tokio::task::spawn_blocking(move || sink(records))
                    .await
                    .unwrap_or_else(|e| Err(format!("audit writer task: {e}")));
                if let Err(e) = &r {
                    tracing::error!(error = %e, records = waiters.len(), "cannot write audit records");
                }
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        });
        AuditWriter { tx }
    }

    /// Write `record`; returns once it is durable, or why it is not.
    pub async fn record(&self, record: AuditRecord) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((record, tx))
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}

/// Which of the store's audit records are this node's.
#[derive(Clone)]
struct Mine {
    node: String,
    /// This node took over a store written before nodes existed: records without a node are
    /// its own too.
    legacy: bool,
}

impl Mine {
    fn owns(&self, record: &AuditRecord) -> bool {
        match &record.node {
            Some(n) => *n == self.node,
            None => self.legacy,
        }
    }
}

/// Follows the store's audit table: each record of this node becomes a DICOM message in the
/// local log and in the outgoing queue; the node's cursor is persisted after both (it passes
/// the other nodes' records by). Waits while the disk is full.
async fn forward(store: Arc<dyn Store>, mine: Mine, trail: Arc<Trail>, guard: Arc<dyn WriteGuard>) {
    let cursor_key = crate::cluster::cursor_key(&mine.node);
    let mut cursor = store
        .get_meta(&cursor_key)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    loop {
        if guard.admit().is_err() {
            tokio::time::sleep(GUARD_RETRY).await;
            continue;
        }
        let store2 = store.clone();
        let batch = tokio::task::spawn_blocking(move || store2.audit_range(cursor + 1, 256))
            .await
            .unwrap_or_else(|e| Err(cps_store::StoreError::Invalid(e.to_string())));
        let entries = match batch {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "audit forwarder cannot read the store");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if entries.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let work = {
            let (store, trail, mine, key) = (
                store.clone(),
                trail.clone(),
                mine.clone(),
                cursor_key.clone(),
            );
            move || forward_batch(&*store, &trail, &mine, &key, entries)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(last)) => {
                cursor = last;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit forwarding failed; retrying the batch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit forwarding task failed; retrying the batch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One batch of store audit records into the trail (see [`Trail::write`]), then the cursor
/// saved. Runs on a blocking thread: formatting and the flushes would otherwise hold a runtime
/// worker. Returns the new cursor; on error nothing advances, and the batch is retried (a
/// destination may then receive a message twice, never none).
fn forward_batch(
    store: &dyn Store,
    trail: &Trail,
    mine: &Mine,
    cursor_key: &str,
    entries: Vec<cps_store::AuditEntry>,
) -> Result<u64, String> {
    let last = entries.last().map_or(0, |e| e.seq);
    let records: Vec<AuditRecord> = entries
        .into_iter()
        .map(|e| e.record)
        .filter(|r| mine.owns(r))
        .collect();
    trail.write(&records)?;
    store
        .commit(WriteBatch::new().with(WriteOp::PutMeta {
            key: cursor_key.into(),
            value: last.to_string().into_bytes(),
        }))
        .map_err(|e| format!("audit cursor: {e}"))?;
    Ok(last)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: 1_790_000_000,
            kind: "xua.validate".into(),
            actor: "operator:svc".into(),
            outcome: "success".into(),
            detail: serde_json::json!({ "n": i }),
            node: None,
        }
    }

    /// A guard that always says the disk is full.
    struct Full(tokio::sync::watch::Sender<Option<String>>);

    impl WriteGuard for Full {
        fn check_now(&self) -> Result<(), String> {
            Err("disk full: below the reserve".into())
        }
        fn admit(&self) -> Result<(), String> {
            self.check_now()
        }
        fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
            self.0.subscribe()
        }
    }

    /// A sink that fails (a full disk) fails the records of that batch only: the writer keeps
    /// serving, and answers the next records once the sink works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_writer_serves_again_once_its_sink_works() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let broken = Arc::new(AtomicBool::new(true));
        let written = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (broken, written) = (broken.clone(), written.clone());
            AuditWriter::spawn(Arc::new(move |records: Vec<AuditRecord>| {
                if broken.load(Ordering::SeqCst) {
                    return Err("audit log: No space left on device (os error 28)".into());
                }
                written.fetch_add(records.len(), Ordering::SeqCst);
                Ok(())
            }))
        };
        for i in 0..5 {
            let e = writer.record(record(i)).await.unwrap_err();
            assert!(e.contains("No space left"), "{e}");
        }
        broken.store(false, Ordering::SeqCst);
        for i in 0..5 {
            writer.record(record(i)).await.unwrap();
        }
        assert_eq!(written.load(Ordering::SeqCst), 5);
    }

    /// A guarded trail writes nothing while the disk is below its reserve.
    #[test]
    fn a_guarded_trail_refuses_to_write_on_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("log"), None, LogOptions::default()).unwrap();
        let queue =
            Queue::open(&dir.path().join("queue"), &["r"], QueueOptions::default()).unwrap();
        let ctx = AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        };
        let guard = Arc::new(Full(tokio::sync::watch::channel(None).0));
        let trail = Trail::new(
            Auditor::new(queue.clone(), &ctx.host, "cps-trust"),
            log.clone(),
            ctx,
            true,
        )
        .guarded(guard);
        // The guard is asked before anything is formatted or written.
        let e = trail.write(&[record(1)]).unwrap_err();
        assert!(e.contains("disk full"), "{e}");
        assert_eq!(log.len(), 0);
        assert_eq!(queue.last_seq(), 0);
    }

    /// Every record is in the log, searchable, and in the outgoing queue when its caller is
    /// answered, exactly once; concurrent callers share the flushes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_writer_answers_once_the_trail_has_the_record_and_batches() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("log"), None, LogOptions::default()).unwrap();
        let queue = Queue::open(
            &dir.path().join("queue"),
            &["repository"],
            QueueOptions::default(),
        )
        .unwrap();
        let ctx = AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        };
        let trail = Arc::new(Trail::new(
            Auditor::new(queue.clone(), &ctx.host, "cps-trust"),
            log.clone(),
            ctx,
            true,
        ));
        let batches = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (trail, batches) = (trail.clone(), batches.clone());
            AuditWriter::spawn(Arc::new(move |records: Vec<AuditRecord>| {
                batches.fetch_add(1, Ordering::SeqCst);
                trail.write(&records)
            }))
        };
        let idnat = |i: usize| format!("8100{i:08}");
        let n = 400;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (w, log) = (writer.clone(), log.clone());
                tokio::spawn(async move {
                    let rec = cps_audit::AuditEvent::AssertionValidated {
                        assertion_id: format!("_a{i}"),
                        idnat_ps: idnat(i),
                        purpose_of_use: "normal".into(),
                        patient_ins: Some("248079707503828".into()),
                    }
                    .record(1_790_000_000, "operator:svc");
                    w.record(rec).await.unwrap();
                    // Answered: the record is in the log already, indexed by its professional.
                    let filter = cps_atna::SearchFilter {
                        user: Some(idnat(i)),
                        ..Default::default()
                    };
                    let page = log.search(&filter, 10, None).unwrap();
                    assert_eq!(
                        page.records.len(),
                        1,
                        "record {i} answered before it was logged"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.len(), n as u64, "a record was logged twice or lost");
        assert_eq!(queue.backlog("repository").unwrap(), n as u64);
        let by_patient = cps_atna::SearchFilter {
            patient: Some("248079707503828".into()),
            ..Default::default()
        };
        assert_eq!(
            log.search(&by_patient, 1000, None).unwrap().records.len(),
            n
        );
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            batches < n,
            "{batches} batches for {n} concurrent records: no batching"
        );
    }

    /// A guard that always admits.
    pub(crate) struct Room(pub(crate) tokio::sync::watch::Sender<Option<String>>);

    impl WriteGuard for Room {
        fn check_now(&self) -> Result<(), String> {
            Ok(())
        }
        fn admit(&self) -> Result<(), String> {
            Ok(())
        }
        fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
            self.0.subscribe()
        }
    }

    /// Polls `done` every 20 ms for up to 30 s (the forwarder runs on its own schedule).
    pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..1500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what} did not happen within 30 s");
    }

    /// The trail built in process from a software checkpoint signer, a store on disk and its
    /// settings: a record committed in the store reaches the log as its DICOM message (found by
    /// its professional), the cursor follows it, a record of the writer is durable when
    /// answered, and a restart forwards nothing twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_committed_in_the_store_reach_the_log_once() {
        use cps_hsm::{KeyAlgorithm, SoftwareSigner};
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Store> =
            Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
        let store: Arc<dyn Store> = Arc::new(cps_store::NodeStore::new(shared, "n1").unwrap());
        let settings = TrailSettings {
            repository: false,
            ..TrailSettings::default()
        };
        let start_trail = |store: Arc<dyn Store>| {
            let signer: Arc<dyn Signer> =
                Arc::new(SoftwareSigner::generate("checkpoint", KeyAlgorithm::EcP256).unwrap());
            start(Start {
                settings: &settings,
                syslog_tls: "127.0.0.1:0",
                host: "cps-trust.localhost".into(),
                node: "n1".into(),
                log_dir: dir.path().join("log"),
                queue_dir: dir.path().join("queue"),
                checkpoint: signer,
                checkpoint_chain: Vec::new(),
                client_tls: None,
                server_tls: None,
                nodes: Nodes::new(store.clone()),
                store,
                guard: Arc::new(Room(tokio::sync::watch::channel(None).0)),
            })
        };
        let atna = start_trail(store.clone()).await.unwrap();
        let event = |idnat: &str| cps_audit::AuditEvent::AssertionValidated {
            assertion_id: format!("_{idnat}"),
            idnat_ps: idnat.into(),
            purpose_of_use: "normal".into(),
            patient_ins: None,
        };
        store
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(
                event("810000000001").record(1_790_000_000, "operator:alice"),
            )))
            .unwrap();
        let by = |idnat: &str| cps_atna::SearchFilter {
            user: Some(idnat.into()),
            ..Default::default()
        };
        let log = atna.log.clone();
        eventually("the store's record in the log", || {
            log.search(&by("810000000001"), 10, None)
                .map(|p| p.records.len() == 1)
                .unwrap_or(false)
        })
        .await;
        let cursor = || {
            store
                .get_meta(&crate::cluster::cursor_key("n1"))
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        };
        eventually("the cursor saved", || cursor().as_deref() == Some("1")).await;
        atna.writer()
            .record(event("810000000002").record(1_790_000_001, "operator:svc"))
            .await
            .unwrap();
        assert_eq!(
            log.search(&by("810000000002"), 10, None)
                .unwrap()
                .records
                .len(),
            1,
            "answered before durable"
        );
        atna.shutdown().await;

        // Started again over the same store and log: the forwarded record is not repeated.
        let atna = start_trail(store.clone()).await.unwrap();
        store
            .commit(WriteBatch::new().with(WriteOp::AppendAudit(
                event("810000000003").record(1_790_000_002, "operator:alice"),
            )))
            .unwrap();
        let log = atna.log.clone();
        eventually("the second store record in the log", || {
            log.search(&by("810000000003"), 10, None)
                .map(|p| p.records.len() == 1)
                .unwrap_or(false)
        })
        .await;
        assert_eq!(
            log.search(&by("810000000001"), 10, None)
                .unwrap()
                .records
                .len(),
            1
        );
        assert_eq!(log.len(), 3);
        atna.shutdown().await;
    }
}
