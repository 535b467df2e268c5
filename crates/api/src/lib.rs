//! The request and answer bodies of the cps-trust HTTPS API (`/api/v1`), shared by the appliance
//! (which serves them and describes them in its OpenAPI document) and by its clients (the
//! `cps-trust` command).
//!
//! Invariant: these types are the wire format. Each serialises exactly as the appliance has
//! always answered (field names, optional fields as `null`, tagged enums); a change here is a
//! change of the API. Only serde and the schema derive live here: no HTTP, no runtime.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod dsg;
mod registry;
pub use dsg::*;
pub use registry::*;

/// The error body of every refusal of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// A refused card login (401): a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginRefusalBody {
    /// What went wrong, for a person.
    pub error: String,
    /// Stable refusal code (`bad_signature`, `challenge_expired`, `context_mismatch`...).
    pub code: String,
}

/// A refused assertion (422): `valid` is false, with the refusal code and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidationRefusal {
    /// Always false.
    pub valid: bool,
    /// Stable refusal code of the validator.
    pub code: String,
    /// Why the assertion is refused.
    pub error: String,
}

// --- Operators and certificates.

/// An operator: name and roles (`ca-operator`, `ra-officer`, `auditor`, `service`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperatorView {
    pub name: String,
    pub roles: Vec<String>,
}

/// `POST /api/v1/operators`: a new operator credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    pub name: String,
    pub roles: Vec<String>,
    /// PKCS#10, PEM: the operator keeps the private key.
    pub csr: String,
}

/// A certificate as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// Issuing CA id.
    pub ca: String,
    /// Serial, upper-case hex.
    pub serial: String,
    pub subject: String,
    pub profile: String,
    pub holder: Option<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// `valid`, `on-hold` or `revoked`.
    pub status: String,
    /// Unix seconds.
    pub revocation_time: Option<i64>,
    /// RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// The certificate, PEM.
    pub pem: String,
}

/// A page of certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    pub certificates: Vec<CertificateView>,
    /// Cursor of the next page (`after`), `<ca>:<serial hex>`.
    pub next: Option<String>,
}

/// `POST .../revoke`: revoke, hold or release a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// RFC 5280 reason name: `keyCompromise`, `superseded`, `certificateHold`, `removeFromCRL`...
    pub reason: String,
    /// Unix seconds when the key is known or suspected to have been compromised.
    pub invalidity_date: Option<i64>,
}

/// A health professional, as a certificate subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonSubject {
    pub idnat_ps: String,
    pub surname: String,
    pub given_name: String,
    /// TRE_G15 code, e.g. `10`.
    pub profession_code: String,
}

/// A structure and the application or host a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationSubject {
    /// Department, e.g. `Seine-Maritime (76)`.
    pub state: String,
    /// Raison sociale.
    pub name: String,
    /// struct_IdNat, e.g. `318751275100020`.
    pub structure_id: String,
    /// Application name, or the FQDN for TLS server certificates.
    pub common_name: String,
}

/// Who a certificate is for (the profile says which kind it needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectRequest {
    Person(PersonSubject),
    Organisation(OrganisationSubject),
}

/// `POST /api/v1/certificates`: raw issuance from a CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub profile: String,
    /// PKCS#10, PEM.
    pub csr: String,
    pub subject: SubjectRequest,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ip: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub email: Vec<String>,
    /// Registry identity of the holder (not in a reserved namespace).
    pub holder: String,
}

// --- ATNA secure nodes.

/// A registered secure node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// Node name: its FQDN or IP address (the certificate's CN).
    pub name: String,
    /// Structure (struct_IdNat) operating the node.
    pub structure_id: String,
    /// `active` or `removed`.
    pub status: String,
    /// Its certificates, `<ca>:<serial hex>`, oldest first.
    pub certificates: Vec<String>,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Who enrolled it.
    pub enrolled_by: String,
}

/// `POST /api/v1/nodes`: enrol a secure node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeEnrollRequest {
    /// FQDN or IP address of the node.
    pub name: String,
    /// PKCS#10, PEM or DER.
    pub csr: String,
    /// The structure operating the node.
    pub organisation: OrganisationSubject,
    /// Further DNS names.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP addresses.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ip: Vec<std::net::IpAddr>,
}

