//! Card login and XUA routes of the API.
//!
//! * `POST /api/v1/login/challenge` `{ "audience"?: "…", "context"?: { patient_ins,
//!   ins_authority, purpose_of_use, justification, structure_id, software_* } }` → 201 with
//!   `{ challenge_id, challenge, audience, expires_at, appliance, context_sha256, format }`:
//!   `challenge` is the base64 of the **exact bytes the card signs** (128 bytes: the label
//!   `cps-trust card login v1`, this appliance's identity, a nonce, the expiry and the hash of
//!   the audience and context; see [`crate::challenge`]). Nothing is stored: the challenge is a
//!   MAC-protected token. A context the appliance would refuse is a 400 here, before any card
//!   operation.
//! * `POST /api/v1/login` `{ challenge_id, certificate (base64 DER or PEM), signature (base64),
//!   context }` → the VIHF assertion, or 401 with a stable `code`. The context must be the one
//!   the challenge was asked for (`context_mismatch` otherwise); the challenge is consumed by
//!   this first attempt, whatever its outcome. 503 when the login could not be audited (then no
//!   assertion is returned).
//! * `POST /api/v1/login/tls` `{ context }` on a connection authenticated with the card's
//!   certificate → the assertion (one per TLS handshake: the card signed once; same audit rule);
//! * `POST /api/v1/xua/validate` (operators with the `service` role): an assertion, bare or in
//!   a SOAP envelope → its attributes, or 422 with the refusal code and reason.
//!
//! Login routes need no operator certificate: the professional's card is the credential.
//! Refusals before the card's signature verified are counted per source address
//! (`login.refused`, one audit record per source and interval); those after it are recorded
//! one by one, durably, as `login` failures of the identified professional.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::api::{ApiError, ApiState};
use crate::conn::{Connection, PeerAddr};
use crate::identity::Identity;
use crate::login::{ChallengeView, LoginRefusal, LoginResult};
use crate::operators::Operator;
pub use cps_api::ValidationView;

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("task failed: {e}"),
        )
    })
}

fn login_service(st: &ApiState) -> Result<Arc<crate::login::LoginService>, ApiError> {
    st.login.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "card login is not available on this appliance",
        )
    })
}

/// The source address of the request (unspecified when the listener did not say).
fn source(peer: Option<Extension<PeerAddr>>) -> IpAddr {
    peer.map(|Extension(PeerAddr(a))| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// A challenge: constant cost, no I/O, nothing stored (answered on the runtime worker).
#[utoipa::path(post, path = "/api/v1/login/challenge", tag = "login",
    request_body(content = cps_api::ChallengeRequest, description = "may be empty (the defaults)"),
    responses((status = 201, description = "the challenge the card signs", body = ChallengeView)))]
pub async fn challenge(State(st): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let login = login_service(&st)?;
    let b: cps_api::ChallengeRequest = if body.is_empty() {
        cps_api::ChallengeRequest::default()
    } else {
        json_body(&body)?
    };
    let audience = b.audience.unwrap_or_else(|| "urn:dmp".into());
    let view = login.challenge(&audience, &b.context, SystemTime::now())?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn answer(r: Result<LoginResult, LoginRefusal>) -> Response {
    match r {
        Ok(ok) => (StatusCode::OK, Json(ok)).into_response(),
        Err(refusal) => (
            // Not a refusal of the card: the record of used challenges did not answer.
            if refusal.code == cps_login::ChallengeRefusal::Unavailable.code() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            },
            Json(cps_api::LoginRefusalBody {
                error: refusal.message,
                code: refusal.code.to_owned(),
            }),
        )
            .into_response(),
    }
}

fn certificate_der(text: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, format!("certificate: {why}"));
    if text.trim_start().starts_with("-----BEGIN") {
        return cps_pki::pem_certificates(text)
            .into_iter()
            .next()
            .ok_or_else(|| bad("no CERTIFICATE block in the PEM"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| bad("neither PEM nor base64"))
}

#[utoipa::path(post, path = "/api/v1/login", tag = "login", request_body = cps_api::LoginRequest,
    responses(
        (status = 200, description = "the assertion", body = LoginResult),
        (status = 401, description = "login refused", body = cps_api::LoginRefusalBody),
        (status = 503, description = "the login could not be audited: no assertion", body = cps_api::ErrorBody)))]
pub async fn login(
    State(st): State<ApiState>,
    peer: Option<Extension<PeerAddr>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let login = login_service(&st)?;
    let b: cps_api::LoginRequest = json_body(&body)?;
    let cert = certificate_der(&b.certificate)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(b.signature.trim())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "signature: not base64"))?;
    let source = source(peer);
    let now = SystemTime::now();
    // The challenge first, here on the worker (an HMAC and a hash-set probe): made-up, expired,
    // used or re-purposed challenges are refused without touching the blocking pool. With the
    // record of used challenges in the store (shared by the nodes), only the checks that need no
    // I/O run here, and the challenge is consumed in the blocking step.
    if login.redeem_blocks() {
        if let Err(refusal) = login.precheck(&b.challenge_id, source, now) {
            return Ok(answer(Err(refusal)));
        }
        let r =
            run_blocking(
                move || match login.redeem(&b.challenge_id, &b.context, source, now) {
                    Ok(redeemed) => login.login(&redeemed, &cert, &sig, &b.context, source, now),
                    Err(refusal) => Ok(Err(refusal)),
                },
            )
            .await??;
        return Ok(answer(r));
    }
    let redeemed = match login.redeem(&b.challenge_id, &b.context, source, now) {
        Ok(r) => r,
        Err(refusal) => return Ok(answer(Err(refusal))),
    };
    let r = run_blocking(move || login.login(&redeemed, &cert, &sig, &b.context, source, now))
        .await??;
    Ok(answer(r))
}

