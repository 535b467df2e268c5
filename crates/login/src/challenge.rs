//! Login challenges without a table: what the appliance hands out is a MAC-protected token, and
//! what the card signs is a domain-separated message bound to this appliance and to the login
//! context the assertion will carry.
//!
//! **Issuing** a challenge costs a random draw, a SHA-256 of the context and one HMAC: nothing is
//! stored, so no number of requests can fill anything. The token (`challenge_id`, base64url) is
//!
//! ```text
//! version (1) ‖ issuer (8: first bytes of the appliance identity) ‖ nonce (32)
//!   ‖ expires (8, Unix seconds, big-endian) ‖ context_sha256 (32) ‖ mac (32) ‖ audience (≤ 256)
//! mac = HMAC-SHA256(K, "cps-trust login challenge token v1\0" ‖ every other field)
//! ```
//!
//! **Redeeming** it checks, in order: the encoding, the issuer (another appliance's challenge has
//! its own code), the MAC (constant time), the expiry (and that it is not further ahead than one
//! lifetime: a clock stepped back cannot stretch a challenge), then consumes the nonce — the
//! first redemption uses it up, right or wrong — and only then compares the context the login
//! carries with the one the challenge was issued for. The used nonces are kept in two
//! generations rotated every lifetime ([`UsedNonces`]): a nonce is remembered at least until its
//! challenge expires, memory is bounded by the redemptions of the last two lifetimes, and each
//! check is one hash-set probe. Nodes that share the MAC key share the record instead
//! ([`Challenges::with_shared_record`], a [`NonceRecord`] in the store): a challenge is then
//! redeemed once across all of them.
//!
//! **The signed message** ([`signed_message`], 128 bytes) is
//!
//! ```text
//! "cps-trust card login v1\0" (24) ‖ appliance (32) ‖ nonce (32) ‖ expires (8) ‖ context_sha256 (32)
//! ```
//!
//! where `appliance` is the SHA-256 of the appliance's seal certificate (the identity that
//! vouches for the assertion; shared by every node that holds the seal) and `context_sha256`
//! ([`context_sha256`]) covers the audience and every claim of [`LoginContext`] the assertion
//! will carry (patient INS and authority, purpose of use, justification, structure, software).
//! The card hashes it with SHA-256 and signs (ECDSA P-256 or RSA PKCS#1 v1.5): a signature over a
//! bare 32-byte nonce, over another appliance's message or over another context does not verify.
//!
//! The MAC key `K` is derived once at start from a non-extractable HSM secret
//! ([`Challenges::derive`]: `K = HMAC-SHA256(hsm key, "cps-trust login challenge MAC key v1")`),
//! so every node sharing the HSM computes the same `K` and can check every node's challenges;
//! per-challenge MACs are computed in memory (about a microsecond) rather than in the HSM.
//!
//! Everything here is pure: time (Unix seconds) and the nonce are parameters.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use base64::Engine;
use cps_hsm::{SigFormat, SignatureAlgorithm};
use parking_lot::Mutex;

/// What the workstation asks for (the API's wire type): sent with the challenge request, and
/// again with the login (the challenge and the card's signature are bound to it).
pub use cps_api::LoginContext;

/// The label that starts every signed login message (ASCII, NUL-terminated).
pub const MESSAGE_LABEL: &[u8; 24] = b"cps-trust card login v1\0";
/// The name of the signed message's format, as the challenge answer gives it.
pub const MESSAGE_FORMAT: &str = "cps-trust card login v1";
/// Length of the signed message.
pub const MESSAGE_LEN: usize = 24 + 32 + 32 + 8 + 32;
/// Input of the derivation of the MAC key from the HSM secret.
pub const KEY_DERIVATION_LABEL: &[u8] = b"cps-trust login challenge MAC key v1";
/// Longest audience (bytes).
pub const MAX_AUDIENCE: usize = 256;

const CONTEXT_LABEL: &[u8] = b"cps-trust login context v1\0";
const TOKEN_MAC_LABEL: &[u8] = b"cps-trust login challenge token v1\0";
const TOKEN_VERSION: u8 = 1;
/// version ‖ issuer ‖ nonce ‖ expires ‖ context ‖ mac.
const TOKEN_FIXED: usize = 1 + 8 + 32 + 8 + 32 + 32;
const MAC_AT: usize = 1 + 8 + 32 + 8 + 32;
/// Longest token text accepted (base64url of the largest token).
const MAX_TOKEN_TEXT: usize = (TOKEN_FIXED + MAX_AUDIENCE).div_ceil(3) * 4;

