//! The appliance's audit vocabulary: [`AuditEvent`], one variant per thing that happens, with
//! typed fields.
//!
//! Invariant: services emit only [`AuditEvent`]s; JSON exists only at the storage edge, where
//! [`AuditEvent::record`] makes the [`AuditRecord`] the store persists (its `kind` and `outcome`
//! strings derived from the variant, its `detail` the variant's fields tagged with `"event"`)
//! and [`AuditEvent::decode`] reads it back. Records written before the events were typed carry
//! no tag: they are upgraded by their kind and outcome, and those that still do not fit come
//! back as [`Decoded::Legacy`], a path no new record can take.
//!
//! The crate depends on `cps-store` and serde only, so that every emitter (the CA, enrolment,
//! the appliance) can use it without a cycle; the DICOM mapping is `cps_atna::mapping`.

use std::collections::BTreeMap;

pub use cps_store::AuditRecord;
use serde::{Deserialize, Serialize};

pub mod metrics;

/// A certificate named by its issuing CA id and serial (upper-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateId {
    /// Issuing CA id, e.g. `personnes`.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
}

/// A certificate of the hierarchy made by `ca init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaCertificate {
    /// `root`, `<ca>` or `<ca>-ocsp`.
    pub id: String,
    /// Subject DN.
    pub subject: String,
    /// Serial, hex.
    pub serial: String,
    /// Label of its key in the HSM.
    pub key_label: String,
}

/// What an enrolment does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnrolmentPurpose {
    /// A blank card for an activity without a card.
    New,
    /// A blank card replacing `old_card`.
    Replacement {
        /// Serial of the card replaced.
        old_card: String,
    },
    /// New keys and certificates on a registered card.
    Renewal,
}

/// The steps of a card enrolment (each completed step is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrolmentStep {
    DetectCard,
    Authenticate,
    GenerateKeys,
    ProvePossession,
    IssueAuthentication,
    IssueSignature,
    WriteCard,
    SetPinPuk,
    ReplaceManagementKey,
    Register,
}

impl EnrolmentStep {
    /// The step's name, as in the record kind `enrol.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            EnrolmentStep::DetectCard => "detect_card",
            EnrolmentStep::Authenticate => "authenticate",
            EnrolmentStep::GenerateKeys => "generate_keys",
            EnrolmentStep::ProvePossession => "prove_possession",
            EnrolmentStep::IssueAuthentication => "issue_authentication",
            EnrolmentStep::IssueSignature => "issue_signature",
            EnrolmentStep::WriteCard => "write_card",
            EnrolmentStep::SetPinPuk => "set_pin_puk",
            EnrolmentStep::ReplaceManagementKey => "replace_management_key",
            EnrolmentStep::Register => "register",
        }
    }

    fn from_name(name: &str) -> Option<EnrolmentStep> {
        use EnrolmentStep::*;
        [
            DetectCard,
            Authenticate,
            GenerateKeys,
            ProvePossession,
            IssueAuthentication,
            IssueSignature,
            WriteCard,
            SetPinPuk,
            ReplaceManagementKey,
            Register,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// What an enrolment step produced (each field set by the steps it concerns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDetail {
    /// `generate_keys`: the key algorithm and the keys' SPKI hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_spki_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_spki_sha256: Option<String>,
    /// `issue_*`: the certificate issued and its profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `replace_management_key`: `per_card` or `default`, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A card's status change (suspension, resumption, opposition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardChange {
    /// Card serial.
    pub card: String,
    /// Its holder.
    pub idnat_ps: String,
    /// The holder's activity.
    pub structure_id: String,
    /// Status before.
    pub from: String,
    /// Status after.
    pub to: String,
    /// Its certificates (`issuer/serial`).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// An open enrolment of the card that the change aborted.
    #[serde(default)]
    pub aborted_enrolment: Option<String>,
}

/// Refused attempts of unauthenticated peers, one summary per source and interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalSummary {
    /// The source address; `None` for the sources beyond the tally's capacity, together.
    pub source: Option<String>,
    /// How many sources this summary covers.
    pub sources: u64,
    /// Refusals counted.
    pub count: u64,
    /// First and last refusal, Unix seconds.
    pub first: i64,
    pub last: i64,
    /// Refusals by reason.
    pub reasons: BTreeMap<String, u64>,
}

/// The result counts of a registry import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub import: String,
    pub file_sha256: String,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub professionals: u64,
    pub activities: u64,
}

/// A card of a professional whose status changed, and its new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardStatus {
    pub card: String,
    pub status: String,
}

