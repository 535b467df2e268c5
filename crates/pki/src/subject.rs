//! Subjects of end-entity certificates, built from registry data, and subject alternative names.
//!
//! * Person (CPS card) certificates: `CN=<IdNat_PS>+SN=<surname>+GN=<given name>,
//!   title=<profession label>, C=FR` — the first RDN is multi-valued, as in IGC-Santé card
//!   certificates; no `O`/`OU`. The profession label comes from TRE_G15 ([`PROFESSIONS`]).
//! * Organisation certificates: `CN=<application or FQDN>, OU=<struct_IdNat>, O=<name>,
//!   ST=<department>, C=FR`.

use std::net::IpAddr;

use const_oid::ObjectIdentifier;
use der::Encode;
use der::asn1::{Ia5String, OctetString};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;

use crate::idnat::{IdNatError, IdNatPs, parse_structure_id, shown};
use crate::{DistinguishedName, NameAttribute, PkiError};

/// TRE_G15-ProfessionSante (OID 1.2.250.1.71.1.2.7, version 20211217): code → label written in
/// the `title` attribute.
pub const PROFESSIONS: &[(&str, &str)] = &[
    ("10", "Médecin"),
    ("21", "Pharmacien"),
    ("26", "Audioprothésiste"),
    ("28", "Opticien-Lunetier"),
    ("31", "Assistant dentaire"),
    ("32", "Physicien médical"),
    ("35", "Aide-soignant"),
    ("36", "Ambulancier"),
    ("37", "Auxiliaire de puériculture"),
    ("38", "Préparateur en pharmacie hospitalière"),
    ("39", "Préparateur en pharmacie"),
    ("40", "Chirurgien-Dentiste"),
    ("50", "Sage-Femme"),
    ("60", "Infirmier"),
    ("69", "Infirmier psychiatrique"),
    ("70", "Masseur-Kinésithérapeute"),
    ("80", "Pédicure-Podologue"),
    ("81", "Orthoprothésiste"),
    ("82", "Podo-Orthésiste"),
    ("83", "Orthopédiste-Orthésiste"),
    ("84", "Oculariste"),
    ("85", "Epithésiste"),
    ("86", "Technicien de labo médical"),
    ("91", "Orthophoniste"),
    ("92", "Orthoptiste"),
    ("93", "Psychologue"),
    ("94", "Ergothérapeute"),
    ("95", "Diététicien"),
    ("96", "Psychomotricien"),
    ("98", "Manipulateur ERM"),
];

/// The TRE_G15 label of a profession code (`"10"` → `"Médecin"`).
pub fn profession_label(code: &str) -> Option<&'static str> {
    PROFESSIONS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, l)| *l)
}

/// Errors of subject construction and subject checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    #[error(transparent)]
    IdNat(#[from] IdNatError),
    #[error("unknown profession code '{0}' (not in TRE_G15)")]
    UnknownProfession(String),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("{0}")]
    Name(#[from] PkiError),
    #[error("subject '{subject}' is not {kind} subject: {reason}")]
    Shape {
        subject: String,
        kind: &'static str,
        reason: String,
    },
    #[error("subject alternative name {0}")]
    AltName(String),
}

/// A health professional as the registry (RPPS/ADELI) describes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonIdentity {
    pub idnat_ps: String,
    pub surname: String,
    pub given_name: String,
    /// TRE_G15 code, e.g. `"10"`.
    pub profession_code: String,
}

impl PersonIdentity {
    /// The CPS subject. Surname and given name are trimmed of surrounding white space; the
    /// IdNat_PS and the profession code are taken exactly.
    pub fn subject(&self) -> Result<DistinguishedName, SubjectError> {
        let id = IdNatPs::parse(&self.idnat_ps)?;
        let label = profession_label(&self.profession_code)
            .ok_or_else(|| SubjectError::UnknownProfession(shown(&self.profession_code)))?;
        let surname = field("surname", &self.surname)?;
        let given = field("given name", &self.given_name)?;
        Ok(DistinguishedName::from_rdns(vec![
            vec![(NameAttribute::Country, "FR".into())],
            vec![(NameAttribute::Title, label.into())],
            vec![
                (NameAttribute::CommonName, id.as_str().into()),
                (NameAttribute::Surname, surname),
                (NameAttribute::GivenName, given),
            ],
        ])?)
    }
}

