//! The durable outbound queue: audit messages wait here, on disk, until every configured
//! repository has them.
//!
//! Layout of the queue directory:
//!
//! * `seg-<first seq, 20 digits>.q`: segments of entries
//!   `"AQ01" | u64 seq | u32 len | payload | u32 CRC-32 of (seq, len, payload)`; a new segment
//!   starts when the current one passes [`QueueOptions::segment_bytes`].
//! * `cursor-<destination>`: the last sequence number delivered to that destination
//!   (`u64 | u32 CRC-32`), replaced atomically (write, fsync, rename, fsync directory).
//!
//! [`Queue::enqueue`] returns once the entry is `fdatasync`ed (callers enqueue whole batches:
//! one write and one `fdatasync` each); an enqueue that fails leaves nothing behind and the next
//! one works once the disk does. A segment is deleted once every destination's cursor is past it. A torn last
//! entry (crash during an enqueue that never returned) is cut off at open.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::error::QueueError;
use crate::model::{AuditMessage, EventOutcome};
use crate::syslog::SyslogMessage;

const MAGIC: &[u8; 4] = b"AQ01";
const HEADER: usize = 4 + 8 + 4;

/// Tuning of a [`Queue`].
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Start a new segment past this size.
    pub segment_bytes: u64,
    /// Largest entry accepted.
    pub max_entry: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            segment_bytes: 16 << 20,
            max_entry: 1 << 20,
        }
    }
}

struct Active {
    file: Arc<File>,
    first: u64,
    /// Length of the segment: every byte before it is a durable entry (each batch is synced
    /// before the lock is released).
    len: u64,
    /// Last sequence number written, durable.
    written: u64,
    /// Set after a failed write or flush, until the segment is cut back to `len`.
    repair: Option<String>,
}

impl Active {
    /// Cuts the active segment back to its durable length after a failed write or flush,
    /// through a new descriptor, and makes the cut durable: after a failed `fsync` the kernel
    /// may have dropped the dirty pages, so the refused batch is rewritten by its caller's retry,
    /// never trusted to the page cache. Until this succeeds nothing is appended.
    fn try_repair(&mut self, dir: &Path) -> Result<(), QueueError> {
        let Some(cause) = self.repair.clone() else {
            return Ok(());
        };
        let path = dir.join(seg_name(self.first));
        match crate::log::cut_back(&path, self.len) {
            Ok(f) => {
                self.file = Arc::new(f);
                self.repair = None;
                tracing::warn!(path = %path.display(), length = self.len, "audit queue writable again: the refused batch was cut off");
                Ok(())
            }
            Err(e) => Err(QueueError::NotWritten(format!(
                "{cause}; the segment cannot be cut back to its last durable entry yet ({e})"
            ))),
        }
    }
}

struct Inner {
    dir: PathBuf,
    options: QueueOptions,
    active: Mutex<Active>,
    cursors: Mutex<BTreeMap<String, u64>>,
    durable_tx: tokio::sync::watch::Sender<u64>,
}

/// A durable, multi-destination FIFO of syslog messages (cheap to clone).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn seg_name(first: u64) -> String {
    format!("seg-{first:020}.q")
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, QueueError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let e = e.map_err(io("list", dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".q"))
            && let Ok(first) = n.parse::<u64>()
        {
            v.push(first);
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn valid_destination(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

fn entry_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_be_bytes());
    h.update(&(payload.len() as u32).to_be_bytes());
    h.update(payload);
    h.finalize()
}

/// Result of reading one entry from a segment at some offset.
enum Read1 {
    Entry {
        seq: u64,
        payload: Vec<u8>,
        next: u64,
    },
    /// End of data (possibly a partial entry being written, or a torn one).
    End {
        partial: bool,
    },
    Bad(String),
}

