//! Certificate assembly: a `TBSCertificate` encoded here, signed through a [`Signer`], checked
//! by decoding it back with `x509-cert`.

use const_oid::ObjectIdentifier;
use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use der::asn1::{AnyRef, BitStringRef, GeneralizedTime, IntRef, UtcTime};
use der::{DateTime, Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::Extension;
use x509_cert::name::RdnSequence;
use x509_cert::time::{Time, Validity};

use crate::ext::{ID_CE_BASIC_CONSTRAINTS, ID_CE_EXT_KEY_USAGE, ID_CE_SUBJECT_KEY_IDENTIFIER};
use crate::{DistinguishedName, PkiError, Serial};

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

const ECDSA_WITH_SHA256: ObjectIdentifier = oid("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = oid("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.12");
const RSASSA_PSS: ObjectIdentifier = oid("1.2.840.113549.1.1.10");

/// RSASSA-PSS-params for SHA-256 / SHA-384: hash, MGF1 with the same hash, salt = hash length.
const PSS_SHA256_PARAMS: &[u8] = &[
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
];
const PSS_SHA384_PARAMS: &[u8] = &[
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0xa2, 0x03, 0x02, 0x01, 0x30,
];

/// The `AlgorithmIdentifier` of a signature algorithm, as RFC 5758 / RFC 4055 want it (ECDSA:
/// parameters absent; RSA PKCS#1: NULL; PSS: explicit parameters).
pub fn signature_algorithm_identifier(
    alg: SignatureAlgorithm,
) -> Result<AlgorithmIdentifierOwned, PkiError> {
    let null = || Some(der::Any::from(der::asn1::Null));
    Ok(match alg {
        SignatureAlgorithm::EcdsaSha256 => AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        SignatureAlgorithm::EcdsaSha384 => AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA384,
            parameters: None,
        },
        SignatureAlgorithm::RsaPkcs1Sha256 => AlgorithmIdentifierOwned {
            oid: SHA256_WITH_RSA,
            parameters: null(),
        },
        SignatureAlgorithm::RsaPkcs1Sha384 => AlgorithmIdentifierOwned {
            oid: SHA384_WITH_RSA,
            parameters: null(),
        },
        SignatureAlgorithm::RsaPssSha256 => AlgorithmIdentifierOwned {
            oid: RSASSA_PSS,
            parameters: Some(der::Any::from_der(PSS_SHA256_PARAMS)?),
        },
        SignatureAlgorithm::RsaPssSha384 => AlgorithmIdentifierOwned {
            oid: RSASSA_PSS,
            parameters: Some(der::Any::from_der(PSS_SHA384_PARAMS)?),
        },
        _ => {
            return Err(PkiError::Params(format!(
                "unsupported signature algorithm {alg}"
            )));
        }
    })
}

fn signature_algorithm_from_identifier(
    ai: &AlgorithmIdentifierOwned,
) -> Option<SignatureAlgorithm> {
    let params = ai
        .parameters
        .as_ref()
        .map(|p| p.to_der().unwrap_or_default());
    Some(match ai.oid {
        o if o == ECDSA_WITH_SHA256 => SignatureAlgorithm::EcdsaSha256,
        o if o == ECDSA_WITH_SHA384 => SignatureAlgorithm::EcdsaSha384,
        o if o == SHA256_WITH_RSA => SignatureAlgorithm::RsaPkcs1Sha256,
        o if o == SHA384_WITH_RSA => SignatureAlgorithm::RsaPkcs1Sha384,
        o if o == RSASSA_PSS && params.as_deref() == Some(PSS_SHA256_PARAMS) => {
            SignatureAlgorithm::RsaPssSha256
        }
        o if o == RSASSA_PSS && params.as_deref() == Some(PSS_SHA384_PARAMS) => {
            SignatureAlgorithm::RsaPssSha384
        }
        _ => return None,
    })
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
pub(crate) fn x509_time(unix: i64) -> Result<Time, PkiError> {
    let secs =
        u64::try_from(unix).map_err(|_| PkiError::Params(format!("time {unix} before 1970")))?;
    let dt = DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
    Ok(if dt.year() < 2050 {
        Time::UtcTime(UtcTime::from_date_time(dt)?)
    } else {
        Time::GeneralTime(GeneralizedTime::from_date_time(dt))
    })
}

#[derive(Sequence)]
struct TbsCertificate<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial_number: IntRef<'a>,
    signature: AlgorithmIdentifierOwned,
    issuer: RdnSequence,
    validity: Validity,
    subject: RdnSequence,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<Extension>,
}

#[derive(Sequence)]
struct SignedEnvelope<'a> {
    tbs: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitStringRef<'a>,
}

