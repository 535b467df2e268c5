//! Sans-IO time-stamping authority (RFC 3161, with the ESSCertIDv2 rules of RFC 5816).
//!
//! * [`parse_query`] reads a `TimeStampReq` strictly (DER only, [`MAX_QUERY_LEN`]); every refusal
//!   carries the `PKIFailureInfo` bit RFC 3161 names for it ([`Refusal`]).
//! * [`Authority`] holds the TSA certificate and policy and issues tokens: a `TSTInfo` (v1, our
//!   policy, the imprint echoed, the caller's serial and time, accuracy from the clock, no
//!   ordering, the nonce echoed, the TSA name) inside a CMS `SignedData` v3 whose signed
//!   attributes are content-type, message-digest and signing-certificate-v2 (`ESSCertIDv2`,
//!   SHA-256, with `issuerSerial`). The signature is made through [`cps_hsm::Signer`]; time and
//!   serial are passed in.
//! * [`Authority::respond`] turns a query into a `TimeStampResp`: a token, or a rejection with
//!   one failure bit and no token.
//! * [`verify_token`] checks a token (CMS structure, signed attributes, the signature with the
//!   certificate the token carries, that certificate's EKU). Chain validation is the caller's.

mod asn1;
mod issue;
mod oids;
mod query;
mod verify;

pub use issue::{Accuracy, Authority, Granted, Outcome, Response, StampContext};
pub use query::{MAX_NONCE_LEN, MAX_QUERY_LEN, TimeStampQuery, build_query, parse_query};
pub use verify::{ParsedResponse, TimestampToken, TokenError, parse_response, verify_token};

use const_oid::ObjectIdentifier;

/// Hash algorithms of a message imprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// Accepted in tokens made by others (RFC 5816 `ESSCertID`); never stamped by us.
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    pub fn oid(self) -> ObjectIdentifier {
        match self {
            HashAlg::Sha1 => oids::SHA1,
            HashAlg::Sha256 => oids::SHA256,
            HashAlg::Sha384 => oids::SHA384,
            HashAlg::Sha512 => oids::SHA512,
        }
    }

    /// Length of the hash value in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// Whether we time-stamp imprints of this algorithm (SHA-1 is refused as weak).
    pub fn stampable(self) -> bool {
        self != HashAlg::Sha1
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlg::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &ring::digest::SHA256,
            HashAlg::Sha384 => &ring::digest::SHA384,
            HashAlg::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }

    pub(crate) fn from_oid_bytes(oid: &[u8]) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|h| h.oid().as_bytes() == oid)
    }

    /// `AlgorithmIdentifier` with absent parameters (RFC 5754).
    pub(crate) fn algorithm_identifier(self) -> Vec<u8> {
        asn1::tlv(asn1::SEQUENCE, &oids::der(&self.oid()))
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `PKIFailureInfo` bits (RFC 3161 §2.4.2) this authority answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailInfo {
    /// Unrecognized or unsupported (or weak) hash algorithm.
    BadAlg = 0,
    /// Transaction not permitted or supported (wrong version, wrong content type, too large).
    BadRequest = 2,
    /// The data submitted has the wrong format (not DER, truncated, trailing bytes, an imprint
    /// whose length does not match its hash).
    BadDataFormat = 5,
    /// The requested TSA policy is not supported.
    UnacceptedPolicy = 15,
    /// The requested extension is not supported.
    UnacceptedExtension = 16,
    /// The request cannot be handled due to system failure (untrusted clock, HSM error).
    SystemFailure = 25,
}

impl FailInfo {
    pub fn bit(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadDataFormat => "badDataFormat",
            FailInfo::UnacceptedPolicy => "unacceptedPolicy",
            FailInfo::UnacceptedExtension => "unacceptedExtension",
            FailInfo::SystemFailure => "systemFailure",
        }
    }

    /// Every failure this authority reports.
    pub const ALL: [FailInfo; 6] = [
        FailInfo::BadAlg,
        FailInfo::BadRequest,
        FailInfo::BadDataFormat,
        FailInfo::UnacceptedPolicy,
        FailInfo::UnacceptedExtension,
        FailInfo::SystemFailure,
    ];

    pub(crate) fn from_bit(bit: u8) -> Option<FailInfo> {
        Self::ALL.into_iter().find(|f| f.bit() == bit)
    }

    /// The DER `BIT STRING` with only this bit set (named bit list: trailing zeros removed).
    pub(crate) fn bit_string(self) -> Vec<u8> {
        let n = usize::from(self.bit());
        let mut content = vec![0u8; n / 8 + 2];
        content[0] = 7 - (n % 8) as u8;
        content[1 + n / 8] = 0x80 >> (n % 8);
        asn1::tlv(asn1::BIT_STRING, &content)
    }
}

impl std::fmt::Display for FailInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a query was refused: the failure bit sent back and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fail}: {reason}")]
pub struct Refusal {
    pub fail: FailInfo,
    pub reason: String,
}

impl Refusal {
    pub fn new(fail: FailInfo, reason: impl Into<String>) -> Self {
        Refusal {
            fail,
            reason: reason.into(),
        }
    }
}

/// Errors of the authority itself (configuration, signing), as opposed to refusals of a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsaError {
    #[error("TSA certificate: {0}")]
    Certificate(String),
    #[error("TSA configuration: {0}")]
    Config(String),
    #[error("hash {0} is not stamped")]
    Hash(HashAlg),
    #[error("imprint of {got} bytes for {hash} (expected {expected})")]
    ImprintLength {
        hash: HashAlg,
        got: usize,
        expected: usize,
    },
    #[error("time {0} cannot be encoded")]
    Time(i64),
    #[error("signing: {0}")]
    Signing(#[from] cps_hsm::HsmError),
}

/// `TimeStampResp` with status rejection (2), a status string and one failure bit; no token.
pub fn rejection(fail: FailInfo, text: &str) -> Vec<u8> {
    let status = asn1::tlv(asn1::INTEGER, &[2]);
    let text = asn1::tlv(
        asn1::SEQUENCE,
        &asn1::tlv(asn1::UTF8_STRING, text.as_bytes()),
    );
    let info = asn1::cons(asn1::SEQUENCE, &[&status, &text, &fail.bit_string()]);
    asn1::tlv(asn1::SEQUENCE, &info)
}

/// `TimeStampResp` with status granted (0) and the token.
pub fn granted(token: &[u8]) -> Vec<u8> {
    let info = asn1::tlv(asn1::SEQUENCE, &asn1::tlv(asn1::INTEGER, &[0]));
    asn1::cons(asn1::SEQUENCE, &[&info, token])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_info_bits() {
        let hex = |f: FailInfo| {
            f.bit_string()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(hex(FailInfo::BadAlg), "03020780");
        assert_eq!(hex(FailInfo::BadRequest), "03020520");
        assert_eq!(hex(FailInfo::BadDataFormat), "03020204");
        assert_eq!(hex(FailInfo::UnacceptedPolicy), "0303000001");
        assert_eq!(hex(FailInfo::UnacceptedExtension), "030407000080");
        assert_eq!(hex(FailInfo::SystemFailure), "03050600000040");
    }

    #[test]
    fn rejection_round_trip() {
        for f in FailInfo::ALL {
            let r = parse_response(&rejection(f, "no")).unwrap();
            assert_eq!(r.status, 2);
            assert_eq!(r.fail_info, vec![f]);
            assert!(r.token.is_none());
            assert_eq!(r.status_text.as_deref(), Some("no"));
        }
    }
}
