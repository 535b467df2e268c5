//! Strict validation of a VIHF assertion, bare or inside a SOAP 1.2 `wsse:Security` header.
//!
//! The order is fixed: limits → parse (one parser, no DTD) → document shape (exactly one
//! assertion at an allowed place, exactly one signature, a direct child of it right after
//! `Issuer`, unique IDs) → signature structure (one reference to the assertion's ID, only the
//! enveloped and exclusive-c14n transforms, allowed algorithms) → signer path, key usage and
//! revocation → digest over the canonicalised assertion → signature over the canonicalised
//! `SignedInfo` → claims read from that same assertion node → times and audience → whether the
//! signer may make these claims ([`SignerPolicy`]) → replay. Crypto comes before semantics so
//! that a forged document is reported as forged, and nothing refused consumes its ID.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use cps_pki::IdNatPs;
use roxmltree::{Document, Node, NodeType};

use crate::alg::{XmlDigestAlgorithm, XmlSignatureAlgorithm};
use crate::c14n::{Edge, InclusivePrefixes, Scratch, canonicalize_with, traverse};
use crate::model::{
    AuthenticationMode, ClaimProblem, CodedValue, PatientId, PurposeOfUse, SoftwareInfo,
    VihfClaims, shown,
};
use crate::ns::{self, attr};
use crate::policy::SignerPolicy;
use crate::replay::{ReplayCache, ReplayError};
use crate::time::{parse_datetime, to_millis};
use crate::trust::{
    RevocationCheck, RevocationStatus, SignerCertificate, SignerKey, TrustProblem, TrustStore,
};

/// Stable machine codes of refusals (`as_str` is what APIs, audit records and tests use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    /// Input larger than the configured limit.
    TooLarge,
    /// Element nesting deeper than the configured limit.
    TooDeep,
    /// More XML nodes than the configured limit.
    TooManyNodes,
    /// A document type declaration (DTD, entities) is present.
    DtdForbidden,
    /// Not well-formed XML (or not UTF-8).
    MalformedXml,
    /// The root is neither `saml:Assertion` nor a SOAP 1.2 envelope.
    NotAnAssertion,
    /// A SOAP 1.1 envelope (only SOAP 1.2 is accepted).
    SoapVersion,
    /// The SOAP envelope is not `Envelope/(Header, Body)`.
    SoapStructure,
    /// No `saml:Assertion` in the document.
    NoAssertion,
    /// More than one `saml:Assertion` in the document.
    MultipleAssertions,
    /// An `EncryptedAssertion` is present.
    EncryptedAssertion,
    /// The assertion is neither the root nor a child of `Envelope/Header/wsse:Security`.
    AssertionPosition,
    /// Two ID attributes of the document have the same value.
    DuplicateId,
    /// The assertion has no `ID`.
    MissingId,
    /// `Version` is not `2.0`.
    UnsupportedVersion,
    /// No `ds:Signature` in the document.
    Unsigned,
    /// More than one `ds:Signature` in the document.
    MultipleSignatures,
    /// The signature is not a direct child of the assertion.
    SignatureNotChild,
    /// The signature does not follow `Issuer` as the schema requires.
    SignaturePosition,
    /// The signature's elements are not the expected ones.
    SignatureStructure,
    /// `CanonicalizationMethod` is not exclusive c14n without comments.
    CanonicalizationNotAllowed,
    /// `SignatureMethod` is not allowed (SHA-1, HMAC, unknown, or not configured).
    SignatureAlgorithmNotAllowed,
    /// `DigestMethod` is not allowed.
    DigestAlgorithmNotAllowed,
    /// Not exactly one `Reference`.
    ReferenceCount,
    /// The reference does not point at the assertion's ID.
    ReferenceMismatch,
    /// Transforms other than exactly enveloped-signature then exclusive c14n.
    TransformsNotAllowed,
    /// `KeyInfo` is not `X509Data/X509Certificate+`.
    KeyInfo,
    /// The signer certificate cannot be parsed or its key is not supported.
    CertificateMalformed,
    /// The signer certificate does not chain to a trust anchor.
    UntrustedSigner,
    /// A certificate of the signer's path is expired or not yet valid.
    SignerCertificateExpired,
    /// The signer certificate's (extended) key usage does not allow signing assertions.
    SignerKeyUsage,
    /// The signer certificate is revoked.
    SignerRevoked,
    /// The revocation status could not be obtained (fail closed).
    RevocationUnavailable,
    /// The signature algorithm does not fit the signer's key.
    KeyAlgorithmMismatch,
    /// The digest of the assertion does not match the reference.
    DigestMismatch,
    /// The signature value does not verify.
    BadSignature,
    /// A comment inside the assertion while comments are refused.
    CommentInAssertion,
    /// An element of the assertion is missing, repeated, unexpected or malformed.
    Schema,
    /// `Issuer` does not name the signer certificate's subject.
    IssuerMismatch,
    /// `NotBefore` (or `IssueInstant`) is in the future.
    NotYetValid,
    /// `NotOnOrAfter` has passed.
    Expired,
    /// No `Conditions` validity window.
    MissingValidity,
    /// The validity window is longer than allowed.
    ValidityTooLong,
    /// The audience restriction does not name this service.
    AudienceMismatch,
    /// A mandatory attribute is missing.
    MissingAttribute,
    /// An attribute value is malformed.
    MalformedAttribute,
    /// An attribute appears twice.
    DuplicateAttribute,
    /// `bris_de_glace` without a justification.
    BreakGlassWithoutJustification,
    /// An organisation seal asserts another structure than its own (see
    /// [`SignerPolicy`](crate::SignerPolicy)).
    StructureMismatch,
    /// The signer may not assert this `Authentification_Mode` (an organisation seal asserting
    /// `DIRECTE`).
    AuthenticationModeNotAllowed,
    /// The professional named by `NameID` is not in the registry.
    UnknownProfessional,
    /// The professional is in the registry but not active (suspended, left).
    ProfessionalNotActive,
    /// The professional has no activity in the asserted structure.
    ActivityNotInStructure,
    /// A claim about the professional (profession, sector) contradicts the registry.
    ClaimContradictsRegistry,
    /// The registry could not answer (fail closed).
    RegistryUnavailable,
    /// The assertion ID was already used.
    Replayed,
    /// The replay cache refused to answer (full or unavailable: fail closed).
    ReplayCacheUnavailable,
}

impl RefusalCode {
    /// Whether this is no verdict on the assertion but a source of the validator that did not
    /// answer (revocation state, registry, replay record): the same assertion may be presented
    /// again, and a service answers "unavailable" (HTTP 503), not "refused".
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            RefusalCode::RevocationUnavailable
                | RefusalCode::RegistryUnavailable
                | RefusalCode::ReplayCacheUnavailable
        )
    }

    /// The stable machine code.
    pub fn as_str(self) -> &'static str {
        use RefusalCode::*;
        match self {
            TooLarge => "too_large",
            TooDeep => "too_deep",
            TooManyNodes => "too_many_nodes",
            DtdForbidden => "dtd_forbidden",
            MalformedXml => "malformed_xml",
            NotAnAssertion => "not_an_assertion",
            SoapVersion => "soap_version",
            SoapStructure => "soap_structure",
            NoAssertion => "no_assertion",
            MultipleAssertions => "multiple_assertions",
            EncryptedAssertion => "encrypted_assertion",
            AssertionPosition => "assertion_position",
            DuplicateId => "duplicate_id",
            MissingId => "missing_id",
            UnsupportedVersion => "unsupported_version",
            Unsigned => "unsigned",
            MultipleSignatures => "multiple_signatures",
            SignatureNotChild => "signature_not_child",
            SignaturePosition => "signature_position",
            SignatureStructure => "signature_structure",
            CanonicalizationNotAllowed => "c14n_not_allowed",
            SignatureAlgorithmNotAllowed => "signature_algorithm_not_allowed",
            DigestAlgorithmNotAllowed => "digest_algorithm_not_allowed",
            ReferenceCount => "reference_count",
            ReferenceMismatch => "reference_mismatch",
            TransformsNotAllowed => "transforms_not_allowed",
            KeyInfo => "key_info",
            CertificateMalformed => "certificate_malformed",
            UntrustedSigner => "untrusted_signer",
            SignerCertificateExpired => "signer_certificate_expired",
            SignerKeyUsage => "signer_key_usage",
            SignerRevoked => "signer_revoked",
            RevocationUnavailable => "revocation_unavailable",
            KeyAlgorithmMismatch => "key_algorithm_mismatch",
            DigestMismatch => "digest_mismatch",
            BadSignature => "bad_signature",
            CommentInAssertion => "comment_in_assertion",
            Schema => "schema",
            IssuerMismatch => "issuer_mismatch",
            NotYetValid => "not_yet_valid",
            Expired => "expired",
            MissingValidity => "missing_validity",
            ValidityTooLong => "validity_too_long",
            AudienceMismatch => "audience_mismatch",
            MissingAttribute => "missing_attribute",
            MalformedAttribute => "malformed_attribute",
            DuplicateAttribute => "duplicate_attribute",
            BreakGlassWithoutJustification => "break_glass_without_justification",
            StructureMismatch => "structure_mismatch",
            AuthenticationModeNotAllowed => "authentication_mode_not_allowed",
            UnknownProfessional => "unknown_professional",
            ProfessionalNotActive => "professional_not_active",
            ActivityNotInStructure => "activity_not_in_structure",
            ClaimContradictsRegistry => "claim_contradicts_registry",
            RegistryUnavailable => "registry_unavailable",
            Replayed => "replayed",
            ReplayCacheUnavailable => "replay_cache_unavailable",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused assertion: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The machine code.
    pub code: RefusalCode,
    /// What exactly was wrong.
    pub message: String,
}

