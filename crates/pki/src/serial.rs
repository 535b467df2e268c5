use crate::PkiError;

/// A certificate serial number: the content octets of a positive, DER-minimal INTEGER.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From DER INTEGER content octets; must be positive, minimal and at most 20 octets.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PkiError> {
        if bytes.is_empty() || bytes.len() > 20 {
            return Err(PkiError::Params(format!(
                "serial number of {} octets (1 to 20 allowed)",
                bytes.len()
            )));
        }
        if bytes[0] & 0x80 != 0 {
            return Err(PkiError::Params("negative serial number".into()));
        }
        if bytes.len() > 1 && bytes[0] == 0 && bytes[1] & 0x80 == 0 {
            return Err(PkiError::Params("serial number is not DER-minimal".into()));
        }
        if bytes.iter().all(|b| *b == 0) {
            return Err(PkiError::Params("serial number zero".into()));
        }
        Ok(Serial(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Upper-case hex, as operators and `openssl x509 -serial` show it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }

    pub fn from_hex(s: &str) -> Result<Self, PkiError> {
        let s = s.trim().trim_start_matches("0x").replace(':', "");
        if s.is_empty() || s.len() > 42 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::Params(format!(
                "'{s}' is not a hexadecimal serial number"
            )));
        }
        let s = if s.len() % 2 == 1 { format!("0{s}") } else { s };
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect();
        // Accept non-minimal input from people (leading zeros), store the minimal form.
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        let mut minimal = bytes[first..].to_vec();
        if minimal.first().is_some_and(|b| b & 0x80 != 0) {
            minimal.insert(0, 0);
        }
        Serial::from_bytes(&minimal)
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A 128-bit serial from 16 CSPRNG bytes: the top bit is cleared (positive) and the next one set
/// (so the encoding is always 16 octets and DER-minimal), leaving 126 random bits.
pub fn serial_from_random(random: [u8; 16]) -> Serial {
    let mut b = random;
    b[0] = (b[0] & 0x7f) | 0x40;
    Serial(b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_minimal_16_octets() {
        for first in [0x00u8, 0x7f, 0x80, 0xff] {
            let mut r = [0xa5u8; 16];
            r[0] = first;
            let s = serial_from_random(r);
            assert_eq!(s.as_bytes().len(), 16);
            Serial::from_bytes(s.as_bytes()).unwrap();
        }
    }

    #[test]
    fn hex_round_trip_and_rejections() {
        let s = Serial::from_hex("00:8F:01").unwrap();
        assert_eq!(s.as_bytes(), &[0x00, 0x8f, 0x01]);
        assert_eq!(Serial::from_hex(&s.to_hex()).unwrap(), s);
        assert!(Serial::from_hex("xyz").is_err());
        assert!(Serial::from_hex("").is_err());
        assert!(Serial::from_bytes(&[0x80]).is_err());
        assert!(Serial::from_bytes(&[0x00, 0x01]).is_err());
        assert!(Serial::from_bytes(&[0u8; 21]).is_err());
        assert!(Serial::from_bytes(&[0]).is_err());
    }
}
