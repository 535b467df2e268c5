//! Records of the registry, of cards and of enrolments. Their serde form (JSON) is their stored
//! form: a change here is a schema change.

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::error::{EnrolError, Result};

/// Status of a professional in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfessionalStatus {
    /// May hold and enrol cards.
    Active,
    /// Temporarily barred: their cards are suspended (certificateHold) and no card is enrolled.
    Suspended,
    /// Left the profession: all their cards are revoked.
    Left,
}

impl ProfessionalStatus {
    /// The name used in the API and the CLI (`active`, `suspended`, `left`).
    pub fn name(self) -> &'static str {
        match self {
            ProfessionalStatus::Active => "active",
            ProfessionalStatus::Suspended => "suspended",
            ProfessionalStatus::Left => "left",
        }
    }

    /// Parses [`ProfessionalStatus::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "active" => ProfessionalStatus::Active,
            "suspended" => ProfessionalStatus::Suspended,
            "left" => ProfessionalStatus::Left,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ProfessionalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One professional activity (exercice): where, and in which sector. A card belongs to one
/// activity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Identifier of the structure ("Identifiant technique de la structure", or a
    /// struct_IdNat). Unique among the professional's activities.
    pub structure_id: String,
    /// Name of the structure (raison sociale du site).
    pub structure_name: String,
    /// TRE_R02 secteur d'activité code, e.g. `SA07`.
    pub secteur_activite: String,
}

impl Activity {
    /// The TRE_R02 label of the secteur.
    pub fn secteur_label(&self) -> Option<&'static str> {
        codes::secteur_label(&self.secteur_activite)
    }
}

/// What a registry officer (or an import) says about a professional: everything but the
/// status and the bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfessionalData {
    /// IdNat_PS, e.g. `810002813839` (`8` + RPPS).
    pub idnat_ps: String,
    /// Surname (nom d'exercice).
    pub surname: String,
    /// Given names (prénom d'exercice).
    pub given_names: String,
    /// TRE_G15 profession code, e.g. `10`.
    pub profession_code: String,
    /// TRE_R01 savoir-faire code (médecins and pharmaciens only), e.g. `SM26`.
    pub savoir_faire: Option<String>,
    /// Activities, sorted by structure identifier.
    pub activities: Vec<Activity>,
}

/// Longest surname, given names or structure name accepted (the X.520 upper bound of the
/// certificate attributes they go into is 64 for names).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest structure name.
pub const MAX_STRUCTURE_NAME_CHARS: usize = 200;
/// Most activities per professional.
pub const MAX_ACTIVITIES: usize = 64;

