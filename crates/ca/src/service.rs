//! The CA service: issuance, revocation and CRLs over the store and the CA signers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cps_audit::AuditEvent;
use cps_hsm::{SignatureAlgorithm, Signer};
use cps_pki::crl::{CrlEntry, CrlParams, RevocationReason, build_crl};
use cps_pki::{DistinguishedName, parse_certificate};
use cps_store::{CertStatus, CertificateRecord, Store, StoreError, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ring::rand::SecureRandom;

use crate::SubjectRequest;
use crate::error::RngFailed;
use crate::{CaError, CertState, CrlPublisher, IssueRequest, SigningGate, StatusListener};

/// A CA of the hierarchy that signs certificates and CRLs.
pub struct CaAuthority {
    /// The CA id (`root`, `personnes`, `organisations`...), as profiles name their issuers.
    pub id: String,
    /// Its subject name.
    pub name: DistinguishedName,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its key (the appliance passes it behind the clock gate).
    pub key: Arc<dyn Signer>,
    /// The signature algorithm of its certificates and CRLs.
    pub signature: SignatureAlgorithm,
    /// Its subject key identifier.
    pub key_id: Vec<u8>,
    not_after: i64,
}

impl CaAuthority {
    /// The CA `id` with its certificate and key; refused when the key is not the certificate's.
    pub fn new(
        id: &str,
        cert_der: Vec<u8>,
        key: Arc<dyn Signer>,
        signature: SignatureAlgorithm,
    ) -> Result<CaAuthority, CaError> {
        let parsed = parse_certificate(&cert_der)?;
        if key.public_key_der() != parsed.spki.as_slice() {
            return Err(CaError::Invalid(format!(
                "key '{}' does not match the certificate of CA '{id}'",
                key.label()
            )));
        }
        let key_id = cps_pki::ext::key_identifier(&parsed.spki)?;
        Ok(CaAuthority {
            id: id.to_owned(),
            name: parsed.subject,
            cert_der,
            key,
            signature,
            key_id,
            not_after: parsed.not_after,
        })
    }
}

impl CaAuthority {
    fn sign(&self, params: &cps_pki::CertificateParams) -> Result<Vec<u8>, CaError> {
        let issuer = cps_pki::Issuer {
            name: &self.name,
            signer: self.key.as_ref(),
            signature: self.signature,
        };
        Ok(cps_pki::issue_certificate(params, &issuer)?)
    }
}

/// What the CA is told besides its keys, store, profiles and gate.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Where the CRLs, CA certificates and the OCSP responder are published
    /// (`<base>/crl/<ca>.crl`, `<base>/ca/<ca>.der`, `<base>/ocsp`), without a trailing `/`.
    pub public_base_url: String,
    /// Validity of a CRL (`nextUpdate - thisUpdate`), seconds.
    pub crl_validity_secs: i64,
    /// Key sizes, curves and the ROCA check applied to every CSR.
    pub key_policy: cps_pki::KeyPolicy,
    /// Profiles [`CaService::issue`] refuses: certificates only the appliance makes for its own
    /// keys through [`CaService::issue_reserved`].
    pub reserved_profiles: Vec<String>,
}

struct CrlState {
    der: Option<Arc<Vec<u8>>>,
    next_update: i64,
    this_update: i64,
    dirty: bool,
}

/// A certificate made by [`CaService::issue_operator`], with its serial in hex (for the audit
/// record and the operator table written in the same commit).
pub struct OperatorIssued<'a> {
    /// The record about to be committed.
    pub record: &'a CertificateRecord,
    /// Its serial, upper-case hex.
    pub serial_hex: String,
}

/// The CA service over its authorities, a store, the profiles and a signing gate.
pub struct CaService {
    store: Arc<dyn Store>,
    profiles: cps_pki::profile::ProfileSet,
    config: CaConfig,
    rng: ring::rand::SystemRandom,
    authorities: BTreeMap<String, CaAuthority>,
    crls: HashMap<String, Mutex<CrlState>>,
    /// Serialises status transitions per CA (read-check-write must not interleave).
    revocation_locks: HashMap<String, Mutex<()>>,
    listeners: Mutex<Vec<Arc<dyn StatusListener>>>,
    gate: Arc<dyn SigningGate>,
    publisher: Option<Arc<dyn CrlPublisher>>,
}

