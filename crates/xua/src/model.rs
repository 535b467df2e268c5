//! The VIHF claims: what an assertion says about the professional, the structure, the software
//! and the access. The same types are filled by the caller for issuance and by the validator from
//! a verified assertion.

use std::time::SystemTime;

use cps_pki::IdNatPs;

/// An HL7 v3 coded value (`CE`): `Role`, `PurposeOfUse`, `ConfidentialityCode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodedValue {
    /// `code`.
    pub code: String,
    /// `codeSystem` (an OID).
    pub code_system: String,
    /// `codeSystemName`, optional.
    pub code_system_name: Option<String>,
    /// `displayName`, optional.
    pub display_name: Option<String>,
}

impl CodedValue {
    /// A coded value with a code and its code system only.
    pub fn new(code: impl Into<String>, code_system: impl Into<String>) -> Self {
        CodedValue {
            code: code.into(),
            code_system: code_system.into(),
            code_system_name: None,
            display_name: None,
        }
    }

    pub(crate) fn check(&self, what: &str) -> Result<(), String> {
        check_text(&self.code, what, 64)?;
        if !is_oid(&self.code_system) {
            return Err(format!(
                "{what}: codeSystem '{}' is not an OID",
                shown(&self.code_system)
            ));
        }
        if let Some(n) = &self.code_system_name {
            check_text(n, what, 256)?;
        }
        if let Some(n) = &self.display_name {
            check_text(n, what, 256)?;
        }
        Ok(())
    }
}

/// `Authentification_Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthenticationMode {
    /// `DIRECTE`: the professional authenticated with their own card.
    Direct,
    /// `INDIRECTE`: the structure authenticated the user and signs with its seal.
    Indirect,
    /// `INDIRECTE_RENFORCEE`: indirect with reinforced authentication.
    IndirectReinforced,
}

impl AuthenticationMode {
    /// The VIHF value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthenticationMode::Direct => "DIRECTE",
            AuthenticationMode::Indirect => "INDIRECTE",
            AuthenticationMode::IndirectReinforced => "INDIRECTE_RENFORCEE",
        }
    }

    /// Parse the VIHF value (exact spelling).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "DIRECTE" => AuthenticationMode::Direct,
            "INDIRECTE" => AuthenticationMode::Indirect,
            "INDIRECTE_RENFORCEE" => AuthenticationMode::IndirectReinforced,
            _ => return None,
        })
    }
}

/// Purpose of use (TRE_R248 "mode d'accès").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurposeOfUse {
    /// `normal`.
    Normal,
    /// `bris_de_glace`: emergency access; always carries a non-empty justification.
    BreakGlass {
        /// Why the professional broke the glass.
        justification: String,
    },
    /// `centre_15`: access by an emergency call centre (SAMU regulation).
    Centre15,
}

impl PurposeOfUse {
    /// The TRE_R248 code.
    pub fn code(&self) -> &'static str {
        match self {
            PurposeOfUse::Normal => "normal",
            PurposeOfUse::BreakGlass { .. } => "bris_de_glace",
            PurposeOfUse::Centre15 => "centre_15",
        }
    }

    /// The TRE_R248 display name.
    pub fn display_name(&self) -> &'static str {
        match self {
            PurposeOfUse::Normal => "Accès normal",
            PurposeOfUse::BreakGlass { .. } => "Accès en bris de glace",
            PurposeOfUse::Centre15 => "Accès par un centre de régulation médicale",
        }
    }

    /// Whether this is a break-glass access.
    pub fn is_break_glass(&self) -> bool {
        matches!(self, PurposeOfUse::BreakGlass { .. })
    }
}

/// The patient targeted by the access: the INS and its assigning authority, written as the HL7
/// CX `INS^^^&OID&ISO^NH` in `resource-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientId {
    /// The INS (matricule INS: the NIR or NIA, 15 characters with its key).
    pub ins: String,
    /// OID of the assigning authority (INS-NIR `1.2.250.1.213.1.4.8`, INS-NIA `…4.9`, and the
    /// test authorities `…4.10` / `…4.11`).
    pub authority: String,
}

/// The INS assigning authorities accepted by default.
pub const INS_AUTHORITIES: [&str; 4] = [
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
    "1.2.250.1.213.1.4.11",
];

impl PatientId {
    /// The HL7 CX form.
    pub fn to_cx(&self) -> String {
        format!("{}^^^&{}&ISO^NH", self.ins, self.authority)
    }

