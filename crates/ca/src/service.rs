//! The CA service: issuance, revocation and CRLs over the store and the CA signers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cps_audit::AuditEvent;
use cps_hsm::{SignatureAlgorithm, Signer};
use cps_pki::crl::{CrlParams, RevocationReason, build_crl};
use cps_pki::{DistinguishedName, parse_certificate};
use cps_store::{CertStatus, CertificateRecord, Store, StoreError, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ring::rand::SecureRandom;

use crate::SubjectRequest;
use crate::crl::{
    CrlLease, HeldLease, LeaseState, Partition, StoredCrl, crl_url, partition_entries,
    partition_name, revision_counter,
};
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
    /// This node's id among the nodes sharing the store (the holder of the CRL signer lease).
    pub node_id: String,
    /// How long the CRL signer lease is taken for, seconds (renewed when half of it is left).
    pub crl_lease_secs: i64,
    /// Shard count of each CA's CRLs (absent: 1, one full CRL); see [`crate::crl`].
    pub crl_shards: BTreeMap<String, u16>,
}

impl CaConfig {
    /// The shard count of CA `ca` (at least 1, at most [`crate::crl::MAX_SHARDS`]).
    pub fn shards(&self, ca: &str) -> u16 {
        self.crl_shards
            .get(ca)
            .copied()
            .unwrap_or(1)
            .clamp(1, crate::crl::MAX_SHARDS)
    }
}

/// The CRL of one partition as this node last served it.
#[derive(Default)]
struct CrlState {
    der: Option<Arc<Vec<u8>>>,
    number: u64,
}

