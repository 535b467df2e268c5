//! The PostgreSQL backend: several appliance nodes on one database.
//!
//! # Tables
//!
//! | store table | SQL |
//! |---|---|
//! | `certificates` | `certificates`, primary key `(issuer, serial_len, serial)`: `serial` is the magnitude (no leading zero byte) and `serial_len` its length, so the key orders by issuer (`COLLATE "C"`, byte order) then by serial as an unsigned integer, exactly as sled's keys do; `serial_given` keeps the bytes as the caller gave them |
//! | `certificates_by_spki` | index `certificates_by_spki` on `certificates (spki_sha256)` |
//! | `revoked_certificates` | partial index `revoked_certificates` on `certificates (issuer, serial_len, serial) WHERE revoked_at IS NOT NULL` |
//! | `blocked_keys` | `blocked_keys (spki_sha256 PRIMARY KEY, reason, at)` |
//! | `counters` | `counters (name PRIMARY KEY, value numeric(20,0))`: the full `u64` range |
//! | `audit` | `audit (seq PRIMARY KEY, record bytea)` (the record's JSON, byte for byte as on sled) and `audit_head (last_seq)` |
//! | `meta` | `meta (key PRIMARY KEY, value bytea)` |
//! | `records` | `records (tbl, key bytea, value bytea, PRIMARY KEY (tbl, key))` |
//! | `claims` | `claims (tbl, key bytea, expires bigint, PRIMARY KEY (tbl, key))`, index on `expires` |
//! | — | `certificates_version (version bigint)`, bumped by every commit that inserts a certificate or changes its status |
//! | — | `schema_version (version integer)` |
//!
//! # Concurrency
//!
//! Every commit is one transaction at `READ COMMITTED`. Uniqueness and preconditions are decided
//! by single statements that lock the row they look at (`INSERT … ON CONFLICT DO NOTHING`,
//! `UPDATE … WHERE value = $expected`), so two nodes can never both win. Audit appends take the
//! row lock of `audit_head` (the last sequence number) and are applied at the end of the
//! transaction, so sequence numbers are 1, 2, 3… without gap or duplicate across nodes, and the
//! lock is held only from the append to the commit. Counters are one upsert statement
//! (`GREATEST(value + 1, min_next)`), under the counter row's lock. A serialization failure or a
//! deadlock is retried; so is a connection error before `COMMIT` was sent (nothing was written).
//! A connection that broke during `COMMIT` leaves the outcome unknown and is reported as such
//! ([`StoreError::Unavailable`]).
//!
//! # Durability
//!
//! A commit is acknowledged when PostgreSQL acknowledged its `COMMIT`, under the server's
//! `synchronous_commit`: with a synchronous standby (`synchronous_standby_names`,
//! `synchronous_commit = on` or `remote_apply`) that means on the standby's disk too.
//!
//! # Failover
//!
//! The URL may list several hosts with `target_session_attrs=read-write`: new connections go to
//! whichever accepts writes. A connection that fails is dropped from the pool rather than
//! returned to it, so after a primary dies and a standby is promoted the next commits connect to
//! the new primary, without a restart. While no host accepts writes, commits fail with
//! [`StoreError::Unavailable`] or [`StoreError::ReadOnly`] (a standby answered): the appliance
//! answers 503 (OCSP: `tryLater`).
//!
//! # `certificates_version` across nodes
//!
//! The version is the `certificates_version` row, bumped in the same transaction as the
//! certificate change, so it changes exactly when the change becomes visible. Reading it is
//! linearizable: a read returns a value read by a `SELECT` that *started after the read was
//! called*, so a reader that starts after any node's revocation commit returned sees the new
//! value. Concurrent readers share one such `SELECT` (group read): a caller waits for the query
//! in flight only if it started after the caller arrived, otherwise for the next one, which one
//! of the waiting callers runs for all of them. A cache therefore costs at most one round trip
//! per query in flight, whatever the number of callers. (LISTEN/NOTIFY is not used: a
//! notification arrives asynchronously, after the commit, and could not by itself make a read
//! linearizable.)
//!
//! # Runtime
//!
//! [`Store`] is synchronous and is called from plain threads and from tokio worker threads
//! alike. The store drives tokio-postgres on its own small runtime and blocks the caller on a
//! channel until the answer comes back, so it never needs (nor disturbs) the caller's runtime.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Timeouts,
};
use parking_lot::{Condvar, Mutex};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::error::StoreError;
use crate::keys;
use crate::model::{
    AuditEntry, AuditRecord, BlockedKey, CertCursor, CertStatus, CertificatePage,
    CertificateRecord, CommitReceipt, Expect, MAX_RECORD_KEY_LEN, RevokedEntry, WriteBatch,
    WriteOp,
};
use crate::sled_store::{Prepared, check_expect, prepare};
use crate::{RecordRow, Store};

/// Version of the SQL schema this build writes. A database with a higher version is refused.
pub const PG_SCHEMA_VERSION: u32 = 1;

/// Key of the advisory lock under which the schema is created or migrated.
const MIGRATION_LOCK: i64 = 0x6370_735f_7374_6f72; // "cps_stor"

/// How many times a transaction is tried when the server asks for a retry (serialization
/// failure, deadlock) or the connection failed before `COMMIT` was sent.
const ATTEMPTS: u32 = 4;

