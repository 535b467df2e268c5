//! Single-use claims ([`Store::claim`](crate::Store::claim)) on sled.
//!
//! Two trees: `claims` maps the claim key (`table ‖ 0x00 ‖ key`, as for named tables) to its
//! expiry (big-endian i64), and `claims_by_expiry` indexes them by `expiry ‖ claim key`, where
//! the expiry is encoded so that byte order is numeric order. Each call first reads up to
//! [`PURGE_BATCH`] expired index entries, then, in one transaction, deletes those (a claim is only
//! deleted if its record still holds that expiry) and records the new claims. A call that records
//! nothing does not flush: its `false` answers rest on records that are either durable already or
//! belong to a claim whose caller is still waiting for the flush.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{SledStore, keys};
use crate::FlushPolicy;
use crate::error::StoreError;

/// At most this many expired claims are deleted per call, so a purge never makes one caller wait
/// long; with claims arriving at a steady rate, every call removes more than expire meanwhile.
const PURGE_BATCH: usize = 256;

/// The expiry as 8 bytes whose unsigned byte order is the signed numeric order.
fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_sortable(b: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

fn index_key(expires: i64, claim_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + claim_key.len());
    k.extend_from_slice(&sortable(expires));
    k.extend_from_slice(claim_key);
    k
}

/// An expired index entry found before the transaction.
struct Expired {
    index_key: Vec<u8>,
    claim_key: Vec<u8>,
    expires: i64,
}

