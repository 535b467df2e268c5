//! Building an IHE DSG XAdES signature.
//!
//! The signature is written as text with fixed prefixes (`ds`, `xades`) declared once where
//! first used, without whitespace between elements; every digest is taken over the canonical
//! form (Canonical XML 1.1) that our canonicaliser computes from the parsed result, so what is
//! digested is exactly what a verifier will canonicalise.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cps_hsm::{SigFormat, Signer};
use cps_xua::XmlSignatureAlgorithm;
use cps_xua::c14n::canonicalize_11;

use crate::cert;
use crate::ns;
use crate::purpose::{Policy, Purpose};
use crate::traits::{BoxError, TimestampSource};

/// The signing key and its certificates: the signer's first, then its issuers (the chain is
/// also written in `CertificateValues`).
pub struct Seal<'a> {
    /// The key (an HSM seal, a card's signature key, or a software key in tests).
    pub signer: &'a dyn Signer,
    /// DER certificates, the signer's first.
    pub chain: &'a [Vec<u8>],
}

/// How a document's content is given to the signer.
#[derive(Debug, Clone, Copy)]
pub enum DocumentDigest<'a> {
    /// The document itself (hashed here).
    Bytes(&'a [u8]),
    /// The SHA-256 digest of the document, computed by the caller.
    Sha256(&'a [u8; 32]),
}

/// One document of a detached signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedDocument<'a> {
    /// The document's `uniqueId`: the manifest reference URI.
    pub unique_id: &'a str,
    /// Its content or digest.
    pub digest: DocumentDigest<'a>,
    /// Its MIME type (for `DataObjectFormat`).
    pub mime_type: &'a str,
}

/// What is signed.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// A manifest over documents referenced by unique ID (policy `…:detached:2014`), with the
    /// submission set's unique ID when the signature is over a submission set.
    Detached {
        /// The SubmissionSet `uniqueId` (a manifest reference with the one-zero-byte digest the
        /// profile uses for it), if any.
        submission_set: Option<&'a str>,
        /// The documents (at least one).
        documents: &'a [SignedDocument<'a>],
    },
    /// One document, base64 inside the signature (policy `…:enveloping:2014`).
    Enveloping {
        /// The document.
        document: &'a [u8],
        /// Its MIME type.
        mime_type: &'a str,
    },
}

