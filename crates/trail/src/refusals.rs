//! Refusals of peers that proved nothing — a failed handshake on the syslog-TLS listener, a card
//! login without a valid card signature — are counted in memory at constant cost and written as
//! **one audit record per source and interval**. A flood then costs no durable write per attempt
//! (it cannot fill the disk or hold a worker on an `fsync`), while the trail still says who
//! tried, how often, when and why.
//!
//! The tally is pure (time is a parameter); [`Refusals::spawn_flusher`] is the thin task that
//! commits what accumulated, off the async workers. A batch the store refuses is kept and retried
//! with the next one: counts are never dropped, only merged.

use cps_audit::{AuditEvent, RefusalSummary};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cps_store::{AuditRecord, Store, WriteBatch, WriteOp};
use parking_lot::Mutex;

/// Distinct sources remembered per interval; beyond, they are counted together.
pub const MAX_SOURCES: usize = 4096;
/// Distinct reasons remembered per source; beyond, they are counted as `other`.
pub const MAX_REASONS: usize = 8;
/// The reason under which reasons beyond [`MAX_REASONS`] are counted.
const OTHER: &str = "other";
/// Longest reason kept (characters).
const MAX_REASON_LEN: usize = 200;

/// Refusals of one source in the current interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    first: i64,
    last: i64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, reason: &str, count: u64, first: i64, last: i64) {
        if self.count == 0 {
            self.first = first;
            self.last = last;
        } else {
            self.first = self.first.min(first);
            self.last = self.last.max(last);
        }
        self.count += count;
        let reason = if reason.chars().count() > MAX_REASON_LEN {
            reason.chars().take(MAX_REASON_LEN).collect::<String>()
        } else {
            reason.to_owned()
        };
        let distinct = self.reasons.len() - usize::from(self.reasons.contains_key(OTHER));
        if reason == OTHER || self.reasons.contains_key(&reason) || distinct < MAX_REASONS {
            *self.reasons.entry(reason).or_default() += count;
        } else {
            *self.reasons.entry(OTHER.to_owned()).or_default() += count;
        }
    }

    #[cfg(test)]
    fn merge(&mut self, other: Tally) {
        for (reason, n) in other.reasons {
            self.add(&reason, n, other.first, other.last);
        }
    }
}

#[derive(Default)]
struct State {
    by_source: HashMap<IpAddr, Tally>,
    /// Sources beyond [`MAX_SOURCES`] in this interval.
    others: Tally,
    /// Distinct sources folded into `others`.
    other_sources: u64,
}

/// Counts refusals of unauthenticated peers for one kind of audit record.
pub struct Refusals {
    /// The audit event written (`SyslogPeersRefused`, `LoginsRefused`).
    event: fn(RefusalSummary) -> AuditEvent,
    /// Its record kind, for the logs.
    kind: String,
    state: Mutex<State>,
    /// Records a failed commit left behind, written with the next batch.
    unwritten: Mutex<Vec<AuditRecord>>,
}

impl Refusals {
    pub fn new(event: fn(RefusalSummary) -> AuditEvent) -> Refusals {
        let kind = event(RefusalSummary {
            source: None,
            sources: 0,
            count: 0,
            first: 0,
            last: 0,
            reasons: Default::default(),
        })
        .kind();
        Refusals {
            event,
            kind,
            state: Mutex::new(State::default()),
            unwritten: Mutex::new(Vec::new()),
        }
    }

    /// One refusal of `source` at `now` (Unix seconds). Constant cost, no I/O.
    pub fn refused(&self, source: IpAddr, reason: &str, now: i64) {
        let mut st = self.state.lock();
        let full = st.by_source.len() >= MAX_SOURCES;
        match st.by_source.get_mut(&source) {
            Some(t) => t.add(reason, 1, now, now),
            None if !full => {
                let mut t = Tally::default();
                t.add(reason, 1, now, now);
                st.by_source.insert(source, t);
            }
            None => {
                st.others.add(reason, 1, now, now);
                st.other_sources += 1;
            }
        }
    }