fn read_entry(f: &File, offset: u64, max_entry: usize) -> std::io::Result<Read1> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; HEADER];
    let n = read_up_to(f, &mut h, offset)?;
    if n == 0 {
        return Ok(Read1::End { partial: false });
    }
    if n < HEADER {
        return Ok(Read1::End { partial: true });
    }
    if &h[..4] != MAGIC {
        return Ok(Read1::Bad("bad entry magic".into()));
    }
    let seq = u64::from_be_bytes(h[4..12].try_into().unwrap_or([0; 8]));
    let len = u32::from_be_bytes(h[12..16].try_into().unwrap_or([0; 4])) as usize;
    if len > max_entry.max(1 << 20) * 4 {
        return Ok(Read1::Bad(format!("entry length {len}")));
    }
    let mut body = vec![0u8; len + 4];
    let k = read_up_to(f, &mut body, offset + HEADER as u64)?;
    if k < body.len() {
        return Ok(Read1::End { partial: true });
    }
    let crc = u32::from_be_bytes(body[len..].try_into().unwrap_or([0; 4]));
    body.truncate(len);
    if crc != entry_crc(seq, &body) {
        // Could be a torn write whose length field survived; the caller decides by position.
        let mut probe = [0u8; 1];
        let more = f.read_at(&mut probe, offset + (HEADER + len + 4) as u64)? > 0;
        return Ok(if more {
            Read1::Bad(format!("entry {seq}: CRC mismatch"))
        } else {
            Read1::End { partial: true }
        });
    }
    Ok(Read1::Entry {
        seq,
        payload: body,
        next: offset + (HEADER + len + 4) as u64,
    })
}

