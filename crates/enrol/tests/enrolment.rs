//! Enrolment of simulated cards in memory: the full flow, the certificates it yields, the
//! card it leaves, refusals, interruptions at every APDU, CA failures and crash recovery.

mod support;

use std::sync::Arc;

use cps_card::Slot;
use cps_enrol::{
    CaError, CardStatus, CertState, CertificateAuthority, EnrolError, EnrolRequest,
    EnrolmentStatus, IssueRequest, IssuedCertificate, ManagementKeyState, ProfessionalStatus,
    Progress, RevocationReason, Step, StepState,
};
use cps_pki::NameAttribute;
use support::*;

fn req(idnat: &str) -> EnrolRequest {
    EnrolRequest {
        idnat_ps: idnat.into(),
        structure_id: "1340785161".into(),
        replaces: None,
    }
}

#[test]
fn full_enrolment_yields_a_working_cps_card() {
    let f = Fixture::new();
    let idnat = f.add(1, "10");
    let card = SimCard::blank(1);
    let mut piv = card.piv();
    let mut events: Vec<Progress> = Vec::new();
    let out = f
        .cards
        .enrol(&mut piv, &req(&idnat), ACTOR, NOW, &mut |p| {
            events.push(p.clone())
        })
        .unwrap();

    // Every step reported in order, each started then done (or skipped).
    let done: Vec<Step> = events
        .iter()
        .filter(|e| e.state == StepState::Done)
        .map(|e| e.step)
        .collect();
    assert_eq!(done.first(), Some(&Step::DetectCard));
    assert_eq!(done.last(), Some(&Step::Register));
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done, Step::ALL.to_vec());

    // The registered card.
    let c = f.cards.card(&out.card.serial).unwrap().unwrap();
    assert_eq!(c.status, CardStatus::Active);
    assert_eq!(c.idnat_ps, idnat);
    assert_eq!(c.structure_id, "1340785161");
    assert!(c.token_id.starts_with("8025000001/"), "{}", c.token_id);
    assert_eq!(c.token_id.len(), "8025000001/".len() + 10);
    assert_eq!(c.certificates.len(), 2);
    // The default management key is replaced by the key derived from the master key.
    assert_eq!(
        c.management_key,
        ManagementKeyState::PerCard {
            master_key: "card-master".into(),
            algorithm: "aes256".into()
        }
    );
    {
        let mut piv = card.piv();
        assert!(matches!(
            piv.authenticate(&cps_card::ManagementKey::default_aes192()),
            Err(cps_card::CardError::ManagementKeyRejected)
        ));
        let derived = cps_enrol::CardSecrets::new(Arc::new(cps_hsm::SoftwareMacKey::new(
            "card-master",
            b"test master key",
        )))
        .management_key(&c.serial, cps_card::MgmtAlgorithm::Aes256)
        .unwrap();
        piv.authenticate(&derived).unwrap();
        assert_eq!(card.mgmt_key().len(), 32);
    }
    assert!(matches!(
        out.enrolment.status,
        EnrolmentStatus::Completed { .. }
    ));
    assert!(
        out.enrolment.secret_nonce.is_none(),
        "nonce erased at the end"
    );

    // Certificates: issued by the CA, subject from the registry, profiles cps-auth / cps-sign.
    let mut piv = card.piv();
    for (slot, profile) in [
        (Slot::Authentication, "cps-auth"),
        (Slot::Signature, "cps-sign"),
    ] {
        let der = piv
            .read_certificate(slot)
            .unwrap()
            .expect("certificate on the card");
        cps_pki::verify_issued_by(
            &der,
            f.ca.authority("personnes").unwrap().key.public_key_der(),
        )
        .unwrap();
        let parsed = cps_pki::parse_certificate(&der).unwrap();
        assert_eq!(
            parsed.subject.get(&NameAttribute::CommonName),
            Some(idnat.as_str())
        );
        assert_eq!(
            parsed.subject.get(&NameAttribute::Surname),
            Some("DUPONT-1")
        );
        assert_eq!(
            parsed.subject.get(&NameAttribute::GivenName),
            Some("Marie Élise")
        );
        assert_eq!(parsed.subject.get(&NameAttribute::Title), Some("Médecin"));
        let cc = c
            .certificates
            .iter()
            .find(|x| x.profile == profile)
            .unwrap();
        assert_eq!(cc.cert.serial, parsed.serial.to_hex());
        assert_eq!(
            CertificateAuthority::state(&*f.ca, &cc.cert).unwrap(),
            Some(CertState::Valid)
        );
    }
    // Identity object.
    let id = piv.read_identity().unwrap().unwrap();
    assert_eq!(id.idnat_ps, idnat);
    assert_eq!(id.family_name, "DUPONT-1");
    assert_eq!(id.profession, "10");
    assert_eq!(id.specialty.as_deref(), Some("SM26"));
    assert_eq!(id.card_type.as_deref(), Some("CPS"));

    // PIN and PUK: returned once, the defaults no longer work, the new PIN does, and the
    // authentication key signs what verifies with the certificate's key.
    let secrets = out.initial_secrets.expect("initial PIN and PUK");
    assert_eq!(secrets.pin.len(), 6);
    assert_eq!(secrets.puk.len(), 8);
    assert!(matches!(
        piv.verify_pin("123456"),
        Err(cps_card::CardError::WrongPin { .. })
    ));
    piv.verify_pin(&secrets.pin).unwrap();
    let challenge = b"login challenge 0123456789abcdef";
    let sig = piv
        .sign(
            Slot::Authentication,
            cps_card::KeyAlgorithm::EccP256,
            challenge,
        )
        .unwrap();
    let auth_der = piv.read_certificate(Slot::Authentication).unwrap().unwrap();
    let spki = cps_pki::parse_certificate(&auth_der).unwrap().spki;
    cps_hsm::verify_signature(
        &spki,
        cps_hsm::SignatureAlgorithm::EcdsaSha256,
        challenge,
        &sig,
        cps_hsm::SigFormat::Der,
    )
    .unwrap();
    assert!(
        cps_hsm::verify_signature(
            &spki,
            cps_hsm::SignatureAlgorithm::EcdsaSha256,
            b"other",
            &sig,
            cps_hsm::SigFormat::Der
        )
        .is_err()
    );
    // The PUK works (change it to itself).
    piv.change_puk(&secrets.puk, &secrets.puk).unwrap();

    // Every step is audited with the actor.
    let audit = f.store.audit_range(1, 10_000).unwrap();
    let kinds: Vec<&str> = audit
        .iter()
        .filter(|e| e.record.kind.starts_with("enrol."))
        .map(|e| {
            assert_eq!(e.record.actor, ACTOR);
            e.record.kind.as_str()
        })
        .collect();
    for k in [
        "enrol.start",
        "enrol.authenticate",
        "enrol.generate_keys",
        "enrol.prove_possession",
        "enrol.issue_authentication",
        "enrol.issue_signature",
        "enrol.write_card",
        "enrol.set_pin_puk",
        "enrol.replace_management_key",
        "enrol.register",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // The PIN never reaches the store or the audit trail.
    let dump = format!(
        "{:?}",
        f.store.scan_records("enrolments", b"", None, 100).unwrap()
    );
    let audit_text = format!("{audit:?}");
    for s in [&*secrets.pin, &*secrets.puk] {
        assert!(!dump.contains(s) && !audit_text.contains(s));
    }
    assert!(f.orphan_certificates().is_empty());
}