/// One refused field: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// The field (`idnat_ps`, `surname`, `activities[0].secteur_activite`...).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl ProfessionalData {
    /// Trims the names, sorts the activities and returns every problem found (empty: valid).
    /// The same rules apply to a form, an import line and the CA (the subject must build).
    pub fn normalise(&mut self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, reason: String| {
            problems.push(FieldProblem {
                field: field.into(),
                reason,
            })
        };
        if let Err(e) = cps_pki::IdNatPs::parse(&self.idnat_ps) {
            bad("idnat_ps", e.reason.to_string());
        }
        for (field, value) in [
            ("surname", &mut self.surname),
            ("given_names", &mut self.given_names),
        ] {
            *value = value.trim().to_owned();
            if let Some(r) = text_problem(value, MAX_NAME_CHARS) {
                bad(field, r);
            }
        }
        if codes::profession_label(&self.profession_code).is_none() {
            bad(
                "profession_code",
                format!(
                    "unknown profession code '{}' (not in TRE_G15)",
                    shown(&self.profession_code)
                ),
            );
        }
        if let Some(sf) = &self.savoir_faire {
            if !codes::profession_has_savoir_faire(&self.profession_code) {
                bad(
                    "savoir_faire",
                    "only médecins (10) and pharmaciens (21) have a savoir-faire here".into(),
                );
            } else if let Some(r) = codes::savoir_faire_problem(sf) {
                bad("savoir_faire", format!("'{}': {r}", shown(sf)));
            }
        }
        if self.activities.len() > MAX_ACTIVITIES {
            bad(
                "activities",
                format!(
                    "{} activities (at most {MAX_ACTIVITIES})",
                    self.activities.len()
                ),
            );
        }
        for (i, a) in self.activities.iter_mut().enumerate() {
            a.structure_name = a.structure_name.trim().to_owned();
            if let Some(r) = codes::structure_id_problem(&a.structure_id) {
                bad(
                    &format!("activities[{i}].structure_id"),
                    format!("'{}': {r}", shown(&a.structure_id)),
                );
            }
            if let Some(r) = text_problem(&a.structure_name, MAX_STRUCTURE_NAME_CHARS) {
                bad(&format!("activities[{i}].structure_name"), r);
            }
            if codes::secteur_label(&a.secteur_activite).is_none() {
                bad(
                    &format!("activities[{i}].secteur_activite"),
                    format!(
                        "unknown secteur d'activité '{}' (not in TRE_R02)",
                        shown(&a.secteur_activite)
                    ),
                );
            }
        }
        self.activities
            .sort_by(|a, b| a.structure_id.cmp(&b.structure_id));
        for w in self.activities.windows(2) {
            if w[0].structure_id == w[1].structure_id {
                bad(
                    "activities",
                    format!("structure '{}' appears twice", shown(&w[0].structure_id)),
                );
            }
        }
        if problems.is_empty()
            && let Err(e) = self.person_identity().subject()
        {
            problems.push(FieldProblem {
                field: "subject".into(),
                reason: e.to_string(),
            });
        }
        problems
    }

    /// Like [`ProfessionalData::normalise`], as one error listing every problem.
    pub fn validated(mut self) -> Result<ProfessionalData> {
        let problems = self.normalise();
        if problems.is_empty() {
            return Ok(self);
        }
        Err(EnrolError::Invalid(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }

    /// The identity the CA puts into certificates.
    pub fn person_identity(&self) -> cps_pki::PersonIdentity {
        cps_pki::PersonIdentity {
            idnat_ps: self.idnat_ps.clone(),
            surname: self.surname.clone(),
            given_name: self.given_names.clone(),
            profession_code: self.profession_code.clone(),
        }
    }
}

fn text_problem(v: &str, max: usize) -> Option<String> {
    if v.is_empty() {
        return Some("empty".into());
    }
    if v.chars().count() > max {
        return Some(format!("longer than {max} characters"));
    }
    if v.chars().any(char::is_control) {
        return Some(format!("'{}' contains a control character", shown(v)));
    }
    None
}

/// A value as shown in an error: control characters escaped, cut at 80 characters.
pub(crate) fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(80).flat_map(char::escape_debug).collect();
    if v.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// A professional as the registry holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Professional {
    /// Identity, profession and activities.
    pub data: ProfessionalData,
    /// Status.
    pub status: ProfessionalStatus,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// Incremented by every change; an edit names the revision it was made on.
    pub revision: u64,
}

impl Professional {
    /// The IdNat_PS.
    pub fn idnat_ps(&self) -> &str {
        &self.data.idnat_ps
    }

    /// The activity at `structure_id`.
    pub fn activity(&self, structure_id: &str) -> Option<&Activity> {
        self.data
            .activities
            .iter()
            .find(|a| a.structure_id == structure_id)
    }

    /// The TRE_G15 label of the profession.
    pub fn profession_label(&self) -> &'static str {
        codes::profession_label(&self.data.profession_code).unwrap_or("?")
    }
}

/// The two certificates of a CPS card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSlot {
    /// PIV slot 9A, profile `cps-auth`.
    Authentication,
    /// PIV slot 9C, profile `cps-sign`.
    Signature,
}

