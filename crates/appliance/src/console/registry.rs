//! Registering a professional and editing their identity, profession and activities.
//!
//! The form has one row per activity plus empty rows to add more (without a script, a saved
//! form comes back with new empty rows). A problem is shown next to its field, with the same
//! rules as an import line and the CA ([`cps_enrol::ProfessionalData::normalise`]).

use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cps_console::form;
use cps_console::registry::{Draft, check, draft_of, view_form};
use cps_enrol::{Professional, ProfessionalData};

use super::{ConsoleError, Ctx, blocking, href_professional, html_response, see_other};

fn render(ctx: &Ctx, d: &Draft, existing: Option<&Professional>) -> Response {
    let status = if d.problems.is_empty() && d.general.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, html_response(view_form(&ctx.viewer(), d, existing))).into_response()
}

/// `GET /console/professionals/new`.
pub(crate) async fn new_form(ctx: Ctx) -> Result<Response, ConsoleError> {
    let d = Draft {
        data: ProfessionalData {
            idnat_ps: String::new(),
            surname: String::new(),
            given_names: String::new(),
            profession_code: String::new(),
            savoir_faire: None,
            activities: Vec::new(),
        },
        revision: None,
        problems: Vec::new(),
        general: None,
    };
    Ok(render(&ctx, &d, None))
}

/// `POST /console/professionals/new`.
pub(crate) async fn create(ctx: Ctx, body: Bytes) -> Result<Response, ConsoleError> {
    let f = form::parse_urlencoded(&body).map_err(|e| ctx.error(e))?;
    ctx.check_post(f.get("csrf"))?;
    let mut d = draft_of(&f);
    check(&mut d);
    if !d.problems.is_empty() {
        return Ok(render(&ctx, &d, None));
    }
    let cards = ctx.cards()?;
    let (who, now, data) = (ctx.actor(), ctx.now, d.data.clone());
    match blocking(move || cards.registry().create(data, &who, now)).await {
        Ok(p) => Ok(see_other(&format!(
            "{}?done=created",
            href_professional(p.idnat_ps())
        ))),
        Err(e) if e.status() != StatusCode::INTERNAL_SERVER_ERROR => {
            d.general = Some(e.detail().to_owned());
            Ok(render(&ctx, &d, None))
        }
        Err(e) => Err(ctx.error(e)),
    }
}

/// `GET /console/professionals/{idnat}/edit`.
pub(crate) async fn edit_form(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
) -> Result<Response, ConsoleError> {
    let cards = ctx.cards()?;
    let p = blocking(move || cards.registry().require(&idnat))
        .await
        .map_err(|e| ctx.error(e))?;
    let d = Draft {
        data: p.data.clone(),
        revision: Some(p.revision),
        problems: Vec::new(),
        general: None,
    };
    Ok(render(&ctx, &d, Some(&p)))
}

/// `POST /console/professionals/{idnat}/edit`.
pub(crate) async fn update(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let f = form::parse_urlencoded(&body).map_err(|e| ctx.error(e))?;
    ctx.check_post(f.get("csrf"))?;
    let cards = ctx.cards()?;
    let (p, list) = ctx.professional_and_cards(&idnat).await?;
    let mut d = draft_of(&f);
    // The IdNat_PS is the record's key: it is not edited.
    d.data.idnat_ps = p.data.idnat_ps.clone();
    let Some(revision) = d.revision else {
        return Err(ctx.error(ConsoleError::bad_request("the form lacks its revision")));
    };
    check(&mut d);
    // An activity that holds a card in service stays.
    for a in &p.data.activities {
        let in_service = list
            .iter()
            .any(|c| c.structure_id == a.structure_id && !c.status.is_terminal());
        if in_service
            && !d
                .data
                .activities
                .iter()
                .any(|x| x.structure_id == a.structure_id)
        {
            d.general = Some(format!(
                "The activity at {} ({}) has a card in service: oppose or replace the card before removing the activity.",
                a.structure_name, a.structure_id
            ));
        }
    }
    if !d.problems.is_empty() || d.general.is_some() {
        return Ok(render(&ctx, &d, Some(&p)));
    }
    let (who, now, data) = (ctx.actor(), ctx.now, d.data.clone());
    match blocking(move || cards.registry().update(data, revision, &who, now)).await {
        Ok(_) => Ok(see_other(&format!(
            "{}?done=updated",
            href_professional(&idnat)
        ))),
        Err(e) if e.status() != StatusCode::INTERNAL_SERVER_ERROR => {
            d.general = Some(e.detail().to_owned());
            Ok(render(&ctx, &d, Some(&p)))
        }
        Err(e) => Err(ctx.error(e)),
    }
}