#[test]
fn rsa_cards_enrol_too() {
    let mut cfg = config();
    cfg.key_algorithm = cps_card::KeyAlgorithm::Rsa2048;
    let f = Fixture::with(cfg, None);
    let idnat = f.add(2, "21");
    let card = SimCard::blank(2);
    let out = f
        .cards
        .enrol(
            &mut card.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    let mut piv = card.piv();
    let der = piv.read_certificate(Slot::Signature).unwrap().unwrap();
    let parsed = cps_pki::parse_certificate(&der).unwrap();
    assert_eq!(
        parsed.subject.get(&NameAttribute::Title),
        Some("Pharmacien")
    );
    let pin = out.initial_secrets.unwrap().pin;
    piv.verify_pin(&pin).unwrap();
    let sig = piv
        .sign(
            Slot::Signature,
            cps_card::KeyAlgorithm::Rsa2048,
            b"document",
        )
        .unwrap();
    cps_hsm::verify_signature(
        &parsed.spki,
        cps_hsm::SignatureAlgorithm::RsaPkcs1Sha256,
        b"document",
        &sig,
        cps_hsm::SigFormat::Der,
    )
    .unwrap();
}

#[test]
fn cards_that_cannot_change_their_management_key() {
    // Required by default: such a card is refused at that step, and rolled back.
    let f = Fixture::new();
    let idnat = f.add(3, "60");
    let plain = SimCard::blank(30);
    plain.refuse_set_mgmt_key();
    let err = f
        .cards
        .enrol(
            &mut plain.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    let EnrolError::Interrupted {
        step, enrolment, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*step, Step::ReplaceManagementKey);
    assert!(
        err.to_string().contains("SET MANAGEMENT KEY not supported"),
        "{err}"
    );
    assert!(f.orphan_certificates().is_empty(), "{err}");
    f.cards
        .abort(enrolment, "card without SET MANAGEMENT KEY", ACTOR, NOW)
        .unwrap();

    // When the policy allows it, the card keeps the default key: recorded, shown, audited.
    let mut cfg = config();
    cfg.require_management_key_change = false;
    let f = Fixture::with(cfg, None);
    let idnat = f.add(3, "60");
    let card = SimCard::blank(31);
    card.refuse_set_mgmt_key();
    let mut events = Vec::new();
    let out = f
        .cards
        .enrol(
            &mut card.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut |p: &Progress| events.push(p.clone()),
        )
        .unwrap();
    assert_eq!(out.card.management_key, ManagementKeyState::Default);
    assert!(events.iter().any(|e| e.step == Step::ReplaceManagementKey
        && matches!(&e.state, StepState::Skipped(w) if w.contains("default management key"))));
    let audit = f.store.audit_range(1, 1000).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.record.kind == "enrol.replace_management_key"
                && e.record.detail["management_key"] == "default")
    );
    card.piv()
        .authenticate(&cps_card::ManagementKey::default_aes192())
        .unwrap();
}

