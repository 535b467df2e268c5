//! The in-memory search index, rebuilt from the log at open.
//!
//! Each record has a compact entry (file position, times, outcome, interned single-valued terms);
//! every term (event id, event type, user, patient, source, node) has a posting list of entry
//! numbers in ascending order. A search walks the shortest posting list that the filter names
//! from the cursor downwards (newest first) and checks the other conditions per candidate, so
//! its cost follows the number of candidates, not the size of the log.

use std::collections::HashMap;

use super::record::IndexFields;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dim {
    EventId,
    EventType,
    User,
    Patient,
    Source,
    Node,
}

const NONE: u32 = u32::MAX;
const NO_OUTCOME: u8 = u8::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub offset: u64,
    pub len: u32,
    /// Event time, or the receive time when the message has none.
    pub time: i64,
    pub outcome: u8,
    pub parse_error: bool,
    pub event_id: u32,
    pub source: u32,
    pub node: u32,
}

/// What to search for. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// Event time at or after (Unix µs). Records without an event time use their receive time.
    pub from: Option<i64>,
    /// Event time strictly before (Unix µs).
    pub to: Option<i64>,
    /// `EventID` code (e.g. `110114`).
    pub event_id: Option<String>,
    /// One of the `EventTypeCode` codes (e.g. `110122`).
    pub event_type: Option<String>,
    /// One of the `UserID` / `AlternativeUserID` values.
    pub user: Option<String>,
    /// One of the patient ids.
    pub patient: Option<String>,
    /// `EventOutcomeIndicator`.
    pub outcome: Option<u8>,
    /// `AuditSourceID`.
    pub source: Option<String>,
    /// The sending node's certificate subject.
    pub node: Option<String>,
    /// Only records stored unparsed (`true`) or only parsed ones (`false`).
    pub parse_error: Option<bool>,
}

#[derive(Default)]
pub(crate) struct Index {
    pub entries: Vec<Entry>,
    /// One term dictionary per dimension (looked up by `&str`, no allocation).
    terms: [HashMap<Box<str>, u32>; 6],
    postings: Vec<Vec<u32>>,
}

const SNAP_MAGIC: &[u8; 4] = b"AX01";