#[utoipa::path(post, path = "/api/v1/login/tls", tag = "login",
    request_body(content = cps_api::TlsLoginRequest, description = "may be empty (the defaults)"),
    responses(
        (status = 200, description = "the assertion", body = LoginResult),
        (status = 401, description = "login refused", body = cps_api::LoginRefusalBody),
        (status = 503, description = "the login could not be audited: no assertion", body = cps_api::ErrorBody)))]
pub async fn login_tls(
    State(st): State<ApiState>,
    identity: Option<Extension<Identity>>,
    connection: Option<Extension<Arc<Connection>>>,
    peer: Option<Extension<PeerAddr>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let login = login_service(&st)?;
    let source = source(peer);
    // Checked for this request by `authz::enforce` (the route needs a client certificate, so a
    // request without one is refused before it gets here).
    let Some(Extension(identity)) = identity else {
        let refusal = LoginRefusal {
            code: "no_client_certificate",
            message:
                "TLS login needs the card's authentication certificate as the client certificate"
                    .into(),
        };
        login.refused(source, &refusal, SystemTime::now());
        return Ok(answer(Err(refusal)));
    };
    // The card signed once, in this connection's handshake: one assertion per handshake, so a
    // workstation cannot keep minting assertions on a connection after the card is gone.
    if !connection.is_some_and(|Extension(c)| c.take_tls_login()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "one TLS login per handshake: connect again with the card to log in again",
        ));
    }
    let der = identity.certificate.der.clone();
    let b: cps_api::TlsLoginRequest = if body.is_empty() {
        cps_api::TlsLoginRequest::default()
    } else {
        json_body(&body)?
    };
    let r = run_blocking(move || login.login_tls(&der, &b.context, source, SystemTime::now()))
        .await??;
    Ok(answer(r))
}

#[utoipa::path(post, path = "/api/v1/xua/validate", tag = "assertions",
    request_body(description = "an assertion, bare or in a SOAP envelope", content(
        (String = "application/xml"), (String = "text/xml"), (String = "application/soap+xml"))),
    responses(
        (status = 200, description = "a valid assertion's attributes", body = ValidationView),
        (status = 422, description = "the assertion is refused", body = cps_api::ValidationRefusal),
        (status = 503, description = "no verdict: the replay record, revocation state or registry did not answer; present it again later", body = cps_api::ValidationRefusal)))]
pub async fn validate(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    version: Option<Extension<crate::identity::RequestVersion>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let version = version.and_then(|Extension(v)| v.0);
    let xua = st.xua.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "XUA validation is not available on this appliance",
        )
    })?;
    // Validation is ~50–100 µs of CPU: it runs on the runtime's worker (a hop to a blocking
    // thread would cost more than it saves). Its audit record goes straight into the trail (log
    // and outgoing queue) through the batching writer before the answer leaves: durable before
    // acknowledged, one flush for many requests, and no store transaction (nothing changes).
    let now = SystemTime::now();
    // With the replay record in the store (shared by the nodes), a validation waits for the
    // store's batched claim: off the worker, so that many validations share one claim.
    let r = if xua.shared_replay().is_some() {
        let (xua, body) = (xua.clone(), body.clone());
        run_blocking(move || cps_login::at_store_version(version, || xua.validate(&body, now)))
            .await?
    } else {
        xua.validate(&body, now)
    };
    let event = match &r {
        Ok(v) => cps_audit::AuditEvent::AssertionValidated {
            assertion_id: v.id.to_string(),
            idnat_ps: v.claims.name_id.as_str().to_owned(),
            purpose_of_use: v.claims.purpose_of_use.code().to_owned(),
            patient_ins: v.claims.patient.as_ref().map(|p| p.ins.as_str().to_owned()),
        },
        Err(refusal) => cps_audit::AuditEvent::AssertionRefused {
            code: refusal.code.as_str().to_owned(),
            reason: refusal.message.to_string(),
        },
    };
    let rec = event.record(crate::clock::unix(now), format!("operator:{}", op.name));
    if let Err(e) = st.audit_writer.record(rec).await {
        // No answer without its audit record (fail closed).
        tracing::error!(error = %e, "cannot audit an assertion validation");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the validation could not be audited; try again later",
        ));
    }
    Ok(match r {
        Ok(v) => {
            let c = &v.claims;
            let justification = match &c.purpose_of_use {
                cps_xua::PurposeOfUse::BreakGlass { justification } => Some(justification.clone()),
                _ => None,
            };
            Json(ValidationView {
                valid: true,
                assertion_id: v.id.clone(),
                issuer: v.issuer.clone(),
                not_before: crate::clock::unix(v.not_before),
                not_on_or_after: crate::clock::unix(v.not_on_or_after),
                idnat_ps: c.name_id.as_str().to_owned(),
                subject_id: c.subject_id.clone(),
                roles: c
                    .roles
                    .iter()
                    .map(|r| format!("{}^{}", r.code, r.code_system))
                    .collect(),
                secteur_activite: c.secteur_activite.clone(),
                structure_id: c.structure_id.clone(),
                authentication_mode: c.authentication_mode.as_str().to_owned(),
                patient: c.patient.as_ref().map(|p| p.to_cx()),
                purpose_of_use: c.purpose_of_use.code().to_owned(),
                justification,
                software: c.software.name.clone(),
                signer: v.signer.subject.clone(),
            })
            .into_response()
        }
        Err(refusal) => (
            // The appliance could not decide (a record it needs did not answer): not a verdict
            // on the assertion, which may be presented again.
            if refusal.code.is_unavailable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            Json(cps_api::ValidationRefusal {
                valid: false,
                code: refusal.code.as_str().to_owned(),
                error: refusal.message,
            }),
        )
            .into_response(),
    })
}
