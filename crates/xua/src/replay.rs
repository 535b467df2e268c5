//! Replay detection: an assertion ID is accepted once while the assertion can still be valid.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::time::to_millis;

/// Why the replay cache refused an ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The ID was seen before and its assertion has not expired.
    #[error("assertion ID already used")]
    Replayed,
    /// The cache is full of unexpired IDs (refusing keeps replays impossible).
    #[error("replay cache is full ({0} unexpired IDs)")]
    Full(usize),
    /// The backing store did not answer.
    #[error("replay cache unavailable: {0}")]
    Unavailable(String),
}

/// Remembers assertion IDs until their assertions expire. The appliance may replace the
/// in-memory cache with a shared, durable one.
pub trait ReplayCache: Send + Sync {
    /// Record `id` as used until `expires`; refuse it if it is already recorded and not expired
    /// at `now`. Must be atomic: of two concurrent calls with one ID, at most one succeeds.
    fn check_and_insert(
        &self,
        id: &str,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), ReplayError>;
}

const SHARDS: usize = 16;

/// What is kept of an ID: the first 128 bits of its SHA-256. A fixed, inline key (no allocation
/// per ID, about a third of the memory of the string); two IDs sharing one would need a SHA-256
/// collision on 128 bits, and even then the second would only be refused, never let through.
type Key = [u8; 16];

fn key_of(id: &str) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    k
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, i64>,
    by_expiry: BinaryHeap<Reverse<(i64, Key)>>,
}

impl Shard {
    fn purge(&mut self, now: i64) {
        while let Some(Reverse((exp, _))) = self.by_expiry.peek() {
            if *exp > now {
                break;
            }
            let Some(Reverse((exp, id))) = self.by_expiry.pop() else {
                break;
            };
            if self.map.get(&id) == Some(&exp) {
                self.map.remove(&id);
            }
        }
    }
}

/// A bounded, time-expiring, sharded in-memory replay cache (about 60–100 bytes per unexpired
/// ID).
pub struct InMemoryReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl std::fmt::Debug for InMemoryReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryReplayCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .field("len", &self.len())
            .finish()
    }
}

impl InMemoryReplayCache {
    /// A cache holding at most about `capacity` unexpired IDs (rounded up to a multiple of 16).
    pub fn new(capacity: usize) -> Self {
        InMemoryReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Number of IDs held (expired ones may still be counted until the next insert purges them).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether no ID is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InMemoryReplayCache {
    /// Whether `id` is held and not expired at `now`, without recording anything: the fast
    /// "already seen here" probe in front of a shared record.
    pub fn contains(&self, id: &str, now: SystemTime) -> bool {
        let now = to_millis(now);
        let key = key_of(id);
        let shard = self.shards[usize::from(key[0]) % SHARDS].lock();
        shard.map.get(&key).is_some_and(|&e| e > now)
    }
}

impl ReplayCache for InMemoryReplayCache {
    fn check_and_insert(
        &self,
        id: &str,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        let now = to_millis(now);
        let exp = to_millis(expires);
        let key = key_of(id);
        let idx = usize::from(key[0]) % SHARDS;
        let mut shard = self.shards[idx].lock();
        shard.purge(now);
        if let Some(&e) = shard.map.get(&key)
            && e > now
        {
            return Err(ReplayError::Replayed);
        }
        if exp <= now {
            // Already expired: nothing to remember (the validator refuses it anyway).
            return Ok(());
        }
        if shard.map.len() >= self.per_shard {
            return Err(ReplayError::Full(self.per_shard * SHARDS));
        }
        shard.map.insert(key, exp);
        shard.by_expiry.push(Reverse((exp, key)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_millis;

    #[test]
    fn refuses_replays_until_expiry_then_forgets() {
        let c = InMemoryReplayCache::new(64);
        let t = |ms| from_millis(ms);
        assert_eq!(c.check_and_insert("_a", t(10_000), t(0)), Ok(()));
        assert_eq!(
            c.check_and_insert("_a", t(10_000), t(5_000)),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.check_and_insert("_b", t(10_000), t(5_000)), Ok(()));
        // After expiry the ID is purged (the assertion itself is expired by then).
        assert_eq!(c.check_and_insert("_a", t(20_000), t(10_000)), Ok(()));
        assert_eq!(
            c.check_and_insert("_a", t(20_000), t(15_000)),
            Err(ReplayError::Replayed)
        );
        // The probe records nothing and follows the same expiry.
        assert!(c.contains("_a", t(19_999)));
        assert!(!c.contains("_a", t(20_000)));
        assert!(!c.contains("_never", t(0)));
        assert_eq!(c.check_and_insert("_never", t(30_000), t(0)), Ok(()));
    }

    #[test]
    fn bounded_and_fails_closed_when_full() {
        let c = InMemoryReplayCache::new(160);
        let t = |ms| from_millis(ms);
        let mut refused = 0;
        for i in 0..2000 {
            if c.check_and_insert(&format!("_{i}"), t(1_000), t(0))
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused > 0, "a full cache must refuse");
        assert!(c.len() <= 160);
        // Once the entries expire there is room again.
        for i in 0..8 {
            assert_eq!(
                c.check_and_insert(&format!("_n{i}"), t(5_000), t(2_000)),
                Ok(())
            );
        }
    }

    #[test]
    fn concurrent_inserts_of_one_id_admit_exactly_one() {
        let c = std::sync::Arc::new(InMemoryReplayCache::new(1024));
        let ok = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    if c.check_and_insert("_same", from_millis(10_000), from_millis(0))
                        .is_ok()
                    {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(ok.into_inner(), 1);
    }
}
