//! Certificates for cps-trust: distinguished names, extensions, certificate assembly and
//! signing through [`cps_hsm::Signer`]. Pure: no I/O, no clock (`now` is a parameter), no RNG of
//! its own (serial numbers take their random bytes from the caller).

#![forbid(unsafe_code)]

mod cert;
pub mod crl;
pub mod csr;
mod error;
pub mod ext;
pub mod hierarchy;
pub mod idnat;
pub mod keycheck;
mod name;
pub mod profile;
mod serial;
pub mod subject;

pub use cert::{
    CertificateParams, Issuer, ParsedCertificate, issue_certificate, parse_certificate,
    pem_certificates, pem_encode, signature_algorithm_identifier, verify_issued_by,
};
pub use csr::{CsrBuildError, CsrError, CsrInfo, build_csr, parse_csr, verify_possession};
pub use error::PkiError;
pub use idnat::{IdNatError, IdNatPs};
pub use keycheck::{CheckedKey, KeyError, KeyKind, KeyPolicy, check_public_key, spki_sha256};
pub use name::{DistinguishedName, NameAttribute};
pub use profile::{
    IssuerInfo, Profile, ProfileError, ProfileSet, builtin_profiles, end_entity_params,
    load_profiles,
};
pub use serial::{Serial, serial_from_random};
pub use subject::{OrganisationIdentity, PersonIdentity, SubjectAltName, SubjectError};
