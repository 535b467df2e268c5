//! IHE DSG document signatures for cps-trust: XAdES signatures over a detached manifest of
//! documents (referenced by unique ID) or over one enveloped document, in the long-term form
//! the profile asks for (signature time-stamp, certificate values, OCSP values), signed through
//! [`cps_hsm::Signer`] and verified strictly.
//!
//! * [`sign`] writes the signature: SHA-256, Canonical XML 1.1 (with comments for
//!   `SignedInfo`), ECDSA (raw `r ‖ s`) or RSA PKCS#1 v1.5; XAdES 1.3.2 `SigningTime`,
//!   `SigningCertificateV2`, `SignaturePolicyIdentifier` (the DSG policy URN),
//!   `DataObjectFormat`, `CommitmentTypeIndication` (a [`Purpose`] of ASTM E1762); then the
//!   `SignatureTimeStamp` from a caller's [`TimestampSource`], `CertificateValues` and
//!   `RevocationValues`.
//! * [`verify`] answers [`Verified`] (signer, time-stamped signing time, purpose, policy,
//!   per-document results) or a [`Refusal`] with a stable [`Refusal::code`]. Time-stamp, path
//!   and revocation checks are the caller's ([`TimestampCheck`], [`PathCheck`],
//!   [`RevocationDecision`]), all at the time-stamp's time.
//!
//! XML parsing (limits, no DTD) and canonicalisation are `cps-xua`'s. Everything here is
//! sans-IO: time and the signature ID are parameters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
pub mod ns;
mod purpose;
mod sign;
mod traits;
mod verify;

pub use cps_xua::parse::Limits;
pub use purpose::{PURPOSE_CODE_SYSTEM, Policy, Purpose};
pub use sign::{Content, DocumentDigest, Seal, SignError, SignRequest, SignedDocument, sign};
pub use traits::{
    BoxError, PathCheck, RevocationDecision, RevocationRefusal, TimestampCheck, TimestampRefusal,
    TimestampSource,
};
pub use verify::{
    DocumentOutcome, DocumentResult, Refusal, SuppliedDocument, Verified, VerifyContext, verify,
};
