//! The store as the OCSP responder sees it.

use std::sync::Arc;

use cps_ocsp::{CertStatusAnswer, CrlReason, Responder, StatusError, StatusSource};
use cps_store::{CertStatus, Store};

use crate::StatusListener;

/// Status answers from the store: a serial the store does not hold was never issued; a store
/// that does not answer gives no status (so never "good").
pub struct StoreStatus(pub Arc<dyn Store>);

impl StatusSource for StoreStatus {
    fn status(&self, issuer_id: &str, serial: &[u8]) -> Result<CertStatusAnswer, StatusError> {
        match self.0.get_certificate(issuer_id, serial) {
            Ok(None) => Ok(CertStatusAnswer::Unknown),
            Ok(Some(rec)) => Ok(match rec.status {
                CertStatus::Valid => CertStatusAnswer::Good,
                CertStatus::Revoked { time, reason, .. } => CertStatusAnswer::Revoked {
                    time,
                    reason: CrlReason::from_code(reason),
                },
            }),
            // Fail closed: no status, no "good".
            Err(e) => Err(StatusError::Unavailable(e.to_string())),
        }
    }
}

/// Drops a responder's cached answer when the CA changes a status.
pub struct Invalidator(pub Arc<Responder>);

impl StatusListener for Invalidator {
    fn status_changed(&self, ca: &str, serial: &[u8]) {
        self.0.invalidate(ca, serial);
    }
}
