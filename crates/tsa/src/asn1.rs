//! A small strict DER reader and writer: the few TLV shapes RFC 3161 and CMS need.
//!
//! The reader accepts only DER: one-byte tags (no high tag numbers), definite lengths in their
//! shortest form, nothing after the last element. INTEGERs are checked for minimal encoding and
//! BOOLEANs for 0x00 / 0xFF where they are read.

/// Universal tags used here.
pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// Context-specific constructed tag `[n]`.
pub const fn ctx_cons(n: u8) -> u8 {
    0xa0 | n
}

/// Context-specific primitive tag `[n]`.
pub const fn ctx_prim(n: u8) -> u8 {
    0x80 | n
}

/// Why a DER reading failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerError {
    Truncated,
    HighTagNumber,
    IndefiniteLength,
    NonMinimalLength,
    LengthTooLarge,
    UnexpectedTag { expected: u8, found: u8 },
    TrailingData,
    BadInteger,
    BadBoolean,
    Missing,
}

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DerError::Truncated => f.write_str("truncated"),
            DerError::HighTagNumber => f.write_str("high tag numbers are not used"),
            DerError::IndefiniteLength => f.write_str("indefinite length (BER, not DER)"),
            DerError::NonMinimalLength => f.write_str("length not in its shortest form"),
            DerError::LengthTooLarge => f.write_str("length too large"),
            DerError::UnexpectedTag { expected, found } => {
                write!(f, "expected tag 0x{expected:02x}, found 0x{found:02x}")
            }
            DerError::TrailingData => f.write_str("data after the last element"),
            DerError::BadInteger => f.write_str("INTEGER not minimally encoded"),
            DerError::BadBoolean => f.write_str("BOOLEAN neither 0x00 nor 0xFF"),
            DerError::Missing => f.write_str("element missing"),
        }
    }
}

/// One element: its tag, its value, and the whole TLV.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads consecutive TLVs from a slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input }
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// The tag of the next element, without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// The next element, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.input;
        let (&tag, rest) = input.split_first().ok_or(DerError::Missing)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::HighTagNumber);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(DerError::IndefiniteLength);
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(DerError::LengthTooLarge);
            }
            if rest.len() < n {
                return Err(DerError::Truncated);
            }
            let (bytes, r) = rest.split_at(n);
            rest = r;
            if bytes[0] == 0 {
                return Err(DerError::NonMinimalLength);
            }
            let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
            if len < 0x80 {
                return Err(DerError::NonMinimalLength);
            }
            len
        };
        if rest.len() < len {
            return Err(DerError::Truncated);
        }
        let header = input.len() - rest.len();
        let (value, rest) = rest.split_at(len);
        self.input = rest;
        Ok(Tlv {
            tag,
            value,
            raw: &input[..header + len],
        })
    }

    /// The next element, which must carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, DerError> {
        match self.peek_tag() {
            None => Err(DerError::Missing),
            Some(t) if t != tag => Err(DerError::UnexpectedTag {
                expected: tag,
                found: t,
            }),
            Some(_) => self.any(),
        }
    }

    /// The next element if it carries `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.any().map(Some)
        } else {
            Ok(None)
        }
    }

    /// An INTEGER's content octets, checked minimal.
    pub fn integer(&mut self) -> Result<&'a [u8], DerError> {
        let v = self.expect(INTEGER)?.value;
        check_integer(v)?;
        Ok(v)
    }

    /// Nothing must be left.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Content octets of a DER INTEGER: at least one byte, no redundant leading 0x00 / 0xFF.
pub fn check_integer(v: &[u8]) -> Result<(), DerError> {
    match v {
        [] => Err(DerError::BadInteger),
        [0x00, b, ..] if b & 0x80 == 0 => Err(DerError::BadInteger),
        [0xff, b, ..] if b & 0x80 != 0 => Err(DerError::BadInteger),
        _ => Ok(()),
    }
}

/// The single element of `input`, which must carry `tag` and be followed by nothing.
pub fn single(input: &[u8], tag: u8) -> Result<Tlv<'_>, DerError> {
    let mut r = Reader::new(input);
    let t = r.expect(tag)?;
    r.finish()?;
    Ok(t)
}