impl CaService {
    /// A CA service over `authorities` (the root and every issuing CA).
    pub fn new(
        authorities: Vec<CaAuthority>,
        store: Arc<dyn Store>,
        profiles: cps_pki::profile::ProfileSet,
        gate: Arc<dyn SigningGate>,
        mut config: CaConfig,
    ) -> CaService {
        config.public_base_url = config.public_base_url.trim_end_matches('/').to_owned();
        let authorities: BTreeMap<String, CaAuthority> =
            authorities.into_iter().map(|a| (a.id.clone(), a)).collect();
        let crls = authorities
            .keys()
            .map(|k| {
                let st = CrlState {
                    der: None,
                    next_update: 0,
                    this_update: 0,
                    dirty: true,
                };
                (k.clone(), Mutex::new(st))
            })
            .collect();
        let revocation_locks = authorities
            .keys()
            .map(|k| (k.clone(), Mutex::new(())))
            .collect();
        CaService {
            store,
            profiles,
            config,
            rng: ring::rand::SystemRandom::new(),
            authorities,
            crls,
            revocation_locks,
            listeners: Mutex::new(Vec::new()),
            gate,
            publisher: None,
        }
    }

    /// Every new CRL is also handed to `publisher` before it is served.
    pub fn with_crl_publisher(mut self, publisher: Arc<dyn CrlPublisher>) -> CaService {
        self.publisher = Some(publisher);
        self
    }

    /// `Ok` when the gate allows signing; the operator message otherwise.
    pub fn may_sign(&self) -> Result<(), CaError> {
        self.gate.check().map_err(CaError::Unavailable)
    }

    /// The store the CA records in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The CA `id`.
    pub fn authority(&self, id: &str) -> Option<&CaAuthority> {
        self.authorities.get(id)
    }

    /// Every CA, by id.
    pub fn authorities(&self) -> impl Iterator<Item = &CaAuthority> {
        self.authorities.values()
    }

    /// Tell `l` about every status change from now on.
    pub fn add_listener(&self, l: Arc<dyn StatusListener>) {
        self.listeners.lock().push(l);
    }

    fn notify(&self, ca: &str, serial: &[u8]) {
        for l in self.listeners.lock().iter() {
            l.status_changed(ca, serial);
        }
    }

    /// The certificate profiles.
    pub fn profiles(&self) -> &cps_pki::profile::ProfileSet {
        &self.profiles
    }

    /// The state of a certificate, or `None` when this CA never issued it.
    pub fn cert_state(&self, ca: &str, serial: &[u8]) -> Result<Option<CertState>, CaError> {
        Ok(self
            .store
            .get_certificate(ca, serial)?
            .map(|r| CertState::of(&r.status)))
    }

    fn random_serial(&self) -> Result<cps_pki::Serial, CaError> {
        let mut r = [0u8; 16];
        self.rng
            .fill(&mut r)
            .map_err(|_| CaError::internal(RngFailed))?;
        Ok(cps_pki::serial_from_random(r))
    }

