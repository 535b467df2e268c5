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
use cps_store::CertCursor;
use serde::Deserialize;

use crate::ca::{CaError, CaService};
use crate::operators::Operator;

pub use cps_api::{CertificateList, CertificateView, RevokeRequest};
pub use cps_ca::wire::certificate_view;

/// Largest request body the API accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// The client certificate the TLS handshake verified for this connection, if the client sent
/// one. [`crate::authz::enforce`] checks it against the live state for every request and
/// replaces it with a [`crate::identity::Identity`]: handlers never see this type.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Option<Arc<crate::identity::PeerCertificate>>);

#[derive(Clone)]
pub struct ApiState {
    /// The console's form-token key; `None`: a random one for this process.
    pub console_key: Option<[u8; 32]>,
    /// This node's id (`[cluster] node_id`).
    pub node: String,
    /// The per-request check of client certificates.
    pub identities: Arc<crate::identity::Identities>,
    pub ca: Arc<CaService>,
    pub nodes: crate::nodes::Nodes,
    /// XUA issuance and validation, and card login (absent when not configured).
    pub xua: Option<Arc<crate::xua::XuaService>>,
    pub login: Option<Arc<crate::login::LoginService>>,
    /// Registry, cards and their background jobs (absent when not configured).
    pub cards: Option<Arc<cps_enrol::CardService>>,
    pub jobs: cps_enrol::Jobs,
    /// The audit record repository's log (absent when not running).
    pub audit_log: Option<cps_atna::AuditLog>,
    /// Batched durable audit records for high-rate requests (assertion validation).
    pub audit_writer: crate::audit::AuditWriter,
    /// Document signatures (absent when not configured).
    pub dsg: Option<Arc<crate::dsg::DsgService>>,
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
            Json(cps_api::ErrorBody {
                error: self.message,
            }),
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

fn parse_serial(s: &str) -> Result<Vec<u8>, ApiError> {
    cps_pki::Serial::from_hex(s)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "operators",
    responses((status = 200, description = "the caller", body = cps_api::OperatorView)))]
pub(crate) async fn whoami(Extension(op): Extension<Operator>) -> Json<cps_api::OperatorView> {
    Json(cps_api::OperatorView::from(&op))
}

#[utoipa::path(get, path = "/api/v1/certificates/{ca}/{serial}", tag = "certificates",
    params(("ca" = String, Path, description = "issuing CA id"),
        ("serial" = String, Path, description = "serial, hex")),
    responses((status = 200, description = "the certificate", body = CertificateView)))]
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
    Ok(Json(certificate_view(&rec)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub ca: Option<String>,
    /// Cursor: `<ca>:<serial hex>` of the last certificate of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(ListQuery),
    responses((status = 200, description = "a page of certificates", body = CertificateList)))]
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
        certificates: page.certificates.iter().map(certificate_view).collect(),
        next: page
            .next
            .map(|c| format!("{}:{}", c.issuer, hex::encode_upper(c.serial))),
    }))
}

#[utoipa::path(post, path = "/api/v1/certificates/{ca}/{serial}/revoke", tag = "certificates",
    params(("ca" = String, Path, description = "issuing CA id"),
        ("serial" = String, Path, description = "serial, hex")),
    request_body = RevokeRequest,
    responses((status = 200, description = "the certificate after the change", body = CertificateView)))]
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
    Ok(Json(certificate_view(&rec)))
}

#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates",
    request_body = cps_api::IssueRequest,
    responses((status = 201, description = "the certificate issued", body = CertificateView)))]
pub(crate) async fn issue(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let b: cps_api::IssueRequest = serde_json::from_slice(&body)
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
        subject: b.subject.into(),
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
    Ok((StatusCode::CREATED, Json(certificate_view(&rec))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "a page of audit records", body = cps_api::AuditEvents)))]