/// Encode one TLV.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// Encode a constructed TLV from already-encoded parts.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// An unsigned big-endian number as the content of a (positive) DER INTEGER.
pub fn unsigned_integer_content(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let trimmed = &bytes[skip..];
    match trimmed.first() {
        None => vec![0],
        Some(b) if b & 0x80 != 0 => {
            let mut v = Vec::with_capacity(trimmed.len() + 1);
            v.push(0);
            v.extend_from_slice(trimmed);
            v
        }
        Some(_) => trimmed.to_vec(),
    }
}

/// Unix seconds → `YYYYMMDDHHMMSSZ` (proleptic Gregorian, UTC).
pub fn generalized_time(unix: i64) -> Option<Vec<u8>> {
    if !(0..=253_402_300_799).contains(&unix) {
        return None;
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let s = format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    Some(tlv(GENERALIZED_TIME, s.as_bytes()))
}

/// Content of a GeneralizedTime as RFC 3161 allows it in DER (`YYYYMMDDHHMMSS[.f*]Z`, no
/// trailing zero in the fraction) → unix seconds (the fraction is dropped).
pub fn parse_generalized_time(v: &[u8]) -> Option<i64> {
    let (main, rest) = (v.get(..14)?, v.get(14..)?);
    if !main.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match rest {
        [b'Z'] => {}
        [b'.', frac @ .., b'Z'] => {
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) || frac.last() == Some(&b'0')
            {
                return None;
            }
        }
        _ => return None,
    }
    let n = |a: usize, b: usize| -> i64 {
        main[a..b]
            .iter()
            .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'))
    };
    let (y, mo, d, h, mi, s) = (n(0, 4), n(4, 6), n(6, 8), n(8, 10), n(10, 12), n(12, 14));
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_strict() {
        assert!(
            Reader::new(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5])
                .any()
                .is_err()
        );
        assert_eq!(
            Reader::new(&[0x30, 0x80, 0, 0]).any().unwrap_err(),
            DerError::IndefiniteLength
        );
        assert_eq!(
            Reader::new(&[0x04, 0x03, 1]).any().unwrap_err(),
            DerError::Truncated
        );
        assert_eq!(
            Reader::new(&[0x1f, 0x01, 0]).any().unwrap_err(),
            DerError::HighTagNumber
        );
        let long = tlv(OCTET_STRING, &[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(Reader::new(&long).any().unwrap().value.len(), 300);
        assert_eq!(
            single(&[0x05, 0x00, 0x00], NULL).unwrap_err(),
            DerError::TrailingData
        );
    }

    #[test]
    fn integers() {
        assert!(check_integer(&[0x00, 0x7f]).is_err());
        assert!(check_integer(&[0xff, 0x80]).is_err());
        assert!(check_integer(&[]).is_err());
        assert!(check_integer(&[0x00, 0x80]).is_ok());
        assert_eq!(unsigned_integer_content(&[0, 0, 0x80]), vec![0, 0x80]);
        assert_eq!(unsigned_integer_content(&[0, 0x12]), vec![0x12]);
        assert_eq!(unsigned_integer_content(&[0, 0]), vec![0]);
    }

    #[test]
    fn times() {
        assert_eq!(generalized_time(0).unwrap()[2..], *b"19700101000000Z");
        let t = 1_796_515_200 + 3 * 3600 + 25; // 2026-12-06T03:00:25Z
        let g = generalized_time(t).unwrap();
        assert_eq!(&g[2..], b"20261206030025Z");
        assert_eq!(parse_generalized_time(&g[2..]), Some(t));
        assert_eq!(parse_generalized_time(b"20261206030025.5Z"), Some(t));
        assert_eq!(parse_generalized_time(b"20261206030025.50Z"), None);
        assert_eq!(parse_generalized_time(b"20260230030025Z"), None);
        assert_eq!(parse_generalized_time(b"20261206030025+0100"), None);
        assert_eq!(parse_generalized_time(b"2026120603002Z"), None);
        assert!(generalized_time(-1).is_none());
    }
}
