//! RFC 5425 §4.3 octet-counting framing: `SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG`, with
//! `MSG-LEN = NONZERO-DIGIT *DIGIT`.
//!
//! [`FrameDecoder`] is sans-IO and incremental: feed it whatever the transport delivered, in any
//! split, and take complete frames out. A frame longer than the configured maximum, a malformed
//! length, or a stream that ends inside a frame is an error naming the stream offset; after an
//! error the decoder stays failed (an octet-counted stream cannot be re-synchronised).

use crate::error::FrameError;

/// The smallest maximum frame size a decoder may be given: DICOM PS3.15 A.6 requires at least
/// 32 768 octets.
pub const MIN_MAX_FRAME: usize = 32 * 1024;

/// Append one frame carrying `msg` to `out`.
pub fn encode_frame(msg: &[u8], out: &mut Vec<u8>) {
    out.reserve(msg.len() + 12);
    let mut digits = [0u8; 20];
    let mut n = msg.len();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// Incremental decoder of octet-counted frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max: usize,
    max_digits: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_frame` octets of SYSLOG-MSG (raised to
    /// [`MIN_MAX_FRAME`] if lower).
    pub fn new(max_frame: usize) -> Self {
        let max = max_frame.max(MIN_MAX_FRAME);
        FrameDecoder {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            offset: 0,
            max,
            max_digits: max.to_string().len(),
            failed: None,
        }
    }

    /// The maximum frame size in force.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Add bytes received from the transport.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0
            && (self.start >= self.buf.len() / 2
                || self.buf.len() + data.len() > self.buf.capacity())
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame's SYSLOG-MSG, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.header() {
            Ok(None) => Ok(None),
            Ok(Some((hlen, mlen))) => {
                let need = hlen + mlen;
                if self.pending() < need {
                    return Ok(None);
                }
                let s = self.start + hlen;
                self.start += need;
                self.offset += need as u64;
                Ok(Some(&self.buf[s..s + mlen]))
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Parse the header at `start`: `(header length including SP, message length)`.
    fn header(&self) -> Result<Option<(usize, usize)>, FrameError> {
        let b = &self.buf[self.start..];
        let bad = |reason: String| FrameError::BadHeader {
            offset: self.offset,
            reason,
        };
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        if !(b'1'..=b'9').contains(&first) {
            let hint = if first == b'<' {
                " (a syslog message without a length: non-transparent framing is not RFC 5425)"
            } else if first == b'0' {
                " (MSG-LEN may not start with 0)"
            } else {
                ""
            };
            return Err(bad(format!(
                "expected a digit 1-9, found byte 0x{first:02x}{hint}"
            )));
        }
        let mut len: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            if c.is_ascii_digit() {
                if i >= self.max_digits {
                    return Err(FrameError::TooLong {
                        offset: self.offset,
                        len: len.saturating_mul(10),
                        max: self.max,
                    });
                }
                len = len * 10 + u64::from(c - b'0');
            } else if c == b' ' {
                if len > self.max as u64 {
                    return Err(FrameError::TooLong {
                        offset: self.offset,
                        len,
                        max: self.max,
                    });
                }
                return Ok(Some((i + 1, len as usize)));
            } else {
                return Err(bad(format!(
                    "expected a digit or a space after MSG-LEN, found byte 0x{c:02x}"
                )));
            }
        }
        // All digits so far: need more input (the digit count is bounded above).
        Ok(None)
    }

    /// Call at end of stream: an error if the stream stopped inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let have = self.pending();
        if have == 0 {
            return Ok(());
        }
        let need = match self.header() {
            Ok(Some((h, m))) => h + m,
            _ => 0,
        };
        Err(FrameError::Truncated {
            offset: self.offset,
            have,
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(d: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn encodes_and_decodes() {
        let mut wire = Vec::new();
        encode_frame(b"<85>1 - - - - - - hello", &mut wire);
        encode_frame(b"", &mut wire);
        assert!(wire.starts_with(b"23 <85>1"));
        let mut d = FrameDecoder::new(0);
        d.push(&wire[..5]);
        assert_eq!(frames(&mut d).unwrap(), Vec::<Vec<u8>>::new());
        d.push(&wire[5..]);
        // A zero-length frame has MSG-LEN "0", which RFC 5425 forbids: refused.
        let err = frames(&mut d).unwrap_err();
        assert!(
            matches!(err, FrameError::BadHeader { offset: 26, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_oversized_and_garbage() {
        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(b"32769 x");
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLong { len: 32769, .. })
        ));
        // stays failed
        assert!(d.next_frame().is_err());

        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(b"99999999999999999999999999");
        assert!(matches!(d.next_frame(), Err(FrameError::TooLong { .. })));

        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(b"<13>1 - - - - - - no length\n");
        let e = d.next_frame().unwrap_err();
        assert!(e.to_string().contains("non-transparent"), "{e}");

        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(b"12x");
        assert!(matches!(d.next_frame(), Err(FrameError::BadHeader { .. })));
    }

    #[test]
    fn accepts_32k_and_reports_truncation() {
        let msg = vec![b'a'; 32 * 1024];
        let mut wire = Vec::new();
        encode_frame(&msg, &mut wire);
        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(&wire[..wire.len() - 1]);
        assert!(d.next_frame().unwrap().is_none());
        let e = d.finish().unwrap_err();
        assert_eq!(
            e,
            FrameError::Truncated {
                offset: 0,
                have: wire.len() - 1,
                need: wire.len()
            }
        );
        d.push(&wire[wire.len() - 1..]);
        assert_eq!(d.next_frame().unwrap().unwrap().len(), 32 * 1024);
        assert!(d.finish().is_ok());
    }
}
