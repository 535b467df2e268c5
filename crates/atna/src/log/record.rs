//! The record format of the hash-chained log.
//!
//! On disk, `records.log` is a sequence of
//!
//! ```text
//! "AR01" | u32 body length | body | SHA-256 hash (32 bytes)
//! body = u64 seq | prev hash (32) | i64 received (Unix µs) | u8 transport
//!        | node subject (u16 len + UTF-8) | u8 has fingerprint [+ 32 bytes SHA-256 of the certificate]
//!        | peer address (u16 len + UTF-8) | summary | raw message (u32 len + bytes)
//! hash = SHA-256("cps-atna record v1\n" | body)
//! ```
//!
//! all integers big-endian. Sequence numbers start at 1 and increase by one; the first record's
//! previous hash is 32 zero bytes. The summary is the parsed, searchable part (see
//! [`RecordSummary`]); it is covered by the hash like everything else.

use ring::digest;

use super::codec::{Dec, DecError, Enc};
use crate::model::AuditMessage;
use crate::parse::{Code, EventSummary, XmlLimits, parse_audit_xml};
use crate::syslog::SyslogMessage;

pub(crate) const MAGIC: &[u8; 4] = b"AR01";
pub(crate) const DOMAIN: &[u8] = b"cps-atna record v1\n";
/// Largest record body accepted when reading (a frame is at most a few MiB).
pub(crate) const MAX_BODY: usize = 64 << 20;
/// The previous hash of the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Longest free-text field (node subject, peer, error text) kept in a record.
pub const MAX_TEXT: usize = 1024;

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// RFC 5425 syslog over mutually authenticated TLS.
    Tls,
    /// RFC 5426 syslog over UDP (no node authentication).
    Udp,
    /// Appended locally by the appliance itself.
    Local,
}

impl Transport {
    fn code(self) -> u8 {
        match self {
            Transport::Tls => 1,
            Transport::Udp => 2,
            Transport::Local => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Transport::Tls,
            2 => Transport::Udp,
            3 => Transport::Local,
            _ => return None,
        })
    }
}

/// The sending node as authenticated by TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeIdentity {
    /// Subject DN of the client certificate as text (`x509-parser`'s form: `O=…, CN=…` in
    /// certificate order); empty for UDP and local records.
    pub subject: String,
    /// SHA-256 of the client certificate (DER).
    pub fingerprint: Option<[u8; 32]>,
}

impl NodeIdentity {
    /// The identity of a certificate: its subject and SHA-256 fingerprint. A certificate that
    /// does not parse gets an empty subject (the fingerprint still identifies it).
    pub fn from_certificate(der: &[u8]) -> Self {
        let subject = x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        let mut fp = [0u8; 32];
        fp.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        NodeIdentity {
            subject: bounded(&subject),
            fingerprint: Some(fp),
        }
    }

    /// The fingerprint in lower-case hex, or an empty string.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    }
}

/// The RFC 5424 header fields of a stored message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyslogHeader {
    /// PRI.
    pub pri: u8,
    /// TIMESTAMP in Unix µs.
    pub timestamp: Option<i64>,
    /// HOSTNAME.
    pub hostname: Option<String>,
    /// APP-NAME.
    pub app_name: Option<String>,
    /// PROCID.
    pub procid: Option<String>,
    /// MSGID.
    pub msgid: Option<String>,
}

impl SyslogHeader {
    fn of(m: SyslogMessage) -> Self {
        SyslogHeader {
            pri: m.pri(),
            timestamp: m.timestamp.map(crate::time_fmt::unix_micros),
            hostname: m.hostname,
            app_name: m.app_name,
            procid: m.procid,
            msgid: m.msgid,
        }
    }
}

/// The parsed part of a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordSummary {
    /// The syslog header, when the message is RFC 5424.
    pub syslog: Option<SyslogHeader>,
    /// The audit event, when MSG is a DICOM audit message.
    pub event: Option<EventSummary>,
    /// Why the message is not RFC 5424.
    pub syslog_error: Option<String>,
    /// Why MSG is not a readable DICOM audit message.
    pub xml_error: Option<String>,
}

