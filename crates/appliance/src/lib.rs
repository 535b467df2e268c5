//! The cps-trust composition root: configuration, the key ceremony, and (as the services land)
//! the wiring of HSM, store, PKI and protocol cores into the running appliance.

pub mod api;
pub mod api_enrol;
pub mod api_xua;
pub mod audit;
pub mod audit_anchor;
pub mod audit_verify;
pub mod authz;
pub mod ca;
pub mod caller;
pub mod cards;
pub mod ceremony;
pub mod challenge;
pub mod clock;
pub mod config;
pub mod conn;
pub mod console;
pub mod disk;
pub mod enrolment;
mod error;
pub mod identity;
pub mod login;
pub mod nodes;
pub mod ocsp;
pub mod operators;
pub mod refusals;
pub mod serve;
pub mod tls;
pub mod xua;

pub use error::ApplianceError;

/// `2026-11-22T10:00:00Z` for Unix seconds (the number itself if out of range).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// The current time, Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs blocking work (an HSM call, a store commit) from code that may be running on a Tokio
/// worker (a TLS handshake, a handler computing an OCSP answer, `/health` raising an alarm):
/// on a multi-threaded runtime's worker, the worker first hands its other tasks to another
/// thread (`block_in_place`), so no async task waits behind the I/O; anywhere else (a blocking
/// thread, a command without a runtime) it simply runs.
pub fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
