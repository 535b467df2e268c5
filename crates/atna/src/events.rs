//! The appliance's security events as DICOM audit messages.
//!
//! ## Code mapping
//!
//! | event | `EventID` (CID 400) | `EventTypeCode` (CID 401 + local) | action | outcome |
//! |---|---|---|---|---|
//! | card login | 110114 User Authentication | 110122 Login | E | 0, or 4 when refused |
//! | logout | 110114 User Authentication | 110123 Logout | E | 0 |
//! | security alert | 110113 Security Alert | the CID 401 code of [`AlertKind`] | E | as given |
//! | certificate issued | 110113 Security Alert | 110137 User Security Attributes Changed (person) or 110135 Object Security Attributes Changed (node, service) + `cert-issued` | C | 0 |
//! | certificate revoked / on hold / released | 110113 Security Alert | 110137 / 110135 + `cert-revoked`, `cert-hold`, `cert-released` | D / U / U | 0 |
//! | card lifecycle | 110113 Security Alert | 110137 User Security Attributes Changed + `card-enrolled`, `card-suspended`, `card-resumed`, `card-opposed`, `card-pin-unblocked` | C / U / U / D / U | 0 |
//! | assertion issued | 110114 User Authentication | 110143 Authentication Decision + `assertion-issued` | C | 0 |
//! | assertion validated | 110114 User Authentication | 110143 Authentication Decision + `assertion-validated` | E | 0 |
//! | assertion refused | 110114 User Authentication | 110143 Authentication Decision + `assertion-refused` | E | 4, or 8 for a forged or replayed one |
//! | break-glass access | 110113 Security Alert | 110127 Emergency Override Started + the purpose of use (TRE_R248 `bris_de_glace`) | E | 0 |
//! | document signature made (IHE DSG) | 113031 Signed Manifest | `urn:ihe:iti:dsg` Document Digital Signature (IHE Transactions) | C | 0 |
//! | document signature verified / refused | 110007 Report Verification | `urn:ihe:iti:dsg` | R | 0, or 4 / 8 when refused |
//! | audit log checkpoint signed | 110113 Security Alert | `audit-checkpoint` | E | 0 |
//!
//! Local codes use the code system name [`LOCAL_CODE_SYSTEM`]. Why these choices: DICOM has no
//! event ID (CID 400) for credential management, while the type codes of a Security Alert
//! (110113, CID 403 "Security Alert Type Code") include 110135 "Object Security Attributes
//! Changed" and 110137 "User Security Attributes Changed", which describe issuing or revoking a
//! certificate and changing a card's state; an assertion is an authentication statement, hence
//! 110114 with CID 401's 110143 "Authentication Decision". The purpose of use of a break-glass access is copied in as an
//! `EventTypeCode` with the French `TRE_R248_ModeAcces` code system
//! (`1.2.250.1.213.1.1.4.248`), so it is searchable as an event type.
//!
//!
//! A checkpoint of the appliance's own audit log ([`audit_checkpoint`]) is sent to the
//! repositories so that they hold the evidence the local log is verified against: its object is
//! the log (`ParticipantObjectTypeCode` 2 system object, role 13 security resource, ID type 12
//! URI), and its `ParticipantObjectDetail`s carry the checkpoint: `seq`, `head`, `time`,
//! `checkpoint-every`, `checkpoint-interval-ms`, `algorithm`, `key-id`, `signature`, and
//! `checkpoint`, the entry exactly as `checkpoints.log` holds it. DICOM has no event for a
//! system attesting the state of its own log: "Audit Log Used" (110101) records someone
//! reading the log, and an auditor looking for who read it must not find a message per
//! checkpoint; so a Security Alert with a local type, like the other events above.
//!
//! People are identified by their national identifier (`IdNat_PS`) as `UserID`; the appliance
//! appears as a non-requesting participant with role 110150 Application.

use time::OffsetDateTime;

use crate::model::{
    ActiveParticipant, AuditMessage, AuditSource, CodedValue, EventAction, EventIdentification,
    EventOutcome, ObjectRole, ObjectType, ParticipantObject,
};

/// `codeSystemName` of the appliance's own event type and object id type codes.
pub const LOCAL_CODE_SYSTEM: &str = "cps-trust";

