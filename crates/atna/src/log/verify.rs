//! `verify`: prove that a log directory is intact, or name its first bad record.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, Checkpoint};
use super::record::{self, GENESIS_HASH};
use super::scan::{Item, Scanner};
use super::{CHECKPOINTS, RECORDS};

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
    /// Records after the last checkpoint: chained, but their removal could not be detected.
    pub unsigned_tail: u64,
    /// Bytes of a torn last record (a crash during an unacknowledged append), if any.
    pub torn_tail_bytes: u64,
    /// Records whose message was stored unparsed.
    pub parse_errors: u64,
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
    #[error("log truncated: it ends at record {last_seq} but a signed checkpoint covers record {checkpoint_seq}; record {} onwards is missing", last_seq + 1)]
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
    /// A checkpoint is malformed, not signed by the trusted key, or out of order.
    #[error("checkpoint {index} (record {seq}): {reason}")]
    BadCheckpoint {
        /// Index of the checkpoint in `checkpoints.log`.
        index: usize,
        /// The record it claims to cover.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

impl VerifyError {
    /// Sequence number of the first record that cannot be trusted, when the failure names one.
    pub fn first_bad_record(&self) -> Option<u64> {
        match self {
            VerifyError::Record { seq, .. } => Some(*seq),
            VerifyError::Truncated { last_seq, .. } => Some(last_seq + 1),
            VerifyError::CheckpointMismatch { after, .. } => Some(after + 1),
            _ => None,
        }
    }
}

/// Verify the log in `dir` against the checkpoint-signing public key `trusted_spki_der` (DER
/// SubjectPublicKeyInfo).
///
/// Checks every record's hash, sequence number and link to the previous record; every
/// checkpoint's signature, order and head hash; and that the log reaches the last checkpoint.
/// Detects a deleted, reordered, modified or inserted record anywhere, and truncation of the tail
/// up to the last checkpoint; records after the last checkpoint are reported as
/// [`VerifyReport::unsigned_tail`].
pub fn verify(dir: &Path, trusted_spki_der: &[u8]) -> Result<VerifyReport, VerifyError> {
    let rpath = dir.join(RECORDS);
    let cpath = dir.join(CHECKPOINTS);
    let cdata = match std::fs::read(&cpath) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(VerifyError::Io {
                op: "read",
                path: cpath,
                source,
            });
        }
    };
    let (cps, _torn) =
        checkpoint::decode_all(&cdata).map_err(|(offset, reason)| VerifyError::BadCheckpoint {
            index: count_before(&cdata, offset),
            seq: 0,
            reason: format!("malformed at byte {offset}: {reason}"),
        })?;
    let mut prev_seq = 0;
    for (i, c) in cps.iter().enumerate() {
        c.verify(trusted_spki_der)
            .map_err(|reason| VerifyError::BadCheckpoint {
                index: i,
                seq: c.seq,
                reason,
            })?;
        if c.seq <= prev_seq && i > 0 {
            return Err(VerifyError::BadCheckpoint {
                index: i,
                seq: c.seq,
                reason: format!("does not follow checkpoint of record {prev_seq}"),
            });
        }
        prev_seq = c.seq;
    }
    let f = match File::open(&rpath) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(VerifyError::Io {
                op: "open",
                path: rpath,
                source,
            });
        }
    };
    let mut report = VerifyReport {
        records: 0,
        head: GENESIS_HASH,
        checkpoints: cps.len(),
        last_checkpoint_seq: cps.last().map_or(0, |c| c.seq),
        unsigned_tail: 0,
        torn_tail_bytes: 0,
        parse_errors: 0,
    };
    let mut next_cp = 0usize;
    let mut prev_cp_seq = 0u64;
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
            if body.len() < 40 {
                return Err(bad(RecordProblem::Malformed("body too short".into())));
            }
            let mut seqb = [0u8; 8];
            seqb.copy_from_slice(&body[..8]);
            let seq = u64::from_be_bytes(seqb);
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
            while let Some(c) = cps.get(next_cp).filter(|c| c.seq == seq) {
                if c.head != hash {
                    return Err(VerifyError::CheckpointMismatch {
                        index: next_cp,
                        seq,
                        after: prev_cp_seq,
                    });
                }
                prev_cp_seq = seq;
                next_cp += 1;
            }
            prev = hash;
            report.records = seq;
            report.head = hash;
            expected += 1;
        }
    }
    if let Some(c) = cps.get(next_cp) {
        return Err(VerifyError::Truncated {
            last_seq: report.records,
            checkpoint_seq: c.seq.max(report.last_checkpoint_seq),
        });
    }
    report.unsigned_tail = report.records - report.last_checkpoint_seq;
    Ok(report)
}

fn count_before(data: &[u8], offset: u64) -> usize {
    checkpoint::decode_all(&data[..(offset as usize).min(data.len())])
        .map(|(v, _)| v.len())
        .unwrap_or(0)
}

/// Read every checkpoint of a log directory (without verifying them).
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
            index: count_before(&data, offset),
            seq: 0,
            reason,
        })
}
