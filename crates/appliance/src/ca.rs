//! The CA service: revocation, CRLs and the status answers OCSP reads, over the store and the
//! HSM. Every state change is committed durably (with its audit record) before it is
//! acknowledged; CRLs are regenerated from the store after every revocation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cps_hsm::{Hsm, SignatureAlgorithm, Signer};
use cps_pki::crl::{CrlEntry, CrlParams, RevocationReason, build_crl};
use cps_pki::{DistinguishedName, parse_certificate};
use cps_store::{CertStatus, CertificateRecord, Store, StoreError, WriteBatch, WriteOp};
use parking_lot::Mutex;

use crate::clock::{GatedSigner, SigningClock};
use crate::config::Config;
use crate::error::ApplianceError;
use crate::home::CA_DIR;

/// A CA of the hierarchy that signs certificates and CRLs.
pub struct CaAuthority {
    pub id: String,
    pub name: DistinguishedName,
    pub cert_der: Vec<u8>,
    /// The CA key, behind the clock gate.
    pub key: crate::clock::GatedSigner,
    pub signature: SignatureAlgorithm,
    pub key_id: Vec<u8>,
}

struct CrlState {
    der: Option<Arc<Vec<u8>>>,
    next_update: i64,
    this_update: i64,
    dirty: bool,
}

/// Errors an API caller can act on; mapped to HTTP statuses by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("no certificate with serial {serial} from CA '{ca}'")]
    NotFound { ca: String, serial: String },
    #[error("unknown CA '{0}'")]
    UnknownCa(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The appliance cannot sign now (its clock is not trusted); retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] ApplianceError),
}

impl From<StoreError> for CaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => CaError::Conflict(m),
            // Nothing was written and nothing is lost: the caller may retry (503).
            e @ StoreError::Refused(_) => CaError::Unavailable(e.to_string()),
            e @ StoreError::Poisoned { .. } => CaError::Unavailable(e.to_string()),
            other => CaError::Internal(other.into()),
        }
    }
}

/// Who a certificate is for, from registry data (the profile says which kind it needs).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectRequest {
    Person(cps_pki::PersonIdentity),
    Organisation(cps_pki::OrganisationIdentity),
}

