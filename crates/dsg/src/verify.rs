//! Strict verification of an IHE DSG XAdES signature.
//!
//! The order is fixed: limits → parse (one parser, no DTD) → shape (the root is the one
//! `ds:Signature`, IDs unique) → `SignedInfo` (allowed algorithms and transforms; every reference
//! resolved by ID and bound to *this* signature's `SignedProperties`, manifest, enveloped object
//! or `KeyInfo`, nothing else) → reference digests → signature value with the `KeyInfo`
//! certificate → `SigningCertificateV2` names that certificate → policy, commitment type,
//! signing time → the time-stamp covers this `SignatureValue` (its time is the signing time
//! from then on) → path and revocation at that time → manifest references against the
//! supplied documents.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cps_xua::XmlSignatureAlgorithm;
use cps_xua::c14n::canonicalize_11;
use cps_xua::parse::{Limits, ParseRefusal, parse_limited};
use roxmltree::{Document, Node};

use crate::cert;
use crate::ns;
use crate::purpose::{Policy, Purpose};
use crate::sign::DocumentDigest;
use crate::traits::{
    PathCheck, RevocationDecision, RevocationRefusal, TimestampCheck, TimestampRefusal,
};

/// What the verifier is given besides the signature.
pub struct VerifyContext<'a> {
    /// Size, depth and node limits of the input.
    pub limits: Limits,
    /// Checks the signature time-stamp.
    pub timestamps: &'a dyn TimestampCheck,
    /// Validates the signer's path at the signing time.
    pub paths: &'a dyn PathCheck,
    /// Decides revocation at the signing time.
    pub revocation: &'a dyn RevocationDecision,
    /// How much later than the time-stamp the claimed `SigningTime` may be (clock skew, s).
    pub max_skew_secs: i64,
}

impl VerifyContext<'_> {
    /// The default limits: 16 MiB (enveloped documents are inside), depth 64, 200 000 nodes.
    pub const DEFAULT_LIMITS: Limits = Limits {
        max_bytes: 16 << 20,
        max_depth: 64,
        max_nodes: 200_000,
    };
}

/// A document supplied to check a detached signature's manifest.
#[derive(Debug, Clone, Copy)]
pub struct SuppliedDocument<'a> {
    /// Its `uniqueId` (the manifest reference URI).
    pub unique_id: &'a str,
    /// Its content or SHA-256 digest.
    pub content: DocumentDigest<'a>,
}

/// The outcome for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentOutcome {
    /// Referenced by the manifest with this digest.
    Verified,
    /// Referenced by the manifest, not supplied.
    Missing,
    /// Supplied, but its digest is not the manifest's.
    DigestMismatch,
    /// Supplied, but the manifest does not reference it.
    NotInManifest,
}

/// One document's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentResult {
    /// The unique ID.
    pub unique_id: String,
    /// What was found.
    pub outcome: DocumentOutcome,
}

/// A verified signature.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signer certificate's subject.
    pub signer_subject: String,
    /// The signer certificate (DER).
    pub signer_certificate: Vec<u8>,
    /// The time-stamp's time (Unix seconds): the signing time used for path and revocation.
    pub signing_time: i64,
    /// The signer's claimed `SigningTime` (Unix seconds).
    pub claimed_signing_time: i64,
    /// The commitment type.
    pub purpose: Purpose,
    /// The policy (detached or enveloping).
    pub policy: Policy,
    /// The SubmissionSet unique ID of a detached signature over a submission set.
    pub submission_set: Option<String>,
    /// Per-document results (detached; all `Verified` here).
    pub documents: Vec<DocumentResult>,
    /// The signed document of an enveloping signature.
    pub enveloped_document: Option<Vec<u8>>,
}

