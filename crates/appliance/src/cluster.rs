//! Several nodes on one store: what a node must re-check because another node may have changed
//! the state under its caches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cps_store::FreshVersion;
use parking_lot::Mutex;

/// Keeps the OCSP responder's pre-signed answers no older than the store: before an answer is
/// served, the store's certificates version is read (a read that starts after the request
/// arrived, shared by every request waiting); if any node changed a certificate since the cache
/// was last checked, the whole cache is dropped first. A revocation acknowledged by any node is
/// therefore in every node's next answer. (Issuance moves the version too: in a cluster the
/// cache is rebuilt after each change; one node alone keeps its per-serial invalidation.)
pub struct OcspFreshness {
    fresh: Arc<FreshVersion>,
    /// The last version the cache was checked against, plus one (0: never).
    applied: AtomicU64,
    clearing: Mutex<()>,
}

impl OcspFreshness {
    pub fn new(fresh: Arc<FreshVersion>) -> OcspFreshness {
        OcspFreshness {
            fresh,
            applied: AtomicU64::new(0),
            clearing: Mutex::new(()),
        }
    }

    /// Ready to answer from `ocsp`'s cache; `Err` when the store cannot tell its version (the
    /// answer is then `tryLater`: a cached "good" could be stale).
    pub async fn ready(&self, ocsp: &cps_ocsp::Responder) -> Result<(), &'static str> {
        let Some(v) = self.fresh.current().await else {
            return Err("the store did not give its certificates version");
        };
        let mark = v.saturating_add(1);
        if self.applied.load(Ordering::Acquire) >= mark {
            return Ok(());
        }
        let _g = self.clearing.lock();
        if self.applied.load(Ordering::Acquire) < mark {
            ocsp.invalidate_all();
            // Published only once the cache is empty: a request that sees it may use the cache.
            self.applied.store(mark, Ordering::Release);
        }
        Ok(())
    }
}