/// A signature to make.
pub struct SignRequest<'a> {
    /// What is signed.
    pub content: Content<'a>,
    /// The commitment type.
    pub purpose: Purpose,
    /// The claimed signing time (Unix seconds): the caller's trusted `now`.
    pub signing_time: i64,
    /// The signature's `Id` (the caller's randomness; letters, digits, `_`, `-`, `.`, not
    /// starting with a digit, `-` or `.`); the other IDs derive from it.
    pub id: &'a str,
    /// OCSP responses (DER) for the signer's certificate and its issuers, for
    /// `RevocationValues`.
    pub ocsp_responses: &'a [Vec<u8>],
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request is not usable (empty manifest, bad ID, bad unique ID...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The signer's certificate could not be read.
    #[error("signer certificate: {0}")]
    Certificate(String),
    /// The key refused to sign or has no XML-DSig algorithm.
    #[error("signing failed: {0}")]
    Signer(String),
    /// The time-stamping authority did not answer a token.
    #[error("time-stamp: {0}")]
    Timestamp(BoxError),
    /// The signature we wrote could not be canonicalised (a defect).
    #[error("canonicalisation: {0}")]
    Internal(String),
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            '\n' => out.push_str("&#xA;"),
            '\t' => out.push_str("&#x9;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && id.len() <= 128
}

/// RFC 3339 UTC, seconds.
pub(crate) fn format_time(t: i64) -> Result<String, String> {
    let dt = time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| e.to_string())?;
    dt.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

fn digest_method() -> String {
    format!(
        r#"<ds:DigestMethod Algorithm="{}"/>"#,
        cps_xua::ns::digest::SHA256
    )
}

/// Sign `req` with `seal`, stamping the signature value with `tsa`; the signature document
/// (UTF-8, root `ds:Signature`).
pub fn sign(
    seal: &Seal<'_>,
    req: &SignRequest<'_>,
    tsa: &dyn TimestampSource,
) -> Result<Vec<u8>, SignError> {
    let id = req.id;
    if !valid_id(id) || id == ns::MANIFEST_ID {
        return Err(SignError::Invalid(format!("signature id '{id}'")));
    }
    let signer_cert = seal
        .chain
        .first()
        .ok_or_else(|| SignError::Certificate("no signer certificate".into()))?;
    let info = cert::info(signer_cert).map_err(SignError::Certificate)?;
    if info.spki != seal.signer.public_key_der() {
        return Err(SignError::Certificate(
            "the certificate does not certify the signing key".into(),
        ));
    }
    let alg = XmlSignatureAlgorithm::for_key(seal.signer.key_algorithm());
    let hsm_alg = alg
        .hsm_algorithm()
        .ok_or_else(|| SignError::Signer(format!("{} has no HSM operation", alg.uri())))?;

    let sp_id = format!("{id}-SignedProperties");
    let (policy, objects, formats, first_ref) = match req.content {
        Content::Detached {
            submission_set,
            documents,
        } => {
            if documents.is_empty() {
                return Err(SignError::Invalid("a manifest needs a document".into()));
            }
            let mut refs = String::new();
            let mut formats = String::new();
            let mut seen: Vec<&str> = Vec::new();
            if let Some(ss) = submission_set {
                check_unique_id(ss)?;
                seen.push(ss);
                refs.push_str(&format!(
                    r#"<ds:Reference URI="{}">{}<ds:DigestValue>AA==</ds:DigestValue></ds:Reference>"#,
                    escape(ss),
                    digest_method()
                ));
            }
            for (i, d) in documents.iter().enumerate() {
                check_unique_id(d.unique_id)?;
                if seen.contains(&d.unique_id) {
                    return Err(SignError::Invalid(format!(
                        "unique ID '{}' twice",
                        d.unique_id
                    )));
                }
                seen.push(d.unique_id);
                let digest = match d.digest {
                    DocumentDigest::Bytes(b) => cert::sha256(b),
                    DocumentDigest::Sha256(h) => h.to_vec(),
                };
                let rid = format!("{id}-doc-{i}");
                refs.push_str(&format!(
                    r#"<ds:Reference Id="{rid}" URI="{}">{}<ds:DigestValue>{}</ds:DigestValue></ds:Reference>"#,
                    escape(d.unique_id),
                    digest_method(),
                    B64.encode(digest)
                ));
                formats.push_str(&format!(
                    r##"<xades:DataObjectFormat ObjectReference="#{rid}"><xades:MimeType>{}</xades:MimeType></xades:DataObjectFormat>"##,
                    escape(d.mime_type)
                ));
            }
            let manifest = format!(
                r#"<ds:Object><ds:Manifest Id="{}">{refs}</ds:Manifest></ds:Object>"#,
                ns::MANIFEST_ID
            );
            let first = format!(
                r##"<ds:Reference Id="{id}-ref-manifest" Type="{}" URI="#{}"><ds:Transforms><ds:Transform Algorithm="{}"/></ds:Transforms>{}<ds:DigestValue>@MANIFEST@</ds:DigestValue></ds:Reference>"##,
                ns::TYPE_MANIFEST,
                ns::MANIFEST_ID,
                ns::C14N11_WITH_COMMENTS,
                digest_method()
            );
            (Policy::Detached, manifest, formats, first)
        }
        Content::Enveloping {
            document,
            mime_type,
        } => {
            let oid = format!("{id}-Object");
            let object = format!(
                r#"<ds:Object Id="{oid}" MimeType="{}" Encoding="{}">{}</ds:Object>"#,
                escape(mime_type),
                ns::BASE64,
                B64.encode(document)
            );
            let rid = format!("{id}-ref-object");
            let formats = format!(
                r##"<xades:DataObjectFormat ObjectReference="#{rid}"><xades:MimeType>{}</xades:MimeType><xades:Encoding>{}</xades:Encoding></xades:DataObjectFormat>"##,
                escape(mime_type),
                ns::BASE64
            );
            let first = format!(
                r##"<ds:Reference Id="{rid}" URI="#{oid}"><ds:Transforms><ds:Transform Algorithm="{}"/></ds:Transforms>{}<ds:DigestValue>{}</ds:DigestValue></ds:Reference>"##,
                ns::BASE64,
                digest_method(),
                B64.encode(cert::sha256(document))
            );
            (Policy::Enveloping, object, formats, first)
        }
    };

    let signing_time = format_time(req.signing_time).map_err(SignError::Invalid)?;
    let signed_properties = format!(
        concat!(
            r#"<xades:SignedProperties Id="{sp_id}"><xades:SignedSignatureProperties>"#,
            r#"<xades:SigningTime>{time}</xades:SigningTime>"#,
            r#"<xades:SigningCertificateV2><xades:Cert><xades:CertDigest>{dm}<ds:DigestValue>{cert_digest}</ds:DigestValue></xades:CertDigest>"#,
            r#"<xades:IssuerSerialV2>{issuer_serial}</xades:IssuerSerialV2></xades:Cert></xades:SigningCertificateV2>"#,
            r#"<xades:SignaturePolicyIdentifier><xades:SignaturePolicyId><xades:SigPolicyId><xades:Identifier>{policy}</xades:Identifier></xades:SigPolicyId>"#,
            r#"<xades:SigPolicyHash>{dm}<ds:DigestValue>{policy_hash}</ds:DigestValue></xades:SigPolicyHash></xades:SignaturePolicyId></xades:SignaturePolicyIdentifier>"#,
            r#"</xades:SignedSignatureProperties><xades:SignedDataObjectProperties>{formats}"#,
            r#"<xades:CommitmentTypeIndication><xades:CommitmentTypeId><xades:Identifier>{purpose}</xades:Identifier><xades:Description>{purpose_name}</xades:Description></xades:CommitmentTypeId>"#,
            r#"<xades:AllSignedDataObjects/></xades:CommitmentTypeIndication></xades:SignedDataObjectProperties></xades:SignedProperties>"#
        ),
        sp_id = sp_id,
        time = signing_time,
        dm = digest_method(),
        cert_digest = B64.encode(cert::sha256(signer_cert)),
        issuer_serial = B64.encode(&info.issuer_serial),
        policy = policy.urn(),
        policy_hash = B64.encode(policy.hash()),
        formats = formats,
        purpose = req.purpose.urn(),
        purpose_name = escape(req.purpose.name()),
    );

    let sp_ref = format!(
        r##"<ds:Reference Type="{}" URI="#{sp_id}"><ds:Transforms><ds:Transform Algorithm="{}"/></ds:Transforms>{}<ds:DigestValue>@SP@</ds:DigestValue></ds:Reference>"##,
        ns::TYPE_SIGNED_PROPERTIES,
        ns::C14N11_WITH_COMMENTS,
        digest_method()
    );
    let signed_info = format!(
        r#"<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{}"/><ds:SignatureMethod Algorithm="{}"/>{first_ref}{sp_ref}</ds:SignedInfo>"#,
        ns::C14N11_WITH_COMMENTS,
        alg.uri()
    );
    let mut key_info = String::from("<ds:KeyInfo><ds:X509Data>");
    for c in seal.chain {
        key_info.push_str(&format!(
            "<ds:X509Certificate>{}</ds:X509Certificate>",
            B64.encode(c)
        ));
    }
    key_info.push_str("</ds:X509Data></ds:KeyInfo>");
    let qp_open = format!(
        r##"<ds:Object><xades:QualifyingProperties xmlns:xades="{}" Target="#{id}">"##,
        ns::XADES
    );
    let mut doc = format!(
        r#"<ds:Signature xmlns:ds="{}" Id="{id}">{signed_info}<ds:SignatureValue Id="{id}-SignatureValue">@SV@</ds:SignatureValue>{key_info}{objects}{qp_open}{signed_properties}@UP@</xades:QualifyingProperties></ds:Object></ds:Signature>"#,
        ns::DS
    );

    // Digests of the manifest and of the signed properties, from the parsed document.
    let (manifest_digest, sp_digest) = {
        let d = parse(&doc)?;
        let sp = by_id(&d, &sp_id)?;
        let sp_digest = c14n_digest(sp)?;
        let m = match policy {
            Policy::Detached => Some(c14n_digest(by_id(&d, ns::MANIFEST_ID)?)?),
            Policy::Enveloping => None,
        };
        (m, sp_digest)
    };
    if let Some(m) = manifest_digest {
        doc = doc.replacen("@MANIFEST@", &B64.encode(m), 1);
    }
    doc = doc.replacen("@SP@", &B64.encode(sp_digest), 1);

    // The signature over the canonical SignedInfo.
    let si_c14n = {
        let d = parse(&doc)?;
        let si = d
            .root_element()
            .first_element_child()
            .ok_or_else(|| SignError::Internal("no SignedInfo".into()))?;
        let mut out = Vec::new();
        canonicalize_11(si, None, true, &mut out).map_err(|e| SignError::Internal(e.0))?;
        out
    };
    let format = if alg.is_ecdsa() {
        SigFormat::Raw
    } else {
        SigFormat::Der
    };
    let value = seal
        .signer
        .sign(hsm_alg, &si_c14n, format)
        .map_err(|e| SignError::Signer(e.to_string()))?;
    doc = doc.replacen("@SV@", &B64.encode(value), 1);

    // The signature time-stamp over the canonical SignatureValue, then the long-term values.
    let sv_c14n = {
        let d = parse(&doc)?;
        let sv = by_id(&d, &format!("{id}-SignatureValue"))?;
        let mut out = Vec::new();
        canonicalize_11(sv, None, false, &mut out).map_err(|e| SignError::Internal(e.0))?;
        out
    };
    let token = tsa.timestamp(&sv_c14n).map_err(SignError::Timestamp)?;
    let mut unsigned = format!(
        r#"<xades:UnsignedProperties><xades:UnsignedSignatureProperties><xades:SignatureTimeStamp Id="{id}-SignatureTimeStamp"><ds:CanonicalizationMethod Algorithm="{}"/><xades:EncapsulatedTimeStamp>{}</xades:EncapsulatedTimeStamp></xades:SignatureTimeStamp><xades:CertificateValues>"#,
        ns::C14N11,
        B64.encode(token)
    );
    for c in seal.chain {
        unsigned.push_str(&format!(
            "<xades:EncapsulatedX509Certificate>{}</xades:EncapsulatedX509Certificate>",
            B64.encode(c)
        ));
    }
    unsigned.push_str("</xades:CertificateValues>");
    if !req.ocsp_responses.is_empty() {
        unsigned.push_str("<xades:RevocationValues><xades:OCSPValues>");
        for r in req.ocsp_responses {
            unsigned.push_str(&format!(
                "<xades:EncapsulatedOCSPValue>{}</xades:EncapsulatedOCSPValue>",
                B64.encode(r)
            ));
        }
        unsigned.push_str("</xades:OCSPValues></xades:RevocationValues>");
    }
    unsigned.push_str("</xades:UnsignedSignatureProperties></xades:UnsignedProperties>");
    doc = doc.replacen("@UP@", &unsigned, 1);
    Ok(doc.into_bytes())
}

fn check_unique_id(u: &str) -> Result<(), SignError> {
    if u.is_empty() || u.starts_with('#') || u.len() > 256 || u.chars().any(|c| c.is_control()) {
        return Err(SignError::Invalid(format!("unique ID '{u}'")));
    }
    Ok(())
}

fn parse(doc: &str) -> Result<roxmltree::Document<'_>, SignError> {
    roxmltree::Document::parse(doc).map_err(|e| SignError::Internal(e.to_string()))
}

fn by_id<'a, 'i>(
    d: &'a roxmltree::Document<'i>,
    id: &str,
) -> Result<roxmltree::Node<'a, 'i>, SignError> {
    d.descendants()
        .find(|n| n.attribute("Id") == Some(id))
        .ok_or_else(|| SignError::Internal(format!("no element {id}")))
}

fn c14n_digest(n: roxmltree::Node<'_, '_>) -> Result<Vec<u8>, SignError> {
    let mut out = Vec::new();
    canonicalize_11(n, None, false, &mut out).map_err(|e| SignError::Internal(e.0))?;
    Ok(cert::sha256(&out))
}
