//! The per-request identity check of the HTTPS listener ([`cps_https::identity`]), wired to the
//! appliance's operator table and the profiles that authenticate here.

use std::sync::Arc;

pub use cps_https::identity::*;
use cps_store::Store;

/// Certificate profiles that authenticate on the HTTPS listener: operators (API and console) and
/// the card's authentication certificate (`POST /api/v1/login/tls`).
pub const HTTPS_PROFILES: &[&str] = &[
    crate::operators::OPERATOR_PROFILE,
    crate::login::LOGIN_PROFILE,
];

/// The HTTPS listener's check over `store`.
pub fn https_identities(store: Arc<dyn Store>) -> Identities {
    Identities::new(
        store,
        HTTPS_PROFILES,
        Arc::new(crate::operators::OperatorTable),
    )
}
