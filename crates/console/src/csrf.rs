//! Anti-forgery tokens for the console's forms.
//!
//! A token is bound to the operator's client certificate (its SHA-256 fingerprint) and to a
//! time window: `<window>.<HMAC-SHA256(key, purpose ‖ fingerprint ‖ window)>`. The appliance
//! derives the key from its HSM secret, so every node sharing the HSM accepts the forms another
//! node showed ([`CsrfKey::random`] is a key for one process). A token is accepted during the
//! window it was made in and the next one, so a form stays usable for at least [`WINDOW_SECS`]
//! seconds.
//!
//! Time is a parameter: nothing here reads the clock or the random generator except
//! [`CsrfKey::random`].

use base64::Engine;
use ring::hmac;

/// Length of a time window, seconds.
pub const WINDOW_SECS: i64 = 3600;

const PURPOSE: &[u8] = b"cps-trust console form\0";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// The form carried no token.
    #[error("the form carries no anti-forgery token")]
    Missing,
    /// The token is not of the expected shape.
    #[error("the anti-forgery token is malformed")]
    Malformed,
    /// The token was made for an earlier window.
    #[error("the form has expired; reload the page and submit it again")]
    Expired,
    /// The token was not made by this appliance process for this certificate.
    #[error("the anti-forgery token does not match this operator certificate")]
    Mismatch,
}

/// The per-process key of the tokens.
#[derive(Clone)]
pub struct CsrfKey {
    key: hmac::Key,
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

fn window_of(now: i64) -> i64 {
    now.div_euclid(WINDOW_SECS)
}

impl CsrfKey {
    /// A key from the system random generator.
    pub fn random() -> Result<CsrfKey, ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        let mut k = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut k)?;
        Ok(CsrfKey::from_bytes(&k))
    }

    /// A key from given bytes (derived from an HSM secret, or fixed in tests).
    pub fn from_bytes(k: &[u8]) -> CsrfKey {
        CsrfKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, k),
        }
    }

    fn tag(&self, fingerprint: &[u8; 32], window: i64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(PURPOSE);
        ctx.update(fingerprint);
        ctx.update(&window.to_be_bytes());
        ctx.sign()
    }

    /// A token for the certificate with this SHA-256 `fingerprint`, made at `now`.
    pub fn token(&self, fingerprint: &[u8; 32], now: i64) -> String {
        let w = window_of(now);
        let tag = self.tag(fingerprint, w);
        format!(
            "{w}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks `token` for the certificate with this `fingerprint` at `now`.
    pub fn verify(
        &self,
        fingerprint: &[u8; 32],
        token: Option<&str>,
        now: i64,
    ) -> Result<(), CsrfError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(CsrfError::Missing)?;
        if token.len() > 128 {
            return Err(CsrfError::Malformed);
        }
        let (w, mac) = token.split_once('.').ok_or(CsrfError::Malformed)?;
        if w.is_empty() || w.len() > 19 || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CsrfError::Malformed);
        }
        let w: i64 = w.parse().map_err(|_| CsrfError::Malformed)?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| CsrfError::Malformed)?;
        let mut ctx = Vec::with_capacity(PURPOSE.len() + 40);
        ctx.extend_from_slice(PURPOSE);
        ctx.extend_from_slice(fingerprint);
        ctx.extend_from_slice(&w.to_be_bytes());
        hmac::verify(&self.key, &ctx, &mac).map_err(|_| CsrfError::Mismatch)?;
        // Authentic: now check its age (a window in the future is a clock step back; accept).
        let current = window_of(now);
        if w < current - 1 {
            return Err(CsrfError::Expired);
        }
        Ok(())
    }
}

/// SHA-256 of a certificate (DER).
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000;

    #[test]
    fn a_token_verifies_for_its_certificate_within_two_windows() {
        let k = CsrfKey::from_bytes(b"k");
        let fp = fingerprint(b"operator certificate");
        let t = k.token(&fp, T0);
        assert_eq!(k.verify(&fp, Some(&t), T0), Ok(()));
        assert_eq!(k.verify(&fp, Some(&t), T0 + WINDOW_SECS), Ok(()));
        assert_eq!(
            k.verify(&fp, Some(&t), T0 + 2 * WINDOW_SECS + 1),
            Err(CsrfError::Expired)
        );
    }

    #[test]
    fn another_certificate_another_key_or_a_changed_token_is_refused() {
        let k = CsrfKey::from_bytes(b"k");
        let fp = fingerprint(b"officer");
        let t = k.token(&fp, T0);
        assert_eq!(
            k.verify(&fingerprint(b"auditor"), Some(&t), T0),
            Err(CsrfError::Mismatch)
        );
        assert_eq!(
            CsrfKey::from_bytes(b"other").verify(&fp, Some(&t), T0),
            Err(CsrfError::Mismatch)
        );
        // Moving the window forward without the key is a forgery.
        let (w, mac) = t.split_once('.').unwrap();
        let later = format!("{}.{mac}", w.parse::<i64>().unwrap() + 5);
        assert_eq!(
            k.verify(&fp, Some(&later), T0 + 5 * WINDOW_SECS),
            Err(CsrfError::Mismatch)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.verify(&fp, Some(std::str::from_utf8(&flipped).unwrap()), T0),
            Err(CsrfError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_tokens() {
        let k = CsrfKey::from_bytes(b"k");
        let fp = fingerprint(b"x");
        assert_eq!(k.verify(&fp, None, T0), Err(CsrfError::Missing));
        assert_eq!(k.verify(&fp, Some(""), T0), Err(CsrfError::Missing));
        for bad in [
            "nodot",
            ".abc",
            "-1.abc",
            "12.!!!",
            "99999999999999999999.aa",
            &"1.".repeat(100),
        ] {
            assert_eq!(
                k.verify(&fp, Some(bad), T0),
                Err(CsrfError::Malformed),
                "{bad}"
            );
        }
    }
}
