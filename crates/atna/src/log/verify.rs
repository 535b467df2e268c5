//! `verify`: prove that a log directory is intact, or name its first problem.
//!
//! Intact means: every record chains to the one before it; every checkpoint is signed by a
//! trusted key (within the key's validity), in order, and matches the records it covers; the
//! records reach every checkpoint; every anchor (a checkpoint recorded outside the directory,
//! such as the appliance's store) is in `checkpoints.log` with the same head; records present
//! are covered by at least one checkpoint; and the records after the last checkpoint (the
//! unsigned tail) are no more, and no later, than that checkpoint's policy allows. A log that
//! lost checkpoints, or records after its last checkpoint, fails one of these.
//!
//! The directory may be written while it is verified (a running repository): anchors are read
//! before the files, a checkpoint is made durable before any record after it is written, and
//! `checkpoints.log` is read again when the tail looks too long, so that records appended
//! meanwhile are not mistaken for an unsigned tail.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checkpoint::{self, Checkpoint, CheckpointPolicy, EntryError, EntryReader};
use super::record::{self, GENESIS_HASH};
use super::scan::{Item, Scanner};
use super::{CHECKPOINTS, RECORDS};

/// A key trusted to sign checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// Checkpoints signed after this time (Unix µs) are refused: the end of its certificate's
    /// validity, or its revocation.
    pub not_after: Option<i64>,
    /// What to call it in messages (e.g. "certificate 0A1B… (audit-checkpoint)").
    pub name: String,
}

impl TrustedKey {
    /// A key trusted without a time limit.
    pub fn new(spki: &[u8], name: &str) -> TrustedKey {
        TrustedKey {
            spki: spki.to_vec(),
            not_after: None,
            name: name.to_owned(),
        }
    }
}

/// A checkpoint recorded outside the log directory, which the log must still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The record it covers.
    pub seq: u64,
    /// That record's hash.
    pub head: [u8; 32],
    /// Where and when it was recorded, for messages (e.g. "anchored in the store at
    /// 2026-11-22T10:00:00Z").
    pub place: String,
}

/// What to verify against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The keys whose checkpoints are trusted.
    pub keys: Vec<TrustedKey>,
    /// The policy assumed for checkpoints that do not carry one (the first format) and for a
    /// log with no checkpoint.
    pub default_policy: CheckpointPolicy,
    /// Slack on the time rule (clock adjustments, the time a batch takes to write).
    pub grace: Duration,
    /// Checkpoints kept elsewhere that the log must hold.
    pub anchors: Vec<Anchor>,
}

/// The grace on a tail's time rule unless configured otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

impl VerifyOptions {
    /// Verify against one key, the default policy of [`LogOptions`](super::LogOptions), no
    /// anchor.
    pub fn key(spki: &[u8]) -> VerifyOptions {
        VerifyOptions {
            keys: vec![TrustedKey::new(spki, "the checkpoint key")],
            default_policy: super::LogOptions::default().policy(),
            grace: DEFAULT_GRACE,
            anchors: Vec::new(),
        }
    }

    /// The same, with `policy` as the default policy.
    pub fn with_policy(mut self, policy: CheckpointPolicy) -> VerifyOptions {
        self.default_policy = policy;
        self
    }