#[test]
fn refusals() {
    let f = Fixture::new();
    let idnat = f.add(4, "10");
    // Unknown professional, unknown activity.
    assert!(matches!(
        f.cards.enrol(
            &mut SimCard::blank(40).piv(),
            &req(&rpps(999)),
            ACTOR,
            NOW,
            &mut no_progress()
        ),
        Err(EnrolError::UnknownProfessional(_))
    ));
    let mut r = req(&idnat);
    r.structure_id = "NOPE".into();
    assert!(matches!(
        f.cards.enrol(
            &mut SimCard::blank(40).piv(),
            &r,
            ACTOR,
            NOW,
            &mut no_progress()
        ),
        Err(EnrolError::UnknownActivity { .. })
    ));
    // A suspended professional cannot enrol.
    f.cards
        .set_professional_status(&idnat, ProfessionalStatus::Suspended, ACTOR, NOW)
        .unwrap();
    let err = f
        .cards
        .enrol(
            &mut SimCard::blank(40).piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(
        matches!(err, EnrolError::ProfessionalNotActive { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("is suspended"), "{err}");
    f.cards
        .set_professional_status(&idnat, ProfessionalStatus::Active, ACTOR, NOW)
        .unwrap();

    // One card per activity.
    let first = SimCard::blank(41);
    f.cards
        .enrol(
            &mut first.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    let err = f
        .cards
        .enrol(
            &mut SimCard::blank(42).piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(matches!(err, EnrolError::ActivityHasCard(_)), "{err}");
    // The other activity is fine.
    let mut other = req(&idnat);
    other.structure_id = "410002813839001".into();
    f.cards
        .enrol(
            &mut SimCard::blank(43).piv(),
            &other,
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    // A registered card is not blank.
    let idnat2 = f.add(5, "10");
    let err = f
        .cards
        .enrol(
            &mut first.piv(),
            &req(&idnat2),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(matches!(err, EnrolError::CardNotBlank(_)), "{err}");
    assert!(f.orphan_certificates().is_empty());
}

/// An activity whose structure identifier is not a struct_IdNat (an Annuaire Santé technical
/// identifier) is in the registry but cannot be named in a login assertion: enrolment refuses it
/// before touching the card or the CA, and says why and what to do.
#[test]
fn an_activity_a_login_cannot_name_is_refused() {
    let f = Fixture::new();
    let mut data = professional(6, "10");
    data.activities[0].structure_id = "F340785161".into();
    let idnat = f.registry.create(data, ACTOR, NOW).unwrap().data.idnat_ps;
    let card = SimCard::blank(60);
    let mut piv = card.piv();
    let before = card.count();
    let mut r = req(&idnat);
    r.structure_id = "F340785161".into();
    let err = f
        .cards
        .enrol(&mut piv, &r, ACTOR, NOW, &mut no_progress())
        .unwrap_err();
    assert!(
        matches!(err, EnrolError::ActivityNotForLogin { .. }),
        "{err}"
    );
    let msg = err.to_string();
    for want in [
        "'F340785161' is not a struct_IdNat",
        "unknown type prefix 'F'",
        "cannot be used for card login",
        "1 + FINESS",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert_eq!(card.count(), before, "no APDU was sent");
    assert!(f.cards.cards_of(&idnat, None).unwrap().is_empty());
    let issued = f
        .store
        .list_certificates(Some("personnes"), None, 100)
        .unwrap();
    assert!(issued.certificates.is_empty(), "nothing was issued");
    // The professional's other activity (a struct_IdNat) enrols on the same card.
    r.structure_id = "410002813839001".into();
    f.cards
        .enrol(&mut piv, &r, ACTOR, NOW, &mut no_progress())
        .unwrap();
}

/// Counts the APDUs of one full enrolment, then interrupts an enrolment after every possible
/// number of APDUs: each interruption leaves no valid certificate outside an active card, and
/// the enrolment then either resumes to a working card or aborts cleanly.
#[test]
fn interruption_after_every_apdu_leaves_no_orphan_certificate() {
    let f = Fixture::new();
    let probe = SimCard::blank(50);
    let idnat0 = f.add(50, "10");
    f.cards
        .enrol(
            &mut probe.piv(),
            &req(&idnat0),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    let total = probe.count();
    assert!(total > 20, "{total} APDUs");

    let mut completed_at = None;
    for n in 1..total {
        let idnat = f.add(100 + n as u64, "10");
        let card = SimCard::blank(100 + n as u8);
        let piv = card.piv(); // SELECT outside the count
        card.fail_after(n);
        let mut piv = piv;
        let err = match f
            .cards
            .enrol(&mut piv, &req(&idnat), ACTOR, NOW, &mut no_progress())
        {
            Err(e) => e,
            Ok(_) => {
                // Enough APDUs to finish (SELECT was sent before the count started).
                completed_at = Some(n);
                break;
            }
        };
        assert!(
            f.orphan_certificates().is_empty(),
            "after {n} APDUs: orphan certificates {:?} ({err})",
            f.orphan_certificates()
        );
        card.reinsert();
        let id = match &err {
            EnrolError::Interrupted { enrolment, .. } => enrolment.clone(),
            // The card left before the enrolment was recorded: nothing to clean.
            other => {
                assert!(
                    f.cards.open_enrolments().unwrap().is_empty(),
                    "after {n}: {other}"
                );
                let out = f
                    .cards
                    .enrol(
                        &mut card.piv(),
                        &req(&idnat),
                        ACTOR,
                        NOW,
                        &mut no_progress(),
                    )
                    .unwrap();
                assert_eq!(out.card.status, CardStatus::Active);
                continue;
            }
        };
        if n % 2 == 0 {
            let out = f
                .cards
                .resume(&id, &mut card.piv(), None, ACTOR, NOW, &mut no_progress())
                .unwrap_or_else(|e| panic!("resume after {n} APDUs: {e}"));
            assert_eq!(out.card.status, CardStatus::Active);
            let pin = out.initial_secrets.unwrap().pin;
            let mut piv = card.piv();
            piv.verify_pin(&pin)
                .unwrap_or_else(|e| panic!("PIN after resume at {n}: {e}"));
            let der = piv.read_certificate(Slot::Authentication).unwrap().unwrap();
            let serial = cps_pki::parse_certificate(&der).unwrap().serial.to_hex();
            assert!(
                out.card
                    .certificates
                    .iter()
                    .any(|c| c.cert.serial == serial)
            );
        } else {
            let (e, report) = f.cards.abort(&id, "card pulled", ACTOR, NOW).unwrap();
            assert!(matches!(e.status, EnrolmentStatus::Aborted { .. }));
            assert!(report.pending.is_empty());
            assert!(f.cards.card(&e.card_serial).unwrap().is_none());
        }
        assert!(f.orphan_certificates().is_empty(), "after {n} and recovery");
        assert!(f.cards.open_enrolments().unwrap().is_empty());
    }
    assert_eq!(completed_at, Some(total - 1), "every shorter run failed");
    assert!(f.cards.pending_revocations().unwrap().is_empty());
}

/// A CA wrapper that can fail or call back around issuance.
struct FaultyCa {
    inner: Arc<cps_ca::CaService>,
    /// Issue for real, then report a failure (the answer is lost).
    lose_answer_at: std::sync::atomic::AtomicUsize,
    calls: std::sync::atomic::AtomicUsize,
    on_issue: Box<dyn Fn(usize) + Send + Sync>,
    revocations_down: std::sync::atomic::AtomicBool,
}

impl CertificateAuthority for FaultyCa {
    fn issue(
        &self,
        req: &IssueRequest,
        actor: &str,
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.calls.fetch_add(1, SeqCst) + 1;
        let r = CertificateAuthority::issue(&*self.inner, req, actor, now)?;
        (self.on_issue)(n);
        if self.lose_answer_at.load(SeqCst) == n {
            return Err(CaError::Unavailable("connection reset".into()));
        }
        Ok(r)
    }
    fn revoke(
        &self,
        cert: &cps_enrol::CertRef,
        reason: RevocationReason,
        actor: &str,
        now: i64,
    ) -> Result<(), CaError> {
        if self
            .revocations_down
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(CaError::Unavailable("HSM offline".into()));
        }
        CertificateAuthority::revoke(&*self.inner, cert, reason, actor, now)
    }
    fn state(&self, cert: &cps_enrol::CertRef) -> Result<Option<CertState>, CaError> {
        CertificateAuthority::state(&*self.inner, cert)
    }
    fn certificates_for_key(&self, k: &[u8; 32]) -> Result<Vec<IssuedCertificate>, CaError> {
        self.inner.certificates_for_key(k)
    }
}

fn faulty(
    f: impl Fn(usize) + Send + Sync + 'static,
) -> impl Fn(Arc<cps_ca::CaService>) -> Arc<dyn CertificateAuthority> {
    let f = Arc::new(f);
    move |inner| {
        let f = f.clone();
        Arc::new(FaultyCa {
            inner,
            lose_answer_at: 0.into(),
            calls: 0.into(),
            on_issue: Box::new(move |n| f(n)),
            revocations_down: false.into(),
        })
    }
}

#[test]
fn a_lost_ca_answer_is_found_and_revoked() {
    let wrap = |inner: Arc<cps_ca::CaService>| -> Arc<dyn CertificateAuthority> {
        Arc::new(FaultyCa {
            inner,
            lose_answer_at: 2.into(),
            calls: 0.into(),
            on_issue: Box::new(|_| {}),
            revocations_down: false.into(),
        })
    };
    let f = Fixture::with(config(), Some(&wrap));
    let idnat = f.add(6, "10");
    let card = SimCard::blank(60);
    let err = f
        .cards
        .enrol(
            &mut card.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    let EnrolError::Interrupted { step, rollback, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*step, Step::IssueSignature);
    // Both the recorded authentication certificate and the unrecorded signature certificate
    // (issued, answer lost) are revoked.
    assert!(rollback.contains("2 certificate(s)"), "{rollback}");
    assert!(f.orphan_certificates().is_empty());
    let revoked = f.store.revoked_certificates("personnes").unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(
        revoked
            .iter()
            .all(|r| r.reason == RevocationReason::CessationOfOperation.code())
    );
}

#[test]
fn the_professional_is_checked_again_before_each_issuance() {
    // Suspend the professional right after the first certificate is issued (another officer
    // acting while this enrolment runs).
    type Slot = Arc<parking_lot::Mutex<Option<(Arc<dyn cps_store::Store>, String)>>>;
    let store_slot: Slot = Default::default();
    let s2 = store_slot.clone();
    let wrap = faulty(move |n| {
        if n == 1
            && let Some((store, idnat)) = s2.lock().clone()
        {
            let reg = cps_enrol::Registry::new(store.clone());
            let mut p = reg.get(&idnat).unwrap().unwrap();
            // Direct edit of the status, as another officer's session would do.
            let raw = serde_json::to_vec(&p).unwrap();
            p.status = ProfessionalStatus::Suspended;
            p.revision += 1;
            store
                .commit(
                    cps_store::WriteBatch::new().with(cps_store::WriteOp::PutRecord {
                        table: "professionals".into(),
                        key: idnat.as_bytes().to_vec(),
                        value: serde_json::to_vec(&p).unwrap(),
                        expect: cps_store::Expect::Value(raw),
                    }),
                )
                .unwrap();
        }
    });
    let _ = &wrap;
    let f = Fixture::with(config(), Some(&wrap));
    let idnat = f.add(7, "10");
    *store_slot.lock() = Some((f.store.clone(), idnat.clone()));
    let err = f
        .cards
        .enrol(
            &mut SimCard::blank(70).piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap_err();
    let EnrolError::Interrupted { step, cause, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*step, Step::IssueSignature);
    assert!(
        matches!(**cause, EnrolError::ProfessionalNotActive { .. }),
        "{err}"
    );
    // The signature certificate was never issued; the authentication one is revoked.
    assert_eq!(
        f.store
            .list_certificates(Some("personnes"), None, 100)
            .unwrap()
            .certificates
            .len(),
        1
    );
    assert!(f.orphan_certificates().is_empty());
}

#[test]
fn a_crash_mid_enrolment_is_rolled_back_at_start() {
    let f = Fixture::new();
    let idnat = f.add(8, "10");
    let card = SimCard::blank(80);
    // A transport that panics after the certificates are issued (a crash of the process in
    // the middle of the enrolment: nothing records the interruption).
    let mut piv = card.piv();
    let probe = SimCard::blank(81);
    let idnat_probe = f.add(9, "10");
    f.cards
        .enrol(
            &mut probe.piv(),
            &req(&idnat_probe),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    // Stop inside WriteCard: about 80 % of the APDUs.
    card.fail_after(probe.count() * 4 / 5);
    let mut crashed_at = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.cards
            .enrol(&mut piv, &req(&idnat), ACTOR, NOW, &mut |p: &Progress| {
                if let StepState::Failed(_) = p.state {
                    crashed_at = Some(p.step);
                    panic!("simulated crash");
                }
            })
    }));
    assert!(r.is_err(), "the simulated crash happened");
    assert!(
        matches!(crashed_at, Some(s) if s >= Step::WriteCard),
        "{crashed_at:?}"
    );
    assert!(
        !f.orphan_certificates().is_empty(),
        "the crash left valid certificates behind"
    );

    // "Restart": a new service on the same store recovers.
    let restarted = f.restarted(config());
    let report = restarted.recover_interrupted("system", NOW + 60).unwrap();
    assert_eq!(report.aborted.len(), 1);
    assert!(report.revocations.pending.is_empty());
    assert!(f.orphan_certificates().is_empty());
    let e = restarted.enrolment(&report.aborted[0]).unwrap().unwrap();
    assert!(matches!(e.status, EnrolmentStatus::Aborted { .. }));
    assert!(e.secret_nonce.is_none());
}

#[test]
fn revocations_wait_in_the_outbox_while_the_ca_is_down() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = down.clone();
    let holder: Arc<parking_lot::Mutex<Option<Arc<FaultyCa>>>> = Default::default();
    let h2 = holder.clone();
    let wrap = move |inner: Arc<cps_ca::CaService>| -> Arc<dyn CertificateAuthority> {
        let ca = Arc::new(FaultyCa {
            inner,
            lose_answer_at: 0.into(),
            calls: 0.into(),
            on_issue: Box::new(|_| {}),
            revocations_down: false.into(),
        });
        *h2.lock() = Some(ca.clone());
        ca
    };
    let _ = d2;
    let f = Fixture::with(config(), Some(&wrap));
    let ca = holder.lock().clone().unwrap();
    let idnat = f.add(10, "10");
    let out = f
        .cards
        .enrol(
            &mut SimCard::blank(90).piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    ca.revocations_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let o = f
        .cards
        .oppose_card(
            &out.card.serial,
            cps_enrol::OppositionReason::Stolen,
            ACTOR,
            NOW,
        )
        .unwrap();
    assert!(matches!(o.card.status, CardStatus::Opposed { .. }));
    assert_eq!(o.revocations.pending.len(), 2);
    assert!(o.revocations.pending[0].1.contains("HSM offline"));
    assert_eq!(f.cards.pending_revocations().unwrap().len(), 2);
    ca.revocations_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = f
        .cards
        .retry_pending_revocations("system", NOW + 1)
        .unwrap();
    assert_eq!(r.done.len(), 2);
    assert!(f.cards.pending_revocations().unwrap().is_empty());
    for c in &out.card.certificates {
        assert_eq!(
            CertificateAuthority::state(&*f.ca, &c.cert).unwrap(),
            Some(CertState::Revoked(RevocationReason::KeyCompromise))
        );
    }
    let _ = down;
}

/// Enrols on `cards` and crashes (a panic inside the write to the card, as a killed process):
/// the enrolment stays open, its certificates valid. Returns the enrolment's id.
fn crash_mid_enrolment(f: &Fixture, cards: &cps_enrol::CardService, n: u64, guid: u8) -> String {
    let idnat = f.add(n, "10");
    let probe = SimCard::blank(guid.wrapping_add(100));
    let probe_id = f.add(n + 1000, "10");
    cards
        .enrol(
            &mut probe.piv(),
            &req(&probe_id),
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    let card = SimCard::blank(guid);
    card.fail_after(probe.count() * 4 / 5);
    let mut id = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cards.enrol(
            &mut card.piv(),
            &req(&idnat),
            ACTOR,
            NOW,
            &mut |p: &Progress| {
                id = Some(p.enrolment.clone());
                if let StepState::Failed(_) = p.state {
                    panic!("simulated crash");
                }
            },
        )
    }));
    assert!(r.is_err(), "the simulated crash happened");
    id.unwrap()
}

/// Two nodes over one store: a node restarting rolls back its own interrupted enrolment and
/// one from before nodes existed, and leaves the other node's alone (that node may be driving
/// it right now): not aborted, its certificates still valid, and refused to be resumed or
/// aborted from here with the owning node named. The owning node recovers it at its start.
#[test]
fn recovery_at_start_rolls_back_this_node_s_enrolments_only() {
    let f = Fixture::new();
    let a = f.restarted(config()).with_node("node-a");
    let b = f.restarted(config()).with_node("node-b");
    let of_a = crash_mid_enrolment(&f, &a, 20, 120);
    let of_b = crash_mid_enrolment(&f, &b, 21, 121);
    let before_nodes = crash_mid_enrolment(&f, &f.cards, 22, 122);
    let node_of = |id: &str| f.cards.enrolment(id).unwrap().unwrap().node;
    assert_eq!(node_of(&of_a).as_deref(), Some("node-a"));
    assert_eq!(node_of(&of_b).as_deref(), Some("node-b"));
    assert_eq!(node_of(&before_nodes), None);
    let orphans = f.orphan_certificates().len();
    assert_eq!(
        orphans, 6,
        "three interrupted enrolments, two certificates each"
    );

    // node-a restarts.
    let a = f.restarted(config()).with_node("node-a");
    let report = a.recover_interrupted("system", NOW + 60).unwrap();
    let mut aborted = report.aborted.clone();
    aborted.sort();
    let mut expected = vec![of_a.clone(), before_nodes.clone()];
    expected.sort();
    assert_eq!(aborted, expected);
    assert_eq!(
        report.other_nodes,
        vec![(of_b.clone(), "node-b".to_owned())]
    );
    let b_rec = a.enrolment(&of_b).unwrap().unwrap();
    assert!(
        matches!(b_rec.status, EnrolmentStatus::Running),
        "{:?}",
        b_rec.status
    );
    assert_eq!(
        f.orphan_certificates().len(),
        2,
        "node-b's certificates are still valid"
    );
    let e = a.abort(&of_b, "no", ACTOR, NOW + 61).unwrap_err();
    assert!(
        matches!(&e, EnrolError::EnrolmentState { reason, .. } if reason.contains("node 'node-b'")),
        "{e}"
    );
    let e = a
        .resume(
            &of_b,
            &mut SimCard::blank(121).piv(),
            None,
            ACTOR,
            NOW + 61,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("node 'node-b'"), "{e}");

    // node-b restarts: its own enrolment is rolled back now.
    let b = f.restarted(config()).with_node("node-b");
    let report = b.recover_interrupted("system", NOW + 120).unwrap();
    assert_eq!(report.aborted, vec![of_b.clone()]);
    assert!(report.other_nodes.is_empty());
    assert!(f.orphan_certificates().is_empty());
}
