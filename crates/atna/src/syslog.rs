//! RFC 5424 syslog messages: a formatter for the audit messages we send, and a strict parser
//! for what we receive.
//!
//! IHE ITI-20 fixes facility 10 (security/authorization), severity 5 (notice) or 4 (warning) and
//! `MSGID` `IHE+RFC-3881`; the `MSG` part is the XML audit message, UTF-8 with a BOM.

use time::OffsetDateTime;

use crate::error::SyslogError;

/// The MSGID of IHE audit messages.
pub const IHE_MSGID: &str = "IHE+RFC-3881";
/// Facility 10: security/authorization messages.
pub const FACILITY_AUTHPRIV: u8 = 10;
/// Severity 5: notice (successful events).
pub const SEVERITY_NOTICE: u8 = 5;
/// Severity 4: warning (failures).
pub const SEVERITY_WARNING: u8 = 4;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One structured-data element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    /// SD-ID.
    pub id: String,
    /// SD-PARAMs in order (values unescaped).
    pub params: Vec<(String, String)>,
}

/// An RFC 5424 message. `None` fields are the NILVALUE `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    /// Facility (0..=23).
    pub facility: u8,
    /// Severity (0..=7).
    pub severity: u8,
    /// TIMESTAMP.
    pub timestamp: Option<OffsetDateTime>,
    /// HOSTNAME (1..=255 printable US-ASCII).
    pub hostname: Option<String>,
    /// APP-NAME (1..=48).
    pub app_name: Option<String>,
    /// PROCID (1..=128).
    pub procid: Option<String>,
    /// MSGID (1..=32).
    pub msgid: Option<String>,
    /// STRUCTURED-DATA.
    pub structured_data: Vec<SdElement>,
    /// MSG, without the BOM when it had one.
    pub msg: Vec<u8>,
    /// Whether MSG started with a BOM (MSG-UTF8).
    pub msg_bom: bool,
}

impl SyslogMessage {
    /// An IHE audit message: facility 10, severity 5 or 4, MSGID `IHE+RFC-3881`, `xml` as MSG
    /// with a BOM.
    pub fn audit(
        timestamp: OffsetDateTime,
        hostname: &str,
        app_name: &str,
        procid: Option<&str>,
        failure: bool,
        xml: &str,
    ) -> Self {
        SyslogMessage {
            facility: FACILITY_AUTHPRIV,
            severity: if failure {
                SEVERITY_WARNING
            } else {
                SEVERITY_NOTICE
            },
            timestamp: Some(timestamp),
            hostname: Some(hostname.to_owned()).filter(|h| !h.is_empty()),
            app_name: Some(app_name.to_owned()).filter(|h| !h.is_empty()),
            procid: procid.map(str::to_owned),
            msgid: Some(IHE_MSGID.to_owned()),
            structured_data: Vec::new(),
            msg: xml.as_bytes().to_vec(),
            msg_bom: true,
        }
    }

    /// PRI value (`facility * 8 + severity`).
    pub fn pri(&self) -> u8 {
        self.facility
            .saturating_mul(8)
            .saturating_add(self.severity)
    }

