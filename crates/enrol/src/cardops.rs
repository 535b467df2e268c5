//! Card operations the PIV client does not have as such.

use cps_card::{CardError, MgmtAlgorithm, Piv, Slot, Transport};

use crate::secrets::mgmt_alg_id;

/// The card serial: the GUID of its CHUID, upper-case hex.
pub fn card_serial<T: Transport>(piv: &mut Piv<T>) -> Result<String, CardError> {
    let chuid = piv.read_chuid()?.ok_or(CardError::NotFound {
        what: "CHUID (the card cannot be identified)",
    })?;
    if chuid.guid.is_empty() || chuid.guid.iter().all(|b| *b == 0) || chuid.guid.len() > 32 {
        return Err(CardError::Malformed {
            what: "CHUID",
            detail: "no usable GUID to identify the card".into(),
        });
    }
    Ok(hex::encode_upper(&chuid.guid))
}

/// What the card holds that a blank card does not: `None` when blank.
pub fn non_blank_reason<T: Transport>(piv: &mut Piv<T>) -> Result<Option<String>, CardError> {
    let mut found = Vec::new();
    for slot in [Slot::Authentication, Slot::Signature] {
        if piv.read_certificate(slot)?.is_some() {
            found.push(format!("a certificate in slot {slot}"));
        }
    }
    if piv.read_identity()?.is_some() {
        found.push("a CPS identity object".to_string());
    }
    Ok((!found.is_empty()).then(|| format!("it holds {}", found.join(", "))))
}

/// Whether the card accepted a new management key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKeyOutcome {
    /// The card now has the new key.
    Changed,
    /// The card does not implement SET MANAGEMENT KEY.
    Unsupported,
}

/// SET MANAGEMENT KEY (`00 FF FF FF`, data `alg 9B len key`), the command PIV cards of the
/// YubiKey family and compatible middleware use to replace the card management key. Needs
/// an authenticated management key.
pub fn set_management_key<T: Transport>(
    piv: &mut Piv<T>,
    alg: MgmtAlgorithm,
    raw_key: &[u8],
) -> Result<SetKeyOutcome, CardError> {
    let mut data = zeroize::Zeroizing::new(vec![mgmt_alg_id(alg), 0x9B, raw_key.len() as u8]);
    data.extend_from_slice(raw_key);
    let (_, sw) = piv.send([0x00, 0xFF, 0xFF, 0xFF], &data, false)?;
    match sw {
        0x9000 => Ok(SetKeyOutcome::Changed),
        0x6D00 | 0x6E00 | 0x6A81 => Ok(SetKeyOutcome::Unsupported),
        0x6982 => Err(CardError::AdminRequired {
            what: "SET MANAGEMENT KEY",
        }),
        sw => Err(CardError::Status {
            what: "SET MANAGEMENT KEY",
            sw,
        }),
    }
}