impl Index {
    /// Encode the index as a snapshot of the log up to record `entries.len()` whose hash is
    /// `head`: `"AX01" | u64 count | [32] head | entries | 6 term dictionaries | postings |
    /// SHA-256 of everything before`.
    pub fn encode_snapshot(&self, head: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 40);
        let mut e = super::codec::Enc(&mut out);
        e.raw(SNAP_MAGIC);
        e.u64(self.entries.len() as u64);
        e.raw(head);
        for x in &self.entries {
            e.u64(x.offset);
            e.u32(x.len);
            e.i64(x.time);
            e.u8(x.outcome);
            e.u8(u8::from(x.parse_error));
            e.u32(x.event_id);
            e.u32(x.source);
            e.u32(x.node);
        }
        for dict in &self.terms {
            e.u32(dict.len() as u32);
            for (term, id) in dict {
                e.u32(*id);
                e.bytes16(term.as_bytes());
            }
        }
        e.u32(self.postings.len() as u32);
        for p in &self.postings {
            e.u32(p.len() as u32);
            for i in p {
                e.u32(*i);
            }
        }
        let h = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(h.as_ref());
        out
    }

    /// Decode a snapshot: the index and the head hash it covers. `None` when damaged or
    /// inconsistent (the caller then rebuilds from the log).
    pub fn decode_snapshot(data: &[u8]) -> Option<(Index, [u8; 32])> {
        if data.len() < 4 + 8 + 32 + 32 {
            return None;
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != sum {
            return None;
        }
        let mut d = super::codec::Dec::new(body);
        if d.take(4, "magic").ok()? != SNAP_MAGIC {
            return None;
        }
        let count = d.u64("count").ok()? as usize;
        let head = d.arr32("head").ok()?;
        if count > body.len() / 34 {
            return None;
        }
        let mut ix = Index {
            entries: Vec::with_capacity(count),
            ..Default::default()
        };
        for _ in 0..count {
            ix.entries.push(Entry {
                offset: d.u64("offset").ok()?,
                len: d.u32("len").ok()?,
                time: d.i64("time").ok()?,
                outcome: d.u8("outcome").ok()?,
                parse_error: d.u8("flag").ok()? != 0,
                event_id: d.u32("event id").ok()?,
                source: d.u32("source").ok()?,
                node: d.u32("node").ok()?,
            });
        }
        let mut max_id = 0u32;
        for dict in ix.terms.iter_mut() {
            let n = d.u32("terms").ok()?;
            for _ in 0..n {
                let id = d.u32("term id").ok()?;
                let term = std::str::from_utf8(d.bytes16("term").ok()?).ok()?;
                max_id = max_id.max(id.saturating_add(1));
                dict.insert(Box::from(term), id);
            }
        }
        let n = d.u32("postings").ok()? as usize;
        if n != max_id as usize || n > body.len() / 4 {
            return None;
        }
        ix.postings.reserve(n);
        for _ in 0..n {
            let len = d.u32("posting length").ok()? as usize;
            if len > count {
                return None;
            }
            let mut p = Vec::with_capacity(len);
            for _ in 0..len {
                let i = d.u32("posting").ok()?;
                if i as usize >= count || p.last().is_some_and(|&l| l >= i) {
                    return None;
                }
                p.push(i);
            }
            ix.postings.push(p);
        }
        d.done("snapshot").ok()?;
        // Single-valued fields must name terms that exist.
        let ok = |t: u32| t == NONE || (t as usize) < n;
        if !ix
            .entries
            .iter()
            .all(|e| ok(e.event_id) && ok(e.source) && ok(e.node))
        {
            return None;
        }
        Some((ix, head))
    }

    fn lookup(&self, dim: Dim, v: &str) -> Option<u32> {
        self.terms[dim as usize].get(v).copied()
    }

    fn term(&mut self, dim: Dim, v: &str) -> u32 {
        if let Some(t) = self.lookup(dim, v) {
            return t;
        }
        let t = self.postings.len() as u32;
        self.terms[dim as usize].insert(Box::from(v), t);
        self.postings.push(Vec::new());
        t
    }

    fn post(&mut self, dim: Dim, v: &str, idx: u32) -> u32 {
        let t = self.term(dim, v);
        let list = &mut self.postings[t as usize];
        if list.last() != Some(&idx) {
            list.push(idx);
        }
        t
    }

    /// Add the next record (entry number = current length).
    pub fn push(&mut self, offset: u64, len: u32, f: &IndexFields) {
        let idx = self.entries.len() as u32;
        let event_id = f
            .event_id
            .as_deref()
            .map_or(NONE, |v| self.post(Dim::EventId, v, idx));
        let source = f
            .source
            .as_deref()
            .map_or(NONE, |v| self.post(Dim::Source, v, idx));
        let node = if f.node.is_empty() {
            NONE
        } else {
            self.post(Dim::Node, &f.node, idx)
        };
        for v in &f.event_types {
            self.post(Dim::EventType, v, idx);
        }
        for v in &f.users {
            self.post(Dim::User, v, idx);
        }
        for v in &f.patients {
            self.post(Dim::Patient, v, idx);
        }
        self.entries.push(Entry {
            offset,
            len,
            time: f.event_time.unwrap_or(f.received),
            outcome: f.outcome.unwrap_or(NO_OUTCOME),
            parse_error: f.parse_error,
            event_id,
            source,
            node,
        });
    }

    /// Entry numbers matching `filter` with entry number `< before`, newest first, at most `limit`.
    pub fn search(&self, filter: &SearchFilter, before: u32, limit: usize) -> Vec<u32> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let before = before.min(self.entries.len() as u32);
        let mut lists: Vec<&[u32]> = Vec::new();
        let mut single = (NONE, NONE, NONE);
        for (dim, v) in [
            (Dim::EventId, &filter.event_id),
            (Dim::EventType, &filter.event_type),
            (Dim::User, &filter.user),
            (Dim::Patient, &filter.patient),
            (Dim::Source, &filter.source),
            (Dim::Node, &filter.node),
        ] {
            let Some(v) = v else { continue };
            let Some(t) = self.lookup(dim, v) else {
                return out; // a term never seen matches nothing
            };
            match dim {
                Dim::EventId => single.0 = t,
                Dim::Source => single.1 = t,
                Dim::Node => single.2 = t,
                _ => {}
            }
            lists.push(&self.postings[t as usize]);
        }
        let matches = |i: u32| -> bool {
            let e = &self.entries[i as usize];
            if filter.from.is_some_and(|f| e.time < f) || filter.to.is_some_and(|t| e.time >= t) {
                return false;
            }
            if filter.outcome.is_some_and(|o| e.outcome != o) {
                return false;
            }
            if filter.parse_error.is_some_and(|p| e.parse_error != p) {
                return false;
            }
            if (single.0 != NONE && e.event_id != single.0)
                || (single.1 != NONE && e.source != single.1)
                || (single.2 != NONE && e.node != single.2)
            {
                return false;
            }
            lists.iter().all(|l| l.binary_search(&i).is_ok())
        };
        match lists.iter().min_by_key(|l| l.len()) {
            Some(driver) => {
                let end = driver.partition_point(|&i| i < before);
                for &i in driver[..end].iter().rev() {
                    if matches(i) {
                        out.push(i);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            None => {
                for i in (0..before).rev() {
                    if matches(i) {
                        out.push(i);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(user: &str, patient: Option<&str>, t: i64, outcome: u8) -> IndexFields {
        IndexFields {
            received: t,
            event_time: Some(t),
            outcome: Some(outcome),
            event_id: Some("110114".into()),
            event_types: vec!["110122".into()],
            users: vec![user.into()],
            patients: patient.map(|p| vec![p.into()]).unwrap_or_default(),
            source: Some("src".into()),
            node: "CN=node".into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_and_pages() {
        let mut ix = Index::default();
        for i in 0..100u32 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            let patient = (i % 10 == 0).then_some("P1");
            ix.push(
                u64::from(i) * 10,
                10,
                &fields(
                    user,
                    patient,
                    i64::from(i) * 1000,
                    if i % 3 == 0 { 4 } else { 0 },
                ),
            );
        }
        let f = SearchFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(ix.search(&f, u32::MAX, 3), vec![98, 96, 94]);
        assert_eq!(ix.search(&f, 94, 2), vec![92, 90]);
        let f = SearchFilter {
            patient: Some("P1".into()),
            outcome: Some(4),
            ..Default::default()
        };
        assert_eq!(ix.search(&f, u32::MAX, 100), vec![90, 60, 30, 0]);
        let f = SearchFilter {
            from: Some(10_000),
            to: Some(13_000),
            ..Default::default()
        };
        assert_eq!(ix.search(&f, u32::MAX, 100), vec![12, 11, 10]);
        let f = SearchFilter {
            user: Some("carol".into()),
            ..Default::default()
        };
        assert!(ix.search(&f, u32::MAX, 100).is_empty());
        let f = SearchFilter {
            user: Some("bob".into()),
            patient: Some("P1".into()),
            ..Default::default()
        };
        assert!(ix.search(&f, u32::MAX, 100).is_empty());
    }
}
