//! What the signature needs from X.509 certificates.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The parts of a certificate used here.
pub(crate) struct CertInfo {
    /// Subject DN (RFC 4514 form, as `x509-parser` writes it).
    pub subject: String,
    /// DER `SubjectPublicKeyInfo`.
    pub spki: Vec<u8>,
    /// DER `IssuerSerial ::= SEQUENCE { GeneralNames { directoryName }, serial }`, the content
    /// of `IssuerSerialV2`.
    pub issuer_serial: Vec<u8>,
}

pub(crate) fn info(der: &[u8]) -> Result<CertInfo, String> {
    let (rest, c) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let tbs = &c.tbs_certificate;
    let issuer = tbs.issuer.as_raw();
    let serial = tbs.raw_serial();
    let names = tlv(0x30, &tlv(0xa4, issuer));
    let mut body = names;
    body.extend_from_slice(&tlv(0x02, serial));
    Ok(CertInfo {
        subject: c.subject().to_string(),
        spki: tbs.subject_pki.raw.to_vec(),
        issuer_serial: tlv(0x30, &body),
    })
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}