pub(crate) async fn audit_events(
    State(st): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<cps_api::AuditEvents>, ApiError> {
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
    Ok(Json(cps_api::AuditEvents {
        events: page.records.iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// Comma-separated key ids (SHA-256 of a SubjectPublicKeyInfo, hex): the store's
    /// certificates of these keys are returned too.
    pub keys: Option<String>,
    /// Whose log's anchors (each node of a cluster keeps its own log); default: this node.
    pub node: Option<String>,
}

/// Key ids one request may ask about.
const MAX_CHECKPOINT_KEYS: usize = 64;

/// `GET /api/v1/audit/checkpoints`: the anchors of the audit log's checkpoints and the
/// certificates of the keys asked about (auditors, CA operators; read-only). `audit verify` asks
/// for them while the appliance runs, when it cannot open the store itself.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", params(CheckpointQuery),
    responses((status = 200, description = "the anchors and key certificates", body = cps_api::AnchorSetView)))]
pub(crate) async fn audit_checkpoints(
    State(st): State<ApiState>,
    Query(q): Query<CheckpointQuery>,
) -> Result<Json<cps_api::AnchorSetView>, ApiError> {
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
    let node = q.node.unwrap_or_else(|| st.node.clone());
    if !cps_store::valid_node_id(&node) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "node: not a node id (letters, digits, '.', '-', '_')",
        ));
    }
    let store = st.ca.store().clone();
    let set = tokio::task::spawn_blocking(move || {
        crate::audit_anchor::anchor_set(store.as_ref(), &node, &ids)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot read the audit anchors");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the appliance log)",
        )
    })?;
    Ok(Json(cps_api::AnchorSetView::from(&set)))
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

#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = cps_api::NodeEnrollRequest,
    responses((status = 201, description = "the node and its certificate", body = cps_api::NodeEnrolled)))]
pub(crate) async fn enroll_node(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<cps_api::NodeEnrolled>), ApiError> {
    let req: cps_api::NodeEnrollRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let req = cps_trail::wire::node_request(req);
    let actor = format!("operator:{}", op.name);
    let (ca, nodes) = (st.ca.clone(), st.nodes.clone());
    let (node, cert) = blocking(move || nodes.enroll(&ca, req, &actor, now())).await?;
    Ok((
        StatusCode::CREATED,
        Json(cps_api::NodeEnrolled {
            node: (&node).into(),
            certificate: certificate_view(&cert),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, description = "every node", body = Vec<cps_api::NodeView>)))]
pub(crate) async fn list_nodes(
    State(st): State<ApiState>,
) -> Result<Json<Vec<cps_api::NodeView>>, ApiError> {
    let nodes = st.nodes.clone();
    let list = blocking(move || nodes.list()).await?;
    Ok(Json(
        list.iter().map(cps_api::NodeView::from).collect::<Vec<_>>(),
    ))
}

#[utoipa::path(get, path = "/api/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "the node's name")),
    responses((status = 200, description = "the node", body = cps_api::NodeView)))]
pub(crate) async fn get_node(
    State(st): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<cps_api::NodeView>, ApiError> {
    let nodes = st.nodes.clone();
    let n2 = name.clone();
    blocking(move || nodes.get(&n2))
        .await?
        .map(|n| Json(cps_api::NodeView::from(&n)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named '{name}'")))
}

#[utoipa::path(post, path = "/api/v1/nodes/{name}/remove", tag = "nodes",
    params(("name" = String, Path, description = "the node's name")),
    request_body(content = Object, content_type = "application/json", description = "nothing is read: send `{}`"),
    responses((status = 200, description = "the node, removed", body = cps_api::NodeView)))]
pub(crate) async fn remove_node(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<cps_api::NodeView>, ApiError> {
    let actor = format!("operator:{}", op.name);
    let (ca, nodes) = (st.ca.clone(), st.nodes.clone());
    let node = blocking(move || nodes.remove(&ca, &name, &actor, now())).await?;
    Ok(Json((&node).into()))
}

#[utoipa::path(post, path = "/api/v1/operators", tag = "operators", request_body = cps_api::OperatorRequest,
    responses((status = 201, description = "the operator's certificate", body = CertificateView)))]
pub(crate) async fn create_operator(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let b: cps_api::OperatorRequest = serde_json::from_slice(&body)
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
    Ok((StatusCode::CREATED, Json(certificate_view(&rec))))
}

#[utoipa::path(get, path = "/api/v1/crl/{ca}", tag = "certificates",
    params(("ca" = String, Path, description = "issuing CA id")),
    responses((status = 200, description = "the current CRL, DER", content_type = "application/pkix-crl", body = Vec<u8>)))]
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