/// An organisation (structure) and the application or host the certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationIdentity {
    /// Department, e.g. `Seine-Maritime (76)`.
    pub state: String,
    /// Raison sociale.
    pub name: String,
    /// struct_IdNat, e.g. `318751275100020`.
    pub structure_id: String,
    /// Application name, or the FQDN for TLS server certificates.
    pub common_name: String,
}

impl OrganisationIdentity {
    pub fn subject(&self) -> Result<DistinguishedName, SubjectError> {
        parse_structure_id(&self.structure_id)?;
        Ok(DistinguishedName::from_rdns(vec![
            vec![(NameAttribute::Country, "FR".into())],
            vec![(NameAttribute::State, field("state", &self.state)?)],
            vec![(NameAttribute::Organization, field("name", &self.name)?)],
            vec![(NameAttribute::OrganizationalUnit, self.structure_id.clone())],
            vec![(
                NameAttribute::CommonName,
                field("common name", &self.common_name)?,
            )],
        ])?)
    }
}

fn field(name: &'static str, v: &str) -> Result<String, SubjectError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(SubjectError::Field {
            field: name,
            reason: "empty".into(),
        });
    }
    if t.chars().any(char::is_control) {
        return Err(SubjectError::Field {
            field: name,
            reason: format!("'{}' contains a control character", shown(t)),
        });
    }
    Ok(t.to_owned())
}

fn single<'a>(rdn: &'a [(NameAttribute, String)], attr: &NameAttribute) -> Result<&'a str, String> {
    match rdn {
        [(a, v)] if a == attr => Ok(v),
        _ => Err(format!("expected a single {} here", attr.keyword())),
    }
}

/// Check that `dn` has exactly the CPS person shape, a valid IdNat_PS and a TRE_G15 title.
pub fn check_person_subject(dn: &DistinguishedName) -> Result<(), SubjectError> {
    let shape = |reason: String| SubjectError::Shape {
        subject: dn.to_string(),
        kind: "a CPS person",
        reason,
    };
    let [c, title, first] = dn.rdns() else {
        return Err(shape(
            "expected exactly three RDNs: C, title, CN+SN+GN".into(),
        ));
    };
    if single(c, &NameAttribute::Country).map_err(&shape)? != "FR" {
        return Err(shape("C must be FR".into()));
    }
    let t = single(title, &NameAttribute::Title).map_err(&shape)?;
    if !PROFESSIONS.iter().any(|(_, l)| *l == t) {
        return Err(shape(format!(
            "title '{t}' is not a TRE_G15 profession label"
        )));
    }
    let get = |a: NameAttribute| first.iter().find(|(x, _)| *x == a).map(|(_, v)| v.as_str());
    let (Some(cn), Some(_), Some(_), 3) = (
        get(NameAttribute::CommonName),
        get(NameAttribute::Surname),
        get(NameAttribute::GivenName),
        first.len(),
    ) else {
        return Err(shape(
            "the most specific RDN must be exactly CN+SN+GN".into(),
        ));
    };
    IdNatPs::parse(cn)?;
    Ok(())
}

/// Check that `dn` has exactly the organisation shape `C=FR, ST, O, OU=<struct_IdNat>, CN`;
/// returns the CN.
pub fn check_organisation_subject(dn: &DistinguishedName) -> Result<&str, SubjectError> {
    let shape = |reason: String| SubjectError::Shape {
        subject: dn.to_string(),
        kind: "an organisation",
        reason,
    };
    let [c, st, o, ou, cn] = dn.rdns() else {
        return Err(shape("expected exactly five RDNs: C, ST, O, OU, CN".into()));
    };
    if single(c, &NameAttribute::Country).map_err(&shape)? != "FR" {
        return Err(shape("C must be FR".into()));
    }
    single(st, &NameAttribute::State).map_err(&shape)?;
    single(o, &NameAttribute::Organization).map_err(&shape)?;
    parse_structure_id(single(ou, &NameAttribute::OrganizationalUnit).map_err(&shape)?)?;
    single(cn, &NameAttribute::CommonName).map_err(&shape)
}

/// A subject alternative name, as requested (CSR) or given by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
    Email(String),
    Uri(String),
}

