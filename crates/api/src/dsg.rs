//! Document signatures (IHE DSG): the bodies of `/api/v1/dsg/sign` and `/api/v1/dsg/verify`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A document to sign, or to check a signature against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DsgDocument {
    /// The document's uniqueId (XDS `DocumentEntry.uniqueId`): the manifest reference's URI.
    pub unique_id: String,
    /// The document's MIME type (`DataObjectFormat`); default `text/xml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The document, base64. Required for an enveloping signature and for verification against
    /// the document itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Its SHA-256, hex: a detached signature or a verification without sending the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /api/v1/dsg/sign`: have a structure's seal sign documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DsgSignRequest {
    /// The structure whose seal signs (struct_IdNat); the caller must be one of its signers.
    pub structure_id: String,
    /// `detached` (a manifest over the documents, default) or `enveloping` (one document inside
    /// the signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The commitment type (ASTM E1762): `author`, `co-author`, `co-participant`,
    /// `transcriptionist`, `verification`, `validation`, `consent`, `signature-witness`,
    /// `event-witness`, `identity-witness`, `consent-witness`, `interpreter`, `review`, `source`,
    /// `addendum`, `modification`, `administrative`, `timestamp`, or its OID.
    pub purpose: String,
    /// The submission set's uniqueId, signed with its documents (detached only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_set: Option<String>,
    pub documents: Vec<DsgDocument>,
}

/// A signature made by the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DsgSignature {
    /// The XAdES signature (XML, UTF-8).
    pub signature: String,
    /// The seal certificate's subject.
    pub signer: String,
    /// The timestamp's time (Unix seconds).
    pub signing_time: i64,
    /// `detached` or `enveloping`.
    pub policy: String,
    /// The commitment type's OID.
    pub purpose: String,
}

/// `POST /api/v1/dsg/verify`: check a signature (and the documents it signs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DsgVerifyRequest {
    /// The XAdES signature (XML, UTF-8).
    pub signature: String,
    /// The signed documents (detached signatures: each manifest reference is checked against
    /// the document with its uniqueId).
    #[serde(default)]
    pub documents: Vec<DsgDocument>,
    /// Also ask the CA for the signer certificate's status now (a revocation dated before the
    /// signing time refuses the signature even if the embedded answer said good).
    #[serde(default)]
    pub live_status: bool,
}

/// One signed document's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DsgDocumentResult {
    pub unique_id: String,
    /// The reference's digest matches the document supplied.
    pub valid: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The verdict on a signature: valid with who, when and why, or refused with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DsgVerification {
    pub valid: bool,
    /// Stable refusal code (`document_digest`, `signed_properties_not_bound`, `revoked`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why the signature is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The signer certificate's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signing time proven by the timestamp (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_time: Option<i64>,
    /// The `SigningTime` the signer claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_signing_time: Option<i64>,
    /// The commitment type's OID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `detached` or `enveloping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default)]
    pub documents: Vec<DsgDocumentResult>,
}