fn read_up_to(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Queue {
    /// Open (or create) the queue in `dir` for the given destinations. Destinations present on
    /// disk but not named here are forgotten (their cursor files are removed); new ones start
    /// at the oldest entry still queued.
    pub fn open(
        dir: &Path,
        destinations: &[&str],
        options: QueueOptions,
    ) -> Result<Queue, QueueError> {
        for d in destinations {
            if !valid_destination(d) {
                return Err(QueueError::BadDestination((*d).to_owned()));
            }
        }
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let mut segs = list_segments(dir)?;
        if segs.is_empty() {
            let p = dir.join(seg_name(1));
            File::create(&p).map_err(io("create", &p))?;
            crate::log::sync_dir(dir).map_err(io("fsync directory", dir))?;
            segs.push(1);
        }
        // Scan the last segment to find the end (and cut a torn tail).
        let last_first = *segs.last().unwrap_or(&1);
        let lpath = dir.join(seg_name(last_first));
        let lfile = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&lpath)
            .map_err(io("open", &lpath))?;
        let mut off = 0u64;
        let mut last_seq = last_first - 1;
        loop {
            match read_entry(&lfile, off, options.max_entry).map_err(io("read", &lpath))? {
                Read1::Entry { seq, next, .. } => {
                    if seq != last_seq + 1 {
                        return Err(QueueError::Corrupt {
                            path: lpath,
                            offset: off,
                            reason: format!("entry {seq} follows entry {last_seq}"),
                        });
                    }
                    last_seq = seq;
                    off = next;
                }
                Read1::End { partial } => {
                    if partial {
                        tracing::warn!(path = %lpath.display(), offset = off, "cutting off a torn last queue entry");
                        lfile.set_len(off).map_err(io("truncate", &lpath))?;
                        lfile.sync_all().map_err(io("fsync", &lpath))?;
                    }
                    break;
                }
                Read1::Bad(reason) => {
                    match crate::log::scan::zero_tail(&lpath, off).map_err(io("read", &lpath))? {
                        Some(zeros) => {
                            tracing::warn!(path = %lpath.display(), offset = off, bytes = zeros, "cutting off a zero-filled queue tail");
                            lfile.set_len(off).map_err(io("truncate", &lpath))?;
                            lfile.sync_all().map_err(io("fsync", &lpath))?;
                            break;
                        }
                        None => {
                            return Err(QueueError::Corrupt {
                                path: lpath,
                                offset: off,
                                reason,
                            });
                        }
                    }
                }
            }
        }
        let oldest = segs[0];
        // Cursors.
        let mut cursors = BTreeMap::new();
        for d in destinations {
            let p = dir.join(format!("cursor-{d}"));
            let c = match std::fs::read(&p) {
                Ok(b) if b.len() == 12 => {
                    let v = u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]));
                    let crc = u32::from_be_bytes(b[8..].try_into().unwrap_or([0; 4]));
                    if crc != crc32fast::hash(&b[..8]) {
                        return Err(QueueError::Corrupt {
                            path: p,
                            offset: 0,
                            reason: "cursor CRC mismatch".into(),
                        });
                    }
                    v.min(last_seq)
                }
                Ok(_) => {
                    return Err(QueueError::Corrupt {
                        path: p,
                        offset: 0,
                        reason: "cursor file size".into(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => oldest - 1,
                Err(e) => return Err(io("read", &p)(e)),
            };
            cursors.insert((*d).to_owned(), c);
        }
        // Forget destinations no longer configured.
        for e in std::fs::read_dir(dir).map_err(io("list", dir))?.flatten() {
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cursor-").map(str::to_owned))
                && !n.ends_with(".tmp")
                && !cursors.contains_key(&n)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let (durable_tx, _) = tokio::sync::watch::channel(last_seq);
        let q = Queue {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                options,
                active: Mutex::new(Active {
                    file: Arc::new(lfile),
                    first: last_first,
                    len: off,
                    written: last_seq,
                    repair: None,
                }),
                cursors: Mutex::new(cursors),
                durable_tx,
            }),
        };
        q.gc()?;
        Ok(q)
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Append a payload durably; returns its sequence number once `fdatasync`ed.
    pub fn enqueue(&self, payload: &[u8]) -> Result<u64, QueueError> {
        Ok(*self.enqueue_batch(&[payload])?.end())
    }

    /// Append several payloads durably (one write, one `fdatasync`).
    ///
    /// Enqueuers are serialised (the appliance has two, each writing whole batches). On an error
    /// none of `payloads` is acknowledged or will be delivered: a failed write or flush cuts the
    /// segment back to its last durable entry, through a new descriptor, before the next batch
    /// (after a failed `fsync` the kernel may have dropped the dirty pages, so they are rewritten
    /// by the caller's retry, never trusted to the page cache), and the queue takes that batch as
    /// soon as the disk does.
    pub fn enqueue_batch(
        &self,
        payloads: &[&[u8]],
    ) -> Result<std::ops::RangeInclusive<u64>, QueueError> {
        let inner = &self.inner;
        for p in payloads {
            if p.len() > inner.options.max_entry {
                return Err(QueueError::TooLarge {
                    len: p.len(),
                    max: inner.options.max_entry,
                });
            }
        }
        let mut a = inner.active.lock();
        a.try_repair(&inner.dir)?;
        if a.len >= inner.options.segment_bytes {
            // Roll: the old segment is complete and durable (every batch is synced before it
            // returns) before the new one exists.
            let first = a.written + 1;
            let npath = inner.dir.join(seg_name(first));
            // A roll that failed after creating the file left it empty: reuse it.
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .append(true)
                .open(&npath)
                .map_err(io("create", &npath))?;
            if f.metadata().map_err(io("stat", &npath))?.len() != 0 {
                return Err(QueueError::Corrupt {
                    path: npath,
                    offset: 0,
                    reason: "a segment past the end of the queue already holds data".into(),
                });
            }
            crate::log::sync_dir(&inner.dir).map_err(io("fsync directory", &inner.dir))?;
            a.file = Arc::new(f);
            a.first = first;
            a.len = 0;
        }
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER + 4).sum());
        let first = a.written + 1;
        for (i, p) in payloads.iter().enumerate() {
            let seq = first + i as u64;
            buf.extend_from_slice(MAGIC);
            buf.extend_from_slice(&seq.to_be_bytes());
            buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
            buf.extend_from_slice(p);
            buf.extend_from_slice(&entry_crc(seq, p).to_be_bytes());
        }
        let path = inner.dir.join(seg_name(a.first));
        let written = (&*a.file)
            .write_all(&buf)
            .map_err(|e| (e, "append"))
            .and_then(|_| crate::log::sync_data(&a.file, &inner.dir).map_err(|e| (e, "fsync")));
        if let Err((e, op)) = written {
            // A full disk, typically. Nothing of this batch is acknowledged; the segment takes
            // the next one once it is cut back.
            a.repair = Some(format!("{op} {}: {e}", path.display()));
            if let Err(r) = a.try_repair(&inner.dir) {
                tracing::error!(error = %r, "audit queue repair failed; retried before the next batch");
            }
            return Err(io(op, &path)(e));
        }
        a.len += buf.len() as u64;
        a.written += payloads.len() as u64;
        let last = a.written;
        inner.durable_tx.send_replace(last);
        Ok(first..=last)
    }

    /// Last durable sequence number (0 when nothing was ever queued).
    pub fn last_seq(&self) -> u64 {
        *self.inner.durable_tx.borrow()
    }

    /// A receiver that changes whenever new entries become durable.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    /// The delivered-up-to cursor of `destination`.
    pub fn cursor(&self, destination: &str) -> Result<u64, QueueError> {
        self.inner
            .cursors
            .lock()
            .get(destination)
            .copied()
            .ok_or_else(|| QueueError::UnknownDestination(destination.to_owned()))
    }

    /// Entries not yet delivered to `destination`.
    pub fn backlog(&self, destination: &str) -> Result<u64, QueueError> {
        Ok(self.last_seq().saturating_sub(self.cursor(destination)?))
    }

    /// Record durably that `destination` has every entry up to `seq`, then delete segments that
    /// every destination is past.
    pub fn commit(&self, destination: &str, seq: u64) -> Result<(), QueueError> {
        if seq > self.last_seq() {
            return Err(QueueError::Corrupt {
                path: self.inner.dir.clone(),
                offset: 0,
                reason: format!(
                    "cannot mark entry {seq} delivered: the queue ends at {}",
                    self.last_seq()
                ),
            });
        }
        {
            let mut c = self.inner.cursors.lock();
            let cur = c
                .get_mut(destination)
                .ok_or_else(|| QueueError::UnknownDestination(destination.to_owned()))?;
            if seq <= *cur {
                return Ok(());
            }
            let dir = &self.inner.dir;
            let p = dir.join(format!("cursor-{destination}"));
            let tmp = dir.join(format!("cursor-{destination}.tmp"));
            let mut b = seq.to_be_bytes().to_vec();
            b.extend_from_slice(&crc32fast::hash(&seq.to_be_bytes()).to_be_bytes());
            let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&b)
                .and_then(|_| f.sync_all())
                .map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &p).map_err(io("rename", &p))?;
            crate::log::sync_dir(dir).map_err(io("fsync directory", dir))?;
            *cur = seq;
        }
        self.gc()
    }

    fn gc(&self) -> Result<(), QueueError> {
        let min = match self.inner.cursors.lock().values().min() {
            Some(m) => *m,
            None => return Ok(()),
        };
        let active_first = self.inner.active.lock().first;
        let segs = list_segments(&self.inner.dir)?;
        for w in segs.windows(2) {
            // Segment w[0] holds w[0]..w[1]-1.
            if w[1] <= active_first && w[1] - 1 <= min {
                let p = self.inner.dir.join(seg_name(w[0]));
                std::fs::remove_file(&p).map_err(io("remove", &p))?;
            }
        }
        Ok(())
    }

    /// A reader positioned after `after` (typically a destination's cursor).
    pub fn reader(&self, after: u64) -> QueueReader {
        QueueReader {
            queue: self.clone(),
            next: after + 1,
            pos: None,
        }
    }
}

