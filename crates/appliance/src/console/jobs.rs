//! Enrolment (form → background job → live progress → result with the PIN mailer) and the
//! registry import (upload → background job → progress bar → line-by-line report).

use std::fmt::Write;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_enrol::{Card, ImportReport, Professional, Step};

use super::html::{Tone, badge, day, esc, notice};
use super::{
    ConsoleError, Ctx, EnrolJobMeta, blocking, form, href_card, href_certificate, href_job,
    href_professional, html_response, query, see_other,
};
use crate::cards::JobView;

fn full_name(p: &Professional) -> String {
    format!("{} {}", p.data.surname, p.data.given_names)
}

/// What the enrolment form shows and remembers.
struct EnrolForm<'a> {
    professional: &'a Professional,
    cards: &'a [Card],
    readers: &'a Result<Vec<(String, bool)>, String>,
    activity: Option<&'a str>,
    reader: Option<&'a str>,
    replaces: Option<&'a str>,
    error: Option<String>,
}

fn enrol_form_page(ctx: &Ctx, f: EnrolForm<'_>) -> Response {
    let p = f.professional;
    let mut page = ctx
        .page("Enrol a card")
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(full_name(p), Some(href_professional(p.idnat_ps())))
        .crumb("Enrol a card", None);
    if let Some(e) = &f.error {
        notice(
            &mut page.notices,
            Tone::Error,
            "The enrolment was not started.",
            Some(e),
        );
    }
    let active = p.status == cps_enrol::ProfessionalStatus::Active;
    if !active {
        notice(
            &mut page.notices,
            Tone::Warning,
            &format!("This professional is {}.", p.status.name()),
            Some("A card is enrolled only for an active professional: change the status first."),
        );
    }
    let b = &mut page.body;
    let _ = write!(
        b,
        "<p class=\"lead\">A new CPS card for <strong>{}</strong> <span class=\"muted\">({}, IdNat_PS <code>{}</code>)</span>.</p>",
        esc(&full_name(p)),
        esc(p.profession_label()),
        esc(p.idnat_ps())
    );
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{}/enrol\" class=\"stack\" id=\"enrol-form\">{}",
        esc(&href_professional(p.idnat_ps())),
        ctx.csrf_field()
    );
    b.push_str("<fieldset><legend>Activity the card is for</legend>");
    let default_activity = f.activity.or_else(|| {
        p.data
            .activities
            .iter()
            .find(|a| {
                !f.cards
                    .iter()
                    .any(|c| c.structure_id == a.structure_id && !c.status.is_terminal())
            })
            .or(p.data.activities.first())
            .map(|a| a.structure_id.as_str())
    });
    for (i, a) in p.data.activities.iter().enumerate() {
        let has_card = f
            .cards
            .iter()
            .any(|c| c.structure_id == a.structure_id && !c.status.is_terminal());
        let _ = write!(
            b,
            "<div class=\"choice\"><input type=\"radio\" name=\"structure_id\" id=\"activity-{i}\" value=\"{}\"{} required>\
             <label for=\"activity-{i}\">{} <code class=\"muted\">{}</code></label>\
             <p class=\"hint\">{}{}</p></div>",
            esc(&a.structure_id),
            if Some(a.structure_id.as_str()) == default_activity {
                " checked"
            } else {
                ""
            },
            esc(&a.structure_name),
            esc(&a.structure_id),
            esc(a.secteur_label().unwrap_or("?")),
            if has_card {
                " · already has a card: choose it below as the card replaced"
            } else {
                ""
            }
        );
    }
    b.push_str("</fieldset><fieldset><legend>Card reader</legend>");
    let mut can_submit = active;
    match f.readers {
        Ok(list) if list.is_empty() => {
            can_submit = false;
            b.push_str("<p>No card reader is connected to the appliance.</p>");
        }
        Ok(list) => {
            let default_reader = f
                .reader
                .or_else(|| list.iter().find(|r| r.1).map(|r| r.0.as_str()))
                .or(list.first().map(|r| r.0.as_str()));
            for (i, (name, present)) in list.iter().enumerate() {
                let _ = write!(
                    b,
                    "<div class=\"choice\"><input type=\"radio\" name=\"reader\" id=\"reader-{i}\" value=\"{}\"{} required>\
                     <label for=\"reader-{i}\">{}</label> {}</div>",
                    esc(name),
                    if Some(name.as_str()) == default_reader {
                        " checked"
                    } else {
                        ""
                    },
                    esc(name),
                    if *present {
                        badge("active", "card present")
                    } else {
                        badge("neutral", "empty")
                    }
                );
            }
        }
        Err(e) => {
            can_submit = false;
            notice(
                b,
                Tone::Warning,
                "The card readers cannot be listed.",
                Some(e),
            );
        }
    }
    b.push_str("</fieldset>");
    let replaceable: Vec<&Card> = f.cards.iter().filter(|c| !c.status.is_terminal()).collect();
    if !replaceable.is_empty() {
        b.push_str("<div class=\"field\"><label for=\"replaces\">Card replaced</label><select id=\"replaces\" name=\"replaces\">");
        let _ = write!(
            b,
            "<option value=\"\"{}>None: a first card for this activity</option>",
            if f.replaces.is_none() {
                " selected"
            } else {
                ""
            }
        );
        for c in replaceable {
            let _ = write!(
                b,
                "<option value=\"{}\"{}>{} · {} · {}</option>",
                esc(&c.serial),
                if f.replaces == Some(c.serial.as_str()) {
                    " selected"
                } else {
                    ""
                },
                esc(&c.serial),
                esc(&c.structure_id),
                esc(&c.status.to_string())
            );
        }
        b.push_str("</select><p class=\"hint\">The replaced card is retired at the end of the enrolment and its certificates are revoked as superseded.</p></div>");
    }
    b.push_str("<p class=\"hint\">Put a blank card in the reader and leave it there until the enrolment ends (a few seconds). \
                The card's keys are generated on the card; the CPS authentication and signature certificates are then written to it.</p>");
    let _ = write!(
        b,
        "<p><button type=\"submit\"{}>Start the enrolment</button> <a href=\"{}\" class=\"button secondary\">Cancel</a></p></form>",
        if can_submit { "" } else { " disabled" },
        esc(&href_professional(p.idnat_ps()))
    );
    let status = if f.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, html_response(page.render())).into_response()
}

