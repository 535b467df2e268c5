//! OCSP *responses* read back (RFC 6960 §4.2): strict DER parsing with limits, the signature
//! checked against the issuer or a delegated responder certificate carried in the response, and
//! the status of one certificate found by its CertID.
//!
//! This is the relying party's side, used when an OCSP response is evidence inside a long-term
//! signature (XAdES `RevocationValues`): nothing here trusts a byte before the signature over
//! `tbsResponseData` has been verified with a key the certificate's issuer vouches for.
//!
//! * [`parse_response`]: `OCSPResponse` → [`OcspResponse`] (only `successful` with
//!   id-pkix-ocsp-basic is a response; every other status is [`ResponseError::NotSuccessful`]).
//!   Strict DER through the same reader as the request parser, bounded by [`ResponseLimits`];
//!   trailing bytes, an unknown *critical* extension, a version other than v1, a duplicate
//!   extension, an unknown CertStatus or revocation reason are refused.
//! * [`OcspResponse::verify`]: who signed. The issuer's own key (the ResponderID names the
//!   issuer), or a delegated responder: a certificate among `certs` that the ResponderID names,
//!   issued by that issuer (name and signature), carrying id-kp-OCSPSigning and
//!   id-pkix-ocsp-nocheck (its own status cannot be checked from the evidence) and valid at
//!   `producedAt` (RFC 6960 §4.2.2.2). Any other signer is refused, whatever it says.
//! * [`VerifiedResponse::status_of`]: the SingleResponse whose CertID names the certificate
//!   (SHA-1, SHA-256, SHA-384 or SHA-512 CertIDs; the certificate must name the issuer).

use der::asn1::GeneralizedTime;
use der::{Decode, Encode, Tag, TagNumber};

use crate::CrlReason;
use crate::oids;
use crate::parse::{self, CertIdHash, Cursor, Malformed, check_oid, ctx, explicit};

/// Bounds applied while parsing a response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    /// Largest `OCSPResponse` accepted, bytes.
    pub max_bytes: usize,
    /// Most SingleResponses in one response.
    pub max_responses: usize,
    /// Most certificates in `certs`.
    pub max_certs: usize,
}

impl Default for ResponseLimits {
    /// 64 KiB, 64 SingleResponses, 8 certificates: far above what any responder sends for the
    /// one certificate a signature embeds evidence about.
    fn default() -> Self {
        ResponseLimits {
            max_bytes: 64 * 1024,
            max_responses: 64,
            max_certs: 8,
        }
    }
}

/// Why a response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    #[error("OCSP response of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed OCSP response: {0}")]
    Malformed(String),
    /// The responseStatus is not `successful` (the code is given).
    #[error("OCSP response status {0} is not successful")]
    NotSuccessful(u8),
    #[error("OCSP response type is not id-pkix-ocsp-basic")]
    NotBasic,
    #[error("unsupported OCSP response signature algorithm")]
    UnsupportedAlgorithm,
    #[error("issuer certificate: {0}")]
    Issuer(String),
    /// Neither the issuer nor a certificate carried in the response is named by the ResponderID.
    #[error("the OCSP responder is neither the issuer nor a certificate carried in the response")]
    UnknownResponder,
    /// The named responder certificate cannot answer for this issuer.
    #[error("the OCSP responder certificate is not authorised by the issuer: {0}")]
    UnauthorizedResponder(String),
    #[error("the OCSP response signature does not verify")]
    BadSignature,
    #[error("certificate: {0}")]
    Certificate(String),
    /// No SingleResponse names the certificate.
    #[error("the OCSP response says nothing about this certificate")]
    NotForCertificate,
    /// Several SingleResponses name the certificate and disagree.
    #[error("the OCSP response gives contradictory statuses for this certificate")]
    Contradictory,
}

impl From<Malformed> for ResponseError {
    fn from(m: Malformed) -> Self {
        ResponseError::Malformed(m.to_string())
    }
}

/// `ResponderID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponderId {
    /// `byName`: the DER of the responder's subject Name.
    ByName(Vec<u8>),
    /// `byKey`: SHA-1 of the responder's subjectPublicKey BIT STRING value.
    ByKey(Vec<u8>),
}