impl CertSlot {
    /// Both slots.
    pub const BOTH: [CertSlot; 2] = [CertSlot::Authentication, CertSlot::Signature];

    /// The PIV slot.
    pub fn piv_slot(self) -> cps_card::Slot {
        match self {
            CertSlot::Authentication => cps_card::Slot::Authentication,
            CertSlot::Signature => cps_card::Slot::Signature,
        }
    }
}

/// A certificate by issuer and serial (upper-case hex), as the CA names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CertRef {
    /// Issuing CA id, e.g. `personnes`.
    pub issuer: String,
    /// Serial number, upper-case hex of the DER INTEGER content.
    pub serial: String,
}

impl std::fmt::Display for CertRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.issuer, self.serial)
    }
}

/// A certificate written to a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCertificate {
    /// Which slot.
    pub slot: CertSlot,
    /// Issuer and serial.
    #[serde(flatten)]
    pub cert: CertRef,
    /// Certificate profile.
    pub profile: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the public key (hex).
    pub spki_sha256: String,
}

/// The card management key (PIV 9B) a card has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManagementKeyState {
    /// The well-known default key (the card could not change it).
    Default,
    /// A per-card key derived in the HSM from `master_key` and the card serial.
    PerCard {
        /// Label of the HSM master key.
        master_key: String,
        /// `aes128`, `aes192`, `aes256` or `3des`.
        algorithm: String,
    },
}

/// Why a card was opposed (declared lost, stolen or destroyed). Terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OppositionReason {
    /// Lost: certificates revoked with keyCompromise (the keys left the holder's control).
    Lost,
    /// Stolen: certificates revoked with keyCompromise.
    Stolen,
    /// Destroyed: certificates revoked with cessationOfOperation (the keys are gone).
    Destroyed,
}

impl OppositionReason {
    /// `lost`, `stolen`, `destroyed`.
    pub fn name(self) -> &'static str {
        match self {
            OppositionReason::Lost => "lost",
            OppositionReason::Stolen => "stolen",
            OppositionReason::Destroyed => "destroyed",
        }
    }

    /// Parses [`OppositionReason::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "lost" => OppositionReason::Lost,
            "stolen" => OppositionReason::Stolen,
            "destroyed" => OppositionReason::Destroyed,
            _ => return None,
        })
    }

    /// The RFC 5280 reason the card's certificates are revoked with.
    pub fn revocation_reason(self) -> cps_pki::crl::RevocationReason {
        match self {
            OppositionReason::Lost | OppositionReason::Stolen => {
                cps_pki::crl::RevocationReason::KeyCompromise
            }
            OppositionReason::Destroyed => cps_pki::crl::RevocationReason::CessationOfOperation,
        }
    }
}

/// Why a card was taken out of service without opposition. Terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RetirementReason {
    /// The professional left: certificates revoked with cessationOfOperation.
    ProfessionalLeft,
    /// Replaced by another card: certificates revoked with superseded.
    Replaced {
        /// Serial of the new card.
        by: String,
    },
}

/// Status of a registered card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CardStatus {
    /// In use; its certificates are valid.
    Active,
    /// Suspended: its certificates are on hold (certificateHold).
    Suspended {
        /// True when the suspension follows the professional's own suspension (it is lifted
        /// with it); false when an officer suspended the card.
        by_professional: bool,
        /// When, Unix seconds.
        at: i64,
    },
    /// Opposed (lost, stolen, destroyed): revoked for good, never comes back.
    Opposed {
        /// Why.
        reason: OppositionReason,
        /// When, Unix seconds.
        at: i64,
    },
    /// Retired: revoked for good.
    Retired {
        /// Why.
        reason: RetirementReason,
        /// When, Unix seconds.
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

    /// Opposed or retired: the card never comes back.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CardStatus::Opposed { .. } | CardStatus::Retired { .. }
        )
    }
}

