//! The REST API under `/api/v1/` on the mutual-TLS listener: handlers and their types. Who may
//! call each route, and the checks every request passes before a handler runs (client
//! certificate against the live state, roles, request forgery), are in [`crate::authz`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_pki::crl::RevocationReason;
use cps_store::{CertCursor, CertStatus, CertificateRecord};
use serde::{Deserialize, Serialize};

use crate::ca::{CaError, CaService};
use crate::operators::Operator;

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// The client certificate the TLS handshake verified for this connection, if the client sent
/// one. [`crate::authz::enforce`] checks it against the live state for every request and
/// replaces it with a [`crate::identity::Identity`]: handlers never see this type.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Option<Arc<crate::identity::PeerCertificate>>);

#[derive(Clone)]
pub struct ApiState {
    /// The per-request check of client certificates.
    pub identities: Arc<crate::identity::Identities>,
    pub ca: Arc<CaService>,
    pub nodes: crate::nodes::Nodes,
    /// XUA issuance and validation, and card login (absent when not configured).
    pub xua: Option<Arc<crate::xua::XuaService>>,
    pub login: Option<Arc<crate::login::LoginService>>,
    /// Registry, cards and their background jobs (absent when not configured).
    pub cards: Option<Arc<cps_enrol::CardService>>,
    pub jobs: crate::cards::Jobs,
    /// The audit record repository's log (absent when not running).
    pub audit_log: Option<cps_atna::AuditLog>,
    /// Batched durable audit records for high-rate requests (assertion validation).
    pub audit_writer: crate::audit::AuditWriter,
}

/// One error shape for the whole API: a status and a message for the caller. Internal details
/// go to the log, not to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::NotFound { .. } | CaError::UnknownCa(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            CaError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            CaError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            CaError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            CaError::Internal(inner) => {
                tracing::error!(error = %inner, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the appliance log)",
                )
            }
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A certificate as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateView {
    pub ca: String,
    pub serial: String,
    pub subject: String,
    pub profile: String,
    pub holder: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub status: String,
    pub revocation_time: Option<i64>,
    pub revocation_reason: Option<String>,
    pub pem: String,
}

impl From<&CertificateRecord> for CertificateView {
    fn from(r: &CertificateRecord) -> Self {
        let (status, time, reason) = match &r.status {
            CertStatus::Valid => ("valid".to_string(), None, None),
            CertStatus::Revoked { time, reason, .. } => {
                let name = RevocationReason::from_code(*reason).map(|x| x.name().to_string());
                let st = if *reason == 6 { "on-hold" } else { "revoked" };
                (st.to_string(), Some(*time), name)
            }
        };
        CertificateView {
            ca: r.issuer.clone(),
            serial: hex::encode_upper(&r.serial),
            subject: r.subject.clone(),
            profile: r.profile.clone(),
            holder: r.holder.clone(),
            not_before: r.not_before,
            not_after: r.not_after,
            status,
            revocation_time: time,
            revocation_reason: reason,
            pem: cps_pki::pem_encode("CERTIFICATE", &r.der),
        }
    }
}

fn parse_serial(s: &str) -> Result<Vec<u8>, ApiError> {
    cps_pki::Serial::from_hex(s)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

pub(crate) async fn whoami(Extension(op): Extension<Operator>) -> Json<Operator> {
    Json(op)
}

pub(crate) async fn get_certificate(
    State(st): State<ApiState>,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
) -> Result<Json<CertificateView>, ApiError> {
    let serial = parse_serial(&serial)?;
    let rec = st
        .ca
        .store()
        .get_certificate(&ca, &serial)
        .map_err(|e| ApiError::from(CaError::from(e)))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no certificate with serial {} from CA '{ca}'",
                    hex::encode_upper(&serial)
                ),
            )
        })?;
    Ok(Json(CertificateView::from(&rec)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub ca: Option<String>,
    /// Cursor: `<ca>:<serial hex>` of the last certificate of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateList {
    pub certificates: Vec<CertificateView>,
    pub next: Option<String>,
}

pub(crate) async fn list_certificates(
    State(st): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<CertificateList>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let cursor = match &q.after {
        None => None,
        Some(c) => {
            let (ca, serial) = c.split_once(':').ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "cursor must be <ca>:<serial>")
            })?;
            Some(CertCursor {
                issuer: ca.into(),
                serial: parse_serial(serial)?,
            })
        }
    };
    let page = st
        .ca
        .store()
        .list_certificates(q.ca.as_deref(), cursor.as_ref(), limit)
        .map_err(|e| ApiError::from(CaError::from(e)))?;
    Ok(Json(CertificateList {
        certificates: page
            .certificates
            .iter()
            .map(CertificateView::from)
            .collect(),
        next: page
            .next
            .map(|c| format!("{}:{}", c.issuer, hex::encode_upper(c.serial))),
    }))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// RFC 5280 reason name: `keyCompromise`, `superseded`, `certificateHold`, `removeFromCRL`...
    pub reason: String,
    /// Unix seconds when the key is known or suspected to have been compromised.
    pub invalidity_date: Option<i64>,
}

