//! Certificates for cps-trust: distinguished names, extensions, certificate assembly and
//! signing through [`cps_hsm::Signer`]. Pure: no I/O, no clock (`now` is a parameter), no RNG of
//! its own (serial numbers take their random bytes from the caller).

#![forbid(unsafe_code)]

mod cert;
pub mod crl;
mod error;
pub mod ext;
pub mod hierarchy;
mod name;
mod serial;

pub use cert::{
    CertificateParams, Issuer, ParsedCertificate, issue_certificate, parse_certificate, pem_encode,
    signature_algorithm_identifier, verify_issued_by,
};
pub use error::PkiError;
pub use name::{DistinguishedName, NameAttribute};
pub use serial::{Serial, serial_from_random};
