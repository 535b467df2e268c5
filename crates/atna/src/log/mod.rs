//! The audit record repository's store: an append-only, hash-chained log in a directory, with
//! group-committed appends, signed checkpoints and an in-memory search index.
//!
//! * `records.log`: the records (format in [`record`]); each carries the hash of the previous one.
//! * `checkpoints.log`: signed `(seq, head hash, time, policy)` checkpoints (format in
//!   [`checkpoint`]).
//!
//! **Checkpoints** are signed at every record whose number is a multiple of
//! [`LogOptions::checkpoint_every`] (a batch that crosses one is written in two parts, so the
//! unsigned tail never exceeds it), right after a new log's first records, when
//! records are pending [`LogOptions::checkpoint_interval`] after the last one, before a batch
//! is written if the last one is older than the interval (the same head signed again: every
//! record of an unsigned tail was then received less than the interval after the last
//! checkpoint), at open when the previous run left an unsigned tail or signed under another
//! policy, and at close. Each one is
//! handed to [`LogOptions::sink`] once durable, so that it can be anchored elsewhere.
//!
//! **Acknowledged means durable**: [`AuditLog::append`] returns only after the records were
//! written and `fdatasync`ed. One writer thread takes every batch waiting at that moment, writes
//! them with one `write` and one `fdatasync`, so concurrent appenders share the cost.
//!
//! One process writes a log directory at a time; [`verify`](crate::verify) may read it at any
//! moment (it sees a prefix of the records).

pub(crate) mod checkpoint;
pub(crate) mod codec;
pub(crate) mod index;
pub(crate) mod record;
pub(crate) mod scan;
pub(crate) mod verify;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cps_hsm::Signer;
use parking_lot::{Mutex, RwLock};

use crate::error::LogError;
pub use checkpoint::{Checkpoint, CheckpointPolicy};
use index::Index;
pub use index::SearchFilter;
use record::{GENESIS_HASH, NewRecord, Record};

pub(crate) const RECORDS: &str = "records.log";
pub(crate) const CHECKPOINTS: &str = "checkpoints.log";
pub(crate) const SNAPSHOT: &str = "index.snap";

/// Told of every checkpoint once it is durable in `checkpoints.log` (to anchor it elsewhere).
/// Called on the log's writer thread: it must not block.
pub trait CheckpointSink: Send + Sync + std::fmt::Debug {
    /// A new checkpoint.
    fn checkpointed(&self, checkpoint: &Checkpoint);
}

/// Tuning of an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Sign a checkpoint after this many new records (at least 1).
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while new records arrive.
    pub checkpoint_interval: Duration,
    /// Largest number of bytes written in one group commit.
    pub max_batch_bytes: usize,
    /// Where each new checkpoint goes once durable.
    pub sink: Option<Arc<dyn CheckpointSink>>,
}

impl LogOptions {
    /// The policy checkpoints are signed under.
    pub fn policy(&self) -> CheckpointPolicy {
        CheckpointPolicy {
            every: self.checkpoint_every.max(1),
            interval: self.checkpoint_interval,
        }
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            checkpoint_every: 1_000,
            checkpoint_interval: Duration::from_secs(10),
            max_batch_bytes: 8 << 20,
            sink: None,
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<RangeInclusive<u64>, LogError>>;

enum Job {
    Append(Vec<NewRecord>, Reply),
    Checkpoint(tokio::sync::oneshot::Sender<Result<Option<Checkpoint>, LogError>>),
    Snapshot(tokio::sync::oneshot::Sender<Result<(), LogError>>),
}

/// Joins the writer thread when the last [`AuditLog`] clone goes away (after the writer has
/// saved the index snapshot).
struct WriterThread(Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(t) = self.0.lock().take() {
            let _ = t.join();
        }
    }
}

struct Shared {
    dir: PathBuf,
    index: RwLock<Index>,
    reader: File,
    /// `(last seq, its hash)` of durable records.
    head: Mutex<(u64, [u8; 32])>,
    last_checkpoint: Mutex<Option<Checkpoint>>,
}

/// An open audit log (cheap to clone; all clones share one writer).
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    // Field order matters: every clone's sender is dropped before the last clone joins the
    // writer thread, which then sees the channel closed, saves the index and exits.
    tx: mpsc::Sender<Job>,
    _writer: Arc<WriterThread>,
}

