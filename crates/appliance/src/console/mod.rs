//! The web console for card-issuing staff, under `/console/` on the mutual-TLS listener.
//!
//! Server-rendered HTML (maud templates, see [`html`]) that works without JavaScript (a small
//! script only makes the progress pages live and adds a print button), with no external
//! resource: the stylesheet and script are compiled into the appliance. Operators are the API's: the `authenticate` layer of
//! [`crate::api::router`] resolves the client certificate into an [`Operator`] before any
//! console handler runs (no certificate: 401; unknown certificate: 403).
//!
//! | route | what |
//! |---|---|
//! | `GET /console/` | home: search box, readers, interrupted enrolments |
//! | `GET /console/professionals?q=&after=` | search by IdNat_PS, RPPS or name |
//! | `GET /console/professionals/{idnat}` | identity, profession, activities, status, cards |
//! | `GET, POST /console/professionals/new`, `/console/professionals/{idnat}/edit` | register, edit |
//! | `POST /console/professionals/{idnat}/status` | status change (active, suspended, left) |
//! | `GET, POST /console/professionals/{idnat}/enrol` | enrol a card: reader and activity → a job |
//! | `GET /console/jobs/{id}` | live progress of a job, then its result (PIN/PUK shown once) |
//! | `GET /console/jobs/{id}/status` | the same as JSON, for the script (never the PIN/PUK) |
//! | `GET /console/cards/{serial}` | a card: certificates with their status, lifecycle forms |
//! | `POST /console/cards/{serial}/{suspend,resume,oppose,unblock,renew}` | lifecycle |
//! | `GET /console/certificates/{ca}/{serial}[/pem]` | a certificate, or its PEM file |
//! | `GET, POST /console/import` | registry CSV upload (multipart) → a job with its report |
//!
//! Who may open which page or post which form, and the request-forgery checks (origin, fetch
//! metadata, form encodings), are [`crate::authz`]'s: one table for the whole HTTPS listener,
//! enforced before any console handler runs (a refusal is an HTML error page). Only `POST`
//! changes anything, and each form carries an anti-forgery token bound to the operator
//! certificate ([`csrf`]), which its handler checks with [`Ctx::check_post`]. Every page gets a
//! strict Content-Security-Policy (`default-src 'self'`, no inline script), `X-Frame-Options:
//! DENY` and `Cache-Control: no-store`. Actions are audited by the card service with the actor
//! `operator:<name>`.

pub mod csrf;
pub mod form;
pub mod html;

pub(crate) mod cards;
pub(crate) mod jobs;
pub(crate) mod professionals;
pub(crate) mod registry;

#[cfg(test)]
mod hostile_tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cps_enrol::{CardService, EnrolError};
use maud::{Markup, html};
use parking_lot::Mutex;

use crate::api::ApiState;
use crate::operators::Operator;
use html::{Page, Tone};

/// Roles that may act in the console (forms are shown to them; [`crate::authz`] decides).
const WRITE: &[crate::authz::Role] = &[crate::authz::Role::RaOfficer];

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");

/// What the console remembers about the enrolment jobs it started (for their pages).
#[derive(Debug, Clone)]
pub(crate) struct EnrolJobMeta {
    pub idnat_ps: String,
    pub structure_id: String,
    pub reader: String,
}

const MAX_JOB_META: usize = 1000;

/// Per-process console state.
pub(crate) struct Console {
    csrf: Option<csrf::CsrfKey>,
    enrol_jobs: Mutex<HashMap<String, EnrolJobMeta>>,
}

