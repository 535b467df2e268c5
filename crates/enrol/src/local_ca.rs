//! A small certificate authority on `cps-pki` and a [`Signer`], recording what it issues in a
//! [`Store`] the way the appliance's CA does (certificate records, revocation states, the
//! compromised-key blocklist, one audit event per change). For tests, benchmarks and tools;
//! the appliance uses its own CA service behind [`CertificateAuthority`].

use std::sync::Arc;

use cps_hsm::{KeyAlgorithm, SignatureAlgorithm, Signer, SoftwareSigner};
use cps_pki::hierarchy::PublicationPoints;
use cps_pki::profile::{IssuerInfo, ProfileSet, builtin_profiles, end_entity_params};
use cps_pki::{DistinguishedName, Issuer, KeyPolicy, issue_certificate, parse_certificate};
use cps_store::{CertStatus, CertificateRecord, Store, StoreError, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ring::rand::SecureRandom;

use crate::ca::{
    CaError, CertState, CertificateAuthority, IssueRequest, IssuedCertificate, RevocationReason,
};
use crate::model::CertRef;

/// A CA that signs with a [`Signer`] and records in a [`Store`].
pub struct LocalCa {
    store: Arc<dyn Store>,
    id: String,
    name: DistinguishedName,
    cert_der: Vec<u8>,
    root_der: Option<Vec<u8>>,
    signer: Arc<dyn Signer>,
    signature: SignatureAlgorithm,
    key_id: Vec<u8>,
    profiles: ProfileSet,
    base_url: String,
    rng: ring::rand::SystemRandom,
    lock: Mutex<()>,
}

fn unavailable(e: impl std::fmt::Display) -> CaError {
    CaError::Unavailable(e.to_string())
}

fn store_err(e: StoreError) -> CaError {
    match e {
        StoreError::Conflict(m) => CaError::Conflict(m),
        other => CaError::Unavailable(other.to_string()),
    }
}

fn random16(rng: &ring::rand::SystemRandom) -> Result<[u8; 16], CaError> {
    let mut r = [0u8; 16];
    rng.fill(&mut r)
        .map_err(|_| CaError::Unavailable("system random generator failed".into()))?;
    Ok(r)
}

impl LocalCa {
    /// A CA `id` (a profile issuer, e.g. `personnes`) with its certificate and key, using the
    /// built-in profiles; `base_url` is where its CRL, certificate and OCSP responder are
    /// published.
    pub fn new(
        store: Arc<dyn Store>,
        id: &str,
        cert_der: Vec<u8>,
        signer: Arc<dyn Signer>,
        signature: SignatureAlgorithm,
        base_url: &str,
    ) -> Result<LocalCa, CaError> {
        let parsed = parse_certificate(&cert_der).map_err(|e| CaError::Refused(e.to_string()))?;
        if parsed.spki != signer.public_key_der() {
            return Err(CaError::Refused(format!(
                "key '{}' does not match the certificate of CA '{id}'",
                signer.label()
            )));
        }
        let key_id = cps_pki::ext::key_identifier(&parsed.spki)
            .map_err(|e| CaError::Refused(e.to_string()))?;
        Ok(LocalCa {
            store,
            id: id.into(),
            name: parsed.subject,
            cert_der,
            root_der: None,
            signer,
            signature,
            key_id,
            profiles: builtin_profiles(),
            base_url: base_url.trim_end_matches('/').into(),
            rng: ring::rand::SystemRandom::new(),
            lock: Mutex::new(()),
        })
    }

    /// A throw-away hierarchy with software keys: a root (P-384) and the `personnes` CA
    /// (P-256) under it, valid from `now - 1 h` for ten years.
    pub fn generate_test_hierarchy(store: Arc<dyn Store>, now: i64) -> Result<LocalCa, CaError> {
        let profiles = builtin_profiles();
        let rng = ring::rand::SystemRandom::new();
        let root_key =
            SoftwareSigner::generate("root", KeyAlgorithm::EcP384).map_err(unavailable)?;
        let root_name = DistinguishedName::parse("CN=cps-trust Test Root CA, O=cps-trust, C=FR")
            .map_err(unavailable)?;
        let profile = |n: &str| {
            profiles
                .get(n)
                .ok_or_else(|| CaError::Unavailable(format!("no built-in profile '{n}'")))
        };
        let root_params = end_entity_params(
            profile("root-ca")?,
            &root_name,
            &[],
            root_key.public_key_der(),
            cps_pki::serial_from_random(random16(&rng)?),
            now - 3600,
            &IssuerInfo::default(),
        )
        .map_err(unavailable)?;
        let root_der = issue_certificate(
            &root_params,
            &Issuer {
                name: &root_name,
                signer: &root_key,
                signature: SignatureAlgorithm::EcdsaSha384,
            },
        )
        .map_err(unavailable)?;
        let ca_key =
            SoftwareSigner::generate("personnes", KeyAlgorithm::EcP256).map_err(unavailable)?;
        let ca_name = DistinguishedName::parse("CN=cps-trust Test AC personnes, O=cps-trust, C=FR")
            .map_err(unavailable)?;
        let base = "http://127.0.0.1:8080";
        let root_info = IssuerInfo {
            ca_id: "root".into(),
            key_id: cps_pki::ext::key_identifier(root_key.public_key_der()).map_err(unavailable)?,
            not_after: Some(root_params.not_after),
            points: PublicationPoints {
                crl: vec![format!("{base}/crl/root.crl")],
                ca_issuers: vec![format!("{base}/ca/root.der")],
                ocsp: vec![],
            },
        };
        let ca_params = end_entity_params(
            profile("ca-personnes")?,
            &ca_name,
            &[],
            ca_key.public_key_der(),
            cps_pki::serial_from_random(random16(&rng)?),
            now - 3600,
            &root_info,
        )
        .map_err(unavailable)?;
        let ca_der = issue_certificate(
            &ca_params,
            &Issuer {
                name: &root_name,
                signer: &root_key,
                signature: SignatureAlgorithm::EcdsaSha384,
            },
        )
        .map_err(unavailable)?;
        let mut ca = LocalCa::new(
            store,
            "personnes",
            ca_der,
            Arc::new(ca_key),
            SignatureAlgorithm::EcdsaSha256,
            base,
        )?;
        ca.root_der = Some(root_der);
        Ok(ca)
    }

    /// The CA's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.cert_der
    }

    /// The root certificate above it, when the hierarchy was generated here.
    pub fn root_certificate(&self) -> Option<&[u8]> {
        self.root_der.as_deref()
    }

    /// The CA's public key (DER SubjectPublicKeyInfo).
    pub fn public_key(&self) -> &[u8] {
        self.signer.public_key_der()
    }

    /// The CA id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn record(&self, cert: &CertRef) -> Result<Option<CertificateRecord>, CaError> {
        if cert.issuer != self.id {
            return Ok(None);
        }
        let serial = hex::decode(&cert.serial)
            .map_err(|_| CaError::Refused(format!("serial '{}' is not hex", cert.serial)))?;
        self.store
            .get_certificate(&self.id, &serial)
            .map_err(store_err)
    }
}

