//! The DICOM PS3.15 A.5.1 audit message model and its XML encoder.
//!
//! The element order, attribute names and value sets follow the A.5.1 schema: `AuditMessage` =
//! `EventIdentification`, `ActiveParticipant`+, `AuditSourceIdentification`,
//! `ParticipantObjectIdentification`*; coded values carry `csd-code`, `codeSystemName`, optional
//! `displayName` and `originalText`. No namespace is used.

use time::OffsetDateTime;

use crate::error::ModelError;

/// A coded value (`CodedValueType` of the schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodedValue {
    /// `csd-code`.
    pub code: String,
    /// `codeSystemName`: `DCM`, `IHE Transactions`, an OID, or a local name.
    pub system: String,
    /// `originalText`, the code meaning (also written as `displayName`).
    pub meaning: String,
}

impl CodedValue {
    /// A coded value from its three parts.
    pub fn new(
        code: impl Into<String>,
        system: impl Into<String>,
        meaning: impl Into<String>,
    ) -> Self {
        CodedValue {
            code: code.into(),
            system: system.into(),
            meaning: meaning.into(),
        }
    }

    /// A code of the DICOM `DCM` coding scheme.
    pub fn dcm(code: &str, meaning: &str) -> Self {
        CodedValue::new(code, "DCM", meaning)
    }
}

/// `EventActionCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventAction {
    /// `C`: create.
    Create,
    /// `R`: read, view, print.
    Read,
    /// `U`: update.
    Update,
    /// `D`: delete.
    Delete,
    /// `E`: execute.
    Execute,
}

impl EventAction {
    /// The one-letter code of the schema.
    pub fn code(self) -> &'static str {
        match self {
            EventAction::Create => "C",
            EventAction::Read => "R",
            EventAction::Update => "U",
            EventAction::Delete => "D",
            EventAction::Execute => "E",
        }
    }
}

/// `EventOutcomeIndicator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOutcome {
    /// `0`: nominal success.
    Success,
    /// `4`: minor failure (the action was not completed, e.g. a refused login).
    MinorFailure,
    /// `8`: serious failure (e.g. a forged credential).
    SeriousFailure,
    /// `12`: major failure (the action made a function unavailable).
    MajorFailure,
}

impl EventOutcome {
    /// The numeric code of the schema.
    pub fn code(self) -> u8 {
        match self {
            EventOutcome::Success => 0,
            EventOutcome::MinorFailure => 4,
            EventOutcome::SeriousFailure => 8,
            EventOutcome::MajorFailure => 12,
        }
    }

    /// The outcome for a numeric code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => EventOutcome::Success,
            4 => EventOutcome::MinorFailure,
            8 => EventOutcome::SeriousFailure,
            12 => EventOutcome::MajorFailure,
            _ => return None,
        })
    }
}

/// `EventIdentification`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdentification {
    /// `EventID` (DICOM CID 400).
    pub event_id: CodedValue,
    /// `EventTypeCode`* (DICOM CID 401, IHE transactions, local codes).
    pub event_types: Vec<CodedValue>,
    /// `EventActionCode`.
    pub action: Option<EventAction>,
    /// `EventDateTime` (written in UTC).
    pub date_time: OffsetDateTime,
    /// `EventOutcomeIndicator`.
    pub outcome: EventOutcome,
    /// `EventOutcomeDescription`: the reason of a failure, in plain words.
    pub outcome_description: Option<String>,
}

/// `NetworkAccessPointTypeCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkAccessPointType {
    /// `1`: machine name, including DNS name.
    MachineName,
    /// `2`: IP address.
    IpAddress,
    /// `3`: telephone number.
    Telephone,
    /// `4`: email address.
    Email,
    /// `5`: URI.
    Uri,
}

impl NetworkAccessPointType {
    fn code(self) -> &'static str {
        match self {
            NetworkAccessPointType::MachineName => "1",
            NetworkAccessPointType::IpAddress => "2",
            NetworkAccessPointType::Telephone => "3",
            NetworkAccessPointType::Email => "4",
            NetworkAccessPointType::Uri => "5",
        }
    }

    /// IP address when `s` parses as one, machine name otherwise.
    pub fn guess(s: &str) -> Self {
        if s.parse::<std::net::IpAddr>().is_ok() {
            NetworkAccessPointType::IpAddress
        } else {
            NetworkAccessPointType::MachineName
        }
    }
}

