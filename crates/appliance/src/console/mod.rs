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

pub(crate) use cps_console::{
    EnrolJobMeta, Viewer, full_name, href_card, href_job, href_professional,
};
pub use cps_console::{csrf, form, html};

pub(crate) mod cards;
pub(crate) mod jobs;
pub(crate) mod professionals;
pub(crate) mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cps_enrol::{CardService, EnrolError};
use parking_lot::Mutex;

use crate::api::ApiState;
use crate::operators::Operator;

/// Roles that may act in the console (forms are shown to them; [`crate::authz`] decides).
const WRITE: &[crate::operators::Role] = &[crate::operators::Role::RaOfficer];

const MAX_JOB_META: usize = 1000;

/// Per-process console state.
pub(crate) struct Console {
    csrf: Option<csrf::CsrfKey>,
    enrol_jobs: Mutex<HashMap<String, EnrolJobMeta>>,
}

impl Console {
    /// The console with its form-token key (`None`: a random key for this process).
    pub(crate) fn new(key: Option<[u8; 32]>) -> Console {
        let csrf = match key {
            Some(k) => Some(csrf::CsrfKey::from_bytes(&k)),
            None => match csrf::CsrfKey::random() {
                Ok(k) => Some(k),
                Err(_) => {
                    tracing::error!("system random generator failed: console forms are disabled");
                    None
                }
            },
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
        let op = e.operator.as_ref().map(shown);
        let page = html::error_page(
            &e.title,
            op.as_ref(),
            &e.detail,
            e.status.is_server_error(),
            e.back.as_ref().map(|(h, l)| (h.as_str(), l.as_str())),
        );
        (e.status, html_response(page)).into_response()
    }
}

/// The operator as the pages show them.
fn shown(op: &Operator) -> cps_console::Operator {
    cps_console::Operator {
        name: op.name.clone(),
        roles: op.roles.clone(),
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
            now: crate::clock::unix_now(),
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
    pub fn viewer(&self) -> Viewer {
        Viewer {
            op: shown(&self.op),
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
        HeaderValue::from_static(cps_console::CSP),
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
        cps_console::CSS,
    )
        .into_response()
}

pub(crate) async fn asset_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        cps_console::JS,
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

/// The appliance's PC/SC readers: (name, card present), or why they cannot be listed.
pub(crate) async fn readers() -> Result<Vec<(String, bool)>, String> {
    tokio::task::spawn_blocking(|| cps_card::Pcsc::establish().and_then(|p| p.readers()))
        .await
        .map_err(|e| e.to_string())?
        .map(|l| l.into_iter().map(|r| (r.name, r.card_present)).collect())
        .map_err(|e| format!("PC/SC: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_escape_their_detail_title_and_back_link() {
        let hostile = "<script>alert('x')</script>\" onmouseover=\"x&y";
        let op = Operator {
            name: hostile.into(),
            roles: vec![],
        };
        let e = ConsoleError::new(StatusCode::NOT_FOUND, hostile, hostile)
            .with_operator(&op)
            .with_back(&format!("/console/cards/{hostile}"), hostile);
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(http_body_util::BodyExt::collect(resp.into_body()))
            .unwrap()
            .to_bytes();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(
            !body.contains("<script>alert") && !body.contains("\" onmouseover"),
            "{body}"
        );
        // <title>, <h1>, operator, notice, back link text and target: each escaped.
        assert_eq!(
            body.matches("&lt;script&gt;alert('x')&lt;/script&gt;&quot; onmouseover=&quot;x&amp;y")
                .count(),
            6,
            "{body}"
        );
        assert!(body.contains(&format!(
            "href=\"/console/cards/{}\"",
            "&lt;script&gt;alert('x')&lt;/script&gt;&quot; onmouseover=&quot;x&amp;y"
        )));
    }
}