    /// Parse and check a CX value: `ID^^^&OID&ISO^NH` with a well-formed INS (15 characters,
    /// key = 97 − (number mod 97), Corsican `2A`/`2B` departments handled) and an OID authority.
    pub fn parse_cx(s: &str) -> Result<PatientId, String> {
        let bad = |why: &str| format!("resource-id '{}': {why}", shown(s));
        let (ins, rest) = s
            .split_once("^^^&")
            .ok_or_else(|| bad("not an HL7 CX value ID^^^&OID&ISO^NH"))?;
        let authority = rest
            .strip_suffix("&ISO^NH")
            .ok_or_else(|| bad("assigning authority must end with &ISO^NH"))?;
        if !is_oid(authority) {
            return Err(bad("assigning authority is not an OID"));
        }
        check_ins(ins).map_err(|e| bad(&e))?;
        Ok(PatientId {
            ins: ins.to_owned(),
            authority: authority.to_owned(),
        })
    }
}

/// Check a matricule INS (NIR or NIA): 13 characters (digits, with `2A`/`2B` allowed at the
/// department position) and a two-digit key equal to 97 − (number mod 97).
pub fn check_ins(ins: &str) -> Result<(), String> {
    let b = ins.as_bytes();
    if b.len() != 15 {
        return Err("INS must be 15 characters (13 + 2-digit key)".into());
    }
    let (body, key) = b.split_at(13);
    if !key.iter().all(u8::is_ascii_digit) {
        return Err("INS key must be two digits".into());
    }
    let mut digits = [0u8; 13];
    digits.copy_from_slice(body);
    // Corsica: 2A → 19, 2B → 18 for the key computation.
    let corsica = match &digits[5..7] {
        [b'2', b'A'] => Some(1_000_000u64),
        [b'2', b'B'] => Some(2_000_000u64),
        _ => None,
    };
    if corsica.is_some() {
        digits[6] = b'0';
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err("INS must be digits (2A/2B allowed for the department)".into());
    }
    if !matches!(digits[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8') {
        return Err("INS must start with 1, 2, 3, 4, 7 or 8".into());
    }
    let mut n = digits
        .iter()
        .fold(0u64, |a, d| a * 10 + u64::from(d - b'0'));
    if let Some(sub) = corsica {
        n -= sub;
    }
    let expected = 97 - (n % 97);
    let found = u64::from(key[0] - b'0') * 10 + u64::from(key[1] - b'0');
    if expected != found {
        return Err(format!("INS key is {expected:02}, not {found:02}"));
    }
    Ok(())
}

/// The software that produced the access (`LPS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareInfo {
    /// `LPS_Nom`.
    pub name: String,
    /// `LPS_Version`, optional.
    pub version: Option<String>,
    /// `LPS_ID`, optional.
    pub id: Option<String>,
    /// `LPS_ID_HOMOLOGATION_DMP`.
    pub homologation: String,
}

/// Everything a VIHF asserts, apart from the envelope data the issuer fills in (ID, issuer,
/// times, signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VihfClaims {
    /// `VIHF_Version` (`3.0` or `4.0`).
    pub vihf_version: String,
    /// `Subject/NameID`: the professional's IdNat_PS.
    pub name_id: IdNatPs,
    /// `subject-id`: "Nom, Prénom" of the professional.
    pub subject_id: String,
    /// `subject:role` values; the first is the profession (mandatory).
    pub roles: Vec<CodedValue>,
    /// `Secteur_Activite`, `code^OID`.
    pub secteur_activite: String,
    /// `Identifiant_Structure` (struct_IdNat).
    pub structure_id: String,
    /// `Authentification_Mode`.
    pub authentication_mode: AuthenticationMode,
    /// `resource-id`: the patient, when the access concerns one.
    pub patient: Option<PatientId>,
    /// `Ressource_URN` (`urn:dmp`).
    pub resource_urn: String,
    /// `purposeofuse`.
    pub purpose_of_use: PurposeOfUse,
    /// `confidentiality-code`, optional.
    pub confidentiality_code: Option<CodedValue>,
    /// `LPS_*`.
    pub software: SoftwareInfo,
    /// `AuthnStatement/@AuthnInstant`: when the user logged in.
    pub authn_instant: SystemTime,
    /// `AuthnContextClassRef`.
    pub authn_context_class_ref: String,
}

