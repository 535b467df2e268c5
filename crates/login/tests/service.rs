//! The login and XUA services in process, built as the appliance builds them but from software
//! keys, a software CA hierarchy and a temporary store: a card login answered with an assertion
//! the validator accepts once, refusals counted through the callback without a durable write,
//! and the live certificate state (the card's, the seal's) seen by the next login or validation.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use cps_ca::{CaService, IssueRequest, SubjectRequest};
use cps_hsm::{KeyAlgorithm, SigFormat, Signer, SoftwareMacKey, SoftwareSigner};
use cps_login::{
    Challenges, Directory, LoginContext, LoginRefusal, LoginService, LoginSubject, Seal,
    XuaService, XuaSettings,
};
use cps_pki::crl::RevocationReason;
use cps_pki::{DistinguishedName, OrganisationIdentity, PersonIdentity};
use cps_store::{SledStore, Store};
use parking_lot::Mutex;

const IDNAT: &str = "810002813839";

struct OneProfessional;

impl Directory for OneProfessional {
    fn login_subject(
        &self,
        idnat_ps: &str,
        _ca: &str,
        _serial: &[u8],
        _structure_id: Option<&str>,
    ) -> Result<LoginSubject, LoginRefusal> {
        Ok(LoginSubject {
            idnat_ps: idnat_ps.into(),
            display_name: "DONNAT-GADY, ISABELLE".into(),
            profession_code: "10".into(),
            profession_label: "Médecin".into(),
            structure_id: "10B0152872".into(),
            secteur_code: "SA07".into(),
        })
    }
}

/// Organisation seals are not used here: the registry says no one is known.
struct NoRegistry;

impl cps_xua::ProfessionalDirectory for NoRegistry {
    fn professional(
        &self,
        _id: &cps_pki::IdNatPs,
    ) -> Result<Option<cps_xua::RegisteredProfessional>, String> {
        Ok(None)
    }
}

