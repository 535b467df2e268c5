//! The appliance configuration: one strict TOML file in the home directory. Unknown keys are
//! refused; [`Config::validate`] checks everything that can be checked without the HSM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cps_hsm::{HsmConfig, KeyAlgorithm, PinSource, SignatureAlgorithm};
use cps_pki::DistinguishedName;
use cps_pki::ext::DottedOid;
use serde::{Deserialize, Serialize};

/// `[xua]`: card login and XUA/VIHF assertions (the settings of `cps-login`).
pub use cps_login::{OrgSealRegistryMode, XuaSettings as XuaSection};

/// Name of the configuration file inside the home directory.
pub const CONFIG_FILE: &str = "cps-trust.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub appliance: ApplianceSection,
    pub hsm: HsmSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub listen: ListenSection,
    #[serde(default)]
    pub time: TimeSection,
    #[serde(default)]
    pub xua: XuaSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub tsa: TsaSection,
    pub ca: CaSection,
    #[serde(default, skip_serializing_if = "ClusterSection::is_default")]
    pub cluster: ClusterSection,
    #[serde(default, skip_serializing_if = "DsgSection::is_default")]
    pub dsg: DsgSection,
}

/// `[dsg]`: document signatures (IHE DSG) by structure seals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DsgSection {
    /// The structure seals (`[[dsg.seals]]`): which key signs for which structure, and which
    /// `signer` operators may have it sign. A structure without a seal here cannot sign.
    #[serde(default)]
    pub seals: Vec<DsgSeal>,
}

impl DsgSection {
    fn is_default(&self) -> bool {
        self.seals.is_empty()
    }

    /// The seal of a structure.
    pub fn seal_for(&self, structure_id: &str) -> Option<&DsgSeal> {
        self.seals.iter().find(|s| s.structure_id == structure_id)
    }
}

/// One structure's seal: an HSM key with an `org-cachet` certificate whose subject names the
/// structure (made at the first start), and the operators allowed to have documents signed by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DsgSeal {
    /// The structure's identifier (struct_IdNat): the seal certificate's `OU`.
    pub structure_id: String,
    /// The structure's name (raison sociale): the certificate's `O`.
    pub organisation: String,
    /// Its department (`ST`).
    pub state: String,
    /// HSM label of the key; default `dsg-seal-<structure_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    /// `p256` (default), `rsa2048` or `rsa3072`.
    #[serde(default = "default_seal_algorithm")]
    pub algorithm: String,
    /// Names of the `signer` operators this seal signs for (nobody else may use it).
    pub signers: Vec<String>,
}

fn default_seal_algorithm() -> String {
    "p256".into()
}

/// An HSM key label of the configuration: 1 to 64 letters, digits, `-` or `_`.
fn check_key_label(what: &str, label: &str) -> Result<(), ConfigError> {
    if label.is_empty()
        || label.len() > 64
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::Invalid(format!(
            "{what}: key_label '{label}' must be 1-64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

impl Config {
    fn validate_dsg(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut structures = std::collections::HashSet::new();
        let mut labels = std::collections::HashSet::new();
        labels.insert(self.xua.key_label.clone());
        for seal in &self.dsg.seals {
            let id = &seal.structure_id;
            if id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return bad(format!(
                    "dsg.seals: structure_id '{id}' must be 1 to 64 letters, digits or '-'"
                ));
            }
            if !structures.insert(id.clone()) {
                return bad(format!("dsg.seals: structure {id} has two seals"));
            }
            let label = seal.label();
            check_key_label(&format!("dsg.seals ({id})"), &label)?;
            if !labels.insert(label.clone()) {
                return bad(format!(
                    "dsg.seals: key label '{label}' of structure {id} is already used by another key"
                ));
            }
            if !matches!(seal.algorithm.as_str(), "p256" | "rsa2048" | "rsa3072") {
                return bad(format!(
                    "dsg.seals: algorithm '{}' of structure {id}: use p256, rsa2048 or rsa3072",
                    seal.algorithm
                ));
            }
            if seal.organisation.trim().is_empty() || seal.state.trim().is_empty() {
                return bad(format!(
                    "dsg.seals: structure {id} needs its organisation and state"
                ));
            }
            if seal.signers.is_empty() || seal.signers.iter().any(|s| s.trim().is_empty()) {
                return bad(format!(
                    "dsg.seals: structure {id} lists no signer operator (nobody could use the seal)"
                ));
            }
        }
        Ok(())
    }
}

impl DsgSeal {
    /// The HSM label of the seal's key.
    pub fn label(&self) -> String {
        self.key_label
            .clone()
            .unwrap_or_else(|| format!("dsg-seal-{}", self.structure_id))
    }
}

/// `[tsa]`: the time-stamping authority (RFC 3161, `POST /tsa` on the public listener). Its key
/// is made in the HSM at the first start and certified by the organisations CA (`tsa`
/// profile); the certificate's subject is the organisation of `[xua]`, CN "<organisation> TSA".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TsaSection {
    /// Serve `POST /tsa` (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// HSM label of the TSA key (default `tsa`).
    #[serde(default = "default_tsa_key_label")]
    pub key_label: String,
    /// Its algorithm: `p256` (default), `p384`, `rsa2048`, `rsa3072`.
    #[serde(default = "default_tsa_algorithm")]
    pub algorithm: String,
    /// The TSA policy OID written in every token (`TSTInfo.policy`); a query asking for another
    /// policy is refused (`unacceptedPolicy`).
    #[serde(default = "default_tsa_policy")]
    pub policy: String,
    /// The accuracy stated in tokens is the clock's maximum error bound, and at least this many
    /// milliseconds (default 0: the clock's bound alone).
    #[serde(default)]
    pub min_accuracy_ms: u32,
    /// Name the TSA (its certificate's subject) in every token (`TSTInfo.tsa`, default true).
    #[serde(default = "default_true")]
    pub include_name: bool,
}

fn default_true() -> bool {
    true
}

fn default_tsa_key_label() -> String {
    "tsa".into()
}

fn default_tsa_algorithm() -> String {
    "p256".into()
}

/// Under the project's example arc, next to the certificate policies (1.3.6.1.4.1.32473.1) and
/// the audit checkpoint purpose (…3.1).
fn default_tsa_policy() -> String {
    "1.3.6.1.4.1.32473.4.1".into()
}

impl Default for TsaSection {
    fn default() -> Self {
        TsaSection {
            enabled: true,
            key_label: default_tsa_key_label(),
            algorithm: default_tsa_algorithm(),
            policy: default_tsa_policy(),
            min_accuracy_ms: 0,
            include_name: true,
        }
    }
}

impl TsaSection {
    /// The key algorithm (`algorithm`), checked.
    pub fn key_algorithm(&self) -> Result<cps_hsm::KeyAlgorithm, ConfigError> {
        match cps_hsm::KeyAlgorithm::from_name(&self.algorithm) {
            Some(a) if a != cps_hsm::KeyAlgorithm::Rsa4096 => Ok(a),
            _ => Err(ConfigError::Invalid(format!(
                "tsa.algorithm '{}' must be p256, p384, rsa2048 or rsa3072",
                self.algorithm
            ))),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.key_algorithm()?;
        check_key_label("tsa", &self.key_label)?;
        DottedOid::parse(&self.policy)
            .map_err(|e| ConfigError::Invalid(format!("tsa.policy: {e}")))?;
        if self.min_accuracy_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "tsa.min_accuracy_ms must be at most 60000".into(),
            ));
        }
        Ok(())
    }
}

