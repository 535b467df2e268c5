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

use cps_atna::events::{self, AlertKind, AuditContext, Person};
use cps_atna::{AuditLog, AuditMessage, Auditor, LogOptions, NewRecord, Queue, QueueOptions};
use cps_atna::{CodedValue, ObjectRole, ObjectType, ParticipantObject};
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

/// The DICOM audit message of a store audit record: its typed event's message, or for a record
/// written before events were typed that does not decode, a plain alert carrying it.
pub fn to_dicom(ctx: &AuditContext, rec: &AuditRecord) -> AuditMessage {
    match cps_audit::AuditEvent::decode(rec) {
        cps_audit::Decoded::Event(e) => event_message(ctx, rec.time, &rec.actor, &e),
        cps_audit::Decoded::Legacy(r) => fallback_alert(ctx, r),
    }
}

fn object(id: &str, id_type: CodedValue, name: &str) -> ParticipantObject {
    ParticipantObject {
        id: if id.is_empty() {
            "unknown".into()
        } else {
            id.into()
        },
        id_type,
        object_type: Some(ObjectType::SystemObject),
        role: Some(ObjectRole::SecurityResource),
        name: Some(if name.is_empty() {
            "unknown".into()
        } else {
            name.into()
        }),
        details: Vec::new(),
    }
}

fn dcm(code: &str, meaning: &str) -> CodedValue {
    CodedValue::dcm(code, meaning)
}