/// Why a challenge is not accepted. Every one of them is a refusal of a peer that has not
/// proved anything yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// Not a token of this format.
    Malformed,
    /// Issued by another appliance.
    Foreign,
    /// The MAC does not verify: made up or altered.
    Forged,
    Expired,
    /// Expires more than one lifetime from now: issued "in the future" (a clock stepped back).
    Future,
    /// Already redeemed once.
    Used,
    /// The record of redeemed challenges (shared by the nodes, in the store) did not answer:
    /// nothing is known about this challenge's use, so it is not accepted (the appliance answers
    /// 503; the same challenge may be tried again).
    Unavailable,
    /// Issued for another login context (patient, purpose, structure, audience...).
    ContextMismatch,
}

impl ChallengeRefusal {
    /// The stable code the API answers with.
    pub fn code(self) -> &'static str {
        match self {
            ChallengeRefusal::Malformed => "unknown_challenge",
            ChallengeRefusal::Foreign => "foreign_challenge",
            ChallengeRefusal::Forged => "forged_challenge",
            ChallengeRefusal::Expired => "expired_challenge",
            ChallengeRefusal::Future => "future_challenge",
            ChallengeRefusal::Used => "used_challenge",
            ChallengeRefusal::Unavailable => "challenge_record_unavailable",
            ChallengeRefusal::ContextMismatch => "context_mismatch",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ChallengeRefusal::Malformed => {
                "not a login challenge of this appliance: ask for a new one"
            }
            ChallengeRefusal::Foreign => "this challenge was issued by another appliance",
            ChallengeRefusal::Forged => "the challenge does not verify (altered or made up)",
            ChallengeRefusal::Expired => "the challenge has expired: ask for a new one",
            ChallengeRefusal::Future => {
                "the challenge expires further ahead than a challenge lifetime (clock stepped back?): ask for a new one"
            }
            ChallengeRefusal::Used => "the challenge was already used: ask for a new one",
            ChallengeRefusal::Unavailable => {
                "the record of used challenges is unavailable: try again later"
            }
            ChallengeRefusal::ContextMismatch => {
                "the login context (patient, purpose, justification, structure, software or audience) differs from the one the challenge was issued for"
            }
        }
    }
}

/// Why the card's signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureRefusal {
    /// The signature is over the bare 32-byte nonce, not over the login message.
    BareNonce,
    /// The signature does not verify over the login message.
    Bad,
}

impl SignatureRefusal {
    pub fn code(self) -> &'static str {
        match self {
            SignatureRefusal::BareNonce => "bare_nonce_signature",
            SignatureRefusal::Bad => "bad_signature",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SignatureRefusal::BareNonce => {
                "the card signed the bare nonce, not the login message: sign the exact bytes of 'challenge'"
            }
            SignatureRefusal::Bad => {
                "the signature does not verify over this challenge's login message with this certificate's key"
            }
        }
    }
}

/// The audience is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audience must be at most {MAX_AUDIENCE} bytes of printable characters")]
pub struct BadAudience;

/// A challenge just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token (`challenge_id`).
    pub token: String,
    /// The exact bytes the card signs.
    pub message: Vec<u8>,
    pub expires: i64,
}

/// A challenge accepted (and consumed) at login.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub nonce: [u8; 32],
    pub expires: i64,
    pub audience: String,
    /// The exact bytes the card must have signed.
    pub message: Vec<u8>,
}

/// A signed login message taken apart ([`parse_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts {
    pub appliance: [u8; 32],
    pub nonce: [u8; 32],
    pub expires: i64,
    pub context_sha256: [u8; 32],
}

/// The bytes the card signs for a login.
pub fn signed_message(
    appliance: &[u8; 32],
    nonce: &[u8; 32],
    expires: i64,
    context_sha256: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_LEN);
    m.extend_from_slice(MESSAGE_LABEL);
    m.extend_from_slice(appliance);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&(expires.max(0) as u64).to_be_bytes());
    m.extend_from_slice(context_sha256);
    m
}

/// The parts of a signed login message, or `None` if `m` is not one (a workstation checks what
/// it is asked to sign with this).
pub fn parse_message(m: &[u8]) -> Option<MessageParts> {
    if m.len() != MESSAGE_LEN || !m.starts_with(MESSAGE_LABEL) {
        return None;
    }
    let at = |i: usize| -> [u8; 32] { m[i..i + 32].try_into().unwrap_or([0; 32]) };
    let mut e = [0u8; 8];
    e.copy_from_slice(&m[88..96]);
    Some(MessageParts {
        appliance: at(24),
        nonce: at(56),
        expires: i64::try_from(u64::from_be_bytes(e)).ok()?,
        context_sha256: at(96),
    })
}

