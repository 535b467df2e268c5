//! Who is calling, as far as data bound to a caller is concerned: the client certificate the
//! request's mutual-TLS connection was authenticated with.
//!
//! [`client_certificate`] is the one place that reads the connection's certificate for such
//! bindings (the one-time PIN/PUK of an enrolment job, the console's CSRF tokens): the
//! [`Identity`] that the listener's per-request check ([`crate::Identities::check`]) put in the
//! request's extensions, never the raw certificate of the handshake.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

pub use crate::identity::CertFingerprint;
use crate::identity::{Identity, PeerCertificate};

/// The refusal of a request without a checked client certificate: 401 with the API's error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthenticated;

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(cps_api::ErrorBody {
                error: "a client certificate is required (mutual TLS with an operator certificate)"
                    .into(),
            }),
        )
            .into_response()
    }
}

/// The client certificate of the request's connection, as checked for this request.
pub fn client_certificate(extensions: &axum::http::Extensions) -> Option<Arc<PeerCertificate>> {
    extensions
        .get::<Identity>()
        .map(|id| id.certificate.clone())
}

impl CertFingerprint {
    /// The fingerprint of the request's client certificate.
    pub fn of_request(extensions: &axum::http::Extensions) -> Option<CertFingerprint> {
        client_certificate(extensions).map(|c| CertFingerprint(c.sha256))
    }
}

/// Extractor: the caller's certificate fingerprint; 401 without a client certificate.
impl<S: Send + Sync> FromRequestParts<S> for CertFingerprint {
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Unauthenticated> {
        CertFingerprint::of_request(&parts.extensions).ok_or(Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_checked_certificate_s_not_the_name_s() {
        let mut ext = axum::http::Extensions::new();
        assert_eq!(CertFingerprint::of_request(&ext), None);
        let cert = |der: &[u8]| {
            Arc::new(PeerCertificate {
                der: der.to_vec(),
                sha256: CertFingerprint::of(der).0,
                ca: "organisations".into(),
                serial: vec![1],
                not_after: i64::MAX,
            })
        };
        // The handshake's certificate alone, not checked for this request: nobody.
        ext.insert(Some(cert(b"certificate A")));
        assert_eq!(CertFingerprint::of_request(&ext), None);
        ext.insert(Identity {
            certificate: cert(b"certificate A"),
            operator: None,
        });
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

    #[tokio::test]
    async fn without_a_checked_certificate_the_extractor_answers_401() {
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        let refused = CertFingerprint::from_request_parts(&mut parts, &())
            .await
            .unwrap_err()
            .into_response();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: cps_api::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(body.error.contains("client certificate"), "{}", body.error);
        parts.extensions.insert(Identity {
            certificate: Arc::new(PeerCertificate {
                der: b"c".to_vec(),
                sha256: CertFingerprint::of(b"c").0,
                ca: "organisations".into(),
                serial: vec![1],
                not_after: i64::MAX,
            }),
            operator: None,
        });
        assert_eq!(
            CertFingerprint::from_request_parts(&mut parts, &())
                .await
                .unwrap(),
            CertFingerprint::of(b"c")
        );
    }
}
