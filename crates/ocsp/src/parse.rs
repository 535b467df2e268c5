//! Strict DER parsing of `OCSPRequest` (RFC 6960 §4.1.1) with `der` 0.8, without allocation.
//!
//! ```text
//! OCSPRequest ::= SEQUENCE {
//!     tbsRequest                  TBSRequest,
//!     optionalSignature   [0]     EXPLICIT Signature OPTIONAL }
//! TBSRequest ::= SEQUENCE {
//!     version             [0]     EXPLICIT Version DEFAULT v1,
//!     requestorName       [1]     EXPLICIT GeneralName OPTIONAL,
//!     requestList                 SEQUENCE OF Request,
//!     requestExtensions   [2]     EXPLICIT Extensions OPTIONAL }
//! Request ::= SEQUENCE {
//!     reqCert                     CertID,
//!     singleRequestExtensions     [0] EXPLICIT Extensions OPTIONAL }
//! CertID ::= SEQUENCE {
//!     hashAlgorithm       AlgorithmIdentifier,
//!     issuerNameHash      OCTET STRING,
//!     issuerKeyHash       OCTET STRING,
//!     serialNumber        CertificateSerialNumber }
//! ```
//!
//! Every element is read through `der`'s strict DER reader (definite, minimal lengths; minimal
//! INTEGERs; BOOLEAN 0x00/0xFF). Object identifiers are compared as raw content octets, so an
//! unknown (non-critical) extension with an OID that `const-oid` cannot hold is still ignored
//! rather than rejected.

use der::asn1::IntRef;
use der::{Decode, Header, Reader, SliceReader, Tag, TagNumber};

use crate::oids;

/// Why a request was refused as `malformedRequest`.
#[derive(Debug, Clone)]
pub(crate) struct Malformed {
    pub what: &'static str,
    pub der: Option<der::Error>,
}

impl Malformed {
    pub(crate) fn new(what: &'static str) -> Self {
        Malformed { what, der: None }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.der {
            Some(e) => write!(f, "{}: {e}", self.what),
            None => f.write_str(self.what),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Malformed>;

pub(crate) trait Context<T> {
    fn ctx(self, what: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, der::Error> {
    fn ctx(self, what: &'static str) -> Result<T> {
        self.map_err(|e| Malformed { what, der: Some(e) })
    }
}

/// The hash algorithms accepted in a CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl CertIdHash {
    pub(crate) const ALL: [CertIdHash; 4] = [
        CertIdHash::Sha1,
        CertIdHash::Sha256,
        CertIdHash::Sha384,
        CertIdHash::Sha512,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            CertIdHash::Sha1 => 0,
            CertIdHash::Sha256 => 1,
            CertIdHash::Sha384 => 2,
            CertIdHash::Sha512 => 3,
        }
    }

    pub(crate) fn oid(self) -> const_oid::ObjectIdentifier {
        match self {
            CertIdHash::Sha1 => oids::SHA1,
            CertIdHash::Sha256 => oids::SHA256,
            CertIdHash::Sha384 => oids::SHA384,
            CertIdHash::Sha512 => oids::SHA512,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> ring::digest::Digest {
        let alg = match self {
            CertIdHash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &ring::digest::SHA256,
            CertIdHash::Sha384 => &ring::digest::SHA384,
            CertIdHash::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data)
    }

    fn from_oid_bytes(oid: &[u8]) -> Option<Self> {
        CertIdHash::ALL
            .into_iter()
            .find(|h| h.oid().as_bytes() == oid)
    }
}

/// A CertID as received, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertIdRef<'a> {
    /// The whole CertID TLV, echoed verbatim in the SingleResponse and used as cache key.
    pub raw: &'a [u8],
    /// `None`: a hash algorithm we do not support → the issuer cannot match.
    pub hash: Option<CertIdHash>,
    pub name_hash: &'a [u8],
    pub key_hash: &'a [u8],
    /// Content octets of the serialNumber INTEGER (DER-minimal, may be negative).
    pub serial: &'a [u8],
}

/// A validated request. `list` is the content of requestList, already checked element by
/// element; iterate it again with [`requests`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParsedRequest<'a> {
    list: &'a [u8],
    pub count: usize,
    pub first: CertIdRef<'a>,
    /// The nonce Extension TLV, exactly as received (echoed verbatim).
    pub nonce: Option<&'a [u8]>,
}

impl<'a> ParsedRequest<'a> {
    /// The CertIDs in request order. The list was validated by [`parse_request`], so this
    /// yields exactly `count` items; any surprise is reported as an error, never a panic.
    pub fn cert_ids(&self) -> impl Iterator<Item = Result<CertIdRef<'a>>> + 'a {
        let mut cursor = Cursor::new(self.list);
        std::iter::from_fn(move || {
            let c = match &mut cursor {
                Ok(c) => c,
                Err(_) => return None,
            };
            if c.is_empty() {
                return None;
            }
            Some(
                c.expect(Tag::Sequence, "Request")
                    .and_then(parse_single_request),
            )
        })
    }
}

/// Maximum number of extensions accepted in one Extensions list.
const MAX_EXTENSIONS: usize = 16;
/// RFC 8954 §2.1: `Nonce ::= OCTET STRING(SIZE(1..32))`.
pub(crate) const MAX_NONCE_LEN: usize = 32;

/// A thin wrapper over `der`'s reader giving TLVs with tag checks. Each TLV's header is
/// decoded once by `der` (strict DER: minimal definite lengths, valid tags) and its value
/// borrowed from the input.
pub(crate) struct Cursor<'a> {
    input: &'a [u8],
    r: SliceReader<'a>,
}

pub(crate) const fn ctx(number: u32) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(number),
    }
}