/// What goes into a certificate, apart from its issuer.
#[derive(Debug, Clone)]
pub struct CertificateParams {
    pub serial: Serial,
    pub subject: DistinguishedName,
    /// DER `SubjectPublicKeyInfo`.
    pub subject_public_key: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub extensions: Vec<Extension>,
}

/// Who signs: the issuer's name (its certificate's subject), its key and the algorithm.
pub struct Issuer<'a> {
    pub name: &'a DistinguishedName,
    pub signer: &'a dyn Signer,
    pub signature: SignatureAlgorithm,
}

/// Build and sign a v3 certificate; returns its DER.
pub fn issue_certificate(
    params: &CertificateParams,
    issuer: &Issuer<'_>,
) -> Result<Vec<u8>, PkiError> {
    if params.not_after <= params.not_before {
        return Err(PkiError::Params(
            "notAfter must be later than notBefore".into(),
        ));
    }
    if !issuer.signature.fits(issuer.signer.key_algorithm()) {
        return Err(PkiError::Params(format!(
            "signature algorithm {} does not fit the issuer's {} key",
            issuer.signature,
            issuer.signer.key_algorithm()
        )));
    }
    for (i, e) in params.extensions.iter().enumerate() {
        if params.extensions[..i]
            .iter()
            .any(|o| o.extn_id == e.extn_id)
        {
            return Err(PkiError::Params(format!(
                "extension {} appears twice",
                e.extn_id
            )));
        }
    }
    let algorithm = signature_algorithm_identifier(issuer.signature)?;
    let tbs = TbsCertificate {
        version: 2,
        serial_number: IntRef::new(params.serial.as_bytes())?,
        signature: algorithm.clone(),
        issuer: issuer.name.to_rdn_sequence()?,
        validity: Validity::new(x509_time(params.not_before)?, x509_time(params.not_after)?),
        subject: params.subject.to_rdn_sequence()?,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(&params.subject_public_key)?,
        extensions: params.extensions.clone(),
    }
    .to_der()?;
    let signature = issuer.signer.sign(issuer.signature, &tbs, SigFormat::Der)?;
    let cert = SignedEnvelope {
        tbs: AnyRef::from_der(&tbs)?,
        algorithm,
        signature: BitStringRef::from_bytes(&signature)?,
    }
    .to_der()?;
    // Whatever we emit must parse as a certificate.
    x509_cert::Certificate::from_der(&cert)?;
    Ok(cert)
}

/// Check that `cert_der` carries a valid signature by the key `issuer_spki_der`.
pub fn verify_issued_by(cert_der: &[u8], issuer_spki_der: &[u8]) -> Result<(), PkiError> {
    let env = SignedEnvelope::from_der(cert_der)?;
    let alg = signature_algorithm_from_identifier(&env.algorithm).ok_or_else(|| {
        PkiError::Params(format!(
            "unsupported signature algorithm {}",
            env.algorithm.oid
        ))
    })?;
    let sig = env.signature.as_bytes().ok_or(PkiError::BadSignature)?;
    cps_hsm::verify_signature(
        issuer_spki_der,
        alg,
        &env.tbs.to_der()?,
        sig,
        SigFormat::Der,
    )
    .map_err(|_| PkiError::BadSignature)
}