impl std::fmt::Display for CardStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardStatus::Opposed { reason, .. } => write!(f, "opposed ({})", reason.name()),
            CardStatus::Retired {
                reason: RetirementReason::Replaced { by },
                ..
            } => write!(f, "retired (replaced by card {by})"),
            CardStatus::Retired {
                reason: RetirementReason::ProfessionalLeft,
                ..
            } => f.write_str("retired (the professional left)"),
            CardStatus::Suspended {
                by_professional: true,
                ..
            } => f.write_str("suspended (with the professional)"),
            other => f.write_str(other.name()),
        }
    }
}

/// A registered card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Card serial: the CHUID GUID, upper-case hex.
    pub serial: String,
    /// Token id: `<issuer number>/<10-digit card number>`.
    pub token_id: String,
    /// Holder.
    pub idnat_ps: String,
    /// The activity the card belongs to.
    pub structure_id: String,
    /// Status.
    pub status: CardStatus,
    /// Card key algorithm (`p256`, `rsa2048`).
    pub key_algorithm: String,
    /// The current certificates (authentication and signature).
    pub certificates: Vec<CardCertificate>,
    /// Certificates the card held before (renewals), revoked as superseded.
    pub previous_certificates: Vec<CardCertificate>,
    /// The card management key.
    pub management_key: ManagementKeyState,
    /// The enrolment (or last renewal) that wrote the current certificates.
    pub enrolment: String,
    /// When the card was first enrolled, Unix seconds.
    pub enrolled_at: i64,
    /// Who enrolled it.
    pub enrolled_by: String,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// What an enrolment does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnrolmentKind {
    /// A blank card for an activity without a card.
    New,
    /// A blank card that replaces a registered card of the same activity (retired at the end,
    /// its certificates revoked as superseded).
    Replacement {
        /// Serial of the card replaced.
        old_card: String,
    },
    /// New keys and certificates on a registered card (the old certificates are revoked as
    /// superseded at the end). The holder's PIN signs the requests; PIN and PUK stay.
    Renewal,
}

/// The steps of an enrolment, in order. Each completed step is persisted before the next
/// starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Card identified (serial, blank or the expected card) and the enrolment recorded.
    DetectCard,
    /// Card management key authenticated.
    Authenticate,
    /// Authentication (9A) and signature (9C) key pairs generated on the card.
    GenerateKeys,
    /// Both certificate requests signed by the card (proof of possession).
    ProvePossession,
    /// cps-auth certificate issued.
    IssueAuthentication,
    /// cps-sign certificate issued.
    IssueSignature,
    /// Certificates and CPS identity object written to the card.
    WriteCard,
    /// Initial PIN and PUK set.
    SetPinPuk,
    /// Default management key replaced by the per-card key.
    ReplaceManagementKey,
    /// Card registered; enrolment complete.
    Register,
}

impl Step {
    /// Every step in order.
    pub const ALL: [Step; 10] = [
        Step::DetectCard,
        Step::Authenticate,
        Step::GenerateKeys,
        Step::ProvePossession,
        Step::IssueAuthentication,
        Step::IssueSignature,
        Step::WriteCard,
        Step::SetPinPuk,
        Step::ReplaceManagementKey,
        Step::Register,
    ];