/// Why a signature was refused; [`Refusal::code`] is the stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Larger than the limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Nested deeper than the limit.
    #[error("too deep: {0}")]
    TooDeep(String),
    /// More nodes than the limit.
    #[error("too many nodes: {0}")]
    TooManyNodes(String),
    /// A DTD or entity declaration.
    #[error("document type declarations are not accepted")]
    DtdForbidden,
    /// Not well-formed UTF-8 XML.
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    /// The root element is not `ds:Signature`.
    #[error("the document is not a ds:Signature")]
    NotASignature,
    /// More than one `ds:Signature`.
    #[error("more than one ds:Signature")]
    MultipleSignatures,
    /// An ID value used twice.
    #[error("duplicate ID '{0}'")]
    DuplicateId(String),
    /// An element missing, extra, or out of place.
    #[error("structure: {0}")]
    Structure(String),
    /// An algorithm or transform that is not accepted.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A `SignedInfo` reference to something else than this signature's parts.
    #[error("unexpected reference: {0}")]
    UnexpectedReference(String),
    /// The `SignedProperties` reference does not name this signature's `SignedProperties`.
    #[error("signed properties not bound: {0}")]
    SignedPropertiesNotBound(String),
    /// The manifest reference does not name this signature's manifest.
    #[error("manifest not bound: {0}")]
    ManifestNotBound(String),
    /// The `SignedProperties` do not have the signed digest.
    #[error("the signed properties were changed")]
    SignedPropertiesDigestMismatch,
    /// The manifest does not have the signed digest.
    #[error("the manifest was changed")]
    ManifestDigestMismatch,
    /// The enveloped document (or `KeyInfo`) does not have the signed digest.
    #[error("a signed object was changed")]
    ObjectDigestMismatch,
    /// No certificate to verify with, or an unreadable one.
    #[error("signer certificate: {0}")]
    SignerCertificate(String),
    /// The signature value does not verify.
    #[error("the signature value does not verify")]
    BadSignatureValue,
    /// `SigningCertificateV2` does not name the certificate whose key signed.
    #[error("SigningCertificateV2 does not name the signing certificate")]
    SigningCertificateMismatch,
    /// No or an unknown signature policy.
    #[error("signature policy: {0}")]
    UnknownPolicy(String),
    /// The policy does not match the signature's form.
    #[error("policy {0} does not match the signature's form")]
    PolicyMismatch(String),
    /// No `CommitmentTypeIndication`.
    #[error("no commitment type")]
    MissingCommitment,
    /// A commitment type outside ASTM E1762.
    #[error("unknown commitment type '{0}'")]
    UnknownCommitment(String),
    /// No or an unreadable `SigningTime`.
    #[error("signing time: {0}")]
    BadSigningTime(String),
    /// The claimed signing time is later than the time-stamp.
    #[error("the claimed signing time is later than the time-stamp")]
    SigningTimeAfterTimestamp,
    /// No `SignatureTimeStamp`.
    #[error("no signature time-stamp")]
    MissingTimestamp,
    /// The time-stamp is over something else.
    #[error("the time-stamp does not cover this signature value")]
    TimestampNotCovering,
    /// The time-stamp token is invalid.
    #[error("invalid time-stamp: {0}")]
    TimestampInvalid(String),
    /// The time-stamping authority is not trusted.
    #[error("untrusted time-stamping authority: {0}")]
    TimestampUntrusted(String),
    /// No valid path to an anchor at the signing time.
    #[error("certificate path: {0}")]
    CertificatePath(String),
    /// Revoked at the signing time.
    #[error("signer certificate revoked at {revoked_at} ({reason})")]
    Revoked {
        /// RFC 5280 reason name.
        reason: String,
        /// Unix seconds.
        revoked_at: i64,
    },
    /// No usable revocation status at the signing time.
    #[error("revocation status unknown: {0}")]
    RevocationUnknown(String),
    /// A supplied document's digest is not the manifest's.
    #[error("a document does not match the manifest")]
    DocumentDigestMismatch(Vec<DocumentResult>),
    /// A document of the manifest was not supplied.
    #[error("a document of the manifest is missing")]
    DocumentMissing(Vec<DocumentResult>),
    /// A supplied document is not in the manifest.
    #[error("a supplied document is not signed")]
    DocumentNotSigned(Vec<DocumentResult>),
}