/// The CRLs of one CA on this node.
struct CaCrls {
    /// Serialises the signing of this CA's partitions on this node (they share the CRL number).
    sign: Mutex<()>,
    parts: BTreeMap<Partition, Mutex<CrlState>>,
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
    crls: HashMap<String, CaCrls>,
    lease: CrlLease,
    /// Called between signing a CRL and committing it (tests pause a leader there).
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) before_publish: Mutex<Option<Box<dyn FnMut(&[u8]) + Send>>>,
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
                let parts = partitions(config.shards(k))
                    .into_iter()
                    .map(|p| (p, Mutex::new(CrlState::default())))
                    .collect();
                let c = CaCrls {
                    sign: Mutex::new(()),
                    parts,
                };
                (k.clone(), c)
            })
            .collect();
        let lease = CrlLease::new(&config.node_id, config.crl_lease_secs);
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
            lease,
            #[cfg(test)]
            before_publish: Mutex::new(None),
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

    /// A new serial for a certificate of CA `ca` and the URL of the CRL that will list it (the
    /// shard's, for a sharded CA: the shard is drawn at random and carried by the serial).
    fn new_serial(&self, ca: &str) -> Result<(cps_pki::Serial, String), CaError> {
        let mut r = [0u8; 18];
        self.rng
            .fill(&mut r)
            .map_err(|_| CaError::internal(RngFailed))?;
        let mut random = [0u8; 16];
        random.copy_from_slice(&r[..16]);
        let shards = self.config.shards(ca);
        let (serial, part) = if shards > 1 {
            let shard = u16::from_be_bytes([r[16], r[17]]) % shards;
            (crate::crl::sharded_serial(random, shard), Some(shard))
        } else {
            (cps_pki::serial_from_random(random), None)
        };
        Ok((serial, crl_url(&self.config.public_base_url, ca, part)))
    }

    /// The partitions of CA `ca`'s CRLs: its own URL, then each shard.
    pub fn crl_partitions(&self, ca: &str) -> Vec<Partition> {
        self.crls
            .get(ca)
            .map(|c| c.parts.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The URL of a partition's CRL.
    pub fn crl_url(&self, ca: &str, part: Partition) -> String {
        crl_url(&self.config.public_base_url, ca, part)
    }

    /// This node's id (the holder of the CRL signer lease when it signs).
    pub fn node_id(&self) -> &str {
        self.lease.node()
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
        // A serial collision (2^-126) is refused by the store; one retry with a new serial.
        for attempt in 0..2 {
            let (serial, crl) = self.new_serial(&ca_id)?;
            let issuer_info = cps_pki::profile::IssuerInfo {
                ca_id: ca_id.clone(),
                key_id: auth.key_id.clone(),
                not_after: Some(auth.not_after),
                points: cps_pki::hierarchy::PublicationPoints {
                    crl: vec![crl],
                    ca_issuers: vec![format!("{base}/ca/{ca_id}.der")],
                    ocsp: vec![format!("{base}/ocsp")],
                },
            };
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
        let (serial, crl) = self.new_serial("organisations")?;
        let points = cps_pki::hierarchy::PublicationPoints {
            crl: vec![crl],
            ca_issuers: vec![format!("{base}/ca/organisations.der")],
            ocsp: vec![format!("{base}/ocsp")],
        };
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
        // Every node's copy of the CRLs that may list it is stale from this commit on: the
        // CA's own URL (which lists everything while the CA is not sharded) and, for a serial
        // that carries a shard, that shard's (whatever the shard count of this node).
        for part in std::iter::once(None).chain(crate::crl::shard_of(serial).map(Some)) {
            batch.push(WriteOp::BumpCounter {
                name: revision_counter(ca, part),
                min_next: None,
            });
        }
        self.store.commit(batch)?;
        self.notify(ca, serial);
        Ok(CertificateRecord {
            status: new_status,
            ..rec
        })
    }

    /// The current CRL of a CA at its own URL (`/crl/<ca>.crl`): see
    /// [`crl_partition`](CaService::crl_partition).
    pub fn crl(&self, ca: &str, now: i64) -> Result<Arc<Vec<u8>>, CaError> {
        self.crl_partition(ca, None, now)
    }

    /// The current CRL (DER) of partition `part` of CA `ca`, the same bytes on every node: the
    /// one in the store while it is complete (no revocation of the partition since it was read)
    /// and before its half-life. Otherwise it is signed again, by the holder of the CRL signer
    /// lease only (this node takes the lease when it is free or expired), and published by one
    /// fenced commit; a node that is not the signer serves the stored CRL until its nextUpdate.
    /// While the gate refuses signing, a stored CRL that is complete and still current is
    /// served; otherwise [`CaError::Unavailable`].
    pub fn crl_partition(
        &self,
        ca: &str,
        part: Partition,
        now: i64,
    ) -> Result<Arc<Vec<u8>>, CaError> {
        let crls = self
            .crls
            .get(ca)
            .ok_or_else(|| CaError::UnknownCa(ca.into()))?;
        let state = crls.parts.get(&part).ok_or_else(|| {
            CaError::UnknownCa(format!("{} (no such CRL shard)", partition_name(ca, part)))
        })?;
        let name = partition_name(ca, part);
        // The revision first: a revocation committed after this read is picked up next time.
        let revision = self.store.counter(&revision_counter(ca, part))?;
        let stored = crate::crl::load_stored(self.store.as_ref(), &name)?;
        let complete = |s: &StoredCrl| s.revision >= revision;
        if let Some((s, _)) = &stored
            && complete(s)
            && now < s.half_life()
        {
            return self.serve_stored(ca, part, state, s);
        }
        // Stale, old or missing: signed again, if this node may and is the signer.
        let serve_if = |ok: bool, e: CaError| match &stored {
            Some((s, _)) if ok && now < s.next_update => self.serve_stored(ca, part, state, s),
            _ => Err(e),
        };
        if let Err(e) = self.may_sign() {
            return serve_if(stored.as_ref().is_some_and(|(s, _)| complete(s)), e);
        }
        let lease = match self.lease.acquire(self.store.as_ref(), now)? {
            LeaseState::Held(l) => l,
            LeaseState::Other(holder) => {
                // The signer re-signs it (its refresh, or its next fetch): meanwhile the stored
                // CRL, while it is current.
                return serve_if(
                    true,
                    CaError::Unavailable(format!(
                        "no current CRL {name} yet: node '{}' signs CRLs",
                        holder.holder
                    )),
                );
            }
        };
        let _signing = crls.sign.lock();
        // Another thread of this node may have published it while this one waited.
        let revision = self.store.counter(&revision_counter(ca, part))?;
        let stored = crate::crl::load_stored(self.store.as_ref(), &name)?;
        if let Some((s, _)) = &stored
            && s.revision >= revision
            && now < s.half_life()
        {
            return self.serve_stored(ca, part, state, s);
        }
        match self.sign_and_publish(ca, part, now, revision, stored.as_ref(), &lease) {
            Ok((der, number)) => {
                let der = Arc::new(der);
                self.hand_to_publisher(&name, &der)?;
                let mut st = state.lock();
                st.der = Some(der.clone());
                st.number = number;
                Ok(der)
            }
            Err(CaError::Conflict(m)) => {
                // The lease was taken over, or another signer published first: the signed CRL
                // is dropped; what the store holds now is served if it is current.
                let now_stored = crate::crl::load_stored(self.store.as_ref(), &name)?;
                match now_stored {
                    Some((s, _)) if now < s.next_update => self.serve_stored(ca, part, state, &s),
                    _ => Err(CaError::Unavailable(format!(
                        "CRL {name} not published ({m}); try again"
                    ))),
                }
            }
            // Not re-signed (e.g. the store refuses writes on a full disk): the stored CRL is
            // served if it is complete and still current.
            Err(e) => match &stored {
                Some((s, _)) if s.revision >= revision && now < s.next_update => {
                    self.serve_stored(ca, part, state, s)
                }
                _ => Err(e),
            },
        }
    }

    /// The stored CRL `s` of a partition: from this node's copy when it is the same number,
    /// otherwise read from the store (and handed to the publisher).
    fn serve_stored(
        &self,
        ca: &str,
        part: Partition,
        state: &Mutex<CrlState>,
        s: &StoredCrl,
    ) -> Result<Arc<Vec<u8>>, CaError> {
        let mut st = state.lock();
        // This node's copy when it is that CRL, or a later one (what a node serves never goes
        // back, even when a thread read the record before another stored the next CRL).
        if let (Some(der), true) = (&st.der, st.number >= s.number) {
            return Ok(der.clone());
        }
        let name = partition_name(ca, part);
        let der = Arc::new(crate::crl::load_der(self.store.as_ref(), &name, s)?);
        self.hand_to_publisher(&name, &der)?;
        st.der = Some(der.clone());
        st.number = s.number;
        Ok(der)
    }

    fn hand_to_publisher(&self, name: &str, der: &[u8]) -> Result<(), CaError> {
        match &self.publisher {
            Some(p) => p.publish(name, der).map_err(CaError::internal),
            None => Ok(()),
        }
    }

    /// Sign partition `part`'s CRL and publish it in one commit fenced by `lease`; its DER and
    /// number. [`CaError::Conflict`] when the lease or the CRL number moved meanwhile: the CRL
    /// is then dropped, never served.
    fn sign_and_publish(
        &self,
        ca: &str,
        part: Partition,
        now: i64,
        revision: u64,
        previous: Option<&(StoredCrl, Vec<u8>)>,
        lease: &HeldLease,
    ) -> Result<(Vec<u8>, u64), CaError> {
        let store = self.store.as_ref();
        let validity = self.config.crl_validity_secs;
        let shards = self.config.shards(ca);
        let entries =
            partition_entries(store.revoked_certificates(ca)?, part, shards, now, validity);
        let (number, number_expect) = crate::crl::next_number(store, ca)?;
        store.commit(crate::crl::reserve_ops(ca, number, number_expect, lease).into())?;
        let der = self.sign_crl(ca, part, number, now, &entries)?;
        #[cfg(test)]
        if let Some(hook) = self.before_publish.lock().as_mut() {
            hook(&der);
        }
        let name = partition_name(ca, part);
        let ops = crate::crl::publish_ops(
            ca,
            &name,
            &der,
            number,
            (now, now + validity),
            revision,
            previous,
            lease,
        )?;
        store.commit(ops.into())?;
        Ok((der, number))
    }

    /// Sign the CRL of partition `part` of CA `ca` with `entries` (what
    /// [`crate::crl::partition_entries`] selected), number `number`, valid from `now`.
    pub fn sign_crl(
        &self,
        ca: &str,
        part: Partition,
        number: u64,
        now: i64,
        entries: &[cps_pki::crl::CrlEntry],
    ) -> Result<Vec<u8>, CaError> {
        let auth = self
            .authorities
            .get(ca)
            .ok_or_else(|| CaError::UnknownCa(ca.into()))?;
        // A sharded CA's CRLs are partitioned: each names its own URL (its own one too).
        let url = self.crl_url(ca, part);
        let dp = (self.config.shards(ca) > 1).then_some(url.as_str());
        let crl = build_crl(
            &CrlParams {
                issuer: &auth.name,
                issuer_key_id: &auth.key_id,
                crl_number: number,
                this_update: now,
                next_update: now + self.config.crl_validity_secs,
                entries,
                distribution_point: dp,
            },
            auth.key.as_ref(),
            auth.signature,
        )?;
        metrics::counter!(crate::CRL_GENERATIONS, "ca" => ca.to_owned()).increment(1);
        Ok(crl)
    }
}

/// The partitions of a CA with `shards` shards: its own URL, then shards `0..shards` if more
/// than one.
fn partitions(shards: u16) -> Vec<Partition> {
    let mut v = vec![None];
    if shards > 1 {
        v.extend((0..shards).map(Some));
    }
    v
}
