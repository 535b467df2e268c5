//! The disk-space guard of the cps-trust appliance.
//!
//! **Invariant: while any watched filesystem is below its reserve, nothing is written: every store
//! commit through [`DiskGuard::write_gate`] and every write point that calls
//! [`DiskGuard::check_now`] is refused before it touches the disk.**
//!
//! With it the appliance refuses new work **before** a full disk can make the
//! store, the audit log or the outgoing queue fail, and takes work again by itself once space is
//! back.
//!
//! Free space (`statvfs`, the space available to the appliance's user) of every filesystem that
//! holds the store, the audit log or the queue is compared with a reserve,
//! `store.min_free_mb`. Below it the guard is **full**: state-changing HTTPS requests answer 503 (the appliance's front door reads [`DiskGuard::admit`])
//! with the reason, every store commit (the store's write gate) and every audit trail write is
//! refused before it touches the disk, the syslog-TLS repository stops reading (its peers are held back by TCP flow
//! control), `/health` says why, and an alarm is logged. The guard clears once every
//! filesystem has the reserve plus a quarter again (a high mark, so that it does not flap around
//! the low one, as Elasticsearch's disk watermarks do), and the episode is then audited (it
//! could not be written while the disk was full).
//!
//! The state is refreshed every [`CHECK_EVERY`] and by every write point, which calls
//! [`DiskGuard::check_now`] right before writing (a few microseconds next to the `fsync` that
//! follows); the HTTP front door reads the cached state only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cps_store::{Store, StoreError, WriteBatch, WriteOp};
use parking_lot::Mutex;

/// How often the monitor refreshes the state.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One filesystem to watch, by a path on it.
#[derive(Debug, Clone)]
struct Watched {
    what: &'static str,
    path: PathBuf,
}

/// One measurement of one watched path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Space {
    pub what: &'static str,
    pub path: PathBuf,
    /// Bytes available to the appliance; `None` when it cannot be read (counted as full).
    pub free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A full-disk episode.
#[derive(Debug, Clone)]
struct Episode {
    since: i64,
    reason: String,
    lowest_free: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    full: Option<Episode>,
    last: Vec<Space>,
    /// Episodes over but not yet audited (the audit record is written once space is back).
    unaudited: Vec<(Episode, i64)>,
}

/// Watches free space; see the module documentation.
pub struct DiskGuard {
    watched: Vec<Watched>,
    min_free: u64,
    resume_free: u64,
    state: Mutex<State>,
    full_tx: tokio::sync::watch::Sender<Option<String>>,
}