impl Refusal {
    /// Per-document results of a refusal about the documents (empty otherwise).
    pub fn documents(&self) -> &[DocumentResult] {
        match self {
            Refusal::DocumentDigestMismatch(d)
            | Refusal::DocumentMissing(d)
            | Refusal::DocumentNotSigned(d) => d,
            _ => &[],
        }
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too_large",
            Refusal::TooDeep(_) => "too_deep",
            Refusal::TooManyNodes(_) => "too_many_nodes",
            Refusal::DtdForbidden => "dtd_forbidden",
            Refusal::MalformedXml(_) => "malformed_xml",
            Refusal::NotASignature => "not_a_signature",
            Refusal::MultipleSignatures => "multiple_signatures",
            Refusal::DuplicateId(_) => "duplicate_id",
            Refusal::Structure(_) => "bad_structure",
            Refusal::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Refusal::UnexpectedReference(_) => "unexpected_reference",
            Refusal::SignedPropertiesNotBound(_) => "signed_properties_not_bound",
            Refusal::ManifestNotBound(_) => "manifest_not_bound",
            Refusal::SignedPropertiesDigestMismatch => "signed_properties_digest_mismatch",
            Refusal::ManifestDigestMismatch => "manifest_digest_mismatch",
            Refusal::ObjectDigestMismatch => "object_digest_mismatch",
            Refusal::SignerCertificate(_) => "signer_certificate",
            Refusal::BadSignatureValue => "bad_signature_value",
            Refusal::SigningCertificateMismatch => "signing_certificate_mismatch",
            Refusal::UnknownPolicy(_) => "unknown_policy",
            Refusal::PolicyMismatch(_) => "policy_mismatch",
            Refusal::MissingCommitment => "missing_commitment",
            Refusal::UnknownCommitment(_) => "unknown_commitment",
            Refusal::BadSigningTime(_) => "bad_signing_time",
            Refusal::SigningTimeAfterTimestamp => "signing_time_after_timestamp",
            Refusal::MissingTimestamp => "missing_timestamp",
            Refusal::TimestampNotCovering => "timestamp_not_covering",
            Refusal::TimestampInvalid(_) => "timestamp_invalid",
            Refusal::TimestampUntrusted(_) => "timestamp_untrusted",
            Refusal::CertificatePath(_) => "certificate_path",
            Refusal::Revoked { .. } => "certificate_revoked",
            Refusal::RevocationUnknown(_) => "revocation_unknown",
            Refusal::DocumentDigestMismatch(_) => "document_digest_mismatch",
            Refusal::DocumentMissing(_) => "document_missing",
            Refusal::DocumentNotSigned(_) => "document_not_signed",
        }
    }
}

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

fn structure<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Structure(m.into()))
}

fn is(n: Node<'_, '_>, uri: &str, local: &str) -> bool {
    n.is_element() && n.tag_name().name() == local && n.tag_name().namespace() == Some(uri)
}