/// `[cluster]`: this node among the nodes that share one store.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id (`[cluster] node_id = "…"`): in every audit record it commits, its audit
    /// log's anchors, its enrolments and jobs, its audit messages and `/health`. Default: the
    /// host name ([`default_node_id`]); give each node of a cluster its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl ClusterSection {
    fn is_default(&self) -> bool {
        self.node_id.is_none()
    }
}

/// The host name as a node id: lower case, every character a node id cannot hold replaced by
/// `-`, at most [`cps_store::MAX_NODE_ID_LEN`] characters; `node` if nothing is left.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_id_from_host(host.trim())
}

fn node_id_from_host(host: &str) -> String {
    let id: String = host
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(cps_store::MAX_NODE_ID_LEN)
        .collect();
    if cps_store::valid_node_id(&id) {
        id
    } else {
        "node".into()
    }
}

/// IHE ATNA: the `[audit]` section is the trail's own settings.
pub use cps_trail::{Destination as AuditDestination, TrailSettings as AuditSection};

/// The `[time]` section: the signing gate's settings ([`cps_ct::gate`]).
pub use cps_ct::gate::{TimeSection, TimeSourceKind};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSection {
    /// Base URL under which CRLs (`/crl/<ca>.crl`), CA certificates (`/ca/<ca>.der`) and the OCSP
    /// responder (`/ocsp`) are published; it is written into every certificate.
    pub public_base_url: String,
    /// HSM key label of the appliance's TLS server key (HTTPS API, syslog-TLS).
    #[serde(default = "default_tls_key_label")]
    pub tls_key_label: String,
    /// DNS names and IP addresses the TLS server certificate is issued for.
    #[serde(default = "default_tls_names")]
    pub tls_names: Vec<String>,
}

fn default_tls_key_label() -> String {
    "tls-server".into()
}

/// `cps-trust.localhost` (RFC 6761 reserves `.localhost` for loopback) rather than `localhost`:
/// a single-label dNSName is not a valid domain name in a certificate (pkilint
/// `pkix.invalid_domain_name_syntax`). Clients on the machine use the `127.0.0.1` IP address.
fn default_tls_names() -> Vec<String> {
    vec!["cps-trust.localhost".into(), "127.0.0.1".into()]
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Label of the token holding the appliance's keys.
    pub token_label: String,
    /// `env:NAME` or `file:PATH` (relative paths are relative to the home directory).
    pub pin: String,
    /// Sessions kept open for concurrent signing.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// SoftHSM2 configuration file for the embedded HSM (relative to the home directory).
    /// Absent for a vendor HSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softhsm2_conf: Option<PathBuf>,
}

fn default_ocsp_validity_hours() -> u32 {
    8
}

fn default_ocsp_not_issued() -> String {
    "unknown".into()
}

fn default_crl_validity_hours() -> u32 {
    24
}

