//! The appliance's store, as `[store] backend` says: the embedded sled store in the home
//! directory (one node), or a PostgreSQL database shared by several nodes.

use std::path::Path;
use std::sync::Arc;

use cps_store::{PgOptions, PgStore, SledStore, Store};

use crate::config::{Config, StoreBackend};
use crate::disk::DiskGuard;
use crate::error::ApplianceError;

/// Opens the configured store. On sled, `guard` (when given) becomes the store's write gate:
/// no commit reaches a disk below its reserve. PostgreSQL keeps its data on the database
/// servers, whose disks the appliance does not watch (the guard still watches the local audit
/// log and queue, see [`crate::disk::for_home`]).
///
/// On a PostgreSQL standby the store opens for reading and says so in the log: reads are served,
/// writes answer 503 (OCSP `tryLater`) until a primary is reachable.
pub fn open(
    home: &Path,
    config: &Config,
    guard: Option<&Arc<DiskGuard>>,
) -> Result<Arc<dyn Store>, ApplianceError> {
    match config.store.backend {
        StoreBackend::Sled => {
            let sled = SledStore::open(config.resolve(home, &config.store.path))?;
            if let Some(guard) = guard {
                sled.set_write_gate(guard.write_gate())?;
            }
            Ok(Arc::new(sled))
        }
        StoreBackend::Postgres => {
            let url = config.store.url.as_deref().ok_or_else(|| {
                ApplianceError::Refused("store.backend = \"postgres\" needs store.url".into())
            })?;
            let pg = PgStore::open(
                url,
                PgOptions {
                    pool_size: config.store.pool_size,
                    ..PgOptions::default()
                },
            )?;
            if pg.opened_on_standby() {
                tracing::warn!(
                    database = pg.database(),
                    "the database is a standby (read-only): reads are served, writes are refused \
                     with 503 until a primary is reachable"
                );
            }
            Ok(Arc::new(pg))
        }
    }
}
