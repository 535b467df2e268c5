//! Shared test fixtures: a small PKI built with cps_pki + SoftwareSigner, a HashMap status
//! source, an independent request encoder and response decoder (x509-ocsp 0.2 on der 0.7).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cps_hsm::{KeyAlgorithm, SigFormat, SignatureAlgorithm, Signer, SoftwareSigner};
use cps_ocsp::{
    CertStatusAnswer, IssuerEntry, NotIssuedPolicy, Responder, ResponderConfig, StatusError,
    StatusSource,
};
use cps_pki::ext::{self, Usage};
use cps_pki::hierarchy::{self, PublicationPoints};
use cps_pki::{
    CertificateParams, DistinguishedName, Issuer, issue_certificate, parse_certificate,
    serial_from_random,
};
use x509_cert_02::der::asn1::OctetString;
use x509_cert_02::der::oid::ObjectIdentifier;
use x509_cert_02::der::{Decode, Encode};
use x509_cert_02::ext::Extension;
use x509_cert_02::serial_number::SerialNumber;
use x509_cert_02::spki::AlgorithmIdentifierOwned;

pub const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
pub const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
pub const EXTENDED_REVOKE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.9");

pub struct Ee {
    pub serial: Vec<u8>,
    pub cert_der: Vec<u8>,
}

pub struct TestCa {
    pub id: String,
    pub cert_der: Vec<u8>,
    pub key: Arc<SoftwareSigner>,
    pub ocsp_cert_der: Vec<u8>,
    pub ocsp_key: Arc<SoftwareSigner>,
    pub ee: Vec<Ee>,
}

impl TestCa {
    pub fn entry(&self) -> IssuerEntry {
        IssuerEntry {
            id: self.id.clone(),
            ca_cert_der: self.cert_der.clone(),
            responder_cert_der: self.ocsp_cert_der.clone(),
            responder_key: self.ocsp_key.clone(),
            signature: SignatureAlgorithm::EcdsaSha256,
        }
    }
}

pub struct TestPki {
    /// Certificates are valid from `now - 3600` for a year (the OCSP signer for 30 days).
    pub now: i64,
    pub root_der: Vec<u8>,
    pub cas: Vec<TestCa>,
}

fn random_serial() -> cps_pki::Serial {
    serial_from_random(rand::random())
}

fn p256(label: &str) -> Arc<SoftwareSigner> {
    Arc::new(SoftwareSigner::generate(label, KeyAlgorithm::EcP256).expect("key"))
}

