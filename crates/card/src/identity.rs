//! The CPS-profile identity object (tag `5FFF20`): the professional's identity summary, so a
//! workstation can show who the card belongs to without parsing certificates.
//!
//! Value (inside `53`): simple TLVs, UTF-8 text —
//! `80` IdNat_PS, `81` family name, `82` given names, `83` profession code,
//! `84` specialty code (optional), `85` card type (optional, e.g. "CPS").

use crate::error::{CardError, Result};
use crate::tlv;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpsIdentity {
    /// National health-professional identifier (e.g. "810012345678" for an RPPS number).
    pub idnat_ps: String,
    pub family_name: String,
    pub given_names: String,
    /// Profession code (e.g. "10" médecin, "21" pharmacien).
    pub profession: String,
    pub specialty: Option<String>,
    pub card_type: Option<String>,
}

const MAX_FIELD: usize = 200;

impl CpsIdentity {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let mut put = |tag: u32, s: &str, required: bool| -> Result<()> {
            if s.len() > MAX_FIELD || (required && s.is_empty()) {
                return Err(CardError::Invalid(format!(
                    "identity field {tag:02X}: {} (1 to {MAX_FIELD} bytes)",
                    if s.is_empty() { "empty" } else { "too long" }
                )));
            }
            tlv::put(&mut v, tag, s.as_bytes());
            Ok(())
        };
        put(0x80, &self.idnat_ps, true)?;
        put(0x81, &self.family_name, true)?;
        put(0x82, &self.given_names, true)?;
        put(0x83, &self.profession, true)?;
        if let Some(s) = &self.specialty {
            put(0x84, s, false)?;
        }
        if let Some(s) = &self.card_type {
            put(0x85, s, false)?;
        }
        Ok(v)
    }

    pub fn decode(v: &[u8]) -> Result<CpsIdentity> {
        let bad = |d: String| CardError::Malformed {
            what: "CPS identity object",
            detail: d,
        };
        let items = tlv::read_all(v, 16).map_err(|_| bad("bad TLV".into()))?;
        let text = |tag: u32| -> Result<Option<String>> {
            match items.iter().find(|i| i.tag == tag) {
                None => Ok(None),
                Some(i) => std::str::from_utf8(i.value)
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| bad(format!("field {tag:02X} is not UTF-8"))),
            }
        };
        let req = |tag: u32| -> Result<String> {
            text(tag)?.ok_or_else(|| bad(format!("field {tag:02X} missing")))
        };
        Ok(CpsIdentity {
            idnat_ps: req(0x80)?,
            family_name: req(0x81)?,
            given_names: req(0x82)?,
            profession: req(0x83)?,
            specialty: text(0x84)?,
            card_type: text(0x85)?,
        })
    }
}