/// OID of the French access mode code system (TRE_R248_ModeAcces).
pub const TRE_R248_OID: &str = "1.2.250.1.213.1.1.4.248";

/// Who emits the messages: written as `AuditSourceIdentification` and as the appliance's own
/// `ActiveParticipant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// `AuditSourceID`: the appliance's node name.
    pub source_id: String,
    /// `AuditEnterpriseSiteID`.
    pub site_id: Option<String>,
    /// The appliance's network address (host name or IP), as its network access point.
    pub host: String,
}

impl AuditContext {
    fn source(&self) -> AuditSource {
        AuditSource {
            source_id: self.source_id.clone(),
            enterprise_site_id: self.site_id.clone(),
            // 4 = application server, 6 = security server.
            type_codes: vec![4, 6],
        }
    }

    fn appliance(&self) -> ActiveParticipant {
        ActiveParticipant::new(self.source_id.clone(), false)
            .with_role(CodedValue::dcm("110150", "Application"))
            .with_access_point(self.host.clone())
    }
}

/// A person (health professional, operator) taking part in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// National identifier (IdNat_PS) or operator name: the `UserID`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
}

impl Person {
    /// A person known by id only.
    pub fn id(id: impl Into<String>) -> Self {
        Person {
            id: id.into(),
            name: None,
        }
    }

    fn participant(&self, requestor: bool, from: Option<&str>) -> ActiveParticipant {
        let mut p = ActiveParticipant::new(self.id.clone(), requestor);
        p.user_name = self.name.clone();
        if let Some(addr) = from {
            p = p.with_access_point(addr);
        }
        p
    }

    fn as_object(&self) -> ParticipantObject {
        ParticipantObject {
            id: self.id.clone(),
            id_type: CodedValue::new("11", "RFC-3881", "User Identifier"),
            object_type: Some(ObjectType::Person),
            role: Some(ObjectRole::User),
            name: Some(self.name.clone().unwrap_or_else(|| self.id.clone())),
            details: Vec::new(),
        }
    }
}

fn local(code: &str, meaning: &str) -> CodedValue {
    CodedValue::new(code, LOCAL_CODE_SYSTEM, meaning)
}

fn event(
    id: CodedValue,
    types: Vec<CodedValue>,
    action: EventAction,
    now: OffsetDateTime,
    outcome: EventOutcome,
    description: Option<String>,
) -> EventIdentification {
    EventIdentification {
        event_id: id,
        event_types: types,
        action: Some(action),
        date_time: now,
        outcome,
        outcome_description: description,
    }
}

fn user_authentication() -> CodedValue {
    CodedValue::dcm("110114", "User Authentication")
}

fn security_alert() -> CodedValue {
    CodedValue::dcm("110113", "Security Alert")
}

/// A card login: success, or refusal with its reason (wrong PIN, revoked card…).
pub fn login(
    ctx: &AuditContext,
    now: OffsetDateTime,
    user: &Person,
    client_addr: Option<&str>,
    refused: Option<&str>,
) -> AuditMessage {
    let outcome = if refused.is_some() {
        EventOutcome::MinorFailure
    } else {
        EventOutcome::Success
    };
    AuditMessage {
        event: event(
            user_authentication(),
            vec![CodedValue::dcm("110122", "Login")],
            EventAction::Execute,
            now,
            outcome,
            refused.map(str::to_owned),
        ),
        participants: vec![user.participant(true, client_addr), ctx.appliance()],
        source: ctx.source(),
        objects: Vec::new(),
    }
}

/// A logout (session end).
pub fn logout(
    ctx: &AuditContext,
    now: OffsetDateTime,
    user: &Person,
    client_addr: Option<&str>,
) -> AuditMessage {
    AuditMessage {
        event: event(
            user_authentication(),
            vec![CodedValue::dcm("110123", "Logout")],
            EventAction::Execute,
            now,
            EventOutcome::Success,
            None,
        ),
        participants: vec![user.participant(true, client_addr), ctx.appliance()],
        source: ctx.source(),
        objects: Vec::new(),
    }
}

