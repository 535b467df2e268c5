//! The OCSP responder core of cps-trust (RFC 6960, RFC 5019 lightweight profile), sans-IO.
//!
//! No I/O, no clock, no RNG: the HTTP layer hands [`Responder::respond`] the request bytes
//! (POST body, or [`decode_get_request`] of a GET path) and `now` in Unix seconds, and sends
//! back [`OcspReply::der`] as `application/ocsp-response` (HTTP 200 for every OCSP status;
//! [`OcspReply::cacheable`] says whether RFC 5019 §6 caching headers may be added, built from
//! [`OcspReply::this_update`] / [`OcspReply::next_update`]). Certificate status comes from a
//! [`StatusSource`] (the store); signing goes through each issuer's delegated OCSP signer
//! ([`cps_hsm::Signer`]).
//!
//! The relying side lives here too: [`parse_response`] / [`OcspResponse::verify`] /
//! [`VerifiedResponse::status_of`] read a response back (the evidence a long-term signature
//! embeds), and [`decide`] says whether a certificate was good at a given time from such
//! responses and an optional live status (`longterm.rs` states the rules).
//!
//! # Behaviour
//!
//! * **Parsing** is strict DER (`der` 0.8), bounded by [`ResponderConfig::max_request_bytes`] and
//!   [`ResponderConfig::max_requests_per_message`]. Garbage, truncation, trailing bytes, a
//!   version other than v1, an unknown *critical* extension, a duplicate extension or a nonce
//!   outside 1..=32 octets give `malformedRequest`. An optional request signature is accepted
//!   and ignored (neither verified nor required).
//! * **CertID** hash algorithms SHA-1, SHA-256, SHA-384 and SHA-512, with absent or NULL
//!   parameters (other parameters are `malformedRequest`; another hash algorithm cannot
//!   name one of our issuers). `issuerNameHash` is the hash of the DER of the CA certificate's subject,
//!   `issuerKeyHash` the hash of its subjectPublicKey BIT STRING value; both are precomputed.
//! * **Which issuer signs.** Each CertID is answered, in request order, with its CertID echoed
//!   byte for byte. The response is signed by the delegated signer of the issuer named by the
//!   first CertID we recognise. CertIDs of an issuer we do not serve, or of another of our
//!   issuers (whose certificates this signer is not authorised for, RFC 6960 §4.2.2.2), get
//!   `unknown`: RFC 6960 §2.2 defines `unknown` as "the responder doesn't know about the
//!   certificate being requested, usually because the request indicates an unrecognized
//!   issuer that is not served by this responder". Only when *no* CertID names an issuer of
//!   ours is the whole request refused with `unauthorized` (RFC 6960 §2.3 / RFC 5019 §2.2.3:
//!   the responder cannot answer authoritatively).
//! * **Statuses**: `good`, `revoked` (revocationTime and, when known, revocationReason),
//!   and for serials we never issued either `unknown` or, with
//!   [`NotIssuedPolicy::RevokedExtended`], `revoked` at 1970-01-01T00:00:00Z with reason
//!   certificateHold plus the non-critical id-pkix-ocsp-extended-revoke extension (RFC 6960
//!   §2.2, §4.4.8; CA/B Forum BR 4.9.10). A serial that cannot be ours (not a positive
//!   INTEGER of at most 20 octets) is "not issued" without asking the source. The same serial
//!   asked twice in one message is looked up once (no contradictory answers).
//! * **Fail closed**: a [`StatusError::Unavailable`] gives `tryLater`, a
//!   [`StatusError::Internal`], a signing failure, an out-of-range time or a responder
//!   certificate not valid at `now` give `internalError`; never `good`.
//! * **Times**: `producedAt` = `thisUpdate` = `now`; `nextUpdate` = `now` +
//!   [`ResponderConfig::validity_secs`], but never after the responder certificate's notAfter.
//! * **Nonce** (id-pkix-ocsp-nonce): the request's extension is echoed verbatim in
//!   responseExtensions. RFC 8954 §2.1 lets a responder refuse nonces of 0 or more than 32
//!   octets with `malformedRequest`; we do, and also refuse an extnValue that is not an OCTET
//!   STRING (the pre-RFC 8954 "raw bytes" form), since no current client sends it.
//! * **Cache**: the response to a single-CertID request without nonce is pre-signed and kept
//!   (key: the CertID bytes, i.e. issuer + hash algorithm + serial) while
//!   `now < thisUpdate + cache_refresh_secs`, in a bounded map
//!   ([`ResponderConfig::cache_max_entries`]). A hit costs one strict parse, one map lookup
//!   and a reference-count increment ([`bytes::Bytes`]). [`Responder::invalidate`] (called after
//!   a revocation *and* after an issuance is visible to the [`StatusSource`]) drops the entry
//!   and prevents any signing already in flight from putting the old answer back (per-stripe
//!   generation counters checked under the shard lock on insert; see `cache.rs`). Requests
//!   with a nonce, or with several CertIDs, are signed per request.
//! * **Never panics** on any input: no indexing, unwrap or expect on request data; every
//!   parse error is a `malformedRequest` reply. (A panicking [`StatusSource`] or [`Signer`] is
//!   the caller's to contain.)

