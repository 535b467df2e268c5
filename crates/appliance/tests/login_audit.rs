//! `LoginService` over a real home (SoftHSM2 keys, sled store) whose store can be made to refuse
//! commits: what reaches the store for each outcome of a login, and that no assertion is
//! answered without its records — card login and TLS login, break-glass included.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use cps_appliance::ca::{CaError, CaService, IssueRequest, SubjectRequest};
use cps_appliance::config::{Config, TimeSourceKind};
use cps_appliance::login::{
    Directory, LoginContext, LoginRefusal, LoginResult, LoginService, LoginSubject,
};
use cps_appliance::refusals::Refusals;
use cps_login::Challenges;
use cps_store::{
    AuditEntry, BlockedKey, CertCursor, CertificatePage, CertificateRecord, CommitReceipt,
    RecordRow, RevokedEntry, SledStore, Store, StoreError, WriteBatch, WriteOp,
};
use parking_lot::Mutex;

const IDNAT: &str = "810002813839";

/// A sled store whose commits fail while `failing` is set; remembers the audit kinds of every
/// batch it committed.
struct FlakyStore {
    inner: SledStore,
    failing: AtomicBool,
    committed: Mutex<Vec<Vec<String>>>,
}

impl FlakyStore {
    fn audit_batches(&self) -> Vec<Vec<String>> {
        self.committed
            .lock()
            .iter()
            .filter(|b| !b.is_empty())
            .cloned()
            .collect()
    }
}

impl Store for FlakyStore {
    fn commit(&self, batch: WriteBatch) -> Result<CommitReceipt, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "flaky".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        let kinds = batch
            .ops()
            .iter()
            .filter_map(|op| match op {
                WriteOp::AppendAudit(r) => Some(format!("{}:{}", r.kind, r.outcome)),
                _ => None,
            })
            .collect();
        let receipt = self.inner.commit(batch)?;
        self.committed.lock().push(kinds);
        Ok(receipt)
    }
    fn get_certificate(
        &self,
        issuer: &str,
        serial: &[u8],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.inner.get_certificate(issuer, serial)
    }
    fn certificates_version(&self) -> Option<u64> {
        self.inner.certificates_version()
    }
    fn certificates_by_spki(&self, s: &[u8; 32]) -> Result<Vec<CertificateRecord>, StoreError> {
        self.inner.certificates_by_spki(s)
    }
    fn list_certificates(
        &self,
        issuer: Option<&str>,
        after: Option<&CertCursor>,
        limit: usize,
    ) -> Result<CertificatePage, StoreError> {
        self.inner.list_certificates(issuer, after, limit)
    }
    fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        self.inner.revoked_certificates(issuer)
    }
    fn blocked_key(&self, s: &[u8; 32]) -> Result<Option<BlockedKey>, StoreError> {
        self.inner.blocked_key(s)
    }
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        self.inner.counter(name)
    }
    fn audit_range(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_range(from_seq, limit)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.inner.audit_len()
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(key)
    }
    fn get_record(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_record(table, key)
    }
    fn scan_records(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        self.inner.scan_records(table, prefix, after, limit)
    }
    fn claim(
        &self,
        table: &str,
        keys: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "flaky".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.inner.claim(table, keys, now)
    }
}

/// The registry answer for the card, switchable to a refusal.
struct TestDirectory(Mutex<Result<LoginSubject, LoginRefusal>>);

impl Directory for TestDirectory {
    fn login_subject(
        &self,
        _idnat_ps: &str,
        _ca: &str,
        _serial: &[u8],
        _structure_id: Option<&str>,
    ) -> Result<LoginSubject, LoginRefusal> {
        self.0.lock().clone()
    }
}

fn unix_now() -> i64 {
    cps_appliance::unix_now()
}

type Outcome = Result<Result<LoginResult, LoginRefusal>, CaError>;