    /// The same, with one more anchor.
    pub fn with_anchor(mut self, anchor: Anchor) -> VerifyOptions {
        self.anchors.push(anchor);
        self
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records (the last sequence number).
    pub records: u64,
    /// Hash of the last record.
    pub head: [u8; 32],
    /// Number of checkpoints whose signature and hash were checked.
    pub checkpoints: usize,
    /// Sequence number covered by the last signed checkpoint (0 when none).
    pub last_checkpoint_seq: u64,
    /// When the last checkpoint was signed (Unix µs).
    pub last_checkpoint_time: Option<i64>,
    /// Records after the last checkpoint, within its policy (a crash before the next
    /// checkpoint, or records being written right now).
    pub unsigned_tail: u64,
    /// Bytes of a torn last record (a crash during an unacknowledged append), if any.
    pub torn_tail_bytes: u64,
    /// Bytes of a torn last checkpoint (a crash while appending it), if any.
    pub torn_checkpoint_bytes: u64,
    /// Records whose message was stored unparsed.
    pub parse_errors: u64,
    /// Anchors found in the log.
    pub anchors: usize,
    /// Names of the keys that signed the checkpoints, in order of first use.
    pub keys_used: Vec<String>,
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordProblem {
    /// The record found at this position has another sequence number: the expected record was
    /// deleted, or records were reordered.
    Sequence {
        /// The sequence number found instead.
        found: u64,
    },
    /// The stored hash does not match the record's content: the record was modified.
    Hash,
    /// The record's previous-hash field does not match the previous record: a record before it
    /// was replaced (content and hash rewritten).
    Chain,
    /// Not decodable.
    Malformed(String),
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordProblem::Sequence { found } => {
                write!(
                    f,
                    "missing or out of order (record {found} found in its place)"
                )
            }
            RecordProblem::Hash => f.write_str("modified (its hash does not match its content)"),
            RecordProblem::Chain => f.write_str(
                "does not chain to the record before it (an earlier record was replaced)",
            ),
            RecordProblem::Malformed(s) => write!(f, "malformed: {s}"),
        }
    }
}

/// The state of `checkpoints.log` when no checkpoint covers the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFile {
    /// There is no `checkpoints.log`.
    Missing,
    /// It is empty.
    Empty,
    /// It holds only a torn entry of this many bytes.
    Torn(u64),
}

impl std::fmt::Display for CheckpointFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointFile::Missing => f.write_str("checkpoints.log is missing"),
            CheckpointFile::Empty => f.write_str("checkpoints.log is empty"),
            CheckpointFile::Torn(n) => {
                write!(f, "checkpoints.log holds only {n} bytes of a torn entry")
            }
        }
    }
}

/// Why the unsigned tail is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailProblem {
    /// More records than the last checkpoint's policy lets go unsigned.
    TooMany {
        /// Records after the last checkpoint.
        count: u64,
        /// The policy's `every`.
        every: u64,
    },
    /// A record received later than the next checkpoint was due.
    TooLate {
        /// The record.
        seq: u64,
        /// When it was received (Unix µs).
        received: i64,
        /// The policy's interval plus the grace.
        allowed: Duration,
    },
}

/// Why a log does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file could not be read.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first bad record.
    #[error("record {seq} (at byte {offset}) {problem}")]
    Record {
        /// Sequence number expected at this position: the first bad record.
        seq: u64,
        /// File offset.
        offset: u64,
        /// What is wrong.
        problem: RecordProblem,
    },
    /// The log ends before the last signed checkpoint: records were cut off.
    #[error("log truncated: it ends at record {last_seq} but a signed checkpoint covers record {checkpoint_seq}; {} missing", range_is(last_seq + 1, *checkpoint_seq))]
    Truncated {
        /// Last record present.
        last_seq: u64,
        /// Record covered by the last checkpoint.
        checkpoint_seq: u64,
    },
    /// The chain up to a signed checkpoint differs from what was signed: records at or before
    /// `seq` were rewritten (content, hashes and links all recomputed).
    #[error(
        "records up to {seq} differ from signed checkpoint {index}: the chain after record {after} was rewritten"
    )]
    CheckpointMismatch {
        /// Index of the checkpoint in `checkpoints.log`.
        index: usize,
        /// The record it covers.
        seq: u64,
        /// The previous checkpoint's record (0 when none): the first bad record is after it.
        after: u64,
    },
    /// A checkpoint is malformed, not signed by a trusted key, or out of order.
    #[error("checkpoint {index} (record {seq}): {reason}")]
    BadCheckpoint {
        /// Index of the checkpoint in `checkpoints.log`.
        index: usize,
        /// The record it claims to cover.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint recorded outside the log is not in `checkpoints.log`.
    #[error("{}", anchor_missing(anchor, *last_checkpoint, *records))]
    AnchorMissing {
        /// The anchor.
        anchor: Anchor,
        /// The last checkpoint the file holds, if any.
        last_checkpoint: Option<u64>,
        /// Records in the log.
        records: u64,
    },
    /// `checkpoints.log` holds another checkpoint of the anchored record.
    #[error(
        "checkpoints.log was rewritten: its checkpoint {index} of record {} has another head than the one {}", anchor.seq, anchor.place
    )]
    AnchorMismatch {
        /// The anchor.
        anchor: Anchor,
        /// Index of the differing checkpoint.
        index: usize,
    },
    /// Records and no checkpoint at all.
    #[error(
        "no signed checkpoint covers the log: {} unprotected ({file}); a log with records and no checkpoint is not intact", range_is(1, *records)
    )]
    NoCheckpoint {
        /// Records in the log.
        records: u64,
        /// What `checkpoints.log` is.
        file: CheckpointFile,
    },
    /// The unsigned tail breaks the last checkpoint's policy: later checkpoints were removed (or
    /// could not be made).
    #[error("{}", unsigned_tail(*last_checkpoint, *checkpoint_time, *records, problem))]
    UnsignedTail {
        /// The record the last checkpoint covers.
        last_checkpoint: u64,
        /// When it was signed (Unix µs).
        checkpoint_time: i64,
        /// Records in the log.
        records: u64,
        /// What is wrong.
        problem: TailProblem,
    },
}

