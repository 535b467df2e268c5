//! Per-card secrets derived in the HSM from one master key ([`cps_hsm::MacKey`]), so that
//! nothing secret about a card is stored:
//!
//! * the card management key: `HMAC-SHA256(master, "cps-trust card management key v1" 0x00
//!   serial)`, cut to the key length of the algorithm (AES-256 by default: all 32 bytes);
//! * the initial PIN (6 digits) and PUK (8 digits): digits drawn by rejection sampling from
//!   `HMAC-SHA256(master, "cps-trust initial PIN v1" 0x00 serial 0x00 nonce 0x00 counter)`, where
//!   the nonce is 32 random bytes kept in the enrolment record only until the enrolment ends.
//!   An interrupted enrolment can thus be resumed without the PIN ever being stored; once the
//!   nonce is erased nobody, the appliance included, can recompute it. Trivial values (one
//!   digit repeated, ascending or descending runs, the card defaults) are skipped.

use std::sync::Arc;

use cps_card::{ManagementKey, MgmtAlgorithm};
use cps_hsm::MacKey;
use zeroize::Zeroizing;

use crate::error::{EnrolError, Result};

const MGMT_CONTEXT: &[u8] = b"cps-trust card management key v1\0";
const PIN_CONTEXT: &[u8] = b"cps-trust initial PIN v1\0";
const PUK_CONTEXT: &[u8] = b"cps-trust initial PUK v1\0";

/// Length of a management key of `alg`, in bytes.
pub fn mgmt_key_len(alg: MgmtAlgorithm) -> usize {
    match alg {
        MgmtAlgorithm::Aes128 => 16,
        MgmtAlgorithm::Aes256 => 32,
        _ => 24,
    }
}

/// The SP 800-78 algorithm identifier of a management key algorithm.
pub fn mgmt_alg_id(alg: MgmtAlgorithm) -> u8 {
    match alg {
        MgmtAlgorithm::TripleDes => 0x03,
        MgmtAlgorithm::Aes128 => 0x08,
        MgmtAlgorithm::Aes192 => 0x0A,
        MgmtAlgorithm::Aes256 => 0x0C,
    }
}

/// The configuration name of a management key algorithm.
pub fn mgmt_alg_name(alg: MgmtAlgorithm) -> &'static str {
    match alg {
        MgmtAlgorithm::TripleDes => "3des",
        MgmtAlgorithm::Aes128 => "aes128",
        MgmtAlgorithm::Aes192 => "aes192",
        MgmtAlgorithm::Aes256 => "aes256",
    }
}

/// Parses [`mgmt_alg_name`].
pub fn mgmt_alg_from_name(s: &str) -> Option<MgmtAlgorithm> {
    Some(match s {
        "3des" => MgmtAlgorithm::TripleDes,
        "aes128" => MgmtAlgorithm::Aes128,
        "aes192" => MgmtAlgorithm::Aes192,
        "aes256" => MgmtAlgorithm::Aes256,
        _ => return None,
    })
}

/// The initial PIN and PUK of a card, shown once (PIN mailer). Zeroed when dropped; `Debug`
/// does not show them.
pub struct InitialSecrets {
    /// The PIN (6 digits).
    pub pin: Zeroizing<String>,
    /// The PUK (8 digits).
    pub puk: Zeroizing<String>,
}

impl std::fmt::Debug for InitialSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitialSecrets(<PIN and PUK hidden>)")
    }
}

/// Derives per-card secrets from a master MAC key.
#[derive(Clone)]
pub struct CardSecrets {
    master: Arc<dyn MacKey>,
}

impl std::fmt::Debug for CardSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardSecrets(master key {:?})", self.master.label())
    }
}

fn trivial(d: &[u8]) -> bool {
    let all_same = d.iter().all(|x| *x == d[0]);
    let up = d.windows(2).all(|w| w[1] == (w[0] + 1) % 10);
    let down = d.windows(2).all(|w| w[0] == (w[1] + 1) % 10);
    all_same || up || down
}

impl CardSecrets {
    /// Secrets derived from `master`.
    pub fn new(master: Arc<dyn MacKey>) -> CardSecrets {
        CardSecrets { master }
    }