/// Everything the appliance audits. The `kind` each variant is stored under is given by
/// [`AuditEvent::kind`]; its outcome by [`AuditEvent::outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    // --- Certificates (the CA) ---
    /// `cert.issue`: a certificate was issued.
    CertificateIssued {
        ca: String,
        serial: String,
        subject: String,
        profile: String,
        /// Who holds its key (`professional:…`, `node:…`, `appliance:…`).
        holder: String,
    },
    /// `cert.revoke`: a certificate was revoked for good.
    CertificateRevoked {
        ca: String,
        serial: String,
        #[serde(default)]
        subject: String,
        reason: String,
    },
    /// `cert.suspend`: a certificate was put on hold.
    CertificateHeld {
        ca: String,
        serial: String,
        #[serde(default)]
        subject: String,
        reason: String,
    },
    /// `cert.resume`: a certificate was released from hold.
    CertificateReleased {
        ca: String,
        serial: String,
        #[serde(default)]
        subject: String,
        reason: String,
    },
    /// `operator.create`: an operator was created with their certificate.
    OperatorCreated {
        operator: String,
        roles: Vec<String>,
        serial: String,
    },
    /// `ca.init`: the key ceremony made the CA hierarchy.
    CaInitialised {
        token: String,
        certificates: Vec<CaCertificate>,
    },

    // --- Cards and enrolment ---
    /// `enrol.start`: an enrolment started.
    EnrolmentStarted {
        enrolment: String,
        kind: EnrolmentPurpose,
        card: String,
        token_id: String,
        idnat_ps: String,
        structure_id: String,
    },
    /// `enrol.<step>`: an enrolment step completed (the last one is [`AuditEvent::CardEnrolled`]).
    EnrolmentStepDone {
        enrolment: String,
        step: EnrolmentStep,
        card: String,
        idnat_ps: String,
        structure_id: String,
        /// What the step produced.
        #[serde(flatten)]
        detail: StepDetail,
    },
    /// `enrol.register`: the card is enrolled (new card, replacement or renewal).
    CardEnrolled {
        enrolment: String,
        kind: EnrolmentPurpose,
        card: String,
        token_id: String,
        idnat_ps: String,
        structure_id: String,
        certificates: Vec<String>,
        management_key: serde_json::Value,
    },
    /// `enrol.interrupted`: a step failed; the enrolment's certificates are being revoked.
    EnrolmentInterrupted {
        enrolment: String,
        step: EnrolmentStep,
        #[serde(default)]
        card: Option<String>,
        error: String,
        revoking: Vec<String>,
    },
    /// `enrol.resume`: an interrupted enrolment was resumed.
    EnrolmentResumed { enrolment: String, card: String },
    /// `enrol.abort`: an enrolment was abandoned (rolled back).
    EnrolmentAborted {
        enrolment: String,
        reason: String,
        #[serde(default)]
        card: Option<String>,
        #[serde(default)]
        revoking: Vec<String>,
    },
    /// `card.suspend`: a card was suspended (certificates on hold).
    CardSuspended(CardChange),
    /// `card.resume`: a suspended card was resumed.
    CardResumed(CardChange),
    /// `card.oppose`: a card was opposed (lost, stolen, destroyed); its certificates revoked.
    CardOpposed {
        #[serde(flatten)]
        change: CardChange,
        reason: String,
        revocation_reason: String,
    },
    /// `card.unblock_pin`, success: the holder's PUK reset the PIN.
    CardPinUnblocked { card: String, idnat_ps: String },
    /// `card.unblock_pin`, failure: a wrong or blocked PUK.
    CardPinUnblockFailed {
        card: String,
        idnat_ps: String,
        error: String,
    },
    /// `card.secrets_delivered`: the initial PIN and PUK were handed to the operator.
    CardSecretsDelivered {
        card: Option<String>,
        idnat_ps: Option<String>,
        job: String,
        certificate_sha256: String,
    },

    // --- The professionals registry ---
    /// `professional.create`.
    ProfessionalCreated {
        idnat_ps: String,
        profession: String,
    },
    /// `professional.update`.
    ProfessionalUpdated { idnat_ps: String, revision: u64 },
    /// `professional.status`: with its consequences for their cards.
    ProfessionalStatusChanged {
        idnat_ps: String,
        from: String,
        to: String,
        cards: Vec<CardStatus>,
        aborted_enrolments: Vec<String>,
    },
    /// `professional.import`, success: the registry file was imported.
    RegistryImported(ImportSummary),
    /// `professional.import`, outcome `unchanged`: the file changed nothing.
    RegistryImportUnchanged(ImportSummary),
    /// `professional.import`, outcome `rejected`: the file was refused whole.
    RegistryImportRejected { file_sha256: String, errors: u64 },

    // --- Login and assertions ---
    /// `login`, success.
    LoginSucceeded {
        idnat_ps: String,
        mode: String,
        assertion_id: String,
        source: String,
    },
    /// `login`, failure: an identified professional was refused.
    LoginRefused {
        idnat_ps: String,
        mode: String,
        certificate: String,
        code: String,
        reason: String,
        source: String,
    },
    /// `login.refused`: unauthenticated login attempts refused (a summary).
    LoginsRefused(RefusalSummary),
    /// `xua.issue`: an assertion was issued.
    AssertionIssued {
        idnat_ps: String,
        assertion_id: String,
        structure_id: String,
        patient_ins: Option<String>,
        purpose_of_use: String,
    },
    /// `xua.break_glass`: an assertion was issued in break-glass mode.
    BreakGlass {
        idnat_ps: String,
        assertion_id: String,
        patient_ins: Option<String>,
        purpose_of_use: String,
        justification: Option<String>,
    },
    /// `xua.validate`, success.
    AssertionValidated {
        assertion_id: String,
        idnat_ps: String,
        purpose_of_use: String,
        patient_ins: Option<String>,
    },
    /// `xua.validate`, failure.
    AssertionRefused { code: String, reason: String },

    // --- Document signatures (IHE DSG) ---
    /// `dsg.sign`: a document signature was made (a structure seal, or a professional's card
    /// through the appliance's timestamp and validation data).
    DocumentsSigned {
        /// The signer: the seal certificate's subject, or the professional's IdNat_PS.
        signer: String,
        /// `seal` or `professional`.
        signer_kind: String,
        structure_id: Option<String>,
        /// `detached` or `enveloping`.
        policy: String,
        /// The commitment type (ASTM E1762 OID).
        purpose: String,
        /// The signed documents' uniqueIds.
        documents: Vec<String>,
    },
    /// `dsg.verify`, success.
    SignatureVerified {
        signer: String,
        /// The proven signing time (the timestamp's), Unix seconds.
        signing_time: i64,
        policy: String,
        purpose: String,
        documents: Vec<String>,
    },
    /// `dsg.verify`, failure.
    SignatureRefused {
        code: String,
        reason: String,
        documents: Vec<String>,
    },
    // --- Time-stamping authority ---
    /// `tsa.stamp`: a time-stamp token (RFC 3161) was issued.
    TimestampIssued {
        /// The token's serial number, hexadecimal.
        serial: String,
        /// The TSA policy (dotted OID).
        policy: String,
        /// The imprint's hash algorithm (`sha256`...).
        hash: String,
        /// The time-stamped hash, hexadecimal.
        imprint: String,
        /// The token's genTime (Unix seconds).
        gen_time: i64,
    },

    // --- Nodes and the audit trail ---
    /// `node.enroll`: a node joined the allowlist.
    NodeEnrolled { node: String, certificate: String },
    /// `node.remove`: a node left it for good.
    NodeRemoved { node: String },
    /// `atna.refused`: syslog-TLS connections refused (a summary).
    SyslogPeersRefused(RefusalSummary),
    /// `atna.anchor_missing`: the audit log lacks a checkpoint the store anchored.
    AnchorMissing {
        seq: u64,
        head: String,
        anchored_at: i64,
        log_records: u64,
        log_last_checkpoint: Option<u64>,
        log: String,
    },

    // --- Appliance alarms ---
    /// `time.trusted`: the clock is trusted again, signing enabled.
    ClockTrusted { source: String, message: String },
    /// `time.untrusted`: the clock alarm, signing stopped.
    ClockUntrusted { source: String, message: String },
    /// `disk.full`: new work (audit records included) was refused while the disk was full.
    DiskFull {
        since: i64,
        until: i64,
        reason: String,
        lowest_free_bytes: Option<u64>,
        min_free_bytes: u64,
    },
}