    /// Issue an end-entity certificate. Before signing: the CSR signature (proof of possession),
    /// the key policy (sizes, curves, ROCA), the compromised-key blocklist, and that the key is
    /// not already certified for another holder. The record and its audit event are durable
    /// before the certificate is returned. The profiles of [`CaConfig::reserved_profiles`] are
    /// refused: only [`CaService::issue_reserved`] issues them.
    pub fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
        if self.config.reserved_profiles.contains(&req.profile) {
            return Err(CaError::Invalid(format!(
                "profile '{}' is reserved for the appliance's own key",
                req.profile
            )));
        }
        self.issue_reserved(req, actor, now)
    }

    /// [`issue`](CaService::issue) for any profile, the reserved ones included: for the
    /// appliance's own keys only, never for a request from outside.
    pub fn issue_reserved(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<CertificateRecord, CaError> {
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
        let csr = cps_pki::parse_csr(&req.csr, &self.config.key_policy)
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
        let base = &self.config.public_base_url;
        let issuer_info = cps_pki::profile::IssuerInfo {
            ca_id: ca_id.clone(),
            key_id: auth.key_id.clone(),
            not_after: Some(auth.not_after),
            points: cps_pki::hierarchy::PublicationPoints {
                crl: vec![format!("{base}/crl/{ca_id}.crl")],
                ca_issuers: vec![format!("{base}/ca/{ca_id}.der")],
                ocsp: vec![format!("{base}/ocsp")],
            },
        };
        // A serial collision (2^-126) is refused by the store; one retry with a new serial.
        for attempt in 0..2 {
            let serial = self.random_serial()?;
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
            let der = auth.sign(&params)?;
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
                    AuditEvent::CertificateIssued {
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

    /// Certify an operator's key from a CSR (the operator keeps the key) under the
    /// `organisations` CA: subject `CN=<name>, OU=cps-trust operators, O=cps-trust, C=FR`,
    /// holder `operator:<name>`, 397 days, the operator client extensions, recorded as
    /// `profile`. Refused while the operator has a valid certificate, or when the key is in use
    /// or blocklisted. `extra` gives the writes committed with the record (the operator's roles
    /// and the audit record). The caller checks the name and the roles.
    pub fn issue_operator(
        &self,
        name: &str,
        csr: &[u8],
        profile: &str,
        now: i64,
        extra: impl FnOnce(OperatorIssued<'_>) -> Vec<WriteOp>,
    ) -> Result<CertificateRecord, CaError> {
        self.may_sign()?;
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
        let csr = cps_pki::parse_csr(csr, &self.config.key_policy)
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
        let base = &self.config.public_base_url;
        let points = cps_pki::hierarchy::PublicationPoints {
            crl: vec![format!("{base}/crl/organisations.crl")],
            ca_issuers: vec![format!("{base}/ca/organisations.der")],
            ocsp: vec![format!("{base}/ocsp")],
        };
        let serial = self.random_serial()?;
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
            extensions: cps_pki::hierarchy::operator_client(&csr.spki_der, &auth.key_id, &points)?,
        };
        let der = auth.sign(&params)?;
        let rec = CertificateRecord {
            issuer: "organisations".into(),
            serial: serial.as_bytes().to_vec(),
            subject: subject.to_string(),
            profile: profile.into(),
            holder: Some(holder),
            spki_sha256: csr.key_fingerprint,
            not_before: params.not_before,
            not_after: params.not_after,
            der,
            status: CertStatus::Valid,
            issued_at: now,
        };
        let mut batch = WriteBatch::new().with(WriteOp::InsertCertificate(rec.clone()));
        for op in extra(OperatorIssued {
            record: &rec,
            serial_hex: serial.to_hex(),
        }) {
            batch.push(op);
        }
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
                // A hold may be made final, at the time of the final revocation. (A second hold
                // keeps the first one's time and is refused below as already on hold.)
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
            ca.to_owned(),
            hexs.clone(),
            rec.subject.clone(),
            reason.name().to_owned(),
        );
        let event = match reason {
            RevocationReason::CertificateHold => AuditEvent::CertificateHeld {
                ca: c,
                serial: serial_hex,
                subject,
                reason: why,
            },
            RevocationReason::RemoveFromCrl => AuditEvent::CertificateReleased {
                ca: c,
                serial: serial_hex,
                subject,
                reason: why,
            },
            _ => AuditEvent::CertificateRevoked {
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

    /// The current CRL of a CA (DER): re-signed when a revocation made it stale or when half of
    /// its validity has passed. While the gate refuses signing, a CRL that is complete and still
    /// current is served; otherwise [`CaError::Unavailable`].
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
        let validity = self.config.crl_validity_secs;
        let revoked = self.store.revoked_certificates(ca)?;
        let entries: Vec<CrlEntry> = revoked
            .into_iter()
            // Keep an entry until its certificate has expired (and one CRL period beyond).
            .filter(|r| r.not_after + validity >= now)
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
        let next_update = now + validity;
        let der = build_crl(
            &CrlParams {
                issuer: &auth.name,
                issuer_key_id: &auth.key_id,
                crl_number: number,
                this_update,
                next_update,
                entries: &entries,
                distribution_point: None,
            },
            auth.key.as_ref(),
            auth.signature,
        )?;
        if let Some(p) = &self.publisher {
            p.publish(ca, &der).map_err(CaError::internal)?;
        }
        Ok((der, this_update, next_update))
    }
}
