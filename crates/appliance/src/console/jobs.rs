//! Enrolment (form → background job → live progress → result with the PIN mailer) and the
//! registry import (upload → background job → progress bar → line-by-line report).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_console::jobs::{
    EnrolForm, EnrolJob, PIN_SLOT, PUK_SLOT, Secrets, view_enrol_form, view_enrol_job,
    view_import_form, view_import_job,
};
use cps_console::{Job, JobStep, form};
use cps_enrol::{Card, ImportReport};

use super::{
    ConsoleError, Ctx, EnrolJobMeta, blocking, full_name, href_job, html_response, query, see_other,
};
use cps_enrol::JobView;

fn enrol_form_page(ctx: &Ctx, f: EnrolForm<'_>) -> Response {
    let status = if f.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, html_response(view_enrol_form(&ctx.viewer(), &f))).into_response()
}

/// `GET /console/professionals/{idnat}/enrol?activity=`.
pub(crate) async fn enrol_form(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let q = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let (p, list) = ctx.professional_and_cards(&idnat).await?;
    let readers = super::readers().await;
    Ok(enrol_form_page(
        &ctx,
        EnrolForm {
            professional: &p,
            cards: &list,
            readers: &readers,
            activity: q.text("activity"),
            reader: q.text("reader"),
            replaces: None,
            error: None,
        },
    ))
}

/// `POST /console/professionals/{idnat}/enrol`: starts the job, then shows its page.
pub(crate) async fn enrol(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let f = form::parse_urlencoded(&body).map_err(|e| ctx.error(e))?;
    ctx.check_post(f.get("csrf"))?;
    let cards = ctx.cards()?;
    let (p, list) = ctx.professional_and_cards(&idnat).await?;
    let structure_id = f.text("structure_id");
    let reader = f.text("reader");
    let replaces = f.text("replaces");
    let problem = match (structure_id, reader) {
        _ if p.status != cps_enrol::ProfessionalStatus::Active => Some(format!(
            "{} is {}: enrolment needs an active professional.",
            full_name(&p),
            p.status.name()
        )),
        (None, _) => Some("Choose the activity the card is for.".to_owned()),
        (_, None) => Some("Choose the card reader holding the blank card.".to_owned()),
        (Some(s), _) if p.activity(s).is_none() => Some(format!(
            "{} has no activity at structure '{s}'.",
            full_name(&p)
        )),
        (Some(s), _) if cps_enrol::codes::structure_login_problem(s).is_some() => Some(format!(
            "The activity at structure '{s}' cannot be used for card login: '{s}' is not a \
             struct_IdNat ({}). Register the activity under the structure's struct_IdNat \
             (e.g. 1 + FINESS) first.",
            cps_enrol::codes::structure_login_problem(s).unwrap_or_default()
        )),
        (Some(s), _) => replaces.and_then(|r| match list.iter().find(|c| c.serial == r) {
            None => Some(format!("Card {r} is not one of this professional's cards.")),
            Some(c) if c.structure_id != s => Some(format!(
                "Card {r} belongs to another activity ({}): a replacement card is for the same activity.",
                c.structure_id
            )),
            Some(_) => None,
        }),
    };
    if let Some(problem) = problem {
        let readers = super::readers().await;
        return Ok(enrol_form_page(
            &ctx,
            EnrolForm {
                professional: &p,
                cards: &list,
                readers: &readers,
                activity: structure_id,
                reader,
                replaces,
                error: Some(problem),
            },
        ));
    }
    let (Some(structure_id), Some(reader)) = (structure_id, reader) else {
        return Err(ctx.error(ConsoleError::bad_request(
            "activity and reader are required",
        )));
    };
    let id = ctx.st.jobs.start_enrolment(
        cards,
        reader.to_owned(),
        cps_enrol::EnrolRequest {
            idnat_ps: idnat.clone(),
            structure_id: structure_id.to_owned(),
            replaces: replaces.map(str::to_owned),
        },
        ctx.actor(),
        ctx.caller().0,
    );
    ctx.console.remember(
        &id,
        EnrolJobMeta {
            idnat_ps: idnat,
            structure_id: structure_id.to_owned(),
            reader: reader.to_owned(),
        },
    );
    Ok(see_other(&href_job(&id)))
}

fn job_not_found(ctx: &Ctx, id: &str) -> ConsoleError {
    // Jobs run where the card reader is, and live in that node's memory.
    let message = match ctx.st.jobs.elsewhere(id) {
        Some(node) => format!(
            "Job '{id}' runs on node '{node}', not on this node ('{}'): open it on that node.",
            ctx.st.node
        ),
        None => format!(
            "There is no job '{id}' on this appliance (jobs end with the appliance process)."
        ),
    };
    ctx.error(ConsoleError::not_found(message))
}

