//! Group commit: many writers, one flush.
//!
//! A writer applies its transaction in memory, then calls [`GroupCommit::make_durable`]: it takes
//! the next write sequence number and waits until a flush that *started after* its write has
//! completed. The first writer to find no flush in progress becomes the leader: it notes the
//! highest sequence number applied so far, flushes once (outside the lock) and, on success,
//! marks every write up to that number durable and wakes the others. Writers that applied their
//! transaction while the flush was running wait for the next one, which one of them leads.
//!
//! A failed flush poisons the group for good: after a failed `fsync` the kernel may have dropped
//! the dirty pages, so no later flush could vouch for the earlier writes (PostgreSQL's
//! "fsyncgate" lesson).

use std::panic::{AssertUnwindSafe, catch_unwind};

use parking_lot::{Condvar, Mutex};

/// Counters of the group commit, for tests, metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write batches applied and submitted for durability.
    pub commits: u64,
    /// Flushes to disk completed.
    pub flushes: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number of the last write applied (writes are numbered from 1).
    applied: u64,
    /// Every write with a sequence number up to this one is on disk.
    durable: u64,
    /// A leader is flushing.
    flushing: bool,
    /// The first flush failure; set once, never cleared.
    failure: Option<String>,
    flushes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    flushed: Condvar,
}

impl GroupCommit {
    /// The flush failure that poisoned the group, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.state.lock().failure.clone()
    }

    pub(crate) fn stats(&self) -> CommitStats {
        let st = self.state.lock();
        CommitStats {
            commits: st.applied,
            flushes: st.flushes,
        }
    }

    /// Called by a writer whose write has been applied: returns once a flush that started after
    /// the write has completed, or with the flush error.
    ///
    /// `flush` must make every write applied before it was called durable.
    pub(crate) fn make_durable(
        &self,
        flush: &dyn Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        let mut st = self.state.lock();
        st.applied += 1;
        let mine = st.applied;
        loop {
            if st.durable >= mine {
                return Ok(());
            }
            if let Some(failure) = &st.failure {
                return Err(failure.clone());
            }
            if st.flushing {
                self.flushed.wait(&mut st);
                continue;
            }
            // Lead: every write numbered up to `target` was applied before this flush starts.
            st.flushing = true;
            let target = st.applied;
            let result = parking_lot::MutexGuard::unlocked(&mut st, || {
                catch_unwind(AssertUnwindSafe(flush))
                    .unwrap_or_else(|_| Err("the flush panicked".to_string()))
            });
            st.flushing = false;
            match result {
                Ok(()) => {
                    st.durable = st.durable.max(target);
                    st.flushes += 1;
                }
                Err(e) => {
                    st.failure.get_or_insert(e);
                }
            }
            self.flushed.notify_all();
        }
    }

    /// For the one-flush-per-write policy: counts the write, flushes, and records the result.
    pub(crate) fn flush_alone(&self, flush: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
        let mine = {
            let mut st = self.state.lock();
            st.applied += 1;
            st.applied
        };
        let result = catch_unwind(AssertUnwindSafe(flush))
            .unwrap_or_else(|_| Err("the flush panicked".to_string()));
        let mut st = self.state.lock();
        match result {
            Ok(()) => {
                st.durable = st.durable.max(mine);
                st.flushes += 1;
                Ok(())
            }
            Err(e) => Err(st.failure.get_or_insert(e).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Simulates a store: `written` counts applied writes, `on_disk` what the last flush saw.
    #[test]
    fn every_write_is_covered_by_a_later_flush_and_flushes_are_shared() {
        let gc = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let on_disk = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, on_disk) = (gc.clone(), written.clone(), on_disk.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let flush = || {
                            let snapshot = written.load(Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            on_disk.fetch_max(snapshot, Ordering::SeqCst);
                            Ok(())
                        };
                        gc.make_durable(&flush).unwrap();
                        // Our write was counted before any flush we waited for started.
                        assert!(on_disk.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = gc.stats();
        assert_eq!(stats.commits, 400);
        assert!(stats.flushes < 400, "no grouping happened: {stats:?}");
    }

    #[test]
    fn a_failed_flush_poisons_every_later_write() {
        let gc = GroupCommit::default();
        assert!(gc.make_durable(&|| Ok(())).is_ok());
        assert_eq!(
            gc.make_durable(&|| Err("disk gone".into())),
            Err("disk gone".into())
        );
        assert_eq!(gc.make_durable(&|| Ok(())), Err("disk gone".into()));
        assert_eq!(gc.failure(), Some("disk gone".into()));
    }

    #[test]
    fn a_panicking_flush_does_not_wedge_the_group() {
        let gc = GroupCommit::default();
        let r = gc.make_durable(&|| -> Result<(), String> { panic!("boom") });
        assert_eq!(r, Err("the flush panicked".into()));
        assert!(gc.make_durable(&|| Ok(())).is_err());
    }
}
