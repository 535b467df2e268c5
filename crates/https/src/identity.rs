//! Who is at the other end of an HTTPS connection, checked for **every request**.
//!
//! The TLS handshake verified the client certificate once (`cps_tls::ClientVerifier`), but
//! a connection lives on (HTTP/1.1 keep-alive, HTTP/2 streams), so each request looks the
//! certificate up again in the live state: revoked, on hold, expired, issued with a profile this
//! listener does not accept, or unknown to the store → 401, and the connection is closed. A store
//! that cannot answer → 503 (fail closed).
//!
//! Answers are remembered while the store's
//! [`certificates_version`](cps_store::Store::certificates_version) is unchanged: one atomic load
//! and one hash lookup per request, and a revocation is seen by every request that starts after
//! its commit returned. The operator bound to a certificate is read in the same lookup (operators
//! are registered in the commit that inserts their certificate, so the same version covers them).

use std::collections::HashMap;
use std::sync::Arc;

use cps_store::{CertStatus, Store};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// An operator: a name and roles, bound to a client certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Operator {
    pub name: String,
    pub roles: Vec<String>,
}

impl Operator {
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// An operator as the API shows it.
impl From<&Operator> for cps_api::OperatorView {
    fn from(o: &Operator) -> cps_api::OperatorView {
        let Operator { name, roles } = o;
        cps_api::OperatorView {
            name: name.clone(),
            roles: roles.clone(),
        }
    }
}

/// Finds the operator bound to a certificate (the appliance's operator table).
pub trait OperatorLookup: Send + Sync {
    /// The operator bound to `cert_der`, a certificate of `profile` in `store`; `Ok(None)` for a
    /// certificate that binds none (a card's, or an operator certificate without its record);
    /// `Err` when the record cannot be read.
    fn operator(
        &self,
        store: &dyn Store,
        profile: &str,
        cert_der: &[u8],
    ) -> Result<Option<Operator>, String>;
}

/// Answers remembered at most (the cache starts over beyond).
const CACHE_MAX: usize = 4096;

/// The client certificate of a connection, as the handshake verified it, parsed once per
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// The id of the issuing CA of this appliance (`personnes`, `organisations`...).
    pub ca: String,
    /// Serial number (big-endian magnitude).
    pub serial: Vec<u8>,
    /// Unix seconds.
    pub not_after: i64,
}

impl PeerCertificate {
    /// Reads `der`, issued by one of `issuers` ((CA id, subject DER)); `None` if it is not a
    /// certificate of one of them.
    pub fn parse(der: &[u8], issuers: &[(String, Vec<u8>)]) -> Option<PeerCertificate> {
        let p = cps_pki::parse_certificate(der).ok()?;
        let issuer = p.issuer.to_der().ok()?;
        let ca = issuers.iter().find(|(_, s)| *s == issuer)?.0.clone();
        Some(PeerCertificate {
            der: der.to_vec(),
            sha256: p.sha256_fingerprint,
            ca,
            serial: p.serial.as_bytes().to_vec(),
            not_after: p.not_after,
        })
    }
}

/// Why a connection's client certificate no longer authenticates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefusal {
    /// Revoked or on hold.
    #[error("the client certificate is {0}")]
    Revoked(String),
    /// Past its notAfter.
    #[error("the client certificate has expired")]
    Expired,
    /// Not a certificate this appliance issued (or no longer in its store).
    #[error("the client certificate is not known to this appliance")]
    Unknown,
    /// Issued with a profile that does not authenticate here.
    #[error("a '{0}' certificate does not authenticate on this listener")]
    Profile(String),
    /// The live state could not be read (fail closed).
    #[error("the certificate status is unavailable: {0}")]
    Unavailable(String),
}

impl IdentityRefusal {
    /// Whether the identity is gone for good on this connection (401 and close), as opposed to
    /// the state being unreadable for now (503).
    pub fn is_final(&self) -> bool {
        !matches!(self, IdentityRefusal::Unavailable(_))
    }
}