/// `GET /console/professionals/{idnat}/enrol?activity=`.
pub(crate) async fn enrol_form(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let q = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let cards = ctx.cards()?;
    let (p, list) = blocking(move || {
        let p = cards.registry().require(&idnat)?;
        let c = cards.cards_of(&idnat, None)?;
        Ok((p, c))
    })
    .await
    .map_err(|e| ctx.error(e))?;
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
    let c2 = cards.clone();
    let id2 = idnat.clone();
    let (p, list) = blocking(move || {
        let p = c2.registry().require(&id2)?;
        let c = c2.cards_of(&id2, None)?;
        Ok((p, c))
    })
    .await
    .map_err(|e| ctx.error(e))?;
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
        ctx.caller(),
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

/// The state of each enrolment step after the job's events: (state, detail).
fn step_states(view: &JobView) -> Vec<(Step, &'static str, Option<String>)> {
    Step::ALL
        .iter()
        .map(|s| {
            let last = view.events.iter().rev().find(|e| e.step == s.name());
            let (state, detail) = match last {
                None => ("waiting", None),
                Some(e) => (
                    match e.state.as_str() {
                        "started" => "started",
                        "done" => "done",
                        "skipped" => "skipped",
                        "failed" => "failed",
                        _ => "waiting",
                    },
                    e.detail.clone(),
                ),
            };
            (*s, state, detail)
        })
        .collect()
}

fn state_text(state: &str) -> &'static str {
    match state {
        "started" => "in progress",
        "done" => "done",
        "skipped" => "skipped",
        "failed" => "failed",
        _ => "waiting",
    }
}

