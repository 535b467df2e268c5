//! Who may sign assertions: path validation of the `KeyInfo` certificate to configured trust
//! anchors (rustls-webpki, time passed in), the key usage of a signing certificate, and a
//! pluggable revocation check that fails closed.
//!
//! Path validation is the same for every assertion signed with the same certificate, so its
//! result is cached by the certificate text presented, together with the interval in
//! which every certificate of the path is valid; outside that interval the path is validated
//! again. Revocation is asked on every assertion (it changes while certificates do not).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use parking_lot::RwLock;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::time::to_millis;

/// DER content of the `id-kp-documentSigning` OID (1.3.6.1.5.5.7.3.36, RFC 9336), the EKU of
/// the appliance's organisation-seal ("cachet") profile.
pub const EKU_DOCUMENT_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x24];

/// The extended key usage a signer certificate must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkuPolicy {
    /// The EKU extension, if present, must contain this OID (DER content bytes).
    RequiredIfPresent(&'static [u8]),
    /// The EKU extension must be present and contain this OID.
    Required(&'static [u8]),
}

/// DER content of `id-kp-timeStamping` (1.3.6.1.5.5.7.3.8), the EKU of a time-stamping
/// authority's certificate (RFC 3161 §2.3).
pub const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
/// DER content of `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2).
pub const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER content of `id-kp-serverAuth` (1.3.6.1.5.5.7.3.1).
pub const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER content of `id-kp-OCSPSigning` (1.3.6.1.5.5.7.3.9).
pub const EKU_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// The extended key usages a [`SignerRequirement`] can name (webpki wants them `'static`).
const KNOWN_EKUS: [&[u8]; 5] = [
    EKU_DOCUMENT_SIGNING,
    EKU_TIME_STAMPING,
    EKU_CLIENT_AUTH,
    EKU_SERVER_AUTH,
    EKU_OCSP_SIGNING,
];

/// What a signer certificate must be, beyond a valid path, for one kind of signature: taken
/// from the certificate profile it is issued under ([`SignerRequirement::from_profile`]), so
/// that the verifier asks exactly what the CA writes.
///
/// * `org-cachet` (structure seal): EKU documentSigning, keyUsage digitalSignature and
///   nonRepudiation, its policy OID.
/// * `cps-sign` (professional signature): **no** EKU extension (the profile writes none; any
///   EKU, such as the clientAuth of `cps-auth`, is refused), keyUsage nonRepudiation, its
///   policy OID.
/// * a TSA: EKU timeStamping ([`SignerRequirement::extended_key_usage`], or its profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerRequirement {
    name: String,
    /// `Some`: the EKU extension must list it; `None`: the certificate must carry no EKU.
    eku: Option<&'static [u8]>,
    /// Signature key usages that must all be asserted (digitalSignature, nonRepudiation).
    key_usages: Vec<cps_pki::ext::Usage>,
    /// Certificate policy OIDs (dotted) that must all be present.
    policies: Vec<String>,
}

impl SignerRequirement {
    /// What `profile` writes: its EKU (exactly one, or none), the signature bits of its key
    /// usage and its policies.
    pub fn from_profile(profile: &cps_pki::profile::Profile) -> Result<Self, TrustError> {
        use cps_pki::ext::Usage;
        let err = |r: &str| TrustError::Requirement(format!("profile '{}': {r}", profile.name));
        let eku = match &profile.extended_key_usage {
            None => None,
            Some((purposes, _)) => match purposes.as_slice() {
                [one] => Some(
                    KNOWN_EKUS
                        .into_iter()
                        .find(|k| *k == one.as_bytes())
                        .ok_or_else(|| err("its extended key usage is not a signing purpose"))?,
                ),
                _ => return Err(err("exactly one extended key usage is supported")),
            },
        };
        let key_usages: Vec<Usage> = profile
            .key_usages
            .iter()
            .copied()
            .filter(|u| matches!(u, Usage::DigitalSignature | Usage::NonRepudiation))
            .collect();
        if key_usages.is_empty() {
            return Err(err("its key usage allows no signature"));
        }
        Ok(SignerRequirement {
            name: profile.name.clone(),
            eku,
            key_usages,
            policies: profile
                .policies
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        })
    }