/// The DICOM message of one event: ONE exhaustive match, so that an event cannot be added
/// without its message. EventIDs and type codes follow DICOM PS3.15 A.5.3 / CID 400-401 and
/// IHE ITI TF-2 (ITI-20): User Authentication (110114) for logins and assertions, Security
/// Alert (110113) for changes of certificates, cards, nodes, roles and configuration.
pub fn event_message(
    ctx: &AuditContext,
    time: i64,
    actor: &str,
    event: &cps_audit::AuditEvent,
) -> AuditMessage {
    use cps_atna::{EventAction as A, EventOutcome as O};
    use cps_audit::AuditEvent as E;
    use events::local_code as local;
    let now = offset(time);
    let who = person_of(actor);
    let cert =
        |ca: &str, serial: &str, subject: &str, holder: Option<&str>| events::CertificateRef {
            serial_hex: if serial.is_empty() {
                "unknown".into()
            } else {
                serial.into()
            },
            subject: if subject.is_empty() {
                format!("certificate {serial} of {ca}")
            } else {
                subject.into()
            },
            issuer: ca.into(),
            holder: holder.map(Person::id),
        };
    let card = |change: events::CardChange,
                holder: &str,
                serial: &str,
                outcome: O,
                why: Option<String>| {
        events::card_event(
            ctx,
            now,
            &who,
            &Person::id(holder),
            serial,
            change,
            outcome,
            why,
        )
    };
    let summary = |what: &str, r: &cps_audit::RefusalSummary| {
        let reasons: Vec<String> = r.reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!(
            "{} refused {what} from {} between {} and {} ({})",
            r.count,
            r.source.as_deref().unwrap_or("other sources"),
            r.first,
            r.last,
            reasons.join(", ")
        )
    };
    let node = |name: &str| object(name, local("node", "Audit node name"), name);
    let professional = |id: &str| events::person_object(&Person::id(id));
    let config = |code: &str, meaning: &str| {
        vec![
            AlertKind::SecurityConfiguration.code(),
            local(code, meaning),
        ]
    };
    match event {
        E::CertificateIssued {
            ca,
            serial,
            subject,
            holder,
            ..
        } => events::certificate_issued(ctx, now, &who, &cert(ca, serial, subject, Some(holder))),
        E::CertificateRevoked {
            ca,
            serial,
            subject,
            reason,
        } => events::certificate_revoked(
            ctx,
            now,
            &who,
            &cert(ca, serial, subject, None),
            events::RevocationChange::Revoked,
            reason,
        ),
        E::CertificateHeld {
            ca,
            serial,
            subject,
            reason,
        } => events::certificate_revoked(
            ctx,
            now,
            &who,
            &cert(ca, serial, subject, None),
            events::RevocationChange::OnHold,
            reason,
        ),
        E::CertificateReleased {
            ca,
            serial,
            subject,
            reason,
        } => events::certificate_revoked(
            ctx,
            now,
            &who,
            &cert(ca, serial, subject, None),
            events::RevocationChange::Released,
            reason,
        ),
        E::OperatorCreated {
            operator,
            roles,
            serial,
        } => {
            let mut m = events::certificate_issued(
                ctx,
                now,
                &who,
                &cert(
                    "organisations",
                    serial,
                    &format!("operator {operator}"),
                    Some(operator),
                ),
            );
            m.event
                .event_types
                .insert(0, AlertKind::SecurityRolesChanged.code());
            m.event.outcome_description = Some(format!(
                "operator {operator} created with roles {}",
                roles.join(", ")
            ));
            m
        }
        E::CaInitialised {
            token,
            certificates,
        } => events::security_alert_about(
            ctx,
            now,
            config("ca-init", "CA hierarchy initialised"),
            A::Create,
            O::Success,
            Some(format!("CA hierarchy created in token {token}")),
            Some(&who),
            certificates
                .iter()
                .map(|c| {
                    let mut o = object(
                        &c.serial,
                        local("certificate-serial", "X.509 certificate serial number"),
                        &c.subject,
                    );
                    o.details.push(cps_atna::ObjectDetail {
                        kind: "ca".into(),
                        value: c.id.clone().into_bytes(),
                    });
                    o
                })
                .collect(),
        ),
        E::EnrolmentStarted {
            enrolment,
            card: c,
            idnat_ps,
            ..
        } => card(
            events::CardChange::EnrolmentProgress,
            idnat_ps,
            c,
            O::Success,
            Some(format!("enrolment {enrolment} started")),
        ),
        E::EnrolmentStepDone {
            enrolment,
            step,
            card: c,
            idnat_ps,
            ..
        } => card(
            events::CardChange::EnrolmentProgress,
            idnat_ps,
            c,
            O::Success,
            Some(format!("enrolment {enrolment}: step {} done", step.name())),
        ),
        E::CardEnrolled {
            enrolment,
            kind,
            card: c,
            idnat_ps,
            ..
        } => {
            let change = match kind {
                cps_audit::EnrolmentPurpose::New
                | cps_audit::EnrolmentPurpose::Replacement { .. } => events::CardChange::Enrolled,
                cps_audit::EnrolmentPurpose::Renewal => events::CardChange::Renewed,
            };
            card(
                change,
                idnat_ps,
                c,
                O::Success,
                Some(format!("enrolment {enrolment} registered")),
            )
        }
        E::EnrolmentInterrupted {
            enrolment,
            step,
            card: c,
            error,
            ..
        } => card(
            events::CardChange::EnrolmentRolledBack,
            "unknown",
            c.as_deref().unwrap_or("unknown"),
            O::MinorFailure,
            Some(format!(
                "enrolment {enrolment} interrupted at {}: {error}",
                step.name()
            )),
        ),
        E::EnrolmentResumed { enrolment, card: c } => card(
            events::CardChange::EnrolmentProgress,
            "unknown",
            c,
            O::Success,
            Some(format!("enrolment {enrolment} resumed")),
        ),
        E::EnrolmentAborted {
            enrolment,
            reason,
            card: c,
            ..
        } => card(
            events::CardChange::EnrolmentRolledBack,
            "unknown",
            c.as_deref().unwrap_or("unknown"),
            O::Success,
            Some(format!("enrolment {enrolment} aborted: {reason}")),
        ),
        E::CardSuspended(c) => card(
            events::CardChange::Suspended,
            &c.idnat_ps,
            &c.card,
            O::Success,
            None,
        ),
        E::CardResumed(c) => card(
            events::CardChange::Resumed,
            &c.idnat_ps,
            &c.card,
            O::Success,
            None,
        ),
        E::CardOpposed {
            change: c,
            reason,
            revocation_reason,
        } => card(
            events::CardChange::Opposed,
            &c.idnat_ps,
            &c.card,
            O::Success,
            Some(format!(
                "{reason} (certificates revoked: {revocation_reason})"
            )),
        ),
        E::CardPinUnblocked { card: c, idnat_ps } => card(
            events::CardChange::PinUnblocked,
            idnat_ps,
            c,
            O::Success,
            None,
        ),
        E::CardPinUnblockFailed {
            card: c,
            idnat_ps,
            error,
        } => card(
            events::CardChange::PinUnblocked,
            idnat_ps,
            c,
            O::MinorFailure,
            Some(error.clone()),
        ),
        E::CardSecretsDelivered {
            card: c, idnat_ps, ..
        } => card(
            events::CardChange::SecretsDelivered,
            idnat_ps.as_deref().unwrap_or("unknown"),
            c.as_deref().unwrap_or("unknown"),
            O::Success,
            None,
        ),
        E::ProfessionalCreated {
            idnat_ps,
            profession,
        } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110137", "User Security Attributes Changed"),
                local("professional-created", "Professional registered"),
            ],
            A::Create,
            O::Success,
            Some(format!("profession {profession}")),
            Some(&who),
            vec![professional(idnat_ps)],
        ),
        E::ProfessionalUpdated { idnat_ps, revision } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110137", "User Security Attributes Changed"),
                local("professional-updated", "Professional updated"),
            ],
            A::Update,
            O::Success,
            Some(format!("revision {revision}")),
            Some(&who),
            vec![professional(idnat_ps)],
        ),
        E::ProfessionalStatusChanged {
            idnat_ps,
            from,
            to,
            cards,
            ..
        } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110137", "User Security Attributes Changed"),
                local("professional-status", "Professional status changed"),
            ],
            A::Update,
            O::Success,
            Some(format!("{from} -> {to}; {} card(s) changed", cards.len())),
            Some(&who),
            vec![professional(idnat_ps)],
        ),
        E::RegistryImported(r) | E::RegistryImportUnchanged(r) => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110137", "User Security Attributes Changed"),
                local("registry-import", "Professional registry imported"),
            ],
            A::Update,
            O::Success,
            Some(format!(
                "import {}: {} created, {} updated, {} unchanged",
                r.import, r.created, r.updated, r.unchanged
            )),
            Some(&who),
            vec![object(
                &r.file_sha256,
                local("file-sha256", "SHA-256 of a file"),
                "professional registry file",
            )],
        ),
        E::RegistryImportRejected {
            file_sha256,
            errors,
        } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110137", "User Security Attributes Changed"),
                local("registry-import", "Professional registry imported"),
            ],
            A::Update,
            O::MinorFailure,
            Some(format!("file rejected: {errors} error(s)")),
            Some(&who),
            vec![object(
                file_sha256,
                local("file-sha256", "SHA-256 of a file"),
                "professional registry file",
            )],
        ),
        E::LoginSucceeded {
            idnat_ps, source, ..
        } => events::login(ctx, now, &Person::id(idnat_ps), Some(source), None),
        E::LoginRefused {
            idnat_ps,
            code,
            reason,
            source,
            ..
        } => events::login(
            ctx,
            now,
            &Person::id(idnat_ps),
            Some(source),
            Some(&format!("{code}: {reason}")),
        ),
        E::LoginsRefused(r) => events::login(
            ctx,
            now,
            &Person::id("unauthenticated"),
            r.source.as_deref(),
            Some(&summary("card logins", r)),
        ),
        E::AssertionIssued {
            idnat_ps,
            assertion_id,
            ..
        } => events::assertion_issued(ctx, now, &Person::id(idnat_ps), assertion_id, None),
        E::BreakGlass {
            idnat_ps,
            patient_ins,
            purpose_of_use,
            ..
        } => events::break_glass(
            ctx,
            now,
            &Person::id(idnat_ps),
            patient_ins.as_deref().unwrap_or("unknown"),
            events::purpose_of_use(purpose_of_use),
            None,
        ),
        E::AssertionValidated {
            assertion_id,
            idnat_ps,
            patient_ins,
            ..
        } => events::assertion_validated(
            ctx,
            now,
            &who.id,
            &Person::id(idnat_ps),
            assertion_id,
            patient_ins.as_deref(),
        ),
        E::AssertionRefused { code, reason } => {
            let serious = !matches!(code.as_str(), "expired" | "not_yet_valid" | "too_large");
            events::assertion_refused(
                ctx,
                now,
                &who.id,
                None,
                None,
                &format!("{code}: {reason}"),
                serious,
            )
        }
        E::NodeEnrolled {
            node: n,
            certificate,
        } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110135", "Object Security Attributes Changed"),
                local("node-enrolled", "Audit node enrolled"),
            ],
            A::Create,
            O::Success,
            Some(format!("certificate key {certificate}")),
            Some(&who),
            vec![node(n)],
        ),
        E::NodeRemoved { node: n } => events::security_alert_about(
            ctx,
            now,
            vec![
                dcm("110135", "Object Security Attributes Changed"),
                local("node-removed", "Audit node removed"),
            ],
            A::Delete,
            O::Success,
            None,
            Some(&who),
            vec![node(n)],
        ),
        E::SyslogPeersRefused(r) => events::security_alert_event(
            ctx,
            now,
            AlertKind::NodeAuthentication,
            O::MinorFailure,
            &summary("syslog-TLS connections", r),
            None,
            Some(r.source.as_deref().unwrap_or("other sources")),
        ),
        E::AnchorMissing { seq, head, log, .. } => events::security_alert_about(
            ctx,
            now,
            vec![
                AlertKind::AuditRecordingStopped.code(),
                local(
                    "anchor-missing",
                    "Anchored checkpoint missing from the audit log",
                ),
            ],
            A::Execute,
            O::SeriousFailure,
            Some(format!(
                "the audit log lacks anchored checkpoint {seq} (head {head})"
            )),
            None,
            vec![object(log, dcm_uri(), "audit log")],
        ),
        E::ClockTrusted { source, message } => events::security_alert_about(
            ctx,
            now,
            config("clock-trusted", "Clock trusted"),
            A::Execute,
            O::Success,
            Some(format!("{source}: {message}")),
            None,
            vec![],
        ),
        E::ClockUntrusted { source, message } => events::security_alert_about(
            ctx,
            now,
            config("clock-untrusted", "Clock untrusted"),
            A::Execute,
            O::SeriousFailure,
            Some(format!("{source}: {message}")),
            None,
            vec![],
        ),
        // New work, audit records included, was refused while the disk was full.
        E::DiskFull {
            since,
            until,
            reason,
            ..
        } => events::security_alert_about(
            ctx,
            now,
            vec![
                AlertKind::AuditRecordingStopped.code(),
                local("disk-full", "Disk full"),
            ],
            A::Execute,
            O::SeriousFailure,
            Some(format!("{reason} (from {since} to {until})")),
            None,
            vec![],
        ),
    }
}