impl RecordSummary {
    /// Parse a received message: RFC 5424 first, then its MSG as DICOM audit XML.
    pub fn parse(raw: &[u8], limits: &XmlLimits) -> Self {
        let mut s = RecordSummary::default();
        match SyslogMessage::parse_header(raw) {
            Err(e) => s.syslog_error = Some(bounded(&e.to_string())),
            Ok((m, msg)) => {
                s.syslog = Some(SyslogHeader::of(m));
                // Trailing line ends some senders add are not part of the XML.
                let mut xml: &[u8] = msg;
                while let [rest @ .., b'\n' | b'\r'] = xml {
                    xml = rest;
                }
                match parse_audit_xml(xml, limits) {
                    Ok(e) => s.event = Some(e),
                    Err(e) => s.xml_error = Some(bounded(&e.to_string())),
                }
            }
        }
        s
    }

    /// Whether the message was stored unparsed (not RFC 5424 or not a DICOM audit message).
    pub fn parse_error(&self) -> bool {
        self.syslog_error.is_some() || self.xml_error.is_some()
    }
}

/// Cut `s` to at most [`MAX_TEXT`] bytes at a character boundary.
pub(crate) fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A message to append, parsed and encoded by the caller (so parsing runs on the caller's
/// thread, not the log writer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub(crate) tail: Vec<u8>,
    pub(crate) index: IndexFields,
}

/// What the in-memory index keeps of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IndexFields {
    pub received: i64,
    pub event_time: Option<i64>,
    pub outcome: Option<u8>,
    pub parse_error: bool,
    pub event_id: Option<String>,
    pub event_types: Vec<String>,
    pub users: Vec<String>,
    pub patients: Vec<String>,
    pub source: Option<String>,
    pub node: String,
}

impl NewRecord {
    /// Parse `raw` (one syslog message) and prepare it for appending.
    pub fn from_message(
        received_micros: i64,
        node: &NodeIdentity,
        peer: &str,
        transport: Transport,
        raw: &[u8],
        limits: &XmlLimits,
    ) -> Self {
        let summary = RecordSummary::parse(raw, limits);
        Self::with_summary(received_micros, node, peer, transport, raw, &summary)
    }

    /// One of the appliance's own messages (`raw` as formatted by [`Auditor::format`]), stored
    /// with transport [`Transport::Local`] and no node identity.
    ///
    /// [`Auditor::format`]: crate::Auditor::format
    pub fn local(received_micros: i64, raw: &[u8]) -> Self {
        Self::from_message(
            received_micros,
            &NodeIdentity::default(),
            "local",
            Transport::Local,
            raw,
            &XmlLimits::default(),
        )
    }

    /// One of the appliance's own messages: `raw` is what [`Auditor::format`] made of `msg`.
    /// The record is the one [`local`](NewRecord::local) makes, but its index fields come from
    /// the model rather than from re-parsing the XML it was just written into.
    ///
    /// [`Auditor::format`]: crate::Auditor::format
    pub fn local_message(received_micros: i64, raw: &[u8], msg: &AuditMessage) -> Self {
        let limits = XmlLimits::default();
        let header = SyslogMessage::parse_header(raw).ok();
        let event = EventSummary::of_message(msg, &limits);
        match (header, event) {
            (Some((m, _)), Some(event)) if raw.len() <= limits.max_bytes => {
                let summary = RecordSummary {
                    syslog: Some(SyslogHeader::of(m)),
                    event: Some(event),
                    syslog_error: None,
                    xml_error: None,
                };
                Self::with_summary(
                    received_micros,
                    &NodeIdentity::default(),
                    "local",
                    Transport::Local,
                    raw,
                    &summary,
                )
            }
            _ => Self::local(received_micros, raw),
        }
    }

