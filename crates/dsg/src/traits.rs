//! What the signer and the verifier ask of the rest of the appliance: a time-stamping
//! authority, a time-stamp check, a certificate-path check and a revocation decision, each at
//! a given time. The appliance implements them with its TSA, `cps-tsa`, its trust store and its
//! OCSP code; tests implement them with software keys.

/// Any error of a caller-supplied implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where signature time-stamps come from (RFC 3161).
pub trait TimestampSource {
    /// A `TimeStampToken` (DER) over SHA-256 of `data` (the canonical `ds:SignatureValue`).
    fn timestamp(&self, data: &[u8]) -> Result<Vec<u8>, BoxError>;
}

/// Why a time-stamp token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampRefusal {
    /// The token is valid but its imprint is not the hash of the bytes it must cover.
    #[error("the time-stamp does not cover this signature value")]
    NotCovering,
    /// The token is malformed or its signature does not verify.
    #[error("invalid time-stamp token: {0}")]
    Invalid(String),
    /// The time-stamping authority is not trusted (unknown, expired, revoked, wrong usage).
    #[error("untrusted time-stamping authority: {0}")]
    Untrusted(String),
}

/// Checks a time-stamp token.
pub trait TimestampCheck {
    /// Verify `token` (DER `TimeStampToken`), its authority, and that its message imprint is
    /// the hash of `covered`; answer its `genTime` (Unix seconds).
    fn check(&self, token: &[u8], covered: &[u8]) -> Result<i64, TimestampRefusal>;
}

/// Validates the signer's certificate path.
pub trait PathCheck {
    /// Whether `signer` (DER) chains to a configured anchor through `intermediates` (the
    /// certificates the signature carries, any order) at `at` (Unix seconds), with the key
    /// usage a document signature needs.
    fn check(&self, signer: &[u8], intermediates: &[&[u8]], at: i64) -> Result<(), String>;
}

/// Why the signer certificate was not good at the signing time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationRefusal {
    /// Revoked before the signing time (or for a reason that reaches back before it).
    #[error("certificate revoked at {revoked_at} ({reason})")]
    Revoked {
        /// The revocation reason as named by RFC 5280 (`keyCompromise`...).
        reason: String,
        /// When (Unix seconds).
        revoked_at: i64,
    },
    /// No usable status for that time.
    #[error("revocation status unknown: {0}")]
    Unknown(String),
}

/// Decides whether the signer's certificate was good at a time.
pub trait RevocationDecision {
    /// From the OCSP responses (DER) the signature carries, and live status if the
    /// implementation is configured for it: was `signer` (issued by one of `intermediates`)
    /// good at `at` (Unix seconds)?
    fn check(
        &self,
        signer: &[u8],
        intermediates: &[&[u8]],
        ocsp_responses: &[&[u8]],
        at: i64,
    ) -> Result<(), RevocationRefusal>;
}
