//! The card page and its lifecycle actions; certificate pages.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_enrol::{
    Card, CardCertificate, CardStatus, CertState, EnrolError, OppositionReason, Professional,
};
use maud::{Markup, html};

use super::html::{Tone, badge, day, notice, thead, when};
use super::{
    ConsoleError, Ctx, Viewer, blocking, done_notice, form, full_name, href_card, href_certificate,
    href_professional, html_response, query, see_other, slot_label,
};
use crate::api::CertificateView;

fn cert_state_badge(s: Option<CertState>) -> Markup {
    match s {
        Some(CertState::Valid) => badge("valid", "valid"),
        Some(CertState::OnHold) => badge("on-hold", "on hold"),
        Some(CertState::Revoked(r)) => badge("revoked", &format!("revoked ({})", r.name())),
        None => badge("neutral", "unknown to the CA"),
    }
}

fn certs_table(id: &str, caption: &str, certs: &[(CardCertificate, Option<CertState>)]) -> Markup {
    html! {
        table.certs id=(id) {
            caption { (caption) }
            (thead(&["Use", "Profile", "Issuer", "Serial", "Valid until", "Status at the CA"]))
            tbody {
                @for (c, state) in certs {
                    tr {
                        th scope="row" { (slot_label(c.slot)) }
                        td { code { (c.profile) } }
                        td { code { (c.cert.issuer) } }
                        td { a href=(href_certificate(&c.cert.issuer, &c.cert.serial)) { code { (c.cert.serial) } } }
                        td { (day(c.not_after)) }
                        td.cert-status { (cert_state_badge(*state)) }
                    }
                }
            }
        }
    }
}

type Readers = Result<Vec<(String, bool)>, String>;

fn reader_choices(prefix: &str, readers: &Readers) -> Markup {
    html! {
        @match readers {
            Ok(list) if !list.is_empty() => {
                @let first_present = list.iter().position(|r| r.1);
                div.field {
                    label for={ (prefix) "-reader" } { "Card reader" }
                    select id={ (prefix) "-reader" } name="reader" required {
                        @for (i, (name, present)) in list.iter().enumerate() {
                            option value=(name) selected[Some(i) == first_present] {
                                (name) @if *present { " (card present)" } @else { " (empty)" }
                            }
                        }
                    }
                }
            }
            Ok(_) => p.hint { "No card reader is connected to the appliance." },
            Err(e) => p.hint { "The card readers cannot be listed: " (e) },
        }
    }
}

/// The card, its holder's record and its certificates with their state at the CA.
pub(super) type CardData = (
    Card,
    Option<Professional>,
    Vec<(CardCertificate, Option<CertState>)>,
    Vec<(CardCertificate, Option<CertState>)>,
);

/// `GET /console/cards/{serial}`.
pub(crate) async fn card_page(
    ctx: Ctx,
    UrlPath(serial): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let f = query(raw.as_deref()).map_err(|e| ctx.error(e))?;
    let cards = ctx.cards()?;
    let s2 = serial.clone();
    let found: Option<CardData> = blocking(move || {
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
    let Some(data) = found else {
        return Err(ctx.error(ConsoleError::not_found(format!(
            "No card with serial '{serial}' is registered."
        ))));
    };
    let readers = if ctx.can_write() && !data.0.status.is_terminal() {
        super::readers().await
    } else {
        Ok(vec![])
    };
    Ok(html_response(view_card(&ctx.viewer(), &data, &readers, &f)))
}

pub(super) fn view_card(
    v: &Viewer<'_>,
    data: &CardData,
    readers: &Readers,
    f: &form::Fields,
) -> String {
    let (card, p, current, previous) = data;
    let holder = p
        .as_ref()
        .map(full_name)
        .unwrap_or_else(|| card.idnat_ps.clone());
    let mut page = v
        .page(format!("Card {}", card.serial))
        .crumb("Search", Some("/console/professionals".into()))
        .crumb(holder.clone(), Some(href_professional(&card.idnat_ps)))
        .crumb(format!("Card {}", card.serial), None);
    page.class = "card";
    done_notice(&mut page, f);
    let activity = p
        .as_ref()
        .and_then(|p| p.activity(&card.structure_id))
        .map(|a| a.structure_name.clone())
        .unwrap_or_default();
    page.render(html! {
        dl.facts {
            dt { "Holder" } dd { a href=(href_professional(&card.idnat_ps)) { (holder) } " " code.muted { (card.idnat_ps) } }
            dt { "Activity" } dd { (activity) " " code.muted { (card.structure_id) } }
            dt { "Status" } dd #card-status data-status=(card.status.name()) { (badge(card.status.name(), &card.status.to_string())) }
            dt { "Card serial" } dd { code { (card.serial) } }
            dt { "Token id" } dd { code { (card.token_id) } }
            dt { "Card keys" } dd { (card.key_algorithm) }
            dt { "Card management key" } dd {
                @match &card.management_key {
                    cps_enrol::ManagementKeyState::PerCard { master_key, algorithm } => {
                        "per-card key (" (algorithm) ") derived in the HSM from " code { (master_key) }
                    }
                    cps_enrol::ManagementKeyState::Default => {
                        strong { "the well-known default key" } " (this card could not change it)"
                    }
                }
            }
            dt { "Enrolled" } dd { (when(card.enrolled_at)) " " span.muted { "by " (card.enrolled_by) } }
            dt { "Last change" } dd { (when(card.updated_at)) }
        }
        (certs_table("certificates", "Certificates on the card", current))
        @if !previous.is_empty() {
            (certs_table("previous-certificates", "Earlier certificates (renewed)", previous))
        }
        @if card.status.is_terminal() {
            (notice(Tone::Info, "This card is out of service for good.",
                Some("Its certificates are revoked. Enrol a new card for the activity if the professional needs one.")))
        } @else if v.can_write {
            (actions(v, card, readers))
        }
    })
}

fn pin_field(id: &str, name: &str, label: &str, new: bool) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            @if new {
                input type="password" id=(id) name=(name) inputmode="numeric" autocomplete="new-password" required minlength="4" maxlength="8";
            } @else {
                input type="password" id=(id) name=(name) inputmode="numeric" autocomplete="off" required maxlength="8";
            }
        }
    }
}

