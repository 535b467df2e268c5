//! Authorization of the HTTPS listener, in one place.
//!
//! [`ROUTES`] is the table of every route of the API and the console: who may call it and which
//! request-forgery policy applies. The router is built from it ([`router`]) — a route exists only
//! through its entry — and one middleware ([`enforce`]) runs before any handler, for every
//! request:
//!
//! 1. **Request forgery.** Fetch Metadata resource isolation: a request another site made the
//!    browser send (`Sec-Fetch-Site` other than `same-origin` / `none`) is refused, except a
//!    top-level navigation to a console page; a foreign `Origin` is refused; a state-changing API
//!    route accepts only its own, non CORS-simple content types (never `text/plain`, form
//!    encodings, or no content type), so a hostile page cannot make a browser send it without a
//!    preflight that this appliance never grants; a console form post must be a form and carries
//!    an anti-forgery token bound to the operator certificate, which its handler checks
//!    ([`crate::console::Ctx::check_post`]).
//! 2. **Identity, for every request.** The connection's client certificate is looked up in the
//!    live state ([`crate::identity`]): revoked, on hold, expired or unknown → 401 and the
//!    connection is closed; the store unable to answer → 503. Handlers only ever see the checked
//!    [`Identity`]; the raw certificate is removed from the request.
//! 3. **Who.** [`Who::Anyone`], [`Who::CardCertificate`] (a checked client certificate; the login
//!    service requires the card's authentication certificate), or [`Who::Operator`] with one of
//!    the roles (no certificate → 401; not an operator or lacking the role → 403).
//!
//! A route the router matched but the table does not know is refused (fail closed); a test walks
//! the table against the router and every role against every route.

mod openapi;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::api::{self, ApiError, ApiState, ClientCert};
use crate::conn::{Connection, discard_then};
use crate::console;
use crate::identity::Identity;
pub use crate::operators::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone, with or without a client certificate (a certificate presented is still checked).
    Anyone,
    /// A client certificate that passes the per-request check (card login over TLS).
    CardCertificate,
    /// An operator with one of these roles.
    Operator(&'static [Role]),
}

/// The request-forgery policy of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// `GET`: no state change. Cross-site requests are refused, but for top-level navigations to
    /// a console page ([`Route::navigable`]).
    Read,
    /// A state-changing API request: its `Content-Type` must be one of these (none of them
    /// CORS-simple).
    Write(&'static [&'static str]),
    /// A console form post: a form encoding, with the anti-forgery token its handler checks.
    Form,
}

/// Which part of the listener a route belongs to (how its refusals look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// JSON API.
    Api,
    /// HTML console (error pages, security headers).
    Console,
}

/// One entry of the table.
pub struct Route {
    pub method: Method,
    /// The route pattern, as axum matches it (`{param}`).
    pub path: &'static str,
    pub who: Who,
    pub forgery: Forgery,
    /// A console page another site may link to (a cross-site top-level navigation is allowed).
    pub navigable: bool,
    pub surface: Surface,
    /// What the route does (README's role table).
    pub what: &'static str,
    /// The handler; `None` for routes served by the vendored Swagger UI.
    pub handler: Option<fn() -> MethodRouter<ApiState>>,
    /// Largest request body accepted (a client that waits for `100 Continue` with a larger
    /// declared `Content-Length` is refused before it sends the body).
    pub max_body: usize,
}

const JSON: &[&str] = &["application/json"];
const XML: &[&str] = &["application/xml", "text/xml", "application/soap+xml"];
const CSV: &[&str] = &["text/csv"];