/// `2026-11-22T10:00:00Z` for Unix µs.
pub(crate) fn when(us: i64) -> String {
    let t = crate::time_fmt::from_unix_micros(us);
    let s = crate::time_fmt::xml_datetime(t);
    // Drop the microseconds: messages name seconds.
    match s.find('.') {
        Some(dot) => format!("{}Z", &s[..dot]),
        None => s,
    }
}

/// "record N is" / "records A to B are".
fn range_is(first: u64, last: u64) -> String {
    if first == last {
        format!("record {first} is")
    } else {
        format!("records {first} to {last} are")
    }
}

fn anchor_missing(anchor: &Anchor, last_checkpoint: Option<u64>, records: u64) -> String {
    let have = match last_checkpoint {
        Some(s) => format!("the last checkpoint it holds covers record {s}"),
        None => "it holds no checkpoint".to_owned(),
    };
    let from = last_checkpoint.map_or(1, |s| s + 1);
    let lost = if records < anchor.seq {
        if records < from {
            format!(
                "{} missing from records.log",
                range_is(from.min(records + 1), anchor.seq)
            )
        } else {
            format!(
                "{} no longer covered by a checkpoint and {} missing from records.log",
                range_is(from, records),
                range_is(records + 1, anchor.seq)
            )
        }
    } else {
        format!(
            "{} no longer covered by a checkpoint",
            range_is(from, anchor.seq)
        )
    };
    format!(
        "checkpoints.log was cut back or deleted: the checkpoint of record {} ({}) is missing; {have} and the log ends at record {records}: {lost}",
        anchor.seq, anchor.place
    )
}

fn unsigned_tail(last: u64, time: i64, records: u64, problem: &TailProblem) -> String {
    let why = match problem {
        TailProblem::TooMany { count, every } => format!(
            "{count} records follow it, but its policy signs a checkpoint every {every} records"
        ),
        TailProblem::TooLate {
            seq,
            received,
            allowed,
        } => format!(
            "record {seq} was received at {}, more than {} s after it, when the next checkpoint was due",
            when(*received),
            allowed.as_secs()
        ),
    };
    format!(
        "checkpoints are missing: the last checkpoint covers record {last} (signed at {}); {why}; {} not covered by any checkpoint (checkpoints were removed, or could not be signed: nothing is signed while the clock is not trusted)",
        when(time),
        range_is(last + 1, records)
    )
}

impl VerifyError {
    /// Sequence number of the first record that cannot be trusted, when the failure names one.
    pub fn first_bad_record(&self) -> Option<u64> {
        match self {
            VerifyError::Record { seq, .. } => Some(*seq),
            VerifyError::Truncated { last_seq, .. } => Some(last_seq + 1),
            VerifyError::CheckpointMismatch { after, .. } => Some(after + 1),
            VerifyError::AnchorMissing {
                last_checkpoint, ..
            } => Some(last_checkpoint.map_or(1, |s| s + 1)),
            VerifyError::NoCheckpoint { .. } => Some(1),
            VerifyError::UnsignedTail {
                last_checkpoint, ..
            } => Some(last_checkpoint + 1),
            _ => None,
        }
    }
}

/// The file, or `None` if it does not exist.
fn open_if_present(path: &Path) -> Result<Option<File>, VerifyError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(VerifyError::Io {
            op: "open",
            path: path.to_owned(),
            source,
        }),
    }
}