/// A page of search results, newest first.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The records.
    pub records: Vec<Record>,
    /// Pass this back as `cursor` for the next page; `None` when there are no more.
    pub next_cursor: Option<u64>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl AuditLog {
    /// Open (or create) the log in `dir`, rebuild the index, and start the writer thread.
    ///
    /// A torn last record (a crash during an append that was never acknowledged) is cut off.
    /// Any other damage, or a signed checkpoint beyond the end of the records (truncation),
    /// refuses the open: run [`verify`](crate::verify) to find the first bad record.
    ///
    /// Without a `signer` no checkpoints are made, and truncation of the tail cannot be detected.
    pub fn open(
        dir: &Path,
        signer: Option<Arc<dyn Signer>>,
        options: LogOptions,
    ) -> Result<AuditLog, LogError> {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let rpath = dir.join(RECORDS);
        let cpath = dir.join(CHECKPOINTS);
        let existed = rpath.exists();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&rpath)
            .map_err(io("open", &rpath))?;
        let (mut index, mut head, start) = match load_snapshot(dir, &rpath) {
            Some((ix, h, end)) => {
                let n = ix.entries.len() as u64;
                (ix, (n, h), end)
            }
            None => (Index::default(), (0u64, GENESIS_HASH), 0),
        };
        let scan_file = File::open(&rpath).map_err(io("open", &rpath))?;
        let mut scanner = scan::Scanner::at(scan_file, start).map_err(io("seek", &rpath))?;
        while let Some(item) = scanner.next_item().map_err(io("read", &rpath))? {
            match item {
                scan::Item::Frame {
                    offset,
                    len,
                    body,
                    hash,
                } => {
                    let rec = record::decode_body_opts(&body, hash, false).map_err(|e| {
                        LogError::Corrupt {
                            path: rpath.clone(),
                            offset,
                            reason: e.0,
                        }
                    })?;
                    if rec.seq != head.0 + 1 || rec.prev_hash != head.1 {
                        return Err(LogError::Corrupt {
                            path: rpath,
                            offset,
                            reason: format!("record {} does not follow record {}", rec.seq, head.0),
                        });
                    }
                    index.push(offset, len as u32, &record::index_fields(&rec));
                    head = (rec.seq, rec.hash);
                }
                scan::Item::Torn { offset, have } => {
                    tracing::warn!(path = %rpath.display(), offset, bytes = have, "cutting off a torn last record (never acknowledged)");
                    file.set_len(offset).map_err(io("truncate", &rpath))?;
                    file.sync_all().map_err(io("fsync", &rpath))?;
                }
                scan::Item::Bad { offset, reason } => {
                    match scan::zero_tail(&rpath, offset).map_err(io("read", &rpath))? {
                        Some(zeros) => {
                            tracing::warn!(path = %rpath.display(), offset, bytes = zeros, "cutting off a zero-filled tail (a crash before unacknowledged data reached the disk)");
                            file.set_len(offset).map_err(io("truncate", &rpath))?;
                            file.sync_all().map_err(io("fsync", &rpath))?;
                        }
                        None => {
                            return Err(LogError::Corrupt {
                                path: rpath,
                                offset,
                                reason,
                            });
                        }
                    }
                }
            }
        }
        // Checkpoints: only the last one is needed (read in bounded memory).
        let (last_cp, torn) = last_checkpoint_in(&cpath)?;
        let cfile = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cpath)
            .map_err(io("open", &cpath))?;
        if let Some(off) = torn {
            tracing::warn!(path = %cpath.display(), offset = off, "cutting off a torn last checkpoint");
            cfile.set_len(off).map_err(io("truncate", &cpath))?;
        }
        if let Some(cp) = &last_cp
            && (cp.seq > head.0
                || (cp.seq > 0
                    && index.entries.len() as u64 >= cp.seq
                    && !chain_matches(&rpath, &index, cp)?))
        {
            return Err(LogError::Corrupt {
                path: rpath,
                offset: 0,
                reason: format!(
                    "the last signed checkpoint covers record {} but the log {}",
                    cp.seq,
                    if cp.seq > head.0 {
                        format!("ends at record {}", head.0)
                    } else {
                        "differs from it".to_owned()
                    }
                ),
            });
        }
        if !existed {
            sync_dir(dir).map_err(io("fsync directory", dir))?;
        }
        let reader = File::open(&rpath).map_err(io("open", &rpath))?;
        let durable_len = file.metadata().map_err(io("stat", &rpath))?.len();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            index: RwLock::new(index),
            reader,
            head: Mutex::new(head),
            last_checkpoint: Mutex::new(last_cp.clone()),
        });
        let (tx, rx) = mpsc::channel();
        let mut w = Writer {
            shared: shared.clone(),
            file,
            cfile,
            rpath,
            cpath,
            signer,
            options,
            seq: head.0,
            prev: head.1,
            last_cp_seq: last_cp.as_ref().map_or(0, |c| c.seq),
            last_cp_time: last_cp.as_ref().map(|c| c.time),
            retry_at: None,
            durable_len,
            repair: None,
        };
        // The writer signs an unsigned tail left by a previous run before anything else;
        // `open` returns once that is done (or has failed).
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("atna-log-writer".into())
            .spawn(move || w.run(rx, ready_tx))
            .map_err(io("spawn writer thread", dir))?;
        let _ = ready_rx.recv();
        Ok(AuditLog {
            shared,
            tx,
            _writer: Arc::new(WriterThread(Mutex::new(Some(thread)))),
        })
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// `(seq, hash)` of the last durable record (`(0, zeros)` when empty).
    pub fn head(&self) -> (u64, [u8; 32]) {
        *self.shared.head.lock()
    }

    /// The last signed checkpoint.
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.shared.last_checkpoint.lock().clone()
    }

    /// Whether this log holds the checkpoint `(seq, head)`: a checkpoint of record `seq` with
    /// that head in `checkpoints.log`, and record `seq` with that hash. (An anchor kept outside
    /// the log must be found in it; otherwise the log was cut back, replaced or rewritten.)
    pub fn holds_checkpoint(&self, seq: u64, head: &[u8; 32]) -> Result<bool, LogError> {
        let cpath = self.shared.dir.join(CHECKPOINTS);
        let mut reader = checkpoint::EntryReader::open(&cpath).map_err(io("open", &cpath))?;
        let mut found = false;
        while let Some(c) = next_entry(&mut reader, &cpath)? {
            if c.seq == seq && &c.head == head {
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
        match self.get(seq) {
            Ok(r) => Ok(&r.hash == head),
            Err(LogError::NoSuchRecord(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn submit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<RangeInclusive<u64>, LogError>>, LogError>
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Append(records, tx))
            .map_err(|_| LogError::Closed("writer thread gone".into()))?;
        Ok(rx)
    }

    /// Append records; resolves once they are durable, with their sequence numbers.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<RangeInclusive<u64>, LogError> {
        if records.is_empty() {
            let s = self.head().0;
            return Ok(s + 1..=s);
        }
        self.submit(records)?
            .await
            .map_err(|_| LogError::Closed("writer thread gone".into()))?
    }

    /// [`append`](AuditLog::append) for threads outside an async runtime.
    pub fn append_blocking(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<RangeInclusive<u64>, LogError> {
        if records.is_empty() {
            let s = self.head().0;
            return Ok(s + 1..=s);
        }
        self.submit(records)?
            .blocking_recv()
            .map_err(|_| LogError::Closed("writer thread gone".into()))?
    }

    /// Sign a checkpoint of the current head now (no-op without a signer or without new records).
    pub fn checkpoint_blocking(&self) -> Result<Option<Checkpoint>, LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Checkpoint(tx))
            .map_err(|_| LogError::Closed("writer thread gone".into()))?;
        rx.blocking_recv()
            .map_err(|_| LogError::Closed("writer thread gone".into()))?
    }

    /// Async form of [`checkpoint_blocking`](AuditLog::checkpoint_blocking).
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Checkpoint(tx))
            .map_err(|_| LogError::Closed("writer thread gone".into()))?;
        rx.await
            .map_err(|_| LogError::Closed("writer thread gone".into()))?
    }

    /// Save the search index to `index.snap` now, so the next [`open`](AuditLog::open) reads
    /// only the records appended after it. (The index is also saved when the last clone of the
    /// log is dropped.) `open` trusts an intact snapshot for the records it covers: checking
    /// them is [`verify`](crate::verify)'s job.
    pub fn save_index_blocking(&self) -> Result<(), LogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Snapshot(tx))
            .map_err(|_| LogError::Closed("writer thread gone".into()))?;
        rx.blocking_recv()
            .map_err(|_| LogError::Closed("writer thread gone".into()))?
    }

    /// Read one record by sequence number.
    pub fn get(&self, seq: u64) -> Result<Record, LogError> {
        let entry = {
            let ix = self.shared.index.read();
            if seq == 0 || seq > ix.entries.len() as u64 {
                return Err(LogError::NoSuchRecord(seq));
            }
            ix.entries[(seq - 1) as usize]
        };
        self.read_at(entry.offset, entry.len)
    }

    fn read_at(&self, offset: u64, len: u32) -> Result<Record, LogError> {
        let path = self.shared.dir.join(RECORDS);
        let mut buf = vec![0u8; len as usize];
        self.shared
            .reader
            .read_exact_at(&mut buf, offset)
            .map_err(io("read", &path))?;
        let corrupt = |reason: String| LogError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        if buf.len() < 8 + 32 || &buf[..4] != record::MAGIC {
            return Err(corrupt("not a record".into()));
        }
        let body_end = buf.len() - 32;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&buf[body_end..]);
        record::decode_body(&buf[8..body_end], hash).map_err(|e| corrupt(e.0))
    }

    /// Number of durable records.
    pub fn len(&self) -> u64 {
        self.shared.index.read().entries.len() as u64
    }

    /// Whether the log has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Search, newest first. `cursor` is a previous page's `next_cursor` (records older than it
    /// are returned); `limit` is capped at 10 000.
    pub fn search(
        &self,
        filter: &SearchFilter,
        limit: usize,
        cursor: Option<u64>,
    ) -> Result<SearchPage, LogError> {
        let limit = limit.min(10_000);
        let (hits, more) = {
            let ix = self.shared.index.read();
            let before = match cursor {
                None => u32::MAX,
                Some(c) if c == 0 || c > ix.entries.len() as u64 + 1 => {
                    return Err(LogError::BadCursor);
                }
                Some(c) => (c - 1) as u32,
            };
            let mut hits = ix.search(filter, before, limit + 1);
            let more = hits.len() > limit;
            hits.truncate(limit);
            let hits: Vec<(u32, index::Entry)> = hits
                .into_iter()
                .map(|i| (i, ix.entries[i as usize]))
                .collect();
            (hits, more)
        };
        let mut records = Vec::with_capacity(hits.len());
        for (_, e) in &hits {
            records.push(self.read_at(e.offset, e.len)?);
        }
        let next_cursor = if more {
            records.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(SearchPage {
            records,
            next_cursor,
        })
    }
}

