//! Linearizable reads of [`Store::certificates_version`] for async callers, coalesced.
//!
//! With one process per store the version is a local counter and reading it costs nothing. With
//! several nodes on one database, another node's revocation is only visible by asking the
//! database, and a cache of certificate state (the OCSP responder's pre-signed answers, the
//! per-request identity check) may only serve an answer if the version it was made at is still
//! the current one *at a moment after the request arrived*. Asking the database once per
//! request would cost a round trip each, and block a runtime worker while it waits.
//!
//! [`FreshVersion::current`] gives that guarantee to async callers without a round trip each:
//! one reader thread reads the version back to back while anyone is waiting; a caller takes a
//! ticket and waits for the first read that *started after* its ticket was taken, so the value
//! it gets is at least as new as every commit that had returned before it called. Many callers
//! share each read, and a caller's task yields while it waits (no worker is blocked).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::Store;

/// What the last read said: which tickets it covers and the version it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Read {
    /// Every ticket up to this one was taken before the read started.
    covers: u64,
    /// The version read; `None` when the store cannot tell or did not answer.
    version: Option<u64>,
}

struct Shared {
    store: Arc<dyn Store>,
    /// Tickets taken so far.
    next: Mutex<u64>,
    wake: Condvar,
    tx: watch::Sender<Read>,
    stop: AtomicBool,
}

/// Coalesced, linearizable reads of the store's certificates version (see the module docs).
pub struct FreshVersion {
    shared: Option<Arc<Shared>>,
    store: Arc<dyn Store>,
}

impl FreshVersion {
    /// Reads of `store`'s version. `shared`: other processes commit to the same store, so every
    /// read must ask it (a reader thread is started); otherwise the store's own answer is read
    /// directly.
    pub fn new(store: Arc<dyn Store>, shared: bool) -> FreshVersion {
        if !shared {
            return FreshVersion {
                shared: None,
                store,
            };
        }
        let (tx, _) = watch::channel(Read {
            covers: 0,
            version: None,
        });
        let s = Arc::new(Shared {
            store: store.clone(),
            next: Mutex::new(0),
            wake: Condvar::new(),
            tx,
            stop: AtomicBool::new(false),
        });
        let reader = s.clone();
        std::thread::Builder::new()
            .name("store-version".into())
            .spawn(move || read_loop(&reader))
            .expect("spawn the store version reader");
        FreshVersion {
            shared: Some(s),
            store,
        }
    }

    /// The certificates version as of a moment after this call began: never older than a commit
    /// that returned before it. `None`: the store cannot tell, or did not answer (callers must
    /// then not serve cached certificate state).
    pub async fn current(&self) -> Option<u64> {
        let Some(s) = &self.shared else {
            return self.store.certificates_version();
        };
        let mut rx = s.tx.subscribe();
        let ticket = {
            let mut next = s.next.lock();
            *next += 1;
            *next
        };
        s.wake.notify_one();
        match rx.wait_for(|r| r.covers >= ticket).await {
            Ok(r) => r.version,
            Err(_) => None,
        }
    }

    /// The same, for a caller on a blocking thread.
    pub fn current_blocking(&self) -> Option<u64> {
        let Some(s) = &self.shared else {
            return self.store.certificates_version();
        };
        let mut rx = s.tx.subscribe();
        let ticket = {
            let mut next = s.next.lock();
            *next += 1;
            *next
        };
        s.wake.notify_one();
        loop {
            let r = *rx.borrow_and_update();
            if r.covers >= ticket {
                return r.version;
            }
            // The reader sends after every read; wait for the next one.
            if futures_lite_block_on(rx.changed()).is_err() {
                return None;
            }
        }
    }
}

/// Waits for a `watch::Receiver::changed` future on a thread that is not a runtime worker.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

impl Drop for FreshVersion {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.stop.store(true, Ordering::SeqCst);
            let _g = s.next.lock();
            s.wake.notify_one();
        }
    }
}

fn read_loop(s: &Shared) {
    let mut covered = 0u64;
    loop {
        let target = {
            let mut next = s.next.lock();
            while *next == covered && !s.stop.load(Ordering::SeqCst) {
                s.wake.wait(&mut next);
            }
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            *next
        };
        // Every ticket up to `target` was taken before this read starts.
        let version = s.store.certificates_version();
        covered = target;
        s.tx.send_replace(Read {
            covers: target,
            version,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SledStore, WriteBatch, WriteOp};

    fn cert(serial: u8) -> crate::CertificateRecord {
        crate::CertificateRecord {
            issuer: "ca".into(),
            serial: vec![serial],
            subject: "CN=x".into(),
            profile: "p".into(),
            holder: None,
            spki_sha256: [serial; 32],
            not_before: 0,
            not_after: 10,
            der: vec![1],
            status: crate::CertStatus::Valid,
            issued_at: 0,
        }
    }

    #[test]
    fn a_read_after_a_commit_returned_sees_it_from_async_and_blocking_callers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("s")).unwrap());
        let fresh = Arc::new(FreshVersion::new(store.clone(), true));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for i in 0..50u8 {
            store
                .commit(WriteBatch::new().with(WriteOp::InsertCertificate(cert(i + 1))))
                .unwrap();
            let expect = store.certificates_version();
            assert!(expect.is_some());
            // Many concurrent callers; each must see at least the committed version.
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let f = fresh.clone();
                    rt.spawn(async move { f.current().await })
                })
                .collect();
            for h in handles {
                assert_eq!(rt.block_on(h).unwrap(), expect);
            }
            assert_eq!(fresh.current_blocking(), expect);
        }
    }

    #[test]
    fn unshared_reads_the_store_directly() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("s")).unwrap());
        let fresh = FreshVersion::new(store.clone(), false);
        let before = fresh.current_blocking();
        store
            .commit(WriteBatch::new().with(WriteOp::InsertCertificate(cert(1))))
            .unwrap();
        assert_ne!(fresh.current_blocking(), before);
    }
}