    /// Only an extended key usage (one of the `EKU_*` constants of this module).
    pub fn extended_key_usage(name: &str, eku: &'static [u8]) -> Self {
        SignerRequirement {
            name: name.to_owned(),
            eku: Some(eku),
            key_usages: vec![],
            policies: vec![],
        }
    }

    /// The name the refusals use (the profile's).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A signer certificate whose path to an anchor was verified at a given time
/// ([`TrustStore::verify_path_at`]).
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    /// The signer's certificate.
    pub signer: SignerCertificate,
    /// The certificate that issued the signer's (the first intermediate, or the anchor): the
    /// issuer its revocation status is asked of.
    pub issuer: Vec<u8>,
    /// The intermediates of the path, the signer's issuer first (without the anchor).
    pub intermediates: Vec<Vec<u8>>,
    /// Start of the interval (Unix seconds) in which every certificate of the path is valid.
    pub valid_from: i64,
    /// End of that interval (Unix seconds, inclusive).
    pub valid_until: i64,
}

/// Why a path was refused by [`TrustStore::verify_path_at`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A certificate cannot be read.
    #[error("{0}")]
    Malformed(String),
    /// No path to an anchor of the store.
    #[error("{0}")]
    Untrusted(String),
    /// A certificate of the path is expired or not yet valid at the time asked.
    #[error("{0}")]
    Expired(String),
    /// The signer certificate is not one of the kind required (EKU, key usage, policy, CA).
    #[error("{0}")]
    Usage(String),
}

impl From<TrustProblem> for PathError {
    fn from(p: TrustProblem) -> Self {
        match p {
            TrustProblem::Malformed(m) => PathError::Malformed(m),
            TrustProblem::Untrusted(m) => PathError::Untrusted(m),
            TrustProblem::Expired(m) => PathError::Expired(m),
            TrustProblem::KeyUsage(m) => PathError::Usage(m),
        }
    }
}

/// A verified signer certificate, as the validator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerCertificate {
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Issuer DN as DER (for revocation lookups by issuer).
    pub issuer_der: Vec<u8>,
    /// Serial number, big-endian magnitude.
    pub serial: Vec<u8>,
    /// SHA-256 of the DER.
    pub sha256: [u8; 32],
    /// `SubjectPublicKeyInfo` (DER).
    pub spki: Vec<u8>,
    /// The parsed subject (for comparison with the assertion's `Issuer`). Shared: every
    /// validated assertion carries a clone of its signer's certificate, and a deep copy of a
    /// parsed name is a dozen allocations.
    pub(crate) subject_dn: Arc<cps_pki::DistinguishedName>,
}

impl SignerCertificate {
    /// Read the identity of a certificate. Nothing is checked here (path, validity, usage: that
    /// is the trust store's work); for revocation checkers and their tests.
    pub fn from_der(der: &[u8]) -> Result<SignerCertificate, String> {
        let p = cps_pki::parse_certificate(der).map_err(|e| format!("signer certificate: {e}"))?;
        Ok(SignerCertificate {
            der: der.to_vec(),
            subject: p.subject.to_string(),
            issuer: p.issuer.to_string(),
            issuer_der: p.issuer.to_der().map_err(|e| e.to_string())?,
            serial: p.serial.as_bytes().to_vec(),
            sha256: p.sha256_fingerprint,
            spki: p.spki.clone(),
            subject_dn: Arc::new(p.subject),
        })
    }