/// Load `index.snap` if it is intact and describes a prefix of `records.log`: the record it
/// ends with is where it says, with the sequence number and hash it says. Returns the index,
/// the head hash and the file offset after the prefix.
fn load_snapshot(dir: &Path, rpath: &Path) -> Option<(Index, [u8; 32], u64)> {
    let spath = dir.join(SNAPSHOT);
    let data = std::fs::read(&spath).ok()?;
    let Some((ix, head)) = Index::decode_snapshot(&data) else {
        tracing::warn!(path = %spath.display(), "ignoring a damaged index snapshot; rebuilding from the log");
        return None;
    };
    let last = *ix.entries.last()?;
    let end = last.offset + u64::from(last.len);
    let f = File::open(rpath).ok()?;
    let fits = (|| -> std::io::Result<bool> {
        if f.metadata()?.len() < end || last.len < 8 + 40 + 32 {
            return Ok(false);
        }
        let mut h = [0u8; 16];
        f.read_exact_at(&mut h, last.offset)?;
        let mut stored = [0u8; 32];
        f.read_exact_at(&mut stored, end - 32)?;
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let seq = u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        Ok(&h[..4] == record::MAGIC
            && u64::from(len) + 40 == u64::from(last.len)
            && seq == ix.entries.len() as u64
            && stored == head)
    })()
    .unwrap_or(false);
    if !fits {
        tracing::warn!(path = %spath.display(), "index snapshot does not match the log; rebuilding from the log");
        return None;
    }
    Some((ix, head, end))
}

