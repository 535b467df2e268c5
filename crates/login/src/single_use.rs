//! Single-use records shared by every node of a cluster, through the store ([`Store::claim`]):
//! assertion IDs already validated ([`StoreReplayCache`]) and login challenges already redeemed
//! ([`StoreNonces`]).
//!
//! Both go through a [`ClaimBatcher`]: concurrent claims are gathered and sent to the store in
//! one [`Store::claim`] call (one transaction and one flush, or one database round trip, for
//! many requests), and each caller gets its own answer. Whoever finds no claim running sends
//! the next one for everybody waiting, as the store's group commit does. A claim is answered
//! only once the store has made it durable, so an accepted ID or challenge stays used after a
//! crash of the node that accepted it, and on every node sharing the store. When the store
//! cannot answer, the caller is told so (never "first use").

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cps_store::Store;
use cps_xua::{InMemoryReplayCache, ReplayCache, ReplayError};
use parking_lot::{Condvar, Mutex};

/// The claim table of validated assertion IDs.
pub const REPLAY_TABLE: &str = "xua.replay";
/// The claim table of redeemed login challenges.
pub const NONCE_TABLE: &str = "login.nonce";

/// Counters of a [`ClaimBatcher`], for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Keys claimed.
    pub claims: u64,
    /// Calls to the store.
    pub batches: u64,
}

#[derive(Default)]
struct Batch {
    keys: Vec<(Vec<u8>, i64)>,
    /// The earliest `now` of the batch's callers: a record counts as unexpired for the whole
    /// batch if it is unexpired for any of them.
    now: i64,
}

type Answer = Arc<Result<Vec<bool>, String>>;

#[derive(Default)]
struct State {
    /// The batch being filled, numbered `next_id`.
    next: Batch,
    next_id: u64,
    /// A batch is at the store.
    running: bool,
    /// Answers of finished batches, with how many callers have yet to read theirs.
    finished: HashMap<u64, (Answer, usize)>,
    stats: BatchStats,
}

/// Gathers concurrent claims of one claim table into one [`Store::claim`] call.
pub struct ClaimBatcher {
    store: Arc<dyn Store>,
    table: &'static str,
    state: Mutex<State>,
    done: Condvar,
}

