//! Document signature routes of the API (IHE DSG).
//!
//! * `POST /api/v1/dsg/sign` (role `signer`, bound to the structure in `[[dsg.seals]]`):
//!   `DsgSignRequest` → the XAdES-X-L signature of the structure's seal, with the TSA's
//!   timestamp, the certificates and fresh OCSP answers. 403 for a structure the caller is not a
//!   signer of; 503 (nothing signed) while the clock is not trusted. The `dsg.sign` audit record
//!   (113031 Signed Manifest) is durable before the answer.
//! * `POST /api/v1/dsg/verify` (roles `service`, `signer`): `DsgVerifyRequest` → the signer, the
//!   proven signing time, the purpose and each document's result (200), or 422 with the stable
//!   refusal code; audited (`dsg.verify`, 110007 Report Verification) before the answer.

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, ApiState};
use crate::api_xua::{json_body, run_blocking};
use crate::dsg::SignRefusal;
use crate::operators::Operator;

/// Largest request body of the signature routes (documents travel base64 inside).
pub const MAX_DSG_BODY: usize = 24 << 20;

fn service(st: &ApiState) -> Result<std::sync::Arc<crate::dsg::DsgService>, ApiError> {
    st.dsg.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "document signatures are not available on this appliance",
        )
    })
}

async fn audit(st: &ApiState, event: cps_audit::AuditEvent, op: &Operator) -> Result<(), ApiError> {
    let rec = event.record(
        crate::clock::unix(SystemTime::now()),
        format!("operator:{}", op.name),
    );
    st.audit_writer.record(rec).await.map_err(|e| {
        // No answer without its audit record (fail closed).
        tracing::error!(error = %e, "cannot audit a document signature operation");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the operation could not be audited; try again later",
        )
    })
}

#[utoipa::path(post, path = "/api/v1/dsg/sign", tag = "signatures",
    request_body = cps_api::DsgSignRequest,
    responses(
        (status = 200, description = "the seal's XAdES-X-L signature", body = cps_api::DsgSignature),
        (status = 400, description = "the request does not describe a signature", body = cps_api::ErrorBody),
        (status = 403, description = "the caller is not a signer of that structure", body = cps_api::ErrorBody),
        (status = 503, description = "nothing signed: clock not trusted, HSM or TSA failure", body = cps_api::ErrorBody)))]
pub async fn sign(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let dsg = service(&st)?;
    let req: cps_api::DsgSignRequest = json_body(&body)?;
    let name = op.name.clone();
    let now = crate::clock::unix(SystemTime::now());
    let signed = run_blocking(move || dsg.sign(&name, &req, now))
        .await?
        .map_err(|e| {
            let status = match &e {
                SignRefusal::Forbidden(_) => StatusCode::FORBIDDEN,
                SignRefusal::Invalid(_) => StatusCode::BAD_REQUEST,
                SignRefusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(error = %e, "document signature not made");
            }
            ApiError::new(status, e.to_string())
        })?;
    let policy = signed.policy.name().to_owned();
    let purpose = signed.purpose.oid();
    audit(
        &st,
        cps_audit::AuditEvent::DocumentsSigned {
            signer: signed.signer.clone(),
            signer_kind: "seal".into(),
            structure_id: Some(signed.structure_id.clone()),
            policy: policy.clone(),
            purpose: purpose.clone(),
            documents: signed.documents.clone(),
        },
        &op,
    )
    .await?;
    let signature = String::from_utf8(signed.xml).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the signature is not UTF-8",
        )
    })?;
    Ok(Json(cps_api::DsgSignature {
        signature,
        signer: signed.signer,
        signing_time: signed.signing_time,
        policy,
        purpose,
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/dsg/verify", tag = "signatures",
    request_body = cps_api::DsgVerifyRequest,
    responses(
        (status = 200, description = "a valid signature: signer, signing time, purpose, documents", body = cps_api::DsgVerification),
        (status = 422, description = "the signature is refused, with its code", body = cps_api::DsgVerification)))]
pub async fn verify(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let dsg = service(&st)?;
    let req: cps_api::DsgVerifyRequest = json_body(&body)?;
    let docs = req
        .documents
        .iter()
        .map(|d| crate::dsg::DocumentInput::decode(d).map(|c| (d.unique_id.clone(), c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let names: Vec<String> = docs.iter().map(|(id, _)| id.clone()).collect();
    let live = req.live_status;
    let xml = req.signature.into_bytes();
    let verdict = run_blocking(move || {
        let supplied: Vec<cps_dsg::SuppliedDocument<'_>> = docs
            .iter()
            .map(|(id, c)| cps_dsg::SuppliedDocument {
                unique_id: id,
                content: c.digest(),
            })
            .collect();
        dsg.verify(&xml, &supplied, live)
    })
    .await?;
    let (event, view, status) = match verdict {
        Ok(v) => {
            let documents: Vec<String> = v
                .submission_set
                .iter()
                .cloned()
                .chain(v.documents.iter().map(|d| d.unique_id.clone()))
                .collect();
            (
                cps_audit::AuditEvent::SignatureVerified {
                    signer: v.signer_subject.clone(),
                    signing_time: v.signing_time,
                    policy: v.policy.name().to_owned(),
                    purpose: v.purpose.oid(),
                    documents,
                },
                cps_api::DsgVerification {
                    valid: true,
                    code: None,
                    error: None,
                    signer: Some(v.signer_subject.clone()),
                    signing_time: Some(v.signing_time),
                    claimed_signing_time: Some(v.claimed_signing_time),
                    purpose: Some(v.purpose.oid()),
                    policy: Some(v.policy.name().to_owned()),
                    documents: v
                        .documents
                        .iter()
                        .map(|d| cps_api::DsgDocumentResult {
                            unique_id: d.unique_id.clone(),
                            valid: d.outcome == cps_dsg::DocumentOutcome::Verified,
                            error: None,
                        })
                        .collect(),
                },
                StatusCode::OK,
            )
        }
        Err(refusal) => (
            cps_audit::AuditEvent::SignatureRefused {
                code: refusal.code().to_owned(),
                reason: refusal.to_string(),
                documents: names,
            },
            cps_api::DsgVerification {
                valid: false,
                code: Some(refusal.code().to_owned()),
                error: Some(refusal.to_string()),
                signer: None,
                signing_time: None,
                claimed_signing_time: None,
                purpose: None,
                policy: None,
                documents: refusal
                    .documents()
                    .iter()
                    .map(|d| cps_api::DsgDocumentResult {
                        unique_id: d.unique_id.clone(),
                        valid: d.outcome == cps_dsg::DocumentOutcome::Verified,
                        error: (d.outcome != cps_dsg::DocumentOutcome::Verified)
                            .then(|| format!("{:?}", d.outcome)),
                    })
                    .collect(),
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    audit(&st, event, &op).await?;
    Ok((status, Json(view)).into_response())
}