/// `AuthnContextClassRef` for a smartcard with PKI (card + PIN login).
pub const AUTHN_SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";
/// `AuthnContextClassRef` for TLS client authentication.
pub const AUTHN_TLS_CLIENT: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient";

/// Why claims are not well formed (shared by issuance and validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimProblem {
    /// A value is malformed (attribute name, reason).
    Malformed(&'static str, String),
    /// Break-glass without a justification.
    BreakGlassWithoutJustification,
}

impl VihfClaims {
    /// Check every value for well-formedness (the same rules the validator applies).
    pub(crate) fn check(&self, versions: &[&str]) -> Result<(), ClaimProblem> {
        use crate::ns::attr;
        use ClaimProblem::Malformed as M;
        if !versions.contains(&self.vihf_version.as_str()) {
            return Err(M(
                attr::VIHF_VERSION,
                format!(
                    "VIHF_Version '{}' is not one of {}",
                    shown(&self.vihf_version),
                    versions.join(", ")
                ),
            ));
        }
        check_text(&self.subject_id, "subject-id", 256).map_err(|e| M(attr::SUBJECT_ID, e))?;
        if self.roles.is_empty() {
            return Err(M(
                attr::ROLE,
                "at least one role (the profession) is required".into(),
            ));
        }
        if self.roles.len() > 8 {
            return Err(M(attr::ROLE, "more than 8 roles".into()));
        }
        for r in &self.roles {
            r.check("role").map_err(|e| M(attr::ROLE, e))?;
        }
        check_code_oid(&self.secteur_activite)
            .map_err(|e| M(attr::SECTEUR_ACTIVITE, format!("Secteur_Activite {e}")))?;
        cps_pki::idnat::parse_structure_id(&self.structure_id)
            .map_err(|e| M(attr::IDENTIFIANT_STRUCTURE, e.to_string()))?;
        if let Some(p) = &self.patient {
            if !is_oid(&p.authority) {
                return Err(M(attr::RESOURCE_ID, "INS authority is not an OID".into()));
            }
            check_ins(&p.ins).map_err(|e| M(attr::RESOURCE_ID, e))?;
        }
        if !self.resource_urn.starts_with("urn:") || self.resource_urn.len() > 256 {
            return Err(M(
                attr::RESSOURCE_URN,
                format!("Ressource_URN '{}' is not a URN", shown(&self.resource_urn)),
            ));
        }
        check_text(&self.resource_urn, "Ressource_URN", 256)
            .map_err(|e| M(attr::RESSOURCE_URN, e))?;
        if let PurposeOfUse::BreakGlass { justification } = &self.purpose_of_use {
            if justification.trim().is_empty() {
                return Err(ClaimProblem::BreakGlassWithoutJustification);
            }
            check_text(justification, "justification", 1024)
                .map_err(|e| M(attr::BREAK_GLASS_JUSTIFICATION, e))?;
        }
        if let Some(c) = &self.confidentiality_code {
            c.check("confidentiality-code")
                .map_err(|e| M(attr::CONFIDENTIALITY_CODE, e))?;
        }
        check_text(&self.software.name, "LPS_Nom", 256).map_err(|e| M(attr::LPS_NOM, e))?;
        check_text(&self.software.homologation, "LPS_ID_HOMOLOGATION_DMP", 256)
            .map_err(|e| M(attr::LPS_HOMOLOGATION, e))?;
        if let Some(v) = &self.software.version {
            check_text(v, "LPS_Version", 256).map_err(|e| M(attr::LPS_VERSION, e))?;
        }
        if let Some(v) = &self.software.id {
            check_text(v, "LPS_ID", 256).map_err(|e| M(attr::LPS_ID, e))?;
        }
        check_text(&self.authn_context_class_ref, "AuthnContextClassRef", 256)
            .map_err(|e| M("AuthnContextClassRef", e))?;
        Ok(())
    }
}

/// A non-empty value without control characters (other than none at all), at most `max` chars.
pub(crate) fn check_text(s: &str, what: &str, max: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    // ASCII (the usual case): the control characters are the bytes below 0x20 and 0x7f, and
    // there are as many characters as bytes. Otherwise the same, per character.
    let (control, chars) = if s.is_ascii() {
        (s.bytes().any(|b| b < 0x20 || b == 0x7f), s.len())
    } else {
        (s.chars().any(char::is_control), s.chars().count())
    };
    if control {
        return Err(format!("{what} contains a control character"));
    }
    if chars > max {
        return Err(format!("{what} is longer than {max} characters"));
    }
    Ok(())
}