/// A node and its newest certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeEnrolled {
    pub node: NodeView,
    pub certificate: CertificateView,
}

// --- The audit trail.

/// A page of the audit record repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvents {
    pub events: Vec<AuditEvent>,
    /// Pass back as `cursor` for the next page.
    pub next_cursor: Option<u64>,
}

/// One record of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Sequence number in the log.
    pub seq: u64,
    /// When the repository received it, Unix seconds.
    pub received: i64,
    /// How it arrived (`tls`, `udp`, `local`).
    pub transport: String,
    /// Subject of the sending node's certificate (empty for UDP and local records).
    pub node: String,
    /// The peer's socket address.
    pub peer: String,
    /// The DICOM audit message, when the record is one.
    pub event: Option<AuditEventSummary>,
    /// Why the record is not a readable RFC 5424 DICOM audit message.
    pub parse_error: Option<String>,
    /// The message as received.
    pub message: String,
}

/// The main fields of a DICOM audit message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventSummary {
    /// EventID code, e.g. `110114`.
    pub event_id: String,
    pub event_name: String,
    /// EventTypeCode codes.
    pub event_types: Vec<String>,
    /// EventActionCode.
    pub action: Option<String>,
    /// EventOutcomeIndicator: 0, 4, 8, 12.
    pub outcome: Option<u8>,
    /// EventDateTime, Unix seconds.
    pub time: Option<i64>,
    pub users: Vec<String>,
    pub patients: Vec<String>,
    /// AuditSourceID.
    pub source: Option<String>,
}

/// A checkpoint anchor as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AnchorView {
    /// The record it covers.
    pub seq: u64,
    /// That record's hash, hex.
    pub head: String,
    /// When the checkpoint was signed, Unix µs.
    pub time: i64,
    /// When it was committed to the store, Unix seconds.
    pub anchored_at: i64,
    /// The entry exactly as `checkpoints.log` holds it, base64.
    pub checkpoint: String,
}

/// An anchor the log did not hold when the appliance started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LostAnchorView {
    pub anchor: AnchorView,
    /// When it was found missing, Unix seconds.
    pub found_at: i64,
    /// Records the log had then.
    pub log_records: u64,
    /// The last checkpoint the log had then.
    pub log_last_checkpoint: Option<u64>,
}

/// A certificate of a checkpoint key, with its live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyCertificateView {
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex (the checkpoints' key id).
    pub key_id: String,
    pub ca: String,
    pub serial: String,
    pub profile: String,
    /// PEM.
    pub pem: String,
    /// `valid`, `on-hold` or `revoked`.
    pub status: String,
    /// Unix seconds.
    pub revocation_time: Option<i64>,
}

/// A node of the cluster: it runs a trail on the shared store and keeps its own audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNodeView {
    /// Its `[cluster] node_id`.
    pub node: String,
    /// Its host name in its audit messages.
    pub host: String,
    /// When its trail last started, Unix seconds.
    pub started_at: i64,
}

/// The audit log's anchors and the certificates of the keys asked about (`audit verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AnchorSetView {
    /// The node whose log these anchors are of (each node of a cluster keeps its own log).
    #[serde(default)]
    pub node: String,
    /// Every node the store knows.
    #[serde(default)]
    pub nodes: Vec<ClusterNodeView>,
    pub latest: Option<AnchorView>,
    pub history: Vec<AnchorView>,
    pub lost: Vec<LostAnchorView>,
    /// The store's certificates for the key ids asked for.
    pub certificates: Vec<KeyCertificateView>,
}

// --- Card login and assertions.

