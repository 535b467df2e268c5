//! Public-key intake: PKCS#10 certificate requests (node and service enrolment) and bare public
//! keys with a signature over a server challenge (card enrolment). Both prove possession of
//! the private key; neither decides what goes into the certificate (the profile does).

use cps_hsm::{SigFormat, SignatureAlgorithm};
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::keycheck::{KeyError, KeyKind, KeyPolicy, check_public_key};
use crate::subject::SubjectAltName;
use crate::{DistinguishedName, signature_algorithm_identifier};

/// Largest accepted request, PEM or DER.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Shortest accepted server challenge for [`verify_possession`].
pub const MIN_CHALLENGE_BYTES: usize = 16;
/// Most subject alternative names a request may carry.
pub const MAX_REQUESTED_SANS: usize = 100;

/// Why a request or a proof of possession was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    #[error("certificate request of {size} bytes is larger than {max}")]
    TooLarge { size: usize, max: usize },
    #[error("PEM: {0}")]
    Pem(String),
    #[error("malformed certificate request: {0}")]
    Malformed(String),
    #[error("certificate request version {0} (only v1 = 0 exists)")]
    Version(u32),
    #[error("unsupported signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    #[error(
        "the request's signature does not verify with its own public key (no proof of \
         possession)"
    )]
    BadSignature,
    #[error("the signature over the challenge does not verify with the presented public key")]
    BadPossessionSignature,
    #[error("signature algorithm {alg} does not fit a {key} key")]
    AlgorithmMismatch {
        alg: SignatureAlgorithm,
        key: KeyKind,
    },
    #[error("challenge of {0} bytes is too short (at least {MIN_CHALLENGE_BYTES})")]
    ChallengeTooShort(usize),
    #[error("requested extensions: {0}")]
    Extensions(String),
    #[error("public key refused: {0}")]
    Key(#[from] KeyError),
}

/// What a verified request asks for. The SANs and subject are requests, for the RA to compare
/// with registry data; only the public key is taken as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// DER SubjectPublicKeyInfo, as in the request (accepted by the key policy).
    pub spki_der: Vec<u8>,
    pub key: KeyKind,
    /// SHA-256 of `spki_der` (the canonical key fingerprint).
    pub key_fingerprint: [u8; 32],
    /// Requested subject (may be empty).
    pub subject: DistinguishedName,
    /// Requested subject alternative names (dNSName, iPAddress, rfc822Name, URI), in request
    /// order, not yet validated against a profile.
    pub sans: Vec<SubjectAltName>,
    pub signature_algorithm: SignatureAlgorithm,
}

#[derive(Sequence)]
struct SignedEnvelope<'a> {
    tbs: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitStringRef<'a>,
}

const ALGORITHMS: [SignatureAlgorithm; 6] = [
    SignatureAlgorithm::EcdsaSha256,
    SignatureAlgorithm::EcdsaSha384,
    SignatureAlgorithm::RsaPkcs1Sha256,
    SignatureAlgorithm::RsaPkcs1Sha384,
    SignatureAlgorithm::RsaPssSha256,
    SignatureAlgorithm::RsaPssSha384,
];