#![forbid(unsafe_code)]

mod cache;
mod encode;
mod get;
mod longterm;
mod oids;
mod parse;
pub mod request;
mod response;

use std::sync::Arc;

use bytes::Bytes;
use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use der::{Decode, Encode};

pub use get::decode_get_request;
pub use longterm::{
    Evidence, LiveStatus, LongTermPolicy, LongTermQuery, LongTermRefusal, LongTermValid, decide,
};
pub use parse::CertIdHash;
pub use response::{
    CertId, OcspResponse, ResponderId, ResponseError, ResponseLimits, SignedBy, SingleCertStatus,
    SingleResponse, VerifiedResponse, parse_response,
};

use cache::{Cache, Cached};
use encode::{Single, SingleStatus};
use parse::{CertIdRef, ParsedRequest};

/// RFC 5280 `CRLReason` (value 7 is unused): the same type the CRLs use.
pub use cps_pki::crl::RevocationReason as CrlReason;

/// What the store knows about one serial of one issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatusAnswer {
    Good,
    /// `time`: revocation time in Unix seconds (must not be negative).
    Revoked {
        time: i64,
        reason: Option<CrlReason>,
    },
    /// Never issued by this issuer (see [`NotIssuedPolicy`]).
    Unknown,
}

/// Why the [`StatusSource`] could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Temporarily unavailable (store busy or unreachable) → `tryLater`.
    #[error("status source unavailable: {0}")]
    Unavailable(String),
    /// Anything else → `internalError`.
    #[error("status source failed: {0}")]
    Internal(String),
}

/// The certificate status lookup the responder consults on every cache miss.
pub trait StatusSource: Send + Sync {
    /// Status of `serial` (DER INTEGER content octets, DER-minimal, positive, at most 20
    /// octets, as `cps_pki::Serial::as_bytes`) under the issuer [`IssuerEntry::id`].
    fn status(&self, issuer_id: &str, serial: &[u8]) -> Result<CertStatusAnswer, StatusError>;
}

/// One CA this responder answers for.
#[derive(Clone)]
pub struct IssuerEntry {
    /// Passed back to [`StatusSource::status`] and [`Responder::invalidate`].
    pub id: String,
    /// DER of the CA certificate (the issuer named by CertIDs).
    pub ca_cert_der: Vec<u8>,
    /// DER of the delegated OCSP signer certificate (issued by that CA, EKU id-kp-OCSPSigning),
    /// or the CA certificate itself when the CA key signs responses.
    pub responder_cert_der: Vec<u8>,
    /// The responder's key (in the HSM in production).
    pub responder_key: Arc<dyn Signer>,
    pub signature: SignatureAlgorithm,
}

/// What to answer for a serial the [`StatusSource`] says was never issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotIssuedPolicy {
    /// `unknown`.
    Unknown,
    /// `revoked`, 1970-01-01T00:00:00Z, certificateHold, + id-pkix-ocsp-extended-revoke
    /// (CA/B Forum BR 4.9.10, RFC 6960 §2.2).
    RevokedExtended,
}

