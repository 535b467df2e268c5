//! The one error type of the CA.

use cps_store::StoreError;

/// Why the CA did not do what was asked. The variants are what a caller can act on (the API
/// maps them to 404, 409, 400, 503 and 500).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// No such certificate.
    #[error("no certificate with serial {serial} from CA '{ca}'")]
    NotFound {
        /// The CA id.
        ca: String,
        /// The serial, upper-case hex.
        serial: String,
    },
    /// No such CA.
    #[error("unknown CA '{0}'")]
    UnknownCa(String),
    /// The request conflicts with the CA's state (already revoked, key certified for someone
    /// else...).
    #[error("{0}")]
    Conflict(String),
    /// The request is refused (bad CSR, blocklisted key, profile rules...); retrying the same
    /// request will not help.
    #[error("{0}")]
    Invalid(String),
    /// Nothing can be signed or written now (the clock is not trusted, the disk is full, the
    /// store refused the write); nothing was lost and the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the CA or of the service built on it (certificate encoding, store,
    /// randomness); the message is for the log, not for the caller.
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl CaError {
    pub(crate) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> CaError {
        CaError::Internal(Box::new(e))
    }
}

impl From<StoreError> for CaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => CaError::Conflict(m),
            // Nothing was written and nothing is lost: the caller may retry (503).
            e @ StoreError::Refused(_) => CaError::Unavailable(e.to_string()),
            e @ StoreError::Poisoned { .. } => CaError::Unavailable(e.to_string()),
            // The database is a standby or unreachable (failing over): 503, retry later.
            e @ StoreError::ReadOnly(_) => CaError::Unavailable(e.to_string()),
            e @ StoreError::Unavailable(_) => CaError::Unavailable(e.to_string()),
            other => CaError::internal(other),
        }
    }
}

impl From<cps_pki::PkiError> for CaError {
    fn from(e: cps_pki::PkiError) -> Self {
        CaError::internal(e)
    }
}

/// The system random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("system random generator failed")]
pub(crate) struct RngFailed;