fn state_of(rec: &CertificateRecord) -> CertState {
    match rec.status {
        CertStatus::Valid => CertState::Valid,
        CertStatus::Revoked { reason: 6, .. } => CertState::OnHold,
        CertStatus::Revoked { reason, .. } => CertState::Revoked(
            RevocationReason::from_code(reason).unwrap_or(RevocationReason::Unspecified),
        ),
    }
}

fn issued(rec: &CertificateRecord) -> IssuedCertificate {
    IssuedCertificate {
        cert: CertRef {
            issuer: rec.issuer.clone(),
            serial: hex::encode_upper(&rec.serial),
        },
        profile: rec.profile.clone(),
        der: rec.der.clone(),
        not_after: rec.not_after,
        spki_sha256: rec.spki_sha256,
        state: state_of(rec),
    }
}

impl CertificateAuthority for LocalCa {
    fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        let profile = self
            .profiles
            .get(&req.profile)
            .ok_or_else(|| CaError::Refused(format!("unknown profile '{}'", req.profile)))?;
        let csr = cps_pki::parse_csr(&req.csr_der, &KeyPolicy::default())
            .map_err(|e| CaError::Refused(format!("CSR: {e}")))?;
        let subject = req
            .person
            .subject()
            .map_err(|e| CaError::Refused(e.to_string()))?;
        let fp = csr.key_fingerprint;
        if let Some(b) = self.store.blocked_key(&fp).map_err(store_err)? {
            return Err(CaError::Refused(format!(
                "this public key is on the compromised-key blocklist ({})",
                b.reason
            )));
        }
        for other in self.store.certificates_by_spki(&fp).map_err(store_err)? {
            if other.holder.as_deref() != Some(req.holder.as_str()) {
                return Err(CaError::Conflict(format!(
                    "this public key is already certified for another holder (certificate {} from CA '{}')",
                    hex::encode_upper(&other.serial),
                    other.issuer
                )));
            }
        }
        let info = IssuerInfo {
            ca_id: self.id.clone(),
            key_id: self.key_id.clone(),
            not_after: parse_certificate(&self.cert_der).ok().map(|c| c.not_after),
            points: PublicationPoints {
                crl: vec![format!("{}/crl/{}.crl", self.base_url, self.id)],
                ca_issuers: vec![format!("{}/ca/{}.der", self.base_url, self.id)],
                ocsp: vec![format!("{}/ocsp", self.base_url)],
            },
        };
        let serial = cps_pki::serial_from_random(random16(&self.rng)?);
        let params = end_entity_params(
            profile,
            &subject,
            &[],
            &csr.spki_der,
            serial.clone(),
            now,
            &info,
        )
        .map_err(|e| CaError::Refused(e.to_string()))?;
        let der = issue_certificate(
            &params,
            &Issuer {
                name: &self.name,
                signer: self.signer.as_ref(),
                signature: self.signature,
            },
        )
        .map_err(unavailable)?;
        let rec = CertificateRecord {
            issuer: self.id.clone(),
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
        self.store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(rec.clone()))
                    .with(WriteOp::AppendAudit(
                        cps_audit::AuditEvent::CertificateIssued {
                            ca: self.id.clone(),
                            serial: serial.to_hex(),
                            subject: rec.subject.clone(),
                            profile: req.profile.clone(),
                            holder: req.holder.clone(),
                        }
                        .record(now, actor),
                    )),
            )
            .map_err(store_err)?;
        Ok(issued(&rec))
    }

    fn revoke(
        &self,
        cert: &CertRef,
        reason: RevocationReason,
        actor: &str,
        now: i64,
    ) -> Result<(), CaError> {
        let _guard = self.lock.lock();
        let rec = self
            .record(cert)?
            .ok_or_else(|| CaError::NotFound(cert.to_string()))?;
        let new = match (state_of(&rec), reason) {
            (CertState::OnHold, RevocationReason::RemoveFromCrl) => CertStatus::Valid,
            (_, RevocationReason::RemoveFromCrl) => {
                return Err(CaError::Conflict(format!(
                    "certificate {cert} is not on hold"
                )));
            }
            (CertState::Revoked(r), _) => {
                return Err(CaError::Conflict(format!(
                    "certificate {cert} is already revoked ({}); revocation is final",
                    r.name()
                )));
            }
            (CertState::OnHold, RevocationReason::CertificateHold) => {
                return Err(CaError::Conflict(format!(
                    "certificate {cert} is already on hold"
                )));
            }
            (_, r) => CertStatus::Revoked {
                time: now,
                reason: r.code(),
                invalidity_date: None,
            },
        };
        let mut batch = WriteBatch::new().with(WriteOp::SetCertificateStatus {
            issuer: rec.issuer.clone(),
            serial: rec.serial.clone(),
            status: new,
        });
        if reason == RevocationReason::KeyCompromise {
            batch.push(WriteOp::BlockKey {
                spki_sha256: rec.spki_sha256,
                reason: format!("keyCompromise of certificate {cert}"),
                at: now,
            });
        }
        let (ca, serial, subject, why) = (
            rec.issuer.clone(),
            cert.serial.clone(),
            rec.subject.clone(),
            reason.name().to_owned(),
        );
        let event = match reason {
            RevocationReason::CertificateHold => cps_audit::AuditEvent::CertificateHeld {
                ca,
                serial,
                subject,
                reason: why,
            },
            RevocationReason::RemoveFromCrl => cps_audit::AuditEvent::CertificateReleased {
                ca,
                serial,
                subject,
                reason: why,
            },
            _ => cps_audit::AuditEvent::CertificateRevoked {
                ca,
                serial,
                subject,
                reason: why,
            },
        };
        batch.push(WriteOp::AppendAudit(event.record(now, actor)));
        self.store.commit(batch).map_err(store_err)?;
        Ok(())
    }

    fn state(&self, cert: &CertRef) -> Result<Option<CertState>, CaError> {
        Ok(self.record(cert)?.as_ref().map(state_of))
    }

    fn certificates_for_key(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<IssuedCertificate>, CaError> {
        Ok(self
            .store
            .certificates_by_spki(spki_sha256)
            .map_err(store_err)?
            .iter()
            .filter(|r| r.issuer == self.id)
            .map(issued)
            .collect())
    }
}