impl std::fmt::Debug for ClaimBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimBatcher")
            .field("table", &self.table)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ClaimBatcher {
    /// Claims of table `table` of `store`.
    pub fn new(store: Arc<dyn Store>, table: &'static str) -> ClaimBatcher {
        ClaimBatcher {
            store,
            table,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        }
    }

    /// How many keys were claimed, in how many store calls.
    pub fn stats(&self) -> BatchStats {
        self.state.lock().stats
    }

    /// Claims `key` until `expires` (Unix seconds, after `now`): `Ok(true)` if this is its first
    /// use (durable when this returns), `Ok(false)` if it is used already, `Err` if the store did
    /// not answer. Blocks until the store has answered.
    pub fn claim(&self, key: Vec<u8>, expires: i64, now: i64) -> Result<bool, String> {
        let mut st = self.state.lock();
        let id = st.next_id;
        let index = st.next.keys.len();
        st.next.now = if index == 0 {
            now
        } else {
            st.next.now.min(now)
        };
        st.next.keys.push((key, expires));
        loop {
            if let Some((answer, readers)) = st.finished.get_mut(&id) {
                let answer = answer.clone();
                *readers -= 1;
                if *readers == 0 {
                    st.finished.remove(&id);
                }
                return match &*answer {
                    Ok(v) => v
                        .get(index)
                        .copied()
                        .ok_or_else(|| format!("the store answered {} of the claims", v.len())),
                    Err(e) => Err(e.clone()),
                };
            }
            if st.running {
                self.done.wait(&mut st);
                continue;
            }
            // Lead: our batch is the one being filled (it is neither running nor finished).
            let batch = std::mem::take(&mut st.next);
            let batch_id = st.next_id;
            st.next_id += 1;
            st.running = true;
            let readers = batch.keys.len();
            let result = parking_lot::MutexGuard::unlocked(&mut st, || {
                catch_unwind(AssertUnwindSafe(|| {
                    self.store.claim(self.table, &batch.keys, batch.now)
                }))
                .unwrap_or_else(|_| {
                    Err(cps_store::StoreError::Invalid(
                        "the store panicked while claiming".into(),
                    ))
                })
            });
            st.running = false;
            st.stats.batches += 1;
            st.stats.claims += readers as u64;
            let answer = match result {
                Ok(v) if v.len() == readers => Ok(v),
                Ok(v) => Err(format!(
                    "the store answered {} of {readers} claims",
                    v.len()
                )),
                Err(e) => Err(e.to_string()),
            };
            st.finished.insert(batch_id, (Arc::new(answer), readers));
            self.done.notify_all();
        }
    }
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The store key of an assertion ID: the first 128 bits of its SHA-256 (fixed size, whatever
/// the ID's length; two IDs sharing it would need a SHA-256 collision on 128 bits, and the
/// second would only be refused).
fn replay_key(id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref()[..16].to_vec()
}

/// The replay cache shared by every node on the store: an ID is accepted once it is recorded
/// in the store (claim table [`REPLAY_TABLE`]), durably, before the validation is answered.
///
/// The in-memory cache in front only answers "seen here already" (a hit is a replay, without
/// asking the store); a miss always asks the store, and an ID enters the memory cache only once
/// the store has answered about it. When the store cannot answer, the validation is refused with
/// [`ReplayError::Unavailable`] (the appliance answers 503).
pub struct StoreReplayCache {
    seen: Arc<InMemoryReplayCache>,
    claims: ClaimBatcher,
}

impl std::fmt::Debug for StoreReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReplayCache")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl StoreReplayCache {
    /// The shared record in `store`, with `seen` as the local filter in front.
    pub fn new(store: Arc<dyn Store>, seen: Arc<InMemoryReplayCache>) -> StoreReplayCache {
        StoreReplayCache {
            seen,
            claims: ClaimBatcher::new(store, REPLAY_TABLE),
        }
    }

    /// How many IDs were claimed in the store, in how many calls.
    pub fn stats(&self) -> BatchStats {
        self.claims.stats()
    }
}

impl ReplayCache for StoreReplayCache {
    fn check_and_insert(
        &self,
        id: &str,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        let (now_ms, exp_ms) = (millis(now), millis(expires));
        if self.seen.contains(id, now) {
            return Err(ReplayError::Replayed);
        }
        if exp_ms <= now_ms {
            // Already expired: nothing to remember (the validator refuses it anyway), as in
            // memory.
            return Ok(());
        }
        // Whole seconds, rounded so that the record lasts at least as long as asked.
        let now_s = now_ms.div_euclid(1000);
        let exp_s = exp_ms.div_euclid(1000) + i64::from(exp_ms.rem_euclid(1000) != 0);
        let first = self
            .claims
            .claim(replay_key(id), exp_s, now_s)
            .map_err(ReplayError::Unavailable)?;
        // Only a filter: a full memory cache changes nothing, the store holds the record.
        let _ = self.seen.check_and_insert(id, expires, now);
        if first {
            Ok(())
        } else {
            Err(ReplayError::Replayed)
        }
    }
}

/// Redeemed login challenges, shared by every node on the store (claim table
/// [`NONCE_TABLE`]): a challenge issued by any node is redeemed once, on any node.
#[derive(Debug)]
pub struct StoreNonces {
    claims: ClaimBatcher,
}

impl StoreNonces {
    /// The shared record in `store`.
    pub fn new(store: Arc<dyn Store>) -> StoreNonces {
        StoreNonces {
            claims: ClaimBatcher::new(store, NONCE_TABLE),
        }
    }

    /// How many nonces were claimed in the store, in how many calls.
    pub fn stats(&self) -> BatchStats {
        self.claims.stats()
    }
}

impl crate::challenge::NonceRecord for StoreNonces {
    fn consume(&self, nonce: &[u8; 32], expires: i64, now: i64) -> Result<bool, String> {
        // The nonce is the appliance's own random draw, MAC-protected: its first 128 bits are
        // a unique key.
        self.claims.claim(nonce[..16].to_vec(), expires, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_store::SledStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        (dir, s)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn concurrent_claims_are_batched_and_each_gets_its_own_answer() {
        let (_d, s) = store();
        let b = ClaimBatcher::new(s, REPLAY_TABLE);
        let firsts = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for t in 0..16 {
                let (b, firsts) = (&b, &firsts);
                sc.spawn(move || {
                    for i in 0..50 {
                        // Half of the keys are shared by two threads: one of them wins.
                        let key = format!("k{}-{i}", t / 2).into_bytes();
                        if b.claim(key, 2_000, 1_000).unwrap() {
                            firsts.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(firsts.into_inner(), 8 * 50);
        let stats = b.stats();
        assert_eq!(stats.claims, 16 * 50);
        assert!(
            stats.batches < stats.claims,
            "no two claims shared a store call: {stats:?}"
        );
    }

    #[test]
    fn a_store_error_reaches_every_caller_of_the_batch_and_is_not_a_first_use() {
        let (_d, s) = store();
        let b = ClaimBatcher::new(s, REPLAY_TABLE);
        // An expiry not after `now` is refused by the store: an error, never `true`.
        let e = b.claim(b"k".to_vec(), 5, 10).unwrap_err();
        assert!(e.contains("invalid input"), "{e}");
        // The batcher is not wedged.
        assert_eq!(b.claim(b"k".to_vec(), 50, 10), Ok(true));
    }

    #[test]
    fn two_caches_on_one_store_are_two_nodes() {
        let (_d, s) = store();
        let a = StoreReplayCache::new(s.clone(), Arc::new(InMemoryReplayCache::new(1024)));
        let b = StoreReplayCache::new(s.clone(), Arc::new(InMemoryReplayCache::new(1024)));
        assert_eq!(a.check_and_insert("_x", at(2_000), at(1_000)), Ok(()));
        assert_eq!(
            b.check_and_insert("_x", at(2_000), at(1_001)),
            Err(ReplayError::Replayed)
        );
        // A hit in the front filter answers without the store.
        let before = a.stats();
        assert_eq!(
            a.check_and_insert("_x", at(2_000), at(1_002)),
            Err(ReplayError::Replayed)
        );
        assert_eq!(a.stats(), before);
        // After the record expires, it is forgotten everywhere.
        assert_eq!(b.check_and_insert("_x", at(3_000), at(2_000)), Ok(()));
    }

    #[test]
    fn a_refusing_store_fails_closed_and_a_retry_succeeds_once_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let g = open.clone();
        sled.set_write_gate(Box::new(move || {
            if g.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("disk below reserve".into())
            }
        }))
        .unwrap();
        let c = StoreReplayCache::new(Arc::new(sled), Arc::new(InMemoryReplayCache::new(1024)));
        match c.check_and_insert("_y", at(2_000), at(1_000)) {
            Err(ReplayError::Unavailable(m)) => assert!(m.contains("disk below reserve"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Nothing was remembered of the refused attempt, here or in the store.
        open.store(true, Ordering::SeqCst);
        assert_eq!(c.check_and_insert("_y", at(2_000), at(1_000)), Ok(()));
        assert_eq!(
            c.check_and_insert("_y", at(2_000), at(1_000)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn the_record_outlives_the_process_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
            let c = StoreReplayCache::new(s, Arc::new(InMemoryReplayCache::new(1024)));
            assert_eq!(c.check_and_insert("_z", at(2_000), at(1_000)), Ok(()));
        }
        let s: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let c = StoreReplayCache::new(s, Arc::new(InMemoryReplayCache::new(1024)));
        assert_eq!(
            c.check_and_insert("_z", at(2_000), at(1_500)),
            Err(ReplayError::Replayed)
        );
    }

    fn node(store: &Arc<dyn Store>) -> crate::Challenges {
        crate::Challenges::new(
            b"the key every node derives",
            [7; 32],
            Duration::from_secs(120),
        )
        .with_shared_record(Arc::new(StoreNonces::new(store.clone())))
    }

    #[test]
    fn a_challenge_issued_on_one_node_is_redeemed_once_on_any() {
        let (_d, s) = store();
        let (a, b) = (node(&s), node(&s));
        let ctx = [3u8; 32];
        let now = 1_800_000_000;
        let issued = a.issue("https://dmp.example", &ctx, &[1; 32], now).unwrap();
        assert!(b.precheck(&issued.token, now + 1).is_ok());
        assert!(b.redeem(&issued.token, |_| ctx, now + 1).is_ok());
        for n in [&a, &b] {
            assert_eq!(
                n.redeem(&issued.token, |_| ctx, now + 2).unwrap_err(),
                crate::ChallengeRefusal::Used
            );
        }
        // A node started later over the same store (a restart) refuses it too.
        let c = node(&s);
        assert_eq!(
            c.redeem(&issued.token, |_| ctx, now + 3).unwrap_err(),
            crate::ChallengeRefusal::Used
        );
        // Another challenge is independent; a wrong context still uses it up.
        let other = b.issue("https://dmp.example", &ctx, &[2; 32], now).unwrap();
        assert_eq!(
            a.redeem(&other.token, |_| [9; 32], now + 1).unwrap_err(),
            crate::ChallengeRefusal::ContextMismatch
        );
        assert_eq!(
            b.redeem(&other.token, |_| ctx, now + 1).unwrap_err(),
            crate::ChallengeRefusal::Used
        );
    }

    #[test]
    fn a_challenge_is_not_accepted_while_the_record_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let g = open.clone();
        sled.set_write_gate(Box::new(move || {
            if g.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("disk below reserve".into())
            }
        }))
        .unwrap();
        let s: Arc<dyn Store> = Arc::new(sled);
        let a = node(&s);
        let ctx = [3u8; 32];
        let now = 1_800_000_000;
        let issued = a.issue("aud", &ctx, &[1; 32], now).unwrap();
        assert_eq!(
            a.redeem(&issued.token, |_| ctx, now).unwrap_err(),
            crate::ChallengeRefusal::Unavailable
        );
        open.store(true, Ordering::SeqCst);
        assert!(a.redeem(&issued.token, |_| ctx, now).is_ok());
    }

    #[test]
    fn sub_second_expiries_are_kept_at_least_as_long_as_asked() {
        let (_d, s) = store();
        let a = StoreReplayCache::new(s.clone(), Arc::new(InMemoryReplayCache::new(1024)));
        let b = StoreReplayCache::new(s, Arc::new(InMemoryReplayCache::new(1024)));
        let exp = at(1_000) + Duration::from_millis(1);
        assert_eq!(a.check_and_insert("_ms", exp, at(1_000)), Ok(()));
        assert_eq!(
            b.check_and_insert("_ms", exp, at(1_000)),
            Err(ReplayError::Replayed)
        );
    }
}