/// Content types a browser may send cross-site without a preflight (the Fetch standard's
/// CORS-safelisted request header values for `Content-Type`). No write route accepts them.
pub const CORS_SIMPLE: &[&str] = &[
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

const OPS: &[Role] = &[Role::CaOperator];
const CA_READ: &[Role] = &[Role::CaOperator, Role::RaOfficer, Role::Auditor];
const NODE_READ: &[Role] = &[Role::CaOperator, Role::Auditor];
const AUDIT: &[Role] = &[Role::Auditor, Role::CaOperator];
const REG_READ: &[Role] = &[Role::RaOfficer, Role::Auditor];
const REG_WRITE: &[Role] = &[Role::RaOfficer];
const SERVICE: &[Role] = &[Role::Service];
const SIGNER: &[Role] = &[Role::Signer];
const VERIFIER: &[Role] = &[Role::Service, Role::Signer];
const ANY_OPERATOR: &[Role] = &Role::ALL;

macro_rules! route {
    ($m:ident $path:literal, $who:expr, $forgery:expr, $surface:ident, $nav:literal, $what:literal, $h:expr) => {
        route!($m $path, $who, $forgery, $surface, $nav, $what, $h, api::MAX_BODY)
    };
    ($m:ident $path:literal, $who:expr, $forgery:expr, $surface:ident, $nav:literal, $what:literal, $h:expr, $max:expr) => {
        Route {
            method: Method::$m,
            path: $path,
            who: $who,
            forgery: $forgery,
            navigable: $nav,
            surface: Surface::$surface,
            what: $what,
            handler: $h,
            max_body: $max,
        }
    };
}

use Forgery::{Form, Read, Write};
use Who::{Anyone, CardCertificate, Operator};

/// Every route of the HTTPS listener.
pub static ROUTES: &[Route] = &[
    // --- API: operators and certificates.
    route!(GET "/api/v1/whoami", Operator(ANY_OPERATOR), Read, Api, false,
        "the caller's operator name and roles", Some(|| get(api::whoami))),
    route!(POST "/api/v1/operators", Operator(OPS), Write(JSON), Api, false,
        "create an operator credential", Some(|| post(api::create_operator))),
    route!(GET "/api/v1/certificates", Operator(CA_READ), Read, Api, false,
        "list certificates", Some(|| get(api::list_certificates))),
    route!(POST "/api/v1/certificates", Operator(OPS), Write(JSON), Api, false,
        "issue a certificate from a CSR (organisation, TLS, seal profiles; card certificates only by enrolment)",
        Some(|| post(api::issue))),
    route!(GET "/api/v1/certificates/{ca}/{serial}", Operator(CA_READ), Read, Api, false,
        "show a certificate", Some(|| get(api::get_certificate))),
    route!(POST "/api/v1/certificates/{ca}/{serial}/revoke", Operator(OPS), Write(JSON), Api, false,
        "revoke, hold or release a certificate", Some(|| post(api::revoke))),
    route!(GET "/api/v1/crl/{ca}", Anyone, Read, Api, false,
        "the current CRL of a CA", Some(|| get(api::crl))),
    // --- API: ATNA secure nodes and the audit trail.
    route!(GET "/api/v1/nodes", Operator(NODE_READ), Read, Api, false,
        "list secure nodes", Some(|| get(api::list_nodes))),
    route!(POST "/api/v1/nodes", Operator(OPS), Write(JSON), Api, false,
        "enrol a secure node", Some(|| post(api::enroll_node))),
    route!(GET "/api/v1/nodes/{name}", Operator(NODE_READ), Read, Api, false,
        "show a secure node", Some(|| get(api::get_node))),
    route!(POST "/api/v1/nodes/{name}/remove", Operator(OPS), Write(JSON), Api, false,
        "remove a secure node (revokes its certificates)", Some(|| post(api::remove_node))),
    route!(GET "/api/v1/audit/events", Operator(AUDIT), Read, Api, false,
        "search the audit record repository", Some(|| get(api::audit_events))),
    route!(GET "/api/v1/audit/checkpoints", Operator(AUDIT), Read, Api, false,
        "the audit log's checkpoint anchors and certificates (for `audit verify`)",
        Some(|| get(api::audit_checkpoints))),
    // --- API: card login and assertions.
    route!(POST "/api/v1/login/challenge", Anyone, Write(JSON), Api, false,
        "a card login challenge", Some(|| post(crate::api_xua::challenge))),
    route!(POST "/api/v1/login", Anyone, Write(JSON), Api, false,
        "card login: the challenge signed by the card → an assertion", Some(|| post(crate::api_xua::login))),
    route!(POST "/api/v1/login/tls", CardCertificate, Write(JSON), Api, false,
        "card login on a connection authenticated by the card → an assertion",
        Some(|| post(crate::api_xua::login_tls))),
    route!(POST "/api/v1/xua/validate", Operator(SERVICE), Write(XML), Api, false,
        "validate an assertion (each ID once)", Some(|| post(crate::api_xua::validate))),
    // --- API: document signatures (IHE DSG).
    route!(POST "/api/v1/dsg/sign", Operator(SIGNER), Write(JSON), Api, false,
        "sign documents with a structure's seal (the structures the signer is bound to)",
        Some(|| post(crate::api_dsg::sign)), crate::api_dsg::MAX_DSG_BODY),
    route!(POST "/api/v1/dsg/verify", Operator(VERIFIER), Write(JSON), Api, false,
        "verify a document signature", Some(|| post(crate::api_dsg::verify)),
        crate::api_dsg::MAX_DSG_BODY),
    // --- API: registry and cards.
    route!(GET "/api/v1/professionals", Operator(REG_READ), Read, Api, false,
        "search the registry", Some(|| get(crate::api_enrol::search))),
    route!(POST "/api/v1/professionals", Operator(REG_WRITE), Write(JSON), Api, false,
        "register a professional", Some(|| post(crate::api_enrol::create_professional))),
    route!(POST "/api/v1/professionals/import", Operator(REG_WRITE), Write(CSV), Api, false,
        "import a registry file (a job)",
        Some(|| post(crate::api_enrol::import)), crate::api_enrol::MAX_IMPORT_BYTES),
    route!(GET "/api/v1/professionals/{idnat}", Operator(REG_READ), Read, Api, false,
        "show a professional and their cards", Some(|| get(crate::api_enrol::get_professional))),
    route!(POST "/api/v1/professionals/{idnat}/status", Operator(REG_WRITE), Write(JSON), Api, false,
        "change a professional's status", Some(|| post(crate::api_enrol::set_status))),
    route!(GET "/api/v1/readers", Operator(REG_WRITE), Read, Api, false,
        "the appliance's card readers", Some(|| get(crate::api_enrol::readers))),
    route!(GET "/api/v1/jobs/{id}", Operator(REG_READ), Read, Api, false,
        "follow a job (the initial PIN/PUK go once to whoever started it)", Some(|| get(crate::api_enrol::job))),
    route!(POST "/api/v1/cards/enrol", Operator(REG_WRITE), Write(JSON), Api, false,
        "enrol a card in a reader (a job)", Some(|| post(crate::api_enrol::enrol))),
    route!(GET "/api/v1/cards/{serial}", Operator(REG_READ), Read, Api, false,
        "show a card", Some(|| get(crate::api_enrol::get_card))),
    route!(POST "/api/v1/cards/{serial}/{action}", Operator(REG_WRITE), Write(JSON), Api, false,
        "card lifecycle: suspend, resume, oppose, renew, unblock", Some(|| post(crate::api_enrol::card_action))),
    // --- API description (Swagger UI vendored in the binary).
    route!(GET "/api/v1/openapi.json", Anyone, Read, Api, false, "the OpenAPI document", None),
    route!(GET "/api/docs", Anyone, Read, Api, false, "Swagger UI", None),
    route!(GET "/api/docs/", Anyone, Read, Api, false, "Swagger UI", None),
    route!(GET "/api/docs/{*rest}", Anyone, Read, Api, false, "Swagger UI", None),
    // --- Console (card-issuing staff).
    route!(GET "/console", Operator(REG_READ), Read, Console, true,
        "console home (redirect)", Some(|| get(|| async { console::see_other("/console/") }))),
    route!(GET "/console/", Operator(REG_READ), Read, Console, true,
        "console home", Some(|| get(console::professionals::home))),
    route!(GET "/console/assets/console.css", Operator(ANY_OPERATOR), Read, Console, false,
        "console stylesheet", Some(|| get(console::asset_css))),
    route!(GET "/console/assets/console.js", Operator(ANY_OPERATOR), Read, Console, false,
        "console script", Some(|| get(console::asset_js))),
    route!(GET "/console/professionals", Operator(REG_READ), Read, Console, true,
        "search the registry", Some(|| get(console::professionals::search))),
    route!(GET "/console/professionals/new", Operator(REG_WRITE), Read, Console, true,
        "registration form", Some(|| get(console::registry::new_form))),
    route!(POST "/console/professionals/new", Operator(REG_WRITE), Form, Console, false,
        "register a professional", Some(|| post(console::registry::create))),
    route!(GET "/console/professionals/{idnat}", Operator(REG_READ), Read, Console, true,
        "a professional's page", Some(|| get(console::professionals::professional))),
    route!(GET "/console/professionals/{idnat}/edit", Operator(REG_WRITE), Read, Console, true,
        "edit form", Some(|| get(console::registry::edit_form))),
    route!(POST "/console/professionals/{idnat}/edit", Operator(REG_WRITE), Form, Console, false,
        "edit a professional", Some(|| post(console::registry::update))),
    route!(POST "/console/professionals/{idnat}/status", Operator(REG_WRITE), Form, Console, false,
        "change a professional's status", Some(|| post(console::professionals::set_status))),
    route!(GET "/console/professionals/{idnat}/enrol", Operator(REG_WRITE), Read, Console, true,
        "enrolment form", Some(|| get(console::jobs::enrol_form))),
    route!(POST "/console/professionals/{idnat}/enrol", Operator(REG_WRITE), Form, Console, false,
        "enrol a card (a job)", Some(|| post(console::jobs::enrol))),
    route!(GET "/console/jobs/{id}", Operator(REG_READ), Read, Console, true,
        "a job's progress (the PIN mailer once, to whoever started it)", Some(|| get(console::jobs::job_page))),
    route!(GET "/console/jobs/{id}/status", Operator(REG_READ), Read, Console, false,
        "a job's progress, JSON (never the PIN/PUK)", Some(|| get(console::jobs::job_status))),
    route!(GET "/console/cards/{serial}", Operator(REG_READ), Read, Console, true,
        "a card's page", Some(|| get(console::cards::card_page))),
    route!(POST "/console/cards/{serial}/{action}", Operator(REG_WRITE), Form, Console, false,
        "card lifecycle", Some(|| post(console::cards::card_action))),
    route!(GET "/console/certificates/{ca}/{serial}", Operator(REG_READ), Read, Console, true,
        "a certificate's page", Some(|| get(console::cards::certificate_page))),
    route!(GET "/console/certificates/{ca}/{serial}/pem", Operator(REG_READ), Read, Console, false,
        "a certificate's PEM file", Some(|| get(console::cards::certificate_pem))),
    route!(GET "/console/import", Operator(REG_WRITE), Read, Console, true,
        "registry import form", Some(|| get(console::jobs::import_form))),
    route!(POST "/console/import", Operator(REG_WRITE), Form, Console, false,
        "import a registry file (a job)",
        Some(|| post(console::jobs::import)), crate::api_enrol::MAX_IMPORT_BYTES),
];

/// `(method, path)` → its entry. `HEAD` is looked up as `GET` (axum serves it with the `GET`
/// handler).
static BY_ROUTE: LazyLock<HashMap<(Method, &'static str), &'static Route>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|r| ((r.method.clone(), r.path), r))
        .collect()
});

