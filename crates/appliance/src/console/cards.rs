//! The card page and its lifecycle actions; certificate pages.

use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_enrol::{Card, CardCertificate, CardStatus, CertState, EnrolError, OppositionReason};

use super::html::{Tone, badge, day, esc, notice, when};
use super::{
    ConsoleError, Ctx, blocking, done_notice, form, href_card, href_certificate, href_professional,
    html_response, query, see_other, slot_label,
};
use cps_api::CertificateView;

fn cert_state_badge(s: Option<CertState>) -> String {
    match s {
        Some(CertState::Valid) => badge("valid", "valid"),
        Some(CertState::OnHold) => badge("on-hold", "on hold"),
        Some(CertState::Revoked(r)) => badge("revoked", &format!("revoked ({})", r.name())),
        None => badge("neutral", "unknown to the CA"),
    }
}

fn certs_table(
    b: &mut String,
    id: &str,
    caption: &str,
    certs: &[(CardCertificate, Option<CertState>)],
) {
    let _ = write!(
        b,
        "<table class=\"certs\" id=\"{id}\"><caption>{}</caption><thead><tr><th scope=\"col\">Use</th><th scope=\"col\">Profile</th>\
         <th scope=\"col\">Issuer</th><th scope=\"col\">Serial</th><th scope=\"col\">Valid until</th><th scope=\"col\">Status at the CA</th></tr></thead><tbody>",
        esc(caption)
    );
    for (c, state) in certs {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td><code>{}</code></td><td><a href=\"{}\"><code>{}</code></a></td><td>{}</td><td class=\"cert-status\">{}</td></tr>",
            slot_label(c.slot),
            esc(&c.profile),
            esc(&c.cert.issuer),
            esc(&href_certificate(&c.cert.issuer, &c.cert.serial)),
            esc(&c.cert.serial),
            esc(&day(c.not_after)),
            cert_state_badge(*state)
        );
    }
    b.push_str("</tbody></table>");
}

fn reader_choices(b: &mut String, prefix: &str, readers: &Result<Vec<(String, bool)>, String>) {
    match readers {
        Ok(list) if !list.is_empty() => {
            let _ = write!(
                b,
                "<div class=\"field\"><label for=\"{prefix}-reader\">Card reader</label><select id=\"{prefix}-reader\" name=\"reader\" required>"
            );
            let first_present = list.iter().position(|r| r.1);
            for (i, (name, present)) in list.iter().enumerate() {
                let _ = write!(
                    b,
                    "<option value=\"{}\"{}>{}{}</option>",
                    esc(name),
                    if Some(i) == first_present {
                        " selected"
                    } else {
                        ""
                    },
                    esc(name),
                    if *present {
                        " (card present)"
                    } else {
                        " (empty)"
                    }
                );
            }
            b.push_str("</select></div>");
        }
        Ok(_) => b.push_str("<p class=\"hint\">No card reader is connected to the appliance.</p>"),
        Err(e) => {
            let _ = write!(
                b,
                "<p class=\"hint\">The card readers cannot be listed: {}</p>",
                esc(e)
            );
        }
    }
}