fn refuse<T>(code: RefusalCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// What to do with comments inside the assertion. Comments are not signed (exclusive c14n
/// without comments drops them), so they may have been added after signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommentPolicy {
    /// Accept them: every value is read as the concatenation of its text nodes, which is exactly
    /// the canonical (signed) text whatever comments split it.
    #[default]
    Ignore,
    /// Refuse any comment inside the assertion.
    Refuse,
}

/// Validation settings.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// Largest accepted input in bytes.
    pub max_bytes: usize,
    /// Deepest accepted element nesting.
    pub max_depth: usize,
    /// Most XML nodes accepted.
    pub max_nodes: u32,
    /// Tolerance on `NotBefore` / `NotOnOrAfter` / `IssueInstant`.
    pub clock_skew: Duration,
    /// Longest accepted `NotOnOrAfter − NotBefore` (bounds the replay cache's memory too).
    pub max_validity: Duration,
    /// Refuse assertions without `Conditions/@NotOnOrAfter` (otherwise `IssueInstant` +
    /// `max_validity` is their end).
    pub require_validity: bool,
    /// This service's URI: when set, the assertion must be restricted to it; when unset,
    /// assertions carrying an `AudienceRestriction` are refused.
    pub audience: Option<String>,
    /// Accepted `SignatureMethod`s.
    pub signature_algorithms: Vec<XmlSignatureAlgorithm>,
    /// Accepted `DigestMethod`s.
    pub digest_algorithms: Vec<XmlDigestAlgorithm>,
    /// Comments inside the assertion.
    pub comments: CommentPolicy,
    /// Accepted `VIHF_Version` values.
    pub vihf_versions: Vec<String>,
    /// Require `resource-id` (a patient).
    pub require_patient: bool,
    /// Require `Issuer` to be the signer certificate's subject DN.
    pub issuer_must_match_signer: bool,
    /// Accepted INS assigning authorities.
    pub ins_authorities: Vec<String>,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            max_bytes: 256 * 1024,
            max_depth: 32,
            max_nodes: 10_000,
            clock_skew: Duration::from_secs(60),
            max_validity: Duration::from_secs(24 * 3600),
            require_validity: true,
            audience: None,
            signature_algorithms: XmlSignatureAlgorithm::ALL.to_vec(),
            digest_algorithms: vec![XmlDigestAlgorithm::Sha256],
            comments: CommentPolicy::Ignore,
            vihf_versions: vec!["3.0".into(), "4.0".into()],
            require_patient: false,
            issuer_must_match_signer: true,
            ins_authorities: crate::model::INS_AUTHORITIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A verified assertion: everything read from the signed element.
#[derive(Debug, Clone)]
pub struct ValidatedAssertion {
    /// `ID`.
    pub id: String,
    /// `Issuer` text.
    pub issuer: String,
    /// `IssueInstant`.
    pub issue_instant: SystemTime,
    /// `Conditions/@NotBefore` (the issue instant when absent).
    pub not_before: SystemTime,
    /// `Conditions/@NotOnOrAfter` (issue instant + maximum validity when absent and allowed).
    pub not_on_or_after: SystemTime,
    /// Audiences of the `AudienceRestriction`s, if any.
    pub audiences: Vec<String>,
    /// The VIHF claims.
    pub claims: VihfClaims,
    /// The signer certificate.
    pub signer: SignerCertificate,
    /// `SignatureMethod`.
    pub signature_algorithm: XmlSignatureAlgorithm,
    /// `DigestMethod`.
    pub digest_algorithm: XmlDigestAlgorithm,
    /// Whether the assertion came inside a SOAP envelope.
    pub in_soap_envelope: bool,
}

/// The assertion validator.
pub struct Validator {
    config: ValidatorConfig,
    trust: Arc<TrustStore>,
    revocation: Arc<dyn RevocationCheck>,
    policy: Arc<dyn SignerPolicy>,
    replay: Arc<dyn ReplayCache>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("config", &self.config)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

#[inline]
fn is(n: Node<'_, '_>, ns_uri: &str, local: &str) -> bool {
    n.is_element() && n.tag_name().name() == local && n.tag_name().namespace() == Some(ns_uri)
}

fn qname_of(n: Node<'_, '_>) -> String {
    match n.tag_name().namespace() {
        Some(u) => format!("{{{u}}}{}", n.tag_name().name()),
        None => n.tag_name().name().to_owned(),
    }
}

/// The element children of a node, once [`elements`] has checked that nothing but whitespace,
/// comments and elements sits between them. A copyable view that walks the siblings again when
/// read, rather than a list: validation looks at the children of some thirty elements per
/// assertion, and allocating (or copying) a list for each was a measurable part of its cost.
#[derive(Clone, Copy)]
struct Kids<'a, 'i> {
    first: Option<Node<'a, 'i>>,
    len: usize,
}

impl<'a, 'i> Kids<'a, 'i> {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> KidsIter<'a, 'i> {
        KidsIter {
            next: self.first,
            left: self.len,
        }
    }

    /// The children when there are exactly `N` of them.
    fn exactly<const N: usize>(&self) -> Option<[Node<'a, 'i>; N]> {
        let first = self.first?;
        if self.len != N {
            return None;
        }
        let mut out = [first; N];
        for (slot, n) in out.iter_mut().zip(self.iter()) {
            *slot = n;
        }
        Some(out)
    }
}

/// The element children of a [`Kids`], in document order.
#[derive(Clone)]
struct KidsIter<'a, 'i> {
    next: Option<Node<'a, 'i>>,
    left: usize,
}

impl<'a, 'i> Iterator for KidsIter<'a, 'i> {
    type Item = Node<'a, 'i>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.next?;
        self.left -= 1;
        self.next = n.next_sibling_element();
        Some(n)
    }
}

