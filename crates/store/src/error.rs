//! The one error type of the store.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
///
/// Messages name the store's path where one is involved, so an operator can act on them without
/// reading code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused an I/O operation on the store.
    #[error("I/O error on the store at {path}: {source}")]
    Io {
        /// Directory of the store.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Something read from disk does not decode. The store is not repaired automatically:
    /// restore it from a backup.
    #[error("the store at {path} is corrupt: {detail}; restore it from a backup")]
    Corrupt {
        /// Directory of the store.
        path: PathBuf,
        /// What was found where.
        detail: String,
    },

    /// The store was written by a newer version of the software.
    #[error(
        "the store at {path} has schema version {found}, but this build supports schema versions up to \
         {supported}; run a cps-trust release that supports schema {found} (or restore a backup made by \
         this one)"
    )]
    SchemaTooNew {
        /// Directory of the store.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },

    /// A write would break a uniqueness rule. Nothing of the batch was applied.
    #[error("conflict: {0}; nothing of the batch was written")]
    Conflict(String),

    /// A write refers to a record that does not exist. Nothing of the batch was applied.
    #[error("not found: {0}; nothing of the batch was written")]
    NotFound(String),

    /// Another process (or another handle in this process) has the store open.
    #[error(
        "the store at {path} is in use by another process (or already open in this one); stop the other \
         cps-trust instance first"
    )]
    Locked {
        /// Directory of the store.
        path: PathBuf,
    },

    /// The caller passed something the store cannot keep (empty identifier, oversized value...).
    /// Nothing of the batch was applied.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// An earlier flush to disk failed. After a failed `fsync` the kernel may have dropped the
    /// dirty pages, so the store refuses every further write rather than acknowledge writes it
    /// cannot vouch for.
    #[error(
        "the store at {path} refuses writes: an earlier flush to disk failed ({detail}); check the disk, \
         then restart the appliance"
    )]
    Poisoned {
        /// Directory of the store.
        path: PathBuf,
        /// The flush error.
        detail: String,
    },

    /// The store refuses writes for now (its disk is below the reserve the appliance keeps);
    /// nothing of the batch was written. The same batch may be committed once the cause is gone.
    #[error("the store refuses writes for now: {0}; nothing of the batch was written")]
    Refused(String),

    /// The database server accepts no writes: it is a standby (in recovery) or runs read-only.
    /// Nothing of the batch was written; the same batch may be committed once a primary is
    /// reachable again (after a failover, the store's connections go to the new primary by
    /// themselves).
    #[error(
        "the database refuses writes: {0}; nothing of the batch was written (is this a standby? \
         point the store's URL at the primary, or list every host with target_session_attrs=read-write)"
    )]
    ReadOnly(String),

    /// The database server cannot be reached (down, failing over, or every pooled connection is
    /// busy). Nothing was written, unless the connection broke while the batch was being
    /// committed, in which case the message says that its outcome is unknown.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),

    /// The storage engine reported an error that fits none of the other variants.
    #[error("storage engine error on the store at {path}: {detail}")]
    Backend {
        /// Directory of the store.
        path: PathBuf,
        /// The engine's message.
        detail: String,
    },
}