    /// Encode the message. Header fields that break RFC 5424's character set or length rules
    /// are refused rather than silently altered.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SyslogError> {
        if self.facility > 23 || self.severity > 7 {
            return Err(SyslogError {
                at: 0,
                what: "facility must be 0..23 and severity 0..7".into(),
            });
        }
        let mut out = Vec::with_capacity(self.msg.len() + 128);
        out.extend_from_slice(format!("<{}>1 ", self.pri()).as_bytes());
        match self.timestamp {
            Some(t) => out.extend_from_slice(crate::time_fmt::xml_datetime(t).as_bytes()),
            None => out.push(b'-'),
        }
        for (v, max, what) in [
            (&self.hostname, 255, "HOSTNAME"),
            (&self.app_name, 48, "APP-NAME"),
            (&self.procid, 128, "PROCID"),
            (&self.msgid, 32, "MSGID"),
        ] {
            out.push(b' ');
            match v {
                None => out.push(b'-'),
                Some(s) => {
                    if s.is_empty()
                        || s.len() > max
                        || !s.bytes().all(|b| (33..=126).contains(&b))
                        || s == "-"
                    {
                        return Err(SyslogError {
                            at: out.len(),
                            what: format!(
                                "{what} must be 1..{max} printable US-ASCII characters, got {s:?}"
                            ),
                        });
                    }
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        out.push(b' ');
        if self.structured_data.is_empty() {
            out.push(b'-');
        }
        for e in &self.structured_data {
            check_sd_name(&e.id, out.len())?;
            out.push(b'[');
            out.extend_from_slice(e.id.as_bytes());
            for (k, v) in &e.params {
                check_sd_name(k, out.len())?;
                out.push(b' ');
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"=\"");
                for c in v.bytes() {
                    if matches!(c, b'"' | b'\\' | b']') {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
            }
            out.push(b']');
        }
        if !self.msg.is_empty() || self.msg_bom {
            out.push(b' ');
            if self.msg_bom {
                out.extend_from_slice(BOM);
            }
            out.extend_from_slice(&self.msg);
        }
        Ok(out)
    }

    /// Parse one RFC 5424 message (the content of one RFC 5425 frame). A trailing LF (as some
    /// senders add) stays part of MSG.
    pub fn parse(input: &[u8]) -> Result<SyslogMessage, SyslogError> {
        let (mut m, msg) = Self::parse_header(input)?;
        m.msg = msg.to_vec();
        Ok(m)
    }

    /// Parse the header and structured data; MSG is returned as a slice of `input` (without
    /// its BOM) and left empty in the message.
    pub(crate) fn parse_header(input: &[u8]) -> Result<(SyslogMessage, &[u8]), SyslogError> {
        let mut p = Parser { s: input, i: 0 };
        p.expect(b'<')?;
        let start = p.i;
        while p.peek().is_some_and(|b| b.is_ascii_digit()) && p.i - start < 4 {
            p.i += 1;
        }
        let digits = &input[start..p.i];
        if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
            return Err(p.err("PRI must be 1 to 3 digits without leading zero"));
        }
        let pri: u16 = parse_u16(digits);
        if pri > 191 {
            return Err(p.err("PRI above 191"));
        }
        p.expect(b'>')?;
        let vstart = p.i;
        while p.peek().is_some_and(|b| b.is_ascii_digit()) && p.i - vstart < 4 {
            p.i += 1;
        }
        if &input[vstart..p.i] != b"1" {
            return Err(SyslogError {
                at: vstart,
                what: "VERSION must be 1".into(),
            });
        }
        p.expect(b' ')?;
        let ts_field = p.field(64, "TIMESTAMP")?;
        let timestamp = match ts_field {
            None => None,
            Some(t) => Some(parse_timestamp(t).ok_or_else(|| SyslogError {
                at: p.i - t.len(),
                what: format!(
                    "TIMESTAMP {:?} is not an RFC 3339 date-time",
                    String::from_utf8_lossy(t)
                ),
            })?),
        };
        p.expect(b' ')?;
        let hostname = p.field(255, "HOSTNAME")?.map(ascii);
        p.expect(b' ')?;
        let app_name = p.field(48, "APP-NAME")?.map(ascii);
        p.expect(b' ')?;
        let procid = p.field(128, "PROCID")?.map(ascii);
        p.expect(b' ')?;
        let msgid = p.field(32, "MSGID")?.map(ascii);
        p.expect(b' ')?;
        let structured_data = p.structured_data()?;
        let mut msg: &[u8] = &[];
        let mut msg_bom = false;
        if p.i < input.len() {
            p.expect(b' ')?;
            msg = &input[p.i..];
            if let Some(rest) = msg.strip_prefix(BOM) {
                msg = rest;
                msg_bom = true;
            }
        }
        Ok((
            SyslogMessage {
                facility: (pri / 8) as u8,
                severity: (pri % 8) as u8,
                timestamp,
                hostname,
                app_name,
                procid,
                msgid,
                structured_data,
                msg: Vec::new(),
                msg_bom,
            },
            msg,
        ))
    }
}

fn check_sd_name(n: &str, at: usize) -> Result<(), SyslogError> {
    if n.is_empty()
        || n.len() > 32
        || !n
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"' | b' '))
    {
        return Err(SyslogError {
            at,
            what: format!("SD name {n:?} is not 1..32 printable characters without = ] \""),
        });
    }
    Ok(())
}

fn parse_u16(d: &[u8]) -> u16 {
    d.iter().fold(0u16, |acc, b| {
        acc.saturating_mul(10).saturating_add(u16::from(b - b'0'))
    })
}

fn ascii(b: &[u8]) -> String {
    // Fields were checked to be printable US-ASCII.
    b.iter().map(|&c| c as char).collect()
}

fn parse_timestamp(t: &[u8]) -> Option<OffsetDateTime> {
    let s = std::str::from_utf8(t).ok()?;
    // RFC 5424 §6.2.3: upper-case T and Z only, at most 6 fractional digits.
    if s.contains('t') || s.contains('z') {
        return None;
    }
    if let Some(dot) = s.find('.') {
        let frac = s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if frac == 0 || frac > 6 {
            return None;
        }
    }
    crate::time_fmt::parse_datetime(s)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn err(&self, what: &str) -> SyslogError {
        SyslogError {
            at: self.i,
            what: what.to_owned(),
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), SyslogError> {
        match self.peek() {
            Some(c) if c == b => {
                self.i += 1;
                Ok(())
            }
            Some(c) => Err(self.err(&format!("expected {:?}, found {:?}", b as char, c as char))),
            None => Err(self.err(&format!("expected {:?}, found end of message", b as char))),
        }
    }

    /// A header field: NILVALUE (`None`) or 1..max PRINTUSASCII.
    fn field(&mut self, max: usize, what: &str) -> Result<Option<&'a [u8]>, SyslogError> {
        let start = self.i;
        while self.peek().is_some_and(|b| (33..=126).contains(&b)) {
            self.i += 1;
            if self.i - start > max {
                return Err(SyslogError {
                    at: start,
                    what: format!("{what} longer than {max} characters"),
                });
            }
        }
        match &self.s[start..self.i] {
            [] => Err(SyslogError {
                at: start,
                what: format!("{what} missing"),
            }),
            b"-" => Ok(None),
            f => Ok(Some(f)),
        }
    }

    fn structured_data(&mut self) -> Result<Vec<SdElement>, SyslogError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if self.peek() != Some(b'[') {
            return Err(self.err("STRUCTURED-DATA must be '-' or start with '['"));
        }
        while self.peek() == Some(b'[') {
            if out.len() >= 64 {
                return Err(self.err("more than 64 SD-ELEMENTs"));
            }
            self.i += 1;
            let id = self.sd_name("SD-ID")?;
            let mut params = Vec::new();
            loop {
                match self.peek() {
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    Some(b' ') => {
                        self.i += 1;
                        if params.len() >= 128 {
                            return Err(self.err("more than 128 SD-PARAMs"));
                        }
                        let name = self.sd_name("PARAM-NAME")?;
                        self.expect(b'=')?;
                        self.expect(b'"')?;
                        let value = self.param_value()?;
                        params.push((name, value));
                    }
                    Some(c) => {
                        return Err(self.err(&format!("unexpected {:?} in SD-ELEMENT", c as char)));
                    }
                    None => return Err(self.err("message ends inside STRUCTURED-DATA")),
                }
            }
            out.push(SdElement { id, params });
        }
        Ok(out)
    }

    fn sd_name(&mut self, what: &str) -> Result<String, SyslogError> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"' | b' '))
        {
            self.i += 1;
        }
        let n = &self.s[start..self.i];
        if n.is_empty() || n.len() > 32 {
            return Err(SyslogError {
                at: start,
                what: format!("{what} must be 1..32 characters"),
            });
        }
        Ok(ascii(n))
    }

