//! Who may assert what: the binding of an assertion's claims to the signer that vouches for them.
//!
//! A valid signature proves who signed, not that the signer may say what it says. The validator
//! asks a [`SignerPolicy`] once the signature, the signer's path and revocation and the form of
//! every claim are verified, and before the assertion's ID is consumed; a refusal has its own
//! [`RefusalCode`](crate::RefusalCode).
//!
//! [`SealTrustPolicy`] is the policy for VIHF seals:
//!
//! * **own seals** (the keys of the issuing appliance's seals, identified by their public key,
//!   which stays in its HSM): what they sign is trusted as issued; the issuer checked the card and
//!   the registry before signing, and nothing is read here;
//! * **organisation seals** (any other trusted signer) vouch only for their own structure:
//!   `Identifiant_Structure` must be the struct_IdNat in the seal certificate's `OU`; they did not
//!   witness a card login, so they may assert `INDIRECTE` or `INDIRECTE_RENFORCEE`, never
//!   `DIRECTE`; and, when the registry is held ([`OrgSealRegistry::Required`]), the professional
//!   named by `NameID` must be in it, active, with an activity in that structure, and the
//!   profession (TRE_G15 role) and sector (TRE_R02 `Secteur_Activite`) asserted must be the
//!   registry's.

use std::sync::Arc;
use std::time::SystemTime;

use cps_pki::IdNatPs;

use crate::model::{AuthenticationMode, VihfClaims, shown};
use crate::trust::SignerCertificate;
use crate::validate::{Refusal, RefusalCode};

/// TRE_G15 (profession) code system: the VIHF role that names the profession.
pub const PROFESSION_CODE_SYSTEM: &str = "1.2.250.1.71.1.2.7";
/// TRE_R02 (secteur d'activité) code system of `Secteur_Activite`.
pub const SECTEUR_CODE_SYSTEM: &str = "1.2.250.1.71.4.2.4";

/// Why a signer may not make the claims it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// `Identifiant_Structure` is not the structure of the organisation seal (or the seal names
    /// no structure).
    StructureMismatch(String),
    /// The signer may not assert this `Authentification_Mode`.
    AuthenticationModeNotAllowed(String),
    /// The professional is not in the registry.
    UnknownProfessional(String),
    /// The professional is in the registry but not active.
    ProfessionalNotActive(String),
    /// The professional has no activity in the asserted structure.
    ActivityNotInStructure(String),
    /// A claim about the professional contradicts the registry (profession, sector).
    ClaimContradictsRegistry(String),
    /// The registry could not answer (fail closed).
    RegistryUnavailable(String),
}

impl PolicyViolation {
    /// The refusal code.
    pub fn code(&self) -> RefusalCode {
        match self {
            PolicyViolation::StructureMismatch(_) => RefusalCode::StructureMismatch,
            PolicyViolation::AuthenticationModeNotAllowed(_) => {
                RefusalCode::AuthenticationModeNotAllowed
            }
            PolicyViolation::UnknownProfessional(_) => RefusalCode::UnknownProfessional,
            PolicyViolation::ProfessionalNotActive(_) => RefusalCode::ProfessionalNotActive,
            PolicyViolation::ActivityNotInStructure(_) => RefusalCode::ActivityNotInStructure,
            PolicyViolation::ClaimContradictsRegistry(_) => RefusalCode::ClaimContradictsRegistry,
            PolicyViolation::RegistryUnavailable(_) => RefusalCode::RegistryUnavailable,
        }
    }

    /// What exactly was refused.
    pub fn message(&self) -> &str {
        match self {
            PolicyViolation::StructureMismatch(m)
            | PolicyViolation::AuthenticationModeNotAllowed(m)
            | PolicyViolation::UnknownProfessional(m)
            | PolicyViolation::ProfessionalNotActive(m)
            | PolicyViolation::ActivityNotInStructure(m)
            | PolicyViolation::ClaimContradictsRegistry(m)
            | PolicyViolation::RegistryUnavailable(m) => m,
        }
    }
}

impl From<PolicyViolation> for Refusal {
    fn from(v: PolicyViolation) -> Refusal {
        Refusal {
            code: v.code(),
            message: v.message().to_owned(),
        }
    }
}

/// Whether a verified signer may make the claims it signed. Every [`Validator`](crate::Validator)
/// has one; it is called after every other check and before the replay cache.
pub trait SignerPolicy: Send + Sync {
    /// `Ok` when `signer` may assert `claims` at `now`.
    fn check(
        &self,
        signer: &SignerCertificate,
        claims: &VihfClaims,
        now: SystemTime,
    ) -> Result<(), PolicyViolation>;
}

/// An activity of a professional, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredActivity {
    /// The structure (struct_IdNat), as `Identifiant_Structure` writes it.
    pub structure_id: String,
    /// TRE_R02 secteur d'activité code, e.g. `SA07`.
    pub secteur_code: String,
}

/// A professional, as the registry holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredProfessional {
    /// Whether they may act now.
    pub active: bool,
    /// Their status in words (for the refusal message), e.g. `suspended`.
    pub status: String,
    /// TRE_G15 profession code, e.g. `10`.
    pub profession_code: String,
    /// Their activities.
    pub activities: Vec<RegisteredActivity>,
}