/// An issuance request: a profile, a PKCS#10 CSR (its signature is the proof of possession),
/// who it is for, and optional subject alternative names.
pub struct IssueRequest {
    pub profile: String,
    pub csr: Vec<u8>,
    pub subject: SubjectRequest,
    pub sans: Vec<cps_pki::SubjectAltName>,
    /// Registry identity of the holder (IdNat_PS, structure id, node name...); a public key
    /// certified for one holder is refused for another.
    pub holder: String,
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

/// Something to tell when a certificate's status changed (the OCSP response cache).
pub trait StatusListener: Send + Sync {
    fn status_changed(&self, ca: &str, serial: &[u8]);
}

pub struct CaService {
    store: Arc<dyn Store>,
    profiles: cps_pki::profile::ProfileSet,
    public_base_url: String,
    key_policy: cps_pki::KeyPolicy,
    rng: ring::rand::SystemRandom,
    authorities: BTreeMap<String, CaAuthority>,
    crl_validity_secs: i64,
    crl_dir: PathBuf,
    crls: HashMap<String, Mutex<CrlState>>,
    /// Serialises status transitions per CA (read-check-write must not interleave).
    revocation_locks: HashMap<String, Mutex<()>>,
    listeners: Mutex<Vec<Arc<dyn StatusListener>>>,
    clock: Arc<SigningClock>,
}

impl CaService {
    /// The authorities of the configured hierarchy: root and every issuing CA, with their keys.
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        store: Arc<dyn Store>,
        clock: Arc<SigningClock>,
    ) -> Result<CaService, ApplianceError> {
        let mut authorities = BTreeMap::new();
        let mut add = |id: &str,
                       key_label: &str,
                       signature: SignatureAlgorithm|
         -> Result<(), ApplianceError> {
            let p = home.join(CA_DIR).join(format!("{id}.der"));
            let cert_der = std::fs::read(&p).map_err(|e| ApplianceError::Io {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            let parsed = parse_certificate(&cert_der)?;
            let key = hsm.key(key_label)?;
            if key.public_key_der() != parsed.spki.as_slice() {
                return Err(ApplianceError::Refused(format!(
                    "key '{key_label}' does not match the certificate of CA '{id}'"
                )));
            }
            let key_id = cps_pki::ext::key_identifier(&parsed.spki)?;
            authorities.insert(
                id.to_owned(),
                CaAuthority {
                    id: id.to_owned(),
                    name: parsed.subject,
                    cert_der,
                    key: GatedSigner::new(Arc::new(key), clock.clone()),
                    signature,
                    key_id,
                },
            );
            Ok(())
        };
        add(
            "root",
            &config.ca.root.key_label,
            config.ca.root.signature_algorithm()?,
        )?;
        for (id, ca) in &config.ca.issuing {
            add(id, &ca.ca.key_label, ca.ca.signature_algorithm()?)?;
        }
        let crl_dir = home.join("crl");
        std::fs::create_dir_all(&crl_dir).map_err(|e| ApplianceError::Io {
            path: crl_dir.clone(),
            reason: e.to_string(),
        })?;
        let crls = authorities
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    Mutex::new(CrlState {
                        der: None,
                        next_update: 0,
                        this_update: 0,
                        dirty: true,
                    }),
                )
            })
            .collect();
        let revocation_locks = authorities
            .keys()
            .map(|k| (k.clone(), Mutex::new(())))
            .collect();
        let profiles = match home.join("certs") {
            dir if dir.is_dir() => cps_pki::profile::load_profiles(&dir)
                .map_err(|e| ApplianceError::Refused(e.to_string()))?,
            _ => cps_pki::profile::builtin_profiles(),
        };
        Ok(CaService {
            store,
            profiles,
            public_base_url: config.appliance.public_base_url.clone(),
            key_policy: cps_pki::KeyPolicy::default(),
            rng: ring::rand::SystemRandom::new(),
            authorities,
            crl_validity_secs: i64::from(config.ca.crl_validity_hours) * 3600,
            crl_dir,
            crls,
            revocation_locks,
            listeners: Mutex::new(Vec::new()),
            clock,
        })
    }

    /// `Ok` when the clock allows signing; the operator message otherwise.
    pub fn may_sign(&self) -> Result<(), CaError> {
        self.clock.check().map_err(CaError::Unavailable)
    }

    /// The signing gate.
    pub fn clock(&self) -> &Arc<SigningClock> {
        &self.clock
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn authority(&self, id: &str) -> Option<&CaAuthority> {
        self.authorities.get(id)
    }

    pub fn authorities(&self) -> impl Iterator<Item = &CaAuthority> {
        self.authorities.values()
    }

    pub fn add_listener(&self, l: Arc<dyn StatusListener>) {
        self.listeners.lock().push(l);
    }

    fn notify(&self, ca: &str, serial: &[u8]) {
        for l in self.listeners.lock().iter() {
            l.status_changed(ca, serial);
        }
    }

    pub fn profiles(&self) -> &cps_pki::profile::ProfileSet {
        &self.profiles
    }

    /// Issue an end-entity certificate. Before signing: the CSR signature (proof of possession),
    /// the key policy (sizes, curves, ROCA), the compromised-key blocklist, and that the key is
    /// not already certified for another holder. The record and its audit event are durable
    /// before the certificate is returned. The profiles of [`APPLIANCE_ONLY_PROFILES`] are
    /// refused: only [`ApplianceCredential`] issues them, for the appliance's own keys.
    pub fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
        if APPLIANCE_ONLY_PROFILES.contains(&req.profile.as_str()) {
            return Err(CaError::Invalid(format!(
                "profile '{}' is reserved for the appliance's own key",
                req.profile
            )));
        }
        self.issue_any(req, actor, now)
    }

    /// [`issue`](CaService::issue) for any profile.
    fn issue_any(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
        use ring::rand::SecureRandom;
        self.may_sign()?;
        let profile = self
            .profiles
            .get(&req.profile)
            .ok_or_else(|| CaError::Invalid(format!("unknown profile '{}'", req.profile)))?;
        if profile.is_ca() || profile.is_self_signed() {
            return Err(CaError::Invalid(format!(
                "profile '{}' is for the CA hierarchy, not for issuance",
                req.profile
            )));
        }
        let ca_id = profile
            .issuers
            .iter()
            .find(|i| self.authorities.contains_key(*i))
            .ok_or_else(|| {
                CaError::Invalid(format!(
                    "profile '{}' names no CA of this appliance",
                    req.profile
                ))
            })?
            .clone();
        let auth = &self.authorities[&ca_id];
        let csr = cps_pki::parse_csr(&req.csr, &self.key_policy)
            .map_err(|e| CaError::Invalid(format!("CSR: {e}")))?;
        let subject = match (&req.subject, &profile.subject) {
            (SubjectRequest::Person(p), cps_pki::profile::SubjectKind::Person) => p.subject(),
            (SubjectRequest::Organisation(o), cps_pki::profile::SubjectKind::Organisation) => {
                o.subject()
            }
            _ => {
                return Err(CaError::Invalid(
                    format!(
                        "profile '{}' needs a {:?} subject",
                        req.profile, profile.subject
                    )
                    .to_lowercase(),
                ));
            }
        }
        .map_err(|e| CaError::Invalid(e.to_string()))?;
        if req.holder.is_empty() || req.holder.len() > 128 {
            return Err(CaError::Invalid(
                "holder must be 1 to 128 characters".into(),
            ));
        }
        let fp = csr.key_fingerprint;
        if let Some(b) = self.store.blocked_key(&fp)? {
            return Err(CaError::Invalid(format!(
                "this public key is on the compromised-key blocklist ({})",
                b.reason
            )));
        }
        for other in self.store.certificates_by_spki(&fp)? {
            if other.holder.as_deref() != Some(req.holder.as_str()) {
                return Err(CaError::Conflict(format!(
                    "this public key is already certified for another holder (certificate {} from CA '{}')",
                    hex::encode_upper(&other.serial),
                    other.issuer
                )));
            }
        }
        let ca_cert = parse_certificate(&auth.cert_der).map_err(|e| CaError::Internal(e.into()))?;
        let base = &self.public_base_url;
        let issuer_info = cps_pki::profile::IssuerInfo {
            ca_id: ca_id.clone(),
            key_id: auth.key_id.clone(),
            not_after: Some(ca_cert.not_after),
            points: cps_pki::hierarchy::PublicationPoints {
                crl: vec![format!("{base}/crl/{ca_id}.crl")],
                ca_issuers: vec![format!("{base}/ca/{ca_id}.der")],
                ocsp: vec![format!("{base}/ocsp")],
            },
        };
        // A serial collision (2^-126) is refused by the store; one retry with a new serial.
        for attempt in 0..2 {
            let mut r = [0u8; 16];
            self.rng.fill(&mut r).map_err(|_| {
                CaError::Internal(ApplianceError::Refused("system RNG failed".into()))
            })?;
            let serial = cps_pki::serial_from_random(r);
            let params = cps_pki::profile::end_entity_params(
                profile,
                &subject,
                &req.sans,
                &csr.spki_der,
                serial.clone(),
                now,
                &issuer_info,
            )
            .map_err(|e| CaError::Invalid(e.to_string()))?;
            let der = cps_pki::issue_certificate(
                &params,
                &cps_pki::Issuer {
                    name: &auth.name,
                    signer: &auth.key,
                    signature: auth.signature,
                },
            )
            .map_err(|e| CaError::Internal(e.into()))?;
            let rec = CertificateRecord {
                issuer: ca_id.clone(),
                serial: serial.as_bytes().to_vec(),
                subject: subject.to_string(),
                profile: req.profile.clone(),
                holder: Some(req.holder.clone()),
                spki_sha256: fp,
                not_before: params.not_before,
                not_after: params.not_after,
                der,
                status: CertStatus::Valid,
                issued_at: now,
            };
            let batch = WriteBatch::new()
                .with(WriteOp::InsertCertificate(rec.clone()))
                .with(WriteOp::AppendAudit(
                    cps_audit::AuditEvent::CertificateIssued {
                        ca: ca_id.to_string(),
                        serial: serial.to_hex(),
                        subject: rec.subject.clone(),
                        profile: req.profile.clone(),
                        holder: req.holder.clone(),
                    }
                    .record(now, actor),
                ));
            match self.store.commit(batch) {
                Ok(_) => {
                    // An "unknown" for this serial may sit in the OCSP cache.
                    self.notify(&ca_id, &rec.serial);
                    return Ok(rec);
                }
                Err(StoreError::Conflict(_)) if attempt == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CaError::Conflict(
            "serial number collision twice in a row".into(),
        ))
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
        use ring::rand::SecureRandom;
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
        let holder = format!("operator:{name}");
        if self
            .store
            .list_certificates(Some("organisations"), None, 1000)?
            .certificates
            .iter()
            .any(|c| c.holder.as_deref() == Some(holder.as_str()) && c.status == CertStatus::Valid)
        {
            return Err(CaError::Conflict(format!(
                "operator '{name}' already has a valid certificate"
            )));
        }
        let auth = self
            .authorities
            .get("organisations")
            .ok_or_else(|| CaError::UnknownCa("organisations".into()))?;
        let csr = cps_pki::parse_csr(csr, &self.key_policy)
            .map_err(|e| CaError::Invalid(format!("CSR: {e}")))?;
        if self.store.blocked_key(&csr.key_fingerprint)?.is_some()
            || !self
                .store
                .certificates_by_spki(&csr.key_fingerprint)?
                .is_empty()
        {
            return Err(CaError::Conflict(
                "this public key is already in use or blocklisted".into(),
            ));
        }
        let base = &self.public_base_url;
        let points = cps_pki::hierarchy::PublicationPoints {
            crl: vec![format!("{base}/crl/organisations.crl")],
            ca_issuers: vec![format!("{base}/ca/organisations.der")],
            ocsp: vec![format!("{base}/ocsp")],
        };
        let mut r = [0u8; 16];
        self.rng
            .fill(&mut r)
            .map_err(|_| CaError::Internal(ApplianceError::Refused("system RNG failed".into())))?;
        let serial = cps_pki::serial_from_random(r);
        let subject = DistinguishedName::parse(&format!(
            "CN={name}, OU=cps-trust operators, O=cps-trust, C=FR"
        ))
        .map_err(|e| CaError::Invalid(e.to_string()))?;
        let params = cps_pki::CertificateParams {
            serial: serial.clone(),
            subject: subject.clone(),
            subject_public_key: csr.spki_der.clone(),
            not_before: now - 60,
            not_after: now + 397 * 86_400,
            extensions: cps_pki::hierarchy::operator_client(&csr.spki_der, &auth.key_id, &points)
                .map_err(|e| CaError::Internal(e.into()))?,
        };
        let der = cps_pki::issue_certificate(
            &params,
            &cps_pki::Issuer {
                name: &auth.name,
                signer: &auth.key,
                signature: auth.signature,
            },
        )
        .map_err(|e| CaError::Internal(e.into()))?;
        let rec = CertificateRecord {
            issuer: "organisations".into(),
            serial: serial.as_bytes().to_vec(),
            subject: subject.to_string(),
            profile: crate::operators::OPERATOR_PROFILE.into(),
            holder: Some(holder),
            spki_sha256: csr.key_fingerprint,
            not_before: params.not_before,
            not_after: params.not_after,
            der: der.clone(),
            status: CertStatus::Valid,
            issued_at: now,
        };
        let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
        let batch = WriteBatch::new()
            .with(WriteOp::InsertCertificate(rec.clone()))
            .with(crate::operators::register_op(&der, name, &role_refs))
            .with(WriteOp::AppendAudit(
                cps_audit::AuditEvent::OperatorCreated {
                    operator: name.into(),
                    roles: roles.to_vec(),
                    serial: serial.to_hex(),
                }
                .record(now, actor),
            ));
        self.store.commit(batch)?;
        self.notify("organisations", &rec.serial);
        Ok(rec)
    }

    /// Revoke (or put on hold, or release from hold with `removeFromCRL`). Durable, audited,
    /// and visible to OCSP and the next CRL before this returns.
    pub fn revoke(
        &self,
        ca: &str,
        serial: &[u8],
        reason: RevocationReason,
        invalidity_date: Option<i64>,
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
        let lock = self
            .revocation_locks
            .get(ca)
            .ok_or_else(|| CaError::UnknownCa(ca.into()))?;
        let _guard = lock.lock();
        let hexs = hex::encode_upper(serial);
        let rec = self
            .store
            .get_certificate(ca, serial)?
            .ok_or_else(|| CaError::NotFound {
                ca: ca.into(),
                serial: hexs.clone(),
            })?;
        let new_status = match (&rec.status, reason) {
            (CertStatus::Revoked { reason: 6, .. }, RevocationReason::RemoveFromCrl) => {
                CertStatus::Valid
            }
            (_, RevocationReason::RemoveFromCrl) => {
                return Err(CaError::Conflict(format!(
                    "certificate {hexs} is not on hold: removeFromCRL only releases a certificateHold"
                )));
            }
            (
                CertStatus::Revoked {
                    reason: 6, time, ..
                },
                r,
            ) => {
                // A hold may be made final; the revocation time stays the hold's (RFC 5280 §5.3.1).
                let time = if r == RevocationReason::CertificateHold {
                    *time
                } else {
                    now
                };
                CertStatus::Revoked {
                    time,
                    reason: r.code(),
                    invalidity_date,
                }
            }
            (CertStatus::Revoked { reason: r, .. }, _) => {
                let name = RevocationReason::from_code(*r)
                    .map(|x| x.name())
                    .unwrap_or("unknown");
                return Err(CaError::Conflict(format!(
                    "certificate {hexs} is already revoked ({name}); revocation is final"
                )));
            }
            (CertStatus::Valid, r) => CertStatus::Revoked {
                time: now,
                reason: r.code(),
                invalidity_date,
            },
        };
        if new_status == rec.status {
            return Err(CaError::Conflict(format!(
                "certificate {hexs} is already on hold"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetCertificateStatus {
            issuer: ca.into(),
            serial: serial.to_vec(),
            status: new_status.clone(),
        });
        if reason == RevocationReason::KeyCompromise {
            batch.push(WriteOp::BlockKey {
                spki_sha256: rec.spki_sha256,
                reason: format!("keyCompromise of certificate {hexs} from CA '{ca}'"),
                at: now,
            });
        }
        let (c, serial_hex, subject, why) = (
            ca.to_string(),
            hexs.clone(),
            rec.subject.clone(),
            reason.name().to_owned(),
        );
        let event = match reason {
            RevocationReason::CertificateHold => cps_audit::AuditEvent::CertificateHeld {
                ca: c,
                serial: serial_hex,
                subject,
                reason: why,
            },
            RevocationReason::RemoveFromCrl => cps_audit::AuditEvent::CertificateReleased {
                ca: c,
                serial: serial_hex,
                subject,
                reason: why,
            },
            _ => cps_audit::AuditEvent::CertificateRevoked {
                ca: c,
                serial: serial_hex,
                subject,
                reason: why,
            },
        };
        batch.push(WriteOp::AppendAudit(event.record(now, actor)));
        self.store.commit(batch)?;
        if let Some(s) = self.crls.get(ca) {
            s.lock().dirty = true;
        }
        self.notify(ca, serial);
        Ok(CertificateRecord {
            status: new_status,
            ..rec
        })
    }

    /// The current CRL of a CA (DER): regenerated when a revocation made it stale or when half of
    /// its validity has passed.
    pub fn crl(&self, ca: &str, now: i64) -> Result<Arc<Vec<u8>>, CaError> {
        let state = self
            .crls
            .get(ca)
            .ok_or_else(|| CaError::UnknownCa(ca.into()))?;
        let mut st = state.lock();
        let half = st.this_update + (st.next_update - st.this_update) / 2;
        if let (Some(der), false) = (&st.der, st.dirty || now >= half) {
            return Ok(der.clone());
        }
        if let Err(e) = self.may_sign() {
            // No new signature: a CRL that is still current and complete may still be served.
            return match &st.der {
                Some(der) if !st.dirty && now < st.next_update => Ok(der.clone()),
                _ => Err(e),
            };
        }
        // Clear the flag before reading the store: a revocation committed after this point
        // marks it dirty again and is picked up by the next call.
        let was_dirty = st.dirty;
        st.dirty = false;
        match self.generate_crl(ca, now) {
            Ok((der, this_update, next_update)) => {
                let der = Arc::new(der);
                st.der = Some(der.clone());
                st.this_update = this_update;
                st.next_update = next_update;
                Ok(der)
            }
            Err(e) => {
                // Not re-signed (e.g. the store refuses writes on a full disk): a CRL that is
                // complete and still current is served meanwhile; the next call tries again.
                st.dirty = was_dirty;
                match &st.der {
                    Some(der) if !was_dirty && now < st.next_update => Ok(der.clone()),
                    _ => {
                        st.dirty = true;
                        Err(e)
                    }
                }
            }
        }
    }

    fn generate_crl(&self, ca: &str, now: i64) -> Result<(Vec<u8>, i64, i64), CaError> {
        let auth = self
            .authorities
            .get(ca)
            .ok_or_else(|| CaError::UnknownCa(ca.into()))?;
        let revoked = self.store.revoked_certificates(ca)?;
        let entries: Vec<CrlEntry> = revoked
            .into_iter()
            // Keep an entry until its certificate has expired (and one CRL period beyond).
            .filter(|r| r.not_after + self.crl_validity_secs >= now)
            .map(|r| CrlEntry {
                serial: r.serial,
                revocation_time: r.time,
                reason: RevocationReason::from_code(r.reason),
                invalidity_date: r.invalidity_date,
            })
            .collect();
        let receipt = self
            .store
            .commit(WriteBatch::new().with(WriteOp::BumpCounter {
                name: format!("crl-number:{ca}"),
                min_next: None,
            }))?;
        let number = receipt.counter_values.first().copied().unwrap_or(1);
        let this_update = now;
        let next_update = now + self.crl_validity_secs;
        let der = build_crl(
            &CrlParams {
                issuer: &auth.name,
                issuer_key_id: &auth.key_id,
                crl_number: number,
                this_update,
                next_update,
                entries: &entries,
            },
            &auth.key,
            auth.signature,
        )
        .map_err(|e| CaError::Internal(e.into()))?;
        let path = self.crl_dir.join(format!("{ca}.crl"));
        let tmp = self.crl_dir.join(format!(".{ca}.crl.tmp"));
        std::fs::write(&tmp, &der)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                CaError::Internal(ApplianceError::Io {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })?;
        Ok((der, this_update, next_update))
    }
}

/// Profiles the issuance API refuses: certificates only the appliance makes for its own keys.
/// (A checkpoint certificate for any other key would let its holder sign audit checkpoints that
/// `audit verify` accepts.)
pub const APPLIANCE_ONLY_PROFILES: &[&str] = &[CHECKPOINT_PROFILE];

/// The certificate profile of the audit checkpoint key (`certs/audit-checkpoint.toml`).
pub const CHECKPOINT_PROFILE: &str = "audit-checkpoint";

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
            .issue_any(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_issuance_holders_stay_out_of_the_reserved_namespaces() {
        for h in [
            "appliance:xua-cachet",
            "node:cps-trust.localhost",
            "operator:admin",
            "ca:root",
            "Appliance:xua-cachet",
            " NODE:x",
        ] {
            let e = check_raw_issuance_holder(h).unwrap_err();
            assert!(
                matches!(e, CaError::Invalid(ref m) if m.contains("reserved namespace")),
                "{h}: {e}"
            );
        }
        for h in [
            "810002813839",
            "1ATTACKER1",
            "appliance",
            "nodes-team",
            "x:appliance:",
        ] {
            check_raw_issuance_holder(h).unwrap();
        }
    }
}
