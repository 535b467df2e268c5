/// Errors of certificate building and parsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("invalid distinguished name '{name}': {reason}")]
    Name { name: String, reason: String },
    #[error("invalid certificate parameters: {0}")]
    Params(String),
    #[error("malformed DER: {0}")]
    Der(String),
    #[error("signing failed: {0}")]
    Sign(#[from] cps_hsm::HsmError),
    #[error("certificate signature does not verify against the issuer's key")]
    BadSignature,
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError::Der(e.to_string())
    }
}
