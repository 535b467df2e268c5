//! Secret keys that compute HMAC-SHA256: the [`MacKey`] trait, implemented by
//! [`crate::HsmMacKey`] (a non-extractable generic secret in the token) and [`SoftwareMacKey`]
//! (in memory, for unit tests).
//!
//! The appliance uses them to derive per-card secrets (a smartcard's management key) from a
//! master key that never leaves the HSM: `HMAC-SHA256(master, context ‖ card serial)`.

use crate::HsmError;

/// Length of a MAC key created by the appliance, in bytes.
pub const MAC_KEY_LEN: usize = 32;

/// A secret key that computes HMAC-SHA256. Object safe.
pub trait MacKey: Send + Sync {
    /// Label of the key (the PKCS#11 `CKA_LABEL`, or a name for software keys).
    fn label(&self) -> &str;
    /// HMAC-SHA256 of `data` under the key.
    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], HsmError>;
}

/// An HMAC key held in memory (ring). Never used for the appliance's own keys: those live in
/// the HSM.
pub struct SoftwareMacKey {
    label: String,
    key: ring::hmac::Key,
}

impl SoftwareMacKey {
    /// A key with the given secret bytes.
    pub fn new(label: &str, secret: &[u8]) -> Self {
        SoftwareMacKey {
            label: label.into(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh random key of [`MAC_KEY_LEN`] bytes.
    pub fn generate(label: &str) -> Result<Self, HsmError> {
        use ring::rand::SecureRandom;
        let mut secret = zeroize::Zeroizing::new([0u8; MAC_KEY_LEN]);
        ring::rand::SystemRandom::new()
            .fill(secret.as_mut())
            .map_err(|_| HsmError::Malformed("system random generator failed".into()))?;
        Ok(Self::new(label, secret.as_ref()))
    }
}

impl std::fmt::Debug for SoftwareMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareMacKey({:?}, <secret>)", self.label)
    }
}

impl MacKey for SoftwareMacKey {
    fn label(&self) -> &str {
        &self.label
    }

    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], HsmError> {
        let tag = ring::hmac::sign(&self.key, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let k = SoftwareMacKey::new("t", b"Jefe");
        let mac = k.hmac_sha256(b"what do ya want for nothing?").unwrap();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let g = SoftwareMacKey::generate("g").unwrap();
        assert_ne!(g.hmac_sha256(b"a").unwrap(), g.hmac_sha256(b"b").unwrap());
        assert!(!format!("{g:?}").contains("Key {"));
    }
}
