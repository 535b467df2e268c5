//! The trail's settings: the `[audit]` section of the appliance's configuration (the appliance
//! uses this type as that section, so its TOML form and its refusal of unknown keys are here).

use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// IHE ATNA: the audit record repository and the repositories audit messages go to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrailSettings {
    /// Run the syslog-TLS audit record repository on `listen.syslog_tls`.
    #[serde(default = "default_true")]
    pub repository: bool,
    /// Also accept RFC 5426 syslog over UDP on this address (no node authentication); off by
    /// default.
    #[serde(default)]
    pub udp: Option<String>,
    /// `AuditSourceID` of the appliance's own messages.
    #[serde(default = "default_source_id")]
    pub source_id: String,
    /// HSM label of the key that signs the log's checkpoints (created on first start, with its
    /// `audit-checkpoint` certificate).
    #[serde(default = "default_checkpoint_label")]
    pub checkpoint_key_label: String,
    /// Sign a checkpoint of the log after this many records at most.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ... and at most this many seconds after the last one while records arrive.
    #[serde(default = "default_checkpoint_seconds")]
    pub checkpoint_seconds: u32,
    /// HSM label of the appliance's own node key (its client certificate towards repositories).
    #[serde(default = "default_node_key_label")]
    pub node_key_label: String,
    /// Repositories every audit message is delivered to (syslog over mutual TLS).
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Every open syslog-TLS connection is authorized again at least this often, seconds (and
    /// at once whenever a certificate or the node registry changes).
    #[serde(default = "default_reauthorize_seconds")]
    pub reauthorize_seconds: u32,
    /// Refusals of unauthenticated peers (failed syslog-TLS handshakes, refused card logins)
    /// are written as one audit record per source and per this many seconds.
    #[serde(default = "default_refusal_summary_seconds")]
    pub refusal_summary_seconds: u32,
}

fn default_reauthorize_seconds() -> u32 {
    60
}
fn default_refusal_summary_seconds() -> u32 {
    60
}

/// One audit record repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// A name for its queue cursor (letters, digits, '-', '_').
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// The name its TLS certificate must carry.
    pub server_name: String,
}

fn default_source_id() -> String {
    "cps-trust".into()
}
fn default_checkpoint_label() -> String {
    "audit-checkpoint".into()
}
fn default_node_key_label() -> String {
    "audit-node".into()
}
fn default_checkpoint_every() -> u64 {
    1_000
}
fn default_checkpoint_seconds() -> u32 {
    10
}

impl Default for TrailSettings {
    fn default() -> Self {
        TrailSettings {
            repository: true,
            udp: None,
            source_id: default_source_id(),
            checkpoint_key_label: default_checkpoint_label(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_seconds: default_checkpoint_seconds(),
            node_key_label: default_node_key_label(),
            destinations: Vec::new(),
            reauthorize_seconds: default_reauthorize_seconds(),
            refusal_summary_seconds: default_refusal_summary_seconds(),
        }
    }
}