/// Responder settings.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// `nextUpdate - thisUpdate`, seconds (> 0).
    pub validity_secs: i64,
    pub not_issued: NotIssuedPolicy,
    /// Largest request accepted (POST body, or decoded GET), bytes (> 0).
    pub max_request_bytes: usize,
    /// Most CertIDs in one request (≥ 1); more → `malformedRequest`.
    pub max_requests_per_message: usize,
    /// A cached response is re-signed once it is this old, seconds (0 < x ≤ validity_secs).
    pub cache_refresh_secs: i64,
    /// Bound of the pre-signed cache (0 disables it).
    pub cache_max_entries: usize,
}

impl Default for ResponderConfig {
    /// 8 h validity (the CA/B Forum BR minimum), re-signed hourly, 8 KiB / 16 CertIDs per
    /// request, 100 000 cached responses (~1 KB each with the responder certificate).
    fn default() -> Self {
        ResponderConfig {
            validity_secs: 8 * 3600,
            not_issued: NotIssuedPolicy::Unknown,
            max_request_bytes: 8192,
            max_requests_per_message: 16,
            cache_refresh_secs: 3600,
            cache_max_entries: 100_000,
        }
    }
}

/// `OCSPResponseStatus` (RFC 6960 §4.2.1) values this responder produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseStatusKind {
    Successful,
    MalformedRequest,
    InternalError,
    TryLater,
    Unauthorized,
}

impl ResponseStatusKind {
    pub fn code(self) -> u8 {
        match self {
            ResponseStatusKind::Successful => 0,
            ResponseStatusKind::MalformedRequest => 1,
            ResponseStatusKind::InternalError => 2,
            ResponseStatusKind::TryLater => 3,
            ResponseStatusKind::Unauthorized => 6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResponseStatusKind::Successful => "successful",
            ResponseStatusKind::MalformedRequest => "malformedRequest",
            ResponseStatusKind::InternalError => "internalError",
            ResponseStatusKind::TryLater => "tryLater",
            ResponseStatusKind::Unauthorized => "unauthorized",
        }
    }
}

/// The answer to one request: always a DER `OCSPResponse`.
#[derive(Debug, Clone)]
pub struct OcspReply {
    /// The `OCSPResponse` to send (`application/ocsp-response`).
    pub der: Bytes,
    pub status: ResponseStatusKind,
    /// Unix seconds; `Some` for successful responses.
    pub produced_at: Option<i64>,
    pub this_update: Option<i64>,
    pub next_update: Option<i64>,
    /// Successful and without nonce: HTTP caching headers (RFC 5019 §6.2) may be added.
    pub cacheable: bool,
    /// Served from the pre-signed cache.
    pub from_cache: bool,
    /// Why the status is not `successful` (for the log; never sent to the client).
    pub detail: Option<String>,
}

impl OcspReply {
    fn error(status: ResponseStatusKind, detail: impl Into<String>) -> Self {
        static MALFORMED: [u8; 5] = encode::error_response(1);
        static INTERNAL: [u8; 5] = encode::error_response(2);
        static TRY_LATER: [u8; 5] = encode::error_response(3);
        static UNAUTHORIZED: [u8; 5] = encode::error_response(6);
        let der: &'static [u8] = match status {
            ResponseStatusKind::MalformedRequest => &MALFORMED,
            ResponseStatusKind::TryLater => &TRY_LATER,
            ResponseStatusKind::Unauthorized => &UNAUTHORIZED,
            ResponseStatusKind::InternalError | ResponseStatusKind::Successful => &INTERNAL,
        };
        let status = if status == ResponseStatusKind::Successful {
            ResponseStatusKind::InternalError
        } else {
            status
        };
        OcspReply {
            der: Bytes::from_static(der),
            status,
            produced_at: None,
            this_update: None,
            next_update: None,
            cacheable: false,
            from_cache: false,
            detail: Some(detail.into()),
        }
    }

    /// `tryLater`: the responder cannot answer now (e.g. it cannot tell whether its cached
    /// answers are still current).
    pub fn try_later(detail: impl Into<String>) -> Self {
        Self::error(ResponseStatusKind::TryLater, detail)
    }

    fn from_cached(c: Cached) -> Self {
        OcspReply {
            der: c.der,
            status: ResponseStatusKind::Successful,
            produced_at: Some(c.this_update),
            this_update: Some(c.this_update),
            next_update: Some(c.next_update),
            cacheable: true,
            from_cache: true,
            detail: None,
        }
    }
}

