//! The pre-signed response cache.
//!
//! * **Key**: the CertID TLV exactly as received (it fixes issuer, hash algorithm, the encoding
//!   of the hash parameters and the serial), so a hit needs no issuer matching and the cached
//!   bytes always echo the request's CertID. Only single-request, nonce-less requests use it.
//! * **Freshness**: an entry is served while `thisUpdate <= now < thisUpdate + refresh` and
//!   `now < nextUpdate`.
//! * **Bound**: 16 shards, each a `HashMap` (SipHash with a random key: keys are chosen by
//!   clients) plus a FIFO of insertions; when a shard holds more than its share of
//!   `max_entries`, the oldest insertions are evicted.
//! * **Invalidation race**: a miss takes a [`Ticket`] (global epoch + the generation of the
//!   stripe of `(issuer, serial)`) *before* asking the status source. `invalidate` bumps the
//!   stripe generation *before* removing the entries, under the shard lock; `insert` compares
//!   the ticket with the current counters under the same lock. Either the insert's critical
//!   section comes first (and the removal deletes it), or it comes second and sees the bumped
//!   counter (and drops the stale answer). A status read that starts after the bump sees the
//!   store's new state, provided `invalidate` is called after the store has it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

const SHARDS: usize = 16;
const STRIPES: usize = 1024;

/// A signed response ready to be served again.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub der: Bytes,
    pub this_update: i64,
    pub next_update: i64,
}

struct Entry {
    value: Cached,
    seq: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    /// Insertion order (key, seq); an element whose seq no longer matches the map is stale.
    order: VecDeque<(Box<[u8]>, u64)>,
    seq: u64,
}

pub(crate) struct Cache {
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
    stripes: Vec<AtomicU64>,
    epoch: AtomicU64,
}

/// Generation counters observed before the status was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    stripe: usize,
    generation: u64,
}

/// FNV-1a: only spreads keys over shards and stripes (the maps themselves use SipHash).
fn fnv(parts: &[&[u8]]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as usize
}

impl Cache {
    pub fn new(max_entries: usize) -> Self {
        Cache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    fn shard(&self, key: &[u8]) -> Option<&RwLock<Shard>> {
        self.shards.get(fnv(&[key]) % SHARDS)
    }

    fn stripe(issuer: usize, serial: &[u8]) -> usize {
        fnv(&[&issuer.to_le_bytes(), serial]) % STRIPES
    }

    /// A fresh entry for `key`, if any.
    pub fn get(&self, key: &[u8], now: i64, refresh_secs: i64) -> Option<Cached> {
        if !self.enabled() {
            return None;
        }
        let shard = self.shard(key)?.read();
        let e = shard.map.get(key)?;
        let v = &e.value;
        (now >= v.this_update
            && now < v.this_update.saturating_add(refresh_secs)
            && now < v.next_update)
            .then(|| v.clone())
    }

    /// Take before reading the status of `(issuer, serial)`.
    pub fn ticket(&self, issuer: usize, serial: &[u8]) -> Ticket {
        let stripe = Self::stripe(issuer, serial);
        Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe,
            generation: self
                .stripes
                .get(stripe)
                .map_or(0, |g| g.load(Ordering::SeqCst)),
        }
    }

    fn still_valid(&self, t: &Ticket) -> bool {
        self.epoch.load(Ordering::SeqCst) == t.epoch
            && self
                .stripes
                .get(t.stripe)
                .is_some_and(|g| g.load(Ordering::SeqCst) == t.generation)
    }

    /// Insert unless an invalidation happened since `ticket` was taken. Returns whether the
    /// entry was stored.
    pub fn insert(&self, key: &[u8], ticket: Ticket, value: Cached) -> bool {
        if !self.enabled() {
            return false;
        }
        let Some(lock) = self.shard(key) else {
            return false;
        };
        let mut guard = lock.write();
        // Checked under the shard lock: see the module documentation.
        if !self.still_valid(&ticket) {
            return false;
        }
        let Shard { map, order, seq } = &mut *guard;
        *seq += 1;
        map.insert(key.into(), Entry { value, seq: *seq });
        order.push_back((key.into(), *seq));
        while map.len() > self.per_shard {
            let Some((k, s)) = order.pop_front() else {
                break;
            };
            if map.get(&k).is_some_and(|e| e.seq == s) {
                map.remove(&k);
            }
        }
        if order.len() > 2 * self.per_shard + 64 {
            order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
        true
    }

    /// Drop every entry of `(issuer, serial)`; `keys` are all the CertID encodings it may be
    /// cached under.
    pub fn invalidate(&self, issuer: usize, serial: &[u8], keys: &[Vec<u8>]) {
        if let Some(g) = self.stripes.get(Self::stripe(issuer, serial)) {
            g.fetch_add(1, Ordering::SeqCst);
        }
        for k in keys {
            if let Some(lock) = self.shard(k) {
                lock.write().map.remove(k.as_slice());
            }
        }
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for s in &self.shards {
            let mut s = s.write();
            s.map.clear();
            s.order.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(t: i64) -> Cached {
        Cached {
            der: Bytes::from_static(b"x"),
            this_update: t,
            next_update: t + 100,
        }
    }

    #[test]
    fn freshness_window() {
        let c = Cache::new(10);
        let t = c.ticket(0, b"\x01");
        assert!(c.insert(b"k", t, val(1000)));
        assert!(c.get(b"k", 999, 10).is_none(), "thisUpdate in the future");
        assert!(c.get(b"k", 1000, 10).is_some());
        assert!(c.get(b"k", 1009, 10).is_some());
        assert!(c.get(b"k", 1010, 10).is_none(), "refresh due");
        assert!(c.get(b"k", 1050, 1000).is_some());
        assert!(c.get(b"k", 1100, 1000).is_none(), "past nextUpdate");
    }

    #[test]
    fn invalidation_between_ticket_and_insert_wins() {
        let c = Cache::new(10);
        let t = c.ticket(3, b"\x05");
        c.invalidate(3, b"\x05", &[b"k".to_vec()]);
        assert!(
            !c.insert(b"k", t, val(0)),
            "stale answer must not be cached"
        );
        assert!(c.get(b"k", 0, 10).is_none());
        // Another serial in another stripe is not affected.
        let t = c.ticket(3, b"\x06");
        assert!(c.insert(b"k2", t, val(0)));
        let t = c.ticket(3, b"\x06");
        c.clear();
        assert!(
            !c.insert(b"k2", t, val(0)),
            "invalidate_all between ticket and insert"
        );
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn bounded() {
        let c = Cache::new(32);
        for i in 0u32..10_000 {
            let k = i.to_be_bytes();
            let t = c.ticket(0, &k);
            assert!(c.insert(&k, t, val(0)));
            // Re-inserting the same key must not grow the FIFO without bound.
            let t = c.ticket(0, &k);
            assert!(c.insert(&k, t, val(0)));
        }
        assert!(c.len() <= 32, "{}", c.len());
        for s in &c.shards {
            assert!(s.read().order.len() <= 2 * 2 + 64 + 1);
        }
        let disabled = Cache::new(0);
        let t = disabled.ticket(0, b"\x01");
        assert!(!disabled.insert(b"k", t, val(0)));
        assert!(disabled.get(b"k", 0, 10).is_none());
    }
}