/// The entry of a matched route.
pub fn rule(method: &Method, path: &str) -> Option<&'static Route> {
    let m = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    BY_ROUTE.get(&(m.clone(), path)).copied()
}

/// The HTTPS listener's router: every route of [`ROUTES`], the vendored Swagger UI, and
/// [`enforce`] in front of all of them. The caller adds the per-connection extensions
/// ([`ClientCert`], [`Connection`], [`crate::conn::PeerAddr`]) to each request.
pub fn router(state: ApiState) -> Router {
    let mut r: Router<ApiState> = Router::new();
    for route in ROUTES {
        if let Some(h) = route.handler {
            let mut h = h();
            if route.max_body != api::MAX_BODY {
                h = h.layer(DefaultBodyLimit::max(route.max_body));
            }
            r = r.route(route.path, h);
        }
    }
    r.merge(openapi::swagger_ui())
        .route_layer(middleware::from_fn_with_state(state.clone(), enforce))
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::Extension(Arc::new(console::Console::new(
            state.console_key,
        ))))
        .with_state(state)
}

/// A refusal, shaped for the route's surface.
fn refuse(surface: Surface, status: StatusCode, title: &str, detail: String) -> Response {
    match surface {
        Surface::Api => ApiError::new(status, detail).into_response(),
        Surface::Console => console::security_headers_on(
            console::ConsoleError::new(status, title, detail).into_response(),
        ),
    }
}

