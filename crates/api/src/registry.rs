//! The registry of professionals, cards and background jobs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Status of a professional in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfessionalStatus {
    Active,
    Suspended,
    Left,
}

impl ProfessionalStatus {
    /// `active`, `suspended`, `left`.
    pub fn name(self) -> &'static str {
        match self {
            ProfessionalStatus::Active => "active",
            ProfessionalStatus::Suspended => "suspended",
            ProfessionalStatus::Left => "left",
        }
    }
}

/// One professional activity: where, and in which sector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Identifier of the structure (a struct_IdNat).
    pub structure_id: String,
    /// Name of the structure.
    pub structure_name: String,
    /// TRE_R02 secteur d'activité code, e.g. `SA07`.
    pub secteur_activite: String,
}

/// What a registry officer says about a professional (`POST /api/v1/professionals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfessionalData {
    /// IdNat_PS, e.g. `810002813839`.
    pub idnat_ps: String,
    pub surname: String,
    pub given_names: String,
    /// TRE_G15 profession code, e.g. `10`.
    pub profession_code: String,
    /// TRE_R01 savoir-faire code (médecins and pharmaciens only).
    pub savoir_faire: Option<String>,
    pub activities: Vec<Activity>,
}

/// A professional as the registry holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Professional {
    pub data: ProfessionalData,
    pub status: ProfessionalStatus,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// Incremented by every change.
    pub revision: u64,
}

/// A page of a registry search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProfessionalPage {
    pub professionals: Vec<Professional>,
    /// Cursor of the next page (`after`).
    pub next: Option<String>,
}

/// A professional and their cards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProfessionalCards {
    pub professional: Professional,
    pub cards: Vec<Card>,
}

/// `POST /api/v1/professionals/{idnat}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `active`, `suspended` or `left`.
    pub status: String,
}

/// The result of a professional status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusChangeView {
    pub professional: Professional,
    /// Cards whose status changed.
    pub cards: Vec<Card>,
    /// Enrolments aborted.
    pub aborted_enrolments: Vec<String>,
}

/// A job was started (`202`): follow it at `GET /api/v1/jobs/{job}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobStarted {
    pub job: String,
}

/// A card reader of the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reader {
    pub name: String,
    pub card_present: bool,
}

/// `POST /api/v1/cards/enrol`: enrol a blank card in a reader of the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub reader: String,
    pub idnat_ps: String,
    pub structure_id: String,
    /// Serial of the card this one replaces.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// `POST /api/v1/cards/{serial}/{action}`: the fields each action needs (an empty body is
/// accepted for `suspend` and `resume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardActionRequest {
    /// `oppose`: lost, stolen, destroyed.
    #[serde(default)]
    pub reason: Option<String>,
    /// `renew`, `unblock`: the reader holding the card.
    #[serde(default)]
    pub reader: Option<String>,
    /// `renew`: the holder's PIN.
    #[serde(default)]
    pub pin: Option<String>,
    /// `unblock`: the PUK.
    #[serde(default)]
    pub puk: Option<String>,
    /// `unblock`: the new PIN.
    #[serde(default)]
    pub new_pin: Option<String>,
}

/// A slot of a CPS card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertSlot {
    /// PIV slot 9A, profile `cps-auth`.
    Authentication,
    /// PIV slot 9C, profile `cps-sign`.
    Signature,
}

/// A certificate written to a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CardCertificate {
    pub slot: CertSlot,
    /// Issuing CA id.
    pub issuer: String,
    /// Serial, upper-case hex.
    pub serial: String,
    pub profile: String,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the public key (hex).
    pub spki_sha256: String,
}

/// The card management key (PIV 9B) a card has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManagementKeyState {
    /// The well-known default key.
    Default,
    /// A per-card key derived in the HSM.
    PerCard {
        master_key: String,
        algorithm: String,
    },
}

/// Why a card was opposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OppositionReason {
    Lost,
    Stolen,
    Destroyed,
}

/// Why a card was retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RetirementReason {
    ProfessionalLeft,
    Replaced {
        /// Serial of the new card.
        by: String,
    },
}

/// Status of a registered card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CardStatus {
    Active,
    Suspended {
        /// The suspension follows the professional's own.
        by_professional: bool,
        /// Unix seconds.
        at: i64,
    },
    Opposed {
        reason: OppositionReason,
        /// Unix seconds.
        at: i64,
    },
    Retired {
        reason: RetirementReason,
        /// Unix seconds.
        at: i64,
    },
}

impl CardStatus {
    /// `active`, `suspended`, `opposed`, `retired`.
    pub fn name(&self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Suspended { .. } => "suspended",
            CardStatus::Opposed { .. } => "opposed",
            CardStatus::Retired { .. } => "retired",
        }
    }
}

/// A registered card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Card serial: the CHUID GUID, upper-case hex.
    pub serial: String,
    /// `<issuer number>/<10-digit card number>`.
    pub token_id: String,
    pub idnat_ps: String,
    pub structure_id: String,
    pub status: CardStatus,
    /// `p256`, `rsa2048`.
    pub key_algorithm: String,
    pub certificates: Vec<CardCertificate>,
    pub previous_certificates: Vec<CardCertificate>,
    pub management_key: ManagementKeyState,
    pub enrolment: String,
    /// Unix seconds.
    pub enrolled_at: i64,
    pub enrolled_by: String,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One line of a job's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// Step name (`detect_card`, `generate_keys`...), or the import phase.
    pub step: String,
    pub label: String,
    /// `started`, `done`, `skipped`, `failed`.
    pub state: String,
    pub detail: Option<String>,
}

/// The initial PIN and PUK of an enrolled card, in the one answer that carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InitialSecrets {
    pub pin: String,
    pub puk: String,
}

/// A background job (enrolment or import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// `enrolment`, `import`.
    pub kind: String,
    pub actor: String,
    /// `running`, `done`, `failed`.
    pub status: String,
    pub events: Vec<JobEvent>,
    /// For imports: phase, units done and total.
    #[schema(value_type = Option<Vec<Object>>)]
    pub progress: Option<(String, usize, usize)>,
    pub error: Option<String>,
    /// The outcome: a [`Card`] (enrolment) or an [`ImportReport`] (import).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The initial PIN and PUK: once, to the certificate that started the enrolment.
    pub secrets: Option<InitialSecrets>,
}

/// One problem of an import, tied to a line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineIssue {
    /// From 1; 0 for the file as a whole.
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    Rejected,
    Unchanged,
    Imported,
    DryRun,
}

impl ImportOutcome {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ImportOutcome::Rejected => "rejected",
            ImportOutcome::Unchanged => "unchanged",
            ImportOutcome::Imported => "imported",
            ImportOutcome::DryRun => "dry_run",
        }
    }
}

/// The report of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// SHA-256 of the file (hex).
    pub file_sha256: String,
    pub lines: usize,
    pub professionals: usize,
    pub activities: usize,
    pub errors: Vec<LineIssue>,
    pub error_count: usize,
    pub warnings: Vec<LineIssue>,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub outcome: ImportOutcome,
}