pub fn build_pki(now: i64, ee_per_ca: usize) -> TestPki {
    let root_key = p256("root");
    let root_name = DistinguishedName::parse("CN=Test Root, O=cps-trust, C=FR").unwrap();
    let root_der = issue_certificate(
        &CertificateParams {
            serial: random_serial(),
            subject: root_name.clone(),
            subject_public_key: root_key.public_key_der().to_vec(),
            not_before: now - 3600,
            not_after: now + 86400 * 3650,
            extensions: hierarchy::root_ca(root_key.public_key_der(), None).unwrap(),
        },
        &Issuer {
            name: &root_name,
            signer: root_key.as_ref(),
            signature: SignatureAlgorithm::EcdsaSha256,
        },
    )
    .unwrap();
    let root_kid = parse_certificate(&root_der)
        .unwrap()
        .subject_key_id
        .unwrap();
    let points = PublicationPoints {
        crl: vec!["http://pki.example.test/crl/root.crl".into()],
        ca_issuers: vec!["http://pki.example.test/ca/root.der".into()],
        ocsp: vec![],
    };
    let cas = ["personnes", "organisations"]
        .iter()
        .map(|id| {
            let key = p256(id);
            let name =
                DistinguishedName::parse(&format!("CN=Test {id}, O=cps-trust, C=FR")).unwrap();
            let cert_der = issue_certificate(
                &CertificateParams {
                    serial: random_serial(),
                    subject: name.clone(),
                    subject_public_key: key.public_key_der().to_vec(),
                    not_before: now - 3600,
                    not_after: now + 86400 * 1825,
                    extensions: hierarchy::issuing_ca(
                        key.public_key_der(),
                        &root_kid,
                        &[],
                        &points,
                    )
                    .unwrap(),
                },
                &Issuer {
                    name: &root_name,
                    signer: root_key.as_ref(),
                    signature: SignatureAlgorithm::EcdsaSha256,
                },
            )
            .unwrap();
            let kid = parse_certificate(&cert_der)
                .unwrap()
                .subject_key_id
                .unwrap();
            let ca_issuer = Issuer {
                name: &name,
                signer: key.as_ref(),
                signature: SignatureAlgorithm::EcdsaSha256,
            };
            let ocsp_key = p256(&format!("{id}-ocsp"));
            let ocsp_cert_der = issue_certificate(
                &CertificateParams {
                    serial: random_serial(),
                    subject: DistinguishedName::parse(&format!(
                        "CN=Test {id} OCSP, O=cps-trust, C=FR"
                    ))
                    .unwrap(),
                    subject_public_key: ocsp_key.public_key_der().to_vec(),
                    not_before: now - 3600,
                    not_after: now + 86400 * 30,
                    extensions: hierarchy::ocsp_signer(
                        ocsp_key.public_key_der(),
                        &kid,
                        &[],
                        &PublicationPoints::default(),
                    )
                    .unwrap(),
                },
                &ca_issuer,
            )
            .unwrap();
            let ee = (0..ee_per_ca)
                .map(|n| {
                    let k = p256("ee");
                    let serial = random_serial();
                    let cert_der = issue_certificate(
                        &CertificateParams {
                            serial: serial.clone(),
                            subject: DistinguishedName::parse(&format!(
                                "CN=ee{n}.{id}.example.test, O=cps-trust, C=FR"
                            ))
                            .unwrap(),
                            subject_public_key: k.public_key_der().to_vec(),
                            not_before: now - 3600,
                            not_after: now + 86400 * 365,
                            extensions: vec![
                                ext::basic_constraints(false, None).unwrap(),
                                ext::key_usage(&[Usage::DigitalSignature]).unwrap(),
                                ext::subject_key_identifier(
                                    &ext::key_identifier(k.public_key_der()).unwrap(),
                                )
                                .unwrap(),
                                ext::authority_key_identifier(&kid).unwrap(),
                                ext::authority_info_access(
                                    &["http://ocsp.example.test/".into()],
                                    &[],
                                )
                                .unwrap(),
                            ],
                        },
                        &ca_issuer,
                    )
                    .unwrap();
                    Ee {
                        serial: serial.as_bytes().to_vec(),
                        cert_der,
                    }
                })
                .collect();
            TestCa {
                id: id.to_string(),
                cert_der,
                key,
                ocsp_cert_der,
                ocsp_key,
                ee,
            }
        })
        .collect();
    TestPki { now, root_der, cas }
}

/// A status source over a HashMap; absent serials are `Unknown` (never issued).
#[derive(Default)]
pub struct MapSource {
    pub map: RwLock<HashMap<(String, Vec<u8>), CertStatusAnswer>>,
    pub fail: Mutex<Option<StatusError>>,
    pub calls: AtomicUsize,
}

impl MapSource {
    pub fn set(&self, issuer: &str, serial: &[u8], answer: CertStatusAnswer) {
        self.map
            .write()
            .unwrap()
            .insert((issuer.to_string(), serial.to_vec()), answer);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl StatusSource for MapSource {
    fn status(&self, issuer_id: &str, serial: &[u8]) -> Result<CertStatusAnswer, StatusError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self
            .map
            .read()
            .unwrap()
            .get(&(issuer_id.to_string(), serial.to_vec()))
            .copied()
            .unwrap_or(CertStatusAnswer::Unknown))
    }
}

pub fn config(not_issued: NotIssuedPolicy) -> ResponderConfig {
    ResponderConfig {
        validity_secs: 4 * 3600,
        not_issued,
        max_request_bytes: 4096,
        max_requests_per_message: 8,
        cache_refresh_secs: 600,
        cache_max_entries: 1000,
    }
}