fn dcm_uri() -> CodedValue {
    CodedValue::new("12", "RFC-3881", "URI")
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
        let refusals = Arc::new(crate::refusals::Refusals::new(
            cps_audit::AuditEvent::SyslogPeersRefused,
        ));
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

    /// The DICOM schema, vendored with the ATNA crate (DICOM PS3.15 A.5.1).
    fn schema() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../atna/tests/schema/dicom-audit-message.rnc")
    }

    /// Validates `xml` with jing against the DICOM schema.
    fn jing(dir: &Path, name: &str, xml: &str) -> Result<(), String> {
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        let out = std::process::Command::new("jing")
            .arg("-c")
            .arg(schema())
            .arg(&file)
            .output()
            .expect("jing (Debian package jing) must be installed");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn ctx() -> AuditContext {
        AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        }
    }

    /// The EventID, EventTypeCodes (DCM ones first) and the roles of the participant objects
    /// each event must have (DICOM PS3.15 A.5.3 / CID 400-401, IHE ITI TF-2 ITI-20).
    fn expected(
        e: &cps_audit::AuditEvent,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    ) {
        use cps_audit::AuditEvent as E;
        const CERT: &[&str] = &["SecurityResource"];
        const CARD: &[&str] = &["SecurityResource", "User"];
        match e {
            E::CertificateIssued { .. } => ("110113", &["110137", "cert-issued"], CARD),
            E::CertificateRevoked { .. } => ("110113", &["110135", "cert-revoked"], CERT),
            E::CertificateHeld { .. } => ("110113", &["110135", "cert-hold"], CERT),
            E::CertificateReleased { .. } => ("110113", &["110135", "cert-released"], CERT),
            E::OperatorCreated { .. } => ("110113", &["110136", "110137", "cert-issued"], CARD),
            E::CaInitialised { .. } => ("110113", &["110129", "ca-init"], CERT),
            E::EnrolmentStarted { .. }
            | E::EnrolmentStepDone { .. }
            | E::EnrolmentResumed { .. } => ("110113", &["110137", "card-enrolment-step"], CARD),
            E::CardEnrolled {
                kind: cps_audit::EnrolmentPurpose::Renewal,
                ..
            } => ("110113", &["110137", "card-renewed"], CARD),
            E::CardEnrolled { .. } => ("110113", &["110137", "card-enrolled"], CARD),
            E::EnrolmentInterrupted { .. } | E::EnrolmentAborted { .. } => {
                ("110113", &["110137", "card-enrolment-rolled-back"], CARD)
            }
            E::CardSuspended(_) => ("110113", &["110137", "card-suspended"], CARD),
            E::CardResumed(_) => ("110113", &["110137", "card-resumed"], CARD),
            E::CardOpposed { .. } => ("110113", &["110137", "card-opposed"], CARD),
            E::CardPinUnblocked { .. } | E::CardPinUnblockFailed { .. } => {
                ("110113", &["110137", "card-pin-unblocked"], CARD)
            }
            E::CardSecretsDelivered { .. } => {
                ("110113", &["110137", "card-secrets-delivered"], CARD)
            }
            E::ProfessionalCreated { .. } => {
                ("110113", &["110137", "professional-created"], &["User"])
            }
            E::ProfessionalUpdated { .. } => {
                ("110113", &["110137", "professional-updated"], &["User"])
            }
            E::ProfessionalStatusChanged { .. } => {
                ("110113", &["110137", "professional-status"], &["User"])
            }
            E::RegistryImported(_)
            | E::RegistryImportUnchanged(_)
            | E::RegistryImportRejected { .. } => ("110113", &["110137", "registry-import"], CERT),
            E::LoginSucceeded { .. } | E::LoginRefused { .. } | E::LoginsRefused(_) => {
                ("110114", &["110122"], &[])
            }
            E::AssertionIssued { .. } => ("110114", &["110143", "assertion-issued"], CARD),
            E::BreakGlass { .. } => ("110113", &["110127", "bris_de_glace"], &["Patient", "User"]),
            E::AssertionValidated { .. } => ("110114", &["110143", "assertion-validated"], CARD),
            E::AssertionRefused { .. } => ("110114", &["110143", "assertion-refused"], &[]),
            E::NodeEnrolled { .. } => ("110113", &["110135", "node-enrolled"], CERT),
            E::NodeRemoved { .. } => ("110113", &["110135", "node-removed"], CERT),
            E::SyslogPeersRefused(_) => ("110113", &["110126"], &[]),
            E::AnchorMissing { .. } => ("110113", &["110133", "anchor-missing"], CERT),
            E::ClockTrusted { .. } => ("110113", &["110129", "clock-trusted"], &[]),
            E::ClockUntrusted { .. } => ("110113", &["110129", "clock-untrusted"], &[]),
            E::DiskFull { .. } => ("110113", &["110133", "disk-full"], &[]),
        }
    }

    /// Every event (one of each variant, see `cps_audit::examples`) becomes a DICOM message that
    /// jing validates against the DICOM schema, with the EventID, type codes and participant
    /// roles of its kind; stored and read back, the record gives the same message.
    #[test]
    fn every_event_is_a_schema_valid_dicom_message_with_its_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut failures = Vec::new();
        for (i, e) in cps_audit::examples().into_iter().enumerate() {
            let rec = e.record(1_790_000_000, "operator:alice");
            let msg = to_dicom(&ctx(), &rec);
            assert_eq!(msg, event_message(&ctx(), rec.time, &rec.actor, &e));
            let xml = msg
                .to_xml()
                .unwrap_or_else(|err| panic!("{}: not a valid message: {err}", e.name()));
            if let Err(why) = jing(dir.path(), &format!("{i}-{}", e.name()), &xml) {
                failures.push(format!("{}: {why}\n{xml}", e.name()));
            }
            let (id, types, roles) = expected(&e);
            assert_eq!(msg.event.event_id.code, id, "{}", e.name());
            let got: Vec<&str> = msg
                .event
                .event_types
                .iter()
                .map(|c| c.code.as_str())
                .collect();
            assert_eq!(got, types, "{}", e.name());
            let got: Vec<String> = msg
                .objects
                .iter()
                .map(|o| format!("{:?}", o.role.expect("every object has a role")))
                .collect();
            let mut unique = got.clone();
            unique.dedup();
            assert_eq!(unique, roles, "{}", e.name());
            // A requesting participant and the appliance (role 110150 Application).
            assert!(
                msg.participants.iter().any(|p| p.is_requestor
                    || e.name() == "ClockTrusted"
                    || e.name() == "ClockUntrusted"
                    || e.name() == "DiskFull"
                    || e.name() == "AnchorMissing"),
                "{}",
                e.name()
            );
            assert!(
                msg.participants
                    .iter()
                    .any(|p| p.roles.iter().any(|r| r.code == "110150")),
                "{}",
                e.name()
            );
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    /// The schema check is real: a participant object without a name (what 9 of 46 messages of
    /// a run used to carry) is refused by jing, and by the model before it is written.
    #[test]
    fn jing_refuses_a_participant_object_without_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut msg = event_message(
            &ctx(),
            1_790_000_000,
            "operator:alice",
            &cps_audit::examples()[0],
        );
        let xml = msg.to_xml().unwrap();
        let named = xml.find("<ParticipantObjectName>").expect("a named object");
        let end = xml[named..].find("</ParticipantObjectName>").unwrap()
            + named
            + "</ParticipantObjectName>".len();
        let broken = format!("{}{}", &xml[..named], &xml[end..]);
        assert!(jing(dir.path(), "broken", &broken).is_err());
        msg.objects[0].name = None;
        assert!(msg.to_xml().is_err());
    }

    /// Records of an existing store, written before events were typed, still map to their
    /// own events (an enrolment is a card enrolment, not a generic alert).
    #[test]
    fn records_written_before_typed_events_keep_their_messages() {
        let rec = AuditRecord {
            time: 1_790_000_000,
            kind: "enrol.register".into(),
            actor: "operator:alice".into(),
            outcome: "success".into(),
            detail: serde_json::json!({
                "enrolment": "e", "kind": { "kind": "new" }, "card": "C1", "token_id": "t",
                "idnat_ps": "810002813839", "structure_id": "s", "certificates": [],
                "management_key": { "kind": "default" },
            }),
        };
        let msg = to_dicom(&ctx(), &rec);
        assert!(
            msg.event
                .event_types
                .iter()
                .any(|c| c.code == "card-enrolled")
        );
        msg.to_xml().unwrap();
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
}