pub(crate) fn offset(l: der::Length) -> Result<usize> {
    usize::try_from(l).ctx("length")
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Result<Self> {
        Ok(Cursor {
            input,
            r: SliceReader::new(input).ctx("input too long")?,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.r.is_finished()
    }

    /// Next TLV: (whole TLV, tag, value).
    pub(crate) fn tlv(&mut self, what: &'static str) -> Result<(&'a [u8], Tag, &'a [u8])> {
        let start = offset(self.r.position())?;
        let header = Header::decode(&mut self.r).ctx(what)?;
        let value = self.r.read_slice(header.length()).ctx(what)?;
        let end = offset(self.r.position())?;
        let raw = self
            .input
            .get(start..end)
            .ok_or_else(|| Malformed::new(what))?;
        Ok((raw, header.tag(), value))
    }

    /// Next TLV, which must carry `tag`; returns its value.
    pub(crate) fn expect(&mut self, tag: Tag, what: &'static str) -> Result<&'a [u8]> {
        self.expect_raw(tag, what).map(|(_, v)| v)
    }

    /// Like [`Cursor::expect`] but also returns the whole TLV.
    pub(crate) fn expect_raw(
        &mut self,
        tag: Tag,
        what: &'static str,
    ) -> Result<(&'a [u8], &'a [u8])> {
        let (raw, t, value) = self.tlv(what)?;
        if t != tag {
            return Err(Malformed::new(what));
        }
        Ok((raw, value))
    }

    /// The next TLV if it carries `tag`, else nothing is consumed.
    pub(crate) fn optional(&mut self, tag: Tag, what: &'static str) -> Result<Option<&'a [u8]>> {
        if self.is_empty() {
            return Ok(None);
        }
        if Tag::peek(&self.r).ctx(what)? != tag {
            return Ok(None);
        }
        self.expect(tag, what).map(Some)
    }

    pub(crate) fn peek_is(&self, tag: Tag) -> bool {
        !self.is_empty() && Tag::peek(&self.r).is_ok_and(|t| t == tag)
    }

    pub(crate) fn finish(self, what: &'static str) -> Result<()> {
        self.r.finish().ctx(what)
    }
}

/// Content of an EXPLICIT tag: exactly one TLV of type `tag`; returns its value.
pub(crate) fn explicit<'a>(content: &'a [u8], tag: Tag, what: &'static str) -> Result<&'a [u8]> {
    let mut c = Cursor::new(content)?;
    let v = c.expect(tag, what)?;
    c.finish(what)?;
    Ok(v)
}

/// A syntactically valid OID content: non-empty, minimal sub-identifiers, last octet final.
pub(crate) fn check_oid(bytes: &[u8], what: &'static str) -> Result<()> {
    let mut start = true;
    for b in bytes {
        if start && *b == 0x80 {
            return Err(Malformed::new(what));
        }
        start = b & 0x80 == 0;
    }
    if bytes.is_empty() || !start {
        return Err(Malformed::new(what));
    }
    Ok(())
}

/// Parse and validate a whole request. `max_requests` bounds the requestList.
pub(crate) fn parse_request(input: &[u8], max_requests: usize) -> Result<ParsedRequest<'_>> {
    let mut top = Cursor::new(input)?;
    let outer = top.expect(Tag::Sequence, "OCSPRequest is not a SEQUENCE")?;
    top.finish("trailing bytes after OCSPRequest")?;

    let mut o = Cursor::new(outer)?;
    let tbs = o.expect(Tag::Sequence, "TBSRequest")?;
    if let Some(sig) = o.optional(ctx(0), "optionalSignature")? {
        // Present but neither verified nor required: only its shape is checked.
        let s = explicit(sig, Tag::Sequence, "optionalSignature")?;
        let mut s = Cursor::new(s)?;
        s.expect(Tag::Sequence, "optionalSignature.signatureAlgorithm")?;
        s.expect(Tag::BitString, "optionalSignature.signature")?;
        s.optional(ctx(0), "optionalSignature.certs")?;
        s.finish("optionalSignature")?;
    }
    o.finish("trailing fields in OCSPRequest")?;

    let mut t = Cursor::new(tbs)?;
    if let Some(v) = t.optional(ctx(0), "version")? {
        let mut c = Cursor::new(v)?;
        let (raw, _) = c.expect_raw(Tag::Integer, "version")?;
        c.finish("version")?;
        // DER would omit the DEFAULT; an explicit v1 is tolerated, anything else refused.
        let version = IntRef::from_der(raw).ctx("version")?;
        if version.as_bytes() != [0] {
            return Err(Malformed::new("unsupported request version"));
        }
    }
    if let Some(name) = t.optional(ctx(1), "requestorName")? {
        // A GeneralName (a CHOICE of context tags): one TLV, not interpreted.
        let mut c = Cursor::new(name)?;
        c.tlv("requestorName")?;
        c.finish("requestorName")?;
    }
    let list = t.expect(Tag::Sequence, "requestList")?;
    let exts = t.optional(ctx(2), "requestExtensions")?;
    t.finish("trailing fields in TBSRequest")?;

    let mut count = 0usize;
    let mut first = None;
    let mut l = Cursor::new(list)?;
    while !l.is_empty() {
        count += 1;
        if count > max_requests {
            return Err(Malformed::new("too many single requests"));
        }
        let req = l.expect(Tag::Sequence, "Request")?;
        let id = parse_single_request(req)?;
        if first.is_none() {
            first = Some(id);
        }
    }
    let first = first.ok_or_else(|| Malformed::new("empty requestList"))?;

    let mut nonce = None;
    if let Some(e) = exts {
        let list = explicit(e, Tag::Sequence, "requestExtensions")?;
        for_each_extension(list, |raw, oid, critical, value| {
            if oid == oids::NONCE.as_bytes() {
                check_nonce(value)?;
                nonce = Some(raw);
            } else if critical
                && oid != oids::ACCEPTABLE_RESPONSES.as_bytes()
                && oid != oids::PREFERRED_SIGNATURE_ALGORITHMS.as_bytes()
            {
                // RFC 6960 §4.4: unrecognised critical extensions are not ignored.
                return Err(Malformed::new("unsupported critical request extension"));
            }
            Ok(())
        })?;
    }

    Ok(ParsedRequest {
        list,
        count,
        first,
        nonce,
    })
}

/// RFC 8954: the nonce is an OCTET STRING of 1 to 32 octets inside extnValue.
fn check_nonce(extn_value: &[u8]) -> Result<()> {
    let inner = explicit(extn_value, Tag::OctetString, "nonce is not an OCTET STRING")?;
    if inner.is_empty() {
        return Err(Malformed::new("empty nonce"));
    }
    if inner.len() > MAX_NONCE_LEN {
        return Err(Malformed::new("nonce longer than 32 octets (RFC 8954)"));
    }
    Ok(())
}

/// Walk `Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension` (content of the SEQUENCE),
/// refusing duplicates; `f(raw TLV, oid content, critical, extnValue content)`.
pub(crate) fn for_each_extension<'a>(
    list: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8], bool, &'a [u8]) -> Result<()>,
) -> Result<()> {
    let mut seen: [&[u8]; MAX_EXTENSIONS] = [&[]; MAX_EXTENSIONS];
    let mut n = 0usize;
    let mut c = Cursor::new(list)?;
    if c.is_empty() {
        return Err(Malformed::new("empty Extensions"));
    }
    while !c.is_empty() {
        let (raw, ext) = c.expect_raw(Tag::Sequence, "Extension")?;
        let mut e = Cursor::new(ext)?;
        let oid = e.expect(Tag::ObjectIdentifier, "Extension.extnID")?;
        check_oid(oid, "Extension.extnID")?;
        let mut critical = false;
        if e.peek_is(Tag::Boolean) {
            let (raw_bool, _) = e.expect_raw(Tag::Boolean, "Extension.critical")?;
            // An explicit FALSE violates DER's DEFAULT rule; tolerated like OpenSSL does.
            critical = bool::from_der(raw_bool).ctx("Extension.critical")?;
        }
        let value = e.expect(Tag::OctetString, "Extension.extnValue")?;
        e.finish("Extension")?;
        if seen_contains(seen.get(..n).unwrap_or(&[]), oid) {
            return Err(Malformed::new("duplicate extension"));
        }
        let slot = seen
            .get_mut(n)
            .ok_or_else(|| Malformed::new("too many extensions"))?;
        *slot = oid;
        n += 1;
        f(raw, oid, critical, value)?;
    }
    Ok(())
}

fn seen_contains(seen: &[&[u8]], oid: &[u8]) -> bool {
    seen.contains(&oid)
}

/// `Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }`
fn parse_single_request(content: &[u8]) -> Result<CertIdRef<'_>> {
    let mut r = Cursor::new(content)?;
    let (raw, cert_id) = r.expect_raw(Tag::Sequence, "CertID")?;
    if let Some(e) = r.optional(ctx(0), "singleRequestExtensions")? {
        let list = explicit(e, Tag::Sequence, "singleRequestExtensions")?;
        for_each_extension(list, |_, oid, critical, _| {
            if critical && oid != oids::SERVICE_LOCATOR.as_bytes() {
                return Err(Malformed::new(
                    "unsupported critical single request extension",
                ));
            }
            Ok(())
        })?;
    }
    r.finish("trailing fields in Request")?;
    parse_cert_id(raw, cert_id)
}