/// Configuration errors of [`Responder::new`] and GET decoding errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    #[error("invalid responder configuration: {0}")]
    Config(String),
    #[error("issuer '{id}': {reason}")]
    Issuer { id: String, reason: String },
    #[error("invalid GET request: {0}")]
    GetRequest(String),
}

/// What the responder keeps per issuer.
struct Issuer {
    id: String,
    /// `[(issuerNameHash, issuerKeyHash)]` indexed by [`CertIdHash::index`].
    hashes: [(Vec<u8>, Vec<u8>); 4],
    /// SHA-1 of the responder's subjectPublicKey (ResponderID byKey).
    responder_key_hash: [u8; 20],
    signature_algorithm_der: Vec<u8>,
    responder_cert_der: Vec<u8>,
    responder_not_before: i64,
    responder_not_after: i64,
    key: Arc<dyn Signer>,
    signature: SignatureAlgorithm,
}

/// The OCSP responder: `Send + Sync`, shared behind an `Arc` by the HTTP layer.
pub struct Responder {
    issuers: Vec<Issuer>,
    config: ResponderConfig,
    source: Arc<dyn StatusSource>,
    cache: Cache,
    extended_revoke_ext: Vec<u8>,
}

fn issuer_err(id: &str, reason: impl std::fmt::Display) -> OcspError {
    OcspError::Issuer {
        id: id.to_owned(),
        reason: reason.to_string(),
    }
}

fn unix(t: &x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn has_ocsp_signing_eku(cert: &x509_cert::Certificate) -> bool {
    cert.tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == oids::EXT_KEY_USAGE)
        .any(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0.contains(&oids::KP_OCSP_SIGNING))
        })
}

impl Issuer {
    fn new(e: IssuerEntry) -> Result<Self, OcspError> {
        let id = e.id.as_str();
        if id.is_empty() {
            return Err(OcspError::Config("empty issuer id".into()));
        }
        let ca = x509_cert::Certificate::from_der(&e.ca_cert_der)
            .map_err(|err| issuer_err(id, format!("CA certificate: {err}")))?;
        let ca_parsed = cps_pki::parse_certificate(&e.ca_cert_der)
            .map_err(|err| issuer_err(id, format!("CA certificate: {err}")))?;
        if !ca_parsed.is_ca {
            return Err(issuer_err(
                id,
                "the CA certificate is not a CA (basicConstraints)",
            ));
        }
        let ca_tbs = ca.tbs_certificate();
        let subject_der = ca_tbs
            .subject()
            .to_der()
            .map_err(|err| issuer_err(id, err))?;
        let ca_key_bits = ca_tbs
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        let hashes = CertIdHash::ALL.map(|h| {
            (
                h.digest(&subject_der).as_ref().to_vec(),
                h.digest(ca_key_bits).as_ref().to_vec(),
            )
        });

        let responder = x509_cert::Certificate::from_der(&e.responder_cert_der)
            .map_err(|err| issuer_err(id, format!("responder certificate: {err}")))?;
        let r_tbs = responder.tbs_certificate();
        let r_spki = r_tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|err| issuer_err(id, err))?;
        if r_spki != e.responder_key.public_key_der() {
            return Err(issuer_err(
                id,
                format!(
                    "the responder key '{}' does not match the responder certificate",
                    e.responder_key.label()
                ),
            ));
        }
        if e.responder_cert_der != e.ca_cert_der {
            let issuer_der = r_tbs.issuer().to_der().map_err(|err| issuer_err(id, err))?;
            if issuer_der != subject_der {
                return Err(issuer_err(
                    id,
                    "the responder certificate was not issued by this CA (issuer name)",
                ));
            }
            cps_pki::verify_issued_by(&e.responder_cert_der, &ca_parsed.spki).map_err(|_| {
                issuer_err(
                    id,
                    "the responder certificate's signature does not verify with the CA key",
                )
            })?;
            if !has_ocsp_signing_eku(&responder) {
                return Err(issuer_err(
                    id,
                    "the responder certificate lacks extendedKeyUsage id-kp-OCSPSigning",
                ));
            }
        }
        if !e.signature.fits(e.responder_key.key_algorithm()) {
            return Err(issuer_err(
                id,
                format!(
                    "signature algorithm {} does not fit the responder's {} key",
                    e.signature,
                    e.responder_key.key_algorithm()
                ),
            ));
        }
        let signature_algorithm_der = cps_pki::signature_algorithm_identifier(e.signature)
            .and_then(|a| a.to_der().map_err(Into::into))
            .map_err(|err| issuer_err(id, err))?;
        let mut responder_key_hash = [0u8; 20];
        responder_key_hash.copy_from_slice(
            CertIdHash::Sha1
                .digest(
                    r_tbs
                        .subject_public_key_info()
                        .subject_public_key
                        .raw_bytes(),
                )
                .as_ref(),
        );
        let validity = r_tbs.validity();
        Ok(Issuer {
            hashes,
            responder_key_hash,
            signature_algorithm_der,
            responder_not_before: unix(&validity.not_before),
            responder_not_after: unix(&validity.not_after),
            key: e.responder_key,
            signature: e.signature,
            id: e.id,
            responder_cert_der: e.responder_cert_der,
        })
    }

    fn matches(&self, id: &CertIdRef<'_>) -> bool {
        id.hash
            .and_then(|h| self.hashes.get(h.index()))
            .is_some_and(|(name, key)| name == id.name_hash && key == id.key_hash)
    }
}

