//! `cps-trust serve`: the running appliance. It opens the HSM (refusing to start unless the
//! self-check passes), the store and the CA service, then serves:
//! * the public PKI listener (plain HTTP): `/health`, `/ca/<id>.der|.pem`, `/crl/<ca>.crl` and the shards `/crl/<ca>/<shard>.crl`;
//! * the API listener (HTTPS, mutual TLS): `/api/v1/...`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cps_hsm::Hsm;
use cps_store::{NodeStore, Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

use crate::api::{ApiState, ClientCert};
use crate::ca::CaService;
use crate::clock::SigningClock;
use crate::config::Config;
use crate::conn::{Connection, Limits, PeerAddr};
use crate::error::ApplianceError;
use crate::home::{CA_DIR, open_checked_hsm};
use crate::identity::PeerCertificate;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// This node's id (`[cluster] node_id`).
    pub node: String,
    pub hsm: Arc<Hsm>,
    pub store: Arc<dyn Store>,
    pub ca: Arc<CaService>,
    pub ocsp: Arc<cps_ocsp::Responder>,
    /// Published CA certificates by id (`root`, `personnes`, `personnes-ocsp`...), DER.
    ca_certs: Arc<HashMap<String, Vec<u8>>>,
    home: PathBuf,
    /// Counters of the NTP server, once it runs.
    pub ntp_stats: Option<cps_ct::StatsHandle>,
    pub xua: Arc<crate::xua::XuaService>,
    /// The time-stamping authority (`None` when `[tsa] enabled = false`, or when its key could
    /// not be certified at this start because the clock was not trusted).
    pub tsa: Option<Arc<crate::tsa::TsaService>>,
    /// `[tsa] enabled`.
    tsa_enabled: bool,
    pub login: Arc<crate::login::LoginService>,
    /// Refused logins of peers that proved nothing, counted by `login` (flushed by `serve`).
    pub login_refusals: Arc<crate::refusals::Refusals>,
    pub cards: Arc<cps_enrol::CardService>,
    /// Free space of the store, the audit log and the queue (new work refused below the reserve).
    pub disk: Arc<crate::disk::DiskGuard>,
    /// Reads of the store's certificates version after a request arrived; shared with other
    /// nodes, the OCSP cache is checked against it before each answer.
    pub fresh: Arc<cps_store::FreshVersion>,
    pub ocsp_fresh: Option<Arc<crate::cluster::OcspFreshness>>,
    /// The console's form-token key (the same on every node sharing the HSM).
    pub console_key: [u8; 32],
    /// Document signatures: the structure seals and the verifier.
    pub dsg: Arc<crate::dsg::DsgService>,
    /// notAfter of the appliance's own certificates (`cps_certificate_expiry_seconds`).
    pub expiries: Arc<crate::metrics::Expiries>,
}