/// A stored record, read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// A typed event.
    Event(Box<AuditEvent>),
    /// A record written before events were typed whose detail does not fit its event (or of a
    /// kind no longer written): kept as it is.
    Legacy(&'a AuditRecord),
}

/// Why an event could not be made into a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit event: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

impl AuditEvent {
    /// The record kind (what `audit events --kind` filters on).
    pub fn kind(&self) -> String {
        use AuditEvent::*;
        match self {
            CertificateIssued { .. } => "cert.issue",
            CertificateRevoked { .. } => "cert.revoke",
            CertificateHeld { .. } => "cert.suspend",
            CertificateReleased { .. } => "cert.resume",
            OperatorCreated { .. } => "operator.create",
            CaInitialised { .. } => "ca.init",
            EnrolmentStarted { .. } => "enrol.start",
            EnrolmentStepDone { step, .. } => return format!("enrol.{}", step.name()),
            CardEnrolled { .. } => "enrol.register",
            EnrolmentInterrupted { .. } => "enrol.interrupted",
            EnrolmentResumed { .. } => "enrol.resume",
            EnrolmentAborted { .. } => "enrol.abort",
            CardSuspended(_) => "card.suspend",
            CardResumed(_) => "card.resume",
            CardOpposed { .. } => "card.oppose",
            CardPinUnblocked { .. } | CardPinUnblockFailed { .. } => "card.unblock_pin",
            CardSecretsDelivered { .. } => "card.secrets_delivered",
            ProfessionalCreated { .. } => "professional.create",
            ProfessionalUpdated { .. } => "professional.update",
            ProfessionalStatusChanged { .. } => "professional.status",
            RegistryImported(_) | RegistryImportUnchanged(_) | RegistryImportRejected { .. } => {
                "professional.import"
            }
            LoginSucceeded { .. } | LoginRefused { .. } => "login",
            LoginsRefused(_) => "login.refused",
            AssertionIssued { .. } => "xua.issue",
            BreakGlass { .. } => "xua.break_glass",
            AssertionValidated { .. } | AssertionRefused { .. } => "xua.validate",
            DocumentsSigned { .. } => "dsg.sign",
            SignatureVerified { .. } | SignatureRefused { .. } => "dsg.verify",
            TimestampIssued { .. } => "tsa.stamp",
            NodeEnrolled { .. } => "node.enroll",
            NodeRemoved { .. } => "node.remove",
            SyslogPeersRefused(_) => "atna.refused",
            AnchorMissing { .. } => "atna.anchor_missing",
            ClockTrusted { .. } => "time.trusted",
            ClockUntrusted { .. } => "time.untrusted",
            DiskFull { .. } => "disk.full",
        }
        .to_owned()
    }