impl<'a, 'i> IntoIterator for Kids<'a, 'i> {
    type Item = Node<'a, 'i>;
    type IntoIter = KidsIter<'a, 'i>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Element children; non-whitespace text (or a processing instruction) beside them is refused.
fn elements<'a, 'i>(n: Node<'a, 'i>, what: &str) -> Result<Kids<'a, 'i>, Refusal> {
    let mut out = Kids {
        first: None,
        len: 0,
    };
    for c in n.children() {
        match c.node_type() {
            NodeType::Element => {
                out.first.get_or_insert(c);
                out.len += 1;
            }
            NodeType::Text => {
                if !c
                    .text()
                    .unwrap_or("")
                    .bytes()
                    .all(|b| b.is_ascii_whitespace())
                {
                    return refuse(RefusalCode::Schema, format!("text inside {what}"));
                }
            }
            NodeType::PI => {
                return refuse(
                    RefusalCode::Schema,
                    format!("processing instruction inside {what}"),
                );
            }
            NodeType::Comment | NodeType::Root => {}
        }
    }
    Ok(out)
}

/// The text of a simple element: its text nodes concatenated (comments do not split it);
/// child elements and processing instructions are refused. Borrowed from the document when it
/// is a single text node (the usual case), so that most values are not copied.
fn simple_text<'a>(
    n: Node<'a, '_>,
    what: &str,
    code: RefusalCode,
) -> Result<Cow<'a, str>, Refusal> {
    let mut s = Cow::Borrowed("");
    for c in n.children() {
        match c.node_type() {
            NodeType::Text => {
                let t = c.text().unwrap_or("");
                if s.is_empty() {
                    s = Cow::Borrowed(t);
                } else {
                    s.to_mut().push_str(t);
                }
            }
            NodeType::Comment | NodeType::Root => {}
            NodeType::Element | NodeType::PI => {
                return refuse(code, format!("{what} must contain text only"));
            }
        }
    }
    Ok(s)
}

/// Base64 text without the XML whitespace that line-wrapping signers put in it (still borrowed
/// from the document when there is none).
fn compact_b64(text: Cow<'_, str>) -> Cow<'_, str> {
    // Every XML whitespace byte is at most b' ', and base64 text has no such byte: one
    // branch-free (vectorised) pass over 32-byte chunks rules them out in the usual case.
    let maybe_space = text
        .as_bytes()
        .chunks(32)
        .any(|c| c.iter().fold(false, |acc, &b| acc | (b <= b' ')));
    if maybe_space
        && text
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        let mut text = text.into_owned();
        text.retain(|c| !matches!(c, ' ' | '\t' | '\n' | '\r'));
        return Cow::Owned(text);
    }
    text
}

fn b64_decode(text: Cow<'_, str>, what: &str, code: RefusalCode) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::STANDARD
        .decode(compact_b64(text).as_bytes())
        .or_else(|_| refuse(code, format!("{what} is not base64")))
}

/// The parsed `ds:Signature`.
struct SignatureParts<'a, 'i> {
    signed_info: Node<'a, 'i>,
    si_prefixes: InclusivePrefixes,
    algorithm: XmlSignatureAlgorithm,
    reference_uri: &'a str,
    ref_prefixes: InclusivePrefixes,
    digest_algorithm: XmlDigestAlgorithm,
    digest: Vec<u8>,
    signature_value: Vec<u8>,
    /// The `X509Certificate` texts without whitespace, signer first.
    certificates: Vec<Cow<'a, str>>,
}

fn algorithm_attr<'a>(n: Node<'a, '_>, what: &str) -> Result<&'a str, Refusal> {
    n.attribute("Algorithm").map_or_else(
        || {
            refuse(
                RefusalCode::SignatureStructure,
                format!("{what} without Algorithm"),
            )
        },
        Ok,
    )
}

/// `ec:InclusiveNamespaces` under a c14n method or transform (the only child allowed).
fn inclusive_prefixes(n: Node<'_, '_>, what: &str) -> Result<InclusivePrefixes, Refusal> {
    let kids = elements(n, what)?;
    if kids.is_empty() {
        return Ok(InclusivePrefixes::none());
    }
    match kids.exactly() {
        Some([i]) if is(i, ns::EXC_C14N, "InclusiveNamespaces") => Ok(InclusivePrefixes::parse(
            i.attribute("PrefixList").unwrap_or(""),
        )),
        _ => refuse(
            RefusalCode::SignatureStructure,
            format!("unexpected content in {what}"),
        ),
    }
}

fn check_c14n_uri(uri: &str, what: &str) -> Result<(), Refusal> {
    if uri == ns::EXC_C14N {
        return Ok(());
    }
    let why = if uri == ns::EXC_C14N_WITH_COMMENTS || uri.ends_with("#WithComments") {
        "canonicalisation with comments"
    } else {
        "only exclusive c14n (http://www.w3.org/2001/10/xml-exc-c14n#) is accepted"
    };
    refuse(
        RefusalCode::CanonicalizationNotAllowed,
        format!("{what} '{}': {why}", shown(uri)),
    )
}