/// The media type of a request (`Content-Type` without parameters, lower case).
fn media_type(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Checks `Origin` and `Sec-Fetch-Site` against the host the request was sent to; `navigable`
/// allows a cross-site top-level navigation (`GET`, `Sec-Fetch-Mode: navigate`).
pub fn check_origin(
    method: &Method,
    headers: &HeaderMap,
    authority: Option<&str>,
    navigable: bool,
) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        if site != "same-origin" && site != "none" {
            let navigation = navigable
                && (method == Method::GET || method == Method::HEAD)
                && headers
                    .get("sec-fetch-mode")
                    .is_some_and(|m| m == "navigate")
                && headers
                    .get("sec-fetch-dest")
                    .is_none_or(|d| d == "document");
            if !navigation {
                return Err(format!(
                    "the request came from another site (Sec-Fetch-Site: {site})"
                ));
            }
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority)
            .unwrap_or("");
        if host.is_empty() || origin != format!("https://{host}") {
            return Err(format!("the request came from another origin ({origin})"));
        }
    }
    Ok(())
}

/// The request-forgery checks of `route` (see the module documentation).
fn check_forgery(route: &Route, req: &Request) -> Result<(), (StatusCode, String)> {
    check_origin(
        req.method(),
        req.headers(),
        req.uri().authority().map(|a| a.as_str()),
        route.navigable,
    )
    .map_err(|e| (StatusCode::FORBIDDEN, e))?;
    let ct = media_type(req.headers());
    match route.forgery {
        Forgery::Read => Ok(()),
        Forgery::Write(types) => match ct.as_deref() {
            Some(t) if types.contains(&t) => Ok(()),
            other => Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type must be {} (got {})",
                    types.join(" or "),
                    other.unwrap_or("none")
                ),
            )),
        },
        Forgery::Form => match ct.as_deref() {
            Some("application/x-www-form-urlencoded" | "multipart/form-data") => Ok(()),
            other => Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a console form must be posted as a form (got {})",
                    other.unwrap_or("no Content-Type")
                ),
            )),
        },
    }
}

