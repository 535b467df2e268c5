//! The card page and its lifecycle actions; certificate pages.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cps_console::cards::{CardData, view_card, view_certificate};
use cps_console::{CertificateFacts, form};
use cps_enrol::{CardCertificate, EnrolError, OppositionReason};

use super::{ConsoleError, Ctx, blocking, href_card, html_response, query, see_other};
use crate::api::CertificateView;

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
    let facts = CertificateFacts {
        ca: v.ca,
        serial: v.serial,
        subject: v.subject,
        profile: v.profile,
        holder: v.holder,
        not_before: v.not_before,
        not_after: v.not_after,
        status: v.status,
        revocation_time: v.revocation_time,
        revocation_reason: v.revocation_reason,
        pem: v.pem,
    };
    Ok(html_response(view_certificate(&ctx.viewer(), &facts)))
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