/// Sequential reader of durable queue entries.
pub struct QueueReader {
    queue: Queue,
    next: u64,
    /// Open segment: (first seq, file, offset of entry `next`).
    pos: Option<(u64, File, u64)>,
}

impl QueueReader {
    /// Sequence number of the next entry to be returned.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Up to `max_entries` / about `max_bytes` durable entries, in order; empty when caught up.
    pub fn read_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        let durable = self.queue.last_seq();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let dir = self.queue.inner.dir.clone();
        let max_entry = self.queue.inner.options.max_entry;
        while self.next <= durable && out.len() < max_entries && bytes < max_bytes {
            if self.pos.is_none() {
                let segs = list_segments(&dir)?;
                let Some(&first) = segs.iter().rev().find(|&&f| f <= self.next) else {
                    return Err(QueueError::Corrupt {
                        path: dir.clone(),
                        offset: 0,
                        reason: format!(
                            "entry {} is no longer queued (segment deleted)",
                            self.next
                        ),
                    });
                };
                let path = dir.join(seg_name(first));
                let f = File::open(&path).map_err(io("open", &path))?;
                // Skip to `next`.
                let mut off = 0;
                let mut seq = first;
                while seq < self.next {
                    match read_entry(&f, off, max_entry).map_err(io("read", &path))? {
                        Read1::Entry { next, seq: s, .. } => {
                            off = next;
                            seq = s + 1;
                        }
                        _ => break,
                    }
                }
                self.pos = Some((first, f, off));
            }
            let Some((first, f, off)) = &mut self.pos else {
                break;
            };
            let path = dir.join(seg_name(*first));
            match read_entry(f, *off, max_entry).map_err(io("read", &path))? {
                Read1::Entry { seq, payload, next } => {
                    if seq != self.next {
                        return Err(QueueError::Corrupt {
                            path,
                            offset: *off,
                            reason: format!("expected entry {}, found {seq}", self.next),
                        });
                    }
                    *off = next;
                    self.next += 1;
                    bytes += payload.len();
                    out.push((seq, payload));
                }
                Read1::End { .. } => {
                    // End of this segment: the next one starts at `next` (if it exists yet).
                    if list_segments(&dir)?.contains(&self.next) {
                        self.pos = None;
                    } else {
                        break;
                    }
                }
                Read1::Bad(reason) => {
                    return Err(QueueError::Corrupt {
                        path,
                        offset: *off,
                        reason,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Re-position after `after` (e.g. back to the cursor after a lost connection).
    pub fn rewind(&mut self, after: u64) {
        self.next = after + 1;
        self.pos = None;
    }
}

/// Formats audit messages as RFC 5424 and enqueues them.
#[derive(Clone)]
pub struct Auditor {
    queue: Queue,
    hostname: String,
    app_name: String,
    procid: Option<String>,
}

impl Auditor {
    /// An auditor writing syslog headers with this HOSTNAME and APP-NAME (and the process id as
    /// PROCID).
    pub fn new(queue: Queue, hostname: &str, app_name: &str) -> Self {
        Auditor {
            queue,
            hostname: hostname.to_owned(),
            app_name: app_name.to_owned(),
            procid: Some(std::process::id().to_string()),
        }
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The RFC 5424 bytes of `message` (severity 4 for failures, 5 otherwise), stamped `now`.
    pub fn format(
        &self,
        message: &AuditMessage,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, QueueError> {
        let xml = message.to_xml()?;
        let failure = message.event.outcome != EventOutcome::Success;
        SyslogMessage::audit(
            now,
            &self.hostname,
            &self.app_name,
            self.procid.as_deref(),
            failure,
            &xml,
        )
        .to_bytes()
        .map_err(|e| {
            QueueError::Model(crate::error::ModelError::Invalid {
                field: "syslog header",
                reason: e.to_string(),
            })
        })
    }

    /// Enqueue `message` durably; returns its queue sequence number.
    pub fn record(&self, message: &AuditMessage, now: OffsetDateTime) -> Result<u64, QueueError> {
        let bytes = self.format(message, now)?;
        self.queue.enqueue(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed write or `fdatasync` refuses its batch and cuts it off; the next batch takes
    /// the same sequence numbers, readers never see the refused entries, and a reopen finds
    /// exactly the acknowledged ones.
    #[test]
    fn a_failed_flush_refuses_its_batch_and_the_queue_takes_the_next() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: refusals across rolls too.
        let opts = QueueOptions {
            segment_bytes: 300,
            ..QueueOptions::default()
        };
        let q = Queue::open(dir.path(), &["a"], opts.clone()).unwrap();
        assert_eq!(q.enqueue_batch(&[b"one", b"two"]).unwrap(), 1..=2);
        crate::faults::fail_next_syncs(dir.path(), 1);
        assert!(matches!(
            q.enqueue_batch(&[b"lost-1", b"lost-2"]),
            Err(QueueError::Io { op: "fsync", .. })
        ));
        assert_eq!(q.last_seq(), 2, "nothing refused is announced");
        let mut r = q.reader(0);
        assert_eq!(r.read_batch(10, 1 << 20).unwrap().len(), 2);
        assert_eq!(q.enqueue_batch(&[b"three"]).unwrap(), 3..=3);
        // Across segment rolls too.
        for i in 4..40u64 {
            if i % 7 == 0 {
                crate::faults::fail_next_syncs(dir.path(), 1);
                assert!(q.enqueue(b"lost").is_err());
            }
            assert_eq!(q.enqueue(format!("m{i}").as_bytes()).unwrap(), i);
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2);
        let got = r.read_batch(100, 1 << 20).unwrap();
        assert_eq!(got.first().unwrap(), &(3, b"three".to_vec()));
        assert_eq!(got.len(), 37);
        assert!(got.iter().all(|(_, p)| !p.starts_with(b"lost")));
        drop(q);
        let q = Queue::open(dir.path(), &["a"], opts).unwrap();
        assert_eq!(q.last_seq(), 39);
        let all = q.reader(0).read_batch(100, 1 << 20).unwrap();
        assert_eq!(all.len(), 39);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, (s, p))| *s == i as u64 + 1 && !p.starts_with(b"lost"))
        );
    }

    #[test]
    fn enqueue_read_commit_reopen_gc() {
        let dir = tempfile::tempdir().unwrap();
        let opts = QueueOptions {
            segment_bytes: 200,
            max_entry: 1000,
        };
        let q = Queue::open(dir.path(), &["a", "b"], opts.clone()).unwrap();
        for i in 0..20u32 {
            assert_eq!(
                q.enqueue(format!("message {i}").as_bytes()).unwrap(),
                u64::from(i) + 1
            );
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2);
        let mut r = q.reader(q.cursor("a").unwrap());
        let got = r.read_batch(7, 1 << 20).unwrap();
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], (1, b"message 0".to_vec()));
        q.commit("a", 7).unwrap();
        let all = r.read_batch(100, 1 << 20).unwrap();
        assert_eq!(all.first().unwrap().0, 8);
        assert_eq!(all.last().unwrap().0, 20);
        q.commit("a", 20).unwrap();
        // b has nothing: every segment stays.
        assert_eq!(q.backlog("b").unwrap(), 20);
        drop(q);
        let q = Queue::open(dir.path(), &["a", "b"], opts.clone()).unwrap();
        assert_eq!(q.cursor("a").unwrap(), 20);
        assert_eq!(q.cursor("b").unwrap(), 0);
        let mut rb = q.reader(0);
        let all = rb.read_batch(100, 1 << 20).unwrap();
        assert_eq!(all.len(), 20);
        q.commit("b", 15).unwrap();
        let segs = list_segments(dir.path()).unwrap();
        assert!(segs[0] > 1, "delivered segments deleted: {segs:?}");
        // Continues numbering after reopen.
        assert_eq!(q.enqueue(b"x").unwrap(), 21);
        // A reader behind the deleted segments gets an error, not wrong data.
        assert!(q.reader(0).read_batch(10, 1 << 20).is_err());
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &["a"], QueueOptions::default()).unwrap();
        q.enqueue(b"one").unwrap();
        q.enqueue(b"two").unwrap();
        drop(q);
        let p = dir.path().join(seg_name(1));
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let q = Queue::open(dir.path(), &["a"], QueueOptions::default()).unwrap();
        assert_eq!(q.last_seq(), 1);
        assert_eq!(q.enqueue(b"three").unwrap(), 2);
        let got = q.reader(0).read_batch(10, 1 << 20).unwrap();
        assert_eq!(got, vec![(1, b"one".to_vec()), (2, b"three".to_vec())]);
        drop(q);
        // A zero-filled tail (power loss before unsynced data reached the disk) is cut too.
        let mut data = std::fs::read(&p).unwrap();
        data.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&p, data).unwrap();
        let q = Queue::open(dir.path(), &["a"], QueueOptions::default()).unwrap();
        assert_eq!(q.enqueue(b"four").unwrap(), 3);
        // Garbage that is not zeros is refused.
        drop(q);
        let mut data = std::fs::read(&p).unwrap();
        data.extend_from_slice(b"garbage that is not a queue entry");
        std::fs::write(&p, data).unwrap();
        assert!(matches!(
            Queue::open(dir.path(), &["a"], QueueOptions::default()),
            Err(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn refuses_bad_names_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Queue::open(dir.path(), &["../x"], QueueOptions::default()),
            Err(QueueError::BadDestination(_))
        ));
        let q = Queue::open(
            dir.path(),
            &["a"],
            QueueOptions {
                segment_bytes: 1 << 20,
                max_entry: 10,
            },
        )
        .unwrap();
        assert!(matches!(
            q.enqueue(&[0u8; 11]),
            Err(QueueError::TooLarge { .. })
        ));
        assert!(q.commit("zz", 1).is_err());
        assert!(q.commit("a", 1).is_err(), "nothing queued yet");
    }

    #[test]
    fn concurrent_enqueuers() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(
            dir.path(),
            &["a"],
            QueueOptions {
                segment_bytes: 4096,
                max_entry: 100,
            },
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let q = q.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        q.enqueue(format!("{t}-{i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(q.last_seq(), 200);
        let got = q.reader(0).read_batch(1000, 1 << 20).unwrap();
        assert_eq!(got.len(), 200);
        assert!(got.iter().enumerate().all(|(i, (s, _))| *s == i as u64 + 1));
    }
}