/// `ActiveParticipant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveParticipant {
    /// `UserID` (required).
    pub user_id: String,
    /// `AlternativeUserID`.
    pub alternative_user_id: Option<String>,
    /// `UserName`.
    pub user_name: Option<String>,
    /// `UserIsRequestor`.
    pub is_requestor: bool,
    /// `RoleIDCode`*.
    pub roles: Vec<CodedValue>,
    /// `NetworkAccessPointID` and its type.
    pub network_access_point: Option<(String, NetworkAccessPointType)>,
}

impl ActiveParticipant {
    /// A participant with only its user id and requestor flag.
    pub fn new(user_id: impl Into<String>, is_requestor: bool) -> Self {
        ActiveParticipant {
            user_id: user_id.into(),
            alternative_user_id: None,
            user_name: None,
            is_requestor,
            roles: Vec::new(),
            network_access_point: None,
        }
    }

    /// Add a `RoleIDCode`.
    pub fn with_role(mut self, role: CodedValue) -> Self {
        self.roles.push(role);
        self
    }

    /// Set the `UserName`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.user_name = Some(name.into());
        self
    }

    /// Set the network access point (IP address or machine name, guessed from the text).
    pub fn with_access_point(mut self, nap: impl Into<String>) -> Self {
        let nap = nap.into();
        let kind = NetworkAccessPointType::guess(&nap);
        self.network_access_point = Some((nap, kind));
        self
    }
}

/// `AuditSourceIdentification`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSource {
    /// `AuditSourceID` (required): which system emitted the message.
    pub source_id: String,
    /// `AuditEnterpriseSiteID`.
    pub enterprise_site_id: Option<String>,
    /// `AuditSourceTypeCode`*: written as `csd-code` 1..9 with codeSystemName `DCM` (CID 20000's
    /// numeric codes: 1 end-user interface, 3 web server, 4 application server, 6 security server…).
    pub type_codes: Vec<u8>,
}

/// `ParticipantObjectTypeCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// `1`: person.
    Person,
    /// `2`: system object.
    SystemObject,
    /// `3`: organization.
    Organization,
    /// `4`: other.
    Other,
}

impl ObjectType {
    fn code(self) -> &'static str {
        match self {
            ObjectType::Person => "1",
            ObjectType::SystemObject => "2",
            ObjectType::Organization => "3",
            ObjectType::Other => "4",
        }
    }
}

/// `ParticipantObjectTypeCodeRole` values used by the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectRole {
    /// `1`: patient.
    Patient,
    /// `3`: report.
    Report,
    /// `4`: domain resource.
    Resource,
    /// `6`: user.
    User,
    /// `11`: security user entity.
    SecurityUserEntity,
    /// `13`: security resource (e.g. a certificate or a card).
    SecurityResource,
    /// `24`: query.
    Query,
}

impl ObjectRole {
    fn code(self) -> &'static str {
        match self {
            ObjectRole::Patient => "1",
            ObjectRole::Report => "3",
            ObjectRole::Resource => "4",
            ObjectRole::User => "6",
            ObjectRole::SecurityUserEntity => "11",
            ObjectRole::SecurityResource => "13",
            ObjectRole::Query => "24",
        }
    }
}

/// One `ParticipantObjectDetail` (`type` + base64 `value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDetail {
    /// `type`.
    pub kind: String,
    /// The raw value (base64-encoded on output).
    pub value: Vec<u8>,
}

/// `ParticipantObjectIdentification`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantObject {
    /// `ParticipantObjectID` (required).
    pub id: String,
    /// `ParticipantObjectIDTypeCode` (required).
    pub id_type: CodedValue,
    /// `ParticipantObjectTypeCode`.
    pub object_type: Option<ObjectType>,
    /// `ParticipantObjectTypeCodeRole`.
    pub role: Option<ObjectRole>,
    /// `ParticipantObjectName`.
    pub name: Option<String>,
    /// `ParticipantObjectDetail`*.
    pub details: Vec<ObjectDetail>,
}

/// A complete DICOM audit message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditMessage {
    /// `EventIdentification`.
    pub event: EventIdentification,
    /// `ActiveParticipant`+ (at least one).
    pub participants: Vec<ActiveParticipant>,
    /// `AuditSourceIdentification`.
    pub source: AuditSource,
    /// `ParticipantObjectIdentification`*.
    pub objects: Vec<ParticipantObject>,
}

/// Maximum length of any text field written into a message (characters are not cut silently:
/// longer fields are refused).
pub const MAX_FIELD_LEN: usize = 4096;

