//! The one error type of the crate.

use cps_card::CardError;
use cps_store::StoreError;

use crate::ca::CaError;
use crate::model::{CardStatus, ProfessionalStatus, Step};

/// Everything that can go wrong in the registry, an enrolment or a lifecycle operation. Every
/// message says what to do next where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolError {
    /// Bad input from the caller (a form field, a search query...).
    #[error("{0}")]
    Invalid(String),
    /// No professional with this IdNat_PS.
    #[error("no professional with IdNat_PS '{0}' in the registry")]
    UnknownProfessional(String),
    /// A professional with this IdNat_PS already exists.
    #[error("a professional with IdNat_PS '{0}' already exists")]
    ProfessionalExists(String),
    /// The professional has no activity with this structure identifier.
    #[error("professional '{idnat_ps}' has no activity at structure '{structure_id}'")]
    UnknownActivity {
        /// The professional.
        idnat_ps: String,
        /// The structure asked for.
        structure_id: String,
    },
    /// The activity exists but its structure identifier cannot appear in a login assertion
    /// (VIHF `Identifiant_Structure` is a struct_IdNat): a card for it could never log in.
    #[error(
        "the activity of '{idnat_ps}' at structure '{structure_id}' cannot be used for card login: \
         '{structure_id}' is not a struct_IdNat ({reason}); register the activity under the \
         structure's struct_IdNat (e.g. 1 + FINESS, 3 + SIRET; see IMPORT_FORMAT.md)"
    )]
    ActivityNotForLogin {
        /// The professional.
        idnat_ps: String,
        /// The structure asked for.
        structure_id: String,
        /// Why it is not a struct_IdNat.
        reason: String,
    },
    /// The professional's status forbids the operation.
    #[error("professional '{idnat_ps}' is {status}: {what} needs an active professional")]
    ProfessionalNotActive {
        /// The professional.
        idnat_ps: String,
        /// Their status.
        status: ProfessionalStatus,
        /// What was refused.
        what: &'static str,
    },
    /// The record changed since the caller read it (another officer, another process).
    #[error("{0} was changed by someone else meanwhile; reload it and try again")]
    Stale(String),
    /// No card with this serial in the registry.
    #[error("no card with serial '{0}' is registered")]
    UnknownCard(String),
    /// The card's status forbids the operation.
    #[error("card '{serial}' is {status}: cannot {what}")]
    CardStatus {
        /// The card.
        serial: String,
        /// Its status.
        status: CardStatus,
        /// What was refused.
        what: &'static str,
    },
    /// The card in the reader is not blank (it holds certificates or a CPS identity, or is
    /// already registered).
    #[error("the card in the reader is not blank: {0}")]
    CardNotBlank(String),
    /// The card in the reader is not the one the operation is about.
    #[error("the card in the reader (serial {found}) is not card {expected}")]
    WrongCard {
        /// The card expected.
        expected: String,
        /// The card present.
        found: String,
    },
    /// The professional already has a card (or an enrolment in progress) for this activity.
    #[error("{0}")]
    ActivityHasCard(String),
    /// The card generated a key pair that is already certified: a defective or cloned card.
    #[error("the card generated a public key that is already certified ({0}): refuse this card")]
    DuplicateKey(String),
    /// The card (or the reader) failed.
    #[error("card: {0}")]
    Card(#[from] CardError),
    /// The certificate authority refused or failed.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The HSM failed (management key or PIN derivation).
    #[error("HSM: {0}")]
    Hsm(#[from] cps_hsm::HsmError),
    /// An enrolment stopped before its end. What was issued has been (or will be) revoked; the
    /// enrolment can be resumed with the same card, or aborted.
    #[error(
        "enrolment {enrolment} stopped at step '{step}': {cause}; {rollback} Resume it with the same card, or abort it"
    )]
    Interrupted {
        /// The enrolment.
        enrolment: String,
        /// The step that failed.
        step: Step,
        /// Why.
        cause: Box<EnrolError>,
        /// What happened to the certificates already issued.
        rollback: String,
    },
    /// No enrolment with this id.
    #[error("no enrolment '{0}'")]
    UnknownEnrolment(String),
    /// The enrolment cannot be resumed or aborted in its current state.
    #[error("enrolment {id}: {reason}")]
    EnrolmentState {
        /// The enrolment.
        id: String,
        /// Why not.
        reason: String,
    },
    /// A stored record does not decode.
    #[error("corrupt record {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoding error.
        detail: String,
    },
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
}

/// Result with [`EnrolError`].
pub type Result<T> = std::result::Result<T, EnrolError>;

impl EnrolError {
    /// Maps a store conflict to [`EnrolError::Stale`] for `what`.
    pub(crate) fn stale_on_conflict(e: StoreError, what: impl Into<String>) -> EnrolError {
        match e {
            StoreError::Conflict(_) => EnrolError::Stale(what.into()),
            other => EnrolError::Store(other),
        }
    }
}
