//! `cps-enrol`: the professional registry, card enrolment and the card lifecycle.
//!
//! * [`Registry`]: health professionals (IdNat_PS, names, TRE_G15 profession, savoir-faire,
//!   activities with their TRE_R02 sector, status), created and edited one by one or imported
//!   from CSV ([`Registry::import_csv`], format in `IMPORT_FORMAT.md`), searched by IdNat_PS
//!   or by name prefix (case- and accent-insensitive).
//! * [`CardService`]: enrolment of a blank PIV card as a CPS card, one persisted step at a time
//!   ([`Step`]) with progress events, resumable or rolled back when interrupted
//!   ([`CardService::resume`], [`CardService::abort`], [`CardService::recover_interrupted`]);
//!   renewal and replacement; lifecycle ([`CardService::suspend_card`],
//!   [`CardService::resume_card`], [`CardService::oppose_card`], [`CardService::unblock_pin`],
//!   [`CardService::set_professional_status`]).
//! * [`CertificateAuthority`]: what enrolment needs from a CA, as a trait implemented by
//!   `cps-ca`'s [`cps_ca::CaService`].
//! * [`CardSecrets`]: per-card management keys, initial PINs and PUKs derived in the HSM from
//!   one non-extractable master key.
//! * [`Jobs`]: enrolments in a PC/SC reader and imports run in the background, with progress;
//!   an enrolment's initial PIN and PUK go once, to the certificate that started it, after a
//!   durable audit record of their delivery.
//! * `wire`: the records as the API's wire types ([`cps_api`]), `From` conversions that keep
//!   the answers byte-identical.
//!
//! Time is a parameter (`now`, Unix seconds) of every operation that records or checks
//! anything; the card is any [`cps_card::Transport`] (PC/SC, or the simulator in memory).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod cardops;
pub mod codes;
mod error;
pub mod fold;
pub mod import;
pub mod jobs;
pub mod lifecycle;
pub mod model;
mod registry;
pub mod secrets;
mod service;
mod tables;
mod wire;

pub use ca::{
    CaError, CertState, CertificateAuthority, IssueRequest, IssuedCertificate, RevocationReason,
    SubjectRequest,
};
pub use error::{EnrolError, Result};
pub use import::{
    ImportOptions, ImportOutcome, ImportPhase, ImportProgress, ImportReport, LineIssue,
};
pub use jobs::{JobEvent, JobView, Jobs};
pub use lifecycle::{LifecycleOutcome, PendingRevocation, RevocationReport, StatusChange};
pub use model::{
    Activity, Card, CardCertificate, CardStatus, CertRef, CertSlot, Cursor, Enrolment,
    EnrolmentKind, EnrolmentStatus, ManagementKeyState, OppositionReason, Page, Professional,
    ProfessionalData, ProfessionalStatus, RetirementReason, Step,
};
pub use registry::{MAX_PAGE, Registry};
pub use secrets::{CardSecrets, InitialSecrets};
pub use service::{
    CardService, CardServiceConfig, EnrolRequest, EnrolmentOutcome, Progress, RecoveryReport,
    StepState,
};