impl AuditMessage {
    /// Check the structural rules the schema imposes (at least one participant, required
    /// attributes not empty, bounded field sizes, no control characters).
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.participants.is_empty() {
            return Err(ModelError::NoParticipant);
        }
        check_code("EventID", &self.event.event_id)?;
        for c in &self.event.event_types {
            check_code("EventTypeCode", c)?;
        }
        if let Some(d) = &self.event.outcome_description {
            check_text("EventOutcomeDescription", d, true)?;
        }
        for p in &self.participants {
            check_text("UserID", &p.user_id, false)?;
            for t in [&p.alternative_user_id, &p.user_name].into_iter().flatten() {
                check_text("ActiveParticipant", t, true)?;
            }
            for r in &p.roles {
                check_code("RoleIDCode", r)?;
            }
            if let Some((nap, _)) = &p.network_access_point {
                check_text("NetworkAccessPointID", nap, false)?;
            }
        }
        check_text("AuditSourceID", &self.source.source_id, false)?;
        if let Some(s) = &self.source.enterprise_site_id {
            check_text("AuditEnterpriseSiteID", s, true)?;
        }
        for t in &self.source.type_codes {
            if !(1..=9).contains(t) {
                return Err(ModelError::Invalid {
                    field: "AuditSourceTypeCode",
                    reason: format!("{t} is not in 1..9"),
                });
            }
        }
        for o in &self.objects {
            check_text("ParticipantObjectID", &o.id, false)?;
            check_code("ParticipantObjectIDTypeCode", &o.id_type)?;
            // DICOM PS3.15 A.5.1: a participant object has a ParticipantObjectName or a
            // ParticipantObjectQuery; this model writes no queries, so the name is required.
            match &o.name {
                Some(n) if !n.trim().is_empty() => check_text("ParticipantObjectName", n, true)?,
                _ => {
                    return Err(ModelError::Invalid {
                        field: "ParticipantObjectName",
                        reason: format!(
                            "participant object '{}' has no name (the schema requires a name or a query)",
                            o.id
                        ),
                    });
                }
            }
            for d in &o.details {
                check_text("ParticipantObjectDetail type", &d.kind, false)?;
                if d.value.len() > MAX_FIELD_LEN {
                    return Err(ModelError::Invalid {
                        field: "ParticipantObjectDetail value",
                        reason: format!("{} bytes, at most {MAX_FIELD_LEN}", d.value.len()),
                    });
                }
            }
        }
        Ok(())
    }

    /// The message as DICOM audit XML (UTF-8, with an XML declaration), after [`validate`].
    ///
    /// [`validate`]: AuditMessage::validate
    pub fn to_xml(&self) -> Result<String, ModelError> {
        self.validate()?;
        let mut x = String::with_capacity(1024);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        x.push_str("<AuditMessage>");
        let e = &self.event;
        x.push_str("<EventIdentification");
        if let Some(a) = e.action {
            attr(&mut x, "EventActionCode", a.code());
        }
        attr(
            &mut x,
            "EventDateTime",
            &crate::time_fmt::xml_datetime(e.date_time),
        );
        attr(
            &mut x,
            "EventOutcomeIndicator",
            &e.outcome.code().to_string(),
        );
        x.push('>');
        coded(&mut x, "EventID", &e.event_id);
        for t in &e.event_types {
            coded(&mut x, "EventTypeCode", t);
        }
        if let Some(d) = &e.outcome_description {
            x.push_str("<EventOutcomeDescription>");
            escape_into(&mut x, d);
            x.push_str("</EventOutcomeDescription>");
        }
        x.push_str("</EventIdentification>");
        for p in &self.participants {
            x.push_str("<ActiveParticipant");
            attr(&mut x, "UserID", &p.user_id);
            if let Some(a) = &p.alternative_user_id {
                attr(&mut x, "AlternativeUserID", a);
            }
            if let Some(n) = &p.user_name {
                attr(&mut x, "UserName", n);
            }
            attr(
                &mut x,
                "UserIsRequestor",
                if p.is_requestor { "true" } else { "false" },
            );
            if let Some((nap, kind)) = &p.network_access_point {
                attr(&mut x, "NetworkAccessPointID", nap);
                attr(&mut x, "NetworkAccessPointTypeCode", kind.code());
            }
            if p.roles.is_empty() {
                x.push_str("/>");
            } else {
                x.push('>');
                for r in &p.roles {
                    coded(&mut x, "RoleIDCode", r);
                }
                x.push_str("</ActiveParticipant>");
            }
        }
        let s = &self.source;
        x.push_str("<AuditSourceIdentification");
        if let Some(site) = &s.enterprise_site_id {
            attr(&mut x, "AuditEnterpriseSiteID", site);
        }
        attr(&mut x, "AuditSourceID", &s.source_id);
        if s.type_codes.is_empty() {
            x.push_str("/>");
        } else {
            x.push('>');
            for t in &s.type_codes {
                let meaning = source_type_meaning(*t);
                coded(
                    &mut x,
                    "AuditSourceTypeCode",
                    &CodedValue::new(t.to_string(), "DCM", meaning),
                );
            }
            x.push_str("</AuditSourceIdentification>");
        }
        for o in &self.objects {
            x.push_str("<ParticipantObjectIdentification");
            attr(&mut x, "ParticipantObjectID", &o.id);
            if let Some(t) = o.object_type {
                attr(&mut x, "ParticipantObjectTypeCode", t.code());
            }
            if let Some(r) = o.role {
                attr(&mut x, "ParticipantObjectTypeCodeRole", r.code());
            }
            x.push('>');
            coded(&mut x, "ParticipantObjectIDTypeCode", &o.id_type);
            if let Some(n) = &o.name {
                x.push_str("<ParticipantObjectName>");
                escape_into(&mut x, n);
                x.push_str("</ParticipantObjectName>");
            }
            for d in &o.details {
                use base64::Engine as _;
                x.push_str("<ParticipantObjectDetail");
                attr(&mut x, "type", &d.kind);
                attr(
                    &mut x,
                    "value",
                    &base64::engine::general_purpose::STANDARD.encode(&d.value),
                );
                x.push_str("/>");
            }
            x.push_str("</ParticipantObjectIdentification>");
        }
        x.push_str("</AuditMessage>");
        Ok(x)
    }
}