pub(crate) async fn revoke(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Json<CertificateView>, ApiError> {
    let req: RevokeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let reason = RevocationReason::from_name(&req.reason).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown revocation reason '{}'", req.reason),
        )
    })?;
    let serial = parse_serial(&serial)?;
    let ca_svc = st.ca.clone();
    let actor = format!("operator:{}", op.name);
    let rec = tokio::task::spawn_blocking(move || {
        ca_svc.revoke(&ca, &serial, reason, req.invalidity_date, &actor, now())
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("revocation task failed: {e}"),
        )
    })??;
    Ok(Json(CertificateView::from(&rec)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub profile: String,
    /// PKCS#10, PEM.
    pub csr: String,
    pub subject: crate::ca::SubjectRequest,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub ip: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub email: Vec<String>,
    pub holder: String,
}

pub(crate) async fn issue(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let b: IssueBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    crate::ca::check_raw_issuance_holder(&b.holder)?;
    // Card certificates carry a professional's identity: they are issued for keys generated on a
    // card, after the registry checks of the enrolment, never from a CSR handed to the API.
    if st
        .ca
        .profiles()
        .get(&b.profile)
        .is_some_and(|p| p.subject == cps_pki::profile::SubjectKind::Person)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "'{}' certificates are issued only by card enrolment (POST /api/v1/cards/enrol), never from a CSR",
                b.profile
            ),
        ));
    }
    let mut sans = Vec::new();
    sans.extend(b.dns.into_iter().map(cps_pki::SubjectAltName::Dns));
    sans.extend(b.ip.into_iter().map(cps_pki::SubjectAltName::Ip));
    sans.extend(b.email.into_iter().map(cps_pki::SubjectAltName::Email));
    let req = crate::ca::IssueRequest {
        profile: b.profile,
        csr: b.csr.into_bytes(),
        subject: b.subject,
        sans,
        holder: b.holder,
    };
    let ca_svc = st.ca.clone();
    let actor = format!("operator:{}", op.name);
    let rec = tokio::task::spawn_blocking(move || ca_svc.issue(&req, &actor, now()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("issuance task failed: {e}"),
            )
        })??;
    Ok((StatusCode::CREATED, Json(CertificateView::from(&rec))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Unix seconds (inclusive).
    pub from: Option<i64>,
    /// Unix seconds (exclusive).
    pub to: Option<i64>,
    /// DICOM EventID code, e.g. 110114.
    pub event: Option<String>,
    /// EventTypeCode code, e.g. 110122.
    pub event_type: Option<String>,
    pub user: Option<String>,
    pub patient: Option<String>,
    /// EventOutcomeIndicator: 0, 4, 8, 12.
    pub outcome: Option<u8>,
    /// AuditSourceID.
    pub source: Option<String>,
    /// Sending node's certificate subject.
    pub node: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<u64>,
}

/// `GET /api/v1/audit/events`: search the audit record repository (auditors, CA operators).
pub(crate) async fn audit_events(
    State(st): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let log = st.audit_log.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit record repository is not running",
        )
    })?;
    let filter = cps_atna::SearchFilter {
        from: q.from.map(|t| t * 1_000_000),
        to: q.to.map(|t| t * 1_000_000),
        event_id: q.event,
        event_type: q.event_type,
        user: q.user,
        patient: q.patient,
        outcome: q.outcome,
        source: q.source,
        node: q.node,
        parse_error: None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = tokio::task::spawn_blocking(move || log.search(&filter, limit, q.cursor))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let events: Vec<serde_json::Value> = page
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "seq": r.seq,
                "received": r.received / 1_000_000,
                "transport": format!("{:?}", r.transport).to_lowercase(),
                "node": r.node.subject,
                "peer": r.peer,
                "event": r.summary.event.as_ref().map(|e| serde_json::json!({
                    "event_id": e.event_id.code,
                    "event_name": e.event_id.meaning,
                    "event_types": e.event_types.iter().map(|c| &c.code).collect::<Vec<_>>(),
                    "action": e.action,
                    "outcome": e.outcome,
                    "time": e.event_time.map(|t| t / 1_000_000),
                    "users": e.user_ids,
                    "patients": e.patient_ids,
                    "source": e.source_id,
                })),
                "parse_error": r.summary.syslog_error.clone().or(r.summary.xml_error.clone()),
                "message": String::from_utf8_lossy(&r.raw),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "events": events, "next_cursor": page.next_cursor }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// Comma-separated key ids (SHA-256 of a SubjectPublicKeyInfo, hex): the store's
    /// certificates of these keys are returned too.
    pub keys: Option<String>,
}

