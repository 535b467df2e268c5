//! Verification of a `TimeStampToken` and parsing of a `TimeStampResp`.
//!
//! [`verify_token`] checks, in order: the CMS structure (`ContentInfo` → `SignedData` v3 with
//! eContentType id-ct-TSTInfo and one `SignerInfo`), the signed attributes (content-type
//! id-ct-TSTInfo, message-digest over the encapsulated TSTInfo, signing-certificate-v2 or
//! signing-certificate naming the signer certificate by hash and, when present, by issuer and
//! serial), the signature with the signer certificate the token carries, and that certificate's
//! extended key usage (timeStamping only, critical: RFC 3161 §2.3). The chain of the TSA
//! certificate is the caller's to validate.

use der::{Decode, Encode};

use crate::asn1::{self, DerError, Reader, Tlv};
use crate::{FailInfo, HashAlg, oids};

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampToken {
    /// genTime, unix seconds (a fraction, if any, is dropped).
    pub gen_time: i64,
    pub hash: HashAlg,
    pub imprint: Vec<u8>,
    /// Content octets of the serialNumber INTEGER.
    pub serial: Vec<u8>,
    /// Dotted policy OID.
    pub policy: String,
    /// Content octets of the nonce INTEGER.
    pub nonce: Option<Vec<u8>>,
    /// The certificate that signed the token, DER.
    pub signer_certificate: Vec<u8>,
    /// Every certificate the token carries (the signer's included), DER, in token order.
    pub certificates: Vec<Vec<u8>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed {what}: {err}")]
    Malformed { what: &'static str, err: String },
    #[error("not a CMS SignedData")]
    NotSignedData,
    #[error("the encapsulated content is not a TSTInfo")]
    NotTstInfo,
    #[error("unsupported version of {0}")]
    Version(&'static str),
    #[error("expected exactly one SignerInfo, found {0}")]
    SignerCount(usize),
    #[error("signed attributes missing")]
    NoSignedAttributes,
    #[error("signed attribute {0} missing, repeated or with several values")]
    Attribute(&'static str),
    #[error("the content-type attribute is not id-ct-TSTInfo")]
    ContentTypeMismatch,
    #[error("the message-digest attribute does not match the TSTInfo")]
    MessageDigestMismatch,
    #[error("the token does not carry the signer's certificate")]
    SignerCertificateMissing,
    #[error("the signing-certificate attribute does not name the signer's certificate")]
    SigningCertificateMismatch,
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("signer certificate: {0}")]
    Certificate(String),
    #[error("the TSTInfo names another TSA than the signer certificate's subject")]
    TsaNameMismatch,
    #[error("the signer certificate is not a TSA certificate: {0}")]
    NotTsaCertificate(&'static str),
}

fn malformed(what: &'static str) -> impl Fn(DerError) -> TokenError {
    move |e| TokenError::Malformed {
        what,
        err: e.to_string(),
    }
}

/// The parts of a TSA certificate the authority and the verifier need.
pub(crate) struct CertInfo {
    /// `Name` TLVs.
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    /// Content octets of the serial INTEGER.
    pub serial: Vec<u8>,
    pub spki: Vec<u8>,
    pub subject_key_id: Option<Vec<u8>>,
}

fn certificate_info(cert: &[u8]) -> Result<(CertInfo, x509_cert::Certificate), TokenError> {
    let c = x509_cert::Certificate::from_der(cert)
        .map_err(|e| TokenError::Certificate(e.to_string()))?;
    let tbs = c.tbs_certificate();
    let enc = |r: der::Result<Vec<u8>>| r.map_err(|e| TokenError::Certificate(e.to_string()));
    let mut subject_key_id = None;
    for e in tbs.extensions().into_iter().flatten() {
        if e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER {
            subject_key_id = der::asn1::OctetString::from_der(e.extn_value.as_bytes())
                .ok()
                .map(|o| o.as_bytes().to_vec());
        }
    }
    Ok((
        CertInfo {
            issuer: enc(tbs.issuer().to_der())?,
            subject: enc(tbs.subject().to_der())?,
            serial: tbs.serial_number().as_bytes().to_vec(),
            spki: enc(tbs.subject_public_key_info().to_der())?,
            subject_key_id,
        },
        c,
    ))
}

/// A TSA certificate: EKU present, critical, and timeStamping its only purpose.
pub(crate) fn tsa_certificate(cert: &[u8]) -> Result<CertInfo, TokenError> {
    let (info, c) = certificate_info(cert)?;
    let eku = c
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == oids::EXT_KEY_USAGE)
        .ok_or(TokenError::NotTsaCertificate("no extended key usage"))?;
    if !eku.critical {
        return Err(TokenError::NotTsaCertificate(
            "extended key usage not critical",
        ));
    }
    let purposes = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| TokenError::Certificate(e.to_string()))?;
    if purposes.0 != [oids::TIME_STAMPING] {
        return Err(TokenError::NotTsaCertificate(
            "extended key usage other than timeStamping only",
        ));
    }
    Ok(info)
}

/// Verify a `TimeStampToken` (DER `ContentInfo`).
pub fn verify_token(token_der: &[u8]) -> Result<TimestampToken, TokenError> {
    let ci = asn1::single(token_der, asn1::SEQUENCE).map_err(malformed("ContentInfo"))?;
    let mut r = Reader::new(ci.value);
    let ct = r.expect(asn1::OID).map_err(malformed("ContentInfo"))?;
    if ct.value != oids::SIGNED_DATA.as_bytes() {
        return Err(TokenError::NotSignedData);
    }
    let content = r
        .expect(asn1::ctx_cons(0))
        .map_err(malformed("ContentInfo"))?;
    r.finish().map_err(malformed("ContentInfo"))?;
    let sd = asn1::single(content.value, asn1::SEQUENCE).map_err(malformed("SignedData"))?;
    let mut r = Reader::new(sd.value);
    if r.integer().map_err(malformed("SignedData version"))? != [3] {
        return Err(TokenError::Version("SignedData"));
    }
    r.expect(asn1::SET).map_err(malformed("digestAlgorithms"))?;
    let encap = r
        .expect(asn1::SEQUENCE)
        .map_err(malformed("encapContentInfo"))?;
    let certs = r
        .optional(asn1::ctx_cons(0))
        .map_err(malformed("certificates"))?;
    r.optional(asn1::ctx_cons(1)).map_err(malformed("crls"))?;
    let signer_infos = r.expect(asn1::SET).map_err(malformed("signerInfos"))?;
    r.finish().map_err(malformed("SignedData"))?;

    // The encapsulated TSTInfo.
    let mut e = Reader::new(encap.value);
    let ect = e.expect(asn1::OID).map_err(malformed("encapContentInfo"))?;
    if ect.value != oids::TST_INFO.as_bytes() {
        return Err(TokenError::NotTstInfo);
    }
    let econtent = e.expect(asn1::ctx_cons(0)).map_err(malformed("eContent"))?;
    e.finish().map_err(malformed("encapContentInfo"))?;
    let tst_info = asn1::single(econtent.value, asn1::OCTET_STRING)
        .map_err(malformed("eContent"))?
        .value;

    // The certificates (other choices than Certificate are skipped).
    let mut certificates = Vec::new();
    if let Some(c) = certs {
        let mut cr = Reader::new(c.value);
        while !cr.is_empty() {
            let t = cr.any().map_err(malformed("certificates"))?;
            if t.tag == asn1::SEQUENCE {
                certificates.push(t.raw.to_vec());
            }
        }
    }

    // The one SignerInfo.
    let mut sr = Reader::new(signer_infos.value);
    let mut infos = Vec::new();
    while !sr.is_empty() {
        infos.push(sr.expect(asn1::SEQUENCE).map_err(malformed("SignerInfo"))?);
    }
    if infos.len() != 1 {
        return Err(TokenError::SignerCount(infos.len()));
    }
    let mut si = Reader::new(infos[0].value);
    let version = si.integer().map_err(malformed("SignerInfo version"))?;
    let sid = si.any().map_err(malformed("sid"))?;
    match (version, sid.tag) {
        ([1], asn1::SEQUENCE) | ([3], 0x80) => {}
        _ => return Err(TokenError::Version("SignerInfo")),
    }
    let digest_alg = si
        .expect(asn1::SEQUENCE)
        .map_err(malformed("digestAlgorithm"))?;
    let signed_attrs = si
        .optional(asn1::ctx_cons(0))
        .map_err(malformed("signedAttrs"))?
        .ok_or(TokenError::NoSignedAttributes)?;
    let sig_alg = si
        .expect(asn1::SEQUENCE)
        .map_err(malformed("signatureAlgorithm"))?;
    let signature = si
        .expect(asn1::OCTET_STRING)
        .map_err(malformed("signature"))?
        .value;
    si.optional(asn1::ctx_cons(1))
        .map_err(malformed("unsignedAttrs"))?;
    si.finish().map_err(malformed("SignerInfo"))?;

    let digest = algorithm_hash(digest_alg.value)?;

    // Find the signer's certificate.
    let mut signer = None;
    for c in &certificates {
        let (info, _) = certificate_info(c)?;
        let matches = if sid.tag == asn1::SEQUENCE {
            let mut ir = Reader::new(sid.value);
            let issuer = ir.expect(asn1::SEQUENCE).map_err(malformed("sid"))?;
            let serial = ir.integer().map_err(malformed("sid"))?;
            ir.finish().map_err(malformed("sid"))?;
            issuer.raw == info.issuer.as_slice() && serial == info.serial.as_slice()
        } else {
            info.subject_key_id.as_deref() == Some(sid.value)
        };
        if matches {
            signer = Some((c.clone(), info));
            break;
        }
    }
    let (signer_cert, signer_info) = signer.ok_or(TokenError::SignerCertificateMissing)?;

    // Signed attributes.
    let attrs = attributes(signed_attrs.value)?;
    let one =
        |oid: &const_oid::ObjectIdentifier, name: &'static str| -> Result<&[u8], TokenError> {
            let found: Vec<_> = attrs.iter().filter(|(o, _)| *o == oid.as_bytes()).collect();
            match found.as_slice() {
                [(_, values)] if values.len() == 1 => Ok(values[0].raw),
                _ => Err(TokenError::Attribute(name)),
            }
        };
    let ct = one(&oids::CONTENT_TYPE, "content-type")?;
    if ct != oids::der(&oids::TST_INFO).as_slice() {
        return Err(TokenError::ContentTypeMismatch);
    }
    let md = asn1::single(
        one(&oids::MESSAGE_DIGEST, "message-digest")?,
        asn1::OCTET_STRING,
    )
    .map_err(malformed("message-digest"))?;
    if md.value != digest.digest(tst_info).as_slice() {
        return Err(TokenError::MessageDigestMismatch);
    }
    let v2 = attrs
        .iter()
        .any(|(o, _)| *o == oids::SIGNING_CERTIFICATE_V2.as_bytes());
    if v2 {
        let v = one(&oids::SIGNING_CERTIFICATE_V2, "signing-certificate-v2")?;
        check_ess(v, true, &signer_cert, &signer_info)?;
    } else {
        let v = one(&oids::SIGNING_CERTIFICATE, "signing-certificate")?;
        check_ess(v, false, &signer_cert, &signer_info)?;
    }

    // The signature, over the DER SET OF the signed attributes.
    let mut message = signed_attrs.raw.to_vec();
    message[0] = asn1::SET;
    verify_signature(
        &signer_info.spki,
        sig_alg.value,
        digest,
        &message,
        signature,
    )?;

    tsa_certificate(&signer_cert)?;

    let (mut token, tsa_name) = tst_info_fields(tst_info)?;
    // RFC 3161 §2.4.2: a TSA name, when present, is one of the signer certificate's names.
    if let Some(name) = tsa_name {
        let general_name = asn1::single(name, asn1::ctx_cons(4)).ok();
        if general_name.map(|n| n.value) != Some(signer_info.subject.as_slice()) {
            return Err(TokenError::TsaNameMismatch);
        }
    }
    token.signer_certificate = signer_cert;
    token.certificates = certificates;
    Ok(token)
}

