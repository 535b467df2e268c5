//! The XUA/VIHF service: the issuer of assertions signed by the organisation seal ("cachet"),
//! and the validator for the network's services over the CA's live revocation state and the
//! signer policy (what each seal may assert: README, "Trust policy for assertion signers").
//!
//! It is built from the seal's signer (already behind the signing gate), its certificate
//! chain, the CA service and the registry; opening the seal key and certifying it is the
//! appliance's wiring.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cps_atna::{AuditLog, Transport};
use cps_ca::{CaError, CaService};
use cps_hsm::Signer;
use cps_store::{CertStatus, Store};
use cps_xua::{
    AssertionId, AssertionIssuer, EKU_DOCUMENT_SIGNING, EkuPolicy, Flavour, InMemoryReplayCache,
    IssuedAssertion, IssuerConfig, OrgSealRegistry, ProfessionalDirectory, Refusal,
    RevocationCheck, RevocationStatus, SealTrustPolicy, SignerCertificate, TrustStore,
    ValidatedAssertion, Validator, ValidatorConfig, VihfClaims,
};

use crate::settings::{OrgSealRegistryMode, ReplayRecord, XuaSettings};
use crate::single_use::StoreReplayCache;

/// The profile of certificates that sign assertions.
pub const SEAL_PROFILE: &str = "org-cachet";

/// Why the XUA service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum XuaError {
    /// The seal's signer and chain do not make an issuer.
    #[error("XUA issuer: {0}")]
    Issuer(String),
    /// The CA service has no root.
    #[error("no root CA")]
    NoRoot,
    /// The CA certificates do not make a trust store.
    #[error("XUA trust store: {0}")]
    TrustStore(String),
    /// A CA certificate could not be read.
    #[error(transparent)]
    Pki(#[from] cps_pki::PkiError),
}

/// The seal that signs assertions: its signer (behind the signing gate) and its certificate
/// chain, seal certificate first.
pub struct Seal {
    pub signer: Arc<dyn Signer>,
    pub chain: Vec<Vec<u8>>,
}

/// Revocation of assertion signers from the store: only certificates this appliance issued and
/// holds as valid sign assertions it accepts. Fails closed.
///
/// Answers are remembered per signer certificate while the store's
/// [`certificates_version`](Store::certificates_version) is unchanged, so a revocation takes
/// effect for every validation that starts after it was committed, and the many validations of
/// assertions from the same few seals do not each read and decode the certificate record.
struct StoreRevocation {
    store: Arc<dyn Store>,
    /// (CA id, subject DER) of our issuing CAs.
    issuers: Vec<(String, Vec<u8>)>,
    cache: parking_lot::Mutex<RevocationCache>,
}

/// Answers by signer certificate DER, all read at store version `version`.
#[derive(Default)]
struct RevocationCache {
    version: u64,
    answers: std::collections::HashMap<Vec<u8>, Result<RevocationStatus, String>>,
}

/// Signer certificates remembered at most (the cache starts over beyond).
const REVOCATION_CACHE_MAX: usize = 1024;

impl StoreRevocation {
    fn new(store: Arc<dyn Store>, issuers: Vec<(String, Vec<u8>)>) -> StoreRevocation {
        StoreRevocation {
            store,
            issuers,
            cache: parking_lot::Mutex::new(RevocationCache::default()),
        }
    }

    /// The answer about `cert` from the store; the outer error is the store failing (an
    /// answer about the store, not about the certificate).
    fn read(&self, cert: &SignerCertificate) -> Result<Result<RevocationStatus, String>, String> {
        let Some(ca) = self
            .issuers
            .iter()
            .find(|(_, subject)| *subject == cert.issuer_der)
            .map(|(id, _)| id.as_str())
        else {
            return Ok(Err(format!(
                "signer issuer '{}' is not one of our CAs",
                cert.issuer
            )));
        };
        let rec = self
            .store
            .get_certificate(ca, &cert.serial)
            .map_err(|e| format!("revocation state unavailable: {e}"))?;
        Ok(match rec {
            Some(rec) if rec.der == cert.der && rec.profile != SEAL_PROFILE => Err(format!(
                "a '{}' certificate does not sign assertions (only '{SEAL_PROFILE}')",
                rec.profile
            )),
            Some(rec) if rec.der == cert.der => Ok(match rec.status {
                CertStatus::Valid => RevocationStatus::Good,
                CertStatus::Revoked { reason, .. } => RevocationStatus::Revoked {
                    reason: cps_pki::crl::RevocationReason::from_code(reason)
                        .map(|r| r.name().to_string())
                        .unwrap_or_else(|| format!("reason {reason}")),
                },
            }),
            _ => Err(format!(
                "signer certificate {} was not issued by this appliance",
                hex::encode_upper(&cert.serial)
            )),
        })
    }
}