    /// Label of the master key (recorded with each card).
    pub fn master_label(&self) -> &str {
        self.master.label()
    }

    /// The per-card management key of card `serial`.
    pub fn management_key(&self, serial: &str, alg: MgmtAlgorithm) -> Result<ManagementKey> {
        let key = self.management_key_bytes(serial, alg)?;
        Ok(ManagementKey::new(alg, &key)?)
    }

    /// The raw bytes of [`CardSecrets::management_key`] (to send to the card once).
    pub fn management_key_bytes(
        &self,
        serial: &str,
        alg: MgmtAlgorithm,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut input = MGMT_CONTEXT.to_vec();
        input.extend_from_slice(serial.as_bytes());
        let mac = Zeroizing::new(self.master.hmac_sha256(&input)?);
        let len = mgmt_key_len(alg);
        let mut key = Zeroizing::new(mac[..len].to_vec());
        if alg == MgmtAlgorithm::TripleDes {
            // Avoid a degenerate 3DES key (K1 = K2 or K2 = K3 makes it single DES).
            key[8] ^= 0x55;
            key[16] ^= 0xAA;
        }
        Ok(key)
    }

    fn digits(
        &self,
        context: &[u8],
        serial: &str,
        nonce: &[u8],
        n: usize,
        avoid: &[&str],
    ) -> Result<Zeroizing<String>> {
        for counter in 0u32..64 {
            let mut input = context.to_vec();
            input.extend_from_slice(serial.as_bytes());
            input.push(0);
            input.extend_from_slice(nonce);
            input.push(0);
            input.extend_from_slice(&counter.to_be_bytes());
            let mac = Zeroizing::new(self.master.hmac_sha256(&input)?);
            // Every buffer that holds the digits is zeroed when dropped, and sized not to grow.
            let mut d = Zeroizing::new(Vec::with_capacity(n));
            d.extend(mac.iter().filter(|b| **b < 250).map(|b| b % 10).take(n));
            if d.len() < n || trivial(&d) {
                continue;
            }
            let mut s = Zeroizing::new(String::with_capacity(n));
            s.extend(d.iter().map(|x| char::from(b'0' + x)));
            if avoid.contains(&s.as_str()) {
                continue;
            }
            return Ok(s);
        }
        Err(EnrolError::Random)
    }

    /// The initial PIN and PUK of card `serial` for enrolment nonce `nonce`.
    pub fn initial_secrets(
        &self,
        serial: &str,
        nonce: &[u8],
        avoid: &[&str],
    ) -> Result<InitialSecrets> {
        Ok(InitialSecrets {
            pin: self.digits(PIN_CONTEXT, serial, nonce, 6, avoid)?,
            puk: self.digits(PUK_CONTEXT, serial, nonce, 8, avoid)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_hsm::SoftwareMacKey;

    #[test]
    fn derivations() {
        let s = CardSecrets::new(Arc::new(SoftwareMacKey::new("m", b"master")));
        let a = s.initial_secrets("0A0B", &[1; 32], &["123456"]).unwrap();
        let b = s.initial_secrets("0A0B", &[1; 32], &["123456"]).unwrap();
        assert_eq!(*a.pin, *b.pin);
        assert_eq!(a.pin.len(), 6);
        assert_eq!(a.puk.len(), 8);
        assert!(a.pin.bytes().all(|c| c.is_ascii_digit()));
        let c = s.initial_secrets("0A0B", &[2; 32], &[]).unwrap();
        assert_ne!((&*a.pin, &*a.puk), (&*c.pin, &*c.puk));
        assert!(!format!("{a:?}").contains(&*a.pin));
        for alg in [
            MgmtAlgorithm::Aes128,
            MgmtAlgorithm::Aes192,
            MgmtAlgorithm::Aes256,
            MgmtAlgorithm::TripleDes,
        ] {
            s.management_key("0A0B", alg).unwrap();
        }
        assert!(trivial(&[1, 1, 1, 1, 1, 1]));
        assert!(trivial(&[7, 8, 9, 0, 1, 2]));
        assert!(trivial(&[3, 2, 1, 0, 9, 8]));
        assert!(!trivial(&[3, 1, 4, 1, 5, 9]));
    }
}