/// A serial we could have issued: a positive INTEGER of 1 to 20 octets, not zero.
fn plausible_serial(serial: &[u8]) -> bool {
    matches!(serial.first(), Some(b) if b & 0x80 == 0)
        && serial.len() <= 20
        && serial.iter().any(|b| *b != 0)
}

type Failure = (ResponseStatusKind, String);

impl Responder {
    /// Check every issuer (certificates parse, the responder certificate is issued by the CA,
    /// carries id-kp-OCSPSigning and matches its key; ids and CAs are distinct) and the
    /// configuration.
    pub fn new(
        issuers: Vec<IssuerEntry>,
        config: ResponderConfig,
        source: Arc<dyn StatusSource>,
    ) -> Result<Self, OcspError> {
        if config.validity_secs <= 0 {
            return Err(OcspError::Config("validity_secs must be positive".into()));
        }
        if config.cache_refresh_secs <= 0 || config.cache_refresh_secs > config.validity_secs {
            return Err(OcspError::Config(
                "cache_refresh_secs must be positive and at most validity_secs".into(),
            ));
        }
        if config.max_request_bytes == 0 || config.max_requests_per_message == 0 {
            return Err(OcspError::Config(
                "max_request_bytes and max_requests_per_message must be positive".into(),
            ));
        }
        if issuers.is_empty() {
            return Err(OcspError::Config("no issuer configured".into()));
        }
        let mut built: Vec<Issuer> = Vec::with_capacity(issuers.len());
        for e in issuers {
            let i = Issuer::new(e)?;
            if built.iter().any(|o| o.id == i.id) {
                return Err(issuer_err(&i.id, "duplicate issuer id"));
            }
            if built.iter().any(|o| o.hashes == i.hashes) {
                return Err(issuer_err(&i.id, "the same CA is configured twice"));
            }
            built.push(i);
        }
        let extended_revoke_ext = encode::extended_revoke_extension()
            .map_err(|e| OcspError::Config(format!("encoding: {e}")))?;
        Ok(Responder {
            issuers: built,
            cache: Cache::new(config.cache_max_entries),
            config,
            source,
            extended_revoke_ext,
        })
    }

    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    /// Number of pre-signed responses currently cached.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// [`decode_get_request`] with this responder's size limit.
    pub fn decode_get(&self, encoded: &str) -> Result<Vec<u8>, OcspError> {
        decode_get_request(encoded, self.config.max_request_bytes)
    }

