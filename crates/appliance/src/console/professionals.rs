//! Home, professional search, the professional page and status changes.

use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use cps_enrol::{Card, Professional, ProfessionalStatus};

use super::html::{Tone, badge, esc, notice, when};
use super::{
    ConsoleError, Ctx, blocking, done_notice, form, href_card, href_professional, html_response,
    query, see_other,
};

/// Search results per page.
const PAGE: usize = 25;

fn full_name(p: &Professional) -> String {
    format!("{} {}", p.data.surname, p.data.given_names)
}

fn search_form(out: &mut String, q: &str, autofocus: bool) {
    let _ = write!(
        out,
        "<form class=\"search\" action=\"/console/professionals\" method=\"get\" role=\"search\">\
         <label for=\"q\">IdNat_PS, RPPS number or name</label>\
         <div class=\"row\"><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" autocomplete=\"off\" spellcheck=\"false\" maxlength=\"200\" aria-describedby=\"q-hint\"{}>\
         <button type=\"submit\">Search</button></div>\
         <p class=\"hint\" id=\"q-hint\">Names match from their start; case and accents do not matter (<kbd>le gall j</kbd>). \
         An empty search lists everyone.</p></form>",
        esc(q),
        if autofocus { " autofocus" } else { "" }
    );
}

/// `GET /console/`.
pub(crate) async fn home(ctx: Ctx) -> Result<Response, ConsoleError> {
    let readers = super::readers().await;
    let open = match ctx.cards() {
        Ok(cards) => blocking(move || cards.open_enrolments()).await.ok(),
        Err(_) => None,
    };
    let mut page = ctx.page("Card issuing console");
    let b = &mut page.body;
    b.push_str("<p class=\"lead\">Find a health professional to see their cards, enrol a new CPS card or act on a card.</p>");
    search_form(b, "", true);
    b.push_str("<div class=\"columns\"><section class=\"panel\" aria-labelledby=\"readers-h\"><h2 id=\"readers-h\">Card readers</h2>");
    match &readers {
        Ok(list) if list.is_empty() => {
            b.push_str("<p>No card reader is connected to the appliance.</p>")
        }
        Ok(list) => {
            b.push_str("<ul class=\"readers\">");
            for (name, present) in list {
                let _ = write!(
                    b,
                    "<li><span class=\"reader-name\">{}</span> {}</li>",
                    esc(name),
                    if *present {
                        badge("active", "card present")
                    } else {
                        badge("neutral", "empty")
                    }
                );
            }
            b.push_str("</ul>");
        }
        Err(e) => notice(
            b,
            Tone::Warning,
            "The card readers cannot be listed.",
            Some(e),
        ),
    }
    b.push_str("</section><section class=\"panel\" aria-labelledby=\"you-h\"><h2 id=\"you-h\">Your access</h2>");
    if ctx.can_write() {
        b.push_str("<p>You may enrol cards, act on their lifecycle and change the registry.</p>");
        b.push_str("<p><a class=\"button secondary\" href=\"/console/professionals/new\">Register a professional</a> \
                    <a class=\"button secondary\" href=\"/console/import\">Import a registry file</a></p>");
    } else {
        b.push_str("<p>You may read the registry and the cards. Enrolment and card actions need the role <code>ra-officer</code>.</p>");
    }
    b.push_str("</section></div>");
    if let Some(open) = open.filter(|o| !o.is_empty()) {
        b.push_str(
            "<section aria-labelledby=\"open-h\"><h2 id=\"open-h\">Unfinished enrolments</h2>",
        );
        b.push_str("<p class=\"hint\">Interrupted enrolments have had their certificates revoked; they are resumed with the same card or aborted.</p>");
        b.push_str("<table><thead><tr><th scope=\"col\">Enrolment</th><th scope=\"col\">Professional</th><th scope=\"col\">Card</th><th scope=\"col\">State</th><th scope=\"col\">Since</th></tr></thead><tbody>");
        for e in open {
            let state = match &e.status {
                cps_enrol::EnrolmentStatus::Interrupted { step, error, .. } => format!(
                    "{} at “{}”: {}",
                    badge("failed", "interrupted"),
                    esc(step.label()),
                    esc(error)
                ),
                _ => badge("running", "running"),
            };
            let _ = write!(
                b,
                "<tr><td><code>{}</code></td><td><a href=\"{}\">{}</a></td><td><code>{}</code></td><td>{state}</td><td>{}</td></tr>",
                esc(&e.id),
                esc(&href_professional(&e.idnat_ps)),
                esc(&e.idnat_ps),
                esc(&e.card_serial),
                esc(&when(e.started_at))
            );
        }
        b.push_str("</tbody></table></section>");
    }
    Ok(html_response(page.render()))
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
    let title = if q.is_empty() {
        "All professionals".to_owned()
    } else {
        format!("Professionals matching “{q}”")
    };
    let mut page = ctx.page(title).crumb("Search", None);
    search_form(&mut page.body, &q, false);
    let found = match result {
        Ok(p) => p,
        Err(e) => {
            notice(
                &mut page.notices,
                Tone::Error,
                "The search was refused.",
                Some(e.detail()),
            );
            let mut r = html_response(page.render());
            *r.status_mut() = e.status();
            return Ok(r);
        }
    };
    let b = &mut page.body;
    if found.items.is_empty() {
        b.push_str("<p class=\"empty\" id=\"no-results\">No professional matches this search.</p>");
        return Ok(html_response(page.render()));
    }
    b.push_str("<table class=\"results\"><caption class=\"visually-hidden\">Search results</caption><thead><tr>\
        <th scope=\"col\">Name</th><th scope=\"col\">IdNat_PS</th><th scope=\"col\">Profession</th>\
        <th scope=\"col\">Activities</th><th scope=\"col\">Status</th></tr></thead><tbody>");
    for p in &found.items {
        let acts: Vec<String> = p
            .data
            .activities
            .iter()
            .map(|a| esc(&a.structure_name).to_string())
            .collect();
        let _ = write!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}\">{}</a></th><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&href_professional(p.idnat_ps())),
            esc(&full_name(p)),
            esc(p.idnat_ps()),
            esc(p.profession_label()),
            acts.join("<br>"),
            badge(p.status.name(), p.status.name())
        );
    }
    b.push_str("</tbody></table>");
    if let Some(next) = found.next {
        let _ = write!(
            b,
            "<p class=\"pager\"><a class=\"button secondary\" href=\"/console/professionals?q={}&amp;after={}\">Next results</a></p>",
            esc(&form::url_encode(&q)),
            esc(&form::url_encode(&next.0))
        );
    }
    Ok(html_response(page.render()))
}