/// `CertID`, as the response carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// `None`: a hash algorithm this crate does not know (it can name no certificate here).
    pub hash: Option<CertIdHash>,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    /// Content octets of the serialNumber INTEGER.
    pub serial: Vec<u8>,
}

/// `CertStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleCertStatus {
    Good,
    /// `time`: revocationTime (Unix seconds); `invalidity_date`: the invalidityDate single
    /// extension (RFC 5280 §5.3.2, carried as a CRL entry extension, RFC 6960 §4.4.5), if any.
    Revoked {
        time: i64,
        reason: Option<CrlReason>,
        invalidity_date: Option<i64>,
    },
    Unknown,
}

/// One `SingleResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleResponse {
    pub cert_id: CertId,
    pub status: SingleCertStatus,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// A parsed `BasicOCSPResponse`, signature not yet checked: read it only through
/// [`OcspResponse::verify`].
#[derive(Debug, Clone)]
pub struct OcspResponse {
    responder: ResponderId,
    produced_at: i64,
    responses: Vec<SingleResponse>,
    nonce: Option<Vec<u8>>,
    certs: Vec<Vec<u8>>,
    /// The whole `ResponseData` TLV (the signed bytes).
    tbs: Vec<u8>,
    signature_algorithm: cps_hsm::SignatureAlgorithm,
    signature: Vec<u8>,
}

/// Who signed a verified response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// The issuer's own key.
    Issuer,
    /// A delegated responder; its certificate (DER).
    Delegated(Vec<u8>),
}

/// A response whose signature was verified for one issuer.
#[derive(Debug, Clone)]
pub struct VerifiedResponse {
    response: OcspResponse,
    issuer: IssuerKeys,
    pub signed_by: SignedBy,
}

/// What identifies an issuer in CertIDs and ResponderIDs.
#[derive(Debug, Clone)]
struct IssuerKeys {
    subject_der: Vec<u8>,
    key_bits: Vec<u8>,
    spki: Vec<u8>,
}

