//! DER encoding of `OCSPResponse` / `BasicOCSPResponse` (RFC 6960 §4.2.1) with `der` 0.8.
//!
//! ```text
//! OCSPResponse ::= SEQUENCE {
//!    responseStatus         OCSPResponseStatus,
//!    responseBytes          [0] EXPLICIT ResponseBytes OPTIONAL }
//! ResponseBytes ::= SEQUENCE { responseType OBJECT IDENTIFIER, response OCTET STRING }
//! BasicOCSPResponse ::= SEQUENCE {
//!    tbsResponseData      ResponseData,
//!    signatureAlgorithm   AlgorithmIdentifier,
//!    signature            BIT STRING,
//!    certs            [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
//! ResponseData ::= SEQUENCE {
//!    version              [0] EXPLICIT Version DEFAULT v1,      -- omitted (v1)
//!    responderID              ResponderID,                      -- byKey [2] EXPLICIT KeyHash
//!    producedAt               GeneralizedTime,
//!    responses                SEQUENCE OF SingleResponse,
//!    responseExtensions   [1] EXPLICIT Extensions OPTIONAL }
//! SingleResponse ::= SEQUENCE {
//!    certID                       CertID,                       -- echoed verbatim
//!    certStatus                   CertStatus,
//!    thisUpdate                   GeneralizedTime,
//!    nextUpdate         [0]       EXPLICIT GeneralizedTime OPTIONAL,
//!    singleExtensions   [1]       EXPLICIT Extensions OPTIONAL } -- not used
//! CertStatus ::= CHOICE {
//!    good        [0]     IMPLICIT NULL,
//!    revoked     [1]     IMPLICIT RevokedInfo,
//!    unknown     [2]     IMPLICIT UnknownInfo }
//! RevokedInfo ::= SEQUENCE {
//!    revocationTime              GeneralizedTime,
//!    revocationReason    [0]     EXPLICIT CRLReason OPTIONAL }
//! ```
//!
//! `der`'s `GeneralizedTime` is always `YYYYMMDDHHMMSSZ` (no fractional seconds), as RFC 5280
//! §4.1.2.5.2 and RFC 6960 require.

use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, BitStringRef, GeneralizedTime, IntRef, Null, OctetStringRef};
use der::{Choice, Decode, Encode, Enumerated, Sequence, Tag};

use crate::CrlReason;
use crate::oids;
use crate::parse::CertIdHash;

/// The status of one SingleResponse, as it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SingleStatus {
    Good,
    Revoked {
        time: i64,
        reason: Option<CrlReason>,
    },
    Unknown,
}

pub(crate) struct Single<'a> {
    /// The CertID TLV exactly as received.
    pub cert_id: &'a [u8],
    pub status: SingleStatus,
}

#[derive(Sequence)]
struct RevokedInfo {
    revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    revocation_reason: Option<CrlReason>,
}

#[derive(Choice)]
enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

#[derive(Sequence)]
struct SingleResponse<'a> {
    cert_id: AnyRef<'a>,
    cert_status: CertStatus,
    this_update: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    next_update: Option<GeneralizedTime>,
}

#[derive(Sequence)]
struct ResponseData<'a> {
    /// `ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash }`, explicit tags.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    responder_id: &'a OctetStringRef,
    produced_at: GeneralizedTime,
    responses: Vec<SingleResponse<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    response_extensions: Option<Vec<AnyRef<'a>>>,
}

#[derive(Sequence)]
struct BasicOcspResponse<'a> {
    tbs_response_data: AnyRef<'a>,
    signature_algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    certs: Vec<AnyRef<'a>>,
}

#[derive(Sequence)]
struct ResponseBytes<'a> {
    response_type: ObjectIdentifier,
    response: &'a OctetStringRef,
}

#[derive(Clone, Copy, Enumerated)]
#[repr(u8)]
enum Status {
    Successful = 0,
}

#[derive(Sequence)]
struct OcspResponse<'a> {
    response_status: Status,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    response_bytes: ResponseBytes<'a>,
}

#[derive(Sequence)]
struct AlgorithmIdentifier<'a> {
    algorithm: ObjectIdentifier,
    parameters: Option<AnyRef<'a>>,
}

#[derive(Sequence)]
struct CertId<'a> {
    hash_algorithm: AlgorithmIdentifier<'a>,
    issuer_name_hash: &'a OctetStringRef,
    issuer_key_hash: &'a OctetStringRef,
    serial_number: IntRef<'a>,
}

/// Unix seconds → GeneralizedTime (seconds precision, `Z`).
pub(crate) fn generalized_time(unix: i64) -> Result<GeneralizedTime, der::Error> {
    let secs = u64::try_from(unix).map_err(|_| der::Error::from(der::ErrorKind::DateTime))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
}

