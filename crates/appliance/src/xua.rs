//! XUA wiring: the organisation seal ("cachet") key opened from the HSM and certified by our
//! organisations CA, behind the clock gate, handed to [`cps_login::XuaService`] (re-exported).

use std::path::Path;
use std::sync::Arc;

use cps_hsm::{Hsm, KeyAlgorithm, Signer};
pub use cps_login::xua::{SEAL_PROFILE, Seal, XuaError, XuaService};
use cps_xua::ProfessionalDirectory;

use crate::ca::CaService;
use crate::clock::{GatedSigner, SigningClock};
use crate::config::Config;
use crate::error::ApplianceError;

/// Where the seal certificate is kept (PEM: seal certificate, then its issuing CA).
pub const CACHET_FILE: &str = "xua/cachet.pem";

pub(crate) fn key_algorithm(name: &str) -> KeyAlgorithm {
    match name {
        "rsa2048" => KeyAlgorithm::Rsa2048,
        "rsa3072" => KeyAlgorithm::Rsa3072,
        _ => KeyAlgorithm::EcP256,
    }
}

/// The seal key and certificate chain: an `org-cachet` certificate from our organisations CA
/// for an HSM key, both made on first use (see [`crate::ca::ApplianceCredential`]).
pub fn ensure_cachet(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(cps_hsm::HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let x = &config.xua;
    crate::ca::ApplianceCredential {
        label: &x.key_label,
        algorithm: key_algorithm(&x.algorithm),
        profile: SEAL_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: x.state.clone(),
            name: x.organisation.clone(),
            structure_id: x.structure_id.clone(),
            common_name: format!("{} XUA", x.organisation),
        },
        holder: format!("appliance:{}", x.key_label),
        file: CACHET_FILE,
    }
    .ensure(home, hsm, ca)
}

/// Where validated assertion IDs and redeemed login challenges are recorded, for this store
/// backend (`xua.replay_record`). The embedded store is not shared between nodes; PostgreSQL
/// is, and then `memory` is refused.
pub fn replay_record(config: &Config) -> Result<cps_login::ReplayRecord, ApplianceError> {
    let shared = config.store.backend == crate::config::StoreBackend::Postgres;
    config
        .xua
        .replay_record_for(shared)
        .map_err(ApplianceError::Refused)
}

/// The XUA service of the appliance: its seal from the HSM, gated by `clock`.
pub fn open(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
    clock: Arc<SigningClock>,
    registry: Arc<dyn ProfessionalDirectory>,
) -> Result<XuaService, ApplianceError> {
    let (key, chain) = ensure_cachet(home, config, hsm, ca)?;
    let signer: Arc<dyn Signer> = Arc::new(GatedSigner::new(Arc::new(key), clock));
    let settings = cps_login::XuaSettings {
        replay_record: Some(replay_record(config)?),
        ..config.xua.clone()
    };
    XuaService::new(&settings, Seal { signer, chain }, ca, registry).map_err(|e| match e {
        XuaError::Pki(e) => ApplianceError::Pki(e),
        e => ApplianceError::Refused(e.to_string()),
    })
}
