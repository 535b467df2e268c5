//! Extension sets of the certificates of the CA hierarchy itself: root, issuing CAs and their
//! delegated OCSP signers. (End-entity profiles are data files under `certs/`.)

use x509_cert::ext::Extension;

use crate::PkiError;
use crate::ext::{self, DottedOid, Usage};

/// Where relying parties find the issuer's certificate, CRL and OCSP responder.
#[derive(Debug, Clone, Default)]
pub struct PublicationPoints {
    pub crl: Vec<String>,
    pub ca_issuers: Vec<String>,
    pub ocsp: Vec<String>,
}

/// Self-signed root: basicConstraints cA (critical), keyUsage keyCertSign + cRLSign (critical), SKI.
pub fn root_ca(spki_der: &[u8], path_len: Option<u8>) -> Result<Vec<Extension>, PkiError> {
    let kid = ext::key_identifier(spki_der)?;
    Ok(vec![
        ext::basic_constraints(true, path_len)?,
        ext::key_usage(&[Usage::KeyCertSign, Usage::CrlSign])?,
        ext::subject_key_identifier(&kid)?,
    ])
}

/// Issuing CA under the root: basicConstraints cA pathLen 0, keyUsage keyCertSign + cRLSign,
/// SKI, AKI, certificatePolicies, CRL distribution point and caIssuers of the root.
pub fn issuing_ca(
    spki_der: &[u8],
    issuer_key_id: &[u8],
    policies: &[DottedOid],
    issuer_points: &PublicationPoints,
) -> Result<Vec<Extension>, PkiError> {
    let kid = ext::key_identifier(spki_der)?;
    let mut v = vec![
        ext::basic_constraints(true, Some(0))?,
        ext::key_usage(&[Usage::KeyCertSign, Usage::CrlSign])?,
        ext::subject_key_identifier(&kid)?,
        ext::authority_key_identifier(issuer_key_id)?,
    ];
    if !policies.is_empty() {
        v.push(ext::certificate_policies(policies)?);
    }
    if !issuer_points.crl.is_empty() {
        v.push(ext::crl_distribution_points(&issuer_points.crl)?);
    }
    if !issuer_points.ca_issuers.is_empty() || !issuer_points.ocsp.is_empty() {
        v.push(ext::authority_info_access(
            &issuer_points.ocsp,
            &issuer_points.ca_issuers,
        )?);
    }
    Ok(v)
}

/// Delegated OCSP signer (RFC 6960 §4.2.2.2): keyUsage digitalSignature, extendedKeyUsage
/// id-kp-OCSPSigning, id-pkix-ocsp-nocheck, SKI, AKI.
pub fn ocsp_signer(
    spki_der: &[u8],
    issuer_key_id: &[u8],
    policies: &[DottedOid],
    issuer_points: &PublicationPoints,
) -> Result<Vec<Extension>, PkiError> {
    let kid = ext::key_identifier(spki_der)?;
    let mut v = vec![
        ext::key_usage(&[Usage::DigitalSignature])?,
        ext::extended_key_usage(&[ext::ID_KP_OCSP_SIGNING], false)?,
        ext::ocsp_nocheck()?,
        ext::subject_key_identifier(&kid)?,
        ext::authority_key_identifier(issuer_key_id)?,
    ];
    if !policies.is_empty() {
        v.push(ext::certificate_policies(policies)?);
    }
    if !issuer_points.ca_issuers.is_empty() {
        v.push(ext::authority_info_access(&[], &issuer_points.ca_issuers)?);
    }
    Ok(v)
}

/// The appliance's own TLS server certificate: keyUsage digitalSignature, serverAuth, SAN,
/// SKI, AKI, CRL DP and AIA of its CA.
pub fn tls_server(
    spki_der: &[u8],
    issuer_key_id: &[u8],
    dns: &[String],
    ips: &[std::net::IpAddr],
    issuer_points: &PublicationPoints,
) -> Result<Vec<Extension>, PkiError> {
    end_entity(
        spki_der,
        issuer_key_id,
        ext::ID_KP_SERVER_AUTH,
        issuer_points,
        Some(ext::subject_alt_name(dns, ips)?),
    )
}

/// An operator's TLS client certificate (mutual TLS to the API and console).
pub fn operator_client(
    spki_der: &[u8],
    issuer_key_id: &[u8],
    issuer_points: &PublicationPoints,
) -> Result<Vec<Extension>, PkiError> {
    end_entity(
        spki_der,
        issuer_key_id,
        ext::ID_KP_CLIENT_AUTH,
        issuer_points,
        None,
    )
}