fn source_type_meaning(t: u8) -> &'static str {
    match t {
        1 => "End-user display device, diagnostic display",
        2 => "Data acquisition device or instrument",
        3 => "Web server process or thread",
        4 => "Application server process or thread",
        5 => "Database server process or thread",
        6 => "Security server, e.g., a domain controller",
        7 => "ISO level 1-3 network component",
        8 => "ISO level 4-6 operating software",
        _ => "External source, other or unknown type",
    }
}

fn check_code(field: &'static str, c: &CodedValue) -> Result<(), ModelError> {
    check_text(field, &c.code, false)?;
    check_text(field, &c.system, false)?;
    check_text(field, &c.meaning, false)
}

fn check_text(field: &'static str, s: &str, may_be_empty: bool) -> Result<(), ModelError> {
    if !may_be_empty && s.trim().is_empty() {
        return Err(ModelError::Invalid {
            field,
            reason: "empty".into(),
        });
    }
    if s.len() > MAX_FIELD_LEN {
        return Err(ModelError::Invalid {
            field,
            reason: format!("{} bytes, at most {MAX_FIELD_LEN}", s.len()),
        });
    }
    // XML 1.0 cannot carry most C0 controls, even escaped.
    if let Some(c) = s.chars().find(|c| {
        (*c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || *c == '\u{FFFE}' || *c == '\u{FFFF}'
    }) {
        return Err(ModelError::Invalid {
            field,
            reason: format!(
                "control character U+{:04X} cannot be written in XML",
                c as u32
            ),
        });
    }
    Ok(())
}

fn attr(x: &mut String, name: &str, value: &str) {
    x.push(' ');
    x.push_str(name);
    x.push_str("=\"");
    escape_into(x, value);
    x.push('"');
}

fn coded(x: &mut String, element: &str, c: &CodedValue) {
    x.push('<');
    x.push_str(element);
    attr(x, "csd-code", &c.code);
    attr(x, "codeSystemName", &c.system);
    attr(x, "displayName", &c.meaning);
    attr(x, "originalText", &c.meaning);
    x.push_str("/>");
}

/// Escape text for both element content and double-quoted attribute values (tab, CR and LF
/// as character references so attribute normalisation keeps them).
fn escape_into(x: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => x.push_str("&amp;"),
            '<' => x.push_str("&lt;"),
            '>' => x.push_str("&gt;"),
            '"' => x.push_str("&quot;"),
            '\'' => x.push_str("&apos;"),
            '\t' => x.push_str("&#9;"),
            '\n' => x.push_str("&#10;"),
            '\r' => x.push_str("&#13;"),
            c => x.push(c),
        }
    }
}