    /// The record outcome: `success`, `failure`, or an import's `unchanged` / `rejected`.
    pub fn outcome(&self) -> &'static str {
        use AuditEvent::*;
        match self {
            EnrolmentInterrupted { .. }
            | CardPinUnblockFailed { .. }
            | LoginRefused { .. }
            | LoginsRefused(_)
            | AssertionRefused { .. }
            | SignatureRefused { .. }
            | SyslogPeersRefused(_)
            | AnchorMissing { .. }
            | ClockUntrusted { .. }
            | DiskFull { .. } => "failure",
            RegistryImportUnchanged(_) => "unchanged",
            RegistryImportRejected { .. } => "rejected",
            CertificateIssued { .. }
            | CertificateRevoked { .. }
            | CertificateHeld { .. }
            | CertificateReleased { .. }
            | OperatorCreated { .. }
            | CaInitialised { .. }
            | EnrolmentStarted { .. }
            | EnrolmentStepDone { .. }
            | CardEnrolled { .. }
            | EnrolmentResumed { .. }
            | EnrolmentAborted { .. }
            | CardSuspended(_)
            | CardResumed(_)
            | CardOpposed { .. }
            | CardPinUnblocked { .. }
            | CardSecretsDelivered { .. }
            | ProfessionalCreated { .. }
            | ProfessionalUpdated { .. }
            | ProfessionalStatusChanged { .. }
            | RegistryImported(_)
            | LoginSucceeded { .. }
            | AssertionIssued { .. }
            | BreakGlass { .. }
            | AssertionValidated { .. }
            | DocumentsSigned { .. }
            | SignatureVerified { .. }
            | TimestampIssued { .. }
            | NodeEnrolled { .. }
            | NodeRemoved { .. }
            | ClockTrusted { .. } => "success",
        }
    }

    /// The record the store persists: this event, at `time` (Unix seconds), by `actor`.
    pub fn record(&self, time: i64, actor: impl Into<String>) -> AuditRecord {
        AuditRecord {
            time,
            kind: self.kind(),
            actor: actor.into(),
            outcome: self.outcome().into(),
            // Serializing plain strings, numbers, maps and `Value`s cannot fail.
            detail: serde_json::to_value(self).unwrap_or_else(
                |e| serde_json::json!({ "event": "unencodable", "error": e.to_string() }),
            ),
            node: None,
        }
    }

    /// Reads a stored record back. New records carry their variant; older ones are upgraded
    /// by kind and outcome when their detail fits.
    pub fn decode(rec: &AuditRecord) -> Decoded<'_> {
        if rec.detail.get("event").is_some() {
            return match serde_json::from_value(rec.detail.clone()) {
                Ok(e) => Decoded::Event(Box::new(e)),
                Err(_) => Decoded::Legacy(rec),
            };
        }
        match legacy_variant(&rec.kind, &rec.outcome) {
            Some(variant) => {
                let mut detail = rec.detail.clone();
                let Some(map) = detail.as_object_mut() else {
                    return Decoded::Legacy(rec);
                };
                map.insert("event".into(), variant.into());
                if let Some(step) = rec.kind.strip_prefix("enrol.")
                    && EnrolmentStep::from_name(step).is_some()
                {
                    map.insert("step".into(), step.into());
                }
                legacy_fixups(variant, map);
                match serde_json::from_value(detail) {
                    Ok(e) => Decoded::Event(Box::new(e)),
                    Err(_) => Decoded::Legacy(rec),
                }
            }
            None => Decoded::Legacy(rec),
        }
    }

    /// The variant's name (the `event` tag of its record).
    pub fn name(&self) -> &'static str {
        match serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
        {
            Some(n) => VARIANTS.iter().copied().find(|v| *v == n).unwrap_or("?"),
            None => "?",
        }
    }
}