/// The kind of a security alert (its DICOM CID 401 event type code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertKind {
    /// 110126 Node Authentication: a TLS peer refused (no certificate, unknown node, revoked).
    NodeAuthentication,
    /// 110129 Security Configuration changed.
    SecurityConfiguration,
    /// 110132 Use of Restricted Function (an operator action refused by role).
    UseOfRestrictedFunction,
    /// 110136 Security Roles Changed.
    SecurityRolesChanged,
    /// 110133 Audit Recording Stopped.
    AuditRecordingStopped,
    /// 110134 Audit Recording Started.
    AuditRecordingStarted,
    /// 110120 Application Start.
    ApplicationStart,
    /// 110121 Application Stop.
    ApplicationStop,
}

impl AlertKind {
    /// The CID 401 code.
    pub fn code(self) -> CodedValue {
        let (c, m) = match self {
            AlertKind::NodeAuthentication => ("110126", "Node Authentication"),
            AlertKind::SecurityConfiguration => ("110129", "Security Configuration"),
            AlertKind::UseOfRestrictedFunction => ("110132", "Use of Restricted Function"),
            AlertKind::SecurityRolesChanged => ("110136", "Security Roles Changed"),
            AlertKind::AuditRecordingStopped => ("110133", "Audit Recording Stopped"),
            AlertKind::AuditRecordingStarted => ("110134", "Audit Recording Started"),
            AlertKind::ApplicationStart => ("110120", "Application Start"),
            AlertKind::ApplicationStop => ("110121", "Application Stop"),
        };
        CodedValue::dcm(c, m)
    }
}

/// A security alert. `actor` is the person or node that caused it (a node is given by its
/// certificate subject), `peer_addr` where it came from.
pub fn security_alert_event(
    ctx: &AuditContext,
    now: OffsetDateTime,
    kind: AlertKind,
    outcome: EventOutcome,
    description: &str,
    actor: Option<&Person>,
    peer_addr: Option<&str>,
) -> AuditMessage {
    let mut participants = Vec::new();
    if let Some(a) = actor {
        participants.push(a.participant(true, peer_addr));
    } else if let Some(addr) = peer_addr {
        participants.push(ActiveParticipant::new(addr, true).with_access_point(addr));
    }
    participants.push(ctx.appliance());
    AuditMessage {
        event: event(
            security_alert(),
            vec![kind.code()],
            EventAction::Execute,
            now,
            outcome,
            Some(description.to_owned()).filter(|d| !d.is_empty()),
        ),
        participants,
        source: ctx.source(),
        objects: Vec::new(),
    }
}

/// A security alert about `objects` (a node, a registry entry, the audit log…), with its
/// CID 401 and local event type codes.
#[allow(clippy::too_many_arguments)]
pub fn security_alert_about(
    ctx: &AuditContext,
    now: OffsetDateTime,
    types: Vec<CodedValue>,
    action: EventAction,
    outcome: EventOutcome,
    description: Option<String>,
    actor: Option<&Person>,
    objects: Vec<ParticipantObject>,
) -> AuditMessage {
    let mut participants = Vec::new();
    if let Some(a) = actor {
        participants.push(a.participant(true, None));
    }
    participants.push(ctx.appliance());
    AuditMessage {
        event: event(
            security_alert(),
            types,
            action,
            now,
            outcome,
            description.filter(|d| !d.is_empty()),
        ),
        participants,
        source: ctx.source(),
        objects,
    }
}

/// A code of the appliance's own code system ([`LOCAL_CODE_SYSTEM`]).
pub fn local_code(code: &str, meaning: &str) -> CodedValue {
    local(code, meaning)
}

/// A person as a participant object (role User), named by their name or else their id.
pub fn person_object(person: &Person) -> ParticipantObject {
    person.as_object()
}

/// A certificate, as the object of an issuance or revocation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRef {
    /// Serial number in hexadecimal.
    pub serial_hex: String,
    /// Subject distinguished name (RFC 4514).
    pub subject: String,
    /// Issuing CA's name.
    pub issuer: String,
    /// The holder, when the certificate belongs to a person (a CPS card certificate).
    pub holder: Option<Person>,
}

impl CertificateRef {
    fn object(&self) -> ParticipantObject {
        ParticipantObject {
            id: self.serial_hex.clone(),
            id_type: local("certificate-serial", "X.509 certificate serial number"),
            object_type: Some(ObjectType::SystemObject),
            role: Some(ObjectRole::SecurityResource),
            name: Some(self.subject.clone()),
            details: vec![crate::model::ObjectDetail {
                kind: "issuer".into(),
                value: self.issuer.clone().into_bytes(),
            }],
        }
    }

