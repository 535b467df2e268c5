//! The long-term revocation decision: was a certificate good at the time a signature is proven
//! to exist, given the OCSP responses embedded in the signature and, optionally, its live status?
//!
//! A pure function ([`decide`]): no clock, no I/O. It lives next to the response parser because it
//! is the parser's only consumer and its rules are about what an OCSP answer proves.
//!
//! # Rules
//!
//! 1. **Usable evidence.** An embedded response counts only if it parses, its signature verifies
//!    for the certificate's issuer (the issuer's key, or a delegated responder it certified,
//!    [`OcspResponse::verify`](crate::OcspResponse::verify)), and it has a SingleResponse for this
//!    certificate. Other responses are ignored (they prove nothing, and ignoring them gives an
//!    attacker who can add unsigned data nothing), and named in the refusal when nothing usable
//!    remains.
//! 2. **Revocation dated at or before the proof time refuses**, whichever usable evidence says
//!    it, embedded or live. The date that counts is the revocation time, or for `keyCompromise`
//!    the earlier of the revocation time and the invalidity date (the time the key is known to
//!    have been compromised). So a revocation after the proof time keeps the signature valid,
//!    unless it is a key compromise dated before the proof time.
//! 3. **The live status overrides an embedded "good" exactly in the refusing cases of rule 2**
//!    (a key compromise recorded later with an invalidity date before the signing time refuses
//!    a signature whose embedded answer said good). A live "good", or a live revocation dated
//!    after the proof time, changes nothing.
//! 4. **Freshness.** At least one usable response must have `thisUpdate` at or after the proof
//!    time minus [`LongTermPolicy::tolerance_secs`]: an older answer says nothing about the
//!    certificate at the proof time. (The signing side fetches its response after the timestamp,
//!    with a nonce so that no pre-signed answer is served.)
//! 5. **`unknown`** in any fresh usable response refuses.
//!
//! Otherwise the certificate was good at the proof time ([`LongTermValid`]).

use crate::CrlReason;
use crate::response::{ResponseError, ResponseLimits, SingleCertStatus, parse_response};

/// Settings of the decision.
#[derive(Debug, Clone, Copy)]
pub struct LongTermPolicy {
    /// How long before the proof time a response's `thisUpdate` may be and still speak about
    /// the certificate at that time, seconds (clock skew between TSA and responder).
    pub tolerance_secs: i64,
    pub limits: ResponseLimits,
}

impl Default for LongTermPolicy {
    /// Five minutes, default parsing limits.
    fn default() -> Self {
        LongTermPolicy {
            tolerance_secs: 300,
            limits: ResponseLimits::default(),
        }
    }
}

/// The certificate's status as our CA records it now (the store's certificate record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStatus {
    Good,
    Revoked {
        time: i64,
        reason: Option<CrlReason>,
        invalidity_date: Option<i64>,
    },
}

/// What to decide about.
#[derive(Debug, Clone, Copy)]
pub struct LongTermQuery<'a> {
    /// When the signature is proven to exist (the signature timestamp's genTime), Unix seconds.
    pub proof_time: i64,
    /// The signer certificate (DER).
    pub certificate: &'a [u8],
    /// Its issuer's certificate (DER).
    pub issuer: &'a [u8],
    /// The DER `OCSPResponse`s embedded in the signature.
    pub embedded: &'a [Vec<u8>],
    /// The live status, when asked for.
    pub live: Option<LiveStatus>,
}

/// Where a piece of evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The embedded response at this index.
    Embedded(usize),
    Live,
}

/// The certificate was good at the proof time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongTermValid {
    /// The fresh response relied on.
    pub response: usize,
    pub this_update: i64,
    /// A revocation after the proof time, if some evidence reports one (informational).
    pub revoked_later: Option<(i64, Option<CrlReason>, Evidence)>,
}