/// `GET /console/cards/{serial}`.
pub(crate) async fn card_page(
    ctx: Ctx,
    UrlPath(serial): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let f = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let cards = ctx.cards()?;
    let s2 = serial.clone();
    let found = blocking(move || {
        let Some(card) = cards.card(&s2)? else {
            return Ok(None);
        };
        let p = cards.registry().get(&card.idnat_ps)?;
        let state = |c: &CardCertificate| cards.certificate_state(&c.cert).ok().flatten();
        let current: Vec<_> = card
            .certificates
            .iter()
            .map(|c| (c.clone(), state(c)))
            .collect();
        let previous: Vec<_> = card
            .previous_certificates
            .iter()
            .map(|c| (c.clone(), state(c)))
            .collect();
        Ok(Some((card, p, current, previous)))
    })
    .await
    .map_err(|e| ctx.error(e))?;
    let Some((card, p, current, previous)) = found else {
        return Err(ctx.error(ConsoleError::not_found(format!(
            "No card with serial '{serial}' is registered."
        ))));
    };
    let readers = if ctx.can_write() && !card.status.is_terminal() {
        super::readers().await
    } else {
        Ok(vec![])
    };
    let holder = p
        .as_ref()
        .map(|p| format!("{} {}", p.data.surname, p.data.given_names))
        .unwrap_or_else(|| card.idnat_ps.clone());
    let mut page = ctx
        .page(format!("Card {}", card.serial))
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(holder.clone(), Some(href_professional(&card.idnat_ps)))
        .crumb(format!("Card {}", card.serial), None);
    page.class = "card";
    done_notice(&mut page.notices, &f);
    let b = &mut page.body;
    let activity = p
        .as_ref()
        .and_then(|p| p.activity(&card.structure_id))
        .map(|a| a.structure_name.clone())
        .unwrap_or_default();
    let _ = write!(
        b,
        "<dl class=\"facts\"><dt>Holder</dt><dd><a href=\"{}\">{}</a> <code class=\"muted\">{}</code></dd>\
         <dt>Activity</dt><dd>{} <code class=\"muted\">{}</code></dd>\
         <dt>Status</dt><dd id=\"card-status\" data-status=\"{}\">{}</dd>\
         <dt>Card serial</dt><dd><code>{}</code></dd><dt>Token id</dt><dd><code>{}</code></dd>\
         <dt>Card keys</dt><dd>{}</dd><dt>Card management key</dt><dd>{}</dd>\
         <dt>Enrolled</dt><dd>{} <span class=\"muted\">by {}</span></dd><dt>Last change</dt><dd>{}</dd></dl>",
        esc(&href_professional(&card.idnat_ps)),
        esc(&holder),
        esc(&card.idnat_ps),
        esc(&activity),
        esc(&card.structure_id),
        card.status.name(),
        badge(card.status.name(), &card.status.to_string()),
        esc(&card.serial),
        esc(&card.token_id),
        esc(&card.key_algorithm),
        match &card.management_key {
            cps_enrol::ManagementKeyState::PerCard {
                master_key,
                algorithm,
            } => format!(
                "per-card key ({}) derived in the HSM from <code>{}</code>",
                esc(algorithm),
                esc(master_key)
            ),
            cps_enrol::ManagementKeyState::Default => {
                "<strong>the well-known default key</strong> (this card could not change it)".into()
            }
        },
        esc(&when(card.enrolled_at)),
        esc(&card.enrolled_by),
        esc(&when(card.updated_at))
    );
    certs_table(b, "certificates", "Certificates on the card", &current);
    if !previous.is_empty() {
        certs_table(
            b,
            "previous-certificates",
            "Earlier certificates (renewed)",
            &previous,
        );
    }
    if card.status.is_terminal() {
        notice(
            b,
            Tone::Info,
            "This card is out of service for good.",
            Some(
                "Its certificates are revoked. Enrol a new card for the activity if the professional needs one.",
            ),
        );
    } else if ctx.can_write() {
        actions(b, &ctx, &card, &readers);
    }
    Ok(html_response(page.render()))
}

