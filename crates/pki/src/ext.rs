//! X.509 v3 extensions the appliance writes.

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages,
};

use crate::PkiError;

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

pub const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = oid("2.5.29.14");
pub const ID_CE_KEY_USAGE: ObjectIdentifier = oid("2.5.29.15");
pub const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = oid("2.5.29.17");
pub const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = oid("2.5.29.19");
pub const ID_CE_CRL_DISTRIBUTION_POINTS: ObjectIdentifier = oid("2.5.29.31");
pub const ID_CE_CERTIFICATE_POLICIES: ObjectIdentifier = oid("2.5.29.32");
pub const ID_CE_AUTHORITY_KEY_IDENTIFIER: ObjectIdentifier = oid("2.5.29.35");
pub const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = oid("2.5.29.37");
pub const ID_PE_AUTHORITY_INFO_ACCESS: ObjectIdentifier = oid("1.3.6.1.5.5.7.1.1");
pub const ID_AD_OCSP: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1");
pub const ID_AD_CA_ISSUERS: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.2");
pub const ID_PKIX_OCSP_NOCHECK: ObjectIdentifier = oid("1.3.6.1.5.5.7.48.1.5");
pub const ID_KP_SERVER_AUTH: ObjectIdentifier = oid("1.3.6.1.5.5.7.3.1");
pub const ID_KP_CLIENT_AUTH: ObjectIdentifier = oid("1.3.6.1.5.5.7.3.2");
pub const ID_KP_OCSP_SIGNING: ObjectIdentifier = oid("1.3.6.1.5.5.7.3.9");

fn ext(id: ObjectIdentifier, critical: bool, value: &impl Encode) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// Key usages, by name, as profiles write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    DigitalSignature,
    NonRepudiation,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

impl Usage {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "digitalSignature" => Usage::DigitalSignature,
            "nonRepudiation" | "contentCommitment" => Usage::NonRepudiation,
            "keyEncipherment" => Usage::KeyEncipherment,
            "dataEncipherment" => Usage::DataEncipherment,
            "keyAgreement" => Usage::KeyAgreement,
            "keyCertSign" => Usage::KeyCertSign,
            "cRLSign" | "crlSign" => Usage::CrlSign,
            _ => return None,
        })
    }

    fn flag(self) -> KeyUsages {
        match self {
            Usage::DigitalSignature => KeyUsages::DigitalSignature,
            Usage::NonRepudiation => KeyUsages::NonRepudiation,
            Usage::KeyEncipherment => KeyUsages::KeyEncipherment,
            Usage::DataEncipherment => KeyUsages::DataEncipherment,
            Usage::KeyAgreement => KeyUsages::KeyAgreement,
            Usage::KeyCertSign => KeyUsages::KeyCertSign,
            Usage::CrlSign => KeyUsages::CRLSign,
        }
    }
}

/// basicConstraints, always critical.
pub fn basic_constraints(ca: bool, path_len: Option<u8>) -> Result<Extension, PkiError> {
    ext(
        ID_CE_BASIC_CONSTRAINTS,
        true,
        &BasicConstraints {
            ca,
            path_len_constraint: if ca { path_len } else { None },
        },
    )
}

/// keyUsage, always critical.
pub fn key_usage(usages: &[Usage]) -> Result<Extension, PkiError> {
    if usages.is_empty() {
        return Err(PkiError::Params("keyUsage without any usage".into()));
    }
    let mut flags = flagset::FlagSet::<KeyUsages>::default();
    for u in usages {
        flags |= u.flag();
    }
    ext(ID_CE_KEY_USAGE, true, &KeyUsage(flags))
}

/// extendedKeyUsage.
pub fn extended_key_usage(
    purposes: &[ObjectIdentifier],
    critical: bool,
) -> Result<Extension, PkiError> {
    ext(
        ID_CE_EXT_KEY_USAGE,
        critical,
        &ExtendedKeyUsage(purposes.to_vec()),
    )
}

/// The key identifier of RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING
/// contents.
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    let bits = spki.subject_public_key.raw_bytes();
    Ok(
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bits)
            .as_ref()
            .to_vec(),
    )
}

pub fn subject_key_identifier(key_id: &[u8]) -> Result<Extension, PkiError> {
    ext(
        ID_CE_SUBJECT_KEY_IDENTIFIER,
        false,
        &OctetString::new(key_id)?,
    )
}