/// What the workstation asks for: sent with the challenge request, and again with the login
/// (the challenge and the card's signature are bound to it).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginContext {
    /// Patient INS (matricule), when the access concerns a patient.
    #[serde(default)]
    pub patient_ins: Option<String>,
    /// INS assigning authority OID (default INS-NIR `1.2.250.1.213.1.4.8`).
    #[serde(default)]
    pub ins_authority: Option<String>,
    /// `normal` (default), `bris_de_glace`, `centre_15`.
    #[serde(default)]
    pub purpose_of_use: Option<String>,
    /// Mandatory for `bris_de_glace`.
    #[serde(default)]
    pub justification: Option<String>,
    /// The activity (struct_IdNat) the professional acts in; default: the card's.
    #[serde(default)]
    pub structure_id: Option<String>,
    /// The practice software (`LPS_*`).
    #[serde(default)]
    pub software_name: Option<String>,
    #[serde(default)]
    pub software_version: Option<String>,
    #[serde(default)]
    pub software_id: Option<String>,
    #[serde(default)]
    pub software_homologation: Option<String>,
    /// Answer with the assertion inside a SOAP 1.2 envelope's `wsse:Security` header (shapes
    /// the answer only: not part of the bound context).
    #[serde(default)]
    pub soap: bool,
}

/// `POST /api/v1/login/challenge` (an empty body is the default request).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// Audience of the assertion (default `urn:dmp`).
    #[serde(default)]
    pub audience: Option<String>,
    /// The login context the assertion will carry; the login must send the same.
    #[serde(default)]
    pub context: LoginContext,
}

/// A challenge: the exact bytes the card signs, and the token to send back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChallengeView {
    /// The challenge token, sent back with the login.
    pub challenge_id: String,
    /// Base64 of the exact bytes the card signs.
    pub challenge: String,
    pub audience: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Hex SHA-256 of the appliance's seal certificate: the appliance the signature is bound to.
    pub appliance: String,
    /// Hex SHA-256 of the bound login context.
    pub context_sha256: String,
    /// The format of `challenge` (`cps-trust card login v1`).
    pub format: String,
}

/// `POST /api/v1/login`: the challenge signed by the card.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub challenge_id: String,
    /// The card's authentication certificate: base64 of the DER, or PEM.
    pub certificate: String,
    /// Base64 of the card's signature over the challenge bytes.
    pub signature: String,
    #[serde(default)]
    pub context: LoginContext,
}

/// `POST /api/v1/login/tls` (an empty body is the default request).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsLoginRequest {
    #[serde(default)]
    pub context: LoginContext,
}

/// The answer of a successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginResult {
    pub assertion_id: String,
    pub idnat_ps: String,
    pub name: String,
    /// Unix seconds.
    pub not_on_or_after: i64,
    /// The assertion (or SOAP envelope), XML.
    pub assertion: String,
}

/// What a service learns from a valid assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidationView {
    /// Always true.
    pub valid: bool,
    pub assertion_id: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_on_or_after: i64,
    pub idnat_ps: String,
    pub subject_id: String,
    /// `code^codeSystem`.
    pub roles: Vec<String>,
    pub secteur_activite: String,
    pub structure_id: String,
    pub authentication_mode: String,
    /// The patient, HL7 CX.
    pub patient: Option<String>,
    pub purpose_of_use: String,
    pub justification: Option<String>,
    pub software: String,
    /// Subject of the certificate that signed the assertion.
    pub signer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies that may be empty or partial on the wire take their defaults; unknown fields of a
    /// request are refused (a misspelt option is an error, not silently ignored).
    #[test]
    fn requests_default_and_refuse_unknown_fields() {
        let c: ChallengeRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ChallengeRequest::default());
        assert!(serde_json::from_str::<ChallengeRequest>(r#"{"audiense":"x"}"#).is_err());
        assert!(serde_json::from_str::<RevokeRequest>(r#"{"reason":"x","when":1}"#).is_err());
        let r: RevokeRequest = serde_json::from_str(r#"{"reason":"superseded"}"#).unwrap();
        assert_eq!(r.invalidity_date, None);
    }

    #[test]
    fn subject_is_externally_tagged() {
        let s = SubjectRequest::Organisation(OrganisationSubject {
            state: "s".into(),
            name: "n".into(),
            structure_id: "1".into(),
            common_name: "c".into(),
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"organisation":{"state":"s","name":"n","structure_id":"1","common_name":"c"}}"#
        );
    }
}