fn number_line(idnat: &str) -> Option<(&'static str, String)> {
    let id = cps_pki::IdNatPs::parse(idnat).ok()?;
    match id.kind() {
        cps_pki::idnat::IdNatKind::Rpps => Some(("RPPS", id.number().to_owned())),
        cps_pki::idnat::IdNatKind::Adeli => Some(("ADELI", id.number().to_owned())),
        cps_pki::idnat::IdNatKind::StructureBased(_) => None,
    }
}

fn cards_cell(cards: &[&Card]) -> String {
    if cards.is_empty() {
        return "<span class=\"muted\">no card</span>".into();
    }
    let mut s = String::from("<ul class=\"plain\">");
    for c in cards {
        let _ = write!(
            s,
            "<li><a href=\"{}\"><code>{}</code></a> {}</li>",
            esc(&href_card(&c.serial)),
            esc(&c.serial),
            badge(c.status.name(), &c.status.to_string())
        );
    }
    s.push_str("</ul>");
    s
}

/// `GET /console/professionals/{idnat}`.
pub(crate) async fn professional(
    ctx: Ctx,
    UrlPath(idnat): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let f = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let cards = ctx.cards()?;
    let (p, list) = blocking(move || {
        let p = cards.registry().require(&idnat)?;
        let c = cards.cards_of(&idnat, None)?;
        Ok((p, c))
    })
    .await
    .map_err(|e| ctx.error(e))?;
    let mut page = ctx
        .page(full_name(&p))
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(full_name(&p), None);
    page.class = "professional";
    done_notice(&mut page.notices, &f);
    let b = &mut page.body;
    let _ = write!(
        b,
        "<p class=\"lead\">{} · {}</p>",
        esc(p.profession_label()),
        badge(p.status.name(), p.status.name())
    );
    b.push_str("<section class=\"panel\" aria-labelledby=\"id-h\"><h2 id=\"id-h\">Identity</h2>");
    if ctx.can_write() {
        let _ = write!(
            b,
            "<p class=\"panel-action\"><a class=\"button secondary\" href=\"{}/edit\">Edit the identity and activities</a></p>",
            esc(&href_professional(p.idnat_ps()))
        );
    }
    b.push_str("<dl class=\"facts\">");
    let _ = write!(
        b,
        "<dt>IdNat_PS</dt><dd><code id=\"idnat\">{}</code></dd>",
        esc(p.idnat_ps())
    );
    if let Some((kind, n)) = number_line(p.idnat_ps()) {
        let _ = write!(b, "<dt>{kind}</dt><dd><code>{}</code></dd>", esc(&n));
    }
    let _ = write!(
        b,
        "<dt>Surname</dt><dd>{}</dd><dt>Given names</dt><dd>{}</dd>\
         <dt>Profession</dt><dd>{} <span class=\"muted\">(TRE_G15 {})</span></dd>",
        esc(&p.data.surname),
        esc(&p.data.given_names),
        esc(p.profession_label()),
        esc(&p.data.profession_code)
    );
    if let Some(sf) = &p.data.savoir_faire {
        let _ = write!(b, "<dt>Savoir-faire</dt><dd><code>{}</code></dd>", esc(sf));
    }
    let _ = write!(
        b,
        "<dt>Status</dt><dd id=\"professional-status\">{}</dd><dt>Last change</dt><dd>{} <span class=\"muted\">(revision {})</span></dd></dl></section>",
        badge(p.status.name(), p.status.name()),
        esc(&when(p.updated_at)),
        p.revision
    );

    // Activities, each with its cards and the way to enrol one.
    b.push_str("<section aria-labelledby=\"act-h\"><h2 id=\"act-h\">Activities</h2>");
    b.push_str("<table class=\"activities\"><thead><tr><th scope=\"col\">Structure</th><th scope=\"col\">Secteur d'activité</th><th scope=\"col\">Cards</th>");
    if ctx.can_write() {
        b.push_str("<th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th>");
    }
    b.push_str("</tr></thead><tbody>");
    for a in &p.data.activities {
        let of_activity: Vec<&Card> = list
            .iter()
            .filter(|c| c.structure_id == a.structure_id)
            .collect();
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}<br><code class=\"muted\">{}</code></th><td>{} <span class=\"muted\">({})</span></td><td>{}</td>",
            esc(&a.structure_name),
            esc(&a.structure_id),
            esc(a.secteur_label().unwrap_or("?")),
            esc(&a.secteur_activite),
            cards_cell(&of_activity)
        );
        if ctx.can_write() {
            if p.status == ProfessionalStatus::Active {
                let _ = write!(
                    b,
                    "<td><a class=\"button\" href=\"{}/enrol?activity={}\" aria-label=\"Enrol a card for {}\">Enrol a card</a></td>",
                    esc(&href_professional(p.idnat_ps())),
                    esc(&form::url_encode(&a.structure_id)),
                    esc(&a.structure_name)
                );
            } else {
                b.push_str(
                    "<td><span class=\"muted\">enrolment needs an active professional</span></td>",
                );
            }
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></section>");

    // Every card, with its history.
    b.push_str("<section aria-labelledby=\"cards-h\"><h2 id=\"cards-h\">Cards</h2>");
    if list.is_empty() {
        b.push_str("<p class=\"empty\">No card has been enrolled for this professional.</p>");
    } else {
        b.push_str("<table class=\"cards\"><thead><tr><th scope=\"col\">Card serial</th><th scope=\"col\">Token id</th><th scope=\"col\">Activity</th><th scope=\"col\">Status</th><th scope=\"col\">Valid until</th><th scope=\"col\">Enrolled</th></tr></thead><tbody>");
        for c in &list {
            let until = c
                .certificates
                .iter()
                .map(|x| x.not_after)
                .min()
                .map(super::html::day)
                .unwrap_or_else(|| "—".into());
            let _ = write!(
                b,
                "<tr><th scope=\"row\"><a href=\"{}\"><code>{}</code></a></th><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} <span class=\"muted\">by {}</span></td></tr>",
                esc(&href_card(&c.serial)),
                esc(&c.serial),
                esc(&c.token_id),
                esc(&c.structure_id),
                badge(c.status.name(), &c.status.to_string()),
                esc(&until),
                esc(&when(c.enrolled_at)),
                esc(&c.enrolled_by)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");

    if ctx.can_write() {
        let _ = write!(
            b,
            "<section class=\"panel\" aria-labelledby=\"status-h\"><h2 id=\"status-h\">Change the status</h2>\
             <form method=\"post\" action=\"{}/status\" class=\"stack\">{}\
             <fieldset><legend>New status</legend>",
            esc(&href_professional(p.idnat_ps())),
            ctx.csrf_field()
        );
        for (value, label, hint) in [
            (
                "active",
                "Active",
                "may hold and receive cards; cards suspended with the professional are released",
            ),
            (
                "suspended",
                "Suspended",
                "every card is suspended (certificates on hold) and no card can be enrolled",
            ),
            (
                "left",
                "Left the profession",
                "every card is revoked for good; this cannot be undone",
            ),
        ] {
            let _ = write!(
                b,
                "<div class=\"choice\"><input type=\"radio\" name=\"status\" id=\"status-{value}\" value=\"{value}\"{}>\
                 <label for=\"status-{value}\">{label}</label><p class=\"hint\">{hint}</p></div>",
                if p.status.name() == value {
                    " checked"
                } else {
                    ""
                }
            );
        }
        b.push_str(
            "</fieldset><div class=\"choice\"><input type=\"checkbox\" name=\"confirm\" id=\"status-confirm\" value=\"yes\">\
             <label for=\"status-confirm\">I confirm the change (required for “Left the profession”)</label></div>\
             <p><button type=\"submit\" class=\"secondary\">Change the status</button></p></form></section>",
        );
    }
    Ok(html_response(page.render()))
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
