//! The appliance's own audit trail, over `cps-atna` and the store.
//!
//! **Invariant: every audit record the appliance makes durable reaches the local hash-chained log
//! (and, when repositories are configured, the outgoing queue) as its DICOM message, at least
//! once and never skipped; a caller waiting on the trail is answered only once its record is
//! durable there.** Records committed to the store are followed from a persisted cursor
//! ([`trail::start`]); records of stateless events go straight in through an
//! [`trail::AuditWriter`].
//!
//! * [`trail`]: `Trail` (DICOM through [`cps_atna::mapping`], queue and log writes), the
//!   forwarder, `AuditWriter`, the repository and sender started from [`TrailSettings`];
//! * [`anchor`]: each checkpoint anchored in the store and sent to the destinations; the
//!   start-time check;
//! * [`cluster`]: several nodes over one store, each with its own log, cursor and anchors;
//! * [`verify`]: `audit verify`, checkpoint keys trusted by their chain to the root;
//! * [`nodes`]: the ATNA node allowlist; [`refusals`]: refusal tallies of unauthenticated peers.
//!
//! What belongs to the appliance (the HSM keys and their certificates, the CA service's clock
//! gate, the home's layout, the disk guard) comes in as signers, chains, paths and
//! [`trail::WriteGuard`].

pub mod anchor;
pub mod cluster;
pub mod nodes;
pub mod refusals;
pub mod settings;
pub mod trail;
pub mod verify;
pub mod wire;

pub use settings::{Destination, TrailSettings};

/// The certificate profile of the audit checkpoint key (`certs/audit-checkpoint.toml`).
pub const CHECKPOINT_PROFILE: &str = "audit-checkpoint";
/// Its extended key usage: a private purpose no other verifier accepts.
pub const CHECKPOINT_EKU: &str = "1.3.6.1.4.1.32473.3.1";
/// [`CHECKPOINT_EKU`] as DER content bytes.
pub const CHECKPOINT_EKU_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x81, 0xfd, 0x59, 0x03, 0x01];
/// In the log directory: every certificate that signed its checkpoints, each followed by its
/// issuing CA, so that a copy of the directory carries them (trust comes from the chain to the
/// root, not from this file).
pub const CHECKPOINT_CERTS: &str = "checkpoint-certs.pem";