fn next_entry(
    reader: &mut checkpoint::EntryReader,
    cpath: &Path,
) -> Result<Option<Checkpoint>, LogError> {
    reader.next_entry().map_err(|e| match e {
        checkpoint::EntryError::Io(e) => io("read", cpath)(e),
        checkpoint::EntryError::Bad { offset, reason, .. } => LogError::Corrupt {
            path: cpath.to_owned(),
            offset,
            reason,
        },
    })
}

/// The last checkpoint of `checkpoints.log` (none if it does not exist or is empty), and the
/// offset of a torn last entry.
fn last_checkpoint_in(cpath: &Path) -> Result<(Option<Checkpoint>, Option<u64>), LogError> {
    let mut reader = checkpoint::EntryReader::open(cpath).map_err(io("open", cpath))?;
    let mut last = None;
    while let Some(c) = next_entry(&mut reader, cpath)? {
        last = Some(c);
    }
    let torn = (reader.pending() > 0).then_some(reader.consumed());
    Ok((last, torn))
}

fn chain_matches(rpath: &Path, index: &Index, cp: &Checkpoint) -> Result<bool, LogError> {
    let e = index.entries[(cp.seq - 1) as usize];
    let f = File::open(rpath).map_err(io("open", rpath))?;
    let mut h = [0u8; 32];
    f.read_exact_at(&mut h, e.offset + u64::from(e.len) - 32)
        .map_err(io("read", rpath))?;
    Ok(h == cp.head)
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Cuts the file at `path` back to `len` through a new descriptor and makes the cut durable;
/// returns that descriptor (read + append). Used after a failed write or `fsync`: what was past
/// `len` was never acknowledged and is rewritten by a retry, not trusted to the page cache.
pub(crate) fn cut_back(path: &Path, len: u64) -> std::io::Result<File> {
    let f = OpenOptions::new().read(true).append(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()?;
    Ok(f)
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    cfile: File,
    rpath: PathBuf,
    cpath: PathBuf,
    signer: Option<Arc<dyn Signer>>,
    options: LogOptions,
    /// Last durable record and its hash.
    seq: u64,
    prev: [u8; 32],
    last_cp_seq: u64,
    /// Signed time of the last checkpoint (Unix µs).
    last_cp_time: Option<i64>,
    /// After a failed checkpoint, no time-driven attempt before this.
    retry_at: Option<Instant>,
    /// Length of `records.log` covered by the last successful `fdatasync`: every byte before it
    /// is an acknowledged record.
    durable_len: u64,
    /// Set after a failed write or `fdatasync`: the file may hold bytes past `durable_len` that
    /// are a partial batch, or that the kernel may already have dropped from its cache (after a
    /// failed `fsync` the dirty pages can be marked clean and lost, and a second `fsync` would
    /// report success). Those bytes are cut off, through a freshly opened descriptor, before
    /// anything else is written; the batch they belonged to was refused, so the next batch
    /// rewrites from `durable_len` instead of trusting the page cache.
    repair: Option<String>,
}

/// How long after a failed checkpoint the next time-driven attempt is made, at least (and at
/// most a minute): the interval, so that a clock that stays untrusted does not flood the log.
const CHECKPOINT_RETRY_MIN: Duration = Duration::from_secs(1);
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_secs(60);

fn now_micros() -> i64 {
    crate::time_fmt::unix_micros(time::OffsetDateTime::now_utc())
}

type AppendReply = (Reply, RangeInclusive<u64>);

/// `fdatasync` of `file`, known to the failure injection of the unit tests as `key` (its path,
/// or its directory).
pub(crate) fn sync_data(file: &File, key: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if crate::faults::take(key) {
        return Err(std::io::Error::from_raw_os_error(5));
    }
    let _ = key;
    file.sync_data()
}

/// Answers every job of a batch that cannot be written.
fn refuse_jobs(jobs: Vec<Job>, why: &str) {
    for j in jobs {
        match j {
            Job::Append(_, reply) => {
                let _ = reply.send(Err(LogError::NotWritten(why.to_owned())));
            }
            Job::Checkpoint(reply) => {
                let _ = reply.send(Err(LogError::NotWritten(why.to_owned())));
            }
            Job::Snapshot(reply) => {
                let _ = reply.send(Err(LogError::NotWritten(why.to_owned())));
            }
        }
    }
}

impl Writer {
    /// Cuts `records.log` back to its durable length after a failed write or flush, through a
    /// new descriptor, and makes the cut durable. Until this succeeds nothing is appended.
    fn try_repair(&mut self) -> Result<(), String> {
        let Some(cause) = self.repair.clone() else {
            return Ok(());
        };
        match cut_back(&self.rpath, self.durable_len) {
            Ok(f) => {
                self.file = f;
                self.repair = None;
                tracing::warn!(path = %self.rpath.display(), length = self.durable_len, "audit log writable again: the refused batch was cut off");
                Ok(())
            }
            Err(e) => Err(format!(
                "{cause}; the log cannot be cut back to its last durable record yet ({e})"
            )),
        }
    }

    fn interval_micros(&self) -> i64 {
        i64::try_from(self.options.checkpoint_interval.as_micros()).unwrap_or(i64::MAX)
    }

    fn every(&self) -> u64 {
        self.options.checkpoint_every.max(1)
    }

    /// Records after the last checkpoint.
    fn tail(&self) -> u64 {
        self.seq - self.last_cp_seq
    }

    /// A time-driven checkpoint is due: the last one is at least the interval old, or there is
    /// none (a new log's first records are signed at once), and no failed attempt is being
    /// waited out.
    fn time_due(&self) -> bool {
        self.signer.is_some()
            && self.retry_at.is_none_or(|r| Instant::now() >= r)
            && self
                .last_cp_time
                .is_none_or(|t| now_micros().saturating_sub(t) >= self.interval_micros())
    }

    /// How long the writer may wait for jobs before a time-driven checkpoint is due.
    fn wait(&self) -> Duration {
        if self.signer.is_none() || self.tail() == 0 {
            return Duration::from_secs(3600);
        }
        let due = match self.last_cp_time {
            Some(t) => {
                let left = t
                    .saturating_add(self.interval_micros())
                    .saturating_sub(now_micros());
                Duration::from_micros(left.max(0) as u64)
            }
            None => Duration::ZERO,
        };
        let retry = self.retry_at.map_or(Duration::ZERO, |r| {
            r.saturating_duration_since(Instant::now())
        });
        due.max(retry)
    }

    /// Sign a checkpoint, logging a failure (the log keeps accepting records; the unsigned
    /// tail grows and `verify` reports it).
    fn try_checkpoint(
        &mut self,
        heartbeat: bool,
        why: &str,
    ) -> Result<Option<Checkpoint>, LogError> {
        let r = self.checkpoint(heartbeat);
        if let Err(e) = &r {
            tracing::error!(error = %e, why, records = self.tail(), "audit log checkpoint failed");
            let retry = self
                .options
                .checkpoint_interval
                .clamp(CHECKPOINT_RETRY_MIN, CHECKPOINT_RETRY_MAX);
            self.retry_at = Some(Instant::now() + retry);
        }
        r
    }

    fn run(&mut self, rx: mpsc::Receiver<Job>, ready: mpsc::Sender<()>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let policy_changed = self
            .shared
            .last_checkpoint
            .lock()
            .as_ref()
            .is_some_and(|c| c.policy != Some(self.options.policy()));
        if self.signer.is_some() && (self.tail() > 0 || policy_changed) {
            // The previous run ended (a crash) with records no checkpoint covers, or the last
            // checkpoint promised another policy than the one records now follow.
            let _ = self.try_checkpoint(true, "unsigned tail or new policy at open");
        }
        let _ = ready.send(());
        drop(ready);
        loop {
            let first = match rx.recv_timeout(self.wait()) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.try_repair().is_ok() && self.tail() > 0 && self.time_due() {
                        let _ = self.try_checkpoint(false, "interval");
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Closing: sign the tail, save the index.
                    if self.try_repair().is_ok() {
                        let _ = self.try_checkpoint(false, "close");
                        if let Err(e) = self.save_snapshot() {
                            tracing::warn!(error = %e, "could not save the audit log index snapshot");
                        }
                    }
                    break;
                }
            };
            let mut jobs = vec![first];
            let mut bytes: usize = 0;
            while bytes < self.options.max_batch_bytes {
                match rx.try_recv() {
                    Ok(j) => {
                        if let Job::Append(r, _) = &j {
                            bytes += r.iter().map(NewRecord::encoded_len).sum::<usize>();
                        }
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            if let Err(why) = self.try_repair() {
                refuse_jobs(jobs, &why);
                continue;
            }
            let appends = jobs
                .iter()
                .any(|j| matches!(j, Job::Append(r, _) if !r.is_empty()));
            // Records about to be written after a quiet stretch: sign (again) first, so that
            // every record of an unsigned tail is received within the interval of the last
            // checkpoint.
            if appends && (self.tail() > 0 || self.last_cp_time.is_some()) && self.time_due() {
                let _ = self.try_checkpoint(true, "records after a quiet interval");
            }
            let mut replies: Vec<AppendReply> = Vec::new();
            let mut cp_requests = Vec::new();
            let mut snap_requests = Vec::new();
            let mut records = Vec::new();
            for j in jobs {
                match j {
                    Job::Append(rs, reply) => {
                        let first = self.seq + records.len() as u64 + 1;
                        let last = first + rs.len() as u64 - 1;
                        records.extend(rs);
                        replies.push((reply, first..=last));
                    }
                    Job::Checkpoint(reply) => cp_requests.push(reply),
                    Job::Snapshot(reply) => snap_requests.push(reply),
                }
            }
            if let Err(msg) = self.write_records(records, &mut buf) {
                // Refused: every request not wholly durable is told so (records of a request
                // before a checkpoint boundary may already be in the log: its retry repeats them,
                // never loses them); the log cut the rest off and takes the next batch.
                tracing::error!(error = %msg, "audit log append failed; the batch is refused, the log cuts it off and takes the next one");
                for (reply, range) in replies {
                    let _ = reply.send(if *range.end() <= self.seq {
                        Ok(range)
                    } else {
                        Err(LogError::NotWritten(msg.clone()))
                    });
                }
                for reply in cp_requests {
                    let _ = reply.send(Err(LogError::NotWritten(msg.clone())));
                }
                for reply in snap_requests {
                    let _ = reply.send(Err(LogError::NotWritten(msg.clone())));
                }
                continue;
            }
            for (reply, range) in replies {
                let _ = reply.send(Ok(range));
            }
            if !cp_requests.is_empty() || (self.tail() > 0 && self.time_due()) {
                let r = self.try_checkpoint(false, "requested or due");
                for reply in cp_requests {
                    let _ = reply.send(match &r {
                        Ok(c) => Ok(c.clone()),
                        Err(e) => Err(LogError::Closed(e.to_string())),
                    });
                }
            }
            if !snap_requests.is_empty() {
                let r = self.save_snapshot();
                for reply in snap_requests {
                    let _ = reply.send(match &r {
                        Ok(()) => Ok(()),
                        Err(e) => Err(LogError::Closed(e.to_string())),
                    });
                }
            }
        }
    }

    /// Chain, write and `fdatasync` `records`, in one write, or in two or more when the batch
    /// reaches a record whose number is a multiple of `checkpoint_every`: the part up to there
    /// is made durable and signed before the rest is written. On an error, the records made
    /// durable before it stay (and are indexed); the rest is cut off, through a fresh
    /// descriptor, before the caller is answered.
    fn write_records(&mut self, records: Vec<NewRecord>, buf: &mut Vec<u8>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let mut base_offset = self.durable_len;
        let every = self.every();
        let n = records.len();
        let mut seq = self.seq;
        let mut prev = self.prev;
        let mut entries = Vec::new();
        buf.clear();
        for (i, r) in records.into_iter().enumerate() {
            seq += 1;
            let off = buf.len() as u64;
            prev = record::encode_frame(seq, &prev, &r.tail, buf);
            entries.push((base_offset + off, (buf.len() as u64 - off) as u32, r.index));
            // Boundaries at multiples of `every`: the tail never exceeds it, and a failed
            // checkpoint is tried again at the next one.
            let boundary = self.signer.is_some() && seq.is_multiple_of(every);
            if boundary || i + 1 == n {
                self.flush_segment(buf, base_offset, &mut entries, seq, prev)?;
                base_offset += buf.len() as u64;
                buf.clear();
                if boundary {
                    let _ = self.try_checkpoint(false, "checkpoint_every records");
                }
            }
        }
        Ok(())
    }

    /// Write and sync one segment; on success it is indexed and becomes the head.
    fn flush_segment(
        &mut self,
        buf: &[u8],
        base_offset: u64,
        entries: &mut Vec<(u64, u32, record::IndexFields)>,
        seq: u64,
        prev: [u8; 32],
    ) -> Result<(), String> {
        let res = self
            .file
            .write_all(buf)
            .and_then(|_| sync_data(&self.file, &self.rpath));
        if let Err(e) = res {
            let msg = format!("write {}: {e}", self.rpath.display());
            // Nothing of this segment was acknowledged: cut it off (a caller told "not written"
            // finds none of its bytes left) and chain the next batch from the last durable record.
            self.repair = Some(msg.clone());
            if let Err(e) = self.try_repair() {
                tracing::error!(error = %e, "audit log repair failed; retried before the next batch");
            }
            return Err(msg);
        }
        self.durable_len = base_offset + buf.len() as u64;
        {
            let mut ix = self.shared.index.write();
            for (off, len, f) in entries.drain(..) {
                ix.push(off, len, &f);
            }
        }
        self.seq = seq;
        self.prev = prev;
        *self.shared.head.lock() = (seq, prev);
        Ok(())
    }

    /// Write `index.snap` (atomically: temporary file, fsync, rename, directory fsync).
    fn save_snapshot(&self) -> Result<(), LogError> {
        let data = {
            let ix = self.shared.index.read();
            if ix.entries.is_empty() {
                return Ok(());
            }
            ix.encode_snapshot(&self.prev)
        };
        let dir = &self.shared.dir;
        let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
        let path = dir.join(SNAPSHOT);
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        if let Err(e) = f.write_all(&data).and_then(|_| f.sync_all()) {
            // A full disk: the snapshot is only an optimisation; free what it took.
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", &tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        sync_dir(dir).map_err(io("fsync directory", dir))
    }

    /// Sign a checkpoint of the head: when records are not yet covered, or (`heartbeat`) the
    /// same head again with a new time.
    fn checkpoint(&mut self, heartbeat: bool) -> Result<Option<Checkpoint>, LogError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        if self.seq == 0 || (self.seq == self.last_cp_seq && !heartbeat) {
            return Ok(None);
        }
        let cp = Checkpoint::sign(
            self.seq,
            self.prev,
            now_micros(),
            self.options.policy(),
            signer.as_ref(),
        )?;
        let mut buf = Vec::with_capacity(256);
        cp.encode(&mut buf);
        let before = self.cfile.metadata().map(|m| m.len());
        if let Err(source) = self
            .cfile
            .write_all(&buf)
            .and_then(|_| self.cfile.sync_data())
        {
            // No torn or unsynced checkpoint stays behind for the next one to follow (a later
            // checkpoint covers these records): cut back through a fresh descriptor.
            if let Ok(len) = before
                && let Ok(f) = cut_back(&self.cpath, len)
            {
                self.cfile = f;
            }
            return Err(LogError::Io {
                op: "append checkpoint",
                path: self.cpath.clone(),
                source,
            });
        }
        self.last_cp_seq = self.seq;
        self.last_cp_time = Some(cp.time);
        self.retry_at = None;
        *self.shared.last_checkpoint.lock() = Some(cp.clone());
        if let Some(sink) = &self.options.sink {
            sink.checkpointed(&cp);
        }
        Ok(Some(cp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{NodeIdentity, Transport};
    use crate::parse::XmlLimits;

    fn rec(text: &str) -> NewRecord {
        NewRecord::from_message(
            1,
            &NodeIdentity::default(),
            "127.0.0.1:1",
            Transport::Tls,
            format!("<85>1 2026-11-22T10:00:00Z host app - - - {text}").as_bytes(),
            &XmlLimits::default(),
        )
    }

    fn raw(log: &AuditLog, seq: u64) -> String {
        String::from_utf8_lossy(&log.get(seq).unwrap().raw).into_owned()
    }

    /// A failed `fdatasync` refuses its batch, which is cut off the file; the next batch is
    /// written from the last durable record (rewritten, not trusted to the page cache) with the
    /// same sequence numbers; the log verifies and reopens with exactly the acknowledged records.
    #[test]
    fn a_failed_flush_refuses_its_batch_and_the_log_takes_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let signer: Arc<dyn Signer> = Arc::new(
            cps_hsm::SoftwareSigner::generate("cp", cps_hsm::KeyAlgorithm::EcP256).unwrap(),
        );
        let spki = signer.public_key_der().to_vec();
        let log = AuditLog::open(dir.path(), Some(signer.clone()), LogOptions::default()).unwrap();
        let rpath = dir.path().join(RECORDS);
        assert_eq!(
            log.append_blocking(vec![rec("a1"), rec("a2"), rec("a3")])
                .unwrap(),
            1..=3
        );
        log.checkpoint_blocking().unwrap();
        let durable = std::fs::metadata(&rpath).unwrap().len();

        crate::faults::fail_next_syncs(&rpath, 1);
        let e = log.append_blocking(vec![rec("lost-1"), rec("lost-2")]);
        assert!(matches!(e, Err(LogError::NotWritten(_))), "{e:?}");
        assert_eq!(
            std::fs::metadata(&rpath).unwrap().len(),
            durable,
            "the refused batch is cut off the file"
        );
        assert_eq!(log.len(), 3);
        assert_eq!(log.head().0, 3);

        // The next batch takes the same sequence numbers, chained to record 3.
        assert_eq!(
            log.append_blocking(vec![rec("b1"), rec("b2")]).unwrap(),
            4..=5
        );
        assert!(raw(&log, 4).contains("b1") && raw(&log, 5).contains("b2"));
        log.checkpoint_blocking().unwrap();
        // Several failures in a row, then recovery again.
        crate::faults::fail_next_syncs(&rpath, 3);
        for _ in 0..3 {
            assert!(log.append_blocking(vec![rec("lost")]).is_err());
        }
        assert_eq!(log.append_blocking(vec![rec("c1")]).unwrap(), 6..=6);
        drop(log);

        let data = std::fs::read(&rpath).unwrap();
        assert!(
            !data.windows(4).any(|w| w == b"lost"),
            "no refused record is on disk"
        );
        let report = crate::verify(dir.path(), &crate::VerifyOptions::key(&spki)).unwrap();
        assert_eq!(report.records, 6, "{report:?}");
        let log = AuditLog::open(dir.path(), Some(signer), LogOptions::default()).unwrap();
        assert_eq!(log.len(), 6);
        assert!(raw(&log, 6).contains("c1"));
    }
}