/// The element children of `n`; refuses non-whitespace text between them.
fn kids<'a, 'i>(n: Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>, Refusal> {
    let mut out = Vec::new();
    for c in n.children() {
        if c.is_element() {
            out.push(c);
        } else if c.is_text() && !c.text().unwrap_or("").trim().is_empty() {
            return structure(format!("text inside {}", n.tag_name().name()));
        }
    }
    Ok(out)
}

/// The single element child `local` (namespace `uri`) of `n`.
fn one<'a, 'i>(n: Node<'a, 'i>, uri: &str, local: &str) -> Result<Node<'a, 'i>, Refusal> {
    let mut found = n.children().filter(|c| is(*c, uri, local));
    match (found.next(), found.next()) {
        (Some(c), None) => Ok(c),
        (None, _) => structure(format!("no {local} in {}", n.tag_name().name())),
        _ => structure(format!("more than one {local} in {}", n.tag_name().name())),
    }
}

fn opt<'a, 'i>(n: Node<'a, 'i>, uri: &str, local: &str) -> Result<Option<Node<'a, 'i>>, Refusal> {
    let mut found = n.children().filter(|c| is(*c, uri, local));
    match (found.next(), found.next()) {
        (c, None) => Ok(c),
        _ => structure(format!("more than one {local} in {}", n.tag_name().name())),
    }
}

fn text(n: Node<'_, '_>) -> Result<String, Refusal> {
    let mut s = String::new();
    for c in n.children() {
        if c.is_element() {
            return structure(format!("element inside {}", n.tag_name().name()));
        }
        if let Some(t) = c.text().filter(|_| c.is_text()) {
            s.push_str(t);
        }
    }
    Ok(s)
}

fn b64(n: Node<'_, '_>) -> Result<Vec<u8>, Refusal> {
    let t: String = text(n)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    B64.decode(t)
        .or_else(|_| structure(format!("bad base64 in {}", n.tag_name().name())))
}

fn algorithm<'a>(n: Node<'a, '_>) -> Result<&'a str, Refusal> {
    if n.has_children() {
        return Err(Refusal::UnsupportedAlgorithm(format!(
            "parameters of {}",
            n.tag_name().name()
        )));
    }
    n.attribute("Algorithm")
        .ok_or_else(|| Refusal::Structure(format!("{} without Algorithm", n.tag_name().name())))
}

fn c14n11(uri: &str) -> Option<bool> {
    match uri {
        ns::C14N11 => Some(false),
        ns::C14N11_WITH_COMMENTS => Some(true),
        _ => None,
    }
}

fn digest_of(method: Node<'_, '_>, data: &[u8]) -> Result<Vec<u8>, Refusal> {
    let uri = algorithm(method)?;
    let alg = match cps_xua::XmlDigestAlgorithm::from_uri(uri) {
        Some(cps_xua::XmlDigestAlgorithm::Sha256) => &ring::digest::SHA256,
        Some(cps_xua::XmlDigestAlgorithm::Sha384) => &ring::digest::SHA384,
        Some(cps_xua::XmlDigestAlgorithm::Sha512) => &ring::digest::SHA512,
        _ => return Err(Refusal::UnsupportedAlgorithm(uri.to_owned())),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

fn c14n(n: Node<'_, '_>, with_comments: bool) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    canonicalize_11(n, None, with_comments, &mut out).map_err(|e| Refusal::Structure(e.0))?;
    Ok(out)
}

/// What a `SignedInfo` reference names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    SignedProperties,
    Manifest,
    Object,
    KeyInfo,
}

/// Verify `xml` (a DSG signature document) against the `documents` supplied for its manifest.
pub fn verify(
    xml: &[u8],
    documents: &[SuppliedDocument<'_>],
    ctx: &VerifyContext<'_>,
) -> Result<Verified, Refusal> {
    let doc = parse_limited(xml, &ctx.limits).map_err(|e| match e {
        ParseRefusal::TooLarge(..) => Refusal::TooLarge(e.to_string()),
        ParseRefusal::TooDeep(_) => Refusal::TooDeep(e.to_string()),
        ParseRefusal::TooManyNodes(_) => Refusal::TooManyNodes(e.to_string()),
        ParseRefusal::DtdForbidden => Refusal::DtdForbidden,
        ParseRefusal::Malformed(m) => Refusal::MalformedXml(m),
    })?;
    verify_parsed(&doc, documents, ctx)
}

fn verify_parsed(
    doc: &Document<'_>,
    documents: &[SuppliedDocument<'_>],
    ctx: &VerifyContext<'_>,
) -> Result<Verified, Refusal> {
    // --- Shape: one signature, the root; unique IDs. ---
    let sigs = doc
        .descendants()
        .filter(|n| is(*n, ns::DS, "Signature"))
        .count();
    if sigs > 1 {
        return Err(Refusal::MultipleSignatures);
    }
    let sig = doc.root_element();
    if !is(sig, ns::DS, "Signature") {
        return Err(Refusal::NotASignature);
    }
    let mut ids: Vec<(&str, Node<'_, '_>)> = Vec::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        for a in n.attributes() {
            if matches!(a.name(), "Id" | "ID" | "id") {
                if ids.iter().any(|(v, _)| *v == a.value()) {
                    return Err(Refusal::DuplicateId(a.value().to_owned()));
                }
                ids.push((a.value(), n));
            }
        }
    }
    let by_id = |uri: &str| -> Option<Node<'_, '_>> {
        let id = uri.strip_prefix('#')?;
        ids.iter().find(|(v, _)| *v == id).map(|(_, n)| *n)
    };
    let sig_id = sig
        .attribute("Id")
        .ok_or_else(|| Refusal::Structure("ds:Signature without Id".into()))?;

    // --- The signature's parts. ---
    let parts = kids(sig)?;
    let (signed_info, sig_value) = match parts.as_slice() {
        [si, sv, ..] if is(*si, ns::DS, "SignedInfo") && is(*sv, ns::DS, "SignatureValue") => {
            (*si, *sv)
        }
        _ => return structure("ds:Signature must start with SignedInfo, SignatureValue"),
    };
    let mut key_info = None;
    let mut objects = Vec::new();
    for (i, p) in parts.iter().enumerate().skip(2) {
        if i == 2 && is(*p, ns::DS, "KeyInfo") {
            key_info = Some(*p);
        } else if is(*p, ns::DS, "Object") {
            objects.push(*p);
        } else {
            return structure(format!(
                "unexpected {} in ds:Signature",
                p.tag_name().name()
            ));
        }
    }
    // One SignedProperties in the whole document: a second one (wrapped, moved, copied) is
    // a wrapping attempt whatever its ID.
    if doc
        .descendants()
        .filter(|n| is(*n, ns::XADES, "SignedProperties"))
        .count()
        != 1
    {
        return Err(Refusal::SignedPropertiesNotBound(
            "not exactly one SignedProperties".into(),
        ));
    }
    // Exactly one QualifyingProperties targeting this signature; at most one manifest.
    let mut qp = None;
    let mut manifest = None;
    for o in &objects {
        if o.attribute("Encoding") == Some(ns::BASE64) && o.children().all(|c| c.is_text()) {
            continue;
        }
        for c in kids(*o)? {
            if is(c, ns::XADES, "QualifyingProperties") {
                if qp.replace(c).is_some() {
                    return structure("more than one QualifyingProperties");
                }
            } else if is(c, ns::DS, "Manifest") {
                if manifest.replace(c).is_some() {
                    return structure("more than one Manifest");
                }
            } else if is(c, ns::XADES, "SignedProperties") {
                return Err(Refusal::SignedPropertiesNotBound(
                    "SignedProperties outside QualifyingProperties".into(),
                ));
            } else {
                return structure(format!("unexpected {} in ds:Object", c.tag_name().name()));
            }
        }
    }
    let qp = qp.ok_or_else(|| Refusal::Structure("no xades:QualifyingProperties".into()))?;
    if qp.attribute("Target") != Some(&format!("#{sig_id}")) {
        return Err(Refusal::SignedPropertiesNotBound(
            "QualifyingProperties does not target this signature".into(),
        ));
    }
    let qp_kids = kids(qp)?;
    let signed_props = match qp_kids.first() {
        Some(sp) if is(*sp, ns::XADES, "SignedProperties") => *sp,
        _ => {
            return Err(Refusal::SignedPropertiesNotBound(
                "QualifyingProperties does not start with SignedProperties".into(),
            ));
        }
    };
    let unsigned_props = match &qp_kids[1..] {
        [] => None,
        [u] if is(*u, ns::XADES, "UnsignedProperties") => Some(*u),
        _ => return structure("unexpected content in QualifyingProperties"),
    };

    // --- SignedInfo. ---
    let si_kids = kids(signed_info)?;
    if si_kids.len() < 3
        || !is(si_kids[0], ns::DS, "CanonicalizationMethod")
        || !is(si_kids[1], ns::DS, "SignatureMethod")
    {
        return structure("SignedInfo must be CanonicalizationMethod, SignatureMethod, Reference+");
    }
    let c14n_uri = algorithm(si_kids[0])?;
    let si_comments =
        c14n11(c14n_uri).ok_or_else(|| Refusal::UnsupportedAlgorithm(c14n_uri.to_owned()))?;
    let sm_uri = algorithm(si_kids[1])?;
    let sig_alg = XmlSignatureAlgorithm::from_uri(sm_uri)
        .filter(|a| a.hsm_algorithm().is_some())
        .ok_or_else(|| Refusal::UnsupportedAlgorithm(sm_uri.to_owned()))?;

    let mut seen: Vec<Target> = Vec::new();
    let mut object_node = None;
    for r in &si_kids[2..] {
        if !is(*r, ns::DS, "Reference") {
            return structure(format!("unexpected {} in SignedInfo", r.tag_name().name()));
        }
        let uri = r
            .attribute("URI")
            .ok_or_else(|| Refusal::Structure("Reference without URI".into()))?;
        let rk = kids(*r)?;
        let (transforms, dm, dv) = match rk.as_slice() {
            [t, dm, dv]
                if is(*t, ns::DS, "Transforms")
                    && is(*dm, ns::DS, "DigestMethod")
                    && is(*dv, ns::DS, "DigestValue") =>
            {
                (kids(*t)?, *dm, *dv)
            }
            [dm, dv] if is(*dm, ns::DS, "DigestMethod") && is(*dv, ns::DS, "DigestValue") => {
                (Vec::new(), *dm, *dv)
            }
            _ => return structure("Reference must be Transforms?, DigestMethod, DigestValue"),
        };
        let mut talgs = Vec::new();
        for t in &transforms {
            if !is(*t, ns::DS, "Transform") {
                return structure("unexpected element in Transforms");
            }
            talgs.push(algorithm(*t)?);
        }
        let target = by_id(uri);
        let kind = match r.attribute("Type") {
            Some(ns::TYPE_SIGNED_PROPERTIES) => {
                if target != Some(signed_props) {
                    return Err(Refusal::SignedPropertiesNotBound(format!(
                        "reference '{uri}' is not this signature's SignedProperties"
                    )));
                }
                Target::SignedProperties
            }
            Some(ns::TYPE_MANIFEST) => {
                if manifest.is_none() || target != manifest {
                    return Err(Refusal::ManifestNotBound(format!(
                        "reference '{uri}' is not this signature's manifest"
                    )));
                }
                Target::Manifest
            }
            None | Some("http://www.w3.org/2000/09/xmldsig#Object") => match target {
                Some(t) if Some(t) == key_info => Target::KeyInfo,
                Some(t)
                    if objects.contains(&t)
                        && t.attribute("Encoding") == Some(ns::BASE64)
                        && t.children().all(|c| c.is_text()) =>
                {
                    object_node = Some(t);
                    Target::Object
                }
                Some(t) if t == signed_props => {
                    return Err(Refusal::SignedPropertiesNotBound(
                        "the SignedProperties reference has no SignedProperties type".into(),
                    ));
                }
                Some(t) if Some(t) == manifest => {
                    return Err(Refusal::ManifestNotBound(
                        "the manifest reference has no Manifest type".into(),
                    ));
                }
                _ => {
                    return Err(Refusal::UnexpectedReference(format!(
                        "'{uri}' names nothing this signature may sign"
                    )));
                }
            },
            Some(other) => {
                return Err(Refusal::UnexpectedReference(format!("type '{other}'")));
            }
        };
        if seen.contains(&kind) {
            return Err(Refusal::UnexpectedReference(format!(
                "two references to the same part ('{uri}')"
            )));
        }
        seen.push(kind);
        let target = target.ok_or_else(|| Refusal::Structure("unresolved reference".into()))?;
        // The digested octets, by the transforms this kind of part allows.
        let octets = match (kind, talgs.as_slice()) {
            (Target::Object, [t]) if *t == ns::BASE64 => b64(target)?,
            (Target::Object, _) => {
                return Err(Refusal::UnsupportedAlgorithm(
                    "an enveloped object is referenced with the base64 transform only".into(),
                ));
            }
            (_, [t]) if c14n11(t).is_some() => c14n(target, false)?,
            // No transform: XML-DSig's default, Canonical XML 1.0, which differs from 1.1
            // only by the `xml:` attributes a subtree inherits; accepted when there are none.
            (_, []) => {
                if target
                    .ancestors()
                    .skip(1)
                    .any(|a| a.attributes().any(|at| at.namespace() == Some(XML_NS)))
                {
                    return Err(Refusal::UnsupportedAlgorithm(
                        "a reference without transform under inherited xml: attributes".into(),
                    ));
                }
                c14n(target, false)?
            }
            (_, ts) => return Err(Refusal::UnsupportedAlgorithm(ts.join(" "))),
        };
        if digest_of(dm, &octets)? != b64(dv)? {
            return Err(match kind {
                Target::SignedProperties => Refusal::SignedPropertiesDigestMismatch,
                Target::Manifest => Refusal::ManifestDigestMismatch,
                Target::Object | Target::KeyInfo => Refusal::ObjectDigestMismatch,
            });
        }
    }
    if !seen.contains(&Target::SignedProperties) {
        return Err(Refusal::SignedPropertiesNotBound(
            "SignedInfo does not reference the SignedProperties".into(),
        ));
    }
    let form = match (
        seen.contains(&Target::Manifest),
        seen.contains(&Target::Object),
    ) {
        (true, false) => Policy::Detached,
        (false, true) => Policy::Enveloping,
        (false, false) if manifest.is_some() => {
            return Err(Refusal::ManifestNotBound(
                "SignedInfo does not reference the manifest".into(),
            ));
        }
        _ => return structure("a DSG signature signs one manifest or one enveloped object"),
    };
    if form == Policy::Enveloping && manifest.is_some() {
        return structure("an enveloping signature with a manifest");
    }

    // --- Signature value, with the KeyInfo certificate (or the signed certificate digest's). ---
    let ssp = one(signed_props, ns::XADES, "SignedSignatureProperties")?;
    let scv2 = one(ssp, ns::XADES, "SigningCertificateV2")?;
    let first_cert = kids(scv2)?
        .into_iter()
        .next()
        .filter(|c| is(*c, ns::XADES, "Cert"))
        .ok_or_else(|| Refusal::Structure("SigningCertificateV2 without Cert".into()))?;
    let cert_digest = one(first_cert, ns::XADES, "CertDigest")?;
    let cd_method = one(cert_digest, ns::DS, "DigestMethod")?;
    let cd_value = b64(one(cert_digest, ns::DS, "DigestValue")?)?;

    let mut carried: Vec<Vec<u8>> = Vec::new();
    if let Some(ki) = key_info {
        for x in kids(ki)? {
            if !is(x, ns::DS, "X509Data") {
                continue;
            }
            for c in kids(x)? {
                if is(c, ns::DS, "X509Certificate") {
                    carried.push(b64(c)?);
                }
            }
        }
    }
    let key_info_certs = carried.len();
    let usp = match unsigned_props {
        Some(u) => opt(u, ns::XADES, "UnsignedSignatureProperties")?,
        None => None,
    };
    if let Some(usp) = usp
        && let Some(cv) = opt(usp, ns::XADES, "CertificateValues")?
    {
        for c in kids(cv)? {
            if is(c, ns::XADES, "EncapsulatedX509Certificate") {
                carried.push(b64(c)?);
            }
        }
    }
    // The signing certificate: KeyInfo's first when there is one (the SigningCertificateV2
    // digest must then name it), else the carried certificate the digest names.
    let signer = if key_info_certs > 0 {
        carried[0].clone()
    } else {
        let mut found = None;
        for c in &carried {
            if digest_of(cd_method, c)? == cd_value {
                found = Some(c.clone());
            }
        }
        found.ok_or_else(|| Refusal::SignerCertificate("no certificate carried".into()))?
    };
    let info = cert::info(&signer).map_err(Refusal::SignerCertificate)?;
    let si_octets = c14n(signed_info, si_comments)?;
    let sv = b64(sig_value)?;
    let hsm_alg = sig_alg
        .hsm_algorithm()
        .ok_or_else(|| Refusal::UnsupportedAlgorithm(sm_uri.to_owned()))?;
    if cps_hsm::verify_signature(
        &info.spki,
        hsm_alg,
        &si_octets,
        &sv,
        cps_hsm::SigFormat::Raw,
    )
    .is_err()
    {
        return Err(Refusal::BadSignatureValue);
    }
    if digest_of(cd_method, &signer)? != cd_value {
        return Err(Refusal::SigningCertificateMismatch);
    }
    if let Some(is2) = opt(first_cert, ns::XADES, "IssuerSerialV2")?
        && b64(is2)? != info.issuer_serial
    {
        return Err(Refusal::SigningCertificateMismatch);
    }

    // --- Signed properties: time, policy, commitment. ---
    let st = text(one(ssp, ns::XADES, "SigningTime")?)?;
    let claimed =
        time::OffsetDateTime::parse(st.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|e| Refusal::BadSigningTime(format!("'{st}': {e}")))?
            .unix_timestamp();
    let spi = opt(ssp, ns::XADES, "SignaturePolicyIdentifier")?
        .ok_or_else(|| Refusal::UnknownPolicy("no SignaturePolicyIdentifier".into()))?;
    let spid = opt(spi, ns::XADES, "SignaturePolicyId")?
        .ok_or_else(|| Refusal::UnknownPolicy("an implied policy".into()))?;
    let ident = text(one(
        one(spid, ns::XADES, "SigPolicyId")?,
        ns::XADES,
        "Identifier",
    )?)?;
    let policy =
        Policy::from_urn(ident.trim()).ok_or_else(|| Refusal::UnknownPolicy(ident.clone()))?;
    let sph = one(spid, ns::XADES, "SigPolicyHash")?;
    digest_of(one(sph, ns::DS, "DigestMethod")?, b"")?;
    if policy != form {
        return Err(Refusal::PolicyMismatch(policy.urn().to_owned()));
    }
    let sdop = opt(signed_props, ns::XADES, "SignedDataObjectProperties")?
        .ok_or(Refusal::MissingCommitment)?;
    let cti =
        opt(sdop, ns::XADES, "CommitmentTypeIndication")?.ok_or(Refusal::MissingCommitment)?;
    let ct = text(one(
        one(cti, ns::XADES, "CommitmentTypeId")?,
        ns::XADES,
        "Identifier",
    )?)?;
    let purpose = Purpose::from_identifier(ct.trim())
        .ok_or_else(|| Refusal::UnknownCommitment(ct.clone()))?;

    // --- The time-stamp over this SignatureValue. ---
    let usp = usp.ok_or(Refusal::MissingTimestamp)?;
    let sts = opt(usp, ns::XADES, "SignatureTimeStamp")?.ok_or(Refusal::MissingTimestamp)?;
    let sts_c14n = match opt(sts, ns::DS, "CanonicalizationMethod")? {
        Some(m) => {
            let u = algorithm(m)?;
            c14n11(u).ok_or_else(|| Refusal::UnsupportedAlgorithm(u.to_owned()))?
        }
        None => {
            return Err(Refusal::UnsupportedAlgorithm(
                "a time-stamp without its canonicalisation method".into(),
            ));
        }
    };
    let token = b64(one(sts, ns::XADES, "EncapsulatedTimeStamp")?)?;
    let covered = c14n(sig_value, sts_c14n)?;
    let gen_time = ctx
        .timestamps
        .check(&token, &covered)
        .map_err(|e| match e {
            TimestampRefusal::NotCovering => Refusal::TimestampNotCovering,
            TimestampRefusal::Invalid(m) => Refusal::TimestampInvalid(m),
            TimestampRefusal::Untrusted(m) => Refusal::TimestampUntrusted(m),
        })?;
    if claimed > gen_time + ctx.max_skew_secs {
        return Err(Refusal::SigningTimeAfterTimestamp);
    }

    // --- Path and revocation at the time-stamp's time. ---
    let intermediates: Vec<&[u8]> = carried
        .iter()
        .filter(|c| **c != signer)
        .map(|c| c.as_slice())
        .collect();
    ctx.paths
        .check(&signer, &intermediates, gen_time)
        .map_err(Refusal::CertificatePath)?;
    let mut ocsp: Vec<Vec<u8>> = Vec::new();
    if let Some(rv) = opt(usp, ns::XADES, "RevocationValues")?
        && let Some(ov) = opt(rv, ns::XADES, "OCSPValues")?
    {
        for v in kids(ov)? {
            if is(v, ns::XADES, "EncapsulatedOCSPValue") {
                ocsp.push(b64(v)?);
            }
        }
    }
    let ocsp_refs: Vec<&[u8]> = ocsp.iter().map(|v| v.as_slice()).collect();
    ctx.revocation
        .check(&signer, &intermediates, &ocsp_refs, gen_time)
        .map_err(|e| match e {
            RevocationRefusal::Revoked { reason, revoked_at } => {
                Refusal::Revoked { reason, revoked_at }
            }
            RevocationRefusal::Unknown(m) => Refusal::RevocationUnknown(m),
        })?;

    // --- The documents. ---
    let mut submission_set = None;
    let mut results = Vec::new();
    let mut enveloped_document = None;
    match (manifest, object_node) {
        (Some(m), _) => {
            let mut listed: Vec<(String, Node<'_, '_>, Vec<u8>)> = Vec::new();
            for r in kids(m)? {
                if !is(r, ns::DS, "Reference") {
                    return structure("unexpected element in the manifest");
                }
                let uri = r
                    .attribute("URI")
                    .filter(|u| !u.is_empty() && !u.starts_with('#'))
                    .ok_or_else(|| {
                        Refusal::UnexpectedReference(
                            "a manifest reference names no document unique ID".into(),
                        )
                    })?;
                let rk = kids(r)?;
                let (dm, dv) = match rk.as_slice() {
                    [dm, dv]
                        if is(*dm, ns::DS, "DigestMethod") && is(*dv, ns::DS, "DigestValue") =>
                    {
                        (*dm, b64(*dv)?)
                    }
                    _ => {
                        return Err(Refusal::UnsupportedAlgorithm(
                            "a manifest reference with transforms".into(),
                        ));
                    }
                };
                digest_of(dm, b"")?;
                if listed.iter().any(|(u, _, _)| u == uri) {
                    return Err(Refusal::UnexpectedReference(format!("'{uri}' twice")));
                }
                if dv == [0u8] {
                    if submission_set.replace(uri.to_owned()).is_some() {
                        return structure("two submission set references");
                    }
                    continue;
                }
                listed.push((uri.to_owned(), dm, dv));
            }
            if listed.is_empty() {
                return structure("a manifest without documents");
            }
            for (uri, dm, dv) in &listed {
                let outcome = match documents.iter().find(|d| d.unique_id == uri) {
                    None => DocumentOutcome::Missing,
                    Some(d) => {
                        let got = match d.content {
                            DocumentDigest::Bytes(b) => digest_of(*dm, b)?,
                            DocumentDigest::Sha256(h) => {
                                if algorithm(*dm)? != cps_xua::ns::digest::SHA256 {
                                    return Err(Refusal::UnsupportedAlgorithm(
                                        "a digest-only document needs a SHA-256 manifest".into(),
                                    ));
                                }
                                h.to_vec()
                            }
                        };
                        if got == *dv {
                            DocumentOutcome::Verified
                        } else {
                            DocumentOutcome::DigestMismatch
                        }
                    }
                };
                results.push(DocumentResult {
                    unique_id: uri.clone(),
                    outcome,
                });
            }
            for d in documents {
                if !listed.iter().any(|(u, _, _)| u == d.unique_id) {
                    results.push(DocumentResult {
                        unique_id: d.unique_id.to_owned(),
                        outcome: DocumentOutcome::NotInManifest,
                    });
                }
            }
            let has = |o| results.iter().any(|r| r.outcome == o);
            if has(DocumentOutcome::DigestMismatch) {
                return Err(Refusal::DocumentDigestMismatch(results));
            }
            if has(DocumentOutcome::Missing) {
                return Err(Refusal::DocumentMissing(results));
            }
            if has(DocumentOutcome::NotInManifest) {
                return Err(Refusal::DocumentNotSigned(results));
            }
        }
        (None, Some(o)) => enveloped_document = Some(b64(o)?),
        (None, None) => return structure("nothing signed"),
    }

    Ok(Verified {
        signer_subject: info.subject,
        signer_certificate: signer,
        signing_time: gen_time,
        claimed_signing_time: claimed,
        purpose,
        policy,
        submission_set,
        documents: results,
        enveloped_document,
    })
}