/// The one authorization middleware of the HTTPS listener (see the module documentation).
pub async fn enforce(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    // The certificates version is read after the request arrived (with other nodes on the store,
    // through one shared read), so the identity check sees every status change made before it.
    let has_cert = req
        .extensions()
        .get::<ClientCert>()
        .is_some_and(|c| c.0.is_some());
    let version = if has_cert {
        st.identities.version().await
    } else {
        None
    };
    if has_cert {
        req.extensions_mut()
            .insert(crate::identity::RequestVersion(version));
    }
    // The route pattern (an `authz::ROUTES` path), never the concrete path: bounded labels.
    let timed = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| (req.method().as_str().to_owned(), m.as_str().to_owned()));
    let started = std::time::Instant::now();
    let resp = enforce_timed(st, req, next, version).await;
    if let Some((method, route)) = timed {
        metrics::histogram!(
            crate::metrics::HTTP_REQUEST_SECONDS,
            "method" => method,
            "route" => route,
            "status" => resp.status().as_str().to_owned(),
        )
        .record(started.elapsed().as_secs_f64());
    }
    resp
}

/// [`enforce`] once the request's certificates version is known.
async fn enforce_timed(
    st: ApiState,
    mut req: Request,
    next: Next,
    version: Option<u64>,
) -> Response {
    match admit(&st, &mut req, version) {
        Ok(surface) => {
            let resp = next.run(req).await;
            match surface {
                Surface::Console => console::security_headers_on(resp),
                Surface::Api => api_error_shape(resp).await,
            }
        }
        Err(refusal) => discard_then(req, refusal).await,
    }
}

/// An API answer in the API's error shape: a refusal of axum's extractors (a malformed query
/// string or path, a body over the route's limit) is plain text; it becomes the same
/// `{"error": ...}` JSON as every other API error, with its status.
async fn api_error_shape(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(resp.status().is_client_error() && plain) {
        return resp;
    }
    let status = resp.status();
    // Rejection messages are short; anything longer is cut.
    let message = match axum::body::to_bytes(resp.into_body(), 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_owned(),
    };
    ApiError::new(status, message).into_response()
}