fn default_sessions() -> usize {
    8
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sled` (the embedded store in [`StoreSection::path`], one machine) or `postgres` (a
    /// PostgreSQL database at [`StoreSection::url`], shared by several nodes).
    #[serde(default)]
    pub backend: StoreBackend,
    /// Directory of the embedded store (relative to the home directory); `sled` only.
    pub path: PathBuf,
    /// `postgres` only: the connection URL, e.g.
    /// `postgresql://cps@db1:5432,db2:5432/cps?target_session_attrs=read-write` (every host of
    /// the primary/standby pair, so that connections follow a failover). A password belongs in
    /// `~/.pgpass` or `PGPASSWORD`, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `postgres` only: connections kept open to the database.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Free space (MiB) kept on the filesystems of the store, the audit log and the outgoing
    /// queue. Below it the appliance refuses new work (503, alarm) before anything can fail on
    /// a full disk; it resumes by itself once free space is back above it by a quarter.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

fn default_min_free_mb() -> u64 {
    256
}

/// Whether a `postgresql://` URL carries a password (`user:password@host`).
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

fn default_pool_size() -> usize {
    16
}

/// Where the appliance keeps its durable state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded store (sled), in the home directory: one node.
    #[default]
    Sled,
    /// A PostgreSQL database, shared by every node of a cluster.
    Postgres,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Sled,
            url: None,
            pool_size: default_pool_size(),
            path: "store".into(),
            min_free_mb: default_min_free_mb(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Plain HTTP for public PKI material: OCSP, CRLs, CA certificates, health.
    pub http: String,
    /// HTTPS API and console (mutual TLS).
    pub https: String,
    /// Syslog over TLS (RFC 5425).
    pub syslog_tls: String,
    /// NTP (UDP); 123 in production, an unprivileged port in development.
    pub ntp: String,
    /// Longest life of an HTTPS connection (HTTP/1.1 keep-alive or HTTP/2): it is then closed
    /// gracefully (after the requests in flight) and the client reconnects with a full handshake.
    #[serde(default = "default_connection_max_seconds")]
    pub connection_max_seconds: u32,
    /// An HTTPS connection with no request for this long is closed.
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u32,
}

fn default_connection_max_seconds() -> u32 {
    600
}

fn default_idle_seconds() -> u32 {
    60
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            http: "127.0.0.1:8080".into(),
            https: "127.0.0.1:8443".into(),
            syslog_tls: "127.0.0.1:6514".into(),
            ntp: "127.0.0.1:11123".into(),
            connection_max_seconds: default_connection_max_seconds(),
            idle_seconds: default_idle_seconds(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// Validity of every CRL (nextUpdate − thisUpdate); CRLs are re-signed at half of it and
    /// after every revocation.
    #[serde(default = "default_crl_validity_hours")]
    pub crl_validity_hours: u32,
    /// Validity of OCSP responses (nextUpdate − thisUpdate); cached responses are re-signed
    /// after an eighth of it, and dropped the moment a status changes.
    #[serde(default = "default_ocsp_validity_hours")]
    pub ocsp_validity_hours: u32,
    /// Answer for a serial this appliance never issued: `unknown`, or `revoked` with the
    /// extended-revoked extension (CA/Browser Forum BR 4.9.10).
    #[serde(default = "default_ocsp_not_issued")]
    pub ocsp_not_issued: String,
    /// Length of the CRL signer lease, seconds: among nodes sharing one store, one node at a
    /// time signs CRLs; another takes over when the lease has run out.
    #[serde(
        default = "default_crl_lease_seconds",
        skip_serializing_if = "is_default_crl_lease_seconds"
    )]
    pub crl_lease_seconds: u32,
    pub root: CaKeyConfig,
    /// Issuing CAs by identifier (`personnes`, `organisations`): the identifier names their CRL
    /// (`/crl/<id>.crl`) and certificate files.
    pub issuing: BTreeMap<String, IssuingCaConfig>,
}

/// A certificate of the hierarchy and its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaKeyConfig {
    /// RFC 4514 (`CN=…, O=…, C=FR`) or slash form (`/C=FR/O=…/CN=…`).
    pub subject: String,
    /// Label of the key on the token.
    pub key_label: String,
    /// `p256`, `p384`, `rsa2048`, `rsa3072`, `rsa4096`.
    pub algorithm: String,
    /// Signature algorithm this key signs with (default: from the key algorithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub validity_days: u32,
    /// Certificate-policy OIDs written in the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuingCaConfig {
    #[serde(flatten)]
    pub ca: CaKeyConfig,
    /// The delegated OCSP signer of this CA.
    pub ocsp: CaKeyConfig,
    /// Number of partitioned CRLs of this CA (1: one full CRL). With N > 1, each new certificate
    /// belongs to one of N shards and names that shard's CRL (`/crl/<id>/<shard>.crl`); the
    /// count may grow, never shrink. 16 keeps every CRL under 10 MB up to a million revocations.
    #[serde(default = "one_shard", skip_serializing_if = "is_one_shard")]
    pub crl_shards: u16,
}

fn one_shard() -> u16 {
    1
}

fn is_one_shard(n: &u16) -> bool {
    *n == 1
}

fn default_crl_lease_seconds() -> u32 {
    cps_ca::crl::DEFAULT_LEASE_SECS as u32
}