impl Console {
    pub(crate) fn new() -> Console {
        let csrf = match csrf::CsrfKey::random() {
            Ok(k) => Some(k),
            Err(_) => {
                tracing::error!("system random generator failed: console forms are disabled");
                None
            }
        };
        Console {
            csrf,
            enrol_jobs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn remember(&self, job: &str, meta: EnrolJobMeta) {
        let mut m = self.enrol_jobs.lock();
        if m.len() >= MAX_JOB_META {
            m.clear();
        }
        m.insert(job.to_owned(), meta);
    }

    pub(crate) fn meta(&self, job: &str) -> Option<EnrolJobMeta> {
        self.enrol_jobs.lock().get(job).cloned()
    }
}

/// An error page: status, a title and what to do.
#[derive(Debug)]
pub struct ConsoleError(Box<ErrorPage>);

#[derive(Debug)]
struct ErrorPage {
    status: StatusCode,
    title: String,
    detail: String,
    operator: Option<Operator>,
    back: Option<(String, String)>,
}

impl ConsoleError {
    /// An error page.
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        ConsoleError(Box::new(ErrorPage {
            status,
            title: title.into(),
            detail: detail.into(),
            operator: None,
            back: None,
        }))
    }

    fn with_operator(mut self, op: &Operator) -> Self {
        self.0.operator = Some(op.clone());
        self
    }

    /// Adds a link back to `href` (a safe, encoded URL) labelled `label`.
    pub(crate) fn with_back(mut self, href: &str, label: &str) -> Self {
        self.0.back = Some((href.to_owned(), label.to_owned()));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// What went wrong, for the operator.
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        ConsoleError::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        ConsoleError::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "console: {what}");
        ConsoleError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            format!("{what} failed; the appliance log has the details."),
        )
    }
}

impl From<EnrolError> for ConsoleError {
    fn from(e: EnrolError) -> Self {
        let (status, title) = match &e {
            EnrolError::UnknownProfessional(_) | EnrolError::UnknownCard(_) => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            EnrolError::ProfessionalExists(_) | EnrolError::Stale(_) => {
                (StatusCode::CONFLICT, "Changed meanwhile")
            }
            EnrolError::Invalid(_)
            | EnrolError::UnknownActivity { .. }
            | EnrolError::ActivityNotForLogin { .. }
            | EnrolError::ProfessionalNotActive { .. }
            | EnrolError::CardStatus { .. }
            | EnrolError::CardNotBlank(_)
            | EnrolError::WrongCard { .. }
            | EnrolError::ActivityHasCard(_)
            | EnrolError::Card(_)
            | EnrolError::Interrupted { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "The request was refused")
            }
            EnrolError::Ca(_) | EnrolError::Hsm(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "A service is unavailable")
            }
            _ => return ConsoleError::internal("the card service", e),
        };
        ConsoleError::new(status, title, e.to_string())
    }
}

impl From<form::FormError> for ConsoleError {
    fn from(e: form::FormError) -> Self {
        ConsoleError::bad_request(e.to_string())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut page = Page::new(e.title.clone(), e.operator.as_ref());
        let tone = if e.status.is_server_error() {
            Tone::Warning
        } else {
            Tone::Error
        };
        page.notice(tone, &e.detail, None);
        let body = html! {
            p.after-error {
                @if let Some((href, label)) = &e.back {
                    a.button.secondary href=(href) { (label) } " "
                }
                a href="/console/" { "Console home" }
            }
        };
        (e.status, html_response(page.render(body))).into_response()
    }
}

/// An HTML document response.
pub(crate) fn html_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The request context of every console handler: the operator, their certificate's
/// fingerprint, the console state and the fetch metadata of the request.
pub(crate) struct Ctx {
    pub st: ApiState,
    pub op: Operator,
    pub console: Arc<Console>,
    pub fingerprint: [u8; 32],
    pub now: i64,
    /// Whether the request may be handed one-time secrets (not a cross-site fetch).
    pub same_site_fetch: bool,
}

impl FromRequestParts<ApiState> for Ctx {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ConsoleError> {
        let op = parts.extensions.get::<Operator>().cloned().ok_or_else(|| {
            ConsoleError::new(
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "Present an operator certificate (mutual TLS) to use the console.",
            )
        })?;
        let cert = crate::caller::client_certificate(&parts.extensions).ok_or_else(|| {
            ConsoleError::new(
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "Present an operator certificate (mutual TLS) to use the console.",
            )
        })?;
        let console = parts
            .extensions
            .get::<Arc<Console>>()
            .cloned()
            .ok_or_else(|| ConsoleError::internal("console state", "missing extension"))?;
        let same_site_fetch = parts
            .headers
            .get("sec-fetch-site")
            .is_none_or(|v| v == "same-origin" || v == "none");
        Ok(Ctx {
            st: st.clone(),
            op,
            console,
            fingerprint: cert.sha256,
            now: crate::unix_now(),
            same_site_fetch,
        })
    }
}

impl Ctx {
    /// Whether the operator may act.
    pub fn can_write(&self) -> bool {
        WRITE.iter().any(|r| self.op.has(r.as_str()))
    }