    /// The structure the certificate speaks for: the struct_IdNat of its subject's `OU`, as
    /// organisation certificates carry it (`C, ST, O, OU=<struct_IdNat>, CN`). `None` unless the
    /// subject has exactly one `OU` and it is a well-formed struct_IdNat.
    pub fn structure_id(&self) -> Option<&str> {
        let mut ous = self
            .subject_dn
            .rdns()
            .iter()
            .flatten()
            .filter(|(a, _)| *a == cps_pki::NameAttribute::OrganizationalUnit);
        let (_, ou) = ous.next()?;
        if ous.next().is_some() {
            return None;
        }
        cps_pki::idnat::parse_structure_id(ou).ok()?;
        Some(ou)
    }
}

/// The answer of a revocation check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Not revoked.
    Good,
    /// Revoked (or on hold).
    Revoked {
        /// Why, for the refusal message.
        reason: String,
    },
}

/// The revocation state of signer certificates. The appliance implements it with its live
/// state; any `Err` refuses the assertion (fail closed).
pub trait RevocationCheck: Send + Sync {
    /// Status of `cert` at `now`. `chain` holds the certificates the path was built from
    /// (intermediates, without the trust anchor).
    fn status(
        &self,
        cert: &SignerCertificate,
        chain: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<RevocationStatus, String>;
}

/// Serial number → revocation reason.
type SerialReasons = HashMap<Vec<u8>, String>;

/// A fixed list of revoked certificates, keyed by issuer DN (DER) and serial: for tests and for
/// deployments that import a list.
#[derive(Debug, Default)]
pub struct StaticRevocationList {
    /// Issuer DN (DER) → serial → reason.
    revoked: RwLock<HashMap<Vec<u8>, SerialReasons>>,
}

impl StaticRevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark the certificate `der` as revoked.
    pub fn revoke(&self, der: &[u8], reason: &str) -> Result<(), TrustError> {
        let p =
            cps_pki::parse_certificate(der).map_err(|e| TrustError::Certificate(e.to_string()))?;
        let issuer = p
            .issuer
            .to_der()
            .map_err(|e| TrustError::Certificate(e.to_string()))?;
        self.revoked
            .write()
            .entry(issuer)
            .or_default()
            .insert(p.serial.as_bytes().to_vec(), reason.to_owned());
        Ok(())
    }
}

impl RevocationCheck for StaticRevocationList {
    fn status(
        &self,
        cert: &SignerCertificate,
        _chain: &[Vec<u8>],
        _now: SystemTime,
    ) -> Result<RevocationStatus, String> {
        Ok(
            match self
                .revoked
                .read()
                .get(cert.issuer_der.as_slice())
                .and_then(|serials| serials.get(cert.serial.as_slice()))
            {
                Some(reason) => RevocationStatus::Revoked {
                    reason: reason.clone(),
                },
                None => RevocationStatus::Good,
            },
        )
    }
}

/// Why a trust store or revocation list could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// No trust anchor was given.
    #[error("at least one trust anchor is required")]
    NoAnchor,
    /// A trust anchor is not a usable certificate.
    #[error("trust anchor #{index}: {reason}")]
    Anchor {
        /// Position in the list given.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate could not be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A [`SignerRequirement`] cannot be made from a profile.
    #[error("signer requirement: {0}")]
    Requirement(String),
}

/// Why a signer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustProblem {
    Malformed(String),
    Untrusted(String),
    Expired(String),
    KeyUsage(String),
}

/// A signer whose path to an anchor has been verified.
#[derive(Debug)]
pub(crate) struct VerifiedSigner {
    pub cert: SignerCertificate,
    /// Intermediates as presented.
    pub chain: Vec<Vec<u8>>,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub key: SignerKey,
}

/// The public key, prepared once per signer certificate.
#[derive(Debug, Clone)]
pub(crate) enum SignerKey {
    /// RSA, verified with OpenSSL on a key object kept across assertions (its Montgomery
    /// context is computed once; ring recomputes it on every verification, which is most of the
    /// cost of an RSA-2048 verification).
    Rsa(openssl::rsa::Rsa<openssl::pkey::Public>),
    /// Uncompressed P-256 point.
    P256(Vec<u8>),
    /// Uncompressed P-384 point.
    P384(Vec<u8>),
}

