//! Minimal BER-TLV codec for PIV templates (tags of 1–3 bytes, definite lengths up to 3 bytes).
//! Shared by the card client (cps-card) and the card simulator (firmware-sim). Never panics on hostile input; nesting is not followed here (callers decide what to open).

/// One TLV: tag bytes as a big-endian integer (`0x5FC105`, `0x7C`, `0x7F49`), and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u32,
    pub value: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvError;

/// Reads one TLV from the front of `b`; returns it and the remaining bytes.
pub fn read(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let mut i = 0;
    let first = *b.first().ok_or(TlvError)?;
    let mut tag = first as u32;
    i += 1;
    if first & 0x1F == 0x1F {
        // subsequent tag bytes while b8 set; PIV uses at most 3 bytes in total
        loop {
            let t = *b.get(i).ok_or(TlvError)?;
            tag = (tag << 8) | t as u32;
            i += 1;
            if t & 0x80 == 0 {
                break;
            }
            if i >= 3 {
                return Err(TlvError);
            }
        }
    }
    let l0 = *b.get(i).ok_or(TlvError)?;
    i += 1;
    let len = match l0 {
        0..=0x7F => l0 as usize,
        0x81 => {
            let v = *b.get(i).ok_or(TlvError)? as usize;
            i += 1;
            v
        }
        0x82 => {
            let v = u16::from_be_bytes([*b.get(i).ok_or(TlvError)?, *b.get(i + 1).ok_or(TlvError)?])
                as usize;
            i += 2;
            v
        }
        0x83 => {
            let v = ((*b.get(i).ok_or(TlvError)? as usize) << 16)
                | ((*b.get(i + 1).ok_or(TlvError)? as usize) << 8)
                | *b.get(i + 2).ok_or(TlvError)? as usize;
            i += 3;
            v
        }
        _ => return Err(TlvError),
    };
    let end = i.checked_add(len).ok_or(TlvError)?;
    if end > b.len() {
        return Err(TlvError);
    }
    Ok((
        Tlv {
            tag,
            value: &b[i..end],
        },
        &b[end..],
    ))
}

/// Parses a whole buffer as a sequence of TLVs (at most `max` of them).
pub fn read_all(mut b: &[u8], max: usize) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if out.len() >= max {
            return Err(TlvError);
        }
        let (t, rest) = read(b)?;
        out.push(t);
        b = rest;
    }
    Ok(out)
}

/// Parses `b` as exactly one TLV with nothing after it.
pub fn read_single(b: &[u8]) -> Result<Tlv<'_>, TlvError> {
    let (t, rest) = read(b)?;
    if rest.is_empty() {
        Ok(t)
    } else {
        Err(TlvError)
    }
}

/// Appends the encoding of a tag.
pub fn put_tag(out: &mut Vec<u8>, tag: u32) {
    if tag > 0xFFFF {
        out.push((tag >> 16) as u8);
    }
    if tag > 0xFF {
        out.push((tag >> 8) as u8);
    }
    out.push(tag as u8);
}

/// Appends a definite length.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len <= 0xFFFF {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// Appends a whole TLV.
pub fn put(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    put_tag(out, tag);
    put_len(out, value.len());
    out.extend_from_slice(value);
}

/// A TLV as a new vector.
pub fn tlv(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 6);
    put(&mut v, tag, value);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (tag, len) in [
            (0x53, 0),
            (0x7C, 127),
            (0x5FC105, 200),
            (0x7F49, 300),
            (0x70, 70000),
        ] {
            let v = vec![0xAB; len];
            let enc = tlv(tag, &v);
            let t = read_single(&enc).unwrap();
            assert_eq!((t.tag, t.value.len()), (tag, len));
        }
    }

    #[test]
    fn hostile() {
        assert!(read(&[]).is_err());
        assert!(read(&[0x5F]).is_err());
        assert!(read(&[0x5F, 0xC1]).is_err());
        assert!(read(&[0x5F, 0xC1, 0x81, 0x80, 1]).is_err()); // 4-byte tag
        assert!(read(&[0x53, 0x84, 0, 0, 0, 1]).is_err());
        assert!(read(&[0x53, 0x82, 0xFF]).is_err());
        assert!(read(&[0x53, 5, 1]).is_err());
        assert!(read_single(&[0x53, 0, 0]).is_err());
    }
}