impl Validator {
    /// A validator with its trust anchors, revocation source, signer policy (what each signer
    /// may assert) and replay cache.
    pub fn new(
        config: ValidatorConfig,
        trust: Arc<TrustStore>,
        revocation: Arc<dyn RevocationCheck>,
        policy: Arc<dyn SignerPolicy>,
        replay: Arc<dyn ReplayCache>,
    ) -> Self {
        Validator {
            config,
            trust,
            revocation,
            policy,
            replay,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Validate `input` at `now`, consuming the assertion's ID in the replay cache: the answer
    /// for DMP services.
    pub fn validate(&self, input: &[u8], now: SystemTime) -> Result<ValidatedAssertion, Refusal> {
        let v = self.verify(input, now)?;
        let until = v
            .not_on_or_after
            .checked_add(self.config.clock_skew)
            .unwrap_or(v.not_on_or_after);
        match self.replay.check_and_insert(&v.id, until, now) {
            Ok(()) => Ok(v),
            Err(ReplayError::Replayed) => refuse(
                RefusalCode::Replayed,
                format!("assertion {} was already presented", shown(&v.id)),
            ),
            Err(e) => refuse(RefusalCode::ReplayCacheUnavailable, e.to_string()),
        }
    }

    /// Every check of [`Validator::validate`] except the replay cache (the ID is not consumed).
    pub fn verify(&self, input: &[u8], now: SystemTime) -> Result<ValidatedAssertion, Refusal> {
        use RefusalCode as C;
        let cfg = &self.config;
        let limits = crate::parse::Limits {
            max_bytes: cfg.max_bytes,
            max_depth: cfg.max_depth,
            max_nodes: cfg.max_nodes,
        };
        let doc = crate::parse::parse_unchecked_depth(input, &limits).map_err(|e| {
            use crate::parse::ParseRefusal as P;
            let code = match e {
                P::TooLarge(..) => C::TooLarge,
                P::TooDeep(_) => C::TooDeep,
                P::TooManyNodes(_) => C::TooManyNodes,
                P::DtdForbidden => C::DtdForbidden,
                P::Malformed(_) => C::MalformedXml,
            };
            let message = match e {
                P::Malformed(m) => m,
                e => e.to_string(),
            };
            Refusal { code, message }
        })?;

        // --- Document shape, in one pass. ---
        let mut depth = 0usize;
        // The first assertion and signature met, and how many there are.
        let (mut assertion, mut assertions) = (None, 0usize);
        let (mut signature, mut signatures) = (None, 0usize);
        let mut ids: Vec<&str> = Vec::with_capacity(4);
        for edge in traverse(doc.root()) {
            match edge {
                Edge::Open(n) if n.is_element() => {
                    depth += 1;
                    if depth > cfg.max_depth {
                        return refuse(
                            C::TooDeep,
                            format!("elements nested deeper than {}", cfg.max_depth),
                        );
                    }
                    // The local name first: it rules most elements out without comparing
                    // namespace URIs.
                    let name = n.tag_name();
                    match name.name() {
                        "Assertion" if name.namespace() == Some(ns::SAML) => {
                            assertion.get_or_insert(n);
                            assertions += 1;
                        }
                        "EncryptedAssertion" if name.namespace() == Some(ns::SAML) => {
                            return refuse(
                                C::EncryptedAssertion,
                                "encrypted assertions are not accepted",
                            );
                        }
                        "Signature" if name.namespace() == Some(ns::DS) => {
                            signature.get_or_insert(n);
                            signatures += 1;
                        }
                        _ => {}
                    }
                    for a in n.attributes() {
                        let id_like = match a.namespace() {
                            None => matches!(a.name(), "ID" | "Id" | "id"),
                            Some(ns::WSU) => a.name() == "Id",
                            Some(ns::XML) => a.name() == "id",
                            _ => false,
                        };
                        if id_like {
                            ids.push(a.value());
                        }
                    }
                }
                Edge::Close(n) if n.is_element() => depth -= 1,
                _ => {}
            }
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return refuse(
                C::DuplicateId,
                format!("ID '{}' appears more than once", shown(w[0])),
            );
        }
        let assertion = match (assertion, assertions) {
            (None, _) => {
                let root = doc.root_element();
                if is(root, ns::SOAP11, "Envelope") {
                    return refuse(C::SoapVersion, "SOAP 1.1 envelope; SOAP 1.2 is required");
                }
                if !is(root, ns::SOAP12, "Envelope") {
                    return refuse(
                        C::NotAnAssertion,
                        format!(
                            "root element {} is neither saml:Assertion nor a SOAP 1.2 envelope",
                            shown(&qname_of(root))
                        ),
                    );
                }
                return refuse(C::NoAssertion, "no saml:Assertion in the envelope");
            }
            (Some(a), 1) => a,
            (Some(_), more) => {
                return refuse(
                    C::MultipleAssertions,
                    format!("{more} saml:Assertion elements; exactly one is accepted"),
                );
            }
        };
        let in_soap = self.check_position(&doc, assertion)?;

        let signature = match (signature, signatures) {
            (None, _) => return refuse(C::Unsigned, "the assertion carries no ds:Signature"),
            (Some(s), 1) => s,
            (Some(_), more) => {
                return refuse(
                    C::MultipleSignatures,
                    format!("{more} ds:Signature elements; exactly one is accepted"),
                );
            }
        };
        if signature.parent() != Some(assertion) {
            return refuse(
                C::SignatureNotChild,
                "the ds:Signature is not a direct child of the assertion",
            );
        }
        let children = elements(assertion, "Assertion")?;
        // The first two children, then (for `read`) the ones after them.
        let mut after_signature = children.iter();
        let (first, second) = (after_signature.next(), after_signature.next());
        if !first.is_some_and(|i| is(i, ns::SAML, "Issuer")) || second != Some(signature) {
            return refuse(
                C::SignaturePosition,
                "ds:Signature must immediately follow saml:Issuer",
            );
        }
        if assertion.attribute("Version") != Some("2.0") {
            return refuse(
                C::UnsupportedVersion,
                format!(
                    "Version '{}' (2.0 required)",
                    shown(assertion.attribute("Version").unwrap_or(""))
                ),
            );
        }
        let Some(id) = assertion.attribute("ID").filter(|s| !s.is_empty()) else {
            return refuse(C::MissingId, "the assertion has no ID");
        };

        // --- Signature structure. ---
        let parts = self.signature_parts(signature)?;
        if parts.reference_uri.strip_prefix('#') != Some(id) {
            return refuse(
                C::ReferenceMismatch,
                format!(
                    "the signature references '{}', not the assertion '#{}'",
                    shown(parts.reference_uri),
                    shown(id)
                ),
            );
        }

        // --- Signer. ---
        let signer = self
            .trust
            .verify(&parts.certificates, now)
            .map_err(|p| match p {
                TrustProblem::Malformed(m) => Refusal {
                    code: C::CertificateMalformed,
                    message: m,
                },
                TrustProblem::Untrusted(m) => Refusal {
                    code: C::UntrustedSigner,
                    message: m,
                },
                TrustProblem::Expired(m) => Refusal {
                    code: C::SignerCertificateExpired,
                    message: m,
                },
                TrustProblem::KeyUsage(m) => Refusal {
                    code: C::SignerKeyUsage,
                    message: m,
                },
            })?;
        match self.revocation.status(&signer.cert, &signer.chain, now) {
            Ok(RevocationStatus::Good) => {}
            Ok(RevocationStatus::Revoked { reason }) => {
                return refuse(
                    C::SignerRevoked,
                    format!(
                        "signer certificate {} is revoked: {reason}",
                        signer.cert.subject
                    ),
                );
            }
            Err(e) => {
                return refuse(
                    C::RevocationUnavailable,
                    format!(
                        "revocation status of {} unavailable: {e}",
                        signer.cert.subject
                    ),
                );
            }
        }
        match (parts.algorithm, &signer.key) {
            (XmlSignatureAlgorithm::RsaSha256, SignerKey::Rsa(_))
            | (XmlSignatureAlgorithm::RsaSha384, SignerKey::Rsa(_))
            | (XmlSignatureAlgorithm::RsaSha512, SignerKey::Rsa(_))
            | (XmlSignatureAlgorithm::EcdsaSha256, SignerKey::P256(_))
            | (XmlSignatureAlgorithm::EcdsaSha384, SignerKey::P384(_)) => {}
            (alg, key) => {
                return refuse(
                    C::KeyAlgorithmMismatch,
                    format!(
                        "{} does not fit the signer's {} key",
                        alg.uri(),
                        match key {
                            SignerKey::Rsa(_) => "RSA",
                            SignerKey::P256(_) => "P-256",
                            SignerKey::P384(_) => "P-384",
                        }
                    ),
                );
            }
        }

        // --- Digest over the canonicalised assertion without its signature. ---
        let mut buf = Vec::with_capacity(input.len());
        let mut scratch = Scratch::new();
        canonicalize_with(
            assertion,
            Some(signature),
            &parts.ref_prefixes,
            &mut buf,
            &mut scratch,
        )
        .map_err(|e| Refusal {
            code: C::MalformedXml,
            message: e.to_string(),
        })?;
        let digest = ring::digest::digest(parts.digest_algorithm.ring(), &buf);
        if digest.as_ref() != parts.digest.as_slice() {
            return refuse(
                C::DigestMismatch,
                "the assertion's digest does not match the signed reference (content changed)",
            );
        }
        buf.clear();
        canonicalize_with(
            parts.signed_info,
            None,
            &parts.si_prefixes,
            &mut buf,
            &mut scratch,
        )
        .map_err(|e| Refusal {
            code: C::MalformedXml,
            message: e.to_string(),
        })?;
        if !verify_signature(parts.algorithm, &signer.key, &buf, &parts.signature_value) {
            return refuse(
                C::BadSignature,
                format!(
                    "the signature does not verify with the key of {}",
                    signer.cert.subject
                ),
            );
        }

        // --- From here on, everything is read from the verified assertion node. ---
        if cfg.comments == CommentPolicy::Refuse && assertion.descendants().any(|n| n.is_comment())
        {
            return refuse(
                C::CommentInAssertion,
                "comments inside the assertion are not accepted",
            );
        }
        let v = self.read(
            assertion,
            after_signature,
            id,
            &signer.cert,
            &parts,
            in_soap,
            now,
        )?;
        // --- Whether this signer may make these claims (before the ID is consumed). ---
        self.policy.check(&v.signer, &v.claims, now)?;
        Ok(v)
    }

    /// Where the assertion may be: the root, or `Envelope/Header/wsse:Security/Assertion` of a
    /// SOAP 1.2 envelope `Envelope/(Header, Body)`. Returns whether it is in an envelope.
    fn check_position(&self, doc: &Document<'_>, assertion: Node<'_, '_>) -> Result<bool, Refusal> {
        use RefusalCode as C;
        let root = doc.root_element();
        if root == assertion {
            return Ok(false);
        }
        if is(root, ns::SOAP11, "Envelope") {
            return refuse(C::SoapVersion, "SOAP 1.1 envelope; SOAP 1.2 is required");
        }
        if !is(root, ns::SOAP12, "Envelope") {
            return refuse(
                C::AssertionPosition,
                format!(
                    "the assertion is inside {} instead of being the root or in a SOAP 1.2 header",
                    shown(&qname_of(root))
                ),
            );
        }
        let kids = elements(root, "soap:Envelope").map_err(|r| Refusal {
            code: C::SoapStructure,
            message: r.message,
        })?;
        let header = match kids.exactly() {
            Some([h, b]) if is(h, ns::SOAP12, "Header") && is(b, ns::SOAP12, "Body") => h,
            _ => return refuse(C::SoapStructure, "soap:Envelope must hold Header then Body"),
        };
        let security = assertion.parent_element();
        match security {
            Some(s) if is(s, ns::WSSE, "Security") && s.parent_element() == Some(header) => {
                Ok(true)
            }
            _ => refuse(
                C::AssertionPosition,
                "in a SOAP envelope the assertion must be a child of soap:Header/wsse:Security",
            ),
        }
    }

    fn signature_parts<'a, 'i>(
        &self,
        signature: Node<'a, 'i>,
    ) -> Result<SignatureParts<'a, 'i>, Refusal> {
        use RefusalCode as C;
        let kids = elements(signature, "ds:Signature").map_err(|r| Refusal {
            code: C::SignatureStructure,
            message: r.message,
        })?;
        let (si, sv, ki) = match kids.exactly() {
            Some([si, sv, ki])
                if is(si, ns::DS, "SignedInfo")
                    && is(sv, ns::DS, "SignatureValue")
                    && is(ki, ns::DS, "KeyInfo") =>
            {
                (si, sv, ki)
            }
            _ => {
                return refuse(
                    C::SignatureStructure,
                    format!(
                        "ds:Signature must hold exactly SignedInfo, SignatureValue, KeyInfo (found {})",
                        kids.iter().map(qname_of).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        };
        let st = |r: Refusal| Refusal {
            code: C::SignatureStructure,
            message: r.message,
        };
        let si_kids = elements(si, "ds:SignedInfo").map_err(st)?;
        let mut refs = si_kids.iter();
        let (cm, sm) = match (refs.next(), refs.next()) {
            (Some(cm), Some(sm))
                if si_kids.len() >= 3
                    && is(cm, ns::DS, "CanonicalizationMethod")
                    && is(sm, ns::DS, "SignatureMethod") =>
            {
                (cm, sm)
            }
            _ => {
                return refuse(
                    C::SignatureStructure,
                    "ds:SignedInfo must hold CanonicalizationMethod, SignatureMethod, Reference",
                );
            }
        };
        // `refs` now holds the children after SignatureMethod.
        if let Some(other) = refs.clone().find(|r| !is(*r, ns::DS, "Reference")) {
            return refuse(
                C::SignatureStructure,
                format!("unexpected {} in ds:SignedInfo", shown(&qname_of(other))),
            );
        }
        let reference = match (refs.next(), si_kids.len() - 2) {
            (Some(r), 1) => r,
            (_, n) => {
                return refuse(
                    C::ReferenceCount,
                    format!("{n} references; exactly one is accepted"),
                );
            }
        };
        check_c14n_uri(
            algorithm_attr(cm, "CanonicalizationMethod")?,
            "CanonicalizationMethod",
        )?;
        let si_prefixes = inclusive_prefixes(cm, "CanonicalizationMethod")?;

        let sm_uri = algorithm_attr(sm, "SignatureMethod")?;
        let algorithm = match XmlSignatureAlgorithm::from_uri(sm_uri) {
            Some(a) if self.config.signature_algorithms.contains(&a) => a,
            _ => {
                let why = if sm_uri.contains("hmac") {
                    "HMAC signatures are not accepted"
                } else if sm_uri.ends_with("sha1") {
                    "SHA-1 signatures are not accepted"
                } else {
                    "not an allowed signature algorithm"
                };
                return refuse(
                    C::SignatureAlgorithmNotAllowed,
                    format!("SignatureMethod '{}': {why}", shown(sm_uri)),
                );
            }
        };
        if !elements(sm, "SignatureMethod").map_err(st)?.is_empty() {
            return refuse(
                C::SignatureAlgorithmNotAllowed,
                "SignatureMethod parameters (e.g. HMACOutputLength) are not accepted",
            );
        }

        let reference_uri = reference.attribute("URI").unwrap_or("");
        for a in reference.attributes() {
            if a.namespace().is_some() || !matches!(a.name(), "URI" | "Id" | "Type") {
                return refuse(
                    C::SignatureStructure,
                    format!("unexpected attribute {} on ds:Reference", a.name()),
                );
            }
        }
        let rk = elements(reference, "ds:Reference").map_err(st)?;
        let (tr, dm, dv) = match rk.exactly() {
            Some([tr, dm, dv])
                if is(tr, ns::DS, "Transforms")
                    && is(dm, ns::DS, "DigestMethod")
                    && is(dv, ns::DS, "DigestValue") =>
            {
                (tr, dm, dv)
            }
            _ => {
                return refuse(
                    C::TransformsNotAllowed,
                    "ds:Reference must hold Transforms, DigestMethod, DigestValue",
                );
            }
        };
        let transforms = elements(tr, "ds:Transforms").map_err(st)?;
        let ref_prefixes = match transforms.exactly() {
            Some([t1, t2])
                if is(t1, ns::DS, "Transform")
                    && is(t2, ns::DS, "Transform")
                    && t1.attribute("Algorithm") == Some(ns::ENVELOPED)
                    && t2.attribute("Algorithm") == Some(ns::EXC_C14N)
                    && elements(t1, "Transform").map_err(st)?.is_empty() =>
            {
                inclusive_prefixes(t2, "Transform")?
            }
            _ => {
                let uris: Vec<String> = transforms
                    .iter()
                    .map(|t| shown(t.attribute("Algorithm").unwrap_or("?")))
                    .collect();
                return refuse(
                    C::TransformsNotAllowed,
                    format!(
                        "transforms must be exactly enveloped-signature then exclusive c14n (found [{}])",
                        uris.join(", ")
                    ),
                );
            }
        };
        let dm_uri = algorithm_attr(dm, "DigestMethod")?;
        let digest_algorithm = match XmlDigestAlgorithm::from_uri(dm_uri) {
            Some(a) if self.config.digest_algorithms.contains(&a) => a,
            _ => {
                return refuse(
                    C::DigestAlgorithmNotAllowed,
                    format!("DigestMethod '{}' is not allowed", shown(dm_uri)),
                );
            }
        };
        let digest = b64_decode(
            simple_text(dv, "DigestValue", C::SignatureStructure)?,
            "DigestValue",
            C::SignatureStructure,
        )?;
        let signature_value = b64_decode(
            simple_text(sv, "SignatureValue", C::SignatureStructure)?,
            "SignatureValue",
            C::SignatureStructure,
        )?;

        let ki_kids = elements(ki, "ds:KeyInfo").map_err(|r| Refusal {
            code: C::KeyInfo,
            message: r.message,
        })?;
        let x509 = match ki_kids.exactly() {
            Some([x]) if is(x, ns::DS, "X509Data") => x,
            _ => {
                return refuse(C::KeyInfo, "ds:KeyInfo must hold exactly one ds:X509Data");
            }
        };
        let certs = elements(x509, "ds:X509Data").map_err(|r| Refusal {
            code: C::KeyInfo,
            message: r.message,
        })?;
        if certs.is_empty()
            || certs.len() > 4
            || certs.iter().any(|c| !is(c, ns::DS, "X509Certificate"))
        {
            return refuse(
                C::KeyInfo,
                "ds:X509Data must hold one to four ds:X509Certificate (the signer first)",
            );
        }
        let mut certificates = Vec::with_capacity(certs.len());
        for c in certs {
            certificates.push(compact_b64(simple_text(c, "X509Certificate", C::KeyInfo)?));
        }
        Ok(SignatureParts {
            signed_info: si,
            si_prefixes,
            algorithm,
            reference_uri,
            ref_prefixes,
            digest_algorithm,
            digest,
            signature_value,
            certificates,
        })
    }

    /// Read the verified assertion. `rest` are its element children after Issuer and Signature.
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        assertion: Node<'_, '_>,
        rest: KidsIter<'_, '_>,
        id: &str,
        signer: &SignerCertificate,
        parts: &SignatureParts<'_, '_>,
        in_soap: bool,
        now: SystemTime,
    ) -> Result<ValidatedAssertion, Refusal> {
        use RefusalCode as C;
        let cfg = &self.config;
        let skew_ms = i64::try_from(cfg.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let now_ms = to_millis(now);
        let time_attr = |n: Node<'_, '_>, name: &str| -> Result<Option<SystemTime>, Refusal> {
            match n.attribute(name) {
                None => Ok(None),
                Some(v) => parse_datetime(v)
                    .map(Some)
                    .or_else(|why| refuse(C::Schema, format!("{name} '{}': {why}", shown(v)))),
            }
        };

        let issue_instant = time_attr(assertion, "IssueInstant")?.map_or_else(
            || refuse(C::Schema, "the assertion has no IssueInstant"),
            Ok,
        )?;

        // Issuer.
        let issuer_node = assertion
            .first_element_child()
            .map_or_else(|| refuse(C::Schema, "no Issuer"), Ok)?;
        if issuer_node.attribute("Format") != Some(ns::NAMEID_X509_SUBJECT) {
            return refuse(
                C::Schema,
                format!("Issuer Format must be {}", ns::NAMEID_X509_SUBJECT),
            );
        }
        let issuer = simple_text(issuer_node, "Issuer", C::Schema)?;
        if cfg.issuer_must_match_signer && !issuer_names_signer(&issuer, signer) {
            return refuse(
                C::IssuerMismatch,
                format!(
                    "Issuer '{}' is not the signer certificate's subject '{}'",
                    shown(&issuer),
                    signer.subject
                ),
            );
        }

        let (mut subject, mut conditions, mut authn, mut statement) = (None, None, None, None);
        for n in rest {
            let slot = match (n.tag_name().namespace(), n.tag_name().name()) {
                (Some(ns::SAML), "Subject") => &mut subject,
                (Some(ns::SAML), "Conditions") => &mut conditions,
                (Some(ns::SAML), "AuthnStatement") => &mut authn,
                (Some(ns::SAML), "AttributeStatement") => &mut statement,
                _ => {
                    return refuse(
                        C::Schema,
                        format!("unexpected {} in the assertion", shown(&qname_of(n))),
                    );
                }
            };
            if slot.replace(n).is_some() {
                return refuse(C::Schema, format!("{} appears twice", n.tag_name().name()));
            }
        }
        let subject = subject.map_or_else(|| refuse(C::Schema, "no Subject"), Ok)?;
        let authn = authn.map_or_else(|| refuse(C::Schema, "no AuthnStatement"), Ok)?;
        let statement =
            statement.map_or_else(|| refuse(C::MissingAttribute, "no AttributeStatement"), Ok)?;

        // Subject: one NameID, subject confirmations.
        let mut name_id = None;
        let mut confirmation_ends = Vec::new();
        for n in elements(subject, "Subject")? {
            if is(n, ns::SAML, "NameID") {
                if name_id.is_some() {
                    return refuse(C::Schema, "NameID appears twice");
                }
                name_id = Some(simple_text(n, "NameID", C::MalformedAttribute)?);
            } else if is(n, ns::SAML, "SubjectConfirmation") {
                for d in elements(n, "SubjectConfirmation")? {
                    if is(d, ns::SAML, "SubjectConfirmationData") {
                        if let Some(t) = time_attr(d, "NotOnOrAfter")? {
                            confirmation_ends.push(t);
                        }
                        if let Some(t) = time_attr(d, "NotBefore")?
                            && to_millis(t) > now_ms.saturating_add(skew_ms)
                        {
                            return refuse(
                                C::NotYetValid,
                                "SubjectConfirmationData NotBefore is in the future",
                            );
                        }
                    }
                }
            } else {
                return refuse(
                    C::Schema,
                    format!("unexpected {} in Subject", shown(&qname_of(n))),
                );
            }
        }
        let name_id =
            name_id.map_or_else(|| refuse(C::MissingAttribute, "no Subject/NameID"), Ok)?;
        let name_id = IdNatPs::parse(&name_id).map_err(|e| Refusal {
            code: C::MalformedAttribute,
            message: format!("NameID: {e}"),
        })?;

        // Conditions.
        let mut not_before = None;
        let mut not_on_or_after = None;
        let mut audiences = Vec::new();
        let mut restrictions = 0usize;
        if let Some(c) = conditions {
            not_before = time_attr(c, "NotBefore")?;
            not_on_or_after = time_attr(c, "NotOnOrAfter")?;
            for n in elements(c, "Conditions")? {
                if is(n, ns::SAML, "AudienceRestriction") {
                    restrictions += 1;
                    let mut these = Vec::new();
                    for a in elements(n, "AudienceRestriction")? {
                        if !is(a, ns::SAML, "Audience") {
                            return refuse(C::Schema, "AudienceRestriction holds only Audience");
                        }
                        these.push(simple_text(a, "Audience", C::Schema)?.into_owned());
                    }
                    if let Some(mine) = &cfg.audience
                        && !these.iter().any(|a| a == mine)
                    {
                        return refuse(
                            C::AudienceMismatch,
                            format!("the assertion is not meant for {}", shown(mine)),
                        );
                    }
                    audiences.extend(these);
                } else if !(is(n, ns::SAML, "OneTimeUse") || is(n, ns::SAML, "ProxyRestriction")) {
                    return refuse(
                        C::Schema,
                        format!("unsupported condition {}", shown(&qname_of(n))),
                    );
                }
            }
        }
        match (&cfg.audience, restrictions) {
            (Some(mine), 0) => {
                return refuse(
                    C::AudienceMismatch,
                    format!(
                        "the assertion has no AudienceRestriction naming {}",
                        shown(mine)
                    ),
                );
            }
            (None, n) if n > 0 => {
                return refuse(
                    C::AudienceMismatch,
                    format!(
                        "the assertion is restricted to [{}] and this service has no audience configured",
                        audiences
                            .iter()
                            .map(|a| shown(a))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            _ => {}
        }

        // Times.
        let not_before = not_before.unwrap_or(issue_instant);
        let max_validity_ms = i64::try_from(cfg.max_validity.as_millis()).unwrap_or(i64::MAX);
        let not_on_or_after = match not_on_or_after {
            Some(t) => t,
            None if cfg.require_validity => {
                return refuse(C::MissingValidity, "Conditions/@NotOnOrAfter is required");
            }
            None => {
                crate::time::from_millis(to_millis(issue_instant).saturating_add(max_validity_ms))
            }
        };
        let (nb, na, ii) = (
            to_millis(not_before),
            to_millis(not_on_or_after),
            to_millis(issue_instant),
        );
        if na <= nb {
            return refuse(C::Schema, "NotOnOrAfter is not after NotBefore");
        }
        if na - nb > max_validity_ms {
            return refuse(
                C::ValidityTooLong,
                format!(
                    "valid for {} s (at most {} s accepted)",
                    (na - nb) / 1000,
                    max_validity_ms / 1000
                ),
            );
        }
        if nb > now_ms.saturating_add(skew_ms) || ii > now_ms.saturating_add(skew_ms) {
            return refuse(
                C::NotYetValid,
                format!(
                    "valid from {} (now {})",
                    crate::time::format_datetime(not_before.max(issue_instant)),
                    crate::time::format_datetime(now)
                ),
            );
        }
        if now_ms.saturating_sub(skew_ms) >= na {
            return refuse(
                C::Expired,
                format!(
                    "expired at {} (now {})",
                    crate::time::format_datetime(not_on_or_after),
                    crate::time::format_datetime(now)
                ),
            );
        }
        if let Some(t) = confirmation_ends
            .iter()
            .find(|t| now_ms.saturating_sub(skew_ms) >= to_millis(**t))
        {
            return refuse(
                C::Expired,
                format!(
                    "SubjectConfirmationData expired at {}",
                    crate::time::format_datetime(*t)
                ),
            );
        }

        // AuthnStatement.
        let authn_instant = time_attr(authn, "AuthnInstant")?.map_or_else(
            || refuse(C::Schema, "AuthnStatement has no AuthnInstant"),
            Ok,
        )?;
        if to_millis(authn_instant) > now_ms.saturating_add(skew_ms) {
            return refuse(C::NotYetValid, "AuthnInstant is in the future");
        }
        let mut class_ref = None;
        for n in elements(authn, "AuthnStatement")? {
            if is(n, ns::SAML, "AuthnContext") {
                for c in elements(n, "AuthnContext")? {
                    if is(c, ns::SAML, "AuthnContextClassRef") {
                        if class_ref.is_some() {
                            return refuse(C::Schema, "AuthnContextClassRef appears twice");
                        }
                        class_ref =
                            Some(simple_text(c, "AuthnContextClassRef", C::Schema)?.into_owned());
                    } else if !is(c, ns::SAML, "AuthnContextDecl")
                        && !is(c, ns::SAML, "AuthnContextDeclRef")
                    {
                        return refuse(C::Schema, "unexpected element in AuthnContext");
                    }
                }
            } else if !is(n, ns::SAML, "SubjectLocality") {
                return refuse(C::Schema, "unexpected element in AuthnStatement");
            }
        }
        let authn_context_class_ref =
            class_ref.map_or_else(|| refuse(C::Schema, "no AuthnContextClassRef"), Ok)?;

        // Attributes.
        let mut attributes: Vec<(&str, Node<'_, '_>)> = Vec::with_capacity(16);
        for n in elements(statement, "AttributeStatement")? {
            if !is(n, ns::SAML, "Attribute") {
                return refuse(
                    C::Schema,
                    format!("unexpected {} in AttributeStatement", shown(&qname_of(n))),
                );
            }
            let Some(name) = n.attribute("Name") else {
                return refuse(C::Schema, "Attribute without Name");
            };
            if attributes.iter().any(|(a, _)| *a == name) {
                return refuse(
                    C::DuplicateAttribute,
                    format!("attribute {} appears twice", shown(name)),
                );
            }
            attributes.push((name, n));
        }
        let claims = read_claims(
            &attributes,
            cfg,
            name_id,
            authn_instant,
            authn_context_class_ref,
        )?;
        let versions: Vec<&str> = cfg.vihf_versions.iter().map(String::as_str).collect();
        claims.check(&versions).map_err(|p| match p {
            ClaimProblem::BreakGlassWithoutJustification => Refusal {
                code: C::BreakGlassWithoutJustification,
                message: "bris_de_glace access without a justification".into(),
            },
            ClaimProblem::Malformed(_, why) => Refusal {
                code: C::MalformedAttribute,
                message: why,
            },
        })?;
        Ok(ValidatedAssertion {
            id: id.to_owned(),
            issuer: issuer.into_owned(),
            issue_instant,
            not_before,
            not_on_or_after,
            audiences,
            claims,
            signer: signer.clone(),
            signature_algorithm: parts.algorithm,
            digest_algorithm: parts.digest_algorithm,
            in_soap_envelope: in_soap,
        })
    }
}

/// `DigestInfo` prefixes of RSASSA-PKCS1-v1_5 (RFC 8017 §9.2, note 1).
const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// Verify `sig` over `msg`. RSA: RSAVP1 with OpenSSL's PKCS#1 type-1 padding check on the cached
/// key, then the recovered `DigestInfo` compared byte for byte with the expected encoding
/// (encode-and-compare, no DER parsing of attacker data). ECDSA: ring, raw `r ‖ s`.
fn verify_signature(alg: XmlSignatureAlgorithm, key: &SignerKey, msg: &[u8], sig: &[u8]) -> bool {
    use ring::signature as rs;
    match key {
        SignerKey::Rsa(rsa) => {
            let (prefix, digest) = match alg {
                XmlSignatureAlgorithm::RsaSha256 => (&DIGEST_INFO_SHA256, &ring::digest::SHA256),
                XmlSignatureAlgorithm::RsaSha384 => (&DIGEST_INFO_SHA384, &ring::digest::SHA384),
                XmlSignatureAlgorithm::RsaSha512 => (&DIGEST_INFO_SHA512, &ring::digest::SHA512),
                _ => return false,
            };
            let k = rsa.size() as usize;
            if sig.len() != k {
                return false;
            }
            let mut out = [0u8; 1024];
            let Some(out) = out.get_mut(..k) else {
                return false;
            };
            let Ok(n) = rsa.public_decrypt(sig, out, openssl::rsa::Padding::PKCS1) else {
                return false;
            };
            let h = ring::digest::digest(digest, msg);
            n == prefix.len() + h.as_ref().len()
                && out[..prefix.len()] == prefix[..]
                && out[prefix.len()..n] == *h.as_ref()
        }
        SignerKey::P256(k) if alg == XmlSignatureAlgorithm::EcdsaSha256 => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, k)
                .verify(msg, sig)
                .is_ok()
        }
        SignerKey::P384(k) if alg == XmlSignatureAlgorithm::EcdsaSha384 => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_FIXED, k)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// Whether the `Issuer` text names the signer: the same attribute-value pairs as the
/// certificate subject, written most-specific first (RFC 4514) or most-general first.
fn issuer_names_signer(issuer: &str, signer: &SignerCertificate) -> bool {
    if issuer == signer.subject {
        return true;
    }
    let Ok(dn) = cps_pki::DistinguishedName::parse(issuer) else {
        return false;
    };
    if dn == *signer.subject_dn {
        return true;
    }
    let mut rev: Vec<_> = dn.rdns().to_vec();
    rev.reverse();
    rev.as_slice() == signer.subject_dn.rdns()
}

/// The values of an attribute.
fn values<'a, 'i>(attribute: Node<'a, 'i>, name: &str) -> Result<Kids<'a, 'i>, Refusal> {
    let vs = elements(attribute, name)?;
    if vs.is_empty() {
        return refuse(
            RefusalCode::MissingAttribute,
            format!("attribute {} has no value", shown(name)),
        );
    }
    if let Some(v) = vs.iter().find(|v| !is(*v, ns::SAML, "AttributeValue")) {
        return refuse(
            RefusalCode::Schema,
            format!(
                "unexpected {} in attribute {}",
                shown(&qname_of(v)),
                shown(name)
            ),
        );
    }
    Ok(vs)
}

fn single_text<'a>(
    attrs: &[(&str, Node<'a, '_>)],
    name: &str,
) -> Result<Option<Cow<'a, str>>, Refusal> {
    let Some((_, a)) = attrs.iter().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    let Some([v]) = values(*a, name)?.exactly() else {
        return refuse(
            RefusalCode::MalformedAttribute,
            format!("attribute {} must have exactly one value", shown(name)),
        );
    };
    simple_text(v, name, RefusalCode::MalformedAttribute).map(Some)
}

fn required_text(attrs: &[(&str, Node<'_, '_>)], name: &str) -> Result<String, Refusal> {
    single_text(attrs, name)?.map(Cow::into_owned).map_or_else(
        || {
            refuse(
                RefusalCode::MissingAttribute,
                format!("mandatory attribute {name} is missing"),
            )
        },
        Ok,
    )
}

/// An HL7 v3 CE element (`Role`, `PurposeOfUse`, …) inside an `AttributeValue`.
fn coded(value: Node<'_, '_>, element: &str, name: &str) -> Result<CodedValue, Refusal> {
    let bad = |why: String| Refusal {
        code: RefusalCode::MalformedAttribute,
        message: format!("attribute {}: {why}", shown(name)),
    };
    let kids = elements(value, name).map_err(|r| bad(r.message))?;
    let Some([ce]) = kids.exactly() else {
        return Err(bad(format!("expected one hl7:{element} element")));
    };
    if !is(ce, ns::HL7, element) {
        return Err(bad(format!(
            "expected hl7:{element}, found {}",
            shown(&qname_of(ce))
        )));
    }
    if let Some(t) = ce.attribute((ns::XSI, "type"))
        && t.rsplit(':').next() != Some("CE")
    {
        return Err(bad(format!("xsi:type '{}' is not CE", shown(t))));
    }
    let get = |a: &str| ce.attribute(a).map(str::to_owned);
    let v = CodedValue {
        code: get("code").ok_or_else(|| bad("no code".into()))?,
        code_system: get("codeSystem").ok_or_else(|| bad("no codeSystem".into()))?,
        code_system_name: get("codeSystemName"),
        display_name: get("displayName"),
    };
    v.check(name).map_err(bad)?;
    Ok(v)
}

fn read_claims(
    attrs: &[(&str, Node<'_, '_>)],
    cfg: &ValidatorConfig,
    name_id: IdNatPs,
    authn_instant: SystemTime,
    authn_context_class_ref: String,
) -> Result<VihfClaims, Refusal> {
    use RefusalCode as C;
    let malformed = |name: &str, why: String| Refusal {
        code: C::MalformedAttribute,
        message: format!("{name}: {why}"),
    };
    let vihf_version = required_text(attrs, attr::VIHF_VERSION)?;
    let subject_id = required_text(attrs, attr::SUBJECT_ID)?;
    let roles = match attrs.iter().find(|(n, _)| *n == attr::ROLE) {
        None => {
            return refuse(
                C::MissingAttribute,
                format!("mandatory attribute {} is missing", attr::ROLE),
            );
        }
        Some((_, a)) => values(*a, attr::ROLE)?
            .into_iter()
            .map(|v| coded(v, "Role", attr::ROLE))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let secteur_activite = required_text(attrs, attr::SECTEUR_ACTIVITE)?;
    let structure_id = required_text(attrs, attr::IDENTIFIANT_STRUCTURE)?;
    let mode = required_text(attrs, attr::AUTHENTIFICATION_MODE)?;
    let authentication_mode = AuthenticationMode::parse(&mode).ok_or_else(|| {
        malformed(
            attr::AUTHENTIFICATION_MODE,
            format!(
                "'{}' is not DIRECTE, INDIRECTE or INDIRECTE_RENFORCEE",
                shown(&mode)
            ),
        )
    })?;
    let patient = match single_text(attrs, attr::RESOURCE_ID)? {
        Some(cx) => {
            let p = PatientId::parse_cx(&cx).map_err(|e| malformed(attr::RESOURCE_ID, e))?;
            if !cfg.ins_authorities.contains(&p.authority) {
                return Err(malformed(
                    attr::RESOURCE_ID,
                    format!("assigning authority {} is not accepted", p.authority),
                ));
            }
            Some(p)
        }
        None if cfg.require_patient => {
            return refuse(
                C::MissingAttribute,
                format!("mandatory attribute {} is missing", attr::RESOURCE_ID),
            );
        }
        None => None,
    };
    let resource_urn = required_text(attrs, attr::RESSOURCE_URN)?;
    let pou = match attrs.iter().find(|(n, _)| *n == attr::PURPOSE_OF_USE) {
        None => {
            return refuse(
                C::MissingAttribute,
                format!("mandatory attribute {} is missing", attr::PURPOSE_OF_USE),
            );
        }
        Some((_, a)) => {
            let Some([v]) = values(*a, attr::PURPOSE_OF_USE)?.exactly() else {
                return Err(malformed(attr::PURPOSE_OF_USE, "exactly one value".into()));
            };
            coded(v, "PurposeOfUse", attr::PURPOSE_OF_USE)?
        }
    };
    if pou.code_system != ns::PURPOSE_OF_USE_CODE_SYSTEM {
        return Err(malformed(
            attr::PURPOSE_OF_USE,
            format!(
                "codeSystem {} is not {}",
                shown(&pou.code_system),
                ns::PURPOSE_OF_USE_CODE_SYSTEM
            ),
        ));
    }
    let justification = single_text(attrs, attr::BREAK_GLASS_JUSTIFICATION)?;
    let purpose_of_use = match pou.code.as_str() {
        "normal" => PurposeOfUse::Normal,
        "centre_15" => PurposeOfUse::Centre15,
        "bris_de_glace" => match justification.as_deref() {
            Some(j) if !j.trim().is_empty() => PurposeOfUse::BreakGlass {
                justification: j.to_owned(),
            },
            _ => {
                return refuse(
                    C::BreakGlassWithoutJustification,
                    format!(
                        "bris_de_glace access without a {} attribute",
                        attr::BREAK_GLASS_JUSTIFICATION
                    ),
                );
            }
        },
        other => {
            return Err(malformed(
                attr::PURPOSE_OF_USE,
                format!(
                    "'{}' is not normal, bris_de_glace or centre_15",
                    shown(other)
                ),
            ));
        }
    };
    if justification.is_some() && !purpose_of_use.is_break_glass() {
        return Err(malformed(
            attr::BREAK_GLASS_JUSTIFICATION,
            "a justification is only given with bris_de_glace".into(),
        ));
    }
    let confidentiality_code = match attrs.iter().find(|(n, _)| *n == attr::CONFIDENTIALITY_CODE) {
        None => None,
        Some((_, a)) => {
            let Some([v]) = values(*a, attr::CONFIDENTIALITY_CODE)?.exactly() else {
                return Err(malformed(
                    attr::CONFIDENTIALITY_CODE,
                    "exactly one value".into(),
                ));
            };
            Some(coded(v, "ConfidentialityCode", attr::CONFIDENTIALITY_CODE)?)
        }
    };
    let software = SoftwareInfo {
        name: required_text(attrs, attr::LPS_NOM)?,
        version: single_text(attrs, attr::LPS_VERSION)?.map(Cow::into_owned),
        id: single_text(attrs, attr::LPS_ID)?.map(Cow::into_owned),
        homologation: required_text(attrs, attr::LPS_HOMOLOGATION)?,
    };
    Ok(VihfClaims {
        vihf_version,
        name_id,
        subject_id,
        roles,
        secteur_activite,
        structure_id,
        authentication_mode,
        patient,
        resource_urn,
        purpose_of_use,
        confidentiality_code,
        software,
        authn_instant,
        authn_context_class_ref,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(xml: &str) -> Document<'_> {
        Document::parse(xml).unwrap()
    }

    #[test]
    fn element_children_are_walked_in_order_beyond_any_count() {
        let xml = format!(
            "<r> {} <!-- c --> </r>",
            (0..20).map(|i| format!("<e{i}/>")).collect::<String>()
        );
        let d = doc(&xml);
        let kids = elements(d.root_element(), "r").unwrap();
        assert_eq!(kids.len(), 20);
        let names: Vec<_> = kids
            .iter()
            .map(|n| n.tag_name().name().to_owned())
            .collect();
        assert_eq!(names, (0..20).map(|i| format!("e{i}")).collect::<Vec<_>>());
        assert_eq!(kids.into_iter().count(), 20);
        assert!(kids.exactly::<19>().is_none());
        assert_eq!(kids.exactly::<20>().unwrap()[19].tag_name().name(), "e19");
        let d = doc("<r><a/>x<b/></r>");
        assert_eq!(
            elements(d.root_element(), "r").err().unwrap().code,
            RefusalCode::Schema
        );
        let d = doc("<r> </r>");
        let none = elements(d.root_element(), "r").unwrap();
        assert!(none.is_empty() && none.exactly::<0>().is_none() && none.iter().next().is_none());
    }

    #[test]
    fn simple_text_borrows_one_text_node_and_joins_several() {
        let d = doc("<r><a>one</a><b>tw<!-- c -->o</b><c/><d>x<e/></d></r>");
        let k = elements(d.root_element(), "r")
            .unwrap()
            .exactly::<4>()
            .unwrap();
        let c = RefusalCode::Schema;
        assert!(matches!(
            simple_text(k[0], "a", c).unwrap(),
            Cow::Borrowed("one")
        ));
        assert_eq!(simple_text(k[1], "b", c).unwrap(), "two");
        assert_eq!(simple_text(k[2], "c", c).unwrap(), "");
        assert!(simple_text(k[3], "d", c).is_err());
    }

    #[test]
    fn base64_whitespace_is_removed_and_nothing_else() {
        assert!(matches!(
            compact_b64(Cow::Borrowed("QUJD")),
            Cow::Borrowed("QUJD")
        ));
        assert_eq!(compact_b64(Cow::Borrowed("QU\r\n J\tD ")), "QUJD");
        // Other control characters stay (and make the text invalid base64, as before).
        assert_eq!(compact_b64(Cow::Borrowed("QU\u{b}JD")), "QU\u{b}JD");
        let long = "QUJD".repeat(40);
        assert!(matches!(
            compact_b64(Cow::Borrowed(&long)),
            Cow::Borrowed(_)
        ));
        assert_eq!(compact_b64(Cow::Owned(format!("{long}\n"))), long);
    }
}