thread_local! {
    /// The store's certificates version read for the request this thread is working on.
    static REQUEST_VERSION: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a validation) with the store's certificates version already read for its request,
/// after the request arrived: the signer's revocation answer is then taken from the cache made
/// at that version, without reading the version again (on a database shared by several nodes,
/// one round trip less per validation). `None`: the version is read as usual.
pub fn at_store_version<R>(version: Option<u64>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<u64>);
    impl Drop for Reset {
        fn drop(&mut self) {
            REQUEST_VERSION.with(|v| v.set(self.0));
        }
    }
    let _reset = Reset(REQUEST_VERSION.with(|v| v.replace(version)));
    f()
}

impl RevocationCheck for StoreRevocation {
    fn status(
        &self,
        cert: &SignerCertificate,
        _chain: &[Vec<u8>],
        _now: SystemTime,
    ) -> Result<RevocationStatus, String> {
        // The version is read before the record: an answer is never tagged newer than its data.
        // A version read for this request after it arrived is as good as one read now.
        let version = REQUEST_VERSION
            .with(|v| v.get())
            .or_else(|| self.store.certificates_version());
        let Some(version) = version else {
            return self.read(cert)?;
        };
        {
            let cache = self.cache.lock();
            if cache.version == version
                && let Some(answer) = cache.answers.get(&cert.der)
            {
                return answer.clone();
            }
        }
        // The store failing is not an answer about the certificate: returned, not remembered.
        let answer = self.read(cert)?;
        let mut cache = self.cache.lock();
        if cache.version != version || cache.answers.len() >= REVOCATION_CACHE_MAX {
            cache.version = version;
            cache.answers.clear();
        }
        cache.answers.insert(cert.der.clone(), answer.clone());
        answer
    }
}

/// Issuance and validation of assertions.
pub struct XuaService {
    issuer: AssertionIssuer,
    validator: Validator,
    /// The validator's in-memory replay cache, refilled from the audit log at start: the whole
    /// record, or the "seen here" filter in front of the store's ([`StoreReplayCache`]).
    replay: Arc<InMemoryReplayCache>,
    /// The store's shared record, when `xua.replay_record = "store"`.
    shared: Option<Arc<StoreReplayCache>>,
    /// How long after its validation an assertion ID must still be refused: its whole validity
    /// (at most the configured one) plus the clock skew on both of its ends.
    replay_window: Duration,
    /// SHA-256 of the seal certificate: the appliance's identity in login challenges.
    seal_sha256: [u8; 32],
    rng: ring::rand::SystemRandom,
}

