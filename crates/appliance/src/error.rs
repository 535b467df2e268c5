use std::path::PathBuf;

/// Errors of the appliance layer: every variant prints as one actionable line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplianceError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("HSM: {0}")]
    Hsm(#[from] cps_hsm::HsmError),
    #[error("certificate: {0}")]
    Pki(#[from] cps_pki::PkiError),
    #[error("store: {0}")]
    Store(#[from] cps_store::StoreError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

impl From<cps_https::operators::OperatorError> for ApplianceError {
    fn from(e: cps_https::operators::OperatorError) -> Self {
        use cps_https::operators::OperatorError as E;
        match e {
            E::Pki(e) => ApplianceError::Pki(e),
            E::Store(e) => ApplianceError::Store(e),
            E::Io { path, reason } => ApplianceError::Io { path, reason },
            E::Refused(m) => ApplianceError::Refused(m),
        }
    }
}
