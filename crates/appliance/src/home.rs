//! The layout of the appliance's home directory: where each part keeps its files, relative to
//! the home. One place, so that the ceremony that writes them, the services that read them and
//! the disk guard that watches them agree. And what opens from a home: the HSM it names.

use std::path::Path;
use std::sync::Arc;

use cps_hsm::Hsm;

use crate::config::Config;
use crate::error::ApplianceError;

/// The CA certificates (`<id>.der`, `<id>.pem`) and published chains.
pub const CA_DIR: &str = "ca";
/// Directory of the audit repository's log.
pub const LOG_DIR: &str = "audit/log";
/// Directory of the outgoing audit queue.
pub const QUEUE_DIR: &str = "audit/queue";

/// Open the HSM and refuse to go on unless every configured key passes the self-check.
pub fn open_checked_hsm(home: &Path, config: &Config) -> Result<Arc<Hsm>, ApplianceError> {
    let hsm = Hsm::open(&config.hsm_config(home)?)?;
    hsm.self_check(&config.key_labels()).into_result()?;
    Ok(Arc::new(hsm))
}
