//! `cps-trust serve`: the running appliance. Today it opens the HSM (refusing to start unless
//! the self-check passes), opens the store and serves the public PKI listener: `/health` and
//! the CA certificates under `/ca/`. The CA, OCSP, enrolment, XUA, ATNA and NTP services attach
//! here as they land.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cps_hsm::Hsm;
use cps_store::{SledStore, Store};

use crate::ApplianceError;
use crate::ceremony::{CA_DIR, open_checked_hsm};
use crate::config::Config;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    hsm: Arc<Hsm>,
    store: Arc<dyn Store>,
    /// Published CA certificates by id (`root`, `personnes`, `personnes-ocsp`...), DER.
    ca_certs: Arc<HashMap<String, Vec<u8>>>,
}

/// Everything `serve` needs, opened and checked. Fails closed: no HSM, an unsafe key or an
/// unreadable store means the appliance does not start.
pub fn open(home: &Path, config: &Config) -> Result<AppState, ApplianceError> {
    config.validate(home)?;
    let hsm = open_checked_hsm(home, config)?;
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(config.resolve(home, &config.store.path))?);
    let mut ca_certs = HashMap::new();
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
        ca_certs.insert(id, der);
    }
    Ok(AppState {
        hsm,
        store,
        ca_certs: Arc::new(ca_certs),
    })
}

/// The plain-HTTP router for public PKI material.
pub fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ca/{file}", get(ca_certificate))
        .with_state(state)
}

async fn health(State(st): State<AppState>) -> Response {
    let hsm = st.hsm.clone();
    let hsm_ok = tokio::task::spawn_blocking(move || hsm.token_summary().is_ok())
        .await
        .unwrap_or(false);
    let store_ok = st.store.audit_len().is_ok();
    let ok = hsm_ok && store_ok;
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "hsm": if hsm_ok { "ok" } else { "unreachable" },
        "store": if store_ok { "ok" } else { "failing" },
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

/// Run until SIGINT or SIGTERM.
pub async fn run(home: &Path, config: &Config) -> Result<(), ApplianceError> {
    let state = open(home, config)?;
    let addr = &config.listen.http;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        ApplianceError::Refused(format!("cannot listen on {addr} (listen.http): {e}"))
    })?;
    tracing::info!(%addr, "public PKI listener up");
    println!("cps-trust serving: http://{addr}/health, /ca/<id>.der");
    axum::serve(listener, public_router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| ApplianceError::Refused(format!("HTTP listener failed: {e}")))
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
