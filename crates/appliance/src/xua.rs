//! XUA/VIHF in the appliance: the organisation seal ("cachet") that signs assertions, the
//! issuer behind the clock gate, and the validator for the network's services over our live
//! revocation state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cps_hsm::{Hsm, KeyAlgorithm, Signer};
use cps_store::{CertStatus, Store};
use cps_xua::{
    AssertionId, AssertionIssuer, EKU_DOCUMENT_SIGNING, EkuPolicy, Flavour, InMemoryReplayCache,
    IssuedAssertion, IssuerConfig, Refusal, RevocationCheck, RevocationStatus, SignerCertificate,
    TrustStore, ValidatedAssertion, Validator, ValidatorConfig, VihfClaims,
};

use crate::ApplianceError;
use crate::ca::{CaError, CaService};
use crate::clock::{GatedSigner, SigningClock};
use crate::config::Config;

/// The profile of certificates that sign assertions.
pub const SEAL_PROFILE: &str = "org-cachet";

/// Where the seal certificate is kept (PEM: seal certificate, then its issuing CA).
pub const CACHET_FILE: &str = "xua/cachet.pem";

/// Revocation of assertion signers from the store: only certificates this appliance issued and
/// holds as valid sign assertions it accepts. Fails closed.
struct StoreRevocation {
    store: Arc<dyn Store>,
    /// (CA id, subject DER) of our issuing CAs.
    issuers: Vec<(String, Vec<u8>)>,
}

impl RevocationCheck for StoreRevocation {
    fn status(
        &self,
        cert: &SignerCertificate,
        _chain: &[Vec<u8>],
        _now: SystemTime,
    ) -> Result<RevocationStatus, String> {
        let ca = self
            .issuers
            .iter()
            .find(|(_, subject)| *subject == cert.issuer_der)
            .map(|(id, _)| id.as_str())
            .ok_or_else(|| format!("signer issuer '{}' is not one of our CAs", cert.issuer))?;
        match self.store.get_certificate(ca, &cert.serial) {
            Ok(Some(rec)) if rec.der == cert.der && rec.profile != SEAL_PROFILE => Err(format!(
                "a '{}' certificate does not sign assertions (only '{SEAL_PROFILE}')",
                rec.profile
            )),
            Ok(Some(rec)) if rec.der == cert.der => Ok(match rec.status {
                CertStatus::Valid => RevocationStatus::Good,
                CertStatus::Revoked { reason, .. } => RevocationStatus::Revoked {
                    reason: cps_pki::crl::RevocationReason::from_code(reason)
                        .map(|r| r.name().to_string())
                        .unwrap_or_else(|| format!("reason {reason}")),
                },
            }),
            Ok(_) => Err(format!(
                "signer certificate {} was not issued by this appliance",
                hex::encode_upper(&cert.serial)
            )),
            Err(e) => Err(format!("revocation state unavailable: {e}")),
        }
    }
}

/// Issuance and validation of assertions.
pub struct XuaService {
    issuer: AssertionIssuer,
    validator: Validator,
    rng: ring::rand::SystemRandom,
}

fn key_algorithm(name: &str) -> KeyAlgorithm {
    match name {
        "rsa2048" => KeyAlgorithm::Rsa2048,
        "rsa3072" => KeyAlgorithm::Rsa3072,
        _ => KeyAlgorithm::EcP256,
    }
}

/// The seal key and certificate chain: an `org-cachet` certificate from our organisations CA
/// for an HSM key, both made on first use (see [`crate::ca::ApplianceCredential`]).
pub fn ensure_cachet(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(cps_hsm::HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let x = &config.xua;
    crate::ca::ApplianceCredential {
        label: &x.key_label,
        algorithm: key_algorithm(&x.algorithm),
        profile: SEAL_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: x.state.clone(),
            name: x.organisation.clone(),
            structure_id: x.structure_id.clone(),
            common_name: format!("{} XUA", x.organisation),
        },
        holder: format!("appliance:{}", x.key_label),
        file: CACHET_FILE,
    }
    .ensure(home, hsm, ca)
}

