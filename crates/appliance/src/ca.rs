//! The CA of the appliance: `cps-ca`'s service wired to the home (CA certificates under
//! `<home>/ca/`, profiles under `<home>/certs/`, CRLs written to `<home>/crl/`), the HSM keys
//! behind the clock gate, and the configuration; operator certificates and the appliance's own
//! credentials.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use cps_hsm::{Hsm, Signer};
use cps_pki::parse_certificate;
use cps_store::{CertificateRecord, WriteOp};

pub use cps_ca::{
    CaAuthority, CaError, IssueRequest, RESERVED_HOLDER_PREFIXES, StatusListener, SubjectRequest,
    check_raw_issuance_holder,
};

use crate::clock::{GatedSigner, SigningClock};
use crate::config::Config;
use crate::error::ApplianceError;
use crate::home::CA_DIR;

/// The signing clock as the CA's gate.
/// The clock as `cps-ca`'s signing gate.
pub struct ClockGate(pub Arc<SigningClock>);

impl cps_ca::SigningGate for ClockGate {
    fn check(&self) -> Result<(), String> {
        self.0.check()
    }
}

impl From<ApplianceError> for CaError {
    fn from(e: ApplianceError) -> Self {
        CaError::Internal(Box::new(e))
    }
}

/// The CA service of the appliance: [`cps_ca::CaService`] (reached through `Deref`) and the
/// signing clock its keys are gated by.
pub struct CaService {
    core: Arc<cps_ca::CaService>,
    clock: Arc<SigningClock>,
}

impl Deref for CaService {
    type Target = cps_ca::CaService;
    fn deref(&self) -> &cps_ca::CaService {
        &self.core
    }
}

