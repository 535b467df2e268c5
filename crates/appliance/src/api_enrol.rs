//! Registry and card routes of the API (card-issuing staff: role `ra-officer`; `auditor` and
//! `ca-operator` read).
//!
//! * `GET /api/v1/professionals?q=&after=&limit=`, `GET /api/v1/professionals/{idnat}` (with
//!   its cards), `POST /api/v1/professionals` (create), `POST /api/v1/professionals/{idnat}/status`
//!   `{ "status": "active|suspended|left" }`;
//! * `POST /api/v1/professionals/import[?dry_run=true]` (CSV body) → a job;
//! * `GET /api/v1/readers`; `POST /api/v1/cards/enrol` `{ reader, idnat_ps, structure_id,
//!   replaces? }` → a job; `GET /api/v1/jobs/{id}` (the initial PIN/PUK appear once, to the certificate that started
//!   the enrolment);
//! * `GET /api/v1/cards/{serial}`; `POST /api/v1/cards/{serial}/suspend|resume`,
//!   `/oppose { reason: lost|stolen|destroyed }`, `/renew { reader, pin }`,
//!   `/unblock { reader, puk, new_pin }`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cps_enrol::{CardService, EnrolError, OppositionReason, ProfessionalStatus};
use serde::Deserialize;

use crate::api::{ApiError, ApiState, blocking};
use crate::caller::CertFingerprint;
use crate::operators::Operator;

/// Largest registry file accepted by the import route.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

impl From<EnrolError> for ApiError {
    fn from(e: EnrolError) -> Self {
        let status = match &e {
            EnrolError::UnknownProfessional(_) | EnrolError::UnknownCard(_) => {
                StatusCode::NOT_FOUND
            }
            EnrolError::ProfessionalExists(_) | EnrolError::Stale(_) => StatusCode::CONFLICT,
            // Nothing was written for a reason that passes (disk reserve, database failing over
            // or a standby): retry later.
            EnrolError::Store(
                cps_store::StoreError::Refused(_)
                | cps_store::StoreError::Poisoned { .. }
                | cps_store::StoreError::ReadOnly(_)
                | cps_store::StoreError::Unavailable(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            EnrolError::Invalid(_)
            | EnrolError::UnknownActivity { .. }
            | EnrolError::ActivityNotForLogin { .. }
            | EnrolError::ProfessionalNotActive { .. }
            | EnrolError::CardStatus { .. }
            | EnrolError::CardNotBlank(_)
            | EnrolError::WrongCard { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "card service error");
        }
        ApiError::new(status, e.to_string())
    }
}

pub(crate) fn cards(st: &ApiState) -> Result<Arc<CardService>, ApiError> {
    st.cards.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "card issuance is not available on this appliance",
        )
    })
}

fn actor(op: &Operator) -> String {
    format!("operator:{}", op.name)
}

fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Text searched in names and identifiers (accents ignored).
    #[serde(default)]
    pub q: String,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/professionals", tag = "registry", params(SearchQuery),
    responses((status = 200, description = "a page of professionals", body = cps_api::ProfessionalPage)))]
pub async fn search(
    State(st): State<ApiState>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let limit = q.limit.unwrap_or(50).clamp(1, cps_enrol::MAX_PAGE);
    let page = blocking(move || {
        cards
            .registry()
            .search(&q.q, q.after.map(cps_enrol::Cursor).as_ref(), limit)
    })
    .await?;
    Ok(Json(cps_api::ProfessionalPage {
        professionals: page.items.iter().map(Into::into).collect(),
        next: page.next.map(|c| c.0),
    })
    .into_response())
}

#[utoipa::path(get, path = "/api/v1/professionals/{idnat}", tag = "registry",
    params(("idnat" = String, Path, description = "IdNat_PS")),
    responses((status = 200, description = "the professional and their cards", body = cps_api::ProfessionalCards)))]