impl SubjectAltName {
    /// Validate and normalise: DNS names and the domain of e-mail addresses to lower case.
    pub fn normalised(&self) -> Result<SubjectAltName, SubjectError> {
        let bad = |what: &str, v: &str, why: &str| {
            SubjectError::AltName(format!("{what} '{}': {why}", shown(v)))
        };
        Ok(match self {
            SubjectAltName::Dns(d) => {
                let l = d.to_ascii_lowercase();
                check_dns_name(&l).map_err(|why| bad("dNSName", d, &why))?;
                SubjectAltName::Dns(l)
            }
            SubjectAltName::Ip(ip) => {
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(bad("iPAddress", &ip.to_string(), "not a host address"));
                }
                SubjectAltName::Ip(*ip)
            }
            SubjectAltName::Email(e) => {
                let (local, domain) = e
                    .rsplit_once('@')
                    .ok_or_else(|| bad("rfc822Name", e, "no '@'"))?;
                if local.is_empty()
                    || local.len() > 64
                    || !local
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
                    || local.starts_with('.')
                    || local.ends_with('.')
                    || local.contains("..")
                {
                    return Err(bad("rfc822Name", e, "malformed local part"));
                }
                let d = domain.to_ascii_lowercase();
                check_dns_name(&d).map_err(|why| bad("rfc822Name", e, &why))?;
                SubjectAltName::Email(format!("{local}@{d}"))
            }
            SubjectAltName::Uri(u) => {
                let ok = (u.starts_with("https://") || u.starts_with("http://"))
                    && u.len() <= 2048
                    && u.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(bad("uniformResourceIdentifier", u, "not an http(s) URL"));
                }
                SubjectAltName::Uri(u.clone())
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SubjectAltName::Dns(_) => "dns",
            SubjectAltName::Ip(_) => "ip",
            SubjectAltName::Email(_) => "email",
            SubjectAltName::Uri(_) => "uri",
        }
    }
}

impl std::fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectAltName::Dns(v) => write!(f, "DNS:{v}"),
            SubjectAltName::Ip(v) => write!(f, "IP:{v}"),
            SubjectAltName::Email(v) => write!(f, "email:{v}"),
            SubjectAltName::Uri(v) => write!(f, "URI:{v}"),
        }
    }
}

pub(crate) const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.5.29.17");