impl CaService {
    /// The authorities of the configured hierarchy: root and every issuing CA, with their keys
    /// behind the clock gate.
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        store: Arc<dyn cps_store::Store>,
        clock: Arc<SigningClock>,
    ) -> Result<CaService, ApplianceError> {
        let mut ids = vec![("root", &config.ca.root)];
        ids.extend(
            config
                .ca
                .issuing
                .iter()
                .map(|(id, ca)| (id.as_str(), &ca.ca)),
        );
        let mut authorities = Vec::new();
        for (id, ca) in ids {
            let p = home.join(CA_DIR).join(format!("{id}.der"));
            let cert_der = std::fs::read(&p).map_err(|e| ApplianceError::Io {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            let key: Arc<dyn Signer> = Arc::new(GatedSigner::new(
                Arc::new(hsm.key(&ca.key_label)?),
                clock.clone(),
            ));
            let auth = CaAuthority::new(id, cert_der, key, ca.signature_algorithm()?)
                .map_err(|e| ApplianceError::Refused(e.to_string()))?;
            authorities.push(auth);
        }
        let crl_dir = home.join("crl");
        std::fs::create_dir_all(&crl_dir).map_err(|e| ApplianceError::Io {
            path: crl_dir.clone(),
            reason: e.to_string(),
        })?;
        let profiles = match home.join("certs") {
            dir if dir.is_dir() => cps_pki::profile::load_profiles(&dir)
                .map_err(|e| ApplianceError::Refused(e.to_string()))?,
            _ => cps_pki::profile::builtin_profiles(),
        };
        let core = cps_ca::CaService::new(
            authorities,
            store,
            profiles,
            Arc::new(ClockGate(clock.clone())),
            cps_ca::CaConfig {
                public_base_url: config.appliance.public_base_url.clone(),
                crl_validity_secs: i64::from(config.ca.crl_validity_hours) * 3600,
                key_policy: cps_pki::KeyPolicy::default(),
                reserved_profiles: APPLIANCE_ONLY_PROFILES
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                node_id: config.node_id(),
                crl_lease_secs: i64::from(config.ca.crl_lease_seconds),
                crl_shards: config
                    .ca
                    .issuing
                    .iter()
                    .map(|(id, c)| (id.clone(), c.crl_shards))
                    .collect(),
            },
        )
        .with_crl_publisher(Arc::new(cps_ca::CrlDirectory(crl_dir)));
        Ok(CaService {
            core: Arc::new(core),
            clock,
        })
    }

    /// A service over an assembled `cps-ca` core and the gate its keys are behind (the
    /// in-process harness builds one over software keys; [`CaService::open`] reads the home).
    pub fn from_parts(core: Arc<cps_ca::CaService>, clock: Arc<SigningClock>) -> CaService {
        CaService { core, clock }
    }

    /// The CA service itself (what the card service holds).
    pub fn core(&self) -> &Arc<cps_ca::CaService> {
        &self.core
    }

    /// The signing gate.
    pub fn clock(&self) -> &Arc<SigningClock> {
        &self.clock
    }

    /// Certify a new operator from a CSR (the operator keeps the key) and bind roles to the
    /// certificate; durable and audited.
    pub fn create_operator(
        &self,
        name: &str,
        roles: &[String],
        csr: &[u8],
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
        self.may_sign()?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(CaError::Invalid(
                "operator name: 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if roles.is_empty() {
            return Err(CaError::Invalid(
                "an operator needs at least one role".into(),
            ));
        }
        for r in roles {
            if !crate::operators::ROLES.contains(&r.as_str()) {
                return Err(CaError::Invalid(format!(
                    "unknown role '{r}' (roles: {})",
                    crate::operators::ROLES.join(", ")
                )));
            }
        }
        let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
        self.core.issue_operator(
            name,
            csr,
            crate::operators::OPERATOR_PROFILE,
            now,
            |issued| {
                vec![
                    crate::operators::register_op(&issued.record.der, name, &role_refs),
                    WriteOp::AppendAudit(
                        cps_audit::AuditEvent::OperatorCreated {
                            operator: name.into(),
                            roles: roles.to_vec(),
                            serial: issued.serial_hex.clone(),
                        }
                        .record(now, actor),
                    ),
                ]
            },
        )
    }
}

/// This node's id as the holder of the CRL signer lease: the host name, or `node-1`.
// When the `[cluster] node_id` setting is present, it is the one to use here.
/// Profiles the issuance API refuses: certificates only the appliance makes for its own keys.
/// (A checkpoint certificate for any other key would let its holder sign audit checkpoints that
/// `audit verify` accepts; a `tsa` certificate would let it sign time-stamp tokens that chain to
/// our root as if this appliance had made them.)
pub const APPLIANCE_ONLY_PROFILES: &[&str] = &[CHECKPOINT_PROFILE, TSA_PROFILE];

/// The certificate profile of the time-stamping key (`certs/tsa.toml`, see [`crate::tsa`]).
pub const TSA_PROFILE: &str = "tsa";

/// The certificate profile of the audit checkpoint key (`certs/audit-checkpoint.toml`).
pub use cps_trail::CHECKPOINT_PROFILE;

/// How long before its end a credential's certificate is renewed at start.
const RENEW_BEFORE_SECS: i64 = 30 * 86_400;

/// A credential of the appliance itself (assertion seal, ATNA node, audit checkpoint signer): an
/// HSM key, created on first use (sensitive, never extractable), certified through the normal
/// issuance path (a CSR the key signs itself: checks, record, audit) and kept as a PEM chain
/// (certificate, then its issuing CA) in `<home>/<file>`. Later calls reuse both while they still
/// match and the certificate has more than 30 days to run; otherwise the key is certified again.
pub struct ApplianceCredential<'a> {
    pub label: &'a str,
    pub algorithm: cps_hsm::KeyAlgorithm,
    pub profile: &'a str,
    pub subject: cps_pki::OrganisationIdentity,
    pub holder: String,
    /// Relative to the home.
    pub file: &'a str,
}

impl ApplianceCredential<'_> {
    pub fn ensure(
        &self,
        home: &Path,
        hsm: &Hsm,
        ca: &CaService,
    ) -> Result<(cps_hsm::HsmKey, Vec<Vec<u8>>), ApplianceError> {
        let key = match hsm.key(self.label) {
            Ok(k) => k,
            Err(cps_hsm::HsmError::KeyNotFound { .. }) => {
                tracing::info!(label = self.label, "creating an appliance key in the HSM");
                hsm.generate_key_pair(self.label, self.algorithm)?
            }
            Err(e) => return Err(e.into()),
        };
        let path = home.join(self.file);
        let mut current = None;
        if let Ok(pem) = std::fs::read_to_string(&path) {
            let chain = cps_pki::pem_certificates(&pem);
            let now = crate::clock::unix_now();
            match chain.first().and_then(|d| parse_certificate(d).ok()) {
                Some(c)
                    if c.spki == key.public_key_der() && c.not_after > now + RENEW_BEFORE_SECS =>
                {
                    return Ok((key, chain));
                }
                Some(c) if c.spki == key.public_key_der() => {
                    tracing::warn!(path = %path.display(), "certificate ends within 30 days: certifying the key again");
                    if c.not_after > now {
                        current = Some(chain);
                    }
                }
                _ => {
                    tracing::warn!(path = %path.display(), "certificate does not match its key: certifying it again");
                }
            }
        }
        match self.certify(&key, &path, ca) {
            Ok(chain) => Ok((key, chain)),
            // Still valid: keep it and try again at the next start (e.g. the clock is not
            // trusted now, so nothing can be signed).
            Err(e) if current.is_some() => {
                tracing::error!(error = %e, path = %path.display(), "cannot renew the certificate; keeping the current one until it ends");
                Ok((key, current.unwrap_or_default()))
            }
            Err(e) => Err(e),
        }
    }

    /// Certify `key` through the issuance path and write the chain to `path`.
    fn certify(
        &self,
        key: &cps_hsm::HsmKey,
        path: &Path,
        ca: &CaService,
    ) -> Result<Vec<Vec<u8>>, ApplianceError> {
        let refused = |what: &str, e: &dyn std::fmt::Display| {
            ApplianceError::Refused(format!("{} {what}: {e}", self.label))
        };
        let subject = self.subject.subject().map_err(|e| refused("subject", &e))?;
        let alg = key.key_algorithm().default_signature();
        let csr = cps_pki::build_csr(&subject, key.public_key_der(), alg, |tbs| {
            key.sign(alg, tbs, cps_hsm::SigFormat::Der)
        })
        .map_err(|e| refused("CSR", &e))?;
        let rec = ca
            .issue_reserved(
                &IssueRequest {
                    profile: self.profile.into(),
                    csr,
                    subject: SubjectRequest::Organisation(self.subject.clone()),
                    sans: vec![],
                    holder: self.holder.clone(),
                },
                "appliance",
                crate::clock::unix_now(),
            )
            .map_err(|e| refused("certificate", &e))?;
        let issuer = ca
            .authority(&rec.issuer)
            .map(|a| a.cert_der.clone())
            .unwrap_or_default();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ApplianceError::Io {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let pem = format!(
            "{}{}",
            cps_pki::pem_encode("CERTIFICATE", &rec.der),
            cps_pki::pem_encode("CERTIFICATE", &issuer)
        );
        std::fs::write(path, pem).map_err(|e| ApplianceError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(vec![rec.der, issuer])
    }
}