/// Trust anchors, extra intermediates and the signer-certificate policy.
pub struct TrustStore {
    anchors: Vec<CertificateDer<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    eku: EkuPolicy,
    /// Keyed by the `KeyInfo` certificate texts (see [`TrustStore::verify`]).
    cache: RwLock<HashMap<Box<str>, Arc<VerifiedSigner>, TailHash>>,
    cache_capacity: usize,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.anchors.len())
            .field("intermediates", &self.intermediates.len())
            .field("eku", &self.eku)
            .finish_non_exhaustive()
    }
}

impl TrustStore {
    /// Trust anchors (DER certificates; only their names and keys are used) and intermediates
    /// that may complete paths of signers whose `KeyInfo` holds only the leaf.
    pub fn new(
        anchors: Vec<Vec<u8>>,
        intermediates: Vec<Vec<u8>>,
        eku: EkuPolicy,
    ) -> Result<Self, TrustError> {
        if anchors.is_empty() {
            return Err(TrustError::NoAnchor);
        }
        for (index, a) in anchors.iter().enumerate() {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(a.as_slice())).map_err(|e| {
                TrustError::Anchor {
                    index,
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(TrustStore {
            anchors: anchors.into_iter().map(CertificateDer::from).collect(),
            intermediates: intermediates
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            eku,
            cache: RwLock::new(HashMap::default()),
            cache_capacity: 1024,
        })
    }

    /// Verify the path of the certificates of `KeyInfo` (base64 without whitespace; leaf first,
    /// then intermediates) at `now`. The cache is keyed by that text, so a known signer costs
    /// neither base64 decoding nor hashing: the key is the texts joined with `\n`, so two keys
    /// are equal exactly when the lists of certificate texts are, provided that no text contains
    /// a `\n` (texts that do, which are not base64 anyway, bypass the cache); for the usual
    /// single certificate it is the text itself, looked up without a copy.
    pub(crate) fn verify(
        &self,
        certs_b64: &[Cow<'_, str>],
        now: SystemTime,
    ) -> Result<Arc<VerifiedSigner>, TrustProblem> {
        let now_ms = to_millis(now);
        let key: Option<Cow<'_, str>> = match certs_b64 {
            _ if certs_b64.iter().any(|c| c.contains('\n')) => None,
            [one] => Some(Cow::Borrowed(one.as_ref())),
            many => Some(Cow::Owned(many.join("\n"))),
        };
        if let Some(key) = &key
            && let Some(v) = self.cache.read().get(key.as_ref())
            && v.valid_from_ms <= now_ms
            && now_ms < v.valid_until_ms
        {
            return Ok(v.clone());
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ders = Vec::with_capacity(certs_b64.len());
        for (i, c) in certs_b64.iter().enumerate() {
            ders.push(b64.decode(c.as_bytes()).map_err(|_| {
                TrustProblem::Malformed(format!("X509Certificate #{} is not base64", i + 1))
            })?);
        }
        let verified = Arc::new(self.verify_uncached(&ders, now)?);
        if let Some(key) = key {
            let mut cache = self.cache.write();
            if cache.len() >= self.cache_capacity {
                cache.clear();
            }
            cache.insert(key.into(), verified.clone());
        }
        Ok(verified)
    }

    fn verify_uncached(
        &self,
        certs: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<VerifiedSigner, TrustProblem> {
        let usage = match self.eku {
            EkuPolicy::RequiredIfPresent(oid) => KeyUsage::required_if_present(oid),
            EkuPolicy::Required(oid) => KeyUsage::required(oid),
        };
        self.build_path(certs, now, usage, "signing assertions")
            .map(|(v, _)| v)
    }

    /// The path of `certs` (the signer's certificate first, then any intermediates it came
    /// with; the store's intermediates complete it) to one of the store's anchors, valid at
    /// `at` (Unix seconds), for a signer of the kind `req` describes. This is the path check of
    /// long-term signatures: `at` is the time the signature is proven to exist (its
    /// timestamp), not now. Not cached.
    pub fn verify_path_at(
        &self,
        certs: &[Vec<u8>],
        at: i64,
        req: &SignerRequirement,
    ) -> Result<VerifiedPath, PathError> {
        let when = u64::try_from(at)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| PathError::Malformed(format!("time {at} before 1970")))?;
        // webpki checks a required EKU (and the EKUs of intermediates); without one, any EKU
        // present on the signer is refused below.
        let usage = KeyUsage::required_if_present(req.eku.unwrap_or(EKU_DOCUMENT_SIGNING));
        let purpose = format!("{} signatures", req.name);
        let (v, issuer) = self.build_path(certs, when, usage, &purpose)?;
        let usage_err = |what: String| {
            PathError::Usage(format!(
                "the signer certificate is not a '{}' certificate: {what}",
                req.name
            ))
        };
        let leaf = certs
            .first()
            .ok_or_else(|| PathError::Malformed("no certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| PathError::Malformed(format!("signer certificate: {e}")))?;
        let eku = parsed
            .extended_key_usage()
            .map_err(|e| PathError::Malformed(format!("extendedKeyUsage: {e}")))?;
        match (req.eku, eku) {
            (None, Some(_)) => return Err(usage_err("it has an extended key usage".into())),
            (Some(_), None) => return Err(usage_err("it has no extended key usage".into())),
            _ => {}
        }
        let ku = parsed
            .key_usage()
            .map_err(|e| PathError::Malformed(format!("keyUsage: {e}")))?;
        for u in &req.key_usages {
            let set = ku.as_ref().is_some_and(|k| match u {
                cps_pki::ext::Usage::DigitalSignature => k.value.digital_signature(),
                cps_pki::ext::Usage::NonRepudiation => k.value.non_repudiation(),
                _ => false,
            });
            if !set {
                return Err(usage_err(format!("its key usage lacks {u:?}")));
            }
        }
        let mut policies = Vec::new();
        for e in parsed.extensions() {
            if let x509_parser::extensions::ParsedExtension::CertificatePolicies(p) =
                e.parsed_extension()
            {
                policies.extend(p.iter().map(|i| i.policy_id.to_id_string()));
            }
        }
        if let Some(missing) = req.policies.iter().find(|p| !policies.contains(*p)) {
            return Err(usage_err(format!(
                "it lacks the certificate policy {missing}"
            )));
        }
        Ok(VerifiedPath {
            signer: v.cert,
            issuer,
            intermediates: v.chain,
            valid_from: v.valid_from_ms.div_euclid(1000),
            valid_until: v.valid_until_ms.div_euclid(1000) - 1,
        })
    }

    /// Path validation with webpki for `usage`, then the checks every signer certificate
    /// passes; also returns the certificate that issued the signer's.
    fn build_path(
        &self,
        certs: &[Vec<u8>],
        now: SystemTime,
        usage: KeyUsage,
        purpose: &str,
    ) -> Result<(VerifiedSigner, Vec<u8>), TrustProblem> {
        let leaf_der = certs
            .first()
            .ok_or_else(|| TrustProblem::Malformed("no certificate in KeyInfo".into()))?;
        let leaf = CertificateDer::from(leaf_der.as_slice());
        let ee = EndEntityCert::try_from(&leaf)
            .map_err(|e| TrustProblem::Malformed(format!("signer certificate: {e}")))?;
        let anchors: Vec<_> = self
            .anchors
            .iter()
            .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
            .collect();
        let mut intermediates: Vec<CertificateDer<'_>> = certs[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        intermediates.extend(self.intermediates.iter().cloned());
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let algs = &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P256_SHA384,
            webpki::ring::ECDSA_P384_SHA256,
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            webpki::ring::RSA_PKCS1_2048_8192_SHA384,
            webpki::ring::RSA_PKCS1_2048_8192_SHA512,
            webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        ];
        let path = ee
            .verify_for_usage(
                algs,
                &anchors,
                &intermediates,
                UnixTime::since_unix_epoch(Duration::from_secs(secs)),
                usage,
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    TrustProblem::Expired(format!("signer certificate path: {e}"))
                }
                webpki::Error::RequiredEkuNotFoundContext(_) => TrustProblem::KeyUsage(format!(
                    "the signer certificate's extended key usage does not allow {purpose}"
                )),
                other => TrustProblem::Untrusted(format!(
                    "signer certificate does not chain to a trusted anchor: {other}"
                )),
            })?;
        // The certificate that issued the signer's: the first intermediate, else the anchor.
        let issuer = match path.intermediate_certificates().next() {
            Some(i) => i.der().as_ref().to_vec(),
            None => self
                .anchors
                .iter()
                .find(|a| {
                    webpki::anchor_from_trusted_cert(a).is_ok_and(|t| {
                        t.subject_public_key_info == path.anchor().subject_public_key_info
                    })
                })
                .map(|a| a.as_ref().to_vec())
                .ok_or_else(|| TrustProblem::Untrusted("the path's anchor is unknown".into()))?,
        };
        // Validity window of the path actually built (leaf and intermediates).
        let (mut from, mut until) = validity_ms(leaf_der)?;
        let mut used = Vec::new();
        for i in path.intermediate_certificates() {
            let der = i.der();
            let (f, u) = validity_ms(der.as_ref())?;
            from = from.max(f);
            until = until.min(u);
            used.push(der.as_ref().to_vec());
        }
        let parsed = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|e| TrustProblem::Malformed(format!("signer certificate: {e}")))?
            .1;
        // Key usage: a signature certificate (digitalSignature or nonRepudiation), when stated.
        if let Ok(Some(ku)) = parsed.key_usage()
            && !(ku.value.digital_signature() || ku.value.non_repudiation())
        {
            return Err(TrustProblem::KeyUsage(
                    "the signer certificate's key usage allows neither digitalSignature nor nonRepudiation"
                        .into(),
                ));
        }
        if parsed.is_ca() {
            return Err(TrustProblem::KeyUsage(format!(
                "a CA certificate cannot be used for {purpose}"
            )));
        }
        let spki = parsed.public_key();
        let key_bytes = spki.subject_public_key.data.to_vec();
        let alg_oid = spki.algorithm.algorithm.to_id_string();
        let key = match alg_oid.as_str() {
            "1.2.840.113549.1.1.1" => {
                let bits = match spki.parsed() {
                    Ok(x509_parser::public_key::PublicKey::RSA(r)) => r.key_size(),
                    _ => 0,
                };
                if bits < 2048 {
                    return Err(TrustProblem::Malformed(format!(
                        "RSA key of {bits} bits (at least 2048 required)"
                    )));
                }
                SignerKey::Rsa(
                    openssl::rsa::Rsa::public_key_from_der_pkcs1(&key_bytes)
                        .map_err(|e| TrustProblem::Malformed(format!("RSA public key: {e}")))?,
                )
            }
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => SignerKey::P256(key_bytes),
                    Some("1.3.132.0.34") => SignerKey::P384(key_bytes),
                    other => {
                        return Err(TrustProblem::Malformed(format!(
                            "unsupported EC curve {}",
                            other.unwrap_or("(none)")
                        )));
                    }
                }
            }
            other => {
                return Err(TrustProblem::Malformed(format!(
                    "unsupported public key algorithm {other}"
                )));
            }
        };
        let cert = SignerCertificate::from_der(leaf_der).map_err(TrustProblem::Malformed)?;
        Ok((
            VerifiedSigner {
                cert,
                chain: used,
                valid_from_ms: from,
                valid_until_ms: until,
                key,
            },
            issuer,
        ))
    }
}

