//! IHE ATNA in the appliance.
//!
//! * **Outgoing**: every security event is first an [`AuditRecord`] committed in the store with
//!   the change it describes (durable before acknowledged). The forwarder follows the store's
//!   audit table from a persisted cursor, turns each record into a DICOM audit message
//!   ([`to_dicom`]), appends it to the appliance's own tamper-evident log, and enqueues it in
//!   the durable queue that the [`cps_atna::Sender`] delivers to every configured repository over
//!   mutual TLS (the appliance's own `node-tls` certificate, key in the HSM). A crash between
//!   enqueue and cursor update repeats a message (at least once), never loses one.
//!   Events that change no state (an assertion validated or refused, thousands a second) skip
//!   the store: the [`AuditWriter`] from [`Atna::writer`] writes them straight into the queue
//!   and the log, several at a time, and the caller is answered once they are durable there.
//! * **Incoming**: the syslog-TLS repository (`listen.syslog_tls`) accepts only registered
//!   nodes ([`crate::nodes::Nodes::authorize`]) whose certificate our live state holds valid,
//!   and appends to the hash-chained log. Open connections
//!   are authorized again whenever a certificate or the node registry changes and at least
//!   every `audit.reauthorize_seconds`; TLS sessions are never resumed on this listener, so
//!   every connection presents its certificate to the verifier. Refused peers are counted in
//!   memory and audited as one `atna.refused` record per source and interval
//!   ([`crate::refusals`]), never one durable write per attempt.
//! * **Checkpoints**: the log is signed every `audit.checkpoint_every` records or
//!   `audit.checkpoint_seconds` by an HSM key behind the clock gate, certified by the
//!   organisations CA with the `audit-checkpoint` profile ([`checkpoint_credential`]); each
//!   checkpoint is anchored in the store and sent to the destinations
//!   ([`crate::audit_anchor`]); `audit verify` trusts the key by its chain to the root
//!   ([`crate::audit_verify`]).
//! * **Disk full** ([`crate::disk`]): the trail refuses to write while the guard says the
//!   disk is below its reserve, the forwarder waits, and the repository stops reading.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cps_atna::events::{self, AuditContext, Person};
use cps_atna::{AuditLog, AuditMessage, Auditor, LogOptions, NewRecord, Queue, QueueOptions};
use cps_hsm::{Hsm, HsmKey, Signer};
use cps_store::{AuditRecord, Store, WriteBatch, WriteOp};
use rustls::pki_types::CertificateDer;

use crate::ca::CaService;
use crate::config::Config;
use crate::error::ApplianceError;
use crate::nodes::Nodes;

pub use crate::home::{LOG_DIR, QUEUE_DIR};
/// The checkpoint key's certificate chain (certificate, issuing CA), made at first start.
pub const CHECKPOINT_CERT_FILE: &str = "audit/checkpoint.pem";
/// In the log directory: every certificate that signed its checkpoints, each followed by its
/// issuing CA, so that a copy of the directory carries them (trust comes from the chain to the
/// root, not from this file).
pub const CHECKPOINT_CERTS: &str = "checkpoint-certs.pem";
/// The public key file `audit verify` used to trust before checkpoint keys were certified;
/// removed at start (it has no role any more).
const LEGACY_CHECKPOINT_KEY_FILE: &str = "audit/checkpoint-key.pem";
pub use crate::ca::CHECKPOINT_PROFILE;
/// Its extended key usage: a private purpose no other verifier accepts.
pub const CHECKPOINT_EKU: &str = "1.3.6.1.4.1.32473.3.1";
/// [`CHECKPOINT_EKU`] as DER content bytes.
pub const CHECKPOINT_EKU_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x81, 0xfd, 0x59, 0x03, 0x01];
/// The appliance's own node certificate chain (PEM).
pub const NODE_CERT_FILE: &str = "audit/node.pem";
const CURSOR_META: &str = "atna.forwarded";