impl XuaService {
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        ca: &CaService,
        clock: Arc<SigningClock>,
    ) -> Result<XuaService, ApplianceError> {
        let x = &config.xua;
        let (key, chain) = ensure_cachet(home, config, hsm, ca)?;
        let signer: Arc<dyn Signer> = Arc::new(GatedSigner::new(Arc::new(key), clock));
        let flavour = match (x.flavour.as_str(), &x.audience) {
            ("ihe", Some(a)) => Flavour::IheGeneric {
                audience: a.clone(),
            },
            _ => Flavour::Vihf,
        };
        let issuer = AssertionIssuer::new(
            signer,
            &chain,
            IssuerConfig {
                validity: Duration::from_secs(u64::from(x.validity_minutes) * 60),
                flavour,
                ..IssuerConfig::default()
            },
        )
        .map_err(|e| ApplianceError::Refused(format!("XUA issuer: {e}")))?;

        let root = ca
            .authority("root")
            .map(|a| a.cert_der.clone())
            .ok_or_else(|| ApplianceError::Refused("no root CA".into()))?;
        let issuing: Vec<(String, Vec<u8>)> = ca
            .authorities()
            .filter(|a| a.id != "root")
            .map(|a| (a.id.clone(), a.cert_der.clone()))
            .collect();
        let trust = TrustStore::new(
            vec![root],
            issuing.iter().map(|(_, d)| d.clone()).collect(),
            // webpki applies a "required" EKU to the CA certificates of the path as well, and ours
            // carry no EKU: the leaf's EKU is checked when present, and StoreRevocation accepts
            // only certificates of the seal profile.
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
        )
        .map_err(|e| ApplianceError::Refused(format!("XUA trust store: {e}")))?;
        let mut issuer_subjects = Vec::new();
        for (id, der) in &issuing {
            let p = cps_pki::parse_certificate(der)?;
            issuer_subjects.push((id.clone(), p.subject.to_der()?));
        }
        let validator = Validator::new(
            ValidatorConfig {
                clock_skew: Duration::from_secs(u64::from(x.skew_seconds)),
                audience: match x.flavour.as_str() {
                    "ihe" => x.audience.clone(),
                    _ => None,
                },
                ..ValidatorConfig::default()
            },
            Arc::new(trust),
            Arc::new(StoreRevocation {
                store: ca.store().clone(),
                issuers: issuer_subjects,
            }),
            Arc::new(InMemoryReplayCache::new(1_000_000)),
        );
        Ok(XuaService {
            issuer,
            validator,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// Issue and sign an assertion (refused while the clock is not trusted).
    pub fn issue(&self, claims: &VihfClaims, now: SystemTime) -> Result<IssuedAssertion, CaError> {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 16];
        self.rng
            .fill(&mut id)
            .map_err(|_| CaError::Invalid("no randomness for the assertion ID".into()))?;
        self.issuer
            .issue(claims, now, &AssertionId::from_random(id))
            .map_err(|e| match e {
                cps_xua::IssueError::Signer(cps_hsm::HsmError::SigningRefused(m)) => {
                    CaError::Unavailable(format!("signing refused: {m}"))
                }
                e @ (cps_xua::IssueError::Claims(_)
                | cps_xua::IssueError::BreakGlassWithoutJustification) => {
                    CaError::Invalid(e.to_string())
                }
                e => CaError::Internal(ApplianceError::Refused(e.to_string())),
            })
    }

    /// Validate for a service: every check, and the assertion's ID is consumed.
    pub fn validate(&self, input: &[u8], now: SystemTime) -> Result<ValidatedAssertion, Refusal> {
        self.validator.validate(input, now)
    }
}

/// Unix seconds of a time (0 before 1970).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