/// Parse a PKCS#10 request (DER, or PEM labelled `CERTIFICATE REQUEST` / `NEW CERTIFICATE
/// REQUEST`), apply the key policy and verify its self-signature.
pub fn parse_csr(input: &[u8], policy: &KeyPolicy) -> Result<CsrInfo, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge {
            size: input.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let trimmed = input.trim_ascii_start();
    let der_owned;
    let der_bytes: &[u8] = if trimmed.starts_with(b"-----BEGIN") {
        let (label, bytes) =
            der::pem::decode_vec(trimmed).map_err(|e| CsrError::Pem(e.to_string()))?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(CsrError::Pem(format!(
                "label '{label}' (expected CERTIFICATE REQUEST)"
            )));
        }
        der_owned = bytes;
        &der_owned
    } else {
        input
    };

    // Outer structure with `der` (strict DER, no trailing data): the algorithm identifier is
    // compared byte for byte with the ones the appliance knows.
    let env =
        SignedEnvelope::from_der(der_bytes).map_err(|e| CsrError::Malformed(e.to_string()))?;
    let alg = ALGORITHMS
        .into_iter()
        .find(|a| signature_algorithm_identifier(*a).is_ok_and(|ai| ai == env.algorithm))
        .ok_or_else(|| CsrError::UnsupportedSignatureAlgorithm(env.algorithm.oid.to_string()))?;
    let signature = env
        .signature
        .as_bytes()
        .ok_or_else(|| CsrError::Malformed("signature BIT STRING has unused bits".into()))?;

    // Content with x509-parser.
    let (rest, csr) = X509CertificationRequest::from_der(der_bytes)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing data after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::Version(info.version.0));
    }
    info.attributes_map()
        .map_err(|_| CsrError::Malformed("an attribute appears twice".into()))?;

    let spki_der = info.subject_pki.raw.to_vec();
    let checked = check_public_key(&spki_der, policy)?;
    verify_raw(
        &spki_der,
        checked.kind,
        alg,
        info.raw,
        signature,
        SigFormat::Der,
    )
    .map_err(|e| match e {
        CsrError::BadPossessionSignature => CsrError::BadSignature,
        other => other,
    })?;

    let subject = DistinguishedName::from_der(info.subject.as_raw())
        .map_err(|e| CsrError::Malformed(format!("subject: {e}")))?;

    let mut sans = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        let mut seen_san = false;
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    if seen_san {
                        return Err(CsrError::Extensions(
                            "subjectAltName requested twice".into(),
                        ));
                    }
                    seen_san = true;
                    for gn in &san.general_names {
                        sans.push(general_name(gn)?);
                    }
                }
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::Extensions(format!(
                        "malformed extension: {error}"
                    )));
                }
                // Every other requested extension is ignored: the profile decides.
                _ => {}
            }
        }
    }
    if sans.len() > MAX_REQUESTED_SANS {
        return Err(CsrError::Extensions(format!(
            "{} subject alternative names (at most {MAX_REQUESTED_SANS})",
            sans.len()
        )));
    }
    Ok(CsrInfo {
        spki_der,
        key: checked.kind,
        key_fingerprint: checked.fingerprint,
        subject,
        sans,
        signature_algorithm: alg,
    })
}

fn general_name(gn: &GeneralName<'_>) -> Result<SubjectAltName, CsrError> {
    Ok(match gn {
        GeneralName::DNSName(s) => SubjectAltName::Dns((*s).to_owned()),
        GeneralName::RFC822Name(s) => SubjectAltName::Email((*s).to_owned()),
        GeneralName::URI(s) => SubjectAltName::Uri((*s).to_owned()),
        GeneralName::IPAddress(b) => match b.len() {
            4 => SubjectAltName::Ip(std::net::IpAddr::from(
                <[u8; 4]>::try_from(*b)
                    .map_err(|_| CsrError::Extensions("bad IPv4 address".into()))?,
            )),
            16 => SubjectAltName::Ip(std::net::IpAddr::from(
                <[u8; 16]>::try_from(*b)
                    .map_err(|_| CsrError::Extensions("bad IPv6 address".into()))?,
            )),
            n => {
                return Err(CsrError::Extensions(format!(
                    "iPAddress of {n} bytes (4 or 16)"
                )));
            }
        },
        other => {
            return Err(CsrError::Extensions(format!(
                "unsupported subject alternative name type {}",
                match other {
                    GeneralName::OtherName(..) => "otherName",
                    GeneralName::X400Address(_) => "x400Address",
                    GeneralName::DirectoryName(_) => "directoryName",
                    GeneralName::EDIPartyName(_) => "ediPartyName",
                    GeneralName::RegisteredID(_) => "registeredID",
                    _ => "(invalid)",
                }
            )));
        }
    })
}

