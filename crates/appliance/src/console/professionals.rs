//! Home, professional search, the professional page and status changes.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use cps_console::form;
use cps_console::professionals::{view_home, view_professional, view_search};
use cps_enrol::ProfessionalStatus;

use super::{ConsoleError, Ctx, blocking, href_professional, html_response, query, see_other};

/// Search results per page.
const PAGE: usize = 25;

/// `GET /console/`.
pub(crate) async fn home(ctx: Ctx) -> Result<Response, ConsoleError> {
    let readers = super::readers().await;
    let open = match ctx.cards() {
        Ok(cards) => blocking(move || cards.open_enrolments()).await.ok(),
        Err(_) => None,
    };
    Ok(html_response(view_home(
        &ctx.viewer(),
        &readers,
        open.as_deref().unwrap_or_default(),
    )))
}

/// `GET /console/professionals?q=&after=`.
pub(crate) async fn search(ctx: Ctx, RawQuery(raw): RawQuery) -> Result<Response, ConsoleError> {
    let f = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let q = f.get("q").unwrap_or("").trim().to_owned();
    let after = f.text("after").map(|a| cps_enrol::Cursor(a.to_owned()));
    let cards = ctx.cards()?;
    let q2 = q.clone();
    let result = blocking(move || {
        let reg = cards.registry();
        let page = reg.search(&q2, after.as_ref(), PAGE)?;
        // An RPPS number alone: its IdNat_PS is 8 + RPPS.
        if page.items.is_empty()
            && after.is_none()
            && q2.len() == 11
            && q2.bytes().all(|b| b.is_ascii_digit())
        {
            return reg.search(&format!("8{q2}"), None, PAGE);
        }
        Ok(page)
    })
    .await;
    let v = ctx.viewer();
    match result {
        Ok(found) => Ok(html_response(view_search(&v, &q, Ok(&found)))),
        Err(e) => {
            let mut r = html_response(view_search(&v, &q, Err(e.detail())));
            *r.status_mut() = e.status();
            Ok(r)
        }
    }
}

/// `GET /console/professionals/{idnat}`.
pub(crate) async fn professional(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let f = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let (p, list) = ctx.professional_and_cards(&idnat).await?;
    Ok(html_response(view_professional(
        &ctx.viewer(),
        &p,
        &list,
        &f,
    )))
}

/// `POST /console/professionals/{idnat}/status`.
pub(crate) async fn set_status(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let f = form::parse_urlencoded(&body).map_err(|e| ctx.error(e))?;
    ctx.check_post(f.get("csrf"))?;
    let status = f
        .get("status")
        .and_then(ProfessionalStatus::from_name)
        .ok_or_else(|| {
            ctx.error(ConsoleError::new(
                StatusCode::BAD_REQUEST,
                "Choose a status",
                "The status must be active, suspended or left.",
            ))
        })?;
    if status == ProfessionalStatus::Left && f.get("confirm") != Some("yes") {
        return Err(ctx.error(ConsoleError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Confirmation needed",
            "Recording that a professional left revokes all their cards for good: tick the confirmation box and submit again.",
        )));
    }
    let cards = ctx.cards()?;
    let who = ctx.actor();
    let now = ctx.now;
    let id2 = idnat.clone();
    let change = blocking(move || cards.set_professional_status(&id2, status, &who, now))
        .await
        .map_err(|e| ctx.error(e))?;
    Ok(see_other(&format!(
        "{}?done=status&pending={}",
        href_professional(&idnat),
        change.revocations.pending.len()
    )))
}