fn actions(v: &Viewer<'_>, card: &Card, readers: &Readers) -> Markup {
    let base = href_card(&card.serial);
    let csrf = v.csrf_field();
    html! {
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            div.actions {
                @match &card.status {
                    CardStatus::Active => {
                        form method="post" action={ (base) "/suspend" } class="action panel" id="suspend-form" {
                            (csrf)
                            h3 { "Suspend" }
                            p.hint { "Both certificates are put on hold (certificateHold) until the card is resumed." }
                            p { button type="submit" class="secondary" { "Suspend the card" } }
                        }
                    }
                    CardStatus::Suspended { by_professional: false, .. } => {
                        form method="post" action={ (base) "/resume" } class="action panel" id="resume-form" {
                            (csrf)
                            h3 { "Resume" }
                            p.hint { "Both certificates are released from hold." }
                            p { button type="submit" { "Resume the card" } }
                        }
                    }
                    CardStatus::Suspended { .. } => {
                        div.action.panel {
                            h3 { "Resume" }
                            p.hint { "This card was suspended with the professional: it is resumed when the professional is active again." }
                        }
                    }
                    _ => {}
                }
                form method="post" action={ (base) "/oppose" } class="action panel danger-zone" id="oppose-form" {
                    (csrf)
                    h3 { "Oppose" }
                    p.hint { "For a lost, stolen or destroyed card: its certificates are revoked for good." }
                    fieldset {
                        legend { "Reason" }
                        @for (v, l) in [("lost", "Lost"), ("stolen", "Stolen"), ("destroyed", "Destroyed")] {
                            div.choice {
                                input type="radio" name="reason" id={ "oppose-" (v) } value=(v) required;
                                label for={ "oppose-" (v) } { (l) }
                            }
                        }
                    }
                    div.choice {
                        input type="checkbox" name="confirm" id="oppose-confirm" value="yes" required;
                        label for="oppose-confirm" { "I understand that an opposed card never comes back" }
                    }
                    p { button type="submit" class="danger" { "Oppose the card" } }
                }
                form method="post" action={ (base) "/unblock" } class="action panel" id="unblock-form" autocomplete="off" {
                    (csrf)
                    h3 { "Unblock the PIN" }
                    p.hint { "With the card in a reader of the appliance and the holder's PUK." }
                    (reader_choices("unblock", readers))
                    (pin_field("puk", "puk", "PUK", false))
                    (pin_field("new_pin", "new_pin", "New PIN", true))
                    (pin_field("new_pin2", "new_pin2", "New PIN again", true))
                    p { button type="submit" class="secondary" { "Unblock the PIN" } }
                }
                @if card.status == CardStatus::Active {
                    form method="post" action={ (base) "/renew" } class="action panel" id="renew-form" autocomplete="off" {
                        (csrf)
                        h3 { "Renew the certificates" }
                        p.hint { "New keys and certificates on the same card; the holder types their PIN." }
                        (reader_choices("renew", readers))
                        (pin_field("renew-pin", "pin", "Holder's PIN", false))
                        p { button type="submit" class="secondary" { "Renew" } }
                    }
                }
            }
        }
    }
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
    rec.map(|r| CertificateView::from(&r)).ok_or_else(|| {
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
    Ok(html_response(view_certificate(&ctx.viewer(), &v)))
}

pub(super) fn view_certificate(viewer: &Viewer<'_>, v: &CertificateView) -> String {
    let status = match (&v.status[..], &v.revocation_reason) {
        ("valid", _) => badge("valid", "valid"),
        (s, Some(r)) => badge(s, &format!("{s} ({r})")),
        (s, None) => badge(s, s),
    };
    viewer
        .page(format!("Certificate {}", v.serial))
        .crumb(format!("Certificate {}", v.serial), None)
        .render(html! {
            dl.facts {
                dt { "Subject" } dd { code.wrap { (v.subject) } }
                dt { "Issuing CA" } dd { code { (v.ca) } }
                dt { "Serial" } dd { code { (v.serial) } }
                dt { "Profile" } dd { code { (v.profile) } }
                @if let Some(h) = &v.holder {
                    dt { "Holder" } dd { a href=(href_professional(h)) { code { (h) } } }
                }
                dt { "Valid" } dd { (when(v.not_before)) " to " (when(v.not_after)) }
                dt { "Status" } dd { (status) }
                @if let Some(t) = v.revocation_time {
                    dt { "Since" } dd { (when(t)) }
                }
            }
            p { a.button.secondary href={ (href_certificate(&v.ca, &v.serial)) "/pem" } download { "Download (PEM)" } }
            pre.pem { (v.pem) }
        })
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
