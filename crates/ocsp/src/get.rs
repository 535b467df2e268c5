//! RFC 5019 §5 / RFC 6960 Appendix A.1: `GET {url}/{url-encoding of base-64 encoding of the
//! DER encoding of the OCSPRequest}`.

use base64ct::{Base64Unpadded, Encoding};

use crate::OcspError;

/// Decode the request carried in a GET URL.
///
/// `encoded` is everything after the responder's base path (it may contain unescaped `/`,
/// which is a base64 character: route with a wildcard, not a single segment). Percent escapes
/// are decoded, then standard-alphabet base64 with or without its `=` padding. The decoded
/// request may be at most `max_request_bytes` long; longer input is refused before any
/// decoding work.
pub fn decode_get_request(encoded: &str, max_request_bytes: usize) -> Result<Vec<u8>, OcspError> {
    let bad = |why: &str| OcspError::GetRequest(why.to_owned());
    // base64 grows 4/3 (+ padding), percent-encoding at most 3×.
    let max_b64 = max_request_bytes.div_ceil(3).saturating_mul(4);
    if encoded.len() > max_b64.saturating_mul(3) {
        return Err(bad("request too large"));
    }
    let mut b64 = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        let c = if b == b'%' {
            let hi = bytes.next().and_then(hex_val);
            let lo = bytes.next().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => (h << 4) | l,
                _ => return Err(bad("invalid percent escape")),
            }
        } else {
            b
        };
        b64.push(c);
    }
    let mut body: &[u8] = &b64;
    for _ in 0..2 {
        if let Some(rest) = body.strip_suffix(b"=") {
            body = rest;
        }
    }
    if body.is_empty() {
        return Err(bad("empty request"));
    }
    if body.len() > max_b64 {
        return Err(bad("request too large"));
    }
    let der = Base64Unpadded::decode_vec(std::str::from_utf8(body).map_err(|_| bad("not base64"))?)
        .map_err(|_| bad("not base64 (standard alphabet)"))?;
    if der.len() > max_request_bytes {
        return Err(bad("request too large"));
    }
    Ok(der)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64ct::Base64;

    #[test]
    fn forms_accepted_and_refused() {
        let der: Vec<u8> = (0u8..=69).map(|i| i.wrapping_mul(37)).collect();
        let b64 = Base64::encode_string(&der);
        assert!(b64.contains('+') || b64.contains('/'), "{b64}");
        assert_eq!(decode_get_request(&b64, 100).unwrap(), der);
        let escaped = b64
            .replace('%', "%25")
            .replace('+', "%2B")
            .replace('/', "%2f")
            .replace('=', "%3D");
        assert_eq!(decode_get_request(&escaped, 100).unwrap(), der);
        assert_eq!(
            decode_get_request(b64.trim_end_matches('='), 100).unwrap(),
            der
        );
        assert!(decode_get_request(&b64, 69).is_err(), "over the limit");
        assert!(decode_get_request(&"A".repeat(100_000), 100).is_err());
        assert!(decode_get_request("", 100).is_err());
        assert!(decode_get_request("==", 100).is_err());
        assert!(decode_get_request("MA%G0", 100).is_err());
        assert!(decode_get_request("MA%", 100).is_err());
        assert!(
            decode_get_request("MA-_", 100).is_err(),
            "URL-safe alphabet"
        );
        assert!(decode_get_request("M A=", 100).is_err());
        assert!(decode_get_request("A", 100).is_err(), "impossible length");
        assert!(decode_get_request("%C3%A9", 100).is_err(), "non-ASCII");
    }
}