/// Everything `serve` needs, opened and checked. Fails closed: no HSM, an unsafe key or an
/// unreadable store means the appliance does not start.
pub fn open(home: &Path, config: &Config) -> Result<AppState, ApplianceError> {
    config.validate(home)?;
    let hsm = open_checked_hsm(home, config)?;
    // Every commit goes through the disk guard: nothing reaches the disk below the reserve.
    let disk = crate::disk::for_home(home, config);
    // Every service sees the store as this node: the audit records it commits name the node.
    let node = config.node_id();
    // Each durable audit record is counted once, after its commit (see `crate::metrics`).
    let mut node_store = NodeStore::new(crate::store::open(home, config, Some(&disk))?, &node)?;
    if crate::metrics::handle().is_some() {
        node_store = node_store.with_audit_observer(crate::metrics::audit_observer());
    }
    let store: Arc<dyn Store> = Arc::new(node_store);
    // Other nodes commit to this store (a shared database): caches of certificate state check
    // the store's version after each request arrived.
    let shared = config.store.backend == crate::config::StoreBackend::Postgres;
    let fresh = Arc::new(cps_store::FreshVersion::new(store.clone(), shared));
    let clock = SigningClock::from_config(&config.time, Some(store.clone()));
    let ca = Arc::new(CaService::open(
        home,
        config,
        &hsm,
        store.clone(),
        clock.clone(),
    )?);
    let ocsp = crate::ocsp::responder(home, config, &hsm, store.clone(), clock.clone())?;
    ca.add_listener(Arc::new(crate::ocsp::Invalidator(ocsp.clone())));
    let xua = Arc::new(crate::xua::open(
        home,
        config,
        &hsm,
        &ca,
        clock.clone(),
        Arc::new(crate::enrolment::RegistryDirectory(
            cps_enrol::Registry::new(store.clone()),
        )),
    )?);
    // A TSA key not yet certified while the clock is untrusted (an appliance upgraded, then
    // started with a bad clock) does not stop the rest: `/tsa` answers systemFailure until a
    // start with a trusted clock certifies it.
    let tsa = match crate::tsa::TsaService::open(home, config, &hsm, &ca, clock.clone()) {
        Ok(t) => t,
        Err(e) if !clock.evaluate().is_trusted() => {
            tracing::error!(error = %e, "the time-stamping authority is unavailable until a start with a trusted clock");
            None
        }
        Err(e) => return Err(e),
    };
    let cards = crate::enrolment::card_service(&hsm, ca.clone(), &node)?;
    // An enrolment of this node interrupted by a crash is rolled back before anything else
    // (another node's enrolments are that node's: it may be driving them right now).
    match cards.recover_interrupted("appliance", crate::clock::unix_now()) {
        Ok(report) => tracing::info!(?report, "interrupted enrolments recovered"),
        Err(e) => tracing::error!(error = %e, "recovering interrupted enrolments failed"),
    }
    // The challenge MAC key is derived once from a non-extractable HSM secret (every node
    // sharing the HSM derives the same one); challenges are bound to the seal certificate.
    let hsm_secret = crate::login::challenge_key(&hsm)?;
    // The console's form-token key, derived from the same HSM secret: every node of a cluster
    // accepts the forms another node showed (no sticky session needed for the console).
    let console_key = {
        use cps_hsm::MacKey;
        hsm_secret
            .hmac_sha256(b"cps-trust console form tokens v1")
            .map_err(ApplianceError::from)?
    };
    let challenges = cps_login::challenge::Challenges::derive(
        &hsm_secret,
        xua.seal_sha256(),
        Duration::from_secs(u64::from(config.xua.challenge_seconds)),
    )?;
    // Redeemed challenges recorded where validated assertion IDs are (`xua.replay_record`).
    let challenges = match crate::xua::replay_record(config)? {
        cps_login::ReplayRecord::Memory => challenges,
        cps_login::ReplayRecord::Store => {
            challenges.with_shared_record(Arc::new(cps_login::StoreNonces::new(store.clone())))
        }
    };
    let login_refusals = Arc::new(crate::refusals::Refusals::new(crate::login::REFUSED_KIND));
    let login = Arc::new(crate::login::LoginService::new(
        ca.core().clone(),
        xua.clone(),
        Arc::new(crate::enrolment::EnrolDirectory(cards.clone())),
        challenges,
        config.xua.homologation.clone(),
        crate::login::counted_in(login_refusals.clone()),
    ));
    let dsg = Arc::new(crate::dsg::DsgService::new(
        crate::dsg::Seals::open(home, config, &hsm, &ca, clock.clone())?,
        ca.clone(),
        ocsp.clone(),
        tsa.clone()
            .map(|t| Arc::new(crate::dsg::InProcessTsa(t)) as crate::dsg::Stamper),
    )?);
    let mut ca_certs = HashMap::new();
    let mut expiries = crate::metrics::Expiries::default();
    let dir: PathBuf = home.join(CA_DIR);
    let ids = std::iter::once("root".to_string()).chain(
        config
            .ca
            .issuing
            .keys()
            .flat_map(|id| [id.clone(), format!("{id}-ocsp")]),
    );
    for id in ids {
        let p = dir.join(format!("{id}.der"));
        let der = std::fs::read(&p).map_err(|e| ApplianceError::Io {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        expiries.add(&id, &der);
        ca_certs.insert(id, der);
    }
    // The appliance's own end-entity certificates (each file's first certificate), made or
    // renewed by now: TLS server, XUA seal, TSA, audit checkpoint and node, each DSG seal.
    let mut own: Vec<(String, PathBuf)> = [
        ("tls-server", "tls/server.pem"),
        ("xua-seal", crate::xua::CACHET_FILE),
        ("tsa", "tsa/tsa.pem"),
        ("audit-checkpoint", "audit/checkpoint.pem"),
        ("audit-node", "audit/node.pem"),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_owned(), home.join(f)))
    .collect();
    own.extend(config.dsg.seals.iter().map(|s| {
        (
            format!("dsg-seal-{}", s.structure_id),
            home.join(format!("dsg/{}.pem", s.structure_id)),
        )
    }));
    for (name, path) in own {
        if let Some(der) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|pem| cps_pki::pem_certificates(&pem).into_iter().next())
        {
            expiries.add(&name, &der);
        }
    }
    Ok(AppState {
        node,
        hsm,
        store,
        ca,
        ocsp,
        ca_certs: Arc::new(ca_certs),
        home: home.to_path_buf(),
        ntp_stats: None,
        xua,
        tsa,
        tsa_enabled: config.tsa.enabled,
        login,
        login_refusals,
        cards,
        disk,
        console_key,
        dsg,
        expiries: Arc::new(expiries),
        ocsp_fresh: shared.then(|| Arc::new(crate::cluster::OcspFreshness::new(fresh.clone()))),
        fresh,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The plain-HTTP router for public PKI material.
pub fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ca/{file}", get(ca_certificate))
        .route("/crl/{file}", get(crl_file))
        .route("/crl/{ca}/{file}", get(crl_shard_file))
        .route("/ocsp", axum::routing::post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route(
            "/tsa",
            axum::routing::post(tsa_post).layer(axum::extract::DefaultBodyLimit::max(TSA_MAX_BODY)),
        )
        .layer(axum::extract::DefaultBodyLimit::max(crate::api::MAX_BODY))
        .with_state(state)
}

async fn health(State(st): State<AppState>) -> Response {
    let hsm = st.hsm.clone();
    let hsm_ok = tokio::task::spawn_blocking(move || hsm.token_summary().is_ok())
        .await
        .unwrap_or(false);
    let store_ok = st.store.audit_len().is_ok();
    // A store whose flush failed refuses writes until the appliance restarts (see cps-store).
    let store_failure = st.store.write_failure();
    let clock = st.ca.clock().report();
    let disk = st.disk.report();
    let disk_ok = st.disk.admit().is_ok();
    let ok = hsm_ok && store_ok && store_failure.is_none() && clock.trusted && disk_ok;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "node": st.node,
        "hsm": if hsm_ok { "ok" } else { "unreachable" },
        "store": match (store_ok, &store_failure) {
            (false, _) => "failing",
            (true, Some(_)) => "read-only",
            (true, None) => "ok",
        },
        "store_error": store_failure.map(|f| format!(
            "the store refuses writes after a failed flush ({f}); free the disk, then restart the appliance"
        )),
        "disk": disk,
        "clock": clock,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Prometheus text exposition: clock trust and the NTP server's counters.
async fn metrics(State(st): State<AppState>) -> Response {
    use std::fmt::Write;
    let clock = st.ca.clock().report();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "cps_clock_trusted",
        "1 when the clock is trusted and the appliance signs, 0 when signing is refused.",
        u8::from(clock.trusted).to_string(),
    );
    gauge(
        "cps_clock_synchronized",
        "1 when the clock source reports synchronisation.",
        clock
            .synchronized
            .map_or("NaN".into(), |s| u8::from(s).to_string()),
    );
    gauge(
        "cps_clock_max_error_seconds",
        "Maximum clock error reported by the clock source.",
        clock
            .max_error_us
            .map_or("NaN".into(), |e| (e as f64 / 1e6).to_string()),
    );
    gauge(
        "cps_clock_estimated_error_seconds",
        "Estimated clock error reported by the clock source.",
        clock
            .est_error_us
            .map_or("NaN".into(), |e| (e as f64 / 1e6).to_string()),
    );
    if let Some(ntp) = &st.ntp_stats {
        let s = ntp.get();
        for (name, help, v) in [
            (
                "cps_ntp_answered_total",
                "NTP time answers sent.",
                s.answered,
            ),
            (
                "cps_ntp_answered_unsynchronized_total",
                "NTP answers sent as unsynchronised (LI 3, stratum 16).",
                s.answered_unsynchronized,
            ),
            (
                "cps_ntp_kiss_rate_total",
                "Kiss-o'-Death RATE answers sent.",
                s.kiss_rate,
            ),
            (
                "cps_ntp_rate_dropped_total",
                "NTP requests dropped by the rate limiter.",
                s.rate_dropped,
            ),
            (
                "cps_ntp_ignored_total",
                "Malformed or unsupported NTP packets ignored.",
                s.ignored,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
    }
    st.expiries.render(now(), &mut out);
    if let Some(h) = crate::metrics::handle() {
        out.push_str(&h.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn ca_certificate(State(st): State<AppState>, UrlPath(file): UrlPath<String>) -> Response {
    let (id, pem) = match (file.strip_suffix(".der"), file.strip_suffix(".pem")) {
        (Some(id), _) => (id, false),
        (_, Some(id)) => (id, true),
        _ => return (StatusCode::NOT_FOUND, "use /ca/<id>.der or /ca/<id>.pem\n").into_response(),
    };
    match st.ca_certs.get(id) {
        Some(der) if pem => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            cps_pki::pem_encode("CERTIFICATE", der),
        )
            .into_response(),
        Some(der) => (
            [(header::CONTENT_TYPE, "application/pkix-cert")],
            der.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no CA certificate '{id}'\n")).into_response(),
    }
}

async fn crl_file(State(st): State<AppState>, UrlPath(file): UrlPath<String>) -> Response {
    let Some(ca) = file.strip_suffix(".crl").map(str::to_owned) else {
        return (StatusCode::NOT_FOUND, "use /crl/<ca>.crl\n").into_response();
    };
    serve_crl(st, ca, None).await
}

/// A shard of a partitioned CRL: `/crl/<ca>/<shard>.crl`.
async fn crl_shard_file(
    State(st): State<AppState>,
    UrlPath((ca, file)): UrlPath<(String, String)>,
) -> Response {
    let shard = file
        .strip_suffix(".crl")
        .filter(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u16>().ok());
    let Some(shard) = shard else {
        return (StatusCode::NOT_FOUND, "use /crl/<ca>/<shard>.crl\n").into_response();
    };
    serve_crl(st, ca, Some(shard)).await
}

async fn serve_crl(st: AppState, ca: String, part: Option<u16>) -> Response {
    if st.ca.authority(&ca).is_none() {
        return (StatusCode::NOT_FOUND, format!("no CA '{ca}'\n")).into_response();
    }
    if !st.ca.crl_partitions(&ca).contains(&part) {
        return (StatusCode::NOT_FOUND, format!("no such CRL of CA '{ca}'\n")).into_response();
    }
    let svc = st.ca.clone();
    match tokio::task::spawn_blocking(move || svc.crl_partition(&ca, part, now())).await {
        Ok(Ok(der)) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            der.as_ref().clone(),
        )
            .into_response(),
        Ok(Err(e @ crate::ca::CaError::Unavailable(_))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("CRL unavailable: {e}\n"),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CRL generation failed");
            (StatusCode::SERVICE_UNAVAILABLE, "CRL unavailable\n").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    }
}

/// The largest `POST /tsa` body read (a query is under 300 bytes; `cps_tsa::MAX_QUERY_LEN`
/// refuses anything over 1 KiB with `badRequest`, and so does a larger body here).
const TSA_MAX_BODY: usize = 4096;

/// RFC 3161 §3.4 over HTTP: `application/timestamp-query` in, `application/timestamp-reply`
/// out. Every refusal is a `TimeStampResp` (status rejection, one failure bit, no token).
async fn tsa_post(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let reply = |status: StatusCode, der: Vec<u8>| {
        (
            status,
            [(header::CONTENT_TYPE, "application/timestamp-reply")],
            der,
        )
            .into_response()
    };
    let Some(tsa) = st.tsa.clone() else {
        if st.tsa_enabled {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                cps_tsa::rejection(
                    cps_tsa::FailInfo::SystemFailure,
                    "the time-stamping authority is not available",
                ),
            );
        }
        return (StatusCode::NOT_FOUND, "no time-stamping authority here\n").into_response();
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some("application/timestamp-query") {
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            cps_tsa::rejection(
                cps_tsa::FailInfo::BadRequest,
                "Content-Type must be application/timestamp-query",
            ),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return reply(
                e.status(),
                cps_tsa::rejection(cps_tsa::FailInfo::BadRequest, "the query is too large"),
            );
        }
    };
    let a = tsa.respond(&body, "tsa:http").await;
    reply(
        StatusCode::from_u16(a.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        a.der,
    )
}

/// OCSP over POST (RFC 6960 appendix A.1).
async fn ocsp_post(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.starts_with("application/ocsp-request") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/ocsp-request\n",
        )
            .into_response();
    }
    ocsp_answer(&st, &body, false).await
}

/// OCSP over GET (RFC 5019 §5): the base64 request, URL-encoded, as the path.
async fn ocsp_get(State(st): State<AppState>, UrlPath(request): UrlPath<String>) -> Response {
    match st.ocsp.decode_get(&request) {
        Ok(der) => ocsp_answer(&st, &der, true).await,
        Err(_) => ocsp_answer(&st, b"", true).await,
    }
}

fn http_date(t: i64) -> String {
    let Ok(d) = time::OffsetDateTime::from_unix_timestamp(t) else {
        return String::new();
    };
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    d.format(&fmt).unwrap_or_default()
}

async fn ocsp_answer(st: &AppState, der: &[u8], get: bool) -> Response {
    let ready = match &st.ocsp_fresh {
        Some(f) => f.ready(&st.ocsp).await,
        None => Ok(()),
    };
    let now = now();
    let reply = match ready {
        Ok(()) => st.ocsp.respond(der, now),
        Err(why) => cps_ocsp::OcspReply::try_later(why),
    };
    crate::ocsp::count(&reply);
    if let Some(d) = &reply.detail {
        tracing::debug!(status = reply.status.name(), detail = %d, "OCSP");
    }
    let mut resp = (
        [(header::CONTENT_TYPE, "application/ocsp-response")],
        reply.der.clone(),
    )
        .into_response();
    let h = resp.headers_mut();
    if let (true, true, Some(this), Some(next)) =
        (get, reply.cacheable, reply.this_update, reply.next_update)
    {
        // RFC 5019 §6.2: cacheable until nextUpdate, never beyond.
        let max_age = (next - now).max(0);
        let pairs = [
            (
                header::CACHE_CONTROL,
                format!("max-age={max_age}, public, no-transform, must-revalidate"),
            ),
            (header::LAST_MODIFIED, http_date(this)),
            (header::EXPIRES, http_date(next)),
            (
                header::ETAG,
                format!(
                    "\"{}\"",
                    hex::encode(
                        &ring::digest::digest(&ring::digest::SHA256, &reply.der).as_ref()[..16]
                    )
                ),
            ),
        ];
        for (k, v) in pairs {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
    } else {
        h.insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-cache"),
        );
    }
    resp
}

/// TLS acceptor for the API listener: HSM-held server key, our chain, verified client certs.
/// The HTTPS listener's TLS configuration and the syslog-TLS repository's (same HSM key and
/// chain; the repository requires a client certificate).
fn tls_configs(
    st: &AppState,
    config: &Config,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<rustls::ServerConfig>), ApplianceError> {
    let key: cps_tls::TlsKey = Arc::new(cps_ct::OffWorker(
        st.hsm.key(&config.appliance.tls_key_label)?,
    ));
    let pem = std::fs::read_to_string(st.home.join("tls/server.pem")).map_err(|e| {
        ApplianceError::Io {
            path: st.home.join("tls/server.pem"),
            reason: e.to_string(),
        }
    })?;
    let chain: Vec<Vec<u8>> = cps_pki::pem_certificates(&pem);
    let root = st.ca_certs.get("root").cloned().unwrap_or_default();
    let issuers: Vec<(String, Vec<u8>)> = config
        .ca
        .issuing
        .keys()
        .filter_map(|id| st.ca_certs.get(id).map(|d| (id.clone(), d.clone())))
        .collect();
    let verifier = |profiles| {
        cps_tls::ClientVerifier::new(root.clone(), issuers.clone(), st.store.clone(), profiles)
            .map_err(ApplianceError::Refused)
    };
    let https = cps_tls::server_config(
        key.clone(),
        chain.clone(),
        Arc::new(verifier(crate::identity::HTTPS_PROFILES)?),
    )
    .map_err(ApplianceError::Refused)?;
    let mut syslog = cps_tls::server_config(
        key,
        chain,
        Arc::new(verifier(&[crate::nodes::NODE_PROFILE])?.mandatory()),
    )
    .map_err(ApplianceError::Refused)?;
    syslog.alpn_protocols.clear();
    // Like the HTTPS listener's, this configuration resumes no session (`server_config`).
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(https)),
        Arc::new(syslog),
    ))
}

/// How long a client may take to send its request headers (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

fn http_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    b
}

/// Accept plain-HTTP connections and serve `app` on each.
async fn serve_plain(listener: tokio::net::TcpListener, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Err(e) = http_builder()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Accept TLS connections and serve the API on each. Every request carries the connection's
/// client certificate (parsed once, checked again by [`crate::authz::enforce`] for each request),
/// the peer's address and the connection's [`Connection`] control; each connection lives within
/// `limits`.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    issuers: Arc<Vec<(String, Vec<u8>)>>,
    limits: Limits,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let issuers = issuers.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                None => None,
                Some(c) => match PeerCertificate::parse(c.as_ref(), &issuers) {
                    Some(p) => Some(Arc::new(p)),
                    // The verifier accepted it, so this does not happen; fail closed if it does.
                    None => return,
                },
            };
            let ctl = Connection::new();
            let (client, addr) = (ClientCert(cert), PeerAddr(peer));
            let svc = {
                let ctl = ctl.clone();
                hyper::service::service_fn(
                    move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                        let guard = ctl.begin();
                        let ext = req.extensions_mut();
                        ext.insert(client.clone());
                        ext.insert(addr);
                        ext.insert(ctl.clone());
                        let app = app.clone();
                        async move {
                            let resp = tower::ServiceExt::oneshot(app, req).await;
                            drop(guard);
                            resp
                        }
                    },
                )
            };
            let builder = http_builder();
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let ending =
                crate::conn::drive(conn.as_mut(), |c| c.graceful_shutdown(), &ctl, limits).await;
            tracing::debug!(%peer, ?ending, "connection ended");
        });
    }
}