    fn change_type(&self) -> CodedValue {
        if self.holder.is_some() {
            CodedValue::dcm("110137", "User Security Attributes Changed")
        } else {
            CodedValue::dcm("110135", "Object Security Attributes Changed")
        }
    }
}

fn cert_event(
    ctx: &AuditContext,
    now: OffsetDateTime,
    operator: &Person,
    cert: &CertificateRef,
    local_type: CodedValue,
    action: EventAction,
    description: Option<String>,
) -> AuditMessage {
    let mut objects = vec![cert.object()];
    if let Some(h) = &cert.holder {
        objects.push(h.as_object());
    }
    AuditMessage {
        event: event(
            security_alert(),
            vec![cert.change_type(), local_type],
            action,
            now,
            EventOutcome::Success,
            description,
        ),
        participants: vec![operator.participant(true, None), ctx.appliance()],
        source: ctx.source(),
        objects,
    }
}

/// A certificate was issued by `operator` (or by an automated enrolment acting for them).
pub fn certificate_issued(
    ctx: &AuditContext,
    now: OffsetDateTime,
    operator: &Person,
    cert: &CertificateRef,
) -> AuditMessage {
    cert_event(
        ctx,
        now,
        operator,
        cert,
        local("cert-issued", "Certificate issued"),
        EventAction::Create,
        None,
    )
}

/// What happened to a certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationChange {
    /// Revoked for good.
    Revoked,
    /// Put on hold (suspended).
    OnHold,
    /// Released from hold.
    Released,
}

/// A certificate was revoked, put on hold or released; `reason` is the CRL reason in words.
pub fn certificate_revoked(
    ctx: &AuditContext,
    now: OffsetDateTime,
    operator: &Person,
    cert: &CertificateRef,
    change: RevocationChange,
    reason: &str,
) -> AuditMessage {
    let (t, action) = match change {
        RevocationChange::Revoked => (
            local("cert-revoked", "Certificate revoked"),
            EventAction::Delete,
        ),
        RevocationChange::OnHold => (
            local("cert-hold", "Certificate on hold"),
            EventAction::Update,
        ),
        RevocationChange::Released => (
            local("cert-released", "Certificate released from hold"),
            EventAction::Update,
        ),
    };
    cert_event(
        ctx,
        now,
        operator,
        cert,
        t,
        action,
        Some(reason.to_owned()).filter(|r| !r.is_empty()),
    )
}

/// A step of a CPS card's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardChange {
    /// Keys generated on the card, certificates written, PIN set.
    Enrolled,
    /// Temporarily suspended.
    Suspended,
    /// Suspension lifted.
    Resumed,
    /// Opposed (lost, stolen): final.
    Opposed,
    /// PIN unblocked with the PUK.
    PinUnblocked,
    /// The card's initial PIN and PUK handed to the operator who enrolled it (once).
    SecretsDelivered,
    /// Its keys and certificates renewed in place.
    Renewed,
    /// An enrolment of the card started, progressed or resumed.
    EnrolmentProgress,
    /// An enrolment of the card failed or was abandoned; its certificates are revoked.
    EnrolmentRolledBack,
}

impl CardChange {
    fn local_code(self) -> (CodedValue, EventAction) {
        match self {
            CardChange::Enrolled => (local("card-enrolled", "Card enrolled"), EventAction::Create),
            CardChange::Suspended => (
                local("card-suspended", "Card suspended"),
                EventAction::Update,
            ),
            CardChange::Resumed => (local("card-resumed", "Card resumed"), EventAction::Update),
            CardChange::Opposed => (local("card-opposed", "Card opposed"), EventAction::Delete),
            CardChange::PinUnblocked => (
                local("card-pin-unblocked", "Card PIN unblocked"),
                EventAction::Update,
            ),
            CardChange::SecretsDelivered => (
                local("card-secrets-delivered", "Initial PIN and PUK delivered"),
                EventAction::Read,
            ),
            CardChange::Renewed => (local("card-renewed", "Card renewed"), EventAction::Update),
            CardChange::EnrolmentProgress => (
                local("card-enrolment-step", "Card enrolment step"),
                EventAction::Update,
            ),
            CardChange::EnrolmentRolledBack => (
                local("card-enrolment-rolled-back", "Card enrolment rolled back"),
                EventAction::Delete,
            ),
        }
    }
}

