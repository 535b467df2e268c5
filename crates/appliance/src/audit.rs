//! IHE ATNA in the appliance: [`cps_trail`] wired to the home, the HSM and the CA.
//!
//! The trail itself (store → DICOM → log + queue, repository, sender, anchors, `audit verify`,
//! the node allowlist, refusal tallies) is `cps-trail`; here are what only the appliance has:
//! the checkpoint key and the node key in the HSM, certified by our organisations CA on first
//! use ([`checkpoint_credential`]); the checkpoint key behind the clock gate; the home's paths;
//! the disk guard; the `[audit]` section of the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cps_hsm::{Hsm, HsmKey, Signer};
pub use cps_trail::trail::{Atna, AuditSink, AuditWriter, Trail, TrailError};
pub use cps_trail::{CHECKPOINT_CERTS, CHECKPOINT_EKU, CHECKPOINT_EKU_DER, CHECKPOINT_PROFILE};

use crate::ca::CaService;
use crate::config::Config;
use crate::disk::DiskGuard;
use crate::error::ApplianceError;
use crate::nodes::Nodes;

pub use crate::home::{LOG_DIR, QUEUE_DIR};
/// The checkpoint key's certificate chain (certificate, issuing CA), made at first start.
pub const CHECKPOINT_CERT_FILE: &str = "audit/checkpoint.pem";
/// The public key file `audit verify` used to trust before checkpoint keys were certified;
/// removed at start (it has no role any more).
const LEGACY_CHECKPOINT_KEY_FILE: &str = "audit/checkpoint-key.pem";
/// The appliance's own node certificate chain (PEM).
pub const NODE_CERT_FILE: &str = "audit/node.pem";

impl From<TrailError> for ApplianceError {
    fn from(e: TrailError) -> Self {
        match e {
            TrailError::Io { path, reason } => ApplianceError::Io { path, reason },
            TrailError::Settings(m) | TrailError::Start(m) => ApplianceError::Refused(m),
        }
    }
}

/// The disk guard as the trail's [`cps_trail::trail::WriteGuard`].
struct Disk(Arc<DiskGuard>);

impl cps_trail::trail::WriteGuard for Disk {
    fn check_now(&self) -> Result<(), String> {
        self.0.check_now()
    }
    fn admit(&self) -> Result<(), String> {
        self.0.admit()
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.0.subscribe()
    }
}

/// The checkpoint key and its `audit-checkpoint` certificate chain from our organisations CA,
/// made on first use (see [`crate::ca::ApplianceCredential`]). A home made before checkpoint
/// keys were certified has the key and no certificate: it is certified now.
pub fn checkpoint_credential(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let x = &config.xua;
    crate::ca::ApplianceCredential {
        label: &config.audit.checkpoint_key_label,
        algorithm: cps_hsm::KeyAlgorithm::EcP256,
        profile: CHECKPOINT_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: x.state.clone(),
            name: x.organisation.clone(),
            structure_id: x.structure_id.clone(),
            common_name: format!("{} audit checkpoints", x.organisation),
        },
        holder: format!("appliance:{}", config.audit.checkpoint_key_label),
        file: CHECKPOINT_CERT_FILE,
    }
    .ensure(home, hsm, ca)
}

/// The appliance's own node certificate (client side of its audit links): a `node-tls`
/// certificate for an HSM key, made on first use.
fn node_credential(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: &CaService,
) -> Result<(HsmKey, Vec<Vec<u8>>), ApplianceError> {
    let name = config
        .appliance
        .tls_names
        .first()
        .cloned()
        .unwrap_or_else(|| "cps-trust.localhost".into());
    crate::ca::ApplianceCredential {
        label: &config.audit.node_key_label,
        algorithm: cps_hsm::KeyAlgorithm::EcP256,
        profile: crate::nodes::NODE_PROFILE,
        subject: cps_pki::OrganisationIdentity {
            state: config.xua.state.clone(),
            name: config.xua.organisation.clone(),
            structure_id: config.xua.structure_id.clone(),
            common_name: name.clone(),
        },
        holder: format!("node:{name}"),
        file: NODE_CERT_FILE,
    }
    .ensure(home, hsm, ca)
}

fn host_name(config: &Config) -> String {
    config
        .appliance
        .tls_names
        .first()
        .cloned()
        .unwrap_or_default()
}

