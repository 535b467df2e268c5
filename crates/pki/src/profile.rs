//! Certificate profiles as data: one TOML file per profile under `certs/`, validated when
//! loaded, and the one function that turns a profile, a subject and a public key into the
//! complete [`CertificateParams`] of a certificate.
//!
//! The file format is described in `certs/README.md`. Unknown keys are refused; every
//! inconsistency (a CA profile without keyCertSign, keyEncipherment on an EC key, an OCSP
//! no-check extension without the OCSP-signing purpose, ...) is refused at load time with the
//! file name and the problem.

use std::collections::BTreeMap;
use std::path::Path;

use const_oid::ObjectIdentifier;
use serde::Deserialize;
use x509_cert::ext::Extension;

use crate::ext::{self, DottedOid, Usage};
use crate::hierarchy::PublicationPoints;
use crate::keycheck::{KeyKind, KeyPolicy, check_public_key};
use crate::subject::{
    SubjectAltName, check_dns_name, check_organisation_subject, check_person_subject,
    subject_alt_name_extension,
};
use crate::{CertificateParams, DistinguishedName, PkiError, Serial};

/// Most subject alternative names in one certificate.
pub const MAX_SANS: usize = 100;

/// The profile files shipped with the appliance (the `certs/` directory), embedded so the
/// appliance works without the directory.
pub const BUILTIN_PROFILE_FILES: &[(&str, &str)] = &[
    ("root-ca.toml", include_str!("../../../certs/root-ca.toml")),
    (
        "ca-personnes.toml",
        include_str!("../../../certs/ca-personnes.toml"),
    ),
    (
        "ca-organisations.toml",
        include_str!("../../../certs/ca-organisations.toml"),
    ),
    (
        "ocsp-signer.toml",
        include_str!("../../../certs/ocsp-signer.toml"),
    ),
    (
        "cps-auth.toml",
        include_str!("../../../certs/cps-auth.toml"),
    ),
    (
        "cps-sign.toml",
        include_str!("../../../certs/cps-sign.toml"),
    ),
    (
        "org-tls-client.toml",
        include_str!("../../../certs/org-tls-client.toml"),
    ),
    (
        "org-tls-server.toml",
        include_str!("../../../certs/org-tls-server.toml"),
    ),
    (
        "org-cachet.toml",
        include_str!("../../../certs/org-cachet.toml"),
    ),
    (
        "node-tls.toml",
        include_str!("../../../certs/node-tls.toml"),
    ),
    (
        "audit-checkpoint.toml",
        include_str!("../../../certs/audit-checkpoint.toml"),
    ),
    ("tsa.toml", include_str!("../../../certs/tsa.toml")),
];

/// Errors of profile loading. Each names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("certificate profiles: cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("certificate profile {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("certificate profiles: no profile file (*.toml) in {0}")]
    NoProfiles(String),
}

/// What the subject of a profile's certificates looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// `CN=<IdNat_PS>+SN=…+GN=…, title=<TRE_G15 label>, C=FR` (checked).
    Person,
    /// `C=FR, ST, O, OU=<struct_IdNat>, CN` (checked).
    Organisation,
    /// Any valid name given by the operator or the ceremony (CAs, OCSP signers).
    Fixed,
}

/// Whether a kind of subject alternative name may or must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanRule {
    #[default]
    Forbidden,
    Optional,
    Required,
}

/// Subject-alternative-name rules of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanRules {
    #[serde(default)]
    pub dns: SanRule,
    #[serde(default)]
    pub ip: SanRule,
    #[serde(default)]
    pub email: SanRule,
    #[serde(default)]
    pub uri: SanRule,
    /// The subject's CN must be a host name (or an IP address) and is always written in the
    /// SAN (added first when the request does not carry it): TLS clients match the SAN only.
    #[serde(default)]
    pub cn_in_san: bool,
}

impl SanRules {
    fn rule(&self, san: &SubjectAltName) -> SanRule {
        match san {
            SubjectAltName::Dns(_) => self.dns,
            SubjectAltName::Ip(_) => self.ip,
            SubjectAltName::Email(_) => self.email,
            SubjectAltName::Uri(_) => self.uri,
        }
    }
}