/// A card lifecycle step performed by `operator` on the card `card_serial` of `holder`.
pub fn card_lifecycle(
    ctx: &AuditContext,
    now: OffsetDateTime,
    operator: &Person,
    holder: &Person,
    card_serial: &str,
    change: CardChange,
) -> AuditMessage {
    card_event(
        ctx,
        now,
        operator,
        holder,
        card_serial,
        change,
        EventOutcome::Success,
        None,
    )
}

/// A card lifecycle event with its outcome and a description (an enrolment step that failed,
/// a wrong PUK).
#[allow(clippy::too_many_arguments)]
pub fn card_event(
    ctx: &AuditContext,
    now: OffsetDateTime,
    operator: &Person,
    holder: &Person,
    card_serial: &str,
    change: CardChange,
    outcome: EventOutcome,
    description: Option<String>,
) -> AuditMessage {
    let (t, action) = change.local_code();
    AuditMessage {
        event: event(
            security_alert(),
            vec![
                CodedValue::dcm("110137", "User Security Attributes Changed"),
                t,
            ],
            action,
            now,
            outcome,
            description,
        ),
        participants: vec![operator.participant(true, None), ctx.appliance()],
        source: ctx.source(),
        objects: vec![
            ParticipantObject {
                id: card_serial.to_owned(),
                id_type: local("card-serial", "CPS card serial number"),
                object_type: Some(ObjectType::SystemObject),
                role: Some(ObjectRole::SecurityResource),
                name: Some(format!("CPS card {card_serial}")),
                details: Vec::new(),
            },
            holder.as_object(),
        ],
    }
}

fn assertion_object(assertion_id: &str) -> ParticipantObject {
    ParticipantObject {
        id: assertion_id.to_owned(),
        id_type: local("saml-assertion-id", "SAML assertion ID"),
        object_type: Some(ObjectType::SystemObject),
        role: Some(ObjectRole::SecurityResource),
        name: Some("SAML assertion".into()),
        details: Vec::new(),
    }
}

fn authentication_decision() -> CodedValue {
    CodedValue::dcm("110143", "Authentication Decision")
}

/// An assertion (VIHF) was issued to `user` after a card login from `client_addr`.
pub fn assertion_issued(
    ctx: &AuditContext,
    now: OffsetDateTime,
    user: &Person,
    assertion_id: &str,
    client_addr: Option<&str>,
) -> AuditMessage {
    AuditMessage {
        event: event(
            user_authentication(),
            vec![
                authentication_decision(),
                local("assertion-issued", "Assertion issued"),
            ],
            EventAction::Create,
            now,
            EventOutcome::Success,
            None,
        ),
        participants: vec![user.participant(true, client_addr), ctx.appliance()],
        source: ctx.source(),
        objects: vec![assertion_object(assertion_id), user.as_object()],
    }
}

/// A service (`requester`, a node name or address) had an assertion validated; `user` is its
/// subject; `patient_id` the patient it was about, if any.
pub fn assertion_validated(
    ctx: &AuditContext,
    now: OffsetDateTime,
    requester: &str,
    user: &Person,
    assertion_id: &str,
    patient_id: Option<&str>,
) -> AuditMessage {
    let mut objects = vec![assertion_object(assertion_id), user.as_object()];
    if let Some(p) = patient_id {
        objects.push(patient(p));
    }
    AuditMessage {
        event: event(
            user_authentication(),
            vec![
                authentication_decision(),
                local(ASSERTION_VALIDATED_TYPE, "Assertion validated"),
            ],
            EventAction::Execute,
            now,
            EventOutcome::Success,
            None,
        ),
        participants: vec![
            ActiveParticipant::new(requester, true)
                .with_role(CodedValue::dcm("110153", "Source Role ID"))
                .with_access_point(requester),
            user.participant(false, None),
            ctx.appliance(),
        ],
        source: ctx.source(),
        objects,
    }
}

/// The event type code of [`assertion_validated`] messages (for searching the log).
pub const ASSERTION_VALIDATED_TYPE: &str = "assertion-validated";