fn csr_for(k: &SoftwareSigner) -> Vec<u8> {
    let subject = DistinguishedName::parse("CN=ignored").unwrap();
    let alg = k.key_algorithm().default_signature();
    cps_pki::build_csr(&subject, k.public_key_der(), alg, |tbs| {
        k.sign(alg, tbs, SigFormat::Der)
    })
    .unwrap()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Fx {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ca: Arc<CaService>,
    xua: Arc<XuaService>,
    login: LoginService,
    /// What the refusal callback was given: (source, code).
    counted: Arc<Mutex<Vec<(IpAddr, String)>>>,
    seal_serial: Vec<u8>,
    card: SoftwareSigner,
    card_der: Vec<u8>,
    card_serial: Vec<u8>,
    settings: XuaSettings,
    seal_signer: Arc<dyn Signer>,
    seal_chain: Vec<Vec<u8>>,
}

fn fx(now: SystemTime) -> Fx {
    fx_with(now, XuaSettings::default())
}

/// The settings of nodes that share their replay record and used challenges through the store.
fn shared() -> XuaSettings {
    XuaSettings {
        replay_record: Some(cps_login::ReplayRecord::Store),
        ..XuaSettings::default()
    }
}

/// A login service for `xua` with the challenge secret every node of the tests holds.
fn login_service(
    ca: &Arc<CaService>,
    xua: &Arc<XuaService>,
    settings: &XuaSettings,
    counted: &Arc<Mutex<Vec<(IpAddr, String)>>>,
) -> LoginService {
    let challenges = Challenges::derive(
        &SoftwareMacKey::new("login-challenge", b"test secret"),
        xua.seal_sha256(),
        Duration::from_secs(120),
    )
    .unwrap();
    let challenges = match settings.replay_record.unwrap_or_default() {
        cps_login::ReplayRecord::Memory => challenges,
        cps_login::ReplayRecord::Store => {
            challenges.with_shared_record(Arc::new(cps_login::StoreNonces::new(ca.store().clone())))
        }
    };
    let sink = counted.clone();
    LoginService::new(
        ca.clone(),
        xua.clone(),
        Arc::new(OneProfessional),
        challenges,
        "test".into(),
        Arc::new(move |source, code: &str, _now| sink.lock().push((source, code.to_owned()))),
    )
}

fn fx_with(now: SystemTime, settings: XuaSettings) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let ca = Arc::new(cps_ca::hierarchy::software_ca(store.clone(), unix(now) - 86_400).unwrap());
    let t = unix(now) - 60;

    // The seal: an org-cachet certificate from the organisations CA for a software key.
    let seal_key = SoftwareSigner::generate("xua-cachet", KeyAlgorithm::EcP256).unwrap();
    let seal = ca
        .issue(
            &IssueRequest {
                profile: "org-cachet".into(),
                csr: csr_for(&seal_key),
                subject: SubjectRequest::Organisation(OrganisationIdentity {
                    state: "Paris (75)".into(),
                    name: "cps-trust".into(),
                    structure_id: "10B0000001".into(),
                    common_name: "cps-trust XUA".into(),
                }),
                sans: vec![],
                holder: "appliance:xua-cachet".into(),
            },
            "test",
            t,
        )
        .unwrap();
    let chain = vec![
        seal.der.clone(),
        ca.authority("organisations").unwrap().cert_der.clone(),
    ];
    let seal_signer: Arc<dyn Signer> = Arc::new(seal_key);
    let xua = Arc::new(
        XuaService::new(
            &settings,
            Seal {
                signer: seal_signer.clone(),
                chain: chain.clone(),
            },
            &ca,
            Arc::new(NoRegistry),
        )
        .unwrap(),
    );

    // The card: its cps-auth certificate from the personnes CA.
    let card = SoftwareSigner::generate("card", KeyAlgorithm::EcP256).unwrap();
    let card_rec = ca
        .issue(
            &IssueRequest {
                profile: "cps-auth".into(),
                csr: csr_for(&card),
                subject: SubjectRequest::Person(PersonIdentity {
                    idnat_ps: IDNAT.into(),
                    surname: "DONNAT-GADY".into(),
                    given_name: "ISABELLE".into(),
                    profession_code: "10".into(),
                }),
                sans: vec![],
                holder: IDNAT.into(),
            },
            "test",
            t,
        )
        .unwrap();

    let counted = Arc::new(Mutex::new(Vec::new()));
    let login = login_service(&ca, &xua, &settings, &counted);
    Fx {
        _dir: dir,
        store,
        ca,
        xua,
        login,
        counted,
        seal_serial: seal.serial,
        card,
        card_der: card_rec.der,
        card_serial: card_rec.serial,
        settings,
        seal_signer,
        seal_chain: chain,
    }
}

type Outcome = Result<Result<cps_login::LoginResult, LoginRefusal>, cps_ca::CaError>;

impl Fx {
    /// Another node over the same store and HSM keys (the seal, the challenge secret): a new
    /// XUA service and login service, with nothing in memory (as after a restart).
    fn another_node(&self) -> (Arc<XuaService>, LoginService) {
        let xua = Arc::new(
            XuaService::new(
                &self.settings,
                Seal {
                    signer: self.seal_signer.clone(),
                    chain: self.seal_chain.clone(),
                },
                &self.ca,
                Arc::new(NoRegistry),
            )
            .unwrap(),
        );
        let login = login_service(&self.ca, &xua, &self.settings, &self.counted);
        (xua, login)
    }

    /// A challenge for `ctx`, signed by `sign`, redeemed and logged in with.
    fn attempt(
        &self,
        ctx: &LoginContext,
        sign: &dyn Fn(&[u8]) -> Vec<u8>,
        now: SystemTime,
    ) -> Outcome {
        let ch = self.login.challenge("urn:dmp", ctx, now).unwrap();
        let message = base64::engine::general_purpose::STANDARD
            .decode(&ch.challenge)
            .unwrap();
        let redeemed = match self.login.redeem(&ch.challenge_id, ctx, source(), now) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.login.login(
            &redeemed,
            &self.card_der,
            &sign(&message),
            ctx,
            source(),
            now,
        )
    }