    /// Snake-case name (`detect_card`...).
    pub fn name(self) -> &'static str {
        match self {
            Step::DetectCard => "detect_card",
            Step::Authenticate => "authenticate",
            Step::GenerateKeys => "generate_keys",
            Step::ProvePossession => "prove_possession",
            Step::IssueAuthentication => "issue_authentication",
            Step::IssueSignature => "issue_signature",
            Step::WriteCard => "write_card",
            Step::SetPinPuk => "set_pin_puk",
            Step::ReplaceManagementKey => "replace_management_key",
            Step::Register => "register",
        }
    }

    /// What an officer reads on the progress page.
    pub fn label(self) -> &'static str {
        match self {
            Step::DetectCard => "Detect the card",
            Step::Authenticate => "Authenticate with the card management key",
            Step::GenerateKeys => "Generate the key pairs on the card",
            Step::ProvePossession => "Card signs the certificate requests",
            Step::IssueAuthentication => "Issue the CPS authentication certificate",
            Step::IssueSignature => "Issue the CPS signature certificate",
            Step::WriteCard => "Write certificates and identity to the card",
            Step::SetPinPuk => "Set the initial PIN and PUK",
            Step::ReplaceManagementKey => "Replace the card management key",
            Step::Register => "Register the card",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an enrolment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EnrolmentStatus {
    /// Being driven by a process (or that process died: see
    /// [`crate::CardService::recover_interrupted`]).
    Running,
    /// Stopped by an error; its certificates were revoked. Resume with the card, or abort.
    Interrupted {
        /// The step that failed.
        step: Step,
        /// The error, as shown to the officer.
        error: String,
        /// When, Unix seconds.
        at: i64,
    },
    /// Done: the card is registered.
    Completed {
        /// When, Unix seconds.
        at: i64,
    },
    /// Given up: its certificates are revoked.
    Aborted {
        /// Why.
        reason: String,
        /// When, Unix seconds.
        at: i64,
    },
}

impl EnrolmentStatus {
    /// Completed or aborted.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EnrolmentStatus::Completed { .. } | EnrolmentStatus::Aborted { .. }
        )
    }
}

/// An enrolment (or a renewal) and everything needed to resume or roll it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// Identifier (16 hex digits).
    pub id: String,
    /// The node that drives it (the one whose reader holds the card): only that node resumes,
    /// aborts or recovers it. `None` in enrolments written before nodes existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// New card, replacement or renewal.
    pub kind: EnrolmentKind,
    /// Card serial (CHUID GUID, upper-case hex).
    pub card_serial: String,
    /// Token id given to the card.
    pub token_id: String,
    /// Holder.
    pub idnat_ps: String,
    /// Activity.
    pub structure_id: String,
    /// Card key algorithm (`p256`, `rsa2048`).
    pub key_algorithm: String,
    /// Who started it.
    pub started_by: String,
    /// When, Unix seconds.
    pub started_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// The last step completed.
    pub done: Option<Step>,
    /// Where it stands.
    pub status: EnrolmentStatus,
    /// DER SubjectPublicKeyInfo of the card's authentication key (hex).
    pub auth_spki: Option<String>,
    /// DER SubjectPublicKeyInfo of the card's signature key (hex).
    pub sign_spki: Option<String>,
    /// PKCS#10 request signed by the authentication key (hex DER).
    pub auth_csr: Option<String>,
    /// PKCS#10 request signed by the signature key (hex DER).
    pub sign_csr: Option<String>,
    /// The certificates issued and not rolled back.
    pub certificates: Vec<CardCertificate>,
    /// Certificates of this enrolment that were revoked by a rollback.
    pub rolled_back: Vec<CertRef>,
    /// The management key the card has now.
    pub management_key: ManagementKeyState,
    /// Random nonce from which the HSM derives the initial PIN and PUK (hex); erased when the
    /// enrolment ends. Never the PIN itself.
    pub secret_nonce: Option<String>,
    /// Whether the card's PIN and PUK are no longer the defaults (set by this enrolment, or
    /// the holder's own for a renewal).
    pub pin_set: bool,
}

impl Enrolment {
    /// Whether `step` is completed.
    pub fn has_done(&self, step: Step) -> bool {
        self.done.is_some_and(|d| d >= step)
    }

    /// The certificate issued for `slot`, if any.
    pub fn certificate(&self, slot: CertSlot) -> Option<&CardCertificate> {
        self.certificates.iter().find(|c| c.slot == slot)
    }
}

/// Paging position for listings: the key after which the next page starts (opaque).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(pub String);

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}
