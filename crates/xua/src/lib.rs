//! IHE XUA / French VIHF SAML 2.0 assertions for cps-trust: issuance and strict validation.
//!
//! * [`AssertionIssuer`] writes a VIHF assertion (SAML 2.0, IHE XUA ITI-40 with the ANS VIHF
//!   attributes) for typed [`VihfClaims`], signs it with an enveloped XML-DSig placed right after
//!   `Issuer` (exclusive c14n, RSA-SHA256 or ECDSA-SHA256 with a raw `r ‖ s` value, `KeyInfo`
//!   with the signer's certificate) through [`cps_hsm::Signer`], and can wrap it in a SOAP 1.2
//!   envelope's `wsse:Security` header.
//! * [`Validator`] checks an assertion, bare or in a SOAP 1.2 envelope, and answers a
//!   [`ValidatedAssertion`] (every attribute, read from the verified element only) or a
//!   [`Refusal`] with a stable [`RefusalCode`]. Signer certificates are validated against a
//!   [`TrustStore`] and a pluggable [`RevocationCheck`] (fail closed); what each signer may
//!   assert is a [`SignerPolicy`] ([`SealTrustPolicy`]: the issuer's own seals are trusted as
//!   issued, an organisation seal only for its own structure, in indirect mode, for professionals
//!   of the registry); IDs go through a pluggable [`ReplayCache`] ([`InMemoryReplayCache`] is
//!   bounded and time-expiring).
//!
//! # Why XML-DSig is implemented here
//!
//! XML signatures are verified by this crate on top of `roxmltree` (the one XML parser, DTDs
//! refused) and its own exclusive canonicalisation ([`c14n`]), rather than by a general XML-DSig
//! library. The profile is tiny (one reference, two transforms, four algorithms), and owning it
//! lets the validator bind every decision to the same parsed node: the element that is digested
//! is the element the claims are read from, the signature must be its direct child, the
//! reference must name its ID, and nothing outside it is looked at. It also keeps validation
//! fast (no second parse, path validation cached per signer certificate). Correctness is held
//! against independent implementations in the tests: xmlsec1 and signxml verify what we sign,
//! we verify what xmlsec1 signs, and the canonical form of our output is checked again by our
//! own canonicaliser.
//!
//! Everything here is sans-IO: time (`now`) and randomness (the assertion ID) are parameters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alg;
pub mod c14n;
mod issue;
mod model;
pub mod ns;
pub mod parse;
mod policy;
mod replay;
mod time;
mod trust;
mod validate;

pub use alg::{XmlDigestAlgorithm, XmlSignatureAlgorithm};
pub use issue::{AssertionId, AssertionIssuer, Flavour, IssueError, IssuedAssertion, IssuerConfig};
pub use model::{
    AUTHN_SMARTCARD_PKI, AUTHN_TLS_CLIENT, AuthenticationMode, CodedValue, INS_AUTHORITIES,
    PatientId, PurposeOfUse, SoftwareInfo, VihfClaims, check_ins,
};
pub use policy::{
    OrgSealRegistry, PROFESSION_CODE_SYSTEM, PolicyViolation, ProfessionalDirectory,
    RegisteredActivity, RegisteredProfessional, SECTEUR_CODE_SYSTEM, SealTrustPolicy, SignerPolicy,
};
pub use replay::{InMemoryReplayCache, ReplayCache, ReplayError};
pub use time::{format_datetime, parse_datetime};
pub use trust::{
    EKU_CLIENT_AUTH, EKU_DOCUMENT_SIGNING, EKU_OCSP_SIGNING, EKU_SERVER_AUTH, EKU_TIME_STAMPING,
    EkuPolicy, PathError, RevocationCheck, RevocationStatus, SignerCertificate, SignerRequirement,
    StaticRevocationList, TrustError, TrustStore, VerifiedPath,
};
pub use validate::{
    CommentPolicy, Refusal, RefusalCode, ValidatedAssertion, Validator, ValidatorConfig,
};
