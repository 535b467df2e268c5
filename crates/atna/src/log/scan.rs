//! Sequential reading of `records.log`.

use std::fs::File;
use std::io::{BufReader, Read};

use super::record::{MAGIC, MAX_BODY};

/// One step of a scan.
pub(crate) enum Item {
    /// A complete frame: its offset, total length, body and stored hash.
    Frame {
        offset: u64,
        len: u64,
        body: Vec<u8>,
        hash: [u8; 32],
    },
    /// The file ends inside a frame (a crash while appending).
    Torn { offset: u64, have: u64 },
    /// Not a frame at all.
    Bad { offset: u64, reason: String },
}

pub(crate) struct Scanner {
    r: BufReader<File>,
    offset: u64,
    done: bool,
}

impl Scanner {
    pub fn new(f: File) -> Self {
        Scanner {
            r: BufReader::with_capacity(1 << 20, f),
            offset: 0,
            done: false,
        }
    }

    /// A scanner starting at `offset` (the start of a record).
    pub fn at(mut f: File, offset: u64) -> std::io::Result<Self> {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(offset))?;
        Ok(Scanner {
            r: BufReader::with_capacity(1 << 20, f),
            offset,
            done: false,
        })
    }

    /// Read up to `buf.len()` bytes; returns how many were read (short only at EOF).
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    pub fn next_item(&mut self) -> std::io::Result<Option<Item>> {
        if self.done {
            return Ok(None);
        }
        let offset = self.offset;
        let mut head = [0u8; 8];
        let n = self.fill(&mut head)?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        if n < 8 {
            self.done = true;
            return Ok(Some(Item::Torn {
                offset,
                have: n as u64,
            }));
        }
        if &head[..4] != MAGIC {
            self.done = true;
            return Ok(Some(Item::Bad {
                offset,
                reason: "bad record magic".into(),
            }));
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if !(40..=MAX_BODY).contains(&len) {
            self.done = true;
            return Ok(Some(Item::Bad {
                offset,
                reason: format!("record body length {len} out of range"),
            }));
        }
        let mut body = vec![0u8; len + 32];
        let k = self.fill(&mut body)?;
        if k < body.len() {
            self.done = true;
            return Ok(Some(Item::Torn {
                offset,
                have: 8 + k as u64,
            }));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&body[len..]);
        body.truncate(len);
        let total = 8 + len as u64 + 32;
        self.offset += total;
        Ok(Some(Item::Frame {
            offset,
            len: total,
            body,
            hash,
        }))
    }
}

/// If everything from `offset` to the end of the file is zero bytes, how many there are. A
/// crash can leave a file extended with zeros where unsynced (never acknowledged) data was to go.
pub(crate) fn zero_tail(path: &std::path::Path, offset: u64) -> std::io::Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if offset >= len {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut buf = [0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(len - offset));
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(None);
        }
    }
}