/// The SAML assertion ID that an [`assertion_validated`] message records, read back from a
/// stored message (RFC 5424 + DICOM XML, as the log keeps it); `None` for any other message.
/// Used to remember, across a restart, the assertions already validated.
pub fn validated_assertion_id(raw: &[u8]) -> Option<String> {
    let (_, msg) = crate::syslog::SyslogMessage::parse_header(raw).ok()?;
    let xml = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    let text = std::str::from_utf8(xml).ok()?;
    let doc = roxmltree::Document::parse_with_options(
        text.trim_end(),
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: crate::XmlLimits::default().max_nodes,
            ..Default::default()
        },
    )
    .ok()?;
    let root = doc.root_element();
    let elements = || root.children().filter(|n| n.is_element());
    let validated = elements()
        .filter(|n| n.has_tag_name("EventIdentification"))
        .flat_map(|n| n.children())
        .any(|n| {
            n.has_tag_name("EventTypeCode")
                && n.attribute("csd-code") == Some(ASSERTION_VALIDATED_TYPE)
        });
    if !validated {
        return None;
    }
    elements()
        .filter(|n| n.has_tag_name("ParticipantObjectIdentification"))
        .find(|n| {
            n.children().any(|c| {
                c.has_tag_name("ParticipantObjectIDTypeCode")
                    && c.attribute("csd-code") == Some("saml-assertion-id")
            })
        })
        .and_then(|n| n.attribute("ParticipantObjectID"))
        .map(str::to_owned)
}

/// An assertion was refused. `serious` marks forged signatures and replays (outcome 8) as
/// opposed to expired or malformed ones (outcome 4).
pub fn assertion_refused(
    ctx: &AuditContext,
    now: OffsetDateTime,
    requester: &str,
    claimed_user: Option<&Person>,
    assertion_id: Option<&str>,
    reason: &str,
    serious: bool,
) -> AuditMessage {
    let mut participants = vec![
        ActiveParticipant::new(requester, true)
            .with_role(CodedValue::dcm("110153", "Source Role ID"))
            .with_access_point(requester),
    ];
    if let Some(u) = claimed_user {
        participants.push(u.participant(false, None));
    }
    participants.push(ctx.appliance());
    AuditMessage {
        event: event(
            user_authentication(),
            vec![
                authentication_decision(),
                local("assertion-refused", "Assertion refused"),
            ],
            EventAction::Execute,
            now,
            if serious {
                EventOutcome::SeriousFailure
            } else {
                EventOutcome::MinorFailure
            },
            Some(reason.to_owned()),
        ),
        participants,
        source: ctx.source(),
        objects: assertion_id.map(assertion_object).into_iter().collect(),
    }
}

fn patient(id: &str) -> ParticipantObject {
    ParticipantObject {
        id: id.to_owned(),
        id_type: CodedValue::new("2", "RFC-3881", "Patient Number"),
        object_type: Some(ObjectType::Person),
        role: Some(ObjectRole::Patient),
        name: Some(id.to_owned()),
        details: Vec::new(),
    }
}

/// What a document signature event (IHE DSG) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAct {
    /// A signature was made: 113031 "Signed Manifest", action C.
    Signed,
    /// A signature was verified (or refused): 110007 "Report Verification", action R.
    Verified,
}

/// A document signature made or verified (IHE ITI TF-3 DSG): `requester` asked for it, `signer`
/// is who signed (a seal's subject or a professional's IdNat_PS, when known), and each signed
/// document is a participant object by its uniqueId (type 2 system object, role 3 report,
/// ID type RFC-3881 9 "Report Number").
#[allow(clippy::too_many_arguments)]
pub fn document_signature(
    ctx: &AuditContext,
    now: OffsetDateTime,
    act: SignatureAct,
    requester: &str,
    signer: Option<&Person>,
    documents: &[String],
    outcome: EventOutcome,
    description: Option<String>,
) -> AuditMessage {
    let (id, action) = match act {
        SignatureAct::Signed => (
            CodedValue::dcm("113031", "Signed Manifest"),
            EventAction::Create,
        ),
        SignatureAct::Verified => (
            CodedValue::dcm("110007", "Report Verification"),
            EventAction::Read,
        ),
    };
    let mut participants = vec![
        ActiveParticipant::new(requester, true)
            .with_role(CodedValue::dcm("110153", "Source Role ID"))
            .with_access_point(requester),
    ];
    if let Some(s) = signer
        && s.id != requester
    {
        participants.push(s.participant(false, None));
    }
    participants.push(ctx.appliance());
    AuditMessage {
        event: event(
            id,
            vec![CodedValue::new(
                DSG_EVENT_TYPE,
                "IHE Transactions",
                "Document Digital Signature",
            )],
            action,
            now,
            outcome,
            description,
        ),
        participants,
        source: ctx.source(),
        objects: documents
            .iter()
            .map(|d| ParticipantObject {
                id: d.clone(),
                id_type: CodedValue::new("9", "RFC-3881", "Report Number"),
                object_type: Some(ObjectType::SystemObject),
                role: Some(ObjectRole::Report),
                name: Some(d.clone()),
                details: Vec::new(),
            })
            .collect(),
    }
}