use cps_ct::unix_now;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `path`, or its nearest existing ancestor (a directory created later is on its parent's
/// filesystem until something is mounted there).
fn existing(path: &Path) -> &Path {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p
}

fn free_space(path: &Path) -> Result<u64, String> {
    let st = rustix::fs::statvfs(existing(path)).map_err(|e| e.to_string())?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl DiskGuard {
    /// A guard over `watched` (what, path) with a reserve of `min_free_mb` MiB.
    pub fn new(watched: Vec<(&'static str, PathBuf)>, min_free_mb: u64) -> Arc<DiskGuard> {
        let min_free = min_free_mb.saturating_mul(1024 * 1024);
        let (full_tx, _) = tokio::sync::watch::channel(None);
        let guard = Arc::new(DiskGuard {
            watched: watched
                .into_iter()
                .map(|(what, path)| Watched { what, path })
                .collect(),
            min_free,
            resume_free: min_free.saturating_add(min_free / 4),
            state: Mutex::new(State::default()),
            full_tx,
        });
        let _ = guard.check_now();
        guard
    }

    /// Measures now and updates the state; `Err` with the reason while the disk is full. Call
    /// it right before writing (it costs one `statvfs` per watched path).
    pub fn check_now(&self) -> Result<(), String> {
        let spaces: Vec<Space> = self
            .watched
            .iter()
            .map(|w| match free_space(&w.path) {
                Ok(free) => Space {
                    what: w.what,
                    path: w.path.clone(),
                    free_bytes: Some(free),
                    error: None,
                },
                Err(e) => Space {
                    what: w.what,
                    path: w.path.clone(),
                    free_bytes: None,
                    error: Some(e),
                },
            })
            .collect();
        let lowest = spaces
            .iter()
            .filter_map(|s| s.free_bytes)
            .min()
            .unwrap_or(0);
        let below = |mark: u64| {
            spaces
                .iter()
                .find(|s| s.free_bytes.is_none_or(|f| f < mark))
        };
        let mut st = self.state.lock();
        let verdict = match &mut st.full {
            Some(ep) => {
                ep.lowest_free = Some(ep.lowest_free.map_or(lowest, |l| l.min(lowest)));
                if below(self.resume_free).is_some() {
                    Err(ep.reason.clone())
                } else {
                    let ep = st.full.take().expect("matched");
                    let now = unix_now();
                    tracing::warn!(
                        since = ep.since,
                        free = %mib(lowest),
                        "disk space is back above the reserve: the appliance takes new work again"
                    );
                    st.unaudited.push((ep, now));
                    Ok(())
                }
            }
            None => match below(self.min_free) {
                None => Ok(()),
                Some(s) => {
                    let reason = match (&s.free_bytes, &s.error) {
                        (Some(free), _) => format!(
                            "disk full: {} free on the filesystem of the {} ({}), below the reserve of {} (store.min_free_mb)",
                            mib(*free),
                            s.what,
                            s.path.display(),
                            mib(self.min_free)
                        ),
                        (None, e) => format!(
                            "disk full: the free space of the {} ({}) cannot be read: {}",
                            s.what,
                            s.path.display(),
                            e.as_deref().unwrap_or("unknown error")
                        ),
                    };
                    tracing::error!(alarm = %reason, "DISK FULL: new work is refused until space is freed");
                    st.full = Some(Episode {
                        since: unix_now(),
                        reason: reason.clone(),
                        lowest_free: Some(lowest),
                    });
                    Err(reason)
                }
            },
        };
        st.last = spaces;
        let state = verdict.as_ref().err().cloned();
        drop(st);
        self.full_tx.send_if_modified(|cur| {
            if *cur != state {
                *cur = state;
                true
            } else {
                false
            }
        });
        verdict
    }

    /// The state as last measured (no I/O): `Err` with the reason while the disk is full.
    pub fn admit(&self) -> Result<(), String> {
        match &*self.full_tx.borrow() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// The reason while full, `None` otherwise; changes as the state does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.full_tx.subscribe()
    }

    /// The state for `/health`.
    pub fn report(&self) -> serde_json::Value {
        let st = self.state.lock();
        serde_json::json!({
            "status": if st.full.is_some() { "full" } else { "ok" },
            "reason": st.full.as_ref().map(|e| e.reason.clone()),
            "since": st.full.as_ref().map(|e| e.since),
            "min_free_bytes": self.min_free,
            "resume_free_bytes": self.resume_free,
            "filesystems": st.last,
        })
    }

    /// Writes the audit records of the episodes that ended (one each); kept if the store
    /// refuses them, for the next call. Blocking.
    pub fn audit_episodes(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let episodes = std::mem::take(&mut self.state.lock().unaudited);
        if episodes.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for (ep, until) in &episodes {
            batch.push(WriteOp::AppendAudit(
                cps_audit::AuditEvent::DiskFull {
                    since: ep.since,
                    until: *until,
                    reason: ep.reason.clone(),
                    lowest_free_bytes: ep.lowest_free,
                    min_free_bytes: self.min_free,
                }
                .record(*until, "appliance"),
            ));
        }
        match store.commit(batch) {
            Ok(_) => Ok(episodes.len()),
            Err(e) => {
                let mut st = self.state.lock();
                let later = std::mem::take(&mut st.unaudited);
                st.unaudited = episodes;
                st.unaudited.extend(later);
                Err(e)
            }
        }
    }

    /// Refreshes the state every [`CHECK_EVERY`] and audits the episodes that ended, on a
    /// blocking thread.
    pub fn spawn_monitor(self: Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (guard, store) = (self.clone(), store.clone());
                let r = tokio::task::spawn_blocking(move || {
                    let _ = guard.check_now();
                    guard.audit_episodes(&*store)
                })
                .await;
                match r {
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot audit the end of a full-disk episode yet")
                    }
                    Err(e) => tracing::error!(error = %e, "disk monitor task failed"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}

impl DiskGuard {
    /// The store's write gate: every commit re-measures and is refused while the disk is full.
    pub fn write_gate(self: &Arc<Self>) -> cps_store::WriteGate {
        let guard = self.clone();
        Box::new(move || guard.check_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Below the reserve the guard is full (commits refused before reaching the store); above
    /// the high mark it clears by itself, and the episode is audited once.
    #[test]
    fn refuses_below_the_reserve_and_recovers_above_the_high_mark() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        let store = Arc::new(cps_store::SledStore::open(dir.path().join("store")).unwrap());
        // A reserve above what is free: full at once.
        let over = free / (1024 * 1024) + 64;
        let guard = DiskGuard::new(vec![("store", dir.path().join("store"))], over);
        let reason = guard.check_now().unwrap_err();
        assert!(
            reason.contains("disk full") && reason.contains("store.min_free_mb"),
            "{reason}"
        );
        assert_eq!(guard.admit().unwrap_err(), reason);
        assert_eq!(guard.report()["status"], "full");
        store.set_write_gate(guard.write_gate()).unwrap();
        let rec = || {
            WriteBatch::new().with(WriteOp::AppendAudit(cps_store::AuditRecord {
                time: 1,
                kind: "test".into(),
                actor: "t".into(),
                outcome: "success".into(),
                detail: serde_json::json!({}),
                node: None,
            }))
        };
        let e = store.commit(rec()).unwrap_err();
        assert!(matches!(e, StoreError::Refused(_)), "{e}");
        assert_eq!(store.audit_len().unwrap(), 0, "nothing reached the store");
        assert_eq!(guard.audit_episodes(&*store).unwrap(), 0, "still full");
        let mut rx = guard.subscribe();
        assert!(rx.borrow_and_update().is_some());

        // The full guard recovers once its marks fit (simulated by a guard whose reserve is
        // lowered: the marks are fields, the filesystem is real).
        let g = Arc::new(DiskGuard {
            watched: guard.watched.clone(),
            min_free: 1,
            resume_free: 2,
            state: Mutex::new(State {
                full: guard.state.lock().full.clone(),
                ..State::default()
            }),
            full_tx: tokio::sync::watch::channel(Some(reason.clone())).0,
        });
        assert!(g.check_now().is_ok());
        assert!(g.admit().is_ok());
        assert_eq!(g.report()["status"], "ok");
        let store = cps_store::SledStore::open(dir.path().join("store2")).unwrap();
        store.set_write_gate(g.write_gate()).unwrap();
        store.commit(rec()).unwrap();
        assert!(store.set_write_gate(g.write_gate()).is_err(), "set once");
        assert_eq!(g.audit_episodes(&store).unwrap(), 1);
        assert_eq!(g.audit_episodes(&store).unwrap(), 0, "audited once");
        let last = store.audit_range(1, 10).unwrap();
        let ep = last.iter().find(|e| e.record.kind == "disk.full").unwrap();
        assert_eq!(ep.record.detail["reason"], reason.as_str());
    }

    /// Between the two marks the state does not change (no flapping around the reserve).
    #[test]
    fn hysteresis_between_the_marks() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        let g = DiskGuard::new(vec![("store", dir.path().to_path_buf())], 1);
        // Marks around the real free space: below resume, above min.
        let mut st = g.state.lock();
        st.full = Some(Episode {
            since: 1,
            reason: "disk full: test".into(),
            lowest_free: None,
        });
        drop(st);
        let g = DiskGuard {
            watched: g.watched.clone(),
            min_free: free / 2,
            resume_free: free.saturating_mul(2),
            state: Mutex::new(std::mem::take(&mut *g.state.lock())),
            full_tx: tokio::sync::watch::channel(None).0,
        };
        assert!(g.check_now().is_err(), "stays full until the high mark");
        let h = DiskGuard {
            watched: g.watched.clone(),
            min_free: free / 2,
            resume_free: free.saturating_mul(2),
            state: Mutex::new(State::default()),
            full_tx: tokio::sync::watch::channel(None).0,
        };
        assert!(h.check_now().is_ok(), "stays ok until the low mark");
    }
}