fn is_default_crl_lease_seconds(n: &u32) -> bool {
    *n == default_crl_lease_seconds()
}

/// A configuration error: one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("configuration {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Signature algorithm names as configuration writes them.
pub fn parse_signature(s: &str) -> Option<SignatureAlgorithm> {
    Some(match s {
        "ecdsa-sha256" => SignatureAlgorithm::EcdsaSha256,
        "ecdsa-sha384" => SignatureAlgorithm::EcdsaSha384,
        "rsa-pkcs1-sha256" => SignatureAlgorithm::RsaPkcs1Sha256,
        "rsa-pkcs1-sha384" => SignatureAlgorithm::RsaPkcs1Sha384,
        "rsa-pss-sha256" => SignatureAlgorithm::RsaPssSha256,
        "rsa-pss-sha384" => SignatureAlgorithm::RsaPssSha384,
        _ => return None,
    })
}

impl CaKeyConfig {
    pub fn key_algorithm(&self) -> Result<KeyAlgorithm, ConfigError> {
        KeyAlgorithm::from_name(&self.algorithm).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "key '{}': unknown algorithm '{}' (use p256, p384, rsa2048, rsa3072 or rsa4096)",
                self.key_label, self.algorithm
            ))
        })
    }

    pub fn signature_algorithm(&self) -> Result<SignatureAlgorithm, ConfigError> {
        let key = self.key_algorithm()?;
        match &self.signature {
            None => Ok(key.default_signature()),
            Some(s) => {
                let sig = parse_signature(s).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "key '{}': unknown signature algorithm '{s}'",
                        self.key_label
                    ))
                })?;
                if !sig.fits(key) {
                    return Err(ConfigError::Invalid(format!(
                        "key '{}': signature algorithm {s} does not fit a {key} key",
                        self.key_label
                    )));
                }
                Ok(sig)
            }
        }
    }

    pub fn subject_name(&self) -> Result<DistinguishedName, ConfigError> {
        DistinguishedName::parse(&self.subject)
            .map_err(|e| ConfigError::Invalid(format!("key '{}': {e}", self.key_label)))
    }

    pub fn policy_oids(&self) -> Result<Vec<DottedOid>, ConfigError> {
        self.policies
            .iter()
            .map(|p| {
                DottedOid::parse(p)
                    .map_err(|e| ConfigError::Invalid(format!("key '{}': {e}", self.key_label)))
            })
            .collect()
    }

    fn validate(&self, what: &str) -> Result<(), ConfigError> {
        check_key_label(what, &self.key_label)?;
        self.signature_algorithm()?;
        self.subject_name()?;
        self.policy_oids()?;
        if self.validity_days == 0 || self.validity_days > 365 * 40 {
            return Err(ConfigError::Invalid(format!(
                "{what}: validity_days must be between 1 and {}",
                365 * 40
            )));
        }
        Ok(())
    }
}

impl Config {
    /// Read and parse `path` (no validation beyond the schema).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.into(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a caret diagram; keep it to one line.
            let msg = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The embedded default: SoftHSM2 in the home directory, a P-384 root, P-256 issuing CAs and
    /// OCSP signers, and example policy OIDs under the documentation arc 1.3.6.1.4.1.32473
    /// (RFC 5612). The X.660 example arc `2.999` is accepted in configuration too, but pkilint's
    /// DER decoder (pyasn1-fasder 0.1.3) refuses any `2.999.x` OID, so the defaults avoid it.
    pub fn embedded_default() -> Config {
        // Each issuing CA certifies its own policy arc and every end-entity policy under it (the
        // `certs/ca-*.toml` profiles list the same), so chains validate with explicit policy.
        let issuing = |id: &str, cn: &str, policies: &[&str], ocsp_cn: &str| IssuingCaConfig {
            ca: CaKeyConfig {
                subject: format!("CN={cn}, OU=cps-trust IGC, O=cps-trust, C=FR"),
                key_label: format!("ca-{id}"),
                algorithm: "p256".into(),
                signature: None,
                validity_days: 3650,
                policies: policies.iter().map(|p| p.to_string()).collect(),
            },
            ocsp: CaKeyConfig {
                subject: format!("CN={ocsp_cn}, OU=cps-trust IGC, O=cps-trust, C=FR"),
                key_label: format!("ocsp-{id}"),
                algorithm: "p256".into(),
                signature: None,
                validity_days: 365,
                policies: vec![],
            },
            crl_shards: 1,
        };
        let mut map = BTreeMap::new();
        map.insert(
            "personnes".into(),
            issuing(
                "personnes",
                "cps-trust AC Personnes",
                &[
                    "1.3.6.1.4.1.32473.1.1",
                    "1.3.6.1.4.1.32473.1.1.1",
                    "1.3.6.1.4.1.32473.1.1.2",
                ],
                "cps-trust AC Personnes OCSP",
            ),
        );
        map.insert(
            "organisations".into(),
            issuing(
                "organisations",
                "cps-trust AC Organisations",
                &[
                    "1.3.6.1.4.1.32473.1.2",
                    "1.3.6.1.4.1.32473.1.2.1",
                    "1.3.6.1.4.1.32473.1.2.2",
                    "1.3.6.1.4.1.32473.1.2.3",
                    "1.3.6.1.4.1.32473.1.2.4",
                    "1.3.6.1.4.1.32473.1.2.5",
                ],
                "cps-trust AC Organisations OCSP",
            ),
        );
        Config {
            appliance: ApplianceSection {
                public_base_url: "http://127.0.0.1:8080".into(),
                tls_key_label: default_tls_key_label(),
                tls_names: default_tls_names(),
            },
            hsm: HsmSection {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token_label: "cps-trust".into(),
                pin: "file:secrets/hsm-user.pin".into(),
                sessions: default_sessions(),
                softhsm2_conf: Some("softhsm2.conf".into()),
            },
            store: StoreSection::default(),
            listen: ListenSection::default(),
            time: TimeSection::default(),
            xua: XuaSection::default(),
            tsa: TsaSection::default(),
            audit: AuditSection::default(),
            cluster: ClusterSection::default(),
            dsg: DsgSection::default(),
            ca: CaSection {
                crl_validity_hours: default_crl_validity_hours(),
                ocsp_validity_hours: default_ocsp_validity_hours(),
                ocsp_not_issued: default_ocsp_not_issued(),
                crl_lease_seconds: default_crl_lease_seconds(),
                root: CaKeyConfig {
                    subject: "CN=cps-trust Root CA, OU=cps-trust IGC, O=cps-trust, C=FR".into(),
                    key_label: "ca-root".into(),
                    algorithm: "p384".into(),
                    signature: None,
                    validity_days: 7300,
                    policies: vec![],
                },
                issuing: map,
            },
        }
    }

