//! `cps-ca`: the certificate authority. **Every change of certificate state (an issuance, a
//! revocation, a hold and its release) is committed to the store together with its audit record
//! before it is acknowledged, and nothing is signed while the signing gate says no.**
//!
//! * [`CaService`]: issuance ([`CaService::issue`]: profile rules, CSR proof of possession, key
//!   policy, compromised-key blocklist, one holder per key), revocation ([`CaService::revoke`]:
//!   hold, release, final; keyCompromise blocklists the key; serialised per CA) and CRLs
//!   ([`CaService::crl`]: re-signed when a revocation made the last one stale or at half-life,
//!   numbered from a durable counter, handed to a [`CrlPublisher`]).
//! * [`StoreStatus`]: the store as the OCSP responder's [`cps_ocsp::StatusSource`] (a serial the
//!   store does not hold was never issued; no store answer, no "good"), and [`Invalidator`],
//!   which drops a responder's cached answer when a status changes.
//! * [`CaAuthority`]: one CA, built from its certificate and an `Arc<dyn cps_hsm::Signer>`
//!   (wrapped by whatever gate the caller wants); [`SigningGate`]: whether signing is allowed now.
//! * [`hierarchy`]: a root and issuing CAs certified from given signers without a key ceremony
//!   (software keys with the `software` feature), for tests and benchmarks.
//!
//! No home directory, no configuration file, no HSM session: the appliance reads those and
//! hands this crate signers, a store and profiles. Time (`now`, Unix seconds) is a parameter.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod cluster_tests;
pub mod crl;
mod error;
pub mod hierarchy;
mod service;
mod status;
#[cfg(test)]
mod tests;
pub mod wire;

pub use cps_pki::crl::RevocationReason;
pub use error::CaError;

/// Counter of CRLs signed, by CA (through the `metrics` facade).
pub const CRL_GENERATIONS: &str = "cps_crl_generations_total";
pub use service::{CaAuthority, CaConfig, CaService, OperatorIssued};
pub use status::{Invalidator, StoreStatus};

use cps_store::CertStatus;

/// Whether the CA may sign now (the appliance's answer comes from its clock: nothing is signed
/// while the clock is not trusted).
pub trait SigningGate: Send + Sync {
    /// `Ok` when signing is allowed; the operator's message otherwise.
    fn check(&self) -> Result<(), String>;
}

/// A gate that always allows signing (tests, benchmarks, tools without a clock policy).
pub struct OpenGate;

impl SigningGate for OpenGate {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Something to tell when a certificate's status changed (the OCSP response cache).
pub trait StatusListener: Send + Sync {
    /// `serial` of CA `ca` was issued, revoked, put on hold or released.
    fn status_changed(&self, ca: &str, serial: &[u8]);
}

/// Where a freshly signed CRL goes besides the answer (the appliance: `<home>/crl/<ca>.crl`).
pub trait CrlPublisher: Send + Sync {
    /// Publish `der`, the current CRL of CA `ca`. An error refuses the new CRL (it is not
    /// served) and the next call signs again.
    fn publish(&self, ca: &str, der: &[u8]) -> std::io::Result<()>;
}

/// Writes each CRL to `<dir>/<ca>.crl` (through a temporary file and a rename, so a reader
/// never sees half a CRL).
pub struct CrlDirectory(pub std::path::PathBuf);

impl CrlPublisher for CrlDirectory {
    fn publish(&self, ca: &str, der: &[u8]) -> std::io::Result<()> {
        // `<ca>` or `<ca>/<shard>` (a shard of a partitioned CRL).
        let path = self.0.join(format!("{ca}.crl"));
        let tmp = path.with_extension("crl.tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, der)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Who a certificate is for, from registry data (the profile says which kind it needs).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectRequest {
    /// A health professional (card certificates).
    Person(cps_pki::PersonIdentity),
    /// An organisation (servers, nodes, seals).
    Organisation(cps_pki::OrganisationIdentity),
}

/// An issuance request: a profile, a PKCS#10 CSR (its signature is the proof of possession),
/// who it is for, and optional subject alternative names.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Certificate profile (e.g. `cps-auth`, `org-tls-client`).
    pub profile: String,
    /// PKCS#10 request, DER or PEM, signed by the key to certify.
    pub csr: Vec<u8>,
    /// Who it is for: the subject is built from this, not from the request.
    pub subject: SubjectRequest,
    /// Subject alternative names.
    pub sans: Vec<cps_pki::SubjectAltName>,
    /// Registry identity of the holder (IdNat_PS, structure id, node name...); a public key
    /// certified for one holder is refused for another.
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

impl CertState {
    /// The state of a stored status.
    pub fn of(status: &CertStatus) -> CertState {
        match status {
            CertStatus::Valid => CertState::Valid,
            CertStatus::Revoked { reason: 6, .. } => CertState::OnHold,
            CertStatus::Revoked { reason, .. } => CertState::Revoked(
                RevocationReason::from_code(*reason).unwrap_or(RevocationReason::Unspecified),
            ),
        }
    }
}

/// Holder namespaces of the certificates the appliance makes for itself and through its own
/// flows: `appliance:` (its seal), `node:` (ATNA nodes, through node enrolment), `operator:`
/// (operators), `ca:` (the hierarchy). Raw issuance may not use them (any case), so that a
/// certificate an operator requested can never pass for one of those in the store, the audit
/// trail or the console, nor block the creation of an operator of that name.
pub const RESERVED_HOLDER_PREFIXES: [&str; 4] = ["appliance:", "node:", "operator:", "ca:"];

/// Refuses a holder of raw issuance that is in a reserved namespace
/// ([`RESERVED_HOLDER_PREFIXES`]).
pub fn check_raw_issuance_holder(holder: &str) -> Result<(), CaError> {
    let h = holder.trim_start().to_ascii_lowercase();
    match RESERVED_HOLDER_PREFIXES.iter().find(|p| h.starts_with(*p)) {
        Some(p) => Err(CaError::Invalid(format!(
            "holder '{}' is in the reserved namespace '{p}' (the appliance's own certificates, nodes, operators and CAs are made by their own flows)",
            holder.escape_debug()
        ))),
        None => Ok(()),
    }
}
