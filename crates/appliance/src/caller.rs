//! Who is calling, as far as data bound to a caller is concerned: the client certificate the
//! request's mutual-TLS connection was authenticated with.
//!
//! [`client_cert_der`] is the one place that reads the connection's certificate for such
//! bindings (the one-time PIN/PUK of an enrolment job, the console's CSRF tokens); when the
//! connection's identity comes from another request extension, only its body changes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::api::{ApiError, ClientCert};

/// The DER client certificate of the request's connection, if the client presented one.
pub fn client_cert_der(extensions: &axum::http::Extensions) -> Option<Arc<Vec<u8>>> {
    extensions.get::<ClientCert>().and_then(|c| c.0.clone())
}

/// SHA-256 of a client certificate (DER): two different certificates never share it, whatever
/// operator name or roles they carry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of(cert_der: &[u8]) -> CertFingerprint {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref());
        CertFingerprint(out)
    }

    /// The fingerprint of the request's client certificate.
    pub fn of_request(extensions: &axum::http::Extensions) -> Option<CertFingerprint> {
        client_cert_der(extensions).map(|d| CertFingerprint::of(&d))
    }
}

impl std::fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertFingerprint({})", hex::encode(self.0))
    }
}

/// Extractor: the caller's certificate fingerprint; 401 without a client certificate.
impl<S: Send + Sync> FromRequestParts<S> for CertFingerprint {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        CertFingerprint::of_request(&parts.extensions).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a client certificate is required (mutual TLS with an operator certificate)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_certificate_s_not_the_name_s() {
        let mut ext = axum::http::Extensions::new();
        assert_eq!(CertFingerprint::of_request(&ext), None);
        ext.insert(ClientCert(None));
        assert_eq!(CertFingerprint::of_request(&ext), None);
        ext.insert(ClientCert(Some(Arc::new(b"certificate A".to_vec()))));
        let a = CertFingerprint::of_request(&ext).unwrap();
        assert_eq!(a, CertFingerprint::of(b"certificate A"));
        assert_ne!(a, CertFingerprint::of(b"certificate B"));
        assert_eq!(
            hex::encode(a.0),
            hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                b"certificate A"
            ))
        );
    }
}