impl SledStore {
    pub(super) fn claim_keys(
        &self,
        table: &str,
        claims: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut prepared = Vec::with_capacity(claims.len());
        for (key, expires) in claims {
            if key.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "a claim of table {table:?} has an empty key"
                )));
            }
            if *expires <= now {
                return Err(StoreError::Invalid(format!(
                    "a claim of table {table:?} expires at {expires}, not after now ({now})"
                )));
            }
            prepared.push((keys::record_key(table, key)?, *expires));
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(detail) = self.group.failure() {
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
                detail,
            });
        }
        if let Some(gate) = self.gate.get() {
            gate().map_err(StoreError::Refused)?;
        }

        // Expired claims to delete: read outside the transaction (sled transactions cannot
        // scan), checked again inside it.
        let mut expired = Vec::new();
        let bound = sortable(now.saturating_add(1));
        for item in self.trees.claims_by_expiry.range(..&bound[..]) {
            let (k, _) = item.map_err(|e| self.sled_error(e))?;
            let Some(expires) = from_sortable(&k) else {
                return Err(self.corrupt(format!(
                    "key {} of table {} is malformed",
                    hex::encode(&k),
                    super::tree::CLAIMS_BY_EXPIRY
                )));
            };
            expired.push(Expired {
                claim_key: k[8..].to_vec(),
                index_key: k.to_vec(),
                expires,
            });
            if expired.len() == PURGE_BATCH {
                break;
            }
        }

        let t = &self.trees;
        let result = (&t.claims, &t.claims_by_expiry).transaction(|(claims_tx, index_tx)| {
            for e in &expired {
                index_tx.remove(&e.index_key[..])?;
                if claims_tx.get(&e.claim_key)?.as_deref() == Some(&e.expires.to_be_bytes()[..]) {
                    claims_tx.remove(&e.claim_key[..])?;
                }
            }
            let mut answers = Vec::with_capacity(prepared.len());
            for (claim_key, expires) in &prepared {
                if let Some(current) = claims_tx.get(claim_key)? {
                    let Ok(arr) = <[u8; 8]>::try_from(&current[..]) else {
                        return Err(ConflictableTransactionError::Abort(self.corrupt(format!(
                            "claim {} holds {} bytes, not an expiry",
                            hex::encode(claim_key),
                            current.len()
                        ))));
                    };
                    let current = i64::from_be_bytes(arr);
                    if current > now {
                        answers.push(false);
                        continue;
                    }
                    index_tx.remove(index_key(current, claim_key))?;
                }
                claims_tx.insert(&claim_key[..], &expires.to_be_bytes())?;
                index_tx.insert(index_key(*expires, claim_key), &[][..])?;
                answers.push(true);
            }
            Ok(answers)
        });
        let answers = match result {
            Ok(a) => a,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(self.sled_error(e)),
        };
        if !answers.contains(&true) {
            return Ok(answers);
        }
        let flush = || self.flush_to_disk();
        let durable = match self.policy {
            FlushPolicy::GroupCommit => self.group.make_durable(&flush),
            FlushPolicy::FlushEachCommit => self.group.flush_alone(&flush),
        };
        durable.map_err(|detail| StoreError::Poisoned {
            path: self.path.clone(),
            detail,
        })?;
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn expiry_encoding_sorts_numerically() {
        let values = [i64::MIN, -5, -1, 0, 1, 1_700_000_000, i64::MAX];
        for w in values.windows(2) {
            assert!(sortable(w[0]) < sortable(w[1]), "{w:?}");
        }
        for v in values {
            assert_eq!(from_sortable(&sortable(v)), Some(v));
        }
    }

    #[test]
    fn a_key_is_claimed_once_until_it_expires() {
        let (_d, s) = open();
        assert_eq!(
            s.claim("xua.replay", &[(k("a"), 100), (k("b"), 100)], 10)
                .unwrap(),
            vec![true, true]
        );
        assert_eq!(
            s.claim("xua.replay", &[(k("a"), 200), (k("c"), 100)], 50)
                .unwrap(),
            vec![false, true]
        );
        // Same key, another table: independent.
        assert_eq!(
            s.claim("login.nonce", &[(k("a"), 100)], 50).unwrap(),
            vec![true]
        );
        // A repeated key within one call: the second is a replay of the first.
        assert_eq!(
            s.claim("xua.replay", &[(k("d"), 100), (k("d"), 100)], 50)
                .unwrap(),
            vec![true, false]
        );
        // At its expiry the record no longer counts, and the key can be claimed anew.
        assert_eq!(
            s.claim("xua.replay", &[(k("a"), 300)], 100).unwrap(),
            vec![true]
        );
        assert_eq!(
            s.claim("xua.replay", &[(k("a"), 300)], 299).unwrap(),
            vec![false]
        );
    }

    #[test]
    fn bad_claims_are_refused_and_record_nothing() {
        let (_d, s) = open();
        for (table, key, exp) in [
            ("", k("a"), 100),
            ("t\0x", k("a"), 100),
            ("t", Vec::new(), 100),
            ("t", vec![1; crate::MAX_RECORD_KEY_LEN + 1], 100),
            ("t", k("a"), 10),
            ("t", k("a"), 9),
        ] {
            let r = s.claim(table, &[(k("ok"), 100), (key, exp)], 10);
            assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        }
        // Nothing of a refused call was recorded.
        assert_eq!(s.claim("t", &[(k("ok"), 100)], 10).unwrap(), vec![true]);
        assert_eq!(s.claim("t", &[], 10).unwrap(), Vec::<bool>::new());
    }

    #[test]
    fn claims_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(s.claim("t", &[(k("a"), 1_000)], 10).unwrap(), vec![true]);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.claim("t", &[(k("a"), 1_000)], 20).unwrap(), vec![false]);
    }

    #[test]
    fn expired_claims_are_purged_and_live_ones_kept() {
        let (_d, s) = open();
        let many: Vec<_> = (0..600).map(|i| (k(&format!("old{i}")), 100)).collect();
        assert!(s.claim("t", &many, 10).unwrap().iter().all(|&b| b));
        assert_eq!(
            s.claim("t", &[(k("live"), 10_000)], 10).unwrap(),
            vec![true]
        );
        // Three calls after the expiry purge everything expired (256 per call).
        for i in 0..3 {
            s.claim("t", &[(k(&format!("new{i}")), 10_000)], 200)
                .unwrap();
        }
        assert_eq!(s.trees.claims.len(), 4);
        assert_eq!(s.trees.claims_by_expiry.len(), 4);
        assert_eq!(
            s.claim("t", &[(k("live"), 10_000)], 200).unwrap(),
            vec![false]
        );
        // A purged key can be claimed again.
        assert_eq!(
            s.claim("t", &[(k("old5"), 10_000)], 200).unwrap(),
            vec![true]
        );
    }

    #[test]
    fn reclaiming_an_expired_key_leaves_one_index_entry() {
        let (_d, s) = open();
        assert_eq!(s.claim("t", &[(k("a"), 100)], 10).unwrap(), vec![true]);
        // Fill the purge budget with other expired claims so that "a" is re-claimed before the
        // purge reaches it.
        let many: Vec<_> = (0..PURGE_BATCH)
            .map(|i| (k(&format!("x{i}")), 50))
            .collect();
        s.claim("t", &many, 10).unwrap();
        assert_eq!(s.claim("t", &[(k("a"), 500)], 200).unwrap(), vec![true]);
        s.claim("t", &[(k("b"), 500)], 200).unwrap();
        assert_eq!(s.trees.claims.len(), 2);
        assert_eq!(s.trees.claims_by_expiry.len(), 2);
        assert_eq!(s.claim("t", &[(k("a"), 500)], 300).unwrap(), vec![false]);
    }

    #[test]
    fn racing_threads_on_one_key_admit_exactly_one() {
        let (_d, s) = open();
        let s = Arc::new(s);
        for round in 0..20 {
            let won = AtomicUsize::new(0);
            let key = k(&format!("race{round}"));
            std::thread::scope(|sc| {
                for _ in 0..8 {
                    sc.spawn(|| {
                        let r = s.claim("t", &[(key.clone(), 1_000)], 10).unwrap();
                        if r == vec![true] {
                            won.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
            assert_eq!(won.into_inner(), 1, "round {round}");
        }
        // The winners' claims were flushed together with others where they overlapped.
        let stats = s.commit_stats();
        assert!(
            stats.flushes >= 1 && stats.flushes <= stats.commits,
            "{stats:?}"
        );
    }

    #[test]
    fn a_refusing_gate_records_nothing() {
        let (_d, s) = open();
        let open_gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let g = open_gate.clone();
        s.set_write_gate(Box::new(move || {
            if g.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("disk below reserve".into())
            }
        }))
        .unwrap();
        assert!(matches!(
            s.claim("t", &[(k("a"), 100)], 10),
            Err(StoreError::Refused(_))
        ));
        open_gate.store(true, Ordering::SeqCst);
        assert_eq!(s.claim("t", &[(k("a"), 100)], 10).unwrap(), vec![true]);
    }
}