/// `GET /console/jobs/{id}`: live progress while running, the outcome after.
pub(crate) async fn job_page(
    ctx: Ctx,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ConsoleError> {
    let view = ctx
        .st
        .jobs
        .peek(&id)
        .ok_or_else(|| job_not_found(&ctx, &id))?;
    match view.kind.as_str() {
        "enrol" => enrol_job_page(&ctx, view).await,
        _ => Ok(import_job_page(&ctx, view)),
    }
}

async fn enrol_job_page(ctx: &Ctx, view: JobView) -> Result<Response, ConsoleError> {
    let meta = ctx.console.meta(&view.id);
    let card: Option<Card> = view
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let idnat = card
        .as_ref()
        .map(|c| c.idnat_ps.clone())
        .or_else(|| meta.as_ref().map(|m| m.idnat_ps.clone()));
    let professional = match (idnat, ctx.cards()) {
        (Some(i), Ok(cards)) => blocking(move || cards.registry().get(&i))
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    let v = ctx.viewer();
    let job = EnrolJob {
        view: &job_of(&view),
        meta: meta.as_ref(),
        professional: professional.as_ref(),
        card: card.as_ref(),
    };
    // The initial PIN/PUK go only to the certificate that started the enrolment, once it has
    // finished, and never to a request another site triggered.
    let mine = view.owner == ctx.caller().0;
    let mailer = view.status != "running" && view.secrets_held && mine && ctx.same_site_fetch;
    if card.is_none() {
        return Ok(html_response(view_enrol_job(&v, &job, Secrets::Nothing)));
    }
    if !mailer {
        return Ok(html_response(view_enrol_job(
            &v,
            &job,
            Secrets::Note { mine },
        )));
    }
    // The page is complete, with slots for the codes, before the codes leave the job.
    let page_html = view_enrol_job(&v, &job, Secrets::Mailer);
    cps_enrol::jobs::check_slots(&page_html, &[PIN_SLOT, PUK_SLOT])
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    // Their delivery is audited before they leave (an error page, and they stay held, if it
    // cannot be).
    let delivered = {
        let (jobs, store, id, caller, actor) = (
            ctx.st.jobs.clone(),
            ctx.st.ca.store().clone(),
            view.id.clone(),
            ctx.caller().0,
            ctx.actor(),
        );
        tokio::task::spawn_blocking(move || {
            jobs.deliver_secrets(&id, &caller, &actor, store.as_ref(), crate::clock::unix_now())
        })
        .await
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot audit the delivery of a card's initial PIN and PUK");
            ctx.error(ConsoleError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "A service is unavailable",
                "The delivery of the initial PIN and PUK could not be audited; they are kept: reload this page later.",
            ))
        })?
    };
    let Some(secrets) = delivered else {
        // Taken meanwhile by another request of the same certificate.
        return Ok(html_response(view_enrol_job(
            &v,
            &job,
            Secrets::Note { mine: true },
        )));
    };
    let (pin, puk) = cps_enrol::jobs::secret_digits(&secrets)
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    let body = cps_enrol::jobs::fill_slots(&page_html, &[(PIN_SLOT, pin), (PUK_SLOT, puk)])
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from(body),
    )
        .into_response())
}

/// A job as its page shows it.
fn job_of(v: &JobView) -> Job {
    Job {
        id: v.id.clone(),
        actor: v.actor.clone(),
        status: v.status.clone(),
        events: v
            .events
            .iter()
            .map(|e| JobStep {
                step: e.step.clone(),
                state: e.state.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        progress: v.progress.clone(),
        error: v.error.clone(),
    }
}

/// `GET /console/jobs/{id}/status`: the job without its secrets, for the page's script.
pub(crate) async fn job_status(
    ctx: Ctx,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ConsoleError> {
    let v = ctx
        .st
        .jobs
        .peek(&id)
        .ok_or_else(|| job_not_found(&ctx, &id))?;
    let progress = v.progress.as_ref().map(
        |(phase, done, total)| serde_json::json!({ "phase": phase, "done": done, "total": total }),
    );
    let events: Vec<serde_json::Value> = v
        .events
        .iter()
        .map(|e| serde_json::json!({ "step": e.step, "state": e.state, "detail": e.detail }))
        .collect();
    Ok(Json(serde_json::json!({
        "id": v.id,
        "kind": v.kind,
        "status": v.status,
        "events": events,
        "progress": progress,
        "error": v.error,
    }))
    .into_response())
}

fn import_job_page(ctx: &Ctx, view: JobView) -> Response {
    let report: Option<ImportReport> = view
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    html_response(view_import_job(
        &ctx.viewer(),
        &job_of(&view),
        report.as_ref(),
    ))
}

/// `GET /console/import`.
pub(crate) async fn import_form(ctx: Ctx) -> Result<Response, ConsoleError> {
    Ok(html_response(view_import_form(&ctx.viewer())))
}

/// `POST /console/import` (multipart: `csrf`, `file`, `dry_run`).
pub(crate) async fn import(
    ctx: Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = form::multipart_boundary(ct).map_err(|e| ctx.error(e))?;
    let parts = form::parse_multipart(&body, &boundary).map_err(|e| ctx.error(e))?;
    let field = |name: &str| parts.iter().find(|p| p.name == name);
    let token = field("csrf").and_then(|p| std::str::from_utf8(p.data).ok());
    ctx.check_post(token)?;
    let file = field("file")
        .filter(|p| !p.data.is_empty())
        .ok_or_else(|| {
            ctx.error(ConsoleError::new(
                StatusCode::BAD_REQUEST,
                "No file",
                "Choose the registry file to upload.",
            ))
        })?;
    let dry_run = field("dry_run").is_some_and(|p| p.data == b"1");
    let cards = ctx.cards()?;
    let id = ctx.st.jobs.start_import(
        cards,
        file.data.to_vec(),
        dry_run,
        ctx.actor(),
        ctx.caller().0,
    );
    Ok(see_other(&href_job(&id)))
}