    /// Every check that needs no HSM. `home` resolves relative paths.
    pub fn validate(&self, home: &Path) -> Result<(), ConfigError> {
        self.validate_dsg()?;
        if let Some(id) = &self.cluster.node_id
            && !cps_store::valid_node_id(id)
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.node_id '{id}' must be 1 to {} letters, digits, '.', '-' or '_', starting with a letter or a digit",
                cps_store::MAX_NODE_ID_LEN
            )));
        }
        let url = &self.appliance.public_base_url;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.ends_with('/')
            || url.contains(char::is_whitespace)
        {
            return Err(ConfigError::Invalid(format!(
                "appliance.public_base_url '{url}' must be an http(s) URL without a trailing '/'"
            )));
        }
        if self.appliance.tls_names.is_empty() {
            return Err(ConfigError::Invalid(
                "appliance.tls_names must name at least one DNS name or IP address".into(),
            ));
        }
        if self.hsm.token_label.is_empty() || self.hsm.token_label.len() > 32 {
            return Err(ConfigError::Invalid(
                "hsm.token_label must be 1 to 32 characters".into(),
            ));
        }
        if self.hsm.sessions == 0 || self.hsm.sessions > 1024 {
            return Err(ConfigError::Invalid(
                "hsm.sessions must be between 1 and 1024".into(),
            ));
        }
        let module = self.resolve(home, &self.hsm.module);
        if !module.is_file() {
            return Err(ConfigError::Invalid(format!(
                "hsm.module {} does not exist",
                module.display()
            )));
        }
        let pin = self.pin_source(home)?;
        if let PinSource::File(_) = pin {
            // Same checks as at run time: owner-only, our uid, not empty.
            pin.read()
                .map_err(|e| ConfigError::Invalid(format!("hsm.pin: {e}")))?;
        }
        if let Some(conf) = &self.hsm.softhsm2_conf {
            let p = self.resolve(home, conf);
            if !p.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "hsm.softhsm2_conf {} does not exist",
                    p.display()
                )));
            }
        }
        for (name, addr) in [
            ("listen.http", &self.listen.http),
            ("listen.https", &self.listen.https),
            ("listen.syslog_tls", &self.listen.syslog_tls),
            ("listen.ntp", &self.listen.ntp),
        ] {
            addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!("{name} '{addr}' is not an address:port"))
            })?;
        }
        let l = &self.listen;
        if l.connection_max_seconds == 0 || l.connection_max_seconds > 86_400 {
            return Err(ConfigError::Invalid(
                "listen.connection_max_seconds must be between 1 and 86400".into(),
            ));
        }
        if l.idle_seconds == 0 || l.idle_seconds > l.connection_max_seconds {
            return Err(ConfigError::Invalid(
                "listen.idle_seconds must be at least 1 and at most listen.connection_max_seconds"
                    .into(),
            ));
        }
        self.xua.check().map_err(ConfigError::Invalid)?;
        self.tsa.check()?;
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Sled, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "store.url is set but store.backend is \"sled\"; set backend = \"postgres\" \
                     to use the database, or remove url"
                        .into(),
                ));
            }
            (StoreBackend::Postgres, None) => {
                return Err(ConfigError::Invalid(
                    "store.backend = \"postgres\" needs store.url (e.g. \
                     postgresql://cps@db1,db2/cps?target_session_attrs=read-write)"
                        .into(),
                ));
            }
            (StoreBackend::Postgres, Some(url)) => {
                if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                    return Err(ConfigError::Invalid(
                        "store.url must be a postgresql:// URL".into(),
                    ));
                }
                if url_has_password(url) {
                    return Err(ConfigError::Invalid(
                        "store.url holds a password; keep it in ~/.pgpass or PGPASSWORD instead"
                            .into(),
                    ));
                }
            }
            (StoreBackend::Sled, None) => {}
        }
        if !(1..=256).contains(&self.store.pool_size) {
            return Err(ConfigError::Invalid(
                "store.pool_size must be between 1 and 256".into(),
            ));
        }
        if !(1..=1024 * 1024).contains(&self.store.min_free_mb) {
            return Err(ConfigError::Invalid(
                "store.min_free_mb must be between 1 and 1048576 (1 TiB)".into(),
            ));
        }
        if !(1..=3600).contains(&self.audit.reauthorize_seconds) {
            return Err(ConfigError::Invalid(
                "audit.reauthorize_seconds must be between 1 and 3600".into(),
            ));
        }
        if !(1..=3600).contains(&self.audit.refusal_summary_seconds) {
            return Err(ConfigError::Invalid(
                "audit.refusal_summary_seconds must be between 1 and 3600".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.audit.checkpoint_every) {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_every must be between 1 and 1000000 records".into(),
            ));
        }
        if !(1..=3600).contains(&self.audit.checkpoint_seconds) {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_seconds must be between 1 and 3600".into(),
            ));
        }
        if self.time.max_error_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "time.max_error_ms must be at most 60000 (one minute)".into(),
            ));
        }
        if self.time.source == TimeSourceKind::Declared
            && self.time.declared_max_error_ms > self.time.max_error_ms
        {
            return Err(ConfigError::Invalid(format!(
                "time.declared_max_error_ms ({}) exceeds time.max_error_ms ({}): the declared clock would never be trusted",
                self.time.declared_max_error_ms, self.time.max_error_ms
            )));
        }
        if !(1..=15).contains(&self.time.ntp_stratum) {
            return Err(ConfigError::Invalid(
                "time.ntp_stratum must be between 1 and 15".into(),
            ));
        }
        if !(5..=3600).contains(&self.ca.crl_lease_seconds) {
            return Err(ConfigError::Invalid(
                "ca.crl_lease_seconds must be between 5 and 3600".into(),
            ));
        }
        for (id, ca) in &self.ca.issuing {
            if ca.crl_shards == 0 || ca.crl_shards > cps_ca::crl::MAX_SHARDS {
                return Err(ConfigError::Invalid(format!(
                    "ca.issuing.{id}.crl_shards must be between 1 and {}",
                    cps_ca::crl::MAX_SHARDS
                )));
            }
        }
        if self.ca.crl_validity_hours == 0 || self.ca.crl_validity_hours > 24 * 31 {
            return Err(ConfigError::Invalid(
                "ca.crl_validity_hours must be between 1 and 744".into(),
            ));
        }
        if self.ca.ocsp_validity_hours == 0 || self.ca.ocsp_validity_hours > 24 * 7 {
            return Err(ConfigError::Invalid(
                "ca.ocsp_validity_hours must be between 1 and 168".into(),
            ));
        }
        if self.ca.ocsp_not_issued != "unknown" && self.ca.ocsp_not_issued != "revoked" {
            return Err(ConfigError::Invalid(format!(
                "ca.ocsp_not_issued '{}' must be \"unknown\" or \"revoked\"",
                self.ca.ocsp_not_issued
            )));
        }
        self.ca.root.validate("ca.root")?;
        // The appliance's own keys too: one key, one certificate profile (a key shared between
        // the seal and the checkpoint signer would make one certificate serve both purposes).
        let mut labels = vec![
            self.ca.root.key_label.as_str(),
            self.appliance.tls_key_label.as_str(),
            self.xua.key_label.as_str(),
            self.audit.checkpoint_key_label.as_str(),
            self.audit.node_key_label.as_str(),
        ];
        for required in ["personnes", "organisations"] {
            if !self.ca.issuing.contains_key(required) {
                return Err(ConfigError::Invalid(format!(
                    "ca.issuing.{required} is missing (the appliance needs both 'personnes' and 'organisations')"
                )));
            }
        }
        for (id, ca) in &self.ca.issuing {
            if id.is_empty()
                || id == "root"
                || !id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(ConfigError::Invalid(format!(
                    "ca.issuing.{id}: identifiers are lower-case letters, digits and '-', and not 'root'"
                )));
            }
            ca.ca.validate(&format!("ca.issuing.{id}"))?;
            ca.ocsp.validate(&format!("ca.issuing.{id}.ocsp"))?;
            if ca.ca.validity_days > self.ca.root.validity_days {
                return Err(ConfigError::Invalid(format!(
                    "ca.issuing.{id}: validity_days exceeds the root's"
                )));
            }
            if ca.ocsp.validity_days > ca.ca.validity_days {
                return Err(ConfigError::Invalid(format!(
                    "ca.issuing.{id}.ocsp: validity_days exceeds its CA's"
                )));
            }
            labels.push(&ca.ca.key_label);
            labels.push(&ca.ocsp.key_label);
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(ConfigError::Invalid(format!(
                    "key label '{l}' is used twice"
                )));
            }
        }
        Ok(())
    }

    /// This node's id: `[cluster] node_id`, else derived from the host name. The one place
    /// that says which node this process is.
    pub fn node_id(&self) -> String {
        self.cluster.node_id.clone().unwrap_or_else(default_node_id)
    }

    pub fn resolve(&self, home: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            home.join(p)
        }
    }

    pub fn pin_source(&self, home: &Path) -> Result<PinSource, ConfigError> {
        match PinSource::parse(&self.hsm.pin)
            .map_err(|e| ConfigError::Invalid(format!("hsm.pin: {e}")))?
        {
            PinSource::File(p) => Ok(PinSource::File(self.resolve(home, &p))),
            env => Ok(env),
        }
    }

    pub fn hsm_config(&self, home: &Path) -> Result<HsmConfig, ConfigError> {
        Ok(HsmConfig {
            module: self.resolve(home, &self.hsm.module),
            token_label: self.hsm.token_label.clone(),
            pin: self.pin_source(home)?,
            sessions: self.hsm.sessions,
        })
    }

    /// Every key label the appliance needs on the token, root first.
    pub fn key_labels(&self) -> Vec<String> {
        let mut v = vec![self.ca.root.key_label.clone()];
        for ca in self.ca.issuing.values() {
            v.push(ca.ca.key_label.clone());
            v.push(ca.ocsp.key_label.clone());
        }
        v.push(self.appliance.tls_key_label.clone());
        v
    }

    /// The TLS names split into DNS names and IP addresses.
    pub fn tls_names(&self) -> (Vec<String>, Vec<std::net::IpAddr>) {
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for n in &self.appliance.tls_names {
            match n.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(n.clone()),
            }
        }
        (dns, ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[cluster] node_id` names the node; without it the host name does, made a valid id;
    /// an id that cannot be one is refused by `validate`.
    #[test]
    fn node_id_from_the_setting_or_the_host_name() {
        let c = Config::embedded_default();
        assert_eq!(c.node_id(), default_node_id());
        assert!(cps_store::valid_node_id(&c.node_id()));
        assert!(!c.to_toml().contains("[cluster]"));
        let text = format!("{}\n[cluster]\nnode_id = \"node-a\"\n", c.to_toml());
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.node_id(), "node-a");
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let dir = tempfile::tempdir().unwrap();
        let mut bad = c.clone();
        bad.cluster.node_id = Some("node a".into());
        let e = bad.validate(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cluster.node_id 'node a'"), "{e}");
        assert_eq!(
            node_id_from_host("Web-01.Example.ORG"),
            "web-01.example.org"
        );
        assert_eq!(node_id_from_host("--x y"), "x-y");
        assert_eq!(node_id_from_host(""), "node");
        assert_eq!(node_id_from_host(&"h".repeat(100)).len(), 63);
    }

    #[test]
    fn dsg_seals_parse_and_bad_ones_are_refused() {
        let c = Config::embedded_default();
        assert!(!c.to_toml().contains("[dsg]"));
        let text = format!(
            "{}\n[[dsg.seals]]\nstructure_id = \"10B0152872\"\norganisation = \"Clinique\"\nstate = \"75\"\nsigners = [\"dpi\"]\n",
            c.to_toml()
        );
        let c = Config::parse(&text).unwrap();
        let seal = c.dsg.seal_for("10B0152872").unwrap();
        assert_eq!(seal.label(), "dsg-seal-10B0152872");
        assert_eq!(seal.algorithm, "p256");
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let dir = tempfile::tempdir().unwrap();
        assert!(c.validate_dsg().is_ok());
        let refused = |f: &dyn Fn(&mut Config), what: &str| {
            let mut bad = c.clone();
            f(&mut bad);
            let err = bad.validate(dir.path()).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        };
        refused(&|b| b.dsg.seals[0].signers.clear(), "no signer");
        refused(&|b| b.dsg.seals.push(b.dsg.seals[0].clone()), "two seals");
        refused(
            &|b| b.dsg.seals[0].structure_id = "a b".into(),
            "structure_id",
        );
        refused(
            &|b| b.dsg.seals[0].algorithm = "ed25519".into(),
            "algorithm",
        );
        refused(
            &|b| b.dsg.seals[0].key_label = Some(b.xua.key_label.clone()),
            "already used",
        );
    }

    #[test]
    fn default_round_trips_through_toml() {
        let c = Config::embedded_default();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn crl_shards_and_lease_round_trip() {
        let mut c = Config::embedded_default();
        c.ca.issuing.get_mut("personnes").unwrap().crl_shards = 16;
        c.ca.crl_lease_seconds = 30;
        let text = c.to_toml();
        assert!(text.contains("crl_shards = 16"), "{text}");
        let back = Config::parse(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.ca.issuing["organisations"].crl_shards, 1);
    }

    #[test]
    fn org_seal_registry_is_required_unless_said_otherwise() {
        let c = Config::embedded_default();
        assert_eq!(c.xua.org_seal_registry, OrgSealRegistryMode::Required);
        let text = c.to_toml();
        assert!(text.contains("org_seal_registry = \"required\""), "{text}");
        let c = Config::parse(&text.replace(
            "org_seal_registry = \"required\"",
            "org_seal_registry = \"not_held\"",
        ))
        .unwrap();
        assert_eq!(c.xua.org_seal_registry, OrgSealRegistryMode::NotHeld);
        let err = Config::parse(&text.replace(
            "org_seal_registry = \"required\"",
            "org_seal_registry = \"off\"",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("line ")
                && err.contains("unknown variant `off`, expected `required` or `not_held`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let mut text = Config::embedded_default().to_toml();
        text = text.replace("[hsm]\n", "[hsm]\nmodul = \"/x\"\n");
        let err = Config::parse(&text).unwrap_err();
        assert!(
            err.contains("unknown field `modul`") && err.starts_with("line "),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = {
            let mut c = Config::embedded_default();
            c.hsm.softhsm2_conf = None;
            c.hsm.pin = "env:X".into();
            c
        };
        base.validate(dir.path()).unwrap();
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|c| c.ca.root.algorithm = "dsa".into()),
                "unknown algorithm 'dsa'",
            ),
            (
                Box::new(|c| c.ca.root.signature = Some("rsa-pkcs1-sha256".into())),
                "does not fit",
            ),
            (
                Box::new(|c| c.ca.root.subject = "CN=x,C=France".into()),
                "two upper-case letters",
            ),
            (
                Box::new(|c| {
                    c.ca.issuing.get_mut("personnes").unwrap().ca.policies = vec!["1.40.1".into()]
                }),
                "not an object identifier",
            ),
            (
                Box::new(|c| {
                    c.ca.issuing.get_mut("personnes").unwrap().ocsp.key_label = "ca-root".into()
                }),
                "used twice",
            ),
            (
                Box::new(|c| {
                    c.ca.issuing.remove("organisations");
                }),
                "ca.issuing.organisations is missing",
            ),
            (
                Box::new(|c| c.ca.issuing.get_mut("personnes").unwrap().crl_shards = 0),
                "ca.issuing.personnes.crl_shards must be between 1 and 4096",
            ),
            (
                Box::new(|c| c.ca.issuing.get_mut("personnes").unwrap().crl_shards = 4097),
                "crl_shards must be between 1 and 4096",
            ),
            (
                Box::new(|c| c.ca.crl_lease_seconds = 1),
                "ca.crl_lease_seconds must be between 5 and 3600",
            ),
            (
                Box::new(|c| c.hsm.module = "/nonexistent/libp11.so".into()),
                "does not exist",
            ),
            (
                Box::new(|c| c.listen.http = "localhost".into()),
                "not an address:port",
            ),
            (
                Box::new(|c| c.appliance.public_base_url = "ftp://x".into()),
                "public_base_url",
            ),
            (
                Box::new(|c| c.ca.issuing.get_mut("personnes").unwrap().ca.validity_days = 9000),
                "exceeds the root",
            ),
            (Box::new(|c| c.hsm.pin = "env:".into()), "hsm.pin"),
            (
                Box::new(|c| c.xua.replay_capacity = 10),
                "xua.replay_capacity",
            ),
            (Box::new(|c| c.store.min_free_mb = 0), "store.min_free_mb"),
            (
                Box::new(|c| c.store.url = Some("postgresql://cps@db/cps".into())),
                "backend is \"sled\"",
            ),
            (
                Box::new(|c| c.store.backend = StoreBackend::Postgres),
                "needs store.url",
            ),
            (
                Box::new(|c| {
                    c.store.backend = StoreBackend::Postgres;
                    c.store.url = Some("mysql://db/cps".into());
                }),
                "postgresql:// URL",
            ),
            (
                Box::new(|c| {
                    c.store.backend = StoreBackend::Postgres;
                    c.store.url = Some("postgresql://cps:hunter2@db1,db2/cps".into());
                }),
                "holds a password",
            ),
            (Box::new(|c| c.store.pool_size = 0), "store.pool_size"),
            (
                Box::new(|c| c.audit.reauthorize_seconds = 0),
                "audit.reauthorize_seconds",
            ),
            (
                Box::new(|c| c.audit.refusal_summary_seconds = 7200),
                "audit.refusal_summary_seconds",
            ),
            (
                Box::new(|c| c.audit.checkpoint_key_label = c.xua.key_label.clone()),
                "used twice",
            ),
            (
                Box::new(|c| c.audit.checkpoint_every = 0),
                "audit.checkpoint_every",
            ),
            (
                Box::new(|c| c.audit.checkpoint_seconds = 7200),
                "audit.checkpoint_seconds",
            ),
        ];
        for (mutate, expect) in cases {
            let mut c = base.clone();
            mutate(&mut c);
            let err = c.validate(dir.path()).unwrap_err().to_string();
            assert!(err.contains(expect), "expected '{expect}' in '{err}'");
        }
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example parses and passes every check that does not need its vendor module.
    #[test]
    fn shipped_vendor_example_is_valid() {
        let mut c =
            Config::parse(include_str!("../../../hsm-config/vendor-hsm.example.toml")).unwrap();
        assert_eq!(
            c.ca.root.signature_algorithm().unwrap(),
            SignatureAlgorithm::RsaPkcs1Sha384
        );
        // Stand-in for the vendor library, which is not on this machine.
        c.hsm.module = "/usr/lib/softhsm/libsofthsm2.so".into();
        if std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so").exists() {
            c.validate(Path::new("/")).unwrap();
        }
    }
}
