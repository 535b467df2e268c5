//! The store suite (`suite/ops.rs`) on sled, and what only sled does.

mod backend {
    /// The store under test.
    pub type S = cps_store::SledStore;

    /// A new store's directory.
    pub struct Db {
        pub dir: tempfile::TempDir,
    }

    impl Db {
        pub fn fresh() -> Db {
            Db {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        pub fn open(&self) -> S {
            cps_store::SledStore::open(self.dir.path()).unwrap()
        }
    }

    /// After `total` concurrent single commits: group commit shared flushes among the writers.
    pub fn after_concurrent_commits(store: &S, total: u64) {
        let stats = store.commit_stats();
        assert_eq!(stats.commits, total);
        assert!(
            stats.flushes < total,
            "every commit flushed alone: {stats:?}"
        );
    }
}

#[path = "suite/ops.rs"]
mod ops;

use cps_store::{SledStore, Store, StoreError, WriteOp};
use ops::{audit, one, open};

#[test]
fn a_second_open_is_refused_with_locked() {
    let (db, store) = open();
    let dir = &db.dir;
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("in use by another process")
            && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    // The first handle still works, and once it is closed the store opens again.
    store.commit(one(WriteOp::AppendAudit(audit(1)))).unwrap();
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.audit_len().unwrap(), 1);
}