/// The variant names, in declaration order (checked against serde's own list by a test).
pub const VARIANTS: &[&str] = &[
    "CertificateIssued",
    "CertificateRevoked",
    "CertificateHeld",
    "CertificateReleased",
    "OperatorCreated",
    "CaInitialised",
    "EnrolmentStarted",
    "EnrolmentStepDone",
    "CardEnrolled",
    "EnrolmentInterrupted",
    "EnrolmentResumed",
    "EnrolmentAborted",
    "CardSuspended",
    "CardResumed",
    "CardOpposed",
    "CardPinUnblocked",
    "CardPinUnblockFailed",
    "CardSecretsDelivered",
    "ProfessionalCreated",
    "ProfessionalUpdated",
    "ProfessionalStatusChanged",
    "RegistryImported",
    "RegistryImportUnchanged",
    "RegistryImportRejected",
    "LoginSucceeded",
    "LoginRefused",
    "LoginsRefused",
    "AssertionIssued",
    "BreakGlass",
    "AssertionValidated",
    "AssertionRefused",
    "DocumentsSigned",
    "SignatureVerified",
    "SignatureRefused",
    "TimestampIssued",
    "NodeEnrolled",
    "NodeRemoved",
    "SyslogPeersRefused",
    "AnchorMissing",
    "ClockTrusted",
    "ClockUntrusted",
    "DiskFull",
];

/// The variant an untagged record of `kind` and `outcome` was written as.
fn legacy_variant(kind: &str, outcome: &str) -> Option<&'static str> {
    let ok = outcome == "success";
    Some(match kind {
        "cert.issue" => "CertificateIssued",
        "cert.revoke" => "CertificateRevoked",
        "cert.suspend" => "CertificateHeld",
        "cert.resume" => "CertificateReleased",
        "operator.create" => "OperatorCreated",
        "ca.init" => "CaInitialised",
        "enrol.start" => "EnrolmentStarted",
        "enrol.register" => "CardEnrolled",
        "enrol.interrupted" => "EnrolmentInterrupted",
        "enrol.resume" => "EnrolmentResumed",
        "enrol.abort" => "EnrolmentAborted",
        k if k.starts_with("enrol.") => "EnrolmentStepDone",
        "card.suspend" => "CardSuspended",
        "card.resume" => "CardResumed",
        "card.oppose" => "CardOpposed",
        "card.unblock_pin" if ok => "CardPinUnblocked",
        "card.unblock_pin" => "CardPinUnblockFailed",
        "card.secrets_delivered" => "CardSecretsDelivered",
        "professional.create" => "ProfessionalCreated",
        "professional.update" => "ProfessionalUpdated",
        "professional.status" => "ProfessionalStatusChanged",
        "professional.import" if ok => "RegistryImported",
        "professional.import" if outcome == "unchanged" => "RegistryImportUnchanged",
        "professional.import" => "RegistryImportRejected",
        "login" if ok => "LoginSucceeded",
        "login" => "LoginRefused",
        "login.refused" => "LoginsRefused",
        "xua.issue" => "AssertionIssued",
        "xua.break_glass" => "BreakGlass",
        "xua.validate" if ok => "AssertionValidated",
        "xua.validate" => "AssertionRefused",
        "dsg.sign" => "DocumentsSigned",
        "dsg.verify" if ok => "SignatureVerified",
        "dsg.verify" => "SignatureRefused",
        "tsa.stamp" => "TimestampIssued",
        "node.enroll" => "NodeEnrolled",
        "node.remove" => "NodeRemoved",
        "atna.refused" => "SyslogPeersRefused",
        "atna.anchor_missing" => "AnchorMissing",
        "time.trusted" => "ClockTrusted",
        "time.untrusted" => "ClockUntrusted",
        "disk.full" => "DiskFull",
        _ => return None,
    })
}