/// Responder over every CA of `pki`; ee[0] good, ee[1] revoked (keyCompromise), ee[2]+ good.
pub fn responder(pki: &TestPki, cfg: ResponderConfig) -> (Responder, Arc<MapSource>) {
    let source = Arc::new(MapSource::default());
    for ca in &pki.cas {
        for (n, ee) in ca.ee.iter().enumerate() {
            let answer = if n == 1 {
                CertStatusAnswer::Revoked {
                    time: pki.now - 600,
                    reason: Some(cps_ocsp::CrlReason::KeyCompromise),
                }
            } else {
                CertStatusAnswer::Good
            };
            source.set(&ca.id, &ee.serial, answer);
        }
    }
    let r = Responder::new(
        pki.cas.iter().map(TestCa::entry).collect(),
        cfg,
        source.clone(),
    )
    .expect("responder");
    (r, source)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

/// CertID computed here independently (x509-cert 0.2 + ring) for `serial` under `issuer_der`.
pub fn cert_id(
    issuer_der: &[u8],
    serial: &[u8],
    hash: Hash,
    null_params: bool,
) -> x509_ocsp::CertId {
    let ca = x509_cert_02::Certificate::from_der(issuer_der).unwrap();
    let name = ca.tbs_certificate.subject.to_der().unwrap();
    let key = ca
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let (oid, alg) = match hash {
        Hash::Sha1 => (SHA1, &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        Hash::Sha256 => (SHA256, &ring::digest::SHA256),
    };
    x509_ocsp::CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: null_params.then(|| x509_cert_02::der::asn1::Null.into()),
        },
        issuer_name_hash: OctetString::new(ring::digest::digest(alg, &name).as_ref()).unwrap(),
        issuer_key_hash: OctetString::new(ring::digest::digest(alg, key).as_ref()).unwrap(),
        serial_number: SerialNumber::new(serial).unwrap(),
    }
}

pub fn nonce_extension(nonce: &[u8]) -> Extension {
    Extension {
        extn_id: NONCE,
        critical: false,
        extn_value: OctetString::new(OctetString::new(nonce).unwrap().to_der().unwrap()).unwrap(),
    }
}

pub fn request_with(ids: Vec<x509_ocsp::CertId>, extensions: Vec<Extension>) -> Vec<u8> {
    x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: ids
                .into_iter()
                .map(|id| x509_ocsp::Request {
                    req_cert: id,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions: (!extensions.is_empty()).then_some(extensions),
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

pub fn request(ids: Vec<x509_ocsp::CertId>, nonce: Option<&[u8]>) -> Vec<u8> {
    request_with(ids, nonce.map(nonce_extension).into_iter().collect())
}

/// Decode an OCSPResponse with x509-ocsp; `Some(basic)` when successful.
pub fn decode(der: &[u8]) -> (u8, Option<x509_ocsp::BasicOcspResponse>) {
    try_decode(der).expect("OCSPResponse must decode")
}

pub fn try_decode(
    der: &[u8],
) -> Result<(u8, Option<x509_ocsp::BasicOcspResponse>), x509_cert_02::der::Error> {
    let r = x509_ocsp::OcspResponse::from_der(der)?;
    let status = r.response_status as u8;
    let basic = match r.response_bytes {
        Some(b) => {
            assert_eq!(b.response_type.to_string(), "1.3.6.1.5.5.7.48.1.1");
            Some(x509_ocsp::BasicOcspResponse::from_der(
                b.response.as_bytes(),
            )?)
        }
        None => None,
    };
    Ok((status, basic))
}

/// Check the signature of `basic` with the responder key, over the re-encoded ResponseData.
pub fn check_signature(basic: &x509_ocsp::BasicOcspResponse, responder_spki: &[u8]) {
    let tbs = basic.tbs_response_data.to_der().unwrap();
    cps_hsm::verify_signature(
        responder_spki,
        SignatureAlgorithm::EcdsaSha256,
        &tbs,
        basic.signature.raw_bytes(),
        SigFormat::Der,
    )
    .expect("response signature must verify with the responder key");
}

pub fn unix(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    t.0.to_unix_duration().as_secs() as i64
}

/// DER TLV with a definite minimal length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap();
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
    out.extend_from_slice(content);
    out
}

/// A request with one CertID whose serialNumber content octets are exactly `serial` (which
/// x509-cert would normalise): hash algorithm SHA-1 with NULL.
pub fn raw_serial_request(issuer_der: &[u8], serial: &[u8]) -> Vec<u8> {
    let id = cert_id(issuer_der, &[0x01], Hash::Sha1, true);
    let mut content = id.hash_algorithm.to_der().unwrap();
    content.extend(id.issuer_name_hash.to_der().unwrap());
    content.extend(id.issuer_key_hash.to_der().unwrap());
    content.extend(tlv(0x02, serial));
    let request = tlv(0x30, &tlv(0x30, &content));
    tlv(0x30, &tlv(0x30, &tlv(0x30, &request)))
}
