//! Reading audit messages received from other nodes: the searchable fields of a DICOM PS3.15
//! A.5.1 (or its RFC 3881 predecessor) message.
//!
//! The parser is `roxmltree` with DTDs refused, a node limit and a byte limit; it extracts what
//! the repository indexes and does not judge the rest (other nodes' messages are stored as
//! received whatever they contain).

/// A coded value as read from a message (`csd-code` or the RFC 3881 `code` attribute).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Code {
    /// The code.
    pub code: String,
    /// `codeSystemName` (may be empty in RFC 3881 messages).
    pub system: String,
    /// `originalText` or `displayName`.
    pub meaning: String,
}

/// The searchable fields of an audit message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSummary {
    /// `EventID`.
    pub event_id: Code,
    /// `EventTypeCode`*.
    pub event_types: Vec<Code>,
    /// `EventActionCode`.
    pub action: Option<String>,
    /// `EventOutcomeIndicator`.
    pub outcome: Option<u8>,
    /// `EventDateTime` in Unix microseconds.
    pub event_time: Option<i64>,
    /// Every `ActiveParticipant`'s `UserID` and `AlternativeUserID`.
    pub user_ids: Vec<String>,
    /// `ParticipantObjectID` of objects that are patients (type 1, role 1).
    pub patient_ids: Vec<String>,
    /// `AuditSourceID`.
    pub source_id: Option<String>,
}

/// Limits of the XML parser.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    /// Largest document in bytes.
    pub max_bytes: usize,
    /// Most XML nodes (elements, attributes' text, comments…).
    pub max_nodes: u32,
    /// Most values kept per list field (users, patients, event types); more are an error.
    pub max_values: usize,
    /// Longest kept value in bytes; longer values are an error.
    pub max_value_len: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_bytes: 1 << 20,
            max_nodes: 20_000,
            max_values: 256,
            max_value_len: 1024,
        }
    }
}

use crate::error::XmlError;
use crate::model::{AuditMessage, CodedValue, ObjectRole, ObjectType};

impl EventSummary {
    /// What [`parse_audit_xml`] reads from `msg.to_xml()`, taken from the model instead of
    /// writing and re-parsing the XML (for the appliance's own messages, indexed as they are
    /// logged). `None` when a value is beyond `limits`, where the parser's own refusal is the
    /// answer: parse the XML then.
    pub fn of_message(msg: &AuditMessage, limits: &XmlLimits) -> Option<EventSummary> {
        let max_value_len = limits.max_value_len.min(16 * 1024);
        let max_values = limits.max_values.min(4096);
        let keep = |v: &str| (v.len() <= max_value_len).then(|| v.to_owned());
        let code = |c: &CodedValue| -> Option<Code> {
            Some(Code {
                code: keep(&c.code)?,
                system: keep(&c.system)?,
                meaning: keep(&c.meaning)?,
            })
        };
        // As the parser: the length is checked first, then a full list refuses even a repeat.
        let push = |list: &mut Vec<String>, v: &str| -> Option<()> {
            let v = keep(v)?;
            if list.len() >= max_values {
                return None;
            }
            if !list.contains(&v) {
                list.push(v);
            }
            Some(())
        };
        let e = &msg.event;
        if e.event_types.len() > max_values {
            return None;
        }
        // A generous bound on the XML nodes the message makes; near the parser's limit, let
        // the parser decide.
        let nodes = 8
            + e.event_types.len()
            + msg
                .participants
                .iter()
                .map(|p| 1 + p.roles.len())
                .sum::<usize>()
            + msg.source.type_codes.len()
            + msg
                .objects
                .iter()
                .map(|o| 4 + o.details.len())
                .sum::<usize>();
        if nodes.saturating_mul(2) > limits.max_nodes as usize {
            return None;
        }
        let written = crate::time_fmt::xml_datetime(e.date_time);
        let mut s = EventSummary {
            event_id: code(&e.event_id)?,
            event_types: e.event_types.iter().map(code).collect::<Option<_>>()?,
            action: e.action.map(|a| a.code().to_owned()),
            outcome: Some(e.outcome.code()),
            event_time: Some(crate::time_fmt::unix_micros(
                crate::time_fmt::parse_datetime(&written)?,
            )),
            user_ids: Vec::new(),
            patient_ids: Vec::new(),
            source_id: Some(keep(&msg.source.source_id)?),
        };
        for p in &msg.participants {
            for v in std::iter::once(p.user_id.as_str()).chain(p.alternative_user_id.as_deref()) {
                if !v.is_empty() {
                    push(&mut s.user_ids, v)?;
                }
            }
        }
        for o in &msg.objects {
            if o.object_type == Some(ObjectType::Person) && o.role == Some(ObjectRole::Patient) {
                push(&mut s.patient_ids, &o.id)?;
            }
        }
        Some(s)
    }
}