/// At most this many expired claims are deleted by one purge.
const PURGE_BATCH: i64 = 1000;
/// A purge runs on every this many-th call of `claim`.
const PURGE_EVERY: u64 = 64;

/// The schema, version 1.
const SCHEMA_V1: &str = r#"
CREATE TABLE certificates (
    issuer text COLLATE "C" NOT NULL,
    serial_len smallint NOT NULL CHECK (serial_len BETWEEN 1 AND 64),
    serial bytea NOT NULL CHECK (octet_length(serial) = serial_len AND get_byte(serial, 0) <> 0),
    serial_given bytea NOT NULL,
    spki_sha256 bytea NOT NULL CHECK (octet_length(spki_sha256) = 32),
    subject text NOT NULL,
    profile text NOT NULL,
    holder text,
    not_before bigint NOT NULL,
    not_after bigint NOT NULL,
    der bytea NOT NULL,
    issued_at bigint NOT NULL,
    revoked_at bigint,
    reason smallint CHECK (reason BETWEEN 0 AND 255),
    invalidity_date bigint,
    CHECK ((revoked_at IS NULL) = (reason IS NULL)),
    PRIMARY KEY (issuer, serial_len, serial)
);
CREATE INDEX certificates_by_spki ON certificates (spki_sha256);
CREATE INDEX revoked_certificates ON certificates (issuer, serial_len, serial)
    WHERE revoked_at IS NOT NULL;
CREATE TABLE blocked_keys (
    spki_sha256 bytea PRIMARY KEY CHECK (octet_length(spki_sha256) = 32),
    reason text NOT NULL,
    at bigint NOT NULL
);
CREATE TABLE counters (
    name text COLLATE "C" PRIMARY KEY,
    value numeric(20, 0) NOT NULL CHECK (value >= 0 AND value <= 18446744073709551615)
);
CREATE TABLE audit_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO audit_head (last_seq) VALUES (0);
CREATE TABLE audit (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    record bytea NOT NULL
);
CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE records (
    tbl text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE TABLE claims (
    tbl text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE INDEX claims_by_expiry ON claims (expires);
CREATE TABLE certificates_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO certificates_version (version) VALUES (0);
"#;

const CERT_COLUMNS: &str = "issuer, serial_given, subject, profile, holder, spki_sha256, \
     not_before, not_after, der, issued_at, revoked_at, reason, invalidity_date";

/// Connection settings of a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Largest number of connections the store keeps open.
    pub pool_size: usize,
    /// How long a caller waits for a free connection (or a new one) before
    /// [`StoreError::Unavailable`].
    pub wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            wait: Duration::from_secs(10),
        }
    }
}