/// Which of the issuer's publication points go into the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publication {
    /// authorityInfoAccess id-ad-ocsp.
    pub ocsp: bool,
    /// authorityInfoAccess id-ad-caIssuers.
    pub ca_issuers: bool,
    /// cRLDistributionPoints.
    pub crl: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicConstraintsFile {
    ca: bool,
    path_len: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyUsageFile {
    usages: Vec<String>,
    #[serde(default)]
    rsa_only: Vec<String>,
    critical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendedKeyUsageFile {
    purposes: Vec<String>,
    critical: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    description: String,
    issuer: OneOrMany,
    subject: SubjectKind,
    validity_days: u32,
    key_algorithms: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
    basic_constraints: Option<BasicConstraintsFile>,
    key_usage: KeyUsageFile,
    extended_key_usage: Option<ExtendedKeyUsageFile>,
    #[serde(default)]
    ocsp_nocheck: bool,
    publication: Publication,
    #[serde(default)]
    subject_alt_name: SanRules,
}

/// A validated certificate profile. Only [`Profile::from_toml`], [`load_profiles`] and
/// [`builtin_profiles`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Ids of the CAs that issue under this profile (`personnes`, `organisations`, `root`), or
    /// `["self"]` for the self-signed root.
    pub issuers: Vec<String>,
    pub subject: SubjectKind,
    pub validity_days: u32,
    pub key_algorithms: Vec<KeyKind>,
    pub policies: Vec<DottedOid>,
    /// `Some((ca, path_len))` when basicConstraints is written.
    pub basic_constraints: Option<(bool, Option<u8>)>,
    pub key_usages: Vec<Usage>,
    /// Added for RSA keys only (keyEncipherment of TLS servers).
    pub key_usages_rsa_only: Vec<Usage>,
    pub key_usage_critical: bool,
    /// `Some((purposes, critical))` when extendedKeyUsage is written.
    pub extended_key_usage: Option<(Vec<ObjectIdentifier>, bool)>,
    pub ocsp_nocheck: bool,
    pub publication: Publication,
    pub san: SanRules,
}

const EKU_NAMES: &[(&str, &str)] = &[
    ("serverAuth", "1.3.6.1.5.5.7.3.1"),
    ("clientAuth", "1.3.6.1.5.5.7.3.2"),
    ("codeSigning", "1.3.6.1.5.5.7.3.3"),
    ("emailProtection", "1.3.6.1.5.5.7.3.4"),
    ("timeStamping", "1.3.6.1.5.5.7.3.8"),
    ("OCSPSigning", "1.3.6.1.5.5.7.3.9"),
    ("documentSigning", "1.3.6.1.5.5.7.3.36"),
];

fn usage_name(u: Usage) -> &'static str {
    match u {
        Usage::DigitalSignature => "digitalSignature",
        Usage::NonRepudiation => "nonRepudiation",
        Usage::KeyEncipherment => "keyEncipherment",
        Usage::DataEncipherment => "dataEncipherment",
        Usage::KeyAgreement => "keyAgreement",
        Usage::KeyCertSign => "keyCertSign",
        Usage::CrlSign => "cRLSign",
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn duplicates<T: PartialEq + std::fmt::Debug>(v: &[T]) -> Option<&T> {
    v.iter()
        .enumerate()
        .find(|(i, x)| v[..*i].contains(x))
        .map(|(_, x)| x)
}

impl Profile {
    /// Parse and validate one profile file. `path` names the file in messages; when it has a
    /// file stem, the profile's `name` must equal it.
    pub fn from_toml(path: &str, text: &str) -> Result<Profile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let f: ProfileFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message().trim()))
        })?;
        Profile::validate(f, path).map_err(invalid)
    }

    fn validate(f: ProfileFile, path: &str) -> Result<Profile, String> {
        if !is_id(&f.name) {
            return Err(format!(
                "name '{}' must be 1 to 64 characters of a-z, 0-9 and '-'",
                f.name
            ));
        }
        let stem = Path::new(path).file_stem().and_then(|s| s.to_str());
        if let Some(stem) = stem.filter(|s| *s != f.name) {
            return Err(format!(
                "name '{}' differs from the file name '{stem}'",
                f.name
            ));
        }
        let issuers = match f.issuer {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if issuers.is_empty() {
            return Err("issuer: at least one CA id".into());
        }
        if let Some(bad) = issuers.iter().find(|i| !is_id(i)) {
            return Err(format!(
                "issuer '{bad}' must be a CA id (a-z, 0-9, '-'), e.g. personnes"
            ));
        }
        if let Some(d) = duplicates(&issuers) {
            return Err(format!("issuer '{d}' listed twice"));
        }
        let self_signed = issuers.iter().any(|i| i == "self");
        if self_signed && issuers.len() > 1 {
            return Err("issuer 'self' (self-signed root) cannot be combined with others".into());
        }
        if !(1..=10_950).contains(&f.validity_days) {
            return Err(format!(
                "validity_days {} must be 1 to 10950",
                f.validity_days
            ));
        }

        if f.key_algorithms.is_empty() {
            return Err("key_algorithms: at least one".into());
        }
        let key_algorithms = f
            .key_algorithms
            .iter()
            .map(|a| {
                KeyKind::from_name(a).ok_or_else(|| {
                    format!(
                        "key_algorithms: unknown '{a}' (p256, p384, rsa2048, rsa3072, rsa4096, \
                         or rsa<bits> up to rsa8192)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(d) = duplicates(&key_algorithms) {
            return Err(format!("key_algorithms: '{d}' listed twice"));
        }
        let any_rsa = key_algorithms.iter().any(KeyKind::is_rsa);
        let any_ec = key_algorithms.iter().any(|k| !k.is_rsa());

        let policies = f
            .policies
            .iter()
            .map(|p| {
                DottedOid::parse(p).map_err(|e| match e {
                    PkiError::Params(m) => format!("policies: {m}"),
                    other => format!("policies: {other}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(d) = duplicates(&policies) {
            return Err(format!("policies: '{d}' listed twice"));
        }

        let basic_constraints = f.basic_constraints.map(|b| (b.ca, b.path_len));
        let is_ca = matches!(basic_constraints, Some((true, _)));
        if let Some((false, Some(_))) = basic_constraints {
            return Err("basic_constraints: path_len is only for ca = true".into());
        }
        if policies.iter().any(|p| p.as_str() == "2.5.29.32.0") && !is_ca {
            return Err("policies: anyPolicy (2.5.29.32.0) is only for CA profiles".into());
        }

        let parse_usages = |names: &[String], field: &str| {
            names
                .iter()
                .map(|n| {
                    Usage::from_name(n).ok_or_else(|| {
                        format!(
                            "{field}: unknown key usage '{n}' (digitalSignature, \
                             nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement, \
                             keyCertSign, cRLSign)"
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let key_usages = parse_usages(&f.key_usage.usages, "key_usage.usages")?;
        let rsa_only = parse_usages(&f.key_usage.rsa_only, "key_usage.rsa_only")?;
        if key_usages.is_empty() {
            return Err("key_usage.usages: at least one".into());
        }
        let all: Vec<Usage> = key_usages.iter().chain(&rsa_only).copied().collect();
        if let Some(d) = duplicates(&all) {
            return Err(format!("key_usage: '{}' listed twice", usage_name(*d)));
        }
        if !rsa_only.is_empty() && !any_rsa {
            return Err("key_usage.rsa_only is set but the profile allows no RSA key".into());
        }
        for u in &key_usages {
            if matches!(u, Usage::KeyEncipherment | Usage::DataEncipherment) && any_ec {
                return Err(format!(
                    "key_usage.usages: {} does not apply to EC keys, which the profile allows: \
                     list it under rsa_only",
                    usage_name(*u)
                ));
            }
            if *u == Usage::KeyAgreement && any_rsa {
                return Err(
                    "key_usage.usages: keyAgreement does not apply to RSA keys, which the \
                     profile allows"
                        .into(),
                );
            }
        }
        let signs_certs = all.contains(&Usage::KeyCertSign);
        if is_ca != signs_certs {
            return Err(if is_ca {
                "a CA profile (basic_constraints.ca = true) needs keyCertSign".into()
            } else {
                "keyCertSign needs basic_constraints.ca = true".into()
            });
        }
        if all.contains(&Usage::CrlSign) && !is_ca {
            return Err("cRLSign is only for CA profiles".into());
        }

        let extended_key_usage = match f.extended_key_usage {
            None => None,
            Some(e) => {
                if e.purposes.is_empty() {
                    return Err("extended_key_usage.purposes: at least one (or leave the \
                                section out)"
                        .into());
                }
                let purposes = e
                    .purposes
                    .iter()
                    .map(|p| {
                        let dotted = EKU_NAMES
                            .iter()
                            .find(|(n, _)| n == p)
                            .map_or(p.as_str(), |(_, o)| *o);
                        if dotted == "2.5.29.37.0" || p == "anyExtendedKeyUsage" {
                            return Err("extended_key_usage: anyExtendedKeyUsage is refused".into());
                        }
                        ObjectIdentifier::new(dotted).map_err(|_| {
                            format!(
                                "extended_key_usage: unknown purpose '{p}' (serverAuth, \
                                 clientAuth, codeSigning, emailProtection, timeStamping, \
                                 OCSPSigning, documentSigning or a dotted OID)"
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                if let Some(d) = duplicates(&purposes) {
                    return Err(format!("extended_key_usage: '{d}' listed twice"));
                }
                Some((purposes, e.critical))
            }
        };
        let ocsp_signing = ext::ID_KP_OCSP_SIGNING;
        if f.ocsp_nocheck
            && !extended_key_usage
                .as_ref()
                .is_some_and(|(p, _)| p.contains(&ocsp_signing))
        {
            return Err("ocsp_nocheck needs the OCSPSigning extended key usage".into());
        }

        if is_ca && f.subject != SubjectKind::Fixed {
            return Err("a CA profile needs subject = \"fixed\"".into());
        }
        if is_ca && issuers.iter().any(|i| i != "root" && i != "self") {
            return Err("a CA profile is issued by 'root' or is 'self'-signed".into());
        }
        if self_signed && !is_ca {
            return Err("a self-signed profile must be a CA (basic_constraints.ca = true)".into());
        }
        if self_signed && (f.publication.ocsp || f.publication.ca_issuers || f.publication.crl) {
            return Err(
                "a self-signed root has no issuer to point to: publication must be all false"
                    .into(),
            );
        }
        let san = f.subject_alt_name;
        if san.cn_in_san {
            if f.subject == SubjectKind::Person {
                return Err("subject_alt_name.cn_in_san: a person's CN is not a host name".into());
            }
            if san.dns == SanRule::Forbidden && san.ip == SanRule::Forbidden {
                return Err("subject_alt_name.cn_in_san needs dns or ip allowed".into());
            }
        }

        Ok(Profile {
            name: f.name,
            description: f.description,
            issuers,
            subject: f.subject,
            validity_days: f.validity_days,
            key_algorithms,
            policies,
            basic_constraints,
            key_usages,
            key_usages_rsa_only: rsa_only,
            key_usage_critical: f.key_usage.critical,
            extended_key_usage,
            ocsp_nocheck: f.ocsp_nocheck,
            publication: f.publication,
            san,
        })
    }

    pub fn is_self_signed(&self) -> bool {
        self.issuers.len() == 1 && self.issuers[0] == "self"
    }

    pub fn is_ca(&self) -> bool {
        matches!(self.basic_constraints, Some((true, _)))
    }

    pub fn allows_key(&self, kind: KeyKind) -> bool {
        self.key_algorithms.contains(&kind)
    }

    /// The key usages written for a key of `kind`.
    pub fn key_usages_for(&self, kind: KeyKind) -> Vec<Usage> {
        let mut v = self.key_usages.clone();
        if kind.is_rsa() {
            v.extend_from_slice(&self.key_usages_rsa_only);
        }
        v
    }
}

/// The loaded profiles, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The profiles a CA may issue under.
    pub fn for_issuer<'a>(&'a self, ca_id: &'a str) -> impl Iterator<Item = &'a Profile> + 'a {
        self.profiles
            .values()
            .filter(move |p| p.issuers.iter().any(|i| i == ca_id))
    }

    fn from_files<'a>(
        files: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<ProfileSet, ProfileError> {
        let mut profiles = BTreeMap::new();
        for (path, text) in files {
            let p = Profile::from_toml(&path, text)?;
            if profiles.contains_key(&p.name) {
                return Err(ProfileError::Invalid {
                    path,
                    reason: format!("a second profile named '{}'", p.name),
                });
            }
            profiles.insert(p.name.clone(), p);
        }
        Ok(ProfileSet { profiles })
    }
}

/// Load every `*.toml` file of `dir` (other files and sub-directories are ignored). Any bad
/// file fails the whole load; a directory without profiles is an error.
pub fn load_profiles(dir: &Path) -> Result<ProfileSet, ProfileError> {
    let io = |path: &Path, e: std::io::Error| ProfileError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(ProfileError::NoProfiles(dir.display().to_string()));
    }
    let mut texts = Vec::new();
    for path in &paths {
        let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
        if meta.len() > 64 * 1024 {
            return Err(ProfileError::Invalid {
                path: path.display().to_string(),
                reason: format!("{} bytes (at most 65536)", meta.len()),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| ProfileError::Invalid {
            path: path.display().to_string(),
            reason: "not UTF-8".into(),
        })?;
        texts.push((path.display().to_string(), text));
    }
    ProfileSet::from_files(texts.iter().map(|(p, t)| (p.clone(), t.as_str())))
}

/// The shipped profiles ([`BUILTIN_PROFILE_FILES`]).
pub fn builtin_profiles() -> ProfileSet {
    // The embedded files are checked by this crate's tests; a failure here is a build defect.
    ProfileSet::from_files(
        BUILTIN_PROFILE_FILES
            .iter()
            .map(|(p, t)| (format!("certs/{p}"), *t)),
    )
    .expect("the embedded certs/*.toml profiles are valid")
}

/// The issuing CA as a profile needs it.
#[derive(Debug, Clone, Default)]
pub struct IssuerInfo {
    /// The CA's id (`personnes`, `organisations`, `root`); must be one of the profile's
    /// issuers. Ignored for a self-signed profile.
    pub ca_id: String,
    /// The CA's subject key identifier (→ authorityKeyIdentifier).
    pub key_id: Vec<u8>,
    /// The CA certificate's notAfter: no certificate outlives its issuer.
    pub not_after: Option<i64>,
    /// The CA's CRL URL, certificate URL and OCSP URL.
    pub points: PublicationPoints,
}

fn params_err(profile: &Profile, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Params(format!("profile '{}': {reason}", profile.name))
}

/// Everything that goes into a certificate of `profile`: checks the subject against the
/// profile's subject kind, the key against the key policy and the profile's algorithms, the
/// SANs against its rules; sets the validity (`now` to `now + validity_days`, cut at the
/// issuer's notAfter) and writes the extensions in this order: basicConstraints, keyUsage,
/// extendedKeyUsage, OCSP no-check, SKI, AKI, certificatePolicies, cRLDistributionPoints,
/// authorityInfoAccess, subjectAltName.
pub fn end_entity_params(
    profile: &Profile,
    subject: &DistinguishedName,
    sans: &[SubjectAltName],
    spki_der: &[u8],
    serial: Serial,
    now: i64,
    issuer: &IssuerInfo,
) -> Result<CertificateParams, PkiError> {
    let err = |r: String| params_err(profile, r);
    let self_signed = profile.is_self_signed();
    if !self_signed && !profile.issuers.contains(&issuer.ca_id) {
        return Err(err(format!(
            "certificates of this profile are issued by {}, not by '{}'",
            profile.issuers.join(" or "),
            issuer.ca_id
        )));
    }
    let key = check_public_key(spki_der, &KeyPolicy::default())
        .map_err(|e| err(format!("public key refused: {e}")))?;
    if !profile.allows_key(key.kind) {
        return Err(err(format!(
            "{} keys are not allowed (allowed: {})",
            key.kind,
            profile
                .key_algorithms
                .iter()
                .map(KeyKind::name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    let cn = match profile.subject {
        SubjectKind::Person => {
            check_person_subject(subject).map_err(|e| err(e.to_string()))?;
            None
        }
        SubjectKind::Organisation => Some(
            check_organisation_subject(subject)
                .map_err(|e| err(e.to_string()))?
                .to_owned(),
        ),
        SubjectKind::Fixed => {
            if subject.rdns().is_empty() {
                return Err(err("empty subject".into()));
            }
            subject
                .get(&crate::NameAttribute::CommonName)
                .map(str::to_owned)
        }
    };

    // Subject alternative names.
    let mut names: Vec<SubjectAltName> = Vec::new();
    if profile.san.cn_in_san {
        let cn = cn.ok_or_else(|| err("the subject has no CN to put in the SAN".into()))?;
        let from_cn = match cn.parse::<std::net::IpAddr>() {
            Ok(ip) => SubjectAltName::Ip(ip),
            Err(_) => {
                check_dns_name(&cn.to_ascii_lowercase()).map_err(|why| {
                    err(format!(
                        "CN '{cn}' must be a host name for this profile: {why}"
                    ))
                })?;
                SubjectAltName::Dns(cn)
            }
        };
        let from_cn = from_cn.normalised().map_err(|e| err(e.to_string()))?;
        if profile.san.rule(&from_cn) == SanRule::Forbidden {
            return Err(err(format!(
                "the CN gives {from_cn}, which the profile forbids"
            )));
        }
        names.push(from_cn);
    }
    for san in sans {
        let n = san.normalised().map_err(|e| err(e.to_string()))?;
        if profile.san.rule(&n) == SanRule::Forbidden {
            return Err(err(format!(
                "subject alternative names of type {} are not allowed ({n})",
                n.kind()
            )));
        }
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.len() > MAX_SANS {
        return Err(err(format!(
            "{} subject alternative names (at most {MAX_SANS})",
            names.len()
        )));
    }
    for (kind, rule) in [
        ("dns", profile.san.dns),
        ("ip", profile.san.ip),
        ("email", profile.san.email),
        ("uri", profile.san.uri),
    ] {
        if rule == SanRule::Required && !names.iter().any(|n| n.kind() == kind) {
            return Err(err(format!(
                "a subject alternative name of type {kind} is required"
            )));
        }
    }

    // Validity.
    let not_before = now;
    let mut not_after = now
        .checked_add(i64::from(profile.validity_days) * 86_400)
        .ok_or_else(|| err("validity overflows".into()))?;
    if let Some(limit) = issuer.not_after.filter(|_| !self_signed) {
        not_after = not_after.min(limit);
    }
    if not_after <= not_before {
        return Err(err(
            "the issuing CA certificate has expired: nothing can be issued under it".into(),
        ));
    }

    // Extensions.
    let mut exts: Vec<Extension> = Vec::new();
    if let Some((ca, path_len)) = profile.basic_constraints {
        exts.push(ext::basic_constraints(ca, path_len)?);
    }
    let mut ku = ext::key_usage(&profile.key_usages_for(key.kind))?;
    ku.critical = profile.key_usage_critical;
    exts.push(ku);
    if let Some((purposes, critical)) = &profile.extended_key_usage {
        exts.push(ext::extended_key_usage(purposes, *critical)?);
    }
    if profile.ocsp_nocheck {
        exts.push(ext::ocsp_nocheck()?);
    }
    exts.push(ext::subject_key_identifier(&ext::key_identifier(
        spki_der,
    )?)?);
    if !self_signed {
        if issuer.key_id.is_empty() {
            return Err(err("the issuer's key identifier is missing".into()));
        }
        exts.push(ext::authority_key_identifier(&issuer.key_id)?);
    }
    if !profile.policies.is_empty() {
        exts.push(ext::certificate_policies(&profile.policies)?);
    }
    let pts = &issuer.points;
    let need = |on: bool, list: &[String], what: &str| -> Result<Vec<String>, PkiError> {
        if !on {
            return Ok(vec![]);
        }
        if list.is_empty() {
            return Err(err(format!(
                "the profile writes the issuer's {what} URL but CA '{}' has none",
                issuer.ca_id
            )));
        }
        Ok(list.to_vec())
    };
    let crl = need(profile.publication.crl, &pts.crl, "CRL")?;
    let ocsp = need(profile.publication.ocsp, &pts.ocsp, "OCSP")?;
    let ca_issuers = need(profile.publication.ca_issuers, &pts.ca_issuers, "caIssuers")?;
    if !crl.is_empty() {
        exts.push(ext::crl_distribution_points(&crl)?);
    }
    if !ocsp.is_empty() || !ca_issuers.is_empty() {
        exts.push(ext::authority_info_access(&ocsp, &ca_issuers)?);
    }
    if !names.is_empty() {
        exts.push(subject_alt_name_extension(&names)?);
    }

    Ok(CertificateParams {
        serial,
        subject: subject.clone(),
        subject_public_key: spki_der.to_vec(),
        not_before,
        not_after,
        extensions: exts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
description = "test"
issuer = "personnes"
subject = "person"
validity_days = 1095
key_algorithms = ["p256", "rsa2048"]
policies = ["1.3.6.1.4.1.32473.1.1.1"]
[key_usage]
usages = ["digitalSignature"]
critical = true
[extended_key_usage]
purposes = ["clientAuth"]
critical = false
[publication]
ocsp = true
ca_issuers = true
crl = true
"#;

    fn with(replace: &str, by: &str) -> Result<Profile, ProfileError> {
        assert!(GOOD.contains(replace), "{replace}");
        Profile::from_toml("certs/t.toml", &GOOD.replace(replace, by))
    }

    fn reason(r: Result<Profile, ProfileError>) -> String {
        match r {
            Err(ProfileError::Invalid { path, reason }) => {
                assert_eq!(path, "certs/t.toml");
                reason
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builtin_profiles_are_valid_and_match_the_directory() {
        let b = builtin_profiles();
        assert_eq!(b.len(), BUILTIN_PROFILE_FILES.len());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../certs");
        assert_eq!(load_profiles(&dir).unwrap(), b);
        for name in [
            "root-ca",
            "ca-personnes",
            "ca-organisations",
            "ocsp-signer",
            "cps-auth",
            "cps-sign",
            "org-tls-client",
            "org-tls-server",
            "org-cachet",
            "node-tls",
            "audit-checkpoint",
            "tsa",
        ] {
            assert!(b.get(name).is_some(), "{name}");
        }
        assert_eq!(
            b.for_issuer("personnes")
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["cps-auth", "cps-sign", "ocsp-signer"]
        );
    }

    #[test]
    fn good_profile_parses() {
        let p = Profile::from_toml("certs/t.toml", GOOD).unwrap();
        assert_eq!(p.key_usages, vec![Usage::DigitalSignature]);
        assert!(!p.is_ca());
    }

    #[test]
    fn bad_profiles_name_the_file_and_the_problem() {
        assert_eq!(
            reason(with("critical = true", "critical = true\ncrtical = false")),
            "line 12, column 1: unknown field `crtical`, expected one of `usages`, `rsa_only`, `critical`"
        );
        assert!(
            reason(with("name = \"t\"", "name = \"t\"\nfoo = 1")).contains("unknown field `foo`")
        );
        assert_eq!(
            reason(with("name = \"t\"", "name = \"u\"")),
            "name 'u' differs from the file name 't'"
        );
        assert!(
            reason(with("\"p256\", \"rsa2048\"", "\"p256\", \"rsa1024\""))
                .contains("unknown 'rsa1024'")
        );
        assert!(
            reason(with("\"p256\", \"rsa2048\"", "\"p256\", \"p256\"")).contains("listed twice")
        );
        assert!(reason(with("1.3.6.1.4.1.32473.1.1.1", "1.3.x")).starts_with("policies: '1.3.x'"));
        assert!(
            reason(with(
                "\"digitalSignature\"",
                "\"digitalSignature\", \"keyEncipherment\""
            ))
            .contains("list it under rsa_only")
        );
        assert!(
            reason(with("\"digitalSignature\"", "\"digitalSignatur\""))
                .contains("unknown key usage 'digitalSignatur'")
        );
        assert_eq!(
            reason(with("\"digitalSignature\"", "\"keyCertSign\"")),
            "keyCertSign needs basic_constraints.ca = true"
        );
        assert!(reason(with("\"clientAuth\"", "\"anyExtendedKeyUsage\"")).contains("refused"));
        assert!(
            reason(with("\"clientAuth\"", "\"clientauth\""))
                .contains("unknown purpose 'clientauth'")
        );
        assert_eq!(
            reason(with("name = \"t\"", "name = \"t\"\nocsp_nocheck = true")),
            "ocsp_nocheck needs the OCSPSigning extended key usage"
        );
        assert!(
            reason(with("validity_days = 1095", "validity_days = 0")).contains("validity_days 0")
        );
        assert!(
            reason(with("subject = \"person\"", "subject = \"robot\""))
                .contains("unknown variant `robot`")
        );
        assert!(reason(with("crl = true\n", "")).contains("missing field `crl`"));
        assert!(
            reason(with("issuer = \"personnes\"", "issuer = \"Personnes\""))
                .contains("must be a CA id")
        );
        assert!(
            reason(with(
                "issuer = \"personnes\"",
                "issuer = [\"self\", \"root\"]"
            ))
            .contains("cannot be combined")
        );
        assert!(
            reason(with(
                "[publication]",
                "[subject_alt_name]\ncn_in_san = true\ndns = \"optional\"\n[publication]"
            ))
            .contains("not a host name")
        );
        assert!(
            reason(with(
                "[key_usage]",
                "[basic_constraints]\nca = true\n[key_usage]"
            ))
            .contains("needs keyCertSign")
        );
        assert!(
            reason(with(
                "[key_usage]",
                "[basic_constraints]\nca = false\npath_len = 0\n[key_usage]"
            ))
            .contains("path_len")
        );
        assert!(
            reason(with(
                "[publication]",
                "[subject_alt_name]\ndns = \"sometimes\"\n[publication]"
            ))
            .contains("unknown variant `sometimes`")
        );
        assert!(reason(Profile::from_toml("certs/t.toml", "name = ")).starts_with("line 1"));
    }

    #[test]
    fn directory_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_profiles(d.path()),
            Err(ProfileError::NoProfiles(_))
        ));
        assert!(matches!(
            load_profiles(&d.path().join("missing")),
            Err(ProfileError::Io { .. })
        ));
        std::fs::write(d.path().join("README.md"), "ignored").unwrap();
        std::fs::write(d.path().join("t.toml"), GOOD).unwrap();
        assert_eq!(load_profiles(d.path()).unwrap().len(), 1);
        std::fs::write(
            d.path().join("u.toml"),
            GOOD.replace("crl = true", "crl = 1"),
        )
        .unwrap();
        let e = load_profiles(d.path()).unwrap_err().to_string();
        assert!(e.contains("u.toml") && e.contains("invalid type"), "{e}");
        std::fs::write(d.path().join("u.toml"), [0xffu8, 0xfe]).unwrap();
        let e = load_profiles(d.path()).unwrap_err().to_string();
        assert!(e.contains("u.toml: not UTF-8"), "{e}");
    }
}