    /// Refusals counted so far in this interval (all sources).
    pub fn pending(&self) -> u64 {
        let st = self.state.lock();
        st.by_source.values().map(|t| t.count).sum::<u64>() + st.others.count
    }

    /// Takes what accumulated as audit records, one per source (and one for the sources beyond
    /// [`MAX_SOURCES`]), oldest unwritten records first.
    pub fn drain(&self) -> Vec<AuditRecord> {
        let state = std::mem::take(&mut *self.state.lock());
        let mut out = std::mem::take(&mut *self.unwritten.lock());
        let mut sources: Vec<(IpAddr, Tally)> = state.by_source.into_iter().collect();
        sources.sort_by_key(|(ip, t)| (t.first, *ip));
        for (ip, t) in sources {
            out.push(self.record(Some(ip), &t, 1));
        }
        if state.others.count > 0 {
            out.push(self.record(None, &state.others, state.other_sources));
        }
        out
    }

    fn record(&self, source: Option<IpAddr>, t: &Tally, sources: u64) -> AuditRecord {
        (self.event)(RefusalSummary {
            source: source.map(|ip| ip.to_string()),
            sources,
            count: t.count,
            first: t.first,
            last: t.last,
            reasons: t.reasons.clone(),
        })
        .record(
            t.last,
            source
                .map(|ip| format!("peer:{ip}"))
                .unwrap_or_else(|| "peer:other-sources".into()),
        )
    }

    /// Puts records back after a failed commit; they go out with the next batch.
    fn keep(&self, records: Vec<AuditRecord>) {
        let mut u = self.unwritten.lock();
        // Bounded: one record per source and interval; a store down for a long time merges
        // the oldest into one summary rather than growing without end.
        u.extend(records);
        if u.len() > 4 * MAX_SOURCES {
            let total: u64 = u
                .iter()
                .map(|r| r.detail["count"].as_u64().unwrap_or(0))
                .sum();
            let first = u.iter().map(|r| r.time).min().unwrap_or(0);
            let last = u.iter().map(|r| r.time).max().unwrap_or(0);
            let mut t = Tally::default();
            t.add(
                "refusals not written in time (store unavailable)",
                total,
                first,
                last,
            );
            let merged = self.record(None, &t, u.len() as u64);
            u.clear();
            u.push(merged);
        }
    }

    /// Commits whatever accumulated (blocking: call it off the async workers).
    pub fn flush(&self, store: &dyn Store) -> Result<usize, String> {
        self.flush_with(|batch| store.commit(batch).map(|_| ()).map_err(|e| e.to_string()))
    }

    /// [`flush`](Refusals::flush) through `commit`; what it refuses is kept for the next one.
    fn flush_with(
        &self,
        commit: impl FnOnce(WriteBatch) -> Result<(), String>,
    ) -> Result<usize, String> {
        let records = self.drain();
        if records.is_empty() {
            return Ok(0);
        }
        let n = records.len();
        let mut batch = WriteBatch::new();
        for r in &records {
            batch.push(WriteOp::AppendAudit(r.clone()));
        }
        match commit(batch) {
            Ok(()) => Ok(n),
            Err(e) => {
                self.keep(records);
                Err(e)
            }
        }
    }

    /// Every `interval`, commits what accumulated, on a blocking thread.
    pub fn spawn_flusher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.pending() == 0 && self.unwritten.lock().is_empty() {
                    continue;
                }
                let (me, store) = (self.clone(), store.clone());
                match tokio::task::spawn_blocking(move || me.flush(&*store)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(records)) => {
                        tracing::warn!(
                            kind = %self.kind,
                            records,
                            "refusals of unauthenticated peers audited (one record per source)"
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::error!(kind = %self.kind, error = %e, "cannot audit refusals; kept for the next attempt")
                    }
                    Err(e) => {
                        tracing::error!(kind = %self.kind, error = %e, "refusal audit task failed")
                    }
                }
            }
        })
    }
}

