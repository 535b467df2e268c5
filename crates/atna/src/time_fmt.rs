//! Timestamps: RFC 5424 `TIMESTAMP` (at most six fractional digits) and `xsd:dateTime`, both
//! written in UTC with a `Z`, and Unix microseconds as the log's time unit.

use time::{OffsetDateTime, UtcOffset};

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC: valid both as an RFC 5424 `TIMESTAMP` and as an
/// `xsd:dateTime`. Years outside 0000..=9999 are clamped to the representable range.
pub fn xml_datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let year = t.year().clamp(0, 9999);
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parse an RFC 3339 / RFC 5424 timestamp or an `xsd:dateTime` that carries a zone.
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Unix time in microseconds.
pub fn unix_micros(t: OffsetDateTime) -> i64 {
    let n = t.unix_timestamp_nanos() / 1000;
    n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The instant of a Unix time in microseconds (clamped to `time`'s range).
pub fn from_unix_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000).unwrap_or(if us < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 8000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_micros() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(xml_datetime(t), "2023-11-14T22:13:20.123456Z");
        let back = parse_datetime(&xml_datetime(t)).unwrap();
        assert_eq!(unix_micros(back), 1_700_000_000_123_456);
        assert_eq!(from_unix_micros(unix_micros(back)), back);
    }

    #[test]
    fn parses_offsets() {
        let t = parse_datetime("2026-11-22T02:33:51.935760+01:00").unwrap();
        assert_eq!(xml_datetime(t), "2026-11-22T01:33:51.935760Z");
        assert!(parse_datetime("2026-11-22 02:33:51").is_none());
    }
}