    /// Answer one DER `OCSPRequest`. Never panics; always yields a DER `OCSPResponse`.
    pub fn respond(&self, request_der: &[u8], now: i64) -> OcspReply {
        if request_der.len() > self.config.max_request_bytes {
            return OcspReply::error(
                ResponseStatusKind::MalformedRequest,
                format!(
                    "request of {} bytes exceeds the limit of {}",
                    request_der.len(),
                    self.config.max_request_bytes
                ),
            );
        }
        let req = match parse::parse_request(request_der, self.config.max_requests_per_message) {
            Ok(r) => r,
            Err(e) => {
                return OcspReply::error(ResponseStatusKind::MalformedRequest, e.to_string());
            }
        };
        let cache_eligible = req.count == 1 && req.nonce.is_none() && self.cache.enabled();
        let hit = cache_eligible
            .then(|| {
                self.cache
                    .get(req.first.raw, now, self.config.cache_refresh_secs)
            })
            .flatten();
        if let Some(hit) = hit {
            return OcspReply::from_cached(hit);
        }
        match self.sign_response(&req, now, cache_eligible) {
            Ok(reply) => reply,
            Err((status, detail)) => OcspReply::error(status, detail),
        }
    }

    fn sign_response(
        &self,
        req: &ParsedRequest<'_>,
        now: i64,
        cache_eligible: bool,
    ) -> Result<OcspReply, Failure> {
        let malformed = |e: parse::Malformed| (ResponseStatusKind::MalformedRequest, e.to_string());
        let mut ids: Vec<(CertIdRef<'_>, Option<usize>)> = Vec::with_capacity(req.count);
        for id in req.cert_ids() {
            let id = id.map_err(malformed)?;
            let issuer = self.issuers.iter().position(|i| i.matches(&id));
            ids.push((id, issuer));
        }
        let Some(chosen) = ids.iter().find_map(|(_, i)| *i) else {
            return Err((
                ResponseStatusKind::Unauthorized,
                "no CertID names an issuer served by this responder".into(),
            ));
        };
        let issuer = self
            .issuers
            .get(chosen)
            .ok_or((ResponseStatusKind::InternalError, "issuer index".into()))?;
        let internal = |what: String| (ResponseStatusKind::InternalError, what);
        if now < issuer.responder_not_before || now > issuer.responder_not_after {
            return Err(internal(format!(
                "the responder certificate of issuer '{}' is not valid at {now}",
                issuer.id
            )));
        }
        let next_update = now
            .checked_add(self.config.validity_secs)
            .ok_or_else(|| internal("time overflow".into()))?
            .min(issuer.responder_not_after);

        // Taken before the status is read (see cache.rs).
        let ticket = cache_eligible.then(|| self.cache.ticket(chosen, req.first.serial));

        let mut singles: Vec<Single<'_>> = Vec::with_capacity(ids.len());
        let mut extended_revoke = false;
        for (n, (id, which)) in ids.iter().enumerate() {
            let status = if *which != Some(chosen) {
                SingleStatus::Unknown
            } else if let Some(prev) = ids
                .iter()
                .take(n)
                .zip(singles.iter())
                .find(|((p, w), _)| *w == Some(chosen) && p.serial == id.serial)
                .map(|(_, s)| s.status)
            {
                prev
            } else {
                let (status, ext) = self.lookup(issuer, id.serial)?;
                extended_revoke |= ext;
                status
            };
            singles.push(Single {
                cert_id: id.raw,
                status,
            });
        }

        let mut extensions: Vec<&[u8]> = Vec::with_capacity(2);
        if let Some(nonce) = req.nonce {
            extensions.push(nonce);
        }
        if extended_revoke {
            extensions.push(&self.extended_revoke_ext);
        }
        let tbs = encode::response_data(
            &issuer.responder_key_hash,
            now,
            &singles,
            now,
            next_update,
            &extensions,
        )
        .map_err(|e| internal(format!("encoding ResponseData: {e}")))?;
        let signature = issuer
            .key
            .sign(issuer.signature, &tbs, SigFormat::Der)
            .map_err(|e| match e {
                // A refusal to sign (the clock is not trusted) is temporary: RFC 6960 tryLater.
                cps_hsm::HsmError::SigningRefused(reason) => (
                    ResponseStatusKind::TryLater,
                    format!("signing refused: {reason}"),
                ),
                e => internal(format!("signing with '{}': {e}", issuer.key.label())),
            })?;
        let der = encode::ocsp_response(
            &tbs,
            &issuer.signature_algorithm_der,
            &signature,
            &issuer.responder_cert_der,
        )
        .map_err(|e| internal(format!("encoding OCSPResponse: {e}")))?;
        let der = Bytes::from(der);
        if let Some(ticket) = ticket {
            self.cache.insert(
                req.first.raw,
                ticket,
                Cached {
                    der: der.clone(),
                    this_update: now,
                    next_update,
                },
            );
        }
        Ok(OcspReply {
            der,
            status: ResponseStatusKind::Successful,
            produced_at: Some(now),
            this_update: Some(now),
            next_update: Some(next_update),
            cacheable: req.nonce.is_none(),
            from_cache: false,
            detail: None,
        })
    }

    /// Status of one serial of `issuer`; `.1` = the extended-revoke extension is needed.
    fn lookup(&self, issuer: &Issuer, serial: &[u8]) -> Result<(SingleStatus, bool), Failure> {
        let answer = if plausible_serial(serial) {
            self.source
                .status(&issuer.id, serial)
                .map_err(|e| match e {
                    StatusError::Unavailable(_) => (ResponseStatusKind::TryLater, e.to_string()),
                    StatusError::Internal(_) => (ResponseStatusKind::InternalError, e.to_string()),
                })?
        } else {
            CertStatusAnswer::Unknown
        };
        Ok(match answer {
            CertStatusAnswer::Good => (SingleStatus::Good, false),
            CertStatusAnswer::Revoked { time, reason } => {
                if time < 0 {
                    return Err((
                        ResponseStatusKind::InternalError,
                        format!("revocation time {time} before 1970"),
                    ));
                }
                (SingleStatus::Revoked { time, reason }, false)
            }
            CertStatusAnswer::Unknown => match self.config.not_issued {
                NotIssuedPolicy::Unknown => (SingleStatus::Unknown, false),
                NotIssuedPolicy::RevokedExtended => (
                    SingleStatus::Revoked {
                        time: 0,
                        reason: Some(CrlReason::CertificateHold),
                    },
                    true,
                ),
            },
        })
    }

    /// Drop the cached responses for `serial` (DER INTEGER content octets) of `issuer_id`,
    /// and make sure no signing in flight caches the previous status. Call it right after the
    /// new status (a revocation, and also an issuance: a non-issued answer may be cached) is
    /// visible to the [`StatusSource`]. Unknown issuer ids are ignored.
    pub fn invalidate(&self, issuer_id: &str, serial: &[u8]) {
        let Some((index, issuer)) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.id == issuer_id)
        else {
            return;
        };
        let mut keys = Vec::with_capacity(2 * CertIdHash::ALL.len());
        for h in CertIdHash::ALL {
            if let Some((name, key)) = issuer.hashes.get(h.index()) {
                for null in [false, true] {
                    if let Ok(k) = encode::cert_id(h, null, name, key, serial) {
                        keys.push(k);
                    }
                }
            }
        }
        self.cache.invalidate(index, serial, &keys);
    }

    /// Drop every cached response (e.g. after a bulk change or a key rollover).
    pub fn invalidate_all(&self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Responder>();
        check::<OcspReply>();
    }

    #[test]
    fn crl_reason_codes() {
        for c in 0u8..=20 {
            match CrlReason::from_code(c) {
                Some(r) => assert_eq!(r.code(), c),
                None => assert!(c == 7 || c > 10),
            }
        }
    }

    #[test]
    fn serial_plausibility() {
        assert!(plausible_serial(&[0x01]));
        assert!(plausible_serial(&[0x00, 0x80]));
        assert!(!plausible_serial(&[0x00]));
        assert!(!plausible_serial(&[0x80]));
        assert!(!plausible_serial(&[]));
        assert!(!plausible_serial(&[0x01; 21]));
        assert!(plausible_serial(&[0x7f; 20]));
    }

    #[test]
    fn error_responses_are_fixed_der() {
        let r = OcspReply::error(ResponseStatusKind::Unauthorized, "x");
        assert_eq!(&r.der[..], &[0x30, 0x03, 0x0a, 0x01, 0x06]);
        let r = OcspReply::error(ResponseStatusKind::Successful, "x");
        assert_eq!(r.status, ResponseStatusKind::InternalError);
    }
}