fn actions(b: &mut String, ctx: &Ctx, card: &Card, readers: &Result<Vec<(String, bool)>, String>) {
    let base = href_card(&card.serial);
    let csrf = ctx.csrf_field();
    b.push_str("<section aria-labelledby=\"actions-h\"><h2 id=\"actions-h\">Actions</h2><div class=\"actions\">");
    match &card.status {
        CardStatus::Active => {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"{}/suspend\" class=\"action panel\" id=\"suspend-form\">{csrf}\
                 <h3>Suspend</h3><p class=\"hint\">Both certificates are put on hold (certificateHold) until the card is resumed.</p>\
                 <p><button type=\"submit\" class=\"secondary\">Suspend the card</button></p></form>",
                esc(&base)
            );
        }
        CardStatus::Suspended {
            by_professional: false,
            ..
        } => {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"{}/resume\" class=\"action panel\" id=\"resume-form\">{csrf}\
                 <h3>Resume</h3><p class=\"hint\">Both certificates are released from hold.</p>\
                 <p><button type=\"submit\">Resume the card</button></p></form>",
                esc(&base)
            );
        }
        CardStatus::Suspended { .. } => b.push_str(
            "<div class=\"action panel\"><h3>Resume</h3><p class=\"hint\">This card was suspended with the professional: \
             it is resumed when the professional is active again.</p></div>",
        ),
        _ => {}
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{}/oppose\" class=\"action panel danger-zone\" id=\"oppose-form\">{csrf}\
         <h3>Oppose</h3><p class=\"hint\">For a lost, stolen or destroyed card: its certificates are revoked for good.</p>\
         <fieldset><legend>Reason</legend>",
        esc(&base)
    );
    for (v, l) in [
        ("lost", "Lost"),
        ("stolen", "Stolen"),
        ("destroyed", "Destroyed"),
    ] {
        let _ = write!(
            b,
            "<div class=\"choice\"><input type=\"radio\" name=\"reason\" id=\"oppose-{v}\" value=\"{v}\" required><label for=\"oppose-{v}\">{l}</label></div>"
        );
    }
    b.push_str(
        "</fieldset><div class=\"choice\"><input type=\"checkbox\" name=\"confirm\" id=\"oppose-confirm\" value=\"yes\" required>\
         <label for=\"oppose-confirm\">I understand that an opposed card never comes back</label></div>\
         <p><button type=\"submit\" class=\"danger\">Oppose the card</button></p></form>",
    );
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{}/unblock\" class=\"action panel\" id=\"unblock-form\" autocomplete=\"off\">{csrf}\
         <h3>Unblock the PIN</h3><p class=\"hint\">With the card in a reader of the appliance and the holder's PUK.</p>",
        esc(&base)
    );
    reader_choices(b, "unblock", readers);
    b.push_str(
        "<div class=\"field\"><label for=\"puk\">PUK</label><input type=\"password\" id=\"puk\" name=\"puk\" inputmode=\"numeric\" autocomplete=\"off\" required maxlength=\"8\"></div>\
         <div class=\"field\"><label for=\"new_pin\">New PIN</label><input type=\"password\" id=\"new_pin\" name=\"new_pin\" inputmode=\"numeric\" autocomplete=\"new-password\" required minlength=\"4\" maxlength=\"8\"></div>\
         <div class=\"field\"><label for=\"new_pin2\">New PIN again</label><input type=\"password\" id=\"new_pin2\" name=\"new_pin2\" inputmode=\"numeric\" autocomplete=\"new-password\" required minlength=\"4\" maxlength=\"8\"></div>\
         <p><button type=\"submit\" class=\"secondary\">Unblock the PIN</button></p></form>",
    );
    if card.status == CardStatus::Active {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"{}/renew\" class=\"action panel\" id=\"renew-form\" autocomplete=\"off\">{csrf}\
             <h3>Renew the certificates</h3><p class=\"hint\">New keys and certificates on the same card; the holder types their PIN.</p>",
            esc(&base)
        );
        reader_choices(b, "renew", readers);
        b.push_str(
            "<div class=\"field\"><label for=\"renew-pin\">Holder's PIN</label><input type=\"password\" id=\"renew-pin\" name=\"pin\" inputmode=\"numeric\" autocomplete=\"off\" required maxlength=\"8\"></div>\
             <p><button type=\"submit\" class=\"secondary\">Renew</button></p></form>",
        );
    }
    b.push_str("</div></section>");
}

fn connect(reader: &str) -> Result<cps_card::Piv<cps_card::PcscCard>, EnrolError> {
    let pcsc = cps_card::Pcsc::establish()?;
    let name = pcsc.resolve_reader(Some(reader))?;
    let c = pcsc.connect(&name)?;
    Ok(cps_card::Piv::select(c)?)
}