/// The store on PostgreSQL. See the module docs.
pub struct PgStore {
    /// `Some` until dropped (the runtime is shut down in the background on drop, which is
    /// allowed even from inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// The URL without credentials, for messages.
    name: Arc<str>,
    standby_at_open: bool,
    version_reads: GroupRead,
    claim_calls: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The URL with any password removed, for messages.
fn redact(url: &str) -> String {
    // postgresql://user:password@host... → postgresql://user@host...
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{}://{user}@{}", &url[..scheme_end], &rest[at + 1..]);
        }
        return url.to_string();
    }
    // key=value form: drop password=...
    url.split_whitespace()
        .filter(|kv| !kv.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a transaction failed.
enum TxError {
    /// A decided outcome (Conflict, NotFound, Invalid...): the transaction was rolled back.
    Store(StoreError),
    /// The server or the connection failed; `committing` when it happened during `COMMIT`.
    Pg {
        err: tokio_postgres::Error,
        committing: bool,
    },
}

impl From<tokio_postgres::Error> for TxError {
    fn from(err: tokio_postgres::Error) -> Self {
        TxError::Pg {
            err,
            committing: false,
        }
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

/// Whether the connection that returned `err` is unusable (it must not go back to the pool).
fn connection_broken(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true,
        Some(c) => {
            c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        }
    }
}

/// Whether a transaction that failed with `err` (before `COMMIT`) may simply be run again.
fn retryable(err: &tokio_postgres::Error) -> bool {
    connection_broken(err)
        || err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

fn describe_pg(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = err.to_string();
            let mut src = std::error::Error::source(err);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (a libpq URL or key=value string; several hosts and
    /// `target_session_attrs=read-write` are supported), creates or migrates the schema when the
    /// server accepts writes, and refuses a schema newer than this build's
    /// ([`StoreError::SchemaTooNew`]). Against a standby it opens for reading if the schema is
    /// there ([`PgStore::opened_on_standby`]).
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let name: Arc<str> = redact(url).into();
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!("the database URL {name} does not parse: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("cps-trust");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cps-store-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend {
                path: PathBuf::from(&*name),
                detail: format!("cannot start the store's runtime: {e}"),
            })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.wait),
                create: Some(options.wait),
                recycle: Some(options.wait),
            })
            .build()
            .map_err(|e| StoreError::Invalid(format!("database pool for {name}: {e}")))?;
        let mut store = PgStore {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            name,
            standby_at_open: false,
            version_reads: GroupRead::default(),
            claim_calls: AtomicU64::new(0),
        };
        let standby = store.run(|pool, name| async move { migrate(&pool, &name).await })?;
        store.standby_at_open = standby;
        Ok(store)
    }

    /// Whether the server was a standby (read-only) when the store was opened: reads work,
    /// commits fail with [`StoreError::ReadOnly`] until a primary is reachable.
    pub fn opened_on_standby(&self) -> bool {
        self.standby_at_open
    }

    /// Whether the server the store's connections go to accepts writes right now.
    pub fn accepts_writes(&self) -> Result<bool, StoreError> {
        self.run(|pool, name| async move {
            let client = get(&pool, &name).await?;
            let row = client
                .query_one(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                    &[],
                )
                .await
                .map_err(|e| read_error(&name, client, e))?;
            Ok(row.get::<_, bool>(0))
        })
    }

    /// The URL of the database, without credentials.
    pub fn database(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the store's runtime and blocks until it is done.
    fn run<T, F>(&self, f: impl FnOnce(Pool, Arc<str>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone(), self.name.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            StoreError::Unavailable(format!(
                "the store's connection runtime for {} stopped",
                self.name
            ))
        })?
    }

    /// A read, tried again once on a fresh connection if the pooled one turns out broken (the
    /// first use after a failover).
    fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, (Object, tokio_postgres::Error)>> + Send,
    {
        self.run(move |pool, name| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = get(&pool, &name).await?;
                match f(client).await {
                    Ok(v) => return Ok(v),
                    Err((client, e)) => {
                        let again = connection_broken(&e) && attempt < 2;
                        let err = read_error(&name, client, e);
                        if !again {
                            return Err(err);
                        }
                    }
                }
            }
        })
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: PathBuf::from(&*self.name),
            detail,
        }
    }

    fn query_version(&self) -> Result<u64, StoreError> {
        // A cached prepared statement: one round trip per read (a query by text is a parse
        // round trip and an execute round trip, and a parse and plan in the server, each time).
        let v: i64 = self.read(|c| async move {
            let stmt = match c
                .prepare_cached("SELECT version FROM certificates_version")
                .await
            {
                Ok(stmt) => stmt,
                Err(e) => return Err((c, e)),
            };
            match c.query_one(&stmt, &[]).await {
                Ok(row) => Ok(row.get(0)),
                Err(e) => Err((c, e)),
            }
        })?;
        Ok(v as u64)
    }

    fn claim_inner(
        &self,
        table: &str,
        claims: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        keys::check_name("table name", table)?;
        for (key, expires) in claims {
            if key.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "a claim of table {table:?} has an empty key"
                )));
            }
            if key.len() > MAX_RECORD_KEY_LEN {
                return Err(StoreError::Invalid(format!(
                    "key of table {table:?} is {} bytes long; the limit is {MAX_RECORD_KEY_LEN}",
                    key.len()
                )));
            }
            if *expires <= now {
                return Err(StoreError::Invalid(format!(
                    "a claim of table {table:?} expires at {expires}, not after now ({now})"
                )));
            }
        }
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // One row per distinct key (an upsert may not touch a row twice); a repeated key is
        // `true` at most once, for its first occurrence.
        let mut first = std::collections::HashMap::new();
        let mut unique_keys: Vec<Vec<u8>> = Vec::new();
        let mut unique_expiries: Vec<i64> = Vec::new();
        for (i, (key, expires)) in claims.iter().enumerate() {
            first.entry(key.clone()).or_insert_with(|| {
                unique_keys.push(key.clone());
                unique_expiries.push(*expires);
                i
            });
        }
        let purge = self
            .claim_calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PURGE_EVERY);
        let table = table.to_string();
        let won: std::collections::HashSet<Vec<u8>> = self.run(move |pool, name| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = get(&pool, &name).await?;
                let result = async {
                    if purge {
                        client
                            .execute(
                                "DELETE FROM claims WHERE ctid IN \
                                 (SELECT ctid FROM claims WHERE expires <= $1 LIMIT $2)",
                                &[&now, &PURGE_BATCH],
                            )
                            .await?;
                    }
                    let stmt = client
                        .prepare_cached(
                            "INSERT INTO claims (tbl, key, expires) \
                             SELECT $1, k, e FROM unnest($2::bytea[], $3::int8[]) AS t(k, e) \
                             ON CONFLICT (tbl, key) DO UPDATE SET expires = EXCLUDED.expires \
                             WHERE claims.expires <= $4 \
                             RETURNING key",
                        )
                        .await?;
                    client
                        .query(&stmt, &[&table, &unique_keys, &unique_expiries, &now])
                        .await
                }
                .await;
                match result {
                    Ok(rows) => {
                        return Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect());
                    }
                    Err(e) => {
                        // A statement is its own transaction: a broken connection before the
                        // answer leaves the claims possibly recorded, and trying again would
                        // then answer `false` for keys this call recorded. Only a retry the
                        // server asked for is safe.
                        let again = (e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                            || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
                            && attempt < ATTEMPTS;
                        let err = write_error(&name, client, e, true);
                        if !again {
                            return Err(err);
                        }
                    }
                }
            }
        })?;
        Ok(claims
            .iter()
            .enumerate()
            .map(|(i, (key, _))| first.get(key) == Some(&i) && won.contains(key))
            .collect())
    }
}

