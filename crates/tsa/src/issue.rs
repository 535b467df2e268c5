//! Token issuance: `TSTInfo` (RFC 3161 §2.4.2) inside CMS `SignedData` (RFC 5652), with the
//! `signing-certificate-v2` attribute of RFC 5035 / RFC 5816.
//!
//! ```text
//! TSTInfo ::= SEQUENCE {
//!    version        INTEGER { v1(1) },
//!    policy         TSAPolicyId,
//!    messageImprint MessageImprint,
//!    serialNumber   INTEGER,
//!    genTime        GeneralizedTime,
//!    accuracy       Accuracy OPTIONAL,
//!    ordering       BOOLEAN DEFAULT FALSE,          -- omitted: false
//!    nonce          INTEGER OPTIONAL,
//!    tsa        [0] GeneralName OPTIONAL,           -- directoryName of the TSA certificate
//!    extensions [1] IMPLICIT Extensions OPTIONAL }  -- none
//! Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] INTEGER (1..999) OPTIONAL,
//!                         micros [1] INTEGER (1..999) OPTIONAL }
//! ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT id-sha256,  -- omitted
//!                            certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }
//! ```

use const_oid::ObjectIdentifier;
use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use der::Encode;

use crate::asn1::{self, cons, tlv};
use crate::query::{TimeStampQuery, parse_query};
use crate::{FailInfo, HashAlg, Refusal, TsaError, granted, oids, rejection};

/// The clock's accuracy, stated in every token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accuracy {
    pub micros: u64,
}

impl Accuracy {
    pub fn from_micros(micros: u64) -> Self {
        Accuracy { micros }
    }

    /// `None` for a zero accuracy (the field is then omitted).
    fn der(self) -> Option<Vec<u8>> {
        let seconds = self.micros / 1_000_000;
        let millis = (self.micros / 1000) % 1000;
        let micros = self.micros % 1000;
        let mut parts = Vec::new();
        if seconds > 0 {
            parts.push(tlv(
                asn1::INTEGER,
                &asn1::unsigned_integer_content(&seconds.to_be_bytes()),
            ));
        }
        if millis > 0 {
            parts.push(tlv(
                asn1::ctx_prim(0),
                &asn1::unsigned_integer_content(&millis.to_be_bytes()),
            ));
        }
        if micros > 0 {
            parts.push(tlv(
                asn1::ctx_prim(1),
                &asn1::unsigned_integer_content(&micros.to_be_bytes()),
            ));
        }
        (!parts.is_empty()).then(|| tlv(asn1::SEQUENCE, &parts.concat()))
    }
}

/// What the caller supplies for one token: the time, a fresh random serial, the accuracy.
#[derive(Debug, Clone, Copy)]
pub struct StampContext {
    /// Unix seconds (the genTime).
    pub now: i64,
    /// 128 random bits; the serial is this number, positive.
    pub serial: [u8; 16],
    pub accuracy: Option<Accuracy>,
}

/// A token issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The `TimeStampToken` (CMS `ContentInfo`), DER.
    pub token: Vec<u8>,
    /// Content octets of the serialNumber INTEGER.
    pub serial: Vec<u8>,
    pub gen_time: i64,
    pub hash: HashAlg,
    pub imprint: Vec<u8>,
}

/// What became of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Granted(Granted),
    Rejected(Refusal),
}

/// A `TimeStampResp` and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub der: Vec<u8>,
    pub outcome: Outcome,
}

impl Response {
    pub fn rejected(refusal: Refusal) -> Self {
        Response {
            der: rejection(refusal.fail, &refusal.reason),
            outcome: Outcome::Rejected(refusal),
        }
    }
}

/// A time-stamping authority: its certificate, policy and signature algorithm.
#[derive(Debug, Clone)]
pub struct Authority {
    policy: ObjectIdentifier,
    certificate: Vec<u8>,
    signature: SignatureAlgorithm,
    digest: HashAlg,
    signature_algorithm_der: Vec<u8>,
    /// `IssuerAndSerialNumber` of the TSA certificate.
    sid: Vec<u8>,
    /// The `signing-certificate-v2` attribute, encoded once.
    ess_attribute: Vec<u8>,
    /// `[0] GeneralName` (directoryName of the subject), when the name is included.
    tsa_name: Option<Vec<u8>>,
}