impl XuaService {
    /// The service for the settings `x`, signing with `seal`, trusting the CAs of `ca` and
    /// their live revocation state, and checking organisation seals against `registry`.
    pub fn new(
        x: &XuaSettings,
        seal: Seal,
        ca: &CaService,
        registry: Arc<dyn ProfessionalDirectory>,
    ) -> Result<XuaService, XuaError> {
        let Seal { signer, chain } = seal;
        // The appliance's own seal is its key: any certificate of that key was requested with
        // it (proof of possession), so it is recognised by key, not by a name an operator could
        // copy into a certificate of its own.
        let own_seal_key = signer.public_key_der().to_vec();
        let mut seal_sha256 = [0u8; 32];
        seal_sha256.copy_from_slice(
            ring::digest::digest(
                &ring::digest::SHA256,
                chain.first().map(Vec::as_slice).unwrap_or_default(),
            )
            .as_ref(),
        );
        let flavour = match (x.flavour.as_str(), &x.audience) {
            ("ihe", Some(a)) => Flavour::IheGeneric {
                audience: a.clone(),
            },
            _ => Flavour::Vihf,
        };
        let issuer = AssertionIssuer::new(
            signer,
            &chain,
            IssuerConfig {
                validity: Duration::from_secs(u64::from(x.validity_minutes) * 60),
                flavour,
                ..IssuerConfig::default()
            },
        )
        .map_err(|e| XuaError::Issuer(e.to_string()))?;

        let root = ca
            .authority("root")
            .map(|a| a.cert_der.clone())
            .ok_or(XuaError::NoRoot)?;
        let issuing: Vec<(String, Vec<u8>)> = ca
            .authorities()
            .filter(|a| a.id != "root")
            .map(|a| (a.id.clone(), a.cert_der.clone()))
            .collect();
        let trust = TrustStore::new(
            vec![root],
            issuing.iter().map(|(_, d)| d.clone()).collect(),
            // webpki applies a "required" EKU to the CA certificates of the path as well, and ours
            // carry no EKU: the leaf's EKU is checked when present, and StoreRevocation accepts
            // only certificates of the seal profile.
            EkuPolicy::RequiredIfPresent(EKU_DOCUMENT_SIGNING),
        )
        .map_err(|e| XuaError::TrustStore(e.to_string()))?;
        let mut issuer_subjects = Vec::new();
        for (id, der) in &issuing {
            let p = cps_pki::parse_certificate(der)?;
            issuer_subjects.push((id.clone(), p.subject.to_der()?));
        }
        // The longest validity accepted from any seal (our own, or an organisation seal our CA
        // certified) is the configured one; bounding it also bounds how far back the replay
        // cache is refilled at start.
        let validity = Duration::from_secs(u64::from(x.validity_minutes) * 60);
        let skew = Duration::from_secs(u64::from(x.skew_seconds));
        let replay = Arc::new(InMemoryReplayCache::new(x.replay_capacity));
        // What each signer may assert: the own seal's claims are trusted as issued (login checked
        // the card and the registry); an organisation seal vouches only for its own structure, in
        // indirect mode, for professionals of our registry (unless the registry is not held).
        let policy = SealTrustPolicy::new(
            vec![own_seal_key],
            match x.org_seal_registry {
                OrgSealRegistryMode::Required => OrgSealRegistry::Required(registry),
                OrgSealRegistryMode::NotHeld => OrgSealRegistry::NotHeld,
            },
        );
        // The appliance resolves the setting for its store backend
        // (`XuaSettings::replay_record_for`); unset means the embedded store's default here.
        let shared = match x.replay_record.unwrap_or_default() {
            ReplayRecord::Memory => None,
            ReplayRecord::Store => Some(Arc::new(StoreReplayCache::new(
                ca.store().clone(),
                replay.clone(),
            ))),
        };
        let replay_cache: Arc<dyn cps_xua::ReplayCache> = match &shared {
            Some(s) => s.clone(),
            None => replay.clone(),
        };
        let validator = Validator::new(
            ValidatorConfig {
                clock_skew: skew,
                max_validity: validity,
                audience: match x.flavour.as_str() {
                    "ihe" => x.audience.clone(),
                    _ => None,
                },
                ..ValidatorConfig::default()
            },
            Arc::new(trust),
            Arc::new(StoreRevocation::new(ca.store().clone(), issuer_subjects)),
            Arc::new(policy),
            replay_cache,
        );
        Ok(XuaService {
            issuer,
            validator,
            replay,
            shared,
            replay_window: validity + 2 * skew,
            seal_sha256,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// Remember the assertions validated within the replay window before this start, from
    /// their records in the audit log (each was durable before its answer left), so that a
    /// restart does not reopen them to replay. Returns how many were remembered.
    pub fn remember_validated(&self, log: &AuditLog, now: SystemTime) -> Result<usize, String> {
        remember_validated(log, &*self.replay, self.replay_window, now)
    }

    /// The store's shared replay record, when validations go through it (then
    /// [`validate`](XuaService::validate) waits for the store: call it off the runtime's
    /// workers).
    pub fn shared_replay(&self) -> Option<&Arc<StoreReplayCache>> {
        self.shared.as_ref()
    }

    /// SHA-256 of the seal certificate (DER): the identity login signatures are bound to. Every
    /// node holding the same seal has the same one; another service does not.
    pub fn seal_sha256(&self) -> [u8; 32] {
        self.seal_sha256
    }

    /// Issue and sign an assertion (refused while the clock is not trusted). The caller hands
    /// it out only once its audit records are durable (see [`crate::LoginService`]).
    pub fn issue(&self, claims: &VihfClaims, now: SystemTime) -> Result<IssuedAssertion, CaError> {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 16];
        self.rng
            .fill(&mut id)
            .map_err(|_| CaError::Invalid("no randomness for the assertion ID".into()))?;
        self.issuer
            .issue(claims, now, &AssertionId::from_random(id))
            .map_err(|e| match e {
                cps_xua::IssueError::Signer(cps_hsm::HsmError::SigningRefused(m)) => {
                    CaError::Unavailable(format!("signing refused: {m}"))
                }
                e @ (cps_xua::IssueError::Claims(_)
                | cps_xua::IssueError::BreakGlassWithoutJustification) => {
                    CaError::Invalid(e.to_string())
                }
                e => CaError::Internal(Box::new(e)),
            })
    }

    /// Validate for a service: every check, and the assertion's ID is consumed.
    pub fn validate(&self, input: &[u8], now: SystemTime) -> Result<ValidatedAssertion, Refusal> {
        self.validator.validate(input, now)
    }
}

/// Put into `cache` the IDs of the assertions this appliance validated in the `window` before
/// `now`, as its own records in `log` hold them, each until `window` after its validation (an
/// upper bound of its validity plus the skew on both ends). Records that other nodes sent to the
/// repository are not ours and are skipped. Returns how many IDs were added.
fn remember_validated(
    log: &AuditLog,
    cache: &dyn cps_xua::ReplayCache,
    window: Duration,
    now: SystemTime,
) -> Result<usize, String> {
    let micros = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    };
    let filter = cps_atna::SearchFilter {
        from: Some(micros(now.checked_sub(window).unwrap_or(UNIX_EPOCH))),
        event_type: Some(cps_atna::events::ASSERTION_VALIDATED_TYPE.into()),
        ..Default::default()
    };
    let (mut cursor, mut remembered) = (None, 0);
    loop {
        let page = log
            .search(&filter, 10_000, cursor)
            .map_err(|e| format!("reading validated assertions from the audit log: {e}"))?;
        for r in page
            .records
            .iter()
            .filter(|r| r.transport == Transport::Local)
        {
            let Some(id) = cps_atna::events::validated_assertion_id(&r.raw) else {
                continue;
            };
            let at = r
                .summary
                .event
                .as_ref()
                .and_then(|e| e.event_time)
                .unwrap_or(r.received)
                .max(0) as u64;
            let expires = UNIX_EPOCH + Duration::from_micros(at) + window;
            match cache.check_and_insert(&id, expires, now) {
                Ok(()) => remembered += 1,
                Err(cps_xua::ReplayError::Replayed) => {}
                Err(e) => return Err(format!("replay cache: {e}")),
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(remembered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_store::{CertificateRecord, SledStore, WriteBatch, WriteOp};

    /// The seal certificate kept with the XUA attack corpus.
    fn corpus_seal() -> SignerCertificate {
        use base64::Engine;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../xua/tests/corpus/pki/seal.crt.pem"
        );
        let pem = std::fs::read_to_string(path).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        SignerCertificate::from_der(&der).unwrap()
    }

    fn record_of(cert: &SignerCertificate, profile: &str) -> CertificateRecord {
        CertificateRecord {
            issuer: "organisations".into(),
            serial: cert.serial.clone(),
            subject: cert.subject.clone(),
            profile: profile.into(),
            holder: None,
            spki_sha256: [7; 32],
            not_before: 0,
            not_after: i64::MAX / 2,
            der: cert.der.clone(),
            status: CertStatus::Valid,
            issued_at: 0,
        }
    }

    /// Validations are reloaded from the appliance's own log records within the window only;
    /// a message another node sent to the repository does not count as ours.
    #[test]
    fn validated_assertions_are_reloaded_from_our_own_recent_records_only() {
        use cps_atna::events::{self, AuditContext, Person};
        use cps_xua::ReplayCache;
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), None, cps_atna::LogOptions::default()).unwrap();
        let queue = cps_atna::Queue::open(&dir.path().join("q"), &[], Default::default()).unwrap();
        let auditor = cps_atna::Auditor::new(queue, "cps-trust.localhost", "cps-trust");
        let ctx = AuditContext {
            source_id: "cps-trust".into(),
            site_id: None,
            host: "cps-trust.localhost".into(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let window = Duration::from_secs(3600 + 120);
        let message = |id: &str, secs_ago: u64| {
            let t = now - Duration::from_secs(secs_ago);
            let at = time::OffsetDateTime::from(t);
            let m = events::assertion_validated(
                &ctx,
                at,
                "operator:svc",
                &Person::id("810002813839"),
                id,
                None,
            );
            (
                crate::unix(t) * 1_000_000,
                auditor.format(&m, at).unwrap(),
                m,
            )
        };
        let mut records = Vec::new();
        for (id, ago) in [("_recent", 60), ("_edge", 3600), ("_old", 2 * 3600)] {
            let (t, raw, m) = message(id, ago);
            records.push(cps_atna::NewRecord::local_message(t, &raw, &m));
        }
        // The same kind of message, received from another node over TLS.
        let (t, raw, _) = message("_foreign", 60);
        records.push(cps_atna::NewRecord::from_message(
            t,
            &cps_atna::NodeIdentity::default(),
            "192.0.2.7:6514",
            Transport::Tls,
            &raw,
            &cps_atna::XmlLimits::default(),
        ));
        log.append_blocking(records).unwrap();

        let cache = InMemoryReplayCache::new(1024);
        assert_eq!(remember_validated(&log, &cache, window, now), Ok(2));
        let later = now + Duration::from_secs(10);
        let far = now + Duration::from_secs(7200);
        for id in ["_recent", "_edge"] {
            assert_eq!(
                cache.check_and_insert(id, far, later),
                Err(cps_xua::ReplayError::Replayed),
                "{id} was validated before the restart"
            );
        }
        for id in ["_old", "_foreign"] {
            assert_eq!(cache.check_and_insert(id, far, later), Ok(()), "{id}");
        }
        // Remembered until the window after its validation, no longer.
        let after = now - Duration::from_secs(60) + window + Duration::from_secs(1);
        assert_eq!(cache.check_and_insert("_recent", far, after), Ok(()));
    }

    #[test]
    fn a_revocation_is_seen_by_the_next_check_even_with_the_answer_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let seal = corpus_seal();
        let check = StoreRevocation::new(
            store.clone(),
            vec![("organisations".into(), seal.issuer_der.clone())],
        );
        let status = |c: &SignerCertificate| check.status(c, &[], SystemTime::now());

        // Not issued by us: refused, and still refused once remembered.
        for _ in 0..2 {
            let e = status(&seal).unwrap_err();
            assert!(e.contains("not issued by this appliance"), "{e}");
        }
        store
            .commit(
                WriteBatch::new().with(WriteOp::InsertCertificate(record_of(&seal, SEAL_PROFILE))),
            )
            .unwrap();
        for _ in 0..3 {
            assert_eq!(status(&seal), Ok(RevocationStatus::Good));
        }
        store
            .commit(WriteBatch::new().with(WriteOp::SetCertificateStatus {
                issuer: "organisations".into(),
                serial: seal.serial.clone(),
                status: CertStatus::Revoked {
                    time: 1_790_000_000,
                    reason: 1,
                    invalidity_date: None,
                },
            }))
            .unwrap();
        assert_eq!(
            status(&seal),
            Ok(RevocationStatus::Revoked {
                reason: "keyCompromise".into()
            })
        );

        // Another certificate with the same serial and issuer is not the one we issued.
        let mut forged = seal.clone();
        forged.der.push(0);
        let e = status(&forged).unwrap_err();
        assert!(e.contains("not issued by this appliance"), "{e}");
    }

    #[test]
    fn a_version_read_for_the_request_keys_the_revocation_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let seal = corpus_seal();
        store
            .commit(
                WriteBatch::new().with(WriteOp::InsertCertificate(record_of(&seal, SEAL_PROFILE))),
            )
            .unwrap();
        let check = StoreRevocation::new(
            store.clone(),
            vec![("organisations".into(), seal.issuer_der.clone())],
        );
        let before = store.certificates_version();
        let status = |c: &SignerCertificate| check.status(c, &[], SystemTime::now());
        // Remembered at the current version.
        assert_eq!(status(&seal), Ok(RevocationStatus::Good));
        store
            .commit(WriteBatch::new().with(WriteOp::SetCertificateStatus {
                issuer: "organisations".into(),
                serial: seal.serial.clone(),
                status: CertStatus::Revoked {
                    time: 1_790_000_000,
                    reason: 1,
                    invalidity_date: None,
                },
            }))
            .unwrap();
        let after = store.certificates_version();
        assert_ne!(before, after);
        // A request whose version was read before the revocation gets the answer of that
        // version (its read came first), one read after it the revocation — and the caller's
        // version is what is used, not one read again.
        assert_eq!(
            at_store_version(before, || status(&seal)),
            Ok(RevocationStatus::Good)
        );
        assert_eq!(
            at_store_version(after, || status(&seal)),
            Ok(RevocationStatus::Revoked {
                reason: "keyCompromise".into()
            })
        );
        // Outside a request the version is read again.
        assert_eq!(
            status(&seal),
            Ok(RevocationStatus::Revoked {
                reason: "keyCompromise".into()
            })
        );
    }
}