/// A pooled connection.
async fn get(pool: &Pool, name: &str) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| pool_error(name, e))
}

fn pool_error(name: &str, e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(name, &e, false),
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no connection to {name} within the pool's wait time (server down, failing over, or \
             every connection busy)"
        )),
        other => StoreError::Unavailable(format!("connection to {name}: {other}")),
    }
}

/// Maps a server or connection error; `committing` when it happened during `COMMIT` (or a
/// statement that commits by itself).
fn pg_error(name: &str, e: &tokio_postgres::Error, committing: bool) -> StoreError {
    let detail = describe_pg(e);
    match e.code() {
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
            StoreError::ReadOnly(format!("{name}: {detail}"))
        }
        _ if connection_broken(e) => {
            if committing {
                StoreError::Unavailable(format!(
                    "{name}: {detail}; the connection broke while the batch was being committed, so \
                     whether it was written is unknown"
                ))
            } else {
                StoreError::Unavailable(format!("{name}: {detail}; nothing was written"))
            }
        }
        _ => StoreError::Backend {
            path: PathBuf::from(name),
            detail,
        },
    }
}

/// Maps the error of a read and drops a broken connection rather than pooling it again.
fn read_error(name: &str, client: Object, e: tokio_postgres::Error) -> StoreError {
    if connection_broken(&e) {
        drop(Object::take(client));
    }
    pg_error(name, &e, false)
}

fn write_error(
    name: &str,
    client: Object,
    e: tokio_postgres::Error,
    committing: bool,
) -> StoreError {
    if connection_broken(&e) {
        drop(Object::take(client));
    }
    pg_error(name, &e, committing)
}

/// Creates or checks the schema. Returns whether the server is a standby.
async fn migrate(pool: &Pool, name: &str) -> Result<bool, StoreError> {
    let mut client = get(pool, name).await?;
    let err = |e: tokio_postgres::Error| pg_error(name, &e, false);
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('server_encoding'), \
             to_regclass('schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(err)?;
    let (standby, encoding, has_schema): (bool, String, bool) =
        (row.get(0), row.get(1), row.get(2));
    if encoding != "UTF8" {
        return Err(StoreError::Invalid(format!(
            "the database {name} has encoding {encoding}; cps-trust needs a UTF8 database \
             (CREATE DATABASE … ENCODING 'UTF8')"
        )));
    }
    let too_new = |found: u32| StoreError::SchemaTooNew {
        path: PathBuf::from(name),
        found,
        supported: PG_SCHEMA_VERSION,
    };
    let read_version = |row: Option<tokio_postgres::Row>| -> Result<Option<u32>, StoreError> {
        match row {
            None => Ok(None),
            Some(r) => {
                let v: i32 = r.get(0);
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .map(Some)
                    .ok_or_else(|| StoreError::Corrupt {
                        path: PathBuf::from(name),
                        detail: format!("the schema version is {v}, which no release wrote"),
                    })
            }
        }
    };
    if standby {
        if !has_schema {
            return Err(StoreError::ReadOnly(format!(
                "{name} is a standby and holds no cps-trust schema yet; initialise the store on the \
                 primary"
            )));
        }
        let found = read_version(
            client
                .query_opt("SELECT version FROM schema_version", &[])
                .await
                .map_err(err)?,
        )?;
        return match found {
            Some(v) if v > PG_SCHEMA_VERSION => Err(too_new(v)),
            Some(v) if v == PG_SCHEMA_VERSION => Ok(true),
            _ => Err(StoreError::ReadOnly(format!(
                "{name} is a standby and its schema needs a migration; open the store on the \
                 primary first"
            ))),
        };
    }
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version integer NOT NULL
        )",
    )
    .await
    .map_err(err)?;
    let found = read_version(
        tx.query_opt("SELECT version FROM schema_version", &[])
            .await
            .map_err(err)?,
    )?;
    match found {
        Some(v) if v > PG_SCHEMA_VERSION => return Err(too_new(v)),
        Some(_) => {} // Older versions would be migrated here; there are none yet.
        None => {
            tx.batch_execute(SCHEMA_V1).await.map_err(err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(PG_SCHEMA_VERSION as i32)],
            )
            .await
            .map_err(err)?;
        }
    }
    tx.commit().await.map_err(|e| pg_error(name, &e, true))?;
    Ok(false)
}

/// One operation with what the shared validation produced for it.
struct Op {
    op: WriteOp,
    prepared: Prepared,
}

fn status_columns(status: &CertStatus) -> (Option<i64>, Option<i16>, Option<i64>) {
    match status {
        CertStatus::Valid => (None, None, None),
        CertStatus::Revoked {
            time,
            reason,
            invalidity_date,
        } => (Some(*time), Some(i16::from(*reason)), *invalidity_date),
    }
}