/// How often the CRL of every CA is checked: re-signed when a revocation made it stale or half of
/// its validity has passed, and written to `<home>/crl/<ca>.crl`.
pub const CRL_REFRESH: Duration = Duration::from_secs(15);

async fn refresh_crls(ca: Arc<CaService>, disk: Arc<crate::disk::DiskGuard>) {
    let mut tick = tokio::time::interval(CRL_REFRESH);
    loop {
        tick.tick().await;
        // A full disk: the published CRLs stay valid until their nextUpdate; re-signing waits.
        if disk.admit().is_err() {
            continue;
        }
        let ca = ca.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let ids: Vec<String> = ca.authorities().map(|a| a.id.clone()).collect();
            for id in ids {
                for part in ca.crl_partitions(&id) {
                    if let Err(e) = ca.crl_partition(&id, part, now()) {
                        tracing::error!(ca = %id, shard = ?part, error = %e, "CRL refresh failed");
                    }
                }
            }
        })
        .await;
    }
}

/// A writer straight into the trail whose records are counted as the store's are.
fn counted_writer(atna: &crate::audit::Atna) -> crate::audit::AuditWriter {
    match crate::metrics::handle() {
        Some(_) => atna.writer_observed(crate::metrics::audit_observer()),
        None => atna.writer(),
    }
}