/// Key ids one request may ask about.
const MAX_CHECKPOINT_KEYS: usize = 64;

/// `GET /api/v1/audit/checkpoints`: the anchors of the audit log's checkpoints and the
/// certificates of the keys asked about (auditors, CA operators; read-only). `audit verify` asks
/// for them while the appliance runs, when it cannot open the store itself.
pub(crate) async fn audit_checkpoints(
    State(st): State<ApiState>,
    Query(q): Query<CheckpointQuery>,
) -> Result<Json<crate::audit_anchor::AnchorSet>, ApiError> {
    let mut ids: Vec<[u8; 32]> = Vec::new();
    for k in q
        .keys
        .iter()
        .flat_map(|k| k.split(','))
        .filter(|k| !k.is_empty())
    {
        let id = hex::decode(k)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "a key id is 64 hexadecimal digits (SHA-256 of a SubjectPublicKeyInfo)",
                )
            })?;
        ids.push(id);
    }
    if ids.len() > MAX_CHECKPOINT_KEYS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_CHECKPOINT_KEYS} key ids"),
        ));
    }
    let store = st.ca.store().clone();
    let set =
        tokio::task::spawn_blocking(move || crate::audit_anchor::anchor_set(store.as_ref(), &ids))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read the audit anchors");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the appliance log)",
                )
            })?;
    Ok(Json(set))
}

/// Runs a blocking service call off the async workers; its error becomes the API's.
pub(crate) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("task failed: {e}"),
            )
        })?
        .map_err(Into::into)
}

/// A node and its newest certificate.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeEnrolled {
    pub node: crate::nodes::NodeRecord,
    pub certificate: CertificateView,
}

pub(crate) async fn enroll_node(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<NodeEnrolled>), ApiError> {
    let req: crate::nodes::NodeEnrollRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let actor = format!("operator:{}", op.name);
    let (ca, nodes) = (st.ca.clone(), st.nodes.clone());
    let (node, cert) = blocking(move || nodes.enroll(&ca, req, &actor, now())).await?;
    Ok((
        StatusCode::CREATED,
        Json(NodeEnrolled {
            node,
            certificate: CertificateView::from(&cert),
        }),
    ))
}

pub(crate) async fn list_nodes(
    State(st): State<ApiState>,
) -> Result<Json<Vec<crate::nodes::NodeRecord>>, ApiError> {
    let nodes = st.nodes.clone();
    Ok(Json(blocking(move || nodes.list()).await?))
}

pub(crate) async fn get_node(
    State(st): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::nodes::NodeRecord>, ApiError> {
    let nodes = st.nodes.clone();
    let n2 = name.clone();
    blocking(move || nodes.get(&n2))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named '{name}'")))
}

pub(crate) async fn remove_node(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::nodes::NodeRecord>, ApiError> {
    let actor = format!("operator:{}", op.name);
    let (ca, nodes) = (st.ca.clone(), st.nodes.clone());
    Ok(Json(
        blocking(move || nodes.remove(&ca, &name, &actor, now())).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorBody {
    pub name: String,
    pub roles: Vec<String>,
    /// PKCS#10, PEM: the operator keeps the private key.
    pub csr: String,
}

pub(crate) async fn create_operator(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let b: OperatorBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let ca_svc = st.ca.clone();
    let actor = format!("operator:{}", op.name);
    let rec = tokio::task::spawn_blocking(move || {
        ca_svc.create_operator(&b.name, &b.roles, b.csr.as_bytes(), &actor, now())
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("task failed: {e}"),
        )
    })??;
    Ok((StatusCode::CREATED, Json(CertificateView::from(&rec))))
}

pub(crate) async fn crl(
    State(st): State<ApiState>,
    UrlPath(ca): UrlPath<String>,
) -> Result<Response, ApiError> {
    let ca_svc = st.ca.clone();
    let der = tokio::task::spawn_blocking(move || ca_svc.crl(&ca, now()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("CRL task failed: {e}"),
            )
        })??;
    Ok((
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        der.as_ref().clone(),
    )
        .into_response())
}

/// `/api/docs/` (Swagger UI) and `/api/v1/openapi.json`.
pub(crate) fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    let doc: serde_json::Value =
        serde_json::from_str(OPENAPI).unwrap_or_else(|_| serde_json::json!({}));
    utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .external_url_unchecked("/api/v1/openapi.json", doc)
}

/// The OpenAPI description of this API, served by the appliance itself.
pub const OPENAPI: &str = include_str!("openapi.json");