/// Runs the batch in one transaction on `client`.
async fn apply(client: &mut Object, ops: &[Op]) -> Result<CommitReceipt, TxError> {
    let tx = client.transaction().await?;
    let mut receipt = CommitReceipt::default();
    let mut cert_changed = false;
    let mut audits: Vec<&[u8]> = Vec::new();
    for Op { op, prepared } in ops {
        match (op, prepared) {
            (WriteOp::InsertCertificate(rec), Prepared::InsertCertificate { what, .. }) => {
                let magnitude = keys::serial_magnitude(&rec.serial)?;
                let (revoked_at, reason, invalidity) = status_columns(&rec.status);
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO certificates (issuer, serial_len, serial, serial_given, \
                         spki_sha256, subject, profile, holder, not_before, not_after, der, \
                         issued_at, revoked_at, reason, invalidity_date) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                let n = tx
                    .execute(
                        &stmt,
                        &[
                            &rec.issuer,
                            &(magnitude.len() as i16),
                            &magnitude,
                            &rec.serial,
                            &&rec.spki_sha256[..],
                            &rec.subject,
                            &rec.profile,
                            &rec.holder,
                            &rec.not_before,
                            &rec.not_after,
                            &rec.der,
                            &rec.issued_at,
                            &revoked_at,
                            &reason,
                            &invalidity,
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("{what} already exists")).into());
                }
                cert_changed = true;
            }
            (
                WriteOp::SetCertificateStatus {
                    issuer,
                    serial,
                    status,
                },
                Prepared::SetCertificateStatus { what, .. },
            ) => {
                let magnitude = keys::serial_magnitude(serial)?;
                let (revoked_at, reason, invalidity) = status_columns(status);
                let stmt = tx
                    .prepare_cached(
                        "UPDATE certificates SET revoked_at = $4, reason = $5, invalidity_date = $6 \
                         WHERE issuer = $1 AND serial_len = $2 AND serial = $3",
                    )
                    .await?;
                let n = tx
                    .execute(
                        &stmt,
                        &[
                            issuer,
                            &(magnitude.len() as i16),
                            &magnitude,
                            &revoked_at,
                            &reason,
                            &invalidity,
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::NotFound(what.clone()).into());
                }
                cert_changed = true;
            }
            (
                WriteOp::BlockKey {
                    spki_sha256,
                    reason,
                    at,
                },
                _,
            ) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO blocked_keys (spki_sha256, reason, at) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&&spki_sha256[..], reason, at]).await?;
            }
            (WriteOp::BumpCounter { name, min_next }, _) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO counters (name, value) VALUES ($1, GREATEST(1, $2::text::numeric)) \
                         ON CONFLICT (name) DO UPDATE \
                         SET value = GREATEST(counters.value + 1, $2::text::numeric) \
                         RETURNING value::text",
                    )
                    .await?;
                let floor = min_next.unwrap_or(0).to_string();
                let row = match tx.query_one(&stmt, &[name, &floor]).await {
                    Ok(row) => row,
                    Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                        return Err(
                            StoreError::Invalid(format!("counter {name:?} is exhausted")).into(),
                        );
                    }
                    Err(e) => return Err(e.into()),
                };
                let text: String = row.get(0);
                let value = text.parse::<u64>().map_err(|_| {
                    TxError::Store(StoreError::Backend {
                        path: PathBuf::new(),
                        detail: format!("counter {name:?} holds {text:?}, not a u64"),
                    })
                })?;
                receipt.counter_values.push(value);
            }
            (WriteOp::AppendAudit(_), Prepared::AppendAudit { value }) => {
                audits.push(value);
            }
            (WriteOp::PutMeta { key, value }, _) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await?;
                tx.execute(&stmt, &[key, value]).await?;
            }
            (
                WriteOp::PutRecord {
                    table,
                    key,
                    value,
                    expect,
                },
                Prepared::PutRecord { what, .. },
            ) => put_record(&tx, table, key, value, expect, what).await?,
            (WriteOp::DeleteRecord { table, key, expect }, Prepared::DeleteRecord { what, .. }) => {
                delete_record(&tx, table, key, expect, what).await?
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "write operation {op:?} is not supported by the PostgreSQL store"
                ))
                .into());
            }
        }
    }
    // The serialising parts last, so their row locks are held for as short as possible.
    if !audits.is_empty() {
        let stmt = tx
            .prepare_cached("UPDATE audit_head SET last_seq = last_seq + $1 RETURNING last_seq")
            .await?;
        let last: i64 = tx.query_one(&stmt, &[&(audits.len() as i64)]).await?.get(0);
        let first = last - audits.len() as i64 + 1;
        let seqs: Vec<i64> = (first..=last).collect();
        let records: Vec<&[u8]> = audits;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO audit (seq, record) SELECT * FROM unnest($1::int8[], $2::bytea[])",
            )
            .await?;
        tx.execute(&stmt, &[&seqs, &records]).await?;
        receipt.audit_seqs = seqs.into_iter().map(|s| s as u64).collect();
    }
    if cert_changed {
        let stmt = tx
            .prepare_cached("UPDATE certificates_version SET version = version + 1")
            .await?;
        tx.execute(&stmt, &[]).await?;
    }
    tx.commit().await.map_err(|err| TxError::Pg {
        err,
        committing: true,
    })?;
    Ok(receipt)
}