    /// The anti-forgery token for this operator's forms (empty when forms are disabled).
    pub fn token(&self) -> String {
        self.console
            .csrf
            .as_ref()
            .map(|k| k.token(&self.fingerprint, self.now))
            .unwrap_or_default()
    }

    /// Who is looking, for the pages' views.
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            op: &self.op,
            can_write: self.can_write(),
            token: self.token(),
        }
    }

    /// Checks the anti-forgery token of a form post (its origin was checked by
    /// [`crate::authz::enforce`]).
    pub fn check_post(&self, token: Option<&str>) -> Result<(), ConsoleError> {
        let refuse = |why: String| {
            ConsoleError::new(
                StatusCode::FORBIDDEN,
                "Form refused",
                format!(
                    "{}. Nothing was changed: reload the page and submit the form again.",
                    capitalised(&why)
                ),
            )
            .with_operator(&self.op)
        };
        let key = self.console.csrf.as_ref().ok_or_else(|| {
            ConsoleError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Forms disabled",
                "The appliance could not make its anti-forgery key (random generator failure).",
            )
        })?;
        key.verify(&self.fingerprint, token, self.now)
            .map_err(|e| refuse(e.to_string()))
    }

    /// The card service, or a 503 page.
    pub fn cards(&self) -> Result<Arc<CardService>, ConsoleError> {
        self.st.cards.clone().ok_or_else(|| {
            ConsoleError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Card issuance unavailable",
                "Card issuance is not configured on this appliance.",
            )
            .with_operator(&self.op)
        })
    }

    /// A professional and their cards, or an error page.
    pub async fn professional_and_cards(
        &self,
        idnat: &str,
    ) -> Result<(cps_enrol::Professional, Vec<cps_enrol::Card>), ConsoleError> {
        let (cards, idnat) = (self.cards()?, idnat.to_owned());
        blocking(move || {
            Ok((
                cards.registry().require(&idnat)?,
                cards.cards_of(&idnat, None)?,
            ))
        })
        .await
        .map_err(|e| self.error(e))
    }

    /// `operator:<name>`, the actor of audit records.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.op.name)
    }

    /// The operator's certificate, as what one-time secrets are bound to.
    pub fn caller(&self) -> crate::caller::CertFingerprint {
        crate::caller::CertFingerprint(self.fingerprint)
    }

    /// An error page for this operator.
    pub fn error(&self, e: impl Into<ConsoleError>) -> ConsoleError {
        e.into().with_operator(&self.op)
    }
}

/// What a page's view needs to know about the operator looking at it (built from [`Ctx`];
/// views are plain functions of their data and a viewer, so they are tested without a request).
pub(crate) struct Viewer<'a> {
    /// The signed-in operator.
    pub op: &'a Operator,
    /// Whether the operator may act (forms are shown).
    pub can_write: bool,
    /// The anti-forgery token of the operator's forms.
    pub token: String,
}

impl Viewer<'_> {
    /// A page frame for this operator.
    pub fn page(&self, title: impl Into<String>) -> Page<'_> {
        Page::new(title, Some(self.op))
    }

    /// The hidden anti-forgery field.
    pub fn csrf_field(&self) -> Markup {
        html::csrf_field(&self.token)
    }
}

/// Runs a blocking card-service call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EnrolError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConsoleError::internal("a background task", e))?
        .map_err(ConsoleError::from)
}