impl Tally {
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_record_per_source_with_counts_times_and_reasons() {
        let r = Refusals::new(AuditEvent::SyslogPeersRefused);
        for i in 0..1000 {
            r.refused(ip("192.0.2.1"), "no client certificate", 100 + i);
        }
        r.refused(ip("192.0.2.1"), "not a registered node", 2000);
        r.refused(ip("2001:db8::7"), "handshake failed", 50);
        assert_eq!(r.pending(), 1002);
        let recs = r.drain();
        assert_eq!(recs.len(), 2);
        // Oldest first.
        assert_eq!(recs[0].actor, "peer:2001:db8::7");
        let a = &recs[1];
        assert_eq!(a.kind, "atna.refused");
        assert_eq!(a.outcome, "failure");
        assert_eq!(a.detail["count"], 1001);
        assert_eq!(a.detail["first"], 100);
        assert_eq!(a.detail["last"], 2000);
        assert_eq!(a.time, 2000);
        assert_eq!(a.detail["reasons"]["no client certificate"], 1000);
        assert_eq!(a.detail["reasons"]["not a registered node"], 1);
        // Drained: the next interval starts empty.
        assert_eq!(r.pending(), 0);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn sources_and_reasons_are_bounded() {
        let r = Refusals::new(AuditEvent::LoginsRefused);
        let n = MAX_SOURCES as u32 + 500;
        for i in 0..n {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.refused(addr, &format!("reason {}", i % 20), 7);
        }
        let long = "x".repeat(10_000);
        r.refused(ip("10.0.0.0"), &long, 8);
        let recs = r.drain();
        assert_eq!(
            recs.len(),
            MAX_SOURCES + 1,
            "sources beyond the bound share one record"
        );
        let others = recs.last().unwrap();
        assert_eq!(others.actor, "peer:other-sources");
        assert_eq!(others.detail["sources"], 500);
        assert_eq!(others.detail["count"], 500);
        let total: u64 = recs
            .iter()
            .map(|r| r.detail["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, u64::from(n) + 1, "every refusal is counted");
        for rec in &recs {
            let reasons = rec.detail["reasons"].as_object().unwrap();
            assert!(reasons.len() <= MAX_REASONS + 1, "{reasons:?}");
            assert!(reasons.keys().all(|k| k.chars().count() <= MAX_REASON_LEN));
        }
    }

    #[test]
    fn a_reason_set_overflows_into_other() {
        let mut t = Tally::default();
        for i in 0..20 {
            t.add(&format!("r{i}"), 1, 1, 1);
        }
        assert_eq!(t.total(), 20);
        assert_eq!(t.reasons.len(), MAX_REASONS + 1);
        assert_eq!(t.reasons["other"], 20 - MAX_REASONS as u64);
        let mut u = Tally::default();
        u.merge(t.clone());
        assert_eq!(u, t);
    }

    #[test]
    fn a_failed_commit_loses_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = cps_store::SledStore::open(dir.path()).unwrap();
        let r = Refusals::new(AuditEvent::SyslogPeersRefused);
        r.refused(ip("192.0.2.9"), "no client certificate", 10);
        let e = r.flush_with(|_| Err("disk full".into())).unwrap_err();
        assert_eq!(e, "disk full");
        r.refused(ip("192.0.2.9"), "no client certificate", 20);
        assert_eq!(
            r.flush(&store).unwrap(),
            2,
            "the kept record and the new one"
        );
        let entries = store.audit_range(1, 10).unwrap();
        let counts: u64 = entries
            .iter()
            .map(|e| e.record.detail["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counts, 2);
        assert_eq!(r.flush(&store).unwrap(), 0, "nothing left");
    }

    #[test]
    fn a_long_outage_merges_kept_records_into_one_summary() {
        let r = Refusals::new(AuditEvent::SyslogPeersRefused);
        for round in 0..5u32 {
            for i in 0..MAX_SOURCES as u32 {
                let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                r.refused(addr, "no client certificate", i64::from(round));
            }
            let _ = r.flush_with(|_| Err("store down".into()));
        }
        let kept = r.drain();
        let total: u64 = kept
            .iter()
            .map(|x| x.detail["count"].as_u64().unwrap())
            .sum();
        assert!(kept.len() <= 4 * MAX_SOURCES, "{}", kept.len());
        assert_eq!(total, 5 * MAX_SOURCES as u64, "merged, not dropped");
    }
}