    fn param_value(&mut self) -> Result<String, SyslogError> {
        let start = self.i;
        let mut v = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(SyslogError {
                        at: start,
                        what: "unterminated PARAM-VALUE".into(),
                    });
                }
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\' | b']')) => v.push(c),
                        Some(c) => {
                            // RFC 5424 §6.3.3: a backslash before any other character is kept.
                            v.push(b'\\');
                            v.push(c);
                        }
                        None => {
                            return Err(SyslogError {
                                at: start,
                                what: "unterminated PARAM-VALUE".into(),
                            });
                        }
                    }
                    self.i += 1;
                }
                Some(c) => {
                    v.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(v).map_err(|_| SyslogError {
            at: start,
            what: "PARAM-VALUE is not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_audit() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let m = SyslogMessage::audit(
            t,
            "cps.example",
            "cps-trust",
            Some("42"),
            false,
            "<AuditMessage/>",
        );
        let b = m.to_bytes().unwrap();
        assert!(b.starts_with(b"<85>1 2027-01-15T08:00:00.000000Z cps.example cps-trust 42 IHE+RFC-3881 - \xEF\xBB\xBF<AuditMessage/>"));
        let back = SyslogMessage::parse(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.pri(), 85);
    }

    #[test]
    fn rsyslog_output_parses() {
        let line = b"<13>1 2026-11-22T02:33:51.935760+00:00 vm peers-test - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] hello";
        let m = SyslogMessage::parse(line).unwrap();
        assert_eq!(m.facility, 1);
        assert_eq!(m.severity, 5);
        assert_eq!(m.hostname.as_deref(), Some("vm"));
        assert_eq!(m.procid, None);
        assert_eq!(m.structured_data[0].id, "timeQuality");
        assert_eq!(
            m.structured_data[0].params[1],
            ("isSynced".into(), "0".into())
        );
        assert_eq!(m.msg, b"hello");
    }

    #[test]
    fn sd_escapes_round_trip() {
        let mut m = SyslogMessage::audit(OffsetDateTime::UNIX_EPOCH, "h", "a", None, true, "x");
        m.structured_data.push(SdElement {
            id: "ex@32473".into(),
            params: vec![("k".into(), "a\"b\\c]d".into())],
        });
        let b = m.to_bytes().unwrap();
        assert_eq!(SyslogMessage::parse(&b).unwrap(), m);
    }

    #[test]
    fn refuses_bad_headers() {
        for bad in [
            &b""[..],
            b"<>1 - - - - - -",
            b"<192>1 - - - - - -",
            b"<013>1 - - - - - -",
            b"<13>2 - - - - - -",
            b"<13>1 2026-11-22 - - - - -",
            b"<13>1 2026-11-22T02:33:51.1234567Z h a p m -",
            b"<13>1 - h a p m [x",
            b"<13>1 - h a p m [x a=\"b]",
            b"<13>1 - h a p m x",
            b"<13>1 - h a p",
        ] {
            assert!(
                SyslogMessage::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_msgid = format!("<13>1 - h a p {} -", "m".repeat(33));
        assert!(SyslogMessage::parse(long_msgid.as_bytes()).is_err());
    }

    #[test]
    fn refuses_bad_fields_on_output() {
        let mut m = SyslogMessage::audit(OffsetDateTime::UNIX_EPOCH, "h", "a", None, false, "x");
        m.hostname = Some("has space".into());
        assert!(m.to_bytes().is_err());
    }
}
