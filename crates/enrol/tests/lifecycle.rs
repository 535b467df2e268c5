//! Card lifecycle against the CA's real revocation states: suspend / resume, opposition,
//! professional status changes, renewal on the same card, replacement card, PIN unblock.

mod support;

use cps_card::{CardError, Slot};
use cps_enrol::{
    CardStatus, CertState, EnrolError, EnrolRequest, EnrolmentKind, OppositionReason,
    ProfessionalStatus, RetirementReason, RevocationReason,
};
use support::*;

fn enrolled(
    f: &Fixture,
    n: u64,
    structure: &str,
    guid: u8,
) -> (String, SimCard, cps_enrol::EnrolmentOutcome) {
    let idnat = match f.registry.get(&rpps(n)).unwrap() {
        Some(p) => p.data.idnat_ps,
        None => f.add(n, "10"),
    };
    let card = SimCard::blank(guid);
    let out = f
        .cards
        .enrol(
            &mut card.piv(),
            &EnrolRequest {
                idnat_ps: idnat.clone(),
                structure_id: structure.into(),
                replaces: None,
            },
            ACTOR,
            NOW,
            &mut no_progress(),
        )
        .unwrap();
    (idnat, card, out)
}

fn states(f: &Fixture, card: &cps_enrol::Card) -> Vec<Option<CertState>> {
    card.certificates
        .iter()
        .map(|c| f.cards.certificate_state(&c.cert).unwrap())
        .collect()
}

#[test]
fn suspend_resume_and_oppose() {
    let f = Fixture::new();
    let (_, _, out) = enrolled(&f, 1, "1340785161", 1);
    let serial = out.card.serial.clone();

    let s = f
        .cards
        .suspend_card(&serial, "officer:bob", NOW + 10)
        .unwrap();
    assert!(matches!(
        s.card.status,
        CardStatus::Suspended {
            by_professional: false,
            ..
        }
    ));
    assert_eq!(states(&f, &s.card), vec![Some(CertState::OnHold); 2]);
    // Suspending twice is refused with a clear reason.
    let e = f
        .cards
        .suspend_card(&serial, "officer:bob", NOW + 11)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("only an active card can be suspended"),
        "{e}"
    );

    let r = f
        .cards
        .resume_card(&serial, "officer:bob", NOW + 20)
        .unwrap();
    assert_eq!(r.card.status, CardStatus::Active);
    assert_eq!(states(&f, &r.card), vec![Some(CertState::Valid); 2]);

    // Lost: keyCompromise, the keys are blocklisted, the card never comes back.
    let o = f
        .cards
        .oppose_card(&serial, OppositionReason::Lost, "officer:carol", NOW + 30)
        .unwrap();
    assert!(matches!(
        o.card.status,
        CardStatus::Opposed {
            reason: OppositionReason::Lost,
            ..
        }
    ));
    assert_eq!(
        states(&f, &o.card),
        vec![Some(CertState::Revoked(RevocationReason::KeyCompromise)); 2]
    );
    for c in &o.card.certificates {
        let fp: [u8; 32] = hex::decode(&c.spki_sha256).unwrap().try_into().unwrap();
        assert!(f.store.is_key_blocked(&fp).unwrap());
    }
    for e in [
        f.cards.resume_card(&serial, ACTOR, NOW + 40).unwrap_err(),
        f.cards.suspend_card(&serial, ACTOR, NOW + 40).unwrap_err(),
        f.cards
            .oppose_card(&serial, OppositionReason::Stolen, ACTOR, NOW + 40)
            .unwrap_err(),
    ] {
        assert!(matches!(e, EnrolError::CardStatus { .. }), "{e}");
        assert!(e.to_string().contains("opposed (lost)"), "{e}");
    }
    // Each step is audited with who did it.
    let audit = f.store.audit_range(1, 10_000).unwrap();
    let who = |kind: &str| {
        audit
            .iter()
            .filter(|e| e.record.kind == kind)
            .map(|e| e.record.actor.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(who("card.suspend"), ["officer:bob"]);
    assert_eq!(who("card.resume"), ["officer:bob"]);
    assert_eq!(who("card.oppose"), ["officer:carol"]);
    // A destroyed card: cessationOfOperation, no blocklist.
    let (_, _, out2) = enrolled(&f, 2, "1340785161", 2);
    let o = f
        .cards
        .oppose_card(&out2.card.serial, OppositionReason::Destroyed, ACTOR, NOW)
        .unwrap();
    assert_eq!(
        states(&f, &o.card),
        vec![Some(CertState::Revoked(RevocationReason::CessationOfOperation)); 2]
    );
    // After opposition a new card can be enrolled for the activity.
    enrolled(&f, 2, "1340785161", 3);
    assert!(f.orphan_certificates().is_empty());
}

#[test]
fn professional_status_drives_the_cards() {
    let f = Fixture::new();
    let (idnat, _, a) = enrolled(&f, 3, "1340785161", 10);
    let (_, _, b) = enrolled(&f, 3, "410002813839001", 11);
    // An officer suspends card b on their own.
    f.cards.suspend_card(&b.card.serial, ACTOR, NOW).unwrap();

    let ch = f
        .cards
        .set_professional_status(&idnat, ProfessionalStatus::Suspended, ACTOR, NOW + 1)
        .unwrap();
    assert_eq!(ch.professional.status, ProfessionalStatus::Suspended);
    assert_eq!(ch.cards.len(), 1, "only the active card changes");
    let a1 = f.cards.card(&a.card.serial).unwrap().unwrap();
    assert!(matches!(
        a1.status,
        CardStatus::Suspended {
            by_professional: true,
            ..
        }
    ));
    assert_eq!(states(&f, &a1), vec![Some(CertState::OnHold); 2]);
    // A card cannot be resumed while the professional is suspended.
    let e = f
        .cards
        .resume_card(&a.card.serial, ACTOR, NOW + 2)
        .unwrap_err();
    assert!(matches!(e, EnrolError::ProfessionalNotActive { .. }), "{e}");

    // Back to active: card a follows, card b (suspended by an officer) stays suspended.
    f.cards
        .set_professional_status(&idnat, ProfessionalStatus::Active, ACTOR, NOW + 3)
        .unwrap();
    let a2 = f.cards.card(&a.card.serial).unwrap().unwrap();
    assert_eq!(a2.status, CardStatus::Active);
    assert_eq!(states(&f, &a2), vec![Some(CertState::Valid); 2]);
    let b2 = f.cards.card(&b.card.serial).unwrap().unwrap();
    assert!(matches!(
        b2.status,
        CardStatus::Suspended {
            by_professional: false,
            ..
        }
    ));

    // Leaves: every card revoked for good, including the suspended one.
    let ch = f
        .cards
        .set_professional_status(&idnat, ProfessionalStatus::Left, "registrar:dan", NOW + 4)
        .unwrap();
    assert_eq!(ch.cards.len(), 2);
    assert!(ch.revocations.pending.is_empty());
    for s in [&a.card.serial, &b.card.serial] {
        let c = f.cards.card(s).unwrap().unwrap();
        assert!(matches!(
            c.status,
            CardStatus::Retired {
                reason: RetirementReason::ProfessionalLeft,
                ..
            }
        ));
        assert_eq!(
            states(&f, &c),
            vec![Some(CertState::Revoked(RevocationReason::CessationOfOperation)); 2]
        );
    }
    assert!(f.orphan_certificates().is_empty());
    let audit = f.store.audit_range(1, 10_000).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.record.kind == "professional.status" && e.record.actor == "registrar:dan")
    );
}