fn io(path: &Path, e: std::io::Error) -> ApplianceError {
    ApplianceError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn offset(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn person_of(actor: &str) -> Person {
    let id = actor
        .split_once(':')
        .map(|(_, id)| id)
        .unwrap_or(actor)
        .to_owned();
    Person::id(id)
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

/// The DICOM audit message of a store audit record.
pub fn to_dicom(ctx: &AuditContext, rec: &AuditRecord) -> AuditMessage {
    let now = offset(rec.time);
    let actor = person_of(&rec.actor);
    let d = &rec.detail;
    let failed = rec.outcome != "success";
    let cert = |holder: Option<&str>| events::CertificateRef {
        serial_hex: s(d, "serial").unwrap_or("").to_owned(),
        subject: s(d, "subject").unwrap_or("").to_owned(),
        issuer: s(d, "ca").or(s(d, "issuer")).unwrap_or("").to_owned(),
        holder: holder.map(Person::id),
    };
    match rec.kind.as_str() {
        "login" => {
            let user = s(d, "idnat_ps")
                .or(s(d, "certificate"))
                .map(Person::id)
                .unwrap_or_else(|| Person::id("unknown"));
            let reason = failed.then(|| s(d, "reason").unwrap_or("refused"));
            events::login(ctx, now, &user, s(d, "source"), reason)
        }
        // Refusals of unauthenticated peers, one record per source and interval
        // (`crate::refusals`).
        "login.refused" | "atna.refused" => {
            let source = s(d, "source").unwrap_or("other sources");
            let summary = format!(
                "{} refused {} from {source} between {} and {}: {}",
                d["count"].as_u64().unwrap_or(0),
                if rec.kind == "login.refused" {
                    "card logins"
                } else {
                    "syslog-TLS connections"
                },
                d["first"].as_i64().unwrap_or(rec.time),
                d["last"].as_i64().unwrap_or(rec.time),
                d["reasons"]
            );
            if rec.kind == "login.refused" {
                events::login(
                    ctx,
                    now,
                    &Person::id("unauthenticated"),
                    s(d, "source"),
                    Some(&summary),
                )
            } else {
                events::security_alert_event(
                    ctx,
                    now,
                    events::AlertKind::NodeAuthentication,
                    cps_atna::EventOutcome::MinorFailure,
                    &summary,
                    None,
                    Some(source),
                )
            }
        }
        "xua.issue" => events::assertion_issued(
            ctx,
            now,
            &Person::id(s(d, "idnat_ps").unwrap_or("unknown")),
            s(d, "assertion_id").unwrap_or(""),
            None,
        ),
        "xua.validate" if !failed => events::assertion_validated(
            ctx,
            now,
            &actor.id,
            &Person::id(s(d, "idnat_ps").unwrap_or("unknown")),
            s(d, "assertion_id").unwrap_or(""),
            s(d, "patient_ins"),
        ),
        "xua.validate" => {
            let code = s(d, "code").unwrap_or("");
            let serious = !matches!(code, "expired" | "not_yet_valid" | "too_large");
            events::assertion_refused(
                ctx,
                now,
                &actor.id,
                None,
                None,
                &format!("{code}: {}", s(d, "reason").unwrap_or("")),
                serious,
            )
        }
        "xua.break_glass" => events::break_glass(
            ctx,
            now,
            &Person::id(s(d, "idnat_ps").unwrap_or("unknown")),
            s(d, "patient_ins").unwrap_or(""),
            events::purpose_of_use("bris_de_glace"),
            None,
        ),
        // A node's enrolment is recorded with its node name and certificate key, not a serial
        // (its certificate's issuance has its own `cert.issue` record): it is a node
        // authentication change, like its removal.
        "cert.issue" | "operator.create" => {
            events::certificate_issued(ctx, now, &actor, &cert(s(d, "holder")))
        }
        "cert.revoke" | "cert.suspend" | "cert.resume" => {
            let change = match rec.kind.as_str() {
                "cert.suspend" => events::RevocationChange::OnHold,
                "cert.resume" => events::RevocationChange::Released,
                _ => events::RevocationChange::Revoked,
            };
            events::certificate_revoked(
                ctx,
                now,
                &actor,
                &cert(s(d, "holder")),
                change,
                s(d, "reason").unwrap_or(""),
            )
        }
        k if k.starts_with("card.") || k.starts_with("enrolment.") => {
            let change = match k {
                "card.suspend" => events::CardChange::Suspended,
                "card.resume" => events::CardChange::Resumed,
                "card.oppose" => events::CardChange::Opposed,
                "card.unblock_pin" => events::CardChange::PinUnblocked,
                "card.secrets_delivered" => events::CardChange::SecretsDelivered,
                _ => events::CardChange::Enrolled,
            };
            events::card_lifecycle(
                ctx,
                now,
                &actor,
                &Person::id(s(d, "idnat_ps").unwrap_or("unknown")),
                s(d, "serial").or(s(d, "card")).unwrap_or(""),
                change,
            )
        }
        other => {
            let kind = match other {
                "time.untrusted" | "time.trusted" | "ca.init" => {
                    events::AlertKind::SecurityConfiguration
                }
                "node.enroll" | "node.remove" => events::AlertKind::NodeAuthentication,
                // New work, audit records included, was refused while the disk was full.
                "disk.full" => events::AlertKind::AuditRecordingStopped,
                // The audit log lost anchored checkpoints while the appliance was stopped.
                "atna.anchor_missing" => events::AlertKind::AuditRecordingStopped,
                k if k.starts_with("professional.") => events::AlertKind::SecurityRolesChanged,
                _ => events::AlertKind::UseOfRestrictedFunction,
            };
            events::security_alert_event(
                ctx,
                now,
                kind,
                if failed {
                    cps_atna::EventOutcome::SeriousFailure
                } else {
                    cps_atna::EventOutcome::Success
                },
                &format!("{}: {}", rec.kind, d),
                Some(&actor),
                None,
            )
        }
    }
}

/// A record whose DICOM mapping failed, as a plain security alert carrying its kind and detail.
fn fallback_alert(ctx: &AuditContext, rec: &AuditRecord) -> AuditMessage {
    events::security_alert_event(
        ctx,
        offset(rec.time),
        events::AlertKind::UseOfRestrictedFunction,
        if rec.outcome == "success" {
            cps_atna::EventOutcome::Success
        } else {
            cps_atna::EventOutcome::SeriousFailure
        },
        &format!("{}: {}", rec.kind, rec.detail),
        None,
        None,
    )
}

/// The checkpoint key and its `audit-checkpoint` certificate chain from our organisations CA,
/// made on first use (see [`crate::ca::ApplianceCredential`]). A home made before checkpoint
/// keys were certified has the key and no certificate: it is certified now.
pub fn checkpoint_credential(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let x = &config.xua;
    crate::ca::ApplianceCredential {
        label: &config.audit.checkpoint_key_label,
        algorithm: cps_hsm::KeyAlgorithm::EcP256,
        profile: CHECKPOINT_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: x.state.clone(),
            name: x.organisation.clone(),
            structure_id: x.structure_id.clone(),
            common_name: format!("{} audit checkpoints", x.organisation),
        },
        holder: format!("appliance:{}", config.audit.checkpoint_key_label),
        file: CHECKPOINT_CERT_FILE,
    }
    .ensure(home, hsm, ca)
}

/// Add `chain` (certificate, issuer) to the log directory's certificate file unless the
/// certificate is there already (written whole to a temporary file, then renamed).
fn keep_checkpoint_certificate(log_dir: &Path, chain: &[Vec<u8>]) -> Result<(), ApplianceError> {
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

/// The appliance's own node certificate (client side of its audit links): a `node-tls`
/// certificate for an HSM key, made on first use.
fn node_credential(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let name = config
        .appliance
        .tls_names
        .first()
        .cloned()
        .unwrap_or_else(|| "cps-trust.localhost".into());
    crate::ca::ApplianceCredential {
        label: &config.audit.node_key_label,
        algorithm: cps_hsm::KeyAlgorithm::EcP256,
        profile: crate::nodes::NODE_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: config.xua.state.clone(),
            name: config.xua.organisation.clone(),
            structure_id: config.xua.structure_id.clone(),
            common_name: name.clone(),
        },
        holder: format!("node:{name}"),
        file: NODE_CERT_FILE,
    }
    .ensure(home, hsm, ca)
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
        match self
            .nodes
            .authorize(leaf.as_ref(), crate::clock::unix_now())
        {
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
            .refused(peer.ip(), refusal_reason(reason), crate::clock::unix_now());
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
    anchors: crate::audit_anchor::Flusher,
    /// Keeps the anchoring thread's handle.
    _anchorer: crate::audit_anchor::Anchorer,
}

/// Where the appliance's own audit messages go: the local log and, when repositories are
/// configured, the outgoing queue.
pub struct Trail {
    auditor: Auditor,
    log: AuditLog,
    ctx: AuditContext,
    forward_to_destinations: bool,
    /// Writes are refused while the disk is below its reserve.
    guard: Option<Arc<crate::disk::DiskGuard>>,
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
    pub fn guarded(mut self, guard: Arc<crate::disk::DiskGuard>) -> Trail {
        self.guard = Some(guard);
        self
    }

    /// `record` as an RFC 5424 + DICOM message and its log record. A record whose DICOM
    /// mapping fails goes out as a plain security alert that carries its kind and detail
    /// (never a silent gap in the trail); `None` only if not even that can be formatted.
    fn format(&self, record: &AuditRecord) -> Option<(Vec<u8>, NewRecord)> {
        let at = offset(record.time);
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
    fn write(&self, records: &[AuditRecord]) -> Result<(), String> {
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
        let trail = self.trail.clone();
        AuditWriter::spawn(Arc::new(move |records: Vec<AuditRecord>| {
            trail.write(&records)
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

/// Open the log, start the repository listener, the sender and the forwarder. `nodes` is the
/// registry the API changes (its change signal re-authorizes open connections); `guard` holds
/// writes back while the disk is full.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: Arc<CaService>,
    nodes: Nodes,
    guard: Arc<crate::disk::DiskGuard>,
    server_tls: Arc<rustls::ServerConfig>,
    client_roots: Vec<Vec<u8>>,
) -> Result<Atna, ApplianceError> {
    let a = &config.audit;
    // The log, its certified checkpoint key (behind the clock gate) and its anchors.
    let (checkpoint, chain) = checkpoint_credential(home, config, hsm, &ca)?;
    let log_dir = home.join(LOG_DIR);
    keep_checkpoint_certificate(&log_dir, &chain)?;
    let legacy = home.join(LEGACY_CHECKPOINT_KEY_FILE);
    if legacy.exists() {
        tracing::info!(path = %legacy.display(), "removing the old checkpoint public key file: audit verify trusts the checkpoint certificate by its chain");
        std::fs::remove_file(&legacy).map_err(|e| io(&legacy, e))?;
    }
    let signer: Arc<dyn Signer> = Arc::new(crate::clock::GatedSigner::new(
        Arc::new(checkpoint),
        ca.clock().clone(),
    ));
    let mut anchorer = crate::audit_anchor::Anchorer::new();
    let options = LogOptions {
        checkpoint_every: a.checkpoint_every,
        checkpoint_interval: Duration::from_secs(u64::from(a.checkpoint_seconds)),
        sink: Some(anchorer.sink()),
        ..LogOptions::default()
    };
    let log = AuditLog::open(&log_dir, Some(signer), options)
        .map_err(|e| ApplianceError::Refused(format!("audit log {}: {e}", log_dir.display())))?;
    let store = ca.store().clone();
    crate::audit_anchor::check_at_start(store.as_ref(), &log)
        .map_err(|e| ApplianceError::Refused(format!("audit log anchors: {e}")))?;

    let mut tasks = Vec::new();
    let repository = if a.repository {
        let tls_addr = config.listen.syslog_tls.parse().map_err(|_| {
            ApplianceError::Refused("listen.syslog_tls is not an address:port".into())
        })?;
        let udp_addr = match &a.udp {
            Some(u) => Some(u.parse().map_err(|_| {
                ApplianceError::Refused(format!("audit.udp '{u}' is not an address:port"))
            })?),
            None => None,
        };
        let refusals = Arc::new(crate::refusals::Refusals::new("atna.refused"));
        tasks.push(refusals.clone().spawn_flusher(
            store.clone(),
            Duration::from_secs(u64::from(a.refusal_summary_seconds)),
        ));
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
            ApplianceError::Refused(format!(
                "cannot listen on {} (listen.syslog_tls): {e}",
                config.listen.syslog_tls
            ))
        })?;
        tracing::info!(syslog_tls = %repo.local_addr(), "audit record repository up");
        Some(repo)
    } else {
        None
    };

    // Outgoing: queue, sender, forwarder.
    let names: Vec<&str> = a.destinations.iter().map(|d| d.name.as_str()).collect();
    let queue_dir = home.join(QUEUE_DIR);
    let queue = Queue::open(&queue_dir, &names, QueueOptions::default())
        .map_err(|e| ApplianceError::Refused(format!("audit queue: {e}")))?;
    let sender = if a.destinations.is_empty() {
        None
    } else {
        let (key, chain) = node_credential(home, config, hsm, &ca)?;
        let client = cps_tls::client_config(
            Arc::new(crate::blocking::OffWorker(key)),
            chain,
            client_roots,
        )
        .map_err(ApplianceError::Refused)?;
        let client = Arc::new(client);
        let mut dests = Vec::new();
        for d in &a.destinations {
            let server_name = rustls::pki_types::ServerName::try_from(d.server_name.clone())
                .map_err(|e| {
                    ApplianceError::Refused(format!(
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
                .map_err(|e| ApplianceError::Refused(format!("audit sender: {e}")))?,
        )
    };
    let ctx = AuditContext {
        source_id: a.source_id.clone(),
        site_id: None,
        host: config
            .appliance
            .tls_names
            .first()
            .cloned()
            .unwrap_or_default(),
    };
    let auditor = Auditor::new(queue, &ctx.host, "cps-trust");
    let destinations = (!a.destinations.is_empty()).then(|| crate::audit_anchor::Destinations {
        auditor: auditor.clone(),
        ctx: ctx.clone(),
        log_id: format!("urn:cps-trust:{}:audit-log", ctx.source_id),
    });
    anchorer
        .start(store.clone(), destinations)
        .map_err(|e| io(&log_dir, e))?;
    let trail = Arc::new(
        Trail::new(auditor, log.clone(), ctx, !a.destinations.is_empty()).guarded(guard.clone()),
    );
    tasks.push(tokio::spawn(forward(store, trail.clone(), guard)));
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

/// Follows the store's audit table: each record becomes a DICOM message in the local log and
/// in the outgoing queue; the cursor is persisted after both. Waits while the disk is full.
async fn forward(store: Arc<dyn Store>, trail: Arc<Trail>, guard: Arc<crate::disk::DiskGuard>) {
    let mut cursor = store
        .get_meta(CURSOR_META)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    loop {
        if guard.admit().is_err() {
            tokio::time::sleep(crate::disk::CHECK_EVERY).await;
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
            let (store, trail) = (store.clone(), trail.clone());
            move || forward_batch(&*store, &trail, entries)
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
    entries: Vec<cps_store::AuditEntry>,
) -> Result<u64, String> {
    let last = entries.last().map_or(0, |e| e.seq);
    let records: Vec<AuditRecord> = entries.into_iter().map(|e| e.record).collect();
    trail.write(&records)?;
    store
        .commit(WriteBatch::new().with(WriteOp::PutMeta {
            key: CURSOR_META.into(),
            value: last.to_string().into_bytes(),
        }))
        .map_err(|e| format!("audit cursor: {e}"))?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: 1_790_000_000,
            kind: "xua.validate".into(),
            actor: "operator:svc".into(),
            outcome: "success".into(),
            detail: serde_json::json!({ "n": i }),
        }
    }

    /// Every kind of record the appliance commits, with the details it writes, becomes a valid
    /// DICOM message (one that cannot be formatted is left out of the trail).
    #[test]
    fn every_audit_kind_becomes_a_valid_dicom_message() {
        let ctx = AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        };
        let cases = [
            (
                "cert.issue",
                serde_json::json!({ "ca": "personnes", "serial": "0A1B", "subject": "CN=x", "profile": "cps-auth", "holder": "x" }),
            ),
            (
                "operator.create",
                serde_json::json!({ "operator": "alice", "roles": ["ca-operator"], "serial": "0A1C" }),
            ),
            (
                "node.enroll",
                serde_json::json!({ "node": "dmp-registry", "certificate": "ab12" }),
            ),
            ("node.remove", serde_json::json!({ "node": "dmp-registry" })),
            (
                "disk.full",
                serde_json::json!({ "since": 1, "until": 2, "reason": "disk full: 1.0 MiB free", "lowest_free_bytes": 1048576, "min_free_bytes": 16777216 }),
            ),
            (
                "cert.revoke",
                serde_json::json!({ "ca": "personnes", "serial": "0A1B", "reason": "keyCompromise" }),
            ),
            (
                "cert.suspend",
                serde_json::json!({ "ca": "personnes", "serial": "0A1B" }),
            ),
            (
                "cert.resume",
                serde_json::json!({ "ca": "personnes", "serial": "0A1B" }),
            ),
            (
                "card.suspend",
                serde_json::json!({ "idnat_ps": "810002813839", "card": "C1" }),
            ),
            (
                "card.secrets_delivered",
                serde_json::json!({ "idnat_ps": "810002813839", "card": "C1", "job": "j", "certificate_sha256": "00" }),
            ),
            (
                "card.oppose",
                serde_json::json!({ "idnat_ps": "810002813839", "serial": "C1" }),
            ),
            ("professional.import", serde_json::json!({ "imported": 3 })),
            ("ca.init", serde_json::json!({ "root": "CN=root" })),
            (
                "time.untrusted",
                serde_json::json!({ "reason": "max error" }),
            ),
            (
                "xua.validate",
                serde_json::json!({ "assertion_id": "_a1", "idnat_ps": "810002813839", "purpose_of_use": "normal" }),
            ),
            (
                "atna.refused",
                serde_json::json!({ "source": "127.0.0.1", "sources": 1, "count": 3, "first": 1, "last": 2, "reasons": { "no client certificate": 3 } }),
            ),
            (
                "login.refused",
                serde_json::json!({ "source": null, "sources": 9000, "count": 9000, "first": 1, "last": 2, "reasons": { "unknown_challenge": 9000 } }),
            ),
            (
                "atna.anchor_missing",
                serde_json::json!({ "seq": 42, "head": "00ff", "anchored_at": 1_790_000_000, "log_records": 13, "log_last_checkpoint": null, "log": "/x/audit/log" }),
            ),
        ];
        for (kind, detail) in cases {
            let rec = AuditRecord {
                time: 1_790_000_000,
                kind: kind.into(),
                actor: "operator:alice".into(),
                outcome: "success".into(),
                detail,
            };
            let msg = to_dicom(&ctx, &rec);
            msg.to_xml()
                .unwrap_or_else(|e| panic!("{kind}: not a valid DICOM audit message: {e}"));
        }
    }

    /// The EKU constant and its DER form name the same OID, which the profile file carries.
    #[test]
    fn checkpoint_eku_constants_agree_with_the_profile() {
        let (_, oid) =
            x509_parser::der_parser::oid::Oid::from(&[1u64, 3, 6, 1, 4, 1, 32473, 3, 1][..])
                .map(|o| ((), o))
                .unwrap();
        assert_eq!(oid.as_bytes(), CHECKPOINT_EKU_DER);
        assert_eq!(oid.to_id_string(), CHECKPOINT_EKU);
        let profile = cps_pki::builtin_profiles();
        let p = profile.get(CHECKPOINT_PROFILE).unwrap();
        let text = cps_pki::profile::BUILTIN_PROFILE_FILES
            .iter()
            .find(|(f, _)| *f == "audit-checkpoint.toml")
            .unwrap()
            .1;
        assert!(
            text.contains(&format!("purposes = [\"{CHECKPOINT_EKU}\"]")),
            "{text}"
        );
        assert_eq!(p.name, CHECKPOINT_PROFILE);
    }

    /// The fallback for a record that cannot be mapped is itself a valid message.
    #[test]
    fn unmappable_records_still_become_a_valid_alert() {
        let ctx = AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        };
        let rec = AuditRecord {
            time: 1_790_000_000,
            kind: "node.enroll".into(),
            actor: "".into(),
            outcome: "failure".into(),
            detail: serde_json::json!({ "odd": "<&>\"'", "nested": { "x": [1, 2] } }),
        };
        let xml = fallback_alert(&ctx, &rec).to_xml().unwrap();
        assert!(xml.contains("node.enroll"), "{xml}");
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
        // A reserve larger than any test machine's free space.
        let guard =
            crate::disk::DiskGuard::new(vec![("audit log", dir.path().join("log"))], 1 << 30);
        let trail = Trail::new(
            Auditor::new(queue.clone(), &ctx.host, "cps-trust"),
            log.clone(),
            ctx,
            true,
        )
        .guarded(guard);
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
                    let mut rec = record(i);
                    rec.detail = serde_json::json!({
                        "assertion_id": format!("_a{i}"),
                        "idnat_ps": idnat(i),
                        "patient_ins": "248079707503828",
                    });
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
}
