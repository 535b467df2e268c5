//! The OCSP responder of the appliance: the sans-IO core of `cps-ocsp` over the store (status,
//! `cps_ca::StoreStatus`) and the HSM (delegated OCSP signers), invalidated the moment a
//! certificate's status changes (`cps_ca::Invalidator`).

use std::path::Path;
use std::sync::Arc;

pub use cps_ca::Invalidator;

/// Counter of OCSP responses, by response status and cache (`hit`, `miss`).
pub const RESPONSES: &str = "cps_ocsp_responses_total";

/// Counts one OCSP answer.
pub fn count(reply: &cps_ocsp::OcspReply) {
    let cache = if reply.from_cache { "hit" } else { "miss" };
    metrics::counter!(RESPONSES, "status" => reply.status.name(), "cache" => cache).increment(1);
}
use cps_ca::StoreStatus;
use cps_hsm::{Hsm, Signer};
use cps_ocsp::{IssuerEntry, NotIssuedPolicy, Responder, ResponderConfig};
use cps_store::Store;

use crate::config::Config;
use crate::error::ApplianceError;
use crate::home::CA_DIR;

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