/// A client certificate that passed the per-request check, and the operator bound to it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub certificate: Arc<PeerCertificate>,
    /// The operator registered for this certificate, if it is an operator certificate.
    pub operator: Option<Operator>,
}

#[derive(Default)]
struct Cache {
    version: u64,
    answers: HashMap<[u8; 32], Result<Option<Operator>, IdentityRefusal>>,
}

/// The per-request identity check over the live store.
pub struct Identities {
    store: Arc<dyn Store>,
    profiles: &'static [&'static str],
    operators: Arc<dyn OperatorLookup>,
    cache: RwLock<Cache>,
    /// Set when other nodes commit to the same store: versions are read through it.
    fresh: Option<Arc<cps_store::FreshVersion>>,
}

impl Identities {
    /// The check over `store`, for certificates of `profiles`, with their operators found by
    /// `operators`.
    pub fn new(
        store: Arc<dyn Store>,
        profiles: &'static [&'static str],
        operators: Arc<dyn OperatorLookup>,
    ) -> Identities {
        Identities {
            store,
            profiles,
            operators,
            cache: RwLock::new(Cache::default()),
            fresh: None,
        }
    }

    /// Several nodes share the store: [`version`](Self::version) asks it through `fresh`.
    pub fn with_fresh(mut self, fresh: Arc<cps_store::FreshVersion>) -> Identities {
        self.fresh = Some(fresh);
        self
    }

    /// The store's certificates version, read after this call began (for
    /// [`check_at`](Self::check_at)); without another node it is the store's own counter.
    pub async fn version(&self) -> Option<u64> {
        match &self.fresh {
            Some(f) => f.current().await,
            None => self.store.certificates_version(),
        }
    }

    /// Checks `cert` at `now` (Unix seconds) against the live state.
    pub fn check(
        &self,
        cert: &Arc<PeerCertificate>,
        now: i64,
    ) -> Result<Identity, IdentityRefusal> {
        self.check_at(cert, now, self.store.certificates_version())
    }

    /// The same with the store's certificates version already read, by the caller, after the
    /// request arrived (e.g. through [`cps_store::FreshVersion`] when several nodes share the
    /// store): a remembered answer is used only if it was made at that very version. `None`: no
    /// version, the store is read.
    pub fn check_at(
        &self,
        cert: &Arc<PeerCertificate>,
        now: i64,
        version: Option<u64>,
    ) -> Result<Identity, IdentityRefusal> {
        if now >= cert.not_after {
            return Err(IdentityRefusal::Expired);
        }
        let operator = match version {
            None => self.read(cert)?,
            Some(version) => {
                let hit = {
                    let c = self.cache.read();
                    (c.version == version)
                        .then(|| c.answers.get(&cert.sha256).cloned())
                        .flatten()
                };
                match hit {
                    Some(answer) => answer?,
                    None => {
                        // The version is read before the record: an answer is never tagged newer
                        // than its data. A store failure is not an answer: not remembered.
                        let answer = match self.read(cert) {
                            Err(e @ IdentityRefusal::Unavailable(_)) => return Err(e),
                            other => other,
                        };
                        let mut c = self.cache.write();
                        if c.version != version || c.answers.len() >= CACHE_MAX {
                            c.version = version;
                            c.answers.clear();
                        }
                        c.answers.insert(cert.sha256, answer.clone());
                        answer?
                    }
                }
            }
        };
        Ok(Identity {
            certificate: cert.clone(),
            operator,
        })
    }

    fn read(&self, cert: &PeerCertificate) -> Result<Option<Operator>, IdentityRefusal> {
        let unavailable = |e: &dyn std::fmt::Display| IdentityRefusal::Unavailable(e.to_string());
        let rec = self
            .store
            .get_certificate(&cert.ca, &cert.serial)
            .map_err(|e| unavailable(&e))?;
        let rec = match rec {
            Some(r) if r.der == cert.der => r,
            _ => return Err(IdentityRefusal::Unknown),
        };
        if !self.profiles.contains(&rec.profile.as_str()) {
            return Err(IdentityRefusal::Profile(rec.profile));
        }
        if let CertStatus::Revoked { reason, .. } = rec.status {
            return Err(IdentityRefusal::Revoked(
                if reason == 6 { "on hold" } else { "revoked" }.into(),
            ));
        }
        self.operators
            .operator(self.store.as_ref(), &rec.profile, &cert.der)
            .map_err(|e| unavailable(&e))
    }
}