/// 303 See Other to `to` (a safe, encoded URL).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The console's security headers on `resp` (every console response, refusals included).
pub(crate) fn security_headers_on(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: browsers then send `Origin: null` with form posts.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

pub(crate) async fn asset_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

pub(crate) async fn asset_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
        .into_response()
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The fields of a query string.
pub(crate) fn query(raw: Option<&str>) -> Result<form::Fields, ConsoleError> {
    Ok(form::parse_urlencoded(raw.unwrap_or("").as_bytes())?)
}

/// A professional's name as the console shows it.
pub(crate) fn full_name(p: &cps_enrol::Professional) -> String {
    format!("{} {}", p.data.surname, p.data.given_names)
}

/// The page of a professional.
pub(crate) fn href_professional(idnat: &str) -> String {
    format!("/console/professionals/{}", form::url_encode(idnat))
}

/// The page of a card.
pub(crate) fn href_card(serial: &str) -> String {
    format!("/console/cards/{}", form::url_encode(serial))
}

/// The page of a certificate.
pub(crate) fn href_certificate(ca: &str, serial: &str) -> String {
    format!(
        "/console/certificates/{}/{}",
        form::url_encode(ca),
        form::url_encode(serial)
    )
}

/// The page of a job.
pub(crate) fn href_job(id: &str) -> String {
    format!("/console/jobs/{}", form::url_encode(id))
}

/// The appliance's PC/SC readers: (name, card present), or why they cannot be listed.
pub(crate) async fn readers() -> Result<Vec<(String, bool)>, String> {
    tokio::task::spawn_blocking(|| cps_card::Pcsc::establish().and_then(|p| p.readers()))
        .await
        .map_err(|e| e.to_string())?
        .map(|l| l.into_iter().map(|r| (r.name, r.card_present)).collect())
        .map_err(|e| format!("PC/SC: {e}"))
}

/// The notices for a `done=` code after a redirect (a fixed set: nothing from the URL is
/// shown), with `pending` certificate changes the CA has not confirmed yet.
pub(crate) fn done_notice(page: &mut Page<'_>, fields: &form::Fields) {
    let msg = match fields.get("done") {
        Some("suspended") => "The card is suspended: its certificates are on hold.",
        Some("resumed") => "The card is active again: its certificates are released from hold.",
        Some("opposed") => "The card is opposed: its certificates are revoked for good.",
        Some("unblocked") => "The PIN is unblocked and set to the new value.",
        Some("renewed") => {
            "The card has new keys and certificates; the previous certificates are revoked as superseded."
        }
        Some("status") => "The professional's status was changed.",
        Some("created") => "The professional is registered.",
        Some("updated") => "The changes are saved.",
        _ => return,
    };
    page.notice(Tone::Success, msg, None);
    if let Some(n) = fields
        .get("pending")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        page.notice(
            Tone::Warning,
            &format!("The certificate authority did not confirm {n} certificate change(s) yet."),
            Some(
                "They stay in the revocation outbox and are retried; the card page shows the state the CA reports.",
            ),
        );
    }
}

/// What a certificate slot of a CPS card is for.
pub(crate) fn slot_label(s: cps_enrol::CertSlot) -> &'static str {
    match s {
        cps_enrol::CertSlot::Authentication => "Authentication",
        cps_enrol::CertSlot::Signature => "Signature",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::console::html::tests::{HOSTILE, assert_escaped};

    /// An operator who may act, with a fixed anti-forgery token.
    pub(crate) fn officer() -> Operator {
        Operator {
            name: "officer".into(),
            roles: vec!["ra-officer".into()],
        }
    }

    pub(crate) fn viewer(op: &Operator) -> Viewer<'_> {
        Viewer {
            op,
            can_write: true,
            token: "TOKEN".into(),
        }
    }

    /// Every form of `page` carries the anti-forgery field.
    pub(crate) fn assert_forms_have_csrf(page: &str) {
        let forms = page.matches("<form method=\"post\"").count();
        let tokens = page
            .matches("<input type=\"hidden\" name=\"csrf\" value=\"TOKEN\">")
            .count();
        assert!(forms > 0, "no form in the page");
        assert_eq!(forms, tokens, "a form without its token:\n{page}");
    }

    #[test]
    fn done_notices_come_from_a_fixed_set() {
        let op = officer();
        let mut p = Page::new("t", Some(&op));
        done_notice(
            &mut p,
            &form::parse_urlencoded(b"done=<script>&pending=1").unwrap(),
        );
        assert!(p.notices.is_empty());
        done_notice(
            &mut p,
            &form::parse_urlencoded(b"done=suspended&pending=2").unwrap(),
        );
        let h = p.render(html! {});
        assert!(h.contains("on hold") && h.contains("2 certificate change(s)"));
    }

    #[test]
    fn error_pages_escape_their_detail_title_and_back_link() {
        let op = Operator {
            name: HOSTILE.into(),
            roles: vec![],
        };
        let e = ConsoleError::new(StatusCode::NOT_FOUND, HOSTILE, HOSTILE)
            .with_operator(&op)
            .with_back(&format!("/console/cards/{HOSTILE}"), HOSTILE);
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = futures_body(resp);
        assert_escaped(&body);
    }

    fn futures_body(resp: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(http_body_util::BodyExt::collect(resp.into_body()))
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