/// subjectAltName, non-critical (the subject is never empty here), names in the given order.
/// The names must already be [`SubjectAltName::normalised`].
pub fn subject_alt_name_extension(sans: &[SubjectAltName]) -> Result<Extension, PkiError> {
    if sans.is_empty() {
        return Err(PkiError::Params("subjectAltName without any name".into()));
    }
    let names = sans
        .iter()
        .map(|s| {
            Ok(match s {
                SubjectAltName::Dns(d) => GeneralName::DnsName(Ia5String::new(d)?),
                SubjectAltName::Email(e) => GeneralName::Rfc822Name(Ia5String::new(e)?),
                SubjectAltName::Uri(u) => {
                    GeneralName::UniformResourceIdentifier(Ia5String::new(u)?)
                }
                SubjectAltName::Ip(IpAddr::V4(a)) => {
                    GeneralName::IpAddress(OctetString::new(a.octets().to_vec())?)
                }
                SubjectAltName::Ip(IpAddr::V6(a)) => {
                    GeneralName::IpAddress(OctetString::new(a.octets().to_vec())?)
                }
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    Ok(Extension {
        extn_id: ID_CE_SUBJECT_ALT_NAME,
        critical: false,
        extn_value: OctetString::new(x509_cert::ext::pkix::SubjectAltName(names).to_der()?)?,
    })
}

/// A host name in preferred name syntax (RFC 1034 §3.5 as relaxed by RFC 1123): at least two
/// labels, each 1–63 letters, digits or hyphens, not starting or ending with a hyphen; at most
/// 253 characters; no wildcard; the last label not all-numeric.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("must be a fully qualified name (at least two labels)".into());
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err("labels must be 1 to 63 characters".into());
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("labels may hold only letters, digits and '-'".into());
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err("labels may not start or end with '-'".into());
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the top-level label is numeric".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isabelle() -> PersonIdentity {
        PersonIdentity {
            idnat_ps: "810002813839".into(),
            surname: "DONNAT-GADY".into(),
            given_name: "ISABELLE".into(),
            profession_code: "10".into(),
        }
    }

    #[test]
    fn person_subject_is_the_cps_form() {
        let dn = isabelle().subject().unwrap();
        assert_eq!(
            dn.to_string(),
            "CN=810002813839+SN=DONNAT-GADY+GN=ISABELLE,title=Médecin,C=FR"
        );
        check_person_subject(&dn).unwrap();
        let back = DistinguishedName::from_der(&dn.to_der().unwrap()).unwrap();
        check_person_subject(&back).unwrap();
    }

    #[test]
    fn person_errors() {
        let mut p = isabelle();
        p.profession_code = "11".into();
        assert_eq!(
            p.subject().unwrap_err().to_string(),
            "unknown profession code '11' (not in TRE_G15)"
        );
        let mut p = isabelle();
        p.idnat_ps = "810002813838".into();
        assert_eq!(
            p.subject().unwrap_err().to_string(),
            "IdNat_PS '810002813838': RPPS check digit is 9, not 8"
        );
        let mut p = isabelle();
        p.surname = "  ".into();
        assert_eq!(p.subject().unwrap_err().to_string(), "surname: empty");
        let mut p = isabelle();
        p.given_name = "A".repeat(65);
        assert!(p.subject().is_err());
    }

    #[test]
    fn every_profession_label_fits_a_title() {
        assert_eq!(PROFESSIONS.len(), 30);
        for (code, label) in PROFESSIONS {
            let p = PersonIdentity {
                profession_code: (*code).into(),
                ..isabelle()
            };
            assert_eq!(
                p.subject().unwrap().get(&NameAttribute::Title),
                Some(*label)
            );
        }
        assert_eq!(profession_label("70"), Some("Masseur-Kinésithérapeute"));
        assert_eq!(profession_label("7"), None);
    }

    #[test]
    fn shapes_are_enforced() {
        for bad in [
            "CN=810002813839,title=Médecin,C=FR",
            "CN=810002813839+SN=A+GN=B,title=Plombier,C=FR",
            "CN=810002813839+SN=A+GN=B,title=Médecin,C=BE",
            "CN=810002813838+SN=A+GN=B,title=Médecin,C=FR",
            "CN=810002813839+SN=A+GN=B+O=X,title=Médecin,C=FR",
            "CN=810002813839+SN=A+GN=B,OU=x,title=Médecin,C=FR",
        ] {
            let dn = DistinguishedName::parse(bad).unwrap();
            assert!(check_person_subject(&dn).is_err(), "{bad}");
        }
        let org = OrganisationIdentity {
            state: "Seine-Maritime (76)".into(),
            name: "CHU de Rouen".into(),
            structure_id: "10B0152872".into(),
            common_name: "dpi.chu-rouen.example".into(),
        };
        let dn = org.subject().unwrap();
        assert_eq!(
            dn.to_string(),
            "CN=dpi.chu-rouen.example,OU=10B0152872,O=CHU de Rouen,ST=Seine-Maritime (76),C=FR"
        );
        assert_eq!(
            check_organisation_subject(&dn).unwrap(),
            "dpi.chu-rouen.example"
        );
        let bad = OrganisationIdentity {
            structure_id: "9999".into(),
            ..org.clone()
        };
        assert!(bad.subject().is_err());
        for bad in [
            "CN=x,OU=10B0152872,O=A,C=FR",
            "CN=x,OU=1ABC,O=A,ST=B,C=FR",
            "CN=x+SN=y,OU=10B0152872,O=A,ST=B,C=FR",
        ] {
            let dn = DistinguishedName::parse(bad).unwrap();
            assert!(check_organisation_subject(&dn).is_err(), "{bad}");
        }
    }

    #[test]
    fn alt_names() {
        let ok = [
            (
                SubjectAltName::Dns("Node1.Example.FR".into()),
                "DNS:node1.example.fr",
            ),
            (
                SubjectAltName::Ip("192.0.2.7".parse().unwrap()),
                "IP:192.0.2.7",
            ),
            (
                SubjectAltName::Email("Jean.Dupont@Sante.Example".into()),
                "email:Jean.Dupont@sante.example",
            ),
            (
                SubjectAltName::Uri("https://a.example/x".into()),
                "URI:https://a.example/x",
            ),
        ];
        for (san, shown) in ok {
            assert_eq!(san.normalised().unwrap().to_string(), shown);
        }
        for bad in [
            SubjectAltName::Dns("*.example.fr".into()),
            SubjectAltName::Dns("localhost".into()),
            SubjectAltName::Dns("-a.example".into()),
            SubjectAltName::Dns("a..example".into()),
            SubjectAltName::Dns("1.2.3.4".into()),
            SubjectAltName::Dns(format!("{}.fr", "a".repeat(64))),
            SubjectAltName::Ip("0.0.0.0".parse().unwrap()),
            SubjectAltName::Email("no-at".into()),
            SubjectAltName::Email("a b@example.fr".into()),
            SubjectAltName::Email("a@b".into()),
            SubjectAltName::Uri("ftp://x".into()),
        ] {
            assert!(bad.normalised().is_err(), "{bad}");
        }
    }
}