#[test]
fn a_login_is_answered_only_with_its_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut config = Config::embedded_default();
    config.time.source = TimeSourceKind::Declared;
    // SAFETY: the only test of this binary, before any PKCS#11 call.
    unsafe { std::env::set_var("SOFTHSM2_CONF", home.join("softhsm2.conf")) };
    cps_appliance::ceremony::init(&home, &config, unix_now()).unwrap();
    let hsm = cps_appliance::home::open_checked_hsm(&home, &config).unwrap();
    let store = Arc::new(FlakyStore {
        inner: SledStore::open(home.join("store")).unwrap(),
        failing: AtomicBool::new(false),
        committed: Mutex::new(Vec::new()),
    });
    let clock = cps_appliance::clock::SigningClock::from_config(&config.time, None);
    let ca = Arc::new(CaService::open(&home, &config, &hsm, store.clone(), clock.clone()).unwrap());
    let registry = Arc::new(cps_appliance::enrolment::RegistryDirectory(
        cps_enrol::Registry::new(store.clone()),
    ));
    let xua =
        Arc::new(cps_appliance::xua::open(&home, &config, &hsm, &ca, clock, registry).unwrap());

    // The card: a P-256 key held here, and its cps-auth certificate from our CA.
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut req = openssl::x509::X509ReqBuilder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "card").unwrap();
    req.set_subject_name(&name.build()).unwrap();
    req.set_pubkey(&key).unwrap();
    req.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let cert = ca
        .issue(
            &IssueRequest {
                profile: "cps-auth".into(),
                csr: req.build().to_der().unwrap(),
                subject: SubjectRequest::Person(cps_pki::PersonIdentity {
                    idnat_ps: IDNAT.into(),
                    surname: "DONNAT-GADY".into(),
                    given_name: "ISABELLE".into(),
                    profession_code: "10".into(),
                }),
                sans: vec![],
                holder: IDNAT.into(),
            },
            "test",
            unix_now(),
        )
        .unwrap()
        .der;
    let card_sign = |m: &[u8]| {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        s.update(m).unwrap();
        s.sign_to_vec().unwrap()
    };
    let subject = LoginSubject {
        idnat_ps: IDNAT.into(),
        display_name: "DONNAT-GADY, ISABELLE".into(),
        profession_code: "10".into(),
        profession_label: "Médecin".into(),
        structure_id: "10B0152872".into(),
        secteur_code: "SA07".into(),
    };
    let directory = Arc::new(TestDirectory(Mutex::new(Ok(subject.clone()))));
    let refusals = Arc::new(Refusals::new(cps_audit::AuditEvent::LoginsRefused));
    let challenges = Challenges::derive(
        &cps_appliance::login::challenge_key(&hsm).unwrap(),
        xua.seal_sha256(),
        Duration::from_secs(120),
    )
    .unwrap();
    let login = LoginService::new(
        ca.core().clone(),
        xua,
        directory.clone(),
        challenges,
        "test".into(),
        cps_appliance::login::counted_in(refusals.clone()),
    );
    let source: IpAddr = "192.0.2.7".parse().unwrap();
    let now = SystemTime::now();
    let attempt = |ctx: &LoginContext, sign: &dyn Fn(&[u8]) -> Vec<u8>| -> Outcome {
        let ch = login.challenge("urn:dmp", ctx, now).unwrap();
        let to_sign = base64::engine::general_purpose::STANDARD
            .decode(&ch.challenge)
            .unwrap();
        let redeemed = match login.redeem(&ch.challenge_id, ctx, source, now) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        login.login(&redeemed, &cert, &sign(&to_sign), ctx, source, now)
    };
    let normal = LoginContext {
        patient_ins: Some("248079707503828".into()),
        ..LoginContext::default()
    };
    let break_glass = LoginContext {
        purpose_of_use: Some("bris_de_glace".into()),
        justification: Some("urgence vitale".into()),
        ..normal.clone()
    };
    let batches = |from: usize| store.audit_batches()[from..].to_vec();
    let unavailable = |o: Outcome| matches!(o, Err(CaError::Unavailable(_)));

    // A break-glass login: its three records in one batch, committed before the answer.
    let mark = store.audit_batches().len();
    let ok = attempt(&break_glass, &card_sign).unwrap().unwrap();
    assert!(ok.assertion.contains("bris_de_glace"));
    assert_eq!(
        batches(mark),
        vec![vec![
            "login:success".to_owned(),
            "xua.issue:success".into(),
            "xua.break_glass:success".into()
        ]]
    );
    let entries = store
        .audit_range(store.audit_len().unwrap() - 2, 3)
        .unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.record.detail["assertion_id"] == ok.assertion_id.as_str()),
        "{entries:#?}"
    );

    // Attempts that prove nothing: refused, counted, nothing written.
    let mark = store.audit_batches().len();
    let bad = attempt(&normal, &|_| vec![0x30, 0x06, 2, 1, 1, 2, 1, 1])
        .unwrap()
        .unwrap_err();
    assert_eq!(bad.code, "bad_signature");
    let bare = |m: &[u8]| card_sign(&m[56..88]);
    assert_eq!(
        attempt(&normal, &bare).unwrap().unwrap_err().code,
        "bare_nonce_signature"
    );
    assert_eq!(
        login
            .redeem("not-a-challenge", &normal, source, now)
            .unwrap_err()
            .code,
        "unknown_challenge"
    );
    assert!(batches(mark).is_empty(), "{:?}", batches(mark));
    assert_eq!(refusals.pending(), 3);

    // An identified refusal: one durable failure record naming the professional.
    *directory.0.lock() = Err(LoginRefusal {
        code: "card_not_active",
        message: "the card is suspended".into(),
    });
    let mark = store.audit_batches().len();
    let r = attempt(&normal, &card_sign).unwrap().unwrap_err();
    assert_eq!(r.code, "card_not_active");
    assert_eq!(batches(mark), vec![vec!["login:failure".to_owned()]]);
    let last = store.audit_range(store.audit_len().unwrap(), 1).unwrap();
    assert_eq!(last[0].record.detail["idnat_ps"], IDNAT);
    assert_eq!(last[0].record.detail["source"], "192.0.2.7");
    assert_eq!(last[0].record.actor, format!("professional:{IDNAT}"));

    // The store refuses commits: no assertion leaves, by card or by TLS, break-glass or not, and
    // an identified refusal is not answered either.
    store.failing.store(true, Ordering::SeqCst);
    *directory.0.lock() = Ok(subject.clone());
    let audit_len = store.audit_len().unwrap();
    for ctx in [&normal, &break_glass] {
        assert!(unavailable(attempt(ctx, &card_sign)));
        assert!(unavailable(login.login_tls(&cert, ctx, source, now)));
    }
    *directory.0.lock() = Err(LoginRefusal {
        code: "professional_not_active",
        message: "suspended".into(),
    });
    assert!(unavailable(attempt(&normal, &card_sign)));
    assert!(unavailable(login.login_tls(&cert, &normal, source, now)));
    // What proved nothing is still refused plainly: it needs no write.
    assert_eq!(
        attempt(&normal, &bare).unwrap().unwrap_err().code,
        "bare_nonce_signature"
    );
    assert_eq!(store.audit_len().unwrap(), audit_len);

    // Back: a TLS login is answered with its records, in one batch.
    store.failing.store(false, Ordering::SeqCst);
    *directory.0.lock() = Ok(subject);
    let mark = store.audit_batches().len();
    login
        .login_tls(&cert, &normal, source, now)
        .unwrap()
        .unwrap();
    assert_eq!(
        batches(mark),
        vec![vec!["login:success".to_owned(), "xua.issue:success".into()]]
    );
}