/// The checks of [`enforce`]: the route's surface when the request may go on (its extensions
/// then carry the checked [`Identity`] and [`Operator`](crate::operators::Operator)), or the
/// refusal.
// The error is the answer itself, built once per refused request: boxing it would only add an
// allocation.
#[allow(clippy::result_large_err)]
fn admit(st: &ApiState, req: &mut Request, version: Option<u64>) -> Result<Surface, Response> {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(route) = path.as_deref().and_then(|p| rule(req.method(), p)) else {
        if path
            .as_deref()
            .is_some_and(|p| ROUTES.iter().any(|r| r.path == p))
        {
            // OPTIONS, PUT... on a known path: not a route.
            return Err(
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response(),
            );
        }
        tracing::error!(method = %req.method(), path = ?path, "route without an authorization entry refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this route has no authorization entry",
        )
        .into_response());
    };
    let surface = route.surface;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client waiting for `100 Continue` is told at once, before it sends the body; one that
    // sends the body without waiting is answered by the body limit while it is read (answering
    // before reading would make the client's write fail before it sees the answer).
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits && declared.is_some_and(|n| n > route.max_body as u64) {
        return Err(refuse(
            surface,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            format!("the request body is larger than {} bytes", route.max_body),
        ));
    }
    if let Err((status, why)) = check_forgery(route, req) {
        return Err(refuse(
            surface,
            status,
            "Request refused",
            format!("{why}; nothing was changed"),
        ));
    }
    // The raw certificate goes; only a checked identity reaches the handlers.
    let cert = req
        .extensions_mut()
        .remove::<ClientCert>()
        .and_then(|c| c.0);
    let identity = match cert {
        None => None,
        Some(cert) => match st
            .identities
            .check_at(&cert, crate::clock::unix_now(), version)
        {
            Ok(id) => Some(id),
            Err(e) if e.is_final() => {
                if let Some(c) = req.extensions().get::<Arc<Connection>>() {
                    c.close();
                }
                tracing::info!(reason = %e, "client certificate refused on a live connection");
                let mut resp = refuse(
                    surface,
                    StatusCode::UNAUTHORIZED,
                    "Sign-in refused",
                    format!("{e}: this connection is closed"),
                );
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                return Err(resp);
            }
            Err(e) => {
                tracing::error!(error = %e, "client certificate status unavailable");
                return Err(refuse(
                    surface,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "the certificate status is unavailable; try again later".into(),
                ));
            }
        },
    };
    let no_cert = |what: &str| {
        refuse(
            surface,
            StatusCode::UNAUTHORIZED,
            "Sign-in required",
            format!("a client certificate is required ({what})"),
        )
    };
    match route.who {
        Who::Anyone => {}
        Who::CardCertificate => {
            if identity.is_none() {
                return Err(no_cert(
                    "mutual TLS with the card's authentication certificate",
                ));
            }
        }
        Who::Operator(roles) => {
            let Some(id) = &identity else {
                return Err(no_cert("mutual TLS with an operator certificate"));
            };
            let Some(op) = &id.operator else {
                return Err(refuse(
                    surface,
                    StatusCode::FORBIDDEN,
                    "Not allowed",
                    "this certificate is not registered as an operator".into(),
                ));
            };
            if !roles.iter().any(|r| op.has(r.as_str())) {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                let mut resp = refuse(
                    surface,
                    StatusCode::FORBIDDEN,
                    "Not allowed",
                    format!(
                        "operator '{}' lacks the role {} ({})",
                        op.name,
                        names.join(" or "),
                        route.what
                    ),
                );
                if surface == Surface::Console {
                    resp.extensions_mut().insert(op.clone());
                }
                return Err(resp);
            }
            req.extensions_mut().insert(op.clone());
        }
    }
    if let Some(id) = identity {
        req.extensions_mut().insert::<Identity>(id);
    }
    Ok(surface)
}