/// Run until SIGINT or SIGTERM.
pub async fn run(home: &Path, config: &Config) -> Result<(), ApplianceError> {
    let mut state = open(home, config)?;
    // Histogram buckets drained between scrapes (the task ends with the process).
    let _metrics_upkeep = crate::metrics::spawn_upkeep();
    let ntp_task = match config.time.serve_ntp {
        true => {
            let server = ntp_server(&state, config).await?;
            state.ntp_stats = Some(server.stats_handle());
            Some(tokio::spawn(async move {
                if let Err(e) = server.run().await {
                    tracing::error!(error = %e, "NTP server stopped");
                }
            }))
        }
        false => None,
    };
    if config.time.source == crate::config::TimeSourceKind::Declared {
        tracing::warn!(
            declared_max_error_ms = config.time.declared_max_error_ms,
            "the clock is declared synchronised by configuration (time.source = \"declared\"); the kernel's own state is not consulted"
        );
    }
    // Raise the clock alarm (log + audit) at start if the clock is not trusted.
    if let Err(reason) = state.ca.clock().check() {
        tracing::error!(alarm = %reason, "starting with an untrusted clock: nothing will be signed");
    }
    let http_addr = &config.listen.http;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| {
            ApplianceError::Refused(format!("cannot listen on {http_addr} (listen.http): {e}"))
        })?;
    let https_addr = &config.listen.https;
    let https = tokio::net::TcpListener::bind(https_addr)
        .await
        .map_err(|e| {
            ApplianceError::Refused(format!("cannot listen on {https_addr} (listen.https): {e}"))
        })?;
    let (acceptor, syslog_tls) = tls_configs(&state, config)?;
    // Repositories present certificates of our hierarchy; some send the leaf alone, so the
    // issuing CAs are anchors too.
    let anchors: Vec<Vec<u8>> = std::iter::once("root".to_string())
        .chain(config.ca.issuing.keys().cloned())
        .filter_map(|id| state.ca_certs.get(&id).cloned())
        .collect();
    let disk_task = state.disk.clone().spawn_monitor(state.store.clone());
    let nodes = crate::nodes::Nodes::new(state.store.clone());
    let atna = crate::audit::start(
        home,
        config,
        &state.hsm,
        state.ca.clone(),
        nodes.clone(),
        state.disk.clone(),
        syslog_tls,
        anchors,
    )
    .await?;
    // One batching writer for every record that skips the store (validations, time-stamp
    // tokens, document signatures): one flush covers them all.
    let writer = counted_writer(&atna);
    if let Some(tsa) = &state.tsa {
        tsa.attach_audit(writer.clone());
    }
    // Before any validation is answered: the assertions validated before this start stay
    // refused as replays (fail closed: no start without them).
    let remembered = {
        let (xua, log) = (state.xua.clone(), atna.log.clone());
        tokio::task::spawn_blocking(move || {
            xua.remember_validated(&log, std::time::SystemTime::now())
        })
        .await
        .map_err(|e| ApplianceError::Refused(format!("replay cache reload: {e}")))?
        .map_err(ApplianceError::Refused)?
    };
    tracing::info!(
        assertions = remembered,
        "validated assertions remembered against replay"
    );
    let issuers: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        state
            .ca
            .authorities()
            .filter(|a| a.id != "root")
            .filter_map(|a| a.name.to_der().ok().map(|n| (a.id.clone(), n)))
            .collect(),
    );
    let api_app = crate::authz::router(ApiState {
        node: state.node.clone(),
        console_key: Some(state.console_key),
        identities: Arc::new(
            crate::identity::https_identities(state.store.clone()).with_fresh(state.fresh.clone()),
        ),
        ca: state.ca.clone(),
        nodes,
        xua: Some(state.xua.clone()),
        login: Some(state.login.clone()),
        cards: Some(state.cards.clone()),
        jobs: cps_enrol::Jobs::for_node(&state.node, crate::clock::unix_now),
        audit_log: Some(atna.log.clone()),
        audit_writer: writer,
        dsg: Some(state.dsg.clone()),
    })
    // While the disk is below its reserve, state-changing requests answer 503 (reads go on).
    .layer(axum::middleware::from_fn_with_state(
        state.disk.clone(),
        crate::disk::refuse_new_work_when_full,
    ));
    tracing::info!(http = %http_addr, https = %https_addr, "listeners up");
    // Not println!: it panics when stdout cannot be written (a full disk).
    let _ = std::io::Write::write_all(
        &mut std::io::stdout(),
        format!(
        "cps-trust serving: http://{http_addr}/health, /ca/<id>.der, /crl/<ca>.crl; https://{https_addr}/api/v1/ (mutual TLS)\n"
        )
        .as_bytes(),
    );
    let crl_task = tokio::spawn(refresh_crls(state.ca.clone(), state.disk.clone()));
    // Refused unauthenticated logins: one audit record per source and interval.
    let login_refusals = state.login_refusals.clone();
    let refusals_task = login_refusals.clone().spawn_flusher(
        state.store.clone(),
        Duration::from_secs(u64::from(config.xua.refusal_audit_seconds)),
    );
    let tls_task = tokio::spawn(serve_tls(
        https,
        acceptor,
        api_app,
        issuers,
        Limits::new(
            config.listen.connection_max_seconds,
            config.listen.idle_seconds,
        ),
    ));
    let state_store = state.store.clone();
    let http_task = tokio::spawn(serve_plain(http, public_router(state)));
    // Until asked to stop: the audit trail's counters exported every few seconds.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => crate::metrics::export_trail(&atna),
        }
    }
    tracing::info!("shutting down");
    tls_task.abort();
    http_task.abort();
    crl_task.abort();
    disk_task.abort();
    refusals_task.abort();
    // What the last interval counted is written before the process ends.
    let store = state_store.clone();
    match tokio::task::spawn_blocking(move || login_refusals.flush(&*store)).await {
        Ok(Err(e)) => tracing::error!(error = %e, "cannot audit the last refused logins"),
        Err(e) => tracing::error!(error = %e, "refusal audit task failed"),
        Ok(Ok(_)) => {}
    }
    if let Some(t) = ntp_task {
        t.abort();
    }
    atna.shutdown().await;
    Ok(())
}

/// The NTP server (IHE CT time server) on `listen.ntp`, answering from the host clock and
/// advertising it unsynchronised whenever the signing gate would refuse.
async fn ntp_server(
    state: &AppState,
    config: &Config,
) -> Result<cps_ct::NtpServer<crate::clock::SharedClock, cps_ct::SystemTimeSource>, ApplianceError>
{
    let addr = &config.listen.ntp;
    let cfg = cps_ct::ResponderConfig {
        local_stratum: config.time.ntp_stratum,
        trust: cps_ct::TrustPolicy {
            max_error_us: config.time.max_error_ms.saturating_mul(1000),
        },
        ..Default::default()
    };
    let server = cps_ct::NtpServer::bind(
        addr.as_str(),
        cfg,
        state.ca.clock().source(),
        cps_ct::SystemTimeSource,
    )
    .await
    .map_err(|e| {
        ApplianceError::Refused(format!("cannot listen on {addr} (listen.ntp, UDP): {e}"))
    })?;
    tracing::info!(ntp = %addr, "NTP server up");
    Ok(server)
}

async fn shutdown_signal() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