/// Why [`build_csr`] could not produce a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrBuildError<E: std::error::Error + 'static> {
    /// The subject or the public key does not encode.
    #[error("certificate request: {0}")]
    Encoding(String),
    /// The signing callback failed (for a card: the card refused or was removed).
    #[error("signing the certificate request failed: {0}")]
    Sign(#[source] E),
}

/// Build a PKCS#10 request (DER) for `spki_der` with `subject` and no attributes, signed by
/// `sign`, which receives the DER `CertificationRequestInfo` and returns the signature over it
/// with `alg` (ECDSA: DER-encoded; RSA: the raw signature). The private key stays wherever the
/// callback keeps it (a smartcard, an HSM): the request's signature is the proof of possession
/// that [`parse_csr`] verifies.
pub fn build_csr<E: std::error::Error + 'static>(
    subject: &DistinguishedName,
    spki_der: &[u8],
    alg: SignatureAlgorithm,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, CsrBuildError<E>> {
    use der::Encode;
    use der::asn1::{BitString, SetOfVec};
    use x509_cert::request::{CertReq, CertReqInfo, Version};
    let enc = |e: &dyn std::fmt::Display| CsrBuildError::Encoding(e.to_string());
    let subject_der = subject.to_der().map_err(|e| enc(&e))?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: x509_cert::name::Name::from_der(&subject_der).map_err(|e| enc(&e))?,
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(|e| enc(&e))?,
        attributes: SetOfVec::new(),
    };
    let tbs = info.to_der().map_err(|e| enc(&e))?;
    let algorithm = signature_algorithm_identifier(alg).map_err(|e| enc(&e))?;
    let signature = sign(&tbs).map_err(CsrBuildError::Sign)?;
    CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&signature).map_err(|e| enc(&e))?,
    }
    .to_der()
    .map_err(|e| enc(&e))
}

/// Card enrolment: check a bare public key (DER SPKI) against the key policy and verify a
/// signature made with its private key over a server `challenge` (at least 16 bytes; the
/// caller makes it random and single-use). ECDSA signatures come DER-encoded or raw `r‖s`.
pub fn verify_possession(
    spki_der: &[u8],
    alg: SignatureAlgorithm,
    challenge: &[u8],
    signature: &[u8],
    format: SigFormat,
    policy: &KeyPolicy,
) -> Result<KeyKind, CsrError> {
    if challenge.len() < MIN_CHALLENGE_BYTES {
        return Err(CsrError::ChallengeTooShort(challenge.len()));
    }
    let checked = check_public_key(spki_der, policy)?;
    verify_raw(spki_der, checked.kind, alg, challenge, signature, format)?;
    Ok(checked.kind)
}