/// SHA-256 of the login context a challenge is bound to: the audience and every field of `ctx`
/// that goes into the assertion (not `soap`, which only shapes the answer). The defaults the
/// appliance applies are applied first (no purpose = `normal`; a patient without an authority =
/// INS-NIR), so a context sent with or without them is the same context.
pub fn context_sha256(audience: &str, ctx: &LoginContext) -> [u8; 32] {
    let purpose = ctx.purpose_of_use.as_deref().unwrap_or("normal");
    let authority = match (&ctx.ins_authority, &ctx.patient_ins) {
        (Some(a), _) => Some(a.as_str()),
        (None, Some(_)) => Some(cps_xua::INS_AUTHORITIES[0]),
        (None, None) => None,
    };
    let fields: [Option<&str>; 10] = [
        Some(audience),
        ctx.patient_ins.as_deref(),
        authority,
        Some(purpose),
        ctx.justification.as_deref(),
        ctx.structure_id.as_deref(),
        ctx.software_name.as_deref(),
        ctx.software_version.as_deref(),
        ctx.software_id.as_deref(),
        ctx.software_homologation.as_deref(),
    ];
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(CONTEXT_LABEL);
    for (tag, f) in fields.iter().enumerate() {
        h.update(&[tag as u8]);
        match f {
            None => h.update(&[0]),
            Some(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// Verifies the card's signature over the challenge's login message. A signature that does
/// not verify is checked once more over the bare nonce, to name that mistake (an older
/// workstation, or a signature obtained by another service that asked for 32 bytes).
pub fn verify_card_signature(
    spki: &[u8],
    alg: SignatureAlgorithm,
    redeemed: &Redeemed,
    signature: &[u8],
) -> Result<(), SignatureRefusal> {
    let over = |m: &[u8]| cps_hsm::verify_signature(spki, alg, m, signature, SigFormat::Der);
    if over(&redeemed.message).is_ok() {
        return Ok(());
    }
    if over(&redeemed.nonce).is_ok() {
        return Err(SignatureRefusal::BareNonce);
    }
    Err(SignatureRefusal::Bad)
}

/// Hashes a `u64` that is already uniformly random (a prefix of a nonce the appliance drew and
/// MAC-protected): no need to hash it again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type NonceSet = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// The nonces of redeemed challenges, remembered at least until those challenges expire.
///
/// Two generations, rotated once a lifetime has passed since the last rotation: a nonce goes
/// into `current`; at a rotation `current` becomes `previous` and the old `previous` is dropped.
/// A nonce inserted at `t` (its challenge expires at most one lifetime after `t`, which
/// [`Challenges::redeem`] enforces) stays in `current` until the next rotation and in `previous`
/// for one more lifetime, so it is forgotten only after its challenge expired. When two
/// lifetimes pass without any redemption both generations are dropped at once (everything in
/// them has expired). The key is the first 64 bits of the nonce: a false "already used" needs
/// two of the appliance's own random nonces to share 64 bits among the last two lifetimes'
/// redemptions (≈ n / 2⁶⁴ per login).
#[derive(Debug)]
pub struct UsedNonces {
    current: NonceSet,
    previous: NonceSet,
    rotated_at: Option<i64>,
    lifetime: i64,
}

impl UsedNonces {
    pub fn new(lifetime_secs: i64) -> UsedNonces {
        UsedNonces {
            current: NonceSet::default(),
            previous: NonceSet::default(),
            rotated_at: None,
            lifetime: lifetime_secs.max(1),
        }
    }

    fn rotate(&mut self, now: i64) {
        match self.rotated_at {
            None => self.rotated_at = Some(now),
            Some(r) if now >= r.saturating_add(2 * self.lifetime) => {
                self.current = NonceSet::default();
                self.previous = NonceSet::default();
                self.rotated_at = Some(now);
            }
            Some(r) if now >= r.saturating_add(self.lifetime) => {
                self.previous = std::mem::take(&mut self.current);
                self.rotated_at = Some(now);
            }
            // Not yet, or the clock went back: keep remembering.
            Some(_) => {}
        }
    }

    /// Remembers `nonce` at `now`; `false` if it was already there.
    pub fn insert(&mut self, nonce: &[u8; 32], now: i64) -> bool {
        self.rotate(now);
        let mut k = [0u8; 8];
        k.copy_from_slice(&nonce[..8]);
        let key = u64::from_be_bytes(k);
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where redeemed challenges are recorded when they are shared between nodes (the store).
pub trait NonceRecord: Send + Sync {
    /// Records `nonce` as used until `expires` (after `now`, Unix seconds): `Ok(true)` if this is
    /// its first use (and the record is durable), `Ok(false)` if it was used already, `Err` if
    /// the record did not answer.
    fn consume(&self, nonce: &[u8; 32], expires: i64, now: i64) -> Result<bool, String>;
}

/// Issues and redeems login challenges.
pub struct Challenges {
    key: ring::hmac::Key,
    appliance: [u8; 32],
    lifetime: i64,
    /// Redeemed nonces of this process (when no shared record is set).
    used: Mutex<UsedNonces>,
    /// The record shared by the nodes, when set: it alone decides.
    shared: Option<std::sync::Arc<dyn NonceRecord>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("appliance", &hex::encode(self.appliance))
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Challenges {
    /// Challenges under the MAC key `key`, bound to `appliance` (the SHA-256 of the seal
    /// certificate), valid for `lifetime`.
    pub fn new(key: &[u8], appliance: [u8; 32], lifetime: Duration) -> Challenges {
        let lifetime = lifetime.as_secs().clamp(1, i64::MAX as u64 / 4) as i64;
        Challenges {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            appliance,
            lifetime,
            used: Mutex::new(UsedNonces::new(lifetime)),
            shared: None,
        }
    }

    /// The same challenges, with redemptions recorded in `record` (shared by every node that
    /// holds the MAC key) instead of this process's memory: a challenge issued by any node is
    /// redeemed once, on any node. Redeeming then waits for the record.
    pub fn with_shared_record(mut self, record: std::sync::Arc<dyn NonceRecord>) -> Challenges {
        self.shared = Some(record);
        self
    }

    /// Whether redemptions go to a shared record (then [`redeem`](Challenges::redeem) waits
    /// for it: call it off the runtime's workers).
    pub fn has_shared_record(&self) -> bool {
        self.shared.is_some()
    }

    /// Challenges whose MAC key is derived from the HSM secret `hsm_key` (never extractable):
    /// every node holding the same secret derives the same key.
    pub fn derive(
        hsm_key: &dyn cps_hsm::MacKey,
        appliance: [u8; 32],
        lifetime: Duration,
    ) -> Result<Challenges, cps_hsm::HsmError> {
        let k = hsm_key.hmac_sha256(KEY_DERIVATION_LABEL)?;
        Ok(Challenges::new(&k, appliance, lifetime))
    }

    /// The appliance identity signatures are bound to.
    pub fn appliance(&self) -> &[u8; 32] {
        &self.appliance
    }

    /// How many redeemed nonces are remembered right now.
    pub fn used_len(&self) -> usize {
        self.used.lock().len()
    }

    fn mac(&self, fields: &[u8], audience: &[u8]) -> ring::hmac::Tag {
        let mut c = ring::hmac::Context::with_key(&self.key);
        c.update(TOKEN_MAC_LABEL);
        c.update(fields);
        c.update(audience);
        c.sign()
    }

    /// A challenge for `audience` and the context hash `context`, with the random `nonce`, at
    /// `now` (Unix seconds). Constant cost; nothing is stored.
    pub fn issue(
        &self,
        audience: &str,
        context: &[u8; 32],
        nonce: &[u8; 32],
        now: i64,
    ) -> Result<Issued, BadAudience> {
        if audience.len() > MAX_AUDIENCE || audience.chars().any(char::is_control) {
            return Err(BadAudience);
        }
        let expires = now.saturating_add(self.lifetime);
        let mut t = Vec::with_capacity(TOKEN_FIXED + audience.len());
        t.push(TOKEN_VERSION);
        t.extend_from_slice(&self.appliance[..8]);
        t.extend_from_slice(nonce);
        t.extend_from_slice(&(expires.max(0) as u64).to_be_bytes());
        t.extend_from_slice(context);
        let tag = self.mac(&t, audience.as_bytes());
        t.extend_from_slice(tag.as_ref());
        t.extend_from_slice(audience.as_bytes());
        Ok(Issued {
            token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&t),
            message: signed_message(&self.appliance, nonce, expires, context),
            expires,
        })
    }

    /// Accepts the challenge `token` at `now` and consumes it, for a login whose context hash
    /// is `context(audience)` (the audience travels in the token). Constant cost; no I/O unless
    /// a shared record is set ([`with_shared_record`](Challenges::with_shared_record)).
    pub fn redeem(
        &self,
        token: &str,
        context: impl FnOnce(&str) -> [u8; 32],
        now: i64,
    ) -> Result<Redeemed, ChallengeRefusal> {
        let Token {
            nonce,
            expires,
            issued_for,
            audience,
        } = self.check(token, now)?;
        // Consumed by the first attempt, whatever its outcome.
        let first = match &self.shared {
            Some(record) => record
                .consume(&nonce, expires, now)
                .map_err(|_| ChallengeRefusal::Unavailable)?,
            None => self.used.lock().insert(&nonce, now),
        };
        if !first {
            return Err(ChallengeRefusal::Used);
        }
        let context = context(&audience);
        if issued_for != context {
            return Err(ChallengeRefusal::ContextMismatch);
        }
        Ok(Redeemed {
            nonce,
            expires,
            audience,
            message: signed_message(&self.appliance, &nonce, expires, &context),
        })
    }

    /// Every check of [`redeem`](Challenges::redeem) that needs no record (encoding, issuer, MAC,
    /// expiry): nothing is consumed. Constant cost, no I/O: made-up, altered and expired
    /// challenges are refused here, before a login waits for anything.
    pub fn precheck(&self, token: &str, now: i64) -> Result<(), ChallengeRefusal> {
        self.check(token, now).map(|_| ())
    }

    fn check(&self, token: &str, now: i64) -> Result<Token, ChallengeRefusal> {
        if token.len() > MAX_TOKEN_TEXT {
            return Err(ChallengeRefusal::Malformed);
        }
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ChallengeRefusal::Malformed)?;
        if t.len() < TOKEN_FIXED || t[0] != TOKEN_VERSION {
            return Err(ChallengeRefusal::Malformed);
        }
        if t[1..9] != self.appliance[..8] {
            return Err(ChallengeRefusal::Foreign);
        }
        let audience = &t[TOKEN_FIXED..];
        let mut signed = Vec::with_capacity(TOKEN_MAC_LABEL.len() + MAC_AT + audience.len());
        signed.extend_from_slice(TOKEN_MAC_LABEL);
        signed.extend_from_slice(&t[..MAC_AT]);
        signed.extend_from_slice(audience);
        // Recomputes the tag and compares in constant time.
        ring::hmac::verify(&self.key, &signed, &t[MAC_AT..TOKEN_FIXED])
            .map_err(|_| ChallengeRefusal::Forged)?;
        let audience = std::str::from_utf8(audience).map_err(|_| ChallengeRefusal::Forged)?;
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&t[9..41]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&t[41..49]);
        let expires = i64::try_from(u64::from_be_bytes(e)).map_err(|_| ChallengeRefusal::Forged)?;
        let mut issued_for = [0u8; 32];
        issued_for.copy_from_slice(&t[49..81]);
        if expires <= now {
            return Err(ChallengeRefusal::Expired);
        }
        if expires > now.saturating_add(self.lifetime) {
            return Err(ChallengeRefusal::Future);
        }
        Ok(Token {
            nonce,
            expires,
            issued_for,
            audience: audience.to_owned(),
        })
    }
}

/// The fields of a challenge token that passed [`Challenges::check`].
struct Token {
    nonce: [u8; 32],
    expires: i64,
    issued_for: [u8; 32],
    audience: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_hsm::{KeyAlgorithm, Signer, SoftwareSigner};

    const APPLIANCE: [u8; 32] = [0xA5; 32];
    const LIFETIME: i64 = 120;
    const T0: i64 = 1_800_000_000;

    fn challenges() -> Challenges {
        Challenges::new(
            b"a key for the tests only",
            APPLIANCE,
            Duration::from_secs(LIFETIME as u64),
        )
    }

    fn nonce(i: u64) -> [u8; 32] {
        let mut n = [0u8; 32];
        let d = ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes());
        n.copy_from_slice(d.as_ref());
        n
    }

    fn ctx() -> LoginContext {
        LoginContext {
            patient_ins: Some("248079707503828".into()),
            purpose_of_use: Some("bris_de_glace".into()),
            justification: Some("arrêt cardiaque".into()),
            structure_id: Some("10B0152872".into()),
            ..LoginContext::default()
        }
    }

    fn token_bytes(token: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap()
    }

    fn token_text(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_challenge_is_redeemed_once_and_carries_the_message_to_sign() {
        let c = challenges();
        let h = context_sha256("urn:dmp", &ctx());
        let issued = c.issue("urn:dmp", &h, &nonce(1), T0).unwrap();
        assert_eq!(issued.expires, T0 + LIFETIME);
        assert_eq!(issued.message.len(), MESSAGE_LEN);
        let mut audience_seen = String::new();
        let r = c
            .redeem(
                &issued.token,
                |aud| {
                    audience_seen = aud.to_owned();
                    h
                },
                T0 + 5,
            )
            .unwrap();
        assert_eq!(
            audience_seen, "urn:dmp",
            "the context is hashed with the token's audience"
        );
        assert_eq!(r.message, issued.message);
        assert_eq!(r.audience, "urn:dmp");
        assert_eq!(r.nonce, nonce(1));
        assert_eq!(
            c.redeem(&issued.token, |_| h, T0 + 6).unwrap_err(),
            ChallengeRefusal::Used
        );
        // The message says what it is for: this appliance, this nonce and expiry, this context.
        let parts = parse_message(&issued.message).unwrap();
        assert_eq!(
            parts,
            MessageParts {
                appliance: APPLIANCE,
                nonce: nonce(1),
                expires: T0 + LIFETIME,
                context_sha256: h,
            }
        );
        assert!(issued.message.starts_with(b"cps-trust card login v1\0"));
        assert!(parse_message(&nonce(1)).is_none());
        assert!(parse_message(&issued.message[..MESSAGE_LEN - 1]).is_none());
    }

    #[test]
    fn a_challenge_expires_and_cannot_come_from_the_future() {
        let c = challenges();
        let h = context_sha256("urn:dmp", &LoginContext::default());
        let a = c.issue("urn:dmp", &h, &nonce(1), T0).unwrap();
        assert_eq!(
            c.redeem(&a.token, |_| h, T0 + LIFETIME).unwrap_err(),
            ChallengeRefusal::Expired
        );
        let b = c.issue("urn:dmp", &h, &nonce(2), T0).unwrap();
        assert!(c.redeem(&b.token, |_| h, T0 + LIFETIME - 1).is_ok());
        // The clock went back by more than nothing since issuance: refused, so a nonce is
        // never needed for longer than one lifetime after its redemption.
        let f = c.issue("urn:dmp", &h, &nonce(3), T0).unwrap();
        assert_eq!(
            c.redeem(&f.token, |_| h, T0 - 1).unwrap_err(),
            ChallengeRefusal::Future
        );
        // Refusals before the consumption do not consume: redeemed at the right time, it works.
        assert!(c.redeem(&f.token, |_| h, T0).is_ok());
    }

    #[test]
    fn any_altered_byte_is_refused_for_what_it_is() {
        let c = challenges();
        let h = context_sha256("urn:dmp", &LoginContext::default());
        let issued = c.issue("urn:dmp", &h, &nonce(7), T0).unwrap();
        let t = token_bytes(&issued.token);
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            let want = match i {
                0 => ChallengeRefusal::Malformed,
                1..=8 => ChallengeRefusal::Foreign,
                _ => ChallengeRefusal::Forged,
            };
            assert_eq!(
                c.redeem(&token_text(&bad), |_| h, T0 + 1).unwrap_err(),
                want,
                "byte {i}"
            );
        }
        // Cut short, extended, or not a token at all.
        for bad in [
            token_text(&t[..t.len() - 8]),
            token_text(&t[..20]),
            format!("{}AA", issued.token),
            String::new(),
            "nope".into(),
            "%%%".into(),
            "A".repeat(100_000),
        ] {
            let e = c.redeem(&bad, |_| h, T0 + 1).unwrap_err();
            assert!(
                matches!(e, ChallengeRefusal::Malformed | ChallengeRefusal::Forged),
                "{bad:.40}: {e:?}"
            );
        }
        // None of that consumed the real one.
        assert!(c.redeem(&issued.token, |_| h, T0 + 1).is_ok());
    }

    #[test]
    fn another_appliance_or_another_key_is_refused() {
        let ours = challenges();
        let h = context_sha256("urn:dmp", &LoginContext::default());
        let other = Challenges::new(
            b"another appliance's key",
            [0x5A; 32],
            Duration::from_secs(120),
        );
        let theirs = other.issue("urn:dmp", &h, &nonce(1), T0).unwrap();
        assert_eq!(
            ours.redeem(&theirs.token, |_| h, T0 + 1).unwrap_err(),
            ChallengeRefusal::Foreign
        );
        // Same identity, other key (e.g. a node that does not share the HSM secret).
        let impostor = Challenges::new(b"guessed key", APPLIANCE, Duration::from_secs(120));
        let t = impostor.issue("urn:dmp", &h, &nonce(2), T0).unwrap();
        assert_eq!(
            ours.redeem(&t.token, |_| h, T0 + 1).unwrap_err(),
            ChallengeRefusal::Forged
        );
        // Two nodes deriving from the same HSM secret redeem each other's challenges.
        let secret = cps_hsm::SoftwareMacKey::new("login-challenge", b"shared HSM secret");
        let a = Challenges::derive(&secret, APPLIANCE, Duration::from_secs(120)).unwrap();
        let b = Challenges::derive(&secret, APPLIANCE, Duration::from_secs(120)).unwrap();
        let t = a.issue("urn:dmp", &h, &nonce(3), T0).unwrap();
        assert!(b.redeem(&t.token, |_| h, T0 + 1).is_ok());
    }

    #[test]
    fn a_challenge_for_another_context_is_refused_and_used_up() {
        let c = challenges();
        let asked = ctx();
        let h = context_sha256("urn:dmp", &asked);
        let issued = c.issue("urn:dmp", &h, &nonce(9), T0).unwrap();
        let mut other = asked.clone();
        other.patient_ins = Some("181056210206942".into());
        let h2 = context_sha256("urn:dmp", &other);
        assert_eq!(
            c.redeem(&issued.token, |_| h2, T0 + 1).unwrap_err(),
            ChallengeRefusal::ContextMismatch
        );
        // Consumed by that attempt: the right context cannot use it afterwards either.
        assert_eq!(
            c.redeem(&issued.token, |_| h, T0 + 2).unwrap_err(),
            ChallengeRefusal::Used
        );
    }

    #[test]
    fn the_context_hash_covers_every_claim_and_applies_defaults() {
        let base = ctx();
        let h = context_sha256("urn:dmp", &base);
        let mut seen = std::collections::HashSet::new();
        seen.insert(h);
        let variants: Vec<(&str, LoginContext)> = vec![
            ("audience", base.clone()),
            (
                "patient",
                LoginContext {
                    patient_ins: Some("181056210206942".into()),
                    ..base.clone()
                },
            ),
            (
                "no patient",
                LoginContext {
                    patient_ins: None,
                    ..base.clone()
                },
            ),
            (
                "authority",
                LoginContext {
                    ins_authority: Some("1.2.250.1.213.1.4.10".into()),
                    ..base.clone()
                },
            ),
            (
                "purpose",
                LoginContext {
                    purpose_of_use: Some("centre_15".into()),
                    ..base.clone()
                },
            ),
            (
                "justification",
                LoginContext {
                    justification: Some("autre".into()),
                    ..base.clone()
                },
            ),
            (
                "structure",
                LoginContext {
                    structure_id: Some("1340785161".into()),
                    ..base.clone()
                },
            ),
            (
                "software name",
                LoginContext {
                    software_name: Some("LPS".into()),
                    ..base.clone()
                },
            ),
            (
                "software version",
                LoginContext {
                    software_version: Some("2".into()),
                    ..base.clone()
                },
            ),
            (
                "software id",
                LoginContext {
                    software_id: Some("x".into()),
                    ..base.clone()
                },
            ),
            (
                "homologation",
                LoginContext {
                    software_homologation: Some("h".into()),
                    ..base.clone()
                },
            ),
        ];
        for (i, (what, v)) in variants.iter().enumerate() {
            let aud = if i == 0 { "urn:other" } else { "urn:dmp" };
            assert!(seen.insert(context_sha256(aud, v)), "{what} is not covered");
        }
        // Field boundaries are unambiguous.
        let a = LoginContext {
            software_name: Some("ab".into()),
            software_version: Some("c".into()),
            ..LoginContext::default()
        };
        let b = LoginContext {
            software_name: Some("a".into()),
            software_version: Some("bc".into()),
            ..LoginContext::default()
        };
        assert_ne!(context_sha256("", &a), context_sha256("", &b));
        // Defaults are the same statement; `soap` only shapes the answer.
        let mut explicit = base.clone();
        explicit.ins_authority = Some(cps_xua::INS_AUTHORITIES[0].into());
        explicit.soap = true;
        assert_eq!(context_sha256("urn:dmp", &explicit), h);
        let normal = LoginContext {
            purpose_of_use: Some("normal".into()),
            ..LoginContext::default()
        };
        assert_eq!(
            context_sha256("urn:dmp", &normal),
            context_sha256("urn:dmp", &LoginContext::default())
        );
    }

    fn rsa_signer() -> SoftwareSigner {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let pkcs8 = pkey.private_key_to_pkcs8().unwrap();
        SoftwareSigner::from_pkcs8("card-rsa", &pkcs8).unwrap()
    }

    /// What the card does (`cps_card::Piv::sign`): SHA-256 of the message, then ECDSA or RSA
    /// PKCS#1 v1.5 over it.
    #[test]
    fn only_a_signature_over_this_login_message_verifies() {
        let c = challenges();
        let h = context_sha256("urn:dmp", &ctx());
        for (card, alg) in [
            (
                SoftwareSigner::generate("card-ec", KeyAlgorithm::EcP256).unwrap(),
                SignatureAlgorithm::EcdsaSha256,
            ),
            (rsa_signer(), SignatureAlgorithm::RsaPkcs1Sha256),
        ] {
            let spki = card.public_key_der().to_vec();
            let sign = |m: &[u8]| card.sign(alg, m, SigFormat::Der).unwrap();
            let n = nonce(alg as u64);
            let issued = c.issue("urn:dmp", &h, &n, T0).unwrap();
            let r = c.redeem(&issued.token, |_| h, T0 + 1).unwrap();
            assert_eq!(
                verify_card_signature(&spki, alg, &r, &sign(&r.message)),
                Ok(())
            );
            // The bare nonce, as the previous protocol (or another service) had it signed.
            assert_eq!(
                verify_card_signature(&spki, alg, &r, &sign(&r.nonce)),
                Err(SignatureRefusal::BareNonce)
            );
            // The same nonce and expiry for another appliance, or for another context.
            let foreign = signed_message(&[0x5A; 32], &r.nonce, r.expires, &h);
            assert_eq!(
                verify_card_signature(&spki, alg, &r, &sign(&foreign)),
                Err(SignatureRefusal::Bad)
            );
            let other_ctx = context_sha256("urn:dmp", &LoginContext::default());
            let other = signed_message(&APPLIANCE, &r.nonce, r.expires, &other_ctx);
            assert_eq!(
                verify_card_signature(&spki, alg, &r, &sign(&other)),
                Err(SignatureRefusal::Bad)
            );
            assert_eq!(
                verify_card_signature(&spki, alg, &r, b"garbage"),
                Err(SignatureRefusal::Bad)
            );
        }
    }

    #[test]
    fn used_nonces_are_remembered_until_their_challenges_expire_and_no_longer() {
        let lifetime = 10;
        let mut used = UsedNonces::new(lifetime);
        let mut inserted: Vec<i64> = Vec::new();
        // One redemption per second for 100 s, and every still-valid nonce presented again.
        for t in 0..100i64 {
            assert!(used.insert(&nonce(t as u64), t), "fresh nonce at {t}");
            inserted.push(t);
            for s in (t - lifetime + 1).max(0)..=t {
                assert!(
                    !used.insert(&nonce(s as u64), t),
                    "nonce of {s} forgotten at {t}, before its challenge expired"
                );
            }
            // Bounded by the redemptions of the last two lifetimes.
            let recent = inserted.iter().filter(|&&s| s > t - 2 * lifetime).count();
            assert!(used.len() <= recent, "{} > {recent} at {t}", used.len());
        }
        // Two lifetimes without a redemption: everything is dropped at once.
        assert!(used.insert(&nonce(1000), 99 + 2 * lifetime));
        assert_eq!(used.len(), 1);
        // A clock that goes back keeps everything (no rotation).
        let now = 99 + 2 * lifetime;
        for i in 0..5 {
            assert!(used.insert(&nonce(2000 + i), now - 50));
        }
        assert_eq!(used.len(), 6);
        assert!(!used.insert(&nonce(1000), now - 50));
    }

    #[test]
    fn a_bad_audience_is_refused_at_issuance() {
        let c = challenges();
        let h = [0u8; 32];
        assert_eq!(
            c.issue("a\u{1}b", &h, &nonce(1), T0).unwrap_err(),
            BadAudience
        );
        assert!(
            c.issue(&"x".repeat(MAX_AUDIENCE + 1), &h, &nonce(1), T0)
                .is_err()
        );
        let long = c
            .issue(&"x".repeat(MAX_AUDIENCE), &h, &nonce(1), T0)
            .unwrap();
        assert!(long.token.len() <= MAX_TOKEN_TEXT);
        assert!(c.redeem(&long.token, |_| h, T0 + 1).is_ok());
    }
}
