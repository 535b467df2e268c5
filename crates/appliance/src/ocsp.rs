//! The OCSP responder of the appliance: the sans-IO core of `cps-ocsp` over the store (status)
//! and the HSM (delegated OCSP signers), invalidated the moment a certificate's status changes.

use std::path::Path;
use std::sync::Arc;

use cps_hsm::{Hsm, Signer};
use cps_ocsp::{
    CertStatusAnswer, CrlReason, IssuerEntry, NotIssuedPolicy, Responder, ResponderConfig,
    StatusError, StatusSource,
};
use cps_store::{CertStatus, Store};

use crate::ca::StatusListener;
use crate::config::Config;
use crate::error::ApplianceError;
use crate::home::CA_DIR;

/// Status answers from the store: a serial the store does not hold was never issued.
struct StoreStatus(Arc<dyn Store>);

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

/// Drops cached responses when the CA service changes a status.
pub struct Invalidator(pub Arc<Responder>);

impl StatusListener for Invalidator {
    fn status_changed(&self, ca: &str, serial: &[u8]) {
        self.0.invalidate(ca, serial);
    }
}

/// One responder for every issuing CA, each answered by its delegated signer.
pub fn responder(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    store: Arc<dyn Store>,
    clock: Arc<crate::clock::SigningClock>,
) -> Result<Arc<Responder>, ApplianceError> {
    let mut issuers = Vec::new();
    let read = |name: String| {
        let p = home.join(CA_DIR).join(name);
        std::fs::read(&p).map_err(|e| ApplianceError::Io {
            path: p,
            reason: e.to_string(),
        })
    };
    for (id, ca) in &config.ca.issuing {
        let key: Arc<dyn Signer> = Arc::new(crate::clock::GatedSigner::new(
            Arc::new(hsm.key(&ca.ocsp.key_label)?),
            clock.clone(),
        ));
        issuers.push(IssuerEntry {
            id: id.clone(),
            ca_cert_der: read(format!("{id}.der"))?,
            responder_cert_der: read(format!("{id}-ocsp.der"))?,
            responder_key: key,
            signature: ca.ocsp.signature_algorithm()?,
        });
    }
    let cfg = ResponderConfig {
        validity_secs: i64::from(config.ca.ocsp_validity_hours) * 3600,
        not_issued: if config.ca.ocsp_not_issued == "revoked" {
            NotIssuedPolicy::RevokedExtended
        } else {
            NotIssuedPolicy::Unknown
        },
        cache_refresh_secs: (i64::from(config.ca.ocsp_validity_hours) * 3600 / 8).max(60),
        ..ResponderConfig::default()
    };
    let r = Responder::new(issuers, cfg, Arc::new(StoreStatus(store)))
        .map_err(|e| ApplianceError::Refused(format!("OCSP responder: {e}")))?;
    Ok(Arc::new(r))
}
