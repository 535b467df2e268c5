//! Issuance: a VIHF assertion written directly in canonical form, digested, its `SignedInfo`
//! signed through [`cps_hsm::Signer`], and the `ds:Signature` spliced in right after `Issuer`.
//!
//! Because every element is emitted exactly as exclusive canonicalisation would write it
//! (namespace declarations where first used, attributes in canonical order, values escaped the
//! canonical way, no whitespace between elements), the bytes that are digested are the bytes of
//! the assertion minus its signature; tests check this by canonicalising the output again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use cps_hsm::{HsmError, SigFormat, Signer};

use crate::alg::{XmlDigestAlgorithm, XmlSignatureAlgorithm};
use crate::c14n::{escape_attr, escape_text};
use crate::model::{ClaimProblem, CodedValue, PurposeOfUse, VihfClaims};
use crate::ns::{self, attr};
use crate::time::write_datetime;

/// Which kind of assertion to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Flavour {
    /// The French VIHF: no `AudienceRestriction`, no `SubjectConfirmation`.
    #[default]
    Vihf,
    /// IHE XUA as profiled generically: an `AudienceRestriction` naming the service and a bearer
    /// `SubjectConfirmation`.
    IheGeneric {
        /// URI of the X-Service Provider.
        audience: String,
    },
}

/// Issuance settings.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// `NotOnOrAfter − NotBefore`.
    pub validity: Duration,
    /// How far `NotBefore` is set before the issue instant (room for validators' clocks).
    pub backdate: Duration,
    /// VIHF or IHE generic.
    pub flavour: Flavour,
    /// The signature algorithm; by default the one that fits the key (RSA-SHA256 or
    /// ECDSA-SHA256 / ECDSA-SHA384).
    pub signature: Option<XmlSignatureAlgorithm>,
    /// The `Issuer` text; by default the signer certificate's subject DN (RFC 4514).
    pub issuer_name: Option<String>,
    /// Accepted `VIHF_Version` values.
    pub vihf_versions: Vec<String>,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            validity: Duration::from_secs(3600),
            backdate: Duration::ZERO,
            flavour: Flavour::Vihf,
            signature: None,
            issuer_name: None,
            vihf_versions: vec!["3.0".into(), "4.0".into()],
        }
    }
}

/// Why an assertion was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A claim is malformed.
    #[error("claims refused: {0}")]
    Claims(String),
    /// `bris_de_glace` without a justification.
    #[error("break-glass access (bris_de_glace) requires a non-empty justification")]
    BreakGlassWithoutJustification,
    /// The signer certificate does not fit the signer or the configuration.
    #[error("signer certificate: {0}")]
    Certificate(String),
    /// The configuration is inconsistent.
    #[error("issuer configuration: {0}")]
    Config(String),
    /// The HSM refused or failed to sign.
    #[error("signing failed: {0}")]
    Signer(#[from] HsmError),
}

/// An assertion ID: `_` followed by 32 hex digits of caller-supplied randomness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssertionId(String);

impl AssertionId {
    /// The ID for 16 random bytes (the caller's RNG or the HSM's).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut s = String::with_capacity(33);
        s.push('_');
        for b in bytes {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        AssertionId(s)
    }

