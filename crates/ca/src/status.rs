//! The store as the OCSP responder sees it.

use std::sync::Arc;

use cps_ocsp::{CertStatusAnswer, CrlReason, LiveStatus, Responder, StatusError, StatusSource};
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

impl StoreStatus {
    /// The live status of a certificate for the long-term decision (`cps_ocsp::decide`), with
    /// the invalidity date the revocation recorded; `None` when the store does not hold it (not
    /// ours). A store that does not answer is an error (never "good").
    pub fn live_status(
        &self,
        issuer_id: &str,
        serial: &[u8],
    ) -> Result<Option<LiveStatus>, StatusError> {
        match self.0.get_certificate(issuer_id, serial) {
            Ok(None) => Ok(None),
            Ok(Some(rec)) => Ok(Some(match rec.status {
                CertStatus::Valid => LiveStatus::Good,
                CertStatus::Revoked {
                    time,
                    reason,
                    invalidity_date,
                } => LiveStatus::Revoked {
                    time,
                    reason: CrlReason::from_code(reason),
                    invalidity_date,
                },
            })),
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