    fn card_sign(&self, m: &[u8]) -> Vec<u8> {
        self.card
            .sign(cps_hsm::SignatureAlgorithm::EcdsaSha256, m, SigFormat::Der)
            .unwrap()
    }

    fn audit_kinds(&self) -> Vec<String> {
        self.store
            .audit_range(1, 1000)
            .unwrap()
            .into_iter()
            .map(|e| format!("{}:{}", e.record.kind, e.record.outcome))
            .collect()
    }
}

fn source() -> IpAddr {
    "192.0.2.7".parse().unwrap()
}

#[test]
fn a_card_login_is_answered_with_an_assertion_the_validator_accepts_once() {
    let now = SystemTime::now();
    let fx = fx(now);
    let before = fx.audit_kinds().len();
    let ctx = LoginContext {
        patient_ins: Some("248079707503828".into()),
        ..LoginContext::default()
    };
    let ok = fx
        .attempt(&ctx, &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap();
    assert_eq!(ok.idnat_ps, IDNAT);
    // Its records were durable before the answer.
    assert_eq!(
        fx.audit_kinds()[before..],
        ["login:success".to_owned(), "xua.issue:success".into()]
    );
    assert!(fx.counted.lock().is_empty());

    let valid = fx.xua.validate(ok.assertion.as_bytes(), now).unwrap();
    assert_eq!(valid.id, ok.assertion_id.as_str());
    assert_eq!(valid.claims.name_id.to_string(), IDNAT);
    // The same assertion a second time: a replay.
    let again = fx.xua.validate(ok.assertion.as_bytes(), now).unwrap_err();
    assert!(
        format!("{again:?}").to_lowercase().contains("replay"),
        "{again:?}"
    );
}

#[test]
fn attempts_that_prove_nothing_are_counted_through_the_callback_and_write_nothing() {
    let now = SystemTime::now();
    let fx = fx(now);
    let before = fx.audit_kinds();
    let ctx = LoginContext::default();
    let bad = fx
        .attempt(&ctx, &|_| vec![0x30, 0x06, 2, 1, 1, 2, 1, 1], now)
        .unwrap()
        .unwrap_err();
    assert_eq!(bad.code, "bad_signature");
    let forged = fx
        .login
        .redeem("not-a-challenge", &ctx, source(), now)
        .unwrap_err();
    assert_eq!(forged.code, "unknown_challenge");
    assert_eq!(
        *fx.counted.lock(),
        vec![
            (source(), "bad_signature".to_owned()),
            (source(), "unknown_challenge".to_owned())
        ]
    );
    assert_eq!(fx.audit_kinds(), before);
}

#[test]
fn the_live_state_of_the_card_and_the_seal_is_seen_by_the_next_login_and_validation() {
    let now = SystemTime::now();
    let fx = fx(now);
    let ctx = LoginContext::default();
    let ok = fx
        .attempt(&ctx, &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap();

    // The card on hold: the next login is refused, with a durable failure record.
    fx.ca
        .revoke(
            "personnes",
            &fx.card_serial,
            RevocationReason::CertificateHold,
            None,
            "test",
            unix(now),
        )
        .unwrap();
    let before = fx.audit_kinds().len();
    let refused = fx
        .attempt(&ctx, &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code, "revoked_certificate");
    assert!(refused.message.contains("on hold"), "{}", refused.message);
    assert_eq!(fx.audit_kinds()[before..], ["login:failure".to_owned()]);
    assert!(
        fx.counted.lock().is_empty(),
        "an identified refusal is not a count"
    );

    // The seal revoked: an assertion it signed before is refused by the next validation.
    fx.ca
        .revoke(
            "organisations",
            &fx.seal_serial,
            RevocationReason::KeyCompromise,
            None,
            "test",
            unix(now),
        )
        .unwrap();
    let e = fx.xua.validate(ok.assertion.as_bytes(), now).unwrap_err();
    assert!(format!("{e:?}").to_lowercase().contains("revoked"), "{e:?}");
}

fn is_replay(r: &Result<cps_xua::ValidatedAssertion, cps_xua::Refusal>) -> bool {
    matches!(r, Err(e) if e.code == cps_xua::RefusalCode::Replayed)
}

#[test]
fn with_the_record_in_the_store_an_assertion_accepted_by_one_node_is_a_replay_on_every_other() {
    let now = SystemTime::now();
    let fx = fx_with(now, shared());
    let (node_b, _) = fx.another_node();
    let ctx = LoginContext::default();
    let one = fx
        .attempt(&ctx, &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap();
    let two = fx
        .attempt(&ctx, &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap();

    // Accepted by A: refused on B, and on a node started afterwards (empty memory).
    assert!(fx.xua.validate(one.assertion.as_bytes(), now).is_ok());
    assert!(is_replay(&node_b.validate(one.assertion.as_bytes(), now)));
    let (restarted, _) = fx.another_node();
    assert!(is_replay(
        &restarted.validate(one.assertion.as_bytes(), now)
    ));
    assert!(is_replay(&fx.xua.validate(one.assertion.as_bytes(), now)));

    // Accepted by B first: refused on A.
    assert!(node_b.validate(two.assertion.as_bytes(), now).is_ok());
    assert!(is_replay(&fx.xua.validate(two.assertion.as_bytes(), now)));
    assert!(fx.xua.shared_replay().unwrap().stats().claims >= 2);
}

#[test]
fn with_memory_records_nodes_do_not_share_them() {
    // The contrast: the default record is per process, which is why clusters need the store's.
    let now = SystemTime::now();
    let fx = fx(now);
    let (node_b, _) = fx.another_node();
    let ok = fx
        .attempt(&LoginContext::default(), &|m| fx.card_sign(m), now)
        .unwrap()
        .unwrap();
    assert!(fx.xua.validate(ok.assertion.as_bytes(), now).is_ok());
    assert!(node_b.validate(ok.assertion.as_bytes(), now).is_ok());
    assert!(fx.xua.shared_replay().is_none());
}

#[test]
fn racing_validations_of_one_assertion_on_two_nodes_accept_it_once() {
    let now = SystemTime::now();
    let fx = fx_with(now, shared());
    let (node_b, _) = fx.another_node();
    for _ in 0..5 {
        let ok = fx
            .attempt(&LoginContext::default(), &|m| fx.card_sign(m), now)
            .unwrap()
            .unwrap();
        let accepted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for node in [&fx.xua, &node_b, &fx.xua, &node_b] {
                let (accepted, a) = (&accepted, &ok.assertion);
                sc.spawn(move || {
                    let r = node.validate(a.as_bytes(), now);
                    if r.is_ok() {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        assert!(is_replay(&r), "{r:?}");
                    }
                });
            }
        });
        assert_eq!(accepted.into_inner(), 1);
    }
}

#[test]
fn with_the_record_in_the_store_a_challenge_redeemed_on_one_node_is_refused_on_every_other() {
    let now = SystemTime::now();
    let fx = fx_with(now, shared());
    let (_, login_b) = fx.another_node();
    let ctx = LoginContext::default();
    // Issued by A, redeemed and logged in on B.
    let ch = fx.login.challenge("urn:dmp", &ctx, now).unwrap();
    let message = base64::engine::general_purpose::STANDARD
        .decode(&ch.challenge)
        .unwrap();
    let redeemed = login_b
        .redeem(&ch.challenge_id, &ctx, source(), now)
        .unwrap();
    let ok = login_b
        .login(
            &redeemed,
            &fx.card_der,
            &fx.card_sign(&message),
            &ctx,
            source(),
            now,
        )
        .unwrap()
        .unwrap();
    assert_eq!(ok.idnat_ps, IDNAT);
    // Refused on A, on B again, and on a node started afterwards.
    let (_, restarted) = fx.another_node();
    for node in [&fx.login, &login_b, &restarted] {
        let refusal = node
            .redeem(&ch.challenge_id, &ctx, source(), now)
            .unwrap_err();
        assert_eq!(refusal.code, "used_challenge");
        // The checks without I/O still pass: only the record knows it was used.
        assert!(node.precheck(&ch.challenge_id, source(), now).is_ok());
        assert!(node.redeem_blocks());
    }
}