/// Open the log, start the repository listener, the sender and the forwarder: the checkpoint
/// key (behind the clock gate) and, with destinations, the node key come from the HSM.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    home: &Path,
    config: &Config,
    hsm: &Hsm,
    ca: Arc<CaService>,
    nodes: Nodes,
    guard: Arc<DiskGuard>,
    server_tls: Arc<rustls::ServerConfig>,
    client_roots: Vec<Vec<u8>>,
) -> Result<Atna, ApplianceError> {
    let (checkpoint, checkpoint_chain) = checkpoint_credential(home, config, hsm, &ca)?;
    let legacy = home.join(LEGACY_CHECKPOINT_KEY_FILE);
    if legacy.exists() {
        tracing::info!(path = %legacy.display(), "removing the old checkpoint public key file: audit verify trusts the checkpoint certificate by its chain");
        std::fs::remove_file(&legacy).map_err(|e| ApplianceError::Io {
            path: legacy.clone(),
            reason: e.to_string(),
        })?;
    }
    let checkpoint: Arc<dyn Signer> = Arc::new(crate::clock::GatedSigner::new(
        Arc::new(checkpoint),
        ca.clock().clone(),
    ));
    let client_tls = if config.audit.destinations.is_empty() {
        None
    } else {
        let (key, chain) = node_credential(home, config, hsm, &ca)?;
        let client = cps_tls::client_config(Arc::new(cps_ct::OffWorker(key)), chain, client_roots)
            .map_err(ApplianceError::Refused)?;
        Some(Arc::new(client))
    };
    Ok(cps_trail::trail::start(cps_trail::trail::Start {
        settings: &config.audit,
        syslog_tls: &config.listen.syslog_tls,
        host: host_name(config),
        node: config.node_id(),
        log_dir: home.join(LOG_DIR),
        queue_dir: home.join(QUEUE_DIR),
        checkpoint,
        checkpoint_chain,
        client_tls,
        server_tls: Some(server_tls),
        store: ca.store().clone(),
        nodes,
        guard: Arc::new(Disk(guard)),
    })
    .await?)
}

/// `audit verify`'s store: opened directly, or held by the running appliance.
pub fn open_store(home: &Path, config: &Config) -> Result<cps_trail::verify::StoreAccess, String> {
    match config.store.backend {
        crate::config::StoreBackend::Sled => {
            cps_trail::verify::open_store(&config.resolve(home, &config.store.path))
        }
        // A shared database is read directly, whether nodes are running or not.
        crate::config::StoreBackend::Postgres => crate::store::open(home, config, None)
            .map(|s| cps_trail::verify::StoreAccess::Open(cps_trail::verify::StoreAnchors(s)))
            .map_err(|e| e.to_string()),
    }
}

/// `audit verify`: the log of node `node` (default: this node) in `dir` (default
/// `<home>/audit/log`, this node's own) against `root` (default `<home>/ca/root.pem`) and that
/// node's anchors in `source`. Another node's log is on its machine: verified from a copy of
/// it, given as `dir`.
pub fn verify(
    home: &Path,
    config: &Config,
    node: Option<String>,
    dir: Option<PathBuf>,
    root: Option<PathBuf>,
    source: &dyn cps_trail::verify::AnchorSource,
) -> Result<cps_trail::verify::Verified, cps_trail::verify::NotVerified> {
    let this = config.node_id();
    let node = node.unwrap_or_else(|| this.clone());
    if !cps_store::valid_node_id(&node) {
        return Err(cps_trail::verify::NotVerified {
            root_fingerprint: None,
            message: format!("'{node}' is not a node id"),
            refused: false,
        });
    }
    let log_dir = match dir {
        Some(d) => d,
        None if node == this => home.join(LOG_DIR),
        None => {
            return Err(cps_trail::verify::NotVerified {
                root_fingerprint: None,
                message: format!(
                    "the log of node '{node}' is on that node's machine, not in this home (node '{this}'): copy its audit/log directory here and give it with --dir"
                ),
                refused: false,
            });
        }
    };
    let input = cps_trail::verify::VerifyInput {
        node,
        log_dir,
        root: root.unwrap_or_else(|| home.join("ca/root.pem")),
        ca_bundle: home.join("ca/ca-bundle.pem"),
        policy: cps_atna::CheckpointPolicy {
            every: config.audit.checkpoint_every,
            interval: std::time::Duration::from_secs(u64::from(config.audit.checkpoint_seconds)),
        },
    };
    cps_trail::verify::verify(&input, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EKU constant and its DER form name the same OID, which the profile file carries.
    #[test]
    fn checkpoint_eku_constants_agree_with_the_profile() {
        let (_, oid) =
            x509_parser::der_parser::oid::Oid::from(&[1u64, 3, 6, 1, 4, 1, 32473, 3, 1][..])
                .map(|o| ((), o))
                .unwrap();
        assert_eq!(oid.as_bytes(), CHECKPOINT_EKU_DER);
        assert_eq!(oid.to_id_string(), CHECKPOINT_EKU);
        let profile = cps_pki::builtin_profiles();
        let p = profile.get(CHECKPOINT_PROFILE).unwrap();
        let text = cps_pki::profile::BUILTIN_PROFILE_FILES
            .iter()
            .find(|(f, _)| *f == "audit-checkpoint.toml")
            .unwrap()
            .1;
        assert!(
            text.contains(&format!("purposes = [\"{CHECKPOINT_EKU}\"]")),
            "{text}"
        );
        assert_eq!(p.name, CHECKPOINT_PROFILE);
    }
}