    /// Prepare a record whose summary is already known.
    pub(crate) fn with_summary(
        received_micros: i64,
        node: &NodeIdentity,
        peer: &str,
        transport: Transport,
        raw: &[u8],
        summary: &RecordSummary,
    ) -> Self {
        let mut tail = Vec::with_capacity(raw.len() + 256);
        let mut e = Enc(&mut tail);
        e.i64(received_micros);
        e.u8(transport.code());
        e.str16(&bounded(&node.subject));
        match node.fingerprint {
            None => e.u8(0),
            Some(f) => {
                e.u8(1);
                e.raw(&f);
            }
        }
        e.str16(&bounded(peer));
        encode_summary(&mut e, summary);
        e.bytes32(raw);
        let ev = summary.event.as_ref();
        let index = IndexFields {
            received: received_micros,
            event_time: ev.and_then(|e| e.event_time),
            outcome: ev.and_then(|e| e.outcome),
            parse_error: summary.parse_error(),
            event_id: ev.map(|e| e.event_id.code.clone()),
            event_types: ev
                .map(|e| e.event_types.iter().map(|c| c.code.clone()).collect())
                .unwrap_or_default(),
            users: ev.map(|e| e.user_ids.clone()).unwrap_or_default(),
            patients: ev.map(|e| e.patient_ids.clone()).unwrap_or_default(),
            source: ev.and_then(|e| e.source_id.clone()),
            node: bounded(&node.subject),
        };
        NewRecord { tail, index }
    }

    /// Encoded size on disk.
    pub fn encoded_len(&self) -> usize {
        4 + 4 + 8 + 32 + self.tail.len() + 32
    }
}

fn encode_code(e: &mut Enc<'_>, c: &Code) {
    e.str16(&c.code);
    e.str16(&c.system);
    e.str16(&c.meaning);
}

fn encode_summary(e: &mut Enc<'_>, s: &RecordSummary) {
    e.u8(u8::from(s.syslog.is_some()) | (u8::from(s.event.is_some()) << 1));
    e.opt_str(s.syslog_error.as_deref());
    e.opt_str(s.xml_error.as_deref());
    if let Some(h) = &s.syslog {
        e.u8(h.pri);
        match h.timestamp {
            None => e.u8(0),
            Some(t) => {
                e.u8(1);
                e.i64(t);
            }
        }
        e.opt_str(h.hostname.as_deref());
        e.opt_str(h.app_name.as_deref());
        e.opt_str(h.procid.as_deref());
        e.opt_str(h.msgid.as_deref());
    }
    if let Some(ev) = &s.event {
        encode_code(e, &ev.event_id);
        e.u16(ev.event_types.len() as u16);
        for c in &ev.event_types {
            encode_code(e, c);
        }
        e.opt_str(ev.action.as_deref());
        match ev.outcome {
            None => e.u8(0),
            Some(o) => {
                e.u8(1);
                e.u8(o);
            }
        }
        match ev.event_time {
            None => e.u8(0),
            Some(t) => {
                e.u8(1);
                e.i64(t);
            }
        }
        for list in [&ev.user_ids, &ev.patient_ids] {
            e.u16(list.len() as u16);
            for u in list {
                e.str16(u);
            }
        }
        e.opt_str(ev.source_id.as_deref());
    }
}

fn decode_code(d: &mut Dec<'_>) -> Result<Code, DecError> {
    Ok(Code {
        code: d.str16("code")?,
        system: d.str16("code system")?,
        meaning: d.str16("code meaning")?,
    })
}