pub fn authority_key_identifier(key_id: &[u8]) -> Result<Extension, PkiError> {
    ext(
        ID_CE_AUTHORITY_KEY_IDENTIFIER,
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(key_id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

/// An object identifier in dotted form with its DER encoding. (`const-oid` cannot hold arcs
/// such as `2.999`, the example arc the default policies use, so policies use this type.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DottedOid {
    dotted: String,
    content: Vec<u8>,
}

impl DottedOid {
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let bad = |why: &str| PkiError::Params(format!("'{s}' is not an object identifier: {why}"));
        let arcs: Vec<u128> = s
            .split('.')
            .map(|a| {
                if a.is_empty() || (a.len() > 1 && a.starts_with('0')) {
                    None
                } else {
                    a.parse::<u128>().ok()
                }
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("arcs must be decimal numbers without leading zeros"))?;
        if arcs.len() < 2 {
            return Err(bad("at least two arcs"));
        }
        if arcs[0] > 2 || (arcs[0] < 2 && arcs[1] > 39) {
            return Err(bad("first arc 0..2, second arc 0..39 under 0 and 1"));
        }
        if arcs.len() > 40 {
            return Err(bad("too many arcs"));
        }
        let mut content = Vec::new();
        let first = arcs[0]
            .checked_mul(40)
            .and_then(|v| v.checked_add(arcs[1]))
            .ok_or_else(|| bad("arc too large"))?;
        for arc in std::iter::once(first).chain(arcs[2..].iter().copied()) {
            if arc > u64::MAX as u128 {
                return Err(bad("arc too large"));
            }
            let mut groups = vec![(arc & 0x7f) as u8];
            let mut v = arc >> 7;
            while v > 0 {
                groups.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            content.extend(groups.iter().rev());
        }
        Ok(DottedOid {
            dotted: s.to_owned(),
            content,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// Full DER TLV.
    pub fn to_der(&self) -> Vec<u8> {
        let mut v = vec![0x06];
        push_len(&mut v, self.content.len());
        v.extend_from_slice(&self.content);
        v
    }
}

impl std::fmt::Display for DottedOid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dotted)
    }
}

pub(crate) fn push_len(v: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        v.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        v.push(0x80 | (bytes.len() - skip) as u8);
        v.extend_from_slice(&bytes[skip..]);
    }
}

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    push_len(&mut v, content.len());
    v.extend_from_slice(content);
    v
}

/// certificatePolicies: `SEQUENCE OF PolicyInformation`, each with its identifier only.
pub fn certificate_policies(policies: &[DottedOid]) -> Result<Extension, PkiError> {
    if policies.is_empty() {
        return Err(PkiError::Params(
            "certificatePolicies without any policy".into(),
        ));
    }
    let infos: Vec<u8> = policies
        .iter()
        .flat_map(|p| tlv(0x30, &p.to_der()))
        .collect();
    Ok(Extension {
        extn_id: ID_CE_CERTIFICATE_POLICIES,
        critical: false,
        extn_value: OctetString::new(tlv(0x30, &infos))?,
    })
}

fn uri(u: &str) -> Result<GeneralName, PkiError> {
    if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("ldap://")) {
        return Err(PkiError::Params(format!(
            "'{u}' is not an http(s) or ldap URL"
        )));
    }
    Ok(GeneralName::UniformResourceIdentifier(Ia5String::new(u)?))
}

pub fn crl_distribution_points(urls: &[String]) -> Result<Extension, PkiError> {
    let names = urls.iter().map(|u| uri(u)).collect::<Result<Vec<_>, _>>()?;
    ext(
        ID_CE_CRL_DISTRIBUTION_POINTS,
        false,
        &CrlDistributionPoints(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(names)),
            reasons: None,
            crl_issuer: None,
        }]),
    )
}

pub fn authority_info_access(
    ocsp: &[String],
    ca_issuers: &[String],
) -> Result<Extension, PkiError> {
    let mut v = Vec::new();
    for u in ocsp {
        v.push(AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: uri(u)?,
        });
    }
    for u in ca_issuers {
        v.push(AccessDescription {
            access_method: ID_AD_CA_ISSUERS,
            access_location: uri(u)?,
        });
    }
    ext(
        ID_PE_AUTHORITY_INFO_ACCESS,
        false,
        &AuthorityInfoAccessSyntax(v),
    )
}

/// subjectAltName with DNS names and IP addresses (non-critical: the subject is not empty).
pub fn subject_alt_name(dns: &[String], ips: &[std::net::IpAddr]) -> Result<Extension, PkiError> {
    let mut names = Vec::new();
    for d in dns {
        if d.is_empty()
            || d.len() > 253
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*')
        {
            return Err(PkiError::Params(format!("'{d}' is not a DNS name")));
        }
        names.push(GeneralName::DnsName(Ia5String::new(d)?));
    }
    for ip in ips {
        let bytes = match ip {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        names.push(GeneralName::IpAddress(OctetString::new(bytes)?));
    }
    if names.is_empty() {
        return Err(PkiError::Params("subjectAltName without any name".into()));
    }
    ext(
        ID_CE_SUBJECT_ALT_NAME,
        false,
        &x509_cert::ext::pkix::SubjectAltName(names),
    )
}

/// id-pkix-ocsp-nocheck: the OCSP signer's own status is not checked (RFC 6960 §4.2.2.2.1).
pub fn ocsp_nocheck() -> Result<Extension, PkiError> {
    ext(ID_PKIX_OCSP_NOCHECK, false, &der::asn1::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_oids_encode_like_the_standard_says() {
        // 2.999 is the example arc (X.660): first octet group 40*2+999 = 1079 = 0x88 0x37.
        assert_eq!(
            DottedOid::parse("2.999.1").unwrap().to_der(),
            vec![0x06, 0x03, 0x88, 0x37, 0x01]
        );
        assert_eq!(
            DottedOid::parse("1.2.250.1.71").unwrap().to_der(),
            vec![0x06, 0x05, 0x2a, 0x81, 0x7a, 0x01, 0x47]
        );
        // Cross-check with const-oid where it can represent the OID.
        let c = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
        assert_eq!(
            DottedOid::parse("1.3.6.1.5.5.7.48.1.5").unwrap().to_der(),
            c.to_der().unwrap()
        );
        for bad in [
            "",
            "1",
            "3.1",
            "1.40",
            "1..2",
            "1.02",
            "a.b",
            "2.99999999999999999999999999999999999999999",
        ] {
            assert!(DottedOid::parse(bad).is_err(), "{bad}");
        }
    }
}