impl Authority {
    /// `certificate` must certify `signer`'s key and be a TSA certificate (EKU timeStamping
    /// only, critical).
    pub fn new(
        policy: &str,
        certificate: Vec<u8>,
        signer: &dyn Signer,
        include_name: bool,
    ) -> Result<Self, TsaError> {
        let policy = ObjectIdentifier::new(policy)
            .map_err(|e| TsaError::Config(format!("policy {policy:?}: {e}")))?;
        let info = crate::verify::tsa_certificate(&certificate)
            .map_err(|e| TsaError::Certificate(e.to_string()))?;
        if info.spki != signer.public_key_der() {
            return Err(TsaError::Certificate(format!(
                "the certificate does not certify the key {:?}",
                signer.label()
            )));
        }
        let signature = signer.key_algorithm().default_signature();
        let digest = match signature {
            SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::EcdsaSha256 => HashAlg::Sha256,
            _ => HashAlg::Sha384,
        };
        let signature_algorithm_der = cps_pki::signature_algorithm_identifier(signature)
            .map_err(|e| TsaError::Config(e.to_string()))?
            .to_der()
            .map_err(|e| TsaError::Config(e.to_string()))?;
        let serial = tlv(asn1::INTEGER, &info.serial);
        let sid = cons(asn1::SEQUENCE, &[&info.issuer, &serial]);
        let general_names = tlv(asn1::SEQUENCE, &tlv(asn1::ctx_cons(4), &info.issuer));
        let issuer_serial = cons(asn1::SEQUENCE, &[&general_names, &serial]);
        let cert_hash = tlv(asn1::OCTET_STRING, &HashAlg::Sha256.digest(&certificate));
        let ess_cert_id = cons(asn1::SEQUENCE, &[&cert_hash, &issuer_serial]);
        let signing_certificate = tlv(asn1::SEQUENCE, &tlv(asn1::SEQUENCE, &ess_cert_id));
        let ess_attribute = attribute(&oids::SIGNING_CERTIFICATE_V2, &signing_certificate);
        let tsa_name =
            include_name.then(|| tlv(asn1::ctx_cons(0), &tlv(asn1::ctx_cons(4), &info.subject)));
        Ok(Authority {
            policy,
            certificate,
            signature,
            digest,
            signature_algorithm_der,
            sid,
            ess_attribute,
            tsa_name,
        })
    }

