//! The PIV client against the simulator's applet wired in memory (no pcscd): every flow of the
//! card crate, deterministic and fast.

use cps_card::{
    CardError, CpsIdentity, KeyAlgorithm, ManagementKey, PinStatus, Piv, Slot, Transport,
};
use firmware_sim::applet::Card;
use firmware_sim::crypto::TestRng;
use firmware_sim::state::{CardState, MgmtAlg};

struct Sim {
    card: Card,
    rng: TestRng,
    log: Vec<Vec<u8>>,
}

impl Transport for Sim {
    fn transmit(&mut self, apdu: &[u8]) -> cps_card::Result<Vec<u8>> {
        self.log.push(apdu.to_vec());
        Ok(self.card.process(apdu, &mut self.rng).response)
    }
}

fn sim(alg: MgmtAlg) -> Sim {
    Sim {
        card: Card::new(CardState::blank([3; 16], "20301231", alg)),
        rng: TestRng(11),
        log: Vec::new(),
    }
}

#[test]
fn enrolment_and_login_flow() {
    let mut piv = Piv::select(sim(MgmtAlg::Aes192)).unwrap();
    assert_eq!(piv.label(), "CPS-Trust PIV card simulator");
    // admin operations need the management key
    assert!(matches!(
        piv.generate_key(Slot::Authentication, KeyAlgorithm::EccP256),
        Err(CardError::AdminRequired { .. })
    ));
    assert!(matches!(
        piv.authenticate(&ManagementKey::default_3des()),
        Err(CardError::ManagementKeyRejected)
    ));
    let wrong = ManagementKey::new(cps_card::MgmtAlgorithm::Aes192, &[9; 24]).unwrap();
    assert!(matches!(
        piv.authenticate(&wrong),
        Err(CardError::ManagementKeyRejected)
    ));
    piv.authenticate(&ManagementKey::default_aes192()).unwrap();
    let auth = piv
        .generate_key(Slot::Authentication, KeyAlgorithm::EccP256)
        .unwrap();
    let sig = piv
        .generate_key(Slot::Signature, KeyAlgorithm::Rsa2048)
        .unwrap();
    assert_eq!(sig.spki_der().len(), 294);
    // certificates (opaque bytes here) and the identity object
    let fake_cert = vec![0x30; 1200];
    piv.write_certificate(Slot::Authentication, &fake_cert)
        .unwrap();
    assert_eq!(
        piv.read_certificate(Slot::Authentication).unwrap(),
        Some(fake_cert)
    );
    assert_eq!(piv.read_certificate(Slot::Signature).unwrap(), None);
    let id = CpsIdentity {
        idnat_ps: "810012345678".into(),
        family_name: "DUPONT".into(),
        given_names: "Marie Claire".into(),
        profession: "10".into(),
        specialty: Some("SM26".into()),
        card_type: Some("CPS".into()),
    };
    piv.write_identity(&id).unwrap();
    assert_eq!(piv.read_identity().unwrap(), Some(id));
    // login: PIN then the 9A signature
    assert_eq!(
        piv.pin_status().unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    assert!(matches!(
        piv.sign(Slot::Authentication, KeyAlgorithm::EccP256, b"x"),
        Err(CardError::PinRequired { .. })
    ));
    let s = piv
        .sign_challenge("123456", KeyAlgorithm::EccP256, b"nonce-42")
        .unwrap();
    auth.verify(b"nonce-42", &s).unwrap();
    assert!(auth.verify(b"nonce-43", &s).is_err());
    // 9C: PIN before every use
    let s = piv
        .sign(Slot::Signature, KeyAlgorithm::Rsa2048, b"document")
        .unwrap();
    sig.verify(b"document", &s).unwrap();
    assert!(matches!(
        piv.sign(Slot::Signature, KeyAlgorithm::Rsa2048, b"again"),
        Err(CardError::PinRequired { .. })
    ));
    piv.verify_pin("123456").unwrap();
    piv.sign(Slot::Signature, KeyAlgorithm::Rsa2048, b"again")
        .unwrap();
    let summary = piv.summary().unwrap();
    assert_eq!(summary.chuid.unwrap().guid, vec![3; 16]);
    assert!(summary.identity.is_some());
    assert_eq!(
        summary
            .certificates
            .iter()
            .filter(|(_, c)| c.is_some())
            .count(),
        1
    );
}

#[test]
fn block_and_unblock_with_actionable_errors() {
    let mut piv = Piv::select(sim(MgmtAlg::TripleDes)).unwrap();
    piv.authenticate(&ManagementKey::default_3des()).unwrap();
    // an empty PIN is refused before anything is sent
    let before = piv.transport().log.len();
    assert!(matches!(
        piv.verify_pin(""),
        Err(CardError::InvalidPin { .. })
    ));
    assert!(matches!(
        piv.verify_pin("12a456"),
        Err(CardError::InvalidPin { .. })
    ));
    assert_eq!(piv.transport().log.len(), before);
    let e = piv.verify_pin("000000").unwrap_err();
    assert!(matches!(e, CardError::WrongPin { tries_left: 2 }));
    assert_eq!(e.to_string(), "wrong PIN: 2 tries left");
    assert!(matches!(
        piv.verify_pin("000000"),
        Err(CardError::WrongPin { tries_left: 1 })
    ));
    let e = piv.verify_pin("000000").unwrap_err();
    assert!(matches!(e, CardError::PinBlocked));
    assert_eq!(
        e.to_string(),
        "PIN blocked: 0 tries left — unblock with the PUK (cps-trust card unblock)"
    );
    assert!(matches!(
        piv.verify_pin("123456"),
        Err(CardError::PinBlocked)
    ));
    assert_eq!(piv.pin_status().unwrap(), PinStatus::Blocked);
    assert!(matches!(
        piv.unblock_pin("11111111", "654321"),
        Err(CardError::WrongPuk { tries_left: 2 })
    ));
    piv.unblock_pin("12345678", "654321").unwrap();
    piv.verify_pin("654321").unwrap();
    piv.change_pin("654321", "24681357").unwrap();
    piv.change_puk("12345678", "87654321").unwrap();
    assert!(matches!(
        piv.change_pin("000000", "111111"),
        Err(CardError::WrongPin { tries_left: 2 })
    ));
    for _ in 0..2 {
        let _ = piv.unblock_pin("00000000", "111111");
    }
    assert!(matches!(
        piv.unblock_pin("00000000", "111111"),
        Err(CardError::PukBlocked)
    ));
    assert!(matches!(
        piv.unblock_pin("87654321", "111111"),
        Err(CardError::PukBlocked)
    ));
}

#[test]
fn long_objects_use_command_and_response_chaining() {
    let mut piv = Piv::select(sim(MgmtAlg::Aes192)).unwrap();
    piv.authenticate(&ManagementKey::default_aes192()).unwrap();
    let big = (0..3000u32).map(|i| i as u8).collect::<Vec<_>>();
    piv.write_certificate(Slot::KeyManagement, &big).unwrap();
    let n_chained = piv.transport().log.iter().filter(|a| a[0] == 0x10).count();
    assert!(n_chained >= 11, "PUT DATA of 3 KB goes in 255-byte parts");
    assert_eq!(
        piv.read_certificate(Slot::KeyManagement).unwrap(),
        Some(big)
    );
    assert!(
        piv.transport().log.iter().any(|a| a[1] == 0xC0),
        "GET RESPONSE used"
    );
}