type Attributes<'a> = Vec<(&'a [u8], Vec<Tlv<'a>>)>;

fn attributes(value: &[u8]) -> Result<Attributes<'_>, TokenError> {
    let mut r = Reader::new(value);
    let mut out = Vec::new();
    while !r.is_empty() {
        let a = r.expect(asn1::SEQUENCE).map_err(malformed("Attribute"))?;
        let mut ar = Reader::new(a.value);
        let oid = ar.expect(asn1::OID).map_err(malformed("Attribute"))?.value;
        let set = ar.expect(asn1::SET).map_err(malformed("Attribute"))?;
        ar.finish().map_err(malformed("Attribute"))?;
        let mut vr = Reader::new(set.value);
        let mut values = Vec::new();
        while !vr.is_empty() {
            values.push(vr.any().map_err(malformed("AttributeValue"))?);
        }
        out.push((oid, values));
    }
    Ok(out)
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies ... OPTIONAL }`
/// (or `SigningCertificate` with `ESSCertID`, SHA-1): the first entry names the signer.
fn check_ess(
    value: &[u8],
    v2: bool,
    cert: &[u8],
    info: &crate::verify::CertInfo,
) -> Result<(), TokenError> {
    let what = "signing-certificate";
    let sc = asn1::single(value, asn1::SEQUENCE).map_err(malformed(what))?;
    let mut r = Reader::new(sc.value);
    let certs = r.expect(asn1::SEQUENCE).map_err(malformed(what))?;
    let mut cr = Reader::new(certs.value);
    let first = cr.expect(asn1::SEQUENCE).map_err(malformed(what))?;
    let mut er = Reader::new(first.value);
    let hash = if v2 {
        match er.optional(asn1::SEQUENCE).map_err(malformed(what))? {
            Some(alg) => algorithm_hash(alg.value)?,
            None => HashAlg::Sha256,
        }
    } else {
        HashAlg::Sha1
    };
    let cert_hash = er.expect(asn1::OCTET_STRING).map_err(malformed(what))?;
    if cert_hash.value != hash.digest(cert).as_slice() {
        return Err(TokenError::SigningCertificateMismatch);
    }
    if let Some(is) = er.optional(asn1::SEQUENCE).map_err(malformed(what))? {
        let mut ir = Reader::new(is.value);
        let names = ir.expect(asn1::SEQUENCE).map_err(malformed(what))?;
        let serial = ir.integer().map_err(malformed(what))?;
        ir.finish().map_err(malformed(what))?;
        let mut nr = Reader::new(names.value);
        let mut issuer_named = false;
        while !nr.is_empty() {
            let n = nr.any().map_err(malformed(what))?;
            if n.tag == asn1::ctx_cons(4) && n.value == info.issuer.as_slice() {
                issuer_named = true;
            }
        }
        if !issuer_named || serial != info.serial.as_slice() {
            return Err(TokenError::SigningCertificateMismatch);
        }
    }
    er.finish().map_err(malformed(what))?;
    Ok(())
}

/// The hash of an `AlgorithmIdentifier` content (parameters absent or NULL).
fn algorithm_hash(value: &[u8]) -> Result<HashAlg, TokenError> {
    let mut r = Reader::new(value);
    let oid = r
        .expect(asn1::OID)
        .map_err(malformed("AlgorithmIdentifier"))?;
    if let Some(p) = r
        .optional(asn1::NULL)
        .map_err(malformed("AlgorithmIdentifier"))?
        && !p.value.is_empty()
    {
        return Err(malformed("AlgorithmIdentifier")(DerError::Truncated));
    }
    r.finish().map_err(malformed("AlgorithmIdentifier"))?;
    HashAlg::from_oid_bytes(oid.value).ok_or_else(|| {
        TokenError::UnsupportedAlgorithm(
            const_oid::ObjectIdentifier::from_bytes(oid.value)
                .map(|o| o.to_string())
                .unwrap_or_else(|_| "(invalid OID)".into()),
        )
    })
}

fn verify_signature(
    spki: &[u8],
    sig_alg: &[u8],
    digest: HashAlg,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    use ring::signature as rs;
    let unsupported = |s: &str| TokenError::UnsupportedAlgorithm(s.to_string());
    let s = asn1::single(spki, asn1::SEQUENCE).map_err(malformed("SubjectPublicKeyInfo"))?;
    let mut r = Reader::new(s.value);
    let key_alg = r
        .expect(asn1::SEQUENCE)
        .map_err(malformed("SubjectPublicKeyInfo"))?;
    let bits = r
        .expect(asn1::BIT_STRING)
        .map_err(malformed("SubjectPublicKeyInfo"))?;
    let key = match bits.value {
        [0, key @ ..] => key,
        _ => return Err(malformed("SubjectPublicKeyInfo")(DerError::Truncated)),
    };
    let mut kr = Reader::new(key_alg.value);
    let key_oid = kr
        .expect(asn1::OID)
        .map_err(malformed("SubjectPublicKeyInfo"))?
        .value;
    let curve = kr.optional(asn1::OID).ok().flatten().map(|t| t.value);
    let mut ar = Reader::new(sig_alg);
    let sig_oid = ar
        .expect(asn1::OID)
        .map_err(malformed("signatureAlgorithm"))?
        .value;
    let is = |o: &const_oid::ObjectIdentifier| sig_oid == o.as_bytes();
    let alg: &dyn rs::VerificationAlgorithm = if key_oid == oids::RSA_ENCRYPTION.as_bytes() {
        let h = if is(&oids::RSA_ENCRYPTION) {
            digest
        } else if is(&oids::SHA256_WITH_RSA) {
            HashAlg::Sha256
        } else if is(&oids::SHA384_WITH_RSA) {
            HashAlg::Sha384
        } else if is(&oids::SHA512_WITH_RSA) {
            HashAlg::Sha512
        } else {
            return Err(unsupported("RSA signature algorithm"));
        };
        match h {
            HashAlg::Sha256 => &rs::RSA_PKCS1_2048_8192_SHA256,
            HashAlg::Sha384 => &rs::RSA_PKCS1_2048_8192_SHA384,
            HashAlg::Sha512 => &rs::RSA_PKCS1_2048_8192_SHA512,
            HashAlg::Sha1 => return Err(unsupported("RSA with SHA-1")),
        }
    } else if key_oid == oids::EC_PUBLIC_KEY.as_bytes() {
        let p256 = curve == Some(oids::P256.as_bytes());
        let p384 = curve == Some(oids::P384.as_bytes());
        match (
            p256,
            p384,
            is(&oids::ECDSA_WITH_SHA256),
            is(&oids::ECDSA_WITH_SHA384),
        ) {
            (true, _, true, _) => &rs::ECDSA_P256_SHA256_ASN1,
            (true, _, _, true) => &rs::ECDSA_P256_SHA384_ASN1,
            (_, true, true, _) => &rs::ECDSA_P384_SHA256_ASN1,
            (_, true, _, true) => &rs::ECDSA_P384_SHA384_ASN1,
            _ => return Err(unsupported("EC curve or ECDSA hash")),
        }
    } else {
        return Err(unsupported("public key algorithm"));
    };
    rs::UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .map_err(|_| TokenError::BadSignature)
}

/// The fields of a TSTInfo, and the content of its `tsa [0]` element if present.
fn tst_info_fields(der: &[u8]) -> Result<(TimestampToken, Option<&[u8]>), TokenError> {
    let m = malformed("TSTInfo");
    let t = asn1::single(der, asn1::SEQUENCE).map_err(&m)?;
    let mut r = Reader::new(t.value);
    if r.integer().map_err(&m)? != [1] {
        return Err(TokenError::Version("TSTInfo"));
    }
    let policy = r.expect(asn1::OID).map_err(&m)?.value;
    let policy = const_oid::ObjectIdentifier::from_bytes(policy)
        .map_err(|e| TokenError::Malformed {
            what: "TSTInfo policy",
            err: e.to_string(),
        })?
        .to_string();
    let mi = r.expect(asn1::SEQUENCE).map_err(&m)?;
    let mut mr = Reader::new(mi.value);
    let alg = mr.expect(asn1::SEQUENCE).map_err(&m)?;
    let hash = algorithm_hash(alg.value)?;
    let imprint = mr.expect(asn1::OCTET_STRING).map_err(&m)?.value.to_vec();
    mr.finish().map_err(&m)?;
    if imprint.len() != hash.output_len() {
        return Err(TokenError::Malformed {
            what: "TSTInfo messageImprint",
            err: "length does not match the hash".into(),
        });
    }
    let serial = r.integer().map_err(&m)?.to_vec();
    let gt = r.expect(asn1::GENERALIZED_TIME).map_err(&m)?;
    let gen_time = asn1::parse_generalized_time(gt.value).ok_or(TokenError::Malformed {
        what: "TSTInfo genTime",
        err: "not a DER GeneralizedTime".into(),
    })?;
    r.optional(asn1::SEQUENCE).map_err(&m)?; // accuracy
    if let Some(o) = r.optional(asn1::BOOLEAN).map_err(&m)?
        && o.value != [0xff]
    {
        return Err(m(DerError::BadBoolean));
    }
    let nonce = match r.optional(asn1::INTEGER).map_err(&m)? {
        Some(n) => {
            asn1::check_integer(n.value).map_err(&m)?;
            Some(n.value.to_vec())
        }
        None => None,
    };
    let tsa = r.optional(asn1::ctx_cons(0)).map_err(&m)?.map(|t| t.value);
    r.optional(asn1::ctx_cons(1)).map_err(&m)?; // extensions
    r.finish().map_err(&m)?;
    let token = TimestampToken {
        gen_time,
        hash,
        imprint,
        serial,
        policy,
        nonce,
        signer_certificate: Vec::new(),
        certificates: Vec::new(),
    };
    Ok((token, tsa))
}

/// A parsed `TimeStampResp` (the token, if any, is not verified here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    /// PKIStatus: 0 granted, 1 grantedWithMods, 2 rejection, 3 waiting, 4/5 revocation.
    pub status: u8,
    pub status_text: Option<String>,
    pub fail_info: Vec<FailInfo>,
    pub token: Option<Vec<u8>>,
}

/// Parse a DER `TimeStampResp`.
pub fn parse_response(der: &[u8]) -> Result<ParsedResponse, TokenError> {
    let m = malformed("TimeStampResp");
    let resp = asn1::single(der, asn1::SEQUENCE).map_err(&m)?;
    let mut r = Reader::new(resp.value);
    let info = r.expect(asn1::SEQUENCE).map_err(&m)?;
    let token = r
        .optional(asn1::SEQUENCE)
        .map_err(&m)?
        .map(|t| t.raw.to_vec());
    r.finish().map_err(&m)?;
    let mut ir = Reader::new(info.value);
    let status = match ir.integer().map_err(&m)? {
        [s] if *s <= 5 => *s,
        _ => return Err(m(DerError::BadInteger)),
    };
    let status_text = match ir.optional(asn1::SEQUENCE).map_err(&m)? {
        Some(t) => {
            let mut tr = Reader::new(t.value);
            let mut text = Vec::new();
            while !tr.is_empty() {
                let s = tr.expect(asn1::UTF8_STRING).map_err(&m)?;
                text.push(String::from_utf8_lossy(s.value).into_owned());
            }
            Some(text.join("\n"))
        }
        None => None,
    };
    let mut fail_info = Vec::new();
    if let Some(b) = ir.optional(asn1::BIT_STRING).map_err(&m)? {
        let (unused, bytes) = b.value.split_first().ok_or(m(DerError::Truncated))?;
        if *unused > 7 {
            return Err(m(DerError::BadInteger));
        }
        for (i, byte) in bytes.iter().enumerate() {
            for j in 0..8u8 {
                if byte & (0x80 >> j) != 0
                    && let Ok(bit) = u8::try_from(i * 8 + usize::from(j))
                    && let Some(f) = FailInfo::from_bit(bit)
                {
                    fail_info.push(f);
                }
            }
        }
    }
    ir.finish().map_err(&m)?;
    Ok(ParsedResponse {
        status,
        status_text,
        fail_info,
        token,
    })
}