pub async fn get_professional(
    State(st): State<ApiState>,
    UrlPath(idnat): UrlPath<String>,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let (p, c) = blocking(move || {
        let p = cards.registry().require(&idnat)?;
        let c = cards.cards_of(&idnat, None)?;
        Ok::<_, EnrolError>((p, c))
    })
    .await?;
    Ok(Json(cps_api::ProfessionalCards {
        professional: (&p).into(),
        cards: c.iter().map(Into::into).collect(),
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/professionals", tag = "registry",
    request_body = cps_api::ProfessionalData,
    responses((status = 201, description = "the professional registered", body = cps_api::Professional)))]
pub async fn create_professional(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let data = cps_enrol::ProfessionalData::from(json::<cps_api::ProfessionalData>(&body)?);
    let who = actor(&op);
    let p = blocking(move || {
        cards
            .registry()
            .create(data, &who, crate::clock::unix_now())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(cps_api::Professional::from(&p))).into_response())
}

#[utoipa::path(post, path = "/api/v1/professionals/{idnat}/status", tag = "registry",
    params(("idnat" = String, Path, description = "IdNat_PS")),
    request_body = cps_api::StatusRequest,
    responses((status = 200, description = "the change and its effect on cards and enrolments", body = cps_api::StatusChangeView)))]
pub async fn set_status(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    UrlPath(idnat): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let b: cps_api::StatusRequest = json(&body)?;
    let status = ProfessionalStatus::from_name(&b.status).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("status '{}' must be active, suspended or left", b.status),
        )
    })?;
    let who = actor(&op);
    let change = blocking(move || {
        cards.set_professional_status(&idnat, status, &who, crate::clock::unix_now())
    })
    .await?;
    Ok(Json(cps_api::StatusChangeView {
        professional: (&change.professional).into(),
        cards: change.cards.iter().map(Into::into).collect(),
        aborted_enrolments: change.aborted_enrolments,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Check the file and report, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[utoipa::path(post, path = "/api/v1/professionals/import", tag = "registry", params(ImportQuery),
    request_body(description = "the registry file", content((String = "text/csv"))),
    responses((status = 202, description = "the import job (its result is an ImportReport)", body = cps_api::JobStarted)))]
pub async fn import(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    caller: CertFingerprint,
    Query(q): Query<ImportQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let id = st
        .jobs
        .start_import(cards, body.to_vec(), q.dry_run, actor(&op), caller.0);
    Ok((StatusCode::ACCEPTED, Json(cps_api::JobStarted { job: id })).into_response())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "the job")),
    responses((status = 200, description = "the job (the initial PIN and PUK once, to whoever started it)", body = cps_api::Job)))]
pub async fn job(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    caller: CertFingerprint,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let view = st
        .jobs
        .peek(&id)
        .ok_or_else(|| match st.jobs.elsewhere(&id) {
            // Jobs run where the card reader is, and live in that node's memory.
            Some(node) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "job '{id}' runs on node '{node}', not on this node ('{}'): ask that node",
                    st.node
                ),
            ),
            None => ApiError::new(StatusCode::NOT_FOUND, format!("no job '{id}'")),
        })?;
    // The initial PIN/PUK go only to the certificate that started the enrolment, once it has
    // finished (a finished job never changes again, so this view and the secrets agree).
    // Their delivery is audited before they leave (503 and still held if it cannot be).
    let secrets = if view.status != "running" && view.secrets_held {
        let (jobs, store, id2) = (st.jobs.clone(), st.ca.store().clone(), id.clone());
        let actor = format!("operator:{}", op.name);
        blocking(move || {
            jobs.deliver_secrets(&id2, &caller.0, &actor, store.as_ref(), crate::clock::unix_now())
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot audit the delivery of a card's initial PIN and PUK");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the delivery of the initial PIN and PUK could not be audited; they are kept: try again later",
                    )
                })
        })
        .await?
    } else {
        None
    };
    let body = cps_enrol::jobs::job_json(&view, secrets.as_ref()).map_err(|e| {
        tracing::error!(error = %e, job = %id, "job answer");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the appliance log)",
        )
    })?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from(body),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/readers", tag = "cards",
    responses((status = 200, description = "the appliance's card readers", body = Vec<cps_api::Reader>)))]
pub async fn readers() -> Result<Response, ApiError> {
    let list =
        tokio::task::spawn_blocking(|| cps_card::Pcsc::establish().and_then(|p| p.readers()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("PC/SC: {e}")))?;
    let list: Vec<cps_api::Reader> = list
        .iter()
        .map(|r| cps_api::Reader {
            name: r.name.clone(),
            card_present: r.card_present,
        })
        .collect();
    Ok(Json(list).into_response())
}

