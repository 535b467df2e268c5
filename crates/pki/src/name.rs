//! Distinguished names, including the multi-valued first RDN of CPS person certificates
//! (`CN=<IdNat_PS>+SN=<surname>+GN=<given name>, title=<profession>, C=FR`).

use const_oid::ObjectIdentifier;
use der::asn1::{Any, Ia5StringRef, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

use crate::PkiError;

/// An attribute type the appliance writes in names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NameAttribute {
    Country,
    State,
    Locality,
    Organization,
    OrganizationalUnit,
    CommonName,
    Surname,
    GivenName,
    Title,
    SerialNumber,
    Pseudonym,
    OrganizationIdentifier,
    DomainComponent,
    Other(ObjectIdentifier),
}

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

impl NameAttribute {
    pub fn oid(&self) -> ObjectIdentifier {
        match self {
            NameAttribute::Country => oid("2.5.4.6"),
            NameAttribute::State => oid("2.5.4.8"),
            NameAttribute::Locality => oid("2.5.4.7"),
            NameAttribute::Organization => oid("2.5.4.10"),
            NameAttribute::OrganizationalUnit => oid("2.5.4.11"),
            NameAttribute::CommonName => oid("2.5.4.3"),
            NameAttribute::Surname => oid("2.5.4.4"),
            NameAttribute::GivenName => oid("2.5.4.42"),
            NameAttribute::Title => oid("2.5.4.12"),
            NameAttribute::SerialNumber => oid("2.5.4.5"),
            NameAttribute::Pseudonym => oid("2.5.4.65"),
            NameAttribute::OrganizationIdentifier => oid("2.5.4.97"),
            NameAttribute::DomainComponent => oid("0.9.2342.19200300.100.1.25"),
            NameAttribute::Other(o) => *o,
        }
    }

    fn from_oid(o: ObjectIdentifier) -> Self {
        [
            NameAttribute::Country,
            NameAttribute::State,
            NameAttribute::Locality,
            NameAttribute::Organization,
            NameAttribute::OrganizationalUnit,
            NameAttribute::CommonName,
            NameAttribute::Surname,
            NameAttribute::GivenName,
            NameAttribute::Title,
            NameAttribute::SerialNumber,
            NameAttribute::Pseudonym,
            NameAttribute::OrganizationIdentifier,
            NameAttribute::DomainComponent,
        ]
        .into_iter()
        .find(|a| a.oid() == o)
        .unwrap_or(NameAttribute::Other(o))
    }

    /// Short name used in strings (`C`, `CN`, `SN`, `GN`, `title`, ...).
    pub fn keyword(&self) -> String {
        match self {
            NameAttribute::Country => "C".into(),
            NameAttribute::State => "ST".into(),
            NameAttribute::Locality => "L".into(),
            NameAttribute::Organization => "O".into(),
            NameAttribute::OrganizationalUnit => "OU".into(),
            NameAttribute::CommonName => "CN".into(),
            NameAttribute::Surname => "SN".into(),
            NameAttribute::GivenName => "GN".into(),
            NameAttribute::Title => "title".into(),
            NameAttribute::SerialNumber => "serialNumber".into(),
            NameAttribute::Pseudonym => "pseudonym".into(),
            NameAttribute::OrganizationIdentifier => "organizationIdentifier".into(),
            NameAttribute::DomainComponent => "DC".into(),
            NameAttribute::Other(o) => o.to_string(),
        }
    }

    fn from_keyword(k: &str) -> Option<Self> {
        Some(match k.to_ascii_lowercase().as_str() {
            "c" | "countryname" => NameAttribute::Country,
            "st" | "s" | "stateorprovincename" => NameAttribute::State,
            "l" | "localityname" => NameAttribute::Locality,
            "o" | "organizationname" => NameAttribute::Organization,
            "ou" | "organizationalunitname" => NameAttribute::OrganizationalUnit,
            "cn" | "commonname" => NameAttribute::CommonName,
            "sn" | "surname" => NameAttribute::Surname,
            "gn" | "g" | "givenname" => NameAttribute::GivenName,
            "t" | "title" => NameAttribute::Title,
            "serialnumber" => NameAttribute::SerialNumber,
            "pseudonym" => NameAttribute::Pseudonym,
            "organizationidentifier" => NameAttribute::OrganizationIdentifier,
            "dc" | "domaincomponent" => NameAttribute::DomainComponent,
            other if other.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                NameAttribute::Other(ObjectIdentifier::new(other).ok()?)
            }
            _ => return None,
        })
    }

    /// RFC 5280 / X.520 upper bound on the value length, in characters.
    fn upper_bound(&self) -> usize {
        match self {
            NameAttribute::Country => 2,
            NameAttribute::State | NameAttribute::Locality | NameAttribute::Pseudonym => 128,
            NameAttribute::DomainComponent => 63,
            _ => 64,
        }
    }
}

