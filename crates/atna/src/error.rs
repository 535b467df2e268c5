//! Error types, one enum per concern.

use std::path::PathBuf;

/// An [`AuditMessage`](crate::AuditMessage) that cannot be written as schema-valid XML.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// The schema requires at least one `ActiveParticipant`.
    #[error("an audit message needs at least one ActiveParticipant")]
    NoParticipant,
    /// A field breaks a rule of the schema or a size limit.
    #[error("{field}: {reason}")]
    Invalid {
        /// The schema element or attribute.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why an audit message's XML could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlError {
    /// Larger than the parser's byte limit.
    #[error("XML of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not well-formed, a DTD, too many nodes, or not UTF-8.
    #[error("XML not accepted: {0}")]
    Syntax(String),
    /// The root element is not `AuditMessage`.
    #[error("root element is <{0}>, expected <AuditMessage>")]
    NotAuditMessage(String),
    /// A required element or attribute is missing or invalid.
    #[error("{0}")]
    Structure(String),
}

/// Why a syslog message is not RFC 5424.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("RFC 5424: {what} at byte {at}")]
pub struct SyslogError {
    /// Byte offset where the problem was found.
    pub at: usize,
    /// What was expected or found.
    pub what: String,
}

/// RFC 5425 framing errors. After one of these the stream cannot be re-synchronised: the
/// connection must be closed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// `MSG-LEN` is not `NONZERO-DIGIT *DIGIT` followed by a space.
    #[error("bad frame header at stream offset {offset}: {reason}")]
    BadHeader {
        /// Offset of the frame in the stream.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// `MSG-LEN` larger than the configured maximum.
    #[error("frame at stream offset {offset} announces {len} octets, more than the limit of {max}")]
    TooLong {
        /// Offset of the frame in the stream.
        offset: u64,
        /// Announced length (saturated).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame at offset {offset}: {have} of {need} octets")]
    Truncated {
        /// Offset of the frame in the stream.
        offset: u64,
        /// Bytes of the frame received (header included).
        have: usize,
        /// Bytes the frame needed (header included), when known.
        need: usize,
    },
}

/// Errors of the hash-chained log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log files are not in the expected format (see [`verify`](crate::verify) for details).
    #[error("log {path} is damaged at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Signing a checkpoint failed.
    #[error("checkpoint signing failed: {0}")]
    Signer(#[from] cps_hsm::HsmError),
    /// The writer stopped (shutdown); nothing more can be appended.
    #[error("the audit log writer has stopped: {0}")]
    Closed(String),
    /// This batch could not be made durable (a full disk, an I/O error): none of its records
    /// is in the log, and the log takes the next batch once the cause is gone.
    #[error("the audit records were not written: {0}")]
    NotWritten(String),
    /// A record field is larger than the format allows.
    #[error("record field {field} is {len} bytes, at most {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The requested record does not exist.
    #[error("no record with sequence number {0}")]
    NoSuchRecord(u64),
    /// A search cursor that this log did not produce.
    #[error("invalid search cursor")]
    BadCursor,
}

/// Errors of the durable outbound queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The queue cannot take entries until a failed write is cut back (the disk refuses even
    /// that for now); nothing of the batch was queued.
    #[error("the audit queue cannot write yet: {0}")]
    NotWritten(String),
    /// A queue file is damaged before its last entry (a torn last entry is repaired at open).
    #[error("queue file {path} is damaged at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry larger than the queue accepts.
    #[error("queue entry of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A destination name that is empty or not `[A-Za-z0-9_.-]`.
    #[error("invalid destination name {0:?}: use 1 to 64 of A-Z a-z 0-9 _ . -")]
    BadDestination(String),
    /// A destination that the queue was not opened with.
    #[error("unknown destination {0:?}")]
    UnknownDestination(String),
    /// The audit message could not be encoded.
    #[error(transparent)]
    Model(#[from] ModelError),
}
