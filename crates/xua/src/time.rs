//! `xs:dateTime` in the form SAML requires: UTC with a `Z`, written with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (negative before 1970).
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Append `YYYY-MM-DDThh:mm:ss.sssZ`.
pub(crate) fn write_datetime(t: SystemTime, out: &mut String) {
    use std::fmt::Write;
    let ms = to_millis(t);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
}

/// The text form of an instant as assertions carry it: `YYYY-MM-DDThh:mm:ss.sssZ` (UTC).
pub fn format_datetime(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    write_datetime(t, &mut s);
    s
}

/// Parse `YYYY-MM-DDThh:mm:ss[.fraction]Z` (four-digit year, UTC only; fractions beyond
/// milliseconds are truncated). Returns why a value is refused.
pub fn parse_datetime(s: &str) -> Result<SystemTime, &'static str> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return Err("not an xs:dateTime of the form YYYY-MM-DDThh:mm:ss[.fff]Z");
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, &'static str> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err("not an xs:dateTime of the form YYYY-MM-DDThh:mm:ss[.fff]Z");
        }
        Ok(part.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err("not an xs:dateTime of the form YYYY-MM-DDThh:mm:ss[.fff]Z");
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut i = 19;
    let mut millis = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err("empty fraction of a second");
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    if i + 1 != b.len() || b[i] != b'Z' {
        return Err("time must be in UTC with a trailing 'Z'");
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y == 0 || !(1..=12).contains(&mo) || d == 0 || d > mdays[(mo - 1) as usize] {
        return Err("invalid calendar date");
    }
    if h > 23 || mi > 59 || se > 59 {
        return Err("invalid time of day");
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se);
    Ok(from_millis(secs * 1000 + i64::from(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_known_values() {
        let t = parse_datetime("2024-09-02T13:22:25.789Z").unwrap();
        assert_eq!(to_millis(t), 1_725_283_345_789);
        assert_eq!(format_datetime(t), "2024-09-02T13:22:25.789Z");
        assert_eq!(
            to_millis(parse_datetime("1970-01-01T00:00:00Z").unwrap()),
            0
        );
        assert_eq!(
            to_millis(parse_datetime("2000-02-29T23:59:59.1234567Z").unwrap()),
            951_868_799_123
        );
        for ms in [
            0i64,
            1,
            86_399_999,
            951_868_799_123,
            4_102_444_800_000,
            -1000,
        ] {
            let t = from_millis(ms);
            assert_eq!(to_millis(parse_datetime(&format_datetime(t)).unwrap()), ms);
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "2024-09-02T13:22:25",
            "2024-09-02T13:22:25+01:00",
            "2024-09-02 13:22:25Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00ZZ",
            "+024-01-01T00:00:00Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
