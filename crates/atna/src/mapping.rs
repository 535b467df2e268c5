//! The DICOM message of each typed audit event of the appliance ([`cps_audit::AuditEvent`]):
//! ONE exhaustive `match` ([`event_message`]), so that an event cannot be added without its
//! message; records stored before events were typed, and records that do not decode, become a
//! plain security alert carrying their kind and detail ([`fallback_alert`]).

use cps_audit::AuditRecord;

use crate::events::{self, AlertKind, AuditContext, Person};
use crate::{AuditMessage, CodedValue, ObjectRole, ObjectType, ParticipantObject};

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
    use crate::{EventAction as A, EventOutcome as O};
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
                    o.details.push(crate::ObjectDetail {
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
        E::DocumentsSigned {
            signer,
            signer_kind,
            structure_id,
            policy,
            purpose,
            documents,
        } => events::document_signature(
            ctx,
            now,
            events::SignatureAct::Signed,
            &who.id,
            Some(&Person::id(signer.as_str())),
            documents,
            O::Success,
            Some(format!(
                "{policy} signature by a {signer_kind}{}, purpose {purpose}",
                structure_id
                    .as_deref()
                    .map(|s| format!(" of structure {s}"))
                    .unwrap_or_default()
            )),
        ),
        E::SignatureVerified {
            signer,
            signing_time,
            policy,
            purpose,
            documents,
        } => events::document_signature(
            ctx,
            now,
            events::SignatureAct::Verified,
            &who.id,
            Some(&Person::id(signer.as_str())),
            documents,
            O::Success,
            Some(format!(
                "{policy} signature, purpose {purpose}, signed at {signing_time}"
            )),
        ),
        E::SignatureRefused {
            code,
            reason,
            documents,
        } => events::document_signature(
            ctx,
            now,
            events::SignatureAct::Verified,
            &who.id,
            None,
            documents,
            // A refusal for an input that does not even parse is minor; anything else (a
            // changed document, a forged or wrapped signature, a revoked signer) is serious.
            if matches!(code.as_str(), "malformed" | "too_large") {
                O::MinorFailure
            } else {
                O::SeriousFailure
            },
            Some(format!("{code}: {reason}")),
        ),
        // A token is the appliance's own signature over a time statement, like an audit log
        // checkpoint: a Security Alert (110113) with a local type code, action Create (the
        // token is made), and the token as a security-resource object. DCM CID 401 has no
        // type for a signature; 113031 "Signed Manifest" is for DSG manifests, not tokens.
        E::TimestampIssued {
            serial,
            policy,
            hash,
            imprint,
            gen_time,
        } => events::security_alert_about(
            ctx,
            now,
            vec![local("timestamp-issued", "Time-stamp token issued")],
            A::Create,
            O::Success,
            Some(format!("RFC 3161 token {serial} under policy {policy}")),
            Some(&who),
            vec![ParticipantObject {
                id: serial.clone(),
                id_type: local("tsa-token-serial", "Time-stamp token serial number"),
                object_type: Some(ObjectType::SystemObject),
                role: Some(ObjectRole::SecurityResource),
                name: Some(policy.clone()),
                details: vec![
                    crate::model::ObjectDetail {
                        kind: hash.clone(),
                        value: imprint.clone().into_bytes(),
                    },
                    crate::model::ObjectDetail {
                        kind: "genTime".into(),
                        value: gen_time.to_string().into_bytes(),
                    },
                ],
            }],
        ),
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
pub fn fallback_alert(ctx: &AuditContext, rec: &AuditRecord) -> AuditMessage {
    events::security_alert_event(
        ctx,
        offset(rec.time),
        events::AlertKind::UseOfRestrictedFunction,
        if rec.outcome == "success" {
            crate::EventOutcome::Success
        } else {
            crate::EventOutcome::SeriousFailure
        },
        &format!("{}: {}", rec.kind, rec.detail),
        None,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The DICOM schema, vendored with the ATNA crate (DICOM PS3.15 A.5.1).
    fn schema() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema/dicom-audit-message.rnc")
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
            E::DocumentsSigned { .. } => ("113031", &["urn:ihe:iti:dsg"], &["Report"]),
            E::SignatureVerified { .. } => ("110007", &["urn:ihe:iti:dsg"], &["Report"]),
            E::SignatureRefused { .. } => ("110007", &["urn:ihe:iti:dsg"], &["Report"]),
            E::TimestampIssued { .. } => ("110113", &["timestamp-issued"], CERT),
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
            node: None,
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
            node: None,
        };
        let xml = fallback_alert(&ctx, &rec).to_xml().unwrap();
        assert!(xml.contains("node.enroll"), "{xml}");
    }
}
