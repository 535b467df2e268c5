//! IHE ATNA for cps-trust: audit messages out, audit records in.
//!
//! * **Messages**: [`AuditMessage`] is the DICOM PS3.15 A.5.1 model with its XML encoder;
//!   [`events`] builds the appliance's security events (code mapping documented there);
//!   [`parse_audit_xml`] reads other nodes' messages (DTDs refused, size and node limits);
//!   [`mapping`] gives each typed audit event of the appliance its DICOM message (one
//!   exhaustive `match`).
//! * **Syslog**: [`SyslogMessage`] formats and parses RFC 5424 (facility 10, severity 5/4,
//!   MSGID `IHE+RFC-3881`); [`FrameDecoder`] / [`encode_frame`] are the sans-IO RFC 5425
//!   octet-counting codec.
//! * **Sending**: [`Queue`] is a durable on-disk queue with one cursor per destination;
//!   [`Auditor`] formats and enqueues events; [`Sender`] delivers them over mutual TLS
//!   (a caller-built `rustls::ClientConfig`) to every repository, at least once.
//! * **Receiving**: [`Repository`] is the syslog-TLS listener (caller-built
//!   `rustls::ServerConfig` + [`NodeAuthorizer`] allowlist, limits, optional UDP input) appending
//!   to the [`AuditLog`]: hash-chained records, group-committed with `fdatasync`, signed
//!   checkpoints through a [`cps_hsm::Signer`], an in-memory index for [`AuditLog::search`].
//! * **Verification**: [`verify`] checks a log directory against the trusted checkpoint keys
//!   and the anchors kept elsewhere ([`VerifyOptions`]) and names the first problem: a bad
//!   record, a forged or missing checkpoint, an unsigned tail its last checkpoint does not allow.
#![warn(missing_docs)]

mod error;
pub mod events;
pub mod framing;
mod log;
pub mod mapping;
mod model;
mod parse;
mod queue;
mod repository;
mod sender;
pub mod syslog;
pub mod time_fmt;
mod wire;

pub use error::{FrameError, LogError, ModelError, QueueError, SyslogError, XmlError};
pub use framing::{FrameDecoder, MIN_MAX_FRAME, encode_frame};
pub use log::checkpoint::key_id;
pub use log::record::{
    GENESIS_HASH, NewRecord, NodeIdentity, Record, RecordSummary, SyslogHeader, Transport,
};
pub use log::verify::{
    Anchor, CheckpointFile, DEFAULT_GRACE, RecordProblem, TailProblem, TrustedKey, VerifyError,
    VerifyOptions, VerifyReport, checkpoint_key_ids, read_checkpoints, verify,
};
pub use log::{
    AuditLog, Checkpoint, CheckpointPolicy, CheckpointSink, LogOptions, SearchFilter, SearchPage,
};
pub use model::{
    ActiveParticipant, AuditMessage, AuditSource, CodedValue, EventAction, EventIdentification,
    EventOutcome, MAX_FIELD_LEN, NetworkAccessPointType, ObjectDetail, ObjectRole, ObjectType,
    ParticipantObject,
};
pub use parse::{Code, EventSummary, XmlLimits, parse_audit_xml};
pub use queue::{Auditor, Queue, QueueOptions, QueueReader};
pub use repository::{
    NodeAllowlist, NodeAuthorizer, Repository, RepositoryConfig, RepositoryStats,
};
pub use sender::{Destination, Sender, SenderOptions, SenderStatus};
pub use syslog::SyslogMessage;

/// Injected `fdatasync` failures, per file or directory (unit tests of the log and the queue).
#[cfg(test)]
pub(crate) mod faults {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FAIL_SYNCS: Mutex<BTreeMap<PathBuf, u32>> = Mutex::new(BTreeMap::new());

    /// The next `n` syncs of `path` fail with EIO.
    pub(crate) fn fail_next_syncs(path: &Path, n: u32) {
        FAIL_SYNCS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), n);
    }

    /// Whether this sync of `path` is to fail.
    pub(crate) fn take(path: &Path) -> bool {
        let mut m = FAIL_SYNCS.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}
