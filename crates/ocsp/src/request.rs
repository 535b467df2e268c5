//! Building an `OCSPRequest` (RFC 6960 §4.1.1) for one certificate: what a client of the
//! responder sends, and what the appliance asks its own responder when it gathers the revocation
//! values of a long-term signature.
//!
//! ```text
//! OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest }
//! TBSRequest  ::= SEQUENCE { requestList SEQUENCE OF Request }
//! Request     ::= SEQUENCE { reqCert CertID }
//! CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
//!                            issuerKeyHash OCTET STRING, serialNumber CertificateSerialNumber }
//! ```
//!
//! The CertID uses SHA-256 (the responder answers SHA-1 and SHA-256 CertIDs alike).

use der::asn1::{Null, OctetString};
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::oids;

/// Why a request could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the issuer certificate does not parse: {0}")]
    Issuer(String),
    #[error("the serial number is empty or longer than 20 bytes")]
    Serial,
    #[error("encoding: {0}")]
    Encode(String),
}

/// The DER `OCSPRequest` asking the status of the certificate `serial` (big-endian, as in the
/// certificate) issued by `issuer_der`. No nonce: the appliance's answers may come from its cache.
pub fn request_for(issuer_der: &[u8], serial: &[u8]) -> Result<Vec<u8>, RequestError> {
    build(issuer_der, serial, None)
}

/// The same request with a nonce extension (RFC 8954): the responder signs a fresh answer
/// (`thisUpdate` now) instead of serving a pre-signed one, and echoes the nonce.
pub fn request_with_nonce(
    issuer_der: &[u8],
    serial: &[u8],
    nonce: &[u8],
) -> Result<Vec<u8>, RequestError> {
    if nonce.is_empty() || nonce.len() > 32 {
        return Err(RequestError::Encode("a nonce is 1 to 32 bytes".into()));
    }
    build(issuer_der, serial, Some(nonce))
}

fn build(issuer_der: &[u8], serial: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, RequestError> {
    let issuer =
        Certificate::from_der(issuer_der).map_err(|e| RequestError::Issuer(e.to_string()))?;
    let serial = strip_leading_zeros(serial);
    if serial.is_empty() || serial.len() > 20 {
        return Err(RequestError::Serial);
    }
    let enc = |e: der::Error| RequestError::Encode(e.to_string());
    let name_der = issuer.tbs_certificate().subject().to_der().map_err(enc)?;
    let key = issuer
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    let sha256 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    let alg = seq(&[
        &oids::SHA256.to_der().map_err(enc)?,
        &Null.to_der().map_err(enc)?,
    ]);
    let name_hash = OctetString::new(sha256(&name_der))
        .map_err(enc)?
        .to_der()
        .map_err(enc)?;
    let key_hash = OctetString::new(sha256(key))
        .map_err(enc)?
        .to_der()
        .map_err(enc)?;
    // A positive INTEGER: a leading zero byte when the high bit is set.
    let mut int = Vec::with_capacity(serial.len() + 1);
    if serial[0] & 0x80 != 0 {
        int.push(0);
    }
    int.extend_from_slice(serial);
    let serial = tlv(0x02, &int);
    let cert_id = seq(&[&alg, &name_hash, &key_hash, &serial]);
    let request = seq(&[&cert_id]);
    let request_list = seq(&[&request]);
    let tbs = match nonce {
        None => seq(&[&request_list]),
        Some(n) => {
            // requestExtensions [2] EXPLICIT Extensions { Extension { id-pkix-ocsp-nonce,
            // extnValue OCTET STRING { OCTET STRING nonce } } }
            let value = tlv(0x04, &tlv(0x04, n));
            let ext = seq(&[&oids::NONCE.to_der().map_err(enc)?, &value]);
            let exts = tlv(0xA2, &seq(&[&ext]));
            seq(&[&request_list, &exts])
        }
    };
    Ok(seq(&[&tbs]))
}

fn strip_leading_zeros(mut s: &[u8]) -> &[u8] {
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    s
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(value);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}
