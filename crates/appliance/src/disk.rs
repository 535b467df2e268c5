//! The disk-space guard of the appliance's home ([`cps_disk`]) and its HTTPS front door.

use std::path::Path;
use std::sync::Arc;

pub use cps_disk::{CHECK_EVERY, DiskGuard, Space};

/// The guard of an appliance home: the store (sled: in the home; PostgreSQL keeps its data on
/// the database servers), the audit log and the queue, with the reserve of `store.min_free_mb`.
pub fn for_home(home: &Path, config: &crate::config::Config) -> Arc<DiskGuard> {
    let mut watched = Vec::new();
    if config.store.backend == crate::config::StoreBackend::Sled {
        watched.push(("store", config.resolve(home, &config.store.path)));
    }
    watched.push(("audit log", home.join(crate::home::LOG_DIR)));
    watched.push(("audit queue", home.join(crate::home::QUEUE_DIR)));
    DiskGuard::new(watched, config.store.min_free_mb)
}

/// HTTPS front door: while the disk is full, every request that may change state (any method
/// but GET, HEAD and OPTIONS) answers 503 with the reason and `Retry-After`; reads go on.
pub async fn refuse_new_work_when_full(
    axum::extract::State(guard): axum::extract::State<Arc<DiskGuard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && let Err(reason) = guard.admit()
    {
        let refusal = (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "30")],
            axum::Json(serde_json::json!({
                "error": format!(
                    "the appliance refuses new work: {reason}; it resumes by itself once space is freed"
                ),
                "code": "disk_full",
            })),
        )
            .into_response();
        return crate::conn::discard_then(req, refusal).await;
    }
    next.run(req).await
}
