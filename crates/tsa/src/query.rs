//! Strict parsing of `TimeStampReq` (RFC 3161 §2.4.1).
//!
//! ```text
//! TimeStampReq ::= SEQUENCE {
//!    version          INTEGER { v1(1) },
//!    messageImprint   MessageImprint,
//!    reqPolicy        TSAPolicyId OPTIONAL,
//!    nonce            INTEGER OPTIONAL,
//!    certReq          BOOLEAN DEFAULT FALSE,
//!    extensions   [0] IMPLICIT Extensions OPTIONAL }
//! MessageImprint ::= SEQUENCE {
//!    hashAlgorithm    AlgorithmIdentifier,
//!    hashedMessage    OCTET STRING }
//! ```

use crate::asn1::{self, DerError, Reader};
use crate::{FailInfo, HashAlg, Refusal};

/// Largest query accepted: a SHA-512 imprint, a policy and a 64-byte nonce fit in 250 bytes.
pub const MAX_QUERY_LEN: usize = 1024;
/// Largest nonce accepted, in content octets.
pub const MAX_NONCE_LEN: usize = 64;

/// A valid query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeStampQuery {
    pub hash: HashAlg,
    pub imprint: Vec<u8>,
    /// The `MessageImprint` TLV exactly as received (echoed in the token).
    pub message_imprint_der: Vec<u8>,
    /// Content octets of the requested policy OID.
    pub policy: Option<Vec<u8>>,
    /// Content octets of the nonce INTEGER (echoed verbatim).
    pub nonce: Option<Vec<u8>>,
    pub cert_req: bool,
}

fn format(what: &str) -> impl Fn(DerError) -> Refusal + '_ {
    move |e| Refusal::new(FailInfo::BadDataFormat, format!("{what}: {e}"))
}

/// Parse a DER `TimeStampReq`. Refusals: `badRequest` (too large, version ≠ 1), `badDataFormat`
/// (not DER, truncated, trailing bytes, imprint length ≠ hash length, bad nonce), `badAlg`
/// (unknown or weak hash, hash parameters other than absent/NULL), `unacceptedExtension`
/// (any request extension: this authority supports none).
pub fn parse_query(der: &[u8]) -> Result<TimeStampQuery, Refusal> {
    if der.len() > MAX_QUERY_LEN {
        return Err(Refusal::new(
            FailInfo::BadRequest,
            format!("query of {} bytes (at most {MAX_QUERY_LEN})", der.len()),
        ));
    }
    let req = asn1::single(der, asn1::SEQUENCE).map_err(format("TimeStampReq"))?;
    let mut r = Reader::new(req.value);
    let version = r.integer().map_err(format("version"))?;
    if version != [1] {
        return Err(Refusal::new(
            FailInfo::BadRequest,
            "TimeStampReq version is not 1",
        ));
    }
    let mi = r.expect(asn1::SEQUENCE).map_err(format("messageImprint"))?;
    let (hash, imprint) = message_imprint(mi.value)?;
    let policy = r
        .optional(asn1::OID)
        .map_err(format("reqPolicy"))?
        .map(|t| t.value.to_vec());
    if policy.as_deref() == Some(&[]) {
        return Err(Refusal::new(FailInfo::BadDataFormat, "empty reqPolicy"));
    }
    let nonce = match r.optional(asn1::INTEGER).map_err(format("nonce"))? {
        None => None,
        Some(t) => {
            asn1::check_integer(t.value).map_err(format("nonce"))?;
            if t.value.len() > MAX_NONCE_LEN {
                return Err(Refusal::new(
                    FailInfo::BadDataFormat,
                    format!("nonce of {} bytes (at most {MAX_NONCE_LEN})", t.value.len()),
                ));
            }
            Some(t.value.to_vec())
        }
    };
    let cert_req = match r.optional(asn1::BOOLEAN).map_err(format("certReq"))? {
        None => false,
        Some(t) => match t.value {
            [0xff] => true,
            // DER: a value equal to its DEFAULT is omitted.
            [0x00] => {
                return Err(Refusal::new(
                    FailInfo::BadDataFormat,
                    "certReq FALSE encoded (DER omits the default)",
                ));
            }
            _ => return Err(format("certReq")(DerError::BadBoolean)),
        },
    };
    if r.optional(asn1::ctx_cons(0))
        .map_err(format("extensions"))?
        .is_some()
    {
        return Err(Refusal::new(
            FailInfo::UnacceptedExtension,
            "request extensions are not supported",
        ));
    }
    r.finish().map_err(format("TimeStampReq"))?;
    Ok(TimeStampQuery {
        hash,
        imprint,
        message_imprint_der: mi.raw.to_vec(),
        policy,
        nonce,
        cert_req,
    })
}

fn message_imprint(value: &[u8]) -> Result<(HashAlg, Vec<u8>), Refusal> {
    let mut r = Reader::new(value);
    let alg = r.expect(asn1::SEQUENCE).map_err(format("hashAlgorithm"))?;
    let hashed = r
        .expect(asn1::OCTET_STRING)
        .map_err(format("hashedMessage"))?;
    r.finish().map_err(format("messageImprint"))?;
    let mut a = Reader::new(alg.value);
    let oid = a.expect(asn1::OID).map_err(format("hashAlgorithm"))?;
    let hash = HashAlg::from_oid_bytes(oid.value)
        .filter(|h| h.stampable())
        .ok_or_else(|| {
            Refusal::new(
                FailInfo::BadAlg,
                "hash algorithm not supported (SHA-256, SHA-384 or SHA-512)",
            )
        })?;
    if let Some(p) = a.optional(asn1::NULL).map_err(format("hash parameters"))?
        && !p.value.is_empty()
    {
        return Err(format("hash parameters")(DerError::Truncated));
    }
    if !a.is_empty() {
        return Err(Refusal::new(
            FailInfo::BadAlg,
            "hash algorithm parameters other than absent or NULL",
        ));
    }
    if hashed.value.len() != hash.output_len() {
        return Err(Refusal::new(
            FailInfo::BadDataFormat,
            format!(
                "imprint of {} bytes for {hash} (expected {})",
                hashed.value.len(),
                hash.output_len()
            ),
        ));
    }
    Ok((hash, hashed.value.to_vec()))
}

/// A DER `TimeStampReq` (what a client sends): version 1, the imprint of `digest` under `hash`
/// (parameters NULL, as openssl writes them), the `nonce` (content octets of a positive
/// INTEGER, leading zeros stripped) when given, and `certReq` when `cert_req` (the token then
/// carries the TSA certificate).
pub fn build_query(hash: HashAlg, digest: &[u8], nonce: Option<&[u8]>, cert_req: bool) -> Vec<u8> {
    let alg = asn1::cons(
        asn1::SEQUENCE,
        &[&crate::oids::der(&hash.oid()), &[0x05, 0x00]],
    );
    let imprint = asn1::cons(asn1::SEQUENCE, &[&alg, &asn1::tlv(0x04, digest)]);
    let mut parts: Vec<Vec<u8>> = vec![asn1::tlv(0x02, &[1]), imprint];
    if let Some(n) = nonce {
        parts.push(asn1::tlv(0x02, &asn1::unsigned_integer_content(n)));
    }
    if cert_req {
        parts.push(vec![0x01, 0x01, 0xFF]);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    asn1::cons(asn1::SEQUENCE, &refs)
}