    pub fn policy(&self) -> &ObjectIdentifier {
        &self.policy
    }

    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Whether the query may be served under our policy.
    pub fn check_policy(&self, query: &TimeStampQuery) -> Result<(), Refusal> {
        match &query.policy {
            Some(p) if p.as_slice() != self.policy.as_bytes() => Err(Refusal::new(
                FailInfo::UnacceptedPolicy,
                format!(
                    "policy {} is not served (only {})",
                    ObjectIdentifier::from_bytes(p)
                        .map(|o| o.to_string())
                        .unwrap_or_else(|_| "(invalid)".into()),
                    self.policy
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Answer a DER `TimeStampReq`. A signing failure is a `systemFailure` rejection.
    pub fn respond(&self, signer: &dyn Signer, query_der: &[u8], ctx: &StampContext) -> Response {
        let query = match parse_query(query_der).and_then(|q| self.check_policy(&q).map(|_| q)) {
            Ok(q) => q,
            Err(r) => return Response::rejected(r),
        };
        match self.issue(signer, &query, ctx) {
            Ok(g) => Response {
                der: granted(&g.token),
                outcome: Outcome::Granted(g),
            },
            Err(e) => Response::rejected(Refusal::new(FailInfo::SystemFailure, e.to_string())),
        }
    }

    /// A token over `digest` (for in-process callers), with the certificate included.
    pub fn stamp(
        &self,
        signer: &dyn Signer,
        hash: HashAlg,
        digest: &[u8],
        nonce: Option<&[u8]>,
        ctx: &StampContext,
    ) -> Result<Granted, TsaError> {
        if !hash.stampable() {
            return Err(TsaError::Hash(hash));
        }
        if digest.len() != hash.output_len() {
            return Err(TsaError::ImprintLength {
                hash,
                got: digest.len(),
                expected: hash.output_len(),
            });
        }
        let nonce = match nonce {
            Some(n) => {
                asn1::check_integer(n).map_err(|e| TsaError::Config(format!("nonce: {e}")))?;
                Some(n.to_vec())
            }
            None => None,
        };
        let query = TimeStampQuery {
            hash,
            imprint: digest.to_vec(),
            message_imprint_der: cons(
                asn1::SEQUENCE,
                &[
                    &hash.algorithm_identifier(),
                    &tlv(asn1::OCTET_STRING, digest),
                ],
            ),
            policy: None,
            nonce,
            cert_req: true,
        };
        self.issue(signer, &query, ctx)
    }

    fn issue(
        &self,
        signer: &dyn Signer,
        query: &TimeStampQuery,
        ctx: &StampContext,
    ) -> Result<Granted, TsaError> {
        if ctx.serial.iter().all(|&b| b == 0) {
            return Err(TsaError::Config("zero serial".into()));
        }
        let serial = asn1::unsigned_integer_content(&ctx.serial);
        let gen_time = asn1::generalized_time(ctx.now).ok_or(TsaError::Time(ctx.now))?;
        let mut tst = vec![
            tlv(asn1::INTEGER, &[1]),
            oids::der(&self.policy),
            query.message_imprint_der.clone(),
            tlv(asn1::INTEGER, &serial),
            gen_time,
        ];
        if let Some(a) = ctx.accuracy.and_then(Accuracy::der) {
            tst.push(a);
        }
        if let Some(n) = &query.nonce {
            tst.push(tlv(asn1::INTEGER, n));
        }
        if let Some(name) = &self.tsa_name {
            tst.push(name.clone());
        }
        let tst_info = tlv(asn1::SEQUENCE, &tst.concat());
        let token = self.sign(signer, &tst_info, query.cert_req)?;
        Ok(Granted {
            token,
            serial,
            gen_time: ctx.now,
            hash: query.hash,
            imprint: query.imprint.clone(),
        })
    }

    fn sign(
        &self,
        signer: &dyn Signer,
        tst_info: &[u8],
        with_certificate: bool,
    ) -> Result<Vec<u8>, TsaError> {
        let content_type = attribute(&oids::CONTENT_TYPE, &oids::der(&oids::TST_INFO));
        let message_digest = attribute(
            &oids::MESSAGE_DIGEST,
            &tlv(asn1::OCTET_STRING, &self.digest.digest(tst_info)),
        );
        let mut attrs = [content_type, message_digest, self.ess_attribute.clone()];
        attrs.sort();
        let attrs = attrs.concat();
        let signature = signer.sign(self.signature, &tlv(asn1::SET, &attrs), SigFormat::Der)?;
        let digest_alg = self.digest.algorithm_identifier();
        let signer_info = cons(
            asn1::SEQUENCE,
            &[
                &tlv(asn1::INTEGER, &[1]),
                &self.sid,
                &digest_alg,
                &tlv(asn1::ctx_cons(0), &attrs),
                &self.signature_algorithm_der,
                &tlv(asn1::OCTET_STRING, &signature),
            ],
        );
        let encap = cons(
            asn1::SEQUENCE,
            &[
                &oids::der(&oids::TST_INFO),
                &tlv(asn1::ctx_cons(0), &tlv(asn1::OCTET_STRING, tst_info)),
            ],
        );
        let certificates = if with_certificate {
            tlv(asn1::ctx_cons(0), &self.certificate)
        } else {
            Vec::new()
        };
        let signed_data = cons(
            asn1::SEQUENCE,
            &[
                &tlv(asn1::INTEGER, &[3]),
                &tlv(asn1::SET, &digest_alg),
                &encap,
                &certificates,
                &tlv(asn1::SET, &signer_info),
            ],
        );
        Ok(cons(
            asn1::SEQUENCE,
            &[
                &oids::der(&oids::SIGNED_DATA),
                &tlv(asn1::ctx_cons(0), &signed_data),
            ],
        ))
    }
}

/// `Attribute ::= SEQUENCE { attrType OID, attrValues SET OF AttributeValue }` with one value.
fn attribute(oid: &ObjectIdentifier, value: &[u8]) -> Vec<u8> {
    cons(asn1::SEQUENCE, &[&oids::der(oid), &tlv(asn1::SET, value)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_encoding() {
        assert_eq!(Accuracy::from_micros(0).der(), None);
        assert_eq!(
            Accuracy::from_micros(1_002_003).der().unwrap(),
            vec![
                0x30, 0x09, 0x02, 0x01, 0x01, 0x80, 0x01, 0x02, 0x81, 0x01, 0x03
            ]
        );
        assert_eq!(
            Accuracy::from_micros(500_000).der().unwrap(),
            vec![0x30, 0x04, 0x80, 0x02, 0x01, 0xf4]
        );
    }
}