/// `code^OID`.
pub(crate) fn check_code_oid(s: &str) -> Result<(), String> {
    let (code, oid) = s
        .split_once('^')
        .ok_or_else(|| format!("'{}' is not code^OID", shown(s)))?;
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!("'{}': malformed code", shown(s)));
    }
    if !is_oid(oid) {
        return Err(format!("'{}': '{}' is not an OID", shown(s), shown(oid)));
    }
    Ok(())
}

/// A dotted OID: at least two arcs of digits, no leading zeros, at most 128 characters.
pub(crate) fn is_oid(s: &str) -> bool {
    if s.is_empty() || s.len() > 128 {
        return false;
    }
    let mut arcs = 0;
    for arc in s.as_bytes().split(|&b| b == b'.') {
        if arc.is_empty()
            || !arc.iter().all(u8::is_ascii_digit)
            || (arc.len() > 1 && arc[0] == b'0')
        {
            return false;
        }
        arcs += 1;
    }
    arcs >= 2
}

/// An input value as shown in a message: control characters escaped, cut at 80 characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a valid INS from its 13-character body.
    fn with_key(body: &str) -> String {
        let n: u64 = body
            .replace("2A", "19")
            .replace("2B", "18")
            .parse()
            .unwrap();
        format!("{body}{:02}", 97 - n % 97)
    }

    #[test]
    fn ins_keys() {
        let ins = with_key("1840575123456");
        assert!(check_ins(&ins).is_ok());
        let mut wrong = ins.clone().into_bytes();
        wrong[14] = if wrong[14] == b'0' { b'1' } else { b'0' };
        assert!(check_ins(std::str::from_utf8(&wrong).unwrap()).is_err());
        assert!(check_ins("184057512345").is_err());
        assert!(check_ins("5840575123456 00").is_err());
        // Corsica: 2A counts as 19, 2B as 18 in the key computation.
        let a = with_key("184052A123456");
        assert!(check_ins(&a).is_ok(), "{a}");
        let n: u64 = "1840519123456".parse().unwrap();
        assert_eq!(&a[13..], format!("{:02}", 97 - n % 97));
        let b = with_key("184052B123456");
        assert!(check_ins(&b).is_ok(), "{b}");
        assert_ne!(&a[13..], &b[13..]);
    }

    #[test]
    fn cx_round_trip() {
        let p = PatientId {
            ins: with_key("2750312345678"),
            authority: "1.2.250.1.213.1.4.10".into(),
        };
        assert_eq!(PatientId::parse_cx(&p.to_cx()).unwrap(), p);
        assert!(PatientId::parse_cx("123^^^&1.2.3&ISO^NH").is_err());
        assert!(PatientId::parse_cx(&format!("{}^^^&x.y&ISO^NH", p.ins)).is_err());
        assert!(PatientId::parse_cx(&format!("{}^^^&1.2.250&ISO^PI", p.ins)).is_err());
    }

    #[test]
    fn text_checks_count_characters_and_find_controls() {
        assert!(check_text("Médecin", "x", 7).is_ok());
        assert!(check_text("Médecin", "x", 6).is_err());
        assert!(check_text("abc", "x", 3).is_ok());
        assert!(check_text("abcd", "x", 3).is_err());
        for bad in ["a\u{7f}b", "a\tb", "a\u{1}", "é\u{85}", "é\u{9f}", "   "] {
            assert!(check_text(bad, "x", 10).is_err(), "{bad:?}");
        }
        assert!(check_text("é\u{a0}", "x", 10).is_ok());
    }

    #[test]
    fn oids_and_codes() {
        assert!(is_oid("1.2.250.1.71.4.2.4"));
        assert!(!is_oid("1"));
        assert!(!is_oid("1..2"));
        assert!(!is_oid("1.02"));
        assert!(is_oid("0.0") && is_oid("2.999.10"));
        for bad in ["", ".", "1.", ".1", "1.2.", "01.2", "1.2a", "1.²", "1,2"] {
            assert!(!is_oid(bad), "{bad:?}");
        }
        assert!(check_code_oid("SA07^1.2.250.1.71.4.2.4").is_ok());
        assert!(check_code_oid("SA07").is_err());
        assert!(check_code_oid("SA 07^1.2.3").is_err());
    }
}