/// A distinguished name as an ordered list of RDNs (encoding order: the first RDN is the most
/// general, usually `C`). Each RDN holds one or more attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName {
    rdns: Vec<Vec<(NameAttribute, String)>>,
}

impl DistinguishedName {
    /// Build from RDNs in encoding order, validating every value.
    pub fn from_rdns(rdns: Vec<Vec<(NameAttribute, String)>>) -> Result<Self, PkiError> {
        let dn = DistinguishedName { rdns };
        dn.validate()?;
        Ok(dn)
    }

    /// Parse `/C=FR/O=Org/CN=Name` (encoding order, as `openssl -subj` takes it) or an RFC 4514
    /// string `CN=Name, O=Org, C=FR` (most specific first). `+` joins attributes of one RDN.
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let err = |reason: &str| PkiError::Name {
            name: s.to_owned(),
            reason: reason.to_owned(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty name"));
        }
        let (parts, reverse) = if let Some(rest) = t.strip_prefix('/') {
            (split_unescaped(rest, '/'), false)
        } else {
            (split_unescaped(t, ','), true)
        };
        let mut rdns = Vec::new();
        for part in parts {
            let mut rdn = Vec::new();
            for atv in split_unescaped(&part, '+') {
                let (k, v) = atv
                    .split_once('=')
                    .ok_or_else(|| err(&format!("'{}' is not attribute=value", atv.trim())))?;
                let attr = NameAttribute::from_keyword(k.trim())
                    .ok_or_else(|| err(&format!("unknown attribute type '{}'", k.trim())))?;
                rdn.push((attr, unescape(v.trim()).map_err(|r| err(&r))?));
            }
            rdns.push(rdn);
        }
        if reverse {
            rdns.reverse();
        }
        let dn = DistinguishedName { rdns };
        dn.validate().map_err(|e| match e {
            PkiError::Name { reason, .. } => err(&reason),
            other => other,
        })?;
        Ok(dn)
    }

