//! What enrolment needs from a certificate authority, as a trait over `cps-ca`'s types:
//! [`cps_ca::CaService`] implements it (the appliance's CA, and a CA over software keys in tests
//! and benchmarks); tests wrap it to inject failures.

use cps_ca::CaService;
pub use cps_ca::{CaError, CertState, IssueRequest, RevocationReason, SubjectRequest};
use cps_store::CertificateRecord;

use crate::model::CertRef;

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Issuer and serial.
    pub cert: CertRef,
    /// Certificate profile.
    pub profile: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
    /// Revocation state.
    pub state: CertState,
}

impl From<&CertificateRecord> for IssuedCertificate {
    fn from(rec: &CertificateRecord) -> Self {
        IssuedCertificate {
            cert: CertRef {
                issuer: rec.issuer.clone(),
                serial: hex::encode_upper(&rec.serial),
            },
            profile: rec.profile.clone(),
            der: rec.der.clone(),
            not_after: rec.not_after,
            spki_sha256: rec.spki_sha256,
            state: CertState::of(&rec.status),
        }
    }
}

/// A certificate authority for card certificates.
///
/// Implementations must make [`CertificateAuthority::issue`] and
/// [`CertificateAuthority::revoke`] durable before they return, and must refuse a revocation
/// of a certificate already revoked for good with [`CaError::Conflict`] (enrolment checks the
/// state first, so that retries are idempotent).
pub trait CertificateAuthority: Send + Sync {
    /// Issue a certificate. The CA verifies the request's signature (proof of possession),
    /// its key policy and blocklist, and builds the subject from the request's subject.
    fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<IssuedCertificate, CaError>;

    /// Change a certificate's revocation state: any final reason revokes (also from hold);
    /// `CertificateHold` puts on hold; `RemoveFromCrl` releases a hold. `KeyCompromise`
    /// blocklists the key.
    fn revoke(
        &self,
        cert: &CertRef,
        reason: RevocationReason,
        actor: &str,
        now: i64,
    ) -> Result<(), CaError>;

    /// The current state of a certificate, or `None` if the CA never issued it.
    fn state(&self, cert: &CertRef) -> Result<Option<CertState>, CaError>;

    /// Every certificate the CA issued for the public key whose DER SubjectPublicKeyInfo has
    /// this SHA-256 (to find what an interrupted enrolment may have left behind, and to refuse
    /// a key that is already certified).
    fn certificates_for_key(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<IssuedCertificate>, CaError>;
}

fn serial_of(c: &CertRef) -> Result<Vec<u8>, CaError> {
    hex::decode(&c.serial)
        .map_err(|_| CaError::Invalid(format!("serial '{}' is not hex", c.serial)))
}

impl CertificateAuthority for CaService {
    fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        CaService::issue(self, req, actor, now).map(|r| IssuedCertificate::from(&r))
    }

    fn revoke(
        &self,
        cert: &CertRef,
        reason: RevocationReason,
        actor: &str,
        now: i64,
    ) -> Result<(), CaError> {
        CaService::revoke(
            self,
            &cert.issuer,
            &serial_of(cert)?,
            reason,
            None,
            actor,
            now,
        )
        .map(|_| ())
    }

    fn state(&self, cert: &CertRef) -> Result<Option<CertState>, CaError> {
        CaService::cert_state(self, &cert.issuer, &serial_of(cert)?)
    }

    fn certificates_for_key(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<IssuedCertificate>, CaError> {
        Ok(self
            .store()
            .certificates_by_spki(spki_sha256)?
            .iter()
            .map(IssuedCertificate::from)
            .collect())
    }
}