/// Differences between the untyped details and the typed fields.
fn legacy_fixups(variant: &str, map: &mut serde_json::Map<String, serde_json::Value>) {
    // The unblock record's `error` was null on success, a text on failure.
    if variant == "CardPinUnblocked" {
        map.remove("error");
    }
}

/// One event of every variant, with plausible fields: for the tests of every consumer (the
/// DICOM mapping validates each against the schema). A test checks it covers [`VARIANTS`].
pub fn examples() -> Vec<AuditEvent> {
    use AuditEvent::*;
    let s = |x: &str| x.to_owned();
    let change = |from: &str, to: &str| CardChange {
        card: s("C0FFEE01"),
        idnat_ps: s("810002813839"),
        structure_id: s("10B0152872"),
        from: s(from),
        to: s(to),
        certificates: vec![s("personnes/0A1B"), s("personnes/0A1C")],
        aborted_enrolment: None,
    };
    let summary = |source: Option<&str>| RefusalSummary {
        source: source.map(s),
        sources: 1,
        count: 3,
        first: 1_790_000_000,
        last: 1_790_000_060,
        reasons: [(s("no client certificate"), 3)].into_iter().collect(),
    };
    let import = ImportSummary {
        import: s("imp1"),
        file_sha256: s("00ff"),
        created: 3,
        updated: 1,
        unchanged: 10,
        professionals: 14,
        activities: 15,
    };
    vec![
        CertificateIssued {
            ca: s("personnes"),
            serial: s("0A1B"),
            subject: s("CN=810002813839,O=x"),
            profile: s("cps-auth"),
            holder: s("professional:810002813839"),
        },
        CertificateRevoked {
            ca: s("personnes"),
            serial: s("0A1B"),
            subject: s("CN=x"),
            reason: s("keyCompromise"),
        },
        CertificateHeld {
            ca: s("personnes"),
            serial: s("0A1B"),
            subject: s("CN=x"),
            reason: s("certificateHold"),
        },
        CertificateReleased {
            ca: s("personnes"),
            serial: s("0A1B"),
            subject: s("CN=x"),
            reason: s("removeFromCRL"),
        },
        OperatorCreated {
            operator: s("alice"),
            roles: vec![s("ca-operator")],
            serial: s("0A1D"),
        },
        CaInitialised {
            token: s("cps-trust"),
            certificates: vec![CaCertificate {
                id: s("root"),
                subject: s("CN=root"),
                serial: s("01"),
                key_label: s("root"),
            }],
        },
        EnrolmentStarted {
            enrolment: s("e1"),
            kind: EnrolmentPurpose::New,
            card: s("C0FFEE01"),
            token_id: s("t1"),
            idnat_ps: s("810002813839"),
            structure_id: s("10B0152872"),
        },
        EnrolmentStepDone {
            enrolment: s("e1"),
            step: EnrolmentStep::IssueAuthentication,
            card: s("C0FFEE01"),
            idnat_ps: s("810002813839"),
            structure_id: s("10B0152872"),
            detail: StepDetail {
                certificate: Some(CertificateId {
                    issuer: s("personnes"),
                    serial: s("0A1B"),
                }),
                profile: Some(s("cps-auth")),
                ..StepDetail::default()
            },
        },
        CardEnrolled {
            enrolment: s("e1"),
            kind: EnrolmentPurpose::Replacement {
                old_card: s("C0FFEE00"),
            },
            card: s("C0FFEE01"),
            token_id: s("t1"),
            idnat_ps: s("810002813839"),
            structure_id: s("10B0152872"),
            certificates: vec![s("personnes/0A1B")],
            management_key: serde_json::json!({ "kind": "per_card" }),
        },
        EnrolmentInterrupted {
            enrolment: s("e1"),
            step: EnrolmentStep::WriteCard,
            card: Some(s("C0FFEE01")),
            error: s("card removed"),
            revoking: vec![s("personnes/0A1B")],
        },
        EnrolmentResumed {
            enrolment: s("e1"),
            card: s("C0FFEE01"),
        },
        EnrolmentAborted {
            enrolment: s("e1"),
            reason: s("operator"),
            card: Some(s("C0FFEE01")),
            revoking: vec![],
        },
        CardSuspended(change("active", "suspended")),
        CardResumed(change("suspended", "active")),
        CardOpposed {
            change: change("active", "opposed"),
            reason: s("stolen"),
            revocation_reason: s("keyCompromise"),
        },
        CardPinUnblocked {
            card: s("C0FFEE01"),
            idnat_ps: s("810002813839"),
        },
        CardPinUnblockFailed {
            card: s("C0FFEE01"),
            idnat_ps: s("810002813839"),
            error: s("wrong PUK, 2 tries left"),
        },
        CardSecretsDelivered {
            card: Some(s("C0FFEE01")),
            idnat_ps: Some(s("810002813839")),
            job: s("j1"),
            certificate_sha256: s("00"),
        },
        ProfessionalCreated {
            idnat_ps: s("810002813839"),
            profession: s("10"),
        },
        ProfessionalUpdated {
            idnat_ps: s("810002813839"),
            revision: 2,
        },
        ProfessionalStatusChanged {
            idnat_ps: s("810002813839"),
            from: s("active"),
            to: s("left"),
            cards: vec![CardStatus {
                card: s("C0FFEE01"),
                status: s("retired"),
            }],
            aborted_enrolments: vec![],
        },
        RegistryImported(import.clone()),
        RegistryImportUnchanged(import),
        RegistryImportRejected {
            file_sha256: s("00ff"),
            errors: 2,
        },
        LoginSucceeded {
            idnat_ps: s("810002813839"),
            mode: s("urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI"),
            assertion_id: s("_a1"),
            source: s("127.0.0.1"),
        },
        LoginRefused {
            idnat_ps: s("810002813839"),
            mode: s("tls"),
            certificate: s("CN=x"),
            code: s("revoked"),
            reason: s("the card's certificate is revoked"),
            source: s("127.0.0.1"),
        },
        LoginsRefused(summary(None)),
        AssertionIssued {
            idnat_ps: s("810002813839"),
            assertion_id: s("_a1"),
            structure_id: s("10B0152872"),
            patient_ins: Some(s("248079707503828")),
            purpose_of_use: s("normal"),
        },
        BreakGlass {
            idnat_ps: s("810002813839"),
            assertion_id: s("_a1"),
            patient_ins: Some(s("248079707503828")),
            purpose_of_use: s("bris_de_glace"),
            justification: Some(s("urgence")),
        },
        AssertionValidated {
            assertion_id: s("_a1"),
            idnat_ps: s("810002813839"),
            purpose_of_use: s("normal"),
            patient_ins: None,
        },
        AssertionRefused {
            code: s("bad_signature"),
            reason: s("the signature does not verify"),
        },
        DocumentsSigned {
            signer: s("CN=Clinique XUA, OU=10B0152872"),
            signer_kind: s("seal"),
            structure_id: Some(s("10B0152872")),
            policy: s("detached"),
            purpose: s("1.2.840.10065.1.12.1.1"),
            documents: vec![s("1.2.250.1.999.1.1"), s("1.2.250.1.999.1.2")],
        },
        SignatureVerified {
            signer: s("810002813839"),
            signing_time: 1_790_000_000,
            policy: s("enveloping"),
            purpose: s("1.2.840.10065.1.12.1.1"),
            documents: vec![s("1.2.250.1.999.1.1")],
        },
        SignatureRefused {
            code: s("document_digest"),
            reason: s("document 1.2.250.1.999.1.1 does not match its digest"),
            documents: vec![s("1.2.250.1.999.1.1")],
        },
        TimestampIssued {
            serial: s("00c0ffee00112233445566778899aabb"),
            policy: s("1.3.6.1.4.1.32473.4.1"),
            hash: s("sha256"),
            imprint: s("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            gen_time: 1_790_000_000,
        },
        NodeEnrolled {
            node: s("dmp-registry"),
            certificate: s("ab12"),
        },
        NodeRemoved {
            node: s("dmp-registry"),
        },
        SyslogPeersRefused(summary(Some("127.0.0.1"))),
        AnchorMissing {
            seq: 42,
            head: s("00ff"),
            anchored_at: 1_790_000_000,
            log_records: 13,
            log_last_checkpoint: None,
            log: s("/x/audit/log"),
        },
        ClockTrusted {
            source: s("ntp"),
            message: s("clock trusted: signing enabled"),
        },
        ClockUntrusted {
            source: s("ntp"),
            message: s("max error 300 ms"),
        },
        DiskFull {
            since: 1,
            until: 2,
            reason: s("disk full: 1.0 MiB free"),
            lowest_free_bytes: Some(1 << 20),
            min_free_bytes: 16 << 20,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's own list of the enum's variants (from its "unknown variant" error), so that a
    /// variant added to the enum is seen here without anyone listing it.
    fn serde_variants() -> Vec<String> {
        let e = serde_json::from_value::<AuditEvent>(serde_json::json!({ "event": "#" }))
            .unwrap_err()
            .to_string();
        let list = e.split("expected one of ").nth(1).expect(&e);
        list.split(", ")
            .map(|v| v.trim_matches(|c: char| c == '`' || c.is_whitespace()))
            .map(|v| v.split('`').next().unwrap_or(v).to_owned())
            .collect()
    }

    /// Every variant of the enum is in [`VARIANTS`] and has an example: a new variant fails here
    /// until it has one (and so until its DICOM message is tested by `cps_atna::mapping`).
    #[test]
    fn examples_cover_every_variant() {
        let declared = serde_variants();
        assert_eq!(declared, VARIANTS, "VARIANTS is not the enum's list");
        let mut seen: Vec<&str> = examples().iter().map(AuditEvent::name).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut all = VARIANTS.to_vec();
        all.sort_unstable();
        assert_eq!(seen, all, "a variant has no example");
    }

    /// Every event round-trips through its stored record, with the kind and outcome the
    /// readers (CLI filters, console) have always used.
    #[test]
    fn every_event_round_trips_through_its_record() {
        for e in examples() {
            let rec = e.record(1_790_000_000, "operator:alice");
            let back = AuditEvent::decode(&rec);
            assert_eq!(back, Decoded::Event(Box::new(e.clone())), "{rec:?}");
            // Stored JSON, then read.
            let bytes = serde_json::to_vec(&rec).unwrap();
            let rec2: AuditRecord = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                AuditEvent::decode(&rec2),
                Decoded::Event(Box::new(e.clone()))
            );
            assert_eq!(
                legacy_variant(&rec.kind, &rec.outcome),
                Some(e.name()),
                "{rec:?}"
            );
        }
    }

    /// Records written before the events were typed (untagged details, as the appliance and
    /// enrolment wrote them) still decode to their events.
    #[test]
    fn untagged_records_of_an_existing_store_decode() {
        let old = |kind: &str, outcome: &str, detail: serde_json::Value| AuditRecord {
            time: 1,
            kind: kind.into(),
            actor: "operator:alice".into(),
            outcome: outcome.into(),
            detail,
            node: None,
        };
        let cases = [
            old(
                "cert.issue",
                "success",
                serde_json::json!({ "ca": "personnes", "serial": "0A1B", "subject": "CN=x", "profile": "cps-auth", "holder": "x" }),
            ),
            old(
                "enrol.generate_keys",
                "success",
                serde_json::json!({ "enrolment": "e", "step": "generate_keys", "card": "C", "idnat_ps": "8", "structure_id": "s", "algorithm": "p256", "auth_spki_sha256": "00", "sign_spki_sha256": "11" }),
            ),
            old(
                "card.unblock_pin",
                "success",
                serde_json::json!({ "card": "C", "idnat_ps": "8", "error": null }),
            ),
            old(
                "card.oppose",
                "success",
                serde_json::json!({ "card": "C", "idnat_ps": "8", "structure_id": "s", "from": "active", "to": "opposed", "certificates": [], "aborted_enrolment": null, "reason": "lost", "revocation_reason": "superseded" }),
            ),
            old(
                "enrol.abort",
                "success",
                serde_json::json!({ "enrolment": "e", "reason": "card opposed" }),
            ),
            old(
                "xua.validate",
                "failure",
                serde_json::json!({ "code": "expired", "reason": "too late" }),
            ),
        ];
        for rec in &cases {
            match AuditEvent::decode(rec) {
                Decoded::Event(e) => assert_eq!(e.kind(), rec.kind),
                Decoded::Legacy(_) => panic!("{rec:?} did not decode"),
            }
        }
        // A kind no longer written, or a detail that does not fit, stays as it was.
        let odd = old("bench", "success", serde_json::json!({ "n": 1 }));
        assert_eq!(AuditEvent::decode(&odd), Decoded::Legacy(&odd));
        let short = old("node.enroll", "success", serde_json::json!({ "x": 1 }));
        assert_eq!(AuditEvent::decode(&short), Decoded::Legacy(&short));
    }
}
