//! Document signatures (IHE DSG): the structure seals of `[[dsg.seals]]` (HSM keys certified by
//! our organisations CA with the seal profile, behind the clock gate) and who may use each.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cps_hsm::{Hsm, Signer};

use crate::ca::CaService;
use crate::clock::{GatedSigner, SigningClock};
use crate::config::{Config, DsgSeal};
use crate::error::ApplianceError;
use crate::xua::SEAL_PROFILE;

/// One structure's seal, ready to sign.
pub struct StructureSeal {
    pub structure_id: String,
    /// The HSM key behind the clock gate.
    pub signer: Arc<dyn Signer>,
    /// Seal certificate, then its issuing CA (DER).
    pub chain: Vec<Vec<u8>>,
    /// The seal certificate's subject (RFC 4514).
    pub subject: String,
    /// The `signer` operators it signs for.
    signers: Vec<String>,
}

/// Why a caller may not have a structure's seal sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealRefusal {
    #[error("structure {0} has no seal on this appliance")]
    NoSeal(String),
    #[error("operator {operator} is not a signer of structure {structure}")]
    NotBound { operator: String, structure: String },
}

/// The seals of every structure configured.
#[derive(Default)]
pub struct Seals {
    by_structure: HashMap<String, Arc<StructureSeal>>,
}

impl Seals {
    /// Each configured seal: its key (made in the HSM at the first start) and its certificate
    /// (`dsg/<structure>.pem`, made through the issuance path and renewed like the XUA seal).
    pub fn open(
        home: &Path,
        config: &Config,
        hsm: &Hsm,
        ca: &CaService,
        clock: Arc<SigningClock>,
    ) -> Result<Seals, ApplianceError> {
        let mut by_structure = HashMap::new();
        for seal in &config.dsg.seals {
            let s = open_seal(home, seal, hsm, ca, clock.clone())?;
            by_structure.insert(seal.structure_id.clone(), Arc::new(s));
        }
        Ok(Seals { by_structure })
    }

    /// The seal `operator` may have sign for `structure_id`: the structure's own, and only for
    /// the operators its configuration lists.
    pub fn for_caller(
        &self,
        structure_id: &str,
        operator: &str,
    ) -> Result<Arc<StructureSeal>, SealRefusal> {
        let seal = self
            .by_structure
            .get(structure_id)
            .ok_or_else(|| SealRefusal::NoSeal(structure_id.to_owned()))?;
        if !seal.signers.iter().any(|s| s == operator) {
            return Err(SealRefusal::NotBound {
                operator: operator.to_owned(),
                structure: structure_id.to_owned(),
            });
        }
        Ok(seal.clone())
    }

    pub fn len(&self) -> usize {
        self.by_structure.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_structure.is_empty()
    }
}

fn open_seal(
    home: &Path,
    seal: &DsgSeal,
    hsm: &Hsm,
    ca: &CaService,
    clock: Arc<SigningClock>,
) -> Result<StructureSeal, ApplianceError> {
    let label = seal.label();
    let file = format!("dsg/{}.pem", seal.structure_id);
    let (key, chain) = crate::ca::ApplianceCredential {
        label: &label,
        algorithm: crate::xua::key_algorithm(&seal.algorithm),
        profile: SEAL_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: seal.state.clone(),
            name: seal.organisation.clone(),
            structure_id: seal.structure_id.clone(),
            common_name: format!("{} cachet", seal.organisation),
        },
        holder: format!("appliance:{label}"),
        file: &file,
    }
    .ensure(home, hsm, ca)?;
    let subject = chain
        .first()
        .and_then(|d| cps_pki::parse_certificate(d).ok())
        .map(|c| c.subject.to_string())
        .unwrap_or_default();
    Ok(StructureSeal {
        structure_id: seal.structure_id.clone(),
        signer: Arc::new(GatedSigner::new(Arc::new(key), clock)),
        chain,
        subject,
        signers: seal.signers.clone(),
    })
}

/// Where signature timestamps come from (the appliance's TSA, in process).
pub type Stamper = Arc<dyn cps_dsg::TimestampSource + Send + Sync>;

/// The appliance's own TSA as the signer's timestamp source: a SHA-256 imprint of the
/// canonical `ds:SignatureValue`, stamped and audited in process.
pub struct InProcessTsa(pub Arc<crate::tsa::TsaService>);