fn decode_summary(d: &mut Dec<'_>) -> Result<RecordSummary, DecError> {
    let flags = d.u8("summary flags")?;
    if flags > 3 {
        return Err(DecError(format!("summary flags {flags}")));
    }
    let mut s = RecordSummary {
        syslog_error: d.opt_str("syslog error")?,
        xml_error: d.opt_str("xml error")?,
        ..Default::default()
    };
    if flags & 1 != 0 {
        let pri = d.u8("pri")?;
        let timestamp = match d.u8("timestamp tag")? {
            0 => None,
            1 => Some(d.i64("timestamp")?),
            t => return Err(DecError(format!("timestamp tag {t}"))),
        };
        s.syslog = Some(SyslogHeader {
            pri,
            timestamp,
            hostname: d.opt_str("hostname")?,
            app_name: d.opt_str("app-name")?,
            procid: d.opt_str("procid")?,
            msgid: d.opt_str("msgid")?,
        });
    }
    if flags & 2 != 0 {
        let mut ev = EventSummary {
            event_id: decode_code(d)?,
            ..Default::default()
        };
        let n = d.u16("event type count")?;
        for _ in 0..n {
            ev.event_types.push(decode_code(d)?);
        }
        ev.action = d.opt_str("action")?;
        ev.outcome = match d.u8("outcome tag")? {
            0 => None,
            1 => Some(d.u8("outcome")?),
            t => return Err(DecError(format!("outcome tag {t}"))),
        };
        ev.event_time = match d.u8("event time tag")? {
            0 => None,
            1 => Some(d.i64("event time")?),
            t => return Err(DecError(format!("event time tag {t}"))),
        };
        for list in [&mut ev.user_ids, &mut ev.patient_ids] {
            let n = d.u16("list count")?;
            for _ in 0..n {
                list.push(d.str16("list value")?);
            }
        }
        ev.source_id = d.opt_str("source id")?;
        s.event = Some(ev);
    }
    Ok(s)
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number (1, 2, …).
    pub seq: u64,
    /// Hash of the previous record.
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
    /// When the repository received it (Unix µs).
    pub received: i64,
    /// How it arrived.
    pub transport: Transport,
    /// The authenticated sending node.
    pub node: NodeIdentity,
    /// The peer's socket address.
    pub peer: String,
    /// The parsed fields.
    pub summary: RecordSummary,
    /// The message exactly as received.
    pub raw: Vec<u8>,
}

/// Hash of a record body.
pub(crate) fn hash_body(seq: u64, prev: &[u8; 32], tail: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(tail);
    let mut h = [0u8; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    h
}

/// Append the on-disk frame of a record to `out`; returns its hash.
pub(crate) fn encode_frame(seq: u64, prev: &[u8; 32], tail: &[u8], out: &mut Vec<u8>) -> [u8; 32] {
    let hash = hash_body(seq, prev, tail);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&((8 + 32 + tail.len()) as u32).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(tail);
    out.extend_from_slice(&hash);
    hash
}

/// Decode a record body (everything between the length and the stored hash).
pub(crate) fn decode_body(body: &[u8], stored_hash: [u8; 32]) -> Result<Record, DecError> {
    decode_body_opts(body, stored_hash, true)
}

/// [`decode_body`], leaving `raw` empty unless `with_raw` (the index rebuild does not need it).
pub(crate) fn decode_body_opts(
    body: &[u8],
    stored_hash: [u8; 32],
    with_raw: bool,
) -> Result<Record, DecError> {
    let mut d = Dec::new(body);
    let seq = d.u64("seq")?;
    let prev_hash = d.arr32("prev hash")?;
    let received = d.i64("received")?;
    let t = d.u8("transport")?;
    let transport = Transport::from_code(t).ok_or_else(|| DecError(format!("transport {t}")))?;
    let subject = d.str16("node subject")?;
    let fingerprint = match d.u8("fingerprint tag")? {
        0 => None,
        1 => Some(d.arr32("fingerprint")?),
        t => return Err(DecError(format!("fingerprint tag {t}"))),
    };
    let peer = d.str16("peer")?;
    let summary = decode_summary(&mut d)?;
    let raw = d.bytes32("raw message")?;
    let raw = if with_raw { raw.to_vec() } else { Vec::new() };
    d.done("record")?;
    Ok(Record {
        seq,
        prev_hash,
        hash: stored_hash,
        received,
        transport,
        node: NodeIdentity {
            subject,
            fingerprint,
        },
        peer,
        summary,
        raw,
    })
}

/// Index fields of a decoded record (used when rebuilding the index at open).
pub(crate) fn index_fields(r: &Record) -> IndexFields {
    let ev = r.summary.event.as_ref();
    IndexFields {
        received: r.received,
        event_time: ev.and_then(|e| e.event_time),
        outcome: ev.and_then(|e| e.outcome),
        parse_error: r.summary.parse_error(),
        event_id: ev.map(|e| e.event_id.code.clone()),
        event_types: ev
            .map(|e| e.event_types.iter().map(|c| c.code.clone()).collect())
            .unwrap_or_default(),
        users: ev.map(|e| e.user_ids.clone()).unwrap_or_default(),
        patients: ev.map(|e| e.patient_ids.clone()).unwrap_or_default(),
        source: ev.and_then(|e| e.source_id.clone()),
        node: r.node.subject.clone(),
    }
}