/// The parts of a certificate operators and the appliance look at.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    pub subject: DistinguishedName,
    pub issuer: DistinguishedName,
    pub serial: Serial,
    pub not_before: i64,
    pub not_after: i64,
    pub spki: Vec<u8>,
    pub is_ca: bool,
    pub subject_key_id: Option<Vec<u8>>,
    pub signature_algorithm: Option<SignatureAlgorithm>,
    pub sha256_fingerprint: [u8; 32],
    /// The extended key usage purposes, `None` when the extension is absent (which RFC 5280
    /// reads as "any purpose": a relying party that needs one purpose must require it).
    pub extended_key_usage: Option<Vec<ObjectIdentifier>>,
}

impl ParsedCertificate {
    /// Whether the extended key usage extension is present and lists `purpose`.
    pub fn has_extended_key_usage(&self, purpose: ObjectIdentifier) -> bool {
        self.extended_key_usage
            .as_ref()
            .is_some_and(|p| p.contains(&purpose))
    }
}

pub fn parse_certificate(der_bytes: &[u8]) -> Result<ParsedCertificate, PkiError> {
    let cert = x509_cert::Certificate::from_der(der_bytes)?;
    let tbs = cert.tbs_certificate();
    let mut is_ca = false;
    let mut subject_key_id = None;
    let mut extended_key_usage = None;
    for e in tbs.extensions().into_iter().flatten() {
        if e.extn_id == ID_CE_BASIC_CONSTRAINTS {
            is_ca = x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes())?.ca;
        } else if e.extn_id == ID_CE_EXT_KEY_USAGE {
            extended_key_usage =
                Some(x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes())?.0);
        } else if e.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER {
            subject_key_id = Some(
                der::asn1::OctetString::from_der(e.extn_value.as_bytes())?
                    .as_bytes()
                    .to_vec(),
            );
        }
    }
    let mut fp = [0u8; 32];
    fp.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der_bytes).as_ref());
    Ok(ParsedCertificate {
        subject: DistinguishedName::from_rdn_sequence(tbs.subject().as_ref())?,
        issuer: DistinguishedName::from_rdn_sequence(tbs.issuer().as_ref())?,
        serial: Serial::from_bytes(tbs.serial_number().as_bytes())
            .or_else(|_| Serial::from_hex(&hex_of(tbs.serial_number().as_bytes())))?,
        not_before: tbs.validity().not_before.to_unix_duration().as_secs() as i64,
        not_after: tbs.validity().not_after.to_unix_duration().as_secs() as i64,
        spki: tbs.subject_public_key_info().to_der()?,
        is_ca,
        subject_key_id,
        signature_algorithm: signature_algorithm_from_identifier(cert.signature_algorithm()),
        sha256_fingerprint: fp,
        extended_key_usage,
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// PEM with 64-column lines.
pub fn pem_encode(label: &str, der_bytes: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der_bytes).unwrap_or_default()
}

/// The DER of every `CERTIFICATE` block of a PEM text, in order (a chain file: certificate,
/// then its issuers). Other blocks, text between blocks and a block that does not decode are
/// skipped; an unterminated block ends the reading.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end_rel) = rest[start..].find(END) else {
            break;
        };
        let end = start + end_rel + END.len();
        if let Ok((_, der)) = der::pem::decode_vec(&rest.as_bytes()[start..end]) {
            out.push(der);
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_certificates_reads_every_certificate_block_in_order() {
        let a = pem_encode("CERTIFICATE", b"first");
        let b = pem_encode("CERTIFICATE", b"second");
        let key = pem_encode("PRIVATE KEY", b"not a certificate");
        let text = format!("issuer chain\n{a}{key}between\n{b}");
        assert_eq!(
            pem_certificates(&text),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
    }

    #[test]
    fn pem_certificates_skips_broken_blocks_and_stops_at_an_unterminated_one() {
        let good = pem_encode("CERTIFICATE", b"good");
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let open = "-----BEGIN CERTIFICATE-----\nZm9v\n";
        let text = format!("{broken}{good}{open}");
        assert_eq!(pem_certificates(&text), vec![b"good".to_vec()]);
        assert!(pem_certificates("").is_empty());
        assert!(pem_certificates("no PEM here").is_empty());
    }
}