/// The DER of `ResponseData` (what gets signed).
pub(crate) fn response_data(
    responder_key_hash: &[u8],
    produced_at: i64,
    singles: &[Single<'_>],
    this_update: i64,
    next_update: i64,
    extensions: &[&[u8]],
) -> Result<Vec<u8>, der::Error> {
    let this_update = generalized_time(this_update)?;
    let next_update = generalized_time(next_update)?;
    let mut responses = Vec::with_capacity(singles.len());
    for s in singles {
        let cert_status = match s.status {
            SingleStatus::Good => CertStatus::Good(Null),
            SingleStatus::Unknown => CertStatus::Unknown(Null),
            SingleStatus::Revoked { time, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: generalized_time(time)?,
                revocation_reason: reason,
            }),
        };
        responses.push(SingleResponse {
            cert_id: AnyRef::from_der(s.cert_id)?,
            cert_status,
            this_update,
            next_update: Some(next_update),
        });
    }
    let response_extensions = if extensions.is_empty() {
        None
    } else {
        Some(
            extensions
                .iter()
                .map(|e| AnyRef::from_der(e))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    ResponseData {
        responder_id: OctetStringRef::new(responder_key_hash)?,
        produced_at: generalized_time(produced_at)?,
        responses,
        response_extensions,
    }
    .to_der()
}

/// The whole successful `OCSPResponse` around a signed `ResponseData`.
pub(crate) fn ocsp_response(
    tbs_response_data: &[u8],
    signature_algorithm_der: &[u8],
    signature: &[u8],
    responder_cert_der: &[u8],
) -> Result<Vec<u8>, der::Error> {
    let basic = BasicOcspResponse {
        tbs_response_data: AnyRef::from_der(tbs_response_data)?,
        signature_algorithm: AnyRef::from_der(signature_algorithm_der)?,
        signature: BitStringRef::from_bytes(signature)?,
        certs: vec![AnyRef::from_der(responder_cert_der)?],
    }
    .to_der()?;
    OcspResponse {
        response_status: Status::Successful,
        response_bytes: ResponseBytes {
            response_type: oids::OCSP_BASIC,
            response: OctetStringRef::new(&basic)?,
        },
    }
    .to_der()
}

/// The DER of a CertID, with or without NULL hash parameters.
pub(crate) fn cert_id(
    hash: CertIdHash,
    null_params: bool,
    name_hash: &[u8],
    key_hash: &[u8],
    serial: &[u8],
) -> Result<Vec<u8>, der::Error> {
    CertId {
        hash_algorithm: AlgorithmIdentifier {
            algorithm: hash.oid(),
            parameters: null_params
                .then(|| AnyRef::new(Tag::Null, &[]).ok())
                .flatten(),
        },
        issuer_name_hash: OctetStringRef::new(name_hash)?,
        issuer_key_hash: OctetStringRef::new(key_hash)?,
        serial_number: IntRef::new(serial)?,
    }
    .to_der()
}

/// `Extension { id-pkix-ocsp-extended-revoke, critical FALSE (omitted), extnValue NULL }`
/// (RFC 6960 §4.4.8: MUST NOT be critical).
pub(crate) fn extended_revoke_extension() -> Result<Vec<u8>, der::Error> {
    #[derive(Sequence)]
    struct Extension<'a> {
        extn_id: ObjectIdentifier,
        extn_value: &'a OctetStringRef,
    }
    let null = Null.to_der()?;
    Extension {
        extn_id: oids::EXTENDED_REVOKE,
        extn_value: OctetStringRef::new(&null)?,
    }
    .to_der()
}

/// `OCSPResponse { responseStatus }` for the error statuses (no responseBytes).
pub(crate) const fn error_response(status: u8) -> [u8; 5] {
    [0x30, 0x03, 0x0a, 0x01, status]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_encodings() {
        assert_eq!(
            hex(&extended_revoke_extension().unwrap()),
            "300f06092b0601050507300109040205 00".replace(' ', "")
        );
        assert_eq!(
            hex(&generalized_time(0).unwrap().to_der().unwrap()),
            hex(b"\x18\x0f19700101000000Z")
        );
        assert!(generalized_time(-1).is_err());
        let id = cert_id(CertIdHash::Sha1, true, &[1; 20], &[2; 20], &[0x01]).unwrap();
        assert_eq!(
            &id[..13],
            &[
                0x30, 0x3a, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00
            ]
        );
        let id = cert_id(CertIdHash::Sha256, false, &[1; 32], &[2; 32], &[0x01]).unwrap();
        assert_eq!(&id[..4], &[0x30, 0x54, 0x30, 0x0b]);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