fn job_not_found(ctx: &Ctx, id: &str) -> ConsoleError {
    ctx.error(ConsoleError::not_found(format!(
        "There is no job '{id}' on this appliance (jobs end with the appliance process)."
    )))
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

/// Where the PIN mailer's codes go in the page: markers that escaped text cannot contain (it
/// never holds a raw `<`), filled into the answer's own buffer ([`crate::cards::fill_slots`]).
const PIN_SLOT: &str = "<cps-trust-slot pin>";
const PUK_SLOT: &str = "<cps-trust-slot puk>";

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
    let title = match view.status.as_str() {
        "running" => "Enrolling a card",
        "done" => "Card enrolled",
        _ => "Enrolment failed",
    };
    let mut page = ctx.page(title);
    if let Some(p) = &professional {
        page = page
            .crumb("Search", Some("/console/professionals".into()))
            .crumb(full_name(p), Some(href_professional(p.idnat_ps())));
    }
    page = page.crumb(title, None);
    page.class = "job";
    if view.status == "running" {
        page.refresh = Some(1);
    }
    let states = step_states(&view);
    match view.status.as_str() {
        "done" => {
            let serial = card.as_ref().map(|c| c.serial.as_str()).unwrap_or("?");
            notice(
                &mut page.notices,
                Tone::Success,
                &format!("Card {serial} is enrolled and registered."),
                None,
            );
        }
        "failed" => {
            let failed = states.iter().find(|s| s.1 == "failed");
            let title = match failed {
                Some((step, _, _)) => format!("The enrolment stopped at “{}”.", step.label()),
                None => "The enrolment could not start.".to_owned(),
            };
            notice(
                &mut page.notices,
                Tone::Error,
                &title,
                view.error.as_deref(),
            );
        }
        _ => {}
    }
    let b = &mut page.body;
    b.push_str("<dl class=\"facts compact\">");
    if let Some(p) = &professional {
        let _ = write!(
            b,
            "<dt>Professional</dt><dd><a href=\"{}\">{}</a> <code class=\"muted\">{}</code></dd>",
            esc(&href_professional(p.idnat_ps())),
            esc(&full_name(p)),
            esc(p.idnat_ps())
        );
    }
    if let Some(m) = &meta {
        let activity = professional
            .as_ref()
            .and_then(|p| p.activity(&m.structure_id))
            .map(|a| a.structure_name.clone())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<dt>Activity</dt><dd>{} <code class=\"muted\">{}</code></dd><dt>Reader</dt><dd>{}</dd>",
            esc(&activity),
            esc(&m.structure_id),
            esc(&m.reader)
        );
    }
    let _ = write!(
        b,
        "<dt>Started by</dt><dd>{}</dd></dl>",
        esc(view.actor.strip_prefix("operator:").unwrap_or(&view.actor))
    );
    let _ = write!(
        b,
        "<h2 id=\"steps-h\">Steps</h2><ol class=\"steps\" aria-labelledby=\"steps-h\" aria-live=\"polite\" data-job-status=\"{}/status\" data-job-state=\"{}\">",
        esc(&href_job(&view.id)),
        esc(&view.status)
    );
    for (step, state, detail) in &states {
        let _ = write!(
            b,
            "<li class=\"step step-{state}\" data-step=\"{}\"><span class=\"step-icon\" aria-hidden=\"true\"></span>\
             <span class=\"step-label\">{}</span> <span class=\"step-state\">{}</span>\
             <span class=\"step-detail\">{}</span></li>",
            step.name(),
            esc(step.label()),
            state_text(state),
            esc(detail.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</ol>");
    if view.status == "running" {
        b.push_str("<p class=\"hint\" id=\"live-hint\">This page follows the enrolment as it runs. Keep the card in the reader.</p>");
    }
    if view.status == "failed" {
        b.push_str("<p>Certificates issued before the failure are revoked (the message above says what happened to them). \
                    Check the card and the reader, then start the enrolment again.</p>");
        if let Some(p) = &professional {
            let _ = write!(
                b,
                "<p><a class=\"button\" href=\"{}/enrol\">Enrol again</a> <a class=\"button secondary\" href=\"{}\">Back to the professional</a></p>",
                esc(&href_professional(p.idnat_ps())),
                esc(&href_professional(p.idnat_ps()))
            );
        }
    }
    // The initial PIN/PUK go only to the certificate that started the enrolment, once it has
    // finished, and never to a request another site triggered.
    let mine = view.owner == ctx.caller();
    let mailer = view.status != "running" && view.secrets_held && mine && ctx.same_site_fetch;
    let Some(c) = &card else {
        return Ok(html_response(page.render()));
    };
    card_summary(b, c);
    let shown_once = "<p class=\"notice info\" role=\"status\">The initial PIN and PUK were shown once, when this page first opened after the enrolment, and are not kept anywhere.</p>";
    if !mailer {
        b.push_str(if mine {
            shown_once
        } else {
            "<p class=\"notice info\" role=\"status\">The initial PIN and PUK are shown only to the officer who enrolled the card, with the certificate they enrolled it with.</p>"
        });
        return Ok(html_response(page.render()));
    }
    // The page is complete, with slots for the codes, before the codes leave the job.
    let without = format!("{}{shown_once}", b);
    pin_mailer(b, c, professional.as_ref());
    let html = page.render();
    crate::cards::check_slots(&html, &[PIN_SLOT, PUK_SLOT])
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    // Their delivery is audited before they leave (an error page, and they stay held, if it
    // cannot be).
    let delivered = {
        let (jobs, store, id, caller, actor) = (
            ctx.st.jobs.clone(),
            ctx.st.ca.store().clone(),
            view.id.clone(),
            ctx.caller(),
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
        page.body = without;
        return Ok(html_response(page.render()));
    };
    let (pin, puk) = crate::cards::secret_digits(&secrets)
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    let body = crate::cards::fill_slots(&html, &[(PIN_SLOT, pin), (PUK_SLOT, puk)])
        .map_err(|e| ConsoleError::internal("PIN mailer", e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

fn card_summary(b: &mut String, c: &Card) {
    let _ = write!(
        b,
        "<section aria-labelledby=\"card-h\"><h2 id=\"card-h\">The card</h2><dl class=\"facts compact\">\
         <dt>Card serial</dt><dd><a href=\"{}\" id=\"card-link\"><code>{}</code></a></dd><dt>Token id</dt><dd><code>{}</code></dd></dl>",
        esc(&href_card(&c.serial)),
        esc(&c.serial),
        esc(&c.token_id)
    );
    b.push_str("<table class=\"certs\" id=\"card-certificates\"><caption>Certificates written to the card</caption><thead><tr><th scope=\"col\">Use</th><th scope=\"col\">Profile</th><th scope=\"col\">Serial</th><th scope=\"col\">Valid until</th></tr></thead><tbody>");
    for x in &c.certificates {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td></tr>",
            super::slot_label(x.slot),
            esc(&x.profile),
            esc(&href_certificate(&x.cert.issuer, &x.cert.serial)),
            esc(&x.cert.serial),
            esc(&day(x.not_after))
        );
    }
    b.push_str("</tbody></table></section>");
}

/// The PIN mailer, with [`PIN_SLOT`] and [`PUK_SLOT`] where the codes go.
fn pin_mailer(b: &mut String, c: &Card, p: Option<&Professional>) {
    b.push_str("<section class=\"pin-mailer\" aria-labelledby=\"mailer-h\"><h2 id=\"mailer-h\" class=\"no-print\">PIN mailer</h2>");
    b.push_str("<p class=\"no-print mailer-warning\">Shown once: print the mailer or hand the codes over now. They are not stored anywhere and this page will not show them again.</p>");
    b.push_str("<div class=\"mailer-sheet\"><p class=\"mailer-head\">Personal and confidential</p><p class=\"mailer-title\">Codes of your CPS card</p><dl class=\"facts compact\">");
    if let Some(p) = p {
        let _ = write!(
            b,
            "<dt>Holder</dt><dd>{}</dd><dt>IdNat_PS</dt><dd><code>{}</code></dd>",
            esc(&full_name(p)),
            esc(p.idnat_ps())
        );
    }
    let _ = write!(
        b,
        "<dt>Card</dt><dd><code>{}</code> (token <code>{}</code>)</dd></dl>\
         <dl class=\"codes\"><div><dt>PIN</dt><dd id=\"pin\">{}</dd></div><div><dt>PUK</dt><dd id=\"puk\">{}</dd></div></dl>\
         <p class=\"mailer-note\">Keep this letter apart from your card and destroy it once you know the codes. \
         The PIN protects your authentication and signature; after three wrong PINs the card is blocked and \
         your registration office unblocks it with the PUK.</p></div>",
        esc(&c.serial),
        esc(&c.token_id),
        PIN_SLOT,
        PUK_SLOT
    );
    b.push_str("<p class=\"no-print\"><button type=\"button\" data-print hidden>Print the PIN mailer</button> \
                <span class=\"hint\">Your browser's Print command prints the mailer alone.</span></p></section>");
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

fn phase_label(phase: &str) -> &'static str {
    match phase {
        "validating" => "Checking lines",
        "comparing" => "Comparing with the registry",
        "writing" => "Writing professionals",
        _ => "Working",
    }
}

fn import_job_page(ctx: &Ctx, view: JobView) -> Response {
    let report: Option<ImportReport> = view
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let title = match (view.status.as_str(), report.as_ref().map(|r| r.outcome)) {
        ("running", _) => "Importing the registry",
        (_, Some(cps_enrol::ImportOutcome::Imported)) => "Registry imported",
        (_, Some(cps_enrol::ImportOutcome::Unchanged)) => "Registry already up to date",
        (_, Some(cps_enrol::ImportOutcome::DryRun)) => "Registry file checked",
        _ => "Import refused",
    };
    let mut page = ctx
        .page(title)
        .crumb("Import registry", Some("/console/import".into()))
        .crumb(title, None);
    page.class = "job";
    if view.status == "running" {
        page.refresh = Some(1);
    }
    let (phase, done, total) = view
        .progress
        .clone()
        .unwrap_or_else(|| ("validating".into(), 0, 0));
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(0);
    let b = &mut page.body;
    let _ = write!(
        b,
        "<div class=\"import-progress\" data-job-status=\"{}/status\" data-job-state=\"{}\">\
         <p id=\"import-phase\"><span class=\"phase\">{}</span>: <span class=\"count\">{done} of {total}</span></p>\
         <progress id=\"import-bar\" max=\"{}\" value=\"{}\" aria-labelledby=\"import-phase\">{pct}%</progress></div>",
        esc(&href_job(&view.id)),
        esc(&view.status),
        phase_label(&phase),
        total.max(1),
        if view.status == "running" {
            done
        } else {
            total.max(1)
        }
    );
    if view.status != "running" {
        match &report {
            Some(r) => import_report(b, r),
            None => notice(b, Tone::Error, "The import failed.", view.error.as_deref()),
        }
        b.push_str(
            "<p><a class=\"button secondary\" href=\"/console/import\">Import another file</a></p>",
        );
    }
    html_response(page.render())
}

fn issues_table(b: &mut String, id: &str, caption: &str, issues: &[cps_enrol::LineIssue]) {
    let _ = write!(
        b,
        "<table class=\"issues\" id=\"{id}\"><caption>{}</caption><thead><tr><th scope=\"col\">Line</th><th scope=\"col\">Column</th><th scope=\"col\">Problem</th></tr></thead><tbody>",
        esc(caption)
    );
    for i in issues {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
            if i.line == 0 {
                "file".to_owned()
            } else {
                i.line.to_string()
            },
            esc(i.column.as_deref().unwrap_or("")),
            esc(&i.message)
        );
    }
    b.push_str("</tbody></table>");
}

fn import_report(b: &mut String, r: &ImportReport) {
    let (kind, text, detail) = match r.outcome {
        cps_enrol::ImportOutcome::Rejected => (
            Tone::Error,
            format!("{} error(s): nothing was imported.", r.error_count),
            "Correct the lines below and upload the file again.",
        ),
        cps_enrol::ImportOutcome::Unchanged => (
            Tone::Success,
            "The registry already holds exactly this file: nothing was written.".to_owned(),
            "",
        ),
        cps_enrol::ImportOutcome::Imported => (
            Tone::Success,
            format!(
                "{} created, {} updated, {} unchanged.",
                r.created, r.updated, r.unchanged
            ),
            "",
        ),
        cps_enrol::ImportOutcome::DryRun => (
            Tone::Info,
            format!(
                "The file is valid: {} would be created, {} updated, {} unchanged.",
                r.created, r.updated, r.unchanged
            ),
            "Nothing was written (check only).",
        ),
    };
    notice(b, kind, &text, (!detail.is_empty()).then_some(detail));
    let _ = write!(
        b,
        "<dl class=\"facts compact\" id=\"import-counts\"><dt>Data lines</dt><dd>{}</dd><dt>Professionals</dt><dd>{}</dd>\
         <dt>Activities</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>Updated</dt><dd>{}</dd><dt>Unchanged</dt><dd>{}</dd>\
         <dt>Errors</dt><dd>{}</dd><dt>Warnings</dt><dd>{}</dd><dt>File SHA-256</dt><dd><code class=\"wrap\">{}</code></dd></dl>",
        r.lines,
        r.professionals,
        r.activities,
        r.created,
        r.updated,
        r.unchanged,
        r.error_count,
        r.warnings.len(),
        esc(&r.file_sha256)
    );
    if !r.errors.is_empty() {
        issues_table(b, "import-errors", "Errors, line by line", &r.errors);
        if r.error_count > r.errors.len() {
            let _ = write!(
                b,
                "<p class=\"hint\">{} more error(s) are not listed.</p>",
                r.error_count - r.errors.len()
            );
        }
    }
    if !r.warnings.is_empty() {
        issues_table(b, "import-warnings", "Warnings (accepted)", &r.warnings);
    }
}

/// `GET /console/import`.
pub(crate) async fn import_form(ctx: Ctx) -> Result<Response, ConsoleError> {
    let mut page = ctx
        .page("Import the registry")
        .crumb("Import registry", None);
    let b = &mut page.body;
    b.push_str("<p class=\"lead\">Upload an extraction of the professional registry: the file is checked as a whole, \
                and imported only if every line is valid.</p>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/console/import\" enctype=\"multipart/form-data\" class=\"stack\" id=\"import-form\">{}\
         <div class=\"field\"><label for=\"file\">Registry file (CSV)</label>\
         <input type=\"file\" id=\"file\" name=\"file\" accept=\".csv,.txt,text/csv,text/plain\" required aria-describedby=\"file-hint\">\
         <p class=\"hint\" id=\"file-hint\">UTF-8 text close to the Annuaire Santé “personne-activité” extraction: a header line, then \
         one line per activity, columns separated by <kbd>|</kbd> or <kbd>;</kbd>. Required columns: Identification nationale PP, \
         Nom d'exercice, Prénom d'exercice, Code profession, Identifiant technique de la structure, Raison sociale site, \
         Code secteur d'activité (Code savoir-faire optional).</p></div>\
         <div class=\"choice\"><input type=\"checkbox\" id=\"dry_run\" name=\"dry_run\" value=\"1\">\
         <label for=\"dry_run\">Check only: validate and compare with the registry, write nothing</label></div>\
         <p><button type=\"submit\">Upload and import</button></p></form>",
        ctx.csrf_field()
    );
    b.push_str("<p class=\"hint\">Importing the same file again changes nothing; professionals are never deleted and their status is never changed by an import.</p>");
    Ok(html_response(page.render()))
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
        ctx.caller(),
    );
    Ok(see_other(&href_job(&id)))
}