async fn put_record(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    key: &[u8],
    value: &[u8],
    expect: &Expect,
    what: &str,
) -> Result<(), TxError> {
    let n = match expect {
        Expect::Any => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO records (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await?;
            tx.execute(&stmt, &[&table, &key, &value]).await?;
            return Ok(());
        }
        Expect::Absent => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO records (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&stmt, &[&table, &key, &value]).await?
        }
        Expect::Present => {
            let stmt = tx
                .prepare_cached("UPDATE records SET value = $3 WHERE tbl = $1 AND key = $2")
                .await?;
            tx.execute(&stmt, &[&table, &key, &value]).await?
        }
        Expect::Value(want) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE records SET value = $3 WHERE tbl = $1 AND key = $2 AND value = $4",
                )
                .await?;
            tx.execute(&stmt, &[&table, &key, &value, want]).await?
        }
    };
    if n == 1 {
        return Ok(());
    }
    Err(expect_failed(tx, table, key, expect, what).await)
}

async fn delete_record(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    key: &[u8],
    expect: &Expect,
    what: &str,
) -> Result<(), TxError> {
    let n = match expect {
        Expect::Any => {
            let stmt = tx
                .prepare_cached("DELETE FROM records WHERE tbl = $1 AND key = $2")
                .await?;
            tx.execute(&stmt, &[&table, &key]).await?;
            return Ok(());
        }
        Expect::Absent => {
            // Nothing to delete if it holds; lock the key's row if it exists to decide.
            let stmt = tx
                .prepare_cached("SELECT 1 FROM records WHERE tbl = $1 AND key = $2 FOR UPDATE")
                .await?;
            let found = tx.query_opt(&stmt, &[&table, &key]).await?;
            if found.is_none() {
                return Ok(());
            }
            0
        }
        Expect::Present => {
            let stmt = tx
                .prepare_cached("DELETE FROM records WHERE tbl = $1 AND key = $2")
                .await?;
            tx.execute(&stmt, &[&table, &key]).await?
        }
        Expect::Value(want) => {
            let stmt = tx
                .prepare_cached("DELETE FROM records WHERE tbl = $1 AND key = $2 AND value = $3")
                .await?;
            tx.execute(&stmt, &[&table, &key, want]).await?
        }
    };
    if n == 1 {
        return Ok(());
    }
    Err(expect_failed(tx, table, key, expect, what).await)
}

/// The Conflict for a failed precondition, worded from the record's current state.
async fn expect_failed(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    key: &[u8],
    expect: &Expect,
    what: &str,
) -> TxError {
    let current = match tx
        .query_opt(
            "SELECT value FROM records WHERE tbl = $1 AND key = $2",
            &[&table, &key],
        )
        .await
    {
        Ok(row) => row.map(|r| r.get::<_, Vec<u8>>(0)),
        Err(e) => return e.into(),
    };
    match check_expect(expect, current.as_deref(), what) {
        Err(e) => TxError::Store(e),
        // It holds now (changed between the statements): still a concurrent change.
        Ok(()) => TxError::Store(StoreError::Conflict(format!(
            "{what} was changed concurrently"
        ))),
    }
}

