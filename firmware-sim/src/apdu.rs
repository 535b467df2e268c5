//! ISO 7816-4 command APDU parsing (short and extended forms) and status words.
//!
//! The parser never panics: every malformed input is an [`ApduError`] that the applet turns
//! into the status word a real card answers with.

/// A parsed command APDU. `le` is `Ne`, the maximum number of response bytes expected
/// (`None` when the APDU carries no Le field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    pub le: Option<usize>,
    pub extended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApduError {
    /// Fewer than 4 header bytes.
    TooShort,
    /// Lc/Le fields inconsistent with the APDU length.
    WrongLength,
}

impl<'a> Command<'a> {
    /// Parses the four ISO 7816-3 cases, short and extended.
    pub fn parse(b: &'a [u8]) -> Result<Command<'a>, ApduError> {
        if b.len() < 4 {
            return Err(ApduError::TooShort);
        }
        let (cla, ins, p1, p2) = (b[0], b[1], b[2], b[3]);
        let body = &b[4..];
        let mk = |data: &'a [u8], le: Option<usize>, extended: bool| Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
            extended,
        };
        match body.len() {
            // Case 1
            0 => Ok(mk(&[], None, false)),
            // Case 2 short
            1 => Ok(mk(
                &[],
                Some(if body[0] == 0 { 256 } else { body[0] as usize }),
                false,
            )),
            _ if body[0] != 0 => {
                // Case 3 or 4 short
                let lc = body[0] as usize;
                let rest = &body[1..];
                if rest.len() == lc {
                    Ok(mk(rest, None, false))
                } else if rest.len() == lc + 1 {
                    let le = rest[lc];
                    Ok(mk(
                        &rest[..lc],
                        Some(if le == 0 { 256 } else { le as usize }),
                        false,
                    ))
                } else {
                    Err(ApduError::WrongLength)
                }
            }
            // body[0] == 0 and len >= 2: extended forms
            3 => {
                // Case 2 extended: 00 Le1 Le2
                let le = u16::from_be_bytes([body[1], body[2]]) as usize;
                Ok(mk(&[], Some(if le == 0 { 65536 } else { le }), true))
            }
            n if n > 3 => {
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                if lc == 0 {
                    return Err(ApduError::WrongLength);
                }
                let rest = &body[3..];
                if rest.len() == lc {
                    Ok(mk(rest, None, true))
                } else if rest.len() == lc + 2 {
                    let le = u16::from_be_bytes([rest[lc], rest[lc + 1]]) as usize;
                    Ok(mk(
                        &rest[..lc],
                        Some(if le == 0 { 65536 } else { le }),
                        true,
                    ))
                } else {
                    Err(ApduError::WrongLength)
                }
            }
            _ => Err(ApduError::WrongLength),
        }
    }

    /// Command chaining bit (ISO 7816-4 5.1.1: CLA b5).
    pub fn chained(&self) -> bool {
        self.cla & 0x10 != 0
    }
}

/// Status words used by the applet.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const SM_NOT_SUPPORTED: u16 = 0x6882;
    pub const LAST_CHAIN_EXPECTED: u16 = 0x6883;
    pub const SECURITY_STATUS: u16 = 0x6982;
    pub const AUTH_BLOCKED: u16 = 0x6983;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    pub const NOT_FOUND: u16 = 0x6A82;
    pub const NOT_ENOUGH_MEMORY: u16 = 0x6A84;
    pub const WRONG_P1P2: u16 = 0x6A86;
    pub const REF_NOT_FOUND: u16 = 0x6A88;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const UNKNOWN: u16 = 0x6F00;

    /// Every status word this card can answer (the fuzz targets and tests check against it).
    pub fn is_valid(sw: u16) -> bool {
        matches!(
            sw,
            OK | WRONG_LENGTH
                | SM_NOT_SUPPORTED
                | LAST_CHAIN_EXPECTED
                | SECURITY_STATUS
                | AUTH_BLOCKED
                | CONDITIONS_NOT_SATISFIED
                | WRONG_DATA
                | FUNC_NOT_SUPPORTED
                | NOT_FOUND
                | NOT_ENOUGH_MEMORY
                | WRONG_P1P2
                | REF_NOT_FOUND
                | INS_NOT_SUPPORTED
                | CLA_NOT_SUPPORTED
                | UNKNOWN
        ) || sw & 0xFF00 == 0x6100
            || sw & 0xFFF0 == 0x63C0
    }

    /// `63Cx`: verification failed, x tries left.
    pub fn tries_left(n: u8) -> u16 {
        0x63C0 | (n.min(15) as u16)
    }
}

/// Builds a response APDU from data and a status word.
pub fn response(data: &[u8], sw: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 2);
    v.extend_from_slice(data);
    v.extend_from_slice(&sw.to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let c = Command::parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((c.data.len(), c.le), (0, None));
        let c = Command::parse(&[0, 0xC0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 1, 2]).unwrap();
        assert_eq!((c.data, c.le), (&[1u8, 2][..], None));
        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 1, 2, 8]).unwrap();
        assert_eq!((c.data, c.le), (&[1u8, 2][..], Some(8)));
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0, 0x10, 0]).unwrap();
        assert_eq!((c.le, c.extended), (Some(0x1000), true));
        let c = Command::parse(&[0, 0xDB, 0x3F, 0xFF, 0, 0, 2, 9, 9, 0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[9u8, 9][..], Some(65536)));
        assert_eq!(Command::parse(&[0, 1, 2]), Err(ApduError::TooShort));
        assert_eq!(
            Command::parse(&[0, 1, 2, 3, 5, 1]),
            Err(ApduError::WrongLength)
        );
        assert_eq!(
            Command::parse(&[0, 1, 2, 3, 0, 0]),
            Err(ApduError::WrongLength)
        );
    }
}