#[utoipa::path(post, path = "/api/v1/cards/enrol", tag = "cards", request_body = cps_api::EnrolRequest,
    responses((status = 202, description = "the enrolment job (its result is a Card)", body = cps_api::JobStarted)))]
pub async fn enrol(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    caller: CertFingerprint,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let b: cps_api::EnrolRequest = json(&body)?;
    let id = st.jobs.start_enrolment(
        cards,
        b.reader,
        cps_enrol::EnrolRequest {
            idnat_ps: b.idnat_ps,
            structure_id: b.structure_id,
            replaces: b.replaces,
        },
        actor(&op),
        caller.0,
    );
    Ok((StatusCode::ACCEPTED, Json(cps_api::JobStarted { job: id })).into_response())
}

#[utoipa::path(get, path = "/api/v1/cards/{serial}", tag = "cards",
    params(("serial" = String, Path, description = "card serial")),
    responses((status = 200, description = "the card", body = cps_api::Card)))]
pub async fn get_card(
    State(st): State<ApiState>,
    UrlPath(serial): UrlPath<String>,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let s2 = serial.clone();
    let card = blocking(move || cards.card(&s2)).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no card with serial '{serial}' is registered"),
        )
    })?;
    Ok(Json(cps_api::Card::from(&card)).into_response())
}

fn connect(reader: Option<&str>) -> Result<cps_card::Piv<cps_card::PcscCard>, EnrolError> {
    let card = |e: cps_card::CardError| EnrolError::Invalid(format!("card: {e}"));
    let pcsc = cps_card::Pcsc::establish().map_err(card)?;
    let name = pcsc.resolve_reader(reader).map_err(card)?;
    let c = pcsc.connect(&name).map_err(card)?;
    cps_card::Piv::select(c).map_err(card)
}

#[utoipa::path(post, path = "/api/v1/cards/{serial}/{action}", tag = "cards",
    params(("serial" = String, Path, description = "card serial"),
        ("action" = String, Path, description = "suspend, resume, oppose, renew or unblock")),
    request_body(content = cps_api::CardActionRequest, description = "what the action needs (may be empty for suspend and resume)"),
    responses((status = 200, description = "the card after the action", body = cps_api::Card)))]
pub async fn card_action(
    State(st): State<ApiState>,
    Extension(op): Extension<Operator>,
    UrlPath((serial, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cards = cards(&st)?;
    let b: cps_api::CardActionRequest = if body.is_empty() {
        cps_api::CardActionRequest::default()
    } else {
        json(&body)?
    };
    let who = actor(&op);
    let missing = |f: &str| ApiError::new(StatusCode::BAD_REQUEST, format!("'{f}' is required"));
    let now = crate::clock::unix_now();
    let card = match action.as_str() {
        "suspend" => {
            blocking(move || cards.suspend_card(&serial, &who, now))
                .await?
                .card
        }
        "resume" => {
            blocking(move || cards.resume_card(&serial, &who, now))
                .await?
                .card
        }
        "oppose" => {
            let reason = b.reason.ok_or_else(|| missing("reason"))?;
            let reason = OppositionReason::from_name(&reason).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("opposition reason '{reason}' must be lost, stolen or destroyed"),
                )
            })?;
            blocking(move || cards.oppose_card(&serial, reason, &who, now))
                .await?
                .card
        }
        "renew" => {
            let pin = b.pin.ok_or_else(|| missing("pin"))?;
            blocking(move || {
                let mut piv = connect(b.reader.as_deref())?;
                cards.renew(&serial, &mut piv, &pin, &who, now, &mut |_| {})
            })
            .await?
            .card
        }
        "unblock" => {
            let puk = b.puk.ok_or_else(|| missing("puk"))?;
            let new_pin = b.new_pin.ok_or_else(|| missing("new_pin"))?;
            blocking(move || {
                let mut piv = connect(b.reader.as_deref())?;
                cards.unblock_pin(&serial, &mut piv, &puk, &new_pin, &who, now)?;
                cards.card(&serial)?.ok_or(EnrolError::UnknownCard(serial))
            })
            .await?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown card action '{other}'"),
            ));
        }
    };
    Ok(Json(cps_api::Card::from(&card)).into_response())
}
