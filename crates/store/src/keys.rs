//! Key encodings. Keys sort the way the matching SQL primary keys would.
//!
//! - certificate `(issuer, serial)`: `issuer ‖ 0x00 ‖ len(serial) as u8 ‖ serial`, where `serial`
//!   is the integer's magnitude without leading zero bytes. Issuers contain no NUL byte, so the
//!   order is by issuer, then by serial as an integer (shorter magnitude = smaller number).
//! - SPKI index: `sha256 ‖ certificate key`.
//! - revoked index: the certificate key.
//! - audit: `seq` as a big-endian u64.
//! - counters, meta, blocked keys: the name / hash bytes.
//! - named-table records: `table ‖ 0x00 ‖ key`.

use crate::error::StoreError;
use crate::model::{MAX_NAME_LEN, MAX_SERIAL_LEN};

/// Checks an issuer, counter name or meta key.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if name.as_bytes().contains(&0) {
        return Err(StoreError::Invalid(format!(
            "{what} {name:?} contains a NUL byte"
        )));
    }
    Ok(())
}

/// The serial's magnitude: the bytes without leading zeros. Refuses zero and oversized serials.
pub(crate) fn serial_magnitude(serial: &[u8]) -> Result<&[u8], StoreError> {
    let start = serial.iter().position(|&b| b != 0).ok_or_else(|| {
        StoreError::Invalid(
            "certificate serial number is zero or empty; it must be positive".into(),
        )
    })?;
    let magnitude = &serial[start..];
    if magnitude.len() > MAX_SERIAL_LEN {
        return Err(StoreError::Invalid(format!(
            "certificate serial number has {} significant bytes; the limit is {MAX_SERIAL_LEN}",
            magnitude.len()
        )));
    }
    Ok(magnitude)
}

/// Prefix shared by every certificate key of `issuer`.
pub(crate) fn issuer_prefix(issuer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(issuer.len() + 1);
    k.extend_from_slice(issuer.as_bytes());
    k.push(0);
    k
}

/// Key of certificate `(issuer, serial)`; checks both.
pub(crate) fn cert_key(issuer: &str, serial: &[u8]) -> Result<Vec<u8>, StoreError> {
    check_name("certificate issuer", issuer)?;
    let magnitude = serial_magnitude(serial)?;
    let mut k = issuer_prefix(issuer);
    // MAX_SERIAL_LEN < 256, checked above.
    k.push(magnitude.len() as u8);
    k.extend_from_slice(magnitude);
    Ok(k)
}

/// Splits a certificate key into (issuer, serial magnitude); `None` if it is malformed.
pub(crate) fn split_cert_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let issuer = std::str::from_utf8(&key[..nul]).ok()?;
    let (&len, serial) = key[nul + 1..].split_first()?;
    (serial.len() == usize::from(len) && !issuer.is_empty()).then_some((issuer, serial))
}

/// Key of the SPKI index entry for certificate key `cert_key`.
pub(crate) fn spki_key(spki_sha256: &[u8; 32], cert_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + cert_key.len());
    k.extend_from_slice(spki_sha256);
    k.extend_from_slice(cert_key);
    k
}

/// Key of audit record `seq`.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a big-endian u64 value.
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Key of record `key` in the named table `table`; checks both.
pub(crate) fn record_key(table: &str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
    check_name("table name", table)?;
    if key.len() > crate::model::MAX_RECORD_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "key of table {table:?} is {} bytes long; the limit is {}",
            key.len(),
            crate::model::MAX_RECORD_KEY_LEN
        )));
    }
    let mut k = Vec::with_capacity(table.len() + 1 + key.len());
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_keys_sort_by_issuer_then_serial_value() {
        let keys = [
            cert_key("a", &[0x05]).unwrap(),
            cert_key("a", &[0x00, 0xff]).unwrap(),
            cert_key("a", &[0x01, 0x00]).unwrap(),
            cert_key("a", &[0x7f, 0x00, 0x00]).unwrap(),
            cert_key("ab", &[0x01]).unwrap(),
            cert_key("b", &[0x01]).unwrap(),
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
    }

    #[test]
    fn leading_zeros_do_not_matter_and_round_trip() {
        let k = cert_key("personnes", &[0, 0, 0x80, 1]).unwrap();
        assert_eq!(k, cert_key("personnes", &[0x80, 1]).unwrap());
        assert_eq!(split_cert_key(&k), Some(("personnes", &[0x80, 1][..])));
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(cert_key("", &[1]), Err(StoreError::Invalid(_))));
        assert!(matches!(
            cert_key("a\0b", &[1]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(cert_key("a", &[]), Err(StoreError::Invalid(_))));
        assert!(matches!(
            cert_key("a", &[0, 0]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            cert_key("a", &[1; MAX_SERIAL_LEN + 1]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            cert_key(&"x".repeat(MAX_NAME_LEN + 1), &[1]),
            Err(StoreError::Invalid(_))
        ));
        assert!(cert_key("a", &[1; MAX_SERIAL_LEN]).is_ok());
    }

    #[test]
    fn malformed_keys_do_not_split() {
        assert_eq!(split_cert_key(b""), None);
        assert_eq!(split_cert_key(b"abc"), None);
        assert_eq!(split_cert_key(b"abc\0"), None);
        assert_eq!(split_cert_key(b"abc\0\x02\x01"), None);
        assert_eq!(split_cert_key(b"\0\x01\x01"), None);
        assert_eq!(split_cert_key(b"\xff\0\x01\x01"), None);
    }
}
