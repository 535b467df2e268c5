//! Card login wiring: [`cps_login::LoginService`] (re-exported here) and the HSM secret its
//! challenge MAC key is derived from.

pub use cps_login::service::*;
pub use cps_login::{Challenges, LoginContext};

use crate::error::ApplianceError;

/// HSM label of the secret the challenge MAC key is derived from (created at first start).
pub const CHALLENGE_KEY_LABEL: &str = "login-challenge";

/// The HSM secret the challenge MAC key is derived from, created (non-extractable) on first use.
pub fn challenge_key(hsm: &cps_hsm::Hsm) -> Result<cps_hsm::HsmMacKey, ApplianceError> {
    match hsm.mac_key(CHALLENGE_KEY_LABEL) {
        Ok(k) => Ok(k),
        Err(cps_hsm::HsmError::KeyNotFound { .. }) => {
            tracing::info!(
                label = CHALLENGE_KEY_LABEL,
                "creating the login challenge key in the HSM"
            );
            Ok(hsm.generate_mac_key(CHALLENGE_KEY_LABEL)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The tally's side of [`RefusalCounter`]: each refused attempt is counted in `refusals`.
pub fn counted_in(refusals: std::sync::Arc<crate::refusals::Refusals>) -> RefusalCounter {
    std::sync::Arc::new(move |source, code, now| refusals.refused(source, code, now))
}