/// README's role table: every operator route and the roles allowed.
pub fn role_table_markdown() -> String {
    let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    let mut out = format!(
        "| route | what | {} |\n|---|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for r in ROUTES {
        let Who::Operator(roles) = r.who else {
            continue;
        };
        let cells: Vec<&str> = Role::ALL
            .iter()
            .map(|role| if roles.contains(role) { "✓" } else { "" })
            .collect();
        out.push_str(&format!(
            "| `{} {}` | {} | {} |\n",
            r.method,
            r.path,
            r.what,
            cells.join(" | ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_table_once_and_consistent() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            match r.forgery {
                Forgery::Read => assert_eq!(r.method, Method::GET, "{}", r.path),
                Forgery::Write(types) => {
                    assert_eq!(r.method, Method::POST, "{}", r.path);
                    assert_eq!(r.surface, Surface::Api, "{}", r.path);
                    for t in types {
                        assert!(!CORS_SIMPLE.contains(t), "{} accepts {t}", r.path);
                    }
                }
                Forgery::Form => {
                    assert_eq!(r.method, Method::POST, "{}", r.path);
                    assert_eq!(r.surface, Surface::Console, "{}", r.path);
                }
            }
            assert!(
                !r.navigable || (r.surface == Surface::Console && r.method == Method::GET),
                "{}",
                r.path
            );
            if let Who::Operator(roles) = r.who {
                assert!(!roles.is_empty(), "{}", r.path);
            }
            assert_eq!(
                r.surface == Surface::Console,
                r.path.starts_with("/console"),
                "{}",
                r.path
            );
        }
    }

    /// Least privilege as README promises it.
    #[test]
    fn least_privilege() {
        let who = |m: Method, p: &str| rule(&m, p).unwrap().who;
        // Raw issuance of seals, TLS server and node certificates: ca-operator only.
        for (m, p) in [
            (Method::POST, "/api/v1/certificates"),
            (Method::POST, "/api/v1/nodes"),
            (Method::POST, "/api/v1/operators"),
            (Method::POST, "/api/v1/certificates/{ca}/{serial}/revoke"),
        ] {
            assert_eq!(who(m, p), Who::Operator(&[Role::CaOperator]), "{p}");
        }
        // Validation consumes the assertion ID: service only.
        assert_eq!(
            who(Method::POST, "/api/v1/xua/validate"),
            Who::Operator(&[Role::Service])
        );
        // Signing with a seal: signers only; verifying: services and signers.
        assert_eq!(
            who(Method::POST, "/api/v1/dsg/sign"),
            Who::Operator(&[Role::Signer])
        );
        // No write is open to auditors; to services and signers only validation, signature
        // verification and (signers) signing.
        for r in ROUTES {
            if let (Who::Operator(roles), Forgery::Write(_) | Forgery::Form) = (r.who, r.forgery) {
                assert!(!roles.contains(&Role::Auditor), "{}", r.path);
                if !["/api/v1/xua/validate", "/api/v1/dsg/verify"].contains(&r.path) {
                    assert!(!roles.contains(&Role::Service), "{}", r.path);
                }
                if !["/api/v1/dsg/sign", "/api/v1/dsg/verify"].contains(&r.path) {
                    assert!(!roles.contains(&Role::Signer), "{}", r.path);
                }
            }
        }
    }

    #[test]
    fn route_lookup_and_head() {
        assert!(rule(&Method::GET, "/api/v1/whoami").is_some());
        assert!(rule(&Method::HEAD, "/console/").is_some());
        assert!(rule(&Method::POST, "/api/v1/whoami").is_none());
        assert!(rule(&Method::DELETE, "/api/v1/certificates").is_none());
        assert!(
            Role::ALL
                .iter()
                .all(|r| Role::from_name(r.as_str()) == Some(*r))
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_requests_pass_and_others_are_refused() {
        let post = Method::POST;
        // No fetch metadata (curl, the CLI): the content type and token decide.
        assert!(check_origin(&post, &headers(&[("host", "a:8443")]), None, false).is_ok());
        assert!(
            check_origin(
                &post,
                &headers(&[
                    ("host", "a:8443"),
                    ("origin", "https://a:8443"),
                    ("sec-fetch-site", "same-origin")
                ]),
                None,
                false
            )
            .is_ok()
        );
        // HTTP/2: the authority instead of Host.
        assert!(
            check_origin(
                &post,
                &headers(&[("origin", "https://a:8443")]),
                Some("a:8443"),
                false
            )
            .is_ok()
        );
        for bad in [
            vec![("host", "a:8443"), ("origin", "https://evil.example")],
            vec![("host", "a:8443"), ("origin", "http://a:8443")],
            vec![("host", "a:8443"), ("origin", "null")],
            vec![("origin", "https://a:8443")],
            vec![("host", "a:8443"), ("sec-fetch-site", "cross-site")],
            vec![("host", "a:8443"), ("sec-fetch-site", "same-site")],
        ] {
            assert!(
                check_origin(&post, &headers(&bad), None, true).is_err(),
                "{bad:?}"
            );
        }
        // A link from another site to a console page is a navigation: allowed for pages only.
        let nav = headers(&[
            ("host", "a:8443"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ]);
        assert!(check_origin(&Method::GET, &nav, None, true).is_ok());
        assert!(check_origin(&Method::GET, &nav, None, false).is_err());
        assert!(check_origin(&Method::POST, &nav, None, true).is_err());
        let img = headers(&[
            ("host", "a:8443"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ]);
        assert!(check_origin(&Method::GET, &img, None, true).is_err());
    }

    #[test]
    fn readme_role_table_is_the_table() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        assert!(
            readme.contains(&role_table_markdown()),
            "README.md's role table differs from the authorization table; it should read:\n{}",
            role_table_markdown()
        );
    }
}
