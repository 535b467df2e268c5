//! Canonical binary encoding of records and checkpoints: big-endian integers, length-prefixed
//! byte strings, fields in a fixed order. One value has exactly one encoding, so hashing the
//! bytes is hashing the value.

/// Appends fields to a buffer.
pub(crate) struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// Short string: u16 length. Callers bound lengths beforehand.
    pub fn str16(&mut self, v: &str) {
        self.bytes16(v.as_bytes());
    }
    pub fn bytes16(&mut self, v: &[u8]) {
        let n = v.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.raw(&v[..n]);
    }
    pub fn bytes32(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str16(s);
            }
        }
    }
}

/// Reads fields; every read is bounds-checked.
pub(crate) struct Dec<'a> {
    pub s: &'a [u8],
    pub i: usize,
}

/// A decoding failure: what was being read and where.
#[derive(Debug)]
pub(crate) struct DecError(pub String);

type R<T> = Result<T, DecError>;

impl<'a> Dec<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Dec { s, i: 0 }
    }
    pub fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        if self.s.len() - self.i < n {
            return Err(DecError(format!(
                "{what}: needs {n} bytes, {} left",
                self.s.len() - self.i
            )));
        }
        let v = &self.s[self.i..self.i + n];
        self.i += n;
        Ok(v)
    }
    pub fn u8(&mut self, what: &str) -> R<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> R<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self, what: &str) -> R<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self, what: &str) -> R<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub fn i64(&mut self, what: &str) -> R<i64> {
        Ok(self.u64(what)? as i64)
    }
    pub fn arr32(&mut self, what: &str) -> R<[u8; 32]> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32, what)?);
        Ok(a)
    }
    pub fn bytes16(&mut self, what: &str) -> R<&'a [u8]> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    pub fn bytes32(&mut self, what: &str) -> R<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub fn str16(&mut self, what: &str) -> R<String> {
        let b = self.bytes16(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecError(format!("{what}: not UTF-8")))
    }
    pub fn opt_str(&mut self, what: &str) -> R<Option<String>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.str16(what)?)),
            t => Err(DecError(format!("{what}: option tag {t}"))),
        }
    }
    pub fn done(&self, what: &str) -> R<()> {
        if self.i != self.s.len() {
            return Err(DecError(format!(
                "{what}: {} trailing bytes",
                self.s.len() - self.i
            )));
        }
        Ok(())
    }
}