/// The store's certificates version read for a request after it arrived (requests with a client
/// certificate; the authorization layer puts it in the request's extensions): caches of
/// certificate state used by the handler may rely on it.
#[derive(Clone, Copy, Debug)]
pub struct RequestVersion(pub Option<u64>);

/// SHA-256 of a client certificate (DER): two different certificates never share it, whatever
/// operator name or roles they carry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of(cert_der: &[u8]) -> CertFingerprint {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref());
        CertFingerprint(out)
    }
}

impl std::fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertFingerprint({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_pki::crl::RevocationReason;
    use cps_store::{CertificateRecord, WriteBatch, WriteOp};

    fn record(serial: u8, profile: &str, der: &[u8]) -> CertificateRecord {
        CertificateRecord {
            issuer: "organisations".into(),
            serial: vec![serial],
            der: der.to_vec(),
            subject: "CN=alice".into(),
            profile: profile.into(),
            holder: Some("operator:alice".into()),
            not_before: 0,
            not_after: 2_000_000_000,
            status: CertStatus::Valid,
            spki_sha256: [serial; 32],
            issued_at: 0,
        }
    }

    fn peer(serial: u8, der: &[u8]) -> Arc<PeerCertificate> {
        Arc::new(PeerCertificate {
            der: der.to_vec(),
            sha256: *ring::digest::digest(&ring::digest::SHA256, der)
                .as_ref()
                .first_chunk::<32>()
                .unwrap(),
            ca: "organisations".into(),
            serial: vec![serial],
            not_after: 2_000_000_000,
        })
    }

    const PROFILES: &[&str] = &["operator", "cps-auth"];

    /// Operators as the appliance keeps them: a meta record per certificate, for the
    /// `operator` profile only.
    struct Table;

    fn key(der: &[u8]) -> String {
        format!("operator:{}", hex::encode(CertFingerprint::of(der).0))
    }

    fn register_op(der: &[u8], name: &str, roles: &[&str]) -> WriteOp {
        let op = Operator {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        WriteOp::PutMeta {
            key: key(der),
            value: serde_json::to_vec(&op).unwrap(),
        }
    }

    impl OperatorLookup for Table {
        fn operator(
            &self,
            store: &dyn Store,
            profile: &str,
            cert_der: &[u8],
        ) -> Result<Option<Operator>, String> {
            if profile != "operator" {
                return Ok(None);
            }
            match store.get_meta(&key(cert_der)).map_err(|e| e.to_string())? {
                None => Ok(None),
                Some(v) => serde_json::from_slice(&v)
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
        }
    }

    fn identities(store: Arc<dyn Store>) -> Identities {
        Identities::new(store, PROFILES, Arc::new(Table))
    }

    fn setup() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(cps_store::SledStore::open(dir.path()).unwrap());
        (dir, store)
    }

    #[test]
    fn every_request_sees_a_revocation_committed_before_it() {
        let (_d, store) = setup();
        let der = b"operator certificate".to_vec();
        store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(record(1, "operator", &der)))
                    .with(register_op(&der, "alice", &["auditor"])),
            )
            .unwrap();
        let ids = identities(store.clone());
        let cert = peer(1, &der);
        let id = ids.check(&cert, 1_000).unwrap();
        assert_eq!(id.operator.unwrap().roles, vec!["auditor".to_string()]);
        // Remembered: the same answer again.
        assert!(ids.check(&cert, 1_000).is_ok());
        store
            .commit(WriteBatch::new().with(WriteOp::SetCertificateStatus {
                issuer: "organisations".into(),
                serial: vec![1],
                status: CertStatus::Revoked {
                    time: 1_001,
                    reason: RevocationReason::KeyCompromise.code(),
                    invalidity_date: None,
                },
            }))
            .unwrap();
        let e = ids.check(&cert, 1_002).unwrap_err();
        assert_eq!(e, IdentityRefusal::Revoked("revoked".into()));
        assert!(e.is_final());
    }

    #[test]
    fn on_hold_expired_unknown_substituted_and_foreign_profiles_are_refused() {
        let (_d, store) = setup();
        let der = b"card".to_vec();
        let mut held = record(2, "cps-auth", &der);
        held.status = CertStatus::Revoked {
            time: 5,
            reason: 6,
            invalidity_date: None,
        };
        store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(held))
                    .with(WriteOp::InsertCertificate(record(3, "node-tls", b"node")))
                    .with(WriteOp::InsertCertificate(record(
                        4,
                        "cps-auth",
                        b"good card",
                    ))),
            )
            .unwrap();
        let ids = identities(store);
        assert_eq!(
            ids.check(&peer(2, &der), 10).unwrap_err(),
            IdentityRefusal::Revoked("on hold".into())
        );
        assert_eq!(
            ids.check(&peer(3, b"node"), 10).unwrap_err(),
            IdentityRefusal::Profile("node-tls".into())
        );
        assert_eq!(
            ids.check(&peer(9, b"never issued"), 10).unwrap_err(),
            IdentityRefusal::Unknown
        );
        // The serial of a real certificate with other bytes (a forgery the handshake would not
        // pass, or a certificate from another appliance with the same issuer name).
        assert_eq!(
            ids.check(&peer(4, b"other bytes"), 10).unwrap_err(),
            IdentityRefusal::Unknown
        );
        // A card certificate is an identity without an operator.
        let id = ids.check(&peer(4, b"good card"), 10).unwrap();
        assert!(id.operator.is_none());
        assert_eq!(
            ids.check(&peer(4, b"good card"), 2_000_000_000)
                .unwrap_err(),
            IdentityRefusal::Expired
        );
    }

    #[test]
    fn an_operator_certificate_without_an_operator_record_has_no_roles() {
        let (_d, store) = setup();
        store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(record(5, "operator", b"orphan"))),
            )
            .unwrap();
        let ids = identities(store);
        assert!(
            ids.check(&peer(5, b"orphan"), 10)
                .unwrap()
                .operator
                .is_none()
        );
    }

    /// A lookup that fails while `down` is set.
    struct Flaky(std::sync::atomic::AtomicBool);

    impl OperatorLookup for Flaky {
        fn operator(
            &self,
            store: &dyn Store,
            profile: &str,
            cert_der: &[u8],
        ) -> Result<Option<Operator>, String> {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("operator table unreadable".into());
            }
            Table.operator(store, profile, cert_der)
        }
    }

    #[test]
    fn an_operator_table_that_cannot_answer_fails_closed_and_is_not_remembered() {
        let (_d, store) = setup();
        let der = b"operator certificate".to_vec();
        store
            .commit(
                WriteBatch::new()
                    .with(WriteOp::InsertCertificate(record(6, "operator", &der)))
                    .with(register_op(&der, "bob", &["operator"])),
            )
            .unwrap();
        let lookup = Arc::new(Flaky(std::sync::atomic::AtomicBool::new(true)));
        let ids = Identities::new(store, PROFILES, lookup.clone());
        let cert = peer(6, &der);
        let e = ids.check(&cert, 10).unwrap_err();
        assert!(
            matches!(&e, IdentityRefusal::Unavailable(m) if m.contains("unreadable")),
            "{e}"
        );
        assert!(!e.is_final(), "503, the connection stays");
        lookup.0.store(false, std::sync::atomic::Ordering::SeqCst);
        let id = ids.check(&cert, 10).unwrap();
        assert_eq!(id.operator.unwrap().name, "bob");
    }
}