/// The hasher of the signer cache: a key (1–2 KB of base64 per certificate) is hashed by its
/// length and its last 64 bytes only, which end in the certificate's own signature, so that a
/// lookup does not hash the whole text on every assertion. Only the bucket is chosen this way:
/// a hit still needs the whole key to be equal, byte for byte. And only signers whose path was
/// verified are inserted, so presented certificates cannot crowd a bucket.
#[derive(Clone, Default)]
struct TailHash(std::collections::hash_map::RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(std::collections::hash_map::DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0.write(&bytes[bytes.len().saturating_sub(64)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

fn validity_ms(der: &[u8]) -> Result<(i64, i64), TrustProblem> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TrustProblem::Malformed(format!("certificate: {e}")))?;
    let v = c.validity();
    Ok((
        v.not_before.timestamp().saturating_mul(1000),
        // notAfter is inclusive: valid through the whole second.
        v.not_after
            .timestamp()
            .saturating_mul(1000)
            .saturating_add(1000),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base64 body of a PEM file of the corpus.
    fn pem_body(name: &str) -> String {
        let path = format!("{}/tests/corpus/pki/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect()
    }

    #[test]
    fn signer_cache_is_keyed_by_the_whole_list_of_texts() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let root = pem_body("root.crt.pem");
        let seal = pem_body("seal.crt.pem");
        let store = TrustStore::new(
            vec![b64.decode(&root).unwrap()],
            vec![],
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
        )
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_471_200); // 2026-01-15
        let one = [Cow::Borrowed(seal.as_str())];
        assert!(store.verify(&one, now).is_ok());
        assert_eq!(store.cache.read().len(), 1);
        // Served from the cache.
        assert!(store.verify(&one, now).is_ok());
        // The same signer with the root as an extra certificate: another key.
        let two = [Cow::Borrowed(seal.as_str()), Cow::Borrowed(root.as_str())];
        assert!(store.verify(&two, now).is_ok());
        assert_eq!(store.cache.read().len(), 2);
        // A single text spelling the joined key is not base64, and is not looked up.
        let joined = [Cow::Owned(format!("{seal}\n{root}"))];
        assert!(matches!(
            store.verify(&joined, now),
            Err(TrustProblem::Malformed(_))
        ));
        // Any other text is refused as before.
        let cut = [Cow::Borrowed(&seal[..seal.len() - 4])];
        assert!(store.verify(&cut, now).is_err());
        assert_eq!(store.cache.read().len(), 2);
    }

    #[test]
    fn the_structure_of_a_signer_is_its_single_struct_idnat_ou() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let cert =
            |name: &str| SignerCertificate::from_der(&b64.decode(pem_body(name)).unwrap()).unwrap();
        assert_eq!(cert("seal.crt.pem").structure_id(), Some("310000000000001"));
        assert_eq!(cert("org-seal.crt.pem").structure_id(), Some("1690000014"));
        // The root has no OU.
        assert_eq!(cert("root.crt.pem").structure_id(), None);
        // Two OUs, or one that is not a struct_IdNat: no structure.
        let mut two = cert("seal.crt.pem");
        two.subject_dn = Arc::new(
            cps_pki::DistinguishedName::parse("C=FR,OU=310000000000001,OU=1690000014,CN=x")
                .unwrap(),
        );
        assert_eq!(two.structure_id(), None);
        two.subject_dn =
            Arc::new(cps_pki::DistinguishedName::parse("C=FR,OU=Services,CN=x").unwrap());
        assert_eq!(two.structure_id(), None);
    }

    #[test]
    fn signer_cache_keys_hash_alike_owned_or_borrowed_and_compare_whole() {
        let h = TailHash::default();
        let long = "A".repeat(10) + &"t".repeat(100);
        let other = "B".repeat(10) + &"t".repeat(100);
        assert_eq!(
            h.hash_one(long.as_str()),
            h.hash_one(Box::<str>::from(long.as_str()))
        );
        // Same tail and length: same bucket, yet different keys.
        assert_eq!(h.hash_one(long.as_str()), h.hash_one(other.as_str()));
        let mut m: HashMap<Box<str>, u8, TailHash> = HashMap::default();
        m.insert(long.as_str().into(), 1);
        assert_eq!(m.get(long.as_str()), Some(&1));
        assert_eq!(m.get(other.as_str()), None);
        assert_eq!(m.get(&long[1..]), None);
    }
}