    /// The text of the ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A signed assertion.
#[derive(Debug, Clone)]
pub struct IssuedAssertion {
    /// `Assertion/@ID`.
    pub id: String,
    /// The `Issuer` text.
    pub issuer: String,
    /// `IssueInstant` (millisecond precision, as written).
    pub issue_instant: SystemTime,
    /// `Conditions/@NotBefore`.
    pub not_before: SystemTime,
    /// `Conditions/@NotOnOrAfter`.
    pub not_on_or_after: SystemTime,
    /// Whether the purpose of use is `bris_de_glace` (for its own audit event).
    pub break_glass: bool,
    /// The assertion, a standalone XML element (UTF-8, no XML declaration).
    pub xml: String,
}

impl IssuedAssertion {
    /// The assertion inside a SOAP 1.2 envelope's `wsse:Security` header, with an empty body.
    pub fn soap_envelope(&self) -> String {
        let mut s = String::with_capacity(self.xml.len() + 320);
        s.push_str("<soap:Envelope xmlns:soap=\"");
        s.push_str(ns::SOAP12);
        s.push_str("\"><soap:Header><wsse:Security xmlns:wsse=\"");
        s.push_str(ns::WSSE);
        s.push_str("\">");
        s.push_str(&self.xml);
        s.push_str("</wsse:Security></soap:Header><soap:Body></soap:Body></soap:Envelope>");
        s
    }
}

/// Issues assertions with one signer (the organisation seal key, in the HSM).
pub struct AssertionIssuer {
    signer: Arc<dyn Signer>,
    issuer_name: String,
    certs_b64: Vec<String>,
    signature: XmlSignatureAlgorithm,
    hsm_alg: cps_hsm::SignatureAlgorithm,
    config: IssuerConfig,
}

impl std::fmt::Debug for AssertionIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionIssuer")
            .field("signer", &self.signer.label())
            .field("issuer_name", &self.issuer_name)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl AssertionIssuer {
    /// An issuer signing with `signer`, whose certificate is `chain[0]` (DER); further
    /// certificates (intermediates) are added to `KeyInfo` after it.
    pub fn new(
        signer: Arc<dyn Signer>,
        chain: &[Vec<u8>],
        config: IssuerConfig,
    ) -> Result<Self, IssueError> {
        let leaf = chain
            .first()
            .ok_or_else(|| IssueError::Certificate("no certificate given".into()))?;
        let parsed =
            cps_pki::parse_certificate(leaf).map_err(|e| IssueError::Certificate(e.to_string()))?;
        if parsed.spki != signer.public_key_der() {
            return Err(IssueError::Certificate(format!(
                "the certificate of '{}' does not hold the public key of signer '{}'",
                parsed.subject,
                signer.label()
            )));
        }
        let signature = config
            .signature
            .unwrap_or_else(|| XmlSignatureAlgorithm::for_key(signer.key_algorithm()));
        let hsm_alg = signature.hsm_algorithm().ok_or_else(|| {
            IssueError::Config(format!(
                "{} cannot be produced by the HSM layer",
                signature.uri()
            ))
        })?;
        if !hsm_alg.fits(signer.key_algorithm())
            || (signature == XmlSignatureAlgorithm::EcdsaSha256
                && signer.key_algorithm() != cps_hsm::KeyAlgorithm::EcP256)
            || (signature == XmlSignatureAlgorithm::EcdsaSha384
                && signer.key_algorithm() != cps_hsm::KeyAlgorithm::EcP384)
        {
            return Err(IssueError::Config(format!(
                "{} does not fit a {} key",
                signature.uri(),
                signer.key_algorithm()
            )));
        }
        if config.validity.is_zero() {
            return Err(IssueError::Config("validity must be positive".into()));
        }
        if let Flavour::IheGeneric { audience } = &config.flavour {
            crate::model::check_text(audience, "audience", 1024).map_err(IssueError::Config)?;
        }
        let issuer_name = match &config.issuer_name {
            Some(n) => {
                crate::model::check_text(n, "issuer name", 1024).map_err(IssueError::Config)?;
                n.clone()
            }
            None => parsed.subject.to_string(),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(AssertionIssuer {
            signer,
            issuer_name,
            certs_b64: chain.iter().map(|c| b64.encode(c)).collect(),
            signature,
            hsm_alg,
            config,
        })
    }

    /// The `Issuer` text written into assertions.
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    /// The signature algorithm in use.
    pub fn signature_algorithm(&self) -> XmlSignatureAlgorithm {
        self.signature
    }

    /// Issue and sign an assertion for `claims` at `now`, with the ID `id`.
    pub fn issue(
        &self,
        claims: &VihfClaims,
        now: SystemTime,
        id: &AssertionId,
    ) -> Result<IssuedAssertion, IssueError> {
        let versions: Vec<&str> = self
            .config
            .vihf_versions
            .iter()
            .map(String::as_str)
            .collect();
        claims.check(&versions).map_err(|p| match p {
            ClaimProblem::BreakGlassWithoutJustification => {
                IssueError::BreakGlassWithoutJustification
            }
            ClaimProblem::Malformed(_, why) => IssueError::Claims(why),
        })?;
        // Times are written with millisecond precision; keep the returned values equal to them.
        let now = crate::time::from_millis(crate::time::to_millis(now));
        let not_before = now
            .checked_sub(self.config.backdate)
            .ok_or_else(|| IssueError::Config("backdate out of range".into()))?;
        let not_on_or_after = not_before
            .checked_add(self.config.validity)
            .ok_or_else(|| IssueError::Config("validity out of range".into()))?;
        let authn_instant = crate::time::from_millis(crate::time::to_millis(claims.authn_instant));

        // 1. The assertion without its signature, in canonical form.
        let mut w = Writer(Vec::with_capacity(4096));
        w.raw("<saml:Assertion xmlns:saml=\"");
        w.raw(ns::SAML);
        w.raw("\" ID=\"");
        w.attr(id.as_str());
        w.raw("\" IssueInstant=\"");
        w.time(now);
        w.raw("\" Version=\"2.0\"><saml:Issuer Format=\"");
        w.raw(ns::NAMEID_X509_SUBJECT);
        w.raw("\">");
        w.text(&self.issuer_name);
        w.raw("</saml:Issuer>");
        let split = w.0.len();
        w.raw("<saml:Subject><saml:NameID>");
        w.text(claims.name_id.as_str());
        w.raw("</saml:NameID>");
        if let Flavour::IheGeneric { .. } = self.config.flavour {
            w.raw("<saml:SubjectConfirmation Method=\"");
            w.raw(ns::CM_BEARER);
            w.raw("\"></saml:SubjectConfirmation>");
        }
        w.raw("</saml:Subject><saml:Conditions NotBefore=\"");
        w.time(not_before);
        w.raw("\" NotOnOrAfter=\"");
        w.time(not_on_or_after);
        w.raw("\">");
        if let Flavour::IheGeneric { audience } = &self.config.flavour {
            w.raw("<saml:AudienceRestriction><saml:Audience>");
            w.text(audience);
            w.raw("</saml:Audience></saml:AudienceRestriction>");
        }
        w.raw("</saml:Conditions><saml:AuthnStatement AuthnInstant=\"");
        w.time(authn_instant);
        w.raw("\"><saml:AuthnContext><saml:AuthnContextClassRef>");
        w.text(&claims.authn_context_class_ref);
        w.raw("</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement>");
        w.text_attribute(attr::VIHF_VERSION, &claims.vihf_version);
        w.text_attribute(attr::SUBJECT_ID, &claims.subject_id);
        w.start_attribute(attr::ROLE);
        for role in &claims.roles {
            w.coded_value("Role", role);
        }
        w.end_attribute();
        w.text_attribute(attr::SECTEUR_ACTIVITE, &claims.secteur_activite);
        w.text_attribute(attr::IDENTIFIANT_STRUCTURE, &claims.structure_id);
        w.text_attribute(
            attr::AUTHENTIFICATION_MODE,
            claims.authentication_mode.as_str(),
        );
        if let Some(p) = &claims.patient {
            w.text_attribute(attr::RESOURCE_ID, &p.to_cx());
        }
        w.text_attribute(attr::RESSOURCE_URN, &claims.resource_urn);
        w.start_attribute(attr::PURPOSE_OF_USE);
        w.coded_value(
            "PurposeOfUse",
            &CodedValue {
                code: claims.purpose_of_use.code().into(),
                code_system: ns::PURPOSE_OF_USE_CODE_SYSTEM.into(),
                code_system_name: Some("mode acces VIHF 1.0".into()),
                display_name: Some(claims.purpose_of_use.display_name().into()),
            },
        );
        w.end_attribute();
        if let PurposeOfUse::BreakGlass { justification } = &claims.purpose_of_use {
            w.text_attribute(attr::BREAK_GLASS_JUSTIFICATION, justification);
        }
        if let Some(c) = &claims.confidentiality_code {
            w.start_attribute(attr::CONFIDENTIALITY_CODE);
            w.coded_value("ConfidentialityCode", c);
            w.end_attribute();
        }
        if let Some(v) = &claims.software.id {
            w.text_attribute(attr::LPS_ID, v);
        }
        w.text_attribute(attr::LPS_NOM, &claims.software.name);
        if let Some(v) = &claims.software.version {
            w.text_attribute(attr::LPS_VERSION, v);
        }
        w.text_attribute(attr::LPS_HOMOLOGATION, &claims.software.homologation);
        w.raw("</saml:AttributeStatement></saml:Assertion>");

        // 2. Digest, SignedInfo, signature.
        let digest_alg = XmlDigestAlgorithm::Sha256;
        let digest = ring::digest::digest(digest_alg.ring(), &w.0);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut si = Writer(Vec::with_capacity(1024));
        si.raw("<ds:SignedInfo xmlns:ds=\"");
        si.raw(ns::DS);
        let si_body_start = si.0.len() + 2;
        si.raw("\"><ds:CanonicalizationMethod Algorithm=\"");
        si.raw(ns::EXC_C14N);
        si.raw("\"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm=\"");
        si.raw(self.signature.uri());
        si.raw("\"></ds:SignatureMethod><ds:Reference URI=\"#");
        si.attr(id.as_str());
        si.raw("\"><ds:Transforms><ds:Transform Algorithm=\"");
        si.raw(ns::ENVELOPED);
        si.raw("\"></ds:Transform><ds:Transform Algorithm=\"");
        si.raw(ns::EXC_C14N);
        si.raw("\"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm=\"");
        si.raw(digest_alg.uri());
        si.raw("\"></ds:DigestMethod><ds:DigestValue>");
        si.raw(&b64.encode(digest.as_ref()));
        si.raw("</ds:DigestValue></ds:Reference></ds:SignedInfo>");
        let signature = self.signer.sign(self.hsm_alg, &si.0, SigFormat::Raw)?;

        // 3. The document: assertion start + Issuer, Signature, the rest.
        let mut sig = Writer(Vec::with_capacity(si.0.len() + 2048));
        sig.raw("<ds:Signature xmlns:ds=\"");
        sig.raw(ns::DS);
        sig.raw("\"><ds:SignedInfo>");
        sig.0.extend_from_slice(&si.0[si_body_start..]);
        sig.raw("<ds:SignatureValue>");
        sig.raw(&b64.encode(&signature));
        sig.raw("</ds:SignatureValue><ds:KeyInfo><ds:X509Data>");
        for c in &self.certs_b64 {
            sig.raw("<ds:X509Certificate>");
            sig.raw(c);
            sig.raw("</ds:X509Certificate>");
        }
        sig.raw("</ds:X509Data></ds:KeyInfo></ds:Signature>");
        let mut doc = Vec::with_capacity(w.0.len() + sig.0.len());
        doc.extend_from_slice(&w.0[..split]);
        doc.extend_from_slice(&sig.0);
        doc.extend_from_slice(&w.0[split..]);
        let xml = String::from_utf8(doc)
            .map_err(|_| IssueError::Claims("assertion is not UTF-8".into()))?;
        Ok(IssuedAssertion {
            id: id.as_str().to_owned(),
            issuer: self.issuer_name.clone(),
            issue_instant: now,
            not_before,
            not_on_or_after,
            break_glass: claims.purpose_of_use.is_break_glass(),
            xml,
        })
    }
}

/// Canonical-form writer.
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }
    fn text(&mut self, s: &str) {
        escape_text(s, &mut self.0);
    }
    fn attr(&mut self, s: &str) {
        escape_attr(s, &mut self.0);
    }
    fn time(&mut self, t: SystemTime) {
        let mut s = String::with_capacity(24);
        write_datetime(t, &mut s);
        self.raw(&s);
    }
    fn start_attribute(&mut self, name: &str) {
        self.raw("<saml:Attribute Name=\"");
        self.attr(name);
        self.raw("\">");
    }
    fn end_attribute(&mut self) {
        self.raw("</saml:Attribute>");
    }
    fn text_attribute(&mut self, name: &str, value: &str) {
        self.start_attribute(name);
        self.raw("<saml:AttributeValue>");
        self.text(value);
        self.raw("</saml:AttributeValue>");
        self.end_attribute();
    }
    /// `<saml:AttributeValue><E xmlns="urn:hl7-org:v3" xmlns:xsi=… code=… … xsi:type="CE"></E>`.
    fn coded_value(&mut self, element: &str, v: &CodedValue) {
        self.raw("<saml:AttributeValue><");
        self.raw(element);
        self.raw(" xmlns=\"");
        self.raw(ns::HL7);
        self.raw("\" xmlns:xsi=\"");
        self.raw(ns::XSI);
        self.raw("\" code=\"");
        self.attr(&v.code);
        self.raw("\" codeSystem=\"");
        self.attr(&v.code_system);
        if let Some(n) = &v.code_system_name {
            self.raw("\" codeSystemName=\"");
            self.attr(n);
        }
        if let Some(n) = &v.display_name {
            self.raw("\" displayName=\"");
            self.attr(n);
        }
        self.raw("\" xsi:type=\"CE\"></");
        self.raw(element);
        self.raw("></saml:AttributeValue>");
    }
}