impl cps_dsg::TimestampSource for InProcessTsa {
    fn timestamp(&self, data: &[u8]) -> Result<Vec<u8>, cps_dsg::BoxError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        self.0
            .stamp(cps_tsa::HashAlg::Sha256, digest.as_ref(), "service:dsg")
            .map_err(|e| e.to_string().into())
    }
}

/// Why a signature request is refused (before or while signing).
#[derive(Debug, thiserror::Error)]
pub enum SignRefusal {
    /// The caller may not use that seal.
    #[error("{0}")]
    Forbidden(SealRefusal),
    /// The request does not describe a signature we can make.
    #[error("{0}")]
    Invalid(String),
    /// The clock is not trusted, the HSM or the TSA failed: nothing was signed.
    #[error("{0}")]
    Unavailable(String),
}

/// Document signatures: structure seals sign (with the TSA's timestamp and the long-term
/// values), and any DSG signature is verified against our root.
pub struct DsgService {
    seals: Seals,
    ca: Arc<CaService>,
    ocsp: Arc<cps_ocsp::Responder>,
    tsa: Option<Stamper>,
    trust: cps_xua::TrustStore,
    /// The kinds of document signer: a structure seal (`org-cachet`), a professional's card
    /// signature key (`cps-sign`).
    signers: Vec<cps_xua::SignerRequirement>,
    tsa_requirement: Option<cps_xua::SignerRequirement>,
    /// Paths already validated, with the interval they hold for (a path's signatures do not
    /// change; its validity interval is checked on every use): each verification would
    /// otherwise verify the same CA signatures again (RSA, most of its CPU).
    paths: parking_lot::Mutex<HashMap<[u8; 32], Arc<cps_xua::VerifiedPath>>>,
    rng: ring::rand::SystemRandom,
}

/// Most validated paths remembered (the cache is emptied when full).
const MAX_CACHED_PATHS: usize = 4096;

/// A signature made, with what its audit record says.
pub struct Signed {
    pub xml: Vec<u8>,
    pub signer: String,
    pub signing_time: i64,
    pub policy: cps_dsg::Policy,
    pub purpose: cps_dsg::Purpose,
    pub documents: Vec<String>,
    pub structure_id: String,
}

/// Profiles of the certificates that may sign documents.
pub const DOCUMENT_SIGNER_PROFILES: &[&str] = &["org-cachet", "cps-sign"];