/// The registry of professionals, as [`SealTrustPolicy`] reads it.
pub trait ProfessionalDirectory: Send + Sync {
    /// The professional with this IdNat_PS, `None` when unknown; `Err` when the registry cannot
    /// answer (the assertion is then refused).
    fn professional(&self, idnat_ps: &IdNatPs) -> Result<Option<RegisteredProfessional>, String>;
}

/// How the professionals named by organisation seals are checked.
#[derive(Clone)]
pub enum OrgSealRegistry {
    /// They must be in this registry, active, with an activity in the seal's structure (the
    /// default of the appliance).
    Required(Arc<dyn ProfessionalDirectory>),
    /// The registry of the network is not held here: only the structure binding and the
    /// authentication mode apply.
    NotHeld,
}

impl std::fmt::Debug for OrgSealRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OrgSealRegistry::Required(_) => "Required",
            OrgSealRegistry::NotHeld => "NotHeld",
        })
    }
}

/// The trust policy for VIHF seals (see the module documentation).
#[derive(Debug, Clone)]
pub struct SealTrustPolicy {
    /// `SubjectPublicKeyInfo` (DER) of each own seal key.
    own_seal_keys: Vec<Vec<u8>>,
    registry: OrgSealRegistry,
}

impl SealTrustPolicy {
    /// `own_seal_keys`: the `SubjectPublicKeyInfo` (DER) of the issuer's own seal keys, whose
    /// assertions are trusted as issued. Identified by key rather than by name or certificate: a
    /// name can be copied into another certificate, and any certificate of the same key can only
    /// have been requested with that key (proof of possession), which never leaves the HSM.
    pub fn new(own_seal_keys: Vec<Vec<u8>>, registry: OrgSealRegistry) -> SealTrustPolicy {
        SealTrustPolicy {
            own_seal_keys,
            registry,
        }
    }

    /// Whether `signer` is one of the own seals.
    pub fn is_own_seal(&self, signer: &SignerCertificate) -> bool {
        self.own_seal_keys.contains(&signer.spki)
    }

    fn check_registry(
        directory: &dyn ProfessionalDirectory,
        structure: &str,
        claims: &VihfClaims,
    ) -> Result<(), PolicyViolation> {
        let who = claims.name_id.as_str();
        let pro = directory
            .professional(&claims.name_id)
            .map_err(|e| {
                PolicyViolation::RegistryUnavailable(format!(
                    "the registry cannot say whether {who} may act for structure {structure}: {e}"
                ))
            })?
            .ok_or_else(|| {
                PolicyViolation::UnknownProfessional(format!(
                    "NameID {who} is not in the registry of professionals"
                ))
            })?;
        if !pro.active {
            return Err(PolicyViolation::ProfessionalNotActive(format!(
                "{who} is {} in the registry",
                shown(&pro.status)
            )));
        }
        let activity = pro
            .activities
            .iter()
            .find(|a| a.structure_id == structure)
            .ok_or_else(|| {
                PolicyViolation::ActivityNotInStructure(format!(
                    "{who} has no activity in structure {structure}"
                ))
            })?;
        if let Some(r) = claims
            .roles
            .iter()
            .find(|r| r.code_system == PROFESSION_CODE_SYSTEM && r.code != pro.profession_code)
        {
            return Err(PolicyViolation::ClaimContradictsRegistry(format!(
                "subject:role asserts profession {} but {who} is registered with profession {}",
                shown(&r.code),
                shown(&pro.profession_code)
            )));
        }
        if let Some((code, SECTEUR_CODE_SYSTEM)) = claims.secteur_activite.split_once('^')
            && code != activity.secteur_code
        {
            return Err(PolicyViolation::ClaimContradictsRegistry(format!(
                "Secteur_Activite asserts {} but the activity of {who} in structure {structure} is {}",
                shown(code),
                shown(&activity.secteur_code)
            )));
        }
        Ok(())
    }
}

impl SignerPolicy for SealTrustPolicy {
    fn check(
        &self,
        signer: &SignerCertificate,
        claims: &VihfClaims,
        _now: SystemTime,
    ) -> Result<(), PolicyViolation> {
        if self.is_own_seal(signer) {
            return Ok(());
        }
        let Some(structure) = signer.structure_id() else {
            return Err(PolicyViolation::StructureMismatch(format!(
                "signer {} names no structure (one OU holding a struct_IdNat): it may vouch for none",
                signer.subject
            )));
        };
        if claims.structure_id != structure {
            return Err(PolicyViolation::StructureMismatch(format!(
                "Identifiant_Structure {} is not the structure of the organisation seal {} ({structure})",
                shown(&claims.structure_id),
                signer.subject
            )));
        }
        if claims.authentication_mode == AuthenticationMode::Direct {
            return Err(PolicyViolation::AuthenticationModeNotAllowed(format!(
                "an organisation seal ({structure}) did not witness a card login: it may assert INDIRECTE or INDIRECTE_RENFORCEE, not {}",
                claims.authentication_mode.as_str()
            )));
        }
        match &self.registry {
            OrgSealRegistry::NotHeld => Ok(()),
            OrgSealRegistry::Required(directory) => {
                Self::check_registry(directory.as_ref(), structure, claims)
            }
        }
    }
}