fn end_entity(
    spki_der: &[u8],
    issuer_key_id: &[u8],
    purpose: const_oid::ObjectIdentifier,
    issuer_points: &PublicationPoints,
    san: Option<Extension>,
) -> Result<Vec<Extension>, PkiError> {
    let kid = ext::key_identifier(spki_der)?;
    let mut v = vec![
        ext::key_usage(&[Usage::DigitalSignature])?,
        ext::extended_key_usage(&[purpose], false)?,
        ext::subject_key_identifier(&kid)?,
        ext::authority_key_identifier(issuer_key_id)?,
    ];
    if !issuer_points.crl.is_empty() {
        v.push(ext::crl_distribution_points(&issuer_points.crl)?);
    }
    if !issuer_points.ocsp.is_empty() || !issuer_points.ca_issuers.is_empty() {
        v.push(ext::authority_info_access(
            &issuer_points.ocsp,
            &issuer_points.ca_issuers,
        )?);
    }
    if let Some(s) = san {
        v.push(s);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CertificateParams, DistinguishedName, Issuer, issue_certificate, parse_certificate,
        serial_from_random, verify_issued_by,
    };
    use cps_hsm::{KeyAlgorithm, SignatureAlgorithm, Signer, SoftwareSigner};

    #[test]
    fn root_issuing_and_ocsp_chain_verifies() {
        let now = 1_800_000_000;
        let root_key = SoftwareSigner::generate("root", KeyAlgorithm::EcP384).unwrap();
        let ca_key = SoftwareSigner::generate("ca", KeyAlgorithm::EcP256).unwrap();
        let ocsp_key = SoftwareSigner::generate("ocsp", KeyAlgorithm::EcP256).unwrap();
        let root_name = DistinguishedName::parse("CN=Test Root, O=cps-trust, C=FR").unwrap();
        let ca_name = DistinguishedName::parse("CN=Test Personnes, O=cps-trust, C=FR").unwrap();
        let root_der = issue_certificate(
            &CertificateParams {
                serial: serial_from_random([1; 16]),
                subject: root_name.clone(),
                subject_public_key: root_key.public_key_der().to_vec(),
                not_before: now,
                not_after: now + 86400 * 3650,
                extensions: root_ca(root_key.public_key_der(), None).unwrap(),
            },
            &Issuer {
                name: &root_name,
                signer: &root_key,
                signature: SignatureAlgorithm::EcdsaSha384,
            },
        )
        .unwrap();
        let root = parse_certificate(&root_der).unwrap();
        assert!(root.is_ca);
        verify_issued_by(&root_der, root_key.public_key_der()).unwrap();

        let points = PublicationPoints {
            crl: vec!["http://127.0.0.1:8080/crl/root.crl".into()],
            ca_issuers: vec!["http://127.0.0.1:8080/ca/root.der".into()],
            ocsp: vec![],
        };
        let ca_der = issue_certificate(
            &CertificateParams {
                serial: serial_from_random([2; 16]),
                subject: ca_name.clone(),
                subject_public_key: ca_key.public_key_der().to_vec(),
                not_before: now,
                not_after: now + 86400 * 1825,
                extensions: issuing_ca(
                    ca_key.public_key_der(),
                    root.subject_key_id.as_ref().unwrap(),
                    &[DottedOid::parse("2.999.1.1").unwrap()],
                    &points,
                )
                .unwrap(),
            },
            &Issuer {
                name: &root_name,
                signer: &root_key,
                signature: SignatureAlgorithm::EcdsaSha384,
            },
        )
        .unwrap();
        verify_issued_by(&ca_der, root_key.public_key_der()).unwrap();
        assert!(
            verify_issued_by(&ca_der, ca_key.public_key_der()).is_err(),
            "wrong issuer key must not verify"
        );
        let ca = parse_certificate(&ca_der).unwrap();
        assert_eq!(ca.issuer, root_name);
        assert_eq!(ca.not_before, now);

        let ocsp_der = issue_certificate(
            &CertificateParams {
                serial: serial_from_random([3; 16]),
                subject: DistinguishedName::parse("CN=Test Personnes OCSP, O=cps-trust, C=FR")
                    .unwrap(),
                subject_public_key: ocsp_key.public_key_der().to_vec(),
                not_before: now,
                not_after: now + 86400 * 365,
                extensions: ocsp_signer(
                    ocsp_key.public_key_der(),
                    ca.subject_key_id.as_ref().unwrap(),
                    &[],
                    &points,
                )
                .unwrap(),
            },
            &Issuer {
                name: &ca_name,
                signer: &ca_key,
                signature: SignatureAlgorithm::EcdsaSha256,
            },
        )
        .unwrap();
        verify_issued_by(&ocsp_der, ca_key.public_key_der()).unwrap();
        assert!(!parse_certificate(&ocsp_der).unwrap().is_ca);
    }

    #[test]
    fn refuses_inconsistent_parameters() {
        let key = SoftwareSigner::generate("k", KeyAlgorithm::EcP256).unwrap();
        let name = DistinguishedName::parse("CN=x,C=FR").unwrap();
        let mut params = CertificateParams {
            serial: serial_from_random([9; 16]),
            subject: name.clone(),
            subject_public_key: key.public_key_der().to_vec(),
            not_before: 10,
            not_after: 5,
            extensions: vec![],
        };
        let issuer = Issuer {
            name: &name,
            signer: &key,
            signature: SignatureAlgorithm::EcdsaSha256,
        };
        assert!(
            issue_certificate(&params, &issuer).is_err(),
            "notAfter before notBefore"
        );
        params.not_after = 100;
        params.extensions = root_ca(key.public_key_der(), None).unwrap();
        params.extensions.push(params.extensions[0].clone());
        assert!(
            issue_certificate(&params, &issuer).is_err(),
            "duplicate extension"
        );
        params.extensions.clear();
        let rsa_alg = Issuer {
            name: &name,
            signer: &key,
            signature: SignatureAlgorithm::RsaPkcs1Sha256,
        };
        assert!(
            issue_certificate(&params, &rsa_alg).is_err(),
            "algorithm does not fit key"
        );
        params.subject_public_key = b"garbage".to_vec();
        assert!(issue_certificate(&params, &issuer).is_err(), "garbage SPKI");
    }
}