fn certificate_from_row(row: &tokio_postgres::Row) -> Result<CertificateRecord, String> {
    let spki: Vec<u8> = row.get(5);
    let spki_sha256: [u8; 32] = spki
        .try_into()
        .map_err(|v: Vec<u8>| format!("spki_sha256 is {} bytes", v.len()))?;
    let revoked_at: Option<i64> = row.get(10);
    let reason: Option<i16> = row.get(11);
    let status = match (revoked_at, reason) {
        (None, _) => CertStatus::Valid,
        (Some(time), Some(reason)) => CertStatus::Revoked {
            time,
            reason: u8::try_from(reason).map_err(|_| format!("reason {reason} out of range"))?,
            invalidity_date: row.get(12),
        },
        (Some(_), None) => return Err("revoked without a reason".into()),
    };
    Ok(CertificateRecord {
        issuer: row.get(0),
        serial: row.get(1),
        subject: row.get(2),
        profile: row.get(3),
        holder: row.get(4),
        spki_sha256,
        not_before: row.get(6),
        not_after: row.get(7),
        der: row.get(8),
        issued_at: row.get(9),
        status,
    })
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Clamps a caller's limit for SQL.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError> {
        if batch.is_empty() {
            return Ok(CommitReceipt::default());
        }
        // The same checks (names, sizes, serials) as on sled, before anything is sent.
        let ops = batch
            .into_ops()
            .into_iter()
            .map(|op| {
                prepare(op.clone()).map(|prepared| Op {
                    op: op.clone(),
                    prepared,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ops = Arc::new(ops);
        self.run(move |pool, name| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut client = get(&pool, &name).await?;
                match apply(&mut client, &ops).await {
                    Ok(receipt) => return Ok(receipt),
                    Err(TxError::Store(e)) => return Err(e),
                    Err(TxError::Pg { err, committing }) => {
                        let again = !committing && retryable(&err) && attempt < ATTEMPTS;
                        let mapped = write_error(&name, client, err, committing);
                        if !again {
                            return Err(mapped);
                        }
                        tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    }
                }
            }
        })
    }

    fn get_certificate(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        keys::check_name("certificate issuer", issuer)?;
        let magnitude = keys::serial_magnitude(serial)?.to_vec();
        let issuer = issuer.to_string();
        let row = self.read(move |c| {
            let issuer = issuer.clone();
            let magnitude = magnitude.clone();
            async move {
                let sql = format!(
                    "SELECT {CERT_COLUMNS} FROM certificates \
                     WHERE issuer = $1 AND serial_len = $2 AND serial = $3"
                );
                let r = match c.prepare_cached(&sql).await {
                    Ok(stmt) => {
                        c.query_opt(&stmt, &[&issuer, &(magnitude.len() as i16), &magnitude])
                            .await
                    }
                    Err(e) => Err(e),
                };
                r.map_err(|e| (c, e))
            }
        })?;
        row.map(|r| certificate_from_row(&r).map_err(|d| self.corrupt(d)))
            .transpose()
    }

    fn write_failure(&self) -> Option<String> {
        None
    }

    fn certificates_version(&self) -> Option<u64> {
        self.version_reads.read(|| self.query_version().ok())
    }

    fn certificates_by_spki(
        &self,
        spki_sha256: &[u8; 32],
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let spki = spki_sha256.to_vec();
        let rows = self.read(move |c| {
            let spki = spki.clone();
            async move {
                let sql = format!(
                    "SELECT {CERT_COLUMNS} FROM certificates WHERE spki_sha256 = $1 \
                     ORDER BY issuer, serial_len, serial"
                );
                c.query(&sql, &[&spki]).await.map_err(|e| (c, e))
            }
        })?;
        rows.iter()
            .map(|r| certificate_from_row(r).map_err(|d| self.corrupt(d)))
            .collect()
    }

    fn list_certificates(
        &self,
        issuer: Option<&str>,
        after: Option<&CertCursor>,
        limit: usize,
    ) -> Result<CertificatePage, StoreError> {
        if limit == 0 {
            return Err(StoreError::Invalid(
                "a page must hold at least one certificate".into(),
            ));
        }
        if let Some(i) = issuer {
            keys::check_name("certificate issuer", i)?;
        }
        let cursor = match after {
            Some(c) => {
                keys::check_name("certificate issuer", &c.issuer)?;
                let m = keys::serial_magnitude(&c.serial)?;
                Some((c.issuer.clone(), m.len() as i16, m.to_vec()))
            }
            None => None,
        };
        let issuer = issuer.map(str::to_string);
        let fetch = sql_limit(limit).saturating_add(1);
        let rows = self.read(move |c| {
            let issuer = issuer.clone();
            let cursor = cursor.clone();
            async move {
                let (ci, cl, cs) = match &cursor {
                    Some((i, l, s)) => (Some(i.clone()), Some(*l), Some(s.clone())),
                    None => (None, None, None),
                };
                let sql = format!(
                    "SELECT {CERT_COLUMNS} FROM certificates \
                     WHERE ($1::text IS NULL OR issuer = $1) \
                       AND ($2::text IS NULL OR (issuer, serial_len, serial) > ($2, $3::int2, $4::bytea)) \
                     ORDER BY issuer, serial_len, serial LIMIT $5"
                );
                c.query(&sql, &[&issuer, &ci, &cl, &cs, &fetch])
                    .await
                    .map_err(|e| (c, e))
            }
        })?;
        let more = rows.len() > limit;
        let certificates = rows
            .iter()
            .take(limit)
            .map(|r| certificate_from_row(r).map_err(|d| self.corrupt(d)))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match certificates.last() {
            Some(last) if more => Some(CertCursor {
                issuer: last.issuer.clone(),
                serial: last.serial.clone(),
            }),
            _ => None,
        };
        Ok(CertificatePage { certificates, next })
    }

    fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        keys::check_name("certificate issuer", issuer)?;
        let issuer = issuer.to_string();
        let rows = self.read(move |c| {
            let issuer = issuer.clone();
            async move {
                c.query(
                    "SELECT serial_given, revoked_at, reason, invalidity_date, not_after \
                     FROM certificates WHERE issuer = $1 AND revoked_at IS NOT NULL \
                     ORDER BY serial_len, serial",
                    &[&issuer],
                )
                .await
                .map_err(|e| (c, e))
            }
        })?;
        rows.iter()
            .map(|r| {
                let reason: i16 = r.get(2);
                Ok(RevokedEntry {
                    serial: r.get(0),
                    time: r.get(1),
                    reason: u8::try_from(reason).map_err(|_| {
                        self.corrupt(format!("a revocation reason is {reason}, out of range"))
                    })?,
                    invalidity_date: r.get(3),
                    not_after: r.get(4),
                })
            })
            .collect()
    }

    fn blocked_key(&self, spki_sha256: &[u8; 32]) -> Result<Option<BlockedKey>, StoreError> {
        let spki = spki_sha256.to_vec();
        let row = self.read(move |c| {
            let spki = spki.clone();
            async move {
                c.query_opt(
                    "SELECT reason, at FROM blocked_keys WHERE spki_sha256 = $1",
                    &[&spki],
                )
                .await
                .map_err(|e| (c, e))
            }
        })?;
        Ok(row.map(|r| BlockedKey {
            reason: r.get(0),
            at: r.get(1),
        }))
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        keys::check_name("counter name", name)?;
        let counter = name.to_string();
        let row = self.read(move |c| {
            let counter = counter.clone();
            async move {
                c.query_opt(
                    "SELECT value::text FROM counters WHERE name = $1",
                    &[&counter],
                )
                .await
                .map_err(|e| (c, e))
            }
        })?;
        match row {
            None => Ok(0),
            Some(r) => {
                let text: String = r.get(0);
                text.parse()
                    .map_err(|_| self.corrupt(format!("counter {name:?} holds {text:?}")))
            }
        }
    }

    fn audit_range(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Ok(from) = i64::try_from(from_seq.max(1)) else {
            return Ok(Vec::new());
        };
        let limit = sql_limit(limit);
        let rows = self.read(move |c| async move {
            c.query(
                "SELECT seq, record FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &limit],
            )
            .await
            .map_err(|e| (c, e))
        })?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let bytes: Vec<u8> = r.get(1);
                let record: AuditRecord = serde_json::from_slice(&bytes).map_err(|e| {
                    self.corrupt(format!("audit record {seq} does not decode: {e}"))
                })?;
                Ok(AuditEntry {
                    seq: seq as u64,
                    record,
                })
            })
            .collect()
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        let last: i64 = self.read(|c| async move {
            match c.query_one("SELECT last_seq FROM audit_head", &[]).await {
                Ok(r) => Ok(r.get(0)),
                Err(e) => Err((c, e)),
            }
        })?;
        Ok(last as u64)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        keys::check_name("meta key", key)?;
        let key = key.to_string();
        let row = self.read(move |c| {
            let key = key.clone();
            async move {
                c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                    .await
                    .map_err(|e| (c, e))
            }
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn get_record(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        keys::record_key(table, key)?;
        let (table, key) = (table.to_string(), key.to_vec());
        let row = self.read(move |c| {
            let (table, key) = (table.clone(), key.clone());
            async move {
                let r = match c
                    .prepare_cached("SELECT value FROM records WHERE tbl = $1 AND key = $2")
                    .await
                {
                    Ok(stmt) => c.query_opt(&stmt, &[&table, &key]).await,
                    Err(e) => Err(e),
                };
                r.map_err(|e| (c, e))
            }
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn scan_records(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        keys::record_key(table, prefix)?;
        if let Some(a) = after {
            keys::record_key(table, a)?;
        }
        let table = table.to_string();
        let start = prefix.to_vec();
        let end = prefix_end(prefix);
        let after = after.map(<[u8]>::to_vec);
        let limit = sql_limit(limit.max(1));
        let rows = self.read(move |c| {
            let (table, start, end, after) =
                (table.clone(), start.clone(), end.clone(), after.clone());
            async move {
                let params: [&(dyn ToSql + Sync); 5] = [&table, &start, &end, &after, &limit];
                c.query(
                    "SELECT key, value FROM records WHERE tbl = $1 AND key >= $2 \
                     AND ($3::bytea IS NULL OR key < $3) AND ($4::bytea IS NULL OR key > $4) \
                     ORDER BY key LIMIT $5",
                    &params,
                )
                .await
                .map_err(|e| (c, e))
            }
        })?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn claim(
        &self,
        table: &str,
        keys: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.claim_inner(table, keys, now)
    }
}

/// Coalesces concurrent reads of one value onto one query that started after each of them
/// called (see the module docs).
#[derive(Default)]
struct GroupRead {
    state: Mutex<GroupState>,
    done: Condvar,
}

#[derive(Default)]
struct GroupState {
    /// Number of queries started so far; the query started n-th has number n.
    started: u64,
    /// Number of the last query that finished, and its answer.
    finished: u64,
    answer: Option<u64>,
    running: bool,
}

impl GroupRead {
    fn read(&self, query: impl FnOnce() -> Option<u64>) -> Option<u64> {
        let mut s = self.state.lock();
        // Any query numbered `need` or later starts after this call.
        let need = s.started + 1;
        loop {
            if s.finished >= need {
                return s.answer;
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let mine = s.started;
                drop(s);
                // Should the query panic, the next caller leads a new one instead of every
                // caller waiting for ever.
                let mut guard = Leader {
                    group: self,
                    mine,
                    answer: None,
                };
                guard.answer = query();
                return guard.answer;
            }
            self.done.wait(&mut s);
        }
    }
}

/// The caller running a group read's query; publishes its answer (or, after a panic, no
/// answer) when dropped.
struct Leader<'a> {
    group: &'a GroupRead,
    mine: u64,
    answer: Option<u64>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut s = self.group.state.lock();
        s.running = false;
        s.finished = self.mine;
        s.answer = self.answer;
        self.group.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("postgresql://cps:secret@db1:5432,db2:5432/cps?target_session_attrs=read-write"),
            "postgresql://cps@db1:5432,db2:5432/cps?target_session_attrs=read-write"
        );
        assert_eq!(
            redact("host=db1 user=cps password=secret dbname=cps"),
            "host=db1 user=cps dbname=cps"
        );
    }

    #[test]
    fn prefix_ends_bound_every_extension() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
    }

    #[test]
    fn a_group_read_never_answers_from_a_query_started_before_the_call() {
        let g = Arc::new(GroupRead::default());
        let counter = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..8 {
            let (g, counter) = (g.clone(), counter.clone());
            threads.push(std::thread::spawn(move || {
                for _ in 0..200 {
                    // The value a query started right now would see.
                    let before = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let got = g
                        .read(|| {
                            std::thread::sleep(Duration::from_micros(50));
                            Some(counter.load(Ordering::SeqCst))
                        })
                        .unwrap();
                    assert!(got >= before, "answer {got} older than the call ({before})");
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