impl DsgService {
    pub fn new(
        seals: Seals,
        ca: Arc<CaService>,
        ocsp: Arc<cps_ocsp::Responder>,
        tsa: Option<Stamper>,
    ) -> Result<DsgService, ApplianceError> {
        let refused = |e: &dyn std::fmt::Display| ApplianceError::Refused(format!("dsg: {e}"));
        let root = ca
            .authority("root")
            .map(|a| a.cert_der.clone())
            .ok_or_else(|| refused(&"no root CA"))?;
        let issuing = ca
            .authorities()
            .filter(|a| a.id != "root")
            .map(|a| a.cert_der.clone())
            .collect();
        let trust = cps_xua::TrustStore::new(
            vec![root],
            issuing,
            cps_xua::EkuPolicy::RequiredIfPresent(cps_xua::EKU_DOCUMENT_SIGNING),
        )
        .map_err(|e| refused(&e))?;
        let requirement = |name: &str| {
            ca.profiles()
                .get(name)
                .map(cps_xua::SignerRequirement::from_profile)
        };
        let signers = DOCUMENT_SIGNER_PROFILES
            .iter()
            .filter_map(|p| requirement(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refused(&e))?;
        let tsa_requirement = requirement(crate::ca::TSA_PROFILE)
            .transpose()
            .map_err(|e| refused(&e))?;
        Ok(DsgService {
            seals,
            ca,
            ocsp,
            tsa,
            trust,
            signers,
            tsa_requirement,
            paths: parking_lot::Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// Have `structure_id`'s seal sign for `operator`.
    pub fn sign(
        &self,
        operator: &str,
        req: &cps_api::DsgSignRequest,
        now: i64,
    ) -> Result<Signed, SignRefusal> {
        let seal = self
            .seals
            .for_caller(&req.structure_id, operator)
            .map_err(SignRefusal::Forbidden)?;
        let tsa = self.tsa.as_ref().ok_or_else(|| {
            SignRefusal::Unavailable("the time-stamping authority is not enabled".into())
        })?;
        let invalid = |m: String| SignRefusal::Invalid(m);
        let purpose = cps_dsg::Purpose::parse(&req.purpose).ok_or_else(|| {
            invalid(format!(
                "purpose '{}': not an ASTM E1762 commitment type",
                req.purpose
            ))
        })?;
        let policy = match req.policy.as_deref().unwrap_or("detached") {
            "detached" => cps_dsg::Policy::Detached,
            "enveloping" => cps_dsg::Policy::Enveloping,
            other => return Err(invalid(format!("policy '{other}': detached or enveloping"))),
        };
        if req.documents.is_empty() || req.documents.len() > MAX_DOCUMENTS {
            return Err(invalid(format!(
                "1 to {MAX_DOCUMENTS} documents per signature"
            )));
        }
        let contents = req
            .documents
            .iter()
            .map(DocumentInput::decode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if policy == cps_dsg::Policy::Enveloping
            && contents
                .iter()
                .any(|c| matches!(c, DocumentInput::Digest(_)))
        {
            return Err(invalid(
                "an enveloping signature needs the document itself".into(),
            ));
        }
        let documents: Vec<cps_dsg::SignedDocument<'_>> = req
            .documents
            .iter()
            .zip(&contents)
            .map(|(d, c)| cps_dsg::SignedDocument {
                unique_id: &d.unique_id,
                digest: c.digest(),
                mime_type: mime_of(d),
            })
            .collect();
        let content = match policy {
            cps_dsg::Policy::Detached => cps_dsg::Content::Detached {
                submission_set: req.submission_set.as_deref(),
                documents: &documents,
            },
            cps_dsg::Policy::Enveloping => {
                if documents.len() != 1 || req.submission_set.is_some() {
                    return Err(invalid(
                        "an enveloping signature is over exactly one document, without a submission set"
                            .into(),
                    ));
                }
                let DocumentInput::Content(document) = &contents[0] else {
                    return Err(invalid("an enveloping signature needs the document".into()));
                };
                cps_dsg::Content::Enveloping {
                    document,
                    mime_type: mime_of(&req.documents[0]),
                }
            }
        };
        // The seal's chain up to the root (CertificateValues), and fresh OCSP answers for the
        // seal certificate (RevocationValues; nonce: signed now, never a pre-signed one).
        let mut chain = seal.chain.clone();
        if let Some(root) = self.ca.authority("root") {
            chain.push(root.cert_der.clone());
        }
        let ocsp = self
            .ocsp_values(&seal.chain, now)
            .map_err(SignRefusal::Unavailable)?;
        let id = format!("S{}", hex::encode(self.random::<12>()?));
        let xml = cps_dsg::sign(
            &cps_dsg::Seal {
                signer: seal.signer.as_ref(),
                chain: &chain,
            },
            &cps_dsg::SignRequest {
                content,
                purpose,
                signing_time: now,
                id: &id,
                ocsp_responses: &ocsp,
            },
            tsa.as_ref(),
        )
        .map_err(|e| match e {
            cps_dsg::SignError::Invalid(m) => SignRefusal::Invalid(m),
            e => SignRefusal::Unavailable(e.to_string()),
        })?;
        Ok(Signed {
            xml,
            signer: seal.subject.clone(),
            signing_time: now,
            policy,
            purpose,
            documents: req
                .submission_set
                .iter()
                .chain(req.documents.iter().map(|d| &d.unique_id))
                .cloned()
                .collect(),
            structure_id: seal.structure_id.clone(),
        })
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], SignRefusal> {
        use ring::rand::SecureRandom;
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| SignRefusal::Unavailable("no randomness".into()))?;
        Ok(b)
    }

    /// Fresh OCSP answers of our responder for each certificate of `chain` but its last (each
    /// issued by the next).
    fn ocsp_values(&self, chain: &[Vec<u8>], now: i64) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        for pair in chain.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            let serial = cps_pki::parse_certificate(cert)
                .map_err(|e| e.to_string())?
                .serial
                .as_bytes()
                .to_vec();
            let nonce = self.random::<16>().map_err(|e| e.to_string())?;
            let req = cps_ocsp::request::request_with_nonce(issuer, &serial, &nonce)
                .map_err(|e| e.to_string())?;
            let reply = self.ocsp.respond(&req, now);
            if reply.status != cps_ocsp::ResponseStatusKind::Successful {
                return Err(format!(
                    "the OCSP responder did not answer for the signing certificate: {}",
                    reply.detail.unwrap_or_default()
                ));
            }
            out.push(reply.der.to_vec());
        }
        Ok(out)
    }

    /// Verify a signature (and the documents it signs); `live`: also the signer's status now.
    pub fn verify(
        &self,
        xml: &[u8],
        documents: &[cps_dsg::SuppliedDocument<'_>],
        live: bool,
    ) -> Result<cps_dsg::Verified, cps_dsg::Refusal> {
        let checks = Checks { dsg: self, live };
        let ctx = cps_dsg::VerifyContext {
            limits: cps_dsg::VerifyContext::DEFAULT_LIMITS,
            timestamps: &checks,
            paths: &checks,
            revocation: &checks,
            max_skew_secs: MAX_SKEW_SECS,
        };
        cps_dsg::verify(xml, documents, &ctx)
    }

    /// The path of `certs` (the signer's first) at `at` for the signer kind `kind` (its index
    /// in `requirements`, which the key names too): from the cache when a path validated before
    /// holds at `at`.
    fn path_at(
        &self,
        certs: &[Vec<u8>],
        at: i64,
        kind: u8,
        req: &cps_xua::SignerRequirement,
    ) -> Result<Arc<cps_xua::VerifiedPath>, cps_xua::PathError> {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(&[kind]);
        for c in certs {
            h.update(&(c.len() as u64).to_be_bytes());
            h.update(c);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(h.finish().as_ref());
        if let Some(p) = self.paths.lock().get(&key)
            && p.valid_from <= at
            && at <= p.valid_until
        {
            return Ok(p.clone());
        }
        let p = Arc::new(self.trust.verify_path_at(certs, at, req)?);
        let mut cache = self.paths.lock();
        if cache.len() >= MAX_CACHED_PATHS {
            cache.clear();
        }
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// The signer's path at `at`, for the first document-signer kind it fits.
    fn signer_path_at(
        &self,
        certs: &[Vec<u8>],
        at: i64,
    ) -> Result<Arc<cps_xua::VerifiedPath>, String> {
        let mut why = Vec::new();
        for (i, req) in self.signers.iter().enumerate() {
            match self.path_at(certs, at, i as u8, req) {
                Ok(p) => return Ok(p),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(why.join("; "))
    }

    /// The status of a certificate of our CA as the store records it now.
    fn live_status(&self, cert: &[u8], issuer: &[u8]) -> Result<cps_ocsp::LiveStatus, String> {
        let ca = self
            .ca
            .authorities()
            .find(|a| a.cert_der == issuer)
            .ok_or("the certificate's issuer is not a CA of this appliance")?;
        let serial = cps_pki::parse_certificate(cert)
            .map_err(|e| e.to_string())?
            .serial
            .as_bytes()
            .to_vec();
        cps_ca::StoreStatus(self.ca.store().clone())
            .live_status(&ca.id, &serial)
            .map_err(|e| format!("the store did not answer: {e}"))?
            .ok_or_else(|| "this appliance's CA never issued the certificate".to_owned())
    }
}

/// A document of a request: its bytes (base64 on the wire) or its SHA-256 (hex).
pub enum DocumentInput {
    Content(Vec<u8>),
    Digest([u8; 32]),
}

impl DocumentInput {
    /// Exactly one of `content` and `sha256`, well formed; otherwise why not.
    pub fn decode(d: &cps_api::DsgDocument) -> Result<DocumentInput, String> {
        use base64::Engine;
        let id = &d.unique_id;
        match (&d.content, &d.sha256) {
            (Some(c), None) => base64::engine::general_purpose::STANDARD
                .decode(c)
                .map(DocumentInput::Content)
                .map_err(|_| format!("document {id}: content is not base64")),
            (None, Some(h)) => hex::decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .map(DocumentInput::Digest)
                .ok_or_else(|| format!("document {id}: sha256 is not 64 hexadecimal digits")),
            _ => Err(format!(
                "document {id}: give its content or its sha256, one of them"
            )),
        }
    }

    pub fn digest(&self) -> cps_dsg::DocumentDigest<'_> {
        match self {
            DocumentInput::Content(c) => cps_dsg::DocumentDigest::Bytes(c),
            DocumentInput::Digest(h) => cps_dsg::DocumentDigest::Sha256(h),
        }
    }
}

fn mime_of(d: &cps_api::DsgDocument) -> &str {
    d.mime_type.as_deref().unwrap_or("text/xml")
}

/// Most documents in one signature.
pub const MAX_DOCUMENTS: usize = 1000;
/// How much later than the timestamp a signer's claimed `SigningTime` may be, seconds.
pub const MAX_SKEW_SECS: i64 = 300;

/// The checks a verification asks of the appliance: the TSA's token and path, the signer's
/// path, revocation at the signing time.
struct Checks<'a> {
    dsg: &'a DsgService,
    live: bool,
}

impl cps_dsg::TimestampCheck for Checks<'_> {
    fn check(&self, token: &[u8], covered: &[u8]) -> Result<i64, cps_dsg::TimestampRefusal> {
        use cps_dsg::TimestampRefusal as R;
        let t = cps_tsa::verify_token(token).map_err(|e| R::Invalid(e.to_string()))?;
        if t.hash == cps_tsa::HashAlg::Sha1 {
            return Err(R::Invalid("a SHA-1 message imprint".into()));
        }
        if t.hash.digest(covered) != t.imprint {
            return Err(R::NotCovering);
        }
        let req = self
            .dsg
            .tsa_requirement
            .as_ref()
            .ok_or_else(|| R::Untrusted("no TSA profile on this appliance".into()))?;
        let mut certs = vec![t.signer_certificate.clone()];
        certs.extend(
            t.certificates
                .iter()
                .filter(|c| **c != t.signer_certificate)
                .cloned(),
        );
        let path = self
            .dsg
            .path_at(&certs, t.gen_time, u8::MAX, req)
            .map_err(|e| R::Untrusted(e.to_string()))?;
        // Our own TSA's certificate: its status is what our store says.
        match self.dsg.live_status(&t.signer_certificate, &path.issuer) {
            Ok(cps_ocsp::LiveStatus::Good) => Ok(t.gen_time),
            Ok(cps_ocsp::LiveStatus::Revoked {
                time,
                reason,
                invalidity_date,
            }) => {
                let from = match (reason, invalidity_date) {
                    (Some(cps_ocsp::CrlReason::KeyCompromise), Some(d)) => time.min(d),
                    _ => time,
                };
                if from <= t.gen_time || reason == Some(cps_ocsp::CrlReason::KeyCompromise) {
                    Err(R::Untrusted(format!(
                        "the TSA certificate is revoked ({reason:?}) since {from}"
                    )))
                } else {
                    Ok(t.gen_time)
                }
            }
            Err(e) => Err(R::Untrusted(e)),
        }
    }
}

impl cps_dsg::PathCheck for Checks<'_> {
    fn check(&self, signer: &[u8], intermediates: &[&[u8]], at: i64) -> Result<(), String> {
        let certs: Vec<Vec<u8>> = std::iter::once(signer)
            .chain(intermediates.iter().copied())
            .map(<[u8]>::to_vec)
            .collect();
        self.dsg.signer_path_at(&certs, at).map(|_| ())
    }
}

impl cps_dsg::RevocationDecision for Checks<'_> {
    fn check(
        &self,
        signer: &[u8],
        intermediates: &[&[u8]],
        ocsp_responses: &[&[u8]],
        at: i64,
    ) -> Result<(), cps_dsg::RevocationRefusal> {
        use cps_dsg::RevocationRefusal as R;
        let certs: Vec<Vec<u8>> = std::iter::once(signer)
            .chain(intermediates.iter().copied())
            .map(<[u8]>::to_vec)
            .collect();
        let issuer = self
            .dsg
            .signer_path_at(&certs, at)
            .map(|p| p.issuer.clone())
            .map_err(|e| R::Unknown(format!("no valid path for the signer: {e}")))?;
        let live = if self.live {
            Some(self.dsg.live_status(signer, &issuer).map_err(R::Unknown)?)
        } else {
            None
        };
        let embedded: Vec<Vec<u8>> = ocsp_responses.iter().map(|r| r.to_vec()).collect();
        cps_ocsp::decide(
            &cps_ocsp::LongTermQuery {
                proof_time: at,
                certificate: signer,
                issuer: &issuer,
                embedded: &embedded,
                live,
            },
            &cps_ocsp::LongTermPolicy::default(),
        )
        .map(|_| ())
        .map_err(|e| match e {
            cps_ocsp::LongTermRefusal::RevokedBeforeProof {
                effective_time,
                reason,
                ..
            } => R::Revoked {
                reason: reason.map_or_else(|| "unspecified".into(), |r| format!("{r:?}")),
                revoked_at: effective_time,
            },
            other => R::Unknown(other.to_string()),
        })
    }
}