    fn validate(&self) -> Result<(), PkiError> {
        let err = |reason: String| PkiError::Name {
            name: self.to_string(),
            reason,
        };
        if self.rdns.is_empty() {
            return Err(err("no attributes".into()));
        }
        for rdn in &self.rdns {
            if rdn.is_empty() {
                return Err(err("empty RDN".into()));
            }
            for (i, (attr, value)) in rdn.iter().enumerate() {
                if rdn[..i].iter().any(|(a, _)| a == attr) {
                    return Err(err(format!("{} appears twice in one RDN", attr.keyword())));
                }
                if value.is_empty() {
                    return Err(err(format!("{} is empty", attr.keyword())));
                }
                let n = value.chars().count();
                if value.chars().any(|c| c.is_control()) {
                    return Err(err(format!(
                        "{} contains a control character",
                        attr.keyword()
                    )));
                }
                match attr {
                    NameAttribute::Country
                        if !(n == 2 && value.chars().all(|c| c.is_ascii_uppercase())) =>
                    {
                        return Err(err(format!(
                            "C must be two upper-case letters (ISO 3166), not '{value}'"
                        )));
                    }
                    NameAttribute::SerialNumber if !value.chars().all(is_printable) => {
                        return Err(err("serialNumber must be a PrintableString".into()));
                    }
                    NameAttribute::DomainComponent if !value.is_ascii() => {
                        return Err(err("DC must be ASCII".into()));
                    }
                    _ => {}
                }
                if n > attr.upper_bound() {
                    return Err(err(format!(
                        "{} is {n} characters long (at most {})",
                        attr.keyword(),
                        attr.upper_bound()
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn rdns(&self) -> &[Vec<(NameAttribute, String)>] {
        &self.rdns
    }

    /// First value of an attribute, anywhere in the name.
    pub fn get(&self, attr: &NameAttribute) -> Option<&str> {
        self.rdns
            .iter()
            .flatten()
            .find(|(a, _)| a == attr)
            .map(|(_, v)| v.as_str())
    }

    /// DER `RDNSequence`.
    pub fn to_der(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.to_rdn_sequence()?.to_der()?)
    }

    pub(crate) fn to_rdn_sequence(&self) -> Result<RdnSequence, PkiError> {
        let mut seq = RdnSequence::default();
        for rdn in &self.rdns {
            let mut atvs = Vec::with_capacity(rdn.len());
            for (attr, value) in rdn {
                let any = match attr {
                    NameAttribute::Country | NameAttribute::SerialNumber => {
                        Any::encode_from(&PrintableStringRef::new(value)?)?
                    }
                    NameAttribute::DomainComponent => Any::encode_from(&Ia5StringRef::new(value)?)?,
                    _ => Any::encode_from(&Utf8StringRef::new(value)?)?,
                };
                atvs.push(AttributeTypeAndValue {
                    oid: attr.oid(),
                    value: any,
                });
            }
            let set = SetOfVec::try_from(atvs)?;
            seq.push(RelativeDistinguishedName::try_from(set.into_vec())?);
        }
        Ok(seq)
    }

    /// Decode a DER `Name`. Values in string types are kept; others are shown as `#hex`.
    pub fn from_der(bytes: &[u8]) -> Result<Self, PkiError> {
        let seq = RdnSequence::from_der(bytes)?;
        Self::from_rdn_sequence(&seq)
    }

    pub(crate) fn from_rdn_sequence(seq: &RdnSequence) -> Result<Self, PkiError> {
        let mut rdns = Vec::new();
        for rdn in seq.iter() {
            let mut out = Vec::new();
            for atv in rdn.iter() {
                out.push((NameAttribute::from_oid(atv.oid), any_to_string(&atv.value)));
            }
            rdns.push(out);
        }
        Ok(DistinguishedName { rdns })
    }
}

fn is_printable(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

fn any_to_string(v: &Any) -> String {
    let bytes = v.value();
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::TeletexString
        | Tag::VisibleString => String::from_utf8_lossy(bytes).into_owned(),
        Tag::BmpString => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => format!(
            "#{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// RFC 4514 rendering (most specific RDN first).
impl std::fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rdns: Vec<String> = self
            .rdns
            .iter()
            .rev()
            .map(|rdn| {
                rdn.iter()
                    .map(|(a, v)| format!("{}={}", a.keyword(), escape(v)))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        f.write_str(&rdns.join(","))
    }
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || ",+\"\\<>;=/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                    i += 3;
                }
                (Some(&c), _) => {
                    out.push(c);
                    i += 2;
                }
                (None, _) => return Err("trailing backslash".into()),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escaped bytes are not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cps_person_name_with_multi_valued_rdn() {
        let dn = DistinguishedName::parse(
            "CN=810002813839+SN=DONNAT-GADY+GN=ISABELLE,title=Médecin,C=FR",
        )
        .unwrap();
        assert_eq!(dn.rdns().len(), 3);
        assert_eq!(
            dn.rdns()[0],
            vec![(NameAttribute::Country, "FR".to_string())]
        );
        assert_eq!(dn.rdns()[2].len(), 3);
        let der_bytes = dn.to_der().unwrap();
        let back = DistinguishedName::from_der(&der_bytes).unwrap();
        // The SET OF is DER-sorted, so compare as sets per RDN.
        assert_eq!(back.rdns().len(), 3);
        assert_eq!(back.get(&NameAttribute::Title), Some("Médecin"));
        assert_eq!(back.get(&NameAttribute::CommonName), Some("810002813839"));
        assert_eq!(back.get(&NameAttribute::Surname), Some("DONNAT-GADY"));
    }

    #[test]
    fn slash_and_rfc4514_forms_agree() {
        let a = DistinguishedName::parse(
            "/C=FR/O=ASIP-SANTE/OU=0002 187512751/CN=AC IGC-SANTE FORT PERSONNES",
        )
        .unwrap();
        let b = DistinguishedName::parse(
            "CN=AC IGC-SANTE FORT PERSONNES, OU=0002 187512751, O=ASIP-SANTE, C=FR",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(DistinguishedName::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn escapes() {
        let dn = DistinguishedName::parse("CN=Dupont\\, Jean,O=A\\2BB,C=FR").unwrap();
        assert_eq!(dn.get(&NameAttribute::CommonName), Some("Dupont, Jean"));
        assert_eq!(dn.get(&NameAttribute::Organization), Some("A+B"));
        assert_eq!(DistinguishedName::parse(&dn.to_string()).unwrap(), dn);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "CN",
            "XX=1",
            "C=France",
            "C=fr",
            "CN=",
            "CN=a+CN=b",
            "CN=a\\",
            "serialNumber=é",
            &format!("CN={}", "x".repeat(65)),
            "CN=a\u{7}b",
        ] {
            assert!(DistinguishedName::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