fn entry_error(e: EntryError, path: &Path) -> VerifyError {
    match e {
        EntryError::Io(source) => VerifyError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        },
        EntryError::Bad {
            offset,
            index,
            reason,
        } => VerifyError::BadCheckpoint {
            index,
            seq: 0,
            reason: format!("malformed at byte {offset}: {reason}"),
        },
    }
}

/// What is kept of a checkpoint once read and checked.
#[derive(Debug, Clone, Copy)]
struct Seen {
    index: usize,
    seq: u64,
    head: [u8; 32],
    time: i64,
    policy: Option<CheckpointPolicy>,
}

/// Reads `checkpoints.log` one entry at a time and checks each: key, validity, signature,
/// order; notes the anchors it holds. Memory does not grow with the file.
struct Checkpoints<'a> {
    opts: &'a VerifyOptions,
    path: PathBuf,
    reader: EntryReader,
    key_ids: Vec<Vec<u8>>,
    keys_used: Vec<String>,
    /// The last checkpoint read.
    last: Option<Seen>,
    /// For each anchor of `opts`, whether a checkpoint of the file is it.
    found: Vec<bool>,
}

impl<'a> Checkpoints<'a> {
    fn open(opts: &'a VerifyOptions, path: PathBuf) -> Result<Self, VerifyError> {
        let reader = EntryReader::open(&path).map_err(|source| VerifyError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
        Ok(Checkpoints {
            opts,
            path,
            reader,
            key_ids: opts
                .keys
                .iter()
                .map(|k| checkpoint::key_id(&k.spki))
                .collect(),
            keys_used: Vec::new(),
            last: None,
            found: vec![false; opts.anchors.len()],
        })
    }

    /// The next checkpoint of the file (as it is now), checked.
    fn next(&mut self) -> Result<Option<Seen>, VerifyError> {
        let Some(c) = self
            .reader
            .next_entry()
            .map_err(|e| entry_error(e, &self.path))?
        else {
            return Ok(None);
        };
        let index = self.reader.count() - 1;
        let bad = |reason: String| VerifyError::BadCheckpoint {
            index,
            seq: c.seq,
            reason,
        };
        let Some(k) = self.key_ids.iter().position(|id| *id == c.key_id) else {
            return Err(bad(format!(
                "signed by key {}, which no trusted certificate holds",
                hex(&c.key_id)
            )));
        };
        let key = &self.opts.keys[k];
        c.verify(&key.spki)
            .map_err(|reason| bad(format!("{reason} ({})", key.name)))?;
        if let Some(limit) = key.not_after
            && c.time > limit
        {
            return Err(bad(format!(
                "signed at {}, after {} stopped being valid at {}",
                when(c.time),
                key.name,
                when(limit)
            )));
        }
        if let Some(p) = &self.last {
            if c.seq < p.seq {
                return Err(bad(format!(
                    "does not follow checkpoint of record {}",
                    p.seq
                )));
            }
            if c.seq == p.seq && c.head != p.head {
                return Err(bad(format!(
                    "a second checkpoint of record {} with another head",
                    c.seq
                )));
            }
        }
        for (i, a) in self.opts.anchors.iter().enumerate() {
            if a.seq == c.seq {
                if a.head != c.head {
                    return Err(VerifyError::AnchorMismatch {
                        anchor: a.clone(),
                        index,
                    });
                }
                self.found[i] = true;
            }
        }
        if !self.keys_used.contains(&key.name) {
            self.keys_used.push(key.name.clone());
        }
        let seen = Seen {
            index,
            seq: c.seq,
            head: c.head,
            time: c.time,
            policy: c.policy,
        };
        self.last = Some(seen);
        Ok(Some(seen))
    }

    fn state(&self) -> CheckpointFile {
        match (self.reader.existed(), self.reader.pending()) {
            (false, _) => CheckpointFile::Missing,
            (true, 0) => CheckpointFile::Empty,
            (true, n) => CheckpointFile::Torn(n),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The records after the last matched checkpoint: `(seq, hash, received)`, kept so that a
/// checkpoint read late (while the log is being written) can be matched, and so that the
/// tail's times can be checked. At most [`TAIL_KEPT`] are kept.
struct Tail {
    base_seq: u64,
    base_hash: [u8; 32],
    entries: VecDeque<(u64, [u8; 32], i64)>,
    /// Records after the base (entries may hold fewer).
    count: u64,
    /// Latest reception time among the tail's records and the first record received then.
    latest: Option<(u64, i64)>,
    /// Whether the first records of the tail were dropped from `entries`.
    dropped: bool,
}

const TAIL_KEPT: usize = 1 << 20;

impl Tail {
    fn new() -> Tail {
        Tail {
            base_seq: 0,
            base_hash: GENESIS_HASH,
            entries: VecDeque::new(),
            count: 0,
            latest: None,
            dropped: false,
        }
    }

    fn push(&mut self, seq: u64, hash: [u8; 32], received: i64) {
        if self.entries.len() == TAIL_KEPT {
            self.entries.pop_front();
            self.dropped = true;
        }
        self.entries.push_back((seq, hash, received));
        self.count += 1;
        if self.latest.is_none_or(|(_, t)| received > t) {
            self.latest = Some((seq, received));
        }
    }

    /// A checkpoint at `seq` matched: the tail starts after it.
    fn cut(&mut self, seq: u64, hash: [u8; 32]) {
        while self.entries.front().is_some_and(|e| e.0 <= seq) {
            self.entries.pop_front();
        }
        self.count -= seq - self.base_seq;
        self.base_seq = seq;
        self.base_hash = hash;
        self.latest = self
            .entries
            .iter()
            .fold(None, |acc: Option<(u64, i64)>, e| match acc {
                Some((_, t)) if t >= e.2 => acc,
                _ => Some((e.0, e.2)),
            });
        if self.entries.len() as u64 == self.count {
            self.dropped = false;
        }
    }

    /// The hash of record `seq` if the tail holds it.
    fn hash_of(&self, seq: u64) -> Option<[u8; 32]> {
        if seq == self.base_seq {
            return Some(self.base_hash);
        }
        self.entries.iter().find(|e| e.0 == seq).map(|e| e.1)
    }
}

/// The matched checkpoint a tail starts after.
#[derive(Debug, Clone, Copy)]
struct Base {
    seq: u64,
    time: i64,
    policy: Option<CheckpointPolicy>,
}

/// Match a checkpoint read after its record was scanned (a log being written) against the
/// tail's hashes.
fn match_late(tail: &mut Tail, c: &Seen) -> Result<(), VerifyError> {
    match tail.hash_of(c.seq) {
        Some(h) if h == c.head => {
            tail.cut(c.seq, h);
            Ok(())
        }
        Some(_) => Err(VerifyError::CheckpointMismatch {
            index: c.index,
            seq: c.seq,
            after: tail.base_seq,
        }),
        None => Err(VerifyError::BadCheckpoint {
            index: c.index,
            seq: c.seq,
            reason: "written while the log was being read, for a record no longer held in memory: run the verification again".into(),
        }),
    }
}

/// Verify the log in `dir` (see the module documentation for what is checked).
///
/// Detects a deleted, reordered, modified or inserted record anywhere; truncation of the
/// records up to the last checkpoint; a `checkpoints.log` deleted, truncated or cut back when
/// an anchor or the tail rules show it; and checkpoints signed by any other key. Memory does not
/// grow with the log (the records after the last checkpoint are kept, up to a million).
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let rpath = dir.join(RECORDS);
    let mut cps = Checkpoints::open(opts, dir.join(CHECKPOINTS))?;
    let f = open_if_present(&rpath)?;
    let mut report = VerifyReport {
        records: 0,
        head: GENESIS_HASH,
        checkpoints: 0,
        last_checkpoint_seq: 0,
        last_checkpoint_time: None,
        unsigned_tail: 0,
        torn_tail_bytes: 0,
        torn_checkpoint_bytes: 0,
        parse_errors: 0,
        anchors: 0,
        keys_used: Vec::new(),
    };
    // The next checkpoint read but not yet matched (its record is ahead), the last matched one,
    // and the record at which checkpoints.log was last found to end.
    let mut ahead: Option<Seen> = None;
    let mut matched: Option<Base> = None;
    let mut cp_end_at: Option<u64> = None;
    let mut tail = Tail::new();
    if let Some(f) = f {
        let mut scanner = Scanner::new(f);
        let mut expected = 1u64;
        let mut prev = GENESIS_HASH;
        loop {
            let item = scanner.next_item().map_err(|source| VerifyError::Io {
                op: "read",
                path: rpath.clone(),
                source,
            })?;
            let Some(item) = item else { break };
            let (offset, body, hash) = match item {
                Item::Frame {
                    offset, body, hash, ..
                } => (offset, body, hash),
                Item::Torn { have, .. } => {
                    report.torn_tail_bytes = have;
                    break;
                }
                Item::Bad { offset, reason } => {
                    if let Ok(Some(zeros)) = super::scan::zero_tail(&rpath, offset) {
                        report.torn_tail_bytes = zeros;
                        break;
                    }
                    return Err(VerifyError::Record {
                        seq: expected,
                        offset,
                        problem: RecordProblem::Malformed(reason),
                    });
                }
            };
            let bad = |problem| VerifyError::Record {
                seq: expected,
                offset,
                problem,
            };
            if body.len() < 48 {
                return Err(bad(RecordProblem::Malformed("body too short".into())));
            }
            let seq = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
            if seq != expected {
                return Err(bad(RecordProblem::Sequence { found: seq }));
            }
            let mut link = [0u8; 32];
            link.copy_from_slice(&body[8..40]);
            if record::hash_body(seq, &link, &body[40..]) != hash {
                return Err(bad(RecordProblem::Hash));
            }
            if link != prev {
                return Err(bad(RecordProblem::Chain));
            }
            let rec = record::decode_body_opts(&body, hash, false)
                .map_err(|e| bad(RecordProblem::Malformed(e.0)))?;
            if rec.summary.parse_error() {
                report.parse_errors += 1;
            }
            tail.push(seq, hash, rec.received);
            // Every checkpoint up to this record: read (when checkpoints.log ended, again only
            // a while later) and matched.
            loop {
                if ahead.is_none() && cp_end_at.is_none_or(|at| seq >= at + 256) {
                    ahead = cps.next()?;
                    cp_end_at = ahead.is_none().then_some(seq);
                }
                match ahead {
                    Some(c) if c.seq <= seq => {
                        if c.seq == seq && c.head != hash {
                            return Err(VerifyError::CheckpointMismatch {
                                index: c.index,
                                seq,
                                after: matched.map_or(0, |m| m.seq),
                            });
                        }
                        match_late(&mut tail, &c)?;
                        matched = Some(Base {
                            seq: c.seq,
                            time: c.time,
                            policy: c.policy,
                        });
                        ahead = None;
                    }
                    _ => break,
                }
            }
            prev = hash;
            report.records = seq;
            report.head = hash;
            expected += 1;
        }
    }
    let records = report.records;
    // A checkpoint read while the records were scanned covers a record they do not reach: cut
    // off (its records were durable before it was written, so before the scan ended).
    if let Some(c) = ahead {
        let mut last = c.seq;
        while let Some(n) = cps.next()? {
            last = n.seq;
        }
        return Err(VerifyError::Truncated {
            last_seq: records,
            checkpoint_seq: last,
        });
    }
    // What was appended since: checkpoints of records already scanned are matched; one beyond
    // them ends the reading (it covers records written after the scan).
    let mut beyond: Option<Seen> = None;
    let catch_up = |cps: &mut Checkpoints<'_>,
                    tail: &mut Tail,
                    matched: &mut Option<Base>,
                    beyond: &mut Option<Seen>|
     -> Result<(), VerifyError> {
        while beyond.is_none() {
            match cps.next()? {
                Some(c) if c.seq <= records => {
                    match_late(tail, &c)?;
                    *matched = Some(Base {
                        seq: c.seq,
                        time: c.time,
                        policy: c.policy,
                    });
                }
                Some(c) => *beyond = Some(c),
                None => break,
            }
        }
        Ok(())
    };
    catch_up(&mut cps, &mut tail, &mut matched, &mut beyond)?;
    // Anchors were recorded before this began, with their records: each must be in the file,
    // with its records.
    let mut anchors: Vec<(usize, &Anchor)> = opts.anchors.iter().enumerate().collect();
    anchors.sort_by_key(|(_, a)| std::cmp::Reverse(a.seq));
    for (i, a) in anchors {
        if !cps.found[i] && a.seq > records {
            // Perhaps further on, past checkpoints written since: read on for it.
            while !cps.found[i] && cps.next()?.is_some() {}
        }
        if !cps.found[i] {
            return Err(VerifyError::AnchorMissing {
                anchor: a.clone(),
                last_checkpoint: matched.map(|m| m.seq),
                records,
            });
        }
        if a.seq > records {
            return Err(VerifyError::Truncated {
                last_seq: records,
                checkpoint_seq: a.seq,
            });
        }
        report.anchors += 1;
    }
    // The unsigned tail, against the last checkpoint's policy; records written while this ran
    // may look like a tail, so checkpoints.log is read once more before concluding.
    let mut refreshed = false;
    while let Some(problem) = tail_problem(matched, &tail, records, opts, &cps) {
        if refreshed || beyond.is_some() {
            return Err(problem);
        }
        refreshed = true;
        catch_up(&mut cps, &mut tail, &mut matched, &mut beyond)?;
    }
    report.checkpoints = cps.reader.count();
    if let Some(m) = matched {
        report.last_checkpoint_seq = m.seq;
        report.last_checkpoint_time = Some(m.time);
    }
    report.unsigned_tail = records - report.last_checkpoint_seq;
    report.torn_checkpoint_bytes = cps.reader.pending();
    report.keys_used = cps.keys_used;
    Ok(report)
}

/// What is wrong with the tail after the last matched checkpoint, if anything.
fn tail_problem(
    matched: Option<Base>,
    tail: &Tail,
    records: u64,
    opts: &VerifyOptions,
    cps: &Checkpoints<'_>,
) -> Option<VerifyError> {
    let Some(c) = matched else {
        return (records > 0).then(|| VerifyError::NoCheckpoint {
            records,
            file: cps.state(),
        });
    };
    let policy = c.policy.unwrap_or(opts.default_policy);
    let problem = if tail.count > policy.every {
        Some(TailProblem::TooMany {
            count: tail.count,
            every: policy.every,
        })
    } else {
        let allowed = policy.interval + opts.grace;
        let limit = c
            .time
            .saturating_add(i64::try_from(allowed.as_micros()).unwrap_or(i64::MAX));
        tail.latest
            .filter(|(_, received)| *received > limit)
            .map(|latest| {
                // Name the first record received too late.
                let (seq, received) = tail
                    .entries
                    .iter()
                    .find(|e| e.2 > limit)
                    .map_or(latest, |e| (e.0, e.2));
                TailProblem::TooLate {
                    seq,
                    received,
                    allowed,
                }
            })
    };
    problem.map(|problem| VerifyError::UnsignedTail {
        last_checkpoint: c.seq,
        checkpoint_time: c.time,
        records,
        problem,
    })
}

/// The key ids (SHA-256 of the SubjectPublicKeyInfo) that signed a log directory's checkpoints,
/// each once, read in bounded memory (without verifying anything).
pub fn checkpoint_key_ids(dir: &Path) -> Result<Vec<Vec<u8>>, VerifyError> {
    let path = dir.join(CHECKPOINTS);
    let io = |op, source| VerifyError::Io {
        op,
        path: path.clone(),
        source,
    };
    let mut reader = EntryReader::open(&path).map_err(|e| io("open", e))?;
    let mut ids: Vec<Vec<u8>> = Vec::new();
    while let Some(c) = reader.next_entry().map_err(|e| entry_error(e, &path))? {
        if !ids.contains(&c.key_id) {
            ids.push(c.key_id);
        }
    }
    Ok(ids)
}

/// Read every checkpoint of a log directory into memory (without verifying them): for tools and
/// tests; [`verify`] reads them one at a time.
pub fn read_checkpoints(dir: &Path) -> Result<Vec<Checkpoint>, VerifyError> {
    let cpath = dir.join(CHECKPOINTS);
    let data = std::fs::read(&cpath).map_err(|source| VerifyError::Io {
        op: "read",
        path: cpath,
        source,
    })?;
    checkpoint::decode_all(&data)
        .map(|(v, _)| v)
        .map_err(|(offset, reason)| VerifyError::BadCheckpoint {
            index: checkpoint::decode_all(&data[..offset as usize])
                .map(|(v, _)| v.len())
                .unwrap_or(0),
            seq: 0,
            reason,
        })
}