/// A CertID: `raw` is the whole TLV, `cert_id` its content.
pub(crate) fn parse_cert_id<'a>(raw: &'a [u8], cert_id: &'a [u8]) -> Result<CertIdRef<'a>> {
    let mut c = Cursor::new(cert_id)?;
    let alg = c.expect(Tag::Sequence, "CertID.hashAlgorithm")?;
    let name_hash = c.expect(Tag::OctetString, "CertID.issuerNameHash")?;
    let key_hash = c.expect(Tag::OctetString, "CertID.issuerKeyHash")?;
    let (serial_raw, _) = c.expect_raw(Tag::Integer, "CertID.serialNumber")?;
    c.finish("trailing fields in CertID")?;
    let serial = IntRef::from_der(serial_raw).ctx("CertID.serialNumber")?;

    let mut a = Cursor::new(alg)?;
    let oid = a.expect(Tag::ObjectIdentifier, "CertID.hashAlgorithm.algorithm")?;
    check_oid(oid, "CertID.hashAlgorithm.algorithm")?;
    if !a.is_empty() {
        // Hash algorithms take no parameters (RFC 5754 §2: absent or NULL). Anything else is
        // refused rather than echoed: every byte we echo has been checked.
        let (_, tag, value) = a.tlv("CertID.hashAlgorithm.parameters")?;
        if tag != Tag::Null || !value.is_empty() {
            return Err(Malformed::new(
                "CertID.hashAlgorithm.parameters must be absent or NULL",
            ));
        }
    }
    a.finish("trailing fields in CertID.hashAlgorithm")?;
    let hash = CertIdHash::from_oid_bytes(oid);

    Ok(CertIdRef {
        raw,
        hash,
        name_hash,
        key_hash,
        serial: serial.as_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_syntax() {
        assert!(check_oid(&[0x2b, 0x0e, 0x03, 0x02, 0x1a], "x").is_ok());
        assert!(check_oid(&[], "x").is_err());
        assert!(check_oid(&[0x2b, 0x86], "x").is_err(), "unterminated");
        assert!(check_oid(&[0x2b, 0x80, 0x01], "x").is_err(), "non-minimal");
    }

    #[test]
    fn nonce_bounds() {
        let mk = |n: usize| {
            let mut v = vec![0x04, n as u8];
            v.extend(std::iter::repeat_n(0xaa, n));
            v
        };
        assert!(check_nonce(&mk(0)).is_err());
        assert!(check_nonce(&mk(1)).is_ok());
        assert!(check_nonce(&mk(32)).is_ok());
        assert!(check_nonce(&mk(33)).is_err());
        assert!(
            check_nonce(&[0xaa; 16]).is_err(),
            "raw bytes, no OCTET STRING"
        );
    }
}

#[cfg(test)]
mod der_behaviour {
    use super::*;

    #[test]
    fn constructed_primitive_types_and_long_tags_are_refused() {
        for bytes in [
            &[0x24u8, 0x00][..],
            &[0x22, 0x00],
            &[0x3f, 0x81, 0x00, 0x00],
            &[0x21, 0x00],
        ] {
            let mut c = Cursor::new(bytes).unwrap();
            let r = c.tlv("x");
            let accepted = matches!(
                r,
                Ok((_, Tag::OctetString | Tag::Integer | Tag::Boolean, _))
            );
            assert!(!accepted, "{bytes:02x?} -> {r:?}");
        }
    }
}