#[test]
fn renewal_on_the_same_card_and_replacement_card() {
    let f = Fixture::new();
    let (idnat, card, out) = enrolled(&f, 4, "1340785161", 20);
    let pin = out.initial_secrets.as_ref().unwrap().pin.to_string();
    let serial = out.card.serial.clone();

    // A wrong holder PIN is refused before the old keys are touched.
    let e = f
        .cards
        .renew(
            &serial,
            &mut card.piv(),
            "999999",
            ACTOR,
            NOW + 100,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(
        matches!(e, EnrolError::Card(CardError::WrongPin { tries_left: 2 })),
        "{e}"
    );
    assert!(f.cards.open_enrolments().unwrap().is_empty());
    let mut piv = card.piv();
    piv.verify_pin(&pin).unwrap();
    let old_cert = piv.read_certificate(Slot::Authentication).unwrap().unwrap();
    let old_spki = cps_pki::parse_certificate(&old_cert).unwrap().spki;
    let sig = piv
        .sign(
            Slot::Authentication,
            cps_card::KeyAlgorithm::EccP256,
            b"still works",
        )
        .unwrap();
    cps_hsm::verify_signature(
        &old_spki,
        cps_hsm::SignatureAlgorithm::EcdsaSha256,
        b"still works",
        &sig,
        cps_hsm::SigFormat::Der,
    )
    .unwrap();

    let r = f
        .cards
        .renew(
            &serial,
            &mut card.piv(),
            &pin,
            ACTOR,
            NOW + 200,
            &mut no_progress(),
        )
        .unwrap();
    assert_eq!(r.enrolment.kind, EnrolmentKind::Renewal);
    assert!(r.initial_secrets.is_none());
    assert_eq!(r.card.status, CardStatus::Active);
    assert_eq!(r.card.previous_certificates.len(), 2);
    for c in &r.card.previous_certificates {
        assert_eq!(
            f.cards.certificate_state(&c.cert).unwrap(),
            Some(CertState::Revoked(RevocationReason::Superseded))
        );
    }
    assert_eq!(states(&f, &r.card), vec![Some(CertState::Valid); 2]);
    // New key on the card, same PIN.
    let mut piv = card.piv();
    piv.verify_pin(&pin).unwrap();
    let new_cert = piv.read_certificate(Slot::Authentication).unwrap().unwrap();
    let new_spki = cps_pki::parse_certificate(&new_cert).unwrap().spki;
    assert_ne!(new_spki, old_spki);
    let sig = piv
        .sign(
            Slot::Authentication,
            cps_card::KeyAlgorithm::EccP256,
            b"renewed",
        )
        .unwrap();
    cps_hsm::verify_signature(
        &new_spki,
        cps_hsm::SignatureAlgorithm::EcdsaSha256,
        b"renewed",
        &sig,
        cps_hsm::SigFormat::Der,
    )
    .unwrap();

    // Replacement: a new blank card takes over the activity; the old card is retired.
    let new_card = SimCard::blank(21);
    let rep = f
        .cards
        .enrol(
            &mut new_card.piv(),
            &EnrolRequest {
                idnat_ps: idnat.clone(),
                structure_id: "1340785161".into(),
                replaces: Some(serial.clone()),
            },
            ACTOR,
            NOW + 300,
            &mut no_progress(),
        )
        .unwrap();
    assert_eq!(
        rep.enrolment.kind,
        EnrolmentKind::Replacement {
            old_card: serial.clone()
        }
    );
    let old = f.cards.card(&serial).unwrap().unwrap();
    assert!(matches!(
        &old.status,
        CardStatus::Retired { reason: RetirementReason::Replaced { by }, .. } if *by == rep.card.serial
    ));
    assert_eq!(
        states(&f, &old),
        vec![Some(CertState::Revoked(RevocationReason::Superseded)); 2]
    );
    // A retired card cannot be renewed.
    let e = f
        .cards
        .renew(
            &serial,
            &mut card.piv(),
            &pin,
            ACTOR,
            NOW + 400,
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(matches!(e, EnrolError::CardStatus { .. }), "{e}");
    assert_eq!(f.cards.cards_of(&idnat, None).unwrap().len(), 2);
    assert!(f.orphan_certificates().is_empty());
}

#[test]
fn officer_assisted_pin_unblock() {
    let f = Fixture::new();
    let (_, card, out) = enrolled(&f, 5, "1340785161", 30);
    let secrets = out.initial_secrets.unwrap();
    let serial = out.card.serial.clone();
    let mut piv = card.piv();
    for _ in 0..3 {
        let _ = piv.verify_pin("000001");
    }
    assert!(matches!(
        piv.verify_pin(&secrets.pin),
        Err(CardError::PinBlocked)
    ));

    // Wrong PUK: a clear error with the tries left, audited as a failure.
    let e = f
        .cards
        .unblock_pin(
            &serial,
            &mut card.piv(),
            "00000000",
            "246810",
            "officer:eve",
            NOW,
        )
        .unwrap_err();
    assert!(e.to_string().contains("wrong PUK: 2 tries left"), "{e}");
    // Malformed new PIN: refused before the card is asked.
    let e = f
        .cards
        .unblock_pin(
            &serial,
            &mut card.piv(),
            &secrets.puk,
            "12",
            "officer:eve",
            NOW,
        )
        .unwrap_err();
    assert!(e.to_string().contains("6 to 8 digits"), "{e}");
    // Another card in the reader.
    let other = SimCard::blank(31);
    let e = f
        .cards
        .unblock_pin(
            &serial,
            &mut other.piv(),
            &secrets.puk,
            "246810",
            "officer:eve",
            NOW,
        )
        .unwrap_err();
    assert!(matches!(e, EnrolError::WrongCard { .. }), "{e}");

    f.cards
        .unblock_pin(
            &serial,
            &mut card.piv(),
            &secrets.puk,
            "246810",
            "officer:eve",
            NOW,
        )
        .unwrap();
    let mut piv = card.piv();
    piv.verify_pin("246810").unwrap();
    let audit = f.store.audit_range(1, 10_000).unwrap();
    let outcomes: Vec<&str> = audit
        .iter()
        .filter(|e| e.record.kind == "card.unblock_pin")
        .map(|e| {
            assert_eq!(e.record.actor, "officer:eve");
            e.record.outcome.as_str()
        })
        .collect();
    assert_eq!(outcomes, ["failure", "success"]);
    // Unknown card.
    assert!(matches!(
        f.cards
            .unblock_pin("00", &mut card.piv(), &secrets.puk, "246810", ACTOR, NOW),
        Err(EnrolError::UnknownCard(_))
    ));
}