/// The EventTypeCode of document signature events (IHE DSG).
pub const DSG_EVENT_TYPE: &str = "urn:ihe:iti:dsg";

/// The purpose of use (access mode) of a request, e.g. TRE_R248 `bris_de_glace`.
pub fn purpose_of_use(code: &str) -> CodedValue {
    let meaning = match code {
        "normal" => "Accès normal",
        "bris_de_glace" => "Accès en bris de glace",
        "centre_15" => "Accès par un centre de régulation médicale",
        other => other,
    };
    CodedValue::new(code, TRE_R248_OID, meaning)
}

/// A break-glass (emergency) access by `user` to `patient_id`'s record, with the purpose of use
/// copied from the assertion.
pub fn break_glass(
    ctx: &AuditContext,
    now: OffsetDateTime,
    user: &Person,
    patient_id: &str,
    purpose: CodedValue,
    client_addr: Option<&str>,
) -> AuditMessage {
    AuditMessage {
        event: event(
            security_alert(),
            vec![
                CodedValue::dcm("110127", "Emergency Override Started"),
                purpose,
            ],
            EventAction::Execute,
            now,
            EventOutcome::Success,
            None,
        ),
        participants: vec![user.participant(true, client_addr), ctx.appliance()],
        source: ctx.source(),
        objects: vec![patient(patient_id), user.as_object()],
    }
}

/// A signed checkpoint of the appliance's audit log `log_id` (a URI naming the log), with every
/// field needed to verify its signature at the repository.
pub fn audit_checkpoint(
    ctx: &AuditContext,
    log_id: &str,
    checkpoint: &crate::Checkpoint,
) -> AuditMessage {
    use crate::model::ObjectDetail;
    let at = crate::time_fmt::from_unix_micros(checkpoint.time);
    let text = |kind: &str, v: String| ObjectDetail {
        kind: kind.into(),
        value: v.into_bytes(),
    };
    let raw = |kind: &str, v: &[u8]| ObjectDetail {
        kind: kind.into(),
        value: v.to_vec(),
    };
    let mut details = vec![
        text("seq", checkpoint.seq.to_string()),
        raw("head", &checkpoint.head),
        text("time", crate::time_fmt::xml_datetime(at)),
    ];
    if let Some(p) = &checkpoint.policy {
        details.push(text("checkpoint-every", p.every.to_string()));
        details.push(text(
            "checkpoint-interval-ms",
            p.interval.as_millis().to_string(),
        ));
    }
    details.extend([
        text("algorithm", checkpoint.algorithm.clone()),
        raw("key-id", &checkpoint.key_id),
        raw("signature", &checkpoint.signature),
        raw("checkpoint", &checkpoint.to_bytes()),
    ]);
    let head: String = checkpoint.head.iter().map(|b| format!("{b:02x}")).collect();
    AuditMessage {
        event: event(
            security_alert(),
            vec![local("audit-checkpoint", "Audit log checkpoint")],
            EventAction::Execute,
            at,
            EventOutcome::Success,
            Some(format!(
                "audit log checkpoint: record {}, head {head}",
                checkpoint.seq
            )),
        ),
        participants: vec![ctx.appliance()],
        source: ctx.source(),
        objects: vec![ParticipantObject {
            id: log_id.to_owned(),
            id_type: CodedValue::new("12", "RFC-3881", "URI"),
            object_type: Some(ObjectType::SystemObject),
            role: Some(ObjectRole::SecurityResource),
            name: Some("audit log".into()),
            details,
        }],
    }
}