/// Parse `xml` (UTF-8 bytes, a leading BOM allowed) into the searchable fields.
pub fn parse_audit_xml(xml: &[u8], limits: &XmlLimits) -> Result<EventSummary, XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            len: xml.len(),
            max: limits.max_bytes,
        });
    }
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    let text = std::str::from_utf8(xml).map_err(|e| XmlError::Syntax(format!("not UTF-8: {e}")))?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| XmlError::Syntax(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "AuditMessage" {
        return Err(XmlError::NotAuditMessage(
            root.tag_name().name().chars().take(64).collect(),
        ));
    }
    let mut s = EventSummary::default();
    let mut seen_event = false;
    // Stored values are length-prefixed with 16 bits: never keep more than 16 KiB.
    let max_value_len = limits.max_value_len.min(16 * 1024);
    let max_values = limits.max_values.min(4096);
    let keep = |v: &str, what: &str| -> Result<String, XmlError> {
        if v.len() > max_value_len {
            return Err(XmlError::Structure(format!(
                "{what} of {} bytes exceeds the limit of {}",
                v.len(),
                max_value_len
            )));
        }
        Ok(v.to_owned())
    };
    let push = |list: &mut Vec<String>, v: String, what: &str| -> Result<(), XmlError> {
        if list.len() >= max_values {
            return Err(XmlError::Structure(format!(
                "more than {max_values} {what} values"
            )));
        }
        if !list.contains(&v) {
            list.push(v);
        }
        Ok(())
    };
    for child in root.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "EventIdentification" => {
                if seen_event {
                    return Err(XmlError::Structure(
                        "more than one EventIdentification".into(),
                    ));
                }
                seen_event = true;
                s.action = child
                    .attribute("EventActionCode")
                    .map(|a| keep(a, "EventActionCode"))
                    .transpose()?;
                if let Some(o) = child.attribute("EventOutcomeIndicator") {
                    let v: u8 = o.trim().parse().map_err(|_| {
                        XmlError::Structure(format!(
                            "EventOutcomeIndicator {:?} is not a number",
                            trunc(o)
                        ))
                    })?;
                    s.outcome = Some(v);
                }
                if let Some(t) = child.attribute("EventDateTime") {
                    let t = crate::time_fmt::parse_datetime(t.trim()).ok_or_else(|| {
                        XmlError::Structure(format!(
                            "EventDateTime {:?} is not an RFC 3339 date-time",
                            trunc(t)
                        ))
                    })?;
                    s.event_time = Some(crate::time_fmt::unix_micros(t));
                }
                let mut found_id = false;
                for e in child.children().filter(|n| n.is_element()) {
                    match e.tag_name().name() {
                        "EventID" => {
                            s.event_id = code_of(&e, &keep)?;
                            found_id = true;
                        }
                        "EventTypeCode" => {
                            if s.event_types.len() >= max_values {
                                return Err(XmlError::Structure("too many EventTypeCode".into()));
                            }
                            s.event_types.push(code_of(&e, &keep)?);
                        }
                        _ => {}
                    }
                }
                if !found_id {
                    return Err(XmlError::Structure(
                        "EventIdentification has no EventID".into(),
                    ));
                }
            }
            "ActiveParticipant" => {
                for a in ["UserID", "AlternativeUserID"] {
                    if let Some(v) = child.attribute(a).filter(|v| !v.is_empty()) {
                        let v = keep(v, a)?;
                        push(&mut s.user_ids, v, "user id")?;
                    }
                }
            }
            // RFC 3881 allows several; the first is the one we index.
            "AuditSourceIdentification" if s.source_id.is_none() => {
                s.source_id = child
                    .attribute("AuditSourceID")
                    .map(|v| keep(v, "AuditSourceID"))
                    .transpose()?;
            }
            "ParticipantObjectIdentification" => {
                let is_patient = child.attribute("ParticipantObjectTypeCode").map(str::trim)
                    == Some("1")
                    && child
                        .attribute("ParticipantObjectTypeCodeRole")
                        .map(str::trim)
                        == Some("1");
                if is_patient && let Some(id) = child.attribute("ParticipantObjectID") {
                    let v = keep(id, "ParticipantObjectID")?;
                    push(&mut s.patient_ids, v, "patient id")?;
                }
            }
            _ => {}
        }
    }
    if !seen_event {
        return Err(XmlError::Structure("no EventIdentification".into()));
    }
    Ok(s)
}

fn trunc(s: &str) -> String {
    s.chars().take(40).collect()
}

fn code_of(
    e: &roxmltree::Node<'_, '_>,
    keep: &dyn Fn(&str, &str) -> Result<String, XmlError>,
) -> Result<Code, XmlError> {
    let name = e.tag_name().name();
    let code = e
        .attribute("csd-code")
        .or_else(|| e.attribute("code"))
        .ok_or_else(|| XmlError::Structure(format!("{name} has no csd-code")))?;
    Ok(Code {
        code: keep(code, name)?,
        system: keep(e.attribute("codeSystemName").unwrap_or(""), name)?,
        meaning: keep(
            e.attribute("originalText")
                .or_else(|| e.attribute("displayName"))
                .unwrap_or(""),
            name,
        )?,
    })
}