fn malformed(what: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(what.into())
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> ResponseError {
    move |e| ResponseError::Malformed(format!("{what}: {e}"))
}

/// A GeneralizedTime TLV → Unix seconds (`der` enforces `YYYYMMDDHHMMSSZ`).
fn time(raw: &[u8], what: &'static str) -> Result<i64, ResponseError> {
    let t = GeneralizedTime::from_der(raw).map_err(der_err(what))?;
    i64::try_from(t.to_unix_duration().as_secs()).map_err(|_| malformed(what))
}

fn prim(number: u32) -> Tag {
    Tag::ContextSpecific {
        constructed: false,
        number: TagNumber(number),
    }
}

/// id-pkix-ocsp-nocheck
const OCSP_NOCHECK: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
/// id-ce-invalidityDate
const INVALIDITY_DATE: &[u8] = &[0x55, 0x1d, 0x18];
/// id-ce-cRLReasons (a CRL entry extension some responders repeat as a single extension)
const CRL_REASON: &[u8] = &[0x55, 0x1d, 0x15];

/// Parse a DER `OCSPResponse`. The signature is not checked here.
pub fn parse_response(der: &[u8], limits: &ResponseLimits) -> Result<OcspResponse, ResponseError> {
    if der.len() > limits.max_bytes {
        return Err(ResponseError::TooLarge {
            size: der.len(),
            limit: limits.max_bytes,
        });
    }
    let mut top = Cursor::new(der)?;
    let outer = top.expect(Tag::Sequence, "OCSPResponse is not a SEQUENCE")?;
    top.finish("trailing bytes after OCSPResponse")?;
    let mut o = Cursor::new(outer)?;
    let status = o.expect(Tag::Enumerated, "responseStatus")?;
    let code = match status {
        [c] if *c < 0x80 => *c,
        _ => return Err(malformed("responseStatus")),
    };
    let bytes = o.optional(ctx(0), "responseBytes")?;
    o.finish("trailing fields in OCSPResponse")?;
    if code != 0 {
        return Err(ResponseError::NotSuccessful(code));
    }
    let bytes = bytes.ok_or_else(|| malformed("successful response without responseBytes"))?;
    let rb = explicit(bytes, Tag::Sequence, "ResponseBytes")?;
    let mut rb = Cursor::new(rb)?;
    let kind = rb.expect(Tag::ObjectIdentifier, "responseType")?;
    let basic = rb.expect(Tag::OctetString, "response")?;
    rb.finish("trailing fields in ResponseBytes")?;
    if kind != oids::OCSP_BASIC.as_bytes() {
        return Err(ResponseError::NotBasic);
    }
    parse_basic(basic, limits)
}

fn parse_basic(input: &[u8], limits: &ResponseLimits) -> Result<OcspResponse, ResponseError> {
    let mut top = Cursor::new(input)?;
    let basic = top.expect(Tag::Sequence, "BasicOCSPResponse")?;
    top.finish("trailing bytes after BasicOCSPResponse")?;
    let mut b = Cursor::new(basic)?;
    let (tbs_raw, tbs) = b.expect_raw(Tag::Sequence, "tbsResponseData")?;
    let alg = b.expect(Tag::Sequence, "signatureAlgorithm")?;
    let sig = b.expect(Tag::BitString, "signature")?;
    let certs_field = b.optional(ctx(0), "certs")?;
    b.finish("trailing fields in BasicOCSPResponse")?;

    let signature_algorithm = signature_algorithm(alg)?;
    let signature = match sig.split_first() {
        Some((0, rest)) => rest.to_vec(),
        _ => return Err(malformed("signature BIT STRING with unused bits")),
    };
    let mut certs = Vec::new();
    if let Some(c) = certs_field {
        let list = explicit(c, Tag::Sequence, "certs")?;
        let mut l = Cursor::new(list)?;
        while !l.is_empty() {
            let (raw, _) = l.expect_raw(Tag::Sequence, "certs: Certificate")?;
            if certs.len() >= limits.max_certs {
                return Err(malformed("too many certificates"));
            }
            certs.push(raw.to_vec());
        }
    }

    let mut t = Cursor::new(tbs)?;
    if let Some(v) = t.optional(ctx(0), "version")?
        && explicit(v, Tag::Integer, "version")? != [0]
    {
        return Err(malformed("unsupported ResponseData version"));
    }
    let responder = if let Some(n) = t.optional(ctx(1), "responderID byName")? {
        let mut c = Cursor::new(n)?;
        let (raw, _) = c.expect_raw(Tag::Sequence, "responderID byName")?;
        c.finish("responderID byName")?;
        ResponderId::ByName(raw.to_vec())
    } else if let Some(k) = t.optional(ctx(2), "responderID byKey")? {
        let hash = explicit(k, Tag::OctetString, "responderID byKey")?;
        if hash.len() != 20 {
            return Err(malformed("responderID byKey is not a SHA-1 hash"));
        }
        ResponderId::ByKey(hash.to_vec())
    } else {
        return Err(malformed("responderID"));
    };
    let (produced_raw, _) = t.expect_raw(Tag::GeneralizedTime, "producedAt")?;
    let produced_at = time(produced_raw, "producedAt")?;
    let list = t.expect(Tag::Sequence, "responses")?;
    let exts = t.optional(ctx(1), "responseExtensions")?;
    t.finish("trailing fields in ResponseData")?;

    let mut responses = Vec::new();
    let mut l = Cursor::new(list)?;
    while !l.is_empty() {
        if responses.len() >= limits.max_responses {
            return Err(malformed("too many SingleResponses"));
        }
        let s = l.expect(Tag::Sequence, "SingleResponse")?;
        responses.push(parse_single(s)?);
    }
    if responses.is_empty() {
        return Err(malformed("no SingleResponse"));
    }

    let mut nonce = None;
    if let Some(e) = exts {
        let list = explicit(e, Tag::Sequence, "responseExtensions")?;
        parse::for_each_extension(list, |_, oid, critical, value| {
            if oid == oids::NONCE.as_bytes() {
                // RFC 8954: an OCTET STRING inside extnValue; older responders put raw bytes.
                let inner = explicit(value, Tag::OctetString, "nonce").unwrap_or(value);
                nonce = Some(inner.to_vec());
            } else if critical && oid != oids::EXTENDED_REVOKE.as_bytes() {
                return Err(Malformed::new("unsupported critical response extension"));
            }
            Ok(())
        })?;
    }

    Ok(OcspResponse {
        responder,
        produced_at,
        responses,
        nonce,
        certs,
        tbs: tbs_raw.to_vec(),
        signature_algorithm,
        signature,
    })
}

fn parse_single(s: &[u8]) -> Result<SingleResponse, ResponseError> {
    let mut c = Cursor::new(s)?;
    let (id_raw, id) = c.expect_raw(Tag::Sequence, "CertID")?;
    let id = parse::parse_cert_id(id_raw, id)?;
    let (_, tag, value) = c.tlv("certStatus")?;
    let mut status = if tag == prim(0) && value.is_empty() {
        SingleCertStatus::Good
    } else if tag == prim(2) && value.is_empty() {
        SingleCertStatus::Unknown
    } else if tag == ctx(1) {
        let mut r = Cursor::new(value)?;
        let (t_raw, _) = r.expect_raw(Tag::GeneralizedTime, "revocationTime")?;
        let time = time(t_raw, "revocationTime")?;
        let reason = match r.optional(ctx(0), "revocationReason")? {
            Some(v) => Some(reason(explicit(v, Tag::Enumerated, "revocationReason")?)?),
            None => None,
        };
        r.finish("trailing fields in RevokedInfo")?;
        SingleCertStatus::Revoked {
            time,
            reason,
            invalidity_date: None,
        }
    } else {
        return Err(malformed("certStatus"));
    };
    let (tu_raw, _) = c.expect_raw(Tag::GeneralizedTime, "thisUpdate")?;
    let this_update = time(tu_raw, "thisUpdate")?;
    let next_update = match c.optional(ctx(0), "nextUpdate")? {
        Some(v) => {
            let mut n = Cursor::new(v)?;
            let (raw, _) = n.expect_raw(Tag::GeneralizedTime, "nextUpdate")?;
            n.finish("nextUpdate")?;
            Some(time(raw, "nextUpdate")?)
        }
        None => None,
    };
    let exts = c.optional(ctx(1), "singleExtensions")?;
    c.finish("trailing fields in SingleResponse")?;
    if let Some(e) = exts {
        let list = explicit(e, Tag::Sequence, "singleExtensions")?;
        let mut invalidity = None;
        parse::for_each_extension(list, |_, oid, critical, value| {
            if oid == INVALIDITY_DATE {
                let mut v = Cursor::new(value)?;
                let (raw, _) = v.expect_raw(Tag::GeneralizedTime, "invalidityDate")?;
                v.finish("invalidityDate")?;
                invalidity = Some(raw);
            } else if critical && oid != CRL_REASON {
                return Err(Malformed::new("unsupported critical single extension"));
            }
            Ok(())
        })?;
        if let (
            Some(raw),
            SingleCertStatus::Revoked {
                time: t, reason: r, ..
            },
        ) = (invalidity, status)
        {
            status = SingleCertStatus::Revoked {
                time: t,
                reason: r,
                invalidity_date: Some(time(raw, "invalidityDate")?),
            };
        }
    }
    if let Some(n) = next_update
        && n < this_update
    {
        return Err(malformed("nextUpdate before thisUpdate"));
    }
    Ok(SingleResponse {
        cert_id: CertId {
            hash: id.hash,
            issuer_name_hash: id.name_hash.to_vec(),
            issuer_key_hash: id.key_hash.to_vec(),
            serial: id.serial.to_vec(),
        },
        status,
        this_update,
        next_update,
    })
}

fn reason(value: &[u8]) -> Result<CrlReason, ResponseError> {
    match value {
        [c] => CrlReason::from_code(*c).ok_or_else(|| malformed("unknown revocationReason")),
        _ => Err(malformed("revocationReason")),
    }
}

/// The signature algorithms a response may be signed with (those `cps_hsm::verify_signature`
/// checks); parameters must be absent (ECDSA) or NULL (RSA PKCS#1 v1.5).
fn signature_algorithm(alg: &[u8]) -> Result<cps_hsm::SignatureAlgorithm, ResponseError> {
    use cps_hsm::SignatureAlgorithm as S;
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    let mut a = Cursor::new(alg)?;
    let oid = a.expect(Tag::ObjectIdentifier, "signatureAlgorithm.algorithm")?;
    check_oid(oid, "signatureAlgorithm.algorithm")?;
    let null = if a.is_empty() {
        false
    } else {
        let (_, tag, value) = a.tlv("signatureAlgorithm.parameters")?;
        if tag != Tag::Null || !value.is_empty() {
            return Err(ResponseError::UnsupportedAlgorithm);
        }
        true
    };
    a.finish("signatureAlgorithm")?;
    match (oid, null) {
        (ECDSA_SHA256, false) => Ok(S::EcdsaSha256),
        (ECDSA_SHA384, false) => Ok(S::EcdsaSha384),
        (RSA_SHA256, _) => Ok(S::RsaPkcs1Sha256),
        (RSA_SHA384, _) => Ok(S::RsaPkcs1Sha384),
        _ => Err(ResponseError::UnsupportedAlgorithm),
    }
}

impl IssuerKeys {
    fn from_der(der: &[u8]) -> Result<Self, ResponseError> {
        let err = |e: &dyn std::fmt::Display| ResponseError::Issuer(e.to_string());
        let c = x509_cert::Certificate::from_der(der).map_err(|e| err(&e))?;
        let tbs = c.tbs_certificate();
        Ok(IssuerKeys {
            subject_der: tbs.subject().to_der().map_err(|e| err(&e))?,
            key_bits: tbs
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes()
                .to_vec(),
            spki: tbs
                .subject_public_key_info()
                .to_der()
                .map_err(|e| err(&e))?,
        })
    }

    fn named_by(&self, id: &ResponderId) -> bool {
        match id {
            ResponderId::ByName(n) => *n == self.subject_der,
            ResponderId::ByKey(k) => CertIdHash::Sha1.digest(&self.key_bits).as_ref() == k,
        }
    }

    fn matches(&self, id: &CertId) -> bool {
        id.hash.is_some_and(|h| {
            h.digest(&self.subject_der).as_ref() == id.issuer_name_hash
                && h.digest(&self.key_bits).as_ref() == id.issuer_key_hash
        })
    }
}

impl OcspResponse {
    pub fn responder(&self) -> &ResponderId {
        &self.responder
    }

    pub fn produced_at(&self) -> i64 {
        self.produced_at
    }

    /// Check the signature for the certificates of `issuer_der` (the CA certificate, DER): signed
    /// by the issuer itself or by a delegated responder certificate carried in the response
    /// (issued by that CA, id-kp-OCSPSigning, valid at producedAt).
    pub fn verify(self, issuer_der: &[u8]) -> Result<VerifiedResponse, ResponseError> {
        let issuer = IssuerKeys::from_der(issuer_der)?;
        if issuer.named_by(&self.responder) {
            self.check_signature(&issuer.spki)?;
            return Ok(VerifiedResponse {
                response: self,
                issuer,
                signed_by: SignedBy::Issuer,
            });
        }
        // Every certificate the ResponderID names is a candidate: `certs` is outside the signed
        // data, so a certificate put in front of the responder's (same name, or the same key
        // certified by someone else) must not hide it. The first candidate the issuer
        // authorised and whose key verifies the signature is the signer.
        let mut first_error = None;
        for cert_der in &self.certs {
            let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
                continue;
            };
            if !self.names(&cert) {
                continue;
            }
            match self
                .authorised(&cert, cert_der, &issuer)
                .and_then(|spki| self.check_signature(&spki))
            {
                Ok(()) => {
                    let signed_by = SignedBy::Delegated(cert_der.clone());
                    return Ok(VerifiedResponse {
                        response: self,
                        issuer,
                        signed_by,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(ResponseError::UnknownResponder))
    }

    /// Whether the ResponderID names `cert`.
    fn names(&self, cert: &x509_cert::Certificate) -> bool {
        let tbs = cert.tbs_certificate();
        match &self.responder {
            ResponderId::ByName(n) => tbs.subject().to_der().is_ok_and(|s| s == *n),
            ResponderId::ByKey(k) => {
                CertIdHash::Sha1
                    .digest(tbs.subject_public_key_info().subject_public_key.raw_bytes())
                    .as_ref()
                    == k
            }
        }
    }

    /// A delegated responder certificate (RFC 6960 §4.2.2.2): issued by the issuer (name and
    /// signature), id-kp-OCSPSigning, valid at producedAt. Its SPKI.
    fn authorised(
        &self,
        cert: &x509_cert::Certificate,
        cert_der: &[u8],
        issuer: &IssuerKeys,
    ) -> Result<Vec<u8>, ResponseError> {
        let tbs = cert.tbs_certificate();
        let unauthorized = |s: &str| ResponseError::UnauthorizedResponder(s.to_owned());
        if tbs.issuer().to_der().ok().as_deref() != Some(issuer.subject_der.as_slice()) {
            return Err(unauthorized("not issued by this issuer (name)"));
        }
        cps_pki::verify_issued_by(cert_der, &issuer.spki)
            .map_err(|_| unauthorized("not signed by this issuer's key"))?;
        if !crate::has_ocsp_signing_eku(cert) {
            return Err(unauthorized("no extendedKeyUsage id-kp-OCSPSigning"));
        }
        // RFC 6960 §4.2.2.2.1: without id-pkix-ocsp-nocheck the responder's own certificate
        // would need revocation data of its own, which no embedded evidence carries.
        if !cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .any(|e| e.extn_id == OCSP_NOCHECK)
        {
            return Err(unauthorized(
                "no id-pkix-ocsp-nocheck (its own revocation status is unknown)",
            ));
        }
        let v = tbs.validity();
        let secs = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        if self.produced_at < secs(&v.not_before) || self.produced_at > secs(&v.not_after) {
            return Err(unauthorized("not valid when the response was produced"));
        }
        tbs.subject_public_key_info()
            .to_der()
            .map_err(der_err("responder certificate"))
    }

    fn check_signature(&self, spki: &[u8]) -> Result<(), ResponseError> {
        cps_hsm::verify_signature(
            spki,
            self.signature_algorithm,
            &self.tbs,
            &self.signature,
            cps_hsm::SigFormat::Der,
        )
        .map_err(|_| ResponseError::BadSignature)
    }
}

impl VerifiedResponse {
    pub fn produced_at(&self) -> i64 {
        self.response.produced_at
    }

    /// The nonce of responseExtensions (the OCTET STRING's content).
    pub fn nonce(&self) -> Option<&[u8]> {
        self.response.nonce.as_deref()
    }

    /// Every SingleResponse, as signed.
    pub fn responses(&self) -> &[SingleResponse] {
        &self.response.responses
    }

    /// The SingleResponse about `cert_der`, which must name this response's issuer. Several
    /// SingleResponses for it (e.g. a SHA-1 and a SHA-256 CertID) must agree on the status; the
    /// one with the latest thisUpdate is returned.
    pub fn status_of(&self, cert_der: &[u8]) -> Result<&SingleResponse, ResponseError> {
        let cert = x509_cert::Certificate::from_der(cert_der)
            .map_err(|e| ResponseError::Certificate(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        if tbs.issuer().to_der().ok().as_deref() != Some(self.issuer.subject_der.as_slice()) {
            return Err(ResponseError::Certificate(
                "not issued by the issuer this response was verified for".into(),
            ));
        }
        let serial = tbs.serial_number().as_bytes();
        let mut found: Option<&SingleResponse> = None;
        for s in &self.response.responses {
            if s.cert_id.serial != serial || !self.issuer.matches(&s.cert_id) {
                continue;
            }
            match found {
                Some(f) if f.status != s.status => return Err(ResponseError::Contradictory),
                Some(f) if f.this_update >= s.this_update => {}
                _ => found = Some(s),
            }
        }
        found.ok_or(ResponseError::NotForCertificate)
    }
}