/// `POST /console/cards/{serial}/{action}`.
pub(crate) async fn card_action(
    ctx: Ctx,
    UrlPath((serial, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let f = form::parse_urlencoded(&body).map_err(|e| ctx.error(e))?;
    ctx.check_post(f.get("csrf"))?;
    let back = href_card(&serial);
    let refuse = |title: &str, detail: &str| {
        ctx.error(ConsoleError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            title,
            detail,
        ))
        .with_back(&back, "Back to the card")
    };
    let cards = ctx.cards()?;
    let who = ctx.actor();
    let now = ctx.now;
    let s = serial.clone();
    let (done, pending) = match action.as_str() {
        "suspend" => {
            let o = blocking(move || cards.suspend_card(&s, &who, now)).await;
            ("suspended", o.map(|o| o.revocations.pending.len()))
        }
        "resume" => {
            let o = blocking(move || cards.resume_card(&s, &who, now)).await;
            ("resumed", o.map(|o| o.revocations.pending.len()))
        }
        "oppose" => {
            let reason = f
                .get("reason")
                .and_then(OppositionReason::from_name)
                .ok_or_else(|| {
                    refuse(
                        "Choose a reason",
                        "An opposition is for a lost, stolen or destroyed card.",
                    )
                })?;
            if f.get("confirm") != Some("yes") {
                return Err(refuse(
                    "Confirmation needed",
                    "An opposed card never comes back: tick the confirmation box and submit again.",
                ));
            }
            let o = blocking(move || cards.oppose_card(&s, reason, &who, now)).await;
            ("opposed", o.map(|o| o.revocations.pending.len()))
        }
        "unblock" => {
            let (Some(reader), Some(puk), Some(pin), Some(pin2)) = (
                f.text("reader"),
                f.get("puk").filter(|v| !v.is_empty()),
                f.get("new_pin").filter(|v| !v.is_empty()),
                f.get("new_pin2"),
            ) else {
                return Err(refuse(
                    "Missing fields",
                    "The reader, the PUK and the new PIN (twice) are required.",
                ));
            };
            if pin != pin2 {
                return Err(refuse("The PINs differ", "Type the same new PIN twice."));
            }
            let (reader, puk, pin) = (reader.to_owned(), puk.to_owned(), pin.to_owned());
            let o = blocking(move || {
                let mut piv = connect(&reader)?;
                cards.unblock_pin(&s, &mut piv, &puk, &pin, &who, now)
            })
            .await;
            ("unblocked", o.map(|_| 0))
        }
        "renew" => {
            let (Some(reader), Some(pin)) =
                (f.text("reader"), f.get("pin").filter(|v| !v.is_empty()))
            else {
                return Err(refuse(
                    "Missing fields",
                    "The reader and the holder's PIN are required.",
                ));
            };
            let (reader, pin) = (reader.to_owned(), pin.to_owned());
            let o = blocking(move || {
                let mut piv = connect(&reader)?;
                cards.renew(&s, &mut piv, &pin, &who, now, &mut |_| {})
            })
            .await;
            ("renewed", o.map(|o| o.revocations.pending.len()))
        }
        other => {
            return Err(ctx.error(ConsoleError::not_found(format!(
                "There is no card action '{other}'."
            ))));
        }
    };
    let pending = pending.map_err(|e| ctx.error(e).with_back(&back, "Back to the card"))?;
    Ok(see_other(&format!("{back}?done={done}&pending={pending}")))
}

async fn certificate(
    ctx: &Ctx,
    ca: String,
    serial: String,
) -> Result<CertificateView, ConsoleError> {
    let bytes = cps_pki::Serial::from_hex(&serial)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| ctx.error(ConsoleError::bad_request(e.to_string())))?;
    let store = ctx.st.ca.store().clone();
    let ca2 = ca.clone();
    let rec = tokio::task::spawn_blocking(move || store.get_certificate(&ca2, &bytes))
        .await
        .map_err(|e| ConsoleError::internal("a background task", e))?
        .map_err(|e| ConsoleError::internal("reading the certificate", e))?;
    rec.map(|r| crate::api::certificate_view(&r))
        .ok_or_else(|| {
            ctx.error(ConsoleError::not_found(format!(
                "CA '{ca}' has no certificate with serial {serial}."
            )))
        })
}

/// `GET /console/certificates/{ca}/{serial}`.
pub(crate) async fn certificate_page(
    ctx: Ctx,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
) -> Result<Response, ConsoleError> {
    let v = certificate(&ctx, ca, serial).await?;
    let mut page = ctx
        .page(format!("Certificate {}", v.serial))
        .crumb(format!("Certificate {}", v.serial), None);
    let b = &mut page.body;
    let status = match (&v.status[..], &v.revocation_reason) {
        ("valid", _) => badge("valid", "valid"),
        (s, Some(r)) => badge(s, &format!("{s} ({r})")),
        (s, None) => badge(s, s),
    };
    let _ = write!(
        b,
        "<dl class=\"facts\"><dt>Subject</dt><dd><code class=\"wrap\">{}</code></dd><dt>Issuing CA</dt><dd><code>{}</code></dd>\
         <dt>Serial</dt><dd><code>{}</code></dd><dt>Profile</dt><dd><code>{}</code></dd>",
        esc(&v.subject),
        esc(&v.ca),
        esc(&v.serial),
        esc(&v.profile)
    );
    if let Some(h) = &v.holder {
        let _ = write!(
            b,
            "<dt>Holder</dt><dd><a href=\"{}\"><code>{}</code></a></dd>",
            esc(&href_professional(h)),
            esc(h)
        );
    }
    let _ = write!(
        b,
        "<dt>Valid</dt><dd>{} to {}</dd><dt>Status</dt><dd>{status}</dd>",
        esc(&when(v.not_before)),
        esc(&when(v.not_after))
    );
    if let Some(t) = v.revocation_time {
        let _ = write!(b, "<dt>Since</dt><dd>{}</dd>", esc(&when(t)));
    }
    let _ = write!(
        b,
        "</dl><p><a class=\"button secondary\" href=\"{}/pem\" download>Download (PEM)</a></p><pre class=\"pem\">{}</pre>",
        esc(&href_certificate(&v.ca, &v.serial)),
        esc(&v.pem)
    );
    Ok(html_response(page.render()))
}

/// `GET /console/certificates/{ca}/{serial}/pem`.
pub(crate) async fn certificate_pem(
    ctx: Ctx,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
) -> Result<Response, ConsoleError> {
    let v = certificate(&ctx, ca, serial).await?;
    let name: String = format!("{}-{}.pem", v.ca, v.serial)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        v.pem,
    )
        .into_response())
}