/// Verify with ring against a key already accepted by the key policy. RSA of any accepted size
/// (2048–8192), ECDSA with either hash on either curve.
fn verify_raw(
    spki_der: &[u8],
    key: KeyKind,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
    format: SigFormat,
) -> Result<(), CsrError> {
    use ring::signature as rs;
    let mismatch = || CsrError::AlgorithmMismatch { alg, key };
    let verifier: &dyn rs::VerificationAlgorithm = match (key, alg, format) {
        (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha256, SigFormat::Der) => {
            &rs::ECDSA_P256_SHA256_ASN1
        }
        (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha256, SigFormat::Raw) => {
            &rs::ECDSA_P256_SHA256_FIXED
        }
        (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha384, SigFormat::Der) => {
            &rs::ECDSA_P256_SHA384_ASN1
        }
        (KeyKind::EcP384, SignatureAlgorithm::EcdsaSha384, SigFormat::Der) => {
            &rs::ECDSA_P384_SHA384_ASN1
        }
        (KeyKind::EcP384, SignatureAlgorithm::EcdsaSha384, SigFormat::Raw) => {
            &rs::ECDSA_P384_SHA384_FIXED
        }
        (KeyKind::EcP384, SignatureAlgorithm::EcdsaSha256, SigFormat::Der) => {
            &rs::ECDSA_P384_SHA256_ASN1
        }
        (KeyKind::Rsa { .. }, SignatureAlgorithm::RsaPkcs1Sha256, _) => {
            &rs::RSA_PKCS1_2048_8192_SHA256
        }
        (KeyKind::Rsa { .. }, SignatureAlgorithm::RsaPkcs1Sha384, _) => {
            &rs::RSA_PKCS1_2048_8192_SHA384
        }
        (KeyKind::Rsa { .. }, SignatureAlgorithm::RsaPssSha256, _) => &rs::RSA_PSS_2048_8192_SHA256,
        (KeyKind::Rsa { .. }, SignatureAlgorithm::RsaPssSha384, _) => &rs::RSA_PSS_2048_8192_SHA384,
        (KeyKind::EcP256, SignatureAlgorithm::EcdsaSha384, SigFormat::Raw)
        | (KeyKind::EcP384, SignatureAlgorithm::EcdsaSha256, SigFormat::Raw) => {
            // Raw r‖s with a mismatched hash: convert to DER and use the ASN.1 verifier.
            let width = if key == KeyKind::EcP384 { 48 } else { 32 };
            if signature.len() != 2 * width {
                return Err(CsrError::BadPossessionSignature);
            }
            let der_sig = cps_hsm::ecdsa_raw_to_der(signature)
                .map_err(|_| CsrError::BadPossessionSignature)?;
            return verify_raw(spki_der, key, alg, message, &der_sig, SigFormat::Der);
        }
        _ => return Err(mismatch()),
    };
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| CsrError::Key(KeyError::Malformed(e.to_string())))?;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CsrError::BadPossessionSignature)?;
    rs::UnparsedPublicKey::new(verifier, key_bytes)
        .verify(message, signature)
        .map_err(|_| CsrError::BadPossessionSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};
    use der::Encode;
    use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
    use x509_cert::ext::Extension;
    use x509_cert::ext::pkix::name::GeneralName as Gn;
    use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

    pub(crate) fn build_csr(
        key: &dyn Signer,
        alg: SignatureAlgorithm,
        subject: &str,
        sans: Vec<Gn>,
    ) -> Vec<u8> {
        let dn = DistinguishedName::parse(subject).unwrap();
        let mut attributes = SetOfVec::new();
        if !sans.is_empty() {
            let ext = Extension {
                extn_id: crate::subject::ID_CE_SUBJECT_ALT_NAME,
                critical: false,
                extn_value: OctetString::new(
                    x509_cert::ext::pkix::SubjectAltName(sans).to_der().unwrap(),
                )
                .unwrap(),
            };
            attributes
                .insert(ExtensionReq(vec![ext]).try_into().unwrap())
                .unwrap();
        }
        let info = CertReqInfo {
            version: Version::V1,
            subject: x509_cert::name::Name::from_der(&dn.to_der().unwrap()).unwrap(),
            public_key: spki::SubjectPublicKeyInfoOwned::from_der(key.public_key_der()).unwrap(),
            attributes,
        };
        let tbs = info.to_der().unwrap();
        let sig = key.sign(alg, &tbs, SigFormat::Der).unwrap();
        CertReq {
            info,
            algorithm: signature_algorithm_identifier(alg).unwrap(),
            signature: BitString::from_bytes(&sig).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    fn dns(s: &str) -> Gn {
        Gn::DnsName(Ia5String::new(s).unwrap())
    }

    #[test]
    fn ec_request_round_trip_with_sans() {
        for (ka, sa) in [
            (KeyAlgorithm::EcP256, SignatureAlgorithm::EcdsaSha256),
            (KeyAlgorithm::EcP384, SignatureAlgorithm::EcdsaSha384),
        ] {
            let key = SoftwareSigner::generate("k", ka).unwrap();
            let der_csr = build_csr(
                &key,
                sa,
                "CN=node1.example.fr,OU=318751275100020,O=Clinique,ST=Rhône (69),C=FR",
                vec![
                    dns("node1.example.fr"),
                    Gn::IpAddress(OctetString::new(vec![192, 0, 2, 1]).unwrap()),
                    Gn::Rfc822Name(Ia5String::new("ops@example.fr").unwrap()),
                ],
            );
            let info = parse_csr(&der_csr, &KeyPolicy::default()).unwrap();
            assert_eq!(info.spki_der, key.public_key_der());
            assert_eq!(info.signature_algorithm, sa);
            assert_eq!(
                info.sans,
                vec![
                    SubjectAltName::Dns("node1.example.fr".into()),
                    SubjectAltName::Ip("192.0.2.1".parse().unwrap()),
                    SubjectAltName::Email("ops@example.fr".into()),
                ]
            );
            assert_eq!(
                info.subject.get(&crate::NameAttribute::CommonName),
                Some("node1.example.fr")
            );
            // The same request as PEM.
            let pem = crate::pem_encode("CERTIFICATE REQUEST", &der_csr);
            assert_eq!(
                parse_csr(pem.as_bytes(), &KeyPolicy::default()).unwrap(),
                info
            );
        }
    }

    #[test]
    fn tampering_is_a_bad_signature() {
        let key = SoftwareSigner::generate("k", KeyAlgorithm::EcP256).unwrap();
        let good = build_csr(
            &key,
            SignatureAlgorithm::EcdsaSha256,
            "CN=a.example.fr",
            vec![],
        );
        // Change one character of the subject: the signature no longer covers it.
        let pos = good.windows(3).position(|w| w == b"a.e").unwrap();
        let mut bad = good.clone();
        bad[pos] = b'b';
        assert_eq!(
            parse_csr(&bad, &KeyPolicy::default()),
            Err(CsrError::BadSignature)
        );
        // Another key's signature over the same request info.
        let other = SoftwareSigner::generate("o", KeyAlgorithm::EcP256).unwrap();
        let mut req = CertReq::from_der(&good).unwrap();
        let sig = other
            .sign(
                SignatureAlgorithm::EcdsaSha256,
                &req.info.to_der().unwrap(),
                SigFormat::Der,
            )
            .unwrap();
        req.signature = BitString::from_bytes(&sig).unwrap();
        assert_eq!(
            parse_csr(&req.to_der().unwrap(), &KeyPolicy::default()),
            Err(CsrError::BadSignature)
        );
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let key = SoftwareSigner::generate("k", KeyAlgorithm::EcP256).unwrap();
        let good = build_csr(
            &key,
            SignatureAlgorithm::EcdsaSha256,
            "CN=a.example.fr",
            vec![],
        );
        let p = KeyPolicy::default();
        assert!(matches!(
            parse_csr(&vec![0x30; MAX_CSR_BYTES + 1], &p),
            Err(CsrError::TooLarge { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            parse_csr(&trailing, &p),
            Err(CsrError::Malformed(_))
        ));
        for n in 0..good.len() {
            assert!(parse_csr(&good[..n], &p).is_err());
            let mut flipped = good.clone();
            flipped[n] ^= 0x01;
            let _ = parse_csr(&flipped, &p);
        }
        let cert_pem = crate::pem_encode("CERTIFICATE", &good);
        assert!(matches!(
            parse_csr(cert_pem.as_bytes(), &p),
            Err(CsrError::Pem(_))
        ));
        assert!(matches!(
            parse_csr(
                b"-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END CERTIFICATE REQUEST-----\n",
                &p
            ),
            Err(CsrError::Pem(_))
        ));
        // An unsupported GeneralName type in the requested SANs.
        let dir = Gn::DirectoryName(
            x509_cert::name::Name::from_der(
                &DistinguishedName::parse("CN=x").unwrap().to_der().unwrap(),
            )
            .unwrap(),
        );
        let req = build_csr(
            &key,
            SignatureAlgorithm::EcdsaSha256,
            "CN=a.example.fr",
            vec![dir],
        );
        assert!(matches!(parse_csr(&req, &p), Err(CsrError::Extensions(_))));
    }

    #[test]
    fn build_csr_signs_through_the_callback() {
        let p = KeyPolicy::default();
        let subject = DistinguishedName::parse(
            "CN=810002813839+SN=DONNAT-GADY+GN=ISABELLE,title=Médecin,C=FR",
        )
        .unwrap();
        let key = SoftwareSigner::generate("card", KeyAlgorithm::EcP256).unwrap();
        let der_csr = super::build_csr(
            &subject,
            key.public_key_der(),
            SignatureAlgorithm::EcdsaSha256,
            |tbs| key.sign(SignatureAlgorithm::EcdsaSha256, tbs, SigFormat::Der),
        )
        .unwrap();
        let info = parse_csr(&der_csr, &p).unwrap();
        assert_eq!(info.spki_der, key.public_key_der());
        assert_eq!(info.subject.to_der().unwrap(), subject.to_der().unwrap());
        // A callback signing with another key gives a request without proof of possession.
        let other = SoftwareSigner::generate("other", KeyAlgorithm::EcP256).unwrap();
        let bad = super::build_csr(
            &subject,
            key.public_key_der(),
            SignatureAlgorithm::EcdsaSha256,
            |tbs| other.sign(SignatureAlgorithm::EcdsaSha256, tbs, SigFormat::Der),
        )
        .unwrap();
        assert_eq!(parse_csr(&bad, &p), Err(CsrError::BadSignature));
        // The callback's error comes back as is.
        let err = super::build_csr(
            &subject,
            key.public_key_der(),
            SignatureAlgorithm::EcdsaSha256,
            |_| Err(std::io::Error::other("card removed")),
        )
        .unwrap_err();
        assert!(matches!(err, CsrBuildError::Sign(_)), "{err}");
        assert!(matches!(
            super::build_csr(
                &subject,
                b"not a key",
                SignatureAlgorithm::EcdsaSha256,
                |_| Ok::<_, std::io::Error>(vec![])
            ),
            Err(CsrBuildError::Encoding(_))
        ));
    }

    #[test]
    fn possession_of_a_card_key() {
        let challenge = [7u8; 32];
        let p = KeyPolicy::default();
        for (ka, sa) in [
            (KeyAlgorithm::EcP256, SignatureAlgorithm::EcdsaSha256),
            (KeyAlgorithm::EcP384, SignatureAlgorithm::EcdsaSha384),
        ] {
            let key = SoftwareSigner::generate("card", ka).unwrap();
            for format in [SigFormat::Der, SigFormat::Raw] {
                let sig = key.sign(sa, &challenge, format).unwrap();
                verify_possession(key.public_key_der(), sa, &challenge, &sig, format, &p).unwrap();
                let mut other = challenge;
                other[0] ^= 1;
                assert_eq!(
                    verify_possession(key.public_key_der(), sa, &other, &sig, format, &p),
                    Err(CsrError::BadPossessionSignature)
                );
            }
            assert!(matches!(
                verify_possession(
                    key.public_key_der(),
                    SignatureAlgorithm::RsaPkcs1Sha256,
                    &challenge,
                    &[0; 256],
                    SigFormat::Der,
                    &p
                ),
                Err(CsrError::AlgorithmMismatch { .. })
            ));
        }
        let key = SoftwareSigner::generate("card", KeyAlgorithm::EcP256).unwrap();
        let sig = key
            .sign(
                SignatureAlgorithm::EcdsaSha256,
                &challenge[..8],
                SigFormat::Der,
            )
            .unwrap();
        assert_eq!(
            verify_possession(
                key.public_key_der(),
                SignatureAlgorithm::EcdsaSha256,
                &challenge[..8],
                &sig,
                SigFormat::Der,
                &p
            ),
            Err(CsrError::ChallengeTooShort(8))
        );
    }
}