/// Why the certificate cannot be shown good at the proof time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LongTermRefusal {
    #[error("no OCSP response is embedded")]
    NoEmbeddedResponse,
    /// Nothing embedded is usable evidence; the reason of each response, in order.
    #[error("no embedded OCSP response is usable evidence: {}", list(.0))]
    NoUsableResponse(Vec<ResponseError>),
    /// Revoked at or before the proof time.
    #[error(
        "the certificate was revoked at {effective_time} ({}), at or before the proof time {proof_time} (from {from:?})",
        reason_name(.reason)
    )]
    RevokedBeforeProof {
        /// The revocation time, or the compromise time for keyCompromise.
        effective_time: i64,
        reason: Option<CrlReason>,
        proof_time: i64,
        from: Evidence,
    },
    /// Every usable response predates the proof time (beyond the tolerance).
    #[error(
        "the newest usable OCSP response (thisUpdate {newest_this_update}) predates the proof time {proof_time}"
    )]
    Stale {
        newest_this_update: i64,
        proof_time: i64,
    },
    #[error("the OCSP responder does not know the certificate (embedded response #{0})")]
    Unknown(usize),
}

fn list(errors: &[ResponseError]) -> String {
    errors
        .iter()
        .enumerate()
        .map(|(i, e)| format!("#{i}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn reason_name(r: &Option<CrlReason>) -> String {
    r.map_or_else(|| "no reason given".into(), |r| format!("{r:?}"))
}

/// The time from which a revocation counts (rule 2).
fn effective_time(time: i64, reason: Option<CrlReason>, invalidity_date: Option<i64>) -> i64 {
    match (reason, invalidity_date) {
        (Some(CrlReason::KeyCompromise), Some(d)) => time.min(d),
        _ => time,
    }
}

/// Decide (see the module documentation for the rules).
pub fn decide(
    q: &LongTermQuery<'_>,
    policy: &LongTermPolicy,
) -> Result<LongTermValid, LongTermRefusal> {
    if q.embedded.is_empty() {
        return Err(LongTermRefusal::NoEmbeddedResponse);
    }
    // Rule 1: usable evidence.
    let mut usable = Vec::new();
    let mut errors = Vec::new();
    for (i, der) in q.embedded.iter().enumerate() {
        let single = parse_response(der, &policy.limits)
            .and_then(|r| r.verify(q.issuer))
            .and_then(|v| v.status_of(q.certificate).cloned());
        match single {
            Ok(s) => usable.push((i, s)),
            Err(e) => errors.push(e),
        }
    }
    if usable.is_empty() {
        return Err(LongTermRefusal::NoUsableResponse(errors));
    }

    // Rules 2 and 3: any revocation dated at or before the proof time refuses.
    let mut revocations: Vec<(i64, Option<CrlReason>, Evidence)> = usable
        .iter()
        .filter_map(|(i, s)| match s.status {
            SingleCertStatus::Revoked {
                time,
                reason,
                invalidity_date,
            } => Some((
                effective_time(time, reason, invalidity_date),
                reason,
                Evidence::Embedded(*i),
            )),
            _ => None,
        })
        .collect();
    if let Some(LiveStatus::Revoked {
        time,
        reason,
        invalidity_date,
    }) = q.live
    {
        revocations.push((
            effective_time(time, reason, invalidity_date),
            reason,
            Evidence::Live,
        ));
    }
    if let Some(&(effective_time, reason, source)) = revocations
        .iter()
        .filter(|(t, _, _)| *t <= q.proof_time)
        .min_by_key(|(t, _, _)| *t)
    {
        return Err(LongTermRefusal::RevokedBeforeProof {
            effective_time,
            reason,
            proof_time: q.proof_time,
            from: source,
        });
    }

    // Rule 4: a fresh answer.
    let from = q.proof_time.saturating_sub(policy.tolerance_secs.max(0));
    let fresh: Vec<&(usize, crate::SingleResponse)> = usable
        .iter()
        .filter(|(_, s)| s.this_update >= from)
        .collect();
    let Some(&&(index, ref chosen)) = fresh.iter().max_by_key(|(_, s)| s.this_update) else {
        return Err(LongTermRefusal::Stale {
            newest_this_update: usable
                .iter()
                .map(|(_, s)| s.this_update)
                .max()
                .unwrap_or(i64::MIN),
            proof_time: q.proof_time,
        });
    };
    // Rule 5.
    if let Some((i, _)) = fresh
        .iter()
        .find(|(_, s)| s.status == SingleCertStatus::Unknown)
    {
        return Err(LongTermRefusal::Unknown(*i));
    }
    Ok(LongTermValid {
        response: index,
        this_update: chosen.this_update,
        revoked_later: revocations.into_iter().min_by_key(|(t, _, _)| *t),
    })
}
