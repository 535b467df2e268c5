//! What enrolment needs from a certificate authority, as a trait with plain types: the
//! appliance implements it over its CA service; [`crate::LocalCa`] implements it over
//! `cps-pki` and a [`cps_hsm::Signer`] for tests and benchmarks.

pub use cps_pki::crl::RevocationReason;

use crate::model::CertRef;

/// Why the CA did not do what was asked. The message is for the officer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The request is refused (bad CSR, blocklisted key, profile rules...). Retrying the same
    /// request will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The request conflicts with the CA's state (already revoked, key certified for someone
    /// else...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// No such certificate.
    #[error("no certificate {0}")]
    NotFound(String),
    /// The CA could not be reached or failed (HSM, store, clock). Retrying later may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// An issuance request for a card key.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Certificate profile: `cps-auth` or `cps-sign`.
    pub profile: String,
    /// PKCS#10 request signed by the card key (DER): the proof of possession.
    pub csr_der: Vec<u8>,
    /// Who the certificate is for, from the registry (the subject is built from it, not from
    /// the request).
    pub person: cps_pki::PersonIdentity,
    /// Registry identity of the holder (the IdNat_PS): a key certified for one holder is
    /// refused for another.
    pub holder: String,
}

/// Revocation state of a certificate as the CA knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Valid (not revoked).
    Valid,
    /// On hold (certificateHold): may be released.
    OnHold,
    /// Revoked for good.
    Revoked(RevocationReason),
}

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

/// A certificate authority for card certificates.
///
/// Implementations must make [`CertificateAuthority::issue`] and
/// [`CertificateAuthority::revoke`] durable before they return, and must refuse a revocation
/// of a certificate already revoked for good with [`CaError::Conflict`] (enrolment checks the
/// state first, so that retries are idempotent).
pub trait CertificateAuthority: Send + Sync {
    /// Issue a certificate. The CA verifies the request's signature (proof of possession),
    /// its key policy and blocklist, and builds the subject from `person`.
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
